//! Tests of the `dynamic` policy. Expected values are worked out by hand from
//! the geometry (docs/model.md §1: one 4 KiB tag page holds the tags of 32 data
//! pages) and from RFC v3 `reserve_tag_storage()` / `free_tag_storage()`.

use super::*;
use crate::testutil::{
    BASE, Event, MockSource, PERMANENT, TRANSIENT, block_on, machine, machine_at, machine_sized,
    record,
};
use crate::{ClaimCause, ClaimError, OnMisuse, RangeError};
use mte::{MemRange, TagRegion};
use proptest::prelude::*;
use std::collections::{BTreeMap, BTreeSet};

fn dynamic(block_size: u64) -> (DynamicTagStorage, MockSource) {
    (
        DynamicTagStorage::new(&machine(block_size), record()),
        MockSource::default(),
    )
}

fn pfn(offset: u64) -> Pfn {
    Pfn::new(BASE + offset)
}

fn b(index: u64) -> TagBlock {
    TagBlock::new(index)
}

fn refs(m: &DynamicTagStorage) -> Vec<(u64, u64)> {
    m.reserved_blocks()
        .map(|blk| (blk.index(), m.block_refcount(blk)))
        .collect()
}

/// The tag storage frames of block `index` on the default machine (tags start
/// at 0x8400_0000, frame 0x84000).
fn tag_pfns(index: u64, block_pages: u64) -> PfnRange {
    PfnRange::new(Pfn::new(0x84000 + index * block_pages), block_pages)
}

#[test]
fn order_0_reserves_one_block_with_one_reference() {
    // 4 KiB blocks: frame 33 has its tags in tag page 1 = block 1.
    let (mut m, mut src) = dynamic(4 << 10);
    block_on(m.reserve(pfn(33), Order::new(0), &mut src)).unwrap();
    assert_eq!(refs(&m), [(1, 1)]);
    assert_eq!(src.log, [Event::Claim(b(1), tag_pfns(1, 1), Ok(()))]);
    assert!(m.is_reserved(pfn(33)) && m.is_reserved(pfn(63)));
    // Frame 32 shares block 1 with frame 33, so its tags have storage too.
    assert!(m.is_reserved(pfn(32)));
    assert!(!m.is_reserved(pfn(31)) && !m.is_reserved(pfn(64)));
    assert_eq!(
        m.block_state(b(1)),
        BlockState::Reserved {
            refs: NonZeroU64::new(1).unwrap()
        }
    );
    assert_eq!(m.block_state(b(0)), BlockState::Lent);
    assert!(m.check().is_empty());
}

#[test]
fn order_9_with_4k_blocks_takes_16_blocks_of_32_references() {
    // 512 frames / 32 frames per tag page = 16 one-page blocks, each holding
    // min(2^9, 32 * 1) = 32 references (RFC block_ref_add()).
    let (mut m, mut src) = dynamic(4 << 10);
    block_on(m.reserve(pfn(512), Order::new(9), &mut src)).unwrap();
    let expected: Vec<_> = (16..32).map(|i| (i, 32)).collect();
    assert_eq!(refs(&m), expected);
    assert_eq!(src.claims(), 16);
    assert_eq!(src.log[0], Event::Claim(b(16), tag_pfns(16, 1), Ok(())));
    assert_eq!(m.counters().reserved, 16);
    assert!(m.check().is_empty());
}

#[test]
fn order_9_with_64k_blocks_takes_one_block_of_512_references() {
    // A 64 KiB block is 16 tag pages = the tags of 512 frames: one block with
    // min(2^9, 32 * 16) = 512 references. Order 0 in the next block: 1.
    let (mut m, mut src) = dynamic(64 << 10);
    block_on(m.reserve(pfn(0), Order::new(9), &mut src)).unwrap();
    block_on(m.reserve(pfn(513), Order::new(0), &mut src)).unwrap();
    assert_eq!(refs(&m), [(0, 512), (1, 1)]);
    assert_eq!(
        src.log,
        [
            Event::Claim(b(0), tag_pfns(0, 16), Ok(())),
            Event::Claim(b(1), tag_pfns(1, 16), Ok(()))
        ]
    );
    // Order 10 spans two 64 KiB blocks of 512 references each.
    block_on(m.reserve(pfn(1024), Order::new(10), &mut src)).unwrap();
    assert_eq!(refs(&m), [(0, 512), (1, 1), (2, 512), (3, 512)]);
    assert!(m.check().is_empty());
}

