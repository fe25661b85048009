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
use crate::design::{DesignEntry, OnReserveFailure, ReserveAt, Rules, Storage, TaggedPlacement};
use crate::refs::{Allocation, BlockRefs, block_capacity};
use crate::rfc_v2::V2Blocks;
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
        reserve_at: ReserveAt::AfterAllocation,
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
    /// RFC v2's block count (`crate::rfc_v2`): the extra blocks, when on.
    v2: Option<V2Blocks>,
    /// Whether invariant 3 is v2's form (the design `rfc-v2`) rather than
    /// the RFC v3 one (`dynamic`, where extra references are the mistake).
    v2_form: bool,
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
            v2_block_count,
            google_fallback: _,
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
            v2: v2_block_count.then(V2Blocks::default),
            v2_form: false,
        }
    }

    /// The manager of the design `rfc-v2`: blocks counted as v2 did when
    /// `config.v2_block_count`, and invariant 3 in v2's form.
    pub fn new_v2(geometry: &Geometry, config: TagStoreConfig) -> Self {
        Self {
            v2_form: true,
            ..Self::new(geometry, config)
        }
    }

    /// The blocks with any reference, in block order.
    fn reserved_list(&self, v2: &V2Blocks) -> Vec<TagBlock> {
        let mut blocks = Vec::with_capacity(self.refs.len() as usize);
        self.reserved_merge(v2, |b| blocks.push(b));
        blocks
    }

    /// Calls `f` on each block with any reference, in block order, once:
    /// both tables are keyed by block, so a merge of the two, not a sort
    /// (the checker walks them at every check).
    fn reserved_merge(&self, v2: &V2Blocks, mut f: impl FnMut(TagBlock)) {
        let mut frames = self.refs.blocks().copied().peekable();
        let mut extra = v2.blocks().peekable();
        loop {
            let next = match (frames.peek(), extra.peek()) {
                (None, None) => return,
                (Some(a), Some(b)) => match a.cmp(b) {
                    core::cmp::Ordering::Less => frames.next(),
                    core::cmp::Ordering::Greater => extra.next(),
                    core::cmp::Ordering::Equal => {
                        extra.next();
                        frames.next()
                    }
                },
                (Some(_), None) => frames.next(),
                (None, Some(_)) => extra.next(),
            };
            f(next.expect("BUG: a peeked block"));
        }
    }

    /// Every reference of `block`: the frames' and v2's extra ones.
    fn total_refs(&self, block: TagBlock) -> u64 {
        self.refs.get(block) + self.v2.as_ref().map_or(0, |v2| v2.get(block))
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
        let extra = match self.v2 {
            Some(_) => V2Blocks::extra_blocks(&self.geometry, &alloc),
            None => Vec::new(),
        };
        let mut wanted: Vec<TagBlock> = alloc.shares(&self.geometry).map(|s| s.block).collect();
        wanted.extend(extra.iter().copied());
        wanted.sort_unstable();
        wanted.dedup();
        let mut claimed = Vec::new();
        for block in wanted {
            if self.total_refs(block) != 0 {
                continue;
            }
            let pfns = self.geometry.block_pfns(block);
            match claim_block(source, block, pfns, self.claim_attempts).await {
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
        self.commit(&alloc, claimed, extra);
        Ok(())
    }

    /// Adds every reference of `alloc`; `claimed` are its blocks that had
    /// none, in block order; `extra` the blocks v2's count adds.
    fn commit(&mut self, alloc: &Allocation, claimed: Vec<ClaimedBlock>, extra: Vec<TagBlock>) {
        for ClaimedBlock { block, pfns: _ } in claimed {
            assert_eq!(
                self.total_refs(block),
                0,
                "BUG: claimed {block:?}, which was reserved"
            );
            self.counters.reserved += 1;
            self.counters.reservations += 1;
        }
        for share in alloc.shares(&self.geometry) {
            self.refs.add(share.block, share.frames);
        }
        if let Some(v2) = &mut self.v2 {
            v2.add(alloc, extra);
        }
    }

    /// Gives `block` back if nothing references it any more.
    fn release_if_unreferenced(&mut self, block: TagBlock, source: &mut dyn BlockSource) {
        if self.total_refs(block) == 0 {
            // Linux: __xa_erase() + cma_release() once the last reference
            // goes.
            source.release(block, self.geometry.block_pfns(block));
            self.counters.reserved -= 1;
            self.counters.releases += 1;
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
        let shares: Vec<_> = alloc.shares(&self.geometry).collect();
        for share in shares {
            if self.refs.sub(share.block, share.frames) == 0 {
                self.release_if_unreferenced(share.block, source);
            }
        }
        let freed = match &mut self.v2 {
            Some(v2) => v2.release(&alloc),
            None => Vec::new(),
        };
        for block in freed {
            self.release_if_unreferenced(block, source);
        }
    }

    fn is_reserved(&self, pfn: Pfn) -> bool {
        self.geometry
            .block_of(pfn)
            .is_some_and(|block| self.total_refs(block) != 0)
    }

    fn block_state(&self, block: TagBlock) -> BlockState {
        assert_block(block, &self.geometry);
        match NonZeroU64::new(self.total_refs(block)) {
            Some(refs) => BlockState::Reserved { refs },
            None => BlockState::Lent,
        }
    }

    fn frame_refcount(&self, block: TagBlock) -> u64 {
        if self.v2_form {
            self.refs.get(block)
        } else {
            self.total_refs(block)
        }
    }

    fn reserved_blocks(&self) -> ReservedBlocks<'_> {
        match &self.v2 {
            None => ReservedBlocks::sparse(self.refs.blocks()),
            Some(v2) => ReservedBlocks::listed(self.reserved_list(v2)),
        }
    }

    fn zero_page(&self) -> Option<Pfn> {
        self.zero_page
    }

    fn counters(&self) -> TagStoreCounters {
        self.counters
    }

    fn bookkeeping_entries(&self) -> u64 {
        self.refs.len() + self.v2.as_ref().map_or(0, |v2| v2.blocks().count() as u64)
    }

    fn check(&self) -> Vec<TagStoreViolation> {
        self.check_with(V2Blocks::check)
    }

    fn check_full(&self) -> Vec<TagStoreViolation> {
        self.check_with(V2Blocks::check_full)
    }
}

impl DynamicTagStorage {
    /// The checker, with `v2_check` the verdict on v2's extra references.
    fn check_with(
        &self,
        v2_check: fn(&V2Blocks, &mut Vec<TagStoreViolation>),
    ) -> Vec<TagStoreViolation> {
        let Self {
            geometry,
            capacity,
            claim_attempts: _,
            refs,
            counters,
            zero_page,
            misuse,
            v2,
            v2_form: _,
        } = self;
        let mut out = Vec::new();
        let reserved_now = match v2 {
            None => refs.len(),
            Some(v2) => {
                v2_check(v2, &mut out);
                let mut n = 0;
                self.reserved_merge(v2, |_| n += 1);
                n
            }
        };
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
        recount("tag_storage.reserved", reserved, reserved_now);
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
