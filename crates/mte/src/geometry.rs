//! The machine's geometry: the one place that knows how data pages, tag bytes
//! and tag blocks relate (`docs/model.md` §1).
//!
//! Every conversion between a data frame and its tags goes through
//! [`Geometry`]; no other code multiplies by 32 or 128. The page-level part
//! (page size, granules per page, tag bytes per page) is the machine's
//! [`PageGeometry`], which [`Geometry::page`] hands to code that needs only
//! that; the platform crate builds a `Geometry` from a machine description,
//! the tag storage managers and the kernel only read it.
//!
//! - Tags take 4 bits per 16-byte granule, so one byte of tag storage holds the
//!   tags of [`DATA_BYTES_PER_TAG_BYTE`] = 32 bytes of data, and a data page
//!   has `page_size / 32` bytes of tags (128 for 4 KiB pages).
//! - A tag region covers one contiguous range of DRAM exactly 32 times its own
//!   size; the tags of a data frame are at `tags.base + (pfn - covers.base_pfn)
//!   * (page_size / 32)`, the even granule in the low nibble.
//! - Tag storage is managed in blocks of `block-size` bytes, a multiple of the
//!   page size, the same in every region. Blocks are numbered densely across
//!   regions ([`TagBlock`]), region by region in address order.

use core::fmt;
use thiserror::Error;

use crate::addr::{Order, Pfn, PfnRange, PhysAddr};
use crate::granule::{DATA_BYTES_PER_TAG_BYTE, GRANULE_SIZE, PageGeometry};

/// A range of physical memory in bytes.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct MemRange {
    pub base: PhysAddr,
    pub size: u64,
}

impl MemRange {
    pub const fn new(base: u64, size: u64) -> Self {
        Self {
            base: PhysAddr::new(base),
            size,
        }
    }

    /// One past the last byte, or `None` if that is past 2^64.
    pub fn end(self) -> Option<u64> {
        self.base.as_u64().checked_add(self.size)
    }

    fn overlaps(self, other: MemRange) -> bool {
        let (a, b) = (self.base.as_u64(), other.base.as_u64());
        a < b.saturating_add(other.size) && b < a.saturating_add(self.size)
    }

    fn contains_range(self, inner: MemRange) -> bool {
        inner.base >= self.base && inner.end() <= self.end()
    }
}

impl fmt::Debug for MemRange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.end() {
            Some(end) => write!(f, "[{:#x}, {:#x})", self.base.as_u64(), end),
            None => write!(f, "[{:#x} +{:#x})", self.base.as_u64(), self.size),
        }
    }
}

/// A region of tag storage and the DRAM whose tags it holds.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct TagRegion {
    /// The tag storage itself.
    pub tags: MemRange,
    /// The data memory it covers: exactly [`DATA_BYTES_PER_TAG_BYTE`] times
    /// `tags.size`.
    pub covers: MemRange,
    /// Bytes per tag block.
    pub block_size: u64,
}

/// A tag storage block, numbered densely across all regions.
///
/// Any index can be named; whether a machine has the block is the
/// geometry's to say ([`Geometry::block`] checks, [`Geometry::tag_blocks`]
/// counts them).
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct TagBlock(u64);

impl TagBlock {
    pub const fn new(index: u64) -> Self {
        Self(index)
    }

    pub const fn index(self) -> u64 {
        self.0
    }

    /// The block `n` further on, `None` past `u64::MAX`.
    pub const fn checked_add(self, n: u64) -> Option<Self> {
        match self.0.checked_add(n) {
            Some(i) => Some(Self(i)),
            None => None,
        }
    }

    /// The blocks `[self, end)`, in order.
    pub fn up_to(self, end: TagBlock) -> impl DoubleEndedIterator<Item = TagBlock> + Clone {
        (self.0..end.0).map(Self)
    }
}

impl fmt::Debug for TagBlock {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "TagBlock({})", self.0)
    }
}

