//! Integer literals shared by scenario files, TOML platform files and the CLI.
//!
//! Grammar (`docs/language.md`, "Lexical rules"): decimal
//! (`4096`) or hex (`0x1000`), `_` allowed between digits (`0x7f00_0000`), and
//! for sizes and offsets an optional binary suffix `K`, `M`, `G`, `T`
//! (`64K` = 65536). Values are unsigned; overflow is an input error, never a
//! wrap.

use thiserror::Error;

/// Whether a literal may carry a binary size suffix.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Suffix {
    Allowed,
    Forbidden,
}

#[derive(Clone, Debug, PartialEq, Eq, Error)]
pub enum NumError {
    #[error("expected a number")]
    Empty,
    #[error("invalid digit {found:?} in number")]
    InvalidDigit { found: char },
    #[error("misplaced `_` in number")]
    Separator,
    #[error("size suffix `{0}` not allowed here")]
    SuffixNotAllowed(char),
    #[error("number does not fit in {bits} bits")]
    Overflow { bits: u32 },
}

/// Parses a literal into a 128-bit value (the widest any statement takes).
pub fn parse_u128(text: &str, suffix: Suffix) -> Result<u128, NumError> {
    let (body, shift) = split_suffix(text);
    if shift != 0 && suffix == Suffix::Forbidden {
        return Err(NumError::SuffixNotAllowed(
            text.chars().last().unwrap_or('?'),
        ));
    }
    let (digits, radix) = match body.strip_prefix("0x").or_else(|| body.strip_prefix("0X")) {
        Some(hex) => (hex, 16),
        None => (body, 10),
    };
    if digits.is_empty() {
        return Err(NumError::Empty);
    }
    if digits.starts_with('_') || digits.ends_with('_') || digits.contains("__") {
        return Err(NumError::Separator);
    }
    let overflow = NumError::Overflow { bits: 128 };
    let mut value: u128 = 0;
    for c in digits.chars().filter(|&c| c != '_') {
        let digit = c
            .to_digit(radix)
            .ok_or(NumError::InvalidDigit { found: c })?;
        value = value
            .checked_mul(u128::from(radix))
            .and_then(|v| v.checked_add(u128::from(digit)))
            .ok_or(overflow.clone())?;
    }
    if shift == 0 {
        return Ok(value);
    }
    value.checked_mul(1u128 << shift).ok_or(overflow)
}

/// Parses a literal that must fit in 64 bits.
pub fn parse_u64(text: &str, suffix: Suffix) -> Result<u64, NumError> {
    let value = parse_u128(text, suffix)?;
    u64::try_from(value).map_err(|_| NumError::Overflow { bits: 64 })
}

/// Splits a trailing `K`/`M`/`G`/`T` off, with its shift (0 for none).
fn split_suffix(text: &str) -> (&str, u32) {
    let shift = match text.chars().last() {
        Some('K') => 10,
        Some('M') => 20,
        Some('G') => 30,
        Some('T') => 40,
        _ => return (text, 0),
    };
    (&text[..text.len() - 1], shift)
}

/// Formats a byte size the way users write it (`64M`, `4K`, `1536`).
pub fn format_size(bytes: u64) -> String {
    for (shift, suffix) in [(40, 'T'), (30, 'G'), (20, 'M'), (10, 'K')] {
        if bytes != 0 && bytes.trailing_zeros() >= shift {
            return format!("{}{suffix}", bytes >> shift);
        }
    }
    bytes.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decimal_hex_separators_and_suffixes() {
        assert_eq!(parse_u64("4096", Suffix::Forbidden), Ok(4096));
        assert_eq!(parse_u64("0x1000", Suffix::Forbidden), Ok(4096));
        assert_eq!(parse_u64("0x7f00_0000", Suffix::Forbidden), Ok(0x7f00_0000));
        assert_eq!(parse_u64("64K", Suffix::Allowed), Ok(65536));
        assert_eq!(parse_u64("64M", Suffix::Allowed), Ok(64 << 20));
        assert_eq!(parse_u64("1G", Suffix::Allowed), Ok(1 << 30));
        assert_eq!(parse_u64("1T", Suffix::Allowed), Ok(1 << 40));
        assert_eq!(parse_u64("0x10K", Suffix::Allowed), Ok(16 << 10));
        assert_eq!(parse_u64("1_000", Suffix::Allowed), Ok(1000));
    }

    #[test]
    fn malformed_literals_are_errors() {
        assert_eq!(parse_u64("", Suffix::Allowed), Err(NumError::Empty));
        assert_eq!(parse_u64("0x", Suffix::Allowed), Err(NumError::Empty));
        assert_eq!(parse_u64("K", Suffix::Allowed), Err(NumError::Empty));
        assert_eq!(
            parse_u64("12a", Suffix::Allowed),
            Err(NumError::InvalidDigit { found: 'a' })
        );
        assert_eq!(parse_u64("_1", Suffix::Allowed), Err(NumError::Separator));
        assert_eq!(parse_u64("1__0", Suffix::Allowed), Err(NumError::Separator));
        assert_eq!(parse_u64("1_", Suffix::Allowed), Err(NumError::Separator));
        assert_eq!(
            parse_u64("4K", Suffix::Forbidden),
            Err(NumError::SuffixNotAllowed('K'))
        );
        assert_eq!(
            parse_u64("-1", Suffix::Allowed),
            Err(NumError::InvalidDigit { found: '-' })
        );
    }

    #[test]
    fn overflow_is_an_error_not_a_wrap() {
        assert_eq!(
            parse_u64("0xffff_ffff_ffff_ffff", Suffix::Forbidden),
            Ok(u64::MAX)
        );
        assert_eq!(
            parse_u64("0x1_0000_0000_0000_0000", Suffix::Forbidden),
            Err(NumError::Overflow { bits: 64 })
        );
        assert_eq!(
            parse_u64("16777216T", Suffix::Allowed),
            Err(NumError::Overflow { bits: 64 })
        );
        assert_eq!(
            parse_u128("0x1_0000_0000_0000_0000", Suffix::Forbidden),
            Ok(1 << 64)
        );
        assert_eq!(
            parse_u128("340282366920938463463374607431768211456", Suffix::Forbidden),
            Err(NumError::Overflow { bits: 128 })
        );
    }

    #[test]
    fn sizes_format_with_the_largest_exact_suffix() {
        assert_eq!(format_size(64 << 20), "64M");
        assert_eq!(format_size(4096), "4K");
        assert_eq!(format_size(1536), "1536");
        assert_eq!(format_size(0), "0");
        assert_eq!(format_size(3 << 40), "3T");
    }
}
