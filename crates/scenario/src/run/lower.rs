//! Lowering: syntax-tree commands to [`uapi::Op`]s, with the run-time
//! bindings of names.
//!
//! Owns [`Bindings`], the values behind the parser's dense ids: one
//! `Option<Pid>` per [`ProcId`] (`None` while the name's `spawn` or `fork`
//! failed, so the process never existed) and one [`TaggedPtr`] per
//! [`PtrSlot`]. No string is looked up at run time. The one lowering of the
//! workspace: the differential fuzzer (`difftest`) parses its programs'
//! rendering and lowers them here too, so a reproducer runs what it ran.
//!
//! Rules (`docs/language.md`):
//! - a pointer expression is its slot's value plus a signed byte offset on
//!   bits 55:0, the top byte (so the logical tag) kept, then bits 59:56
//!   replaced by `#T` if written; a raw literal is taken as it is. Leaving
//!   bits 55:0 is an [`EvalError`], which the runner reports as a failure of
//!   that statement (never a panic, never a silent wrap);
//! - `mmap` binds the new mapping's base, or address 0 when the call fails;
//!   `irg` and `addg` bind the pointer they produce, and (a decision of this
//!   runner, the spec being silent) address 0 when they produce none because
//!   their process is gone; `spawn` and `fork` bind the new process, or
//!   leave the name without one when the call fails;
//! - a command of a process that never existed is answered `error ESRCH` by
//!   the runner itself ([`Lowered::NoProcess`]); a process that existed and
//!   exited is the machine's to answer (it keeps its stale [`Pid`]).

use mte::{PtrError, TagMask, TaggedPtr};
use thiserror::Error;
use uapi::{Bound, Command as UCommand, Errno, MapFlags, Op, Outcome, Pid};

use lang::ast::{Command, Names, ProcId, ProcessOp, PtrBase, PtrExpr, PtrSlot};

/// The run-time values of a script's names.
#[derive(Clone, PartialEq, Eq, Debug, Default)]
pub struct Bindings {
    processes: Vec<Option<Pid>>,
    pointers: Vec<TaggedPtr>,
}

impl Bindings {
    pub fn new() -> Bindings {
        Bindings::default()
    }

    /// The process behind `id`; `None` if its `spawn` or `fork` failed (or
    /// has not run).
    pub fn process(&self, id: ProcId) -> Option<Pid> {
        self.processes.get(id.index()).copied().flatten()
    }

    /// Every process a name is bound to now, in name order.
    pub fn processes(&self) -> Vec<Pid> {
        self.processes.iter().flatten().copied().collect()
    }

    pub fn set_process(&mut self, id: ProcId, pid: Option<Pid>) {
        let i = id.index();
        if i >= self.processes.len() {
            self.processes.resize(i + 1, None);
        }
        self.processes[i] = pid;
    }

    /// The value of `slot`. The parser only lets a slot be read after the
    /// line that binds it, and every binding line sets it (to 0 at worst),
    /// so an unset slot reads as 0 only for scripts built by hand.
    pub fn pointer(&self, slot: PtrSlot) -> TaggedPtr {
        self.pointers.get(slot.index()).copied().unwrap_or_default()
    }

    pub fn set_pointer(&mut self, slot: PtrSlot, ptr: TaggedPtr) {
        let i = slot.index();
        if i >= self.pointers.len() {
            self.pointers.resize(i + 1, TaggedPtr::default());
        }
        self.pointers[i] = ptr;
    }

    /// The value of a pointer expression now.
    pub fn eval(&self, expr: &PtrExpr) -> Result<TaggedPtr, EvalError> {
        match expr.base {
            PtrBase::Raw(ptr) => Ok(ptr),
            PtrBase::Slot { slot, offset } => {
                let base = self.pointer(slot);
                let ptr = base.checked_offset(offset).map_err(|source| EvalError {
                    expr: *expr,
                    base,
                    source,
                })?;
                Ok(match expr.tag {
                    Some(tag) => ptr.with_tag(tag),
                    None => ptr,
                })
            }
        }
    }
}

/// A pointer expression whose value leaves the 56-bit address space.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Error)]
#[error("pointer out of range: base {base}: {source}")]
pub struct EvalError {
    pub expr: PtrExpr,
    /// The slot's value the offset was applied to.
    pub base: TaggedPtr,
    #[source]
    pub source: PtrError,
}

