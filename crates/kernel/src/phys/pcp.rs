//! Per-CPU page lists (`pcp`), modelled on Linux v6.8 `mm/page_alloc.c`
//! (`struct per_cpu_pages`, `rmqueue_pcplist()`, `free_unref_page()`), with
//! RFC v3 patch 4 on top (a movable request that may not use CMA bypasses
//! the lists). Switched on by the `pcp=on` platform key (`docs/model.md`
//! §6); off, [`BuddyAllocator`] behaves as a plain buddy allocator.
//!
//! Owns: [`PcpParams`] (`batch`, `high_min`, `high_max` as Linux computes
//! them for the modelled zone) and the per-CPU lists ([`Pcp`]).
//!
//! # Contract
//! - A block on a per-CPU list is free for everyone but the buddy
//!   allocator: its frames are pristine ([`FrameState::Free`]), it is on no
//!   buddy free list, and it is not counted in the free counters (Linux
//!   `NR_FREE_PAGES` does not count pcp pages either) but in
//!   [`PhysStats::pcp_pages`](crate::phys::PhysStats::pcp_pages).
//!   [`FrameStatus::PcpFree`](crate::phys::FrameStatus::PcpFree) names it.
//! - Lists exist per CPU, per pcp migrate type (Unmovable, Movable; CMA
//!   pages go on Movable as `free_unref_page()` puts them) and per order
//!   0..=`PAGE_ALLOC_COSTLY_ORDER`, plus pageblock-order pages (THP,
//!   `order_to_pindex()`).
//! - Allocation of an allowed order (`pcp_allowed_order()`) takes the head
//!   of the CPU's list, refilling an empty list with `nr_pcp_alloc()`
//!   blocks from the buddy allocator (`rmqueue_bulk()`, lowest first, in
//!   order); freeing puts the block at the head of the list and, when the
//!   CPU holds `high` pages or more, gives `nr_pcp_free()` pages back,
//!   round-robin over the lists from the tail (`free_pcppages_bulk()`).
//!   `high` is tuned as v6.8 does between `high_min` and `high_max`
//!   (`nr_pcp_alloc()` raises it by `batch` at each refill, `nr_pcp_high()`
//!   to what a run of frees needs).
//! - A block of an isolated pageblock is never put on a list (it goes to
//!   the buddy allocator's isolation list at once, as `free_unref_page()`
//!   does); `drain_all_pages()` empties every list into the buddy allocator
//!   (on `alloc_contig_range()`, and before an allocation reports that
//!   memory ran out, as `__alloc_pages_direct_reclaim()` drains).
//!
//! # Shortcuts (and why)
//! - No `decay_pcp_high()` (the vmstat worker lowering `high` every
//!   second): the model has no clock; `high` only falls back through
//!   `nr_pcp_high()`'s own rules.
//! - No `ZONE_RECLAIM_ACTIVE` / `ZONE_BELOW_HIGH` (the model has no
//!   watermarks) and no `PCPF_FREE_HIGH_BATCH` (no cache sizes): the
//!   branches they select are the ones of a zone with plenty free.
//! - v6.8 has one pageblock-order list for every type, so an unmovable
//!   THP request (the huge zero page) may take a movable or CMA block off
//!   it; the model keeps one per type (as later kernels do), so an
//!   unmovable page never lands in tag storage.
//! - `MIGRATE_RECLAIMABLE` has no lists (the model has no such type); the
//!   round-robin over lists skips empty ones, so the order is Linux's.

use std::collections::{BTreeMap, VecDeque};

use crate::phys::buddy::{BuddyAllocator, FreeList};
use crate::phys::frame::MigrateType;
use crate::phys::layout::{CmaUse, Order, RegionKind};
use mte::Pfn;

/// Linux `PAGE_ALLOC_COSTLY_ORDER`: the largest order kept on the
/// low-order lists.
pub const PAGE_ALLOC_COSTLY_ORDER: u8 = 3;

/// Linux `CONFIG_PCP_BATCH_SCALE_MAX` (default 5).
const PCP_BATCH_SCALE_MAX: u32 = 5;

/// Linux `MIN_PERCPU_PAGELIST_HIGH_FRACTION`: `high_max` is the zone over
/// this, split between the CPUs.
const MIN_PERCPU_PAGELIST_HIGH_FRACTION: u64 = 8;

/// Linux `watermark_scale_factor` default (0.1% of the zone).
const WATERMARK_SCALE_FACTOR: u64 = 10;

