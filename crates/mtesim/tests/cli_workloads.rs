//! `mtesim record`, `mtesim trace info` and `mtesim replay` as a user runs
//! them: a real program with a use after free recorded under Valgrind and
//! replayed, malformed traces, the replay's counters and time series, and
//! the shipped workloads.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::{dir, mtesim_in, stderr, stdout, stdout_json};
use serde_json::Value;
use trace::{Access, AccessKind, Event, ExitStatus, Header, Provenance, TraceWriter};

fn valgrind_present() -> bool {
    Command::new("valgrind")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success())
}

/// Valgrind missing: say so loudly; under CI (which installs it) fail.
fn skip_without_valgrind(test: &str) -> bool {
    if valgrind_present() {
        return false;
    }
    assert!(
        std::env::var_os("CI").is_none(),
        "{test}: valgrind is missing under CI (.ci/run installs it)"
    );
    eprintln!("\n*** {test}: SKIPPED: valgrind is not installed (apt-get install valgrind) ***\n");
    true
}

fn compile(dir: &Path, name: &str, source: &str) -> PathBuf {
    let c = dir.join(format!("{name}.c"));
    std::fs::write(&c, source).unwrap();
    let exe = dir.join(name);
    let status = Command::new("cc")
        .args(["-O0", "-g", "-o"])
        .arg(&exe)
        .arg(&c)
        .status()
        .expect("a C compiler runs");
    assert!(status.success(), "cc failed on {name}.c");
    exe
}

const USE_AFTER_FREE: &str = r#"
#include <stdlib.h>
#include <string.h>

int main(void)
{
    char *keep = malloc(100);
    char *p = malloc(64);
    memset(p, 1, 64);
    free(p);
    /* The bug: a load through the freed pointer. */
    volatile char c = p[8];
    keep[0] = c;
    free(keep);
    return 0;
}
"#;

