//! `mtesim run FILES_OR_DIRS... [--verbose] [--trace] [--trace-json FILE] [--json] [--seed S]
//! [--schedule-seed S] [--schedule STRING] [--jobs N] [--machine kernel|reference]
//! [--check-invariants]`: run
//! scenarios, each on a fresh machine (`docs/language.md`, "Running").
//!
//! Files: a directory is searched recursively for `*.mte`, in sorted order
//! of names at each level (symbolic links to files are followed, to
//! directories not, so a link loop cannot hang the search); a file argument
//! is taken as given, whatever its name. The files run in parallel (rayon,
//! `--jobs` threads, all cores by default) and their results are printed in
//! the order of that list: arguments in the order given, each directory
//! expanded in place.
//!
//! With `--trace`, the verbose trace shows under each command the events
//! the machine recorded while it ran (`uapi::event`); `--trace-json FILE`
//! writes the same events as JSON lines ([`super::trace_json`]).
//!
//! Output, per file, on stdout: with `--verbose` every command and
//! expectation with its result (`  12: p load a#7 8 => value 0x0`), then
//! `  schedule: STRING`, the schedule of its parallel blocks (also without
//! `--verbose` when a line failed inside or after a `parallel` block), then
//! one `FAIL file:line: expected X, got Y` per failure, or `PASS file`.
//! On stderr: a malformed file's
//! `file:line:column: message` followed by the offending line with a caret
//! (miette, no colours unless stderr is a terminal), `file: error` for an
//! unreadable file, `file: cannot run: ...` when no machine can be built,
//! `file: schedule: ...` when `--schedule` does not fit. The last line is
//! `N passed, M failed`, where every file that did not pass (failed,
//! malformed, unreadable or not runnable) counts as failed. A progress bar
//! is drawn on stderr only when stderr is a terminal and there are several
//! files.
//!
//! `--json` puts one JSON document on stdout, of the same shape for one
//! file or many (`docs/cli.md` documents it): `schema` (`"mtesim-run/1"`),
//! `machine`, `passed`, `failed`, and `files`, one object per file in the
//! order of the other lines, each with `file`, `status` (`pass`, `fail` or
//! `error`), `failures` (`line` and `message` of each `FAIL` line), `error`
//! (why the file did not run, else null), `seed`, `schedule` (the string
//! `--schedule` replays, null without `parallel` blocks) and `counters`
//! (the `docs/model.md` §5 names of the counters the machine keeps, sorted;
//! null when the file did not run). Everything else then goes to stderr,
//! so stdout parses as JSON.
//!
//! `--seed` (the platform's: IRG and the machine's other random choices),
//! `--schedule-seed` (the interleavings only) and `--schedule` apply to
//! every file (a schedule printed by `mtesim explore` is for the one file
//! it explored).
//!
//! Exit status: 2 if any file could not be read, is malformed or could not
//! be run (a run that panics, a bug, counts so too and the other files
//! still run); else 1 if any expectation failed; else 0.
//!
//! The machine: `--machine kernel` (the default) is the simulated kernel,
//! `--machine reference` the reference model; both come from
//! [`scenario::machine::make_machine`], the one place that builds machines,
//! which the scenario suites share.

use std::io::{IsTerminal, Write};
use std::num::NonZeroUsize;
use std::panic::AssertUnwindSafe;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use lang::ParseError;
use miette::{Diagnostic, GraphicalReportHandler, GraphicalTheme, LabeledSpan, SourceCode};
use platform::Platform;
use platform::num::{Suffix, parse_u64};
use rayon::prelude::*;
use scenario::RunReport;
use scenario::machine::{MachineKind, make_machine};
use scenario::run::described::DescribedMachine;
use scenario::run::{FileResult, RunOptions, Status};
use sched::Schedule;
use serde_json::{Map, Value};

