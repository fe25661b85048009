//! Allocation, tag storage reservation and freeing: the page allocator's
//! entry points as the kernel calls them (Linux `alloc_pages()`,
//! `__free_pages()`, and the RFC's `reserve_tag_storage()` /
//! `free_tag_storage()` hooked into `post_alloc_hook()` /
//! `free_pages_prepare()`).
//!
//! Owns [`Gfp`], [`TaggedPage`] and the errors [`ReserveTagError`],
//! [`MemFreeError`].
//!
//! Rules (RFC v3, "best effort" reservation):
//! - A tagged allocation (`__GFP_TAGGED`) never comes from CMA (tag storage
//!   has no tags of its own). Its tag storage is reserved right after the
//!   allocation; if that fails the page is returned anyway, without
//!   [`PageFlag::TagStorageReserved`], and the caller maps it awaiting tag
//!   storage (the fault path reserves again, or migrates the page).
//! - `__GFP_ZEROTAGS` zeroes tags and marks the page tagged only where tag
//!   storage is reserved (RFC v3 `tag_clear_highpage()` returns false
//!   otherwise and the caller falls back to clearing the data only).
//! - Freeing drops the block references of every frame marked reserved (a
//!   block left with none goes back to CMA at once) and clears the MTE flags.
//!   Like the RFC's `free_tag_storage()` it needs the manager, so a free of
//!   reserved frames waits for a reservation in progress; a free of frames
//!   without reserved tag storage never touches the lock.

use super::mover::PhysSource;
use super::{FrameMover, Memory, PageMover, TagStorageState};
use crate::phys::{AllocError, AllocFlags, FrameStatus, FreeError, Order, PageFlag};
use mte::{Pfn, PfnRange};
use tagstore::{BlockSource, ReserveAt, ReserveError, TagStorage, TaggedPlacement};
use thiserror::Error;
use uapi::event::Event;

/// Blocks whose reservation a tagged allocation tries under a design that
/// reserves inside the allocation ([`ReserveAt::InAllocation`], RFC v2), or
/// for a migration destination, before it returns a page without storage.
pub const PREP_NEW_PAGE_TRIES: u32 = 16;

/// The most pages held aside by that search.
pub const PREP_NEW_PAGE_HELD: u64 = 4096;

/// What an allocation asks for. Linux: the GFP flags that matter here.
#[derive(Clone, Copy, PartialEq, Eq, Debug, Default)]
pub struct Gfp {
    /// `__GFP_MOVABLE`: migration may move the page (user memory).
    pub movable: bool,
    /// The RFC's `__GFP_TAGGED`: the page will be mapped with `PROT_MTE`, so it
    /// never comes from CMA (tag storage).
    pub tagged: bool,
    /// `__GFP_ZERO`: zero the contents.
    pub zero: bool,
    /// `__GFP_ZEROTAGS`: zero the tags and mark the page tagged (only where
    /// tag storage is reserved: see the module documentation).
    pub zero_tags: bool,
    /// A page the kernel itself owns (page tables, ...): unmovable whatever
    /// `movable` says, marked [`PageFlag::Kernel`], never migrated.
    pub kernel: bool,
}

impl Gfp {
    /// `GFP_KERNEL`.
    pub const KERNEL: Self = Self {
        movable: false,
        tagged: false,
        zero: false,
        zero_tags: false,
        kernel: true,
    };
    /// `GFP_HIGHUSER_MOVABLE`.
    pub const USER: Self = Self {
        movable: true,
        tagged: false,
        zero: false,
        zero_tags: false,
        kernel: false,
    };
    /// `GFP_HIGHUSER_MOVABLE | __GFP_ZERO`: an anonymous page.
    pub const USER_ZERO: Self = Self {
        zero: true,
        ..Self::USER
    };
    /// `GFP_HIGHUSER_MOVABLE | __GFP_ZERO | __GFP_ZEROTAGS | __GFP_TAGGED`:
    /// an anonymous page of a `VM_MTE` mapping (Linux
    /// `vma_alloc_zeroed_movable_folio()` with the RFC's flag).
    pub const USER_TAGGED: Self = Self {
        movable: true,
        tagged: true,
        zero: true,
        zero_tags: true,
        kernel: false,
    };

