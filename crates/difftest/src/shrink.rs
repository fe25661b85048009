//! Shrinking a failing program, and writing it as a runnable `.mte` file.
//!
//! Owns [`shrink`] and [`reproducer`]. Shrinking keeps a candidate only if
//! it still fails the same way ([`Signature`]: divergence, violation or
//! panic, at a step with the same command word), in this order:
//! 1. cut everything after the failing step;
//! 2. delta debugging over steps: remove chunks of half the program, then
//!    quarters, ... down to single steps, repeated while a pass removes
//!    something; after each removal [`Program::prune`] drops the steps that
//!    read a name no remaining step binds;
//! 3. simpler arguments, step by step (lengths down to a page or a granule,
//!    no `populate`, values 0, offsets 0, fewer `prctl` keys and poked tags);
//! 4. a plainer platform (default `tag-storage-data` and `block-size`,
//!    8M of memory, seed 0).
//!
//! `parallel` blocks: the schedule is part of the program. Before the
//! first candidate, each block's schedule becomes the one it ran with
//! (recorded by the failing run), marked as a prefix (`...`): a candidate
//! replays it and, where a removal left the block wanting more decisions,
//! goes on with the lowest runnable CPU. A candidate whose schedule names
//! a CPU that is not runnable is not kept. A kept candidate's blocks take
//! the schedules its own run recorded, so the shrunk program's schedules
//! replay it exactly. Blocks shrink too: single lines removed from a block
//! (with the block's schedule as a prefix, else with a few schedules drawn
//! afresh), a block unwrapped into sequential lines (kept only if the failure needs
//! no concurrency), and a block's schedule cut to the empty prefix `...`
//! or to halves of itself.
//!
//! Bounded by [`ShrinkLimits`]: a number of candidate runs (deterministic)
//! and, as a safety net only, wall-clock time.
//!
//! The reproducer is the shrunk program with the reference's outcome on the
//! failing step (so `mtesim run` on the machine under test fails at that
//! line, and passes on the reference), `expect invariants` after it for a
//! violation, and a comment header. With `parallel` blocks, the header
//! gives the `mtesim run FILE --schedule S` command that replays the run
//! (`S`: the blocks' schedules, concatenated); a block that no serial order
//! explains gets, on its first line that differs in the block's own line
//! order, the reference's outcome in that order (the order in which the
//! reference's `run_parallel` runs a block). The reference may then fail
//! the file at an earlier block whose replies only another order explains. Known limits: a divergence only in a
//! fault address's top byte passes as a scenario (outcomes compare bits
//! 55:0); a divergence only in the base `mmap` bound is checked by an
//! `mprotect` of the reference's base on the next line; a panic gets no
//! outcome (the run of the file panics, exit status 2).

use std::time::{Duration, Instant};

use mte::GRANULE_SIZE;
use platform::Design;
use uapi::{Bound, Outcome};

use crate::lockstep::{
    Factory, Failure, FailureKind, FuzzError, NotLinearizable, Signature, run_program,
};
use crate::program::{BlockSchedule, Cmd, Program, Step};
use scenario::run::compare::actual_text;
use sched::Schedule;

/// How hard to try.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ShrinkLimits {
    /// Candidate programs run, at most.
    pub max_attempts: usize,
    /// Wall-clock bound (makes the result depend on the host's speed when
    /// it is reached; the attempt bound normally comes first).
    pub max_time: Duration,
}

impl Default for ShrinkLimits {
    fn default() -> Self {
        ShrinkLimits {
            max_attempts: 5000,
            max_time: Duration::from_secs(120),
        }
    }
}

/// Schedules drawn afresh for a block that lost a line, when its own no
/// longer fails (seeds 0, 1, ...: random and PCT alternately).
const REDRAWS: u64 = 8;

/// A shrunk failing program.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Shrunk {
    pub program: Program,
    /// The failure of [`Shrunk::program`] (its step is the last one).
    pub failure: Failure,
    /// Commands of the program as given (a block's lines each).
    pub original_len: usize,
    /// Candidate programs run.
    pub attempts: usize,
}

struct Shrinker<'f> {
    signature: Signature,
    under_test: Factory<'f>,
    reference: Factory<'f>,
    limits: ShrinkLimits,
    start: Instant,
    attempts: usize,
    best: Program,
    failure: Failure,
}

