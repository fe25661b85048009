//! The invariant checker of the physical memory layer: every rule of
//! [`crate::phys::buddy`]'s contract, recomputed from scratch and reported as
//! structured [`PhysViolation`]s (empty when all hold).
//!
//! Cost: O(free-list runs expanded to blocks + frames of materialised
//! sections + pageblocks). Free frames of untouched sections are checked by
//! the global count (every present frame accounted for exactly once).

use crate::phys::buddy::{BuddyAllocator, Counters, FreeList};
use crate::phys::frame::{FrameMeta, FrameState, MigrateType, PageFlag};
use crate::phys::layout::{Order, RegionKind};
use mte::{Pfn, PfnRange};

/// An exact counter of the allocator.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PhysCounter {
    Free(FreeList),
    Allocated,
    CmaAllocated,
    Claimed,
    /// Pages on one CPU's per-CPU lists.
    Pcp {
        cpu: u32,
    },
}

/// One broken invariant.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PhysViolation {
    /// A free block does not start at a multiple of its size.
    FreeBlockMisaligned { head: Pfn, order: Order },
    /// A free block covers a hole or a carved-out frame.
    FreeBlockNotAllocatable { head: Pfn, order: Order, pfn: Pfn },
    /// Two free blocks overlap.
    FreeBlocksOverlap { first: Pfn, second: Pfn },
    /// A free block is on another list than its pageblock says.
    FreeBlockWrongList {
        head: Pfn,
        order: Order,
        list: FreeList,
        pageblock: Pfn,
        expected: FreeList,
    },
    /// An isolated free block larger than a pageblock.
    IsolatedBlockTooLarge { head: Pfn, order: Order },
    /// Two free buddies of the same order that should have merged.
    FreeBuddiesNotMerged { head: Pfn, buddy: Pfn, order: Order },
    /// A frame inside a free block whose metadata is not pristine.
    FreeFrameNotPristine { pfn: Pfn, meta: FrameMeta },
    /// A frame marked free that no free block covers.
    FreeFrameInNoBlock { pfn: Pfn },
    /// A frame whose state contradicts its region (a carved-out frame not
    /// `CarvedOut`, or `CarvedOut` outside a carved-out region).
    StateOutsideRegion {
        pfn: Pfn,
        state: FrameState,
        kind: RegionKind,
    },
    /// An allocated block that is misaligned, crosses regions, or whose tails
    /// do not point back at it.
    BadAllocatedBlock { head: Pfn, order: Order, pfn: Pfn },
    /// A tail frame without a matching head.
    OrphanTail { pfn: Pfn, head_offset: u32 },
    /// An unmovable allocation inside a CMA pageblock.
    UnmovableInCma { head: Pfn },
    /// A tag storage frame marked tagged (`docs/model.md` §4.2).
    TaggedTagStorage { pfn: Pfn },
    /// A frame of a hole with metadata other than pristine.
    HoleWithMetadata { pfn: Pfn },
    /// A pageblock of a CMA region that is not Cma, or a Cma pageblock
    /// without CMA frames.
    PageblockType { pageblock: Pfn, found: MigrateType },
    /// A counter that differs from the recount.
    Counter {
        counter: PhysCounter,
        kept: u64,
        recounted: u64,
    },
    /// A block on a per-CPU list of an order that has no list, misaligned,
    /// covering a frame that is not allocatable, or of a migrate type its
    /// pageblock does not allow (unmovable in CMA).
    BadPcpBlock { head: Pfn, order: Order },
    /// A per-CPU list entry and the index of blocks on lists disagree.
    PcpIndex { head: Pfn },
    /// Present frames not accounted for exactly once.
    FramesUnaccounted { present: u64, accounted: u64 },
    /// A page-contents slot and the frame index disagree.
    ContentsSlot { pfn: Pfn, slot: u32 },
    /// A slot on the free list that holds a buffer, or does not exist.
    ContentsFreeSlot { slot: u32 },
    /// Page contents stored for a frame outside every region.
    ContentsOutsideMemory { pfn: Pfn },
    /// The contents' count of pages with data differs from the recount.
    ContentsCount { kept: u64, recounted: u64 },
    /// A free list's Linux order (`free-list-order=linux`) does not hold
    /// exactly its blocks, or a list keeps an order the allocator does not
    /// (or the other way round).
    FreeListOrder { order: Order, list: FreeList },
    /// The allocator's count of taken frames (on no buddy free list) of
    /// the `frames` frames from `first` (a chunk of 32, or a section of
    /// chunks never counted) differs from the recount from the free lists
    /// (`crate::phys::chunks`).
    FreeChunk {
        first: Pfn,
        frames: u64,
        kept: i64,
        recounted: i64,
    },
}

