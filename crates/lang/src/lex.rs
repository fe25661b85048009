//! Lines and tokens of a `.mte` file (`docs/language.md`, "Lexical rules").
//!
//! Owns the byte-level rules: one statement per line (`\n`, or `\r\n`),
//! tokens separated by spaces or tabs, `#` at the start of a token opens a
//! comment to the end of the line, a `#` inside a token belongs to it
//! (`buf+0x20#5`).
//!
//! What a token may contain: printable ASCII (`!` to `~`), since every word,
//! name and literal of the language is ASCII. Comments may hold any UTF-8
//! text except control characters. Anything else (invalid UTF-8, a control
//! character such as NUL, a non-ASCII character outside a comment, a `\r` not
//! ending a line) is malformed at its own line and column: that is how binary
//! garbage is refused.
//!
//! Performance: the lexer never allocates; tokens are slices of the source
//! and a caller-owned `Vec` is refilled per line.

use thiserror::Error;

use crate::ast::Span;

/// The largest file the parser accepts: spans are `u32` byte offsets.
pub const MAX_FILE_BYTES: u64 = u32::MAX as u64;

/// One token: a slice of the source and where it starts.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct Token<'a> {
    pub text: &'a str,
    /// Byte offset in the file.
    pub start: u32,
}

impl Token<'_> {
    pub fn span(&self) -> Span {
        // A token lies inside a file of at most MAX_FILE_BYTES bytes.
        Span::new(self.start, self.start + self.text.len() as u32)
    }

    /// The span of bytes `from..to` of the token.
    pub fn sub_span(&self, from: usize, to: usize) -> Span {
        Span::new(self.start + from as u32, self.start + to as u32)
    }
}

/// A line that lexed cleanly; its tokens are in the caller's buffer.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct Line {
    /// 1-based.
    pub number: u32,
    /// Byte offset of the line's first byte.
    pub start: u32,
}

/// A byte sequence that is not part of any valid token.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LexError {
    pub span: Span,
    pub kind: LexErrorKind,
}

#[derive(Clone, Debug, PartialEq, Eq, Error)]
pub enum LexErrorKind {
    #[error("invalid UTF-8 (byte {byte:#04x}): a scenario must be UTF-8 text")]
    InvalidUtf8 { byte: u8 },
    #[error("unexpected control character U+{code:04X}: a scenario must be text, not binary data")]
    ControlChar { code: u32 },
    #[error("unexpected character `{ch}`: only ASCII may appear outside comments")]
    NonAscii { ch: char },
    #[error("file of {bytes} bytes is too large (at most {MAX_FILE_BYTES} bytes)")]
    TooLarge { bytes: u64 },
}

/// Splits a file into lines of tokens.
pub struct Lexer<'a> {
    src: &'a [u8],
    /// The whole file as text, when it is valid UTF-8 (nearly always): token
    /// slices then cost nothing.
    text: Option<&'a str>,
    pos: usize,
    line: u32,
}