#[derive(clap::Args, Debug)]
pub struct Args {
    /// Scenario files, and directories to search recursively for *.mte.
    #[arg(required = true, value_name = "FILES_OR_DIRS")]
    pub paths: Vec<PathBuf>,
    /// Print every command and expectation with its result.
    #[arg(long)]
    pub verbose: bool,
    /// Print, under each command, what the machine did inside (faults, tag
    /// block reservations, migrations, splits, swap, COW copies); implies
    /// --verbose.
    #[arg(long)]
    pub trace: bool,
    /// Write the machine's events as JSON lines to FILE (docs/cli.md has
    /// the schema).
    #[arg(long, value_name = "FILE")]
    pub trace_json: Option<PathBuf>,
    /// Print the final counters as JSON on stdout (everything else goes to
    /// stderr).
    #[arg(long)]
    pub json: bool,
    /// Replace the platform line's seed (decimal or 0x hex): IRG and the
    /// machine's other random choices, not the interleavings.
    #[arg(long, value_name = "S", value_parser = parse_seed)]
    pub seed: Option<u64>,
    /// The seed of the interleavings of parallel blocks (default 0).
    #[arg(long, value_name = "S", value_parser = parse_seed)]
    pub schedule_seed: Option<u64>,
    /// Replay this schedule of the parallel blocks exactly (as printed by
    /// `mtesim explore`, `--verbose` or a failure), or as a prefix when it
    /// ends in `...` (then the lowest runnable CPU first).
    #[arg(long, value_name = "STRING", value_parser = parse_schedule)]
    pub schedule: Option<Schedule>,
    /// Run at most N files at once (default: one per core).
    #[arg(long, value_name = "N")]
    pub jobs: Option<NonZeroUsize>,
    /// The machine to run on.
    #[arg(long, value_name = "KIND", default_value = "kernel", value_parser = parse_machine)]
    pub machine: MachineKind,
    /// Check the invariants after every command (as if each line were
    /// followed by `expect invariants`); a violation fails that line.
    #[arg(long)]
    pub check_invariants: bool,
    /// Replace (or add) a key of every file's `platform` line, as if the
    /// file said it (repeatable; `--seed S` is `--set seed=S`).
    #[arg(long = "set", value_name = "KEY=VALUE", value_parser = super::parse_set)]
    pub set: Vec<(String, String)>,
    /// Run on the machine a platform file describes (TOML or device tree)
    /// instead of the one each file's `platform` line describes; keys that
    /// line gives must agree with the file unless `--set` names them.
    #[arg(long, value_name = "FILE")]
    pub platform: Option<PathBuf>,
    /// Replace entries of the cost model's table (TOML, `entry = cycles`;
    /// docs/cost-model.md): the `cost.*` counters follow it.
    #[arg(long, value_name = "FILE")]
    pub cost: Option<PathBuf>,
}

pub fn parse_seed(text: &str) -> Result<u64, String> {
    parse_u64(text, Suffix::Forbidden).map_err(|e| e.to_string())
}

fn parse_schedule(text: &str) -> Result<Schedule, String> {
    text.parse()
        .map_err(|e: sched::ScheduleParseError| e.to_string())
}

pub fn parse_machine(text: &str) -> Result<MachineKind, String> {
    text.parse()
        .map_err(|e: scenario::machine::UnknownMachine| e.to_string())
}

/// A file to run, or an argument that names none.
enum Input {
    File(PathBuf),
    /// `path: error`.
    Bad(PathBuf, String),
}

/// What one file printed and how it ended.
struct FileOutput {
    stdout: String,
    stderr: String,
    status: Status,
    /// What the run gave, when it ran.
    report: Option<RunReport>,
    /// Why it did not run (its first line of stderr), when it did not.
    error: Option<String>,
}