/// A free block found on a list.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(crate) struct FreeBlock {
    pub(crate) head: Pfn,
    pub(crate) order: Order,
    pub(crate) list: FreeList,
    /// On a per-CPU list (then `list` is the list's migrate type), not in
    /// the buddy allocator.
    pub(crate) pcp: bool,
}

impl FreeBlock {
    pub(crate) fn end(self) -> Pfn {
        self.head + self.order.pages()
    }
}

impl BuddyAllocator {
    /// Every broken invariant of the allocator; empty when all hold.
    pub fn check(&self) -> Vec<PhysViolation> {
        let mut out = Vec::new();
        let (blocks, mut recount) = self.check_lists(&mut out);
        // Frames of materialised sections.
        let mut cursor = 0;
        for (start, section) in self.frames.sections() {
            self.check_section(start, section, &blocks, &mut cursor, &mut recount, &mut out);
        }
        self.check_totals(&recount, &mut out);
        out
    }

    /// The checks that read the pageblocks and the free lists in full (the
    /// incremental checker runs them at every check too): pageblock types,
    /// every free block, overlaps, unmerged buddies. Returns the free
    /// blocks sorted by head and the free counts recounted from the lists.
    pub(crate) fn check_lists(&self, out: &mut Vec<PhysViolation>) -> (Vec<FreeBlock>, Counters) {
        self.check_lists_with(true, out)
    }

    /// [`Self::check_lists`], with or without the chunk table's recount
    /// ([`Self::check_free_chunks`]; the incremental checker recounts the
    /// chunks that changed instead).
    pub(crate) fn check_lists_with(
        &self,
        chunks: bool,
        out: &mut Vec<PhysViolation>,
    ) -> (Vec<FreeBlock>, Counters) {
        let layout = self.frames.layout();
        let g = *layout.geometry();

        // Pageblock types against the regions.
        for (i, pb) in self.pageblocks.iter().enumerate() {
            let start = Pfn::new((self.first_pageblock + i as u64) << g.pageblock_order().get());
            let blocks = PfnRange::new(start, g.pageblock_pages());
            let has_cma = layout
                .regions_in(blocks)
                .iter()
                .any(|r| r.kind == RegionKind::TagStorageCma);
            if has_cma != (pb.migratetype == MigrateType::Cma) {
                out.push(PhysViolation::PageblockType {
                    pageblock: start,
                    found: pb.migratetype,
                });
            }
        }

        // Free blocks.
        let mut recount = Counters::default();
        let mut blocks = Vec::new();
        let linux_order = self.list_order == crate::phys::buddy::FreeListOrder::Linux;
        for (order, lists) in self.free_lists.iter().enumerate() {
            let order = Order::new(order as u8);
            for list in FreeList::ALL {
                let runs = &lists[list.index()];
                if runs.keeps_linux_order() != linux_order || !runs.order_consistent() {
                    out.push(PhysViolation::FreeListOrder { order, list });
                }
                for head in lists[list.index()].iter() {
                    recount.free[list.index()] += order.pages();
                    blocks.push(FreeBlock {
                        head,
                        order,
                        list,
                        pcp: false,
                    });
                }
            }
        }
        for b in &blocks {
            self.check_free_block(*b, out);
        }
        if chunks {
            self.check_free_chunks(&blocks, out);
        }
        self.check_pcp(&mut blocks, &mut recount, out);
        blocks.sort_by_key(|b| b.head);
        for pair in blocks.windows(2) {
            if pair[0].end() > pair[1].head {
                out.push(PhysViolation::FreeBlocksOverlap {
                    first: pair[0].head,
                    second: pair[1].head,
                });
            }
        }
        for b in &blocks {
            // Blocks on per-CPU lists never merge.
            if b.pcp || b.order >= g.max_order() {
                continue;
            }
            let buddy = b.head.buddy(b.order);
            if buddy < b.head {
                continue;
            }
            let Ok(i) = blocks.binary_search_by_key(&buddy, |x| x.head) else {
                continue;
            };
            let other = blocks[i];
            if other.pcp {
                continue;
            }
            let allowed = b.order < g.pageblock_order() || FreeList::may_merge(b.list, other.list);
            if other.order == b.order && allowed {
                out.push(PhysViolation::FreeBuddiesNotMerged {
                    head: b.head,
                    buddy,
                    order: b.order,
                });
            }
        }
        (blocks, recount)
    }

