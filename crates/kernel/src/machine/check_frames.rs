//! The frame part of the machine-wide checker (`super::check`): swap
//! counts and the swap cache, restored tags, page caches, multi-size THP
//! folios, pins and orphans, the set of frames user memory holds, each
//! held frame's counts (invariant 6), LRU membership, and the count of
//! allocated frames.
//!
//! # Contract
//! [`Kernel::frame_violations`] (the full checker's) derives everything
//! from the kernel's state at every call; it is the reference.
//! [`Kernel::frame_violations_incremental`] gives the same violations (as
//! a multiset) from a [`FrameCheckState`] kept between its calls,
//! recomputing only what may have changed:
//!
//! - a frame's verdict (held or not; `NotAllocated`, `MapCount`,
//!   `PinCount`, `RefCount`; its LRU membership; `Orphan`, an orphan
//!   being mapped, cached, unpinned or in the swap cache) reads its
//!   metadata, its rmap list, whether it is mapped, cached, an orphan,
//!   pinned or in the swap cache, its LRU place, and its page cache
//!   owner's kind. It is recomputed for the held frames whose metadata
//!   changed ([`crate::mem::Memory::rechecked_frames`], closed over
//!   allocated blocks; a frame that is not held has no verdict that reads
//!   it), whose rmap list or recorded mappings changed (the rmap check's
//!   recomputed frames), whose LRU place changed
//!   ([`super::lru::Lru::take_changed`]), and for the frames that entered
//!   or left one of the other sets: those sets are kept here and diffed
//!   against the kernel's when their [`super::tracked::Tracked`]
//!   generation moved (they are small but for the page caches, whose
//!   diff runs only when a page cache or an owner changed); the pins the
//!   processes record are compared with a kept copy at every call (a
//!   process changes at most steps, its pins rarely).
//! - each frame in a kept set, held, or with a violation has one record
//!   (`FrameRecord`) holding its membership of the kept sets, its owner's
//!   kind, whether it is held and its verdict: the diffs update the
//!   records of the frames they name, so a recomputed verdict reads the
//!   kept sets with one lookup, and the verdicts are gathered only while
//!   some frame has one (counts kept with the records).
//! - the swap counts are recomputed when the swap device or the swap
//!   entries the page tables hold changed; the page caches' bookkeeping
//!   when the objects or the owners did; a folio's verdict when the
//!   folios changed or a frame of the folio is recomputed above.
//! - the LRU's own bookkeeping (lists and places agree) by
//!   [`super::lru::Lru::consistent_incremental`], from the LRU's second
//!   log.
//! - the swap cache and restored tags (a handful of pages each) are
//!   derived at every call, the frame count from the number of held
//!   records.
//!
//! Linux counterparts: `CONFIG_DEBUG_VM`'s `VM_BUG_ON_PAGE` on map and
//! reference counts, `swap_map[]` accounting, the page cache's
//! `page->mapping`/`index`.

use std::cmp::Ordering;
use std::collections::btree_map::Entry;
use std::collections::{BTreeMap, BTreeSet};

use mte::Pfn;

use super::check::KernelViolation;
use super::lru::{LruList, LruPlace};
use super::{Kernel, Mm, Object, ObjectKind};
use crate::mm::layout::PAGES_PER_PMD;
use crate::mm::{MmId, ObjectId, Pgoff, RmapEntry, SwapSlot};
use crate::phys::{FrameMeta, FrameState, FrameStatus, PhysMem};
use crate::swap::SwapDevice;
use uapi::Pid;

