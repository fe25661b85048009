//! A small driver: builds commands from scenario-like words and checks
//! outcomes. Fault addresses are compared exactly by [`Sim::check`] (the
//! reference keeps the pointer's top byte) and on bits 55:0 by
//! [`Sim::check_like_scenario`], as the scenario runner compares them.

use mte::insn::{GranuleOffset, TagOffset};
use mte::{CheckMode, Tag, TagMask, TagStoreOp, TaggedPtr, same_address_bits};
use uapi::{
    AccessSize, Advice, Backing, Bound, Command, Errno, Fault, FaultCode, Machine, MapFlags, Op,
    Outcome, Pid, PrctlRequest, Prot, Reply, Sharing,
};

use crate::RefMachine;

pub struct Sim {
    pub m: RefMachine,
}

impl Sim {
    /// A machine with MTE and seed 0 (the platform defaults).
    pub fn new() -> Sim {
        Sim::with(true, 0)
    }

    pub fn with(mte: bool, seed: u64) -> Sim {
        Sim {
            m: RefMachine::new(mte, seed),
        }
    }

    pub fn spawn(&mut self) -> Pid {
        match self.m.run(&Op::Spawn) {
            Reply {
                outcome: Outcome::Ok,
                bound: Some(Bound::Process(pid)),
            } => pid,
            other => panic!("spawn gave {other:?}"),
        }
    }

    /// `spawn` then the selftests' set-up: `prctl tagged-addr=on tcf=sync
    /// include=0xfffe`.
    pub fn sync_process(&mut self) -> Pid {
        let p = self.spawn();
        self.ok(p, prctl("tagged-addr=on tcf=sync include=0xfffe"));
        p
    }

    pub fn run(&mut self, pid: Pid, command: Command) -> Reply {
        let reply = self.m.run(&Op::Process { pid, command });
        let broken = self.m.invariant_violations();
        assert!(broken.is_empty(), "invariants broken: {broken:?}");
        reply
    }

    pub fn out(&mut self, pid: Pid, command: Command) -> Outcome {
        self.run(pid, command).outcome
    }

    /// Runs `command` and asserts its outcome exactly.
    #[track_caller]
    pub fn check(&mut self, pid: Pid, command: Command, want: Outcome) {
        let got = self.out(pid, command.clone());
        assert_eq!(got, want, "{command:?}");
    }

    /// Runs `command` and asserts its outcome as a scenario line would:
    /// fault addresses on bits 55:0.
    #[track_caller]
    pub fn check_like_scenario(&mut self, pid: Pid, command: Command, want: Outcome) {
        let got = self.out(pid, command.clone());
        let same = match (&got, &want) {
            (
                Outcome::Fault(Fault {
                    code: a,
                    addr: Some(x),
                }),
                Outcome::Fault(Fault {
                    code: b,
                    addr: Some(y),
                }),
            ) => a == b && same_address_bits(*x, *y),
            // `fault CODE` without `addr=` matches any address.
            (
                Outcome::Fault(Fault { code: a, .. }),
                Outcome::Fault(Fault {
                    code: b,
                    addr: None,
                }),
            ) => a == b,
            _ => got == want,
        };
        assert!(same, "{command:?}: got {got:?}, want {want:?}");
    }

    #[track_caller]
    pub fn ok(&mut self, pid: Pid, command: Command) {
        self.check(pid, command, Outcome::Ok);
    }

    pub fn fork(&mut self, pid: Pid) -> Pid {
        match self.run(pid, Command::Fork) {
            Reply {
                outcome: Outcome::Ok,
                bound: Some(Bound::Process(child)),
            } => child,
            other => panic!("fork gave {other:?}"),
        }
    }

    /// `mmap` that must succeed; the bound base.
    #[track_caller]
    pub fn mmap(&mut self, pid: Pid, len: u64, prot_list: &str, map_list: &str) -> TaggedPtr {
        match self.run(pid, mmap(len, prot_list, map_list)) {
            Reply {
                outcome: Outcome::Ok,
                bound: Some(Bound::Pointer(base)),
            } => base,
            other => panic!("mmap {len:#x} {prot_list} {map_list} gave {other:?}"),
        }
    }

