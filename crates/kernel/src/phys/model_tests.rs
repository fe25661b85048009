//! Property tests of the whole physical memory layer against a simple model:
//! a map of allocated blocks, the claimed ranges and the isolated ranges.
//! After every operation the layer's own checker must find nothing, and every
//! result must agree with the model (CMA rules, isolation, claims). Running
//! the same operations twice must give the same frames (determinism).

use super::buddy::tests::{region, small_geometry, small_layout};
use super::contig::testing::{CopyMigrator, block_on};
use super::*;
use crate::phys::buddy::BuddyAllocator;
use crate::phys::check::PhysViolation;
use crate::phys::incremental::FrameCheckCache;
use core::cell::RefCell;
use mte::{Pfn, PfnRange};
use proptest::prelude::*;
use std::collections::BTreeMap;

#[derive(Clone, Debug)]
enum Op {
    Alloc {
        order: u8,
        movable: bool,
        tagged: bool,
    },
    Free {
        pick: usize,
    },
    Split {
        pick: usize,
    },
    Isolate {
        start: u64,
        len: u64,
    },
    Undo {
        pick: usize,
    },
    Take {
        pick: usize,
    },
    ClaimFree {
        start: u64,
        len: u64,
    },
    Return {
        pick: usize,
    },
    Contig {
        start: u64,
        len: u64,
    },
}

fn op() -> impl Strategy<Value = Op> {
    let range = || (0u64..96, 1u64..10);
    prop_oneof![
        5 => (0u8..=4, any::<bool>(), any::<bool>())
            .prop_map(|(order, movable, tagged)| Op::Alloc { order, movable, tagged: tagged && movable }),
        4 => any::<usize>().prop_map(|pick| Op::Free { pick }),
        1 => any::<usize>().prop_map(|pick| Op::Split { pick }),
        1 => range().prop_map(|(start, len)| Op::Isolate { start, len }),
        1 => any::<usize>().prop_map(|pick| Op::Undo { pick }),
        1 => any::<usize>().prop_map(|pick| Op::Take { pick }),
        1 => range().prop_map(|(start, len)| Op::ClaimFree { start, len }),
        1 => any::<usize>().prop_map(|pick| Op::Return { pick }),
        1 => range().prop_map(|(start, len)| Op::Contig { start, len }),
    ]
}

/// Three machines with pageblocks of 4 frames: an aligned one (blocks up to
/// 8), a ragged one with carved-out frames and holes, and one whose DRAM and
/// CMA blocks are buddies (blocks up to 16).
fn layout(which: u8) -> PhysLayout {
    let (geometry, regions) = match which {
        0 => return small_layout(),
        1 => (
            small_geometry(),
            vec![
                region(3, 42, RegionKind::Dram),
                region(45, 5, RegionKind::TagStorageCarvedOut),
                region(57, 13, RegionKind::TagStorageCma),
                region(75, 13, RegionKind::Dram),
            ],
        ),
        _ => (
            PhysGeometry::new(mte::PageGeometry::FOUR_K, Order::new(2), Order::new(4))
                .unwrap()
                .with_section_shift(4)
                .unwrap(),
            vec![
                region(0, 8, RegionKind::Dram),
                region(8, 8, RegionKind::TagStorageCma),
                region(16, 40, RegionKind::Dram),
            ],
        ),
    };
    PhysLayout::new(geometry, regions).unwrap()
}

fn cma_use() -> impl Strategy<Value = CmaUse> {
    prop_oneof![
        Just(CmaUse::Prefer),
        Just(CmaUse::Balance),
        Just(CmaUse::Never)
    ]
}

/// The model: what is allocated, claimed and isolated.
struct Model {
    allocs: BTreeMap<u64, (Order, AllocFlags)>,
    claimed: Vec<ClaimedRange>,
    isolated: Vec<IsolatedRange>,
}

impl Model {
    fn overlaps_alloc(&self, range: PfnRange, pred: impl Fn(AllocFlags) -> bool) -> bool {
        self.allocs.iter().any(|(&head, &(order, flags))| {
            PfnRange::new(Pfn::new(head), order.pages()).overlaps(range) && pred(flags)
        })
    }

