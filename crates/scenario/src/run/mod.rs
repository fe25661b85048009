//! The runner: executes a scenario on a [`Machine`] and checks what its
//! lines expect (`docs/language.md`, "Statements", "Concurrency",
//! "Expectations", "Running").
//!
//! Owns the run of one file: lowering each command to a [`uapi::Op`]
//! ([`lower`]), comparing results with outcomes ([`compare`]), checking
//! expectations ([`expect`]), `parallel` blocks with their chooser, and the
//! [`RunReport`]. It does not own the machine (the caller builds it from the
//! script's platform, see [`run_source`]) nor any output format beyond the
//! lines of [`RunReport::render`].
//!
//! A run, statement by statement:
//! - a command is lowered and run; a line with an outcome fails when the
//!   result does not match it, and the run goes on; a line without one
//!   never fails (its result is still in the verbose trace);
//! - a pointer that cannot be evaluated (it leaves the 56-bit address
//!   space) fails its line, which then does not run (its bindings are set
//!   as for a failed call: address 0, no process);
//! - a `parallel` block runs its lines together through
//!   [`Machine::run_parallel`], one CPU per line that reaches the machine
//!   (CPU `n` is the `n`-th such line: lines answered without the machine,
//!   a never-created process or a bad pointer, take none), with one chooser
//!   for the whole file: a [`sched::Sticky`] from the schedule seed
//!   ([`RunOptions::schedule_seed`], 0 by default; never the platform's
//!   seed, which only the machine draws from), a [`sched::Replay`] of
//!   `--schedule`, or the caller's ([`Runner::with_chooser`], what `mtesim
//!   explore` uses). Every decision is recorded: [`RunReport::schedule`] is
//!   the string that `--schedule` replays;
//! - an expectation observes the machine and fails its line when it does
//!   not hold.
//!
//! Plain access lines (`P load|store|stg` with nothing else on the line)
//! of a file run through [`run_source`] take a streaming path
//! ([`Runner::access`], a batch of lines parsed ahead at a time) with the
//! same effects as the statement path; the test module `stream_tests`
//! holds the two to the same reports.
//!
//! Stops: a machine that cannot complete a parallel block (deadlock, step
//! limit, an op it does not model) fails the block's line and ends the run,
//! since the machine is then in no state a later line could rely on. A
//! replayed schedule that does not fit (too short, a CPU not runnable, or
//! left over at the end) is an input that cannot be run: a [`RunError`]
//! (exit status 2), and the run ends there.

pub mod compare;
pub mod described;
pub mod expect;
pub mod lower;
#[cfg(test)]
mod stream_tests;
#[cfg(test)]
mod tests;

use core::fmt;

use platform::{Platform, PlatformSpec};
use sched::{ChoicePoint, ChooseError, Chooser, CpuId, Recorder, Replay, Schedule, Sticky};
use thiserror::Error;
use uapi::event::Event;
use uapi::{Counter, Machine, Outcome, Reply};

use lang::Statements;
use lang::ast::{
    Command, CommandStmt, Expect, ExpectStmt, Names, Outcome as Expected, ParallelBlock,
    PlatformLine, Script, Span, Stmt,
};
use lang::{AccessLine, AccessOp, ParseError};
use lower::{Bindings, EvalError, Lowered};

/// How to run (the options of `mtesim run` that change a run).
#[derive(Clone, Debug, Default)]
pub struct RunOptions {
    /// Replaces the platform line's `seed` (IRG and the machine's other
    /// random choices derive from it; interleavings do not).
    pub seed: Option<u64>,
    /// The seed of the interleavings of `parallel` blocks (0 when `None`):
    /// it changes nothing else, so exploring schedules never changes the
    /// tags `irg` draws.
    pub schedule_seed: Option<u64>,
    /// Replay this schedule instead of choosing from the schedule seed
    /// (exactly, or as a prefix if it ends in `...`).
    pub schedule: Option<Schedule>,
    /// Record every command and expectation with its result.
    pub verbose: bool,
    /// Also record, under each command, the machine's events
    /// ([`uapi::event::Event`]: faults, tag block reservations, migrations,
    /// ...). Implies `verbose`.
    pub trace: bool,
    /// Check the machine's invariants after every command and `parallel`
    /// block, as if each were followed by `expect invariants` (the debug
    /// setting of `mtesim run --check-invariants`; the suites use it).
    pub check_invariants: bool,
    /// With `check_invariants`, skip the checks until the first `parallel`
    /// block: `mtesim explore` runs the statements before it identically
    /// in every schedule and checks them in its first schedule only.
    pub invariants_from_first_block: bool,
    /// `--set KEY=VALUE`, in order: each replaces (or adds) that key of the
    /// platform line, as if the file said it. The values must be valid
    /// (`PlatformSpec::set_key` accepted them): the command line checks them
    /// before any file runs.
    pub set: Vec<(String, String)>,
    /// `--platform FILE`: the machine, described apart from the scenario
    /// ([`described`] has the rule for the scenario's own platform line).
    pub described: Option<described::DescribedMachine>,
}

