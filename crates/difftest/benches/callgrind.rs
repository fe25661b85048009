//! The regression guard of the hot paths (issue 13): instruction counts
//! under Valgrind's callgrind, which are the same on a quiet and a loaded
//! machine, compared with the counts committed in
//! `benches/callgrind-baseline.toml` at the workspace root.
//!
//! Cases (each the instructions of its measured function only, divided by
//! its operations; setup such as booting is not counted):
//! - `checked_load`: an 8-byte load through an established `PROT_MTE`
//!   mapping in sync mode whose tags match (`Machine::run` of a `load` op);
//! - `tag_check_fault`: the same load with a wrong pointer tag (a
//!   synchronous `SEGV_MTESERR` reported to the process);
//! - `page_fault`: the first store to a page of an untagged anonymous
//!   mapping (a demand fault allocating and mapping a frame);
//! - `tag_block_reservation`: the first store to a page of a `PROT_MTE`
//!   mapping under the dynamic design, one page per tag block, so that
//!   every fault reserves a tag storage block;
//! - `fuzz_step`: one step of `mtesim fuzz` (a generated op run on the
//!   kernel and the reference model, results compared, every invariant
//!   checked), over a whole short campaign so that program setup is
//!   included as it is in a real one.
//!
//! Run: `cargo bench --profile dev -p mtesim-difftest --bench callgrind`
//! prints each count, its baseline and their ratio, and exits with status
//! 1 when any count is more than 10% over its baseline (2 when it cannot
//! measure: Valgrind missing, a case failing, a baseline unreadable).
//! `... --bench callgrind -- --update` writes the counts measured now as
//! the new baseline. `.ci/run` runs the guard in the dev profile (the one
//! its tests have already built) with `CARGO_INCREMENTAL=0`; counts of
//! other profiles, and of incremental builds (a quarter more on the checked
//! load), differ, so the baseline is always refreshed with
//! `CARGO_INCREMENTAL=0` and the command above.
//!
//! How: without `--case`, this binary runs itself under
//! `valgrind --tool=callgrind --toggle-collect=*measured_CASE*` once per
//! case and reads the `summary:` line of callgrind's output. With
//! `--case NAME` it sets the case up and runs its measured function.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::hint::black_box;
use std::path::{Path, PathBuf};
use std::process::{Command as Process, ExitCode};

// The setup of the kernel's own benches (a booted machine with a process
// in sync mode, anonymous mappings); setup only, never measured.
#[path = "../../kernel/benches/common/mod.rs"]
mod common;

use common::{mmap, run, sync_process};
use difftest::{FuzzConfig, fuzz};
use kernel::Kernel;
use mte::{Tag, TaggedPtr};
use platform::{Design, Platform, PlatformSpec};
use scenario::machine::{MachineKind, MachineUnavailable, make_machine};
use uapi::{AccessSize, Command, Machine, Op, Outcome, Pid, Prot, Reply};

/// Case names, in the order they run and are printed.
const CASES: [&str; 5] = [
    "checked_load",
    "tag_check_fault",
    "page_fault",
    "tag_block_reservation",
    "fuzz_step",
];

/// How far a count may grow over its baseline before the guard fails.
const TOLERANCE: f64 = 1.10;

/// Operations per case: enough that per-op figures are stable, few enough
/// that a case takes seconds under Valgrind in the dev profile.
const LOADS: u64 = 2000;
const FAULTS: u64 = 64;
const FUZZ_OPS: u64 = 200;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if let Some(i) = args.iter().position(|a| a == "--case") {
        return match args.get(i + 1) {
            Some(case) => run_case(case),
            None => fail("--case needs a case name"),
        };
    }
    // `cargo bench` passes `--bench`; anything else is a mistake.
    let update = args.iter().any(|a| a == "--update");
    if let Some(other) = args
        .iter()
        .find(|a| !matches!(a.as_str(), "--bench" | "--update"))
    {
        return fail(&format!("unknown argument `{other}` (expected `--update`)"));
    }
    match guard(update) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::from(1),
        Err(message) => fail(&message),
    }
}

fn fail(message: &str) -> ExitCode {
    eprintln!("callgrind guard: {message}");
    ExitCode::from(2)
}

/// Where the committed counts live: `benches/` at the workspace root.
fn baseline_path() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../benches/callgrind-baseline.toml")
}

