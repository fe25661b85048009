//! Page isolation and contiguous claims: the primitives of Linux's
//! `alloc_contig_range()` (`mm/page_isolation.c`, `mm/page_alloc.c`).
//!
//! Owns: the lifecycle tokens [`IsolatedRange`] and [`ClaimedRange`], and the
//! `BuddyAllocator` methods that move frames through it.
//!
//! ```text
//!   isolate_range(range) ──▶ IsolatedRange ── undo_isolate_range() ──▶ (normal)
//!        │ (the containing pageblocks get the isolate bit: frames freed in
//!        │  them go to the Isolate list and are never allocated)
//!        │ in_use_frames(range): what must be migrated away first
//!        ▼
//!   take_isolated_range(&IsolatedRange) ──▶ ClaimedRange ── return_range() ──▶ free
//!   claim_free_range(range) (fast path, every frame already free) ─┘
//! ```
//! Tokens are move-only and can only be made here, so "take without
//! isolating" or "return what was never claimed" does not compile. Dropping an
//! `IsolatedRange` without undoing it leaves its pageblocks isolated for
//! ever, as forgetting `undo_isolate_page_range()` would in Linux.
//!
//! Granularity: isolation works on whole pageblocks (2 MiB with 4K pages), but
//! a claim takes only the frames asked for (a tag block may be one 4 KiB
//! page); the other free frames of the pageblocks go back to their list when
//! the isolation is undone. Linux does the same with
//! `isolate_freepages_range()` and by freeing the pages outside the range.

use crate::phys::buddy::{BuddyAllocator, FrameStatus, FreeList};
use crate::phys::frame::{FrameMeta, FrameState, MigrateType, PageFlag};
use crate::phys::layout::{Order, RegionKind};
use mte::{Pfn, PfnRange};
use thiserror::Error;

/// Pageblocks isolated for a contiguous claim of `range`.
#[derive(Debug, PartialEq, Eq)]
#[must_use = "an isolated range stays isolated until undo_isolate_range()"]
pub struct IsolatedRange {
    range: PfnRange,
    pageblocks: PfnRange,
}

impl IsolatedRange {
    /// The frames asked for.
    pub fn range(&self) -> PfnRange {
        self.range
    }

    /// The isolated pageblocks, as a frame range.
    pub fn pageblocks(&self) -> PfnRange {
        self.pageblocks
    }
}

/// Frames taken out of the allocator (state `Claimed`) until returned.
#[derive(Debug, PartialEq, Eq)]
#[must_use = "claimed frames leave the allocator until return_range()"]
pub struct ClaimedRange {
    range: PfnRange,
}

impl ClaimedRange {
    pub fn range(&self) -> PfnRange {
        self.range
    }
}

/// An allocated block overlapping a range to be claimed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct InUseFrame {
    pub head: Pfn,
    pub order: Order,
    pub migratetype: MigrateType,
    /// Some frame of the block is pinned: migration will fail.
    pub pinned: bool,
    /// The kernel owns the block ([`PageFlag::Kernel`]): it never moves.
    pub kernel: bool,
}

impl InUseFrame {
    /// Whether migration could move it at all.
    pub fn is_movable(&self) -> bool {
        self.migratetype == MigrateType::Movable && !self.pinned && !self.kernel
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Error)]
pub enum RangeError {
    #[error("the range is empty")]
    Empty,
    #[error("frame {pfn} of the range is not present")]
    NotPresent { pfn: Pfn },
}

/// Why a frame can never be migrated out of a range.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum UnmovableCause {
    /// An unmovable allocation.
    UnmovableAllocation,
    /// A page the kernel owns ([`PageFlag::Kernel`]).
    Kernel,
    /// Already claimed by another contiguous claim.
    Claimed,
    /// Carved-out tag storage.
    CarvedOut,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Error)]
