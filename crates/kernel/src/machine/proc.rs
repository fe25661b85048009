//! Processes: the pid table, MTE settings (`PR_SET_TAGGED_ADDR_CTRL`),
//! PSTATE.TCO, the pending asynchronous fault, pins; `spawn`, `fork`,
//! `exec`, `exit` (docs/semantics.md §4, §6).
//!
//! A process owns one address space ([`MmId`]); pids count from 1 and are
//! never reused, so a removed pid answers `ESRCH`.
//!
//! `fork` (Linux `dup_mmap()` -> `copy_page_range()`): VMAs are copied; the
//! entries of private VMAs that have an anon_vma are shared copy-on-write
//! (write-protected in parent and child); a pinned private anonymous page is
//! copied at once (`page_needs_cow_for_dma()` -> `copy_present_page()`);
//! shared VMAs and private VMAs without anonymous pages copy no entries (they
//! refault from the page cache, `vma_needs_copy()`); a swap entry is copied
//! as it is, its slot gaining a reference (`copy_nonpresent_pte()` ->
//! `swap_duplicate()`).

use std::collections::BTreeMap;

use mte::{CheckSettings, Pfn, VirtAddr};
use platform::Mistake;
use uapi::{Errno, MteCtrl, Pid};

use super::{Kernel, PAGE_ORDER};
use crate::mem::Gfp;
use crate::mm::layout::{PAGE_SHIFT, TASK_SIZE};
use crate::mm::{Access, Leaf, MmId, Pte};

/// One process.
#[derive(Clone, Debug)]
pub(crate) struct Process {
    pub(crate) mm: MmId,
    pub(crate) ctrl: MteCtrl,
    /// PSTATE.TCO.
    pub(crate) tco: bool,
    /// TIF_MTE_ASYNC_FAULT.
    pub(crate) async_pending: bool,
    /// Long-term pins by virtual page number: the frames pinned there, one
    /// per pin, most recent last.
    pub(crate) pins: BTreeMap<u64, Vec<Pfn>>,
}

impl Process {
    fn new(mm: MmId) -> Process {
        Process {
            mm,
            ctrl: MteCtrl::default(),
            tco: false,
            async_pending: false,
            pins: BTreeMap::new(),
        }
    }

    pub(crate) fn check_settings(&self) -> CheckSettings {
        CheckSettings {
            mode: self.ctrl.tcf,
            store_only: self.ctrl.store_only,
            tco: self.tco,
        }
    }
}

/// A private entry made copy-on-write: writable access dropped.
fn write_protect(leaf: Leaf) -> Leaf {
    let mut leaf = leaf;
    if leaf.attrs.access == Access::ReadWrite {
        leaf.attrs.access = Access::ReadOnly;
    }
    leaf
}

fn with_leaf(pte: Pte, leaf: Leaf) -> Pte {
    match pte {
        Pte::Present(_) => Pte::Present(leaf),
        Pte::AwaitingTagStorage(_) => Pte::AwaitingTagStorage(leaf),
        other => panic!("BUG: {other:?} has no leaf"),
    }
}

impl Kernel {
    fn new_pid(&self) -> Pid {
        let pid = Pid(self.next_pid.get());
        self.next_pid.set(
            pid.0
                .checked_add(1)
                .expect("BUG: more than u32::MAX processes"),
        );
        pid
    }

    /// `spawn`: a process with an empty address space and default settings.
    pub(crate) fn spawn(&self) -> Result<Pid, Errno> {
        let mm = self.new_mm()?;
        let pid = self.new_pid();
        self.procs.borrow_mut().insert(pid, Process::new(mm));
        Ok(pid)
    }

    /// [`Self::spawn`], reclaiming while its page table finds no page (as
    /// every allocation that may sleep does: `__alloc_pages_slowpath()`).
    pub(crate) async fn spawn_reclaiming(&self) -> Result<Pid, Errno> {
        loop {
            match self.spawn() {
                Err(Errno::NoMem) if self.direct_reclaim_retry().await => {}
                other => return other,
            }
        }
    }

