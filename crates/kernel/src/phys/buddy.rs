//! The buddy page allocator with pageblocks, migrate types and CMA, modelled
//! on Linux `mm/page_alloc.c` (6.x: free lists always match their pageblock's
//! type, "mm: page_alloc: consolidate free page accounting", 6.10; isolation as
//! a separate pageblock bit, 6.16).
//!
//! Owns: the free lists ([`FreeList`] per order), the pageblock table
//! ([`Pageblock`]), the frame metadata ([`FrameTable`]), the exact counters
//! ([`PhysStats`]) and the allocation policy ([`AllocFlags`], [`CmaUse`]).
//! Isolation and contiguous claims live in [`crate::phys::isolate`], the checker
//! in [`crate::phys::check`]; both are `impl BuddyAllocator` blocks.
//!
//! # Invariants (checked by [`BuddyAllocator::check`])
//! - Every present frame is in exactly one state: inside exactly one free
//!   block, inside one block on a per-CPU list, allocated (head or tail of
//!   one block), claimed, or carved out; the counts add up to the machine's
//!   frames.
//! - A free block of order `o` starts at a multiple of `2^o`, covers only
//!   allocatable present frames (DRAM or CMA), and sits on the list of its
//!   pageblock: `Isolate` if the pageblock is isolated, else its migrate type.
//!   A block larger than a pageblock has the same list in all its pageblocks;
//!   an isolated block never spans two pageblocks.
//! - Free blocks are fully merged: two free buddies of the same order exist
//!   only where merging is forbidden, i.e. at or above pageblock order between
//!   pageblocks whose lists are not both mergeable (Linux
//!   `migratetype_is_mergeable()`: Unmovable and Movable merge with each other;
//!   Cma merges only with Cma; Isolate never merges across pageblocks).
//! - Counters equal a recount.
//!
//! # Allocation (Linux `__rmqueue()`, `__rmqueue_smallest()`,
//! `__rmqueue_claim()`, `__rmqueue_steal()`)
//! 1. A request may use CMA (`ALLOC_CMA`) only if it is movable, untagged
//!    (the RFC's `__GFP_TAGGED` makes `arch_alloc_cma()` refuse) and
//!    [`CmaUse`] is not `Never`. With `Prefer` CMA is tried first; with
//!    `Balance` first only while free CMA pages exceed half of all free pages.
//! 2. The request's own list, smallest order first (`__rmqueue_smallest`).
//! 3. CMA, if allowed (`__rmqueue_cma_fallback`).
//! 4. Claim: from the largest order down, take the fallback type's block
//!    (Unmovable <-> Movable; never Cma, never Isolate) and convert its whole
//!    pageblock(s) when the block is pageblock-sized or larger, or when at
//!    least half the pageblock is free or of a compatible type
//!    (`try_to_claim_block()`); orders below `pageblock_order / 2` are not
//!    tried for movable requests (`should_try_claim_block()`).
//! 5. Steal: the smallest fallback block, leaving its pageblock's type alone.
//!
//! # The order within a list ([`FreeListOrder`])
//! - `Address` (the default): within a list the lowest frame number is
//!   taken, and `expand()` keeps the lowest part, so the same operations
//!   always give the same frames, whatever order they were freed in.
//! - `Linux` (`free-list-order=linux`, Linux v6.8's discipline): a list is
//!   a LIFO list. `__rmqueue_smallest()` (and claim, steal) take its first
//!   entry; `expand()` adds the split-off upper halves at the head;
//!   `__free_one_page()` adds the merged block at the head, or at the tail
//!   when `buddy_merge_likely()` finds the buddy of the next-higher order
//!   free (the block is likely to merge soon; no page shuffling, as
//!   `CONFIG_SHUFFLE_PAGE_ALLOCATOR` is off); boot memory is added at the
//!   tail in address order (`__free_pages_core()`, `FPI_TO_TAIL`); moving a
//!   pageblock's blocks to another list (`move_freepages_block()`: claims,
//!   isolation) appends them at the tail in address order; undoing an
//!   isolation puts them at the tail (`move_freepages_block()`, or
//!   `__putback_isolated_page()` with `FPI_TO_TAIL` for a block that
//!   merges). So a freed page is the next one handed out. Same operations
//!   still give the same frames.
//!
//! # Shortcuts (and why)
//! - One zone, no watermarks, no reclaim, no compaction: the kernel layer
//!   decides what to do when [`AllocError::OutOfMemory`] comes back.
//! - Per-CPU page lists (`pcp`) only with `pcp=on` ([`crate::phys::pcp`]);
//!   off, every allocation and free goes straight to the free lists.
//! - No `MIGRATE_RECLAIMABLE`, `MIGRATE_HIGHATOMIC` or `ALLOC_NOFRAGMENT`.
//! - Isolated free blocks never merge across pageblocks (Linux may merge two
//!   isolated buddies and splits them again on un-isolation).
//! - A pageblock only partly present (a ragged edge) is never claimed by a
//!   fallback, as Linux refuses pageblocks crossing a zone boundary
//!   (`prep_move_freepages_block()`).

use crate::phys::chunks::TakenChunks;
use crate::phys::frame::{FrameMeta, FrameState, FrameTable, MigrateType, PageFlag};
use crate::phys::layout::{CmaUse, Order, PhysGeometry, PhysLayout, RegionKind};
use crate::phys::pcp::Pcp;
use crate::phys::runs::{BlockRuns, End};
use mte::{Pfn, PfnRange};
/// The order of the blocks within one free list (the `free-list-order`
/// platform key, `docs/model.md` §6): see the module doc.
pub use platform::FreeListOrder;
use thiserror::Error;

/// A buddy free list: a migrate type, or the isolation list.
///
/// Linux: `free_area[order].free_list[migratetype]` including
/// `MIGRATE_ISOLATE`.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Debug)]
pub enum FreeList {
    Unmovable,
    Movable,
    Cma,
    /// Free frames of isolated pageblocks: never allocated from.
    Isolate,
}

impl FreeList {
    pub const ALL: [FreeList; 4] = [Self::Unmovable, Self::Movable, Self::Cma, Self::Isolate];

    pub(crate) const fn index(self) -> usize {
        self as usize
    }

    /// The migrate type a pageblock on this list has, unless isolated.
    pub fn migratetype(self) -> Option<MigrateType> {
        match self {
            Self::Unmovable => Some(MigrateType::Unmovable),
            Self::Movable => Some(MigrateType::Movable),
            Self::Cma => Some(MigrateType::Cma),
            Self::Isolate => None,
        }
    }

    /// Whether blocks on lists `a` and `b` may merge across pageblocks.
    /// Linux: `__free_one_page()` with `migratetype_is_mergeable()`.
    pub(crate) fn may_merge(a: FreeList, b: FreeList) -> bool {
        use FreeList::*;
        match (a, b) {
            (Isolate, _) | (_, Isolate) => false,
            (Cma, Cma) => true,
            (Cma, _) | (_, Cma) => false,
            _ => true,
        }
    }
}

impl From<MigrateType> for FreeList {
    fn from(mt: MigrateType) -> Self {
        match mt {
            MigrateType::Unmovable => Self::Unmovable,
            MigrateType::Movable => Self::Movable,
            MigrateType::Cma => Self::Cma,
        }
    }
}

/// One pageblock's type. Linux: the pageblock bitmap (`PB_migrate` bits and
/// `PB_migrate_isolate`).
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct Pageblock {
    pub migratetype: MigrateType,
    pub isolated: bool,
}

impl Pageblock {
    /// The list this pageblock's free frames are on.
    pub fn free_list(self) -> FreeList {
        if self.isolated {
            FreeList::Isolate
        } else {
            self.migratetype.into()
        }
    }
}

/// What an allocation asks for. Linux: the GFP flags that matter here.
#[derive(Clone, Copy, PartialEq, Eq, Debug, Default)]
pub struct AllocFlags {
    /// `__GFP_MOVABLE`: the page can be migrated (user and page-cache pages).
    pub movable: bool,
    /// The RFC's `__GFP_TAGGED`: the page will be mapped with `PROT_MTE`, so
    /// it must not come from tag storage (CMA).
    pub tagged: bool,
}

impl AllocFlags {
    /// `GFP_KERNEL`: unmovable kernel memory.
    pub const KERNEL: Self = Self {
        movable: false,
        tagged: false,
    };
    /// `GFP_HIGHUSER_MOVABLE`: an untagged user page.
    pub const USER: Self = Self {
        movable: true,
        tagged: false,
    };
    /// `GFP_HIGHUSER_MOVABLE | __GFP_TAGGED`: a page for a `PROT_MTE` mapping.
    pub const USER_TAGGED: Self = Self {
        movable: true,
        tagged: true,
    };

    pub fn migratetype(self) -> MigrateType {
        if self.movable {
            MigrateType::Movable
        } else {
            MigrateType::Unmovable
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Error)]
pub enum AllocError {
    #[error("order {order} is above the maximum order {max}")]
    OrderTooLarge { order: Order, max: Order },
    #[error("out of memory: no free block of order {order} for {flags:?}")]
    OutOfMemory { order: Order, flags: AllocFlags },
}

/// Why a block cannot be freed although it is allocated (Linux: `bad_page()`
/// reasons from `free_page_is_bad()`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BadPage {
    /// Still mapped by page-table entries.
    Mapped {
        mapcount: u32,
    },
    Pinned {
        pins: u32,
    },
    /// Someone besides the freeing caller holds a reference.
    Referenced {
        refcount: u32,
    },
    /// Its tag storage is still reserved: release it first (the RFC frees tag
    /// storage from `arch_free_pages_prepare()`).
    TagStorageReserved,
    /// Its tags are being initialised (`PG_mte_lock` held).
    MteLocked,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Error)]
