//! Design `rfc-v2`: the dynamic tag storage series as posted in its second
//! version (Alexandru Elisei, "[PATCH RFC v2 00/27] Add support for arm64
//! MTE dynamic tag storage reuse", November 2023), as far as it differs
//! from `dynamic` (the v3 design with its mistakes fixed):
//!
//! - patch 5 ("mm: Add MIGRATE_METADATA allocation policy" and the
//!   allocator hooks) and patch 16 ("arm64: mte: Reserve tag storage memory
//!   on allocation", `arch_prep_new_page()`): a tagged allocation reserves
//!   its tag storage *inside* the page allocator; when that fails the page
//!   goes back to the buddy allocator and the allocator tries the next one
//!   ([`crate::ReserveAt::InAllocation`]);
//! - patches 19-21 ("arm64: mte: Handle tag storage pages mapped in an MTE
//!   VMA", "... Enable tag storage management") : a fault on an entry
//!   awaiting tag storage retries the reservation and replays the fault; it
//!   migrates the faulting page only when that page is itself a tag storage
//!   page ([`crate::OnReserveFailure::RetryAndReplay`]). A page of the
//!   block held by a short-term pin then keeps the access from completing
//!   (the v2 review: pinned pages, `vmsplice`), the mistake `retry-forever`;
//! - patch 26 (`order_to_num_blocks()`): `max(2^order / 32, 1) *
//!   block_size_pages` blocks per allocation, from the block of its first
//!   frame, instead of `DIV_ROUND_UP(max(2^order / 32, 1), block_size_pages)`:
//!   with blocks of more than one page it reserves blocks that hold none of
//!   the allocation's tags (the mistake `v2-block-count`).
//!
//! The manager is [`crate::DynamicTagStorage`] counting blocks the v2 way
//! ([`V2Blocks`]); it states its own form of invariant 3 (`docs/model.md`
//! §4): a block's references are those of the live tagged frames it covers
//! (checked by the kernel against the frames, [`crate::TagStorage::frame_refcount`])
//! plus one for each live allocation whose v2 range reaches it without
//! covering it (checked here). `dynamic` with `mistake=v2-block-count`
//! counts the same way but keeps the RFC's invariant 3, which the extra
//! references break.
//!
//! Model decisions: a v2 range running past the machine's last block is cut
//! there (v2 would index past its tag region); the extra references of an
//! allocation go when its last frame is released, so a huge page split and
//! freed page by page gives them back too (v2 would drop `2^0` references
//! from `block_size_pages` blocks per page and underflow).

use core::ops::Range;
use std::collections::BTreeMap;

use mte::{Geometry, Order, Pfn, TagBlock};

use crate::check::TagStoreViolation;
use crate::design::{DesignEntry, OnReserveFailure, ReserveAt, Rules, Storage, TaggedPlacement};
use crate::refs::Allocation;
use crate::{DynamicTagStorage, TagStoreConfig};

/// `rfc-v2` in the design registry.
pub(crate) const DESIGN: DesignEntry = DesignEntry::new(
    "rfc-v2",
    "RFC v2 (Nov 2023): reserve inside the allocation, retry the fault for ever, v2 block count",
    Rules {
        storage: Storage::Lent,
        reserve_in_atomic: false,
        on_reserve_failure: OnReserveFailure::RetryAndReplay,
        reserve_at: ReserveAt::InAllocation,
        tagged_placement: TaggedPlacement::Anywhere,
    },
    |geometry, config| {
        Box::new(DynamicTagStorage::new_v2(
            geometry,
            TagStoreConfig {
                v2_block_count: true,
                ..config
            },
        ))
    },
);

/// RFC v2 `order_to_num_blocks()`: `max(2^order / 32, 1) * block_size_pages`.
pub fn v2_num_blocks(geometry: &Geometry, order: Order) -> u64 {
    (order.pages() / geometry.data_pages_per_tag_page()).max(1) * geometry.block_pages()
}

/// RFC v3 (the fix): `DIV_ROUND_UP(max(2^order / 32, 1), block_size_pages)`.
pub fn exact_num_blocks(geometry: &Geometry, order: Order) -> u64 {
    (order.pages() / geometry.data_pages_per_tag_page())
        .max(1)
        .div_ceil(geometry.block_pages())
}

/// The block indices v2 reserves for an allocation: from the block of its
/// first frame, [`v2_num_blocks`] of them, cut at the last block.
fn v2_range(geometry: &Geometry, alloc: &Allocation) -> Range<u64> {
    let first = geometry
        .block_of(alloc.pfn)
        .expect("BUG: a validated allocation's first frame has tag storage")
        .index();
    let end = first
        .saturating_add(v2_num_blocks(geometry, alloc.order))
        .min(geometry.tag_blocks());
    first..end
}

