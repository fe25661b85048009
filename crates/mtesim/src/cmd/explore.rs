//! `mtesim explore FILE... [--strategy random|pct|exhaustive|bounded]
//! [--reduce] [--schedules N] [--depth D] [--preemptions K] [--seed S] [--set
//! KEY=VALUE] [--jobs N] [--shard K/N]`: run each scenario under many
//! interleavings of its `parallel` blocks, checking every expectation and
//! the invariants after every statement of every schedule
//! (`docs/cli.md`, "explore"; the engine is [`scenario::explore`]).
//!
//! Output, per file, in argument order (files run in parallel, `--jobs`
//! threads): on the first failing schedule, its `FAIL file:line: ...`
//! lines, `  schedule: STRING` and `  replay: mtesim run FILE ...
//! --schedule STRING` (the command that replays it exactly), else `PASS
//! file`; then the file's summary, `file: N schedules, M distinct final
//! states, exhausted|not exhausted, R schedules/s`. On stderr: a malformed
//! file's diagnostic, `file: error` for an unreadable one, `file: cannot
//! run: ...`. A progress line (schedules so far) is drawn on stderr only
//! when stderr is a terminal.
//!
//! `--seed` is the schedule seed: random and pct schedule `i` use seed
//! `S + i`; the machine keeps the platform's seed (`--set seed=S` changes
//! that), so exploring never changes the tags `irg` draws.
//!
//! `--json` prints one document on stdout instead (everything else goes to
//! stderr): `schema` (`"mtesim-explore/1"`), `shard` (`index`, `count`)
//! and `files`, one object per file in argument order with `file`,
//! `status` (`pass`, `fail` or `error`), `schedules`, `exhausted`,
//! `states` (the distinct final states' digests, 16 hex digits each,
//! sorted), `seconds` and `failure` (null, or its `failures`, `schedule`
//! and `replay`); a file that could not be explored has only `status` and
//! `error`. The documents of the shards of one campaign merge by adding
//! `schedules` and uniting `states` (`docs/cli.md` has the `jq` line).
//!
//! Exit status: 2 if any file could not be read, is malformed or could not
//! be run; else 1 if a failing schedule was found; else 0.

use std::io::IsTerminal;
use std::num::NonZeroUsize;
use std::panic::AssertUnwindSafe;
use std::path::PathBuf;
use std::process::ExitCode;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use rayon::prelude::*;
use scenario::explore::{
    ExploreFileError, ExploreOptions, ExploreReport, explore_source, replay_command,
};
use scenario::machine::{MachineKind, make_machine};
use scenario::run::RunOptions;
use sched::{Shard, Strategy};
use serde_json::Value;

/// How schedules are picked (`--strategy`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum StrategyName {
    /// Random start order and rare random preemptions, seed S + i.
    Random,
    /// Probabilistic concurrency testing with --depth.
    Pct,
    /// Every schedule, depth first.
    Exhaustive,
    /// Every schedule with at most --preemptions preemptions, fewest first.
    Bounded,
}

#[derive(clap::Args, Debug)]
pub struct Args {
    /// Scenario files.
    #[arg(required = true, value_name = "FILE")]
    pub files: Vec<PathBuf>,
    #[arg(long, value_enum, default_value = "random")]
    pub strategy: StrategyName,
    /// The most schedules to run per file.
    #[arg(long, value_name = "N", default_value_t = 1000)]
    pub schedules: usize,
    /// PCT's bug depth (change points + 1).
    #[arg(long, value_name = "D", default_value_t = 3)]
    pub depth: u32,
    /// With `--strategy exhaustive`: skip schedules that differ from run
    /// ones only in the order of steps the scheduler sees as independent
    /// (sleep sets over lock footprints; `docs/cli.md` says what it assumes).
    #[arg(long)]
    pub reduce: bool,
    /// The preemption bound of `--strategy bounded`.
    #[arg(long, value_name = "K", default_value_t = 2)]
    pub preemptions: u32,
    /// The schedule seed (interleavings only; decimal or 0x hex).
    #[arg(long, value_name = "S", default_value = "0", value_parser = super::run::parse_seed)]
    pub seed: u64,
    /// Replace (or add) a key of every file's `platform` line (repeatable).
    #[arg(long = "set", value_name = "KEY=VALUE", value_parser = super::parse_set)]
    pub set: Vec<(String, String)>,
    /// Explore at most N files at once (default: one per core).
    #[arg(long, value_name = "N")]
    pub jobs: Option<NonZeroUsize>,
    /// Run only part K of N (K from 0) of each exploration; N runs with the
    /// same arguments and K = 0..N together run exactly one exploration.
    #[arg(long, value_name = "K/N", value_parser = parse_shard)]
    pub shard: Option<Shard>,
    /// Print the results as one JSON document on stdout (the other lines
    /// go to stderr); shards' documents merge (`docs/cli.md`).
    #[arg(long)]
    pub json: bool,
}