/// Measures every case; with `update`, writes the baseline, else compares.
/// `Ok(false)` when a count grew past the tolerance.
fn guard(update: bool) -> Result<bool, String> {
    let exe = std::env::current_exe().map_err(|e| format!("cannot find this binary: {e}"))?;
    let mut counts = BTreeMap::new();
    for case in CASES {
        counts.insert(case, measure(&exe, case)?);
    }
    let path = baseline_path();
    if update {
        let mut text = String::from(
            "# Instructions (callgrind Ir) per operation of each hot path, dev profile,\n\
             # built without incremental compilation as `.ci/run` builds it.\n\
             # Checked by `.ci/run`; refresh with\n\
             #   CARGO_INCREMENTAL=0 cargo bench --profile dev -p mtesim-difftest --bench callgrind -- --update\n\
             # (see crates/difftest/benches/callgrind.rs for what each case measures).\n",
        );
        for case in CASES {
            let _ = writeln!(text, "{case} = {}", counts[case]);
        }
        std::fs::write(&path, text).map_err(|e| format!("{}: {e}", path.display()))?;
        println!("callgrind guard: baseline written to {}", path.display());
        for case in CASES {
            println!("{case:<24} {:>10} Ir/op", counts[case]);
        }
        return Ok(true);
    }
    let baseline = read_baseline(&path)?;
    let mut ok = true;
    println!(
        "{:<24} {:>10} {:>10} {:>7}",
        "case", "Ir/op", "baseline", "ratio"
    );
    for case in CASES {
        let count = counts[case];
        let Some(&base) = baseline.get(case) else {
            return Err(format!(
                "{}: no baseline for `{case}` (refresh it with `-- --update`)",
                path.display()
            ));
        };
        let ratio = count as f64 / base.max(1) as f64;
        let verdict = if ratio > TOLERANCE {
            ok = false;
            "  REGRESSION (> +10%)"
        } else {
            ""
        };
        println!("{case:<24} {count:>10} {base:>10} {ratio:>7.3}{verdict}");
    }
    if !ok {
        println!(
            "callgrind guard: FAILED; if the cost is intended, refresh the baseline with \
             `CARGO_INCREMENTAL=0 cargo bench --profile dev -p mtesim-difftest --bench callgrind -- --update`"
        );
    }
    Ok(ok)
}

/// `name = count` lines; `#` comments and blank lines skipped.
fn read_baseline(path: &Path) -> Result<BTreeMap<String, u64>, String> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("{}: {e} (write it with `-- --update`)", path.display()))?;
    let mut counts = BTreeMap::new();
    for (i, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let parsed = line
            .split_once('=')
            .and_then(|(k, v)| Some((k.trim().to_owned(), v.trim().parse::<u64>().ok()?)));
        let Some((key, value)) = parsed else {
            return Err(format!(
                "{}:{}: expected `case = count`, found `{line}`",
                path.display(),
                i + 1
            ));
        };
        counts.insert(key, value);
    }
    Ok(counts)
}

/// Instructions per operation of `case`, from one run under callgrind.
fn measure(exe: &Path, case: &str) -> Result<u64, String> {
    let out = std::env::temp_dir().join(format!(
        "mtesim-callgrind-{}-{case}.out",
        std::process::id()
    ));
    let status = Process::new("valgrind")
        .arg("--tool=callgrind")
        .arg(format!("--toggle-collect=*measured_{case}*"))
        .arg(format!("--callgrind-out-file={}", out.display()))
        .arg("--quiet")
        .arg(exe)
        .args(["--case", case])
        .status()
        .map_err(|e| format!("cannot run valgrind (install it: apt-get install valgrind): {e}"))?;
    let text = std::fs::read_to_string(&out);
    let _ = std::fs::remove_file(&out);
    if !status.success() {
        return Err(format!("case `{case}` failed under valgrind ({status})"));
    }
    let text = text.map_err(|e| format!("{}: {e}", out.display()))?;
    let total: u64 = text
        .lines()
        .find_map(|l| l.strip_prefix("summary:"))
        .and_then(|v| v.trim().parse().ok())
        .ok_or_else(|| format!("case `{case}`: no `summary:` line in callgrind's output"))?;
    if total == 0 {
        return Err(format!(
            "case `{case}`: nothing collected (is `measured_{case}` inlined away?)"
        ));
    }
    Ok(total / ops_of(case))
}

fn ops_of(case: &str) -> u64 {
    match case {
        "checked_load" | "tag_check_fault" => LOADS,
        "page_fault" | "tag_block_reservation" => FAULTS,
        _ => FUZZ_OPS,
    }
}

