//! `mtesim bench trace [--lines N] [--repeat R] [--machine kernel|reference]
//! [--pattern stride|local]`: how fast a recorded trace runs, against a
//! baseline of reading it;
//! `mtesim bench scale [--memory SIZE] [--pages N]`: host memory per page of
//! a large machine (resident set after boot and after touching pages;
//! see `bench_scale`);
//! `mtesim bench replay [--accesses N] [--objects N]`: a binary replay of
//! any length in bounded memory ([`super::bench_replay`]).
//!
//! Writes a synthetic trace of `N` lines ([`scenario::bench::synthetic_trace`]:
//! `spawn`, one `mmap` at a fixed address, then 8-byte stores and loads at
//! raw tagged addresses, alternating; `--pattern` orders the addresses, see
//! [`scenario::bench::TracePattern`]) to a temporary file, then times these
//! stages, each from the file on disk but the second (best of `R` runs):
//!
//! 1. baseline: read the file, check it is UTF-8, count its lines;
//! 2. the trace's loads and stores alone on a 16 MiB array
//!    ([`scenario::bench::walk_baseline`]: no text, no machine), the memory
//!    traffic any replay of this trace pays;
//! 3. read and parse every statement (the streaming [`lang::Statements`]);
//! 4. read and parse as `mtesim run` reads a trace: plain access lines as
//!    [`lang::AccessLine`]s ([`lang::Statements::next_access`]), with no
//!    statement built for them;
//! 5. read, parse, lower and run every statement through
//!    [`scenario::run_source`], the path `mtesim run` takes, on a flat byte
//!    store ([`scenario::bench::FlatMemory`]: the runner's own cost);
//! 6. the same on the machine `--machine` names (as for `mtesim run`: the
//!    simulated kernel by default, or the reference model).
//!
//! It prints each stage's time, lines per second and its cost relative to
//! the baseline. Times are the thread's CPU time where Linux reports it
//! (`/proc/thread-self/schedstat`): wall-clock rates on a loaded machine
//! measure the other processes.
//!
//! Exit status 0, or 2 when the trace cannot be written or read, or the
//! machine cannot be built (a benchmark has no expectations to fail; a
//! trace that does not pass is a bug, reported with status 2 as well).

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use scenario::bench::{FlatMemory, TRACE_HEADER_LINES, TracePattern, synthetic_trace_of};
use scenario::machine::{MachineKind, make_machine};
use scenario::run::{FileResult, RunOptions};
use uapi::Machine;

use super::{fail, print_stdout};

#[derive(clap::Args, Debug)]
pub struct Args {
    #[command(subcommand)]
    pub what: What,
}

#[derive(clap::Subcommand, Debug)]
pub enum What {
    /// Time reading, parsing and running a synthetic load/store trace.
    Trace(TraceArgs),
    /// Host memory per page of a large simulated machine (`scale` below).
    Scale(ScaleArgs),
    /// Peak host memory of a binary trace replay as its length grows (the
    /// trace made while read: no file).
    Replay(super::bench_replay::ReplayArgs),
}

#[derive(clap::Args, Debug)]
pub struct ScaleArgs {
    /// Simulated DRAM, as the `platform` line's `memory=` key.
    #[arg(long, value_name = "SIZE", default_value = "64G")]
    pub memory: String,
    /// Pages of a `PROT_MTE` mapping to touch (at most half the memory).
    #[arg(long, value_name = "N", default_value_t = 1_000_000)]
    pub pages: u64,
}

