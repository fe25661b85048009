//! The statement grammar of `.mte` files (`docs/language.md`).
//!
//! Owns turning lines of tokens into [`Stmt`]s: the command, outcome,
//! expectation, pointer and list syntax, every range check that can be made
//! before running, the `platform` line, `parallel` blocks and, through
//! the `names` module, name resolution. The first error in reading order ends the
//! parse; within one line, a lexical error (a bad byte) is found before any
//! syntax error of that line, and syntax before binding errors of later
//! tokens.
//!
//! Checks beyond pure syntax, each because the line could never pass
//! otherwise:
//! - the `platform` line's keys must make a machine together
//!   (`Platform::from_spec`: memory against page and block size); the
//!   error points at the value of the key to change;
//! - an outcome must be one the command can produce ([`Command::accepts`]);
//! - `load ... => value V` and `store ... VALUE` must fit the access size;
//! - `ok N` of `write-fd`/`read-fd` at most `LEN`, of `poketags` at most the
//!   number of tags; `tags` of `peektags` at most `N`; `mismatch OFFSET` of
//!   `verify` below `LEN`.
//!
//! Performance: one pass, no allocation per token (a `Vec` of token slices
//! is reused per line); allocation per statement only for tag lists.

use platform::num::{self, NumError, Suffix};
use platform::spec::{KEYS, KeyError, PlatformSpec};
use platform::{Platform, PlatformError};

use crate::ast::{
    ADVICES, AccessSize, Advice, Backing, CmpOp, Command, CommandStmt, Counter, Errno, Expect,
    ExpectStmt, FaultCode, MapList, MmapArgs, Names, Outcome, OutcomeKind, PageState,
    ParallelBlock, PlatformLine, PlatformSetting, PrctlSettings, ProcId, ProcessOp, Prot, PtrBase,
    PtrExpr, PtrSlot, Script, Sharing, Span, Spanned, Stmt, Switch, advice_name,
};
use crate::error::{ErrorKind, NameKind, ParseError};
use crate::lex::{Lexer, Line, Token};
use crate::names::Scope;
use mte::insn::{GranuleOffset, TagOffset};
use mte::{CheckMode, GRANULE_SIZE, Tag, TagMask, TagStoreOp, TaggedPtr};

mod fast;

pub use fast::{AccessLine, AccessOp};

/// Words that are never names (`docs/language.md`, "Lexical rules").
pub const KEYWORDS: [&str; 8] = [
    "platform", "spawn", "parallel", "end", "expect", "reclaim", "compact", "ksm-scan",
];

/// The command words that follow a process name.
pub const PROCESS_COMMANDS: [&str; 29] = [
    "fork",
    "exit",
    "prctl",
    "prctl-get",
    "tco",
    "exec",
    "mmap",
    "munmap",
    "mprotect",
    "madvise",
    "pin",
    "unpin",
    "yield",
    "write-fd",
    "read-fd",
    "peektags",
    "poketags",
    "load",
    "store",
    "fill",
    "verify",
    "irg",
    "addg",
    "stg",
    "stzg",
    "st2g",
    "stz2g",
    "settag",
    "ldg",
];

/// Parses and resolves a whole scenario. `file_name` is only used in
/// messages. Never panics, whatever `src` holds.
pub fn parse(file_name: &str, src: &[u8]) -> Result<Script, ParseError> {
    let mut stmts = Statements::new(file_name, src);
    let mut all = Vec::new();
    // One statement per line at most, and a statement takes at least 6
    // bytes and its newline (`p exit`): reserving up front spares a long
    // trace the copies and fresh page faults of repeated doubling (twice as
    // fast on ten million lines). Best effort: if the estimate cannot be
    // had, the vector grows as usual.
    let lines = src.iter().filter(|&&b| b == b'\n').count() + 1;
    let _ = all.try_reserve_exact(lines.min(src.len() / 7 + 1));
    for stmt in &mut stmts {
        all.push(stmt?);
    }
    if all.capacity() > 2 * all.len() {
        // Mostly comments and blank lines: give the estimate back.
        all.shrink_to_fit();
    }
    let Statements { parser, .. } = stmts;
    let parser = parser.expect("BUG: a parser that reached the end exists");
    Ok(Script {
        platform: parser.platform,
        stmts: all,
        names: parser.scope.into_names(),
    })
}

/// The statements of a file one at a time, for runners that cannot hold a
/// multi-million-line trace in memory: iterate once to validate, then again
/// to run. Yields at most one error, then ends.
pub struct Statements<'a> {
    parser: Option<Parser<'a>>,
    error: Option<ParseError>,
}

impl<'a> Statements<'a> {
    pub fn new(file_name: &'a str, src: &'a [u8]) -> Statements<'a> {
        match Lexer::new(src) {
            Ok(lexer) => Statements {
                parser: Some(Parser::new(file_name, src, lexer)),
                error: None,
            },
            Err(e) => Statements {
                parser: None,
                error: Some(ParseError::new(file_name, src, e.span, e.kind.into())),
            },
        }
    }

    /// The same statements through the general path only (for the test
    /// that compares it with the fast path).
    #[cfg(test)]
    fn without_fast_path(mut self) -> Statements<'a> {
        if let Some(parser) = &mut self.parser {
            parser.fast_path = false;
        }
        self
    }

    /// The platform line, once the statement after it has been read.
    pub fn platform(&self) -> Option<&PlatformLine> {
        self.parser.as_ref()?.platform.as_ref()
    }

    /// The names bound so far.
    pub fn names(&self) -> Option<&Names> {
        Some(self.parser.as_ref()?.scope.names())
    }

    /// The next line, when it is a plain access line (`fast` module: `P
    /// load PTR SIZE`, `P store PTR SIZE VALUE`, `P stg PTR`, nothing else
    /// on the line, every argument valid), as an [`AccessLine`]; `None`
    /// consumes nothing, and [`Iterator::next`] then reads the next
    /// statement, whatever it is. Taking lines here or from `next` gives
    /// the same statements (`AccessLine::to_stmt`) and the same errors.
    #[inline]
    pub fn next_access(&mut self) -> Option<AccessLine> {
        if self.error.is_some() {
            return None;
        }
        let parser = self.parser.as_mut()?;
        if parser.failed {
            return None;
        }
        parser.fast_access()
    }
}

impl Iterator for Statements<'_> {
    type Item = Result<Stmt, ParseError>;

    fn next(&mut self) -> Option<Self::Item> {
        if let Some(error) = self.error.take() {
            return Some(Err(error));
        }
        let parser = self.parser.as_mut()?;
        if parser.failed {
            return None;
        }
        match parser.next_stmt() {
            Ok(stmt) => stmt.map(Ok),
            Err(fail) => {
                parser.failed = true;
                Some(Err(parser.error(fail)))
            }
        }
    }
}

/// An error before its file and line are known.
struct Fail {
    span: Span,
    kind: ErrorKind,
}

type PResult<T> = Result<T, Fail>;

fn fail<T>(span: Span, kind: ErrorKind) -> PResult<T> {
    Err(Fail { span, kind })
}

trait At<T> {
    fn at(self, span: Span) -> PResult<T>;
}

impl<T> At<T> for Result<T, ErrorKind> {
    fn at(self, span: Span) -> PResult<T> {
        self.map_err(|kind| Fail { span, kind })
    }
}

