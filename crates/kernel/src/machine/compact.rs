//! Memory compaction (Linux v6.8 `mm/compaction.c`): `compact` runs a full
//! compaction of the machine's single zone, and a THP fault whose order-9
//! allocation fails runs one before falling back to 4 KiB pages (direct
//! compaction, see `huge`).
//!
//! # What it owns
//! - [`Kernel::compact_zone`] (Linux `compact_zone()`): a migrate scanner
//!   from the lowest frame up (`isolate_migratepages()`) and a free scanner
//!   from the highest frame down (`isolate_freepages()`, through
//!   `compaction_alloc()`); each page the migrate scanner isolates moves to
//!   a free frame the free scanner isolated, until the scanners meet;
//! - what may move: an allocated order-0 user page, mapped only by page
//!   entries or held by a page cache, not a kernel page (page tables, the
//!   zero pages), not pinned, not MTE-locked, not in an isolated pageblock,
//!   whose page lock is free (Linux `isolate_migratepages_block()`:
//!   `folio_trylock()` fails, `folio_maybe_dma_pinned()`, compound pages
//!   skipped when not `alloc_contig`: a page under a 2 MiB block entry stays);
//! - what is a destination: a free frame of a movable pageblock (Linux
//!   `suitable_migration_target()`), never CMA: tag storage is no place for a
//!   tagged page, and an untagged one would only have to leave again when
//!   its block is claimed for tags.
//!
//! # Tags (decision)
//! Every page moves through [`Kernel::move_page_now`] (data, tags and the
//! `Tagged` flag through `Memory::migrate_block`, mappings through the
//! rmap), with [`MigrateReason::Compaction`]. A page whose tag storage is
//! reserved gets its destination's tag storage reserved first (the RFC
//! reserves in `post_alloc_hook()` for the tagged destination); when that
//! fails the page is left where it is and the destination goes back to the
//! scanner's list: compaction is an optimisation and never makes a page
//! await tag storage. Except under `mistake=tags-by-pfn` (`rfc-v3`): the
//! series moves a tagged page without reserving its destination, the tags
//! saved by frame and the page mapped awaiting storage (`tags_by_pfn`). The reservation may sleep (`tag_blocks_lock`, a
//! claim's migrations); the page lock is held across it and the page is
//! checked again afterwards.
//!
//! # Paths in flight (decision)
//! Linux's migration backs off a page that a fault or `get_user_pages()` is
//! handling: they hold a reference (and the page-table lock), so the
//! reference count is not the expected one. The model's faults hold a
//! frame number across switch points without a reference, so a page is
//! moved only when no other CPU is inside a path holding an `mmap_lock`
//! (checked with no switch point before the rewrite); otherwise it is
//! busy and stays. Reclaim and tag storage claims lock the pages they
//! move, which compaction only tries.
//!
//! # Known shortcuts
//! - The scanners meet at a frame, not at a pageblock (Linux
//!   `compact_scanners_met()`), and a wholly free pageblock is a destination
//!   too (Linux `suitable_migration_target()` refuses a free buddy of
//!   `pageblock_order`): on the small machines of the scenarios and the
//!   fuzzer, pages then really move.
//! - Pages move one at a time (Linux isolates up to `COMPACT_CLUSTER_MAX` and
//!   calls `migrate_pages()` on the batch); no skip hints, no deferral, no
//!   `fast_isolate_freepages()`, and a full compaction always runs to the
//!   end (`compact_finished()` with `order == -1`).

use mte::Pfn;
use platform::Mistake;

use super::migrate::MigrateReason;
use super::{Kernel, PAGE_ORDER};
use crate::mm::{MapLevel, MmId};
use crate::phys::{FrameStatus, FreeList, MigrateError, PageFlag};

/// The scanners' state (Linux `struct compact_control`): the next frame
/// the migrate scanner looks at, the frame below which the free scanner
/// looks next, and the free frames it isolated and nobody used yet
/// (`cc->freepages`).
struct CompactControl {
    migrate_pfn: Pfn,
    free_pfn: Pfn,
    freepages: Vec<Pfn>,
}

impl Kernel {
    /// A full compaction of the zone (Linux `compact_node()` ->
    /// `compact_zone()` with `order == -1`, `MIGRATE_SYNC`): returns the
    /// number of pages moved.
    ///
    /// `own`: the address space whose `mmap_lock` the caller holds for
    /// reading (a THP fault's direct compaction), `None` for `compact`.
    pub(crate) async fn compact_zone(&self, own: Option<MmId>) -> u64 {
        let span = self.mem.phys().alloc.layout().span();
        let mut cc = CompactControl {
            migrate_pfn: span.start,
            free_pfn: span.end(),
            freepages: Vec::new(),
        };
        let mut moved = 0;
        // Linux compact_zone(): `while ((ret = compact_finished(cc)) ==
        // COMPACT_CONTINUE)`, each round isolating then migrating.
        while let Some(src) = self.isolate_migratepage(&mut cc) {
            // Linux compaction_alloc(): a free page from the list, refilled
            // by isolate_freepages() when empty.
            let Some(dst) = self.compaction_alloc(&mut cc, src) else {
                break;
            };
            match self.compact_page(src, dst, own).await {
                Ok(()) => moved += 1,
                // Linux compaction_free(): an unused destination goes back
                // to the list, a reserved one to the allocator.
                Err(_) if !self.mem.tag_storage_reserved(dst) => cc.freepages.push(dst),
                Err(_) => self.release_if_unused(dst).await,
            }
        }
        // Linux release_freepages().
        for pfn in cc.freepages {
            super::free_unreserved(&self.mem, pfn);
        }
        moved
    }

