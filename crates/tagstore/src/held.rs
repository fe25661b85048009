//! Bookkeeping shared by the designs that *hold* tag storage ahead of tagged
//! allocations instead of reserving it for each one: `xnu` (a cell per tag
//! storage page, ACTIVE or not) and `google` (a Tag Block whose tag page is
//! held, FREE or TAGGED, or released, UNTAGGED).
//!
//! Contract:
//! - a block is *held* (taken out of the page allocator through a
//!   [`BlockSource`] claim, [`BlockState::Held`]) or not (its frames are the
//!   page allocator's: free, or holding untagged data);
//! - a held block counts the live tagged frames whose tags it holds, from 0
//!   up to the frames it covers; a release of tagged frames never gives a
//!   block back (the designs decide when, through [`HeldBlocks::give_back`]);
//! - a reservation of frames whose block is not held claims it (migrating
//!   the data its tag storage holds: XNU's reclaim of a CLAIMED tag page,
//!   Google's move of the tag page's data); all or nothing, in block order;
//! - `tag_storage.reserved` = held blocks = `reservations - releases`;
//!   `reserve_failures` counts failed claims (one per failed call);
//! - after activation the zero page's block is held and counts the zero page.
//!
//! Invariant 3 in these designs' form (checked by [`HeldBlocks::check_coverage`]
//! against the kernel's recount): tagged frames lie only in held blocks; a
//! held block may cover no tagged frame.

use crate::check::{Misuse, MisuseLog, TagStoreViolation};
use crate::refs::{Allocation, block_capacity};
use crate::{BlockSource, BlockState, ReserveError, TagStoreConfig, TagStoreCounters};
use core::num::NonZeroU32;
use mte::{Geometry, Order, Pfn, PfnRange, TagBlock};
use std::collections::BTreeMap;

/// The blocks of one machine, held or not.
#[derive(Clone, PartialEq, Eq, Debug)]
pub(crate) struct HeldBlocks {
    pub(crate) geometry: Geometry,
    /// Data frames covered by one block.
    pub(crate) capacity: u64,
    claim_attempts: NonZeroU32,
    /// Per block: `None` while not held, else its live tagged frames.
    tagged: Vec<Option<u64>>,
    held: u64,
    pub(crate) counters: TagStoreCounters,
    pub(crate) zero_page: Option<Pfn>,
    misuse: MisuseLog,
}

impl HeldBlocks {
    pub(crate) fn new(geometry: &Geometry, config: TagStoreConfig) -> Self {
        let blocks = geometry.tag_blocks();
        Self {
            geometry: geometry.clone(),
            capacity: block_capacity(geometry),
            claim_attempts: config.claim_attempts,
            tagged: vec![None; usize::try_from(blocks).expect("BUG: block count fits usize")],
            held: 0,
            counters: TagStoreCounters {
                blocks,
                ..TagStoreCounters::default()
            },
            zero_page: None,
            misuse: MisuseLog::new(config.on_misuse),
        }
    }

    fn index(block: TagBlock) -> usize {
        usize::try_from(block.index()).expect("BUG: block index fits usize")
    }

    /// Live tagged frames of `block`, `None` while it is not held.
    pub(crate) fn tagged(&self, block: TagBlock) -> Option<u64> {
        self.tagged[Self::index(block)]
    }

    pub(crate) fn is_held(&self, block: TagBlock) -> bool {
        self.tagged(block).is_some()
    }

    pub(crate) fn held(&self) -> u64 {
        self.held
    }