/// What the incremental frame check keeps between calls (module doc).
#[derive(Debug, Default)]
pub(crate) struct FrameCheckState {
    /// A first call was made (the next ones may recompute less).
    primed: bool,
    /// The swap device's generation and the swap entries per slot of the
    /// last swap count check, with its verdict.
    swap_key: Option<u64>,
    swap_entries: BTreeMap<SwapSlot, u32>,
    swap_verdict: Vec<KernelViolation>,
    /// The generations of the objects and the owners of the last page
    /// cache check, with its verdict.
    page_cache_key: Option<(u64, u64)>,
    page_cache_verdict: Vec<KernelViolation>,
    /// The sets below as of their last diff, sorted, kept only to be
    /// diffed with the kernel's (what a frame's verdict reads of them is
    /// in its record): the frames in some object's page cache, each
    /// owned frame with its owner's kind (`None`: the owner is gone),
    /// the orphans.
    cached: Vec<Pfn>,
    owner_kind: Vec<(Pfn, Option<ObjectKind>)>,
    orphans_key: Option<u64>,
    orphans: Vec<Pfn>,
    /// The pins each process recorded at the last call (compared, not
    /// tracked: the processes change at most steps, their pins rarely),
    /// and each pinned frame with its number of pins.
    recorded_pins: BTreeMap<Pid, BTreeMap<u64, Vec<Pfn>>>,
    pins: Vec<(Pfn, u32)>,
    swap_cached_key: Option<u64>,
    /// The frames in the swap cache.
    swap_cached: Vec<Pfn>,
    folios_key: Option<u64>,
    /// The folios' heads with their orders.
    folios: Vec<(Pfn, u32)>,
    /// The folios with a problem, by head.
    folio_verdicts: BTreeMap<Pfn, KernelViolation>,
    /// Each frame's record; a frame whose record would be empty
    /// ([`FrameRecord::is_empty`]) has none.
    frames: BTreeMap<Pfn, FrameRecord>,
    /// How many frames user memory holds (records with `held`).
    held: u64,
    /// How many records have a non-empty `verdict`, and how many have
    /// `orphan_violations` (the records are walked for them only when
    /// some do).
    with_verdict: usize,
    with_orphan_violations: usize,
}

/// What the incremental check keeps of one frame (module doc): one lookup
/// gives what its verdict reads of the kept sets (all but the mapped
/// frames, which the rmap check keeps) and what its verdict was.
#[derive(Debug, Default)]
struct FrameRecord {
    /// In some object's page cache, an orphan, in the swap cache; its
    /// number of recorded pins.
    cached: bool,
    orphan: bool,
    swap_cached: bool,
    pins: u32,
    /// Owned by a page cache, with the owner's kind (`Some(None)`: the
    /// owner is gone).
    owner: Option<Option<ObjectKind>>,
    /// Held by user memory (as of its last verdict).
    held: bool,
    /// Its `Orphan` violations (0 to 2) and its other violations.
    orphan_violations: u8,
    verdict: Vec<KernelViolation>,
}

impl FrameRecord {
    /// Nothing to keep: in no kept set, not held, no violation.
    fn is_empty(&self) -> bool {
        !self.cached
            && !self.orphan
            && !self.swap_cached
            && self.pins == 0
            && self.owner.is_none()
            && !self.held
            && self.orphan_violations == 0
            && self.verdict.is_empty()
    }
}

/// Applies `f` to the record of `pfn` (a default one if it has none),
/// dropping the record if it is then empty.
fn update_record(
    frames: &mut BTreeMap<Pfn, FrameRecord>,
    pfn: Pfn,
    f: impl FnOnce(&mut FrameRecord),
) {
    match frames.entry(pfn) {
        Entry::Occupied(mut o) => {
            f(o.get_mut());
            if o.get().is_empty() {
                o.remove();
            }
        }
        Entry::Vacant(v) => {
            let mut record = FrameRecord::default();
            f(&mut record);
            if !record.is_empty() {
                v.insert(record);
            }
        }
    }
}

/// Merges two sorted runs of `(frame, value)` without repeats, calling
/// `changed` with each frame whose entry differs (in one run only, or
/// with different values) and its new value (`None`: gone).
fn diff_sorted<V: PartialEq>(
    old: impl Iterator<Item = (Pfn, V)>,
    new: impl Iterator<Item = (Pfn, V)>,
    mut changed: impl FnMut(Pfn, Option<V>),
) {
    let mut a = old.peekable();
    let mut b = new.peekable();
    loop {
        let order = match (a.peek(), b.peek()) {
            (None, None) => break,
            (Some(_), None) => Ordering::Less,
            (None, Some(_)) => Ordering::Greater,
            (Some(x), Some(y)) => x.0.cmp(&y.0),
        };
        match (
            order,
            a.next_if(|_| order.is_le()),
            b.next_if(|_| order.is_ge()),
        ) {
            (Ordering::Less, Some((pfn, _)), _) => changed(pfn, None),
            (Ordering::Greater, _, Some((pfn, new))) => changed(pfn, Some(new)),
            (Ordering::Equal, Some((_, old)), Some((pfn, new))) if old != new => {
                changed(pfn, Some(new));
            }
            _ => {}
        }
    }
}

/// A sorted set as a run of `(frame, ())` for [`diff_sorted`].
fn unit_run<'a>(set: impl IntoIterator<Item = &'a Pfn>) -> impl Iterator<Item = (Pfn, ())> {
    set.into_iter().map(|&pfn| (pfn, ()))
}

