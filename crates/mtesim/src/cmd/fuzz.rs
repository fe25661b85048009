//! `mtesim fuzz [--ops N] [--seed S] [--set tag-storage=DESIGN]
//! [--set mistake=NAMES] [--set thp-sizes=SIZES]
//! [--out FILE] [--machine kernel|reference] [--shard K/N]
//! [--parallel on|off|PERCENT] [--keep-going] [--shrink on|off]
//! [--overcommit off|PERCENT]`: differential
//! testing of the
//! machine under test against the reference model
//! ([`difftest`]).
//!
//! The generator draws every platform key itself (memory, block size, swap,
//! THP, ...) except the design, which `--set tag-storage=` chooses (the
//! default, `dynamic`, otherwise), the known mistakes (`--set mistake=`),
//! the per-CPU page lists (`--set pcp=on`, off otherwise), the buddy
//! allocator's free-list order (`--set free-list-order=linux`, `address`
//! otherwise) and the multi-size THP sizes (`--set thp-sizes=`, drawn
//! otherwise); `--set` of any other key is refused.
//!
//! Runs random programs of 100-300 steps under the design, in lockstep on
//! the machine under test (`--machine`, the kernel by default, built by
//! [`scenario::machine::make_machine`]) and the reference model, until `N`
//! steps have run or the first failure. A failure is shrunk and written to
//! `--out` (default `fuzz-failure.mte`) as a runnable scenario that fails
//! on the machine under test at the failing line; stdout then says what
//! failed, where the file is and how long it is.
//!
//! The last line of stdout is always `fuzz: N ops, D divergences, V
//! violations`. Exit status: 0 when both are 0, 1 otherwise, 2 when the
//! machine cannot be built or the reproducer cannot be written (message on
//! stderr). Deterministic for a seed: the same arguments print the same
//! lines and write the same file.
//!
//! `--shard K/N` runs the programs `k` with `k mod N = K` of the ones an
//! unsharded run draws (same seeds, same lengths, the same `N` ops in all),
//! so `N` shards together run what one run would (when no failure stops it
//! early); each shard's summary counts its own ops.
//!
//! `--parallel` (on by default) puts `parallel` blocks of 2-4 commands
//! into the programs; each block's replies must be explained by some
//! serial order of its commands on the reference (see [`difftest`]). A
//! failing program's reproducer then names the `--schedule` that replays
//! it.
//!
//! `--keep-going` goes on after a failure (each one counted; the first
//! one's reproducer is written), and `--shrink off` writes failing
//! programs unshrunk (cut after the failing step): together they run all
//! `N` ops whatever is found, which is how throughput is measured
//! (`docs/performance.md`).
//!
//! `--overcommit` sets the percent of programs generated to overcommit
//! memory (5 by default; see [`difftest`]).
//!
//! At the end, stderr has a `coverage:` line: how often the runs of the
//! machine under test reached direct reclaim, swap-out and swap-in, file
//! writeback and drops, and out of memory (summed over programs), and how
//! many programs were generated to overcommit memory.
//!
//! Panics of a machine are findings (counted as divergences), so the panic
//! hook is silenced while fuzzing: the shrinker reproduces a panic many
//! times and each message is in the report anyway.

use std::fmt::Write as _;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::PathBuf;
use std::process::ExitCode;

use difftest::{FuzzConfig, FuzzReport, fuzz};
use platform::num::{Suffix, parse_u64};
use platform::{Design, FreeListOrder, Mistakes, Platform, ThpSizes};
use scenario::machine::{MachineKind, make_machine};

use super::{fail, print_stdout};

