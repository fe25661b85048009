//! Frame metadata: what the kernel knows about each physical frame
//! (Linux: `struct page`), kept in sparse sections.
//!
//! Owns: [`FrameMeta`], its state encoding [`FrameState`], the page flags
//! ([`PageFlag`], [`FrameFlags`]), the reverse-map handle [`Owner`], the
//! allocation [`MigrateType`], and [`FrameTable`], the sparse array of them.
//!
//! # Who writes what
//! - The allocator ([`crate::phys::buddy`]) alone writes `state`: it is
//!   private, and [`FrameTable`] only hands out `&mut FrameMeta` for frames
//!   that are allocated or claimed ([`crate::phys::BuddyAllocator::frame_mut`]).
//! - The kernel layers own the rest: reference and map counts, pins, flags
//!   and the owner handle. The allocator sets `refcount` to 1 on allocation
//!   (Linux `set_page_refcounted()`) and resets everything on free.
//!
//! # States
//! ```text
//!             alloc()                      free()
//!   Free ───────────────▶ Allocated/Tail ──────────▶ Free
//!    │ claim_free_range() / take_isolated_range()     ▲
//!    └──────────────────▶ Claimed ─── return_range() ─┘
//!   CarvedOut (static tag storage): never changes.
//! ```
//! A frame whose section was never materialised has no `FrameMeta`: it is
//! `Free` (or `CarvedOut` if its region is carved out); the free lists alone
//! say which free block holds it. In a materialised section, a free frame's
//! metadata is exactly [`FrameMeta::default()`] ("pristine").
//!
//! Shortcut: Linux's `_mapcount` starts at -1 and pins are folded into
//! `_refcount` (`GUP_PIN_COUNTING_BIAS`); here both are plain counts from 0.

use crate::phys::dirty::{DirtyFrames, DirtyLog};
use crate::phys::layout::{Order, PhysLayout, RegionKind};
use crate::phys::sparse::Sparse;
use core::fmt;
use core::num::NonZeroU64;
use mte::Pfn;

/// An opaque handle the kernel sets to find a page's reverse map (Linux:
/// `page->mapping` + `page->index`).
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Owner(NonZeroU64);

impl Owner {
    pub const fn new(handle: u64) -> Option<Self> {
        match NonZeroU64::new(handle) {
            Some(h) => Some(Self(h)),
            None => None,
        }
    }

    pub const fn get(self) -> u64 {
        self.0.get()
    }
}

impl fmt::Debug for Owner {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Owner({:#x})", self.0)
    }
}

/// The mobility of an allocation, and the type of a pageblock.
///
/// Linux: `enum migratetype` (`MIGRATE_UNMOVABLE`, `MIGRATE_MOVABLE`,
/// `MIGRATE_CMA`). `MIGRATE_RECLAIMABLE` is not modelled (no slab reclaim);
/// `MIGRATE_HIGHATOMIC` neither (no atomic reserves). Isolation is a separate
/// pageblock bit, as in Linux 6.16 (`PB_migrate_isolate`), so it is not a
/// variant here; see [`crate::phys::FreeList::Isolate`].
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Debug, Default)]
pub enum MigrateType {
    /// Kernel memory that can never move (page tables, the zero page, ...).
    Unmovable,
    /// User and page-cache memory that migration can move.
    #[default]
    Movable,
    /// A CMA pageblock: movable allocations only, and (the RFC's rule) never
    /// tagged ones. Never a request type: movable requests are served here.
    Cma,
}

/// One page flag.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Debug)]
pub enum PageFlag {
    /// The page's allocation tags are valid (Linux `PG_mte_tagged`).
    Tagged,
    /// The tags are being initialised (Linux `PG_mte_lock`, taken by
    /// `try_page_mte_tagging()`).
    MteLock,
    /// The tag storage of this page is reserved (the RFC's
    /// `PG_tag_storage_reserved`).
    TagStorageReserved,
    /// In use by the kernel itself; never migrated (Linux `PG_reserved` on a
    /// page the kernel owns outright).
    Kernel,
    /// Taken off the LRU by a migration in progress (Linux: the page was
    /// isolated by `folio_isolate_lru()`).
    Isolated,
}