impl Shrinker<'_> {
    fn exhausted(&self) -> bool {
        self.attempts >= self.limits.max_attempts || self.start.elapsed() >= self.limits.max_time
    }

    /// Keeps `candidate` if it fails the same way.
    fn try_candidate(&mut self, mut candidate: Program) -> Result<bool, FuzzError> {
        candidate.prune();
        if candidate.steps.is_empty() || candidate == self.best || self.exhausted() {
            return Ok(false);
        }
        self.attempts += 1;
        let run = run_program(&candidate, self.under_test, self.reference)?;
        match run.failure {
            Some(failure) if failure.signature() == self.signature && !run.unfit => {
                candidate.steps.truncate(failure.step + 1);
                replay_schedules(&mut candidate, &run.schedules);
                self.best = candidate;
                self.failure = failure;
                Ok(true)
            }
            _ => Ok(false),
        }
    }

    /// Lines removed from blocks one at a time, blocks unwrapped, and
    /// block schedules cut (module doc).
    fn simplify_blocks(&mut self) -> Result<(), FuzzError> {
        let mut i = 0;
        while i < self.best.steps.len() && !self.exhausted() {
            let Step::Parallel(block) = &self.best.steps[i] else {
                i += 1;
                continue;
            };
            let lines = block.steps.len();
            // Unwrapped: the failure needs no concurrency.
            let mut candidate = self.best.clone();
            let inner = block.steps.clone();
            candidate.steps.splice(i..=i, inner);
            if self.try_candidate(candidate)? {
                continue;
            }
            let mut line = 0;
            while line < lines && !self.exhausted() {
                let mut candidate = self.best.clone();
                let Some(Step::Parallel(block)) = candidate.steps.get_mut(i) else {
                    break;
                };
                if line >= block.steps.len() || block.steps.len() < 2 {
                    break;
                }
                block.steps.remove(line);
                // With the schedule kept as a prefix, else re-drawn (the
                // CPUs after the removed line are renumbered, so the old
                // schedule may name one that no longer runs).
                let mut removed = self.try_candidate(candidate.clone())?;
                for seed in 0..REDRAWS {
                    if removed || self.exhausted() {
                        break;
                    }
                    let mut redrawn = candidate.clone();
                    if let Some(Step::Parallel(block)) = redrawn.steps.get_mut(i) {
                        block.schedule = BlockSchedule::Seed(seed);
                    }
                    removed = self.try_candidate(redrawn)?;
                }
                if !removed {
                    line += 1;
                }
            }
            // Shorter schedules: none (lowest runnable after `...`), then
            // a quarter, a half, three quarters.
            let Some(Step::Parallel(block)) = self.best.steps.get(i) else {
                i += 1;
                continue;
            };
            if let BlockSchedule::Replay(schedule) = block.schedule.clone() {
                let full = schedule.len();
                let mut lens = vec![0, full / 4, full / 2, full * 3 / 4];
                lens.dedup();
                for len in lens.into_iter().filter(|&l| l < full) {
                    if self.exhausted() {
                        break;
                    }
                    let mut candidate = self.best.clone();
                    if let Some(Step::Parallel(b)) = candidate.steps.get_mut(i) {
                        b.schedule =
                            BlockSchedule::Replay(schedule.truncated(len).with_prefix(true));
                    }
                    if self.try_candidate(candidate)? {
                        break;
                    }
                }
            }
            i += 1;
        }
        Ok(())
    }

    fn remove_chunks(&mut self) -> Result<bool, FuzzError> {
        let mut progress = false;
        let mut chunk = (self.best.steps.len() / 2).max(1);
        loop {
            let mut i = 0;
            while i < self.best.steps.len() && !self.exhausted() {
                let mut candidate = self.best.clone();
                let end = (i + chunk).min(candidate.steps.len());
                candidate.steps.drain(i..end);
                if self.try_candidate(candidate)? {
                    progress = true;
                } else {
                    i += chunk;
                }
            }
            if chunk == 1 || self.exhausted() {
                return Ok(progress);
            }
            chunk /= 2;
        }
    }

    fn simplify_steps(&mut self) -> Result<(), FuzzError> {
        let mut i = 0;
        while i < self.best.steps.len() && !self.exhausted() {
            if let Step::Parallel(block) = &self.best.steps[i] {
                for line in 0..block.steps.len() {
                    let Some(Step::Parallel(block)) = self.best.steps.get(i) else {
                        break;
                    };
                    let Some(step) = block.steps.get(line) else {
                        break;
                    };
                    for simpler in simpler_steps(step, self.page()) {
                        let mut candidate = self.best.clone();
                        if let Some(Step::Parallel(b)) = candidate.steps.get_mut(i) {
                            b.steps[line] = simpler;
                        }
                        if self.try_candidate(candidate)? {
                            break;
                        }
                    }
                }
                i += 1;
                continue;
            }
            for simpler in simpler_steps(&self.best.steps[i], self.page()) {
                let mut candidate = self.best.clone();
                candidate.steps[i] = simpler;
                if self.try_candidate(candidate)? {
                    break;
                }
            }
            i += 1;
        }
        Ok(())
    }

    fn simplify_platform(&mut self) -> Result<(), FuzzError> {
        let plain = [
            |p: &mut Program| p.platform.data = None,
            |p: &mut Program| p.platform.block_size = None,
            |p: &mut Program| p.platform.memory = p.platform.memory.min(8 << 20),
            |p: &mut Program| p.platform.seed = 0,
        ];
        for change in plain {
            let mut candidate = self.best.clone();
            change(&mut candidate);
            self.try_candidate(candidate)?;
        }
        Ok(())
    }

    fn page(&self) -> u64 {
        self.best.platform.spec().page_size
    }
}

