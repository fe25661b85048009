//! Unit tests of the kernel's fault paths, `set_pte_at`, migration and pins
//! (the examples of `examples/` are in `crates/kernel/tests`).

use mte::{CheckMode, Tag, TagMask, TagStoreOp, TaggedPtr};
use platform::Platform;
use platform::spec::PlatformSpec;
use uapi::{
    AccessSize, Backing, Bound, Command, Counter, Errno, Machine, MapFlags, Op, Outcome, PageState,
    Pid, PrctlRequest, Prot, Sharing,
};

use super::Kernel;
use crate::mem::PageMover;
use crate::mm::Pte;
use crate::phys::MigrateError;

mod compact;
mod direct;
mod dirty_log;
mod incremental;
mod ksm;
mod mthp;
mod shape;
mod trace;

fn kernel(keys: &[(&str, &str)]) -> Kernel {
    let mut spec = PlatformSpec::default();
    for (k, v) in keys {
        spec.set_key(k, v).unwrap();
    }
    Kernel::new(&Platform::from_spec(&spec).unwrap()).unwrap()
}

/// Runs an op and asserts the invariants after it.
fn run(k: &mut Kernel, op: Op) -> uapi::Reply {
    let reply = k.run(&op);
    let v = k.invariant_violations();
    assert!(v.is_empty(), "after {op:?}: {v:#?}");
    reply
}

fn cmd(k: &mut Kernel, pid: Pid, command: Command) -> Outcome {
    run(k, Op::Process { pid, command }).outcome
}

fn spawn(k: &mut Kernel) -> Pid {
    spawned(run(k, Op::Spawn))
}

/// The process a `spawn` reply binds.
fn spawned(reply: uapi::Reply) -> Pid {
    match reply.bound {
        Some(Bound::Process(p)) => p,
        b => panic!("{b:?}"),
    }
}

fn mmap(k: &mut Kernel, pid: Pid, len: u64, prot: Prot, flags: MapFlags) -> TaggedPtr {
    mapped(run(
        k,
        Op::Process {
            pid,
            command: Command::Mmap { len, prot, flags },
        },
    ))
}

/// The pointer a successful `mmap` reply binds.
fn mapped(reply: uapi::Reply) -> TaggedPtr {
    assert_eq!(reply.outcome, Outcome::Ok);
    match reply.bound {
        Some(Bound::Pointer(p)) => p,
        b => panic!("{b:?}"),
    }
}

fn sync_mte(k: &mut Kernel, pid: Pid) {
    let request = PrctlRequest {
        tagged_addr: Some(true),
        tcf: Some(CheckMode::Sync),
        include: Some(TagMask::from_bits(0xfffe)),
        store_only: None,
    };
    assert_eq!(cmd(k, pid, Command::Prctl(request)), Outcome::Ok);
}

fn rw_mte() -> Prot {
    Prot {
        mte: true,
        ..Prot::READ_WRITE
    }
}

fn load8(k: &mut Kernel, pid: Pid, ptr: TaggedPtr) -> Outcome {
    cmd(
        k,
        pid,
        Command::Load {
            ptr,
            size: AccessSize::B8,
        },
    )
}

fn store8(k: &mut Kernel, pid: Pid, ptr: TaggedPtr, value: u128) -> Outcome {
    cmd(
        k,
        pid,
        Command::Store {
            ptr,
            size: AccessSize::B8,
            value,
        },
    )
}

fn stat(k: &Kernel, c: Counter) -> u64 {
    k.counter(c).unwrap()
}

fn pfn_of(k: &Kernel, pid: Pid, ptr: TaggedPtr) -> Option<mte::Pfn> {
    let mm = k.process_mm(pid)?;
    k.current_pte(mm, ptr.addr().align_down(4096))?
        .leaf()
        .map(|l| l.pfn)
}

/// The metadata of frame `pfn`, to change behind the kernel's back (as a
/// broken kernel path would leave it).
fn frame_meta(k: &Kernel, pfn: mte::Pfn) -> std::cell::RefMut<'_, crate::phys::FrameMeta> {
    std::cell::RefMut::map(k.mem.phys_mut(), |phys| {
        phys.alloc.frame_mut(pfn).expect("a frame of the machine")
    })
}

/// Linux do_anonymous_page(): a read of untouched private anonymous memory
/// maps the zero page (fault.zero_page), a write then replaces it with a
/// private copy (wp_page_copy: fault.cow); a first write elsewhere
/// allocates (fault.anon); a second write to the same page faults no more.
#[test]
fn anonymous_fault_kinds_are_counted() {
    let mut k = kernel(&[]);
    let p = spawn(&mut k);
    let a = mmap(&mut k, p, 8192, Prot::READ_WRITE, MapFlags::default());
    assert_eq!(load8(&mut k, p, a), Outcome::Value(0));
    assert_eq!(stat(&k, Counter::FaultZeroPage), 1);
    assert_eq!(k.page_state(p, a, PageState::ZeroPage), Some(true));
    assert_eq!(store8(&mut k, p, a, 5), Outcome::Ok);
    assert_eq!(stat(&k, Counter::FaultCow), 1);
    assert_eq!(k.page_state(p, a, PageState::Private), Some(true));
    let b = a.checked_add(4096).unwrap();
    assert_eq!(store8(&mut k, p, b, 6), Outcome::Ok);
    assert_eq!(stat(&k, Counter::FaultAnon), 1);
    assert_eq!(store8(&mut k, p, b, 7), Outcome::Ok);
    assert_eq!(
        (
            stat(&k, Counter::FaultAnon),
            stat(&k, Counter::FaultCow),
            stat(&k, Counter::FaultZeroPage)
        ),
        (1, 1, 1)
    );
    assert_eq!(load8(&mut k, p, a), Outcome::Value(5));
    assert_eq!(load8(&mut k, p, b), Outcome::Value(7));
    assert_eq!(k.page_state(p, b, PageState::Untagged), Some(true));
}

