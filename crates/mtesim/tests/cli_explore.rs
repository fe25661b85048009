//! `mtesim explore` as a user runs it: the binary, real files, exit
//! statuses, the summary lines, and the printed replay command run as
//! printed (`docs/cli.md`, "explore").

mod common;

use common::{mtesim_in, stderr, stdout};
use std::path::Path;

fn dir() -> tempfile::TempDir {
    tempfile::tempdir().expect("a temporary directory")
}

fn write(dir: &Path, name: &str, text: &str) {
    std::fs::write(dir.join(name), text).unwrap();
}

/// The load sees 0 only if it runs before the store.
const RACY: &str = "platform cpus=2\nspawn p\np mmap a 4K => ok\nparallel\n  \
                    p store a 8 1 => ok\n  p load a 8 => value 0\nend\n";

/// No outcome inside: passes every schedule, two final states.
const TWO_STATES: &str = "platform cpus=2\nspawn p\np mmap a 4K => ok\nparallel\n  \
                          p store a 8 1 => ok\n  p load a 8\nend\nexpect invariants\n";

/// Splits a command line printed by `replay_command` (words, single quotes).
fn shell_words(line: &str) -> Vec<String> {
    let mut words = Vec::new();
    let mut word = String::new();
    let mut quoted = false;
    let mut any = false;
    for c in line.chars() {
        match c {
            '\'' => {
                quoted = !quoted;
                any = true;
            }
            ' ' if !quoted => {
                if any {
                    words.push(std::mem::take(&mut word));
                }
                any = false;
            }
            c => {
                word.push(c);
                any = true;
            }
        }
    }
    if any {
        words.push(word);
    }
    words
}

#[test]
fn a_failing_schedule_is_printed_with_a_command_that_replays_it() {
    let d = dir();
    write(d.path(), "racy.mte", RACY);
    for strategy in ["random", "pct", "exhaustive", "bounded"] {
        let out = mtesim_in(
            d.path(),
            &[
                "explore",
                "racy.mte",
                "--strategy",
                strategy,
                "--set",
                "seed=5",
            ],
        );
        assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
        let text = stdout(&out);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(
            lines[0], "FAIL racy.mte:6: expected value 0x0, got value 0x1",
            "{text}"
        );
        let schedule = lines[1].strip_prefix("  schedule: ").expect(text);
        let replay = lines[2].strip_prefix("  replay: ").expect(text);
        // Found within a few schedules (how many depends on the kernel's
        // switch points: the page-table lock added one per entry written).
        assert!(lines[3].starts_with("racy.mte: "), "{text}");
        assert!(lines[3].contains(" schedule"), "{text}");
        assert!(replay.contains(" --set seed=5 "), "{replay}");
        // Run the command as printed: the same failure, and the schedule.
        let words = shell_words(replay);
        assert_eq!(words[..2], ["mtesim", "run"]);
        let args: Vec<&str> = words[1..].iter().map(String::as_str).collect();
        let again = mtesim_in(d.path(), &args);
        assert_eq!(again.status.code(), Some(1), "{}", stderr(&again));
        assert_eq!(
            stdout(&again),
            format!("  schedule: {schedule}\n{}\n0 passed, 1 failed\n", lines[0])
        );
    }
}

#[test]
fn a_passing_exploration_summarises_and_shards_add_up() {
    let d = dir();
    write(d.path(), "two.mte", TWO_STATES);
    let out = mtesim_in(
        d.path(),
        &["explore", "two.mte", "--strategy", "exhaustive"],
    );
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let text = stdout(&out);
    let summary = |text: &str| -> (usize, String) {
        let line = text.lines().nth(1).expect(text);
        let rest = line.strip_prefix("two.mte: ").expect(line);
        let (n, rest) = rest.split_once(' ').unwrap();
        (
            n.parse().unwrap(),
            rest.rsplit_once(", ").unwrap().0.to_owned(),
        )
    };
    assert!(text.starts_with("PASS two.mte\n"), "{text}");
    let (whole, rest) = summary(text);
    assert!(
        rest.ends_with("schedules, 2 distinct final states, exhausted"),
        "{rest}"
    );
    // The reduced search reaches the same final states.
    let out = mtesim_in(
        d.path(),
        &["explore", "two.mte", "--strategy", "exhaustive", "--reduce"],
    );
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let (reduced, rest) = summary(stdout(&out));
    assert!(reduced <= whole);
    assert!(
        rest.ends_with("2 distinct final states, exhausted"),
        "{rest}"
    );
    let out = mtesim_in(d.path(), &["explore", "two.mte", "--reduce"]);
    assert_eq!(out.status.code(), Some(2));
    let mut total = 0;
    for shard in ["0/3", "1/3", "2/3"] {
        let out = mtesim_in(
            d.path(),
            &[
                "explore",
                "two.mte",
                "--strategy",
                "exhaustive",
                "--shard",
                shard,
            ],
        );
        assert_eq!(out.status.code(), Some(0));
        let (n, rest) = summary(stdout(&out));
        assert!(rest.ends_with(", exhausted"), "{rest}");
        total += n;
    }
    assert_eq!(total, whole);
    // The shards' --json documents merge into the whole's.
    let json = |shard: Option<&str>| -> serde_json::Value {
        let mut args = vec!["explore", "two.mte", "--strategy", "exhaustive", "--json"];
        if let Some(shard) = shard {
            args.extend(["--shard", shard]);
        }
        let out = mtesim_in(d.path(), &args);
        assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
        serde_json::from_str(stdout(&out)).unwrap()
    };
    let all = json(None);
    assert_eq!(all["schema"], "mtesim-explore/1");
    let file = &all["files"][0];
    assert_eq!(
        (&file["file"], &file["status"]),
        (&"two.mte".into(), &"pass".into())
    );
    assert_eq!(file["schedules"], whole);
    let mut schedules = 0;
    let mut states = std::collections::BTreeSet::new();
    for shard in ["0/2", "1/2"] {
        let part = json(Some(shard));
        schedules += part["files"][0]["schedules"].as_u64().unwrap();
        for state in part["files"][0]["states"].as_array().unwrap() {
            states.insert(state.as_str().unwrap().to_owned());
        }
    }
    let whole_states: std::collections::BTreeSet<String> = file["states"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s.as_str().unwrap().to_owned())
        .collect();
    assert_eq!((schedules, states), (whole as u64, whole_states));
}

