//! The checked access: 8-byte loads and stores through established
//! mappings, next to a baseline measured in the same run: a plain array
//! access with a nibble compare, the least any tag-checked access can cost.
//!
//! - `direct checked load/store {sync,async,asymm}`: the direct access API
//!   (`Kernel::load_direct` / `store_direct`, per-CPU TLB hits) on a
//!   `PROT_MTE` mapping, pointer tag = allocation tag (the check runs and
//!   passes);
//! - `direct unchecked load/store`: the same on an untagged mapping;
//! - `run checked load`: `Machine::run` of a prebuilt `load` op (what
//!   `mtesim run` issues: an `Op` in, a `Reply` out, then the direct path);
//! - `baseline load/store`: `data[i]` guarded by
//!   `tags[i / 32] >> nibble & 0xf == tag` over arrays of the same size.
//!
//! Each walks 64 KiB (16 pages, all in the TLB) with a stride of 72 bytes,
//! so consecutive accesses hit different granules and pages. After the
//! criterion groups, `ratio` lines give each against the baseline from one
//! timing loop (rounds of every variant interleaved, the median of the
//! per-round ratios, and the lowest and highest: the machine is shared).
//! Targets (issue 13): checked ≤ 3×, unchecked ≤ 2×.
//!
//! Run: `cargo bench -p mtesim-kernel --bench access -- --warm-up-time 1 --measurement-time 3`

mod common;

use std::hint::black_box;
use std::time::Instant;

use common::{mmap, run, sync_process};
use criterion::{Criterion, Throughput, criterion_group};
use kernel::Kernel;
use mte::{CheckMode, Tag, TaggedPtr};
use platform::Platform;
use uapi::{AccessSize, Command, Machine, Op, Outcome, Pid, PrctlRequest, Prot};

const LEN: u64 = 64 << 10;
const STRIDE: u64 = 72;
/// Accesses per measured batch.
const BATCH: u64 = 1024;

/// A booted default machine with one process in `mode` and a populated
/// 64 KiB mapping (tagged with tag 5 when `mte`), and its pointer.
fn setup(mte: bool, mode: CheckMode) -> (Kernel, Pid, TaggedPtr) {
    let (mut k, pid) = sync_process(&Platform::default());
    let prctl = PrctlRequest {
        tcf: Some(mode),
        ..PrctlRequest::default()
    };
    assert_eq!(run(&mut k, pid, Command::Prctl(prctl)).outcome, Outcome::Ok);
    let prot = Prot {
        mte,
        ..Prot::READ_WRITE
    };
    let base = mmap(&mut k, pid, LEN, prot);
    let tag = Tag::new(if mte { 5 } else { 0 }).expect("a 4-bit tag");
    let base = base.with_tag(tag);
    if mte {
        let set = Command::SetTag {
            ptr: base,
            len: LEN,
        };
        assert_eq!(run(&mut k, pid, set).outcome, Outcome::Ok);
    }
    let fill = Command::Fill {
        ptr: base,
        len: LEN,
        byte: 0x5a,
    };
    assert_eq!(run(&mut k, pid, fill).outcome, Outcome::Ok);
    (k, pid, base)
}

/// The offsets of one batch.
fn offset(i: u64) -> u64 {
    (i * STRIDE) % (LEN - 8)
}

/// The loads of one batch as ops, prebuilt so that building ops is not
/// measured.
fn loads(base: TaggedPtr, pid: Pid) -> Vec<Op> {
    (0..BATCH)
        .map(|i| Op::Process {
            pid,
            command: Command::Load {
                ptr: base.checked_add(offset(i)).expect("in range"),
                size: AccessSize::B8,
            },
        })
        .collect()
}

/// Memory and packed tags (two per byte, low nibble first) of 64 KiB.
struct Flat {
    data: Vec<u64>,
    tags: Vec<u8>,
}

impl Flat {
    fn new() -> Flat {
        Flat {
            data: vec![0x5a5a_5a5a_5a5a_5a5a; (LEN / 8) as usize],
            tags: vec![0x55; (LEN / 32) as usize],
        }
    }

