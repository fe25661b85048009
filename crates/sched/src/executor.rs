//! The executor: runs tasks on simulated CPUs, one at a time, switching only
//! at switch points, with every choice made by a [`Chooser`].
//!
//! # Model
//!
//! A *task* is a future, the kernel path one simulated CPU executes (task `i`
//! of a run is on `CpuId(i)`). Exactly one task runs at a time; it runs
//! uninterrupted until it reaches a *switch point*: [`Sched::preempt_point`]
//! (Linux: `cond_resched()`, or any point where preemption or a racing CPU
//! could act) or an operation of a primitive in this crate (every lock
//! acquisition, try-lock and wait). Code between two switch points is atomic
//! with respect to the other CPUs, so a kernel path must place a switch point
//! wherever real hardware lets another CPU observe or change shared state.
//!
//! Per task state, kept in the scheduler (the primitives keep only who holds
//! them; who waits is here, so a torn-down run leaves no stale waiter behind):
//!
//! ```text
//! start --> Runnable --(future completes)--> Finished
//!            |    ^
//!            |    +----------(chosen: retries the operation)-----------+
//!            |                                                          |
//!            +--(operation must wait)--> Blocked(w) --(release/wake)--> Woken(w)
//!                                           ^                           |
//!                                           +--(a rival got it first)---+
//! ```
//!
//! A switch point leaves the task Runnable (it may or may not run next). A
//! woken task whose retry can no longer succeed (another CPU acquired the
//! lock first) goes back to Blocked without being scheduled.
//!
//! A *decision* is a moment when two or more tasks are runnable (Runnable or
//! Woken) and one must be picked: at the start of a run, at a switch point
//! reached while another task is runnable, and when the running task blocks
//! or finishes leaving two or more runnable. Only decisions consult the
//! chooser and only they appear in a [`crate::Schedule`]. A switch point with
//! no other runnable task costs a counter increment and returns at once, so a
//! single-CPU run makes no decision at all.
//!
//! A *step* is what one task runs from one switch point to the next. The
//! executor records each step's [`Footprint`] (the locks it touched, or
//! that it may have touched anything) and hands the steps since the last
//! decision to the chooser ([`ChoicePoint::steps`]), for partial-order
//! reduction. The primitives' switch points say which lock's operation
//! follows ([`Sched::lock_point`]); [`Sched::preempt_point`] says nothing,
//! so the step after it may touch anything.
//!
//! # Errors and limits
//!
//! - No runnable task but some blocked: [`SchedError::Deadlock`], naming each
//!   blocked CPU, what it waits for and who holds it.
//! - More than [`RunLimits::max_steps`] switch points reached in one run:
//!   [`SchedError::StepLimit`]. Kernel paths must terminate; the limit turns a
//!   livelock into an error. A loop with no switch point at all cannot be
//!   interrupted (a future cannot be preempted); Linux would call it a soft
//!   lockup, here the test hangs.
//! - A task that finishes still holding a lock from this crate is a kernel
//!   bug (Linux: lockdep's "lock held when returning to user space"): panic
//!   with `BUG:`.
//!
//! # Rules for code running as a task
//!
//! - Single-threaded, no `Send`: tasks are polled with a no-op waker; the
//!   scheduler's own bookkeeping says who may run. A task must therefore be
//!   one sequential thread of control: no `join!`/`select!` inside a task, and
//!   no futures from other executors (a task pending anywhere but at this
//!   crate's switch points and waits is a `BUG:` panic).
//! - Never hold a `RefCell` borrow (`Ref`/`RefMut`) across an `.await`: another
//!   CPU may run at that await and borrow the same cell, which panics. Keep
//!   shared mutable data inside the crate's locks, whose guards may be held
//!   across awaits. Clippy's `await_holding_refcell_ref` (on by default)
//!   catches the direct cases.
//! - Releasing a lock (dropping its guard) is not a switch point (`Drop`
//!   cannot await). Waiters become runnable at once but run at the releaser's
//!   next switch point; put a `preempt_point()` after the release if the code
//!   that follows races with them.
//!
//! One [`Sched`] serves one machine: its locks are created with it and its
//! runs happen one after another (a run inside a run is a `BUG:`).

use core::fmt;
use std::cell::RefCell;
use std::future::Future;
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll, Waker};

use thiserror::Error;

use crate::chooser::{ChoicePoint, ChooseError, Chooser, LowestRunnable};
use crate::cpu::{self, CpuId};
use crate::lockcheck::{LockChecks, LockOrder, LockViolation};

/// A task: one simulated CPU's kernel path.
pub type Task<'a, T> = Pin<Box<dyn Future<Output = T> + 'a>>;

/// Bounds on one run.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RunLimits {
    /// The most switch points all tasks together may reach in one run.
    pub max_steps: u64,
}

impl RunLimits {
    pub const DEFAULT_MAX_STEPS: u64 = 1 << 20;
}

impl Default for RunLimits {
    fn default() -> Self {
        Self {
            max_steps: Self::DEFAULT_MAX_STEPS,
        }
    }
}

/// What a blocked CPU waits for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum WaitKind {
    /// A [`crate::SimMutex`] (Linux: `mutex_lock()`).
    Mutex,
    /// Shared side of a [`crate::SimRwLock`] (Linux: `down_read()`).
    Read,
    /// Exclusive side of a [`crate::SimRwLock`] (Linux: `down_write()`).
    Write,
    /// One key of a [`crate::LockTable`] (Linux: `folio_lock()`).
    Key,
    /// A [`crate::WaitQueue`] condition or [`crate::Completion`] (Linux: `wait_event()`).
    Event,
    /// A [`crate::SimSpinLock`] (Linux: `spin_lock()`): spinning, not sleeping.
    Spin,
}

