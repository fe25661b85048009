//! Moving pages out of tag blocks: the [`PageMover`] contract the layer above
//! fulfils (it knows the mappings), the built-in [`FrameMover`] for pages
//! nobody maps, the copy primitive [`Memory::migrate_block`] every migration
//! goes through, and the `BlockSource` the tag storage manager claims blocks
//! from.
//!
//! Claim path (Linux RFC: `reserve_tag_storage()` -> `cma_alloc_range()` ->
//! `alloc_contig_range()` -> `migrate_pages()`):
//! ```text
//!   Manager::reserve ─▶ PhysSource::claim(block) ─▶ phys::alloc_contig_range
//!        (tag_blocks_lock held)          │ each allocated block in the range
//!                                        ▼
//!                        PageMover::move_page(mem, pfn)  (mm: unmap, migrate_block, remap;
//!                                                         FrameMover: pages with no owner)
//! ```
//! A successful claim leaves its [`ClaimedRange`] token with the block; the
//! release gives the token back to the allocator (`cma_release()`).
//!
//! Failure classes (the source decides, `tagstore::source`): busy (another
//! isolation, migration failing transiently [`crate::phys::MIGRATE_TRIES`]
//! passes in a row) is transient and retried by the manager
//! ([`tagstore::CLAIM_ATTEMPTS`]); pinned, unmovable and out-of-memory are
//! permanent, as phys classifies them (Linux's `cma_alloc_range()` would retry
//! a pinned page's `-EBUSY` three times, failing each time).

use super::Memory;
use crate::phys::{
    AllocFlags, BusyCause, ClaimedRange, ContigError, FrameStatus, MigrateError, MigrateType,
    Migrator, Order, PageFlag, alloc_contig_range,
};
use core::future::Future;
use mte::TagBlock;
use mte::{Pfn, PfnRange};
use std::collections::BTreeMap;
use tagstore::{BlockSource, ClaimCause, ClaimError, LocalBoxFuture};
use uapi::event::{Event, ReserveFailure, ReserveHow};

/// Moves an allocated block out of a range being claimed for tags.
///
/// The implementation must: allocate a destination of the same order
/// outside tag storage (never CMA: a destination in another tag block would
/// only move the problem), move the page through
/// [`Memory::migrate_block`] (which copies data and tags, moves the
/// metadata, and counts), rewrite whatever maps the source, and free the
/// source with [`Memory::free`]. It must not hold a borrow of
/// [`Memory::phys`] across an `.await`, and it runs while `tag_blocks_lock`
/// is held, so it must not reserve tag storage itself.
///
/// Linux: `migrate_pages(..., MR_CONTIG_RANGE)` for one folio.
pub trait PageMover {
    fn move_page(
        &mut self,
        mem: &Memory,
        pfn: Pfn,
    ) -> impl Future<Output = Result<(), MigrateError>>;
}

/// Moves blocks that no page table maps (no [`crate::phys::Owner`], map count
/// 0): there is nothing to rewrite, only data to copy. A block with an owner
/// is refused as [`MigrateError::Unmovable`]: the layer that owns the
/// mappings must supply its own mover.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct FrameMover {
    /// Every move made, (source head, destination head), so that a caller
    /// holding frame numbers can follow its pages.
    pub moved: Vec<(Pfn, Pfn)>,
}

impl PageMover for FrameMover {
    async fn move_page(&mut self, mem: &Memory, pfn: Pfn) -> Result<(), MigrateError> {
        // Linux: the `migrate_pages()` loop reschedules between folios and
        // takes each folio's lock; another CPU may free or pin it meanwhile.
        mem.sched.preempt_point().await;
        if let Some(dst) = mem.migrate_unowned(pfn).await? {
            self.moved.push((pfn, dst));
        }
        Ok(())
    }
}

/// Allocation flags of a migration destination: movable and never CMA. The
/// allocator's `tagged` bit means exactly "not from CMA"; the destination is
/// not marked tagged and nothing is reserved for it by this.
const DESTINATION: AllocFlags = AllocFlags {
    movable: true,
    tagged: true,
};

