//! Differential test: random sequential programs run on the kernel model and
//! on the reference model (`refmodel::RefMachine`, the executable form of
//! docs/semantics.md); every reply and every observable tag must agree
//! (docs/model.md §4.8, "nothing is lost"), and the kernel's invariants hold after
//! every op.
//!
//! Programs stay clear of what depends on the machine's memory
//! (docs/semantics.md §16): every mapping is far below the commit limit,
//! large ones (2 MiB and more, placed 2 MiB-aligned by
//! `thp_get_unmapped_area()`) are never populated, and a program of 160
//! steps touches at most a few thousand pages of its 64 MiB, so no fault
//! and no fork runs out.

mod common;

use common::machine;
use mte::{CheckMode, GranuleOffset, Tag, TagMask, TagOffset, TagStoreOp, TaggedPtr};
use refmodel::RefMachine;
use uapi::{
    AccessSize, Advice, Backing, Bound, Command, Machine, MapFlags, Op, Pid, PrctlRequest, Prot,
    Sharing,
};

/// splitmix64: the test's own deterministic source of choices.
struct Gen(u64);

impl Gen {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }

    fn pick<T: Clone>(&mut self, items: &[T]) -> T {
        items[self.below(items.len() as u64) as usize].clone()
    }
}

struct World {
    pids: Vec<Pid>,
    /// (base, len) of every mapping made.
    maps: Vec<(TaggedPtr, u64)>,
}

fn prot(g: &mut Gen) -> Prot {
    let mut p = g.pick(&[
        Prot::READ_WRITE,
        Prot::READ_WRITE,
        Prot::READ_WRITE,
        Prot::NONE,
    ]);
    if g.below(3) == 0 {
        p.read = true;
        p.write = false;
    }
    p.mte = g.below(2) == 0;
    p
}

fn pointer(g: &mut Gen, w: &World) -> TaggedPtr {
    if w.maps.is_empty() || g.below(20) == 0 {
        return TaggedPtr::from_raw(0x1000 + g.below(0x1000));
    }
    let (base, len) = w.maps[g.below(w.maps.len() as u64) as usize];
    let off = if g.below(8) == 0 {
        g.below(len + 64)
    } else {
        g.below(len)
    };
    let p = TaggedPtr::from_raw(base.raw().wrapping_add(off));
    p.with_tag(Tag::new(g.below(16) as u8).unwrap())
}

fn command(g: &mut Gen, w: &World) -> Command {
    let ptr = pointer(g, w);
    let granule = TaggedPtr::from_raw(ptr.raw() & !0xf);
    match g.below(26) {
        0..=2 => {
            let len = g.pick(&[
                4096,
                8192,
                5000,
                16384,
                65536,
                2 << 20,
                (2 << 20) + 4096,
                (4 << 20) - 1,
            ]);
            let sharing = g.pick(&[Sharing::Private, Sharing::Private, Sharing::Shared]);
            let backing = g.pick(&[Backing::Anon, Backing::Anon, Backing::Shm, Backing::File]);
            Command::Mmap {
                len,
                prot: prot(g),
                flags: MapFlags {
                    sharing,
                    backing,
                    populate: len < (2 << 20) && g.below(4) == 0,
                    fixed: None,
                },
            }
        }
        3 => Command::Munmap {
            ptr: TaggedPtr::from_raw(ptr.raw() & !0xfff),
            len: g.pick(&[4096, 8192, 0, 12288]),
        },
        4 => Command::Mprotect {
            ptr: TaggedPtr::from_raw(ptr.addr().as_u64() & !0xfff),
            len: g.pick(&[4096, 8192, 16384]),
            prot: prot(g),
        },
        5 => Command::Madvise {
            ptr: TaggedPtr::from_raw(ptr.addr().as_u64() & !0xfff),
            len: g.pick(&[4096, 8192, 0]),
            advice: g.pick(&[
                Advice::DontNeed,
                Advice::DontNeed,
                Advice::HugePage,
                Advice::Mergeable,
            ]),
        },
        6 => Command::Prctl(PrctlRequest {
            tagged_addr: Some(g.below(4) != 0),
            tcf: Some(g.pick(&[
                CheckMode::None,
                CheckMode::Sync,
                CheckMode::Async,
                CheckMode::Asymm,
            ])),
            include: Some(TagMask::from_bits(g.pick(&[0xfffe, 0xffff, 0x00f0, 0]))),
            store_only: Some(g.below(5) == 0),
        }),
        7 => Command::Tco(g.below(2) == 0),
        8..=10 => Command::Load {
            ptr,
            size: g.pick(&[AccessSize::B1, AccessSize::B8, AccessSize::B16]),
        },
        11..=13 => Command::Store {
            ptr,
            size: g.pick(&[AccessSize::B1, AccessSize::B4, AccessSize::B16]),
            value: u128::from(g.next()) << 32 | u128::from(g.next()),
        },
        14 => Command::Fill {
            ptr,
            len: g.below(5000),
            byte: g.below(256) as u8,
        },
        15 => Command::Verify {
            ptr,
            len: g.below(300),
            byte: g.pick(&[0, 0xab]),
        },
        16 => Command::StoreTag {
            op: g.pick(&[
                TagStoreOp::Stg,
                TagStoreOp::Stzg,
                TagStoreOp::St2g,
                TagStoreOp::Stz2g,
            ]),
            ptr: if g.below(8) == 0 { ptr } else { granule },
        },
        17 => Command::SetTag {
            ptr: granule,
            len: g.pick(&[16, 64, 4096]),
        },
        18 => Command::Ldg { ptr },
        19 => Command::Irg {
            ptr,
            exclude: TagMask::from_bits(g.below(0x10000) as u16),
        },
        20 => Command::Addg {
            ptr,
            offset: GranuleOffset::new(g.below(64) * 16).unwrap(),
            tag_offset: TagOffset::new(g.below(16) as u8).unwrap(),
        },
        21 => Command::Pin {
            ptr,
            len: g.pick(&[1, 4096, 0]),
        },
        22 => Command::Unpin {
            ptr,
            len: g.pick(&[1, 4096]),
        },
        23 => g.pick(&[
            Command::WriteFd { ptr, len: 100 },
            Command::ReadFd {
                ptr,
                len: 5000,
                byte: 0xab,
            },
        ]),
        24 => {
            let target = w.pids[g.below(w.pids.len() as u64) as usize];
            if g.below(2) == 0 {
                Command::PeekTags {
                    target,
                    ptr,
                    granules: g.below(300),
                }
            } else {
                Command::PokeTags {
                    target,
                    ptr,
                    tags: vec![Tag::new(5).unwrap(), Tag::new(9).unwrap()],
                }
            }
        }
        25 if g.below(4) == 0 => g.pick(&[Command::Exec, Command::Exit]),
        _ => g.pick(&[Command::Fork, Command::Yield, Command::PrctlGet]),
    }
}

