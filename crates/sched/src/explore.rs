//! Exploration drivers: run a whole program under many schedules and stop at
//! the first failure, returning the schedule that replays it.
//!
//! A *program* is a closure that builds a fresh machine, runs it to the end
//! with the chooser it is given (any number of [`crate::Sched::run`] calls,
//! all with that chooser) and returns a verdict: `Ok(())` or `Err(failure)`.
//! It must be deterministic: the same decisions must lead to the same
//! decision points (systematic search checks this and reports
//! [`ExploreError::Nondeterministic`]).
//!
//! Strategies ([`Strategy`], `mtesim explore --strategy`):
//! - `random`: schedule `i` (from 0) uses [`Sticky`] with seed `seed + i`
//!   (random start order, rare random preemptions: see [`Sticky`]).
//! - `pct`: schedule `i` uses [`Pct`] with seed `seed + i`, the given depth,
//!   and as step estimate the most decisions any earlier schedule made
//!   (schedule 0 uses 1, which makes its one change point a no-op: plain
//!   random priorities; the paper wants the true count, learnt this way).
//! - `exhaustive`: depth-first search over every distinct sequence of
//!   decisions. Each run replays a forced prefix of option indices, then
//!   takes option 0 at every further decision, recording how many options
//!   each decision had; the next prefix increments the deepest decision
//!   with an untried option. A decision's options are the CPU that
//!   [`Choice::Stay`] picks first, then the other runnable CPUs ascending,
//!   so the first schedule never preempts and schedules with few
//!   preemptions come early. Their number for tasks that never block is the
//!   multinomial count of interleavings of their segments: two tasks with
//!   `k` switch points each have `k + 1` segments each and `C(2k + 2, k + 1)`
//!   schedules. Every interleaving is run, even two that differ only in
//!   the order of independent steps.
//! - `reduced`: the same with sleep sets ([`explore_reduced`]), which skip
//!   reorderings of steps that are independent by their [`Footprint`]s (an
//!   approximation that assumes the kernel's locking discipline).
//! - `bounded`: preemption bounding (Musuvathi and Qadeer, PLDI 2007, CHESS):
//!   the same search restricted to schedules with at most `K` preemptions
//!   (a decision that picks another CPU while the one that ran last is still
//!   runnable), by increasing bound: first every schedule with 0
//!   preemptions, then those with exactly 1, ... up to `K`. Each round walks
//!   the tree of its bound; the runs with fewer preemptions it passes
//!   through (run in an earlier round) are neither counted nor checked
//!   again.
//!
//! Sharding ([`Shard`], `--shard K/N`): `N` explorations with the same
//! arguments and shards `0..N` together run exactly the schedules of one
//! unsharded exploration, each once. Random and pct: shard `K` runs the
//! schedules `i` with `i % N == K` (so `max_schedules` counts schedules of
//! the unsharded exploration). Exhaustive and bounded: a schedule belongs
//! to the shard given by a hash of its first [`SHARD_DEPTH`] option indices,
//! so a shard skips the subtrees of the others (costing one uncounted probe
//! run per foreign subtree it meets); `max_schedules` then counts the
//! shard's own schedules, and shards cover the unsharded search exactly
//! when each exhausts.
//!
//! Every driver stops after `max_schedules` runs; `exhausted` says whether
//! systematic search covered everything (for `bounded`: everything within
//! the bound).

use crate::chooser::{ChoicePoint, ChooseError, Chooser, Pct, Recorder, Sticky};
use crate::cpu::CpuId;
use crate::executor::Footprint;
use crate::schedule::{Choice, Schedule};
use thiserror::Error;

/// How to pick the schedules to try.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Strategy {
    Random {
        seed: u64,
    },
    Pct {
        seed: u64,
        depth: u32,
    },
    Exhaustive,
    /// Exhaustive search with sleep sets ([`explore_reduced`]).
    Reduced,
    /// At most this many preemptions per schedule.
    Bounded {
        preemptions: u32,
    },
}

