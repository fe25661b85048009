//! Swap-out (`madvise(MADV_PAGEOUT)`), swap-in (`do_swap_page()`) and the
//! MTE tags that travel with a swapped page (Linux v6.8 `mm/madvise.c`,
//! `mm/vmscan.c`, `mm/memory.c`, `mm/swapfile.c`,
//! `arch/arm64/mm/mteswap.c`; RFC v3 "arm64: mte: swap: Handle tag restoring
//! when missing tag storage").
//!
//! # Swap-out ([`Kernel::pageout_range`])
//! Linux `madvise_cold_or_pageout_pte_range()` then `reclaim_pages()` ->
//! `shrink_folio_list()`, for each entry of the range:
//! - skipped: no page, swap entries, the zero page and other special
//!   entries, pages in a page cache (shmem, tmpfs and regular files: an
//!   unprivileged process may only page out anonymous memory,
//!   `can_do_file_pageout()`, and shmem swap is not modelled), pages mapped
//!   more than once (6.8: `folio_mapcount(folio) != 1`: "do not interfere
//!   with other mappings"), pinned pages (`folio_maybe_dma_pinned()` in
//!   `shrink_folio_list()`), pages whose lock is taken (`folio_trylock()`);
//! - otherwise: a slot is taken (none left: the page stays, as
//!   `add_to_swap()` failing activates it), the data and, for a page whose
//!   tags are initialised, its tags are saved (`swap_writepage()` ->
//!   `arch_prepare_to_swap()` -> `mte_save_tags()`), every mapping found
//!   through the rmap becomes a swap entry (`try_to_unmap()`), the page is
//!   freed, `swap.out` + 1.
//! - A 2 MiB block entry is split first (`madvise` splits every block of
//!   the range; reclaim splits the blocks mapping the page), as Linux
//!   splits a PMD-mapped THP before swapping its pages.
//!
//! # Reclaim
//! `reclaim PAGES` and direct reclaim (module `reclaim`) swap anonymous
//! pages out with [`Kernel::swap_out_locked`], pages shared by fork
//! included (every mapping becomes a swap entry of one slot whose swap
//! count is the number of mappings). A page in the swap cache keeps its
//! slot: it is unmapped to it again without a write.
//!
//! # The swap cache (Linux `mm/swap_state.c`)
//! A swap-in of a slot that other swap entries still refer to
//! (`__read_swap_cache_async()`) reads it into a page that joins the swap
//! cache, keyed by the slot; the other entries' faults find it there
//! (`swap_cache_get_folio()`) and map it, without a read and without
//! `swap.in`, read-only while the slot still has references (a write then
//! copies: the page is not exclusive). The tags are restored once, when the
//! slot is read. The page leaves the swap cache when the slot's last
//! reference goes (`swap_free()` -> `folio_free_swap()`), or when reclaim
//! drops it unmapped. Nothing writes a page while it is in the swap
//! cache, so its data and tags stay those of the slot (checked).
//! **Simplification:** a slot of a single entry is read straight into the
//! faulting process's page and freed at once (`SWP_SYNCHRONOUS_IO`-like).
//!
//! # Swap-in ([`Kernel::do_swap_page`])
//! A fault on a swap entry, from any access (loads, stores, tag
//! instructions, kernel copies, forced ptrace writes, pins): the swap
//! cache's page if the slot is there, else a new page (a
//! tagged allocation in a `VM_MTE` mapping: never from tag storage, its
//! blocks reserved best effort; direct reclaim if none is free), the
//! slot's data copied in, the saved tags handed to `Kernel::restored_tags`
//! (whatever maps it: another mapping may map it tagged from the swap
//! cache) and the page mapped with
//! `set_pte_at()`; `swap_free()` then drops the slot's reference (the slot
//! and its tags go with the last one), `swap.in` + 1. A page of a `VM_MTE`
//! mapping swapped out untagged (`PROT_MTE` added later) gets zeroed tags
//! like any newly tagged page. A page swapped in for a read is mapped
//! read-only and made writable by the write fault that reuses it (6.8 maps
//! it writable only for a write fault).
//!
//! **Shortcut:** `PTRACE_PEEKMTETAGS` reads the saved tags of a swapped-out
//! page without swapping it in (Linux's `access_remote_vm()` faults it in;
//! the tags read are the same, only `swap.in` differs).
//!
//! # Tags restored into a page without tag storage (RFC v3)
//! Under `dynamic` the new page's tag storage may not be reserved: it is
//! mapped awaiting tag storage and the saved tags wait in
//! `Kernel::restored_tags` (the RFC's `tags_by_pfn` xarray) keyed by frame.
//! The tag-initialisation step of `set_pte_at()` ([`Kernel::init_or_restore_tags`])
//! writes them instead of zeros once the storage is reserved; migration moves
//! them with the page; freeing the page drops them; a page swapped out again
//! before that saves them.

