//! The incremental form of the allocator's checker: the per-frame part of
//! [`BuddyAllocator::check`] (every frame of every materialised section)
//! recomputed only for frames that may have changed, with the same
//! per-frame function ([`BuddyAllocator::check_present_frame`]); the parts
//! that read the free lists and the pageblocks run in full at every check
//! (they are O(free blocks + pageblocks), not O(frames)).
//!
//! A frame's verdict reads its own metadata, whether a free block covers
//! it, its pageblock's type, the static layout, and the states of its
//! allocated block (a head reads its tails' states, a tail its head's
//! state; nothing else of theirs). So the frames rechecked are: those of
//! the dirty log ([`crate::phys::dirty`], every `&mut FrameMeta` handed
//! out), closed one step over blocks where a frame's state changed (a
//! head: its old and new block; a tail: its old and new head; a frame
//! whose counts or flags alone changed adds nothing, which keeps a map
//! count change of a huge page's head from rechecking its 511 tails);
//! the frames whose coverage by free blocks changed since the last check
//! (a split or merge changes none); the
//! frames of pageblocks whose type changed. Counts are kept as sums of the
//! per-frame contributions. The result equals the full checker's as a
//! multiset (the order differs); `crate::machine::tests::incremental` runs
//! both on random programs and on planted bugs.

use std::collections::{BTreeMap, BTreeSet};

use mte::{Pfn, PfnRange};

use crate::phys::buddy::{BuddyAllocator, Counters};
use crate::phys::check::PhysViolation;
use crate::phys::dirty::DirtyFrames;
use crate::phys::frame::{FrameState, MigrateType};
use crate::phys::layout::{Order, RegionKind};

/// What one frame contributed at the last check.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
struct FrameRecord {
    state: FrameState,
    recount: Counters,
    violations: Vec<PhysViolation>,
}

/// The frames an incremental check recomputed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Rechecked {
    /// Every frame of every materialised section.
    All,
    /// These frames (sorted, no duplicates).
    Frames(Vec<Pfn>),
}

/// The incremental checker's memory of the last check.
#[derive(Clone, Debug, Default)]
pub(crate) struct FrameCheckCache {
    primed: bool,
    /// The free blocks, sorted by (head, order).
    blocks: Vec<(Pfn, Order)>,
    pageblocks: Vec<MigrateType>,
    /// Frames whose record is not the default (free, pristine, no
    /// violation): allocated, claimed, carved out, or broken.
    records: BTreeMap<Pfn, FrameRecord>,
    with_violations: BTreeSet<Pfn>,
    sums: Counters,
}

fn add(sums: &mut Counters, c: &Counters, sign: bool) {
    let f = |a: &mut u64, b: u64| {
        *a = if sign {
            *a + b
        } else {
            a.checked_sub(b).expect("BUG: incremental sums underflow")
        }
    };
    f(&mut sums.allocated, c.allocated);
    f(&mut sums.cma_allocated, c.cma_allocated);
    f(&mut sums.claimed, c.claimed);
}

/// The union of `blocks` (sorted by head) as disjoint `[start, end)`
/// intervals in order: the frames a free block covers.
fn coverage(blocks: &[(Pfn, Order)]) -> Vec<(u64, u64)> {
    let mut out: Vec<(u64, u64)> = Vec::new();
    for &(head, order) in blocks {
        let (start, end) = (head.as_u64(), head.as_u64() + order.pages());
        match out.last_mut() {
            Some(last) if start <= last.1 => last.1 = last.1.max(end),
            _ => out.push((start, end)),
        }
    }
    out
}

/// The frames covered in one of `old` and `new` but not the other, as
/// `(first, pages)` ranges (a split or a merge of free blocks covers the
/// same frames and adds nothing).
fn coverage_changes(old: &[(Pfn, Order)], new: &[(Pfn, Order)], out: &mut Vec<(Pfn, u64)>) {
    // Boundary sweep over both interval lists: a frame changed where
    // exactly one of them covers it.
    let (a, b) = (coverage(old), coverage(new));
    let mut points: Vec<(u64, i8, usize)> = Vec::with_capacity(2 * (a.len() + b.len()));
    for (which, list) in [(0, &a), (1, &b)] {
        for &(s, e) in list {
            points.push((s, 1, which));
            points.push((e, -1, which));
        }
    }
    points.sort_unstable();
    let mut inside = [false, false];
    let mut since: Option<u64> = None;
    for (at, delta, which) in points {
        inside[which] = delta > 0;
        let differs = inside[0] != inside[1];
        match (since, differs) {
            (None, true) => since = Some(at),
            (Some(from), false) => {
                if at > from {
                    out.push((Pfn::new(from), at - from));
                }
                since = None;
            }
            _ => {}
        }
    }
}

