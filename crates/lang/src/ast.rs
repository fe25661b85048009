//! The typed syntax tree of a `.mte` scenario (`docs/language.md`).
//!
//! Owns the shape of every statement after parsing and name resolution. A
//! [`Script`] is what [`crate::parse()`] returns for a well-formed file; every
//! value in it has been range-checked, so a runner matches on enums and never
//! re-validates text.
//!
//! Invariants (kept by the parser, relied on by runners):
//! - every node carries the byte [`Span`] of its text in the source file, and
//!   every statement its 1-based line;
//! - names are resolved: a process is a dense [`ProcId`] (`0..processes.len()`,
//!   in order of binding) and a pointer a dense [`PtrSlot`]
//!   (`0..pointers.len()`); a runner keeps one `Vec` of each, no string maps;
//! - a [`PtrSlot`] is a storage cell. Rebinding a pointer name outside a
//!   `parallel` block reuses its slot (the value is replaced); a binding made
//!   inside a block gets a fresh slot that the name denotes only after `end`.
//!   So no line of a block reads a slot another line of the same block
//!   writes, and a runner needs no deferred writes to honour "bindings become
//!   visible after `end`";
//! - a `parallel` block holds 0 to `cpus` command lines, none of them
//!   `parallel`, `expect` or `platform`;
//! - outcomes are of a kind the command can produce ([`Command::accepts`]).
//!
//! Values of the user-visible interface (errno values, fault codes,
//! protections, mapping kinds, advice, access sizes, page states, counters)
//! are the `uapi` crate's types, re-exported here; the tree adds only what
//! the text needs on top of them: spans, unevaluated pointer expressions
//! ([`PtrExpr`], [`MapList::fixed`]) and the scenario spellings
//! ([`advice_name`]).

use core::fmt;

use platform::PlatformSpec;

pub use uapi::{AccessSize, Advice, Backing, Counter, Errno, FaultCode, PageState, Prot, Sharing};

use mte::insn::{GranuleOffset, TagOffset};
use mte::{CheckMode, Tag, TagMask, TagStoreOp, TaggedPtr};

/// A half-open byte range `[start, end)` of the source file.
///
/// Offsets are `u32`: the parser refuses files of 4 GiB or more, which keeps
/// every node small for multi-million-line traces.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Span {
    pub start: u32,
    pub end: u32,
}

impl Span {
    pub const fn new(start: u32, end: u32) -> Span {
        Span { start, end }
    }

    /// The smallest span covering both.
    pub fn to(self, other: Span) -> Span {
        Span::new(self.start.min(other.start), self.end.max(other.end))
    }

    pub const fn len(self) -> u32 {
        self.end - self.start
    }

    pub const fn is_empty(self) -> bool {
        self.start == self.end
    }

    pub fn range(self) -> core::ops::Range<usize> {
        self.start as usize..self.end as usize
    }
}

impl fmt::Debug for Span {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}..{}", self.start, self.end)
    }
}

/// A value with the span of the text it came from.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct Spanned<T> {
    pub node: T,
    pub span: Span,
}

impl<T> Spanned<T> {
    pub const fn new(node: T, span: Span) -> Spanned<T> {
        Spanned { node, span }
    }
}

/// A process, by order of its `spawn` or `fork` (the first bound is 0).
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ProcId(pub u32);

impl ProcId {
    pub const fn index(self) -> usize {
        self.0 as usize
    }
}

impl fmt::Debug for ProcId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ProcId({})", self.0)
    }
}

/// A pointer variable's storage cell (see the module invariants).
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct PtrSlot(pub u32);

impl PtrSlot {
    pub const fn index(self) -> usize {
        self.0 as usize
    }
}

impl fmt::Debug for PtrSlot {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PtrSlot({})", self.0)
    }
}

/// A parsed, resolved scenario.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct Script {
    /// The `platform` line, if the file has one (always its first statement).
    pub platform: Option<PlatformLine>,
    pub stmts: Vec<Stmt>,
    /// Names of processes and pointer slots, for messages only.
    pub names: Names,
}

