//! `mtesim run` as a user runs it: the binary, real files and directories,
//! exit statuses, stdout and stderr (`docs/language.md`, "Running").
//!
//! Files that must run use `--machine reference`: what is checked is the
//! runner's behaviour, not a machine's.

mod common;

use common::{dir, mtesim_in, stderr, stdout, stdout_json};
use serde_json::Value;
use std::path::Path;
use std::process::Output;

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
    let example =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../lang/tests/bad-inputs/bad-input.mte");
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
fn json_is_one_document_of_one_shape() {
    let d = dir();
    write(d.path(), "ok.mte", PASSING);
    write(d.path(), "bad-input.mte", "spawn p\np load a+ 8\n");
    // One file: the document with one entry. The reference machine keeps
    // no counters, so the object is empty; every key would be a
    // docs/model.md §5 name (see the unit test of the document's shape).
    let out = run_ref(d.path(), &["--json", "ok.mte"]);
    assert_eq!(out.status.code(), Some(0));
    let value = stdout_json(&out);
    assert_eq!(value["schema"], "mtesim-run/1");
    assert_eq!(value["machine"], "reference");
    assert_eq!(value["files"].as_array().unwrap().len(), 1);
    let file = &value["files"][0];
    assert_eq!(file["file"], "ok.mte");
    assert_eq!(file["status"], "pass");
    assert_eq!(file["counters"], serde_json::json!({}));
    assert_eq!(file["seed"], 0);
    assert_eq!(stderr(&out), "PASS ok.mte\n1 passed, 0 failed\n");
    // Several, one malformed: the same shape, the error given.
    let out = run_ref(
        d.path(),
        &["--json", "--seed", "9", "ok.mte", "bad-input.mte"],
    );
    assert_eq!(out.status.code(), Some(2));
    let value = stdout_json(&out);
    assert_eq!((&value["passed"], &value["failed"]), (&1.into(), &1.into()));
    assert_eq!(value["files"][0]["seed"], 9);
    let bad = &value["files"][1];
    assert_eq!(bad["status"], "error");
    assert_eq!(bad["counters"], Value::Null);
    assert!(
        bad["error"]
            .as_str()
            .unwrap()
            .starts_with("bad-input.mte:2:8: "),
        "{bad}"
    );
    // A failing expectation is listed with its line.
    write(
        d.path(),
        "fail.mte",
        "spawn p\np mmap a 4K\np load a 8 => value 1\n",
    );
    let out = run_ref(d.path(), &["--json", "fail.mte"]);
    assert_eq!(out.status.code(), Some(1));
    let value = stdout_json(&out);
    assert_eq!(
        value["files"][0]["failures"],
        serde_json::json!([{"line": 3, "message": "expected value 0x1, got value 0x0"}])
    );
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

#[test]
fn set_replaces_platform_keys_and_refuses_bad_ones_naming_the_flag() {
    let d = dir();
    write(
        d.path(),
        "s.mte",
        "platform memory=32M\nexpect stat mem.pages == 16384\nexpect stat tag_storage.pages == 0\n",
    );
    let out = mtesim_in(
        d.path(),
        &[
            "run",
            "--set",
            "memory=64M",
            "--set",
            "tag-storage=none",
            "s.mte",
        ],
    );
    assert_eq!(out.status.code(), Some(0), "{}", stdout(&out));
    for bad in ["tag-storage=bogus", "colour=red", "memory"] {
        let out = mtesim_in(d.path(), &["run", "--set", bad, "s.mte"]);
        assert_eq!(out.status.code(), Some(2), "{bad}");
        assert!(
            stderr(&out).contains("--set <KEY=VALUE>"),
            "{}",
            stderr(&out)
        );
        assert_eq!(stdout(&out), "");
    }
}

#[test]
fn a_described_machine_runs_scenarios_whose_platform_line_agrees() {
    let d = dir();
    write(d.path(), "m.toml", "memory = \"32M\"\nswap = \"4M\"\n");
    write(
        d.path(),
        "agrees.mte",
        "platform memory=32M\nexpect stat mem.pages == 8192\n",
    );
    write(d.path(), "silent.mte", "expect stat mem.pages == 8192\n");
    write(d.path(), "differs.mte", "platform swap=8M\n");
    let out = mtesim_in(
        d.path(),
        &["run", "--platform", "m.toml", "agrees.mte", "silent.mte"],
    );
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}{}",
        stdout(&out),
        stderr(&out)
    );
    // A kernel setting the file fixes is compared with the file, and
    // replaced by --set: every kernel setting alike (a few of them here).
    write(d.path(), "lifo.mte", "platform free-list-order=linux\n");
    write(d.path(), "pcp.mte", "platform pcp=on\n");
    write(d.path(), "mistake.mte", "platform mistake=atomic-alloc\n");
    for (file, key, value, file_value) in [
        ("differs.mte", "swap", "8M", "4M"),
        ("lifo.mte", "free-list-order", "linux", "address"),
        ("pcp.mte", "pcp", "on", "off"),
        ("mistake.mte", "mistake", "atomic-alloc", "none"),
    ] {
        let out = mtesim_in(d.path(), &["run", "--platform", "m.toml", file]);
        assert_eq!(out.status.code(), Some(2));
        assert_eq!(
            stderr(&out),
            format!(
                "{file}: cannot run: line 1: `{key}={value}` disagrees with m.toml ({file_value}); \
                 drop the key, or override it with --set\n"
            )
        );
        let set = format!("{key}={value}");
        let out = mtesim_in(
            d.path(),
            &["run", "--platform", "m.toml", "--set", &set, file],
        );
        assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    }
    let out = mtesim_in(
        d.path(),
        &[
            "run",
            "--platform",
            "m.toml",
            "--set",
            "memory=64M",
            "silent.mte",
        ],
    );
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("--set memory cannot change the machine m.toml describes"));
    let out = mtesim_in(
        d.path(),
        &["run", "--platform", "missing.toml", "silent.mte"],
    );
    assert_eq!((out.status.code(), stdout(&out)), (Some(2), ""));
}

