//! Diagnostics for malformed scenarios.
//!
//! Owns [`ParseError`], the one error a malformed file produces (the first
//! one in reading order: nothing of a malformed file runs), and
//! [`ErrorKind`], what was wrong. `Display` prints
//! `file:line:column: message` as `docs/language.md` ("Running")
//! requires; lines and columns are 1-based and columns count characters, not
//! bytes. The [`miette::Diagnostic`] impl labels the offending text and
//! carries the offending line, so a CLI can print a caret under it without
//! keeping the file.

use core::fmt;

use miette::{Diagnostic, LabeledSpan, MietteError, MietteSpanContents, SourceCode, SourceSpan};
use platform::num::NumError;
use platform::spec::KeyError;
use thiserror::Error;

use crate::ast::Span;
use crate::lex::LexErrorKind;

/// A process or a pointer: the two kinds of names.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum NameKind {
    Process,
    Pointer,
}

impl fmt::Display for NameKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            NameKind::Process => "process",
            NameKind::Pointer => "pointer",
        })
    }
}

/// What is wrong with a malformed scenario.
#[derive(Clone, Debug, PartialEq, Eq, Error)]
pub enum ErrorKind {
    #[error(transparent)]
    Lex(#[from] LexErrorKind),

    #[error(
        "unknown statement `{found}` (expected a process name, `spawn`, `expect`, `parallel`, `platform`, `reclaim`, `compact` or `ksm-scan`)"
    )]
    UnknownStatement { found: String },
    #[error("unknown command `{found}`")]
    UnknownCommand { found: String },
    #[error("missing {what} after `{after}`")]
    Missing { what: &'static str, after: String },
    #[error("unexpected `{found}`: {reason}")]
    Unexpected { found: String, reason: &'static str },

    #[error("`{found}` is not a name (names are [a-z_][a-z0-9_]*)")]
    BadName { found: String },
    #[error("`{found}` is a keyword, not a name")]
    KeywordAsName { found: String },
    #[error("unbound name `{name}`: a {kind} must be bound on an earlier line{hint}")]
    Unbound {
        name: String,
        kind: NameKind,
        hint: &'static str,
    },
    #[error("`{name}` is bound inside this parallel block; it can be used after `end`")]
    BoundInBlock { name: String },
    #[error("`{name}` is a {actual}, not a {expected}")]
    WrongKind {
        name: String,
        actual: NameKind,
        expected: NameKind,
    },
    #[error("process `{name}` is already bound; a process name cannot be rebound")]
    ProcessRebound { name: String },
    #[error(
        "`{name}` is bound twice in one parallel block (its value would depend on the interleaving)"
    )]
    BoundTwiceInBlock { name: String },

    #[error("bad {what} `{text}`: {source}")]
    Number {
        what: &'static str,
        text: String,
        #[source]
        source: NumError,
    },
    #[error("{what} `{text}` is out of range: {expected}")]
    OutOfRange {
        what: &'static str,
        text: String,
        expected: &'static str,
    },
    #[error("tag `{text}` is above 15")]
    TagAbove15 { text: String },
    #[error("bad pointer `{text}`: {problem}")]
    BadPointer { text: String, problem: &'static str },
    #[error("unknown {what} `{found}` (expected {expected})")]
    BadChoice {
        what: &'static str,
        found: String,
        expected: &'static str,
    },
    #[error("unknown key `{key}` for `{command}` (expected {expected})")]
    UnknownKey {
        key: String,
        command: &'static str,
        expected: &'static str,
    },
    #[error("`{key}=` is given twice")]
    DuplicateKey { key: String },
    #[error("expected KEY=VALUE, found `{found}`")]
    ExpectedKeyValue { found: String },
    #[error("bad `{list}` list item `{item}`: {problem}")]
    BadListItem {
        list: &'static str,
        item: String,
        problem: &'static str,
    },

    #[error("`platform` must be the first statement of the file")]
    PlatformNotFirst,
    #[error("{}", platform_message(.source))]
    Platform {
        #[source]
        source: KeyError,
    },

    /// The keys are each valid but make no machine together.
    #[error("platform cannot be built: {message}")]
    PlatformMachine { message: String },

    #[error("`parallel` without its `end`")]
    UnclosedParallel,
    #[error("nested `parallel`: a parallel block cannot contain another")]
    NestedParallel,
    #[error("`end` without `parallel`")]
    EndWithoutParallel,
    /// A command of the language that the model does not implement yet: it
    /// is refused rather than accepted and ignored.
    #[error("`{command}` is not modelled yet: {why}")]
    NotModelled {
        command: &'static str,
        why: &'static str,
    },
    #[error("more than {cpus} lines in a parallel block (cpus={cpus}: one CPU per line)")]
    TooManyInParallel { cpus: u32 },
    #[error("`{keyword}` is not allowed inside a parallel block (only commands are)")]
    NotInParallel { keyword: &'static str },

    #[error(
        "unknown outcome `{found}` (expected ok, value, tag, tag-in, tags, mismatch, error, fault or stuck)"
    )]
    UnknownOutcome { found: String },
    #[error("`{command}` cannot give `{outcome}` (its outcomes: {possible})")]
    ImpossibleOutcome {
        command: &'static str,
        outcome: &'static str,
        possible: String,
    },
    #[error("{problem}")]
    OutcomeNeverMatches { problem: String },
    #[error(
        "unknown errno `{found}` (expected EINVAL, ENOMEM, EFAULT, EIO, EPERM, EACCES or ESRCH)"
    )]
    UnknownErrno { found: String },
    #[error(
        "unknown fault code `{found}` (expected SEGV_MTESERR, SEGV_MTEAERR, SEGV_MAPERR, SEGV_ACCERR or BUS_ADRALN)"
    )]
    UnknownFaultCode { found: String },
    #[error("unknown page state `{found}` (expected {})", PAGE_STATES)]
    UnknownPageState { found: String },
    #[error(
        "unknown counter `{found}` (the counters of docs/model.md §5: {})",
        COUNTERS
    )]
    UnknownCounter { found: String },
    #[error("unknown comparison `{found}` (expected ==, !=, <, <=, > or >=)")]
    UnknownCmpOp { found: String },
    #[error("unknown expectation `{found}` (expected `stat`, `invariants`, `P tags` or `P page`)")]
    UnknownExpectation { found: String },
    #[error("value `{text}` does not fit in a {bytes}-byte {access}")]
    ValueTooWide {
        text: String,
        bytes: u64,
        access: &'static str,
    },
}