/// Each pinned frame with its number of pins, in frame order.
fn pins_of<'a>(procs: impl Iterator<Item = &'a super::proc::Process>) -> Vec<(Pfn, u32)> {
    let mut pinned: Vec<Pfn> = procs
        .flat_map(|p| p.pins.values().flatten().copied())
        .collect();
    pinned.sort_unstable();
    let mut pins: Vec<(Pfn, u32)> = Vec::new();
    for pfn in pinned {
        match pins.last_mut() {
            Some((last, n)) if *last == pfn => *n += 1,
            _ => pins.push((pfn, 1)),
        }
    }
    pins
}

/// The page caches' check: every page of every object is owned by that
/// object at that offset, and every owned page is in a page cache. The
/// objects' pages sorted by frame, merged with the owners (in frame
/// order), so no lookup per page. Also the cached frames, sorted, without
/// repeats.
fn page_cache_violations(
    objects: &BTreeMap<ObjectId, Object>,
    cache_owner: &BTreeMap<Pfn, (ObjectId, Pgoff)>,
) -> (Vec<KernelViolation>, Vec<Pfn>) {
    let mut out = Vec::new();
    let mut cache_pages: Vec<_> = objects
        .iter()
        .flat_map(|(id, o)| o.pages.iter().map(move |(pgoff, pfn)| (*pfn, *id, *pgoff)))
        .collect();
    cache_pages.sort_unstable();
    let mut owners_left = cache_owner.iter().peekable();
    let mut last: Option<Pfn> = None;
    for &(pfn, id, pgoff) in &cache_pages {
        // Owners below `pfn` that are not `last` belong to no cache.
        while let Some((p, _)) = owners_left.next_if(|(p, _)| **p < pfn) {
            if Some(*p) != last {
                out.push(KernelViolation::PageCache { pfn: *p });
            }
        }
        let owner = owners_left
            .peek()
            .filter(|(p, _)| **p == pfn)
            .map(|(_, o)| **o);
        if owner != Some((id, pgoff)) {
            out.push(KernelViolation::PageCache { pfn });
        }
        last = Some(pfn);
    }
    for (p, _) in owners_left {
        if Some(*p) != last {
            out.push(KernelViolation::PageCache { pfn: *p });
        }
    }
    let mut cached: Vec<Pfn> = cache_pages.iter().map(|&(pfn, _, _)| pfn).collect();
    cached.dedup();
    (out, cached)
}

/// The counts of one held frame (invariant 6): allocated (a tail's head
/// is looked up), map count equal to its `mappings`, pin count to the
/// pins processes `recorded`, one reference.
fn held_frame_violations(
    phys: &PhysMem,
    pfn: Pfn,
    mappings: usize,
    recorded: u32,
    out: &mut Vec<KernelViolation>,
) {
    let allocated = |meta: &FrameMeta| match meta.state() {
        FrameState::Allocated { .. } => true,
        // A missing head is a `BUG:` of the lookup.
        FrameState::Tail { .. } => matches!(
            phys.alloc.frame_status(pfn),
            Some(FrameStatus::Allocated { .. })
        ),
        _ => false,
    };
    let Some(meta) = phys.alloc.frame(pfn).filter(|m| allocated(m)) else {
        out.push(KernelViolation::NotAllocated { pfn });
        return;
    };
    if meta.mapcount as usize != mappings {
        out.push(KernelViolation::MapCount {
            pfn,
            mapcount: meta.mapcount,
            mappings,
        });
    }
    if meta.pins != recorded {
        out.push(KernelViolation::PinCount {
            pfn,
            pins: meta.pins,
            recorded,
        });
    }
    if meta.refcount != 1 {
        out.push(KernelViolation::RefCount {
            pfn,
            refcount: meta.refcount,
        });
    }
}

/// The LRU verdict of a page on a list (or isolated) at `place`: it is a
/// user page (`held`), on a list of its type (`kind`: its page cache
/// owner's, `None` for none or a gone one).
fn listed_page_violation(
    pfn: Pfn,
    place: LruPlace,
    held: bool,
    kind: Option<ObjectKind>,
    orphan: bool,
) -> Option<KernelViolation> {
    if !held {
        return Some(KernelViolation::Lru {
            pfn,
            what: "on a list but not a user page",
        });
    }
    let home = match place {
        LruPlace::On(l) | LruPlace::Isolated { home: l } => l,
    };
    let right = match kind {
        // A pinned page that lost its page cache (the object went) keeps
        // the list it had (Linux: until the last put).
        None => (!home.is_file() && home != LruList::Unevictable) || orphan,
        Some(ObjectKind::File) => home.is_file(),
        Some(_) => home == LruList::Unevictable,
    };
    (!right).then_some(KernelViolation::Lru {
        pfn,
        what: "on a list of the wrong type",
    })
}

