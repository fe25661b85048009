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
//! free blocks, keyed by each free list's generation, and the pageblocks;
//! the kernel layer's state is keyed by generation counters, see
//! `crate::machine::check`).
//!
//! A section materialised since the last check is listed as new, not as
//! dirty: its frames start pristine (or carved out), so only those a
//! pristine frame's verdict is not empty for need a look (the checker takes
//! the frames no free block covers and the carved-out ones).
//!
//! The log records from the table's creation (so a machine's first check
//! costs what boot touched, not a scan), and is bounded: past
//! [`MAX_RANGES`] entries it collapses to "every frame", and the next check
//! is a full one. A machine that never checks (trace replay) thus keeps at
//! most [`MAX_RANGES`] entries.

use mte::Pfn;

/// Ranges kept before the log collapses to [`DirtyFrames::All`].
pub(crate) const MAX_RANGES: usize = 4096;

/// What changed since the last [`DirtyLog::take`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum DirtyFrames {
    /// Anything may have changed (the first check, or the log overflowed).
    All,
    /// Only frames in these `(first, pages)` ranges (unsorted, may
    /// overlap), and the sections materialised since (their first frames).
    Ranges {
        ranges: Vec<(Pfn, u64)>,
        new_sections: Vec<Pfn>,
    },
}

#[derive(Clone, Debug, Default)]
pub(crate) struct DirtyLog {
    overflow: bool,
    ranges: Vec<(Pfn, u64)>,
    new_sections: Vec<Pfn>,
}

impl DirtyLog {
    /// Records that the `pages` frames from `pfn` may change.
    #[inline]
    pub(crate) fn note(&mut self, pfn: Pfn, pages: u64) {
        if self.overflow {
            return;
        }
        // A run of writes to one frame (counts, then flags) logs it once.
        if self.ranges.last() == Some(&(pfn, pages)) {
            return;
        }
        if self.ranges.len() == MAX_RANGES {
            self.collapse();
            return;
        }
        self.ranges.push((pfn, pages));
    }

    /// Records that the section starting at `start` was materialised.
    pub(crate) fn note_section(&mut self, start: Pfn) {
        if self.overflow {
            return;
        }
        if self.new_sections.len() == MAX_RANGES {
            self.collapse();
            return;
        }
        self.new_sections.push(start);
    }

    fn collapse(&mut self) {
        self.overflow = true;
        self.ranges = Vec::new();
        self.new_sections = Vec::new();
    }

    /// What [`Self::take`] would return, leaving the log as it is (for
    /// tests that check the log's completeness against the frames).
    #[cfg(test)]
    pub(crate) fn peek(&self) -> DirtyFrames {
        if self.overflow {
            DirtyFrames::All
        } else {
            DirtyFrames::Ranges {
                ranges: self.ranges.clone(),
                new_sections: self.new_sections.clone(),
            }
        }
    }

    /// The frames logged since the last call, and a fresh log.
    pub(crate) fn take(&mut self) -> DirtyFrames {
        let overflow = core::mem::take(&mut self.overflow);
        let ranges = core::mem::take(&mut self.ranges);
        let new_sections = core::mem::take(&mut self.new_sections);
        if overflow {
            DirtyFrames::All
        } else {
            DirtyFrames::Ranges {
                ranges,
                new_sections,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ranges(ranges: Vec<(Pfn, u64)>, new_sections: Vec<Pfn>) -> DirtyFrames {
        DirtyFrames::Ranges {
            ranges,
            new_sections,
        }
    }

    #[test]
    fn the_log_records_and_collapses_when_full() {
        let mut log = DirtyLog::default();
        log.note(Pfn::new(3), 2);
        log.note(Pfn::new(3), 2);
        log.note_section(Pfn::new(0));
        assert_eq!(log.peek(), log.clone().take(), "peeking consumes nothing");
        assert_eq!(
            log.take(),
            ranges(vec![(Pfn::new(3), 2)], vec![Pfn::new(0)])
        );
        for i in 0..=MAX_RANGES as u64 {
            log.note(Pfn::new(i), 1);
        }
        assert_eq!(log.take(), DirtyFrames::All);
        assert_eq!(log.take(), ranges(vec![], vec![]));
    }
}
