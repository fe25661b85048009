//! spawn, fork, exit, exec, prctl, tco, yield and the pending asynchronous
//! fault.

use uapi::{Bound, Command, Errno, Machine, Op, Outcome, Pid, Reply};

use super::harness::*;

#[test]
fn pids_count_up_from_one_and_are_never_reused() {
    let mut s = Sim::new();
    let p = s.spawn();
    assert_eq!(p, Pid(1));
    let c = s.fork(p);
    assert_eq!(c, Pid(2));
    s.ok(c, Command::Exit);
    assert_eq!(s.spawn(), Pid(3));
    // A pid never handed out is no process either.
    s.check(Pid(77), Command::Yield, err(Errno::Srch));
}

#[test]
fn every_command_of_an_exited_process_is_esrch() {
    let mut s = Sim::new();
    let p = s.sync_process();
    let a = s.mmap(p, 4096, "r,w,mte", "");
    s.ok(p, Command::Exit);
    for command in [
        Command::Exit,
        Command::Yield,
        Command::Fork,
        Command::PrctlGet,
        load(a, 8),
        store(a, 8, 1),
        ldg(a),
        irg(a, 0),
        mmap(4096, "r,w", ""),
        write_fd(a, 8),
    ] {
        s.check(p, command, err(Errno::Srch));
    }
    assert_eq!(s.m.tags(p, a, 16), None);
}

#[test]
fn fork_copies_private_memory_and_shares_shared_memory() {
    // fork(2): MAP_PRIVATE memory is copy-on-write (each side sees only its
    // own later writes), MAP_SHARED memory is the same object for both.
    let mut s = Sim::new();
    let p = s.sync_process();
    let private = s.mmap(p, 8192, "r,w,mte", "");
    let shared = s.mmap(p, 8192, "r,w,mte", "shared,anon");
    let shm = s.mmap(p, 4096, "r,w", "shared,shm");
    let file = s.mmap(p, 4096, "r,w", "private,file");
    s.ok(p, settag(private.tagged(4), 32));
    s.ok(p, store(private.tagged(4), 8, 0xaaaa));
    s.ok(p, store(file, 4, 0xf00d));
    let c = s.fork(p);
    // The child sees the parent's data and tags at fork.
    s.check(c, load(private.tagged(4), 8), value(0xaaaa));
    s.check(c, ldg(private.at(16)), tag(4));
    s.check(c, load(file, 4), value(0xf00d));
    // Later writes stay on their side for private memory...
    s.ok(c, store(private.tagged(4), 8, 0xcccc));
    s.ok(p, store(private.at(8).tagged(4), 8, 0xdddd));
    s.ok(c, store(file, 4, 0xbeef));
    s.check(p, load(private.tagged(4), 8), value(0xaaaa));
    s.check(c, load(private.at(8).tagged(4), 8), value(0));
    s.check(p, load(file, 4), value(0xf00d));
    // ...and are seen by both for shared memory, tags included.
    s.ok(c, settag(shared.at(4096).tagged(6), 16));
    s.ok(c, store(shared.at(4096).tagged(6), 8, 0x66));
    s.check(p, load(shared.at(4096).tagged(6), 8), value(0x66));
    s.check(p, ldg(shared.at(4096)), tag(6));
    s.ok(p, store(shm, 2, 0x1234));
    s.check(c, load(shm, 2), value(0x1234));
    // A mapping made after fork is the maker's alone.
    let late = s.mmap(p, 4096, "r,w", "");
    s.check(c, load(late, 1), fault(SegvMapErr, late));
}

#[test]
fn fork_inherits_settings_but_not_a_pending_fault() {
    // Linux: the child gets the parent's mte_ctrl and PSTATE (TCO); its
    // TIF_MTE_ASYNC_FAULT is cleared (arch_dup_task_struct()).
    let mut s = Sim::new();
    let p = s.sync_process();
    s.ok(p, prctl("tcf=async store-only=on"));
    let a = s.mmap(p, 4096, "r,w,mte", "");
    s.ok(p, store(a.tagged(2), 1, 1));
    // fork enters the kernel: the parent's fault is reported to the parent,
    // and the child is still made.
    let reply = s.run(p, Command::Fork);
    assert_eq!(reply.outcome, async_fault());
    let Some(Bound::Process(c)) = reply.bound else {
        panic!("fork bound nothing: {reply:?}")
    };
    let word = 0x1 | 0x4 | (0xfffe << 3) | (1 << 19);
    s.check(c, Command::PrctlGet, value(word));
    s.check(c, Command::Yield, Outcome::Ok);
    // TCO is inherited: the second child's mismatching store is unchecked,
    // the first child's (TCO off) is not.
    s.ok(p, prctl("tcf=sync"));
    s.ok(p, Command::Tco(true));
    let c2 = s.fork(p);
    s.ok(c2, store(a.tagged(2), 1, 1));
    s.ok(c, prctl("tcf=sync"));
    s.check(c, store(a.tagged(2), 1, 1), fault(SegvMteSerr, a.tagged(2)));
}

