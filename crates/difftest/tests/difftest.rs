//! Differential testing end to end: the reference against itself, and
//! deliberately buggy machines that the fuzzer must catch, shrink, and
//! write as a `.mte` file that fails on the buggy machine and passes on the
//! reference.

mod common;

use common::{Wrapped, Wrapper, reference};
use std::collections::BTreeSet;
use std::time::Instant;

use difftest::{
    Factory, FailureClass, FuzzConfig, FuzzReport, GenConfig, ShrinkLimits, fuzz, generate,
};
use mte::Tag;
use platform::{Design, Platform};
use scenario::machine::MachineUnavailable;
use scenario::run::{FileResult, RunOptions};
use uapi::{Bound, Command, Machine, Op, Outcome, Pid, Reply};

fn refmodel(platform: &Platform) -> refmodel::RefMachine {
    refmodel::RefMachine::new(platform.policy() != Design::NONE, platform.settings().seed)
}

/// What a buggy machine gets wrong.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Bug {
    /// Fork loses tags: LDG in a forked child reads 0 where the parent had
    /// set a non-zero tag (the bug of a kernel that copies data but not
    /// tags on copy-on-write).
    ForkDropsTags,
    /// The invariant check fails once a range was paged out.
    PageoutBreaksInvariants,
}

/// The reference model with one bug.
struct Buggy {
    inner: refmodel::RefMachine,
    bug: Bug,
    children: BTreeSet<Pid>,
    paged_out: bool,
}

impl Wrapper for Buggy {
    fn inner(&self) -> &dyn Machine {
        &self.inner
    }

    fn inner_mut(&mut self) -> &mut dyn Machine {
        &mut self.inner
    }

    fn reply(&mut self, op: &Op, reply: Reply) -> Reply {
        if let Op::Process { pid, command } = op {
            match (self.bug, command, &reply) {
                (
                    _,
                    Command::Fork,
                    Reply {
                        bound: Some(Bound::Process(child)),
                        ..
                    },
                ) => {
                    self.children.insert(*child);
                }
                (
                    Bug::ForkDropsTags,
                    Command::Ldg { .. },
                    Reply {
                        outcome: Outcome::Tag(tag),
                        ..
                    },
                ) if self.children.contains(pid) && *tag != Tag::ZERO => {
                    return Reply::new(Outcome::Tag(Tag::ZERO));
                }
                (
                    Bug::PageoutBreaksInvariants,
                    Command::Madvise {
                        advice: uapi::Advice::PageOut,
                        ..
                    },
                    _,
                ) => self.paged_out = true,
                _ => {}
            }
        }
        reply
    }

    fn violations(&self, mut found: Vec<uapi::Violation>) -> Vec<uapi::Violation> {
        if self.paged_out {
            found.push(uapi::Violation::new(
                uapi::Invariant::LayerConsistency,
                "test bug: a range was paged out",
            ));
        }
        found
    }
}

fn buggy(bug: Bug) -> impl Fn(&Platform) -> Result<Box<dyn Machine>, MachineUnavailable> {
    move |platform| {
        Ok(Box::new(Wrapped(Buggy {
            inner: refmodel(platform),
            bug,
            children: BTreeSet::new(),
            paged_out: false,
        })) as Box<dyn Machine>)
    }
}

#[test]
fn the_reference_agrees_with_itself() {
    for policy in [Design::NONE, Design::STATIC, Design::DYNAMIC] {
        let config = FuzzConfig::new(6_000, 1, policy);
        let start = Instant::now();
        let report = fuzz(&config, &reference, &reference).unwrap();
        let elapsed = start.elapsed();
        assert_eq!(
            report.summary(),
            "fuzz: 6000 ops, 0 divergences, 0 violations"
        );
        assert!(report.passed());
        assert!(report.programs >= 20, "{} programs", report.programs);
        eprintln!(
            "{}: refmodel vs refmodel: {} ops in {:?} ({:.0} ops/s)",
            policy.name(),
            report.ops,
            elapsed,
            report.ops as f64 / elapsed.as_secs_f64()
        );
    }
}

#[test]
fn shards_together_run_the_unsharded_programs() {
    let whole = fuzz(
        &FuzzConfig::new(3_000, 7, Design::DYNAMIC),
        &reference,
        &reference,
    )
    .unwrap();
    let (mut ops, mut programs) = (0, 0);
    for index in 0..3 {
        let config = FuzzConfig {
            shard: (index, 3),
            ..FuzzConfig::new(3_000, 7, Design::DYNAMIC)
        };
        let part = fuzz(&config, &reference, &reference).unwrap();
        assert!(part.passed());
        ops += part.ops;
        programs += part.programs;
    }
    assert_eq!((ops, programs), (whole.ops, whole.programs));
}

#[test]
fn fuzzing_is_deterministic() {
    let config = FuzzConfig::new(3_000, 42, Design::DYNAMIC);
    let bug = buggy(Bug::ForkDropsTags);
    let a = fuzz(&config, &bug, &reference).unwrap();
    let b = fuzz(&config, &bug, &reference).unwrap();
    assert_eq!(a, b);
}

