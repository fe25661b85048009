//! Policy `dynamic`: the RFC's tag storage reuse (Linux RFC v1-v3,
//! `arch/arm64/kernel/mte_tag_storage.c`, never merged).
//!
//! Tag storage is ordinary CMA memory until tagged frames need it. A block is
//! reserved when the first tagged frame whose tags it holds is allocated, and
//! given back as soon as the last one is freed. The block states and their
//! diagram are in the crate documentation.
//!
//! Invariants (checked by `check()`):
//! - a block is reserved exactly when it has references; its count is the
//!   number of live tagged frames whose tags it holds, never more than the
//!   frames it covers;
//! - `reserved` equals the number of reserved blocks and
//!   `reservations - releases`;
//! - after activation, the zero page's block is reserved (its reference is
//!   never dropped: releasing the zero page, or any reference that would leave
//!   its block without the zero page's, is a misuse).
//!
//! # Reservation
//!
//! Linux's `reserve_tag_storage()`, under `tag_blocks_lock`, first adds
//! references to the blocks already reserved (under the xarray lock, so a
//! concurrent `free_tag_storage()` cannot release them meanwhile), then claims
//! the others one by one in block order with `cma_alloc_range()` (3 tries,
//! retrying only `-EBUSY`), inserting each into the xarray; on an error it
//! drops every reference the call added and gives back every block left with
//! none.
//!
//! Here the manager is `&mut self` for the whole call, so no release can run
//! during the claims and the call is staged instead: validate, claim the
//! missing blocks in block order (each held as a move-only `ClaimedBlock`),
//! then commit every reference at once. The source sees the same claims in the
//! same order and, on failure, the same give-backs in block order; the
//! manager's own state is untouched until the commit, so a failure has only
//! claims to undo, and a reserve future dropped half-way (the kernel must
//! not: it reports a fatal signal as a permanent claim failure instead) could
//! at worst strand claimed blocks in the source, never leave references that
//! nobody holds.
//!
//! Known shortcuts: the per-frame `PG_tag_storage_reserved` flag, the fast
//! path for blocks that are entirely free (RFC v2 "Fast track reserving tag
//! storage when the block is free") and the cache maintenance on tag blocks
//! (RFC "Perform CMOs for tag blocks") belong to the kernel side.

use crate::check::{Misuse, MisuseLog, TagStoreViolation};
use crate::design::{DesignEntry, OnReserveFailure, Rules, Storage, TaggedPlacement};
use crate::refs::{Allocation, BlockRefs, block_capacity};
use crate::{
    BlockSource, BlockState, LocalBoxFuture, ReserveError, ReservedBlocks, TagStorage,
    TagStoreConfig, TagStoreCounters, assert_block,
};
use core::num::{NonZeroU32, NonZeroU64};
use mte::{Geometry, Order, TagBlock};
use mte::{Pfn, PfnRange};

/// `dynamic` in the design registry.
pub(crate) const DESIGN: DesignEntry = DesignEntry::new(
    "dynamic",
    "RFC v3 with its known mistakes fixed: tag storage lent as CMA, blocks reserved on demand",
    Rules {
        storage: Storage::Lent,
        // A claim migrates (sleeps) and may fail.
        reserve_in_atomic: false,
        on_reserve_failure: OnReserveFailure::MigrateFaultingPage,
        tagged_placement: TaggedPlacement::Anywhere,
    },
    |geometry, config| Box::new(DynamicTagStorage::new(geometry, config)),
);

/// Policy `dynamic`.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct DynamicTagStorage {
    geometry: Geometry,
    /// Frames covered by one block.
    capacity: u64,
    claim_attempts: NonZeroU32,
    /// Linux: the `tag_blocks_reserved` xarray and the block refcounts.
    refs: BlockRefs,
    counters: TagStoreCounters,
    zero_page: Option<Pfn>,
    misuse: MisuseLog,
}

/// A block taken out of the page allocator by the running reservation and not
/// yet committed: it must be committed as reserved or given back.
#[must_use = "a claimed block is committed as reserved or given back"]
#[derive(Debug)]
struct ClaimedBlock {
    block: TagBlock,
    pfns: PfnRange,
}

impl ClaimedBlock {
    /// Linux: `cma_release()` on the error path of `reserve_tag_storage()`.
    fn give_back<S: BlockSource + ?Sized>(self, source: &mut S) {
        source.release(self.block, self.pfns);
    }
}

