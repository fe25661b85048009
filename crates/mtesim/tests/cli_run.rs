//! `mtesim run` as a user runs it: the binary, real files and directories,
//! exit statuses, stdout and stderr (`docs/language.md`, "Running").
//!
//! Files that must run use `--machine reference`: what is checked is the
//! runner's behaviour, not a machine's.

mod common;

use common::{mtesim_in, stderr, stdout};
use serde_json::Value;
use std::path::Path;
use std::process::Output;

fn dir() -> tempfile::TempDir {
    tempfile::tempdir().expect("a temporary directory")
}

fn write(dir: &Path, name: &str, text: &str) {
    let path = dir.join(name);
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent).unwrap();
    }
    std::fs::write(path, text).unwrap();
}

/// Runs on the reference machine in `dir`.
fn run_ref(dir: &Path, args: &[&str]) -> Output {
    let mut all = vec!["run", "--machine", "reference"];
    all.extend_from_slice(args);
    mtesim_in(dir, &all)
}

const PASSING: &str =
    "spawn p\np mmap a 4K => ok\np store a 8 0x42 => ok\np load a 8 => value 0x42\n";

#[test]
fn a_passing_file_prints_pass_and_exits_0() {
    let d = dir();
    write(d.path(), "ok.mte", PASSING);
    let out = run_ref(d.path(), &["ok.mte"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(stdout(&out), "PASS ok.mte\n1 passed, 0 failed\n");
    assert_eq!(stderr(&out), "");
}

#[test]
fn each_failure_is_a_fail_line_and_the_run_goes_on() {
    // Spec: "FAIL file:line: expected OUTCOME, got RESULT"; a command
    // without an outcome never fails; values compare as numbers.
    let d = dir();
    write(
        d.path(),
        "bad.mte",
        "spawn p\np mmap a 4K\np load a 8 => value 0x1\np load a 8 => value 0\n\
         p load 0x10 8\np store 0x10 8 1 => ok\n",
    );
    let out = run_ref(d.path(), &["bad.mte"]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert_eq!(
        stdout(&out),
        "FAIL bad.mte:3: expected value 0x1, got value 0x0\n\
         FAIL bad.mte:6: expected ok, got fault SEGV_MAPERR addr=0x10\n\
         0 passed, 1 failed\n"
    );
}

#[test]
fn a_malformed_file_is_located_with_a_caret_and_nothing_runs() {
    // The malformed-input example (crates/scenario/tests/bad-inputs/): refused with status 2 and a message that
    // starts `bad-input.mte:4:`.
    let d = dir();
    let example = Path::new(env!("CARGO_MANIFEST_DIR")).join("../scenario/tests/bad-inputs/bad-input.mte");
    std::fs::copy(&example, d.path().join("bad-input.mte")).unwrap();
    let out = run_ref(d.path(), &["bad-input.mte"]);
    assert_eq!(out.status.code(), Some(2));
    assert_eq!(stdout(&out), "0 passed, 1 failed\n");
    let err = stderr(&out);
    assert!(
        err.starts_with("bad-input.mte:4:9: bad pointer `a+`: missing offset after `+`\n"),
        "{err}"
    );
    // The offending line, and the caret under column 9 (the `+`).
    let lines: Vec<&str> = err.lines().collect();
    let source = lines
        .iter()
        .find(|l| l.contains("p load a+ 8"))
        .expect("the line");
    let caret = lines
        .iter()
        .find(|l| l.contains('┬'))
        .expect("a caret line");
    let col = |l: &str, c: char| l.chars().position(|x| x == c).unwrap();
    assert_eq!(col(caret, '┬'), col(source, '+'), "{err}");
    // No colour escapes on a pipe.
    assert!(!err.contains('\u{1b}'), "{err:?}");
}

#[test]
fn nothing_of_a_malformed_file_runs_even_after_good_lines() {
    let d = dir();
    write(
        d.path(),
        "late.mte",
        "spawn p\np load 0x10 8 => value 0x1\np lod a\n",
    );
    let out = run_ref(d.path(), &["late.mte"]);
    assert_eq!(out.status.code(), Some(2));
    assert_eq!(stdout(&out), "0 passed, 1 failed\n", "no FAIL of line 2");
    assert!(stderr(&out).starts_with("late.mte:3:3: unknown command `lod`"));
}

#[test]
fn unreadable_inputs_exit_2_and_count_as_failed() {
    let d = dir();
    write(d.path(), "ok.mte", PASSING);
    write(d.path(), "bad.mte", "spawn p\np yield => error EINVAL\n");
    let out = run_ref(d.path(), &["ok.mte", "missing.mte", "bad.mte"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).starts_with("missing.mte: "),
        "{}",
        stderr(&out)
    );
    assert_eq!(
        stdout(&out),
        "PASS ok.mte\nFAIL bad.mte:2: expected error EINVAL, got ok\n1 passed, 2 failed\n"
    );
    let empty = dir();
    let out = run_ref(empty.path(), &["."]);
    assert_eq!(out.status.code(), Some(2));
    assert_eq!(stderr(&out), ".: no .mte files here\n");
}

#[test]
fn directories_are_searched_recursively_in_sorted_order() {
    let d = dir();
    for name in ["b.mte", "a/z.mte", "a/c.mte", "a/d/e.mte"] {
        write(d.path(), name, PASSING);
    }
    write(d.path(), "notes.txt", "not a scenario");
    write(d.path(), "a/readme.md", "# nor this");
    let out = run_ref(d.path(), &["."]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let sep = std::path::MAIN_SEPARATOR;
    let expected: String = ["a/c.mte", "a/d/e.mte", "a/z.mte", "b.mte"]
        .iter()
        .map(|n| format!("PASS .{sep}{}\n", n.replace('/', &sep.to_string())))
        .collect();
    assert_eq!(stdout(&out), format!("{expected}4 passed, 0 failed\n"));
    // Arguments keep their order; files run in parallel but print in it.
    let out = run_ref(d.path(), &["b.mte", "a", "--jobs", "2"]);
    assert_eq!(
        stdout(&out),
        format!(
            "PASS b.mte\nPASS a{sep}c.mte\nPASS a{sep}d{sep}e.mte\nPASS a{sep}z.mte\n4 passed, 0 failed\n"
        )
    );
}

#[test]
fn no_progress_bar_on_a_pipe() {
    // Several files, stderr a pipe: nothing but the results anywhere.
    let d = dir();
    for i in 0..8 {
        write(d.path(), &format!("f{i}.mte"), PASSING);
    }
    let out = run_ref(d.path(), &["."]);
    assert_eq!(out.status.code(), Some(0));
    assert_eq!(stderr(&out), "");
    assert!(stdout(&out).ends_with("8 passed, 0 failed\n"));
    assert!(!stdout(&out).contains('\r'));
}

#[test]
fn verbose_prints_every_command_with_its_result() {
    let d = dir();
    write(
        d.path(),
        "v.mte",
        "spawn p  # a comment\np mmap a 4K\n\np load a#7 8 => value 0x0\n",
    );
    let out = run_ref(d.path(), &["--verbose", "v.mte"]);
    assert_eq!(out.status.code(), Some(0));
    assert_eq!(
        stdout(&out),
        "  1: spawn p => ok\n  2: p mmap a 4K => ok\n  4: p load a#7 8 => value 0x0\n\
         PASS v.mte\n1 passed, 0 failed\n"
    );
}

#[test]
fn json_puts_only_counters_on_stdout() {
    let d = dir();
    write(d.path(), "ok.mte", PASSING);
    write(d.path(), "bad-input.mte", "spawn p\np load a+ 8\n");
    // One file: the counters object itself. The reference machine keeps
    // none, so it is empty; every key would be a docs/model.md §5 name (see the
    // unit test of the document's shape).
    let out = run_ref(d.path(), &["--json", "ok.mte"]);
    assert_eq!(out.status.code(), Some(0));
    let value: Value = serde_json::from_str(stdout(&out)).expect("stdout is JSON");
    assert_eq!(value, serde_json::json!({}));
    assert_eq!(stderr(&out), "PASS ok.mte\n1 passed, 0 failed\n");
    // Several: keyed by path, null for a file that did not run.
    let out = run_ref(d.path(), &["--json", "ok.mte", "bad-input.mte"]);
    assert_eq!(out.status.code(), Some(2));
    let value: Value = serde_json::from_str(stdout(&out)).expect("stdout is JSON");
    assert_eq!(
        value,
        serde_json::json!({"ok.mte": {}, "bad-input.mte": null})
    );
    // A single file that did not run: stdout stays empty.
    let out = run_ref(d.path(), &["--json", "bad-input.mte"]);
    assert_eq!((out.status.code(), stdout(&out)), (Some(2), ""));
}

#[test]
fn schedules_are_parsed_and_must_fit() {
    let d = dir();
    write(d.path(), "ok.mte", PASSING);
    // A malformed --schedule is a usage error (clap's status 2), naming the
    // column.
    let out = run_ref(d.path(), &["--schedule", "0.x", "ok.mte"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).contains("schedule, column 3: expected a CPU number"),
        "{}",
        stderr(&out)
    );
    assert_eq!(stdout(&out), "");
    // A schedule with decisions for a file without parallel blocks does
    // not fit: an input that cannot be run.
    let out = run_ref(d.path(), &["--schedule", "0.1", "ok.mte"]);
    assert_eq!(out.status.code(), Some(2));
    assert_eq!(
        stderr(&out),
        "ok.mte: schedule: schedule has 2 decisions but the program made only 0\n"
    );
    assert_eq!(stdout(&out), "0 passed, 1 failed\n");
    // The empty schedule fits it.
    let out = run_ref(d.path(), &["--schedule", "-", "ok.mte"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
}

#[test]
fn bad_options_are_usage_errors() {
    let d = dir();
    write(d.path(), "ok.mte", PASSING);
    for args in [
        &["run", "--seed", "abc", "ok.mte"][..],
        &["run", "--machine", "qemu", "ok.mte"],
        &["run", "--jobs", "0", "ok.mte"],
        &["run"],
    ] {
        let out = mtesim_in(d.path(), args);
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        assert_eq!(stdout(&out), "", "{args:?}");
    }
    // --seed takes hex as the platform line does.
    let out = run_ref(d.path(), &["--seed", "0x2a", "ok.mte"]);
    assert_eq!(out.status.code(), Some(0));
}

#[test]
fn the_default_machine_still_refuses_malformed_files_first() {
    // Whatever the machine, a malformed file is reported as malformed.
    let d = dir();
    write(d.path(), "m.mte", "spawn p\np lod a\n");
    let out = mtesim_in(d.path(), &["run", "m.mte"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).starts_with("m.mte:2:3: unknown command `lod`"));
}
