//! Choosers: the strategies that make each scheduling decision.
//!
//! A [`Chooser`] is asked only at decisions (two or more runnable tasks; see
//! [`crate::executor`]) and sees the runnable CPUs in ascending order. Every
//! chooser here is deterministic: its choices depend only on its own inputs
//! (seed, schedule) and on the sequence of decision points, so the same
//! program with the same chooser makes the same decisions.
//!
//! - [`LowestRunnable`]: always the lowest-numbered runnable CPU.
//! - [`Seeded`]: uniform random choice from a seed (Xoshiro256++).
//! - [`Pct`]: probabilistic concurrency testing (Burckhardt, Kothari,
//!   Musuvathi, Nagarakatte, ASPLOS 2010).
//! - [`Replay`]: follows a [`Schedule`] exactly, with an error (never a panic)
//!   when it does not fit the program.
//! - [`Recorder`]: wraps any chooser and records the schedule it produced.
//!
//! One chooser may serve several runs in sequence (one per `parallel` block of
//! a scenario); it then sees the runs' decisions as one sequence, which is
//! what a schedule string records.

use std::collections::BTreeMap;

use rand_core::{Rng, SeedableRng};
use rand_xoshiro::Xoshiro256PlusPlus;
use thiserror::Error;

use crate::cpu::{self, CpuId};
use crate::executor::Footprint;
use crate::schedule::Schedule;

/// One decision, as the chooser sees it.
#[derive(Clone, Copy, Debug)]
pub struct ChoicePoint<'a> {
    /// The runnable CPUs, ascending, at least two.
    pub runnable: &'a [CpuId],
    /// The CPU that ran last in this run (`None` at the start of a run). It
    /// is in `runnable` when it stopped at a switch point, not when it
    /// blocked or finished.
    pub previous: Option<CpuId>,
    /// The steps taken since the previous decision of this run (the one
    /// that decision chose first, then any taken while only one CPU could
    /// run), for partial-order reduction; empty at the start of a run.
    pub steps: &'a [Footprint],
}

/// Picks the CPU to run at each decision.
pub trait Chooser {
    /// Returns one of `point.runnable`, or an error that ends the run.
    fn choose(&mut self, point: &ChoicePoint<'_>) -> Result<CpuId, ChooseError>;
}

/// A chooser that cannot follow the program. Decisions are numbered from 1
/// in the order the program reaches them, across all the runs it has served.
#[derive(Clone, Debug, PartialEq, Eq, Error)]
pub enum ChooseError {
    #[error(
        "schedule ended before decision {decision} (runnable: {})",
        cpu::list(.runnable)
    )]
    ScheduleExhausted {
        decision: usize,
        runnable: Vec<CpuId>,
    },
    #[error(
        "schedule decision {decision} picks {wanted}, which is not runnable (runnable: {})",
        cpu::list(.runnable)
    )]
    NotRunnable {
        decision: usize,
        wanted: CpuId,
        runnable: Vec<CpuId>,
    },
    #[error("partial-order reduction: every runnable CPU is asleep at decision {decision}")]
    Pruned { decision: usize },
    #[error("schedule has {len} decisions but the program made only {used}")]
    Unused { used: usize, len: usize },
    #[error(
        "program is not deterministic: decision {decision} offers {} but an earlier run offered {expected} choices",
        cpu::list(.runnable)
    )]
    Diverged {
        decision: usize,
        expected: usize,
        runnable: Vec<CpuId>,
    },
}

/// A borrowed chooser chooses like the chooser (wrap `&mut replay` in a
/// [`Recorder`] and still call [`Replay::finish`] afterwards).
impl<C: Chooser + ?Sized> Chooser for &mut C {
    fn choose(&mut self, point: &ChoicePoint<'_>) -> Result<CpuId, ChooseError> {
        (**self).choose(point)
    }
}

/// Always the lowest-numbered runnable CPU. Deterministic and seedless: what
/// single-CPU convenience runs use, and the fallback of a lenient [`Replay`].
#[derive(Clone, Copy, Debug, Default)]
pub struct LowestRunnable;

impl Chooser for LowestRunnable {
    fn choose(&mut self, point: &ChoicePoint<'_>) -> Result<CpuId, ChooseError> {
        Ok(point.runnable[0])
    }
}

/// A uniform integer below `bound` (> 0), without modulo bias (Lemire 2019,
/// "Fast random integer generation in an interval").
pub(crate) fn below(rng: &mut Xoshiro256PlusPlus, bound: u64) -> u64 {
    assert!(bound > 0, "BUG: random choice among nothing");
    let threshold = bound.wrapping_neg() % bound;
    loop {
        let product = u128::from(rng.next_u64()) * u128::from(bound);
        // The low half decides rejection; the high half is the draw.
        if (product as u64) >= threshold {
            return (product >> 64) as u64;
        }
    }
}

