//! Page faults, `set_pte_at` / `mte_sync_tags` and the tag storage fault
//! (Linux `mm/memory.c`, `arch/arm64/kernel/mte.c`, RFC v3
//! `arch/arm64/kernel/mte_tag_storage.c`).
//!
//! # Fault kinds ([`Kernel::handle_mm_fault`], under `mmap_lock` for reading)
//! | entry | access | action | counter |
//! |---|---|---|---|
//! | none, private anon | read | map the zero page read-only, special | `fault.zero_page` |
//! | none, private anon | write | new zeroed page (tagged VMA: tagged allocation, tags zeroed, best-effort reservation) | `fault.anon` |
//! | none, shared (anon/shm/file) | any | the object's page (created on first touch) | |
//! | none, private shm/file | read | the object's page, read-only | |
//! | none, private shm/file | write | a private copy of the object's page, data and tags | `fault.anon` |
//! | present, read-only, private | write | exclusive anonymous page: made writable (reuse); otherwise a copy, data and tags | `fault.cow` for a copy |
//! | present, read-only, shared | write | made writable | |
//! | awaiting tag storage | any | reserve (or migrate), then map valid | `fault.tag_storage` |
//! | none, private anon, `thp-sizes` order fits | write | a multi-size THP folio (`mthp`), falling back order by order to the row above | `fault.anon` (once), `mthp.SIZE.*` |
//! | none (PMD empty), THP eligible | any | the PMD paths of `huge` (huge zero page, huge page, or fall back to the rows above) | |
//! | block | any | the PMD paths of `huge` | |
//! | swap entry | any | a new page with the slot's data and tags (`machine::swapping`) | `swap.in` |
//!
//! A handler that finds the entry changed after a switch point gives up
//! (Linux `pte_same()` failing) and the access retries; retries are bounded
//! by the caller.
//!
//! # `set_pte_at` (RFC v3)
//! A present, tagged, non-special entry: if the frame's tag storage is not
//! reserved the entry is written [`Pte::AwaitingTagStorage`] instead and the
//! tags are left alone; otherwise the tags are initialised exactly once
//! ([`Memory::init_page_tags_once`]: `PG_mte_lock`/`PG_mte_tagged`). The zero
//! page is special: its tags were zeroed at boot and it is never retagged.
//! The entry's check, the tags' initialisation and the store happen under
//! the address space's page-table lock (a spin lock: nothing may sleep while
//! it is held, invariant 9), as in Linux, so no reclaim or migration can
//! unmap and free the frame in between (they wait for the lock:
//! [`Kernel::wait_rmap_ptls`]). A design that reserves in atomic context
//! reserves before the lock is taken (the model's reservation may sleep).
//! Under `static` tag storage (mainline Linux, no RFC) the page's storage is
//! "reserved" on the spot (a block reference that cannot fail), so no entry
//! ever awaits tag storage there. Tags restored at swap-in into a page
//! without reserved storage are written then instead of zeros
//! ([`Kernel::init_or_restore_tags`]).
//!
//! # Tag storage fault
//! Under the page lock, the entry is checked again; a page that lies in tag
//! storage is migrated to a tagged allocation outside it (the entry becomes
//! awaiting on the new page and the retry maps it); otherwise its tag
//! storage is reserved with [`RESERVE_ATTEMPTS`] tries; if that keeps
//! failing, the page is migrated to a page whose storage could be reserved.
//!
//! Migration itself (the page moved, its mappings rewritten) is
//! `machine::migrate`'s ([`Kernel::migrate_page`]).

use mte::{Pfn, VirtAddr};
use uapi::event::{Event, FaultKind, FaultOutcome};
use uapi::{Errno, FaultCode};

use super::migrate::MigrateReason;
use super::{Kernel, ObjectKind, PAGE_ORDER};
use crate::mem::Gfp;
use crate::mm::layout::PAGE_SIZE;
use crate::mm::{
    Access, Block, Leaf, LeafAttrs, Level, MmId, ObjectId, Pgoff, Pte, VmFlags, Vma, VmaBacking,
    Walk,
};
use crate::phys::MigrateError;
use crate::phys::Order;
use tagstore::OnReserveFailure;

