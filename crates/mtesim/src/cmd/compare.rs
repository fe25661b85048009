//! `mtesim compare [--designs A,B,...] [--set KEY=VALUE]... INPUT...`: each
//! input (a recorded trace, `.mtrace`, or a scenario, `.mte`; directories
//! are searched recursively for both, in name order) under each design,
//! side by side (`docs/workloads.md` §4, `docs/cli.md`).
//!
//! # Contract
//! - Designs: `--designs` names them (any registered design, `none`
//!   included); by default every registered design that has MTE, read from
//!   the registry (`platform::Design::all()`), so a design added there is
//!   compared without touching this module.
//! - Every (input, design) pair runs on a fresh machine, the pairs in
//!   parallel (`--jobs N`, default one per core); the output lists them in
//!   argument order and design order, whatever order they finished in, and
//!   is the same byte for byte from run to run (wall times go to stderr
//!   only).
//! - A trace is replayed as `mtesim replay` would (`--set` may also give
//!   the replay's `tcf` and `large`), sampled every `--every N` data
//!   accesses; a scenario runs as `mtesim run` would, sampled after every
//!   command. The samples give the averages and extremes over the run and
//!   the report's plots.
//! - Output: a table per input (designs as columns) on stdout, or `--json`
//!   (one document, schema `mtesim-compare/1`), or `--csv` (one row per
//!   input and design); `--report FILE.html` also writes the self-contained
//!   HTML report ([`compare_report`](super::compare_report)).
//! - Exit status: 0 when every pair ran, 2 when an input cannot be read, a
//!   flag is bad, or a pair could not run (its column says why, the rest is
//!   still printed). A scenario whose expectations fail under a design it
//!   was not written for still ran: its status row says `fail`, and the
//!   exit status stays 0 (`mtesim run` is the tool that judges scenarios).

use std::cell::RefCell;
use std::fmt::Write as _;
use std::fs::File;
use std::io::BufReader;
use std::num::NonZeroUsize;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::rc::Rc;
use std::time::Instant;

use platform::{CostTable, Design, Platform, PlatformSpec};
use rayon::prelude::*;
use scenario::machine::{MachineKind, make_machine};
use scenario::run::{FileResult, RunOptions, Status};
use serde_json::{Value, json};
use trace::TraceReader;
use uapi::{Counter, Machine, MachineError, Op, PageState, Pid, Reply, Violation};

use super::{EXIT_INPUT, fail, print_stdout};

/// Data accesses between two samples of a trace, unless `--every` says.
pub const DEFAULT_EVERY: u64 = 10_000;
/// Samples kept per run: beyond this, every other one is dropped (and the
/// spacing doubles), so a long trace keeps bounded memory.
const MAX_POINTS: usize = 2048;

#[derive(clap::Args, Debug)]
pub struct Args {
    /// Traces (.mtrace) and scenarios (.mte), and directories to search
    /// recursively for both.
    #[arg(required = true, value_name = "INPUT")]
    pub inputs: Vec<PathBuf>,
    /// The designs to compare, comma-separated (default: every registered
    /// design with MTE).
    #[arg(long, value_name = "A,B,...", value_delimiter = ',')]
    pub designs: Vec<String>,
    /// A platform key for every run (`memory=32M`, ...), or the replay's
    /// `tcf=` and `large=` for traces; repeatable. `tag-storage` is the
    /// design, given by --designs.
    #[arg(long = "set", value_name = "KEY=VALUE")]
    pub set: Vec<String>,
    /// Sample a trace every N data accesses.
    #[arg(long, value_name = "N", default_value_t = DEFAULT_EVERY,
          value_parser = clap::value_parser!(u64).range(1..))]
    pub every: u64,
    /// The comparison as one JSON document.
    #[arg(long, conflicts_with = "csv")]
    pub json: bool,
    /// The comparison as CSV, one row per input and design.
    #[arg(long)]
    pub csv: bool,
    /// Also write a self-contained HTML report with plots to FILE.
    #[arg(long, value_name = "FILE")]
    pub report: Option<PathBuf>,
    /// Replace entries of the cost model's table (TOML; docs/cost-model.md).
    #[arg(long, value_name = "FILE")]
    pub cost: Option<PathBuf>,
    /// Run at most N pairs at once (default: one per core).
    #[arg(long, value_name = "N")]
    pub jobs: Option<NonZeroUsize>,
}

/// What an input is.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum InputKind {
    Trace,
    Scenario,
}