fn unlisted(pfn: Pfn) -> KernelViolation {
    KernelViolation::Lru {
        pfn,
        what: "a user page on no list",
    }
}

/// The frames allocated against those accounted for: user frames
/// (`held`), page-table frames, deposits, the huge zero page, the frames
/// the kernel took for itself when free memory was shaped (`shape`), the
/// zero page. (A count, not a scan: machines may have billions of
/// frames.)
fn frame_count_violation(
    k: &Kernel,
    phys: &PhysMem,
    mms: &BTreeMap<MmId, Mm>,
    held: u64,
) -> Option<KernelViolation> {
    let tables: u64 = mms
        .values()
        .map(|m| m.pt.table_frames().count() as u64)
        .sum();
    let deposits: u64 = mms.values().map(|m| m.deposits.len() as u64).sum();
    let huge_zero_frames = k.huge_zero.get().map_or(0, |_| PAGES_PER_PMD);
    let accounted = held + tables + deposits + huge_zero_frames + k.kernel_held.get() + 1;
    let allocated = phys.stats().allocated_pages;
    (allocated != accounted).then_some(KernelViolation::FrameCount {
        allocated,
        accounted,
    })
}

impl Kernel {
    /// The swap device's own rules, the swap counts against the swap
    /// entries the page tables hold (`entries`), and saved tags only with
    /// MTE (invariant 7).
    fn swap_violations(
        &self,
        swap: &SwapDevice,
        entries: &BTreeMap<SwapSlot, u32>,
    ) -> Vec<KernelViolation> {
        let mut out: Vec<KernelViolation> = swap
            .check()
            .into_iter()
            .map(KernelViolation::Swap)
            .collect();
        let counted: BTreeMap<SwapSlot, u32> = swap.counts().collect();
        let slots: BTreeSet<SwapSlot> = counted.keys().chain(entries.keys()).copied().collect();
        for slot in &slots {
            let count = counted.get(slot).copied().unwrap_or(0);
            let entries = entries.get(slot).copied().unwrap_or(0);
            if count != entries {
                out.push(KernelViolation::SwapCount {
                    slot: *slot,
                    count,
                    entries,
                });
            }
        }
        if !self.has_mte() {
            for (slot, _) in swap.counts() {
                if swap.saved_tags(slot).is_some() {
                    out.push(KernelViolation::SavedTagsWithoutMte { slot });
                }
            }
        }
        out
    }

    /// The swap cache: both maps agree, each slot is in use (entries
    /// still refer to it), each page is an allocated anonymous page with
    /// the slot's data and, once its tags are set, the slot's tags.
    fn swap_cache_violations(&self, swap: &SwapDevice) -> Vec<KernelViolation> {
        let mut out = Vec::new();
        let swap_cache = self.swap_cache.borrow();
        let swap_cache_slot = self.swap_cache_slot.borrow();
        let cache_owner = self.cache_owner.borrow();
        if swap_cache.len() != swap_cache_slot.len() {
            for (slot, _) in swap_cache.iter() {
                out.push(KernelViolation::SwapCache {
                    slot: *slot,
                    what: "its two maps differ in size",
                });
            }
            // The page-to-slot entries the slot-to-page map lacks (when
            // the sizes agree, the loop below finds every disagreement:
            // each slot's page maps back to it, and the maps are then
            // inverse; when they differ, a page-to-slot entry may be the
            // only trace, e.g. beside an empty slot-to-page map).
            for (pfn, slot) in swap_cache_slot.iter() {
                if swap_cache.get(slot) != Some(pfn) {
                    out.push(KernelViolation::SwapCache {
                        slot: *slot,
                        what: "a page recorded for a slot that does not record it",
                    });
                }
            }
        }
        for (slot, pfn) in swap_cache.iter() {
            let slot = *slot;
            let mut bad = |what| out.push(KernelViolation::SwapCache { slot, what });
            if swap_cache_slot.get(pfn) != Some(&slot) {
                bad("page and slot maps disagree");
            }
            let Some(state) = swap.get(slot) else {
                bad("a page cached for a free slot");
                continue;
            };
            if cache_owner.contains_key(pfn) {
                bad("the page is also in a page cache");
            }
            let phys = self.mem.phys();
            // No buffer: all zeros.
            let bytes = phys.contents.page_bytes(*pfn);
            let same = match (&state.data, bytes) {
                (Some(data), Some(bytes)) => bytes.equals(data),
                (Some(data), None) => data.iter().all(|&b| b == 0),
                (None, Some(bytes)) => bytes.first_nonzero().is_none(),
                (None, None) => true,
            };
            if !same {
                bad("the page's data differs from the slot's");
            }
            drop(phys);
            if let Some(saved) = &state.tags {
                let now = if self.mem.page_mte_tagged(*pfn) {
                    self.mem.read_page_tags(*pfn).ok()
                } else {
                    self.restored_tags.borrow().get(pfn).cloned()
                };
                if now.as_deref().is_some_and(|t| t != &saved[..]) {
                    bad("the page's tags differ from the slot's saved tags");
                }
            }
        }
        out
    }

