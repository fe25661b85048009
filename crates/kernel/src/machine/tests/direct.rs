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

fn random_program(
    mode: CheckMode,
    keys: &[(&str, &str)],
    tagged_len: u64,
    seed: u64,
    steps: usize,
) -> usize {
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
    let mut direct_ops = 0;
    let mut tco = false;
    for step in 0..steps {
        let pid = pids[rng.next_u32() as usize % pids.len()];
        let (base, len, mte) = maps[rng.next_u32() as usize % maps.len()];
        let page = (rng.next_u64() % (len / 4096)) * 4096;
        let page_ptr = base.checked_add(page).unwrap();
        let roll = rng.next_u32() % 100;
        let op = |command| Op::Process { pid, command };
        if roll < 75 {
            let size = SIZES[rng.next_u32() as usize % SIZES.len()];
            // Mostly inside a page, sometimes across a page or granule edge.
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
            let [fast_k, full_k] = &mut machines;
            let expected = full(full_k, &op(command.clone()));
            if let Some(mm) = fast_k.process_mm(pid) {
                let vpn = ptr.addr().as_u64() >> 12;
                let cached = fast_k.cpu_tlbs.borrow_mut().cpu(0).lookup(mm, vpn);
                direct_ops += usize::from(cached.is_some());
            }
            let got = if store {
                fast_k.store_direct(pid, ptr, size, value)
            } else {
                fast_k.load_direct(pid, ptr, size)
            };
            assert_eq!(got, expected, "step {step} {mode:?} {command:?}");
        } else {
            let command_or_op = match roll {
                75..=78 => Some(op(Command::SetTag {
                    ptr: page_ptr.with_tag(Tag::new((rng.next_u32() % 16) as u8).unwrap()),
                    len: 16 * (1 + u64::from(rng.next_u32() % 8)),
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
    direct_ops
}

#[test]
fn the_direct_path_agrees_with_the_full_path_on_random_programs_in_every_mode() {
    let mut direct = 0;
    for (i, mode) in MODES.into_iter().enumerate() {
        for seed in 0..3 {
            let keys = [("tag-storage", "dynamic")];
            direct += random_program(mode, &keys, 0x4000, seed * 4 + i as u64, 600);
        }
    }
    assert!(direct > 1000, "the direct path ran only {direct} times");
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
