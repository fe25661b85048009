//! The `.mte` scenario language: lexer, parser, typed syntax tree, name
//! resolution and diagnostics (`docs/language.md`). It runs nothing: the
//! runner is the `scenario` crate, which lowers these statements to `uapi`
//! ops.
//!
//! [`parse()`] turns a file into a [`Script`] or the first
//! [`ParseError`] in it; a malformed file runs nothing. Everything that can be
//! checked before running is checked here (syntax, numbers and their ranges,
//! names bound on earlier lines, the `platform` line and whether its keys
//! make a machine, `parallel` blocks, outcomes a command can produce), so a
//! runner only evaluates. [`Statements`] parses the same way one statement
//! at a time, for runners that stream a file.
//!
//! Layout: [`lex`] (bytes to tokens), [`parse`](mod@parse) (tokens to
//! statements), `names` (bindings), [`ast`] (the result), [`error`]
//! (diagnostics).
//!
//! Architectural values (tags, masks, tagged pointers, the granule, ADDG
//! operands, the STG family, check modes) are the `mte` crate's types; the
//! user-visible interface (errno values, fault codes, protections, counters,
//! page states) is the `uapi` crate's; the `platform` line is checked by the
//! `platform` crate. Nothing here depends on a machine.

pub mod ast;
pub mod error;
pub mod lex;
mod names;
pub mod parse;

pub use ast::Script;
pub use error::{ErrorKind, ParseError};
pub use parse::{AccessLine, AccessOp, Statements, parse};
