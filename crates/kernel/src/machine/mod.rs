//! The simulated kernel as a whole: [`Kernel`] implements [`uapi::Machine`]
//! (Linux v6.8 on arm64 with the RFC v3 "dynamic tag storage" patches).
//!
//! # What it owns
//! - [`Memory`] (frames, buddy + CMA, tag bytes, the tag storage manager);
//! - the process table (pids from 1, never reused) and one address space
//!   ([`Mm`]: [`VmaTree`] + [`PageTable`] + software TLB + `mmap_lock`) per
//!   live process;
//! - the machine-wide reverse map ([`Rmap`]), the page caches of memory
//!   objects (shmem, tmpfs files, regular files), frames held only by pins;
//! - the swap device ([`SwapDevice`]) and the tags restored at swap-in
//!   that wait for their page's tag storage;
//! - page locks (`PG_locked`, a [`LockTable`] keyed by frame), the IRG RNG
//!   and the fault/tag-check counters of `docs/model.md` §5.
//!
//! Submodules: `proc` (processes, fork/exec/exit), `mte_abi` (the MTE user
//! ABI: prctl, TCO, tag check fault delivery, IRG/ADDG with the include
//! mask, ptrace tag access), `syscalls` (mmap, munmap, mprotect, madvise,
//! pin), `fault` (`handle_mm_fault`, `set_pte_at`/`mte_sync_tags`, the tag
//! storage fault), `ksm` (same-page merging: `ksm-scan`, unmerging),
//! `migrate` (page migration and the
//! [`crate::mem::PageMover`] of tag storage claims), `compact` (memory
//! compaction: `compact` and direct compaction), `huge` (transparent
//! huge pages and the huge zero page: eligibility, PMD faults,
//! `set_pmd_at`, splitting, the deposited tables), `mthp` (multi-size THP
//! for anonymous faults: orders, fallback, the folio records), `swapping` (pageout,
//! `do_swap_page`, the swap cache, tags saved and restored), `lru` (the
//! LRU lists), `reclaim` (reclaim over them, file writeback and read-back,
//! direct reclaim, the cleancache hooks), `access` (loads, stores, tag
//! instructions, kernel copies, ptrace tag access), `tlb` (the software
//! TLB of each address space), `cpu_tlb` and `direct` (the per-CPU TLB and
//! the direct access API of the hot loops), `observe` (counters, page states, tags), `check` (the machine-wide
//! invariant checker).
//!
//! # Event trace
//! With [`Machine::set_trace`] on, each step of `uapi::event` is recorded
//! where it happens, once: faults where their counters move (`fault`,
//! `huge`, `swapping`), migrations in `migrate`, block splits in
//! `huge::split_huge_pmd` (with the caller's reason), swap-out and swap-in
//! in `swapping`, copy-on-write copies in `fault::copy_user_page`; tag
//! block claims and releases and tag initialisation in `crate::mem` (the
//! sink lives in [`Memory`] so that both layers record in one order). Off,
//! each site tests a flag and builds nothing (see [`crate::trace`]).
//!
//! # Concurrency
//! Every op is an `async` kernel path on `&Kernel`. Mutable state sits in
//! `RefCell`s borrowed only between switch points; the locks Linux sleeps on
//! are `sched` primitives: `mmap_lock` per address space (read for faults
//! and pins, write for mmap/munmap/mprotect/madvise/fork/exec/exit), page
//! locks (held by the tag storage fault and copy-on-write across their
//! allocations, so that a claim's migration of that page reports `Busy`),
//! and `tag_blocks_lock` inside [`Memory`]. The page-table lock is a spin
//! lock per address space (`Mm::ptl`), so the scheduler reports a sleep
//! under it; [`Kernel::violations`] reports what the scheduler recorded
//! (invariant 9). A user access is synchronous
//! (TLB, then hardware walk); a miss runs the fault handler and retries, and
//! the final translation, tag check and data access happen with no switch
//! point in between.
//!
//! # Page ownership (who holds a frame)
//! A user frame has `refcount` 1 (its allocation's reference, held by the
//! page cache for object pages and by the mappings for anonymous pages),
//! `mapcount` = its rmap entries, `pins` = the pins processes recorded on it.
//! A swapped-out page holds no frame: its swap entries hold references to
//! its slot (the slot's swap count).
//! It is freed when it is neither mapped, nor in a page cache, nor pinned; a
//! pinned frame that loses its last mapping is kept as an *orphan* until the
//! last `unpin` (Linux keeps a pinned page until `unpin_user_page()`).
//!
//! # Known shortcuts
//! - Transparent huge pages (see `huge`): private anonymous memory only
//!   (shmem THP is off, as Linux's default `shmem_enabled=never`; no large
//!   folios in page caches); PMD-sized only (no mTHP); no khugepaged
//!   collapse, so a split PMD stays split; a THP is split into 512 order-0
//!   frames when allocated (each its own reference and map count) rather
//!   than kept as one compound folio, so a PMD split never splits a folio
//!   and migration moves 4 KiB pages after splitting the PMD (Linux can
//!   migrate the whole THP); a pin splits the PMD it pins through; a write
//!   to a shared THP splits the PMD and copies one 4 KiB page (6.8).
//! - Swap (`swapping`): `madvise pageout` swaps out private anonymous pages
//!   mapped once, saving their tags; a swap cache only for slots still
//!   shared at swap-in (a slot of one entry is read straight into the
//!   faulting process's page); only anonymous memory is swapped (shmem and
//!   tmpfs pages are unevictable); `PTRACE_PEEKMTETAGS` reads the saved tags
//!   without a swap-in. A 2 MiB block entry is split before pageout
//!   (`Kernel::pageout_block`), as Linux splits a THP it cannot swap whole.
//! - Reclaim (`reclaim`, over the LRU lists of `lru`): no kswapd, no
//!   swappiness balancing, synchronous writeback; page-table allocations
//!   do not reclaim.
//! - `compact` runs a full compaction (see `compact` for what it simplifies).
//! - `ksm-scan` is one full pass of ksmd (see `ksm` for the trees, what
//!   merges and what the model simplifies); tagged pages never merge.
//! - Out of memory inside a fault (Linux: `VM_FAULT_OOM`, the OOM killer),
//!   after direct reclaim freed nothing, is reported as `fault SEGV_ACCERR`
//!   at the faulting address.

