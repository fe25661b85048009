//! Exploring files on the kernel: every strategy finds an order-dependent
//! outcome and its minimised schedule replays; counts of schedules and
//! final states, shards, the reduced search, and the schedule seed.

use super::*;
use crate::machine::{MachineKind, make_machine};
use crate::run::FileResult;

/// The load sees 0 only if it runs before the store: an outcome written
/// inside the block that does not hold in every interleaving.
const RACY: &str = "platform cpus=2\nspawn p\np mmap a 4K => ok\nparallel\n  \
                    p store a 8 1 => ok\n  p load a 8 => value 0\nend\n";

/// The same without the outcome: two final states (the load sees 0 or 1).
const TWO_STATES: &str = "platform cpus=2\nspawn p\np mmap a 4K => ok\nparallel\n  \
                          p store a 8 1 => ok\n  p load a 8\nend\n";

fn explore(src: &str, strategy: Strategy, shard: Shard) -> ExploreReport {
    let options = ExploreOptions {
        strategy,
        max_schedules: if matches!(strategy, Strategy::Random { .. } | Strategy::Pct { .. }) {
            200
        } else {
            10_000
        },
        shard,
        run: RunOptions::default(),
    };
    explore_source(
        "t.mte",
        src.as_bytes(),
        &options,
        |p| make_machine(MachineKind::Kernel, p),
        |_| {},
    )
    .unwrap()
}

fn replay(src: &str, schedule: &str) -> RunReport {
    let options = RunOptions {
        schedule: Some(schedule.parse().unwrap()),
        ..RunOptions::default()
    };
    match crate::run_source("t.mte", src.as_bytes(), &options, |p| {
        make_machine(MachineKind::Kernel, p)
    }) {
        FileResult::Ran(report) => report,
        other => panic!("{other:?}"),
    }
}

#[test]
fn every_strategy_finds_the_race_and_the_printed_command_replays_it() {
    for strategy in [
        Strategy::Exhaustive,
        Strategy::Bounded { preemptions: 2 },
        Strategy::Random { seed: 3 },
        Strategy::Pct { seed: 3, depth: 2 },
    ] {
        let report = explore(RACY, strategy, Shard::ALL);
        let failure = report.failure.expect("the store can run first");
        assert_eq!(failure.report.failures[0].line, 6, "{strategy:?}");
        // The minimised schedule names few CPUs and replays exactly.
        assert!(failure.schedule.deviations() <= failure.found.deviations());
        let text = failure.schedule.to_string();
        assert!(text.len() <= 40, "{strategy:?}: {text}");
        let replayed = replay(RACY, &text);
        assert_eq!(replayed.status(), Status::Fail, "{strategy:?}: {text}");
        assert_eq!(replayed.failures, failure.report.failures);
        let command = replay_command("t.mte", &RunOptions::default(), &failure.schedule);
        assert!(
            command.starts_with("mtesim run t.mte --schedule "),
            "{command}"
        );
    }
}

#[test]
fn exhaustive_search_counts_schedules_and_final_states_and_shards_add_up() {
    let whole = explore(TWO_STATES, Strategy::Exhaustive, Shard::ALL);
    assert!(whole.failure.is_none());
    assert!(whole.exhausted);
    assert!(whole.schedules > 2, "{}", whole.schedules);
    // The load sees 0 or 1.
    assert_eq!(whole.states.len(), 2);
    for count in [2, 3] {
        let mut schedules = 0;
        let mut states = BTreeSet::new();
        for index in 0..count {
            let part = explore(
                TWO_STATES,
                Strategy::Exhaustive,
                Shard::new(index, count).unwrap(),
            );
            assert!(part.exhausted);
            schedules += part.schedules;
            states.extend(part.states);
        }
        assert_eq!((schedules, &states), (whole.schedules, &whole.states));
    }
    // Bounded with no preemption: who goes first, two schedules.
    let none = explore(TWO_STATES, Strategy::Bounded { preemptions: 0 }, Shard::ALL);
    assert_eq!((none.schedules, none.states.len()), (2, 2));
}