fn pick(rng: &mut Xoshiro256PlusPlus, runnable: &[CpuId]) -> CpuId {
    let n = u64::try_from(runnable.len()).expect("BUG: more than 2^64 CPUs");
    let i = usize::try_from(below(rng, n)).expect("BUG: index below len fits usize");
    runnable[i]
}

/// Uniform random choice at every decision, from a seed.
#[derive(Clone, Debug)]
pub struct Seeded {
    rng: Xoshiro256PlusPlus,
}

impl Seeded {
    pub fn new(seed: u64) -> Self {
        Self {
            rng: Xoshiro256PlusPlus::seed_from_u64(seed),
        }
    }
}

impl Chooser for Seeded {
    fn choose(&mut self, point: &ChoicePoint<'_>) -> Result<CpuId, ChooseError> {
        Ok(pick(&mut self.rng, point.runnable))
    }
}

/// What [`Replay`] does when the program needs more decisions than the
/// schedule holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum OnExhausted {
    /// [`ChooseError::ScheduleExhausted`]: exact replay (`--schedule`).
    #[default]
    Error,
    /// Continue with [`LowestRunnable`]: the schedule is a prefix.
    LowestRunnable,
}

/// Follows a schedule decision by decision.
///
/// Too short: per [`OnExhausted`] (strict by default, because a printed
/// schedule always covers its whole run). Too long: the run cannot know that
/// no further run follows, so call [`Replay::finish`] after the last run.
#[derive(Clone, Debug)]
pub struct Replay {
    schedule: Schedule,
    used: usize,
    on_exhausted: OnExhausted,
}

impl Replay {
    /// Strict replay (the schedule must fit the program exactly), unless
    /// the schedule is a prefix (`...`): then the lowest runnable CPU once
    /// it runs out.
    pub fn new(schedule: Schedule) -> Self {
        let on_exhausted = if schedule.is_prefix() {
            OnExhausted::LowestRunnable
        } else {
            OnExhausted::Error
        };
        Self::with_fallback(schedule, on_exhausted)
    }

    pub fn with_fallback(schedule: Schedule, on_exhausted: OnExhausted) -> Self {
        Self {
            schedule,
            used: 0,
            on_exhausted,
        }
    }

    /// Decisions made so far (from the schedule or the fallback).
    pub fn used(&self) -> usize {
        self.used
    }

    /// Checks that the program consumed the whole schedule.
    pub fn finish(&self) -> Result<(), ChooseError> {
        if self.used < self.schedule.len() {
            return Err(ChooseError::Unused {
                used: self.used,
                len: self.schedule.len(),
            });
        }
        Ok(())
    }
}

impl Chooser for Replay {
    fn choose(&mut self, point: &ChoicePoint<'_>) -> Result<CpuId, ChooseError> {
        let decision = self.used + 1;
        let chosen = match self.schedule.as_slice().get(self.used) {
            Some(&choice) if point.runnable.contains(&choice.resolve(point)) => {
                choice.resolve(point)
            }
            Some(&choice) => {
                let wanted = choice.resolve(point);
                return Err(ChooseError::NotRunnable {
                    decision,
                    wanted,
                    runnable: point.runnable.to_vec(),
                });
            }
            None => match self.on_exhausted {
                OnExhausted::LowestRunnable => point.runnable[0],
                OnExhausted::Error => {
                    return Err(ChooseError::ScheduleExhausted {
                        decision,
                        runnable: point.runnable.to_vec(),
                    });
                }
            },
        };
        self.used += 1;
        Ok(chosen)
    }
}

/// Keeps running the CPU that ran last and preempts it rarely, at random:
/// the default chooser of `mtesim run` and of `mtesim explore --strategy
/// random`, whose schedules print short (see [`crate::schedule`]).
///
/// At the `i`-th decision of a run (from 1) where the CPU that ran last is
/// still runnable, it is preempted with probability `1 / i`, in favour of
/// another runnable CPU drawn uniformly; otherwise it keeps running. Where
/// it is not runnable (the start of a run, or it blocked or finished), the
/// next CPU is drawn uniformly. A run of `k` decisions thus has about
/// `ln k` preemptions, spread over the whole run with a bias to its start
/// (like PCT's change points, without knowing `k` in advance): 2.3 for 10
/// decisions, 7 for 1,000.
#[derive(Clone, Debug)]
pub struct Sticky {
    rng: Xoshiro256PlusPlus,
    /// Decisions of the current run so far.
    decisions: u64,
}

