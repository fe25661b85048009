//! Fuzz programs: a platform and a list of steps over symbolic names, their
//! rendering as `.mte` text, and their lowering to [`uapi::Op`]s.
//!
//! Owns [`Program`], [`Step`], [`Cmd`] and [`PtrRef`], and [`Env`], the
//! values one machine gave the names. Names are symbolic and never rebound:
//! processes `p0, p1, ...` (bound by `spawn` and `fork`), mapping pointers
//! `m0, m1, ...` (bound by `mmap`) and tagged pointers `t0, t1, ...` (bound
//! by `irg` and `addg`), each number used by one binding step only. So a
//! program is well formed exactly when every name is bound by an earlier
//! step, which [`Program::prune`] restores after steps are removed.
//!
//! Lowering follows the runner's rules (`run::lower`) so that a rendered
//! program runs the same ops under `mtesim run`: a command of a process
//! whose `spawn`/`fork` failed is answered `error ESRCH` without the
//! machine; a binding step whose reply binds nothing binds address 0 (or no
//! process). Offsets are never negative, so a pointer expression always
//! evaluates (bases are below 2^48 and offsets small).

use core::fmt::{self, Write as _};

use mte::insn::{GranuleOffset, TagOffset};
use mte::{CheckMode, Tag, TagMask, TagStoreOp, TaggedPtr};
use platform::{PlatformSpec, TagStorageData, TagStoragePolicy, Thp};
use uapi::{
    AccessSize, Advice, Backing, Bound, Command as UCommand, MapFlags, Op, Outcome, Pid,
    PrctlRequest, Prot, Reply, Sharing,
};

use lang::ast::{advice_name, store_tag_name};

/// A process name, `p{n}`.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Debug)]
pub struct ProcName(pub u32);

/// A pointer name: `m{n}` (a mapping's base) or `t{n}` (a pointer made by
/// `irg` or `addg`).
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Debug)]
pub enum PtrName {
    Map(u32),
    Tagged(u32),
}

impl fmt::Display for ProcName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "p{}", self.0)
    }
}

impl fmt::Display for PtrName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PtrName::Map(n) => write!(f, "m{n}"),
            PtrName::Tagged(n) => write!(f, "t{n}"),
        }
    }
}

/// A pointer expression: `base+offset#tag`.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct PtrRef {
    pub base: PtrName,
    /// Bytes added to the base (never negative, see the module doc).
    pub offset: u64,
    /// `#T`: replaces the logical tag; `None` keeps the base's.
    pub tag: Option<Tag>,
}

impl PtrRef {
    pub const fn at(base: PtrName, offset: u64) -> PtrRef {
        PtrRef {
            base,
            offset,
            tag: None,
        }
    }
}

impl fmt::Display for PtrRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.base)?;
        if self.offset != 0 {
            write!(f, "+{:#x}", self.offset)?;
        }
        if let Some(tag) = self.tag {
            write!(f, "#{tag}")?;
        }
        Ok(())
    }
}

/// One command of a process, over symbolic names.
#[derive(Clone, PartialEq, Eq, Debug)]
pub enum Cmd {
    Fork {
        child: ProcName,
    },
    Exit,
    Exec,
    Prctl(PrctlRequest),
    PrctlGet,
    Tco(bool),
    Yield,
    Mmap {
        name: u32,
        len: u64,
        prot: Prot,
        sharing: Sharing,
        backing: Backing,
        populate: bool,
    },
    Munmap {
        ptr: PtrRef,
        len: u64,
    },
    Mprotect {
        ptr: PtrRef,
        len: u64,
        prot: Prot,
    },
    Madvise {
        ptr: PtrRef,
        len: u64,
        advice: Advice,
    },
    Pin {
        ptr: PtrRef,
        len: u64,
    },
    Unpin {
        ptr: PtrRef,
        len: u64,
    },
    WriteFd {
        ptr: PtrRef,
        len: u64,
    },
    ReadFd {
        ptr: PtrRef,
        len: u64,
        byte: u8,
    },
    PeekTags {
        target: ProcName,
        ptr: PtrRef,
        granules: u64,
    },
    PokeTags {
        target: ProcName,
        ptr: PtrRef,
        tags: Vec<Tag>,
    },
    Load {
        ptr: PtrRef,
        size: AccessSize,
    },
    Store {
        ptr: PtrRef,
        size: AccessSize,
        value: u128,
    },
    Fill {
        ptr: PtrRef,
        len: u64,
        byte: u8,
    },
    Verify {
        ptr: PtrRef,
        len: u64,
        byte: u8,
    },
    Irg {
        name: u32,
        ptr: PtrRef,
        exclude: TagMask,
    },
    Addg {
        name: u32,
        ptr: PtrRef,
        offset: GranuleOffset,
        tag_offset: TagOffset,
    },
    StoreTag {
        op: TagStoreOp,
        ptr: PtrRef,
    },
    SetTag {
        ptr: PtrRef,
        len: u64,
    },
    Ldg {
        ptr: PtrRef,
    },
}

