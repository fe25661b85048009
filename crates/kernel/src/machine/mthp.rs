//! Multi-size THP for anonymous memory (`thp-sizes=`; Linux v6.8
//! `mm/memory.c` `alloc_anon_folio()` and `do_anonymous_page()`,
//! `include/linux/huge_mm.h` `thp_vma_allowable_orders()` and
//! `thp_vma_suitable_orders()`; docs/model.md §2 "Multi-size THP").
//!
//! # Contract
//! A write fault on a missing entry of a private anonymous VMA (after the
//! PMD path of `huge` fell back or did not apply) allocates a folio of the
//! largest enabled order whose naturally aligned range lies inside the VMA
//! and whose entries are all none (`pte_range_none()`), trying the smaller
//! enabled orders in turn when an allocation fails, and mapping one 4 KiB
//! page (the caller's path) when none succeeds. A read fault maps the zero
//! page as before (`do_anonymous_page()` does that first).
//!
//! # Eligibility ([`Kernel::mthp_orders`])
//! A listed size's `enabled` file is `always`: every private anonymous VMA
//! without `VM_NOHUGEPAGE`, whatever `thp=` says (`thp=` governs the 2 MiB
//! size only, whose file is `inherit`). Shared anonymous memory is shmem,
//! which has no mTHP in v6.8.
//!
//! # Counters
//! A folio mapped counts `fault.anon` once and `mthp.SIZE.anon_fault_alloc`;
//! an allocation of an order that fails counts
//! `mthp.SIZE.anon_fault_fallback` (orders skipped because their range is
//! not free or leaves the VMA count nothing, as in Linux, whose per-size
//! stats of v6.9 count only allocation failures; v6.8 has no per-size
//! stats: the names follow v6.9's `hugepages-<size>kB/stats/`).
//!
//! # Decisions
//! - As the PMD path does (see `huge`), the folio is one buddy block of its
//!   order (a tagged allocation reserves the tag storage of the whole order:
//!   the designs' block counts per order apply), split into order-0
//!   allocations at once, each with its own reference and map count. The
//!   kernel keeps the folio as a record ([`Kernel::folio_of`]: head frame
//!   and order) while every page of it is mapped the same way; the
//!   invariant checker requires every page of a recorded folio to be
//!   allocated and mapped at the same offset by the same mappings.
//! - The record goes (the folio "splits") the moment one page stops being
//!   mapped where its folio is: unmapped (`munmap`, `madvise dontneed`,
//!   exit), replaced by a copy (copy-on-write: v6.8 copies one 4 KiB page
//!   and leaves the folio partially mapped), swapped out (v6.8's
//!   `shrink_folio_list()` splits a large anonymous folio before
//!   `add_to_swap()`), migrated (Linux migrates a large folio whole when the
//!   destination can be allocated; the model moves its pages one by one,
//!   which nothing the user observes distinguishes: data and tags move with
//!   each page) or merged by KSM (which splits large folios). Linux queues a
//!   partially unmapped folio for a deferred split; modelling it as an
//!   immediate split frees exactly the unmapped pages at once.
//! - `mprotect` over part of a folio changes those entries only (v6.8 does
//!   not split on mprotect); with `PROT_MTE`, only the protected pages get
//!   tags (`mte_sync_tags()` is per page).
//! - No direct compaction or reclaim for an mTHP order: the fault's
//!   allocation is `GFP_TRANSHUGE_LIGHT` (the default `defrag=madvise`),
//!   and the 4 KiB fallback reclaims as before.

use mte::{Pfn, VirtAddr};
use uapi::Errno;
use uapi::event::{FaultKind, FaultOutcome};

use super::Kernel;
use super::fault::{FaultError, leaf_attrs};
use crate::mem::Gfp;
use crate::mm::layout::PAGE_SIZE;
use crate::mm::{Leaf, MapLevel, MmId, Pte, RmapEntry, VmFlags, Vma, VmaBacking};
use crate::phys::Order;

/// One violation of a folio's consistency (see the module doc).
pub(crate) type FolioProblem = &'static str;