    /// A command that binds a pointer (irg, addg, mmap): the outcome and
    /// the pointer.
    pub fn bind(&mut self, pid: Pid, command: Command) -> (Outcome, TaggedPtr) {
        match self.run(pid, command) {
            Reply {
                outcome,
                bound: Some(Bound::Pointer(ptr)),
            } => (outcome, ptr),
            other => panic!("no pointer bound: {other:?}"),
        }
    }

    pub fn tags(&self, pid: Pid, ptr: TaggedPtr, len: u64) -> Option<Vec<u8>> {
        self.m
            .tags(pid, ptr, len)
            .map(|tags| tags.into_iter().map(Tag::value).collect())
    }
}

/// Pointer arithmetic as the scenario language writes it.
pub trait PtrExt {
    /// `ptr+off` (tag kept).
    fn at(self, off: u64) -> TaggedPtr;
    /// `ptr-off` (tag kept).
    fn minus(self, off: u64) -> TaggedPtr;
    /// `ptr#t`.
    fn tagged(self, t: u8) -> TaggedPtr;
}

impl PtrExt for TaggedPtr {
    fn at(self, off: u64) -> TaggedPtr {
        self.checked_add(off).unwrap()
    }
    fn minus(self, off: u64) -> TaggedPtr {
        self.checked_sub(off).unwrap()
    }
    fn tagged(self, t: u8) -> TaggedPtr {
        self.with_tag(Tag::new(t).unwrap())
    }
}

pub fn t(v: u8) -> Tag {
    Tag::new(v).unwrap()
}

pub fn raw(v: u64) -> TaggedPtr {
    TaggedPtr::from_raw(v)
}

// Commands.

pub fn prctl(words: &str) -> Command {
    let mut req = PrctlRequest::default();
    for word in words.split_whitespace() {
        let (key, value) = word.split_once('=').unwrap();
        match key {
            "tagged-addr" => req.tagged_addr = Some(value == "on"),
            "store-only" => req.store_only = Some(value == "on"),
            "include" => {
                let bits = u16::from_str_radix(value.trim_start_matches("0x"), 16).unwrap();
                req.include = Some(TagMask::from_bits(bits));
            }
            "tcf" => {
                req.tcf = Some(match value {
                    "none" => CheckMode::None,
                    "sync" => CheckMode::Sync,
                    "async" => CheckMode::Async,
                    "asymm" => CheckMode::Asymm,
                    _ => panic!("tcf={value}"),
                })
            }
            _ => panic!("prctl key {key}"),
        }
    }
    Command::Prctl(req)
}

pub fn prot(list: &str) -> Prot {
    let mut prot = Prot::NONE;
    for word in list.split(',') {
        match word {
            "none" => {}
            "r" => prot.read = true,
            "w" => prot.write = true,
            "x" => prot.exec = true,
            "mte" => prot.mte = true,
            _ => panic!("prot {word}"),
        }
    }
    prot
}

/// `map=` words; `fixed=` takes a hex address.
pub fn map(list: &str) -> MapFlags {
    let mut flags = MapFlags::default();
    for word in list.split(',').filter(|w| !w.is_empty()) {
        match word {
            "private" => flags.sharing = Sharing::Private,
            "shared" => flags.sharing = Sharing::Shared,
            "anon" => flags.backing = Backing::Anon,
            "shm" => flags.backing = Backing::Shm,
            "file" => flags.backing = Backing::File,
            "populate" => flags.populate = true,
            _ => {
                let addr = word.strip_prefix("fixed=0x").expect("map word");
                flags.fixed = Some(raw(u64::from_str_radix(&addr.replace('_', ""), 16).unwrap()));
            }
        }
    }
    flags
}

pub fn mmap(len: u64, prot_list: &str, map_list: &str) -> Command {
    Command::Mmap {
        len,
        prot: prot(prot_list),
        flags: map(map_list),
    }
}

pub fn mmap_fixed(len: u64, prot_list: &str, map_list: &str, at: TaggedPtr) -> Command {
    let mut flags = map(map_list);
    flags.fixed = Some(at);
    Command::Mmap {
        len,
        prot: prot(prot_list),
        flags,
    }
}

pub fn munmap(ptr: TaggedPtr, len: u64) -> Command {
    Command::Munmap { ptr, len }
}

pub fn mprotect(ptr: TaggedPtr, len: u64, prot_list: &str) -> Command {
    Command::Mprotect {
        ptr,
        len,
        prot: prot(prot_list),
    }
}

