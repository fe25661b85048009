//! Page reclaim over the LRU lists (Linux v6.8 `mm/vmscan.c`, classic
//! two-list LRU; `lru_gen` is not used), file page writeback and
//! read-back, and direct reclaim from allocations that find no free page.
//!
//! # Referenced bits
//! A page's mappings carry the access flag (`PTE_AF`, `young`): set when
//! the entry is written (arm64 maps pages young) and by the hardware walk
//! of a TLB miss that finds it clear (`access::translate_page`, the
//! ARMv8.1 hardware AF update). Reclaim tests and clears it through the
//! rmap (`folio_referenced()` -> `ptep_clear_flush_young()`) and flushes
//! the TLB entry, so the next access walks and sets it again: a TLB hit
//! never touches the LRU. `PG_referenced` is kept on the LRU ([`Lru`]).
//!
//! # `reclaim PAGES` and direct reclaim ([`Kernel::reclaim`])
//! `try_to_free_pages()` -> `do_try_to_free_pages()`: priorities from
//! [`DEF_PRIORITY`] down to 0; at each, `shrink_lruvec()` scans
//! `size >> priority` pages of each evictable list, anonymous lists first
//! (`for_each_evictable_lru()` order), the anonymous ones only when swap
//! has a free slot (`can_reclaim_anon_pages()`):
//! - `shrink_active_list()` when the inactive list is low
//!   (`inactive_is_low()`, ratio 1 at the model's sizes): the oldest
//!   active pages have their young bits cleared and move to the inactive
//!   list, except referenced file pages of executable mappings, which
//!   rotate;
//! - `shrink_inactive_list()` -> `shrink_folio_list()` on the oldest
//!   inactive pages, after `folio_check_references()`: referenced by two
//!   or more entries, or again after `PG_referenced` was set, activates;
//!   referenced once keeps (rotates with `PG_referenced` set, the second
//!   chance); otherwise the page is reclaimed: an anonymous page is added
//!   to swap (`add_to_swap()`, its tags saved; a page in the swap cache
//!   already has its slot) and every mapping becomes a swap entry
//!   (`try_to_unmap()`); a file page is unmapped, written back first when
//!   dirty (`pageout()`: `folio_clear_dirty_for_io()` write-protects its
//!   entries, the data goes to the file; `file.writeback`), and dropped
//!   from its page cache (`__remove_mapping()`; `file.dropped`), handing a
//!   copy to the design's cleancache if it keeps one. Pinned pages
//!   activate, locked ones are kept.
//!
//! `reclaim PAGES` repeats `try_to_free_pages()` until `PAGES` pages are
//! reclaimed, a round changes nothing, or [`MAX_RECLAIM_RETRIES`] rounds
//! ran (the allocator's `should_reclaim_retry()` bound).
//!
//! Direct reclaim ([`Kernel::alloc_reclaiming`], Linux
//! `__alloc_pages_slowpath()` -> `__alloc_pages_direct_reclaim()`): an
//! allocation of a user page that finds no free page reclaims
//! [`SWAP_CLUSTER_MAX`] pages and tries again, while reclaim makes
//! progress; only when nothing can be reclaimed does it fail (out of
//! memory: the fault's outcome as before). The allocations that do so are
//! the user pages of faults: anonymous and page-cache pages, swap-in
//! pages, copy-on-write copies. **Simplification:** page-table frames and
//! the destination of the tag storage fault's migration do not reclaim
//! (Linux's do), so out of memory there stays what it was; reclaiming
//! there would evict the very page the tag storage fault is mapping.
//!
//! # Dirty tracking of file pages
//! A shared file mapping is write-notify (`vma_wants_writenotify()`): a
//! read fault maps the page read-only, the first write takes a write
//! fault that marks the page dirty (`fault_dirty_shared_page()`) and maps
//! it writable; writeback write-protects every entry again
//! (`folio_mkclean()`). So a writable entry of a file page always means a
//! dirty page (the checker tests it), and writes through the TLB need no
//! tracking. Private file mappings never write the file (their writes
//! copy).
//!
//! **Simplifications:** no `get_scan_count()` balancing by swappiness
//! (every evictable list is scanned `size >> priority`); writeback is
//! synchronous, so a written page is dropped in the same pass (Linux
//! rotates it and frees it when the write completes); shmem and tmpfs
//! pages are unevictable (shmem swap is not modelled); no workingset
//! refault detection (a page read back starts inactive); no kswapd.

use mte::Pfn;
use uapi::event::SplitReason;

