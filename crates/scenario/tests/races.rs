//! The explored scenarios: every `tests/scenarios/**/*.mte` with an
//! `# explore:` directive is searched over its interleavings by the engine
//! behind `mtesim explore` ([`scenario::explore::explore_source`]), as one
//! test named `<area>/<file>.mte@explore`. The races of the RFC reviews
//! (`tests/scenarios/races/`) and the design questions only schedules can
//! answer (`questions/`) are such files.
//!
//! Directives (`tests/scenarios/README.md`):
//! - `# explore: exhaustive|reduced|bounded K [schedules=N]`: the search
//!   (`--strategy exhaustive`, `exhaustive --reduce`, `bounded
//!   --preemptions K`; at most `N` schedules, default [`DEFAULT_SCHEDULES`]).
//!   It must find no failing schedule and must cover every schedule
//!   (exhausted, within the bound for `bounded`).
//! - `# explore-fails-with: KEY=VALUE ...` (repeatable): one more test,
//!   `...@explore-fails-with:KEY=VALUE`, runs the same search with those
//!   platform keys replaced (`--set`): it must find a failing schedule, and
//!   that schedule, replayed as the printed `mtesim run FILE --set KEY=VALUE
//!   --schedule STRING` replays it, must fail too (at the same line, or at
//!   the file's next `expect invariants` when the search's failure was an
//!   invariant: `mtesim run` checks those only where the file asks).
//!
//! Each test prints its figures (schedules, exhausted, distinct final
//! states, seconds) with `--nocapture`.

mod common;

use common::{Parsed, comments, key_values, label, parse_each, scenario_files};
use libtest_mimic::{Arguments, Failed, Trial};
use platform::Platform;
use scenario::explore::{ExploreOptions, ExploreReport, explore_source, replay_command};
use scenario::machine::{MachineKind, make_machine};
use scenario::run::{FileResult, RunOptions, Status};
use sched::{Shard, Strategy};

/// Schedules a search may run when the file does not say.
const DEFAULT_SCHEDULES: usize = 20_000;

/// What a file's comments ask of the explorer.
#[derive(Debug, PartialEq, Eq)]
struct Plan {
    strategy: Strategy,
    schedules: usize,
    fails_with: Vec<Vec<(String, String)>>,
}

/// The plan of a file, `None` if it has no `# explore:` directive.
fn plan(src: &[u8]) -> Result<Option<Plan>, String> {
    let text = String::from_utf8_lossy(src);
    let mut search = None;
    let mut fails_with = Vec::new();
    for comment in comments(&text) {
        if let Some(rest) = comment.strip_prefix("explore-fails-with:") {
            fails_with.push(key_values("explore-fails-with:", rest)?);
        } else if let Some(rest) = comment.strip_prefix("explore:") {
            search = Some(search_of(rest.trim())?);
        }
    }
    match (search, fails_with.is_empty()) {
        (Some((strategy, schedules)), _) => Ok(Some(Plan {
            strategy,
            schedules,
            fails_with,
        })),
        (None, true) => Ok(None),
        (None, false) => Err("`# explore-fails-with:` without `# explore:`".into()),
    }
}

/// `exhaustive|reduced|bounded K [schedules=N]`.
fn search_of(text: &str) -> Result<(Strategy, usize), String> {
    let bad = || format!("bad `# explore: {text}` (exhaustive|reduced|bounded K [schedules=N])");
    let mut words = text.split_whitespace();
    let strategy = match words.next() {
        Some("exhaustive") => Strategy::Exhaustive,
        Some("reduced") => Strategy::Reduced,
        Some("bounded") => Strategy::Bounded {
            preemptions: words.next().and_then(|k| k.parse().ok()).ok_or_else(bad)?,
        },
        _ => return Err(bad()),
    };
    let mut schedules = DEFAULT_SCHEDULES;
    for word in words {
        schedules = word
            .strip_prefix("schedules=")
            .and_then(|n| n.parse().ok())
            .ok_or_else(bad)?;
    }
    Ok((strategy, schedules))
}

fn explore(
    name: &str,
    src: &[u8],
    plan: &Plan,
    set: &[(String, String)],
) -> Result<ExploreReport, Failed> {
    let options = ExploreOptions {
        strategy: plan.strategy,
        max_schedules: plan.schedules,
        shard: Shard::ALL,
        run: RunOptions {
            set: set.to_vec(),
            ..RunOptions::default()
        },
    };
    explore_source(
        name,
        src,
        &options,
        |p: &Platform| make_machine(MachineKind::Kernel, p),
        |_| {},
    )
    .map_err(|e| Failed::from(format!("{name}: {e}")))
}

fn figures(name: &str, report: &ExploreReport) {
    println!(
        "{name}: {} schedules, {}, {} distinct final states, {:.2} s",
        report.schedules,
        if report.exhausted {
            "exhausted"
        } else {
            "not exhausted"
        },
        report.states.len(),
        report.elapsed.as_secs_f64()
    );
}

