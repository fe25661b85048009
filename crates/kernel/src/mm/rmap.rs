//! The reverse map: from a frame to every (address space, address) that
//! maps it, for migration (retarget every mapping of a moved page) and for
//! the checker (a frame's map count must equal its mappings).
//!
//! Owns [`Rmap`]: per frame, a sorted list of [`RmapEntry`]s (kept in
//! chunks of consecutive frames, a single entry inline). A PTE mapping
//! is keyed by the frame it maps; a PMD block is recorded once for each of
//! its 512 frames (at the block's start, [`MapLevel::Pmd`]), so that a
//! frame's list length is Linux's `page_mapcount()` (`_mapcount` plus the
//! folio's `entire_mapcount`) whatever mixes of PTE and PMD mappings exist.
//!
//! # Simplification
//! Linux finds the mappings of a page without storing them per page: an
//! anonymous page points to its anon_vma, whose interval tree of VMAs (over
//! the anon_vma chains of every forked copy) gives each candidate address
//! from `page->index`; a file page points to its `address_space`, whose
//! `i_mmap` tree does the same (`rmap_walk_anon()`, `rmap_walk_file()`).
//! Each candidate is then confirmed by walking its page table
//! (`page_vma_mapped_walk()`). A per-frame list of the confirmed mappings
//! gives the same answers for every walk the model needs (migration,
//! unmapping for swap-out, map counts), and is cheaper to check.
//!
//! # What is recorded
//! Every present or awaiting-tag-storage leaf that maps a frame with a
//! `struct page` (non-special), at either level, including `PROT_NONE`
//! entries: Linux keeps those pages mapped and counted. Special entries (the
//! zero page, the huge zero page) are not recorded: Linux does not count
//! their mappings (`vm_normal_page()` returns NULL for them). Swap entries
//! map no frame.
//!
//! # Invariants
//! An entry appears at most once per frame; lists are sorted and never
//! empty (a frame without mappings has no list). [`check_against`] compares
//! the map with page tables.
//!
//! # Change log
//! Every update ([`Rmap::add`], [`Rmap::remove`], [`Rmap::move_frame`])
//! logs the frames whose lists it touches before changing them; the
//! incremental checker takes the log ([`Rmap::take_touched`]) and compares
//! only those frames again ([`check_frame`]). A log no checker takes is
//! dropped past a bound, and the taker then rechecks every frame. An
//! update path added here must log too: a frame changed without a log
//! entry is not rechecked until its mappings change.

use std::collections::BTreeMap;

use mte::{Pfn, VirtAddr};
use thiserror::Error;

use crate::mm::MmId;
use crate::mm::layout::PAGES_PER_PMD;
use crate::mm::pgtable::{Block, LeafEntry, PageTable, Pte};

/// The level of a mapping.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Debug)]
pub enum MapLevel {
    /// A PTE mapping one page.
    Pte,
    /// A PMD block mapping 512 pages from the keyed frame.
    Pmd,
}

/// One mapping of a frame: in address space `mm`, at `va` (for a block,
/// its 2 MiB-aligned start).
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Debug)]
pub struct RmapEntry {
    pub mm: MmId,
    pub va: VirtAddr,
    pub level: MapLevel,
}

/// Why an rmap update failed (each is a bug of the caller's bookkeeping,
/// reported rather than panicking so the checker can show it).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Error)]
pub enum RmapError {
    #[error("{pfn} is already mapped by {entry:?}")]
    Duplicate { pfn: Pfn, entry: RmapEntry },
    #[error("{pfn} is not mapped by {entry:?}")]
    Missing { pfn: Pfn, entry: RmapEntry },
    #[error("migration target {pfn} already has mappings")]
    TargetInUse { pfn: Pfn },
}

/// The reverse map of one machine.
#[derive(Clone, Debug, Default)]
pub struct Rmap {
    /// The lists, in chunks of [`CHUNK_FRAMES`] frames keyed by the
    /// chunk's number (frame / [`CHUNK_FRAMES`]): an update or a look-up
    /// searches the few chunk keys, not one key per mapped frame, and a
    /// frame mapped once (most are) holds its entry inline. A chunk exists
    /// while one of its frames has a list.
    chunks: BTreeMap<u64, Chunk>,
    /// Taken afresh by every update ([`crate::mm::generation`]); 0 for
    /// an rmap never updated.
    generation: u64,
    /// The change log: every frame whose list an update touched since the
    /// incremental checker last took the log ([`Self::take_touched`]), with
    /// repeats. Every update appends here before it changes a list.
    touched: Vec<Pfn>,
    /// The log outgrew [`TOUCHED_MAX`] (no checker took it) and was
    /// dropped: the next taker must recheck every frame.
    touched_overflow: bool,
}