impl RunOptions {
    /// The platform to build for `spec`, with `--set` and `--seed` applied.
    pub fn platform_spec(&self, spec: &PlatformSpec) -> PlatformSpec {
        let mut spec = spec.clone();
        for (key, value) in &self.set {
            if let Err(e) = spec.set_key(key, value) {
                panic!("BUG: --set {key}={value} was not validated: {e}");
            }
        }
        if let Some(seed) = self.seed {
            spec.seed = seed;
        }
        spec
    }

    /// The keys `--set` and `--seed` give.
    pub fn set_keys(&self) -> Vec<&str> {
        let mut keys: Vec<&str> = self.set.iter().map(|(k, _)| k.as_str()).collect();
        if self.seed.is_some() {
            keys.push("seed");
        }
        keys
    }

    /// The machine a file runs on: the described one if there is one
    /// (checked against the file's `platform` line), else the line's.
    pub fn platform(
        &self,
        line: Option<&PlatformLine>,
        spec: &PlatformSpec,
    ) -> Result<Platform, String> {
        match &self.described {
            Some(described) => described
                .for_scenario(line, spec, &self.set_keys())
                .map_err(|e| e.to_string()),
            None => Platform::from_spec(spec).map_err(|e| format!("platform cannot be built: {e}")),
        }
    }
}

/// A line whose expectation did not hold.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Failure {
    /// 1-based line of the statement (of `parallel` for a failure of the
    /// block itself).
    pub line: u32,
    /// `expected OUTCOME, got RESULT`, or why the line could not run.
    pub message: String,
}

impl Failure {
    /// `FAIL file:line: message`.
    pub fn render(&self, file: &str) -> String {
        format!("FAIL {file}:{}: {}", self.line, self.message)
    }
}

/// One line of the verbose trace: a statement and what it gave.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Step {
    pub line: u32,
    /// The statement as written (its command word and process when the
    /// runner has no source text).
    pub text: String,
    /// The result in the scenario syntax (`value 0x0`), `holds` or `fails`
    /// for an expectation, the decisions made for a `parallel` block.
    pub result: String,
    /// What the machine did inside while the line ran, oldest first (only
    /// with [`RunOptions::trace`]).
    pub events: Vec<Event>,
}

impl Step {
    /// `  12: p load a#7 8 => value 0x0`, then one indented line per event
    /// (`        fault anon 0x7fff0000 mapped`).
    pub fn render(&self) -> String {
        let mut out = format!("  {}: {} => {}", self.line, self.text, self.result);
        for event in &self.events {
            out.push_str("\n        ");
            out.push_str(&event.to_string());
        }
        out
    }
}

/// Why a run could not be carried out (exit status 2, like a malformed file).
#[derive(Clone, Debug, PartialEq, Eq, Error)]
pub enum RunError {
    /// The `--schedule` being replayed does not fit the file.
    #[error("schedule: {0}")]
    Schedule(ChooseError),
}

/// What running one file gave.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RunReport {
    /// In the order they were found.
    pub failures: Vec<Failure>,
    /// The verbose trace (empty unless [`RunOptions::verbose`]).
    pub steps: Vec<Step>,
    /// The counters the machine keeps, at the end, in `docs/model.md` §5 order.
    pub counters: Vec<(Counter, u64)>,
    /// Every decision of the file's parallel blocks, when it has any: what
    /// `--schedule` replays.
    pub schedule: Option<Schedule>,
    /// Set when the run could not be carried out to the end.
    pub error: Option<RunError>,
    /// Commands run (lines inside `parallel` blocks included).
    pub commands: u64,
    /// The seed the machine drew from (the platform line's, or `--seed`).
    pub seed: u64,
    /// The seed the interleavings drew from (unless replayed).
    pub schedule_seed: u64,
    /// Some line failed inside or after a `parallel` block: the schedule is
    /// part of what reproduces the failure, so [`RunReport::render`] prints
    /// it even when not verbose.
    pub failed_after_block: bool,
    /// A digest of everything the run observed: each command's line and
    /// result and each expectation's verdict, in order (with the final
    /// counters, what `mtesim explore` counts distinct final states by).
    pub digest: u64,
}