mod access;
mod check;
mod check_frames;
mod compact;
mod cpu_tlb;
mod direct;
mod fault;
mod huge;
mod incremental;
mod ksm;
mod lru;
mod migrate;
mod mte_abi;
mod mthp;
mod observe;
mod proc;
mod reclaim;
mod shape;
mod swapping;
mod syscalls;
mod tags_by_pfn;
use syscalls::PinKind;
mod tlb;
mod tracked;

#[cfg(test)]
mod tests;

use core::cell::{Cell, RefCell};
use std::collections::{BTreeMap, BTreeSet};
use std::rc::Rc;

use mte::{Pfn, TaggedPtr, VirtAddr};
use platform::Platform;
use rand_core::SeedableRng;
use rand_xoshiro::Xoshiro256PlusPlus;
use sched::{LockOrder, LockTable, LockViolation, RunLimits, Sched, SimRwLock, SimSpinLock, Task};
use thiserror::Error;
use uapi::{
    Bound, Command, Counter, Errno, Fault, FaultCode, Machine, MachineError, Op, Outcome,
    PageState, Pid, Reply, Violation,
};

use crate::mem::{Gfp, MemInitError, Memory};
use crate::mm::layout::PAGE_SIZE;
use crate::mm::{
    AnonId, IdAlloc, MmId, MteSupport, ObjectId, Overcommit, PageTable, Pgoff, Pte, Rmap,
    RmapEntry, SwapSlot, TableFrames, VmConfig, VmaTree,
};
use crate::phys::Order;
use crate::swap::SwapDevice;
use crate::trace::EventSink;

pub use check::KernelViolation;
pub use incremental::{FULL_CHECK_EVERY, same_verdict};
use proc::Process;
pub use shape::{
    CpuLists, FreeFrames, FreeLists, FreeShape, ListType, ListedBlock, ListsReport, ShapeError,
    ShapeReport,
};
use tlb::Tlb;

/// Order 0: every user page of the model is held as a single frame (a
/// transparent huge page is split into 512 of them when allocated: see
/// `huge`).
const PAGE_ORDER: Order = Order::new(0);

/// Why a machine could not be built.
#[derive(Clone, Debug, PartialEq, Eq, Error)]
pub enum KernelInitError {
    #[error("memory: {0}")]
    Memory(#[from] MemInitError),
}

/// What backs a memory object.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(crate) enum ObjectKind {
    /// The shmem object behind `map=shared,anon` (Linux `shmem_zero_setup()`).
    SharedAnon,
    /// A tmpfs file (`map=shm`).
    Tmpfs,
    /// A regular file (`map=file`): page cache pages, never tagged.
    File,
}

/// A memory object and its page cache (Linux: `struct address_space`).
#[derive(Clone, Debug)]
pub(crate) struct Object {
    pub(crate) kind: ObjectKind,
    /// Cached pages by page offset; a page is created on first touch.
    pub(crate) pages: BTreeMap<Pgoff, Pfn>,
    /// A regular file's contents on disk as last written back, by page
    /// offset (absent: zeros, the file was created zero-filled). A page
    /// dropped from the page cache is read back from here.
    pub(crate) disk: BTreeMap<Pgoff, Box<[u8]>>,
    /// Offsets whose cached page is dirty (`PG_dirty`: written through a
    /// shared mapping since its last writeback). Kept by offset, so that
    /// migration of the page leaves it alone.
    pub(crate) dirty: BTreeSet<Pgoff>,
    /// Offsets whose page reclaim dropped and no fault has read back yet
    /// (what `file.reads` counts).
    pub(crate) dropped: BTreeSet<Pgoff>,
}

/// One address space (Linux `struct mm_struct`).
pub(crate) struct Mm {
    pub(crate) vmas: VmaTree,
    pub(crate) pt: PageTable,
    pub(crate) tlb: Tlb,
    /// The page-table frame deposited with each block mapping, by the
    /// block's start (Linux `pgtable_trans_huge_deposit()`): a split never
    /// allocates.
    pub(crate) deposits: BTreeMap<VirtAddr, Pfn>,
    /// Linux `mmap_lock`: a data-less ordering token; the data it protects
    /// is the rest of this struct, borrowed only between switch points.
    pub(crate) lock: Rc<SimRwLock<()>>,
    /// Linux `mm->page_table_lock` (one per address space: split PTE locks
    /// are not modelled), a spin lock: its holder is in atomic context, so
    /// the scheduler reports anything that may sleep under it (invariant 9).
    /// Data-less like `lock`; held where Linux holds it around an entry's
    /// `pte_same()` check and write (`set_pte_at`, `set_pmd_at`) and around
    /// fork's copy of a pinned page (`copy_present_page()`).
    pub(crate) ptl: Rc<SimSpinLock<()>>,
}

