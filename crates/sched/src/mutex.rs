//! A sleeping mutex (Linux: `struct mutex`, `mutex_lock()`/`mutex_unlock()`).
//!
//! Owns the data it protects: the guard derefs to it and may be held across
//! awaits (the holder may sleep, as with a Linux mutex).
//!
//! Rules:
//! - Acquiring is a switch point, contended or not, so another CPU can get
//!   there first; free when nothing else is runnable.
//! - A contended acquisition sleeps. Release wakes *every* sleeper; they race
//!   and the scheduler's choice of who runs first decides who gets the lock
//!   (the first to retry wins; the others go back to sleep at once, without a
//!   decision being spent on a retry that must fail). Linux wakes only the
//!   first waiter, but optimistic spinners and lock stealing let other CPUs
//!   overtake it, and its wait list order itself comes from a race, so no
//!   kernel code may depend on waiter order: exploring all orders covers
//!   Linux's and loses nothing.
//! - Only the owner releases (Linux: `DEBUG_LOCKS_WARN_ON(owner != current)`):
//!   releasing from another CPU is a `BUG:` panic.
//! - Recursion deadlocks (reported), as in Linux.
//!
//! Taking and releasing (and the invariant that an owner is set exactly
//! while a guard exists) live in the one-owner core shared with
//! [`crate::SimSpinLock`] (`exclusive.rs`).

use core::fmt;
use core::ops::{Deref, DerefMut};
use std::cell::{Ref, RefMut};

use crate::cpu::CpuId;
use crate::exclusive::{Exclusive, ExclusiveGuard};
use crate::executor::{Sched, WaitKind};

pub struct SimMutex<T> {
    inner: Exclusive<T>,
}

impl<T> SimMutex<T> {
    /// A mutex named `name` in deadlock reports and traces.
    pub fn new(sched: &Sched, name: impl Into<String>, value: T) -> Self {
        let id = sched.register_lock(name.into());
        Self {
            inner: Exclusive::new(sched, id, "mutex", value),
        }
    }

    /// Acquires the mutex, sleeping while another CPU holds it (Linux:
    /// `mutex_lock()`).
    pub async fn lock(&self) -> SimMutexGuard<'_, T> {
        let sched = self.inner.sched();
        sched.might_sleep_on(self.inner.id(), WaitKind::Mutex);
        SimMutexGuard {
            inner: self.inner.lock(WaitKind::Mutex).await,
        }
    }

    /// Acquires the mutex if it is free (Linux: `mutex_trylock()`). Still a
    /// switch point: another CPU may take the mutex just before.
    pub async fn try_lock(&self) -> Option<SimMutexGuard<'_, T>> {
        self.inner.sched().lock_point(self.inner.id()).await;
        let inner = self.inner.acquire_now(true)?;
        Some(SimMutexGuard { inner })
    }

    /// The CPU holding the mutex (Linux: `mutex_is_locked()` plus the owner).
    pub fn holder(&self) -> Option<CpuId> {
        self.inner.holder()
    }

    pub fn name(&self) -> String {
        self.inner.name()
    }

    /// Reads the data outside any task (invariant checkers, expectations).
    /// Panics (`BUG:`) if the mutex is held: observers run between kernel paths.
    pub fn borrow_unlocked(&self) -> Ref<'_, T> {
        self.inner.borrow_unlocked()
    }

    /// Changes the data outside any task (boot-time setup through a shared
    /// handle). Panics (`BUG:`) if the mutex is held.
    pub fn borrow_mut_unlocked(&self) -> RefMut<'_, T> {
        self.inner.borrow_mut_unlocked()
    }

    pub fn get_mut(&mut self) -> &mut T {
        self.inner.get_mut()
    }

    pub fn into_inner(self) -> T {
        self.inner.into_inner()
    }
}

impl<T> fmt::Debug for SimMutex<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SimMutex")
            .field("name", &self.name())
            .field("owner", &self.holder())
            .finish_non_exhaustive()
    }
}

/// Proof of holding a [`SimMutex`]; dropping it releases the mutex.
pub struct SimMutexGuard<'m, T> {
    inner: ExclusiveGuard<'m, T>,
}

impl<T> SimMutexGuard<'_, T> {
    /// The CPU that acquired the mutex.
    pub fn holder(&self) -> CpuId {
        self.inner.holder()
    }
}

impl<T> Deref for SimMutexGuard<'_, T> {
    type Target = T;
    fn deref(&self) -> &T {
        &self.inner
    }
}

impl<T> DerefMut for SimMutexGuard<'_, T> {
    fn deref_mut(&mut self) -> &mut T {
        &mut self.inner
    }
}