#[test]
fn shared_blocks_gain_references_without_a_claim() {
    let (mut m, mut src) = dynamic(4 << 10);
    block_on(m.reserve(pfn(0), Order::new(0), &mut src)).unwrap();
    block_on(m.reserve(pfn(1), Order::new(0), &mut src)).unwrap();
    block_on(m.reserve(pfn(8), Order::new(3), &mut src)).unwrap();
    // 1 + 1 + 8 frames, all with tags in block 0; claimed once.
    assert_eq!(refs(&m), [(0, 10)]);
    assert_eq!(src.claims(), 1);
    assert_eq!(m.counters().reservations, 1);
}

#[test]
fn a_block_is_released_when_its_last_reference_goes() {
    let (mut m, mut src) = dynamic(4 << 10);
    block_on(m.reserve(pfn(0), Order::new(0), &mut src)).unwrap();
    block_on(m.reserve(pfn(1), Order::new(0), &mut src)).unwrap();
    m.release(pfn(1), Order::new(0), &mut src);
    assert_eq!(refs(&m), [(0, 1)]);
    assert_eq!(src.claimed, BTreeSet::from([b(0)]));
    m.release(pfn(0), Order::new(0), &mut src);
    assert_eq!(refs(&m), []);
    assert_eq!(src.log.last(), Some(&Event::Release(b(0), tag_pfns(0, 1))));
    assert!(src.claimed.is_empty());
    let c = m.counters();
    assert_eq!((c.reserved, c.reservations, c.releases), (0, 1, 1));
    assert!(m.check().is_empty());
}

#[test]
fn transient_failures_are_retried_then_succeed() {
    // cma_alloc_range(..., 3, gfp): up to 3 tries on -EBUSY.
    let (mut m, mut src) = dynamic(4 << 10);
    src.transient.insert(b(0), 2);
    block_on(m.reserve(pfn(0), Order::new(0), &mut src)).unwrap();
    assert_eq!(
        src.log,
        [
            Event::Claim(b(0), tag_pfns(0, 1), Err(TRANSIENT)),
            Event::Claim(b(0), tag_pfns(0, 1), Err(TRANSIENT)),
            Event::Claim(b(0), tag_pfns(0, 1), Ok(())),
        ]
    );
    assert_eq!(refs(&m), [(0, 1)]);
    assert_eq!(m.counters().reserve_failures, 0);
}

#[test]
fn retries_are_bounded() {
    let (mut m, mut src) = dynamic(4 << 10);
    src.transient.insert(b(0), 3);
    let before = m.clone();
    let err = block_on(m.reserve(pfn(0), Order::new(0), &mut src)).unwrap_err();
    assert_eq!(
        err,
        ReserveError::Claim {
            block: b(0),
            attempts: 3,
            source: TRANSIENT
        }
    );
    assert!(err.is_transient());
    assert_eq!(src.claims(), 3);
    assert_eq!(m.counters().reserve_failures, 1);
    assert_eq!(refs(&m), refs(&before));
    // The fault path tries again later: the fourth claim succeeds.
    block_on(m.reserve(pfn(0), Order::new(0), &mut src)).unwrap();
    assert_eq!(refs(&m), [(0, 1)]);
}

#[test]
fn the_number_of_attempts_is_configurable() {
    let config = TagStoreConfig {
        claim_attempts: NonZeroU32::new(1).unwrap(),
        ..record()
    };
    let mut m = DynamicTagStorage::new(&machine(4 << 10), config);
    let mut src = MockSource::default();
    src.transient.insert(b(0), 1);
    let err = block_on(m.reserve(pfn(0), Order::new(0), &mut src)).unwrap_err();
    assert!(matches!(err, ReserveError::Claim { attempts: 1, .. }));
    assert_eq!(src.claims(), 1);
}

