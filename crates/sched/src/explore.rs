//! Exploration drivers: run a whole program under many schedules and stop at
//! the first failure, returning the schedule that replays it.
//!
//! A *program* is a closure that builds a fresh machine, runs it to the end
//! with the chooser it is given (any number of [`crate::Sched::run`] calls,
//! all with that chooser) and returns a verdict: `Ok(())` or `Err(failure)`.
//! It must be deterministic: the same decisions must lead to the same
//! decision points (exhaustive search checks this and reports
//! [`ExploreError::Nondeterministic`]).
//!
//! Strategies ([`Strategy`], `mtesim explore --strategy`):
//! - `random`: schedule `i` (from 0) uses [`Seeded`] with seed `seed + i`.
//! - `pct`: schedule `i` uses [`Pct`] with seed `seed + i`, the given depth,
//!   and as step estimate the most decisions any earlier schedule made
//!   (schedule 0 uses 1, which makes its one change point a no-op: plain
//!   random priorities; the paper wants the true count, learnt this way).
//! - `exhaustive`: depth-first search over every distinct sequence of
//!   decisions. Each run replays a forced prefix of choice indices, then
//!   picks the lowest runnable CPU at every further decision, recording how
//!   many options each decision had; the next prefix increments the deepest
//!   decision with an untried option. Schedules therefore come in
//!   lexicographic order of CPU sequences, and their number for tasks that
//!   never block is the multinomial count of interleavings of their
//!   segments: two tasks with `k` switch points each have `k + 1` segments
//!   each and `C(2k + 2, k + 1)` schedules. No partial-order reduction: two
//!   schedules that differ only in the order of independent steps are both
//!   run (simple, and obviously complete).
//!
//! Every driver stops after `max_schedules` runs; `exhausted` says whether
//! exhaustive search covered everything.

use crate::chooser::{ChoicePoint, ChooseError, Chooser, Pct, Recorder, Seeded};
use crate::cpu::CpuId;
use crate::schedule::Schedule;
use thiserror::Error;

/// How to pick the schedules to try.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Strategy {
    Random { seed: u64 },
    Pct { seed: u64, depth: u32 },
    Exhaustive,
}

/// The first failing schedule.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Failure<E> {
    /// Replays the failure (strict [`crate::Replay`]).
    pub schedule: Schedule,
    pub error: E,
    /// Which run failed, from 1.
    pub run: usize,
    /// The chooser seed of that run (random and pct).
    pub seed: Option<u64>,
}

/// What an exploration did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Exploration<E> {
    /// Runs made, the failing one included.
    pub schedules: usize,
    /// Exhaustive search tried every schedule (always false for random and pct).
    pub exhausted: bool,
    /// The most decisions one run made.
    pub longest: usize,
    pub failure: Option<Failure<E>>,
}

#[derive(Clone, Debug, PartialEq, Eq, Error)]
pub enum ExploreError {
    #[error("exhaustive exploration, run {run}: {source}")]
    Nondeterministic {
        run: usize,
        #[source]
        source: ChooseError,
    },
}

/// Runs `program` under schedules chosen by `strategy`.
pub fn explore<E>(
    strategy: Strategy,
    max_schedules: usize,
    program: impl FnMut(&mut dyn Chooser) -> Result<(), E>,
) -> Result<Exploration<E>, ExploreError> {
    match strategy {
        Strategy::Random { seed } => Ok(explore_random(seed, max_schedules, program)),
        Strategy::Pct { seed, depth } => Ok(explore_pct(seed, depth, max_schedules, program)),
        Strategy::Exhaustive => explore_exhaustive(max_schedules, program),
    }
}

/// Schedule `i` chosen by [`Seeded`] with seed `seed + i` (wrapping).
pub fn explore_random<E>(
    seed: u64,
    max_schedules: usize,
    mut program: impl FnMut(&mut dyn Chooser) -> Result<(), E>,
) -> Exploration<E> {
    seeded_runs(seed, max_schedules, |run_seed, _| {
        let mut chooser = Recorder::new(Seeded::new(run_seed));
        let verdict = program(&mut chooser);
        (verdict, chooser.into_parts().1)
    })
}

/// Schedule `i` chosen by [`Pct`] with seed `seed + i` (wrapping) and `depth`.
pub fn explore_pct<E>(
    seed: u64,
    depth: u32,
    max_schedules: usize,
    mut program: impl FnMut(&mut dyn Chooser) -> Result<(), E>,
) -> Exploration<E> {
    seeded_runs(seed, max_schedules, |run_seed, longest| {
        let steps_hint = u64::try_from(longest.max(1)).expect("BUG: usize fits u64");
        let mut chooser = Recorder::new(Pct::new(run_seed, depth, steps_hint));
        let verdict = program(&mut chooser);
        (verdict, chooser.into_parts().1)
    })
}

