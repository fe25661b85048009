//! A spin lock (Linux: `spinlock_t`, `spin_lock()`/`spin_unlock()`), such as
//! the page-table lock.
//!
//! Owns the data it protects, like [`crate::SimMutex`]. What differs:
//! - its holder is in **atomic context**: while a CPU holds one, anything
//!   that may sleep (a sleeping lock, a [`Sched::might_sleep`] point) is
//!   recorded as a violation ([`crate::lockcheck`], invariant 9 of
//!   `docs/model.md` §4);
//! - a contended acquisition spins: the model lets the CPU wait as a
//!   sleeper does (the scheduler runs the others until the release), which
//!   is the same set of interleavings, and it is not itself a sleep.
//!
//! Acquiring is a switch point, so another CPU can get there first; only the
//! owner releases (`BUG:` otherwise); recursion deadlocks, as in Linux.

use core::fmt;
use core::ops::{Deref, DerefMut};
use std::cell::{Ref, RefMut};

use crate::cpu::CpuId;
use crate::exclusive::{Exclusive, ExclusiveGuard};
use crate::executor::{Sched, WaitKind};

pub struct SimSpinLock<T> {
    inner: Exclusive<T>,
}

impl<T> SimSpinLock<T> {
    /// A spin lock named `name` in reports and traces.
    pub fn new(sched: &Sched, name: impl Into<String>, value: T) -> Self {
        let id = sched.register_spinlock(name.into());
        Self {
            inner: Exclusive::new(sched, id, "spin lock", value),
        }
    }

    /// Acquires the lock, spinning while another CPU holds it.
    pub async fn lock(&self) -> SimSpinGuard<'_, T> {
        SimSpinGuard {
            inner: self.inner.lock(WaitKind::Spin).await,
        }
    }

    pub fn holder(&self) -> Option<CpuId> {
        self.inner.holder()
    }

    pub fn name(&self) -> String {
        self.inner.name()
    }

    /// Reads the data outside any task (checkers). Panics (`BUG:`) while
    /// held.
    pub fn borrow_unlocked(&self) -> Ref<'_, T> {
        self.inner.borrow_unlocked()
    }

    /// Changes the data outside any task. Panics (`BUG:`) while held.
    pub fn borrow_mut_unlocked(&self) -> RefMut<'_, T> {
        self.inner.borrow_mut_unlocked()
    }

    pub fn into_inner(self) -> T {
        self.inner.into_inner()
    }
}

impl<T> fmt::Debug for SimSpinLock<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SimSpinLock")
            .field("name", &self.name())
            .field("owner", &self.holder())
            .finish_non_exhaustive()
    }
}

/// Proof of holding a [`SimSpinLock`]; dropping it releases the lock.
pub struct SimSpinGuard<'l, T> {
    inner: ExclusiveGuard<'l, T>,
}

impl<T> Deref for SimSpinGuard<'_, T> {
    type Target = T;
    fn deref(&self) -> &T {
        &self.inner
    }
}