/// PROT_NONE and permission faults are SEGV_ACCERR, holes SEGV_MAPERR,
/// at the first byte of the failing page with the pointer's top byte
/// (docs/semantics.md §14).
#[test]
fn fault_codes_and_addresses() {
    let mut k = kernel(&[]);
    let p = spawn(&mut k);
    let a = mmap(&mut k, p, 4096, Prot::NONE, MapFlags::default());
    let ptr = a.with_tag(Tag::new(3).unwrap());
    assert_eq!(
        load8(&mut k, p, ptr),
        Outcome::Fault(uapi::Fault {
            code: uapi::FaultCode::SegvAccErr,
            addr: Some(ptr)
        })
    );
    let ro = mmap(
        &mut k,
        p,
        4096,
        Prot {
            read: true,
            ..Prot::NONE
        },
        MapFlags::default(),
    );
    assert_eq!(
        store8(&mut k, p, ro, 1),
        Outcome::Fault(uapi::Fault {
            code: uapi::FaultCode::SegvAccErr,
            addr: Some(ro)
        })
    );
    // A load crossing from the read-only page into the PROT_NONE one just
    // above it (mappings are packed top-down): the fault is at the first
    // byte of the failing page.
    assert_eq!(ro.checked_add(4096).unwrap(), a);
    let crossing = ro.checked_add(4092).unwrap().with_tag(Tag::new(2).unwrap());
    assert_eq!(
        load8(&mut k, p, crossing),
        Outcome::Fault(uapi::Fault {
            code: uapi::FaultCode::SegvAccErr,
            addr: Some(a.with_tag(Tag::new(2).unwrap()))
        })
    );
}

/// RFC v3 set_pte_at(): a tagged entry for a page whose tag storage is not
/// reserved is written awaiting tag storage, tags untouched; the first
/// access reserves the storage (fault.tag_storage), initialises the tags
/// once and maps the page valid and tagged.
#[test]
fn set_pte_at_maps_awaiting_until_storage_is_reserved() {
    let mut k = kernel(&[("tag-storage", "dynamic")]);
    let p = spawn(&mut k);
    sync_mte(&mut k, p);
    // Untagged data in DRAM (tag-storage-data=balance may use CMA too; the
    // page is found wherever it is).
    let a = mmap(&mut k, p, 4096, Prot::READ_WRITE, MapFlags::default());
    assert_eq!(store8(&mut k, p, a, 0x1234), Outcome::Ok);
    let pfn = pfn_of(&k, p, a).unwrap();
    assert!(!k.mem.tag_storage_reserved(pfn));
    let reservations = stat(&k, Counter::TagStorageReservations);
    assert_eq!(
        cmd(
            &mut k,
            p,
            Command::Mprotect {
                ptr: a,
                len: 4096,
                prot: rw_mte()
            }
        ),
        Outcome::Ok
    );
    assert_eq!(
        k.page_state(p, a, PageState::AwaitingTagStorage),
        Some(true)
    );
    assert!(
        !k.mem.page_mte_tagged(pfn),
        "tags are not initialised before the fault"
    );
    assert_eq!(k.tags(p, a, 32), Some(vec![Tag::ZERO; 2]));
    assert_eq!(load8(&mut k, p, a), Outcome::Value(0x1234));
    assert!(stat(&k, Counter::FaultTagStorage) >= 1);
    assert_eq!(k.page_state(p, a, PageState::Tagged), Some(true));
    let now = pfn_of(&k, p, a).unwrap();
    assert!(k.mem.tag_storage_reserved(now) && k.mem.page_mte_tagged(now));
    if now == pfn {
        assert!(stat(&k, Counter::TagStorageReservations) > reservations);
    }
}

/// A page lying in tag storage that must be mapped tagged is migrated out
/// (tag_storage.migrations, migrate.pages), and every mapping of it is
/// rewritten through the rmap: here the parent's and the forked child's.
#[test]
fn migration_out_of_tag_storage_rewrites_every_mapping() {
    let mut k = kernel(&[("tag-storage", "dynamic"), ("tag-storage-data", "prefer")]);
    let p = spawn(&mut k);
    sync_mte(&mut k, p);
    let a = mmap(&mut k, p, 4096, Prot::READ_WRITE, MapFlags::default());
    assert_eq!(
        cmd(
            &mut k,
            p,
            Command::Fill {
                ptr: a,
                len: 4096,
                byte: 0xab
            }
        ),
        Outcome::Ok
    );
    let src = pfn_of(&k, p, a).unwrap();
    assert!(
        k.mem.geometry().is_tag_storage(src),
        "prefer puts untagged data in tag storage"
    );
    let c = match run(
        &mut k,
        Op::Process {
            pid: p,
            command: Command::Fork,
        },
    )
    .bound
    {
        Some(Bound::Process(c)) => c,
        b => panic!("{b:?}"),
    };
    assert_eq!(k.page_state(c, a, PageState::Shared), Some(true));
    assert_eq!(
        cmd(
            &mut k,
            p,
            Command::Mprotect {
                ptr: a,
                len: 4096,
                prot: rw_mte()
            }
        ),
        Outcome::Ok
    );
    let (migrations, moved) = (
        stat(&k, Counter::TagStorageMigrations),
        stat(&k, Counter::MigratePages),
    );
    assert_eq!(
        cmd(
            &mut k,
            p,
            Command::Verify {
                ptr: a,
                len: 4096,
                byte: 0xab
            }
        ),
        Outcome::Ok
    );
    let dst = pfn_of(&k, p, a).unwrap();
    assert_ne!(dst, src);
    assert!(!k.mem.geometry().is_tag_storage(dst));
    assert_eq!(
        pfn_of(&k, c, a),
        Some(dst),
        "the child's entry follows the page"
    );
    assert_eq!(k.page_state(c, a, PageState::InTagStorage), Some(false));
    assert_eq!(stat(&k, Counter::TagStorageMigrations), migrations + 1);
    assert_eq!(stat(&k, Counter::MigratePages), moved + 1);
    assert_eq!(
        cmd(
            &mut k,
            c,
            Command::Verify {
                ptr: a,
                len: 4096,
                byte: 0xab
            }
        ),
        Outcome::Ok
    );
    // Copy-on-write still separates them.
    assert_eq!(store8(&mut k, c, a, 1), Outcome::Ok);
    assert_eq!(load8(&mut k, p, a), Outcome::Value(0xabab_abab_abab_abab));
}