    /// The kept counters against `recount`, and the global account.
    pub(crate) fn check_totals(&self, recount: &Counters, out: &mut Vec<PhysViolation>) {
        let layout = self.frames.layout();
        let kept = &self.counters;
        for list in FreeList::ALL {
            let i = list.index();
            if kept.free[i] != recount.free[i] {
                out.push(PhysViolation::Counter {
                    counter: PhysCounter::Free(list),
                    kept: kept.free[i],
                    recounted: recount.free[i],
                });
            }
        }
        for (counter, k, r) in [
            (PhysCounter::Allocated, kept.allocated, recount.allocated),
            (
                PhysCounter::CmaAllocated,
                kept.cma_allocated,
                recount.cma_allocated,
            ),
            (PhysCounter::Claimed, kept.claimed, recount.claimed),
        ] {
            if k != r {
                out.push(PhysViolation::Counter {
                    counter,
                    kept: k,
                    recounted: r,
                });
            }
        }
        if let Some(pcp) = &self.pcp {
            for (cpu, c) in pcp.cpus.iter().enumerate() {
                let pb_order = self.geometry().pageblock_order();
                let recounted: u64 = c
                    .lists
                    .iter()
                    .enumerate()
                    .map(|(l, list)| {
                        list.len() as u64 * crate::phys::pcp::list_order(l, pb_order).pages()
                    })
                    .sum();
                if c.count != recounted {
                    out.push(PhysViolation::Counter {
                        counter: PhysCounter::Pcp { cpu: cpu as u32 },
                        kept: c.count,
                        recounted,
                    });
                }
            }
        }
        let accounted = recount.free.iter().sum::<u64>()
            + recount.pcp
            + recount.allocated
            + recount.claimed
            + layout.pages_of(RegionKind::TagStorageCarvedOut);
        if accounted != layout.present_pages() {
            out.push(PhysViolation::FramesUnaccounted {
                present: layout.present_pages(),
                accounted,
            });
        }
    }

    /// The blocks on per-CPU lists: each on the list its index says, of an
    /// order with lists, aligned, allocatable, not unmovable in CMA. Adds
    /// them to `blocks` (for the overlap and coverage checks) and to
    /// `recount.pcp`.
    fn check_pcp(
        &self,
        blocks: &mut Vec<FreeBlock>,
        recount: &mut Counters,
        out: &mut Vec<PhysViolation>,
    ) {
        let Some(pcp) = &self.pcp else {
            return;
        };
        let layout = self.layout();
        let pb_order = layout.geometry().pageblock_order();
        let mut listed = 0usize;
        for (cpu, c) in pcp.cpus.iter().enumerate() {
            for (l, list) in c.lists.iter().enumerate() {
                for &head in list {
                    listed += 1;
                    if pcp.index.get(&head) != Some(&(cpu as u32, l as u8)) {
                        out.push(PhysViolation::PcpIndex { head });
                    }
                }
            }
        }
        if listed != pcp.index.len() {
            // An index entry without a list entry: name the first.
            let orphan = pcp.index.iter().find(|&(head, &(cpu, l))| {
                !pcp.cpus
                    .get(cpu as usize)
                    .is_some_and(|c| c.lists[l as usize].contains(head))
            });
            if let Some((&head, _)) = orphan {
                out.push(PhysViolation::PcpIndex { head });
            }
        }
        for (head, order, list, _cpu) in self.pcp_blocks() {
            recount.pcp += order.pages();
            let range = PfnRange::new(head, order.pages());
            let allocatable = layout.first_hole_in(range).is_none()
                && layout
                    .regions_in(range)
                    .iter()
                    .all(|r| r.kind.is_allocatable());
            let unmovable_in_cma = list == FreeList::Unmovable
                && self.pageblock(head).map(|b| b.migratetype) == Some(MigrateType::Cma);
            if !crate::phys::pcp::allowed_order(order, pb_order)
                || !head.is_aligned(order)
                || !allocatable
                || unmovable_in_cma
            {
                out.push(PhysViolation::BadPcpBlock { head, order });
            }
            blocks.push(FreeBlock {
                head,
                order,
                list,
                pcp: true,
            });
        }
    }