    /// The allocator's view of the request.
    pub fn alloc_flags(self) -> AllocFlags {
        AllocFlags {
            movable: self.movable && !self.kernel,
            tagged: self.tagged,
        }
    }
}

/// A tagged allocation and how its best-effort reservation went.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TaggedPage {
    pub pfn: Pfn,
    pub order: Order,
    /// `Ok` when every frame has its tag storage reserved
    /// ([`PageFlag::TagStorageReserved`]); otherwise why not, and the page
    /// must be mapped awaiting tag storage.
    pub reservation: Result<(), ReserveTagError>,
}

impl TaggedPage {
    pub fn reserved(&self) -> bool {
        self.reservation.is_ok()
    }
}

/// Why the tag storage of some frames was not reserved. Nothing changed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Error)]
pub enum ReserveTagError {
    /// The frames must be allocated (the caller holds them).
    #[error("frame {pfn} is not allocated ({status:?})")]
    NotInUse {
        pfn: Pfn,
        status: Option<FrameStatus>,
    },
    /// Some frames of the range have tag storage reserved and some do not
    /// (the range straddles two allocations reserved separately).
    #[error("frames {pfn} order {order}: only some have tag storage reserved")]
    PartlyReserved { pfn: Pfn, order: Order },
    /// The manager refused or a block could not be claimed; see
    /// [`ReserveError::is_transient`].
    #[error(transparent)]
    TagStorage(#[from] ReserveError),
}

impl ReserveTagError {
    /// Whether trying again later may succeed (the last claim failed
    /// transiently).
    pub fn is_transient(&self) -> bool {
        matches!(self, Self::TagStorage(e) if e.is_transient())
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Error)]
pub enum MemFreeError {
    /// Linux never frees the zero page (`put_page()` ignores it).
    #[error("the zero page {pfn} is never freed")]
    ZeroPage { pfn: Pfn },
    #[error(transparent)]
    Phys(#[from] FreeError),
}

/// How a tagged allocation in held storage ended.
enum HeldAlloc {
    /// Frames whose storage the design holds.
    Got(Pfn),
    /// None fitted: the allocator chooses, the design reserves after.
    Anywhere,
    /// None fitted and the design has no fallback.
    Refused,
}

/// How many frames of a range have their tag storage reserved.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Reservation {
    None,
    All,
    Partly,
}

impl Memory {
    /// Allocates `2^order` frames. Synchronous: nothing is reserved here,
    /// even for a tagged request (an atomic-context allocation: the page is
    /// mapped awaiting tag storage); use [`Self::alloc_tagged`] to reserve.
    /// `zero_tags` is therefore not honoured here (no reserved storage).
    ///
    /// Linux: `alloc_pages()`; `kernel` pages get `PG_reserved`-like
    /// [`PageFlag::Kernel`] on every frame.
    ///
    /// A might-sleep point (`docs/model.md` §4, invariant 9): Linux's
    /// allocator calls `might_sleep_if(gfpflags_allow_blocking())`, and every
    /// allocation the model makes through here may enter direct reclaim or
    /// compaction in Linux. Page tables, which Linux allocates before taking
    /// the page-table lock and the model allocates lazily at the store, use
    /// [`Self::alloc_atomic`].
    pub fn alloc(&self, order: Order, gfp: Gfp) -> Result<Pfn, AllocError> {
        self.sched
            .might_sleep("allocates memory (may reclaim or migrate)");
        self.alloc_atomic(order, gfp)
    }