#[test]
fn several_files_report_in_order_and_bad_input_exits_2() {
    let d = dir();
    write(d.path(), "two.mte", TWO_STATES);
    write(d.path(), "racy.mte", RACY);
    write(d.path(), "bad.mte", "spawn p\np frobnicate\n");
    let out = mtesim_in(
        d.path(),
        &[
            "explore",
            "two.mte",
            "racy.mte",
            "--jobs",
            "2",
            "--schedules",
            "20",
        ],
    );
    assert_eq!(out.status.code(), Some(1));
    let text = stdout(&out);
    let pass = text.find("PASS two.mte").expect(text);
    let fail = text.find("FAIL racy.mte").expect(text);
    assert!(pass < fail, "{text}");
    assert!(text.contains("two.mte: 20 schedules, "), "{text}");
    let out = mtesim_in(d.path(), &["explore", "two.mte", "bad.mte", "missing.mte"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("bad.mte:2:"), "{}", stderr(&out));
    assert!(stderr(&out).contains("missing.mte: "), "{}", stderr(&out));
    let out = mtesim_in(d.path(), &["explore", "two.mte", "--shard", "2/2"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).contains("K must be below N"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn run_takes_a_prefix_and_prints_the_schedule_of_a_failing_block() {
    let d = dir();
    write(d.path(), "racy.mte", RACY);
    // `...`: an empty prefix, then the lowest CPU first: the store first.
    let out = mtesim_in(d.path(), &["run", "racy.mte", "--schedule", "..."]);
    assert_eq!(out.status.code(), Some(1));
    let text = stdout(&out);
    assert!(text.starts_with("  schedule: "), "{text}");
    assert!(text.contains("FAIL racy.mte:6:"), "{text}");
    // CPU 1 (the load) first, then lowest first: CPU 0 at once.
    let out = mtesim_in(d.path(), &["run", "racy.mte", "--schedule", "1..."]);
    let text = stdout(&out);
    let schedule = text
        .lines()
        .next()
        .unwrap()
        .strip_prefix("  schedule: ")
        .expect(text);
    assert!(schedule.starts_with("1.0"), "{text}");
    // What it printed replays strictly, to the same end.
    let again = mtesim_in(d.path(), &["run", "racy.mte", "--schedule", schedule]);
    assert_eq!(
        (again.status.code(), stdout(&again)),
        (out.status.code(), text)
    );
}

/// The races of the reviews with their mistakes switched on
/// (`tests/scenarios/races/`): `explore` finds each, and the printed
/// `mtesim run FILE --set mistake=X --schedule STRING` fails again.
#[test]
fn each_race_mistake_is_found_and_its_printed_replay_fails() {
    let races = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/scenarios/races");
    for (file, mistake) in [
        ("migration-vs-mprotect.mte", "migration-race"),
        ("swapin-vs-fault.mte", "flag-before-restore"),
        ("fork-vs-tag-write.mte", "atomic-alloc"),
    ] {
        let set = format!("mistake={mistake}");
        let out = mtesim_in(
            &races,
            &["explore", file, "--strategy", "exhaustive", "--set", &set],
        );
        assert_eq!(out.status.code(), Some(1), "{file}: {}", stderr(&out));
        let text = stdout(&out);
        let replay = text
            .lines()
            .find_map(|l| l.strip_prefix("  replay: "))
            .expect(text);
        assert!(
            replay.contains(&format!(" --set {set} --schedule ")),
            "{replay}"
        );
        let words = shell_words(replay);
        let args: Vec<&str> = words[1..].iter().map(String::as_str).collect();
        let again = mtesim_in(&races, &args);
        assert_eq!(again.status.code(), Some(1), "{file}: {}", stdout(&again));
        // On the design the same file passes every schedule.
        let fixed = mtesim_in(&races, &["explore", file, "--strategy", "exhaustive"]);
        assert_eq!(fixed.status.code(), Some(0), "{file}: {}", stdout(&fixed));
        assert!(
            stdout(&fixed).contains(", exhausted,"),
            "{}",
            stdout(&fixed)
        );
    }
}