use super::lru::{LruList, LruPlace};
use super::swapping::PageoutResult;
use super::{Kernel, ObjectKind};
use crate::mm::{ObjectId, Pgoff, Pte, VmFlags};

/// Linux `DEF_PRIORITY`: the first pass scans `size >> 12` of each list.
pub(crate) const DEF_PRIORITY: u32 = 12;
/// Linux `SWAP_CLUSTER_MAX`: pages direct reclaim aims at per attempt.
pub(crate) const SWAP_CLUSTER_MAX: u64 = 32;
/// Linux `MAX_RECLAIM_RETRIES`.
pub(crate) const MAX_RECLAIM_RETRIES: u32 = 16;

/// Linux `enum folio_references`.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum FolioRef {
    Reclaim,
    ReclaimClean,
    Keep,
    Activate,
}

/// What one round of scanning did.
#[derive(Clone, Copy, Default, Debug)]
struct Scan {
    reclaimed: u64,
    /// Anything changed (a young bit cleared, a page moved between lists):
    /// another round may reclaim what this one could not.
    changed: bool,
}

impl Kernel {
    /// The list a new user page starts on (`folio_add_lru()`: inactive).
    fn lru_list_for(&self, pfn: Pfn) -> LruList {
        match self.cache_owner.borrow().get(&pfn) {
            None => LruList::InactiveAnon,
            Some((object, _)) => match self.objects.borrow().get(object).map(|o| o.kind) {
                Some(ObjectKind::File) => LruList::InactiveFile,
                _ => LruList::Unevictable,
            },
        }
    }

    /// Linux `folio_add_lru()`: a user page joins its inactive list unless
    /// it is on one already.
    pub(crate) fn lru_add(&self, pfn: Pfn) {
        if self.lru.borrow().place(pfn).is_some() {
            return;
        }
        let list = self.lru_list_for(pfn);
        self.lru.borrow_mut().add(pfn, list);
    }

    /// Linux `folio_referenced()`: how many entries mapping `pfn` had the
    /// access flag, each cleared and its TLB entry flushed
    /// (`ptep_clear_flush_young()`), and the union of their VMA flags.
    fn folio_referenced(&self, pfn: Pfn) -> (usize, VmFlags) {
        let entries = self.rmap.borrow().mappings(pfn).to_vec();
        let mut referenced = 0;
        let mut flags = VmFlags::NONE;
        let mut mms = self.mms.borrow_mut();
        for e in entries {
            let Some(m) = mms.get_mut(&e.mm) else {
                continue;
            };
            if let Some(vma) = m.vmas.find(e.va) {
                flags |= vma.flags;
            }
            if m.pt.set_young(e.va, false) == Some(true) {
                referenced += 1;
                m.tlb.invalidate(e.va);
            }
        }
        (referenced, flags)
    }

    /// Linux `folio_check_references()`.
    fn folio_check_references(&self, pfn: Pfn, file: bool, scan: &mut Scan) -> FolioRef {
        let (referenced_ptes, flags) = self.folio_referenced(pfn);
        let referenced_folio = self.lru.borrow_mut().test_clear_referenced(pfn);
        if referenced_ptes > 0 {
            // Young bits cleared: the next scan sees this page differently.
            scan.changed = true;
            self.lru.borrow_mut().set_referenced(pfn);
            if referenced_folio || referenced_ptes > 1 {
                return FolioRef::Activate;
            }
            if flags.contains(VmFlags::EXEC) && file {
                return FolioRef::Activate;
            }
            return FolioRef::Keep;
        }
        if referenced_folio && file {
            return FolioRef::ReclaimClean;
        }
        FolioRef::Reclaim
    }

    /// Whether anonymous pages can be reclaimed now
    /// (`can_reclaim_anon_pages()`: a free swap slot).
    fn can_reclaim_anon(&self) -> bool {
        let swap = self.swap.borrow();
        (swap.used() as u64) < swap.slots()
    }

    /// `reclaim PAGES` (Linux `try_to_free_pages()`, see the module doc):
    /// how many pages were reclaimed.
    pub(crate) async fn reclaim(&self, pages: u64) -> u64 {
        let mut done = 0;
        for _ in 0..MAX_RECLAIM_RETRIES {
            if done >= pages {
                break;
            }
            let scan = self.try_to_free_pages(pages - done).await;
            done += scan.reclaimed;
            if scan.reclaimed == 0 && !scan.changed {
                break;
            }
        }
        done
    }

