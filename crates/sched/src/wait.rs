//! Wait queues and completions (Linux: `wait_queue_head_t` with
//! `wait_event()`/`wake_up_all()`, and `struct completion`).
//!
//! A [`WaitQueue`] parks tasks until a condition over state kept elsewhere
//! holds. Checking the condition and going to sleep happen with no switch
//! point in between, so the lost-wake-up race that Linux closes with
//! `prepare_to_wait()` + `set_current_state()` cannot happen here either:
//! a waker that makes the condition true and calls [`WaitQueue::wake_all`]
//! always finds the sleeper. Every waker must call `wake_all` after changing
//! the state the condition reads (no wake-up, no progress: reported as a
//! deadlock naming the queue).
//!
//! A [`Completion`] counts `complete()` calls; each `wait()` consumes one,
//! and `complete_all()` satisfies every present and future waiter until
//! `reinit()`.

use core::fmt;
use std::cell::Cell;

use crate::executor::{LockAddr, LockId, Sched, Wait, WaitKind};

pub struct WaitQueue {
    sched: Sched,
    id: LockId,
}

impl WaitQueue {
    pub fn new(sched: &Sched, name: impl Into<String>) -> Self {
        Self {
            sched: sched.clone(),
            id: sched.register_lock(name.into()),
        }
    }

    fn addr(&self) -> LockAddr {
        LockAddr::whole(self.id)
    }

    /// Returns once `condition()` holds, sleeping until a wake-up each time
    /// it does not (Linux: `wait_event()`). A switch point on entry.
    pub async fn wait_until(&self, mut condition: impl FnMut() -> bool) {
        self.sched.preempt_point().await;
        while !condition() {
            let wait = Wait {
                at: self.addr(),
                kind: WaitKind::Event,
                key: None,
            };
            self.sched.sleep(wait).await;
        }
    }

    /// Makes every sleeper runnable to re-check its condition (Linux:
    /// `wake_up_all()`). Not a switch point.
    pub fn wake_all(&self) {
        self.sched.wake(self.addr(), |_| true);
    }

    /// Sends woken sleepers back to sleep without re-checking: only when the
    /// caller knows their conditions are false again.
    fn requeue(&self) {
        self.sched.requeue_woken(self.addr(), |_| true);
    }

    pub fn name(&self) -> String {
        self.sched.lock_name(self.id)
    }
}

impl fmt::Debug for WaitQueue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WaitQueue")
            .field("name", &self.name())
            .finish()
    }
}

/// Linux: `struct completion`.
pub struct Completion {
    queue: WaitQueue,
    /// `u32::MAX` after `complete_all()` (Linux: `UINT_MAX`).
    done: Cell<u32>,
}

impl Completion {
    pub fn new(sched: &Sched, name: impl Into<String>) -> Self {
        Self {
            queue: WaitQueue::new(sched, name),
            done: Cell::new(0),
        }
    }

    /// Linux: `wait_for_completion()`. A switch point on entry.
    pub async fn wait(&self) {
        self.queue.wait_until(|| self.done.get() > 0).await;
        let done = self.done.get();
        if done != u32::MAX {
            self.done.set(done - 1);
            if done == 1 {
                // Consumed the last one: the other woken waiters would fail.
                self.queue.requeue();
            }
        }
    }

    /// Linux: `complete()`: lets one waiter through.
    pub fn complete(&self) {
        let done = self.done.get();
        if done != u32::MAX {
            self.done.set(
                done.checked_add(1)
                    .filter(|&d| d != u32::MAX)
                    .expect("BUG: completion count overflow"),
            );
        }
        self.queue.wake_all();
    }

    /// Linux: `complete_all()`: lets every waiter through until `reinit`.
    pub fn complete_all(&self) {
        self.done.set(u32::MAX);
        self.queue.wake_all();
    }

    /// Linux: `reinit_completion()`.
    pub fn reinit(&self) {
        self.done.set(0);
    }

    /// Linux: `completion_done()`: whether a `wait()` would not sleep.
    pub fn is_done(&self) -> bool {
        self.done.get() > 0
    }
}

impl fmt::Debug for Completion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Completion")
            .field("name", &self.queue.name())
            .field("done", &self.done.get())
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::chooser::{Chooser, Seeded};
    use crate::cpu::CpuId;
    use crate::executor::{BlockedCpu, RunLimits, SchedError, Task};
    use crate::explore::explore_exhaustive;
    use std::cell::RefCell;

    #[test]
    fn wait_until_sees_every_wake_up_in_every_schedule() {
        // cpu0 waits for `ready`; cpu1 sets it after a preempt point and wakes
        // the queue. No schedule may lose the wake-up.
        let report = explore_exhaustive(1000, |c: &mut dyn Chooser| {
            let sched = Sched::new();
            let queue = WaitQueue::new(&sched, "ready_wq");
            let ready = Cell::new(false);
            let tasks: Vec<Task<'_, ()>> = vec![
                Box::pin(async {
                    queue.wait_until(|| ready.get()).await;
                    assert!(ready.get());
                }),
                Box::pin(async {
                    sched.preempt_point().await;
                    ready.set(true);
                    queue.wake_all();
                }),
            ];
            sched.run(tasks, c, RunLimits::default()).map(|_| ())
        })
        .unwrap();
        assert!(report.exhausted);
        assert_eq!(report.failure, None);
    }

    #[test]
    fn a_missing_wake_up_is_a_deadlock_naming_the_queue() {
        let sched = Sched::new();
        let queue = WaitQueue::new(&sched, "ready_wq");
        let err = sched.block_on(queue.wait_until(|| false), RunLimits::default());
        let expected = SchedError::Deadlock {
            blocked: vec![BlockedCpu {
                cpu: CpuId::new(0),
                kind: WaitKind::Event,
                lock: "ready_wq".into(),
                holders: vec![],
            }],
        };
        assert_eq!(err, Err(expected.clone()));
        assert_eq!(
            expected.to_string(),
            "deadlock: cpu0 waits for wait queue `ready_wq`"
        );
    }

    #[test]
    fn completion_counts_and_complete_all_releases_everyone() {
        for seed in 0..20 {
            let sched = Sched::new();
            let done = Completion::new(&sched, "done");
            let passed = RefCell::new(Vec::new());
            // cpu0 completes twice; cpu1..=3 wait: two get through, one waits
            // until complete_all at the end of cpu0.
            let mut tasks: Vec<Task<'_, ()>> = vec![Box::pin(async {
                done.complete();
                sched.preempt_point().await;
                done.complete();
                while passed.borrow().len() < 2 {
                    sched.preempt_point().await;
                }
                assert_eq!(passed.borrow().len(), 2, "complete() let a third through");
                done.complete_all();
            })];
            for _ in 1..=3 {
                tasks.push(Box::pin(async {
                    done.wait().await;
                    passed.borrow_mut().push(sched.current_cpu());
                }));
            }
            sched
                .run(tasks, &mut Seeded::new(seed), RunLimits::default())
                .unwrap();
            assert_eq!(passed.borrow().len(), 3);
            assert!(done.is_done());
            done.reinit();
            assert!(!done.is_done());
        }
    }
}
