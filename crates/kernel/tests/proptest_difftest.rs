//! Proptest state-machine test, reference against kernel: a sequence of
//! symbolic actions (several processes, fork/exec/exit, every mmap kind,
//! munmap/mprotect/madvise, loads, stores, fills, tag instructions, prctl
//! modes, write-fd/read-fd, peektags/poketags, pins, whole-machine ops) is
//! interpreted against the world the replies built, and run on
//! `kernel::Kernel` and `refmodel::RefMachine` side by side from a small
//! platform of each tag storage policy (and one with transparent huge
//! pages and swap). After every op the replies, the
//! observed tags and the invariants of both machines must agree; on a
//! failure proptest shrinks the sequence (fewer actions, smaller indices,
//! offsets and lengths) to a minimal one.
//!
//! Actions name processes and mappings by index into what is alive (taken
//! modulo the count), so every shrunk sequence is still meaningful.
//!
//! Memory (docs/semantics.md §16): the reference has unlimited memory, so
//! the interpreter skips an `mmap` or `fork` that could make the pages of
//! all live processes exceed a third of memory (counted conservatively:
//! unmapping gives nothing back), as the fuzz generator does. Fillers
//! (huge private `prot=none` mappings that push placement to its
//! fallbacks) are not counted: they commit nothing, and what any op can
//! touch in them is a few pages. Nothing then depends on the machine's
//! memory: no commit-limit `ENOMEM`, no fault out of memory.
//!
//! Bound: the whole file must run in about 30 s in the dev profile on two
//! cores (the CI budget for it is a minute). Measured with `CASES = 128`
//! and `MAX_ACTIONS = 80`: 17 to 21 s wall (12 to 23 s of CPU) for the five
//! tests on the two-core machine shared with other builds (load average
//! 9); 200 cases took 36 s. A one-off run of 1000 cases each passed. With
//! the sixth (transparent huge pages and swap under dynamic tag storage):
//! 12 s wall on an idle machine.

mod common;

use common::machine;
use mte::{CheckMode, GranuleOffset, Tag, TagMask, TagOffset, TagStoreOp, TaggedPtr};
use proptest::prelude::*;
use proptest::test_runner::{Config, TestCaseError};
use refmodel::RefMachine;
use uapi::{
    AccessSize, Advice, Backing, Bound, Command, Machine, MapFlags, Op, Pid, PrctlRequest, Prot,
    Reply, Sharing,
};

const PAGE: u64 = 4096;
const THP: u64 = 2 << 20;
const TASK_SIZE: u64 = 1 << 48;
/// `TASK_SIZE - 128 MiB`: where top-down placement starts.
const MMAP_BASE: u64 = TASK_SIZE - (128 << 20);

/// Where a filler starts and how far it goes (docs/semantics.md §7): the
/// whole space below `mmap_base`, most of it, the space above it.
const FILLERS: [(u64, u64); 5] = [
    (PAGE, MMAP_BASE),
    (PAGE, MMAP_BASE - 3 * THP),
    (PAGE, MMAP_BASE - THP - 5 * PAGE),
    (MMAP_BASE, TASK_SIZE - 3 * THP),
    (TASK_SIZE / 4, TASK_SIZE - 8 * THP),
];
/// Mappings longer than this are compared on their first bytes only.
const COMPARED: u64 = 2 * THP;

/// Cases per platform test; six platform tests in all.
const CASES: u32 = 128;
/// Actions per case at most.
const MAX_ACTIONS: usize = 80;

/// Where in the world an action points: mapping `map` (modulo the
/// mappings made so far), `offset` bytes in (modulo its length plus a
/// little, to run off the end sometimes), with logical tag `tag`.
#[derive(Clone, Copy, Debug)]
struct Loc {
    map: u8,
    offset: u64,
    tag: u8,
}