pub fn run(args: &Args) -> ExitCode {
    let described = match &args.platform {
        None => None,
        Some(path) => match Platform::from_file(path) {
            Ok(platform) => Some(DescribedMachine {
                file: path.display().to_string(),
                platform,
            }),
            Err(e) => return super::fail(e),
        },
    };
    let cost = match super::cost_table(args.cost.as_deref()) {
        Ok(cost) => cost,
        Err(code) => return code,
    };
    let inputs = inputs(&args.paths);
    let options = RunOptions {
        seed: args.seed,
        schedule_seed: args.schedule_seed,
        schedule: args.schedule.clone(),
        verbose: args.verbose || args.trace,
        trace: args.trace || args.trace_json.is_some(),
        check_invariants: args.check_invariants,
        invariants_from_first_block: false,
        set: args.set.clone(),
        described,
    };
    let colour = std::io::stderr().is_terminal();
    let bar = progress_bar(inputs.len(), colour);
    let run_all = || {
        inputs
            .par_iter()
            .map(|input| {
                let outcome = run_input(input, &options, args.machine, &cost, colour);
                bar.inc(1);
                outcome
            })
            .collect::<Vec<FileOutput>>()
    };
    let outcomes = match super::with_jobs(args.jobs, run_all) {
        Ok(outcomes) => outcomes,
        Err(code) => return code,
    };
    bar.finish_and_clear();
    if let Some(path) = &args.trace_json {
        let mut text = String::new();
        for (input, outcome) in inputs.iter().zip(&outcomes) {
            if let (Input::File(file), Some(report)) = (input, &outcome.report) {
                text.push_str(&super::trace_json::lines(
                    &file.display().to_string(),
                    &report.steps,
                ));
            }
        }
        if let Err(e) = std::fs::write(path, text) {
            return super::fail(format_args!("{}: {e}", path.display()));
        }
    }

    let passed = outcomes.iter().filter(|o| o.status == Status::Pass).count();
    let failed = outcomes.len() - passed;
    let status = outcomes
        .iter()
        .map(|o| o.status)
        .max()
        .unwrap_or(Status::Pass);
    let summary = format!("{passed} passed, {failed} failed\n");
    // File by file, each file's stderr before its stdout, so that a
    // terminal shows a diagnostic beside its file's lines. With --json,
    // stdout is the JSON document alone and the rest goes to stderr.
    for outcome in &outcomes {
        write(Stream::Stderr, &outcome.stderr);
        let lines_to = if args.json {
            Stream::Stderr
        } else {
            Stream::Stdout
        };
        write(lines_to, &outcome.stdout);
    }
    if args.json {
        write(Stream::Stderr, &summary);
        write(Stream::Stdout, &json(&inputs, &outcomes, args.machine));
    } else {
        write(Stream::Stdout, &summary);
    }
    ExitCode::from(status.exit_code())
}

#[derive(Clone, Copy)]
enum Stream {
    Stdout,
    Stderr,
}

/// Writes and flushes. A closed pipe (`mtesim run dir | head`) is the
/// reader's choice and changes nothing; nothing sensible is left to do if
/// stderr itself is gone.
fn write(stream: Stream, text: &str) {
    if text.is_empty() {
        return;
    }
    let _ = match stream {
        Stream::Stdout => {
            let mut out = std::io::stdout().lock();
            out.write_all(text.as_bytes()).and_then(|()| out.flush())
        }
        Stream::Stderr => {
            let mut out = std::io::stderr().lock();
            out.write_all(text.as_bytes()).and_then(|()| out.flush())
        }
    };
}

fn progress_bar(files: usize, terminal: bool) -> ProgressBar {
    if !terminal || files < 2 {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::with_draw_target(Some(files as u64), ProgressDrawTarget::stderr());
    if let Ok(style) = ProgressStyle::with_template("{bar:40} {pos}/{len} files {elapsed}") {
        bar.set_style(style);
    }
    bar
}

/// The files the arguments name, in order (see the module doc).
fn inputs(paths: &[PathBuf]) -> Vec<Input> {
    let mut inputs = Vec::new();
    for path in paths {
        match std::fs::metadata(path) {
            Ok(meta) if meta.is_dir() => {
                let before = inputs.len();
                walk(path, &mut inputs);
                if inputs.len() == before {
                    inputs.push(Input::Bad(path.clone(), "no .mte files here".to_owned()));
                }
            }
            Ok(_) => inputs.push(Input::File(path.clone())),
            Err(e) => inputs.push(Input::Bad(path.clone(), e.to_string())),
        }
    }
    inputs
}

/// Appends the `*.mte` files under `dir`, sorted by name at each level.
fn walk(dir: &Path, inputs: &mut Vec<Input>) {
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) => {
            inputs.push(Input::Bad(dir.to_path_buf(), e.to_string()));
            return;
        }
    };
    let mut entries: Vec<_> = entries.filter_map(Result::ok).collect();
    entries.sort_by_key(|e| e.file_name());
    for entry in entries {
        let path = entry.path();
        let Ok(kind) = entry.file_type() else {
            continue;
        };
        if kind.is_dir() {
            walk(&path, inputs);
        } else if path.extension().is_some_and(|e| e == "mte")
            && (kind.is_file() || path.metadata().is_ok_and(|m| m.is_file()))
        {
            inputs.push(Input::File(path));
        }
    }
}

