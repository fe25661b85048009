//! `mtesim bench trace`: runs a small trace through every stage and prints
//! one line per stage with its rate and its cost against the baseline.

mod common;

use common::mtesim;

#[test]
fn bench_trace_prints_every_stage() {
    let out = mtesim(&["bench", "trace", "--lines", "2000"]);
    let stdout = String::from_utf8(out.stdout).unwrap();
    assert_eq!(out.status.code(), Some(0), "{stdout}");
    let lines: Vec<&str> = stdout.lines().collect();
    assert!(lines[0].starts_with("trace: 2000 lines, "), "{stdout}");
    assert!(
        lines[1].starts_with("read + split lines (baseline)"),
        "{stdout}"
    );
    assert!(lines[1].ends_with("1.0x baseline"), "{stdout}");
    assert!(
        lines[2].starts_with("the trace's memory walk alone"),
        "{stdout}"
    );
    assert!(lines[3].starts_with("read + parse "), "{stdout}");
    assert!(
        lines[4].starts_with("read + parse (as run streams)"),
        "{stdout}"
    );
    assert!(lines[5].starts_with("... + lower + run (flat)"), "{stdout}");
    assert!(
        lines[6].starts_with("... + lower + run (machine)"),
        "{stdout}"
    );
    assert!(lines[0].contains("machine `kernel`"), "{stdout}");
    assert!(
        lines.iter().skip(1).all(|l| l.contains(" M lines/s ")),
        "{stdout}"
    );
}

#[test]
fn bench_trace_refuses_a_trace_too_short_and_a_machine_not_built() {
    let out = mtesim(&["bench", "trace", "--lines", "2"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("at least 3 lines"));
    let out = mtesim(&["bench", "trace", "--lines", "100", "--machine", "qemu"]);
    assert_eq!(out.status.code(), Some(2));
}

#[test]
fn bench_trace_runs_the_local_pattern_and_refuses_an_unknown_one() {
    let out = mtesim(&["bench", "trace", "--lines", "2000", "--pattern", "local"]);
    let stdout = String::from_utf8(out.stdout).unwrap();
    assert_eq!(out.status.code(), Some(0), "{stdout}");
    assert!(
        stdout.lines().next().unwrap().contains("pattern `local`"),
        "{stdout}"
    );
    assert_eq!(stdout.lines().count(), 7, "{stdout}");
    let out = mtesim(&["bench", "trace", "--lines", "100", "--pattern", "zigzag"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("the patterns are"));
}
