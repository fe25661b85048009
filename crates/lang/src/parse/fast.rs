//! The fast path for the lines a recorded trace is made of.
//!
//! Contract: [`Parser::fast_access_line`] takes the next line only when it
//! is, byte for byte, one of
//!
//! ```text
//! P load PTR SIZE
//! P store PTR SIZE VALUE
//! P stg PTR
//! ```
//!
//! with `P` a process bound at top level, tokens separated by spaces or
//! tabs, no comment, no outcome, no `\r`, every byte printable ASCII, and
//! every argument valid. It then returns the very statement the general
//! path (lexer, [`Parser::command_stmt`]) would return for that line, and
//! consumes the line exactly as the lexer would. Anything else (a blank or
//! comment line, another command, an outcome, a bad argument, invalid
//! UTF-8 anywhere in the file) gives `None` and consumes nothing, so the
//! general path reads the line and reports whatever is wrong with it at its
//! own `file:line:column`. The test `fast_path_equals_general_path` parses
//! random lines both ways and requires equal results.
//!
//! The same lines are also handed out as [`AccessLine`]s
//! (`Statements::next_access`), which a streaming runner takes without the
//! statement being built; `AccessLine::to_stmt` is that statement. A line
//! written exactly as a trace writes it (single spaces, a `0x` address)
//! is read without tokens (`Parser::quick_access`); any other spelling
//! goes through the token array below, with the same result.
//!
//! Why: a trace is millions of such lines; this path lexes them in one pass
//! over the bytes into a fixed array of tokens and dispatches on the
//! command word once, skipping the general lexer's token vector, the search
//! for `=>`, the keyword checks and the argument cursor. The process name
//! is resolved once and remembered: a process name is never rebound
//! (`names` module), so a name once resolved at top level keeps its id.

use super::{
    CommandStmt, DIGIT_VALUE, Parser, ProcessOp, Spanned, Stmt, Token, access_size, number128,
};
use crate::ast::{AccessSize, Command, ProcId, PtrBase, PtrExpr, Span};
use mte::{TagStoreOp, TaggedPtr};
use platform::num::Suffix;

/// The most tokens a line this path takes has (`P store PTR SIZE VALUE`).
const MAX_TOKENS: usize = 5;

const NO_TOKEN: Token<'static> = Token { text: "", start: 0 };

/// A plain access line (see the module doc) in a form small enough to
/// hand on by value: what [`AccessLine::to_stmt`] turns into the very
/// statement the general path reads, without building it. A runner that
/// streams a trace takes these (`Statements::next_access`) and builds the
/// statement only when it needs one (a verbose trace, a line it cannot run
/// on its fast path).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AccessLine {
    /// 1-based.
    pub line: u32,
    /// The line from its first token to its last.
    pub span: Span,
    pub proc: Spanned<ProcId>,
    /// The command word.
    pub word: Span,
    pub op: AccessOp,
}

/// What a plain access line does.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AccessOp {
    Load {
        ptr: PtrExpr,
        size: Spanned<AccessSize>,
    },
    Store {
        ptr: PtrExpr,
        size: Spanned<AccessSize>,
        value: Spanned<u128>,
    },
    /// `stg PTR`.
    Stg { ptr: PtrExpr },
}

impl AccessOp {
    pub const fn ptr(&self) -> &PtrExpr {
        match self {
            AccessOp::Load { ptr, .. } | AccessOp::Store { ptr, .. } | AccessOp::Stg { ptr } => ptr,
        }
    }
}

impl AccessLine {
    /// The statement the general path reads for this line.
    pub fn to_stmt(&self) -> Stmt {
        Stmt::Command(CommandStmt {
            line: self.line,
            span: self.span,
            command: self.command(),
            outcome: None,
        })
    }