/// Tries of `reserve_tag_storage()` in the tag storage fault before the
/// page is migrated instead (transient failures only; a permanent one
/// migrates at once).
pub(crate) const RESERVE_ATTEMPTS: u32 = 3;

/// What an access needs of a mapping.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(crate) enum Need {
    /// Loads, LDG, kernel reads of user memory.
    Read,
    /// Stores, tag stores, kernel writes of user memory.
    Write,
}

/// Why a fault could not be resolved.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(crate) enum FaultError {
    /// A signal for the process.
    Signal(FaultCode),
    /// No memory (Linux `VM_FAULT_OOM`).
    OutOfMemory,
}

impl FaultError {
    /// What the process sees (see the module doc of `machine`).
    pub(crate) fn code(self) -> FaultCode {
        match self {
            FaultError::Signal(code) => code,
            FaultError::OutOfMemory => FaultCode::SegvAccErr,
        }
    }
}

impl From<Errno> for FaultError {
    fn from(_: Errno) -> Self {
        FaultError::OutOfMemory
    }
}

/// Whether `vma` allows a user access (docs/semantics.md §1: write implies
/// read; exec-only is not readable with Enhanced PAN).
pub(crate) fn allows(vma: &Vma, need: Need) -> bool {
    match need {
        Need::Read => vma.flags.intersects(VmFlags::READ | VmFlags::WRITE),
        Need::Write => vma.flags.contains(VmFlags::WRITE),
    }
}

/// Linux `vm_get_page_prot()` (arm64 `protection_map`, plus
/// `MT_NORMAL_TAGGED` for `VM_MTE`): the attributes of an entry of `vma`;
/// `writable_page` says whether this page may be written through it
/// (exclusive anonymous page, shared mapping).
pub(crate) fn leaf_attrs(vma: &Vma, writable_page: bool, special: bool) -> LeafAttrs {
    let f = vma.flags;
    let (r, w, x) = (
        f.contains(VmFlags::READ),
        f.contains(VmFlags::WRITE),
        f.contains(VmFlags::EXEC),
    );
    let access = if !(r || w || x) {
        Access::None
    } else if w && writable_page {
        Access::ReadWrite
    } else if r || w {
        Access::ReadOnly
    } else {
        Access::ExecOnly
    };
    LeafAttrs {
        access,
        tagged: vma.is_tagged(),
        special,
        young: true,
        dirty: access == Access::ReadWrite,
    }
}

impl Kernel {
    /// Records a fault that ended in `outcome` at the page `va`.
    pub(crate) fn fault_event(&self, kind: FaultKind, va: VirtAddr, outcome: FaultOutcome) {
        self.trace().emit(|| Event::Fault {
            kind,
            addr: va,
            outcome,
        });
    }

    /// `reserve_tag_storage()` of one page with bounded retries of transient
    /// failures; whether it is reserved.
    pub(crate) async fn reserve_with_retries(&self, pfn: Pfn, order: Order) -> bool {
        for _ in 0..RESERVE_ATTEMPTS {
            match self
                .mem
                .reserve_tag_storage(pfn, order, &mut self.mover())
                .await
            {
                Ok(()) => return true,
                Err(e) if e.is_transient() => continue,
                Err(_) => return false,
            }
        }
        false
    }

    /// The storage of a page about to be mapped tagged, reserved right here
    /// when the design can do that where sleeping is forbidden
    /// ([`tagstore::Rules::reserve_in_atomic`]: a carve-out only counts a
    /// reference); otherwise `false`, and the page is mapped awaiting tag
    /// storage for the fault to reserve.
    pub(crate) async fn reserve_in_atomic(&self, pfn: Pfn, order: Order) -> bool {
        self.mem.rules().reserve_in_atomic && self.reserve_with_retries(pfn, order).await
    }

    /// Whether mapping `leaf` present runs `mte_sync_tags()` on its page: a
    /// tagged, non-special page on a machine with MTE.
    pub(crate) fn maps_tagged(&self, leaf: Leaf) -> bool {
        leaf.attrs.tagged && !leaf.attrs.special && self.has_mte()
    }