use mte::{Pfn, Tag, VirtAddr};
use platform::Mistake;
use uapi::Errno;
use uapi::event::{Event, FaultKind, FaultOutcome};

use super::Kernel;
use super::fault::{FaultError, Need, leaf_attrs};
use crate::mem::Gfp;
use crate::mm::{Block, Leaf, LeafEntry, MmId, Pte, SwapSlot, Vma};

/// What happened to one entry offered to swap-out.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(crate) enum PageoutResult {
    /// Written to a slot, unmapped and freed.
    SwappedOut,
    /// Not a candidate (see the module doc).
    Skipped,
    /// A candidate, but the swap device is full.
    NoSlot,
}

impl Gfp {
    /// The page a swap-in reads into: movable, tagged for a `VM_MTE`
    /// mapping, neither data nor tags zeroed (the slot overwrites them).
    /// Linux `vma_alloc_folio(GFP_HIGHUSER_MOVABLE, ...)` with the RFC's
    /// `__GFP_TAGGED` for `VM_MTE`.
    const SWAP_IN: Gfp = Gfp {
        movable: true,
        tagged: false,
        zero: false,
        zero_tags: false,
        kernel: false,
    };
}

impl Kernel {
    /// Swap-out of every suitable page of `mm` in `[start, end)`, under
    /// `mmap_lock` held by the caller. Returns how many were swapped out.
    pub(crate) async fn pageout_range(&self, mm: MmId, start: VirtAddr, end: VirtAddr) -> u64 {
        let leaves: Vec<(VirtAddr, LeafEntry)> = {
            let mms = self.mms.borrow();
            let Some(m) = mms.get(&mm) else {
                return 0;
            };
            m.pt.leaves(start, end).collect()
        };
        let mut done = 0;
        for (va, entry) in leaves {
            let result = match entry {
                LeafEntry::Pte(pte) => self.pageout_pte(mm, va, pte).await,
                LeafEntry::Block(block) => self.pageout_block(mm, va, block),
            };
            if result == PageoutResult::SwappedOut {
                done += 1;
            }
        }
        done
    }

    /// Writes the locked, unpinned anonymous page `pfn` to a new slot with
    /// its tags and turns every mapping of it into a swap entry; no switch
    /// point. The caller frees the page.
    pub(crate) fn swap_out_locked(&self, pfn: Pfn) -> PageoutResult {
        // A page in the swap cache has its slot, written when it was
        // swapped out and never changed since (nothing writes a page while
        // it is in the swap cache: writes copy it). Linux: the folio is
        // clean, `pageout()` is skipped, `__remove_mapping()` drops it.
        let cached = self.swap_cache_slot.borrow().get(&pfn).copied();
        if let Some(slot) = cached {
            self.unmap_to_swap(pfn, slot, true);
            self.swap_cache_delete(pfn);
            self.bump(|c| c.swap_out += 1);
            self.trace().emit(|| Event::SwapOut {
                pfn,
                slot: slot.get(),
                tags_saved: self.swap.borrow().saved_tags(slot).is_some(),
            });
            return PageoutResult::SwappedOut;
        }
        let tags = self.tags_to_save(pfn);
        let slot = {
            let phys = self.mem.phys();
            let data = phys.contents.page_bytes(pfn).map(|b| b.to_boxed());
            self.swap
                .borrow_mut()
                .alloc(data.as_deref(), tags.as_deref())
        };
        let Some(slot) = slot else {
            return PageoutResult::NoSlot;
        };
        self.unmap_to_swap(pfn, slot, false);
        self.bump(|c| c.swap_out += 1);
        self.trace().emit(|| Event::SwapOut {
            pfn,
            slot: slot.get(),
            tags_saved: tags.is_some(),
        });
        PageoutResult::SwappedOut
    }

    /// THP meets swap here: Linux `madvise_cold_or_pageout_pte_range()`
    /// splits a PMD-mapped folio before paging it out, and `do_swap_page()`
    /// only ever maps 4 KiB entries back. `madvise pageout` splits every
    /// block of its range before calling [`Kernel::pageout_range`], so no
    /// block reaches this.
    fn pageout_block(&self, _mm: MmId, va: VirtAddr, _block: Block) -> PageoutResult {
        panic!("BUG: pageout met the block at {va}: madvise splits blocks first")
    }