/// One of `count` disjoint parts of an exploration (`index < count`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Shard {
    pub index: u32,
    pub count: u32,
}

impl Shard {
    /// The whole exploration.
    pub const ALL: Shard = Shard { index: 0, count: 1 };

    /// `None` unless `index < count`.
    pub fn new(index: u32, count: u32) -> Option<Self> {
        (index < count).then_some(Self { index, count })
    }

    fn owns_index(self, i: usize) -> bool {
        i % self.count as usize == self.index as usize
    }

    /// The owner of a subtree of systematic search, from its first option
    /// indices (FNV-1a: stable across platforms and Rust versions).
    fn owns_path(self, path: &[Branch]) -> bool {
        if self.count == 1 {
            return true;
        }
        let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
        for branch in path.iter().take(SHARD_DEPTH) {
            hash ^= branch.index as u64;
            hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
        }
        hash % u64::from(self.count) == u64::from(self.index)
    }
}

impl Default for Shard {
    fn default() -> Self {
        Self::ALL
    }
}

/// How deep the subtrees that shards of a systematic search split are.
pub const SHARD_DEPTH: usize = 8;

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
    /// Runs made and counted, the failing one included (a shard's probes of
    /// other shards' subtrees are not counted).
    pub schedules: usize,
    /// Systematic search tried every schedule (within its bound and shard;
    /// always false for random and pct).
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
    explore_shard(strategy, max_schedules, Shard::ALL, program)
}

/// [`explore`] restricted to one shard (see the module doc).
pub fn explore_shard<E>(
    strategy: Strategy,
    max_schedules: usize,
    shard: Shard,
    program: impl FnMut(&mut dyn Chooser) -> Result<(), E>,
) -> Result<Exploration<E>, ExploreError> {
    explore_with(strategy, max_schedules, shard, program, |()| {})
}

/// [`explore_shard`] for a program whose passing runs give a value (what a
/// run observed, say): `counted` sees the value of every run the
/// exploration counts, in order, and not those of the runs it does not
/// (a shard's probes, a bounded round's runs of an earlier round).
pub fn explore_with<O, E>(
    strategy: Strategy,
    max_schedules: usize,
    shard: Shard,
    mut program: impl FnMut(&mut dyn Chooser) -> Result<O, E>,
    mut counted: impl FnMut(O),
) -> Result<Exploration<E>, ExploreError> {
    match strategy {
        Strategy::Random { seed } => Ok(seeded_runs(
            seed,
            max_schedules,
            shard,
            &mut counted,
            |s, _| {
                let mut chooser = Recorder::new(Sticky::new(s));
                let verdict = program(&mut chooser);
                (verdict, chooser.into_parts().1)
            },
        )),
        Strategy::Pct { seed, depth } => Ok(seeded_runs(
            seed,
            max_schedules,
            shard,
            &mut counted,
            |s, longest| {
                let steps_hint = u64::try_from(longest.max(1)).expect("BUG: usize fits u64");
                let mut chooser = Recorder::new(Pct::new(s, depth, steps_hint));
                let verdict = program(&mut chooser);
                (verdict, chooser.into_parts().1)
            },
        )),
        Strategy::Exhaustive => systematic(max_schedules, None, shard, program, &mut counted),
        Strategy::Reduced => explore_reduced(max_schedules, shard, program, counted),
        Strategy::Bounded { preemptions } => {
            let mut total = Exploration {
                schedules: 0,
                exhausted: false,
                longest: 0,
                failure: None,
            };
            for bound in 0..=preemptions {
                let left = max_schedules - total.schedules;
                let round = systematic(left, Some(bound), shard, &mut program, &mut counted)?;
                total.longest = total.longest.max(round.longest);
                total.exhausted = round.exhausted;
                if let Some(mut failure) = round.failure {
                    failure.run += total.schedules;
                    total.schedules += round.schedules;
                    total.failure = Some(failure);
                    return Ok(total);
                }
                total.schedules += round.schedules;
                if !round.exhausted {
                    return Ok(total);
                }
            }
            Ok(total)
        }
    }
}