impl PageFlag {
    pub const ALL: [PageFlag; 5] = [
        Self::Tagged,
        Self::MteLock,
        Self::TagStorageReserved,
        Self::Kernel,
        Self::Isolated,
    ];

    const fn bit(self) -> u8 {
        1 << self as u8
    }
}

/// A set of [`PageFlag`]s.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct FrameFlags(u8);

impl FrameFlags {
    pub const fn empty() -> Self {
        Self(0)
    }

    pub const fn contains(self, flag: PageFlag) -> bool {
        self.0 & flag.bit() != 0
    }

    pub fn insert(&mut self, flag: PageFlag) {
        self.0 |= flag.bit();
    }

    pub fn remove(&mut self, flag: PageFlag) {
        self.0 &= !flag.bit();
    }

    pub const fn is_empty(self) -> bool {
        self.0 == 0
    }

    pub fn iter(self) -> impl Iterator<Item = PageFlag> {
        PageFlag::ALL.into_iter().filter(move |f| self.contains(*f))
    }
}

impl fmt::Debug for FrameFlags {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_set().entries(self.iter()).finish()
    }
}

/// The state of one frame, as stored in its metadata.
#[derive(Clone, Copy, PartialEq, Eq, Debug, Default)]
pub enum FrameState {
    /// In the buddy allocator, inside a free block; the free lists say which
    /// (Linux: `PageBuddy` on the block's head, with `buddy_order()`).
    #[default]
    Free,
    /// The first frame of an allocated block of `2^order` frames (Linux: the
    /// head page of a compound page, or an order-0 page). `migratetype` is the
    /// request's mobility: [`MigrateType::Unmovable`] or [`MigrateType::Movable`].
    Allocated {
        order: Order,
        migratetype: MigrateType,
    },
    /// A later frame of an allocated block, `head_offset` frames after its
    /// head (Linux: a compound tail page, `compound_head()`).
    Tail { head_offset: u32 },
    /// Taken out of the allocator by a contiguous claim (a tag block reserved
    /// for tags; Linux: pages handed out by `alloc_contig_range()`).
    Claimed,
    /// Carved out at boot (static tag storage): present, never free.
    CarvedOut,
}

/// What the kernel knows about one frame.
#[derive(Clone, PartialEq, Eq, Debug, Default)]
pub struct FrameMeta {
    /// References (Linux `page_ref_count()`): 1 after allocation.
    pub refcount: u32,
    /// Page-table entries mapping the frame (Linux `page_mapcount()`, from 0).
    pub mapcount: u32,
    /// Pins (`pin_user_pages()`, `vmsplice`): a pinned page cannot migrate.
    pub pins: u32,
    pub flags: FrameFlags,
    /// Reverse-map handle set by the kernel.
    pub owner: Option<Owner>,
    state: FrameState,
}

impl FrameMeta {
    pub fn state(&self) -> FrameState {
        self.state
    }

    pub fn is_pinned(&self) -> bool {
        self.pins > 0
    }

    /// Whether this is the metadata of a frame nobody uses.
    pub fn is_pristine(&self) -> bool {
        *self == Self::default()
    }

    pub(crate) fn set_state(&mut self, state: FrameState) {
        self.state = state;
    }

    /// Back to the state of a frame just booted: free and untouched.
    pub(crate) fn reset(&mut self) {
        *self = Self::default();
    }
}

/// The sparse array of [`FrameMeta`] over the layout's span.
///
/// Every `&mut FrameMeta` it hands out goes through [`Self::get_mut`],
/// [`Self::materialise_block`] or [`Self::block_mut`], which record the
/// frames in the dirty log of the incremental checker
/// ([`crate::phys::dirty`]): no frame can change unrecorded.
#[derive(Clone, Debug)]
pub struct FrameTable {
    layout: PhysLayout,
    sections: Sparse<FrameMeta>,
    dirty: DirtyLog,
    /// Per section of the span (as [`Sparse`] numbers them): whether its
    /// frames inside the span hold no hole, so that [`Self::get`] needs no
    /// region search there (the checkers look frames up millions of times
    /// a run).
    without_holes: Vec<bool>,
    /// The layout's span (a section may reach past it).
    span: mte::PfnRange,
}

