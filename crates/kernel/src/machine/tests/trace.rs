//! The event trace: each event kind is recorded, in order, by the one place
//! where its step happens; nothing is recorded while tracing is off.

use mte::{Tag, VirtAddr};
use uapi::event::{Event, FaultKind, FaultOutcome, MigrateReason, ReserveHow, SplitReason};
use uapi::{Advice, Command, MapFlags, Outcome, Prot};

use super::*;

/// The page-aligned user address of `ptr`.
fn page(ptr: TaggedPtr) -> VirtAddr {
    ptr.addr().align_down(4096)
}

fn faults(events: &[Event]) -> Vec<(FaultKind, VirtAddr, FaultOutcome)> {
    events
        .iter()
        .filter_map(|e| match *e {
            Event::Fault {
                kind,
                addr,
                outcome,
            } => Some((kind, addr, outcome)),
            _ => None,
        })
        .collect()
}

#[test]
fn nothing_is_recorded_while_tracing_is_off() {
    let mut k = kernel(&[("tag-storage", "dynamic")]);
    let p = spawn(&mut k);
    sync_mte(&mut k, p);
    let a = mmap(&mut k, p, 4096, rw_mte(), MapFlags::default());
    assert_eq!(store8(&mut k, p, a, 1), Outcome::Ok);
    assert!(k.take_events().is_empty());
    k.set_trace(true);
    assert_eq!(store8(&mut k, p, a, 2), Outcome::Ok);
    assert!(k.take_events().is_empty(), "a mapped page faults no more");
    k.set_trace(false);
    let b = mmap(&mut k, p, 4096, rw_mte(), MapFlags::default());
    assert_eq!(store8(&mut k, p, b, 1), Outcome::Ok);
    assert!(k.take_events().is_empty());
}

#[test]
fn faults_are_recorded_with_kind_page_and_outcome() {
    let mut k = kernel(&[]);
    k.set_trace(true);
    let p = spawn(&mut k);
    let a = mmap(&mut k, p, 8192, Prot::READ_WRITE, MapFlags::default());
    let b = a.checked_add(4096).unwrap();
    assert_eq!(load8(&mut k, p, a), Outcome::Value(0));
    assert_eq!(store8(&mut k, p, a, 5), Outcome::Ok);
    assert_eq!(store8(&mut k, p, b, 6), Outcome::Ok);
    let events = k.take_events();
    assert_eq!(
        faults(&events),
        [
            (FaultKind::ZeroPage, page(a), FaultOutcome::Mapped),
            (FaultKind::Cow, page(a), FaultOutcome::Mapped),
            (FaultKind::Anon, page(b), FaultOutcome::Mapped),
        ]
    );
}

#[test]
fn copy_on_write_records_the_copy_and_whether_tags_came_along() {
    let mut k = kernel(&[("tag-storage", "dynamic")]);
    let p = spawn(&mut k);
    sync_mte(&mut k, p);
    let a = mmap(&mut k, p, 4096, rw_mte(), MapFlags::default());
    let t = a.with_tag(Tag::new(3).unwrap());
    assert_eq!(set_tag(&mut k, p, t, 4096), Outcome::Ok);
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
    let src = pfn_of(&k, p, a).unwrap();
    k.set_trace(true);
    assert_eq!(store8(&mut k, c, t, 1), Outcome::Ok);
    let dst = pfn_of(&k, c, a).unwrap();
    let events = k.take_events();
    let copy = Event::CowCopy {
        from: src,
        to: dst,
        tags_copied: true,
    };
    let fault = Event::Fault {
        kind: FaultKind::Cow,
        addr: page(a),
        outcome: FaultOutcome::Mapped,
    };
    let at = |e: &Event| events.iter().position(|x| x == e);
    assert!(at(&copy).is_some() && at(&fault).is_some(), "{events:#?}");
    assert!(at(&copy) < at(&fault), "the copy, then the mapping");
}

#[test]
fn a_tagged_page_reserves_its_block_initialises_tags_and_releases_the_block() {
    let mut k = kernel(&[("tag-storage", "dynamic")]);
    let p = spawn(&mut k);
    sync_mte(&mut k, p);
    let a = mmap(&mut k, p, 4096, rw_mte(), MapFlags::default());
    k.set_trace(true);
    assert_eq!(store8(&mut k, p, a, 1), Outcome::Ok);
    let pfn = pfn_of(&k, p, a).unwrap();
    let block = k.mem.geometry().block_of(pfn).unwrap().index();
    let events = k.take_events();
    let reserve = events
        .iter()
        .position(|e| {
            matches!(e, Event::TagReserve { block: b, how } if *b == block
                && matches!(how, ReserveHow::FastPath | ReserveHow::Claimed { .. }))
        })
        .unwrap_or_else(|| panic!("no reservation of block {block}: {events:#?}"));
    let init = events
        .iter()
        .position(|e| *e == Event::TagsInitialised { pfn })
        .unwrap_or_else(|| panic!("no tag initialisation: {events:#?}"));
    assert!(reserve < init, "{events:#?}");
    assert_eq!(
        events.last(),
        Some(&Event::Fault {
            kind: FaultKind::Anon,
            addr: page(a),
            outcome: FaultOutcome::Mapped
        })
    );
    assert_eq!(
        cmd(&mut k, p, Command::Munmap { ptr: a, len: 4096 }),
        Outcome::Ok
    );
    assert_eq!(k.take_events(), [Event::TagRelease { block }]);
}

