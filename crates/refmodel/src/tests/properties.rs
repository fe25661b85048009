//! Property tests: the machine against a flat byte-array oracle, and random
//! command sequences that must never break an invariant or panic.

use mte::TagStoreOp;
use proptest::prelude::*;
use uapi::{Command, Machine, Outcome, Pid};

use super::harness::*;

const LEN: u64 = 0x2000;
const GRANULE: u64 = 16;
const PAGE: u64 = 0x1000;

/// One step on a private tagged mapping of `LEN` bytes, in sync mode.
#[derive(Clone, Debug)]
enum Step {
    Store {
        off: u64,
        size: u64,
        value: u128,
        tag: u8,
    },
    Load {
        off: u64,
        size: u64,
        tag: u8,
    },
    Stg {
        granule: u64,
        tag: u8,
    },
    Fill {
        off: u64,
        len: u64,
        byte: u8,
        tag: u8,
    },
    DontNeed {
        page: u64,
    },
    /// Fork, and go on in the child.
    Fork,
}

fn step() -> impl Strategy<Value = Step> {
    let size = prop::sample::select(vec![1u64, 2, 4, 8, 16]);
    let tag = 0u8..4;
    prop_oneof![
        (0..LEN - 16, size.clone(), any::<u128>(), tag.clone()).prop_map(
            |(off, size, value, tag)| Step::Store {
                off,
                size,
                value,
                tag
            }
        ),
        (0..LEN - 16, size, tag.clone()).prop_map(|(off, size, tag)| Step::Load { off, size, tag }),
        (0..LEN / GRANULE, tag.clone()).prop_map(|(granule, tag)| Step::Stg { granule, tag }),
        (0..LEN - 64, 0..64u64, any::<u8>(), tag).prop_map(|(off, len, byte, tag)| Step::Fill {
            off,
            len,
            byte,
            tag
        }),
        (0..LEN / PAGE).prop_map(|page| Step::DontNeed { page }),
        Just(Step::Fork),
    ]
}

/// The oracle: the mapping's bytes and tags as plain arrays, checked by the
/// rules of the architecture spelled out once more.
#[derive(Clone)]
struct Flat {
    data: Vec<u8>,
    tags: Vec<u8>,
}