    /// [`Self::alloc`] without the might-sleep point: for the page-table
    /// frames the model allocates while the page-table lock is held (see
    /// there).
    pub fn alloc_atomic(&self, order: Order, gfp: Gfp) -> Result<Pfn, AllocError> {
        let mut phys = self.phys.borrow_mut();
        let pfn = phys.alloc.alloc_on(self.cpu(), order, gfp.alloc_flags())?;
        for frame in (0..order.pages()).map(|i| pfn + i) {
            if gfp.kernel {
                phys.alloc
                    .frame_mut(frame)
                    .expect("BUG: frame just allocated")
                    .flags
                    .insert(PageFlag::Kernel);
            }
            if gfp.zero {
                phys.contents
                    .zero_page(frame)
                    .expect("BUG: allocated frame is present");
            }
        }
        Ok(pfn)
    }

    /// Takes the free frame `pfn` of a movable pageblock as an order-0
    /// user page (nothing zeroed, nothing reserved): a destination of the
    /// compaction free scanner. `false` if the frame is not such a free
    /// frame. Linux: `isolate_freepages_block()`.
    pub fn take_free_frame(&self, pfn: Pfn) -> bool {
        self.phys.borrow_mut().alloc.take_free_frame(pfn)
    }

    /// Takes the free frame `pfn` whatever its pageblock (not an isolated
    /// one) as an order-0 page; `false` if it is not free. See
    /// `phys`'s `take_any_free_frame`.
    pub(crate) fn take_any_free_frame(&self, pfn: Pfn) -> bool {
        self.phys.borrow_mut().alloc.take_any_free_frame(pfn)
    }

    /// A tagged allocation with best-effort reservation (RFC v3
    /// `post_alloc_hook()` -> `reserve_tag_storage()`, result ignored;
    /// under RFC v2's rule a page whose reservation fails is given back and
    /// the next one tried, see [`Self::search_reservable`]):
    /// allocates outside CMA, reserves the tag storage of every frame with
    /// `mover` moving whatever data the claimed blocks hold, and, if that
    /// worked and `gfp.zero_tags`, zeroes the tags and marks the frames
    /// tagged. The page is returned even when the reservation fails.
    pub async fn alloc_tagged<M: PageMover>(
        &self,
        order: Order,
        gfp: Gfp,
        mover: &mut M,
    ) -> Result<TaggedPage, AllocError> {
        let gfp = Gfp {
            tagged: true,
            kernel: false,
            ..gfp
        };
        let pfn = match self.policy.rules().tagged_placement {
            TaggedPlacement::Anywhere => self.alloc(order, gfp)?,
            TaggedPlacement::HeldStorage => {
                match self.alloc_in_held_storage(order, gfp, mover).await {
                    HeldAlloc::Got(pfn) => pfn,
                    HeldAlloc::Anywhere => self.alloc(order, gfp)?,
                    // The design has no last resort (`google-fallback=none`):
                    // out of memory, whatever the other lists hold.
                    HeldAlloc::Refused => {
                        self.sched
                            .might_sleep("allocates memory (may reclaim or migrate)");
                        return Err(AllocError::OutOfMemory {
                            order,
                            flags: gfp.alloc_flags(),
                        });
                    }
                }
            }
        };
        let reservation = self.reserve_tag_storage(pfn, order, mover).await;
        let (pfn, reservation) =
            if reservation.is_err() && self.rules.reserve_at == ReserveAt::InAllocation {
                // RFC v2 `arch_prep_new_page()`: the page goes back to the
                // buddy allocator and the allocator tries the next one.
                self.search_reservable(pfn, reservation, order, gfp, mover)
                    .await
            } else {
                (pfn, reservation)
            };
        if reservation.is_ok() && gfp.zero_tags {
            self.clear_tags_of_new_page(pfn, order);
        }
        Ok(TaggedPage {
            pfn,
            order,
            reservation,
        })
    }