    /// Linux `isolate_migratepages()`: the next page at or above the
    /// migrate scanner that compaction may move, below the free scanner;
    /// `None` when the scanners met.
    fn isolate_migratepage(&self, cc: &mut CompactControl) -> Option<Pfn> {
        while cc.migrate_pfn < cc.free_pfn {
            let pfn = cc.migrate_pfn;
            let next = {
                let phys = self.mem.phys();
                match phys.alloc.frame_status(pfn) {
                    Some(FrameStatus::Allocated { head, order, .. }) => head + order.pages(),
                    Some(
                        FrameStatus::Free { head, order, .. }
                        | FrameStatus::PcpFree { head, order, .. },
                    ) => head + order.pages(),
                    Some(FrameStatus::Claimed) => pfn + 1,
                    // A carved-out region holds nothing to move: past it.
                    Some(FrameStatus::CarvedOut) => phys
                        .alloc
                        .layout()
                        .region_of(pfn)
                        .filter(|r| !r.kind.is_allocatable())
                        .map_or(pfn + 1, |r| r.range.end()),
                    None => {
                        // A hole: on to the next region.
                        let regions = phys.alloc.layout().regions();
                        let i = regions.partition_point(|r| r.range.end() <= pfn);
                        regions.get(i).map_or(cc.free_pfn, |r| r.range.start)
                    }
                }
            };
            cc.migrate_pfn = next.max(pfn + 1);
            if self.compactable(pfn) {
                return Some(pfn);
            }
        }
        None
    }

    /// Whether compaction may move `pfn` now (see the module doc).
    fn compactable(&self, pfn: Pfn) -> bool {
        if pfn == self.mem.zero_page() || self.huge_zero.get() == Some(pfn) {
            return false;
        }
        {
            let phys = self.mem.phys();
            match phys.alloc.frame_status(pfn) {
                Some(FrameStatus::Allocated { head, order, .. })
                    if head == pfn && order == PAGE_ORDER => {}
                _ => return false,
            }
            if phys.alloc.pageblock(pfn).is_none_or(|b| b.isolated) {
                return false;
            }
            let Some(meta) = phys.alloc.frame(pfn) else {
                return false;
            };
            if meta.flags.contains(PageFlag::Kernel)
                || meta.flags.contains(PageFlag::MteLock)
                || meta.is_pinned()
            {
                return false;
            }
        }
        let rmap = self.rmap.borrow();
        let mappings = rmap.mappings(pfn);
        // A THP's frames: its head is keyed by block entries, its other
        // frames by nothing (they are not pages an rmap walk finds).
        if mappings.iter().any(|e| e.level != MapLevel::Pte) {
            return false;
        }
        !mappings.is_empty()
            || self.cache_owner.borrow().contains_key(&pfn)
            || self.swap_cache_slot.borrow().contains_key(&pfn)
    }

    /// Linux `compaction_alloc()`: a destination above `src` from the list
    /// of isolated free frames, else from [`Self::isolate_freepage`].
    fn compaction_alloc(&self, cc: &mut CompactControl, src: Pfn) -> Option<Pfn> {
        if let Some(pfn) = cc.freepages.pop() {
            return Some(pfn);
        }
        self.isolate_freepage(cc, src)
    }

