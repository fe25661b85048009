//! The physical memory manager: the one place the rest of the kernel asks for
//! frames, tags and tag storage (`docs/model.md` §2 "Physical memory",
//! "Tagged allocations", "The tag storage manager", "The zero page").
//!
//! # What it owns
//! - the machine's [`PhysMem`] (frames, contents, buddy allocator with CMA),
//!   behind a `RefCell` so that kernel paths (`async`, several simulated CPUs)
//!   share it through `&Memory`; no borrow is ever held across an `.await`;
//! - the tag storage manager ([`tagstore::Manager`], the policy of the
//!   platform) and the move-only [`ClaimedRange`] token of every block it
//!   reserved, behind one [`SimMutex`]: the RFC's global `tag_blocks_lock`, a
//!   sleeping mutex held across the migrations of a reservation;
//! - the allocation tags, as real bytes in the tag storage frames
//!   ([`Memory::read_tag`], [`Memory::write_page_tags`], ...): data and tags can
//!   clobber each other exactly as on hardware;
//! - the zero page (allocated, tags zeroed and marked tagged at boot; its tag
//!   block reserved at activation and never released);
//! - the counters of docs/model.md §5 that concern memory and tag storage
//!   ([`MemCounters`]), exact, O(1) to read;
//! - the invariant checker of this layer ([`Memory::check`]).
//!
//! Submodules: `alloc` (allocation, reservation, freeing), `mover` (the
//! [`PageMover`] contract, the built-in [`FrameMover`], the `BlockSource` that
//! claims blocks with `alloc_contig_range`), `refill` (a design's
//! background refill thread as a kernel task), `tags` (tag bytes and the
//! `PG_mte_lock`/`PG_mte_tagged` protocol), `counters`, `check`.
//!
//! # Contract with the layers above
//! - The flags [`PageFlag::Tagged`], [`PageFlag::MteLock`] and
//!   [`PageFlag::TagStorageReserved`] belong to this module: change them only
//!   through [`Memory`] (reservation, [`Memory::set_page_mte_tagged`],
//!   [`Memory::migrate_block`], [`Memory::free`]), or `pages.tagged` drifts
//!   (the checker reports it). Reference and map counts, pins and owners are
//!   the caller's, through [`Memory::phys_mut`].
//! - Every migration copies through [`Memory::migrate_block`], which counts
//!   `migrate.pages` and `tag_storage.migrations`.
//! - Tag accessors do not check that the tag block is reserved, so the model
//!   can exhibit the RFC's bugs (tags written into a block that still holds
//!   someone's data); instead a tag write whose tag storage frame is not taken
//!   out of the allocator is recorded and reported by [`Memory::check`].
//! - Contiguous claims (`alloc_contig_range()`) are for tag blocks only: the
//!   checker holds every claimed frame to a reserved block.
//! - `async` methods must run inside a run of the machine's [`Sched`] (they
//!   reach switch points); the sync ones may run anywhere.
//!
//! # A frame's life
//! ```text
//!  DRAM frame (tagged-capable):
//!   Free ──alloc()/alloc_tagged()──▶ Allocated ──reserve_tag_storage()──▶ Allocated
//!    ▲                                  │ (best effort: may fail,          + TagStorageReserved
//!    │                                  │  the page stays untagged)           │ try_page_mte_tagging()
//!    │                                  │                                     │ + zero_tags + set_page_mte_tagged()
//!    │                                  │                                     ▼
//!    │                                  │                              ... + Tagged
//!    └──────────── free(): Tagged and TagStorageReserved cleared, block references
//!                  dropped (a block left with none goes back to CMA) ◀──────┘
//!
//!  Tag storage frame (`dynamic`: CMA), with its block:
//!   Lent, free ──alloc(movable, untagged)──▶ Lent, data page ──free()──▶ Lent, free
//!      │                                        │ a reservation claims the block:
//!      │ claim, fast path (all frames free)     │ migrate_block() moves the data to
//!      │                                        │ DRAM, the source is freed
//!      ▼                                        ▼
//!   Claimed: the block holds tags (Reserved(refs)) ◀─────────┘
//!      │ the last covered tagged frame is freed (refs 0)
//!      ▼
//!   Lent, free (returned to CMA: return_range)
//!
//!  `static`: every tag storage frame is CarvedOut for ever; `none`: there is none.
//! ```
//!
//! # Invariants (checked by [`Memory::check`])
//! 1. Every frame is in exactly one state (free, allocated, claimed, carved
//!    out) and the counts add up to the machine's frames (phys checker).
//! 2. A reserved block's frames are Claimed under `dynamic` (not allocated, on
//!    no free list), and its token is held; no frame is claimed outside one.
//!    Under `static` they are CarvedOut (phys checker).
//! 3. A block's reference count equals the number of allocated frames with
//!    `TagStorageReserved` whose tags it holds (the zero page counted once).
//! 4. No frame in tag storage is Tagged, TagStorageReserved or MTE-locked.
//! 5. Under `dynamic` and `static` every Tagged frame has TagStorageReserved;
//!    under `none` no frame is Tagged or TagStorageReserved.
//! 6. `pages.tagged` equals a recount; the shadow of the manager's counters
//!    equals the manager's.
//! 7. The zero page is an allocated kernel page with zero contents, zero
//!    tags, Tagged and TagStorageReserved (unless `none`).
//! 8. No pageblock is isolated and no MTE lock is held between kernel paths;
//!    no tag was written into tag storage that was not taken out of the
//!    allocator.
//!
//! # Known shortcuts
//! - `migrate.pages` and `tag_storage.migrations` are event counts and cannot
//!   be recounted; they are exact because every move goes through
//!   [`Memory::migrate_block`].
//! - The wait for `PG_mte_tagged` sleeps on a [`WaitQueue`] where Linux spins
//!   (`smp_cond_load_acquire()`): same outcomes, and a flag never set is
//!   reported by the scheduler as a deadlock instead of hanging.
//! - Pageblock order 9 and maximum order 10 (Linux arm64 with 4K pages) are
//!   used for every page size unless [`MemConfig`] says otherwise.
//! - A dynamic tag storage region sharing a pageblock with DRAM is refused
//!   ([`MemInitError::Layout`]), as Linux's `cma_init_reserved_mem()` refuses
//!   a CMA area that is not pageblock aligned.