/// Schedule `i` chosen by [`Sticky`] with seed `seed + i` (wrapping).
pub fn explore_random<E>(
    seed: u64,
    max_schedules: usize,
    program: impl FnMut(&mut dyn Chooser) -> Result<(), E>,
) -> Exploration<E> {
    explore_shard(
        Strategy::Random { seed },
        max_schedules,
        Shard::ALL,
        program,
    )
    .expect("BUG: random exploration checks no determinism")
}

/// Schedule `i` chosen by [`Pct`] with seed `seed + i` (wrapping) and `depth`.
pub fn explore_pct<E>(
    seed: u64,
    depth: u32,
    max_schedules: usize,
    program: impl FnMut(&mut dyn Chooser) -> Result<(), E>,
) -> Exploration<E> {
    explore_shard(
        Strategy::Pct { seed, depth },
        max_schedules,
        Shard::ALL,
        program,
    )
    .expect("BUG: pct exploration checks no determinism")
}

fn seeded_runs<O, E>(
    seed: u64,
    max_schedules: usize,
    shard: Shard,
    counted: &mut impl FnMut(O),
    mut one: impl FnMut(u64, usize) -> (Result<O, E>, Schedule),
) -> Exploration<E> {
    let mut longest = 0;
    let mut runs = 0;
    for i in (0..max_schedules).filter(|&i| shard.owns_index(i)) {
        let run_seed = seed.wrapping_add(u64::try_from(i).expect("BUG: usize fits u64"));
        let (verdict, schedule) = one(run_seed, longest);
        runs += 1;
        longest = longest.max(schedule.len());
        match verdict {
            Ok(value) => counted(value),
            Err(error) => return failed(runs, longest, schedule, error, Some(run_seed)),
        }
    }
    Exploration {
        schedules: runs,
        exhausted: false,
        longest,
        failure: None,
    }
}

/// Every distinct schedule, depth first (see the module doc for the order),
/// until the first failure or `max_schedules` runs.
pub fn explore_exhaustive<E>(
    max_schedules: usize,
    program: impl FnMut(&mut dyn Chooser) -> Result<(), E>,
) -> Result<Exploration<E>, ExploreError> {
    systematic(max_schedules, None, Shard::ALL, program, &mut |()| {})
}

/// Depth-first search; with `bound`, only over schedules of at most that
/// many preemptions, counting and checking only those of exactly that many.
fn systematic<O, E>(
    max_schedules: usize,
    bound: Option<u32>,
    shard: Shard,
    mut program: impl FnMut(&mut dyn Chooser) -> Result<O, E>,
    counted: &mut impl FnMut(O),
) -> Result<Exploration<E>, ExploreError> {
    let mut prefix: Vec<Branch> = Vec::new();
    let mut longest = 0;
    let mut runs = 0;
    let mut run = 0;
    while runs < max_schedules {
        run += 1;
        let mut dfs = Dfs {
            prefix: &prefix,
            taken: Vec::with_capacity(prefix.len()),
            schedule: Schedule::new(),
            diverged: None,
            bound,
            preemptions: 0,
        };
        let verdict = program(&mut dfs);
        replayed(run, dfs.diverged.take(), dfs.taken.len(), prefix.len())?;
        longest = longest.max(dfs.taken.len());
        let mut taken = dfs.taken;
        let ours = shard.owns_path(&taken);
        // A bounded round counts only the schedules new to it.
        let new = bound.is_none_or(|b| dfs.preemptions == b);
        if ours && new {
            runs += 1;
            match verdict {
                Ok(value) => counted(value),
                Err(error) => return Ok(failed(runs, longest, dfs.schedule, error, None)),
            }
        }
        if !ours {
            // Skip the rest of this foreign subtree.
            taken.truncate(SHARD_DEPTH);
        }
        // Backtrack: drop exhausted decisions at the end, advance the last.
        while taken.last().is_some_and(|o| o.index + 1 == o.count) {
            taken.pop();
        }
        let Some(last) = taken.last_mut() else {
            return Ok(Exploration {
                schedules: runs,
                exhausted: true,
                longest,
                failure: None,
            });
        };
        last.index += 1;
        prefix = taken;
    }
    Ok(Exploration {
        schedules: runs,
        exhausted: false,
        longest,
        failure: None,
    })
}

