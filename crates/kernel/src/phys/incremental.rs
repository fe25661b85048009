//! The incremental form of the allocator's checker: the per-frame part of
//! [`BuddyAllocator::check`] (every frame of every materialised section)
//! recomputed only for frames that may have changed, with the same
//! per-frame function ([`BuddyAllocator::check_present_frame`]); the part
//! that reads the free lists and the pageblocks
//! ([`BuddyAllocator::check_lists`], O(free blocks + pageblocks)) is reused
//! while no free list changed (each list's generation,
//! `crate::phys::runs::BlockRuns::generation`, is the one it saw), no
//! pageblock changed, the list order is the same and per-CPU lists are off
//! (they keep no generation: with them on it runs at every check). The
//! chunk table's recount is not part of it: it is redone for the chunks
//! that changed ([`BuddyAllocator::check_free_chunks_incremental`]).
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
//! per-frame contributions; the records are kept densely
//! ([`crate::phys::records`]), so that a rechecked frame costs an index.
//! The result equals the full checker's as a
//! multiset (the order differs); `crate::machine::tests::incremental` runs
//! both on random programs and on planted bugs.

use std::collections::BTreeMap;

use mte::{Pfn, PfnRange};

use crate::phys::buddy::{BuddyAllocator, Counters, FreeListOrder, Pageblock};
use crate::phys::check::{FreeBlock, PhysViolation};
use crate::phys::chunks::{ChunkCheckCache, ChunkLog, SortedBlocks, changed_block_chunks};
use crate::phys::dirty::DirtyFrames;
use crate::phys::frame::{FrameMeta, FrameState, MigrateType};
use crate::phys::layout::{Order, RegionKind};
use crate::phys::records::FrameRecords;

/// What one frame contributed at the last check, its violations aside:
/// kept for every frame of a materialised section, in one vector per
/// section, so that a step's rechecked frames cost an index each rather
/// than an ordered-map search (the default is a free frame with no count).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct FrameRecord {
    state: FrameState,
    allocated: u32,
    cma_allocated: u32,
    claimed: u32,
}

impl FrameRecord {
    fn of(state: FrameState, recount: &Counters) -> Self {
        let narrow = |n: u64| u32::try_from(n).expect("BUG: a frame counts for over 2^32 frames");
        FrameRecord {
            state,
            allocated: narrow(recount.allocated),
            cma_allocated: narrow(recount.cma_allocated),
            claimed: narrow(recount.claimed),
        }
    }

    fn recount(&self) -> Counters {
        Counters {
            allocated: self.allocated.into(),
            cma_allocated: self.cma_allocated.into(),
            claimed: self.claimed.into(),
            ..Counters::default()
        }
    }
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
    /// Each frame's record.
    records: FrameRecords<FrameRecord>,
    /// The frames whose verdict is not empty, with it.
    violations: BTreeMap<Pfn, Vec<PhysViolation>>,
    sums: Counters,
    /// The free lists' verdict at the last check.
    lists: Option<ListsVerdict>,
    /// The chunk table's verdict at the last check.
    chunks: ChunkCheckCache,
}

/// What [`BuddyAllocator::check_lists`] said at the last check, with what
/// it read besides the static layout: it stands while these are unchanged.
#[derive(Clone, Debug)]
struct ListsVerdict {
    /// Each free list's [`crate::phys::runs::BlockRuns::generation`], by
    /// order then list.
    generations: Vec<u64>,
    pageblocks: Vec<Pageblock>,
    list_order: FreeListOrder,
    violations: Vec<PhysViolation>,
    /// The free blocks, by head.
    blocks: Vec<FreeBlock>,
    /// The running maximum of the blocks' ends, by head.
    max_end: Vec<Pfn>,
    recount: Counters,
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
    // Two sorted runs (each list's points ascend): a stable sort merges
    // them in one pass.
    points.sort();
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

/// Appends `[start, end)` to `spans`, or widens the last span when the
/// two touch or overlap (the log's per-frame entries of a block, and a
/// frame's closure right after it, coalesce; the spans are sorted and
/// merged after).
fn push_span(spans: &mut Vec<(u64, u64)>, start: u64, end: u64) {
    match spans.last_mut() {
        Some(last) if last.0 <= start && start <= last.1 => last.1 = last.1.max(end),
        _ => spans.push((start, end)),
    }
}

impl BuddyAllocator {
    /// Every free list's generation, by order then list.
    fn list_generations(&self) -> impl Iterator<Item = u64> + '_ {
        self.free_lists
            .iter()
            .flat_map(|lists| lists.iter().map(|runs| runs.generation()))
    }