#[test]
fn permanent_failures_are_not_retried() {
    let (mut m, mut src) = dynamic(4 << 10);
    src.permanent.insert(b(0));
    let err = block_on(m.reserve(pfn(0), Order::new(0), &mut src)).unwrap_err();
    assert_eq!(
        err,
        ReserveError::Claim {
            block: b(0),
            attempts: 1,
            source: PERMANENT
        }
    );
    assert!(!err.is_transient());
    assert_eq!(src.claims(), 1);
    assert_eq!(m.counters().reserve_failures, 1);
}

#[test]
fn a_failed_multi_block_reservation_rolls_everything_back() {
    // Order 9 with 4 KiB blocks needs blocks 0..16; block 7 is pinned. Blocks
    // 0..7 are claimed, 7 fails, and 0..7 are given back in block order, as
    // the RFC's out_error loop does. An earlier reservation (block 16) is
    // untouched.
    let (mut m, mut src) = dynamic(4 << 10);
    block_on(m.reserve(pfn(512), Order::new(0), &mut src)).unwrap();
    let (m_before, src_before) = (m.clone(), src.clone());
    src.permanent.insert(b(7));
    let err = block_on(m.reserve(pfn(0), Order::new(9), &mut src)).unwrap_err();
    assert!(matches!(err, ReserveError::Claim { block, attempts: 1, .. } if block == b(7)));

    let mut after = m.clone();
    after.counters.reserve_failures -= 1;
    assert_eq!(after, m_before, "manager exactly as before");
    assert_eq!(src.claimed, src_before.claimed, "every claim given back");
    let new_events = &src.log[src_before.log.len()..];
    let mut expected: Vec<_> = (0..7)
        .map(|i| Event::Claim(b(i), tag_pfns(i, 1), Ok(())))
        .collect();
    expected.push(Event::Claim(b(7), tag_pfns(7, 1), Err(PERMANENT)));
    expected.extend((0..7).map(|i| Event::Release(b(i), tag_pfns(i, 1))));
    assert_eq!(new_events, expected);
    assert!(m.check().is_empty());
}

#[test]
fn rollback_keeps_the_references_of_shared_blocks() {
    // Memory starting 16 frames past a 32-frame boundary: block k covers
    // frames 0x80010 + 32k ..= 0x8002f + 32k. An order-6 allocation at
    // 0x80040 (64 frames) holds 16 frames of block 1, 32 of block 2 and 16 of
    // block 3. Block 1 is shared with an order-0 reservation at 0x80030.
    let g = machine_at(0x8001_0000, 4 << 10);
    let mut m = DynamicTagStorage::new(&g, record());
    let mut src = MockSource::default();
    block_on(m.reserve(Pfn::new(0x80030), Order::new(0), &mut src)).unwrap();
    let before = m.clone();
    src.transient.insert(b(3), 5);
    let err = block_on(m.reserve(Pfn::new(0x80040), Order::new(6), &mut src)).unwrap_err();
    assert_eq!(
        err,
        ReserveError::Claim {
            block: b(3),
            attempts: 3,
            source: TRANSIENT
        }
    );
    assert_eq!(refs(&m), [(1, 1)]);
    assert_eq!(m.counters().reserved, before.counters().reserved);
    assert_eq!(src.claimed, BTreeSet::from([b(1)]));
    // Once the block can be claimed the same call succeeds with exact shares.
    src.transient.clear();
    block_on(m.reserve(Pfn::new(0x80040), Order::new(6), &mut src)).unwrap();
    assert_eq!(refs(&m), [(1, 17), (2, 32), (3, 16)]);
    assert!(m.check().is_empty());
}