    pub(crate) fn process_mm(&self, pid: Pid) -> Option<MmId> {
        self.procs.borrow().get(&pid).map(|p| p.mm)
    }

    /// Unmaps everything of `mm` and frees its page tables (Linux
    /// `exit_mmap()`), under its `mmap_lock`.
    async fn destroy_mm(&self, mm: MmId) {
        let Some(lock) = self.mm_lock(mm) else {
            return;
        };
        let _guard = lock.write().await;
        let pfns = self.zap_range(mm, VirtAddr::ZERO, super::syscalls::user_end());
        let gone = self
            .mms
            .borrow_mut()
            .remove(&mm)
            .expect("BUG: mm vanished under its write lock");
        gone.pt.destroy(&mut self.frames());
        self.release_all(pfns).await;
        self.collect_objects().await;
    }

    /// Drops every pin of a process that goes away or execs.
    async fn drop_pins(&self, pins: BTreeMap<u64, Vec<Pfn>>) {
        let mut freed = Vec::new();
        for pfn in pins.into_values().flatten() {
            let mut phys = self.mem.phys_mut();
            let meta = phys
                .alloc
                .frame_mut(pfn)
                .unwrap_or_else(|e| panic!("BUG: pinned frame {pfn} not in use: {e}"));
            meta.pins = meta.pins.checked_sub(1).expect("BUG: pin underflow");
            freed.push(pfn);
        }
        self.release_all(freed).await;
    }

    /// `exit`: the process and its address space go away.
    pub(crate) async fn exit(&self, pid: Pid) -> Result<(), Errno> {
        let process = self.procs.borrow_mut().remove(&pid).ok_or(Errno::Srch)?;
        self.destroy_mm(process.mm).await;
        self.drop_pins(process.pins).await;
        Ok(())
    }

    /// `exec`: a new empty address space and the settings of a new process
    /// (Linux `mte_thread_init_user()`, `flush_tagged_addr_state()`).
    pub(crate) async fn exec(&self, pid: Pid) -> Result<(), Errno> {
        let new_mm = self.new_mm()?;
        let old = {
            let mut procs = self.procs.borrow_mut();
            let Some(process) = procs.get_mut(&pid) else {
                drop(procs);
                let gone = self.mms.borrow_mut().remove(&new_mm);
                if let Some(m) = gone {
                    m.pt.destroy(&mut self.frames());
                }
                return Err(Errno::Srch);
            };
            core::mem::replace(process, Process::new(new_mm))
        };
        self.destroy_mm(old.mm).await;
        self.drop_pins(old.pins).await;
        Ok(())
    }

