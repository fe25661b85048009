//! The RFC's races under schedule exploration: a fault on pages awaiting tag
//! storage (which migrates them out of tag storage), tagged allocations that
//! claim tag blocks (which migrates whatever data the blocks hold), and
//! untagged allocations filling tag storage, all at once. In every explored
//! interleaving nothing is lost (docs/model.md §4.8) and the invariants hold.

mod common;

use common::*;
use mte::{Tag, TaggedPtr};
use uapi::{Backing, Command, Machine, Op, Outcome, Pid, Prot, Sharing};

/// Dynamic tag storage that untagged data prefers, with 4K tag blocks: the
/// machine of the tag storage races (the first two programs).
const TAG_STORAGE_DATA: &[(&str, &str)] = &[
    ("memory", "64M"),
    ("tag-storage", "dynamic"),
    ("tag-storage-data", "prefer"),
    ("block-size", "4K"),
];

/// The machine's invariants hold (docs/model.md §4), or what breaks them.
fn invariants_hold(d: &Driver) -> Result<(), String> {
    let v = d.k.invariant_violations();
    if v.is_empty() {
        Ok(())
    } else {
        Err(format!("{v:#?}"))
    }
}

/// Each `(pid, ptr, len, byte)` range still holds `byte` throughout.
fn nothing_lost(d: &mut Driver, ranges: &[(Pid, TaggedPtr, u64, u8)]) -> Result<(), String> {
    for &(pid, ptr, len, byte) in ranges {
        let got = d.k.run(&Op::Process {
            pid,
            command: Command::Verify { ptr, len, byte },
        });
        if got.outcome != Outcome::Ok {
            return Err(format!("lost data at {ptr:?}: {:?}", got.outcome));
        }
    }
    Ok(())
}

fn program(chooser: &mut dyn sched::Chooser) -> Result<(), String> {
    let mut d = Driver::new(TAG_STORAGE_DATA);
    let p = d.spawn();
    let q = d.spawn();
    d.sync_mte(p);
    let a = d.mmap(p, 16 << 10, Prot::READ_WRITE, anon());
    d.ok(
        p,
        Command::Fill {
            ptr: a,
            len: 16 << 10,
            byte: 0xab,
        },
    );
    d.ok(
        p,
        Command::Mprotect {
            ptr: a,
            len: 16 << 10,
            prot: rw_mte(),
        },
    );
    let b = d.mmap(p, 64 << 10, rw_mte(), anon());
    let c = d.mmap(
        q,
        64 << 10,
        Prot::READ_WRITE,
        flags(Sharing::Shared, Backing::Shm, false),
    );
    let ops = vec![
        Op::Process {
            pid: p,
            command: Command::Verify {
                ptr: a,
                len: 16 << 10,
                byte: 0xab,
            },
        },
        Op::Process {
            pid: p,
            command: Command::Fill {
                ptr: b,
                len: 64 << 10,
                byte: 0x11,
            },
        },
        Op::Process {
            pid: q,
            command: Command::Fill {
                ptr: c,
                len: 64 << 10,
                byte: 0x22,
            },
        },
        Op::Process {
            pid: q,
            command: Command::Fork,
        },
    ];
    let replies = d.k.run_parallel(&ops, chooser).map_err(|e| e.to_string())?;
    for (op, r) in ops.iter().zip(&replies) {
        if r.outcome != Outcome::Ok {
            return Err(format!("{op:?} -> {:?}", r.outcome));
        }
    }
    invariants_hold(&d)?;
    nothing_lost(
        &mut d,
        &[
            (p, a, 16 << 10, 0xab),
            (p, b, 64 << 10, 0x11),
            (q, c, 64 << 10, 0x22),
        ],
    )?;
    if d.k.tags(p, a, 16 << 10) != Some(vec![Tag::ZERO; 1024]) {
        return Err("tags of the migrated pages are not 0".into());
    }
    Ok(())
}

#[test]
fn tag_storage_races_lose_nothing_random() {
    let report = sched::explore_random(7, 48, program);
    assert!(report.failure.is_none(), "{:?}", report.failure);
    // The paths really interleave: many switch points per run.
    assert!(report.longest > 20, "only {} decisions", report.longest);
}

#[test]
fn tag_storage_races_lose_nothing_pct() {
    let report = sched::explore_pct(11, 3, 48, program);
    assert!(report.failure.is_none(), "{:?}", report.failure);
}

/// mprotect sleeps in set_pte_at (tag initialisation of tagged pages) while
/// another process's tagged allocations claim tag blocks, which may move the
/// untagged pages of the same range out of tag storage: in every explored
/// interleaving the call succeeds, the invariants hold and nothing is lost.
fn mprotect_program(chooser: &mut dyn sched::Chooser) -> Result<(), String> {
    let mut d = Driver::new(TAG_STORAGE_DATA);
    let p = d.spawn();
    let q = d.spawn();
    d.sync_mte(p);
    d.sync_mte(q);
    // One mapping: its upper half untagged data in tag storage, then made
    // tagged (awaiting tag storage); its lower half written after that
    // (tagged pages with reserved storage, whose rewrite sleeps).
    let a = d.mmap(p, 64 << 10, Prot::READ_WRITE, anon());
    let upper = at(a, 32 << 10, None);
    d.ok(
        p,
        Command::Fill {
            ptr: upper,
            len: 32 << 10,
            byte: 0xa5,
        },
    );
    d.ok(
        p,
        Command::Mprotect {
            ptr: a,
            len: 64 << 10,
            prot: rw_mte(),
        },
    );
    d.ok(
        p,
        Command::Fill {
            ptr: a,
            len: 32 << 10,
            byte: 0x5a,
        },
    );
    let (tagged, plain) = (a, upper);
    let c = d.mmap(q, 256 << 10, rw_mte(), anon());
    let read_only = Prot {
        read: true,
        ..Prot::NONE
    };
    let ops = vec![
        Op::Process {
            pid: p,
            command: Command::Mprotect {
                ptr: a,
                len: 64 << 10,
                prot: read_only,
            },
        },
        Op::Process {
            pid: q,
            command: Command::Fill {
                ptr: c,
                len: 256 << 10,
                byte: 0x11,
            },
        },
    ];
    let replies = d.k.run_parallel(&ops, chooser).map_err(|e| e.to_string())?;
    if replies.iter().any(|r| r.outcome != Outcome::Ok) {
        return Err(format!("{replies:?}"));
    }
    invariants_hold(&d)?;
    nothing_lost(
        &mut d,
        &[
            (p, tagged, 32 << 10, 0x5a),
            (p, plain, 32 << 10, 0xa5),
            (q, c, 256 << 10, 0x11),
        ],
    )?;
    Ok(())
}