    /// Whether `v` still holds: no free list, pageblock or list order
    /// changed, and no per-CPU lists (read afresh at every check).
    fn lists_unchanged(&self, v: &ListsVerdict) -> bool {
        self.pcp.is_none()
            && v.list_order == self.list_order
            && v.pageblocks == self.pageblocks
            && self.list_generations().eq(v.generations.iter().copied())
    }

    /// [`BuddyAllocator::check`], recomputing the per-frame part only for
    /// the frames `dirty` names (and those its closure adds; see the module
    /// doc). Also says which frames it recomputed, for the layers whose
    /// per-frame checks read the same metadata.
    pub(crate) fn check_incremental(
        &self,
        cache: &mut FrameCheckCache,
        dirty: DirtyFrames,
        chunk_log: ChunkLog,
    ) -> (Vec<PhysViolation>, Rechecked) {
        let mut out = Vec::new();
        // The free lists' verdict: reused while no list, no pageblock and
        // not the list order changed (per-CPU lists, when on, are read
        // afresh at every check: they keep no generation).
        let fresh = cache
            .lists
            .as_ref()
            .is_some_and(|v| self.lists_unchanged(v));
        // The frames whose coverage by free blocks, or whose pageblock's
        // type, changed since the last check.
        let mut changes: Vec<(Pfn, u64)> = Vec::new();
        // The chunks of free blocks added or removed since the last check.
        let mut changed_chunks: Vec<u64> = Vec::new();
        if !fresh {
            let mut violations = Vec::new();
            let (blocks, recount) = self.check_lists_with(false, &mut violations);
            let mut sorted: Vec<(Pfn, Order)> = blocks.iter().map(|b| (b.head, b.order)).collect();
            // Already in order but where heads tie (broken lists).
            if !sorted.is_sorted() {
                sorted.sort_unstable();
            }
            let pageblocks: Vec<MigrateType> =
                self.pageblocks.iter().map(|p| p.migratetype).collect();
            if cache.primed {
                coverage_changes(&cache.blocks, &sorted, &mut changes);
                changed_block_chunks(&cache.blocks, &sorted, &mut changed_chunks);
                let pb_pages = self.geometry().pageblock_pages();
                let pb_order = self.geometry().pageblock_order().get();
                for (i, (a, b)) in cache.pageblocks.iter().zip(&pageblocks).enumerate() {
                    if a != b {
                        let start = Pfn::new((self.first_pageblock + i as u64) << pb_order);
                        changes.push((start, pb_pages));
                    }
                }
            }
            cache.blocks = sorted;
            cache.pageblocks = pageblocks;
            // Coverage: blocks by head with the running maximum of their
            // ends (blocks may overlap when the lists are broken).
            let mut max_end = Vec::with_capacity(blocks.len());
            let mut end = Pfn::new(0);
            for b in &blocks {
                end = end.max(b.end());
                max_end.push(end);
            }
            cache.lists = Some(ListsVerdict {
                generations: self.list_generations().collect(),
                pageblocks: self.pageblocks.clone(),
                list_order: self.list_order,
                violations,
                blocks,
                max_end,
                recount,
            });
        }
        // Taken out while the frames' records change, put back at the end.
        let lists = cache
            .lists
            .take()
            .expect("BUG: the free lists' verdict was just kept");
        out.extend(lists.violations.iter().cloned());
        // A reset of the frames' state (`DirtyFrames::All`) recounts every
        // chunk too.
        let chunk_log = match dirty {
            DirtyFrames::All => ChunkLog::All,
            DirtyFrames::Ranges { .. } => chunk_log,
        };
        self.check_free_chunks_incremental(
            &mut cache.chunks,
            chunk_log,
            changed_chunks,
            &SortedBlocks {
                blocks: &lists.blocks,
                max_end: &lists.max_end,
            },
            &mut out,
        );
        let mut recount = lists.recount;
        let mut lookup = FrameLookup::new(self, &lists.blocks, &lists.max_end);

        let rechecked = match dirty {
            DirtyFrames::Ranges {
                mut ranges,
                new_sections,
            } => {
                let new_sections: Vec<Pfn> = if cache.primed {
                    ranges.extend(changes);
                    new_sections
                } else {
                    // The first check: every frame changed since boot is
                    // in the log; the sections are all new to the checker.
                    self.frames.sections().map(|(start, _)| start).collect()
                };
                // In a new section, a pristine frame's verdict is empty
                // where a free block covers it; the others get a look,
                // with the carved-out frames (not pristine from the start).
                let cov = match new_sections.is_empty() {
                    true => Vec::new(),
                    false => coverage(&cache.blocks),
                };
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
                // `[start, end)` spans, sorted and merged: a few per step,
                // where sorting their frames would cost a sort of every
                // frame of a huge page (the log hands out a frame at a
                // time, mostly in order, so they coalesce as they come).
                let mut spans: Vec<(u64, u64)> = Vec::with_capacity(ranges.len());
                for (first, pages) in ranges {
                    push_span(&mut spans, first.as_u64(), first.as_u64() + pages);
                }
                let spans = merged(spans);
                // Each logged frame is rechecked in one pass that also
                // gathers the closure over allocated blocks, old and new:
                // only where the frame's state changed (a head's verdict
                // reads its tails' states alone, a tail's its head's state
                // alone; a change of counts or flags leaves the block's
                // other verdicts as they were). No record is a free frame.
                let mut closure: Vec<(u64, u64)> = Vec::new();
                for &(start, end) in &spans {
                    for pfn in start..end {
                        let pfn = Pfn::new(pfn);
                        let (old, new) = self.recheck_frame(cache, pfn, &mut lookup);
                        if old == new {
                            continue;
                        }
                        for state in [old, new] {
                            match state {
                                FrameState::Allocated { order, .. } => {
                                    push_span(
                                        &mut closure,
                                        pfn.as_u64() + 1,
                                        pfn.as_u64() + order.pages(),
                                    );
                                }
                                FrameState::Tail { head_offset } => {
                                    if let Some(h) = pfn.as_u64().checked_sub(head_offset.into()) {
                                        push_span(&mut closure, h, h + 1);
                                    }
                                }
                                _ => {}
                            }
                        }
                    }
                }
                // The frames of both, in order; those of the closure alone
                // are rechecked now (walks of the sorted spans, no sort of
                // frames).
                let mut extra: Vec<u64> = Vec::new();
                let mut at = 0;
                for (start, end) in merged(closure) {
                    for pfn in start..end {
                        while spans.get(at).is_some_and(|&(_, e)| e <= pfn) {
                            at += 1;
                        }
                        if spans.get(at).is_some_and(|&(s, _)| s <= pfn) {
                            continue;
                        }
                        self.recheck_frame(cache, Pfn::new(pfn), &mut lookup);
                        extra.push(pfn);
                    }
                }
                let logged: u64 = spans.iter().map(|&(s, e)| e - s).sum();
                let mut pfns: Vec<Pfn> = Vec::with_capacity(logged as usize + extra.len());
                let mut extra = extra.into_iter().peekable();
                for &(start, end) in &spans {
                    for pfn in start..end {
                        while let Some(e) = extra.next_if(|&e| e < pfn) {
                            pfns.push(Pfn::new(e));
                        }
                        pfns.push(Pfn::new(pfn));
                    }
                }
                pfns.extend(extra.map(Pfn::new));
                cache.primed = true;
                Rechecked::Frames(pfns)
            }
            DirtyFrames::All => {
                cache.records.clear();
                cache.violations.clear();
                cache.sums = Counters::default();
                let starts: Vec<(Pfn, u64)> = self
                    .frames
                    .sections()
                    .map(|(s, section)| (s, section.len() as u64))
                    .collect();
                for (start, len) in starts {
                    for i in 0..len {
                        self.recheck_frame(cache, start + i, &mut lookup);
                    }
                }
                cache.primed = true;
                Rechecked::All
            }
        };
        cache.lists = Some(lists);

        for violations in cache.violations.values() {
            out.extend(violations.iter().cloned());
        }
        recount.allocated = cache.sums.allocated;
        recount.cma_allocated = cache.sums.cma_allocated;
        recount.claimed = cache.sums.claimed;
        self.check_totals(&recount, &mut out);
        (out, rechecked)
    }

