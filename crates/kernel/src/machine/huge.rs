//! Transparent huge pages and the huge zero page (Linux v6.8
//! `mm/huge_memory.c`, the PMD paths of `mm/memory.c`; docs/model.md §2 "The
//! huge zero page").
//!
//! # Eligibility ([`Kernel::thp_base`], Linux `hugepage_vma_check()` +
//! `thp_vma_suitable_order()`)
//! Private anonymous VMAs only: shared anonymous memory is shmem, whose THP
//! setting (`shmem_enabled`) is `never` by default in Linux and is not
//! modelled; file pages are never huge here (no large folios in the page
//! cache of the model). The aligned 2 MiB around the address must lie inside
//! the VMA. `thp=always`: unless `VM_NOHUGEPAGE`; `thp=madvise`: only with
//! `VM_HUGEPAGE`; `thp=never`: never.
//!
//! # Faults on a PMD
//! | PMD | access | action | counter |
//! |---|---|---|---|
//! | none, eligible | read, `huge-zero-page=on` | map the huge zero page read-only, special | `fault.zero_page` |
//! | none, eligible | write / tag write | a new order-9 page, data and tags zeroed, mapped by a block | `fault.anon` (once) |
//! | none, eligible | any, no order-9 page free | direct compaction once (`compact`) and retry; still none: fall back to 4 KiB pages (`VM_FAULT_FALLBACK`) | as for small pages |
//! | huge zero page | write | split into 512 zero-page PTEs; the retry copies one page | `fault.cow` |
//! | anon block, read-only, shared (fork) | write | split the PMD; the retry copies one 4 KiB page (6.8) | `fault.cow` |
//! | anon block, read-only, exclusive | write | made writable (reuse), under the head frame's page lock (reclaim keeps such a block) | |
//! | awaiting tag storage | any | reserve the 512 pages' storage; failing that, split (the huge zero page into zero-page PTEs, a THP into PTEs awaiting tag storage, which the small-page path reserves or migrates) | `fault.tag_storage` |
//!
//! # `set_pmd_at` ([`Kernel::set_pmd_at`])
//! The same RFC protocol as `set_pte_at()`, for the 512 frames at once: a
//! present tagged block whose frames all have reserved tag storage has the
//! tags of each frame initialised once (`PG_mte_lock`/`PG_mte_tagged`);
//! otherwise it is written [`Block::AwaitingTagStorage`]. Unlike the 4 KiB
//! zero page, the huge zero page goes through this too: it is an ordinary
//! page whose tags are zeroed the first time it is mapped tagged (docs/model.md
//! §2), under dynamic tag storage through the fault-on-access path.
//!
//! # Decisions
//! - A THP is allocated as one order-9 block (`never from tag storage` when
//!   tagged, reserved best effort) and then split into 512 order-0
//!   allocations at once (Linux `split_page()`), each with its own reference
//!   and map count; a block mapping counts once on each of its frames (the
//!   rmap records it for all 512: Linux `page_mapcount()`). Freeing,
//!   pinning and migrating then work page by page, so splitting a PMD never
//!   has to split a folio, and a partial unmap frees exactly the unmapped
//!   pages (Linux splits the folio and frees them too, via the deferred
//!   split queue).
//! - Every block mapping has a deposited page-table frame (Linux
//!   `pgtable_trans_huge_deposit()`, also for the huge zero page), kept in
//!   [`super::Mm::deposits`]: splitting a PMD never needs memory, and
//!   clearing a block frees its deposit (`zap_deposited_table()`).
//! - Migration of a page of a THP (tag storage claims, the tag storage
//!   fault) splits every PMD mapping it first and migrates 4 KiB pages
//!   (Linux can migrate a whole THP; splitting keeps one migration path and
//!   loses nothing the user can observe: data and tags move with each page).
//! - `pin`, `madvise(pageout)`, and `munmap`/`mprotect`/`madvise(dontneed)`
//!   over part of a block split the PMD (`__split_huge_pmd()`); over a whole
//!   block they act on the block (`zap_huge_pmd()`, `change_huge_pmd()`).
//! - The huge zero page is allocated unmovable and tagged-capable (outside
//!   CMA), as one order-9 block, on first use, and never freed.