    /// A tagged allocation from the frames whose tag storage the design
    /// holds ([`TaggedPlacement::HeldStorage`]): the design's runs, best
    /// first; if none has a free fitting block, the design's inline refill
    /// (which may claim and migrate, under `tag_blocks_lock`) and the runs
    /// again; then, if the design has a refill thread, wake it and wait for
    /// its passes (`refill`) while they make progress. `None` when even
    /// then nothing fits: the caller falls back to the allocator's own
    /// choice and the design's reservation of it, if the design allows
    /// ([`tagstore::TagStorage::falls_back_anywhere`]).
    async fn alloc_in_held_storage<M: PageMover>(
        &self,
        order: Order,
        gfp: Gfp,
        mover: &mut M,
    ) -> HeldAlloc {
        {
            let mut state = self.tag_storage.lock().await;
            let TagStorageState { manager, claimed } = &mut *state;
            let mut source = PhysSource::new(self, mover, claimed);
            if let Some(pfn) = self.place_in_held(&**manager, order, &source, gfp) {
                return HeldAlloc::Got(pfn);
            }
            let changed = manager.refill(order, &mut source).await;
            self.tag_counters.set(manager.counters());
            if changed && let Some(pfn) = self.place_in_held(&**manager, order, &source, gfp) {
                drop(state);
                self.nudge_refill_thread();
                return HeldAlloc::Got(pfn);
            }
            if !manager.has_refill_thread() {
                drop(state);
                return self.held_fallback().await;
            }
            if !manager.waits_for_refill_thread() {
                // The thread works asynchronously; this request takes the
                // design's fallback at once.
                drop(state);
                self.wake_refill_thread(order);
                return self.held_fallback().await;
            }
            if !self.refill_thread_in_run() {
                // No thread task beside this one (the memory layer on its
                // own): run the thread's passes here.
                for _ in 0..super::refill::MAX_REFILL_WAITS {
                    let progress = manager.refill_thread(Some(order), &mut source).await;
                    self.tag_counters.set(manager.counters());
                    if let Some(pfn) = self.place_in_held(&**manager, order, &source, gfp) {
                        return HeldAlloc::Got(pfn);
                    }
                    if !progress {
                        break;
                    }
                }
                drop(state);
                return self.held_fallback().await;
            }
        }
        for _ in 0..super::refill::MAX_REFILL_WAITS {
            let progress = self.wait_for_refill(order).await;
            let mut state = self.tag_storage.lock().await;
            let TagStorageState { manager, claimed } = &mut *state;
            let source = PhysSource::new(self, mover, claimed);
            if let Some(pfn) = self.place_in_held(&**manager, order, &source, gfp) {
                return HeldAlloc::Got(pfn);
            }
            if !progress {
                break;
            }
        }
        self.held_fallback().await
    }

    /// Nothing fitted in held storage: whether the design lets the
    /// allocator choose instead.
    async fn held_fallback(&self) -> HeldAlloc {
        if self.tag_storage.lock().await.manager.falls_back_anywhere() {
            HeldAlloc::Anywhere
        } else {
            HeldAlloc::Refused
        }
    }

    /// Allocates `2^order` frames inside the first run of the design's
    /// [`tagstore::TagStorage::tagged_placement`] that has a free fitting
    /// block (the design may compute the runs lazily:
    /// [`tagstore::TagStorage::place_tagged`]).
    fn place_in_held(
        &self,
        manager: &dyn TagStorage,
        order: Order,
        source: &dyn BlockSource,
        gfp: Gfp,
    ) -> Option<Pfn> {
        manager.place_tagged(order, source, &mut |run| {
            self.alloc_in_runs(&[run], order, gfp)
        })
    }

    /// Allocates `2^order` frames inside the first of `runs` that has a
    /// free fitting block, prepared as [`Self::alloc`] prepares them.
    fn alloc_in_runs(&self, runs: &[PfnRange], order: Order, gfp: Gfp) -> Option<Pfn> {
        let mut phys = self.phys.borrow_mut();
        let pfn = runs
            .iter()
            .find_map(|&run| phys.alloc.alloc_within(run, order, gfp.alloc_flags()))?;
        for frame in (0..order.pages()).map(|i| pfn + i) {
            if gfp.zero {
                phys.contents
                    .zero_page(frame)
                    .expect("BUG: allocated frame is present");
            }
        }
        Some(pfn)
    }

    /// Frames of `pfns` free in the allocator (what a design asks through
    /// its `BlockSource`).
    pub(crate) fn free_frames_in(&self, pfns: PfnRange) -> u64 {
        self.phys.borrow().alloc.free_frames_in(pfns)
    }

