//! One buddy free list: the heads of the free blocks of one order and one
//! migrate type, as an ordered set stored in runs of consecutive blocks.
//!
//! Linux keeps `free_area[order].free_list[migratetype]` as a linked list
//! threaded through `struct page`, which needs the memmap of every free page.
//! Here a free block needs no per-frame metadata: the list is an ordered set of
//! head frame numbers (so the allocator can take the lowest one, which makes
//! the choice of pages deterministic), and consecutive heads are stored as one
//! run `start -> count`. A freshly booted 1 TiB machine is then a handful of
//! runs of max-order blocks instead of 262144 entries.
//!
//! Invariants: runs are disjoint, never adjacent (adjacent runs are joined),
//! every head is a multiple of the block size, and `len` is the number of
//! heads. Heads are [`Pfn`]s at the interface and plain frame numbers inside
//! the map, where the run arithmetic lives.
//!
//! # Linux's list order (`free-list-order=linux`)
//! A list may also keep the order Linux's doubly linked list has
//! ([`BlockRuns::keep_linux_order`]): every head gets a position, a block
//! added at the head (`add_to_free_list()`) one before the first, a block
//! added at the tail (`add_to_free_list_tail()`, `move_to_free_list()`) one
//! after the last, and [`BlockRuns::first`] is then the list's first entry
//! (`get_page_from_free_area()`) instead of the lowest head. The set of heads
//! is still the runs (so lookups by frame stay cheap); the positions are a
//! second map, one entry per block (host memory in proportion to the free
//! blocks, not to the runs). Invariant then: the positions hold exactly the
//! heads of the runs ([`BlockRuns::order_consistent`]).

use mte::Pfn;
use std::collections::BTreeMap;

/// Which end of its list a block is added at: Linux `add_to_free_list()`
/// (head) or `add_to_free_list_tail()` / `move_to_free_list()` (tail). Only
/// a list that keeps Linux's order tells them apart.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum End {
    Head,
    Tail,
}

/// The positions of a list's blocks in Linux's list order: smaller is
/// nearer the head. Positions only grow outwards, so they never collide.
#[derive(Clone, Debug, Default)]
struct ListOrder {
    /// Position -> head.
    by_pos: BTreeMap<i64, u64>,
    /// Head -> position.
    pos_of: BTreeMap<u64, i64>,
}

impl ListOrder {
    fn add(&mut self, head: u64, end: End) {
        let pos = match end {
            End::Head => self.by_pos.first_key_value().map_or(0, |(&p, _)| p - 1),
            End::Tail => self.by_pos.last_key_value().map_or(0, |(&p, _)| p + 1),
        };
        self.by_pos.insert(pos, head);
        self.pos_of.insert(head, pos);
    }

    fn remove(&mut self, head: u64) {
        let pos = self
            .pos_of
            .remove(&head)
            .expect("BUG: a head of the runs without a list position");
        self.by_pos.remove(&pos);
    }
}

#[derive(Clone, Debug)]
pub(crate) struct BlockRuns {
    /// Frames per block.
    block: u64,
    /// First head of a run -> number of blocks in it.
    runs: BTreeMap<u64, u64>,
    len: u64,
    /// Linux's list order, when kept (`free-list-order=linux`).
    order: Option<ListOrder>,
    /// A fresh number at every change (`crate::mm::generation`): the
    /// incremental checker reuses its verdict on the free lists while
    /// every list's number is the one it saw (`crate::phys::incremental`).
    /// Every method taking `&mut self` that changes the list takes one.
    generation: u64,
}

impl BlockRuns {
    pub(crate) fn new(block: u64) -> Self {
        Self {
            block,
            runs: BTreeMap::new(),
            len: 0,
            order: None,
            generation: crate::mm::generation::next(),
        }
    }

    /// The list's generation (see the field).
    pub(crate) fn generation(&self) -> u64 {
        self.generation
    }

    /// From now on, keeps Linux's list order. The blocks already there are
    /// put in ascending order, as if each had been added at the tail in
    /// address order (how `memblock_free_all()` hands boot memory over:
    /// `__free_pages_core()` frees with `FPI_TO_TAIL`, lowest range first).
    pub(crate) fn keep_linux_order(&mut self) {
        let mut order = ListOrder::default();
        for head in self.iter() {
            order.add(head.as_u64(), End::Tail);
        }
        self.order = Some(order);
        self.generation = crate::mm::generation::next();
    }

    /// From now on, keeps no order besides the addresses.
    pub(crate) fn forget_linux_order(&mut self) {
        self.order = None;
        self.generation = crate::mm::generation::next();
    }

    /// Whether the list keeps Linux's order.
    pub(crate) fn keeps_linux_order(&self) -> bool {
        self.order.is_some()
    }

