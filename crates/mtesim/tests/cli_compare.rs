//! `mtesim compare` as a user runs it: traces and scenarios under several
//! designs, the table, JSON and CSV, determinism, bad input, `--cost`; and
//! the HTML report rendered in a real headless browser.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::{dir, mtesim_in, stderr, stdout, stdout_json};

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn compare(args: &[&str]) -> std::process::Output {
    let mut all = vec!["compare"];
    all.extend_from_slice(args);
    mtesim_in(&root(), &all)
}

#[test]
fn traces_and_scenarios_side_by_side_in_the_designs_order() {
    let out = compare(&[
        "--designs",
        "dynamic,static",
        "workloads/uaf.mtrace",
        "examples/check-modes.mte",
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    let text = stdout(&out);
    let lines: Vec<&str> = text.lines().collect();
    assert!(
        lines[0].starts_with("workloads/uaf.mtrace (trace: "),
        "{text}"
    );
    let header: Vec<&str> = lines[1].split_whitespace().collect();
    assert_eq!(header, ["dynamic", "static"]);
    for row in [
        "tag storage lent to data, avg (%)",
        "contiguous allocations",
        "migrations out of tag storage",
        "faults: anon",
        "tag check faults",
        "modelled cost (cycles)",
        "cost.contig (cycles)",
    ] {
        assert!(text.contains(row), "{row}: {text}");
    }
    assert!(
        text.contains("examples/check-modes.mte (scenario: "),
        "{text}"
    );
    // Wall times go to stderr, never into the output.
    assert!(
        stderr(&out).contains("parallel speed-up"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn json_and_csv_agree_and_are_deterministic() {
    let args = ["workloads/uaf.mtrace", "examples/fork-cow-tags.mte"];
    let mut json_args = vec!["--json"];
    json_args.extend(args);
    let first = compare(&json_args);
    assert!(first.status.success(), "{}", stderr(&first));
    let again = compare(&json_args);
    assert_eq!(
        stdout(&first),
        stdout(&again),
        "the output is deterministic"
    );
    let doc = stdout_json(&first);
    assert_eq!(doc["schema"], "mtesim-compare/1");
    // The default designs are the registry's designs with MTE.
    let expected: Vec<&str> = platform::Design::all()
        .filter(|d| d.rules().mte())
        .map(|d| d.name())
        .collect();
    let designs: Vec<&str> = doc["designs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d.as_str().unwrap())
        .collect();
    assert_eq!(designs, expected);
    let uaf = &doc["inputs"][0];
    assert_eq!(uaf["kind"], "trace");
    let runs = uaf["runs"].as_array().unwrap();
    assert_eq!(runs.len(), expected.len());
    for run in runs {
        assert_eq!(run["status"], "ok");
        assert_eq!(run["metrics"]["tag_check_faults"], 2, "{run:#}");
        let m = &run["metrics"];
        let kinds: u64 = m
            .as_object()
            .unwrap()
            .iter()
            .filter(|(k, _)| k.starts_with("cost_") && *k != "cost_total")
            .map(|(_, v)| v.as_u64().unwrap())
            .sum();
        assert_eq!(m["cost_total"].as_u64().unwrap(), kinds, "the kinds add up");
        assert!(m["cost_total"].as_u64().unwrap() > 0);
        assert!(!run["series"]["points"].as_array().unwrap().is_empty());
    }
    let by_design = |name: &str| runs.iter().find(|r| r["design"] == name).unwrap();
    // Under static nothing is lent; under dynamic almost everything is.
    assert_eq!(by_design("static")["metrics"]["lent_avg_pct"], 0.0);
    assert!(
        by_design("dynamic")["metrics"]["lent_avg_pct"]
            .as_f64()
            .unwrap()
            > 90.0
    );
    assert_eq!(doc["inputs"][1]["kind"], "scenario");
    assert_eq!(doc["inputs"][1]["runs"][0]["status"], "pass");

    let mut csv_args = vec!["--csv"];
    csv_args.extend(args);
    let csv = compare(&csv_args);
    assert!(csv.status.success(), "{}", stderr(&csv));
    let csv = stdout(&csv);
    let lines: Vec<&str> = csv.lines().collect();
    assert!(lines[0].starts_with("input,kind,design,status,length,mem_free_avg,"));
    assert_eq!(lines.len(), 1 + 2 * expected.len());
    let header: Vec<&str> = lines[0].split(',').collect();
    let row: Vec<&str> = lines[1].split(',').collect();
    assert_eq!(header.len(), row.len());
    let col = header.iter().position(|h| *h == "cost_total").unwrap();
    assert_eq!(
        row[col].parse::<u64>().unwrap(),
        runs[0]["metrics"]["cost_total"].as_u64().unwrap()
    );
}

#[test]
fn a_directory_expands_to_its_traces_and_scenarios_in_name_order() {
    let out = compare(&["--designs", "static", "--json", "examples"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let doc = stdout_json(&out);
    let inputs: Vec<&str> = doc["inputs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["input"].as_str().unwrap())
        .collect();
    let mut sorted = inputs.clone();
    sorted.sort_unstable();
    assert_eq!(inputs, sorted);
    assert_eq!(inputs.len(), 5, "{inputs:?}");
}

#[test]
fn bad_input_is_refused_before_anything_runs() {
    let out = compare(&["--designs", "bogus", "workloads/uaf.mtrace"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).contains("unknown design `bogus`"),
        "{}",
        stderr(&out)
    );
    assert!(stdout(&out).is_empty());

    let out = compare(&["--set", "tag-storage=static", "workloads/uaf.mtrace"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("--designs"), "{}", stderr(&out));

    let out = compare(&["README.md"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("not a trace"), "{}", stderr(&out));

    let d = dir();
    std::fs::write(d.path().join("bad.mtrace"), b"not a trace at all").unwrap();
    let out = mtesim_in(d.path(), &["compare", "bad.mtrace"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).starts_with("bad.mtrace: "), "{}", stderr(&out));
    assert!(stdout(&out).is_empty());
}

#[test]
fn a_cost_file_replaces_entries_and_a_bad_one_names_its_line() {
    let d = dir();
    let uaf = root().join("workloads/uaf.mtrace");
    let uaf = uaf.to_str().unwrap();
    std::fs::write(d.path().join("zero.toml"), "fault = 0\nclear-page = 0\n").unwrap();
    let run = |extra: &[&str]| {
        let mut args = vec!["compare", "--designs", "static", "--json", uaf];
        args.extend_from_slice(extra);
        let out = mtesim_in(d.path(), &args);
        assert!(out.status.success(), "{}", stderr(&out));
        stdout_json(&out)["inputs"][0]["runs"][0]["metrics"].clone()
    };
    let default = run(&[]);
    let zero = run(&["--cost", "zero.toml"]);
    assert!(default["cost_fault"].as_u64().unwrap() > 0);
    assert_eq!(zero["cost_fault"], 0);
    assert_eq!(zero["cost_copy"], default["cost_copy"]);

    std::fs::write(d.path().join("bad.toml"), "fault = 1\nmigrate = \"slow\"\n").unwrap();
    for command in [
        vec!["compare", "--cost", "bad.toml", uaf],
        vec!["replay", "--cost", "bad.toml", uaf],
    ] {
        let out = mtesim_in(d.path(), &command);
        assert_eq!(out.status.code(), Some(2), "{command:?}");
        assert!(
            stderr(&out).starts_with("--cost bad.toml:2:11: `migrate`: expected a number"),
            "{}",
            stderr(&out)
        );
    }
    // run takes it too, and expect stat sees the cost counters.
    std::fs::write(
        d.path().join("c.mte"),
        "platform memory=16M\nspawn p\np mmap a 4K prot=r,w => ok\np store a 8 1 => ok\n\
         expect stat cost.fault == 0\nexpect stat fault.anon == 1\n",
    )
    .unwrap();
    let out = mtesim_in(d.path(), &["run", "--cost", "zero.toml", "c.mte"]);
    assert!(out.status.success(), "{}{}", stdout(&out), stderr(&out));
    let out = mtesim_in(d.path(), &["run", "c.mte"]);
    assert_eq!(
        out.status.code(),
        Some(1),
        "the default table charges the fault"
    );
}

fn chromium() -> Option<PathBuf> {
    ["chromium", "chromium-browser", "google-chrome"]
        .iter()
        .find(|name| {
            Command::new(name)
                .arg("--version")
                .output()
                .is_ok_and(|o| o.status.success())
        })
        .map(PathBuf::from)
}

/// Runs headless Chromium on `html` with `args`; its stdout and stderr.
fn headless(browser: &Path, html: &Path, args: &[&str]) -> (String, String) {
    let out = Command::new(browser)
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--no-first-run",
            "--disable-extensions",
            "--enable-logging=stderr",
            "--v=0",
        ])
        .args(args)
        .arg(format!("file://{}", html.display()))
        .output()
        .expect("chromium runs");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    (
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// What the page itself logged: console messages (Chromium prints them as
/// `CONSOLE(...)` lines), blocked loads, script errors. Chromium's own
/// complaints about the sandbox it runs in (D-Bus, GPU) are not the page's.
fn page_errors(log: &str) -> Vec<&str> {
    log.lines()
        .filter(|l| {
            l.contains("CONSOLE")
                || l.contains("Refused to")
                || l.contains("Failed to load resource")
                || l.contains("Uncaught")
                || l.contains("net::ERR_")
        })
        .collect()
}

#[test]
fn the_report_renders_in_a_headless_browser_with_its_plots_and_no_errors() {
    let Some(browser) = chromium() else {
        assert!(
            std::env::var_os("MTESIM_REQUIRE_CHROMIUM").is_none(),
            "MTESIM_REQUIRE_CHROMIUM is set but chromium is missing (.ci/run installs it)"
        );
        eprintln!(
            "\n*** the_report_renders_in_a_headless_browser_with_its_plots_and_no_errors: \
             SKIPPED: chromium is not installed (apt-get install chromium) ***\n"
        );
        return;
    };
    let d = dir();
    let report = d.path().join("report.html");
    let out = compare(&[
        "--report",
        report.to_str().unwrap(),
        "workloads/uaf.mtrace",
        "examples/zero-page-block.mte",
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    let html = std::fs::read_to_string(&report).unwrap();
    // Self-contained: nothing a browser would fetch.
    for needle in ["http://", "https://", "<script", "src=", "@import"] {
        let outside_text = html.replace("http://www.w3.org/2000/svg", "");
        assert!(
            !outside_text.contains(needle),
            "the report references {needle}"
        );
    }

    let (dom, log) = headless(&browser, &report, &["--dump-dom"]);
    let errors = page_errors(&log);
    assert!(errors.is_empty(), "the page logged errors: {errors:#?}");
    // Two inputs, three plots each, every one an SVG with its title,
    // axis descriptions and legend entries.
    assert_eq!(dom.matches("<figure class=\"plot\"").count(), 6, "{dom}");
    assert_eq!(dom.matches("<svg").count(), 6);
    for text in [
        "Tag storage lent to data over time",
        "Modelled cost by event kind",
        "Tag block reservations, contiguous allocations and migrations",
        "tag storage lent to data (%)",
        "data accesses replayed",
        "commands replayed",
        "modelled cost (million cycles)",
        "cost.fault",
        "contiguous allocations",
    ] {
        assert!(dom.contains(text), "{text} is not on the page");
    }
    for design in platform::Design::all().filter(|d| d.rules().mte()) {
        assert!(dom.contains(&format!(">{}<", design.name())), "{design}");
    }
    assert!(!dom.contains("could not be drawn"));
    assert!(dom.contains("mtesim compare"), "the command line is shown");

    let png = d.path().join("report.png");
    let (_, log) = headless(
        &browser,
        &report,
        &[
            "--hide-scrollbars",
            "--window-size=1200,2400",
            &format!("--screenshot={}", png.display()),
        ],
    );
    assert!(page_errors(&log).is_empty(), "{log}");
    let image = std::fs::read(&png).expect("a screenshot");
    assert!(image.starts_with(b"\x89PNG"), "a PNG");
    assert!(image.len() > 20_000, "the screenshot shows something");
}