impl EvalError {
    /// `pointer `buf-0x10` (buf = 0x0): 0x0 - 0x10 goes below address 0`.
    pub fn describe(&self, names: &Names) -> String {
        format!(
            "pointer `{}` ({} = {:#x}) cannot be evaluated: {}",
            ptr_text(&self.expr, names),
            self.expr.slot().map_or("?", |s| names.pointer(s)),
            self.base.raw(),
            self.source
        )
    }
}

/// A pointer expression in the scenario syntax, offsets in hex
/// (`buf+0x20#5`), for messages.
pub fn ptr_text(expr: &PtrExpr, names: &Names) -> String {
    let mut text = match expr.base {
        PtrBase::Raw(ptr) => return format!("{:#x}", ptr.raw()),
        PtrBase::Slot { slot, offset } => {
            let name = names.pointer(slot);
            match offset {
                0 => name.to_owned(),
                o if o > 0 => format!("{name}+{o:#x}"),
                o => format!("{name}-{:#x}", o.unsigned_abs()),
            }
        }
    };
    if let Some(tag) = expr.tag {
        text.push('#');
        text.push_str(&tag.to_string());
    }
    text
}

/// What the runner answers, without the machine, for a command of a process
/// that never existed ([`Lowered::NoProcess`]).
pub const NO_PROCESS: Outcome = Outcome::Error(Errno::Srch);

/// What a command becomes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Lowered {
    /// An op for the machine.
    Op(Op),
    /// A command of a process that never existed: `error ESRCH`, answered
    /// without the machine.
    NoProcess,
}

/// The op a command asks for, its pointers evaluated against `bindings`.
pub fn lower(command: &Command, bindings: &Bindings) -> Result<Lowered, EvalError> {
    let (proc, op) = match command {
        Command::Spawn { .. } => return Ok(Lowered::Op(Op::Spawn)),
        Command::Reclaim { pages } => return Ok(Lowered::Op(Op::Reclaim { pages: pages.node })),
        Command::Compact => return Ok(Lowered::Op(Op::Compact)),
        Command::KsmScan => return Ok(Lowered::Op(Op::KsmScan)),
        Command::Process { proc, op } => (proc.node, &op.node),
    };
    let Some(pid) = bindings.process(proc) else {
        return Ok(Lowered::NoProcess);
    };
    let eval = |expr: &PtrExpr| bindings.eval(expr);
    let command = match op {
        ProcessOp::Fork { .. } => UCommand::Fork,
        ProcessOp::Exit => UCommand::Exit,
        ProcessOp::Prctl(settings) => UCommand::Prctl(settings.request()),
        ProcessOp::PrctlGet => UCommand::PrctlGet,
        ProcessOp::Tco(switch) => UCommand::Tco(switch.node.is_on()),
        ProcessOp::Exec => UCommand::Exec,
        ProcessOp::Mmap(args) => UCommand::Mmap {
            len: args.len.node,
            prot: args.prot,
            flags: MapFlags {
                sharing: args.map.sharing,
                backing: args.map.backing,
                populate: args.map.populate,
                fixed: args.map.fixed.as_ref().map(eval).transpose()?,
            },
        },
        ProcessOp::Munmap { ptr, len } => UCommand::Munmap {
            ptr: eval(ptr)?,
            len: len.node,
        },
        ProcessOp::Mprotect { ptr, len, prot } => UCommand::Mprotect {
            ptr: eval(ptr)?,
            len: len.node,
            prot: prot.node,
        },
        ProcessOp::Madvise { ptr, len, advice } => UCommand::Madvise {
            ptr: eval(ptr)?,
            len: len.node,
            advice: advice.node,
        },
        ProcessOp::Pin { ptr, len, longterm } if longterm.node.is_on() => UCommand::Pin {
            ptr: eval(ptr)?,
            len: len.node,
        },
        ProcessOp::Pin { ptr, len, .. } => UCommand::PinShortTerm {
            ptr: eval(ptr)?,
            len: len.node,
        },
        ProcessOp::Unpin { ptr, len } => UCommand::Unpin {
            ptr: eval(ptr)?,
            len: len.node,
        },
        ProcessOp::Yield => UCommand::Yield,
        ProcessOp::WriteFd { ptr, len } => UCommand::WriteFd {
            ptr: eval(ptr)?,
            len: len.node,
        },
        ProcessOp::ReadFd { ptr, len, byte } => UCommand::ReadFd {
            ptr: eval(ptr)?,
            len: len.node,
            byte: byte.node,
        },
        ProcessOp::PeekTags {
            target,
            ptr,
            granules,
        } => {
            let Some(target) = bindings.process(target.node) else {
                return Ok(Lowered::NoProcess);
            };
            UCommand::PeekTags {
                target,
                ptr: eval(ptr)?,
                granules: granules.node,
            }
        }
        ProcessOp::PokeTags { target, ptr, tags } => {
            let Some(target) = bindings.process(target.node) else {
                return Ok(Lowered::NoProcess);
            };
            UCommand::PokeTags {
                target,
                ptr: eval(ptr)?,
                tags: tags.node.to_vec(),
            }
        }
        ProcessOp::Load { ptr, size } => UCommand::Load {
            ptr: eval(ptr)?,
            size: size.node,
        },
        ProcessOp::Store { ptr, size, value } => UCommand::Store {
            ptr: eval(ptr)?,
            size: size.node,
            value: value.node.get(),
        },
        ProcessOp::Fill { ptr, len, byte } => UCommand::Fill {
            ptr: eval(ptr)?,
            len: len.node,
            byte: byte.node,
        },
        ProcessOp::Verify { ptr, len, byte } => UCommand::Verify {
            ptr: eval(ptr)?,
            len: len.node,
            byte: byte.node,
        },
        ProcessOp::Irg { ptr, exclude, .. } => UCommand::Irg {
            ptr: eval(ptr)?,
            exclude: exclude.map_or(TagMask::EMPTY, |m| m.node),
        },
        ProcessOp::Addg {
            ptr,
            offset,
            tag_offset,
            ..
        } => UCommand::Addg {
            ptr: eval(ptr)?,
            offset: offset.node,
            tag_offset: tag_offset.node,
        },
        ProcessOp::StoreTag { op, ptr } => UCommand::StoreTag {
            op: op.node,
            ptr: eval(ptr)?,
        },
        ProcessOp::SetTag { ptr, len } => UCommand::SetTag {
            ptr: eval(ptr)?,
            len: len.node,
        },
        ProcessOp::Ldg { ptr } => UCommand::Ldg { ptr: eval(ptr)? },
    };
    Ok(Lowered::Op(Op::Process { pid, command }))
}

