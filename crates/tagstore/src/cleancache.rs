//! Design `cleancache`: tag storage as a cleancache, the replacement the
//! RFC's author proposed for the MIGRATE_CMA approach (Alexandru Elisei,
//! "arm64 MTE tag storage reuse - alternatives to MIGRATE_CMA",
//! linux-arch / linux-mm, February 2024).
//!
//! The thread's idea: tag storage pages are never given to the page
//! allocator, so nothing the allocator hands out can ever need migrating
//! out of tag storage; instead, while a tag block holds no tags, its pages
//! serve as a cleancache: they hold clean copies of page-cache pages that
//! reclaim evicted (data that also exists in the file, so losing it costs
//! a read, never data). Reserving a block drops the clean copies it holds:
//! no migration, nothing to wait for, nothing that can fail, so a
//! reservation may happen where sleeping is forbidden (the RFC v3 blocker
//! was an allocation in atomic context; HW KASAN needs exactly this).
//!
//! # What this module decides
//! - [`Rules`]: storage [`Storage::Cleancache`] (the kernel lays tag
//!   storage out as never-free frames and offers reclaimed clean file
//!   pages to the unreserved blocks), `reserve_in_atomic` (the kernel
//!   reserves in `set_pte_at()` instead of mapping pages awaiting tag
//!   storage).
//! - The block bookkeeping is the RFC's: a block is reserved when the first
//!   tagged frame it covers needs it and given back when the last goes,
//!   with per-block reference counts ([`DynamicTagStorage`]). What differs
//!   is what a claim is: the kernel's [`crate::BlockSource`] for this
//!   design drops the block's cleancache copies and never fails, and a
//!   release returns the block's frames to the cleancache instead of to
//!   the page allocator. [`crate::BlockState::Lent`] therefore means "lent
//!   to the cleancache" here.
//!
//! The kernel side (the copies, their frames, reads back on a fault,
//! `cleancache.*` counters) is `kernel::mem::cleancache`; reclaim of file
//! pages is `kernel::machine::reclaim`.

use crate::DynamicTagStorage;
use crate::design::{DesignEntry, OnReserveFailure, ReserveAt, Rules, Storage, TaggedPlacement};

/// `cleancache` in the design registry.
pub(crate) const DESIGN: DesignEntry = DesignEntry::new(
    "cleancache",
    "tag storage never lent to the allocator; unreserved blocks cache clean page-cache pages (Feb 2024 proposal)",
    Rules {
        storage: Storage::Cleancache,
        // A claim only drops clean copies: it never sleeps and never fails.
        reserve_in_atomic: true,
        // Never taken (a reservation cannot fail); kept for the contract.
        on_reserve_failure: OnReserveFailure::MigrateFaultingPage,
        tagged_placement: TaggedPlacement::Anywhere,
        reserve_at: ReserveAt::AfterAllocation,
    },
    |geometry, config| Box::new(DynamicTagStorage::new(geometry, config)),
);

#[cfg(test)]
mod tests {
    use crate::testutil::{BASE, MockSource, block_on, machine, record};
    use crate::{BlockState, Design};
    use mte::{Order, Pfn, TagBlock};

    #[test]
    fn cleancache_reserves_in_atomic_and_never_lends_to_the_allocator() {
        let d = Design::by_name("cleancache").unwrap();
        let rules = d.rules();
        assert!(rules.mte() && rules.reserve_in_atomic);
        assert!(!rules.lends_storage() && rules.keeps_cleancache());
        // Blocks are claimed from the source (which drops copies) and
        // given back when their last frame goes.
        let g = machine(64 << 10);
        let mut src = MockSource::default();
        let mut m = d.build(&g, record());
        block_on(m.activate(Pfn::new(BASE), &mut src)).unwrap();
        let frame = Pfn::new(BASE + 512);
        block_on(m.reserve(frame, Order::new(0), &mut src)).unwrap();
        assert_eq!(src.claimed.len(), 2);
        m.release(frame, Order::new(0), &mut src);
        assert_eq!(m.block_state(TagBlock::new(1)), BlockState::Lent);
        assert!(m.check().is_empty());
    }
}