/// Counters the kernel keeps (docs/model.md §5; the memory ones are [`Memory`]'s).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct KernelCounters {
    pub(crate) fault_anon: u64,
    pub(crate) fault_zero_page: u64,
    pub(crate) fault_cow: u64,
    pub(crate) fault_tag_storage: u64,
    /// Commands that ended `stuck` (docs/model.md §4 invariant 10).
    pub(crate) fault_stuck: u64,
    pub(crate) tcf_sync: u64,
    pub(crate) tcf_async: u64,
    pub(crate) swap_out: u64,
    pub(crate) swap_in: u64,
    /// Dirty file pages written back by reclaim (`pageout()`).
    pub(crate) file_writeback: u64,
    /// Clean file pages reclaim dropped from their page cache.
    pub(crate) file_dropped: u64,
    /// Faults that read a dropped file page back (from disk, or from the
    /// cleancache when the design keeps one).
    pub(crate) file_reads: u64,
    /// Pages reclaimed by allocations that found no free page (direct
    /// reclaim, `__alloc_pages_direct_reclaim()`).
    pub(crate) direct_reclaim: u64,
    /// `WARN_ON_ONCE`s printed, per site (0 or 1; see `tags_by_pfn`).
    pub(crate) warn_restore_tags_for_pfn: u64,
    pub(crate) warn_tag_clear_highpage: u64,
    /// Faults, forks and execs that ended out of memory (`oom`).
    pub(crate) oom: u64,
    /// Per folio order (2 to 8 used): anonymous faults that allocated a
    /// multi-size THP of that order, and those whose allocation of it
    /// failed (see `mthp`).
    pub(crate) mthp_alloc: [u64; 9],
    pub(crate) mthp_fallback: [u64; 9],
}

/// The simulated kernel of one machine.
pub struct Kernel {
    platform: Platform,
    sched: Sched,
    mem: Memory,
    vm_config: VmConfig,
    procs: RefCell<BTreeMap<Pid, Process>>,
    next_pid: Cell<u32>,
    mms: RefCell<BTreeMap<MmId, Mm>>,
    mm_ids: RefCell<IdAlloc<MmId>>,
    anon_ids: RefCell<IdAlloc<AnonId>>,
    object_ids: RefCell<IdAlloc<ObjectId>>,
    rmap: RefCell<Rmap>,
    objects: tracked::Tracked<BTreeMap<ObjectId, Object>>,
    /// Page cache pages: frame -> (object, offset) (Linux `page->mapping`,
    /// `page->index`).
    cache_owner: tracked::Tracked<BTreeMap<Pfn, (ObjectId, Pgoff)>>,
    /// Frames held only by pins (unmapped, in no page cache).
    orphans: tracked::Tracked<BTreeSet<Pfn>>,
    /// The LRU lists (see `lru`, `reclaim`).
    lru: RefCell<lru::Lru>,
    /// The swap cache (Linux `swapper_spaces`): the page a swap slot was
    /// read into while swap entries still refer to the slot, by slot, and
    /// the slot of each such page (see `swapping`).
    swap_cache: RefCell<BTreeMap<SwapSlot, Pfn>>,
    swap_cache_slot: tracked::Tracked<BTreeMap<Pfn, SwapSlot>>,
    /// The swap device (see `swapping`).
    swap: tracked::Tracked<SwapDevice>,
    /// Tags restored at swap-in into a page whose tag storage is not
    /// reserved yet, written by the page's tag initialisation (RFC v3
    /// `tags_by_pfn`; see `swapping`).
    restored_tags: RefCell<BTreeMap<Pfn, Vec<mte::Tag>>>,
    /// Linux `PG_locked`.
    page_locks: LockTable<Pfn>,
    /// The IRG random source, drawn once per IRG in command order.
    rng: RefCell<Xoshiro256PlusPlus>,
    counters: Cell<KernelCounters>,
    /// The huge zero page once allocated (never freed).
    huge_zero: Cell<Option<Pfn>>,
    /// The access fast path's memo of the last process it served (see
    /// `access::FastMemo`): cleared by every op that takes a kernel path.
    fast_memo: Cell<Option<direct::FastMemo>>,
    /// The per-CPU TLBs of the direct access path (see `cpu_tlb`), shared
    /// with every address space's TLB so that its flushes reach them.
    cpu_tlbs: Rc<RefCell<cpu_tlb::CpuTlbs>>,
    /// Physical memory's contents epoch (`PhysContents::epoch_handle`):
    /// the direct path compares its entries' hints with it without
    /// borrowing physical memory.
    contents_epoch: crate::phys::Epoch,
    /// CPUs whose running command replayed a fault past the bound: the
    /// command ends `stuck` (taken by `process_op`).
    stuck: RefCell<BTreeSet<sched::CpuId>>,
    /// Every livelock so far, where it happened: the liveness check
    /// (invariant 10) reports each.
    livelocks: RefCell<Vec<VirtAddr>>,
    /// KSM's pages and checksums (see `ksm`).
    ksm: RefCell<ksm::KsmState>,
    /// Every locking violation the scheduler recorded so far (sleeping
    /// under a spin lock, a lock-order inversion), kept so that the checker
    /// reports each from then on (invariant 9).
    lock_violations: RefCell<BTreeSet<LockViolation>>,
    /// Frames some path is freeing now (waiting for `tag_blocks_lock`):
    /// no other path frees them again (see `release_if_unused`).
    freeing: RefCell<BTreeSet<Pfn>>,
    /// The multi-size THP folios whose pages are all still mapped as
    /// their fault mapped them: head frame -> order (see `mthp`).
    folios: tracked::Tracked<BTreeMap<Pfn, u32>>,
    /// Calls of `invariant_violations` so far (see `incremental`).
    checks: Cell<u64>,
    /// What the incremental checker keeps between checks (see `check`).
    check_cache: RefCell<check::CheckCache>,
    /// Frames the kernel took for itself when its free memory was shaped
    /// (see `shape`): allocated, held by nothing else, counted by the
    /// checker.
    kernel_held: Cell<u64>,
}