/// A reply's binding of the wrong kind for its command: a fault of the
/// machine, reported as a failure of the line.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Error)]
#[error("the machine's reply bound {bound:?} to the {what} this command binds")]
pub struct WrongBinding {
    pub bound: Bound,
    pub what: &'static str,
}

/// Applies what `command` binds, given what its reply bound (`None` when it
/// did not reach the machine or bound nothing).
pub fn bind(
    command: &Command,
    bound: Option<Bound>,
    bindings: &mut Bindings,
) -> Result<(), WrongBinding> {
    let (process, pointer) = match command {
        Command::Spawn { proc } => (Some(proc.node), None),
        Command::Process { op, .. } => match &op.node {
            ProcessOp::Fork { child } => (Some(child.node), None),
            ProcessOp::Mmap(args) => (None, Some(args.name.node)),
            ProcessOp::Irg { name, .. } | ProcessOp::Addg { name, .. } => (None, Some(name.node)),
            _ => (None, None),
        },
        Command::Reclaim { .. } | Command::Compact | Command::KsmScan => (None, None),
    };
    match (process, pointer, bound) {
        (Some(id), _, Some(Bound::Process(pid))) => bindings.set_process(id, Some(pid)),
        (_, Some(slot), Some(Bound::Pointer(ptr))) => bindings.set_pointer(slot, ptr),
        (Some(id), _, other) => {
            bindings.set_process(id, None);
            if let Some(bound) = other {
                return Err(WrongBinding {
                    bound,
                    what: "process",
                });
            }
        }
        (_, Some(slot), other) => {
            bindings.set_pointer(slot, TaggedPtr::default());
            if let Some(bound) = other {
                return Err(WrongBinding {
                    bound,
                    what: "pointer",
                });
            }
        }
        // A command that binds nothing ignores a binding (a machine may
        // report one for convenience).
        (None, None, _) => {}
    }
    Ok(())
}