impl Sticky {
    pub fn new(seed: u64) -> Self {
        Self {
            rng: Xoshiro256PlusPlus::seed_from_u64(seed),
            decisions: 0,
        }
    }
}

impl Chooser for Sticky {
    fn choose(&mut self, point: &ChoicePoint<'_>) -> Result<CpuId, ChooseError> {
        if point.previous.is_none() {
            // A new run (the next `parallel` block).
            self.decisions = 0;
        }
        self.decisions += 1;
        let Some(previous) = point.previous.filter(|p| point.runnable.contains(p)) else {
            return Ok(pick(&mut self.rng, point.runnable));
        };
        if below(&mut self.rng, self.decisions) != 0 {
            return Ok(previous);
        }
        // Preempt: any other runnable CPU (there is one: a decision has two).
        let others: Vec<CpuId> = point
            .runnable
            .iter()
            .copied()
            .filter(|&c| c != previous)
            .collect();
        Ok(pick(&mut self.rng, &others))
    }
}

/// Wraps a chooser and records every choice it makes.
#[derive(Clone, Debug)]
pub struct Recorder<C> {
    inner: C,
    schedule: Schedule,
}

impl<C: Chooser> Recorder<C> {
    pub fn new(inner: C) -> Self {
        Self {
            inner,
            schedule: Schedule::new(),
        }
    }

    pub fn schedule(&self) -> &Schedule {
        &self.schedule
    }

    pub fn inner(&self) -> &C {
        &self.inner
    }

    pub fn into_parts(self) -> (C, Schedule) {
        (self.inner, self.schedule)
    }
}

impl<C: Chooser> Chooser for Recorder<C> {
    fn choose(&mut self, point: &ChoicePoint<'_>) -> Result<CpuId, ChooseError> {
        let chosen = self.inner.choose(point)?;
        self.schedule.record(point, chosen);
        Ok(chosen)
    }
}

/// Probabilistic concurrency testing (PCT, Burckhardt et al., ASPLOS 2010).
///
/// Each CPU gets a random priority when it first appears; every decision runs
/// the highest-priority runnable CPU. Before the run, `depth - 1` change
/// points are drawn uniformly from decisions `1..=steps_hint`; at the `j`-th
/// one, the CPU that ran last is demoted to priority `j`, below every initial
/// priority (which are all `>= depth`). For a bug of depth `d` among `n` CPUs
/// and `k` decisions, one run finds it with probability at least
/// `1 / (n * k^(d-1))` when `depth >= d` and `steps_hint >= k`.
///
/// Departures from the paper, and why: steps are decisions, not every
/// instruction (only decisions can change the interleaving, so `k` is smaller
/// and the bound better); change points are drawn with replacement (a repeat
/// demotes the same CPU again, harmless); priorities are drawn lazily because
/// the number of CPUs is not known in advance (distinct random draws ordered
/// the same way as a random permutation; ties, which have probability about
/// `n^2 / 2^64`, go to the lower CPU).
#[derive(Clone, Debug)]
pub struct Pct {
    rng: Xoshiro256PlusPlus,
    depth: u32,
    /// Decision numbers at which to demote, ascending.
    change_points: Vec<u64>,
    priorities: BTreeMap<CpuId, u64>,
    decisions: u64,
}

impl Pct {
    /// `depth >= 1` (1: no change points, plain random priorities);
    /// `steps_hint`: the expected number of decisions (at least 1).
    pub fn new(seed: u64, depth: u32, steps_hint: u64) -> Self {
        let mut rng = Xoshiro256PlusPlus::seed_from_u64(seed);
        let depth = depth.max(1);
        let k = steps_hint.max(1);
        let mut change_points: Vec<u64> = (1..depth).map(|_| 1 + below(&mut rng, k)).collect();
        change_points.sort_unstable();
        Self {
            rng,
            depth,
            change_points,
            priorities: BTreeMap::new(),
            decisions: 0,
        }
    }

    fn priority(&mut self, cpu: CpuId) -> u64 {
        let floor = u64::from(self.depth);
        let rng = &mut self.rng;
        *self
            .priorities
            .entry(cpu)
            .or_insert_with(|| floor + below(rng, u64::MAX - floor))
    }
}