    /// Whether the list positions (if kept) hold exactly the heads of the
    /// runs, each once.
    pub(crate) fn order_consistent(&self) -> bool {
        let Some(order) = &self.order else {
            return true;
        };
        order.by_pos.len() as u64 == self.len
            && order.pos_of.len() as u64 == self.len
            && order
                .by_pos
                .iter()
                .all(|(pos, &head)| order.pos_of.get(&head) == Some(pos))
            && order
                .pos_of
                .keys()
                .all(|&head| self.contains(Pfn::new(head)))
    }

    /// Every head in list order: Linux's when kept, else lowest first.
    pub(crate) fn in_list_order(&self) -> Vec<Pfn> {
        match &self.order {
            Some(order) => order.by_pos.values().map(|&h| Pfn::new(h)).collect(),
            None => self.iter().collect(),
        }
    }

    /// Number of blocks.
    pub(crate) fn len(&self) -> u64 {
        self.len
    }

    /// Number of runs (for host memory estimates).
    pub(crate) fn runs(&self) -> usize {
        self.runs.len()
    }

    /// The run holding `head`, as (start, count).
    fn run_of(&self, head: u64) -> Option<(u64, u64)> {
        let (&start, &count) = self.runs.range(..=head).next_back()?;
        (head < start + count * self.block).then_some((start, count))
    }

    pub(crate) fn contains(&self, head: Pfn) -> bool {
        let head = head.as_u64();
        self.run_of(head)
            .is_some_and(|(start, _)| (head - start).is_multiple_of(self.block))
    }

    /// The first head: the list's first entry when Linux's order is kept
    /// (`get_page_from_free_area()`), else the lowest.
    pub(crate) fn first(&self) -> Option<Pfn> {
        if let Some(order) = &self.order {
            return order.by_pos.first_key_value().map(|(_, &h)| Pfn::new(h));
        }
        self.runs
            .first_key_value()
            .map(|(&start, _)| Pfn::new(start))
    }

    /// Adds `head` at the head of the list; false if it was already there.
    #[cfg(test)]
    pub(crate) fn insert(&mut self, head: Pfn) -> bool {
        self.insert_at(head, End::Head)
    }

    /// Adds `head` at `end` of the list; false if it was already there.
    pub(crate) fn insert_at(&mut self, head: Pfn, end: End) -> bool {
        let head = head.as_u64();
        debug_assert_eq!(head % self.block, 0, "BUG: misaligned free block head");
        if self.run_of(head).is_some() {
            return false;
        }
        if let Some(order) = &mut self.order {
            order.add(head, end);
        }
        let next = head + self.block;
        let after = self.runs.remove(&next);
        let before = self
            .runs
            .range_mut(..head)
            .next_back()
            .filter(|(start, count)| **start + **count * self.block == head);
        match (before, after) {
            (Some((_, count)), after) => *count += 1 + after.unwrap_or(0),
            (None, after) => {
                self.runs.insert(head, 1 + after.unwrap_or(0));
            }
        }
        self.len += 1;
        self.generation = crate::mm::generation::next();
        true
    }

    /// Removes `head`; false if it was not there.
    pub(crate) fn remove(&mut self, head: Pfn) -> bool {
        let head = head.as_u64();
        let Some((start, count)) = self.run_of(head) else {
            return false;
        };
        if !(head - start).is_multiple_of(self.block) {
            return false;
        }
        let index = (head - start) / self.block;
        if index == 0 {
            self.runs.remove(&start);
        } else {
            self.runs.insert(start, index);
        }
        if index + 1 < count {
            self.runs.insert(head + self.block, count - index - 1);
        }
        if let Some(order) = &mut self.order {
            order.remove(head);
        }
        self.len -= 1;
        self.generation = crate::mm::generation::next();
        true
    }