/// `K/N` with `K < N`.
pub fn parse_shard(text: &str) -> Result<Shard, String> {
    let (k, n) = text
        .split_once('/')
        .ok_or_else(|| format!("expected K/N, got `{text}`"))?;
    let k: u32 = k
        .parse()
        .map_err(|_| format!("expected K/N with whole numbers, got `{text}`"))?;
    let n: u32 = n
        .parse()
        .map_err(|_| format!("expected K/N with whole numbers, got `{text}`"))?;
    Shard::new(k, n).ok_or_else(|| format!("shard {k}/{n}: K must be below N (K counts from 0)"))
}

/// What one file printed and how it ended.
struct FileOutput {
    stdout: String,
    stderr: String,
    /// 0 pass, 1 failure found, 2 input error.
    status: u8,
    /// The file's `--json` object.
    json: Value,
}

pub fn run(args: &Args) -> ExitCode {
    if args.reduce && args.strategy != StrategyName::Exhaustive {
        return super::fail("--reduce applies to --strategy exhaustive only");
    }
    let strategy = match args.strategy {
        StrategyName::Random => Strategy::Random { seed: args.seed },
        StrategyName::Pct => Strategy::Pct {
            seed: args.seed,
            depth: args.depth.max(1),
        },
        StrategyName::Exhaustive if args.reduce => Strategy::Reduced,
        StrategyName::Exhaustive => Strategy::Exhaustive,
        StrategyName::Bounded => Strategy::Bounded {
            preemptions: args.preemptions,
        },
    };
    let options = ExploreOptions {
        strategy,
        max_schedules: args.schedules,
        shard: args.shard.unwrap_or_default(),
        run: RunOptions {
            set: args.set.clone(),
            ..RunOptions::default()
        },
    };
    let bar = progress_bar(std::io::stderr().is_terminal());
    let run_all = || {
        args.files
            .par_iter()
            .map(|file| explore_file(file, &options, &bar))
            .collect::<Vec<FileOutput>>()
    };
    // A machine's panic is reported as the failure of the schedule that
    // reached it (`explore_source`): the default hook's message and
    // backtrace, printed for every replay of the minimiser, would bury the
    // report. Set once around all files (the hook is process-wide).
    let hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(|_| {}));
    let outputs = super::with_jobs(args.jobs, run_all);
    std::panic::set_hook(hook);
    let outputs = match outputs {
        Ok(outputs) => outputs,
        Err(code) => return code,
    };
    bar.finish_and_clear();
    let mut stdout = String::new();
    let mut status = 0;
    for output in &outputs {
        super::eprint(&output.stderr);
        if args.json {
            super::eprint(&output.stdout);
        } else {
            stdout.push_str(&output.stdout);
        }
        status = status.max(output.status);
    }
    if args.json {
        let shard = options.shard;
        let document = serde_json::json!({
            "schema": JSON_SCHEMA,
            "shard": {"index": shard.index, "count": shard.count},
            "files": args.files.iter().zip(&outputs).map(|(file, o)| {
                let mut json = o.json.clone();
                json["file"] = Value::from(file.display().to_string());
                json
            }).collect::<Vec<_>>(),
        });
        stdout = serde_json::to_string_pretty(&document)
            .unwrap_or_else(|e| panic!("BUG: a JSON value failed to serialise: {e}"));
        stdout.push('\n');
    }
    match super::print_stdout(&stdout) {
        code if code == ExitCode::SUCCESS => ExitCode::from(status),
        code => code,
    }
}

