//! Recording a real program into an mtesim trace (`docs/workloads.md`).
//!
//! [`record`] runs the program under Valgrind's lackey
//! (`--tool=lackey --trace-mem=yes --log-fd=A`) with the shim of
//! `shim/mte_shim.c` preloaded and told to write to descriptor `B`; `A`
//! and `B` are two descriptors of one pipe, so lackey's access lines and the
//! shim's allocation lines arrive interleaved in program order (Valgrind
//! moves its log descriptor out of the program's reach, hence the second
//! one). The text is parsed as it streams ([`lackey::LackeyParser`]) and
//! only the compact trace is written: lackey prints about a million lines a
//! second, gigabytes for a short run, which never touch the disk.
//!
//! The shim is compiled by this crate's build script and embedded in the
//! binary; it is written to a temporary directory for the run.

pub mod lackey;
mod provenance;

use std::ffi::OsString;
use std::fs::File;
use std::io::{self, BufRead, BufReader, BufWriter};
use std::os::fd::AsRawFd;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant, SystemTime};

use thiserror::Error;
use trace::{ExitStatus, Header, Provenance, Totals, TraceWriter};

pub use lackey::{LackeyParser, ParseSummary};
pub use provenance::{host_description, rfc3339_utc};

/// The shim, built by `build.rs`.
static SHIM: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/libmtesim_shim.so"));

/// What to record and where.
#[derive(Clone, Debug)]
pub struct RecordOptions {
    /// The program and its arguments.
    pub command: Vec<OsString>,
    pub output: PathBuf,
    /// zstd level of the trace's frames.
    pub level: i32,
    /// The recorder's name and version, for the header.
    pub recorder: String,
}

/// A finished recording.
#[derive(Clone, Debug)]
pub struct Recording {
    pub totals: Totals,
    pub parse: ParseSummary,
    /// Bytes of the trace file.
    pub file_bytes: u64,
    pub elapsed: Duration,
}

#[derive(Debug, Error)]
pub enum RecordError {
    #[error(
        "valgrind is not installed (it runs the program and reports its memory accesses); \
         install it, for example with `apt-get install valgrind`, and try again"
    )]
    ValgrindMissing,
    #[error("cannot run valgrind: {0}")]
    Valgrind(io::Error),
    #[error("valgrind did not start the program ({0}); its own message is above")]
    NotStarted(String),
    #[error("no program to record")]
    NoCommand,
    #[error("{path}: {source}")]
    Output { path: PathBuf, source: io::Error },
    #[error("{0}")]
    Io(#[from] io::Error),
}

