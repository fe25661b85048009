//! Observations: counters (docs/model.md §5), page states and tags (the
//! scenario language's expectations). The invariant checker is `check`'s.
//!
//! Observations never change the machine: no fault is taken, no counter
//! moves, the TLB is not filled.

use mte::{PhysAddr, Tag, TaggedPtr, VirtAddr};
use uapi::{Counter, PageState, Pid};

use super::{Kernel, KernelCounters, Mm, PAGE};
use crate::mm::layout::{PAGE_SHIFT, TASK_SIZE};
use crate::mm::{Pte, Vma, Walk};

impl Kernel {
    pub(crate) fn counter_value(&self, counter: Counter) -> Option<u64> {
        if let Some(v) = self.mem.counters().get(counter) {
            return Some(v);
        }
        if let Some(v) = self.trace().cost().counter(counter) {
            return Some(v);
        }
        let KernelCounters {
            fault_anon,
            fault_zero_page,
            fault_cow,
            fault_tag_storage,
            fault_stuck,
            tcf_sync,
            tcf_async,
            swap_out,
            swap_in,
            file_writeback,
            file_dropped,
            file_reads,
            direct_reclaim,
            warn_restore_tags_for_pfn,
            warn_tag_clear_highpage,
            oom,
            mthp_alloc,
            mthp_fallback,
        } = self.counters.get();
        for order in 0..mthp_alloc.len() as u32 {
            match Counter::mthp(order) {
                Some((alloc, _)) if alloc == counter => return Some(mthp_alloc[order as usize]),
                Some((_, fallback)) if fallback == counter => {
                    return Some(mthp_fallback[order as usize]);
                }
                _ => {}
            }
        }
        Some(match counter {
            Counter::FaultAnon => fault_anon,
            Counter::FaultZeroPage => fault_zero_page,
            Counter::FaultCow => fault_cow,
            Counter::FaultTagStorage => fault_tag_storage,
            Counter::FaultStuck => fault_stuck,
            Counter::TcfSync => tcf_sync,
            Counter::TcfAsync => tcf_async,
            Counter::SwapOut => swap_out,
            Counter::SwapIn => swap_in,
            Counter::FileWriteback => file_writeback,
            Counter::FileDropped => file_dropped,
            Counter::FileReads => file_reads,
            Counter::ReclaimDirect => direct_reclaim,
            Counter::KernelWarn => warn_restore_tags_for_pfn + warn_tag_clear_highpage,
            Counter::KernelWarnRestoreTagsForPfn => warn_restore_tags_for_pfn,
            Counter::KernelWarnTagClearHighpage => warn_tag_clear_highpage,
            Counter::Oom => oom,
            Counter::CleancachePuts => self.cleancache_stats().puts,
            Counter::CleancacheHits => self.cleancache_stats().hits,
            Counter::CleancacheDrops => self.cleancache_stats().drops,
            Counter::SwapSavedTags => self.swap.borrow().saved_tags_count(),
            Counter::KsmMerged => self.ksm_counters().0,
            Counter::KsmSharing => self.ksm_counters().1,
            Counter::KsmSaved => self.ksm_counters().2,
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
            PageState::Ksm => leaf.is_some_and(|l| !l.attrs.special && self.is_ksm(l.pfn)),
        })
    }
}
