//! Exploring the interleavings of a scenario's `parallel` blocks: the
//! engine behind `mtesim explore` (`docs/language.md`, "Concurrency";
//! `docs/cli.md`, "explore").
//!
//! A file is parsed once; each schedule then runs the whole file on a fresh
//! machine (built from the file's platform with [`RunOptions::set`] and
//! [`RunOptions::seed`] applied, so every schedule draws the same IRG tags)
//! with the invariants checked after every statement
//! ([`RunOptions::check_invariants`]; the statements before the first
//! `parallel` block run alike in every schedule, so their checks are made
//! in the first schedule only) and every expectation checked as `mtesim
//! run` checks it. A schedule *fails* when its run does not pass, or when
//! the machine panics (a kernel `BUG:`: reported at the statement running
//! then, with the schedule that reached it); the search
//! ([`sched::explore_with`]) stops at the first failure.
//!
//! The failing schedule is then *minimised*: each decision that names a CPU
//! is in turn replaced by [`sched::Choice::Stay`] (later decisions that no
//! longer fit fall back to `Stay` too) and the change is kept when the run
//! still fails at the same line, until no single replacement keeps it
//! failing or [`MINIMISE_RUNS`] runs are spent. Fewer named CPUs print
//! shorter and usually read better: the preemptions the failure needs.
//! The result is replayed once more, strictly, as `mtesim run --schedule`
//! will, so the printed schedule is known to reproduce the failure.
//!
//! The lock acquisition orders of every schedule's machine are carried to
//! the next ([`uapi::Machine::merge_lock_order`]), so a lock-order
//! inversion between two schedules is reported (invariant 9) even when no
//! schedule deadlocked.
//!
//! Distinct final states are counted by [`RunReport::digest`]: every
//! command's result and every expectation's verdict, in order, and the
//! final counters.

use std::collections::BTreeSet;
use std::fmt;
use std::time::{Duration, Instant};

use lang::ParseError;
use platform::Platform;
use sched::{
    Choice, ChoicePoint, ChooseError, Chooser, CpuId, ExploreError, Recorder, Replay, Schedule,
    Shard, Strategy,
};
use thiserror::Error;
use uapi::Machine;

use crate::run::{Failure, RunOptions, RunReport, Runner, Status};

/// The most runs spent minimising a failing schedule.
pub const MINIMISE_RUNS: usize = 500;

/// What to explore and how.
#[derive(Clone, Debug)]
pub struct ExploreOptions {
    pub strategy: Strategy,
    /// The most schedules to run (per shard for exhaustive and bounded).
    pub max_schedules: usize,
    pub shard: Shard,
    /// `--set` and `--seed` (the platform's) apply as for `mtesim run`;
    /// `schedule` and `schedule_seed` are ignored (the search chooses).
    pub run: RunOptions,
}

/// What exploring one file found.
#[derive(Clone, Debug)]
pub struct ExploreReport {
    /// Schedules run and counted (see [`sched::Exploration::schedules`]).
    pub schedules: usize,
    /// Systematic search ran every schedule (within its bound and shard).
    pub exhausted: bool,
    /// The digests of the final states of the passing schedules, sorted.
    pub states: BTreeSet<u64>,
    /// The most decisions one schedule made.
    pub longest: usize,
    pub elapsed: Duration,
    pub failure: Option<FoundFailure>,
}

impl ExploreReport {
    /// Schedules per second (0 when nothing was timed).
    pub fn rate(&self) -> f64 {
        let secs = self.elapsed.as_secs_f64();
        if secs > 0.0 {
            self.schedules as f64 / secs
        } else {
            0.0
        }
    }
}

/// A failing schedule and what its run reported.
#[derive(Clone, Debug)]
pub struct FoundFailure {
    /// The minimised schedule, which a strict replay reproduces.
    pub schedule: Schedule,
    /// The schedule as the search found it.
    pub found: Schedule,
    /// Which counted schedule failed, from 1.
    pub run: usize,
    /// The failing run (replayed with `schedule`).
    pub report: RunReport,
}

