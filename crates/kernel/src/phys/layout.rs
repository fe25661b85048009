//! The physical layout the allocator is built from: buddy geometry (page
//! shift, pageblock order, maximum order, section size) and the memory regions
//! with their kind.
//!
//! Owns: [`Order`], [`PhysGeometry`], [`Region`], [`RegionKind`],
//! [`PhysLayout`], [`CmaUse`] and their validation ([`LayoutError`]).
//!
//! Invariants of a [`PhysLayout`] (checked once by [`PhysLayout::new`], so
//! holders never re-check):
//! - `pageblock_order <= max_order`, and a section holds at least one
//!   max-order block (`section_shift >= max_order`; Linux: `SECTION_SIZE_BITS
//!   >= MAX_PAGE_ORDER + PAGE_SHIFT`), so no buddy ever spans two sections;
//! - regions are non-empty, sorted by start and do not overlap;
//! - no pageblock holds CMA frames together with frames of another kind (Linux
//!   refuses CMA areas that are not pageblock aligned, `cma_init_reserved_mem()`:
//!   a pageblock has one migrate type, and a CMA pageblock must never serve
//!   unmovable or tagged allocations). Holes may share a CMA pageblock.
//!
//! Regions need not be aligned to pageblocks or to the maximum order: free
//! memory is split into the largest aligned buddies that fit, as Linux's
//! `memblock_free_all()` -> `__free_pages_memory()` does.

pub use mte::Order;
use mte::{PageGeometry, Pfn, PfnRange};
use thiserror::Error;

#[derive(Clone, Debug, PartialEq, Eq, Error)]
pub enum LayoutError {
    #[error("pageblock order {pageblock_order} is above the maximum order {max_order}")]
    PageblockOrder {
        pageblock_order: Order,
        max_order: Order,
    },
    #[error(
        "section shift {section_shift} must lie in {max_order}..={limit} (a max-order block \
         fits in one section; Linux: SECTION_SIZE_BITS >= MAX_PAGE_ORDER + PAGE_SHIFT)"
    )]
    SectionShift {
        section_shift: u32,
        max_order: Order,
        limit: u32,
    },
    #[error("the layout has no memory region")]
    NoRegions,
    #[error("region {range:?} is empty")]
    EmptyRegion { range: PfnRange },
    #[error("region {range:?} ends beyond the last physical address")]
    RegionOverflow { range: PfnRange },
    #[error("regions {first:?} and {second:?} overlap")]
    Overlap { first: PfnRange, second: PfnRange },
    #[error(
        "CMA region {cma:?} shares the pageblock at {pageblock} with {other_kind:?} region \
         {other:?} (Linux requires pageblock-aligned CMA areas)"
    )]
    CmaSharesPageblock {
        cma: PfnRange,
        other: PfnRange,
        other_kind: RegionKind,
        pageblock: Pfn,
    },
}

/// The allocator's geometry: the one place that defines pageblock, max-order
/// and section sizes. The page size is the machine's [`PageGeometry`] (from
/// its `mte::Geometry`), held here, not redefined.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct PhysGeometry {
    page: PageGeometry,
    pageblock_order: Order,
    max_order: Order,
    section_shift: u32,
}

impl PhysGeometry {
    /// Frames per sparse section as a power of two: 2^15 frames, 128 MiB with
    /// 4 KiB pages (Linux arm64: `SECTION_SIZE_BITS` 27).
    pub const DEFAULT_SECTION_SHIFT: u32 = 15;
    /// Sections larger than 2^32 frames would overflow in-section indices.
    pub const SECTION_SHIFT_LIMIT: u32 = 32;

    /// `max_order` is inclusive (Linux `MAX_PAGE_ORDER`, 10 on arm64 4K:
    /// orders 0..=10); `pageblock_order` is 9 for 4K pages (2 MiB).
    /// Orders of at most [`Order::MAX`] are accepted (larger would make a
    /// single block larger than any machine).
    pub fn new(
        page: PageGeometry,
        pageblock_order: Order,
        max_order: Order,
    ) -> Result<Self, LayoutError> {
        if pageblock_order > max_order {
            return Err(LayoutError::PageblockOrder {
                pageblock_order,
                max_order,
            });
        }
        let section_shift = Self::DEFAULT_SECTION_SHIFT.max(u32::from(max_order.get()));
        Ok(Self {
            page,
            pageblock_order,
            max_order,
            section_shift,
        })
    }

