//! Per-block reference counts and the arithmetic that produces them: which
//! blocks hold the tags of an allocation, and how many of its frames each one
//! covers.
//!
//! Owns [`BlockRefs`], the sparse table of blocks with a non-zero count (the
//! RFC's `tag_blocks_reserved` xarray plus the block page's refcount), and
//! [`Allocation`], a validated naturally aligned run of `2^order` data frames.
//!
//! Invariants:
//! - a block is in the table exactly when its count is non-zero (`NonZeroU64`:
//!   a zero-count entry cannot be built);
//! - an allocation's shares cover each of its frames exactly once, so the
//!   count of a block is the number of live frames of reserved allocations
//!   whose tags it holds.
//!
//! The share of a block is computed exactly, by finding where the block's
//! covered frames end, instead of the RFC's `block_ref_add()` formula
//! `min(2^order, 32 * block_size_pages)` with `order_to_num_blocks()` blocks.
//! The two agree whenever the covered memory starts on a multiple of
//! `32 * block_pages` frames (every real layout); when it does not, the RFC
//! formula misses the tags of the frames that spill into the next block.
//!
//! Host memory: one map entry per block with references, so a 1 TiB machine
//! with 4 KiB blocks (8 Mi blocks) costs nothing for blocks nobody uses. A
//! dense `Vec<u32>` would cost 32 MiB there even when no process uses MTE,
//! which is the common case the dynamic design exists for.

use crate::check::{Misuse, TagStoreViolation};
use core::num::NonZeroU64;
use mte::{Geometry, Order, Pfn, TagBlock};
use std::collections::BTreeMap;
use std::collections::btree_map;
use thiserror::Error;

/// Why a run of frames cannot have tag storage.
#[derive(Clone, Copy, PartialEq, Eq, Debug, Error)]
pub enum RangeError {
    #[error("frame {pfn} is not aligned to order {order}")]
    Misaligned { pfn: Pfn, order: Order },
    /// The frame is not ordinary memory covered by a tag region (it may be
    /// tag storage itself, which has no tags: docs/model.md §1).
    #[error("frame {pfn} has no tag storage")]
    NotCovered { pfn: Pfn },
}

/// The frames of one block that an allocation holds.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(crate) struct BlockShare {
    pub(crate) block: TagBlock,
    pub(crate) frames: u64,
}

/// A naturally aligned run of `2^order` data frames, every one of them
/// covered by tag storage.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(crate) struct Allocation {
    pub(crate) pfn: Pfn,
    pub(crate) order: Order,
    last: Pfn,
}

impl Allocation {
    /// Validates `2^order` frames from `pfn` (buddy allocations are naturally
    /// aligned).
    pub(crate) fn new(geometry: &Geometry, pfn: Pfn, order: Order) -> Result<Self, RangeError> {
        if !pfn.is_aligned(order) {
            return Err(RangeError::Misaligned { pfn, order });
        }
        // Cannot overflow: an aligned block ends at a multiple of its size.
        let last = pfn + (order.pages() - 1);
        let alloc = Self { pfn, order, last };
        for share in alloc.walk(geometry) {
            share.map_err(|pfn| RangeError::NotCovered { pfn })?;
        }
        Ok(alloc)
    }

    pub(crate) fn contains(&self, pfn: Pfn) -> bool {
        self.pfn <= pfn && pfn <= self.last
    }

    /// The blocks holding the tags of these frames, in block-walk order
    /// (ascending frame order), each with the number of frames it covers.
    pub(crate) fn shares<'g>(
        &self,
        geometry: &'g Geometry,
    ) -> impl Iterator<Item = BlockShare> + 'g {
        let alloc = *self;
        self.walk(geometry).map(move |share| {
            share.unwrap_or_else(|pfn| {
                panic!("BUG: frame {pfn} of validated allocation {alloc:?} lost its tag storage")
            })
        })
    }

    fn walk<'g>(&self, geometry: &'g Geometry) -> Walk<'g> {
        Walk {
            geometry,
            next: Some(self.pfn),
            last: self.last,
        }
    }
}

/// Walks an allocation block by block; yields the first uncovered frame as an
/// error and stops there.
struct Walk<'g> {
    geometry: &'g Geometry,
    next: Option<Pfn>,
    last: Pfn,
}