impl Cmd {
    /// The command's pointer operand, if it has one.
    pub fn ptr_mut(&mut self) -> Option<&mut PtrRef> {
        match self {
            Cmd::Munmap { ptr, .. }
            | Cmd::Mprotect { ptr, .. }
            | Cmd::Madvise { ptr, .. }
            | Cmd::Pin { ptr, .. }
            | Cmd::Unpin { ptr, .. }
            | Cmd::WriteFd { ptr, .. }
            | Cmd::ReadFd { ptr, .. }
            | Cmd::PeekTags { ptr, .. }
            | Cmd::PokeTags { ptr, .. }
            | Cmd::Load { ptr, .. }
            | Cmd::Store { ptr, .. }
            | Cmd::Fill { ptr, .. }
            | Cmd::Verify { ptr, .. }
            | Cmd::Irg { ptr, .. }
            | Cmd::Addg { ptr, .. }
            | Cmd::StoreTag { ptr, .. }
            | Cmd::SetTag { ptr, .. }
            | Cmd::Ldg { ptr } => Some(ptr),
            Cmd::Fork { .. }
            | Cmd::Exit
            | Cmd::Exec
            | Cmd::Prctl(_)
            | Cmd::PrctlGet
            | Cmd::Tco(_)
            | Cmd::Yield
            | Cmd::Mmap { .. } => None,
        }
    }
}

/// One step of a program (one line of its `.mte` file).
#[derive(Clone, PartialEq, Eq, Debug)]
pub enum Step {
    Spawn(ProcName),
    Process { proc: ProcName, cmd: Cmd },
    Reclaim { pages: u64 },
    Compact,
    KsmScan,
}

impl Step {
    /// The command word (`load`, `spawn`), what failures are classified by.
    pub fn word(&self) -> &'static str {
        match self {
            Step::Spawn(_) => "spawn",
            Step::Reclaim { .. } => "reclaim",
            Step::Compact => "compact",
            Step::KsmScan => "ksm-scan",
            Step::Process { cmd, .. } => match cmd {
                Cmd::Fork { .. } => "fork",
                Cmd::Exit => "exit",
                Cmd::Exec => "exec",
                Cmd::Prctl(_) => "prctl",
                Cmd::PrctlGet => "prctl-get",
                Cmd::Tco(_) => "tco",
                Cmd::Yield => "yield",
                Cmd::Mmap { .. } => "mmap",
                Cmd::Munmap { .. } => "munmap",
                Cmd::Mprotect { .. } => "mprotect",
                Cmd::Madvise { .. } => "madvise",
                Cmd::Pin { .. } => "pin",
                Cmd::Unpin { .. } => "unpin",
                Cmd::WriteFd { .. } => "write-fd",
                Cmd::ReadFd { .. } => "read-fd",
                Cmd::PeekTags { .. } => "peektags",
                Cmd::PokeTags { .. } => "poketags",
                Cmd::Load { .. } => "load",
                Cmd::Store { .. } => "store",
                Cmd::Fill { .. } => "fill",
                Cmd::Verify { .. } => "verify",
                Cmd::Irg { .. } => "irg",
                Cmd::Addg { .. } => "addg",
                Cmd::StoreTag { op, .. } => store_tag_name(*op),
                Cmd::SetTag { .. } => "settag",
                Cmd::Ldg { .. } => "ldg",
            },
        }
    }

    /// The names the step reads (its process, a ptrace target, its
    /// pointer's base).
    pub fn uses(&self) -> (Vec<ProcName>, Option<PtrName>) {
        let Step::Process { proc, cmd } = self else {
            return (Vec::new(), None);
        };
        let mut procs = vec![*proc];
        let ptr = match cmd {
            Cmd::PeekTags { target, ptr, .. } | Cmd::PokeTags { target, ptr, .. } => {
                procs.push(*target);
                Some(ptr.base)
            }
            Cmd::Munmap { ptr, .. }
            | Cmd::Mprotect { ptr, .. }
            | Cmd::Madvise { ptr, .. }
            | Cmd::Pin { ptr, .. }
            | Cmd::Unpin { ptr, .. }
            | Cmd::WriteFd { ptr, .. }
            | Cmd::ReadFd { ptr, .. }
            | Cmd::Load { ptr, .. }
            | Cmd::Store { ptr, .. }
            | Cmd::Fill { ptr, .. }
            | Cmd::Verify { ptr, .. }
            | Cmd::Irg { ptr, .. }
            | Cmd::Addg { ptr, .. }
            | Cmd::StoreTag { ptr, .. }
            | Cmd::SetTag { ptr, .. }
            | Cmd::Ldg { ptr } => Some(ptr.base),
            Cmd::Fork { .. }
            | Cmd::Exit
            | Cmd::Exec
            | Cmd::Prctl(_)
            | Cmd::PrctlGet
            | Cmd::Tco(_)
            | Cmd::Yield
            | Cmd::Mmap { .. } => None,
        };
        (procs, ptr)
    }

    /// The name the step binds, if any.
    pub fn binds(&self) -> Option<Binding> {
        match self {
            Step::Spawn(p) => Some(Binding::Proc(*p)),
            Step::Process { cmd, .. } => match cmd {
                Cmd::Fork { child } => Some(Binding::Proc(*child)),
                Cmd::Mmap { name, .. } => Some(Binding::Ptr(PtrName::Map(*name))),
                Cmd::Irg { name, .. } | Cmd::Addg { name, .. } => {
                    Some(Binding::Ptr(PtrName::Tagged(*name)))
                }
                _ => None,
            },
            Step::Reclaim { .. } | Step::Compact | Step::KsmScan => None,
        }
    }
}