/// Claims one block, retrying transient failures up to `attempts` tries.
///
/// Linux: `cma_alloc_range(cma, block, block_size_pages, 3, gfp)`.
async fn claim_block<S: BlockSource + ?Sized>(
    source: &mut S,
    block: TagBlock,
    pfns: PfnRange,
    attempts: NonZeroU32,
) -> Result<ClaimedBlock, ReserveError> {
    let mut attempt = 1;
    loop {
        match source.claim(block, pfns).await {
            Ok(()) => return Ok(ClaimedBlock { block, pfns }),
            Err(err) if err.is_transient() && attempt < attempts.get() => attempt += 1,
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

impl DynamicTagStorage {
    /// A manager with every block lent to the page allocator.
    pub fn new(geometry: &Geometry, config: TagStoreConfig) -> Self {
        let TagStoreConfig {
            claim_attempts,
            on_misuse,
        } = config;
        Self {
            geometry: geometry.clone(),
            capacity: block_capacity(geometry),
            claim_attempts,
            refs: BlockRefs::default(),
            counters: TagStoreCounters {
                blocks: geometry.tag_blocks(),
                ..TagStoreCounters::default()
            },
            zero_page: None,
            misuse: MisuseLog::new(on_misuse),
        }
    }

    /// Claims the blocks `alloc` lacks, in block order, then commits.
    async fn reserve_alloc<S: BlockSource + ?Sized>(
        &mut self,
        alloc: Allocation,
        source: &mut S,
    ) -> Result<(), ReserveError> {
        if let Err(misuse) = self
            .refs
            .check_reserve(&self.geometry, &alloc, self.capacity)
        {
            self.misuse.report(misuse);
            return Err(ReserveError::Misuse(misuse));
        }
        let mut claimed = Vec::new();
        for share in alloc.shares(&self.geometry) {
            if self.refs.get(share.block) != 0 {
                continue;
            }
            let pfns = self.geometry.block_pfns(share.block);
            match claim_block(source, share.block, pfns, self.claim_attempts).await {
                Ok(token) => claimed.push(token),
                Err(err) => {
                    for token in claimed {
                        token.give_back(source);
                    }
                    self.counters.reserve_failures += 1;
                    return Err(err);
                }
            }
        }
        self.commit(&alloc, claimed);
        Ok(())
    }

    /// Adds every reference of `alloc`; `claimed` are its blocks that had
    /// none, in block order.
    fn commit(&mut self, alloc: &Allocation, claimed: Vec<ClaimedBlock>) {
        let mut claimed = claimed.into_iter().peekable();
        for share in alloc.shares(&self.geometry) {
            match claimed.next_if(|token| token.block == share.block) {
                Some(ClaimedBlock { block, pfns: _ }) => {
                    assert_eq!(
                        self.refs.get(block),
                        0,
                        "BUG: claimed {block:?}, which was reserved"
                    );
                    self.counters.reserved += 1;
                    self.counters.reservations += 1;
                }
                None => assert_ne!(
                    self.refs.get(share.block),
                    0,
                    "BUG: {:?} was neither reserved nor claimed",
                    share.block
                ),
            }
            self.refs.add(share.block, share.frames);
        }
        if let Some(token) = claimed.next() {
            panic!("BUG: claimed {token:?} outside the allocation {alloc:?}");
        }
    }
}

impl TagStorage for DynamicTagStorage {
    fn activate<'a>(
        &'a mut self,
        zero_page: Pfn,
        source: &'a mut dyn BlockSource,
    ) -> LocalBoxFuture<'a, Result<(), ReserveError>> {
        Box::pin(async move {
            assert!(self.zero_page.is_none(), "BUG: tag storage activated twice");
            self.reserve(zero_page, Order::new(0), source).await?;
            self.zero_page = Some(zero_page);
            Ok(())
        })
    }

    fn reserve<'a>(
        &'a mut self,
        pfn: Pfn,
        order: Order,
        source: &'a mut dyn BlockSource,
    ) -> LocalBoxFuture<'a, Result<(), ReserveError>> {
        Box::pin(async move {
            let alloc = Allocation::new(&self.geometry, pfn, order)?;
            self.reserve_alloc(alloc, source).await
        })
    }

    fn release(&mut self, pfn: Pfn, order: Order, source: &mut dyn BlockSource) {
        let checked = Allocation::new(&self.geometry, pfn, order)
            .map_err(|_| Misuse::ReleaseUncovered { pfn, order })
            .and_then(|alloc| {
                self.refs
                    .check_release(&self.geometry, &alloc, self.zero_page)
                    .map(|()| alloc)
            });
        let alloc = match checked {
            Ok(alloc) => alloc,
            Err(misuse) => return self.misuse.report(misuse),
        };
        for share in alloc.shares(&self.geometry) {
            if self.refs.sub(share.block, share.frames) == 0 {
                // Linux: __xa_erase() + cma_release() once the last reference
                // goes.
                source.release(share.block, self.geometry.block_pfns(share.block));
                self.counters.reserved -= 1;
                self.counters.releases += 1;
            }
        }
    }

    fn is_reserved(&self, pfn: Pfn) -> bool {
        self.geometry
            .block_of(pfn)
            .is_some_and(|block| self.refs.get(block) != 0)
    }

    fn block_state(&self, block: TagBlock) -> BlockState {
        assert_block(block, &self.geometry);
        match NonZeroU64::new(self.refs.get(block)) {
            Some(refs) => BlockState::Reserved { refs },
            None => BlockState::Lent,
        }
    }

    fn reserved_blocks(&self) -> ReservedBlocks<'_> {
        ReservedBlocks::sparse(self.refs.blocks())
    }

    fn zero_page(&self) -> Option<Pfn> {
        self.zero_page
    }

    fn counters(&self) -> TagStoreCounters {
        self.counters
    }

    fn bookkeeping_entries(&self) -> u64 {
        self.refs.len()
    }

    fn check(&self) -> Vec<TagStoreViolation> {
        let Self {
            geometry,
            capacity,
            claim_attempts: _,
            refs,
            counters,
            zero_page,
            misuse,
        } = self;
        let mut out = Vec::new();
        refs.check(geometry, *capacity, *zero_page, &mut out);
        let TagStoreCounters {
            blocks,
            reserved,
            reservations,
            releases,
            reserve_failures: _,
        } = *counters;
        let mut recount = |name, counted, actual| {
            if counted != actual {
                out.push(TagStoreViolation::CounterMismatch {
                    name,
                    counted,
                    actual,
                });
            }
        };
        recount("tag_storage.blocks", blocks, geometry.tag_blocks());
        recount("tag_storage.reserved", reserved, refs.len());
        if reservations.checked_sub(releases) != Some(reserved) {
            out.push(TagStoreViolation::CounterBalance {
                reserved,
                reservations,
                releases,
            });
        }
        misuse.check(&mut out);
        out
    }
}

#[cfg(test)]
mod tests;