    /// `fork`: see the module documentation.
    pub(crate) async fn fork(&self, pid: Pid) -> Result<Pid, Errno> {
        let parent_mm = self.process_mm(pid).ok_or(Errno::Srch)?;
        let lock = self.mm_lock(parent_mm).ok_or(Errno::Srch)?;
        let _guard = lock.write().await;
        // An exec or exit of another thread that ran while this one waited
        // for the lock replaced or destroyed the address space: the forking
        // thread went with it (Linux de_thread() kills the other threads,
        // and copy_process() fails on the fatal signal).
        let Some(parent) = self
            .procs
            .borrow()
            .get(&pid)
            .filter(|p| p.mm == parent_mm)
            .cloned()
        else {
            return Err(Errno::Srch);
        };
        let child_mm = self.new_mm()?;
        // The VMAs, and the entries to share or copy.
        let (entries, blocks, vmas) = {
            let mms = self.mms.borrow();
            let m = &mms[&parent_mm];
            let vmas = m.vmas.fork(&mut self.anon_ids.borrow_mut());
            let mut entries = Vec::new();
            let mut blocks = Vec::new();
            for vma in m.vmas.iter().filter(|v| !v.is_shared() && v.anon.is_some()) {
                for (va, leaf) in m.pt.leaves(vma.start, vma.end) {
                    match leaf {
                        crate::mm::LeafEntry::Pte(pte) => entries.push((va, pte, *vma)),
                        // A block is visited once, from the VMA holding its
                        // start.
                        crate::mm::LeafEntry::Block(b) if va >= vma.start => blocks.push((va, b)),
                        crate::mm::LeafEntry::Block(_) => {}
                    }
                }
            }
            (entries, blocks, vmas)
        };
        self.mms
            .borrow_mut()
            .get_mut(&child_mm)
            .expect("BUG: new mm vanished")
            .vmas = vmas;
        // copy_huge_pmd(): a block is shared write-protected (a pinned page
        // is never in a block: pin splits it).
        for (base, block) in blocks {
            if let Err(e) = self.copy_huge_pmd(parent_mm, child_mm, base, block) {
                self.abandon_child(child_mm).await;
                return Err(e);
            }
        }
        let mut to_copy = Vec::new();
        for (va, pte, vma) in entries {
            let leaf = match pte {
                Pte::Present(l) | Pte::AwaitingTagStorage(l) => l,
                // copy_nonpresent_pte(): swap_duplicate(), same entry.
                Pte::Swap(slot) => {
                    if let Err(e) = self.swap_duplicate(slot) {
                        self.abandon_child(child_mm).await;
                        return Err(e);
                    }
                    if let Err(e) = self.write_pte(child_mm, va, pte) {
                        // The parent's entry still refers to the slot.
                        let orphan = self.swap_free(slot);
                        debug_assert!(orphan.is_none(), "BUG: the parent's slot was freed");
                        self.abandon_child(child_mm).await;
                        return Err(e);
                    }
                    continue;
                }
                Pte::None => panic!("BUG: an empty entry listed as a leaf"),
            };
            let pinned = !leaf.attrs.special
                && !self.cache_owner.borrow().contains_key(&leaf.pfn)
                && self
                    .mem
                    .phys()
                    .alloc
                    .frame(leaf.pfn)
                    .is_some_and(|m| m.is_pinned());
            if pinned {
                to_copy.push((va, pte, vma));
                continue;
            }
            let shared = with_leaf(pte, write_protect(leaf));
            if shared != pte {
                self.write_pte(parent_mm, va, shared)?;
            }
            if let Err(e) = self.write_pte(child_mm, va, shared) {
                self.abandon_child(child_mm).await;
                return Err(e);
            }
        }
        for (va, pte, vma) in to_copy {
            if let Err(e) = self
                .fork_copy_page(parent_mm, child_mm, va, pte, &vma)
                .await
            {
                self.abandon_child(child_mm).await;
                return Err(e);
            }
        }
        let child = self.new_pid();
        self.procs.borrow_mut().insert(
            child,
            Process {
                mm: child_mm,
                ctrl: parent.ctrl,
                tco: parent.tco,
                async_pending: false,
                pins: BTreeMap::new(),
            },
        );
        Ok(child)
    }

    async fn abandon_child(&self, child_mm: MmId) {
        self.destroy_mm(child_mm).await;
    }