use mte::{Pfn, VirtAddr};
use platform::Mistake;
use platform::spec::Thp;
use uapi::Errno;
use uapi::event::{Event, FaultKind, FaultOutcome, SplitReason};

use super::fault::{FaultError, Need, leaf_attrs};
use super::{Kernel, Mm};
use crate::mem::Gfp;
use crate::mm::layout::{PAGES_PER_PMD, PMD_SIZE};
use crate::mm::{
    Block, Leaf, MapLevel, MmId, Pte, RmapEntry, TableFrames, VmFlags, Vma, VmaBacking, Walk,
};
use crate::phys::Order;

/// The order of a PMD-sized page (Linux `HPAGE_PMD_ORDER`).
pub(crate) const HPAGE_ORDER: Order = Order::new(9);

const _: () = assert!(HPAGE_ORDER.pages() == PAGES_PER_PMD);

/// What the PMD covering an address holds.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(crate) enum PmdView {
    /// `pmd_none()` (or an upper level is empty).
    Empty,
    /// A PTE table.
    Table,
    Block(Block),
}

impl PmdView {
    pub(crate) fn of(walk: Walk) -> PmdView {
        match walk {
            Walk::Empty { level } if level != crate::mm::Level::Pte => PmdView::Empty,
            Walk::Block { block, .. } => PmdView::Block(block),
            Walk::Empty { .. } | Walk::Pte(_) => PmdView::Table,
        }
    }
}

/// The 4 KiB view of what a walk found for the page at `page`: a block gives
/// the entry a split would give for that page (Linux: `pmd_page() + index`).
pub(crate) fn page_entry(walk: Walk, page: VirtAddr) -> Pte {
    match walk {
        Walk::Empty { .. } => Pte::None,
        Walk::Pte(p) => p,
        Walk::Block { base, block } => {
            let index = (page.as_u64() - base.as_u64()) / crate::mm::layout::PAGE_SIZE;
            let leaf = block.leaf();
            let l = Leaf {
                pfn: leaf.pfn + index,
                ..leaf
            };
            match block {
                Block::Present(_) => Pte::Present(l),
                Block::AwaitingTagStorage(_) => Pte::AwaitingTagStorage(l),
            }
        }
    }
}

/// Hands out the deposited page-table frame of a block to its split.
struct Deposit(Option<Pfn>);

impl TableFrames for Deposit {
    fn alloc_table(&mut self) -> Option<Pfn> {
        self.0.take()
    }

    fn free_table(&mut self, pfn: Pfn) {
        panic!("BUG: a split freed table {pfn}");
    }
}

impl Gfp {
    /// The huge zero page: unmovable, outside CMA (tagged-capable), zeroed.
    const HUGE_ZERO: Gfp = Gfp {
        movable: false,
        tagged: true,
        zero: true,
        zero_tags: false,
        kernel: false,
    };
}

fn block_of(block: Block, leaf: Leaf) -> Block {
    match block {
        Block::Present(_) => Block::Present(leaf),
        Block::AwaitingTagStorage(_) => Block::AwaitingTagStorage(leaf),
    }
}

impl Kernel {
    /// The base of the 2 MiB block that may map `va` in `vma` with a huge
    /// page, `None` if THP does not apply (see the module doc).
    pub(crate) fn thp_base(&self, vma: &Vma, va: VirtAddr) -> Option<VirtAddr> {
        if vma.backing != VmaBacking::Anon || vma.is_shared() {
            return None;
        }
        let enabled = match self.platform.settings().thp {
            Thp::Never => false,
            Thp::Madvise => vma.flags.contains(VmFlags::HUGEPAGE),
            Thp::Always => !vma.flags.contains(VmFlags::NOHUGEPAGE),
        };
        let base = va.align_down(PMD_SIZE);
        let fits = vma.start <= base && base.as_u64() + PMD_SIZE <= vma.end.as_u64();
        (enabled && fits).then_some(base)
    }

    /// The huge zero page, allocated on first use (Linux
    /// `mm_get_huge_zero_page()`); `None` if no order-9 page is free.
    pub(crate) fn huge_zero_page(&self) -> Option<Pfn> {
        if let Some(pfn) = self.huge_zero.get() {
            return Some(pfn);
        }
        let pfn = self.mem.alloc(HPAGE_ORDER, Gfp::HUGE_ZERO).ok()?;
        self.huge_zero.set(Some(pfn));
        Some(pfn)
    }