/// The verdict on one file, and its exit status.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Status {
    /// Every expectation held (exit 0).
    Pass,
    /// Some expectation failed (exit 1).
    Fail,
    /// The file could not be read, is malformed, or could not be run
    /// (exit 2).
    Error,
}

impl Status {
    /// `docs/language.md`, "Running".
    pub const fn exit_code(self) -> u8 {
        match self {
            Status::Pass => 0,
            Status::Fail => 1,
            Status::Error => 2,
        }
    }
}

impl RunReport {
    pub fn status(&self) -> Status {
        if self.error.is_some() {
            Status::Error
        } else if self.failures.is_empty() {
            Status::Pass
        } else {
            Status::Fail
        }
    }

    pub fn passed(&self) -> bool {
        self.status() == Status::Pass
    }

    /// What `mtesim run` prints on stdout for the file: the verbose trace
    /// (with `verbose`), then one `FAIL file:line: ...` per failure, or
    /// `PASS file`. A [`RunError`] is not included (it goes to stderr, see
    /// [`RunReport::render_error`]).
    pub fn render(&self, file: &str, verbose: bool) -> String {
        let mut out = String::new();
        if verbose {
            for step in &self.steps {
                out.push_str(&step.render());
                out.push('\n');
            }
        }
        if let Some(schedule) = &self.schedule
            && (verbose || self.failed_after_block)
        {
            out.push_str(&format!("  schedule: {schedule}\n"));
        }
        for failure in &self.failures {
            out.push_str(&failure.render(file));
            out.push('\n');
        }
        if self.failures.is_empty() && self.error.is_none() {
            out.push_str(&format!("PASS {file}\n"));
        }
        out
    }

    /// `file: schedule: ...` when the run could not be carried out.
    pub fn render_error(&self, file: &str) -> Option<String> {
        self.error.as_ref().map(|e| format!("{file}: {e}"))
    }
}

/// Runs a parsed script on `machine`, which the caller built from the
/// script's platform (with [`RunOptions::seed`] applied: see
/// [`RunOptions::platform_spec`]). Without the source text, verbose steps
/// show each command's process and command word only; use [`Runner`] with
/// [`Runner::with_source`] for the full text.
pub fn run_script<M: Machine + ?Sized>(
    script: &Script,
    machine: &mut M,
    options: &RunOptions,
) -> RunReport {
    let mut runner = Runner::new(machine, options, &script.platform_spec());
    for stmt in &script.stmts {
        runner.statement(stmt, &script.names);
    }
    runner.finish()
}

/// What came of one file given to [`run_source`].
#[derive(Debug)]
pub enum FileResult {
    /// The file ran (which may still have failed or stopped).
    Ran(RunReport),
    /// The file is malformed; nothing of it ran.
    Malformed(ParseError),
    /// The file is well formed but no machine could be built for it.
    CannotRun(String),
}

impl FileResult {
    pub fn status(&self) -> Status {
        match self {
            FileResult::Ran(report) => report.status(),
            FileResult::Malformed(_) | FileResult::CannotRun(_) => Status::Error,
        }
    }
}