    /// Restored tags wait for a mapped (or swap cached, or orphaned: a
    /// page pinned when its last mapping went keeps them until it is
    /// freed, as Linux keeps them with the folio) page whose tags are not
    /// initialised yet.
    fn restored_tags_violations(
        &self,
        mapped: impl Fn(&Pfn) -> bool,
        swap_cached: impl Fn(&Pfn) -> bool,
        orphan: impl Fn(&Pfn) -> bool,
    ) -> Vec<KernelViolation> {
        let mut out = Vec::new();
        for pfn in self.restored_tags.borrow().keys() {
            if !mapped(pfn) && !swap_cached(pfn) && !orphan(pfn) {
                out.push(KernelViolation::RestoredTags {
                    pfn: *pfn,
                    what: "not mapped",
                });
            } else if self.mem.page_mte_tagged(*pfn) {
                out.push(KernelViolation::RestoredTags {
                    pfn: *pfn,
                    what: "tagged already",
                });
            }
        }
        out
    }

    /// An orphan is neither mapped nor cached nor in the swap cache, and
    /// pinned.
    fn orphan_violations(
        &self,
        mapped: impl Fn(&Pfn) -> bool,
        cached: impl Fn(&Pfn) -> bool,
        pinned: impl Fn(&Pfn) -> bool,
        swap_cached: impl Fn(&Pfn) -> bool,
    ) -> Vec<KernelViolation> {
        let mut out = Vec::new();
        for pfn in self.orphans.borrow().iter() {
            if mapped(pfn) || cached(pfn) || !pinned(pfn) {
                out.push(KernelViolation::Orphan { pfn: *pfn });
            }
            if swap_cached(pfn) {
                out.push(KernelViolation::Orphan { pfn: *pfn });
            }
        }
        out
    }