    /// What the PMD for `base` holds now; `None` if the address space is gone.
    pub(crate) fn pmd_at(&self, mm: MmId, base: VirtAddr) -> Option<PmdView> {
        self.mms
            .borrow()
            .get(&mm)
            .map(|m| PmdView::of(m.pt.walk(base)))
    }

    /// A new page-table frame to deposit with a block.
    pub(crate) fn alloc_deposit(&self) -> Result<Pfn, Errno> {
        self.frames().alloc_table().ok_or(Errno::NoMem)
    }

    /// Writes (`Some`) or clears (`None`) the block at `base` with no
    /// bookkeeping but the TLB (Linux `set_pmd_at()`,
    /// `pmdp_huge_get_and_clear()` + `flush_pmd_tlb_range()`).
    /// `Err(ENOMEM)` if an upper table could not be allocated (nothing
    /// changed).
    fn raw_set_block(
        &self,
        m: &mut Mm,
        base: VirtAddr,
        new: Option<Block>,
    ) -> Result<Option<Block>, Errno> {
        let old = match new {
            Some(b) => match m.pt.set_block(base, b, &mut self.frames()) {
                Ok(old) => old,
                Err(crate::mm::PgtableError::NoMemory { .. }) => return Err(Errno::NoMem),
                Err(e) => panic!("BUG: writing the block at {base}: {e}"),
            },
            None => {
                m.pt.clear_block(base)
                    .unwrap_or_else(|e| panic!("BUG: clearing the block at {base}: {e}"))
            }
        };
        m.tlb.invalidate(base);
        Ok(old)
    }

    /// Adds (`add`) or removes the mapping of a block, at `level` (the
    /// block itself, or the 512 PTEs of its split), on each of its frames:
    /// rmap entries and map counts. Special blocks have none.
    fn account_block(&self, mm: MmId, base: VirtAddr, leaf: Leaf, level: MapLevel, add: bool) {
        if leaf.attrs.special {
            return;
        }
        let entry_va = |i: u64| match level {
            MapLevel::Pmd => base,
            MapLevel::Pte => base
                .checked_add(i * crate::mm::layout::PAGE_SIZE)
                .expect("BUG: a block beyond the address space"),
        };
        let mut rmap = self.rmap.borrow_mut();
        let mut phys = self.mem.phys_mut();
        for i in 0..PAGES_PER_PMD {
            let pfn = leaf.pfn + i;
            let entry = RmapEntry {
                mm,
                va: entry_va(i),
                level,
            };
            let meta = phys
                .alloc
                .frame_mut(pfn)
                .unwrap_or_else(|e| panic!("BUG: a block's frame not in use: {e}"));
            if add {
                self.lru
                    .borrow_mut()
                    .add(pfn, super::lru::LruList::InactiveAnon);
                rmap.add(pfn, entry)
                    .unwrap_or_else(|e| panic!("BUG: rmap out of step: {e}"));
                meta.mapcount += 1;
            } else {
                rmap.remove(pfn, entry)
                    .unwrap_or_else(|e| panic!("BUG: rmap out of step: {e}"));
                meta.mapcount = meta
                    .mapcount
                    .checked_sub(1)
                    .expect("BUG: map count underflow");
            }
        }
    }

    /// Writes the block at `base` keeping the rmap, map counts and the
    /// deposit: a new block over an empty PMD takes `deposit`; replacing a
    /// block keeps the old deposit (`deposit` must be `None`).
    /// `Err(ENOMEM)`: no frame for an upper table; nothing changed (the
    /// deposit is still the caller's).
    fn write_block(
        &self,
        mm: MmId,
        base: VirtAddr,
        new: Block,
        deposit: Option<Pfn>,
    ) -> Result<(), Errno> {
        let old = {
            let mut mms = self.mms.borrow_mut();
            let m = mms.get_mut(&mm).expect("BUG: writing a block of a gone mm");
            let old = self.raw_set_block(m, base, Some(new))?;
            match (old, deposit) {
                (None, Some(pfn)) => {
                    m.deposits.insert(base, pfn);
                }
                (Some(_), None) => {}
                (old, deposit) => {
                    panic!("BUG: block {old:?} at {base} written with deposit {deposit:?}")
                }
            }
            old
        };
        if let Some(old) = old {
            self.account_block(mm, base, old.leaf(), MapLevel::Pmd, false);
        }
        self.account_block(mm, base, new.leaf(), MapLevel::Pmd, true);
        Ok(())
    }

