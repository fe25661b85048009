//! How [`uapi::Machine::invariant_violations`] checks: the incremental
//! checker ([`Kernel::violations_incremental`]) at every call, and every
//! [`FULL_CHECK_EVERY`]th call the full one ([`Kernel::violations`]) too,
//! which must agree (a `BUG:` panic otherwise, which the fuzzer and the
//! scenario runner report as a finding). Callers that check after every
//! step (the fuzzer, `explore`, scenario runs) thus pay for what each step
//! changed, not for the whole machine.
//!
//! Equality with the full checker rests on the contract of
//! `crate::phys::dirty` (every change of frame metadata is logged) and on
//! the generation counters of the kernel layer (see
//! `crate::machine::check`); `crate::machine::tests::incremental` compares
//! both on random programs and on planted bugs, step by step.

use super::{Kernel, KernelViolation};

/// Calls between two cross-checks against the full checker.
pub const FULL_CHECK_EVERY: u64 = 1024;

/// Whether two verdicts hold the same violations, counted with
/// multiplicity (the incremental checker reports them in another order).
pub fn same_verdict(a: &[KernelViolation], b: &[KernelViolation]) -> bool {
    sorted(a) == sorted(b)
}

/// A verdict in a canonical order (by its `Debug` text).
pub fn sorted(v: &[KernelViolation]) -> Vec<String> {
    let mut out: Vec<String> = v.iter().map(|x| format!("{x:?}")).collect();
    out.sort();
    out
}

impl Kernel {
    /// The verdict `invariant_violations` reports (see the module doc).
    pub(crate) fn checked_violations(&self) -> Vec<KernelViolation> {
        let n = self.checks.get() + 1;
        self.checks.set(n);
        let fast = self.violations_incremental();
        if n.is_multiple_of(FULL_CHECK_EVERY) {
            let full = self.violations();
            assert!(
                same_verdict(&fast, &full),
                "BUG: the incremental checker disagrees with the full one after {n} checks:\n\
                 incremental {:?}\nfull {:?}",
                sorted(&fast),
                sorted(&full)
            );
        }
        fast
    }
}