    /// Whether the page behind `leaf`, mapped at `va` by a private VMA, may
    /// be paged out (see the module doc).
    fn pageout_candidate(&self, vma: &Vma, leaf: Leaf) -> bool {
        if vma.is_shared() || leaf.attrs.special || leaf.pfn == self.mem.zero_page() {
            return false;
        }
        // A private shm/file mapping maps the object's own page until the
        // first write copies it: that page belongs to the page cache.
        if self.cache_owner.borrow().contains_key(&leaf.pfn) {
            return false;
        }
        if self.rmap.borrow().count(leaf.pfn) != 1 {
            return false;
        }
        self.mem
            .phys()
            .alloc
            .frame(leaf.pfn)
            .is_some_and(|m| !m.is_pinned())
    }

    /// Swap-out of the page mapped by `pte` at `va`, if it is a candidate.
    async fn pageout_pte(&self, mm: MmId, va: VirtAddr, pte: Pte) -> PageoutResult {
        let Some(leaf) = pte.leaf() else {
            return PageoutResult::Skipped;
        };
        let Some(vma) = self
            .mms
            .borrow()
            .get(&mm)
            .and_then(|m| m.vmas.find(va).copied())
        else {
            return PageoutResult::Skipped;
        };
        if !self.pageout_candidate(&vma, leaf) {
            return PageoutResult::Skipped;
        }
        // shrink_folio_list(): folio_trylock(), skip if taken.
        let Some(guard) = self.page_locks.try_lock(leaf.pfn).await else {
            return PageoutResult::Skipped;
        };
        // try_to_unmap()'s page-table locks (see `wait_rmap_ptls`).
        self.wait_rmap_ptls(leaf.pfn).await;
        // The locks may have slept: look again.
        if self.current_pte(mm, va) != Some(pte) || !self.pageout_candidate(&vma, leaf) {
            return PageoutResult::Skipped;
        }
        let result = self.swap_out_locked(leaf.pfn);
        drop(guard);
        if result == PageoutResult::SwappedOut {
            self.release_if_unused(leaf.pfn).await;
        }
        result
    }

    /// The tags a swap-out saves for `pfn` (Linux `mte_save_tags()`: only a
    /// page whose tags are initialised, `page_mte_tagged()`); a page still
    /// awaiting the tag storage for tags restored at an earlier swap-in
    /// saves those.
    fn tags_to_save(&self, pfn: Pfn) -> Option<Vec<Tag>> {
        if !self.has_mte() {
            return None;
        }
        if self.mem.page_mte_tagged(pfn) {
            return Some(
                self.mem
                    .read_page_tags(pfn)
                    .expect("BUG: a mapped frame is present"),
            );
        }
        self.restored_tags.borrow().get(&pfn).cloned()
    }

    /// Linux `try_to_unmap()` with a swap entry: every mapping of `pfn`
    /// becomes `Pte::Swap(slot)`, one swap reference each (for a new slot
    /// the first was taken by its allocation; `in_use`: the slot is in use
    /// already, every entry adds one).
    fn unmap_to_swap(&self, pfn: Pfn, slot: SwapSlot, in_use: bool) {
        let entries = self.rmap.borrow().mappings(pfn).to_vec();
        for (i, e) in entries.iter().enumerate() {
            if i > 0 || in_use {
                self.swap
                    .borrow_mut()
                    .duplicate(slot)
                    .unwrap_or_else(|err| panic!("BUG: {err}"));
            }
            self.write_pte(e.mm, e.va, Pte::Swap(slot))
                .expect("BUG: rewriting an existing entry allocates");
        }
    }

    /// Linux `swap_free()` of one swap entry's reference (the slot and its
    /// saved tags go with the last one). When the slot goes, its page
    /// leaves the swap cache (Linux `folio_free_swap()`, which 6.8 does
    /// at once when the swap space is short; the model always does):
    /// returned, for the caller to release if nothing else holds it.
    #[must_use = "a page leaving the swap cache must be released"]
    pub(crate) fn swap_free(&self, slot: SwapSlot) -> Option<Pfn> {
        let freed = self
            .swap
            .borrow_mut()
            .free(slot)
            .unwrap_or_else(|e| panic!("BUG: swap entry without its slot: {e}"));
        if !freed {
            return None;
        }
        let pfn = self.swap_cache.borrow().get(&slot).copied()?;
        self.swap_cache_delete(pfn);
        Some(pfn)
    }