#[derive(clap::Args, Debug)]
pub struct TraceArgs {
    /// Lines in the trace (at least 3).
    #[arg(long, value_name = "N", default_value_t = 10_000_000)]
    pub lines: usize,
    /// Runs of each stage; the best is kept.
    #[arg(long, value_name = "R", default_value_t = 1)]
    pub repeat: u32,
    /// The machine of the last stage, as for `mtesim run`.
    #[arg(long, value_name = "KIND", default_value = "kernel", value_parser = super::run::parse_machine)]
    pub machine: MachineKind,
    /// The order of the trace's addresses: `stride` (a new page every
    /// line, every cache misses) or `local` (a 16-page working set and a
    /// sequential walk, as a program's recording has them).
    #[arg(long, value_name = "PATTERN", default_value = "stride", value_parser = parse_pattern)]
    pub pattern: TracePattern,
}

fn parse_pattern(name: &str) -> Result<TracePattern, String> {
    TracePattern::from_name(name)
        .ok_or_else(|| format!("`{name}`: the patterns are `stride` and `local`"))
}

pub fn run(args: &Args) -> ExitCode {
    match &args.what {
        What::Trace(trace) => match bench_trace(trace) {
            Ok(report) => print_stdout(&report),
            Err(message) => fail(message),
        },
        What::Scale(scale) => match bench_scale(scale) {
            Ok(report) => print_stdout(&report),
            Err(message) => fail(message),
        },
        What::Replay(replay) => match super::bench_replay::bench_replay(replay) {
            Ok(report) => print_stdout(&report),
            Err(message) => fail(message),
        },
    }
}

/// This process's resident set (`VmRSS` of `/proc/self/status`), in bytes.
fn resident_bytes() -> Result<u64, String> {
    status_bytes("VmRSS")
}

/// A figure of `/proc/self/status` given in kB (`VmRSS`, the resident set;
/// `VmHWM`, its peak so far), in bytes.
pub(super) fn status_bytes(field: &str) -> Result<u64, String> {
    let status = std::fs::read_to_string("/proc/self/status")
        .map_err(|e| format!("/proc/self/status: {e} (the scale figures need Linux)"))?;
    status
        .lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|v| v.trim().strip_suffix("kB"))
        .and_then(|kb| kb.trim().parse::<u64>().ok())
        .map(|kb| kb * 1024)
        .ok_or_else(|| format!("/proc/self/status has no {field} line"))
}

/// `mtesim bench scale`: boots a machine of `--memory`, maps `--pages`
/// pages `PROT_MTE`, touches each with a store of zero (the page's frame,
/// page-table entry, rmap and tag storage, but no content buffer: zeros
/// allocate none), then with a non-zero store (its 4 KiB buffer), and
/// reports the resident set at each point as bytes per page.
fn bench_scale(args: &ScaleArgs) -> Result<String, String> {
    use mte::TaggedPtr;
    use uapi::{AccessSize, Bound, Command, MapFlags, Op, Outcome, Prot};

    let mut spec = platform::PlatformSpec::default();
    spec.set_key("memory", &args.memory)
        .map_err(|e| format!("--memory {}: {e}", args.memory))?;
    let platform = platform::Platform::from_spec(&spec).map_err(|e| e.to_string())?;
    let page = platform.page_size();
    let ram_pages = spec.memory / page;
    if args.pages == 0 || args.pages > ram_pages / 2 {
        return Err(format!(
            "--pages {}: between 1 and half the machine's {ram_pages} pages",
            args.pages
        ));
    }
    let before = resident_bytes()?;
    let mut machine = make_machine(MachineKind::Kernel, &platform).map_err(|e| e.to_string())?;
    let booted = resident_bytes()?;
    let Some(Bound::Process(pid)) = machine.run(&Op::Spawn).bound else {
        return Err("BUG: spawn bound no process".to_owned());
    };
    let mmap = Command::Mmap {
        len: args.pages * page,
        prot: Prot {
            mte: true,
            ..Prot::READ_WRITE
        },
        flags: MapFlags::default(),
    };
    let reply = machine.run(&Op::Process { pid, command: mmap });
    let Some(Bound::Pointer(base)) = reply.bound else {
        return Err(format!("mmap of {} pages: {:?}", args.pages, reply.outcome));
    };
    let mut touch = |value: u128| -> Result<u64, String> {
        for i in 0..args.pages {
            let ptr: TaggedPtr = base
                .checked_add(i * page)
                .map_err(|e| format!("BUG: page {i}: {e}"))?;
            let store = Command::Store {
                ptr,
                size: AccessSize::B8,
                value,
            };
            let outcome = machine
                .run(&Op::Process {
                    pid,
                    command: store,
                })
                .outcome;
            if outcome != Outcome::Ok {
                return Err(format!("store to page {i}: {outcome:?}"));
            }
        }
        resident_bytes()
    };
    let metadata = touch(0)?;
    let data = touch(1)?;
    let per = |bytes: u64, pages: u64| bytes as f64 / pages as f64;
    let mut out = String::new();
    let _ = writeln!(
        out,
        "machine: memory={} ({ram_pages} pages of {page} bytes); {} pages touched",
        args.memory, args.pages
    );
    let _ = writeln!(
        out,
        "boot:                       {:>8.1} MiB resident, {:>8.3} bytes per simulated page",
        (booted - before) as f64 / f64::from(1 << 20),
        per(booted.saturating_sub(before), ram_pages)
    );
    let _ = writeln!(
        out,
        "touched (frame, PTE, tags): {:>8.1} MiB resident, {:>8.1} bytes per touched page",
        metadata.saturating_sub(booted) as f64 / f64::from(1 << 20),
        per(metadata.saturating_sub(booted), args.pages)
    );
    let _ = writeln!(
        out,
        "with data (non-zero store): {:>8.1} MiB resident, {:>8.1} bytes per touched page",
        data.saturating_sub(booted) as f64 / f64::from(1 << 20),
        per(data.saturating_sub(booted), args.pages)
    );
    Ok(out)
}