/// Migrate types with lists (Unmovable, Movable).
const PCP_TYPES: usize = 2;

/// Low-order lists per CPU (Linux `NR_LOWORDER_PCP_LISTS`).
const NR_LOWORDER_LISTS: usize = PCP_TYPES * (PAGE_ALLOC_COSTLY_ORDER as usize + 1);

/// Lists per CPU: the low orders of each type, then pageblock order of
/// each type.
const NR_LISTS: usize = NR_LOWORDER_LISTS + PCP_TYPES;

/// The per-CPU list sizes of one zone, as Linux v6.8 computes them at boot
/// (`zone_set_pageset_high_and_batch()`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PcpParams {
    pub cpus: u32,
    /// `zone_batchsize()`: pages moved per refill or drain.
    pub batch: u64,
    /// `zone_highsize(.., 0)`: the low watermark split over the CPUs.
    pub high_min: u64,
    /// `zone_highsize(.., MIN_PERCPU_PAGELIST_HIGH_FRACTION)`.
    pub high_max: u64,
}

impl PcpParams {
    /// The sizes for a zone of `managed` pages of `page_size` bytes,
    /// pageblocks of `pageblock_pages`, and `cpus` CPUs, with THP built in
    /// and khugepaged started at boot (`CONFIG_TRANSPARENT_HUGEPAGE_MADVISE`,
    /// as the reference kernel of `docs/reference.md`), which raises
    /// `min_free_kbytes` to `set_recommended_min_free_kbytes()`'s value.
    pub fn for_zone(managed: u64, page_size: u64, pageblock_pages: u64, cpus: u32) -> Self {
        let cpus = cpus.max(1);
        // zone_batchsize(): ~0.1% of the zone or 1 MiB, whichever is
        // smaller, a quarter of it, then rounddown_pow_of_two(b + b/2) - 1.
        let mut batch = (managed >> 10).min((1 << 20) / page_size) / 4;
        batch = batch.max(1);
        let b = batch + batch / 2;
        batch = (1u64 << (63 - b.leading_zeros())) - 1;
        let batch = batch.max(1);
        // calculate_min_free_kbytes(): sqrt(lowmem_kbytes * 16) in
        // [128, 262144]; then khugepaged's recommended minimum (one zone:
        // 2 pageblocks + MIGRATE_PCPTYPES^2 = 9 pageblocks, at most 5% of
        // the zone).
        let page_kb = page_size >> 10;
        let lowmem_kb = managed * page_kb;
        let mut min_free_kb = (lowmem_kb * 16).isqrt().clamp(128, 262_144);
        let recommended = (pageblock_pages * 2 + pageblock_pages * 9).min(managed / 20) * page_kb;
        min_free_kb = min_free_kb.max(recommended);
        // __setup_per_zone_wmarks(), one zone.
        let min_wmark = min_free_kb / page_kb;
        let low_wmark = min_wmark + (min_wmark / 4).max(managed * WATERMARK_SCALE_FACTOR / 10_000);
        // zone_highsize(): split over the node's CPUs (cpu_online = 0).
        let split = u64::from(cpus);
        let high_min = (low_wmark / split).max(batch << 2);
        let high_max = (managed / MIN_PERCPU_PAGELIST_HIGH_FRACTION / split).max(batch << 2);
        Self {
            cpus,
            batch,
            high_min,
            high_max,
        }
    }
}

/// One CPU's lists. Linux `struct per_cpu_pages`.
#[derive(Clone, Debug)]
pub(crate) struct PerCpuPages {
    /// Block heads, list head first.
    pub(crate) lists: [VecDeque<Pfn>; NR_LISTS],
    /// Pages on the lists.
    pub(crate) count: u64,
    high: u64,
    /// Consecutive pages freed (halved at each allocation).
    free_count: u64,
    /// Refills grow `batch << alloc_factor` (halved at each free).
    alloc_factor: u32,
    /// `PCPF_PREV_FREE_HIGH_ORDER`.
    prev_free_high_order: bool,
}

/// Every CPU's lists, and where each block is.
#[derive(Clone, Debug)]
pub(crate) struct Pcp {
    pub(crate) params: PcpParams,
    pub(crate) cpus: Vec<PerCpuPages>,
    /// Each block on a list: head -> (CPU, list index).
    pub(crate) index: BTreeMap<Pfn, (u32, u8)>,
}