/// What a step binds.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Debug)]
pub enum Binding {
    Proc(ProcName),
    Ptr(PtrName),
}

impl fmt::Display for Step {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (proc, cmd) = match self {
            Step::Spawn(p) => return write!(f, "spawn {p}"),
            Step::Reclaim { pages } => return write!(f, "reclaim {pages}"),
            Step::Compact => return f.write_str("compact"),
            Step::KsmScan => return f.write_str("ksm-scan"),
            Step::Process { proc, cmd } => (proc, cmd),
        };
        write!(f, "{proc} {}", self.word())?;
        match cmd {
            Cmd::Fork { child } => write!(f, " {child}"),
            Cmd::Exit | Cmd::Exec | Cmd::PrctlGet | Cmd::Yield => Ok(()),
            Cmd::Prctl(request) => {
                if let Some(on) = request.tagged_addr {
                    write!(f, " tagged-addr={}", switch(on))?;
                }
                if let Some(tcf) = request.tcf {
                    write!(f, " tcf={tcf}")?;
                }
                if let Some(include) = request.include {
                    write!(f, " include={:#x}", include.bits())?;
                }
                if let Some(on) = request.store_only {
                    write!(f, " store-only={}", switch(on))?;
                }
                Ok(())
            }
            Cmd::Tco(on) => write!(f, " {}", switch(*on)),
            Cmd::Mmap {
                name,
                len,
                prot,
                sharing,
                backing,
                populate,
            } => {
                let sharing = match sharing {
                    Sharing::Private => "private",
                    Sharing::Shared => "shared",
                };
                let backing = match backing {
                    Backing::Anon => "anon",
                    Backing::Shm => "shm",
                    Backing::File => "file",
                };
                write!(
                    f,
                    " {} {len:#x} prot={prot} map={sharing},{backing}",
                    PtrName::Map(*name)
                )?;
                if *populate {
                    f.write_str(",populate")?;
                }
                Ok(())
            }
            Cmd::Munmap { ptr, len }
            | Cmd::Pin { ptr, len }
            | Cmd::Unpin { ptr, len }
            | Cmd::WriteFd { ptr, len }
            | Cmd::SetTag { ptr, len } => write!(f, " {ptr} {len:#x}"),
            Cmd::Mprotect { ptr, len, prot } => write!(f, " {ptr} {len:#x} prot={prot}"),
            Cmd::Madvise { ptr, len, advice } => {
                write!(f, " {ptr} {len:#x} {}", advice_name(*advice))
            }
            Cmd::ReadFd { ptr, len, byte }
            | Cmd::Fill { ptr, len, byte }
            | Cmd::Verify { ptr, len, byte } => write!(f, " {ptr} {len:#x} {byte:#x}"),
            Cmd::PeekTags {
                target,
                ptr,
                granules,
            } => write!(f, " {target} {ptr} {granules}"),
            Cmd::PokeTags { target, ptr, tags } => {
                write!(f, " {target} {ptr} ")?;
                for (i, tag) in tags.iter().enumerate() {
                    if i > 0 {
                        f.write_char(',')?;
                    }
                    write!(f, "{tag}")?;
                }
                Ok(())
            }
            Cmd::Load { ptr, size } => write!(f, " {ptr} {}", size.bytes()),
            Cmd::Store { ptr, size, value } => write!(f, " {ptr} {} {value:#x}", size.bytes()),
            Cmd::Irg { name, ptr, exclude } => {
                write!(f, " {} {ptr}", PtrName::Tagged(*name))?;
                if !exclude.is_empty() {
                    write!(f, " exclude={:#x}", exclude.bits())?;
                }
                Ok(())
            }
            Cmd::Addg {
                name,
                ptr,
                offset,
                tag_offset,
            } => write!(
                f,
                " {} {ptr} {} {}",
                PtrName::Tagged(*name),
                offset.bytes(),
                tag_offset.steps()
            ),
            Cmd::StoreTag { ptr, .. } | Cmd::Ldg { ptr } => write!(f, " {ptr}"),
        }
    }
}