    /// Whether every frame of `pfns` is free in the allocator: as
    /// `free_frames_in(pfns) == pfns.count`, answered at the first frame
    /// that is not.
    pub(crate) fn all_free_in(&self, pfns: PfnRange) -> bool {
        self.phys.borrow().alloc.all_free_in(pfns)
    }

    /// A tagged allocation whose tag storage is reserved if any page of a
    /// few blocks can have it: the destination of a page migrated because
    /// its own storage cannot be had (RFC v3 `replace_folio_with_tagged()`;
    /// a destination in the same unclaimable block would only move the
    /// problem). As [`Self::alloc_tagged`] otherwise.
    pub async fn alloc_tagged_reservable<M: PageMover>(
        &self,
        order: Order,
        gfp: Gfp,
        mover: &mut M,
    ) -> Result<TaggedPage, AllocError> {
        let gfp = Gfp {
            tagged: true,
            kernel: false,
            ..gfp
        };
        let pfn = self.alloc(order, gfp)?;
        let reservation = self.reserve_tag_storage(pfn, order, mover).await;
        let (pfn, reservation) = match reservation {
            Ok(()) => (pfn, reservation),
            Err(_) => {
                self.search_reservable(pfn, reservation, order, gfp, mover)
                    .await
            }
        };
        if reservation.is_ok() && gfp.zero_tags {
            self.clear_tags_of_new_page(pfn, order);
        }
        Ok(TaggedPage {
            pfn,
            order,
            reservation,
        })
    }

    /// After `first`'s reservation failed: takes further pages until one
    /// whose storage can be reserved, holding the pages refused so that the
    /// allocator hands out others (pages whose first block already failed
    /// are refused without a try). Gives up after
    /// [`PREP_NEW_PAGE_TRIES`] failed blocks, or [`PREP_NEW_PAGE_HELD`]
    /// pages held, or when memory runs out; the last page taken is then
    /// returned without storage (with the last failure, which may be a
    /// sibling's in the same block). The refused pages go back to the buddy
    /// allocator. (RFC v2 walks the zone's free lists; the bounds are the
    /// model's.)
    async fn search_reservable<M: PageMover>(
        &self,
        first: Pfn,
        first_result: Result<(), ReserveTagError>,
        order: Order,
        gfp: Gfp,
        mover: &mut M,
    ) -> (Pfn, Result<(), ReserveTagError>) {
        let mut failed_blocks = Vec::new();
        failed_blocks.extend(self.geometry.block_of(first));
        let (mut pfn, mut reservation) = (first, first_result);
        let mut refused = Vec::new();
        while (failed_blocks.len() as u32) < PREP_NEW_PAGE_TRIES
            && (refused.len() as u64) < PREP_NEW_PAGE_HELD
        {
            let Ok(next) = self.alloc(order, gfp) else {
                break;
            };
            refused.push(pfn);
            pfn = next;
            let block = self.geometry.block_of(pfn);
            if block.is_some_and(|b| failed_blocks.contains(&b)) {
                continue;
            }
            reservation = self.reserve_tag_storage(pfn, order, mover).await;
            if reservation.is_ok() {
                break;
            }
            failed_blocks.extend(block);
        }
        for page in refused {
            self.free(page, order)
                .await
                .expect("BUG: a page just allocated cannot be freed");
        }
        (pfn, reservation)
    }

    /// Linux `tag_clear_highpage()` on each frame of a new page whose tag
    /// storage is reserved: nobody else can see the page yet, so
    /// `try_page_mte_tagging()` cannot lose.
    fn clear_tags_of_new_page(&self, pfn: Pfn, order: Order) {
        for frame in (0..order.pages()).map(|i| pfn + i) {
            self.zero_tags(frame)
                .expect("BUG: an allocated frame is present");
            self.mark_tagged(frame);
        }
    }