impl Memory {
    /// Moves the unmapped block headed by `pfn` to a new block outside tag
    /// storage and frees the source; `Ok(None)` if `pfn` no longer heads an
    /// allocated block (freed or moved meanwhile).
    ///
    /// Refusals, as Linux's migration would fail: pinned -> `Pinned`; kernel
    /// or unmovable, or mapped/owned (this mover cannot rewrite mappings) ->
    /// `Unmovable`; an extra reference or the MTE lock held (Linux
    /// `folio_migrate_mapping()` expected-count check, `-EAGAIN`) -> `Busy`;
    /// no destination -> `NoMemory`.
    pub async fn migrate_unowned(&self, pfn: Pfn) -> Result<Option<Pfn>, MigrateError> {
        let order = {
            let phys = self.phys.borrow();
            let order = match phys.alloc.frame_status(pfn) {
                Some(FrameStatus::Allocated {
                    head,
                    order,
                    migratetype,
                }) if head == pfn => {
                    if migratetype == MigrateType::Unmovable {
                        return Err(MigrateError::Unmovable);
                    }
                    order
                }
                _ => return Ok(None),
            };
            for i in 0..order.pages() {
                let meta = phys
                    .alloc
                    .frame(pfn + i)
                    .expect("BUG: allocated frame without metadata");
                if meta.is_pinned() {
                    return Err(MigrateError::Pinned);
                }
                if meta.flags.contains(PageFlag::Kernel)
                    || meta.owner.is_some()
                    || meta.mapcount > 0
                {
                    return Err(MigrateError::Unmovable);
                }
                if meta.flags.contains(PageFlag::MteLock) || meta.refcount > u32::from(i == 0) {
                    return Err(MigrateError::Busy);
                }
            }
            order
        };
        let dst = self
            .phys
            .borrow_mut()
            .alloc
            .alloc(order, DESTINATION)
            .map_err(|_| MigrateError::NoMemory)?;
        self.migrate_block(pfn, dst, order);
        self.free(pfn, order)
            .await
            .unwrap_or_else(|e| panic!("BUG: a migrated source {pfn} did not free: {e}"));
        Ok(Some(dst))
    }

    /// Moves the page `src` into the freshly allocated block `dst` of the same
    /// order: copies the contents, and the tags of frames marked tagged (their
    /// destination frames become tagged); moves the reference and map counts
    /// and the owner. The source is left with the one reference its migrator
    /// holds and nothing else, ready to be freed. [`PageFlag::TagStorageReserved`]
    /// stays with the frames: a reservation is of the frame, not of the data.
    ///
    /// Counts `migrate.pages` by `2^order`, and `tag_storage.migrations` when
    /// `src` lies in tag storage and `dst` does not.
    ///
    /// Linux: `folio_migrate_mapping()` + `folio_migrate_copy()` (arm64
    /// `copy_highpage()` copies the tags of a `PG_mte_tagged` page and marks
    /// the destination) + `folio_migrate_flags()`.
    ///
    /// Panics (`BUG:`) if `src` or `dst` is not an allocated block of
    /// `order`, `src` is pinned or MTE-locked, or `dst` is not fresh.
    pub fn migrate_block(&self, src: Pfn, dst: Pfn, order: Order) {
        let mut tagged = Vec::new();
        {
            let mut phys = self.phys.borrow_mut();
            for (name, head) in [("source", src), ("destination", dst)] {
                match phys.alloc.frame_status(head) {
                    Some(FrameStatus::Allocated {
                        head: h, order: o, ..
                    }) if h == head && o == order => {}
                    status => panic!("BUG: migration {name} {head} order {order} is {status:?}"),
                }
            }
            for i in 0..order.pages() {
                let (s, d) = (src + i, dst + i);
                phys.contents
                    .copy_page(d, s)
                    .expect("BUG: allocated frames are present");
                let from = phys.alloc.frame_mut(s).expect("BUG: source in use");
                assert!(
                    !from.is_pinned() && !from.flags.contains(PageFlag::MteLock),
                    "BUG: migrating pinned or MTE-locked frame {s}: {from:?}"
                );
                let (refcount, mapcount, owner) = (from.refcount, from.mapcount, from.owner.take());
                let was_tagged = from.flags.contains(PageFlag::Tagged);
                from.refcount = u32::from(i == 0);
                from.mapcount = 0;
                from.flags.remove(PageFlag::Tagged);
                let to = phys.alloc.frame_mut(d).expect("BUG: destination in use");
                let fresh = to.refcount == u32::from(i == 0)
                    && to.mapcount == 0
                    && to.owner.is_none()
                    && !to.flags.contains(PageFlag::Tagged)
                    && !to.flags.contains(PageFlag::MteLock);
                assert!(fresh, "BUG: migration destination {d} is in use: {to:?}");
                to.refcount = refcount;
                to.mapcount = mapcount;
                to.owner = owner;
                if was_tagged {
                    to.flags.insert(PageFlag::Tagged);
                    tagged.push(i);
                }
            }
        }
        // The Tagged flag moved frame for frame: `pages.tagged` is unchanged.
        for i in tagged {
            self.copy_tags(dst + i, src + i)
                .expect("BUG: allocated frames are present");
        }
        let pages = order.pages();
        // Moved *out of* tag storage: a move between two tag storage frames
        // frees nothing for tags.
        let from_tag_storage =
            self.geometry.is_tag_storage(src) && !self.geometry.is_tag_storage(dst);
        self.bump(|e| {
            e.migrate_pages += pages;
            if from_tag_storage {
                e.tag_storage_migrations += pages;
            }
        });
    }
}

