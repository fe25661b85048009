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
//! Why: a trace is millions of such lines; this path lexes them in one pass
//! over the bytes into a fixed array of tokens and dispatches on the
//! command word once, skipping the general lexer's token vector, the search
//! for `=>`, the keyword checks and the argument cursor. The process name
//! is resolved once and remembered: a process name is never rebound
//! (`names` module), so a name once resolved at top level keeps its id.

use super::{CommandStmt, Parser, ProcessOp, Spanned, Stmt, Token, access_size, number128};
use crate::ast::Command;
use mte::TagStoreOp;
use platform::num::Suffix;

/// The most tokens a line this path takes has (`P store PTR SIZE VALUE`).
const MAX_TOKENS: usize = 5;

const NO_TOKEN: Token<'static> = Token { text: "", start: 0 };

impl<'a> Parser<'a> {
    /// The next line as a statement, when it is a plain access line (see
    /// the module doc); `None` leaves the line to the general path.
    pub(super) fn fast_access_line(&mut self) -> Option<Stmt> {
        if !self.fast_path || self.scope.in_block() {
            return None;
        }
        let (text, pos) = self.lexer.rest()?;
        let bytes = text.as_bytes();
        let mut tokens = [NO_TOKEN; MAX_TOKENS];
        let mut n = 0;
        // One pass over the line: `start` is where the current token
        // began, `usize::MAX` between tokens.
        let rest = &bytes[pos..];
        let mut start = usize::MAX;
        let mut next = rest.len();
        let mut end = rest.len();
        for (k, &b) in rest.iter().enumerate() {
            if b.wrapping_sub(b'!') <= b'~' - b'!' {
                if start == usize::MAX {
                    // `#` opens a comment at the start of a token.
                    if b == b'#' || n == MAX_TOKENS {
                        return None;
                    }
                    start = k;
                }
                continue;
            }
            if start != usize::MAX {
                tokens[n] = Token {
                    text: &text[pos + start..pos + k],
                    start: (pos + start) as u32,
                };
                n += 1;
                start = usize::MAX;
            }
            match b {
                b' ' | b'\t' => {}
                b'\n' => {
                    end = k;
                    next = k + 1;
                    break;
                }
                _ => return None,
            }
        }
        if start != usize::MAX {
            tokens[n] = Token {
                text: &text[pos + start..pos + end],
                start: (pos + start) as u32,
            };
            n += 1;
        }
        let next = pos + next;
        let tokens = &tokens[..n];
        let [first, word, ptr_tok, ..] = *tokens else {
            return None;
        };
        let proc = self.fast_process(first)?;
        let ptr = self.ptr(ptr_tok).ok()?;
        let op = match (word.text, tokens) {
            ("load", &[_, _, _, size]) => ProcessOp::Load {
                ptr,
                size: access_size(size).ok()?,
            },
            ("store", &[_, _, _, size, value_tok]) => {
                let size = access_size(size).ok()?;
                let value = number128(value_tok, "value", Suffix::Forbidden).ok()?;
                if value > size.node.max_value() {
                    return None;
                }
                ProcessOp::Store {
                    ptr,
                    size,
                    value: Spanned::new(value.into(), value_tok.span()),
                }
            }
            ("stg", &[_, _, _]) => ProcessOp::StoreTag {
                op: Spanned::new(TagStoreOp::Stg, word.span()),
                ptr,
            },
            _ => return None,
        };
        let last = tokens[n - 1];
        let line = self.lexer.skip_line(next);
        self.seen_stmt = true;
        Some(Stmt::Command(CommandStmt {
            line: line.number,
            span: first.span().to(last.span()),
            command: Command::Process {
                proc: Spanned::new(proc, first.span()),
                op: Spanned::new(op, word.span().to(last.span())),
            },
            outcome: None,
        }))
    }

    /// The process `tok` names, if it is bound as one.
    fn fast_process(&mut self, tok: Token<'a>) -> Option<crate::ast::ProcId> {
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
        [
            run(Statements::new("t.mte", src)),
            run(Statements::new("t.mte", src).without_fast_path()),
        ]
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
                ][..],
            ),
            select(&["1", "2", "4", "8", "16", "3", "0x8", ""][..]),
            select(
                &[
                    "0",
                    "0xff",
                    "0x1_0000",
                    "340282366920938463463374607431768211455",
                    "-1",
                    "",
                ][..],
            ),
            select(&[" ", "\t", "  ", " \t"][..]),
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
        #![proptest_config(ProptestConfig::with_cases(2000))]
        #[test]
        fn fast_path_equals_general_path(lines in proptest::collection::vec(line(), 1..8)) {
            let src = format!("{HEADER}{}\n", lines.join("\n"));
            let [fast, slow] = parse_both(src.as_bytes());
            prop_assert_eq!(fast, slow);
        }
    }
}