    /// Clears the block at `base` and frees its deposit (Linux
    /// `zap_huge_pmd()`); returns the block.
    pub(crate) fn clear_block(&self, mm: MmId, base: VirtAddr) -> Block {
        let (old, deposit) = {
            let mut mms = self.mms.borrow_mut();
            let m = mms
                .get_mut(&mm)
                .expect("BUG: clearing a block of a gone mm");
            let old = self
                .raw_set_block(m, base, None)
                .expect("BUG: clearing a block allocates")
                .unwrap_or_else(|| panic!("BUG: no block at {base} to clear"));
            let deposit = m
                .deposits
                .remove(&base)
                .unwrap_or_else(|| panic!("BUG: the block at {base} has no deposit"));
            (old, deposit)
        };
        super::free_unreserved(&self.mem, deposit);
        self.account_block(mm, base, old.leaf(), MapLevel::Pmd, false);
        old
    }

    /// Linux `__split_huge_pmd()`: the block at `base` becomes a PTE table
    /// (the deposited one) of 512 entries: the huge zero page gives
    /// zero-page PTEs, a THP PTEs mapping its frames in the same state.
    /// Never fails: the table was deposited when the block was mapped.
    pub(crate) fn split_huge_pmd(&self, mm: MmId, base: VirtAddr, reason: SplitReason) {
        self.trace().emit(|| Event::HugeSplit { pmd: base, reason });
        let block = {
            let mut mms = self.mms.borrow_mut();
            let m = mms
                .get_mut(&mm)
                .expect("BUG: splitting a block of a gone mm");
            let PmdView::Block(block) = PmdView::of(m.pt.walk(base)) else {
                panic!("BUG: no block at {base} to split");
            };
            let deposit = m
                .deposits
                .remove(&base)
                .unwrap_or_else(|| panic!("BUG: the block at {base} has no deposit"));
            let mut frames = Deposit(Some(deposit));
            let split = if block.leaf().attrs.special {
                m.pt.split_zero_block(base, self.mem.zero_page(), &mut frames)
            } else {
                m.pt.split_block(base, &mut frames)
            };
            split.unwrap_or_else(|e| panic!("BUG: splitting the block at {base}: {e}"));
            m.tlb.invalidate(base);
            block
        };
        self.account_block(mm, base, block.leaf(), MapLevel::Pmd, false);
        self.account_block(mm, base, block.leaf(), MapLevel::Pte, true);
    }

    /// Splits every block of `mm` overlapping `[start, end)`; with
    /// `partial_only`, only those reaching outside it.
    pub(crate) fn split_blocks_in(
        &self,
        mm: MmId,
        start: VirtAddr,
        end: VirtAddr,
        partial_only: bool,
        reason: SplitReason,
    ) {
        let bases: Vec<VirtAddr> = {
            let mms = self.mms.borrow();
            let Some(m) = mms.get(&mm) else { return };
            m.pt.leaves(start, end)
                .filter_map(|(at, leaf)| match leaf {
                    crate::mm::LeafEntry::Block(_) => Some(at),
                    crate::mm::LeafEntry::Pte(_) => None,
                })
                .filter(|at| !partial_only || *at < start || at.as_u64() + PMD_SIZE > end.as_u64())
                .collect()
        };
        for base in bases {
            self.split_huge_pmd(mm, base, reason);
        }
    }

    /// Splits every block mapping `pfn` (before it is migrated as a 4 KiB
    /// page: see the module doc).
    pub(crate) fn split_blocks_mapping(&self, pfn: Pfn, reason: SplitReason) {
        let blocks: Vec<RmapEntry> = self
            .rmap
            .borrow()
            .mappings(pfn)
            .iter()
            .filter(|e| e.level == MapLevel::Pmd)
            .copied()
            .collect();
        for e in blocks {
            self.split_huge_pmd(e.mm, e.va, reason);
        }
    }

    /// Whether every frame of the block at `pfn` has its tag storage
    /// reserved.
    fn block_reserved(&self, pfn: Pfn) -> bool {
        (0..PAGES_PER_PMD).all(|i| self.mem.tag_storage_reserved(pfn + i))
    }