    /// The child's own copy of a pinned page, data and tags (Linux
    /// `copy_present_page()`): the pin stays with the parent's page.
    async fn fork_copy_page(
        &self,
        parent_mm: MmId,
        child_mm: MmId,
        va: VirtAddr,
        pte: Pte,
        vma: &crate::mm::Vma,
    ) -> Result<(), Errno> {
        let leaf = pte.leaf().expect("BUG: copying an entry without a page");
        let src = leaf.pfn;
        // The child maps a copy where the rest of an mTHP folio is shared:
        // the folio splits (see `mthp`).
        self.split_folio_of(src);
        let dst = self
            .alloc_copy_target(vma.is_tagged(), self.mem.page_mte_tagged(src))
            .await
            .ok_or(Errno::NoMem)?;
        // The parent's page cannot change: its mmap_lock is held for
        // writing and a pinned page is never migrated.
        let tags = self.mem.page_mte_tagged(src) && self.mem.tag_storage_reserved(dst);
        // copy_pte_range() holds the parent's page-table lock (and the
        // child's) across copy_present_page(): the copy runs in atomic
        // context (the destination was allocated before, as Linux
        // preallocates it outside the lock).
        let ptl = self.mm_ptl(parent_mm).expect("BUG: forking a gone mm");
        let guard = ptl.lock().await;
        if tags
            && self
                .platform
                .settings()
                .mistakes
                .contains(Mistake::AtomicAlloc)
        {
            // `mistake=atomic-alloc` (the v3 review's blocker, docs/designs.md
            // "Known mistakes"): RFC v3's copy_highpage() allocates the
            // destination's per-frame tag buffer (its `tags_by_pfn` entry)
            // with GFP_KERNEL, which may sleep, here under the lock.
            self.sched
                .might_sleep("allocates a tag buffer with GFP_KERNEL in copy_highpage()");
        }
        self.copy_user_page(dst, src, tags);
        debug_assert_eq!(self.current_pte(parent_mm, va), Some(pte));
        let new = with_leaf(pte, Leaf { pfn: dst, ..leaf });
        let mapped = self.set_pte_at(child_mm, va, Pte::None, new).await;
        drop(guard);
        let Ok(mapped) = mapped else {
            // No page table in the child: the copy goes back (fork fails).
            self.release_if_unused(dst).await;
            return mapped.map(|_| ());
        };
        if !mapped {
            panic!("BUG: a child's entry changed before the child existed");
        }
        Ok(())
    }

    /// [`Self::alloc_copy_target`] with direct reclaim when it fails (a
    /// fault's copy: see `reclaim`).
    pub(crate) async fn alloc_copy_target_reclaiming(
        &self,
        tagged: bool,
        keep_tags: bool,
    ) -> Option<Pfn> {
        for _ in 0..=super::reclaim::MAX_RECLAIM_RETRIES {
            if let Some(pfn) = self.alloc_copy_target(tagged, keep_tags).await {
                return Some(pfn);
            }
            if !self.direct_reclaim_retry().await {
                return None;
            }
        }
        None
    }

    /// A page to copy into: tagged (tag storage reserved, retried a few
    /// times, when the source's tags must be kept) or plain. `None`: out of
    /// memory, or no tag storage for tags that must be kept.
    pub(crate) async fn alloc_copy_target(&self, tagged: bool, keep_tags: bool) -> Option<Pfn> {
        if !tagged {
            return self.mem.alloc(PAGE_ORDER, Gfp::USER).ok();
        }
        let gfp = Gfp {
            zero: false,
            zero_tags: false,
            ..Gfp::USER_TAGGED
        };
        // A copy that keeps tags needs its storage now: take a page whose
        // block can be reserved (a block held by a short-term pin cannot).
        let page = if keep_tags {
            self.mem
                .alloc_tagged_reservable(PAGE_ORDER, gfp, &mut self.mover())
                .await
        } else {
            self.mem
                .alloc_tagged(PAGE_ORDER, gfp, &mut self.mover())
                .await
        }
        .ok()?;
        if keep_tags && !page.reserved() && !self.reserve_with_retries(page.pfn, PAGE_ORDER).await {
            // The tags would be lost: give up (Linux: the copy fails).
            super::free_unreserved(&self.mem, page.pfn);
            return None;
        }
        Some(page.pfn)
    }
}

/// The virtual page number of `addr`.
pub(crate) fn vpn(addr: u64) -> u64 {
    addr >> PAGE_SHIFT
}

/// Whether `[addr, addr + len)` lies below `TASK_SIZE`.
pub(crate) fn is_user_range(addr: u64, len: u64) -> bool {
    addr <= TASK_SIZE && len <= TASK_SIZE - addr
}