    /// Linux `set_pte_at()` with the RFC's `mte_sync_tags()`: writes `new`
    /// (or, for a tagged page without reserved tag storage, the same leaf
    /// awaiting tag storage) if the entry is still `expected`. `Ok(false)`
    /// if it changed meanwhile (nothing written).
    ///
    /// The caller keeps the frame of `new` in use until this returns (a
    /// fresh page, or one it holds the page lock of); a design that reserves
    /// in atomic context reserves here, before the page-table lock, because
    /// the model's reservation may sleep (`static`'s block reference takes
    /// `tag_blocks_lock`, where Linux only counts).
    pub(crate) async fn set_pte_at(
        &self,
        mm: MmId,
        va: VirtAddr,
        expected: Pte,
        new: Pte,
    ) -> Result<bool, Errno> {
        if let Pte::Present(leaf) = new
            && self.maps_tagged(leaf)
            && !self.mem.tag_storage_reserved(leaf.pfn)
        {
            self.reserve_in_atomic(leaf.pfn, PAGE_ORDER).await;
        }
        // pte_offset_map_lock(): the check, mte_sync_tags() and the store
        // under the page-table lock.
        let Some(ptl) = self.mm_ptl(mm) else {
            return Ok(false);
        };
        let _ptl = ptl.lock().await;
        if self.current_pte(mm, va) != Some(expected) {
            return Ok(false);
        }
        self.set_pte_locked(mm, va, new).await
    }

    /// The part of `set_pte_at()` under the page-table lock of `mm`, which
    /// the caller holds and under which it read the entry now at `va`:
    /// `mte_sync_tags()` (tags initialised exactly once, or the entry
    /// written awaiting tag storage when the page's is not reserved), then
    /// the store.
    ///
    /// While the lock is held no reverse-map walker (reclaim, migration,
    /// KSM) rewrites an entry of `mm` ([`Kernel::wait_rmap_ptls`]), so the
    /// frame the entry maps stays in use across the tags' initialisation,
    /// which is a switch point (`try_page_mte_tagging()`'s atomic bit; its
    /// wait is Linux's spin on `PG_mte_tagged`, not a sleep). The entry is
    /// compared again after it, for the paths that write entries with no
    /// switch point and without the lock: `Ok(false)` if it changed.
    pub(crate) async fn set_pte_locked(
        &self,
        mm: MmId,
        va: VirtAddr,
        new: Pte,
    ) -> Result<bool, Errno> {
        let before = self.current_pte(mm, va);
        let new = match new {
            Pte::Present(leaf) if self.maps_tagged(leaf) => {
                if self.mem.tag_storage_reserved(leaf.pfn) {
                    self.init_or_restore_tags(leaf.pfn).await;
                    new
                } else {
                    Pte::AwaitingTagStorage(leaf)
                }
            }
            other => other,
        };
        if self.current_pte(mm, va) != before {
            return Ok(false);
        }
        self.write_pte(mm, va, new)?;
        Ok(true)
    }

    /// Linux `handle_mm_fault()` for the page holding `va` in `mm`, entered
    /// from a user access (`force`: a ptrace access with `FOLL_FORCE`, which
    /// ignores the VMA's permissions for private mappings).
    pub(crate) async fn handle_mm_fault(
        &self,
        mm: MmId,
        va: VirtAddr,
        need: Need,
        force: bool,
    ) -> Result<(), FaultError> {
        let Some(lock) = self.mm_lock(mm) else {
            return Err(FaultError::Signal(FaultCode::SegvMapErr));
        };
        let _guard = lock.read().await;
        let page = va.align_down(PAGE_SIZE);
        let (vma, walk) = {
            let mms = self.mms.borrow();
            let Some(m) = mms.get(&mm) else {
                return Err(FaultError::Signal(FaultCode::SegvMapErr));
            };
            (m.vmas.find(va).copied(), m.pt.walk(page))
        };
        let Some(vma) = vma else {
            return Err(FaultError::Signal(FaultCode::SegvMapErr));
        };
        let permitted = if force {
            need == Need::Read || !vma.is_shared() || allows(&vma, need)
        } else {
            allows(&vma, need)
        };
        if !permitted {
            return Err(FaultError::Signal(FaultCode::SegvAccErr));
        }
        match walk {
            Walk::Empty { level } => {
                // Linux __handle_mm_fault(): create_huge_pmd() on pmd_none()
                // where THP applies, falling back to 4 KiB pages.
                if level != Level::Pte
                    && let Some(base) = self.thp_base(&vma, page)
                    && self
                        .do_huge_pmd_anonymous_page(mm, base, &vma, need)
                        .await?
                {
                    return Ok(());
                }
                self.do_missing(mm, page, &vma, need).await
            }
            Walk::Pte(Pte::AwaitingTagStorage(leaf)) => {
                self.tag_storage_fault(mm, page, leaf).await
            }
            Walk::Pte(Pte::Present(leaf)) => {
                if need == Need::Write && !self.write_resolved(&vma, leaf, force) {
                    self.wp_fault(mm, page, &vma, leaf).await
                } else {
                    // Spurious (another CPU resolved it): retry.
                    Ok(())
                }
            }
            Walk::Pte(Pte::None) => unreachable!("BUG: a walk reports Pte::None as Empty"),
            Walk::Pte(Pte::Swap(slot)) => self.do_swap_page(mm, page, &vma, slot, need).await,
            Walk::Block {
                base,
                block: Block::AwaitingTagStorage(leaf),
            } => self.huge_tag_storage_fault(mm, base, leaf).await,
            Walk::Block {
                base,
                block: Block::Present(leaf),
            } => self.huge_pmd_fault(mm, base, &vma, leaf, need, force).await,
        }
    }