#[test]
fn the_zero_page_block_is_reserved_for_ever() {
    // RFC v2 patch 18: the zero page counts as tagged from boot, so
    // activation reserves its block with one reference (counted once).
    let (mut m, mut src) = dynamic(4 << 10);
    block_on(m.activate(pfn(5), &mut src)).unwrap();
    assert_eq!(m.zero_page(), Some(pfn(5)));
    assert_eq!(refs(&m), [(0, 1)]);
    assert_eq!(m.counters().reservations, 1);
    block_on(m.reserve(pfn(6), Order::new(0), &mut src)).unwrap();
    block_on(m.reserve(pfn(16), Order::new(4), &mut src)).unwrap();
    assert_eq!(refs(&m), [(0, 18)]);
    m.release(pfn(6), Order::new(0), &mut src);
    m.release(pfn(16), Order::new(4), &mut src);
    assert_eq!(refs(&m), [(0, 1)]);
    assert_eq!(src.claims(), 1);
    assert!(!src.log.iter().any(|e| matches!(e, Event::Release(..))));
    assert!(m.check().is_empty());
}

#[test]
fn releasing_the_zero_page_or_its_reference_is_a_misuse() {
    let (mut m, mut src) = dynamic(4 << 10);
    block_on(m.activate(pfn(5), &mut src)).unwrap();
    let before = m.clone();
    m.release(pfn(5), Order::new(0), &mut src);
    // Frame 6 was never reserved: dropping "its" reference would take the
    // zero page's.
    m.release(pfn(6), Order::new(0), &mut src);
    m.release(pfn(0), Order::new(3), &mut src);
    assert_eq!(
        m.check(),
        [TagStoreViolation::Misuse {
            first: Misuse::ReleaseZeroPage {
                zero_page: pfn(5),
                pfn: pfn(5),
                order: Order::new(0)
            },
            count: 3
        }]
    );
    assert_eq!(refs(&m), refs(&before), "refused calls change nothing");
    assert_eq!(m.counters(), before.counters());
    let mut m = before;
    m.release(pfn(6), Order::new(0), &mut src);
    assert_eq!(
        m.check(),
        [TagStoreViolation::Misuse {
            first: Misuse::ReleaseUnreserved {
                pfn: pfn(6),
                order: Order::new(0),
                block: b(0),
                refs: 0,
                frames: 1
            },
            count: 1
        }]
    );
}

#[test]
fn releasing_unreserved_frames_is_refused_whole() {
    let (mut m, mut src) = dynamic(4 << 10);
    block_on(m.reserve(pfn(0), Order::new(5), &mut src)).unwrap();
    // Order 6 from frame 0 also covers block 1, which holds nothing.
    m.release(pfn(0), Order::new(6), &mut src);
    m.release(Pfn::new(0x84000), Order::new(0), &mut src);
    assert_eq!(refs(&m), [(0, 32)]);
    assert_eq!(
        m.check(),
        [TagStoreViolation::Misuse {
            first: Misuse::ReleaseUnreserved {
                pfn: pfn(0),
                order: Order::new(6),
                block: b(1),
                refs: 0,
                frames: 32
            },
            count: 2
        }]
    );
}

#[test]
#[should_panic(expected = "BUG: tag storage: released frames")]
fn releasing_unreserved_frames_panics_when_told_to() {
    let config = TagStoreConfig {
        on_misuse: OnMisuse::Panic,
        ..TagStoreConfig::default()
    };
    let mut m = DynamicTagStorage::new(&machine(4 << 10), config);
    m.release(pfn(0), Order::new(0), &mut MockSource::default());
}

#[test]
fn reserving_frames_twice_is_refused() {
    // 4 KiB blocks: block 0 covers 32 frames; 32 + 1 references is more
    // than it covers.
    let (mut m, mut src) = dynamic(4 << 10);
    block_on(m.reserve(pfn(0), Order::new(5), &mut src)).unwrap();
    let err = block_on(m.reserve(pfn(0), Order::new(0), &mut src)).unwrap_err();
    let misuse = Misuse::DoubleReservation {
        pfn: pfn(0),
        order: Order::new(0),
        block: b(0),
        refs: 33,
        capacity: 32,
    };
    assert_eq!(err, ReserveError::Misuse(misuse));
    assert_eq!(refs(&m), [(0, 32)]);
    assert_eq!(
        m.counters().reserve_failures,
        0,
        "a misuse is not a failure"
    );
    assert_eq!(
        m.check(),
        [TagStoreViolation::Misuse {
            first: misuse,
            count: 1
        }]
    );
}