    /// Replaces the record of `pfn` by its verdict now; returns the
    /// frame's state before (as recorded) and now.
    fn recheck_frame(
        &self,
        cache: &mut FrameCheckCache,
        pfn: Pfn,
        lookup: &mut FrameLookup<'_>,
    ) -> (FrameState, FrameState) {
        let (record, violations) = self.frame_record(pfn, lookup);
        let old = cache.records.set(pfn, record);
        // Most rechecked frames keep their record (a count changed).
        if old != record {
            add(&mut cache.sums, &old.recount(), false);
            add(&mut cache.sums, &record.recount(), true);
        }
        match violations.is_empty() {
            true => {
                if !cache.violations.is_empty() {
                    cache.violations.remove(&pfn);
                }
            }
            false => {
                cache.violations.insert(pfn, violations);
            }
        }
        (old.state, record.state)
    }

    /// The record and violations of `pfn` now (the default record and none
    /// for a frame of a section not materialised, which the global account
    /// checks).
    fn frame_record(
        &self,
        pfn: Pfn,
        lookup: &mut FrameLookup<'_>,
    ) -> (FrameRecord, Vec<PhysViolation>) {
        let (start, section) = lookup.section(pfn);
        let Some(section) = section else {
            return (FrameRecord::default(), Vec::new());
        };
        let meta = &section[(pfn - start) as usize];
        let mut recount = Counters::default();
        let mut violations = Vec::new();
        match lookup.kind(pfn) {
            None => {
                if !meta.is_pristine() {
                    violations.push(PhysViolation::HoleWithMetadata { pfn });
                }
            }
            Some(kind) => self.check_present_frame(
                pfn,
                kind,
                lookup.covered(pfn),
                section,
                start,
                &mut recount,
                &mut violations,
            ),
        }
        (FrameRecord::of(meta.state(), &recount), violations)
    }
}

