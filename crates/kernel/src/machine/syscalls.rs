//! The memory system calls: mmap, munmap, mprotect, madvise, pin, unpin
//! (docs/semantics.md §7-§11). VMA changes are [`crate::mm::VmaTree`]'s;
//! this layer adds the argument checks the docs order before them, the page
//! work each call implies (unmapping pages, rewriting entries, populating),
//! and the page caches of the objects mappings create.
//!
//! Decisions:
//! - Placement is `VmaTree::get_unmapped_area` (Linux v6.8): regular-file
//!   mappings of 2 MiB or more are 2 MiB aligned like private anonymous ones
//!   (`thp_get_unmapped_area()`, used by ext4), which docs/semantics.md §7
//!   does not say (reported to the lead); the bottom-up fallback above
//!   `mmap_base` exists, as in Linux.
//! - The commit limit is Linux's default heuristic (`OVERCOMMIT_GUESS`): one
//!   mapping larger than RAM (+ swap) is `ENOMEM`; docs/semantics.md has no
//!   such rule (reported).
//! - `MAP_POPULATE` faults every page in (writes for private writable
//!   mappings, reads otherwise; Linux `populate_vma_page_range()`);
//!   failures are ignored as Linux ignores `mm_populate()`'s result.
//! - `pin` faults each page in for writing and, as `FOLL_LONGTERM` does
//!   (`check_and_migrate_movable_pages()`), first migrates a page that lies
//!   in CMA (tag storage) out of it, so a long-term pin never blocks a tag
//!   block.
//! - `pin ... longterm=off` (a short-term pin, `FOLL_PIN` alone, as
//!   `vmsplice(2)` takes one) faults each page in the same way but leaves it
//!   where it is, in lent tag storage too: while it is pinned, migration of
//!   the page fails (Linux `folio_migrate_mapping()` refuses a folio with
//!   more references than its mappings explain), so a claim of its tag
//!   block fails and a design without a fallback can starve a reservation
//!   (`docs/designs.md`, question e). It may pin a shared file mapping
//!   (`writable_file_mapping_allowed()` is for long-term pins only).

use mte::{Pfn, TaggedPtr, VirtAddr};
use uapi::event::SplitReason;
use uapi::{Advice, Backing, Errno, MapFlags, Prot, Sharing};

use super::fault::{Need, leaf_attrs};
use super::huge::PmdView;
use super::migrate::MigrateReason;
use super::proc::{is_user_range, vpn};
use super::{Kernel, Object, ObjectKind, PAGE};
use crate::mm::layout::{MMAP_MIN_ADDR, PAGES_PER_PMD, PMD_SIZE, TASK_SIZE, page_align};
use crate::mm::{
    FlagChange, Leaf, LeafEntry, MapSource, MmId, MmapRequest, Pgoff, Placement, Pte, VmFlags,
    VmaBacking,
};

/// The end of the user address space as an address.
pub(crate) fn user_end() -> VirtAddr {
    VirtAddr::new(TASK_SIZE).expect("BUG: TASK_SIZE is a valid address")
}

fn has_top_byte(ptr: TaggedPtr) -> bool {
    ptr.addr().as_u64() != ptr.raw()
}

fn va(raw: u64) -> VirtAddr {
    VirtAddr::new(raw).expect("BUG: a user address above 2^56")
}

/// Which pin `pin` takes.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(crate) enum PinKind {
    /// `FOLL_LONGTERM`: the page is first migrated out of CMA (tag storage).
    LongTerm,
    /// `FOLL_PIN` alone (`longterm=off`): the page stays where it is.
    ShortTerm,
}

impl Kernel {
    fn mm_of(&self, pid: uapi::Pid) -> Result<MmId, Errno> {
        self.process_mm(pid).ok_or(Errno::Srch)
    }

