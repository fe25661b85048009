//! Memory compaction (`machine::compact`): what moves, what stays, data and
//! tags read back the same, the counter and the events; direct compaction
//! before a THP fault falls back.

use mte::{Pfn, Tag};
use uapi::event::{Event, MigrateReason};
use uapi::{Advice, Command, MapFlags, Op, Outcome, PageState, Prot};

use super::*;

/// The compaction migrations of `events`, as (from, to).
fn compactions(events: &[Event]) -> Vec<(Pfn, Pfn)> {
    events
        .iter()
        .filter_map(|e| match *e {
            Event::Migrate {
                from,
                to,
                reason: MigrateReason::Compaction,
            } => Some((from, to)),
            _ => None,
        })
        .collect()
}

fn ldg(k: &mut Kernel, pid: Pid, ptr: TaggedPtr) -> Outcome {
    cmd(k, pid, Command::Ldg { ptr })
}

/// Linux compact_zone(): tagged and untagged pages move up, with their data
/// and tags; `migrate.pages` counts each move once; the invariants hold
/// after the op (checked by `run`).
#[test]
fn compaction_moves_tagged_and_untagged_pages_with_their_tags() {
    for policy in ["dynamic", "static"] {
        let mut k = kernel(&[("tag-storage", policy)]);
        let p = spawn(&mut k);
        sync_mte(&mut k, p);
        let a = mmap(&mut k, p, 4 * 4096, rw_mte(), MapFlags::default());
        let b = mmap(&mut k, p, 2 * 4096, Prot::READ_WRITE, MapFlags::default());
        let mut tagged = Vec::new();
        for i in 0..4u64 {
            let tag = Tag::new(i as u8 + 3).unwrap();
            let ptr = at(a, i * 4096).with_tag(tag);
            assert_eq!(set_tag(&mut k, p, ptr, 4096), Outcome::Ok);
            assert_eq!(store8(&mut k, p, ptr, 100 + u128::from(i)), Outcome::Ok);
            tagged.push(ptr);
        }
        let plain: Vec<TaggedPtr> = (0..2).map(|i| at(b, i * 4096)).collect();
        for (i, &ptr) in plain.iter().enumerate() {
            assert_eq!(store8(&mut k, p, ptr, 200 + i as u128), Outcome::Ok);
        }
        let before: Vec<Pfn> = tagged
            .iter()
            .chain(&plain)
            .map(|&ptr| pfn_of(&k, p, ptr).unwrap())
            .collect();
        let (migrated, pages_tagged) = (
            stat(&k, Counter::MigratePages),
            stat(&k, Counter::PagesTagged),
        );
        k.set_trace(true);
        assert_eq!(run(&mut k, Op::Compact).outcome, Outcome::Ok);
        let moves = compactions(&k.take_events());
        let after: Vec<Pfn> = tagged
            .iter()
            .chain(&plain)
            .map(|&ptr| pfn_of(&k, p, ptr).unwrap())
            .collect();
        for (old, new) in before.iter().zip(&after) {
            assert!(new > old, "{policy}: {old} moved up to {new}");
            assert!(!k.memory().geometry().is_tag_storage(*new), "never to CMA");
            assert!(moves.contains(&(*old, *new)), "{policy}: {moves:?}");
        }
        assert_eq!(
            stat(&k, Counter::MigratePages) - migrated,
            moves.len() as u64,
            "{policy}"
        );
        assert_eq!(stat(&k, Counter::PagesTagged), pages_tagged, "{policy}");
        for (i, &ptr) in tagged.iter().enumerate() {
            assert_eq!(load8(&mut k, p, ptr), Outcome::Value(100 + i as u128));
            assert_eq!(ldg(&mut k, p, ptr), Outcome::Tag(ptr.tag()));
            assert_eq!(k.page_state(p, ptr, PageState::Tagged), Some(true));
        }
        for (i, &ptr) in plain.iter().enumerate() {
            assert_eq!(load8(&mut k, p, ptr), Outcome::Value(200 + i as u128));
        }
        // A second compaction finds the pages packed at the top.
        let settled = stat(&k, Counter::MigratePages);
        assert_eq!(run(&mut k, Op::Compact).outcome, Outcome::Ok);
        let again = stat(&k, Counter::MigratePages) - settled;
        assert!(again < moves.len() as u64, "{policy}: {again} moved again");
    }
}