pub enum IsolateError {
    #[error(transparent)]
    Range(#[from] RangeError),
    /// Linux `has_unmovable_pages()`.
    #[error("frame {pfn} can never move: {cause:?}")]
    Unmovable { pfn: Pfn, cause: UnmovableCause },
    #[error("frame {pfn} is pinned ({pins} pins)")]
    Pinned { pfn: Pfn, pins: u32 },
    /// Another isolation holds the pageblock (Linux: `-EBUSY` from
    /// `set_migratetype_isolate()`): worth retrying later.
    #[error("pageblock {pageblock} is already isolated")]
    Busy { pageblock: Pfn },
}

impl IsolateError {
    /// Whether the same isolation may succeed later.
    pub fn is_transient(&self) -> bool {
        matches!(self, Self::Busy { .. })
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Error)]
pub enum ClaimError {
    #[error(transparent)]
    Range(#[from] RangeError),
    /// Linux `test_pages_isolated()` failing.
    #[error("frame {pfn} is not free: {status:?}")]
    NotFree { pfn: Pfn, status: FrameStatus },
    /// Fast path only: another claim has isolated the pageblock.
    #[error("frame {pfn} is in an isolated pageblock")]
    Isolated { pfn: Pfn },
}

impl BuddyAllocator {
    fn check_range(&self, range: PfnRange) -> Result<(), RangeError> {
        if range.count == 0 {
            return Err(RangeError::Empty);
        }
        match self.layout().first_hole_in(range) {
            Some(pfn) => Err(RangeError::NotPresent { pfn }),
            None => Ok(()),
        }
    }

    /// Isolates the pageblocks holding `range` (Linux
    /// `start_isolate_page_range()`): their free frames move to the Isolate
    /// list and frames freed there later stay on it. Fails, changing nothing,
    /// if a frame of `range` is cheaply known never to move (unmovable,
    /// kernel, pinned, claimed, carved out) or a pageblock is isolated already.
    pub fn isolate_range(&mut self, range: PfnRange) -> Result<IsolatedRange, IsolateError> {
        self.check_range(range)?;
        self.find_unmovable(range)?;
        let g = *self.geometry();
        let pageblocks = g.pageblocks_of(range);
        let starts = (pageblocks.start.as_u64()..pageblocks.end().as_u64())
            .step_by(g.pageblock_pages() as usize);
        for pb in starts.clone() {
            if self.pageblock(Pfn::new(pb)).is_some_and(|b| b.isolated) {
                return Err(IsolateError::Busy {
                    pageblock: Pfn::new(pb),
                });
            }
        }
        for pb in starts {
            self.isolate_pageblock(Pfn::new(pb));
        }
        Ok(IsolatedRange { range, pageblocks })
    }

    /// Linux `has_unmovable_pages()` over the frames of `range` only (as
    /// `set_migratetype_isolate()` limits the check to the requested range),
    /// plus pins, which Linux only discovers when migration fails.
    fn find_unmovable(&self, range: PfnRange) -> Result<(), IsolateError> {
        let end = range.end().as_u64();
        let mut pfn = range.start.as_u64();
        while pfn < end {
            let section_end = (self.frames.section_start(Pfn::new(pfn)).as_u64()
                + self.frames.section_pages())
            .min(end);
            if !self.frames.is_materialised(Pfn::new(pfn)) {
                // An untouched section holds only free and carved-out frames.
                let part = PfnRange::new(Pfn::new(pfn), section_end - pfn);
                if let Some(r) = self
                    .layout()
                    .regions_in(part)
                    .iter()
                    .find(|r| r.kind == RegionKind::TagStorageCarvedOut)
                {
                    return Err(IsolateError::Unmovable {
                        pfn: r.range.start.max(part.start),
                        cause: UnmovableCause::CarvedOut,
                    });
                }
                pfn = section_end;
                continue;
            }
            for at in pfn..section_end {
                self.check_movable(Pfn::new(at))?;
            }
            pfn = section_end;
        }
        Ok(())
    }

    fn check_movable(&self, pfn: Pfn) -> Result<(), IsolateError> {
        let meta = self
            .frames
            .get(pfn)
            .expect("BUG: present frame in a used section");
        let unmovable = |cause| Err(IsolateError::Unmovable { pfn, cause });
        let head = match meta.state() {
            FrameState::Free => return Ok(()),
            FrameState::Claimed => return unmovable(UnmovableCause::Claimed),
            FrameState::CarvedOut => return unmovable(UnmovableCause::CarvedOut),
            FrameState::Allocated { .. } => meta,
            FrameState::Tail { head_offset } => self
                .frames
                .get(Pfn::new(pfn.as_u64() - u64::from(head_offset)))
                .expect("BUG: tail without a head"),
        };
        let FrameState::Allocated { migratetype, .. } = head.state() else {
            panic!("BUG: tail {pfn} whose head is not allocated");
        };
        if migratetype == MigrateType::Unmovable {
            return unmovable(UnmovableCause::UnmovableAllocation);
        }
        if head.flags.contains(PageFlag::Kernel) || meta.flags.contains(PageFlag::Kernel) {
            return unmovable(UnmovableCause::Kernel);
        }
        let pins = head.pins.max(meta.pins);
        if pins > 0 {
            return Err(IsolateError::Pinned { pfn, pins });
        }
        Ok(())
    }