fn switch(on: bool) -> &'static str {
    if on { "on" } else { "off" }
}

/// The machine a program runs on: the keys of its `platform` line.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct ProgramPlatform {
    /// Bytes of ordinary DRAM (small, for memory pressure).
    pub memory: u64,
    pub policy: TagStoragePolicy,
    /// Bytes per tag block; `None` is one page (the key left out).
    pub block_size: Option<u64>,
    /// `None` leaves the key out (`balance`).
    pub data: Option<TagStorageData>,
    /// Transparent huge pages (`never` leaves the key out).
    pub thp: Thp,
    /// Bytes of swap; 0 leaves the key out (no swap).
    pub swap: u64,
    /// The IRG seed.
    pub seed: u64,
}

impl ProgramPlatform {
    /// The platform keys, the spec's defaults elsewhere.
    pub fn spec(&self) -> PlatformSpec {
        let mut spec = PlatformSpec {
            memory: self.memory,
            tag_storage: self.policy,
            block_size: self.block_size,
            thp: self.thp,
            swap: self.swap,
            seed: self.seed,
            ..PlatformSpec::default()
        };
        if let Some(data) = self.data {
            spec.tag_storage_data = data;
        }
        spec
    }
}

impl fmt::Display for ProgramPlatform {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "platform memory={} tag-storage={}",
            size_text(self.memory),
            self.policy.as_str()
        )?;
        if let Some(block) = self.block_size {
            write!(f, " block-size={}", size_text(block))?;
        }
        if let Some(data) = self.data {
            write!(f, " tag-storage-data={}", data.as_str())?;
        }
        if self.thp != Thp::Never {
            write!(f, " thp={}", self.thp.as_str())?;
        }
        if self.swap != 0 {
            write!(f, " swap={}", size_text(self.swap))?;
        }
        write!(f, " seed={}", self.seed)
    }
}

/// `8M`, `16K`, or the plain number.
pub fn size_text(bytes: u64) -> String {
    const KIB: u64 = 1 << 10;
    const MIB: u64 = 1 << 20;
    if bytes != 0 && bytes.is_multiple_of(MIB) {
        format!("{}M", bytes / MIB)
    } else if bytes != 0 && bytes.is_multiple_of(KIB) {
        format!("{}K", bytes / KIB)
    } else {
        bytes.to_string()
    }
}

/// A program: a platform and its steps.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct Program {
    pub platform: ProgramPlatform,
    pub steps: Vec<Step>,
}

impl Program {
    /// The `.mte` text: the platform line and one line per step, no
    /// outcomes.
    pub fn render(&self) -> String {
        let mut text = format!("{}\n", self.platform);
        for step in &self.steps {
            let _ = writeln!(text, "{step}");
        }
        text
    }