/// Frames per chunk of [`Rmap::chunks`]: small enough that a chunk
/// (2 KiB) costs little for a machine of a few thousand frames, large
/// enough that a block's 512 frames take 8 chunks.
const CHUNK_FRAMES: u64 = 64;

/// The lists of [`CHUNK_FRAMES`] consecutive frames.
#[derive(Clone, Debug)]
struct Chunk {
    /// Per frame of the chunk, its list (`None`: no list).
    lists: Box<[Option<List>]>,
    /// How many of `lists` are `Some` (the chunk goes at 0).
    used: u32,
}

impl Chunk {
    fn new() -> Self {
        Chunk {
            lists: vec![None; CHUNK_FRAMES as usize].into_boxed_slice(),
            used: 0,
        }
    }
}

/// One frame's list: a single entry inline (no allocation for a frame
/// mapped once), or two and more, sorted. `Many` never holds fewer than
/// two (a removal down to one goes back to `One`, so the frame costs no
/// allocation again); an empty one, a bug of an update, is what the
/// checker reports as [`RmapViolation::BadList`].
#[derive(Clone, Debug)]
enum List {
    One(RmapEntry),
    Many(Vec<RmapEntry>),
}

impl List {
    fn as_slice(&self) -> &[RmapEntry] {
        match self {
            List::One(e) => core::slice::from_ref(e),
            List::Many(list) => list,
        }
    }
}

/// The chunk of `pfn` and its index there.
fn split(pfn: Pfn) -> (u64, usize) {
    (
        pfn.as_u64() / CHUNK_FRAMES,
        (pfn.as_u64() % CHUNK_FRAMES) as usize,
    )
}

/// Entries the change log holds before it is dropped for a flag (a run
/// that never checks keeps bounded memory).
const TOUCHED_MAX: usize = 1 << 16;

impl Rmap {
    pub fn new() -> Self {
        Self::default()
    }

    /// The generation of the map now: equal numbers, equal maps.
    pub fn generation(&self) -> u64 {
        self.generation
    }

    /// Logs that `pfn`'s list is about to change (see `touched`).
    fn touch(&mut self, pfn: Pfn) {
        self.generation = super::generation::next();
        if self.touched.len() >= TOUCHED_MAX {
            self.touched.clear();
            self.touched_overflow = true;
        }
        if !self.touched_overflow {
            self.touched.push(pfn);
        }
    }

    /// The frames whose lists changed since the last call, sorted and
    /// without repeats; `None` when the log was dropped (every frame may
    /// have changed). Empties the log: one taker only, the incremental
    /// checker (`crate::machine::check`).
    pub fn take_touched(&mut self) -> Option<Vec<Pfn>> {
        let mut touched = core::mem::take(&mut self.touched);
        if core::mem::take(&mut self.touched_overflow) {
            return None;
        }
        touched.sort_unstable();
        touched.dedup();
        Some(touched)
    }

    /// The stored list of `pfn`.
    fn slot(&self, pfn: Pfn) -> Option<&List> {
        let (chunk, at) = split(pfn);
        self.chunks.get(&chunk)?.lists[at].as_ref()
    }

    /// The list of `pfn` as stored (`None`: no list), for the checker,
    /// which tells an empty list (a bug) from none.
    pub fn list(&self, pfn: Pfn) -> Option<&[RmapEntry]> {
        self.slot(pfn).map(List::as_slice)
    }

