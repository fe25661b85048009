//! The counters of `docs/model.md` §5 that concern memory and tag
//! storage, as one exact snapshot ([`MemCounters`]).
//!
//! Sources, all O(1) to read: the allocator's own counters (`mem.*`,
//! `tag_storage.data_pages`), the geometry (`tag_storage.pages`), the
//! manager's counters (`tag_storage.blocks`, `.reserved`, `.reservations`,
//! `.releases`, `.reserve_failures`; a shadow copy refreshed under the lock,
//! so reading never waits for a reservation), and this layer's events
//! (`tag_storage.migrations`, `migrate.pages`, `pages.tagged`).
//!
//! Per policy: under `static` no tag storage page is ever free or holds data
//! (`mem.free` counts DRAM only, `tag_storage.data_pages` is 0, every block is
//! reserved); under `none` every `tag_storage.*` counter is 0.

use super::Memory;
use uapi::Counter;

/// One snapshot of the memory counters.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct MemCounters {
    /// `mem.pages`: ordinary DRAM pages.
    pub mem_pages: u64,
    /// `mem.free`: free pages usable for data, tag storage (CMA) included;
    /// pages of pageblocks isolated by a claim in progress are not usable.
    pub mem_free: u64,
    /// `tag_storage.pages`.
    pub tag_storage_pages: u64,
    /// `tag_storage.blocks`.
    pub tag_storage_blocks: u64,
    /// `tag_storage.reserved`: blocks reserved now.
    pub tag_storage_reserved: u64,
    /// `tag_storage.data_pages`: tag storage pages holding data now.
    pub tag_storage_data_pages: u64,
    /// `tag_storage.reservations`: blocks reserved so far.
    pub tag_storage_reservations: u64,
    /// `tag_storage.releases`: blocks released so far.
    pub tag_storage_releases: u64,
    /// `tag_storage.migrations`: pages moved out of tag storage so far.
    pub tag_storage_migrations: u64,
    /// `tag_storage.reserve_failures`: reservations that failed so far.
    pub tag_storage_reserve_failures: u64,
    /// `pages.tagged`: allocated frames marked tagged now (the zero page
    /// included).
    pub pages_tagged: u64,
    /// `migrate.pages`: pages migrated so far, for any reason.
    pub migrate_pages: u64,
    /// `tag_storage.fast_path`: block claims that took a free one-page
    /// block straight off the buddy allocator (`reserve-fast-path=on`).
    pub tag_storage_fast_path: u64,
    /// `tag_storage.contig`: block claims that went through
    /// `alloc_contig_range()` (isolate, migrate, take), failed ones too.
    pub tag_storage_contig: u64,
}

impl MemCounters {
    /// The counters this layer keeps, with their names.
    pub fn list(&self) -> [(Counter, u64); 14] {
        let Self {
            mem_pages,
            mem_free,
            tag_storage_pages,
            tag_storage_blocks,
            tag_storage_reserved,
            tag_storage_data_pages,
            tag_storage_reservations,
            tag_storage_releases,
            tag_storage_migrations,
            tag_storage_reserve_failures,
            pages_tagged,
            migrate_pages,
            tag_storage_fast_path,
            tag_storage_contig,
        } = *self;
        [
            (Counter::MemPages, mem_pages),
            (Counter::MemFree, mem_free),
            (Counter::TagStoragePages, tag_storage_pages),
            (Counter::TagStorageBlocks, tag_storage_blocks),
            (Counter::TagStorageReserved, tag_storage_reserved),
            (Counter::TagStorageDataPages, tag_storage_data_pages),
            (Counter::TagStorageReservations, tag_storage_reservations),
            (Counter::TagStorageReleases, tag_storage_releases),
            (Counter::TagStorageMigrations, tag_storage_migrations),
            (
                Counter::TagStorageReserveFailures,
                tag_storage_reserve_failures,
            ),
            (Counter::PagesTagged, pages_tagged),
            (Counter::MigratePages, migrate_pages),
            (Counter::TagStorageFastPath, tag_storage_fast_path),
            (Counter::TagStorageContig, tag_storage_contig),
        ]
    }