impl<T: fmt::Debug> fmt::Debug for SimMutexGuard<'_, T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SimMutexGuard")
            .field("holder", &self.holder())
            .field("data", &*self.inner)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::chooser::{Chooser, Recorder, Replay, Seeded};
    use crate::executor::{BlockedCpu, RunLimits, SchedError, Task};
    use crate::explore::explore_exhaustive;
    use crate::schedule::Schedule;
    use std::cell::{Cell, RefCell};

    /// The racy counter of `executor::tests`, with the read-modify-write under
    /// a mutex: `lock; v = *c; preempt_point; *c = v + 1; unlock`.
    fn locked_counter(chooser: &mut dyn Chooser) -> Result<u32, SchedError> {
        let sched = Sched::new();
        let counter = SimMutex::new(&sched, "counter", 0u32);
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
        sched.run(tasks, chooser, RunLimits::default())?;
        Ok(counter.into_inner())
    }

    #[test]
    fn mutex_protected_counter_never_loses_an_update() {
        // Hand count of the decision tree (A = cpu0, B = cpu1; each task has
        // two switch points: the lock's and the preempt point). Starting with
        // A: A at its lock point, then
        //   A acquires, at its preempt point: A finishes (1) | B to its lock
        //     point, then A finishes (2) | B retries and sleeps (3);
        //   B to its lock point, then A acquires, at its preempt point: A (4)
        //     | B sleeps (5); or B acquires: A sleeps (6) | B finishes (7).
        // 7 schedules starting with A, 7 symmetric ones with B: 14.
        let mut outcomes = Vec::new();
        let report = explore_exhaustive(100, |chooser| {
            outcomes.push(locked_counter(chooser));
            Ok::<(), ()>(())
        })
        .unwrap();
        assert!(report.exhausted);
        assert_eq!(report.schedules, 14);
        assert_eq!(outcomes, vec![Ok(2); 14]);
    }

    #[test]
    fn opposite_lock_order_deadlocks_under_some_schedule() {
        // cpu0: lock a; lock b.  cpu1: lock b; lock a.  (Linux lockdep:
        // "possible circular locking dependency", the AB-BA deadlock.)
        fn ab_ba(chooser: &mut dyn Chooser) -> Result<(), SchedError> {
            let sched = Sched::new();
            let a = SimMutex::new(&sched, "a", ());
            let b = SimMutex::new(&sched, "b", ());
            let tasks: Vec<Task<'_, ()>> = vec![
                Box::pin(async {
                    let _a = a.lock().await;
                    let _b = b.lock().await;
                }),
                Box::pin(async {
                    let _b = b.lock().await;
                    let _a = a.lock().await;
                }),
            ];
            sched.run(tasks, chooser, RunLimits::default())?;
            Ok(())
        }
        // DFS order (stay first): "+3" (cpu0 takes both), "+2.1.+2" (cpu1
        // preempts cpu0 holding a and takes b; cpu0 sleeps on b, cpu1 runs
        // alone and sleeps on a).
        let report = explore_exhaustive(1000, ab_ba).unwrap();
        let failure = report.failure.expect("the AB-BA deadlock is reachable");
        assert_eq!(failure.schedule.to_string(), "+2.1.+2");
        assert_eq!(failure.run, 2);
        let expected = SchedError::Deadlock {
            blocked: vec![
                BlockedCpu {
                    cpu: CpuId::new(0),
                    kind: WaitKind::Mutex,
                    lock: "b".into(),
                    holders: vec![CpuId::new(1)],
                },
                BlockedCpu {
                    cpu: CpuId::new(1),
                    kind: WaitKind::Mutex,
                    lock: "a".into(),
                    holders: vec![CpuId::new(0)],
                },
            ],
        };
        assert_eq!(failure.error, expected);
        assert_eq!(
            expected.to_string(),
            "deadlock: cpu0 waits for mutex `b` held by cpu1; \
             cpu1 waits for mutex `a` held by cpu0"
        );
        // The printed schedule replays to the same deadlock.
        let mut replay = Replay::new(failure.schedule.clone());
        assert_eq!(ab_ba(&mut replay), Err(expected));
        assert_eq!(replay.finish(), Ok(()));
        // And a schedule that lets cpu0 finish first does not deadlock.
        assert_eq!(ab_ba(&mut Replay::new("0.0.0".parse().unwrap())), Ok(()));
    }

    #[test]
    fn release_wakes_all_waiters_and_the_schedule_picks_the_winner() {
        // cpu0 holds the mutex across a preempt point while cpu1 and cpu2
        // sleep on it; on release both wake and whichever the schedule runs
        // first acquires. The other goes back to sleep without a decision.
        fn order(schedule: &str) -> (Vec<u32>, Schedule) {
            let sched = Sched::new();
            let m = SimMutex::new(&sched, "m", Vec::new());
            let tasks: Vec<Task<'_, ()>> = (0..3)
                .map(|_| {
                    let (sched, m) = (&sched, &m);
                    Box::pin(async move {
                        let mut g = m.lock().await;
                        g.push(sched.current_cpu().as_u32());
                        sched.preempt_point().await;
                    }) as Task<'_, ()>
                })
                .collect();
            let mut rec = Recorder::new(Replay::new(schedule.parse().unwrap()));
            sched.run(tasks, &mut rec, RunLimits::default()).unwrap();
            (m.into_inner(), rec.into_parts().1)
        }
        // Start cpu0 (d1), cpu0 acquires at its lock point (d2: 0 of 0,1,2),
        // cpu1 (d3) and cpu2 (d4) sleep at their first retry (d3: at cpu0's
        // preempt point pick 1; cpu1's lock point d4: pick 1, it sleeps;
        // d5: among 0,2 pick 2; cpu2's lock point d6 pick 2, sleeps). cpu0
        // runs alone and releases: cpu1 and cpu2 wake. d7 picks the winner.
        let (log, _) = order("0.0.1.1.2.2.2");
        assert_eq!(log, [0, 2, 1]);
        let (log, _) = order("0.0.1.1.2.2.1");
        assert_eq!(log, [0, 1, 2]);
    }

    #[test]
    fn try_lock_fails_while_held_and_is_a_switch_point() {
        let sched = Sched::new();
        let m = SimMutex::new(&sched, "m", 0);
        let results = RefCell::new(Vec::new());
        let tasks: Vec<Task<'_, ()>> = vec![
            Box::pin(async {
                let _g = m.lock().await;
                sched.preempt_point().await;
            }),
            Box::pin(async {
                let acquired = m.try_lock().await.is_some();
                results.borrow_mut().push(acquired);
            }),
        ];
        // cpu0 starts, takes the lock, at its preempt point cpu1 runs to its
        // try-lock point, then tries while cpu0 holds the lock.
        sched
            .run(
                tasks,
                &mut Replay::new("0.0.1.1".parse().unwrap()),
                RunLimits::default(),
            )
            .unwrap();
        assert_eq!(results.take(), [false]);
        // With the roles interleaved the other way, it succeeds.
        let tasks: Vec<Task<'_, ()>> = vec![
            Box::pin(async {
                let _g = m.lock().await;
            }),
            Box::pin(async {
                let acquired = m.try_lock().await.is_some();
                results.borrow_mut().push(acquired);
            }),
        ];
        sched
            .run(
                tasks,
                &mut Replay::new("1.1".parse().unwrap()),
                RunLimits::default(),
            )
            .unwrap();
        assert_eq!(results.take(), [true]);
    }

    #[test]
    fn seeded_runs_never_break_mutual_exclusion() {
        // Three CPUs, each enters the critical section twice with preempt
        // points inside; `inside` counts CPUs in it (Linux: the mutex's
        // one-owner guarantee).
        for seed in 0..20 {
            let sched = Sched::new();
            let m = SimMutex::new(&sched, "m", 0u32);
            let inside = Cell::new(0u32);
            let tasks: Vec<Task<'_, ()>> = (0..3)
                .map(|_| {
                    let (sched, m, inside) = (&sched, &m, &inside);
                    Box::pin(async move {
                        for _ in 0..2 {
                            let mut g = m.lock().await;
                            inside.set(inside.get() + 1);
                            assert_eq!(inside.get(), 1, "two CPUs in the critical section");
                            sched.preempt_point().await;
                            *g += 1;
                            inside.set(inside.get() - 1);
                        }
                    }) as Task<'_, ()>
                })
                .collect();
            sched
                .run(tasks, &mut Seeded::new(seed), RunLimits::default())
                .unwrap();
            assert_eq!(m.into_inner(), 6);
        }
    }

    #[test]
    #[should_panic(expected = "BUG: mutex `m` inspected while cpu0 holds it")]
    fn inspecting_a_held_mutex_is_a_bug() {
        let sched = Sched::new();
        let m = SimMutex::new(&sched, "m", 0);
        let _ = sched.block_on(
            async {
                let _g = m.lock().await;
                let _ = *m.borrow_unlocked();
            },
            RunLimits::default(),
        );
    }

    #[test]
    fn outside_a_task_the_data_is_reachable_when_unlocked() {
        let sched = Sched::new();
        let mut m = SimMutex::new(&sched, "m", 1);
        *m.borrow_mut_unlocked() += 1;
        *m.get_mut() += 1;
        assert_eq!(*m.borrow_unlocked(), 3);
        assert_eq!(m.name(), "m");
        assert_eq!(m.holder(), None);
    }
}