    /// Linux `set_migratetype_isolate()` -> `move_freepages_block_isolate()`:
    /// a free block larger than the pageblock is split first (its other
    /// pageblocks re-merge on their own), then the pageblock's free blocks
    /// move to the Isolate list.
    fn isolate_pageblock(&mut self, pb_start: Pfn) {
        let g = *self.geometry();
        let large = self
            .find_free_block(pb_start)
            .filter(|&(_, order, _)| order > g.pageblock_order());
        let i = self
            .pageblock_index(pb_start)
            .expect("BUG: pageblock outside the span");
        let old = self.pageblocks[i].free_list();
        self.pageblocks[i].isolated = true;
        if let Some((head, order, list)) = large {
            self.del_free(head, order, list);
            let mut piece = head;
            while piece < head + order.pages() {
                self.free_one(piece, g.pageblock_order());
                piece += g.pageblock_pages();
            }
        }
        self.move_free_blocks(pb_start, old, FreeList::Isolate);
    }

    /// Restores the pageblocks of `isolated` (Linux `undo_isolate_page_range()`):
    /// their free frames go back to their migrate type's list, merging again.
    pub fn undo_isolate_range(&mut self, isolated: IsolatedRange) {
        let g = *self.geometry();
        let IsolatedRange { pageblocks, .. } = isolated;
        let mut pb = pageblocks.start;
        while pb < pageblocks.end() {
            let i = self
                .pageblock_index(pb)
                .expect("BUG: pageblock outside the span");
            assert!(
                self.pageblocks[i].isolated,
                "BUG: undoing a pageblock not isolated"
            );
            let mut blocks = Vec::new();
            for o in 0..=g.pageblock_order().get() {
                let o = Order::new(o);
                blocks.extend(
                    self.list(o, FreeList::Isolate)
                        .heads_in(pb, pb + g.pageblock_pages())
                        .map(|h| (h, o)),
                );
            }
            for &(head, order) in &blocks {
                self.del_free(head, order, FreeList::Isolate);
            }
            self.pageblocks[i].isolated = false;
            // Linux unset_migratetype_isolate(): move_freepages_block() (by
            // ascending frame, to the tail) or, for a block that merges,
            // __putback_isolated_page() with FPI_TO_TAIL.
            blocks.sort_unstable();
            for (head, order) in blocks {
                self.free_one_to(head, order, Some(crate::phys::runs::End::Tail));
            }
            pb += g.pageblock_pages();
        }
    }

    /// The allocated blocks overlapping `range`, lowest first, each once: what
    /// must be migrated away before the range can be claimed.
    pub fn in_use_frames(&self, range: PfnRange) -> Vec<InUseFrame> {
        let mut found: Vec<InUseFrame> = Vec::new();
        let end = range.end().as_u64();
        let mut pfn = range.start.as_u64();
        while pfn < end {
            let at = Pfn::new(pfn);
            if !self.frames.is_materialised(at) {
                pfn = self.frames.section_start(at).as_u64() + self.frames.section_pages();
                continue;
            }
            match self.frame_status(at) {
                Some(FrameStatus::Allocated {
                    head,
                    order,
                    migratetype,
                }) => {
                    let block = self
                        .frames
                        .block(head, order.pages())
                        .expect("BUG: allocated block without metadata");
                    found.push(InUseFrame {
                        head,
                        order,
                        migratetype,
                        pinned: block.iter().any(FrameMeta::is_pinned),
                        kernel: block.iter().any(|m| m.flags.contains(PageFlag::Kernel)),
                    });
                    pfn = head.as_u64() + order.pages();
                }
                _ => pfn += 1,
            }
        }
        found
    }