/// `KeyError` names the platform for unknown keys only; say it for values too.
fn platform_message(source: &KeyError) -> String {
    match source {
        KeyError::UnknownKey { .. } => source.to_string(),
        KeyError::BadValue { .. } | KeyError::Number { .. } => format!("platform key {source}"),
    }
}

const PAGE_STATES: &str = "unmapped, zero-page, huge-zero-page, private, shared, huge, swapped, \
     tagged, untagged, in-tag-storage, awaiting-tag-storage or ksm";

const COUNTERS: &str = "mem.pages, mem.free, tag_storage.pages, tag_storage.blocks, \
     tag_storage.reserved, tag_storage.data_pages, tag_storage.reservations, \
     tag_storage.releases, tag_storage.migrations, tag_storage.reserve_failures, pages.tagged, \
     fault.anon, fault.zero_page, fault.cow, fault.tag_storage, swap.out, swap.in, \
     swap.saved_tags, migrate.pages, ksm.merged, tcf.sync, tcf.async, ksm.sharing, ksm.saved";

/// The one diagnostic of a malformed scenario.
///
/// Boxed, so a `Result<Stmt, ParseError>` is no larger than a statement.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ParseError(Box<Located>);

#[derive(Clone, Debug, PartialEq, Eq)]
struct Located {
    file: Box<str>,
    line: u32,
    column: u32,
    span: Span,
    kind: ErrorKind,
    snippet: Snippet,
}

impl ParseError {
    /// The error `kind` at `span` of `src`, with its line and column worked
    /// out (only on this error path, so the hot path keeps no line table).
    pub(crate) fn new(file: &str, src: &[u8], span: Span, kind: ErrorKind) -> ParseError {
        let start = (span.start as usize).min(src.len());
        let end = (span.end as usize).clamp(start, src.len());
        let line_start = src[..start]
            .iter()
            .rposition(|&b| b == b'\n')
            .map_or(0, |i| i + 1);
        let line = 1 + src[..line_start].iter().filter(|&&b| b == b'\n').count();
        // Columns count characters: every byte that does not continue a
        // UTF-8 sequence starts one (the text before an error is valid).
        let column = 1 + src[line_start..start]
            .iter()
            .filter(|&&b| b & 0xc0 != 0x80)
            .count();
        ParseError(Box::new(Located {
            file: file.into(),
            line: u32::try_from(line).unwrap_or(u32::MAX),
            column: u32::try_from(column).unwrap_or(u32::MAX),
            span: Span::new(start as u32, end as u32),
            kind,
            snippet: Snippet::new(file, src, line_start, line - 1, start, end),
        }))
    }