fn run_case(case: &str) -> ExitCode {
    match case {
        "checked_load" => {
            let (mut k, pid, base) = tagged_mapping(5);
            let loads = loads(pid, base, 5);
            check_all(&measured_checked_load(&mut k, &loads), |o| {
                matches!(o, Outcome::Value(_))
            })
        }
        "tag_check_fault" => {
            let (mut k, pid, base) = tagged_mapping(5);
            let loads = loads(pid, base, 6);
            check_all(&measured_tag_check_fault(&mut k, &loads), |o| {
                matches!(o, Outcome::Fault(_))
            })
        }
        "page_fault" => {
            let (mut k, pid) = sync_process(&Platform::default());
            let page = Platform::default().page_size();
            let base = mmap(&mut k, pid, FAULTS * page, Prot::READ_WRITE);
            let stores = stores(pid, base, page);
            check_all(&measured_page_fault(&mut k, &stores), |o| *o == Outcome::Ok)
        }
        "tag_block_reservation" => {
            let mut spec = PlatformSpec::default();
            if let Err(e) = spec.set_key("tag-storage", "dynamic") {
                return fail(&e.to_string());
            }
            let platform = match Platform::from_spec(&spec) {
                Ok(p) => p,
                Err(e) => return fail(&e.to_string()),
            };
            // One tag byte covers two 16-byte granules: a block of
            // `block_size` tag bytes covers 32 times as many data bytes.
            let Some(stride) = platform.block_size().map(|b| b * 32) else {
                return fail("the dynamic design has no tag blocks");
            };
            let (mut k, pid) = sync_process(&platform);
            let prot = Prot {
                mte: true,
                ..Prot::READ_WRITE
            };
            let base = mmap(&mut k, pid, FAULTS * stride, prot);
            let stores = stores(pid, base, stride);
            check_all(&measured_tag_block_reservation(&mut k, &stores), |o| {
                *o == Outcome::Ok
            })
        }
        "fuzz_step" => {
            let config = FuzzConfig::new(FUZZ_OPS, 1, Design::DYNAMIC);
            match measured_fuzz_step(&config) {
                Ok(true) => ExitCode::SUCCESS,
                Ok(false) => fail("the fuzz campaign found a failure"),
                Err(e) => fail(&e),
            }
        }
        other => fail(&format!(
            "unknown case `{other}` (cases: {})",
            CASES.join(", ")
        )),
    }
}

/// Exit status 0 when every reply is what the case expects.
fn check_all(replies: &[Reply], ok: impl Fn(&Outcome) -> bool) -> ExitCode {
    match replies.iter().find(|r| !ok(&r.outcome)) {
        None => ExitCode::SUCCESS,
        Some(r) => fail(&format!("unexpected reply {r:?}")),
    }
}

#[inline(never)]
fn measured_checked_load(k: &mut Kernel, ops: &[Op]) -> Vec<Reply> {
    run_all(k, ops)
}

#[inline(never)]
fn measured_tag_check_fault(k: &mut Kernel, ops: &[Op]) -> Vec<Reply> {
    run_all(k, ops)
}

#[inline(never)]
fn measured_page_fault(k: &mut Kernel, ops: &[Op]) -> Vec<Reply> {
    run_all(k, ops)
}

#[inline(never)]
fn measured_tag_block_reservation(k: &mut Kernel, ops: &[Op]) -> Vec<Reply> {
    run_all(k, ops)
}

#[inline(never)]
fn measured_fuzz_step(config: &FuzzConfig) -> Result<bool, String> {
    let report = fuzz(config, &kernel_machine, &reference_machine).map_err(|e| e.to_string())?;
    Ok(black_box(report.passed()))
}

fn run_all(k: &mut Kernel, ops: &[Op]) -> Vec<Reply> {
    let mut replies = Vec::with_capacity(ops.len());
    for op in ops {
        replies.push(k.run(black_box(op)));
    }
    replies
}

fn kernel_machine(platform: &Platform) -> Result<Box<dyn Machine>, MachineUnavailable> {
    make_machine(MachineKind::Kernel, platform)
}

fn reference_machine(platform: &Platform) -> Result<Box<dyn Machine>, MachineUnavailable> {
    make_machine(MachineKind::Reference, platform)
}

/// A default machine with a populated 64 KiB `PROT_MTE` mapping whose
/// granules all carry `tag`.
fn tagged_mapping(tag: u8) -> (Kernel, Pid, TaggedPtr) {
    const LEN: u64 = 64 << 10;
    let (mut k, pid) = sync_process(&Platform::default());
    let prot = Prot {
        mte: true,
        ..Prot::READ_WRITE
    };
    let base = mmap(&mut k, pid, LEN, prot).with_tag(Tag::new(tag).expect("a 4-bit tag"));
    let set = Command::SetTag {
        ptr: base,
        len: LEN,
    };
    assert_eq!(run(&mut k, pid, set).outcome, Outcome::Ok);
    (k, pid, base)
}

/// `LOADS` 8-byte loads over the 64 KiB mapping (stride 72: a new granule
/// each time) with pointer tag `tag`.
fn loads(pid: Pid, base: TaggedPtr, tag: u8) -> Vec<Op> {
    let base = base.with_tag(Tag::new(tag).expect("a 4-bit tag"));
    (0..LOADS)
        .map(|i| Op::Process {
            pid,
            command: Command::Load {
                ptr: base
                    .checked_add((i * 72) % ((64 << 10) - 8))
                    .expect("in range"),
                size: AccessSize::from_bytes(8).expect("8 bytes"),
            },
        })
        .collect()
}

/// `FAULTS` 8-byte stores, `stride` bytes apart from `base`.
fn stores(pid: Pid, base: TaggedPtr, stride: u64) -> Vec<Op> {
    (0..FAULTS)
        .map(|i| Op::Process {
            pid,
            command: Command::Store {
                ptr: base.checked_add(i * stride).expect("in range"),
                size: AccessSize::from_bytes(8).expect("8 bytes"),
                value: 0x5a,
            },
        })
        .collect()
}