impl Pcp {
    pub(crate) fn new(params: PcpParams) -> Self {
        let cpu = PerCpuPages {
            lists: Default::default(),
            count: 0,
            // pageset_init(): BOOT_PAGESET_HIGH, clamped to high_min at
            // first use.
            high: 0,
            free_count: 0,
            alloc_factor: 0,
            prev_free_high_order: false,
        };
        Self {
            params,
            cpus: vec![cpu; params.cpus as usize],
            index: BTreeMap::new(),
        }
    }

    /// Pages on every CPU's lists.
    pub(crate) fn pages(&self) -> u64 {
        self.cpus.iter().map(|c| c.count).sum()
    }

    /// The block on a list holding `pfn`: (head, order, CPU).
    pub(crate) fn block_of(&self, pfn: Pfn, pageblock_order: Order) -> Option<(Pfn, Order, u32)> {
        let (&head, &(cpu, list)) = self.index.range(..=pfn).next_back()?;
        let order = list_order(list as usize, pageblock_order);
        (pfn < head + order.pages()).then_some((head, order, cpu))
    }
}

/// Linux `pcp_allowed_order()`.
pub(crate) fn allowed_order(order: Order, pageblock_order: Order) -> bool {
    order.get() <= PAGE_ALLOC_COSTLY_ORDER || order == pageblock_order
}

/// Linux `order_to_pindex()`.
fn list_index(pcp_type: usize, order: Order) -> usize {
    if order.get() > PAGE_ALLOC_COSTLY_ORDER {
        NR_LOWORDER_LISTS + pcp_type
    } else {
        PCP_TYPES * usize::from(order.get()) + pcp_type
    }
}

/// Linux `pindex_to_order()`.
pub(crate) fn list_order(list: usize, pageblock_order: Order) -> Order {
    if list >= NR_LOWORDER_LISTS {
        pageblock_order
    } else {
        Order::new((list / PCP_TYPES) as u8)
    }
}

/// The pcp list type of a block of migrate type `mt` (CMA goes on Movable,
/// as `free_unref_page()` puts it).
fn pcp_type(mt: MigrateType) -> usize {
    match mt {
        MigrateType::Unmovable => 0,
        MigrateType::Movable | MigrateType::Cma => 1,
    }
}

impl BuddyAllocator {
    /// Switches the per-CPU lists on (boot only: the lists start empty).
    pub fn enable_pcp(&mut self, params: PcpParams) {
        assert!(
            self.pcp.as_ref().is_none_or(|p| p.index.is_empty()),
            "BUG: pcp switched on twice"
        );
        self.pcp = Some(Pcp::new(params));
    }

    /// The list sizes, when the per-CPU lists are on.
    pub fn pcp_params(&self) -> Option<PcpParams> {
        self.pcp.as_ref().map(|p| p.params)
    }

    /// Pages on per-CPU lists.
    pub fn pcp_pages(&self) -> u64 {
        self.pcp.as_ref().map_or(0, Pcp::pages)
    }

    /// Whether a request takes the per-CPU path (Linux `rmqueue()` with RFC
    /// v3 patch 4: "MIGRATE_MOVABLE pcplist could have the pages on CMA
    /// area and we need to skip it when CMA area isn't allowed").
    fn pcp_serves(&self, order: Order, start: MigrateType, use_cma: bool) -> bool {
        let g = self.geometry();
        self.pcp.is_some()
            && allowed_order(order, g.pageblock_order())
            && (use_cma
                || start != MigrateType::Movable
                || self.layout().pages_of(RegionKind::TagStorageCma) == 0)
    }