pub fn madvise(ptr: TaggedPtr, len: u64, advice: &str) -> Command {
    let advice = match advice {
        "dontneed" => Advice::DontNeed,
        "pageout" => Advice::PageOut,
        "hugepage" => Advice::HugePage,
        "nohugepage" => Advice::NoHugePage,
        "mergeable" => Advice::Mergeable,
        "unmergeable" => Advice::Unmergeable,
        _ => panic!("advice {advice}"),
    };
    Command::Madvise { ptr, len, advice }
}

pub fn pin(ptr: TaggedPtr, len: u64) -> Command {
    Command::Pin { ptr, len }
}

pub fn unpin(ptr: TaggedPtr, len: u64) -> Command {
    Command::Unpin { ptr, len }
}

pub fn write_fd(ptr: TaggedPtr, len: u64) -> Command {
    Command::WriteFd { ptr, len }
}

pub fn read_fd(ptr: TaggedPtr, len: u64, byte: u8) -> Command {
    Command::ReadFd { ptr, len, byte }
}

pub fn peek(target: Pid, ptr: TaggedPtr, granules: u64) -> Command {
    Command::PeekTags {
        target,
        ptr,
        granules,
    }
}

pub fn poke(target: Pid, ptr: TaggedPtr, tags: &[u8]) -> Command {
    Command::PokeTags {
        target,
        ptr,
        tags: tags.iter().map(|&v| t(v)).collect(),
    }
}

pub fn load(ptr: TaggedPtr, size: u64) -> Command {
    Command::Load {
        ptr,
        size: AccessSize::from_bytes(size).unwrap(),
    }
}

pub fn store(ptr: TaggedPtr, size: u64, value: u128) -> Command {
    Command::Store {
        ptr,
        size: AccessSize::from_bytes(size).unwrap(),
        value,
    }
}

pub fn fill(ptr: TaggedPtr, len: u64, byte: u8) -> Command {
    Command::Fill { ptr, len, byte }
}

pub fn verify(ptr: TaggedPtr, len: u64, byte: u8) -> Command {
    Command::Verify { ptr, len, byte }
}

pub fn irg(ptr: TaggedPtr, exclude: u16) -> Command {
    Command::Irg {
        ptr,
        exclude: TagMask::from_bits(exclude),
    }
}

pub fn addg(ptr: TaggedPtr, offset: u64, tag_offset: u8) -> Command {
    Command::Addg {
        ptr,
        offset: GranuleOffset::new(offset).unwrap(),
        tag_offset: TagOffset::new(tag_offset).unwrap(),
    }
}

pub fn stg(ptr: TaggedPtr) -> Command {
    Command::StoreTag {
        op: TagStoreOp::Stg,
        ptr,
    }
}

pub fn tag_store(op: TagStoreOp, ptr: TaggedPtr) -> Command {
    Command::StoreTag { op, ptr }
}

pub fn settag(ptr: TaggedPtr, len: u64) -> Command {
    Command::SetTag { ptr, len }
}

pub fn ldg(ptr: TaggedPtr) -> Command {
    Command::Ldg { ptr }
}

// Outcomes.

pub fn value(v: u128) -> Outcome {
    Outcome::Value(v)
}

pub fn tag(v: u8) -> Outcome {
    Outcome::Tag(t(v))
}

pub fn tags(values: &[u8]) -> Outcome {
    Outcome::Tags(values.iter().map(|&v| t(v)).collect())
}

pub fn count(n: u64) -> Outcome {
    Outcome::Count(n)
}

pub fn err(errno: Errno) -> Outcome {
    Outcome::Error(errno)
}

pub fn fault(code: FaultCode, addr: TaggedPtr) -> Outcome {
    Outcome::Fault(Fault {
        code,
        addr: Some(addr),
    })
}

/// `fault CODE` with no address: what an asynchronous fault reports, and
/// what a scenario line without `addr=` accepts.
pub fn fault_any(code: FaultCode) -> Outcome {
    Outcome::Fault(Fault { code, addr: None })
}

/// The pending asynchronous fault, as a kernel entry reports it.
pub fn async_fault() -> Outcome {
    fault_any(FaultCode::SegvMteAerr)
}

pub use FaultCode::{BusAdrAln, SegvAccErr, SegvMapErr, SegvMteSerr};