    /// The same geometry with `2^section_shift` frames per sparse section.
    pub fn with_section_shift(self, section_shift: u32) -> Result<Self, LayoutError> {
        if section_shift < u32::from(self.max_order.get())
            || section_shift > Self::SECTION_SHIFT_LIMIT
        {
            return Err(LayoutError::SectionShift {
                section_shift,
                max_order: self.max_order,
                limit: Self::SECTION_SHIFT_LIMIT,
            });
        }
        Ok(Self {
            section_shift,
            ..self
        })
    }

    /// The machine's page size and what follows from it.
    pub fn page(&self) -> PageGeometry {
        self.page
    }

    pub fn page_shift(&self) -> u32 {
        self.page.page_shift()
    }

    pub fn page_size(&self) -> u64 {
        self.page.page_size()
    }

    pub fn pageblock_order(&self) -> Order {
        self.pageblock_order
    }

    pub fn pageblock_pages(&self) -> u64 {
        self.pageblock_order.pages()
    }

    /// The largest order (inclusive).
    pub fn max_order(&self) -> Order {
        self.max_order
    }

    pub fn section_shift(&self) -> u32 {
        self.section_shift
    }

    pub fn section_pages(&self) -> u64 {
        1 << self.section_shift
    }

    /// The pageblock holding `pfn`, as the frame that starts it.
    pub fn pageblock_start(&self, pfn: Pfn) -> Pfn {
        pfn.align_down(self.pageblock_order)
    }

    /// The pageblocks that hold any frame of `range`, as a frame range.
    pub fn pageblocks_of(&self, range: PfnRange) -> PfnRange {
        let start = range.start.align_down(self.pageblock_order);
        let end = range
            .end()
            .checked_align_up(self.pageblock_order)
            .expect("BUG: a region ends within the last pageblock of the frame numbers");
        PfnRange::new(start, end - start)
    }
}

/// What a region of physical memory is.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Debug)]
pub enum RegionKind {
    /// Ordinary (tagged-capable) DRAM, given to the allocator.
    Dram,
    /// Tag storage given to the allocator as CMA memory (`tag-storage=dynamic`):
    /// movable, untagged allocations only.
    TagStorageCma,
    /// Tag storage carved out at boot (`tag-storage=static`): the frames exist
    /// (their bytes hold tags) but are never free.
    TagStorageCarvedOut,
}

impl RegionKind {
    /// Whether the region's frames start free in the allocator.
    pub fn is_allocatable(self) -> bool {
        matches!(self, Self::Dram | Self::TagStorageCma)
    }

    /// Whether the region is tag storage (of either policy).
    pub fn is_tag_storage(self) -> bool {
        matches!(self, Self::TagStorageCma | Self::TagStorageCarvedOut)
    }
}

/// One range of physical memory and what it is.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct Region {
    pub range: PfnRange,
    pub kind: RegionKind,
}

/// How untagged movable allocations use free CMA (tag storage) pages: the
/// scenario key `tag-storage-data`.
#[derive(Clone, Copy, PartialEq, Eq, Debug, Default)]
pub enum CmaUse {
    /// Take CMA pages first.
    Prefer,
    /// Linux `__rmqueue()`: take CMA first while free CMA pages are more than
    /// half of all free pages, and as a fallback when ordinary memory runs out.
    #[default]
    Balance,
    /// Never put data in CMA pages.
    Never,
}

impl From<platform::TagStorageData> for CmaUse {
    fn from(value: platform::TagStorageData) -> Self {
        match value {
            platform::TagStorageData::Prefer => Self::Prefer,
            platform::TagStorageData::Balance => Self::Balance,
            platform::TagStorageData::Never => Self::Never,
        }
    }
}

/// A validated layout: geometry plus sorted, disjoint regions.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct PhysLayout {
    geometry: PhysGeometry,
    regions: Vec<Region>,
    /// [`PhysLayout::region_of`] in O(1) for most frames (it is asked at
    /// nearly every frame access): the span cut into at most
    /// [`CoarseIndex::MAX_CHUNKS`] aligned chunks, each knowing the one
    /// region or hole it lies in wholly, or that it straddles a boundary
    /// (then the regions are searched). Derived from `regions` alone.
    coarse: CoarseIndex,
}