/// On the design: no failing schedule, every schedule covered.
fn holds(name: &str, src: &[u8], plan: &Plan) -> Result<(), Failed> {
    let report = explore(name, src, plan, &[])?;
    figures(name, &report);
    if let Some(failure) = &report.failure {
        let mut text = failure.report.render(name, false);
        text.push_str(&format!("  schedule: {}\n", failure.schedule));
        return Err(text.into());
    }
    if !report.exhausted {
        return Err(format!(
            "{name}: not exhausted in {} schedules (raise `schedules=` or bound it)",
            report.schedules
        )
        .into());
    }
    Ok(())
}

/// With `set`: a failing schedule is found, and its printed replay fails
/// at the same line.
fn fails(name: &str, src: &[u8], plan: &Plan, set: &[(String, String)]) -> Result<(), Failed> {
    let report = explore(name, src, plan, set)?;
    let Some(failure) = &report.failure else {
        figures(name, &report);
        return Err(format!(
            "{name}: no failing schedule with {set:?} in {} schedules",
            report.schedules
        )
        .into());
    };
    let run = RunOptions {
        set: set.to_vec(),
        ..RunOptions::default()
    };
    let command = replay_command(name, &run, &failure.schedule);
    println!(
        "{name} {set:?}: failed at schedule {} of {} ({:.2} s): {}\n  replay: {command}",
        failure.run,
        report.schedules,
        report.elapsed.as_secs_f64(),
        failure.report.failures[0].message
    );
    let expected = set
        .iter()
        .map(|(k, v)| format!(" --set {k}={v}"))
        .collect::<String>();
    if !command.contains(&format!("{expected} --schedule ")) {
        return Err(format!("the replay command does not carry {set:?}: {command}").into());
    }
    // What `mtesim run FILE --set ... --schedule STRING` does.
    let replay = RunOptions {
        schedule: Some(
            failure
                .schedule
                .to_string()
                .parse()
                .map_err(|e| format!("{e}"))?,
        ),
        ..run
    };
    match scenario::run_source(name, src, &replay, |p: &Platform| {
        make_machine(MachineKind::Kernel, p)
    }) {
        // `mtesim run` checks invariants only where the file says `expect
        // invariants` (the search checks them after every statement), so
        // a broken invariant fails the replay at that line, or later.
        FileResult::Ran(replayed) if replayed.status() == Status::Fail => {
            let (at, was) = (&replayed.failures[0], &failure.report.failures[0]);
            if at.line < was.line {
                return Err(format!(
                    "the replay failed at line {}, before the search's {}",
                    at.line, was.line
                )
                .into());
            }
            Ok(())
        }
        FileResult::Ran(replayed) => {
            Err(format!("the replay did not fail: {:?}", replayed.status()).into())
        }
        other => Err(format!("the replay could not run: {other:?}").into()),
    }
}

/// The directive reader itself, as one more trial.
fn plans_are_read_from_comments() -> Result<(), Failed> {
    let read = |src: &str| plan(src.as_bytes());
    if read("spawn p\n") != Ok(None) {
        return Err("a file without `# explore:` is not explored".into());
    }
    let pair = |k: &str, v: &str| (k.to_owned(), v.to_owned());
    let got = read("# explore: bounded 2 schedules=500\n# explore-fails-with: mistake=a\n")?;
    let want = Plan {
        strategy: Strategy::Bounded { preemptions: 2 },
        schedules: 500,
        fails_with: vec![vec![pair("mistake", "a")]],
    };
    if got != Some(want) {
        return Err(format!("{got:?}").into());
    }
    if read("# explore: reduced\n")?.map(|p| p.strategy) != Some(Strategy::Reduced) {
        return Err("reduced".into());
    }
    if read("# explore: random\n").is_ok()
        || read("# explore: bounded\n").is_ok()
        || read("# explore: exhaustive schedules=x\n").is_ok()
        || read("# explore-fails-with: mistake=a\n").is_ok()
        || read("# explore: exhaustive\n# explore-fails-with:\n").is_ok()
    {
        return Err("bad directives accepted".into());
    }
    Ok(())
}

fn main() {
    let args = Arguments::from_args();
    let mut trials = vec![Trial::test(
        "harness: explore directives",
        plans_are_read_from_comments,
    )];
    let explored = parse_each(scenario_files(), plan, &mut trials);
    assert!(
        explored.len() >= 7,
        "only {} explored scenario files",
        explored.len()
    );
    for file in explored {
        let Parsed {
            name,
            src,
            directives: plan,
        } = file;
        {
            let (name, src, plan) = (name.clone(), src.clone(), plan.clone());
            trials.push(Trial::test(format!("{name}@explore"), move || {
                holds(&name, &src, &plan)
            }));
        }
        for set in &plan.fails_with {
            let trial_name = format!("{name}@explore-fails-with:{}", label(set));
            let (name, src, plan, set) = (name.clone(), src.clone(), plan.clone(), set.clone());
            trials.push(Trial::test(trial_name, move || {
                fails(&name, &src, &plan, &set)
            }));
        }
    }
    libtest_mimic::run(&args, trials).exit();
}