impl core::fmt::Debug for Kernel {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Kernel")
            .field("mem", &self.mem)
            .field("processes", &self.procs.borrow().len())
            .finish_non_exhaustive()
    }
}

/// Page-table frames: unmovable kernel pages (Linux `GFP_PGTABLE_USER`).
pub(crate) struct PtFrames<'a> {
    mem: &'a Memory,
}

impl TableFrames for PtFrames<'_> {
    fn alloc_table(&mut self) -> Option<Pfn> {
        // Linux allocates a table (pte_alloc()) before it takes the
        // page-table lock; the model allocates it at the store, under the
        // lock, so this is not a might-sleep point.
        self.mem
            .alloc_atomic(
                PAGE_ORDER,
                Gfp {
                    zero: true,
                    ..Gfp::KERNEL
                },
            )
            .ok()
    }

    fn free_table(&mut self, pfn: Pfn) {
        free_unreserved(self.mem, pfn);
    }
}

/// Frees an order-0 frame whose tag storage is not reserved: that free
/// never reaches a switch point (`Memory::free` takes `tag_blocks_lock`
/// only for reserved frames), so it completes in one poll.
pub(crate) fn free_unreserved(mem: &Memory, pfn: Pfn) {
    let mut future = core::pin::pin!(mem.free(pfn, PAGE_ORDER));
    let mut cx = core::task::Context::from_waker(core::task::Waker::noop());
    match future.as_mut().poll(&mut cx) {
        core::task::Poll::Ready(Ok(())) => {}
        core::task::Poll::Ready(Err(e)) => panic!("BUG: freeing {pfn} failed: {e}"),
        core::task::Poll::Pending => panic!("BUG: freeing unreserved {pfn} waited"),
    }
}

/// A synchronous fault of an access made with `ptr`, at `at`: the address
/// keeps the pointer's top byte (docs/semantics.md §1).
pub(crate) fn fault_at(code: FaultCode, ptr: TaggedPtr, at: VirtAddr) -> Fault {
    Fault {
        code,
        addr: Some(ptr.with_addr(at)),
    }
}

impl Kernel {
    /// Boots a machine: memory, the zero page, tag storage activation, the
    /// IRG RNG seeded from the platform's seed.
    pub fn new(platform: &Platform) -> Result<Kernel, KernelInitError> {
        let sched = Sched::new();
        let mem = Memory::new(platform, &sched)?;
        let contents_epoch = mem.phys().contents.epoch_handle();
        let swap = SwapDevice::new(
            platform.settings().swap,
            platform.geometry().page_size(),
            mem.tags_per_page(),
        );
        let rules = platform.policy().rules();
        let mte = match rules.mte() {
            false => MteSupport::Absent,
            true => MteSupport::Present,
        };
        let geometry = platform.geometry();
        // Linux totalram_pages(): DRAM, plus CMA (dynamic tag storage is
        // given to the page allocator); plus swap for __vm_enough_memory().
        let cma = match rules.lends_storage() {
            true => geometry.tag_storage_pages(),
            false => 0,
        };
        let swap_pages = platform.settings().swap / geometry.page_size();
        let vm_config = VmConfig {
            mte,
            overcommit: Overcommit::Guess {
                limit_pages: geometry.dram_pages() + cma + swap_pages,
            },
        };
        let seed = platform.settings().seed;
        Ok(Kernel {
            platform: platform.clone(),
            page_locks: LockTable::new(&sched, "page_lock"),
            sched,
            mem,
            vm_config,
            procs: RefCell::new(BTreeMap::new()),
            next_pid: Cell::new(1),
            mms: RefCell::new(BTreeMap::new()),
            mm_ids: RefCell::new(IdAlloc::new()),
            anon_ids: RefCell::new(IdAlloc::new()),
            object_ids: RefCell::new(IdAlloc::new()),
            rmap: RefCell::new(Rmap::new()),
            objects: tracked::Tracked::new(BTreeMap::new()),
            cache_owner: tracked::Tracked::new(BTreeMap::new()),
            orphans: tracked::Tracked::new(BTreeSet::new()),
            lru: RefCell::new(lru::Lru::default()),
            swap_cache: RefCell::new(BTreeMap::new()),
            swap_cache_slot: tracked::Tracked::new(BTreeMap::new()),
            swap: tracked::Tracked::new(swap),
            restored_tags: RefCell::new(BTreeMap::new()),
            rng: RefCell::new(Xoshiro256PlusPlus::seed_from_u64(seed)),
            counters: Cell::new(KernelCounters::default()),
            huge_zero: Cell::new(None),
            fast_memo: Cell::new(None),
            cpu_tlbs: Rc::default(),
            contents_epoch,
            stuck: RefCell::new(BTreeSet::new()),
            livelocks: RefCell::new(Vec::new()),
            ksm: RefCell::new(ksm::KsmState::default()),
            lock_violations: RefCell::new(BTreeSet::new()),
            freeing: RefCell::new(BTreeSet::new()),
            folios: tracked::Tracked::new(BTreeMap::new()),
            checks: Cell::new(0),
            check_cache: RefCell::default(),
            kernel_held: Cell::new(0),
        })
    }

    pub fn platform(&self) -> &Platform {
        &self.platform
    }

    /// The physical memory manager (read access for tests and tools).
    pub fn memory(&self) -> &Memory {
        &self.mem
    }

    /// Whether the machine has MTE (`tag-storage` is not `none`).
    pub fn has_mte(&self) -> bool {
        self.vm_config.mte == MteSupport::Present
    }

