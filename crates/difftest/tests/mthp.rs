//! Multi-size THP (`thp-sizes=`) under differential testing: programs on
//! platforms with `thp-sizes` make the kernel map folios of every size
//! (the fallbacks need memory fragmented as `tests/scenarios/mthp/
//! fallback.mte` makes it), and the reference (which has no folios) agrees; a long
//! run (ignored by default) checks that every failure a run with
//! `thp-sizes` finds is also found by the same programs without it.

mod common;

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use common::{kernel, reference};
use difftest::{FuzzConfig, fuzz};
use mte::{Tag, TaggedPtr};
use platform::{Design, Platform, ThpSizes};
use scenario::machine::MachineUnavailable;
use uapi::{Counter, Machine, MachineError, Op, PageState, Pid, Reply};

/// Every size `thp-sizes` accepts.
fn all_sizes() -> ThpSizes {
    (ThpSizes::MIN_ORDER..=ThpSizes::MAX_ORDER).fold(ThpSizes::NONE, ThpSizes::with)
}

/// The per-size counters of every machine built, summed when it goes.
type Totals = Arc<Mutex<BTreeMap<Counter, u64>>>;

/// The kernel, adding its `mthp.*` counters to `totals` when dropped.
struct Observed {
    inner: Box<dyn Machine>,
    totals: Totals,
}

impl Drop for Observed {
    fn drop(&mut self) {
        let mut totals = self.totals.lock().expect("not poisoned");
        for order in ThpSizes::MIN_ORDER..=ThpSizes::MAX_ORDER {
            let (alloc, fallback) = Counter::mthp(order).expect("an mTHP order");
            for c in [alloc, fallback] {
                *totals.entry(c).or_default() += self.inner.counter(c).unwrap_or(0);
            }
        }
    }
}

impl Machine for Observed {
    fn run(&mut self, op: &Op) -> Reply {
        self.inner.run(op)
    }

    fn run_parallel(
        &mut self,
        ops: &[Op],
        chooser: &mut dyn sched::Chooser,
    ) -> Result<Vec<Reply>, MachineError> {
        self.inner.run_parallel(ops, chooser)
    }

    fn counter(&self, counter: Counter) -> Option<u64> {
        self.inner.counter(counter)
    }

    fn tags(&self, pid: Pid, ptr: TaggedPtr, len: u64) -> Option<Vec<Tag>> {
        self.inner.tags(pid, ptr, len)
    }

    fn page_state(&self, pid: Pid, ptr: TaggedPtr, state: PageState) -> Option<bool> {
        self.inner.page_state(pid, ptr, state)
    }

    fn invariant_violations(&self) -> Vec<uapi::Violation> {
        self.inner.invariant_violations()
    }
}

fn observed(
    totals: &Totals,
) -> impl Fn(&Platform) -> Result<Box<dyn Machine>, MachineUnavailable> + '_ {
    move |platform| {
        Ok(Box::new(Observed {
            inner: kernel(platform)?,
            totals: totals.clone(),
        }) as Box<dyn Machine>)
    }
}

#[test]
fn generated_programs_map_folios_of_every_size() {
    let totals = Totals::default();
    let config = FuzzConfig {
        thp_sizes: Some(all_sizes()),
        parallel: 0,
        ..FuzzConfig::new(4_000, 11, Design::DYNAMIC)
    };
    let report = fuzz(&config, &observed(&totals), &reference).unwrap();
    let totals = totals.lock().unwrap();
    let allocs = |o| totals[&Counter::mthp(o).unwrap().0];
    let sizes_mapped = (ThpSizes::MIN_ORDER..=ThpSizes::MAX_ORDER)
        .filter(|&o| allocs(o) > 0)
        .count();
    assert_eq!(sizes_mapped, 7, "folios of some sizes only: {totals:?}");
    assert!(report.passed(), "{}", report.summary());
}

/// `MTHP_FUZZ_OPS` ops (200,000 by default) with every size, and the same
/// programs without `thp-sizes`: the failing programs of the first are
/// failing programs of the second (multi-size THP adds no failure).
#[test]
#[ignore = "long: cargo test -p mtesim-difftest --test mthp -- --ignored"]
fn thp_sizes_add_no_failure() {
    let ops = std::env::var("MTHP_FUZZ_OPS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(200_000);
    let seed = std::env::var("MTHP_FUZZ_SEED")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    let run = |sizes: ThpSizes| {
        let config = FuzzConfig {
            thp_sizes: Some(sizes),
            keep_going: true,
            shrink: None,
            ..FuzzConfig::new(ops, seed, Design::DYNAMIC)
        };
        fuzz(&config, &kernel, &reference).unwrap()
    };
    let with = run(all_sizes());
    let without = run(ThpSizes::NONE);
    let failing =
        |r: &difftest::FuzzReport| -> Vec<u64> { r.found.iter().map(|f| f.program).collect() };
    let (with_failing, without_failing) = (failing(&with), failing(&without));
    eprintln!(
        "with thp-sizes: {} ({with_failing:?}); without: {} ({without_failing:?})",
        with.summary(),
        without.summary()
    );
    let new: Vec<&difftest::Found> = with
        .found
        .iter()
        .filter(|f| !without_failing.contains(&f.program))
        .collect();
    assert!(
        new.is_empty(),
        "failures only with thp-sizes:\n{}",
        new.iter()
            .map(|f| f.reproducer.as_str())
            .collect::<Vec<_>>()
            .join("\n")
    );
}