fn seeded_runs<E>(
    seed: u64,
    max_schedules: usize,
    mut one: impl FnMut(u64, usize) -> (Result<(), E>, Schedule),
) -> Exploration<E> {
    let mut longest = 0;
    for i in 0..max_schedules {
        let run_seed = seed.wrapping_add(u64::try_from(i).expect("BUG: usize fits u64"));
        let (verdict, schedule) = one(run_seed, longest);
        longest = longest.max(schedule.len());
        if let Err(error) = verdict {
            return Exploration {
                schedules: i + 1,
                exhausted: false,
                longest,
                failure: Some(Failure {
                    schedule,
                    error,
                    run: i + 1,
                    seed: Some(run_seed),
                }),
            };
        }
    }
    Exploration {
        schedules: max_schedules,
        exhausted: false,
        longest,
        failure: None,
    }
}

/// Every distinct schedule in lexicographic order, depth first, until the
/// first failure or `max_schedules` runs.
pub fn explore_exhaustive<E>(
    max_schedules: usize,
    mut program: impl FnMut(&mut dyn Chooser) -> Result<(), E>,
) -> Result<Exploration<E>, ExploreError> {
    let mut prefix: Vec<Branch> = Vec::new();
    let mut longest = 0;
    for run in 1..=max_schedules {
        let mut dfs = Dfs {
            prefix: &prefix,
            taken: Vec::with_capacity(prefix.len()),
            schedule: Schedule::new(),
            diverged: None,
        };
        let verdict = program(&mut dfs);
        if let Some(source) = dfs.diverged {
            return Err(ExploreError::Nondeterministic { run, source });
        }
        if dfs.taken.len() < prefix.len() {
            return Err(ExploreError::Nondeterministic {
                run,
                source: ChooseError::Unused {
                    used: dfs.taken.len(),
                    len: prefix.len(),
                },
            });
        }
        longest = longest.max(dfs.taken.len());
        if let Err(error) = verdict {
            return Ok(Exploration {
                schedules: run,
                exhausted: false,
                longest,
                failure: Some(Failure {
                    schedule: dfs.schedule,
                    error,
                    run,
                    seed: None,
                }),
            });
        }
        let mut taken = dfs.taken;
        // Backtrack: drop exhausted decisions at the end, advance the last.
        while taken.last().is_some_and(|o| o.index + 1 == o.count) {
            taken.pop();
        }
        let Some(last) = taken.last_mut() else {
            return Ok(Exploration {
                schedules: run,
                exhausted: true,
                longest,
                failure: None,
            });
        };
        last.index += 1;
        prefix = taken;
    }
    Ok(Exploration {
        schedules: max_schedules,
        exhausted: false,
        longest,
        failure: None,
    })
}

/// One decision of a DFS run: the option taken, of how many.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Branch {
    index: usize,
    count: usize,
}

struct Dfs<'p> {
    prefix: &'p [Branch],
    taken: Vec<Branch>,
    schedule: Schedule,
    diverged: Option<ChooseError>,
}

