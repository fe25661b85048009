//! Tests of the physical memory manager. Frame numbers are worked out by hand
//! from the default scenario machine (`docs/language.md`,
//! "Machine": 64 MiB of DRAM at 0x8000_0000 = frames 0x80000..0x84000, its
//! 2 MiB of tag storage right after = frames 0x84000..0x84200, blocks of one
//! 4 KiB page: 512 blocks of 32 data pages each, docs/model.md §1) and the buddy
//! rules of `crate::phys::buddy`.

mod model;

use super::*;
use crate::phys::{
    FrameStatus, FreeError, FreeList, MigrateError, MigrateType, PageFlag, PhysViolation,
};
use core::future::Future;
use mte::{PfnRange, PhysAddr, Tag};
use platform::spec::{PlatformSpec, TagStorageData};
use platform::{MemRange, TagRegion};
use sched::{Chooser, RunLimits, Task, explore_exhaustive};
use tagstore::Storage;
use tagstore::{ClaimCause, ClaimError};
use uapi::Counter;

const BASE: u64 = 0x80000;
/// First tag storage frame of the default machine (0x8400_0000).
const TAGS: u64 = 0x84000;

fn p(pfn: u64) -> Pfn {
    Pfn::new(pfn)
}

fn o(order: u8) -> Order {
    Order::new(order)
}

fn spec(policy: Design, data: TagStorageData) -> PlatformSpec {
    PlatformSpec {
        tag_storage: policy,
        tag_storage_data: data,
        ..PlatformSpec::default()
    }
}

fn boot(spec: PlatformSpec) -> (Sched, Memory) {
    let sched = Sched::new();
    let platform = Platform::from_spec(&spec).expect("valid platform");
    let mem = Memory::new(&platform, &sched).expect("boots");
    (sched, mem)
}

fn default_dynamic(data: TagStorageData) -> (Sched, Memory) {
    boot(spec(Design::DYNAMIC, data))
}

/// Runs one kernel path to completion on CPU 0.
fn run<T>(sched: &Sched, fut: impl Future<Output = T>) -> T {
    sched
        .block_on(fut, RunLimits::default())
        .expect("the path completes")
}

#[track_caller]
fn clean(mem: &Memory) {
    let v = mem.check();
    assert!(v.is_empty(), "violations: {v:#?}");
}

fn status(mem: &Memory, pfn: Pfn) -> Option<FrameStatus> {
    mem.phys().alloc.frame_status(pfn)
}

fn flags(mem: &Memory, pfn: Pfn) -> Vec<PageFlag> {
    mem.phys()
        .alloc
        .frame(pfn)
        .map(|m| m.flags.iter().collect())
        .unwrap_or_default()
}

/// A page of recognisable bytes.
fn pattern(seed: u8) -> Vec<u8> {
    (0..4096u32)
        .map(|i| (i as u8).wrapping_mul(31) ^ seed)
        .collect()
}

fn fill(mem: &Memory, pfn: Pfn, bytes: &[u8]) {
    mem.phys_mut()
        .contents
        .write(pfn.addr(12), bytes)
        .expect("present");
}

fn bytes_of(mem: &Memory, pfn: Pfn) -> Vec<u8> {
    let mut out = vec![0; 4096];
    mem.phys().contents.read(pfn.addr(12), &mut out).unwrap();
    out
}

/// Under `prefer`, 32 movable pages fill CMA from 0x84001 (0x84000 is the
/// zero page's block) up to 0x84020, ascending (buddy: lowest frame of the
/// smallest block first). 0x84020 holds the tags of frames 0x80400..0x80420
/// (block 32 = 0x400 / 32), the first frames a movable DRAM request gets
/// (0x80000..0x80400 became unmovable pageblocks when the zero page was
/// allocated: the kernel request claimed the whole order-10 block).
fn fill_cma_up_to_block_32(mem: &Memory) -> Vec<Pfn> {
    let pages: Vec<Pfn> = (0..32)
        .map(|i| {
            let pfn = mem.alloc(o(0), Gfp::USER).unwrap();
            fill(mem, pfn, &pattern(i));
            pfn
        })
        .collect();
    let expected: Vec<Pfn> = (1..=32).map(|i| p(TAGS + i)).collect();
    assert_eq!(pages, expected);
    pages
}

// ----- boot ------------------------------------------------------------------

#[test]
fn boot_under_dynamic_reserves_the_zero_pages_block() {
    let (_, mem) = default_dynamic(TagStorageData::Balance);
    // The zero page is the first kernel page: frame 0x80000. Its tags are in
    // block 0 (frame 0x84000), claimed at activation (RFC v3 patch
    // "Reserve tag block for the zero page").
    assert_eq!(mem.zero_page(), p(BASE));
    assert_eq!(status(&mem, p(TAGS)), Some(FrameStatus::Claimed));
    assert_eq!(mem.tag_storage().block_refcount(TagBlock::new(0)), 1);
    assert_eq!(
        flags(&mem, p(BASE)),
        [
            PageFlag::Tagged,
            PageFlag::TagStorageReserved,
            PageFlag::Kernel
        ]
    );
    // mem.free: 16384 DRAM + 512 tag storage frames, less the zero page and
    // its claimed block (docs/model.md §5: tag storage pages included).
    let c = mem.counters();
    assert_eq!(
        c,
        MemCounters {
            mem_pages: 16384,
            mem_free: 16384 + 512 - 1 - 1,
            tag_storage_pages: 512,
            tag_storage_blocks: 512,
            tag_storage_reserved: 1,
            tag_storage_data_pages: 0,
            tag_storage_reservations: 1,
            tag_storage_releases: 0,
            tag_storage_migrations: 0,
            tag_storage_reserve_failures: 0,
            pages_tagged: 1,
            migrate_pages: 0,
            // The zero page's free one-page block, straight off the buddy
            // allocator.
            tag_storage_fast_path: 1,
            tag_storage_contig: 0,
        }
    );
    assert_eq!(c.get(Counter::MemFree), Some(16894));
    assert_eq!(c.get(Counter::FaultAnon), None, "kept by another layer");
    assert_eq!(mem.read_page_tags(p(BASE)).unwrap(), vec![Tag::ZERO; 256]);
    clean(&mem);
}

