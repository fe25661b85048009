//! Observations: counters (docs/model.md §5), page states and tags (the
//! scenario language's expectations), and the machine-wide invariant
//! checker (docs/model.md §4, invariants 1-7, plus the checks of every layer:
//! swap counts equal the swap entries referring to each slot).
//!
//! Observations never change the machine: no fault is taken, no counter
//! moves, the TLB is not filled.

use std::collections::{BTreeMap, BTreeSet};

use mte::{Pfn, PhysAddr, Tag, TaggedPtr, VirtAddr};
use thiserror::Error;
use uapi::{Counter, PageState, Pid};

use super::{Kernel, KernelCounters, Mm, PAGE};
use crate::mem::MemViolation;
use crate::mm::layout::{PAGE_SHIFT, PAGES_PER_PMD, TASK_SIZE};
use crate::mm::{
    Access, Block, LeafEntry, MmId, PgtableViolation, Pte, RmapViolation, SwapSlot, Vma,
    VmaViolation, Walk,
};
use crate::swap::SwapViolation;

/// One broken invariant of the machine.
#[derive(Clone, Debug, PartialEq, Eq, Error)]
pub enum KernelViolation {
    #[error("memory: {0:?}")]
    Mem(MemViolation),
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
}

impl Kernel {
    pub(crate) fn counter_value(&self, counter: Counter) -> Option<u64> {
        if let Some(v) = self.mem.counters().get(counter) {
            return Some(v);
        }
        let KernelCounters {
            fault_anon,
            fault_zero_page,
            fault_cow,
            fault_tag_storage,
            tcf_sync,
            tcf_async,
            swap_out,
            swap_in,
        } = self.counters.get();
        Some(match counter {
            Counter::FaultAnon => fault_anon,
            Counter::FaultZeroPage => fault_zero_page,
            Counter::FaultCow => fault_cow,
            Counter::FaultTagStorage => fault_tag_storage,
            Counter::TcfSync => tcf_sync,
            Counter::TcfAsync => tcf_async,
            Counter::SwapOut => swap_out,
            Counter::SwapIn => swap_in,
            Counter::SwapSavedTags => self.swap.borrow().saved_tags_count(),
            // No KSM (see the machine module doc).
            Counter::KsmMerged => 0,
            other => panic!("BUG: memory counter {other} not answered by Memory"),
        })
    }

    /// The tag LDG would read at `granule` after its fault, without taking
    /// it: 0 in untagged mappings, where no page is present, and where the
    /// page's tags were never initialised; the saved tags of a swapped-out
    /// page (0 if none were saved); the tags restored at swap-in of a page
    /// awaiting tag storage.
    pub(crate) fn observed_tag(&self, m: &Mm, vma: &Vma, granule: VirtAddr) -> Tag {
        if !vma.is_tagged() {
            return Tag::ZERO;
        }
        let page = granule.align_down(PAGE);
        let pfn = match super::huge::page_entry(m.pt.walk(page), page) {
            Pte::Present(l) | Pte::AwaitingTagStorage(l) => Some(l.pfn),
            Pte::None => vma.object().and_then(|object| {
                self.objects
                    .borrow()
                    .get(&object)
                    .and_then(|o| o.pages.get(&vma.pgoff_of(page)).copied())
            }),
            Pte::Swap(slot) => {
                let offset = (granule.as_u64() - page.as_u64()) / mte::GRANULE_SIZE;
                return self
                    .swap
                    .borrow()
                    .saved_tags(slot)
                    .map_or(Tag::ZERO, |tags| tags[offset as usize]);
            }
        };
        if let Some(tags) = pfn.and_then(|p| self.restored_tags.borrow().get(&p).cloned()) {
            let offset = (granule.as_u64() - page.as_u64()) / mte::GRANULE_SIZE;
            return tags[offset as usize];
        }
        match pfn {
            Some(pfn) if self.mem.page_mte_tagged(pfn) => self
                .mem
                .read_tag(PhysAddr::new(
                    pfn.addr(PAGE_SHIFT).as_u64() + (granule.as_u64() - page.as_u64()),
                ))
                .expect("BUG: a mapped frame is present"),
            _ => Tag::ZERO,
        }
    }

