//! The replay on hand-made traces: each test writes the records a recorded
//! program would have produced and checks what the replay finds.

use mte::CheckMode;
use platform::{Platform, PlatformSpec};
use replay::{ReplayConfig, Summary, replay};
use trace::{Access, AccessKind, Event, ExitStatus, Header, Record, TraceReader, TraceWriter};

const HEAP: u64 = 0x0403_5000;
const STACK: u64 = 0x1f_ff00_0700;

fn load(addr: u64, size: u32) -> Record {
    Record::Access(Access {
        kind: AccessKind::Load,
        addr,
        size,
    })
}

fn store(addr: u64, size: u32) -> Record {
    Record::Access(Access {
        kind: AccessKind::Store,
        addr,
        size,
    })
}

fn event(e: Event) -> Record {
    Record::Event(e)
}

fn config(keys: &[(&str, &str)]) -> ReplayConfig {
    let mut spec = PlatformSpec::default();
    for (k, v) in keys {
        spec.set_key(k, v).unwrap();
    }
    ReplayConfig::new(Platform::from_spec(&spec).unwrap())
}

fn run_with(records: &[Record], config: &ReplayConfig) -> Summary {
    let mut writer = TraceWriter::new(Vec::new(), &Header::default(), 1).unwrap();
    for r in records {
        match *r {
            Record::Access(a) => writer.access(a).unwrap(),
            Record::Event(e) => writer.event(e).unwrap(),
            Record::Instructions(n) => writer.instructions(n),
        }
    }
    let (_, bytes) = writer.finish(ExitStatus::Exited(0)).unwrap();
    let mut reader = TraceReader::new(&bytes[..]).unwrap();
    replay(&mut reader, config, 0, |_| {}, |_| {}).unwrap()
}

fn run(records: &[Record]) -> Summary {
    run_with(records, &config(&[]))
}

fn counter(summary: &Summary, name: &str) -> u64 {
    summary
        .end
        .counters
        .iter()
        .find(|(n, _)| *n == name)
        .map(|(_, v)| *v)
        .unwrap_or_else(|| panic!("no counter {name}"))
}

/// A program that uses its heap correctly, with stack traffic around it.
fn clean_program() -> Vec<Record> {
    let mut records = vec![store(STACK, 8), load(STACK, 8)];
    records.push(event(Event::Malloc {
        size: 100,
        ptr: HEAP + 0x10,
    }));
    for i in 0..100 {
        records.push(store(HEAP + 0x10 + i, 1));
    }
    records.push(load(HEAP + 0x10, 16));
    // 32-byte vector load of the last bytes (within the granule-rounded size).
    records.push(load(HEAP + 0x10 + 80, 32));
    records.push(event(Event::Free { ptr: HEAP + 0x10 }));
    records.push(load(STACK + 8, 8));
    records
}

#[test]
fn a_correct_program_replays_without_faults() {
    let s = run(&clean_program());
    assert_eq!(s.sync_faults, 0, "{:?}", s.faults);
    assert_eq!(s.end.accesses, 105);
    assert_eq!(s.allocations, 1);
    assert_eq!(s.frees, 1);
    assert_eq!(s.end.live_allocations, 0);
    // The stack page was mapped on first touch.
    assert!(s.implicit_pages >= 1);
    assert_eq!(counter(&s, "tcf.sync"), 0);
    // The heap is tagged: its pages reserved tag storage.
    assert!(counter(&s, "pages.tagged") >= 2, "{:?}", s.end.counters);
    assert!(counter(&s, "tag_storage.reservations") >= 1);
}

#[test]
fn use_after_free_names_the_freed_allocation() {
    let mut records = clean_program();
    records.push(load(HEAP + 0x18, 1));
    let s = run(&records);
    assert_eq!(s.sync_faults, 1);
    assert_eq!(counter(&s, "tcf.sync"), 1);
    let fault = &s.faults[0];
    assert_eq!(fault.access, 105);
    assert_eq!(fault.addr, HEAP + 0x18);
    assert_eq!(fault.diagnosis(), "use after free");
    let from = fault.pointer_from.as_ref().unwrap();
    assert_eq!((from.id, from.call, from.size), (1, "malloc", 100));
    assert_eq!(from.freed_at, Some(104));
    let hit = fault.hit.as_ref().unwrap();
    assert_eq!(hit.id, 1);
    assert_ne!(fault.memory_tag, from.tag, "the freed block was retagged");
}

#[test]
fn an_overflow_into_the_next_granule_faults_and_within_the_granule_does_not() {
    let records = vec![
        event(Event::Malloc {
            size: 20,
            ptr: HEAP + 0x10,
        }),
        event(Event::Malloc {
            size: 20,
            ptr: HEAP + 0x30,
        }),
        // Bytes 20..32 of the first: past its size, inside its last granule.
        store(HEAP + 0x10 + 24, 8),
        // Byte 32 of the first, which the recorded allocator placed before
        // the second: the second's pointer claims it.
        store(HEAP + 0x30, 1),
        // One granule past the second's end, where nothing was allocated:
        // the second's pointer, one block further in the model heap.
        store(HEAP + 0x30 + 32, 1),
    ];
    let s = run(&records);
    assert_eq!(s.sync_faults, 1, "{:?}", s.faults);
    let fault = &s.faults[0];
    assert_eq!(fault.access, 2);
    assert_eq!(fault.diagnosis(), "out-of-bounds access");
    assert_eq!(fault.pointer_from.as_ref().unwrap().id, 2);
}