/// Migration of a pinned page fails (MigrateError::Pinned) and leaves it
/// in place; a long-term pin moves a page out of CMA first (Linux
/// check_and_migrate_movable_pages()), keeps it across munmap, and unpin
/// frees it.
#[test]
fn pins_block_migration_and_outlive_unmapping() {
    let mut k = kernel(&[("tag-storage", "dynamic"), ("tag-storage-data", "prefer")]);
    let p = spawn(&mut k);
    let a = mmap(&mut k, p, 4096, Prot::READ_WRITE, MapFlags::default());
    assert_eq!(store8(&mut k, p, a, 9), Outcome::Ok);
    let pfn = pfn_of(&k, p, a).unwrap();
    assert!(k.mem.geometry().is_tag_storage(pfn));
    // A short-term pin (not through `pin`, which would move it first).
    k.mem.phys_mut().alloc.frame_mut(pfn).unwrap().pins += 1;
    let result = k
        .sched
        .block_on(
            async { k.mover().move_page(&k.mem, pfn).await },
            sched::RunLimits::default(),
        )
        .unwrap();
    assert_eq!(result, Err(MigrateError::Pinned));
    assert_eq!(pfn_of(&k, p, a), Some(pfn));
    k.mem.phys_mut().alloc.frame_mut(pfn).unwrap().pins -= 1;

    assert_eq!(cmd(&mut k, p, Command::Pin { ptr: a, len: 1 }), Outcome::Ok);
    let pinned = pfn_of(&k, p, a).unwrap();
    assert!(
        !k.mem.geometry().is_tag_storage(pinned),
        "FOLL_LONGTERM leaves CMA"
    );
    assert_eq!(load8(&mut k, p, a), Outcome::Value(9));
    let free = stat(&k, Counter::MemFree);
    assert_eq!(
        cmd(&mut k, p, Command::Munmap { ptr: a, len: 4096 }),
        Outcome::Ok
    );
    assert!(k.orphans.borrow().contains(&pinned));
    assert_eq!(
        cmd(&mut k, p, Command::Unpin { ptr: a, len: 1 }),
        Outcome::Ok
    );
    assert!(stat(&k, Counter::MemFree) > free);
    assert_eq!(
        cmd(&mut k, p, Command::Unpin { ptr: a, len: 1 }),
        Outcome::Error(Errno::Inval)
    );
}

/// fork copies a pinned private page at once (Linux copy_present_page()):
/// the child gets its own page, with the data and tags.
#[test]
fn fork_copies_pinned_pages() {
    let mut k = kernel(&[]);
    let p = spawn(&mut k);
    sync_mte(&mut k, p);
    let a = mmap(&mut k, p, 4096, rw_mte(), MapFlags::default());
    let t = a.with_tag(Tag::new(4).unwrap());
    assert_eq!(
        cmd(
            &mut k,
            p,
            Command::StoreTag {
                op: TagStoreOp::Stg,
                ptr: t
            }
        ),
        Outcome::Ok
    );
    assert_eq!(store8(&mut k, p, t, 77), Outcome::Ok);
    assert_eq!(
        cmd(&mut k, p, Command::Pin { ptr: a, len: 4096 }),
        Outcome::Ok
    );
    let c = match run(
        &mut k,
        Op::Process {
            pid: p,
            command: Command::Fork,
        },
    )
    .bound
    {
        Some(Bound::Process(c)) => c,
        b => panic!("{b:?}"),
    };
    assert_ne!(pfn_of(&k, c, a), pfn_of(&k, p, a));
    assert_eq!(k.page_state(c, a, PageState::Private), Some(true));
    assert_eq!(load8(&mut k, c, t), Outcome::Value(77));
    assert_eq!(k.tags(c, a, 16), Some(vec![Tag::new(4).unwrap()]));
}

/// Shared anonymous memory is one object: fork shares it, writes are seen
/// by both; a private file mapping copies on write and keeps the object.
#[test]
fn shared_memory_and_private_files() {
    let mut k = kernel(&[]);
    let p = spawn(&mut k);
    let shared = MapFlags {
        sharing: Sharing::Shared,
        ..MapFlags::default()
    };
    let s = mmap(&mut k, p, 4096, Prot::READ_WRITE, shared);
    let c = match run(
        &mut k,
        Op::Process {
            pid: p,
            command: Command::Fork,
        },
    )
    .bound
    {
        Some(Bound::Process(c)) => c,
        b => panic!("{b:?}"),
    };
    assert_eq!(store8(&mut k, c, s, 42), Outcome::Ok);
    assert_eq!(load8(&mut k, p, s), Outcome::Value(42));
    assert_eq!(k.page_state(p, s, PageState::Shared), Some(true));
    let file = MapFlags {
        backing: Backing::File,
        ..MapFlags::default()
    };
    let f = mmap(&mut k, p, 4096, Prot::READ_WRITE, file);
    assert_eq!(load8(&mut k, p, f), Outcome::Value(0));
    assert_eq!(store8(&mut k, p, f, 3), Outcome::Ok);
    assert_eq!(load8(&mut k, p, f), Outcome::Value(3));
    assert_eq!(
        cmd(
            &mut k,
            p,
            Command::Madvise {
                ptr: f,
                len: 4096,
                advice: uapi::Advice::DontNeed
            }
        ),
        Outcome::Ok
    );
    assert_eq!(load8(&mut k, p, f), Outcome::Value(0));
    assert_eq!(cmd(&mut k, c, Command::Exit), Outcome::Ok);
    assert_eq!(cmd(&mut k, c, Command::Yield), Outcome::Error(Errno::Srch));
}

/// A parallel block runs each op as its own task; outcomes that hold in
/// every interleaving hold here, and the invariants after it.
#[test]
fn parallel_faults_on_one_page() {
    let mut k = kernel(&[("tag-storage", "dynamic")]);
    let p = spawn(&mut k);
    sync_mte(&mut k, p);
    let a = mmap(&mut k, p, 8192, rw_mte(), MapFlags::default());
    let b = a.checked_add(4096).unwrap();
    for seed in 0..16 {
        let ops = vec![
            Op::Process {
                pid: p,
                command: Command::Store {
                    ptr: a,
                    size: AccessSize::B8,
                    value: seed,
                },
            },
            Op::Process {
                pid: p,
                command: Command::Store {
                    ptr: b,
                    size: AccessSize::B8,
                    value: seed,
                },
            },
            Op::Process {
                pid: p,
                command: Command::Fork,
            },
        ];
        let replies = k
            .run_parallel(&ops, &mut sched::Seeded::new(seed as u64))
            .unwrap();
        assert!(
            replies.iter().all(|r| r.outcome == Outcome::Ok),
            "{replies:?}"
        );
        assert_eq!(k.invariant_violations(), Vec::<uapi::Violation>::new());
        assert_eq!(load8(&mut k, p, a), Outcome::Value(seed));
        if let Some(Bound::Process(c)) = replies[2].bound {
            assert_eq!(cmd(&mut k, c, Command::Exit), Outcome::Ok);
        }
    }
    assert!(matches!(
        k.current_pte(k.process_mm(p).unwrap(), a.addr()),
        Some(Pte::Present(_))
    ));
}