/// `--trace` over a `parallel` block: the block's events are printed under
/// its own line (they interleave, so no command of the block owns them),
/// and the run does not stop (it used to hit `BUG: events of line N with no
/// step`, the block's commands having recorded steps after its own).
#[test]
fn trace_shows_a_parallel_block_events_under_the_block() {
    let d = dir();
    write(
        d.path(),
        "p.mte",
        "platform memory=16M tag-storage=dynamic block-size=4K cpus=2\n\
         spawn p\np mmap a 8K prot=r,w,mte => ok\nparallel\n  p store a 8 1 => ok\n\
         p store a+4K 8 2 => ok\nend\np load a 8 => value 1\n",
    );
    let out = mtesim_in(d.path(), &["run", "--trace", "p.mte"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let text = stdout(&out);
    let lines: Vec<&str> = text.lines().collect();
    let at = lines
        .iter()
        .position(|l| l.starts_with("  4: parallel"))
        .unwrap_or_else(|| panic!("no block line in {text}"));
    let events: Vec<&str> = lines[at + 1..]
        .iter()
        .take_while(|l| l.starts_with("        "))
        .map(|l| l.trim())
        .collect();
    // Both faults, each reserving its page's block.
    assert_eq!(
        events.iter().filter(|e| e.starts_with("fault ")).count(),
        2,
        "{text}"
    );
    assert!(
        events.iter().any(|e| e.starts_with("tag-reserve block")),
        "{text}"
    );
    assert!(
        lines.iter().any(|l| l.starts_with("  5: p store a 8 1")),
        "{text}"
    );
    assert!(
        lines.iter().any(|l| l.starts_with("  8: p load a 8")),
        "{text}"
    );
}

#[test]
fn trace_shows_the_kernel_events_under_each_command() {
    let d = dir();
    write(
        d.path(),
        "t.mte",
        "spawn p\np mmap a 4K prot=r,w,mte => ok\np load a 8 => value 0\n\
         p store a 8 1 => ok\np munmap a 4K => ok\n",
    );
    let out = mtesim_in(d.path(), &["run", "--trace", "t.mte"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let text = stdout(&out);
    let under = |line: &str| -> Vec<String> {
        let lines: Vec<&str> = text.lines().collect();
        let at = lines.iter().position(|l| l.starts_with(line)).expect(line);
        lines[at + 1..]
            .iter()
            .take_while(|l| l.starts_with("        "))
            .map(|l| l.trim().split(' ').take(2).collect::<Vec<_>>().join(" "))
            .collect()
    };
    assert_eq!(
        under("  2: "),
        Vec::<String>::new(),
        "mmap faults nothing in"
    );
    assert_eq!(under("  3: "), ["fault zero-page"]);
    // The write copies the zero page into a tagged page: its block is
    // reserved first, then the copy, the tags, the fault's end.
    assert_eq!(
        under("  4: "),
        [
            "tag-reserve block",
            "cow-copy pfn",
            "tags-init pfn",
            "fault cow"
        ]
    );
    assert_eq!(under("  5: "), ["tag-release block"]);
    // The same events as JSON lines.
    let out = mtesim_in(d.path(), &["run", "--trace-json", "t.jsonl", "t.mte"]);
    assert_eq!(out.status.code(), Some(0));
    assert_eq!(
        stdout(&out),
        "PASS t.mte\n1 passed, 0 failed\n",
        "no text trace"
    );
    let json = std::fs::read_to_string(d.path().join("t.jsonl")).unwrap();
    let events: Vec<Value> = json
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let kinds: Vec<(u64, &str)> = events
        .iter()
        .map(|e| (e["line"].as_u64().unwrap(), e["event"].as_str().unwrap()))
        .collect();
    assert_eq!(
        kinds,
        [
            (3, "fault"),
            (4, "tag-reserve"),
            (4, "cow-copy"),
            (4, "tags-init"),
            (4, "fault"),
            (5, "tag-release")
        ]
    );
    assert_eq!(events[0]["command"], "p load a 8");
    assert_eq!(events[1]["how"], "fast-path");
}

/// `compact` under `--trace`: one `migrate ... compaction` event per page
/// moved, lowest frame first, each to a frame above it (the free scanner
/// comes down from the top).
#[test]
fn trace_shows_compaction_migrations() {
    let d = dir();
    write(
        d.path(),
        "c.mte",
        "platform memory=16M tag-storage=static\nspawn p\n\
         p mmap a 8K prot=r,w,mte => ok\np settag a#5 8K => ok\n\
         p mmap u 4K => ok\np store u 8 1 => ok\ncompact => ok\n",
    );
    let out = mtesim_in(d.path(), &["run", "--trace", "c.mte"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let text = stdout(&out);
    let lines: Vec<&str> = text.lines().collect();
    let at = lines
        .iter()
        .position(|l| l.contains(": compact => ok"))
        .expect("the compact line");
    let moves: Vec<(u64, u64)> = lines[at + 1..]
        .iter()
        .take_while(|l| l.starts_with("        "))
        .map(|l| {
            let w: Vec<&str> = l.split_whitespace().collect();
            assert_eq!(
                (w[0], w[1], w[3], w[5]),
                ("migrate", "pfn", "->", "compaction"),
                "{l}"
            );
            let pfn = |s: &str| u64::from_str_radix(s.trim_start_matches("0x"), 16).unwrap();
            (pfn(w[2]), pfn(w[4]))
        })
        .collect();
    assert_eq!(moves.len(), 3, "{text}");
    assert!(moves.windows(2).all(|w| w[0].0 < w[1].0 && w[0].1 > w[1].1));
    assert!(moves.iter().all(|(from, to)| from < to));
}
