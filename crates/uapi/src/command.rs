//! Requests and replies.
//!
//! A [`Command`] is what one process asks: a system call, or a user-mode
//! instruction (loads, stores, tag instructions). An [`Op`] is one step of a
//! scenario: spawning a process, a process's command, or a whole-machine
//! operation. Every op gets a [`Reply`]: the [`Outcome`] a scenario compares
//! against, and what the op bound, if anything.

use crate::Pid;
use crate::abi::{AccessSize, Advice, Errno, Fault, MapFlags, PrctlRequest, Prot};
use mte::insn::{GranuleOffset, TagOffset};
use mte::{Tag, TagMask, TagStoreOp, TaggedPtr};

/// One command of one process.
#[derive(Clone, PartialEq, Eq, Debug)]
pub enum Command {
    // Processes.
    /// `fork(2)`; binds the child.
    Fork,
    Exit,

    // System calls.
    Prctl(PrctlRequest),
    PrctlGet,
    /// Set or clear PSTATE.TCO.
    Tco(bool),
    Exec,
    /// Binds the new mapping's base (address 0 if the call fails).
    Mmap {
        len: u64,
        prot: Prot,
        flags: MapFlags,
    },
    Munmap {
        ptr: TaggedPtr,
        len: u64,
    },
    Mprotect {
        ptr: TaggedPtr,
        len: u64,
        prot: Prot,
    },
    Madvise {
        ptr: TaggedPtr,
        len: u64,
        advice: Advice,
    },
    Pin {
        ptr: TaggedPtr,
        len: u64,
    },
    Unpin {
        ptr: TaggedPtr,
        len: u64,
    },
    Yield,
    /// The kernel reads `len` bytes of user memory (`write(2)` to a tmpfs file).
    WriteFd {
        ptr: TaggedPtr,
        len: u64,
    },
    /// The kernel writes `len` bytes of `byte` to user memory.
    ReadFd {
        ptr: TaggedPtr,
        len: u64,
        byte: u8,
    },
    /// `PTRACE_PEEKMTETAGS` on `target`, up to `granules` tags.
    PeekTags {
        target: Pid,
        ptr: TaggedPtr,
        granules: u64,
    },
    /// `PTRACE_POKEMTETAGS` on `target`.
    PokeTags {
        target: Pid,
        ptr: TaggedPtr,
        tags: Vec<Tag>,
    },

    // User-mode instructions.
    Load {
        ptr: TaggedPtr,
        size: AccessSize,
    },
    Store {
        ptr: TaggedPtr,
        size: AccessSize,
        value: u128,
    },
    /// Byte stores in address order, stopping at the first synchronous fault.
    Fill {
        ptr: TaggedPtr,
        len: u64,
        byte: u8,
    },
    /// Byte loads in address order, stopping at the first mismatch or fault.
    Verify {
        ptr: TaggedPtr,
        len: u64,
        byte: u8,
    },
    /// IRG; binds the tagged pointer.
    Irg {
        ptr: TaggedPtr,
        exclude: TagMask,
    },
    /// ADDG; binds the result.
    Addg {
        ptr: TaggedPtr,
        offset: GranuleOffset,
        tag_offset: TagOffset,
    },
    /// STG, STZG, ST2G, STZ2G (and STGP) with the pointer's own tag.
    StoreTag {
        op: TagStoreOp,
        ptr: TaggedPtr,
    },
    /// STG over `len` bytes (a multiple of 16), stopping at the first fault.
    SetTag {
        ptr: TaggedPtr,
        len: u64,
    },
    Ldg {
        ptr: TaggedPtr,
    },
    /// A short-term pin (`pin ... longterm=off`, as `vmsplice(2)` takes
    /// one): the pages stay where they are, in tag storage too, and cannot
    /// be migrated until unpinned. [`Command::Pin`] is the long-term one.
    PinShortTerm {
        ptr: TaggedPtr,
        len: u64,
    },
}

impl Command {
    /// Whether the command reports a pending asynchronous tag check fault
    /// (scenario language, "Memory accesses": "the next system-call command
    /// of that process, any command of the table above"): every command of
    /// the system-call table (`tco` included, as the spec lists it there), and
    /// `fork`, which is a system call in Linux too. Not `exit`: the process is
    /// gone before a signal could be delivered, and Linux delivers none.
    pub fn enters_kernel(&self) -> bool {
        !self.is_user_mode() && !matches!(self, Command::Exit)
    }

    /// Whether the command is a user-mode instruction (no kernel entry unless
    /// it faults).
    pub fn is_user_mode(&self) -> bool {
        matches!(
            self,
            Command::Load { .. }
                | Command::Store { .. }
                | Command::Fill { .. }
                | Command::Verify { .. }
                | Command::Irg { .. }
                | Command::Addg { .. }
                | Command::StoreTag { .. }
                | Command::SetTag { .. }
                | Command::Ldg { .. }
        )
    }
}

/// One step of a scenario.
#[derive(Clone, PartialEq, Eq, Debug)]
pub enum Op {
    /// A new process with an empty address space; binds it.
    Spawn,
    Process {
        pid: Pid,
        command: Command,
    },
    /// Reclaim up to this many pages.
    Reclaim {
        pages: u64,
    },
    Compact,
    KsmScan,
}

/// What an op produced, as a scenario outcome compares it.
#[derive(Clone, PartialEq, Eq, Debug)]
pub enum Outcome {
    Ok,
    /// A count of bytes or tags (`ok N`).
    Count(u64),
    Value(u128),
    Tag(Tag),
    Tags(Vec<Tag>),
    /// `verify` found a byte that differs, at this offset.
    Mismatch(u64),
    Error(Errno),
    Fault(Fault),
    /// The command cannot complete: the kernel would replay one of its
    /// faults for ever (a livelock, `docs/model.md` §4 invariant 10). It had
    /// no effect.
    Stuck,
}

/// A name an op binds.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Bound {
    Pointer(TaggedPtr),
    Process(Pid),
}

/// The reply to one op.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct Reply {
    pub outcome: Outcome,
    /// What the op binds, when it binds: also when the outcome is a pending
    /// asynchronous fault reported by a call that still took effect.
    pub bound: Option<Bound>,
}

impl Reply {
    pub fn new(outcome: Outcome) -> Self {
        Self {
            outcome,
            bound: None,
        }
    }

    pub fn binding(outcome: Outcome, bound: Bound) -> Self {
        Self {
            outcome,
            bound: Some(bound),
        }
    }
}

impl From<Outcome> for Reply {
    fn from(outcome: Outcome) -> Self {
        Reply::new(outcome)
    }
}
