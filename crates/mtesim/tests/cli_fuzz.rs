//! `mtesim fuzz` as a user runs it: the summary line, exit statuses,
//! determinism, refused arguments. The failure path (shrinking, the
//! reproducer file) is tested by the difftest crate's `tests/difftest.rs`, with
//! deliberately buggy machines the binary cannot be given.

mod common;

use common::{dir, mtesim_in, stderr, stdout};

#[test]
fn the_reference_against_itself_passes_under_every_policy() {
    let dir = dir();
    for policy in ["none", "static", "dynamic"] {
        let out = mtesim_in(
            dir.path(),
            &[
                "fuzz",
                "--machine",
                "reference",
                "--ops",
                "2000",
                "--seed",
                "3",
                "--set",
                &format!("tag-storage={policy}"),
            ],
        );
        assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
        assert_eq!(
            stdout(&out),
            "fuzz: 2000 ops, 0 divergences, 0 violations\n"
        );
        // Nothing failed, so no reproducer is written.
        assert!(!dir.path().join("fuzz-failure.mte").exists());
    }
}

#[test]
fn the_same_seed_gives_the_same_run() {
    let dir = dir();
    let args = [
        "fuzz",
        "--machine",
        "reference",
        "--ops",
        "500",
        "--seed",
        "0x2a",
    ];
    let a = mtesim_in(dir.path(), &args);
    let b = mtesim_in(dir.path(), &args);
    assert_eq!(a.status.code(), Some(0));
    assert_eq!(stdout(&a), stdout(&b));
    assert_eq!(stdout(&a), "fuzz: 500 ops, 0 divergences, 0 violations\n");
}

/// The CI's fuzz smoke run: the kernel (the default machine) against the
/// reference under each policy, bounded (the million-op runs are a manual
/// `mtesim fuzz --ops 1000000`, see the README).
#[test]
fn smoke_run_of_the_kernel_under_every_policy() {
    let dir = dir();
    for policy in ["none", "static", "dynamic"] {
        let out = mtesim_in(
            dir.path(),
            &[
                "fuzz",
                "--ops",
                "3000",
                "--seed",
                "7",
                "--set",
                &format!("tag-storage={policy}"),
            ],
        );
        assert_eq!(out.status.code(), Some(0), "{policy}: {}", stdout(&out));
        assert_eq!(
            stdout(&out),
            "fuzz: 3000 ops, 0 divergences, 0 violations\n",
            "{policy}"
        );
    }
}

#[test]
fn bad_arguments_are_refused_with_status_2() {
    let dir = dir();
    for args in [
        &["fuzz", "--set", "tag-storage=carveout"][..],
        &["fuzz", "--set", "memory=64M"],
        &["fuzz", "--ops", "ten"],
        &["fuzz", "--machine", "qemu"],
        &["fuzz", "--parallel", "101"],
        &["fuzz", "--parallel", "sometimes"],
    ] {
        let out = mtesim_in(dir.path(), args);
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        assert!(stdout(&out).is_empty());
    }
}

#[test]
fn the_fuzzer_finds_the_huge_zero_page_livelock_and_shrinks_it() {
    // designs.md "Known mistakes": RFC v3's livelock on the huge zero page
    // (a THP-eligible PROT_MTE read never completes). Seed 0 finds it in
    // the third program, a few hundred ops in.
    let d = dir();
    let out = mtesim_in(
        d.path(),
        &[
            "fuzz",
            "--ops",
            "5000",
            "--set",
            "mistake=huge-zero-page",
            "--out",
            "hzp.mte",
        ],
    );
    assert_eq!(out.status.code(), Some(1), "{}", stdout(&out));
    assert!(
        stdout(&out).contains("machine under test stuck"),
        "{}",
        stdout(&out)
    );
    let repro = std::fs::read_to_string(d.path().join("hzp.mte")).unwrap();
    assert!(repro.contains("mistake=huge-zero-page"), "{repro}");
    // The reproducer fails as written and passes without the mistake.
    let failing = mtesim_in(d.path(), &["run", "hzp.mte"]);
    assert_eq!(failing.status.code(), Some(1), "{}", stdout(&failing));
    let fixed = mtesim_in(d.path(), &["run", "--set", "mistake=none", "hzp.mte"]);
    assert_eq!(fixed.status.code(), Some(0), "{}", stdout(&fixed));
}

#[test]
fn parallel_blocks_are_on_by_default_and_can_be_switched_off() {
    let dir = dir();
    let run = |extra: &[&str]| {
        let mut args = vec!["fuzz", "--ops", "2000", "--seed", "5"];
        args.extend_from_slice(extra);
        let out = mtesim_in(dir.path(), &args);
        assert_eq!(out.status.code(), Some(0), "{extra:?}: {}", stdout(&out));
        assert_eq!(
            stdout(&out),
            "fuzz: 2000 ops, 0 divergences, 0 violations\n"
        );
        stderr(&out).to_owned()
    };
    assert!(run(&[]).contains("parallel: "), "blocks by default");
    assert!(run(&["--parallel", "50"]).contains("parallel: "));
    assert!(!run(&["--parallel", "off"]).contains("parallel: "));
}
