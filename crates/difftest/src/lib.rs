//! Differential testing: random scenario programs run in lockstep on the
//! machine under test and the reference model (`docs/model.md` §4, invariant 8,
//! "nothing is lost"), and what `mtesim fuzz` runs. Its generator is the
//! one random-program generator of the workspace: the kernel's differential
//! and property tests (this crate's `tests/`) draw their programs from it.
//!
//! Owns the fuzz loop ([`fuzz`]) and its [`FuzzConfig`] and [`FuzzReport`].
//! The parts:
//! - [`program`]: programs over symbolic names and their `.mte` rendering,
//!   which is parsed back and lowered to `uapi` ops by the runner's own
//!   lowering (`scenario::run::lower`), so a reproducer runs what ran;
//! - [`generate`]: the generator, deterministic from a seed, under memory
//!   and tag storage pressure;
//! - [`lockstep`]: one program on two machines, replies compared and the
//!   invariants of the machine under test checked after every step;
//! - [`shrink`]: delta debugging of a failing program, and the `.mte`
//!   reproducer (the reference's outcome on the failing line).
//!
//! Memory pressure: [`FuzzConfig::overcommit`] percent of programs
//! overcommit memory ([`generate`]), so that faults reclaim and sometimes
//! run out of memory; a run ends at its first out-of-memory fault
//! ([`lockstep`]). [`FuzzReport::coverage`] sums what the programs reached
//! ([`lockstep::COVERAGE`]).
//!
//! Concurrency: with [`FuzzConfig::parallel`] above 0, programs hold
//! `parallel` blocks of 2-4 commands run under a schedule drawn from the
//! program's seed, and each block's replies must be those of some serial
//! order of its commands on the reference (a linearizability check; see
//! [`lockstep`]). Ops count commands, a block's lines each.
//!
//! The loop: program `k` gets seed `k`-th draw of a
//! `Xoshiro256PlusPlus::seed_from_u64(config.seed)` and a length drawn from
//! `config.steps` (cut to the ops left), and runs until `config.ops` steps
//! have run in total. A failure counts as a divergence (a panic of either
//! machine counts as one too: the two did not give the same result) or a
//! violation; the first is shrunk and, unless `keep_going`, ends the run.
//! Everything but the shrinker's wall-clock safety bound is a function of
//! the seed.

pub mod generate;
pub mod lockstep;
pub mod program;
pub mod shrink;

#[cfg(test)]
mod tests;

use core::ops::RangeInclusive;

use platform::{Design, Mistakes};
use rand_core::{Rng, SeedableRng};
use rand_xoshiro::Xoshiro256PlusPlus;

pub use generate::{
    DEFAULT_OVERCOMMIT, DEFAULT_PARALLEL, GenConfig, ParallelProgram, StepKind, Weights, generate,
    generate_parallel, overcommits,
};
pub use lockstep::{
    COVERAGE, Factory, Failure, FailureClass, FailureKind, FuzzError, MAX_CANDIDATES,
    NotLinearizable, OrderMismatch, ProgramRun, Side, Signature, run_program,
};
pub use program::{
    Block, BlockSchedule, Cmd, Env, ProcName, Program, ProgramPlatform, PtrName, PtrRef, Step,
};
pub use shrink::{
    Provenance, ShrinkLimits, Shrunk, file_schedule, replay_schedules, reproducer, shrink,
};

/// What `mtesim fuzz` runs.
#[derive(Clone, Debug)]
pub struct FuzzConfig {
    /// Steps to run in total.
    pub ops: u64,
    pub seed: u64,
    pub policy: Design,
    /// Known mistakes every generated platform switches on.
    pub mistakes: Mistakes,
    /// Every generated platform has per-CPU page lists (`pcp=on`).
    pub pcp: bool,
    /// Every generated platform's free-list order (`free-list-order=`).
    pub free_list_order: platform::FreeListOrder,
    /// `thp-sizes=` of every generated platform, instead of the drawn one
    /// (`mtesim fuzz --set thp-sizes=`).
    pub thp_sizes: Option<platform::ThpSizes>,
    /// Steps per program (the last one is cut to the ops left).
    pub steps: RangeInclusive<usize>,
    pub weights: Weights,
    /// Go on after a failure (each one shrunk) instead of stopping.
    pub keep_going: bool,
    /// `None`: report failures unshrunk.
    pub shrink: Option<ShrinkLimits>,
    /// Percent chance that a step opens a `parallel` block
    /// ([`GenConfig::parallel`]; `mtesim fuzz --parallel`).
    pub parallel: u32,
    /// Run only programs `k` with `k % count == index` (`mtesim fuzz
    /// --shard index/count`): the programs and their lengths are drawn as
    /// without sharding and the others are skipped, so `count` shards
    /// together run exactly the programs of one unsharded run (of one that
    /// no failure stopped early).
    pub shard: (u64, u64),
    /// Percent of programs that overcommit memory
    /// ([`GenConfig::overcommit`]).
    pub overcommit: u32,
}

impl FuzzConfig {
    pub fn new(ops: u64, seed: u64, policy: Design) -> FuzzConfig {
        FuzzConfig {
            ops,
            seed,
            policy,
            mistakes: Mistakes::NONE,
            pcp: false,
            free_list_order: platform::FreeListOrder::Address,
            thp_sizes: None,
            steps: 100..=300,
            weights: Weights::default(),
            keep_going: false,
            shrink: Some(ShrinkLimits::default()),
            parallel: DEFAULT_PARALLEL,
            shard: (0, 1),
            overcommit: DEFAULT_OVERCOMMIT,
        }
    }
}