    /// Clears every entry of `mm` in `[start, end)` and returns the frames
    /// they mapped (Linux `zap_page_range_single()`, `unmap_vmas()`); the
    /// caller releases them.
    /// A block only partly inside the range is split first
    /// (`__split_huge_pmd()`); a whole one is cleared (`zap_huge_pmd()`).
    pub(crate) fn zap_range(&self, mm: MmId, start: VirtAddr, end: VirtAddr) -> Vec<Pfn> {
        self.split_blocks_in(mm, start, end, true, SplitReason::PartialRange);
        let leaves: Vec<(VirtAddr, LeafEntry)> = {
            let mms = self.mms.borrow();
            let Some(m) = mms.get(&mm) else {
                return Vec::new();
            };
            m.pt.leaves(start, end).collect()
        };
        let mut pfns = Vec::new();
        for (at, leaf) in leaves {
            let pte = match leaf {
                LeafEntry::Pte(pte) => pte,
                LeafEntry::Block(_) => {
                    let block = self.clear_block(mm, at);
                    let l = block.leaf();
                    if !l.attrs.special {
                        pfns.extend((0..PAGES_PER_PMD).map(|i| l.pfn + i));
                    }
                    continue;
                }
            };
            self.write_pte(mm, at, Pte::None)
                .expect("BUG: clearing an entry allocates");
            // zap_nonpresent_ptes() -> free_swap_and_cache().
            if let Pte::Swap(slot) = pte
                && let Some(page) = self.swap_free(slot)
            {
                pfns.push(page);
            }
            if let Some(l) = pte.leaf().filter(|l| !l.attrs.special) {
                pfns.push(l.pfn);
            }
        }
        pfns
    }

    /// Unmaps the pieces a VMA call removed and frees their page tables.
    async fn unmap_pieces(&self, mm: MmId, removed: &crate::mm::Unmapped) {
        let mut pfns = Vec::new();
        for piece in &removed.pieces {
            pfns.extend(self.zap_range(mm, piece.start, piece.end));
        }
        if let (Some(first), Some(last)) = (removed.pieces.first(), removed.pieces.last()) {
            let mut mms = self.mms.borrow_mut();
            if let Some(m) = mms.get_mut(&mm) {
                m.pt.free_tables(
                    first.start,
                    last.end,
                    removed.floor.min(first.start),
                    removed.ceiling.max(last.end),
                    &mut super::PtFrames { mem: &self.mem },
                );
            }
        }
        self.release_all(pfns).await;
        self.collect_objects().await;
    }

    /// `mmap(2)`: checks of docs/semantics.md §7 in its order, then the
    /// VMA, then `populate`.
    pub(crate) async fn mmap(
        &self,
        pid: uapi::Pid,
        len: u64,
        prot: Prot,
        flags: MapFlags,
    ) -> Result<VirtAddr, Errno> {
        let mm = self.mm_of(pid)?;
        if len == 0 {
            return Err(Errno::Inval);
        }
        let pages_len = page_align(len)
            .filter(|&l| l <= TASK_SIZE)
            .ok_or(Errno::NoMem)?;
        let placement = match flags.fixed {
            Some(fixed) => {
                // Linux never untags mmap's address; the spec makes it EINVAL.
                if has_top_byte(fixed) {
                    return Err(Errno::Inval);
                }
                let a = fixed.addr().as_u64();
                if !is_user_range(a, pages_len) {
                    return Err(Errno::NoMem);
                }
                if !a.is_multiple_of(PAGE) {
                    return Err(Errno::Inval);
                }
                if a < MMAP_MIN_ADDR {
                    return Err(Errno::Perm);
                }
                Placement::Fixed(fixed.addr())
            }
            None => Placement::Anywhere,
        };
        let lock = self.mm_lock(mm).ok_or(Errno::Srch)?;
        let guard = lock.write().await;
        let kind = match (flags.sharing, flags.backing) {
            (Sharing::Private, Backing::Anon) => None,
            (Sharing::Shared, Backing::Anon) => Some(ObjectKind::SharedAnon),
            (_, Backing::Shm) => Some(ObjectKind::Tmpfs),
            (_, Backing::File) => Some(ObjectKind::File),
        };
        let object = kind.map(|kind| {
            let id = self.object_ids.borrow_mut().alloc();
            self.objects.borrow_mut().insert(
                id,
                Object {
                    kind,
                    pages: Default::default(),
                    disk: Default::default(),
                    dirty: Default::default(),
                    dropped: Default::default(),
                },
            );
            (id, kind)
        });
        let source = match object {
            None => MapSource::Anon { shmem: None },
            Some((id, ObjectKind::SharedAnon)) => MapSource::Anon { shmem: Some(id) },
            Some((id, ObjectKind::Tmpfs)) => MapSource::Shm {
                object: id,
                pgoff: Pgoff::ZERO,
            },
            Some((id, ObjectKind::File)) => MapSource::File {
                object: id,
                pgoff: Pgoff::ZERO,
            },
        };
        let result = {
            let mut mms = self.mms.borrow_mut();
            let m = mms.get_mut(&mm).ok_or(Errno::Srch)?;
            m.vmas.mmap(MmapRequest {
                placement,
                len,
                prot,
                sharing: flags.sharing,
                source,
            })
        };
        let mapped = match result {
            Ok(mapped) => mapped,
            Err(e) => {
                drop(guard);
                if let Some((id, _)) = object {
                    self.objects.borrow_mut().remove(&id);
                }
                return Err(e.errno());
            }
        };
        self.unmap_pieces(mm, &mapped.replaced).await;
        drop(guard);
        if flags.populate {
            self.populate(pid, mapped.addr, pages_len, prot, flags.sharing)
                .await;
        }
        Ok(mapped.addr)
    }