impl InputKind {
    pub fn name(self) -> &'static str {
        match self {
            InputKind::Trace => "trace",
            InputKind::Scenario => "scenario",
        }
    }

    /// What the x axis of its samples counts.
    pub fn x_unit(self) -> &'static str {
        match self {
            InputKind::Trace => "data accesses",
            InputKind::Scenario => "commands",
        }
    }
}

/// One input, as given or found.
#[derive(Clone, Debug)]
pub struct Input {
    pub path: PathBuf,
    pub kind: InputKind,
    /// What it is: the recorded command line, or the scenario's file name.
    pub what: String,
    /// The recorder's provenance (traces).
    pub provenance: Option<String>,
}

/// The counters at one moment, in [`Counter::ALL`] order (0 where the
/// machine keeps none).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Point {
    pub x: u64,
    pub values: Vec<u64>,
}

impl Point {
    pub fn get(&self, counter: Counter) -> u64 {
        Counter::ALL
            .iter()
            .position(|c| *c == counter)
            .and_then(|i| self.values.get(i).copied())
            .unwrap_or(0)
    }

    /// Tag storage pages not reserved for tags: lent to the page allocator
    /// for data.
    pub fn lent(&self, block_pages: u64) -> u64 {
        let pages = self.get(Counter::TagStoragePages);
        pages.saturating_sub(
            self.get(Counter::TagStorageReserved)
                .saturating_mul(block_pages),
        )
    }
}

/// One input under one design.
#[derive(Clone, Debug)]
pub struct Run {
    pub design: String,
    /// `ok` (a trace), `pass` or `fail` (a scenario), or `error`.
    pub status: &'static str,
    pub error: Option<String>,
    /// Samples in order; the last is the end state.
    pub points: Vec<Point>,
    /// The counters of the machine just booted: cumulative counters are
    /// reported as what the run added to them (under `static`, for
    /// example, every block is reserved at boot, before the workload).
    pub baseline: Option<Point>,
    /// Pages per tag block of the machine.
    pub block_pages: u64,
    pub tag_check_faults: u64,
    /// Wall time of this run (stderr only: it is not deterministic).
    pub seconds: f64,
}

impl Run {
    fn end(&self) -> Option<&Point> {
        self.points.last()
    }

    /// What the run added to a cumulative counter since boot.
    pub fn added(&self, counter: Counter) -> u64 {
        let before = self.baseline.as_ref().map_or(0, |b| b.get(counter));
        self.end()
            .map_or(0, |end| end.get(counter).saturating_sub(before))
    }

    /// The row values of the comparison, in [`METRICS`] order (`None` when
    /// the run did not happen).
    pub fn metrics(&self) -> Option<Vec<f64>> {
        let end = self.end()?;
        let n = self.points.len() as f64;
        let series = |f: &dyn Fn(&Point) -> u64| self.points.iter().map(f).collect::<Vec<u64>>();
        let lent = series(&|p| p.lent(self.block_pages));
        let free = series(&|p| p.get(Counter::MemFree));
        let data = series(&|p| p.get(Counter::TagStorageDataPages));
        let reserved = series(&|p| p.get(Counter::TagStorageReserved));
        let avg = |v: &[u64]| v.iter().map(|x| *x as f64).sum::<f64>() / n;
        let min = |v: &[u64]| v.iter().copied().min().unwrap_or(0) as f64;
        let max = |v: &[u64]| v.iter().copied().max().unwrap_or(0) as f64;
        let total = end.get(Counter::TagStoragePages) as f64;
        let pct = |x: f64| if total > 0.0 { 100.0 * x / total } else { 0.0 };
        let counter = |c| {
            let before = self.baseline.as_ref().map_or(0, |b| b.get(c));
            end.get(c).saturating_sub(before) as f64
        };
        let mut values = vec![
            avg(&free),
            min(&free),
            total,
            avg(&lent),
            min(&lent),
            pct(avg(&lent)),
            avg(&data),
            max(&data),
            max(&reserved),
            counter(Counter::TagStorageReservations),
            counter(Counter::TagStorageReleases),
            counter(Counter::TagStorageContig),
            counter(Counter::TagStorageReserveFailures),
            counter(Counter::TagStorageMigrations),
            counter(Counter::MigratePages),
            counter(Counter::FaultAnon),
            counter(Counter::FaultZeroPage),
            counter(Counter::FaultCow),
            counter(Counter::FaultTagStorage),
            counter(Counter::FaultStuck),
            self.tag_check_faults as f64,
            counter(Counter::CostTotal),
        ];
        values.extend(Counter::COST_KINDS.iter().map(|c| counter(*c)));
        Some(values)
    }
}

/// A row of the comparison: its JSON/CSV key, its label in the table and
/// the report, and whether it is a fraction (printed with one decimal).
pub struct Metric {
    pub key: &'static str,
    pub label: &'static str,
    pub fractional: bool,
}

