//! Physical memory manager throughput: tag storage reservation + release of a
//! block, without migration (the block is free: the fast path) and with one
//! (the block holds one movable data page, migrated out), next to baselines
//! measured in the same run; and booting a 1 TiB machine. Also prints the
//! boot time and host memory of 1 TiB machines once.
//!
//! Run: `cargo bench -p mtesim-kernel --bench mem -- --warm-up-time 1 --measurement-time 2`
//!
//! Every kernel path runs as a task of the machine's scheduler
//! (`Sched::block_on`), as it will in the kernel; the `block_on` baseline
//! shows what that costs alone.

use criterion::{Criterion, Throughput, criterion_group};
use kernel::mem::{FrameMover, Gfp, Memory};
use kernel::phys::{AllocFlags, Order};
use mte::Pfn;
use platform::spec::{Design, PlatformSpec, TagStorageData};
use platform::{KernelSettings, MemRange, Platform, TagRegion};
use sched::{RunLimits, Sched};
use std::collections::BTreeMap;
use std::hint::black_box;
use std::time::Instant;

/// The default scenario machine (64 MiB, dynamic, 4 KiB blocks).
fn machine(data: TagStorageData) -> (Sched, Memory) {
    let spec = PlatformSpec {
        tag_storage_data: data,
        ..PlatformSpec::default()
    };
    let platform = Platform::from_spec(&spec).expect("valid platform");
    let sched = Sched::new();
    let mem = Memory::new(&platform, &sched).expect("boots");
    (sched, mem)
}

/// 1 TiB of DRAM at 2 GiB and its 32 GiB of tag storage, 4 KiB blocks.
fn terabyte(policy: Design) -> Platform {
    let dram = MemRange::new(0x8000_0000, 1 << 40);
    let region = TagRegion {
        tags: MemRange::new(0x8000_0000 + (1 << 40), 32 << 30),
        covers: dram,
        block_size: 4096,
    };
    Platform::new(policy, KernelSettings::default(), 4096, &[dram], &[region])
        .expect("valid platform")
}

fn block_on<T>(sched: &Sched, fut: impl Future<Output = T>) -> T {
    sched
        .block_on(fut, RunLimits::default())
        .expect("the path completes")
}

/// A tagged page without zeroing: only the reservation differs from a plain
/// allocation.
const TAGGED: Gfp = Gfp {
    zero: false,
    zero_tags: false,
    ..Gfp::USER_TAGGED
};

fn reserve_release(c: &mut Criterion) {
    let mut group = c.benchmark_group("mem");
    group.throughput(Throughput::Elements(1));

    // Baselines.
    let (sched, mem) = machine(TagStorageData::Balance);
    group.bench_function("baseline: phys alloc+free order 0", |b| {
        b.iter(|| {
            let mut phys = mem.phys_mut();
            let pfn = phys
                .alloc
                .alloc(Order::new(0), AllocFlags::USER)
                .expect("memory");
            phys.alloc
                .free(black_box(pfn), Order::new(0))
                .expect("frees");
        })
    });
    group.bench_function("baseline: sched block_on(ready)", |b| {
        b.iter(|| block_on(&sched, async { black_box(1) }))
    });
    let mut xarray: BTreeMap<u64, u64> = (0..512).map(|i| (i * 2, 1)).collect();
    group.bench_function("baseline: BTreeMap insert+remove", |b| {
        b.iter(|| {
            xarray.insert(black_box(301), 1);
            xarray.remove(&black_box(301));
        })
    });

    // The block of the first movable DRAM page (0x80400: block 32, frame
    // 0x84020) is free: claim_free_range(), no isolation.
    group.bench_function("alloc_tagged+free, block free (fast path)", |b| {
        b.iter(|| {
            block_on(&sched, async {
                let mut mover = FrameMover::default();
                let page = mem
                    .alloc_tagged(Order::new(0), TAGGED, &mut mover)
                    .await
                    .expect("memory");
                debug_assert!(page.reserved());
                mem.free(page.pfn, Order::new(0)).await.expect("frees");
            })
        })
    });
    assert!(mem.check().is_empty());

    // Under `prefer`, data fills CMA from 0x84001; with 31 pages held, the
    // next data page lands in 0x84020, block 32, which the tagged page
    // 0x80400 needs: isolation, migration of one 4 KiB page to DRAM, claim.
    let (sched, mem) = machine(TagStorageData::Prefer);
    for _ in 0..31 {
        mem.alloc(Order::new(0), Gfp::USER).expect("memory");
    }
    let cycle = || -> (Pfn, usize) {
        block_on(&sched, async {
            let data = mem.alloc(Order::new(0), Gfp::USER).expect("memory");
            mem.phys_mut()
                .contents
                .write_u64(data.addr(12), 0x5a5a)
                .expect("present");
            let mut mover = FrameMover::default();
            let page = mem
                .alloc_tagged(Order::new(0), TAGGED, &mut mover)
                .await
                .expect("memory");
            mem.free(page.pfn, Order::new(0)).await.expect("frees");
            let moved = mover.moved.len();
            let data = mover.moved.first().map_or(data, |&(_, dst)| dst);
            mem.free(data, Order::new(0)).await.expect("frees");
            (page.pfn, moved)
        })
    };
    assert_eq!(cycle(), (Pfn::new(0x80400), 1), "one migration per cycle");
    group.bench_function("alloc_tagged+free, block holds data (migration)", |b| {
        b.iter(|| black_box(cycle()))
    });
    assert!(mem.check().is_empty());
    assert_eq!(mem.counters().tag_storage_reserved, 1);
    group.finish();
}

fn boot(c: &mut Criterion) {
    let platform = terabyte(Design::DYNAMIC);
    c.bench_function("mem/Memory::new 1 TiB + 32 GiB dynamic", |b| {
        b.iter(|| Memory::new(black_box(&platform), &Sched::new()).expect("boots"))
    });
}

/// Resident host memory of this process, from `/proc/self/statm` (Linux).
fn resident_bytes() -> Option<u64> {
    let statm = std::fs::read_to_string("/proc/self/statm").ok()?;
    let pages: u64 = statm.split_whitespace().nth(1)?.parse().ok()?;
    Some(pages * 4096)
}

/// Prints the boot time and host memory of 1 TiB machines under each policy.
fn report_terabyte() {
    for policy in [Design::DYNAMIC, Design::STATIC] {
        let platform = terabyte(policy);
        let before = resident_bytes();
        let start = Instant::now();
        let mem = Memory::new(&platform, &Sched::new()).expect("boots");
        let elapsed = start.elapsed();
        let rss = before
            .zip(resident_bytes())
            .map(|(b, a)| a.saturating_sub(b));
        println!(
            "1 TiB DRAM + 32 GiB tag storage, {policy:?}: boot {elapsed:?}, host_bytes {} \
             ({:.2} MiB), resident growth {} bytes",
            mem.host_bytes(),
            mem.host_bytes() as f64 / f64::from(1 << 20),
            rss.map_or("unknown".into(), |r| r.to_string()),
        );
        black_box(&mem);
    }
}

criterion_group!(benches, reserve_release, boot);

fn main() {
    report_terabyte();
    benches();
    Criterion::default().configure_from_args().final_summary();
}