    /// Linux `populate_vma_page_range()`: each page faulted in, for writing
    /// in a private writable mapping; not at all without access.
    async fn populate(
        &self,
        pid: uapi::Pid,
        base: VirtAddr,
        len: u64,
        prot: Prot,
        sharing: Sharing,
    ) {
        if !(prot.read || prot.write) {
            return;
        }
        let need = if prot.write && sharing == Sharing::Private {
            Need::Write
        } else {
            Need::Read
        };
        let mut at = base.as_u64();
        let end = at + len;
        while at < end {
            // Linux: cond_resched() in __get_user_pages().
            self.sched.preempt_point().await;
            let ptr = va(at).to_ptr();
            if self.resolve(pid, ptr, at, 1, need).await.is_err() {
                return;
            }
            at += PAGE;
        }
    }

    /// `munmap(2)`.
    pub(crate) async fn munmap(
        &self,
        pid: uapi::Pid,
        ptr: TaggedPtr,
        len: u64,
    ) -> Result<(), Errno> {
        let mm = self.mm_of(pid)?;
        let lock = self.mm_lock(mm).ok_or(Errno::Srch)?;
        let _guard = lock.write().await;
        let removed = {
            let mut mms = self.mms.borrow_mut();
            let m = mms.get_mut(&mm).ok_or(Errno::Srch)?;
            m.vmas.munmap(ptr.addr(), len).map_err(|e| e.errno())?
        };
        self.unmap_pieces(mm, &removed).await;
        Ok(())
    }

    /// `mprotect(2)`: the VMAs, then every entry of each changed piece
    /// rewritten through `set_pte_at` (adding `PROT_MTE` maps pages without
    /// reserved tag storage awaiting it; write permission is given only to
    /// pages this mapping may write: Linux `can_change_pte_writable()`).
    pub(crate) async fn mprotect(
        &self,
        pid: uapi::Pid,
        ptr: TaggedPtr,
        len: u64,
        prot: Prot,
    ) -> Result<(), Errno> {
        let mm = self.mm_of(pid)?;
        let lock = self.mm_lock(mm).ok_or(Errno::Srch)?;
        let _guard = lock.write().await;
        let outcome = {
            let mut mms = self.mms.borrow_mut();
            let m = mms.get_mut(&mm).ok_or(Errno::Srch)?;
            m.vmas.mprotect(ptr.addr(), len, prot)
        };
        for change in outcome.visited.iter().filter(|c| c.changed()) {
            self.change_protection(mm, change).await?;
        }
        outcome.result()
    }

    /// Linux `change_protection()` over one changed piece. A piece gaining
    /// `PROT_MTE` has its KSM pages unmerged first (`ksm`: a KSM page is
    /// never mapped tagged).
    async fn change_protection(&self, mm: MmId, change: &FlagChange) -> Result<(), Errno> {
        if change.new.contains(VmFlags::MTE) && !change.old.contains(VmFlags::MTE) {
            self.ksm_unmerge_range(mm, change.start, change.end, super::ksm::now_tagged)
                .await?;
        }
        self.split_blocks_in(
            mm,
            change.start,
            change.end,
            true,
            SplitReason::PartialRange,
        );
        let leaves: Vec<(VirtAddr, LeafEntry)> = {
            let mms = self.mms.borrow();
            let Some(m) = mms.get(&mm) else {
                return Ok(());
            };
            m.pt.leaves(change.start, change.end).collect()
        };
        for (at, entry) in leaves {
            if let LeafEntry::Block(_) = entry {
                let vma = {
                    let mms = self.mms.borrow();
                    *mms[&mm]
                        .vmas
                        .find(at)
                        .expect("BUG: a block outside every VMA")
                };
                if !self.change_huge_pmd(mm, at, &vma).await? {
                    // A claim split it while an earlier entry's set_pte_at()
                    // slept: its 512 PTEs instead.
                    for i in 0..PAGES_PER_PMD {
                        self.change_pte(mm, va(at.as_u64() + i * PAGE)).await?;
                    }
                }
                continue;
            }
            self.change_pte(mm, at).await?;
        }
        Ok(())
    }