    /// Whether a present entry already allows the write: writable, or for a
    /// forced write, a page this mapping may write (shared mapping, or an
    /// exclusive private page).
    pub(crate) fn write_resolved(&self, vma: &Vma, leaf: Leaf, force: bool) -> bool {
        leaf.attrs.access.is_writable()
            || (force && !leaf.attrs.special && (vma.is_shared() || self.exclusive(leaf.pfn)))
    }

    /// An anonymous page mapped once, in no page cache and not a KSM page
    /// (Linux `PageAnonExclusive()` / the reuse test of `do_wp_page()`:
    /// `wp_can_reuse_anon_folio()` never reuses a KSM folio).
    pub(crate) fn exclusive(&self, pfn: Pfn) -> bool {
        pfn != self.mem.zero_page()
            && self.rmap.borrow().count(pfn) == 1
            && !self.cache_owner.borrow().contains_key(&pfn)
            && !self.is_ksm(pfn)
            && !self.swap_cache_slot.borrow().contains_key(&pfn)
    }

    /// A fault on a missing entry (Linux `do_anonymous_page()`,
    /// `do_read_fault()`, `do_cow_fault()`, `do_shared_fault()`).
    async fn do_missing(
        &self,
        mm: MmId,
        va: VirtAddr,
        vma: &Vma,
        need: Need,
    ) -> Result<(), FaultError> {
        match vma.backing {
            VmaBacking::Anon => {
                // Linux maps the zero page before anon_vma_prepare(): a VMA
                // that was only read has no anon_vma (and fork copies none
                // of its entries).
                if need == Need::Read {
                    let leaf = Leaf {
                        pfn: self.mem.zero_page(),
                        attrs: leaf_attrs(vma, false, true),
                    };
                    if self
                        .set_pte_at(mm, va, Pte::None, Pte::Present(leaf))
                        .await?
                    {
                        self.bump(|c| c.fault_zero_page += 1);
                        self.fault_event(FaultKind::ZeroPage, va, FaultOutcome::Mapped);
                    }
                    return Ok(());
                }
                // alloc_anon_folio(): an mTHP folio where an order applies.
                if self.do_anonymous_mthp(mm, va, vma).await? {
                    return Ok(());
                }
                self.prepare_anon(mm, va);
                let pfn = self.alloc_anon(vma.is_tagged()).await?;
                let leaf = Leaf {
                    pfn,
                    attrs: leaf_attrs(vma, true, false),
                };
                // A page table the entry needs may fail to allocate (Linux
                // allocates it first, in __handle_mm_fault()): the new page
                // goes back, or it would be held by nobody.
                let mapped = match self.set_pte_at(mm, va, Pte::None, Pte::Present(leaf)).await {
                    Ok(mapped) => mapped,
                    Err(e) => {
                        self.release_if_unused(pfn).await;
                        return Err(e.into());
                    }
                };
                if mapped {
                    self.bump(|c| c.fault_anon += 1);
                    self.fault_event(FaultKind::Anon, va, FaultOutcome::Mapped);
                } else {
                    self.release_if_unused(pfn).await;
                }
                Ok(())
            }
            VmaBacking::Shm { object, .. } | VmaBacking::File { object, .. } => {
                let pgoff = vma.pgoff_of(va);
                let tagged = vma.is_tagged();
                let cached = self.object_page(object, pgoff, tagged).await?;
                let owner = Some((object, pgoff));
                if !vma.is_shared() && need == Need::Write {
                    self.prepare_anon(mm, va);
                    if self.cow_copy(mm, va, vma, Pte::None, cached, owner).await? {
                        self.bump(|c| c.fault_anon += 1);
                        self.fault_event(FaultKind::Anon, va, FaultOutcome::Mapped);
                    }
                    return Ok(());
                }
                // The cached page itself: writable in a shared mapping,
                // read-only (copied on a later write) in a private one. A
                // shared file mapping is write-notify: writable only for a
                // write fault, which dirties the page (see `reclaim`).
                let file = matches!(vma.backing, VmaBacking::File { .. });
                let writable = vma.is_shared() && (!file || need == Need::Write);
                let leaf = Leaf {
                    pfn: cached,
                    attrs: leaf_attrs(vma, writable, false),
                };
                // Linux finish_fault() maps the folio __do_fault() returned
                // locked (and referenced): reclaim and migration, which try
                // the page lock, leave it until it is mapped. Looked up
                // again once locked: the lock may have slept while reclaim
                // dropped the page or a claim moved it (then the access
                // retries).
                let guard = self.page_locks.lock(cached).await;
                if !self.caches(cached, owner) {
                    return Ok(());
                }
                let mapped = self
                    .set_pte_at(mm, va, Pte::None, Pte::Present(leaf))
                    .await?;
                drop(guard);
                if mapped && writable && file {
                    self.mark_dirty(object, pgoff);
                }
                Ok(())
            }
        }
    }