    /// Takes the frames of `isolated.range()` out of the allocator once every
    /// one is free (Linux `test_pages_isolated()` + `isolate_freepages_range()`).
    /// The rest of the isolated pageblocks stays isolated until
    /// [`Self::undo_isolate_range`].
    pub fn take_isolated_range(
        &mut self,
        isolated: &IsolatedRange,
    ) -> Result<ClaimedRange, ClaimError> {
        for pb in isolated
            .pageblocks
            .iter()
            .step_by(self.geometry().pageblock_pages() as usize)
        {
            assert!(
                self.pageblock(pb).is_some_and(|b| b.isolated),
                "BUG: taking from pageblock {pb}, which is not isolated"
            );
        }
        self.carve(isolated.range, true)
    }

    /// The fast path: claims `range` directly when every frame is already free
    /// and not isolated, without isolating or migrating anything (the RFC's
    /// shortcut against a 10-20% start-up regression).
    pub fn claim_free_range(&mut self, range: PfnRange) -> Result<ClaimedRange, ClaimError> {
        self.check_range(range)?;
        self.carve(range, false)
    }

    /// Takes the free frames of `range` out of their free blocks, putting the
    /// parts of those blocks outside `range` back. All or nothing.
    fn carve(&mut self, range: PfnRange, isolated: bool) -> Result<ClaimedRange, ClaimError> {
        let end = range.end();
        let mut blocks = Vec::new();
        let mut pfn = range.start;
        while pfn < end {
            let Some((head, order, list)) = self.find_free_block(pfn) else {
                let status = self
                    .frame_status(pfn)
                    .expect("BUG: present frame without status");
                return Err(ClaimError::NotFree { pfn, status });
            };
            match (isolated, list == FreeList::Isolate) {
                (true, false) => {
                    panic!("BUG: free block {head} of an isolated pageblock on {list:?}")
                }
                (false, true) => return Err(ClaimError::Isolated { pfn }),
                _ => {}
            }
            blocks.push((head, order, list));
            pfn = head + order.pages();
        }
        for (head, order, list) in blocks {
            self.del_free(head, order, list);
            let from = head.max(range.start);
            let to = (head + order.pages()).min(end);
            for meta in self.frames.materialise_block(from, to - from) {
                meta.set_state(FrameState::Claimed);
            }
            self.free_pieces(head, from);
            self.free_pieces(to, head + order.pages());
        }
        self.counters.claimed += range.count;
        Ok(ClaimedRange { range })
    }

    /// Gives claimed frames back to the free lists of their pageblocks
    /// (Linux `free_contig_range()`), merging; on CPU 0: see
    /// [`Self::return_range_on`].
    pub fn return_range(&mut self, claimed: ClaimedRange) {
        self.return_range_on(0, claimed);
    }