    /// Reserves the tag storage of the allocated frames `[pfn, pfn +
    /// 2^order)`, claiming the blocks not yet reserved with
    /// `alloc_contig_range()` and `mover`, and marks every frame
    /// [`PageFlag::TagStorageReserved`]. Frames already reserved: nothing to
    /// do. All or nothing; on failure the bookkeeping is as before (the
    /// manager counts the failure).
    ///
    /// Linux (RFC): `reserve_tag_storage()`: `if (page_tag_storage_reserved())
    /// return 0`, then under `tag_blocks_lock` check again, reserve, and set
    /// `PG_tag_storage_reserved` on each page.
    pub async fn reserve_tag_storage<M: PageMover>(
        &self,
        pfn: Pfn,
        order: Order,
        mover: &mut M,
    ) -> Result<(), ReserveTagError> {
        match self.reservation(pfn, order)? {
            Reservation::All => return Ok(()),
            Reservation::Partly => return Err(ReserveTagError::PartlyReserved { pfn, order }),
            Reservation::None => {}
        }
        let mut state = self.tag_storage.lock().await;
        // Another CPU may have reserved the same frames while this one slept
        // on the lock.
        match self.reservation(pfn, order)? {
            Reservation::All => return Ok(()),
            Reservation::Partly => return Err(ReserveTagError::PartlyReserved { pfn, order }),
            Reservation::None => {}
        }
        let TagStorageState { manager, claimed } = &mut *state;
        let mut source = PhysSource::new(self, mover, claimed);
        let result = manager.reserve(pfn, order, &mut source).await;
        self.tag_counters.set(manager.counters());
        result?;
        let mut phys = self.phys.borrow_mut();
        for frame in (0..order.pages()).map(|i| pfn + i) {
            phys.alloc
                .frame_mut(frame)
                .unwrap_or_else(|e| panic!("BUG: frame freed while its tags were reserved: {e}"))
                .flags
                .insert(PageFlag::TagStorageReserved);
        }
        Ok(())
    }

    /// Linux `page_tag_storage_reserved()`.
    pub fn tag_storage_reserved(&self, pfn: Pfn) -> bool {
        self.phys
            .borrow()
            .alloc
            .frame(pfn)
            .is_some_and(|m| m.flags.contains(PageFlag::TagStorageReserved))
    }

    /// Validates that every frame of the range is allocated and says how many
    /// are reserved.
    fn reservation(&self, pfn: Pfn, order: Order) -> Result<Reservation, ReserveTagError> {
        let phys = self.phys.borrow();
        let mut reserved = 0;
        for frame in (0..order.pages()).map(|i| pfn + i) {
            let status = phys.alloc.frame_status(frame);
            if !matches!(status, Some(FrameStatus::Allocated { .. })) {
                return Err(ReserveTagError::NotInUse { pfn: frame, status });
            }
            let meta = phys
                .alloc
                .frame(frame)
                .expect("BUG: allocated frame without metadata");
            reserved += u64::from(meta.flags.contains(PageFlag::TagStorageReserved));
        }
        Ok(match reserved {
            0 => Reservation::None,
            n if n == order.pages() => Reservation::All,
            _ => Reservation::Partly,
        })
    }

    /// Frees the allocated block `pfn` of `order`: clears the MTE flags,
    /// gives the frames back to the allocator and drops the block references
    /// of the frames whose tag storage was reserved. Refused, changing
    /// nothing, if the block is still in use (mapped, pinned, referenced) or
    /// is the zero page.
    ///
    /// Linux: `__free_pages()` -> `free_pages_prepare()` ->
    /// `arch_free_pages_prepare()` -> `free_tag_storage()` (RFC).
    pub async fn free(&self, pfn: Pfn, order: Order) -> Result<(), MemFreeError> {
        if pfn == self.zero_page {
            return Err(MemFreeError::ZeroPage { pfn });
        }
        if !self.has_reserved_frames(pfn, order) {
            let released = self.free_frames(pfn, order)?;
            assert!(
                released.is_empty(),
                "BUG: reserved frames appeared without a switch point"
            );
            return Ok(());
        }
        let mut state = self.tag_storage.lock().await;
        let released = self.free_frames(pfn, order)?;
        let TagStorageState { manager, claimed } = &mut *state;
        let mut unused = FrameMover::default();
        let mut source = PhysSource::new(self, &mut unused, claimed);
        if released.len() as u64 == order.pages() {
            manager.release(pfn, order, &mut source);
        } else {
            for frame in released {
                manager.release(frame, Order::new(0), &mut source);
            }
        }
        self.tag_counters.set(manager.counters());
        Ok(())
    }

