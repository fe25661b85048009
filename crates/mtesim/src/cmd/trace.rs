//! `mtesim trace info FILE [--json]`: what a trace holds (header and totals),
//! after reading and checking all of it (`docs/trace-format.md`).
//!
//! Exit status 0, or 2 when the file cannot be read or is not a valid trace
//! (the message names the byte offset of the problem).

use std::fs::File;
use std::io::BufReader;
use std::path::PathBuf;
use std::process::ExitCode;

use serde_json::json;
use trace::{AccessKind, Event, Header, Totals};

use super::{fail, print_stdout};

#[derive(clap::Args, Debug)]
pub struct Args {
    #[command(subcommand)]
    pub what: What,
}

#[derive(clap::Subcommand, Debug)]
pub enum What {
    /// Print a trace's header and totals.
    Info(InfoArgs),
}

#[derive(clap::Args, Debug)]
pub struct InfoArgs {
    pub file: PathBuf,
    /// Print a JSON object instead of text.
    #[arg(long)]
    pub json: bool,
}

pub fn run(args: &Args) -> ExitCode {
    match &args.what {
        What::Info(info) => run_info(info),
    }
}

fn run_info(args: &InfoArgs) -> ExitCode {
    let file = match File::open(&args.file) {
        Ok(file) => file,
        Err(e) => return fail(format_args!("{}: {e}", args.file.display())),
    };
    let file_bytes = file.metadata().map(|m| m.len()).unwrap_or(0);
    let (header, totals) = match trace::scan(BufReader::with_capacity(1 << 20, file)) {
        Ok(scanned) => scanned,
        Err(e) => return fail(format_args!("{}: {e}", args.file.display())),
    };
    let output = if args.json {
        let mut text = serde_json::to_string_pretty(&to_json(&header, &totals, file_bytes))
            .unwrap_or_else(|e| panic!("BUG: a JSON value failed to serialise: {e}"));
        text.push('\n');
        text
    } else {
        to_text(&header, &totals, file_bytes)
    };
    print_stdout(&output)
}

/// Uncompressed record bytes per file byte.
fn ratio(totals: &Totals, file_bytes: u64) -> f64 {
    totals.raw_bytes as f64 / file_bytes.max(1) as f64
}

fn to_text(header: &Header, t: &Totals, file_bytes: u64) -> String {
    let p = &header.provenance;
    let mut rows: Vec<(String, String)> = vec![
        ("command".into(), header.command.join(" ")),
        ("recorded by".into(), p.recorder.clone()),
        ("valgrind".into(), p.valgrind.clone()),
        ("host".into(), p.host.clone()),
        ("date".into(), p.date.clone()),
        ("exit".into(), t.exit.to_string()),
        ("data accesses".into(), t.access_count().to_string()),
    ];
    for (kind, label) in AccessKind::ALL
        .into_iter()
        .zip(["loads", "stores", "modifies"])
    {
        rows.push((format!("  {label}"), t.accesses[kind as usize].to_string()));
    }
    rows.push(("bytes accessed".into(), t.access_bytes.to_string()));
    rows.push(("filtered accesses".into(), t.filtered_accesses.to_string()));
    rows.push(("instructions".into(), t.instructions.to_string()));
    rows.push(("events".into(), t.event_count().to_string()));
    for (i, name) in Event::KINDS.iter().enumerate() {
        if t.events[i] > 0 {
            rows.push((format!("  {name}"), t.events[i].to_string()));
        }
    }
    rows.push(("frames".into(), t.frames.to_string()));
    rows.push(("record bytes".into(), t.raw_bytes.to_string()));
    rows.push(("file bytes".into(), file_bytes.to_string()));
    rows.push((
        "compression".into(),
        format!(
            "{:.1}x ({:.2} file bytes per access)",
            ratio(t, file_bytes),
            file_bytes as f64 / t.access_count().max(1) as f64
        ),
    ));
    let width = rows.iter().map(|(k, _)| k.len()).max().unwrap_or(0);
    let mut out = String::new();
    for (key, value) in rows {
        out.push_str(format!("{key:<width$}  {value}").trim_end());
        out.push('\n');
    }
    out
}

fn to_json(header: &Header, t: &Totals, file_bytes: u64) -> serde_json::Value {
    let p = &header.provenance;
    let mut events = serde_json::Map::new();
    for (i, name) in Event::KINDS.iter().enumerate() {
        events.insert((*name).to_owned(), json!(t.events[i]));
    }
    json!({
        "command": header.command,
        "recorder": p.recorder,
        "valgrind": p.valgrind,
        "host": p.host,
        "date": p.date,
        "exit": t.exit.to_string(),
        "accesses": t.access_count(),
        "loads": t.accesses[0],
        "stores": t.accesses[1],
        "modifies": t.accesses[2],
        "access_bytes": t.access_bytes,
        "filtered_accesses": t.filtered_accesses,
        "instructions": t.instructions,
        "events": events,
        "frames": t.frames,
        "record_bytes": t.raw_bytes,
        "file_bytes": file_bytes,
        "compression_ratio": ratio(t, file_bytes),
    })
}
