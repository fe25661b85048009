//! `Kernel::shape_free_memory`, `Kernel::set_free_frames` and
//! `Kernel::set_free_lists`: the counts (or frames, or lists in their
//! order) asked come out, the checker's frame accounting balances, and bad
//! shapes are refused.

use super::kernel;
use crate::machine::{
    CpuLists, FreeFrames, FreeLists, FreeShape, ListType, ListedBlock, ShapeError,
};
use crate::phys::frame::MigrateType;
use crate::phys::{FreeList, Order};
use mte::Pfn;
use uapi::{Machine, Op};

fn reference_kernel() -> super::Kernel {
    kernel(&[
        ("memory", "512M"),
        ("tag-storage", "dynamic"),
        ("pcp", "on"),
        ("cpus", "2"),
        ("free-list-order", "linux"),
    ])
}

#[test]
fn small_orders_come_out_exactly_and_the_frames_are_accounted() {
    for spread in [true, false] {
        let mut k = reference_kernel();
        let shape = FreeShape {
            free_blocks: vec![3, 0, 2, 1, 5, 1],
            pcp_pages: vec![100, 40],
            pcp_stride: 1,
            spread,
        };
        let made = k.shape_free_memory(&shape).unwrap();
        assert_eq!(made.free_blocks[..5], [3, 0, 2, 1, 5], "spread {spread}");
        assert!(made.free_blocks[5] >= 1);
        assert_eq!(made.pcp_pages, vec![100, 40]);
        assert!(made.held > 0);
        assert!(k.invariant_violations().is_empty());
        // Shaping twice, or after a process exists, is refused.
        assert_eq!(k.shape_free_memory(&shape), Err(ShapeError::NotFresh));
    }
    let mut k = reference_kernel();
    let _ = k.run(&Op::Spawn);
    assert_eq!(
        k.shape_free_memory(&FreeShape {
            pcp_stride: 1,
            ..FreeShape::default()
        }),
        Err(ShapeError::NotFresh)
    );
}

#[test]
fn bad_shapes_are_refused() {
    let mut k = reference_kernel();
    let at_max = FreeShape {
        free_blocks: vec![0; 10].into_iter().chain([1]).collect(),
        pcp_stride: 1,
        ..FreeShape::default()
    };
    assert!(matches!(
        k.shape_free_memory(&at_max),
        Err(ShapeError::Order { order: 10, .. })
    ));
    let too_many = FreeShape {
        free_blocks: vec![0, 0, 0, 0, 0, 0, 0, 0, 0, 1000],
        pcp_stride: 1,
        ..FreeShape::default()
    };
    assert!(matches!(
        k.shape_free_memory(&too_many),
        Err(ShapeError::TooLarge { .. })
    ));
    let third_cpu = FreeShape {
        pcp_pages: vec![0, 0, 5],
        pcp_stride: 1,
        ..FreeShape::default()
    };
    assert_eq!(
        k.shape_free_memory(&third_cpu),
        Err(ShapeError::Cpu { cpu: 2, cpus: 2 })
    );
    let no_stride = FreeShape::default();
    assert_eq!(k.shape_free_memory(&no_stride), Err(ShapeError::Stride));
    let mut off = kernel(&[("memory", "512M"), ("tag-storage", "dynamic")]);
    let pcp = FreeShape {
        pcp_pages: vec![1],
        pcp_stride: 1,
        ..FreeShape::default()
    };
    assert_eq!(off.shape_free_memory(&pcp), Err(ShapeError::NoPcp));
}

/// A single slot (the first one always moves past the zero page's
/// pageblock) and trailing zero counts past the maximum order: both used
/// to panic (a gap subtracted from room the skip had used up; an order
/// built for every index).
#[test]
fn a_single_slot_and_zero_counts_past_the_maximum_order_are_shaped() {
    for free_blocks in [
        vec![1],
        vec![0, 0, 0, 0, 0, 0, 0, 0, 0, 1],
        vec![2].into_iter().chain([0; 70]).collect(),
    ] {
        for spread in [true, false] {
            let mut k = reference_kernel();
            let shape = FreeShape {
                free_blocks: free_blocks.clone(),
                pcp_stride: 1,
                spread,
                ..FreeShape::default()
            };
            let made = k.shape_free_memory(&shape).unwrap();
            let asked: u64 = free_blocks.iter().sum();
            assert!(
                made.free_blocks.iter().sum::<u64>() >= asked,
                "{free_blocks:?}"
            );
            assert!(k.invariant_violations().is_empty());
        }
    }
}

