//! The model held against the real thing: every workload of
//! `tests/reference/rfc-v3/workloads/` ran on the posted RFC v3 kernel under
//! QEMU (`tools/rfc-v3/harness.sh`, which wrote the counters it reported
//! after each command into `tests/reference/rfc-v3/records/`); here each runs
//! on the model under `rfc-v3` (the series as posted) and `dynamic` (the
//! series with its mistakes fixed), and the two executions are compared
//! step by step. `docs/reference.md` gives the rules, each tolerance's
//! reason, and the table this test prints (`-- --nocapture`).
//!
//! The real kernel is never needed here: rerunning the harness refreshes the
//! records.

use platform::{Design, Platform};
use scenario::machine::{MachineKind, make_machine};
use scenario::{RunOptions, Runner};
use serde_json::Value;
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use uapi::Counter;

fn reference_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/reference/rfc-v3")
}

/// What is compared: a counter of the real kernel and the model's counter
/// for the same thing, as differences from the workload's start.
struct Metric {
    name: &'static str,
    real: &'static str,
    model: Counter,
}

const METRICS: [Metric; 6] = [
    Metric {
        name: "blocks reserved",
        // debugfs cma/cma0/used: tag blocks allocated from the CMA area now.
        real: "cma_used",
        model: Counter::TagStorageReserved,
    },
    Metric {
        name: "reservations",
        real: "cma_alloc_success",
        model: Counter::TagStorageReservations,
    },
    Metric {
        name: "releases",
        real: "cma_release_success",
        model: Counter::TagStorageReleases,
    },
    Metric {
        name: "migrated",
        real: "pgmigrate_success",
        model: Counter::MigratePages,
    },
    Metric {
        name: "swapped out",
        real: "pswpout",
        model: Counter::SwapOut,
    },
    Metric {
        name: "swapped in",
        real: "pswpin",
        model: Counter::SwapIn,
    },
];

/// How close the model must come (`docs/reference.md` justifies each).
#[derive(Clone, Copy, Debug)]
enum Tolerance {
    /// The same number.
    Exact,
    /// Blocks of 4 KiB tagged pages: the real count lies in `[model - 1,
    /// model + min(9, model/16 + 8)]` (the earlier bound, `model/16 + 8`
    /// either way, capped by what the records show). Both allocators have per-CPU lists (`pcp=on`) with
    /// tagged allocations bypassing them (patch 4), which moves no count:
    /// the real kernel's LIFO buddy lists and its runtime's allocations
    /// between commands leave the small free blocks its tagged allocations
    /// take first scattered over more 32-page groups (up to 9 more blocks
    /// over these records), and a tagged copy that fits in a hole of a
    /// reserved block saves one reservation the model makes (w09: one
    /// release fewer at `q exit`).
    Placement,
    /// Migrations where tagged 4 KiB pages are allocated: a released
    /// block's page goes through the releasing CPU's per-CPU list and the
    /// next untagged movable allocation there takes it (the model does this
    /// too); the real kernel's runtime allocates between commands, the
    /// model's does not, so on the real kernel up to 2 such pages hold data
    /// when a tagged touch needs their block back. The real count lies in
    /// `[model, model + 2]`.
    Recycled,
    /// Pages compaction moves: within 10% (each allocator's placement
    /// leaves different holes for the scanners).
    Compaction,
}

impl Tolerance {
    fn holds(self, real: i64, model: i64) -> bool {
        match self {
            Tolerance::Exact => real == model,
            Tolerance::Placement => (-1..=(model / 16 + 8).min(9)).contains(&(real - model)),
            Tolerance::Recycled => (0..=2).contains(&(real - model)),
            Tolerance::Compaction => (real - model).abs() * 10 <= model.max(real),
        }
    }
}

