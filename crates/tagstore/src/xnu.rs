//! Design `xnu`: Apple XNU's shipping tag storage manager, after
//! apple-oss-distributions/xnu `osfmk/vm/vm_mteinfo.c` (with
//! `vm_mteinfo_internal.h` and the tagged grab of `vm_resident.c`).
//!
//! One *cell* per tag storage block (XNU: per tag storage page; a block of
//! one page is exactly XNU's cell, a larger block is one cell of
//! `32 * block_pages` covered frames). A cell is ACTIVE (its tag storage
//! taken out of the page allocator and held for tags, [`BlockState::Held`])
//! or not; a cell that is not ACTIVE is INACTIVE while its tag storage is
//! free and CLAIMED while untagged data lives there (the model reads which
//! from the page allocator when it decides, instead of keeping XNU's
//! per-state lists).
//!
//! Rules, with the source's names:
//! - **Boot** (`mteinfo_tag_storage_release_startup`): cells whose covered
//!   frames and tag storage are all free become ACTIVE, in address order,
//!   while fewer than `cells / 8` are; the zero page's cell becomes ACTIVE
//!   with its one tagged frame. Every other cell is INACTIVE.
//! - **Tagged allocation** ([`TaggedPlacement::HeldStorage`]): only from the
//!   covered frames of ACTIVE cells, most tagged cell first (XNU takes the
//!   highest ACTIVE free queue, a contiguous run within one cell). Never a
//!   page awaiting tag storage in the normal course.
//! - **No taggable frame** ([`TagStorage::refill`], in the allocating
//!   task): the inline activation (`mteinfo_tag_storage_try_activate`):
//!   INACTIVE cells with more than half their covered frames free (bucket
//!   17-24 and up: 17 of 32), fullest first, until [`REFILL_PAGES`] free
//!   frames are gained; else the allocation wakes the refill thread
//!   ([`TagStorage::refill_thread`], a kernel task of its own) and waits
//!   for its pass (`mteinfo_fill_continue`): one step of
//!   `mteinfo_tag_storage_active_refill`:
//!   with `i` and `c` the top INACTIVE and CLAIMED buckets, activate
//!   INACTIVE cells from bucket `min(i, 3)` up if `i != 0 && i >= min(3,
//!   c)`, else reclaim the best CLAIMED cell (copy its tag page's data out
//!   with a migrating claim, `mteinfo_reclaim_tag_storage_page`); a reclaim
//!   that fails on a pinned page marks the cell PINNED, tried last. Then the
//!   drain (`mteinfo_tag_storage_drain`): ACTIVE cells with no tagged and no
//!   free covered frame are deactivated while more than [`Self::reserved`]
//!   ACTIVE cells have no tagged frame and at least [`Self::batch`] such
//!   cells exist.
//! - **Free**: the cell's tagged count drops; the cell stays ACTIVE (XNU:
//!   release is lazy, only the drain deactivates).
//! - **Fallback**: a reservation of frames in a cell that is not ACTIVE
//!   (only when no ACTIVE frame was free even after the refill) activates
//!   that cell with a migrating claim, as the refill thread's reclaim would
//!   before waking the waiter; if even that fails, the kernel's common path
//!   (an entry awaiting tag storage) takes over, where XNU would keep the
//!   allocation waiting.
//!
//! Counters: `tag_storage.reserved` = ACTIVE cells, `reservations` =
//! activations (boot included), `releases` = deactivations,
//! `reserve_failures` = failed activations and reclaims; the kernel counts
//! `tag_storage.migrations` (reclaims that copied data).
//!
//! Invariant 3, XNU's form: an ACTIVE cell may cover no tagged frame, and
//! tagged frames lie only in ACTIVE cells (`check_coverage`).
//!
//! Modelling decisions (`docs/designs.md`): the refill thread is a kernel
//! task of the scheduler (the kernel's `mem::refill`), woken by a waiting
//! tagged allocation (with its order) or, for the drain alone, by one that
//! needed the inline activation; per-CPU magazines and claimed queues are
//! not modelled; XNU's absolute tunables (100 reserved ACTIVE cells,
//! batches of 64) are scaled to the machine.

use crate::design::{DesignEntry, OnReserveFailure, ReserveAt, Rules, Storage, TaggedPlacement};
use crate::held::{HeldBlocks, delegate_to_held_blocks};
use crate::{BlockSource, ClaimCause, LocalBoxFuture, ReserveError, TagStorage, TagStoreConfig};
use core::cmp::Reverse;
use mte::{Geometry, Order, Pfn, PfnRange, TagBlock};
use std::collections::{BTreeSet, BinaryHeap};

