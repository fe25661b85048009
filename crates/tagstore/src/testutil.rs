//! Test helpers: machines, a scripted [`BlockSource`] and a minimal executor.

use crate::{BlockSource, ClaimCause, ClaimError, OnMisuse, TagStorage, TagStoreConfig};
use core::future::Future;
use core::pin::pin;
use core::task::{Context, Poll, Waker};
use mte::{Geometry, MemRange, Order, Pfn, PfnRange, TagBlock, TagRegion};
use std::collections::{BTreeMap, BTreeSet};

/// First frame of the default machine's DRAM (0x8000_0000 / 4 KiB).
pub(crate) const BASE: u64 = 0x80000;

/// The default scenario machine: 64 MiB of DRAM at 0x8000_0000, its 2 MiB of
/// tag storage right after.
pub(crate) fn machine(block_size: u64) -> Geometry {
    machine_at(0x8000_0000, block_size)
}

/// 64 MiB of DRAM at `base`, its tag storage right after.
pub(crate) fn machine_at(base: u64, block_size: u64) -> Geometry {
    machine_sized(base, 64 << 20, block_size)
}

pub(crate) fn machine_sized(base: u64, size: u64, block_size: u64) -> Geometry {
    let dram = MemRange::new(base, size);
    let tags = MemRange::new(base + size, size / 32);
    Geometry::new(
        4096,
        &[dram],
        &[TagRegion {
            tags,
            covers: dram,
            block_size,
        }],
    )
    .unwrap()
}

/// Misuse recorded, not fatal, so `check()` can be asserted.
pub(crate) fn record() -> TagStoreConfig {
    TagStoreConfig {
        on_misuse: OnMisuse::Record,
        ..TagStoreConfig::default()
    }
}

/// A design built by `new` on the default machine with one-page blocks,
/// misuse recorded, not booted yet; and an empty mock source.
pub(crate) fn fresh<S>(new: impl FnOnce(&Geometry, TagStoreConfig) -> S) -> (S, MockSource) {
    (new(&machine(4096), record()), MockSource::default())
}

/// [`fresh`], booted with the zero page at the machine's first frame
/// (every other frame free).
pub(crate) fn booted<S: TagStorage>(
    new: impl FnOnce(&Geometry, TagStoreConfig) -> S,
) -> (S, MockSource) {
    let (mut storage, mut source) = fresh(new);
    block_on(storage.activate(Pfn::new(BASE), &mut source)).expect("the design boots");
    (storage, source)
}

/// Asserts that `storage.place_tagged` tries the runs of
/// `tagged_placement` (more than four of them) in their order and stops at
/// the first that fits: for each of the first `accepted` runs, a `fits`
/// accepting only that run; then one accepting none, which sees them all.
pub(crate) fn assert_places_as_tagged_placement<S: TagStorage>(
    storage: &S,
    order: Order,
    source: &MockSource,
    accepted: usize,
) {
    let all = storage.tagged_placement(order, source);
    assert!(all.len() > 4, "{all:?}");
    for accept in 0..all.len().min(accepted) {
        let mut tried = Vec::new();
        let got = storage.place_tagged(order, source, &mut |run| {
            tried.push(run);
            (tried.len() == accept + 1).then_some(run.start)
        });
        assert_eq!(tried, all[..=accept], "order {order:?}");
        assert_eq!(got, Some(all[accept].start));
    }
    let mut tried = Vec::new();
    let none = storage.place_tagged(order, source, &mut |run| {
        tried.push(run);
        None
    });
    assert_eq!((none, tried), (None, all));
}

/// Polls `future` to completion with a no-op waker. Every future in these
/// tests is ready again as soon as it is polled, so a bounded spin suffices.
pub(crate) fn block_on<F: Future>(future: F) -> F::Output {
    let mut future = pin!(future);
    let mut cx = Context::from_waker(Waker::noop());
    for _ in 0..10_000 {
        if let Poll::Ready(out) = future.as_mut().poll(&mut cx) {
            return out;
        }
    }
    panic!("future still pending after 10000 polls");
}

/// A future that is pending once, to show that claims may be suspended.
struct YieldOnce(bool);

impl Future for YieldOnce {
    type Output = ();
    fn poll(mut self: core::pin::Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        if self.0 {
            Poll::Ready(())
        } else {
            self.0 = true;
            cx.waker().wake_by_ref();
            Poll::Pending
        }
    }
}

/// What the mock saw, in order.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(crate) enum Event {
    Claim(TagBlock, PfnRange, Result<(), ClaimError>),
    Release(TagBlock, PfnRange),
}

pub(crate) const TRANSIENT: ClaimError = ClaimError::Transient {
    cause: ClaimCause::Busy,
    pfn: None,
};
pub(crate) const PERMANENT: ClaimError = ClaimError::Permanent {
    cause: ClaimCause::Pinned,
    pfn: None,
};

/// A block source that records every call and fails as told.
#[derive(Clone, PartialEq, Eq, Debug, Default)]
pub(crate) struct MockSource {
    /// Blocks claimed and not given back.
    pub(crate) claimed: BTreeSet<TagBlock>,
    pub(crate) log: Vec<Event>,
    /// Blocks whose next N claims fail transiently.
    pub(crate) transient: BTreeMap<TagBlock, u32>,
    /// Blocks whose claims always fail permanently.
    pub(crate) permanent: BTreeSet<TagBlock>,
    /// Frames the mock's page allocator has in use (every other frame is
    /// free, including the frames of claimed blocks: tests that care mark
    /// them).
    pub(crate) used: BTreeSet<mte::Pfn>,
}

impl MockSource {
    pub(crate) fn claims(&self) -> usize {
        self.log
            .iter()
            .filter(|e| matches!(e, Event::Claim(..)))
            .count()
    }

    fn outcome(&mut self, block: TagBlock) -> Result<(), ClaimError> {
        if self.permanent.contains(&block) {
            return Err(PERMANENT);
        }
        if let Some(n) = self.transient.get_mut(&block).filter(|n| **n > 0) {
            *n -= 1;
            return Err(TRANSIENT);
        }
        assert!(self.claimed.insert(block), "mock: {block:?} claimed twice");
        Ok(())
    }
}

impl BlockSource for MockSource {
    fn claim<'a>(
        &'a mut self,
        block: TagBlock,
        pfns: PfnRange,
    ) -> crate::LocalBoxFuture<'a, Result<(), ClaimError>> {
        Box::pin(async move {
            YieldOnce(false).await;
            let result = self.outcome(block);
            self.log.push(Event::Claim(block, pfns, result));
            result
        })
    }

    fn release(&mut self, block: TagBlock, pfns: PfnRange) {
        assert!(
            self.claimed.remove(&block),
            "mock: {block:?} released but not claimed"
        );
        self.log.push(Event::Release(block, pfns));
    }

    fn free_frames(&self, pfns: PfnRange) -> u64 {
        let used = self.used.range(pfns.start..pfns.end()).count() as u64;
        pfns.count - used
    }
}