    /// Linux `do_try_to_free_pages()`: one round of priorities.
    async fn try_to_free_pages(&self, target: u64) -> Scan {
        let mut scan = Scan::default();
        for priority in (0..=DEF_PRIORITY).rev() {
            for (inactive, active) in [
                (LruList::InactiveAnon, LruList::ActiveAnon),
                (LruList::InactiveFile, LruList::ActiveFile),
            ] {
                if scan.reclaimed >= target {
                    return scan;
                }
                if !inactive.is_file() && !self.can_reclaim_anon() {
                    continue;
                }
                let (n_inactive, n_active) = {
                    let lru = self.lru.borrow();
                    (lru.len(inactive), lru.len(active))
                };
                let active_scan = (n_active as u64) >> priority;
                // inactive_is_low(): inactive_ratio 1 below 1 GiB.
                if active_scan > 0 && n_inactive < n_active {
                    self.shrink_active_list(active, active_scan, &mut scan);
                }
                let inactive_scan = ((self.lru.borrow().len(inactive) as u64) >> priority)
                    .min(target - scan.reclaimed);
                self.shrink_inactive_list(inactive, inactive_scan, &mut scan)
                    .await;
            }
        }
        scan
    }

    /// Linux `shrink_active_list()`: `nr` of the oldest active pages are
    /// deactivated (young bits cleared), referenced executable file pages
    /// rotate.
    fn shrink_active_list(&self, active: LruList, nr: u64, scan: &mut Scan) {
        for _ in 0..nr {
            let Some(pfn) = self.lru.borrow_mut().isolate_oldest(active) else {
                return;
            };
            let (referenced, flags) = self.folio_referenced(pfn);
            scan.changed = true;
            let list = if referenced > 0 && active.is_file() && flags.contains(VmFlags::EXEC) {
                active
            } else {
                active.inactive()
            };
            self.lru.borrow_mut().putback(pfn, list);
        }
    }

    /// Linux `shrink_inactive_list()` -> `shrink_folio_list()` on up to
    /// `nr` of the oldest inactive pages.
    async fn shrink_inactive_list(&self, inactive: LruList, nr: u64, scan: &mut Scan) {
        for _ in 0..nr {
            // Linux: cond_resched() in the shrink loop.
            self.sched.preempt_point().await;
            let Some(pfn) = self.lru.borrow_mut().isolate_oldest(inactive) else {
                return;
            };
            let back = self.shrink_folio(pfn, inactive.is_file(), scan).await;
            match back {
                None => scan.reclaimed += 1,
                Some(list) => {
                    if list != inactive {
                        scan.changed = true;
                    }
                    self.lru.borrow_mut().putback(pfn, list);
                }
            }
        }
    }

    /// One page of `shrink_folio_list()`: `None` if it was reclaimed (and
    /// freed), else the list it goes back to.
    async fn shrink_folio(&self, pfn: Pfn, file: bool, scan: &mut Scan) -> Option<LruList> {
        let inactive = if file {
            LruList::InactiveFile
        } else {
            LruList::InactiveAnon
        };
        // folio_trylock(): keep a page someone holds.
        let Some(guard) = self.page_locks.try_lock(pfn).await else {
            return Some(inactive);
        };
        // try_to_unmap() and folio_mkclean() take each mapping's page-table
        // lock: the last switch point before the unmap below.
        self.wait_rmap_ptls(pfn).await;
        // The locks may have slept: freed meanwhile? (Then it is off the
        // LRU and the putback does nothing.)
        if !matches!(
            self.lru.borrow().place(pfn),
            Some(LruPlace::Isolated { .. })
        ) {
            return Some(inactive);
        }
        // A frame of a THP mapped by a block: Linux locks the whole folio,
        // the model the head's frame; a path holding it (the tag storage
        // fault initialising the block's tags) keeps the folio.
        if self.block_head_locked(pfn) {
            return Some(inactive);
        }
        let pinned = self
            .mem
            .phys()
            .alloc
            .frame(pfn)
            .is_none_or(|m| m.is_pinned());
        if pinned {
            // A pinned page cannot be unmapped (folio_maybe_dma_pinned()).
            return Some(inactive.active());
        }
        match self.folio_check_references(pfn, file, scan) {
            FolioRef::Activate => return Some(inactive.active()),
            FolioRef::Keep => return Some(inactive),
            FolioRef::ReclaimClean if file && self.file_page_dirty(pfn) => {
                return Some(inactive);
            }
            FolioRef::Reclaim | FolioRef::ReclaimClean => {}
        }
        let reclaimed = if file {
            self.reclaim_file_page(pfn)
        } else {
            match self.reclaim_anon_page(pfn) {
                PageoutResult::SwappedOut => true,
                // add_to_swap() failed: activate_locked.
                PageoutResult::NoSlot => return Some(inactive.active()),
                PageoutResult::Skipped => false,
            }
        };
        drop(guard);
        if !reclaimed {
            return Some(inactive);
        }
        self.release_if_unused(pfn).await;
        None
    }