impl Kernel {
    /// `thp_vma_allowable_orders()` ∩ `thp_vma_suitable_orders()` for a
    /// fault at `va` in `vma`: the enabled mTHP orders whose aligned range
    /// lies inside the VMA, highest first.
    pub(crate) fn mthp_orders(&self, vma: &Vma, va: VirtAddr) -> Vec<u32> {
        let sizes = self.platform.settings().thp_sizes;
        if sizes.is_empty()
            || vma.backing != VmaBacking::Anon
            || vma.is_shared()
            || vma.flags.contains(VmFlags::NOHUGEPAGE)
        {
            return Vec::new();
        }
        sizes
            .orders_descending()
            .filter(|&order| {
                let size = PAGE_SIZE << order;
                let base = va.align_down(size);
                vma.start <= base && base.as_u64() + size <= vma.end.as_u64()
            })
            .collect()
    }

    /// Whether the `2^order` entries from `base` are all none.
    fn pte_range_none(&self, mm: MmId, base: VirtAddr, order: u32) -> bool {
        (0..1u64 << order).all(|i| {
            let va = VirtAddr::new(base.as_u64() + i * PAGE_SIZE).expect("BUG: inside a VMA");
            self.current_pte(mm, va) == Some(Pte::None)
        })
    }

    /// `do_anonymous_page()` of a write fault with `alloc_anon_folio()`:
    /// `Ok(false)` when no mTHP order applies or every allocation failed
    /// (the caller maps one 4 KiB page); `Ok(true)` when a folio was mapped
    /// or the range changed meanwhile (the access retries).
    pub(crate) async fn do_anonymous_mthp(
        &self,
        mm: MmId,
        va: VirtAddr,
        vma: &Vma,
    ) -> Result<bool, FaultError> {
        let orders = self.mthp_orders(vma, va);
        // The highest order whose range is all none; the lower ones are
        // then too (their ranges lie inside it).
        let Some(first) = orders
            .iter()
            .position(|&o| self.pte_range_none(mm, va.align_down(PAGE_SIZE << o), o))
        else {
            return Ok(false);
        };
        self.prepare_anon(mm, va);
        let tagged = vma.is_tagged();
        for &order in &orders[first..] {
            let Some(pfn) = self.alloc_mthp_block(order, tagged).await else {
                self.bump(|c| c.mthp_fallback[order as usize] += 1);
                continue;
            };
            let base = va.align_down(PAGE_SIZE << order);
            let pfns: Vec<Pfn> = (0..1u64 << order).map(|i| pfn + i).collect();
            let mapped = self.set_ptes_new_folio(mm, base, vma, pfn, order).await;
            match mapped {
                Ok(true) => {
                    self.bump(|c| {
                        c.fault_anon += 1;
                        c.mthp_alloc[order as usize] += 1;
                    });
                    self.fault_event(FaultKind::Anon, base, FaultOutcome::Mapped);
                    return Ok(true);
                }
                Ok(false) => {
                    self.release_all(pfns).await;
                    return Ok(true);
                }
                Err(e) => {
                    self.release_all(pfns).await;
                    return Err(e.into());
                }
            }
        }
        Ok(false)
    }

    /// A new zeroed folio of `order`, split into order-0 allocations (see
    /// the module doc); `None` if no block of that order is free.
    async fn alloc_mthp_block(&self, order: u32, tagged: bool) -> Option<Pfn> {
        let o = Order::new(order as u8);
        let pfn = if tagged {
            self.mem
                .alloc_tagged(o, Gfp::USER_TAGGED, &mut self.mover())
                .await
                .ok()?
                .pfn
        } else {
            self.mem.alloc(o, Gfp::USER_ZERO).ok()?
        };
        self.mem
            .phys_mut()
            .alloc
            .split(pfn, o)
            .unwrap_or_else(|e| panic!("BUG: splitting a new mTHP folio: {e}"));
        Some(pfn)
    }