#[test]
fn exec_starts_over() {
    // execve(2): new empty address space; mte_thread_init_user() resets the
    // check mode and include mask, flush_tagged_addr_state() the ABI.
    let mut s = Sim::new();
    let p = s.sync_process();
    let a = s.mmap(p, 4096, "r,w", "");
    s.ok(p, Command::Tco(true));
    s.ok(p, pin(a, 4096));
    s.ok(p, Command::Exec);
    s.check(p, Command::PrctlGet, value(0));
    s.check(p, load(a, 1), fault(SegvMapErr, a));
    // Pins went with the old address space.
    s.check(p, unpin(a, 4096), err(Errno::Inval));
    // The new image's first mapping lands where the old one did.
    assert_eq!(s.mmap(p, 4096, "r,w", ""), a);
}

#[test]
fn exit_with_a_pending_fault_exits_without_reporting_it() {
    // Linux delivers no signal to a process that is exiting; `fork` does
    // report a pending fault (it is a system call entry).
    let mut s = Sim::new();
    let p = s.sync_process();
    s.ok(p, prctl("tcf=async"));
    let a = s.mmap(p, 4096, "r,w,mte", "");
    s.ok(p, store(a.tagged(1), 8, 0));
    s.ok(p, Command::Exit);
    s.check(p, Command::Yield, err(Errno::Srch));
}

#[test]
fn prctl_layout_and_partial_requests() {
    // include/uapi/linux/prctl.h: bit 0 tagged addr, 1 sync, 2 async, 3-18
    // include mask, 19 store-only.
    let mut s = Sim::new();
    let p = s.spawn();
    s.check(p, Command::PrctlGet, value(0));
    s.ok(p, prctl("tagged-addr=on tcf=sync include=0xfffe"));
    s.check(p, Command::PrctlGet, value(0x1 | 0x2 | (0xfffe << 3)));
    // Keys left out keep their value.
    s.ok(p, prctl("tcf=async"));
    s.check(p, Command::PrctlGet, value(0x1 | 0x4 | (0xfffe << 3)));
    // asymm is sync and async together.
    s.ok(p, prctl("tcf=asymm include=0x0003 store-only=on"));
    s.check(
        p,
        Command::PrctlGet,
        value(0x1 | 0x6 | (0x3 << 3) | (1 << 19)),
    );
    s.ok(
        p,
        prctl("tagged-addr=off tcf=none include=0 store-only=off"),
    );
    s.check(p, Command::PrctlGet, value(0));
}

#[test]
fn prctl_without_mte_accepts_only_the_tagged_address_abi() {
    // set_tagged_addr_ctrl(): without system_supports_mte() every bit but
    // PR_TAGGED_ADDR_ENABLE is EINVAL; a refused call changes nothing.
    let mut s = Sim::with(false, 0);
    let p = s.spawn();
    s.ok(p, prctl("tagged-addr=on"));
    s.check(p, prctl("tcf=sync"), err(Errno::Inval));
    s.check(p, prctl("include=0xfffe"), err(Errno::Inval));
    s.check(p, prctl("store-only=on"), err(Errno::Inval));
    s.check(p, prctl("tagged-addr=off tcf=async"), err(Errno::Inval));
    // Asking for what it already has is fine.
    s.ok(p, prctl("tcf=none include=0"));
    s.check(p, Command::PrctlGet, value(1));
}