    /// Rewrites the PTE at `at` with its VMA's attributes (Linux
    /// `change_pte_range()`): the entry is read, rewritten and stored, tags
    /// initialised on the way, all under the page-table lock, so reclaim or
    /// migration on another CPU cannot unmap and free its frame in between
    /// (they wait for the lock, [`Kernel::wait_rmap_ptls`]).
    async fn change_pte(&self, mm: MmId, at: VirtAddr) -> Result<(), Errno> {
        let Some(ptl) = self.mm_ptl(mm) else {
            return Ok(());
        };
        // A frame whose storage this call reserved already: if that failed,
        // the entry is written awaiting tag storage (no second try).
        let mut reserved_for = None;
        // A path that writes entries without the lock (a claim's migration
        // takes no mmap_lock) may change the entry while the tags are
        // initialised: the entry is read again and rewritten. A page moves
        // at most once (out of tag storage), so two tries always suffice;
        // four are allowed.
        for _ in 0..4 {
            let guard = ptl.lock().await;
            let (pte, vma) = {
                let mms = self.mms.borrow();
                let m = &mms[&mm];
                (
                    m.pt.pte(at),
                    *m.vmas.find(at).expect("BUG: an entry outside every VMA"),
                )
            };
            let leaf = match pte {
                Pte::Present(l) | Pte::AwaitingTagStorage(l) => l,
                // change_pte_range(): a swap entry keeps its slot; the new
                // protection applies when it is swapped in. Reclaim may have
                // swapped the page out since the range's leaves were listed.
                Pte::Swap(_) => return Ok(()),
                // Emptied since the range's leaves were listed (reclaim of
                // a file page unmaps it): nothing to change.
                Pte::None => return Ok(()),
            };
            // A shared file page stays write-protected until it is dirty
            // (can_change_pte_writable() of a write-notify mapping).
            let shared_writable = vma.is_shared()
                && (!matches!(vma.backing, VmaBacking::File { .. })
                    || self.file_page_dirty(leaf.pfn));
            let writable_page = !leaf.attrs.special
                && (shared_writable || (self.exclusive(leaf.pfn) && self.is_anon_page(leaf.pfn)));
            let attrs = leaf_attrs(&vma, writable_page, leaf.attrs.special);
            let new_leaf = Leaf { attrs, ..leaf };
            let new = match pte {
                Pte::Present(_) => Pte::Present(new_leaf),
                // Still awaiting tag storage, with the new attributes.
                Pte::AwaitingTagStorage(_) => Pte::AwaitingTagStorage(new_leaf),
                _ => unreachable!("BUG: checked above"),
            };
            if new == pte {
                return Ok(());
            }
            if let Pte::Present(l) = new
                && self.mem.rules().reserve_in_atomic
                && self.maps_tagged(l)
                && !self.mem.tag_storage_reserved(l.pfn)
                && reserved_for != Some(l.pfn)
            {
                // The design reserves where Linux's mte_sync_tags() runs,
                // but the model's reservation may sleep: it happens with the
                // lock dropped, under the page lock (reclaim and migration
                // try that lock and leave the page), then the entry is read
                // again under the page-table lock.
                drop(guard);
                reserved_for = Some(l.pfn);
                self.reserve_mapped(mm, at, l.pfn).await;
                continue;
            }
            if self.set_pte_locked(mm, at, new).await? {
                return Ok(());
            }
        }
        panic!("BUG: an entry kept changing under mmap_lock held for writing");
    }

    /// Reserves the tag storage of `pfn`, which `mm` maps at `at`, under its
    /// page lock, if the entry still maps it once the lock is held (the
    /// entry's mapping keeps the frame in use: the holder of `mmap_lock` for
    /// writing is the only other path that could unmap it).
    async fn reserve_mapped(&self, mm: MmId, at: VirtAddr, pfn: Pfn) {
        let guard = self.page_locks.lock(pfn).await;
        let still = self
            .current_pte(mm, at)
            .and_then(|p| p.leaf())
            .is_some_and(|l| l.pfn == pfn);
        if still {
            self.reserve_with_retries(pfn, super::PAGE_ORDER).await;
        }
        drop(guard);
    }