#[test]
fn frames_without_tag_storage_cannot_be_reserved() {
    let (mut m, mut src) = dynamic(4 << 10);
    // Tag storage frames have no tags (docs/model.md §1).
    assert_eq!(
        block_on(m.reserve(Pfn::new(0x84000), Order::new(0), &mut src)),
        Err(ReserveError::Range(RangeError::NotCovered {
            pfn: Pfn::new(0x84000)
        }))
    );
    assert_eq!(
        block_on(m.reserve(pfn(1), Order::new(1), &mut src)),
        Err(ReserveError::Range(RangeError::Misaligned {
            pfn: pfn(1),
            order: Order::new(1)
        }))
    );
    assert!(src.log.is_empty());
    assert_eq!(m.counters().reserve_failures, 0);
}

#[test]
fn a_failed_activation_records_nothing() {
    let (mut m, mut src) = dynamic(4 << 10);
    src.permanent.insert(b(0));
    assert!(block_on(m.activate(pfn(5), &mut src)).is_err());
    assert_eq!(m.zero_page(), None);
    assert_eq!(m.counters().reserve_failures, 1);
    assert!(m.check().is_empty());
    src.permanent.clear();
    block_on(m.activate(pfn(5), &mut src)).unwrap();
    assert_eq!(refs(&m), [(0, 1)]);
}

#[test]
#[should_panic(expected = "BUG: tag storage activated twice")]
fn activating_twice_is_a_bug() {
    let (mut m, mut src) = dynamic(4 << 10);
    block_on(m.activate(pfn(5), &mut src)).unwrap();
    let _ = block_on(m.activate(pfn(5), &mut src));
}

#[test]
fn blocks_follow_the_tag_regions_not_the_memory_order() {
    // Two regions: tags of the high memory sit below those of the low
    // memory, so blocks are numbered high memory first (Geometry numbers
    // blocks region by region in tag address order).
    let low = MemRange::new(0x8000_0000, 32 << 20);
    let high = MemRange::new(0x8800_0000, 32 << 20);
    let g = Geometry::new(
        4096,
        &[low, high],
        &[
            TagRegion {
                tags: MemRange::new(0x9000_0000, 1 << 20),
                covers: low,
                block_size: 4096,
            },
            TagRegion {
                tags: MemRange::new(0x8f00_0000, 1 << 20),
                covers: high,
                block_size: 4096,
            },
        ],
    )
    .unwrap();
    let mut m = DynamicTagStorage::new(&g, record());
    let mut src = MockSource::default();
    block_on(m.reserve(Pfn::new(0x80000), Order::new(0), &mut src)).unwrap();
    block_on(m.reserve(Pfn::new(0x88000), Order::new(0), &mut src)).unwrap();
    assert_eq!(refs(&m), [(0, 1), (256, 1)]);
    assert_eq!(
        src.log[0],
        Event::Claim(b(256), PfnRange::new(Pfn::new(0x90000), 1), Ok(()))
    );
}

#[test]
fn counters_are_exact() {
    let (mut m, mut src) = dynamic(4 << 10);
    block_on(m.activate(pfn(0), &mut src)).unwrap(); // block 0
    block_on(m.reserve(pfn(64), Order::new(6), &mut src)).unwrap(); // blocks 2, 3
    src.permanent.insert(b(4));
    let _ = block_on(m.reserve(pfn(128), Order::new(6), &mut src)); // 4 fails: 1 failure
    m.release(pfn(64), Order::new(6), &mut src); // blocks 2, 3 released
    block_on(m.reserve(pfn(32), Order::new(0), &mut src)).unwrap(); // block 1
    assert_eq!(
        m.counters().list(),
        [
            ("tag_storage.blocks", 512),
            ("tag_storage.reserved", 2),
            ("tag_storage.reservations", 4),
            ("tag_storage.releases", 2),
            ("tag_storage.reserve_failures", 1),
        ]
    );
    assert!(m.check().is_empty());
}