/// One live allocation's extra blocks.
#[derive(Clone, PartialEq, Eq, Debug)]
struct Extra {
    last: Pfn,
    /// Which of the allocation's frames are not yet released: a frame freed
    /// on its own (a split huge page) may be allocated and reserved again
    /// while the rest of the allocation lives, so frames are tracked one by
    /// one, never counted twice.
    live: Vec<bool>,
    live_count: u64,
    blocks: Vec<TagBlock>,
}

/// The references v2's block count adds beyond the blocks covering an
/// allocation's frames: one per extra block per live allocation.
#[derive(Clone, PartialEq, Eq, Debug, Default)]
pub(crate) struct V2Blocks {
    /// Live allocations with extra blocks, by first frame and then by the
    /// order they were reserved in (a frame's new allocation may start
    /// where an older, partly released one did).
    allocs: BTreeMap<(Pfn, u64), Extra>,
    next: u64,
    refs: BTreeMap<TagBlock, u64>,
    /// The extra blocks of `allocs` counted where an allocation enters or
    /// leaves `allocs` (and nowhere else): what [`Self::check_full`]
    /// recounts, kept so that [`Self::check`] compares instead of walking
    /// every live allocation. Only [`Self::insert_alloc`] and
    /// [`Self::remove_alloc`] change `allocs`' keys or blocks, so it equals
    /// the recount by construction; the full checker compares both.
    live: BTreeMap<TagBlock, u64>,
    /// The most frames any allocation recorded so far spans (never
    /// lowered): an allocation overlapping a frame starts less than this
    /// far before it, which bounds the search of [`Self::release`] (a
    /// fixed bound would search every allocation on a small machine).
    largest: u64,
}

impl V2Blocks {
    /// The blocks of `alloc`'s v2 range that cover none of its frames.
    pub(crate) fn extra_blocks(geometry: &Geometry, alloc: &Allocation) -> Vec<TagBlock> {
        let covering: Vec<TagBlock> = alloc.shares(geometry).map(|s| s.block).collect();
        v2_range(geometry, alloc)
            .map(TagBlock::new)
            .filter(|b| !covering.contains(b))
            .collect()
    }

    pub(crate) fn get(&self, block: TagBlock) -> u64 {
        self.refs.get(&block).copied().unwrap_or(0)
    }