mod alloc;
mod check;
mod cleancache;
mod counters;
mod incremental;
mod mover;
mod refill;
mod tags;
#[cfg(test)]
mod tests;

pub use alloc::{Gfp, MemFreeError, ReserveTagError, TaggedPage};
pub use check::{MemViolation, TagClobber, ZeroPageFault};
pub use cleancache::{CacheKey, CleancacheStats};
pub use counters::MemCounters;
pub use mover::{FrameMover, PageMover};
pub use tags::{TagAccessError, page_tag_in};

use crate::phys::{
    AllocError, AllocFlags, ClaimedRange, CmaUse, LayoutError, Order, PageFlag, PhysGeometry,
    PhysLayout, PhysMem, Region, RegionKind,
};
use core::cell::{Cell, Ref, RefCell, RefMut};
use core::fmt;
use mte::{Geometry, Pfn, TagBlock};
use platform::Platform;
use platform::spec::Design;
use sched::{Sched, SimMutex, WaitQueue};
use std::collections::BTreeMap;
use tagstore::{
    Manager, OnReserveFailure, ReserveError, Rules, Storage, TagStoreConfig, TagStoreCounters,
};
use thiserror::Error;

/// Linux arm64 with 4K pages: `pageblock_order` = `HPAGE_PMD_ORDER` = 9 (2 MiB).
pub const PAGEBLOCK_ORDER: Order = Order::new(9);
/// Linux arm64 with 4K pages: `MAX_PAGE_ORDER` = 10 (orders 0..=10, 4 MiB).
pub const MAX_ORDER: Order = Order::new(10);

/// How to build the memory of a machine; [`Default`] is Linux arm64 4K.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct MemConfig {
    pub pageblock_order: Order,
    pub max_order: Order,
    /// Frames per sparse section as a power of two; `None`: the phys
    /// default (2^15 frames, Linux arm64 `SECTION_SIZE_BITS` 27). Smaller
    /// sections make small test machines cheaper to check.
    pub section_shift: Option<u32>,
    pub tag_store: TagStoreConfig,
}

impl Default for MemConfig {
    fn default() -> Self {
        Self {
            pageblock_order: PAGEBLOCK_ORDER,
            max_order: MAX_ORDER,
            section_shift: None,
            tag_store: TagStoreConfig::default(),
        }
    }
}

