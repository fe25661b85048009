//! Physical memory: the frames of the machine, what they hold, and who has
//! them (`docs/model.md` §2 "Physical memory").
//!
//! Owns, module by module:
//! - [`layout`]: the validated input: buddy geometry and the memory regions
//!   (DRAM, tag storage as CMA, carved-out tag storage), and [`CmaUse`].
//! - [`frame`]: per-frame metadata (`struct page`) in sparse sections.
//! - [`mem`]: the bytes of every frame, sparse, with stable buffer handles.
//! - [`buddy`]: the buddy allocator with pageblocks, migrate types and CMA.
//! - [`pcp`]: the per-CPU page lists in front of it (`pcp=on`).
//! - [`isolate`]: page isolation and contiguous claims (`mm/page_isolation.c`).
//! - [`contig`]: `alloc_contig_range()` as an `async` function over a
//!   [`contig::Migrator`].
//! - [`check`]: the invariant checker and its [`PhysViolation`]s.
//!
//! [`PhysMem`] bundles the allocator and the contents of one machine; the
//! kernel keeps it in a `RefCell` so that migration (async, interleavable) can
//! borrow it between steps. Nothing here is global: two machines can live in
//! one process.
//!
//! Host cost: metadata is allocated per section of 2^15 frames on first use,
//! free blocks are kept as runs of consecutive blocks, so a freshly booted
//! 1 TiB machine costs about one megabyte (mostly the pageblock table), and
//! memory grows with the frames in use.

pub mod buddy;
pub mod check;
mod chunks;
pub mod contig;
pub(crate) mod dirty;
pub mod frame;
pub(crate) mod incremental;
pub mod isolate;
pub mod layout;
pub mod mem;
#[cfg(test)]
mod model_tests;
pub mod pcp;
pub(crate) mod records;
mod runs;
mod sparse;

pub use buddy::{
    AllocError, AllocFlags, BadPage, BuddyAllocator, FrameAccessError, FrameStatus, FreeError,
    FreeList, FreeListOrder, Pageblock, PhysStats,
};
pub use check::{PhysCounter, PhysViolation};
pub use contig::{
    BusyCause, ContigError, MIGRATE_TRIES, MigrateError, Migrator, alloc_contig_range,
};
pub use frame::{FrameFlags, FrameMeta, FrameState, FrameTable, MigrateType, Owner, PageFlag};
pub use isolate::{
    ClaimError, ClaimedRange, InUseFrame, IsolateError, IsolatedRange, RangeError, UnmovableCause,
};
pub use layout::{CmaUse, LayoutError, Order, PhysGeometry, PhysLayout, Region, RegionKind};
pub(crate) use mem::ContentsCheckCache;
pub use mem::{Epoch, MemError, PageBuf, PageSlot, PageView, PhysContents, copy_into};
pub use pcp::PcpParams;

/// The physical memory of one machine: the page allocator (with the frame
/// metadata) and the contents of every frame.
#[derive(Clone, Debug)]
pub struct PhysMem {
    pub alloc: BuddyAllocator,
    pub contents: PhysContents,
}

impl PhysMem {
    /// A freshly booted machine: every DRAM and CMA frame free, all zero.
    pub fn new(layout: PhysLayout, cma_use: CmaUse) -> Self {
        Self {
            contents: PhysContents::new(layout.clone()),
            alloc: BuddyAllocator::new(layout, cma_use),
        }
    }

    pub fn stats(&self) -> PhysStats {
        self.alloc.stats()
    }

    /// Every broken invariant of the allocator and the contents.
    pub fn check(&self) -> Vec<PhysViolation> {
        let Self { alloc, contents } = self;
        let mut out = alloc.check();
        out.extend(contents.check());
        out
    }

    /// Host bytes used by the model of this machine's memory.
    pub fn host_bytes(&self) -> usize {
        self.alloc.host_bytes() + self.contents.host_bytes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::phys::buddy::tests::region;
    use mte::Pfn;

    /// 1 TiB of DRAM from 2 GiB (pfn 0x80000) and 32 GiB of CMA after it,
    /// with Linux arm64 4K geometry.
    fn terabyte() -> PhysLayout {
        let g =
            PhysGeometry::new(mte::PageGeometry::FOUR_K, Order::new(9), Order::new(10)).unwrap();
        let dram = 1u64 << 28;
        PhysLayout::new(
            g,
            vec![
                region(0x80000, dram, RegionKind::Dram),
                region(0x80000 + dram, 1 << 23, RegionKind::TagStorageCma),
            ],
        )
        .unwrap()
    }

    #[test]
    fn a_terabyte_machine_costs_host_memory_in_proportion_to_use() {
        let mut phys = PhysMem::new(terabyte(), CmaUse::Balance);
        let s = phys.stats();
        assert_eq!(s.dram_pages, 1 << 28);
        assert_eq!(s.free_pages, (1 << 28) + (1 << 23));
        // 2^28 / 2^10 max-order blocks, all stored as one run.
        assert_eq!(
            phys.alloc.free_blocks(Order::new(10), FreeList::Movable),
            1 << 18
        );
        assert_eq!(
            phys.alloc.free_blocks(Order::new(10), FreeList::Cma),
            1 << 13
        );
        let booted = phys.host_bytes();
        assert!(booted < 2 << 20, "boot costs {booted} bytes");
        // Using one page materialises one section of metadata (2^15 frames
        // of 32 bytes at most: 1 MiB), not the machine.
        let pfn = phys.alloc.alloc(Order::new(0), AllocFlags::USER).unwrap();
        assert_eq!(pfn, Pfn::new(0x80000));
        phys.contents.write_u64(pfn.addr(12), 1).unwrap();
        let used = phys.host_bytes() - booted;
        assert!(
            used <= (1 << 20) + (1 << 17) + 8192,
            "one page cost {used} bytes"
        );
        assert!(phys.check().is_empty());
    }

    #[test]
    fn same_operations_give_the_same_frames() {
        let ops = |phys: &mut PhysMem| -> Vec<Pfn> {
            let mut got = Vec::new();
            for i in 0..64u8 {
                let flags = match i % 3 {
                    0 => AllocFlags::KERNEL,
                    1 => AllocFlags::USER,
                    _ => AllocFlags::USER_TAGGED,
                };
                let pfn = phys.alloc.alloc(Order::new(i % 4), flags).unwrap();
                got.push(pfn);
                if i % 5 == 0 {
                    phys.alloc.free(pfn, Order::new(i % 4)).unwrap();
                }
            }
            got
        };
        let layout = terabyte();
        let mut a = PhysMem::new(layout.clone(), CmaUse::Prefer);
        let mut b = PhysMem::new(layout, CmaUse::Prefer);
        let first = ops(&mut a);
        assert_eq!(first, ops(&mut b));
        // Prefer put the movable untagged pages in CMA, the others in DRAM.
        let cma_start = Pfn::new(0x80000 + (1 << 28));
        assert!(first[1] >= cma_start && first[0] < cma_start && first[2] < cma_start);
    }
}
