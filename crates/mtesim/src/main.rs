//! `mtesim`: the command-line tool.
//!
//! Each subcommand lives in its own module under `cmd/` with its `clap`
//! arguments and a `run` that returns the exit status. Exit statuses follow
//! `docs/language.md`, "Running": 0 success, 1 an
//! expectation failed, 2 an input cannot be read or is malformed (clap's
//! own usage errors also exit with 2). The tool never panics on input.

mod cmd;

use clap::{Parser, Subcommand};
use std::process::ExitCode;

/// An executable model of an Arm MTE machine with dynamically managed tag storage.
#[derive(Parser, Debug)]
#[command(name = "mtesim", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Print the machine a platform file describes (the default machine
    /// without FILE).
    Platform(cmd::platform::Args),
    /// Run scenarios (.mte files), each on a fresh machine, and check what
    /// they expect.
    Run(cmd::run::Args),
    /// Run scenarios under many interleavings of their parallel blocks
    /// (random, PCT, exhaustive or preemption-bounded search) and print the
    /// first failing schedule with the command that replays it.
    Explore(cmd::explore::Args),
    /// Measure the tool's throughput.
    Bench(cmd::bench::Args),
    /// Differential testing: random programs on the machine under test and
    /// the reference model in lockstep; a failure is shrunk to a .mte file.
    Fuzz(cmd::fuzz::Args),
    /// Record a program's memory accesses and allocation calls into a trace
    /// (runs it under Valgrind).
    Record(cmd::record::Args),
    /// Replay a recorded trace on the simulated machine and report tag
    /// check faults and counters.
    Replay(cmd::replay::Args),
    /// Inspect trace files.
    Trace(cmd::trace::Args),
    /// Turn a scenario into the C program a real arm64 Linux kernel runs
    /// (the RFC v3 reference harness, tools/rfc-v3/).
    ExportC(cmd::export_c::Args),
    /// Run traces and scenarios under several designs and compare them
    /// side by side (table, JSON, CSV, HTML report with plots).
    Compare(cmd::compare::Args),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Platform(args) => cmd::platform::run(&args),
        Command::Run(args) => cmd::run::run(&args),
        Command::Explore(args) => cmd::explore::run(&args),
        Command::Bench(args) => cmd::bench::run(&args),
        Command::Fuzz(args) => cmd::fuzz::run(&args),
        Command::Record(args) => cmd::record::run(&args),
        Command::Replay(args) => cmd::replay::run(&args),
        Command::Trace(args) => cmd::trace::run(&args),
        Command::ExportC(args) => cmd::export_c::run(&args),
        Command::Compare(args) => cmd::compare::run(&args),
    }
}