#[test]
fn every_kernel_entry_reports_the_pending_fault_once() {
    let mut s = Sim::new();
    let p = s.sync_process();
    s.ok(p, prctl("tcf=async"));
    let a = s.mmap(p, 4096, "r,w,mte", "");
    // Several mismatches before the next kernel entry make one fault.
    s.ok(p, store(a.tagged(1), 8, 1));
    s.ok(p, store(a.tagged(2), 8, 2));
    s.check(p, load(a.tagged(3), 8), value(2));
    // User-mode instructions do not report it.
    s.check(p, ldg(a), tag(0));
    // mmap reports it and still maps: the name is bound.
    let reply = s.run(p, mmap(4096, "r,w", ""));
    assert_eq!(reply.outcome, async_fault());
    let Some(Bound::Pointer(b)) = reply.bound else {
        panic!("{reply:?}")
    };
    s.check(p, load(b, 8), value(0));
    s.ok(p, Command::Yield);
    // tco is a system-call command of the language: it reports it too.
    s.ok(p, store(a.tagged(1), 8, 1));
    s.check(p, Command::Tco(false), async_fault());
    // A call that fails still reports the fault instead of its error.
    s.ok(p, store(a.tagged(1), 8, 1));
    s.check(p, munmap(a.at(1), 4096), async_fault());
    // A failed mmap binds 0 even then.
    s.ok(p, store(a.tagged(1), 8, 1));
    let reply = s.run(p, mmap(0, "r,w", ""));
    assert_eq!(reply, Reply::binding(async_fault(), Bound::Pointer(raw(0))));
}

#[test]
fn whole_machine_ops_change_nothing_visible() {
    let mut s = Sim::new();
    let p = s.sync_process();
    let a = s.mmap(p, 4096, "r,w,mte", "");
    s.ok(p, settag(a.tagged(3), 16));
    s.ok(p, store(a.tagged(3), 8, 5));
    for op in [Op::Reclaim { pages: 100 }, Op::Compact, Op::KsmScan] {
        assert_eq!(s.m.run(&op), Reply::new(Outcome::Ok));
    }
    s.check(p, load(a.tagged(3), 8), value(5));
    s.check(p, ldg(a), tag(3));
}

#[test]
fn parallel_runs_in_order_and_keeps_no_counters() {
    let mut s = Sim::new();
    let p = s.sync_process();
    let a = s.mmap(p, 4096, "r,w", "");
    let ops = [
        Op::Process {
            pid: p,
            command: store(a, 8, 9),
        },
        Op::Process {
            pid: p,
            command: load(a, 8),
        },
    ];
    let mut chooser = sched::LowestRunnable;
    let replies = s.m.run_parallel(&ops, &mut chooser).unwrap();
    assert_eq!(replies, vec![Reply::new(Outcome::Ok), Reply::new(value(9))]);
    assert_eq!(s.m.counter(uapi::Counter::FaultCow), None);
    assert_eq!(s.m.page_state(p, a, uapi::PageState::Private), None);
}

/// A snapshot runs on alone: writes to it reach neither the original's
/// private pages nor its shared objects, and two processes sharing an
/// object in the original share the copy's object.
#[test]
fn a_snapshot_is_independent_and_shares_as_the_original() {
    let mut s = Sim::new();
    let p = s.sync_process();
    let private = s.mmap(p, 4096, "r,w", "private,anon");
    let shared = s.mmap(p, 4096, "r,w", "shared,anon");
    s.ok(p, store(private, 8, 1));
    s.ok(p, store(shared, 8, 2));
    let c = s.fork(p);
    let mut copy = Sim { m: s.m.snapshot() };
    assert!(copy.m.same_state(&s.m));
    copy.ok(p, store(private, 8, 11));
    copy.ok(c, store(shared, 8, 22));
    assert!(!copy.m.same_state(&s.m));
    // The original is untouched.
    s.check(p, load(private, 8), Outcome::Value(1));
    s.check(p, load(shared, 8), Outcome::Value(2));
    // The copy's child wrote the copy's object, which its parent sees.
    copy.check(p, load(shared, 8), Outcome::Value(22));
    copy.check(p, load(private, 8), Outcome::Value(11));
    copy.check(c, load(private, 8), Outcome::Value(1));
    // Through the trait too.
    let boxed = Machine::snapshot(&s.m).unwrap();
    assert_eq!(boxed.same_state(&s.m), Some(true));
    assert_eq!(Machine::same_state(&copy.m, &*boxed), Some(false));
}