#[test]
fn boot_under_static_carves_out_every_block() {
    let (_, mem) = boot(spec(Design::STATIC, TagStorageData::Prefer));
    // docs/model.md §5: under static every block counts as reserved from boot and
    // no tag storage page is ever free or holds data.
    let c = mem.counters();
    assert_eq!(
        c,
        MemCounters {
            mem_pages: 16384,
            mem_free: 16384 - 1,
            tag_storage_pages: 512,
            tag_storage_blocks: 512,
            tag_storage_reserved: 512,
            tag_storage_data_pages: 0,
            tag_storage_reservations: 512,
            tag_storage_releases: 0,
            tag_storage_migrations: 0,
            tag_storage_reserve_failures: 0,
            pages_tagged: 1,
            migrate_pages: 0,
            tag_storage_fast_path: 0,
            tag_storage_contig: 0,
        }
    );
    assert_eq!(status(&mem, p(TAGS + 7)), Some(FrameStatus::CarvedOut));
    assert_eq!(mem.tag_storage().block_refcount(TagBlock::new(0)), 1);
    // `prefer` is ignored: there is no CMA, data goes to DRAM.
    let data = mem.alloc(o(0), Gfp::USER).unwrap();
    assert!(mem.geometry().is_dram(data));
    // A tagged allocation reserves by reference only, and succeeds.
    let page = run(
        mem.sched(),
        mem.alloc_tagged(o(0), Gfp::USER_TAGGED, &mut FrameMover::default()),
    )
    .unwrap();
    assert!(page.reserved());
    assert_eq!(mem.counters().tag_storage_reservations, 512);
    assert_eq!(mem.counters().pages_tagged, 2);
    clean(&mem);
    run(mem.sched(), mem.free(page.pfn, o(0))).unwrap();
    assert_eq!(mem.counters().tag_storage_reserved, 512);
    clean(&mem);
}

#[test]
fn boot_under_none_has_no_tags() {
    let (_, mem) = boot(spec(Design::NONE, TagStorageData::Balance));
    let c = mem.counters();
    assert_eq!(c.mem_free, 16384 - 1);
    // docs/model.md §5: under none every tag_storage.* counter is 0; the zero
    // page is not tagged (no MTE: cpu_enable_mte() never runs).
    for (counter, value) in c.list() {
        if counter.name().starts_with("tag_storage.") || counter == Counter::PagesTagged {
            assert_eq!(value, 0, "{counter}");
        }
    }
    assert_eq!(flags(&mem, p(BASE)), [PageFlag::Kernel]);
    // No tag storage: tags read 0, writes are ignored (docs/model.md §1).
    let pa = PhysAddr::new(0x8000_1000);
    mem.write_tag(pa, Tag::new(5).unwrap()).unwrap();
    assert_eq!(mem.read_tag(pa), Ok(Tag::ZERO));
    assert_eq!(mem.phys().contents.pages_with_data(), 0);
    // A tagged allocation gets a page but never tag storage.
    let page = run(
        mem.sched(),
        mem.alloc_tagged(o(0), Gfp::USER_TAGGED, &mut FrameMover::default()),
    )
    .unwrap();
    assert_eq!(
        page.reservation,
        Err(ReserveTagError::TagStorage(ReserveError::NoTagStorage))
    );
    assert_eq!(mem.counters().pages_tagged, 0);
    clean(&mem);
}

#[test]
fn a_cma_region_sharing_a_pageblock_with_dram_is_refused() {
    // 1 MiB of DRAM ends inside the pageblock 0x80000..0x80200 where its
    // 32 KiB of tag storage starts: Linux's cma_init_reserved_mem() refuses
    // such an area. Static carves it out, which is fine.
    let mut s = spec(Design::DYNAMIC, TagStorageData::Balance);
    s.memory = 1 << 20;
    let platform = Platform::from_spec(&s).unwrap();
    assert!(matches!(
        Memory::new(&platform, &Sched::new()),
        Err(MemInitError::Layout(LayoutError::CmaSharesPageblock { .. }))
    ));
    s.tag_storage = Design::STATIC;
    let platform = Platform::from_spec(&s).unwrap();
    let mem = Memory::new(&platform, &Sched::new()).unwrap();
    clean(&mem);
}

// ----- allocation ------------------------------------------------------------

/// 4 MiB of DRAM (frames 0x80000..0x80400) and 128 KiB of tag storage
/// (0x80400..0x80420, 32 blocks), sections of 1024 frames.
fn small(policy: Design, data: TagStorageData) -> (Sched, Memory) {
    let mut s = spec(policy, data);
    s.memory = 4 << 20;
    let platform = Platform::from_spec(&s).unwrap();
    let sched = Sched::new();
    let config = MemConfig {
        section_shift: Some(10),
        ..MemConfig::default()
    };
    let mem = Memory::with_config(&platform, &sched, config).unwrap();
    (sched, mem)
}

