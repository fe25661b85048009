//! A table of per-object sleeping bit locks, keyed (Linux: `PG_locked` with
//! `folio_lock()`/`folio_trylock()`/`folio_unlock()`, keyed by the page).
//!
//! The lock bit of every object lives in one table so objects need no lock
//! field: `LockTable<Pfn>` locks pages by frame number. The table protects no
//! data itself (like `PG_locked`, it guards state kept elsewhere); holding a
//! [`KeyGuard`] is the proof the caller checks.
//!
//! Rules are those of [`crate::SimMutex`] per key: locking is a switch point,
//! release wakes every sleeper on that key and the schedule picks who gets
//! it, locking a key twice deadlocks. Unlike a mutex, any CPU may drop the
//! guard (Linux: I/O completion unlocks pages locked by the submitter), but a
//! task must not finish holding one (the executor's `BUG:` check), so hand a
//! page lock across tasks only inside one task's lifetime.
//!
//! Entry states, per key:
//!
//! ```text
//! absent --lock--> Held{owner, instance} --unlock, nobody asleep--> absent
//!                     ^                  \
//!                     |                   --unlock, sleepers woken--> Vacant{instance}
//!                     +------------------lock-----------------------------+
//! ```
//!
//! `instance` names the key's wait channel in the scheduler. It stays the same
//! while the key is contended (`Vacant` keeps it until someone locks the key
//! again), so woken tasks sent back to sleep are woken by the next release.
//! Vacant entries cost one map entry each and are reused or dropped by the
//! next lock and unlock of their key.

use core::fmt;
use std::cell::{Cell, RefCell};
use std::collections::BTreeMap;

use crate::cpu::CpuId;
use crate::executor::{HoldKind, LockAddr, LockId, Sched, Wait, WaitKind};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Entry {
    Held { owner: CpuId, instance: u64 },
    Vacant { instance: u64 },
}

pub struct LockTable<K> {
    sched: Sched,
    id: LockId,
    entries: RefCell<BTreeMap<K, Entry>>,
    next_instance: Cell<u64>,
}

impl<K: Copy + Ord + fmt::Debug> LockTable<K> {
    /// A table named `name`; key `k` appears as `name[k]` (its `Debug`).
    pub fn new(sched: &Sched, name: impl Into<String>) -> Self {
        Self {
            sched: sched.clone(),
            id: sched.register_lock(name.into()),
            entries: RefCell::new(BTreeMap::new()),
            next_instance: Cell::new(0),
        }
    }

    fn addr(&self, instance: u64) -> LockAddr {
        LockAddr {
            lock: self.id,
            instance,
        }
    }

    /// Locks `key`, sleeping while another holder has it (Linux: `folio_lock()`).
    pub async fn lock(&self, key: K) -> KeyGuard<'_, K> {
        self.sched.might_sleep_on(self.id, WaitKind::Key);
        self.sched
            .acquire(self.id, || {
                self.lock_now(key, false).map_err(|instance| Wait {
                    at: self.addr(instance),
                    kind: WaitKind::Key,
                    key: Some(format!("{key:?}")),
                })
            })
            .await
    }

    /// Locks `key` if free (Linux: `folio_trylock()`). A switch point.
    pub async fn try_lock(&self, key: K) -> Option<KeyGuard<'_, K>> {
        self.sched.lock_point(self.id).await;
        self.lock_now(key, true).ok()
    }

    /// On contention, the instance to sleep on.
    fn lock_now(&self, key: K, trylock: bool) -> Result<KeyGuard<'_, K>, u64> {
        let mut entries = self.entries.borrow_mut();
        let instance = match entries.get(&key) {
            Some(&Entry::Held { instance, .. }) => return Err(instance),
            Some(&Entry::Vacant { instance }) => instance,
            None => {
                let instance = self.next_instance.get();
                self.next_instance.set(
                    instance
                        .checked_add(1)
                        .expect("BUG: lock table instance overflow"),
                );
                instance
            }
        };
        let at = self.addr(instance);
        let cpu = self
            .sched
            .note_acquired(at, HoldKind::Exclusive, Some(&key), trylock);
        entries.insert(
            key,
            Entry::Held {
                owner: cpu,
                instance,
            },
        );
        self.sched.requeue_woken(at, |_| true);
        Ok(KeyGuard {
            table: self,
            key,
            cpu,
            instance,
        })
    }

    /// The CPU holding `key` (Linux: `folio_test_locked()`, plus who).
    pub fn holder(&self, key: K) -> Option<CpuId> {
        match self.entries.borrow().get(&key) {
            Some(&Entry::Held { owner, .. }) => Some(owner),
            _ => None,
        }
    }

    pub fn is_locked(&self, key: K) -> bool {
        self.holder(key).is_some()
    }

    /// The keys locked now, ascending.
    pub fn locked_keys(&self) -> Vec<K> {
        self.entries
            .borrow()
            .iter()
            .filter(|(_, e)| matches!(e, Entry::Held { .. }))
            .map(|(&k, _)| k)
            .collect()
    }

    pub fn name(&self) -> String {
        self.sched.lock_name(self.id)
    }

    fn unlock(&self, key: K, cpu: CpuId, instance: u64) {
        let at = self.addr(instance);
        self.sched.note_released(at, cpu, Some(&key));
        let woken = self.sched.wake(at, |_| true);
        let mut entries = self.entries.borrow_mut();
        if woken > 0 {
            entries.insert(key, Entry::Vacant { instance });
        } else {
            entries.remove(&key);
        }
    }
}

