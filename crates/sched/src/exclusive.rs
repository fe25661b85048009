//! The one-owner lock core shared by [`crate::SimMutex`] and
//! [`crate::SimSpinLock`]: they differ only in how the kernel may use them
//! (a mutex holder may sleep, a spin lock holder is in atomic context, which
//! the registration with the scheduler records), not in how they are taken
//! and released, so that logic lives here once.
//!
//! Rules (both locks):
//! - Acquiring is a switch point, contended or not, so another CPU can get
//!   there first; a contended acquisition waits as a sleeper does, and a
//!   release wakes every waiter (the first to retry wins; the others are
//!   requeued at once).
//! - Only the owner releases: releasing from another CPU is a `BUG:` panic.
//! - Recursion deadlocks (reported), as in Linux.
//!
//! Invariant: `owner` is `Some(cpu)` exactly while a guard exists, and then
//! the `RefCell` is mutably borrowed by that guard (so a protocol slip shows
//! up as a `BUG:` panic, never as shared mutable access).

use core::ops::{Deref, DerefMut};
use std::cell::{Cell, Ref, RefCell, RefMut};

use crate::cpu::CpuId;
use crate::executor::{HoldKind, LockAddr, LockId, Sched, Wait, WaitKind};

pub(crate) struct Exclusive<T> {
    sched: Sched,
    id: LockId,
    /// The lock's kind in `BUG:` messages ("mutex", "spin lock").
    what: &'static str,
    owner: Cell<Option<CpuId>>,
    data: RefCell<T>,
}

impl<T> Exclusive<T> {
    /// A lock registered with `sched` as `id`, protecting `value`.
    pub(crate) fn new(sched: &Sched, id: LockId, what: &'static str, value: T) -> Self {
        Self {
            sched: sched.clone(),
            id,
            what,
            owner: Cell::new(None),
            data: RefCell::new(value),
        }
    }

    pub(crate) fn sched(&self) -> &Sched {
        &self.sched
    }

    pub(crate) fn id(&self) -> LockId {
        self.id
    }

    fn addr(&self) -> LockAddr {
        LockAddr::whole(self.id)
    }

    /// Acquires the lock, waiting (as a `kind` waiter) while another CPU
    /// holds it.
    pub(crate) async fn lock(&self, kind: WaitKind) -> ExclusiveGuard<'_, T> {
        let wait = || Wait {
            at: self.addr(),
            kind,
            key: None,
        };
        self.sched
            .acquire(self.id, || self.acquire_now(false).ok_or_else(wait))
            .await
    }

    /// Takes the lock if it is free, without a switch point (`trylock`: as
    /// a trylock, which records no lock order).
    pub(crate) fn acquire_now(&self, trylock: bool) -> Option<ExclusiveGuard<'_, T>> {
        if self.owner.get().is_some() {
            return None;
        }
        let cpu = self
            .sched
            .note_acquired(self.addr(), HoldKind::Exclusive, None, trylock);
        self.owner.set(Some(cpu));
        // Anyone else woken by the last release has lost the race.
        self.sched.requeue_woken(self.addr(), |_| true);
        let data = self
            .data
            .try_borrow_mut()
            .unwrap_or_else(|_| panic!("BUG: free {} with its data borrowed", self.what));
        Some(ExclusiveGuard {
            lock: self,
            cpu,
            data,
        })
    }

    pub(crate) fn holder(&self) -> Option<CpuId> {
        self.owner.get()
    }

    pub(crate) fn name(&self) -> String {
        self.sched.lock_name(self.id)
    }

    /// Reads the data outside any task. Panics (`BUG:`) while held:
    /// observers run between kernel paths.
    pub(crate) fn borrow_unlocked(&self) -> Ref<'_, T> {
        if let Some(cpu) = self.owner.get() {
            panic!(
                "BUG: {} `{}` inspected while {cpu} holds it",
                self.what,
                self.name()
            );
        }
        self.data.borrow()
    }

    /// Changes the data outside any task. Panics (`BUG:`) while held.
    pub(crate) fn borrow_mut_unlocked(&self) -> RefMut<'_, T> {
        if let Some(cpu) = self.owner.get() {
            panic!(
                "BUG: {} `{}` modified while {cpu} holds it",
                self.what,
                self.name()
            );
        }
        self.data.borrow_mut()
    }

    pub(crate) fn get_mut(&mut self) -> &mut T {
        self.data.get_mut()
    }

    pub(crate) fn into_inner(self) -> T {
        self.data.into_inner()
    }
}

/// Proof of holding an [`Exclusive`]; dropping it releases the lock.
pub(crate) struct ExclusiveGuard<'l, T> {
    lock: &'l Exclusive<T>,
    cpu: CpuId,
    data: RefMut<'l, T>,
}

impl<T> ExclusiveGuard<'_, T> {
    /// The CPU that acquired the lock.
    pub(crate) fn holder(&self) -> CpuId {
        self.cpu
    }
}

impl<T> Deref for ExclusiveGuard<'_, T> {
    type Target = T;
    fn deref(&self) -> &T {
        &self.data
    }
}

impl<T> DerefMut for ExclusiveGuard<'_, T> {
    fn deref_mut(&mut self) -> &mut T {
        &mut self.data
    }
}

impl<T> Drop for ExclusiveGuard<'_, T> {
    fn drop(&mut self) {
        let lock = self.lock;
        if let Some(cpu) = lock.sched.releasing_cpu()
            && cpu != self.cpu
        {
            panic!(
                "BUG: {} `{}` released by {cpu} but owned by {}",
                lock.what,
                lock.name(),
                self.cpu
            );
        }
        lock.owner.set(None);
        lock.sched.note_released(lock.addr(), self.cpu, None);
        lock.sched.wake(lock.addr(), |_| true);
    }
}