    pub fn file(&self) -> &str {
        &self.0.file
    }

    /// 1-based line.
    pub fn line(&self) -> u32 {
        self.0.line
    }

    /// 1-based column, in characters.
    pub fn column(&self) -> u32 {
        self.0.column
    }

    /// Byte span of the offending text in the file.
    pub fn span(&self) -> Span {
        self.0.span
    }

    pub fn kind(&self) -> &ErrorKind {
        &self.0.kind
    }
}

impl fmt::Display for ParseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}:{}:{}: {}",
            self.0.file, self.0.line, self.0.column, self.0.kind
        )
    }
}

impl std::error::Error for ParseError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        std::error::Error::source(&self.0.kind)
    }
}

impl Diagnostic for ParseError {
    fn code<'a>(&'a self) -> Option<Box<dyn fmt::Display + 'a>> {
        Some(Box::new("mtesim::scenario::malformed"))
    }

    fn help<'a>(&'a self) -> Option<Box<dyn fmt::Display + 'a>> {
        let help = match &self.0.kind {
            ErrorKind::UnknownCommand { .. } => {
                format!(
                    "a process command is one of: {}",
                    crate::parse::PROCESS_COMMANDS.join(", ")
                )
            }
            ErrorKind::BadPointer { .. } => {
                "pointers are NAME, NAME+OFF, NAME-OFF, NAME#T, NAME+OFF#T or a raw address".into()
            }
            ErrorKind::TooManyInParallel { .. } => {
                "raise `cpus` on the platform line, or split the block".into()
            }
            _ => return None,
        };
        Some(Box::new(help))
    }

    fn source_code(&self) -> Option<&dyn SourceCode> {
        Some(&self.0.snippet)
    }

    fn labels(&self) -> Option<Box<dyn Iterator<Item = LabeledSpan> + '_>> {
        let span = SourceSpan::new(
            (self.0.span.start as usize).into(),
            self.0.span.len() as usize,
        );
        Some(Box::new(std::iter::once(
            LabeledSpan::new_primary_with_span(Some(self.label().to_owned()), span),
        )))
    }
}

impl ParseError {
    /// The short text under the caret.
    fn label(&self) -> &'static str {
        match &self.0.kind {
            ErrorKind::Missing { .. } => "expected here",
            ErrorKind::Unbound { .. } | ErrorKind::BoundInBlock { .. } => "not bound here",
            ErrorKind::UnclosedParallel => "opened here",
            ErrorKind::Number { .. } | ErrorKind::OutOfRange { .. } => "bad number",
            _ => "here",
        }
    }
}

/// The text around the error, kept so the diagnostic can be rendered without
/// the file: at most [`Snippet::CONTEXT`] bytes either side of the error, on
/// its line. Control characters and invalid UTF-8 bytes are shown as `?`
/// byte for byte, so that offsets stay exact and no terminal escape reaches
/// the user.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Snippet {
    name: Box<str>,
    text: String,
    /// File offset of `text`'s first byte.
    offset: usize,
    /// 0-based line of `text`.
    line: usize,
    /// 0-based column (in characters) of `text`'s first character.
    column: usize,
}

impl Snippet {
    const CONTEXT: usize = 160;

    fn new(
        name: &str,
        src: &[u8],
        line_start: usize,
        line: usize,
        start: usize,
        end: usize,
    ) -> Snippet {
        let line_end = src[start..]
            .iter()
            .position(|&b| b == b'\n')
            .map_or(src.len(), |i| start + i);
        let from = start.saturating_sub(Self::CONTEXT).max(line_start);
        let to = end.saturating_add(Self::CONTEXT).min(line_end).max(end);
        let mut text = String::with_capacity(to - from);
        for chunk in src[from..to].utf8_chunks() {
            for c in chunk.valid().chars() {
                if c.is_control() && c != '\t' {
                    // One `?` per byte keeps offsets (C1 controls are two).
                    text.extend(core::iter::repeat_n('?', c.len_utf8()));
                } else {
                    text.push(c);
                }
            }
            for _ in chunk.invalid() {
                text.push('?');
            }
        }
        let column = src[line_start..from]
            .iter()
            .filter(|&&b| b & 0xc0 != 0x80)
            .count();
        Snippet {
            name: name.into(),
            text,
            offset: from,
            line,
            column,
        }
    }
}