/// The chunk index of [`PhysLayout::coarse`].
#[derive(Clone, PartialEq, Eq, Debug)]
struct CoarseIndex {
    /// The first frame of the first chunk (the span's start, rounded down).
    base: u64,
    /// Frames per chunk, as a shift.
    shift: u32,
    /// Per chunk: `HOLE`, `MIXED`, or the index of its region.
    chunks: Vec<u32>,
}

impl CoarseIndex {
    const MAX_CHUNKS: u64 = 1024;
    const HOLE: u32 = u32::MAX;
    const MIXED: u32 = u32::MAX - 1;

    /// The index of sorted, disjoint, non-empty `regions`.
    fn new(regions: &[Region]) -> CoarseIndex {
        let start = regions[0].range.start.as_u64();
        let end = regions[regions.len() - 1].range.end().as_u64();
        let mut shift = 0;
        while ((end - 1) >> shift) - (start >> shift) + 1 > Self::MAX_CHUNKS {
            shift += 1;
        }
        let base = start >> shift << shift;
        let count = ((end - 1 - base) >> shift) + 1;
        let chunks = (0..count)
            .map(|i| {
                let first = base + (i << shift);
                let last = first + (1 << shift) - 1;
                let i = regions.partition_point(|r| r.range.end().as_u64() <= first);
                match regions.get(i) {
                    Some(r) if r.range.start.as_u64() <= first && last < r.range.end().as_u64() => {
                        u32::try_from(i).expect("BUG: more than 2^32 regions")
                    }
                    Some(r) if r.range.start.as_u64() > last => Self::HOLE,
                    None => Self::HOLE,
                    Some(_) => Self::MIXED,
                }
            })
            .collect();
        CoarseIndex {
            base,
            shift,
            chunks,
        }
    }
}

impl PhysLayout {
    pub fn new(geometry: PhysGeometry, mut regions: Vec<Region>) -> Result<Self, LayoutError> {
        if regions.is_empty() {
            return Err(LayoutError::NoRegions);
        }
        for region in &regions {
            if region.range.count == 0 {
                return Err(LayoutError::EmptyRegion {
                    range: region.range,
                });
            }
            // Every frame's byte address must fit in a `PhysAddr`.
            let fits = region
                .range
                .start
                .as_u64()
                .checked_add(region.range.count)
                .is_some_and(|end| end <= u64::MAX >> geometry.page_shift());
            if !fits {
                return Err(LayoutError::RegionOverflow {
                    range: region.range,
                });
            }
        }
        regions.sort_by_key(|r| r.range.start);
        for pair in regions.windows(2) {
            let (a, b) = (pair[0], pair[1]);
            if a.range.overlaps(b.range) {
                return Err(LayoutError::Overlap {
                    first: a.range,
                    second: b.range,
                });
            }
        }
        let coarse = CoarseIndex::new(&regions);
        let layout = Self {
            geometry,
            regions,
            coarse,
        };
        layout.check_cma_pageblocks()?;
        Ok(layout)
    }

    /// A CMA region may share its edge pageblocks only with holes.
    fn check_cma_pageblocks(&self) -> Result<(), LayoutError> {
        for (i, cma) in self.regions.iter().enumerate() {
            if cma.kind != RegionKind::TagStorageCma {
                continue;
            }
            let blocks = self.geometry.pageblocks_of(cma.range);
            let neighbours = self.regions[..i].iter().rev().chain(&self.regions[i + 1..]);
            for other in neighbours {
                if other.kind != RegionKind::TagStorageCma && other.range.overlaps(blocks) {
                    let shared = other.range.start.max(blocks.start);
                    return Err(LayoutError::CmaSharesPageblock {
                        cma: cma.range,
                        other: other.range,
                        other_kind: other.kind,
                        pageblock: self.geometry.pageblock_start(shared),
                    });
                }
            }
        }
        Ok(())
    }

    pub fn geometry(&self) -> &PhysGeometry {
        &self.geometry
    }

    /// The regions, sorted by start.
    pub fn regions(&self) -> &[Region] {
        &self.regions
    }