impl Script {
    /// The machine to build: the platform line's, or the spec's defaults.
    pub fn platform_spec(&self) -> PlatformSpec {
        self.platform
            .as_ref()
            .map_or_else(PlatformSpec::default, |p| p.spec.clone())
    }
}

/// The source names behind the dense ids, indexed by [`ProcId`] / [`PtrSlot`].
#[derive(Clone, PartialEq, Eq, Debug, Default)]
pub struct Names {
    pub processes: Vec<Box<str>>,
    /// Several slots may carry the same name (a rebinding inside `parallel`).
    pub pointers: Vec<Box<str>>,
}

impl Names {
    pub fn process(&self, id: ProcId) -> &str {
        self.processes.get(id.index()).map_or("?", |n| n)
    }

    pub fn pointer(&self, slot: PtrSlot) -> &str {
        self.pointers.get(slot.index()).map_or("?", |n| n)
    }
}

/// `platform KEY=VALUE ...`.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct PlatformLine {
    pub line: u32,
    pub span: Span,
    /// The defaults with every key of the line applied, in order.
    pub spec: PlatformSpec,
    pub settings: Vec<PlatformSetting>,
}

impl PlatformLine {
    /// Where `key` was set, so that errors found when the platform is built
    /// (relations between keys) can point at it.
    pub fn setting(&self, key: &str) -> Option<&PlatformSetting> {
        self.settings.iter().find(|s| s.key == key)
    }
}

/// One `KEY=VALUE` of a platform line.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct PlatformSetting {
    /// One of `platform::spec::KEYS`.
    pub key: &'static str,
    pub key_span: Span,
    pub value_span: Span,
}

/// One statement. `platform` is not one: it lives in [`Script::platform`].
#[derive(Clone, PartialEq, Eq, Debug)]
pub enum Stmt {
    Command(CommandStmt),
    Expect(ExpectStmt),
    Parallel(ParallelBlock),
}

impl Stmt {
    /// The line of the statement (of `parallel` for a block).
    pub fn line(&self) -> u32 {
        match self {
            Stmt::Command(c) => c.line,
            Stmt::Expect(e) => e.line,
            Stmt::Parallel(p) => p.line,
        }
    }

    pub fn span(&self) -> Span {
        match self {
            Stmt::Command(c) => c.span,
            Stmt::Expect(e) => e.span,
            Stmt::Parallel(p) => p.span,
        }
    }
}

/// A command with its optional `=> OUTCOME`.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct CommandStmt {
    pub line: u32,
    /// The whole line, outcome included, comment excluded.
    pub span: Span,
    pub command: Command,
    pub outcome: Option<Spanned<Outcome>>,
}

/// `expect ...`.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct ExpectStmt {
    pub line: u32,
    pub span: Span,
    pub expect: Expect,
}

/// `parallel` ... `end`.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct ParallelBlock {
    /// The line and span of the `parallel` keyword.
    pub line: u32,
    pub span: Span,
    /// At most `cpus` commands, in source order (each its own CPU).
    pub commands: Vec<CommandStmt>,
    pub end_line: u32,
    pub end_span: Span,
}

/// A command: what one simulated CPU does for one line.
#[derive(Clone, PartialEq, Eq, Debug)]
pub enum Command {
    /// `spawn P`: binds `P`.
    Spawn { proc: Spanned<ProcId> },
    /// `P OP ...`.
    Process {
        proc: Spanned<ProcId>,
        op: Spanned<ProcessOp>,
    },
    /// `reclaim PAGES`. Linux: `try_to_free_pages()`.
    Reclaim { pages: Spanned<u64> },
    /// `compact`. Linux: `compact_nodes()`.
    Compact,
    /// `ksm-scan`: one full pass of `ksm_do_scan()`.
    KsmScan,
}