    /// Drops every step that reads a name no earlier step binds, in order
    /// (so the steps that depended on a dropped binding go too), and
    /// returns how many went. Afterwards the program renders to a file the
    /// parser accepts.
    pub fn prune(&mut self) -> usize {
        let mut procs = std::collections::BTreeSet::new();
        let mut ptrs = std::collections::BTreeSet::new();
        let before = self.steps.len();
        self.steps.retain(|step| {
            let (used_procs, used_ptr) = step.uses();
            let bound = used_procs.iter().all(|p| procs.contains(p))
                && used_ptr.is_none_or(|p| ptrs.contains(&p));
            // A name is bound once: a second binding of it would be a
            // rebinding the parser refuses for processes.
            let fresh = match step.binds() {
                Some(Binding::Proc(p)) => !procs.contains(&p),
                Some(Binding::Ptr(p)) => !ptrs.contains(&p),
                None => true,
            };
            if !(bound && fresh) {
                return false;
            }
            match step.binds() {
                Some(Binding::Proc(p)) => {
                    procs.insert(p);
                }
                Some(Binding::Ptr(p)) => {
                    ptrs.insert(p);
                }
                None => {}
            }
            true
        });
        before - self.steps.len()
    }
}

/// What lowering a step gave.
#[derive(Clone, PartialEq, Eq, Debug)]
pub enum Lowered {
    Op(Op),
    /// The step's process (or ptrace target) never came to exist: the
    /// runner answers `error ESRCH` itself.
    NoProcess,
}

/// The values one machine gave a program's names (`run::lower::Bindings`
/// over symbolic names), and the order in which it created processes, by
/// which pids of two machines are compared.
#[derive(Clone, Debug, Default)]
pub struct Env {
    procs: Vec<Option<Pid>>,
    maps: Vec<TaggedPtr>,
    tagged: Vec<TaggedPtr>,
    /// Every pid the machine handed out, in order.
    created: Vec<Pid>,
}

impl Env {
    pub fn new() -> Env {
        Env::default()
    }

    pub fn process(&self, name: ProcName) -> Option<Pid> {
        self.procs.get(name.0 as usize).copied().flatten()
    }

    pub fn pointer(&self, name: PtrName) -> TaggedPtr {
        let (vec, i) = match name {
            PtrName::Map(i) => (&self.maps, i),
            PtrName::Tagged(i) => (&self.tagged, i),
        };
        vec.get(i as usize).copied().unwrap_or_default()
    }

    /// The position of `pid` among the pids this machine created (a new
    /// pid gets the next position).
    pub fn creation_index(&self, pid: Pid) -> usize {
        self.created
            .iter()
            .position(|&p| p == pid)
            .unwrap_or(self.created.len())
    }

    /// The value of a pointer expression; `None` if it leaves the 56-bit
    /// address space (never for generated programs).
    pub fn eval(&self, ptr: &PtrRef) -> Option<TaggedPtr> {
        let base = self.pointer(ptr.base);
        let value = base.checked_add(ptr.offset).ok()?;
        Some(match ptr.tag {
            Some(tag) => value.with_tag(tag),
            None => value,
        })
    }

