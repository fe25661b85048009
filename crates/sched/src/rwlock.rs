//! A sleeping reader-writer lock (Linux: `struct rw_semaphore`, as used for
//! `mmap_lock`: `down_read()`, `down_write()`, `downgrade_write()`).
//!
//! Rule (writer preference, as Linux rwsem since v5.3 roughly behaves):
//! - a reader gets in when no writer holds the lock *and no writer sleeps
//!   waiting for it*. Linux: with waiters queued, `down_read()` takes the
//!   slow path and, when readers own the lock, queues behind the writer
//!   (`rwsem_down_read_slowpath()`: "to prevent a constant stream of readers
//!   from starving a sleeping writer"). Consequence, as in Linux: taking the
//!   read side recursively can deadlock against a waiting writer;
//! - a writer gets in when nobody holds the lock;
//! - when the lock becomes free (last reader or the writer leaves), every
//!   sleeper wakes and the schedule decides who retries first. A woken writer
//!   is no longer "sleeping", so a woken or newly arriving reader may get in
//!   before it: Linux's reader lock stealing when the lock is free and no
//!   hand-off is pending. Whoever gets in first sends the woken tasks that
//!   can no longer succeed back to sleep without a decision;
//! - `downgrade` turns the writer into a reader and wakes the sleeping
//!   readers unless a writer sleeps (Linux: `rwsem_downgrade_wake()` wakes
//!   readers at the head of the queue).
//!
//! Not modelled: Linux's hand-off bit (a writer starved for 4 ms gets the
//! lock next) and optimistic spinning; both change timing, not which
//! interleavings are possible. Try-locks fail where Linux's fail: with a
//! writer holding or any writer sleeping (for reads), with any holder (for
//! writes).
//!
//! Invariant: `writer.is_some()` implies `readers == 0`; the `RefCell` is
//! borrowed mutably by the write guard, shared by each read guard.

use core::fmt;
use core::ops::{Deref, DerefMut};
use std::cell::{Cell, Ref, RefCell, RefMut};

use crate::cpu::CpuId;
use crate::executor::{HoldKind, LockAddr, LockId, Sched, Wait, WaitKind};

pub struct SimRwLock<T> {
    sched: Sched,
    id: LockId,
    writer: Cell<Option<CpuId>>,
    readers: Cell<u32>,
    data: RefCell<T>,
}

impl<T> SimRwLock<T> {
    pub fn new(sched: &Sched, name: impl Into<String>, value: T) -> Self {
        Self {
            sched: sched.clone(),
            id: sched.register_lock(name.into()),
            writer: Cell::new(None),
            readers: Cell::new(0),
            data: RefCell::new(value),
        }
    }

    fn addr(&self) -> LockAddr {
        LockAddr::whole(self.id)
    }

