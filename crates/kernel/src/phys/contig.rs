//! Contiguous range allocation: Linux `alloc_contig_range()` as an `async`
//! function, because migration is interleavable kernel code in the simulated
//! kernel (it sleeps in Linux).
//!
//! Owns: [`alloc_contig_range`], the [`Migrator`] contract and the errors
//! [`MigrateError`], [`ContigError`].
//!
//! Steps (Linux `alloc_contig_range()` in `mm/page_alloc.c`):
//! 1. A range with an isolated pageblock fails at once (busy). The RFC's
//!    fast path (a free one-page block taken straight off the buddy
//!    allocator, `reserve-fast-path=on`) is the caller's, before this is
//!    called (`mem::mover`): this is the path it avoids.
//! 2. `start_isolate_page_range()`: isolate the pageblocks; a frame known
//!    never to move fails the call now.
//! 3. `__alloc_contig_migrate_range()`: migrate every allocated block of the
//!    range away, pass after pass; a pass that frees nothing counts as a
//!    failed try, and [`MIGRATE_TRIES`] failed tries in a row give up with
//!    [`ContigError::Busy`] (Linux gives up after 5 tries on the same batch).
//! 4. `test_pages_isolated()` + `isolate_freepages_range()`: take the frames.
//! 5. `undo_isolate_page_range()`: always, success or failure.
//!
//! No borrow of the [`PhysMem`] is held across an `.await`: the migrator
//! borrows it itself (to allocate a destination, copy, and free the source),
//! and other simulated CPUs may run between steps. Dropping the future before
//! it completes undoes the isolation (a drop guard), so a cancelled call
//! leaves no pageblock isolated.
//!
//! After isolating, the per-CPU page lists are drained (Linux
//! `drain_all_pages()`, `pcp=on`): their blocks of the range go to the
//! isolation list and can be taken. No `lru_add_drain_all()`: the model has
//! no LRU caches (its cost is the kernel layer's, `lru-disable-ipi`).

use crate::phys::PhysMem;
use crate::phys::buddy::FrameStatus;
use crate::phys::isolate::{
    ClaimError, ClaimedRange, IsolateError, IsolatedRange, RangeError, UnmovableCause,
};
use core::cell::RefCell;
use core::future::Future;
use mte::{Pfn, PfnRange};
use thiserror::Error;

/// Failed migration passes in a row before giving up (Linux
/// `__alloc_contig_migrate_range()`: `if (++tries == 5) ret = -EBUSY`).
pub const MIGRATE_TRIES: u32 = 5;

/// Moves allocated blocks out of a range being claimed.
pub trait Migrator {
    /// Moves the allocated block headed by `pfn`: allocate a destination of
    /// the same order from the same allocator (isolation keeps it outside the
    /// range), copy contents and metadata, repoint the owners, and free the
    /// source. Must not hold a borrow of the allocator across an `.await`.
    ///
    /// Linux: `migrate_pages(..., MR_CONTIG_RANGE)` for one folio.
    fn migrate(&mut self, pfn: Pfn) -> impl Future<Output = Result<(), MigrateError>>;
}

/// Why one block could not be migrated.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Error)]
pub enum MigrateError {
    /// Transient: locked, under writeback, an extra reference held briefly
    /// (Linux `-EAGAIN`). Worth retrying.
    #[error("the page is busy")]
    Busy,
    /// Permanent: pinned (`pin_user_pages()`, `vmsplice`).
    #[error("the page is pinned")]
    Pinned,
    /// Permanent: the page can never move.
    #[error("the page cannot be migrated")]
    Unmovable,
    /// No destination page (Linux `-ENOMEM`).
    #[error("no memory for the destination page")]
    NoMemory,
}

impl MigrateError {
    pub fn is_transient(&self) -> bool {
        matches!(self, Self::Busy)
    }
}

