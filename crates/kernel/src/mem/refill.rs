//! A design's background refill thread as a kernel task of its own
//! (`docs/designs.md`, "xnu": XNU's `VM_mte_fill` thread,
//! `mteinfo_fill_continue()` in `osfmk/vm/vm_mteinfo.c`).
//!
//! # Contract
//! - Only designs whose manager says [`tagstore::TagStorage::has_refill_thread`]
//!   have one; for the others nothing here runs and nothing changes.
//! - The machine layer adds one task to every run of the scheduler (a
//!   single command's, a `parallel` block's, each schedule `explore` tries):
//!   [`Memory::run_refill_thread`], after the commands' tasks, so the thread
//!   is the last simulated CPU. It sleeps on the wait queue `mte_fill` until
//!   woken, runs one pass of the design's thread
//!   ([`tagstore::TagStorage::refill_thread`]) under `tag_blocks_lock`, wakes
//!   the waiters, and sleeps again; it returns when no request is pending
//!   and every command task of the run has finished
//!   ([`Memory::refill_task_done`]), so a run still ends when its commands
//!   do. The thread keeps no state between runs: a request it has not taken
//!   is taken by the next run's thread.
//! - Wake-ups (XNU `mteinfo_wake_fill_thread()`): a tagged allocation that
//!   found no taggable frame even after the design's inline refill wakes
//!   the thread with its order and waits on `mte_fill_done` for a pass that
//!   started after its request (XNU: `vm_page_wait()` with class TAGGED,
//!   whose first waiter wakes the thread); a tagged allocation that needed
//!   the inline refill wakes it for housekeeping without waiting (XNU's
//!   drain is woken by allocations dipping into ACTIVE cells; the model's
//!   only hook into the design is the tagged allocation).
//! - Determinism: a sequential command runs with the lowest-runnable rule,
//!   so the command's task runs until it waits or finishes, and the thread
//!   runs exactly then; `parallel` blocks and `explore` choose among all
//!   tasks, the thread included, at every switch point.
//! - Without a thread task in the run (the memory layer used on its own,
//!   as its unit tests do), the allocation runs the thread's pass itself,
//!   as it did before the thread existed.

use super::mover::PhysSource;
use super::{Memory, PageMover, TagStorageState};
use crate::phys::Order;
use core::cell::Cell;
use sched::{Sched, WaitQueue};

/// Waits of one tagged allocation for the thread before it falls back to
/// the design's last resort (the bound keeps an allocation that other CPUs
/// keep beating to the new frames from waiting for ever; XNU waits).
pub(crate) const MAX_REFILL_WAITS: u32 = 8;

/// The thread's state shared by the allocations and the thread task.
pub(crate) struct RefillThread {
    /// The design has a thread.
    enabled: bool,
    /// A task of the current run is the thread.
    in_run: Cell<bool>,
    /// Command tasks of the current run not finished yet.
    live: Cell<usize>,
    /// Pending wake-up: `Some(Some(order))` an allocation of `order` waits
    /// (the largest if several), `Some(None)` housekeeping only.
    request: Cell<Option<Option<Order>>>,
    /// Passes started and finished (a waiter waits for a pass that started
    /// after its request).
    started: Cell<u64>,
    finished: Cell<u64>,
    /// Whether the last finished pass made storage taggable.
    progress: Cell<bool>,
    /// Where the thread sleeps (XNU `fill_thread_cond`).
    wake: WaitQueue,
    /// Where tagged allocations wait for a pass (XNU: the TAGGED class of
    /// `vm_page_wait()`).
    done: WaitQueue,
}

impl RefillThread {
    pub(crate) fn new(sched: &Sched, enabled: bool) -> Self {
        Self {
            enabled,
            in_run: Cell::new(false),
            live: Cell::new(0),
            request: Cell::new(None),
            started: Cell::new(0),
            finished: Cell::new(0),
            progress: Cell::new(false),
            wake: WaitQueue::new(sched, "mte_fill"),
            done: WaitQueue::new(sched, "mte_fill_done"),
        }
    }