/// A binding a line makes once its uses (outcome included) are resolved.
#[derive(Clone, Copy)]
enum Bind<'a> {
    Process(&'a str, ProcId),
    Pointer(&'a str, PtrSlot),
}

struct Parser<'a> {
    file: &'a str,
    src: &'a [u8],
    lexer: Lexer<'a>,
    /// Reused for every line.
    tokens: Vec<Token<'a>>,
    scope: Scope<'a>,
    platform: Option<PlatformLine>,
    cpus: u32,
    /// A statement has been read (so `platform` may no longer appear).
    seen_stmt: bool,
    failed: bool,
    /// Whether plain access lines take the fast path (`fast` module); off
    /// only in the test that compares the two paths.
    fast_path: bool,
    /// The process name the fast path resolved last, and its id.
    last_process: Option<(&'a str, ProcId)>,
}

impl<'a> Parser<'a> {
    fn new(file: &'a str, src: &'a [u8], lexer: Lexer<'a>) -> Parser<'a> {
        Parser {
            file,
            src,
            lexer,
            tokens: Vec::new(),
            scope: Scope::new(),
            platform: None,
            cpus: PlatformSpec::default().cpus,
            seen_stmt: false,
            failed: false,
            fast_path: true,
            last_process: None,
        }
    }

    fn error(&self, fail: Fail) -> ParseError {
        ParseError::new(self.file, self.src, fail.span, fail.kind)
    }

    fn next_stmt(&mut self) -> PResult<Option<Stmt>> {
        if let Some(stmt) = self.fast_access_line() {
            return Ok(Some(stmt));
        }
        let mut tokens = core::mem::take(&mut self.tokens);
        let stmt = self.next_stmt_in(&mut tokens);
        self.tokens = tokens;
        stmt
    }

    /// The next line with tokens, its tokens in `tokens`.
    fn next_line(&mut self, tokens: &mut Vec<Token<'a>>) -> PResult<Option<Line>> {
        loop {
            match self.lexer.next_line(tokens) {
                None => return Ok(None),
                Some(Err(e)) => return fail(e.span, e.kind.into()),
                Some(Ok(line)) if !tokens.is_empty() => return Ok(Some(line)),
                Some(Ok(_)) => {}
            }
        }
    }

    fn next_stmt_in(&mut self, tokens: &mut Vec<Token<'a>>) -> PResult<Option<Stmt>> {
        loop {
            let Some(line) = self.next_line(tokens)? else {
                return Ok(None);
            };
            let first = tokens[0];
            let stmt = match first.text {
                "platform" => {
                    self.platform_line(tokens, line)?;
                    continue;
                }
                "parallel" => self.parallel_block(tokens, line)?,
                "end" => return fail(first.span(), ErrorKind::EndWithoutParallel),
                "expect" => Stmt::Expect(self.expect_stmt(tokens, line)?),
                _ => Stmt::Command(self.command_stmt(tokens, line)?),
            };
            self.seen_stmt = true;
            return Ok(Some(stmt));
        }
    }

    fn platform_line(&mut self, tokens: &[Token<'a>], line: Line) -> PResult<()> {
        let keyword = tokens[0];
        if self.seen_stmt || self.platform.is_some() {
            return fail(keyword.span(), ErrorKind::PlatformNotFirst);
        }
        let mut spec = PlatformSpec::default();
        let mut settings: Vec<PlatformSetting> = Vec::new();
        for &tok in &tokens[1..] {
            let (key, value) = key_value(tok)?;
            if settings.iter().any(|s| s.key == key.text) {
                return fail(
                    key.span(),
                    ErrorKind::DuplicateKey {
                        key: key.text.into(),
                    },
                );
            }
            if let Err(source) = spec.set_key(key.text, value.text) {
                let span = match source {
                    KeyError::UnknownKey { .. } => key.span(),
                    KeyError::BadValue { .. } | KeyError::Number { .. } => value.span(),
                };
                return fail(span, ErrorKind::Platform { source });
            }
            let Some(&key_name) = KEYS.iter().find(|k| **k == key.text) else {
                panic!("BUG: set_key accepted `{}`, which is not in KEYS", key.text);
            };
            settings.push(PlatformSetting {
                key: key_name,
                key_span: key.span(),
                value_span: value.span(),
            });
        }
        // Relations between keys (memory against page and block size) are
        // checked by building the machine; the error points at the value of
        // the key to change, or at the whole line when that key is a default.
        if let Err(error) = Platform::from_spec(&spec) {
            let key = match &error {
                PlatformError::Spec(e) => Some(e.key()),
                _ => None,
            };
            let span = key
                .and_then(|key| settings.iter().find(|s| s.key == key))
                .map_or_else(|| line_span(tokens), |s| s.value_span);
            return fail(
                span,
                ErrorKind::PlatformMachine {
                    message: error.to_string(),
                },
            );
        }
        self.cpus = spec.cpus;
        self.platform = Some(PlatformLine {
            line: line.number,
            span: line_span(tokens),
            spec,
            settings,
        });
        Ok(())
    }

    fn parallel_block(&mut self, tokens: &mut Vec<Token<'a>>, line: Line) -> PResult<Stmt> {
        let keyword = tokens[0];
        no_more(&tokens[1..], "`parallel` stands alone on its line")?;
        self.scope.open_block();
        let mut commands = Vec::new();
        loop {
            let Some(inner) = self.next_line(tokens)? else {
                return fail(keyword.span(), ErrorKind::UnclosedParallel);
            };
            let first = tokens[0];
            match first.text {
                "end" => {
                    no_more(&tokens[1..], "`end` stands alone on its line")?;
                    self.scope.close_block();
                    return Ok(Stmt::Parallel(ParallelBlock {
                        line: line.number,
                        span: keyword.span(),
                        commands,
                        end_line: inner.number,
                        end_span: first.span(),
                    }));
                }
                "parallel" => return fail(first.span(), ErrorKind::NestedParallel),
                "expect" => {
                    return fail(first.span(), ErrorKind::NotInParallel { keyword: "expect" });
                }
                "platform" => {
                    return fail(
                        first.span(),
                        ErrorKind::NotInParallel {
                            keyword: "platform",
                        },
                    );
                }
                _ => {}
            }
            if commands.len() >= self.cpus as usize {
                return fail(
                    first.span(),
                    ErrorKind::TooManyInParallel { cpus: self.cpus },
                );
            }
            commands.push(self.command_stmt(tokens, inner)?);
        }
    }

    fn command_stmt(&mut self, tokens: &[Token<'a>], line: Line) -> PResult<CommandStmt> {
        let (command_tokens, outcome_tokens) = match tokens.iter().position(|t| t.text == "=>") {
            Some(0) => {
                return fail(
                    tokens[0].span(),
                    ErrorKind::Unexpected {
                        found: "=>".into(),
                        reason: "an outcome follows a command",
                    },
                );
            }
            Some(i) => (&tokens[..i], Some((tokens[i], &tokens[i + 1..]))),
            None => (tokens, None),
        };
        let (command, bind) = self.command(command_tokens)?;
        let outcome = match outcome_tokens {
            Some((arrow, rest)) => {
                let outcome = self.outcome(arrow, rest)?;
                check_outcome(&command, &outcome)?;
                Some(outcome)
            }
            None => None,
        };
        if let Some(bind) = bind {
            self.commit(bind);
        }
        Ok(CommandStmt {
            line: line.number,
            span: line_span(tokens),
            command,
            outcome,
        })
    }

    fn commit(&mut self, bind: Bind<'a>) {
        // The name was checked with `check_bindable` when it was read, and
        // nothing binds between that and here.
        match bind {
            Bind::Process(name, id) => {
                let bound = self.scope.bind_process(name);
                assert_eq!(bound, Ok(id), "BUG: process `{name}` bound differently");
            }
            Bind::Pointer(name, slot) => {
                let bound = self.scope.bind_pointer(name);
                assert_eq!(bound, Ok(slot), "BUG: pointer `{name}` bound differently");
            }
        }
    }

    fn command(&mut self, tokens: &[Token<'a>]) -> PResult<(Command, Option<Bind<'a>>)> {
        let first = tokens[0];
        let mut args = Args::new(&tokens[1..], first);
        let (command, bind) = match first.text {
            "spawn" => {
                let tok = args.take("process name")?;
                let (proc, bind) = self.new_process(tok)?;
                (Command::Spawn { proc }, Some(bind))
            }
            "reclaim" => {
                let pages = count(args.take("page count")?, "page count")?;
                (Command::Reclaim { pages }, None)
            }
            "compact" => (Command::Compact, None),
            "ksm-scan" => (Command::KsmScan, None),
            _ => {
                let proc = self.command_process(tokens)?;
                let word = args.take("command")?;
                let (op, bind) = self.process_op(word, &mut args)?;
                let op_span = word.span().to(args.after.span());
                (
                    Command::Process {
                        proc,
                        op: Spanned::new(op, op_span),
                    },
                    bind,
                )
            }
        };
        args.finish(command.name())?;
        Ok((command, bind))
    }

    /// The process a command line starts with.
    fn command_process(&self, tokens: &[Token<'a>]) -> PResult<Spanned<ProcId>> {
        let first = tokens[0];
        let unknown = || ErrorKind::UnknownStatement {
            found: first.text.into(),
        };
        if !is_name(first.text) {
            return fail(first.span(), unknown());
        }
        match self.scope.process(first.text) {
            Ok(id) => Ok(Spanned::new(id, first.span())),
            Err(ErrorKind::Unbound { .. })
                if !tokens
                    .get(1)
                    .is_some_and(|t| PROCESS_COMMANDS.contains(&t.text)) =>
            {
                fail(first.span(), unknown())
            }
            Err(kind) => fail(first.span(), kind),
        }
    }

    fn process_op(
        &mut self,
        word: Token<'a>,
        args: &mut Args<'_, 'a>,
    ) -> PResult<(ProcessOp, Option<Bind<'a>>)> {
        let op = match word.text {
            "fork" => {
                let (child, bind) = self.new_process(args.take("child process name")?)?;
                return Ok((ProcessOp::Fork { child }, Some(bind)));
            }
            "exit" => ProcessOp::Exit,
            "prctl" => ProcessOp::Prctl(self.prctl(args)?),
            "prctl-get" => ProcessOp::PrctlGet,
            "tco" => ProcessOp::Tco(switch(args.take("`on` or `off`")?, "TCO setting")?),
            "exec" => ProcessOp::Exec,
            "mmap" => return self.mmap(args),
            "munmap" => ProcessOp::Munmap {
                ptr: self.ptr(args.take("pointer")?)?,
                len: size(args.take("length")?, "length")?,
            },
            "mprotect" => {
                let ptr = self.ptr(args.take("pointer")?)?;
                let len = size(args.take("length")?, "length")?;
                let tok = args.take("`prot=LIST`")?;
                let (key, value) = key_value(tok)?;
                if key.text != "prot" {
                    return fail(
                        key.span(),
                        ErrorKind::UnknownKey {
                            key: key.text.into(),
                            command: "mprotect",
                            expected: "prot",
                        },
                    );
                }
                ProcessOp::Mprotect {
                    ptr,
                    len,
                    prot: Spanned::new(prot_list(value)?, tok.span()),
                }
            }
            "madvise" => ProcessOp::Madvise {
                ptr: self.ptr(args.take("pointer")?)?,
                len: size(args.take("length")?, "length")?,
                advice: advice(args.take("advice")?)?,
            },
            "pin" => {
                let ptr = self.ptr(args.take("pointer")?)?;
                let len = size(args.take("length")?, "length")?;
                let longterm = pin_longterm(args.rest(), word)?;
                ProcessOp::Pin { ptr, len, longterm }
            }
            "unpin" => ProcessOp::Unpin {
                ptr: self.ptr(args.take("pointer")?)?,
                len: size(args.take("length")?, "length")?,
            },
            "yield" => ProcessOp::Yield,
            "write-fd" => ProcessOp::WriteFd {
                ptr: self.ptr(args.take("pointer")?)?,
                len: size(args.take("length")?, "length")?,
            },
            "read-fd" => ProcessOp::ReadFd {
                ptr: self.ptr(args.take("pointer")?)?,
                len: size(args.take("length")?, "length")?,
                byte: byte(args.take("byte value")?)?,
            },
            "peektags" => ProcessOp::PeekTags {
                target: self.process_ref(args.take("traced process")?)?,
                ptr: self.ptr(args.take("pointer")?)?,
                granules: count(args.take("granule count")?, "granule count")?,
            },
            "poketags" => ProcessOp::PokeTags {
                target: self.process_ref(args.take("traced process")?)?,
                ptr: self.ptr(args.take("pointer")?)?,
                tags: tag_list(args.take("tag list")?)?,
            },
            "load" => ProcessOp::Load {
                ptr: self.ptr(args.take("pointer")?)?,
                size: access_size(args.take("access size (1, 2, 4, 8 or 16)")?)?,
            },
            "store" => {
                let ptr = self.ptr(args.take("pointer")?)?;
                let size = access_size(args.take("access size (1, 2, 4, 8 or 16)")?)?;
                let tok = args.take("value")?;
                let value = number128(tok, "value", Suffix::Forbidden)?;
                if value > size.node.max_value() {
                    return fail(
                        tok.span(),
                        ErrorKind::ValueTooWide {
                            text: tok.text.into(),
                            bytes: size.node.bytes(),
                            access: "store",
                        },
                    );
                }
                ProcessOp::Store {
                    ptr,
                    size,
                    value: Spanned::new(value.into(), tok.span()),
                }
            }
            "fill" => ProcessOp::Fill {
                ptr: self.ptr(args.take("pointer")?)?,
                len: size(args.take("length")?, "length")?,
                byte: byte(args.take("byte value")?)?,
            },
            "verify" => ProcessOp::Verify {
                ptr: self.ptr(args.take("pointer")?)?,
                len: size(args.take("length")?, "length")?,
                byte: byte(args.take("byte value")?)?,
            },
            "irg" => return self.irg(args),
            "addg" => return self.addg(args),
            "stg" | "stzg" | "st2g" | "stz2g" => {
                let op = match word.text {
                    "stg" => TagStoreOp::Stg,
                    "stzg" => TagStoreOp::Stzg,
                    "st2g" => TagStoreOp::St2g,
                    _ => TagStoreOp::Stz2g,
                };
                ProcessOp::StoreTag {
                    op: Spanned::new(op, word.span()),
                    ptr: self.ptr(args.take("pointer")?)?,
                }
            }
            "settag" => {
                let ptr = self.ptr(args.take("pointer")?)?;
                let tok = args.take("length")?;
                let len = size(tok, "length")?;
                if !len.node.is_multiple_of(GRANULE_SIZE) {
                    return out_of_range(
                        tok,
                        "settag length",
                        "a multiple of 16 (the granule size)",
                    );
                }
                ProcessOp::SetTag { ptr, len }
            }
            "ldg" => ProcessOp::Ldg {
                ptr: self.ptr(args.take("pointer")?)?,
            },
            _ => {
                return fail(
                    word.span(),
                    ErrorKind::UnknownCommand {
                        found: word.text.into(),
                    },
                );
            }
        };
        Ok((op, None))
    }

    fn prctl(&self, args: &mut Args<'_, 'a>) -> PResult<PrctlSettings> {
        let mut settings = PrctlSettings::default();
        for &tok in args.rest() {
            let (key, value) = key_value(tok)?;
            let span = tok.span();
            let duplicate = match key.text {
                "tagged-addr" => settings
                    .tagged_addr
                    .replace(Spanned::new(switch(value, "tagged-addr")?.node, span))
                    .is_some(),
                "tcf" => settings
                    .tcf
                    .replace(Spanned::new(check_mode(value)?, span))
                    .is_some(),
                "include" => settings
                    .include
                    .replace(Spanned::new(mask(value, "include mask")?, span))
                    .is_some(),
                "store-only" => settings
                    .store_only
                    .replace(Spanned::new(switch(value, "store-only")?.node, span))
                    .is_some(),
                _ => {
                    return fail(
                        key.span(),
                        ErrorKind::UnknownKey {
                            key: key.text.into(),
                            command: "prctl",
                            expected: "tagged-addr, tcf, include or store-only",
                        },
                    );
                }
            };
            if duplicate {
                return fail(
                    key.span(),
                    ErrorKind::DuplicateKey {
                        key: key.text.into(),
                    },
                );
            }
        }
        Ok(settings)
    }

    fn mmap(&self, args: &mut Args<'_, 'a>) -> PResult<(ProcessOp, Option<Bind<'a>>)> {
        let (name, bind) = self.new_pointer(args.take("pointer name")?)?;
        let len = size(args.take("length")?, "length")?;
        let mut mmap = MmapArgs {
            name,
            len,
            prot: Prot::READ_WRITE,
            prot_span: None,
            map: MapList::default(),
            map_span: None,
        };
        for &tok in args.rest() {
            let (key, value) = key_value(tok)?;
            let seen = match key.text {
                "prot" => mmap.prot_span.replace(tok.span()),
                "map" => mmap.map_span.replace(tok.span()),
                _ => {
                    return fail(
                        key.span(),
                        ErrorKind::UnknownKey {
                            key: key.text.into(),
                            command: "mmap",
                            expected: "prot or map",
                        },
                    );
                }
            };
            if seen.is_some() {
                return fail(
                    key.span(),
                    ErrorKind::DuplicateKey {
                        key: key.text.into(),
                    },
                );
            }
            match key.text {
                "prot" => mmap.prot = prot_list(value)?,
                _ => mmap.map = self.map_list(value)?,
            }
        }
        Ok((ProcessOp::Mmap(Box::new(mmap)), Some(bind)))
    }

    /// `map=LIST`: at most one of `private`/`shared`, at most one of
    /// `anon`/`shm`/`file`, `populate` and `fixed=PTR` at most once each.
    fn map_list(&self, value: Token<'a>) -> PResult<MapList> {
        let mut flags = MapList::default();
        let (mut sharing, mut backing, mut populate) = (false, false, false);
        for item in list_items(value) {
            let item = item.map_err(|span| empty_item("map", span))?;
            let bad = |problem| {
                fail(
                    item.span(),
                    ErrorKind::BadListItem {
                        list: "map",
                        item: item.text.into(),
                        problem,
                    },
                )
            };
            if let Some(addr) = item.text.strip_prefix("fixed=") {
                if flags.fixed.is_some() {
                    return bad("`fixed=` given twice");
                }
                let addr = Token {
                    text: addr,
                    start: item.start + "fixed=".len() as u32,
                };
                flags.fixed = Some(self.ptr(addr)?);
                continue;
            }
            let (seen, problem) = match item.text {
                "private" | "shared" => {
                    flags.sharing = if item.text == "private" {
                        Sharing::Private
                    } else {
                        Sharing::Shared
                    };
                    (&mut sharing, "at most one of `private` and `shared`")
                }
                "anon" | "shm" | "file" => {
                    flags.backing = match item.text {
                        "anon" => Backing::Anon,
                        "shm" => Backing::Shm,
                        _ => Backing::File,
                    };
                    (&mut backing, "at most one of `anon`, `shm` and `file`")
                }
                "populate" => {
                    flags.populate = true;
                    (&mut populate, "`populate` given twice")
                }
                _ => {
                    return bad(
                        "expected private, shared, anon, shm, file, populate or fixed=ADDR",
                    );
                }
            };
            if core::mem::replace(seen, true) {
                return bad(problem);
            }
        }
        Ok(flags)
    }

    fn irg(&self, args: &mut Args<'_, 'a>) -> PResult<(ProcessOp, Option<Bind<'a>>)> {
        let (name, bind) = self.new_pointer(args.take("pointer name")?)?;
        let ptr = self.ptr(args.take("pointer")?)?;
        let mut exclude = None;
        for &tok in args.rest() {
            let (key, value) = key_value(tok)?;
            if key.text != "exclude" {
                return fail(
                    key.span(),
                    ErrorKind::UnknownKey {
                        key: key.text.into(),
                        command: "irg",
                        expected: "exclude",
                    },
                );
            }
            let mask = Spanned::new(mask(value, "exclude mask")?, tok.span());
            if exclude.replace(mask).is_some() {
                return fail(
                    key.span(),
                    ErrorKind::DuplicateKey {
                        key: key.text.into(),
                    },
                );
            }
        }
        Ok((ProcessOp::Irg { name, ptr, exclude }, Some(bind)))
    }

    fn addg(&self, args: &mut Args<'_, 'a>) -> PResult<(ProcessOp, Option<Bind<'a>>)> {
        let (name, bind) = self.new_pointer(args.take("pointer name")?)?;
        let ptr = self.ptr(args.take("pointer")?)?;
        let tok = args.take("offset")?;
        let offset = size(tok, "ADDG offset")?;
        // Arm ARM ADDG: `#<uimm6>` granules, `#<uimm4>` tag steps.
        let Ok(offset) = GranuleOffset::new(offset.node) else {
            return out_of_range(tok, "ADDG offset", "0 to 1008, a multiple of 16");
        };
        let offset = Spanned::new(offset, tok.span());
        let tok = args.take("tag offset")?;
        let Ok(tag_offset) = TagOffset::try_from(count(tok, "tag offset")?.node) else {
            return out_of_range(tok, "ADDG tag offset", "0 to 15");
        };
        Ok((
            ProcessOp::Addg {
                name,
                ptr,
                offset,
                tag_offset: Spanned::new(tag_offset, tok.span()),
            },
            Some(bind),
        ))
    }

    fn expect_stmt(&mut self, tokens: &[Token<'a>], line: Line) -> PResult<ExpectStmt> {
        let keyword = tokens[0];
        if let Some(arrow) = tokens.iter().find(|t| t.text == "=>") {
            return fail(
                arrow.span(),
                ErrorKind::Unexpected {
                    found: "=>".into(),
                    reason: "an `expect` has no outcome",
                },
            );
        }
        let mut args = Args::new(&tokens[1..], keyword);
        let second = args.take("expectation (`stat`, `invariants`, `P tags` or `P page`)")?;
        let third = tokens.get(2).map(|t| t.text);
        let expect = if matches!(third, Some("tags" | "page")) {
            let proc = self.process_ref(second)?;
            let what = args.take("`tags` or `page`")?;
            let ptr = self.ptr(args.take("pointer")?)?;
            if what.text == "tags" {
                let len = size(args.take("length")?, "length")?;
                let eq = args.take("`==`")?;
                if eq.text != "==" {
                    return fail(
                        eq.span(),
                        ErrorKind::Unexpected {
                            found: eq.text.into(),
                            reason: "expected `==` (`expect P tags PTR LEN == T`)",
                        },
                    );
                }
                let tag = tag(args.take("tag")?)?;
                Expect::Tags {
                    proc,
                    ptr,
                    len,
                    tag,
                }
            } else {
                let mut tok = args.take("page state")?;
                let mut negated = None;
                if tok.text == "not" {
                    negated = Some(tok.span());
                    tok = args.take("page state")?;
                }
                let Some(state) = PageState::from_name(tok.text) else {
                    return fail(
                        tok.span(),
                        ErrorKind::UnknownPageState {
                            found: tok.text.into(),
                        },
                    );
                };
                Expect::Page {
                    proc,
                    ptr,
                    negated,
                    state: Spanned::new(state, tok.span()),
                }
            }
        } else {
            match second.text {
                "stat" => self.stat(&mut args)?,
                "invariants" => Expect::Invariants,
                _ => {
                    // `expect p tagz ...`: the process is fine, the word
                    // after it is not.
                    if self.scope.is_process(second.text) {
                        let what = args.take("`tags` or `page`")?;
                        return fail(
                            what.span(),
                            ErrorKind::UnknownExpectation {
                                found: what.text.into(),
                            },
                        );
                    }
                    return fail(
                        second.span(),
                        ErrorKind::UnknownExpectation {
                            found: second.text.into(),
                        },
                    );
                }
            }
        };
        args.finish("expect")?;
        Ok(ExpectStmt {
            line: line.number,
            span: line_span(tokens),
            expect,
        })
    }

    fn stat(&self, args: &mut Args<'_, 'a>) -> PResult<Expect> {
        let tok = args.take("counter name")?;
        let Some(counter) = Counter::from_name(tok.text) else {
            return fail(
                tok.span(),
                ErrorKind::UnknownCounter {
                    found: tok.text.into(),
                },
            );
        };
        let counter = Spanned::new(counter, tok.span());
        if args.is_empty() {
            return Ok(Expect::Show { counter });
        }
        let tok = args.take("comparison (==, !=, <, <=, > or >=)")?;
        let op = match tok.text {
            "==" => CmpOp::Eq,
            "!=" => CmpOp::Ne,
            "<" => CmpOp::Lt,
            "<=" => CmpOp::Le,
            ">" => CmpOp::Gt,
            ">=" => CmpOp::Ge,
            _ => {
                return fail(
                    tok.span(),
                    ErrorKind::UnknownCmpOp {
                        found: tok.text.into(),
                    },
                );
            }
        };
        let op = Spanned::new(op, tok.span());
        let value = count(args.take("value")?, "counter value")?;
        Ok(Expect::Stat { counter, op, value })
    }

    fn outcome(&self, arrow: Token<'a>, tokens: &[Token<'a>]) -> PResult<Spanned<Outcome>> {
        let mut args = Args::new(tokens, arrow);
        let word = args.take("outcome")?;
        let outcome = match word.text {
            "ok" => match args.next() {
                Some(tok) => Outcome::OkCount(size(tok, "count")?.node),
                None => Outcome::Ok,
            },
            "value" => {
                let value = number128(args.take("value")?, "value", Suffix::Forbidden)?;
                Outcome::Value(value.into())
            }
            "tag" => Outcome::Tag(tag(args.take("tag")?)?.node),
            "tag-in" => Outcome::TagIn(mask(args.take("tag mask")?, "tag mask")?),
            "tags" => Outcome::Tags(tag_list(args.take("tag list")?)?.node),
            "mismatch" => Outcome::Mismatch(size(args.take("offset")?, "offset")?.node),
            "error" => {
                let tok = args.take("errno")?;
                match Errno::from_name(tok.text) {
                    Some(errno) => Outcome::Error(errno),
                    None => {
                        return fail(
                            tok.span(),
                            ErrorKind::UnknownErrno {
                                found: tok.text.into(),
                            },
                        );
                    }
                }
            }
            "stuck" => Outcome::Stuck,
            "fault" => {
                let tok = args.take("fault code")?;
                let Some(code) = FaultCode::from_name(tok.text) else {
                    return fail(
                        tok.span(),
                        ErrorKind::UnknownFaultCode {
                            found: tok.text.into(),
                        },
                    );
                };
                let addr = match args.next() {
                    Some(tok) => {
                        let (key, value) = key_value(tok)?;
                        if key.text != "addr" {
                            return fail(
                                key.span(),
                                ErrorKind::UnknownKey {
                                    key: key.text.into(),
                                    command: "fault",
                                    expected: "addr",
                                },
                            );
                        }
                        Some(Box::new(self.ptr(value)?))
                    }
                    None => None,
                };
                Outcome::Fault { code, addr }
            }
            _ => {
                return fail(
                    word.span(),
                    ErrorKind::UnknownOutcome {
                        found: word.text.into(),
                    },
                );
            }
        };
        if let Some(extra) = args.next() {
            return fail(
                extra.span(),
                ErrorKind::Unexpected {
                    found: extra.text.into(),
                    reason: "nothing may follow the outcome",
                },
            );
        }
        Ok(Spanned::new(outcome, word.span().to(args.after.span())))
    }

    /// A name about to be bound to a new process.
    fn new_process(&self, tok: Token<'a>) -> PResult<(Spanned<ProcId>, Bind<'a>)> {
        let name = name(tok)?;
        self.scope
            .check_bindable(name, NameKind::Process)
            .at(tok.span())?;
        let id = self.scope.next_process();
        Ok((Spanned::new(id, tok.span()), Bind::Process(name, id)))
    }

    /// A name about to be bound to a pointer.
    fn new_pointer(&self, tok: Token<'a>) -> PResult<(Spanned<PtrSlot>, Bind<'a>)> {
        let name = name(tok)?;
        self.scope
            .check_bindable(name, NameKind::Pointer)
            .at(tok.span())?;
        let slot = self.scope.next_pointer(name);
        Ok((Spanned::new(slot, tok.span()), Bind::Pointer(name, slot)))
    }

    /// A use of a process name.
    fn process_ref(&self, tok: Token<'a>) -> PResult<Spanned<ProcId>> {
        let name = name(tok)?;
        let id = self.scope.process(name).at(tok.span())?;
        Ok(Spanned::new(id, tok.span()))
    }

    /// A pointer expression: `NAME`, `NAME+OFF`, `NAME-OFF`, `NAME#T`,
    /// `NAME+OFF#T`, `NAME-OFF#T`, or a raw address literal.
    fn ptr(&self, tok: Token<'a>) -> PResult<PtrExpr> {
        let text = tok.text;
        let bytes = text.as_bytes();
        let bad = |from: usize, to: usize, problem| {
            fail(
                tok.sub_span(from, to),
                ErrorKind::BadPointer {
                    text: text.into(),
                    problem,
                },
            )
        };
        match bytes.first() {
            None => return bad(0, 0, "empty pointer"),
            Some(b'0'..=b'9') => {
                // A plain literal has no `+`, `-` or `#` (not digits): one
                // pass over the bytes for the common case of a trace.
                if let Some(raw) = plain_u64(text) {
                    return Ok(PtrExpr {
                        span: tok.span(),
                        base: PtrBase::Raw(TaggedPtr::from_raw(raw)),
                        tag: None,
                    });
                }
                // A byte scan: a raw address is most of a trace line, and
                // `str::find` with a set of chars decodes every character.
                if let Some(i) = bytes.iter().position(|&b| matches!(b, b'+' | b'-' | b'#')) {
                    return bad(
                        i,
                        i + 1,
                        "a raw address takes no offset or tag (its bits 59:56 are its tag)",
                    );
                }
                let raw = number(tok, "address", Suffix::Forbidden)?;
                return Ok(PtrExpr {
                    span: tok.span(),
                    base: PtrBase::Raw(TaggedPtr::from_raw(raw.node)),
                    tag: None,
                });
            }
            Some(b'a'..=b'z' | b'_') => {}
            Some(_) => return bad(0, 1, "expected a pointer name or an address"),
        }
        let name_len = bytes
            .iter()
            .position(|&b| !is_name_byte(b))
            .unwrap_or(bytes.len());
        let name_tok = Token {
            text: &text[..name_len],
            start: tok.start,
        };
        let slot = self.scope.pointer(name(name_tok)?).at(name_tok.span())?;
        let mut i = name_len;
        let mut offset = 0i64;
        if let Some(&sign @ (b'+' | b'-')) = bytes.get(i) {
            let from = i + 1;
            let to = bytes[from..]
                .iter()
                .position(|&b| b == b'#')
                .map_or(text.len(), |k| from + k);
            if from == to {
                let problem = if sign == b'+' {
                    "missing offset after `+`"
                } else {
                    "missing offset after `-`"
                };
                return bad(i, from, problem);
            }
            let off_tok = Token {
                text: &text[from..to],
                start: tok.start + from as u32,
            };
            let magnitude = number(off_tok, "offset", Suffix::Allowed)?;
            let Ok(magnitude) = i64::try_from(magnitude.node) else {
                return out_of_range(off_tok, "offset", "at most 2^63 - 1 bytes");
            };
            offset = if sign == b'+' { magnitude } else { -magnitude };
            i = to;
        }
        let mut tag_value = None;
        if bytes.get(i) == Some(&b'#') {
            if i + 1 == bytes.len() {
                return bad(i, i + 1, "missing tag after `#`");
            }
            let tag_tok = Token {
                text: &text[i + 1..],
                start: tok.start + i as u32 + 1,
            };
            tag_value = Some(tag(tag_tok)?.node);
            i = bytes.len();
        }
        if i < bytes.len() {
            return bad(
                i,
                i + 1,
                "unexpected character (a pointer is NAME, NAME+OFF, NAME-OFF, NAME#T, NAME+OFF#T or an address)",
            );
        }
        Ok(PtrExpr {
            span: tok.span(),
            base: PtrBase::Slot { slot, offset },
            tag: tag_value,
        })
    }
}

/// The arguments of a statement, consumed left to right.
struct Args<'t, 'a> {
    tokens: &'t [Token<'a>],
    next: usize,
    /// The last token consumed (the statement's first before any): a missing
    /// argument is reported just after it.
    after: Token<'a>,
}

impl<'t, 'a> Args<'t, 'a> {
    fn new(tokens: &'t [Token<'a>], before: Token<'a>) -> Args<'t, 'a> {
        Args {
            tokens,
            next: 0,
            after: before,
        }
    }

    fn next(&mut self) -> Option<Token<'a>> {
        let tok = *self.tokens.get(self.next)?;
        self.next += 1;
        self.after = tok;
        Some(tok)
    }

    fn take(&mut self, what: &'static str) -> PResult<Token<'a>> {
        match self.next() {
            Some(tok) => Ok(tok),
            None => {
                let end = self.after.span().end;
                fail(
                    Span::new(end, end),
                    ErrorKind::Missing {
                        what,
                        after: self.after.text.into(),
                    },
                )
            }
        }
    }

    /// No argument is left.
    fn is_empty(&self) -> bool {
        self.next >= self.tokens.len()
    }

    /// Every remaining token.
    fn rest(&mut self) -> &'t [Token<'a>] {
        let rest = &self.tokens[self.next.min(self.tokens.len())..];
        if let Some(&last) = rest.last() {
            self.after = last;
        }
        self.next = self.tokens.len();
        rest
    }

    fn finish(&self, command: &'static str) -> PResult<()> {
        match self.tokens.get(self.next) {
            None => Ok(()),
            Some(tok) => fail(
                tok.span(),
                ErrorKind::Unexpected {
                    found: tok.text.into(),
                    reason: too_many_reason(command),
                },
            ),
        }
    }
}

fn too_many_reason(command: &str) -> &'static str {
    match command {
        "expect" => "too many words for this expectation",
        "exit" | "prctl-get" | "exec" | "yield" | "compact" | "ksm-scan" => {
            "this command takes no arguments"
        }
        _ => "too many arguments for this command",
    }
}

fn no_more(tokens: &[Token<'_>], reason: &'static str) -> PResult<()> {
    match tokens.first() {
        None => Ok(()),
        Some(tok) => fail(
            tok.span(),
            ErrorKind::Unexpected {
                found: tok.text.into(),
                reason,
            },
        ),
    }
}

/// From the first token's start to the last one's end.
fn line_span(tokens: &[Token<'_>]) -> Span {
    match (tokens.first(), tokens.last()) {
        (Some(first), Some(last)) => first.span().to(last.span()),
        _ => Span::default(),
    }
}

fn is_name_byte(b: u8) -> bool {
    matches!(b, b'a'..=b'z' | b'0'..=b'9' | b'_')
}

/// `[a-z_][a-z0-9_]*`.
fn is_name(text: &str) -> bool {
    let bytes = text.as_bytes();
    matches!(bytes.first(), Some(b'a'..=b'z' | b'_')) && bytes.iter().all(|&b| is_name_byte(b))
}

/// A name that is not a keyword.
fn name<'a>(tok: Token<'a>) -> PResult<&'a str> {
    if KEYWORDS.contains(&tok.text) {
        return fail(
            tok.span(),
            ErrorKind::KeywordAsName {
                found: tok.text.into(),
            },
        );
    }
    if !is_name(tok.text) {
        return fail(
            tok.span(),
            ErrorKind::BadName {
                found: tok.text.into(),
            },
        );
    }
    Ok(tok.text)
}

/// `KEY=VALUE`, split at the first `=`.
fn key_value<'a>(tok: Token<'a>) -> PResult<(Token<'a>, Token<'a>)> {
    match tok.text.split_once('=') {
        Some((key, value)) if !key.is_empty() => Ok((
            Token {
                text: key,
                start: tok.start,
            },
            Token {
                text: value,
                start: tok.start + key.len() as u32 + 1,
            },
        )),
        _ => fail(
            tok.span(),
            ErrorKind::ExpectedKeyValue {
                found: tok.text.into(),
            },
        ),
    }
}

/// The comma-separated items of a list token; an empty item is an `Err`
/// with its (empty) span.
fn list_items<'a>(tok: Token<'a>) -> impl Iterator<Item = Result<Token<'a>, Span>> {
    let mut offset = 0usize;
    tok.text.split(',').map(move |item| {
        let start = tok.start + offset as u32;
        offset += item.len() + 1;
        if item.is_empty() {
            Err(Span::new(start, start))
        } else {
            Ok(Token { text: item, start })
        }
    })
}