/// Out of memory inside a fault (Linux VM_FAULT_OOM) ends the access with a
/// fault outcome, never a loop or a panic; what was written before stays,
/// and freeing memory makes the next access work.
#[test]
fn out_of_memory_in_a_fault_is_a_fault_outcome() {
    let mut k = kernel(&[("memory", "16M"), ("tag-storage", "none")]);
    let p = spawn(&mut k);
    // Each below the commit limit (checked per request, Linux's
    // OVERCOMMIT_GUESS), together more than the machine has.
    let first = mmap(&mut k, p, 15 << 20, Prot::READ_WRITE, MapFlags::default());
    assert_eq!(
        cmd(
            &mut k,
            p,
            Command::Fill {
                ptr: first,
                len: 15 << 20,
                byte: 2
            }
        ),
        Outcome::Ok
    );
    let a = mmap(&mut k, p, 15 << 20, Prot::READ_WRITE, MapFlags::default());
    let outcome = cmd(
        &mut k,
        p,
        Command::Fill {
            ptr: a,
            len: 15 << 20,
            byte: 1,
        },
    );
    let Outcome::Fault(f) = outcome else {
        panic!("expected an OOM fault, got {outcome:?}");
    };
    assert_eq!(f.code, uapi::FaultCode::SegvAccErr);
    let stopped = f.addr.unwrap().addr().as_u64() - a.addr().as_u64();
    assert!(stopped > 0 && stopped.is_multiple_of(4096));
    assert_eq!(
        cmd(
            &mut k,
            p,
            Command::Verify {
                ptr: a,
                len: stopped,
                byte: 1
            }
        ),
        Outcome::Ok
    );
    assert_eq!(
        cmd(
            &mut k,
            p,
            Command::Munmap {
                ptr: first,
                len: 15 << 20
            }
        ),
        Outcome::Ok
    );
    let b = mmap(&mut k, p, 4096, Prot::READ_WRITE, MapFlags::default());
    assert_eq!(store8(&mut k, p, b, 1), Outcome::Ok);
}

/// Under `static` tag storage (mainline Linux) nothing ever waits for tag
/// storage: adding PROT_MTE maps the page tagged at once.
#[test]
fn static_tag_storage_never_awaits() {
    let mut k = kernel(&[("tag-storage", "static")]);
    let p = spawn(&mut k);
    let a = mmap(&mut k, p, 4096, Prot::READ_WRITE, MapFlags::default());
    assert_eq!(store8(&mut k, p, a, 3), Outcome::Ok);
    assert_eq!(
        cmd(
            &mut k,
            p,
            Command::Mprotect {
                ptr: a,
                len: 4096,
                prot: rw_mte()
            }
        ),
        Outcome::Ok
    );
    assert_eq!(k.page_state(p, a, PageState::Tagged), Some(true));
    assert_eq!(stat(&k, Counter::FaultTagStorage), 0);
}

/// Without MTE (`tag-storage=none`) MTE bits of prctl and PROT_MTE are
/// EINVAL (docs/semantics.md §6, §7) and ptrace tag access is EIO; exec
/// resets the settings.
#[test]
fn no_mte_machine_refuses_mte_and_exec_resets_settings() {
    let mut k = kernel(&[("tag-storage", "none")]);
    let p = spawn(&mut k);
    let q = spawn(&mut k);
    let sync = PrctlRequest {
        tcf: Some(CheckMode::Sync),
        ..PrctlRequest::default()
    };
    assert_eq!(
        cmd(&mut k, p, Command::Prctl(sync)),
        Outcome::Error(Errno::Inval)
    );
    let tagged = PrctlRequest {
        tagged_addr: Some(true),
        ..PrctlRequest::default()
    };
    assert_eq!(cmd(&mut k, p, Command::Prctl(tagged)), Outcome::Ok);
    assert_eq!(cmd(&mut k, p, Command::PrctlGet), Outcome::Value(1));
    assert_eq!(
        cmd(
            &mut k,
            p,
            Command::Mmap {
                len: 4096,
                prot: rw_mte(),
                flags: MapFlags::default()
            }
        ),
        Outcome::Error(Errno::Inval)
    );
    assert_eq!(
        cmd(
            &mut k,
            p,
            Command::PeekTags {
                target: q,
                ptr: TaggedPtr::from_raw(0x1000),
                granules: 1
            }
        ),
        Outcome::Error(Errno::Io)
    );
    assert_eq!(cmd(&mut k, p, Command::Exec), Outcome::Ok);
    assert_eq!(cmd(&mut k, p, Command::PrctlGet), Outcome::Value(0));
}

/// The checker sees what it must: a leaked frame, a map count out of step
/// with the rmap, a stale TLB entry.
#[test]
fn the_checker_reports_broken_invariants() {
    let mut k = kernel(&[]);
    let p = spawn(&mut k);
    let a = mmap(&mut k, p, 4096, Prot::READ_WRITE, MapFlags::default());
    assert_eq!(store8(&mut k, p, a, 1), Outcome::Ok);
    assert_eq!(load8(&mut k, p, a), Outcome::Value(1), "fills the TLB");
    let pfn = pfn_of(&k, p, a).unwrap();

    k.mem.phys_mut().alloc.frame_mut(pfn).unwrap().mapcount += 1;
    let v = k.invariant_violations();
    assert!(
        v.iter().any(|s| s.invariant == uapi::Invariant::Counts
            && s.message.contains("map count 2, but 1 mappings")),
        "{v:#?}"
    );
    k.mem.phys_mut().alloc.frame_mut(pfn).unwrap().mapcount -= 1;

    let leaked = k
        .mem
        .alloc(super::PAGE_ORDER, crate::mem::Gfp::USER)
        .unwrap();
    let v = k.invariant_violations();
    assert!(
        v.iter().any(|s| s.message.contains("accounted for")),
        "{v:#?}"
    );
    super::free_unreserved(&k.mem, leaked);

    // Change the entry behind the TLB's back.
    let mm = k.process_mm(p).unwrap();
    {
        let mut mms = k.mms.borrow_mut();
        let m = mms.get_mut(&mm).unwrap();
        let Pte::Present(mut leaf) = m.pt.pte(a.addr()) else {
            panic!()
        };
        leaf.attrs.access = crate::mm::Access::ReadOnly;
        m.pt.set_pte(
            a.addr(),
            Pte::Present(leaf),
            &mut super::PtFrames { mem: &k.mem },
        )
        .unwrap();
    }
    let v = k.invariant_violations();
    assert!(
        v.iter()
            .any(|s| s.invariant == uapi::Invariant::LayerConsistency
                && s.message.contains("TLB disagrees")),
        "{v:#?}"
    );
}