/// Simpler versions of a step, most drastic first.
fn simpler_steps(step: &Step, page: u64) -> Vec<Step> {
    let Step::Process { proc, cmd } = step else {
        return match step {
            Step::Reclaim { pages } if *pages > 1 => vec![Step::Reclaim { pages: 1 }],
            _ => Vec::new(),
        };
    };
    let mut out: Vec<Cmd> = Vec::new();
    // Pointers nearer their base: offset 0, or the granule's base.
    let mut moved = cmd.clone();
    if let Some(offset) = moved.ptr_mut().map(|p| p.offset) {
        for simpler in [0, offset - offset % GRANULE_SIZE] {
            if let Some(ptr) = moved.ptr_mut()
                && simpler < offset
            {
                ptr.offset = simpler;
                out.push(moved.clone());
            }
        }
    }
    let mut shorter = |len: u64, floors: &[u64], make: &dyn Fn(u64) -> Cmd| {
        for &floor in floors {
            if floor < len {
                out.push(make(floor));
            }
        }
    };
    match cmd {
        Cmd::Mmap {
            name,
            len,
            prot,
            sharing,
            backing,
            populate,
        } => {
            let mmap = |len, populate| Cmd::Mmap {
                name: *name,
                len,
                prot: *prot,
                sharing: *sharing,
                backing: *backing,
                populate,
            };
            if *len > page {
                out.push(mmap(page, *populate));
            }
            if *populate {
                out.push(mmap(*len, false));
            }
        }
        Cmd::Munmap { ptr, len } => shorter(*len, &[page], &|len| Cmd::Munmap { ptr: *ptr, len }),
        Cmd::Mprotect { ptr, len, prot } => shorter(*len, &[page], &|len| Cmd::Mprotect {
            ptr: *ptr,
            len,
            prot: *prot,
        }),
        Cmd::Madvise { ptr, len, advice } => shorter(*len, &[page], &|len| Cmd::Madvise {
            ptr: *ptr,
            len,
            advice: *advice,
        }),
        Cmd::Pin { ptr, len, longterm } => shorter(*len, &[page], &|len| Cmd::Pin {
            ptr: *ptr,
            len,
            longterm: *longterm,
        }),
        Cmd::Unpin { ptr, len } => shorter(*len, &[page], &|len| Cmd::Unpin { ptr: *ptr, len }),
        Cmd::WriteFd { ptr, len } => {
            shorter(*len, &[1, 16], &|len| Cmd::WriteFd { ptr: *ptr, len });
        }
        Cmd::ReadFd { ptr, len, byte } => shorter(*len, &[1, 16], &|len| Cmd::ReadFd {
            ptr: *ptr,
            len,
            byte: *byte,
        }),
        Cmd::Fill { ptr, len, byte } => shorter(*len, &[1, 16], &|len| Cmd::Fill {
            ptr: *ptr,
            len,
            byte: *byte,
        }),
        Cmd::Verify { ptr, len, byte } => shorter(*len, &[1, 16], &|len| Cmd::Verify {
            ptr: *ptr,
            len,
            byte: *byte,
        }),
        Cmd::SetTag { ptr, len } => shorter(*len, &[16], &|len| Cmd::SetTag { ptr: *ptr, len }),
        Cmd::PeekTags {
            target,
            ptr,
            granules,
        } => shorter(*granules, &[1], &|granules| Cmd::PeekTags {
            target: *target,
            ptr: *ptr,
            granules,
        }),
        Cmd::PokeTags { target, ptr, tags } if tags.len() > 1 => out.push(Cmd::PokeTags {
            target: *target,
            ptr: *ptr,
            tags: tags[..1].to_vec(),
        }),
        Cmd::Store { ptr, size, value } if *value > 1 => {
            for value in [0, 1] {
                out.push(Cmd::Store {
                    ptr: *ptr,
                    size: *size,
                    value,
                });
            }
        }
        Cmd::Prctl(request) => {
            let keys = [
                request.tagged_addr.is_some(),
                request.tcf.is_some(),
                request.include.is_some(),
                request.store_only.is_some(),
            ];
            if keys.iter().filter(|&&k| k).count() > 1 {
                for key in 0..4 {
                    let mut r = *request;
                    match key {
                        0 => r.tagged_addr = None,
                        1 => r.tcf = None,
                        2 => r.include = None,
                        _ => r.store_only = None,
                    }
                    if r != *request {
                        out.push(Cmd::Prctl(r));
                    }
                }
            }
        }
        _ => {}
    }
    out.into_iter()
        .map(|cmd| Step::Process { proc: *proc, cmd })
        .collect()
}

