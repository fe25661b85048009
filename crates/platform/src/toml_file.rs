//! A platform described by a TOML file with the keys of a `platform` line.
//!
//! ```toml
//! memory = "64M"          # or 67108864, or 0x400_0000
//! tag-storage = "dynamic"
//! block-size = "4K"
//! huge-zero-page = "on"   # or true
//! ```
//!
//! Every value goes through [`PlatformSpec::set_key`], so a file accepts
//! exactly what a `platform` line accepts: integers and booleans are turned
//! into their text form first (`67108864`, `on`/`off`). The file is flat:
//! tables, arrays, floats and dates are type errors, as is a boolean for a
//! key other than `huge-zero-page`.
//!
//! Every error carries the line and column of the offending key or value
//! (from the `toml` crate's spans). When the keys are each fine but the
//! machine they describe is not (say `memory` is not a multiple of 32
//! pages), the error points at the value of the key it names
//! ([`SpecError::key`]), or at no position if that key was left out.
//! Errors are reported in file order, first one wins.

use crate::error::{PlatformError, Position};
use crate::from_spec::SpecError;
use crate::machine::Platform;
use crate::spec::{KEYS, KeyError, PlatformSpec};
use std::collections::BTreeMap;
use std::path::Path;
use thiserror::Error;
use toml::de::{DeTable, DeValue};

/// What is wrong with a TOML platform file.
#[derive(Clone, Debug, PartialEq, Eq, Error)]
pub enum TomlError {
    #[error("the file is not UTF-8")]
    NotUtf8,
    /// The `toml` crate's description of a syntax error.
    #[error("{0}")]
    Syntax(String),
    #[error("`{key}`: expected {expected}, found {found}")]
    WrongType {
        key: &'static str,
        expected: &'static str,
        found: &'static str,
    },
    #[error("`{key}`: {value} {problem}")]
    BadInteger {
        key: &'static str,
        value: String,
        problem: &'static str,
    },
    /// An unknown key, or a value the `platform` line would refuse.
    #[error(transparent)]
    Key(KeyError),
    /// The keys are fine one by one, but give no machine.
    #[error(transparent)]
    Layout(SpecError),
}

/// A located problem before the path is attached.
type Located = (Option<Position>, TomlError);

impl Platform {
    /// The machine a TOML platform file describes. `path` names the file in
    /// errors; `bytes` is its content.
    pub fn from_toml(path: &Path, bytes: &[u8]) -> Result<Self, PlatformError> {
        let located = |(position, error): Located| PlatformError::Toml {
            path: path.to_owned(),
            position,
            error,
        };
        let text = std::str::from_utf8(bytes).map_err(|e| {
            // The text before the bad byte is valid, so positions work on it.
            let valid = std::str::from_utf8(&bytes[..e.valid_up_to()]).unwrap_or_default();
            located((
                Some(Position::of_offset(valid, valid.len())),
                TomlError::NotUtf8,
            ))
        })?;
        let (spec, positions) = parse(text).map_err(located)?;
        Self::from_spec(&spec).map_err(|e| match e {
            PlatformError::Spec(e) => {
                located((positions.get(e.key()).copied(), TomlError::Layout(e)))
            }
            other => other,
        })
    }
}

/// The spec a TOML text describes, and where each key's value is.
fn parse(text: &str) -> Result<(PlatformSpec, BTreeMap<&'static str, Position>), Located> {
    let table = DeTable::parse(text).map_err(|e| {
        let position = e.span().map(|span| Position::of_offset(text, span.start));
        (position, TomlError::Syntax(e.message().to_owned()))
    })?;
    // The map's order depends on the `toml` crate's features; sort by place
    // in the file so the first error reported is the first one written.
    let mut entries: Vec<_> = table.get_ref().iter().collect();
    entries.sort_by_key(|(key, _)| key.span().start);

    let mut spec = PlatformSpec::default();
    let mut positions = BTreeMap::new();
    for (key, value) in entries {
        let key_at = Position::of_offset(text, key.span().start);
        let value_at = Position::of_offset(text, value.span().start);
        let Some(&key) = KEYS.iter().find(|k| **k == key.get_ref().as_ref()) else {
            let key = key.get_ref().to_string();
            return Err((Some(key_at), TomlError::Key(KeyError::UnknownKey { key })));
        };
        let text_value = value_text(key, value.get_ref()).map_err(|e| (Some(value_at), e))?;
        spec.set_key(key, &text_value)
            .map_err(|e| (Some(value_at), TomlError::Key(e)))?;
        positions.insert(key, value_at);
    }
    Ok((spec, positions))
}

/// The keys whose value is a number (a size, a seed, a count).
const NUMERIC_KEYS: &[&str] = &["memory", "page-size", "block-size", "swap", "seed", "cpus"];