impl Chooser for Dfs<'_> {
    fn choose(&mut self, point: &ChoicePoint<'_>) -> Result<CpuId, ChooseError> {
        let decision = self.taken.len();
        let count = point.runnable.len();
        let index = match self.prefix.get(decision) {
            Some(forced) if forced.count == count => forced.index,
            Some(forced) => {
                let error = ChooseError::Diverged {
                    decision: decision + 1,
                    expected: forced.count,
                    runnable: point.runnable.to_vec(),
                };
                self.diverged = Some(error.clone());
                return Err(error);
            }
            None => 0,
        };
        self.taken.push(Branch { index, count });
        let cpu = point.runnable[index];
        self.schedule.push(cpu);
        Ok(cpu)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::chooser::Replay;
    use crate::executor::tests::racy_counter;
    use crate::executor::{RunLimits, Sched, SchedError, Task};
    use std::cell::Cell;

    /// `tasks` tasks that never block, `points` preempt points each.
    fn free_running(
        tasks: usize,
        points: usize,
        chooser: &mut dyn Chooser,
    ) -> Result<(), SchedError> {
        let sched = Sched::new();
        let futures: Vec<Task<'_, ()>> = (0..tasks)
            .map(|_| {
                let sched = &sched;
                Box::pin(async move {
                    for _ in 0..points {
                        sched.preempt_point().await;
                    }
                }) as Task<'_, ()>
            })
            .collect();
        sched
            .run(futures, chooser, RunLimits::default())
            .map(|_| ())
    }

    fn count(tasks: usize, points: usize) -> usize {
        let mut schedules = std::collections::BTreeSet::new();
        let report = explore_exhaustive(100_000, |c| {
            let mut rec = Recorder::new(c);
            free_running(tasks, points, &mut rec).unwrap();
            assert!(schedules.insert(rec.schedule().to_string()), "repeated");
            Ok::<(), ()>(())
        })
        .unwrap();
        assert!(report.exhausted);
        assert_eq!(report.schedules, schedules.len());
        report.schedules
    }

    #[test]
    fn exhaustive_counts_match_the_interleaving_count() {
        // Task with k switch points = k + 1 atomic segments; schedules are
        // the interleavings of the segments: (sum of segments)! / prod(seg!).
        assert_eq!(count(1, 5), 1); // no decision at all
        assert_eq!(count(2, 0), 2); // C(2, 1): who runs first
        assert_eq!(count(2, 1), 6); // C(4, 2)
        assert_eq!(count(2, 2), 20); // C(6, 3)
        assert_eq!(count(2, 3), 70); // C(8, 4)
        assert_eq!(count(3, 1), 90); // 6! / (2! 2! 2!)
    }

    #[test]
    fn exhaustive_finds_the_lost_update_and_its_schedule_replays() {
        // Lexicographic order: "0.0" (cpu0 first, no race) passes, then
        // "0.1.0": both read 0 before either writes.
        let report = explore_exhaustive(100, |c| match racy_counter(c) {
            Ok(2) => Ok(()),
            other => Err(other),
        })
        .unwrap();
        let failure = report.failure.unwrap();
        assert_eq!(
            (failure.run, failure.schedule.to_string()),
            (2, "0.1.0".into())
        );
        assert_eq!(failure.error, Ok(1));
        let mut replay = Replay::new(failure.schedule);
        assert_eq!(racy_counter(&mut replay), Ok(1));
        assert_eq!(replay.finish(), Ok(()));
    }

    #[test]
    fn exhaustive_sees_every_outcome() {
        // Of the 6 schedules, in lexicographic order "0.0", "0.1.0", "0.1.1",
        // "1.0.0", "1.0.1", "1.1", the 4 where both tasks read before either
        // writes lose the update.
        let mut outcomes = Vec::new();
        let report = explore_exhaustive(100, |c| {
            outcomes.push(racy_counter(c).unwrap());
            Ok::<(), ()>(())
        })
        .unwrap();
        assert_eq!(
            (report.schedules, report.exhausted, report.longest),
            (6, true, 3)
        );
        assert_eq!(outcomes, [2, 1, 1, 1, 1, 2]);
    }

    #[test]
    fn the_schedule_bound_stops_exhaustive_search() {
        let report = explore_exhaustive(4, |c| {
            free_running(2, 2, c).unwrap();
            Ok::<(), ()>(())
        })
        .unwrap();
        assert_eq!((report.schedules, report.exhausted), (4, false));
    }

    #[test]
    fn a_nondeterministic_program_is_reported() {
        // The second run has a third task: the first decision offers three
        // CPUs where the first run offered two.
        let runs = Cell::new(0);
        let err = explore_exhaustive(10, |c| {
            runs.set(runs.get() + 1);
            // The run fails with the chooser's error; the driver reports it.
            free_running(1 + runs.get(), 1, c).map_err(|_| ())
        });
        assert_eq!(
            err,
            Err(ExploreError::Nondeterministic {
                run: 2,
                source: ChooseError::Diverged {
                    decision: 1,
                    expected: 2,
                    runnable: vec![CpuId::new(0), CpuId::new(1), CpuId::new(2)],
                }
            })
        );
    }

    #[test]
    fn random_and_pct_find_the_lost_update_deterministically() {
        let verdict = |c: &mut dyn Chooser| match racy_counter(c) {
            Ok(2) => Ok(()),
            other => Err(other),
        };
        for strategy in [
            Strategy::Random { seed: 1 },
            Strategy::Pct { seed: 1, depth: 2 },
        ] {
            let a = explore(strategy, 50, verdict).unwrap();
            assert_eq!(explore(strategy, 50, verdict).unwrap(), a);
            let failure = a.failure.expect("4 of 6 schedules lose the update");
            let seed = failure.seed.unwrap();
            assert_eq!(seed, 1 + failure.run as u64 - 1);
            assert_eq!(racy_counter(&mut Replay::new(failure.schedule)), Ok(1));
        }
        // A correct program passes every schedule.
        let report = explore_random(0, 30, |c| {
            free_running(3, 2, c).unwrap();
            Ok::<(), ()>(())
        });
        assert_eq!((report.schedules, report.failure), (30, None));
        assert!(report.longest >= 6);
    }

    #[test]
    fn programs_of_several_runs_have_one_schedule() {
        // Two `parallel` blocks in a row: the decisions concatenate, and a
        // replay of the whole string reproduces both.
        fn two_blocks(c: &mut dyn Chooser) -> Result<(u32, u32), SchedError> {
            Ok((racy_counter(c)?, racy_counter(c)?))
        }
        let report = explore_exhaustive(100, |c| match two_blocks(c) {
            Ok((2, 1)) => Err(()),
            _ => Ok(()),
        })
        .unwrap();
        let failure = report.failure.unwrap();
        // First block "0.0" (2), second block "0.1.0" (1): "0.0.0.1.0".
        assert_eq!(failure.schedule.to_string(), "0*3.1.0");
        assert_eq!(failure.run, 2);
        let mut replay = Replay::new(failure.schedule);
        assert_eq!(two_blocks(&mut replay), Ok((2, 1)));
        assert_eq!(replay.finish(), Ok(()));
    }
}