/// A large machine costs what it uses: booting, a fault and the invariant
/// check do not scan every frame.
#[test]
fn a_large_machine_is_cheap_to_use_and_check() {
    let mut k = kernel(&[("memory", "64G"), ("tag-storage", "dynamic")]);
    let p = spawn(&mut k);
    let a = mmap(&mut k, p, 1 << 20, rw_mte(), MapFlags::default());
    assert_eq!(store8(&mut k, p, a, 1), Outcome::Ok);
    assert_eq!(load8(&mut k, p, a), Outcome::Value(1));
    assert!(k.invariant_violations().is_empty());
}

/// The access fast path gives what the full kernel path gives: the same
/// outcomes, counters and pending asynchronous faults, for loads and
/// stores of every size, matching and mismatching tags, in every mode.
#[test]
fn the_access_fast_path_agrees_with_the_full_path() {
    use sched::RunLimits;
    let slow = |k: &mut Kernel, op: &Op| -> Outcome {
        let this = &*k;
        this.sched
            .block_on(this.op(op), RunLimits::default())
            .unwrap()
            .outcome
    };
    let modes = [
        CheckMode::Sync,
        CheckMode::Async,
        CheckMode::Asymm,
        CheckMode::None,
    ];
    let mut fast_hits = 0;
    for mode in modes {
        for store_only in [false, true] {
            let mut machines = [kernel(&[]), kernel(&[])];
            let mut ops = Vec::new();
            for k in &mut machines {
                let pid = spawn(k);
                sync_mte(k, pid);
                let request = PrctlRequest {
                    tcf: Some(mode),
                    store_only: Some(store_only),
                    ..PrctlRequest::default()
                };
                assert_eq!(cmd(k, pid, Command::Prctl(request)), Outcome::Ok);
                let a = mmap(k, pid, 0x2000, rw_mte(), MapFlags::default());
                let b = mmap(k, pid, 0x1000, Prot::READ_WRITE, MapFlags::default());
                let set = |ptr: TaggedPtr| Command::SetTag { ptr, len: 0x20 };
                let tagged = a.with_tag(Tag::new(3).unwrap());
                assert_eq!(cmd(k, pid, set(tagged)), Outcome::Ok);
                // Fault both pages in, so that the TLB holds them.
                let second = a.checked_add(0x1000).unwrap();
                for ptr in [tagged, second, b] {
                    assert!(matches!(load8(k, pid, ptr), Outcome::Value(_)));
                }
                ops.clear();
                for (base, off) in [(a, 0), (a, 0x18), (a, 0xff8), (a, 0x1000), (b, 8)] {
                    for tag in [0, 3, 9] {
                        let ptr = base
                            .checked_add(off)
                            .unwrap()
                            .with_tag(Tag::new(tag).unwrap());
                        for size in [AccessSize::B1, AccessSize::B8, AccessSize::B16] {
                            ops.push(Op::Process {
                                pid,
                                command: Command::Load { ptr, size },
                            });
                            ops.push(Op::Process {
                                pid,
                                command: Command::Store {
                                    ptr,
                                    size,
                                    value: 0x1122_3344_5566_7788_99aa,
                                },
                            });
                        }
                    }
                }
                // A system call reports any pending asynchronous fault.
                ops.push(Op::Process {
                    pid,
                    command: Command::Yield,
                });
            }
            let [fast_k, slow_k] = &mut machines;
            for op in &ops {
                let Op::Process { pid, command } = op else {
                    unreachable!()
                };
                let expected = slow(slow_k, op);
                let fast = fast_k.fast_access(*pid, command);
                if fast.is_some() {
                    fast_hits += 1;
                }
                let got = fast.unwrap_or_else(|| slow(fast_k, op));
                assert_eq!(got, expected, "{mode:?} store_only={store_only} {op:?}");
            }
            for c in Counter::ALL {
                assert_eq!(fast_k.counter(c), slow_k.counter(c), "{c:?}");
            }
            assert!(fast_k.invariant_violations().is_empty());
        }
    }
    assert!(fast_hits > 100, "the fast path ran only {fast_hits} times");
}

// ----- transparent huge pages (machine/huge.rs) -----------------------------

const MIB2: u64 = 2 << 20;

fn huge_mapping(k: &mut Kernel, pid: Pid, prot: Prot) -> TaggedPtr {
    let a = mmap(k, pid, MIB2, prot, MapFlags::default());
    assert!(a.addr().is_aligned(MIB2), "2M mappings are 2M aligned");
    a
}

fn at(a: TaggedPtr, off: u64) -> TaggedPtr {
    a.checked_add(off).unwrap()
}

/// do_huge_pmd_anonymous_page(): one order-9 page mapped by a block; every
/// page of it is the head frame plus its index, counted mapped once each;
/// the block has its deposited table; one block TLB entry serves every page
/// (O(1) lookups) and invalidating any page of it drops it.
#[test]
fn a_huge_fault_maps_one_block_with_a_deposit_and_one_tlb_entry() {
    let mut k = kernel(&[("tag-storage", "none"), ("thp", "always")]);
    let p = spawn(&mut k);
    let a = huge_mapping(&mut k, p, Prot::READ_WRITE);
    assert_eq!(store8(&mut k, p, at(a, 0x10), 1), Outcome::Ok);
    assert_eq!(stat(&k, Counter::FaultAnon), 1);
    let head = pfn_of(&k, p, a).unwrap();
    assert!(head.as_u64().is_multiple_of(512));
    assert_eq!(pfn_of(&k, p, at(a, 0x1ff000)), Some(head + 511));
    for off in [0x1000, 0x80000, 0x1ff008] {
        assert_eq!(load8(&mut k, p, at(a, off)), Outcome::Value(0));
    }
    let mm = k.process_mm(p).unwrap();
    {
        let mms = k.mms.borrow();
        let m = &mms[&mm];
        let huge: Vec<_> = m.tlb.entries().filter(|e| e.huge).collect();
        assert_eq!(huge.len(), 1, "{huge:?}");
        assert_eq!(huge[0].pfn, head);
        assert_eq!(m.tlb.entries().filter(|e| !e.huge).count(), 0);
        assert_eq!(m.deposits.len(), 1);
        let phys = k.mem.phys();
        for i in [0, 1, 511] {
            let meta = phys.alloc.frame(head + i).unwrap();
            assert_eq!((meta.mapcount, meta.refcount), (1, 1));
        }
    }
    assert_eq!(stat(&k, Counter::FaultAnon), 1, "no more faults");
    // Unmapping one page splits the block: 511 pages stay, the TLB entry goes.
    assert_eq!(
        cmd(
            &mut k,
            p,
            Command::Munmap {
                ptr: at(a, 0x1000),
                len: 4096
            }
        ),
        Outcome::Ok
    );
    {
        let mms = k.mms.borrow();
        let m = &mms[&mm];
        assert_eq!(m.tlb.entries().filter(|e| e.huge).count(), 0);
        assert!(m.deposits.is_empty(), "the split used the deposit");
    }
    assert_eq!(k.page_state(p, a, PageState::Huge), Some(false));
    assert_eq!(
        k.mem
            .phys()
            .alloc
            .frame_status(head + 1)
            .map(|s| matches!(s, crate::phys::FrameStatus::Free { .. })),
        Some(true)
    );
    assert_eq!(load8(&mut k, p, at(a, 0x10)), Outcome::Value(1));
}