    fn tag_ok(&self, offset: u64, tag: u8) -> bool {
        let granule = (offset / 16) as usize;
        (self.tags[granule / 2] >> ((granule % 2) * 4)) & 0xf == tag
    }

    /// A checked 8-byte load at `offset` with pointer tag `tag`.
    fn load(&self, offset: u64, tag: u8) -> Option<u64> {
        self.tag_ok(offset, tag)
            .then(|| self.data[(offset / 8) as usize])
    }

    /// A checked 8-byte store.
    fn store(&mut self, offset: u64, tag: u8, value: u64) -> bool {
        let ok = self.tag_ok(offset, tag);
        if ok {
            self.data[(offset / 8) as usize] = value;
        }
        ok
    }
}

/// One machine under test.
struct Target {
    k: Kernel,
    pid: Pid,
    base: TaggedPtr,
    ops: Vec<Op>,
}

impl Target {
    fn new(mte: bool, mode: CheckMode) -> Target {
        let (k, pid, base) = setup(mte, mode);
        let ops = loads(base, pid);
        let mut t = Target { k, pid, base, ops };
        // Every access must succeed (a fault would be measured otherwise).
        for i in 0..BATCH {
            let ptr = t.ptr(i);
            assert!(matches!(
                t.k.load_direct(t.pid, ptr, AccessSize::B8),
                Outcome::Value(_)
            ));
            assert_eq!(
                t.k.store_direct(t.pid, ptr, AccessSize::B8, 0x5a5a_5a5a_5a5a_5a5a),
                Outcome::Ok
            );
        }
        t
    }

    fn ptr(&self, i: u64) -> TaggedPtr {
        self.base.checked_add(offset(i)).expect("in range")
    }

    fn direct_loads(&mut self) {
        for i in 0..BATCH {
            let ptr = self.ptr(i);
            // Consumed as a program would: the value, or the fault.
            match self.k.load_direct(self.pid, black_box(ptr), AccessSize::B8) {
                Outcome::Value(v) => black_box(v as u64),
                other => panic!("{other:?}"),
            };
        }
    }

    fn direct_stores(&mut self) {
        for i in 0..BATCH {
            let ptr = self.ptr(i);
            // Consumed as a program would (and as the baseline's `bool`):
            // whether it stored, or the fault. Not the whole `Outcome`
            // through `black_box`, which would copy its 32 bytes through
            // memory twice, a cost of the bench and of no user.
            match self
                .k
                .store_direct(self.pid, black_box(ptr), AccessSize::B8, u128::from(i))
            {
                Outcome::Ok => black_box(true),
                other => panic!("{other:?}"),
            };
        }
    }

    fn run_loads(&mut self) {
        for op in &self.ops {
            black_box(self.k.run(op));
        }
    }
}

fn flat_loads(flat: &Flat) {
    for i in 0..BATCH {
        black_box(flat.load(black_box(offset(i)), 5));
    }
}

fn flat_stores(flat: &mut Flat) {
    for i in 0..BATCH {
        black_box(flat.store(black_box(offset(i)), 5, i));
    }
}

type Variant<'a> = (&'a str, Box<dyn FnMut() + 'a>);