    pub(crate) fn observe_tags(&self, pid: Pid, ptr: TaggedPtr, len: u64) -> Option<Vec<Tag>> {
        let mm = self.process_mm(pid)?;
        let start = ptr.addr().as_u64();
        if !super::proc::is_user_range(start, len) {
            return None;
        }
        if len == 0 {
            return Some(Vec::new());
        }
        let mms = self.mms.borrow();
        let m = mms.get(&mm)?;
        let first = start & !(mte::GRANULE_SIZE - 1);
        let last = start + len - 1;
        (first..=last)
            .step_by(mte::GRANULE_SIZE as usize)
            .map(|g| {
                let g = VirtAddr::new(g)?;
                let vma = m.vmas.find(g)?;
                Some(self.observed_tag(m, vma, g))
            })
            .collect()
    }

    pub(crate) fn observe_page_state(
        &self,
        pid: Pid,
        ptr: TaggedPtr,
        state: PageState,
    ) -> Option<bool> {
        let mm = self.process_mm(pid)?;
        let mms = self.mms.borrow();
        let m = mms.get(&mm)?;
        let addr = ptr.addr();
        let walk = if addr.as_u64() < TASK_SIZE {
            m.pt.walk(addr.align_down(PAGE))
        } else {
            Walk::Empty {
                level: crate::mm::Level::Pgd,
            }
        };
        let huge = matches!(walk, Walk::Block { .. });
        let huge_zero = matches!(walk, Walk::Block { block, .. }
            if Some(block.leaf().pfn) == self.huge_zero.get() && block.leaf().attrs.special);
        let pte = super::huge::page_entry(walk, addr.align_down(PAGE));
        let leaf = pte.leaf();
        let valid = matches!(pte, Pte::Present(l) if l.attrs.access.is_valid());
        Some(match state {
            PageState::Unmapped => pte.is_none(),
            PageState::ZeroPage => {
                matches!(pte, Pte::Present(l) if l.pfn == self.mem.zero_page())
            }
            PageState::HugeZeroPage => huge_zero,
            PageState::Huge => huge,
            PageState::Swapped => matches!(pte, Pte::Swap(_)),
            PageState::Private => {
                leaf.is_some_and(|l| !l.attrs.special && self.rmap.borrow().count(l.pfn) == 1)
            }
            PageState::Shared => {
                leaf.is_some_and(|l| !l.attrs.special && self.rmap.borrow().count(l.pfn) >= 2)
            }
            PageState::Tagged => {
                valid && leaf.is_some_and(|l| l.attrs.tagged && self.mem.page_mte_tagged(l.pfn))
            }
            PageState::Untagged => valid && leaf.is_some_and(|l| !l.attrs.tagged),
            PageState::InTagStorage => {
                leaf.is_some_and(|l| self.mem.geometry().is_tag_storage(l.pfn))
            }
            PageState::AwaitingTagStorage => matches!(pte, Pte::AwaitingTagStorage(_)),
        })
    }

    /// The checks of block entries of `m`: the huge zero page read-only and
    /// special (and nothing else special); a valid tagged block has all 512
    /// frames tagged, reserved and outside tag storage (invariants 1, 2,
    /// 5); one deposit per block. Adds the frames of THPs to `mapped`.
    fn check_blocks(&self, id: MmId, m: &Mm, mapped: &mut BTreeSet<Pfn>) -> Vec<KernelViolation> {
        let mut out = Vec::new();
        let mut blocks = BTreeSet::new();
        for (va, entry) in m.pt.leaves(VirtAddr::ZERO, VirtAddr::MAX) {
            let LeafEntry::Block(block) = entry else {
                continue;
            };
            blocks.insert(va);
            let leaf = block.leaf();
            let is_hzp = Some(leaf.pfn) == self.huge_zero.get();
            if is_hzp != leaf.attrs.special || (is_hzp && leaf.attrs.access == Access::ReadWrite) {
                out.push(KernelViolation::HugeZeroPageEntry { mm: id, va });
            }
            let frames = (0..PAGES_PER_PMD).map(|i| leaf.pfn + i);
            if !leaf.attrs.special {
                mapped.extend(frames.clone());
            }
            let valid_tagged = matches!(block, Block::Present(l)
                if l.attrs.access.is_valid() && l.attrs.tagged);
            if !valid_tagged {
                continue;
            }
            for pfn in frames {
                let at = va
                    .checked_add((pfn.as_u64() - leaf.pfn.as_u64()) * PAGE)
                    .expect("BUG: a block beyond the address space");
                if !self.mem.page_mte_tagged(pfn) {
                    out.push(KernelViolation::TaggedEntryUninitialised {
                        mm: id,
                        va: at,
                        pfn,
                    });
                }
                if !self.mem.tag_storage_reserved(pfn) {
                    out.push(KernelViolation::TaggedEntryUnreserved {
                        mm: id,
                        va: at,
                        pfn,
                    });
                }
                if self.mem.geometry().is_tag_storage(pfn) {
                    out.push(KernelViolation::TaggedEntryInTagStorage {
                        mm: id,
                        va: at,
                        pfn,
                    });
                }
            }
        }
        let deposited: BTreeSet<VirtAddr> = m.deposits.keys().copied().collect();
        for va in blocks.symmetric_difference(&deposited) {
            out.push(KernelViolation::Deposit { mm: id, va: *va });
        }
        out
    }