/// One decision of a DFS run: the option taken, of how many allowed.
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
    /// The most preemptions allowed (bounded search).
    bound: Option<u32>,
    /// Preemptions so far in this run.
    preemptions: u32,
}

impl Dfs<'_> {
    /// Option `index` at `point`: the CPU [`Choice::Stay`] picks, then the
    /// other runnable CPUs ascending.
    fn option(point: &ChoicePoint<'_>, index: usize) -> CpuId {
        let stay = Choice::stay_at(point);
        if index == 0 {
            return stay;
        }
        let others = point.runnable.iter().copied().filter(|&c| c != stay);
        others
            .clone()
            .nth(index - 1)
            .expect("BUG: option index within the count")
    }
}

impl Chooser for Dfs<'_> {
    fn choose(&mut self, point: &ChoicePoint<'_>) -> Result<CpuId, ChooseError> {
        let decision = self.taken.len();
        // Every option but the first preempts when the CPU that ran last
        // is still runnable; at the bound only the first is allowed.
        let preempting = point.previous.is_some_and(|p| point.runnable.contains(&p));
        let count = match self.bound {
            Some(bound) if preempting && self.preemptions >= bound => 1,
            _ => point.runnable.len(),
        };
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
        if preempting && index > 0 {
            self.preemptions += 1;
        }
        self.taken.push(Branch { index, count });
        let cpu = Self::option(point, index);
        self.schedule.record(point, cpu);
        Ok(cpu)
    }
}

/// One decision of a reduced DFS run (see [`explore_reduced`]).
#[derive(Clone, Debug)]
struct Node {
    /// The runnable CPUs in option order (the rule's first).
    options: Vec<CpuId>,
    index: usize,
    /// The sleep set on entry: steps that need not be taken first here.
    asleep: Vec<Footprint>,
    /// The first steps of the options explored before `index`.
    done: Vec<Footprint>,
    /// The first step of option `index`, once the next decision saw it.
    first_step: Option<Footprint>,
}

impl Node {
    fn is_asleep(&self, cpu: CpuId) -> bool {
        self.asleep.iter().any(|f| f.cpu == cpu)
    }
}

struct SleepDfs<'p> {
    prefix: &'p [Node],
    taken: Vec<Node>,
    schedule: Schedule,
    diverged: Option<ChooseError>,
    /// Every runnable CPU was asleep: the run repeats explored ones.
    pruned: bool,
}

impl Chooser for SleepDfs<'_> {
    fn choose(&mut self, point: &ChoicePoint<'_>) -> Result<CpuId, ChooseError> {
        let decision = self.taken.len();
        let stay = Choice::stay_at(point);
        let options: Vec<CpuId> = core::iter::once(stay)
            .chain(point.runnable.iter().copied().filter(|&c| c != stay))
            .collect();
        // The sleep set: what slept or was done at the previous decision
        // and commutes with every step taken since (none at a new run, and
        // none when the machine reported no steps).
        let mut asleep = Vec::new();
        if let (Some(prev), Some(first)) = (self.taken.last_mut(), point.steps.first())
            && point.previous.is_some()
        {
            prev.first_step = Some(first.clone());
            for f in prev.asleep.iter().chain(&prev.done) {
                let commutes = point
                    .steps
                    .iter()
                    .all(|s| s.cpu != f.cpu && f.independent(s));
                if commutes && !asleep.iter().any(|a: &Footprint| a.cpu == f.cpu) {
                    asleep.push(f.clone());
                }
            }
        }
        let (index, done) = match self.prefix.get(decision) {
            Some(forced) if forced.options == options => (forced.index, forced.done.clone()),
            Some(forced) => {
                let error = ChooseError::Diverged {
                    decision: decision + 1,
                    expected: forced.options.len(),
                    runnable: point.runnable.to_vec(),
                };
                self.diverged = Some(error.clone());
                return Err(error);
            }
            None => {
                let Some(index) = options
                    .iter()
                    .position(|&c| !asleep.iter().any(|f| f.cpu == c))
                else {
                    self.pruned = true;
                    return Err(ChooseError::Pruned {
                        decision: decision + 1,
                    });
                };
                (index, Vec::new())
            }
        };
        let cpu = options[index];
        self.taken.push(Node {
            options,
            index,
            asleep,
            done,
            first_step: None,
        });
        self.schedule.record(point, cpu);
        Ok(cpu)
    }
}