#[test]
fn a_page_in_tag_storage_is_migrated_out_for_tags() {
    let mut k = kernel(&[("tag-storage", "dynamic"), ("tag-storage-data", "prefer")]);
    let p = spawn(&mut k);
    sync_mte(&mut k, p);
    let a = mmap(&mut k, p, 4096, Prot::READ_WRITE, MapFlags::default());
    assert_eq!(store8(&mut k, p, a, 7), Outcome::Ok);
    let src = pfn_of(&k, p, a).unwrap();
    assert!(k.mem.geometry().is_tag_storage(src));
    let prot = cmd(
        &mut k,
        p,
        Command::Mprotect {
            ptr: a,
            len: 4096,
            prot: rw_mte(),
        },
    );
    assert_eq!(prot, Outcome::Ok);
    k.set_trace(true);
    assert_eq!(load8(&mut k, p, a), Outcome::Value(7));
    let dst = pfn_of(&k, p, a).unwrap();
    let events = k.take_events();
    let migrate = Event::Migrate {
        from: src,
        to: dst,
        reason: MigrateReason::OutOfTagStorage,
    };
    let at = |e: &Event| events.iter().position(|x| x == e);
    assert!(at(&migrate).is_some(), "{events:#?}");
    assert_eq!(
        faults(&events),
        [
            (FaultKind::TagStorage, page(a), FaultOutcome::Migrated),
            (FaultKind::TagStorage, page(a), FaultOutcome::Mapped),
        ]
    );
    assert!(at(&migrate) < at(&Event::TagsInitialised { pfn: dst }));
}

#[test]
fn a_long_term_pin_migrates_out_of_cma() {
    let mut k = kernel(&[("tag-storage", "dynamic"), ("tag-storage-data", "prefer")]);
    let p = spawn(&mut k);
    let a = mmap(&mut k, p, 4096, Prot::READ_WRITE, MapFlags::default());
    assert_eq!(store8(&mut k, p, a, 9), Outcome::Ok);
    let src = pfn_of(&k, p, a).unwrap();
    k.set_trace(true);
    assert_eq!(cmd(&mut k, p, Command::Pin { ptr: a, len: 1 }), Outcome::Ok);
    let dst = pfn_of(&k, p, a).unwrap();
    assert_eq!(
        k.take_events(),
        [Event::Migrate {
            from: src,
            to: dst,
            reason: MigrateReason::LongTermPin
        }]
    );
}

#[test]
fn a_partial_munmap_splits_the_huge_page() {
    let mut k = kernel(&[("tag-storage", "none"), ("thp", "always")]);
    let p = spawn(&mut k);
    let a = huge_mapping(&mut k, p, Prot::READ_WRITE);
    k.set_trace(true);
    assert_eq!(store8(&mut k, p, a, 1), Outcome::Ok);
    assert_eq!(
        cmd(&mut k, p, Command::Munmap { ptr: a, len: 4096 }),
        Outcome::Ok
    );
    assert_eq!(
        k.take_events(),
        [
            Event::Fault {
                kind: FaultKind::Huge,
                addr: a.addr(),
                outcome: FaultOutcome::Mapped
            },
            Event::HugeSplit {
                pmd: a.addr(),
                reason: SplitReason::PartialRange
            },
        ]
    );
}

#[test]
fn pageout_and_swap_in_record_the_slot_and_the_tags() {
    let mut k = kernel(&[("tag-storage", "static"), ("swap", "64K")]);
    let p = spawn(&mut k);
    sync_mte(&mut k, p);
    let a = mmap(&mut k, p, 4096, rw_mte(), MapFlags::default());
    let t = a.with_tag(Tag::new(6).unwrap());
    assert_eq!(set_tag(&mut k, p, t, 4096), Outcome::Ok);
    let old = pfn_of(&k, p, a).unwrap();
    k.set_trace(true);
    assert_eq!(madvise(&mut k, p, a, 4096, Advice::PageOut), Outcome::Ok);
    let slot = slot_of(&k, p, a).unwrap().get();
    assert_eq!(
        k.take_events(),
        [Event::SwapOut {
            pfn: old,
            slot,
            tags_saved: true
        }]
    );
    assert_eq!(load8(&mut k, p, t), Outcome::Value(0));
    let new = pfn_of(&k, p, a).unwrap();
    let events = k.take_events();
    assert_eq!(
        events.last(),
        Some(&Event::SwapIn {
            pfn: new,
            slot,
            tags_restored: true
        }),
        "{events:#?}"
    );
    assert_eq!(
        faults(&events),
        [(FaultKind::SwapIn, page(a), FaultOutcome::Mapped)]
    );
    assert!(events.contains(&Event::TagsInitialised { pfn: new }));
}