/// The kernel's side of the tag storage manager: claims blocks with
/// `alloc_contig_range()` and keeps their tokens. Linux: the CMA area of the
/// tag storage (`cma_alloc_range()`, `cma_release()`).
pub(crate) struct PhysSource<'a, M> {
    mem: &'a Memory,
    mover: &'a mut M,
    claimed: &'a mut BTreeMap<TagBlock, ClaimedRange>,
}

impl<'a, M> PhysSource<'a, M> {
    pub(crate) fn new(
        mem: &'a Memory,
        mover: &'a mut M,
        claimed: &'a mut BTreeMap<TagBlock, ClaimedRange>,
    ) -> Self {
        Self {
            mem,
            mover,
            claimed,
        }
    }
}

impl<M: PageMover> PhysSource<'_, M> {
    /// Linux `cma_alloc_range()` of one block: the RFC's fast path (RFC v3
    /// patch 10, "Fast track reserving tag storage when the block is
    /// free"): with `reserve-fast-path=on`, a one-page block whose page is
    /// free is taken straight off the buddy allocator; every other claim
    /// (and every claim with the knob off) goes through
    /// `alloc_contig_range()`, whose isolation and per-CPU drains cost
    /// Chrome's start-up 10-20% before the fast path. Each way is counted
    /// (`tag_storage.fast_path`, `tag_storage.contig`) and traced.
    async fn claim_now(&mut self, block: TagBlock, pfns: PfnRange) -> Result<(), ClaimError> {
        if self.mem.policy().rules().keeps_cleancache() {
            // The block's frames were never the allocator's: the claim drops
            // the clean copies they hold, with nothing to migrate or wait for.
            self.mem.cleancache_drop_range(pfns);
            self.mem.trace.emit(|| Event::TagReserve {
                block: block.index(),
                how: ReserveHow::FastPath,
            });
            return Ok(());
        }
        if self.mem.reserve_fast_path && pfns.count == 1 {
            let fast = self.mem.phys.borrow_mut().alloc.claim_free_range(pfns);
            if let Ok(claimed) = fast {
                self.mem.bump(|e| e.tag_storage_fast_path += 1);
                self.mem.trace.emit(|| Event::TagReserve {
                    block: block.index(),
                    how: ReserveHow::FastPath,
                });
                if let Some(old) = self.claimed.insert(block, claimed) {
                    panic!("BUG: {block:?} claimed twice ({old:?})");
                }
                return Ok(());
            }
        }
        self.mem.bump(|e| e.tag_storage_contig += 1);
        let mut migrator = Adapter {
            mem: self.mem,
            mover: &mut *self.mover,
        };
        let moved_before = self.mem.events.get().migrate_pages;
        let claimed = alloc_contig_range(&self.mem.phys, pfns, &mut migrator).await;
        let claimed = match claimed {
            Ok(claimed) => claimed,
            Err(e) => {
                let e = claim_error(e);
                self.mem.trace.emit(|| Event::TagReserve {
                    block: block.index(),
                    how: ReserveHow::Failed(match e.cause() {
                        ClaimCause::Busy => ReserveFailure::Busy,
                        ClaimCause::Pinned => ReserveFailure::Pinned,
                        ClaimCause::Unmovable => ReserveFailure::Unmovable,
                        ClaimCause::NoMemory => ReserveFailure::NoMemory,
                        ClaimCause::Interrupted => ReserveFailure::Interrupted,
                    }),
                });
                return Err(e);
            }
        };
        self.mem.trace.emit(|| {
            let migrated = self.mem.events.get().migrate_pages - moved_before;
            Event::TagReserve {
                block: block.index(),
                how: ReserveHow::Claimed { migrated },
            }
        });
        if let Some(old) = self.claimed.insert(block, claimed) {
            panic!("BUG: {block:?} claimed twice ({old:?})");
        }
        Ok(())
    }
}

