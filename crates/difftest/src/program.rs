//! Fuzz programs: a platform and a list of steps over symbolic names, their
//! rendering as `.mte` text, parsed back into the language's commands.
//!
//! Owns [`Program`], [`Step`], [`Cmd`] and [`PtrRef`], and [`Env`], the
//! values one machine gave the names. Names are symbolic and never rebound:
//! processes `p0, p1, ...` (bound by `spawn` and `fork`), mapping pointers
//! `m0, m1, ...` (bound by `mmap`) and tagged pointers `t0, t1, ...` (bound
//! by `irg` and `addg`), each number used by one binding step only. So a
//! program is well formed exactly when every name is bound by an earlier
//! step, which [`Program::prune`] restores after steps are removed.
//!
//! A program is run the way `mtesim run` runs its rendering, by the same
//! code: [`Program::commands`] parses the rendered text with the language's
//! parser, and [`Env`] lowers each command with the runner's lowering
//! (`scenario::run::lower`) and binds names by its rules. So the ops a
//! program runs in lockstep are those its reproducer file runs. Offsets are
//! never negative, so a pointer expression always evaluates (bases are
//! below 2^48 and offsets small).

use core::fmt::{self, Write as _};

use lang::ParseError;
use lang::ast::{Command, Stmt, advice_name, store_tag_name};
use mte::insn::{GranuleOffset, TagOffset};
use mte::{CheckMode, Tag, TagMask, TagStoreOp};
use platform::{Design, FreeListOrder, Mistakes, PlatformSpec, TagStorageData, Thp, ThpSizes};
use scenario::run::lower::{self, Bindings, Lowered};
use sched::Schedule;
use uapi::{AccessSize, Advice, Backing, Bound, Pid, PrctlRequest, Prot, Reply, Sharing};

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
        /// `false`: `longterm=off`, a short-term pin.
        longterm: bool,
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

/// One step of a program (one line of its `.mte` file, or one `parallel`
/// block).
#[derive(Clone, PartialEq, Eq, Debug)]
pub enum Step {
    Spawn(ProcName),
    Process {
        proc: ProcName,
        cmd: Cmd,
    },
    Reclaim {
        pages: u64,
    },
    Compact,
    KsmScan,
    /// A `parallel` block: its steps run together, one CPU each.
    Parallel(Block),
}

/// A `parallel` block: steps that are not blocks themselves and read only
/// names bound before the block (a block's bindings take effect at its
/// `end`), and how its interleaving is chosen.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct Block {
    pub steps: Vec<Step>,
    pub schedule: BlockSchedule,
}

/// How the interleaving of one `parallel` block is chosen. The schedule
/// is part of the program: a failure inside or after a block is a failure
/// of that interleaving.
#[derive(Clone, PartialEq, Eq, Debug)]
pub enum BlockSchedule {
    /// Drawn from this seed: a uniformly random CPU at every decision
    /// ([`sched::Seeded`]) for an even seed, PCT of depth 3
    /// ([`sched::Pct`]) for an odd one.
    Seed(u64),
    /// Replayed decision by decision ([`sched::Replay`]): exactly, or, for
    /// a prefix (`...`), then the lowest runnable CPU.
    Replay(Schedule),
}

impl BlockSchedule {
    /// The chooser that carries the schedule out.
    pub fn chooser(&self) -> Box<dyn sched::Chooser> {
        match self {
            BlockSchedule::Seed(seed) if seed % 2 == 0 => Box::new(sched::Seeded::new(*seed)),
            // Change points among the first 64 decisions: a block of a few
            // commands makes tens of decisions (more when it faults).
            BlockSchedule::Seed(seed) => Box::new(sched::Pct::new(*seed, 3, 64)),
            BlockSchedule::Replay(schedule) => Box::new(sched::Replay::new(schedule.clone())),
        }
    }
}

