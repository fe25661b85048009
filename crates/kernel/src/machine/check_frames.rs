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
//!   `PinCount`, `RefCount`; its LRU membership) reads its metadata, its
//!   rmap list, whether it is mapped, cached, an orphan, pinned or in the
//!   swap cache, its LRU place, and its page cache owner's kind. It is
//!   recomputed for the held frames whose metadata changed
//!   ([`crate::mem::Memory::rechecked_frames`], closed over allocated
//!   blocks; a frame that is not held has no verdict that reads it), whose rmap list or recorded mappings changed (the rmap
//!   check's recomputed frames), whose LRU place changed
//!   ([`super::lru::Lru::take_changed`]), and for the frames that entered
//!   or left one of the other sets: those sets are kept here and diffed
//!   against the kernel's when their [`super::tracked::Tracked`]
//!   generation moved (they are small but for the page caches, whose
//!   diff runs only when a page cache or an owner changed); the pins the
//!   processes record are compared with a kept copy at every call (a
//!   process changes at most steps, its pins rarely).
//! - the swap counts are recomputed when the swap device or the swap
//!   entries the page tables hold changed; the page caches' bookkeeping
//!   when the objects or the owners did; a folio's verdict when the
//!   folios changed or a frame of the folio is recomputed above.
//! - the LRU's own bookkeeping (lists and places agree) by
//!   [`super::lru::Lru::consistent_incremental`], from the LRU's second
//!   log.
//! - the swap cache, restored tags and orphans (a handful of pages each)
//!   and the frame count (a sum kept with the held set) are derived at
//!   every call.
//!
//! Linux counterparts: `CONFIG_DEBUG_VM`'s `VM_BUG_ON_PAGE` on map and
//! reference counts, `swap_map[]` accounting, the page cache's
//! `page->mapping`/`index`.

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
    /// The frames in some object's page cache.
    cached: BTreeSet<Pfn>,
    /// Each owned frame with its owner's kind (`None`: the owner is gone).
    owner_kind: BTreeMap<Pfn, Option<ObjectKind>>,
    orphans_key: Option<u64>,
    orphans: BTreeSet<Pfn>,
    /// The pins each process recorded at the last call (compared, not
    /// tracked: the processes change at most steps, their pins rarely),
    /// and each pinned frame with its number of pins.
    recorded_pins: BTreeMap<Pid, BTreeMap<u64, Vec<Pfn>>>,
    pins: BTreeMap<Pfn, u32>,
    swap_cached_key: Option<u64>,
    /// The frames in the swap cache.
    swap_cached: BTreeSet<Pfn>,
    folios_key: Option<u64>,
    folios: BTreeMap<Pfn, u32>,
    /// The folios with a problem, by head.
    folio_verdicts: BTreeMap<Pfn, KernelViolation>,
    /// The frames user memory holds.
    held: BTreeSet<Pfn>,
    /// The frames with a non-empty verdict, with it.
    verdicts: BTreeMap<Pfn, Vec<KernelViolation>>,
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

/// The keys of `old` and `new` whose entries differ (in one only, or
/// with different values), appended to `out`.
fn diff_keys<V: PartialEq>(old: &BTreeMap<Pfn, V>, new: &BTreeMap<Pfn, V>, out: &mut Vec<Pfn>) {
    let mut a = old.iter().peekable();
    let mut b = new.iter().peekable();
    loop {
        match (a.peek(), b.peek()) {
            (Some(x), Some(y)) if x.0 == y.0 => {
                if x.1 != y.1 {
                    out.push(*x.0);
                }
                a.next();
                b.next();
            }
            (Some(x), Some(y)) if x.0 < y.0 => {
                out.push(*x.0);
                a.next();
            }
            (Some(x), None) => {
                out.push(*x.0);
                a.next();
            }
            (_, Some(y)) => {
                out.push(*y.0);
                b.next();
            }
            (None, None) => break,
        }
    }
}

