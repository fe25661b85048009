//! The incremental invariant checker against the full one on planted bugs:
//! a short program runs, a bug is planted at one step (behind the kernel's
//! back, as a broken kernel path would leave it), and after every step
//! both checkers must give the same verdict; the first step with a
//! violation is the planted step for both. (Random programs:
//! `crates/difftest/tests/incremental.rs`.)

use mte::{Pfn, Tag};
use uapi::{Command, MapFlags, Op, Outcome, Prot};

use super::*;
use crate::machine::incremental::{same_verdict, sorted};
use std::collections::{BTreeMap, BTreeSet};

use crate::machine::{Object, ObjectKind};
use crate::phys::{FrameState, FreeList, Order};

/// A bug planted into a running machine.
type Plant = fn(&mut Kernel, Pid, TaggedPtr);

/// The steps of the program (on `p`, with the tagged mapping `a` and the
/// untagged `b`), then the step index the bug is planted after.
pub(super) fn steps(p: Pid, a: TaggedPtr, b: TaggedPtr) -> Vec<Op> {
    let on = |command| Op::Process { pid: p, command };
    let size = uapi::AccessSize::from_bytes(8).unwrap();
    vec![
        on(Command::Store {
            ptr: a,
            size,
            value: 1,
        }),
        on(Command::Store {
            ptr: at(a, 4096),
            size,
            value: 2,
        }),
        on(Command::Store {
            ptr: b,
            size,
            value: 3,
        }),
        on(Command::Fork),
        on(Command::Store {
            ptr: at(b, 8192),
            size,
            value: 4,
        }),
        on(Command::Load { ptr: a, size }),
        on(Command::Munmap {
            ptr: at(b, 8192),
            len: 4096,
        }),
        on(Command::Store {
            ptr: at(a, 3 * 4096),
            size,
            value: 5,
        }),
        Op::Compact,
        on(Command::Load {
            ptr: at(a, 4096),
            size,
        }),
    ]
}

const PLANT_AFTER: usize = 4;

/// Runs the program on `policy`, planting `bug` after step
/// [`PLANT_AFTER`] (and stopping there when a bug is planted: the kernel
/// may trip over the broken state later); returns the first step whose
/// verdict is not empty and the verdict then. Both checkers agree at every
/// step (else a panic).
fn run_with_bug(policy: &str, bug: Option<Plant>) -> (usize, Vec<String>) {
    run_with_bug_on(&[("tag-storage", policy)], bug)
}

/// [`run_with_bug`] on the machine of `keys`.
fn run_with_bug_on(keys: &[(&str, &str)], bug: Option<Plant>) -> (usize, Vec<String>) {
    let policy = keys
        .iter()
        .find(|(k, _)| *k == "tag-storage")
        .map_or("dynamic", |(_, v)| *v);
    let mut k = kernel(keys);
    let p = spawn(&mut k);
    let prot = if policy == "none" {
        Prot::READ_WRITE
    } else {
        sync_mte(&mut k, p);
        rw_mte()
    };
    let a = mmap(&mut k, p, 16 * 4096, prot, MapFlags::default());
    let b = mmap(&mut k, p, 4 * 4096, Prot::READ_WRITE, MapFlags::default());
    let a = a.with_tag(Tag::new(0).unwrap());
    let mut first = None;
    for (i, op) in steps(p, a, b).into_iter().enumerate() {
        let reply = k.run(&op);
        assert!(!matches!(reply.outcome, Outcome::Stuck), "{op:?}");
        if i == PLANT_AFTER
            && let Some(bug) = bug
        {
            bug(&mut k, p, b);
        }
        let incremental = k.violations_incremental();
        let full = k.violations();
        assert!(
            same_verdict(&incremental, &full),
            "{policy}, step {i} ({op:?}):\nincremental {:#?}\nfull {:#?}",
            sorted(&incremental),
            sorted(&full)
        );
        if first.is_none() && !full.is_empty() {
            first = Some((i, sorted(&full)));
        }
        if i == PLANT_AFTER && bug.is_some() {
            break;
        }
    }
    first.unwrap_or((usize::MAX, Vec::new()))
}

fn first_free_block(k: &Kernel) -> (Pfn, Order, FreeList) {
    let phys = k.mem.phys();
    for (order, lists) in phys.alloc.free_lists.iter().enumerate() {
        for list in FreeList::ALL {
            if let Some(head) = lists[list.index()].iter().next() {
                return (head, Order::new(order as u8), list);
            }
        }
    }
    panic!("no free block")
}

fn lose_a_free_block(k: &mut Kernel, _: Pid, _: TaggedPtr) {
    let (head, order, list) = first_free_block(k);
    k.mem.phys_mut().alloc.del_free(head, order, list);
}