    /// The heads in `[from, to)`, lowest first.
    pub(crate) fn heads_in(&self, from: Pfn, to: Pfn) -> impl Iterator<Item = Pfn> + '_ {
        let (from, to) = (from.as_u64(), to.as_u64());
        let block = self.block;
        let first_run = self.run_of(from).map_or(from, |(start, _)| start);
        self.runs
            .range(first_run..to)
            .flat_map(move |(&start, &count)| (0..count).map(move |i| start + i * block))
            .filter(move |&head| head >= from && head < to)
            .map(Pfn::new)
    }

    /// Every head, lowest first.
    pub(crate) fn iter(&self) -> impl Iterator<Item = Pfn> + '_ {
        let block = self.block;
        self.runs
            .iter()
            .flat_map(move |(&start, &count)| (0..count).map(move |i| Pfn::new(start + i * block)))
    }

    /// Every run as (first head, blocks).
    #[cfg(test)]
    pub(crate) fn iter_runs(&self) -> impl Iterator<Item = (u64, u64)> + '_ {
        self.runs.iter().map(|(&s, &c)| (s, c))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::BTreeSet;

    #[test]
    fn runs_join_and_split() {
        let p = Pfn::new;
        let mut r = BlockRuns::new(4);
        assert!(r.insert(p(8)));
        assert!(r.insert(p(16)));
        assert_eq!(r.runs(), 2);
        assert!(r.insert(p(12)), "joins [8] and [16] into one run");
        assert_eq!(r.runs(), 1);
        assert!(!r.insert(p(12)));
        assert_eq!(r.len(), 3);
        assert!(r.contains(p(12)) && !r.contains(p(13)) && !r.contains(p(20)));
        assert!(r.remove(p(12)));
        assert_eq!(r.runs(), 2);
        assert_eq!(r.iter().collect::<Vec<_>>(), vec![p(8), p(16)]);
        assert_eq!(r.first(), Some(p(8)));
        assert!(!r.remove(p(12)));
        assert_eq!(r.heads_in(p(9), p(100)).collect::<Vec<_>>(), vec![p(16)]);
    }

    #[test]
    fn linux_order_is_head_and_tail_insertion() {
        let p = Pfn::new;
        let mut r = BlockRuns::new(2);
        for h in [0, 2, 4] {
            r.insert(p(h));
        }
        r.keep_linux_order();
        assert_eq!(r.in_list_order(), vec![p(0), p(2), p(4)], "boot: ascending");
        assert!(r.insert(p(10)), "head");
        assert!(r.insert_at(p(6), End::Tail));
        assert_eq!(r.first(), Some(p(10)), "the last block added at the head");
        assert_eq!(r.in_list_order(), vec![p(10), p(0), p(2), p(4), p(6)]);
        assert!(r.remove(p(10)) && r.remove(p(2)));
        assert_eq!(r.first(), Some(p(0)));
        assert_eq!(r.in_list_order(), vec![p(0), p(4), p(6)]);
        assert!(r.order_consistent());
        assert!(!r.insert_at(p(4), End::Head), "already there");
        assert!(r.order_consistent());
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]
        /// With Linux's order kept, the list behaves like a deque: head
        /// insertions in front, tail ones behind, removal anywhere.
        #[test]
        fn linux_order_behaves_like_a_deque(ops in proptest::collection::vec((0u8..3, 0u64..32), 1..200)) {
            let mut runs = BlockRuns::new(4);
            runs.keep_linux_order();
            let mut model: std::collections::VecDeque<Pfn> = Default::default();
            for (op, slot) in ops {
                let head = Pfn::new(slot * 4);
                let there = model.contains(&head);
                match op {
                    0 => {
                        prop_assert_eq!(runs.insert_at(head, End::Head), !there);
                        if !there { model.push_front(head); }
                    }
                    1 => {
                        prop_assert_eq!(runs.insert_at(head, End::Tail), !there);
                        if !there { model.push_back(head); }
                    }
                    _ => {
                        prop_assert_eq!(runs.remove(head), there);
                        model.retain(|&h| h != head);
                    }
                }
                prop_assert_eq!(runs.first(), model.front().copied());
                prop_assert!(runs.order_consistent());
            }
            prop_assert_eq!(runs.in_list_order(), model.iter().copied().collect::<Vec<_>>());
        }

        /// The run set behaves exactly like a `BTreeSet` of heads.
        #[test]
        fn behaves_like_a_set(ops in proptest::collection::vec((any::<bool>(), 0u64..64), 1..200),
                              from in 0u64..64, len in 0u64..64) {
            let mut runs = BlockRuns::new(2);
            let mut model = BTreeSet::new();
            for (insert, slot) in ops {
                let head = Pfn::new(slot * 2);
                if insert {
                    prop_assert_eq!(runs.insert(head), model.insert(head));
                } else {
                    prop_assert_eq!(runs.remove(head), model.remove(&head));
                }
                prop_assert_eq!(runs.len(), model.len() as u64);
                prop_assert_eq!(runs.first(), model.first().copied());
                // Runs are maximal: no two are adjacent.
                let v: Vec<_> = runs.iter_runs().collect();
                for w in v.windows(2) {
                    prop_assert!(w[0].0 + w[0].1 * 2 < w[1].0);
                }
            }
            prop_assert_eq!(runs.iter().collect::<Vec<_>>(), model.iter().copied().collect::<Vec<_>>());
            let to = from + len;
            prop_assert_eq!(
                runs.heads_in(Pfn::new(from), Pfn::new(to)).collect::<Vec<_>>(),
                model.range(Pfn::new(from)..Pfn::new(to.max(from))).copied().collect::<Vec<_>>()
            );
            for head in (0..140).map(Pfn::new) {
                prop_assert_eq!(runs.contains(head), model.contains(&head));
            }
        }
    }
}