    /// Linux `isolate_freepages()`: walks down from the free scanner to just
    /// above `src` and isolates the first free frame of a movable pageblock
    /// ([`crate::mem::Memory::take_free_frame`]). `None` when the scanners
    /// met.
    fn isolate_freepage(&self, cc: &mut CompactControl, src: Pfn) -> Option<Pfn> {
        while cc.free_pfn > src + 1 {
            let pfn = Pfn::new(cc.free_pfn.as_u64() - 1);
            let below = {
                let phys = self.mem.phys();
                match phys.alloc.frame_status(pfn) {
                    // Linux suitable_migration_target(): a movable pageblock.
                    Some(FrameStatus::Free {
                        list: FreeList::Movable,
                        ..
                    }) => None,
                    // A block on a per-CPU list is not PageBuddy: skipped.
                    Some(
                        FrameStatus::Free { head, .. }
                        | FrameStatus::Allocated { head, .. }
                        | FrameStatus::PcpFree { head, .. },
                    ) => Some(head),
                    Some(FrameStatus::Claimed) => Some(pfn),
                    // A carved-out region has no free frame: below it.
                    Some(FrameStatus::CarvedOut) => Some(
                        phys.alloc
                            .layout()
                            .region_of(pfn)
                            .filter(|r| !r.kind.is_allocatable())
                            .map_or(pfn, |r| r.range.start.max(src + 1)),
                    ),
                    None => {
                        // A hole: down to the end of the region below.
                        let regions = phys.alloc.layout().regions();
                        let i = regions.partition_point(|r| r.range.end() <= pfn);
                        Some(match i.checked_sub(1).map(|j| regions[j].range.end()) {
                            Some(end) if end > src => end,
                            _ => src + 1,
                        })
                    }
                }
            };
            cc.free_pfn = below.map_or(pfn, |next| next.min(pfn));
            if below.is_none() && self.mem.take_free_frame(pfn) {
                return Some(pfn);
            }
        }
        None
    }

    /// Moves `src` into the isolated free frame `dst` (Linux
    /// `migrate_pages(..., MR_COMPACTION)` for one folio): the page lock is
    /// tried, never waited for; a page with reserved tag storage gets its
    /// destination's reserved first. On an error nothing moved and `dst` is
    /// the caller's.
    async fn compact_page(
        &self,
        src: Pfn,
        dst: Pfn,
        own: Option<MmId>,
    ) -> Result<(), MigrateError> {
        // `mistake=migration-race` (found in the RFC v1 review,
        // docs/designs.md "Known mistakes"): RFC v1 chose the destination's
        // kind when it allocated it (get_new_folio(), before the source is
        // locked), from the source as it was then: untagged, nothing to
        // reserve. The copy below still copies tags whenever the source is
        // tagged when it runs, so an mprotect(PROT_MTE) and an access on
        // another CPU in between write tags into the destination's lent tag
        // storage (invariant 8). The design decides under the page lock.
        let decided_early = self
            .platform
            .settings()
            .mistakes
            .contains(Mistake::MigrationRace)
            .then(|| self.mem.tag_storage_reserved(src));
        let Some(guard) = self.page_locks.try_lock(src).await else {
            return Err(MigrateError::Busy);
        };
        // try_lock() is a switch point: still a page compaction may move?
        if !self.compactable(src) {
            return Err(MigrateError::Busy);
        }
        let reserved = decided_early.unwrap_or_else(|| self.mem.tag_storage_reserved(src));
        // `mistake=tags-by-pfn` (RFC v3 as posted, `tags_by_pfn`): the
        // destination is not reserved; the page moves awaiting storage.
        let awaiting = reserved && self.compact_awaiting(src);
        if reserved && !awaiting {
            self.mem
                .reserve_tag_storage(dst, PAGE_ORDER, &mut self.mover())
                .await
                .map_err(|_| MigrateError::NoMemory)?;
            // The reservation may have slept.
            if !self.compactable(src) {
                return Err(MigrateError::Busy);
            }
        }
        // No switch point from here to the rewrite.
        if !self.no_mm_path_in_flight(own) {
            return Err(MigrateError::Busy);
        }
        // Still only tagged page entries map it (the checks above slept)?
        if awaiting && !self.compact_awaiting(src) {
            return Err(MigrateError::Busy);
        }
        let saved = awaiting.then(|| self.take_tags_for_migration(src));
        self.move_page_now(src, dst, MigrateReason::Compaction);
        if let Some(tags) = saved {
            self.await_tag_storage_after_migration(dst, tags);
        }
        // The source's own state (the same as `reserved` unless the
        // destination was decided early).
        if self.mem.tag_storage_reserved(src) {
            // The source's block reference goes (may take tag_blocks_lock).
            self.mem
                .free(src, PAGE_ORDER)
                .await
                .unwrap_or_else(|e| panic!("BUG: freeing compacted {src}: {e}"));
        } else {
            super::free_unreserved(&self.mem, src);
        }
        drop(guard);
        Ok(())
    }

    /// Whether no other CPU is inside a path that holds an `mmap_lock`
    /// (faults, pins, ptrace and kernel copies, mm system calls, fork,
    /// exit): `own`'s lock may be held for reading once, by the caller.
    /// Such paths carry frame numbers across switch points without the
    /// page reference and page-table lock that make Linux's migration of
    /// the same page back off (`folio_migrate_mapping()`: the reference
    /// count is not the expected one), so compaction backs off (`-EAGAIN`)
    /// while one runs.
    fn no_mm_path_in_flight(&self, own: Option<MmId>) -> bool {
        self.mms.borrow().iter().all(|(id, m)| {
            let allowed = u32::from(own == Some(*id));
            m.lock.writer().is_none() && m.lock.readers() <= allowed
        })
    }
}
