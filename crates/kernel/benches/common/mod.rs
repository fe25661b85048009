//! Setup shared by the benchmarks that drive a [`Kernel`] through `uapi`
//! ops (`access`, `trace`, and the difftest crate's callgrind guard, which
//! includes this file by path): a booted machine with one process in sync
//! mode, and anonymous mappings in it.
#![allow(dead_code)]

use kernel::Kernel;
use mte::{CheckMode, TagMask, TaggedPtr};
use platform::Platform;
use uapi::{Bound, Command, Machine, MapFlags, Op, Outcome, Pid, PrctlRequest, Prot, Reply};

pub fn run(k: &mut Kernel, pid: Pid, command: Command) -> Reply {
    k.run(&Op::Process { pid, command })
}

/// `platform` booted, with one process in sync mode with tagged addresses
/// and every tag but 0 allowed for IRG.
pub fn sync_process(platform: &Platform) -> (Kernel, Pid) {
    let mut k = Kernel::new(platform).expect("boots");
    let Some(Bound::Process(pid)) = k.run(&Op::Spawn).bound else {
        panic!("spawn binds a process");
    };
    let prctl = PrctlRequest {
        tagged_addr: Some(true),
        tcf: Some(CheckMode::Sync),
        include: Some(TagMask::from_bits(0xfffe)),
        store_only: None,
    };
    assert_eq!(run(&mut k, pid, Command::Prctl(prctl)).outcome, Outcome::Ok);
    (k, pid)
}

/// A private anonymous mapping of `len` bytes, its pointer.
pub fn mmap(k: &mut Kernel, pid: Pid, len: u64, prot: Prot) -> TaggedPtr {
    let mmap = Command::Mmap {
        len,
        prot,
        flags: MapFlags::default(),
    };
    let Some(Bound::Pointer(base)) = run(k, pid, mmap).bound else {
        panic!("mmap binds a pointer");
    };
    base
}