/// Why a layout cannot be a machine.
#[derive(Clone, Debug, PartialEq, Eq, Error)]
pub enum GeometryError {
    #[error("page size {0:#x} is not an arm64 page size (4K, 16K or 64K)")]
    PageSize(u64),
    #[error("the machine has no memory")]
    NoMemory,
    #[error("{what} {range:?} is empty or not aligned to the page size {page_size:#x}")]
    Unaligned {
        what: &'static str,
        range: MemRange,
        page_size: u64,
    },
    #[error("{what} {range:?} runs past the end of the physical address space")]
    Wraps { what: &'static str, range: MemRange },
    #[error("{a:?} overlaps {b:?}")]
    Overlap { a: MemRange, b: MemRange },
    #[error(
        "tag storage {tags:?} is {} bytes but must be exactly 1/{DATA_BYTES_PER_TAG_BYTE} of the {} bytes of memory it covers ({covers:?})",
        tags.size,
        covers.size
    )]
    TagRatio { tags: MemRange, covers: MemRange },
    #[error("tag storage {tags:?} covers {covers:?}, which is not ordinary memory of the machine")]
    CoversNothing { tags: MemRange, covers: MemRange },
    #[error(
        "tag storage block size {block_size:#x} is not a power-of-two multiple of the page size {page_size:#x}"
    )]
    BlockSize { block_size: u64, page_size: u64 },
    #[error("tag storage {tags:?} is not aligned to its block size {block_size:#x}")]
    BlockAlignment { tags: MemRange, block_size: u64 },
    #[error("tag storage regions disagree on the block size ({a:#x} and {b:#x})")]
    MixedBlockSizes { a: u64, b: u64 },
}

#[derive(Clone, Debug, PartialEq, Eq)]
struct RegionGeometry {
    tags: PfnRange,
    covers: PfnRange,
    first_block: u64,
    blocks: u64,
}

/// The validated layout of a machine, with every page/tag/block conversion.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Geometry {
    page: PageGeometry,
    block_pages: u64,
    dram: Vec<PfnRange>,
    regions: Vec<RegionGeometry>,
}