/// Parses and runs one file in a single streaming pass, the way `mtesim
/// run` does: the machine comes from `make_machine`, given the file's
/// platform (its `platform` line, defaults otherwise, `--seed` applied).
///
/// The file is checked while it runs: if a line turns out malformed, the
/// run so far is thrown away and the result is [`FileResult::Malformed`],
/// which is indistinguishable from not having run (the machine is private
/// to the run and nothing is printed before the end). This keeps a
/// ten-million-line trace to one pass and no syntax tree in memory.
pub fn run_source<'m, E: fmt::Display>(
    file: &str,
    src: &[u8],
    options: &RunOptions,
    make_machine: impl FnOnce(&Platform) -> Result<Box<dyn Machine + 'm>, E>,
) -> FileResult {
    let mut stmts = Statements::new(file, src);
    // The platform line is known once the first statement is read.
    let first = match stmts.next() {
        Some(Err(e)) => return FileResult::Malformed(e),
        Some(Ok(stmt)) => Some(stmt),
        None => None,
    };
    let line = stmts.platform();
    let spec = options.platform_spec(&line.map_or_else(PlatformSpec::default, |p| p.spec.clone()));
    let machine = options
        .platform(line, &spec)
        .and_then(|platform| make_machine(&platform).map_err(|e| e.to_string()));
    let mut machine = match machine {
        Ok(machine) => machine,
        Err(why) => {
            // Malformed wins over unrunnable: read the rest for errors.
            for stmt in stmts {
                if let Err(e) = stmt {
                    return FileResult::Malformed(e);
                }
            }
            return FileResult::CannotRun(why);
        }
    };
    let mut runner = Runner::new(&mut *machine, options, &spec).with_source(src);
    let empty = Names::default();
    if let Some(stmt) = &first {
        runner.statement(stmt, stmts.names().unwrap_or(&empty));
    }
    // Plain access lines stream (`Runner::access`) unless the run records
    // each line's text, events or invariants. They are parsed a batch at a
    // time, then run back to back: with no parse between two accesses, the
    // host's cache misses of one overlap the next's (the trace bench's flat
    // store ran twice as fast).
    let streams = runner.streams();
    let mut batch: Vec<AccessLine> = Vec::with_capacity(STREAM_BATCH);
    loop {
        if streams {
            while batch.len() < STREAM_BATCH
                && let Some(access) = stmts.next_access()
            {
                batch.push(access);
            }
            if !batch.is_empty() {
                let names = stmts.names().unwrap_or(&empty);
                runner.prefetch(&batch);
                for access in &batch {
                    runner.access(access, names);
                }
                batch.clear();
                continue;
            }
        }
        // Statements are run where the iterator left them: a statement is
        // over two cache lines, and moving each out of its `Result` showed
        // up as memcpy calls in trace profiles.
        let next = stmts.next();
        match &next {
            None => break,
            Some(Ok(stmt)) => runner.statement(stmt, stmts.names().unwrap_or(&empty)),
            Some(Err(_)) => {
                if let Some(Err(e)) = next {
                    return FileResult::Malformed(e);
                }
            }
        }
    }
    FileResult::Ran(runner.finish())
}

/// Access lines parsed ahead before they run (see `run_source`).
const STREAM_BATCH: usize = 32;

/// Chooses for `parallel` blocks and keeps the first error of a replay, so
/// that a schedule that does not fit is told apart from a machine failure.
struct BlockChooser<'a> {
    strategy: Strategy<'a>,
    error: Option<ChooseError>,
}

enum Strategy<'a> {
    Sticky(Sticky),
    Replay(Replay),
    Given(&'a mut dyn Chooser),
}

impl Chooser for BlockChooser<'_> {
    fn choose(&mut self, point: &ChoicePoint<'_>) -> Result<CpuId, ChooseError> {
        let chosen = match &mut self.strategy {
            Strategy::Sticky(sticky) => sticky.choose(point),
            Strategy::Replay(replay) => replay.choose(point),
            Strategy::Given(chooser) => chooser.choose(point),
        };
        if let Err(e) = &chosen {
            self.error.get_or_insert_with(|| e.clone());
        }
        chosen
    }
}

/// Runs statements one at a time on a machine (the engine behind
/// [`run_script`] and [`run_source`], for callers that produce statements
/// their own way).
pub struct Runner<'a, M: Machine + ?Sized> {
    machine: &'a mut M,
    verbose: bool,
    /// Collect the machine's events under each line's step.
    trace: bool,
    source: Option<&'a [u8]>,
    check_invariants: bool,
    invariants_from_first_block: bool,
    bindings: Bindings,
    chooser: Recorder<BlockChooser<'a>>,
    /// A parallel block has run (so the schedule is worth reporting).
    had_block: bool,
    /// The run ended early (see the module doc, "Stops").
    stopped: bool,
    report: RunReport,
    digest: Digest,
    /// The batch [`Runner::prefetch`] passes to the machine (kept to reuse
    /// its allocation).
    prefetched: Vec<(uapi::Pid, mte::TaggedPtr)>,
}