    /// The region holding `pfn`; `None` in a hole.
    #[inline]
    pub fn region_of(&self, pfn: Pfn) -> Option<&Region> {
        let coarse = &self.coarse;
        let chunk = pfn.as_u64().checked_sub(coarse.base)? >> coarse.shift;
        match *coarse.chunks.get(usize::try_from(chunk).ok()?)? {
            CoarseIndex::HOLE => None,
            CoarseIndex::MIXED => self.search_region(pfn),
            i => Some(&self.regions[i as usize]),
        }
    }

    /// [`Self::region_of`] by binary search of the regions.
    fn search_region(&self, pfn: Pfn) -> Option<&Region> {
        let i = self.regions.partition_point(|r| r.range.end() <= pfn);
        self.regions.get(i).filter(|r| r.range.contains(pfn))
    }

    pub fn kind_of(&self, pfn: Pfn) -> Option<RegionKind> {
        self.region_of(pfn).map(|r| r.kind)
    }

    /// The regions overlapping `range`, in order.
    pub fn regions_in(&self, range: PfnRange) -> &[Region] {
        let first = self
            .regions
            .partition_point(|r| r.range.end() <= range.start);
        let last = self
            .regions
            .partition_point(|r| r.range.start < range.end());
        &self.regions[first..last.max(first)]
    }

    /// The first frame of the first region to one past the last frame of the
    /// last region.
    pub fn span(&self) -> PfnRange {
        let start = self.regions[0].range.start;
        let end = self.regions[self.regions.len() - 1].range.end();
        PfnRange::new(start, end - start)
    }

    /// Frames of regions of `kind`.
    pub fn pages_of(&self, kind: RegionKind) -> u64 {
        self.regions
            .iter()
            .filter(|r| r.kind == kind)
            .map(|r| r.range.count)
            .sum()
    }

    /// Frames of every region.
    pub fn present_pages(&self) -> u64 {
        self.regions.iter().map(|r| r.range.count).sum()
    }

