//! `mtesim replay TRACE [--set KEY=VALUE]... [--every N] [--json | --csv]`:
//! replay a recorded trace as one process of the simulated kernel
//! (`docs/workloads.md`, "Replaying").
//!
//! `--set` takes the keys of a scenario's `platform` line
//! (`docs/language.md` §5) and two of the replay's own: `tcf` (the
//! process's tag-check mode: `sync`, the default, `async`, `asymm`, `none`)
//! and `large` (the smallest allocation that gets its own mapping, `64K` by
//! default). A bad key or value exits with 2 and names the flag.
//!
//! Output on stdout: the summary as text (default) or one JSON object
//! (`--json`). With `--every N`, a time series instead: one point every `N`
//! data accesses and one at the end, as JSON lines (`--json`, the summary
//! object last) or CSV (`--csv`, tag check faults then described on
//! stderr); the series streams as the replay runs. A progress bar shows on
//! stderr when it is a terminal. Exit status 0 when the replay ran to the
//! end, whatever faults it found; 2 when the trace is unreadable or
//! malformed (the message names the byte offset), a `--set` is bad, or the
//! simulated machine cannot hold the program.

use std::fs::File;
use std::io::{BufReader, IsTerminal, Write};
use std::path::PathBuf;
use std::process::ExitCode;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use mte::CheckMode;
use platform::num::{Suffix, parse_u64};
use platform::{Platform, PlatformSpec};
use replay::{ReplayConfig, Sample, report};
use trace::TraceReader;

use super::fail;

#[derive(clap::Args, Debug)]
pub struct Args {
    /// The trace to replay (from `mtesim record`).
    pub trace: PathBuf,
    /// A platform key (`memory=256M`, `tag-storage=static`, ...), or the
    /// replay's `tcf=sync|async|asymm|none` and `large=SIZE`.
    #[arg(long = "set", value_name = "KEY=VALUE")]
    pub set: Vec<String>,
    /// Print a time series point every N data accesses (needs --json or --csv).
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..))]
    pub every: Option<u64>,
    /// JSON: one object, or JSON lines with --every.
    #[arg(long, conflicts_with = "csv")]
    pub json: bool,
    /// CSV of the time series (or of the end state alone).
    #[arg(long)]
    pub csv: bool,
    /// Replace entries of the cost model's table (TOML, `entry = cycles`;
    /// docs/cost-model.md): the `cost.*` counters follow it.
    #[arg(long, value_name = "FILE")]
    pub cost: Option<PathBuf>,
}

/// Builds the replay's configuration from the `--set` flags.
pub fn config(sets: &[String]) -> Result<ReplayConfig, String> {
    let mut spec = PlatformSpec::default();
    let mut tcf = CheckMode::Sync;
    let mut large = replay::DEFAULT_LARGE;
    for set in sets {
        let (key, value) = set
            .split_once('=')
            .ok_or_else(|| format!("--set {set}: expected KEY=VALUE"))?;
        match key {
            "tcf" => {
                tcf = match value {
                    "sync" => CheckMode::Sync,
                    "async" => CheckMode::Async,
                    "asymm" => CheckMode::Asymm,
                    "none" => CheckMode::None,
                    _ => {
                        return Err(format!(
                            "--set {set}: `tcf`: expected `sync`, `async`, `asymm` or `none`"
                        ));
                    }
                }
            }
            "large" => {
                large = parse_u64(value, Suffix::Allowed)
                    .map_err(|e| format!("--set {set}: `large`: {e}"))?;
            }
            _ => spec
                .set_key(key, value)
                .map_err(|e| format!("--set {set}: {e}"))?,
        }
    }
    let platform = Platform::from_spec(&spec).map_err(|e| format!("--set: {e}"))?;
    let mut config = ReplayConfig::new(platform);
    config.tcf = tcf;
    config.large = large;
    Ok(config)
}

pub fn run(args: &Args) -> ExitCode {
    let mut config = match config(&args.set) {
        Ok(config) => config,
        Err(message) => return fail(message),
    };
    match super::cost_table(args.cost.as_deref()) {
        Ok(cost) => config.platform.set_cost(cost),
        Err(code) => return code,
    }
    if args.every.is_some() && !args.json && !args.csv {
        return fail("--every: a time series needs --json or --csv");
    }
    let name = args.trace.display().to_string();
    let file = match File::open(&args.trace) {
        Ok(file) => file,
        Err(e) => return fail(format_args!("{name}: {e}")),
    };
    let file_bytes = file.metadata().map(|m| m.len()).unwrap_or(0);
    let mut reader = match TraceReader::new(BufReader::with_capacity(1 << 20, file)) {
        Ok(reader) => reader,
        Err(e) => return fail(format_args!("{name}: {e}")),
    };
    let header = reader.header().clone();
    let bar = progress_bar(file_bytes);
    let mut stdout = std::io::stdout().lock();
    let mut csv_started = false;
    let mut last_sample = None;
    let mut write_error = None;
    let mut emit = |sample: &Sample, out: &mut dyn Write| {
        let line = if args.json {
            report::sample_json(sample).to_string()
        } else {
            let mut line = String::new();
            if !csv_started {
                csv_started = true;
                line.push_str(&report::csv_header(sample));
                line.push('\n');
            }
            line.push_str(&report::csv_row(sample));
            line
        };
        if let Err(e) = writeln!(out, "{line}")
            && write_error.is_none()
        {
            write_error = Some(e);
        }
    };
    let every = args.every.unwrap_or(0);
    let result = replay::replay(
        &mut reader,
        &config,
        every,
        |sample| {
            emit(sample, &mut stdout);
            last_sample = Some(sample.accesses);
        },
        |bytes| bar.set_position(bytes),
    );
    bar.finish_and_clear();
    let summary = match result {
        Ok(summary) => summary,
        Err(e) => return fail(format_args!("{name}: {e}")),
    };
    let output = if every > 0 || args.csv {
        // The end point, unless the last sample already was the end.
        if last_sample != Some(summary.end.accesses) || every == 0 {
            emit(&summary.end, &mut stdout);
        }
        if args.json {
            report::json(&summary, &header, &name).to_string() + "\n"
        } else {
            let mut faults = String::new();
            for fault in &summary.faults {
                faults.push_str(&report::fault_text(fault));
                faults.push('\n');
            }
            let _ = std::io::stderr().lock().write_all(faults.as_bytes());
            String::new()
        }
    } else if args.json {
        let mut text = serde_json::to_string_pretty(&report::json(&summary, &header, &name))
            .unwrap_or_else(|e| panic!("BUG: a JSON value failed to serialise: {e}"));
        text.push('\n');
        text
    } else {
        report::text(&summary, &header, &name)
    };
    let written = stdout
        .write_all(output.as_bytes())
        .and_then(|()| stdout.flush());
    match write_error.map_or(written, Err) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => ExitCode::SUCCESS,
        Err(e) => fail(format_args!("cannot write the output: {e}")),
    }
}

fn progress_bar(bytes: u64) -> ProgressBar {
    if !std::io::stderr().is_terminal() {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::with_draw_target(Some(bytes), ProgressDrawTarget::stderr());
    if let Ok(style) =
        ProgressStyle::with_template("{bar:40} {bytes}/{total_bytes} of the trace {elapsed}")
    {
        bar.set_style(style);
    }
    bar
}
