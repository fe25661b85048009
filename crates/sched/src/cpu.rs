//! Simulated CPU identities.
//!
//! A run places task `i` of its task list on CPU `i`; the id is how choosers,
//! schedules, traces and deadlock reports name a thread of control, and how
//! kernel code finds its per-CPU data (`Sched::current_cpu`, Linux:
//! `smp_processor_id()`).

use core::fmt;

/// A simulated CPU: the index of a task within one [`crate::Sched::run`].
///
/// Debug and Display are decimal: CPU numbers are counted, not addresses.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct CpuId(u32);

impl CpuId {
    pub const fn new(index: u32) -> Self {
        Self(index)
    }

    pub const fn as_u32(self) -> u32 {
        self.0
    }

    /// The position of the CPU's task in the run's task list.
    pub fn index(self) -> usize {
        usize::try_from(self.0).expect("BUG: CPU number does not fit in usize")
    }

    /// The CPU running task `index` of a run.
    pub(crate) fn from_index(index: usize) -> Self {
        Self(u32::try_from(index).expect("BUG: more than u32::MAX tasks in one run"))
    }
}

impl fmt::Debug for CpuId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "CpuId({})", self.0)
    }
}

impl fmt::Display for CpuId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "cpu{}", self.0)
    }
}

/// `cpu0, cpu2` (or `none`), for error messages.
pub(crate) fn list(cpus: &[CpuId]) -> String {
    if cpus.is_empty() {
        return "none".to_owned();
    }
    cpus.iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn display_and_list() {
        assert_eq!(CpuId::new(3).to_string(), "cpu3");
        assert_eq!(format!("{:?}", CpuId::new(3)), "CpuId(3)");
        assert_eq!(list(&[CpuId::new(0), CpuId::new(2)]), "cpu0, cpu2");
        assert_eq!(list(&[]), "none");
        assert_eq!(CpuId::from_index(7).index(), 7);
    }
}