#[test]
fn tagged_allocations_never_come_from_cma() {
    let (sched, mem) = small(Design::DYNAMIC, TagStorageData::Prefer);
    // Fill DRAM with tagged pages allocated without reservation (the
    // synchronous path): 1024 frames less the zero page.
    let tagged = Gfp {
        tagged: true,
        ..Gfp::USER
    };
    let pages: Vec<Pfn> = (0..1023)
        .map(|_| mem.alloc(o(0), tagged).unwrap())
        .collect();
    assert!(pages.iter().all(|&pfn| mem.geometry().is_dram(pfn)));
    assert_eq!(mem.counters().mem_free, 32 - 1, "CMA less block 0");
    // The RFC's arch_alloc_cma(): __GFP_TAGGED never gets CMA, even with 31
    // free CMA frames; an untagged movable request still does.
    assert!(matches!(
        mem.alloc(o(0), tagged),
        Err(AllocError::OutOfMemory { .. })
    ));
    assert!(matches!(
        run(
            &sched,
            mem.alloc_tagged(o(0), Gfp::USER_TAGGED, &mut FrameMover::default())
        ),
        Err(AllocError::OutOfMemory { .. })
    ));
    let data = mem.alloc(o(0), Gfp::USER).unwrap();
    assert_eq!(data, p(0x80401));
    assert_eq!(mem.counters().tag_storage_data_pages, 1);
    clean(&mem);
    for pfn in pages.into_iter().chain([data]) {
        run(&sched, mem.free(pfn, o(0))).unwrap();
    }
    assert_eq!(mem.counters().mem_free, 1024 + 32 - 2);
    clean(&mem);
}

/// `all_free_in` (answered at the first frame in use) is the count form
/// `free_frames_in(r) == r.count`, over ranges that start and end inside
/// free, allocated and kernel blocks.
#[test]
fn all_free_agrees_with_the_free_count() {
    let (sched, mem) = default_dynamic(TagStorageData::Prefer);
    let kept: Vec<Pfn> = (0..6)
        .map(|i| mem.alloc(o(i % 3), Gfp::USER).unwrap())
        .collect();
    let freed = mem.alloc(o(2), Gfp::USER).unwrap();
    run(&sched, mem.free(freed, o(2))).unwrap();
    let lowest = kept
        .iter()
        .min()
        .copied()
        .unwrap()
        .as_u64()
        .saturating_sub(64);
    let mut seen = [false; 2];
    for start in (lowest..lowest + 256).step_by(3) {
        for count in [1, 2, 5, 16, 33, 64] {
            let r = PfnRange::new(p(start), count);
            let all = mem.all_free_in(r);
            assert_eq!(all, mem.free_frames_in(r) == count, "{r:?}");
            seen[usize::from(all)] = true;
        }
    }
    assert_eq!(seen, [true, true], "both answers reached");
    clean(&mem);
}

#[test]
fn gfp_kernel_pages_are_unmovable_and_zeroed_on_request() {
    let (sched, mem) = default_dynamic(TagStorageData::Prefer);
    let page = mem.alloc(o(1), Gfp::KERNEL).unwrap();
    // Unmovable requests never get CMA, even under prefer; the zero page's
    // unmovable pageblock serves it: 0x80002 (order-1 buddy of 0x80000's
    // split).
    assert_eq!(page, p(BASE + 2));
    assert_eq!(flags(&mem, page + 1), [PageFlag::Kernel]);
    fill(&mem, page, &pattern(9));
    run(&sched, mem.free(page, o(1))).unwrap();
    let again = mem
        .alloc(
            o(1),
            Gfp {
                zero: true,
                ..Gfp::KERNEL
            },
        )
        .unwrap();
    assert_eq!(again, page);
    assert_eq!(bytes_of(&mem, page), vec![0; 4096], "__GFP_ZERO");
    // The kernel's own pages never move.
    assert_eq!(
        run(&sched, mem.migrate_unowned(page)),
        Err(MigrateError::Unmovable)
    );
    clean(&mem);
}

// ----- reservation and migration ----------------------------------------------

#[test]
fn a_tagged_allocation_migrates_data_out_of_its_tag_block() {
    let (sched, mem) = default_dynamic(TagStorageData::Prefer);
    let data = fill_cma_up_to_block_32(&mem);
    assert_eq!(mem.counters().tag_storage_data_pages, 32);
    let before = bytes_of(&mem, p(TAGS + 32));
    let mut mover = FrameMover::default();
    let page = run(&sched, mem.alloc_tagged(o(0), Gfp::USER_TAGGED, &mut mover)).unwrap();
    // The page is the first movable DRAM frame; its block's only frame held
    // data, moved to the next movable DRAM frame (never CMA).
    assert_eq!(page.pfn, p(BASE + 0x400));
    assert_eq!(page.reservation, Ok(()));
    assert_eq!(mover.moved, [(p(TAGS + 32), p(BASE + 0x401))]);
    assert_eq!(bytes_of(&mem, p(BASE + 0x401)), before, "nothing lost");
    assert_eq!(status(&mem, p(TAGS + 32)), Some(FrameStatus::Claimed));
    assert_eq!(
        flags(&mem, page.pfn),
        [PageFlag::Tagged, PageFlag::TagStorageReserved]
    );
    assert_eq!(mem.read_page_tags(page.pfn).unwrap(), vec![Tag::ZERO; 256]);
    // Used: zero page, block 0, 32 data pages (31 in CMA, 1 moved to DRAM),
    // the tagged page, block 32.
    let c = mem.counters();
    assert_eq!(c.mem_free, 16896 - 36);
    assert_eq!(c.tag_storage_reserved, 2);
    assert_eq!(c.tag_storage_reservations, 2);
    assert_eq!(c.tag_storage_data_pages, 31);
    assert_eq!(c.tag_storage_migrations, 1);
    assert_eq!(c.migrate_pages, 1);
    assert_eq!(c.pages_tagged, 2);
    clean(&mem);

    // Freeing the page drops the block's last reference: it goes back to
    // CMA at once (RFC free_tag_storage()).
    run(&sched, mem.free(page.pfn, o(0))).unwrap();
    let c = mem.counters();
    assert_eq!(c.tag_storage_reserved, 1);
    assert_eq!(c.tag_storage_releases, 1);
    assert_eq!(c.mem_free, 16896 - 34);
    assert_eq!(c.pages_tagged, 1);
    assert!(matches!(
        status(&mem, p(TAGS + 32)),
        Some(FrameStatus::Free {
            list: FreeList::Cma,
            ..
        })
    ));
    clean(&mem);
    // The other data pages never moved.
    for (i, &pfn) in data[..31].iter().enumerate() {
        assert_eq!(bytes_of(&mem, pfn), pattern(i as u8));
    }
}