/// Two CPUs fault on one empty PMD: one block wins, the loser's huge page
/// and deposit are freed (pmd_none() rechecked under the lock), the access
/// of each lands in it.
#[test]
fn parallel_huge_faults_on_one_pmd_map_one_block() {
    let mut k = kernel(&[("tag-storage", "dynamic"), ("thp", "always")]);
    let p = spawn(&mut k);
    sync_mte(&mut k, p);
    for seed in 0..12 {
        let a = huge_mapping(&mut k, p, rw_mte());
        let ops: Vec<Op> = [0u64, 0x100000]
            .iter()
            .map(|&off| Op::Process {
                pid: p,
                command: Command::Store {
                    ptr: at(a, off),
                    size: AccessSize::B8,
                    value: u128::from(off as u32 + 1),
                },
            })
            .collect();
        let before = stat(&k, Counter::FaultAnon);
        let replies = k.run_parallel(&ops, &mut sched::Seeded::new(seed)).unwrap();
        assert!(
            replies.iter().all(|r| r.outcome == Outcome::Ok),
            "{replies:?}"
        );
        assert_eq!(k.invariant_violations(), Vec::<uapi::Violation>::new());
        assert_eq!(stat(&k, Counter::FaultAnon), before + 1);
        assert_eq!(k.page_state(p, a, PageState::Huge), Some(true));
        assert_eq!(load8(&mut k, p, a), Outcome::Value(1));
        assert_eq!(load8(&mut k, p, at(a, 0x100000)), Outcome::Value(0x100001));
        assert_eq!(
            cmd(&mut k, p, Command::Munmap { ptr: a, len: MIB2 }),
            Outcome::Ok
        );
    }
}

/// Static tag storage (mainline): a tagged huge page never awaits tag
/// storage; its 512 pages are tagged at once.
#[test]
fn static_tag_storage_maps_tagged_blocks_valid() {
    let mut k = kernel(&[("tag-storage", "static"), ("thp", "always")]);
    let p = spawn(&mut k);
    sync_mte(&mut k, p);
    let a = huge_mapping(&mut k, p, rw_mte());
    assert_eq!(load8(&mut k, p, a), Outcome::Value(0));
    assert_eq!(k.page_state(p, a, PageState::HugeZeroPage), Some(true));
    assert_eq!(k.page_state(p, a, PageState::Tagged), Some(true));
    assert_eq!(stat(&k, Counter::FaultTagStorage), 0);
    let b = huge_mapping(&mut k, p, rw_mte());
    assert_eq!(store8(&mut k, p, b, 1), Outcome::Ok);
    assert_eq!(
        k.page_state(p, at(b, 0x1ff000), PageState::Tagged),
        Some(true)
    );
    assert_eq!(stat(&k, Counter::FaultTagStorage), 0);
    assert_eq!(stat(&k, Counter::PagesTagged), 1 + 512 + 512);
}

/// The checker covers blocks: a writable huge zero page entry and a block
/// without its deposited table are reported.
#[test]
fn the_checker_reports_broken_block_entries() {
    let mut k = kernel(&[("tag-storage", "none"), ("thp", "always")]);
    let p = spawn(&mut k);
    let a = huge_mapping(&mut k, p, Prot::READ_WRITE);
    assert_eq!(load8(&mut k, p, a), Outcome::Value(0));
    let mm = k.process_mm(p).unwrap();
    {
        let mut mms = k.mms.borrow_mut();
        let m = mms.get_mut(&mm).unwrap();
        let crate::mm::Walk::Block { block, .. } = m.pt.walk(a.addr()) else {
            panic!()
        };
        let mut leaf = block.leaf();
        leaf.attrs.access = crate::mm::Access::ReadWrite;
        m.pt.set_block(
            a.addr(),
            crate::mm::Block::Present(leaf),
            &mut super::PtFrames { mem: &k.mem },
        )
        .unwrap();
        m.tlb.invalidate(a.addr());
    }
    let v = k.invariant_violations();
    assert!(
        v.iter().any(|s| s.message.contains("huge zero page entry")),
        "{v:#?}"
    );
    let deposit = {
        let mut mms = k.mms.borrow_mut();
        mms.get_mut(&mm)
            .unwrap()
            .deposits
            .remove(&a.addr())
            .unwrap()
    };
    let v = k.invariant_violations();
    assert!(
        v.iter().any(|s| s.message.contains("deposited page table")),
        "{v:#?}"
    );
    k.mms
        .borrow_mut()
        .get_mut(&mm)
        .unwrap()
        .deposits
        .insert(a.addr(), deposit);
}