#[derive(clap::Args, Debug)]
pub struct Args {
    /// Steps to run in total.
    #[arg(long, value_name = "N", default_value_t = 10_000, value_parser = parse_count)]
    pub ops: u64,
    /// Seed of the programs (decimal or 0x hex).
    #[arg(long, value_name = "S", default_value_t = 0, value_parser = parse_count)]
    pub seed: u64,
    /// `tag-storage=DESIGN` (the design of the generated platforms) or
    /// `mistake=NAMES` (known mistakes they switch on) or `thp-sizes=SIZES`
    /// (their multi-size THP sizes); the generator draws
    /// every other key.
    #[arg(long = "set", value_name = "KEY=VALUE", value_parser = parse_set)]
    pub set: Vec<FuzzSet>,
    /// Where to write the shrunk failing program.
    #[arg(long, value_name = "FILE", default_value = "fuzz-failure.mte")]
    pub out: PathBuf,
    /// The machine under test (the reference is always the reference model).
    #[arg(long, value_name = "KIND", default_value = "kernel", value_parser = parse_machine)]
    pub machine: MachineKind,
    /// Run only the programs of part K (from 0) of N: N runs with the same
    /// arguments and K = 0..N together run the programs of one run.
    #[arg(long, value_name = "K/N", value_parser = super::explore::parse_shard)]
    pub shard: Option<sched::Shard>,
    /// `parallel` blocks: `on` (the default), `off`, or the percent chance
    /// (0-100) that a step opens one.
    #[arg(long, value_name = "on|off|PERCENT", default_value = "on", value_parser = parse_parallel)]
    pub parallel: u32,
    /// Go on after a failure instead of stopping at the first.
    #[arg(long)]
    pub keep_going: bool,
    /// Shrink failing programs (`on`, the default) or write them as they
    /// failed (`off`).
    #[arg(long, value_name = "on|off", default_value = "on", value_parser = parse_on_off,
          action = clap::ArgAction::Set)]
    pub shrink: bool,
    /// Percent of programs that overcommit memory (0-100; `off` is 0).
    #[arg(long, value_name = "PERCENT", default_value_t = difftest::DEFAULT_OVERCOMMIT, value_parser = parse_percent)]
    pub overcommit: u32,
}

fn parse_percent(text: &str) -> Result<u32, String> {
    match text {
        "off" => Ok(0),
        _ => match parse_u64(text, Suffix::Forbidden) {
            Ok(p) if p <= 100 => Ok(p as u32),
            _ => Err(format!("`{text}` is not off or a percentage from 0 to 100")),
        },
    }
}

fn parse_on_off(text: &str) -> Result<bool, String> {
    match text {
        "on" => Ok(true),
        "off" => Ok(false),
        _ => Err(format!("`{text}` is not on or off")),
    }
}

fn parse_parallel(text: &str) -> Result<u32, String> {
    match text {
        "on" => Ok(difftest::DEFAULT_PARALLEL),
        "off" => Ok(0),
        _ => match parse_u64(text, Suffix::Forbidden) {
            Ok(p) if p <= 100 => Ok(p as u32),
            _ => Err(format!(
                "`{text}` is not on, off or a percentage from 0 to 100"
            )),
        },
    }
}

fn parse_count(text: &str) -> Result<u64, String> {
    parse_u64(text, Suffix::Forbidden).map_err(|e| e.to_string())
}

/// A key of the generated platforms that `--set` fixes.
#[derive(Clone, Copy, Debug)]
pub enum FuzzSet {
    Design(Design),
    Mistakes(Mistakes),
    Pcp(bool),
    FreeListOrder(FreeListOrder),
    ThpSizes(ThpSizes),
}

fn parse_set(text: &str) -> Result<FuzzSet, String> {
    let (key, value) = super::parse_set(text)?;
    match key.as_str() {
        "tag-storage" => Design::by_name(&value)
            .map(FuzzSet::Design)
            .ok_or_else(|| format!("BUG: `{value}` passed parse_set")),
        "mistake" => Mistakes::parse(&value)
            .map(FuzzSet::Mistakes)
            .map_err(|name| format!("BUG: `{name}` passed parse_set")),
        "pcp" => match value.as_str() {
            "on" => Ok(FuzzSet::Pcp(true)),
            "off" => Ok(FuzzSet::Pcp(false)),
            _ => Err(format!("`pcp`: expected `on` or `off`, found `{value}`")),
        },
        "free-list-order" => FreeListOrder::by_name(&value)
            .map(FuzzSet::FreeListOrder)
            .ok_or_else(|| format!("BUG: `{value}` passed parse_set")),
        "thp-sizes" => ThpSizes::parse(&value)
            .map(FuzzSet::ThpSizes)
            .map_err(|item| format!("BUG: `{item}` passed parse_set")),
        _ => Err(format!(
            "the fuzzer draws `{key}` itself; only `tag-storage`, `mistake`, `pcp`, `free-list-order` and `thp-sizes` can be set"
        )),
    }
}