    /// Linux `set_pmd_at()` with the RFC's `mte_sync_tags()` for the 512
    /// frames (see the module doc): writes `new` (or the same leaf awaiting
    /// tag storage) if the PMD is still `expected`. `Ok(false)` if it changed
    /// (nothing written; the deposit, if any, is the caller's to free).
    pub(crate) async fn set_pmd_at(
        &self,
        mm: MmId,
        base: VirtAddr,
        expected: PmdView,
        new: Block,
        deposit: Option<Pfn>,
    ) -> Result<bool, Errno> {
        if let Block::Present(leaf) = new
            && leaf.attrs.tagged
            && self.has_mte()
            && !self.block_reserved(leaf.pfn)
        {
            // Before the lock: the model's reservation may sleep (see
            // `set_pte_at`).
            self.reserve_in_atomic(leaf.pfn, HPAGE_ORDER).await;
        }
        // pmd_lock(): the check, mte_sync_tags() and the store under the
        // page-table lock (see `set_pte_at`: reverse-map walkers wait for
        // it, so the 512 frames stay in use across the tags' switch points).
        let Some(ptl) = self.mm_ptl(mm) else {
            return Ok(false);
        };
        let _ptl = ptl.lock().await;
        if self.pmd_at(mm, base) != Some(expected) {
            return Ok(false);
        }
        let new = match new {
            Block::Present(leaf) if leaf.attrs.tagged && self.has_mte() => {
                if self.block_reserved(leaf.pfn) {
                    for i in 0..PAGES_PER_PMD {
                        self.mem
                            .init_page_tags_once(leaf.pfn + i)
                            .await
                            .unwrap_or_else(|e| panic!("BUG: mapping a frame not in use: {e}"));
                    }
                    new
                } else {
                    Block::AwaitingTagStorage(leaf)
                }
            }
            other => other,
        };
        // Paths that write entries without the lock and with no switch
        // point may have changed it while the tags were initialised.
        if self.pmd_at(mm, base) != Some(expected) {
            return Ok(false);
        }
        self.write_block(mm, base, new, deposit)?;
        Ok(true)
    }

    /// Linux `do_huge_pmd_anonymous_page()`: `Ok(false)` is
    /// `VM_FAULT_FALLBACK` (map 4 KiB pages instead).
    pub(crate) async fn do_huge_pmd_anonymous_page(
        &self,
        mm: MmId,
        base: VirtAddr,
        vma: &Vma,
        need: Need,
    ) -> Result<bool, FaultError> {
        self.prepare_anon(mm, base);
        if need == Need::Read && self.platform.settings().huge_zero_page {
            let Some(hzp) = self.huge_zero_page() else {
                return Ok(false);
            };
            let deposit = self.alloc_deposit()?;
            let leaf = Leaf {
                pfn: hzp,
                attrs: leaf_attrs(vma, false, true),
            };
            let mapped = self.map_empty_pmd(mm, base, leaf, deposit).await;
            if mapped == Ok(true) {
                self.bump(|c| c.fault_zero_page += 1);
                self.fault_event(FaultKind::HugeZeroPage, base, FaultOutcome::Mapped);
            }
            return mapped.map(|_| true).map_err(FaultError::from);
        }
        let Some(pfn) = self.alloc_huge_anon(mm, vma.is_tagged()).await else {
            return Ok(false);
        };
        let deposit = match self.alloc_deposit() {
            Ok(d) => d,
            Err(_) => {
                self.release_huge(pfn).await;
                return Ok(false);
            }
        };
        let leaf = Leaf {
            pfn,
            attrs: leaf_attrs(vma, true, false),
        };
        let mapped = self.map_empty_pmd(mm, base, leaf, deposit).await;
        if mapped == Ok(true) {
            self.bump(|c| c.fault_anon += 1);
            self.fault_event(FaultKind::Huge, base, FaultOutcome::Mapped);
        } else {
            self.release_huge(pfn).await;
        }
        mapped.map(|_| true).map_err(FaultError::from)
    }