/// Removes the trace file when the measurement ends, however it ends.
struct TempFile(PathBuf);

impl Drop for TempFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// One stage's best time and the lines it saw.
struct Stage {
    name: &'static str,
    time: Duration,
}

fn bench_trace(args: &TraceArgs) -> Result<String, String> {
    let accesses = args
        .lines
        .checked_sub(TRACE_HEADER_LINES)
        .filter(|&n| n > 0)
        .ok_or_else(|| format!("--lines {}: a trace needs at least 3 lines", args.lines))?;
    let repeat = args.repeat.max(1);
    let path = std::env::temp_dir().join(format!("mtesim-bench-trace-{}.mte", std::process::id()));
    let trace = synthetic_trace_of(args.pattern, accesses);
    let bytes = trace.len();
    std::fs::write(&path, &trace).map_err(|e| format!("{}: {e}", path.display()))?;
    drop(trace);
    let file = TempFile(path);
    let lines = args.lines as u64;

    let baseline = best(repeat, || {
        let src = read(&file.0)?;
        let text = std::str::from_utf8(&src).map_err(|e| format!("trace: {e}"))?;
        check_lines(text.lines().count() as u64, lines)
    })?;
    let walk = best(repeat, || {
        std::hint::black_box(scenario::bench::walk_baseline_of(args.pattern, accesses));
        Ok(())
    })?;
    let parse = best(repeat, || {
        let src = read(&file.0)?;
        let mut count = 0u64;
        for stmt in lang::Statements::new("trace.mte", &src) {
            stmt.map_err(|e| e.to_string())?;
            count += 1;
        }
        check_lines(count, lines)
    })?;
    // As `mtesim run` reads a trace: plain access lines as `AccessLine`s,
    // no statement built for them.
    let streamed = best(repeat, || {
        let src = read(&file.0)?;
        let mut stmts = lang::Statements::new("trace.mte", &src);
        let mut count = 0u64;
        loop {
            if let Some(access) = stmts.next_access() {
                std::hint::black_box(access);
            } else {
                match stmts.next() {
                    None => break,
                    Some(stmt) => {
                        std::hint::black_box(stmt.map_err(|e| e.to_string())?);
                    }
                }
            }
            count += 1;
        }
        check_lines(count, lines)
    })?;
    let run_on = |flat: bool| {
        best(repeat, || {
            let src = read(&file.0)?;
            let result = scenario::run_source("trace.mte", &src, &RunOptions::default(), |p| {
                if flat {
                    Ok(Box::new(FlatMemory::new()) as Box<dyn Machine>)
                } else {
                    make_machine(args.machine, p)
                }
            });
            match result {
                FileResult::Ran(report) if report.passed() => check_lines(report.commands, lines),
                FileResult::Ran(report) => Err(report.render("trace.mte", false)),
                FileResult::Malformed(e) => Err(e.to_string()),
                FileResult::CannotRun(why) => Err(format!("cannot run: {why}")),
            }
        })
    };
    let flat = run_on(true)?;
    let model = run_on(false)?;

    let stages = [
        Stage {
            name: "read + split lines (baseline)",
            time: baseline,
        },
        Stage {
            name: "the trace's memory walk alone",
            time: walk,
        },
        Stage {
            name: "read + parse",
            time: parse,
        },
        Stage {
            name: "read + parse (as run streams)",
            time: streamed,
        },
        Stage {
            name: "... + lower + run (flat)",
            time: flat,
        },
        Stage {
            name: "... + lower + run (machine)",
            time: model,
        },
    ];
    let mut out = String::new();
    let _ = writeln!(
        out,
        "trace: {lines} lines, {:.1} MiB, pattern `{}`; machine `{}`; best of {repeat}; {} time",
        bytes as f64 / (1 << 20) as f64,
        match args.pattern {
            TracePattern::Stride => "stride",
            TracePattern::Local => "local",
        },
        args.machine.name(),
        if thread_cpu_time().is_some() {
            "CPU"
        } else {
            "wall-clock"
        }
    );
    for stage in &stages {
        let seconds = stage.time.as_secs_f64().max(1e-9);
        let _ = writeln!(
            out,
            "{:<32} {:>9.3} s {:>9.2} M lines/s {:>7.1}x baseline",
            stage.name,
            seconds,
            lines as f64 / seconds / 1e6,
            seconds / baseline.as_secs_f64().max(1e-9)
        );
    }
    Ok(out)
}

