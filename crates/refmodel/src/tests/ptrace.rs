//! `peektags` and `poketags`: Linux `mte_ptrace_copy_tags()` and
//! `__access_remote_tags()`.

use uapi::{Command, Errno};

use super::harness::*;

#[test]
fn peek_and_poke_granule_by_granule() {
    let mut s = Sim::new();
    let p = s.sync_process();
    let q = s.sync_process();
    let a = s.mmap(q, 0x2000, "r,w,mte", "");
    s.check(p, poke(q, a.at(0x20), &[1, 2, 3]), count(3));
    s.check(p, peek(q, a, 6), tags(&[0, 0, 1, 2, 3, 0]));
    s.check(q, ldg(a.at(0x30)), tag(2));
    // The address is aligned down to its granule; a tagged one is fine.
    s.check(p, peek(q, a.at(0x2f).tagged(9), 2), tags(&[1, 2]));
    // Across the page boundary of one tagged mapping.
    s.check(p, poke(q, a.at(0xff0), &[4, 5]), count(2));
    s.check(p, peek(q, a.at(0xff0), 2), tags(&[4, 5]));
}

#[test]
fn counts_are_short_where_tagged_memory_ends() {
    let mut s = Sim::new();
    let p = s.sync_process();
    let q = s.sync_process();
    let a = s.mmap(q, 0x2000, "r,w,mte", "");
    // An untagged mapping right above it.
    s.ok(q, mmap_fixed(0x1000, "r,w", "", a.at(0x2000)));
    s.check(p, peek(q, a.at(0x1fe0), 8), tags(&[0, 0]));
    s.check(p, poke(q, a.at(0x1fe0), &[1, 1, 1]), count(2));
    // The first granule untagged, or unmapped: EIO.
    s.check(p, peek(q, a.at(0x2000), 1), err(Errno::Io));
    s.ok(q, munmap(a.at(0x2000), 0x1000));
    s.check(p, peek(q, a.at(0x2000), 1), err(Errno::Io));
    s.check(p, poke(q, a.at(0x2000), &[1]), err(Errno::Io));
    // No tags asked for: EFAULT (nothing copied, no error from the tracee).
    s.check(p, peek(q, a, 0), err(Errno::Fault));
    s.check(p, poke(q, a, &[]), err(Errno::Fault));
}

#[test]
fn forced_access_reaches_protected_private_memory() {
    // FOLL_FORCE: peek needs no permission; poke writes a private mapping
    // whatever its protection (copy-on-write) but not a shared mapping
    // without VM_WRITE.
    let mut s = Sim::new();
    let p = s.sync_process();
    let q = s.sync_process();
    let none = s.mmap(q, 0x1000, "none,mte", "");
    let ro = s.mmap(q, 0x1000, "r,mte", "");
    let shared_ro = s.mmap(q, 0x1000, "r,mte", "shared,anon");
    s.check(p, poke(q, none, &[6]), count(1));
    s.check(p, peek(q, none, 1), tags(&[6]));
    s.check(p, poke(q, ro, &[7]), count(1));
    s.check(q, ldg(ro), tag(7));
    s.check(p, poke(q, shared_ro, &[8]), err(Errno::Io));
    s.check(p, peek(q, shared_ro, 1), tags(&[0]));
}

#[test]
fn poking_shared_memory_is_seen_by_every_mapper() {
    let mut s = Sim::new();
    let p = s.sync_process();
    let a = s.mmap(p, 0x1000, "r,w,mte", "shared,shm");
    let c = s.fork(p);
    let tracer = s.spawn();
    s.check(tracer, poke(c, a, &[0xc]), count(1));
    s.check(p, ldg(a), tag(0xc));
}

#[test]
fn who_may_be_traced() {
    let mut s = Sim::new();
    let p = s.sync_process();
    let q = s.sync_process();
    let a = s.mmap(q, 0x1000, "r,w,mte", "");
    // A process cannot trace itself; an exited one is gone.
    s.check(q, peek(q, a, 1), err(Errno::Srch));
    s.ok(q, Command::Exit);
    s.check(p, peek(q, a, 1), err(Errno::Srch));
    s.check(p, poke(q, a, &[1]), err(Errno::Srch));
    // Without MTE: EIO (mte_ptrace_copy_tags()), after ESRCH.
    let mut none = Sim::with(false, 0);
    let p = none.spawn();
    let q = none.spawn();
    let b = none.mmap(q, 0x1000, "r,w", "");
    none.check(p, peek(q, b, 1), err(Errno::Io));
    none.check(p, peek(q, b, 0), err(Errno::Io));
    none.check(p, peek(uapi::Pid(99), b, 1), err(Errno::Srch));
}
