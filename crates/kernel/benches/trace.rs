//! The cost of the event trace (`Machine::set_trace`): the same work with
//! tracing off and on.
//!
//! - `access`: 8-byte checked loads through an established tagged mapping
//!   (the access fast path; it records no event, so "on" must cost what
//!   "off" does);
//! - `faults`: a fault-heavy loop: map 16 tagged pages, store to each (16
//!   anonymous faults, each reserving tag storage and initialising tags),
//!   unmap them (releasing the storage). With tracing on, the events are
//!   taken after each round, so memory stays bounded and taking them is
//!   measured too.
//!
//! Off, an emitting site tests one flag and builds nothing, so `faults off`
//! is the machine's cost without a trace.
//!
//! Run: `cargo bench -p mtesim-kernel --bench trace -- --warm-up-time 1 --measurement-time 3`

use std::hint::black_box;

use criterion::{Criterion, Throughput, criterion_group};
use kernel::Kernel;
use mte::{CheckMode, Tag, TagMask, TaggedPtr};
use platform::Platform;
use platform::spec::PlatformSpec;
use uapi::{
    AccessSize, Bound, Command, Machine, MapFlags, Op, Outcome, Pid, PrctlRequest, Prot, Reply,
};

const PAGES: u64 = 16;
const LEN: u64 = PAGES * 4096;
/// Loads per measured access batch.
const BATCH: u64 = 1024;

fn run(k: &mut Kernel, pid: Pid, command: Command) -> Reply {
    k.run(&Op::Process { pid, command })
}

fn rw_mte() -> Prot {
    Prot {
        mte: true,
        ..Prot::READ_WRITE
    }
}

/// A machine with dynamic tag storage and one process in sync mode.
fn machine() -> (Kernel, Pid) {
    let mut spec = PlatformSpec::default();
    spec.set_key("tag-storage", "dynamic").expect("a valid key");
    let platform = Platform::from_spec(&spec).expect("a valid platform");
    let mut k = Kernel::new(&platform).expect("boots");
    let Some(Bound::Process(pid)) = k.run(&Op::Spawn).bound else {
        panic!("spawn binds a process");
    };
    let prctl = PrctlRequest {
        tagged_addr: Some(true),
        tcf: Some(CheckMode::Sync),
        include: Some(TagMask::from_bits(0xfffe)),
        store_only: None,
    };
    assert_eq!(run(&mut k, pid, Command::Prctl(prctl)).outcome, Outcome::Ok);
    (k, pid)
}

fn mmap(k: &mut Kernel, pid: Pid) -> TaggedPtr {
    let mmap = Command::Mmap {
        len: LEN,
        prot: rw_mte(),
        flags: MapFlags::default(),
    };
    let Some(Bound::Pointer(base)) = run(k, pid, mmap).bound else {
        panic!("mmap binds a pointer");
    };
    base
}

/// A populated tagged mapping (tag 5) and the loads of one batch over it.
fn access_setup(k: &mut Kernel, pid: Pid) -> Vec<Op> {
    let base = mmap(k, pid).with_tag(Tag::new(5).expect("a 4-bit tag"));
    let set = Command::SetTag {
        ptr: base,
        len: LEN,
    };
    assert_eq!(run(k, pid, set).outcome, Outcome::Ok);
    (0..BATCH)
        .map(|i| Op::Process {
            pid,
            command: Command::Load {
                ptr: base.checked_add((i * 72) % (LEN - 8)).expect("in range"),
                size: AccessSize::from_bytes(8).expect("8 bytes"),
            },
        })
        .collect()
}

fn access_batch(k: &mut Kernel, ops: &[Op]) {
    for op in ops {
        black_box(k.run(op));
    }
}

/// One round of the fault-heavy loop; the events it recorded, taken.
fn fault_round(k: &mut Kernel, pid: Pid) -> usize {
    let base = mmap(k, pid);
    for i in 0..PAGES {
        let store = Command::Store {
            ptr: base.checked_add(i * 4096).expect("in range"),
            size: AccessSize::from_bytes(8).expect("8 bytes"),
            value: 1,
        };
        assert_eq!(run(k, pid, store).outcome, Outcome::Ok);
    }
    let unmap = Command::Munmap {
        ptr: base,
        len: LEN,
    };
    assert_eq!(run(k, pid, unmap).outcome, Outcome::Ok);
    k.take_events().len()
}

fn bench(c: &mut Criterion) {
    let mut group = c.benchmark_group("trace");
    group.throughput(Throughput::Elements(BATCH));
    for on in [false, true] {
        let (mut k, pid) = machine();
        let ops = access_setup(&mut k, pid);
        k.set_trace(on);
        access_batch(&mut k, &ops);
        assert!(
            k.take_events().is_empty(),
            "loads of mapped pages record nothing"
        );
        let name = if on { "access on" } else { "access off" };
        group.bench_function(name, |b| b.iter(|| access_batch(&mut k, &ops)));
    }
    group.throughput(Throughput::Elements(PAGES));
    for on in [false, true] {
        let (mut k, pid) = machine();
        k.set_trace(on);
        let recorded = fault_round(&mut k, pid);
        assert_eq!(recorded > 0, on, "events recorded only while on");
        let name = if on { "faults on" } else { "faults off" };
        group.bench_function(name, |b| b.iter(|| black_box(fault_round(&mut k, pid))));
    }
    group.finish();
}

criterion_group!(benches, bench);

fn main() {
    benches();
    Criterion::default().configure_from_args().final_summary();
}