/// What a process does: the commands of the Processes, System calls and
/// Memory accesses tables.
#[derive(Clone, PartialEq, Eq, Debug)]
pub enum ProcessOp {
    /// `P fork Q`: binds `Q`.
    Fork {
        child: Spanned<ProcId>,
    },
    Exit,
    /// `PR_SET_TAGGED_ADDR_CTRL`; keys left out keep their value.
    Prctl(PrctlSettings),
    /// `PR_GET_TAGGED_ADDR_CTRL`.
    PrctlGet,
    /// PSTATE.TCO.
    Tco(Spanned<Switch>),
    Exec,
    /// Boxed: the largest operation, and a rare one in long traces.
    Mmap(Box<MmapArgs>),
    Munmap {
        ptr: PtrExpr,
        len: Spanned<u64>,
    },
    Mprotect {
        ptr: PtrExpr,
        len: Spanned<u64>,
        prot: Spanned<Prot>,
    },
    Madvise {
        ptr: PtrExpr,
        len: Spanned<u64>,
        advice: Spanned<Advice>,
    },
    /// A pin: long-term (`FOLL_LONGTERM`, a registered I/O buffer) by
    /// default, short-term with `longterm=off` (as `vmsplice(2)` takes one).
    Pin {
        ptr: PtrExpr,
        len: Spanned<u64>,
        /// `longterm=`: `On` unless the line says `longterm=off`.
        longterm: Spanned<Switch>,
    },
    Unpin {
        ptr: PtrExpr,
        len: Spanned<u64>,
    },
    Yield,
    /// The kernel reads user memory (`write(2)` to tmpfs).
    WriteFd {
        ptr: PtrExpr,
        len: Spanned<u64>,
    },
    /// The kernel writes `byte` to user memory (`read(2)` from tmpfs).
    ReadFd {
        ptr: PtrExpr,
        len: Spanned<u64>,
        byte: Spanned<u8>,
    },
    /// `PTRACE_PEEKMTETAGS` on `target`, up to `granules` tags.
    PeekTags {
        target: Spanned<ProcId>,
        ptr: PtrExpr,
        granules: Spanned<u64>,
    },
    /// `PTRACE_POKEMTETAGS` on `target`.
    PokeTags {
        target: Spanned<ProcId>,
        ptr: PtrExpr,
        tags: Spanned<Box<[Tag]>>,
    },
    Load {
        ptr: PtrExpr,
        size: Spanned<AccessSize>,
    },
    /// `value` fits in `size` (128 bits for a 16-byte store).
    Store {
        ptr: PtrExpr,
        size: Spanned<AccessSize>,
        value: Spanned<Value128>,
    },
    /// `memset`: byte stores in address order.
    Fill {
        ptr: PtrExpr,
        len: Spanned<u64>,
        byte: Spanned<u8>,
    },
    /// Byte loads in address order, compared with `byte`.
    Verify {
        ptr: PtrExpr,
        len: Spanned<u64>,
        byte: Spanned<u8>,
    },
    /// IRG: binds `name` to `ptr` with a random allowed tag.
    Irg {
        name: Spanned<PtrSlot>,
        ptr: PtrExpr,
        /// The `exclude=` operand (`Xm`); `None` excludes nothing extra.
        exclude: Option<Spanned<TagMask>>,
    },
    /// ADDG: binds `name` to `ptr + offset`, tag advanced `tag_offset` times.
    Addg {
        name: Spanned<PtrSlot>,
        ptr: PtrExpr,
        offset: Spanned<GranuleOffset>,
        tag_offset: Spanned<TagOffset>,
    },
    /// `stg`, `stzg`, `st2g`, `stz2g` (never STGP: the language has no
    /// spelling for it).
    StoreTag {
        op: Spanned<TagStoreOp>,
        ptr: PtrExpr,
    },
    /// `stg` over `len` bytes, `len` a multiple of the granule size.
    SetTag {
        ptr: PtrExpr,
        len: Spanned<u64>,
    },
    Ldg {
        ptr: PtrExpr,
    },
}

/// `on` / `off`.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Switch {
    On,
    Off,
}

impl Switch {
    pub const fn is_on(self) -> bool {
        matches!(self, Switch::On)
    }
}