fn run_input(
    input: &Input,
    options: &RunOptions,
    machine: MachineKind,
    cost: &platform::CostTable,
    colour: bool,
) -> FileOutput {
    let (path, src) = match input {
        Input::Bad(path, why) => return error(format!("{}: {why}\n", path.display())),
        Input::File(path) => match std::fs::read(path) {
            Ok(src) => (path, src),
            Err(e) => return error(format!("{}: {e}\n", path.display())),
        },
    };
    let name = path.display().to_string();
    // A panic is a bug of a machine or of the runner, never the input's
    // fault: it ends this file (the panic hook has printed its message),
    // not the whole run.
    let result = std::panic::catch_unwind(AssertUnwindSafe(|| {
        scenario::run_source(&name, &src, options, |platform| {
            let mut platform = platform.clone();
            platform.set_cost(*cost);
            make_machine(machine, &platform)
        })
    }));
    let Ok(result) = result else {
        return error(format!("{name}: BUG: the run panicked\n"));
    };
    match result {
        FileResult::Ran(report) => ran(&name, &report, options.verbose),
        FileResult::Malformed(e) => error(diagnostic(&e, colour)),
        FileResult::CannotRun(why) => error(format!("{name}: cannot run: {why}\n")),
    }
}

fn ran(name: &str, report: &RunReport, verbose: bool) -> FileOutput {
    FileOutput {
        stdout: report.render(name, verbose),
        stderr: report
            .render_error(name)
            .map_or_else(String::new, |e| e + "\n"),
        status: report.status(),
        report: Some(report.clone()),
        error: report.error.as_ref().map(ToString::to_string),
    }
}

fn error(stderr: String) -> FileOutput {
    FileOutput {
        error: stderr.lines().next().map(str::to_owned),
        stdout: String::new(),
        stderr,
        status: Status::Error,
        report: None,
    }
}

/// The counters of a report, keyed by their `docs/model.md` §5 names.
fn counters(report: &RunReport) -> Map<String, Value> {
    report
        .counters
        .iter()
        .map(|(c, v)| (c.name().to_owned(), Value::from(*v)))
        .collect()
}

/// The `--json` document (see the module doc for its shape).
fn json(inputs: &[Input], outcomes: &[FileOutput], machine: MachineKind) -> String {
    let files: Vec<Value> = inputs
        .iter()
        .zip(outcomes)
        .map(|(input, outcome)| {
            let path = match input {
                Input::File(path) | Input::Bad(path, _) => path.display().to_string(),
            };
            file_json(&path, outcome)
        })
        .collect();
    let passed = outcomes.iter().filter(|o| o.status == Status::Pass).count();
    let value = serde_json::json!({
        "schema": JSON_SCHEMA,
        "machine": machine.name(),
        "passed": passed,
        "failed": outcomes.len() - passed,
        "files": files,
    });
    let mut text = serde_json::to_string_pretty(&value)
        .unwrap_or_else(|e| panic!("BUG: a JSON value failed to serialise: {e}"));
    text.push('\n');
    text
}

/// The name and version of the `--json` document's shape.
const JSON_SCHEMA: &str = "mtesim-run/1";