    /// The line's command (what [`AccessLine::to_stmt`] holds).
    pub fn command(&self) -> Command {
        let op = match self.op {
            AccessOp::Load { ptr, size } => ProcessOp::Load { ptr, size },
            AccessOp::Store { ptr, size, value } => ProcessOp::Store {
                ptr,
                size,
                value: Spanned::new(value.node.into(), value.span),
            },
            AccessOp::Stg { ptr } => ProcessOp::StoreTag {
                op: Spanned::new(TagStoreOp::Stg, self.word),
                ptr,
            },
        };
        Command::Process {
            proc: self.proc,
            op: Spanned::new(op, Span::new(self.word.start, self.span.end)),
        }
    }
}

/// The offset of the first byte at or after `i` that is not printable
/// ASCII (`!`..=`~`), or the length: eight bytes at a time, so that a token
/// costs no branch per byte (the branch on each byte's class, mispredicted
/// wherever a token ends, was most of a trace line's parse).
#[inline]
fn token_end(bytes: &[u8], mut i: usize) -> usize {
    while let Some(chunk) = bytes.get(i..i + 8) {
        let mut word = [0u8; 8];
        word.copy_from_slice(chunk);
        let x = u64::from_le_bytes(word);
        // The high bit of each byte below `!` (the lowest such byte is
        // exact: a borrow only reaches bytes above it), of each byte of
        // 0x80 and up, and of each DEL.
        let below = x.wrapping_sub(ONES * 0x21) & !x;
        let del = {
            let y = x ^ (ONES * 0x7f);
            y.wrapping_sub(ONES) & !y
        };
        let stop = (below | del | x) & HIGH;
        if stop != 0 {
            return i + (stop.trailing_zeros() / 8) as usize;
        }
        i += 8;
    }
    while let Some(&b) = bytes.get(i) {
        if !(b'!'..=b'~').contains(&b) {
            break;
        }
        i += 1;
    }
    i
}

/// The command words [`Parser::quick_access`] reads.
#[derive(Clone, Copy)]
enum Word {
    Load,
    Store,
    Stg,
}

/// The span of bytes `start..end` of a file (of at most `MAX_FILE_BYTES`).
fn span(start: usize, end: usize) -> Span {
    Span::new(start as u32, end as u32)
}

/// The digits of `radix` from `start` (1 to `max_digits` of them, no `_`)
/// and the offset after the last, as `plain_u64` reads them.
#[inline]
fn radix_at(bytes: &[u8], start: usize, radix: u8, max_digits: usize) -> Option<(u64, usize)> {
    let mut value = 0u64;
    let mut i = start;
    while let Some(&b) = bytes.get(i) {
        let digit = DIGIT_VALUE[usize::from(b)];
        if digit >= radix {
            break;
        }
        value = value
            .wrapping_mul(u64::from(radix))
            .wrapping_add(u64::from(digit));
        i += 1;
    }
    (1..=max_digits)
        .contains(&(i - start))
        .then_some((value, i))
}

const ONES: u64 = 0x0101_0101_0101_0101;
const HIGH: u64 = 0x8080_8080_8080_8080;

/// The eight bytes at `at`, little-endian, if the file has them.
#[inline]
fn word_at(bytes: &[u8], at: usize) -> Option<u64> {
    let mut word = [0u8; 8];
    word.copy_from_slice(bytes.get(at..at + 8)?);
    Some(u64::from_le_bytes(word))
}

/// The high bit of each byte of `x` that is a hex digit (`0-9`, `a-f`,
/// `A-F`). Each range test adds to the low seven bits, which cannot carry
/// into the next byte; bytes of 0x80 and up are no digit.
#[inline]
fn hex_digits(x: u64) -> u64 {
    let low = x & !HIGH;
    let within = |lo: u64, hi: u64| {
        let at_least = low + (0x80 - lo) * ONES;
        let above = low + (0x7f - hi) * ONES;
        at_least & !above
    };
    (within(0x30, 0x39) | within(0x61, 0x66) | within(0x41, 0x46)) & !x & HIGH
}