pub enum FreeError {
    #[error("order {order} is above the maximum order {max}")]
    OrderTooLarge { order: Order, max: Order },
    #[error("frame {pfn} is not present")]
    NotPresent { pfn: Pfn },
    #[error("frame {pfn} is not the head of an allocated block: {status:?}")]
    NotAllocated { pfn: Pfn, status: FrameStatus },
    #[error("frame {pfn} heads a block of order {allocated}, not {given}")]
    WrongOrder {
        pfn: Pfn,
        allocated: Order,
        given: Order,
    },
    #[error("frame {pfn} is in a bad state to free: {bad:?}")]
    BadPage { pfn: Pfn, bad: BadPage },
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Error)]
pub enum FrameAccessError {
    #[error("frame {pfn} is not present")]
    NotPresent { pfn: Pfn },
    #[error("frame {pfn} is not in use: {status:?}")]
    NotInUse { pfn: Pfn, status: FrameStatus },
}

/// The full state of a frame, derived from the metadata and the free lists.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FrameStatus {
    /// Inside the free block `head` of `order` on `list`.
    Free {
        head: Pfn,
        order: Order,
        list: FreeList,
    },
    /// Inside the allocated block `head` of `order`.
    Allocated {
        head: Pfn,
        order: Order,
        migratetype: MigrateType,
    },
    Claimed,
    CarvedOut,
    /// Inside the block `head` of `order` on CPU `cpu`'s per-CPU list:
    /// free, but not in the buddy allocator (`pcp=on`).
    PcpFree {
        head: Pfn,
        order: Order,
        cpu: u32,
    },
}

/// Counters, all exact. Names map to `docs/model.md` §5.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct PhysStats {
    /// `mem.pages`: ordinary DRAM frames.
    pub dram_pages: u64,
    /// `mem.free`: free frames usable for data, CMA included, isolated ones
    /// excluded (Linux `NR_FREE_PAGES`).
    pub free_pages: u64,
    /// Free frames of isolated pageblocks.
    pub isolated_free_pages: u64,
    /// Allocated frames (heads and tails).
    pub allocated_pages: u64,
    /// Tag storage frames given to the allocator (`tag_storage.pages` under
    /// `dynamic`).
    pub cma_pages: u64,
    /// Free CMA frames, not isolated (Linux `NR_FREE_CMA_PAGES`).
    pub cma_free_pages: u64,
    /// `tag_storage.data_pages`: CMA frames allocated for data now.
    pub cma_data_pages: u64,
    /// Frames taken out by contiguous claims (reserved for tags).
    pub claimed_pages: u64,
    /// Tag storage frames carved out at boot (`static`).
    pub carved_out_pages: u64,
    /// Free frames on per-CPU lists (`pcp=on`), not in `free_pages` (as
    /// Linux's `NR_FREE_PAGES` leaves them out).
    pub pcp_pages: u64,
}

/// Counters maintained on every list and state change.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub(crate) struct Counters {
    /// Free frames per [`FreeList`].
    pub(crate) free: [u64; 4],
    pub(crate) allocated: u64,
    /// Allocated frames in CMA pageblocks.
    pub(crate) cma_allocated: u64,
    pub(crate) claimed: u64,
    /// Frames on per-CPU lists (recounted by the checker; the lists keep
    /// their own counts).
    pub(crate) pcp: u64,
}

/// The page allocator of one machine.
#[derive(Clone, Debug)]
pub struct BuddyAllocator {
    pub(crate) frames: FrameTable,
    /// `free_lists[order][list.index()]`.
    pub(crate) free_lists: Vec<[BlockRuns; 4]>,
    /// One entry per pageblock of the span, from `first_pageblock`.
    pub(crate) pageblocks: Vec<Pageblock>,
    /// Pageblock number (`pfn >> pageblock_order`) of `pageblocks[0]`.
    pub(crate) first_pageblock: u64,
    pub(crate) counters: Counters,
    pub(crate) cma_use: CmaUse,
    /// The per-CPU lists, when on.
    pub(crate) pcp: Option<Pcp>,
    pub(crate) list_order: FreeListOrder,
    /// Taken frames per chunk of 32, kept with the free lists
    /// ([`crate::phys::chunks`]): how many frames of a range are free.
    pub(crate) chunks: TakenChunks,
}

impl BuddyAllocator {
    /// A freshly booted allocator: every DRAM and CMA frame free, in the
    /// largest aligned blocks that fit (Linux `memblock_free_all()`);
    /// pageblocks start Movable (Linux `memmap_init_range()`) or Cma
    /// (`init_cma_reserved_pageblock()`). Cost: O(regions + pageblocks).
    pub fn new(layout: PhysLayout, cma_use: CmaUse) -> Self {
        let g = *layout.geometry();
        let blocks = g.pageblocks_of(layout.span());
        let pb_shift = g.pageblock_order().get();
        let count = usize::try_from(blocks.count >> pb_shift)
            .expect("BUG: pageblock table larger than the address space");
        let mut pageblocks = vec![
            Pageblock {
                migratetype: MigrateType::Movable,
                isolated: false,
            };
            count
        ];
        let first_pageblock = blocks.start.as_u64() >> pb_shift;
        let layout_span = layout.span();
        for region in layout.regions() {
            if region.kind == RegionKind::TagStorageCma {
                let pbs = g.pageblocks_of(region.range);
                let from = (pbs.start.as_u64() >> pb_shift) - first_pageblock;
                let to = (pbs.end().as_u64() >> pb_shift) - first_pageblock;
                for pb in &mut pageblocks[from as usize..to as usize] {
                    pb.migratetype = MigrateType::Cma;
                }
            }
        }
        let free_lists = (0..=g.max_order().get())
            .map(|o| core::array::from_fn(|_| BlockRuns::new(Order::new(o).pages())))
            .collect();
        let allocatable: Vec<PfnRange> = layout
            .regions()
            .iter()
            .filter(|r| r.kind.is_allocatable())
            .map(|r| r.range)
            .collect();
        let mut this = Self {
            frames: FrameTable::new(layout),
            free_lists,
            pageblocks,
            first_pageblock,
            counters: Counters::default(),
            cma_use,
            pcp: None,
            list_order: FreeListOrder::Address,
            // Empty while booting (it ignores updates): boot frees every
            // allocatable frame, which is the fresh table's "nothing taken".
            chunks: TakenChunks::default(),
        };
        for range in allocatable {
            // Linux memblock_free_all() -> __free_pages_core(): FPI_TO_TAIL.
            this.free_pieces_to(range.start, range.end(), End::Tail);
        }
        this.chunks = TakenChunks::new(layout_span);
        this
    }

    /// Switches the order within the free lists. Meant for boot: switching
    /// to `Linux` orders every list by address, as `memblock_free_all()`
    /// leaves them (the allocator's own boot frees go to the tail in
    /// address order); switching back forgets the positions.
    pub fn set_free_list_order(&mut self, order: FreeListOrder) {
        self.list_order = order;
        for lists in &mut self.free_lists {
            for list in lists {
                match order {
                    FreeListOrder::Linux => list.keep_linux_order(),
                    FreeListOrder::Address => list.forget_linux_order(),
                }
            }
        }
    }

    /// The order within the free lists.
    pub fn free_list_order(&self) -> FreeListOrder {
        self.list_order
    }

    /// The heads of the free blocks of `order` on `list`, in the order
    /// allocations take them.
    pub fn free_list_heads(&self, order: Order, list: FreeList) -> Vec<Pfn> {
        self.free_lists
            .get(usize::from(order.get()))
            .map_or_else(Vec::new, |l| l[list.index()].in_list_order())
    }

    pub fn layout(&self) -> &PhysLayout {
        self.frames.layout()
    }

    pub fn geometry(&self) -> &PhysGeometry {
        self.frames.layout().geometry()
    }

    pub fn cma_use(&self) -> CmaUse {
        self.cma_use
    }

    pub fn set_cma_use(&mut self, cma_use: CmaUse) {
        self.cma_use = cma_use;
    }

    /// The exact counters.
    pub fn stats(&self) -> PhysStats {
        let layout = self.layout();
        let free = &self.counters.free;
        PhysStats {
            dram_pages: layout.pages_of(RegionKind::Dram),
            free_pages: free[FreeList::Unmovable.index()]
                + free[FreeList::Movable.index()]
                + free[FreeList::Cma.index()],
            isolated_free_pages: free[FreeList::Isolate.index()],
            allocated_pages: self.counters.allocated,
            cma_pages: layout.pages_of(RegionKind::TagStorageCma),
            cma_free_pages: free[FreeList::Cma.index()],
            cma_data_pages: self.counters.cma_allocated,
            claimed_pages: self.counters.claimed,
            carved_out_pages: layout.pages_of(RegionKind::TagStorageCarvedOut),
            pcp_pages: self.pcp_pages(),
        }
    }

    /// Free frames on `list` (all orders).
    pub fn free_pages_on(&self, list: FreeList) -> u64 {
        self.counters.free[list.index()]
    }