fn split_a_free_block_wrongly(k: &mut Kernel, _: Pid, _: TaggedPtr) {
    // Two halves of an order-1+ block left unmerged: buddies not merged.
    let phys = k.mem.phys();
    let found = phys
        .alloc
        .free_lists
        .iter()
        .enumerate()
        .skip(1)
        .find_map(|(o, lists)| {
            FreeList::ALL
                .into_iter()
                .find_map(|l| lists[l.index()].iter().next().map(|h| (h, o, l)))
        });
    drop(phys);
    let (head, order, list) = found.expect("a free block of order 1 or more");
    let half = Order::new(order as u8 - 1);
    let mut phys = k.mem.phys_mut();
    phys.alloc.del_free(head, Order::new(order as u8), list);
    phys.alloc.add_free(head, half, list);
    phys.alloc.add_free(head + half.pages(), half, list);
}

/// A frame waiting on a per-CPU list gets a reference (`pcp=on`).
fn referenced_pcp_page(k: &mut Kernel, _: Pid, _: TaggedPtr) {
    let mut phys = k.mem.phys_mut();
    let head = *phys
        .alloc
        .pcp
        .as_ref()
        .and_then(|p| p.index.keys().next())
        .expect("a page on a per-CPU list");
    phys.alloc
        .frames
        .materialise_block(head, 1)
        .first_mut()
        .expect("one frame")
        .refcount = 1;
}

fn wrong_refcount(k: &mut Kernel, p: Pid, b: TaggedPtr) {
    let pfn = pfn_of(k, p, b).expect("b is mapped");
    frame_meta(k, pfn).refcount += 1;
}

fn wrong_mapcount(k: &mut Kernel, p: Pid, b: TaggedPtr) {
    let pfn = pfn_of(k, p, b).expect("b is mapped");
    frame_meta(k, pfn).mapcount += 1;
}

fn wrong_pin_count(k: &mut Kernel, p: Pid, b: TaggedPtr) {
    // A pin nobody recorded (the per-frame pins are merged with the
    // processes' records in frame order).
    let pfn = pfn_of(k, p, b).expect("b is mapped");
    frame_meta(k, pfn).pins += 1;
}

fn owner_without_page_cache(k: &mut Kernel, p: Pid, b: TaggedPtr) {
    // An anonymous page recorded as owned by a page cache that does not
    // hold it (the owners are merged with the caches' pages).
    use crate::mm::Id;
    let pfn = pfn_of(k, p, b).expect("b is mapped");
    k.cache_owner.borrow_mut().insert(
        pfn,
        (crate::mm::ObjectId::from_raw(999), crate::mm::Pgoff::new(3)),
    );
}

fn orphan_tail(k: &mut Kernel, p: Pid, b: TaggedPtr) {
    // A page of b turned into a tail of its neighbour (a head's order lost).
    let pfn = pfn_of(k, p, b).expect("b is mapped");
    frame_meta(k, pfn).set_state(FrameState::Tail { head_offset: 1 });
}

fn tag_write_into_lent_storage(k: &mut Kernel, p: Pid, b: TaggedPtr) {
    // Tags written for a data page whose tag storage is lent to the
    // allocator (not claimed for a reserved block) under `dynamic`.
    let from = pfn_of(k, p, b).expect("b is mapped");
    let g = k.mem.geometry().clone();
    let pfn = (0..1 << 16)
        .map(|i| from + i * 64)
        .find(|&pfn| {
            g.tag_bytes_of(pfn).is_some_and(|at| {
                let status = k.mem.phys().alloc.frame_status(g.pfn_of(at));
                !matches!(status, Some(crate::phys::FrameStatus::Claimed))
            })
        })
        .expect("a data frame whose tag storage is lent");
    let tags = vec![Tag::new(3).unwrap(); k.mem.tags_per_page()];
    k.mem.write_page_tags(pfn, &tags).unwrap();
}

fn tagged_without_reservation(k: &mut Kernel, p: Pid, b: TaggedPtr) {
    let pfn = pfn_of(k, p, b).expect("b is mapped");
    frame_meta(k, pfn)
        .flags
        .insert(crate::phys::PageFlag::Tagged);
}

fn stale_rmap(k: &mut Kernel, p: Pid, b: TaggedPtr) {
    let pfn = pfn_of(k, p, b).expect("b is mapped");
    let mm = k.process_mm(p).unwrap();
    let entry = crate::mm::RmapEntry {
        mm,
        va: b.addr(),
        level: crate::mm::MapLevel::Pte,
    };
    k.rmap.borrow_mut().remove(pfn, entry).unwrap();
}