impl<K> fmt::Debug for LockTable<K> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LockTable")
            .field("name", &self.sched.lock_name(self.id))
            .field("entries", &self.entries.borrow().len())
            .finish_non_exhaustive()
    }
}

/// Proof of holding one key of a [`LockTable`]; dropping it unlocks the key
/// (Linux: `folio_unlock()`).
pub struct KeyGuard<'t, K: Copy + Ord + fmt::Debug> {
    table: &'t LockTable<K>,
    key: K,
    cpu: CpuId,
    instance: u64,
}

impl<K: Copy + Ord + fmt::Debug> KeyGuard<'_, K> {
    pub fn key(&self) -> K {
        self.key
    }

    /// The CPU that locked the key.
    pub fn holder(&self) -> CpuId {
        self.cpu
    }
}

impl<K: Copy + Ord + fmt::Debug> Drop for KeyGuard<'_, K> {
    fn drop(&mut self) {
        self.table.unlock(self.key, self.cpu, self.instance);
    }
}

impl<K: Copy + Ord + fmt::Debug> fmt::Debug for KeyGuard<'_, K> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KeyGuard")
            .field("key", &self.key)
            .field("holder", &self.cpu)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::chooser::{Chooser, Replay, Seeded};
    use crate::executor::{BlockedCpu, RunLimits, SchedError, Task};
    use crate::explore::explore_exhaustive;

    /// Each CPU locks its key, holds it across a preempt point, unlocks.
    fn lock_keys(keys: &[u64], chooser: &mut dyn Chooser) -> Result<(), SchedError> {
        let sched = Sched::new();
        let table = LockTable::new(&sched, "page_lock");
        let inside = RefCell::new(BTreeMap::<u64, u32>::new());
        let tasks: Vec<Task<'_, ()>> = keys
            .iter()
            .map(|&key| {
                let (sched, table, inside) = (&sched, &table, &inside);
                Box::pin(async move {
                    let g = table.lock(key).await;
                    assert_eq!(g.holder(), sched.current_cpu());
                    *inside.borrow_mut().entry(key).or_default() += 1;
                    assert_eq!(inside.borrow()[&key], 1, "two holders of {key}");
                    sched.preempt_point().await;
                    *inside.borrow_mut().get_mut(&key).unwrap() -= 1;
                }) as Task<'_, ()>
            })
            .collect();
        sched.run(tasks, chooser, RunLimits::default())?;
        assert!(table.locked_keys().is_empty());
        Ok(())
    }

    #[test]
    fn different_keys_are_independent_and_the_same_key_excludes() {
        // Different keys never block: all C(6, 3) = 20 interleavings of two
        // tasks with two switch points each. The same key: the 14 schedules
        // of the mutex-protected counter (see mutex.rs for the hand count).
        let count = |keys: &[u64]| {
            let report = explore_exhaustive(1000, |c| lock_keys(keys, c)).unwrap();
            assert!(report.exhausted);
            assert!(report.failure.is_none(), "{:?}", report.failure);
            report.schedules
        };
        assert_eq!(count(&[0x10, 0x11]), 20);
        assert_eq!(count(&[0x10, 0x10]), 14);
    }

    #[test]
    fn one_key_explores_exactly_like_a_mutex() {
        // Per key the rules are the mutex's, so three CPUs on one key give
        // the same decision tree as three CPUs on one mutex (and on the write
        // side of an rwsem). Woken losers must go back to sleep on the key's
        // current wait channel, or they cost extra retry decisions and the
        // table's count would exceed the mutex's.
        fn mutex(c: &mut dyn Chooser) -> Result<(), SchedError> {
            let sched = Sched::new();
            let m = crate::mutex::SimMutex::new(&sched, "m", ());
            let tasks: Vec<Task<'_, ()>> = (0..3)
                .map(|_| {
                    let (sched, m) = (&sched, &m);
                    Box::pin(async move {
                        let _g = m.lock().await;
                        sched.preempt_point().await;
                    }) as Task<'_, ()>
                })
                .collect();
            sched.run(tasks, c, RunLimits::default()).map(|_| ())
        }
        fn writer(c: &mut dyn Chooser) -> Result<(), SchedError> {
            let sched = Sched::new();
            let l = crate::rwlock::SimRwLock::new(&sched, "l", ());
            let tasks: Vec<Task<'_, ()>> = (0..3)
                .map(|_| {
                    let (sched, l) = (&sched, &l);
                    Box::pin(async move {
                        let _g = l.write().await;
                        sched.preempt_point().await;
                    }) as Task<'_, ()>
                })
                .collect();
            sched.run(tasks, c, RunLimits::default()).map(|_| ())
        }
        let count = |program: &dyn Fn(&mut dyn Chooser) -> Result<(), SchedError>| {
            let report = explore_exhaustive(100_000, program).unwrap();
            assert!(report.exhausted && report.failure.is_none());
            report.schedules
        };
        // 870: too many to count by hand; an independent model of the
        // documented rules (a separate Python re-implementation, written from
        // the module docs) gives 870 for three CPUs and the hand-counted 14
        // of mutex.rs for two. Fewer than the 1680 = 9! / (3! 3! 3!)
        // interleavings of CPUs that never block: holding excludes some.
        let by_mutex = count(&mutex);
        assert_eq!(by_mutex, 870);
        assert_eq!(count(&|c| lock_keys(&[3, 3, 3], c)), by_mutex);
        assert_eq!(count(&writer), by_mutex);
    }

    #[test]
    fn contended_key_survives_many_sleepers() {
        // Four CPUs on one key: sleepers woken and sent back to sleep must be
        // woken again by the next unlock (the Vacant entry keeps their wait
        // channel). A lost wake-up would show as a deadlock.
        for seed in 0..40 {
            lock_keys(&[7, 7, 7, 7], &mut Seeded::new(seed)).unwrap();
        }
    }

    #[test]
    fn try_lock_and_queries() {
        let sched = Sched::new();
        let table = LockTable::new(&sched, "page_lock");
        sched
            .block_on(
                async {
                    let g = table.lock(0x42u64).await;
                    assert_eq!(table.holder(0x42), Some(CpuId::new(0)));
                    assert!(table.try_lock(0x42).await.is_none());
                    let h = table.try_lock(0x43).await.expect("free key");
                    assert_eq!(table.locked_keys(), [0x42, 0x43]);
                    drop((g, h));
                    assert!(!table.is_locked(0x42));
                },
                RunLimits::default(),
            )
            .unwrap();
    }

    #[test]
    fn deadlock_report_names_the_keys() {
        // cpu0: lock 1 then 2; cpu1: lock 2 then 1 (Linux: two folios locked
        // in different orders, why migration locks one at a time or trylocks).
        fn two_pages(chooser: &mut dyn Chooser) -> Result<(), SchedError> {
            let sched = Sched::new();
            let table = LockTable::new(&sched, "page_lock");
            let tasks: Vec<Task<'_, ()>> = vec![
                Box::pin(async {
                    let _a = table.lock(1u64).await;
                    let _b = table.lock(2).await;
                }),
                Box::pin(async {
                    let _b = table.lock(2u64).await;
                    let _a = table.lock(1).await;
                }),
            ];
            sched.run(tasks, chooser, RunLimits::default()).map(|_| ())
        }
        let err = two_pages(&mut Replay::new("0.0.1.1.0".parse().unwrap()));
        assert_eq!(
            err,
            Err(SchedError::Deadlock {
                blocked: vec![
                    BlockedCpu {
                        cpu: CpuId::new(0),
                        kind: WaitKind::Key,
                        lock: "page_lock[2]".into(),
                        holders: vec![CpuId::new(1)],
                    },
                    BlockedCpu {
                        cpu: CpuId::new(1),
                        kind: WaitKind::Key,
                        lock: "page_lock[1]".into(),
                        holders: vec![CpuId::new(0)],
                    },
                ]
            })
        );
    }

    #[test]
    fn any_cpu_may_unlock() {
        // cpu0 locks and hands the guard to cpu1 through shared state, as
        // I/O submission hands a locked page to the completion; cpu0 waits
        // for the unlock before finishing.
        let sched = Sched::new();
        let table = LockTable::new(&sched, "page_lock");
        let handoff = RefCell::new(None);
        let tasks: Vec<Task<'_, ()>> = vec![
            Box::pin(async {
                *handoff.borrow_mut() = Some(table.lock(5u64).await);
                while table.is_locked(5) {
                    sched.preempt_point().await;
                }
            }),
            Box::pin(async {
                while handoff.borrow().is_none() {
                    sched.preempt_point().await;
                }
                drop(handoff.borrow_mut().take());
            }),
        ];
        sched
            .run(tasks, &mut Seeded::new(2), RunLimits::default())
            .unwrap();
        assert!(!table.is_locked(5));
    }
}