impl BuddyAllocator {
    /// [`BuddyAllocator::check`], recomputing the per-frame part only for
    /// the frames `dirty` names (and those its closure adds; see the module
    /// doc). Also says which frames it recomputed, for the layers whose
    /// per-frame checks read the same metadata.
    pub(crate) fn check_incremental(
        &self,
        cache: &mut FrameCheckCache,
        dirty: DirtyFrames,
    ) -> (Vec<PhysViolation>, Rechecked) {
        let mut out = Vec::new();
        let (blocks, mut recount) = self.check_lists(&mut out);
        let mut sorted: Vec<(Pfn, Order)> = blocks.iter().map(|b| (b.head, b.order)).collect();
        sorted.sort();
        let pageblocks: Vec<MigrateType> = self.pageblocks.iter().map(|p| p.migratetype).collect();
        // Coverage: blocks by head with the running maximum of their ends
        // (blocks may overlap when the lists are broken).
        let mut max_end = Vec::with_capacity(blocks.len());
        let mut end = Pfn::new(0);
        for b in &blocks {
            end = end.max(b.end());
            max_end.push(end);
        }
        let covered = |pfn: Pfn| {
            let k = blocks.partition_point(|b| b.head <= pfn);
            k > 0 && max_end[k - 1] > pfn
        };

        let rechecked = match dirty {
            DirtyFrames::Ranges {
                mut ranges,
                new_sections,
            } => {
                let new_sections: Vec<Pfn> = if cache.primed {
                    coverage_changes(&cache.blocks, &sorted, &mut ranges);
                    let pb_pages = self.geometry().pageblock_pages();
                    let pb_order = self.geometry().pageblock_order().get();
                    for (i, (a, b)) in cache.pageblocks.iter().zip(&pageblocks).enumerate() {
                        if a != b {
                            let start = Pfn::new((self.first_pageblock + i as u64) << pb_order);
                            ranges.push((start, pb_pages));
                        }
                    }
                    new_sections
                } else {
                    // The first check: every frame changed since boot is
                    // in the log; the sections are all new to the checker.
                    self.frames.sections().map(|(start, _)| start).collect()
                };
                // In a new section, a pristine frame's verdict is empty
                // where a free block covers it; the others get a look,
                // with the carved-out frames (not pristine from the start).
                let cov = coverage(&sorted);
                let section_pages = self.frames.section_pages();
                // (Holes stay pristine unless handed out, which the log has.)
                for start in new_sections {
                    let span = PfnRange::new(start, section_pages);
                    for region in self.frames.layout().regions_in(span) {
                        let s = region.range.start.max(start).as_u64();
                        let e = region.range.end().min(span.end()).as_u64();
                        if region.kind == RegionKind::TagStorageCarvedOut {
                            ranges.push((Pfn::new(s), e - s));
                            continue;
                        }
                        let mut at = s;
                        let first = cov.partition_point(|&(_, end)| end <= s);
                        for &(cs, ce) in &cov[first..] {
                            if cs >= e {
                                break;
                            }
                            if cs > at {
                                ranges.push((Pfn::new(at), cs - at));
                            }
                            at = at.max(ce);
                        }
                        if at < e {
                            ranges.push((Pfn::new(at), e - at));
                        }
                    }
                }
                let mut pfns: Vec<Pfn> = Vec::new();
                for (first, pages) in ranges {
                    for i in 0..pages {
                        let pfn = first + i;
                        pfns.push(pfn);
                        // The closure over allocated blocks, old and new:
                        // only when the frame's state changed (a head's
                        // verdict reads its tails' states alone, a tail's
                        // its head's state alone; a change of counts or
                        // flags leaves the block's other verdicts as they
                        // were). No record is a free frame.
                        let old = cache
                            .records
                            .get(&pfn)
                            .map_or(FrameState::Free, |r| r.state);
                        let new = self
                            .frames
                            .block(pfn, 1)
                            .map_or(FrameState::Free, |m| m[0].state());
                        if old == new {
                            continue;
                        }
                        for state in [old, new] {
                            match state {
                                FrameState::Allocated { order, .. } => {
                                    pfns.extend((1..order.pages()).map(|k| pfn + k));
                                }
                                FrameState::Tail { head_offset } => {
                                    if let Some(h) = pfn.as_u64().checked_sub(head_offset.into()) {
                                        pfns.push(Pfn::new(h));
                                    }
                                }
                                _ => {}
                            }
                        }
                    }
                }
                pfns.sort();
                pfns.dedup();
                for &pfn in &pfns {
                    self.recheck_frame(cache, pfn, &covered);
                }
                cache.primed = true;
                Rechecked::Frames(pfns)
            }
            DirtyFrames::All => {
                cache.records.clear();
                cache.with_violations.clear();
                cache.sums = Counters::default();
                let starts: Vec<(Pfn, u64)> = self
                    .frames
                    .sections()
                    .map(|(s, section)| (s, section.len() as u64))
                    .collect();
                for (start, len) in starts {
                    for i in 0..len {
                        self.recheck_frame(cache, start + i, &covered);
                    }
                }
                cache.primed = true;
                Rechecked::All
            }
        };
        cache.blocks = sorted;
        cache.pageblocks = pageblocks;

        for pfn in &cache.with_violations {
            out.extend(cache.records[pfn].violations.iter().cloned());
        }
        recount.allocated = cache.sums.allocated;
        recount.cma_allocated = cache.sums.cma_allocated;
        recount.claimed = cache.sums.claimed;
        self.check_totals(&recount, &mut out);
        (out, rechecked)
    }