    /// Linux `rmqueue_pcplist()`: a block from `cpu`'s list, refilled from
    /// the buddy allocator when empty. `None` when the request bypasses the
    /// lists or nothing could be had.
    pub(crate) fn pcp_alloc(
        &mut self,
        cpu: usize,
        order: Order,
        start: MigrateType,
        use_cma: bool,
    ) -> Option<Pfn> {
        if !self.pcp_serves(order, start, use_cma) {
            return None;
        }
        let pb_order = self.geometry().pageblock_order();
        let list = list_index(pcp_type(start), order);
        let cpu = cpu % self.pcp.as_ref().map_or(1, |p| p.cpus.len());
        let pcp = self.pcp.as_mut().expect("BUG: pcp checked above");
        pcp.cpus[cpu].free_count >>= 1;
        if pcp.cpus[cpu].lists[list].is_empty() {
            let params = pcp.params;
            let batch = nr_pcp_alloc(&mut pcp.cpus[cpu], &params, order);
            // rmqueue_bulk(): `batch` blocks, each added at the tail.
            let mut got = Vec::new();
            for _ in 0..batch {
                match self.rmqueue(order, start, use_cma) {
                    Some(head) => got.push(head),
                    None => break,
                }
            }
            let pcp = self.pcp.as_mut().expect("BUG: pcp checked above");
            for head in got {
                pcp.cpus[cpu].lists[list].push_back(head);
                pcp.cpus[cpu].count += order.pages();
                pcp.index.insert(head, (cpu as u32, list as u8));
            }
        }
        let pcp = self.pcp.as_mut().expect("BUG: pcp checked above");
        let head = pcp.cpus[cpu].lists[list].pop_front()?;
        debug_assert_eq!(list_order(list, pb_order), order);
        pcp.cpus[cpu].count -= order.pages();
        pcp.index.remove(&head);
        Some(head)
    }

    /// Linux `free_unref_page()`: puts the pristine block `head` of `order`
    /// on `cpu`'s list, or straight into the buddy allocator when its order
    /// has no list or its pageblock is isolated; gives pages back when the
    /// CPU holds too many. Returns whether the block went on a list.
    pub(crate) fn pcp_free(&mut self, cpu: usize, head: Pfn, order: Order) -> bool {
        let g = *self.geometry();
        if self.pcp.is_none() || !allowed_order(order, g.pageblock_order()) {
            return false;
        }
        let Some(list_of) = self.list_of(head) else {
            return false;
        };
        let Some(mt) = list_of.migratetype() else {
            // Isolated: free_one_page() at once.
            return false;
        };
        let list = list_index(pcp_type(mt), order);
        let pcp = self.pcp.as_mut().expect("BUG: pcp checked above");
        let cpu = cpu % pcp.cpus.len();
        let params = pcp.params;
        let c = &mut pcp.cpus[cpu];
        // free_unref_page_commit().
        c.alloc_factor >>= 1;
        c.lists[list].push_front(head);
        c.count += order.pages();
        pcp.index.insert(head, (cpu as u32, list as u8));
        let c = &mut pcp.cpus[cpu];
        let batch = params.batch;
        let mut free_high = false;
        if order.get() > 0 && order.get() <= PAGE_ALLOC_COSTLY_ORDER {
            // Without PCPF_FREE_HIGH_BATCH.
            free_high = c.free_count >= batch && c.prev_free_high_order;
            c.prev_free_high_order = true;
        } else if c.prev_free_high_order {
            c.prev_free_high_order = false;
        }
        if c.free_count < batch << PCP_BATCH_SCALE_MAX {
            c.free_count += order.pages();
        }
        let high = nr_pcp_high(c, &params, free_high);
        if c.count >= high {
            let n = nr_pcp_free(c, batch, high, free_high);
            self.free_pcppages_bulk(cpu, n, list);
        }
        true
    }

    /// Linux `free_pcppages_bulk()`: gives `count` pages of `cpu`'s lists
    /// back to the buddy allocator, round-robin over the lists starting at
    /// `first`, each list from its tail.
    fn free_pcppages_bulk(&mut self, cpu: usize, count: u64, first: usize) {
        let pb_order = self.geometry().pageblock_order();
        let pcp = self.pcp.as_mut().expect("BUG: bulk free without pcp");
        let mut count = count.min(pcp.cpus[cpu].count) as i64;
        let mut list = (first + NR_LISTS - 1) % NR_LISTS;
        let mut freed = Vec::new();
        while count > 0 {
            loop {
                list = (list + 1) % NR_LISTS;
                if !pcp.cpus[cpu].lists[list].is_empty() {
                    break;
                }
            }
            let order = list_order(list, pb_order);
            loop {
                let head = pcp.cpus[cpu].lists[list]
                    .pop_back()
                    .expect("BUG: the list was not empty");
                pcp.index.remove(&head);
                count -= order.pages() as i64;
                pcp.cpus[cpu].count -= order.pages();
                freed.push((head, order));
                if count <= 0 || pcp.cpus[cpu].lists[list].is_empty() {
                    break;
                }
            }
        }
        for (head, order) in freed {
            // __free_one_page() onto the pageblock's list now (isolated
            // pageblocks included).
            self.free_one(head, order);
        }
    }