fn diff_sets(old: &BTreeSet<Pfn>, new: &BTreeSet<Pfn>, out: &mut Vec<Pfn>) {
    out.extend(old.symmetric_difference(new).copied());
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
        // The frames whose metadata or mappings changed (what a folio's
        // verdict reads), then every frame whose verdict may have changed:
        // those whose mappings or LRU place changed, and those whose
        // metadata changed while they were held (a frame's metadata
        // matters only while it is held, and one that became held is
        // here through the set it entered: most frames the memory layer
        // rechecks are no user page).
        let mut changed: Vec<Pfn> = Vec::new();
        changed.extend(meta_changed.iter().flatten());
        changed.extend(rmap_rechecked.iter().copied().flatten());
        let mut candidates: Vec<Pfn> = Vec::new();
        candidates.extend(
            meta_changed
                .iter()
                .flatten()
                .filter(|pfn| state.held.contains(pfn)),
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

        // Page caches, and the cached frames and owners' kinds.
        let page_cache_key = (self.objects.generation(), self.cache_owner.generation());
        if state.page_cache_key != Some(page_cache_key) {
            let objects = self.objects.borrow();
            let cache_owner = self.cache_owner.borrow();
            let (verdict, cached) = page_cache_violations(&objects, &cache_owner);
            state.page_cache_verdict = verdict;
            let cached: BTreeSet<Pfn> = cached.into_iter().collect();
            diff_sets(&state.cached, &cached, &mut candidates);
            state.cached = cached;
            let owner_kind: BTreeMap<Pfn, Option<ObjectKind>> = cache_owner
                .iter()
                .map(|(pfn, (o, _))| (*pfn, objects.get(o).map(|o| o.kind)))
                .collect();
            diff_keys(&state.owner_kind, &owner_kind, &mut candidates);
            state.owner_kind = owner_kind;
            state.page_cache_key = Some(page_cache_key);
        }
        out.extend(state.page_cache_verdict.iter().cloned());

        // Orphans, pins, the swap cache's frames.
        if state.orphans_key != Some(self.orphans.generation()) {
            let orphans = self.orphans.borrow().clone();
            diff_sets(&state.orphans, &orphans, &mut candidates);
            state.orphans = orphans;
            state.orphans_key = Some(self.orphans.generation());
        }
        let procs = self.procs.borrow();
        let pins_changed = procs.len() != state.recorded_pins.len()
            || procs
                .iter()
                .zip(&state.recorded_pins)
                .any(|((pid, p), (was_pid, was))| pid != was_pid || p.pins != *was);
        if pins_changed {
            let pins: BTreeMap<Pfn, u32> = pins_of(procs.values()).into_iter().collect();
            diff_keys(&state.pins, &pins, &mut candidates);
            state.pins = pins;
            state.recorded_pins = procs
                .iter()
                .map(|(pid, p)| (*pid, p.pins.clone()))
                .collect();
        }
        drop(procs);
        if state.swap_cached_key != Some(self.swap_cache_slot.generation()) {
            let swap_cached: BTreeSet<Pfn> =
                self.swap_cache_slot.borrow().keys().copied().collect();
            diff_sets(&state.swap_cached, &swap_cached, &mut candidates);
            state.swap_cached = swap_cached;
            state.swap_cached_key = Some(self.swap_cache_slot.generation());
        }

        // Folios: those that changed, and those a changed frame lies in.
        let folios_moved = state.folios_key != Some(self.folios.generation());
        let mut heads: Vec<Pfn> = Vec::new();
        if folios_moved {
            let folios = self.folios.borrow().clone();
            diff_keys(&state.folios, &folios, &mut heads);
            state.folios = folios;
            state.folios_key = Some(self.folios.generation());
        }
        if all {
            heads.extend(state.folios.keys());
            heads.extend(state.folio_verdicts.keys());
        } else if !state.folios.is_empty() {
            for pfn in &changed {
                if let Some((&head, &order)) = state.folios.range(..=*pfn).next_back()
                    && pfn.as_u64() - head.as_u64() < 1 << order
                {
                    heads.push(head);
                }
            }
        }
        heads.sort_unstable();
        heads.dedup();
        for head in heads {
            let verdict = state.folios.get(&head).and_then(|&order| {
                self.folio_problem(head, order)
                    .map(|what| KernelViolation::Folio { head, order, what })
            });
            match verdict {
                Some(v) => state.folio_verdicts.insert(head, v),
                None => state.folio_verdicts.remove(&head),
            };
        }
        out.extend(state.folio_verdicts.values().cloned());

        // The frames' verdicts.
        let lru_consistent = self.lru.borrow_mut().consistent_incremental();
        let lru = self.lru.borrow();
        if all {
            candidates.extend(want.keys());
            candidates.extend(&state.cached);
            candidates.extend(&state.orphans);
            candidates.extend(state.pins.keys());
            candidates.extend(&state.swap_cached);
            candidates.extend(lru.all().map(|(pfn, _)| pfn));
            candidates.extend(&state.held);
            candidates.extend(state.verdicts.keys());
        }
        candidates.sort_unstable();
        candidates.dedup();
        let rmap = self.rmap.borrow();
        let phys = self.mem.phys();
        for pfn in candidates {
            let held = want.contains_key(&pfn)
                || state.cached.contains(&pfn)
                || state.orphans.contains(&pfn)
                || state.pins.contains_key(&pfn)
                || state.swap_cached.contains(&pfn);
            let mut verdict = Vec::new();
            if held {
                state.held.insert(pfn);
                let mappings = rmap.list(pfn).map_or(0, <[RmapEntry]>::len);
                let recorded = state.pins.get(&pfn).copied().unwrap_or(0);
                held_frame_violations(&phys, pfn, mappings, recorded, &mut verdict);
            } else {
                state.held.remove(&pfn);
            }
            match lru.place(pfn) {
                Some(place) => verdict.extend(listed_page_violation(
                    pfn,
                    place,
                    held,
                    state.owner_kind.get(&pfn).copied().flatten(),
                    state.orphans.contains(&pfn),
                )),
                None if held => verdict.push(unlisted(pfn)),
                None => {}
            }
            if verdict.is_empty() {
                state.verdicts.remove(&pfn);
            } else {
                state.verdicts.insert(pfn, verdict);
            }
        }
        out.extend(state.verdicts.values().flatten().cloned());
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
        out.extend(self.restored_tags_violations(
            |pfn| want.contains_key(pfn),
            |pfn| state.swap_cached.contains(pfn),
            |pfn| state.orphans.contains(pfn),
        ));
        out.extend(self.orphan_violations(
            |pfn| want.contains_key(pfn),
            |pfn| state.cached.contains(pfn),
            |pfn| state.pins.contains_key(pfn),
            |pfn| state.swap_cached.contains(pfn),
        ));
        out.extend(frame_count_violation(
            self,
            &phys,
            &self.mms.borrow(),
            state.held.len() as u64,
        ));
        state.primed = true;
        out
    }
}