/// Fills tag storage with untagged data (`tag-storage-data=prefer`); the
/// mapping and its tag storage frames.
fn fill_tag_storage(k: &mut Kernel, p: Pid) -> (TaggedPtr, Vec<mte::Pfn>) {
    let pages = k.mem.geometry().tag_storage_pages();
    let len = pages * 4096;
    let a = mmap(k, p, len, Prot::READ_WRITE, MapFlags::default());
    let fill = Command::Fill {
        ptr: a,
        len,
        byte: 0x11,
    };
    assert_eq!(cmd(k, p, fill), Outcome::Ok);
    let in_storage: Vec<mte::Pfn> = (0..pages)
        .filter_map(|i| pfn_of(k, p, a.checked_add(i * 4096).unwrap()))
        .filter(|&pfn| k.mem.geometry().is_tag_storage(pfn))
        .collect();
    assert!(!in_storage.is_empty());
    (a, in_storage)
}

#[test]
fn a_claim_of_a_block_holding_data_migrates_it_first() {
    let mut k = kernel(&[("tag-storage", "dynamic"), ("tag-storage-data", "prefer")]);
    let p = spawn(&mut k);
    sync_mte(&mut k, p);
    let _data = fill_tag_storage(&mut k, p);
    let t = mmap(&mut k, p, 4096, rw_mte(), MapFlags::default());
    k.set_trace(true);
    assert_eq!(store8(&mut k, p, t, 1), Outcome::Ok);
    let events = k.take_events();
    let (at, block, migrated) = events
        .iter()
        .enumerate()
        .find_map(|(i, e)| match *e {
            Event::TagReserve {
                block,
                how: ReserveHow::Claimed { migrated },
            } => Some((i, block, migrated)),
            _ => None,
        })
        .unwrap_or_else(|| panic!("no claim with migration: {events:#?}"));
    let range = k.mem.geometry().block_pfns(platform::TagBlock::new(block));
    let moved: Vec<&Event> = events[..at]
        .iter()
        .filter(|e| {
            matches!(e, Event::Migrate { from, reason: MigrateReason::TagStorageClaim, .. }
                if range.contains(*from))
        })
        .collect();
    assert_eq!(moved.len() as u64, migrated, "{events:#?}");
    assert!(migrated > 0);
}

#[test]
fn a_claim_that_meets_a_pinned_page_fails_and_says_why() {
    let mut k = kernel(&[("tag-storage", "dynamic"), ("tag-storage-data", "prefer")]);
    let p = spawn(&mut k);
    sync_mte(&mut k, p);
    let (_data, in_storage) = fill_tag_storage(&mut k, p);
    let t = mmap(&mut k, p, 4096, rw_mte(), MapFlags::default());
    // Short-term pins (not through `pin`, which would move them first;
    // the checker would see pins no process recorded, so `k.run` below).
    for &pfn in &in_storage {
        frame_meta(&k, pfn).pins += 1;
    }
    k.set_trace(true);
    let store = Command::Store {
        ptr: t,
        size: AccessSize::from_bytes(8).unwrap(),
        value: 1,
    };
    // Every block of tag storage holds a pinned page: no tagged page can
    // get storage while the pins last. The fault finds no page to move
    // the data to whose storage it could reserve (moving it into another
    // page without storage would only fault again), so it fails out of
    // memory rather than replaying for ever.
    let reply = k.run(&Op::Process {
        pid: p,
        command: store,
    });
    assert!(
        matches!(&reply.outcome, uapi::Outcome::Fault(f) if f.code == uapi::FaultCode::SegvAccErr),
        "{reply:?}"
    );
    assert!(k.counter(uapi::Counter::Oom).unwrap() > 0);
    let events = k.take_events();
    assert!(
        events.iter().any(|e| matches!(
            e,
            Event::TagReserve {
                how: ReserveHow::Failed(uapi::event::ReserveFailure::Pinned),
                ..
            }
        )),
        "{events:#?}"
    );
    for &pfn in &in_storage {
        frame_meta(&k, pfn).pins -= 1;
    }
    // No livelock for the liveness check, and nothing else broke.
    let v = k.invariant_violations();
    assert!(v.is_empty(), "{v:#?}");
}