/// Why a file could not be explored (exit status 2).
#[derive(Debug, Error)]
pub enum ExploreFileError {
    #[error("{0}")]
    Malformed(ParseError),
    #[error("cannot run: {0}")]
    CannotRun(String),
    /// The same decisions led to different decision points (a bug of the
    /// machine: it must be deterministic).
    #[error("{0}")]
    Nondeterministic(ExploreError),
}

/// Explores `file` (its text `src`) on machines from `make_machine`;
/// `progress` is called after every counted schedule with their number.
pub fn explore_source<E: fmt::Display>(
    file: &str,
    src: &[u8],
    options: &ExploreOptions,
    make_machine: impl Fn(&Platform) -> Result<Box<dyn Machine>, E>,
    mut progress: impl FnMut(usize),
) -> Result<ExploreReport, ExploreFileError> {
    let script = lang::parse(file, src).map_err(ExploreFileError::Malformed)?;
    let mut run_options = options.run.clone();
    run_options.check_invariants = true;
    run_options.verbose = false;
    run_options.schedule = None;
    let spec = run_options.platform_spec(&script.platform_spec());
    let platform = run_options
        .platform(script.platform.as_ref(), &spec)
        .map_err(ExploreFileError::CannotRun)?;
    // One machine up front: a platform the machine refuses is bad input,
    // not a failing schedule.
    make_machine(&platform).map_err(|e| ExploreFileError::CannotRun(e.to_string()))?;
    // The statements before the first block run alike in every schedule:
    // their invariants are checked in the first run only.
    let mut later_options = run_options.clone();
    later_options.invariants_from_first_block = true;
    let first_run = std::cell::Cell::new(true);
    // The lock orders seen so far, carried from each schedule's machine to
    // the next: two schedules taking two locks in opposite orders are a
    // possible deadlock even if neither deadlocked (invariant 9).
    let orders: std::cell::RefCell<Option<sched::LockOrder>> = std::cell::RefCell::new(None);
    // The statement running now: where a panic is reported.
    let line = std::cell::Cell::new(0);
    let run_one = |chooser: &mut dyn Chooser| -> RunReport {
        let mut machine = match make_machine(&platform) {
            Ok(machine) => machine,
            Err(e) => panic!("BUG: the machine was built once and now is not: {e}"),
        };
        if let Some(order) = orders.borrow().as_ref() {
            machine.merge_lock_order(order);
        }
        let options = if first_run.replace(false) {
            &run_options
        } else {
            &later_options
        };
        let mut runner = Runner::new(&mut *machine, options, &spec)
            .with_source(src)
            .with_chooser(chooser);
        for stmt in &script.stmts {
            line.set(stmt.line());
            runner.statement(stmt, &script.names);
        }
        let report = runner.finish();
        if let Some(order) = machine.lock_order() {
            *orders.borrow_mut() = Some(order);
        }
        report
    };
    // A panic (a kernel `BUG:`, such as a frame used after another CPU freed
    // it) is a failure of the schedule that reached it, at the statement
    // running then: the search reports it with that schedule, shortened,
    // and `mtesim run --schedule` replays it, instead of the whole file
    // ending without one.
    let one = |chooser: &mut dyn Chooser| -> RunReport {
        match std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| run_one(chooser))) {
            Ok(report) => report,
            Err(payload) => RunReport {
                failures: vec![Failure {
                    line: line.get(),
                    message: format!("the machine panicked: {}", panic_message(&*payload)),
                }],
                ..RunReport::default()
            },
        }
    };
    let start = Instant::now();
    let mut states = BTreeSet::new();
    let mut counted = 0;
    let exploration = sched::explore_with(
        options.strategy,
        options.max_schedules,
        options.shard,
        |chooser| {
            let report = one(chooser);
            match report.status() {
                Status::Pass => Ok(report.digest),
                _ => Err(()),
            }
        },
        |digest| {
            states.insert(digest);
            counted += 1;
            progress(counted);
        },
    )
    .map_err(ExploreFileError::Nondeterministic)?;
    let failure = exploration.failure.map(|failure| {
        let schedule = minimise(&failure.schedule, &one);
        let report = one(&mut Replay::new(schedule.clone()));
        FoundFailure {
            schedule,
            found: failure.schedule,
            run: failure.run,
            report,
        }
    });
    Ok(ExploreReport {
        schedules: exploration.schedules,
        exhausted: exploration.exhausted,
        states,
        longest: exploration.longest,
        elapsed: start.elapsed(),
        failure,
    })
}