    /// Gives claimed frames back (Linux `free_contig_range()`): with
    /// `pcp=on` frame by frame through `cpu`'s per-CPU list, as
    /// `free_contig_range()` frees each page with `__free_page()` (so a
    /// released tag block's page is the next untagged allocation's on that
    /// CPU); otherwise straight onto the free lists of their pageblocks,
    /// merging.
    pub fn return_range_on(&mut self, cpu: usize, claimed: ClaimedRange) {
        let ClaimedRange { range } = claimed;
        let end = range.end().as_u64();
        let mut pfn = range.start.as_u64();
        while pfn < end {
            let section_end = (self.frames.section_start(Pfn::new(pfn)).as_u64()
                + self.frames.section_pages())
            .min(end);
            for meta in self.frames.block_mut(Pfn::new(pfn), section_end - pfn) {
                assert_eq!(
                    meta.state(),
                    FrameState::Claimed,
                    "BUG: returning a frame not claimed"
                );
                meta.reset();
            }
            pfn = section_end;
        }
        self.counters.claimed -= range.count;
        if self.pcp.is_some() {
            for pfn in range.iter() {
                if !self.pcp_free(cpu, pfn, Order::new(0)) {
                    self.free_one(pfn, Order::new(0));
                }
            }
            return;
        }
        self.free_pieces(range.start, range.end());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::phys::buddy::AllocFlags;
    use crate::phys::buddy::tests::{assert_clean, o, p, range, small};
    use crate::phys::layout::CmaUse;

    #[test]
    fn isolation_moves_free_frames_and_undo_restores_them() {
        let mut a = small(CmaUse::Never);
        // Frame 33 lies in CMA pageblock [32, 36), part of the order-3 block
        // [32, 40): isolating splits it, [36, 40) stays on Cma.
        let iso = a.isolate_range(range(33, 1)).unwrap();
        assert_eq!(iso.pageblocks(), range(32, 4));
        assert_clean(&a);
        assert_eq!(a.free_pages_on(FreeList::Isolate), 4);
        assert_eq!(a.stats().cma_free_pages, 12);
        assert_eq!(a.stats().free_pages, 44, "isolated frames are not usable");
        assert_eq!(a.free_blocks(o(2), FreeList::Cma), 1);
        // A second isolation of the same pageblock is busy.
        assert_eq!(
            a.isolate_range(range(35, 1)),
            Err(IsolateError::Busy { pageblock: p(32) })
        );
        a.undo_isolate_range(iso);
        assert_clean(&a);
        assert_eq!(a.free_blocks(o(3), FreeList::Cma), 2, "merged back");
        assert_eq!(a.stats().cma_free_pages, 16);
    }

    #[test]
    fn frames_freed_in_an_isolated_pageblock_stay_isolated() {
        let mut a = small(CmaUse::Prefer);
        let x = a.alloc(o(0), AllocFlags::USER).unwrap();
        assert_eq!(x, p(32));
        let iso = a.isolate_range(range(32, 2)).unwrap();
        assert_eq!(a.in_use_frames(range(32, 2)).len(), 1);
        a.free(x, o(0)).unwrap();
        assert_eq!(a.free_pages_on(FreeList::Isolate), 4);
        // Nothing is allocated from an isolated pageblock.
        assert_eq!(a.alloc(o(0), AllocFlags::USER), Ok(p(36)));
        let claimed = a.take_isolated_range(&iso).unwrap();
        assert_eq!(claimed.range(), range(32, 2));
        a.undo_isolate_range(iso);
        assert_clean(&a);
        assert_eq!(a.stats().claimed_pages, 2);
        assert_eq!(a.frame_status(p(33)), Some(FrameStatus::Claimed));
        // The other two frames of the pageblock went back to Cma.
        assert_eq!(
            a.frame_status(p(34)),
            Some(FrameStatus::Free {
                head: p(34),
                order: o(1),
                list: FreeList::Cma
            })
        );
        a.return_range(claimed);
        a.free(p(36), o(0)).unwrap();
        assert_clean(&a);
        assert_eq!(a.free_blocks(o(3), FreeList::Cma), 2);
    }

    #[test]
    fn a_large_block_freed_across_an_isolation_edge_is_split_per_pageblock() {
        // Linux free_one_page() -> split_large_buddy(): an order-3 block
        // covering pageblocks [8, 12) (isolated) and [12, 16) (not) must not
        // land whole on either list. (Found by the model test.)
        let mut a = small(CmaUse::Never);
        let x = a.alloc(o(3), AllocFlags::USER).unwrap();
        let y = a.alloc(o(3), AllocFlags::USER).unwrap();
        assert_eq!((x, y), (p(0), p(8)));
        let iso = a.isolate_range(range(10, 1)).unwrap();
        a.free(y, o(3)).unwrap();
        assert_clean(&a);
        assert_eq!(a.free_pages_on(FreeList::Isolate), 4);
        assert_eq!(
            a.frame_status(p(13)),
            Some(FrameStatus::Free {
                head: p(12),
                order: o(2),
                list: FreeList::Movable
            })
        );
        // Both pageblocks isolated: still one block per pageblock, as an
        // isolated block never spans two.
        let iso2 = a.isolate_range(range(12, 1)).unwrap();
        assert_clean(&a);
        assert_eq!(a.free_blocks(o(2), FreeList::Isolate), 2);
        a.undo_isolate_range(iso);
        a.undo_isolate_range(iso2);
        assert_eq!(a.free_blocks(o(3), FreeList::Movable), 3, "merged again");
        a.free(x, o(3)).unwrap();
        assert_clean(&a);
    }

    #[test]
    fn isolation_refuses_what_cannot_move() {
        let mut a = small(CmaUse::Never);
        let k = a.alloc(o(0), AllocFlags::KERNEL).unwrap();
        assert_eq!(
            a.isolate_range(range(k.as_u64(), 1)),
            Err(IsolateError::Unmovable {
                pfn: k,
                cause: UnmovableCause::UnmovableAllocation
            })
        );
        let u = a.alloc(o(1), AllocFlags::USER).unwrap();
        a.frame_mut(u).unwrap().pins = 1;
        assert_eq!(
            a.isolate_range(range(u.as_u64() + 1, 1)),
            Err(IsolateError::Pinned {
                pfn: u + 1,
                pins: 1
            })
        );
        a.frame_mut(u).unwrap().pins = 0;
        a.frame_mut(u).unwrap().flags.insert(PageFlag::Kernel);
        assert!(matches!(
            a.isolate_range(range(u.as_u64(), 2)),
            Err(IsolateError::Unmovable {
                cause: UnmovableCause::Kernel,
                ..
            })
        ));
        assert_eq!(
            a.isolate_range(range(60, 1)),
            Err(IsolateError::Range(RangeError::NotPresent { pfn: p(60) }))
        );
        assert_eq!(
            a.isolate_range(range(0, 0)),
            Err(IsolateError::Range(RangeError::Empty))
        );
        assert_clean(&a);
        // Nothing was isolated by the failures.
        assert_eq!(a.free_pages_on(FreeList::Isolate), 0);
    }

    #[test]
    fn fast_path_claims_free_frames_directly() {
        let mut a = small(CmaUse::Never);
        let c = a.claim_free_range(range(37, 2)).unwrap();
        assert_clean(&a);
        // [32, 40) split around [37, 39): 32 (o2), 36 (o0), 39 (o0).
        assert_eq!(
            a.frame_status(p(36)),
            Some(FrameStatus::Free {
                head: p(36),
                order: o(0),
                list: FreeList::Cma
            })
        );
        assert_eq!(
            a.frame_status(p(39)),
            Some(FrameStatus::Free {
                head: p(39),
                order: o(0),
                list: FreeList::Cma
            })
        );
        assert_eq!(
            a.frame_status(p(32)),
            Some(FrameStatus::Free {
                head: p(32),
                order: o(2),
                list: FreeList::Cma
            })
        );
        assert_eq!(a.stats().cma_free_pages, 14);
        // Claimed frames are not free: a second claim fails.
        assert!(
            matches!(a.claim_free_range(range(38, 2)), Err(ClaimError::NotFree { pfn, status: FrameStatus::Claimed }) if pfn == p(38))
        );
        // Isolation refuses a claimed frame.
        assert!(matches!(
            a.isolate_range(range(38, 1)),
            Err(IsolateError::Unmovable {
                cause: UnmovableCause::Claimed,
                ..
            })
        ));
        a.return_range(c);
        assert_clean(&a);
        assert_eq!(a.free_blocks(o(3), FreeList::Cma), 2);
    }

    #[test]
    fn fast_path_refuses_isolated_or_used_frames() {
        let mut a = small(CmaUse::Prefer);
        let x = a.alloc(o(0), AllocFlags::USER).unwrap();
        assert!(
            matches!(a.claim_free_range(range(32, 4)), Err(ClaimError::NotFree { pfn, .. }) if pfn == x)
        );
        let iso = a.isolate_range(range(40, 1)).unwrap();
        assert_eq!(
            a.claim_free_range(range(41, 1)),
            Err(ClaimError::Isolated { pfn: p(41) })
        );
        a.undo_isolate_range(iso);
        assert_clean(&a);
    }

    #[test]
    fn take_fails_while_frames_are_in_use() {
        let mut a = small(CmaUse::Prefer);
        let x = a.alloc(o(1), AllocFlags::USER).unwrap();
        let iso = a.isolate_range(range(32, 4)).unwrap();
        assert_eq!(
            a.in_use_frames(range(32, 4)),
            vec![InUseFrame {
                head: x,
                order: o(1),
                migratetype: MigrateType::Movable,
                pinned: false,
                kernel: false
            }]
        );
        assert!(
            matches!(a.take_isolated_range(&iso), Err(ClaimError::NotFree { pfn, .. }) if pfn == x)
        );
        a.undo_isolate_range(iso);
        assert_clean(&a);
    }
}