    /// A private page (not in a page cache).
    fn is_anon_page(&self, pfn: Pfn) -> bool {
        !self.cache_owner.borrow().contains_key(&pfn)
    }

    /// `madvise(2)`: checks of docs/semantics.md §10, then the advice.
    pub(crate) async fn madvise(
        &self,
        pid: uapi::Pid,
        ptr: TaggedPtr,
        len: u64,
        advice: Advice,
    ) -> Result<(), Errno> {
        let mm = self.mm_of(pid)?;
        if !ptr.addr().as_u64().is_multiple_of(PAGE) {
            return Err(Errno::Inval);
        }
        let rounded = page_align(len).ok_or(Errno::Inval)?;
        ptr.raw().checked_add(rounded).ok_or(Errno::Inval)?;
        if len == 0 {
            return Ok(());
        }
        let lock = self.mm_lock(mm).ok_or(Errno::Srch)?;
        let _guard = lock.write().await;
        if advice == Advice::Unmergeable {
            // ksm_madvise(): unmerge_ksm_pages() before VM_MERGEABLE is
            // cleared; if a copy fails, nothing changes.
            let end = ptr.addr().as_u64().saturating_add(len).min(TASK_SIZE);
            self.ksm_unmerge_range(mm, ptr.addr(), va(end), super::ksm::was_mergeable)
                .await?;
        }
        let outcome = {
            let mut mms = self.mms.borrow_mut();
            let m = mms.get_mut(&mm).ok_or(Errno::Srch)?;
            m.vmas.madvise(ptr.addr(), len, advice)
        };
        // A VMA split at a boundary inside a block splits the block (Linux
        // vma_adjust_trans_huge()): the pieces whose flags changed; dontneed
        // over part of a block splits it in zap_range().
        for piece in outcome.visited.iter().filter(|c| c.changed()) {
            self.split_blocks_in(mm, piece.start, piece.end, true, SplitReason::PartialRange);
        }
        if advice == Advice::PageOut {
            // Linux madvise_cold_or_pageout_pte_range(): a huge entry is
            // split before its pages are paged out (below).
            for piece in &outcome.visited {
                self.split_blocks_in(mm, piece.start, piece.end, false, SplitReason::Pageout);
            }
        }
        if advice == Advice::DontNeed {
            // Linux zap_page_range_single() on every mapped part: private
            // pages go (the mapping falls back to zeros or its object), the
            // entries of shared mappings go too (the data stays cached).
            let mut pfns = Vec::new();
            for piece in &outcome.visited {
                pfns.extend(self.zap_range(mm, piece.start, piece.end));
            }
            self.release_all(pfns).await;
        }
        if advice == Advice::PageOut {
            // madvise_pageout() on every mapped part.
            for piece in &outcome.visited {
                self.pageout_range(mm, piece.start, piece.end).await;
            }
        }
        outcome.result()
    }

    /// The pages `[A, A + len)` touches, `None` outside the user space.
    fn page_span(ptr: TaggedPtr, len: u64) -> Option<(u64, u64)> {
        let a = ptr.addr().as_u64();
        if !is_user_range(a, len) {
            return None;
        }
        let first = vpn(a);
        let last = vpn(a + len - 1);
        Some((first, last - first + 1))
    }

    /// `pin`: a writable pin of every page touched, all or nothing
    /// (docs/semantics.md §11), long-term or short-term.
    pub(crate) async fn pin_with(
        &self,
        pid: uapi::Pid,
        ptr: TaggedPtr,
        len: u64,
        kind: PinKind,
    ) -> Result<(), Errno> {
        let mm = self.mm_of(pid)?;
        if len == 0 {
            return Ok(());
        }
        let (first, count) = Self::page_span(ptr, len).ok_or(Errno::Fault)?;
        {
            let mms = self.mms.borrow();
            let m = mms.get(&mm).ok_or(Errno::Srch)?;
            for i in 0..count {
                let at = va((first + i) * PAGE);
                let vma = m.vmas.find(at).ok_or(Errno::Fault)?;
                // check_vma_flags(): FOLL_WRITE needs VM_WRITE; FOLL_LONGTERM
                // refuses shared file mappings that need dirty tracking.
                if !super::fault::allows(vma, Need::Write) {
                    return Err(Errno::Fault);
                }
                if kind == PinKind::LongTerm
                    && vma.is_shared()
                    && matches!(vma.backing, VmaBacking::File { .. })
                {
                    return Err(Errno::Fault);
                }
            }
        }
        let mut pinned = Vec::new();
        for i in 0..count {
            let at = (first + i) * PAGE;
            let pfn = match self.pin_one(pid, mm, at, kind).await {
                Ok(pfn) => pfn,
                Err(e) => {
                    self.unpin_frames(pinned.iter().map(|&(_, p)| p).collect())
                        .await;
                    return Err(e);
                }
            };
            pinned.push((vpn(at), pfn));
        }
        let mut procs = self.procs.borrow_mut();
        let process = procs.get_mut(&pid).ok_or(Errno::Srch)?;
        for (v, pfn) in pinned {
            process.pins.entry(v).or_default().push(pfn);
        }
        Ok(())
    }