    /// Adds a request; an allocation's order wins over housekeeping.
    fn post(&self, wanted: Option<Order>) {
        let merged = match (self.request.get(), wanted) {
            (Some(Some(a)), Some(b)) => Some(a.max(b)),
            (Some(Some(a)), None) => Some(a),
            (_, b) => b,
        };
        self.request.set(Some(merged));
        self.wake.wake_all();
    }
}

impl Memory {
    /// Whether the design runs a refill thread: the machine layer then adds
    /// [`Self::run_refill_thread`] to every run.
    pub fn has_refill_thread(&self) -> bool {
        self.refill.enabled
    }

    /// A run with `tasks` command tasks and the thread's task starts.
    pub fn begin_refill_run(&self, tasks: usize) {
        self.refill.in_run.set(true);
        self.refill.live.set(tasks);
    }

    /// The run ended (normally or not): no thread task exists until the
    /// next run.
    pub fn end_refill_run(&self) {
        self.refill.in_run.set(false);
        self.refill.live.set(0);
        // A pass cut short by a failed run counts as finished, so that
        // later waiters' targets stay reachable.
        self.refill.finished.set(self.refill.started.get());
    }

    /// A command task of the run finished: the thread may exit once all
    /// have and nothing is pending.
    pub fn refill_task_done(&self) {
        let live = self.refill.live.get();
        self.refill.live.set(live.saturating_sub(1));
        self.refill.wake.wake_all();
    }

    /// The thread's task: sleep until woken, one pass, wake the waiters;
    /// return when no request is pending and no command task is left.
    /// `mover` moves the pages a reclaim copies out of tag storage.
    pub async fn run_refill_thread<M: PageMover>(&self, mover: &mut M) {
        let refill = &self.refill;
        loop {
            refill
                .wake
                .wait_until(|| refill.request.get().is_some() || refill.live.get() == 0)
                .await;
            let Some(wanted) = refill.request.take() else {
                return;
            };
            refill.started.set(refill.started.get() + 1);
            let progress = {
                let mut state = self.tag_storage.lock().await;
                let TagStorageState { manager, claimed } = &mut *state;
                let mut source = PhysSource::new(self, mover, claimed);
                let progress = manager.refill_thread(wanted, &mut source).await;
                self.tag_counters.set(manager.counters());
                progress
            };
            refill.progress.set(progress);
            refill.finished.set(refill.finished.get() + 1);
            refill.done.wake_all();
        }
    }

    /// Wakes the thread for housekeeping without waiting (no-op without a
    /// thread task in the run).
    pub(crate) fn nudge_refill_thread(&self) {
        if self.refill.enabled && self.refill.in_run.get() {
            self.refill.post(None);
        }
    }

    /// Wakes the thread for an allocation of `order` without waiting (a
    /// design whose thread works asynchronously; no-op without a thread
    /// task in the run).
    pub(crate) fn wake_refill_thread(&self, order: Order) {
        if self.refill.enabled && self.refill.in_run.get() {
            self.refill.post(Some(order));
        }
    }

    /// Whether a thread task runs beside the caller (else the caller runs
    /// the pass itself, see the module documentation).
    pub(crate) fn refill_thread_in_run(&self) -> bool {
        self.refill.enabled && self.refill.in_run.get()
    }

    /// Wakes the thread for an allocation of `order` and waits for a pass
    /// that started after this request (a might-sleep point: XNU's
    /// `vm_page_wait()`). Returns whether that pass made storage taggable.
    pub(crate) async fn wait_for_refill(&self, order: Order) -> bool {
        self.sched
            .might_sleep("waits for the tag storage refill thread");
        let refill = &self.refill;
        let target = refill.started.get() + 1;
        refill.post(Some(order));
        refill
            .done
            .wait_until(|| refill.finished.get() >= target)
            .await;
        refill.progress.get()
    }
}
