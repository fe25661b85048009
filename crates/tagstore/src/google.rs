//! Design `google`: the dynamic tag storage carve-out proposed by Google,
//! after google/sanitizers `mte-dynamic-carveout/spec.md` (Collingbourne,
//! Stepanov) and its prototype, pcc/linux branch `mte-dynamic`
//! (`mm/page_alloc.c`: tagged and untagged free areas, Tag Blocks at order 5).
//!
//! A *Tag Block* is 32 data pages and their tag page T (here: the data
//! frames one tag storage block covers, and that block). A block is
//! - FREE: T held, no frame of the block in use (on the Tag Block list);
//! - TAGGED: T held, tagged frames in use or free (the tagged page list);
//! - UNTAGGED: T released to the page allocator, the block's frames (T
//!   included: "33 untagged pages") serve untagged data.
//!
//! FREE and TAGGED are [`BlockState::Held`]; UNTAGGED is lent.
//!
//! Rules:
//! - **Boot** (spec: "the Tag Block freelist contains all available Tag
//!   Blocks"): every block whose data frames and T are free is FREE (T
//!   claimed, so `tag_storage.reserved` starts at every such block); the
//!   zero page's block is TAGGED; blocks with boot allocations are UNTAGGED.
//! - **Tagged allocation** ([`TaggedPlacement::HeldStorage`]): from TAGGED
//!   blocks first, most tagged first (the smallest fit on the tagged list),
//!   then FREE blocks in address order (a Tag Block split into 32 tagged
//!   pages). Never from an UNTAGGED block or from a held block that untagged
//!   data has entered.
//! - **No tagged frame free** ([`TagStorage::refill`], spec: "the other
//!   page freelist is searched for groups of pages that may be converted
//!   into Tag Block freelist entries"): every UNTAGGED block whose data
//!   frames and T are all free becomes FREE (T claimed again, after the Tag
//!   Storage Clean). The same pass converts held blocks with no tagged frame
//!   whose data frames hold untagged data into UNTAGGED (T released: the
//!   allocator's untagged side took the block).
//! - **Fallback** (`google-fallback=`, [`GoogleFallback`]): `spec` (the
//!   spec's last resort before OOM): the allocation wakes the compaction
//!   ([`TagStorage::refill_thread`], a kernel task: spec F(b), "the other
//!   list is compacted asynchronously") without waiting for it and is
//!   served at once from any free page, its block's T claimed with
//!   migration (F(c): "migrate the first page's tag page (if not free) to
//!   the second page"); if that claim fails the kernel's common path (an
//!   entry awaiting tag storage) takes over. Each compaction pass converts
//!   as the refill does, then moves the pages of the UNTAGGED block (T
//!   free) with the fewest pages in use to free frames outside every held
//!   block ([`crate::BlockSource::evacuate`]) and holds its T. `none` (the
//!   prototype): no fallback, no compaction; the allocation fails as out
//!   of memory.
//! - **Free**: the block's tagged count drops; T stays held (TAGGED becomes
//!   FREE when its frames are free; the block is converted only on demand).
//!
//! Counters: `tag_storage.reserved` = FREE + TAGGED blocks, `reservations` =
//! UNTAGGED -> FREE conversions (boot included), `releases` = FREE ->
//! UNTAGGED conversions, `reserve_failures` = failed T claims; the kernel's
//! `tag_storage.migrations` counts T moves.
//!
//! Invariant 3, Google's form: tagged frames lie only in blocks whose T is
//! held (`check_coverage`); a held block may cover no tagged frame.
//!
//! Modelling decisions (`docs/designs.md`): the page allocator serves
//! untagged requests without asking the design, so a FREE block that
//! untagged data entered becomes UNTAGGED at the next refill rather than at
//! that allocation (and untagged requests are served from the tagged list,
//! spec F(c)'s other half, whenever the allocator finds its pages there).

use crate::design::{DesignEntry, OnReserveFailure, ReserveAt, Rules, Storage, TaggedPlacement};
use crate::held::{HeldBlocks, delegate_to_held_blocks};
use crate::{
    BlockSource, GoogleFallback, LocalBoxFuture, ReserveError, TagStorage, TagStoreConfig,
};
use mte::{Geometry, Order, Pfn, PfnRange, TagBlock};