    fn bump(&self, f: impl FnOnce(&mut KernelCounters)) {
        let mut c = self.counters.get();
        f(&mut c);
        self.counters.set(c);
    }

    /// The machine's event sink (kept in [`Memory`], see [`crate::trace`]).
    pub(crate) fn trace(&self) -> &EventSink {
        &self.mem.trace
    }

    fn frames(&self) -> PtFrames<'_> {
        PtFrames { mem: &self.mem }
    }

    /// The page-table lock of `mm`, `None` once the address space is gone.
    pub(crate) fn mm_ptl(&self, mm: MmId) -> Option<Rc<SimSpinLock<()>>> {
        self.mms.borrow().get(&mm).map(|m| Rc::clone(&m.ptl))
    }

    /// The locking violations recorded so far (see `lock_violations`).
    pub(crate) fn lock_violations(&self) -> Vec<LockViolation> {
        let mut seen = self.lock_violations.borrow_mut();
        seen.extend(self.sched.take_lock_violations());
        seen.iter().cloned().collect()
    }

    /// The `mmap_lock` of `mm`, `None` once the address space is gone.
    fn mm_lock(&self, mm: MmId) -> Option<Rc<SimRwLock<()>>> {
        self.mms.borrow().get(&mm).map(|m| Rc::clone(&m.lock))
    }

    /// A new empty address space.
    fn new_mm(&self) -> Result<MmId, Errno> {
        let pt = PageTable::new(&mut self.frames()).map_err(|_| Errno::NoMem)?;
        let id = self.mm_ids.borrow_mut().alloc();
        let mm = Mm {
            vmas: VmaTree::new(self.vm_config),
            pt,
            tlb: Tlb::with_cpus(id, Rc::clone(&self.cpu_tlbs)),
            deposits: BTreeMap::new(),
            lock: Rc::new(SimRwLock::new(&self.sched, format!("mmap_lock {id}"), ())),
            // One lock class for every address space's (lockdep keys locks
            // by class, and an inversion between two page-table locks is
            // not an order the model's callers can take).
            ptl: Rc::new(SimSpinLock::new(&self.sched, "page_table_lock", ())),
        };
        self.mms.borrow_mut().insert(id, mm);
        Ok(id)
    }

    /// The single place a page-table entry is written (Linux: the store of
    /// `set_pte_at()`, `ptep_get_and_clear()`): invalidates the TLB entry.
    /// Keeps no rmap or count: see [`Self::write_pte`].
    fn raw_set_pte(&self, mm: &mut Mm, va: VirtAddr, pte: Pte) -> Result<Pte, Errno> {
        let old = if pte.is_none() {
            mm.pt.clear_pte(va)
        } else {
            mm.pt.set_pte(va, pte, &mut self.frames())
        }
        .map_err(|_| Errno::NoMem)?;
        mm.tlb.invalidate(va);
        Ok(old)
    }

    /// Writes the entry for `va` in `mm` and keeps the reverse map and map
    /// counts: an old non-special leaf loses its mapping, a new one gains
    /// one. Returns the old entry. `Err(ENOMEM)` if a table could not be
    /// allocated (nothing changed).
    fn write_pte(&self, mm: MmId, va: VirtAddr, pte: Pte) -> Result<Pte, Errno> {
        let old = {
            let mut mms = self.mms.borrow_mut();
            let m = mms.get_mut(&mm).expect("BUG: writing a PTE of a gone mm");
            self.raw_set_pte(m, va, pte)?
        };
        let entry = RmapEntry {
            mm,
            va,
            level: crate::mm::MapLevel::Pte,
        };
        if let Some(leaf) = old.leaf().filter(|l| !l.attrs.special) {
            if pte.leaf().map(|l| l.pfn) != Some(leaf.pfn) {
                // A page leaving its place in a folio splits it (see `mthp`).
                self.split_folio_of(leaf.pfn);
            }
            self.rmap
                .borrow_mut()
                .remove(leaf.pfn, entry)
                .unwrap_or_else(|e| panic!("BUG: rmap out of step: {e}"));
            let mut phys = self.mem.phys_mut();
            let meta = phys
                .alloc
                .frame_mut(leaf.pfn)
                .unwrap_or_else(|e| panic!("BUG: mapped frame not in use: {e}"));
            meta.mapcount = meta
                .mapcount
                .checked_sub(1)
                .expect("BUG: map count underflow");
        }
        if let Some(leaf) = pte.leaf().filter(|l| !l.attrs.special) {
            self.lru_add(leaf.pfn);
            self.rmap
                .borrow_mut()
                .add(leaf.pfn, entry)
                .unwrap_or_else(|e| panic!("BUG: rmap out of step: {e}"));
            let mut phys = self.mem.phys_mut();
            let meta = phys
                .alloc
                .frame_mut(leaf.pfn)
                .unwrap_or_else(|e| panic!("BUG: mapping a frame not in use: {e}"));
            meta.mapcount += 1;
        }
        Ok(old)
    }

    /// The entry for the page `va` in `mm` now (a block's as the 4 KiB
    /// entry a split would give, so that a 4 KiB path that raced with a
    /// huge fault sees the entry changed); `None` if the address space is
    /// gone.
    fn current_pte(&self, mm: MmId, va: VirtAddr) -> Option<Pte> {
        self.mms
            .borrow()
            .get(&mm)
            .map(|m| huge::page_entry(m.pt.walk(va), va))
    }

    /// The page-table lock of an address space that maps `pfn` and that a
    /// CPU holds now, if any.
    fn held_rmap_ptl(&self, pfn: Pfn) -> Option<Rc<SimSpinLock<()>>> {
        let rmap = self.rmap.borrow();
        let mms = self.mms.borrow();
        rmap.mappings(pfn).iter().find_map(|e| {
            mms.get(&e.mm)
                .filter(|m| m.ptl.holder().is_some())
                .map(|m| Rc::clone(&m.ptl))
        })
    }

    /// Waits until no CPU holds the page-table lock of any address space
    /// mapping `pfn`. Linux's reverse-map walkers (`try_to_unmap()`,
    /// `try_to_migrate()`, `folio_mkclean()`, `folio_referenced()`) take
    /// each mapping's page-table lock in turn (`page_vma_mapped_walk()`);
    /// the model's rewrite every mapping with no switch point, which is the
    /// same as taking and releasing each lock in turn provided none is held
    /// when they start. So a walker calls this as its last switch point:
    /// a path holding the lock across a read-modify-write of an entry
    /// (`change_pte_range()`, `set_pte_at()`'s tag initialisation) is never
    /// interleaved with an unmap of that entry, and the frame it read stays
    /// in use until it stores.
    pub(crate) async fn wait_rmap_ptls(&self, pfn: Pfn) {
        while let Some(ptl) = self.held_rmap_ptl(pfn) {
            drop(ptl.lock().await);
        }
    }

    /// Whether no CPU holds the page-table lock of an address space mapping
    /// `pfn`: a walker that cannot wait (KSM's merge has no switch point)
    /// leaves the page for later instead, as for a page lock it cannot take.
    pub(crate) fn rmap_ptls_free(&self, pfn: Pfn) -> bool {
        self.held_rmap_ptl(pfn).is_none()
    }

    /// Frees `pfn` if nothing holds it any more: not mapped, not in a page
    /// cache, not being freed by another path; a pinned frame becomes an
    /// orphan instead.
    async fn release_if_unused(&self, pfn: Pfn) {
        if pfn == self.mem.zero_page()
            || self.freeing.borrow().contains(&pfn)
            || self.cache_owner.borrow().contains_key(&pfn)
            || self.swap_cache_slot.borrow().contains_key(&pfn)
        {
            return;
        }
        let (mapcount, pins) = {
            let phys = self.mem.phys();
            // Two paths may each have taken the frame off what held it
            // (exec's teardown zapped the mapping, another CPU's munmap
            // then dropped the page cache) before either frees it: the
            // model has no page reference count to say which put is the
            // last, so the second finds the frame free and leaves it.
            if !matches!(
                phys.alloc.frame_status(pfn),
                Some(crate::phys::FrameStatus::Allocated { .. })
            ) {
                return;
            }
            match phys.alloc.frame(pfn) {
                Some(m) => (m.mapcount, m.pins),
                None => return,
            }
        };
        if mapcount > 0 {
            return;
        }
        if pins > 0 {
            self.orphans.borrow_mut().insert(pfn);
            return;
        }
        self.orphans.borrow_mut().remove(&pfn);
        // `mistake=tags-by-pfn` keeps the entry of a page freed awaiting
        // tag storage (see `tags_by_pfn`).
        if !self.keeps_saved_tags_of_freed(pfn) {
            self.restored_tags.borrow_mut().remove(&pfn);
        }
        self.ksm_frame_moved(pfn, None);
        self.lru.borrow_mut().remove(pfn);
        if self.mem.tag_storage_reserved(pfn) {
            // Freeing reserved storage waits for `tag_blocks_lock`: until it
            // is done the frame still looks allocated and unused, and
            // another path that held it (exec's teardown after this path
            // dropped its page cache) must not free it again. Linux: only
            // the put that drops the last reference frees the folio.
            if !self.freeing.borrow_mut().insert(pfn) {
                return;
            }
            let freed = self.mem.free(pfn, PAGE_ORDER).await;
            self.freeing.borrow_mut().remove(&pfn);
            freed.unwrap_or_else(|e| panic!("BUG: freeing unused {pfn}: {e}"));
        } else {
            free_unreserved(&self.mem, pfn);
        }
    }

    /// [`Self::release_if_unused`] for many frames: those without reserved
    /// tag storage first, all in one step (no switch point), so that no claim
    /// can find an unmapped frame waiting to be freed.
    async fn release_all(&self, mut pfns: Vec<Pfn>) {
        pfns.sort();
        pfns.dedup();
        let (reserved, plain): (Vec<Pfn>, Vec<Pfn>) = pfns
            .into_iter()
            .partition(|&p| self.mem.tag_storage_reserved(p));
        for pfn in plain {
            self.release_if_unused(pfn).await;
        }
        for pfn in reserved {
            self.release_if_unused(pfn).await;
        }
    }

    /// Drops the page cache of every object that no mapping refers to any
    /// more (an object lives as long as some mapping of it).
    async fn collect_objects(&self) {
        let live: BTreeSet<ObjectId> = self
            .mms
            .borrow()
            .values()
            .flat_map(|m| m.vmas.iter().filter_map(|v| v.object()))
            .collect();
        let ids: Vec<ObjectId> = self
            .objects
            .borrow()
            .keys()
            .copied()
            .filter(|id| !live.contains(id))
            .collect();
        // No mutable borrow when nothing is dead: the checker's page
        // cache verdict then stands (`check_frames`).
        let dead: Vec<(ObjectId, Object)> = if ids.is_empty() {
            Vec::new()
        } else {
            let mut objects = self.objects.borrow_mut();
            ids.into_iter()
                .filter_map(|id| objects.remove(&id).map(|o| (id, o)))
                .collect()
        };
        let mut pfns = Vec::new();
        for (id, object) in dead {
            self.cleancache_forget(id, &object);
            for pfn in object.pages.into_values() {
                self.cache_owner.borrow_mut().remove(&pfn);
                pfns.push(pfn);
            }
        }
        self.release_all(pfns).await;
    }

    /// One op, as a kernel path.
    async fn op(&self, op: &Op) -> Reply {
        // Whatever this op changes (settings, exec, exit), the access fast
        // path's memo cannot have seen it.
        self.fast_memo.set(None);
        match op {
            Op::Spawn => match self.spawn_reclaiming().await {
                Ok(pid) => Reply::binding(Outcome::Ok, Bound::Process(pid)),
                Err(errno) => {
                    self.count_oom(errno);
                    Reply::new(Outcome::Error(errno))
                }
            },
            Op::Process { pid, command } => self.process_op(*pid, command).await,
            Op::Reclaim { pages } => {
                self.reclaim(*pages).await;
                Reply::new(Outcome::Ok)
            }
            Op::Compact => {
                self.compact_zone(None).await;
                Reply::new(Outcome::Ok)
            }
            Op::KsmScan => {
                self.ksm_scan().await;
                Reply::new(Outcome::Ok)
            }
        }
    }

    /// A command of `pid`, reporting a pending asynchronous fault at kernel
    /// entry (docs/semantics.md §5).
    async fn process_op(&self, pid: Pid, command: &Command) -> Reply {
        let Some(pending) = self.take_async_fault(pid, command) else {
            return Reply::new(Outcome::Error(Errno::Srch));
        };
        let reply = self.command(pid, command).await;
        if self.stuck.borrow_mut().remove(&self.sched.current_cpu()) {
            self.bump(|c| c.fault_stuck += 1);
            return Reply::new(Outcome::Stuck);
        }
        if pending {
            self.deliver_async_fault(reply)
        } else {
            reply
        }
    }

    /// Counts `oom` for a system call that failed for want of memory.
    fn count_oom(&self, errno: Errno) {
        if errno == Errno::NoMem {
            self.bump(|c| c.oom += 1);
        }
    }

    async fn command(&self, pid: Pid, command: &Command) -> Reply {
        let result =
            |r: Result<(), Errno>| Reply::new(r.map_or_else(Outcome::Error, |()| Outcome::Ok));
        let count =
            |r: Result<u64, Errno>| Reply::new(r.map_or_else(Outcome::Error, Outcome::Count));
        match command {
            // Fork and exec fail with ENOMEM only for want of memory (a
            // page table, a copied page): counted as out of memory (`oom`).
            Command::Fork => match self.fork(pid).await {
                Ok(child) => Reply::binding(Outcome::Ok, Bound::Process(child)),
                Err(errno) => {
                    self.count_oom(errno);
                    Reply::new(Outcome::Error(errno))
                }
            },
            Command::Exit => result(self.exit(pid).await),
            Command::Exec => {
                let r = self.exec(pid).await;
                if let Err(errno) = r {
                    self.count_oom(errno);
                }
                result(r)
            }
            Command::Prctl(request) => result(self.prctl(pid, *request)),
            Command::PrctlGet => match self.prctl_get(pid) {
                Ok(word) => Reply::new(Outcome::Value(u128::from(word))),
                Err(errno) => Reply::new(Outcome::Error(errno)),
            },
            Command::Tco(on) => result(self.set_tco(pid, *on)),
            Command::Yield => {
                self.sched.preempt_point().await;
                Reply::new(Outcome::Ok)
            }
            Command::Mmap { len, prot, flags } => match self.mmap(pid, *len, *prot, *flags).await {
                Ok(base) => Reply::binding(Outcome::Ok, Bound::Pointer(base.to_ptr())),
                Err(errno) => Reply::binding(
                    Outcome::Error(errno),
                    Bound::Pointer(TaggedPtr::from_raw(0)),
                ),
            },
            Command::Munmap { ptr, len } => result(self.munmap(pid, *ptr, *len).await),
            Command::Mprotect { ptr, len, prot } => {
                result(self.mprotect(pid, *ptr, *len, *prot).await)
            }
            Command::Madvise { ptr, len, advice } => {
                result(self.madvise(pid, *ptr, *len, *advice).await)
            }
            // A long-term pin fails with ENOMEM only for want of memory
            // (its faults, or a page it must migrate first): out of memory.
            Command::Pin { ptr, len } => {
                let r = self.pin_with(pid, *ptr, *len, PinKind::LongTerm).await;
                if let Err(errno) = r {
                    self.count_oom(errno);
                }
                result(r)
            }
            Command::Unpin { ptr, len } => result(self.unpin(pid, *ptr, *len).await),
            Command::PinShortTerm { ptr, len } => {
                result(self.pin_with(pid, *ptr, *len, PinKind::ShortTerm).await)
            }
            Command::WriteFd { ptr, len } => count(self.write_fd(pid, *ptr, *len).await),
            Command::ReadFd { ptr, len, byte } => count(self.read_fd(pid, *ptr, *len, *byte).await),
            Command::PeekTags {
                target,
                ptr,
                granules,
            } => Reply::new(
                self.peek_tags(pid, *target, *ptr, *granules)
                    .map_or_else(Outcome::Error, Outcome::Tags),
            ),
            Command::PokeTags { target, ptr, tags } => {
                count(self.poke_tags(pid, *target, *ptr, tags).await)
            }
            Command::Load { ptr, size } => Reply::new(self.load(pid, *ptr, *size).await),
            Command::Store { ptr, size, value } => {
                Reply::new(self.store(pid, *ptr, *size, *value).await)
            }
            Command::Fill { ptr, len, byte } => Reply::new(self.fill(pid, *ptr, *len, *byte).await),
            Command::Verify { ptr, len, byte } => {
                Reply::new(self.verify(pid, *ptr, *len, *byte).await)
            }
            Command::Irg { ptr, exclude } => {
                let tagged = self.irg(pid, *ptr, *exclude);
                Reply::binding(Outcome::Tag(tagged.tag()), Bound::Pointer(tagged))
            }
            Command::Addg {
                ptr,
                offset,
                tag_offset,
            } => {
                let result = self.addg(pid, *ptr, *offset, *tag_offset);
                Reply::binding(Outcome::Tag(result.tag()), Bound::Pointer(result))
            }
            Command::StoreTag { op, ptr } => Reply::new(self.store_tag(pid, *op, *ptr).await),
            Command::SetTag { ptr, len } => Reply::new(self.set_tag(pid, *ptr, *len).await),
            Command::Ldg { ptr } => Reply::new(self.ldg(pid, *ptr).await),
        }
    }
}