/// What the comparison of one metric asks.
#[derive(Clone, Copy, Debug)]
enum Rule {
    Within(Tolerance),
    /// A known difference, with its reason: reported, not failed.
    Explained(&'static str),
}

/// Workloads whose tagged memory is in 2 MiB pages: block counts exact.
const THP_WORKLOADS: [&str; 3] = [
    "w05_thp_tagged_write",
    "w06_thp_read_huge_zero_page",
    "w07_thp_read_without_huge_zero_page",
];

/// The rule for `metric` of `workload` under `design`.
fn rule(workload: &str, design: &str, metric: &str) -> Rule {
    let blocks = matches!(metric, "blocks reserved" | "reservations" | "releases");
    match (workload, metric) {
        ("w06_thp_read_huge_zero_page", _) if design == "dynamic" => Rule::Explained(
            "the posted series livelocks on the huge zero page; `dynamic` reserves its 16 blocks and completes",
        ),
        ("w10_pressure", "migrated") => Rule::Explained(
            "the real kernel keeps 22 MiB for itself, the model nothing: 480 MiB of data cross Linux's CMA threshold (free CMA over half the free pages) on the real kernel only",
        ),
        ("w11_compaction", "migrated") => Rule::Within(Tolerance::Compaction),
        ("w11_compaction", _) if blocks => Rule::Explained(
            "the posted series migrates a tagged page without reserving the destination's storage (the page is mapped awaiting it and its next access reserves); the model reserves first under both designs",
        ),
        (w, _) if blocks && THP_WORKLOADS.contains(&w) => Rule::Within(Tolerance::Exact),
        (_, _) if blocks => Rule::Within(Tolerance::Placement),
        (_, "migrated") => Rule::Within(Tolerance::Recycled),
        _ => Rule::Within(Tolerance::Exact),
    }
}

/// Where a design's outcomes are expected to part from the posted series.
fn outcome_divergence(workload: &str, design: &str) -> Option<&'static str> {
    match (workload, design) {
        ("w06_thp_read_huge_zero_page", "dynamic") => {
            Some("the read the posted series never completes completes")
        }
        _ => None,
    }
}

struct RealStep {
    line: u64,
    result: String,
    counters: BTreeMap<String, i64>,
}

struct Record {
    name: String,
    start: BTreeMap<String, i64>,
    steps: Vec<RealStep>,
}

fn counters_of(value: &Value) -> BTreeMap<String, i64> {
    value
        .as_object()
        .map(|o| {
            o.iter()
                .filter_map(|(k, v)| v.as_i64().map(|v| (k.clone(), v)))
                .collect()
        })
        .unwrap_or_default()
}

fn load_record(path: &Path) -> Record {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let json: Value =
        serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let steps = json["steps"]
        .as_array()
        .unwrap_or_else(|| panic!("{}: no steps", path.display()))
        .iter()
        .map(|s| RealStep {
            line: s["line"].as_u64().expect("a step's line"),
            result: s["result"].as_str().expect("a step's result").to_string(),
            counters: counters_of(&s["counters"]),
        })
        .collect();
    Record {
        name: json["workload"]
            .as_str()
            .expect("the workload's name")
            .to_string(),
        start: counters_of(&json["start"]),
        steps,
    }
}

struct ModelStep {
    line: u64,
    result: String,
    counters: BTreeMap<Counter, i64>,
}

fn model_counters<M: uapi::Machine + ?Sized>(machine: &M) -> BTreeMap<Counter, i64> {
    METRICS
        .iter()
        .map(|m| {
            let v = machine.counter(m.model).unwrap_or(0);
            (m.model, i64::try_from(v).expect("a counter fits i64"))
        })
        .collect()
}