/// `google` in the design registry.
pub(crate) const DESIGN: DesignEntry = DesignEntry::new(
    "google",
    "Google's dynamic carve-out: untagged, tagged and Tag Block lists, blocks converted on demand",
    Rules {
        storage: Storage::Lent,
        // Holding T again may migrate its data (the spec's fallback).
        reserve_in_atomic: false,
        on_reserve_failure: OnReserveFailure::MigrateFaultingPage,
        tagged_placement: TaggedPlacement::HeldStorage,
        reserve_at: ReserveAt::AfterAllocation,
    },
    |geometry, config| Box::new(GoogleTagStorage::new(geometry, config)),
);

/// Design `google`.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct GoogleTagStorage {
    blocks: HeldBlocks,
    /// `google-fallback=`.
    fallback: GoogleFallback,
}

impl GoogleTagStorage {
    pub fn new(geometry: &Geometry, config: TagStoreConfig) -> Self {
        Self {
            blocks: HeldBlocks::new(geometry, config),
            fallback: config.google_fallback,
        }
    }

    /// Whether every frame of `block`'s Tag Block (data and T) is free.
    fn all_free(&self, block: TagBlock, source: &dyn BlockSource) -> bool {
        let covers = self.blocks.covers(block);
        source.all_free(covers) && self.blocks.storage_free(block, source)
    }

    /// The tagged list: TAGGED blocks (held, tagged frames in use), most
    /// tagged first, address order breaking ties.
    fn tagged_list(&self) -> impl Iterator<Item = TagBlock> + use<> {
        let mut tagged: Vec<(u64, TagBlock)> = self
            .blocks
            .iter()
            .filter_map(|(block, t)| t.filter(|&t| t > 0).map(|t| (t, block)))
            .collect();
        tagged.sort_by_key(|&(t, b)| (core::cmp::Reverse(t), b));
        tagged.into_iter().map(|(_, b)| b)
    }

    /// Held blocks with no tagged frame, in address order: the Tag Block
    /// list's candidates.
    fn free_blocks(&self) -> impl Iterator<Item = TagBlock> + '_ {
        self.blocks
            .iter()
            .filter(|&(_, t)| t == Some(0))
            .map(|(block, _)| block)
    }

    /// Whether `block` (held, no tagged frame) is on the Tag Block list:
    /// no frame of its data in use.
    fn is_free_tag_block(&self, block: TagBlock, source: &dyn BlockSource) -> bool {
        source.all_free(self.blocks.covers(block))
    }

    async fn refill_now(&mut self, source: &mut dyn BlockSource) -> bool {
        let zero = self.blocks.zero_block();
        let snapshot: Vec<(TagBlock, Option<u64>)> = self.blocks.iter().collect();
        let mut gained = false;
        for (block, tagged) in snapshot {
            match tagged {
                // UNTAGGED, and all 33 pages free: back to a Tag Block.
                None if self.all_free(block, source) => {
                    gained |= self.blocks.hold(block, source).await.is_ok();
                }
                // Held without tags, but untagged data lives in it: the
                // untagged side converted it; release T.
                Some(0) if Some(block) != zero => {
                    let covers = self.blocks.covers(block);
                    if source.free_frames(covers) < covers.count {
                        self.blocks.give_back(block, source);
                    }
                }
                _ => {}
            }
        }
        gained
    }

    /// One pass of the asynchronous compaction (spec F(b), `spec` only):
    /// the conversions of [`Self::refill_now`], then the UNTAGGED block with
    /// the fewest data frames in use (some, with T free) has its data moved
    /// out (`BlockSource::evacuate`) and becomes FREE. One block per pass,
    /// address order breaking ties.
    async fn compact(&mut self, source: &mut dyn BlockSource) -> bool {
        let mut gained = self.refill_now(source).await;
        let best = self
            .blocks
            .iter()
            .filter(|(block, tagged)| tagged.is_none() && self.blocks.storage_free(*block, source))
            .map(|(block, _)| {
                let covers = self.blocks.covers(block);
                (covers.count - source.free_frames(covers), block)
            })
            .filter(|&(used, _)| used > 0)
            .min();
        // The data goes to other UNTAGGED blocks, never into held ones.
        let avoid: Vec<PfnRange> = self
            .blocks
            .iter()
            .filter(|(_, tagged)| tagged.is_some())
            .map(|(block, _)| self.blocks.covers(block))
            .collect();
        if let Some((_, block)) = best
            && source
                .evacuate(self.blocks.covers(block), &avoid)
                .await
                .is_ok()
            && self.all_free(block, source)
        {
            gained |= self.blocks.hold(block, source).await.is_ok();
        }
        gained
    }
}

