//! The machine-wide invariant checker: every invariant of `docs/model.md`
//! §4 that can be checked from state (1, 2, 5, 6, 7 here; 3, 4 and 8 by
//! [`Memory::check`](crate::mem::Memory::check) and the tag storage
//! manager), plus the consistency checks of every layer (VMA trees, page
//! tables, rmap, TLBs, swap counts, page caches, processes, frame counts).
//!
//! # What it owns
//! [`KernelViolation`], one broken invariant, structured; and
//! [`Kernel::violations`], which walks the whole machine and lists them.
//! `uapi::Machine::invariant_violations` maps them to `uapi::Violation`s.
//!
//! # Contract
//! The checker never changes the machine (it only borrows), and it is a
//! count, not a scan, of physical memory: machines may have billions of
//! frames. Invariant 9 (no sleep under a spinlock, and the lock order) is
//! recorded by the scheduler as the kernel runs and reported here (each
//! violation from the moment it happened on), 10 (every command completes)
//! by the access path, and 11 (nothing is lost) is the differential tests'
//! against the reference model.
//!
//! # Incremental form
//! [`Kernel::violations_incremental`] gives the same verdict while
//! deriving less: the per-frame checks of the memory layer come from
//! `crate::phys::incremental` and `crate::mem::incremental` (frames of the
//! dirty log only); what this checker derives from an address space's page
//! table alone (its leaves, the table's own check) is kept per address
//! space and reused while the table's generation
//! ([`crate::mm::PageTable::generation`]) is unchanged. When it changed,
//! only the 2 MiB regions whose PMD slot changed are walked again (a block,
//! or a PTE table named by its own generation:
//! [`crate::mm::PageTable::pmd_slots`]); the leaves of the others are
//! shared with the previous scan (kept per region), and the table's own
//! check recounts only the PTE tables whose generation changed
//! ([`crate::mm::PageTable::check_memo`]). The rmap check is incremental too: the leaves that went or
//! came update a kept per-frame list of the mappings the tables record,
//! and only the frames whose list changed there or in the rmap (its change
//! log, [`crate::mm::Rmap::take_touched`]) are compared again. The
//! per-leaf checks against frame flags are recomputed at every check from
//! the kept leaves. The dirty check (no writable entry of a clean file
//! page) starts from the clean file pages, kept while the objects and the
//! owners are unchanged (their `super::tracked::Tracked` generations),
//! and finds their writable PTEs through the rmap check's kept mappings
//! (special PTEs, which those leave out, are collected by the per-leaf
//! loop). The frame part (counts, LRU, swap, page caches, pins,
//! orphans, folios, the frame count) is `super::check_frames`'s, with its
//! own incremental form.
//!
//! Linux has no single counterpart: the checks are those of
//! `CONFIG_DEBUG_VM` (`VM_BUG_ON_PAGE` on map and reference counts,
//! `check_mm()`), of `swap_map[]` accounting, and the RFC's own
//! `PG_tag_storage_reserved` rules.

use std::collections::BTreeMap;
use std::rc::Rc;

use mte::{Pfn, VirtAddr};
use thiserror::Error;
use uapi::{Invariant, Pid, Violation};

use super::{Kernel, Mm, Object, ObjectKind, PAGE};
use crate::mem::MemViolation;
use crate::mm::layout::{PAGE_SHIFT, PAGES_PER_PMD, PMD_SIZE};
use crate::mm::{
    Access, Block, LeafEntry, MmId, ObjectId, PageTable, Pgoff, PgtableViolation, PmdSlot, Pte,
    PteCheckMemo, RmapViolation, SwapSlot, VmaViolation, Walk,
};
use crate::phys::PhysViolation;
use crate::swap::SwapViolation;