    /// Acquires the lock shared (Linux: `down_read()`, `mmap_read_lock()`).
    pub async fn read(&self) -> SimReadGuard<'_, T> {
        self.sched.might_sleep_on(self.id, WaitKind::Read);
        self.sched
            .acquire(self.id, || {
                self.read_now().ok_or_else(|| self.wait(WaitKind::Read))
            })
            .await
    }

    /// Acquires the lock exclusive (Linux: `down_write()`, `mmap_write_lock()`).
    pub async fn write(&self) -> SimWriteGuard<'_, T> {
        self.sched.might_sleep_on(self.id, WaitKind::Write);
        self.sched
            .acquire(self.id, || {
                self.write_now().ok_or_else(|| self.wait(WaitKind::Write))
            })
            .await
    }

    /// Linux: `down_read_trylock()`, `mmap_read_trylock()`. A switch point.
    pub async fn try_read(&self) -> Option<SimReadGuard<'_, T>> {
        self.sched.lock_point(self.id).await;
        self.read_now()
    }

    /// Linux: `down_write_trylock()`, `mmap_write_trylock()`. A switch point.
    pub async fn try_write(&self) -> Option<SimWriteGuard<'_, T>> {
        self.sched.lock_point(self.id).await;
        self.write_now()
    }

    fn wait(&self, kind: WaitKind) -> Wait {
        Wait {
            at: self.addr(),
            kind,
            key: None,
        }
    }

    fn read_now(&self) -> Option<SimReadGuard<'_, T>> {
        if self.writer.get().is_some() || self.sched.has_sleeper(self.addr(), WaitKind::Write) {
            return None;
        }
        let cpu = self
            .sched
            .note_acquired(self.addr(), HoldKind::Shared, None, false);
        self.readers.set(
            self.readers
                .get()
                .checked_add(1)
                .expect("BUG: reader count overflow"),
        );
        self.sched
            .requeue_woken(self.addr(), |kind| kind == WaitKind::Write);
        let data = self
            .data
            .try_borrow()
            .expect("BUG: readable rwsem with its data borrowed mutably");
        Some(SimReadGuard {
            lock: self,
            cpu,
            data,
        })
    }

    fn write_now(&self) -> Option<SimWriteGuard<'_, T>> {
        if self.writer.get().is_some() || self.readers.get() > 0 {
            return None;
        }
        let cpu = self
            .sched
            .note_acquired(self.addr(), HoldKind::Exclusive, None, false);
        self.writer.set(Some(cpu));
        self.sched.requeue_woken(self.addr(), |_| true);
        let data = self
            .data
            .try_borrow_mut()
            .expect("BUG: free rwsem with its data borrowed");
        Some(SimWriteGuard {
            lock: self,
            cpu,
            data: Some(data),
        })
    }

    /// The CPU holding the lock for writing.
    pub fn writer(&self) -> Option<CpuId> {
        self.writer.get()
    }

    /// How many read guards exist.
    pub fn readers(&self) -> u32 {
        self.readers.get()
    }

    pub fn name(&self) -> String {
        self.sched.lock_name(self.id)
    }

    /// Reads the data outside any task. Panics (`BUG:`) if a writer holds it.
    pub fn borrow_unlocked(&self) -> Ref<'_, T> {
        if let Some(cpu) = self.writer.get() {
            panic!("BUG: rwsem `{}` inspected while {cpu} writes", self.name());
        }
        self.data.borrow()
    }

    /// Changes the data outside any task. Panics (`BUG:`) if the lock is held.
    pub fn borrow_mut_unlocked(&self) -> RefMut<'_, T> {
        if self.writer.get().is_some() || self.readers.get() > 0 {
            panic!("BUG: rwsem `{}` modified while held", self.name());
        }
        self.data.borrow_mut()
    }

    pub fn get_mut(&mut self) -> &mut T {
        self.data.get_mut()
    }

    pub fn into_inner(self) -> T {
        self.data.into_inner()
    }

    fn release_read(&self, cpu: CpuId) {
        let left = self
            .readers
            .get()
            .checked_sub(1)
            .expect("BUG: read release without readers");
        self.readers.set(left);
        self.sched.note_released(self.addr(), cpu, None);
        if left == 0 {
            self.sched.wake(self.addr(), |_| true);
        }
    }
}

impl<T> fmt::Debug for SimRwLock<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SimRwLock")
            .field("name", &self.name())
            .field("writer", &self.writer.get())
            .field("readers", &self.readers.get())
            .finish_non_exhaustive()
    }
}

/// Shared access to a [`SimRwLock`]; dropping it is `up_read()`.
pub struct SimReadGuard<'l, T> {
    lock: &'l SimRwLock<T>,
    cpu: CpuId,
    data: Ref<'l, T>,
}

impl<T> Deref for SimReadGuard<'_, T> {
    type Target = T;
    fn deref(&self) -> &T {
        &self.data
    }
}

impl<T> Drop for SimReadGuard<'_, T> {
    fn drop(&mut self) {
        // Linux lets another task `up_read()` (the `_non_owner` variants), so
        // no owner check here.
        self.lock.release_read(self.cpu);
    }
}

/// Exclusive access to a [`SimRwLock`]; dropping it is `up_write()`.
pub struct SimWriteGuard<'l, T> {
    lock: &'l SimRwLock<T>,
    cpu: CpuId,
    /// `None` only inside `downgrade`, which disarms `Drop`.
    data: Option<RefMut<'l, T>>,
}

impl<'l, T> SimWriteGuard<'l, T> {
    /// Becomes a reader without letting any writer in between (Linux:
    /// `downgrade_write()`, `mmap_write_downgrade()`). Not a switch point.
    pub fn downgrade(mut self) -> SimReadGuard<'l, T> {
        let lock = self.lock;
        let cpu = self.cpu;
        drop(self.data.take());
        drop(self);
        lock.writer.set(None);
        lock.readers.set(1);
        lock.sched.note_downgraded(lock.addr(), cpu);
        if !lock.sched.has_sleeper(lock.addr(), WaitKind::Write) {
            lock.sched.wake(lock.addr(), |kind| kind == WaitKind::Read);
        }
        let data = lock
            .data
            .try_borrow()
            .expect("BUG: downgraded rwsem with its data borrowed mutably");
        SimReadGuard { lock, cpu, data }
    }
}

impl<T> Deref for SimWriteGuard<'_, T> {
    type Target = T;
    fn deref(&self) -> &T {
        self.data.as_ref().expect("BUG: write guard without data")
    }
}