/// Valgrind's version (`valgrind-3.19.0`), or why it cannot be run.
pub fn valgrind_version() -> Result<String, RecordError> {
    match Command::new("valgrind").arg("--version").output() {
        Ok(out) if out.status.success() => {
            Ok(String::from_utf8_lossy(&out.stdout).trim().to_owned())
        }
        Ok(out) => Err(RecordError::Valgrind(io::Error::other(format!(
            "`valgrind --version` failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        )))),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Err(RecordError::ValgrindMissing),
        Err(e) => Err(RecordError::Valgrind(e)),
    }
}

/// Records `options.command` into `options.output`. The program's standard
/// input, output and error are the caller's. The trace is written even when
/// the program fails (its exit status is in the totals); it is removed when
/// the recording itself fails.
pub fn record(options: &RecordOptions) -> Result<Recording, RecordError> {
    let result = record_inner(options);
    if result.is_err() {
        let _ = std::fs::remove_file(&options.output);
    }
    result
}

fn record_inner(options: &RecordOptions) -> Result<Recording, RecordError> {
    let (program, args) = options
        .command
        .split_first()
        .ok_or(RecordError::NoCommand)?;
    let valgrind = valgrind_version()?;
    let started = Instant::now();
    let header = Header {
        command: options
            .command
            .iter()
            .map(|a| a.to_string_lossy().into_owned())
            .collect(),
        provenance: Provenance {
            recorder: options.recorder.clone(),
            valgrind,
            host: host_description(),
            date: rfc3339_utc(SystemTime::now()),
        },
    };
    let output_err = |source| RecordError::Output {
        path: options.output.clone(),
        source,
    };
    let file = File::create(&options.output).map_err(output_err)?;
    let writer = TraceWriter::new(
        BufWriter::with_capacity(1 << 20, file),
        &header,
        options.level,
    )
    .map_err(output_err)?;

    let shim_dir = tempfile::Builder::new().prefix("mtesim-shim-").tempdir()?;
    let shim = shim_dir.path().join("libmtesim_shim.so");
    std::fs::write(&shim, SHIM)?;

    let (pipe_reader, pipe_writer) = io::pipe()?;
    // A larger pipe lets lackey run ahead of the parser instead of waiting
    // for it every few lines; the default (64 KiB) is kept if Linux refuses.
    let _ = rustix::pipe::fcntl_setpipe_size(&pipe_writer, 1 << 20);
    // Two inheritable descriptors of the pipe's write end: one for lackey's
    // log, one for the shim.
    let log_fd = inheritable_dup(&pipe_writer)?;
    let shim_fd = inheritable_dup(&pipe_writer)?;
    drop(pipe_writer);
    let mut child = Command::new("valgrind")
        .arg("--tool=lackey")
        .arg("--trace-mem=yes")
        .arg(format!("--log-fd={}", log_fd.as_raw_fd()))
        .arg("--")
        .arg(program)
        .args(args)
        .env("LD_PRELOAD", preload(&shim))
        .env("MTESIM_SHIM_FD", shim_fd.as_raw_fd().to_string())
        .stdin(Stdio::inherit())
        .stdout(Stdio::inherit())
        .stderr(Stdio::inherit())
        .spawn()
        .map_err(RecordError::Valgrind)?;
    // Only the child writes now: the pipe reads end of file when it exits.
    drop(log_fd);
    drop(shim_fd);

    let mut parser = LackeyParser::new(writer);
    let streamed = stream_lines(pipe_reader, &mut parser);
    let status = child.wait()?;
    streamed.map_err(output_err)?;
    let (writer, parse) = parser.finish();
    let exit = match (status.code(), status.signal()) {
        (Some(code), _) => ExitStatus::Exited(code),
        (None, Some(signal)) => ExitStatus::Signalled(signal),
        (None, None) => ExitStatus::Unknown,
    };
    if !parse.started {
        return Err(RecordError::NotStarted(exit.to_string()));
    }
    let (totals, out) = writer.finish(exit).map_err(output_err)?;
    let file = out.into_inner().map_err(|e| output_err(e.into_error()))?;
    file.sync_all().map_err(output_err)?;
    let file_bytes = file.metadata().map_err(output_err)?.len();
    Ok(Recording {
        totals,
        parse,
        file_bytes,
        elapsed: started.elapsed(),
    })
}

/// A duplicate of `fd` that a child inherits, numbered 10 or above so that
/// it can never take the place of a closed standard stream.
fn inheritable_dup(fd: &impl std::os::fd::AsFd) -> io::Result<std::os::fd::OwnedFd> {
    let dup = rustix::io::fcntl_dupfd_cloexec(fd, 10)?;
    rustix::io::fcntl_setfd(&dup, rustix::io::FdFlags::empty())?;
    Ok(dup)
}

/// `LD_PRELOAD` with the shim first, keeping what the caller preloads.
fn preload(shim: &Path) -> OsString {
    let mut value = shim.as_os_str().to_owned();
    if let Some(existing) = std::env::var_os("LD_PRELOAD").filter(|v| !v.is_empty()) {
        value.push(":");
        value.push(existing);
    }
    value
}

/// Feeds every line of `input` to the parser.
fn stream_lines(
    input: impl io::Read,
    parser: &mut LackeyParser<BufWriter<File>>,
) -> io::Result<()> {
    let mut input = BufReader::with_capacity(1 << 20, input);
    let mut line = Vec::with_capacity(256);
    loop {
        line.clear();
        if input.read_until(b'\n', &mut line)? == 0 {
            return Ok(());
        }
        let text = line.strip_suffix(b"\n").unwrap_or(&line);
        parser.line(text)?;
    }
}