    /// Linux `__delete_from_swap_cache()`.
    pub(crate) fn swap_cache_delete(&self, pfn: Pfn) {
        if let Some(slot) = self.swap_cache_slot.borrow_mut().remove(&pfn) {
            self.swap_cache.borrow_mut().remove(&slot);
        }
    }

    /// Linux `add_to_swap_cache()`.
    fn swap_cache_add(&self, slot: SwapSlot, pfn: Pfn) {
        self.swap_cache.borrow_mut().insert(slot, pfn);
        self.swap_cache_slot.borrow_mut().insert(pfn, slot);
    }

    /// Linux `swap_duplicate()` (fork copying a swap entry).
    pub(crate) fn swap_duplicate(&self, slot: SwapSlot) -> Result<(), Errno> {
        self.swap.borrow_mut().duplicate(slot).map_err(|e| match e {
            crate::swap::SwapError::CountOverflow(_) => Errno::NoMem,
            crate::swap::SwapError::NotInUse(_) => {
                panic!("BUG: swap entry without its slot: {e}")
            }
        })
    }

    /// Linux `do_swap_page()`: see the module doc.
    pub(crate) async fn do_swap_page(
        &self,
        mm: MmId,
        va: VirtAddr,
        vma: &Vma,
        slot: SwapSlot,
        need: Need,
    ) -> Result<(), FaultError> {
        // swap_cache_get_folio(): another mapping of the slot read it in.
        let cached = self.swap_cache.borrow().get(&slot).copied();
        if let Some(pfn) = cached {
            return self.map_swap_cache_page(mm, va, vma, slot, pfn, need).await;
        }
        let tagged = vma.is_tagged();
        let Some(pfn) = self.alloc_user_page(tagged, Gfp::SWAP_IN).await else {
            return Err(FaultError::OutOfMemory);
        };
        // Linux holds the new folio's lock across do_swap_page() (it is
        // locked before it joins the swap cache): nothing swaps it out or
        // moves it (a claim's migration tries the lock) before it is mapped.
        // Nobody else can see the page yet, so the lock is free.
        let guard = self.page_locks.lock(pfn).await;
        // The allocation and the lock may have slept (or reclaimed): another
        // thread may have swapped this entry in (pte_same() failing), or
        // read the slot into the swap cache.
        if self.current_pte(mm, va) != Some(Pte::Swap(slot))
            || self.swap_cache.borrow().contains_key(&slot)
        {
            drop(guard);
            self.release_if_unused(pfn).await;
            return Ok(());
        }
        // __read_swap_cache_async(): a slot other entries still refer to
        // is read into a page of the swap cache, which those entries will
        // find; a slot of this entry alone is read straight into the page
        // (SWP_SYNCHRONOUS_IO-like: the slot goes at once).
        let shared = self.swap.borrow().get(slot).is_some_and(|s| s.count > 1);
        self.read_slot_into(slot, pfn);
        if shared {
            self.swap_cache_add(slot, pfn);
        }
        let tags_restored = self.restored_tags.borrow().contains_key(&pfn);
        let leaf = Leaf {
            pfn,
            attrs: leaf_attrs(vma, need == Need::Write && !shared, false),
        };
        // `mistake=flag-before-restore` (found in the v3 review,
        // docs/designs.md "Known mistakes"): the page is flagged as holding
        // its tags before they are restored, so set_pte_at() maps it valid
        // at once and the saved tags are written after the entry; an
        // access on another CPU in between reads tags not yet restored.
        // The design restores first (set_pte_at's tag initialisation).
        let flagged_early = if tags_restored
            && self.mem.tag_storage_reserved(pfn)
            && self
                .platform
                .settings()
                .mistakes
                .contains(Mistake::FlagBeforeRestore)
        {
            // The folio lock is held: nothing swaps the page out or moves
            // it before the restore.
            let tags = self.restored_tags.borrow_mut().remove(&pfn);
            self.mem
                .set_page_mte_tagged(pfn)
                .expect("BUG: a new frame is in use");
            tags
        } else {
            None
        };
        let mapped = match self
            .set_pte_at(mm, va, Pte::Swap(slot), Pte::Present(leaf))
            .await
        {
            Ok(mapped) => mapped,
            Err(e) => {
                drop(guard);
                self.swap_cache_delete(pfn);
                self.release_if_unused(pfn).await;
                return Err(e.into());
            }
        };
        if let Some(tags) = flagged_early {
            // The restore, after the entry (a switch point first: the
            // page-table lock was just released).
            self.sched.preempt_point().await;
            if mapped {
                self.mem
                    .write_page_tags(pfn, &tags)
                    .expect("BUG: a frame in use is present");
            }
        }
        drop(guard);
        if mapped {
            if let Some(page) = self.swap_free(slot) {
                self.release_if_unused(page).await;
            }
            self.bump(|c| c.swap_in += 1);
            self.fault_event(FaultKind::SwapIn, va, FaultOutcome::Mapped);
            self.trace().emit(|| Event::SwapIn {
                pfn,
                slot: slot.get(),
                tags_restored,
            });
        } else {
            self.swap_cache_delete(pfn);
            self.release_if_unused(pfn).await;
        }
        Ok(())
    }