impl Kernel {
    /// Runs `ops`, one task each (CPUs 0..n), and the design's refill
    /// thread as one more task, the last CPU (`crate::mem`'s `refill`
    /// module: the thread returns once every command has finished and no
    /// wake-up is pending). Returns the commands' replies in order.
    fn run_with_refill_thread(
        &self,
        ops: &[Op],
        chooser: &mut dyn sched::Chooser,
        direct: bool,
    ) -> Result<Vec<Reply>, sched::SchedError> {
        let mut tasks: Vec<Task<'_, Option<Reply>>> = ops
            .iter()
            .map(|op| {
                Box::pin(async move {
                    let reply = self.task_op(op, direct).await;
                    self.mem.refill_task_done();
                    Some(reply)
                }) as Task<'_, Option<Reply>>
            })
            .collect();
        tasks.push(Box::pin(async move {
            self.mem.run_refill_thread(&mut self.mover()).await;
            None
        }));
        self.mem.begin_refill_run(ops.len());
        let outcome = self.sched.run(tasks, chooser, RunLimits::default());
        self.mem.end_refill_run();
        Ok(outcome?.into_iter().flatten().collect())
    }

    /// One op of a parallel block, as a task: a load or store the task's
    /// CPU can serve from its own TLB takes the direct path (`direct`),
    /// everything else the kernel path.
    async fn task_op(&self, op: &Op, direct: bool) -> Reply {
        if direct
            && let Op::Process { pid, command } = op
            && let Some(outcome) = self.task_fast_access(*pid, command)
        {
            return Reply::new(outcome);
        }
        self.op(op).await
    }