impl<T> DerefMut for SimSpinGuard<'_, T> {
    fn deref_mut(&mut self) -> &mut T {
        &mut self.inner
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::chooser::{Chooser, Seeded};
    use crate::executor::{RunLimits, Task};
    use crate::explore::explore_exhaustive;
    use crate::lockcheck::LockViolation;
    use crate::mutex::SimMutex;

    #[test]
    fn sleeping_under_a_spin_lock_is_reported_naming_both() {
        let sched = Sched::new();
        let ptl = SimSpinLock::new(&sched, "ptl", ());
        let m = SimMutex::new(&sched, "tag_blocks_lock", ());
        let task: Task<'_, ()> = Box::pin(async {
            let _ptl = ptl.lock().await;
            sched.might_sleep("allocates with reclaim");
            let _m = m.lock().await;
        });
        sched
            .run(vec![task], &mut Seeded::new(0), RunLimits::default())
            .unwrap();
        let found = sched.take_lock_violations();
        let cpu = CpuId::new(0);
        assert_eq!(
            found,
            [
                LockViolation::SleepInAtomic {
                    cpu,
                    spinlock: "ptl".into(),
                    what: "allocates with reclaim".into()
                },
                LockViolation::SleepInAtomic {
                    cpu,
                    spinlock: "ptl".into(),
                    what: "takes mutex `tag_blocks_lock`".into()
                },
            ]
        );
        assert_eq!(
            found[1].to_string(),
            "sleeping in atomic context: cpu0 takes mutex `tag_blocks_lock` while holding spinlock `ptl`"
        );
        assert!(sched.take_lock_violations().is_empty(), "taken once");
    }

    #[test]
    fn sleeping_after_the_release_is_fine() {
        let sched = Sched::new();
        let ptl = SimSpinLock::new(&sched, "ptl", 0u32);
        let m = SimMutex::new(&sched, "m", ());
        let task: Task<'_, ()> = Box::pin(async {
            {
                let mut v = ptl.lock().await;
                *v += 1;
            }
            sched.might_sleep("allocates");
            let _m = m.lock().await;
            let _ptl = ptl.lock().await;
        });
        sched
            .run(vec![task], &mut Seeded::new(0), RunLimits::default())
            .unwrap();
        assert_eq!(sched.take_lock_violations(), []);
        assert_eq!(*ptl.borrow_unlocked(), 1);
    }

    #[test]
    fn a_spin_lock_excludes_and_every_order_is_explored() {
        fn program(chooser: &mut dyn Chooser) -> Result<u32, String> {
            let sched = Sched::new();
            let counter = SimSpinLock::new(&sched, "counter", 0u32);
            let tasks: Vec<Task<'_, ()>> = (0..2)
                .map(|_| {
                    let (sched, counter) = (&sched, &counter);
                    Box::pin(async move {
                        let mut c = counter.lock().await;
                        let v = *c;
                        sched.preempt_point().await;
                        *c = v + 1;
                    }) as Task<'_, ()>
                })
                .collect();
            sched
                .run(tasks, chooser, RunLimits::default())
                .map_err(|e| e.to_string())?;
            Ok(counter.into_inner())
        }
        let mut results = Vec::new();
        let report = explore_exhaustive(100, |chooser| {
            results.push(program(chooser));
            Ok::<(), ()>(())
        })
        .unwrap();
        assert!(report.exhausted);
        assert!(results.iter().all(|r| *r == Ok(2)), "{results:?}");
    }

    #[test]
    fn a_trylock_records_no_order() {
        // A fault takes a page lock, then `tag_blocks_lock`; a claim's
        // migration holds `tag_blocks_lock` and only trylocks page locks.
        let sched = Sched::new();
        let pages = crate::LockTable::new(&sched, "page_lock");
        let blocks = SimMutex::new(&sched, "tag_blocks_lock", ());
        let task: Task<'_, ()> = Box::pin(async {
            {
                let _page = pages.lock(1u64).await;
                let _blocks = blocks.lock().await;
            }
            let _blocks = blocks.lock().await;
            assert!(pages.try_lock(2u64).await.is_some());
        });
        sched
            .run(vec![task], &mut Seeded::new(0), RunLimits::default())
            .unwrap();
        assert_eq!(sched.take_lock_violations(), []);
        let order = sched.lock_order();
        let found: Vec<(&str, &str)> = order.edges().collect();
        assert_eq!(found, [("page_lock", "tag_blocks_lock")]);
    }

    #[test]
    fn opposite_orders_on_two_runs_are_a_possible_deadlock() {
        // Each run takes the locks in one order and never deadlocks; the
        // second run's order closes a cycle with the first's.
        let sched = Sched::new();
        let a = SimMutex::new(&sched, "a", ());
        let b = SimSpinLock::new(&sched, "b", ());
        let first: Task<'_, ()> = Box::pin(async {
            let _a = a.lock().await;
            let _b = b.lock().await;
        });
        sched
            .run(vec![first], &mut Seeded::new(0), RunLimits::default())
            .unwrap();
        assert_eq!(sched.take_lock_violations(), []);
        let second: Task<'_, ()> = Box::pin(async {
            let _b = b.lock().await;
            drop(_b);
            let _b = b.lock().await;
            // Taking the mutex under the spin lock is also a sleep in
            // atomic context.
            let _a = a.lock().await;
        });
        sched
            .run(vec![second], &mut Seeded::new(0), RunLimits::default())
            .unwrap();
        let found = sched.take_lock_violations();
        assert!(
            found.iter().any(|v| matches!(v, LockViolation::OrderInversion { held, taken, .. } if held == "b" && taken == "a")),
            "{found:?}"
        );
        // Carried to another machine (the next schedule of an
        // exploration), the orders seen report the inversion there too.
        let other = Sched::new();
        other.merge_lock_order(&sched.lock_order());
        assert_eq!(other.take_lock_violations().len(), 1);
    }
}
