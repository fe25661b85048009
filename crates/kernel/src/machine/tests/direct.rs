//! The direct access path (`machine::direct`, per-CPU TLB `machine::cpu_tlb`)
//! against the full path: two machines run the same random programs, one
//! issuing its loads and stores through `load_direct` / `store_direct`, the
//! other every op as a kernel path (`Kernel::op`, no direct path at all).
//! Between the accesses the programs change what the TLBs cache (mprotect,
//! `madvise(DONTNEED)`, pageout, reclaim clearing young bits, compaction
//! migrating pages, fork write-protecting them, STG retagging, TCO and mode
//! changes). Outcomes, counters, every page's entry (young bit included)
//! and the invariants (the checker compares every per-CPU entry with a walk)
//! must agree.

use super::*;
use rand_core::{Rng, SeedableRng};
use rand_xoshiro::Xoshiro256PlusPlus;
use sched::RunLimits;
use uapi::Advice;

/// The full path only: the op as a kernel path, never the direct path.
fn full(k: &mut Kernel, op: &Op) -> Outcome {
    let this = &*k;
    this.sched
        .block_on(this.op(op), RunLimits::default())
        .unwrap()
        .outcome
}

const MODES: [CheckMode; 4] = [
    CheckMode::Sync,
    CheckMode::Async,
    CheckMode::Asymm,
    CheckMode::None,
];
const SIZES: [AccessSize; 5] = [
    AccessSize::B1,
    AccessSize::B2,
    AccessSize::B4,
    AccessSize::B8,
    AccessSize::B16,
];

/// Every page's entry in every process (young and dirty bits included).
fn entries(k: &Kernel, pids: &[Pid], maps: &[(TaggedPtr, u64)]) -> Vec<String> {
    let mms = k.mms.borrow();
    let mut out = Vec::new();
    for &pid in pids {
        let Some(mm) = k.process_mm(pid) else {
            continue;
        };
        for &(base, len) in maps {
            for page in (0..len).step_by(4096) {
                let va = base.addr().as_u64() + page;
                let walk = mms[&mm].pt.walk(mte::VirtAddr::new(va).unwrap());
                out.push(format!("{pid:?} {va:#x} {walk:?}"));
            }
        }
    }
    out
}

/// Whether `cpu`'s TLB of the fast machine holds the page of `ptr` of `pid`.
fn cached(k: &Kernel, cpu: usize, pid: Pid, ptr: TaggedPtr) -> bool {
    k.process_mm(pid).is_some_and(|mm| {
        k.cpu_tlbs
            .borrow_mut()
            .cpu(cpu)
            .lookup(mm, ptr.addr().as_u64() >> 12)
            .is_some()
    })
}

/// A random load or store of a random process in one of `maps`: mostly
/// inside a page, sometimes across a page or granule edge; mostly with the
/// tag the mapping was given (3).
fn random_access(
    rng: &mut Xoshiro256PlusPlus,
    pids: &[Pid],
    maps: &[(TaggedPtr, u64, bool)],
) -> (Pid, Command) {
    let pid = pids[rng.next_u32() as usize % pids.len()];
    let (base, len, _) = maps[rng.next_u32() as usize % maps.len()];
    let size = SIZES[rng.next_u32() as usize % SIZES.len()];
    let off = rng.next_u64() % (len - size.bytes() + 1);
    let tag = [3, 3, 0, 9, (rng.next_u32() % 16) as u8][rng.next_u32() as usize % 5];
    let ptr = base
        .checked_add(off)
        .unwrap()
        .with_tag(Tag::new(tag).unwrap());
    let store = rng.next_u32().is_multiple_of(2);
    let value = u128::from(rng.next_u64()) << (rng.next_u32() % 64);
    let command = if store {
        Command::Store { ptr, size, value }
    } else {
        Command::Load { ptr, size }
    };
    (pid, command)
}

