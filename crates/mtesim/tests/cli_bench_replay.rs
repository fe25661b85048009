//! `mtesim bench replay`: a binary replay whose trace is made while it is
//! read keeps its peak memory flat as the accesses grow (issue 13, "Scale":
//! the billion-access run is in `docs/performance.md`; this is its small
//! version), and refuses what it cannot run.

mod common;

use common::{mtesim, stderr, stdout};

/// The `growth from ... to the end: N KiB` figure.
fn growth_kib(text: &str) -> u64 {
    let line = text
        .lines()
        .find(|l| l.starts_with("growth from 100,000 accesses to the end: "))
        .unwrap_or_else(|| panic!("no growth line:\n{text}"));
    line.rsplit(": ")
        .next()
        .and_then(|v| v.strip_suffix(" KiB"))
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("bad growth line: {line}"))
}

#[test]
fn a_million_accesses_replay_in_the_memory_of_a_hundred_thousand() {
    let out = mtesim(&["bench", "replay", "--accesses", "1000000"]);
    let text = stdout(&out);
    assert_eq!(out.status.code(), Some(0), "{text}{}", stderr(&out));
    assert!(
        text.starts_with("replay: 1,000,000 accesses over 16 blocks of 4096 bytes"),
        "{text}"
    );
    assert!(text.contains("never stored"), "{text}");
    for row in ["before boot", "100,000", "1,000,000"] {
        assert!(
            text.lines().any(|l| l.trim_start().starts_with(row)),
            "{row}: {text}"
        );
    }
    // 900,000 more accesses: a cost of even 3 bytes each would show. The
    // bound leaves room for the allocator and the kernel's RSS accounting,
    // which is approximate.
    assert!(growth_kib(text) < 2048, "{text}");
}

#[test]
fn bad_settings_and_a_machine_too_small_are_refused() {
    let out = mtesim(&["bench", "replay", "--accesses", "10", "--set", "bogus=1"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("--set bogus=1"), "{}", stderr(&out));
    let out = mtesim(&["bench", "replay", "--objects", "0"]);
    assert_eq!(out.status.code(), Some(2));
    // 16 MiB of blocks do not fit an 8 MiB machine.
    let out = mtesim(&[
        "bench",
        "replay",
        "--accesses",
        "10",
        "--objects",
        "4096",
        "--set",
        "memory=8M",
    ]);
    assert_eq!(out.status.code(), Some(2), "{}", stdout(&out));
    assert!(stderr(&out).contains("the replay: "), "{}", stderr(&out));
    assert!(stdout(&out).is_empty());
}