/// The keys of one `prctl` line; `None` keeps the process's current value.
#[derive(Clone, Copy, PartialEq, Eq, Debug, Default)]
pub struct PrctlSettings {
    /// `PR_TAGGED_ADDR_ENABLE`.
    pub tagged_addr: Option<Spanned<Switch>>,
    /// `asymm` stands for requesting sync and async together on a CPU
    /// whose preferred mode is asymm (`PR_MTE_TCF_SYNC | PR_MTE_TCF_ASYNC`).
    pub tcf: Option<Spanned<CheckMode>>,
    /// `PR_MTE_TAG_MASK`: the tags IRG may choose.
    pub include: Option<Spanned<TagMask>>,
    /// `PR_MTE_STORE_ONLY`.
    pub store_only: Option<Spanned<Switch>>,
}

impl PrctlSettings {
    /// The request without its spans.
    pub fn request(&self) -> uapi::PrctlRequest {
        uapi::PrctlRequest {
            tagged_addr: self.tagged_addr.map(|s| s.node.is_on()),
            tcf: self.tcf.map(|s| s.node),
            include: self.include.map(|s| s.node),
            store_only: self.store_only.map(|s| s.node.is_on()),
        }
    }
}

/// `P mmap NAME LEN [prot=LIST] [map=LIST]`.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct MmapArgs {
    /// Bound to the new mapping's base (tag 0), or to 0 if the call fails.
    pub name: Spanned<PtrSlot>,
    pub len: Spanned<u64>,
    /// `r,w` when not written.
    pub prot: Prot,
    /// The `prot=` token, if written.
    pub prot_span: Option<Span>,
    /// `private,anon` when not written.
    pub map: MapList,
    /// The `map=` token, if written.
    pub map_span: Option<Span>,
}

/// `map=LIST`: one sharing, one backing, optionally `populate` and `fixed=`.
///
/// [`uapi::MapFlags`] once `fixed` is evaluated.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct MapList {
    pub sharing: Sharing,
    pub backing: Backing,
    /// `MAP_POPULATE`.
    pub populate: bool,
    /// `MAP_FIXED` at this address.
    pub fixed: Option<PtrExpr>,
}

impl Default for MapList {
    fn default() -> Self {
        MapList {
            sharing: Sharing::Private,
            backing: Backing::Anon,
            populate: false,
            fixed: None,
        }
    }
}

/// Every `madvise` advice, in the order the spec lists them.
pub const ADVICES: [Advice; 6] = [
    Advice::DontNeed,
    Advice::PageOut,
    Advice::HugePage,
    Advice::NoHugePage,
    Advice::Mergeable,
    Advice::Unmergeable,
];

/// The scenario spelling of an advice (`MADV_DONTNEED` is `dontneed`).
pub const fn advice_name(advice: Advice) -> &'static str {
    match advice {
        Advice::DontNeed => "dontneed",
        Advice::PageOut => "pageout",
        Advice::HugePage => "hugepage",
        Advice::NoHugePage => "nohugepage",
        Advice::Mergeable => "mergeable",
        Advice::Unmergeable => "unmergeable",
    }
}

/// The value of a load or store, up to 128 bits (a 16-byte access).
///
/// Held as two `u64` halves rather than a `u128` so the tree stays 8-byte
/// aligned: a `u128` field pads every statement to a multiple of 16 bytes,
/// which a ten-million-line trace pays for in memory and time.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct Value128 {
    lo: u64,
    hi: u64,
}

impl Value128 {
    pub const fn new(value: u128) -> Value128 {
        Value128 {
            lo: value as u64,
            hi: (value >> 64) as u64,
        }
    }

    pub const fn get(self) -> u128 {
        (self.hi as u128) << 64 | self.lo as u128
    }
}

impl From<u128> for Value128 {
    fn from(value: u128) -> Value128 {
        Value128::new(value)
    }
}

impl fmt::Debug for Value128 {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:#x}", self.get())
    }
}