/// A hash of what a run observed (FNV-1a over bytes, a multiply-rotate
/// step over the words of [`Digest::command`]): stable across platforms and
/// Rust versions, so digests can be compared between runs and machines.
struct Digest(u64);

impl Digest {
    fn new() -> Self {
        Self(0xcbf2_9ce4_8422_2325)
    }

    fn add(&mut self, bytes: &[u8]) {
        self.bytes(bytes);
        self.end();
    }

    fn bytes(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 ^= u64::from(b);
            self.0 = self.0.wrapping_mul(0x0000_0100_0000_01b3);
        }
    }

    /// A whole 64-bit word, mixed in one multiply (FxHash's step, with
    /// a rotation so that every input bit reaches the top and the bottom).
    fn word(&mut self, word: u64) {
        self.0 = (self.0.rotate_left(23) ^ word).wrapping_mul(0x9e37_79b9_7f4a_7c15);
    }

    /// A command's line and result. The results of a trace's accesses
    /// (`ok`, `value V`) go in as words: hashing their text a byte at a
    /// time, one multiply after another, cost more than the rest of the
    /// runner's work on the line. Any other result goes in as its text
    /// (`actual_text`).
    fn command(&mut self, line: u32, outcome: &Outcome) {
        self.word(u64::from(line));
        match outcome {
            Outcome::Ok => self.word(1),
            &Outcome::Value(value) => {
                self.word(2);
                self.word(value as u64);
                self.word((value >> 64) as u64);
            }
            other => {
                let _ = compare::write_actual(self, other);
                self.end();
            }
        }
    }

    /// A separator, so that ("ab", "c") and ("a", "bc") differ.
    fn end(&mut self) {
        self.0 ^= 0xff;
        self.0 = self.0.wrapping_mul(0x0000_0100_0000_01b3);
    }
}

/// Text written into the digest as it is formatted (one item: end it with
/// [`Digest::end`]), so a line's result needs no `String`.
impl fmt::Write for Digest {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        self.bytes(s.as_bytes());
        Ok(())
    }
}

impl<'a, M: Machine + ?Sized> Runner<'a, M> {
    /// A runner for a file whose platform line is `spec` (for the seed,
    /// unless `options` replaces it).
    pub fn new(machine: &'a mut M, options: &RunOptions, spec: &PlatformSpec) -> Self {
        let seed = options.seed.unwrap_or(spec.seed);
        let schedule_seed = options.schedule_seed.unwrap_or(0);
        let strategy = match &options.schedule {
            Some(schedule) => Strategy::Replay(Replay::new(schedule.clone())),
            None => Strategy::Sticky(Sticky::new(schedule_seed)),
        };
        machine.set_trace(options.trace);
        Runner {
            machine,
            verbose: options.verbose || options.trace,
            trace: options.trace,
            check_invariants: options.check_invariants,
            invariants_from_first_block: options.invariants_from_first_block,
            source: None,
            bindings: Bindings::new(),
            chooser: Recorder::new(BlockChooser {
                strategy,
                error: None,
            }),
            had_block: false,
            stopped: false,
            report: RunReport {
                seed,
                schedule_seed,
                ..RunReport::default()
            },
            digest: Digest::new(),
            prefetched: Vec::new(),
        }
    }

    /// Lets `chooser` make every decision of the file's `parallel` blocks
    /// (instead of the schedule seed or `--schedule`).
    pub fn with_chooser(mut self, chooser: &'a mut dyn Chooser) -> Self {
        self.chooser = Recorder::new(BlockChooser {
            strategy: Strategy::Given(chooser),
            error: None,
        });
        self
    }

    /// The file's text, for the verbose trace.
    pub fn with_source(mut self, source: &'a [u8]) -> Self {
        self.source = Some(source);
        self
    }