/// Runs one random program of `steps` steps on a fast and a full machine;
/// returns how many accesses found their page in the fast machine's TLB, on
/// CPU 0 and on the other CPUs, and how many entries CPU 0's second level
/// holds at the end.
fn random_program(
    mode: CheckMode,
    keys: &[(&str, &str)],
    tagged_len: u64,
    seed: u64,
    steps: usize,
) -> [usize; 3] {
    let mut rng = Xoshiro256PlusPlus::seed_from_u64(seed);
    let mut machines = [kernel(keys), kernel(keys)];
    let mut pids = Vec::new();
    let mut maps = Vec::new();
    for k in &mut machines {
        let pid = spawn(k);
        sync_mte(k, pid);
        let request = PrctlRequest {
            tcf: Some(mode),
            ..PrctlRequest::default()
        };
        assert_eq!(cmd(k, pid, Command::Prctl(request)), Outcome::Ok);
        let tagged = mmap(k, pid, tagged_len, rw_mte(), MapFlags::default());
        let plain = mmap(k, pid, 0x2000, Prot::READ_WRITE, MapFlags::default());
        let set = Command::SetTag {
            ptr: tagged.with_tag(Tag::new(3).unwrap()),
            len: tagged_len,
        };
        assert_eq!(cmd(k, pid, set), Outcome::Ok);
        pids = vec![pid];
        maps = vec![(tagged, tagged_len, true), (plain, 0x2000, false)];
    }
    let ranges: Vec<(TaggedPtr, u64)> = maps.iter().map(|&(b, l, _)| (b, l)).collect();
    // Accesses whose page the fast machine's TLB held: on CPU 0, on others.
    let mut hits = [0; 2];
    let mut tco = false;
    for step in 0..steps {
        let pid = pids[rng.next_u32() as usize % pids.len()];
        let (base, len, mte) = maps[rng.next_u32() as usize % maps.len()];
        let page = (rng.next_u64() % (len / 4096)) * 4096;
        let page_ptr = base.checked_add(page).unwrap();
        let roll = rng.next_u32() % 100;
        let op = |command| Op::Process { pid, command };
        if roll < 60 {
            let (pid, command) = random_access(&mut rng, &pids, &maps);
            let [fast_k, full_k] = &mut machines;
            let expected = full(
                full_k,
                &Op::Process {
                    pid,
                    command: command.clone(),
                },
            );
            let ptr = match command {
                Command::Load { ptr, .. } | Command::Store { ptr, .. } => ptr,
                _ => unreachable!(),
            };
            hits[0] += usize::from(cached(fast_k, 0, pid, ptr));
            let got = match command {
                Command::Store { ptr, size, value } => fast_k.store_direct(pid, ptr, size, value),
                Command::Load { ptr, size } => fast_k.load_direct(pid, ptr, size),
                _ => unreachable!(),
            };
            assert_eq!(got, expected, "step {step} {mode:?} {command:?}");
        } else if roll < 75 {
            // A parallel block of accesses, task i on CPU i: the fast
            // machine serves each from its CPU's TLB where it can, the full
            // one runs the same block, same schedule, on the kernel path.
            let ops: Vec<Op> = (0..2 + rng.next_u32() % 3)
                .map(|_| {
                    let (pid, command) = random_access(&mut rng, &pids, &maps);
                    Op::Process { pid, command }
                })
                .collect();
            let seed = rng.next_u64();
            let [fast_k, full_k] = &mut machines;
            for (cpu, o) in ops.iter().enumerate() {
                if let Op::Process {
                    pid,
                    command: Command::Load { ptr, .. } | Command::Store { ptr, .. },
                } = o
                {
                    hits[usize::from(cpu > 0)] += usize::from(cached(fast_k, cpu, *pid, *ptr));
                }
            }
            let expected = full_k
                .run_parallel_with(&ops, &mut sched::Seeded::new(seed), false)
                .unwrap();
            let got = fast_k
                .run_parallel(&ops, &mut sched::Seeded::new(seed))
                .unwrap();
            assert_eq!(got, expected, "step {step} {mode:?} {ops:?}");
        } else {
            let command_or_op = match roll {
                75..=78 => Some(op(Command::SetTag {
                    ptr: page_ptr.with_tag(Tag::new((rng.next_u32() % 16) as u8).unwrap()),
                    // Sometimes the whole page, so that the next
                    // accesses to it read the new tags.
                    len: match rng.next_u32() % 3 {
                        0 => 4096,
                        _ => 16 * (1 + u64::from(rng.next_u32() % 8)),
                    },
                })),
                79..=81 => {
                    let prot = match rng.next_u32() % 3 {
                        0 => Prot::NONE,
                        1 => Prot {
                            write: false,
                            ..Prot::READ_WRITE
                        },
                        _ => Prot::READ_WRITE,
                    };
                    Some(op(Command::Mprotect {
                        ptr: page_ptr,
                        len: 4096,
                        prot: Prot { mte, ..prot },
                    }))
                }
                82..=84 => Some(op(Command::Madvise {
                    ptr: page_ptr,
                    len: 4096,
                    advice: Advice::DontNeed,
                })),
                85..=86 => Some(op(Command::Madvise {
                    ptr: page_ptr,
                    len: 4096,
                    advice: Advice::PageOut,
                })),
                87..=89 => Some(Op::Reclaim {
                    pages: 1 + u64::from(rng.next_u32() % 8),
                }),
                90 => Some(Op::Compact),
                91..=92 => {
                    tco = !tco;
                    Some(op(Command::Tco(tco)))
                }
                93..=94 => Some(op(Command::Prctl(PrctlRequest {
                    tcf: Some(MODES[rng.next_u32() as usize % MODES.len()]),
                    store_only: Some(rng.next_u32().is_multiple_of(4)),
                    ..PrctlRequest::default()
                }))),
                95..=96 => Some(op(Command::Yield)),
                _ if pids.len() < 3 => Some(op(Command::Fork)),
                _ => None,
            };
            let Some(o) = command_or_op else { continue };
            let [fast_k, full_k] = &mut machines;
            let fast_reply = fast_k.run(&o);
            let this = &*full_k;
            let full_reply = this
                .sched
                .block_on(this.op(&o), RunLimits::default())
                .unwrap();
            assert_eq!(fast_reply, full_reply, "step {step} {mode:?} {o:?}");
            if let Some(uapi::Bound::Process(child)) = fast_reply.bound {
                pids.push(child);
            }
        }
        if step % 64 == 63 {
            let v = machines[0].invariant_violations();
            assert!(v.is_empty(), "step {step}: {v:#?}");
        }
    }
    let [fast_k, full_k] = &machines;
    for c in Counter::ALL {
        assert_eq!(fast_k.counter(c), full_k.counter(c), "{c:?}");
    }
    assert_eq!(
        entries(fast_k, &pids, &ranges),
        entries(full_k, &pids, &ranges)
    );
    let v = fast_k.invariant_violations();
    assert!(v.is_empty(), "{v:#?}");
    let second = fast_k.cpu_tlbs.borrow_mut().cpu(0).second_level().0;
    [hits[0], hits[1], second]
}