impl Flat {
    /// The first mismatching granule of `[off, off + len)` for `tag`, as the
    /// offset a sync fault reports (the pointer itself for the first).
    fn mismatch(&self, off: u64, len: u64, tag: u8) -> Option<u64> {
        let first = off / GRANULE;
        let last = (off + len - 1) / GRANULE;
        (first..=last)
            .find(|&g| self.tags[g as usize] != tag)
            .map(|g| if g == first { off } else { g * GRANULE })
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn private_tagged_memory_matches_a_flat_oracle(steps in prop::collection::vec(step(), 1..40)) {
        let mut s = Sim::new();
        let mut p = s.sync_process();
        let base = s.mmap(p, LEN, "r,w,mte", "");
        let mut flat = Flat { data: vec![0; LEN as usize], tags: vec![0; (LEN / GRANULE) as usize] };
        // Each parent left behind by a fork, with what it must still hold.
        let mut parents: Vec<(Pid, Flat)> = Vec::new();
        for step in steps {
            match step {
                Step::Store { off, size, value, tag: t } => {
                    let ptr = base.at(off).tagged(t);
                    let want = match flat.mismatch(off, size, t) {
                        Some(at) => fault(SegvMteSerr, base.at(at).tagged(t)),
                        None => {
                            for i in 0..size {
                                flat.data[(off + i) as usize] = (value >> (8 * i)) as u8;
                            }
                            Outcome::Ok
                        }
                    };
                    prop_assert_eq!(s.out(p, store(ptr, size, value)), want);
                }
                Step::Load { off, size, tag: t } => {
                    let ptr = base.at(off).tagged(t);
                    let want = match flat.mismatch(off, size, t) {
                        Some(at) => fault(SegvMteSerr, base.at(at).tagged(t)),
                        None => value((0..size).rev().fold(0u128, |v, i| v << 8 | u128::from(flat.data[(off + i) as usize]))),
                    };
                    prop_assert_eq!(s.out(p, load(ptr, size)), want);
                }
                Step::Stg { granule, tag: t } => {
                    flat.tags[granule as usize] = t;
                    prop_assert_eq!(s.out(p, tag_store(TagStoreOp::Stg, base.at(granule * GRANULE).tagged(t))), Outcome::Ok);
                }
                Step::Fill { off, len, byte, tag: t } => {
                    let mut want = Outcome::Ok;
                    for i in 0..len {
                        if flat.tags[((off + i) / GRANULE) as usize] != t {
                            want = fault(SegvMteSerr, base.at(off + i).tagged(t));
                            break;
                        }
                        flat.data[(off + i) as usize] = byte;
                    }
                    prop_assert_eq!(s.out(p, fill(base.at(off).tagged(t), len, byte)), want);
                }
                Step::DontNeed { page } => {
                    let range = (page * PAGE) as usize..((page + 1) * PAGE) as usize;
                    flat.data[range.clone()].fill(0);
                    flat.tags[range.start / 16..range.end / 16].fill(0);
                    prop_assert_eq!(s.out(p, madvise(base.at(page * PAGE), PAGE, "dontneed")), Outcome::Ok);
                }
                Step::Fork => {
                    let child = s.fork(p);
                    parents.push((p, flat.clone()));
                    p = child;
                }
            }
        }
        parents.push((p, flat));
        for (pid, flat) in parents {
            let tags: Vec<u8> = s.tags(pid, base, LEN).unwrap();
            prop_assert_eq!(&tags, &flat.tags);
            for g in 0..LEN / GRANULE {
                let want = u128::from_le_bytes(flat.data[(g * 16) as usize..(g * 16 + 16) as usize].try_into().unwrap());
                prop_assert_eq!(s.out(pid, load(base.at(g * 16).tagged(flat.tags[g as usize]), 16)), value(want));
            }
        }
    }
}

/// A command of a random program over a window of 16 pages.
#[derive(Clone, Debug)]
enum Random {
    Spawn,
    Fork(usize),
    Exit(usize),
    Exec(usize),
    Prctl(usize, u8),
    Tco(usize, bool),
    Mmap {
        who: usize,
        pages: u64,
        prot: u8,
        kind: u8,
        fixed: Option<u64>,
    },
    Munmap {
        who: usize,
        page: u64,
        pages: u64,
    },
    Mprotect {
        who: usize,
        page: u64,
        pages: u64,
        prot: u8,
    },
    Madvise {
        who: usize,
        page: u64,
        pages: u64,
        advice: u8,
    },
    Pin {
        who: usize,
        page: u64,
        pages: u64,
        release: bool,
    },
    Access {
        who: usize,
        page: u64,
        off: u64,
        kind: u8,
        tag: u8,
    },
    Kernel {
        who: usize,
        page: u64,
        off: u64,
        len: u64,
        write: bool,
    },
    Ptrace {
        who: usize,
        target: usize,
        page: u64,
        n: u8,
        poke: bool,
    },
}

fn random() -> impl Strategy<Value = Random> {
    let who = 0usize..4;
    let page = 0u64..16;
    let pages = 1u64..5;
    prop_oneof![
        Just(Random::Spawn),
        who.clone().prop_map(Random::Fork),
        who.clone().prop_map(Random::Exit),
        who.clone().prop_map(Random::Exec),
        (who.clone(), 0u8..8).prop_map(|(w, m)| Random::Prctl(w, m)),
        (who.clone(), any::<bool>()).prop_map(|(w, on)| Random::Tco(w, on)),
        (
            who.clone(),
            pages.clone(),
            0u8..32,
            0u8..6,
            prop::option::of(page.clone())
        )
            .prop_map(|(who, pages, prot, kind, fixed)| Random::Mmap {
                who,
                pages,
                prot,
                kind,
                fixed
            }),
        (who.clone(), page.clone(), pages.clone()).prop_map(|(who, page, pages)| Random::Munmap {
            who,
            page,
            pages
        }),
        (who.clone(), page.clone(), pages.clone(), 0u8..32).prop_map(|(who, page, pages, prot)| {
            Random::Mprotect {
                who,
                page,
                pages,
                prot,
            }
        }),
        (who.clone(), page.clone(), pages.clone(), 0u8..6).prop_map(
            |(who, page, pages, advice)| Random::Madvise {
                who,
                page,
                pages,
                advice
            }
        ),
        (who.clone(), page.clone(), pages, any::<bool>()).prop_map(
            |(who, page, pages, release)| Random::Pin {
                who,
                page,
                pages,
                release
            }
        ),
        (who.clone(), page.clone(), 0u64..4096, 0u8..9, 0u8..4).prop_map(
            |(who, page, off, kind, tag)| Random::Access {
                who,
                page,
                off,
                kind,
                tag
            }
        ),
        (
            who.clone(),
            page.clone(),
            0u64..4096,
            0u64..0x3000,
            any::<bool>()
        )
            .prop_map(|(who, page, off, len, write)| Random::Kernel {
                who,
                page,
                off,
                len,
                write
            }),
        (who.clone(), who, page, 0u8..40, any::<bool>()).prop_map(
            |(who, target, page, n, poke)| Random::Ptrace {
                who,
                target,
                page,
                n,
                poke
            }
        ),
    ]
}

/// The window: the 16 pages below mmap_base, where mmap puts small
/// mappings first.
const WINDOW: u64 = 0xffff_f800_0000 - 16 * PAGE;

fn prot_of(bits: u8) -> &'static str {
    ["none", "r", "w", "r,w", "r,w,mte", "r,mte", "x", "none,mte"][(bits % 8) as usize]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn random_programs_keep_every_invariant(program in prop::collection::vec(random(), 1..60)) {
        let mut s = Sim::new();
        let mut pids = vec![s.spawn()];
        let pid = |pids: &Vec<Pid>, i: usize| pids[i % pids.len()];
        let at = |page: u64, off: u64| raw(WINDOW + page * PAGE + off);
        for command in program {
            // Sim::run asserts the invariants after every command.
            match command {
                Random::Spawn => pids.push(s.spawn()),
                Random::Fork(w) => {
                    if let Some(uapi::Bound::Process(c)) = s.run(pid(&pids, w), Command::Fork).bound {
                        pids.push(c);
                    }
                }
                Random::Exit(w) => { s.run(pid(&pids, w), Command::Exit); }
                Random::Exec(w) => { s.run(pid(&pids, w), Command::Exec); }
                Random::Prctl(w, m) => {
                    let words = ["tcf=none", "tcf=sync", "tcf=async", "tcf=asymm",
                        "include=0xfffe", "store-only=on", "store-only=off", "tagged-addr=on"][m as usize];
                    s.run(pid(&pids, w), prctl(words));
                }
                Random::Tco(w, on) => { s.run(pid(&pids, w), Command::Tco(on)); }
                Random::Mmap { who, pages, prot, kind, fixed } => {
                    let map_list = ["private,anon", "shared,anon", "private,shm", "shared,shm", "private,file", "shared,file"][kind as usize];
                    let command = match fixed {
                        Some(page) => mmap_fixed(pages * PAGE, prot_of(prot), map_list, at(page, 0)),
                        None => mmap(pages * PAGE, prot_of(prot), map_list),
                    };
                    s.run(pid(&pids, who), command);
                }
                Random::Munmap { who, page, pages } => { s.run(pid(&pids, who), munmap(at(page, 0), pages * PAGE)); }
                Random::Mprotect { who, page, pages, prot: bits } => {
                    s.run(pid(&pids, who), mprotect(at(page, 0), pages * PAGE, prot_of(bits)));
                }
                Random::Madvise { who, page, pages, advice } => {
                    let advice = ["dontneed", "pageout", "hugepage", "nohugepage", "mergeable", "unmergeable"][advice as usize];
                    s.run(pid(&pids, who), madvise(at(page, 0), pages * PAGE, advice));
                }
                Random::Pin { who, page, pages, release } => {
                    let command = if release { unpin(at(page, 0), pages * PAGE) } else { pin(at(page, 0), pages * PAGE) };
                    s.run(pid(&pids, who), command);
                }
                Random::Access { who, page, off, kind, tag: t } => {
                    let ptr = at(page, off).tagged(t);
                    let aligned = ptr.granule_base();
                    let command = match kind {
                        0 => load(ptr, 8),
                        1 => store(ptr, 16, u128::MAX),
                        2 => fill(ptr, 100, 0x5a),
                        3 => verify(ptr, 100, 0),
                        4 => stg(aligned),
                        5 => tag_store(TagStoreOp::Stz2g, aligned),
                        6 => settag(aligned, 64),
                        7 => ldg(ptr),
                        _ => irg(ptr, 0),
                    };
                    s.run(pid(&pids, who), command);
                }
                Random::Kernel { who, page, off, len, write } => {
                    let command = if write { write_fd(at(page, off), len) } else { read_fd(at(page, off), len, 7) };
                    s.run(pid(&pids, who), command);
                }
                Random::Ptrace { who, target, page, n, poke: is_poke } => {
                    let target = pid(&pids, target);
                    let command = if is_poke {
                        let values: Vec<u8> = (0..n).map(|i| i % 16).collect();
                        poke(target, at(page, 0), &values)
                    } else {
                        peek(target, at(page, 0), u64::from(n))
                    };
                    s.run(pid(&pids, who), command);
                }
            }
        }
        // The observation agrees with LDG wherever LDG may read.
        for &p in &pids {
            for page in 0..16 {
                let Some(observed) = s.m.tags(p, at(page, 0x30), 1) else {
                    continue;
                };
                match s.out(p, ldg(at(page, 0x30))) {
                    Outcome::Tag(t) => prop_assert_eq!(vec![t], observed),
                    other => prop_assert_eq!(other, fault(SegvAccErr, at(page, 0x30))),
                }
            }
        }
    }
}