/// Runs the workload on the model under `design`: counters at the start
/// and after every command.
fn run_model(path: &Path, design: &str) -> (BTreeMap<Counter, i64>, Vec<ModelStep>) {
    let file = path.display().to_string();
    let src = std::fs::read(path).unwrap_or_else(|e| panic!("{file}: {e}"));
    let script = scenario::parse(&file, &src).unwrap_or_else(|e| panic!("{e}"));
    let options = RunOptions {
        verbose: true,
        // The reference kernel's allocator: per-CPU lists, and no fast
        // path (patch 10's `cma_alloc_pages_fastpath()` tests `start - end
        // != 1 << order_per_bit`, which is true for every range, and
        // returns -EINVAL: every reservation goes through
        // alloc_contig_range() and its drains).
        set: vec![
            ("tag-storage".into(), design.into()),
            ("pcp".into(), "on".into()),
            ("reserve-fast-path".into(), "off".into()),
            // `-smp 2`: the per-CPU lists' `high` is split over 2 CPUs.
            ("cpus".into(), "2".into()),
        ],
        ..RunOptions::default()
    };
    let spec = options.platform_spec(&script.platform_spec());
    let platform = Platform::from_spec(&spec).unwrap_or_else(|e| panic!("{file}: {e}"));
    let mut machine =
        make_machine(MachineKind::Kernel, &platform).unwrap_or_else(|e| panic!("{file}: {e}"));
    let mut runner = Runner::new(&mut *machine, &options, &spec).with_source(&src);
    let start = model_counters(runner.machine());
    let mut steps = Vec::new();
    for stmt in &script.stmts {
        runner.statement(stmt, &script.names);
        if let lang::ast::Stmt::Command(c) = stmt {
            let result = runner
                .steps()
                .last()
                .filter(|s| s.line == c.line)
                .map_or_else(|| "?".to_string(), |s| s.result.clone());
            steps.push(ModelStep {
                line: u64::from(c.line),
                result,
                counters: model_counters(runner.machine()),
            });
        }
    }
    let report = runner.finish();
    assert!(
        report.error.is_none(),
        "{file} under {design}: {:?}",
        report.error
    );
    (start, steps)
}

/// The outcome's kind: its first word, and a fault's code.
fn outcome_kind(result: &str) -> String {
    let mut words = result.split_whitespace();
    match words.next() {
        Some("fault") => format!("fault {}", words.next().unwrap_or("")),
        Some("error") => format!("error {}", words.next().unwrap_or("")),
        Some(word) => word.to_string(),
        None => String::new(),
    }
}

/// Compares one workload under one design; returns the mismatches and the
/// explained differences, and appends the last step's row to `table`.
fn compare(record: &Record, design: &str, table: &mut String) -> (Vec<String>, Vec<String>) {
    let path = reference_dir()
        .join("workloads")
        .join(format!("{}.mte", record.name));
    let (model_start, model_steps) = run_model(&path, design);
    let mut problems = Vec::new();
    let mut explained = Vec::new();
    let mut last = None;
    for (i, real) in record.steps.iter().enumerate() {
        let Some(model) = model_steps.get(i) else {
            problems.push(format!("the model has no step {i} (line {})", real.line));
            break;
        };
        if model.line != real.line {
            problems.push(format!(
                "step {i}: the model ran line {}, the kernel line {}",
                model.line, real.line
            ));
            break;
        }
        if outcome_kind(&model.result) != outcome_kind(&real.result) {
            let what = format!(
                "line {}: the kernel gave `{}`, the model `{}`",
                real.line, real.result, model.result
            );
            match outcome_divergence(&record.name, design) {
                Some(why) => explained.push(format!("{what}: {why}")),
                None => problems.push(what),
            }
        }
        for metric in &METRICS {
            let real_delta = real.counters.get(metric.real).copied().unwrap_or(0)
                - record.start.get(metric.real).copied().unwrap_or(0);
            let model_delta = model.counters[&metric.model] - model_start[&metric.model];
            match rule(&record.name, design, metric.name) {
                Rule::Within(tol) if !tol.holds(real_delta, model_delta) => problems.push(format!(
                    "line {}: {}: kernel {real_delta}, model {model_delta} ({tol:?})",
                    real.line, metric.name
                )),
                Rule::Within(_) => {}
                Rule::Explained(why) if real_delta != model_delta => {
                    explained.push(format!("{}: {why}", metric.name));
                }
                Rule::Explained(_) => {}
            }
        }
        last = Some((real, model));
    }
    if let Some((real, model)) = last {
        let cells: Vec<String> = METRICS
            .iter()
            .map(|m| {
                let r = real.counters.get(m.real).copied().unwrap_or(0)
                    - record.start.get(m.real).copied().unwrap_or(0);
                let v = model.counters[&m.model] - model_start[&m.model];
                format!("{r} / {v}")
            })
            .collect();
        let stuck = if real.result == "stuck" {
            " (stuck)"
        } else {
            ""
        };
        let _ = writeln!(
            table,
            "| {}{stuck} | {design} | {} |",
            record.name,
            cells.join(" | ")
        );
    }
    explained.sort();
    explained.dedup();
    (problems, explained)
}