#[test]
fn a_recorded_use_after_free_faults_in_the_replay() {
    if skip_without_valgrind("a_recorded_use_after_free_faults_in_the_replay") {
        return;
    }
    let dir = dir();
    let exe = compile(dir.path(), "uaf", USE_AFTER_FREE);
    let out = mtesim_in(
        dir.path(),
        &["record", "-o", "uaf.mtrace", "--", exe.to_str().unwrap()],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stderr(&out).contains("uaf.mtrace:"), "{}", stderr(&out));

    let info = mtesim_in(dir.path(), &["trace", "info", "uaf.mtrace", "--json"]);
    assert!(info.status.success(), "{}", stderr(&info));
    let info = stdout_json(&info);
    assert_eq!(info["events"]["malloc"], 2);
    assert_eq!(info["events"]["free"], 2);
    assert_eq!(info["exit"], "exit status 0");
    assert!(info["valgrind"].as_str().unwrap().starts_with("valgrind-"));
    assert!(info["command"][0].as_str().unwrap().ends_with("/uaf"));
    // The shim's and the allocator's own accesses were dropped.
    assert!(info["filtered_accesses"].as_u64().unwrap() > 0);

    let out = mtesim_in(dir.path(), &["replay", "uaf.mtrace", "--json"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let summary = stdout_json(&out);
    assert_eq!(summary["tag_check_faults"], 1, "{summary:#}");
    assert_eq!(summary["counters"]["tcf.sync"], 1);
    let fault = &summary["faults"][0];
    assert_eq!(fault["diagnosis"], "use after free");
    assert_eq!(fault["kind"], "load");
    assert_eq!(fault["size"], 1);
    let from = &fault["pointer_from"];
    assert_eq!(from["call"], "malloc");
    assert_eq!(from["size"], 64);
    assert!(from["freed_at"].is_u64());
    assert_eq!(fault["addr"], from["recorded_addr"].as_u64().unwrap() + 8);
    assert_eq!(fault["hit"]["id"], from["id"]);

    // The text names the freed allocation too.
    let out = mtesim_in(dir.path(), &["replay", "uaf.mtrace"]);
    let text = stdout(&out);
    assert!(text.contains("use after free"), "{text}");
    assert!(
        text.contains("pointer from allocation #2 (malloc(64)"),
        "{text}"
    );
}

#[test]
fn a_failing_program_reports_its_exit_status() {
    if skip_without_valgrind("a_failing_program_reports_its_exit_status") {
        return;
    }
    let dir = dir();
    let exe = compile(dir.path(), "three", "int main(void) { return 3; }\n");
    let out = mtesim_in(
        dir.path(),
        &["record", "-o", "t.mtrace", exe.to_str().unwrap()],
    );
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(stderr(&out).contains("exit status 3"), "{}", stderr(&out));
    let info = mtesim_in(dir.path(), &["trace", "info", "t.mtrace"]);
    assert!(stdout(&info).contains("exit status 3"), "{}", stdout(&info));

    // A program valgrind cannot start leaves no trace.
    let out = mtesim_in(
        dir.path(),
        &["record", "-o", "n.mtrace", "./no-such-program"],
    );
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("did not start the program"),
        "{}",
        stderr(&out)
    );
    assert!(!dir.path().join("n.mtrace").exists());
}

#[test]
fn record_without_valgrind_says_how_to_install_it() {
    let dir = dir();
    let out = Command::new(env!("CARGO_BIN_EXE_mtesim"))
        .current_dir(dir.path())
        .env("PATH", dir.path())
        .args(["record", "--", "true"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).contains("apt-get install valgrind"),
        "{}",
        stderr(&out)
    );
    assert!(out.stdout.is_empty());
}

/// A small trace written directly: a clean allocation, an overflow, a use
/// after free, stack traffic.
fn synthetic_trace(path: &Path) {
    let header = Header {
        command: vec!["synthetic".into()],
        provenance: Provenance {
            recorder: "test".into(),
            valgrind: "valgrind-none".into(),
            host: "test".into(),
            date: "2026-12-06T00:00:00Z".into(),
        },
    };
    let file = std::fs::File::create(path).unwrap();
    let mut w = TraceWriter::new(file, &header, 3).unwrap();
    let access = |kind, addr, size| Access { kind, addr, size };
    let heap = 0x0500_0010;
    for i in 0..1000u64 {
        w.instructions(2);
        w.access(access(AccessKind::Store, 0x1f_ff00_0000 + (i % 64) * 8, 8))
            .unwrap();
    }
    w.event(Event::Malloc {
        size: 48,
        ptr: heap,
    })
    .unwrap();
    for i in 0..48 {
        w.access(access(AccessKind::Store, heap + i, 1)).unwrap();
    }
    // One granule past the end: an overflow.
    w.access(access(AccessKind::Store, heap + 48, 1)).unwrap();
    w.event(Event::Free { ptr: heap }).unwrap();
    w.access(access(AccessKind::Load, heap + 4, 4)).unwrap();
    w.finish(ExitStatus::Exited(0)).unwrap();
}

#[test]
fn trace_info_prints_header_and_totals() {
    let dir = dir();
    synthetic_trace(&dir.path().join("s.mtrace"));
    let out = mtesim_in(dir.path(), &["trace", "info", "s.mtrace"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let text = stdout(&out);
    for expected in [
        "command            synthetic\n",
        "data accesses      1050\n",
        "  stores           1049\n",
        "  loads            1\n",
        "instructions       2000\n",
        "  malloc           1\n",
        "exit               exit status 0\n",
        "compression        ",
    ] {
        assert!(text.contains(expected), "{expected:?} in\n{text}");
    }
}

#[test]
fn malformed_traces_exit_2_naming_the_byte_offset() {
    let dir = dir();
    let good = dir.path().join("s.mtrace");
    synthetic_trace(&good);
    let bytes = std::fs::read(&good).unwrap();
    std::fs::write(dir.path().join("short.mtrace"), &bytes[..bytes.len() - 5]).unwrap();
    std::fs::write(dir.path().join("text.mtrace"), "I  0401ab70,3\n").unwrap();
    let mut v9 = bytes.clone();
    v9[8] = 9;
    std::fs::write(dir.path().join("v9.mtrace"), v9).unwrap();
    let cases = [
        (
            "short.mtrace",
            format!("byte {}: truncated trace", bytes.len() - 5),
        ),
        ("text.mtrace", "byte 0: not an mtesim trace".to_owned()),
        ("v9.mtrace", "byte 8: trace format version 9".to_owned()),
        ("missing.mtrace", "missing.mtrace: ".to_owned()),
    ];
    for (file, expected) in &cases {
        for command in [&["trace", "info", file][..], &["replay", file][..]] {
            let out = mtesim_in(dir.path(), command);
            assert_eq!(out.status.code(), Some(2), "{command:?}: {}", stderr(&out));
            assert!(
                stderr(&out).contains(expected.as_str()),
                "{command:?}: {expected:?} in {}",
                stderr(&out)
            );
            assert!(out.stdout.is_empty(), "{command:?} printed on stdout");
        }
    }
}

#[test]
fn replay_reports_counters_faults_and_a_time_series() {
    let dir = dir();
    synthetic_trace(&dir.path().join("s.mtrace"));
    let out = mtesim_in(dir.path(), &["replay", "s.mtrace", "--json"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let s = stdout_json(&out);
    assert_eq!(s["accesses"], 1050);
    assert_eq!(s["allocations"], 1);
    assert_eq!(s["tag_check_faults"], 2);
    assert_eq!(s["counters"]["tcf.sync"], 2);
    assert_eq!(s["faults"][0]["diagnosis"], "out-of-bounds access");
    assert_eq!(s["faults"][1]["diagnosis"], "use after free");
    // The counters of docs/model.md §5, all of them.
    for name in [
        "mem.pages",
        "tag_storage.reserved",
        "pages.tagged",
        "fault.anon",
    ] {
        assert!(s["counters"][name].is_u64(), "{name}");
    }
    assert!(s["counters"]["tag_storage.reservations"].as_u64().unwrap() >= 1);

    // JSON lines: a point every 500 accesses, one at the end, the summary.
    let out = mtesim_in(
        dir.path(),
        &["replay", "s.mtrace", "--every", "500", "--json"],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let lines: Vec<Value> = stdout(&out)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let points: Vec<u64> = lines
        .iter()
        .filter(|l| l["kind"] == "sample")
        .map(|l| l["accesses"].as_u64().unwrap())
        .collect();
    assert_eq!(points, [500, 1000, 1050]);
    assert_eq!(lines.last().unwrap()["kind"], "summary");
    assert_eq!(lines[1]["mem.pages"], 16384);

    // CSV: a header naming the counters, one row per point.
    let out = mtesim_in(
        dir.path(),
        &["replay", "s.mtrace", "--every", "500", "--csv"],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let csv: Vec<&str> = stdout(&out).lines().collect();
    assert_eq!(csv.len(), 4, "{csv:?}");
    assert!(csv[0].starts_with("accesses,instructions,"), "{}", csv[0]);
    assert!(csv[0].contains(",tag_storage.reserved,"), "{}", csv[0]);
    assert!(csv[3].starts_with("1050,2000,"), "{}", csv[3]);
    assert!(stderr(&out).contains("use after free"), "{}", stderr(&out));

    // --set: platform keys and the replay's own.
    let out = mtesim_in(
        dir.path(),
        &[
            "replay",
            "s.mtrace",
            "--json",
            "--set",
            "memory=128M",
            "--set",
            "tcf=none",
        ],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let s = stdout_json(&out);
    assert_eq!(s["counters"]["mem.pages"], 32768);
    assert_eq!(s["tag_check_faults"], 0);
    let out = mtesim_in(
        dir.path(),
        &[
            "replay",
            "s.mtrace",
            "--json",
            "--set",
            "tag-storage=static",
        ],
    );
    assert_eq!(stdout_json(&out)["tag_check_faults"], 2);
}

#[test]
fn bad_replay_flags_exit_2_naming_the_flag() {
    let dir = dir();
    synthetic_trace(&dir.path().join("s.mtrace"));
    for (args, expected) in [
        (
            &["--set", "colour=red"][..],
            "--set colour=red: unknown platform key `colour`",
        ),
        (&["--set", "memory=lots"][..], "--set memory=lots: `memory`"),
        (&["--set", "tcf=loud"][..], "--set tcf=loud: `tcf`"),
        (&["--set", "memory"][..], "--set memory: expected KEY=VALUE"),
        (
            &["--every", "10"][..],
            "--every: a time series needs --json or --csv",
        ),
    ] {
        let mut command = vec!["replay", "s.mtrace"];
        command.extend_from_slice(args);
        let out = mtesim_in(dir.path(), &command);
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        assert!(
            stderr(&out).contains(expected),
            "{args:?}: {}",
            stderr(&out)
        );
        assert!(out.stdout.is_empty());
    }
}

#[test]
fn the_shipped_workloads_replay() {
    let workloads = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../workloads");
    let mut traces: Vec<PathBuf> = std::fs::read_dir(&workloads)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "mtrace"))
        .collect();
    traces.sort();
    let names: Vec<String> = traces
        .iter()
        .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
        .collect();
    assert_eq!(names, ["gzip.mtrace", "sort.mtrace", "uaf.mtrace"]);
    for trace in &traces {
        let path = trace.to_str().unwrap();
        let info = stdout_json(&mtesim_in(&workloads, &["trace", "info", path, "--json"]));
        assert!(
            info["file_bytes"].as_u64().unwrap() < 4 << 20,
            "{path}: a shipped trace stays small"
        );
        assert_eq!(info["exit"], "exit status 0");
        let out = mtesim_in(&workloads, &["replay", path, "--json"]);
        assert!(out.status.success(), "{path}: {}", stderr(&out));
        let s = stdout_json(&out);
        assert_eq!(s["accesses"], info["accesses"], "{path}");
        assert_eq!(s["instructions"], info["instructions"], "{path}");
        assert_eq!(s["other_faults"], 0, "{path}");
        assert_eq!(s["skipped_accesses"], 0, "{path}");
        assert!(s["counters"]["fault.anon"].as_u64().unwrap() > 0, "{path}");
    }
}

#[test]
fn the_shipped_use_after_free_trace_shows_both_bugs() {
    // workloads/src/uaf.c: a session read after it was freed, and a
    // 32-byte buffer written one byte past its end.
    let workloads = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../workloads");
    let out = mtesim_in(&workloads, &["replay", "uaf.mtrace", "--json"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let s = stdout_json(&out);
    assert_eq!(s["tag_check_faults"], 2, "{s:#}");
    let (uaf, overflow) = (&s["faults"][0], &s["faults"][1]);

    assert_eq!(uaf["diagnosis"], "use after free");
    assert_eq!(uaf["kind"], "load");
    assert_eq!(uaf["size"], 8);
    let from = &uaf["pointer_from"];
    assert_eq!(from["call"], "malloc");
    assert_eq!(from["size"], 32, "struct session");
    assert!(from["freed_at"].as_u64().unwrap() < uaf["access"].as_u64().unwrap());
    assert_eq!(uaf["addr"], from["recorded_addr"], "session->id");
    assert_eq!(uaf["hit"]["id"], from["id"]);
    assert_ne!(
        uaf["memory_tag"], from["tag"],
        "the block was retagged on free"
    );

    assert_eq!(overflow["diagnosis"], "out-of-bounds access");
    assert_eq!(overflow["kind"], "store");
    assert_eq!(overflow["size"], 1);
    let from = &overflow["pointer_from"];
    assert_eq!(from["size"], 32);
    assert!(from["freed_at"].is_null());
    assert_eq!(
        overflow["addr"].as_u64().unwrap(),
        from["recorded_addr"].as_u64().unwrap() + 32,
        "name[32]"
    );
    assert_ne!(
        overflow["hit"]["id"], from["id"],
        "it lands in the neighbour"
    );
    assert_ne!(overflow["memory_tag"], from["tag"]);

    let text = stdout(&mtesim_in(&workloads, &["replay", "uaf.mtrace"])).to_owned();
    assert!(
        text.contains("use after free\n    pointer from allocation #2 (malloc(32)"),
        "{text}"
    );
    assert!(text.contains("out-of-bounds access"), "{text}");
}