    /// The frame part of the full checker (module doc); `swap_entries`
    /// are the swap entries per slot the page tables hold, `mapped` the
    /// frames they map (sorted, without repeats).
    pub(super) fn frame_violations(
        &self,
        swap_entries: &BTreeMap<SwapSlot, u32>,
        mapped: &[Pfn],
    ) -> Vec<KernelViolation> {
        let procs = self.procs.borrow();
        let mms = self.mms.borrow();
        let rmap = self.rmap.borrow();
        let objects = self.objects.borrow();
        let cache_owner = self.cache_owner.borrow();
        let orphans = self.orphans.borrow();
        let swap = self.swap.borrow();
        let is_mapped = |pfn: &Pfn| mapped.binary_search(pfn).is_ok();

        let mut out = self.swap_violations(&swap, swap_entries);
        out.extend(self.swap_cache_violations(&swap));
        let cached_swap: BTreeSet<Pfn> = self.swap_cache_slot.borrow().keys().copied().collect();
        out.extend(self.restored_tags_violations(
            is_mapped,
            |pfn| cached_swap.contains(pfn),
            |pfn| orphans.contains(pfn),
        ));
        let (page_cache, cached) = page_cache_violations(&objects, &cache_owner);
        out.extend(page_cache);

        // Multi-size THP folios: every page consistent with the head.
        for (&head, &order) in self.folios.borrow().iter() {
            if let Some(what) = self.folio_problem(head, order) {
                out.push(KernelViolation::Folio { head, order, what });
            }
        }

        // Pins recorded by processes, and orphans.
        let pins = pins_of(procs.values());
        let pinned_at = |pfn: &Pfn| pins.binary_search_by_key(pfn, |&(p, _)| p).is_ok();
        out.extend(self.orphan_violations(
            is_mapped,
            |pfn| cached.binary_search(pfn).is_ok(),
            pinned_at,
            |pfn| cached_swap.contains(pfn),
        ));

        // The held frames: the mapped ones (most of them) merged with the
        // others, sorted.
        let mut others: Vec<Pfn> = cached
            .iter()
            .chain(orphans.iter())
            .chain(pins.iter().map(|(pfn, _)| pfn))
            .chain(cached_swap.iter())
            .copied()
            .collect();
        others.sort_unstable();
        let held = super::check::merge_dedup(mapped, &others);

        // LRU membership: every held page on one list of its type (or
        // isolated), nothing else on any. The pages on lists, `held` and
        // the page caches' owners are all in frame order: one merge.
        let lru = self.lru.borrow();
        if !lru.consistent() {
            out.push(KernelViolation::Lru {
                pfn: self.mem.zero_page(),
                what: "the lists and the places disagree",
            });
        }
        let mut held_left = held.iter().copied().peekable();
        let mut owners = cache_owner.iter().peekable();
        for (pfn, place) in lru.all() {
            while let Some(h) = held_left.next_if(|h| *h < pfn) {
                out.push(unlisted(h));
            }
            let is_held = held_left.next_if_eq(&pfn).is_some();
            while owners.next_if(|(p, _)| **p < pfn).is_some() {}
            let kind = owners
                .peek()
                .filter(|(p, _)| **p == pfn)
                .and_then(|(_, (o, _))| objects.get(o))
                .map(|o| o.kind);
            out.extend(listed_page_violation(
                pfn,
                place,
                is_held,
                kind,
                orphans.contains(&pfn),
            ));
        }
        out.extend(held_left.map(unlisted));

        // Counts of every held frame (invariant 6): the rmap's counts and
        // the pins joined with `held` (all in frame order).
        let phys = self.mem.phys();
        let mut counts = rmap.iter().map(|(pfn, list)| (pfn, list.len())).peekable();
        let mut pins_left = pins.iter().peekable();
        for &pfn in &held {
            while counts.next_if(|(p, _)| *p < pfn).is_some() {}
            let mappings = counts.next_if(|(p, _)| *p == pfn).map_or(0, |(_, n)| n);
            while pins_left.next_if(|(p, _)| *p < pfn).is_some() {}
            let recorded = pins_left.next_if(|(p, _)| *p == pfn).map_or(0, |&(_, n)| n);
            held_frame_violations(&phys, pfn, mappings, recorded, &mut out);
        }
        out.extend(frame_count_violation(self, &phys, &mms, held.len() as u64));
        out
    }