#[derive(Clone, Debug)]
enum Action {
    Spawn,
    Fork(u8),
    Exit(u8),
    Exec(u8),
    Prctl(u8, PrctlRequest),
    PrctlGet(u8),
    Tco(u8, bool),
    Yield(u8),
    Mmap {
        p: u8,
        len: u64,
        prot: Prot,
        sharing: Sharing,
        backing: Backing,
        populate: bool,
        fixed: Option<Loc>,
    },
    /// A private anonymous `prot=none` mapping at a far address: a filler
    /// of up to most of the address space, so that placement runs out of
    /// room below `mmap_base` and takes its fallbacks. It holds no memory
    /// and commits nothing (not writable), so it is outside the budget.
    Filler(u8, u8, u8),
    Munmap(u8, Loc, u64),
    Mprotect(u8, Loc, u64, Prot),
    Madvise(u8, Loc, u64, Advice),
    Pin(u8, Loc, u64),
    Unpin(u8, Loc, u64),
    WriteFd(u8, Loc, u64),
    ReadFd(u8, Loc, u64, u8),
    PeekTags(u8, u8, Loc, u64),
    PokeTags(u8, u8, Loc, Vec<u8>),
    Load(u8, Loc, AccessSize),
    Store(u8, Loc, AccessSize, u64),
    Fill(u8, Loc, u64, u8),
    Verify(u8, Loc, u64, u8),
    Irg(u8, Loc, u16),
    Addg(u8, Loc, u64, u8),
    StoreTag(u8, TagStoreOp, Loc),
    SetTag(u8, Loc, u64),
    Ldg(u8, Loc),
    Reclaim(u64),
    Compact,
    KsmScan,
}

fn loc() -> impl Strategy<Value = Loc> {
    let offset = prop_oneof![
        4 => 0..0x3000u64,
        1 => any::<u64>(),
    ];
    (any::<u8>(), offset, 0..4u8).prop_map(|(map, offset, tag)| Loc { map, offset, tag })
}

fn prot() -> impl Strategy<Value = Prot> {
    prop_oneof![
        6 => Just(Prot { mte: true, ..Prot::READ_WRITE }),
        3 => Just(Prot::READ_WRITE),
        1 => Just(Prot { read: true, ..Prot::NONE }),
        1 => Just(Prot { read: true, mte: true, ..Prot::NONE }),
        1 => Just(Prot { read: true, exec: true, ..Prot::NONE }),
        1 => Just(Prot { exec: true, ..Prot::NONE }),
        1 => Just(Prot::NONE),
    ]
}

fn prctl() -> impl Strategy<Value = PrctlRequest> {
    let tcf = prop_oneof![
        Just(CheckMode::Sync),
        Just(CheckMode::Async),
        Just(CheckMode::Asymm),
        Just(CheckMode::None),
    ];
    let include = prop_oneof![Just(0xfffe_u16), Just(0xffff), Just(0), any::<u16>()];
    (
        proptest::option::of(proptest::bool::weighted(0.85)),
        proptest::option::weighted(0.8, tcf),
        proptest::option::of(include.prop_map(TagMask::from_bits)),
        proptest::option::weighted(0.2, any::<bool>()),
    )
        .prop_map(|(tagged_addr, tcf, include, store_only)| PrctlRequest {
            tagged_addr,
            tcf,
            include,
            store_only,
        })
}

fn mmap() -> impl Strategy<Value = Action> {
    let len = prop_oneof![
        6 => (1..=4u64).prop_map(|n| n * PAGE),
        2 => 1..=0x10000u64,
        1 => Just(THP),
        1 => Just(THP + PAGE),
        1 => Just(2 * THP - 1),
    ];
    let sharing = prop_oneof![3 => Just(Sharing::Private), 1 => Just(Sharing::Shared)];
    let backing = prop_oneof![
        3 => Just(Backing::Anon),
        1 => Just(Backing::Shm),
        1 => Just(Backing::File),
    ];
    (
        any::<u8>(),
        len,
        prot(),
        sharing,
        backing,
        proptest::bool::weighted(0.2),
        proptest::option::weighted(0.15, loc()),
    )
        .prop_map(
            |(p, len, prot, sharing, backing, populate, fixed)| Action::Mmap {
                p,
                len,
                prot,
                sharing,
                backing,
                populate,
                fixed,
            },
        )
}

fn range_len() -> impl Strategy<Value = u64> {
    prop_oneof![
        3 => (1..=4u64).prop_map(|n| n * PAGE),
        1 => 0..0x5000u64,
        1 => Just(THP),
    ]
}

