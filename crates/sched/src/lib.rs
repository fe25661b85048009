//! Deterministic interleaving of simulated CPUs.
//!
//! The simulated kernel runs its paths (system calls, faults, migration, tag
//! storage reservation) as `async` Rust, one task per simulated CPU. Every
//! lock operation and every point where Linux could be preempted or raced is
//! an `.await` at which this crate's scheduler may switch CPUs. Which CPU runs
//! at each such decision comes from a [`Chooser`]: a seed ([`Seeded`], [`Pct`]),
//! a printed [`Schedule`] ([`Replay`]), rare random preemptions
//! ([`Sticky`], what `mtesim run` uses), or a systematic search
//! ([`explore_exhaustive`]). The crate knows nothing about the kernel: tasks
//! are opaque futures, locks are named.
//!
//! - [`executor`]: [`Sched`], runs, switch points, deadlock and step-limit
//!   detection, the task-state machine.
//! - [`mutex`], [`rwlock`], [`table`], [`wait`]: the primitives (Linux
//!   `struct mutex`, `rw_semaphore`, `PG_locked`, wait queues/completions).
//! - [`chooser`]: the decision strategies; [`schedule`]: the printable record;
//!   [`mod@explore`]: the drivers behind `mtesim explore` (random, PCT,
//!   exhaustive, preemption-bounded, exhaustive with sleep sets over the
//!   steps' [`Footprint`]s; shards).
//!
//! Single-threaded and `unsafe`-free: tasks are polled with a no-op waker and
//! the scheduler keeps its own record of who is runnable; everything lives in
//! one explicit [`Sched`] handle per machine, no globals.
//!
//! ```
//! use std::cell::Cell;
//! use sched::{explore_exhaustive, Chooser, RunLimits, Sched, Task};
//!
//! // Two CPUs increment a counter with a race window between read and write.
//! fn program(chooser: &mut dyn Chooser) -> Result<(), String> {
//!     let sched = Sched::new();
//!     let counter = Cell::new(0);
//!     let tasks: Vec<Task<'_, ()>> = (0..2)
//!         .map(|_| {
//!             let (sched, counter) = (&sched, &counter);
//!             Box::pin(async move {
//!                 let v = counter.get();
//!                 sched.preempt_point().await;
//!                 counter.set(v + 1);
//!             }) as Task<'_, ()>
//!         })
//!         .collect();
//!     sched.run(tasks, chooser, RunLimits::default()).map_err(|e| e.to_string())?;
//!     match counter.get() {
//!         2 => Ok(()),
//!         n => Err(format!("lost update: {n}")),
//!     }
//! }
//!
//! let report = explore_exhaustive(100, program).unwrap();
//! let failure = report.failure.unwrap();
//! // cpu0 starts (the first decision keeps to the rule: `+1`) and is
//! // preempted by cpu1 between its read and its write (`1`); then the rule
//! // again (`+1`): both read before either writes.
//! assert_eq!(failure.schedule.to_string(), "+1.1.+1");
//! ```

pub mod chooser;
pub mod cpu;
mod exclusive;
pub mod executor;
pub mod explore;
pub mod lockcheck;
pub mod mutex;
pub mod rwlock;
pub mod schedule;
pub mod spin;
pub mod table;
pub mod wait;

#[cfg(test)]
mod properties;

pub use chooser::{
    ChoicePoint, ChooseError, Chooser, LowestRunnable, OnExhausted, Pct, Recorder, Replay, Seeded,
    Sticky,
};
pub use cpu::CpuId;
pub use executor::{
    BlockedCpu, Footprint, HoldKind, PreemptPoint, RunLimits, Sched, SchedError, Task, TraceEvent,
    WaitKind,
};
pub use explore::{
    Exploration, ExploreError, Failure, SHARD_DEPTH, Shard, Strategy, explore, explore_exhaustive,
    explore_pct, explore_random, explore_reduced, explore_shard, explore_with,
};
pub use lockcheck::{LockOrder, LockViolation};
pub use mutex::{SimMutex, SimMutexGuard};
pub use rwlock::{SimReadGuard, SimRwLock, SimWriteGuard};
pub use schedule::{Choice, Found, Schedule, ScheduleParseError, ScheduleParseErrorKind};
pub use spin::{SimSpinGuard, SimSpinLock};
pub use table::{KeyGuard, LockTable};
pub use wait::{Completion, WaitQueue};