    /// `Machine::run_parallel`, with the tasks' loads and stores on their
    /// CPUs' TLBs when `direct` (the tests run the same blocks without).
    pub(crate) fn run_parallel_with(
        &self,
        ops: &[Op],
        chooser: &mut dyn sched::Chooser,
        direct: bool,
    ) -> Result<Vec<Reply>, MachineError> {
        if self.mem.has_refill_thread() {
            return self
                .run_with_refill_thread(ops, chooser, direct)
                .map_err(MachineError::Schedule);
        }
        let tasks: Vec<Task<'_, Reply>> = ops
            .iter()
            .map(|op| Box::pin(self.task_op(op, direct)) as Task<'_, Reply>)
            .collect();
        self.sched
            .run(tasks, chooser, RunLimits::default())
            .map_err(MachineError::Schedule)
    }
}

impl Machine for Kernel {
    fn prefetch(&self, accesses: &[(Pid, TaggedPtr)]) -> u64 {
        self.direct_prefetch(accesses)
    }

    fn run(&mut self, op: &Op) -> Reply {
        if let Op::Process { pid, command } = op
            && let Some(outcome) = self.fast_access(*pid, command)
        {
            return Reply::new(outcome);
        }
        let this = &*self;
        if this.mem.has_refill_thread() {
            // The command and the design's refill thread; the lowest
            // runnable task runs, so the thread runs exactly when the
            // command waits for it or has finished (deterministic).
            return this
                .run_with_refill_thread(std::slice::from_ref(op), &mut sched::LowestRunnable, false)
                .map(|mut replies| replies.pop().expect("BUG: one command, one reply"))
                .unwrap_or_else(|e| panic!("BUG: a single kernel path failed to finish: {e}"));
        }
        this.sched
            .block_on(this.op(op), RunLimits::default())
            .unwrap_or_else(|e| panic!("BUG: a single kernel path failed to finish: {e}"))
    }

