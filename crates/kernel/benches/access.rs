//! The access fast path: 8-byte loads through established mappings, as
//! `mtesim run` issues them (`Machine::run` of one `load` op: dispatch, the
//! kernel path as a scheduler task, software TLB, tag check, data read),
//! next to a baseline measured in the same run: a plain array lookup with a
//! nibble compare, the least any tag-checked load can cost.
//!
//! - `checked`: a `PROT_MTE` mapping, sync mode, pointer tag = allocation
//!   tag (the check runs and passes);
//! - `unchecked`: the same loads on an untagged mapping (no check);
//! - `baseline`: `data[i]` guarded by `tags[i / 32] >> nibble & 0xf == tag`
//!   over arrays of the same size.
//!
//! Each walks 64 KiB (16 pages, all in the software TLB) with a stride of
//! 72 bytes, so consecutive loads hit different granules and pages. The
//! ratios against the baseline are printed once after the criterion
//! groups (`ratio` lines), from the criterion-independent timing loop.
//!
//! Run: `cargo bench -p mtesim-kernel --bench access -- --warm-up-time 1 --measurement-time 3`

mod common;

use std::hint::black_box;
use std::time::Instant;

use common::{mmap, run, sync_process};
use criterion::{Criterion, Throughput, criterion_group};
use kernel::Kernel;
use mte::{Tag, TaggedPtr};
use platform::Platform;
use uapi::{AccessSize, Command, Machine, Op, Outcome, Pid, Prot};

const LEN: u64 = 64 << 10;
const STRIDE: u64 = 72;
/// Loads per measured batch.
const BATCH: u64 = 1024;

/// A booted default machine with one process in sync mode and a populated
/// 64 KiB mapping (tagged with tag 5 when `mte`), and its pointer.
fn setup(mte: bool) -> (Kernel, Pid, TaggedPtr) {
    let (mut k, pid) = sync_process(&Platform::default());
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

/// The loads of one batch, prebuilt so that building ops is not measured.
fn loads(base: TaggedPtr) -> Vec<Op> {
    (0..BATCH)
        .map(|i| Op::Process {
            pid: Pid(0),
            command: Command::Load {
                ptr: base
                    .checked_add((i * STRIDE) % (LEN - 8))
                    .expect("in range"),
                size: AccessSize::from_bytes(8).expect("8 bytes"),
            },
        })
        .collect()
}

fn with_pid(ops: Vec<Op>, pid: Pid) -> Vec<Op> {
    ops.into_iter()
        .map(|op| match op {
            Op::Process { command, .. } => Op::Process { pid, command },
            other => other,
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

    /// A checked 8-byte load at `offset` with pointer tag `tag`.
    fn load(&self, offset: u64, tag: u8) -> Option<u64> {
        let granule = (offset / 16) as usize;
        let allocation = (self.tags[granule / 2] >> ((granule % 2) * 4)) & 0xf;
        (allocation == tag).then(|| self.data[(offset / 8) as usize])
    }
}

fn run_batch(k: &mut Kernel, ops: &[Op]) {
    for op in ops {
        let reply = k.run(op);
        debug_assert!(matches!(reply.outcome, Outcome::Value(_)), "{reply:?}");
        black_box(reply);
    }
}

fn flat_batch(flat: &Flat) {
    for i in 0..BATCH {
        black_box(flat.load(black_box((i * STRIDE) % (LEN - 8)), 5));
    }
}

fn bench(c: &mut Criterion) {
    let (mut tagged, tpid, tbase) = setup(true);
    let (mut plain, ppid, pbase) = setup(false);
    let checked = with_pid(loads(tbase), tpid);
    let unchecked = with_pid(loads(pbase), ppid);
    // Every load of the batch must succeed (a fault would be measured as
    // the fast path otherwise).
    for (k, ops) in [(&mut tagged, &checked), (&mut plain, &unchecked)] {
        for op in ops {
            assert!(matches!(k.run(op).outcome, Outcome::Value(_)), "{op:?}");
        }
    }
    let flat = Flat::new();
    let mut group = c.benchmark_group("access");
    group.throughput(Throughput::Elements(BATCH));
    group.bench_function("checked load 8B", |b| {
        b.iter(|| run_batch(&mut tagged, &checked));
    });
    group.bench_function("unchecked load 8B", |b| {
        b.iter(|| run_batch(&mut plain, &unchecked));
    });
    group.bench_function("baseline array+nibble", |b| b.iter(|| flat_batch(&flat)));
    group.finish();

    // The ratios, from one timing loop over all three in the same run.
    let time = |f: &mut dyn FnMut()| {
        let rounds = 2000;
        let start = Instant::now();
        for _ in 0..rounds {
            f();
        }
        start.elapsed().as_secs_f64() / (rounds * BATCH) as f64
    };
    let base = time(&mut || flat_batch(&flat));
    let chk = time(&mut || run_batch(&mut tagged, &checked));
    let unchk = time(&mut || run_batch(&mut plain, &unchecked));
    for (name, t) in [("checked", chk), ("unchecked", unchk), ("baseline", base)] {
        println!(
            "ratio {name}: {:.1} ns/load, {:.1} M loads/s, {:.1}x baseline",
            t * 1e9,
            1e-6 / t,
            t / base
        );
    }
}

criterion_group!(benches, bench);

fn main() {
    benches();
    Criterion::default().configure_from_args().final_summary();
}