#[test]
fn mprotect_follows_pages_moved_while_it_sleeps() {
    let report = sched::explore_random(3, 48, mprotect_program);
    assert!(report.failure.is_none(), "{:?}", report.failure);
    let report = sched::explore_pct(5, 3, 48, mprotect_program);
    assert!(report.failure.is_none(), "{:?}", report.failure);
}

/// fork in one thread while another execs or exits the same process and a
/// third faults its memory in (holding `mmap_lock` for reading): fork may
/// find the address space it waited for replaced or gone, and then fails
/// with ESRCH (Linux: de_thread() kills the forking thread). No panic, the
/// invariants hold, and a fork that succeeded made a live child.
fn fork_exec_program(chooser: &mut dyn sched::Chooser, last: Command) -> Result<(), String> {
    let mut d = Driver::new(&[("memory", "64M"), ("tag-storage", "dynamic")]);
    let p = d.spawn();
    let a = d.mmap(p, 64 << 10, Prot::READ_WRITE, anon());
    let ops = vec![
        Op::Process {
            pid: p,
            command: Command::Fill {
                ptr: a,
                len: 64 << 10,
                byte: 0x11,
            },
        },
        Op::Process {
            pid: p,
            command: Command::Fork,
        },
        Op::Process {
            pid: p,
            command: last,
        },
    ];
    let replies = d.k.run_parallel(&ops, chooser).map_err(|e| e.to_string())?;
    let fork = &replies[1];
    let forked_ok = fork.outcome == Outcome::Ok;
    if !forked_ok && fork.outcome != error(uapi::Errno::Srch) {
        return Err(format!("fork: {fork:?}"));
    }
    invariants_hold(&d)?;
    if let Some(uapi::Bound::Process(child)) = fork.bound.filter(|_| forked_ok) {
        let got = d.k.run(&Op::Process {
            pid: child,
            command: Command::Yield,
        });
        if got.outcome != Outcome::Ok {
            return Err(format!("child of a successful fork: {got:?}"));
        }
    }
    Ok(())
}

#[test]
fn fork_racing_exec_or_exit_fails_cleanly() {
    for last in [Command::Exec, Command::Exit] {
        let report = sched::explore_random(5, 64, |c| fork_exec_program(c, last.clone()));
        assert!(report.failure.is_none(), "{last:?}: {:?}", report.failure);
    }
}

/// Any command of a thread that waits for `mmap_lock` while another thread
/// execs or exits the process finds its address space gone: it fails as the
/// process's other commands then do, without a panic.
fn waiter_program(
    chooser: &mut dyn sched::Chooser,
    waiter: Command,
    last: Command,
) -> Result<(), String> {
    let mut d = Driver::new(&[("memory", "64M"), ("tag-storage", "dynamic")]);
    let p = d.spawn();
    let a = d.mmap(p, 64 << 10, Prot::READ_WRITE, anon());
    let ops = vec![
        Op::Process {
            pid: p,
            command: Command::Mprotect {
                ptr: a,
                len: 64 << 10,
                prot: rw_mte(),
            },
        },
        Op::Process {
            pid: p,
            command: waiter,
        },
        Op::Process {
            pid: p,
            command: last,
        },
    ];
    d.k.run_parallel(&ops, chooser).map_err(|e| e.to_string())?;
    invariants_hold(&d)?;
    Ok(())
}

#[test]
fn commands_racing_exec_or_exit_fail_cleanly() {
    let a = TaggedPtr::from_raw(0xffff_f7ff_0000);
    let waiters = [
        Command::Fill {
            ptr: a,
            len: 8 << 10,
            byte: 1,
        },
        Command::Mprotect {
            ptr: a,
            len: 4 << 10,
            prot: Prot::READ_WRITE,
        },
        Command::Madvise {
            ptr: a,
            len: 8 << 10,
            advice: uapi::Advice::DontNeed,
        },
        Command::Munmap {
            ptr: a,
            len: 4 << 10,
        },
        Command::Pin {
            ptr: a,
            len: 4 << 10,
        },
        Command::ReadFd {
            ptr: a,
            len: 100,
            byte: 2,
        },
        Command::Mmap {
            len: 4 << 10,
            prot: Prot::READ_WRITE,
            flags: flags(Sharing::Private, Backing::Anon, true),
        },
    ];
    for waiter in waiters {
        for last in [Command::Exec, Command::Exit] {
            let report =
                sched::explore_random(9, 32, |c| waiter_program(c, waiter.clone(), last.clone()));
            assert!(
                report.failure.is_none(),
                "{waiter:?} / {last:?}: {:?}",
                report.failure
            );
        }
    }
}