    /// Runs one statement; `names` are the script's names (for messages).
    pub fn statement(&mut self, stmt: &Stmt, names: &Names) {
        if self.stopped {
            return;
        }
        // The steps this statement records start here (a `parallel` block
        // records its own line, then one per command of the block).
        let first = self.report.steps.len();
        let line = match stmt {
            Stmt::Command(c) => {
                self.command(c, names);
                c.line
            }
            Stmt::Expect(e) => {
                self.expect(e, names);
                return;
            }
            Stmt::Parallel(p) => {
                self.parallel(p, names);
                p.line
            }
        };
        if self.trace {
            let events = self.machine.take_events();
            match self.report.steps[first..]
                .iter_mut()
                .find(|s| s.line == line)
            {
                Some(step) => step.events = events,
                None => debug_assert!(events.is_empty(), "BUG: events of line {line} with no step"),
            }
        }
        if self.check_invariants && (self.had_block || !self.invariants_from_first_block) {
            let violations = self.machine.invariant_violations();
            if !violations.is_empty() {
                let message = format!(
                    "expected invariants to hold after this line, got {} violated: {}",
                    violations.len(),
                    violations
                        .iter()
                        .map(ToString::to_string)
                        .collect::<Vec<_>>()
                        .join("; ")
                );
                self.fail(line, message);
            }
        }
    }

    /// Whether plain access lines may take [`Runner::access`]'s streaming
    /// path: not when each line's text, events or invariants are wanted,
    /// which only the general path records.
    pub fn streams(&self) -> bool {
        !self.verbose && !self.trace && !self.check_invariants
    }

    /// Asks the machine to bring into the host's caches what a batch of
    /// access lines about to run will read ([`Machine::prefetch`]), so that
    /// their cache misses overlap; changes nothing. Lines whose process or
    /// address does not evaluate now are skipped ([`Runner::access`] runs
    /// them as statements).
    pub fn prefetch(&mut self, batch: &[AccessLine]) {
        if !self.streams() || self.stopped {
            return;
        }
        let mut accesses = std::mem::take(&mut self.prefetched);
        accesses.clear();
        accesses.extend(batch.iter().filter_map(|access| {
            let pid = self.bindings.process(access.proc.node)?;
            Some((pid, self.bindings.eval(access.op.ptr()).ok()?))
        }));
        std::hint::black_box(self.machine.prefetch(&accesses));
        self.prefetched = accesses;
    }

    /// Runs a plain access line (`lang::AccessLine`): exactly what
    /// [`Runner::statement`] does for `access.to_stmt()` (the test
    /// `streamed_runs_equal_statement_runs` runs random traces both ways),
    /// without building the statement, its `Op` lowering or a result
    /// string. A line the streaming path does not cover (a verbose or
    /// traced run, a process that never existed, a pointer that cannot be
    /// evaluated, a stopped run) goes to [`Runner::statement`], before
    /// anything of it has run.
    #[inline]
    pub fn access(&mut self, access: &AccessLine, names: &Names) {
        let pid = match self.bindings.process(access.proc.node) {
            Some(pid) if self.streams() && !self.stopped => pid,
            _ => return self.statement(&access.to_stmt(), names),
        };
        let Ok(ptr) = self.bindings.eval(access.op.ptr()) else {
            return self.statement(&access.to_stmt(), names);
        };
        let command = match access.op {
            AccessOp::Load { size, .. } => uapi::Command::Load {
                ptr,
                size: size.node,
            },
            AccessOp::Store { size, value, .. } => uapi::Command::Store {
                ptr,
                size: size.node,
                value: value.node,
            },
            AccessOp::Stg { .. } => uapi::Command::StoreTag {
                op: mte::TagStoreOp::Stg,
                ptr,
            },
        };
        self.report.commands += 1;
        // An access binds nothing, so a binding in the reply is ignored as
        // `lower::bind` ignores it.
        let outcome = self
            .machine
            .run(&uapi::Op::Process { pid, command })
            .outcome;
        // `settle` for a line without an outcome, not verbose.
        self.digest.command(access.line, &outcome);
    }

    /// The machine, to read between statements (the reference comparison
    /// reads its counters after every command).
    pub fn machine(&self) -> &M {
        self.machine
    }

    /// The processes the file's names are bound to now (the reference
    /// comparison ends a workload's processes before the next workload runs
    /// on the same machine, as its runtime kills them).
    pub fn processes(&self) -> Vec<uapi::Pid> {
        self.bindings.processes()
    }

    /// The steps recorded so far (with `verbose`).
    pub fn steps(&self) -> &[Step] {
        &self.report.steps
    }

