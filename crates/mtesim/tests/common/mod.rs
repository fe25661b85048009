//! Running the `mtesim` binary as a user does, for the CLI tests: one copy
//! of the helpers every `cli_*` test file needs.
#![allow(dead_code)]

use serde_json::Value;
use std::path::Path;
use std::process::{Command, Output};

/// A scratch directory removed at the end of the test.
pub fn dir() -> tempfile::TempDir {
    tempfile::tempdir().expect("a temporary directory")
}

/// `mtesim ARGS...` run in `dir`.
pub fn mtesim_in(dir: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_mtesim"))
        .current_dir(dir)
        .args(args)
        .output()
        .expect("the mtesim binary runs")
}

/// `mtesim ARGS...` run in the crate's directory (for commands that read
/// no files of the test's own).
pub fn mtesim(args: &[&str]) -> Output {
    mtesim_in(Path::new(env!("CARGO_MANIFEST_DIR")), args)
}

pub fn stdout(out: &Output) -> &str {
    std::str::from_utf8(&out.stdout).expect("stdout is UTF-8")
}

pub fn stderr(out: &Output) -> &str {
    std::str::from_utf8(&out.stderr).expect("stderr is UTF-8")
}

/// Stdout parsed as one JSON document.
pub fn stdout_json(out: &Output) -> Value {
    serde_json::from_str(stdout(out)).unwrap_or_else(|e| panic!("{e}: {}", stdout(out)))
}