fn progress_bar(terminal: bool) -> ProgressBar {
    if !terminal {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::with_draw_target(None, ProgressDrawTarget::stderr());
    if let Ok(style) =
        ProgressStyle::with_template("{spinner} {pos} schedules, {per_sec}, {elapsed}")
    {
        bar.set_style(style);
    }
    bar
}

fn explore_file(file: &PathBuf, options: &ExploreOptions, bar: &ProgressBar) -> FileOutput {
    let name = file.display().to_string();
    let src = match std::fs::read(file) {
        Ok(src) => src,
        Err(e) => return input_error(format!("{name}: {e}\n")),
    };
    // A panic is a bug of the machine or the runner, never the input's
    // fault: it ends this file, not the whole command.
    let result = std::panic::catch_unwind(AssertUnwindSafe(|| {
        explore_source(
            &name,
            &src,
            options,
            |platform| make_machine(MachineKind::Kernel, platform),
            |_| bar.inc(1),
        )
    }));
    match result {
        Err(_) => input_error(format!("{name}: BUG: the exploration panicked\n")),
        Ok(Err(ExploreFileError::Malformed(e))) => {
            input_error(super::run::diagnostic(&e, std::io::stderr().is_terminal()))
        }
        Ok(Err(e)) => input_error(format!("{name}: {e}\n")),
        Ok(Ok(report)) => explored(&name, options, &report),
    }
}

/// The name and version of the `--json` document's shape.
const JSON_SCHEMA: &str = "mtesim-explore/1";

fn input_error(stderr: String) -> FileOutput {
    FileOutput {
        stdout: String::new(),
        json: serde_json::json!({
            "status": "error",
            "error": stderr.lines().next().unwrap_or_default(),
        }),
        stderr,
        status: super::EXIT_INPUT,
    }
}

fn explored(name: &str, options: &ExploreOptions, report: &ExploreReport) -> FileOutput {
    let mut stdout = String::new();
    let status = match &report.failure {
        Some(failure) => {
            for line in &failure.report.failures {
                stdout.push_str(&line.render(name));
                stdout.push('\n');
            }
            stdout.push_str(&format!("  schedule: {}\n", failure.schedule));
            stdout.push_str(&format!(
                "  replay: {}\n",
                replay_command(name, &options.run, &failure.schedule)
            ));
            1
        }
        None => {
            stdout.push_str(&format!("PASS {name}\n"));
            0
        }
    };
    stdout.push_str(&summary(name, report));
    let failure = report.failure.as_ref().map(|f| {
        serde_json::json!({
            "failures": f.report.failures.iter()
                .map(|l| serde_json::json!({"line": l.line, "message": l.message}))
                .collect::<Vec<_>>(),
            "schedule": f.schedule.to_string(),
            "replay": replay_command(name, &options.run, &f.schedule),
        })
    });
    let json = serde_json::json!({
        "file": name,
        "status": if status == 0 { "pass" } else { "fail" },
        "schedules": report.schedules,
        "exhausted": report.exhausted,
        // Hex strings: a JSON number cannot hold every u64 exactly.
        "states": report.states.iter().map(|d| format!("{d:016x}")).collect::<Vec<_>>(),
        "seconds": report.elapsed.as_secs_f64(),
        "failure": failure,
    });
    FileOutput {
        stdout,
        stderr: String::new(),
        status,
        json,
    }
}

/// `file: N schedules, M distinct final states, exhausted, R schedules/s`.
fn summary(name: &str, report: &ExploreReport) -> String {
    let plural = |n: usize, one: &str, many: &str| {
        if n == 1 {
            format!("{n} {one}")
        } else {
            format!("{n} {many}")
        }
    };
    format!(
        "{name}: {}, {}, {}, {:.0} schedules/s\n",
        plural(report.schedules, "schedule", "schedules"),
        plural(
            report.states.len(),
            "distinct final state",
            "distinct final states"
        ),
        if report.exhausted {
            "exhausted"
        } else {
            "not exhausted"
        },
        report.rate()
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shards_parse_with_k_below_n() {
        assert_eq!(parse_shard("0/4"), Ok(Shard::new(0, 4).unwrap()));
        assert_eq!(parse_shard("3/4"), Ok(Shard::new(3, 4).unwrap()));
        assert!(
            parse_shard("4/4")
                .unwrap_err()
                .contains("K must be below N")
        );
        assert!(parse_shard("1").unwrap_err().contains("expected K/N"));
        assert!(parse_shard("a/2").unwrap_err().contains("whole numbers"));
        assert!(parse_shard("0/0").is_err());
    }
}
