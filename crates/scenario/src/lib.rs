//! The `.mte` scenario language: lexer, parser, typed syntax tree, name
//! resolution, diagnostics, and the runner that executes scenarios on a
//! machine (`docs/language.md`).
//!
//! [`parse()`] turns a file into a [`Script`] or the first
//! [`ParseError`] in it; a malformed file runs nothing. Everything that can be
//! checked before running is checked here (syntax, numbers and their ranges,
//! names bound on earlier lines, the `platform` line and whether its keys
//! make a machine, `parallel` blocks, outcomes a command can produce), so a
//! runner only evaluates.
//!
//! [`run_source`] parses and runs a file in one streaming pass on a machine
//! the caller builds from the file's platform (what `mtesim run` and the
//! scenario suites do); [`run_script`] runs a parsed [`Script`]; both give a
//! [`RunReport`].
//!
//! Layout: [`lex`] (bytes to tokens), [`parse`](mod@parse) (tokens to
//! statements), `names` (bindings), [`ast`] (the result), [`error`]
//! (diagnostics), [`run`](mod@run) (lowering to `uapi` ops, outcomes,
//! expectations, parallel blocks), [`machine`] (which machine runs a file),
//! [`bench`](mod@bench) (inputs and a byte-store machine for throughput
//! measurements).
//!
//! Architectural values (tags, masks, tagged pointers, the granule, ADDG
//! operands, the STG family, check modes) are the `mte` crate's types; the
//! user-visible interface (errno values, fault codes, protections, counters,
//! page states, the `Machine` trait) is the `uapi` crate's.

pub mod ast;
pub mod bench;
pub mod error;
pub mod fuzz;
pub mod lex;
pub mod machine;
mod names;
pub mod parse;
pub mod run;

pub use ast::Script;
pub use error::{ErrorKind, ParseError};
pub use parse::{Statements, parse};
pub use run::{
    FileResult, RunError, RunOptions, RunReport, Runner, Status, run_script, run_source,
};