#[test]
fn pinned_data_makes_the_reservation_fail_and_changes_nothing() {
    let (sched, mem) = default_dynamic(TagStorageData::Prefer);
    fill_cma_up_to_block_32(&mem);
    mem.phys_mut().alloc.frame_mut(p(TAGS + 32)).unwrap().pins = 1;
    let before = mem.counters();
    let mut mover = FrameMover::default();
    let page = run(&sched, mem.alloc_tagged(o(0), Gfp::USER_TAGGED, &mut mover)).unwrap();
    // Best effort (RFC v3): the page comes back without tag storage. A pin
    // is permanent for phys (isolation finds it), so one attempt only.
    assert_eq!(page.pfn, p(BASE + 0x400));
    let expected = ReserveTagError::TagStorage(ReserveError::Claim {
        block: TagBlock::new(32),
        attempts: 1,
        source: ClaimError::Permanent {
            cause: ClaimCause::Pinned,
            pfn: Some(p(TAGS + 32)),
        },
    });
    assert_eq!(page.reservation, Err(expected));
    assert!(!expected.is_transient());
    assert!(mover.moved.is_empty());
    // __GFP_ZEROTAGS is not honoured without tag storage: not tagged.
    assert!(flags(&mem, page.pfn).is_empty());
    let after = mem.counters();
    assert_eq!(
        after,
        MemCounters {
            mem_free: before.mem_free - 1,
            tag_storage_reserve_failures: 1,
            // The block held data: the claim went the contiguous way.
            tag_storage_contig: before.tag_storage_contig + 1,
            ..before
        }
    );
    assert_eq!(bytes_of(&mem, p(TAGS + 32)), pattern(31));
    clean(&mem);

    // Unpinned, the fault path's retry reserves (and migrates).
    mem.phys_mut().alloc.frame_mut(p(TAGS + 32)).unwrap().pins = 0;
    run(&sched, mem.reserve_tag_storage(page.pfn, o(0), &mut mover)).unwrap();
    assert_eq!(mover.moved, [(p(TAGS + 32), p(BASE + 0x401))]);
    assert!(mem.tag_storage_reserved(page.pfn));
    assert!(!mem.page_mte_tagged(page.pfn), "tags not initialised yet");
    // Reserving again is a no-op (RFC: page_tag_storage_reserved() first).
    run(&sched, mem.reserve_tag_storage(page.pfn, o(0), &mut mover)).unwrap();
    assert_eq!(mem.counters().tag_storage_reservations, 2);
    clean(&mem);
}

/// Every migration fails transiently; counts the attempts.
#[derive(Default)]
struct BusyMover {
    calls: u32,
}

impl PageMover for BusyMover {
    async fn move_page(&mut self, mem: &Memory, _pfn: Pfn) -> Result<(), MigrateError> {
        mem.sched().preempt_point().await;
        self.calls += 1;
        Err(MigrateError::Busy)
    }
}

#[test]
fn transient_failures_are_retried_a_bounded_number_of_times() {
    let (sched, mem) = default_dynamic(TagStorageData::Prefer);
    fill_cma_up_to_block_32(&mem);
    let mut mover = BusyMover::default();
    let page = run(&sched, mem.alloc_tagged(o(0), Gfp::USER_TAGGED, &mut mover)).unwrap();
    // tagstore: 3 claims (Linux cma_alloc_range(..., 3, ...)); phys: each
    // claim gives up after 5 passes that free nothing
    // (__alloc_contig_migrate_range()).
    assert_eq!(mover.calls, 3 * crate::phys::MIGRATE_TRIES);
    let err = page.reservation.unwrap_err();
    assert!(err.is_transient());
    assert!(matches!(
        err,
        ReserveTagError::TagStorage(ReserveError::Claim {
            attempts: 3,
            source: ClaimError::Transient {
                cause: ClaimCause::Busy,
                ..
            },
            ..
        })
    ));
    assert_eq!(mem.counters().tag_storage_reserve_failures, 1);
    assert_eq!(mem.counters().tag_storage_reserved, 1);
    clean(&mem);
}

#[test]
fn the_frame_mover_refuses_mapped_pages() {
    let (sched, mem) = default_dynamic(TagStorageData::Prefer);
    fill_cma_up_to_block_32(&mem);
    mem.phys_mut().alloc.frame_mut(p(TAGS + 32)).unwrap().owner = crate::phys::Owner::new(7);
    let page = run(
        &sched,
        mem.alloc_tagged(o(0), Gfp::USER_TAGGED, &mut FrameMover::default()),
    )
    .unwrap();
    assert!(matches!(
        page.reservation,
        Err(ReserveTagError::TagStorage(ReserveError::Claim {
            source: ClaimError::Permanent {
                cause: ClaimCause::Unmovable,
                ..
            },
            ..
        }))
    ));
    clean(&mem);
}

#[test]
fn an_order_9_allocation_reserves_16_blocks_and_releases_them() {
    let (sched, mem) = default_dynamic(TagStorageData::Balance);
    let page = run(
        &sched,
        mem.alloc_tagged(o(9), Gfp::USER_TAGGED, &mut FrameMover::default()),
    )
    .unwrap();
    // 512 frames at 0x80400 (the first movable order-9 block): tags in
    // frames 0x84020..0x84030, 16 blocks (Geometry::blocks_for_order(9)).
    assert_eq!(page.pfn, p(BASE + 0x400));
    assert!(page.reserved());
    assert_eq!(mem.tag_storage().block_refcount(TagBlock::new(32)), 32);
    assert_eq!(mem.tag_storage().block_refcount(TagBlock::new(47)), 32);
    assert_eq!(mem.tag_storage().block_refcount(TagBlock::new(48)), 0);
    let c = mem.counters();
    assert_eq!((c.tag_storage_reserved, c.pages_tagged), (17, 513));
    assert_eq!(c.mem_free, 16896 - 2 - 512 - 16);
    clean(&mem);
    run(&sched, mem.free(page.pfn, o(9))).unwrap();
    let c = mem.counters();
    assert_eq!((c.tag_storage_reserved, c.tag_storage_releases), (1, 16));
    assert_eq!(c.mem_free, 16896 - 2);
    clean(&mem);
}