    /// Linux `copy_user_highpage()` with arm64's MTE part: the data of
    /// `src` into the new frame `dst`, and with `tags` its tags too, `dst`
    /// then marked tagged (its tags are initialised: `set_pte_at` must not
    /// zero them).
    pub(crate) fn copy_user_page(&self, dst: Pfn, src: Pfn, tags: bool) {
        self.trace().emit(|| Event::CowCopy {
            from: src,
            to: dst,
            tags_copied: tags,
        });
        self.mem
            .phys_mut()
            .contents
            .copy_page(dst, src)
            .expect("BUG: allocated frames are present");
        if tags {
            self.mem
                .copy_tags(dst, src)
                .expect("BUG: allocated frames are present");
            self.mem
                .set_page_mte_tagged(dst)
                .expect("BUG: a new frame is in use");
        }
    }

    /// Linux `anon_vma_prepare()`.
    pub(crate) fn prepare_anon(&self, mm: MmId, va: VirtAddr) {
        let mut mms = self.mms.borrow_mut();
        let m = mms.get_mut(&mm).expect("BUG: faulting in a gone mm");
        m.vmas.prepare_anon(va, &mut self.anon_ids.borrow_mut());
    }

    /// A new zeroed anonymous page; tagged: a tagged allocation with tags
    /// zeroed where its storage could be reserved (best effort).
    async fn alloc_anon(&self, tagged: bool) -> Result<Pfn, FaultError> {
        let gfp = if tagged {
            Gfp::USER_TAGGED
        } else {
            Gfp::USER_ZERO
        };
        self.alloc_user_page(tagged, gfp)
            .await
            .ok_or(FaultError::OutOfMemory)
    }

    /// An order-0 user page (a tagged allocation for a `VM_MTE` mapping),
    /// reclaiming when none is free (Linux `__alloc_pages_slowpath()` ->
    /// `__alloc_pages_direct_reclaim()`, see `reclaim`): `None` only when
    /// reclaim can free nothing more (out of memory).
    pub(crate) async fn alloc_user_page(&self, tagged: bool, gfp: Gfp) -> Option<Pfn> {
        for _ in 0..=super::reclaim::MAX_RECLAIM_RETRIES {
            let got = if tagged {
                let pfn = self
                    .mem
                    .alloc_tagged(PAGE_ORDER, gfp, &mut self.mover())
                    .await
                    .ok()
                    .map(|page| page.pfn);
                // `mistake=tags-by-pfn`: the frame's last owner may have
                // left saved tags behind.
                if let Some(pfn) = pfn {
                    self.stale_saved_tags_at_allocation(pfn, gfp.zero_tags);
                }
                pfn
            } else {
                self.mem.alloc(PAGE_ORDER, gfp).ok()
            };
            if got.is_some() {
                return got;
            }
            if !self.direct_reclaim_retry().await {
                return None;
            }
        }
        None
    }