    /// Maps `leaf` as a block at the empty PMD of `base` with its table
    /// `deposit` ([`Kernel::set_pmd_at`]); the deposit is freed again when
    /// nothing was mapped (the PMD changed meanwhile, or an error).
    async fn map_empty_pmd(
        &self,
        mm: MmId,
        base: VirtAddr,
        leaf: Leaf,
        deposit: Pfn,
    ) -> Result<bool, Errno> {
        let mapped = self
            .set_pmd_at(
                mm,
                base,
                PmdView::Empty,
                Block::Present(leaf),
                Some(deposit),
            )
            .await;
        if mapped != Ok(true) {
            super::free_unreserved(&self.mem, deposit);
        }
        mapped
    }

    /// A new zeroed order-9 anonymous page, split into 512 order-0 frames
    /// (see the module doc); tagged: a tagged allocation with tags zeroed
    /// where its storage could be reserved. `None` if no order-9 page is
    /// free.
    /// `mm`: the faulting address space, whose `mmap_lock` the caller
    /// holds for reading.
    async fn alloc_huge_anon(&self, mm: MmId, tagged: bool) -> Option<Pfn> {
        let pfn = match self.alloc_huge_block(tagged).await {
            Some(pfn) => pfn,
            None => {
                // Linux __alloc_pages_slowpath() -> __alloc_pages_direct_compact():
                // compact once, then retry, before the caller falls back
                // to 4 KiB pages (see `compact`).
                self.compact_zone(Some(mm)).await;
                self.alloc_huge_block(tagged).await?
            }
        };
        self.mem
            .phys_mut()
            .alloc
            .split(pfn, HPAGE_ORDER)
            .unwrap_or_else(|e| panic!("BUG: splitting a new huge page: {e}"));
        Some(pfn)
    }

    /// One order-9 allocation, tagged or not (not split yet).
    async fn alloc_huge_block(&self, tagged: bool) -> Option<Pfn> {
        let pfn = if tagged {
            self.mem
                .alloc_tagged(HPAGE_ORDER, Gfp::USER_TAGGED, &mut self.mover())
                .await
                .ok()?
                .pfn
        } else {
            self.mem.alloc(HPAGE_ORDER, Gfp::USER_ZERO).ok()?
        };
        Some(pfn)
    }

    /// Frees the 512 frames of a THP that was never mapped.
    async fn release_huge(&self, pfn: Pfn) {
        self.release_all((0..PAGES_PER_PMD).map(|i| pfn + i).collect())
            .await;
    }

    /// A fault on a present block (Linux `do_huge_pmd_wp_page()`,
    /// `huge_pmd_set_accessed()`).
    pub(crate) async fn huge_pmd_fault(
        &self,
        mm: MmId,
        base: VirtAddr,
        vma: &Vma,
        leaf: Leaf,
        need: Need,
        force: bool,
    ) -> Result<(), FaultError> {
        if need == Need::Read || leaf.attrs.access.is_writable() {
            // Spurious (another CPU resolved it): retry.
            return Ok(());
        }
        if leaf.attrs.special {
            // The huge zero page: split, and the retry takes the 4 KiB
            // copy-on-write of one zero-page entry.
            self.split_huge_pmd(mm, base, SplitReason::CopyOnWrite);
            return Ok(());
        }
        // do_huge_pmd_wp_page(): the folio locked across the reuse, so
        // that reclaim (which keeps a block whose head is locked) cannot
        // unmap and free a frame while set_pmd_at() initialises tags.
        let guard = self.page_locks.lock(leaf.pfn).await;
        if self.pmd_at(mm, base) != Some(PmdView::Block(Block::Present(leaf))) {
            return Ok(());
        }
        let exclusive = (0..PAGES_PER_PMD).all(|i| self.exclusive(leaf.pfn + i));
        if !exclusive {
            // 6.8: a shared THP is split and one 4 KiB page copied.
            self.split_huge_pmd(mm, base, SplitReason::CopyOnWrite);
            return Ok(());
        }
        if force && !crate::machine::fault::allows(vma, Need::Write) {
            // A forced write to a read-only private mapping: the page is
            // written through the kernel's mapping, the entry stays.
            return Ok(());
        }
        let new = Leaf {
            attrs: leaf_attrs(vma, true, false),
            ..leaf
        };
        self.set_pmd_at(
            mm,
            base,
            PmdView::Block(Block::Present(leaf)),
            Block::Present(new),
            None,
        )
        .await?;
        drop(guard);
        Ok(())
    }