const fn metric(key: &'static str, label: &'static str, fractional: bool) -> Metric {
    Metric {
        key,
        label,
        fractional,
    }
}

/// The rows, in order; the `cost.KIND` rows follow (one per
/// [`Counter::COST_KINDS`]).
pub const METRICS: [Metric; 22] = [
    metric(
        "mem_free_avg",
        "memory free for untagged data, avg (pages)",
        true,
    ),
    metric(
        "mem_free_min",
        "memory free for untagged data, min (pages)",
        false,
    ),
    metric("tag_storage_pages", "tag storage (pages)", false),
    metric("lent_avg", "tag storage lent to data, avg (pages)", true),
    metric("lent_min", "tag storage lent to data, min (pages)", false),
    metric("lent_avg_pct", "tag storage lent to data, avg (%)", true),
    metric(
        "data_pages_avg",
        "tag storage holding data, avg (pages)",
        true,
    ),
    metric(
        "data_pages_max",
        "tag storage holding data, max (pages)",
        false,
    ),
    metric("reserved_max", "tag blocks reserved, max", false),
    metric("reservations", "tag block reservations", false),
    metric("releases", "tag block releases", false),
    metric("contig_allocs", "contiguous allocations", false),
    metric("reserve_failures", "reservation failures", false),
    metric(
        "tag_storage_migrations",
        "migrations out of tag storage",
        false,
    ),
    metric("migrate_pages", "pages migrated (any reason)", false),
    metric("fault_anon", "faults: anon", false),
    metric("fault_zero_page", "faults: zero page", false),
    metric("fault_cow", "faults: copy on write", false),
    metric("fault_tag_storage", "faults: awaiting tag storage", false),
    metric("fault_stuck", "faults: stuck (livelock)", false),
    metric("tag_check_faults", "tag check faults", false),
    metric("cost_total", "modelled cost (cycles)", false),
];

/// Every row's key and label, the cost kinds included.
pub fn rows() -> Vec<(String, String, bool)> {
    let mut rows: Vec<(String, String, bool)> = METRICS
        .iter()
        .map(|m| (m.key.to_owned(), m.label.to_owned(), m.fractional))
        .collect();
    for kind in Counter::COST_KINDS {
        let name = kind.name();
        rows.push((name.replace('.', "_"), format!("  {name} (cycles)"), false));
    }
    rows
}

/// Each row's key and label with every run's value of it as people read
/// it ([`format_value`]; `none` for a run without figures): the rows of the
/// text table and of the report's tables.
pub fn table_rows(runs: &[Run], none: &str) -> Vec<(String, String, Vec<String>)> {
    let metrics: Vec<Option<Vec<f64>>> = runs.iter().map(Run::metrics).collect();
    rows()
        .into_iter()
        .enumerate()
        .map(|(row, (key, label, fractional))| {
            let cells = metrics
                .iter()
                .map(|m| {
                    m.as_ref()
                        .map_or(none.to_owned(), |m| format_value(m[row], fractional))
                })
                .collect();
            (key, label, cells)
        })
        .collect()
}

/// A value of a row as the machine-readable outputs (`--json`, `--csv`)
/// write it: a count, or a fraction kept to one decimal.
#[derive(Clone, Copy, Debug)]
enum Figure {
    Count(u64),
    Fraction(f64),
}

impl Figure {
    /// `run`'s value of each row, in [`rows`] order; `None` when the run
    /// has no figures.
    fn of_run(run: &Run, rows: &[(String, String, bool)]) -> Option<Vec<Figure>> {
        let metrics = run.metrics()?;
        let figure = |(&(_, _, fractional), value): (&(String, String, bool), f64)| {
            if fractional {
                Figure::Fraction(value)
            } else {
                Figure::Count(value.round() as u64)
            }
        };
        Some(rows.iter().zip(metrics).map(figure).collect())
    }

    fn json(self) -> Value {
        match self {
            Figure::Count(n) => json!(n),
            Figure::Fraction(x) => json!((x * 10.0).round() / 10.0),
        }
    }
}

/// As a CSV cell.
impl std::fmt::Display for Figure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Figure::Count(n) => write!(f, "{n}"),
            Figure::Fraction(x) => write!(f, "{x:.1}"),
        }
    }
}

/// The whole comparison.
pub struct Comparison {
    pub inputs: Vec<Input>,
    pub designs: Vec<String>,
    /// `runs[i][d]`: input `i` under design `d`.
    pub runs: Vec<Vec<Run>>,
    pub command: Vec<String>,
    pub cost: CostTable,
    pub sets: Vec<String>,
}

