//! Policy `none`: a machine without MTE (`docs/model.md` §3).
//!
//! There is no tag storage and no block: reserving or activating fails with
//! [`ReserveError::NoTagStorage`] (the kernel refuses `PROT_MTE` and never
//! asks), releasing is a [`Misuse`], and every `tag_storage.*` counter is 0.

use crate::check::{Misuse, MisuseLog, TagStoreViolation};
use crate::design::{DesignEntry, OnReserveFailure, ReserveAt, Rules, Storage, TaggedPlacement};
use crate::{
    BlockSource, BlockState, LocalBoxFuture, ReserveError, ReservedBlocks, TagStorage,
    TagStoreConfig, TagStoreCounters,
};
use mte::Pfn;
use mte::{Order, TagBlock};

/// `none` in the design registry.
pub(crate) const DESIGN: DesignEntry = DesignEntry::new(
    "none",
    "no MTE: PROT_MTE is refused and there is no tag storage",
    Rules {
        storage: Storage::None,
        reserve_in_atomic: false,
        on_reserve_failure: OnReserveFailure::MigrateFaultingPage,
        tagged_placement: TaggedPlacement::Anywhere,
        reserve_at: ReserveAt::AfterAllocation,
    },
    |_, config| Box::new(NoTagStorage::new(config)),
);

/// Policy `none`.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct NoTagStorage {
    misuse: MisuseLog,
}

impl NoTagStorage {
    pub fn new(config: TagStoreConfig) -> Self {
        Self {
            misuse: MisuseLog::new(config.on_misuse),
        }
    }
}

impl TagStorage for NoTagStorage {
    fn activate<'a>(
        &'a mut self,
        _zero_page: Pfn,
        _source: &'a mut dyn BlockSource,
    ) -> LocalBoxFuture<'a, Result<(), ReserveError>> {
        Box::pin(async { Err(ReserveError::NoTagStorage) })
    }

    fn reserve<'a>(
        &'a mut self,
        _pfn: Pfn,
        _order: Order,
        _source: &'a mut dyn BlockSource,
    ) -> LocalBoxFuture<'a, Result<(), ReserveError>> {
        Box::pin(async { Err(ReserveError::NoTagStorage) })
    }

    fn release(&mut self, pfn: Pfn, order: Order, _source: &mut dyn BlockSource) {
        self.misuse
            .report(Misuse::ReleaseWithoutTagStorage { pfn, order });
    }

    fn is_reserved(&self, _pfn: Pfn) -> bool {
        false
    }

    fn block_state(&self, block: TagBlock) -> BlockState {
        panic!("BUG: {block:?} is not a block of this machine (it has no tag storage)")
    }

    fn reserved_blocks(&self) -> ReservedBlocks<'_> {
        ReservedBlocks::all(0)
    }

    fn zero_page(&self) -> Option<Pfn> {
        None
    }

    fn counters(&self) -> TagStoreCounters {
        TagStoreCounters::default()
    }

    fn bookkeeping_entries(&self) -> u64 {
        0
    }

    fn check(&self) -> Vec<TagStoreViolation> {
        let Self { misuse } = self;
        let mut out = Vec::new();
        misuse.check(&mut out);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::{MockSource, block_on, record};

    #[test]
    fn nothing_can_be_reserved_and_every_counter_is_zero() {
        // docs/model.md §5: under `none` every tag_storage.* counter is 0.
        let mut m = NoTagStorage::new(record());
        let mut src = MockSource::default();
        assert_eq!(
            block_on(m.reserve(Pfn::new(0x80000), Order::new(0), &mut src)),
            Err(ReserveError::NoTagStorage)
        );
        assert_eq!(
            block_on(m.activate(Pfn::new(0x80000), &mut src)),
            Err(ReserveError::NoTagStorage)
        );
        assert!(!m.is_reserved(Pfn::new(0x80000)));
        assert_eq!(m.reserved_blocks().count(), 0);
        assert!(m.counters().list().iter().all(|&(_, v)| v == 0));
        assert!(m.check().is_empty());
        assert!(src.log.is_empty());
    }

    #[test]
    fn releasing_is_a_misuse() {
        let mut m = NoTagStorage::new(record());
        m.release(Pfn::new(0x80000), Order::new(0), &mut MockSource::default());
        assert_eq!(
            m.check(),
            [TagStoreViolation::Misuse {
                first: Misuse::ReleaseWithoutTagStorage {
                    pfn: Pfn::new(0x80000),
                    order: Order::new(0)
                },
                count: 1
            }]
        );
    }
}