fn empty_item(list: &'static str, span: Span) -> Fail {
    Fail {
        span,
        kind: ErrorKind::BadListItem {
            list,
            item: String::new(),
            problem: "empty item (items are separated by single commas, with no spaces)",
        },
    }
}

fn number_error(tok: Token<'_>, what: &'static str, source: NumError) -> Fail {
    Fail {
        span: tok.span(),
        kind: ErrorKind::Number {
            what,
            text: tok.text.into(),
            source,
        },
    }
}

fn number(tok: Token<'_>, what: &'static str, suffix: Suffix) -> PResult<Spanned<u64>> {
    let value = match plain_u64(tok.text) {
        Some(n) => Ok(n),
        None => num::parse_u64(tok.text, suffix),
    };
    value
        .map(|n| Spanned::new(n, tok.span()))
        .map_err(|source| number_error(tok, what, source))
}

fn number128(tok: Token<'_>, what: &'static str, suffix: Suffix) -> PResult<u128> {
    match plain_u64(tok.text) {
        Some(n) => Ok(u128::from(n)),
        None => num::parse_u128(tok.text, suffix).map_err(|source| number_error(tok, what, source)),
    }
}

/// The value of a literal that `platform::num` would certainly accept with
/// the same value: decimal of at most 19 digits or hex of at most 16, `_`
/// only between digits, no suffix. `None` for anything else, which then goes
/// to `platform::num` for its value or its error. Traces are mostly such
/// literals, and this path does them in `u64` arithmetic without overflow
/// checks (`platform::num` works in checked `u128`).
fn plain_u64(text: &str) -> Option<u64> {
    let (digits, radix, max_digits) = match text.strip_prefix("0x") {
        Some(hex) => (hex.as_bytes(), 16u8, 16),
        None => (text.as_bytes(), 10u8, 19),
    };
    // Digits only (the usual case): a shift or multiply and an add each.
    if (1..=max_digits).contains(&digits.len()) {
        let mut value = 0u64;
        let mut all_digits = true;
        for &b in digits {
            let digit = DIGIT_VALUE[usize::from(b)];
            all_digits &= digit < radix;
            value = value
                .wrapping_mul(u64::from(radix))
                .wrapping_add(u64::from(digit));
        }
        if all_digits {
            return Some(value);
        }
    }
    let mut value = 0u64;
    let mut count = 0;
    let mut after_digit = false;
    for (i, &b) in digits.iter().enumerate() {
        let digit = DIGIT_VALUE[usize::from(b)];
        if digit < radix {
            // Wraps only past `max_digits` digits, which are refused below.
            value = value
                .wrapping_mul(u64::from(radix))
                .wrapping_add(u64::from(digit));
            count += 1;
            after_digit = true;
        } else if digit == SEPARATOR && after_digit && i + 1 < digits.len() {
            after_digit = false;
        } else {
            return None;
        }
    }
    (count > 0 && count <= max_digits && after_digit).then_some(value)
}