/// The designs `--designs` names, or the default ones.
fn designs(names: &[String]) -> Result<Vec<Design>, String> {
    if names.is_empty() {
        return Ok(Design::all().filter(|d| d.rules().mte()).collect());
    }
    let mut designs = Vec::new();
    for name in names {
        let design = Design::by_name(name).ok_or_else(|| {
            format!(
                "--designs: unknown design `{name}` (expected {})",
                Design::names()
            )
        })?;
        if !designs.contains(&design) {
            designs.push(design);
        }
    }
    Ok(designs)
}

/// The inputs, in argument order, directories expanded in name order.
fn inputs(paths: &[PathBuf]) -> Result<Vec<Input>, String> {
    let mut found = Vec::new();
    for path in paths {
        if path.is_dir() {
            let before = found.len();
            walk(path, &mut found).map_err(|e| format!("{}: {e}", path.display()))?;
            if found.len() == before {
                return Err(format!(
                    "{}: no .mtrace or .mte files in this directory",
                    path.display()
                ));
            }
        } else {
            found.push(path.clone());
        }
    }
    found.iter().map(|path| describe(path)).collect()
}

fn walk(dir: &Path, found: &mut Vec<PathBuf>) -> std::io::Result<()> {
    let mut entries: Vec<PathBuf> = std::fs::read_dir(dir)?
        .map(|e| e.map(|e| e.path()))
        .collect::<Result<_, _>>()?;
    entries.sort();
    for path in entries {
        if path.is_dir() {
            walk(&path, found)?;
        } else if path
            .extension()
            .is_some_and(|e| e == "mtrace" || e == "mte")
        {
            found.push(path);
        }
    }
    Ok(())
}

/// What an input is, read from its header (a trace) or its name.
fn describe(path: &Path) -> Result<Input, String> {
    let name = path.display().to_string();
    match path.extension().and_then(|e| e.to_str()) {
        Some("mte") => {
            std::fs::metadata(path).map_err(|e| format!("{name}: {e}"))?;
            Ok(Input {
                path: path.to_owned(),
                kind: InputKind::Scenario,
                what: name,
                provenance: None,
            })
        }
        Some("mtrace") => {
            let file = File::open(path).map_err(|e| format!("{name}: {e}"))?;
            let reader =
                TraceReader::new(BufReader::new(file)).map_err(|e| format!("{name}: {e}"))?;
            let header = reader.header();
            let p = &header.provenance;
            Ok(Input {
                path: path.to_owned(),
                kind: InputKind::Trace,
                what: header.command.join(" "),
                provenance: Some(format!(
                    "recorded by {} under {} on {}, {}",
                    p.recorder, p.valgrind, p.host, p.date
                )),
            })
        }
        _ => Err(format!(
            "{name}: not a trace (.mtrace) or a scenario (.mte)"
        )),
    }
}

/// The samples of one run: at most [`MAX_POINTS`], evenly spaced. When
/// full, every other one is dropped and only every other later sample is
/// kept (the spacing doubles).
#[derive(Default)]
struct Samples {
    points: Vec<Point>,
    /// Keep one sample in `stride` (a power of two).
    stride: u64,
    seen: u64,
}

impl Samples {
    fn push(&mut self, point: Point) {
        self.stride = self.stride.max(1);
        self.seen += 1;
        if !self.seen.is_multiple_of(self.stride) {
            return;
        }
        if self.points.len() >= MAX_POINTS {
            let mut i = 0;
            self.points.retain(|_| {
                i += 1;
                i % 2 == 0
            });
            self.stride *= 2;
            if !self.seen.is_multiple_of(self.stride) {
                return;
            }
        }
        self.points.push(point);
    }
}

fn values_of(counter: impl Fn(Counter) -> Option<u64>) -> Vec<u64> {
    Counter::ALL
        .iter()
        .map(|c| counter(*c).unwrap_or(0))
        .collect()
}

fn block_pages(platform: &Platform) -> u64 {
    platform
        .block_size()
        .map_or(1, |b| (b / platform.page_size().max(1)).max(1))
}

