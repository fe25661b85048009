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

use mte::Pfn;
use std::collections::BTreeMap;

#[derive(Clone, Debug)]
pub(crate) struct BlockRuns {
    /// Frames per block.
    block: u64,
    /// First head of a run -> number of blocks in it.
    runs: BTreeMap<u64, u64>,
    len: u64,
}

impl BlockRuns {
    pub(crate) fn new(block: u64) -> Self {
        Self {
            block,
            runs: BTreeMap::new(),
            len: 0,
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

    /// The lowest head.
    pub(crate) fn first(&self) -> Option<Pfn> {
        self.runs
            .first_key_value()
            .map(|(&start, _)| Pfn::new(start))
    }

    /// Adds `head`; false if it was already there.
    pub(crate) fn insert(&mut self, head: Pfn) -> bool {
        let head = head.as_u64();
        debug_assert_eq!(head % self.block, 0, "BUG: misaligned free block head");
        if self.run_of(head).is_some() {
            return false;
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
        self.len -= 1;
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

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]
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