/// Why the memory of a machine could not be brought up.
#[derive(Clone, Debug, PartialEq, Eq, Error)]
pub enum MemInitError {
    /// The platform's layout cannot be managed by the page allocator (a CMA
    /// region sharing a pageblock with DRAM, an unsupported page size, ...).
    #[error("the physical layout cannot be managed: {0}")]
    Layout(#[from] LayoutError),
    #[error("no memory for the zero page: {0}")]
    ZeroPage(AllocError),
    /// The zero page's tag block could not be reserved at activation.
    #[error("activating tag storage failed: {0}")]
    Activate(ReserveError),
}

/// The tag storage manager and the blocks it took out of the allocator.
/// Linux: what `tag_blocks_lock` serialises.
#[derive(Debug)]
pub(crate) struct TagStorageState {
    pub(crate) manager: Manager,
    /// The claim token of every block the manager reserved under `dynamic`
    /// (`cma_alloc_range()`'s pages, given back by `cma_release()`).
    pub(crate) claimed: BTreeMap<TagBlock, ClaimedRange>,
}

/// Event counters that cannot be derived from state.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct Events {
    /// `tag_storage.migrations`.
    pub(crate) tag_storage_migrations: u64,
    /// `migrate.pages`.
    pub(crate) migrate_pages: u64,
    /// `pages.tagged`, kept on every change of [`PageFlag::Tagged`].
    pub(crate) pages_tagged: u64,
    /// `tag_storage.fast_path`.
    pub(crate) tag_storage_fast_path: u64,
    /// `tag_storage.contig`.
    pub(crate) tag_storage_contig: u64,
}

/// The physical memory of one machine, as the kernel sees it.
pub struct Memory {
    policy: Design,
    /// The design's rules with the known mistakes that change them applied
    /// (`mistake=retry-forever`: the fault path retries for ever).
    rules: Rules,
    /// `reserve-fast-path=on`: see [`mover`].
    pub(crate) reserve_fast_path: bool,
    geometry: Geometry,
    sched: Sched,
    phys: RefCell<PhysMem>,
    /// Linux: `tag_blocks_lock` (RFC v2 `arch/arm64/kernel/mte_tag_storage.c`)
    /// with the `tag_blocks_reserved` xarray; protects the manager and the
    /// claim tokens. Held across the claims (and migrations) of a reservation.
    tag_storage: SimMutex<TagStorageState>,
    /// The manager's counters as of its last change, so that counters can be
    /// read without the lock (even while a reservation holds it).
    tag_counters: Cell<TagStoreCounters>,
    /// Waiters for `PG_mte_tagged` (losers of `try_page_mte_tagging()`).
    mte_tagged: WaitQueue,
    zero_page: Pfn,
    events: Cell<Events>,
    clobbers: Cell<check::ClobberLog>,
    /// Clean page-cache copies in unreserved tag blocks (design
    /// `cleancache` only, see `cleancache`).
    cleancache: RefCell<cleancache::Cleancache>,
    /// The machine's event trace (see [`crate::trace`]).
    pub(crate) trace: crate::trace::EventSink,
    /// What the incremental checker remembers between checks.
    incremental: RefCell<incremental::MemCheckCache>,
    /// The design's background refill thread, if it has one (`refill`).
    refill: refill::RefillThread,
}

impl fmt::Debug for Memory {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Memory")
            .field("policy", &self.policy)
            .field("zero_page", &self.zero_page)
            .field("counters", &self.counters())
            .finish_non_exhaustive()
    }
}

/// The allocator's layout for a platform: DRAM, and tag storage as CMA
/// (`dynamic`) or carved out (`static`); `none` has no tag storage.
fn phys_layout(
    geometry: &Geometry,
    policy: Design,
    config: &MemConfig,
) -> Result<PhysLayout, LayoutError> {
    let mut g = PhysGeometry::new(geometry.page(), config.pageblock_order, config.max_order)?;
    if let Some(shift) = config.section_shift {
        g = g.with_section_shift(shift)?;
    }
    let tag_kind = match policy.rules().storage {
        Storage::Lent => Some(RegionKind::TagStorageCma),
        // Never given to the allocator: a cleancache holds clean copies
        // in the frames of unreserved blocks.
        Storage::CarvedOut | Storage::Cleancache => Some(RegionKind::TagStorageCarvedOut),
        Storage::None => None,
    };
    let dram = geometry.dram().iter().map(|&range| Region {
        range,
        kind: RegionKind::Dram,
    });
    let tags = tag_kind.into_iter().flat_map(|kind| {
        geometry
            .tag_storage()
            .map(move |range| Region { range, kind })
    });
    PhysLayout::new(g, dram.chain(tags).collect())
}