/// The `--set` flags with the design's, for a trace.
fn trace_run(input: &Input, design: Design, sets: &[String], every: u64, cost: &CostTable) -> Run {
    let mut run = Run {
        design: design.name().to_owned(),
        status: "error",
        error: None,
        points: Vec::new(),
        baseline: None,
        block_pages: 1,
        tag_check_faults: 0,
        seconds: 0.0,
    };
    let mut sets = sets.to_vec();
    sets.push(format!("tag-storage={}", design.name()));
    let mut config = match super::replay::config(&sets) {
        Ok(config) => config,
        Err(e) => {
            run.error = Some(e);
            return run;
        }
    };
    config.platform.set_cost(*cost);
    run.block_pages = block_pages(&config.platform);
    run.baseline = make_machine(MachineKind::Kernel, &config.platform)
        .ok()
        .map(|machine| Point {
            x: 0,
            values: values_of(|c| machine.counter(c)),
        });
    let name = input.path.display().to_string();
    let file = match File::open(&input.path) {
        Ok(file) => file,
        Err(e) => {
            run.error = Some(format!("{name}: {e}"));
            return run;
        }
    };
    let mut reader = match TraceReader::new(BufReader::with_capacity(1 << 20, file)) {
        Ok(reader) => reader,
        Err(e) => {
            run.error = Some(format!("{name}: {e}"));
            return run;
        }
    };
    let mut samples = Samples::default();
    let values = |sample: &replay::Sample| {
        values_of(|c| {
            sample
                .counters
                .iter()
                .find(|(n, _)| *n == c.name())
                .map(|(_, v)| *v)
        })
    };
    let result = replay::replay(
        &mut reader,
        &config,
        every,
        |sample| {
            samples.push(Point {
                x: sample.accesses,
                values: values(sample),
            });
        },
        |_| {},
    );
    match result {
        Ok(summary) => {
            let mut points = samples.points;
            if points.last().map(|p| p.x) != Some(summary.end.accesses) {
                points.push(Point {
                    x: summary.end.accesses,
                    values: values(&summary.end),
                });
            }
            run.points = points;
            run.tag_check_faults = summary.sync_faults + summary.async_faults;
            run.status = "ok";
        }
        Err(e) => run.error = Some(format!("{name}: {e}")),
    }
    run
}

/// A machine that samples its counters after every command it runs.
struct Sampling<'m> {
    inner: Box<dyn Machine + 'm>,
    samples: Rc<RefCell<Samples>>,
    commands: u64,
}

impl Sampling<'_> {
    fn sample(&mut self) {
        self.commands += 1;
        let point = Point {
            x: self.commands,
            values: values_of(|c| self.inner.counter(c)),
        };
        self.samples.borrow_mut().push(point);
    }
}

impl Machine for Sampling<'_> {
    fn run(&mut self, op: &Op) -> Reply {
        let reply = self.inner.run(op);
        self.sample();
        reply
    }

    fn run_parallel(
        &mut self,
        ops: &[Op],
        chooser: &mut dyn sched::Chooser,
    ) -> Result<Vec<Reply>, MachineError> {
        let replies = self.inner.run_parallel(ops, chooser);
        self.sample();
        replies
    }

    fn counter(&self, counter: Counter) -> Option<u64> {
        self.inner.counter(counter)
    }

    fn tags(&self, pid: Pid, ptr: mte::TaggedPtr, len: u64) -> Option<Vec<mte::Tag>> {
        self.inner.tags(pid, ptr, len)
    }

    fn page_state(&self, pid: Pid, ptr: mte::TaggedPtr, state: PageState) -> Option<bool> {
        self.inner.page_state(pid, ptr, state)
    }

    fn invariant_violations(&self) -> Vec<Violation> {
        self.inner.invariant_violations()
    }

    fn set_trace(&mut self, on: bool) {
        self.inner.set_trace(on);
    }

    fn take_events(&mut self) -> Vec<uapi::event::Event> {
        self.inner.take_events()
    }
}

