//! [`PlatformError`]: why a platform source cannot give a machine, with the
//! file and position where there is one.
//!
//! The `Display` of a file-based error is the whole diagnostic,
//! `file:line:column: message` (TOML, where the position is known) or
//! `file: message` (DTB, unreadable file); errors of a `platform` line carry
//! no position because the scenario parser that owns the line adds its own.

use crate::dtb::DtbError;
use crate::from_spec::SpecError;
use crate::machine::LayoutError;
use crate::toml_file::TomlError;
use core::fmt;
use std::path::PathBuf;
use thiserror::Error;

/// A place in a text file: 1-based line, 1-based column counted in characters.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Debug)]
pub struct Position {
    pub line: u32,
    pub column: u32,
}

impl Position {
    /// The position of byte `offset` of `text` (clamped to its end, and to
    /// the start of a character).
    pub fn of_offset(text: &str, offset: usize) -> Self {
        let mut offset = offset.min(text.len());
        while !text.is_char_boundary(offset) {
            offset -= 1;
        }
        let before = &text[..offset];
        let line_start = before.rfind('\n').map_or(0, |i| i + 1);
        let to_u32 = |n: usize| u32::try_from(n).unwrap_or(u32::MAX);
        Self {
            line: to_u32(before.matches('\n').count()).saturating_add(1),
            column: to_u32(before[line_start..].chars().count()).saturating_add(1),
        }
    }
}

impl fmt::Display for Position {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.line, self.column)
    }
}

/// Why a platform cannot be built, by source.
#[derive(Debug, Error)]
pub enum PlatformError {
    /// A `platform` line (a [`crate::PlatformSpec`]) whose values cannot
    /// make a machine.
    #[error(transparent)]
    Spec(#[from] SpecError),
    /// A layout given to [`crate::Platform::new`].
    #[error(transparent)]
    Layout(#[from] LayoutError),
    /// The platform file cannot be read.
    #[error("{}: {error}", path.display())]
    Read {
        path: PathBuf,
        error: std::io::Error,
    },
    /// A TOML platform file; `position` is where the problem is, when known.
    #[error("{}{}: {error}", path.display(), at(position))]
    Toml {
        path: PathBuf,
        position: Option<Position>,
        error: TomlError,
    },
    /// A flattened device tree; the message names the node or byte offset.
    #[error("{}: {error}", path.display())]
    Dtb { path: PathBuf, error: DtbError },
}

fn at(position: &Option<Position>) -> String {
    position.map_or_else(String::new, |p| format!(":{p}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn positions_count_lines_and_characters_from_one() {
        let text = "a = 1\nbé = \"x\"\n";
        assert_eq!(
            Position::of_offset(text, 0),
            Position { line: 1, column: 1 }
        );
        assert_eq!(
            Position::of_offset(text, 6),
            Position { line: 2, column: 1 }
        );
        // `=` on line 2 is byte 10 but character 4 ('é' is two bytes).
        assert_eq!(
            Position::of_offset(text, 10),
            Position { line: 2, column: 4 }
        );
        // Inside 'é' and past the end: clamped, never a panic.
        assert_eq!(
            Position::of_offset(text, 8),
            Position { line: 2, column: 2 }
        );
        assert_eq!(
            Position::of_offset(text, 999),
            Position { line: 3, column: 1 }
        );
    }
}