    fn check_free_block(&self, b: FreeBlock, out: &mut Vec<PhysViolation>) {
        let layout = self.layout();
        let g = layout.geometry();
        let head = b.head;
        if !head.is_aligned(b.order) {
            out.push(PhysViolation::FreeBlockMisaligned {
                head,
                order: b.order,
            });
        }
        let range = PfnRange::new(head, b.order.pages());
        let bad = layout.first_hole_in(range).or_else(|| {
            layout
                .regions_in(range)
                .iter()
                .find(|r| !r.kind.is_allocatable())
                .map(|r| r.range.start.max(head))
        });
        if let Some(pfn) = bad {
            out.push(PhysViolation::FreeBlockNotAllocatable {
                head,
                order: b.order,
                pfn,
            });
        }
        if b.list == FreeList::Isolate && b.order > g.pageblock_order() {
            out.push(PhysViolation::IsolatedBlockTooLarge {
                head,
                order: b.order,
            });
        }
        let mut pb = g.pageblock_start(head);
        while pb < b.end() {
            let expected = self.list_of(pb);
            if expected != Some(b.list) {
                out.push(PhysViolation::FreeBlockWrongList {
                    head,
                    order: b.order,
                    list: b.list,
                    pageblock: pb,
                    expected: expected.unwrap_or(FreeList::Isolate),
                });
            }
            pb += g.pageblock_pages();
        }
    }

    fn check_section(
        &self,
        start: Pfn,
        section: &[FrameMeta],
        blocks: &[FreeBlock],
        cursor: &mut usize,
        recount: &mut Counters,
        out: &mut Vec<PhysViolation>,
    ) {
        let layout = self.layout();
        let range = PfnRange::new(start, section.len() as u64);
        let meta_of = |pfn: u64| &section[(pfn - start.as_u64()) as usize];
        // Holes must carry no metadata.
        let mut next = start.as_u64();
        let mut holes = Vec::new();
        for region in layout.regions_in(range) {
            holes.push(next..region.range.start.as_u64().max(next));
            next = region.range.end().as_u64();
        }
        holes.push(next..range.end().as_u64());
        for pfn in holes.into_iter().flatten() {
            if !meta_of(pfn).is_pristine() {
                out.push(PhysViolation::HoleWithMetadata { pfn: Pfn::new(pfn) });
            }
        }
        for region in layout.regions_in(range) {
            let from = region.range.start.max(start).as_u64();
            let to = region.range.end().min(range.end()).as_u64();
            for pfn in from..to {
                let at = Pfn::new(pfn);
                while *cursor < blocks.len() && blocks[*cursor].end() <= at {
                    *cursor += 1;
                }
                let covered = blocks.get(*cursor).is_some_and(|b| b.head <= at);
                self.check_present_frame(at, region.kind, covered, section, start, recount, out);
            }
        }
    }