/// Why a range stayed busy (all transient).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BusyCause {
    /// Another contiguous allocation isolates the pageblock.
    Isolated { pageblock: Pfn },
    /// Migration kept failing transiently (`tries` failed passes in a row).
    MigrationFailed { pfn: Pfn, tries: u32 },
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Error)]
pub enum ContigError {
    #[error("{range:?}: {source}")]
    InvalidRange {
        range: PfnRange,
        #[source]
        source: RangeError,
    },
    /// Transient (Linux `-EBUSY`): may succeed if tried again later.
    #[error("{range:?} is busy: {cause:?}")]
    Busy { range: PfnRange, cause: BusyCause },
    /// Permanent until the page is unpinned.
    #[error("{range:?}: frame {pfn} is pinned")]
    Pinned { range: PfnRange, pfn: Pfn },
    /// Permanent: `cause` is `None` when the migrator refused the page.
    #[error("{range:?}: frame {pfn} can never move ({cause:?})")]
    Unmovable {
        range: PfnRange,
        pfn: Pfn,
        cause: Option<UnmovableCause>,
    },
    /// No memory to migrate into (Linux `-ENOMEM`).
    #[error("{range:?}: no memory to migrate frame {pfn} to")]
    NoMemory { range: PfnRange, pfn: Pfn },
}

impl ContigError {
    /// Whether the same call may succeed later.
    pub fn is_transient(&self) -> bool {
        matches!(self, Self::Busy { .. })
    }
}

/// Undoes the isolation if the future is dropped before completing.
struct IsolationGuard<'a> {
    phys: &'a RefCell<PhysMem>,
    isolated: Option<IsolatedRange>,
}

impl Drop for IsolationGuard<'_> {
    fn drop(&mut self) {
        let Some(isolated) = self.isolated.take() else {
            return;
        };
        match self.phys.try_borrow_mut() {
            Ok(mut phys) => phys.alloc.undo_isolate_range(isolated),
            // Unwinding from a panic already: leave the machine as it is.
            Err(_) if std::thread::panicking() => {}
            Err(_) => panic!("BUG: alloc_contig_range dropped while the allocator is borrowed"),
        }
    }
}

/// Takes the frames of `range` out of the allocator, migrating whatever they
/// hold. Linux: `alloc_contig_range()`.
pub async fn alloc_contig_range<M: Migrator>(
    phys: &RefCell<PhysMem>,
    range: PfnRange,
    migrator: &mut M,
) -> Result<ClaimedRange, ContigError> {
    let isolated = phys
        .borrow_mut()
        .alloc
        .isolate_range(range)
        .map_err(|e| isolate_error(range, e))?;
    phys.borrow_mut().alloc.drain_all_pages();
    let mut guard = IsolationGuard {
        phys,
        isolated: Some(isolated),
    };
    let migrated = migrate_out(phys, range, migrator).await;
    let isolated = guard.isolated.take().expect("BUG: isolation taken twice");
    let mut p = phys.borrow_mut();
    let taken = migrated.and_then(|()| {
        p.alloc.take_isolated_range(&isolated).map_err(|e| match e {
            // Migration reported success but something is still there: a
            // migrator that did not free its source.
            ClaimError::NotFree { pfn, .. } => ContigError::Busy {
                range,
                cause: BusyCause::MigrationFailed { pfn, tries: 0 },
            },
            e => panic!("BUG: taking an isolated range failed: {e}"),
        })
    });
    p.alloc.undo_isolate_range(isolated);
    taken
}

fn isolate_error(range: PfnRange, e: IsolateError) -> ContigError {
    match e {
        IsolateError::Range(source) => ContigError::InvalidRange { range, source },
        IsolateError::Unmovable { pfn, cause } => ContigError::Unmovable {
            range,
            pfn,
            cause: Some(cause),
        },
        IsolateError::Pinned { pfn, .. } => ContigError::Pinned { range, pfn },
        IsolateError::Busy { pageblock } => ContigError::Busy {
            range,
            cause: BusyCause::Isolated { pageblock },
        },
    }
}