/// isolate_migratepages_block(): pinned pages, kernel pages (page tables,
/// the zero page) and an idle machine's memory never move; `compact` with
/// nothing to do is `ok`.
#[test]
fn compaction_leaves_pinned_and_kernel_pages() {
    let mut k = kernel(&[("tag-storage", "none")]);
    assert_eq!(run(&mut k, Op::Compact).outcome, Outcome::Ok);
    assert_eq!(stat(&k, Counter::MigratePages), 0, "an idle machine");
    let p = spawn(&mut k);
    let a = mmap(&mut k, p, 2 * 4096, Prot::READ_WRITE, MapFlags::default());
    let z = mmap(&mut k, p, 4096, Prot::READ_WRITE, MapFlags::default());
    assert_eq!(store8(&mut k, p, a, 1), Outcome::Ok);
    assert_eq!(store8(&mut k, p, at(a, 4096), 2), Outcome::Ok);
    assert_eq!(load8(&mut k, p, z), Outcome::Value(0));
    assert_eq!(cmd(&mut k, p, Command::Pin { ptr: a, len: 1 }), Outcome::Ok);
    let (pinned, other) = (
        pfn_of(&k, p, a).unwrap(),
        pfn_of(&k, p, at(a, 4096)).unwrap(),
    );
    let zero = pfn_of(&k, p, z).unwrap();
    assert_eq!(run(&mut k, Op::Compact).outcome, Outcome::Ok);
    assert_eq!(pfn_of(&k, p, a), Some(pinned), "a pinned page stays");
    assert_eq!(pfn_of(&k, p, z), Some(zero), "the zero page stays");
    assert!(pfn_of(&k, p, at(a, 4096)).unwrap() > other);
    assert_eq!(stat(&k, Counter::MigratePages), 1);
    assert_eq!(load8(&mut k, p, a), Outcome::Value(1));
    assert_eq!(load8(&mut k, p, at(a, 4096)), Outcome::Value(2));
}

/// Linux __alloc_pages_direct_compact(): a THP fault that finds no free
/// order-9 page compacts once and retries before it falls back to 4 KiB
/// pages.
#[test]
fn a_huge_fault_compacts_before_falling_back() {
    let mut k = kernel(&[
        ("memory", "16M"),
        ("tag-storage", "none"),
        ("thp", "madvise"),
    ]);
    let p = spawn(&mut k);
    // Fill memory with 4 KiB pages, then free every other one: plenty of
    // free memory, no free order-9 block.
    let len = 16 << 20;
    let r = mmap(&mut k, p, len, Prot::READ_WRITE, MapFlags::default());
    let mut touched = 0;
    while touched < len / 4096 {
        match store8(&mut k, p, at(r, touched * 4096), 7) {
            Outcome::Ok => touched += 1,
            Outcome::Fault(_) => break,
            other => panic!("{other:?}"),
        }
    }
    for page in (0..touched).step_by(2) {
        let ptr = at(r, page * 4096);
        let unmap = Command::Munmap { ptr, len: 4096 };
        assert_eq!(cmd(&mut k, p, unmap), Outcome::Ok);
    }
    let h = huge_mapping(&mut k, p, Prot::READ_WRITE);
    assert_eq!(madvise(&mut k, p, h, MIB2, Advice::HugePage), Outcome::Ok);
    k.set_trace(true);
    assert_eq!(store8(&mut k, p, h, 9), Outcome::Ok);
    let moves = compactions(&k.take_events());
    assert!(!moves.is_empty(), "direct compaction ran");
    assert_eq!(k.page_state(p, h, PageState::Huge), Some(true));
    for page in (1..touched).step_by(2) {
        assert_eq!(load8(&mut k, p, at(r, page * 4096)), Outcome::Value(7));
    }
}