impl TagStorage for GoogleTagStorage {
    delegate_to_held_blocks!(blocks);

    fn activate<'a>(
        &'a mut self,
        zero_page: Pfn,
        source: &'a mut dyn BlockSource,
    ) -> LocalBoxFuture<'a, Result<(), ReserveError>> {
        Box::pin(async move {
            self.blocks.hold_zero_page(zero_page, source).await?;
            let cells: Vec<TagBlock> = self.blocks.geometry.blocks().collect();
            for block in cells {
                if !self.blocks.is_held(block) && self.all_free(block, source) {
                    self.blocks.hold(block, source).await?;
                }
            }
            Ok(())
        })
    }

    fn bookkeeping_entries(&self) -> u64 {
        // The prototype keeps no per-block structure (the lists are buddy
        // free areas); the model keeps one entry per block.
        self.blocks.geometry.tag_blocks()
    }

    fn tagged_placement(&self, order: Order, source: &dyn BlockSource) -> Vec<PfnRange> {
        // The tagged list (TAGGED blocks, most tagged first), then the Tag
        // Block list (FREE blocks: held, no frame in use).
        let free = self
            .free_blocks()
            .filter(|&b| self.is_free_tag_block(b, source));
        let blocks: Vec<TagBlock> = self.tagged_list().chain(free).collect();
        self.blocks.runs(order, &blocks)
    }

    fn place_tagged(
        &self,
        order: Order,
        source: &dyn BlockSource,
        fits: &mut dyn FnMut(PfnRange) -> Option<Pfn>,
    ) -> Option<Pfn> {
        // As `tagged_placement`, a block at a time: whether a held block
        // with no tagged frame is a FREE Tag Block is asked only when every
        // block before it failed to fit (a failed fit changes nothing, so
        // the answer is the one `tagged_placement` computed up front).
        let tagged: Vec<TagBlock> = self.tagged_list().collect();
        self.blocks
            .runs(order, &tagged)
            .into_iter()
            .find_map(&mut *fits)
            .or_else(|| {
                self.free_blocks()
                    .filter(|&b| self.is_free_tag_block(b, source))
                    .find_map(|b| {
                        self.blocks
                            .runs(order, &[b])
                            .into_iter()
                            .find_map(&mut *fits)
                    })
            })
    }

    fn refill<'a>(
        &'a mut self,
        _order: Order,
        source: &'a mut dyn BlockSource,
    ) -> LocalBoxFuture<'a, bool> {
        Box::pin(self.refill_now(source))
    }

    fn has_refill_thread(&self) -> bool {
        // The spec's compaction is asynchronous: a kernel task.
        self.fallback == GoogleFallback::Spec
    }

    fn refill_thread<'a>(
        &'a mut self,
        _wanted: Option<Order>,
        source: &'a mut dyn BlockSource,
    ) -> LocalBoxFuture<'a, bool> {
        Box::pin(self.compact(source))
    }

    fn falls_back_anywhere(&self) -> bool {
        // Spec F(c): any page, its tag page's data moved (the claim of T
        // migrates it). The prototype has no fallback.
        self.fallback == GoogleFallback::Spec
    }

    fn waits_for_refill_thread(&self) -> bool {
        // Spec: "meanwhile" the request is served by F(c).
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::BlockState;
    use crate::testutil::{
        BASE, assert_places_as_tagged_placement, block_on, booted, fresh, machine, record,
    };

    #[test]
    fn boot_holds_every_free_block_and_leaves_used_ones_untagged() {
        let (mut m, mut src) = fresh(GoogleTagStorage::new);
        src.used.insert(Pfn::new(BASE + 32 * 7 + 3));
        block_on(m.activate(Pfn::new(BASE), &mut src)).unwrap();
        assert_eq!(m.counters().reserved, 511);
        assert_eq!(m.block_state(TagBlock::new(7)), BlockState::Lent);
        assert_eq!(
            m.block_state(TagBlock::new(0)),
            BlockState::Held { refs: 1 }
        );
        assert!(m.check().is_empty(), "{:?}", m.check());
    }

    #[test]
    fn tagged_list_before_tag_blocks_and_conversions_on_demand() {
        let (mut m, mut src) = booted(GoogleTagStorage::new);
        // Untagged data entered block 3: it is no FREE block any more.
        src.used.insert(Pfn::new(BASE + 32 * 3));
        let runs = m.tagged_placement(Order::new(0), &src);
        assert_eq!(
            runs[0].start,
            Pfn::new(BASE),
            "the zero page's TAGGED block"
        );
        assert_eq!(runs[1].start, Pfn::new(BASE + 32), "then FREE blocks");
        assert!(runs.iter().all(|r| r.start != Pfn::new(BASE + 32 * 3)));
        // The refill releases its T (FREE -> UNTAGGED) ...
        block_on(m.refill(Order::new(0), &mut src));
        assert_eq!(m.block_state(TagBlock::new(3)), BlockState::Lent);
        assert_eq!(m.counters().releases, 1);
        // ... and holds it again once all 33 pages are free.
        src.used.clear();
        assert!(block_on(m.refill(Order::new(0), &mut src)));
        assert_eq!(
            m.block_state(TagBlock::new(3)),
            BlockState::Held { refs: 0 }
        );
        // Freeing tagged frames keeps T held.
        let frame = Pfn::new(BASE + 32 * 9);
        block_on(m.reserve(frame, Order::new(0), &mut src)).unwrap();
        m.release(frame, Order::new(0), &mut src);
        assert_eq!(
            m.block_state(TagBlock::new(9)),
            BlockState::Held { refs: 0 }
        );
        assert!(m.check().is_empty(), "{:?}", m.check());
    }

    #[test]
    fn placing_lazily_tries_the_runs_of_tagged_placement_in_their_order() {
        let (mut m, mut src) = booted(GoogleTagStorage::new);
        // Block 3 has untagged data (not FREE); blocks 9 and 12 are TAGGED,
        // 12 the more tagged.
        src.used.insert(Pfn::new(BASE + 32 * 3));
        for frame in [32 * 9, 32 * 12, 32 * 12 + 1] {
            block_on(m.reserve(Pfn::new(BASE + frame), Order::new(0), &mut src)).unwrap();
        }
        for order in [0, 5, 6] {
            assert_places_as_tagged_placement(&m, Order::new(order), &src, 5);
        }
    }

    #[test]
    fn the_fallback_switch_decides_the_thread_and_the_last_resort() {
        let g = machine(4096);
        let spec = GoogleTagStorage::new(&g, record());
        assert!(spec.has_refill_thread() && spec.falls_back_anywhere());
        assert!(
            !spec.waits_for_refill_thread(),
            "the compaction is asynchronous"
        );
        let config = TagStoreConfig {
            google_fallback: GoogleFallback::None,
            ..record()
        };
        let none = GoogleTagStorage::new(&g, config);
        assert!(!none.has_refill_thread() && !none.falls_back_anywhere());
        assert_eq!(GoogleFallback::by_name("none"), Some(GoogleFallback::None));
        assert_eq!(
            GoogleFallback::by_name("spec"),
            Some(GoogleFallback::default())
        );
        assert_eq!(GoogleFallback::by_name("eager"), None);
    }

    #[test]
    fn a_compaction_pass_converts_even_when_nothing_can_move() {
        let (mut m, mut src) = booted(GoogleTagStorage::new);
        // Untagged data in block 3: the pass releases its T; the mock
        // source cannot move pages, so block 3 stays UNTAGGED.
        src.used.insert(Pfn::new(BASE + 32 * 3));
        assert!(!block_on(m.refill_thread(None, &mut src)));
        assert_eq!(m.block_state(TagBlock::new(3)), BlockState::Lent);
        assert!(m.check().is_empty(), "{:?}", m.check());
    }
}