/// The text a `platform` line would carry for this TOML value.
fn value_text(key: &'static str, value: &DeValue<'_>) -> Result<String, TomlError> {
    let numeric = NUMERIC_KEYS.contains(&key);
    let boolean = key == "huge-zero-page";
    match value {
        DeValue::String(s) => Ok(s.to_string()),
        DeValue::Integer(i) if numeric => {
            let digits = i.as_str();
            let bad = |problem| TomlError::BadInteger {
                key,
                value: i.to_string(),
                problem,
            };
            if digits.starts_with('-') {
                return Err(bad("is negative"));
            }
            u64::from_str_radix(digits.trim_start_matches('+'), i.radix())
                .map(|n| n.to_string())
                .map_err(|_| bad("does not fit in 64 bits"))
        }
        DeValue::Boolean(b) if boolean => Ok(if *b { "on" } else { "off" }.to_owned()),
        other => Err(TomlError::WrongType {
            key,
            expected: match (numeric, boolean) {
                (true, _) => "an integer or a string such as \"64M\"",
                (_, true) => "a boolean or \"on\"/\"off\"",
                _ => "a string",
            },
            found: other.type_str(),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spec::{Design, TagStorageData, Thp};
    use mte::geometry::GeometryError;
    use proptest::prelude::*;

    fn load(text: &str) -> Result<Platform, PlatformError> {
        Platform::from_toml(Path::new("machine.toml"), text.as_bytes())
    }

    /// The error's position and message, or a panic naming what came back.
    fn error(text: &str) -> (Option<Position>, TomlError) {
        match load(text) {
            Err(PlatformError::Toml {
                position, error, ..
            }) => (position, error),
            other => panic!("expected a TOML error, got {other:?}"),
        }
    }

    fn at(line: u32, column: u32) -> Option<Position> {
        Some(Position { line, column })
    }

    #[test]
    fn every_key_in_text_and_native_form() {
        let p = load(
            r#"
memory = 134217728
page-size = "4K"
tag-storage = "static"
block-size = 0x1_0000
tag-storage-data = "prefer"
swap = "16M"
thp = "madvise"
huge-zero-page = false
seed = 42
cpus = 2
"#,
        )
        .unwrap();
        assert_eq!(p.policy(), Design::STATIC);
        assert_eq!(p.dram()[0].size, 128 << 20);
        assert_eq!(p.block_size(), Some(64 << 10));
        let s = p.settings();
        assert_eq!(s.tag_storage_data, TagStorageData::Prefer);
        assert_eq!(
            (s.swap, s.thp, s.huge_zero_page),
            (16 << 20, Thp::Madvise, false)
        );
        assert_eq!((s.seed, s.cpus), (42, 2));
    }

    #[test]
    fn an_empty_file_is_the_default_machine() {
        assert_eq!(load("# nothing\n").unwrap(), Platform::default());
        let p = load("memory = \"64M\"\nhuge-zero-page = \"on\"\n").unwrap();
        assert_eq!(p, Platform::default());
        let p = load("huge-zero-page = true\n").unwrap();
        assert_eq!(p, Platform::default());
    }

    #[test]
    fn unknown_key_points_at_the_key() {
        let (position, err) = error("memory = \"64M\"\n  memroy = \"32M\"\n");
        assert_eq!(position, at(2, 3));
        assert!(
            err.to_string().starts_with("unknown platform key `memroy`"),
            "{err}"
        );
    }

    #[test]
    fn bad_value_points_at_the_value() {
        let (position, err) = error("thp = \"sometimes\"\n");
        assert_eq!(position, at(1, 7));
        assert_eq!(
            err.to_string(),
            "`thp`: expected `never`, `madvise` or `always`, found `sometimes`"
        );
        let (position, err) = error("\n\nmemory = \"12Q\"");
        assert_eq!(position, at(3, 10));
        assert_eq!(err.to_string(), "`memory`: invalid digit 'Q' in number");
    }

    #[test]
    fn wrong_types_point_at_the_value() {
        let (position, err) = error("memory = true\n");
        assert_eq!(position, at(1, 10));
        assert_eq!(
            err,
            TomlError::WrongType {
                key: "memory",
                expected: "an integer or a string such as \"64M\"",
                found: "boolean"
            }
        );
        let (_, err) = error("thp = 1\n");
        assert_eq!(err.to_string(), "`thp`: expected a string, found integer");
        let (_, err) = error("huge-zero-page = 1\n");
        assert!(
            err.to_string().contains("a boolean or \"on\"/\"off\""),
            "{err}"
        );
        let (position, err) = error("cpus = 2.5\n");
        assert_eq!(
            (position, err.to_string().ends_with("found float")),
            (at(1, 8), true)
        );
        let (_, err) = error("[platform]\nmemory = \"64M\"\n");
        assert!(
            err.to_string()
                .starts_with("unknown platform key `platform`"),
            "{err}"
        );
        let (_, err) = error("memory = [1, 2]\n");
        assert!(err.to_string().ends_with("found array"), "{err}");
    }

    #[test]
    fn integers_must_fit_and_not_be_negative() {
        let (position, err) = error("swap = -1\n");
        assert_eq!(position, at(1, 8));
        assert_eq!(err.to_string(), "`swap`: -1 is negative");
        // TOML integers are i64, so the parser refuses 2^64 itself.
        assert!(matches!(
            error("seed = 18446744073709551616\n").1,
            TomlError::Syntax(_) | TomlError::BadInteger { .. }
        ));
        // A seed beyond i64 can still be written as a string.
        let p = load("seed = \"0xffff_ffff_ffff_ffff\"\n").unwrap();
        assert_eq!(p.settings().seed, u64::MAX);
        // A suffix is only for sizes (docs/language.md, "Lexical rules").
        let (_, err) = error("seed = \"4K\"\n");
        assert_eq!(err.to_string(), "`seed`: size suffix `K` not allowed here");
    }

    #[test]
    fn syntax_errors_have_a_position() {
        let (position, err) = error("memory = \"64M\nthp = \"never\"\n");
        assert!(matches!(err, TomlError::Syntax(_)), "{err}");
        assert_eq!(position.map(|p| p.line), Some(1));
        // Duplicate keys are a TOML error.
        let (position, err) = error("cpus = 1\ncpus = 2\n");
        assert!(matches!(err, TomlError::Syntax(_)), "{err}");
        assert_eq!(position.map(|p| p.line), Some(2));
    }

    #[test]
    fn the_first_error_in_the_file_wins() {
        // `a-key` sorts before `thp` but comes after it in the file.
        let (position, err) = error("thp = \"x\"\na-key = 1\n");
        assert_eq!(position, at(1, 7));
        assert!(
            matches!(err, TomlError::Key(KeyError::BadValue { .. })),
            "{err}"
        );
    }

    #[test]
    fn layout_errors_point_at_the_key_they_name() {
        let (position, err) = error("tag-storage = \"static\"\nmemory = \"64K\"\n");
        assert_eq!(position, at(2, 10));
        assert!(
            matches!(err, TomlError::Layout(SpecError::TagsNotPages { .. })),
            "{err}"
        );
        let (position, err) = error("block-size = \"12K\"\n");
        assert_eq!(position, at(1, 14));
        assert!(
            matches!(
                err,
                TomlError::Layout(SpecError::Geometry(GeometryError::BlockSize { .. }))
            ),
            "{err}"
        );
        // memory=64M by default has 2M of tags: 4M blocks do not fit. The
        // fault is reported at block-size, the key written in the file.
        let (position, _) = error("\nblock-size = \"4M\"\n");
        assert_eq!(position, at(2, 14));
    }

    #[test]
    fn a_memory_fault_is_reported_at_memory_even_with_block_size_written() {
        // 4K cannot give whole tag pages: that is memory's fault, checked
        // before the blocks (from_spec.rs), so block-size is not blamed.
        let (position, err) = error("memory = \"4K\"\nblock-size = \"8K\"\n");
        assert_eq!(position, at(1, 10));
        assert!(
            matches!(err, TomlError::Layout(SpecError::TagsNotPages { .. })),
            "{err}"
        );
    }

    #[test]
    fn not_utf8_points_at_the_bad_byte() {
        let bytes = b"memory = \"64M\"\nthp = \"\xff\"\n";
        let err = Platform::from_toml(Path::new("m.toml"), bytes).unwrap_err();
        assert_eq!(err.to_string(), "m.toml:2:8: the file is not UTF-8");
    }

    #[test]
    fn errors_display_as_file_line_column() {
        let err = load("cpus = 0\n").unwrap_err();
        assert_eq!(
            err.to_string(),
            "machine.toml:1:8: `cpus`: expected a number of CPUs from 1 to 64, found `0`"
        );
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(128))]

        /// Any text: a machine or a located error, never a panic.
        #[test]
        fn any_input_never_panics(
            text in "[a-z\\-=\"'0-9xKMG .\\[\\]{}#\n]{0,80}",
            bytes in proptest::collection::vec(any::<u8>(), 0..64),
        ) {
            let _ = load(&text);
            let _ = Platform::from_toml(Path::new("x.toml"), &bytes);
        }

        /// Integers, booleans and their text forms mean the same thing.
        #[test]
        fn native_and_text_forms_agree(
            units in 1u64..512,
            cpus in 1u32..=64,
            seed in any::<u64>(),
            hzp in any::<bool>(),
            native in any::<bool>(),
        ) {
            // Units of 32 pages of 4K, so the layout always fits.
            let memory = units * 128 * 1024;
            // TOML integers are i64, so the seed is a string either way.
            let text = if native {
                format!(
                    "memory = {memory}\ncpus = {cpus}\nseed = \"{seed:#x}\"\n\
                     huge-zero-page = {hzp}\n"
                )
            } else {
                let (kib, hzp) = (memory >> 10, if hzp { "on" } else { "off" });
                format!(
                    "memory = \"{kib}K\"\ncpus = \"{cpus}\"\nseed = \"{seed}\"\n\
                     huge-zero-page = \"{hzp}\"\n"
                )
            };
            let (spec, _) = parse(&text).map_err(|(_, e)| TestCaseError::fail(e.to_string()))?;
            let expected = PlatformSpec {
                memory,
                cpus,
                seed,
                huge_zero_page: hzp,
                ..PlatformSpec::default()
            };
            prop_assert_eq!(spec, expected);
        }
    }
}