impl Iterator for Walk<'_> {
    type Item = Result<BlockShare, Pfn>;

    fn next(&mut self) -> Option<Self::Item> {
        let first = self.next.take()?;
        let Some(block) = self.geometry.block_of(first) else {
            return Some(Err(first));
        };
        // The frames whose tags a block holds are contiguous, and `first` is
        // one of them, so "in `block`" is true on a prefix of
        // [first, last]: binary-search its end.
        let in_block = |pfn: u64| self.geometry.block_of(Pfn::new(pfn)) == Some(block);
        let (mut lo, mut hi) = (first.as_u64(), self.last.as_u64());
        while lo < hi {
            let mid = lo + (hi - lo).div_ceil(2);
            if in_block(mid) {
                lo = mid;
            } else {
                hi = mid - 1;
            }
        }
        if lo < self.last.as_u64() {
            self.next = Some(Pfn::new(lo + 1));
        }
        Some(Ok(BlockShare {
            block,
            frames: lo - first.as_u64() + 1,
        }))
    }
}

/// The most references a block can hold: the data frames whose tags it holds
/// (`32 * block_pages`, the RFC's cap in `block_ref_add()`).
pub(crate) fn block_capacity(geometry: &Geometry) -> u64 {
    geometry
        .data_pages_per_tag_page()
        .checked_mul(geometry.block_pages())
        .expect("BUG: tag block covers more than 2^64 frames")
}

/// Reference counts of the blocks that have any.
///
/// Linux: the `tag_blocks_reserved` xarray (presence) and the refcount of the
/// block's first tag storage page (count).
#[derive(Clone, PartialEq, Eq, Debug, Default)]
pub(crate) struct BlockRefs {
    refs: BTreeMap<TagBlock, NonZeroU64>,
}

impl BlockRefs {
    pub(crate) fn get(&self, block: TagBlock) -> u64 {
        self.refs.get(&block).map_or(0, |r| r.get())
    }

    pub(crate) fn len(&self) -> u64 {
        self.refs.len() as u64
    }

    pub(crate) fn iter(&self) -> impl Iterator<Item = (TagBlock, u64)> + '_ {
        self.refs.iter().map(|(&b, r)| (b, r.get()))
    }

    pub(crate) fn blocks(&self) -> btree_map::Keys<'_, TagBlock, NonZeroU64> {
        self.refs.keys()
    }

    /// Adds `frames` references to `block`, creating its entry if needed.
    pub(crate) fn add(&mut self, block: TagBlock, frames: u64) {
        let frames = NonZeroU64::new(frames).expect("BUG: a block share covers no frame");
        self.refs
            .entry(block)
            .and_modify(|r| {
                *r = r
                    .checked_add(frames.get())
                    .expect("BUG: tag block reference count overflow")
            })
            .or_insert(frames);
    }

    /// Drops `frames` references from `block`; returns how many are left. The
    /// entry goes when none is.
    pub(crate) fn sub(&mut self, block: TagBlock, frames: u64) -> u64 {
        let btree_map::Entry::Occupied(mut entry) = self.refs.entry(block) else {
            panic!("BUG: dropping {frames} references from unreferenced {block:?}");
        };
        let left = entry.get().get().checked_sub(frames).unwrap_or_else(|| {
            panic!(
                "BUG: dropping {frames} references from {block:?}, which holds {}",
                entry.get()
            )
        });
        match NonZeroU64::new(left) {
            Some(left) => *entry.get_mut() = left,
            None => {
                entry.remove();
            }
        }
        left
    }

    /// Refuses a reservation that would give a block more references than the
    /// frames it covers (some of the frames are reserved already).
    pub(crate) fn check_reserve(
        &self,
        geometry: &Geometry,
        alloc: &Allocation,
        capacity: u64,
    ) -> Result<(), Misuse> {
        for share in alloc.shares(geometry) {
            let refs = self.get(share.block) + share.frames;
            if refs > capacity {
                return Err(Misuse::DoubleReservation {
                    pfn: alloc.pfn,
                    order: alloc.order,
                    block: share.block,
                    refs,
                    capacity,
                });
            }
        }
        Ok(())
    }

    /// Refuses a release that would drop references nobody took: more than a
    /// block holds, the zero page's own, or the zero page itself.
    pub(crate) fn check_release(
        &self,
        geometry: &Geometry,
        alloc: &Allocation,
        zero_page: Option<Pfn>,
    ) -> Result<(), Misuse> {
        if let Some(zero_page) = zero_page.filter(|&z| alloc.contains(z)) {
            return Err(Misuse::ReleaseZeroPage {
                zero_page,
                pfn: alloc.pfn,
                order: alloc.order,
            });
        }
        let pinned_block = zero_page.and_then(|z| geometry.block_of(z));
        for share in alloc.shares(geometry) {
            let pinned = u64::from(pinned_block == Some(share.block));
            let refs = self.get(share.block).saturating_sub(pinned);
            if refs < share.frames {
                return Err(Misuse::ReleaseUnreserved {
                    pfn: alloc.pfn,
                    order: alloc.order,
                    block: share.block,
                    refs,
                    frames: share.frames,
                });
            }
        }
        Ok(())
    }
}