fn parse_machine(text: &str) -> Result<MachineKind, String> {
    text.parse()
        .map_err(|e: scenario::machine::UnknownMachine| e.to_string())
}

pub fn run(args: &Args) -> ExitCode {
    // Refuse before fuzzing when the machine does not exist at all.
    if let Err(e) = make_machine(args.machine, &Platform::default()) {
        return fail(format_args!("mtesim fuzz: {e}"));
    }
    let kind = args.machine;
    let under_test = move |platform: &Platform| make_machine(kind, platform);
    let reference = |platform: &Platform| make_machine(MachineKind::Reference, platform);
    let mut design = Design::default();
    let mut mistakes = Mistakes::NONE;
    let mut pcp = false;
    let mut free_list_order = FreeListOrder::Address;
    let mut thp_sizes = None;
    for set in &args.set {
        match *set {
            FuzzSet::Design(d) => design = d,
            FuzzSet::Mistakes(m) => mistakes = m,
            FuzzSet::Pcp(on) => pcp = on,
            FuzzSet::FreeListOrder(order) => free_list_order = order,
            FuzzSet::ThpSizes(s) => thp_sizes = Some(s),
        }
    }
    let config = FuzzConfig {
        mistakes,
        pcp,
        free_list_order,
        thp_sizes,
        shard: args
            .shard
            .map_or((0, 1), |s| (u64::from(s.index), u64::from(s.count))),
        parallel: args.parallel,
        keep_going: args.keep_going,
        overcommit: args.overcommit,
        ..FuzzConfig::new(args.ops, args.seed, design)
    };
    let config = FuzzConfig {
        shrink: config.shrink.filter(|_| args.shrink),
        ..config
    };
    let hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(|_| {}));
    let result = catch_unwind(AssertUnwindSafe(|| fuzz(&config, &under_test, &reference)));
    std::panic::set_hook(hook);
    let report = match result {
        Ok(Ok(report)) => report,
        Ok(Err(e)) => return fail(format_args!("mtesim fuzz: {e}")),
        Err(payload) => {
            let message = payload
                .downcast_ref::<&str>()
                .map(|s| (*s).to_owned())
                .or_else(|| payload.downcast_ref::<String>().cloned())
                .unwrap_or_default();
            return fail(format_args!(
                "mtesim fuzz: BUG: the fuzzer panicked: {message}"
            ));
        }
    };
    let mut out = String::new();
    if let Some(found) = report.found.first()
        && let Err(e) = std::fs::write(&args.out, &found.reproducer)
    {
        return fail(format_args!("{}: cannot write: {e}", args.out.display()));
    }
    for (k, found) in report.found.iter().enumerate() {
        let _ = writeln!(
            out,
            "failure in program {}: {}",
            found.program, found.failure
        );
        if k > 0 {
            continue;
        }
        let how = match found.shrunk {
            Some(_) => format!("shrunk from {}", found.original.ops()),
            None => format!("not shrunk, of {}", found.original.ops()),
        };
        let _ = writeln!(
            out,
            "reproducer: {} ({} steps, {how})",
            args.out.display(),
            found.reproducer_len(),
        );
    }
    if report.blocks > 0 {
        // On stderr: stdout is the findings and the summary.
        eprintln!(
            "parallel: {} blocks, at most {} candidate reference states",
            report.blocks, report.max_candidates
        );
    }
    eprintln!("{}", report.coverage_line());
    let _ = writeln!(out, "{}", report.summary());
    let printed = print_stdout(&out);
    if printed != ExitCode::SUCCESS {
        return printed;
    }
    exit_status(&report)
}

fn exit_status(report: &FuzzReport) -> ExitCode {
    if report.passed() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    }
}