#[test]
fn reservation_refuses_frames_not_in_use_and_partial_ranges() {
    let (sched, mem) = default_dynamic(TagStorageData::Prefer);
    let mut mover = FrameMover::default();
    assert!(matches!(
        run(
            &sched,
            mem.reserve_tag_storage(p(BASE + 0x800), o(0), &mut mover)
        ),
        Err(ReserveTagError::NotInUse {
            status: Some(FrameStatus::Free { .. }),
            ..
        })
    ));
    // A page in tag storage has no tag storage of its own (docs/model.md §1).
    let cma = mem.alloc(o(0), Gfp::USER).unwrap();
    assert_eq!(cma, p(TAGS + 1));
    assert!(matches!(
        run(&sched, mem.reserve_tag_storage(cma, o(0), &mut mover)),
        Err(ReserveTagError::TagStorage(ReserveError::Range(_)))
    ));
    // Frame 0 of an order-1 block reserved alone, then the block: partly.
    let pair = mem.alloc(o(1), Gfp::USER).unwrap();
    assert_eq!(pair, p(TAGS + 2));
    let pair = mem
        .alloc(
            o(1),
            Gfp {
                tagged: true,
                ..Gfp::USER
            },
        )
        .unwrap();
    assert_eq!(pair, p(BASE + 0x400));
    run(&sched, mem.reserve_tag_storage(pair, o(0), &mut mover)).unwrap();
    assert_eq!(
        run(&sched, mem.reserve_tag_storage(pair, o(1), &mut mover)),
        Err(ReserveTagError::PartlyReserved {
            pfn: pair,
            order: o(1)
        })
    );
    assert_eq!(mem.tag_storage().block_refcount(TagBlock::new(32)), 1);
    clean(&mem);
    // Freeing releases only the reserved frame's reference.
    run(&sched, mem.free(pair, o(1))).unwrap();
    assert_eq!(mem.counters().tag_storage_reserved, 1);
    clean(&mem);
}

#[test]
fn a_refused_free_changes_nothing() {
    let (sched, mem) = default_dynamic(TagStorageData::Balance);
    assert_eq!(
        run(&sched, mem.free(mem.zero_page(), o(0))),
        Err(MemFreeError::ZeroPage { pfn: p(BASE) })
    );
    let page = run(
        &sched,
        mem.alloc_tagged(o(0), Gfp::USER_TAGGED, &mut FrameMover::default()),
    )
    .unwrap();
    mem.phys_mut().alloc.frame_mut(page.pfn).unwrap().mapcount = 1;
    let before = mem.counters();
    assert!(matches!(
        run(&sched, mem.free(page.pfn, o(0))),
        Err(MemFreeError::Phys(FreeError::BadPage { .. }))
    ));
    assert_eq!(mem.counters(), before);
    assert_eq!(
        flags(&mem, page.pfn),
        [PageFlag::Tagged, PageFlag::TagStorageReserved]
    );
    clean(&mem);
    assert!(matches!(
        run(&sched, mem.free(page.pfn, o(1))),
        Err(MemFreeError::Phys(FreeError::WrongOrder { .. }))
    ));
    mem.phys_mut().alloc.frame_mut(page.pfn).unwrap().mapcount = 0;
    run(&sched, mem.free(page.pfn, o(0))).unwrap();
    clean(&mem);
}

#[test]
fn migrating_a_tagged_page_carries_its_tags() {
    // Compaction of a tagged DRAM page: the destination's tag storage is
    // reserved first (docs/model.md §2 "Migration and compaction").
    let (sched, mem) = default_dynamic(TagStorageData::Balance);
    let mut mover = FrameMover::default();
    let src = run(&sched, mem.alloc_tagged(o(0), Gfp::USER_TAGGED, &mut mover)).unwrap();
    let dst_gfp = Gfp {
        zero_tags: false,
        ..Gfp::USER_TAGGED
    };
    let dst = run(&sched, mem.alloc_tagged(o(0), dst_gfp, &mut mover)).unwrap();
    assert!(src.reserved() && dst.reserved());
    fill(&mem, src.pfn, &pattern(3));
    let tags: Vec<Tag> = (0..256).map(|i| Tag::from_low_bits(i * 7)).collect();
    mem.write_page_tags(src.pfn, &tags).unwrap();
    mem.migrate_block(src.pfn, dst.pfn, o(0));
    assert_eq!(bytes_of(&mem, dst.pfn), pattern(3));
    assert_eq!(mem.read_page_tags(dst.pfn).unwrap(), tags);
    assert!(mem.page_mte_tagged(dst.pfn) && !mem.page_mte_tagged(src.pfn));
    let c = mem.counters();
    assert_eq!((c.migrate_pages, c.tag_storage_migrations), (1, 0));
    assert_eq!(c.pages_tagged, 2, "the flag moved");
    run(&sched, mem.free(src.pfn, o(0))).unwrap();
    clean(&mem);
}

// ----- tags ------------------------------------------------------------------