/// Memory running out under THP: huge faults fall back to 4 KiB pages while
/// order-9 pages last, then the access faults (VM_FAULT_OOM) without a
/// panic; invariants hold throughout and freeing a block lets faults work
/// again.
#[test]
fn huge_faults_under_memory_exhaustion_fall_back_then_fault() {
    let mut k = kernel(&[
        ("memory", "16M"),
        ("tag-storage", "none"),
        ("thp", "always"),
    ]);
    let p = spawn(&mut k);
    let mut maps = Vec::new();
    let mut huge = 0;
    let mut faulted = false;
    for _ in 0..12 {
        let a = huge_mapping(&mut k, p, Prot::READ_WRITE);
        maps.push(a);
        for page in 0..512u64 {
            match store8(&mut k, p, at(a, page * 4096), 1) {
                Outcome::Ok => {}
                Outcome::Fault(f) => {
                    assert_eq!(f.code, uapi::FaultCode::SegvAccErr);
                    faulted = true;
                    break;
                }
                other => panic!("{other:?}"),
            }
            if page == 0 && k.page_state(p, a, PageState::Huge) == Some(true) {
                huge += 1;
                break;
            }
        }
        if faulted {
            break;
        }
    }
    assert!(huge >= 1, "some faults were huge");
    assert!(faulted, "memory ran out");
    let first = maps[0];
    assert_eq!(
        cmd(
            &mut k,
            p,
            Command::Munmap {
                ptr: first,
                len: MIB2
            }
        ),
        Outcome::Ok
    );
    let last = *maps.last().unwrap();
    assert_eq!(store8(&mut k, p, last, 2), Outcome::Ok);
}

fn madvise(k: &mut Kernel, pid: Pid, ptr: TaggedPtr, len: u64, advice: uapi::Advice) -> Outcome {
    cmd(k, pid, Command::Madvise { ptr, len, advice })
}

fn set_tag(k: &mut Kernel, pid: Pid, ptr: TaggedPtr, len: u64) -> Outcome {
    cmd(k, pid, Command::SetTag { ptr, len })
}

fn slot_of(k: &Kernel, pid: Pid, ptr: TaggedPtr) -> Option<crate::mm::SwapSlot> {
    let mm = k.process_mm(pid)?;
    match k.current_pte(mm, ptr.addr().align_down(4096))? {
        Pte::Swap(slot) => Some(slot),
        _ => None,
    }
}

/// Linux madvise_cold_or_pageout_pte_range() + shrink_folio_list(): the
/// page is written to a slot with its tags (mte_save_tags), its entry
/// becomes a swap entry and the frame is freed; do_swap_page() reads it
/// back into a new frame with its tags (mte_restore_tags) and frees the
/// slot with its tags (mte_invalidate_tags).
#[test]
fn pageout_saves_tags_and_swap_in_restores_them() {
    for policy in ["static", "dynamic"] {
        let mut k = kernel(&[("tag-storage", policy), ("swap", "64K")]);
        let p = spawn(&mut k);
        sync_mte(&mut k, p);
        let a = mmap(&mut k, p, 4096, rw_mte(), MapFlags::default());
        let t = a.with_tag(Tag::new(6).unwrap());
        assert_eq!(set_tag(&mut k, p, t, 4096), Outcome::Ok);
        assert_eq!(store8(&mut k, p, t, 0xabc), Outcome::Ok);
        let old = pfn_of(&k, p, a).unwrap();
        let tagged = stat(&k, Counter::PagesTagged);

        assert_eq!(
            madvise(&mut k, p, a, 4096, uapi::Advice::PageOut),
            Outcome::Ok
        );
        let slot = slot_of(&k, p, a).expect("a swap entry");
        assert_eq!(k.swap.borrow().get(slot).unwrap().count, 1);
        assert_eq!(
            k.swap.borrow().saved_tags(slot).unwrap(),
            &[Tag::new(6).unwrap(); 256][..]
        );
        assert!(
            matches!(
                k.mem.phys().alloc.frame_status(old),
                Some(crate::phys::FrameStatus::Free { .. })
            ),
            "the frame is freed"
        );
        assert_eq!(stat(&k, Counter::PagesTagged), tagged - 1);
        assert_eq!(stat(&k, Counter::SwapOut), 1);
        assert_eq!(stat(&k, Counter::SwapSavedTags), 1);
        assert_eq!(k.tags(p, a, 16), Some(vec![Tag::new(6).unwrap()]));
        assert_eq!(k.page_state(p, a, PageState::Swapped), Some(true));

        assert_eq!(load8(&mut k, p, t), Outcome::Value(0xabc), "{policy}");
        assert_eq!(slot_of(&k, p, a), None);
        assert_eq!(k.swap.borrow().used(), 0, "slot and tags freed");
        assert_eq!(stat(&k, Counter::SwapIn), 1);
        assert_eq!(stat(&k, Counter::SwapSavedTags), 0);
        assert_eq!(stat(&k, Counter::PagesTagged), tagged);
        assert_eq!(k.page_state(p, a, PageState::Tagged), Some(true));
        assert_eq!(
            load8(&mut k, p, a.with_tag(Tag::new(1).unwrap())),
            Outcome::Fault(uapi::Fault {
                code: uapi::FaultCode::SegvMteSerr,
                addr: Some(a.with_tag(Tag::new(1).unwrap())),
            })
        );
    }
}

/// Two threads touching one swap entry at once: one swap-in maps the page,
/// the other finds the entry changed (pte_same() failing) and retries on
/// the new page; nothing leaks, whatever the interleaving.
#[test]
fn parallel_swap_ins_of_one_entry() {
    let mut k = kernel(&[("tag-storage", "dynamic"), ("swap", "64K")]);
    let p = spawn(&mut k);
    sync_mte(&mut k, p);
    let a = mmap(&mut k, p, 4096, rw_mte(), MapFlags::default());
    let t = a.with_tag(Tag::new(3).unwrap());
    assert_eq!(set_tag(&mut k, p, t, 4096), Outcome::Ok);
    for seed in 0..16u64 {
        assert_eq!(store8(&mut k, p, t, u128::from(seed)), Outcome::Ok);
        assert_eq!(
            madvise(&mut k, p, a, 4096, uapi::Advice::PageOut),
            Outcome::Ok
        );
        let swap_in = stat(&k, Counter::SwapIn);
        let load = Op::Process {
            pid: p,
            command: Command::Load {
                ptr: t,
                size: AccessSize::B8,
            },
        };
        let ops = vec![load.clone(), load];
        let replies = k.run_parallel(&ops, &mut sched::Seeded::new(seed)).unwrap();
        for r in &replies {
            assert_eq!(r.outcome, Outcome::Value(u128::from(seed)), "seed {seed}");
        }
        assert_eq!(k.invariant_violations(), Vec::<uapi::Violation>::new());
        assert_eq!(stat(&k, Counter::SwapIn), swap_in + 1);
        assert_eq!(k.swap.borrow().used(), 0);
    }
}