/// The value of the eight hex digits of `x` (the first in the low byte,
/// as [`word_at`] reads them), the bytes not flagged in `digits` counted
/// as 0.
#[inline]
fn hex_value(x: u64, digits: u64) -> u32 {
    // Per byte: `0-9` are 0x3N, letters 0x4N and 0x6N (N = 1..=6), so the
    // value is the low nibble plus 9 for a letter (bit 6 set).
    let nibbles = ((x & (0x0f * ONES)) + ((x >> 6) & ONES) * 9) & ((digits >> 7) * 0xff);
    // The first digit most significant, then pairs, quads and octets of
    // nibbles packed.
    let v = nibbles.swap_bytes();
    let v = (v | (v >> 4)) & 0x00ff_00ff_00ff_00ff;
    let v = (v | (v >> 8)) & 0x0000_ffff_0000_ffff;
    ((v | (v >> 16)) & 0xffff_ffff) as u32
}

/// [`radix_at`] for hex: the digits from `start` (1 to 16 of them) and the
/// offset after the last, read eight at a time (a loop per digit was a
/// third of a trace line's parse: an address is 16 digits).
#[inline]
fn hex_at(bytes: &[u8], start: usize) -> Option<(u64, usize)> {
    let (Some(first), Some(second)) = (word_at(bytes, start), word_at(bytes, start + 8)) else {
        return radix_at(bytes, start, 16, 16);
    };
    let first_digits = hex_digits(first);
    let count = (!first_digits & HIGH).trailing_zeros() as usize / 8;
    if count < 8 {
        let value = u64::from(hex_value(first, first_digits));
        return (count > 0).then(|| (value >> (4 * (8 - count)), start + count));
    }
    let more = (!hex_digits(second) & HIGH).trailing_zeros() as usize / 8;
    let end = start + 8 + more;
    if more == 8
        && bytes
            .get(end)
            .is_some_and(|&b| DIGIT_VALUE[usize::from(b)] < 16)
    {
        // More than 16 digits: not for this path.
        return None;
    }
    // The first `more` digits over the last eight, which overlap them.
    let high = u64::from(hex_value(first, first_digits)) >> (4 * (8 - more));
    let last = word_at(bytes, end - 8)?;
    let low = u64::from(hex_value(last, HIGH));
    Some(((high << 16) << 16 | low, end))
}

/// `access_size`, with the sizes a trace writes read without the general
/// number reader (the same values: these are the decimal literals).
#[inline]
fn fast_access_size(tok: Token<'_>) -> Option<Spanned<AccessSize>> {
    let size = match tok.text.as_bytes() {
        b"8" => AccessSize::B8,
        b"4" => AccessSize::B4,
        b"1" => AccessSize::B1,
        b"2" => AccessSize::B2,
        b"16" => AccessSize::B16,
        _ => return access_size(tok).ok(),
    };
    Some(Spanned::new(size, tok.span()))
}

impl<'a> Parser<'a> {
    /// The next line as a statement, when it is a plain access line (see
    /// the module doc); `None` leaves the line to the general path.
    pub(super) fn fast_access_line(&mut self) -> Option<Stmt> {
        self.fast_access().map(|a| a.to_stmt())
    }