    /// Linux `drain_all_pages()`: every CPU's lists back to the buddy
    /// allocator. Returns the pages drained.
    pub fn drain_all_pages(&mut self) -> u64 {
        let Some(pcp) = self.pcp.as_ref() else {
            return 0;
        };
        let total = pcp.pages();
        for cpu in 0..pcp.cpus.len() {
            let count = self.pcp.as_ref().map_or(0, |p| p.cpus[cpu].count);
            if count > 0 {
                self.free_pcppages_bulk(cpu, count, 0);
            }
        }
        total
    }

    /// For starting from a recorded state (`Kernel::set_free_lists`): puts
    /// the block of `order` at `head`, whose frames are order-0 allocations
    /// the caller took ([`Self::take_free_frame`]) and holds no other way,
    /// at the tail of `cpu`'s list of type `mt` (Unmovable or Movable; CMA
    /// goes on Movable), as `free_unref_page()` leaves a block: pristine,
    /// on no buddy list. None of a free's side effects: no `high` check, no
    /// tuning. Returns whether it was put (not when the lists are off, the
    /// order has no list, or a frame is not such an allocation).
    pub(crate) fn pcp_append_taken(
        &mut self,
        cpu: usize,
        head: Pfn,
        order: Order,
        mt: MigrateType,
    ) -> bool {
        let pb_order = self.geometry().pageblock_order();
        let Some(cpus) = self.pcp.as_ref().map(|p| p.cpus.len()) else {
            return false;
        };
        if cpu >= cpus || !allowed_order(order, pb_order) {
            return false;
        }
        let taken = (0..order.pages()).all(|i| {
            matches!(
                self.frame_status(head + i),
                Some(crate::phys::FrameStatus::Allocated { head: h, order: o, .. })
                    if h == head + i && o.get() == 0
            ) && self.frame(head + i).is_some_and(|m| {
                m.mapcount == 0 && m.pins == 0 && m.refcount <= 1 && m.flags.is_empty()
            })
        });
        if !taken {
            return false;
        }
        let cma = self.list_of(head) == Some(FreeList::Cma);
        for meta in self.frames.block_mut(head, order.pages()) {
            meta.reset();
        }
        self.counters.allocated -= order.pages();
        if cma {
            self.counters.cma_allocated -= order.pages();
        }
        let list = list_index(pcp_type(mt), order);
        let pcp = self.pcp.as_mut().expect("BUG: pcp checked above");
        pcp.cpus[cpu].lists[list].push_back(head);
        pcp.cpus[cpu].count += order.pages();
        pcp.index.insert(head, (cpu as u32, list as u8));
        true
    }

    /// The heads on `cpu`'s list of `order` and type `mt`, head first
    /// (empty when the lists are off).
    #[cfg(test)]
    pub(crate) fn pcp_list_heads(&self, cpu: usize, order: Order, mt: MigrateType) -> Vec<Pfn> {
        self.pcp
            .as_ref()
            .and_then(|p| p.cpus.get(cpu))
            .map(|c| {
                c.lists[list_index(pcp_type(mt), order)]
                    .iter()
                    .copied()
                    .collect()
            })
            .unwrap_or_default()
    }

    /// For starting from a recorded state: `cpu`'s tuning as Linux's
    /// `struct per_cpu_pages` had it (`high`, `free_count`,
    /// `alloc_factor`, `PCPF_PREV_FREE_HIGH_ORDER`). `high` is kept within
    /// the model's `high_min..=high_max` at its next use, as v6.8 clamps
    /// it. Returns false when the lists are off or there is no such CPU.
    pub(crate) fn pcp_set_tuning(
        &mut self,
        cpu: usize,
        high: u64,
        free_count: u64,
        alloc_factor: u32,
        prev_free_high_order: bool,
    ) -> bool {
        let Some(c) = self.pcp.as_mut().and_then(|p| p.cpus.get_mut(cpu)) else {
            return false;
        };
        c.high = high;
        c.free_count = free_count;
        c.alloc_factor = alloc_factor;
        c.prev_free_high_order = prev_free_high_order;
        true
    }

    /// Whether the CMA policy lets a movable untagged request use CMA.
    pub(crate) fn may_use_cma(&self, movable: bool, tagged: bool) -> bool {
        movable && !tagged && self.cma_use != CmaUse::Never
    }

