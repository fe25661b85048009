//! Multi-size THP (`thp-sizes=`) under differential testing: programs on
//! platforms with `thp-sizes` make the kernel map folios of every size
//! (the fallbacks need memory fragmented as `tests/scenarios/mthp/
//! fallback.mte` makes it), and the reference (which has no folios) agrees; a long
//! run (ignored by default) checks that every failure a run with
//! `thp-sizes` finds is also found by the same programs without it.

mod common;

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use common::{Wrapped, Wrapper, kernel, reference};
use difftest::{FuzzConfig, fuzz, run_program};
use platform::{Design, Platform, ThpSizes};
use scenario::machine::MachineUnavailable;
use uapi::{Counter, Machine};

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

impl Wrapper for Observed {
    fn inner(&self) -> &dyn Machine {
        &*self.inner
    }

    fn inner_mut(&mut self) -> &mut dyn Machine {
        &mut *self.inner
    }
}

fn observed(
    totals: &Totals,
) -> impl Fn(&Platform) -> Result<Box<dyn Machine>, MachineUnavailable> + '_ {
    move |platform| {
        Ok(Box::new(Wrapped(Observed {
            inner: kernel(platform)?,
            totals: totals.clone(),
        })) as Box<dyn Machine>)
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

/// `MTHP_FUZZ_OPS` ops (200,000 by default, seed `MTHP_FUZZ_SEED`) with
/// every size; each failing program is run again with `thp-sizes` left
/// out, and must fail there too (multi-size THP adds no failure; the
/// programs are the same, only the platform key differs).
#[test]
#[ignore = "long: cargo test -p mtesim-difftest --test mthp -- --ignored"]
fn thp_sizes_add_no_failure() {
    let env = |key: &str, default: u64| {
        std::env::var(key)
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(default)
    };
    let config = FuzzConfig {
        thp_sizes: Some(all_sizes()),
        keep_going: true,
        shrink: None,
        ..FuzzConfig::new(
            env("MTHP_FUZZ_OPS", 200_000),
            env("MTHP_FUZZ_SEED", 0),
            Design::DYNAMIC,
        )
    };
    let report = fuzz(&config, &kernel, &reference).unwrap();
    eprintln!("with thp-sizes: {}", report.summary());
    let mut new = Vec::new();
    for found in &report.found {
        let mut program = found.original.clone();
        program.platform.thp_sizes = ThpSizes::NONE;
        let run = run_program(&program, &kernel, &reference).unwrap();
        eprintln!(
            "program {}: {:?}; without thp-sizes: {:?}",
            found.program,
            found.failure.signature(),
            run.failure.as_ref().map(|f| f.signature())
        );
        if run.failure.is_none() {
            new.push(found.reproducer.as_str());
        }
    }
    assert!(
        new.is_empty(),
        "failures only with thp-sizes:\n{}",
        new.join("\n")
    );
}