impl<'a> Lexer<'a> {
    pub fn new(src: &'a [u8]) -> Result<Lexer<'a>, LexError> {
        if src.len() as u64 > MAX_FILE_BYTES {
            return Err(LexError {
                span: Span::new(0, 0),
                kind: LexErrorKind::TooLarge {
                    bytes: src.len() as u64,
                },
            });
        }
        Ok(Lexer {
            src,
            text: core::str::from_utf8(src).ok(),
            pos: 0,
            line: 0,
        })
    }

    /// Lexes the next line into `tokens` (cleared first); `None` at the end
    /// of the file. An empty file has no lines; a final `\n` does not start
    /// another one.
    pub fn next_line(&mut self, tokens: &mut Vec<Token<'a>>) -> Option<Result<Line, LexError>> {
        tokens.clear();
        if self.pos >= self.src.len() {
            return None;
        }
        self.line += 1;
        let line = Line {
            number: self.line,
            start: self.pos as u32,
        };
        let lexed = self.lex_line(tokens);
        if lexed.is_err() {
            // The first error ends the file: nothing after it is read.
            self.pos = self.src.len();
        }
        Some(lexed.map(|()| line))
    }

    /// The file as text (when it is valid UTF-8) and the offset of the next
    /// line: what the parser's fast path for access lines reads
    /// (`parse::fast`).
    pub(crate) fn rest(&self) -> Option<(&'a str, usize)> {
        let text = self.text?;
        (self.pos < text.len()).then_some((text, self.pos))
    }

    /// Consumes the line at the current offset, which the caller has lexed
    /// itself and found clean; `next` is the offset just after its `\n` (or
    /// the file's end). The line number advances as [`Lexer::next_line`]
    /// advances it.
    pub(crate) fn skip_line(&mut self, next: usize) -> Line {
        debug_assert!(next > self.pos && next <= self.src.len());
        self.line += 1;
        let line = Line {
            number: self.line,
            start: self.pos as u32,
        };
        self.pos = next;
        line
    }

    fn lex_line(&mut self, tokens: &mut Vec<Token<'a>>) -> Result<(), LexError> {
        let src = self.src;
        let mut i = self.pos;
        loop {
            // Between tokens.
            let Some(&byte) = src.get(i) else {
                self.pos = i;
                return Ok(());
            };
            match byte {
                b'\n' => {
                    self.pos = i + 1;
                    return Ok(());
                }
                b' ' | b'\t' => i += 1,
                b'#' => {
                    let end = self.check_comment(i)?;
                    self.pos = (end + 1).min(src.len());
                    return Ok(());
                }
                b'!'..=b'~' => {
                    // A token runs to the next byte that is not printable
                    // ASCII; a `#` inside it is part of it.
                    let start = i;
                    i += 1 + src[i + 1..]
                        .iter()
                        .position(|b| !(b'!'..=b'~').contains(b))
                        .unwrap_or(src.len() - i - 1);
                    tokens.push(Token {
                        text: self.slice(start, i),
                        start: start as u32,
                    });
                }
                b'\r' if matches!(src.get(i + 1), None | Some(b'\n')) => i += 1,
                _ => return Err(bad_byte(src, i)),
            }
        }
    }

    /// Checks a comment starting at `start`; returns the offset of its `\n`
    /// (or the file's end).
    fn check_comment(&self, start: usize) -> Result<usize, LexError> {
        let rest = &self.src[start..];
        let len = rest.iter().position(|&b| b == b'\n').unwrap_or(rest.len());
        let comment = &rest[..len];
        let valid = match core::str::from_utf8(comment) {
            Ok(_) => len,
            Err(e) => e.valid_up_to(),
        };
        for (i, &byte) in comment[..valid].iter().enumerate() {
            let crlf = byte == b'\r' && i + 1 == len;
            if is_control(byte) && !crlf {
                return Err(bad_byte(self.src, start + i));
            }
        }
        if valid < len {
            return Err(bad_byte(self.src, start + valid));
        }
        Ok(start + len)
    }

    /// The text of bytes `start..end`, which the lexer has checked are
    /// printable ASCII.
    fn slice(&self, start: usize, end: usize) -> &'a str {
        let text = match self.text {
            Some(text) => text.get(start..end),
            None => core::str::from_utf8(&self.src[start..end]).ok(),
        };
        text.unwrap_or_else(|| panic!("BUG: token {start}..{end} is not ASCII"))
    }
}

/// Control characters other than tab, and DEL.
fn is_control(byte: u8) -> bool {
    (byte < 0x20 && byte != b'\t') || byte == 0x7f
}