    /// The blocks on per-CPU lists, sorted by head: (head, order, list of
    /// the pcp type as a [`FreeList`]).
    pub(crate) fn pcp_blocks(&self) -> Vec<(Pfn, Order, FreeList, u32)> {
        let pb_order = self.geometry().pageblock_order();
        self.pcp.as_ref().map_or_else(Vec::new, |p| {
            p.index
                .iter()
                .map(|(&head, &(cpu, list))| {
                    let list = list as usize;
                    let ty = if list % PCP_TYPES == pcp_type(MigrateType::Unmovable) {
                        FreeList::Unmovable
                    } else {
                        FreeList::Movable
                    };
                    (head, list_order(list, pb_order), ty, cpu)
                })
                .collect()
        })
    }
}

/// Linux `nr_pcp_alloc()`: how many blocks a refill takes, tuning `high`
/// and `alloc_factor` on the way.
fn nr_pcp_alloc(c: &mut PerCpuPages, params: &PcpParams, order: Order) -> u64 {
    let base = params.batch as i64;
    let (high_min, high_max) = (params.high_min as i64, params.high_max as i64);
    let mut high = (c.high as i64).clamp(high_min, high_max);
    c.high = high as u64;
    if high < base {
        return 1;
    }
    let mut batch = if order.get() > 0 {
        base
    } else {
        base << c.alloc_factor
    };
    if high_min != high_max {
        high = (high + batch).min(high_max);
        c.high = high as u64;
    }
    if order.get() == 0 {
        let max_nr_alloc = (high - c.count as i64 - base).max(base);
        if batch <= max_nr_alloc && c.alloc_factor < PCP_BATCH_SCALE_MAX {
            c.alloc_factor += 1;
        }
        batch = batch.min(max_nr_alloc);
    }
    if batch > 1 {
        batch = (batch >> order.get()).max(2);
    }
    batch as u64
}

/// Linux `nr_pcp_high()` for a zone with plenty free (no reclaim active,
/// not below the high watermark).
fn nr_pcp_high(c: &mut PerCpuPages, params: &PcpParams, free_high: bool) -> u64 {
    let (high_min, high_max) = (params.high_min, params.high_max);
    let high = c.high.clamp(high_min, high_max);
    c.high = high;
    if high == 0 {
        return 0;
    }
    if free_high {
        c.high = high
            .saturating_sub(params.batch << PCP_BATCH_SCALE_MAX)
            .max(high_min);
        return 0;
    }
    if high_min == high_max {
        return high;
    }
    if c.count >= high {
        let need_high = c.free_count + params.batch;
        if c.high < need_high {
            c.high = need_high.clamp(high_min, high_max);
        }
    }
    high
}