    /// Free blocks of `order` on `list`.
    pub fn free_blocks(&self, order: Order, list: FreeList) -> u64 {
        self.free_lists
            .get(usize::from(order.get()))
            .map_or(0, |l| l[list.index()].len())
    }

    /// The metadata of `pfn`; `None` for a hole or a frame of a section never
    /// used (free or carved out: see [`Self::frame_status`]).
    pub fn frame(&self, pfn: Pfn) -> Option<&FrameMeta> {
        self.frames.get(pfn)
    }

    /// The metadata of an allocated or claimed frame, for the kernel's fields
    /// (reference and map counts, pins, flags, owner).
    pub fn frame_mut(&mut self, pfn: Pfn) -> Result<&mut FrameMeta, FrameAccessError> {
        if self.layout().region_of(pfn).is_none() {
            return Err(FrameAccessError::NotPresent { pfn });
        }
        let in_use = self.frames.get(pfn).is_some_and(|m| {
            matches!(
                m.state(),
                FrameState::Allocated { .. } | FrameState::Tail { .. } | FrameState::Claimed
            )
        });
        if !in_use {
            let status = self
                .frame_status(pfn)
                .expect("BUG: present frame has no status");
            return Err(FrameAccessError::NotInUse { pfn, status });
        }
        Ok(self
            .frames
            .get_mut(pfn)
            .expect("BUG: in-use frame without metadata"))
    }

    /// Where `pfn` is; `None` for a hole.
    pub fn frame_status(&self, pfn: Pfn) -> Option<FrameStatus> {
        let region = *self.layout().region_of(pfn)?;
        if let Some(meta) = self.frames.get(pfn) {
            match meta.state() {
                FrameState::Free => {}
                FrameState::Allocated { order, migratetype } => {
                    return Some(FrameStatus::Allocated {
                        head: pfn,
                        order,
                        migratetype,
                    });
                }
                FrameState::Tail { head_offset } => {
                    let head = Pfn::new(pfn.as_u64() - u64::from(head_offset));
                    let Some(FrameState::Allocated { order, migratetype }) =
                        self.frames.get(head).map(FrameMeta::state)
                    else {
                        panic!("BUG: tail frame {pfn} without a head at {head}");
                    };
                    return Some(FrameStatus::Allocated {
                        head,
                        order,
                        migratetype,
                    });
                }
                FrameState::Claimed => return Some(FrameStatus::Claimed),
                FrameState::CarvedOut => return Some(FrameStatus::CarvedOut),
            }
        }
        if region.kind == RegionKind::TagStorageCarvedOut {
            return Some(FrameStatus::CarvedOut);
        }
        if let Some((head, order, cpu)) = self
            .pcp
            .as_ref()
            .and_then(|p| p.block_of(pfn, self.geometry().pageblock_order()))
        {
            return Some(FrameStatus::PcpFree { head, order, cpu });
        }
        let (head, order, list) = self
            .find_free_block(pfn)
            .unwrap_or_else(|| panic!("BUG: free frame {pfn} is in no free block"));
        Some(FrameStatus::Free { head, order, list })
    }

    /// The pageblock holding `pfn`; `None` outside the layout's span.
    pub fn pageblock(&self, pfn: Pfn) -> Option<Pageblock> {
        self.pageblock_index(pfn).map(|i| self.pageblocks[i])
    }

    /// Host bytes used by the allocator's own structures (an estimate for the
    /// free-list trees: 48 bytes per run).
    pub fn host_bytes(&self) -> usize {
        const BYTES_PER_RUN: usize = 48;
        let runs: usize = self
            .free_lists
            .iter()
            .flat_map(|lists| lists.iter())
            .map(BlockRuns::runs)
            .sum();
        self.frames.host_bytes()
            + self.pageblocks.capacity() * size_of::<Pageblock>()
            + self.free_lists.capacity() * size_of::<[BlockRuns; 4]>()
            + runs * BYTES_PER_RUN
            + self.chunks.host_bytes()
    }

    // ----- allocation -------------------------------------------------------

    /// Allocates `2^order` contiguous frames; returns the first. On CPU 0:
    /// see [`Self::alloc_on`].
    pub fn alloc(&mut self, order: Order, flags: AllocFlags) -> Result<Pfn, AllocError> {
        self.alloc_on(0, order, flags)
    }

    /// Allocates `2^order` contiguous frames on `cpu` (whose per-CPU list
    /// serves it when `pcp=on`; taken modulo the CPUs); returns the first.
    ///
    /// Linux: `__alloc_pages()` -> `rmqueue()` -> `rmqueue_pcplist()` or
    /// `__rmqueue()`. The head gets `refcount` 1; the other frames become
    /// tails. Before reporting that memory ran out, the per-CPU lists are
    /// drained and the request tried again (Linux drains them after direct
    /// reclaim fails, `__alloc_pages_direct_reclaim()`).
    pub fn alloc_on(
        &mut self,
        cpu: usize,
        order: Order,
        flags: AllocFlags,
    ) -> Result<Pfn, AllocError> {
        let max = self.geometry().max_order();
        if order > max {
            return Err(AllocError::OrderTooLarge { order, max });
        }
        let start = flags.migratetype();
        // Linux gfp_to_alloc_flags_cma() + the RFC's arch_alloc_cma(): tag
        // storage has no tags of its own, so tagged pages never come from it.
        let use_cma = self.may_use_cma(flags.movable, flags.tagged);
        let mut head = self
            .pcp_alloc(cpu, order, start, use_cma)
            .or_else(|| self.rmqueue(order, start, use_cma));
        if head.is_none() && self.drain_all_pages() > 0 {
            head = self
                .pcp_alloc(cpu, order, start, use_cma)
                .or_else(|| self.rmqueue(order, start, use_cma));
        }
        let head = head.ok_or(AllocError::OutOfMemory { order, flags })?;
        self.mark_allocated(head, order, start);
        Ok(head)
    }

    /// Takes the free frame `pfn` as an order-0 movable allocation, if it
    /// is free on the movable list (not CMA, not unmovable, not isolated);
    /// its free block is split around it and the other pieces stay free.
    /// Returns whether it was taken.
    ///
    /// Linux: the free scanner of compaction, `isolate_freepages_block()`
    /// -> `__isolate_free_page()` on the buddy holding the frame, then
    /// `split_map_pages()`; `suitable_migration_target()` limits it to
    /// movable pageblocks (here CMA is left out too: see
    /// `machine::compact`).
    pub fn take_free_frame(&mut self, pfn: Pfn) -> bool {
        self.take_free_frame_if(pfn, |list| list == FreeList::Movable)
    }

    /// [`Self::take_free_frame`] from whichever free list holds `pfn`,
    /// except an isolated pageblock's: the frame keeps its pageblock's
    /// migrate type. For a caller that must keep every free frame of a
    /// range out of other allocations for a while (design `google`'s
    /// compaction keeps destinations out of held blocks).
    pub fn take_any_free_frame(&mut self, pfn: Pfn) -> bool {
        self.take_free_frame_if(pfn, |list| list != FreeList::Isolate)
    }

    fn take_free_frame_if(&mut self, pfn: Pfn, allowed: impl Fn(FreeList) -> bool) -> bool {
        let Some((head, order, list)) = self.find_free_block(pfn) else {
            return false;
        };
        let Some(migratetype) = list.migratetype().filter(|_| allowed(list)) else {
            return false;
        };
        self.del_free(head, order, list);
        // Halve the block down to `pfn`, freeing the half without it.
        let (mut block, mut current) = (head, order);
        while current.get() > 0 {
            let half = Order::new(current.get() - 1);
            let upper = block + half.pages();
            if pfn < upper {
                self.add_free(upper, half, list);
            } else {
                self.add_free(block, half, list);
                block = upper;
            }
            current = half;
        }
        debug_assert_eq!(block, pfn);
        self.mark_allocated(pfn, Order::new(0), migratetype);
        true
    }

    /// Allocates `2^order` frames inside `range` (aligned to `order`, a
    /// whole number of such blocks) from the request's own free list only
    /// (never CMA, never another type's pageblocks), lowest fitting block
    /// first; `None` if no free block there fits. The free block holding
    /// the frames is split around them and the other pieces stay free.
    ///
    /// For designs that serve tagged allocations only from frames whose
    /// tag storage they hold (XNU's tagged grab from ACTIVE cells, Google's
    /// tagged free list): the kernel asks the design for the ranges.
    pub fn alloc_within(
        &mut self,
        range: PfnRange,
        order: Order,
        flags: AllocFlags,
    ) -> Option<Pfn> {
        if order > self.geometry().max_order()
            || !range.start.is_aligned(order)
            || !range.count.is_multiple_of(order.pages())
            || range.count == 0
            // No free frame at all (the chunk table answers at once): no
            // free block on any list to search.
            || self.free_frames_in(range) == 0
        {
            return None;
        }
        let start = flags.migratetype();
        let list = FreeList::from(start);
        let end = range.end();
        for o in order.get()..=self.geometry().max_order().get() {
            let o = Order::new(o);
            let from = range.start.align_down(o);
            let found = self.list(o, list).heads_in(from, end).find_map(|head| {
                let at = head.max(range.start);
                let block_end = head + o.pages();
                (at + order.pages() <= block_end && at + order.pages() <= end).then_some((head, at))
            });
            let Some((head, at)) = found else {
                continue;
            };
            self.del_free(head, o, list);
            // Halve the block down to the `order` block at `at`, freeing
            // the halves without it.
            let (mut block, mut current) = (head, o);
            while current > order {
                let half = Order::new(current.get() - 1);
                let upper = block + half.pages();
                if at < upper {
                    self.add_free(upper, half, list);
                } else {
                    self.add_free(block, half, list);
                    block = upper;
                }
                current = half;
            }
            debug_assert_eq!(block, at);
            self.mark_allocated(at, order, start);
            return Some(at);
        }
        None
    }