/// A pointer expression, evaluated when its line runs.
///
/// Value: the base's 64-bit pointer, the offset added to bits 55:0 (the top
/// byte, hence the logical tag, kept), then bits 59:56 replaced by `tag` if
/// one is written.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct PtrExpr {
    pub span: Span,
    pub base: PtrBase,
    /// `#T`; never present on a raw address.
    pub tag: Option<Tag>,
}

impl PtrExpr {
    /// Bytes added to the base (0 for a raw address).
    pub const fn offset(&self) -> i64 {
        match self.base {
            PtrBase::Slot { offset, .. } => offset,
            PtrBase::Raw(_) => 0,
        }
    }

    /// The pointer variable read, if any.
    pub const fn slot(&self) -> Option<PtrSlot> {
        match self.base {
            PtrBase::Slot { slot, .. } => Some(slot),
            PtrBase::Raw(_) => None,
        }
    }
}

/// What a pointer expression starts from.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum PtrBase {
    /// The current value of a pointer variable, plus `offset` bytes
    /// (negative for `NAME-OFF`).
    Slot { slot: PtrSlot, offset: i64 },
    /// A raw address literal; its bits 59:56 are its logical tag.
    Raw(TaggedPtr),
}

/// The expected result of a command, after `=>`.
#[derive(Clone, PartialEq, Eq, Debug)]
pub enum Outcome {
    /// `ok`: success (with any count, for commands that return one).
    Ok,
    /// `ok N`: success with this count of bytes (or tags, for `poketags`).
    OkCount(u64),
    /// `value V`, compared as a number.
    Value(Value128),
    /// `tag T`.
    Tag(Tag),
    /// `tag-in MASK`: a tag whose bit is set in the mask.
    TagIn(TagMask),
    /// `tags T,T,...` (at least one).
    Tags(Box<[Tag]>),
    /// `mismatch OFFSET`: the first byte of a `verify` that differs.
    Mismatch(u64),
    /// `error ERRNO`.
    Error(Errno),
    /// `fault CODE [addr=PTR]`; `addr` is compared on bits 55:0.
    Fault {
        code: FaultCode,
        addr: Option<Box<PtrExpr>>,
    },
    /// `stuck`: the command cannot complete (the kernel would replay a
    /// fault for ever).
    Stuck,
}

impl Outcome {
    pub fn kind(&self) -> OutcomeKind {
        match self {
            Outcome::Ok => OutcomeKind::Ok,
            Outcome::OkCount(_) => OutcomeKind::OkCount,
            Outcome::Value(_) => OutcomeKind::Value,
            Outcome::Tag(_) => OutcomeKind::Tag,
            Outcome::TagIn(_) => OutcomeKind::TagIn,
            Outcome::Tags(_) => OutcomeKind::Tags,
            Outcome::Mismatch(_) => OutcomeKind::Mismatch,
            Outcome::Error(_) => OutcomeKind::Error,
            Outcome::Fault { .. } => OutcomeKind::Fault,
            Outcome::Stuck => OutcomeKind::Stuck,
        }
    }
}

/// The shape of an outcome, without its value.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum OutcomeKind {
    Ok,
    OkCount,
    Value,
    Tag,
    TagIn,
    Tags,
    Mismatch,
    Error,
    Fault,
    Stuck,
}

impl OutcomeKind {
    pub const ALL: [OutcomeKind; 10] = [
        OutcomeKind::Ok,
        OutcomeKind::OkCount,
        OutcomeKind::Value,
        OutcomeKind::Tag,
        OutcomeKind::TagIn,
        OutcomeKind::Tags,
        OutcomeKind::Mismatch,
        OutcomeKind::Error,
        OutcomeKind::Fault,
        OutcomeKind::Stuck,
    ];

    /// How the outcome is written, for messages.
    pub const fn syntax(self) -> &'static str {
        match self {
            OutcomeKind::Ok => "ok",
            OutcomeKind::OkCount => "ok N",
            OutcomeKind::Value => "value V",
            OutcomeKind::Tag => "tag T",
            OutcomeKind::TagIn => "tag-in MASK",
            OutcomeKind::Tags => "tags T,...",
            OutcomeKind::Mismatch => "mismatch OFFSET",
            OutcomeKind::Error => "error ERRNO",
            OutcomeKind::Fault => "fault CODE",
            OutcomeKind::Stuck => "stuck",
        }
    }
}