    fn run_parallel(
        &mut self,
        ops: &[Op],
        chooser: &mut dyn sched::Chooser,
    ) -> Result<Vec<Reply>, MachineError> {
        self.run_parallel_with(ops, chooser, true)
    }

    fn counter(&self, counter: Counter) -> Option<u64> {
        self.counter_value(counter)
    }

    fn tags(&self, pid: Pid, ptr: TaggedPtr, len: u64) -> Option<Vec<mte::Tag>> {
        self.observe_tags(pid, ptr, len)
    }

    fn page_state(&self, pid: Pid, ptr: TaggedPtr, state: PageState) -> Option<bool> {
        self.observe_page_state(pid, ptr, state)
    }

    fn invariant_violations(&self) -> Vec<Violation> {
        self.checked_violations()
            .iter()
            .map(KernelViolation::to_violation)
            .collect()
    }

    fn set_trace(&mut self, on: bool) {
        self.trace().set(on);
    }

    fn lock_order(&self) -> Option<LockOrder> {
        Some(self.sched.lock_order())
    }

    fn merge_lock_order(&mut self, order: &LockOrder) {
        self.sched.merge_lock_order(order);
    }

    fn take_events(&mut self) -> Vec<uapi::event::Event> {
        self.trace().take()
    }
}

/// `PAGE_SIZE` as the granule arithmetic needs it.
const PAGE: u64 = PAGE_SIZE;