    /// The verdict of the present frame `at` of the materialised `section`
    /// starting at `start` (`covered`: inside a free block): its state
    /// against its region and free blocks, its allocated block's tails or
    /// its tail's head; adds its pages to `recount`. It reads only the
    /// frame, its allocated block's frames (a head's tails, a tail's
    /// head), its pageblock's type and the static layout: the incremental
    /// checker's dirty closure rests on this.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn check_present_frame(
        &self,
        at: Pfn,
        kind: RegionKind,
        covered: bool,
        section: &[FrameMeta],
        start: Pfn,
        recount: &mut Counters,
        out: &mut Vec<PhysViolation>,
    ) {
        let pfn = at.as_u64();
        let meta_of = |pfn: u64| &section[(pfn - start.as_u64()) as usize];
        let meta = meta_of(pfn);
        if kind.is_tag_storage() && meta.flags.contains(PageFlag::Tagged) {
            out.push(PhysViolation::TaggedTagStorage { pfn: at });
        }
        if covered {
            if !meta.is_pristine() {
                out.push(PhysViolation::FreeFrameNotPristine {
                    pfn: at,
                    meta: meta.clone(),
                });
            }
            return;
        }
        let carved = kind == RegionKind::TagStorageCarvedOut;
        match meta.state() {
            FrameState::CarvedOut if carved => {}
            state @ FrameState::CarvedOut => {
                out.push(PhysViolation::StateOutsideRegion {
                    pfn: at,
                    state,
                    kind,
                });
            }
            state if carved => {
                out.push(PhysViolation::StateOutsideRegion {
                    pfn: at,
                    state,
                    kind,
                });
            }
            FrameState::Free => out.push(PhysViolation::FreeFrameInNoBlock { pfn: at }),
            FrameState::Claimed => recount.claimed += 1,
            FrameState::Allocated { order, migratetype } => {
                recount.allocated += order.pages();
                let in_cma = self.pageblock(at).map(|b| b.migratetype) == Some(MigrateType::Cma);
                if in_cma {
                    recount.cma_allocated += order.pages();
                    if migratetype != MigrateType::Movable {
                        out.push(PhysViolation::UnmovableInCma { head: at });
                    }
                }
                self.check_allocated_block(at, order, section, start, out);
            }
            FrameState::Tail { head_offset } => {
                let head = pfn.checked_sub(u64::from(head_offset));
                let ok = head.filter(|&h| h >= start.as_u64()).is_some_and(|h| {
                    matches!(meta_of(h).state(), FrameState::Allocated { order, .. }
                        if u64::from(head_offset) < order.pages())
                });
                if !ok {
                    out.push(PhysViolation::OrphanTail {
                        pfn: at,
                        head_offset,
                    });
                }
            }
        }
    }

    fn check_allocated_block(
        &self,
        head: Pfn,
        order: Order,
        section: &[FrameMeta],
        start: Pfn,
        out: &mut Vec<PhysViolation>,
    ) {
        let layout = self.layout();
        let bad = |pfn: Pfn| PhysViolation::BadAllocatedBlock { head, order, pfn };
        let range = PfnRange::new(head, order.pages());
        if !head.as_u64().is_multiple_of(order.pages()) {
            out.push(bad(head));
            return;
        }
        let region = layout
            .region_of(head)
            .expect("BUG: allocated frame in a hole");
        if !(region.range.start <= range.start && range.end() <= region.range.end()) {
            out.push(bad(head));
            return;
        }
        let first = (head - start) as usize;
        for offset in 1..order.pages() as usize {
            let expected = FrameState::Tail {
                head_offset: offset as u32,
            };
            if section.get(first + offset).map(FrameMeta::state) != Some(expected) {
                out.push(bad(head + offset as u64));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::phys::buddy::AllocFlags;
    use crate::phys::buddy::tests::{o, p, small};
    use crate::phys::layout::CmaUse;

    #[test]
    fn checker_catches_a_lost_free_block_and_a_bad_counter() {
        let mut a = small(CmaUse::Never);
        // Remove a free block behind the allocator's back.
        a.del_free(Pfn::new(8), o(3), FreeList::Movable);
        let v = a.check();
        assert!(
            v.contains(&PhysViolation::FramesUnaccounted {
                present: 48,
                accounted: 40
            }),
            "{v:?}"
        );
        let mut a = small(CmaUse::Never);
        a.counters.allocated = 3;
        assert_eq!(
            a.check(),
            vec![PhysViolation::Counter {
                counter: PhysCounter::Allocated,
                kept: 3,
                recounted: 0
            }]
        );
    }

    #[test]
    fn checker_catches_unmerged_buddies_and_wrong_lists() {
        let mut a = small(CmaUse::Never);
        // Split an order-3 block by hand into two order-2 halves: buddies.
        a.del_free(Pfn::new(0), o(3), FreeList::Movable);
        a.add_free(Pfn::new(0), o(2), FreeList::Movable);
        a.add_free(Pfn::new(4), o(2), FreeList::Movable);
        assert_eq!(
            a.check(),
            vec![PhysViolation::FreeBuddiesNotMerged {
                head: p(0),
                buddy: p(4),
                order: o(2)
            }]
        );
        let mut a = small(CmaUse::Never);
        a.del_free(Pfn::new(8), o(3), FreeList::Movable);
        a.add_free(Pfn::new(8), o(3), FreeList::Unmovable);
        let v = a.check();
        assert!(
            matches!(
                v[0],
                PhysViolation::FreeBlockWrongList {
                    expected: FreeList::Movable,
                    ..
                }
            ),
            "{v:?}"
        );
    }

    #[test]
    fn checker_catches_tagged_tag_storage_and_dirty_free_frames() {
        let mut a = small(CmaUse::Prefer);
        let x = a.alloc(o(0), AllocFlags::USER).unwrap();
        a.frame_mut(x).unwrap().flags.insert(PageFlag::Tagged);
        assert_eq!(a.check(), vec![PhysViolation::TaggedTagStorage { pfn: x }]);
        a.frame_mut(x).unwrap().flags.remove(PageFlag::Tagged);
        a.frames.get_mut(x + 1).unwrap().refcount = 1;
        assert!(
            matches!(a.check()[0], PhysViolation::FreeFrameNotPristine { pfn, .. } if pfn == x + 1)
        );
    }
}