    /// The page cache page of `object` at `pgoff`, created zeroed on first
    /// touch (Linux `shmem_get_folio()`, `filemap_fault()`); a regular
    /// file's pages are never tagged allocations.
    async fn object_page(
        &self,
        object: crate::mm::ObjectId,
        pgoff: Pgoff,
        tagged: bool,
    ) -> Result<Pfn, FaultError> {
        let lookup = |k: &Kernel| {
            let objects = k.objects.borrow();
            let o = objects.get(&object).expect("BUG: a VMA's object is gone");
            (o.pages.get(&pgoff).copied(), o.kind)
        };
        let (found, kind) = lookup(self);
        if let Some(pfn) = found {
            return Ok(pfn);
        }
        let pfn = self.alloc_anon(tagged && kind != ObjectKind::File).await?;
        // Another CPU may have created it while this one slept.
        if let (Some(theirs), _) = lookup(self) {
            self.release_if_unused(pfn).await;
            return Ok(theirs);
        }
        if kind == ObjectKind::File {
            // filemap_read_folio(): a page reclaim dropped comes back from
            // the file (or the cleancache) with what was written back.
            self.read_file_page(object, pgoff, pfn);
        }
        self.objects
            .borrow_mut()
            .get_mut(&object)
            .expect("BUG: a VMA's object is gone")
            .pages
            .insert(pgoff, pfn);
        self.cache_owner.borrow_mut().insert(pfn, (object, pgoff));
        self.lru_add(pfn);
        Ok(pfn)
    }

    /// A write to a present entry that does not allow it (Linux
    /// `do_wp_page()`).
    async fn wp_fault(
        &self,
        mm: MmId,
        va: VirtAddr,
        vma: &Vma,
        leaf: Leaf,
    ) -> Result<(), FaultError> {
        if vma.is_shared() {
            // wp_page_shared(): the object's page, now writable; a file
            // page is dirtied (do_page_mkwrite(), fault_dirty_shared_page()).
            let new = Leaf {
                attrs: leaf_attrs(vma, true, false),
                ..leaf
            };
            if self
                .set_pte_at(mm, va, Pte::Present(leaf), Pte::Present(new))
                .await?
                && let VmaBacking::File { object, .. } = vma.backing
            {
                self.mark_dirty(object, vma.pgoff_of(va));
            }
            return Ok(());
        }
        if !leaf.attrs.special && self.exclusive(leaf.pfn) {
            // wp_page_reuse(): nobody else maps it.
            let new = Leaf {
                attrs: leaf_attrs(vma, true, false),
                ..leaf
            };
            self.set_pte_at(mm, va, Pte::Present(leaf), Pte::Present(new))
                .await?;
            return Ok(());
        }
        self.prepare_anon(mm, va);
        if self
            .cow_copy(mm, va, vma, Pte::Present(leaf), leaf.pfn, None)
            .await?
        {
            self.bump(|c| c.fault_cow += 1);
            self.fault_event(FaultKind::Cow, va, FaultOutcome::Mapped);
        }
        Ok(())
    }

