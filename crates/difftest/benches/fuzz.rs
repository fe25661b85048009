//! Fuzzer throughput: ops per second of `mtesim fuzz` (kernel against the
//! reference model, every invariant checked after every step) with the
//! incremental checker (what `invariant_violations` runs), against the
//! same programs checked by the full checker after every step, measured
//! in the same run. Prints `ratio` lines (ops/s of each and the speed-up)
//! after a criterion group over a smaller batch.
//!
//! Run: `cargo bench -p mtesim-difftest --bench fuzz -- --warm-up-time 1 --measurement-time 3`

use std::time::Instant;

use criterion::{Criterion, Throughput, criterion_group};
use difftest::{FuzzConfig, fuzz};
use kernel::Kernel;
use platform::{Design, Platform};
use scenario::machine::{MachineKind, MachineUnavailable, make_machine};
use uapi::{Counter, Machine, MachineError, Op, PageState, Pid, Reply};

/// The kernel with the full checker after every step (the baseline).
struct FullCheck(Kernel);

impl Machine for FullCheck {
    fn run(&mut self, op: &Op) -> Reply {
        self.0.run(op)
    }
    fn run_parallel(
        &mut self,
        ops: &[Op],
        chooser: &mut dyn sched::Chooser,
    ) -> Result<Vec<Reply>, MachineError> {
        self.0.run_parallel(ops, chooser)
    }
    fn counter(&self, counter: Counter) -> Option<u64> {
        self.0.counter(counter)
    }
    fn tags(&self, pid: Pid, ptr: mte::TaggedPtr, len: u64) -> Option<Vec<mte::Tag>> {
        self.0.tags(pid, ptr, len)
    }
    fn page_state(&self, pid: Pid, ptr: mte::TaggedPtr, state: PageState) -> Option<bool> {
        self.0.page_state(pid, ptr, state)
    }
    fn invariant_violations(&self) -> Vec<uapi::Violation> {
        self.0
            .violations()
            .iter()
            .map(|v| v.to_violation())
            .collect()
    }
}

fn full(platform: &Platform) -> Result<Box<dyn Machine>, MachineUnavailable> {
    Ok(Box::new(FullCheck(Kernel::new(platform).expect("boots"))))
}

fn incremental(platform: &Platform) -> Result<Box<dyn Machine>, MachineUnavailable> {
    make_machine(MachineKind::Kernel, platform)
}

fn reference(platform: &Platform) -> Result<Box<dyn Machine>, MachineUnavailable> {
    make_machine(MachineKind::Reference, platform)
}

type Factory = fn(&Platform) -> Result<Box<dyn Machine>, MachineUnavailable>;

/// Ops per second of `ops` fuzz steps per policy.
fn ops_per_second(factory: Factory, ops: u64) -> f64 {
    let start = Instant::now();
    for policy in [Design::NONE, Design::STATIC, Design::DYNAMIC] {
        let report = fuzz(&FuzzConfig::new(ops, 1, policy), &factory, &reference).unwrap();
        assert!(report.passed(), "{}", report.summary());
    }
    (3 * ops) as f64 / start.elapsed().as_secs_f64()
}

fn bench(c: &mut Criterion) {
    const BATCH: u64 = 500;
    let mut group = c.benchmark_group("fuzz");
    group.throughput(Throughput::Elements(3 * BATCH));
    group.sample_size(10);
    group.bench_function("incremental check", |b| {
        b.iter(|| ops_per_second(incremental, BATCH))
    });
    group.bench_function("full check (baseline)", |b| {
        b.iter(|| ops_per_second(full, BATCH))
    });
    group.finish();

    let ops = 10_000;
    let base = ops_per_second(full, ops);
    let fast = ops_per_second(incremental, ops);
    println!("ratio full check: {base:.0} ops/s");
    println!(
        "ratio incremental check: {fast:.0} ops/s, {:.1}x the full check",
        fast / base
    );
}

criterion_group!(benches, bench);

fn main() {
    benches();
    Criterion::default().configure_from_args().final_summary();
}