impl Geometry {
    /// Validates a layout. `dram` is ordinary memory; tag storage ranges must
    /// not be listed in it (a device tree that also describes them as `memory`
    /// is reconciled by the caller).
    pub fn new(
        page_size: u64,
        dram: &[MemRange],
        tag_regions: &[TagRegion],
    ) -> Result<Self, GeometryError> {
        let page = PageGeometry::from_page_size(page_size)
            .map_err(|_| GeometryError::PageSize(page_size))?;
        if dram.is_empty() {
            return Err(GeometryError::NoMemory);
        }
        let page_shift = page.page_shift();
        let check = |what, range: MemRange| {
            if range.end().is_none() {
                return Err(GeometryError::Wraps { what, range });
            }
            if range.size == 0
                || !range.base.is_aligned(page_size)
                || !range.size.is_multiple_of(page_size)
            {
                return Err(GeometryError::Unaligned {
                    what,
                    range,
                    page_size,
                });
            }
            Ok(())
        };
        let mut all = Vec::new();
        for &range in dram {
            check("memory", range)?;
            all.push(range);
        }
        let mut block_size = None;
        for region in tag_regions {
            check("tag storage", region.tags)?;
            let bs = region.block_size;
            if bs < page_size || !bs.is_power_of_two() {
                return Err(GeometryError::BlockSize {
                    block_size: bs,
                    page_size,
                });
            }
            match block_size {
                Some(a) if a != bs => return Err(GeometryError::MixedBlockSizes { a, b: bs }),
                _ => block_size = Some(bs),
            }
            if !region.tags.base.is_aligned(bs) || region.tags.size % bs != 0 {
                return Err(GeometryError::BlockAlignment {
                    tags: region.tags,
                    block_size: bs,
                });
            }
            if region.tags.size.checked_mul(DATA_BYTES_PER_TAG_BYTE) != Some(region.covers.size) {
                return Err(GeometryError::TagRatio {
                    tags: region.tags,
                    covers: region.covers,
                });
            }
            if !dram.iter().any(|d| d.contains_range(region.covers)) {
                return Err(GeometryError::CoversNothing {
                    tags: region.tags,
                    covers: region.covers,
                });
            }
            all.push(region.tags);
        }
        for (i, &a) in all.iter().enumerate() {
            if let Some(&b) = all[i + 1..].iter().find(|b| a.overlaps(**b)) {
                return Err(GeometryError::Overlap { a, b });
            }
        }
        for (i, a) in tag_regions.iter().enumerate() {
            if let Some(b) = tag_regions[i + 1..]
                .iter()
                .find(|b| a.covers.overlaps(b.covers))
            {
                return Err(GeometryError::Overlap {
                    a: a.covers,
                    b: b.covers,
                });
            }
        }

        let pfns = |r: MemRange| PfnRange::new(r.base.pfn(page_shift), r.size >> page_shift);
        let block_pages = block_size.unwrap_or(page_size) >> page_shift;
        let mut sorted: Vec<&TagRegion> = tag_regions.iter().collect();
        sorted.sort_by_key(|r| r.tags.base);
        let mut first_block = 0;
        let regions = sorted
            .into_iter()
            .map(|r| {
                let tags = pfns(r.tags);
                let blocks = tags.count / block_pages;
                let g = RegionGeometry {
                    tags,
                    covers: pfns(r.covers),
                    first_block,
                    blocks,
                };
                first_block += blocks;
                g
            })
            .collect();
        let mut dram: Vec<PfnRange> = dram.iter().map(|&r| pfns(r)).collect();
        dram.sort();
        Ok(Self {
            page,
            block_pages,
            dram,
            regions,
        })
    }

    /// The page size and everything about granules that follows from it.
    pub fn page(&self) -> PageGeometry {
        self.page
    }

    pub fn page_size(&self) -> u64 {
        self.page.page_size()
    }

    pub fn page_shift(&self) -> u32 {
        self.page.page_shift()
    }

    /// Bytes of tags per data page (128 for 4 KiB pages).
    pub fn tag_bytes_per_page(&self) -> u64 {
        self.page.tag_bytes_per_page()
    }

    /// Data pages whose tags share one tag storage page (32).
    pub fn data_pages_per_tag_page(&self) -> u64 {
        DATA_BYTES_PER_TAG_BYTE
    }

    /// The frame holding `pa`.
    pub fn pfn_of(&self, pa: PhysAddr) -> Pfn {
        pa.pfn(self.page_shift())
    }

    /// The address of the first byte of frame `pfn`, `None` past the
    /// physical address space.
    pub fn addr_of(&self, pfn: Pfn) -> Option<PhysAddr> {
        pfn.checked_addr(self.page_shift())
    }

    /// Pages per tag block: `lcm(page size, block-size) / page size` (RFC v3).
    pub fn block_pages(&self) -> u64 {
        self.block_pages
    }

    /// Ordinary memory, in address order.
    pub fn dram(&self) -> &[PfnRange] {
        &self.dram
    }