    /// Replaces the entry `expected` at `va` with a private copy of `src`,
    /// data and tags (Linux `wp_page_copy()`, arm64 `copy_highpage()`);
    /// whether the copy was mapped. The source is locked across the
    /// allocation so that a claim cannot move it meanwhile.
    pub(crate) async fn cow_copy(
        &self,
        mm: MmId,
        va: VirtAddr,
        vma: &Vma,
        expected: Pte,
        src: Pfn,
        cached: Option<(ObjectId, Pgoff)>,
    ) -> Result<bool, FaultError> {
        let guard = self.page_locks.lock(src).await;
        // The entry still maps `src` (its mapping keeps it), or, for a page
        // cache page this entry does not map (`cached`: its object and
        // offset), the cache still holds it: reclaim may have dropped it
        // and a claim moved it while the lock slept. Locked, it stays.
        if self.current_pte(mm, va) != Some(expected) || !self.caches(src, cached) {
            return Ok(false);
        }
        let keep_tags = vma.is_tagged() && self.mem.page_mte_tagged(src);
        let Some(dst) = self
            .alloc_copy_target_reclaiming(vma.is_tagged(), keep_tags)
            .await
        else {
            return Err(FaultError::OutOfMemory);
        };
        if self.current_pte(mm, va) != Some(expected) {
            drop(guard);
            self.release_if_unused(dst).await;
            return Ok(false);
        }
        self.copy_user_page(dst, src, keep_tags);
        let leaf = Leaf {
            pfn: dst,
            attrs: leaf_attrs(vma, true, false),
        };
        let mapped = self.set_pte_at(mm, va, expected, Pte::Present(leaf)).await;
        drop(guard);
        let Ok(mapped) = mapped else {
            // No page table for the entry: the copy goes back.
            self.release_if_unused(dst).await;
            return mapped.map_err(Into::into);
        };
        if mapped {
            self.release_if_unused(src).await;
        } else {
            self.release_if_unused(dst).await;
        }
        Ok(mapped)
    }

    /// Whether `pfn` is still the page cache page `owner` (its object and
    /// offset); `None`: nothing to check.
    fn caches(&self, pfn: Pfn, owner: Option<(ObjectId, Pgoff)>) -> bool {
        owner.is_none_or(|o| self.cache_owner.borrow().get(&pfn) == Some(&o))
    }

    /// A fault on an entry awaiting tag storage (RFC v3
    /// `handle_folio_missing_tag_storage()`); see the module doc.
    async fn tag_storage_fault(
        &self,
        mm: MmId,
        va: VirtAddr,
        leaf: Leaf,
    ) -> Result<(), FaultError> {
        self.bump(|c| c.fault_tag_storage += 1);
        let pfn = leaf.pfn;
        let guard = self.page_locks.lock(pfn).await;
        if self.current_pte(mm, va) != Some(Pte::AwaitingTagStorage(leaf)) {
            return Ok(());
        }
        let in_tag_storage = self.mem.geometry().is_tag_storage(pfn);
        if !in_tag_storage
            && !self.reserve_with_retries(pfn, PAGE_ORDER).await
            && self.mem.rules().on_reserve_failure == OnReserveFailure::RetryAndReplay
        {
            // RFC v2 (and `mistake=retry-forever`): never migrate a page
            // that is not tag storage itself; the access replays and the
            // next fault retries the reservation. A block that can never
            // be claimed makes the replays run past the bound: `stuck`.
            drop(guard);
            self.fault_event(FaultKind::TagStorage, va, FaultOutcome::Failed);
            return Ok(());
        }
        if in_tag_storage || !self.mem.tag_storage_reserved(pfn) {
            let moved = self.migrate_page(pfn, MigrateReason::OutOfTagStorage).await;
            drop(guard);
            let outcome = match moved {
                Ok(_) => FaultOutcome::Migrated,
                Err(_) => FaultOutcome::Failed,
            };
            self.fault_event(FaultKind::TagStorage, va, outcome);
            return match moved {
                Ok(_) => Ok(()),
                // Linux: migration fails while the page holds an extra
                // reference (a short-term pin, `folio_migrate_mapping()`);
                // the fault returns and the access replays until the pin
                // goes (past the bound: `stuck`).
                Err(MigrateError::Pinned | MigrateError::Busy) => Ok(()),
                Err(_) => Err(FaultError::OutOfMemory),
            };
        }
        // Reserved in place: RFC v3 restores tags saved by frame inside
        // reserve_tag_storage() (`tags_by_pfn`: its warning).
        self.restored_in_reservation(pfn);
        let mapped = self
            .set_pte_at(mm, va, Pte::AwaitingTagStorage(leaf), Pte::Present(leaf))
            .await?;
        drop(guard);
        if mapped {
            self.fault_event(FaultKind::TagStorage, va, FaultOutcome::Mapped);
        }
        Ok(())
    }
}