    /// Whether a block mapping `pfn` has its head frame's page lock held by
    /// some path (see `shrink_folio`).
    fn block_head_locked(&self, pfn: Pfn) -> bool {
        let entries: Vec<crate::mm::RmapEntry> = self
            .rmap
            .borrow()
            .mappings(pfn)
            .iter()
            .filter(|e| e.level == crate::mm::MapLevel::Pmd)
            .copied()
            .collect();
        entries.iter().any(|e| {
            let head = self
                .mms
                .borrow()
                .get(&e.mm)
                .and_then(|m| match m.pt.walk(e.va) {
                    crate::mm::Walk::Block { block, .. } => Some(block.leaf().pfn),
                    _ => None,
                });
            head.is_some_and(|h| h != pfn && self.page_locks.is_locked(h))
        })
    }

    /// Reclaim of an anonymous page: swapped out with every mapping, or,
    /// in the swap cache and mapped nowhere, dropped from it (its slot has
    /// its data). No switch point.
    fn reclaim_anon_page(&self, pfn: Pfn) -> PageoutResult {
        if pfn == self.mem.zero_page() || self.cache_owner.borrow().contains_key(&pfn) {
            return PageoutResult::Skipped;
        }
        let mapped = self.rmap.borrow().count(pfn) > 0;
        if !mapped {
            let in_swap_cache = self.swap_cache_slot.borrow().contains_key(&pfn);
            if !in_swap_cache {
                return PageoutResult::Skipped;
            }
            self.swap_cache_delete(pfn);
            return PageoutResult::SwappedOut;
        }
        // try_to_unmap(TTU_SPLIT_HUGE_PMD).
        self.split_blocks_mapping(pfn, SplitReason::Pageout);
        self.swap_out_locked(pfn)
    }

    /// Whether the page cache page `pfn` is dirty.
    pub(crate) fn file_page_dirty(&self, pfn: Pfn) -> bool {
        let Some((object, pgoff)) = self.cache_owner.borrow().get(&pfn).copied() else {
            return false;
        };
        self.objects
            .borrow()
            .get(&object)
            .is_some_and(|o| o.dirty.contains(&pgoff))
    }

    /// Marks the file page of `object` at `pgoff` dirty
    /// (`folio_mark_dirty()`); other objects have no writeback.
    pub(crate) fn mark_dirty(&self, object: ObjectId, pgoff: Pgoff) {
        let mut objects = self.objects.borrow_mut();
        if let Some(o) = objects.get_mut(&object)
            && o.kind == ObjectKind::File
        {
            o.dirty.insert(pgoff);
        }
    }

    /// Linux `pageout()` of a dirty file page: `folio_clear_dirty_for_io()`
    /// write-protects every entry mapping it (`folio_mkclean()`), then the
    /// data goes to the file (`file.writeback`). No switch point.
    pub(crate) fn writeback(&self, pfn: Pfn) {
        let Some((object, pgoff)) = self.cache_owner.borrow().get(&pfn).copied() else {
            return;
        };
        self.write_protect_mappings(pfn);
        let data: Box<[u8]> = self
            .mem
            .phys()
            .contents
            .page_bytes(pfn)
            .map_or_else(|| vec![0; PAGE_SIZE_BYTES].into(), |b| b.to_boxed());
        let mut objects = self.objects.borrow_mut();
        let o = objects
            .get_mut(&object)
            .expect("BUG: a cached page of a gone object");
        o.dirty.remove(&pgoff);
        o.disk.insert(pgoff, data);
        drop(objects);
        self.bump(|c| c.file_writeback += 1);
    }

    /// Linux `folio_mkclean()`: every entry mapping `pfn` loses write
    /// permission (and its dirty bit); the TLB entry is flushed.
    fn write_protect_mappings(&self, pfn: Pfn) {
        let entries = self.rmap.borrow().mappings(pfn).to_vec();
        for e in entries {
            let Some(Pte::Present(leaf)) = self.current_pte(e.mm, e.va) else {
                continue;
            };
            if !leaf.attrs.access.is_writable() {
                continue;
            }
            let mut ro = leaf;
            ro.attrs.access = crate::mm::Access::ReadOnly;
            ro.attrs.dirty = false;
            let mut mms = self.mms.borrow_mut();
            let m = mms.get_mut(&e.mm).expect("BUG: rmap names a gone mm");
            self.raw_set_pte(m, e.va, Pte::Present(ro))
                .expect("BUG: rewriting an existing entry allocates");
        }
    }