    pub(crate) fn rmqueue(
        &mut self,
        order: Order,
        start: MigrateType,
        use_cma: bool,
    ) -> Option<Pfn> {
        let cma_first = use_cma
            && match self.cma_use {
                CmaUse::Prefer => true,
                // Linux __rmqueue(): "Balance movable allocations between
                // regular and CMA areas by allocating from CMA when over half
                // of the zone's free memory is in the CMA area."
                CmaUse::Balance => {
                    let free = &self.counters.free;
                    let total = free[FreeList::Unmovable.index()]
                        + free[FreeList::Movable.index()]
                        + free[FreeList::Cma.index()];
                    free[FreeList::Cma.index()] > total / 2
                }
                CmaUse::Never => false,
            };
        if cma_first && let Some(head) = self.take_smallest(order, FreeList::Cma) {
            return Some(head);
        }
        if let Some(head) = self.take_smallest(order, start.into()) {
            return Some(head);
        }
        if use_cma
            && !cma_first
            && let Some(head) = self.take_smallest(order, FreeList::Cma)
        {
            return Some(head);
        }
        if let Some(head) = self.rmqueue_claim(order, start) {
            return Some(head);
        }
        self.rmqueue_steal(order, start)
    }

    /// Linux `__rmqueue_smallest()`: the first block (the lowest, or the
    /// list head with Linux's order) of the smallest order that fits, split
    /// down to `order`.
    pub(crate) fn take_smallest(&mut self, order: Order, list: FreeList) -> Option<Pfn> {
        for current in order.get()..=self.geometry().max_order().get() {
            let current = Order::new(current);
            let Some(head) = self.list(current, list).first() else {
                continue;
            };
            self.del_free(head, current, list);
            self.expand(head, order, current, list);
            return Some(head);
        }
        None
    }

    /// The type a request of `start` falls back to (Linux `fallbacks[]`
    /// without `MIGRATE_RECLAIMABLE`). Never Cma, never Isolate.
    fn fallback(start: MigrateType) -> FreeList {
        match start {
            MigrateType::Unmovable => FreeList::Movable,
            MigrateType::Movable => FreeList::Unmovable,
            MigrateType::Cma => panic!("BUG: CMA is never a request type"),
        }
    }

    /// Linux `should_try_claim_block()`.
    fn should_try_claim(&self, order: Order, start: MigrateType) -> bool {
        let pb = self.geometry().pageblock_order().get();
        order.get() >= pb || order.get() >= pb / 2 || start == MigrateType::Unmovable
    }

    /// Linux `__rmqueue_claim()`: from the largest order down, try to take a
    /// fallback block together with its whole pageblock.
    fn rmqueue_claim(&mut self, order: Order, start: MigrateType) -> Option<Pfn> {
        let fallback = Self::fallback(start);
        for current in (order.get()..=self.geometry().max_order().get()).rev() {
            let current = Order::new(current);
            if !self.should_try_claim(current, start) {
                break;
            }
            let Some(head) = self.list(current, fallback).first() else {
                continue;
            };
            if let Some(page) = self.try_to_claim_block(head, current, order, start, fallback) {
                return Some(page);
            }
        }
        None
    }

    /// Linux `try_to_claim_block()`.
    fn try_to_claim_block(
        &mut self,
        head: Pfn,
        current: Order,
        order: Order,
        start: MigrateType,
        block_list: FreeList,
    ) -> Option<Pfn> {
        let g = *self.geometry();
        if current >= g.pageblock_order() {
            self.del_free(head, current, block_list);
            self.change_pageblock_range(head, current, start);
            self.expand(head, order, current, start.into());
            return Some(head);
        }
        let pb_start = head.align_down(g.pageblock_order());
        if !self.pageblock_fully_present(pb_start) {
            return None;
        }
        let (free, movable) = self.pageblock_usage(pb_start, block_list);
        let pb_pages = g.pageblock_pages();
        let alike = match (start, block_list) {
            (MigrateType::Movable, _) => movable,
            // An unmovable request counts every non-movable page of a movable
            // block as compatible.
            (_, FreeList::Movable) => pb_pages - (free + movable),
            _ => 0,
        };
        if free + alike >= pb_pages / 2 {
            self.move_free_blocks(pb_start, block_list, start.into());
            let i = self
                .pageblock_index(pb_start)
                .expect("BUG: pageblock outside the span");
            self.pageblocks[i].migratetype = start;
            return self.take_smallest(order, start.into());
        }
        None
    }

    /// Linux `__rmqueue_steal()`: the smallest fallback block, its pageblock's
    /// type left alone.
    fn rmqueue_steal(&mut self, order: Order, start: MigrateType) -> Option<Pfn> {
        let fallback = Self::fallback(start);
        for current in order.get()..=self.geometry().max_order().get() {
            let current = Order::new(current);
            let Some(head) = self.list(current, fallback).first() else {
                continue;
            };
            self.del_free(head, current, fallback);
            self.expand(head, order, current, fallback);
            return Some(head);
        }
        None
    }

    /// Free frames on `list` and movable allocated frames in the pageblock
    /// (Linux `prep_move_freepages_block()`).
    fn pageblock_usage(&self, pb_start: Pfn, list: FreeList) -> (u64, u64) {
        let g = self.geometry();
        let pb_end = pb_start + g.pageblock_pages();
        let free = (0..=g.pageblock_order().get())
            .map(|o| {
                let o = Order::new(o);
                self.list(o, list).heads_in(pb_start, pb_end).count() as u64 * o.pages()
            })
            .sum();
        let mut movable = 0;
        let mut pfn = pb_start;
        while pfn < pb_end {
            match self.frames.get(pfn).map(FrameMeta::state) {
                Some(FrameState::Allocated { order, migratetype }) => {
                    if migratetype == MigrateType::Movable {
                        movable += order.pages();
                    }
                    pfn += order.pages();
                }
                _ => pfn += 1,
            }
        }
        (free, movable)
    }

    fn pageblock_fully_present(&self, pb_start: Pfn) -> bool {
        let range = PfnRange::new(pb_start, self.geometry().pageblock_pages());
        self.layout().first_hole_in(range).is_none()
    }

    /// Moves every free block inside the pageblock at `pb_start` from `from`
    /// to `to`. Linux `move_freepages()`: by ascending frame, each to the
    /// tail of its new list (`move_to_free_list()`).
    pub(crate) fn move_free_blocks(&mut self, pb_start: Pfn, from: FreeList, to: FreeList) {
        let g = *self.geometry();
        let pb_end = pb_start + g.pageblock_pages();
        let mut blocks = Vec::new();
        for o in 0..=g.pageblock_order().get() {
            let o = Order::new(o);
            blocks.extend(
                self.list(o, from)
                    .heads_in(pb_start, pb_end)
                    .map(|h| (h, o)),
            );
        }
        blocks.sort_unstable();
        for (head, o) in blocks {
            self.del_free(head, o, from);
            self.add_free_at(head, o, to, End::Tail);
        }
    }

    /// Linux `change_pageblock_range()`.
    fn change_pageblock_range(&mut self, head: Pfn, order: Order, mt: MigrateType) {
        let g = *self.geometry();
        let mut pb = head;
        while pb < head + order.pages() {
            let i = self
                .pageblock_index(pb)
                .expect("BUG: block outside the span");
            self.pageblocks[i].migratetype = mt;
            pb += g.pageblock_pages();
        }
    }

    fn mark_allocated(&mut self, head: Pfn, order: Order, migratetype: MigrateType) {
        let block = self.frames.materialise_block(head, order.pages());
        for (offset, meta) in block.iter_mut().enumerate() {
            debug_assert!(meta.is_pristine(), "BUG: allocating a used frame");
            meta.set_state(if offset == 0 {
                FrameState::Allocated { order, migratetype }
            } else {
                FrameState::Tail {
                    head_offset: offset as u32,
                }
            });
        }
        block[0].refcount = 1;
        self.counters.allocated += order.pages();
        if self.pageblock_type(head) == MigrateType::Cma {
            self.counters.cma_allocated += order.pages();
        }
    }

    // ----- freeing ----------------------------------------------------------

    /// Frees the block of `2^order` frames headed by `pfn`, on CPU 0: see
    /// [`Self::free_on`].
    pub fn free(&mut self, pfn: Pfn, order: Order) -> Result<(), FreeError> {
        self.free_on(0, pfn, order)
    }