impl<T> DerefMut for SimWriteGuard<'_, T> {
    fn deref_mut(&mut self) -> &mut T {
        self.data.as_mut().expect("BUG: write guard without data")
    }
}

impl<T> Drop for SimWriteGuard<'_, T> {
    fn drop(&mut self) {
        if self.data.is_none() {
            return; // downgraded: the read guard now owns the hold
        }
        let lock = self.lock;
        if let Some(cpu) = lock.sched.releasing_cpu()
            && cpu != self.cpu
        {
            panic!(
                "BUG: rwsem `{}` write-released by {cpu} but owned by {}",
                lock.name(),
                self.cpu
            );
        }
        self.data = None;
        lock.writer.set(None);
        lock.sched.note_released(lock.addr(), self.cpu, None);
        lock.sched.wake(lock.addr(), |_| true);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::chooser::{Chooser, Replay};
    use crate::executor::{BlockedCpu, RunLimits, SchedError, Task};
    use crate::explore::explore_exhaustive;

    #[derive(Clone, Copy, Debug, PartialEq, Eq)]
    enum Role {
        Reader,
        Writer,
    }

    #[derive(Default)]
    struct Inside {
        readers: Cell<u32>,
        writers: Cell<u32>,
        max_readers: Cell<u32>,
    }

    /// Each CPU takes the lock in its role, holds it across a preempt point,
    /// and checks the rwsem exclusion rule while inside.
    fn program(roles: &[Role], chooser: &mut dyn Chooser) -> Result<u32, SchedError> {
        let sched = Sched::new();
        let lock = SimRwLock::new(&sched, "mmap_lock", 0u32);
        let inside = Inside::default();
        let tasks: Vec<Task<'_, ()>> = roles
            .iter()
            .map(|&role| {
                let (sched, lock, inside) = (&sched, &lock, &inside);
                Box::pin(async move {
                    match role {
                        Role::Reader => {
                            let _g = lock.read().await;
                            inside.readers.set(inside.readers.get() + 1);
                            let r = inside.readers.get();
                            inside.max_readers.set(inside.max_readers.get().max(r));
                            assert_eq!(inside.writers.get(), 0, "reader beside a writer");
                            sched.preempt_point().await;
                            inside.readers.set(inside.readers.get() - 1);
                        }
                        Role::Writer => {
                            let mut g = lock.write().await;
                            inside.writers.set(inside.writers.get() + 1);
                            assert_eq!(inside.writers.get(), 1, "two writers");
                            assert_eq!(inside.readers.get(), 0, "writer beside a reader");
                            sched.preempt_point().await;
                            *g += 1;
                            inside.writers.set(inside.writers.get() - 1);
                        }
                    }
                }) as Task<'_, ()>
            })
            .collect();
        sched.run(tasks, chooser, RunLimits::default())?;
        assert_eq!((lock.readers(), lock.writer()), (0, None));
        Ok(inside.max_readers.get())
    }

    #[test]
    fn readers_share_the_lock() {
        // Two readers never block each other, so every interleaving of their
        // 2 + 1 segments happens: C(6, 3) = 20 schedules (see explore.rs for
        // the segment count). In some, both are inside at once.
        let mut max = Vec::new();
        let report = explore_exhaustive(100, |c| {
            max.push(program(&[Role::Reader, Role::Reader], c).unwrap());
            Ok::<(), ()>(())
        })
        .unwrap();
        assert_eq!((report.schedules, report.exhausted), (20, true));
        assert!(max.contains(&2));
        assert!(max.contains(&1));
    }

    #[test]
    fn a_writer_excludes_readers_and_writers_in_every_schedule() {
        // The assertions inside `program` check exclusion at every step.
        for roles in [
            &[Role::Writer, Role::Reader, Role::Reader][..],
            &[Role::Reader, Role::Writer, Role::Writer][..],
        ] {
            let report = explore_exhaustive(100_000, |c| program(roles, c).map(|_| ())).unwrap();
            assert!(report.exhausted);
            assert!(report.failure.is_none());
            assert!(report.schedules > 20);
        }
    }

    #[test]
    fn readers_woken_together_get_in_together() {
        // cpu0 writes across a preempt point; cpu1 and cpu2 sleep as readers
        // (d1-d6). cpu0 runs alone and releases: both wake. d7 runs cpu1,
        // which gets in; cpu2 must still be runnable (a reader does not send
        // woken readers back to sleep) and joins it at d8.
        let mut replay = Replay::with_fallback(
            "0.0.1.1.2.2.1.2".parse().unwrap(),
            crate::chooser::OnExhausted::LowestRunnable,
        );
        let max_readers = program(&[Role::Writer, Role::Reader, Role::Reader], &mut replay);
        assert_eq!(max_readers, Ok(2));
        assert!(replay.used() > 8);
    }

    #[test]
    fn a_sleeping_writer_keeps_new_readers_out() {
        // cpu0 reads and, while reading, takes the read side again; cpu1
        // wants to write. If cpu1 sleeps between the two reads, cpu0's second
        // read queues behind it and neither can proceed. Linux: the same
        // (recursive read of an rwsem is forbidden; lockdep reports it).
        fn recursive_read(chooser: &mut dyn Chooser) -> Result<(), SchedError> {
            let sched = Sched::new();
            let lock = SimRwLock::new(&sched, "mmap_lock", ());
            let tasks: Vec<Task<'_, ()>> = vec![
                Box::pin(async {
                    let _outer = lock.read().await;
                    sched.preempt_point().await;
                    let _inner = lock.read().await;
                }),
                Box::pin(async {
                    let _w = lock.write().await;
                }),
            ];
            sched.run(tasks, chooser, RunLimits::default()).map(|_| ())
        }
        // cpu0 starts and reads (d1, d2), at its preempt point cpu1 runs to
        // its lock point (d3) and sleeps (d4); cpu0 runs alone into the read.
        let err = recursive_read(&mut Replay::new("0.0.1.1".parse().unwrap()));
        assert_eq!(
            err,
            Err(SchedError::Deadlock {
                blocked: vec![
                    BlockedCpu {
                        cpu: CpuId::new(0),
                        kind: WaitKind::Read,
                        lock: "mmap_lock".into(),
                        holders: vec![CpuId::new(0)],
                    },
                    BlockedCpu {
                        cpu: CpuId::new(1),
                        kind: WaitKind::Write,
                        lock: "mmap_lock".into(),
                        holders: vec![CpuId::new(0)],
                    },
                ]
            })
        );
        // Without the sleeping writer, recursion is harmless.
        assert_eq!(
            recursive_read(&mut Replay::new("0.0.0.0".parse().unwrap())),
            Ok(())
        );
    }

    #[test]
    fn try_locks_follow_linux() {
        let sched = Sched::new();
        let lock = SimRwLock::new(&sched, "l", ());
        let seen = RefCell::new(Vec::new());
        let tasks: Vec<Task<'_, ()>> = vec![
            Box::pin(async {
                let _r = lock.read().await;
                sched.preempt_point().await;
                // cpu1 sleeps as a writer now: down_read_trylock fails.
                let failed = lock.try_read().await.is_none();
                seen.borrow_mut()
                    .push(("try_read with a writer asleep fails", failed));
            }),
            Box::pin(async {
                let blocked = lock.try_write().await.is_none();
                seen.borrow_mut()
                    .push(("try_write with a reader fails", blocked));
                let _w = lock.write().await;
            }),
        ];
        // d1 cpu0, d2 cpu0 reads; at its point d3 cpu1 to its try point; d4
        // cpu1 fails and reaches its lock point; d5 cpu1 sleeps; cpu0 alone.
        sched
            .run(
                tasks,
                &mut Replay::new("0.0.1.1.1".parse().unwrap()),
                RunLimits::default(),
            )
            .unwrap();
        let seen = seen.into_inner();
        assert_eq!(seen.len(), 2);
        assert!(seen.iter().all(|&(_, ok)| ok), "{seen:?}");
    }

    #[test]
    fn downgrade_lets_readers_in_but_not_writers() {
        let sched = Sched::new();
        let lock = SimRwLock::new(&sched, "mmap_lock", 0u32);
        let log = RefCell::new(Vec::new());
        let tasks: Vec<Task<'_, ()>> = vec![
            Box::pin(async {
                let mut w = lock.write().await;
                *w = 7;
                sched.preempt_point().await;
                let r = w.downgrade();
                assert_eq!((lock.readers(), lock.writer()), (1, None));
                log.borrow_mut().push("cpu0 downgraded");
                sched.preempt_point().await;
                log.borrow_mut().push("cpu0 still reads");
                drop(r);
            }),
            Box::pin(async {
                let r = lock.read().await;
                assert_eq!(*r, 7);
                log.borrow_mut().push("cpu1 reads");
            }),
        ];
        // d1 cpu0, d2 cpu0 writes; d3 at its point cpu1 to its lock point,
        // d4 cpu1 sleeps; cpu0 alone downgrades (wakes cpu1); d5 at cpu0's
        // second point: cpu1 gets in beside the downgraded reader.
        sched
            .run(
                tasks,
                &mut Replay::new("0.0.1.1.1".parse().unwrap()),
                RunLimits::default(),
            )
            .unwrap();
        assert_eq!(
            log.into_inner(),
            ["cpu0 downgraded", "cpu1 reads", "cpu0 still reads"]
        );
    }
}