/// Exhaustive search with sleep sets (Godefroid, 1996): at each decision, a
/// CPU whose next step was already explored from an earlier state and
/// commutes with every step taken since (per [`Footprint::independent`])
/// is not chosen first again, because the schedules it would start differ
/// from explored ones only in the order of independent steps. Every final
/// state of the full search stays reachable, *given the approximation of
/// [`Footprint`]*: the reduction is as sound as the kernel's locking
/// discipline. A run in which every runnable CPU is asleep only repeats
/// explored schedules: it is abandoned ([`ChooseError::Pruned`]) and not
/// counted. `counted` sees the values of the counted runs, as for
/// [`explore_with`].
pub fn explore_reduced<O, E>(
    max_schedules: usize,
    shard: Shard,
    mut program: impl FnMut(&mut dyn Chooser) -> Result<O, E>,
    mut counted: impl FnMut(O),
) -> Result<Exploration<E>, ExploreError> {
    let mut prefix: Vec<Node> = Vec::new();
    let mut longest = 0;
    let mut runs = 0;
    let mut run = 0;
    while runs < max_schedules {
        run += 1;
        let mut dfs = SleepDfs {
            prefix: &prefix,
            taken: Vec::with_capacity(prefix.len()),
            schedule: Schedule::new(),
            diverged: None,
            pruned: false,
        };
        let verdict = program(&mut dfs);
        replayed(run, dfs.diverged.take(), dfs.taken.len(), prefix.len())?;
        longest = longest.max(dfs.taken.len());
        let mut taken = dfs.taken;
        let path: Vec<Branch> = taken
            .iter()
            .map(|n| Branch {
                index: n.index,
                count: n.options.len(),
            })
            .collect();
        let ours = shard.owns_path(&path);
        if ours && !dfs.pruned {
            runs += 1;
            match verdict {
                Ok(value) => counted(value),
                Err(error) => return Ok(failed(runs, longest, dfs.schedule, error, None)),
            }
        }
        if !ours {
            taken.truncate(SHARD_DEPTH);
        }
        // Backtrack: the deepest decision with an option neither asleep
        // nor done; the option just explored joins `done` (its first step
        // unknown when no later decision saw it: then it conflicts with
        // everything).
        loop {
            let Some(node) = taken.last_mut() else {
                return Ok(Exploration {
                    schedules: runs,
                    exhausted: true,
                    longest,
                    failure: None,
                });
            };
            let cpu = node.options[node.index];
            let first = node.first_step.take().unwrap_or(Footprint::unknown(cpu));
            node.done.push(first);
            let next =
                (node.index + 1..node.options.len()).find(|&i| !node.is_asleep(node.options[i]));
            match next {
                Some(i) => {
                    node.index = i;
                    break;
                }
                None => {
                    taken.pop();
                }
            }
        }
        prefix = taken;
    }
    Ok(Exploration {
        schedules: runs,
        exhausted: false,
        longest,
        failure: None,
    })
}