#[test]
fn check_finds_each_broken_invariant() {
    let (mut m, mut src) = dynamic(4 << 10);
    block_on(m.activate(pfn(0), &mut src)).unwrap();
    block_on(m.reserve(pfn(32), Order::new(0), &mut src)).unwrap();
    assert!(m.check().is_empty());

    let mut bad = m.clone();
    bad.counters.reserved += 1;
    assert_eq!(
        bad.check(),
        [
            TagStoreViolation::CounterMismatch {
                name: "tag_storage.reserved",
                counted: 3,
                actual: 2
            },
            TagStoreViolation::CounterBalance {
                reserved: 3,
                reservations: 2,
                releases: 0
            }
        ]
    );

    let mut bad = m.clone();
    bad.counters.blocks = 7;
    assert!(matches!(
        bad.check()[..],
        [TagStoreViolation::CounterMismatch {
            name: "tag_storage.blocks",
            ..
        }]
    ));

    let mut bad = m.clone();
    bad.refs.add(b(1), 32);
    assert_eq!(
        bad.check(),
        [TagStoreViolation::RefcountAboveCoverage {
            block: b(1),
            refs: 33,
            capacity: 32
        }]
    );

    let mut bad = m.clone();
    bad.refs.sub(b(0), 1);
    bad.counters.reserved -= 1;
    bad.counters.releases += 1;
    assert_eq!(
        bad.check(),
        [TagStoreViolation::ZeroPageBlockNotReserved {
            zero_page: pfn(0),
            block: Some(b(0))
        }]
    );

    let mut bad = m.clone();
    bad.refs.add(b(512), 1);
    bad.counters.reserved += 1;
    bad.counters.reservations += 1;
    assert_eq!(
        bad.check(),
        [TagStoreViolation::UnknownBlock {
            block: b(512),
            blocks: 512
        }]
    );
}

#[test]
fn claims_may_suspend() {
    // The mock's claim is pending once before it completes: reserve() must
    // carry its state across the suspension.
    let (mut m, mut src) = dynamic(4 << 10);
    let mut fut = core::pin::pin!(m.reserve(pfn(0), Order::new(0), &mut src));
    let mut cx = core::task::Context::from_waker(core::task::Waker::noop());
    assert!(fut.as_mut().poll(&mut cx).is_pending());
    assert_eq!(fut.as_mut().poll(&mut cx), core::task::Poll::Ready(Ok(())));
}

#[test]
fn claim_errors_carry_their_context() {
    let err = ReserveError::Claim {
        block: b(3),
        attempts: 3,
        source: ClaimError::Transient {
            cause: ClaimCause::Pinned,
            pfn: Some(Pfn::new(0x84003)),
        },
    };
    assert_eq!(
        err.to_string(),
        "cannot claim tag storage TagBlock(3) after 3 attempt(s): transient failure (pinned) at frame 0x84003"
    );
}

// ---------------------------------------------------------------------------
// Property test against a reference model.

/// Frames of the property-test machine: 8 MiB of DRAM.
const FRAMES: u64 = 2048;
const ZERO_PAGE: u64 = 17;

#[derive(Clone, Debug)]
enum Op {
    Reserve { slot: u64, order: u32 },
    Release { pick: usize },
    FailTransiently { block: u64, times: u32 },
    FailPermanently { block: u64 },
    Heal,
}

/// Mostly small orders, so the 2048-frame machine holds many allocations.
fn order() -> impl Strategy<Value = u32> {
    prop_oneof![3 => 0u32..=2, 2 => 3u32..=6, 1 => 7u32..=9]
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        6 => (0..FRAMES, order()).prop_map(|(slot, order)| Op::Reserve { slot, order }),
        4 => any::<usize>().prop_map(|pick| Op::Release { pick }),
        1 => (0u64..64, 1u32..=4).prop_map(|(block, times)| Op::FailTransiently { block, times }),
        1 => (0u64..64).prop_map(|block| Op::FailPermanently { block }),
        1 => Just(Op::Heal),
    ]
}

/// The reference model: live reservations, and the counts they imply.
#[derive(Default)]
struct Model {
    live: BTreeMap<Pfn, u32>,
    counters: TagStoreCounters,
}