    /// Frees the block of `2^order` frames headed by `pfn` on `cpu`.
    ///
    /// Linux: `__free_pages()` once the last reference is gone ->
    /// `free_pages_prepare()` (bad page checks) -> `free_unref_page()` (the
    /// CPU's list, `pcp=on`) or `__free_one_page()`. The
    /// head may still hold the caller's own reference (`refcount` 1) or none;
    /// any other use (mappings, pins, other references, reserved tag storage,
    /// the MTE lock) is refused without changing anything.
    pub fn free_on(&mut self, cpu: usize, pfn: Pfn, order: Order) -> Result<(), FreeError> {
        self.allocated_block(pfn, order)?;
        let block = self
            .frames
            .block(pfn, order.pages())
            .expect("BUG: allocated block without metadata");
        for (offset, meta) in block.iter().enumerate() {
            let at = pfn + offset as u64;
            let bad = if meta.mapcount != 0 {
                Some(BadPage::Mapped {
                    mapcount: meta.mapcount,
                })
            } else if meta.pins != 0 {
                Some(BadPage::Pinned { pins: meta.pins })
            } else if meta.refcount > u32::from(offset == 0) {
                Some(BadPage::Referenced {
                    refcount: meta.refcount,
                })
            } else if meta.flags.contains(PageFlag::TagStorageReserved) {
                Some(BadPage::TagStorageReserved)
            } else if meta.flags.contains(PageFlag::MteLock) {
                Some(BadPage::MteLocked)
            } else {
                None
            };
            if let Some(bad) = bad {
                return Err(FreeError::BadPage { pfn: at, bad });
            }
        }
        for meta in self.frames.block_mut(pfn, order.pages()) {
            meta.reset();
        }
        self.counters.allocated -= order.pages();
        if self.pageblock_type(pfn) == MigrateType::Cma {
            self.counters.cma_allocated -= order.pages();
        }
        if self.pcp_free(cpu, pfn, order) {
            return Ok(());
        }
        // Linux free_one_page() -> split_large_buddy(): a block larger than a
        // pageblock is freed pageblock by pageblock when their lists differ
        // (some may be isolated), so each part lands on its own list.
        self.free_pieces(pfn, pfn + order.pages());
        Ok(())
    }

    /// Splits an allocated block into `2^order` order-0 allocations, each
    /// with one reference. Linux: `split_page()`.
    pub fn split(&mut self, pfn: Pfn, order: Order) -> Result<(), FreeError> {
        let migratetype = self.allocated_block(pfn, order)?;
        for meta in self.frames.block_mut(pfn, order.pages()).iter_mut().skip(1) {
            meta.set_state(FrameState::Allocated {
                order: Order::new(0),
                migratetype,
            });
            meta.refcount = 1;
        }
        self.frames
            .get_mut(pfn)
            .expect("BUG: head without metadata")
            .set_state(FrameState::Allocated {
                order: Order::new(0),
                migratetype,
            });
        Ok(())
    }

    /// Checks that `pfn` heads an allocated block of exactly `order`.
    fn allocated_block(&self, pfn: Pfn, order: Order) -> Result<MigrateType, FreeError> {
        let max = self.geometry().max_order();
        if order > max {
            return Err(FreeError::OrderTooLarge { order, max });
        }
        let status = self
            .frame_status(pfn)
            .ok_or(FreeError::NotPresent { pfn })?;
        match status {
            FrameStatus::Allocated {
                head,
                order: allocated,
                migratetype,
            } if head == pfn => {
                if allocated == order {
                    Ok(migratetype)
                } else {
                    Err(FreeError::WrongOrder {
                        pfn,
                        allocated,
                        given: order,
                    })
                }
            }
            status => Err(FreeError::NotAllocated { pfn, status }),
        }
    }

    // ----- free-list primitives ---------------------------------------------

    pub(crate) fn list(&self, order: Order, list: FreeList) -> &BlockRuns {
        &self.free_lists[usize::from(order.get())][list.index()]
    }

    /// Adds a free block at the head of its list (Linux `add_to_free_list()`).
    pub(crate) fn add_free(&mut self, head: Pfn, order: Order, list: FreeList) {
        self.add_free_at(head, order, list, End::Head);
    }

    /// Adds a free block at `end` of its list (only Linux's order tells the
    /// ends apart).
    pub(crate) fn add_free_at(&mut self, head: Pfn, order: Order, list: FreeList, end: End) {
        let inserted = self.free_lists[usize::from(order.get())][list.index()].insert_at(head, end);
        assert!(
            inserted,
            "BUG: free block {head} order {order} already on {list:?}"
        );
        self.counters.free[list.index()] += order.pages();
        self.chunks.freed(head, order);
    }

    pub(crate) fn del_free(&mut self, head: Pfn, order: Order, list: FreeList) {
        let removed = self.free_lists[usize::from(order.get())][list.index()].remove(head);
        assert!(
            removed,
            "BUG: free block {head} order {order} not on {list:?}"
        );
        self.counters.free[list.index()] -= order.pages();
        self.chunks.taken_out(head, order);
    }

    /// Linux `expand()`: of the block `head` of order `high`, keeps the lowest
    /// `2^low` frames and frees the upper halves onto `list`.
    fn expand(&mut self, head: Pfn, low: Order, high: Order, list: FreeList) {
        for o in (low.get()..high.get()).rev() {
            let o = Order::new(o);
            self.add_free(head + o.pages(), o, list);
        }
    }

    /// Linux `__free_one_page()` with `FPI_NONE`: puts a block whose frames
    /// are pristine on its pageblock's list, merging with free buddies where
    /// allowed; at the head of the list, or at the tail when a merge is
    /// likely (`buddy_merge_likely()`).
    pub(crate) fn free_one(&mut self, head: Pfn, order: Order) {
        self.free_one_to(head, order, None);
    }

    /// [`Self::free_one`]; `Some(End::Tail)` is `FPI_TO_TAIL`.
    pub(crate) fn free_one_to(&mut self, mut head: Pfn, mut order: Order, end: Option<End>) {
        let g = *self.geometry();
        let list = self.list_of(head).expect("BUG: freeing outside the span");
        while order < g.max_order() {
            let buddy = head.buddy(order);
            let Some(buddy_list) = self.list_of(buddy) else {
                break;
            };
            if order >= g.pageblock_order() && !FreeList::may_merge(list, buddy_list) {
                break;
            }
            if !self.list(order, buddy_list).contains(buddy) {
                break;
            }
            self.del_free(buddy, order, buddy_list);
            if buddy_list != list {
                // Linux: "Match buddy type. This ensures that an expand() down
                // the line puts the sub-blocks on the right freelists."
                let mt = list.migratetype().expect("BUG: merging an isolated block");
                self.change_pageblock_range(buddy, order, mt);
            }
            head = head.min(buddy);
            order = Order::new(order.get() + 1);
        }
        let end = end.unwrap_or_else(|| {
            if self.buddy_merge_likely(head, order) {
                End::Tail
            } else {
                End::Head
            }
        });
        self.add_free_at(head, order, list, end);
    }

    /// Linux `buddy_merge_likely()`: below `MAX_PAGE_ORDER - 1`, whether the
    /// buddy of the block of the next-higher order holding `head` is a free
    /// block of that order (on any list; per-CPU pages are not buddies).
    fn buddy_merge_likely(&self, head: Pfn, order: Order) -> bool {
        if self.list_order == FreeListOrder::Address
            || order.get() + 1 >= self.geometry().max_order().get()
        {
            return false;
        }
        let higher = Order::new(order.get() + 1);
        let higher_buddy = head.align_down(higher).buddy(higher);
        self.list_of(higher_buddy)
            .is_some_and(|list| self.list(higher, list).contains(higher_buddy))
    }

    /// Frees the pristine frames `[start, end)` as the largest aligned blocks
    /// that fit and whose pageblocks share one list (Linux
    /// `__free_pages_memory()`), each as [`Self::free_one`] does.
    pub(crate) fn free_pieces(&mut self, start: Pfn, end: Pfn) {
        self.free_pieces_to(start, end, None);
    }

    /// [`Self::free_pieces`]; `Some(End::Tail)` is `FPI_TO_TAIL`.
    pub(crate) fn free_pieces_to(&mut self, start: Pfn, end: Pfn, to: impl Into<Option<End>>) {
        let to = to.into();
        let g = *self.geometry();
        let mut pfn = start;
        while pfn < end {
            let mut order = (pfn.as_u64().trailing_zeros().min(63) as u8).min(g.max_order().get());
            while pfn + Order::new(order).pages() > end {
                order -= 1;
            }
            while order > g.pageblock_order().get() && !self.uniform_list(pfn, Order::new(order)) {
                order -= 1;
            }
            self.free_one_to(pfn, Order::new(order), to);
            pfn += Order::new(order).pages();
        }
    }

    /// Whether every pageblock of the block has the same list, and it is not
    /// Isolate (isolated blocks never span pageblocks).
    fn uniform_list(&self, head: Pfn, order: Order) -> bool {
        let g = self.geometry();
        let first = self.list_of(head);
        first != Some(FreeList::Isolate)
            && (1..order.pages() / g.pageblock_pages())
                .all(|i| self.list_of(head + i * g.pageblock_pages()) == first)
    }

    /// The free block holding `pfn`, as (head, order, list).
    pub(crate) fn find_free_block(&self, pfn: Pfn) -> Option<(Pfn, Order, FreeList)> {
        for o in self.geometry().max_order().and_below() {
            let head = pfn.align_down(o);
            let Some(list) = self.list_of(head) else {
                continue;
            };
            if self.list(o, list).contains(head) {
                return Some((head, o, list));
            }
        }
        None
    }

    // ----- pageblocks -------------------------------------------------------

    pub(crate) fn pageblock_index(&self, pfn: Pfn) -> Option<usize> {
        let pb = (pfn.as_u64() >> self.geometry().pageblock_order().get())
            .checked_sub(self.first_pageblock)?;
        let pb = usize::try_from(pb).ok()?;
        (pb < self.pageblocks.len()).then_some(pb)
    }