#[test]
fn tags_are_nibbles_of_tag_storage_bytes() {
    let (sched, mem) = default_dynamic(TagStorageData::Balance);
    let page = run(
        &sched,
        mem.alloc_tagged(o(0), Gfp::USER_TAGGED, &mut FrameMover::default()),
    )
    .unwrap();
    assert_eq!(page.pfn, p(BASE + 0x400));
    // Granule 3 of frame 0x80400 (byte 0x30): tag byte 0x8400_0000 + 0x400 *
    // 128 + 1, high nibble (docs/model.md §1).
    let pa = PhysAddr::new(0x8040_0030);
    mem.write_tag(pa, Tag::new(0xa).unwrap()).unwrap();
    assert_eq!(
        mem.phys().contents.read_u8(PhysAddr::new(0x8402_0001)),
        Ok(0xa0)
    );
    mem.write_tag(PhysAddr::new(0x8040_0020), Tag::new(5).unwrap())
        .unwrap();
    assert_eq!(
        mem.phys().contents.read_u8(PhysAddr::new(0x8402_0001)),
        Ok(0xa5)
    );
    assert_eq!(mem.read_tag(pa), Ok(Tag::new(0xa).unwrap()));
    let tags = mem.read_page_tags(page.pfn).unwrap();
    assert_eq!(
        (tags[2], tags[3], tags[4]),
        (Tag::new(5).unwrap(), Tag::new(0xa).unwrap(), Tag::ZERO)
    );
    // copy_tags / zero_tags between two reserved pages.
    let other = run(
        &sched,
        mem.alloc_tagged(o(0), Gfp::USER_TAGGED, &mut FrameMover::default()),
    )
    .unwrap();
    mem.copy_tags(other.pfn, page.pfn).unwrap();
    assert_eq!(mem.read_page_tags(other.pfn).unwrap(), tags);
    mem.zero_tags(page.pfn).unwrap();
    assert_eq!(mem.read_page_tags(page.pfn).unwrap(), vec![Tag::ZERO; 256]);
    // Errors: a hole, a wrong tag count.
    assert_eq!(
        mem.read_tag(PhysAddr::new(0x1000)),
        Err(TagAccessError::NotPresent {
            addr: PhysAddr::new(0x1000)
        })
    );
    assert_eq!(
        mem.write_page_tags(page.pfn, &[Tag::ZERO; 3]),
        Err(TagAccessError::PageTags {
            expected: 256,
            got: 3
        })
    );
    // Tag storage has no tags: reads 0, writes ignored.
    let ts = PhysAddr::new(0x8400_1000);
    mem.write_tag(ts, Tag::new(3).unwrap()).unwrap();
    assert_eq!(mem.read_tag(ts), Ok(Tag::ZERO));
    assert!(!mem.has_tag_storage(p(TAGS + 1)) && mem.has_tag_storage(p(BASE)));
    clean(&mem);
}

#[test]
fn tags_written_for_an_unreserved_block_clobber_cma_data() {
    // The RFC's race (docs/model.md): tags written into tag storage that
    // still holds someone's data. The accessors let it happen; the checker
    // reports it.
    let (_, mem) = default_dynamic(TagStorageData::Prefer);
    fill_cma_up_to_block_32(&mem);
    let data = p(TAGS + 32);
    let before = bytes_of(&mem, data);
    // Frame 0x80400 is free and its block (frame 0x84020) holds data.
    // Its byte 0 is pattern(31)[0] = 0x1f; granule 0's tag is the low nibble.
    assert_eq!(before[0], 0x1f);
    mem.write_tag(PhysAddr::new(0x8040_0000), Tag::new(3).unwrap())
        .unwrap();
    let after = bytes_of(&mem, data);
    assert_eq!(after[0], 0x13);
    assert_eq!(after[1..], before[1..]);
    assert_eq!(
        mem.check(),
        [MemViolation::TagsWrittenToUnreservedStorage {
            first: TagClobber {
                data_pfn: p(BASE + 0x400),
                tag_pfn: data,
                status: Some(FrameStatus::Allocated {
                    head: data,
                    order: o(0),
                    migratetype: MigrateType::Movable
                }),
            },
            count: 1
        }]
    );
}

#[test]
fn the_checker_reports_broken_mte_flags() {
    let (sched, mem) = default_dynamic(TagStorageData::Prefer);
    let data = mem.alloc(o(0), Gfp::USER).unwrap();
    let plain = mem.alloc(o(0), Gfp::KERNEL).unwrap();
    // Marking a tag storage frame tagged (docs/model.md §4.2) and a page without
    // tag storage reserved (§4.1).
    mem.set_page_mte_tagged(data).unwrap();
    mem.set_page_mte_tagged(plain).unwrap();
    let v = mem.check();
    assert!(
        v.contains(&MemViolation::Phys(PhysViolation::TaggedTagStorage {
            pfn: data
        })),
        "{v:#?}"
    );
    assert!(v.contains(&MemViolation::TaggedWithoutReservation { pfn: plain }));
    assert_eq!(v.len(), 2, "{v:#?}");
    // A reference count that disagrees with the frames.
    let (sched2, mem2) = default_dynamic(TagStorageData::Balance);
    let page = run(
        &sched2,
        mem2.alloc_tagged(o(0), Gfp::USER_TAGGED, &mut FrameMover::default()),
    )
    .unwrap();
    mem2.phys_mut()
        .alloc
        .frame_mut(page.pfn)
        .unwrap()
        .flags
        .remove(PageFlag::TagStorageReserved);
    let v = mem2.check();
    assert!(v.contains(&MemViolation::BlockRefcount {
        block: TagBlock::new(32),
        refs: 1,
        frames: 0
    }));
    assert!(v.contains(&MemViolation::TaggedWithoutReservation { pfn: page.pfn }));
    drop(sched);
}

// ----- the PG_mte_lock protocol and concurrency -------------------------------