/// Runs `text` as `mtesim run` would on a machine from `factory`.
fn run_file(text: &str, factory: Factory<'_>) -> scenario::RunReport {
    match scenario::run_source(
        "repro.mte",
        text.as_bytes(),
        &RunOptions::default(),
        factory,
    ) {
        FileResult::Ran(report) => report,
        other => panic!("the reproducer did not run: {other:?}\n{text}"),
    }
}

/// The 1-based line of the first line of `text` that `pred` picks.
fn line_of(text: &str, pred: impl Fn(&str) -> bool) -> u32 {
    text.lines().position(pred).expect("the line is there") as u32 + 1
}

fn caught(bug: Bug, seed: u64) -> FuzzReport {
    let config = FuzzConfig {
        shrink: Some(ShrinkLimits {
            max_attempts: 3000,
            ..ShrinkLimits::default()
        }),
        // These bugs are sequential (the buggy machine runs blocks
        // without its bug): no blocks, so the seeds keep their programs.
        parallel: 0,
        ..FuzzConfig::new(30_000, seed, Design::DYNAMIC)
    };
    let start = Instant::now();
    let report = fuzz(&config, &buggy(bug), &reference).unwrap();
    let found = report.found.first().expect("the bug is found");
    let shrunk = found.shrunk.as_ref().expect("shrinking is on");
    eprintln!(
        "{bug:?}: found after {} ops in program {}; shrunk {} -> {} steps in {} runs; {:?} in all\n{}",
        report.ops,
        found.program,
        shrunk.original_len,
        shrunk.program.steps.len(),
        shrunk.attempts,
        start.elapsed(),
        found.reproducer
    );
    report
}

#[test]
fn a_machine_that_drops_tags_on_fork_is_caught_and_shrunk() {
    let report = caught(Bug::ForkDropsTags, 5);
    assert_eq!(report.divergences, 1);
    assert_eq!(report.violations, 0);
    assert!(
        report
            .summary()
            .ends_with(" ops, 1 divergences, 0 violations")
    );
    let found = &report.found[0];
    assert_eq!(found.failure.class(), FailureClass::Divergence);
    assert_eq!(found.failure.word, "ldg");
    let shrunk = found.shrunk.as_ref().unwrap();
    // spawn, mmap (tagged), a tag store, fork, ldg: at most a few more.
    assert!(
        shrunk.program.steps.len() <= 8,
        "{} steps",
        shrunk.program.steps.len()
    );
    assert_eq!(shrunk.failure.step + 1, shrunk.program.steps.len());
    assert!(shrunk.program.steps.iter().any(|s| s.word() == "fork"));

    // The file fails on the buggy machine exactly at its ldg, and passes on
    // the reference.
    let text = &found.reproducer;
    let ldg_line = line_of(text, |l| l.contains(" ldg ") && l.contains("=> tag "));
    let on_bug = run_file(text, &buggy(Bug::ForkDropsTags));
    assert_eq!(on_bug.failures.len(), 1, "{:?}", on_bug.failures);
    assert_eq!(on_bug.failures[0].line, ldg_line);
    assert!(
        on_bug.failures[0].message.ends_with("got tag 0"),
        "{}",
        on_bug.failures[0].message
    );
    assert!(run_file(text, &reference).passed());
}

#[test]
fn a_machine_that_breaks_invariants_is_caught_and_shrunk() {
    let report = caught(Bug::PageoutBreaksInvariants, 6);
    assert_eq!((report.divergences, report.violations), (0, 1));
    let found = &report.found[0];
    assert_eq!(found.failure.word, "madvise");
    let shrunk = found.shrunk.as_ref().unwrap();
    // spawn, mmap, madvise pageout, and the fork that made the process
    // when the program's mapping belongs to a child (seed 6 draws one).
    assert!(shrunk.program.steps.len() <= 4, "{}", found.reproducer);
    assert!(
        ["spawn", "mmap", "madvise"].iter().all(|w| shrunk
            .program
            .steps
            .iter()
            .any(|s| s.word() == *w)),
        "{}",
        found.reproducer
    );
    let text = &found.reproducer;
    let expect_line = line_of(text, |l| l == "expect invariants");
    let on_bug = run_file(text, &buggy(Bug::PageoutBreaksInvariants));
    assert_eq!(on_bug.failures.len(), 1, "{:?}", on_bug.failures);
    assert_eq!(on_bug.failures[0].line, expect_line);
    assert!(run_file(text, &reference).passed());
}

#[test]
fn every_kind_of_step_is_generated() {
    let mut words = BTreeSet::new();
    for seed in 0..10 {
        let program = generate(&GenConfig::new(Design::DYNAMIC, 300), seed);
        words.extend(program.steps.iter().map(|s| s.word()));
    }
    // Every command of the language: the process commands and the
    // machine-wide ones.
    let expected = lang::parse::PROCESS_COMMANDS
        .into_iter()
        .chain(["spawn", "reclaim", "compact", "ksm-scan"]);
    let missing: Vec<&str> = expected
        .into_iter()
        .filter(|w| !words.contains(w))
        .collect();
    assert!(missing.is_empty(), "never generated: {missing:?}");
}