    fn overlaps_claimed(&self, range: PfnRange) -> bool {
        self.claimed.iter().any(|c| c.range().overlaps(range))
    }

    fn overlaps_isolated(&self, pageblocks: PfnRange) -> bool {
        self.isolated
            .iter()
            .any(|i| i.pageblocks().overlaps(pageblocks))
    }
}

fn pick<T>(v: &mut Vec<T>, pick: usize) -> Option<T> {
    (!v.is_empty()).then(|| v.remove(pick % v.len()))
}

/// Runs `ops`, checking everything; returns a trace of every result.
fn run(
    layout: &PhysLayout,
    cma: CmaUse,
    order: FreeListOrder,
    ops: &[Op],
) -> Result<Vec<String>, TestCaseError> {
    let phys = RefCell::new(PhysMem::new(layout.clone(), cma));
    phys.borrow_mut().alloc.set_free_list_order(order);
    let g = *layout.geometry();
    let mut model = Model {
        allocs: BTreeMap::new(),
        claimed: Vec::new(),
        isolated: Vec::new(),
    };
    let mut trace = Vec::new();
    let mut cache = FrameCheckCache::default();
    let present = |r: PfnRange| layout.first_hole_in(r).is_none();
    let carved = |r: PfnRange| {
        layout
            .regions_in(r)
            .iter()
            .any(|x| x.kind == RegionKind::TagStorageCarvedOut)
    };
    for op in ops {
        match *op {
            Op::Alloc {
                order,
                movable,
                tagged,
            } => {
                let flags = AllocFlags { movable, tagged };
                let order = Order::new(order);
                let got = phys.borrow_mut().alloc.alloc(order, flags);
                trace.push(format!("{got:?}"));
                match got {
                    Ok(pfn) => {
                        let range = PfnRange::new(pfn, order.pages());
                        prop_assert_eq!(pfn.as_u64() % order.pages(), 0);
                        prop_assert!(
                            !model.overlaps_alloc(range, |_| true),
                            "overlapping allocation"
                        );
                        prop_assert!(!model.overlaps_claimed(range));
                        prop_assert!(!model.overlaps_isolated(g.pageblocks_of(range)));
                        let in_cma = layout.kind_of(pfn) == Some(RegionKind::TagStorageCma);
                        // The RFC: tagged and unmovable pages never from CMA,
                        // and `never` keeps data out of it.
                        prop_assert!(!(in_cma && (tagged || !movable || cma == CmaUse::Never)));
                        if tagged {
                            let mut p = phys.borrow_mut();
                            for i in 0..order.pages() {
                                p.alloc
                                    .frame_mut(pfn + i)
                                    .unwrap()
                                    .flags
                                    .insert(PageFlag::Tagged);
                            }
                        }
                        model.allocs.insert(pfn.as_u64(), (order, flags));
                    }
                    Err(AllocError::OrderTooLarge { .. }) => prop_assert!(order > g.max_order()),
                    Err(AllocError::OutOfMemory { .. }) => {
                        // Out of memory only if no allowed list has a block
                        // of this order or larger.
                        let p = phys.borrow();
                        let use_cma = movable && !tagged && cma != CmaUse::Never;
                        for o in order.get()..=g.max_order().get() {
                            for list in [FreeList::Unmovable, FreeList::Movable] {
                                prop_assert_eq!(p.alloc.free_blocks(Order::new(o), list), 0);
                            }
                            if use_cma {
                                prop_assert_eq!(
                                    p.alloc.free_blocks(Order::new(o), FreeList::Cma),
                                    0
                                );
                            }
                        }
                    }
                }
            }
            Op::Free { pick } => {
                if model.allocs.is_empty() {
                    continue;
                }
                let (&head, &(order, _)) =
                    model.allocs.iter().nth(pick % model.allocs.len()).unwrap();
                let r = phys.borrow_mut().alloc.free(Pfn::new(head), order);
                trace.push(format!("{r:?}"));
                prop_assert_eq!(r, Ok(()));
                model.allocs.remove(&head);
            }
            Op::Split { pick } => {
                if model.allocs.is_empty() {
                    continue;
                }
                let (&head, &(order, flags)) =
                    model.allocs.iter().nth(pick % model.allocs.len()).unwrap();
                prop_assert_eq!(phys.borrow_mut().alloc.split(Pfn::new(head), order), Ok(()));
                for i in 0..order.pages() {
                    model.allocs.insert(head + i, (Order::new(0), flags));
                }
            }
            Op::Isolate { start, len } => {
                let range = PfnRange::new(Pfn::new(start), len);
                let r = phys.borrow_mut().alloc.isolate_range(range);
                trace.push(format!("{r:?}"));
                let unmovable = model.overlaps_alloc(range, |f| !f.movable)
                    || model.overlaps_claimed(range)
                    || carved(range);
                match r {
                    Ok(iso) => {
                        prop_assert!(present(range) && !unmovable);
                        prop_assert!(!model.overlaps_isolated(iso.pageblocks()));
                        model.isolated.push(iso);
                    }
                    Err(IsolateError::Range(_)) => prop_assert!(!present(range)),
                    Err(IsolateError::Unmovable { .. }) => prop_assert!(unmovable),
                    Err(IsolateError::Busy { .. }) => {
                        prop_assert!(model.overlaps_isolated(g.pageblocks_of(range)));
                    }
                    Err(e @ IsolateError::Pinned { .. }) => {
                        prop_assert!(false, "no pins here: {e}")
                    }
                }
            }
            Op::Undo { pick: i } => {
                if let Some(iso) = pick(&mut model.isolated, i) {
                    phys.borrow_mut().alloc.undo_isolate_range(iso);
                }
            }
            Op::Take { pick } => {
                if model.isolated.is_empty() {
                    continue;
                }
                let iso = &model.isolated[pick % model.isolated.len()];
                let r = phys.borrow_mut().alloc.take_isolated_range(iso);
                trace.push(format!("{r:?}"));
                let used = model.overlaps_alloc(iso.range(), |_| true)
                    || model.overlaps_claimed(iso.range());
                match r {
                    Ok(c) => {
                        prop_assert!(!used);
                        model.claimed.push(c);
                    }
                    Err(_) => prop_assert!(used),
                }
            }
            Op::ClaimFree { start, len } => {
                let range = PfnRange::new(Pfn::new(start), len);
                let r = phys.borrow_mut().alloc.claim_free_range(range);
                trace.push(format!("{r:?}"));
                let used = model.overlaps_alloc(range, |_| true)
                    || model.overlaps_claimed(range)
                    || carved(range);
                let isolated = model.overlaps_isolated(g.pageblocks_of(range));
                match r {
                    Ok(c) => {
                        prop_assert!(present(range) && !used && !isolated);
                        model.claimed.push(c);
                    }
                    Err(ClaimError::Range(_)) => prop_assert!(!present(range)),
                    Err(ClaimError::NotFree { .. }) => prop_assert!(used),
                    Err(ClaimError::Isolated { .. }) => prop_assert!(isolated),
                }
                if present(range) && !used && !isolated {
                    prop_assert!(model.claimed.last().is_some_and(|c| c.range() == range));
                }
            }
            Op::Return { pick: i } => {
                if let Some(c) = pick(&mut model.claimed, i) {
                    phys.borrow_mut().alloc.return_range(c);
                }
            }
            Op::Contig { start, len } => {
                let range = PfnRange::new(Pfn::new(start), len);
                let mut m = CopyMigrator::new(&phys);
                let r = block_on(alloc_contig_range(&phys, range, &mut m));
                trace.push(format!("{r:?} {:?}", m.moved));
                for &(src, dst) in &m.moved {
                    let entry = model
                        .allocs
                        .remove(&src.as_u64())
                        .expect("moved an allocation");
                    model.allocs.insert(dst.as_u64(), entry);
                    prop_assert!(!range.contains(dst));
                }
                let unmovable = model.overlaps_alloc(range, |f| !f.movable)
                    || model.overlaps_claimed(range)
                    || carved(range);
                let isolated = model.overlaps_isolated(g.pageblocks_of(range));
                match r {
                    Ok(c) => {
                        prop_assert!(present(range) && !unmovable && !isolated);
                        prop_assert!(
                            !model.overlaps_alloc(range, |_| true),
                            "data left in the claim"
                        );
                        model.claimed.push(c);
                    }
                    Err(ContigError::InvalidRange { .. }) => prop_assert!(!present(range)),
                    Err(ContigError::Unmovable { .. }) => prop_assert!(unmovable),
                    Err(ContigError::Busy {
                        cause: BusyCause::Isolated { .. },
                        ..
                    }) => prop_assert!(isolated),
                    Err(ContigError::NoMemory { .. }) => {
                        prop_assert!(model.overlaps_alloc(range, |_| true));
                    }
                    Err(e) => prop_assert!(false, "unexpected {e}"),
                }
            }
        }
        let v = phys.borrow().check();
        prop_assert!(v.is_empty(), "after {op:?}: {v:#?}");
        // The incremental checker, fed the step's logs, says the same.
        let (full, incremental) = both_checks(&mut phys.borrow_mut().alloc, &mut cache);
        prop_assert_eq!(incremental, full, "after {:?}", op);
        // The free-frame counts (the chunk table's fast answers) equal a
        // count of frame statuses, at chunk edges and across them.
        let a = &phys.borrow().alloc;
        for start in (0..100).step_by(7) {
            for len in [1, 5, 32, 40, 64] {
                let range = PfnRange::new(Pfn::new(start), len);
                let by_status = (start..start + len)
                    .filter(|&f| {
                        matches!(a.frame_status(Pfn::new(f)), Some(FrameStatus::Free { .. }))
                    })
                    .count() as u64;
                prop_assert_eq!(a.free_frames_in(range), by_status, "{:?}", range);
                prop_assert_eq!(a.all_free_in(range), by_status == len, "{:?}", range);
            }
        }
        let stats = phys.borrow().stats();
        let allocated: u64 = model.allocs.values().map(|(o, _)| o.pages()).sum();
        let claimed: u64 = model.claimed.iter().map(|c| c.range().count).sum();
        prop_assert_eq!(stats.allocated_pages, allocated);
        prop_assert_eq!(stats.claimed_pages, claimed);
    }
    // Tear down: everything goes back and the machine is whole again.
    let mut p = phys.borrow_mut();
    for iso in model.isolated.drain(..) {
        p.alloc.undo_isolate_range(iso);
    }
    for c in model.claimed.drain(..) {
        p.alloc.return_range(c);
    }
    for (head, (order, _)) in std::mem::take(&mut model.allocs) {
        p.alloc.free(Pfn::new(head), order).unwrap();
    }
    let v = p.check();
    prop_assert!(v.is_empty(), "after teardown: {v:#?}");
    let stats = p.stats();
    prop_assert_eq!(stats.free_pages, stats.dram_pages + stats.cma_pages);
    prop_assert_eq!(stats.cma_free_pages, stats.cma_pages);
    Ok(trace)
}