impl Chooser for Pct {
    fn choose(&mut self, point: &ChoicePoint<'_>) -> Result<CpuId, ChooseError> {
        self.decisions += 1;
        for (j, &at) in self.change_points.iter().enumerate() {
            if at == self.decisions
                && let Some(previous) = point.previous
            {
                // The j-th (1-based) change point demotes to priority j.
                let demoted = u64::try_from(j + 1).expect("BUG: depth fits u64");
                self.priorities.insert(previous, demoted);
            }
        }
        let mut best = point.runnable[0];
        let mut best_priority = self.priority(best);
        for &cpu in &point.runnable[1..] {
            let p = self.priority(cpu);
            if p > best_priority {
                (best, best_priority) = (cpu, p);
            }
        }
        Ok(best)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::executor::{RunLimits, Sched, Task};
    use crate::schedule::Choice;
    use std::cell::RefCell;

    /// `tasks` tasks each log their CPU, then `points` times reach a preempt
    /// point and log again: the log is the observable interleaving.
    fn logging_program(chooser: &mut dyn Chooser, tasks: usize, points: usize) -> Vec<u32> {
        let sched = Sched::new();
        let log = RefCell::new(Vec::new());
        let futures: Vec<Task<'_, ()>> = (0..tasks)
            .map(|_| {
                let (sched, log) = (&sched, &log);
                Box::pin(async move {
                    log.borrow_mut().push(sched.current_cpu().as_u32());
                    for _ in 0..points {
                        sched.preempt_point().await;
                        log.borrow_mut().push(sched.current_cpu().as_u32());
                    }
                }) as Task<'_, ()>
            })
            .collect();
        sched.run(futures, chooser, RunLimits::default()).unwrap();
        log.into_inner()
    }

    fn recorded(chooser: impl Chooser, tasks: usize, points: usize) -> (Vec<u32>, Schedule) {
        let mut rec = Recorder::new(chooser);
        let log = logging_program(&mut rec, tasks, points);
        (log, rec.into_parts().1)
    }

    #[test]
    fn below_is_in_range_and_covers_it() {
        let mut rng = Xoshiro256PlusPlus::seed_from_u64(0);
        let mut seen = [0u32; 3];
        for _ in 0..300 {
            seen[usize::try_from(below(&mut rng, 3)).unwrap()] += 1;
        }
        assert!(seen.iter().all(|&n| n > 50), "{seen:?}");
        assert_eq!(below(&mut rng, 1), 0);
    }

    #[test]
    fn seeded_is_deterministic_and_seed_dependent() {
        let runs: Vec<(Vec<u32>, Schedule)> = (0..6)
            .map(|seed| recorded(Seeded::new(seed), 3, 5))
            .collect();
        for (seed, run) in runs.iter().enumerate() {
            assert_eq!(&recorded(Seeded::new(seed as u64), 3, 5), run);
        }
        // 3 tasks x 5 points: at least 12 decisions, so a collision between
        // two seeds has probability below 2^-12 each; these six differ.
        for (i, a) in runs.iter().enumerate() {
            assert!(a.1.len() >= 12);
            for b in &runs[i + 1..] {
                assert_ne!(a, b);
            }
        }
    }

    #[test]
    fn sticky_preempts_rarely_and_its_schedules_print_short() {
        // 2 tasks x 200 points: about 400 decisions, about ln 400 = 6
        // preemptions, each one item of the printed schedule.
        let mut orders = std::collections::BTreeSet::new();
        for seed in 0..20 {
            let (log, schedule) = recorded(Sticky::new(seed), 2, 200);
            assert_eq!(
                recorded(Sticky::new(seed), 2, 200),
                (log.clone(), schedule.clone())
            );
            assert!(schedule.len() >= 200, "{}", schedule.len());
            assert!(schedule.deviations() <= 20, "seed {seed}: {schedule}");
            assert!(schedule.to_string().len() <= 80, "seed {seed}: {schedule}");
            let mut replay = Replay::new(schedule.clone());
            assert_eq!(recorded(&mut replay, 2, 200).0, log);
            orders.insert(log);
        }
        assert!(orders.len() > 10, "{}", orders.len());
    }

    #[test]
    fn a_prefix_replays_then_runs_the_lowest_cpu() {
        let (log, _) = recorded(LowestRunnable, 2, 3);
        let mut replay = Replay::new("...".parse().unwrap());
        assert_eq!(recorded(&mut replay, 2, 3).0, log);
        assert_eq!(replay.finish(), Ok(()));
        // Start on cpu1, then lowest first: cpu0 preempts it at its first point.
        let mut replay = Replay::new("1...".parse().unwrap());
        assert_eq!(recorded(&mut replay, 2, 3).0, [1, 0, 0, 0, 0, 1, 1, 1]);
    }

    #[test]
    fn replay_reproduces_a_recorded_run_exactly() {
        let (log, schedule) = recorded(Seeded::new(42), 3, 4);
        let mut replay = Replay::new(schedule.clone());
        let (replayed_log, replayed) = recorded(&mut replay, 3, 4);
        assert_eq!(replayed_log, log);
        assert_eq!(replayed, schedule);
        // The Recorder wrapped `&mut replay`; check it used everything.
        assert_eq!(replay.finish(), Ok(()));
        assert_eq!(replay.used(), schedule.len());
    }

    #[test]
    fn replay_errors_when_the_schedule_does_not_fit() {
        let sched = |s: &str| s.parse::<Schedule>().unwrap();
        let cpus = |v: &[u32]| v.iter().copied().map(CpuId::new).collect::<Vec<_>>();
        // 2 tasks, 1 point each: "0.1.0" is a complete schedule (3 decisions).
        let run = |replay: &mut Replay| {
            let sched = Sched::new();
            let tasks: Vec<Task<'_, ()>> = (0..2)
                .map(|_| {
                    let sched = &sched;
                    Box::pin(async move { sched.preempt_point().await }) as Task<'_, ()>
                })
                .collect();
            sched.run(tasks, replay, RunLimits::default())
        };
        let mut short = Replay::new(sched("0.1"));
        assert_eq!(
            run(&mut short),
            Err(ChooseError::ScheduleExhausted {
                decision: 3,
                runnable: cpus(&[0, 1])
            }
            .into())
        );
        let mut wrong = Replay::new(sched("0.2"));
        assert_eq!(
            run(&mut wrong),
            Err(ChooseError::NotRunnable {
                decision: 2,
                wanted: CpuId::new(2),
                runnable: cpus(&[0, 1])
            }
            .into())
        );
        // After "0.0" cpu0 is done; cpu1 runs alone, no third decision.
        let mut long = Replay::new(sched("0.0.1"));
        assert!(run(&mut long).is_ok());
        assert_eq!(long.finish(), Err(ChooseError::Unused { used: 2, len: 3 }));
        // A prefix with a fallback: "1" then lowest runnable (0, then 0).
        let mut prefix = Replay::with_fallback(sched("1"), OnExhausted::LowestRunnable);
        assert!(run(&mut prefix).is_ok());
        assert_eq!(prefix.used(), 3);
        assert_eq!(prefix.finish(), Ok(()));
    }

    #[test]
    fn pct_depth_one_never_preempts() {
        // No change points: the top-priority task runs to completion, then
        // the next, so every decision picks the CPU that ran before it.
        for seed in 0..5 {
            let (log, schedule) = recorded(Pct::new(seed, 1, 10), 3, 3);
            let order: Vec<u32> = log.chunks(4).map(|c| c[0]).collect();
            for chunk in log.chunks(4) {
                assert!(chunk.iter().all(|&c| c == chunk[0]), "{log:?}");
            }
            // 1 start + 3 points for the first task, then 1 + 3 for the
            // second once the first finishes; the last runs alone.
            assert_eq!(schedule.len(), 8);
            let first = match order[0] {
                0 => Choice::Stay,
                cpu => Choice::Cpu(CpuId::new(cpu)),
            };
            assert_eq!(schedule.as_slice()[0], first);
            // Never preempting, it deviates from `Stay` at most at the
            // start and where a task finishes.
            assert!(schedule.deviations() <= 3, "{schedule}");
        }
    }

    #[test]
    fn pct_is_deterministic_and_demotes_at_change_points() {
        let a = recorded(Pct::new(9, 3, 8), 3, 3);
        assert_eq!(recorded(Pct::new(9, 3, 8), 3, 3), a);
        // depth 2, k = 2: one change point, at decision 1 or 2. Decision 1
        // (the start) has no previous CPU, so nothing is demoted and the
        // first task runs to completion. At decision 2 (the first task's
        // preempt point) the first task is demoted below the other, which
        // then runs: the log's second entry is another CPU.
        let mut seen = [false; 2];
        for seed in 0..16 {
            let pct = Pct::new(seed, 2, 2);
            let (log, _) = recorded(pct.clone(), 2, 2);
            match pct.change_points.as_slice() {
                [1] => assert_eq!(log[..3], [log[0]; 3], "seed {seed}: {log:?}"),
                [2] => assert_ne!(log[0], log[1], "seed {seed}: {log:?}"),
                other => panic!("change points {other:?} outside 1..=2"),
            }
            seen[usize::try_from(pct.change_points[0] - 1).unwrap()] = true;
        }
        assert_eq!(seen, [true, true]);
    }
}