impl BlockRefs {
    /// The invariants of the table itself: known blocks, counts within
    /// coverage, the zero page's reference present.
    pub(crate) fn check(
        &self,
        geometry: &Geometry,
        capacity: u64,
        zero_page: Option<Pfn>,
        out: &mut Vec<TagStoreViolation>,
    ) {
        let blocks = geometry.tag_blocks();
        for (block, refs) in self.iter() {
            if geometry.block(block.index()).is_none() {
                out.push(TagStoreViolation::UnknownBlock { block, blocks });
            }
            if refs > capacity {
                out.push(TagStoreViolation::RefcountAboveCoverage {
                    block,
                    refs,
                    capacity,
                });
            }
        }
        if let Some(zero_page) = zero_page {
            let block = geometry.block_of(zero_page);
            if block.is_none_or(|b| self.get(b) == 0) {
                out.push(TagStoreViolation::ZeroPageBlockNotReserved { zero_page, block });
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::{BASE, machine, machine_at};

    fn shares(g: &Geometry, pfn: u64, order: u8) -> Vec<(u64, u64)> {
        Allocation::new(g, Pfn::new(pfn), Order::new(order))
            .unwrap()
            .shares(g)
            .map(|s| (s.block.index(), s.frames))
            .collect()
    }

    #[test]
    fn shares_match_the_rfc_formula_on_aligned_memory() {
        // RFC v3 block_ref_add(): min(2^order, 32 * block_size_pages) per
        // block, order_to_num_blocks() blocks.
        let g = machine(4 << 10);
        assert_eq!(shares(&g, BASE + 33, 0), [(1, 1)]);
        let order9: Vec<_> = (0..16).map(|b| (b, 32)).collect();
        assert_eq!(shares(&g, BASE, 9), order9);
        let g = machine(64 << 10);
        assert_eq!(shares(&g, BASE, 9), [(0, 512)]);
        assert_eq!(shares(&g, BASE + 1024, 10), [(2, 512), (3, 512)]);
        assert_eq!(block_capacity(&g), 512);
    }

    #[test]
    fn shares_are_exact_when_covered_memory_is_not_block_aligned() {
        // Memory starts 16 frames past a 32-frame boundary, so with 4 KiB
        // blocks block 0 covers frames 0x80010..=0x8002f. An order-5
        // allocation at 0x80020 (32 frames) has 16 frames in block 0 and 16
        // in block 1; the RFC formula would give one block 32 references.
        let g = machine_at(0x8001_0000, 4 << 10);
        assert_eq!(shares(&g, 0x80020, 5), [(0, 16), (1, 16)]);
    }

    #[test]
    fn bad_ranges_are_refused() {
        let g = machine(4 << 10);
        let new = |pfn, order| Allocation::new(&g, Pfn::new(pfn), Order::new(order)).unwrap_err();
        assert_eq!(
            new(BASE + 1, 1),
            RangeError::Misaligned {
                pfn: Pfn::new(BASE + 1),
                order: Order::new(1)
            }
        );
        // Tag storage itself (right after the 64 MiB of DRAM) has no tags.
        let tags = BASE + (64 << 20) / 4096;
        assert_eq!(
            new(tags, 0),
            RangeError::NotCovered {
                pfn: Pfn::new(tags)
            }
        );
        // An allocation running off the end of DRAM: the first frame past it.
        let end = BASE + 16384;
        assert_eq!(
            new(end - 16384, 15),
            RangeError::NotCovered { pfn: Pfn::new(end) }
        );
    }

    #[test]
    fn refs_add_and_drop_entries() {
        let mut refs = BlockRefs::default();
        refs.add(TagBlock::new(3), 2);
        refs.add(TagBlock::new(3), 1);
        assert_eq!((refs.get(TagBlock::new(3)), refs.len()), (3, 1));
        assert_eq!(refs.sub(TagBlock::new(3), 2), 1);
        assert_eq!(refs.sub(TagBlock::new(3), 1), 0);
        assert_eq!((refs.get(TagBlock::new(3)), refs.len()), (0, 0));
    }

    #[test]
    #[should_panic(expected = "BUG:")]
    fn dropping_more_than_held_is_a_bug() {
        let mut refs = BlockRefs::default();
        refs.add(TagBlock::new(0), 1);
        refs.sub(TagBlock::new(0), 2);
    }
}