/// Shrinks `program`, which fails with `failure` (module doc).
pub fn shrink(
    program: &Program,
    failure: &Failure,
    under_test: Factory<'_>,
    reference: Factory<'_>,
    limits: ShrinkLimits,
) -> Result<Shrunk, FuzzError> {
    let mut best = program.clone();
    best.steps.truncate(failure.step + 1);
    // The blocks' schedules as the failing run drew them.
    let run = run_program(&best, under_test, reference)?;
    replay_schedules(&mut best, &run.schedules);
    let mut shrinker = Shrinker {
        signature: failure.signature(),
        under_test,
        reference,
        limits,
        start: Instant::now(),
        attempts: 0,
        best,
        failure: failure.clone(),
    };
    while shrinker.remove_chunks()? && !shrinker.exhausted() {}
    // Simpler arguments may make more steps removable, and the other way
    // round: repeat while either changes the program (a few rounds).
    for _ in 0..4 {
        let before = shrinker.best.clone();
        shrinker.simplify_blocks()?;
        shrinker.simplify_steps()?;
        shrinker.simplify_platform()?;
        while shrinker.remove_chunks()? && !shrinker.exhausted() {}
        if shrinker.best == before || shrinker.exhausted() {
            break;
        }
    }
    Ok(Shrunk {
        program: shrinker.best,
        failure: shrinker.failure,
        original_len: program.ops(),
        attempts: shrinker.attempts,
    })
}

/// Gives the program's blocks, in order, the schedules a run of it
/// recorded, as prefixes (module doc); blocks the run did not reach keep
/// theirs.
pub fn replay_schedules(program: &mut Program, schedules: &[Schedule]) {
    let blocks = program.steps.iter_mut().filter_map(|s| match s {
        Step::Parallel(block) => Some(block),
        _ => None,
    });
    for (block, schedule) in blocks.zip(schedules) {
        block.schedule = BlockSchedule::Replay(schedule.clone().with_prefix(true));
    }
}

/// The `--schedule` of a program's `.mte` file: its blocks' replayed
/// schedules, concatenated (exact, no `...`); `None` without blocks or if
/// some block draws from a seed.
pub fn file_schedule(program: &Program) -> Option<Schedule> {
    let schedules = program.replayed_schedules()?;
    if schedules.is_empty() {
        return None;
    }
    Some(
        schedules
            .into_iter()
            .flat_map(|s| s.iter())
            .collect::<Schedule>(),
    )
}