    /// Linux `set_ptes()` of a new folio with the RFC's `mte_sync_tags()`
    /// for each page: a tagged folio whose pages all have reserved tag
    /// storage (or get it here, as `set_pte_at` does) has every page's tags
    /// initialised once, otherwise every entry is written awaiting tag
    /// storage. Writes the `2^order` entries from `base` if they are still
    /// all none, under the page-table lock with no switch point between
    /// them, and records the folio. `Ok(false)`: the range changed.
    async fn set_ptes_new_folio(
        &self,
        mm: MmId,
        base: VirtAddr,
        vma: &Vma,
        pfn: Pfn,
        order: u32,
    ) -> Result<bool, Errno> {
        let n = 1u64 << order;
        let attrs = leaf_attrs(vma, true, false);
        let mut awaiting = false;
        if attrs.tagged && self.has_mte() {
            let reserved = (0..n).all(|i| self.mem.tag_storage_reserved(pfn + i))
                || self.reserve_in_atomic(pfn, Order::new(order as u8)).await;
            if reserved {
                for i in 0..n {
                    self.init_or_restore_tags(pfn + i).await;
                }
            } else {
                awaiting = true;
            }
        }
        let Some(ptl) = self.mm_ptl(mm) else {
            return Ok(false);
        };
        let _ptl = ptl.lock().await;
        if !self.pte_range_none(mm, base, order) {
            return Ok(false);
        }
        for i in 0..n {
            let leaf = Leaf {
                pfn: pfn + i,
                attrs,
            };
            let pte = if awaiting {
                Pte::AwaitingTagStorage(leaf)
            } else {
                Pte::Present(leaf)
            };
            let va = VirtAddr::new(base.as_u64() + i * PAGE_SIZE).expect("BUG: inside a VMA");
            if let Err(e) = self.write_pte(mm, va, pte) {
                // Only the first entry can need a table: nothing written.
                debug_assert_eq!(i, 0, "BUG: a later entry of a folio allocated");
                return Err(e);
            }
        }
        self.folios.borrow_mut().insert(pfn, order);
        Ok(true)
    }

    /// The recorded folio holding `pfn`: its head and order.
    pub(crate) fn folio_of(&self, pfn: Pfn) -> Option<(Pfn, u32)> {
        let folios = self.folios.borrow();
        let (&head, &order) = folios.range(..=pfn).next_back()?;
        (pfn.as_u64() < head.as_u64() + (1u64 << order)).then_some((head, order))
    }

    /// Forgets the folio holding `pfn`, if any (Linux `split_folio()`: its
    /// pages were order-0 allocations from the start; see the module doc).
    pub(crate) fn split_folio_of(&self, pfn: Pfn) {
        if self.folios.borrow().is_empty() {
            return;
        }
        if let Some((head, _)) = self.folio_of(pfn) {
            self.folios.borrow_mut().remove(&head);
        }
    }

    /// What is wrong with the recorded folio at `head`, if anything: every
    /// page allocated, mapped by PTEs, by the same mappings at the same
    /// offsets from the head's (docs/model.md §4, invariant 6 for folios).
    pub(crate) fn folio_problem(&self, head: Pfn, order: u32) -> Option<FolioProblem> {
        let n = 1u64 << order;
        {
            let phys = self.mem.phys();
            let all_allocated = (0..n).all(|i| {
                matches!(
                    phys.alloc.frame_status(head + i),
                    Some(crate::phys::FrameStatus::Allocated { .. })
                )
            });
            if !all_allocated {
                return Some("a page of the folio is not allocated");
            }
        }
        let rmap = self.rmap.borrow();
        let heads = rmap.mappings(head);
        if heads.is_empty() {
            return Some("the folio is mapped nowhere");
        }
        let size = PAGE_SIZE * n;
        for e in heads {
            if e.level != MapLevel::Pte || e.va.as_u64() % size != 0 {
                return Some("the folio's head is not mapped by a naturally aligned PTE");
            }
        }
        for i in 1..n {
            let pages = rmap.mappings(head + i);
            if pages.len() != heads.len() {
                return Some("pages of the folio have different mapping counts");
            }
            let same = heads.iter().all(|e| {
                let expected = RmapEntry {
                    va: VirtAddr::new(e.va.as_u64() + i * PAGE_SIZE).expect("BUG: inside a VMA"),
                    ..*e
                };
                pages.contains(&expected)
            });
            if !same {
                return Some("a page of the folio is not mapped beside its head");
            }
        }
        None
    }
}
