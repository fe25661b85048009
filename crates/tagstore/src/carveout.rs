//! Policy `static`: tag storage carved out at boot, as mainline Linux does
//! (`docs/model.md` §3).
//!
//! Every block is reserved from boot and never lent, so a reservation always
//! succeeds, never claims, and only counts references; nothing is ever
//! released to the allocator. The per-block reference counts are kept anyway
//! (sparse, as under `dynamic`) so the kernel's invariant "a reserved block's
//! count equals the live tagged frames it covers" is checked the same way
//! under both policies, and a double reservation or a release of unreserved
//! frames is caught the same way.
//!
//! Counters: `reserved` = `reservations` = `blocks` (the boot-time carve-out
//! reserves every block once), `releases` = `reserve_failures` = 0. They are
//! derived from the geometry, so they cannot drift.

use crate::check::{MisuseLog, TagStoreViolation};
use crate::design::{DesignEntry, OnReserveFailure, ReserveAt, Rules, Storage, TaggedPlacement};
use crate::refs::{Allocation, BlockRefs, block_capacity};
use crate::{
    BlockSource, BlockState, LocalBoxFuture, ReserveError, ReservedBlocks, TagStorage,
    TagStoreConfig, TagStoreCounters, assert_block,
};
use mte::Pfn;
use mte::{Geometry, Order, TagBlock};

/// `static` in the design registry.
pub(crate) const DESIGN: DesignEntry = DesignEntry::new(
    "static",
    "tag storage carved out at boot, never lent (mainline Linux)",
    Rules {
        storage: Storage::CarvedOut,
        // Only a reference count moves: nothing sleeps, nothing fails.
        reserve_in_atomic: true,
        on_reserve_failure: OnReserveFailure::MigrateFaultingPage,
        tagged_placement: TaggedPlacement::Anywhere,
        reserve_at: ReserveAt::AfterAllocation,
    },
    |geometry, config| Box::new(StaticTagStorage::new(geometry, config)),
);

/// Policy `static`.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct StaticTagStorage {
    geometry: Geometry,
    /// Frames covered by one block.
    capacity: u64,
    refs: BlockRefs,
    zero_page: Option<Pfn>,
    misuse: MisuseLog,
}

impl StaticTagStorage {
    pub fn new(geometry: &Geometry, config: TagStoreConfig) -> Self {
        Self {
            geometry: geometry.clone(),
            capacity: block_capacity(geometry),
            refs: BlockRefs::default(),
            zero_page: None,
            misuse: MisuseLog::new(config.on_misuse),
        }
    }

    fn add_refs(&mut self, pfn: Pfn, order: Order) -> Result<(), ReserveError> {
        let alloc = Allocation::new(&self.geometry, pfn, order)?;
        if let Err(misuse) = self
            .refs
            .check_reserve(&self.geometry, &alloc, self.capacity)
        {
            self.misuse.report(misuse);
            return Err(ReserveError::Misuse(misuse));
        }
        for share in alloc.shares(&self.geometry) {
            self.refs.add(share.block, share.frames);
        }
        Ok(())
    }
}

