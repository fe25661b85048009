//! The dirty log of frame metadata: which frames may have changed since
//! the incremental invariant checker last looked (`Kernel::violations`
//! runs the full checker, `Kernel::violations_incremental` the incremental
//! one; `docs/performance.md` says what each costs).
//!
//! # Contract (for whoever adds a mutation path)
//! The incremental checker recomputes the verdict of a frame only when the
//! frame is in this log, or when something it derives from state it
//! re-reads in full at every check (free lists, pageblocks) says so. So
//! every change of a [`crate::phys::FrameMeta`] must go through one of
//! [`crate::phys::FrameTable`]'s three mutable accessors (`get_mut`,
//! `materialise_block`, `block_mut`), which log the frames they hand out;
//! the `sections` field of the table is private so that there is no
//! other way. A new mutation path needs nothing more as long as it uses
//! those accessors. Anything else a per-frame verdict reads must either be
//! static (the layout, the geometry, the policy) or be compared in full by
//! the checker at every check (`crate::phys::incremental` does this for the
//! free blocks and the pageblock types; the kernel layer's state is keyed
//! by generation counters, see `crate::machine::check`).
//!
//! The log is bounded: past [`MAX_RANGES`] ranges it collapses to "every
//! frame", and the next check is a full one. It records nothing until the
//! first [`DirtyLog::take`], so machines that never run the incremental
//! checker (trace replay, benchmarks) pay one flag test per access.

use mte::Pfn;

/// Ranges kept before the log collapses to [`DirtyFrames::All`].
pub(crate) const MAX_RANGES: usize = 4096;

/// What changed since the last [`DirtyLog::take`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum DirtyFrames {
    /// Anything may have changed (the first check, or the log overflowed).
    All,
    /// Only frames in these `(first, pages)` ranges (unsorted, may overlap).
    Ranges(Vec<(Pfn, u64)>),
}

#[derive(Clone, Debug, Default)]
pub(crate) struct DirtyLog {
    /// Recording (set by the first `take`).
    on: bool,
    overflow: bool,
    ranges: Vec<(Pfn, u64)>,
}

impl DirtyLog {
    /// Records that the `pages` frames from `pfn` may change.
    #[inline]
    pub(crate) fn note(&mut self, pfn: Pfn, pages: u64) {
        if !self.on || self.overflow {
            return;
        }
        // A run of writes to one frame (counts, then flags) logs it once.
        if self.ranges.last() == Some(&(pfn, pages)) {
            return;
        }
        if self.ranges.len() == MAX_RANGES {
            self.overflow = true;
            self.ranges = Vec::new();
            return;
        }
        self.ranges.push((pfn, pages));
    }

    /// The frames logged since the last call, and a fresh log.
    pub(crate) fn take(&mut self) -> DirtyFrames {
        let was_on = self.on;
        self.on = true;
        let overflow = core::mem::take(&mut self.overflow);
        let ranges = core::mem::take(&mut self.ranges);
        if !was_on || overflow {
            DirtyFrames::All
        } else {
            DirtyFrames::Ranges(ranges)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_log_starts_with_all_then_records_and_collapses_when_full() {
        let mut log = DirtyLog::default();
        log.note(Pfn::new(1), 1);
        assert_eq!(log.take(), DirtyFrames::All, "off until the first take");
        log.note(Pfn::new(3), 2);
        log.note(Pfn::new(3), 2);
        assert_eq!(log.take(), DirtyFrames::Ranges(vec![(Pfn::new(3), 2)]));
        for i in 0..=MAX_RANGES as u64 {
            log.note(Pfn::new(i), 1);
        }
        assert_eq!(log.take(), DirtyFrames::All);
        assert_eq!(log.take(), DirtyFrames::Ranges(vec![]));
    }
}