    /// The next line as an [`AccessLine`], when it is a plain access line
    /// (see the module doc); `None` leaves the line to the general path.
    pub(super) fn fast_access(&mut self) -> Option<AccessLine> {
        if !self.fast_path || self.scope.in_block() {
            return None;
        }
        let (text, pos) = self.lexer.rest()?;
        let bytes = text.as_bytes();
        if let Some(access) = self.quick_access(bytes, pos) {
            return Some(access);
        }
        let mut tokens = [NO_TOKEN; MAX_TOKENS];
        let mut n = 0;
        let mut i = pos;
        // Where the line's text ends and where the next line starts.
        let (end, next) = loop {
            while let Some(b' ' | b'\t') = bytes.get(i) {
                i += 1;
            }
            match bytes.get(i) {
                None => break (i, i),
                Some(b'\n') => break (i, i + 1),
                // `#` opens a comment at the start of a token.
                Some(b'#') => return None,
                Some(b) if b.wrapping_sub(b'!') <= b'~' - b'!' => {}
                Some(_) => return None,
            }
            if n == MAX_TOKENS {
                return None;
            }
            let token_end = token_end(bytes, i);
            tokens[n] = Token {
                text: text.get(i..token_end)?,
                start: i as u32,
            };
            n += 1;
            i = token_end;
        };
        debug_assert!(end <= next);
        let tokens = &tokens[..n];
        let [first, word, ptr_tok, ..] = *tokens else {
            return None;
        };
        let proc = self.fast_process(first)?;
        let ptr = self.ptr(ptr_tok).ok()?;
        let op = match (word.text, tokens) {
            ("load", &[_, _, _, size]) => AccessOp::Load {
                ptr,
                size: fast_access_size(size)?,
            },
            ("store", &[_, _, _, size, value_tok]) => {
                let size = fast_access_size(size)?;
                let value = number128(value_tok, "value", Suffix::Forbidden).ok()?;
                if value > size.node.max_value() {
                    return None;
                }
                AccessOp::Store {
                    ptr,
                    size,
                    value: Spanned::new(value, value_tok.span()),
                }
            }
            ("stg", &[_, _, _]) => AccessOp::Stg { ptr },
            _ => return None,
        };
        let last = tokens[n - 1];
        let line = self.lexer.skip_line(next);
        self.seen_stmt = true;
        Some(AccessLine {
            line: line.number,
            span: first.span().to(last.span()),
            proc: Spanned::new(proc, first.span()),
            word: word.span(),
            op,
        })
    }

    /// The line at `pos` when it is written the way a trace writes it:
    /// the last process name [`Self::fast_process`] resolved, single
    /// spaces, a hex raw address (`0x` and 1 to 16 digits), a size of 1,
    /// 2, 4, 8 or 16, a store's value in hex (1 to 16 digits) or decimal
    /// (1 to 19 digits), and the line's end. It is read in one pass, each
    /// token's end found by the scan that reads its value; the statement is
    /// the one the token path above makes of the same line (the same
    /// values: these are the literals `plain_u64` reads). `None` for any
    /// other spelling, which the token path then reads.
    fn quick_access(&mut self, bytes: &[u8], pos: usize) -> Option<AccessLine> {
        let (name, id) = self.last_process?;
        let name_end = pos + name.len();
        if bytes.get(pos..name_end)? != name.as_bytes() || bytes.get(name_end) != Some(&b' ') {
            return None;
        }
        let word_start = name_end + 1;
        let (word, ptr_start) = match bytes.get(word_start..word_start + 4)? {
            b"load" => (Word::Load, word_start + 5),
            b"stor" if bytes.get(word_start + 4) == Some(&b'e') => (Word::Store, word_start + 6),
            b"stg " => (Word::Stg, word_start + 4),
            _ => return None,
        };
        if bytes.get(ptr_start - 1) != Some(&b' ') {
            return None;
        }
        if bytes.get(ptr_start..ptr_start + 2) != Some(b"0x") {
            return None;
        }
        let (raw, ptr_end) = hex_at(bytes, ptr_start + 2)?;
        let ptr = PtrExpr {
            span: span(ptr_start, ptr_end),
            base: PtrBase::Raw(TaggedPtr::from_raw(raw)),
            tag: None,
        };
        let (op, end) = match word {
            Word::Stg => (AccessOp::Stg { ptr }, ptr_end),
            Word::Load | Word::Store => {
                if bytes.get(ptr_end) != Some(&b' ') {
                    return None;
                }
                let size_start = ptr_end + 1;
                let (size, size_end) = match bytes.get(size_start..)? {
                    [b'1', b'6', ..] => (AccessSize::B16, size_start + 2),
                    [b'8', ..] => (AccessSize::B8, size_start + 1),
                    [b'4', ..] => (AccessSize::B4, size_start + 1),
                    [b'2', ..] => (AccessSize::B2, size_start + 1),
                    [b'1', ..] => (AccessSize::B1, size_start + 1),
                    _ => return None,
                };
                let size = Spanned::new(size, span(size_start, size_end));
                match word {
                    Word::Load => (AccessOp::Load { ptr, size }, size_end),
                    _ => {
                        if bytes.get(size_end) != Some(&b' ') {
                            return None;
                        }
                        let value_start = size_end + 1;
                        let (value, value_end) =
                            if bytes.get(value_start..value_start + 2) == Some(b"0x") {
                                hex_at(bytes, value_start + 2)?
                            } else {
                                radix_at(bytes, value_start, 10, 19)?
                            };
                        let value = u128::from(value);
                        if value > size.node.max_value() {
                            return None;
                        }
                        let value = Spanned::new(value, span(value_start, value_end));
                        (AccessOp::Store { ptr, size, value }, value_end)
                    }
                }
            }
        };
        // The line ends here (a token ending in another byte, a comment or
        // trailing blanks are the token path's).
        let next = match bytes.get(end) {
            None => end,
            Some(b'\n') => end + 1,
            Some(_) => return None,
        };
        let line = self.lexer.skip_line(next);
        self.seen_stmt = true;
        Some(AccessLine {
            line: line.number,
            span: span(pos, end),
            proc: Spanned::new(id, span(pos, name_end)),
            word: span(word_start, ptr_start - 1),
            op,
        })
    }