/// The checker's swap rules: swap counts equal the swap entries referring
/// to each slot, and restored tags wait only for mapped, untagged pages
/// (docs/model.md §4 invariant 7).
#[test]
fn the_checker_reports_swap_violations() {
    let mut k = kernel(&[("tag-storage", "static"), ("swap", "64K")]);
    let p = spawn(&mut k);
    sync_mte(&mut k, p);
    let a = mmap(&mut k, p, 8192, rw_mte(), MapFlags::default());
    assert_eq!(set_tag(&mut k, p, a, 8192), Outcome::Ok);
    assert_eq!(
        madvise(&mut k, p, a, 4096, uapi::Advice::PageOut),
        Outcome::Ok
    );
    let slot = slot_of(&k, p, a).unwrap();
    assert!(k.violations().is_empty());

    k.swap.borrow_mut().duplicate(slot).unwrap();
    assert!(k.violations().contains(&super::KernelViolation::SwapCount {
        slot,
        count: 2,
        entries: 1,
    }));
    assert_eq!(k.swap_free(slot), None);

    let b = a.checked_add(4096).unwrap();
    let pfn = pfn_of(&k, p, b).unwrap();
    k.restored_tags
        .borrow_mut()
        .insert(pfn, vec![Tag::ZERO; 256]);
    assert!(
        k.violations()
            .contains(&super::KernelViolation::RestoredTags {
                pfn,
                what: "tagged already",
            })
    );
    k.restored_tags.borrow_mut().clear();

    // A swap entry whose slot is gone.
    assert_eq!(k.swap.borrow_mut().free(slot), Ok(true));
    assert!(k.violations().contains(&super::KernelViolation::SwapCount {
        slot,
        count: 0,
        entries: 1,
    }));
}

/// fork duplicates swap entries (swap_duplicate); exit of either gives one
/// reference back; a swap-in by one leaves the other's entry alone.
#[test]
fn fork_shares_swap_slots_by_count() {
    let mut k = kernel(&[("tag-storage", "none"), ("swap", "64K")]);
    let p = spawn(&mut k);
    let a = mmap(&mut k, p, 4096, Prot::READ_WRITE, MapFlags::default());
    assert_eq!(store8(&mut k, p, a, 42), Outcome::Ok);
    assert_eq!(
        madvise(&mut k, p, a, 4096, uapi::Advice::PageOut),
        Outcome::Ok
    );
    let slot = slot_of(&k, p, a).unwrap();
    let c = match run(
        &mut k,
        Op::Process {
            pid: p,
            command: Command::Fork,
        },
    )
    .bound
    {
        Some(Bound::Process(c)) => c,
        b => panic!("{b:?}"),
    };
    assert_eq!(slot_of(&k, c, a), Some(slot));
    assert_eq!(k.swap.borrow().get(slot).unwrap().count, 2);
    assert_eq!(load8(&mut k, c, a), Outcome::Value(42));
    assert_eq!(k.swap.borrow().get(slot).unwrap().count, 1);
    assert_eq!(slot_of(&k, p, a), Some(slot));
    assert_eq!(cmd(&mut k, p, Command::Exit), Outcome::Ok);
    assert_eq!(k.swap.borrow().used(), 0);
    assert_eq!(load8(&mut k, c, a), Outcome::Value(42));
    assert_eq!(stat(&k, Counter::SwapSavedTags), 0, "no MTE: no tags saved");
}

/// `fill` and `verify` move a page's bytes in one copy (`bytewise`) but
/// keep the byte-by-byte result: a synchronous tag fault in the middle of
/// a page leaves the granules before it written and the rest untouched,
/// reports the failing granule, and a verify reports a mismatching byte
/// before a later fault; an asynchronous mismatch lets the fill complete.
#[test]
fn fill_and_verify_stop_at_the_failing_granule_within_a_page() {
    let t = |n: u8| Tag::new(n).unwrap();
    for mode in [CheckMode::Sync, CheckMode::Async] {
        let mut k = kernel(&[]);
        let p = spawn(&mut k);
        sync_mte(&mut k, p);
        let request = PrctlRequest {
            tcf: Some(mode),
            ..PrctlRequest::default()
        };
        assert_eq!(cmd(&mut k, p, Command::Prctl(request)), Outcome::Ok);
        let a = mmap(&mut k, p, 0x2000, rw_mte(), MapFlags::default());
        let at = |off: u64| a.checked_add(off).unwrap();
        // Granule 4 of the second page has tag 3; every other tag is 0.
        let bad = at(0x1040);
        assert_eq!(set_tag(&mut k, p, bad.with_tag(t(3)), 16), Outcome::Ok);
        let fill = cmd(
            &mut k,
            p,
            Command::Fill {
                ptr: at(8),
                len: 0x1ff0,
                byte: 7,
            },
        );
        let verify = |k: &mut Kernel, ptr: TaggedPtr, len: u64, byte: u8| {
            cmd(k, p, Command::Verify { ptr, len, byte })
        };
        let fault = Outcome::Fault(uapi::Fault {
            code: uapi::FaultCode::SegvMteSerr,
            addr: Some(bad),
        });
        if mode == CheckMode::Async {
            assert_eq!(fill, Outcome::Ok);
            assert_eq!(verify(&mut k, bad.with_tag(t(3)), 16, 7), Outcome::Ok);
            assert_eq!(verify(&mut k, at(8), 0x1038, 7), Outcome::Ok);
            continue;
        }
        assert_eq!(fill, fault);
        assert_eq!(verify(&mut k, at(8), 0x1038, 7), Outcome::Ok);
        assert_eq!(verify(&mut k, at(0), 8, 0), Outcome::Ok);
        assert_eq!(verify(&mut k, bad.with_tag(t(3)), 16, 0), Outcome::Ok);
        assert_eq!(verify(&mut k, at(0x1050), 0xfb0, 0), Outcome::Ok);
        // The whole range: the fault at the bad granule, unless a byte
        // before it differs (found first, also in the same page).
        assert_eq!(verify(&mut k, at(8), 0x1ff0, 7), fault);
        assert_eq!(store8(&mut k, p, at(0x1020), 0), Outcome::Ok);
        assert_eq!(verify(&mut k, at(8), 0x1ff0, 7), Outcome::Mismatch(0x1018));
        // A fault in the first granule of a page writes nothing of it.
        let fill = cmd(
            &mut k,
            p,
            Command::Fill {
                ptr: at(0x1048),
                len: 16,
                byte: 9,
            },
        );
        assert_eq!(
            fill,
            Outcome::Fault(uapi::Fault {
                code: uapi::FaultCode::SegvMteSerr,
                addr: Some(at(0x1048)),
            })
        );
        assert_eq!(verify(&mut k, bad.with_tag(t(3)), 16, 0), Outcome::Ok);
    }
}