/// [`DIGIT_VALUE`] of `_`.
const SEPARATOR: u8 = 0xfe;

/// The value of each byte as a hex digit (`0`-`9`, `a`-`f`, `A`-`F`),
/// [`SEPARATOR`] for `_`, `0xff` for anything else: one load per byte
/// instead of a chain of range tests.
const DIGIT_VALUE: [u8; 256] = {
    let mut table = [0xff; 256];
    let mut b = 0;
    while b < 256 {
        table[b] = match b as u8 {
            c @ b'0'..=b'9' => c - b'0',
            c @ b'a'..=b'f' => c - b'a' + 10,
            c @ b'A'..=b'F' => c - b'A' + 10,
            b'_' => SEPARATOR,
            _ => 0xff,
        };
        b += 1;
    }
    table
};

/// A size, length or offset: may carry a `K`/`M`/`G`/`T` suffix.
fn size(tok: Token<'_>, what: &'static str) -> PResult<Spanned<u64>> {
    number(tok, what, Suffix::Allowed)
}

/// A plain count: no suffix.
fn count(tok: Token<'_>, what: &'static str) -> PResult<Spanned<u64>> {
    number(tok, what, Suffix::Forbidden)
}

fn out_of_range<T>(tok: Token<'_>, what: &'static str, expected: &'static str) -> PResult<T> {
    fail(
        tok.span(),
        ErrorKind::OutOfRange {
            what,
            text: tok.text.into(),
            expected,
        },
    )
}