/// Frames of `range` inside allocated blocks (the measure of progress).
fn used_frames(phys: &RefCell<PhysMem>, range: PfnRange) -> (u64, Option<Pfn>) {
    let blocks = phys.borrow().alloc.in_use_frames(range);
    let first = blocks.first().map(|b| b.head);
    (blocks.iter().map(|b| b.order.pages()).sum(), first)
}

/// Linux `__alloc_contig_migrate_range()`.
async fn migrate_out<M: Migrator>(
    phys: &RefCell<PhysMem>,
    range: PfnRange,
    migrator: &mut M,
) -> Result<(), ContigError> {
    let mut failed = 0;
    loop {
        let blocks = phys.borrow().alloc.in_use_frames(range);
        if blocks.is_empty() {
            return Ok(());
        }
        let (before, _) = used_frames(phys, range);
        let mut last_busy = blocks[0].head;
        for block in blocks {
            // Freed or migrated by someone else since the list was made?
            let current = phys.borrow().alloc.frame_status(block.head);
            if !matches!(current, Some(FrameStatus::Allocated { head, .. }) if head == block.head) {
                continue;
            }
            match migrator.migrate(block.head).await {
                Ok(()) => {}
                Err(MigrateError::Busy) => last_busy = block.head,
                Err(MigrateError::Pinned) => {
                    return Err(ContigError::Pinned {
                        range,
                        pfn: block.head,
                    });
                }
                Err(MigrateError::Unmovable) => {
                    return Err(ContigError::Unmovable {
                        range,
                        pfn: block.head,
                        cause: None,
                    });
                }
                Err(MigrateError::NoMemory) => {
                    return Err(ContigError::NoMemory {
                        range,
                        pfn: block.head,
                    });
                }
            }
        }
        let (after, _) = used_frames(phys, range);
        if after < before {
            failed = 0;
        } else {
            failed += 1;
            if failed == MIGRATE_TRIES {
                return Err(ContigError::Busy {
                    range,
                    cause: BusyCause::MigrationFailed {
                        pfn: last_busy,
                        tries: failed,
                    },
                });
            }
        }
    }
}

/// Test helpers: a tiny executor and a migrator that really moves pages.
#[cfg(test)]
pub(crate) mod testing {
    use super::*;
    use crate::phys::buddy::AllocFlags;
    use crate::phys::frame::{FrameState, PageFlag};
    use core::pin::pin;
    use core::task::{Context, Poll, Waker};
    use std::collections::BTreeMap;

    /// Polls `fut` to completion with a no-op waker (every future here is
    /// ready on its next poll).
    pub(crate) fn block_on<F: Future>(fut: F) -> F::Output {
        let mut fut = pin!(fut);
        let mut cx = Context::from_waker(Waker::noop());
        loop {
            if let Poll::Ready(out) = fut.as_mut().poll(&mut cx) {
                return out;
            }
        }
    }

    /// Polls two futures in turn, one step each, until both finish: a
    /// deterministic interleaving of two simulated CPUs.
    pub(crate) fn run_both<A: Future, B: Future>(a: A, b: B) -> (A::Output, B::Output) {
        let (mut a, mut b) = (pin!(a), pin!(b));
        let mut cx = Context::from_waker(Waker::noop());
        let (mut ra, mut rb) = (None, None);
        while ra.is_none() || rb.is_none() {
            if ra.is_none()
                && let Poll::Ready(out) = a.as_mut().poll(&mut cx)
            {
                ra = Some(out);
            }
            if rb.is_none()
                && let Poll::Ready(out) = b.as_mut().poll(&mut cx)
            {
                rb = Some(out);
            }
        }
        (ra.expect("done"), rb.expect("done"))
    }

    /// A future that is pending once: a point where another CPU may run.
    pub(crate) async fn yield_now() {
        let mut yielded = false;
        core::future::poll_fn(|_| {
            if yielded {
                Poll::Ready(())
            } else {
                yielded = true;
                Poll::Pending
            }
        })
        .await
    }