/// `xnu` in the design registry.
pub(crate) const DESIGN: DesignEntry = DesignEntry::new(
    "xnu",
    "Apple XNU: a cell per tag page, tagged pages only from ACTIVE cells, lazy deactivation",
    Rules {
        storage: Storage::Lent,
        // Activation and reclaim claim tag storage (a reclaim migrates).
        reserve_in_atomic: false,
        on_reserve_failure: OnReserveFailure::MigrateFaultingPage,
        tagged_placement: TaggedPlacement::HeldStorage,
        reserve_at: ReserveAt::AfterAllocation,
    },
    |geometry, config| Box::new(XnuTagStorage::new(geometry, config)),
);

/// Free frames an activation tries to gain (XNU: the refill thread
/// activates cells until at least `VMP_FREE_BATCH_SIZE` = 64 free covered
/// pages are made taggable).
pub const REFILL_PAGES: u64 = 64;

/// Design `xnu`.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct XnuTagStorage {
    blocks: HeldBlocks,
    /// Cells whose reclaim failed on a pinned page (XNU: PINNED, back to
    /// CLAIMED on the last unwire; here tried after every other CLAIMED
    /// cell).
    pinned: BTreeSet<TagBlock>,
}

/// A cell that is not ACTIVE, as the refill sees it.
#[derive(Clone, Copy, Debug)]
struct Candidate {
    block: TagBlock,
    /// Free covered frames.
    free: u64,
    /// The tag storage holds data (CLAIMED) rather than being free
    /// (INACTIVE).
    claimed: bool,
}

impl XnuTagStorage {
    pub fn new(geometry: &Geometry, config: TagStoreConfig) -> Self {
        Self {
            blocks: HeldBlocks::new(geometry, config),
            pinned: BTreeSet::new(),
        }
    }

    fn cells(&self) -> u64 {
        self.blocks.geometry.tag_blocks()
    }

    /// ACTIVE cells activated at boot at most (`(count - discarded) / 8`).
    fn boot_active(&self) -> u64 {
        self.cells() / 8
    }

    /// ACTIVE cells with no tagged frame kept before the drain starts (XNU:
    /// `vm_page_tag_storage_reserved` = 100 on machines with hundreds of
    /// thousands of cells; here the boot pool, `cells / 8`).
    pub fn reserved(&self) -> u64 {
        self.boot_active()
    }

    /// Cells deactivated at once and the fewest drainable cells worth a
    /// drain (XNU: `VMP_FREE_BATCH_SIZE` = 64; here `cells / 64`, at least
    /// 1).
    pub fn batch(&self) -> u64 {
        (self.cells() / 64).max(1)
    }

    /// Free covered frames a cell needs for the inline activation: more
    /// than half (XNU draws from `MTE_BUCKET_17_24` up: 17 of 32).
    fn inline_min_free(&self) -> u64 {
        self.blocks.capacity / 2 + 1
    }

    /// XNU's bucket of a cell by free covered frames, `(free + 7) / 8` on
    /// a 32-frame cell: 0 | 1-8 | 9-16 | 17-24 | 25-32.
    fn bucket(&self, free: u64) -> u64 {
        (free * 32 / self.blocks.capacity).div_ceil(8)
    }

    /// The cells that are not ACTIVE, with their free covered frames.
    fn candidates(&self, source: &dyn BlockSource) -> Vec<Candidate> {
        self.blocks
            .iter()
            .filter(|(_, tagged)| tagged.is_none())
            .map(|(block, _)| Candidate {
                block,
                free: source.free_frames(self.blocks.covers(block)),
                claimed: !self.blocks.storage_free(block, source),
            })
            .collect()
    }

    /// Activates `cells` in order until `target` free frames are gained.
    async fn activate_cells(
        &mut self,
        cells: &[Candidate],
        target: u64,
        source: &mut dyn BlockSource,
    ) -> bool {
        let mut gained = 0;
        for c in cells {
            if gained >= target {
                break;
            }
            if self.blocks.hold(c.block, source).await.is_ok() {
                gained += c.free;
                self.pinned.remove(&c.block);
            }
        }
        gained > 0
    }