impl SourceCode for Snippet {
    /// With context lines, the whole snippet (renderers draw whole lines);
    /// without, the span itself, whose line and column head the rendering.
    fn read_span<'a>(
        &'a self,
        span: &SourceSpan,
        context_lines_before: usize,
        context_lines_after: usize,
    ) -> Result<Box<dyn miette::SpanContents<'a> + 'a>, MietteError> {
        let (from, to) = if context_lines_before == 0 && context_lines_after == 0 {
            let from = span
                .offset()
                .clamp(self.offset, self.offset + self.text.len())
                - self.offset;
            let to = from.saturating_add(span.len()).min(self.text.len());
            (from, to)
        } else {
            (0, self.text.len())
        };
        let bytes = self.text.as_bytes();
        let column = self.column + bytes[..from].iter().filter(|&&b| b & 0xc0 != 0x80).count();
        Ok(Box::new(MietteSpanContents::new_named(
            self.name.to_string(),
            &bytes[from..to],
            SourceSpan::new((self.offset + from).into(), to - from),
            self.line,
            column,
            1,
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn location_is_line_and_character_column() {
        let src = "spawn p\np mmap a 4K\n# é\np load é\n".as_bytes();
        // `é` of line 4 starts at byte 31: columns count characters.
        let start = src.len() - 3;
        let err = ParseError::new(
            "t.mte",
            src,
            Span::new(start as u32, start as u32 + 2),
            ErrorKind::Lex(LexErrorKind::NonAscii { ch: 'é' }),
        );
        assert_eq!((err.line(), err.column()), (4, 8));
        assert!(
            err.to_string()
                .starts_with("t.mte:4:8: unexpected character `é`")
        );
        let err = ParseError::new(
            "t.mte",
            "a\n\té x".as_bytes(),
            Span::new(6, 7),
            ErrorKind::PlatformNotFirst,
        );
        assert_eq!(
            (err.line(), err.column()),
            (2, 4),
            "tab and é are one column each"
        );
    }

    #[test]
    fn an_error_at_the_end_of_the_file_is_located() {
        let err = ParseError::new(
            "t.mte",
            b"spawn",
            Span::new(5, 5),
            ErrorKind::PlatformNotFirst,
        );
        assert_eq!((err.line(), err.column()), (1, 6));
        let err = ParseError::new("t.mte", b"", Span::new(0, 0), ErrorKind::PlatformNotFirst);
        assert_eq!((err.line(), err.column()), (1, 1));
    }

    #[test]
    fn snippet_replaces_control_bytes_and_keeps_offsets() {
        let src = b"abc\nx\x1b[2Jy\xffz\n";
        let err = ParseError::new(
            "t.mte",
            src,
            Span::new(10, 11),
            ErrorKind::Lex(LexErrorKind::InvalidUtf8 { byte: 0xff }),
        );
        assert_eq!(err.0.snippet.text, "x?[2Jy?z");
        assert_eq!(err.0.snippet.offset, 4);
        assert_eq!(err.0.snippet.line, 1);
        assert_eq!(&err.0.snippet.text[10 - 4..11 - 4], "?");
    }

    #[test]
    fn diagnostic_renders_a_caret_under_the_offending_text() {
        let src = b"spawn p\np mmap a 4K prot=r,w,mte\np load a+ 8 => value 0x0\n";
        let plus = src.iter().position(|&b| b == b'+').unwrap() as u32;
        let err = ParseError::new(
            "bad-input.mte",
            src,
            Span::new(plus, plus + 1),
            ErrorKind::BadPointer {
                text: "a+".into(),
                problem: "missing offset after `+`",
            },
        );
        let mut out = String::new();
        miette::GraphicalReportHandler::new_themed(miette::GraphicalTheme::unicode_nocolor())
            .render_report(&mut out, &err)
            .unwrap();
        assert!(out.contains("bad-input.mte:3:9: bad pointer `a+`"), "{out}");
        assert!(out.contains("[bad-input.mte:3:9]"), "{out}");
        assert!(out.contains("p load a+ 8 => value 0x0"), "{out}");
        assert!(out.contains("help: pointers are NAME"), "{out}");
        // The caret line puts its mark under column 9.
        let caret = out
            .lines()
            .find(|l| l.contains('┬') || l.contains('▲'))
            .expect("a caret line");
        let source_line = out.lines().find(|l| l.contains("p load a+")).unwrap();
        let col_in = |l: &str, pat: &str| l.chars().position(|c| pat.contains(c)).unwrap();
        assert_eq!(col_in(caret, "┬▲"), col_in(source_line, "+"), "{out}");
    }
}