    /// Migrates by allocating a movable destination (tagged if the source is),
    /// copying bytes and kernel metadata, and freeing the source, yielding
    /// first.
    pub(crate) struct CopyMigrator<'a> {
        pub(crate) phys: &'a RefCell<PhysMem>,
        /// Transient failures left per frame.
        pub(crate) busy: BTreeMap<Pfn, u32>,
        /// Source -> destination of every move.
        pub(crate) moved: Vec<(Pfn, Pfn)>,
    }

    impl<'a> CopyMigrator<'a> {
        pub(crate) fn new(phys: &'a RefCell<PhysMem>) -> Self {
            Self {
                phys,
                busy: BTreeMap::new(),
                moved: Vec::new(),
            }
        }
    }

    impl Migrator for CopyMigrator<'_> {
        async fn migrate(&mut self, pfn: Pfn) -> Result<(), MigrateError> {
            yield_now().await;
            if let Some(left) = self.busy.get_mut(&pfn).filter(|l| **l > 0) {
                *left -= 1;
                return Err(MigrateError::Busy);
            }
            let mut phys = self.phys.borrow_mut();
            let PhysMem { alloc, contents } = &mut *phys;
            let Some(FrameState::Allocated { order, .. }) = alloc.frame(pfn).map(|m| m.state())
            else {
                return Ok(());
            };
            if alloc.frame(pfn).is_some_and(|m| m.is_pinned()) {
                return Err(MigrateError::Pinned);
            }
            // A tagged page needs a tagged-capable destination (never CMA).
            let tagged = alloc
                .frame(pfn)
                .is_some_and(|m| m.flags.contains(PageFlag::Tagged));
            let flags = if tagged {
                AllocFlags::USER_TAGGED
            } else {
                AllocFlags::USER
            };
            let dst = alloc
                .alloc(order, flags)
                .map_err(|_| MigrateError::NoMemory)?;
            for i in 0..order.pages() {
                contents
                    .copy_page(dst + i, pfn + i)
                    .expect("present frames");
                let src_meta = alloc.frame(pfn + i).expect("allocated").clone();
                let dst_meta = alloc.frame_mut(dst + i).expect("just allocated");
                dst_meta.refcount = src_meta.refcount;
                dst_meta.mapcount = src_meta.mapcount;
                dst_meta.flags = src_meta.flags;
                dst_meta.owner = src_meta.owner;
                let src = alloc.frame_mut(pfn + i).expect("allocated");
                src.mapcount = 0;
                src.flags = Default::default();
                src.owner = None;
                src.refcount = u32::from(i == 0);
                contents.zero_page(pfn + i).expect("present frame");
            }
            alloc.free(pfn, order).expect("source block frees");
            self.moved.push((pfn, dst));
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::testing::*;
    use super::*;
    use crate::phys::buddy::tests::{o, p, range, small_layout};
    use crate::phys::buddy::{AllocFlags, FreeList};
    use crate::phys::frame::Owner;
    use crate::phys::layout::CmaUse;
    use mte::PhysAddr;

    /// DRAM [0, 32), CMA [32, 48), 4 KiB pages, pageblocks of 4.
    fn machine(cma_use: CmaUse) -> RefCell<PhysMem> {
        RefCell::new(PhysMem::new(small_layout(), cma_use))
    }

    #[track_caller]
    fn clean(phys: &RefCell<PhysMem>) {
        let v = phys.borrow().check();
        assert!(v.is_empty(), "{v:#?}");
    }

    /// A user allocation of `order` (CMA first under `prefer`).
    #[track_caller]
    fn user_alloc(phys: &RefCell<PhysMem>, order: u8) -> Pfn {
        phys.borrow_mut()
            .alloc
            .alloc(o(order), AllocFlags::USER)
            .unwrap()
    }

    /// Returns a claimed range, the machine consistent before and after.
    #[track_caller]
    fn give_back(phys: &RefCell<PhysMem>, claimed: ClaimedRange) {
        clean(phys);
        phys.borrow_mut().alloc.return_range(claimed);
        clean(phys);
    }

    #[test]
    fn a_free_range_is_isolated_and_taken_without_migration() {
        let phys = machine(CmaUse::Balance);
        let mut m = CopyMigrator::new(&phys);
        let claimed = block_on(alloc_contig_range(&phys, range(40, 2), &mut m)).unwrap();
        assert_eq!(claimed.range(), range(40, 2));
        assert!(m.moved.is_empty());
        give_back(&phys, claimed);
    }

    #[test]
    fn data_in_the_range_is_migrated_with_its_contents() {
        let phys = machine(CmaUse::Prefer);
        let x = user_alloc(&phys, 0);
        assert_eq!(x, p(32), "prefer puts data in CMA");
        {
            let mut ph = phys.borrow_mut();
            ph.contents
                .write_u64(PhysAddr::new(32 << 12), 0xfeed)
                .unwrap();
            ph.alloc.frame_mut(x).unwrap().owner = Owner::new(9);
        }
        let mut m = CopyMigrator::new(&phys);
        let claimed = block_on(alloc_contig_range(&phys, range(32, 1), &mut m)).unwrap();
        // The destination is the lowest CMA frame outside the isolated
        // pageblock [32, 36): 36 (prefer: CMA first).
        assert_eq!(m.moved, vec![(p(32), p(36))]);
        let ph = phys.borrow();
        assert_eq!(ph.contents.read_u64(PhysAddr::new(36 << 12)), Ok(0xfeed));
        assert_eq!(ph.alloc.frame(p(36)).unwrap().owner, Owner::new(9));
        assert_eq!(ph.alloc.frame_status(p(32)), Some(FrameStatus::Claimed));
        assert_eq!(
            ph.alloc.free_pages_on(FreeList::Isolate),
            0,
            "isolation undone"
        );
        drop(ph);
        give_back(&phys, claimed);
    }

    #[test]
    fn transient_failures_are_retried_then_give_up() {
        let phys = machine(CmaUse::Prefer);
        let x = user_alloc(&phys, 1);
        // Busy for 4 passes: the fifth pass succeeds (4 < MIGRATE_TRIES).
        let mut m = CopyMigrator::new(&phys);
        m.busy.insert(x, MIGRATE_TRIES - 1);
        let claimed = block_on(alloc_contig_range(&phys, range(32, 2), &mut m)).unwrap();
        assert_eq!(m.moved.len(), 1);
        phys.borrow_mut().alloc.return_range(claimed);
        clean(&phys);
        // Busy for ever: Busy after exactly MIGRATE_TRIES failed passes, and
        // nothing is left isolated or claimed.
        let y = user_alloc(&phys, 1);
        let mut m = CopyMigrator::new(&phys);
        m.busy.insert(y, u32::MAX);
        let err = block_on(alloc_contig_range(&phys, range(y.as_u64(), 1), &mut m)).unwrap_err();
        assert_eq!(
            err,
            ContigError::Busy {
                range: range(y.as_u64(), 1),
                cause: BusyCause::MigrationFailed {
                    pfn: y,
                    tries: MIGRATE_TRIES
                }
            }
        );
        assert!(err.is_transient());
        assert_eq!(m.busy[&y], u32::MAX - MIGRATE_TRIES);
        assert_eq!(phys.borrow().alloc.free_pages_on(FreeList::Isolate), 0);
        clean(&phys);
    }

    #[test]
    fn permanent_failures_are_not_retried() {
        let phys = machine(CmaUse::Prefer);
        let x = user_alloc(&phys, 0);
        phys.borrow_mut().alloc.frame_mut(x).unwrap().pins = 1;
        let mut m = CopyMigrator::new(&phys);
        let err = block_on(alloc_contig_range(&phys, range(32, 4), &mut m)).unwrap_err();
        assert_eq!(
            err,
            ContigError::Pinned {
                range: range(32, 4),
                pfn: x
            }
        );
        assert!(!err.is_transient());
        // Claimed and carved-out frames, or a hole, fail the same way.
        let c = phys
            .borrow_mut()
            .alloc
            .claim_free_range(range(40, 1))
            .unwrap();
        let err = block_on(alloc_contig_range(&phys, range(40, 1), &mut m)).unwrap_err();
        assert_eq!(
            err,
            ContigError::Unmovable {
                range: range(40, 1),
                pfn: p(40),
                cause: Some(UnmovableCause::Claimed)
            }
        );
        assert!(matches!(
            block_on(alloc_contig_range(&phys, range(47, 2), &mut m)),
            Err(ContigError::InvalidRange {
                source: RangeError::NotPresent { .. },
                ..
            })
        ));
        phys.borrow_mut().alloc.return_range(c);
        clean(&phys);
    }

    #[test]
    fn no_memory_to_migrate_into() {
        let phys = machine(CmaUse::Prefer);
        // Fill everything: CMA first (prefer), then DRAM.
        let mut heads = Vec::new();
        while let Ok(pfn) = phys.borrow_mut().alloc.alloc(o(0), AllocFlags::USER) {
            heads.push(pfn);
        }
        assert_eq!(heads.len(), 48);
        let mut m = CopyMigrator::new(&phys);
        let err = block_on(alloc_contig_range(&phys, range(32, 1), &mut m)).unwrap_err();
        assert_eq!(
            err,
            ContigError::NoMemory {
                range: range(32, 1),
                pfn: p(32)
            }
        );
        clean(&phys);
    }

    #[test]
    fn two_overlapping_claims_interleaved_one_is_busy() {
        let phys = machine(CmaUse::Prefer);
        user_alloc(&phys, 0);
        let (mut m1, mut m2) = (CopyMigrator::new(&phys), CopyMigrator::new(&phys));
        // The first isolates [32, 36) and yields inside its migration; the
        // second finds pageblock 32 isolated.
        let (r1, r2) = run_both(
            alloc_contig_range(&phys, range(32, 1), &mut m1),
            alloc_contig_range(&phys, range(33, 1), &mut m2),
        );
        let claimed = r1.unwrap();
        assert_eq!(
            r2.unwrap_err(),
            ContigError::Busy {
                range: range(33, 1),
                cause: BusyCause::Isolated { pageblock: p(32) }
            }
        );
        give_back(&phys, claimed);
    }

    #[test]
    fn an_allocation_during_migration_avoids_the_isolated_range() {
        let phys = machine(CmaUse::Prefer);
        user_alloc(&phys, 0);
        let mut m = CopyMigrator::new(&phys);
        let other_cpu = async {
            // Runs while the claim is inside its migration: [32, 36) is
            // isolated, so CMA-first gives 36 (and the migration then 37).
            user_alloc(&phys, 0)
        };
        let (claimed, got) = run_both(alloc_contig_range(&phys, range(32, 4), &mut m), other_cpu);
        assert_eq!(got, p(36));
        assert_eq!(m.moved, vec![(p(32), p(37))]);
        assert_eq!(claimed.unwrap().range(), range(32, 4));
        clean(&phys);
    }

    #[test]
    fn dropping_the_future_undoes_the_isolation() {
        let phys = machine(CmaUse::Prefer);
        user_alloc(&phys, 0);
        let mut m = CopyMigrator::new(&phys);
        {
            let fut = alloc_contig_range(&phys, range(32, 1), &mut m);
            let mut fut = core::pin::pin!(fut);
            let mut cx = core::task::Context::from_waker(core::task::Waker::noop());
            assert!(
                fut.as_mut().poll(&mut cx).is_pending(),
                "stops inside the migration"
            );
            assert!(phys.borrow().alloc.pageblock(p(32)).unwrap().isolated);
        }
        assert!(!phys.borrow().alloc.pageblock(p(32)).unwrap().isolated);
        clean(&phys);
    }
}