    /// The report, with the final counters; a replayed schedule must have
    /// been used up.
    pub fn finish(mut self) -> RunReport {
        if !self.stopped
            && let Strategy::Replay(replay) = &self.chooser.inner().strategy
            && let Err(e) = replay.finish()
        {
            self.report.error = Some(RunError::Schedule(e));
        }
        let (chooser, schedule) = self.chooser.into_parts();
        if self.had_block || matches!(chooser.strategy, Strategy::Replay(_)) {
            self.report.schedule = Some(schedule);
        }
        self.report.counters = Counter::ALL
            .into_iter()
            .filter_map(|c| self.machine.counter(c).map(|v| (c, v)))
            .collect();
        for (counter, value) in &self.report.counters {
            self.digest.add(counter.name().as_bytes());
            self.digest.add(&value.to_le_bytes());
        }
        self.report.digest = self.digest.0;
        self.report
    }

    fn fail(&mut self, line: u32, message: String) {
        self.report.failed_after_block |= self.had_block;
        self.report.failures.push(Failure { line, message });
    }

    fn step(&mut self, line: u32, span: Span, fallback: impl FnOnce() -> String, result: String) {
        let text = match self.source.and_then(|src| src.get(span.range())) {
            Some(bytes) => {
                let text = String::from_utf8_lossy(bytes);
                let text = text.trim_end();
                // A command's span stops at its outcome: drop the `=>`.
                text.strip_suffix("=>")
                    .unwrap_or(text)
                    .trim_end()
                    .to_owned()
            }
            None => fallback(),
        };
        self.report.steps.push(Step {
            line,
            text,
            result,
            events: Vec::new(),
        });
    }

    /// The value of the outcome's `addr=`, if it has one.
    fn expected_addr(&self, c: &CommandStmt) -> Result<Option<mte::TaggedPtr>, EvalError> {
        match c.outcome.as_ref().map(|o| &o.node) {
            Some(Expected::Fault {
                addr: Some(expr), ..
            }) => self.bindings.eval(expr).map(Some),
            _ => Ok(None),
        }
    }

    fn command(&mut self, c: &CommandStmt, names: &Names) {
        self.report.commands += 1;
        // Before the line's own binding: `p irg t t => fault ... addr=t`
        // means the old `t`.
        let addr = self.expected_addr(c);
        let outcome = match lower::lower(&c.command, &self.bindings) {
            Ok(Lowered::Op(op)) => {
                let Reply { outcome, bound } = self.machine.run(&op);
                self.bind(c, bound);
                outcome
            }
            Ok(Lowered::NoProcess) => {
                self.bind(c, None);
                lower::NO_PROCESS
            }
            Err(e) => {
                self.bind(c, None);
                self.not_run(c, &e, names);
                return;
            }
        };
        self.settle(c, addr, &outcome, names);
    }

    fn bind(&mut self, c: &CommandStmt, bound: Option<uapi::Bound>) {
        if let Err(e) = lower::bind(&c.command, bound, &mut self.bindings) {
            self.fail(c.line, e.to_string());
        }
    }

    /// A line whose pointer could not be evaluated.
    fn not_run(&mut self, c: &CommandStmt, e: &EvalError, names: &Names) {
        let message = e.describe(names);
        if self.verbose {
            self.step(
                c.line,
                command_span(c),
                || fallback_text(&c.command, names),
                format!("not run: {message}"),
            );
        }
        self.fail(c.line, message);
    }

    /// Compares a line's result with its outcome and records it.
    fn settle(
        &mut self,
        c: &CommandStmt,
        addr: Result<Option<mte::TaggedPtr>, EvalError>,
        outcome: &Outcome,
        names: &Names,
    ) {
        if let Some(expected) = &c.outcome {
            match addr {
                Err(e) => {
                    let message = format!("expected a fault address, got a {}", e.describe(names));
                    self.fail(c.line, message);
                }
                Ok(addr) if !compare::matches(&expected.node, addr, outcome) => {
                    let message = format!(
                        "expected {}, got {}",
                        compare::expected_text(&expected.node, addr),
                        compare::actual_text(outcome)
                    );
                    self.fail(c.line, message);
                }
                Ok(_) => {}
            }
        }
        self.digest.command(c.line, outcome);
        if self.verbose {
            self.step(
                c.line,
                command_span(c),
                || fallback_text(&c.command, names),
                compare::actual_text(outcome),
            );
        }
    }