/// Where a reproducer came from, for its header.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Provenance {
    /// The fuzzer's `--seed`.
    pub seed: u64,
    pub policy: Design,
    /// The program's index in the run (0 for the first).
    pub program: u64,
    /// Commands of the program as generated (a block's lines each).
    pub original_len: usize,
}

/// The `.mte` text of a failing program (module doc). `failure` must be the
/// failure of `program` (its step within it).
pub fn reproducer(program: &Program, failure: &Failure, provenance: &Provenance) -> String {
    let mut text = String::new();
    text.push_str(&format!(
        "# mtesim fuzz reproducer: --seed {} --set tag-storage={}, program {}\n",
        provenance.seed,
        provenance.policy.name(),
        provenance.program
    ));
    text.push_str(&format!(
        "# original length {} steps, shrunk to {} steps\n",
        provenance.original_len,
        program.ops()
    ));
    for line in failure.to_string().lines() {
        text.push_str(&format!("# {line}\n"));
    }
    if let Some(schedule) = file_schedule(program) {
        text.push_str(&format!(
            "# replay: mtesim run fuzz-failure.mte --schedule {schedule}\n"
        ));
    }
    let body = |with_outcome: bool| {
        let mut body = format!("{}\n", program.platform);
        for (i, step) in program.steps.iter().enumerate() {
            if i != failure.step {
                body.push_str(&format!("{step}\n"));
                continue;
            }
            match &failure.kind {
                FailureKind::NotLinearizable(block) if with_outcome => {
                    body.push_str(&block_with_outcome(step, block));
                }
                FailureKind::Divergence {
                    under_test,
                    reference,
                } if with_outcome => {
                    body.push_str(&format!("{step} => {}\n", actual_text(&reference.outcome)));
                    if let (
                        Step::Process {
                            proc,
                            cmd: Cmd::Mmap { prot, .. },
                        },
                        Some(Bound::Pointer(base)),
                        Outcome::Ok,
                    ) = (step, reference.bound, &reference.outcome)
                        && base.raw() != 0
                        && under_test.outcome == reference.outcome
                    {
                        // The base itself diverged: the reference's base
                        // is mapped there and not, presumably, on the
                        // machine under test.
                        body.push_str(&format!(
                            "{proc} mprotect {:#x} 1 prot={prot} => ok\n",
                            base.raw()
                        ));
                    }
                }
                FailureKind::Violation { .. } => {
                    body.push_str(&format!("{step}\nexpect invariants\n"));
                }
                FailureKind::Divergence { .. }
                | FailureKind::Panic { .. }
                | FailureKind::NotLinearizable(_) => {
                    body.push_str(&format!("{step}\n"));
                }
            }
        }
        body
    };
    let with = body(true);
    if lang::parse("fuzz-failure.mte", with.as_bytes()).is_ok() {
        text.push_str(&with);
    } else {
        // An outcome the parser refuses for this command: the file still
        // runs the program; the comment above says what to look for.
        text.push_str("# (the reference's outcome cannot be written on this command)\n");
        text.push_str(&body(false));
    }
    text
}

/// A block that no order explains, with the reference's outcome in the
/// block's line order on the first line that differs in that order (module
/// doc); the block as it is if that order differs nowhere it can say.
fn block_with_outcome(step: &Step, failure: &NotLinearizable) -> String {
    let Step::Parallel(block) = step else {
        return format!("{step}\n");
    };
    // The identity order's mismatch: the one whose prefix is 0, 1, ..., k.
    let identity = failure
        .orders
        .iter()
        .find(|o| o.prefix.iter().enumerate().all(|(i, &line)| i == line));
    let mut text = String::from("parallel\n");
    for (i, line) in block.steps.iter().enumerate() {
        let outcome = identity.and_then(|o| match (&o.reference, o.prefix.last()) {
            (Ok(Some(reply)), Some(&last)) if last == i => Some(actual_text(&reply.outcome)),
            _ => None,
        });
        match outcome {
            Some(outcome) => text.push_str(&format!("  {line} => {outcome}\n")),
            None => text.push_str(&format!("  {line}\n")),
        }
    }
    text.push_str("end\n");
    text
}
