//! Physical memory layer throughput: buddy alloc+free at order 0 and 9
//! against a plain `Vec<u64>` free list (the cheapest possible page pool),
//! and booting a 1 TiB + 32 GiB machine. Also prints the boot time and host
//! memory of that machine once.
//!
//! Run: `cargo bench -p mtesim-kernel --bench phys -- --warm-up-time 1 --measurement-time 2`

use criterion::{Criterion, criterion_group};
use kernel::phys::{
    AllocFlags, BuddyAllocator, CmaUse, Order, PhysGeometry, PhysLayout, PhysMem, Region,
    RegionKind,
};
use mte::{Pfn, PfnRange};
use std::hint::black_box;
use std::time::Instant;

/// Linux arm64 4K: pageblock order 9, max order 10.
fn layout(dram_pages: u64, cma_pages: u64) -> PhysLayout {
    let g = PhysGeometry::new(mte::PageGeometry::FOUR_K, Order::new(9), Order::new(10))
        .expect("valid geometry");
    let base = 0x80000;
    PhysLayout::new(
        g,
        vec![
            Region {
                range: PfnRange::new(Pfn::new(base), dram_pages),
                kind: RegionKind::Dram,
            },
            Region {
                range: PfnRange::new(Pfn::new(base + dram_pages), cma_pages),
                kind: RegionKind::TagStorageCma,
            },
        ],
    )
    .expect("valid layout")
}

/// 1 GiB of DRAM and its 32 MiB of tag storage as CMA.
fn gigabyte() -> BuddyAllocator {
    BuddyAllocator::new(layout(1 << 18, 1 << 13), CmaUse::Balance)
}

fn alloc_free(c: &mut Criterion) {
    let mut group = c.benchmark_group("phys");
    group.throughput(criterion::Throughput::Elements(1));

    let mut a = gigabyte();
    group.bench_function("alloc+free order 0 (split from order 10)", |b| {
        b.iter(|| {
            let pfn = a.alloc(Order::new(0), AllocFlags::USER).expect("memory");
            a.free(black_box(pfn), Order::new(0)).expect("frees");
        })
    });

    // A fragmented allocator: every other order-0 page of 64 MiB allocated,
    // so order-0 requests are served from order-0 free blocks.
    let mut a = gigabyte();
    let pages: Vec<Pfn> = (0..1 << 14)
        .map(|_| a.alloc(Order::new(0), AllocFlags::USER).expect("memory"))
        .collect();
    for pfn in pages.iter().step_by(2) {
        a.free(*pfn, Order::new(0)).expect("frees");
    }
    group.bench_function("alloc+free order 0 (fragmented)", |b| {
        b.iter(|| {
            let pfn = a.alloc(Order::new(0), AllocFlags::USER).expect("memory");
            a.free(black_box(pfn), Order::new(0)).expect("frees");
        })
    });

    let mut a = gigabyte();
    group.bench_function("alloc+free order 9", |b| {
        b.iter(|| {
            let pfn = a.alloc(Order::new(9), AllocFlags::USER).expect("memory");
            a.free(black_box(pfn), Order::new(9)).expect("frees");
        })
    });

    // Baseline in the same run: the cheapest page pool there is.
    let mut pool: Vec<u64> = (0..1 << 18).collect();
    group.bench_function("baseline Vec<u64> pop+push", |b| {
        b.iter(|| {
            let pfn = pool.pop().expect("pool");
            pool.push(black_box(pfn));
        })
    });
    group.finish();
}

fn boot(c: &mut Criterion) {
    let l = layout(1 << 28, 1 << 23);
    c.bench_function("phys/boot 1 TiB + 32 GiB CMA", |b| {
        b.iter(|| PhysMem::new(black_box(l.clone()), CmaUse::Balance))
    });
}

/// Prints the boot time and host memory of a 1 TiB + 32 GiB machine, and
/// the cost of touching one page.
fn report_terabyte() {
    let l = layout(1 << 28, 1 << 23);
    let start = Instant::now();
    let mut phys = PhysMem::new(l, CmaUse::Balance);
    let boot = start.elapsed();
    let booted = phys.host_bytes();
    let pfn = phys
        .alloc
        .alloc(Order::new(0), AllocFlags::USER)
        .expect("memory");
    phys.contents.write_u64(pfn.addr(12), 1).expect("present");
    let start = Instant::now();
    let violations = phys.check().len();
    let check = start.elapsed();
    println!(
        "1 TiB DRAM + 32 GiB CMA: boot {boot:?}, host {booted} bytes; after one page {} bytes; check {check:?} ({violations} violations)",
        phys.host_bytes()
    );
}

criterion_group!(benches, alloc_free, boot);

fn main() {
    report_terabyte();
    benches();
    Criterion::default().configure_from_args().final_summary();
}