    fn expect(&mut self, e: &ExpectStmt, names: &Names) {
        let result = expect::check(&e.expect, &*self.machine, &self.bindings, names);
        if self.verbose {
            let verdict = match (
                &e.expect,
                &result,
                expect::observed(&e.expect, &*self.machine),
            ) {
                (Expect::Show { .. }, _, Some(value)) => value.to_string(),
                (_, Ok(()), Some(value)) => format!("holds ({value})"),
                (_, Err(_), Some(value)) => format!("fails (got {value})"),
                (_, Ok(()), None) => "holds".to_owned(),
                (_, Err(error), None) => {
                    let message = error.to_string();
                    match message.split_once(", got ") {
                        Some((_, got)) => format!("fails (got {got})"),
                        None => format!("fails ({message})"),
                    }
                }
            };
            self.step(e.line, e.span, || "expect".to_owned(), verdict);
        }
        self.digest.add(&e.line.to_le_bytes());
        self.digest.add(&[u8::from(result.is_ok())]);
        if let Err(error) = result {
            self.fail(e.line, error.to_string());
        }
    }

    fn parallel(&mut self, block: &ParallelBlock, names: &Names) {
        /// How one line of the block is carried out.
        enum Line {
            /// On this CPU (index into the ops and replies).
            Cpu(usize),
            NoProcess,
            NotRun(EvalError),
        }
        self.had_block = true;
        let mut ops = Vec::with_capacity(block.commands.len());
        let mut lines = Vec::with_capacity(block.commands.len());
        for c in &block.commands {
            self.report.commands += 1;
            // Lines of a block read only bindings made before it (the
            // parser gives the block's own bindings fresh slots).
            let addr = self.expected_addr(c);
            let line = match lower::lower(&c.command, &self.bindings) {
                Ok(Lowered::Op(op)) => {
                    ops.push(op);
                    Line::Cpu(ops.len() - 1)
                }
                Ok(Lowered::NoProcess) => Line::NoProcess,
                Err(e) => Line::NotRun(e),
            };
            lines.push((line, addr));
        }
        let before = self.chooser.schedule().len();
        let replies = if ops.is_empty() {
            Vec::new()
        } else {
            match self.machine.run_parallel(&ops, &mut self.chooser) {
                Ok(replies) if replies.len() == ops.len() => replies,
                Ok(replies) => {
                    let message = format!(
                        "expected one reply per line of the parallel block, got {} for {}",
                        replies.len(),
                        ops.len()
                    );
                    self.fail(block.line, message);
                    self.stopped = true;
                    return;
                }
                Err(e) => {
                    self.stopped = true;
                    match self.chooser.inner().error.clone() {
                        Some(error) => self.report.error = Some(RunError::Schedule(error)),
                        None => self.fail(
                            block.line,
                            format!("expected the parallel block to complete, got {e}"),
                        ),
                    }
                    return;
                }
            }
        };
        if self.verbose {
            let decisions: Schedule = self.chooser.schedule().as_slice()[before..]
                .iter()
                .copied()
                .collect();
            self.step(
                block.line,
                block.span,
                || "parallel".to_owned(),
                format!("schedule {decisions}"),
            );
        }
        let mut replies: Vec<Option<Reply>> = replies.into_iter().map(Some).collect();
        for (c, (line, addr)) in block.commands.iter().zip(lines) {
            let outcome = match line {
                Line::Cpu(i) => {
                    let Some(Reply { outcome, bound }) = replies[i].take() else {
                        unreachable!("BUG: each CPU's reply is taken once");
                    };
                    self.bind(c, bound);
                    outcome
                }
                Line::NoProcess => {
                    self.bind(c, None);
                    lower::NO_PROCESS
                }
                Line::NotRun(e) => {
                    self.bind(c, None);
                    self.not_run(c, &e, names);
                    continue;
                }
            };
            self.settle(c, addr, &outcome, names);
        }
    }
}

/// A line up to its outcome (`Runner::step` trims the `=>`).
fn command_span(c: &CommandStmt) -> Span {
    match &c.outcome {
        Some(outcome) => Span::new(c.span.start, outcome.span.start.max(c.span.start)),
        None => c.span,
    }
}

/// A command's process and command word, for a verbose trace without the
/// source text.
fn fallback_text(command: &Command, names: &Names) -> String {
    match command {
        Command::Spawn { proc } => format!("spawn {}", names.process(proc.node)),
        Command::Process { proc, op } => {
            format!("{} {}", names.process(proc.node), op.node.name())
        }
        Command::Reclaim { pages } => format!("reclaim {}", pages.node),
        Command::Compact | Command::KsmScan => command.name().to_owned(),
    }
}