impl FrameTable {
    pub fn new(layout: PhysLayout) -> Self {
        let sections = Sparse::new(layout.span(), layout.geometry().section_shift());
        let span = layout.span();
        let without_holes = (0..sections.section_count())
            .map(|i| {
                let section = sections.section_range(i);
                let start = section.start.max(span.start);
                let end = section.end().min(span.end());
                layout
                    .first_hole_in(mte::PfnRange::new(start, end - start))
                    .is_none()
            })
            .collect();
        Self {
            layout,
            sections,
            dirty: DirtyLog::default(),
            without_holes,
            span,
        }
    }

    /// The frames handed out mutably since the last call (the incremental
    /// checker's input; see [`crate::phys::dirty`]).
    pub(crate) fn take_dirty(&mut self) -> DirtyFrames {
        self.dirty.take()
    }

    /// What [`Self::take_dirty`] would return, without consuming the log
    /// (tests check it covers every frame whose metadata changed).
    #[cfg(test)]
    pub(crate) fn peek_dirty(&self) -> DirtyFrames {
        self.dirty.peek()
    }

    pub fn layout(&self) -> &PhysLayout {
        &self.layout
    }

    /// The metadata of `pfn`; `None` for a hole or a frame of a section never
    /// used (a free or carved-out frame).
    #[inline]
    pub fn get(&self, pfn: Pfn) -> Option<&FrameMeta> {
        let (section, meta) = self.sections.get_in_section(pfn)?;
        match self.without_holes[section] && self.span.contains(pfn) {
            true => Some(meta),
            false => self.layout.region_of(pfn).map(|_| meta),
        }
    }

    pub(crate) fn get_mut(&mut self, pfn: Pfn) -> Option<&mut FrameMeta> {
        self.layout.region_of(pfn)?;
        self.dirty.note(pfn, 1);
        self.sections.get_mut(pfn)
    }

    /// The metadata of present frame `pfn`, materialising its section (whose
    /// carved-out frames start `CarvedOut`, the others `Free`).
    #[cfg(test)]
    pub(crate) fn materialise(&mut self, pfn: Pfn) -> &mut FrameMeta {
        &mut self.materialise_block(pfn, 1)[0]
    }

    /// The metadata of the `pages` present frames from `pfn` (inside one
    /// section, as every buddy block is), materialising the section.
    pub(crate) fn materialise_block(&mut self, pfn: Pfn, pages: u64) -> &mut [FrameMeta] {
        let layout = &self.layout;
        debug_assert!(
            layout.region_of(pfn).is_some(),
            "BUG: frame {pfn} is a hole"
        );
        if !self.sections.is_materialised(pfn) {
            self.dirty.note_section(self.sections.section_start(pfn));
        }
        self.dirty.note(pfn, pages);
        self.sections
            .get_or_materialise_slice(pfn, pages, |start, slice| {
                let section = mte::PfnRange::new(start, slice.len() as u64);
                for region in layout.regions_in(section) {
                    if region.kind != RegionKind::TagStorageCarvedOut {
                        continue;
                    }
                    let from = region.range.start.max(start) - start;
                    let to = region.range.end().min(section.end()) - start;
                    for meta in &mut slice[from as usize..to as usize] {
                        meta.state = FrameState::CarvedOut;
                    }
                }
            })
    }

    /// The metadata of `pages` frames from `pfn` if their section is
    /// materialised.
    pub(crate) fn block(&self, pfn: Pfn, pages: u64) -> Option<&[FrameMeta]> {
        self.sections.slice(pfn, pages)
    }

    /// Like [`Self::block`]; a `BUG:` if the section was never materialised.
    pub(crate) fn block_mut(&mut self, pfn: Pfn, pages: u64) -> &mut [FrameMeta] {
        self.dirty.note(pfn, pages);
        self.sections
            .slice_mut(pfn, pages)
            .unwrap_or_else(|| panic!("BUG: no metadata for {pages} frames at {pfn}"))
    }

    pub(crate) fn is_materialised(&self, pfn: Pfn) -> bool {
        self.sections.is_materialised(pfn)
    }

    pub(crate) fn section_start(&self, pfn: Pfn) -> Pfn {
        self.sections.section_start(pfn)
    }