impl Memory {
    /// Brings up the memory of `platform` with Linux arm64 4K orders.
    pub fn new(platform: &Platform, sched: &Sched) -> Result<Self, MemInitError> {
        Self::with_config(platform, sched, MemConfig::default())
    }

    /// Boot: the allocator with every DRAM (and `dynamic` tag storage) frame
    /// free; the zero page, a kernel page in DRAM whose tags are zeroed and
    /// which is marked tagged (Linux `cpu_enable_mte()`:
    /// `try_page_mte_tagging(ZERO_PAGE(0))`, `mte_clear_page_tags()`,
    /// `set_page_mte_tagged()`); then the tag storage manager is activated
    /// (`dynamic`: the zero page's block is reserved with one reference that
    /// is never dropped, RFC v3 `mte_enable_tag_storage()`; `static`: every
    /// block is carved out and the zero page takes a reference).
    ///
    /// Runs no task: callable inside or outside a run of `sched`.
    pub fn with_config(
        platform: &Platform,
        sched: &Sched,
        config: MemConfig,
    ) -> Result<Self, MemInitError> {
        let policy = platform.policy();
        let geometry = platform.geometry().clone();
        let layout = phys_layout(&geometry, policy, &config)?;
        let mut phys = PhysMem::new(layout, CmaUse::from(platform.settings().tag_storage_data));
        // `free-list-order=linux`: the lists as memblock_free_all() leaves
        // them, LIFO from here on (before any boot allocation).
        phys.alloc
            .set_free_list_order(platform.settings().free_list_order);
        // Linux's ZERO_PAGE is `empty_zero_page` in the kernel image: never
        // movable, never in tag storage (unmovable requests never get CMA).
        let zero_page = phys
            .alloc
            .alloc(Order::new(0), AllocFlags::KERNEL)
            .map_err(MemInitError::ZeroPage)?;
        phys.alloc
            .frame_mut(zero_page)
            .expect("BUG: the zero page was just allocated")
            .flags
            .insert(PageFlag::Kernel);
        phys.contents
            .zero_page(zero_page)
            .expect("BUG: the zero page is present");
        if platform.settings().pcp {
            // Linux setup_per_cpu_pageset(), after the boot allocations:
            // the lists of a zone of every DRAM and CMA frame.
            let layout = phys.alloc.layout();
            let managed =
                layout.pages_of(RegionKind::Dram) + layout.pages_of(RegionKind::TagStorageCma);
            let g = *layout.geometry();
            let params = crate::phys::PcpParams::for_zone(
                managed,
                g.page().page_size(),
                g.pageblock_pages(),
                platform.settings().cpus,
            );
            phys.alloc.enable_pcp(params);
        }
        let mistakes = platform.settings().mistakes;
        // `mistake=v2-block-count`: the manager counts blocks as RFC v2 did.
        let tag_store = TagStoreConfig {
            v2_block_count: config.tag_store.v2_block_count
                || mistakes.contains(platform::Mistake::V2BlockCount),
            google_fallback: platform.settings().google_fallback,
            ..config.tag_store
        };
        let manager = policy.build(&geometry, tag_store);
        let mut rules = policy.rules();
        // `mistake=retry-forever`: RFC v2's fault path on any design.
        if mistakes.contains(platform::Mistake::RetryForever) {
            rules.on_reserve_failure = OnReserveFailure::RetryAndReplay;
        }
        let tag_counters = Cell::new(manager.counters());
        let refill = refill::RefillThread::new(sched, manager.has_refill_thread());
        let memory = Self {
            policy,
            rules,
            reserve_fast_path: platform.settings().reserve_fast_path,
            geometry,
            sched: sched.clone(),
            phys: RefCell::new(phys),
            tag_storage: SimMutex::new(
                sched,
                "tag_blocks_lock",
                TagStorageState {
                    manager,
                    claimed: BTreeMap::new(),
                },
            ),
            tag_counters,
            mte_tagged: WaitQueue::new(sched, "PG_mte_tagged"),
            zero_page,
            events: Cell::new(Events::default()),
            clobbers: Cell::new(check::ClobberLog::default()),
            cleancache: RefCell::new(cleancache::Cleancache::default()),
            trace: crate::trace::EventSink::new(platform),
            incremental: RefCell::default(),
            refill,
        };
        if policy.rules().mte() {
            memory.boot_zero_page_tags();
            // `mistake=zero-page-block`: the zero page's block is left lent.
            if !platform
                .settings()
                .mistakes
                .contains(platform::Mistake::ZeroPageBlock)
            {
                memory.activate().map_err(MemInitError::Activate)?;
            }
        }
        Ok(memory)
    }