    /// The list free frames of `pfn`'s pageblock are on.
    pub(crate) fn list_of(&self, pfn: Pfn) -> Option<FreeList> {
        self.pageblock_index(pfn)
            .map(|i| self.pageblocks[i].free_list())
    }

    fn pageblock_type(&self, pfn: Pfn) -> MigrateType {
        self.pageblocks[self
            .pageblock_index(pfn)
            .expect("BUG: frame outside the span")]
        .migratetype
    }

    /// For starting from a recorded state (`Kernel::set_free_lists`):
    /// gives the pageblocks covering the `2^order` frames at `head` the
    /// type `mt` and moves the free blocks inside them to its list, as
    /// Linux's lists hold each free block on its pageblock's type. Isolated
    /// and CMA pageblocks are left alone; returns whether every covered
    /// pageblock has `mt` now.
    pub(crate) fn set_pageblock_type(&mut self, head: Pfn, order: Order, mt: MigrateType) -> bool {
        let g = *self.geometry();
        let pb_pages = g.pageblock_pages();
        let start = Pfn::new(head.as_u64() / pb_pages * pb_pages);
        // The pageblock holding a smaller block, or every pageblock of a
        // larger one (then `head` is aligned, so `start` is `head`).
        let end = (head + order.pages()).max(start + pb_pages);
        let mut all = true;
        let mut pb = start;
        while pb < end {
            let Some(i) = self.pageblock_index(pb) else {
                return false;
            };
            let block = self.pageblocks[i];
            if block.isolated || block.migratetype == MigrateType::Cma || mt == MigrateType::Cma {
                all &= block.migratetype == mt && !block.isolated;
            } else if block.migratetype != mt {
                let from = block.free_list();
                self.pageblocks[i].migratetype = mt;
                // Blocks up to pageblock order inside it; a larger block
                // headed here moves with it (its other pageblocks get the
                // same type in this loop).
                let mut moved = Vec::new();
                for o in 0..=g.max_order().get() {
                    let o = Order::new(o);
                    moved.extend(
                        self.list(o, from)
                            .heads_in(pb, pb + pb_pages)
                            .map(|h| (h, o)),
                    );
                }
                moved.sort_unstable();
                for (h, o) in moved {
                    self.del_free(h, o, from);
                    self.add_free_at(h, o, mt.into(), End::Tail);
                }
            }
            pb += pb_pages;
        }
        all
    }