    /// The process `tok` names, if it is bound as one.
    fn fast_process(&mut self, tok: Token<'a>) -> Option<ProcId> {
        if let Some((name, id)) = self.last_process
            && name == tok.text
        {
            return Some(id);
        }
        let id = self.scope.process(tok.text).ok()?;
        self.last_process = Some((tok.text, id));
        Some(id)
    }
}

#[cfg(test)]
mod tests {
    use super::super::Statements;
    use crate::ast::Stmt;
    use proptest::prelude::*;

    /// Every statement of `src` (and the error, rendered, if any), through
    /// the fast path or the general path only.
    fn parse_both(src: &[u8]) -> [(Vec<Stmt>, Option<String>); 2] {
        let run = |stmts: Statements<'_>| {
            let mut out = Vec::new();
            for stmt in stmts {
                match stmt {
                    Ok(stmt) => out.push(stmt),
                    Err(e) => return (out, Some(format!("{e}"))),
                }
            }
            (out, None)
        };
        let fast = run(Statements::new("t.mte", src));
        // Lines taken as `AccessLine`s where the fast path takes them, as a
        // streaming runner takes them: the same statements.
        let mut stmts = Statements::new("t.mte", src);
        let mut streamed = Vec::new();
        let mut error = None;
        loop {
            if let Some(access) = stmts.next_access() {
                streamed.push(access.to_stmt());
                continue;
            }
            match stmts.next() {
                None => break,
                Some(Ok(stmt)) => streamed.push(stmt),
                Some(Err(e)) => {
                    error = Some(format!("{e}"));
                    break;
                }
            }
        }
        assert_eq!(fast, (streamed, error), "streamed");
        [fast, run(Statements::new("t.mte", src).without_fast_path())]
    }

    const HEADER: &str = "spawn p\np mmap buf 64K\nspawn q\n";

    #[test]
    fn trace_lines_parse_as_the_general_path_parses_them() {
        let src = format!(
            "{HEADER}p load 0x0f00000010abc008 8\n\tp  store 0x1000 4 0xdead_beef\n\
             q stg buf#3\np load buf+0x20#5 16\np store 4096 1 255\n\
             p load 0x10 8 # a comment\np load 0x10 8 => value 0\n\n#x\np stg 0x20"
        );
        let [fast, slow] = parse_both(src.as_bytes());
        assert_eq!(fast, slow);
        assert_eq!(fast.1, None);
        assert_eq!(fast.0.len(), 11);
    }

    #[test]
    fn errors_on_access_lines_keep_their_position() {
        for (line, expected) in [
            ("p load 0x10 3", "t.mte:4:13:"),
            ("p store 0x10 1 0x100", "t.mte:4:16:"),
            ("p load 0x10 8 9", "t.mte:4:15:"),
            ("p load 0x1_ 8", "t.mte:4:8:"),
            ("r load 0x10 8", "t.mte:4:1:"),
            ("p stg nope", "t.mte:4:7:"),
            ("p load 0x10", "t.mte:4:12:"),
            ("p load 0x10 8\rx", "t.mte:4:14:"),
        ] {
            let src = format!("{HEADER}{line}\n");
            let [fast, slow] = parse_both(src.as_bytes());
            assert_eq!(fast, slow, "{line}");
            let message = fast.1.unwrap_or_default();
            assert!(message.starts_with(expected), "{line}: {message}");
        }
    }

    /// Pieces of lines: valid and invalid tokens, separators, comments and
    /// the bytes the lexer refuses.
    const PIECES: &[&str] = &[
        "p",
        "q",
        "r",
        "buf",
        "spawn",
        "load",
        "store",
        "stg",
        "stzg",
        "exit",
        "0x10",
        "0x1000",
        "4096",
        "0x0f00000000001008",
        "0xffffffffffffffffff",
        "1_0",
        "0x1_",
        "buf+8",
        "buf-0x8",
        "buf#3",
        "buf+#",
        "8",
        "16",
        "3",
        "1",
        "0",
        "255",
        "0x100",
        "=>",
        "ok",
        "value",
        "#c",
        "é",
        "\r",
        "\t",
        "  ",
        "",
        "\x00",
        "\x7f",
        "buf#3\x7f",
        "0x0f00000000001008\u{7f}9",
        "0x0f000000000010089",
        "0x0f00000000001008é",
    ];

    /// A line of random pieces, or (as often) an access line with each
    /// part drawn from valid and invalid choices, so that both paths are
    /// compared on lines the fast path takes and on near misses.
    fn line() -> impl Strategy<Value = String> {
        use proptest::sample::select;
        let random =
            proptest::collection::vec(select(PIECES), 0..7).prop_map(|pieces| pieces.join(" "));
        let access = (
            select(&["p", "q", "r", "buf", " p", "\tq"][..]),
            select(&["load", "store", "stg", "Load", "stzg"][..]),
            select(
                &[
                    "0x10",
                    "0x0f00000000001008",
                    "4096",
                    "buf",
                    "buf+0x20#5",
                    "0x",
                    "1_",
                    "q",
                    "0x0F00000000001008",
                    "0x00000000000000001",
                    "0x1g",
                    "0x1_0",
                    "0X10",
                ][..],
            ),
            select(&["1", "2", "4", "8", "16", "3", "0x8", "", "80", "12", "8x"][..]),
            select(
                &[
                    "0",
                    "0xff",
                    "0x1_0000",
                    "340282366920938463463374607431768211455",
                    "-1",
                    "",
                    "0x",
                    "255",
                    "256",
                    "0xffffffffffffffff",
                    "18446744073709551615",
                    "99999999999999999999",
                    "0x1fffffffffffffffff",
                ][..],
            ),
            select(&[" ", " ", " ", "\t", "  ", " \t"][..]),
            select(&["", " ", " # c", " => value 0", "\r", " x"][..]),
        )
            .prop_map(|(p, w, ptr, size, value, sep, tail)| {
                let parts = match w {
                    "stg" => vec![p, w, ptr],
                    "store" => vec![p, w, ptr, size, value],
                    _ => vec![p, w, ptr, size],
                };
                format!("{}{tail}", parts.join(sep))
            });
        prop_oneof![random, access]
    }

    proptest! {
        /// Eight digits at a time read what a digit at a time reads.
        #[test]
        fn hex_at_equals_radix_at(
            text in "[0-9a-fA-F]{0,20}[ g_\n\u{80}-\u{ff}]?[0-9a-f ]{0,20}",
            start in 0usize..4,
        ) {
            let bytes = text.as_bytes();
            let start = start.min(bytes.len());
            prop_assert_eq!(
                super::hex_at(bytes, start),
                super::radix_at(bytes, start, 16, 16),
                "{:?}", text
            );
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2000))]
        #[test]
        fn fast_path_equals_general_path(lines in proptest::collection::vec(line(), 1..8)) {
            let src = format!("{HEADER}{}\n", lines.join("\n"));
            let [fast, slow] = parse_both(src.as_bytes());
            prop_assert_eq!(fast, slow);
        }
    }
}