fn tag(tok: Token<'_>) -> PResult<Spanned<Tag>> {
    let value = count(tok, "tag")?;
    match Tag::try_from(value.node).ok() {
        Some(tag) => Ok(Spanned::new(tag, tok.span())),
        None => fail(
            tok.span(),
            ErrorKind::TagAbove15 {
                text: tok.text.into(),
            },
        ),
    }
}

/// `T,T,...`.
fn tag_list(tok: Token<'_>) -> PResult<Spanned<Box<[Tag]>>> {
    let mut tags = Vec::new();
    for item in list_items(tok) {
        let item = item.map_err(|span| empty_item("tags", span))?;
        tags.push(tag(item)?.node);
    }
    Ok(Spanned::new(tags.into_boxed_slice(), tok.span()))
}

fn mask(tok: Token<'_>, what: &'static str) -> PResult<TagMask> {
    let value = count(tok, what)?;
    match u16::try_from(value.node) {
        Ok(bits) => Ok(TagMask::from_bits(bits)),
        Err(_) => out_of_range(tok, what, "a 16-bit mask, at most 0xffff"),
    }
}

fn byte(tok: Token<'_>) -> PResult<Spanned<u8>> {
    let value = count(tok, "byte value")?;
    match u8::try_from(value.node) {
        Ok(b) => Ok(Spanned::new(b, tok.span())),
        Err(_) => out_of_range(tok, "byte value", "at most 255 (0xff)"),
    }
}