/// The error for an unacceptable byte at `i` outside a comment (or a control
/// character or invalid UTF-8 inside one).
fn bad_byte(src: &[u8], i: usize) -> LexError {
    let byte = src[i];
    let at = |len: usize| Span::new(i as u32, (i + len) as u32);
    if byte < 0x80 {
        return LexError {
            span: at(1),
            kind: LexErrorKind::ControlChar {
                code: u32::from(byte),
            },
        };
    }
    match src[i..].utf8_chunks().next() {
        Some(chunk) if !chunk.valid().is_empty() => {
            let ch = chunk.valid().chars().next().unwrap_or('\u{fffd}');
            LexError {
                span: at(ch.len_utf8()),
                kind: LexErrorKind::NonAscii { ch },
            }
        }
        _ => LexError {
            span: at(1),
            kind: LexErrorKind::InvalidUtf8 { byte },
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lines(src: &[u8]) -> Result<Vec<Vec<(&str, u32)>>, LexError> {
        let mut lexer = Lexer::new(src)?;
        let mut tokens = Vec::new();
        let mut out = Vec::new();
        while let Some(line) = lexer.next_line(&mut tokens) {
            line?;
            out.push(tokens.iter().map(|t| (t.text, t.start)).collect());
        }
        Ok(out)
    }

    #[test]
    fn tokens_are_separated_by_spaces_and_tabs() {
        assert_eq!(
            lines(b"p load\ta+0x20#5  8\n").unwrap(),
            vec![vec![("p", 0), ("load", 2), ("a+0x20#5", 7), ("8", 17)]]
        );
    }

    #[test]
    fn hash_starts_a_comment_only_at_a_token_start() {
        // Spec, Lexical rules: `buf+0x20#5` keeps its `#`; `# ...` after white
        // space or at the line start is a comment.
        assert_eq!(
            lines(b"# comment\np stg buf#5 # tag five\n").unwrap(),
            vec![vec![], vec![("p", 10), ("stg", 12), ("buf#5", 16)]]
        );
        assert_eq!(lines(b"a#b#c").unwrap(), vec![vec![("a#b#c", 0)]]);
    }

    #[test]
    fn line_structure() {
        assert!(lines(b"").unwrap().is_empty(), "an empty file has no lines");
        assert_eq!(lines(b"\n").unwrap().len(), 1);
        assert_eq!(lines(b"a\nb").unwrap().len(), 2);
        assert_eq!(
            lines(b"a\r\nb\r\n").unwrap(),
            vec![vec![("a", 0)], vec![("b", 3)]]
        );
        assert_eq!(lines(b"a\r").unwrap(), vec![vec![("a", 0)]]);
        assert_eq!(lines(b"# x\r\n").unwrap(), vec![vec![]]);
    }

    #[test]
    fn comments_may_hold_unicode_but_tokens_may_not() {
        assert_eq!(lines("# déjà vu\n".as_bytes()).unwrap().len(), 1);
        let err = lines("p mmap é 4K".as_bytes()).unwrap_err();
        assert_eq!(err.kind, LexErrorKind::NonAscii { ch: 'é' });
        assert_eq!(err.span, Span::new(7, 9));
    }

    #[test]
    fn invalid_utf8_and_control_characters_are_errors_at_their_byte() {
        let err = lines(b"spawn p\np yield \xff\n").unwrap_err();
        assert_eq!(err.kind, LexErrorKind::InvalidUtf8 { byte: 0xff });
        assert_eq!(err.span, Span::new(16, 17));
        let err = lines(b"# ok \xc3\xa9 then \xc3\n").unwrap_err();
        assert_eq!(err.kind, LexErrorKind::InvalidUtf8 { byte: 0xc3 });
        assert_eq!(err.span.start, 13);
        let err = lines(b"spawn\0p").unwrap_err();
        assert_eq!(err.kind, LexErrorKind::ControlChar { code: 0 });
        assert_eq!(err.span, Span::new(5, 6));
        let err = lines(b"# bell \x07\n").unwrap_err();
        assert_eq!(err.kind, LexErrorKind::ControlChar { code: 7 });
        let err = lines(b"a\rb").unwrap_err();
        assert_eq!(err.kind, LexErrorKind::ControlChar { code: 13 });
        assert_eq!(err.span.start, 1);
    }

    #[test]
    fn an_error_is_reported_on_its_line_after_the_lines_before_it() {
        let mut lexer = Lexer::new(b"spawn p\n\x01\n").unwrap();
        let mut tokens = Vec::new();
        assert!(matches!(
            lexer.next_line(&mut tokens),
            Some(Ok(Line {
                number: 1,
                start: 0
            }))
        ));
        assert!(matches!(lexer.next_line(&mut tokens), Some(Err(_))));
    }
}