#[test]
fn neighbours_get_different_tags() {
    let mut records = Vec::new();
    for i in 0..32 {
        records.push(event(Event::Malloc {
            size: 16,
            ptr: HEAP + 0x100 * i,
        }));
    }
    // Each allocation's first byte, then one byte into the next block: the
    // model places same-class blocks side by side, so the second access of
    // each pair must fault if neighbours' tags differ.
    for i in 0..31 {
        records.push(load(HEAP + 0x100 * i, 1));
        records.push(load(HEAP + 0x100 * i + 16, 1));
    }
    let s = run(&records);
    assert_eq!(s.sync_faults, 31, "{:?}", s.faults.first());
}

#[test]
fn realloc_moves_the_allocation_and_frees_the_old_one() {
    let records = vec![
        event(Event::Malloc {
            size: 24,
            ptr: HEAP + 0x10,
        }),
        store(HEAP + 0x10, 8),
        event(Event::Realloc {
            old: HEAP + 0x10,
            size: 4000,
            ptr: HEAP + 0x1000,
        }),
        store(HEAP + 0x1000 + 3992, 8),
        load(HEAP + 0x10, 8),
    ];
    let s = run(&records);
    assert_eq!(s.allocations, 2);
    assert_eq!(s.end.live_allocations, 1);
    assert_eq!(s.end.live_bytes, 4000);
    assert_eq!(s.sync_faults, 1);
    assert_eq!(s.faults[0].diagnosis(), "use after free");
    assert_eq!(s.faults[0].pointer_from.as_ref().unwrap().call, "malloc");
}

#[test]
fn large_allocations_get_their_own_mapping() {
    let big = 1 << 20;
    let records = vec![
        event(Event::Malloc {
            size: big,
            ptr: 0x7f00_0000_0010,
        }),
        store(0x7f00_0000_0010 + big - 8, 8),
        event(Event::Free {
            ptr: 0x7f00_0000_0010,
        }),
        // The mapping is gone: not a tag check fault but an unmapped one.
        load(0x7f00_0000_0010, 8),
    ];
    let s = run(&records);
    assert_eq!(s.sync_faults, 0);
    assert_eq!(s.other_faults, 1);
}

#[test]
fn recorded_mappings_and_the_break_become_mappings() {
    let records = vec![
        event(Event::Mmap {
            addr: 0,
            len: 3 * 4096,
            prot: 3,
            flags: 0x22,
            fd: -1,
            offset: 0,
            result: 0x7f12_3400_0000,
        }),
        store(0x7f12_3400_0000, 8),
        store(0x7f12_3400_2ff8, 8),
        event(Event::Brk {
            old_end: 0x0405_6000,
            new_end: 0x0407_7000,
        }),
        store(0x0405_6000, 8),
        event(Event::Munmap {
            addr: 0x7f12_3400_0000,
            len: 3 * 4096,
            result: 0,
        }),
    ];
    let s = run(&records);
    assert_eq!(
        s.implicit_pages, 0,
        "every touched page had a recorded mapping"
    );
    assert_eq!(s.refused_mappings, 0);
    assert_eq!(s.sync_faults + s.other_faults, 0);
}

#[test]
fn addresses_the_machine_cannot_map_are_skipped() {
    // x86's vsyscall page and the null page.
    let s = run(&[load(0xffff_ffff_ff60_0000, 8), load(0x10, 4)]);
    assert_eq!(s.skipped, 2);
    assert_eq!(s.end.accesses, 2);
}

#[test]
fn async_mode_reports_at_the_next_kernel_entry() {
    let mut records = clean_program();
    records.push(store(HEAP + 0x18, 1));
    let mut cfg = config(&[]);
    cfg.tcf = CheckMode::Async;
    let s = run_with(&records, &cfg);
    assert_eq!(s.sync_faults, 0);
    assert_eq!(s.async_faults, 1);
    assert_eq!(s.end.tag_check_faults, 1);
}

#[test]
fn without_mte_nothing_faults() {
    let mut records = clean_program();
    records.push(load(HEAP + 0x18, 1));
    let s = run_with(&records, &config(&[("tag-storage", "none")]));
    assert_eq!(s.sync_faults + s.async_faults, 0);
    assert_eq!(counter(&s, "tag_storage.reservations"), 0);
}

#[test]
fn the_time_series_samples_every_n_accesses() {
    let records = clean_program();
    let mut writer = TraceWriter::new(Vec::new(), &Header::default(), 1).unwrap();
    for r in &records {
        match *r {
            Record::Access(a) => writer.access(a).unwrap(),
            Record::Event(e) => writer.event(e).unwrap(),
            Record::Instructions(n) => writer.instructions(n),
        }
    }
    let (_, bytes) = writer.finish(ExitStatus::Exited(0)).unwrap();
    let mut reader = TraceReader::new(&bytes[..]).unwrap();
    let mut samples = Vec::new();
    replay(
        &mut reader,
        &config(&[]),
        25,
        |s| samples.push(s.clone()),
        |_| {},
    )
    .unwrap();
    let points: Vec<u64> = samples.iter().map(|s| s.accesses).collect();
    assert_eq!(points, [25, 50, 75, 100]);
    assert_eq!(samples[1].live_allocations, 1);
}