fn action() -> impl Strategy<Value = Action> {
    let p = any::<u8>;
    let advice = prop_oneof![
        3 => Just(Advice::DontNeed),
        1 => Just(Advice::PageOut),
        1 => Just(Advice::HugePage),
        1 => Just(Advice::NoHugePage),
        1 => Just(Advice::Mergeable),
        1 => Just(Advice::Unmergeable),
    ];
    let size = prop_oneof![
        Just(AccessSize::B1),
        Just(AccessSize::B2),
        Just(AccessSize::B4),
        Just(AccessSize::B8),
        Just(AccessSize::B16),
    ];
    let tag_op = prop_oneof![
        Just(TagStoreOp::Stg),
        Just(TagStoreOp::Stzg),
        Just(TagStoreOp::St2g),
        Just(TagStoreOp::Stz2g),
    ];
    prop_oneof![
        2 => Just(Action::Spawn),
        3 => p().prop_map(Action::Fork),
        1 => p().prop_map(Action::Exit),
        1 => p().prop_map(Action::Exec),
        3 => (p(), prctl()).prop_map(|(p, r)| Action::Prctl(p, r)),
        1 => p().prop_map(Action::PrctlGet),
        1 => (p(), any::<bool>()).prop_map(|(p, on)| Action::Tco(p, on)),
        1 => p().prop_map(Action::Yield),
        8 => mmap(),
        1 => (p(), any::<u8>(), any::<u8>()).prop_map(|(p, at, len)| Action::Filler(p, at, len)),
        2 => (p(), loc(), range_len()).prop_map(|(p, l, n)| Action::Munmap(p, l, n)),
        3 => (p(), loc(), range_len(), prot()).prop_map(|(p, l, n, pr)| Action::Mprotect(p, l, n, pr)),
        2 => (p(), loc(), range_len(), advice).prop_map(|(p, l, n, a)| Action::Madvise(p, l, n, a)),
        2 => (p(), loc(), 0..0x3000u64).prop_map(|(p, l, n)| Action::Pin(p, l, n)),
        1 => (p(), loc(), 0..0x3000u64).prop_map(|(p, l, n)| Action::Unpin(p, l, n)),
        2 => (p(), loc(), 0..0x3000u64).prop_map(|(p, l, n)| Action::WriteFd(p, l, n)),
        2 => (p(), loc(), 0..0x3000u64, any::<u8>()).prop_map(|(p, l, n, b)| Action::ReadFd(p, l, n, b)),
        1 => (p(), p(), loc(), 0..40u64).prop_map(|(p, q, l, n)| Action::PeekTags(p, q, l, n)),
        1 => (p(), p(), loc(), proptest::collection::vec(0..16u8, 0..8))
            .prop_map(|(p, q, l, t)| Action::PokeTags(p, q, l, t)),
        6 => (p(), loc(), size.clone()).prop_map(|(p, l, s)| Action::Load(p, l, s)),
        6 => (p(), loc(), size, any::<u64>()).prop_map(|(p, l, s, v)| Action::Store(p, l, s, v)),
        2 => (p(), loc(), 0..0x2000u64, any::<u8>()).prop_map(|(p, l, n, b)| Action::Fill(p, l, n, b)),
        2 => (p(), loc(), 0..0x2000u64, any::<u8>()).prop_map(|(p, l, n, b)| Action::Verify(p, l, n, b)),
        2 => (p(), loc(), any::<u16>()).prop_map(|(p, l, x)| Action::Irg(p, l, x)),
        1 => (p(), loc(), 0..64u64, 0..16u8).prop_map(|(p, l, o, t)| Action::Addg(p, l, o, t)),
        5 => (p(), tag_op, loc()).prop_map(|(p, op, l)| Action::StoreTag(p, op, l)),
        3 => (p(), loc(), 0..0x2000u64).prop_map(|(p, l, n)| Action::SetTag(p, l, n)),
        3 => (p(), loc()).prop_map(|(p, l)| Action::Ldg(p, l)),
        1 => (1..64u64).prop_map(Action::Reclaim),
        1 => Just(Action::Compact),
        1 => Just(Action::KsmScan),
    ]
}

