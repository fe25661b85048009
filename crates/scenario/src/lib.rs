//! The `.mte` scenario language front end: lexer, parser, typed syntax tree,
//! name resolution and diagnostics (`shared/spec/scenario-language.md`).
//!
//! [`parse()`] turns a file into a [`Script`] or the first
//! [`ParseError`] in it; a malformed file runs nothing. Everything that can be
//! checked before running is checked here (syntax, numbers and their ranges,
//! names bound on earlier lines, the `platform` line, `parallel` blocks,
//! outcomes a command can produce), so a runner only evaluates.
//!
//! Layout: [`lex`] (bytes to tokens), [`parse`](mod@parse) (tokens to
//! statements), `names` (bindings), [`ast`] (the result), [`error`]
//! (diagnostics), [`bench`](mod@bench) (inputs for throughput measurements).
//!
//! Architectural values (tags, masks, tagged pointers, the granule, ADDG
//! operands, the STG family, check modes) are the `mte` crate's types.

pub mod ast;
pub mod bench;
pub mod error;
pub mod lex;
mod names;
pub mod parse;

pub use ast::Script;
pub use error::{ErrorKind, ParseError};
pub use parse::{Statements, parse};