/// The allocator's full and incremental verdicts (the latter fed the logs
/// since its last call), each sorted as text.
fn both_checks(a: &mut BuddyAllocator, cache: &mut FrameCheckCache) -> (Vec<String>, Vec<String>) {
    let sorted = |v: Vec<PhysViolation>| {
        let mut v: Vec<String> = v.iter().map(|x| format!("{x:?}")).collect();
        v.sort();
        v
    };
    let full = sorted(a.check());
    let (dirty, log) = (a.frames.take_dirty(), a.chunks.take_log());
    (full, sorted(a.check_incremental(cache, dirty, log).0))
}

/// The chunk table's incremental check against the full one: random
/// allocations and frees, then a count drifted in one chunk (through the
/// table, so logged: seen at once), then a drift the log misses (seen by
/// the full checker alone until a free block of that chunk changes, which
/// is why every change of the table goes through `TakenChunks::adjust`).
#[test]
fn the_incremental_chunk_check_equals_the_full_one() {
    use crate::phys::chunks::TakenChunks;
    let mut a = buddy::tests::small(CmaUse::Never);
    let mut cache = FrameCheckCache::default();
    let mut held: Vec<(Pfn, Order)> = Vec::new();
    let mut seed = 11u64;
    for step in 0..300u64 {
        seed = seed
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        let order = Order::new(((seed >> 40) % 4) as u8);
        if held.is_empty() || !(seed >> 33).is_multiple_of(3) {
            if let Ok(pfn) = a.alloc(order, AllocFlags::USER) {
                held.push((pfn, order));
            }
        } else {
            let (pfn, order) = held.swap_remove(((seed >> 20) % held.len() as u64) as usize);
            a.free(pfn, order).unwrap();
        }
        let (full, incremental) = both_checks(&mut a, &mut cache);
        assert_eq!(incremental, full, "step {step}");
        assert!(full.is_empty(), "step {step}: {full:#?}");
    }
    // A logged drift: both report the chunk, and both stop once it is
    // undone.
    let (pfn, _) = held[0];
    let chunk = TakenChunks::chunk_of(pfn);
    a.chunks.drift(chunk, 1);
    let (full, incremental) = both_checks(&mut a, &mut cache);
    assert_eq!(incremental, full);
    assert!(full.iter().any(|v| v.contains("FreeChunk")), "{full:#?}");
    a.chunks.drift(chunk, -1);
    let (full, incremental) = both_checks(&mut a, &mut cache);
    assert_eq!((&incremental, &full), (&vec![], &vec![]));
    // A drift the log misses: invisible to the incremental check until
    // the chunk's free blocks change, then seen by both.
    a.chunks.drift_unlogged(chunk, 1);
    let (full, incremental) = both_checks(&mut a, &mut cache);
    assert!(full.iter().any(|v| v.contains("FreeChunk")), "{full:#?}");
    assert!(incremental.is_empty(), "{incremental:#?}");
    let (pfn, order) = held.swap_remove(0);
    a.free(pfn, order).unwrap();
    let (full, incremental) = both_checks(&mut a, &mut cache);
    assert_eq!(incremental, full);
    assert!(full.iter().any(|v| v.contains("FreeChunk")), "{full:#?}");
    // Undone through the table (logged): both clean again.
    a.chunks.drift(chunk, -1);
    let (full, incremental) = both_checks(&mut a, &mut cache);
    assert_eq!((&incremental, &full), (&vec![], &vec![]));
    // A missed update of the table (a block taken off a free list behind
    // its back): both report the chunk at that step.
    let head = (0..a.layout().span().end().as_u64())
        .map(Pfn::new)
        .find(|&p| a.free_lists[0][FreeList::Movable.index()].contains(p))
        .or_else(|| {
            (0..a.layout().span().end().as_u64())
                .map(Pfn::new)
                .find(|&p| a.free_lists[1][FreeList::Movable.index()].contains(p))
        })
        .expect("a small free block");
    let order = if a.free_lists[0][FreeList::Movable.index()].contains(head) {
        0
    } else {
        1
    };
    a.free_lists[order][FreeList::Movable.index()].remove(head);
    let (full, incremental) = both_checks(&mut a, &mut cache);
    assert_eq!(incremental, full);
    let first = Pfn::new(TakenChunks::chunk_of(head) << 5);
    assert!(
        full.iter()
            .any(|v| v.contains("FreeChunk") && v.contains(&format!("first: {first:?}"))),
        "{full:#?}"
    );
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn layer_matches_the_model(which in 0u8..3, cma in cma_use(), linux in any::<bool>(),
                               ops in proptest::collection::vec(op(), 1..200)) {
        let layout = layout(which);
        let order = if linux { FreeListOrder::Linux } else { FreeListOrder::Address };
        let first = run(&layout, cma, order, &ops)?;
        // Determinism: the same operations give the same frames and results.
        let second = run(&layout, cma, order, &ops)?;
        prop_assert_eq!(first, second);
    }
}