    /// Records that `entry` maps `pfn` (Linux `folio_add_*_rmap_*()`).
    pub fn add(&mut self, pfn: Pfn, entry: RmapEntry) -> Result<(), RmapError> {
        self.touch(pfn);
        let (chunk, at) = split(pfn);
        let chunk = self.chunks.entry(chunk).or_insert_with(Chunk::new);
        let slot = &mut chunk.lists[at];
        match slot {
            None => {
                *slot = Some(List::One(entry));
                chunk.used += 1;
            }
            Some(List::One(e)) => {
                let e = *e;
                *slot = Some(List::Many(match entry.cmp(&e) {
                    core::cmp::Ordering::Equal => {
                        return Err(RmapError::Duplicate { pfn, entry });
                    }
                    core::cmp::Ordering::Less => vec![entry, e],
                    core::cmp::Ordering::Greater => vec![e, entry],
                }));
            }
            Some(List::Many(list)) => match list.binary_search(&entry) {
                Ok(_) => return Err(RmapError::Duplicate { pfn, entry }),
                Err(at) => list.insert(at, entry),
            },
        }
        Ok(())
    }

    /// Forgets that `entry` maps `pfn` (Linux `folio_remove_rmap_*()`).
    pub fn remove(&mut self, pfn: Pfn, entry: RmapEntry) -> Result<(), RmapError> {
        self.touch(pfn);
        let missing = RmapError::Missing { pfn, entry };
        let (key, at) = split(pfn);
        let chunk = self.chunks.get_mut(&key).ok_or(missing)?;
        let slot = &mut chunk.lists[at];
        match slot {
            Some(List::One(e)) if *e == entry => {
                *slot = None;
                chunk.used -= 1;
                if chunk.used == 0 {
                    self.chunks.remove(&key);
                }
            }
            Some(List::Many(list)) => {
                let i = list.binary_search(&entry).map_err(|_| missing)?;
                list.remove(i);
                if let [last] = list[..] {
                    *slot = Some(List::One(last));
                }
            }
            _ => return Err(missing),
        }
        Ok(())
    }

    /// Takes the list of `pfn` out of the map.
    fn take(&mut self, pfn: Pfn) -> Option<List> {
        let (key, at) = split(pfn);
        let chunk = self.chunks.get_mut(&key)?;
        let list = chunk.lists[at].take()?;
        chunk.used -= 1;
        if chunk.used == 0 {
            self.chunks.remove(&key);
        }
        Some(list)
    }

    /// Moves every mapping of `old` to `new`, which must have none (Linux
    /// `remove_migration_ptes()` after a migration). Returns how many moved.
    pub fn move_frame(&mut self, old: Pfn, new: Pfn) -> Result<usize, RmapError> {
        self.touch(old);
        self.touch(new);
        if old == new {
            return Ok(self.count(old));
        }
        if self.slot(new).is_some() {
            return Err(RmapError::TargetInUse { pfn: new });
        }
        let Some(list) = self.take(old) else {
            return Ok(0);
        };
        let moved = list.as_slice().len();
        let (chunk, at) = split(new);
        let chunk = self.chunks.entry(chunk).or_insert_with(Chunk::new);
        chunk.lists[at] = Some(list);
        chunk.used += 1;
        Ok(moved)
    }

    /// The mappings of `pfn`, sorted by address space then address.
    pub fn mappings(&self, pfn: Pfn) -> &[RmapEntry] {
        self.list(pfn).unwrap_or(&[])
    }

    /// The number of mappings of `pfn` (Linux `folio_mapcount()` for a
    /// frame keyed here).
    pub fn count(&self, pfn: Pfn) -> usize {
        self.mappings(pfn).len()
    }

    /// Every mapped frame with its mappings, lowest frame first.
    pub fn iter(&self) -> impl Iterator<Item = (Pfn, &[RmapEntry])> {
        self.chunks.iter().flat_map(|(&chunk, c)| {
            c.lists.iter().enumerate().filter_map(move |(at, list)| {
                let pfn = Pfn::new(chunk * CHUNK_FRAMES + at as u64);
                list.as_ref().map(|l| (pfn, l.as_slice()))
            })
        })
    }

    /// The number of mappings of all frames.
    pub fn total(&self) -> usize {
        self.iter().map(|(_, l)| l.len()).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.chunks.is_empty()
    }
}

/// One disagreement between an [`Rmap`] and the page tables.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RmapViolation {
    /// A page-table leaf maps `pfn` but the rmap does not say so.
    Unrecorded { pfn: Pfn, entry: RmapEntry },
    /// The rmap records a mapping no page table has.
    Stale { pfn: Pfn, entry: RmapEntry },
    /// A frame with an empty list, or an unsorted or duplicated one.
    BadList { pfn: Pfn },
}