impl fmt::Display for WaitKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            WaitKind::Mutex => "mutex",
            WaitKind::Read => "read lock",
            WaitKind::Write => "write lock",
            WaitKind::Key => "lock",
            WaitKind::Event => "wait queue",
            WaitKind::Spin => "spin lock",
        })
    }
}

/// How a CPU holds a lock.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum HoldKind {
    Exclusive,
    Shared,
}

/// One CPU of a deadlock.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BlockedCpu {
    pub cpu: CpuId,
    pub kind: WaitKind,
    /// The lock's name, with the key for a [`crate::LockTable`] (`page_lock[0x42]`).
    pub lock: String,
    /// The CPUs holding that lock now (empty for a wait queue).
    pub holders: Vec<CpuId>,
}

impl fmt::Display for BlockedCpu {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} waits for {} `{}`", self.cpu, self.kind, self.lock)?;
        if self.kind != WaitKind::Event {
            write!(f, " held by {}", cpu::list(&self.holders))?;
        }
        Ok(())
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Error)]
pub enum SchedError {
    #[error("deadlock: {}", join(.blocked))]
    Deadlock { blocked: Vec<BlockedCpu> },
    #[error("step limit: {limit} switch points reached; unfinished: {}", cpu::list(.unfinished))]
    StepLimit { limit: u64, unfinished: Vec<CpuId> },
    #[error("chooser picked {chosen}, which is not runnable (runnable: {})", cpu::list(.runnable))]
    NotRunnable { chosen: CpuId, runnable: Vec<CpuId> },
    #[error(transparent)]
    Choose(#[from] ChooseError),
}

fn join(blocked: &[BlockedCpu]) -> String {
    blocked
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join("; ")
}

/// One event of a run, recorded when tracing is on ([`Sched::set_tracing`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TraceEvent {
    /// A decision: `chosen` among `runnable`.
    Decision {
        runnable: Vec<CpuId>,
        chosen: CpuId,
    },
    Acquired {
        cpu: CpuId,
        lock: String,
        kind: HoldKind,
    },
    Blocked {
        cpu: CpuId,
        lock: String,
        kind: WaitKind,
    },
    Released {
        cpu: CpuId,
        lock: String,
    },
    Finished {
        cpu: CpuId,
    },
}

impl fmt::Display for TraceEvent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TraceEvent::Decision { runnable, chosen } => {
                write!(f, "switch to {chosen} (runnable: {})", cpu::list(runnable))
            }
            TraceEvent::Acquired { cpu, lock, kind } => {
                let how = match kind {
                    HoldKind::Exclusive => "",
                    HoldKind::Shared => " shared",
                };
                write!(f, "{cpu} acquires `{lock}`{how}")
            }
            TraceEvent::Blocked { cpu, lock, kind } => {
                write!(f, "{cpu} blocks on {kind} `{lock}`")
            }
            TraceEvent::Released { cpu, lock } => write!(f, "{cpu} releases `{lock}`"),
            TraceEvent::Finished { cpu } => write!(f, "{cpu} finishes"),
        }
    }
}

/// What one *step* (a CPU's execution from one switch point to the next)
/// touched, as far as the scheduler can tell: the locks it operated on or
/// held, and whether it may have touched anything else.
///
/// The approximation, and what it assumes: a step that starts at a plain
/// [`Sched::preempt_point`] (the kernel's own switch points, which mark
/// racy accesses), at a wait-queue condition, or at the task's start, or
/// that passes such a point without switching, is `global`: it may touch
/// anything. A step that starts at a lock operation touches the locks it
/// operates on and the locks its CPU holds during it, and, *assuming the
/// kernel's locking discipline* (data shared between CPUs is only touched
/// under a lock that protects it, or after a plain switch point), nothing
/// else that another CPU's step could touch. Locks are compared by lock,
/// not by key (all the keys of a [`crate::LockTable`] conflict), and shared
/// holds conflict like exclusive ones: both err on the side of dependence.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Footprint {
    /// The CPU that took the step.
    pub cpu: CpuId,
    /// The step may have touched anything.
    pub global: bool,
    /// The locks (by registration number), sorted, without repeats.
    locks: Vec<usize>,
}

impl Footprint {
    /// A step of `cpu` nothing is known about: it may touch anything.
    pub fn unknown(cpu: CpuId) -> Self {
        Self {
            cpu,
            global: true,
            locks: Vec::new(),
        }
    }

    fn touch(&mut self, lock: LockId) {
        if let Err(i) = self.locks.binary_search(&lock.0) {
            self.locks.insert(i, lock.0);
        }
    }

    /// Whether the two steps commute (in the approximation above): two
    /// steps of one CPU never do.
    pub fn independent(&self, other: &Footprint) -> bool {
        if self.cpu == other.cpu || self.global || other.global {
            return false;
        }
        let (mut a, mut b) = (self.locks.iter().peekable(), other.locks.iter().peekable());
        while let (Some(x), Some(y)) = (a.peek(), b.peek()) {
            match x.cmp(y) {
                core::cmp::Ordering::Less => {
                    a.next();
                }
                core::cmp::Ordering::Greater => {
                    b.next();
                }
                core::cmp::Ordering::Equal => return false,
            }
        }
        true
    }
}

/// Identity of a lock (or wait queue) registered with a [`Sched`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) struct LockId(usize);

/// One lockable thing: a lock, or one key of a lock table (`instance` tells
/// the keys of one table apart; 0 for everything else).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct LockAddr {
    pub(crate) lock: LockId,
    pub(crate) instance: u64,
}