fn run_program(seed: u64, steps: usize, keys: &[(&str, &str)]) {
    let mut g = Gen(seed);
    let mut k = machine(keys);
    let mte = k.has_mte();
    let mut r = RefMachine::new(mte, 0);
    let mut w = World {
        pids: Vec::new(),
        maps: Vec::new(),
    };
    for step in 0..steps {
        let op = if w.pids.is_empty() || g.below(30) == 0 {
            Op::Spawn
        } else {
            let pid = w.pids[g.below(w.pids.len() as u64) as usize];
            Op::Process {
                pid,
                command: command(&mut g, &w),
            }
        };
        let got = k.run(&op);
        let want = r.run(&op);
        assert_eq!(got, want, "seed {seed} step {step}: {op:?}");
        let v = k.invariant_violations();
        assert!(v.is_empty(), "seed {seed} step {step}: {op:?}: {v:#?}");
        match (&op, got.bound) {
            (_, Some(Bound::Process(pid))) => w.pids.push(pid),
            (
                Op::Process {
                    command: Command::Mmap { len, .. },
                    ..
                },
                Some(Bound::Pointer(base)),
            ) if base.raw() != 0 => {
                w.maps.push((base, *len));
            }
            _ => {}
        }
        if step % 16 != 15 && step + 1 != steps {
            continue;
        }
        for &pid in &w.pids {
            for &(base, len) in &w.maps {
                assert_eq!(
                    k.tags(pid, base, len),
                    r.tags(pid, base, len),
                    "seed {seed} step {step}: tags of {pid:?} at {base:?}"
                );
            }
        }
    }
}

#[test]
fn kernel_agrees_with_reference_dynamic() {
    for seed in 0..40 {
        run_program(seed, 160, &[("memory", "64M"), ("tag-storage", "dynamic")]);
    }
}

#[test]
fn kernel_agrees_with_reference_prefer_and_static_and_none() {
    for seed in 100..112 {
        run_program(
            seed,
            120,
            &[("memory", "64M"), ("tag-storage-data", "prefer")],
        );
    }
    for seed in 200..210 {
        run_program(seed, 100, &[("memory", "64M"), ("tag-storage", "static")]);
    }
    for seed in 300..310 {
        run_program(seed, 100, &[("memory", "64M"), ("tag-storage", "none")]);
    }
}

/// Random parallel blocks (three ops each, interleaved by a seeded chooser):
/// every run finishes (no deadlock, no step limit, no panic) and the
/// invariants hold after every block. Outcomes depend on the interleaving
/// and are not compared.
#[test]
fn parallel_blocks_keep_the_invariants() {
    for seed in 0..24u64 {
        let mut g = Gen(seed ^ 0x5eed);
        let mut k = machine(&[
            ("memory", "64M"),
            ("tag-storage", "dynamic"),
            ("tag-storage-data", "prefer"),
        ]);
        let mut w = World {
            pids: Vec::new(),
            maps: Vec::new(),
        };
        for _ in 0..2 {
            if let Some(Bound::Process(pid)) = k.run(&Op::Spawn).bound {
                w.pids.push(pid);
            }
        }
        for block in 0..40 {
            let ops: Vec<Op> = (0..3)
                .map(|_| {
                    let pid = w.pids[g.below(w.pids.len() as u64) as usize];
                    Op::Process {
                        pid,
                        command: command(&mut g, &w),
                    }
                })
                .collect();
            let replies = k
                .run_parallel(&ops, &mut sched::Seeded::new(seed * 1000 + block))
                .unwrap_or_else(|e| panic!("seed {seed} block {block}: {ops:?}: {e}"));
            let v = k.invariant_violations();
            assert!(v.is_empty(), "seed {seed} block {block}: {ops:?}: {v:#?}");
            for (op, reply) in ops.iter().zip(replies) {
                match (op, reply.bound) {
                    (_, Some(Bound::Process(pid))) => w.pids.push(pid),
                    (
                        Op::Process {
                            command: Command::Mmap { len, .. },
                            ..
                        },
                        Some(Bound::Pointer(base)),
                    ) if base.raw() != 0 => w.maps.push((base, *len)),
                    _ => {}
                }
            }
            if w.pids.len() > 6 {
                w.pids.drain(..2);
            }
        }
    }
}