fn scenario_run(input: &Input, design: Design, sets: &[(String, String)], cost: &CostTable) -> Run {
    let mut run = Run {
        design: design.name().to_owned(),
        status: "error",
        error: None,
        points: Vec::new(),
        baseline: None,
        block_pages: 1,
        tag_check_faults: 0,
        seconds: 0.0,
    };
    let name = input.path.display().to_string();
    let src = match std::fs::read(&input.path) {
        Ok(src) => src,
        Err(e) => {
            run.error = Some(format!("{name}: {e}"));
            return run;
        }
    };
    let mut set = sets.to_vec();
    set.push(("tag-storage".to_owned(), design.name().to_owned()));
    let options = RunOptions {
        set,
        ..RunOptions::default()
    };
    let samples = Rc::new(RefCell::new(Samples::default()));
    let baseline = Rc::new(RefCell::new(None));
    let block = Rc::new(RefCell::new(1));
    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        scenario::run_source(&name, &src, &options, |platform| {
            let mut platform = platform.clone();
            platform.set_cost(*cost);
            *block.borrow_mut() = block_pages(&platform);
            make_machine(MachineKind::Kernel, &platform).map(|inner| {
                *baseline.borrow_mut() = Some(Point {
                    x: 0,
                    values: values_of(|c| inner.counter(c)),
                });
                Box::new(Sampling {
                    inner,
                    samples: Rc::clone(&samples),
                    commands: 0,
                }) as Box<dyn Machine>
            })
        })
    }));
    run.block_pages = *block.borrow();
    run.baseline = baseline.take();
    match result {
        Err(_) => run.error = Some(format!("{name}: BUG: the run panicked")),
        Ok(FileResult::Malformed(e)) => run.error = Some(e.to_string()),
        Ok(FileResult::CannotRun(why)) => run.error = Some(format!("{name}: cannot run: {why}")),
        Ok(FileResult::Ran(report)) => {
            let mut points = samples.take().points;
            let end = Point {
                x: report.commands,
                values: values_of(|c| {
                    report
                        .counters
                        .iter()
                        .find(|(k, _)| *k == c)
                        .map(|(_, v)| *v)
                }),
            };
            run.tag_check_faults = end.get(Counter::TcfSync) + end.get(Counter::TcfAsync);
            if points.last() != Some(&end) {
                points.push(end);
            }
            run.points = points;
            match report.status() {
                Status::Pass => run.status = "pass",
                Status::Fail => run.status = "fail",
                Status::Error => {
                    run.error = report.render_error(&name);
                }
            }
        }
    }
    run
}

/// Splits `--set` into the platform's keys (for scenarios and traces) and
/// checks every one before anything runs.
fn check_sets(sets: &[String]) -> Result<Vec<(String, String)>, String> {
    let mut platform_sets = Vec::new();
    for set in sets {
        let (key, value) = set
            .split_once('=')
            .ok_or_else(|| format!("--set {set}: expected KEY=VALUE"))?;
        if key == "tag-storage" {
            return Err(format!(
                "--set {set}: the design is chosen with --designs (e.g. --designs {value})"
            ));
        }
        if key == "tcf" || key == "large" {
            continue;
        }
        PlatformSpec::default()
            .set_key(key, value)
            .map_err(|e| format!("--set {set}: {e}"))?;
        platform_sets.push((key.to_owned(), value.to_owned()));
    }
    // The replay's own keys are checked by building its configuration.
    super::replay::config(sets)?;
    Ok(platform_sets)
}

pub fn run(args: &Args) -> ExitCode {
    let started = Instant::now();
    let designs = match designs(&args.designs) {
        Ok(designs) => designs,
        Err(e) => return fail(e),
    };
    let platform_sets = match check_sets(&args.set) {
        Ok(sets) => sets,
        Err(e) => return fail(e),
    };
    let cost = match super::cost_table(args.cost.as_deref()) {
        Ok(cost) => cost,
        Err(code) => return code,
    };
    let inputs = match inputs(&args.inputs) {
        Ok(inputs) => inputs,
        Err(e) => return fail(e),
    };
    let pairs: Vec<(usize, Design)> = (0..inputs.len())
        .flat_map(|i| designs.iter().map(move |d| (i, *d)))
        .collect();
    let run_all = || {
        pairs
            .par_iter()
            .map(|&(i, design)| {
                let start = Instant::now();
                let input = &inputs[i];
                let mut run = match input.kind {
                    InputKind::Trace => trace_run(input, design, &args.set, args.every, &cost),
                    InputKind::Scenario => scenario_run(input, design, &platform_sets, &cost),
                };
                run.seconds = start.elapsed().as_secs_f64();
                run
            })
            .collect::<Vec<Run>>()
    };
    let mut all = match super::with_jobs(args.jobs, run_all) {
        Ok(all) => all,
        Err(code) => return code,
    };
    // The machine at boot opens every series (at 0 accesses or commands).
    for run in &mut all {
        if let (Some(baseline), false) = (&run.baseline, run.points.is_empty()) {
            run.points.insert(0, baseline.clone());
        }
    }
    let mut runs: Vec<Vec<Run>> = Vec::new();
    let mut all = all.into_iter();
    for _ in &inputs {
        runs.push(all.by_ref().take(designs.len()).collect());
    }
    let comparison = Comparison {
        inputs,
        designs: designs.iter().map(|d| d.name().to_owned()).collect(),
        runs,
        command: std::env::args().collect(),
        cost,
        sets: args.set.clone(),
    };
    let output = if args.json {
        let mut text = serde_json::to_string_pretty(&json(&comparison))
            .unwrap_or_else(|e| panic!("BUG: a JSON value failed to serialise: {e}"));
        text.push('\n');
        text
    } else if args.csv {
        csv(&comparison)
    } else {
        text(&comparison)
    };
    if let Some(path) = &args.report {
        let html = super::compare_report::html(&comparison);
        if let Err(e) = std::fs::write(path, html) {
            return fail(format_args!("--report {}: {e}", path.display()));
        }
    }
    let sum: f64 = comparison.runs.iter().flatten().map(|r| r.seconds).sum();
    let wall = started.elapsed().as_secs_f64();
    super::eprint(&format!(
        "compare: {} runs in {wall:.2} s wall; the runs alone took {sum:.2} s (parallel speed-up {:.2}x)\n",
        pairs.len(),
        if wall > 0.0 { sum / wall } else { 1.0 }
    ));
    let errors: Vec<&Run> = comparison
        .runs
        .iter()
        .flatten()
        .filter(|r| r.status == "error")
        .collect();
    let printed = print_stdout(&output);
    if printed != ExitCode::SUCCESS {
        return printed;
    }
    if !errors.is_empty() {
        for run in &errors {
            super::eprint(&format!(
                "{}: {}\n",
                run.design,
                run.error.as_deref().unwrap_or("did not run")
            ));
        }
        return ExitCode::from(EXIT_INPUT);
    }
    ExitCode::SUCCESS
}