    /// Whether `pfn` heads an allocated block of `order` with a frame whose
    /// tag storage is reserved (false for anything else: the free itself then
    /// reports what is wrong).
    fn has_reserved_frames(&self, pfn: Pfn, order: Order) -> bool {
        let phys = self.phys.borrow();
        matches!(
            phys.alloc.frame_status(pfn),
            Some(FrameStatus::Allocated { head, order: o, .. }) if head == pfn && o == order
        ) && (0..order.pages()).any(|i| {
            phys.alloc
                .frame(pfn + i)
                .is_some_and(|m| m.flags.contains(PageFlag::TagStorageReserved))
        })
    }

    /// Clears the MTE flags and frees the block; on a refusal restores the
    /// flags. Returns the frames that had their tag storage reserved.
    fn free_frames(&self, pfn: Pfn, order: Order) -> Result<Vec<Pfn>, FreeError> {
        let mut phys = self.phys.borrow_mut();
        let is_head = matches!(
            phys.alloc.frame_status(pfn),
            Some(FrameStatus::Allocated { head, order: o, .. }) if head == pfn && o == order
        );
        if !is_head {
            // Not a block of this order: the allocator says why, unchanged.
            phys.alloc.free_on(self.cpu(), pfn, order)?;
            panic!("BUG: the allocator freed {pfn} order {order}, which is not such a block");
        }
        let mut saved = Vec::with_capacity(order.pages() as usize);
        for frame in (0..order.pages()).map(|i| pfn + i) {
            let meta = phys
                .alloc
                .frame_mut(frame)
                .expect("BUG: allocated frame without metadata");
            saved.push(meta.flags);
            meta.flags.remove(PageFlag::Tagged);
            meta.flags.remove(PageFlag::TagStorageReserved);
        }
        if let Err(e) = phys.alloc.free_on(self.cpu(), pfn, order) {
            for (i, flags) in saved.into_iter().enumerate() {
                phys.alloc
                    .frame_mut(pfn + i as u64)
                    .expect("BUG: a refused free changed the block")
                    .flags = flags;
            }
            return Err(e);
        }
        drop(phys);
        let tagged = saved
            .iter()
            .filter(|f| f.contains(PageFlag::Tagged))
            .count() as u64;
        self.bump(|e| e.pages_tagged -= tagged);
        Ok(saved
            .iter()
            .enumerate()
            .filter(|(_, f)| f.contains(PageFlag::TagStorageReserved))
            .map(|(i, _)| pfn + i as u64)
            .collect())
    }

    /// The CPU whose per-CPU page lists serve the running task (CPU 0
    /// outside a run); the allocator takes it modulo the machine's CPUs.
    pub(crate) fn cpu(&self) -> usize {
        self.sched.try_current_cpu().map_or(0, |c| c.index())
    }

    /// Sets [`PageFlag::Tagged`] on an allocated frame, counting it.
    pub(crate) fn mark_tagged(&self, pfn: Pfn) {
        let newly = {
            let mut phys = self.phys.borrow_mut();
            let meta = phys
                .alloc
                .frame_mut(pfn)
                .unwrap_or_else(|e| panic!("BUG: marking a frame not in use tagged: {e}"));
            let newly = !meta.flags.contains(PageFlag::Tagged);
            meta.flags.insert(PageFlag::Tagged);
            meta.flags.remove(PageFlag::MteLock);
            newly
        };
        if newly {
            self.bump(|e| e.pages_tagged += 1);
            self.trace.emit(|| Event::TagsInitialised { pfn });
        }
    }
}