/// Whether run `run` followed the prefix it was given: a program that
/// diverged from it, or stopped before using it up, is not deterministic.
fn replayed(
    run: usize,
    diverged: Option<ChooseError>,
    used: usize,
    prefix: usize,
) -> Result<(), ExploreError> {
    if let Some(source) = diverged {
        return Err(ExploreError::Nondeterministic { run, source });
    }
    if used < prefix {
        return Err(ExploreError::Nondeterministic {
            run,
            source: ChooseError::Unused { used, len: prefix },
        });
    }
    Ok(())
}

/// The end of a search at its first failure: run `runs`, whose schedule
/// (drawn from `seed` for the random strategies) is `schedule`.
fn failed<E>(
    runs: usize,
    longest: usize,
    schedule: Schedule,
    error: E,
    seed: Option<u64>,
) -> Exploration<E> {
    Exploration {
        schedules: runs,
        exhausted: false,
        longest,
        failure: Some(Failure {
            schedule,
            error,
            run: runs,
            seed,
        }),
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
        // Stay-first order: "+2" (cpu0 runs through, no race) passes, then
        // "+1.1.+1" (cpu1 preempts cpu0 between its read and its write):
        // both read 0 before either writes.
        let report = explore_exhaustive(100, |c| match racy_counter(c) {
            Ok(2) => Ok(()),
            other => Err(other),
        })
        .unwrap();
        let failure = report.failure.unwrap();
        assert_eq!(
            (failure.run, failure.schedule.to_string()),
            (2, "+1.1.+1".into())
        );
        assert_eq!(failure.error, Ok(1));
        let mut replay = Replay::new(failure.schedule);
        assert_eq!(racy_counter(&mut replay), Ok(1));
        assert_eq!(replay.finish(), Ok(()));
    }

    #[test]
    fn exhaustive_sees_every_outcome() {
        // Of the 6 schedules, in stay-first order "+2" (cpu0 then cpu1),
        // "+1.1.+1", "+1.1.0", "1.+2" (cpu1 then cpu0), "1.0.+1", "1.0.1",
        // the 4 where both tasks read before either writes lose the update.
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
        assert_eq!(outcomes, [2, 1, 1, 2, 1, 1]);
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
        // First block "+2" (2), second block "+1.1.+1" (1).
        assert_eq!(failure.schedule.to_string(), "+3.1.+1");
        assert_eq!(failure.run, 2);
        let mut replay = Replay::new(failure.schedule);
        assert_eq!(two_blocks(&mut replay), Ok((2, 1)));
        assert_eq!(replay.finish(), Ok(()));
    }

    /// Every schedule a strategy runs, as strings, in order.
    fn schedules_of(strategy: Strategy, shard: Shard, tasks: usize, points: usize) -> Vec<String> {
        let mut seen = Vec::new();
        let report = explore_with(
            strategy,
            100_000,
            shard,
            |c| {
                let mut rec = Recorder::new(c);
                free_running(tasks, points, &mut rec).unwrap();
                Ok::<String, ()>(rec.schedule().to_string())
            },
            |s| seen.push(s),
        )
        .unwrap();
        assert_eq!(report.schedules, seen.len());
        seen
    }

    #[test]
    fn bounded_search_runs_each_schedule_once_by_increasing_preemptions() {
        // Two tasks, two points each: 0 preemptions = who runs first (2).
        let zero = schedules_of(Strategy::Bounded { preemptions: 0 }, Shard::ALL, 2, 2);
        assert_eq!(zero, ["+3", "1.+2"]);
        let one = schedules_of(Strategy::Bounded { preemptions: 1 }, Shard::ALL, 2, 2);
        assert_eq!(one[..2], zero[..]);
        // One preemption: at one of the 2 switch points of the task that
        // starts (the other then runs to its end, as preempting it back
        // would be a second preemption): 2 x 2.
        assert_eq!(one.len(), 2 + 4);
        // A bound beyond the most preemptions possible is exhaustive search.
        let all = schedules_of(Strategy::Bounded { preemptions: 10 }, Shard::ALL, 2, 2);
        let mut sorted = all.clone();
        sorted.sort();
        sorted.dedup();
        assert_eq!((all.len(), sorted.len()), (20, 20));
        let mut exhaustive = schedules_of(Strategy::Exhaustive, Shard::ALL, 2, 2);
        exhaustive.sort();
        assert_eq!(sorted, exhaustive);
    }

    #[test]
    fn shards_together_run_exactly_the_unsharded_schedules() {
        for strategy in [
            Strategy::Exhaustive,
            Strategy::Bounded { preemptions: 2 },
            Strategy::Random { seed: 5 },
        ] {
            let mut whole = schedules_of(strategy, Shard::ALL, 3, 2);
            whole.sort();
            for count in [2, 3, 7] {
                let mut parts = Vec::new();
                for index in 0..count {
                    let part = schedules_of(strategy, Shard::new(index, count).unwrap(), 3, 2);
                    parts.extend(part);
                }
                parts.sort();
                // Random draws may repeat a schedule; the runs still match.
                assert_eq!(parts, whole, "{strategy:?} in {count} shards");
            }
        }
        assert_eq!(Shard::new(3, 3), None);
    }

    /// Two tasks, each taking its own mutex `rounds` times, then (with
    /// `shared`) a mutex they share; the log is the order of the shared
    /// sections. Lock steps touch only their locks, so the sections on
    /// private mutexes commute.
    fn private_then_shared(rounds: usize, c: &mut dyn Chooser) -> Result<Vec<u32>, SchedError> {
        use crate::mutex::SimMutex;
        let sched = Sched::new();
        let private = [
            SimMutex::new(&sched, "p0", 0u32),
            SimMutex::new(&sched, "p1", 0u32),
        ];
        let shared = SimMutex::new(&sched, "shared", Vec::new());
        let tasks: Vec<Task<'_, ()>> = (0..2)
            .map(|i| {
                let (private, shared) = (&private[i], &shared);
                Box::pin(async move {
                    for _ in 0..rounds {
                        *private.lock().await += 1;
                    }
                    shared.lock().await.push(i as u32);
                }) as Task<'_, ()>
            })
            .collect();
        sched.run(tasks, c, RunLimits::default())?;
        Ok(shared.into_inner())
    }

    #[test]
    fn sleep_sets_skip_reorderings_of_independent_steps_and_keep_every_outcome() {
        let outcomes = |reduced: bool| {
            let mut seen = std::collections::BTreeSet::new();
            let program = |c: &mut dyn Chooser| private_then_shared(3, c).map_err(|_| ());
            let report = if reduced {
                explore_reduced(100_000, Shard::ALL, program, |o| {
                    seen.insert(o);
                })
            } else {
                explore_with(Strategy::Exhaustive, 100_000, Shard::ALL, program, |o| {
                    seen.insert(o);
                })
            }
            .unwrap();
            assert!(report.exhausted && report.failure.is_none());
            (report.schedules, seen)
        };
        let (full, all) = outcomes(false);
        let (reduced, kept) = outcomes(true);
        assert_eq!(kept, all);
        assert_eq!(all.len(), 2, "{all:?}");
        assert!(reduced * 4 <= full, "reduced {reduced} of {full}");
        eprintln!("private then shared: full {full} schedules, reduced {reduced}");
        // Plain switch points conflict with everything: no reduction, and
        // the lost update is still found.
        let plain = explore_reduced(
            100,
            Shard::ALL,
            |c| {
                free_running(2, 2, c).unwrap();
                Ok::<(), ()>(())
            },
            |()| {},
        )
        .unwrap();
        assert_eq!(plain.schedules, 20);
        let report = explore_reduced(
            100,
            Shard::ALL,
            |c| match racy_counter(c) {
                Ok(2) => Ok(()),
                other => Err(other),
            },
            |()| {},
        )
        .unwrap();
        let failure = report.failure.unwrap();
        assert_eq!(racy_counter(&mut Replay::new(failure.schedule)), Ok(1));
    }
}