fn file_json(path: &str, outcome: &FileOutput) -> Value {
    let status = match outcome.status {
        Status::Pass => "pass",
        Status::Fail => "fail",
        Status::Error => "error",
    };
    let report = outcome.report.as_ref();
    let failures: Vec<Value> = report
        .map(|r| {
            r.failures
                .iter()
                .map(|f| serde_json::json!({"line": f.line, "message": f.message}))
                .collect()
        })
        .unwrap_or_default();
    serde_json::json!({
        "file": path,
        "status": status,
        "failures": failures,
        "error": outcome.error,
        "seed": report.map(|r| r.seed),
        "schedule": report.and_then(|r| r.schedule.as_ref()).map(ToString::to_string),
        "counters": report.map(|r| Value::Object(counters(r))),
    })
}

/// `file:line:column: message` on its own line, then the offending line
/// with a caret under the problem (and a help line where there is one).
pub fn diagnostic(error: &ParseError, colour: bool) -> String {
    let theme = if colour {
        GraphicalTheme::unicode()
    } else {
        GraphicalTheme::unicode_nocolor()
    };
    let mut rendered = String::new();
    let snippet = GraphicalReportHandler::new_themed(theme)
        .render_report(&mut rendered, &Snippet(error))
        .is_ok();
    let mut out = format!("{error}\n");
    if snippet {
        // The renderer's first line is the (empty) message: the line above
        // already says it.
        for line in rendered.lines().skip(1) {
            out.push_str(line.trim_end());
            out.push('\n');
        }
    }
    out
}

/// A parse error's source excerpt, label and help, without its message
/// (printed on its own line first, in the form the spec requires) or its
/// code.
#[derive(Debug)]
struct Snippet<'a>(&'a ParseError);

impl std::fmt::Display for Snippet<'_> {
    fn fmt(&self, _: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        Ok(())
    }
}

impl std::error::Error for Snippet<'_> {}

impl Diagnostic for Snippet<'_> {
    fn help<'a>(&'a self) -> Option<Box<dyn std::fmt::Display + 'a>> {
        self.0.help()
    }

    fn source_code(&self) -> Option<&dyn SourceCode> {
        self.0.source_code()
    }

    fn labels(&self) -> Option<Box<dyn Iterator<Item = LabeledSpan> + '_>> {
        self.0.labels()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use uapi::Counter;

    #[test]
    fn json_has_one_shape_for_one_file_or_many() {
        // docs/model.md §5: counters use the counter names.
        let report = RunReport {
            counters: vec![
                (Counter::MemPages, 16384),
                (Counter::TagStorageReserved, 1),
                (Counter::TcfSync, 2),
            ],
            seed: 7,
            ..RunReport::default()
        };
        let outcome = ran("a.mte", &report, false);
        let single = json(
            &[Input::File("a.mte".into())],
            &[outcome],
            MachineKind::Kernel,
        );
        let value: Value = serde_json::from_str(&single).unwrap();
        assert_eq!(
            value,
            serde_json::json!({
                "schema": "mtesim-run/1",
                "machine": "kernel",
                "passed": 1,
                "failed": 0,
                "files": [{
                    "file": "a.mte",
                    "status": "pass",
                    "failures": [],
                    "error": null,
                    "seed": 7,
                    "schedule": null,
                    "counters": {"mem.pages": 16384, "tag_storage.reserved": 1, "tcf.sync": 2},
                }],
            })
        );
        let outcomes = [
            ran("a.mte", &report, false),
            error("b.mte:2:1: oops\n  the line\n".into()),
        ];
        let several = json(
            &[Input::File("a.mte".into()), Input::File("b.mte".into())],
            &outcomes,
            MachineKind::Reference,
        );
        let value: Value = serde_json::from_str(&several).unwrap();
        assert_eq!(value["files"][0]["counters"]["tag_storage.reserved"], 1);
        assert_eq!(value["files"][1]["status"], "error");
        assert_eq!(value["files"][1]["error"], "b.mte:2:1: oops");
        assert_eq!(value["files"][1]["counters"], Value::Null);
        assert_eq!((&value["passed"], &value["failed"]), (&1.into(), &1.into()));
    }
}