    /// A fault on a block awaiting tag storage (see the module doc).
    pub(crate) async fn huge_tag_storage_fault(
        &self,
        mm: MmId,
        base: VirtAddr,
        leaf: Leaf,
    ) -> Result<(), FaultError> {
        self.bump(|c| c.fault_tag_storage += 1);
        let awaiting = PmdView::Block(Block::AwaitingTagStorage(leaf));
        let guard = self.page_locks.lock(leaf.pfn).await;
        if self.pmd_at(mm, base) != Some(awaiting) {
            return Ok(());
        }
        if self.huge_zero.get() == Some(leaf.pfn)
            && self
                .platform
                .settings()
                .mistakes
                .contains(Mistake::HugeZeroPage)
        {
            // RFC v3 as posted: the handler looks for the folio to reserve
            // storage for, finds none behind a huge zero page entry, and
            // maps the same entry again; the access replays for ever.
            drop(guard);
            self.fault_event(FaultKind::HugeTagStorage, base, FaultOutcome::Failed);
            return Ok(());
        }
        // A THP lying in tag storage cannot have tags: split, and the 4 KiB
        // path migrates each page out (as it does a small page).
        let in_tag_storage = self.mem.geometry().is_tag_storage(leaf.pfn);
        if in_tag_storage || !self.reserve_with_retries(leaf.pfn, HPAGE_ORDER).await {
            if self.pmd_at(mm, base) == Some(awaiting) {
                self.split_huge_pmd(mm, base, SplitReason::TagStorage);
                self.fault_event(FaultKind::HugeTagStorage, base, FaultOutcome::Split);
            }
            drop(guard);
            return Ok(());
        }
        let mapped = self
            .set_pmd_at(mm, base, awaiting, Block::Present(leaf), None)
            .await?;
        drop(guard);
        if mapped {
            self.fault_event(FaultKind::HugeTagStorage, base, FaultOutcome::Mapped);
        }
        Ok(())
    }

    /// Rewrites the block at `base` with `vma`'s attributes (Linux
    /// `change_huge_pmd()`): write permission only for an exclusive THP;
    /// a block gaining the tagged attribute goes through `set_pmd_at`.
    /// `Ok(false)`: there is no block there any more (a claim's migration
    /// split it), the caller changes the PTEs.
    pub(crate) async fn change_huge_pmd(
        &self,
        mm: MmId,
        base: VirtAddr,
        vma: &Vma,
    ) -> Result<bool, Errno> {
        for _ in 0..4 {
            let Some(PmdView::Block(block)) = self.pmd_at(mm, base) else {
                return Ok(false);
            };
            let leaf = block.leaf();
            let writable =
                !leaf.attrs.special && (0..PAGES_PER_PMD).all(|i| self.exclusive(leaf.pfn + i));
            let new_leaf = Leaf {
                attrs: leaf_attrs(vma, writable, leaf.attrs.special),
                ..leaf
            };
            let new = match block {
                Block::Present(_) => Block::Present(new_leaf),
                Block::AwaitingTagStorage(_) => Block::AwaitingTagStorage(new_leaf),
            };
            if new == block
                || self
                    .set_pmd_at(mm, base, PmdView::Block(block), new, None)
                    .await?
            {
                return Ok(true);
            }
        }
        panic!("BUG: a block kept changing under mmap_lock held for writing");
    }

    /// fork's `copy_huge_pmd()`: the block, write-protected, in both.
    pub(crate) fn copy_huge_pmd(
        &self,
        parent: MmId,
        child: MmId,
        base: VirtAddr,
        block: Block,
    ) -> Result<(), Errno> {
        let deposit = self.alloc_deposit()?;
        let leaf = block.leaf();
        let wp = Leaf {
            attrs: crate::mm::LeafAttrs {
                access: match leaf.attrs.access {
                    crate::mm::Access::ReadWrite => crate::mm::Access::ReadOnly,
                    other => other,
                },
                ..leaf.attrs
            },
            ..leaf
        };
        let shared = block_of(block, wp);
        if shared != block {
            self.write_block(parent, base, shared, None)
                .expect("BUG: rewriting a block allocates");
        }
        if let Err(e) = self.write_block(child, base, shared, Some(deposit)) {
            super::free_unreserved(&self.mem, deposit);
            return Err(e);
        }
        Ok(())
    }
}