    pub(crate) fn section_pages(&self) -> u64 {
        self.sections.section_pages()
    }

    /// Every materialised section as (first frame, metadata), in frame order.
    pub(crate) fn sections(&self) -> impl Iterator<Item = (Pfn, &[FrameMeta])> {
        self.sections.materialised()
    }

    pub fn materialised_sections(&self) -> usize {
        self.sections.materialised_count()
    }

    /// Host bytes used by the metadata.
    pub fn host_bytes(&self) -> usize {
        self.sections.host_bytes() + std::mem::size_of_val(self.layout.regions())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::phys::layout::{PhysGeometry, Region};
    use mte::PfnRange;

    #[test]
    fn flags_are_a_set() {
        let mut f = FrameFlags::empty();
        assert!(f.is_empty());
        f.insert(PageFlag::Tagged);
        f.insert(PageFlag::TagStorageReserved);
        assert!(f.contains(PageFlag::Tagged) && !f.contains(PageFlag::MteLock));
        f.remove(PageFlag::Tagged);
        assert_eq!(
            f.iter().collect::<Vec<_>>(),
            vec![PageFlag::TagStorageReserved]
        );
        assert_eq!(format!("{f:?}"), "{TagStorageReserved}");
    }

    #[test]
    fn metadata_is_small_and_owner_has_a_niche() {
        // The metadata cost of a used section is section_pages * this size;
        // keep it at most 32 bytes (Linux's struct page is 64).
        assert!(size_of::<FrameMeta>() <= 32, "{}", size_of::<FrameMeta>());
        assert_eq!(size_of::<Option<Owner>>(), 8);
        assert_eq!(Owner::new(0), None);
        assert_eq!(Owner::new(5).unwrap().get(), 5);
    }

    #[test]
    fn sections_materialise_with_carved_out_frames() {
        let g = PhysGeometry::new(mte::PageGeometry::FOUR_K, Order::new(2), Order::new(3))
            .unwrap()
            .with_section_shift(4)
            .unwrap();
        let layout = PhysLayout::new(
            g,
            vec![
                Region {
                    range: PfnRange::new(Pfn::new(0), 20),
                    kind: RegionKind::Dram,
                },
                Region {
                    range: PfnRange::new(Pfn::new(20), 4),
                    kind: RegionKind::TagStorageCarvedOut,
                },
            ],
        )
        .unwrap();
        let mut t = FrameTable::new(layout);
        assert!(t.get(Pfn::new(17)).is_none());
        t.materialise(Pfn::new(17)).refcount = 1;
        assert_eq!(t.get(Pfn::new(17)).unwrap().refcount, 1);
        assert_eq!(t.get(Pfn::new(19)).unwrap().state(), FrameState::Free);
        assert_eq!(t.get(Pfn::new(20)).unwrap().state(), FrameState::CarvedOut);
        assert!(t.get(Pfn::new(24)).is_none(), "a hole has no metadata");
        assert!(t.get(Pfn::new(3)).is_none(), "section 0 is untouched");
        assert_eq!(t.materialised_sections(), 1);
    }

    #[test]
    fn frames_of_holes_have_no_metadata_in_sections_with_and_without_holes() {
        // Sections of 16 frames: 0-15 whole, 16-31 with a hole at 24-27,
        // 32-47 ending the span at 40 (its last frames outside the span,
        // the others no hole).
        let g = PhysGeometry::new(mte::PageGeometry::FOUR_K, Order::new(2), Order::new(3))
            .unwrap()
            .with_section_shift(4)
            .unwrap();
        let region = |start, count| Region {
            range: PfnRange::new(Pfn::new(start), count),
            kind: RegionKind::Dram,
        };
        let layout = PhysLayout::new(g, vec![region(0, 24), region(28, 12)]).unwrap();
        let mut t = FrameTable::new(layout.clone());
        for pfn in [0, 16, 32] {
            t.materialise(Pfn::new(pfn));
        }
        assert_eq!(t.without_holes, vec![true, false, true]);
        for pfn in 0..48 {
            let pfn = Pfn::new(pfn);
            assert_eq!(
                t.get(pfn).is_some(),
                layout.region_of(pfn).is_some(),
                "{pfn}"
            );
        }
    }
}