impl LockAddr {
    pub(crate) fn whole(lock: LockId) -> Self {
        Self { lock, instance: 0 }
    }
}

/// Why a task sleeps.
#[derive(Clone, Debug)]
pub(crate) struct Wait {
    pub(crate) at: LockAddr,
    pub(crate) kind: WaitKind,
    /// The key of a lock-table entry, rendered when the task blocked.
    pub(crate) key: Option<String>,
}

#[derive(Debug)]
enum TaskState {
    Runnable,
    /// Asleep until a release or wake-up on `wait.at`.
    Blocked(Wait),
    /// Runnable: woken, will retry the operation it slept in.
    Woken(Wait),
    Finished,
}

#[derive(Debug)]
struct Held {
    at: LockAddr,
    kind: HoldKind,
}

#[derive(Debug)]
struct CpuSlot {
    task: TaskState,
    held: Vec<Held>,
    /// The lock whose operation the task stopped at, if it stopped at a
    /// lock's switch point or sleeps on a lock (see [`Footprint`]).
    resume_at: Option<LockId>,
}

#[derive(Debug)]
struct Run {
    cpus: Vec<CpuSlot>,
    /// The task being polled.
    current: Option<CpuId>,
    /// Tasks Runnable or Woken.
    runnable: usize,
    steps: u64,
    max_steps: u64,
    over_limit: bool,
    /// The polled task stopped at one of our switch points.
    yielded: bool,
    /// Dropping unfinished tasks after an error: releases wake nobody.
    tearing_down: bool,
    /// The footprint of the step being taken.
    step: Footprint,
}

impl Run {
    fn slot(&mut self, cpu: CpuId) -> &mut CpuSlot {
        self.cpus
            .get_mut(cpu.index())
            .expect("BUG: CPU outside the current run")
    }

    fn current(&self) -> CpuId {
        self.current
            .expect("BUG: scheduler primitive used outside a running task")
    }
}

#[derive(Debug, Default)]
struct State {
    /// Lock names, indexed by [`LockId`].
    locks: Vec<String>,
    /// Whether each lock is a spin lock, indexed by [`LockId`].
    spin: Vec<bool>,
    /// Atomic-context and lock-order checks ([`crate::lockcheck`]).
    checks: LockChecks,
    run: Option<Run>,
    tracing: bool,
    trace: Vec<TraceEvent>,
}

impl State {
    fn run(&mut self) -> &mut Run {
        self.run
            .as_mut()
            .expect("BUG: scheduler primitive used outside Sched::run")
    }

    /// `name`, or `name[key]` for one key of a lock table.
    fn lock_name(&self, at: LockAddr, key: Option<&str>) -> String {
        let base = &self.locks[at.lock.0];
        match key {
            Some(key) => format!("{base}[{key}]"),
            None => base.clone(),
        }
    }

    fn record(&mut self, event: impl FnOnce(&Self) -> TraceEvent) {
        if self.tracing {
            let event = event(self);
            self.trace.push(event);
        }
    }
}

/// The scheduler: a cheap handle (clone it into every task and lock) to the
/// state of one machine's CPUs, its locks' names and its trace.
#[derive(Clone, Default)]
pub struct Sched {
    state: Rc<RefCell<State>>,
}

impl fmt::Debug for Sched {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = self.state.borrow();
        f.debug_struct("Sched")
            .field("locks", &state.locks.len())
            .field("running", &state.run.is_some())
            .finish()
    }
}

/// What a switch point does, decided by [`Sched::reach_switch_point`].
enum Switch {
    Continue,
    Yield,
    Abort,
}

impl Sched {
    pub fn new() -> Self {
        Self::default()
    }