    /// The op a step asks for; `None` if a pointer cannot be evaluated.
    pub fn lower(&self, step: &Step) -> Option<Lowered> {
        let (proc, cmd) = match step {
            Step::Spawn(_) => return Some(Lowered::Op(Op::Spawn)),
            Step::Reclaim { pages } => return Some(Lowered::Op(Op::Reclaim { pages: *pages })),
            Step::Compact => return Some(Lowered::Op(Op::Compact)),
            Step::KsmScan => return Some(Lowered::Op(Op::KsmScan)),
            Step::Process { proc, cmd } => (proc, cmd),
        };
        let Some(pid) = self.process(*proc) else {
            return Some(Lowered::NoProcess);
        };
        let e = |ptr: &PtrRef| self.eval(ptr);
        let command = match cmd {
            Cmd::Fork { .. } => UCommand::Fork,
            Cmd::Exit => UCommand::Exit,
            Cmd::Exec => UCommand::Exec,
            Cmd::Prctl(request) => UCommand::Prctl(*request),
            Cmd::PrctlGet => UCommand::PrctlGet,
            Cmd::Tco(on) => UCommand::Tco(*on),
            Cmd::Yield => UCommand::Yield,
            Cmd::Mmap {
                len,
                prot,
                sharing,
                backing,
                populate,
                ..
            } => UCommand::Mmap {
                len: *len,
                prot: *prot,
                flags: MapFlags {
                    sharing: *sharing,
                    backing: *backing,
                    populate: *populate,
                    fixed: None,
                },
            },
            Cmd::Munmap { ptr, len } => UCommand::Munmap {
                ptr: e(ptr)?,
                len: *len,
            },
            Cmd::Mprotect { ptr, len, prot } => UCommand::Mprotect {
                ptr: e(ptr)?,
                len: *len,
                prot: *prot,
            },
            Cmd::Madvise { ptr, len, advice } => UCommand::Madvise {
                ptr: e(ptr)?,
                len: *len,
                advice: *advice,
            },
            Cmd::Pin { ptr, len } => UCommand::Pin {
                ptr: e(ptr)?,
                len: *len,
            },
            Cmd::Unpin { ptr, len } => UCommand::Unpin {
                ptr: e(ptr)?,
                len: *len,
            },
            Cmd::WriteFd { ptr, len } => UCommand::WriteFd {
                ptr: e(ptr)?,
                len: *len,
            },
            Cmd::ReadFd { ptr, len, byte } => UCommand::ReadFd {
                ptr: e(ptr)?,
                len: *len,
                byte: *byte,
            },
            Cmd::PeekTags {
                target,
                ptr,
                granules,
            } => {
                let Some(target) = self.process(*target) else {
                    return Some(Lowered::NoProcess);
                };
                UCommand::PeekTags {
                    target,
                    ptr: e(ptr)?,
                    granules: *granules,
                }
            }
            Cmd::PokeTags { target, ptr, tags } => {
                let Some(target) = self.process(*target) else {
                    return Some(Lowered::NoProcess);
                };
                UCommand::PokeTags {
                    target,
                    ptr: e(ptr)?,
                    tags: tags.clone(),
                }
            }
            Cmd::Load { ptr, size } => UCommand::Load {
                ptr: e(ptr)?,
                size: *size,
            },
            Cmd::Store { ptr, size, value } => UCommand::Store {
                ptr: e(ptr)?,
                size: *size,
                value: *value,
            },
            Cmd::Fill { ptr, len, byte } => UCommand::Fill {
                ptr: e(ptr)?,
                len: *len,
                byte: *byte,
            },
            Cmd::Verify { ptr, len, byte } => UCommand::Verify {
                ptr: e(ptr)?,
                len: *len,
                byte: *byte,
            },
            Cmd::Irg { ptr, exclude, .. } => UCommand::Irg {
                ptr: e(ptr)?,
                exclude: *exclude,
            },
            Cmd::Addg {
                ptr,
                offset,
                tag_offset,
                ..
            } => UCommand::Addg {
                ptr: e(ptr)?,
                offset: *offset,
                tag_offset: *tag_offset,
            },
            Cmd::StoreTag { op, ptr } => UCommand::StoreTag {
                op: *op,
                ptr: e(ptr)?,
            },
            Cmd::SetTag { ptr, len } => UCommand::SetTag {
                ptr: e(ptr)?,
                len: *len,
            },
            Cmd::Ldg { ptr } => UCommand::Ldg { ptr: e(ptr)? },
        };
        Some(Lowered::Op(Op::Process { pid, command }))
    }

    /// Applies what `step` binds, given its reply (`None` when it did not
    /// reach the machine): the runner's rules (`run::lower::bind`).
    pub fn bind(&mut self, step: &Step, reply: Option<&Reply>) {
        let bound = reply.and_then(|r| r.bound);
        match step.binds() {
            Some(Binding::Proc(name)) => {
                let pid = match bound {
                    Some(Bound::Process(pid)) => Some(pid),
                    _ => None,
                };
                if let Some(pid) = pid
                    && !self.created.contains(&pid)
                {
                    self.created.push(pid);
                }
                let i = name.0 as usize;
                if i >= self.procs.len() {
                    self.procs.resize(i + 1, None);
                }
                self.procs[i] = pid;
            }
            Some(Binding::Ptr(name)) => {
                let ptr = match bound {
                    Some(Bound::Pointer(ptr)) => ptr,
                    _ => TaggedPtr::default(),
                };
                let (vec, i) = match name {
                    PtrName::Map(i) => (&mut self.maps, i as usize),
                    PtrName::Tagged(i) => (&mut self.tagged, i as usize),
                };
                if i >= vec.len() {
                    vec.resize(i + 1, TaggedPtr::default());
                }
                vec[i] = ptr;
            }
            None => {}
        }
    }
}

/// The outcome the runner gives a step that never reached the machine.
pub const NO_PROCESS: Outcome = Outcome::Error(uapi::Errno::Srch);

/// `tcf=` values in the order generators and tests list them.
pub const CHECK_MODES: [CheckMode; 4] = [
    CheckMode::None,
    CheckMode::Sync,
    CheckMode::Async,
    CheckMode::Asymm,
];