/// An rmap entry no page table has: caught through the rmap's change log.
fn extra_rmap_entry(k: &mut Kernel, p: Pid, b: TaggedPtr) {
    let pfn = pfn_of(k, p, b).expect("b is mapped");
    let mm = k.process_mm(p).unwrap();
    let entry = crate::mm::RmapEntry {
        mm,
        va: at(b, 3 * 4096).addr(),
        level: crate::mm::MapLevel::Pte,
    };
    k.rmap.borrow_mut().add(pfn, entry).unwrap();
}

/// An rmap list for a frame no page table maps, in another chunk of the
/// rmap's storage than any mapped frame: caught through the change log.
fn rmap_entry_of_an_unmapped_frame(k: &mut Kernel, p: Pid, b: TaggedPtr) {
    let pfn = pfn_of(k, p, b).expect("b is mapped") + 1000;
    assert!(k.rmap.borrow().list(pfn).is_none());
    let mm = k.process_mm(p).unwrap();
    let entry = crate::mm::RmapEntry {
        mm,
        va: b.addr(),
        level: crate::mm::MapLevel::Pte,
    };
    k.rmap.borrow_mut().add(pfn, entry).unwrap();
}

/// A PTE cleared behind the rmap's back: caught through the rescan of the
/// one region whose PTE table changed.
fn pte_cleared_behind_the_rmap(k: &mut Kernel, p: Pid, b: TaggedPtr) {
    let mm = k.process_mm(p).unwrap();
    let mut mms = k.mms.borrow_mut();
    let m = mms.get_mut(&mm).unwrap();
    assert!(matches!(m.pt.clear_pte(b.addr()), Ok(Pte::Present(_))));
}

/// A mapped page recorded as an orphan: caught through the orphans'
/// generation (the frame's verdict is unchanged, the orphan check is not).
fn mapped_orphan(k: &mut Kernel, p: Pid, b: TaggedPtr) {
    let pfn = pfn_of(k, p, b).expect("b is mapped");
    k.orphans.borrow_mut().insert(pfn);
}

/// A mapped page with a pin (recorded and counted) recorded as an
/// orphan: only the orphan check's "mapped" clause catches it (the
/// incremental checker computes it with the frame's verdict).
fn pinned_mapped_orphan(k: &mut Kernel, p: Pid, b: TaggedPtr) {
    unrecorded_frame_pin(k, p, b);
    let pfn = pfn_of(k, p, b).expect("b is mapped");
    frame_meta(k, pfn).pins += 1;
    k.orphans.borrow_mut().insert(pfn);
}

/// A free frame recorded as an orphan: held but not allocated, on no
/// list, counted once too many.
fn free_orphan(k: &mut Kernel, _: Pid, _: TaggedPtr) {
    let (head, _, _) = first_free_block(k);
    k.orphans.borrow_mut().insert(head);
}

/// A pin a process records that the frame does not have: caught through
/// the processes' generation.
fn unrecorded_frame_pin(k: &mut Kernel, p: Pid, b: TaggedPtr) {
    let pfn = pfn_of(k, p, b).expect("b is mapped");
    k.procs
        .borrow_mut()
        .get_mut(&p)
        .expect("p runs")
        .pins
        .entry(b.addr().as_u64() >> 12)
        .or_default()
        .push(pfn);
}

/// A mapped page taken off its LRU list behind the kernel's back: caught
/// through the LRU's change log.
fn page_off_the_lru(k: &mut Kernel, p: Pid, b: TaggedPtr) {
    let pfn = pfn_of(k, p, b).expect("b is mapped");
    k.lru.borrow_mut().remove(pfn);
}

/// A free frame put on an LRU list.
fn free_frame_on_the_lru(k: &mut Kernel, _: Pid, _: TaggedPtr) {
    let (head, _, _) = first_free_block(k);
    k.lru
        .borrow_mut()
        .add(head, crate::machine::lru::LruList::InactiveAnon);
}

/// An anonymous page moved to the file list (behind the kernel's back).
fn anon_page_on_the_file_list(k: &mut Kernel, p: Pid, b: TaggedPtr) {
    let pfn = pfn_of(k, p, b).expect("b is mapped");
    let mut lru = k.lru.borrow_mut();
    lru.remove(pfn);
    lru.add(pfn, crate::machine::lru::LruList::ActiveFile);
}

/// A mapped page also entered on a second list (the LRU's own
/// bookkeeping broken): caught through the LRU's consistency log.
fn page_on_two_lists(k: &mut Kernel, p: Pid, b: TaggedPtr) {
    let pfn = pfn_of(k, p, b).expect("b is mapped");
    k.lru
        .borrow_mut()
        .plant_second_entry(pfn, crate::machine::lru::LruList::ActiveFile);
}