#[test]
fn the_schedule_seed_never_changes_irg() {
    // `irg` draws from the platform seed; the schedules explored differ
    // but every one sees the same tag.
    let src = "platform cpus=2 seed=9\nspawn p\np mmap a 4K prot=r,w,mte\n\
               p irg a a => tag 1\nparallel\n  p store a 8 1\n  p load a 8\nend\n";
    let tag = |schedule_seed| {
        let options = RunOptions {
            schedule_seed: Some(schedule_seed),
            verbose: true,
            ..RunOptions::default()
        };
        match crate::run_source("t.mte", src.as_bytes(), &options, |p| {
            make_machine(MachineKind::Kernel, p)
        }) {
            FileResult::Ran(report) => report.steps[2].result.clone(),
            other => panic!("{other:?}"),
        }
    };
    let first = tag(0);
    assert!((1..50).all(|s| tag(s) == first));
}

#[test]
fn shell_words_are_quoted_when_needed() {
    assert_eq!(shell_word("+3.1.+2"), "+3.1.+2");
    assert_eq!(shell_word("0*3.1"), "'0*3.1'");
    assert_eq!(shell_word("a b"), "'a b'");
    assert_eq!(shell_word("it's"), r"'it'\''s'");
}

#[test]
fn the_reduced_search_reaches_every_final_state_of_the_full_one() {
    // Small enough to enumerate fully: (file, full, reduced) schedules.
    let two_procs = "platform cpus=2\nspawn p\nspawn q\np mmap a 64K prot=r,w,mte => ok\n\
                     q mmap b 64K => ok\nparallel\n  p store a 8 7\n  \
                     q mprotect b 64K prot=r,w,mte => ok\nend\np load a 8 => value 7\n";
    let fork = "platform cpus=2\nspawn p\np mmap a 8K prot=r,w,mte => ok\np store a 8 1\n\
                parallel\n  p fork c\n  p store a+0x1000 8 2\nend\nexpect invariants\n";
    let runner = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../tests/scenarios/runner/parallel.mte"
    ))
    .unwrap();
    for (name, src) in [
        ("two states", TWO_STATES),
        ("two processes", two_procs),
        ("fork", fork),
        ("runner/parallel.mte", runner.as_str()),
    ] {
        let full = explore(src, Strategy::Exhaustive, Shard::ALL);
        let reduced = explore(src, Strategy::Reduced, Shard::ALL);
        assert!(full.exhausted && reduced.exhausted, "{name}");
        assert!(
            full.failure.is_none() && reduced.failure.is_none(),
            "{name}"
        );
        assert_eq!(reduced.states, full.states, "{name}");
        assert!(reduced.schedules <= full.schedules, "{name}");
        eprintln!(
            "{name}: full {} schedules, reduced {}, {} final states",
            full.schedules,
            reduced.schedules,
            full.states.len()
        );
    }
}

/// The suites' scenarios with `parallel` blocks, from the repository root.
fn suite_file(path: &str) -> String {
    std::fs::read_to_string(format!(
        "{}/../../tests/scenarios/{path}",
        env!("CARGO_MANIFEST_DIR")
    ))
    .unwrap()
}

#[test]
fn the_suites_parallel_scenarios_pass_many_schedules_and_print_short() {
    for path in ["thp/parallel.mte", "runner/parallel.mte"] {
        let src = suite_file(path);
        let report = explore(&src, Strategy::Random { seed: 0 }, Shard::ALL);
        assert!(report.failure.is_none(), "{path}: {:?}", report.failure);
        // `run`'s default schedule of a block of ~1,000 decisions (the THP
        // faults) prints in a few dozen characters.
        let options = RunOptions::default();
        let FileResult::Ran(run) = crate::run_source(path, src.as_bytes(), &options, |p| {
            make_machine(MachineKind::Kernel, p)
        }) else {
            panic!("{path} did not run");
        };
        let schedule = run.schedule.unwrap();
        assert!(schedule.to_string().len() <= 64, "{path}: {schedule}");
        eprintln!("{path}: {} decisions print as {schedule}", schedule.len());
    }
}