/// One broken invariant of the machine.
#[derive(Clone, Debug, PartialEq, Eq, Error)]
pub enum KernelViolation {
    #[error("memory: {0:?}")]
    Mem(MemViolation),
    /// docs/model.md §4.10: a command replayed a fault at `addr` past the
    /// bound, so it would never complete.
    #[error("livelock: a fault at {addr} was replayed more than the bound allows")]
    Livelock { addr: VirtAddr },
    /// docs/model.md §4.9: a CPU slept (or might have) holding a spin lock,
    /// or two paths take two locks in opposite orders (a possible
    /// deadlock), as the scheduler recorded it.
    #[error("{0}")]
    Lock(sched::LockViolation),
    #[error("mm {mm:?}: VMA tree: {violation:?}")]
    Vma { mm: MmId, violation: VmaViolation },
    #[error("mm {mm:?}: page table: {violation:?}")]
    Pgtable {
        mm: MmId,
        violation: PgtableViolation,
    },
    #[error("rmap: {0:?}")]
    Rmap(RmapViolation),
    /// docs/model.md §4.1.
    #[error("mm {mm:?} {va}: valid tagged entry maps {pfn}, whose tags are not initialised")]
    TaggedEntryUninitialised { mm: MmId, va: VirtAddr, pfn: Pfn },
    /// docs/model.md §4.1.
    #[error("mm {mm:?} {va}: valid tagged entry maps {pfn}, whose tag storage is not reserved")]
    TaggedEntryUnreserved { mm: MmId, va: VirtAddr, pfn: Pfn },
    /// docs/model.md §4.2.
    #[error("mm {mm:?} {va}: valid tagged entry maps tag storage frame {pfn}")]
    TaggedEntryInTagStorage { mm: MmId, va: VirtAddr, pfn: Pfn },
    /// docs/model.md §4.5.
    #[error("mm {mm:?} {va}: the zero page is mapped writable or not special")]
    ZeroPageEntry { mm: MmId, va: VirtAddr },
    /// docs/model.md §4.6.
    #[error("{pfn}: map count {mapcount}, but {mappings} mappings")]
    MapCount {
        pfn: Pfn,
        mapcount: u32,
        mappings: usize,
    },
    /// docs/model.md §4.6.
    #[error("{pfn}: pin count {pins}, but {recorded} pins recorded by processes")]
    PinCount { pfn: Pfn, pins: u32, recorded: u32 },
    /// docs/model.md §4.6: a user frame holds exactly its allocation's reference.
    #[error("{pfn}: reference count {refcount}, expected 1")]
    RefCount { pfn: Pfn, refcount: u32 },
    #[error("{pfn} is held by the kernel but not allocated")]
    NotAllocated { pfn: Pfn },
    #[error("{pfn}: an orphan that is mapped, cached or not pinned")]
    Orphan { pfn: Pfn },
    #[error("{pfn}: page cache bookkeeping disagrees")]
    PageCache { pfn: Pfn },
    /// A frame allocated but held by nothing the kernel knows (a leak), or
    /// held twice.
    #[error("{allocated} frames allocated, {accounted} accounted for")]
    FrameCount { allocated: u64, accounted: u64 },
    /// The huge zero page mapped writable or not special, or a special
    /// block that is not the huge zero page.
    #[error("mm {mm:?} {va}: a huge zero page entry is writable or not special")]
    HugeZeroPageEntry { mm: MmId, va: VirtAddr },
    /// A block without its deposited page table, or a deposit without a
    /// block.
    #[error("mm {mm:?} {va}: block and deposited page table disagree")]
    Deposit { mm: MmId, va: VirtAddr },
    #[error("mm {mm:?} {va}: the TLB disagrees with the page table")]
    StaleTlb { mm: MmId, va: VirtAddr },
    /// A per-CPU TLB entry of the current contents' epoch whose buffer
    /// index or tag copy is not what the frame holds now (a write that
    /// should have moved the epoch did not).
    #[error("mm {mm:?} {va}: a per-CPU TLB entry's data or tag copy is stale in the current epoch")]
    StaleTlbHints { mm: MmId, va: VirtAddr },
    #[error("process {pid:?}: {what}")]
    Process { pid: Pid, what: &'static str },
    #[error("swap device: {0:?}")]
    Swap(SwapViolation),
    /// Linux `swap_map[]`: a slot's swap count equals the swap entries
    /// that refer to it (a slot with none is free).
    #[error("swap slot {slot}: swap count {count}, but {entries} swap entries")]
    SwapCount {
        slot: SwapSlot,
        count: u32,
        entries: u32,
    },
    /// docs/model.md §4.7: saved tags belong to a swapped-out tagged page, and a
    /// machine without MTE has none. (Not checked: that an entry referring
    /// to a slot with saved tags lies in a tagged mapping. A page shared by
    /// fork may be mapped tagged by one process and untagged by the other,
    /// as after `mprotect(PROT_MTE)` in one of them, and be swapped out
    /// from both by reclaim.)
    #[error("swap slot {slot} holds saved tags on a machine without MTE")]
    SavedTagsWithoutMte { slot: SwapSlot },
    /// docs/model.md §4.7: tags restored at swap-in wait only for a page that
    /// is mapped (awaiting its tag storage) and whose tags are not
    /// initialised yet.
    #[error("{pfn}: restored tags wait for a page that is {what}")]
    RestoredTags { pfn: Pfn, what: &'static str },
    /// docs/model.md §4.6: a KSM page is held by its mappings only.
    #[error("KSM page {pfn}: {what}")]
    KsmCount { pfn: Pfn, what: &'static str },
    /// A KSM page flagged tagged, or mapped writable, tagged or by a block
    /// (see `ksm`).
    #[error("KSM page {pfn}: {what}")]
    KsmPage { pfn: Pfn, what: &'static str },
    /// Every user page is on exactly one LRU list of its type, or isolated
    /// by reclaim; nothing else is (see `lru`).
    #[error("{pfn}: LRU: {what}")]
    Lru { pfn: Pfn, what: &'static str },
    /// The swap cache holds, for a slot that swap entries still refer to,
    /// one page with the slot's data and saved tags (see `swapping`).
    #[error("swap cache, slot {slot}: {what}")]
    SwapCache { slot: SwapSlot, what: &'static str },
    /// A file page mapped writable is dirty: otherwise a write through the
    /// entry would be lost when reclaim drops the page (see `reclaim`).
    #[error("mm {mm:?} {va}: a clean file page is mapped writable")]
    CleanFileWritable { mm: MmId, va: VirtAddr },
    /// docs/model.md §4.6 for a multi-size THP folio: every page allocated
    /// and mapped by the same mappings at the same offsets (see `mthp`).
    #[error("mTHP folio at {head} (order {order}): {what}")]
    Folio {
        head: Pfn,
        order: u32,
        what: &'static str,
    },
    /// A CPU's TLB levels out of shape (an entry outside its slot, a page
    /// in both levels, counts that are not what the levels hold): a flush
    /// could miss an entry.
    #[error("CPU {cpu}'s TLB: {what}")]
    CpuTlbLayout { cpu: usize, what: &'static str },
}

/// What a present mapping of the page at `va` gives a TLB entry to agree
/// with (the walk of `va`; `None`: nothing valid is mapped there).
struct MappedAt {
    /// Mapped by a block: whether `va` is the block's base. `None`: a PTE.
    block: Option<bool>,
    /// The frame of the page at `va`.
    pfn: Pfn,
    access: Access,
    tagged: bool,
}

fn mapped_at(walk: Walk, va: VirtAddr) -> Option<MappedAt> {
    match walk {
        Walk::Block {
            base,
            block: Block::Present(l),
        } => Some(MappedAt {
            block: Some(base == va),
            pfn: l.pfn + ((va.as_u64() - base.as_u64()) >> PAGE_SHIFT),
            access: l.attrs.access,
            tagged: l.attrs.tagged,
        }),
        Walk::Pte(Pte::Present(l)) => Some(MappedAt {
            block: None,
            pfn: l.pfn,
            access: l.attrs.access,
            tagged: l.attrs.tagged,
        }),
        _ => None,
    }
}

impl KernelViolation {
    /// The rule of `docs/model.md` §4 this breaks (layer consistency for a
    /// layer's own bookkeeping).
    pub fn invariant(&self) -> Invariant {
        use KernelViolation as K;
        match self {
            K::Mem(v) => mem_invariant(v),
            K::TaggedEntryUninitialised { .. } | K::TaggedEntryUnreserved { .. } => {
                Invariant::TaggedEntries
            }
            K::TaggedEntryInTagStorage { .. } => Invariant::TagStorageUntagged,
            K::ZeroPageEntry { .. } | K::HugeZeroPageEntry { .. } => Invariant::ZeroPage,
            K::MapCount { .. }
            | K::PinCount { .. }
            | K::RefCount { .. }
            | K::NotAllocated { .. }
            | K::Orphan { .. }
            | K::FrameCount { .. }
            | K::SwapCount { .. }
            | K::KsmCount { .. }
            | K::Folio { .. } => Invariant::Counts,
            K::SavedTagsWithoutMte { .. } | K::RestoredTags { .. } => Invariant::SavedTags,
            K::SwapCache { .. } | K::CleanFileWritable { .. } => Invariant::NothingLost,
            K::Lru { .. } => Invariant::LayerConsistency,
            K::Livelock { .. } => Invariant::Progress,
            K::Lock(_) => Invariant::NoSleepUnderSpinlock,
            K::Vma { .. }
            | K::Pgtable { .. }
            | K::Rmap(_)
            | K::PageCache { .. }
            | K::Deposit { .. }
            | K::StaleTlb { .. }
            | K::StaleTlbHints { .. }
            | K::CpuTlbLayout { .. }
            | K::Process { .. }
            | K::Swap(_)
            | K::KsmPage { .. } => Invariant::LayerConsistency,
        }
    }

    /// As [`uapi::Machine::invariant_violations`] reports it.
    pub fn to_violation(&self) -> Violation {
        Violation::new(self.invariant(), self.to_string())
    }
}

/// The rule a violation found by the memory layer breaks.
fn mem_invariant(v: &MemViolation) -> Invariant {
    use MemViolation as M;
    match v {
        M::Phys(PhysViolation::TaggedTagStorage { .. }) | M::TagStorageFrameFlag { .. } => {
            Invariant::TagStorageUntagged
        }
        M::Phys(
            PhysViolation::FramesUnaccounted { .. }
            | PhysViolation::FreeBlocksOverlap { .. }
            | PhysViolation::FreeFrameInNoBlock { .. },
        ) => Invariant::FrameStates,
        M::TagStore(_)
        | M::ReservedBlockFrame { .. }
        | M::ClaimToken { .. }
        | M::ClaimedOutsideReservedBlocks { .. }
        | M::BlockRefcount { .. }
        | M::ReservedWithoutTagStorage { .. }
        | M::CleancacheInReservedBlock { .. } => Invariant::ReservedBlocks,
        M::TaggedWithoutReservation { .. } => Invariant::TaggedEntries,
        M::ZeroPage { .. } => Invariant::ZeroPage,
        M::TagsWrittenToUnreservedStorage { .. } => Invariant::TagWrites,
        M::Phys(_)
        | M::MteLockHeld { .. }
        | M::Counter { .. }
        | M::TagCountersStale { .. }
        | M::IsolatedPageblock { .. }
        | M::CleancacheBookkeeping { .. } => Invariant::LayerConsistency,
    }
}

impl Kernel {
    /// The checks of block entries of `m`: the huge zero page read-only and
    /// special (and nothing else special); a valid tagged block has all 512
    /// frames tagged, reserved and outside tag storage (invariants 1, 2,
    /// 5); one deposit per block. (The frames of THPs are in the scan's
    /// `mapped`.)
    fn check_blocks(
        &self,
        id: MmId,
        m: &Mm,
        leaves: &[(VirtAddr, LeafEntry)],
    ) -> Vec<KernelViolation> {
        let mut out = Vec::new();
        if leaves.is_empty() && m.deposits.is_empty() {
            return out;
        }
        // One borrow and one metadata lookup per frame of a tagged block
        // (both flags are in it).
        let phys = self.mem.phys();
        let geometry = self.mem.geometry();
        // The blocks' addresses, ascending (the leaves are in address
        // order), for the deposits' comparison below.
        let mut blocks: Vec<VirtAddr> = Vec::new();
        for &(va, entry) in leaves {
            let LeafEntry::Block(block) = entry else {
                continue;
            };
            blocks.push(va);
            let leaf = block.leaf();
            let is_hzp = Some(leaf.pfn) == self.huge_zero.get();
            if is_hzp != leaf.attrs.special || (is_hzp && leaf.attrs.access == Access::ReadWrite) {
                out.push(KernelViolation::HugeZeroPageEntry { mm: id, va });
            }
            let frames = (0..PAGES_PER_PMD).map(|i| leaf.pfn + i);
            let valid_tagged = matches!(block, Block::Present(l)
                if l.attrs.access.is_valid() && l.attrs.tagged);
            if !valid_tagged {
                continue;
            }
            for pfn in frames {
                let at = va
                    .checked_add((pfn.as_u64() - leaf.pfn.as_u64()) * PAGE)
                    .expect("BUG: a block beyond the address space");
                let flags = phys.alloc.frame(pfn).map(|m| m.flags).unwrap_or_default();
                if !flags.contains(crate::phys::PageFlag::Tagged) {
                    out.push(KernelViolation::TaggedEntryUninitialised {
                        mm: id,
                        va: at,
                        pfn,
                    });
                }
                if !flags.contains(crate::phys::PageFlag::TagStorageReserved) {
                    out.push(KernelViolation::TaggedEntryUnreserved {
                        mm: id,
                        va: at,
                        pfn,
                    });
                }
                if geometry.is_tag_storage(pfn) {
                    out.push(KernelViolation::TaggedEntryInTagStorage {
                        mm: id,
                        va: at,
                        pfn,
                    });
                }
            }
        }
        // The addresses with a block or a deposit but not both, ascending
        // (a merge of the two ascending runs).
        debug_assert!(blocks.is_sorted(), "BUG: leaves out of address order");
        let mut blocks = blocks.into_iter().peekable();
        let mut deposited = m.deposits.keys().copied().peekable();
        loop {
            let va = match (blocks.peek(), deposited.peek()) {
                (Some(b), Some(d)) if b == d => {
                    blocks.next();
                    deposited.next();
                    continue;
                }
                (Some(&b), Some(&d)) if b < d => {
                    blocks.next();
                    b
                }
                (_, Some(&d)) => {
                    deposited.next();
                    d
                }
                (Some(&b), None) => {
                    blocks.next();
                    b
                }
                (None, None) => break,
            };
            out.push(KernelViolation::Deposit { mm: id, va });
        }
        out
    }

    /// Every broken invariant (see the module doc), structured;
    /// [`uapi::Machine::invariant_violations`] maps these with
    /// [`KernelViolation::to_violation`].
    pub fn violations(&self) -> Vec<KernelViolation> {
        self.violations_with(false)
    }

    /// [`Self::violations`] by the incremental checker: the same
    /// violations (compared as multisets: the order may differ), with the
    /// per-frame checks recomputed only for what changed since the last
    /// incremental check (see `crate::phys::dirty` for the contract of
    /// mutation paths, and `crate::machine::incremental`).
    pub fn violations_incremental(&self) -> Vec<KernelViolation> {
        self.violations_with(true)
    }

    fn violations_with(&self, incremental: bool) -> Vec<KernelViolation> {
        let Kernel {
            platform: _,
            sched: _,
            mem,
            vm_config: _,
            procs,
            next_pid,
            mms,
            mm_ids: _,
            anon_ids: _,
            object_ids: _,
            rmap,
            objects,
            cache_owner,
            orphans: _,
            lru: _,
            swap_cache: _,
            swap_cache_slot: _,
            swap: _,
            restored_tags: _,
            page_locks: _,
            rng: _,
            counters: _,
            huge_zero: _,
            fast_memo: _,
            cpu_tlbs,
            contents_epoch: _,
            stuck: _,
            livelocks,
            ksm,
            lock_violations: _,
            freeing: _,
            folios: _,
            checks: _,
            check_cache: _,
            kernel_held: _,
        } = self;
        let mem_violations = match incremental {
            true => mem.check_incremental(),
            false => mem.check(),
        };
        let mut out: Vec<KernelViolation> = mem_violations
            .into_iter()
            .map(KernelViolation::Mem)
            .collect();
        out.extend(
            livelocks
                .borrow()
                .iter()
                .map(|&addr| KernelViolation::Livelock { addr }),
        );
        out.extend(self.ksm_violations(&ksm.borrow()));
        out.extend(
            self.lock_violations()
                .into_iter()
                .map(KernelViolation::Lock),
        );
        // The rmap's change log, taken before anything borrows the rmap.
        let rmap_touched = match incremental {
            true => rmap.borrow_mut().take_touched(),
            false => None,
        };
        let owners_key = (objects.generation(), cache_owner.generation());
        let procs = procs.borrow();
        let mms = mms.borrow();
        let rmap = rmap.borrow();
        let objects = objects.borrow();
        let cache_owner = cache_owner.borrow();
        let zero = mem.zero_page();
        let geometry = mem.geometry();

        // Processes.
        for (pid, p) in procs.iter() {
            if pid.0 >= next_pid.get() {
                out.push(KernelViolation::Process {
                    pid: *pid,
                    what: "pid not handed out yet",
                });
            }
            if !mms.contains_key(&p.mm) {
                out.push(KernelViolation::Process {
                    pid: *pid,
                    what: "its address space is gone",
                });
            }
            if uapi::MteCtrl::decode(p.ctrl.encode(), self.has_mte()) != Some(p.ctrl) {
                out.push(KernelViolation::Process {
                    pid: *pid,
                    what: "settings prctl would refuse",
                });
            }
        }

        // Address spaces, entries (invariants 1, 2, 5, 7), TLBs.
        let mut swap_entries: BTreeMap<SwapSlot, u32> = BTreeMap::new();
        // Sorted and deduplicated after the loop over address spaces.
        let mut mapped: Vec<Pfn> = Vec::new();
        // Special PTEs mapped writable (the incremental dirty check's:
        // its kept mappings leave special leaves out).
        let mut special_writable: Vec<(MmId, VirtAddr, Pfn)> = Vec::new();
        let mut cache = incremental.then(|| self.check_cache.borrow_mut());
        let scans: Vec<Rc<MmScan>> = mms
            .iter()
            .map(|(id, m)| match cache.as_mut() {
                Some(cache) => cache.scan(*id, &m.pt),
                None => Rc::new(MmScan::of(&m.pt)),
            })
            .collect();
        if let Some(cache) = cache.as_mut() {
            cache.retain(|id| mms.contains_key(id));
        }
        // One borrow for the loop (the per-leaf flags and the per-CPU TLBs).
        let phys = mem.phys();
        let frame_flags = |pfn: Pfn| phys.alloc.frame(pfn).map(|m| m.flags).unwrap_or_default();
        // The per-CPU TLB entries by address space (a stable sort: each
        // one's in the order `entries` gives), found per address space
        // by bisection rather than a pass over all of them each.
        let cpu_tlb = cpu_tlbs.borrow();
        let mut cpu_entries: Vec<&super::cpu_tlb::CpuTlbEntry> = cpu_tlb.entries().collect();
        cpu_entries.sort_by_key(|e| e.mm);
        for ((id, m), scan) in mms.iter().zip(&scans) {
            out.extend(
                m.vmas
                    .check()
                    .into_iter()
                    .map(|violation| KernelViolation::Vma { mm: *id, violation }),
            );
            out.extend(
                scan.pt
                    .iter()
                    .cloned()
                    .map(|violation| KernelViolation::Pgtable { mm: *id, violation }),
            );
            out.extend(self.check_blocks(*id, m, &scan.blocks));
            if !incremental {
                mapped.extend_from_slice(&scan.mapped);
            }
            for &(va, entry) in scan.leaves() {
                let LeafEntry::Pte(pte) = entry else {
                    continue;
                };
                if let Pte::Swap(slot) = pte {
                    *swap_entries.entry(slot).or_default() += 1;
                    continue;
                }
                let Some(leaf) = pte.leaf() else { continue };
                if leaf.attrs.special
                    && cache.is_some()
                    && matches!(pte, Pte::Present(_))
                    && leaf.attrs.access.is_writable()
                {
                    special_writable.push((*id, va, leaf.pfn));
                }
                if leaf.pfn == zero
                    && (!leaf.attrs.special || leaf.attrs.access == Access::ReadWrite)
                {
                    out.push(KernelViolation::ZeroPageEntry { mm: *id, va });
                }
                let valid_tagged =
                    matches!(pte, Pte::Present(l) if l.attrs.access.is_valid() && l.attrs.tagged);
                if valid_tagged {
                    let flags = frame_flags(leaf.pfn);
                    if !flags.contains(crate::phys::PageFlag::Tagged) {
                        out.push(KernelViolation::TaggedEntryUninitialised {
                            mm: *id,
                            va,
                            pfn: leaf.pfn,
                        });
                    }
                    if !flags.contains(crate::phys::PageFlag::TagStorageReserved) {
                        out.push(KernelViolation::TaggedEntryUnreserved {
                            mm: *id,
                            va,
                            pfn: leaf.pfn,
                        });
                    }
                    if geometry.is_tag_storage(leaf.pfn) {
                        out.push(KernelViolation::TaggedEntryInTagStorage {
                            mm: *id,
                            va,
                            pfn: leaf.pfn,
                        });
                    }
                }
            }
            for e in m.tlb.entries() {
                let va = VirtAddr::new(e.vpn << PAGE_SHIFT).expect("BUG: TLB page above 2^56");
                // An entry made from a block is keyed at the block's base.
                let agrees = match mapped_at(m.pt.walk(va), va) {
                    Some(at) => {
                        at.block.map_or(!e.huge, |at_base| e.huge && at_base)
                            && (at.pfn, at.access, at.tagged) == (e.pfn, e.access, e.tagged)
                    }
                    None => false,
                };
                if !agrees {
                    out.push(KernelViolation::StaleTlb { mm: *id, va });
                }
            }
            // The per-CPU TLBs of the direct path: each page entry agrees
            // with the walk (one made from a block, with the block's page),
            // and its hints, if of the current epoch, are what a refresh
            // would take.
            let from = cpu_entries.partition_point(|e| e.mm < *id);
            let to = cpu_entries.partition_point(|e| e.mm <= *id);
            for &e in &cpu_entries[from..to] {
                let va = VirtAddr::new(e.vpn << PAGE_SHIFT).expect("BUG: TLB page above 2^56");
                let agrees = match mapped_at(m.pt.walk(va), va) {
                    Some(at) => {
                        at.block.is_some() == e.huge
                            && (at.pfn, at.access, at.tagged) == (e.pfn, e.access, e.tagged)
                    }
                    None => false,
                };
                if !agrees {
                    out.push(KernelViolation::StaleTlb { mm: *id, va });
                    continue;
                }
                if e.epoch == phys.contents.epoch() {
                    let mut fresh = e.clone();
                    super::direct::refresh_hints(&mut fresh, &phys.contents);
                    if (&fresh.data, fresh.tag_copy) != (&e.data, e.tag_copy) {
                        out.push(KernelViolation::StaleTlbHints { mm: *id, va });
                    }
                }
            }
        }
        drop(cpu_entries);
        drop(cpu_tlb);
        drop(phys);
        out.extend(
            cpu_tlbs
                .borrow()
                .layout_violations()
                .into_iter()
                .map(|(cpu, what)| KernelViolation::CpuTlbLayout { cpu, what }),
        );
        // An address space that is gone leaves no per-CPU entry behind.
        for e in cpu_tlbs.borrow().entries() {
            if !mms.contains_key(&e.mm) {
                let va = VirtAddr::new(e.vpn << PAGE_SHIFT).expect("BUG: TLB page above 2^56");
                out.push(KernelViolation::StaleTlb { mm: e.mm, va });
            }
        }
        // The full checker's mapped frames (the incremental one has them
        // as the keys of its kept mappings): sorted runs, one per address
        // space, which the stable sort merges.
        if cache.is_none() {
            mapped.sort();
            mapped.dedup();
        }
        let rmap_violations = match cache.as_mut() {
            Some(cache) => cache.rmap.verdict(&rmap, rmap_touched),
            None => crate::mm::rmap::check_against_leaves(
                &rmap,
                mms.keys().zip(&scans).flat_map(|(id, scan)| {
                    scan.regions.iter().map(move |r| (*id, r.leaves.as_slice()))
                }),
            ),
        };
        out.extend(rmap_violations.into_iter().map(KernelViolation::Rmap));

        // The frame part (`super::check_frames`).
        let frames = match cache.as_mut() {
            Some(cache) => {
                let cache = &mut **cache;
                self.frame_violations_incremental(
                    &mut cache.frames,
                    &swap_entries,
                    &cache.rmap.want,
                    cache.rmap.rechecked.as_deref(),
                )
            }
            None => self.frame_violations(&swap_entries, &mapped),
        };
        out.extend(frames);

        // Dirty tracking: a writable entry of a file page means a dirty page.
        // The full checker looks at every writable leaf the scans above
        // kept; the incremental one starts from the clean file pages (a
        // few, against hundreds of writable leaves) and their kept
        // mappings, which are the same leaves' (special ones aside:
        // `special_writable`).
        match cache.as_mut() {
            Some(cache) => {
                let cache = &mut **cache;
                let clean = cache.clean_files.get(owners_key, &cache_owner, &objects);
                out.extend(clean_file_writable(
                    &mms,
                    &cache.rmap.want,
                    clean,
                    &special_writable,
                ));
            }
            None if !cache_owner.is_empty() => {
                for ((id, _), scan) in mms.iter().zip(&scans) {
                    for &(va, entry) in scan.leaves() {
                        let LeafEntry::Pte(Pte::Present(leaf)) = entry else {
                            continue;
                        };
                        if !leaf.attrs.access.is_writable() {
                            continue;
                        }
                        let Some((object, pgoff)) = cache_owner.get(&leaf.pfn) else {
                            continue;
                        };
                        if is_clean_file(&objects, *object, *pgoff) {
                            out.push(KernelViolation::CleanFileWritable { mm: *id, va });
                        }
                    }
                }
            }
            None => {}
        }
        drop(cache);
        out
    }
}

/// Whether the page at `pgoff` of `object` is a clean file page (the dirty
/// check's: a writable entry must not map one).
fn is_clean_file(objects: &BTreeMap<ObjectId, Object>, object: ObjectId, pgoff: Pgoff) -> bool {
    objects
        .get(&object)
        .is_some_and(|o| o.kind == ObjectKind::File && !o.dirty.contains(&pgoff))
}

/// The incremental dirty check: the writable PTEs of the frames `clean`
/// (sorted) found through `want` (the kept mappings of every non-special
/// leaf, per frame) and among `special_writable` (the writable special
/// PTEs), in the full checker's order (address space, then address).
fn clean_file_writable(
    mms: &BTreeMap<MmId, Mm>,
    want: &BTreeMap<Pfn, Vec<crate::mm::RmapEntry>>,
    clean: &[Pfn],
    special_writable: &[(MmId, VirtAddr, Pfn)],
) -> Vec<KernelViolation> {
    let mut found: Vec<(MmId, VirtAddr)> = Vec::new();
    for pfn in clean {
        let Some(mappings) = want.get(pfn) else {
            continue;
        };
        for e in mappings {
            // A block's frames are not checked (the full checker looks at
            // PTEs only).
            if e.level != crate::mm::MapLevel::Pte {
                continue;
            }
            let m = mms
                .get(&e.mm)
                .expect("BUG: a kept mapping of an address space that is gone");
            if let Walk::Pte(Pte::Present(l)) = m.pt.walk(e.va)
                && l.attrs.access.is_writable()
            {
                found.push((e.mm, e.va));
            }
        }
    }
    for &(mm, va, pfn) in special_writable {
        if clean.binary_search(&pfn).is_ok() {
            found.push((mm, va));
        }
    }
    found.sort_unstable();
    found
        .into_iter()
        .map(|(mm, va)| KernelViolation::CleanFileWritable { mm, va })
        .collect()
}

/// The clean file pages of the page caches (by the owners' records, as the
/// full dirty check reads them), sorted; kept while neither the objects
/// nor the owners changed (their [`super::tracked::Tracked`] generations).
#[derive(Debug, Default)]
struct CleanFiles {
    key: Option<(u64, u64)>,
    pfns: Vec<Pfn>,
}

impl CleanFiles {
    /// The clean file pages for the generations `key` of the objects and
    /// the owners, derived again if they moved.
    fn get(
        &mut self,
        key: (u64, u64),
        cache_owner: &BTreeMap<Pfn, (ObjectId, Pgoff)>,
        objects: &BTreeMap<ObjectId, Object>,
    ) -> &[Pfn] {
        if self.key != Some(key) {
            self.key = Some(key);
            self.pfns.clear();
            self.pfns.extend(
                cache_owner
                    .iter()
                    .filter(|(_, (object, pgoff))| is_clean_file(objects, *object, *pgoff))
                    .map(|(pfn, _)| *pfn),
            );
        }
        &self.pfns
    }
}

/// What the checker derives from one page table alone: its leaves (in
/// address order, per 2 MiB region) and the table's own check.
#[derive(Debug)]
pub(crate) struct MmScan {
    /// The table's generation when scanned.
    generation: u64,
    /// The leaves, in address order: one region per non-empty PMD slot
    /// for the incremental checker (a region whose slot is unchanged
    /// shares its leaves with the previous scan), one region holding
    /// every leaf for the full checker, which walks the table whole.
    regions: Vec<Region>,
    /// The block entries among the leaves (most tables have none: the
    /// block checks then look at no leaf).
    blocks: Vec<(VirtAddr, LeafEntry)>,
    /// The frames the leaves map (not special ones; every frame of a
    /// block), sorted, with repeats; the full checker's scans only.
    mapped: Vec<Pfn>,
    pt: Vec<crate::mm::PgtableViolation>,
}

/// A run of leaves of one [`MmScan`]: a 2 MiB region with its PMD slot
/// (the incremental checker's), or the whole table (`slot: None`, the
/// full checker's).
#[derive(Debug)]
struct Region {
    va: VirtAddr,
    slot: Option<PmdSlot>,
    leaves: Rc<Vec<(VirtAddr, LeafEntry)>>,
}

impl MmScan {
    /// A scan of the whole table (the full checker's).
    fn of(pt: &PageTable) -> MmScan {
        let leaves: Vec<(VirtAddr, LeafEntry)> = pt.leaves(VirtAddr::ZERO, VirtAddr::MAX).collect();
        let mut mapped = Vec::with_capacity(leaves.len());
        for (_, entry) in &leaves {
            match entry {
                LeafEntry::Block(block) => {
                    let leaf = block.leaf();
                    if !leaf.attrs.special {
                        mapped.extend((0..PAGES_PER_PMD).map(|i| leaf.pfn + i));
                    }
                }
                LeafEntry::Pte(pte) => {
                    if let Some(leaf) = pte.leaf().filter(|l| !l.attrs.special) {
                        mapped.push(leaf.pfn);
                    }
                }
            }
        }
        mapped.sort_unstable();
        let blocks = leaves
            .iter()
            .filter(|(_, entry)| matches!(entry, LeafEntry::Block(_)))
            .copied()
            .collect();
        MmScan {
            generation: pt.generation(),
            regions: vec![Region {
                va: VirtAddr::ZERO,
                slot: None,
                leaves: Rc::new(leaves),
            }],
            blocks,
            mapped,
            pt: pt.check(),
        }
    }

    /// Every leaf, in address order.
    fn leaves(&self) -> impl Iterator<Item = &(VirtAddr, LeafEntry)> {
        self.regions.iter().flat_map(|r| r.leaves.iter())
    }

    /// A scan of `pt` that walks only the regions whose PMD slot differs
    /// from `prev`'s and shares the leaves of the others; `changed` is
    /// told every leaf that went (`false`) or came (`true`). The work is
    /// that of the regions that changed (plus one pass over the slots).
    fn rescan(
        pt: &PageTable,
        prev: Option<&MmScan>,
        memo: &mut PteCheckMemo,
        changed: &mut impl FnMut(VirtAddr, LeafEntry, bool),
    ) -> MmScan {
        let slots = pt.pmd_slots();
        let old: &[Region] = prev.map_or(&[], |p| &p.regions);
        let mut regions = Vec::with_capacity(slots.len());
        let mut blocks = Vec::new();
        let mut old_left = old.iter().peekable();
        for (va, slot) in slots {
            // Regions that went: their leaves went.
            while let Some(gone) = old_left.next_if(|r| r.va < va) {
                for &(at, leaf) in gone.leaves.iter() {
                    changed(at, leaf, false);
                }
            }
            if let PmdSlot::Block(b) = slot {
                blocks.push((va, LeafEntry::Block(b)));
            }
            let leaves = match old_left.next_if(|r| r.va == va) {
                Some(was) if was.slot == Some(slot) => Rc::clone(&was.leaves),
                kept => {
                    let was = kept.map_or(&[][..], |r| r.leaves.as_slice());
                    let leaves: Vec<(VirtAddr, LeafEntry)> = match slot {
                        PmdSlot::Block(b) => vec![(va, LeafEntry::Block(b))],
                        PmdSlot::Table { .. } => {
                            let end = VirtAddr::new(va.as_u64() + PMD_SIZE)
                                .expect("BUG: a region beyond the address space");
                            // Sized for the region as it was (most
                            // changes add a leaf or none): no regrowth.
                            let mut leaves = Vec::with_capacity(was.len() + 1);
                            leaves.extend(pt.leaves(va, end));
                            leaves
                        }
                    };
                    // Most changes of a PTE table change one entry or a
                    // few: only the leaves that differ are told.
                    diff_leaves(was, &leaves, changed);
                    Rc::new(leaves)
                }
            };
            regions.push(Region {
                va,
                slot: Some(slot),
                leaves,
            });
        }
        for gone in old_left {
            for &(at, leaf) in gone.leaves.iter() {
                changed(at, leaf, false);
            }
        }
        MmScan {
            generation: pt.generation(),
            regions,
            blocks,
            // The incremental checker takes the mapped frames from its
            // rmap state instead.
            mapped: Vec::new(),
            pt: pt.check_memo(memo),
        }
    }
}

/// The union of two sorted runs, sorted and without repeats (one pass).
pub(super) fn merge_dedup(a: &[Pfn], b: &[Pfn]) -> Vec<Pfn> {
    let mut out: Vec<Pfn> = Vec::with_capacity(a.len() + b.len());
    let (mut i, mut j) = (0, 0);
    while i < a.len() || j < b.len() {
        let next = match (a.get(i), b.get(j)) {
            (Some(&x), Some(&y)) if x <= y => {
                i += 1;
                x
            }
            (_, Some(&y)) => {
                j += 1;
                y
            }
            (Some(&x), None) => {
                i += 1;
                x
            }
            (None, None) => break,
        };
        if out.last() != Some(&next) {
            out.push(next);
        }
    }
    out
}

/// Tells `changed` the leaves of `old` not in `new` (`false`) and those of
/// `new` not in `old` (`true`); both are in address order. A leaf whose
/// change leaves its rmap mappings as they were (an access bit, the
/// permissions) is not told: `changed` feeds the rmap check only.
fn diff_leaves(
    old: &[(VirtAddr, LeafEntry)],
    new: &[(VirtAddr, LeafEntry)],
    changed: &mut impl FnMut(VirtAddr, LeafEntry, bool),
) {
    let (mut i, mut j) = (0, 0);
    loop {
        match (old.get(i), new.get(j)) {
            (Some(a), Some(b)) if a == b => {
                i += 1;
                j += 1;
            }
            (Some(a), Some(b)) if a.0 == b.0 => {
                if !crate::mm::rmap::same_mappings(a.1, b.1) {
                    changed(a.0, a.1, false);
                    changed(b.0, b.1, true);
                }
                i += 1;
                j += 1;
            }
            (Some(a), Some(b)) if a.0 < b.0 => {
                changed(a.0, a.1, false);
                i += 1;
            }
            (Some(a), None) => {
                changed(a.0, a.1, false);
                i += 1;
            }
            (_, Some(b)) => {
                changed(b.0, b.1, true);
                j += 1;
            }
            (None, None) => break,
        }
    }
}

/// The incremental rmap check's state: the mappings the kept scans'
/// leaves record, per frame (sorted, with repeats if the tables have
/// any), and the verdict of every frame that has violations.
#[derive(Debug, Default)]
struct RmapState {
    want: BTreeMap<Pfn, Vec<crate::mm::RmapEntry>>,
    /// Frames whose `want` changed since the last verdict.
    dirty: Vec<Pfn>,
    verdicts: BTreeMap<Pfn, Vec<RmapViolation>>,
    /// Every frame's verdict was computed once (the first check, or the
    /// check after the rmap's log was dropped, recomputes all).
    complete: bool,
    /// The frames the last verdict recomputed (`None`: every frame), for
    /// the frame check (`super::check_frames`).
    rechecked: Option<Vec<Pfn>>,
}

impl RmapState {
    /// Records that `leaf` (at `va` in `mm`) came (`added`) or went: one
    /// search of `want` per frame (a new list is allocated at its size,
    /// one entry; a list that empties goes through the same search).
    fn leaf_changed(&mut self, mm: MmId, va: VirtAddr, leaf: LeafEntry, added: bool) {
        use std::collections::btree_map::Entry;
        for (pfn, entry) in crate::mm::rmap::leaf_mappings(mm, va, leaf) {
            self.dirty.push(pfn);
            let lost = || panic!("BUG: the checker's kept mappings lost {entry:?} of {pfn}");
            match self.want.entry(pfn) {
                Entry::Vacant(slot) if added => {
                    slot.insert(vec![entry]);
                }
                Entry::Vacant(_) => lost(),
                Entry::Occupied(mut slot) => {
                    let list = slot.get_mut();
                    let at = list.partition_point(|e| *e < entry);
                    if added {
                        list.insert(at, entry);
                    } else if list.get(at) != Some(&entry) {
                        lost();
                    } else if list.len() == 1 {
                        slot.remove();
                    } else {
                        list.remove(at);
                    }
                }
            }
        }
    }

    /// The rmap check's verdict after recomputing the frames whose
    /// mappings changed (`dirty`) or whose lists did (`touched`; `None`:
    /// every frame).
    fn verdict(&mut self, rmap: &crate::mm::Rmap, touched: Option<Vec<Pfn>>) -> Vec<RmapViolation> {
        // The frames the leaves changed come in address order: sorted
        // here; the rmap's log and the maps' keys come sorted and are
        // merged in.
        let mut changed = core::mem::take(&mut self.dirty);
        changed.sort_unstable();
        changed.dedup();
        let mut all = false;
        let dirty = match touched.filter(|_| self.complete) {
            Some(touched) if changed.is_empty() => touched,
            Some(touched) => merge_dedup(&changed, &touched),
            None => {
                all = true;
                self.complete = true;
                let want: Vec<Pfn> = self.want.keys().copied().collect();
                let listed: Vec<Pfn> = rmap.iter().map(|(pfn, _)| pfn).collect();
                let failing: Vec<Pfn> = self.verdicts.keys().copied().collect();
                merge_dedup(
                    &merge_dedup(&changed, &want),
                    &merge_dedup(&listed, &failing),
                )
            }
        };
        for &pfn in &dirty {
            let want = self.want.get(&pfn).map_or(&[][..], Vec::as_slice);
            let found = crate::mm::rmap::check_frame(pfn, want, rmap.list(pfn));
            if found.is_empty() {
                self.verdicts.remove(&pfn);
            } else {
                self.verdicts.insert(pfn, found);
            }
        }
        self.rechecked = (!all).then_some(dirty);
        self.verdicts.values().flatten().copied().collect()
    }
}

/// What the incremental checker keeps between checks (see the module doc).
#[derive(Debug, Default)]
pub(crate) struct CheckCache {
    mms: BTreeMap<MmId, Rc<MmScan>>,
    /// Per address space, the tallies of its PTE tables for the table's
    /// own check ([`PageTable::check_memo`]).
    memos: BTreeMap<MmId, PteCheckMemo>,
    rmap: RmapState,
    frames: super::check_frames::FrameCheckState,
    /// The incremental dirty check's clean file pages.
    clean_files: CleanFiles,
}

impl CheckCache {
    /// The scan of `pt` (address space `id`), reused while unchanged,
    /// rescanned in the regions that changed otherwise (the rmap state
    /// told of every leaf that went or came).
    fn scan(&mut self, id: MmId, pt: &PageTable) -> Rc<MmScan> {
        let prev = self.mms.get(&id);
        if let Some(scan) = prev.filter(|s| s.generation == pt.generation()) {
            return Rc::clone(scan);
        }
        let rmap = &mut self.rmap;
        let scan = Rc::new(MmScan::rescan(
            pt,
            prev.map(Rc::as_ref),
            self.memos.entry(id).or_default(),
            &mut |va, leaf, added| rmap.leaf_changed(id, va, leaf, added),
        ));
        self.mms.insert(id, Rc::clone(&scan));
        scan
    }

    /// Forgets the address spaces `live` does not hold (their leaves went).
    fn retain(&mut self, live: impl Fn(&MmId) -> bool) {
        let gone: Vec<MmId> = self.mms.keys().filter(|id| !live(id)).copied().collect();
        for id in gone {
            let scan = self.mms.remove(&id).expect("BUG: listed just above");
            self.memos.remove(&id);
            for &(va, leaf) in scan.leaves() {
                self.rmap.leaf_changed(id, va, leaf, false);
            }
        }
    }
}