    /// Every block with its tagged count (`None`: not held), in order.
    pub(crate) fn iter(&self) -> impl Iterator<Item = (TagBlock, Option<u64>)> + '_ {
        self.tagged
            .iter()
            .enumerate()
            .map(|(i, &t)| (TagBlock::new(i as u64), t))
    }

    pub(crate) fn state(&self, block: TagBlock) -> BlockState {
        crate::assert_block(block, &self.geometry);
        match self.tagged(block) {
            Some(refs) => BlockState::Held { refs },
            None => BlockState::Lent,
        }
    }

    /// The block of the zero page, once activated.
    pub(crate) fn zero_block(&self) -> Option<TagBlock> {
        self.zero_page.and_then(|z| self.geometry.block_of(z))
    }

    /// The tag storage frames of `block`.
    pub(crate) fn storage(&self, block: TagBlock) -> PfnRange {
        self.geometry.block_pfns(block)
    }

    /// The data frames `block` covers.
    pub(crate) fn covers(&self, block: TagBlock) -> PfnRange {
        self.geometry.block_covers(block)
    }

    /// Whether `block`'s tag storage frames are free in the page allocator
    /// (XNU: INACTIVE rather than CLAIMED; Google: T free).
    pub(crate) fn storage_free(&self, block: TagBlock, source: &dyn BlockSource) -> bool {
        let pfns = self.storage(block);
        source.all_free(pfns)
    }

    /// Claims a block that is not held and holds it with no tagged frame.
    /// Counts a reservation, or a failure.
    pub(crate) async fn hold(
        &mut self,
        block: TagBlock,
        source: &mut dyn BlockSource,
    ) -> Result<(), ReserveError> {
        assert!(!self.is_held(block), "BUG: holding {block:?} twice");
        match self.claim(block, source).await {
            Ok(()) => {
                self.commit_hold(block);
                Ok(())
            }
            Err(e) => {
                self.counters.reserve_failures += 1;
                Err(e)
            }
        }
    }

    /// One block claim with the design's bounded retries of transient
    /// failures (`cma_alloc_range()`'s 3 tries, as `dynamic`).
    async fn claim(
        &self,
        block: TagBlock,
        source: &mut dyn BlockSource,
    ) -> Result<(), ReserveError> {
        let pfns = self.storage(block);
        let mut attempt = 1;
        loop {
            match source.claim(block, pfns).await {
                Ok(()) => return Ok(()),
                Err(err) if err.is_transient() && attempt < self.claim_attempts.get() => {
                    attempt += 1
                }
                Err(err) => {
                    return Err(ReserveError::Claim {
                        block,
                        attempts: attempt,
                        source: err,
                    });
                }
            }
        }
    }

    fn commit_hold(&mut self, block: TagBlock) {
        self.tagged[Self::index(block)] = Some(0);
        self.held += 1;
        self.counters.reserved += 1;
        self.counters.reservations += 1;
    }

    /// Gives a held block with no tagged frame back to the page allocator.
    pub(crate) fn give_back(&mut self, block: TagBlock, source: &mut dyn BlockSource) {
        assert_eq!(
            self.tagged(block),
            Some(0),
            "BUG: giving back {block:?}, which holds tags or is not held"
        );
        source.release(block, self.storage(block));
        self.tagged[Self::index(block)] = None;
        self.held -= 1;
        self.counters.reserved -= 1;
        self.counters.releases += 1;
    }

    /// Reserves the tag storage of `2^order` frames from `pfn`: blocks held
    /// already count the frames, the others are claimed first (in block
    /// order; on a failure every block the call claimed is given back and
    /// nothing is counted but the failure).
    pub(crate) async fn reserve(
        &mut self,
        pfn: Pfn,
        order: Order,
        source: &mut dyn BlockSource,
    ) -> Result<(), ReserveError> {
        let alloc = Allocation::new(&self.geometry, pfn, order)?;
        for share in alloc.shares(&self.geometry) {
            let refs = self.tagged(share.block).unwrap_or(0) + share.frames;
            if refs > self.capacity {
                let misuse = Misuse::DoubleReservation {
                    pfn,
                    order,
                    block: share.block,
                    refs,
                    capacity: self.capacity,
                };
                self.misuse.report(misuse);
                return Err(ReserveError::Misuse(misuse));
            }
        }
        let mut claimed = Vec::new();
        for share in alloc.shares(&self.geometry) {
            if self.is_held(share.block) {
                continue;
            }
            match self.claim(share.block, source).await {
                Ok(()) => claimed.push(share.block),
                Err(e) => {
                    for block in claimed {
                        source.release(block, self.storage(block));
                    }
                    self.counters.reserve_failures += 1;
                    return Err(e);
                }
            }
        }
        for block in claimed {
            self.commit_hold(block);
        }
        for share in alloc.shares(&self.geometry) {
            let t = self.tagged[Self::index(share.block)]
                .as_mut()
                .expect("BUG: a share's block is held after the claims");
            *t += share.frames;
        }
        Ok(())
    }

    /// Drops the tagged frames `2^order` from `pfn`; blocks stay held.
    pub(crate) fn release(&mut self, pfn: Pfn, order: Order) {
        let Ok(alloc) = Allocation::new(&self.geometry, pfn, order) else {
            return self.misuse.report(Misuse::ReleaseUncovered { pfn, order });
        };
        if let Some(zero_page) = self.zero_page
            && alloc.contains(zero_page)
        {
            return self.misuse.report(Misuse::ReleaseZeroPage {
                zero_page,
                pfn,
                order,
            });
        }
        let zero_block = self.zero_block();
        for share in alloc.shares(&self.geometry) {
            let refs = self.tagged(share.block).unwrap_or(0);
            // The zero page's frame is never released.
            let releasable = refs - u64::from(zero_block == Some(share.block) && refs > 0);
            if releasable < share.frames {
                return self.misuse.report(Misuse::ReleaseUnreserved {
                    pfn,
                    order,
                    block: share.block,
                    refs: releasable,
                    frames: share.frames,
                });
            }
        }
        for share in alloc.shares(&self.geometry) {
            let t = self.tagged[Self::index(share.block)]
                .as_mut()
                .expect("BUG: checked above");
            *t -= share.frames;
        }
    }

    /// Activation: the zero page's block is held and counts the zero page.
    pub(crate) async fn hold_zero_page(
        &mut self,
        zero_page: Pfn,
        source: &mut dyn BlockSource,
    ) -> Result<(), ReserveError> {
        assert!(self.zero_page.is_none(), "BUG: tag storage activated twice");
        self.reserve(zero_page, Order::new(0), source).await?;
        self.zero_page = Some(zero_page);
        Ok(())
    }

    /// Runs of data frames for a tagged allocation of `order` inside the
    /// blocks `blocks` (best first): each block's covered frames when the
    /// allocation fits in one block, else the aligned windows of
    /// `2^order` frames whose every block is held.
    pub(crate) fn runs(&self, order: Order, blocks: &[TagBlock]) -> Vec<PfnRange> {
        if order.pages() <= self.capacity {
            return blocks.iter().map(|&b| self.covers(b)).collect();
        }
        let per_window = order.pages() / self.capacity;
        let mut out = Vec::new();
        for &block in blocks {
            let covers = self.covers(block);
            if !covers.start.is_aligned(order) {
                continue;
            }
            let in_window: Vec<TagBlock> = self
                .geometry
                .blocks_of(covers.start, order.pages())
                .collect();
            if in_window.len() as u64 == per_window && in_window.iter().all(|&b| self.is_held(b)) {
                out.push(PfnRange::new(covers.start, order.pages()));
            }
        }
        out
    }

    pub(crate) fn check(&self, out: &mut Vec<TagStoreViolation>) {
        let mut held = 0;
        for (block, tagged) in self.iter() {
            let Some(refs) = tagged else { continue };
            held += 1;
            if refs > self.capacity {
                out.push(TagStoreViolation::RefcountAboveCoverage {
                    block,
                    refs,
                    capacity: self.capacity,
                });
            }
        }
        let TagStoreCounters {
            blocks,
            reserved,
            reservations,
            releases,
            reserve_failures: _,
        } = self.counters;
        for (name, counted, actual) in [
            ("tag_storage.blocks", blocks, self.geometry.tag_blocks()),
            ("tag_storage.reserved", reserved, held),
            ("tag_storage.reserved", self.held, held),
        ] {
            if counted != actual {
                out.push(TagStoreViolation::CounterMismatch {
                    name,
                    counted,
                    actual,
                });
            }
        }
        if reservations.checked_sub(releases) != Some(reserved) {
            out.push(TagStoreViolation::CounterBalance {
                reserved,
                reservations,
                releases,
            });
        }
        if let Some(zero_page) = self.zero_page {
            let block = self.geometry.block_of(zero_page);
            if block.is_none_or(|b| self.tagged(b).is_none_or(|t| t == 0)) {
                out.push(TagStoreViolation::ZeroPageBlockNotReserved { zero_page, block });
            }
        }
        self.misuse.check(out);
    }

    /// Invariant 3 in the holding designs' form: every block the kernel
    /// found tagged frames for (`frames`) is held.
    pub(crate) fn check_coverage(
        &self,
        frames: &BTreeMap<TagBlock, u64>,
        out: &mut Vec<TagStoreViolation>,
    ) {
        for (&block, &count) in frames {
            if self.geometry.block(block.index()).is_some() && !self.is_held(block) {
                out.push(TagStoreViolation::TaggedOutsideHeldStorage {
                    block,
                    frames: count,
                });
            }
        }
    }
}