impl Command {
    /// Whether an outcome of `kind` can result from this command: the
    /// outcome columns of the spec's tables. Every process command may also
    /// give `error` (`ESRCH` once the process has exited) and `fault` (a
    /// synchronous fault for accesses, a pending asynchronous one at a
    /// system call).
    pub fn accepts(&self, kind: OutcomeKind) -> bool {
        use OutcomeKind as K;
        match self {
            Command::Spawn { .. }
            | Command::Reclaim { .. }
            | Command::Compact
            | Command::KsmScan => kind == K::Ok,
            Command::Process { op, .. } => {
                matches!(kind, K::Error | K::Fault | K::Stuck) || op.node.accepts(kind)
            }
        }
    }
}

impl Command {
    /// The command word, as written.
    pub fn name(&self) -> &'static str {
        match self {
            Command::Spawn { .. } => "spawn",
            Command::Process { op, .. } => op.node.name(),
            Command::Reclaim { .. } => "reclaim",
            Command::Compact => "compact",
            Command::KsmScan => "ksm-scan",
        }
    }
}

impl ProcessOp {
    /// The command word, as written.
    pub fn name(&self) -> &'static str {
        match self {
            ProcessOp::Fork { .. } => "fork",
            ProcessOp::Exit => "exit",
            ProcessOp::Prctl(_) => "prctl",
            ProcessOp::PrctlGet => "prctl-get",
            ProcessOp::Tco(_) => "tco",
            ProcessOp::Exec => "exec",
            ProcessOp::Mmap(_) => "mmap",
            ProcessOp::Munmap { .. } => "munmap",
            ProcessOp::Mprotect { .. } => "mprotect",
            ProcessOp::Madvise { .. } => "madvise",
            ProcessOp::Pin { .. } => "pin",
            ProcessOp::Unpin { .. } => "unpin",
            ProcessOp::Yield => "yield",
            ProcessOp::WriteFd { .. } => "write-fd",
            ProcessOp::ReadFd { .. } => "read-fd",
            ProcessOp::PeekTags { .. } => "peektags",
            ProcessOp::PokeTags { .. } => "poketags",
            ProcessOp::Load { .. } => "load",
            ProcessOp::Store { .. } => "store",
            ProcessOp::Fill { .. } => "fill",
            ProcessOp::Verify { .. } => "verify",
            ProcessOp::Irg { .. } => "irg",
            ProcessOp::Addg { .. } => "addg",
            ProcessOp::StoreTag { op, .. } => store_tag_name(op.node),
            ProcessOp::SetTag { .. } => "settag",
            ProcessOp::Ldg { .. } => "ldg",
        }
    }

    fn accepts(&self, kind: OutcomeKind) -> bool {
        use OutcomeKind as K;
        match self {
            ProcessOp::PrctlGet | ProcessOp::Load { .. } => kind == K::Value,
            ProcessOp::WriteFd { .. } | ProcessOp::ReadFd { .. } | ProcessOp::PokeTags { .. } => {
                matches!(kind, K::Ok | K::OkCount)
            }
            ProcessOp::PeekTags { .. } => kind == K::Tags,
            ProcessOp::Verify { .. } => matches!(kind, K::Ok | K::Mismatch),
            ProcessOp::Irg { .. } | ProcessOp::Addg { .. } | ProcessOp::Ldg { .. } => {
                matches!(kind, K::Tag | K::TagIn)
            }
            ProcessOp::Fork { .. }
            | ProcessOp::Exit
            | ProcessOp::Prctl(_)
            | ProcessOp::Tco(_)
            | ProcessOp::Exec
            | ProcessOp::Mmap(_)
            | ProcessOp::Munmap { .. }
            | ProcessOp::Mprotect { .. }
            | ProcessOp::Madvise { .. }
            | ProcessOp::Pin { .. }
            | ProcessOp::Unpin { .. }
            | ProcessOp::Yield
            | ProcessOp::Store { .. }
            | ProcessOp::Fill { .. }
            | ProcessOp::StoreTag { .. }
            | ProcessOp::SetTag { .. } => kind == K::Ok,
        }
    }
}