    /// Faults the page at `at` in for writing, moves it out of CMA for a
    /// long-term pin, and pins it (Linux `__get_user_pages()` +
    /// `check_and_migrate_movable_pages()` for `FOLL_LONGTERM`).
    async fn pin_one(
        &self,
        pid: uapi::Pid,
        mm: MmId,
        at: u64,
        kind: PinKind,
    ) -> Result<Pfn, Errno> {
        for _ in 0..8 {
            let pages = self
                .resolve(pid, va(at).to_ptr(), at, 1, Need::Write)
                .await
                .map_err(|_| Errno::Fault)?;
            let pfn = pages[0].pfn;
            // A pinned page of a THP: the PMD is split first (this model's
            // choice, see `huge`: a pin never holds a block).
            let base = va(at).align_down(PMD_SIZE);
            if matches!(self.pmd_at(mm, base), Some(PmdView::Block(_))) {
                self.split_huge_pmd(mm, base, SplitReason::Pin);
                continue;
            }
            if kind == PinKind::LongTerm && self.mem.geometry().is_tag_storage(pfn) {
                let guard = self.page_locks.lock(pfn).await;
                let still = self
                    .current_pte(mm, va(at))
                    .and_then(|p| p.leaf())
                    .map(|l| l.pfn)
                    == Some(pfn);
                if still {
                    self.migrate_page(pfn, MigrateReason::LongTermPin)
                        .await
                        .map_err(|_| Errno::NoMem)?;
                    drop(guard);
                }
                continue;
            }
            // No switch point since resolve() translated it: pin now.
            let mut phys = self.mem.phys_mut();
            phys.alloc
                .frame_mut(pfn)
                .unwrap_or_else(|e| panic!("BUG: mapped frame not in use: {e}"))
                .pins += 1;
            return Ok(pfn);
        }
        Err(Errno::Fault)
    }

    async fn unpin_frames(&self, pfns: Vec<Pfn>) {
        for &pfn in &pfns {
            let mut phys = self.mem.phys_mut();
            let meta = phys
                .alloc
                .frame_mut(pfn)
                .unwrap_or_else(|e| panic!("BUG: pinned frame not in use: {e}"));
            meta.pins = meta.pins.checked_sub(1).expect("BUG: pin underflow");
        }
        self.release_all(pfns).await;
    }

    /// `unpin`: one pin of every page touched dropped; `EINVAL`, nothing
    /// dropped, if one of them has none.
    pub(crate) async fn unpin(
        &self,
        pid: uapi::Pid,
        ptr: TaggedPtr,
        len: u64,
    ) -> Result<(), Errno> {
        self.mm_of(pid)?;
        if len == 0 {
            return Ok(());
        }
        let (first, count) = Self::page_span(ptr, len).ok_or(Errno::Inval)?;
        let pfns = {
            let mut procs = self.procs.borrow_mut();
            let process = procs.get_mut(&pid).ok_or(Errno::Srch)?;
            let all = (first..first + count).all(|v| process.pins.contains_key(&v));
            if !all {
                return Err(Errno::Inval);
            }
            let mut pfns = Vec::new();
            for v in first..first + count {
                let list = process.pins.get_mut(&v).expect("BUG: checked above");
                pfns.push(list.pop().expect("BUG: an empty pin list"));
                if list.is_empty() {
                    process.pins.remove(&v);
                }
            }
            pfns
        };
        self.unpin_frames(pfns).await;
        Ok(())
    }
}