/// The [`crate::TagStorage`] methods every holding design answers the same
/// way, straight from its [`HeldBlocks`] (the field named by the argument):
/// reservation, release, the block queries, the counters and both checks.
/// Used inside `impl TagStorage for ...`; what differs between the designs
/// (activation, placement, refill, bookkeeping size) stays in their impls.
macro_rules! delegate_to_held_blocks {
    ($blocks:ident) => {
        fn reserve<'a>(
            &'a mut self,
            pfn: ::mte::Pfn,
            order: ::mte::Order,
            source: &'a mut dyn $crate::BlockSource,
        ) -> $crate::LocalBoxFuture<'a, Result<(), $crate::ReserveError>> {
            Box::pin(self.$blocks.reserve(pfn, order, source))
        }

        fn release(
            &mut self,
            pfn: ::mte::Pfn,
            order: ::mte::Order,
            _source: &mut dyn $crate::BlockSource,
        ) {
            self.$blocks.release(pfn, order);
        }

        fn is_reserved(&self, pfn: ::mte::Pfn) -> bool {
            self.$blocks
                .geometry
                .block_of(pfn)
                .is_some_and(|b| self.$blocks.is_held(b))
        }

        fn block_state(&self, block: ::mte::TagBlock) -> $crate::BlockState {
            self.$blocks.state(block)
        }

        fn reserved_blocks(&self) -> $crate::ReservedBlocks<'_> {
            $crate::ReservedBlocks::listed(
                self.$blocks
                    .iter()
                    .filter(|(_, t)| t.is_some())
                    .map(|(b, _)| b)
                    .collect(),
            )
        }

        fn zero_page(&self) -> Option<::mte::Pfn> {
            self.$blocks.zero_page
        }

        fn counters(&self) -> $crate::TagStoreCounters {
            self.$blocks.counters
        }

        fn check(&self) -> Vec<$crate::TagStoreViolation> {
            let mut out = Vec::new();
            self.$blocks.check(&mut out);
            out
        }

        fn check_coverage(
            &self,
            frames: &::std::collections::BTreeMap<::mte::TagBlock, u64>,
        ) -> Vec<$crate::TagStoreViolation> {
            let mut out = Vec::new();
            self.$blocks.check_coverage(frames, &mut out);
            out
        }
    };
}
pub(crate) use delegate_to_held_blocks;