/// Two CPUs initialise the tags of the same page; CPU 1 pauses between
/// winning and setting the flag so CPU 0 may have to wait. In every
/// interleaving exactly one initialises and both return with the tags ready.
#[test]
fn tags_are_initialised_exactly_once() {
    let report = explore_exhaustive(500, |chooser: &mut dyn Chooser| {
        let (sched, mem) = default_dynamic(TagStorageData::Balance);
        let page = run(
            &sched,
            mem.alloc_tagged(
                o(0),
                Gfp {
                    zero_tags: false,
                    ..Gfp::USER_TAGGED
                },
                &mut FrameMover::default(),
            ),
        )
        .unwrap();
        mem.write_tag(page.pfn.addr(12), Tag::new(9).unwrap())
            .unwrap();
        let mem = &mem;
        let simple: Task<'_, bool> = Box::pin(async move {
            let won = mem.init_page_tags_once(page.pfn).await.unwrap();
            assert!(mem.page_mte_tagged(page.pfn), "returned before Tagged");
            won
        });
        let slow: Task<'_, bool> = Box::pin(async move {
            let won = mem.try_page_mte_tagging(page.pfn).await.unwrap();
            if won {
                mem.sched().preempt_point().await;
                mem.zero_tags(page.pfn).unwrap();
                mem.sched().preempt_point().await;
                mem.set_page_mte_tagged(page.pfn).unwrap();
            }
            assert!(mem.page_mte_tagged(page.pfn), "returned before Tagged");
            won
        });
        let wins = sched
            .run(vec![simple, slow], chooser, RunLimits::default())
            .map_err(|e| e.to_string())?;
        if wins.iter().filter(|&&w| w).count() != 1 {
            return Err(format!("winners: {wins:?}"));
        }
        if mem.read_tag(page.pfn.addr(12)) != Ok(Tag::ZERO) {
            return Err("tags not zeroed".into());
        }
        if mem.counters().pages_tagged != 2 || !mem.check().is_empty() {
            return Err(format!("{:?} {:?}", mem.counters(), mem.check()));
        }
        Ok(())
    })
    .unwrap();
    assert!(report.failure.is_none(), "{:?}", report.failure);
    // 20 schedules: every interleaving of the two CPUs' switch points.
    assert!(report.exhausted && report.schedules > 1);
}

/// Two CPUs allocate tagged pages whose tags share block 32, which holds
/// data: one claims it (migrating, with tag_blocks_lock held across the
/// migration), the other waits for the lock and then only adds a reference.
#[test]
fn concurrent_reservations_of_one_block_claim_it_once() {
    let report = explore_exhaustive(2000, |chooser: &mut dyn Chooser| {
        let (sched, mem) = default_dynamic(TagStorageData::Prefer);
        fill_cma_up_to_block_32(&mem);
        let mem = &mem;
        let task = || -> Task<'_, TaggedPage> {
            Box::pin(async move {
                let mut mover = FrameMover::default();
                mem.alloc_tagged(o(0), Gfp::USER_TAGGED, &mut mover)
                    .await
                    .unwrap()
            })
        };
        let pages = sched
            .run(vec![task(), task()], chooser, RunLimits::default())
            .map_err(|e| e.to_string())?;
        let c = mem.counters();
        let blocks: std::collections::BTreeSet<_> = pages
            .iter()
            .map(|pg| mem.geometry().block_of(pg.pfn).unwrap())
            .collect();
        let ok = pages.iter().all(TaggedPage::reserved)
            && c.tag_storage_reservations == 1 + blocks.len() as u64
            && c.tag_storage_migrations == 1
            && c.pages_tagged == 3
            && mem.check().is_empty();
        if !ok {
            return Err(format!("{pages:?} {c:?} {:?}", mem.check()));
        }
        Ok(())
    })
    .unwrap();
    assert!(report.failure.is_none(), "{:?}", report.failure);
    assert!(report.exhausted && report.schedules > 1);
}

/// Two faults on the same page reserve its tag storage at once: the second
/// finds it reserved after taking the lock (the RFC re-checks
/// `page_tag_storage_reserved()` under `tag_blocks_lock`), so the block holds
/// one reference, not two.
#[test]
fn concurrent_reservations_of_one_page_count_it_once() {
    let report = explore_exhaustive(2000, |chooser: &mut dyn Chooser| {
        let (sched, mem) = default_dynamic(TagStorageData::Prefer);
        fill_cma_up_to_block_32(&mem);
        let tagged = Gfp {
            tagged: true,
            ..Gfp::USER
        };
        let page = mem.alloc(o(0), tagged).unwrap();
        let mem = &mem;
        let task = || -> Task<'_, usize> {
            Box::pin(async move {
                let mut mover = FrameMover::default();
                mem.reserve_tag_storage(page, o(0), &mut mover)
                    .await
                    .unwrap();
                mover.moved.len()
            })
        };
        let moved = sched
            .run(vec![task(), task()], chooser, RunLimits::default())
            .map_err(|e| e.to_string())?;
        let refs = mem.tag_storage().block_refcount(TagBlock::new(32));
        if moved.iter().sum::<usize>() != 1 || refs != 1 || !mem.check().is_empty() {
            return Err(format!("moved {moved:?}, refs {refs}, {:?}", mem.check()));
        }
        Ok(())
    })
    .unwrap();
    assert!(report.failure.is_none(), "{:?}", report.failure);
    assert!(report.exhausted && report.schedules > 1);
}