impl<M: PageMover> BlockSource for PhysSource<'_, M> {
    fn claim<'a>(
        &'a mut self,
        block: TagBlock,
        pfns: PfnRange,
    ) -> LocalBoxFuture<'a, Result<(), ClaimError>> {
        Box::pin(self.claim_now(block, pfns))
    }

    fn evacuate<'a>(
        &'a mut self,
        pfns: PfnRange,
        avoid: &'a [PfnRange],
    ) -> LocalBoxFuture<'a, Result<(), ClaimError>> {
        Box::pin(self.evacuate_now(pfns, avoid))
    }

    fn release(&mut self, block: TagBlock, pfns: PfnRange) {
        if self.mem.policy().rules().keeps_cleancache() {
            // Back to the cleancache (its frames hold no copy now).
            self.mem.trace.emit(|| Event::TagRelease {
                block: block.index(),
            });
            return;
        }
        let claimed = self
            .claimed
            .remove(&block)
            .unwrap_or_else(|| panic!("BUG: releasing {block:?}, which was never claimed"));
        assert_eq!(
            claimed.range(),
            pfns,
            "BUG: {block:?} claimed with other frames"
        );
        let cpu = self.mem.cpu();
        self.mem
            .phys
            .borrow_mut()
            .alloc
            .return_range_on(cpu, claimed);
        self.mem.trace.emit(|| Event::TagRelease {
            block: block.index(),
        });
    }

    fn free_frames(&self, pfns: PfnRange) -> u64 {
        self.mem.free_frames_in(pfns)
    }

    fn all_free(&self, pfns: PfnRange) -> bool {
        self.mem.all_free_in(pfns)
    }
}

/// Lets a [`PageMover`] serve as phys's [`Migrator`].
struct Adapter<'a, M> {
    mem: &'a Memory,
    mover: &'a mut M,
}

impl<M: PageMover> Migrator for Adapter<'_, M> {
    async fn migrate(&mut self, pfn: Pfn) -> Result<(), MigrateError> {
        self.mover.move_page(self.mem, pfn).await
    }
}

/// A failed `alloc_contig_range()` in the manager's terms.
impl<M: PageMover> PhysSource<'_, M> {
    /// [`BlockSource::evacuate`]: the free frames of `pfns` and `avoid` are
    /// taken first (so that no destination lands inside), then each allocated block is
    /// moved by the mover (`migrate.pages` counts them), then the frames
    /// taken are freed again. Linux has no such call; Google's spec leaves
    /// the compaction's mechanism open (`docs/designs.md`, "google").
    async fn evacuate_now(&mut self, pfns: PfnRange, avoid: &[PfnRange]) -> Result<(), ClaimError> {
        let mut held: Vec<Pfn> = core::iter::once(pfns)
            .chain(avoid.iter().copied())
            .flat_map(|range| range.iter())
            .filter(|&pfn| self.mem.take_any_free_frame(pfn))
            .collect();
        let mut result = Ok(());
        for pfn in pfns.iter() {
            let order = match self.mem.phys.borrow().alloc.frame_status(pfn) {
                Some(FrameStatus::Allocated { head, order, .. }) if head == pfn => order,
                _ => continue,
            };
            if held.contains(&pfn) {
                continue;
            }
            if let Err(e) = self.mover.move_page(self.mem, pfn).await {
                let cause = match e {
                    MigrateError::Busy => ClaimCause::Busy,
                    MigrateError::Pinned => ClaimCause::Pinned,
                    MigrateError::Unmovable => ClaimCause::Unmovable,
                    MigrateError::NoMemory => ClaimCause::NoMemory,
                };
                let pfn = Some(pfn);
                result = Err(if cause == ClaimCause::Busy {
                    ClaimError::Transient { cause, pfn }
                } else {
                    ClaimError::Permanent { cause, pfn }
                });
                break;
            }
            // The source is free now: hold its frames too, or the next
            // page's destination could be one of them.
            held.extend(
                (0..order.pages())
                    .map(|i| pfn + i)
                    .filter(|&f| pfns.contains(f) && self.mem.take_any_free_frame(f)),
            );
        }
        for pfn in held {
            self.mem.free(pfn, Order::new(0)).await.unwrap_or_else(|e| {
                panic!("BUG: a frame held by compaction {pfn} did not free: {e}")
            });
        }
        result
    }
}

fn claim_error(e: ContigError) -> ClaimError {
    match e {
        ContigError::InvalidRange { range, source } => {
            panic!("BUG: tag block frames {range:?} are not a valid range: {source}")
        }
        ContigError::Busy { cause, .. } => ClaimError::Transient {
            cause: ClaimCause::Busy,
            pfn: Some(match cause {
                BusyCause::Isolated { pageblock } => pageblock,
                BusyCause::MigrationFailed { pfn, .. } => pfn,
            }),
        },
        ContigError::Pinned { pfn, .. } => ClaimError::Permanent {
            cause: ClaimCause::Pinned,
            pfn: Some(pfn),
        },
        ContigError::Unmovable { pfn, .. } => ClaimError::Permanent {
            cause: ClaimCause::Unmovable,
            pfn: Some(pfn),
        },
        ContigError::NoMemory { pfn, .. } => ClaimError::Permanent {
            cause: ClaimCause::NoMemory,
            pfn: Some(pfn),
        },
    }
}