#[test]
fn exact_frames_merge_into_maximal_aligned_blocks_and_the_rest_is_held() {
    let mut k = reference_kernel();
    let frames = FreeFrames {
        // One whole max-order block, and 7 frames from an odd offset:
        // one block each of orders 0, 1 and 2.
        buddy: vec![(1024, 1024), (4097, 7)],
        pcp: vec![vec![9000, 9002], vec![9004]],
    };
    let made = k.set_free_frames(&frames).unwrap();
    assert_eq!(made.free_blocks, [1, 1, 1, 0, 0, 0, 0, 0, 0, 0, 1]);
    assert_eq!(made.pcp_pages, vec![2, 1]);
    // Nothing else is free (the counts above are every free block): the
    // rest of DRAM is the kernel's, but the frames the model held before.
    assert!(made.held > 100_000, "held {}", made.held);
    assert!(k.invariant_violations().is_empty());
    assert_eq!(k.set_free_frames(&frames), Err(ShapeError::NotFresh));
}

#[test]
fn bad_frames_are_refused() {
    let mut k = reference_kernel();
    let twice = FreeFrames {
        buddy: vec![(0, 8)],
        pcp: vec![vec![4]],
    };
    assert!(matches!(
        k.set_free_frames(&twice),
        Err(ShapeError::Frames { offset: 4, .. })
    ));
    let outside = FreeFrames {
        buddy: vec![(131_070, 4)],
        pcp: Vec::new(),
    };
    assert!(matches!(
        k.set_free_frames(&outside),
        Err(ShapeError::Frames {
            offset: 131_072,
            ..
        })
    ));
    let third_cpu = FreeFrames {
        buddy: Vec::new(),
        pcp: vec![vec![], vec![], vec![5]],
    };
    assert_eq!(
        k.set_free_frames(&third_cpu),
        Err(ShapeError::Cpu { cpu: 2, cpus: 2 })
    );
    let mut off = kernel(&[("memory", "512M"), ("tag-storage", "dynamic")]);
    let pcp = FreeFrames {
        buddy: Vec::new(),
        pcp: vec![vec![1]],
    };
    assert_eq!(off.set_free_frames(&pcp), Err(ShapeError::NoPcp));
}

fn block(offset: u64, order: u8, list: ListType) -> ListedBlock {
    ListedBlock {
        offset,
        order,
        list,
    }
}