/// A page in a page cache that no owner records: caught through the
/// objects' generation.
fn page_cache_page_without_owner(k: &mut Kernel, p: Pid, b: TaggedPtr) {
    use crate::mm::Id;
    let pfn = pfn_of(k, p, b).expect("b is mapped");
    let id = crate::mm::ObjectId::from_raw(999);
    k.objects.borrow_mut().insert(
        id,
        Object {
            kind: ObjectKind::File,
            pages: BTreeMap::from([(crate::mm::Pgoff::new(0), pfn)]),
            disk: BTreeMap::new(),
            dirty: BTreeSet::new(),
            dropped: BTreeSet::new(),
        },
    );
}

/// A mapped page also recorded in the swap cache, for a free slot.
fn mapped_page_in_the_swap_cache(k: &mut Kernel, p: Pid, b: TaggedPtr) {
    let pfn = pfn_of(k, p, b).expect("b is mapped");
    let slot = crate::mm::SwapSlot::new(0);
    k.swap_cache.borrow_mut().insert(slot, pfn);
    k.swap_cache_slot.borrow_mut().insert(pfn, slot);
}

/// A mapped page in the swap cache's page-to-slot map only (the
/// slot-to-page map does not record it).
fn mapped_page_in_half_the_swap_cache(k: &mut Kernel, p: Pid, b: TaggedPtr) {
    let pfn = pfn_of(k, p, b).expect("b is mapped");
    let slot = crate::mm::SwapSlot::new(0);
    k.swap_cache_slot.borrow_mut().insert(pfn, slot);
}

/// A free frame in the swap cache (held but not allocated), for a free
/// slot: caught through the swap cache's generation.
fn free_frame_in_the_swap_cache(k: &mut Kernel, _: Pid, _: TaggedPtr) {
    let (head, _, _) = first_free_block(k);
    let slot = crate::mm::SwapSlot::new(0);
    k.swap_cache.borrow_mut().insert(slot, head);
    k.swap_cache_slot.borrow_mut().insert(head, slot);
}

/// A swap slot in use that no swap entry refers to (a leaked slot):
/// caught through the swap device's generation.
fn leaked_swap_slot(k: &mut Kernel, _: Pid, _: TaggedPtr) {
    k.swap.borrow_mut().alloc(None, None).expect("a free slot");
}

/// Restored tags waiting for a free frame.
fn restored_tags_of_a_free_frame(k: &mut Kernel, _: Pid, _: TaggedPtr) {
    let (head, _, _) = first_free_block(k);
    let tags = vec![Tag::new(1).unwrap(); k.mem.tags_per_page()];
    k.restored_tags.borrow_mut().insert(head, tags);
}

/// A frame the kernel allocated and forgot (a leak).
fn leaked_frame(k: &mut Kernel, _: Pid, _: TaggedPtr) {
    k.mem
        .phys_mut()
        .alloc
        .alloc(Order::new(0), crate::phys::AllocFlags::KERNEL)
        .expect("a free frame");
}

#[test]
fn planted_frame_bugs_are_found_by_both_checkers_at_the_planted_step() {
    let bugs: [(&str, Plant, &str); 15] = [
        ("mapped orphan", mapped_orphan, "Orphan"),
        ("pinned mapped orphan", pinned_mapped_orphan, "Orphan"),
        ("free orphan", free_orphan, "NotAllocated"),
        ("unrecorded frame pin", unrecorded_frame_pin, "PinCount"),
        (
            "page off the LRU",
            page_off_the_lru,
            "a user page on no list",
        ),
        (
            "free frame on the LRU",
            free_frame_on_the_lru,
            "not a user page",
        ),
        (
            "anonymous page on the file list",
            anon_page_on_the_file_list,
            "wrong type",
        ),
        (
            "page on two lists",
            page_on_two_lists,
            "the lists and the places disagree",
        ),
        (
            "page cache page without owner",
            page_cache_page_without_owner,
            "PageCache",
        ),
        (
            "mapped page in the swap cache",
            mapped_page_in_the_swap_cache,
            "SwapCache",
        ),
        (
            "mapped page in half the swap cache",
            mapped_page_in_half_the_swap_cache,
            "does not record it",
        ),
        (
            "restored tags of a free frame",
            restored_tags_of_a_free_frame,
            "RestoredTags",
        ),
        ("leaked frame", leaked_frame, "FrameCount"),
        (
            "free frame in the swap cache",
            free_frame_in_the_swap_cache,
            "NotAllocated",
        ),
        ("free orphan's count", free_orphan, "FrameCount"),
    ];
    for (name, bug, expected) in bugs {
        let (step, verdict) = run_with_bug("dynamic", Some(bug));
        assert_eq!(step, PLANT_AFTER, "{name}: {verdict:#?}");
        assert!(
            verdict.iter().any(|v| v.contains(expected)),
            "{name}: {verdict:#?}"
        );
    }
    // On a machine with swap.
    let keys = [("tag-storage", "dynamic"), ("swap", "1M")];
    let (step, verdict) = run_with_bug_on(&keys, Some(leaked_swap_slot));
    assert_eq!(step, PLANT_AFTER, "{verdict:#?}");
    assert!(
        verdict.iter().any(|v| v.contains("SwapCount")),
        "{verdict:#?}"
    );
}