#[test]
fn the_direct_path_agrees_with_the_full_path_on_random_programs_in_every_mode() {
    let mut hits = [0; 2];
    for (i, mode) in MODES.into_iter().enumerate() {
        for seed in 0..3 {
            let keys = [("tag-storage", "dynamic")];
            let h = random_program(mode, &keys, 0x4000, seed * 4 + i as u64, 600);
            hits = [hits[0] + h[0], hits[1] + h[1]];
        }
    }
    assert!(hits[0] > 1000, "the direct path ran only {hits:?} times");
    assert!(
        hits[1] > 200,
        "the direct path ran on other CPUs only {} times",
        hits[1]
    );
}

#[test]
fn the_direct_path_agrees_with_the_full_path_on_huge_pages_and_static_storage() {
    for (i, mode) in MODES.into_iter().enumerate() {
        random_program(
            mode,
            &[("tag-storage", "static")],
            0x4000,
            100 + i as u64,
            400,
        );
        let keys = [("tag-storage", "static"), ("thp", "always")];
        random_program(mode, &keys, 2 << 20, 200 + i as u64, 400);
    }
}

/// More pages than the first level of the per-CPU TLB holds (and, with
/// THP, whole blocks of them): the entries it evicts are served from the
/// second level, and every flush must reach them there.
#[test]
fn the_direct_path_agrees_with_the_full_path_past_the_first_tlb_level() {
    for (i, mode) in [CheckMode::Sync, CheckMode::Asymm].into_iter().enumerate() {
        let keys = [("tag-storage", "dynamic")];
        let [_, _, second] = random_program(mode, &keys, 2 << 20, 300 + i as u64, 1500);
        assert!(second > 50, "{mode:?}: {second} second-level entries");
        let keys = [("tag-storage", "static"), ("thp", "always")];
        let [_, _, second] = random_program(mode, &keys, 4 << 20, 400 + i as u64, 1500);
        assert!(second > 50, "{mode:?} THP: {second} second-level entries");
    }
}

