//! `mtesim record [-o FILE] [--level N] -- PROGRAM [ARGS...]`: run a program
//! under Valgrind's lackey with the recording shim and write its trace
//! (`docs/workloads.md`, "Recording").
//!
//! The program's standard streams are the caller's. A summary goes to
//! stderr. Exit status: 0 when the program exited with 0; 1 when it failed
//! (the trace is kept, and the message gives the program's status); 2 when
//! Valgrind is missing (with how to install it), cannot start the program,
//! or the trace cannot be written (no trace is left behind then).

use std::ffi::OsString;
use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use record::{RecordOptions, record};
use trace::ExitStatus;

use super::fail;

#[derive(clap::Args, Debug)]
pub struct Args {
    /// The trace file to write.
    #[arg(short, long, value_name = "FILE", default_value = "mtesim.mtrace")]
    pub output: PathBuf,
    /// zstd compression level of the trace (1 to 22).
    #[arg(long, value_name = "N", default_value_t = trace::DEFAULT_LEVEL,
          value_parser = clap::value_parser!(i32).range(1..=22))]
    pub level: i32,
    /// The program to record and its arguments (after `--` if any of them
    /// starts with `-`).
    #[arg(
        required = true,
        trailing_var_arg = true,
        allow_hyphen_values = true,
        value_name = "PROGRAM [ARGS]..."
    )]
    pub command: Vec<OsString>,
}

pub fn run(args: &Args) -> ExitCode {
    let options = RecordOptions {
        command: args.command.clone(),
        output: args.output.clone(),
        level: args.level,
        recorder: format!("mtesim {}", env!("CARGO_PKG_VERSION")),
    };
    let recording = match record(&options) {
        Ok(recording) => recording,
        Err(e) => return fail(format_args!("mtesim record: {e}")),
    };
    let t = &recording.totals;
    let mut message = format!(
        "mtesim record: {}: {} data accesses, {} allocator and mapping calls, {} instructions; \
         {:.1} MiB in {:.1} s\n",
        args.output.display(),
        t.access_count(),
        t.event_count(),
        t.instructions,
        recording.file_bytes as f64 / f64::from(1 << 20),
        recording.elapsed.as_secs_f64()
    );
    if !recording.parse.shim_loaded {
        message.push_str(
            "mtesim record: warning: the shim did not load in the program (a static binary?): \
             the trace has no allocation calls\n",
        );
    }
    if recording.parse.unknown_lines > 0 {
        message.push_str(&format!(
            "mtesim record: warning: {} lines from valgrind were not understood, the first: {:?}\n",
            recording.parse.unknown_lines,
            recording.parse.first_unknown.as_deref().unwrap_or("")
        ));
    }
    let failed = t.exit != ExitStatus::Exited(0);
    if failed {
        message.push_str(&format!(
            "mtesim record: the program failed ({}); the trace is kept\n",
            t.exit
        ));
    }
    let _ = std::io::stderr().lock().write_all(message.as_bytes());
    if failed {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}