/// A frame of a reserved block handed back behind the manager's back (no
/// longer claimed): the incremental checker looks again at a reserved
/// block only when one of its frames was rechecked (`crate::mem::incremental`).
fn unclaimed_reserved_block_frame(k: &mut Kernel, _: Pid, _: TaggedPtr) {
    let block = k
        .mem
        .tag_storage()
        .reserved_blocks()
        .next()
        .expect("a reserved block");
    let pfn = k.mem.geometry().block_pfns(block).start;
    frame_meta(k, pfn).set_state(FrameState::CarvedOut);
}

/// The zero page's frame loses its kernel flag.
fn zero_page_not_kernel(k: &mut Kernel, _: Pid, _: TaggedPtr) {
    let pfn = k.mem.zero_page();
    frame_meta(k, pfn)
        .flags
        .remove(crate::phys::PageFlag::Kernel);
}

/// The planted bugs of the memory layer's own checks, on the designs
/// that lend their tag storage (reserved blocks are claimed frames).
#[test]
fn memory_layer_bugs_are_found_by_both_checkers_at_the_planted_step() {
    for policy in ["dynamic", "google"] {
        assert_eq!(run_with_bug(policy, None).0, usize::MAX, "{policy}");
        let bugs: [(&str, Plant, &str); 2] = [
            (
                "unclaimed reserved block frame",
                unclaimed_reserved_block_frame,
                "ReservedBlockFrame",
            ),
            ("zero page not kernel", zero_page_not_kernel, "NotKernel"),
        ];
        for (name, bug, expected) in bugs {
            let (step, verdict) = run_with_bug(policy, Some(bug));
            assert_eq!(step, PLANT_AFTER, "{policy} {name}: {verdict:#?}");
            assert!(
                verdict.iter().any(|v| v.contains(expected)),
                "{policy} {name}: {verdict:#?}"
            );
        }
    }
}

#[test]
fn without_bugs_both_checkers_stay_silent() {
    for policy in ["dynamic", "static", "none"] {
        assert_eq!(run_with_bug(policy, None).0, usize::MAX, "{policy}");
    }
}

#[test]
fn with_per_cpu_lists_both_checkers_agree() {
    let keys = [("tag-storage", "dynamic"), ("pcp", "on")];
    assert_eq!(run_with_bug_on(&keys, None).0, usize::MAX);
    for (name, bug, expected) in [
        (
            "referenced pcp page",
            referenced_pcp_page as Plant,
            "FreeFrameNotPristine",
        ),
        ("lost free block", lose_a_free_block, "FramesUnaccounted"),
    ] {
        let (step, verdict) = run_with_bug_on(&keys, Some(bug));
        assert_eq!(step, PLANT_AFTER, "{name}: {verdict:#?}");
        assert!(
            verdict.iter().any(|v| v.contains(expected)),
            "{name}: {verdict:#?}"
        );
    }
}

#[test]
fn planted_bugs_are_found_by_both_checkers_at_the_planted_step() {
    let bugs: [(&str, Plant, &str); 13] = [
        ("lost free block", lose_a_free_block, "FramesUnaccounted"),
        ("pin count", wrong_pin_count, "PinCount"),
        (
            "owner without page cache",
            owner_without_page_cache,
            "PageCache",
        ),
        (
            "unmerged buddies",
            split_a_free_block_wrongly,
            "FreeBuddiesNotMerged",
        ),
        ("refcount", wrong_refcount, "RefCount"),
        ("mapcount", wrong_mapcount, "MapCount"),
        ("orphan tail", orphan_tail, "OrphanTail"),
        (
            "tag write into lent storage",
            tag_write_into_lent_storage,
            "TagsWrittenToUnreservedStorage",
        ),
        (
            "tagged without reservation",
            tagged_without_reservation,
            "TaggedWithoutReservation",
        ),
        ("stale rmap", stale_rmap, "Unrecorded"),
        ("extra rmap entry", extra_rmap_entry, "Rmap(Stale"),
        (
            "rmap entry of an unmapped frame",
            rmap_entry_of_an_unmapped_frame,
            "Rmap(Stale",
        ),
        (
            "PTE cleared behind the rmap",
            pte_cleared_behind_the_rmap,
            "Rmap(Stale",
        ),
    ];
    for (name, bug, expected) in bugs {
        let (step, verdict) = run_with_bug("dynamic", Some(bug));
        assert_eq!(step, PLANT_AFTER, "{name}: {verdict:#?}");
        assert!(
            verdict.iter().any(|v| v.contains(expected)),
            "{name}: {verdict:#?}"
        );
    }
}