    pub(crate) fn blocks(&self) -> impl Iterator<Item = TagBlock> + '_ {
        self.refs.keys().copied()
    }

    /// Records `alloc`'s extra blocks, one reference each.
    pub(crate) fn add(&mut self, alloc: &Allocation, blocks: Vec<TagBlock>) {
        if blocks.is_empty() {
            return;
        }
        for &b in &blocks {
            *self.refs.entry(b).or_default() += 1;
        }
        let pages = alloc.order.pages();
        self.largest = self.largest.max(pages);
        let extra = Extra {
            last: alloc.pfn + (pages - 1),
            live: vec![true; pages as usize],
            live_count: pages,
            blocks,
        };
        self.insert_alloc((alloc.pfn, self.next), extra);
        self.next += 1;
    }

    /// Adds a live allocation to `allocs`, its blocks to `live`.
    fn insert_alloc(&mut self, key: (Pfn, u64), extra: Extra) {
        for &b in &extra.blocks {
            *self.live.entry(b).or_default() += 1;
        }
        let old = self.allocs.insert(key, extra);
        assert!(old.is_none(), "BUG: an allocation key used twice");
    }

    /// Takes a live allocation out of `allocs`, its blocks out of `live`.
    fn remove_alloc(&mut self, key: (Pfn, u64)) -> Extra {
        let extra = self.allocs.remove(&key).expect("BUG: present");
        for b in &extra.blocks {
            let n = self.live.get_mut(b).expect("BUG: a live block uncounted");
            *n -= 1;
            if *n == 0 {
                self.live.remove(b);
            }
        }
        extra
    }

    /// Releases the frames of `alloc`; returns the extra blocks left with no
    /// reference by allocations whose last frame went.
    pub(crate) fn release(&mut self, alloc: &Allocation) -> Vec<TagBlock> {
        let last = alloc.pfn + (alloc.order.pages() - 1);
        let from = Pfn::new(alloc.pfn.as_u64().saturating_sub(self.largest));
        let overlapping: Vec<(Pfn, u64)> = self
            .allocs
            .range((from, 0)..=(last, u64::MAX))
            .filter(|(_, e)| e.last >= alloc.pfn)
            .map(|(&k, _)| k)
            .collect();
        let mut freed = Vec::new();
        for key in overlapping {
            let extra = self.allocs.get_mut(&key).expect("BUG: listed above");
            let head = key.0;
            let lo = head.max(alloc.pfn).as_u64();
            let hi = extra.last.min(last).as_u64();
            for pfn in lo..=hi {
                let live = &mut extra.live[(pfn - head.as_u64()) as usize];
                if core::mem::take(live) {
                    extra.live_count -= 1;
                }
            }
            if extra.live_count > 0 {
                continue;
            }
            let extra = self.remove_alloc(key);
            for b in extra.blocks {
                let refs = self.refs.get_mut(&b).expect("BUG: an extra block lost");
                *refs -= 1;
                if *refs == 0 {
                    self.refs.remove(&b);
                    freed.push(b);
                }
            }
        }
        freed
    }

    /// The table against the live allocations' blocks as counted when
    /// they came and went ([`Self::check_full`]'s verdict while that count
    /// equals a recount, which the full checker verifies).
    pub(crate) fn check(&self, out: &mut Vec<TagStoreViolation>) {
        // Equal tables: no block to report (the common case, one walk).
        if self.refs != self.live {
            Self::compare(&self.refs, &self.live, out);
        }
    }

    /// The table recounted from the live allocations.
    pub(crate) fn check_full(&self, out: &mut Vec<TagStoreViolation>) {
        let mut recount: BTreeMap<TagBlock, u64> = BTreeMap::new();
        for extra in self.allocs.values() {
            for &b in &extra.blocks {
                *recount.entry(b).or_default() += 1;
            }
        }
        Self::compare(&self.refs, &recount, out);
    }

    /// Each block of `refs` whose count differs from `live`'s.
    fn compare(
        refs: &BTreeMap<TagBlock, u64>,
        live: &BTreeMap<TagBlock, u64>,
        out: &mut Vec<TagStoreViolation>,
    ) {
        for (&block, &refs) in refs {
            let live = live.get(&block).copied().unwrap_or(0);
            if refs != live {
                out.push(TagStoreViolation::ExtraRefs { block, refs, live });
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::BlockState;
    use crate::design::Design;
    use crate::testutil::{BASE, MockSource, block_on, machine, record};

    #[test]
    fn the_two_formulas() {
        // A 2 MiB THP is order 9: 512 frames, 16 tag pages.
        let thp = Order::new(9);
        for (block, exact, v2) in [
            (4u64 << 10, 16, 16),
            (8 << 10, 8, 32),
            (16 << 10, 4, 64),
            (64 << 10, 1, 256),
        ] {
            let g = machine(block);
            assert_eq!(exact_num_blocks(&g, thp), exact, "{block}");
            assert_eq!(v2_num_blocks(&g, thp), v2, "{block}");
        }
        let g = machine(16 << 10);
        assert_eq!(exact_num_blocks(&g, Order::new(0)), 1);
        assert_eq!(v2_num_blocks(&g, Order::new(0)), 4);
    }

    #[test]
    fn rfc_v2_over_reserves_and_gives_everything_back() {
        let g = machine(16 << 10);
        let rfc_v2 = Design::by_name("rfc-v2").unwrap();
        let mut m = rfc_v2.build(&g, record());
        let mut src = MockSource::default();
        let zero_page = Pfn::new(BASE);
        block_on(m.activate(zero_page, &mut src)).unwrap();
        // The zero page: block 0 covers it, blocks 1-3 are extra.
        assert_eq!(m.counters().reserved, 4);
        assert_eq!(m.frame_refcount(TagBlock::new(0)), 1);
        assert_eq!(m.frame_refcount(TagBlock::new(1)), 0);
        assert_eq!(m.block_refcount(TagBlock::new(1)), 1);
        // An order-1 page in block 2 (128 frames per 16 KiB block): blocks
        // 2-5, of which 4 and 5 are new.
        let pfn = Pfn::new(BASE + 256);
        block_on(m.reserve(pfn, Order::new(1), &mut src)).unwrap();
        assert_eq!(m.counters().reserved, 6);
        assert!(m.check().is_empty(), "{:?}", m.check());
        // Freed one frame at a time (a split page): the extras go with the
        // last frame.
        m.release(pfn, Order::new(0), &mut src);
        assert_eq!(m.counters().reserved, 6);
        m.release(pfn + 1, Order::new(0), &mut src);
        assert_eq!(m.counters().reserved, 4);
        assert_eq!(m.block_state(TagBlock::new(5)), BlockState::Lent);
        assert!(m.check().is_empty(), "{:?}", m.check());
    }

    #[test]
    fn a_frame_of_a_split_allocation_reserved_again() {
        let g = machine(16 << 10);
        let mut m = Design::by_name("rfc-v2").unwrap().build(&g, record());
        let mut src = MockSource::default();
        block_on(m.activate(Pfn::new(BASE), &mut src)).unwrap();
        let pfn = Pfn::new(BASE + 512);
        block_on(m.reserve(pfn, Order::new(2), &mut src)).unwrap();
        let reserved = m.counters().reserved;
        // Its first frame freed alone, allocated and reserved again, then
        // every frame freed: the extras go exactly once.
        m.release(pfn, Order::new(0), &mut src);
        block_on(m.reserve(pfn, Order::new(0), &mut src)).unwrap();
        assert!(m.check().is_empty(), "{:?}", m.check());
        for i in 0..4 {
            m.release(pfn + i, Order::new(0), &mut src);
        }
        assert_eq!(m.counters().reserved, 4, "was {reserved}");
        assert!(m.check().is_empty(), "{:?}", m.check());
    }

    /// Random allocations reserved and released (whole, or frame by frame
    /// as a split page), on a `V2Blocks` alone: `lcg` drives the choices.
    fn random_v2_blocks(seed: u64, steps: usize, mut each: impl FnMut(&mut V2Blocks)) {
        let g = machine(16 << 10);
        let mut lcg = seed;
        let mut next = move |n: u64| {
            lcg = lcg
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            (lcg >> 33) % n
        };
        let mut v2 = V2Blocks::default();
        let mut live: Vec<Allocation> = Vec::new();
        for _ in 0..steps {
            if live.is_empty() || next(3) != 0 {
                let order = Order::new(next(4) as u8);
                let pfn = Pfn::new(BASE + (next(16384 >> order.get()) << order.get()));
                let alloc = Allocation::new(&g, pfn, order).unwrap();
                v2.add(&alloc, V2Blocks::extra_blocks(&g, &alloc));
                live.push(alloc);
            } else {
                let alloc = live.swap_remove(next(live.len() as u64) as usize);
                if next(2) == 0 {
                    v2.release(&alloc);
                } else {
                    for i in 0..alloc.order.pages() {
                        v2.release(&Allocation::new(&g, alloc.pfn + i, Order::new(0)).unwrap());
                    }
                }
            }
            each(&mut v2);
        }
    }

    fn verdicts(v2: &V2Blocks) -> (Vec<TagStoreViolation>, Vec<TagStoreViolation>) {
        let (mut fast, mut full) = (Vec::new(), Vec::new());
        v2.check(&mut fast);
        v2.check_full(&mut full);
        (fast, full)
    }

    #[test]
    fn the_kept_count_equals_the_recount() {
        for seed in 0..8 {
            random_v2_blocks(seed, 400, |v2| {
                let (fast, full) = verdicts(v2);
                assert!(full.is_empty(), "{full:?}");
                assert_eq!(fast, full);
            });
        }
    }

    #[test]
    fn both_checkers_catch_a_wrong_reference_count() {
        // The bug the check exists for: a reference taken or dropped
        // outside an allocation's coming and going.
        let mut caught = 0;
        random_v2_blocks(1, 200, |v2| {
            if let Some((&block, _)) = v2.refs.iter().next() {
                *v2.refs.get_mut(&block).unwrap() += 1;
                let (fast, full) = verdicts(v2);
                assert_eq!(fast, full);
                assert!(matches!(
                    full[..],
                    [TagStoreViolation::ExtraRefs { block: b, .. }] if b == block
                ));
                *v2.refs.get_mut(&block).unwrap() -= 1;
                caught += 1;
            }
        });
        assert!(caught > 100);
    }

    #[test]
    fn the_full_checker_catches_an_untracked_change() {
        // A bug in the kept count's tracking: an allocation dropped from
        // `allocs` behind `remove_alloc`'s back. The fast check cannot see
        // it; the full checker (which the kernel cross-checks) does.
        let mut caught = 0;
        random_v2_blocks(2, 200, |v2| {
            let Some((&key, _)) = v2.allocs.iter().next() else {
                return;
            };
            let mut copy = v2.clone();
            copy.allocs.remove(&key);
            let (fast, full) = verdicts(&copy);
            assert!(fast.is_empty());
            assert!(!full.is_empty());
            caught += 1;
        });
        assert!(caught > 100);
    }

    #[test]
    fn dynamic_with_the_v2_count_keeps_the_rfc_invariant() {
        let g = machine(16 << 10);
        let config = TagStoreConfig {
            v2_block_count: true,
            ..record()
        };
        let mut m = Design::DYNAMIC.build(&g, config);
        let mut src = MockSource::default();
        block_on(m.activate(Pfn::new(BASE), &mut src)).unwrap();
        // Block 1 holds a reference but covers no live tagged frame.
        assert_eq!(m.frame_refcount(TagBlock::new(1)), 1);
        assert_eq!(m.counters().reserved, 4);
    }
}