/// The text a panic carried (`panic!`'s message), or a placeholder.
fn panic_message(payload: &(dyn std::any::Any + Send)) -> String {
    payload
        .downcast_ref::<&str>()
        .map(|s| (*s).to_owned())
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "(no message)".to_owned())
}

/// The line of a run's first failure (`None`: it passed, or could not run).
fn failing_line(report: &RunReport) -> Option<u32> {
    match report.status() {
        Status::Fail => report.failures.first().map(|f| f.line),
        Status::Pass | Status::Error => None,
    }
}

/// See the module doc.
fn minimise(found: &Schedule, one: &impl Fn(&mut dyn Chooser) -> RunReport) -> Schedule {
    let mut best = found.clone();
    let Some(line) = failing_line(&one(&mut Replay::new(best.clone()))) else {
        // Not reproducible by a strict replay: a bug of the determinism
        // check; print what the search ran.
        return best;
    };
    let mut runs = 1;
    let mut changed = true;
    while changed && runs < MINIMISE_RUNS {
        changed = false;
        // Latest first: dropping a late preemption disturbs least.
        let named: Vec<usize> = (0..best.len())
            .rev()
            .filter(|&i| matches!(best.as_slice()[i], Choice::Cpu(_)))
            .collect();
        for i in named {
            if runs >= MINIMISE_RUNS {
                break;
            }
            let mut choices = best.as_slice().to_vec();
            choices[i] = Choice::Stay;
            let mut chooser = Recorder::new(Lenient { choices, used: 0 });
            let report = one(&mut chooser);
            runs += 1;
            if failing_line(&report) == Some(line) {
                let recorded = chooser.into_parts().1;
                if recorded.deviations() < best.deviations() {
                    best = recorded;
                    changed = true;
                    break;
                }
            }
        }
    }
    best
}

/// Follows choices where they fit and [`Choice::Stay`] where they do not
/// (a CPU that is not runnable, or past the end).
struct Lenient {
    choices: Vec<Choice>,
    used: usize,
}

impl Chooser for Lenient {
    fn choose(&mut self, point: &ChoicePoint<'_>) -> Result<CpuId, ChooseError> {
        let choice = self.choices.get(self.used).copied().unwrap_or(Choice::Stay);
        self.used += 1;
        let cpu = choice.resolve(point);
        Ok(if point.runnable.contains(&cpu) {
            cpu
        } else {
            Choice::stay_at(point)
        })
    }
}

/// The `mtesim run` command that replays `schedule` on `file` with the
/// same platform changes.
pub fn replay_command(file: &str, options: &RunOptions, schedule: &Schedule) -> String {
    let mut command = format!("mtesim run {}", shell_word(file));
    for (key, value) in &options.set {
        command.push_str(&format!(" --set {}", shell_word(&format!("{key}={value}"))));
    }
    if let Some(seed) = options.seed {
        command.push_str(&format!(" --seed {seed}"));
    }
    command.push_str(&format!(
        " --schedule {}",
        shell_word(&schedule.to_string())
    ));
    command
}

/// `word` quoted for a POSIX shell when it needs it.
fn shell_word(word: &str) -> String {
    // `*` is a glob: schedules with runs of one CPU are quoted.
    let plain = !word.is_empty()
        && word
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "+-./_=:,@%".contains(c));
    if plain {
        word.to_owned()
    } else {
        format!("'{}'", word.replace('\'', r"'\''"))
    }
}

#[cfg(test)]
mod tests;
