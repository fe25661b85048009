//! The subcommands, one module each, and what they share: exit statuses and
//! the rule that a command refusing its input prints nothing on stdout
//! (`run` reports per file, and always ends stdout with its summary line).

pub mod bench;
pub mod bench_replay;
pub mod compare;
pub mod compare_report;
pub mod explore;
pub mod export_c;
pub mod fuzz;
pub mod platform;
pub mod record;
pub mod replay;
pub mod run;
pub mod trace;
pub mod trace_json;

use std::fmt::Display;
use std::io::Write;
use std::process::ExitCode;

/// Exit status of an input that cannot be read or is malformed.
pub const EXIT_INPUT: u8 = 2;

/// Prints a finished output on stdout; a command builds all of it first so
/// that an error leaves stdout empty.
pub fn print_stdout(output: &str) -> ExitCode {
    let mut stdout = std::io::stdout().lock();
    match stdout
        .write_all(output.as_bytes())
        .and_then(|()| stdout.flush())
    {
        Ok(()) => ExitCode::SUCCESS,
        // A closed pipe (`mtesim platform | head -1`) is the reader's choice,
        // not an error worth a message.
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => ExitCode::SUCCESS,
        Err(e) => fail(format_args!("cannot write the output: {e}")),
    }
}

/// Writes `text` on stderr as it is (nothing sensible is left to do if
/// stderr itself is gone).
pub fn eprint(text: &str) {
    if !text.is_empty() {
        let mut stderr = std::io::stderr().lock();
        let _ = stderr
            .write_all(text.as_bytes())
            .and_then(|()| stderr.flush());
    }
}

/// Reports an input error on stderr (the message carries its own
/// `file:line:column:` prefix) and gives the input-error exit status.
pub fn fail(message: impl Display) -> ExitCode {
    // Nothing sensible is left to do if stderr itself is gone.
    let _ = writeln!(std::io::stderr().lock(), "{message}");
    ExitCode::from(EXIT_INPUT)
}

/// A `--set KEY=VALUE` argument: a key of the scenario `platform` line and
/// a value it accepts (checked here, so that a bad one is a usage error
/// naming the flag before anything runs).
pub fn parse_set(text: &str) -> Result<(String, String), String> {
    let (key, value) = text
        .split_once('=')
        .ok_or_else(|| format!("expected KEY=VALUE, got `{text}`"))?;
    ::platform::PlatformSpec::default()
        .set_key(key, value)
        .map_err(|e| e.to_string())?;
    Ok((key.to_owned(), value.to_owned()))
}

/// The cost model's table: the defaults, with the entries of `--cost
/// FILE` replaced. A bad file is an input error (`file:line:column:`).
pub fn cost_table(path: Option<&std::path::Path>) -> Result<::platform::CostTable, ExitCode> {
    match path {
        None => Ok(::platform::CostTable::default()),
        Some(path) => {
            ::platform::CostTable::from_file(path).map_err(|e| fail(format_args!("--cost {e}")))
        }
    }
}

/// Runs `work` on `jobs` threads (rayon's default of one per core when
/// `None`), for the subcommands that handle files in parallel.
pub fn with_jobs<T: Send>(
    jobs: Option<std::num::NonZeroUsize>,
    work: impl FnOnce() -> T + Send,
) -> Result<T, ExitCode> {
    match jobs {
        None => Ok(work()),
        Some(jobs) => match rayon::ThreadPoolBuilder::new()
            .num_threads(jobs.get())
            .build()
        {
            Ok(pool) => Ok(pool.install(work)),
            Err(e) => Err(fail(format_args!("cannot start {jobs} threads: {e}"))),
        },
    }
}