    /// The swap-cache hit of `do_swap_page()`: the page the slot was read
    /// into is mapped here too (read-only while other entries still refer
    /// to the slot: a write then copies it), with no read and no
    /// `swap.in`; the tags were restored when it was read.
    async fn map_swap_cache_page(
        &self,
        mm: MmId,
        va: VirtAddr,
        vma: &Vma,
        slot: SwapSlot,
        pfn: Pfn,
        need: Need,
    ) -> Result<(), FaultError> {
        // folio_lock_or_retry().
        let guard = self.page_locks.lock(pfn).await;
        if self.current_pte(mm, va) != Some(Pte::Swap(slot))
            || self.swap_cache.borrow().get(&slot) != Some(&pfn)
        {
            return Ok(());
        }
        let last = self.swap.borrow().get(slot).is_some_and(|s| s.count == 1);
        let exclusive = last && self.rmap.borrow().count(pfn) == 0;
        let leaf = Leaf {
            pfn,
            attrs: leaf_attrs(vma, exclusive && need == Need::Write, false),
        };
        let mapped = self
            .set_pte_at(mm, va, Pte::Swap(slot), Pte::Present(leaf))
            .await?;
        drop(guard);
        if mapped && let Some(page) = self.swap_free(slot) {
            self.release_if_unused(page).await;
        }
        Ok(())
    }

    /// Linux `swap_read_folio()` + `arch_swap_restore()`: the slot's data
    /// into `pfn`, its saved tags (in a tagged mapping) waiting in
    /// `restored_tags` for the tag initialisation of `set_pte_at()`.
    fn read_slot_into(&self, slot: SwapSlot, pfn: Pfn) {
        let swap = self.swap.borrow();
        let state = swap
            .get(slot)
            .unwrap_or_else(|| panic!("BUG: swap entry without its slot {slot}"));
        {
            let mut phys = self.mem.phys_mut();
            match &state.data {
                Some(data) => crate::phys::copy_into(
                    phys.contents
                        .page_bytes_mut(pfn)
                        .expect("BUG: a new frame is present"),
                    data,
                ),
                None => phys
                    .contents
                    .zero_page(pfn)
                    .expect("BUG: a new frame is present"),
            }
        }
        // Linux restores saved tags into the page whatever maps it
        // (`arch_swap_restore()`): a page read for an untagged mapping may
        // be in the swap cache and mapped tagged by another later.
        if let (true, Some(tags)) = (self.has_mte(), &state.tags) {
            self.restored_tags.borrow_mut().insert(pfn, tags.to_vec());
        }
    }

    /// The tag initialisation of `set_pte_at()` for a page whose tag
    /// storage is reserved: tags restored at swap-in if some wait for this
    /// page (RFC v3), zeros otherwise (Linux `mte_sync_tags()`), exactly
    /// once (`try_page_mte_tagging()`).
    pub(crate) async fn init_or_restore_tags(&self, pfn: Pfn) {
        let must_init = self
            .mem
            .try_page_mte_tagging(pfn)
            .await
            .unwrap_or_else(|e| panic!("BUG: mapping a frame not in use: {e}"));
        if !must_init {
            return;
        }
        let restored = self.restored_tags.borrow_mut().remove(&pfn);
        match restored {
            Some(tags) => self
                .mem
                .write_page_tags(pfn, &tags)
                .expect("BUG: a frame in use is present"),
            None => self
                .mem
                .zero_tags(pfn)
                .expect("BUG: a frame in use is present"),
        }
        self.mem
            .set_page_mte_tagged(pfn)
            .expect("BUG: a frame in use is present");
    }
}