    /// The refill thread's reclaim: the best CLAIMED cell's tag storage is
    /// emptied by migration; on a pinned page the cell is PINNED and the
    /// next one is tried.
    async fn reclaim(&mut self, claimed: &[Candidate], source: &mut dyn BlockSource) -> bool {
        let mut order: Vec<&Candidate> = claimed.iter().collect();
        // Best bucket first, pinned cells last; address order breaks ties.
        order.sort_by_key(|c| {
            (
                self.pinned.contains(&c.block),
                core::cmp::Reverse(self.bucket(c.free)),
                c.block,
            )
        });
        for c in order {
            match self.blocks.hold(c.block, source).await {
                Ok(()) => {
                    self.pinned.remove(&c.block);
                    return true;
                }
                Err(ReserveError::Claim { source: e, .. }) if e.cause() == ClaimCause::Pinned => {
                    self.pinned.insert(c.block);
                }
                Err(_) => {}
            }
        }
        false
    }

    /// The drain: ACTIVE cells with no tagged and no free covered frame go
    /// back to the page allocator, in batches, while more than
    /// [`Self::reserved`] ACTIVE cells have no tagged frame.
    fn drain(&mut self, source: &mut dyn BlockSource) {
        let zero = self.blocks.zero_block();
        let untagged_active = self
            .blocks
            .iter()
            .filter(|(_, tagged)| *tagged == Some(0))
            .count() as u64;
        if untagged_active <= self.reserved() {
            return;
        }
        let drainable: Vec<TagBlock> = self
            .blocks
            .iter()
            .filter(|&(block, tagged)| {
                tagged == Some(0)
                    && Some(block) != zero
                    && source.free_frames(self.blocks.covers(block)) == 0
            })
            .map(|(block, _)| block)
            .collect();
        if (drainable.len() as u64) < self.batch() {
            return;
        }
        let excess = untagged_active - self.reserved();
        for &block in drainable.iter().take(excess as usize) {
            self.blocks.give_back(block, source);
        }
    }

    /// Cells that are not ACTIVE, fullest first (address order breaks
    /// ties: XNU takes the bucket's head), split into CLAIMED and INACTIVE.
    fn claimed_and_inactive(&self, source: &dyn BlockSource) -> (Vec<Candidate>, Vec<Candidate>) {
        let mut candidates = self.candidates(source);
        candidates.sort_by_key(|c| (core::cmp::Reverse(c.free), c.block));
        candidates.into_iter().partition(|c| c.claimed)
    }

    /// The inline activation of the allocating thread
    /// (`mteinfo_tag_storage_try_activate`): INACTIVE cells more than half
    /// free, fullest first, until [`REFILL_PAGES`] (or `order`'s) free
    /// frames are gained.
    async fn refill_inline(&mut self, order: Order, source: &mut dyn BlockSource) -> bool {
        let target = REFILL_PAGES.max(order.pages());
        let (_, inactive) = self.claimed_and_inactive(source);
        let min_free = self.inline_min_free();
        let inline: Vec<Candidate> = inactive
            .into_iter()
            .filter(|c| c.free >= min_free)
            .collect();
        self.activate_cells(&inline, target, source).await
    }

    /// One pass of the refill thread (`mteinfo_fill_continue`): when a
    /// tagged allocation waits (`wanted`), one step of
    /// `mteinfo_tag_storage_active_refill` (activate INACTIVE cells from
    /// bucket `min(i, 3)` up if `i != 0 && i >= min(3, c)`, else reclaim
    /// the best CLAIMED cell); then the drain, always. The waiter wakes the
    /// thread again while it is not served and the pass made progress
    /// (XNU's thread loops while tagged waiters remain).
    async fn thread_pass(&mut self, wanted: Option<Order>, source: &mut dyn BlockSource) -> bool {
        let mut changed = false;
        if let Some(order) = wanted {
            let target = REFILL_PAGES.max(order.pages());
            let (claimed, inactive) = self.claimed_and_inactive(source);
            let i = inactive.first().map_or(0, |c| self.bucket(c.free));
            let c = claimed.first().map_or(0, |c| self.bucket(c.free));
            if i != 0 && i >= c.min(3) {
                let from = i.min(3);
                let cells: Vec<Candidate> = inactive
                    .iter()
                    .copied()
                    .filter(|x| self.bucket(x.free) >= from)
                    .collect();
                changed = self.activate_cells(&cells, target, source).await;
            } else if c > 0 {
                let cells: Vec<Candidate> =
                    claimed.iter().copied().filter(|x| x.free > 0).collect();
                changed = self.reclaim(&cells, source).await;
            }
            // Else XNU's thread parks: no cell to activate or reclaim.
        }
        self.drain(source);
        changed
    }
}

impl TagStorage for XnuTagStorage {
    delegate_to_held_blocks!(blocks);