/// A value as the table prints it: integers with thousands separators,
/// fractions with one decimal.
pub fn format_value(value: f64, fractional: bool) -> String {
    if fractional {
        let text = format!("{value:.1}");
        let (int, frac) = text.split_once('.').unwrap_or((&text, "0"));
        format!("{}.{frac}", group(int))
    } else {
        group(&format!("{}", value.round() as i64))
    }
}

fn group(digits: &str) -> String {
    let (sign, digits) = digits.strip_prefix('-').map_or(("", digits), |d| ("-", d));
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    format!("{sign}{out}")
}

/// The table for people: one block per input, designs as columns.
pub fn text(c: &Comparison) -> String {
    let mut out = String::new();
    for (input, runs) in c.inputs.iter().zip(&c.runs) {
        let _ = writeln!(
            out,
            "{} ({}: {})",
            input.path.display(),
            input.kind.name(),
            input.what
        );
        let mut table: Vec<Vec<String>> = Vec::new();
        let mut header = vec![String::new()];
        header.extend(c.designs.iter().cloned());
        table.push(header);
        let mut status = vec!["status".to_owned()];
        status.extend(runs.iter().map(|r| r.status.to_owned()));
        table.push(status);
        let last = points_x(runs);
        let mut length = vec![format!("length ({})", input.kind.x_unit())];
        length.extend(
            last.iter()
                .map(|x| x.map_or("-".to_owned(), |x| group(&x.to_string()))),
        );
        table.push(length);
        for (_, label, cells) in table_rows(runs, "-") {
            let mut line = vec![label];
            line.extend(cells);
            table.push(line);
        }
        let widths: Vec<usize> = (0..table[0].len())
            .map(|col| {
                table
                    .iter()
                    .map(|r| r[col].chars().count())
                    .max()
                    .unwrap_or(0)
            })
            .collect();
        for line in &table {
            let mut text = format!("  {:<w$}", line[0], w = widths[0]);
            for (cell, w) in line.iter().zip(&widths).skip(1) {
                let _ = write!(text, "  {cell:>w$}");
            }
            let _ = writeln!(out, "{}", text.trim_end());
        }
        for run in runs {
            if let Some(error) = &run.error {
                let _ = writeln!(out, "  {}: {error}", run.design);
            }
        }
        out.push('\n');
    }
    out
}

fn points_x(runs: &[Run]) -> Vec<Option<u64>> {
    runs.iter().map(|r| r.end().map(|p| p.x)).collect()
}