impl TagStorage for StaticTagStorage {
    fn activate<'a>(
        &'a mut self,
        zero_page: Pfn,
        _source: &'a mut dyn BlockSource,
    ) -> LocalBoxFuture<'a, Result<(), ReserveError>> {
        Box::pin(async move {
            assert!(self.zero_page.is_none(), "BUG: tag storage activated twice");
            self.add_refs(zero_page, Order::new(0))?;
            self.zero_page = Some(zero_page);
            Ok(())
        })
    }

    fn reserve<'a>(
        &'a mut self,
        pfn: Pfn,
        order: Order,
        _source: &'a mut dyn BlockSource,
    ) -> LocalBoxFuture<'a, Result<(), ReserveError>> {
        Box::pin(async move { self.add_refs(pfn, order) })
    }

    fn release(&mut self, pfn: Pfn, order: Order, _source: &mut dyn BlockSource) {
        let checked = Allocation::new(&self.geometry, pfn, order)
            .map_err(|_| crate::Misuse::ReleaseUncovered { pfn, order })
            .and_then(|alloc| {
                self.refs
                    .check_release(&self.geometry, &alloc, self.zero_page)
                    .map(|()| alloc)
            });
        match checked {
            Ok(alloc) => {
                // A carved-out block stays reserved at zero references.
                for share in alloc.shares(&self.geometry) {
                    self.refs.sub(share.block, share.frames);
                }
            }
            Err(misuse) => self.misuse.report(misuse),
        }
    }

    fn is_reserved(&self, pfn: Pfn) -> bool {
        self.geometry.block_of(pfn).is_some()
    }

    fn block_state(&self, block: TagBlock) -> BlockState {
        assert_block(block, &self.geometry);
        BlockState::CarvedOut {
            refs: self.refs.get(block),
        }
    }

    fn reserved_blocks(&self) -> ReservedBlocks<'_> {
        ReservedBlocks::all(self.geometry.tag_blocks())
    }

    fn counted_blocks(&self) -> ReservedBlocks<'_> {
        // The table keeps no entry at 0 references.
        ReservedBlocks::sparse(self.refs.blocks())
    }

    fn zero_page(&self) -> Option<Pfn> {
        self.zero_page
    }

    fn bookkeeping_entries(&self) -> u64 {
        self.refs.len()
    }

    fn counters(&self) -> TagStoreCounters {
        let blocks = self.geometry.tag_blocks();
        TagStoreCounters {
            blocks,
            reserved: blocks,
            reservations: blocks,
            releases: 0,
            reserve_failures: 0,
        }
    }

    fn check(&self) -> Vec<TagStoreViolation> {
        let Self {
            geometry,
            capacity,
            refs,
            zero_page,
            misuse,
        } = self;
        let mut out = Vec::new();
        refs.check(geometry, *capacity, *zero_page, &mut out);
        misuse.check(&mut out);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Misuse;
    use crate::testutil::{BASE, MockSource, block_on, machine, record};

    #[test]
    fn every_block_is_reserved_from_boot_and_never_released() {
        // docs/model.md §5: under `static` every block counts as reserved from
        // boot; 64 MiB with 4 KiB blocks has 2 MiB / 4 KiB = 512 blocks.
        let g = machine(4 << 10);
        let mut m = StaticTagStorage::new(&g, record());
        let mut src = MockSource::default();
        let expected = TagStoreCounters {
            blocks: 512,
            reserved: 512,
            reservations: 512,
            releases: 0,
            reserve_failures: 0,
        };
        assert_eq!(m.counters(), expected);
        assert!(m.is_reserved(Pfn::new(BASE + 100)));
        assert_eq!(m.reserved_blocks().count(), 512);
        assert_eq!(
            m.block_state(TagBlock::new(7)),
            BlockState::CarvedOut { refs: 0 }
        );

        // Order 9 counts 32 references in each of 16 blocks, claims nothing.
        block_on(m.reserve(Pfn::new(BASE), Order::new(9), &mut src)).unwrap();
        assert_eq!(m.block_refcount(TagBlock::new(15)), 32);
        assert_eq!(m.block_refcount(TagBlock::new(16)), 0);
        m.release(Pfn::new(BASE), Order::new(9), &mut src);
        assert_eq!(
            m.block_state(TagBlock::new(0)),
            BlockState::CarvedOut { refs: 0 }
        );
        assert_eq!(m.counters(), expected);
        assert!(src.log.is_empty(), "static never claims or releases");
        assert!(m.check().is_empty());
    }

    #[test]
    fn zero_page_reference_and_misuse_are_checked_as_under_dynamic() {
        let g = machine(4 << 10);
        let mut m = StaticTagStorage::new(&g, record());
        let mut src = MockSource::default();
        block_on(m.activate(Pfn::new(BASE + 5), &mut src)).unwrap();
        assert_eq!(m.block_refcount(TagBlock::new(0)), 1);
        assert_eq!(m.zero_page(), Some(Pfn::new(BASE + 5)));
        m.release(Pfn::new(BASE + 6), Order::new(0), &mut src);
        assert_eq!(
            m.check(),
            [TagStoreViolation::Misuse {
                first: Misuse::ReleaseUnreserved {
                    pfn: Pfn::new(BASE + 6),
                    order: Order::new(0),
                    block: TagBlock::new(0),
                    refs: 0,
                    frames: 1
                },
                count: 1
            }]
        );
        assert_eq!(m.block_refcount(TagBlock::new(0)), 1, "refused whole");
    }
}