    /// Replaces the record of `pfn` by its verdict now.
    fn recheck_frame(&self, cache: &mut FrameCheckCache, pfn: Pfn, covered: &dyn Fn(Pfn) -> bool) {
        let record = self.frame_record(pfn, covered);
        // Most rechecked frames keep their verdict (a count changed): the
        // kept record is compared in place, not removed and inserted.
        match (cache.records.get_mut(&pfn), record) {
            (Some(old), Some(new)) if *old == new => {}
            (Some(old), Some(new)) => {
                add(&mut cache.sums, &old.recount, false);
                add(&mut cache.sums, &new.recount, true);
                match new.violations.is_empty() {
                    true => cache.with_violations.remove(&pfn),
                    false => cache.with_violations.insert(pfn),
                };
                *old = new;
            }
            (Some(_), None) => {
                let old = cache
                    .records
                    .remove(&pfn)
                    .expect("BUG: a kept record vanished");
                add(&mut cache.sums, &old.recount, false);
                cache.with_violations.remove(&pfn);
            }
            (None, Some(new)) => {
                add(&mut cache.sums, &new.recount, true);
                if !new.violations.is_empty() {
                    cache.with_violations.insert(pfn);
                }
                cache.records.insert(pfn, new);
            }
            (None, None) => {}
        }
    }

    /// The verdict of `pfn` now; `None` for what needs no record (a free
    /// frame with no violation and no count, or a frame of a section not
    /// materialised, which the global account checks).
    fn frame_record(&self, pfn: Pfn, covered: &dyn Fn(Pfn) -> bool) -> Option<FrameRecord> {
        let start = self.frames.section_start(pfn);
        let section = self.frames.block(start, self.frames.section_pages())?;
        let meta = &section[(pfn - start) as usize];
        let mut record = FrameRecord {
            state: meta.state(),
            ..FrameRecord::default()
        };
        match self.frames.layout().region_of(pfn) {
            None => {
                if !meta.is_pristine() {
                    record
                        .violations
                        .push(PhysViolation::HoleWithMetadata { pfn });
                }
            }
            Some(region) => self.check_present_frame(
                pfn,
                region.kind,
                covered(pfn),
                section,
                start,
                &mut record.recount,
                &mut record.violations,
            ),
        }
        let default = record.state == FrameState::Free
            && record.violations.is_empty()
            && record.recount == Counters::default();
        (!default).then_some(record)
    }
}