/// The mappings a leaf records: its first frame, how many frames, the level
/// (see the module doc); `None` for special and frameless entries.
fn recorded(leaf: LeafEntry) -> Option<(Pfn, u64, MapLevel)> {
    let (l, frames, level) = match leaf {
        LeafEntry::Pte(Pte::Present(l) | Pte::AwaitingTagStorage(l)) => (l, 1, MapLevel::Pte),
        LeafEntry::Block(Block::Present(l) | Block::AwaitingTagStorage(l)) => {
            (l, PAGES_PER_PMD, MapLevel::Pmd)
        }
        LeafEntry::Pte(Pte::None | Pte::Swap(_)) => return None,
    };
    (!l.attrs.special).then_some((l.pfn, frames, level))
}

/// The violations of one frame: `want`, the mappings the page tables
/// record for `pfn` (sorted), against `have`, its list in the rmap (`None`:
/// no list). The same as [`check_against_leaves`] reports for `pfn`; the
/// incremental checker calls it for the frames whose mappings or list
/// changed.
pub fn check_frame(pfn: Pfn, want: &[RmapEntry], have: Option<&[RmapEntry]>) -> Vec<RmapViolation> {
    let mut out = Vec::new();
    let have = match have {
        Some(list) => {
            if list.is_empty() || list.windows(2).any(|w| w[0] >= w[1]) {
                out.push(RmapViolation::BadList { pfn });
            }
            list
        }
        None => &[],
    };
    let (mut i, mut j) = (0, 0);
    loop {
        match (want.get(i), have.get(j)) {
            (Some(w), Some(h)) if w == h => {
                i += 1;
                j += 1;
            }
            (Some(w), Some(h)) if w < h => {
                out.push(RmapViolation::Unrecorded { pfn, entry: *w });
                i += 1;
            }
            (Some(w), None) => {
                out.push(RmapViolation::Unrecorded { pfn, entry: *w });
                i += 1;
            }
            (_, Some(h)) => {
                out.push(RmapViolation::Stale { pfn, entry: *h });
                j += 1;
            }
            (None, None) => break,
        }
    }
    out
}

/// The mappings `leaf` (at `va` in `mm`) records: each frame with its
/// entry (none for special and frameless entries).
pub fn leaf_mappings(
    mm: MmId,
    va: VirtAddr,
    leaf: LeafEntry,
) -> impl Iterator<Item = (Pfn, RmapEntry)> {
    let found = recorded(leaf);
    let (first, frames, level) = found.unwrap_or((Pfn::new(0), 0, MapLevel::Pte));
    (0..frames).map(move |i| (first + i, RmapEntry { mm, va, level }))
}

/// Whether two leaves at the same address record the same mappings (they
/// may differ in what the rmap does not record: permissions, access and
/// dirty bits, the tag attribute).
pub fn same_mappings(a: LeafEntry, b: LeafEntry) -> bool {
    recorded(a) == recorded(b)
}

/// Compares `rmap` with the page tables of every address space: each
/// recorded mapping must exist, and each mapping must be recorded. `spaces`
/// must name every address space the rmap refers to.
pub fn check_against<'a>(
    rmap: &Rmap,
    spaces: impl IntoIterator<Item = (MmId, &'a PageTable)>,
) -> Vec<RmapViolation> {
    let leaves: Vec<(MmId, Vec<(VirtAddr, LeafEntry)>)> = spaces
        .into_iter()
        .map(|(mm, pt)| (mm, pt.leaves(VirtAddr::ZERO, VirtAddr::MAX).collect()))
        .collect();
    check_against_leaves(rmap, leaves.iter().map(|(mm, l)| (*mm, l.as_slice())))
}