/// What the replies built: processes with the pages they may touch, and
/// the mappings made.
struct World {
    /// Live processes and the pages each may touch (an upper bound).
    procs: Vec<(Pid, u64)>,
    /// (base, length) of every mapping made, by anyone.
    maps: Vec<(TaggedPtr, u64)>,
    /// Pages all live processes may touch together, at most.
    budget: u64,
}

impl World {
    fn pages(&self) -> u64 {
        self.procs.iter().map(|&(_, pages)| pages).sum()
    }

    fn proc(&self, i: u8) -> Option<(usize, Pid)> {
        let n = self.procs.len();
        (n > 0).then(|| {
            let i = usize::from(i) % n;
            (i, self.procs[i].0)
        })
    }

    fn ptr(&self, l: Loc) -> TaggedPtr {
        let tag = Tag::new(l.tag).expect("BUG: tags are below 16");
        if self.maps.is_empty() {
            return TaggedPtr::from_raw(0x1000 + l.offset % 0x2000).with_tag(tag);
        }
        let (base, len) = self.maps[usize::from(l.map) % self.maps.len()];
        let off = l.offset % (len + 64);
        TaggedPtr::from_raw(base.raw() + off).with_tag(tag)
    }

    /// `ptr` page-aligned and untagged.
    fn page_ptr(&self, l: Loc) -> TaggedPtr {
        TaggedPtr::from_raw(self.ptr(l).addr().as_u64() & !(PAGE - 1))
    }

    fn granule_ptr(&self, l: Loc) -> TaggedPtr {
        let p = self.ptr(l);
        TaggedPtr::from_raw(p.raw() & !0xf)
    }