    /// Whether every frame of `range` lies in some region; if not, the first
    /// frame that does not.
    pub fn first_hole_in(&self, range: PfnRange) -> Option<Pfn> {
        let mut next = range.start;
        for region in self.regions_in(range) {
            if region.range.start > next {
                return Some(next);
            }
            next = region.range.end();
        }
        (next < range.end()).then_some(next)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn r(start: u64, count: u64, kind: RegionKind) -> Region {
        Region {
            range: PfnRange::new(Pfn::new(start), count),
            kind,
        }
    }

    #[test]
    fn geometry_validates_orders_and_sections() {
        // Linux arm64 4K: PAGE_SHIFT 12, pageblock_order 9, MAX_PAGE_ORDER 10.
        let g =
            PhysGeometry::new(mte::PageGeometry::FOUR_K, Order::new(9), Order::new(10)).unwrap();
        assert_eq!(g.page_size(), 4096);
        assert_eq!(g.pageblock_pages(), 512);
        assert_eq!(g.max_order().pages(), 1024);
        assert_eq!(g.section_pages(), 1 << 15);
        assert!(matches!(
            PhysGeometry::new(mte::PageGeometry::FOUR_K, Order::new(11), Order::new(10)),
            Err(LayoutError::PageblockOrder { .. })
        ));
        assert!(matches!(
            g.with_section_shift(9),
            Err(LayoutError::SectionShift { .. })
        ));
        assert_eq!(g.with_section_shift(10).unwrap().section_pages(), 1024);
        assert_eq!(
            g.pageblocks_of(PfnRange::new(Pfn::new(513), 600)),
            PfnRange::new(Pfn::new(512), 1024)
        );
    }

    #[test]
    fn layout_sorts_and_rejects_overlap() {
        let g = PhysGeometry::new(mte::PageGeometry::FOUR_K, Order::new(2), Order::new(3)).unwrap();
        let l = PhysLayout::new(
            g,
            vec![
                r(100, 4, RegionKind::TagStorageCma),
                r(0, 10, RegionKind::Dram),
            ],
        )
        .unwrap();
        assert_eq!(l.regions()[0].range.start, Pfn::new(0));
        assert_eq!(l.span(), PfnRange::new(Pfn::new(0), 104));
        assert_eq!(l.kind_of(Pfn::new(9)), Some(RegionKind::Dram));
        assert_eq!(l.kind_of(Pfn::new(10)), None);
        assert_eq!(l.kind_of(Pfn::new(103)), Some(RegionKind::TagStorageCma));
        assert_eq!(l.first_hole_in(PfnRange::new(Pfn::new(5), 5)), None);
        assert_eq!(
            l.first_hole_in(PfnRange::new(Pfn::new(5), 6)),
            Some(Pfn::new(10))
        );
        assert_eq!(l.regions_in(PfnRange::new(Pfn::new(9), 92)).len(), 2);
        assert!(matches!(
            PhysLayout::new(
                g,
                vec![r(0, 10, RegionKind::Dram), r(9, 2, RegionKind::Dram)]
            ),
            Err(LayoutError::Overlap { .. })
        ));
        assert!(matches!(
            PhysLayout::new(g, vec![r(0, 0, RegionKind::Dram)]),
            Err(LayoutError::EmptyRegion { .. })
        ));
        assert!(matches!(
            PhysLayout::new(g, vec![]),
            Err(LayoutError::NoRegions)
        ));
    }

    #[test]
    fn region_of_by_chunk_agrees_with_the_search() {
        // Every frame of small layouts (chunks of one frame up to chunks
        // straddling unaligned edges), and every region edge of a wide one.
        let g = PhysGeometry::new(mte::PageGeometry::FOUR_K, Order::new(2), Order::new(3)).unwrap();
        let layouts = [
            vec![
                r(0, 10, RegionKind::Dram),
                r(100, 4, RegionKind::TagStorageCma),
            ],
            vec![r(7, 3000, RegionKind::Dram), r(3007, 1, RegionKind::Dram)],
            vec![
                r(5, 1000, RegionKind::Dram),
                r(2048, 2048, RegionKind::TagStorageCma),
                r(4099, 5, RegionKind::Dram),
            ],
            vec![
                r(1 << 40, 1 << 20, RegionKind::Dram),
                r(1 << 41, 1, RegionKind::Dram),
            ],
        ];
        for regions in layouts {
            let l = PhysLayout::new(g, regions).unwrap();
            let span = l.span();
            let edges = l.regions().iter().flat_map(|r| {
                let (s, e) = (r.range.start.as_u64(), r.range.end().as_u64());
                [s.saturating_sub(1), s, s + 1, e - 1, e, e + 1]
            });
            let frames: Vec<u64> = if span.count <= 8192 {
                (span.start.as_u64().saturating_sub(3)..span.end().as_u64() + 3).collect()
            } else {
                edges.chain([0, u64::MAX >> 12]).collect()
            };
            for pfn in frames.into_iter().map(Pfn::new) {
                assert_eq!(l.region_of(pfn), l.search_region(pfn), "{pfn:?}");
            }
        }
    }

    #[test]
    fn cma_must_not_share_a_pageblock_with_other_memory() {
        // Pageblocks of 4 frames: DRAM [0, 10) and CMA [10, 14) share [8, 12).
        let g = PhysGeometry::new(mte::PageGeometry::FOUR_K, Order::new(2), Order::new(3)).unwrap();
        let err = PhysLayout::new(
            g,
            vec![
                r(0, 10, RegionKind::Dram),
                r(10, 4, RegionKind::TagStorageCma),
            ],
        )
        .unwrap_err();
        assert!(matches!(
            err,
            LayoutError::CmaSharesPageblock { pageblock, .. } if pageblock == Pfn::new(8)
        ));
        // Carved-out frames count as other memory too: [10, 13) and CMA
        // [13, 15) share the pageblock [12, 16).
        assert!(
            PhysLayout::new(
                g,
                vec![
                    r(0, 10, RegionKind::Dram),
                    r(10, 3, RegionKind::TagStorageCarvedOut),
                    r(13, 2, RegionKind::TagStorageCma),
                ],
            )
            .is_err()
        );
        // A ragged CMA region next to a hole is fine, as are carved-out
        // frames sharing a pageblock with DRAM.
        PhysLayout::new(
            g,
            vec![
                r(0, 10, RegionKind::Dram),
                r(10, 2, RegionKind::TagStorageCarvedOut),
                r(17, 2, RegionKind::TagStorageCma),
            ],
        )
        .unwrap();
    }
}