/// [`check_against`] given every leaf of each address space (in address
/// order, as [`PageTable::leaves`] yields them).
pub fn check_against_leaves<'a>(
    rmap: &Rmap,
    spaces: impl IntoIterator<Item = (MmId, &'a [(VirtAddr, LeafEntry)])>,
) -> Vec<RmapViolation> {
    let mut want: Vec<(Pfn, RmapEntry)> = Vec::new();
    for (mm, leaves) in spaces {
        for &(va, leaf) in leaves {
            if let Some((first, frames, level)) = recorded(leaf) {
                want.extend((0..frames).map(|i| (first + i, RmapEntry { mm, va, level })));
            }
        }
    }
    let mut out = Vec::new();
    for (pfn, list) in rmap.iter() {
        if list.is_empty() || list.windows(2).any(|w| w[0] >= w[1]) {
            out.push(RmapViolation::BadList { pfn });
        }
    }
    // Equal entries are identical: an unstable sort gives the same order.
    want.sort_unstable();
    let have: Vec<(Pfn, RmapEntry)> = rmap
        .iter()
        .flat_map(|(p, l)| l.iter().map(move |e| (p, *e)))
        .collect();
    let (mut i, mut j) = (0, 0);
    while i < want.len() || j < have.len() {
        match (want.get(i), have.get(j)) {
            (Some(w), Some(h)) if w == h => {
                i += 1;
                j += 1;
            }
            (Some(w), Some(h)) if w < h => {
                out.push(RmapViolation::Unrecorded {
                    pfn: w.0,
                    entry: w.1,
                });
                i += 1;
            }
            (Some(w), None) => {
                out.push(RmapViolation::Unrecorded {
                    pfn: w.0,
                    entry: w.1,
                });
                i += 1;
            }
            (_, Some(h)) => {
                out.push(RmapViolation::Stale {
                    pfn: h.0,
                    entry: h.1,
                });
                j += 1;
            }
            (None, None) => break,
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mm::layout::{PAGE_SIZE, PMD_SIZE};
    use crate::mm::pgtable::{Access, Leaf, LeafAttrs, TableFrames};
    use crate::mm::vma::tests::va;

    fn at(mm: u64, raw: u64) -> RmapEntry {
        RmapEntry {
            mm: MmId::new(mm),
            va: va(raw),
            level: MapLevel::Pte,
        }
    }

    #[test]
    fn add_move_remove() {
        let mut r = Rmap::new();
        let (p, q) = (Pfn::new(5), Pfn::new(9));
        // A COW-shared page after fork: parent and child map it.
        r.add(p, at(2, 0x1000)).unwrap();
        r.add(p, at(1, 0x1000)).unwrap();
        assert_eq!(
            r.add(p, at(1, 0x1000)),
            Err(RmapError::Duplicate {
                pfn: p,
                entry: at(1, 0x1000)
            })
        );
        assert_eq!(r.mappings(p), &[at(1, 0x1000), at(2, 0x1000)]);
        assert_eq!(r.count(p), 2);
        // Migration moves both mappings.
        assert_eq!(r.move_frame(p, q), Ok(2));
        assert_eq!(r.count(p), 0);
        assert_eq!(r.mappings(q), &[at(1, 0x1000), at(2, 0x1000)]);
        r.add(p, at(3, 0)).unwrap();
        assert_eq!(r.move_frame(q, p), Err(RmapError::TargetInUse { pfn: p }));
        r.remove(q, at(1, 0x1000)).unwrap();
        assert_eq!(
            r.remove(q, at(1, 0x1000)),
            Err(RmapError::Missing {
                pfn: q,
                entry: at(1, 0x1000)
            })
        );
        r.remove(q, at(2, 0x1000)).unwrap();
        assert_eq!(r.total(), 1);
        r.remove(p, at(3, 0)).unwrap();
        assert!(r.is_empty());
    }

    #[test]
    fn lists_across_chunks_iterate_in_frame_order_and_go_when_empty() {
        let mut r = Rmap::new();
        let last = Pfn::new(CHUNK_FRAMES - 1);
        let next = Pfn::new(CHUNK_FRAMES);
        let far = Pfn::new(7 * CHUNK_FRAMES + 3);
        r.add(far, at(1, 0)).unwrap();
        r.add(next, at(1, 0x2000)).unwrap();
        r.add(last, at(2, 0x1000)).unwrap();
        r.add(last, at(1, 0x1000)).unwrap();
        let listed: Vec<(Pfn, usize)> = r.iter().map(|(p, l)| (p, l.len())).collect();
        assert_eq!(listed, vec![(last, 2), (next, 1), (far, 1)]);
        assert_eq!(r.total(), 4);
        // Two entries down to one, then none: the frame has no list.
        r.remove(last, at(2, 0x1000)).unwrap();
        assert_eq!(r.list(last), Some(&[at(1, 0x1000)][..]));
        r.remove(last, at(1, 0x1000)).unwrap();
        assert_eq!(r.list(last), None);
        assert_eq!(
            r.remove(last, at(1, 0x1000)),
            Err(RmapError::Missing {
                pfn: last,
                entry: at(1, 0x1000)
            })
        );
        // Moving a frame's list across chunks empties the old chunk.
        assert_eq!(r.move_frame(far, last), Ok(1));
        assert_eq!(r.list(far), None);
        assert_eq!(r.chunks.len(), 2);
        r.remove(last, at(1, 0)).unwrap();
        r.remove(next, at(1, 0x2000)).unwrap();
        assert!(r.is_empty());
        assert_eq!(r.take_touched().map(|t| t.len()), Some(3));
    }

    #[test]
    fn an_emptied_list_left_in_place_is_a_bad_list() {
        let mut r = Rmap::new();
        let p = Pfn::new(3);
        r.add(p, at(1, 0)).unwrap();
        // What a removal that forgot to drop the emptied list would leave.
        let (chunk, i) = split(p);
        r.chunks.get_mut(&chunk).unwrap().lists[i] = Some(List::Many(vec![]));
        assert_eq!(
            check_against_leaves(&r, []),
            vec![RmapViolation::BadList { pfn: p }]
        );
        assert_eq!(
            check_frame(p, &[], r.list(p)),
            vec![RmapViolation::BadList { pfn: p }]
        );
    }

    struct Frames(u64);

    impl TableFrames for Frames {
        fn alloc_table(&mut self) -> Option<Pfn> {
            self.0 += 1;
            Some(Pfn::new(0x10_0000 + self.0))
        }
        fn free_table(&mut self, _: Pfn) {}
    }

    fn leaf(pfn: u64, special: bool) -> Leaf {
        Leaf {
            pfn: Pfn::new(pfn),
            attrs: LeafAttrs {
                access: Access::ReadOnly,
                tagged: false,
                special,
                young: true,
                dirty: false,
            },
        }
    }

    #[test]
    fn check_finds_unrecorded_and_stale_mappings_and_skips_special_ones() {
        let mut f = Frames(0);
        let mut a = PageTable::new(&mut f).unwrap();
        let mut b = PageTable::new(&mut f).unwrap();
        a.set_pte(va(PAGE_SIZE), Pte::Present(leaf(7, false)), &mut f)
            .unwrap();
        b.set_pte(
            va(PAGE_SIZE),
            Pte::AwaitingTagStorage(leaf(7, false)),
            &mut f,
        )
        .unwrap();
        // The zero page: special, never recorded.
        a.set_pte(va(2 * PAGE_SIZE), Pte::Present(leaf(1, true)), &mut f)
            .unwrap();
        b.set_block(va(PMD_SIZE), Block::Present(leaf(0x200, false)), &mut f)
            .unwrap();
        let (ma, mb) = (MmId::new(1), MmId::new(2));
        let mut r = Rmap::new();
        r.add(Pfn::new(7), at(1, PAGE_SIZE)).unwrap();
        r.add(Pfn::new(7), at(2, PAGE_SIZE)).unwrap();
        let block = RmapEntry {
            mm: mb,
            va: va(PMD_SIZE),
            level: MapLevel::Pmd,
        };
        // A block is recorded for each of its 512 frames.
        r.add(Pfn::new(0x200), block).unwrap();
        assert_eq!(
            check_against(&r, [(ma, &a), (mb, &b)]).len(),
            511,
            "the other frames of the block are unrecorded"
        );
        for i in 1..PAGES_PER_PMD {
            r.add(Pfn::new(0x200 + i), block).unwrap();
        }
        assert_eq!(check_against(&r, [(ma, &a), (mb, &b)]), vec![]);

        r.remove(Pfn::new(7), at(2, PAGE_SIZE)).unwrap();
        r.add(Pfn::new(8), at(1, 5 * PAGE_SIZE)).unwrap();
        assert_eq!(
            check_against(&r, [(ma, &a), (mb, &b)]),
            vec![
                RmapViolation::Unrecorded {
                    pfn: Pfn::new(7),
                    entry: at(2, PAGE_SIZE)
                },
                RmapViolation::Stale {
                    pfn: Pfn::new(8),
                    entry: at(1, 5 * PAGE_SIZE)
                },
            ]
        );
    }
}
