//! Checks that only schedules can trigger: sleeping in atomic context and
//! lock-order inversions (Linux: `might_sleep()` with
//! `CONFIG_DEBUG_ATOMIC_SLEEP`, and lockdep).
//!
//! - **Atomic context** (`docs/model.md` §4, invariant 9): a CPU holding a
//!   [`crate::SimSpinLock`] must not sleep: take a sleeping lock (a mutex, an
//!   rwsem side, a page lock, a wait queue) or reach a [`crate::Sched::might_sleep`]
//!   point (an allocation that may reclaim or migrate). Every such attempt is
//!   recorded as [`LockViolation::SleepInAtomic`], naming the spin lock and
//!   what would have slept, whether or not the attempt would have blocked on
//!   this schedule: as in Linux, `might_sleep()` complains on the
//!   uncontended path too, so the check fires on every schedule that reaches
//!   the call.
//! - **Lock order**: every time a CPU acquires lock class `B` while holding
//!   class `A` (`A != B`), the edge `A -> B` is recorded, unless `B` was
//!   taken by a trylock, which cannot wait and so adds no dependency (as in
//!   lockdep). An edge that closes
//!   a cycle (some path `B -> ... -> A` was seen before, on this run or an
//!   earlier one of the same [`crate::Sched`], or one merged in with
//!   [`crate::Sched::merge_lock_order`]) is a potential deadlock even if no
//!   schedule deadlocked: [`LockViolation::OrderInversion`].
//!
//! A lock class is one registered lock: all keys of a [`crate::LockTable`]
//! are one class, and nesting two keys of one table is not an edge (Linux
//! needs a nesting annotation there; the model's callers order keys
//! themselves).
//!
//! Violations accumulate until [`crate::Sched::take_lock_violations`]; each
//! distinct one is recorded once.

use core::fmt;
use std::collections::{BTreeMap, BTreeSet};

use crate::cpu::CpuId;

/// A broken locking rule.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum LockViolation {
    /// `cpu` would sleep in `what` while holding the spin lock `spinlock`.
    SleepInAtomic {
        cpu: CpuId,
        spinlock: String,
        what: String,
    },
    /// `taken` was acquired while holding `held`, but an earlier path
    /// acquired them the other way round (`cycle` lists the classes of that
    /// path, from `taken` back to `held`).
    OrderInversion {
        held: String,
        taken: String,
        cycle: Vec<String>,
    },
}

impl fmt::Display for LockViolation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LockViolation::SleepInAtomic {
                cpu,
                spinlock,
                what,
            } => write!(
                f,
                "sleeping in atomic context: {cpu} {what} while holding spinlock `{spinlock}`"
            ),
            LockViolation::OrderInversion { held, taken, cycle } => write!(
                f,
                "possible deadlock: `{taken}` taken while holding `{held}`, but elsewhere {}",
                cycle
                    .windows(2)
                    .map(|w| format!("`{}` was held when `{}` was taken", w[0], w[1]))
                    .collect::<Vec<_>>()
                    .join(", then ")
            ),
        }
    }
}

/// The acquisition orders seen so far, between lock classes named by their
/// registration names.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LockOrder {
    /// `held -> {taken}`.
    edges: BTreeMap<String, BTreeSet<String>>,
}

impl LockOrder {
    /// Records `held -> taken`; if `taken` already reaches `held`, returns
    /// that path (`taken`, ..., `held`).
    pub fn add(&mut self, held: &str, taken: &str) -> Option<Vec<String>> {
        if held == taken || self.edges.get(held).is_some_and(|s| s.contains(taken)) {
            return None;
        }
        let cycle = self.path(taken, held);
        self.edges
            .entry(held.to_owned())
            .or_default()
            .insert(taken.to_owned());
        cycle
    }

    /// Adds every edge of `other` (orders seen on other runs), reporting
    /// the inversions that closes.
    pub fn merge(&mut self, other: &LockOrder) -> Vec<LockViolation> {
        let mut found = Vec::new();
        for (held, takens) in &other.edges {
            for taken in takens {
                if let Some(cycle) = self.add(held, taken) {
                    found.push(LockViolation::OrderInversion {
                        held: held.clone(),
                        taken: taken.clone(),
                        cycle,
                    });
                }
            }
        }
        found
    }

    /// The edges, `(held, taken)`, in order.
    pub fn edges(&self) -> impl Iterator<Item = (&str, &str)> {
        self.edges
            .iter()
            .flat_map(|(h, ts)| ts.iter().map(move |t| (h.as_str(), t.as_str())))
    }

    /// A path of edges from `from` to `to` (breadth first, so the shortest).
    fn path(&self, from: &str, to: &str) -> Option<Vec<String>> {
        let mut came_from: BTreeMap<&str, &str> = BTreeMap::new();
        let mut queue = std::collections::VecDeque::from([from]);
        while let Some(node) = queue.pop_front() {
            if node == to {
                let mut path = vec![to.to_owned()];
                let mut at = to;
                while at != from {
                    at = came_from[at];
                    path.push(at.to_owned());
                }
                path.reverse();
                return Some(path);
            }
            for next in self.edges.get(node).into_iter().flatten() {
                if next != from && !came_from.contains_key(next.as_str()) {
                    came_from.insert(next, node);
                    queue.push_back(next);
                }
            }
        }
        None
    }
}

/// What the scheduler keeps for these checks.
#[derive(Debug, Default)]
pub(crate) struct LockChecks {
    pub(crate) order: LockOrder,
    /// Pairs of registered locks (`held`, `taken`) already added to `order`.
    pub(crate) seen: BTreeSet<(usize, usize)>,
    pub(crate) violations: BTreeSet<LockViolation>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_edge_closing_a_cycle_reports_the_path() {
        let mut order = LockOrder::default();
        assert_eq!(order.add("mmap_lock", "page_lock"), None);
        assert_eq!(order.add("page_lock", "tag_blocks_lock"), None);
        assert_eq!(order.add("mmap_lock", "page_lock"), None, "seen before");
        assert_eq!(order.add("page_lock", "page_lock"), None, "one class");
        assert_eq!(
            order.add("tag_blocks_lock", "mmap_lock"),
            Some(vec![
                "mmap_lock".to_owned(),
                "page_lock".to_owned(),
                "tag_blocks_lock".to_owned()
            ])
        );
        let v = LockViolation::OrderInversion {
            held: "tag_blocks_lock".into(),
            taken: "mmap_lock".into(),
            cycle: vec![
                "mmap_lock".into(),
                "page_lock".into(),
                "tag_blocks_lock".into(),
            ],
        };
        assert_eq!(
            v.to_string(),
            "possible deadlock: `mmap_lock` taken while holding `tag_blocks_lock`, but elsewhere \
             `mmap_lock` was held when `page_lock` was taken, then `page_lock` was held when \
             `tag_blocks_lock` was taken"
        );
    }

    #[test]
    fn merging_orders_of_other_runs_finds_inversions() {
        let mut one = LockOrder::default();
        one.add("a", "b");
        let mut other = LockOrder::default();
        other.add("b", "a");
        other.add("b", "c");
        let found = one.merge(&other);
        assert_eq!(found.len(), 1);
        assert!(
            matches!(&found[0], LockViolation::OrderInversion { held, taken, .. } if held == "b" && taken == "a")
        );
        assert_eq!(one.edges().count(), 3);
    }
}