    /// Reclaim of a file page: unmapped everywhere (`try_to_unmap()`),
    /// written back if dirty, dropped from its page cache
    /// (`__remove_mapping()`), a copy handed to the design's cleancache.
    /// No switch point. The caller frees the page.
    fn reclaim_file_page(&self, pfn: Pfn) -> bool {
        let Some((object, pgoff)) = self.cache_owner.borrow().get(&pfn).copied() else {
            return false;
        };
        let entries = self.rmap.borrow().mappings(pfn).to_vec();
        for e in entries {
            self.write_pte(e.mm, e.va, Pte::None)
                .expect("BUG: clearing an entry allocates");
        }
        if self.file_page_dirty(pfn) {
            self.writeback(pfn);
        }
        self.cleancache_put(object, pgoff, pfn);
        self.objects
            .borrow_mut()
            .get_mut(&object)
            .expect("BUG: a cached page of a gone object")
            .pages
            .remove(&pgoff);
        self.objects
            .borrow_mut()
            .get_mut(&object)
            .expect("BUG: a cached page of a gone object")
            .dropped
            .insert(pgoff);
        self.cache_owner.borrow_mut().remove(&pfn);
        self.bump(|c| c.file_dropped += 1);
        true
    }

    /// The contents of a file page read back after it was dropped (Linux
    /// `filemap_read_folio()`; the cleancache first, `cleancache_get_page()`):
    /// into the new page `pfn`. `file.reads` + 1 when the page had been
    /// dropped before (a page never cached reads zeros from a new file
    /// without I/O worth counting: the model's files start zero-filled and
    /// are created with the mapping).
    pub(crate) fn read_file_page(&self, object: ObjectId, pgoff: Pgoff, pfn: Pfn) {
        let from_cache = self.cleancache_get(object, pgoff);
        let data = from_cache.or_else(|| {
            self.objects
                .borrow()
                .get(&object)
                .and_then(|o| o.disk.get(&pgoff).cloned())
        });
        let was_dropped = self
            .objects
            .borrow_mut()
            .get_mut(&object)
            .is_some_and(|o| o.dropped.remove(&pgoff));
        if let Some(data) = data {
            crate::phys::copy_into(
                self.mem
                    .phys_mut()
                    .contents
                    .page_bytes_mut(pfn)
                    .expect("BUG: a new frame is present"),
                &data,
            );
        }
        if was_dropped {
            self.bump(|c| c.file_reads += 1);
        }
    }

    /// Linux `__alloc_pages_slowpath()` -> `__alloc_pages_direct_reclaim()`:
    /// `alloc` tried, and while it finds no page, [`SWAP_CLUSTER_MAX`]
    /// pages reclaimed and `alloc` tried again, as long as reclaim makes
    /// progress (`should_reclaim_retry()`). `None`: out of memory.
    pub(crate) async fn direct_reclaim_retry(&self) -> bool {
        let got = self.reclaim(SWAP_CLUSTER_MAX).await;
        self.bump(|c| c.direct_reclaim += got);
        got > 0
    }
}

/// The model's page size in bytes (a zero page of the file).
const PAGE_SIZE_BYTES: usize = crate::mm::layout::PAGE_SIZE as usize;

impl Kernel {
    /// Hands the clean file page `pfn` (of `object` at `pgoff`), which
    /// reclaim is dropping, to the design's cleancache, if it keeps one
    /// (`cleancache_put_page()` in `__remove_mapping()`).
    fn cleancache_put(&self, object: ObjectId, pgoff: Pgoff, pfn: Pfn) {
        self.mem.cleancache_put(cache_key(object, pgoff), pfn);
    }

    /// The cleancache's copy of `object` at `pgoff`, taken out of it.
    fn cleancache_get(&self, object: ObjectId, pgoff: Pgoff) -> Option<Box<[u8]>> {
        self.mem.cleancache_get(cache_key(object, pgoff))
    }

    /// Forgets the cleancache copies of a dying object
    /// (`cleancache_invalidate_inode()`).
    pub(crate) fn cleancache_forget(&self, id: ObjectId, object: &super::Object) {
        for pgoff in &object.dropped {
            self.mem.cleancache_invalidate(cache_key(id, *pgoff));
        }
    }

    pub(crate) fn cleancache_stats(&self) -> crate::mem::CleancacheStats {
        self.mem.cleancache_stats()
    }
}

/// The cleancache's key of a file page.
fn cache_key(object: ObjectId, pgoff: Pgoff) -> crate::mem::CacheKey {
    (object.get(), pgoff.get())
}