/// The entry's copy of the page's tags follows tag writes made after it was
/// taken (STG through the full path, here: a write to tag storage moves the
/// contents' epoch), in both tag storage designs.
#[test]
fn a_tag_write_after_the_entry_was_made_is_seen_by_the_direct_path() {
    for design in ["static", "dynamic"] {
        let mut k = kernel(&[("tag-storage", design)]);
        let pid = spawn(&mut k);
        sync_mte(&mut k, pid);
        let a = mmap(&mut k, pid, 0x1000, rw_mte(), MapFlags::default());
        let p3 = a.with_tag(Tag::new(3).unwrap());
        let p7 = a.with_tag(Tag::new(7).unwrap());
        let set = |ptr, len| Command::SetTag { ptr, len };
        assert_eq!(cmd(&mut k, pid, set(p3, 0x1000)), Outcome::Ok);
        assert!(matches!(
            k.load_direct(pid, p3, AccessSize::B8),
            Outcome::Value(_)
        ));
        assert!(cached(&k, 0, pid, p3), "{design}: the page is in the TLB");
        // Granule 0 retagged 7; granule 1 keeps 3.
        assert_eq!(cmd(&mut k, pid, set(p7, 16)), Outcome::Ok);
        assert!(
            matches!(k.load_direct(pid, p7, AccessSize::B8), Outcome::Value(_)),
            "{design}"
        );
        assert!(
            matches!(k.load_direct(pid, p3, AccessSize::B8), Outcome::Fault(_)),
            "{design}"
        );
        let g1 = p3.checked_add(16).unwrap();
        assert!(
            matches!(k.store_direct(pid, g1, AccessSize::B8, 1), Outcome::Ok),
            "{design}"
        );
    }
}

/// A store through the direct path to a frame of tag storage (an untagged
/// page placed there by `tag-storage-data=prefer`) may change some page's
/// tags: it moves the contents' epoch, so no entry's tag copy outlives it.
/// The plain hit leaves such stores to the whole path.
#[test]
fn a_direct_store_to_a_frame_of_tag_storage_moves_the_epoch() {
    let mut k = kernel(&[("tag-storage", "dynamic"), ("tag-storage-data", "prefer")]);
    let pid = spawn(&mut k);
    let a = mmap(&mut k, pid, 0x1000, Prot::READ_WRITE, MapFlags::default());
    assert_eq!(k.store_direct(pid, a, AccessSize::B8, 1), Outcome::Ok);
    assert!(matches!(
        k.load_direct(pid, a, AccessSize::B8),
        Outcome::Value(1)
    ));
    let vpn = a.addr().as_u64() >> crate::mm::layout::PAGE_SHIFT;
    let flags = k
        .cpu_tlbs
        .borrow()
        .entries()
        .find(|e| e.vpn == vpn)
        .map(|e| e.flags)
        .expect("the page is in CPU 0's TLB");
    assert_ne!(
        flags & crate::machine::cpu_tlb::TAG_FRAME,
        0,
        "the page sits in tag storage"
    );
    for value in 2..5u128 {
        let before = k.contents_epoch.get();
        assert_eq!(k.store_direct(pid, a, AccessSize::B8, value), Outcome::Ok);
        assert!(k.contents_epoch.get() > before, "store {value}");
        assert!(matches!(
            k.load_direct(pid, a, AccessSize::B8),
            Outcome::Value(v) if v == value
        ));
    }
    assert!(k.invariant_violations().is_empty());
}

/// `Machine::prefetch` reads what the direct path will read (the data byte
/// and the tag byte of a cached page of the memo's process) and changes
/// nothing: no entry filled, no counter moved, no page faulted in.
#[test]
fn prefetch_reads_cached_pages_only_and_changes_nothing() {
    let mut k = kernel(&[("tag-storage", "dynamic")]);
    let pid = spawn(&mut k);
    sync_mte(&mut k, pid);
    let a = mmap(&mut k, pid, 0x2000, rw_mte(), MapFlags::default());
    let p3 = a.with_tag(Tag::new(3).unwrap());
    let set = Command::SetTag {
        ptr: p3,
        len: 0x1000,
    };
    assert_eq!(cmd(&mut k, pid, set), Outcome::Ok);
    assert_eq!(k.store_direct(pid, p3, AccessSize::B1, 0x5a), Outcome::Ok);
    let second_page = p3.checked_add(0x1000).unwrap();
    let counters = |k: &Kernel| Counter::ALL.map(|c| k.counter(c));
    let before = (counters(&k), k.cpu_tlbs.borrow().entries().count());
    // Tag 3 (the granule's byte of the tag copy) beside the byte stored, 0x5a.
    assert_eq!(k.prefetch(&[(pid, p3)]), 0x3 ^ 0x5a);
    // A page not in the TLB (never touched) and another process: nothing.
    assert_eq!(k.prefetch(&[(pid, second_page), (Pid(999), p3)]), 0);
    assert_eq!(
        (counters(&k), k.cpu_tlbs.borrow().entries().count()),
        before
    );
    assert!(!cached(&k, 0, pid, second_page));
    assert_eq!(
        k.page_state(pid, second_page, PageState::Unmapped),
        Some(true)
    );
}