/// Linux `nr_pcp_free()`.
fn nr_pcp_free(c: &PerCpuPages, batch: u64, high: u64, free_high: bool) -> u64 {
    if free_high {
        return c.count.min(batch << PCP_BATCH_SCALE_MAX);
    }
    if high < batch {
        return 1;
    }
    // clamp_t(free_count, batch, high - batch): min(max(x, lo), hi).
    c.free_count.max(batch).min(high - batch)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::phys::buddy::tests::{assert_clean, o, p, range, small};
    use crate::phys::buddy::{AllocFlags, FrameStatus};
    use crate::phys::check::PhysViolation;

    /// Batch 2, high fixed at 8 (no tuning: `high_min == high_max`), 2 CPUs.
    fn with_pcp() -> BuddyAllocator {
        let mut a = small(CmaUse::Balance);
        a.enable_pcp(PcpParams {
            cpus: 2,
            batch: 2,
            high_min: 8,
            high_max: 8,
        });
        a
    }

    fn count_on(a: &BuddyAllocator, cpu: usize) -> u64 {
        a.pcp.as_ref().unwrap().cpus[cpu].count
    }

    #[test]
    fn allocation_refills_a_batch_and_serves_the_list_head() {
        let mut a = with_pcp();
        assert_eq!(a.alloc_on(0, o(0), AllocFlags::USER), Ok(p(0)));
        // The refill took frames 0 and 1 off the buddy lists; 1 waits.
        assert_eq!(a.pcp_pages(), 1);
        assert_eq!(a.stats().free_pages, 46);
        assert_eq!(a.stats().pcp_pages, 1);
        assert_eq!(
            a.frame_status(p(1)),
            Some(FrameStatus::PcpFree {
                head: p(1),
                order: o(0),
                cpu: 0
            })
        );
        assert_clean(&a);
        assert_eq!(a.alloc_on(0, o(0), AllocFlags::USER), Ok(p(1)));
        // Refills without frees in between double (alloc_factor): 4 now.
        assert_eq!(a.alloc_on(0, o(0), AllocFlags::USER), Ok(p(2)));
        assert_eq!(a.pcp_pages(), 3);
        // Another CPU has its own lists.
        assert_eq!(a.alloc_on(1, o(0), AllocFlags::USER), Ok(p(6)));
        assert_eq!(count_on(&a, 1), 1);
        assert_clean(&a);
    }

    #[test]
    fn a_freed_page_is_the_next_allocation_on_that_cpu() {
        let mut a = with_pcp();
        let x = a.alloc_on(0, o(0), AllocFlags::USER).unwrap();
        let y = a.alloc_on(0, o(0), AllocFlags::USER).unwrap();
        a.free_on(0, x, o(0)).unwrap();
        a.free_on(0, y, o(0)).unwrap();
        assert_clean(&a);
        // Last in, first out; the buddy lists never saw them.
        assert_eq!(a.alloc_on(0, o(0), AllocFlags::USER), Ok(y));
        assert_eq!(a.alloc_on(0, o(0), AllocFlags::USER), Ok(x));
        assert_clean(&a);
    }

    #[test]
    fn reaching_high_gives_the_oldest_pages_back() {
        let mut a = with_pcp();
        let pages: Vec<Pfn> = (0..10)
            .map(|_| a.alloc_on(1, o(0), AllocFlags::KERNEL).unwrap())
            .collect();
        for (i, &page) in pages.iter().take(8).enumerate() {
            a.free_on(0, page, o(0)).unwrap();
            assert_eq!(
                count_on(&a, 0),
                (i as u64 + 1) % 8 + if i == 7 { 2 } else { 0 }
            );
        }
        // At 8 (high) nr_pcp_free() gave back clamp(8 frees, 2, 8 - 2) = 6
        // pages from the tail: the first six freed.
        let kept: Vec<Pfn> = a.pcp.as_ref().unwrap().cpus[0].lists[0]
            .iter()
            .copied()
            .collect();
        assert_eq!(kept, vec![pages[7], pages[6]]);
        assert_clean(&a);
    }

    #[test]
    fn tagged_movable_requests_bypass_the_lists_as_patch_4_does() {
        let mut a = with_pcp();
        assert_eq!(a.alloc_on(0, o(0), AllocFlags::USER_TAGGED), Ok(p(0)));
        assert_eq!(a.pcp_pages(), 0);
        // Unmovable requests (no CMA either way) still use them.
        a.alloc_on(0, o(0), AllocFlags::KERNEL).unwrap();
        assert_eq!(a.pcp_pages(), 1);
        // Without CMA in the machine (CONFIG_CMA off) nothing bypasses.
        let mut n = small(CmaUse::Never);
        n.enable_pcp(a.pcp_params().unwrap());
        n.alloc_on(0, o(0), AllocFlags::USER_TAGGED).unwrap();
        assert_eq!(n.pcp_pages(), 0, "CMA is present: never means no ALLOC_CMA");
        assert_clean(&n);
    }

    #[test]
    fn draining_gives_everything_back_and_merges() {
        let mut a = with_pcp();
        let fresh = a.stats();
        let x = a.alloc_on(0, o(1), AllocFlags::USER).unwrap();
        let y = a.alloc_on(1, o(0), AllocFlags::KERNEL).unwrap();
        a.free_on(1, x, o(1)).unwrap();
        a.free_on(0, y, o(0)).unwrap();
        assert!(a.pcp_pages() > 0);
        let waiting = a.pcp_pages();
        assert_eq!(a.drain_all_pages(), waiting);
        assert_eq!(a.pcp_pages(), 0);
        assert_eq!(a.stats(), fresh);
        // Merged back into the four DRAM blocks of order 3 (the unmovable
        // request took a pageblock over for its type).
        assert_eq!(
            a.free_blocks(o(3), FreeList::Movable) + a.free_blocks(o(3), FreeList::Unmovable),
            4
        );
        assert_clean(&a);
    }

    #[test]
    fn isolated_pageblocks_take_frees_directly_and_drains_land_there() {
        let mut a = with_pcp();
        let x = a.alloc_on(0, o(0), AllocFlags::USER).unwrap();
        assert_eq!(x, p(0));
        // Frame 1 waits on CPU 0's list; isolate its pageblock [0, 4).
        let iso = a.isolate_range(range(0, 4)).unwrap();
        a.free_on(0, x, o(0)).unwrap();
        assert_eq!(a.pcp_pages(), 1, "frame 0 went to the isolation list");
        a.drain_all_pages();
        assert_eq!(a.free_pages_on(FreeList::Isolate), 4);
        assert_clean(&a);
        a.undo_isolate_range(iso);
        assert_clean(&a);
    }

    #[test]
    fn a_released_tag_page_is_recycled_for_untagged_data() {
        let mut a = with_pcp();
        let c = a.claim_free_range(range(40, 1)).unwrap();
        a.return_range_on(0, c);
        assert_eq!(
            a.frame_status(p(40)),
            Some(FrameStatus::PcpFree {
                head: p(40),
                order: o(0),
                cpu: 0
            })
        );
        // A tagged request bypasses the list; an untagged one takes it.
        assert_ne!(a.alloc_on(0, o(0), AllocFlags::USER_TAGGED), Ok(p(40)));
        assert_eq!(a.alloc_on(0, o(0), AllocFlags::USER), Ok(p(40)));
        assert_eq!(a.stats().cma_data_pages, 1);
        assert_clean(&a);
    }

    #[test]
    fn out_of_memory_drains_first() {
        let mut a = with_pcp();
        // Everything but what CPU 1's lists hold, taken by CPU 0.
        let first = a.alloc_on(1, o(0), AllocFlags::USER).unwrap();
        while a.alloc_on(0, o(3), AllocFlags::USER).is_ok() {}
        while a.alloc_on(0, o(0), AllocFlags::USER_TAGGED).is_ok() {}
        assert_eq!(a.pcp_pages(), 0, "the last allocations drained CPU 1");
        assert_clean(&a);
        a.free_on(0, first, o(0)).unwrap();
        assert_clean(&a);
    }

    #[test]
    fn the_checker_sees_a_page_both_on_a_list_and_in_the_buddy_allocator() {
        let mut a = with_pcp();
        a.alloc_on(0, o(0), AllocFlags::USER).unwrap();
        let pcp = a.pcp.as_mut().unwrap();
        pcp.cpus[0].lists[1].push_back(p(20));
        pcp.cpus[0].count += 1;
        pcp.index.insert(p(20), (0, 1));
        let v = a.check();
        assert!(
            v.iter()
                .any(|v| matches!(v, PhysViolation::FreeBlocksOverlap { .. })),
            "{v:#?}"
        );
        assert!(
            v.iter()
                .any(|v| matches!(v, PhysViolation::FramesUnaccounted { .. })),
            "{v:#?}"
        );
        let pcp = a.pcp.as_mut().unwrap();
        pcp.index.remove(&p(20));
        assert!(
            a.check()
                .iter()
                .any(|v| matches!(v, PhysViolation::PcpIndex { head } if *head == p(20)))
        );
    }

    #[test]
    fn sizes_for_the_reference_machine() {
        // 512 MiB of DRAM + 16 MiB of tag storage, 2 CPUs, 4 KiB pages,
        // 2 MiB pageblocks: batch 31 (v6.8 prints "batch: 31" for such a
        // zone), high_min from the low watermark with khugepaged's
        // min_free_kbytes (5632 pages min, 7040 low, 3520 per CPU).
        let p = PcpParams::for_zone(135_168, 4096, 512, 2);
        assert_eq!(p.batch, 31);
        assert_eq!(p.high_min, 3520);
        assert_eq!(p.high_max, 135_168 / 8 / 2);
        // A tiny zone: batch 1 and high at least 4 batches.
        let p = PcpParams::for_zone(64, 4096, 4, 4);
        assert_eq!(p.batch, 1);
        assert!(p.high_min >= 4 && p.high_max >= 4);
    }

    #[test]
    fn lists_and_orders_round_trip() {
        let pb = Order::new(9);
        for order in 0..=PAGE_ALLOC_COSTLY_ORDER {
            for ty in 0..PCP_TYPES {
                let l = list_index(ty, Order::new(order));
                assert_eq!(list_order(l, pb), Order::new(order));
            }
        }
        assert_eq!(list_order(list_index(1, pb), pb), pb);
        assert!(allowed_order(pb, pb) && !allowed_order(Order::new(4), pb));
    }
}