fn bench(c: &mut Criterion) {
    let mut sync = Target::new(true, CheckMode::Sync);
    let mut asy = Target::new(true, CheckMode::Async);
    let mut asymm = Target::new(true, CheckMode::Asymm);
    let mut plain = Target::new(false, CheckMode::Sync);
    let mut run_sync = Target::new(true, CheckMode::Sync);
    let flat = Flat::new();
    let mut flat2 = Flat::new();
    {
        let mut group = c.benchmark_group("access");
        group.throughput(Throughput::Elements(BATCH));
        group.bench_function("direct checked load 8B sync", |b| {
            b.iter(|| sync.direct_loads())
        });
        group.bench_function("direct checked store 8B sync", |b| {
            b.iter(|| sync.direct_stores())
        });
        group.bench_function("direct unchecked load 8B", |b| {
            b.iter(|| plain.direct_loads())
        });
        group.bench_function("run checked load 8B sync", |b| {
            b.iter(|| run_sync.run_loads())
        });
        group.bench_function("baseline load array+nibble", |b| {
            b.iter(|| flat_loads(&flat))
        });
        group.bench_function("baseline store array+nibble", |b| {
            b.iter(|| flat_stores(&mut flat2))
        });
        group.finish();
    }

    // Stores run on machines of their own.
    let mut sync_s = Target::new(true, CheckMode::Sync);
    let mut asy_s = Target::new(true, CheckMode::Async);
    let mut asymm_s = Target::new(true, CheckMode::Asymm);
    let mut plain_s = Target::new(false, CheckMode::Sync);
    // The ratios: rounds of every variant interleaved, so that a noisy
    // stretch of the shared machine hits them all alike.
    let loads_base: Variant = ("baseline load", Box::new(|| flat_loads(&flat)));
    let stores_base: Variant = ("baseline store", Box::new(|| flat_stores(&mut flat2)));
    let mut bases = [loads_base, stores_base];
    let mut variants: Vec<(Variant, usize)> = vec![
        (
            ("direct checked load sync", Box::new(|| sync.direct_loads())),
            0,
        ),
        (
            ("direct checked load async", Box::new(|| asy.direct_loads())),
            0,
        ),
        (
            (
                "direct checked load asymm",
                Box::new(|| asymm.direct_loads()),
            ),
            0,
        ),
        (
            ("direct unchecked load", Box::new(|| plain.direct_loads())),
            0,
        ),
        (
            ("run checked load sync", Box::new(|| run_sync.run_loads())),
            0,
        ),
        (
            (
                "direct checked store sync",
                Box::new(|| sync_s.direct_stores()),
            ),
            1,
        ),
        (
            (
                "direct checked store async",
                Box::new(|| asy_s.direct_stores()),
            ),
            1,
        ),
        (
            (
                "direct checked store asymm",
                Box::new(|| asymm_s.direct_stores()),
            ),
            1,
        ),
        (
            (
                "direct unchecked store",
                Box::new(|| plain_s.direct_stores()),
            ),
            1,
        ),
    ];
    let time = |f: &mut dyn FnMut()| {
        let start = Instant::now();
        for _ in 0..20 {
            f();
        }
        start.elapsed().as_secs_f64() / (20 * BATCH) as f64
    };
    let rounds = 101;
    let mut base_ns = vec![Vec::new(); bases.len()];
    let mut ratios = vec![Vec::new(); variants.len()];
    let mut ns = vec![Vec::new(); variants.len()];
    for _ in 0..rounds {
        let b: Vec<f64> = bases.iter_mut().map(|(_, f)| time(f.as_mut())).collect();
        for (i, t) in b.iter().enumerate() {
            base_ns[i].push(t * 1e9);
        }
        for (i, ((_, f), base)) in variants.iter_mut().enumerate() {
            let t = time(f.as_mut());
            ns[i].push(t * 1e9);
            ratios[i].push(t / b[*base]);
        }
    }
    let median = |v: &mut Vec<f64>| {
        v.sort_by(f64::total_cmp);
        (v[v.len() / 2], v[v.len() / 10], v[v.len() * 9 / 10])
    };
    for (i, (name, _)) in bases.iter().enumerate() {
        let (m, lo, hi) = median(&mut base_ns[i]);
        println!("ratio {name}: {m:.2} ns/access (p10-p90 {lo:.2}-{hi:.2})");
    }
    for (i, ((name, _), base)) in variants.iter().enumerate() {
        let (t, _, _) = median(&mut ns[i]);
        let (r, lo, hi) = median(&mut ratios[i]);
        println!(
            "ratio {name}: {t:.2} ns/access, {r:.2}x {} (p10-p90 {lo:.2}-{hi:.2}x)",
            bases[*base].0
        );
    }
}

criterion_group!(benches, bench);

fn main() {
    benches();
    Criterion::default().configure_from_args().final_summary();
}