    /// For starting from a recorded state: moves the free block of `order`
    /// at `head` to the head of its list. False when no such free block is
    /// there.
    pub(crate) fn free_block_to_head(&mut self, head: Pfn, order: Order) -> bool {
        match self.find_free_block(head) {
            Some((h, o, list)) if h == head && o == order => {
                self.del_free(head, order, list);
                self.add_free_at(head, order, list, End::Head);
                true
            }
            _ => false,
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::phys::check::PhysViolation;
    use crate::phys::layout::Region;

    /// Pages of 4 KiB, pageblocks of 4 frames, max order 3 (blocks of up to 8),
    /// sections of 16 frames: small enough to work every pfn out by hand.
    pub(crate) fn small_geometry() -> PhysGeometry {
        PhysGeometry::new(mte::PageGeometry::FOUR_K, Order::new(2), Order::new(3))
            .unwrap()
            .with_section_shift(4)
            .unwrap()
    }

    pub(crate) fn region(start: u64, count: u64, kind: RegionKind) -> Region {
        Region {
            range: PfnRange::new(Pfn::new(start), count),
            kind,
        }
    }

    /// DRAM [0, 32) and CMA [32, 48) on [`small_geometry`]: the machine
    /// the allocator, contiguous range and model tests work out by hand.
    pub(crate) fn small_layout() -> PhysLayout {
        PhysLayout::new(
            small_geometry(),
            vec![
                region(0, 32, RegionKind::Dram),
                region(32, 16, RegionKind::TagStorageCma),
            ],
        )
        .unwrap()
    }

    /// An allocator on [`small_layout`].
    pub(crate) fn small(cma_use: CmaUse) -> BuddyAllocator {
        BuddyAllocator::new(small_layout(), cma_use)
    }

    pub(crate) fn o(order: u8) -> Order {
        Order::new(order)
    }

    pub(crate) fn p(pfn: u64) -> Pfn {
        Pfn::new(pfn)
    }

    /// `count` frames from `start`.
    pub(crate) fn range(start: u64, count: u64) -> PfnRange {
        PfnRange::new(Pfn::new(start), count)
    }

    #[track_caller]
    pub(crate) fn assert_clean(a: &BuddyAllocator) {
        let v = a.check();
        assert!(v.is_empty(), "violations: {v:#?}");
    }

    #[test]
    fn boot_frees_everything_in_max_order_blocks() {
        let a = small(CmaUse::Balance);
        assert_clean(&a);
        // 32 DRAM frames = 4 order-3 blocks on Movable; 16 CMA = 2 on Cma.
        assert_eq!(a.free_blocks(o(3), FreeList::Movable), 4);
        assert_eq!(a.free_blocks(o(3), FreeList::Cma), 2);
        let s = a.stats();
        assert_eq!(s.dram_pages, 32);
        assert_eq!(s.cma_pages, 16);
        assert_eq!(s.free_pages, 48);
        assert_eq!(s.cma_free_pages, 16);
        assert_eq!(
            a.frame_status(p(13)),
            Some(FrameStatus::Free {
                head: p(8),
                order: o(3),
                list: FreeList::Movable
            })
        );
        assert_eq!(a.frame_status(p(48)), None);
        assert_eq!(
            a.frames.materialised_sections(),
            0,
            "boot touches no metadata"
        );
    }

    #[test]
    fn compaction_takes_one_free_frame_and_leaves_the_rest_free() {
        let mut a = small(CmaUse::Balance);
        assert!(a.take_free_frame(p(13)));
        assert_clean(&a);
        assert_eq!(
            a.frame_status(p(13)),
            Some(FrameStatus::Allocated {
                head: p(13),
                order: o(0),
                migratetype: MigrateType::Movable
            })
        );
        assert_eq!(a.stats().free_pages, 47);
        // The rest of its order-3 block: 8(o2) 12(o0) 14(o1).
        assert_eq!(
            a.frame_status(p(12)),
            Some(FrameStatus::Free {
                head: p(12),
                order: o(0),
                list: FreeList::Movable
            })
        );
        assert!(!a.take_free_frame(p(13)), "already taken");
        assert!(!a.take_free_frame(p(40)), "CMA is never a destination");
        assert!(!a.take_free_frame(p(48)), "a hole");
        a.free(p(13), o(0)).unwrap();
        assert_clean(&a);
        assert_eq!(a.free_blocks(o(3), FreeList::Movable), 4, "merged back");
    }

    #[test]
    fn alloc_within_takes_the_lowest_fit_inside_the_range() {
        let mut a = small(CmaUse::Balance);
        let user = AllocFlags::USER_TAGGED;
        // Frames 20..24 lie inside the free order-3 block at 16.
        assert_eq!(a.alloc_within(range(20, 4), o(1), user), Some(p(20)));
        assert_eq!(a.alloc_within(range(20, 4), o(1), user), Some(p(22)));
        assert_eq!(a.alloc_within(range(20, 4), o(1), user), None, "full");
        assert_clean(&a);
        assert_eq!(a.stats().free_pages, 44);
        // A range larger than the request: the lowest free block in it.
        assert_eq!(a.alloc_within(range(16, 8), o(0), user), Some(p(16)));
        // Never CMA, never misaligned or empty ranges.
        assert_eq!(a.alloc_within(range(32, 8), o(0), user), None);
        assert_eq!(a.alloc_within(range(1, 2), o(1), user), None);
        assert_eq!(a.alloc_within(range(0, 0), o(0), user), None);
        for pfn in [20, 22] {
            a.free(p(pfn), o(1)).unwrap();
        }
        a.free(p(16), o(0)).unwrap();
        assert_clean(&a);
        assert_eq!(a.free_blocks(o(3), FreeList::Movable), 4, "merged back");
    }

    #[test]
    fn ragged_regions_split_into_largest_aligned_buddies() {
        // Linux __free_pages_memory(): [3, 30) -> 3(o0) 4(o2) 8(o3) 16(o3)
        // 24(o2) 28(o1).
        let layout =
            PhysLayout::new(small_geometry(), vec![region(3, 27, RegionKind::Dram)]).unwrap();
        let a = BuddyAllocator::new(layout, CmaUse::Balance);
        assert_clean(&a);
        let blocks: Vec<(Pfn, u8)> = (0..=3)
            .flat_map(|ord| {
                a.list(o(ord), FreeList::Movable)
                    .iter()
                    .map(move |h| (h, ord))
                    .collect::<Vec<_>>()
            })
            .collect();
        let mut blocks = blocks;
        blocks.sort();
        assert_eq!(
            blocks,
            vec![
                (p(3), 0),
                (p(4), 2),
                (p(8), 3),
                (p(16), 3),
                (p(24), 2),
                (p(28), 1)
            ]
        );
        assert_eq!(a.stats().free_pages, 27);
    }

    #[test]
    fn alloc_takes_the_lowest_pfn_and_splits_upwards() {
        let mut a = small(CmaUse::Never);
        // Linux expand(): order-3 block at 0 split; 0 is returned, 1 (o0),
        // 2 (o1), 4 (o2) go back to Movable.
        assert_eq!(a.alloc(o(0), AllocFlags::USER), Ok(p(0)));
        assert_eq!(a.alloc(o(0), AllocFlags::USER), Ok(p(1)));
        assert_eq!(a.alloc(o(1), AllocFlags::USER), Ok(p(2)));
        assert_eq!(a.alloc(o(2), AllocFlags::USER), Ok(p(4)));
        assert_eq!(a.alloc(o(0), AllocFlags::USER), Ok(p(8)));
        assert_clean(&a);
        assert_eq!(a.frame(p(0)).unwrap().refcount, 1);
        assert_eq!(
            a.frame_status(p(6)),
            Some(FrameStatus::Allocated {
                head: p(4),
                order: o(2),
                migratetype: MigrateType::Movable
            })
        );
        assert_eq!(a.stats().allocated_pages, 9);
    }

    #[test]
    fn free_merges_buddies_back_to_max_order() {
        let mut a = small(CmaUse::Never);
        let x = a.alloc(o(0), AllocFlags::USER).unwrap();
        let y = a.alloc(o(0), AllocFlags::USER).unwrap();
        let z = a.alloc(o(1), AllocFlags::USER).unwrap();
        a.free(y, o(0)).unwrap();
        a.free(x, o(0)).unwrap();
        assert_eq!(a.free_blocks(o(1), FreeList::Movable), 1, "0 and 1 merged");
        a.free(z, o(1)).unwrap();
        assert_clean(&a);
        assert_eq!(a.free_blocks(o(3), FreeList::Movable), 4);
        assert_eq!(a.stats().free_pages, 48);
        // The freed frames' metadata is pristine again.
        assert!(a.frame(p(0)).unwrap().is_pristine());
    }

    #[test]
    fn free_rejects_wrong_blocks_and_bad_pages() {
        let mut a = small(CmaUse::Never);
        let x = a.alloc(o(1), AllocFlags::USER).unwrap();
        assert!(matches!(a.free(x, o(0)), Err(FreeError::WrongOrder { .. })));
        assert!(matches!(
            a.free(x + 1, o(0)),
            Err(FreeError::NotAllocated { .. })
        ));
        assert!(matches!(
            a.free(p(20), o(0)),
            Err(FreeError::NotAllocated { .. })
        ));
        assert!(matches!(
            a.free(p(100), o(0)),
            Err(FreeError::NotPresent { .. })
        ));
        assert!(matches!(
            a.free(x, o(9)),
            Err(FreeError::OrderTooLarge { .. })
        ));
        a.frame_mut(x).unwrap().mapcount = 1;
        assert_eq!(
            a.free(x, o(1)),
            Err(FreeError::BadPage {
                pfn: x,
                bad: BadPage::Mapped { mapcount: 1 }
            })
        );
        a.frame_mut(x).unwrap().mapcount = 0;
        a.frame_mut(x + 1)
            .unwrap()
            .flags
            .insert(PageFlag::TagStorageReserved);
        assert_eq!(
            a.free(x, o(1)),
            Err(FreeError::BadPage {
                pfn: x + 1,
                bad: BadPage::TagStorageReserved
            })
        );
        a.frame_mut(x + 1)
            .unwrap()
            .flags
            .remove(PageFlag::TagStorageReserved);
        a.frame_mut(x).unwrap().refcount = 2;
        assert!(matches!(
            a.free(x, o(1)),
            Err(FreeError::BadPage {
                bad: BadPage::Referenced { refcount: 2 },
                ..
            })
        ));
        a.frame_mut(x).unwrap().refcount = 0;
        a.free(x, o(1)).unwrap();
        assert!(matches!(
            a.frame_mut(x),
            Err(FrameAccessError::NotInUse { .. })
        ));
        assert_clean(&a);
    }

    #[test]
    fn split_makes_order_zero_allocations() {
        let mut a = small(CmaUse::Never);
        let x = a.alloc(o(2), AllocFlags::KERNEL).unwrap();
        a.split(x, o(2)).unwrap();
        assert_clean(&a);
        for i in [3, 1, 0, 2] {
            a.free(x + i, o(0)).unwrap();
        }
        assert_clean(&a);
        assert_eq!(a.stats().allocated_pages, 0);
    }

    #[test]
    fn cma_policy_prefer_takes_cma_first() {
        let mut a = small(CmaUse::Prefer);
        assert_eq!(a.alloc(o(0), AllocFlags::USER), Ok(p(32)));
        // Tagged and unmovable allocations never come from CMA.
        assert_eq!(a.alloc(o(0), AllocFlags::USER_TAGGED), Ok(p(0)));
        assert_eq!(a.stats().cma_data_pages, 1);
        assert_clean(&a);
    }

    #[test]
    fn cma_policy_balance_follows_linux() {
        let mut a = small(CmaUse::Balance);
        // 16 free CMA of 48 free: 16 > 24 is false, ordinary first.
        assert_eq!(a.alloc(o(0), AllocFlags::USER), Ok(p(0)));
        // Use up DRAM down to 15 free frames besides CMA: allocate 16 more.
        assert_eq!(a.alloc(o(3), AllocFlags::USER), Ok(p(8)));
        assert_eq!(a.alloc(o(3), AllocFlags::USER), Ok(p(16)));
        // Free: 7 (in [0,8)) + 8 ([24,32)) + 16 CMA = 31; 16 > 15: CMA first.
        assert_eq!(a.alloc(o(0), AllocFlags::USER), Ok(p(32)));
        // Free: 15 DRAM + 15 CMA = 30; 15 > 15 false: ordinary again.
        assert_eq!(a.alloc(o(0), AllocFlags::USER), Ok(p(1)));
        assert_clean(&a);
    }

    #[test]
    fn cma_is_a_fallback_when_ordinary_memory_runs_out() {
        for cma_use in [CmaUse::Balance, CmaUse::Prefer] {
            let mut a = small(cma_use);
            for _ in 0..4 {
                a.alloc(o(3), AllocFlags::KERNEL).unwrap();
            }
            // DRAM exhausted; movable untagged still fits in CMA.
            assert_eq!(a.alloc(o(3), AllocFlags::USER), Ok(p(32)));
            // Tagged and unmovable requests fail: CMA is never theirs.
            assert!(matches!(
                a.alloc(o(0), AllocFlags::USER_TAGGED),
                Err(AllocError::OutOfMemory { .. })
            ));
            assert!(a.alloc(o(0), AllocFlags::KERNEL).is_err());
            assert_clean(&a);
        }
        let mut a = small(CmaUse::Never);
        for _ in 0..4 {
            a.alloc(o(3), AllocFlags::USER).unwrap();
        }
        assert!(
            a.alloc(o(0), AllocFlags::USER).is_err(),
            "never: no data in CMA"
        );
        assert_eq!(a.stats().cma_free_pages, 16);
    }

    #[test]
    fn cma_fallback_comes_before_stealing() {
        // Linux __rmqueue(): native list, then CMA, then claim/steal.
        let mut a = small(CmaUse::Prefer);
        // Use 14 of the 16 CMA frames while preferring CMA: 32 (o3), 40 (o2),
        // 44 (o1); 46 (o1) stays free.
        assert_eq!(a.alloc(o(3), AllocFlags::USER), Ok(p(32)));
        assert_eq!(a.alloc(o(2), AllocFlags::USER), Ok(p(40)));
        assert_eq!(a.alloc(o(1), AllocFlags::USER), Ok(p(44)));
        a.set_cma_use(CmaUse::Balance);
        // [0, 8) becomes Unmovable (claim), the other DRAM blocks are used.
        assert_eq!(a.alloc(o(0), AllocFlags::KERNEL), Ok(p(0)));
        for expect in [8, 16, 24] {
            assert_eq!(a.alloc(o(3), AllocFlags::USER), Ok(p(expect)));
        }
        // Free: 7 Unmovable + 2 CMA. 2 > 9 / 2 is false, so CMA is not
        // first; Movable is empty; CMA comes before claiming from Unmovable.
        let mut never = a.clone();
        assert_eq!(a.alloc(o(1), AllocFlags::USER), Ok(p(46)));
        assert_clean(&a);
        // Under `never` the same request claims the Unmovable order-2 block
        // at 4 (current order 2 >= pageblock order: whole pageblock).
        never.set_cma_use(CmaUse::Never);
        assert_eq!(never.alloc(o(1), AllocFlags::USER), Ok(p(4)));
        assert_eq!(
            never.pageblock(p(4)).unwrap().migratetype,
            MigrateType::Movable
        );
        assert_clean(&never);
    }

    #[test]
    fn unmovable_request_claims_a_whole_movable_block() {
        let mut a = small(CmaUse::Never);
        // Linux __rmqueue_claim(): the largest Movable block (order 3, at 0)
        // is taken and both its pageblocks become Unmovable.
        assert_eq!(a.alloc(o(0), AllocFlags::KERNEL), Ok(p(0)));
        assert_eq!(
            a.pageblock(p(0)).unwrap().migratetype,
            MigrateType::Unmovable
        );
        assert_eq!(
            a.pageblock(p(4)).unwrap().migratetype,
            MigrateType::Unmovable
        );
        assert_eq!(a.pageblock(p(8)).unwrap().migratetype, MigrateType::Movable);
        // The rest of the block is on the Unmovable lists now.
        assert_eq!(a.free_pages_on(FreeList::Unmovable), 7);
        // A movable request does not touch those: it takes 8.
        assert_eq!(a.alloc(o(0), AllocFlags::USER), Ok(p(8)));
        // And the next unmovable one is served natively at 1.
        assert_eq!(a.alloc(o(0), AllocFlags::KERNEL), Ok(p(1)));
        assert_clean(&a);
    }

    #[test]
    fn movable_request_steals_without_claiming_small_blocks() {
        let mut a = small(CmaUse::Never);
        // Make the whole DRAM unmovable: four order-3 kernel allocations.
        let blocks: Vec<Pfn> = (0..4)
            .map(|_| a.alloc(o(3), AllocFlags::KERNEL).unwrap())
            .collect();
        assert_eq!(blocks, vec![p(0), p(8), p(16), p(24)]);
        // Free a single page of the first: split it into order-0 kernel pages.
        a.split(p(0), o(3)).unwrap();
        a.free(p(5), o(0)).unwrap();
        assert_eq!(a.free_pages_on(FreeList::Unmovable), 1);
        // A movable order-0 request: no Movable, no CMA (never); claim is not
        // tried below pageblock_order / 2 = 1 for movable requests, so it
        // steals frame 5 and its pageblock stays Unmovable.
        assert_eq!(a.alloc(o(0), AllocFlags::USER), Ok(p(5)));
        assert_eq!(
            a.pageblock(p(4)).unwrap().migratetype,
            MigrateType::Unmovable
        );
        assert_clean(&a);
    }

    #[test]
    fn merging_converts_movable_unmovable_but_never_crosses_into_cma() {
        // Max order 4: DRAM [0, 8) and CMA [8, 16) are order-3 buddies.
        let g = PhysGeometry::new(mte::PageGeometry::FOUR_K, Order::new(2), Order::new(4))
            .unwrap()
            .with_section_shift(4)
            .unwrap();
        let layout = PhysLayout::new(
            g,
            vec![
                region(0, 8, RegionKind::Dram),
                region(8, 8, RegionKind::TagStorageCma),
                region(16, 16, RegionKind::Dram),
            ],
        )
        .unwrap();
        let mut a = BuddyAllocator::new(layout, CmaUse::Never);
        // Linux never merges CMA with other types.
        assert_eq!(a.free_blocks(o(3), FreeList::Movable), 1);
        assert_eq!(a.free_blocks(o(3), FreeList::Cma), 1);
        assert_eq!(a.free_blocks(o(4), FreeList::Movable), 1);
        // A kernel order-3 request claims the order-4 block [16, 32): its four
        // pageblocks become Unmovable, [24, 32) stays free on Unmovable.
        assert_eq!(a.alloc(o(3), AllocFlags::KERNEL), Ok(p(16)));
        assert_eq!(a.alloc(o(3), AllocFlags::USER), Ok(p(0)));
        // No Movable left: the next movable request claims [24, 32) back.
        assert_eq!(a.alloc(o(3), AllocFlags::USER), Ok(p(24)));
        assert_eq!(
            a.pageblock(p(16)).unwrap().migratetype,
            MigrateType::Unmovable
        );
        assert_eq!(
            a.pageblock(p(24)).unwrap().migratetype,
            MigrateType::Movable
        );
        a.free(p(16), o(3)).unwrap();
        // Freeing [24, 32) merges with the Unmovable buddy [16, 24), whose
        // pageblocks take the freed block's type (Linux __free_one_page():
        // "Match buddy type").
        a.free(p(24), o(3)).unwrap();
        assert_eq!(a.free_blocks(o(4), FreeList::Movable), 1);
        assert_eq!(
            a.pageblock(p(16)).unwrap().migratetype,
            MigrateType::Movable
        );
        // Freeing [0, 8) next to the free CMA block [8, 16) does not merge.
        a.free(p(0), o(3)).unwrap();
        assert_eq!(a.free_blocks(o(3), FreeList::Movable), 1);
        assert_eq!(a.free_blocks(o(3), FreeList::Cma), 1);
        assert_clean(&a);
    }

    #[test]
    fn frame_mut_only_for_frames_in_use() {
        let mut a = small(CmaUse::Never);
        assert!(matches!(
            a.frame_mut(p(3)),
            Err(FrameAccessError::NotInUse { .. })
        ));
        assert!(matches!(
            a.frame_mut(p(99)),
            Err(FrameAccessError::NotPresent { .. })
        ));
        let x = a.alloc(o(0), AllocFlags::USER).unwrap();
        a.frame_mut(x).unwrap().owner = crate::phys::Owner::new(7);
        assert_eq!(a.frame(x).unwrap().owner.unwrap().get(), 7);
    }

    /// An allocator on [`small_layout`] with Linux's list order.
    fn linux(cma_use: CmaUse) -> BuddyAllocator {
        let mut a = small(cma_use);
        a.set_free_list_order(FreeListOrder::Linux);
        a
    }

    /// Six order-0 pages 0..6 off a fresh allocator: the order-3 block at
    /// 0 is split (expand: 4 (o2), 2 (o1), 1 (o0) at the heads), then 4 is
    /// split (6 (o1), 5 (o0)); 6 and 7 stay free as an order-1 block.
    fn six_pages(a: &mut BuddyAllocator) {
        let got: Vec<Pfn> = (0..6)
            .map(|_| a.alloc(o(0), AllocFlags::USER).unwrap())
            .collect();
        assert_eq!(got, (0..6).map(p).collect::<Vec<_>>());
    }

    #[test]
    fn linux_order_boots_in_address_order() {
        let mut a = linux(CmaUse::Never);
        assert_clean(&a);
        // memblock_free_all() frees to the tail, lowest first.
        assert_eq!(
            a.free_list_heads(o(3), FreeList::Movable),
            vec![p(0), p(8), p(16), p(24)]
        );
        six_pages(&mut a);
        assert_eq!(a.free_list_order(), FreeListOrder::Linux);
        assert_clean(&a);
    }

    #[test]
    fn linux_order_hands_out_the_page_freed_last() {
        for order in [FreeListOrder::Address, FreeListOrder::Linux] {
            let mut a = small(CmaUse::Never);
            a.set_free_list_order(order);
            six_pages(&mut a);
            // Neither 1 nor 3 merges (0 and 2 are in use) or is likely to
            // (the order-1 buddies [2, 4) and [0, 2) are in use): both go
            // to the head.
            a.free(p(1), o(0)).unwrap();
            a.free(p(3), o(0)).unwrap();
            assert_clean(&a);
            let next: Vec<Pfn> = (0..2)
                .map(|_| a.alloc(o(0), AllocFlags::USER).unwrap())
                .collect();
            match order {
                // Lowest first.
                FreeListOrder::Address => assert_eq!(next, vec![p(1), p(3)]),
                // LIFO: the page freed last is the next one handed out.
                FreeListOrder::Linux => assert_eq!(next, vec![p(3), p(1)]),
            }
        }
    }

    #[test]
    fn linux_order_puts_a_block_likely_to_merge_at_the_tail() {
        let mut a = linux(CmaUse::Never);
        six_pages(&mut a);
        a.free(p(1), o(0)).unwrap();
        // 4's buddy 5 is in use, but the buddy of [4, 6) is the free
        // order-1 block at 6: buddy_merge_likely(), so 4 goes to the tail.
        a.free(p(4), o(0)).unwrap();
        // 3: no free order-1 buddy ([0, 2) is in use): the head.
        a.free(p(3), o(0)).unwrap();
        assert_eq!(
            a.free_list_heads(o(0), FreeList::Movable),
            vec![p(3), p(1), p(4)]
        );
        assert_clean(&a);
        // Freeing 5 merges 4, 5 and 6, 7 into the order-2 block at 4.
        a.free(p(5), o(0)).unwrap();
        assert_eq!(a.free_list_heads(o(0), FreeList::Movable), vec![p(3), p(1)]);
        assert_eq!(a.free_list_heads(o(2), FreeList::Movable), vec![p(4)]);
        assert_clean(&a);
    }

    #[test]
    fn linux_order_undoes_an_isolation_to_the_tail() {
        let mut a = linux(CmaUse::Never);
        // Isolating pageblock [8, 12) splits the order-3 block at 8; undoing
        // it merges the block again and puts it at the tail
        // (__putback_isolated_page(), FPI_TO_TAIL).
        let iso = a.isolate_range(range(8, 4)).unwrap();
        assert_clean(&a);
        a.undo_isolate_range(iso);
        assert_clean(&a);
        assert_eq!(
            a.free_list_heads(o(3), FreeList::Movable),
            vec![p(0), p(16), p(24), p(8)]
        );
        let got: Vec<Pfn> = (0..4)
            .map(|_| a.alloc(o(3), AllocFlags::USER).unwrap())
            .collect();
        assert_eq!(got, vec![p(0), p(16), p(24), p(8)]);
    }

    #[test]
    fn the_checker_reports_a_list_order_out_of_step() {
        let mut a = small(CmaUse::Never);
        // The allocator says Linux, the lists keep no order.
        a.list_order = FreeListOrder::Linux;
        let v = a.check();
        assert!(
            v.iter()
                .any(|v| matches!(v, PhysViolation::FreeListOrder { .. })),
            "{v:#?}"
        );
        a.set_free_list_order(FreeListOrder::Address);
        assert_clean(&a);
    }

    #[test]
    fn order_too_large_is_an_error() {
        let mut a = small(CmaUse::Never);
        assert_eq!(
            a.alloc(o(4), AllocFlags::USER),
            Err(AllocError::OrderTooLarge {
                order: o(4),
                max: o(3)
            })
        );
    }
}