impl Model {
    fn overlaps(&self, start: u64, count: u64) -> bool {
        let hit = |s: u64, c: u64| s < start + count && start < s + c;
        hit(BASE + ZERO_PAGE, 1) || self.live.iter().any(|(p, &o)| hit(p.as_u64(), 1 << o))
    }

    /// Expected count per block: one per live frame (the zero page included),
    /// each frame looked up on its own.
    fn expected(&self, g: &Geometry) -> BTreeMap<TagBlock, u64> {
        let mut refs = BTreeMap::new();
        let frames = self
            .live
            .iter()
            .flat_map(|(p, &o)| (0..1u64 << o).map(move |i| *p + i))
            .chain([pfn(ZERO_PAGE)]);
        for frame in frames {
            *refs.entry(g.block_of(frame).unwrap()).or_default() += 1;
        }
        refs
    }
}

fn run(block_size: u64, ops: &[Op]) -> Result<(), TestCaseError> {
    let g = machine_sized(0x8000_0000, FRAMES * 4096, block_size);
    let blocks = g.tag_blocks();
    let mut m = DynamicTagStorage::new(&g, record());
    let mut src = MockSource::default();
    let mut model = Model::default();
    model.counters.blocks = blocks;
    block_on(m.activate(pfn(ZERO_PAGE), &mut src)).unwrap();
    model.counters.reserved = 1;
    model.counters.reservations = 1;

    for op in ops {
        let before = model.expected(&g);
        match *op {
            Op::Reserve { slot, order } => {
                let start = BASE + ((slot % (FRAMES >> order)) << order);
                if model.overlaps(start, 1 << order) {
                    continue;
                }
                let (m_before, claimed_before) = (m.clone(), src.claimed.clone());
                match block_on(m.reserve(Pfn::new(start), Order::new(order as u8), &mut src)) {
                    Ok(()) => {
                        model.live.insert(Pfn::new(start), order);
                        let added = model.expected(&g).len() - before.len();
                        model.counters.reserved += added as u64;
                        model.counters.reservations += added as u64;
                    }
                    Err(ReserveError::Claim { block, .. }) => {
                        prop_assert!(
                            src.permanent.contains(&block) || src.transient.contains_key(&block),
                            "failure of {:?} was not injected",
                            block
                        );
                        model.counters.reserve_failures += 1;
                        let mut after = m.clone();
                        after.counters.reserve_failures -= 1;
                        prop_assert_eq!(after, m_before);
                        prop_assert_eq!(&src.claimed, &claimed_before);
                    }
                    Err(other) => prop_assert!(false, "unexpected {}", other),
                }
            }
            Op::Release { pick } => {
                if model.live.is_empty() {
                    continue;
                }
                let (&p, &o) = model.live.iter().nth(pick % model.live.len()).unwrap();
                m.release(p, Order::new(o as u8), &mut src);
                model.live.remove(&p);
                let gone = before.len() - model.expected(&g).len();
                model.counters.reserved -= gone as u64;
                model.counters.releases += gone as u64;
            }
            Op::FailTransiently { block, times } => {
                src.transient.insert(TagBlock::new(block % blocks), times);
            }
            Op::FailPermanently { block } => {
                src.permanent.insert(TagBlock::new(block % blocks));
            }
            Op::Heal => {
                src.transient.clear();
                src.permanent.clear();
            }
        }
        prop_assert_eq!(m.check(), vec![]);
        let expected = model.expected(&g);
        let actual: BTreeMap<_, _> = m
            .reserved_blocks()
            .map(|blk| (blk, m.block_refcount(blk)))
            .collect();
        prop_assert_eq!(&actual, &expected);
        let reserved: BTreeSet<_> = m.reserved_blocks().collect();
        prop_assert_eq!(&src.claimed, &reserved);
        prop_assert_eq!(m.counters(), model.counters);
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn reservations_match_the_model(
        block_size in prop::sample::select(vec![4u64 << 10, 16 << 10, 64 << 10]),
        ops in prop::collection::vec(op(), 100..=200),
    ) {
        run(block_size, &ops)?;
    }
}