    fn activate<'a>(
        &'a mut self,
        zero_page: Pfn,
        source: &'a mut dyn BlockSource,
    ) -> LocalBoxFuture<'a, Result<(), ReserveError>> {
        Box::pin(async move {
            self.blocks.hold_zero_page(zero_page, source).await?;
            let limit = self.boot_active();
            let zero = self.blocks.zero_block();
            let cells: Vec<TagBlock> = self.blocks.geometry.blocks().collect();
            for block in cells {
                // The zero page's cell is not part of the boot pool.
                if self.blocks.held() > limit {
                    break;
                }
                let covers = self.blocks.covers(block);
                if Some(block) != zero
                    && source.all_free(covers)
                    && self.blocks.storage_free(block, source)
                {
                    self.blocks.hold(block, source).await?;
                }
            }
            Ok(())
        })
    }

    fn bookkeeping_entries(&self) -> u64 {
        // XNU: a 12-byte cell per tag page, whatever its state.
        self.cells() + self.pinned.len() as u64
    }

    fn tagged_placement(&self, order: Order, _source: &dyn BlockSource) -> Vec<PfnRange> {
        // The highest ACTIVE queue first: most tagged frames (XNU's queue
        // index grows with `tagged + free / 5`; without the free counts the
        // model orders by tagged frames, which packs tagged pages as XNU's
        // does), address order breaking ties.
        let mut active: Vec<(u64, TagBlock)> = self
            .blocks
            .iter()
            .filter_map(|(b, t)| t.map(|t| (t, b)))
            .collect();
        active.sort_by_key(|&(t, b)| (core::cmp::Reverse(t), b));
        let blocks: Vec<TagBlock> = active.into_iter().map(|(_, b)| b).collect();
        self.blocks.runs(order, &blocks)
    }

    /// The runs of [`Self::tagged_placement`] in its order, made one at a
    /// time: a heap of the active blocks gives the next best only once the
    /// runs before it did not fit (the first usually does), instead of
    /// sorting every active block at each tagged allocation. Keys are
    /// unique (a block once), so the order is the sort's. Orders above a
    /// block's coverage (runs of whole aligned windows) take the sorted
    /// path.
    fn place_tagged(
        &self,
        order: Order,
        source: &dyn BlockSource,
        fits: &mut dyn FnMut(PfnRange) -> Option<Pfn>,
    ) -> Option<Pfn> {
        if order.pages() > self.blocks.capacity {
            return self
                .tagged_placement(order, source)
                .into_iter()
                .find_map(fits);
        }
        let mut active: BinaryHeap<Reverse<(Reverse<u64>, TagBlock)>> = self
            .blocks
            .iter()
            .filter_map(|(b, t)| t.map(|t| Reverse((Reverse(t), b))))
            .collect();
        while let Some(Reverse((_, block))) = active.pop() {
            if let Some(pfn) = fits(self.blocks.covers(block)) {
                return Some(pfn);
            }
        }
        None
    }

    fn refill<'a>(
        &'a mut self,
        order: Order,
        source: &'a mut dyn BlockSource,
    ) -> LocalBoxFuture<'a, bool> {
        Box::pin(self.refill_inline(order, source))
    }

    fn has_refill_thread(&self) -> bool {
        true
    }

    fn refill_thread<'a>(
        &'a mut self,
        wanted: Option<Order>,
        source: &'a mut dyn BlockSource,
    ) -> LocalBoxFuture<'a, bool> {
        Box::pin(self.thread_pass(wanted, source))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::check::TagStoreViolation;
    use crate::testutil::{BASE, assert_places_as_tagged_placement, block_on, booted, fresh};
    use crate::{BlockState, Design};
    use std::collections::BTreeMap;

    #[test]
    fn placing_lazily_tries_the_runs_of_tagged_placement_in_their_order() {
        let (mut m, mut src) = booted(XnuTagStorage::new);
        // Blocks of different tagged counts, ties broken by address.
        for frame in [32 * 9, 32 * 12, 32 * 12 + 1, 32 * 3, 32 * 70] {
            // A frame of an inactive cell may be refused: the others
            // still give blocks of different counts.
            let _ = block_on(m.reserve(Pfn::new(BASE + frame), Order::new(0), &mut src));
        }
        for order in [0, 3, 5, 6] {
            assert_places_as_tagged_placement(&m, Order::new(order), &src, 6);
        }
    }

    #[test]
    fn boot_activates_an_eighth_of_the_free_cells_and_the_zero_pages() {
        let (mut m, mut src) = fresh(XnuTagStorage::new);
        // 64 MiB, one-page blocks: 512 cells; the zero page in cell 0,
        // whose other frames are in use.
        let zero = Pfn::new(BASE);
        src.used.insert(zero);
        block_on(m.activate(zero, &mut src)).unwrap();
        assert_eq!(m.counters().reserved, 1 + 64);
        assert_eq!(
            m.block_state(TagBlock::new(0)),
            BlockState::Held { refs: 1 }
        );
        assert_eq!(
            m.block_state(TagBlock::new(64)),
            BlockState::Held { refs: 0 }
        );
        assert_eq!(m.block_state(TagBlock::new(65)), BlockState::Lent);
        assert!(m.check().is_empty(), "{:?}", m.check());
        assert_eq!(Design::by_name("xnu").map(|d| d.name()), Some("xnu"));
    }

    #[test]
    fn frees_keep_cells_active_and_placement_prefers_tagged_cells() {
        let (mut m, mut src) = booted(XnuTagStorage::new);
        let frame = Pfn::new(BASE + 32 * 5);
        block_on(m.reserve(frame, Order::new(0), &mut src)).unwrap();
        let runs = m.tagged_placement(Order::new(0), &src);
        // Cell 0 (zero page) and cell 5 hold one tagged frame each; cell 0
        // comes first by address.
        assert_eq!(runs[0].start, Pfn::new(BASE));
        assert_eq!(runs[1].start, Pfn::new(BASE + 32 * 5));
        m.release(frame, Order::new(0), &mut src);
        assert_eq!(
            m.block_state(TagBlock::new(5)),
            BlockState::Held { refs: 0 }
        );
        assert_eq!(m.counters().releases, 0, "release is lazy");
        // A THP (order 9) needs 16 consecutive ACTIVE cells, aligned.
        let thp = m.tagged_placement(Order::new(9), &src);
        assert!(
            thp.iter()
                .all(|r| r.count == 512 && r.start.is_aligned(Order::new(9)))
        );
        assert!(!thp.is_empty());
    }

    #[test]
    fn refill_activates_inline_then_reclaims_then_drains() {
        let (mut m, mut src) = booted(XnuTagStorage::new);
        let booted = m.counters().reserved;
        // Inline: INACTIVE cells with >= 17 free covered frames, until 64
        // frames are gained: two cells.
        assert!(block_on(m.refill(Order::new(0), &mut src)));
        assert_eq!(m.counters().reserved, booted + 2);
        // Make every other cell unfit for the inline path: 16 free frames
        // each, tag storage in use (CLAIMED) except cell 200 (INACTIVE).
        let g = m.blocks.geometry.clone();
        for block in g.blocks().filter(|b| !m.blocks.is_held(*b)) {
            let covers = g.block_covers(block);
            for i in 0..16 {
                src.used.insert(covers.start + i);
            }
            if block != TagBlock::new(200) {
                src.used.insert(g.block_pfns(block).start);
            }
        }
        // The inline activation finds no cell more than half free.
        assert!(!block_on(m.refill(Order::new(0), &mut src)));
        // The thread: top INACTIVE bucket 2 (9-16 free) >= min(3, 2):
        // activate cell 200.
        assert!(block_on(m.refill_thread(Some(Order::new(0)), &mut src)));
        assert!(m.blocks.is_held(TagBlock::new(200)));
        // No INACTIVE cell left: reclaim a CLAIMED one; a pinned one fails
        // and is marked, the next succeeds.
        let first = g.blocks().find(|b| !m.blocks.is_held(*b)).unwrap();
        src.permanent.insert(first);
        assert!(block_on(m.refill_thread(Some(Order::new(0)), &mut src)));
        assert!(m.pinned.contains(&first));
        assert_eq!(m.counters().reserve_failures, 1);
        // Drain: fill every ACTIVE cell without tagged frames; more than
        // `reserved` of them, so the excess goes back.
        for block in g.blocks().filter(|b| m.blocks.tagged(*b) == Some(0)) {
            for pfn in g.block_covers(block).iter() {
                src.used.insert(pfn);
            }
        }
        let before = m.counters().reserved;
        // Woken for housekeeping only: no activation, the drain.
        assert!(!block_on(m.refill_thread(None, &mut src)));
        assert!(m.counters().releases > 0);
        assert!(m.counters().reserved < before);
        assert!(m.check().is_empty(), "{:?}", m.check());
    }

    #[test]
    fn tagged_frames_outside_active_cells_break_invariant_3() {
        let (m, _) = booted(XnuTagStorage::new);
        let frames = BTreeMap::from([(TagBlock::new(0), 1), (TagBlock::new(300), 2)]);
        assert_eq!(
            m.check_coverage(&frames),
            [TagStoreViolation::TaggedOutsideHeldStorage {
                block: TagBlock::new(300),
                frames: 2
            }]
        );
    }
}