    /// The value of `counter`, or `None` if another layer keeps it.
    pub fn get(&self, counter: Counter) -> Option<u64> {
        match counter {
            Counter::MemPages => Some(self.mem_pages),
            Counter::MemFree => Some(self.mem_free),
            Counter::TagStoragePages => Some(self.tag_storage_pages),
            Counter::TagStorageBlocks => Some(self.tag_storage_blocks),
            Counter::TagStorageReserved => Some(self.tag_storage_reserved),
            Counter::TagStorageDataPages => Some(self.tag_storage_data_pages),
            Counter::TagStorageReservations => Some(self.tag_storage_reservations),
            Counter::TagStorageReleases => Some(self.tag_storage_releases),
            Counter::TagStorageMigrations => Some(self.tag_storage_migrations),
            Counter::TagStorageReserveFailures => Some(self.tag_storage_reserve_failures),
            Counter::PagesTagged => Some(self.pages_tagged),
            Counter::MigratePages => Some(self.migrate_pages),
            Counter::TagStorageFastPath => Some(self.tag_storage_fast_path),
            Counter::TagStorageContig => Some(self.tag_storage_contig),
            Counter::FaultAnon
            | Counter::FaultZeroPage
            | Counter::FaultCow
            | Counter::FaultTagStorage
            | Counter::FaultStuck
            | Counter::SwapOut
            | Counter::SwapIn
            | Counter::SwapSavedTags
            | Counter::KsmMerged
            | Counter::KsmSharing
            | Counter::KsmSaved
            | Counter::KernelWarn
            | Counter::KernelWarnRestoreTagsForPfn
            | Counter::KernelWarnTagClearHighpage
            | Counter::TcfSync
            | Counter::TcfAsync
            | Counter::CostTotal
            | Counter::CostFault
            | Counter::CostTagInit
            | Counter::CostCopy
            | Counter::CostReserve
            | Counter::CostContig
            | Counter::CostLruIpi
            | Counter::CostCacheMaint
            | Counter::CostMigration
            | Counter::CostSplit
            | Counter::CostSwap
            | Counter::FileWriteback
            | Counter::FileDropped
            | Counter::FileReads
            | Counter::ReclaimDirect
            | Counter::CleancachePuts
            | Counter::CleancacheHits
            | Counter::CleancacheDrops
            | Counter::Oom
            | Counter::MthpAnonFaultAlloc16K
            | Counter::MthpAnonFaultFallback16K
            | Counter::MthpAnonFaultAlloc32K
            | Counter::MthpAnonFaultFallback32K
            | Counter::MthpAnonFaultAlloc64K
            | Counter::MthpAnonFaultFallback64K
            | Counter::MthpAnonFaultAlloc128K
            | Counter::MthpAnonFaultFallback128K
            | Counter::MthpAnonFaultAlloc256K
            | Counter::MthpAnonFaultFallback256K
            | Counter::MthpAnonFaultAlloc512K
            | Counter::MthpAnonFaultFallback512K
            | Counter::MthpAnonFaultAlloc1M
            | Counter::MthpAnonFaultFallback1M => None,
        }
    }
}

impl Memory {
    /// The counters now.
    pub fn counters(&self) -> MemCounters {
        let phys = self.phys.borrow().stats();
        let tags = self.tag_counters.get();
        let events = self.events.get();
        MemCounters {
            mem_pages: phys.dram_pages,
            mem_free: phys.free_pages,
            tag_storage_pages: self.geometry.tag_storage_pages(),
            tag_storage_blocks: tags.blocks,
            tag_storage_reserved: tags.reserved,
            // Lent to the allocator (CMA data pages), or to the cleancache.
            tag_storage_data_pages: phys.cma_data_pages + self.cleancache.borrow().len(),
            tag_storage_reservations: tags.reservations,
            tag_storage_releases: tags.releases,
            tag_storage_migrations: events.tag_storage_migrations,
            tag_storage_reserve_failures: tags.reserve_failures,
            pages_tagged: events.pages_tagged,
            migrate_pages: events.migrate_pages,
            tag_storage_fast_path: events.tag_storage_fast_path,
            tag_storage_contig: events.tag_storage_contig,
        }
    }
}