/// The scenario spelling of a tag-store instruction.
pub const fn store_tag_name(op: TagStoreOp) -> &'static str {
    match op {
        TagStoreOp::Stg => "stg",
        TagStoreOp::Stzg => "stzg",
        TagStoreOp::St2g => "st2g",
        TagStoreOp::Stz2g => "stz2g",
        TagStoreOp::Stgp => "stgp",
    }
}

/// `expect ...`.
#[derive(Clone, PartialEq, Eq, Debug)]
pub enum Expect {
    /// `expect stat NAME OP VALUE`.
    Stat {
        counter: Spanned<Counter>,
        op: Spanned<CmpOp>,
        value: Spanned<u64>,
    },
    /// `expect stat NAME`: observes the counter without stating a value
    /// (`--verbose` shows it); it always holds.
    Show { counter: Spanned<Counter> },
    /// `expect invariants`.
    Invariants,
    /// `expect P tags PTR LEN == T`.
    Tags {
        proc: Spanned<ProcId>,
        ptr: PtrExpr,
        len: Spanned<u64>,
        tag: Spanned<Tag>,
    },
    /// `expect P page PTR [not] STATE`.
    Page {
        proc: Spanned<ProcId>,
        ptr: PtrExpr,
        /// The `not` keyword, if written.
        negated: Option<Span>,
        state: Spanned<PageState>,
    },
}

/// `== != < <= > >=`.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum CmpOp {
    Eq,
    Ne,
    Lt,
    Le,
    Gt,
    Ge,
}