    /// The op for `action`, `None` when it must be skipped (no process
    /// yet, or over the memory budget).
    fn op(&self, action: &Action) -> Option<Op> {
        let process =
            |p: u8, command: Command| self.proc(p).map(|(_, pid)| Op::Process { pid, command });
        match action {
            Action::Spawn => Some(Op::Spawn),
            Action::Fork(p) => {
                let (i, _) = self.proc(*p)?;
                if self.pages() + self.procs[i].1 > self.budget {
                    return None;
                }
                process(*p, Command::Fork)
            }
            Action::Exit(p) => process(*p, Command::Exit),
            Action::Exec(p) => process(*p, Command::Exec),
            Action::Prctl(p, r) => process(*p, Command::Prctl(*r)),
            Action::PrctlGet(p) => process(*p, Command::PrctlGet),
            Action::Tco(p, on) => process(*p, Command::Tco(*on)),
            Action::Yield(p) => process(*p, Command::Yield),
            Action::Mmap {
                p,
                len,
                prot,
                sharing,
                backing,
                populate,
                fixed,
            } => {
                if self.pages() + len.div_ceil(PAGE) > self.budget {
                    return None;
                }
                let fixed = fixed.map(|l| self.page_ptr(l));
                process(
                    *p,
                    Command::Mmap {
                        len: *len,
                        prot: *prot,
                        flags: MapFlags {
                            sharing: *sharing,
                            backing: *backing,
                            populate: *populate,
                            fixed,
                        },
                    },
                )
            }
            Action::Filler(p, which, cut) => {
                let (start, end) = FILLERS[usize::from(*which) % FILLERS.len()];
                // Shorter by up to 255 pages, from the top.
                let end = end - u64::from(*cut) * PAGE;
                process(
                    *p,
                    Command::Mmap {
                        len: end - start,
                        prot: Prot::NONE,
                        flags: MapFlags {
                            sharing: Sharing::Private,
                            backing: Backing::Anon,
                            populate: false,
                            fixed: Some(TaggedPtr::from_raw(start)),
                        },
                    },
                )
            }
            Action::Munmap(p, l, len) => process(
                *p,
                Command::Munmap {
                    ptr: self.page_ptr(*l),
                    len: *len,
                },
            ),
            Action::Mprotect(p, l, len, prot) => process(
                *p,
                Command::Mprotect {
                    ptr: self.page_ptr(*l),
                    len: *len,
                    prot: *prot,
                },
            ),
            Action::Madvise(p, l, len, advice) => process(
                *p,
                Command::Madvise {
                    ptr: self.page_ptr(*l),
                    len: *len,
                    advice: *advice,
                },
            ),
            Action::Pin(p, l, len) => process(
                *p,
                Command::Pin {
                    ptr: self.ptr(*l),
                    len: *len,
                },
            ),
            Action::Unpin(p, l, len) => process(
                *p,
                Command::Unpin {
                    ptr: self.ptr(*l),
                    len: *len,
                },
            ),
            Action::WriteFd(p, l, len) => process(
                *p,
                Command::WriteFd {
                    ptr: self.ptr(*l),
                    len: *len,
                },
            ),
            Action::ReadFd(p, l, len, byte) => process(
                *p,
                Command::ReadFd {
                    ptr: self.ptr(*l),
                    len: *len,
                    byte: *byte,
                },
            ),
            Action::PeekTags(p, q, l, granules) => {
                let (_, target) = self.proc(*q)?;
                process(
                    *p,
                    Command::PeekTags {
                        target,
                        ptr: self.ptr(*l),
                        granules: *granules,
                    },
                )
            }
            Action::PokeTags(p, q, l, tags) => {
                let (_, target) = self.proc(*q)?;
                let tags = tags
                    .iter()
                    .map(|&t| Tag::new(t).expect("BUG: tags are below 16"))
                    .collect();
                process(
                    *p,
                    Command::PokeTags {
                        target,
                        ptr: self.ptr(*l),
                        tags,
                    },
                )
            }
            Action::Load(p, l, size) => process(
                *p,
                Command::Load {
                    ptr: self.ptr(*l),
                    size: *size,
                },
            ),
            Action::Store(p, l, size, value) => process(
                *p,
                Command::Store {
                    ptr: self.ptr(*l),
                    size: *size,
                    value: u128::from(*value),
                },
            ),
            Action::Fill(p, l, len, byte) => process(
                *p,
                Command::Fill {
                    ptr: self.ptr(*l),
                    len: *len,
                    byte: *byte,
                },
            ),
            Action::Verify(p, l, len, byte) => process(
                *p,
                Command::Verify {
                    ptr: self.ptr(*l),
                    len: *len,
                    byte: *byte,
                },
            ),
            Action::Irg(p, l, exclude) => process(
                *p,
                Command::Irg {
                    ptr: self.ptr(*l),
                    exclude: TagMask::from_bits(*exclude),
                },
            ),
            Action::Addg(p, l, offset, tag_offset) => process(
                *p,
                Command::Addg {
                    ptr: self.ptr(*l),
                    offset: GranuleOffset::new(offset * 16).expect("BUG: offset below 1024"),
                    tag_offset: TagOffset::new(*tag_offset).expect("BUG: tag offset below 16"),
                },
            ),
            Action::StoreTag(p, op, l) => process(
                *p,
                Command::StoreTag {
                    op: *op,
                    ptr: self.granule_ptr(*l),
                },
            ),
            Action::SetTag(p, l, len) => process(
                *p,
                Command::SetTag {
                    ptr: self.granule_ptr(*l),
                    len: len & !0xf,
                },
            ),
            Action::Ldg(p, l) => process(*p, Command::Ldg { ptr: self.ptr(*l) }),
            Action::Reclaim(pages) => Some(Op::Reclaim { pages: *pages }),
            Action::Compact => Some(Op::Compact),
            Action::KsmScan => Some(Op::KsmScan),
        }
    }

    /// Records what `op` made.
    fn learn(&mut self, op: &Op, reply: &Reply) {
        match (op, &reply.bound) {
            (Op::Spawn, Some(Bound::Process(pid))) => self.procs.push((*pid, 0)),
            (
                Op::Process {
                    pid,
                    command: Command::Fork,
                },
                Some(Bound::Process(child)),
            ) => {
                let pages = self.pages_of(*pid);
                self.procs.push((*child, pages));
            }
            (
                Op::Process {
                    pid,
                    command: Command::Mmap { len, .. },
                },
                Some(Bound::Pointer(base)),
            ) if base.raw() != 0 => {
                self.maps.push((*base, *len));
                let filler = *len > COMPARED;
                if let Some(entry) = self.procs.iter_mut().find(|(p, _)| p == pid)
                    && !filler
                {
                    entry.1 += len.div_ceil(PAGE);
                }
            }
            (
                Op::Process {
                    pid,
                    command: Command::Exit,
                },
                _,
            ) => self.procs.retain(|(p, _)| p != pid),
            (
                Op::Process {
                    pid,
                    command: Command::Exec,
                },
                _,
            ) => {
                if let Some(entry) = self.procs.iter_mut().find(|(p, _)| p == pid) {
                    entry.1 = 0;
                }
            }
            _ => {}
        }
    }