/// A failure the fuzzer found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Found {
    /// The program's index in the run.
    pub program: u64,
    /// The program as generated, and its failure.
    pub original: Program,
    pub failure: Failure,
    /// The shrunk program, unless shrinking was off.
    pub shrunk: Option<Shrunk>,
    /// The `.mte` text of the shrunk program (the original's when not
    /// shrunk).
    pub reproducer: String,
}

impl Found {
    /// Commands of the program written as the reproducer (a block's lines
    /// each).
    pub fn reproducer_len(&self) -> usize {
        self.shrunk.as_ref().map_or_else(
            || {
                self.original.steps[..=self.failure.step]
                    .iter()
                    .map(Step::ops)
                    .sum()
            },
            |s| s.program.ops(),
        )
    }
}

/// What a fuzz run gave.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct FuzzReport {
    /// Steps run in lockstep (the shrinker's runs not counted).
    pub ops: u64,
    pub programs: u64,
    pub divergences: u64,
    pub violations: u64,
    pub found: Vec<Found>,
    /// `parallel` blocks run (and checked against every order).
    pub blocks: u64,
    /// The most candidate reference states one program held at once
    /// ([`lockstep`]: orders with the same replies and different states).
    pub max_candidates: usize,
    /// Programs generated to overcommit memory.
    pub overcommitting: u64,
    /// Programs that ended at an out-of-memory fault.
    pub oom_programs: u64,
    /// [`COVERAGE`] counters of the machine under test, summed over the
    /// programs (in [`COVERAGE`] order; those it answers).
    pub coverage: Vec<(uapi::Counter, u64)>,
}

impl FuzzReport {
    /// `coverage: reclaim.direct=N swap.out=N ... ; P of Q programs
    /// overcommitted, O ended out of memory`.
    pub fn coverage_line(&self) -> String {
        let mut line = String::from("coverage:");
        for (counter, value) in &self.coverage {
            line.push_str(&format!(" {}={value}", counter.name()));
        }
        line.push_str(&format!(
            "; {} of {} programs overcommitted, {} ended out of memory",
            self.overcommitting, self.programs, self.oom_programs
        ));
        line
    }

    /// `fuzz: N ops, D divergences, V violations`.
    pub fn summary(&self) -> String {
        format!(
            "fuzz: {} ops, {} divergences, {} violations",
            self.ops, self.divergences, self.violations
        )
    }

    pub fn passed(&self) -> bool {
        self.divergences == 0 && self.violations == 0
    }
}

/// Runs random programs on a machine from `under_test` and one from
/// `reference` until `config.ops` steps have run (module doc).
pub fn fuzz(
    config: &FuzzConfig,
    under_test: Factory<'_>,
    reference: Factory<'_>,
) -> Result<FuzzReport, FuzzError> {
    let mut seeds = Xoshiro256PlusPlus::seed_from_u64(config.seed);
    let mut report = FuzzReport::default();
    let (low, high) = ((*config.steps.start()).max(1), (*config.steps.end()).max(1));
    let (shard, shards) = (config.shard.0, config.shard.1.max(1));
    // Ops of every program drawn so far, this shard's or not.
    let mut planned = 0;
    let mut drawn_programs = 0u64;
    while planned < config.ops {
        let seed = seeds.next_u64();
        let spread = (high.max(low) - low) as u64 + 1;
        let drawn = low as u64 + seeds.next_u64() % spread;
        let steps = drawn.min(config.ops - planned) as usize;
        planned += steps as u64;
        let ours = drawn_programs % shards == shard;
        drawn_programs += 1;
        if !ours {
            continue;
        }
        let gen_config = GenConfig {
            weights: config.weights.clone(),
            mistakes: config.mistakes,
            pcp: config.pcp,
            free_list_order: config.free_list_order,
            thp_sizes: config.thp_sizes,
            parallel: config.parallel,
            overcommit: config.overcommit,
            ..GenConfig::new(config.policy, steps)
        };
        let program = generate(&gen_config, seed);
        let index = drawn_programs - 1;
        report.programs += 1;
        report.overcommitting += u64::from(overcommits(config.overcommit, seed));
        let run = run_program(&program, under_test, reference)?;
        report.oom_programs += u64::from(run.oom);
        for &(counter, value) in &run.coverage {
            match report.coverage.iter_mut().find(|(c, _)| *c == counter) {
                Some((_, sum)) => *sum += value,
                None => report.coverage.push((counter, value)),
            }
        }
        report.ops += run.ops as u64;
        report.blocks += run.schedules.len() as u64;
        report.max_candidates = report.max_candidates.max(run.max_candidates);
        let Some(failure) = run.failure else {
            continue;
        };
        match failure.class() {
            FailureClass::Violation => report.violations += 1,
            FailureClass::Divergence | FailureClass::Panic => report.divergences += 1,
        }
        let shrunk = config
            .shrink
            .map(|limits| shrink(&program, &failure, under_test, reference, limits))
            .transpose()?;
        let provenance = Provenance {
            seed: config.seed,
            policy: config.policy,
            program: index,
            original_len: program.ops(),
        };
        let text = match &shrunk {
            Some(s) => reproducer(&s.program, &s.failure, &provenance),
            None => {
                let mut cut = program.clone();
                cut.steps.truncate(failure.step + 1);
                replay_schedules(&mut cut, &run.schedules);
                reproducer(&cut, &failure, &provenance)
            }
        };
        report.found.push(Found {
            program: index,
            original: program,
            failure,
            shrunk,
            reproducer: text,
        });
        if !config.keep_going {
            break;
        }
    }
    Ok(report)
}