impl CmpOp {
    pub const fn symbol(self) -> &'static str {
        match self {
            CmpOp::Eq => "==",
            CmpOp::Ne => "!=",
            CmpOp::Lt => "<",
            CmpOp::Le => "<=",
            CmpOp::Gt => ">",
            CmpOp::Ge => ">=",
        }
    }

    /// `actual OP expected`.
    pub const fn holds(self, actual: u64, expected: u64) -> bool {
        match self {
            CmpOp::Eq => actual == expected,
            CmpOp::Ne => actual != expected,
            CmpOp::Lt => actual < expected,
            CmpOp::Le => actual <= expected,
            CmpOp::Gt => actual > expected,
            CmpOp::Ge => actual >= expected,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counter_names_are_model_md_section_5() {
        // docs/model.md §5 lists 25 names (swap.out/in and
        // tcf.sync/async share rows), fault.stuck, ksm.sharing and the
        // extra ksm.saved among them; then the cost.* family (cost.total
        // and ten kinds); reclaim adds file.*, reclaim.direct and
        // cleancache.*; the fast path adds tag_storage.fast_path and
        // tag_storage.contig; `mistake=tags-by-pfn` adds kernel.warn and
        // its two sites; the fuzzer's overcommitting programs add oom;
        // multi-size THP adds mthp.SIZE.anon_fault_alloc and
        // mthp.SIZE.anon_fault_fallback for its seven sizes.
        assert_eq!(Counter::ALL.len(), 63);
        assert_eq!(
            Counter::from_name("kernel.warn.tag_clear_highpage"),
            Some(Counter::KernelWarnTagClearHighpage)
        );
        assert_eq!(Counter::from_name("oom"), Some(Counter::Oom));
        assert_eq!(
            Counter::from_name("mthp.16K.anon_fault_alloc"),
            Some(Counter::MthpAnonFaultAlloc16K)
        );
        assert_eq!(
            Counter::from_name("mthp.1M.anon_fault_fallback"),
            Some(Counter::MthpAnonFaultFallback1M)
        );
        assert_eq!(
            Counter::from_name("tag_storage.contig"),
            Some(Counter::TagStorageContig)
        );
        assert_eq!(Counter::from_name("cost.total"), Some(Counter::CostTotal));
        assert_eq!(Counter::from_name("ksm.sharing"), Some(Counter::KsmSharing));
        assert_eq!(Counter::from_name("file.reads"), Some(Counter::FileReads));
        assert_eq!(Counter::from_name("fault.stuck"), Some(Counter::FaultStuck));
        assert_eq!(
            Counter::from_name("tag_storage.reserve_failures"),
            Some(Counter::TagStorageReserveFailures)
        );
        assert_eq!(
            Counter::from_name("swap.saved_tags"),
            Some(Counter::SwapSavedTags)
        );
        assert_eq!(Counter::from_name("tag_storage.reserved "), None);
        assert_eq!(Counter::from_name("Mem.pages"), None);
        for c in Counter::ALL {
            assert_eq!(Counter::from_name(c.name()), Some(c));
        }
    }

    #[test]
    fn advice_spellings_are_the_specs() {
        // docs/language.md, `madvise`: dontneed, pageout, hugepage,
        // nohugepage, mergeable, unmergeable.
        let names: Vec<&str> = ADVICES.into_iter().map(advice_name).collect();
        assert_eq!(
            names,
            [
                "dontneed",
                "pageout",
                "hugepage",
                "nohugepage",
                "mergeable",
                "unmergeable"
            ]
        );
    }

    #[test]
    fn prctl_settings_lower_to_a_request_keeping_what_they_leave_out() {
        let span = Span::new(0, 1);
        let settings = PrctlSettings {
            tagged_addr: Some(Spanned::new(Switch::On, span)),
            tcf: Some(Spanned::new(CheckMode::Asymm, span)),
            include: None,
            store_only: Some(Spanned::new(Switch::Off, span)),
        };
        assert_eq!(
            settings.request(),
            uapi::PrctlRequest {
                tagged_addr: Some(true),
                tcf: Some(CheckMode::Asymm),
                include: None,
                store_only: Some(false),
            }
        );
        assert_eq!(
            PrctlSettings::default().request(),
            uapi::PrctlRequest::default()
        );
    }

    #[test]
    fn wide_values_keep_all_128_bits() {
        let v = 0x0123_4567_89ab_cdef_fedc_ba98_7654_3210_u128;
        assert_eq!(Value128::new(v).get(), v);
        assert_eq!(Value128::new(u128::MAX).get(), u128::MAX);
        assert_eq!(format!("{:?}", Value128::new(0x42)), "0x42");
    }

    #[test]
    fn statements_stay_small() {
        // Traces hold millions of statements: keep each one near two cache
        // lines and 8-byte aligned (144 bytes today; 208 with a `u128`
        // field and an inline `MmapArgs`).
        assert!(size_of::<Stmt>() <= 144, "{}", size_of::<Stmt>());
        assert_eq!(align_of::<Stmt>(), 8);
    }

    #[test]
    fn access_sizes() {
        assert_eq!(AccessSize::from_bytes(16), Some(AccessSize::B16));
        assert_eq!(AccessSize::from_bytes(3), None);
        assert_eq!(AccessSize::B1.max_value(), 0xff);
        assert_eq!(AccessSize::B8.max_value(), u128::from(u64::MAX));
        assert_eq!(AccessSize::B16.max_value(), u128::MAX);
    }

    #[test]
    fn outcome_table() {
        let span = Span::new(0, 1);
        // `P yield` is a system call: `ok`, a pending asynchronous fault, or
        // `ESRCH` once `P` has exited; never a value.
        let yield_cmd = Command::Process {
            proc: Spanned::new(ProcId(0), span),
            op: Spanned::new(ProcessOp::Yield, span),
        };
        assert!(yield_cmd.accepts(OutcomeKind::Ok));
        assert!(yield_cmd.accepts(OutcomeKind::Fault));
        assert!(yield_cmd.accepts(OutcomeKind::Error));
        assert!(!yield_cmd.accepts(OutcomeKind::Value));
        assert!(Command::Compact.accepts(OutcomeKind::Ok));
        assert!(!Command::Compact.accepts(OutcomeKind::Error));
    }
}