    /// Runs `tasks` to completion, task `i` on `CpuId(i)`, consulting
    /// `chooser` at every decision. Returns the outputs in CPU order.
    ///
    /// On error the unfinished tasks are dropped (their guards release their
    /// locks) before returning, so the locks are free for the next run.
    pub fn run<'a, T>(
        &self,
        tasks: Vec<Task<'a, T>>,
        chooser: &mut dyn Chooser,
        limits: RunLimits,
    ) -> Result<Vec<T>, SchedError> {
        self.begin_run(tasks.len(), limits);
        let _end = EndRun(self);
        let mut live: Vec<Option<Task<'a, T>>> = tasks.into_iter().map(Some).collect();
        let mut outputs: Vec<Option<T>> = live.iter().map(|_| None).collect();
        let outcome = self.drive(&mut live, &mut outputs, chooser);
        self.tear_down(&mut live);
        outcome?;
        Ok(outputs
            .into_iter()
            .map(|o| o.expect("BUG: run ended with a task unfinished"))
            .collect())
    }

    /// Runs one future to completion on `CpuId(0)`. No decision is ever made.
    pub fn block_on<'a, T>(
        &self,
        task: impl Future<Output = T> + 'a,
        limits: RunLimits,
    ) -> Result<T, SchedError> {
        let mut outputs = self.run(vec![Box::pin(task)], &mut LowestRunnable, limits)?;
        Ok(outputs.pop().expect("BUG: one task, one output"))
    }

    /// The CPU of the running task (Linux: `smp_processor_id()`).
    ///
    /// Panics (`BUG:`) outside a task.
    pub fn current_cpu(&self) -> CpuId {
        self.try_current_cpu()
            .expect("BUG: current_cpu() called outside a running task")
    }

    /// The CPU of the running task, or `None` outside any task.
    pub fn try_current_cpu(&self) -> Option<CpuId> {
        self.state.borrow().run.as_ref().and_then(|run| run.current)
    }

    /// Number of CPUs (tasks) in the current run, or `None` outside a run.
    pub fn cpu_count(&self) -> Option<usize> {
        self.state.borrow().run.as_ref().map(|run| run.cpus.len())
    }

    /// A switch point: the scheduler may run another CPU here (Linux:
    /// `cond_resched()`, preemption, or just a place where another CPU's
    /// memory accesses may come first). Free when nothing else is runnable.
    pub fn preempt_point(&self) -> PreemptPoint<'_> {
        PreemptPoint {
            sched: self,
            yielded: false,
            lock: None,
        }
    }

    /// The switch point before an operation on `lock` (the primitives'):
    /// the step after it starts with that operation (see [`Footprint`]).
    pub(crate) fn lock_point(&self, lock: LockId) -> PreemptPoint<'_> {
        PreemptPoint {
            sched: self,
            yielded: false,
            lock: Some(lock),
        }
    }

    /// Switch points reached so far in the current run (0 outside a run).
    pub fn steps(&self) -> u64 {
        self.state.borrow().run.as_ref().map_or(0, |run| run.steps)
    }

    /// Starts (or stops) recording [`TraceEvent`]s; off by default.
    pub fn set_tracing(&self, on: bool) {
        self.state.borrow_mut().tracing = on;
    }

    /// The events recorded since the last call.
    pub fn take_trace(&self) -> Vec<TraceEvent> {
        std::mem::take(&mut self.state.borrow_mut().trace)
    }

    fn begin_run(&self, tasks: usize, limits: RunLimits) {
        let mut state = self.state.borrow_mut();
        assert!(
            state.run.is_none(),
            "BUG: Sched::run called while a run is in progress"
        );
        state.run = Some(Run {
            cpus: (0..tasks)
                .map(|_| CpuSlot {
                    task: TaskState::Runnable,
                    held: Vec::new(),
                    resume_at: None,
                })
                .collect(),
            current: None,
            runnable: tasks,
            steps: 0,
            max_steps: limits.max_steps,
            over_limit: false,
            yielded: false,
            tearing_down: false,
            step: Footprint::default(),
        });
    }

    fn drive<T>(
        &self,
        live: &mut [Option<Task<'_, T>>],
        outputs: &mut [Option<T>],
        chooser: &mut dyn Chooser,
    ) -> Result<(), SchedError> {
        let mut cx = Context::from_waker(Waker::noop());
        let mut runnable = Vec::with_capacity(live.len());
        let mut previous = None;
        // The steps taken since the last decision.
        let mut steps: Vec<Footprint> = Vec::new();
        loop {
            self.collect_runnable(&mut runnable)?;
            let cpu = match runnable.as_slice() {
                [] => return Ok(()),
                [only] => *only,
                _ => {
                    let chosen = chooser.choose(&ChoicePoint {
                        runnable: &runnable,
                        previous,
                        steps: &steps,
                    })?;
                    steps.clear();
                    if !runnable.contains(&chosen) {
                        return Err(SchedError::NotRunnable {
                            chosen,
                            runnable: runnable.clone(),
                        });
                    }
                    self.state.borrow_mut().record(|_| TraceEvent::Decision {
                        runnable: runnable.clone(),
                        chosen,
                    });
                    chosen
                }
            };
            {
                let mut state = self.state.borrow_mut();
                let run = state.run();
                run.current = Some(cpu);
                run.yielded = false;
                let slot = run.slot(cpu);
                let mut step = Footprint {
                    cpu,
                    global: slot.resume_at.is_none(),
                    locks: Vec::new(),
                };
                if let Some(lock) = slot.resume_at.take() {
                    step.touch(lock);
                }
                for held in &slot.held {
                    step.touch(held.at.lock);
                }
                run.step = step;
            }
            let task = live[cpu.index()]
                .as_mut()
                .expect("BUG: runnable task already finished");
            let pending = match task.as_mut().poll(&mut cx) {
                Poll::Ready(output) => {
                    outputs[cpu.index()] = Some(output);
                    live[cpu.index()] = None;
                    self.finish(cpu);
                    false
                }
                Poll::Pending => true,
            };
            let mut state = self.state.borrow_mut();
            let run = state.run();
            run.current = None;
            steps.push(std::mem::take(&mut run.step));
            if run.over_limit {
                return Err(SchedError::StepLimit {
                    limit: run.max_steps,
                    unfinished: live
                        .iter()
                        .enumerate()
                        .filter(|(_, t)| t.is_some())
                        .map(|(i, _)| CpuId::from_index(i))
                        .collect(),
                });
            }
            let slot = run.slot(cpu);
            if pending && matches!(slot.task, TaskState::Runnable) && !run.yielded {
                panic!("BUG: {cpu}'s task is pending outside a switch point (foreign future?)");
            }
            previous = Some(cpu);
        }
    }

    /// Fills `out` with the runnable CPUs, ascending; a deadlock if there are
    /// none but some task is blocked.
    fn collect_runnable(&self, out: &mut Vec<CpuId>) -> Result<(), SchedError> {
        out.clear();
        let mut state = self.state.borrow_mut();
        let run = state.run();
        let mut blocked = false;
        for (i, slot) in run.cpus.iter().enumerate() {
            match slot.task {
                TaskState::Runnable | TaskState::Woken(_) => out.push(CpuId::from_index(i)),
                TaskState::Blocked(_) => blocked = true,
                TaskState::Finished => {}
            }
        }
        debug_assert_eq!(out.len(), run.runnable, "BUG: runnable count drifted");
        if out.is_empty() && blocked {
            return Err(SchedError::Deadlock {
                blocked: Self::deadlock_report(&state),
            });
        }
        Ok(())
    }

    fn deadlock_report(state: &State) -> Vec<BlockedCpu> {
        let run = state.run.as_ref().expect("BUG: deadlock outside a run");
        run.cpus
            .iter()
            .enumerate()
            .filter_map(|(i, slot)| match &slot.task {
                TaskState::Blocked(wait) => Some(BlockedCpu {
                    cpu: CpuId::from_index(i),
                    kind: wait.kind,
                    lock: state.lock_name(wait.at, wait.key.as_deref()),
                    holders: run
                        .cpus
                        .iter()
                        .enumerate()
                        .filter(|(_, s)| s.held.iter().any(|h| h.at == wait.at))
                        .map(|(j, _)| CpuId::from_index(j))
                        .collect(),
                }),
                _ => None,
            })
            .collect()
    }

    fn finish(&self, cpu: CpuId) {
        let mut state = self.state.borrow_mut();
        let run = state.run();
        let slot = run.slot(cpu);
        assert!(
            matches!(slot.task, TaskState::Runnable),
            "BUG: {cpu} finished while {:?}",
            slot.task
        );
        if let Some(held) = slot.held.first() {
            let at = held.at;
            let name = state.lock_name(at, None);
            panic!("BUG: {cpu} finished its task still holding `{name}`");
        }
        slot.task = TaskState::Finished;
        run.runnable -= 1;
        state.record(|_| TraceEvent::Finished { cpu });
    }

    /// Drops the unfinished tasks, each as its own CPU so that the guards it
    /// holds release as their owner, with wake-ups suppressed.
    fn tear_down<T>(&self, live: &mut [Option<Task<'_, T>>]) {
        self.state.borrow_mut().run().tearing_down = true;
        for (i, task) in live.iter_mut().enumerate() {
            if task.is_some() {
                self.state.borrow_mut().run().current = Some(CpuId::from_index(i));
                *task = None;
            }
        }
    }

    // ---- the interface of the primitives (crate-private) ----

    pub(crate) fn register_lock(&self, name: String) -> LockId {
        self.register(name, false)
    }

    /// A lock whose holder is in atomic context (a [`crate::SimSpinLock`]).
    pub(crate) fn register_spinlock(&self, name: String) -> LockId {
        self.register(name, true)
    }

    fn register(&self, name: String, spin: bool) -> LockId {
        let mut state = self.state.borrow_mut();
        state.locks.push(name);
        state.spin.push(spin);
        LockId(state.locks.len() - 1)
    }

    /// Linux `might_sleep()`: the current task is about to do something that
    /// may sleep (`what`: "allocates with reclaim", "takes mutex `x`"). If it
    /// holds a spin lock, that is recorded as a
    /// [`LockViolation::SleepInAtomic`]. Outside a run there is no atomic
    /// context and nothing is checked.
    pub fn might_sleep(&self, what: &str) {
        self.check_sleep(|| what.to_owned());
    }

    /// [`Sched::might_sleep`] for taking the sleeping lock `lock`.
    pub(crate) fn might_sleep_on(&self, lock: LockId, kind: WaitKind) {
        self.check_sleep(|| format!("takes {kind} `{}`", self.lock_name(lock)));
    }

    /// Records a sleep in atomic context if the current CPU holds a spin
    /// lock; `what` is only built then (every sleeping lock acquisition
    /// passes here).
    fn check_sleep(&self, what: impl FnOnce() -> String) {
        let spinlock = {
            let state = self.state.borrow();
            let Some(run) = state.run.as_ref() else {
                return;
            };
            let Some(cpu) = run.current else {
                return;
            };
            run.cpus[cpu.index()]
                .held
                .iter()
                .rev()
                .find(|h| state.spin[h.at.lock.0])
                .map(|h| (cpu, state.locks[h.at.lock.0].clone()))
        };
        if let Some((cpu, spinlock)) = spinlock {
            let what = what();
            self.state
                .borrow_mut()
                .checks
                .violations
                .insert(LockViolation::SleepInAtomic {
                    cpu,
                    spinlock,
                    what,
                });
        }
    }

    /// The locking violations recorded since the last call, in order.
    pub fn take_lock_violations(&self) -> Vec<LockViolation> {
        std::mem::take(&mut self.state.borrow_mut().checks.violations)
            .into_iter()
            .collect()
    }

    /// The lock acquisition orders seen so far (to carry them to the
    /// machine of the next schedule of an exploration).
    pub fn lock_order(&self) -> LockOrder {
        self.state.borrow().checks.order.clone()
    }

    /// Adds the orders of other runs; inversions they close are recorded.
    pub fn merge_lock_order(&self, other: &LockOrder) {
        let mut state = self.state.borrow_mut();
        let found = state.checks.order.merge(other);
        state.checks.violations.extend(found);
    }

    pub(crate) fn lock_name(&self, lock: LockId) -> String {
        self.state.borrow().locks[lock.0].clone()
    }

    fn reach_switch_point(&self, lock: Option<LockId>) -> Switch {
        let mut state = self.state.borrow_mut();
        let run = state.run();
        let cpu = run.current();
        run.steps += 1;
        if run.steps > run.max_steps {
            run.over_limit = true;
            Switch::Abort
        } else if run.runnable > 1 {
            run.yielded = true;
            run.slot(cpu).resume_at = lock;
            Switch::Yield
        } else {
            // The step goes on through the switch point.
            match lock {
                Some(lock) => run.step.touch(lock),
                None => run.step.global = true,
            }
            Switch::Continue
        }
    }

    /// The acquisition loop of every sleeping or spinning lock: a switch
    /// point, then `now` until it takes the lock; each refusal names the
    /// wait to sleep in before the retry.
    pub(crate) async fn acquire<G>(
        &self,
        lock: LockId,
        mut now: impl FnMut() -> Result<G, Wait>,
    ) -> G {
        self.lock_point(lock).await;
        loop {
            match now() {
                Ok(guard) => return guard,
                Err(wait) => self.sleep(wait).await,
            }
        }
    }

    /// Puts the current task to sleep until a wake-up on `wait.at`; await the
    /// returned future, then retry the operation.
    pub(crate) fn sleep(&self, wait: Wait) -> Sleep<'_> {
        Sleep {
            sched: self,
            wait: Some(wait),
        }
    }

    fn block_current(&self, wait: Wait) {
        let mut state = self.state.borrow_mut();
        let run = state.run();
        let cpu = run.current();
        let slot = run.slot(cpu);
        assert!(
            matches!(slot.task, TaskState::Runnable),
            "BUG: {cpu} blocks while {:?}",
            slot.task
        );
        let (at, kind) = (wait.at, wait.kind);
        let key = wait.key.clone();
        // A woken task retries its lock operation, or re-evaluates its
        // wait-queue condition (anything).
        slot.resume_at = (kind != WaitKind::Event).then_some(at.lock);
        slot.task = TaskState::Blocked(wait);
        run.runnable -= 1;
        run.step.touch(at.lock);
        state.record(|s| TraceEvent::Blocked {
            cpu,
            lock: s.lock_name(at, key.as_deref()),
            kind,
        });
    }

    fn resume_current(&self) {
        let mut state = self.state.borrow_mut();
        let run = state.run();
        let cpu = run.current();
        let slot = run.slot(cpu);
        match slot.task {
            TaskState::Woken(_) => slot.task = TaskState::Runnable,
            ref other => panic!("BUG: {cpu} resumed from sleep while {other:?}"),
        }
    }

    /// Makes every task sleeping on `at` runnable (filtered by `kind`);
    /// returns how many woke.
    pub(crate) fn wake(&self, at: LockAddr, kinds: impl Fn(WaitKind) -> bool) -> usize {
        let Ok(mut state) = self.state.try_borrow_mut() else {
            return 0;
        };
        let Some(run) = state.run.as_mut().filter(|run| !run.tearing_down) else {
            return 0;
        };
        run.step.touch(at.lock);
        let mut woken = 0;
        for slot in &mut run.cpus {
            if matches!(&slot.task, TaskState::Blocked(w) if w.at == at && kinds(w.kind)) {
                let TaskState::Blocked(wait) =
                    std::mem::replace(&mut slot.task, TaskState::Runnable)
                else {
                    unreachable!()
                };
                slot.task = TaskState::Woken(wait);
                run.runnable += 1;
                woken += 1;
            }
        }
        woken
    }

    /// Puts back to sleep, without scheduling them, the woken tasks on `at`
    /// (filtered by `kind`) whose retry can no longer succeed because the
    /// current task just acquired `at`: the scheduler's choice of who ran
    /// first decided the winner, and a doomed retry would only add decisions
    /// that change nothing.
    pub(crate) fn requeue_woken(&self, at: LockAddr, kinds: impl Fn(WaitKind) -> bool) {
        let mut state = self.state.borrow_mut();
        let Some(run) = state.run.as_mut() else {
            return;
        };
        for slot in &mut run.cpus {
            if matches!(&slot.task, TaskState::Woken(w) if w.at == at && kinds(w.kind)) {
                let TaskState::Woken(wait) = std::mem::replace(&mut slot.task, TaskState::Runnable)
                else {
                    unreachable!()
                };
                slot.task = TaskState::Blocked(wait);
                run.runnable -= 1;
            }
        }
    }

    /// Whether some task sleeps (not merely woken) on `at` with `kind`.
    pub(crate) fn has_sleeper(&self, at: LockAddr, kind: WaitKind) -> bool {
        let state = self.state.borrow();
        state.run.as_ref().is_some_and(|run| {
            run.cpus
                .iter()
                .any(|s| matches!(&s.task, TaskState::Blocked(w) if w.at == at && w.kind == kind))
        })
    }

    /// Records that the current task now holds `at`; returns its CPU.
    /// A `trylock` acquisition records no lock order: it cannot wait, so it
    /// cannot close a deadlock (lockdep adds no dependency for a trylock
    /// either; a claim's migration trylocks page locks under
    /// `tag_blocks_lock`, which a fault takes under a page lock).
    pub(crate) fn note_acquired(
        &self,
        at: LockAddr,
        kind: HoldKind,
        key: Option<&dyn fmt::Debug>,
        trylock: bool,
    ) -> CpuId {
        let mut state = self.state.borrow_mut();
        let run = state.run();
        let cpu = run.current();
        run.step.touch(at.lock);
        run.slot(cpu).held.push(Held { at, kind });
        let outer_count = if trylock {
            0
        } else {
            run.slot(cpu).held.len() - 1
        };
        for i in 0..outer_count {
            let outer = state.run().slot(cpu).held[i].at.lock;
            // Each pair of locks is looked at once: the names (the classes)
            // are compared only the first time.
            if outer == at.lock || !state.checks.seen.insert((outer.0, at.lock.0)) {
                continue;
            }
            let (outer, taken) = (state.locks[outer.0].clone(), state.locks[at.lock.0].clone());
            if let Some(cycle) = state.checks.order.add(&outer, &taken) {
                state
                    .checks
                    .violations
                    .insert(LockViolation::OrderInversion {
                        held: outer,
                        taken,
                        cycle,
                    });
            }
        }
        state.record(|s| TraceEvent::Acquired {
            cpu,
            lock: s.lock_name(at, render(key).as_deref()),
            kind,
        });
        cpu
    }

    /// Records that `holder` no longer holds `at`. Tolerates being called
    /// outside a run (a task dropped while unwinding a panic).
    pub(crate) fn note_released(&self, at: LockAddr, holder: CpuId, key: Option<&dyn fmt::Debug>) {
        let Ok(mut state) = self.state.try_borrow_mut() else {
            return;
        };
        let Some(run) = state.run.as_mut() else {
            return;
        };
        let Some(slot) = run.cpus.get_mut(holder.index()) else {
            return;
        };
        if let Some(i) = slot.held.iter().rposition(|h| h.at == at) {
            slot.held.remove(i);
        }
        run.step.touch(at.lock);
        state.record(|s| TraceEvent::Released {
            cpu: holder,
            lock: s.lock_name(at, render(key).as_deref()),
        });
    }

    /// Changes how `holder` holds `at` (a write lock downgraded to read).
    pub(crate) fn note_downgraded(&self, at: LockAddr, holder: CpuId) {
        let mut state = self.state.borrow_mut();
        let run = state.run();
        let held = run
            .slot(holder)
            .held
            .iter_mut()
            .rfind(|h| h.at == at)
            .expect("BUG: downgrading a lock that is not held");
        held.kind = HoldKind::Shared;
    }

    /// The current task's CPU if inside a run, for release-side checks.
    pub(crate) fn releasing_cpu(&self) -> Option<CpuId> {
        self.state
            .try_borrow()
            .ok()
            .and_then(|s| s.run.as_ref().and_then(|r| r.current))
    }
}