/// What a rechecked frame's verdict reads besides the frame, kept for the
/// last frame looked up: its section's metadata, its region, and the free
/// blocks around it. The frames come in frame order, a block's worth at a
/// time, so most cost a comparison instead of a section look-up, a region
/// search and a search of the free blocks each.
struct FrameLookup<'a> {
    alloc: &'a BuddyAllocator,
    /// The free blocks by head, with the running maximum of their ends.
    blocks: &'a [FreeBlock],
    max_end: &'a [Pfn],
    /// The last section: its first frame, its end, its metadata (`None`:
    /// not materialised).
    section: Option<(Pfn, u64, Option<&'a [FrameMeta]>)>,
    /// The last region found, as `[start, end)` and kind (holes are looked
    /// up again: the log rarely names their frames).
    region: Option<(u64, u64, RegionKind)>,
    /// `[lo, hi)`, the frames with the same free blocks at or below them
    /// as the last one, of which those below `end` are covered.
    cover: Option<(u64, u64, u64)>,
}

impl<'a> FrameLookup<'a> {
    fn new(alloc: &'a BuddyAllocator, blocks: &'a [FreeBlock], max_end: &'a [Pfn]) -> Self {
        FrameLookup {
            alloc,
            blocks,
            max_end,
            section: None,
            region: None,
            cover: None,
        }
    }

    /// The first frame of the section of `pfn`, and its metadata if
    /// materialised.
    fn section(&mut self, pfn: Pfn) -> (Pfn, Option<&'a [FrameMeta]>) {
        if let Some((start, end, metas)) = self.section
            && start <= pfn
            && pfn.as_u64() < end
        {
            return (start, metas);
        }
        let frames = &self.alloc.frames;
        let (start, pages) = (frames.section_start(pfn), frames.section_pages());
        let metas = frames.block(start, pages);
        self.section = Some((start, start.as_u64() + pages, metas));
        (start, metas)
    }

    /// The kind of the region of `pfn` (`None`: a hole).
    fn kind(&mut self, pfn: Pfn) -> Option<RegionKind> {
        let at = pfn.as_u64();
        if let Some((start, end, kind)) = self.region
            && start <= at
            && at < end
        {
            return Some(kind);
        }
        let region = self.alloc.frames.layout().region_of(pfn)?;
        let range = region.range;
        self.region = Some((range.start.as_u64(), range.end().as_u64(), region.kind));
        Some(region.kind)
    }

    /// Whether a free block covers `pfn`.
    fn covered(&mut self, pfn: Pfn) -> bool {
        let at = pfn.as_u64();
        if let Some((lo, hi, end)) = self.cover
            && lo <= at
            && at < hi
        {
            return at < end;
        }
        // The blocks with heads at or below `pfn` are the first `k`: the
        // same for every frame up to the next head.
        let k = self.blocks.partition_point(|b| b.head <= pfn);
        let (lo, end) = match k {
            0 => (0, 0),
            _ => (
                self.blocks[k - 1].head.as_u64(),
                self.max_end[k - 1].as_u64(),
            ),
        };
        let hi = self.blocks.get(k).map_or(u64::MAX, |b| b.head.as_u64());
        self.cover = Some((lo, hi, end));
        at < end
    }
}

/// `spans` sorted and merged into disjoint `[start, end)` spans in order
/// (touching spans join).
fn merged(mut spans: Vec<(u64, u64)>) -> Vec<(u64, u64)> {
    if !spans.is_sorted() {
        spans.sort_unstable();
    }
    let mut out: Vec<(u64, u64)> = Vec::with_capacity(spans.len());
    for (start, end) in spans {
        if start >= end {
            continue;
        }
        match out.last_mut() {
            Some(last) if start <= last.1 => last.1 = last.1.max(end),
            _ => out.push((start, end)),
        }
    }
    out
}
