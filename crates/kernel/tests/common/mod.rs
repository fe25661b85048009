//! Helpers for driving a [`kernel::Kernel`] through `uapi::Op`s by hand.
#![allow(dead_code)]

use kernel::Kernel;
use mte::{CheckMode, Tag, TagMask, TaggedPtr};
use platform::Platform;
use platform::spec::PlatformSpec;
use uapi::{
    AccessSize, Backing, Bound, Command, Counter, Errno, Fault, FaultCode, Machine, MapFlags, Op,
    Outcome, PageState, Pid, PrctlRequest, Prot, Reply, Sharing,
};

/// A machine from `platform` keys (the spec's defaults for the rest).
pub fn machine(keys: &[(&str, &str)]) -> Kernel {
    let mut spec = PlatformSpec::default();
    for (k, v) in keys {
        spec.set_key(k, v).expect("valid platform key");
    }
    Kernel::new(&Platform::from_spec(&spec).expect("valid platform")).expect("boots")
}

pub fn tag(t: u8) -> Tag {
    Tag::new(t).expect("a 4-bit tag")
}

/// `base+off#t`.
pub fn at(base: TaggedPtr, off: u64, t: Option<u8>) -> TaggedPtr {
    let p = base.checked_add(off).expect("in range");
    match t {
        Some(t) => p.with_tag(tag(t)),
        None => p,
    }
}

pub fn rw_mte() -> Prot {
    Prot {
        mte: true,
        ..Prot::READ_WRITE
    }
}

pub fn anon() -> MapFlags {
    MapFlags::default()
}

pub fn flags(sharing: Sharing, backing: Backing, populate: bool) -> MapFlags {
    MapFlags {
        sharing,
        backing,
        populate,
        fixed: None,
    }
}

pub struct Driver {
    pub k: Kernel,
}

impl Driver {
    pub fn new(keys: &[(&str, &str)]) -> Driver {
        Driver { k: machine(keys) }
    }

    pub fn op(&mut self, op: Op) -> Reply {
        let reply = self.k.run(&op);
        let v = self.k.invariant_violations();
        assert!(v.is_empty(), "after {op:?}: {v:#?}");
        reply
    }

    pub fn spawn(&mut self) -> Pid {
        match self.op(Op::Spawn).bound {
            Some(Bound::Process(p)) => p,
            other => panic!("spawn bound {other:?}"),
        }
    }

    pub fn cmd(&mut self, pid: Pid, command: Command) -> Reply {
        self.op(Op::Process { pid, command })
    }

    pub fn outcome(&mut self, pid: Pid, command: Command) -> Outcome {
        self.cmd(pid, command).outcome
    }

    pub fn ok(&mut self, pid: Pid, command: Command) {
        let reply = self.cmd(pid, command.clone());
        assert_eq!(reply.outcome, Outcome::Ok, "{command:?}");
    }

    pub fn sync_mte(&mut self, pid: Pid) {
        self.ok(
            pid,
            Command::Prctl(PrctlRequest {
                tagged_addr: Some(true),
                tcf: Some(CheckMode::Sync),
                include: Some(TagMask::from_bits(0xfffe)),
                store_only: None,
            }),
        );
    }

    pub fn tcf(&mut self, pid: Pid, mode: CheckMode) {
        self.ok(
            pid,
            Command::Prctl(PrctlRequest {
                tcf: Some(mode),
                ..PrctlRequest::default()
            }),
        );
    }

    pub fn mmap(&mut self, pid: Pid, len: u64, prot: Prot, flags: MapFlags) -> TaggedPtr {
        let reply = self.cmd(pid, Command::Mmap { len, prot, flags });
        assert_eq!(reply.outcome, Outcome::Ok, "mmap {len:#x} {prot}");
        match reply.bound {
            Some(Bound::Pointer(p)) => p,
            other => panic!("mmap bound {other:?}"),
        }
    }

    pub fn fork(&mut self, pid: Pid) -> Pid {
        let reply = self.cmd(pid, Command::Fork);
        assert_eq!(reply.outcome, Outcome::Ok);
        match reply.bound {
            Some(Bound::Process(p)) => p,
            other => panic!("fork bound {other:?}"),
        }
    }

    pub fn load(&mut self, pid: Pid, ptr: TaggedPtr, size: u64) -> Outcome {
        self.outcome(
            pid,
            Command::Load {
                ptr,
                size: AccessSize::from_bytes(size).expect("size"),
            },
        )
    }

    pub fn store(&mut self, pid: Pid, ptr: TaggedPtr, size: u64, value: u128) -> Outcome {
        self.outcome(
            pid,
            Command::Store {
                ptr,
                size: AccessSize::from_bytes(size).expect("size"),
                value,
            },
        )
    }

    pub fn stat(&self, c: Counter) -> u64 {
        self.k.counter(c).expect("every counter is kept")
    }

    pub fn page(&self, pid: Pid, ptr: TaggedPtr, state: PageState) -> bool {
        self.k
            .page_state(pid, ptr, state)
            .expect("page tables are modelled")
    }
}

pub fn sync_fault(addr: TaggedPtr) -> Outcome {
    Outcome::Fault(Fault {
        code: FaultCode::SegvMteSerr,
        addr: Some(addr),
    })
}

pub fn fault(code: FaultCode, addr: Option<TaggedPtr>) -> Outcome {
    Outcome::Fault(Fault { code, addr })
}

pub fn async_fault() -> Outcome {
    fault(FaultCode::SegvMteAerr, None)
}

pub fn error(e: Errno) -> Outcome {
    Outcome::Error(e)
}
