//! The replayed program as one process of the simulated kernel: the few
//! system calls and instructions the replay needs, with their failures
//! turned into [`ReplayError`]s or returned for the caller to judge.

use kernel::Kernel;
use mte::{CheckMode, Tag, TagMask, TaggedPtr};
use uapi::{
    AccessSize, Backing, Bound, Command, Fault, FaultCode, Machine, MapFlags, Op, Outcome, Pid,
    PrctlRequest, Prot, Sharing,
};

use crate::ReplayError;

/// Asynchronous tag check faults are delivered at kernel entries; this one
/// process only enters the kernel when the replay maps memory, so it also
/// yields this often, as a timer interrupt would.
pub const ASYNC_TICK: u64 = 10_000;

pub struct Process {
    pub machine: Kernel,
    pub pid: Pid,
    pub mte: bool,
    /// Asynchronous faults delivered so far (they arrive on system calls).
    pub async_faults: u64,
}

impl Process {
    /// Boots the machine and starts the process with the tag-check mode
    /// `tcf` (tag 0 excluded from IRG, as allocators do).
    pub fn start(mut machine: Kernel, tcf: CheckMode) -> Result<Process, ReplayError> {
        let mte = machine.has_mte();
        let reply = machine.run(&Op::Spawn);
        let Some(Bound::Process(pid)) = reply.bound else {
            return Err(ReplayError::Machine(format!(
                "spawning the process failed: {:?}",
                reply.outcome
            )));
        };
        let mut process = Process {
            machine,
            pid,
            mte,
            async_faults: 0,
        };
        let request = if mte {
            PrctlRequest {
                tagged_addr: Some(true),
                tcf: Some(tcf),
                include: Some(TagMask::from_bits(0xfffe)),
                store_only: None,
            }
        } else {
            PrctlRequest {
                tagged_addr: Some(true),
                ..PrctlRequest::default()
            }
        };
        match process.syscall(Command::Prctl(request)) {
            Outcome::Ok | Outcome::Count(_) | Outcome::Value(_) => Ok(process),
            other => Err(ReplayError::Machine(format!(
                "prctl for tcf={tcf:?} failed: {other:?}"
            ))),
        }
    }

    #[inline]
    pub fn run(&mut self, command: Command) -> uapi::Reply {
        self.machine.run(&Op::Process {
            pid: self.pid,
            command,
        })
    }

    /// A system call: a pending asynchronous fault it reports is counted,
    /// and the call still took effect (Linux restarts it after the signal).
    pub fn syscall(&mut self, command: Command) -> Outcome {
        let reply = self.run(command);
        self.outcome_after_async(reply.outcome)
    }

    fn outcome_after_async(&mut self, outcome: Outcome) -> Outcome {
        match outcome {
            Outcome::Fault(Fault {
                code: FaultCode::SegvMteAerr,
                ..
            }) => {
                self.async_faults += 1;
                Outcome::Ok
            }
            other => other,
        }
    }

    /// Enters the kernel with no other effect.
    pub fn tick(&mut self) {
        self.syscall(Command::Yield);
    }

    /// `mmap(MAP_FIXED)` of `len` bytes at `addr`.
    pub fn map_fixed(
        &mut self,
        addr: u64,
        len: u64,
        prot: Prot,
        sharing: Sharing,
        backing: Backing,
    ) -> Result<(), ReplayError> {
        let flags = MapFlags {
            sharing,
            backing,
            populate: false,
            fixed: Some(TaggedPtr::from_raw(addr)),
        };
        let reply = self.run(Command::Mmap { len, prot, flags });
        let bound = reply.bound;
        match self.outcome_after_async(reply.outcome) {
            Outcome::Ok if bound == Some(Bound::Pointer(TaggedPtr::from_raw(addr))) => Ok(()),
            other => Err(ReplayError::Machine(format!(
                "mmap of {len:#x} bytes at {addr:#x} ({prot}) failed: {other:?}"
            ))),
        }
    }

    pub fn unmap(&mut self, addr: u64, len: u64) -> Result<(), ReplayError> {
        match self.syscall(Command::Munmap {
            ptr: TaggedPtr::from_raw(addr),
            len,
        }) {
            Outcome::Ok => Ok(()),
            other => Err(ReplayError::Machine(format!(
                "munmap of {len:#x} bytes at {addr:#x} failed: {other:?}"
            ))),
        }
    }

    pub fn protect(&mut self, addr: u64, len: u64, prot: Prot) -> Outcome {
        self.syscall(Command::Mprotect {
            ptr: TaggedPtr::from_raw(addr),
            len,
            prot,
        })
    }

    /// IRG: `ptr` with a random tag, none of `exclude`.
    pub fn irg(&mut self, ptr: TaggedPtr, exclude: TagMask) -> Result<TaggedPtr, ReplayError> {
        let reply = self.run(Command::Irg { ptr, exclude });
        match reply.bound {
            Some(Bound::Pointer(tagged)) => Ok(tagged),
            _ => Err(ReplayError::Machine(format!(
                "irg at {ptr} failed: {:?}",
                reply.outcome
            ))),
        }
    }

    /// The allocation tag of the granule at `ptr`, 0 if it cannot be read.
    pub fn ldg(&mut self, ptr: TaggedPtr) -> Tag {
        match self.run(Command::Ldg { ptr }).outcome {
            Outcome::Tag(tag) => tag,
            _ => Tag::ZERO,
        }
    }

    /// STG over `len` bytes with `ptr`'s tag.
    pub fn set_tag(&mut self, ptr: TaggedPtr, len: u64) -> Result<(), ReplayError> {
        match self.run(Command::SetTag { ptr, len }).outcome {
            Outcome::Ok => Ok(()),
            other => Err(ReplayError::Machine(format!(
                "tagging {len:#x} bytes at {ptr} failed: {other:?}"
            ))),
        }
    }

    /// One load or store of 1, 2, 4, 8 or 16 bytes, through the kernel's
    /// direct access API (the per-CPU TLB; the full path on a miss).
    #[inline]
    pub fn access(&mut self, ptr: TaggedPtr, size: AccessSize, store: bool) -> Outcome {
        if store {
            self.machine.store_direct(self.pid, ptr, size, 0)
        } else {
            self.machine.load_direct(self.pid, ptr, size)
        }
    }
}