/// Both checkers after a step, required equal; the verdict, sorted.
fn both(k: &Kernel, what: &str) -> Vec<String> {
    let incremental = k.violations_incremental();
    let full = k.violations();
    assert!(
        same_verdict(&incremental, &full),
        "{what}:\nincremental {:#?}\nfull {:#?}",
        sorted(&incremental),
        sorted(&full)
    );
    sorted(&full)
}

/// The incremental frame check closes over an allocated block only where
/// a frame's state changed (`crate::phys::incremental`): a head whose
/// order shrinks, checked a step after its block was allocated, must still
/// recheck its old tails (their head no longer covers them), and a head
/// whose counts alone change must leave its tails' verdicts as they were.
#[test]
fn a_head_whose_order_shrinks_orphans_its_old_tails_for_both_checkers() {
    let k = kernel(&[("tag-storage", "dynamic")]);
    assert_eq!(both(&k, "boot"), Vec::<String>::new());
    let order = Order::new(2);
    let head = k
        .mem
        .phys_mut()
        .alloc
        .alloc(order, crate::phys::AllocFlags::KERNEL)
        .expect("an order-2 block");
    // The block is nobody's: only the frame count is off (by its 4 pages).
    let allocated = both(&k, "allocated");
    assert!(
        allocated.iter().all(|v| v.contains("FrameCount")),
        "{allocated:#?}"
    );
    // Counts of the head alone: nothing new for the tails.
    frame_meta(&k, head).refcount += 1;
    assert_eq!(both(&k, "head refcount"), allocated);
    // The head's order lost: its three old tails are orphans, found by
    // the incremental checker through the head's old state.
    frame_meta(&k, head).set_state(FrameState::Allocated {
        order: Order::new(0),
        migratetype: crate::phys::MigrateType::Unmovable,
    });
    let shrunk = both(&k, "head shrunk");
    assert_eq!(
        shrunk.iter().filter(|v| v.contains("OrphanTail")).count(),
        3,
        "{shrunk:#?}"
    );
}

/// The incremental checker keeps an address space's leaves per 2 MiB
/// region and walks again only the regions whose PMD slot changed
/// (`super::super::check`): a program over several regions (stores into
/// each, a fork, one region changed while the others stay, a range
/// unmapped across two regions) is checked step by step, then a PTE is
/// cleared behind the rmap's back in one region at the step another
/// region changes: both checkers find it there.
#[test]
fn regions_are_rescanned_only_where_they_changed() {
    const REGION: u64 = 2 << 20;
    let mut k = kernel(&[("tag-storage", "dynamic")]);
    let p = spawn(&mut k);
    let a = mmap(&mut k, p, 4 * REGION, Prot::READ_WRITE, MapFlags::default());
    let size = uapi::AccessSize::from_bytes(8).unwrap();
    let store = |ptr, value| Op::Process {
        pid: p,
        command: Command::Store { ptr, size, value },
    };
    let mut program: Vec<Op> = (0..4)
        .flat_map(|r| (0..3).map(move |i| (r, i)))
        .map(|(r, i)| store(at(a, r * REGION + i * 3 * 4096), u128::from(r * 8 + i)))
        .collect();
    program.push(Op::Process {
        pid: p,
        command: Command::Fork,
    });
    program.push(store(at(a, REGION + 5 * 4096), 99));
    program.push(Op::Process {
        pid: p,
        command: Command::Munmap {
            ptr: at(a, 2 * REGION - 2 * 4096),
            len: 4 * 4096,
        },
    });
    program.push(store(at(a, 3 * REGION + 7 * 4096), 98));
    for (i, op) in program.iter().enumerate() {
        let reply = k.run(op);
        assert_eq!(reply.outcome, Outcome::Ok, "{op:?}");
        assert_eq!(both(&k, &format!("step {i}")), Vec::<String>::new());
    }
    // A region left alone by the step, broken behind the rmap's back,
    // while the step changes another region.
    pte_cleared_behind_the_rmap(&mut k, p, at(a, 3 * 4096));
    k.run(&store(at(a, 3 * REGION + 9 * 4096), 97));
    let verdict = both(&k, "planted");
    assert!(
        verdict.iter().any(|v| v.contains("Rmap(Stale")),
        "{verdict:#?}"
    );
}

/// A frame marked `TagStorageReserved` behind the manager's back: its
/// block's count (0 under `static` unless a tagged page shares it) no
/// longer matches the frames.
fn reserved_flag_behind_the_manager(k: &mut Kernel, p: Pid, b: TaggedPtr) {
    let pfn = pfn_of(k, p, b).expect("b is mapped");
    frame_meta(k, pfn)
        .flags
        .insert(crate::phys::PageFlag::TagStorageReserved);
}