    /// What the kernel asks the design (`tagstore::Rules`), with the known
    /// mistakes that change an answer applied.
    pub fn rules(&self) -> Rules {
        self.rules
    }

    pub fn policy(&self) -> Design {
        self.policy
    }

    /// The machine's geometry: pages, tag bytes, tag blocks.
    pub fn geometry(&self) -> &Geometry {
        &self.geometry
    }

    pub fn sched(&self) -> &Sched {
        &self.sched
    }

    /// Linux `ZERO_PAGE(0)`.
    pub fn zero_page(&self) -> Pfn {
        self.zero_page
    }

    /// The allocator and contents, read-only. Never hold across an `.await`.
    #[inline]
    pub fn phys(&self) -> Ref<'_, PhysMem> {
        self.phys.borrow()
    }

    /// The allocator and contents, for the caller's fields of the frame
    /// metadata (counts, pins, owner) and page contents. Never hold across an
    /// `.await`; leave the MTE flags to [`Memory`].
    #[inline]
    pub fn phys_mut(&self) -> RefMut<'_, PhysMem> {
        self.phys.borrow_mut()
    }

    /// The tag storage manager, for observers between kernel paths (panics
    /// with `BUG:` while a task holds `tag_blocks_lock`).
    pub fn tag_storage(&self) -> Ref<'_, Manager> {
        Ref::map(self.tag_storage.borrow_unlocked(), |s| &s.manager)
    }

    /// Host bytes used by the model of this machine's memory: the allocator
    /// and contents, plus an estimate for the per-block maps (48 bytes per
    /// entry, as phys estimates its trees).
    pub fn host_bytes(&self) -> usize {
        const BYTES_PER_ENTRY: usize = 48;
        // The manager's entries, and a claim token per claimed block.
        let state = self.tag_storage.borrow_unlocked();
        let entries = state.manager.bookkeeping_entries() as usize + state.claimed.len();
        size_of::<Self>() + self.phys.borrow().host_bytes() + entries * BYTES_PER_ENTRY
    }

    fn bump(&self, f: impl FnOnce(&mut Events)) {
        let mut events = self.events.get();
        f(&mut events);
        self.events.set(events);
    }

    /// Linux `cpu_enable_mte()`: the zero page's tags are cleared through the
    /// linear map before tag storage is managed. The write goes to tag
    /// storage that is not reserved yet, which is the seed's point: nothing
    /// else can use that frame before activation reserves it, right after.
    fn boot_zero_page_tags(&self) {
        self.write_tag_bytes_unchecked(self.zero_page, None);
        let mut phys = self.phys.borrow_mut();
        let meta = phys
            .alloc
            .frame_mut(self.zero_page)
            .expect("BUG: the zero page is allocated");
        meta.flags.insert(PageFlag::Tagged);
        drop(phys);
        self.bump(|e| e.pages_tagged += 1);
    }

    /// Activates the tag storage manager (see [`Self::with_config`]). The
    /// zero page's block is free at boot, so the claim takes the fast path
    /// and never reaches a switch point: the future is polled here, outside
    /// any run.
    fn activate(&self) -> Result<(), ReserveError> {
        let mut state = self.tag_storage.borrow_mut_unlocked();
        let TagStorageState { manager, claimed } = &mut *state;
        let mut mover = FrameMover::default();
        let mut source = mover::PhysSource::new(self, &mut mover, claimed);
        let result = poll_at_boot(manager.activate(self.zero_page, &mut source));
        self.tag_counters.set(manager.counters());
        result?;
        self.phys
            .borrow_mut()
            .alloc
            .frame_mut(self.zero_page)
            .expect("BUG: the zero page is allocated")
            .flags
            .insert(PageFlag::TagStorageReserved);
        Ok(())
    }
}

/// Polls a boot-time future once: at boot nothing can make it wait.
fn poll_at_boot<F: core::future::Future>(future: F) -> F::Output {
    let mut future = core::pin::pin!(future);
    let mut cx = core::task::Context::from_waker(core::task::Waker::noop());
    match future.as_mut().poll(&mut cx) {
        core::task::Poll::Ready(out) => out,
        core::task::Poll::Pending => panic!("BUG: tag storage activation waited at boot"),
    }
}