fn render(key: Option<&dyn fmt::Debug>) -> Option<String> {
    key.map(|key| format!("{key:?}"))
}

/// Ends the run even if a task panics, so the `Sched` stays usable.
struct EndRun<'s>(&'s Sched);

impl Drop for EndRun<'_> {
    fn drop(&mut self) {
        if let Ok(mut state) = self.0.state.try_borrow_mut() {
            state.run = None;
        }
    }
}

/// The future of [`Sched::preempt_point`].
#[must_use = "a switch point does nothing unless awaited"]
pub struct PreemptPoint<'s> {
    sched: &'s Sched,
    yielded: bool,
    /// The lock whose operation follows (a primitive's switch point).
    lock: Option<LockId>,
}

impl Future for PreemptPoint<'_> {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<()> {
        if self.yielded {
            return Poll::Ready(());
        }
        match self.sched.reach_switch_point(self.lock) {
            Switch::Continue => Poll::Ready(()),
            Switch::Yield | Switch::Abort => {
                self.yielded = true;
                Poll::Pending
            }
        }
    }
}

/// The future of [`Sched::sleep`]: pending once (asleep), ready when polled
/// again (the executor only polls it after a wake-up).
#[must_use = "sleeping does nothing unless awaited"]
pub(crate) struct Sleep<'s> {
    sched: &'s Sched,
    wait: Option<Wait>,
}