    /// Tag storage ranges, in address order.
    pub fn tag_storage(&self) -> impl Iterator<Item = PfnRange> + '_ {
        self.regions.iter().map(|r| r.tags)
    }

    /// Ordinary DRAM pages (`mem.pages`).
    pub fn dram_pages(&self) -> u64 {
        self.dram.iter().map(|r| r.count).sum()
    }

    /// Tag storage pages (`tag_storage.pages`).
    pub fn tag_storage_pages(&self) -> u64 {
        self.regions.iter().map(|r| r.tags.count).sum()
    }

    /// Tag blocks (`tag_storage.blocks`).
    pub fn tag_blocks(&self) -> u64 {
        self.regions.iter().map(|r| r.blocks).sum()
    }

    /// Whether `pfn` is ordinary memory.
    pub fn is_dram(&self, pfn: Pfn) -> bool {
        self.dram.iter().any(|r| r.contains(pfn))
    }

    /// Whether `pfn` lies in tag storage.
    pub fn is_tag_storage(&self, pfn: Pfn) -> bool {
        self.regions.iter().any(|r| r.tags.contains(pfn))
    }

    fn region_covering(&self, pfn: Pfn) -> Option<&RegionGeometry> {
        self.regions.iter().find(|r| r.covers.contains(pfn))
    }

    /// The physical address of the first tag byte of data frame `pfn`, or
    /// `None` if no tag storage covers it.
    pub fn tag_bytes_of(&self, pfn: Pfn) -> Option<PhysAddr> {
        let region = self.region_covering(pfn)?;
        let offset = (pfn - region.covers.start) * self.tag_bytes_per_page();
        region
            .tags
            .start
            .addr(self.page_shift())
            .checked_add(offset)
    }

    /// The byte of tag storage holding the tag of the granule at `pa`, and
    /// whether the tag is in its high nibble (odd granule) or low (even).
    pub fn tag_byte_of(&self, pa: PhysAddr) -> Option<(PhysAddr, bool)> {
        let pfn = self.pfn_of(pa);
        let in_page = self.page.page_offset(pa);
        Self::tag_byte_in(self.tag_bytes_of(pfn)?, in_page)
    }

    /// [`Geometry::tag_byte_of`] for the byte `in_page` of a data frame
    /// whose first tag byte is `first` (as [`Geometry::tag_bytes_of`] gives
    /// it), for callers that already know it.
    #[inline]
    pub fn tag_byte_in(first: PhysAddr, in_page: u64) -> Option<(PhysAddr, bool)> {
        let byte = first.checked_add(in_page / DATA_BYTES_PER_TAG_BYTE)?;
        let granule = in_page / GRANULE_SIZE;
        Some((byte, granule % 2 == 1))
    }

    /// The tag storage page holding the tags of data frame `pfn`.
    pub fn tag_page_of(&self, pfn: Pfn) -> Option<Pfn> {
        Some(self.pfn_of(self.tag_bytes_of(pfn)?))
    }

    /// The block holding the tags of data frame `pfn`.
    pub fn block_of(&self, pfn: Pfn) -> Option<TagBlock> {
        let region = self.region_covering(pfn)?;
        let tag_page = self.tag_page_of(pfn)?;
        Some(TagBlock(
            region.first_block + (tag_page - region.tags.start) / self.block_pages,
        ))
    }

    /// The blocks holding the tags of `count` data frames from `pfn`, in
    /// order, without repeats. Empty if no tag storage covers them.
    pub fn blocks_of(&self, pfn: Pfn, count: u64) -> impl Iterator<Item = TagBlock> + '_ {
        let first = self.block_of(pfn);
        let last = count.checked_sub(1).and_then(|n| self.block_of(pfn + n));
        let span = match (first, last) {
            (Some(a), Some(b)) => a.0..b.0 + 1,
            _ => 0..0,
        };
        span.map(TagBlock)
    }

    /// Block `index`, `None` if the machine has no such block.
    pub fn block(&self, index: u64) -> Option<TagBlock> {
        (index < self.tag_blocks()).then_some(TagBlock(index))
    }

    /// Every block of the machine, in order.
    pub fn blocks(&self) -> impl DoubleEndedIterator<Item = TagBlock> + Clone {
        TagBlock(0).up_to(TagBlock(self.tag_blocks()))
    }

    /// The tag storage frames of `block`.
    pub fn block_pfns(&self, block: TagBlock) -> PfnRange {
        let region = self
            .regions
            .iter()
            .find(|r| (r.first_block..r.first_block + r.blocks).contains(&block.0))
            .unwrap_or_else(|| panic!("BUG: {block:?} is not a block of this machine"));
        let start = region.tags.start + (block.0 - region.first_block) * self.block_pages;
        PfnRange::new(start, self.block_pages)
    }

    /// The data frames whose tags `block` holds: `block_pages * 32`
    /// frames (the inverse of [`Geometry::block_of`]).
    pub fn block_covers(&self, block: TagBlock) -> PfnRange {
        let region = self
            .regions
            .iter()
            .find(|r| (r.first_block..r.first_block + r.blocks).contains(&block.0))
            .unwrap_or_else(|| panic!("BUG: {block:?} is not a block of this machine"));
        let frames = self.block_pages * DATA_BYTES_PER_TAG_BYTE;
        PfnRange::new(
            region.covers.start + (block.0 - region.first_block) * frames,
            frames,
        )
    }

    /// The block that tag storage frame `pfn` belongs to.
    pub fn block_containing(&self, pfn: Pfn) -> Option<TagBlock> {
        let region = self.regions.iter().find(|r| r.tags.contains(pfn))?;
        Some(TagBlock(
            region.first_block + (pfn - region.tags.start) / self.block_pages,
        ))
    }

    /// The number of blocks an order-`order` allocation needs:
    /// `ceil(max(2^order / 32, 1) / block_pages)` (RFC v3,
    /// `order_to_num_blocks()`); exact for naturally aligned allocations.
    pub fn blocks_for_order(&self, order: Order) -> u64 {
        let tag_pages = (order.pages() / DATA_BYTES_PER_TAG_BYTE).max(1);
        tag_pages.div_ceil(self.block_pages)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const M: u64 = 1 << 20;

    /// The default scenario machine: 64 MiB at 0x8000_0000, tags right after.
    fn default_machine(block_size: u64) -> Geometry {
        let dram = MemRange::new(0x8000_0000, 64 * M);
        let tags = MemRange::new(0x8000_0000 + 64 * M, 2 * M);
        Geometry::new(
            4096,
            &[dram],
            &[TagRegion {
                tags,
                covers: dram,
                block_size,
            }],
        )
        .unwrap()
    }

    #[test]
    fn default_machine_counts() {
        let g = default_machine(4096);
        assert_eq!(g.dram_pages(), 16384);
        assert_eq!(g.tag_storage_pages(), 512);
        assert_eq!(g.tag_blocks(), 512);
        assert_eq!(g.tag_bytes_per_page(), 128);
        let g = default_machine(64 << 10);
        assert_eq!((g.block_pages(), g.tag_blocks()), (16, 32));
    }

    #[test]
    fn block_covers_is_the_inverse_of_block_of() {
        for block_size in [4096, 64 << 10] {
            let g = default_machine(block_size);
            for block in g.blocks() {
                let covers = g.block_covers(block);
                assert_eq!(covers.count, g.block_pages() * 32);
                assert_eq!(g.block_of(covers.start), Some(block));
                assert_eq!(g.block_of(covers.start + (covers.count - 1)), Some(block));
            }
        }
    }

    #[test]
    fn data_page_to_tag_byte_is_linear() {
        let g = default_machine(4096);
        let base = Pfn::new(0x80000);
        let tag_base = 0x8400_0000;
        assert_eq!(g.tag_bytes_of(base), Some(PhysAddr::new(tag_base)));
        // pfn + 33: tag byte tag_base + 33 * 128, in the second tag page.
        assert_eq!(
            g.tag_bytes_of(base + 33),
            Some(PhysAddr::new(tag_base + 33 * 128))
        );
        assert_eq!(g.tag_page_of(base + 33), Some(Pfn::new(0x84001)));
        // Granule 3 of the first page (byte 0x30): byte 1, high nibble.
        assert_eq!(
            g.tag_byte_of(PhysAddr::new(0x8000_0030)),
            Some((PhysAddr::new(tag_base + 1), true))
        );
        assert_eq!(
            g.tag_byte_of(PhysAddr::new(0x8000_0020)),
            Some((PhysAddr::new(tag_base + 1), false))
        );
        // Tag storage itself has no tags.
        assert_eq!(g.tag_bytes_of(Pfn::new(0x84000)), None);
        assert!(g.is_tag_storage(Pfn::new(0x84000)) && !g.is_dram(Pfn::new(0x84000)));
        assert!(g.is_dram(base) && !g.is_tag_storage(base));
    }

    #[test]
    fn blocks_of_pages_and_orders() {
        let g = default_machine(4096);
        let base = Pfn::new(0x80000);
        assert_eq!(g.block_of(base + 31), Some(TagBlock(0)));
        assert_eq!(g.block_of(base + 32), Some(TagBlock(1)));
        assert_eq!(
            g.blocks_of(base + 30, 4).collect::<Vec<_>>(),
            [TagBlock(0), TagBlock(1)]
        );
        assert_eq!(g.blocks_of(base, 0).count(), 0);
        assert_eq!(
            g.block_pfns(TagBlock(1)),
            PfnRange::new(Pfn::new(0x84001), 1)
        );
        assert_eq!(g.block_containing(Pfn::new(0x84001)), Some(TagBlock(1)));
        // order 0..5 need one tag page; order 9 (512 pages) needs 16.
        let o = Order::new;
        assert_eq!(g.blocks_for_order(o(0)), 1);
        assert_eq!(g.blocks_for_order(o(5)), 1);
        assert_eq!(g.blocks_for_order(o(9)), 16);
        assert_eq!(g.block(511), Some(TagBlock(511)));
        assert_eq!(g.block(512), None);
        assert_eq!(g.blocks().count(), 512);
        let g = default_machine(64 << 10);
        assert_eq!(g.blocks_for_order(o(9)), 1);
        assert_eq!(g.blocks_for_order(o(10)), 2);
        assert_eq!(g.block_of(base + 16 * 32), Some(TagBlock(1)));
    }

    #[test]
    fn bad_layouts_are_refused() {
        let dram = MemRange::new(0x8000_0000, 64 * M);
        let region = |base, size, block_size| TagRegion {
            tags: MemRange::new(base, size),
            covers: dram,
            block_size,
        };
        let build = |r: TagRegion| Geometry::new(4096, &[dram], &[r]).unwrap_err();
        assert!(matches!(
            build(region(0x8400_0000, M, 4096)),
            GeometryError::TagRatio { .. }
        ));
        assert!(matches!(
            build(region(0x8200_0000, 2 * M, 4096)),
            GeometryError::Overlap { .. }
        ));
        assert!(matches!(
            build(region(0x8400_0800, 2 * M, 4096)),
            GeometryError::Unaligned { .. }
        ));
        assert!(matches!(
            build(region(0x8400_0000, 2 * M, 6144)),
            GeometryError::BlockSize { .. }
        ));
        assert!(matches!(
            build(region(0x8401_0000, 2 * M, 128 << 10)),
            GeometryError::BlockAlignment { .. }
        ));
        let elsewhere = TagRegion {
            tags: MemRange::new(0x8400_0000, 2 * M),
            covers: MemRange::new(0x1_0000_0000, 64 * M),
            block_size: 4096,
        };
        assert!(matches!(
            build(elsewhere),
            GeometryError::CoversNothing { .. }
        ));
        assert_eq!(
            Geometry::new(4096, &[], &[]).unwrap_err(),
            GeometryError::NoMemory
        );
        assert!(matches!(
            Geometry::new(4096, &[MemRange::new(u64::MAX - 4095, 8192)], &[]).unwrap_err(),
            GeometryError::Wraps { .. }
        ));
    }
}
