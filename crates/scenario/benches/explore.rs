//! Exploration throughput (`mtesim explore`): schedules per second of a
//! two-CPU scenario of a few commands on the default machine, against the
//! same scenario run once, sequentially, by `mtesim run` (the ratio is the
//! cost of a schedule in runs). Each schedule builds a fresh machine and
//! runs the whole file, checking the invariants after every statement from
//! the first `parallel` block on; up to [`SCHEDULES`] schedules per
//! iteration, and the element throughput criterion prints is schedules per
//! second.

use criterion::{Criterion, Throughput, criterion_group};
use scenario::explore::{ExploreOptions, explore_source};
use scenario::machine::{MachineKind, make_machine};
use scenario::run::{FileResult, RunOptions};
use sched::{Shard, Strategy};
use std::hint::black_box;
use std::time::Instant;

/// Two CPUs: a store faulting in a tagged page, an mprotect of another
/// mapping; then a check of the store.
pub const SCENARIO: &str = "platform cpus=2\nspawn p\np mmap a 64K prot=r,w,mte => ok\n\
                            p mmap b 64K => ok\nparallel\n  p store a 8 7\n  \
                            p mprotect b 64K prot=r,w,mte => ok\nend\np load a 8 => value 7\n";

const SCHEDULES: usize = 100;

fn explore(c: &mut Criterion) {
    let mut group = c.benchmark_group("explore");
    group.throughput(Throughput::Elements(1));
    group.bench_function("run once (sequential baseline)", |b| {
        b.iter(|| {
            let result = scenario::run_source(
                "bench.mte",
                black_box(SCENARIO.as_bytes()),
                &RunOptions::default(),
                |p| make_machine(MachineKind::Kernel, p),
            );
            assert!(matches!(result, FileResult::Ran(ref r) if r.passed()));
        })
    });
    for (name, strategy) in [
        ("random", Strategy::Random { seed: 0 }),
        ("exhaustive", Strategy::Exhaustive),
    ] {
        let options = ExploreOptions {
            strategy,
            max_schedules: SCHEDULES,
            shard: Shard::ALL,
            run: RunOptions::default(),
        };
        // Exhaustive search may run out of schedules first.
        let schedules = explore_source(
            "bench.mte",
            SCENARIO.as_bytes(),
            &options,
            |p| make_machine(MachineKind::Kernel, p),
            |_| {},
        )
        .unwrap()
        .schedules;
        group.throughput(Throughput::Elements(schedules as u64));
        group.bench_function(format!("{name}, {schedules} schedules"), |b| {
            b.iter(|| {
                let report = explore_source(
                    "bench.mte",
                    black_box(SCENARIO.as_bytes()),
                    &options,
                    |p| make_machine(MachineKind::Kernel, p),
                    |_| {},
                )
                .unwrap();
                assert!(report.failure.is_none());
                report.schedules
            })
        });
    }
    group.finish();

    // The figures in one timing loop: runs/s of the sequential run,
    // schedules/s of exploration, and their ratio.
    let run_once = || {
        let result = scenario::run_source(
            "bench.mte",
            SCENARIO.as_bytes(),
            &RunOptions::default(),
            |p| make_machine(MachineKind::Kernel, p),
        );
        assert!(matches!(result, FileResult::Ran(ref r) if r.passed()));
    };
    let rounds = 300;
    let start = Instant::now();
    for _ in 0..rounds {
        run_once();
    }
    let runs = rounds as f64 / start.elapsed().as_secs_f64();
    let options = ExploreOptions {
        strategy: Strategy::Random { seed: 0 },
        max_schedules: 1000,
        shard: Shard::ALL,
        run: RunOptions::default(),
    };
    let start = Instant::now();
    let report = explore_source(
        "bench.mte",
        SCENARIO.as_bytes(),
        &options,
        |p| make_machine(MachineKind::Kernel, p),
        |_| {},
    )
    .unwrap();
    let schedules = report.schedules as f64 / start.elapsed().as_secs_f64();
    println!("ratio run once (sequential baseline): {runs:.0} runs/s");
    println!(
        "ratio explore (random): {schedules:.0} schedules/s, {:.2}x the sequential run's rate",
        schedules / runs
    );
}

criterion_group!(benches, explore);

fn main() {
    benches();
    Criterion::default().configure_from_args().final_summary();
}
