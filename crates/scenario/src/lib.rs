//! The runner of `.mte` scenarios: executes parsed statements on a machine
//! and checks what their lines expect (`docs/language.md`).
//!
//! The language itself (lexer, parser, syntax tree, diagnostics) is the
//! `lang` crate; [`parse()`] and friends are re-exported here so a caller
//! that runs files needs one import. A caller that only parses should use
//! `lang` directly (it does not build the kernel).
//!
//! [`run_source`] parses and runs a file in one streaming pass on a machine
//! the caller builds from the file's platform (what `mtesim run` and the
//! scenario suites do); [`run_script`] runs a parsed [`Script`]; both give a
//! [`RunReport`].
//!
//! Layout: [`run`](mod@run) (lowering to `uapi` ops, outcomes,
//! expectations, parallel blocks), [`machine`] (which machine runs a file),
//! [`bench`](mod@bench) (inputs and a byte-store machine for throughput
//! measurements).
//!
//! Architectural values are the `mte` crate's types; the user-visible
//! interface (errno values, fault codes, protections, counters, page
//! states, the `Machine` trait) is the `uapi` crate's.

pub mod bench;
pub mod explore;
pub mod machine;
pub mod run;

pub use lang::{ErrorKind, ParseError, Script, Statements, parse};
pub use run::{
    FileResult, RunError, RunOptions, RunReport, Runner, Status, run_script, run_source,
};