    fn pages_of(&self, pid: Pid) -> u64 {
        self.procs
            .iter()
            .find(|(p, _)| *p == pid)
            .map_or(0, |&(_, pages)| pages)
    }
}

/// Granules compared around each mapping's start after every op; the
/// whole of every mapping is compared at the end of a case.
const WINDOW: u64 = 0x4000;

fn compare_tags(
    k: &kernel::Kernel,
    r: &RefMachine,
    w: &World,
    whole: bool,
) -> Result<(), TestCaseError> {
    for &(pid, _) in &w.procs {
        for &(base, len) in &w.maps {
            let len = if whole {
                len.min(COMPARED)
            } else {
                len.min(WINDOW)
            };
            let (got, want) = (k.tags(pid, base, len), r.tags(pid, base, len));
            prop_assert_eq!(got, want, "tags of {:?} at {:?}+{:#x}", pid, base, len);
        }
    }
    Ok(())
}

fn run(keys: &[(&str, &str)], actions: &[Action]) -> Result<(), TestCaseError> {
    let mut k = machine(keys);
    let mut r = RefMachine::new(k.has_mte(), k.platform().settings().seed);
    let mut w = World {
        procs: Vec::new(),
        maps: Vec::new(),
        budget: k.platform().geometry().dram_pages() / 3,
    };
    for (step, action) in actions.iter().enumerate() {
        let Some(op) = w.op(action) else {
            continue;
        };
        let got = k.run(&op);
        let want = r.run(&op);
        prop_assert_eq!(&got, &want, "step {}: {:?}", step, op);
        let v = k.invariant_violations();
        prop_assert!(v.is_empty(), "step {}: {:?}: kernel {:#?}", step, op, v);
        let v = r.invariant_violations();
        prop_assert!(v.is_empty(), "step {}: {:?}: reference {:#?}", step, op, v);
        w.learn(&op, &got);
        compare_tags(&k, &r, &w, false)?;
    }
    compare_tags(&k, &r, &w, true)
}

fn config() -> Config {
    Config {
        cases: CASES,
        // Shrinking a long sequence replays it many times: bound it so a
        // failure still reports within a few minutes.
        max_shrink_iters: 2000,
        failure_persistence: None,
        ..Config::default()
    }
}

fn actions() -> impl Strategy<Value = Vec<Action>> {
    // A process from the start, so that most actions do something.
    proptest::collection::vec(action(), 1..MAX_ACTIONS).prop_map(|mut v| {
        v.insert(0, Action::Spawn);
        v
    })
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn no_mte(actions in actions()) {
        run(&[("memory", "8M"), ("tag-storage", "none")], &actions)?;
    }

    #[test]
    fn static_tag_storage(actions in actions()) {
        run(&[("memory", "8M"), ("tag-storage", "static"), ("block-size", "16K")], &actions)?;
    }

    #[test]
    fn dynamic_tag_storage(actions in actions()) {
        run(&[("memory", "16M"), ("tag-storage", "dynamic"), ("seed", "3")], &actions)?;
    }

    #[test]
    fn dynamic_prefer_tag_storage_for_data(actions in actions()) {
        run(
            &[
                ("memory", "8M"),
                ("tag-storage", "dynamic"),
                ("tag-storage-data", "prefer"),
                ("block-size", "64K"),
            ],
            &actions,
        )?;
    }

    #[test]
    fn dynamic_with_huge_pages_and_swap(actions in actions()) {
        run(
            &[
                ("memory", "32M"),
                ("tag-storage", "dynamic"),
                ("tag-storage-data", "prefer"),
                ("thp", "always"),
                ("swap", "1M"),
            ],
            &actions,
        )?;
    }

    #[test]
    fn dynamic_never_tag_storage_for_data(actions in actions()) {
        run(
            &[("memory", "8M"), ("tag-storage", "dynamic"), ("tag-storage-data", "never")],
            &actions,
        )?;
    }
}