    /// [`Self::frame_violations`] by the incremental checker (module
    /// doc): `want` are the mappings the page tables record per frame
    /// (its keys: the mapped frames), `rmap_rechecked` the frames whose
    /// rmap list or recorded mappings changed since the last call
    /// (`None`: any frame). Called right after
    /// [`crate::mem::Memory::check_incremental`].
    pub(super) fn frame_violations_incremental(
        &self,
        state: &mut FrameCheckState,
        swap_entries: &BTreeMap<SwapSlot, u32>,
        want: &BTreeMap<Pfn, Vec<RmapEntry>>,
        rmap_rechecked: Option<&[Pfn]>,
    ) -> Vec<KernelViolation> {
        let meta_changed = self.mem.rechecked_frames();
        let lru_changed = self.lru.borrow_mut().take_changed();
        let all = !state.primed
            || meta_changed.is_none()
            || rmap_rechecked.is_none()
            || lru_changed.is_none();
        // Every frame whose verdict may have changed: those whose
        // mappings or LRU place changed, and those whose metadata changed
        // while they were held (a frame's metadata matters only while it
        // is held, and one that became held is here through the set it
        // entered: most frames the memory layer rechecks are no user
        // page).
        let mut candidates: Vec<Pfn> = Vec::new();
        candidates.extend(
            meta_changed
                .iter()
                .flatten()
                .filter(|pfn| state.frames.get(pfn).is_some_and(|r| r.held)),
        );
        candidates.extend(rmap_rechecked.iter().copied().flatten());
        candidates.extend(lru_changed.iter().flatten());

        // Swap counts.
        let swap = self.swap.borrow();
        if state.swap_key != Some(self.swap.generation()) || state.swap_entries != *swap_entries {
            state.swap_verdict = self.swap_violations(&swap, swap_entries);
            state.swap_key = Some(self.swap.generation());
            state.swap_entries.clone_from(swap_entries);
        }
        let mut out = state.swap_verdict.clone();

        // The kept sets, diffed with the kernel's where their generations
        // moved; each frame that entered or left one (or whose owner's
        // kind changed) has its record updated and is a candidate.
        let frames = &mut state.frames;

        // Page caches, and the cached frames and owners' kinds.
        let page_cache_key = (self.objects.generation(), self.cache_owner.generation());
        if state.page_cache_key != Some(page_cache_key) {
            let objects = self.objects.borrow();
            let cache_owner = self.cache_owner.borrow();
            let (verdict, cached) = page_cache_violations(&objects, &cache_owner);
            state.page_cache_verdict = verdict;
            diff_sorted(unit_run(&state.cached), unit_run(&cached), |pfn, now| {
                update_record(frames, pfn, |r| r.cached = now.is_some());
                candidates.push(pfn);
            });
            state.cached = cached;
            let owner_kind: Vec<(Pfn, Option<ObjectKind>)> = cache_owner
                .iter()
                .map(|(pfn, (o, _))| (*pfn, objects.get(o).map(|o| o.kind)))
                .collect();
            diff_sorted(
                state.owner_kind.iter().copied(),
                owner_kind.iter().copied(),
                |pfn, now| {
                    update_record(frames, pfn, |r| r.owner = now);
                    candidates.push(pfn);
                },
            );
            state.owner_kind = owner_kind;
            state.page_cache_key = Some(page_cache_key);
        }
        out.extend(state.page_cache_verdict.iter().cloned());

        // Orphans, pins, the swap cache's frames.
        if state.orphans_key != Some(self.orphans.generation()) {
            let orphans = self.orphans.borrow();
            diff_sorted(unit_run(&state.orphans), unit_run(&*orphans), |pfn, now| {
                update_record(frames, pfn, |r| r.orphan = now.is_some());
                candidates.push(pfn);
            });
            state.orphans.clear();
            state.orphans.extend(orphans.iter());
            state.orphans_key = Some(self.orphans.generation());
        }
        let procs = self.procs.borrow();
        let pins_changed = procs.len() != state.recorded_pins.len()
            || procs
                .iter()
                .zip(&state.recorded_pins)
                .any(|((pid, p), (was_pid, was))| pid != was_pid || p.pins != *was);
        if pins_changed {
            let pins = pins_of(procs.values());
            diff_sorted(
                state.pins.iter().copied(),
                pins.iter().copied(),
                |pfn, now| {
                    update_record(frames, pfn, |r| r.pins = now.unwrap_or(0));
                    candidates.push(pfn);
                },
            );
            state.pins = pins;
            state.recorded_pins = procs
                .iter()
                .map(|(pid, p)| (*pid, p.pins.clone()))
                .collect();
        }
        drop(procs);
        if state.swap_cached_key != Some(self.swap_cache_slot.generation()) {
            let swap_cache_slot = self.swap_cache_slot.borrow();
            diff_sorted(
                unit_run(&state.swap_cached),
                unit_run(swap_cache_slot.keys()),
                |pfn, now| {
                    update_record(frames, pfn, |r| r.swap_cached = now.is_some());
                    candidates.push(pfn);
                },
            );
            state.swap_cached.clear();
            state.swap_cached.extend(swap_cache_slot.keys());
            state.swap_cached_key = Some(self.swap_cache_slot.generation());
        }

        // Folios: those that changed, and those a frame whose metadata or
        // mappings changed lies in (what a folio's verdict reads).
        let mut heads: Vec<Pfn> = Vec::new();
        if state.folios_key != Some(self.folios.generation()) {
            let folios = self.folios.borrow();
            diff_sorted(
                state.folios.iter().copied(),
                folios.iter().map(|(&head, &order)| (head, order)),
                |head, _| heads.push(head),
            );
            state.folios.clear();
            state
                .folios
                .extend(folios.iter().map(|(&head, &order)| (head, order)));
            state.folios_key = Some(self.folios.generation());
        }
        let folio_order = |head: Pfn| {
            state
                .folios
                .binary_search_by_key(&head, |&(h, _)| h)
                .ok()
                .map(|i| state.folios[i].1)
        };
        if all {
            heads.extend(state.folios.iter().map(|&(head, _)| head));
            heads.extend(state.folio_verdicts.keys());
        } else if !state.folios.is_empty() {
            let changed = meta_changed
                .iter()
                .flatten()
                .chain(rmap_rechecked.iter().copied().flatten());
            for pfn in changed {
                let below = state.folios.partition_point(|&(head, _)| head <= *pfn);
                if let Some(&(head, order)) = below.checked_sub(1).map(|i| &state.folios[i])
                    && pfn.as_u64() - head.as_u64() < 1 << order
                {
                    heads.push(head);
                }
            }
        }
        heads.sort_unstable();
        heads.dedup();
        for head in heads {
            let verdict = folio_order(head).and_then(|order| {
                self.folio_problem(head, order)
                    .map(|what| KernelViolation::Folio { head, order, what })
            });
            match verdict {
                Some(v) => state.folio_verdicts.insert(head, v),
                None => state.folio_verdicts.remove(&head),
            };
        }
        out.extend(state.folio_verdicts.values().cloned());

        // The frames' verdicts, each from the frame's record, whether it
        // is mapped, its rmap list, metadata and LRU place.
        let lru_consistent = self.lru.borrow_mut().consistent_incremental();
        let lru = self.lru.borrow();
        if all {
            candidates.extend(want.keys());
            candidates.extend(lru.all().map(|(pfn, _)| pfn));
            // Every frame in a kept set, held, or with a verdict.
            candidates.extend(state.frames.keys());
        }
        candidates.sort_unstable();
        candidates.dedup();
        let rmap = self.rmap.borrow();
        let phys = self.mem.phys();
        for pfn in candidates {
            let mapped = want.contains_key(&pfn);
            let entry = state.frames.entry(pfn);
            let (cached, orphan, swap_cached, pins, owner) = match &entry {
                Entry::Occupied(o) => {
                    let r = o.get();
                    (r.cached, r.orphan, r.swap_cached, r.pins, r.owner)
                }
                Entry::Vacant(_) => (false, false, false, 0, None),
            };
            let held = mapped || cached || orphan || pins > 0 || swap_cached;
            let mut verdict = Vec::new();
            if held {
                let mappings = rmap.list(pfn).map_or(0, <[RmapEntry]>::len);
                held_frame_violations(&phys, pfn, mappings, pins, &mut verdict);
            }
            match lru.place(pfn) {
                Some(place) => verdict.extend(listed_page_violation(
                    pfn,
                    place,
                    held,
                    owner.flatten(),
                    orphan,
                )),
                None if held => verdict.push(unlisted(pfn)),
                None => {}
            }
            // An orphan is neither mapped nor cached nor in the swap
            // cache, and pinned.
            let orphan_violations = if orphan {
                u8::from(mapped || cached || pins == 0) + u8::from(swap_cached)
            } else {
                0
            };
            let record = match entry {
                Entry::Occupied(o) => o,
                Entry::Vacant(v) => {
                    if !held && verdict.is_empty() {
                        continue;
                    }
                    v.insert_entry(FrameRecord::default())
                }
            };
            let mut record = record;
            let r = record.get_mut();
            state.held = state.held + u64::from(held) - u64::from(r.held);
            state.with_verdict = state.with_verdict + usize::from(!verdict.is_empty())
                - usize::from(!r.verdict.is_empty());
            state.with_orphan_violations = state.with_orphan_violations
                + usize::from(orphan_violations > 0)
                - usize::from(r.orphan_violations > 0);
            r.held = held;
            r.verdict = verdict;
            r.orphan_violations = orphan_violations;
            if r.is_empty() {
                record.remove();
            }
        }
        if state.with_verdict > 0 {
            out.extend(
                state
                    .frames
                    .values()
                    .flat_map(|r| r.verdict.iter())
                    .cloned(),
            );
        }
        if !lru_consistent {
            out.push(KernelViolation::Lru {
                pfn: self.mem.zero_page(),
                what: "the lists and the places disagree",
            });
        }
        drop(lru);
        drop(rmap);

        // The small sets, derived at every call.
        out.extend(self.swap_cache_violations(&swap));
        let record = |pfn: &Pfn| state.frames.get(pfn);
        out.extend(self.restored_tags_violations(
            |pfn| want.contains_key(pfn),
            |pfn| record(pfn).is_some_and(|r| r.swap_cached),
            |pfn| record(pfn).is_some_and(|r| r.orphan),
        ));
        // The orphans' verdicts, from the loop above.
        if state.with_orphan_violations > 0 {
            for (&pfn, r) in &state.frames {
                for _ in 0..r.orphan_violations {
                    out.push(KernelViolation::Orphan { pfn });
                }
            }
        }
        out.extend(frame_count_violation(
            self,
            &phys,
            &self.mms.borrow(),
            state.held,
        ));
        state.primed = true;
        out
    }
}