impl Step {
    /// The command word (`load`, `spawn`), what failures are classified by.
    pub fn word(&self) -> &'static str {
        match self {
            Step::Spawn(_) => "spawn",
            Step::Reclaim { .. } => "reclaim",
            Step::Compact => "compact",
            Step::KsmScan => "ksm-scan",
            Step::Parallel(_) => "parallel",
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
    /// pointer's base); nothing for a block (see [`Step::inner`]).
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

    /// The steps a block runs together; a step that is no block is its own
    /// only step.
    pub fn inner(&self) -> &[Step] {
        match self {
            Step::Parallel(block) => &block.steps,
            _ => core::slice::from_ref(self),
        }
    }

    /// Commands the step runs (a block's lines; 1 otherwise).
    pub fn ops(&self) -> usize {
        self.inner().len()
    }

    /// The name the step binds, if any (`None` for a block: see
    /// [`Step::inner`]).
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
            Step::Reclaim { .. } | Step::Compact | Step::KsmScan | Step::Parallel(_) => None,
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
            Step::Parallel(block) => {
                f.write_str("parallel\n")?;
                for step in &block.steps {
                    writeln!(f, "  {step}")?;
                }
                return f.write_str("end");
            }
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
            Cmd::Pin { ptr, len, longterm } => {
                write!(f, " {ptr} {len:#x}")?;
                if !longterm {
                    f.write_str(" longterm=off")?;
                }
                Ok(())
            }
            Cmd::Munmap { ptr, len }
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
    pub policy: Design,
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
    /// Known mistakes switched on (`mistake=`; none leaves the key out).
    pub mistakes: Mistakes,
    /// `pcp=on` (off leaves the key out).
    pub pcp: bool,
    /// Multi-size THP orders (`thp-sizes=`; none leaves the key out).
    pub thp_sizes: ThpSizes,
    /// The buddy allocator's free-list order (`free-list-order=`;
    /// `address` leaves the key out).
    pub free_list_order: FreeListOrder,
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
            mistakes: self.mistakes,
            pcp: self.pcp,
            thp_sizes: self.thp_sizes,
            free_list_order: self.free_list_order,
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
            self.policy.name()
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
        if !self.thp_sizes.is_empty() {
            write!(f, " thp-sizes={}", self.thp_sizes)?;
        }
        if self.swap != 0 {
            write!(f, " swap={}", size_text(self.swap))?;
        }
        if !self.mistakes.is_empty() {
            write!(f, " mistake={}", self.mistakes)?;
        }
        if self.pcp {
            write!(f, " pcp=on")?;
        }
        if self.free_list_order != FreeListOrder::Address {
            write!(f, " free-list-order={}", self.free_list_order.name())?;
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
    ///
    /// Inside a block, a step is kept when it reads names bound before the
    /// block; the block's bindings count from its end; a block left empty
    /// goes. Removed steps are counted as commands.
    pub fn prune(&mut self) -> usize {
        let mut bound = Names::default();
        let before: usize = self.steps.iter().map(Step::ops).sum();
        self.steps.retain_mut(|step| match step {
            Step::Parallel(block) => {
                let mut inside = Vec::new();
                block.steps.retain(|inner| {
                    // No name bound twice, inside the block either.
                    let fresh = inner.binds().is_none_or(|b| !inside.contains(&b));
                    let keep = fresh && bound.admits(inner);
                    if keep {
                        inside.extend(inner.binds());
                    }
                    keep
                });
                for binding in inside {
                    bound.add(binding);
                }
                !block.steps.is_empty()
            }
            _ => {
                let keep = bound.admits(step);
                if keep {
                    bound.add_of(step);
                }
                keep
            }
        });
        before - self.steps.iter().map(Step::ops).sum::<usize>()
    }
}

/// The names bound so far, for [`Program::prune`].
#[derive(Default)]
struct Names {
    procs: std::collections::BTreeSet<ProcName>,
    ptrs: std::collections::BTreeSet<PtrName>,
}

impl Names {
    /// Whether `step` reads only bound names and binds a fresh one.
    fn admits(&self, step: &Step) -> bool {
        let (used_procs, used_ptr) = step.uses();
        let bound = used_procs.iter().all(|p| self.procs.contains(p))
            && used_ptr.is_none_or(|p| self.ptrs.contains(&p));
        // A name is bound once: a second binding of it would be a
        // rebinding the parser refuses for processes.
        let fresh = match step.binds() {
            Some(Binding::Proc(p)) => !self.procs.contains(&p),
            Some(Binding::Ptr(p)) => !self.ptrs.contains(&p),
            None => true,
        };
        bound && fresh
    }

    fn add_of(&mut self, step: &Step) {
        if let Some(binding) = step.binds() {
            self.add(binding);
        }
    }

    fn add(&mut self, binding: Binding) {
        match binding {
            Binding::Proc(p) => {
                self.procs.insert(p);
            }
            Binding::Ptr(p) => {
                self.ptrs.insert(p);
            }
        }
    }
}

impl Program {
    /// The program as the runner sees it: its rendering parsed by the
    /// language's parser, one command per step. Every program the generator
    /// makes, and every pruned one, parses; an error here is a bug of the
    /// rendering.
    pub fn commands(&self) -> Result<Vec<Command>, ParseError> {
        Ok(self.step_commands()?.into_iter().flatten().collect())
    }

    /// [`Program::commands`] step by step: one command for an ordinary
    /// step, a block's commands for a block.
    pub fn step_commands(&self) -> Result<Vec<Vec<Command>>, ParseError> {
        let script = lang::parse("program.mte", self.render().as_bytes())?;
        Ok(script
            .stmts
            .into_iter()
            .filter_map(|stmt| match stmt {
                Stmt::Command(c) => Some(vec![c.command]),
                Stmt::Parallel(block) => {
                    Some(block.commands.into_iter().map(|c| c.command).collect())
                }
                Stmt::Expect(_) => None,
            })
            .collect())
    }

    /// Commands the program runs (a block's lines each).
    pub fn ops(&self) -> usize {
        self.steps.iter().map(Step::ops).sum()
    }

    /// The `parallel` blocks' schedules, in order, if every block replays
    /// one; `None` if some block draws from a seed.
    pub fn replayed_schedules(&self) -> Option<Vec<&Schedule>> {
        self.steps
            .iter()
            .filter_map(|s| match s {
                Step::Parallel(block) => Some(match &block.schedule {
                    BlockSchedule::Replay(schedule) => Some(schedule),
                    BlockSchedule::Seed(_) => None,
                }),
                _ => None,
            })
            .collect()
    }
}

/// The values one machine gave a program's names (the runner's
/// [`Bindings`]), and the order in which it created processes, by which
/// pids of two machines are compared.
#[derive(Clone, PartialEq, Eq, Debug, Default)]
pub struct Env {
    bindings: Bindings,
    /// Every pid the machine handed out, in order.
    created: Vec<Pid>,
}

impl Env {
    pub fn new() -> Env {
        Env::default()
    }

    /// The position of `pid` among the pids this machine created (a new
    /// pid gets the next position).
    pub fn creation_index(&self, pid: Pid) -> usize {
        self.created
            .iter()
            .position(|&p| p == pid)
            .unwrap_or(self.created.len())
    }

    /// The op a command asks for (the runner's lowering); `None` if a
    /// pointer of it cannot be evaluated (never for generated programs:
    /// their offsets are small and never negative).
    pub fn lower(&self, command: &Command) -> Option<Lowered> {
        lower::lower(command, &self.bindings).ok()
    }

    /// Applies what `command` binds, given its reply (`None` when it did not
    /// reach the machine): the runner's rules. A binding of the wrong kind
    /// leaves the name unset, as the runner does; the lockstep comparison
    /// has already seen it (what each reply bound is compared by meaning).
    pub fn bind(&mut self, command: &Command, reply: Option<&Reply>) {
        let bound = reply.and_then(|r| r.bound);
        if let Some(Bound::Process(pid)) = bound
            && !self.created.contains(&pid)
        {
            self.created.push(pid);
        }
        let _wrong_kind = lower::bind(command, bound, &mut self.bindings);
    }
}

/// `tcf=` values in the order generators and tests list them.
pub const CHECK_MODES: [CheckMode; 4] = [
    CheckMode::None,
    CheckMode::Sync,
    CheckMode::Async,
    CheckMode::Asymm,
];