fn access_size(tok: Token<'_>) -> PResult<Spanned<AccessSize>> {
    let bytes = count(tok, "access size")?;
    match AccessSize::from_bytes(bytes.node) {
        Some(size) => Ok(Spanned::new(size, tok.span())),
        None => out_of_range(tok, "access size", "1, 2, 4, 8 or 16 bytes"),
    }
}

/// The optional `longterm=on|off` of `pin` (default on, spanning the
/// command word when absent).
fn pin_longterm(rest: &[Token<'_>], word: Token<'_>) -> PResult<Spanned<Switch>> {
    let mut longterm: Option<Spanned<Switch>> = None;
    for &tok in rest {
        let (key, value) = key_value(tok)?;
        if key.text != "longterm" {
            return fail(
                key.span(),
                ErrorKind::UnknownKey {
                    key: key.text.into(),
                    command: "pin",
                    expected: "longterm",
                },
            );
        }
        let parsed = switch(value, "longterm")?;
        if longterm.replace(parsed).is_some() {
            return fail(
                key.span(),
                ErrorKind::DuplicateKey {
                    key: key.text.into(),
                },
            );
        }
    }
    Ok(longterm.unwrap_or_else(|| Spanned::new(Switch::On, word.span())))
}

fn switch(tok: Token<'_>, what: &'static str) -> PResult<Spanned<Switch>> {
    let value = match tok.text {
        "on" => Switch::On,
        "off" => Switch::Off,
        _ => {
            return fail(
                tok.span(),
                ErrorKind::BadChoice {
                    what,
                    found: tok.text.into(),
                    expected: "`on` or `off`",
                },
            );
        }
    };
    Ok(Spanned::new(value, tok.span()))
}

fn check_mode(tok: Token<'_>) -> PResult<CheckMode> {
    Ok(match tok.text {
        "none" => CheckMode::None,
        "sync" => CheckMode::Sync,
        "async" => CheckMode::Async,
        "asymm" => CheckMode::Asymm,
        _ => {
            return fail(
                tok.span(),
                ErrorKind::BadChoice {
                    what: "tag check mode",
                    found: tok.text.into(),
                    expected: "none, sync, async or asymm",
                },
            );
        }
    })
}

fn advice(tok: Token<'_>) -> PResult<Spanned<Advice>> {
    match ADVICES.into_iter().find(|&a| advice_name(a) == tok.text) {
        Some(advice) => Ok(Spanned::new(advice, tok.span())),
        None => fail(
            tok.span(),
            ErrorKind::BadChoice {
                what: "advice",
                found: tok.text.into(),
                expected: "dontneed, pageout, hugepage, nohugepage, mergeable or unmergeable",
            },
        ),
    }
}

/// `prot=LIST`: `none` alone, or each of `r,w,x,mte` at most once.
fn prot_list(value: Token<'_>) -> PResult<Prot> {
    let mut prot = Prot::NONE;
    let mut none = false;
    let mut any = false;
    for item in list_items(value) {
        let item = item.map_err(|span| empty_item("prot", span))?;
        let bad = |problem| {
            fail(
                item.span(),
                ErrorKind::BadListItem {
                    list: "prot",
                    item: item.text.into(),
                    problem,
                },
            )
        };
        let flag = match item.text {
            "none" => {
                if any {
                    return bad("`none` cannot be combined with other protections");
                }
                none = true;
                continue;
            }
            "r" => &mut prot.read,
            "w" => &mut prot.write,
            "x" => &mut prot.exec,
            "mte" => &mut prot.mte,
            _ => return bad("expected none, r, w, x or mte"),
        };
        if none {
            return bad("`none` cannot be combined with other protections");
        }
        if core::mem::replace(flag, true) {
            return bad("given twice");
        }
        any = true;
    }
    Ok(prot)
}

/// The outcome must be one `command` can produce, and must be able to hold.
fn check_outcome(command: &Command, outcome: &Spanned<Outcome>) -> PResult<()> {
    let kind = outcome.node.kind();
    if !command.accepts(kind) {
        let possible: Vec<&str> = OutcomeKind::ALL
            .into_iter()
            .filter(|&k| command.accepts(k))
            .map(OutcomeKind::syntax)
            .collect();
        return fail(
            outcome.span,
            ErrorKind::ImpossibleOutcome {
                command: command.name(),
                outcome: kind.syntax(),
                possible: possible.join(", "),
            },
        );
    }
    let Command::Process { op, .. } = command else {
        return Ok(());
    };
    let never = |problem: String| fail(outcome.span, ErrorKind::OutcomeNeverMatches { problem });
    match (&op.node, &outcome.node) {
        (ProcessOp::Load { size, .. }, Outcome::Value(v)) if v.get() > size.node.max_value() => {
            fail(
                outcome.span,
                ErrorKind::ValueTooWide {
                    text: format!("{:#x}", v.get()),
                    bytes: size.node.bytes(),
                    access: "load",
                },
            )
        }
        (ProcessOp::PrctlGet, Outcome::Value(v)) if v.get() > u128::from(u64::MAX) => {
            never(format!(
                "`value {:#x}` can never hold: PR_GET_TAGGED_ADDR_CTRL returns 64 bits",
                v.get()
            ))
        }
        (ProcessOp::WriteFd { len, .. } | ProcessOp::ReadFd { len, .. }, Outcome::OkCount(n))
            if *n > len.node =>
        {
            never(format!(
                "`ok {n}` can never hold: the call copies at most {} bytes",
                len.node
            ))
        }
        (ProcessOp::PokeTags { tags, .. }, Outcome::OkCount(n)) if *n > tags.node.len() as u64 => {
            never(format!(
                "`ok {n}` can never hold: only {} tags are written",
                tags.node.len()
            ))
        }
        (ProcessOp::PeekTags { granules, .. }, Outcome::Tags(tags))
            if tags.len() as u64 > granules.node =>
        {
            never(format!(
                "{} tags can never be read: `peektags` reads at most {} granules",
                tags.len(),
                granules.node
            ))
        }
        (ProcessOp::Verify { len, .. }, Outcome::Mismatch(offset)) if *offset >= len.node => {
            never(format!(
                "`mismatch {offset}` can never hold: `verify` checks offsets 0 to {} only",
                len.node.saturating_sub(1)
            ))
        }
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok(src: &str) -> Script {
        parse("t.mte", src.as_bytes()).unwrap_or_else(|e| panic!("{e}"))
    }

    /// The commands of a script's top-level command statements.
    fn commands(script: &Script) -> Vec<&CommandStmt> {
        script
            .stmts
            .iter()
            .filter_map(|s| match s {
                Stmt::Command(c) => Some(c),
                _ => None,
            })
            .collect()
    }

    fn op(stmt: &CommandStmt) -> &ProcessOp {
        match &stmt.command {
            Command::Process { op, .. } => &op.node,
            other => panic!("not a process command: {other:?}"),
        }
    }

    fn load_ptr(stmt: &CommandStmt) -> PtrExpr {
        match op(stmt) {
            ProcessOp::Load { ptr, .. } => *ptr,
            other => panic!("not a load: {other:?}"),
        }
    }

    const PREFIX: &str = "spawn p\np mmap buf 64K prot=r,w,mte\n";

    #[test]
    fn plain_literals_take_the_fast_path_with_platform_nums_value() {
        for (text, value) in [
            ("0", Some(0)),
            ("4096", Some(4096)),
            ("0x7f00_0000", Some(0x7f00_0000)),
            ("0xFFFF_ffff_ffff_ffff", Some(u64::MAX)),
            ("9999999999999999999", Some(9_999_999_999_999_999_999)),
            // Everything else goes to platform::num.
            ("18446744073709551615", None),
            ("0x1_0000_0000_0000_0000", None),
            ("4K", None),
            ("_1", None),
            ("1_", None),
            ("1__0", None),
            ("0x", None),
            ("", None),
            ("0X10", None),
            ("12a", None),
        ] {
            assert_eq!(plain_u64(text), value, "{text}");
            if let Some(v) = value {
                assert_eq!(num::parse_u64(text, Suffix::Forbidden), Ok(v), "{text}");
            }
        }
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(1024))]

        /// The fast path never disagrees with `platform::num`.
        #[test]
        fn plain_u64_agrees_with_platform_num(text in "(0x)?[0-9a-fA-F_KxX]{0,24}") {
            if let Some(v) = plain_u64(&text) {
                proptest::prop_assert_eq!(num::parse_u64(&text, Suffix::Forbidden), Ok(v));
                proptest::prop_assert_eq!(num::parse_u64(&text, Suffix::Allowed), Ok(v));
            }
        }
    }

    #[test]
    fn pointer_forms() {
        // Spec, Pointers: name, +/- offsets with suffixes, #T, raw addresses.
        let script = ok(&format!(
            "{PREFIX}p load buf 8\np load buf+0x20 8\np load buf-16 8\np load buf+512K 8\n\
             p load buf+0x20#5 8\np load buf#15 8\np load buf-0x10#0 8\n\
             p load 0x0500_7f00_0000_1020 8\n"
        ));
        let slot = Some(PtrSlot(0));
        let loads: Vec<_> = commands(&script)[2..].iter().map(|c| load_ptr(c)).collect();
        let shape = |p: &PtrExpr| (p.slot(), p.offset(), p.tag.map(Tag::value));
        assert_eq!(shape(&loads[0]), (slot, 0, None));
        assert_eq!(shape(&loads[1]), (slot, 0x20, None));
        assert_eq!(shape(&loads[2]), (slot, -16, None));
        assert_eq!(shape(&loads[3]), (slot, 512 << 10, None));
        assert_eq!(shape(&loads[4]), (slot, 0x20, Some(5)));
        assert_eq!(shape(&loads[5]), (slot, 0, Some(15)));
        assert_eq!(shape(&loads[6]), (slot, -0x10, Some(0)));
        let PtrBase::Raw(raw) = loads[7].base else {
            panic!("{:?}", loads[7])
        };
        assert_eq!(raw.raw(), 0x0500_7f00_0000_1020);
        assert_eq!(raw.tag().value(), 5, "bits 59:56 are the logical tag");
        // Spans cover the pointer token: `buf+0x20#5` on line 7 at column 8.
        let src = format!("{PREFIX}p load buf+0x20#5 8\n");
        let script = ok(&src);
        let ptr = load_ptr(commands(&script)[2]);
        assert_eq!(&src[ptr.span.range()], "buf+0x20#5");
    }

    #[test]
    fn mmap_defaults_and_flags() {
        let script = ok("spawn p\np mmap a 4K\n\
             p mmap b 2M prot=none map=shared,shm\n\
             p mmap c 1M map=populate,fixed=0x1000_0000,file prot=r,x,mte\n");
        let mmaps: Vec<_> = commands(&script)[1..]
            .iter()
            .map(|c| match op(c) {
                ProcessOp::Mmap(m) => m.clone(),
                other => panic!("{other:?}"),
            })
            .collect();
        // Spec: defaults `prot=r,w map=private,anon`.
        assert_eq!(mmaps[0].prot, Prot::READ_WRITE);
        assert_eq!(mmaps[0].map, MapList::default());
        assert_eq!((mmaps[0].prot_span, mmaps[0].map_span), (None, None));
        assert_eq!(mmaps[0].len.node, 4096);
        assert_eq!(mmaps[1].prot, Prot::NONE);
        assert_eq!(
            (
                mmaps[1].map.sharing,
                mmaps[1].map.backing,
                mmaps[1].map.populate
            ),
            (Sharing::Shared, Backing::Shm, false)
        );
        assert_eq!(
            mmaps[2].prot,
            Prot {
                read: true,
                write: false,
                exec: true,
                mte: true
            }
        );
        let map = &mmaps[2].map;
        assert_eq!(
            (map.sharing, map.backing, map.populate),
            (Sharing::Private, Backing::File, true)
        );
        let fixed = map.fixed.expect("fixed=");
        assert_eq!(fixed.base, PtrBase::Raw(TaggedPtr::from_raw(0x1000_0000)));
        assert_eq!(
            [mmaps[0].name.node, mmaps[1].name.node, mmaps[2].name.node],
            [PtrSlot(0), PtrSlot(1), PtrSlot(2)]
        );
    }

    #[test]
    fn prctl_keys_left_out_stay_none() {
        let script = ok(
            "spawn p\np prctl tagged-addr=on tcf=asymm include=0xfffe store-only=off\n\
             p prctl tcf=none\np prctl\np tco on\n",
        );
        let c = commands(&script);
        let ProcessOp::Prctl(all) = op(c[1]) else {
            panic!()
        };
        assert_eq!(all.tagged_addr.map(|s| s.node), Some(Switch::On));
        assert_eq!(all.tcf.map(|s| s.node), Some(CheckMode::Asymm));
        assert_eq!(all.include.map(|s| s.node.bits()), Some(0xfffe));
        assert_eq!(all.store_only.map(|s| s.node), Some(Switch::Off));
        let ProcessOp::Prctl(one) = op(c[2]) else {
            panic!()
        };
        assert_eq!(
            (one.tagged_addr, one.include, one.store_only),
            (None, None, None)
        );
        assert_eq!(one.tcf.map(|s| s.node), Some(CheckMode::None));
        assert_eq!(op(c[3]), &ProcessOp::Prctl(PrctlSettings::default()));
        assert!(matches!(op(c[4]), ProcessOp::Tco(s) if s.node == Switch::On));
    }

    #[test]
    fn every_outcome() {
        let script = ok(&format!(
            "{PREFIX}p yield => ok\np write-fd buf 64 => ok 48\np load buf 8 => value 0x0\n\
             p ldg buf => tag 7\np irg t buf exclude=1 => tag-in 0xfffe\n\
             p peektags p buf 3 => tags 1,2,15\np verify buf 4K 0 => mismatch 0x10\n\
             p munmap buf 4K => error EINVAL\np load buf#3 8 => fault SEGV_MTESERR addr=buf+0x40\n\
             p yield => fault SEGV_MTEAERR\np load buf 16 => value 0xffff_ffff_ffff_ffff_ffff_ffff_ffff_ffff\n"
        ));
        let outcomes: Vec<_> = commands(&script)[2..]
            .iter()
            .map(|c| c.outcome.clone().expect("an outcome").node)
            .collect();
        assert_eq!(outcomes[0], Outcome::Ok);
        assert_eq!(outcomes[1], Outcome::OkCount(48));
        // Spec: "values in outcomes compare as numbers".
        assert_eq!(outcomes[2], Outcome::Value(0.into()));
        assert_eq!(outcomes[3], Outcome::Tag(Tag::new(7).unwrap()));
        assert_eq!(outcomes[4], Outcome::TagIn(TagMask::from_bits(0xfffe)));
        let tags: Vec<u8> = match &outcomes[5] {
            Outcome::Tags(t) => t.iter().map(|t| t.value()).collect(),
            other => panic!("{other:?}"),
        };
        assert_eq!(tags, [1, 2, 15]);
        assert_eq!(outcomes[6], Outcome::Mismatch(16));
        assert_eq!(outcomes[7], Outcome::Error(Errno::Inval));
        let Outcome::Fault {
            code,
            addr: Some(addr),
        } = &outcomes[8]
        else {
            panic!("{:?}", outcomes[8])
        };
        assert_eq!((*code, addr.offset()), (FaultCode::SegvMteSerr, 0x40));
        assert_eq!(
            outcomes[9],
            Outcome::Fault {
                code: FaultCode::SegvMteAerr,
                addr: None
            }
        );
        assert_eq!(outcomes[10], Outcome::Value(u128::MAX.into()));
    }

    #[test]
    fn stores_take_values_up_to_their_width() {
        let script = ok(&format!(
            "{PREFIX}p store buf 1 0xff\np store buf 16 0x1_0000_0000_0000_0000\n"
        ));
        let values: Vec<(u64, u128)> = commands(&script)[2..]
            .iter()
            .map(|c| match op(c) {
                ProcessOp::Store { size, value, .. } => (size.node.bytes(), value.node.get()),
                other => panic!("{other:?}"),
            })
            .collect();
        assert_eq!(values, [(1, 0xff), (16, 1 << 64)]);
    }

    #[test]
    fn instructions() {
        let script = ok(&format!(
            "{PREFIX}p irg t buf\np addg u t 1008 15\np stg t\np stzg t\np st2g t\np stz2g t\n\
             p settag t 4K\np ldg u\n"
        ));
        let c = commands(&script);
        assert!(
            matches!(op(c[2]), ProcessOp::Irg { name, exclude: None, .. } if name.node == PtrSlot(1))
        );
        let ProcessOp::Addg {
            name,
            ptr,
            offset,
            tag_offset,
        } = op(c[3])
        else {
            panic!()
        };
        assert_eq!((name.node, ptr.slot()), (PtrSlot(2), Some(PtrSlot(1))));
        assert_eq!((offset.node.bytes(), tag_offset.node.steps()), (1008, 15));
        let ops: Vec<_> = c[4..8]
            .iter()
            .map(|c| match op(c) {
                ProcessOp::StoreTag { op, .. } => op.node,
                other => panic!("{other:?}"),
            })
            .collect();
        assert_eq!(
            ops,
            [
                TagStoreOp::Stg,
                TagStoreOp::Stzg,
                TagStoreOp::St2g,
                TagStoreOp::Stz2g
            ]
        );
        assert!(matches!(op(c[8]), ProcessOp::SetTag { len, .. } if len.node == 4096));
    }

    #[test]
    fn expectations() {
        let script = ok(&format!(
            "{PREFIX}expect stat tag_storage.reserved >= 8\nexpect invariants\n\
             expect p tags buf 16K == 0\nexpect p page buf not in-tag-storage\n\
             expect p page buf+4K zero-page\n"
        ));
        let expects: Vec<_> = script
            .stmts
            .iter()
            .filter_map(|s| match s {
                Stmt::Expect(e) => Some(&e.expect),
                _ => None,
            })
            .collect();
        let Expect::Stat { counter, op, value } = expects[0] else {
            panic!()
        };
        assert_eq!(
            (counter.node, op.node, value.node),
            (Counter::TagStorageReserved, CmpOp::Ge, 8)
        );
        assert_eq!(expects[1], &Expect::Invariants);
        assert!(
            matches!(expects[2], Expect::Tags { len, tag, .. } if len.node == 16 << 10 && tag.node == Tag::ZERO)
        );
        assert!(
            matches!(expects[3], Expect::Page { negated: Some(_), state, .. } if state.node == PageState::InTagStorage)
        );
        assert!(
            matches!(expects[4], Expect::Page { negated: None, state, ptr, .. } if state.node == PageState::ZeroPage && ptr.offset() == 4096)
        );
    }

    #[test]
    fn command_words_are_not_keywords() {
        // Only the eight keywords are reserved: a process may be called
        // `stat` or `load`, and `expect stat page ...` is then a page test.
        let script = ok(
            "spawn stat\nspawn load\nload mmap tags 4K\nexpect stat page tags tagged\n\
             expect stat mem.free > 0\nload load tags 8\n",
        );
        assert_eq!(script.names.processes, ["stat".into(), "load".into()]);
        assert!(
            matches!(&script.stmts[3], Stmt::Expect(ExpectStmt { expect: Expect::Page { proc, .. }, .. }) if proc.node == ProcId(0))
        );
        assert!(matches!(
            &script.stmts[4],
            Stmt::Expect(ExpectStmt {
                expect: Expect::Stat { .. },
                ..
            })
        ));
    }

    #[test]
    fn pointer_rebinding_reuses_its_slot_and_processes_are_dense() {
        let script = ok("spawn p\np fork q\np mmap a 4K\np mmap a 8K\nq irg a a\n");
        assert_eq!(script.names.processes.len(), 2);
        assert_eq!(script.names.pointers.len(), 1);
        let c = commands(&script);
        assert!(matches!(op(c[1]), ProcessOp::Fork { child } if child.node == ProcId(1)));
        assert!(matches!(&c[4].command, Command::Process { proc, .. } if proc.node == ProcId(1)));
    }

    #[test]
    fn parallel_blocks_bind_after_end() {
        let src = "spawn p\np mmap a 4K\nparallel\n  p mmap a 8K\n  p load a 8\n  p fork q\nend\n\
                   q load a 8\n";
        let script = ok(src);
        let Stmt::Parallel(block) = &script.stmts[2] else {
            panic!("{:?}", script.stmts[2])
        };
        assert_eq!(
            (block.line, block.end_line, block.commands.len()),
            (3, 7, 3)
        );
        assert_eq!(block.commands[1].line, 5);
        // The rebinding gets a fresh slot; the load in the block reads the old.
        let ProcessOp::Mmap(m) = op(&block.commands[0]) else {
            panic!()
        };
        assert_eq!(m.name.node, PtrSlot(1));
        assert_eq!(load_ptr(&block.commands[1]).slot(), Some(PtrSlot(0)));
        // After `end`, `a` is the new slot and `q` exists.
        let Stmt::Command(after) = &script.stmts[3] else {
            panic!()
        };
        assert_eq!(load_ptr(after).slot(), Some(PtrSlot(1)));
        assert_eq!(script.names.pointers, ["a".into(), "a".into()]);
        // An empty block is accepted and runs nothing.
        assert!(parse("t.mte", b"parallel\nend\n").is_ok());
    }

    #[test]
    fn machine_commands() {
        let script = ok("reclaim 128 => ok\ncompact\nksm-scan => ok\n");
        let c = commands(&script);
        assert!(matches!(c[0].command, Command::Reclaim { pages } if pages.node == 128));
        assert_eq!(c[1].command, Command::Compact);
        assert_eq!(c[2].command, Command::KsmScan);
    }

    #[test]
    fn platform_line_sets_the_spec_and_cpus() {
        let src =
            "# machine\nplatform memory=128M tag-storage=static cpus=2 block-size=64K\nspawn p\n";
        let script = ok(src);
        let platform = script.platform.as_ref().unwrap();
        assert_eq!(platform.line, 2);
        assert_eq!(platform.spec.memory, 128 << 20);
        assert_eq!(platform.spec.cpus, 2);
        assert_eq!(platform.spec.block_size(), 64 << 10);
        let setting = platform.setting("block-size").unwrap();
        assert_eq!(&src[setting.key_span.range()], "block-size");
        assert_eq!(&src[setting.value_span.range()], "64K");
        assert_eq!(script.platform_spec(), platform.spec);
        assert_eq!(ok("spawn p\n").platform_spec(), PlatformSpec::default());
    }

    #[test]
    fn statements_carry_lines_and_spans() {
        let src = "\n# c\n  spawn p   # trailing\r\np yield => ok\n";
        let script = ok(src);
        let c = commands(&script);
        assert_eq!((c[0].line, &src[c[0].span.range()]), (3, "spawn p"));
        assert_eq!((c[1].line, &src[c[1].span.range()]), (4, "p yield => ok"));
        assert_eq!(&src[c[1].outcome.as_ref().unwrap().span.range()], "ok");
        let Command::Process { proc, op } = &c[1].command else {
            panic!()
        };
        assert_eq!(
            (&src[proc.span.range()], &src[op.span.range()]),
            ("p", "yield")
        );
    }

    #[test]
    fn streaming_gives_the_same_statements() {
        let src = b"platform cpus=3\nspawn p\nparallel\np yield\nend\nexpect invariants\n";
        let script = parse("t.mte", src).unwrap();
        let mut stream = Statements::new("t.mte", src);
        let streamed: Vec<Stmt> = (&mut stream).map(Result::unwrap).collect();
        assert_eq!(streamed, script.stmts);
        assert_eq!(stream.platform().map(|p| p.spec.cpus), Some(3));
        let mut bad = Statements::new("t.mte", b"spawn p\nbogus\nspawn q\n");
        assert!(matches!(bad.next(), Some(Ok(_))));
        assert!(matches!(bad.next(), Some(Err(_))));
        assert!(bad.next().is_none(), "nothing after the first error");
    }
}