/// The comparison as one JSON document (`mtesim-compare/1`).
pub fn json(c: &Comparison) -> Value {
    let rows = rows();
    let inputs: Vec<Value> = c
        .inputs
        .iter()
        .zip(&c.runs)
        .map(|(input, runs)| {
            let runs: Vec<Value> = runs
                .iter()
                .map(|run| {
                    let metrics = Figure::of_run(run, &rows).map(|figures| {
                        let mut object = serde_json::Map::new();
                        for ((key, _, _), figure) in rows.iter().zip(figures) {
                            object.insert(key.clone(), figure.json());
                        }
                        Value::Object(object)
                    });
                    let counters = run.end().map(|end| {
                        let mut object = serde_json::Map::new();
                        for (counter, value) in Counter::ALL.iter().zip(&end.values) {
                            object.insert(counter.name().to_owned(), json!(value));
                        }
                        Value::Object(object)
                    });
                    let series: Vec<Value> = thin(&run.points, 200)
                        .iter()
                        .map(|p| json!([p.x, p.lent(run.block_pages), p.get(Counter::TagStorageDataPages), p.get(Counter::CostTotal)]))
                        .collect();
                    json!({
                        "design": run.design,
                        "status": run.status,
                        "error": run.error,
                        "length": run.end().map(|p| p.x),
                        "metrics": metrics,
                        "counters": counters,
                        "series": {
                            "columns": [input.kind.x_unit(), "lent_pages", "data_pages", "cost_total"],
                            "points": series,
                        },
                    })
                })
                .collect();
            json!({
                "input": input.path.display().to_string(),
                "kind": input.kind.name(),
                "what": input.what,
                "runs": runs,
            })
        })
        .collect();
    let cost: serde_json::Map<String, Value> = c
        .cost
        .entries()
        .map(|(e, v)| (e.name().to_owned(), json!(v)))
        .collect();
    json!({
        "schema": "mtesim-compare/1",
        "designs": c.designs,
        "set": c.sets,
        "cost_table": cost,
        "inputs": inputs,
    })
}

/// At most `n` of `points`, evenly picked, the last always kept.
pub fn thin(points: &[Point], n: usize) -> Vec<&Point> {
    if points.len() <= n || n < 2 {
        return points.iter().collect();
    }
    let step = (points.len() - 1) as f64 / (n - 1) as f64;
    (0..n)
        .map(|i| &points[((i as f64 * step).round() as usize).min(points.len() - 1)])
        .collect()
}

/// One CSV row per input and design, the rows of the table as columns.
pub fn csv(c: &Comparison) -> String {
    let rows = rows();
    let mut out = String::from("input,kind,design,status,length");
    for (key, _, _) in &rows {
        out.push(',');
        out.push_str(key);
    }
    out.push('\n');
    let quote = |s: &str| {
        if s.contains([',', '"', '\n']) {
            format!("\"{}\"", s.replace('"', "\"\""))
        } else {
            s.to_owned()
        }
    };
    for (input, runs) in c.inputs.iter().zip(&c.runs) {
        for run in runs {
            let _ = write!(
                out,
                "{},{},{},{},{}",
                quote(&input.path.display().to_string()),
                input.kind.name(),
                run.design,
                run.status,
                run.end().map_or(String::new(), |p| p.x.to_string())
            );
            match Figure::of_run(run, &rows) {
                Some(figures) => {
                    for figure in figures {
                        let _ = write!(out, ",{figure}");
                    }
                }
                None => out.push_str(&",".repeat(rows.len())),
            }
            out.push('\n');
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_print_grouped() {
        assert_eq!(format_value(1234567.0, false), "1,234,567");
        assert_eq!(format_value(12.0, false), "12");
        assert_eq!(format_value(1234.56, true), "1,234.6");
        assert_eq!(format_value(0.0, true), "0.0");
    }

    #[test]
    fn default_designs_come_from_the_registry() {
        let all = designs(&[]).unwrap();
        assert!(!all.is_empty());
        assert!(all.iter().all(|d| d.rules().mte()));
        assert_eq!(all.len(), Design::all().filter(|d| d.rules().mte()).count());
        assert!(
            designs(&["bogus".to_owned()])
                .unwrap_err()
                .contains("unknown design `bogus`")
        );
        assert_eq!(
            designs(&["static".to_owned(), "static".to_owned()]).unwrap(),
            [Design::STATIC]
        );
    }

    #[test]
    fn samples_stay_bounded_and_even() {
        let mut samples = Samples::default();
        for x in 1..=10 * MAX_POINTS as u64 {
            samples.push(Point { x, values: vec![] });
        }
        let points = samples.points;
        assert!(points.len() <= MAX_POINTS);
        let gaps: Vec<u64> = points.windows(2).map(|w| w[1].x - w[0].x).collect();
        assert!(gaps.iter().all(|g| *g == gaps[0]), "{gaps:?}");
        assert_eq!(thin(&points, 5).len(), 5);
        assert_eq!(
            thin(&points, 5).last().map(|p| p.x),
            points.last().map(|p| p.x)
        );
    }

    #[test]
    fn the_tag_storage_key_is_the_designs_flag() {
        assert!(
            check_sets(&["tag-storage=static".to_owned()])
                .unwrap_err()
                .contains("--designs")
        );
        assert!(check_sets(&["bogus=1".to_owned()]).is_err());
        assert!(check_sets(&["tcf=bogus".to_owned()]).is_err());
        assert_eq!(
            check_sets(&["memory=32M".to_owned(), "tcf=async".to_owned()]).unwrap(),
            [("memory".to_owned(), "32M".to_owned())]
        );
    }
}