    /// Every broken invariant (see the module doc), structured;
    /// [`uapi::Machine::invariant_violations`] renders these.
    pub fn violations(&self) -> Vec<KernelViolation> {
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
            orphans,
            swap,
            restored_tags,
            page_locks: _,
            rng: _,
            counters: _,
            huge_zero,
            fast_memo: _,
        } = self;
        let mut out: Vec<KernelViolation> =
            mem.check().into_iter().map(KernelViolation::Mem).collect();
        let procs = procs.borrow();
        let mms = mms.borrow();
        let rmap = rmap.borrow();
        let objects = objects.borrow();
        let cache_owner = cache_owner.borrow();
        let orphans = orphans.borrow();
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
        let swap = swap.borrow();
        let mut swap_entries: BTreeMap<SwapSlot, u32> = BTreeMap::new();
        let mut mapped: BTreeSet<Pfn> = BTreeSet::new();
        for (id, m) in mms.iter() {
            out.extend(
                m.vmas
                    .check()
                    .into_iter()
                    .map(|violation| KernelViolation::Vma { mm: *id, violation }),
            );
            out.extend(
                m.pt.check()
                    .into_iter()
                    .map(|violation| KernelViolation::Pgtable { mm: *id, violation }),
            );
            out.extend(self.check_blocks(*id, m, &mut mapped));
            for (va, entry) in m.pt.leaves(VirtAddr::ZERO, VirtAddr::MAX) {
                let LeafEntry::Pte(pte) = entry else {
                    continue;
                };
                if let Pte::Swap(slot) = pte {
                    *swap_entries.entry(slot).or_default() += 1;
                    continue;
                }
                let Some(leaf) = pte.leaf() else { continue };
                if !leaf.attrs.special {
                    mapped.insert(leaf.pfn);
                }
                if leaf.pfn == zero
                    && (!leaf.attrs.special || leaf.attrs.access == Access::ReadWrite)
                {
                    out.push(KernelViolation::ZeroPageEntry { mm: *id, va });
                }
                let valid_tagged =
                    matches!(pte, Pte::Present(l) if l.attrs.access.is_valid() && l.attrs.tagged);
                if valid_tagged {
                    if !mem.page_mte_tagged(leaf.pfn) {
                        out.push(KernelViolation::TaggedEntryUninitialised {
                            mm: *id,
                            va,
                            pfn: leaf.pfn,
                        });
                    }
                    if !mem.tag_storage_reserved(leaf.pfn) {
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
                let walk = m.pt.walk(va);
                let agrees = match walk {
                    Walk::Block {
                        base,
                        block: Block::Present(l),
                    } => {
                        e.huge
                            && base == va
                            && l.pfn == e.pfn
                            && l.attrs.access == e.access
                            && l.attrs.tagged == e.tagged
                    }
                    Walk::Pte(Pte::Present(l)) => {
                        !e.huge
                            && l.pfn == e.pfn
                            && l.attrs.access == e.access
                            && l.attrs.tagged == e.tagged
                    }
                    _ => false,
                };
                if !agrees {
                    out.push(KernelViolation::StaleTlb { mm: *id, va });
                }
            }
        }
        out.extend(
            crate::mm::rmap::check_against(&rmap, mms.iter().map(|(id, m)| (*id, &m.pt)))
                .into_iter()
                .map(KernelViolation::Rmap),
        );

        // Swap: the device's own rules, swap counts, and restored tags
        // (invariant 7).
        out.extend(swap.check().into_iter().map(KernelViolation::Swap));
        let counted: BTreeMap<SwapSlot, u32> = swap.counts().collect();
        let slots: BTreeSet<SwapSlot> =
            counted.keys().chain(swap_entries.keys()).copied().collect();
        for slot in &slots {
            let count = counted.get(slot).copied().unwrap_or(0);
            let entries = swap_entries.get(slot).copied().unwrap_or(0);
            if count != entries {
                out.push(KernelViolation::SwapCount {
                    slot: *slot,
                    count,
                    entries,
                });
            }
        }
        if !self.has_mte() {
            for (slot, _) in swap.counts() {
                if swap.saved_tags(slot).is_some() {
                    out.push(KernelViolation::SavedTagsWithoutMte { slot });
                }
            }
        }
        for pfn in restored_tags.borrow().keys() {
            if !mapped.contains(pfn) {
                out.push(KernelViolation::RestoredTags {
                    pfn: *pfn,
                    what: "not mapped",
                });
            } else if mem.page_mte_tagged(*pfn) {
                out.push(KernelViolation::RestoredTags {
                    pfn: *pfn,
                    what: "tagged already",
                });
            }
        }

        // Page caches.
        let mut cached: BTreeSet<Pfn> = BTreeSet::new();
        for (id, o) in objects.iter() {
            for (pgoff, pfn) in &o.pages {
                cached.insert(*pfn);
                if cache_owner.get(pfn) != Some(&(*id, *pgoff)) {
                    out.push(KernelViolation::PageCache { pfn: *pfn });
                }
            }
        }
        for pfn in cache_owner.keys() {
            if !cached.contains(pfn) {
                out.push(KernelViolation::PageCache { pfn: *pfn });
            }
        }

        // Pins recorded by processes.
        let mut pins: BTreeMap<Pfn, u32> = BTreeMap::new();
        for p in procs.values() {
            for pfn in p.pins.values().flatten() {
                *pins.entry(*pfn).or_default() += 1;
            }
        }
        for pfn in orphans.iter() {
            if mapped.contains(pfn) || cached.contains(pfn) || !pins.contains_key(pfn) {
                out.push(KernelViolation::Orphan { pfn: *pfn });
            }
        }

        // Counts of every user frame (invariant 6), and no frame unaccounted.
        let held: BTreeSet<Pfn> = mapped
            .iter()
            .chain(cached.iter())
            .chain(orphans.iter())
            .chain(pins.keys())
            .copied()
            .collect();
        let phys = mem.phys();
        for pfn in &held {
            let Some(meta) = phys.alloc.frame(*pfn).filter(|_| {
                matches!(
                    phys.alloc.frame_status(*pfn),
                    Some(crate::phys::FrameStatus::Allocated { .. })
                )
            }) else {
                out.push(KernelViolation::NotAllocated { pfn: *pfn });
                continue;
            };
            let mappings = rmap.count(*pfn);
            if meta.mapcount as usize != mappings {
                out.push(KernelViolation::MapCount {
                    pfn: *pfn,
                    mapcount: meta.mapcount,
                    mappings,
                });
            }
            let recorded = pins.get(pfn).copied().unwrap_or(0);
            if meta.pins != recorded {
                out.push(KernelViolation::PinCount {
                    pfn: *pfn,
                    pins: meta.pins,
                    recorded,
                });
            }
            if meta.refcount != 1 {
                out.push(KernelViolation::RefCount {
                    pfn: *pfn,
                    refcount: meta.refcount,
                });
            }
        }
        // Every allocated frame is accounted for: user frames held as above,
        // page-table frames, the zero page. (A count, not a scan: machines
        // may have billions of frames.)
        let tables: u64 = mms
            .values()
            .map(|m| m.pt.table_frames().count() as u64)
            .sum();
        let deposits: u64 = mms.values().map(|m| m.deposits.len() as u64).sum();
        let huge_zero_frames = huge_zero.get().map_or(0, |_| PAGES_PER_PMD);
        let accounted = held.len() as u64 + tables + deposits + huge_zero_frames + 1;
        let allocated = phys.stats().allocated_pages;
        if allocated != accounted {
            out.push(KernelViolation::FrameCount {
                allocated,
                accounted,
            });
        }
        out
    }
}