fn read(path: &Path) -> Result<Vec<u8>, String> {
    std::fs::read(path).map_err(|e| format!("{}: {e}", path.display()))
}

/// The stage saw every line (commands for the run stage: every line of the
/// trace is one).
fn check_lines(seen: u64, lines: u64) -> Result<(), String> {
    if seen == lines {
        Ok(())
    } else {
        Err(format!("BUG: the stage saw {seen} of {lines} lines"))
    }
}

/// The shortest of `repeat` runs of `stage`: the CPU time of this thread
/// where Linux reports it (`/proc/thread-self/schedstat`, nanoseconds on a
/// CPU), so that the figure means something on a loaded machine; wall-clock
/// time elsewhere.
fn best(repeat: u32, mut stage: impl FnMut() -> Result<(), String>) -> Result<Duration, String> {
    let mut best = Duration::MAX;
    for _ in 0..repeat {
        let start = Instant::now();
        let cpu_start = thread_cpu_time();
        stage()?;
        let time = match (cpu_start, thread_cpu_time()) {
            (Some(from), Some(to)) if to > from => to - from,
            _ => start.elapsed(),
        };
        best = best.min(time);
    }
    Ok(best)
}

/// Time this thread has spent on a CPU, if the kernel reports it.
pub(super) fn thread_cpu_time() -> Option<Duration> {
    let stat = std::fs::read_to_string("/proc/thread-self/schedstat").ok()?;
    let nanos = stat.split_whitespace().next()?.parse().ok()?;
    Some(Duration::from_nanos(nanos))
}
