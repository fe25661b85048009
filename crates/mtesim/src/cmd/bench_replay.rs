//! `mtesim bench replay [--accesses N] [--objects N] [--set KEY=VALUE]...`:
//! a replay of any length in bounded memory (issue 13, "Scale").
//!
//! The binary trace is made while it is read
//! ([`replay::synthetic::Synthetic`]: `N` 8-byte loads and stores over
//! `--objects` heap blocks of 4 KiB), so a billion accesses need no 16 GiB
//! file; its bytes go through the decoder (`trace::TraceReader`) and the
//! replay loop (`replay::replay`) that `mtesim replay` uses, on the
//! simulated kernel configured by `--set` as for `mtesim replay`.
//!
//! Prints the process's peak resident set (`VmHWM` of `/proc/self/status`)
//! after every power of ten of accesses from 100,000 and at the end, its
//! growth over the run, and the rate in the thread's CPU time (generating
//! and compressing the trace included). Memory that stays flat while the
//! accesses grow a hundredfold is what "bounded" means here: it depends on
//! the pages touched (`--objects`), not on the length of the trace.
//!
//! Exit status 0; 2 when `--set` is bad, `/proc/self/status` cannot be
//! read (not Linux), or the replay fails (the machine cannot hold the
//! blocks: give it more with `--set memory=SIZE`).

use std::fmt::Write as _;
use std::time::Instant;

use replay::synthetic::{MAX_OBJECTS, OBJECT, Synthetic};
use trace::TraceReader;

use super::bench::{status_bytes, thread_cpu_time};
use super::compare::format_value;

/// The first access count whose peak resident set is printed; the next are
/// its multiples by ten.
const FIRST_CHECKPOINT: u64 = 100_000;

#[derive(clap::Args, Debug)]
pub struct ReplayArgs {
    /// Data accesses to replay.
    #[arg(long, value_name = "N", default_value_t = 100_000_000,
          value_parser = clap::value_parser!(u64).range(1..))]
    pub accesses: u64,
    /// Heap blocks of 4 KiB the accesses walk over: the pages touched.
    #[arg(long, value_name = "N", default_value_t = 16,
          value_parser = clap::value_parser!(u64).range(1..=MAX_OBJECTS))]
    pub objects: u64,
    /// As for `mtesim replay`: a platform key (`memory=1G`, ...), or the
    /// replay's `tcf=` and `large=`.
    #[arg(long = "set", value_name = "KEY=VALUE")]
    pub set: Vec<String>,
}

/// The peak resident set after some accesses.
struct Checkpoint {
    accesses: u64,
    peak: u64,
}

fn mib(bytes: u64) -> f64 {
    bytes as f64 / f64::from(1 << 20)
}

fn grouped(n: u64) -> String {
    format_value(n as f64, false)
}

pub fn bench_replay(args: &ReplayArgs) -> Result<String, String> {
    let config = super::replay::config(&args.set)?;
    let before = status_bytes("VmHWM")?;
    let source = Synthetic::new(args.objects, args.accesses)
        .map_err(|e| format!("--objects {}: {e}", args.objects))?;
    let mut reader =
        TraceReader::new(source).map_err(|e| format!("BUG: the synthetic trace: {e}"))?;
    let mut checkpoints = Vec::new();
    let mut unreadable = None;
    let mut next = FIRST_CHECKPOINT;
    let every = if args.accesses >= FIRST_CHECKPOINT {
        FIRST_CHECKPOINT
    } else {
        0
    };
    let (wall, cpu) = (Instant::now(), thread_cpu_time());
    let summary = replay::replay(
        &mut reader,
        &config,
        every,
        |sample| {
            if sample.accesses == next {
                next = next.saturating_mul(10);
                match status_bytes("VmHWM") {
                    Ok(peak) => checkpoints.push(Checkpoint {
                        accesses: sample.accesses,
                        peak,
                    }),
                    Err(e) => unreadable = Some(e),
                }
            }
        },
        |_| {},
    )
    .map_err(|e| format!("the replay: {e}"))?;
    let time = match (cpu, thread_cpu_time()) {
        (Some(from), Some(to)) if to > from => to - from,
        _ => wall.elapsed(),
    };
    if let Some(e) = unreadable {
        return Err(e);
    }
    if checkpoints.last().map(|c| c.accesses) != Some(args.accesses) {
        checkpoints.push(Checkpoint {
            accesses: args.accesses,
            peak: status_bytes("VmHWM")?,
        });
    }
    let replayed: u64 = summary.by_kind.iter().sum();
    let faults = summary.sync_faults + summary.async_faults + summary.other_faults;
    if replayed != args.accesses || faults != 0 {
        return Err(format!(
            "BUG: the synthetic replay made {replayed} of {} accesses with {faults} faults",
            args.accesses
        ));
    }

    let encoded = reader.totals().map_or(0, |t| t.raw_bytes);
    let mut out = String::new();
    let _ = writeln!(
        out,
        "replay: {} accesses over {} blocks of {} bytes ({} KiB touched), {} mode",
        grouped(args.accesses),
        args.objects,
        OBJECT,
        args.objects * OBJECT / 1024,
        summary.tcf,
    );
    let _ = writeln!(
        out,
        "trace: {:.1} MiB of records, {:.1} MiB compressed, made while read and never stored",
        mib(encoded),
        mib(reader.bytes_read())
    );
    let _ = writeln!(out, "{:>15}  {:>16}", "accesses", "peak RSS (VmHWM)");
    let _ = writeln!(out, "{:>15}  {:>12.1} MiB", "before boot", mib(before));
    for c in &checkpoints {
        let _ = writeln!(
            out,
            "{:>15}  {:>12.1} MiB",
            grouped(c.accesses),
            mib(c.peak)
        );
    }
    if let [first, .., last] = checkpoints.as_slice() {
        let _ = writeln!(
            out,
            "growth from {} accesses to the end: {} KiB",
            grouped(first.accesses),
            last.peak.saturating_sub(first.peak) / 1024
        );
    }
    let seconds = time.as_secs_f64().max(1e-9);
    let _ = writeln!(
        out,
        "{:.1} s {} time, {:.1} M accesses/s (making the trace included)",
        seconds,
        if cpu.is_some() { "CPU" } else { "wall-clock" },
        args.accesses as f64 / seconds / 1e6
    );
    Ok(out)
}
