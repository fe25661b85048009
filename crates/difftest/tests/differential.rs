//! Differential test: programs of the fuzz generator ([`difftest::generate`])
//! run in lockstep on the kernel model and on the reference model
//! (`refmodel::RefMachine`, the executable form of docs/semantics.md); every
//! reply must agree (docs/model.md §4.8, "nothing is lost"), and the
//! kernel's invariants hold after every step. Platforms are drawn by the
//! generator for each tag storage policy (tag storage for data preferred,
//! allowed or never, transparent huge pages, swap), and its memory budget
//! keeps programs clear of what depends on the machine's memory
//! (docs/semantics.md §16).
//!
//! Parallel blocks: [`difftest::generate_parallel`] programs run on the
//! kernel alone through the scenario runner (outcomes depend on the
//! interleaving and are not compared): every block finishes (no deadlock,
//! no step limit, no panic) and the invariants hold after every command
//! and block.
//!
//! Linearizability: programs with `parallel` blocks ([`GenConfig::parallel`])
//! run in lockstep with the kernel's interleavings drawn per block, each
//! block's replies explained by some serial order on the reference; races
//! are observed going both ways (the line order alone explains some
//! blocks, only another order others).

mod common;

use common::{kernel, reference};
use difftest::{GenConfig, generate, generate_parallel, run_program};
use platform::Design;
use scenario::run::{FileResult, RunOptions};

fn agree(policy: Design, seeds: core::ops::Range<u64>, steps: usize) {
    for seed in seeds {
        let program = generate(&GenConfig::new(policy, steps), seed);
        let run = run_program(&program, &kernel, &reference)
            .unwrap_or_else(|e| panic!("seed {seed}: {e}"));
        if let Some(failure) = run.failure {
            panic!("seed {seed}: {failure}\n{}", program.render());
        }
    }
}

#[test]
fn kernel_agrees_with_reference_dynamic() {
    agree(Design::DYNAMIC, 0..40, 160);
}

#[test]
fn kernel_agrees_with_reference_static_and_none() {
    agree(Design::STATIC, 200..212, 120);
    agree(Design::NONE, 300..310, 100);
}

#[test]
fn kernel_agrees_with_reference_xnu_and_google() {
    for name in ["xnu", "google"] {
        let design = Design::by_name(name).expect("registered");
        agree(design, 400..416, 160);
    }
}

#[test]
fn parallel_blocks_keep_the_invariants() {
    parallel_blocks_keep_the_invariants_of(Design::DYNAMIC, 0..24);
}

/// The holding designs' refill runs inside the tagged allocation of
/// whichever CPU found no taggable frame, and their background task (XNU's
/// refill thread, Google's compaction) beside every block's commands:
/// parallel blocks interleave both.
#[test]
fn parallel_blocks_keep_the_invariants_xnu_and_google() {
    for name in ["xnu", "google"] {
        let design = Design::by_name(name).expect("registered");
        parallel_blocks_keep_the_invariants_of(design, 0..12);
    }
}

fn parallel_blocks_keep_the_invariants_of(design: Design, seeds: core::ops::Range<u64>) {
    for seed in seeds {
        let program = generate_parallel(&GenConfig::new(design, 120), seed, 3);
        assert!(
            program.blocks.iter().any(|b| b.len() > 1),
            "seed {seed}: no block of two commands or more"
        );
        let text = program.render();
        let options = RunOptions {
            check_invariants: true,
            ..RunOptions::default()
        };
        let report = match scenario::run_source("parallel.mte", text.as_bytes(), &options, kernel) {
            FileResult::Ran(report) => report,
            other => panic!("seed {seed}: {other:?}\n{text}"),
        };
        assert!(
            report.passed(),
            "seed {seed}: {}\n{text}",
            report.render("parallel.mte", false)
        );
    }
}

/// The generator reaches KSM's merging and breaking: over a few programs
/// per policy that can merge (MTE or not), pages are merged, and the
/// kernel still agrees with the reference (checked by `agree` above for
/// the same seeds' kind of programs).
#[test]
fn generated_programs_merge_pages() {
    for policy in [Design::DYNAMIC, Design::STATIC, Design::NONE] {
        let mut merged = 0;
        for seed in 0..12u64 {
            let program = generate(&GenConfig::new(policy, 300), seed);
            let text = program.render();
            let options = RunOptions {
                check_invariants: true,
                ..RunOptions::default()
            };
            let report = match scenario::run_source("ksm.mte", text.as_bytes(), &options, kernel) {
                FileResult::Ran(report) => report,
                other => panic!("seed {seed}: {other:?}\n{text}"),
            };
            assert!(
                report.passed(),
                "seed {seed}: {}\n{text}",
                report.render("ksm.mte", false)
            );
            merged += report
                .counters
                .iter()
                .find(|(c, _)| *c == uapi::Counter::KsmMerged)
                .map_or(0, |&(_, v)| v);
        }
        assert!(merged > 0, "{policy:?}: no page merged in 12 programs");
    }
}

#[test]
fn parallel_blocks_are_linearizable_and_race_both_ways() {
    let (mut blocks, mut as_written, mut reordered) = (0, 0, 0);
    for (policy, seeds) in [(Design::DYNAMIC, 0..16u64), (Design::STATIC, 100..106)] {
        for seed in seeds {
            let config = GenConfig {
                parallel: difftest::DEFAULT_PARALLEL,
                ..GenConfig::new(policy, 200)
            };
            let program = generate(&config, seed);
            let run = run_program(&program, &kernel, &reference)
                .unwrap_or_else(|e| panic!("seed {seed}: {e}"));
            if let Some(failure) = run.failure {
                panic!("{policy:?} seed {seed}: {failure}\n{}", program.render());
            }
            blocks += run.schedules.len();
            as_written += run.raced_as_written;
            reordered += run.raced_reordered;
        }
    }
    eprintln!("{blocks} blocks: {as_written} raced as written, {reordered} reordered");
    assert!(blocks > 300, "{blocks} blocks");
    assert!(as_written > 0 && reordered > 0);
}
