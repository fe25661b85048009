//! The incremental invariant checker equals the full one on random
//! programs: every program the fuzzer draws runs on a kernel whose
//! `invariant_violations` computes both verdicts after every step and
//! panics (a finding the fuzzer reports) when they differ as multisets.
//! With the known mistakes switched on, programs also reach broken states,
//! so the two checkers are compared on violations too, step by step.
//! A third of the programs overcommit memory, so that the checks of
//! reclaim's state (LRU lists, dirty file pages, the swap cache) are
//! compared while direct reclaim, swap and writeback run.

use platform::{Design, Mistake, Mistakes, Platform};
use scenario::machine::MachineUnavailable;
use uapi::{Counter, Machine, MachineError, Op, PageState, Pid, Reply};

use difftest::{FuzzConfig, fuzz};
use kernel::Kernel;
use kernel::machine::same_verdict;

mod common;

/// The kernel, checked both ways.
struct Twin {
    k: Kernel,
}

impl Machine for Twin {
    fn run(&mut self, op: &Op) -> Reply {
        self.k.run(op)
    }

    fn run_parallel(
        &mut self,
        ops: &[Op],
        chooser: &mut dyn sched::Chooser,
    ) -> Result<Vec<Reply>, MachineError> {
        self.k.run_parallel(ops, chooser)
    }

    fn counter(&self, counter: Counter) -> Option<u64> {
        self.k.counter(counter)
    }

    fn tags(&self, pid: Pid, ptr: mte::TaggedPtr, len: u64) -> Option<Vec<mte::Tag>> {
        self.k.tags(pid, ptr, len)
    }

    fn page_state(&self, pid: Pid, ptr: mte::TaggedPtr, state: PageState) -> Option<bool> {
        self.k.page_state(pid, ptr, state)
    }

    fn invariant_violations(&self) -> Vec<uapi::Violation> {
        let incremental = self.k.violations_incremental();
        let full = self.k.violations();
        assert!(
            same_verdict(&incremental, &full),
            "incremental {incremental:#?}\nfull {full:#?}"
        );
        full.iter().map(|v| v.to_violation()).collect()
    }
}

fn twin(platform: &Platform) -> Result<Box<dyn Machine>, MachineUnavailable> {
    let k = Kernel::new(platform).expect("a machine the generator drew boots");
    Ok(Box::new(Twin { k }))
}

#[test]
fn incremental_equals_full_on_random_programs() {
    for policy in [Design::NONE, Design::STATIC, Design::DYNAMIC] {
        let config = FuzzConfig {
            overcommit: 33,
            ..FuzzConfig::new(4_000, 11, policy)
        };
        let report = fuzz(&config, &twin, &common::reference).unwrap();
        // A disagreement of the checkers is a panic, reported as a divergence.
        assert!(report.passed(), "{policy:?}: {:#?}", report.found);
        // Programs that run out of memory end early.
        assert!(report.ops <= 4_000 && report.ops > 2_000, "{}", report.ops);
        let reached = |c: Counter| {
            report
                .coverage
                .iter()
                .find(|(k, _)| *k == c)
                .map_or(0, |(_, v)| *v)
        };
        assert!(
            reached(Counter::ReclaimDirect) > 0 && reached(Counter::SwapOut) > 0,
            "{policy:?}: reclaim not reached: {}",
            report.coverage_line()
        );
    }
}

/// The free lists' verdict is reused while no list changed: with Linux's
/// list order (positions kept beside the runs, and checked) it must still
/// equal the full check, and with per-CPU lists on (no reuse) too.
#[test]
fn incremental_equals_full_with_linux_list_order_and_per_cpu_lists() {
    for pcp in [false, true] {
        let config = FuzzConfig {
            free_list_order: platform::FreeListOrder::Linux,
            pcp,
            ..FuzzConfig::new(2_000, 12, Design::DYNAMIC)
        };
        let report = fuzz(&config, &twin, &common::reference).unwrap();
        assert!(report.passed(), "pcp {pcp}: {:#?}", report.found);
        assert!(report.ops > 1_000, "{}", report.ops);
    }
}

#[test]
fn incremental_equals_full_on_programs_that_break_invariants() {
    let mut violations = 0;
    for mistake in Mistake::ALL {
        let config = FuzzConfig {
            mistakes: Mistakes::NONE.with(mistake),
            shrink: None,
            ..FuzzConfig::new(3_000, 11, Design::DYNAMIC)
        };
        let report = fuzz(&config, &twin, &common::reference).unwrap();
        for found in &report.found {
            assert!(
                !format!("{:?}", found.failure).contains("incremental"),
                "{mistake:?}: the checkers disagree: {:#?}",
                found.failure
            );
        }
        violations += report.violations;
    }
    assert!(violations > 0, "the mistakes broke no invariant");
}