/// A tagged frame losing its `TagStorageReserved` mark: its block keeps a
/// count the frames no longer make up.
fn reserved_flag_lost(k: &mut Kernel, _: Pid, _: TaggedPtr) {
    use crate::phys::PageFlag;
    let zero = k.mem.zero_page();
    let pfn = (0..1 << 16)
        .map(|i| Pfn::new(0x80000 + i))
        .find(|&pfn| {
            pfn != zero
                && k.mem.phys().alloc.frame(pfn).is_some_and(|m| {
                    m.flags.contains(PageFlag::Tagged)
                        && m.flags.contains(PageFlag::TagStorageReserved)
                })
        })
        .expect("a tagged frame besides the zero page");
    frame_meta(k, pfn)
        .flags
        .remove(PageFlag::TagStorageReserved);
}

/// The designs whose checks have an incremental form of their own
/// (`static`: only the blocks either side counts are compared; `rfc-v2`:
/// its extra references against a kept count): both checkers agree at
/// every step, and on `static` find broken block counts at once, on
/// either side of the comparison.
#[test]
fn design_specific_checks_agree_with_the_full_checker() {
    for policy in ["static", "rfc-v2", "xnu"] {
        assert_eq!(run_with_bug(policy, None).0, usize::MAX, "{policy}");
    }
    for policy in ["static", "rfc-v2"] {
        for (name, bug) in [
            (
                "reserved flag behind the manager",
                reserved_flag_behind_the_manager as Plant,
            ),
            ("reserved flag lost", reserved_flag_lost),
        ] {
            let (step, verdict) = run_with_bug(policy, Some(bug));
            assert_eq!(step, PLANT_AFTER, "{policy} {name}: {verdict:#?}");
            assert!(
                verdict.iter().any(|v| v.contains("BlockRefcount")),
                "{policy} {name}: {verdict:#?}"
            );
        }
    }
}

/// The dirty check (a writable entry of a file page means a dirty page):
/// the incremental checker finds the writable entries from the clean file
/// pages and its kept mappings (`super::super::check`). A shared file
/// page is read (clean, mapped read-only), written (dirty, writable),
/// shared by fork and cleaned by writeback (write-protected everywhere);
/// then written again and "written back" behind the kernel's back
/// (`folio_mkclean()` forgotten: the page clean, its entries writable in
/// both processes): both checkers find both entries at that step.
#[test]
fn a_writable_clean_file_page_is_found_by_both_checkers() {
    let mut k = kernel(&[("tag-storage", "dynamic")]);
    let p = spawn(&mut k);
    let shared_file = MapFlags {
        sharing: uapi::Sharing::Shared,
        backing: uapi::Backing::File,
        ..MapFlags::default()
    };
    let f = mmap(&mut k, p, 4 * 4096, Prot::READ_WRITE, shared_file);
    let size = uapi::AccessSize::from_bytes(8).unwrap();
    let on = |pid, command| Op::Process { pid, command };
    let store = |ptr, value| Command::Store { ptr, size, value };
    for (i, command) in [
        Command::Load { ptr: f, size },
        store(f, 1),
        store(at(f, 2 * 4096), 2),
    ]
    .into_iter()
    .enumerate()
    {
        let outcome = k.run(&on(p, command)).outcome;
        assert!(
            matches!(outcome, Outcome::Ok | Outcome::Value(0)),
            "{outcome:?}"
        );
        assert_eq!(both(&k, &format!("step {i}")), Vec::<String>::new());
    }
    let c = match k.run(&on(p, Command::Fork)).bound {
        Some(uapi::Bound::Process(c)) => c,
        b => panic!("{b:?}"),
    };
    assert_eq!(both(&k, "fork"), Vec::<String>::new());
    let pfn = pfn_of(&k, p, f).expect("f is mapped");
    k.writeback(pfn);
    assert_eq!(both(&k, "writeback"), Vec::<String>::new());
    assert_eq!(k.run(&on(c, store(f, 3))).outcome, Outcome::Ok);
    assert_eq!(k.run(&on(p, store(f, 4))).outcome, Outcome::Ok);
    assert_eq!(both(&k, "written again"), Vec::<String>::new());
    assert_eq!(pfn_of(&k, c, f), Some(pfn), "a shared page");
    let (object, pgoff) = k.cache_owner.borrow()[&pfn];
    assert!(
        k.objects
            .borrow_mut()
            .get_mut(&object)
            .unwrap()
            .dirty
            .remove(&pgoff)
    );
    let verdict = both(&k, "cleaned behind the kernel's back");
    assert_eq!(
        verdict
            .iter()
            .filter(|v| v.contains("CleanFileWritable"))
            .count(),
        2,
        "{verdict:#?}"
    );
}