impl Future for Sleep<'_> {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<()> {
        match self.wait.take() {
            Some(wait) => {
                self.sched.block_current(wait);
                Poll::Pending
            }
            None => {
                self.sched.resume_current();
                Poll::Ready(())
            }
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::chooser::{Recorder, Replay, Seeded};
    use crate::mutex::SimMutex;
    use crate::schedule::Schedule;
    use std::cell::{Cell, RefCell};

    /// Two tasks each do `v = counter; preempt_point; counter = v + 1` (a
    /// non-atomic increment, Linux's classic lost update without a lock).
    pub(crate) fn racy_counter(chooser: &mut dyn Chooser) -> Result<u32, SchedError> {
        let sched = Sched::new();
        let counter = Cell::new(0u32);
        let tasks: Vec<Task<'_, ()>> = (0..2)
            .map(|_| {
                let (sched, counter) = (&sched, &counter);
                Box::pin(async move {
                    let v = counter.get();
                    sched.preempt_point().await;
                    counter.set(v + 1);
                }) as Task<'_, ()>
            })
            .collect();
        sched.run(tasks, chooser, RunLimits::default())?;
        Ok(counter.get())
    }

    fn replay(text: &str) -> Replay {
        Replay::new(text.parse::<Schedule>().unwrap())
    }

    #[test]
    fn lost_update_depends_on_the_schedule() {
        // Both read before either writes: 1. One runs to completion first: 2.
        assert_eq!(racy_counter(&mut replay("0.1.0")), Ok(1));
        assert_eq!(racy_counter(&mut replay("1.0.1")), Ok(1));
        assert_eq!(racy_counter(&mut replay("0.0")), Ok(2));
        assert_eq!(racy_counter(&mut replay("1.1")), Ok(2));
    }

    #[test]
    fn single_task_makes_no_decision_and_counts_steps() {
        let sched = Sched::new();
        let m = SimMutex::new(&sched, "m", 0u32);
        let mut rec = Recorder::new(Seeded::new(1));
        let task = async {
            for _ in 0..10_000 {
                sched.preempt_point().await;
                *m.lock().await += 1;
            }
            sched.steps()
        };
        let out = sched.run(vec![Box::pin(task)], &mut rec, RunLimits::default());
        // One step per preempt point and one per acquisition.
        assert_eq!(out, Ok(vec![20_000]));
        assert!(rec.schedule().is_empty());
        assert_eq!(m.into_inner(), 10_000);
    }

    #[test]
    fn current_cpu_is_the_task_index() {
        let sched = Sched::new();
        let tasks: Vec<Task<'_, Vec<CpuId>>> = (0..3)
            .map(|_| {
                let sched = &sched;
                Box::pin(async move {
                    let mut seen = vec![sched.current_cpu()];
                    sched.preempt_point().await;
                    seen.push(sched.current_cpu());
                    seen
                }) as Task<'_, _>
            })
            .collect();
        let out = sched
            .run(tasks, &mut Seeded::new(7), RunLimits::default())
            .unwrap();
        for (i, seen) in out.iter().enumerate() {
            assert_eq!(seen, &[CpuId::from_index(i); 2]);
        }
        assert_eq!(sched.try_current_cpu(), None);
        assert_eq!(sched.cpu_count(), None);
    }

    #[test]
    fn step_limit_stops_a_task_that_never_ends() {
        let sched = Sched::new();
        let forever = async {
            loop {
                sched.preempt_point().await;
            }
        };
        let err = sched.block_on(forever, RunLimits { max_steps: 100 });
        assert_eq!(
            err,
            Err(SchedError::StepLimit {
                limit: 100,
                unfinished: vec![CpuId::new(0)]
            })
        );
        // The run ended cleanly: the same Sched runs again.
        assert_eq!(sched.block_on(async { 5 }, RunLimits::default()), Ok(5));
    }

    #[test]
    fn step_limit_names_only_unfinished_cpus() {
        let sched = Sched::new();
        let tasks: Vec<Task<'_, ()>> = vec![
            Box::pin(async {
                loop {
                    sched.preempt_point().await;
                }
            }),
            Box::pin(async {
                sched.preempt_point().await;
            }),
        ];
        let err = sched.run(tasks, &mut Seeded::new(3), RunLimits { max_steps: 50 });
        assert_eq!(
            err,
            Err(SchedError::StepLimit {
                limit: 50,
                unfinished: vec![CpuId::new(0)]
            })
        );
    }

    #[test]
    fn self_deadlock_is_reported() {
        // Linux: taking a mutex twice hangs (lockdep: "possible recursive locking").
        let sched = Sched::new();
        let m = SimMutex::new(&sched, "tag_lock", ());
        let err = sched.block_on(
            async {
                let _a = m.lock().await;
                let _b = m.lock().await;
            },
            RunLimits::default(),
        );
        let Err(SchedError::Deadlock { blocked }) = err else {
            panic!("expected a deadlock, got {err:?}")
        };
        assert_eq!(
            blocked,
            vec![BlockedCpu {
                cpu: CpuId::new(0),
                kind: WaitKind::Mutex,
                lock: "tag_lock".into(),
                holders: vec![CpuId::new(0)],
            }]
        );
        // Tear-down released the guard: the lock is free again.
        assert_eq!(m.holder(), None);
    }

    #[test]
    #[should_panic(expected = "BUG: cpu0 finished its task still holding `leaked`")]
    fn finishing_with_a_lock_held_is_a_bug() {
        let sched = Sched::new();
        let m = SimMutex::new(&sched, "leaked", ());
        let _ = sched.block_on(
            async {
                std::mem::forget(m.lock().await);
            },
            RunLimits::default(),
        );
    }

    #[test]
    #[should_panic(expected = "BUG: cpu0's task is pending outside a switch point")]
    fn a_foreign_pending_future_is_a_bug() {
        let sched = Sched::new();
        let _ = sched.block_on(std::future::pending::<()>(), RunLimits::default());
    }

    #[test]
    fn chooser_picking_a_non_runnable_cpu_is_an_error() {
        struct Always(u32);
        impl Chooser for Always {
            fn choose(&mut self, _: &ChoicePoint<'_>) -> Result<CpuId, ChooseError> {
                Ok(CpuId::new(self.0))
            }
        }
        assert_eq!(
            racy_counter(&mut Always(5)),
            Err(SchedError::NotRunnable {
                chosen: CpuId::new(5),
                runnable: vec![CpuId::new(0), CpuId::new(1)]
            })
        );
    }

    #[test]
    fn trace_records_decisions_and_lock_events() {
        let sched = Sched::new();
        sched.set_tracing(true);
        let m = SimMutex::new(&sched, "m", ());
        let tasks: Vec<Task<'_, ()>> = (0..2)
            .map(|_| {
                let m = &m;
                Box::pin(async move {
                    let _g = m.lock().await;
                }) as Task<'_, ()>
            })
            .collect();
        sched
            .run(tasks, &mut replay("1.1"), RunLimits::default())
            .unwrap();
        let text: Vec<String> = sched.take_trace().iter().map(ToString::to_string).collect();
        assert_eq!(
            text,
            [
                "switch to cpu1 (runnable: cpu0, cpu1)",
                "switch to cpu1 (runnable: cpu0, cpu1)",
                "cpu1 acquires `m`",
                "cpu1 releases `m`",
                "cpu1 finishes",
                "cpu0 acquires `m`",
                "cpu0 releases `m`",
                "cpu0 finishes",
            ]
        );
        assert!(sched.take_trace().is_empty());
    }

    #[test]
    fn a_panicking_task_leaves_the_sched_usable() {
        let sched = Sched::new();
        let m = SimMutex::new(&sched, "m", 1u32);
        let caught = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            sched.block_on(
                async {
                    let _g = m.lock().await;
                    panic!("kernel path failed");
                },
                RunLimits::default(),
            )
        }));
        assert!(caught.is_err());
        assert_eq!(m.holder(), None);
        let log = RefCell::new(Vec::new());
        sched
            .block_on(
                async {
                    let value = *m.lock().await;
                    log.borrow_mut().push(value);
                },
                RunLimits::default(),
            )
            .unwrap();
        assert_eq!(log.into_inner(), [1]);
    }
}