/// The files of `dir` whose name ends in `.EXT`, in name order.
fn files(dir: &Path, ext: &str) -> Vec<PathBuf> {
    let mut paths: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.expect("a directory entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == ext))
        .collect();
    paths.sort();
    paths
}

fn records() -> Vec<Record> {
    files(&reference_dir().join("records"), "json")
        .iter()
        .map(|p| load_record(p))
        .collect()
}

#[test]
fn every_workload_has_a_record_and_every_record_a_workload() {
    let dir = reference_dir();
    let names = |sub: &str, ext: &str| -> Vec<String> {
        files(&dir.join(sub), ext)
            .iter()
            .map(|p| {
                p.file_stem()
                    .expect("a file name")
                    .to_string_lossy()
                    .into_owned()
            })
            .collect()
    };
    let workloads = names("workloads", "mte");
    assert_eq!(workloads, names("records", "json"));
    assert!(workloads.len() >= 12, "{} workloads", workloads.len());
}

#[test]
fn the_model_matches_the_posted_series_within_the_documented_tolerances() {
    // MTESIM_REFERENCE_DESIGNS=a,b compares other designs (a design's own
    // divergences are then reported, not expected).
    let chosen =
        std::env::var("MTESIM_REFERENCE_DESIGNS").unwrap_or_else(|_| "rfc-v3,dynamic".into());
    let designs: Vec<&str> = chosen.split(',').collect();
    for &d in &designs {
        assert!(Design::by_name(d).is_some(), "design {d} is not registered");
    }
    let mut table = String::from(
        "| workload | design | blocks reserved | reservations | releases | migrated | swapped out | swapped in |\n|---|---|---|---|---|---|---|---|\n",
    );
    let mut failures = Vec::new();
    let mut explained = Vec::new();
    for record in records() {
        for &design in &designs {
            let (problems, why) = compare(&record, design, &mut table);
            if !problems.is_empty() {
                failures.push(format!(
                    "{} under {design}:\n  {}",
                    record.name,
                    problems.join("\n  ")
                ));
            }
            explained.extend(
                why.into_iter()
                    .map(|w| format!("{} under {design}: {w}", record.name)),
            );
        }
    }
    println!("kernel / model, change over the workload:\n{table}");
    for e in &explained {
        println!("expected: {e}");
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn tolerances_hold_only_what_they_say() {
    assert!(Tolerance::Exact.holds(16, 16));
    assert!(!Tolerance::Exact.holds(17, 16));
    assert!(Tolerance::Placement.holds(137, 128));
    assert!(Tolerance::Placement.holds(0, 1));
    assert!(Tolerance::Placement.holds(9, 1));
    assert!(!Tolerance::Placement.holds(10, 1));
    assert!(!Tolerance::Placement.holds(138, 128));
    assert!(!Tolerance::Placement.holds(126, 128));
    assert!(Tolerance::Recycled.holds(2, 0));
    assert!(!Tolerance::Recycled.holds(3, 0));
    assert!(!Tolerance::Recycled.holds(0, 1));
    assert!(Tolerance::Compaction.holds(3270, 3328));
    assert!(!Tolerance::Compaction.holds(2900, 3328));
    assert!(matches!(
        rule("w05_thp_tagged_write", "rfc-v3", "reservations"),
        Rule::Within(Tolerance::Exact)
    ));
    assert!(matches!(
        rule("w12_swap", "rfc-v3", "swapped in"),
        Rule::Within(Tolerance::Exact)
    ));
}

#[test]
fn every_workload_exports_as_a_c_program() {
    let paths = files(&reference_dir().join("workloads"), "mte");
    for path in paths {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_mtesim"))
            .arg("export-c")
            .arg(&path)
            .output()
            .expect("mtesim runs");
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "{}: {}",
            path.display(),
            String::from_utf8_lossy(&out.stderr)
        );
        let stem = path.file_stem().expect("a file name").to_string_lossy();
        assert!(
            text.contains(&format!("const struct rt_workload wl_{stem} = {{")),
            "{text}"
        );
    }
}