#[test]
fn recorded_lists_come_out_in_their_order_on_their_types() {
    let mut k = reference_kernel();
    let dram = 0x80000u64;
    let lists = FreeLists {
        buddy: vec![
            // The movable order-0 list, head first: 201 then 101.
            block(201, 0, ListType::Movable),
            block(1000, 3, ListType::Movable),
            block(101, 0, ListType::Movable),
            // A kernel (reclaimable) list's block: its pageblock turns
            // unmovable.
            block(70_001, 0, ListType::Unmovable),
        ],
        cpus: vec![
            CpuLists {
                blocks: vec![
                    block(5000, 0, ListType::Movable),
                    block(5002, 0, ListType::Movable),
                    block(4998, 0, ListType::Movable),
                    block(6000, 1, ListType::Unmovable),
                ],
                high: 1234,
                ..CpuLists::default()
            },
            CpuLists {
                // A tag storage page (the frames after DRAM's 131,072).
                blocks: vec![block(131_072 + 10, 0, ListType::Cma)],
                ..CpuLists::default()
            },
        ],
    };
    let made = k.set_free_lists(&lists).unwrap();
    assert_eq!(
        (made.buddy_unplaced, made.pcp_unplaced, made.types_unset),
        (0, 0, 0)
    );
    assert_eq!(made.made.pcp_pages, vec![5, 1]);
    assert!(k.invariant_violations().is_empty());
    {
        let phys = k.mem.phys();
        let a = &phys.alloc;
        let heads = |order: u8, list: FreeList| -> Vec<u64> {
            a.free_list_heads(Order::new(order), list)
                .into_iter()
                .map(|p| p.as_u64() - dram)
                .collect()
        };
        assert_eq!(heads(0, FreeList::Movable), vec![201, 101]);
        assert_eq!(heads(3, FreeList::Movable), vec![1000]);
        assert_eq!(heads(0, FreeList::Unmovable), vec![70_001]);
        // A listed block types its own pageblock only, not the next one.
        let list = |o: u64| a.list_of(Pfn::new(dram + o));
        assert_eq!(list(6000), Some(FreeList::Unmovable));
        assert_eq!(list(70_001), Some(FreeList::Unmovable));
        assert_eq!(list(6144), Some(FreeList::Movable));
        assert_eq!(list(70_144), Some(FreeList::Movable));
        let pcp = |cpu: usize, order: u8, mt: MigrateType| -> Vec<u64> {
            a.pcp_list_heads(cpu, Order::new(order), mt)
                .into_iter()
                .map(|p: Pfn| p.as_u64() - dram)
                .collect()
        };
        assert_eq!(pcp(0, 0, MigrateType::Movable), vec![5000, 5002, 4998]);
        assert_eq!(pcp(0, 1, MigrateType::Unmovable), vec![6000]);
        assert_eq!(pcp(1, 0, MigrateType::Movable), vec![131_082]);
    }
    assert_eq!(k.set_free_lists(&lists), Err(ShapeError::NotFresh));
}

#[test]
fn bad_lists_are_refused() {
    let mut k = reference_kernel();
    let twice = FreeLists {
        buddy: vec![block(0, 3, ListType::Movable)],
        cpus: vec![CpuLists {
            blocks: vec![block(4, 0, ListType::Movable)],
            ..CpuLists::default()
        }],
    };
    assert!(matches!(
        k.set_free_lists(&twice),
        Err(ShapeError::Frames { offset: 4, .. })
    ));
    let outside = FreeLists {
        buddy: vec![block(135_168, 0, ListType::Cma)],
        cpus: Vec::new(),
    };
    assert!(matches!(
        k.set_free_lists(&outside),
        Err(ShapeError::Frames {
            offset: 135_168,
            ..
        })
    ));
    let order = FreeLists {
        buddy: vec![block(0, 11, ListType::Movable)],
        cpus: Vec::new(),
    };
    assert!(matches!(
        k.set_free_lists(&order),
        Err(ShapeError::Order { order: 11, .. })
    ));
    let misaligned = FreeLists {
        buddy: Vec::new(),
        cpus: vec![CpuLists {
            blocks: vec![block(1, 1, ListType::Movable)],
            ..CpuLists::default()
        }],
    };
    assert!(matches!(
        k.set_free_lists(&misaligned),
        Err(ShapeError::Misaligned {
            offset: 1,
            order: 1
        })
    ));
    let third_cpu = FreeLists {
        buddy: Vec::new(),
        cpus: vec![
            CpuLists::default(),
            CpuLists::default(),
            CpuLists {
                blocks: vec![block(5, 0, ListType::Movable)],
                ..CpuLists::default()
            },
        ],
    };
    assert_eq!(
        k.set_free_lists(&third_cpu),
        Err(ShapeError::Cpu { cpu: 2, cpus: 2 })
    );
    let mut off = kernel(&[("memory", "512M"), ("tag-storage", "dynamic")]);
    let pcp = FreeLists {
        buddy: Vec::new(),
        cpus: vec![CpuLists {
            blocks: vec![block(1, 0, ListType::Movable)],
            ..CpuLists::default()
        }],
    };
    assert_eq!(off.set_free_lists(&pcp), Err(ShapeError::NoPcp));
}