/// The block checks (`Kernel::check_blocks`): a valid tagged block has
/// every frame tagged (one metadata lookup per frame), and the blocks and
/// the deposits pair up (a merge of two ascending runs). A frame of a
/// tagged block loses its `Tagged` flag, then the block's deposit moves
/// to an address with no block: both checkers find each at its step.
#[test]
fn broken_blocks_are_found_by_both_checkers() {
    let mut k = kernel(&[("tag-storage", "static"), ("thp", "always")]);
    let p = spawn(&mut k);
    sync_mte(&mut k, p);
    let a = huge_mapping(&mut k, p, rw_mte());
    let size = uapi::AccessSize::from_bytes(8).unwrap();
    let store = Op::Process {
        pid: p,
        command: Command::Store {
            ptr: at(a, 5 * 4096),
            size,
            value: 1,
        },
    };
    assert_eq!(k.run(&store).outcome, Outcome::Ok);
    assert_eq!(k.page_state(p, a, uapi::PageState::Huge), Some(true));
    assert_eq!(both(&k, "mapped"), Vec::<String>::new());
    let head = pfn_of(&k, p, a).expect("a is mapped");
    frame_meta(&k, head + 7)
        .flags
        .remove(crate::phys::PageFlag::Tagged);
    let untagged = both(&k, "a frame untagged");
    assert!(
        untagged
            .iter()
            .any(|v| v.contains("TaggedEntryUninitialised")
                && v.contains(&format!("{:?}", head + 7))),
        "{untagged:#?}"
    );
    frame_meta(&k, head + 7)
        .flags
        .insert(crate::phys::PageFlag::Tagged);
    assert_eq!(both(&k, "tagged again"), Vec::<String>::new());
    let mm = k.process_mm(p).unwrap();
    {
        let mut mms = k.mms.borrow_mut();
        let deposits = &mut mms.get_mut(&mm).unwrap().deposits;
        let table = deposits.remove(&a.addr()).expect("the block's deposit");
        deposits.insert(at(a, 2 * MIB2).addr(), table);
    }
    let moved = both(&k, "deposit moved");
    assert_eq!(
        moved.iter().filter(|v| v.contains("Deposit")).count(),
        2,
        "{moved:#?}"
    );
}

/// The per-CPU TLB check, which groups the entries by address space once
/// (`super::super::check`): two address spaces (a fork) with entries
/// filled by the direct path; one of the child's entries made stale
/// behind the kernel's back is found, for the child alone, by both
/// checkers.
#[test]
fn a_stale_per_cpu_tlb_entry_is_found_for_its_address_space() {
    let mut k = kernel(&[("tag-storage", "dynamic")]);
    let p = spawn(&mut k);
    let a = mmap(&mut k, p, 2 * 4096, Prot::READ_WRITE, MapFlags::default());
    let size = uapi::AccessSize::B8;
    assert_eq!(k.store_direct(p, a, size, 1), Outcome::Ok);
    assert_eq!(k.store_direct(p, at(a, 4096), size, 2), Outcome::Ok);
    let c = match k
        .run(&Op::Process {
            pid: p,
            command: Command::Fork,
        })
        .bound
    {
        Some(uapi::Bound::Process(c)) => c,
        b => panic!("{b:?}"),
    };
    assert_eq!(k.load_direct(c, a, size), Outcome::Value(1));
    assert_eq!(k.load_direct(c, at(a, 4096), size), Outcome::Value(2));
    assert_eq!(k.load_direct(p, at(a, 4096), size), Outcome::Value(2));
    assert_eq!(both(&k, "filled"), Vec::<String>::new());
    let (mm_p, mm_c) = (k.process_mm(p).unwrap(), k.process_mm(c).unwrap());
    let vpn = at(a, 4096).addr().as_u64() >> crate::mm::layout::PAGE_SHIFT;
    let entries = k
        .cpu_tlbs
        .borrow()
        .entries()
        .filter(|e| e.vpn == vpn)
        .count();
    assert!(entries >= 2, "both address spaces' entries: {entries}");
    {
        let mut tlbs = k.cpu_tlbs.borrow_mut();
        let e = tlbs
            .cpu(0)
            .lookup_mut(mm_c, vpn)
            .expect("the child's page is in CPU 0's TLB");
        e.pfn += 1;
    }
    let stale = both(&k, "stale");
    let stale_tlb: Vec<&String> = stale.iter().filter(|v| v.contains("StaleTlb")).collect();
    assert_eq!(stale_tlb.len(), 1, "{stale:#?}");
    assert!(stale_tlb[0].contains(&format!("{mm_c:?}")), "{stale:#?}");
    assert!(!stale_tlb[0].contains(&format!("{mm_p:?}")), "{stale:#?}");
}