/// A free of a tagged page on one CPU while another reserves a block whose
/// data must migrate: the release waits for tag_blocks_lock (held across the
/// migration), so the block counts never go wrong in any interleaving.
#[test]
fn a_free_during_a_reservation_waits_for_the_lock() {
    let report = explore_exhaustive(2000, |chooser: &mut dyn Chooser| {
        let (sched, mem) = default_dynamic(TagStorageData::Prefer);
        fill_cma_up_to_block_32(&mem);
        // 0x80400 in block 32; its data page 0x84020 moves to 0x80401.
        let first = run(
            &sched,
            mem.alloc_tagged(o(0), Gfp::USER_TAGGED, &mut FrameMover::default()),
        )
        .unwrap();
        // Fill the rest of block 32's frames (0x80402..0x80420) without
        // reservation, so that the next tagged page, 0x80420, is in block 33,
        // whose frame 0x84021 gets the next data page.
        for _ in 0x402..0x420 {
            let tagged = Gfp {
                tagged: true,
                ..Gfp::USER
            };
            mem.alloc(o(0), tagged).unwrap();
        }
        let data = mem.alloc(o(0), Gfp::USER).unwrap();
        assert_eq!(data, p(TAGS + 33));
        let mem = &mem;
        let reserve: Task<'_, Pfn> = Box::pin(async move {
            let mut mover = FrameMover::default();
            let page = mem
                .alloc_tagged(o(0), Gfp::USER_TAGGED, &mut mover)
                .await
                .unwrap();
            assert!(page.reserved());
            page.pfn
        });
        let free: Task<'_, Pfn> = Box::pin(async move {
            mem.sched().preempt_point().await;
            mem.free(first.pfn, o(0)).await.unwrap();
            first.pfn
        });
        let out = sched
            .run(vec![reserve, free], chooser, RunLimits::default())
            .map_err(|e| e.to_string())?;
        let c = mem.counters();
        let v = mem.check();
        // Either the page went to block 33 (data migrated) and block 32 was
        // released, or the free came first and the page reused 0x80400,
        // claiming block 32 again on the fast path.
        let block = mem.geometry().block_of(out[0]).unwrap();
        let expected = [TagBlock::new(0), block];
        let reserved: Vec<TagBlock> = mem.tag_storage().reserved_blocks().collect();
        if reserved != expected || c.tag_storage_reserved != 2 || !v.is_empty() {
            return Err(format!("{out:?} {c:?} {v:?}"));
        }
        Ok(())
    })
    .unwrap();
    assert!(report.failure.is_none(), "{:?}", report.failure);
    assert!(report.exhausted && report.schedules > 1);
}

// ----- a terabyte ----------------------------------------------------------------

/// 1 TiB of DRAM at 2 GiB and its 32 GiB of tag storage (4 KiB blocks: 8 Mi
/// blocks) under `policy`.
pub(crate) fn terabyte(policy: Design) -> Platform {
    let dram = MemRange::new(0x8000_0000, 1 << 40);
    let regions = [TagRegion {
        tags: MemRange::new(0x8000_0000 + (1 << 40), 32 << 30),
        covers: dram,
        block_size: 4096,
    }];
    let regions: &[TagRegion] = match policy.rules().storage {
        Storage::None => &[],
        _ => &regions,
    };
    Platform::new(
        policy,
        platform::KernelSettings::default(),
        4096,
        &[dram],
        regions,
    )
    .expect("valid platform")
}

#[test]
fn a_terabyte_machine_boots_in_little_host_memory() {
    // The bound: under 64 MiB of host memory (time is measured by the
    // `mem` bench, not here).
    for policy in [Design::DYNAMIC, Design::STATIC] {
        let mem = Memory::new(&terabyte(policy), &Sched::new()).unwrap();
        let bytes = mem.host_bytes();
        assert!(bytes < 64 << 20, "{policy:?}: {bytes} bytes");
        assert_eq!(mem.counters().mem_pages, 1 << 28);
        assert_eq!(mem.counters().tag_storage_blocks, 1 << 23);
    }
    let mem = Memory::new(&terabyte(Design::DYNAMIC), &Sched::new()).unwrap();
    assert_eq!(mem.counters().mem_free, (1 << 28) + (1 << 23) - 2);
    clean(&mem);
}

/// `xnu` serves tagged pages only from ACTIVE cells: with the cells of
/// the lowest free frames INACTIVE, a tagged page still lands in an ACTIVE
/// cell, reserves nothing, and its free leaves the cell ACTIVE; the checker
/// holds the design's form of invariant 3 (tagged frames only in ACTIVE
/// cells, an ACTIVE cell may cover none).
#[test]
fn xnu_tagged_pages_come_from_active_cells_and_release_is_lazy() {
    let xnu = Design::by_name("xnu").expect("registered");
    let (sched, mem) = boot(spec(xnu, TagStorageData::Balance));
    let booted = mem.counters().tag_storage_reservations;
    assert_eq!(booted, 65, "cells/8 of 512, and the zero page's");
    clean(&mem);
    let untagged = mem.alloc(o(0), Gfp::USER).unwrap();
    // 40 tagged pages: more than one cell's 32 frames.
    let pages: Vec<Pfn> = (0..40)
        .map(|_| {
            let page = run(
                &sched,
                mem.alloc_tagged(o(0), Gfp::USER_TAGGED, &mut FrameMover::default()),
            )
            .unwrap();
            assert!(page.reserved());
            page.pfn
        })
        .collect();
    let zero_block = mem.geometry().block_of(mem.zero_page()).unwrap();
    let blocks: std::collections::BTreeSet<TagBlock> = pages
        .iter()
        .map(|&pfn| mem.geometry().block_of(pfn).unwrap())
        .collect();
    assert!(blocks.len() >= 2);
    assert_eq!(mem.counters().tag_storage_reservations, booted);
    clean(&mem);
    for pfn in pages {
        run(&sched, mem.free(pfn, o(0))).unwrap();
    }
    // Every cell stays ACTIVE, the zero page's with its one frame.
    for block in blocks {
        let refs = u64::from(block == zero_block);
        assert_eq!(
            mem.tag_storage().block_state(block),
            tagstore::BlockState::Held { refs }
        );
    }
    assert_eq!(mem.counters().tag_storage_releases, 0);
    assert_eq!(mem.counters().tag_storage_reserved, booted);
    clean(&mem);
    run(&sched, mem.free(untagged, o(0))).unwrap();
    clean(&mem);
}

#[test]
fn rechecked_frames_lists_what_changed_between_two_incremental_checks() {
    let (_sched, mem) = default_dynamic(TagStorageData::default());
    assert_eq!(mem.rechecked_frames(), None, "nothing checked yet");
    assert!(mem.check_incremental().is_empty());
    assert!(mem.check_incremental().is_empty());
    assert_eq!(mem.rechecked_frames(), Some(vec![]), "nothing changed");
    let pfn = mem.alloc(o(0), Gfp::USER).unwrap();
    assert!(mem.check_incremental().is_empty());
    let changed = mem.rechecked_frames().expect("a bounded change");
    assert!(changed.contains(&pfn), "{pfn:?} not in {changed:?}");
    assert!(changed.is_sorted());
}
