//! Lockstep execution: one program on two machines, step by step, compared.
//!
//! Owns [`run_program`], [`Failure`] and how two replies are compared:
//! - outcomes exactly (fault addresses with their top byte, as
//!   `docs/semantics.md` §1 asks of the differential tests);
//! - what a binding step binds by meaning, after the runner's rules
//!   (a missing binding is address 0 or no process): pointers exactly,
//!   processes by their position in the order each machine created them,
//!   since pid numbers are each machine's own choice;
//! - what a non-binding step reports as bound is ignored, as the runner
//!   ignores it.
//!
//! A `parallel` block runs on the machine under test through
//! [`Machine::run_parallel`] (one CPU per line that reaches the machine, as
//! `mtesim run` does) with the block's [`BlockSchedule`], whose decisions
//! are recorded ([`ProgramRun::schedules`]). Its replies must be those of
//! some serial order of its lines (linearizability): the reference runs the
//! lines in every order (at most 4! = 24) on snapshots of itself
//! ([`Machine::snapshot`]; the last order of each prefix on the state
//! itself), depth first so that orders sharing a prefix share its run and
//! an order is dropped at its first differing reply.
//! When no order gives every reply, the failure
//! ([`FailureKind::NotLinearizable`]) lists the block's replies and, for
//! each order (grouped by the prefix that already differs), the first
//! differing reply.
//!
//! Several orders may match with different final states (two stores to one
//! address give the same replies in either order and leave different
//! memory). All of them are kept as *candidates*: each later step runs on
//! every candidate and the candidates whose reply differs are dropped; the
//! run diverges only when none is left. Candidates in the same state
//! ([`Machine::same_state`]) with the same bindings are kept once. This is
//! exact (no false divergence, no missed one) as long as the candidates
//! stay below [`MAX_CANDIDATES`]; beyond it the first ones (in block
//! line-order of the orders) are kept, which can only make the check
//! stricter than linearizability, never looser, and the failure says so.
//!
//! Out of memory: the reference model has no memory to run out of, and
//! the machine under test answers a fault that finds no page even after
//! direct reclaim with `fault SEGV_ACCERR` (`docs/model.md` §6; counted by
//! `oom`). A step during which `oom` rose is not compared
//! further: if its reply differs from the reference's, it must be that
//! outcome (a `SEGV_ACCERR` fault, `EFAULT` from a kernel copy, `ENOMEM`
//! from a system call that faults, such as `madvise unmergeable`, `EIO`
//! from ptrace's tag access that could not fault its first page in),
//! otherwise the divergence stands; a block's replies are not checked
//! against the orders. The invariants are still checked after it, and the
//! program ends there ([`ProgramRun::oom`]), since the two machines no
//! longer hold the same memory.
//!
//! After every step the machine under test's
//! [`Machine::invariant_violations`] must be empty (`docs/model.md` §4). The
//! first disagreement, violation or panic ends the run with a [`Failure`].
//! A panic of either machine is caught (so a `BUG:` of the kernel is a
//! finding, not the end of the fuzzer); the panic hook still prints it,
//! which the CLI silences.

use core::fmt;
use std::panic::{AssertUnwindSafe, catch_unwind};

use platform::{Platform, PlatformError};
use scenario::machine::MachineUnavailable;
use sched::{ChoicePoint, ChooseError, Chooser, CpuId, Recorder, Schedule};
use thiserror::Error;
use uapi::{Bound, Counter, Errno, FaultCode, Machine, Op, Outcome, Reply};

use lang::ParseError;
use lang::ast::Command;
use scenario::run::lower::{Lowered, NO_PROCESS};

use crate::program::{Binding, BlockSchedule, Env, Program, Step};

/// Builds a fresh machine for a platform (the seed is the platform's), as
/// [`scenario::machine::make_machine`] does.
pub type Factory<'a> = &'a dyn Fn(&Platform) -> Result<Box<dyn Machine>, MachineUnavailable>;

/// Why a program could not be run at all.
#[derive(Debug, Error)]
pub enum FuzzError {
    #[error("platform `{platform}` cannot be built: {source}")]
    Platform {
        /// The program's `platform` line.
        platform: String,
        /// Boxed: a large error on a rare path.
        #[source]
        source: Box<PlatformError>,
    },
    #[error("no machine for platform `{platform}`: {source}")]
    Machine {
        platform: String,
        #[source]
        source: MachineUnavailable,
    },
    /// The program's rendering does not parse: a bug of the rendering or of
    /// pruning, since generated programs bind every name they read.
    #[error("BUG: a program renders to a file the parser refuses: {source}\n{text}")]
    Unparsable {
        /// The rendered program.
        text: String,
        #[source]
        source: ParseError,
    },
    /// The rendering parsed to a different number of commands than the
    /// program has steps (a bug of the rendering).
    #[error("BUG: a program of {steps} steps parses to {commands} commands")]
    Commands { steps: usize, commands: usize },
    /// The reference cannot be copied, so `parallel` blocks cannot be
    /// checked ([`Machine::snapshot`]).
    #[error("the reference machine cannot be copied, which checking a parallel block needs")]
    NoSnapshot,
}

/// A machine panicked while running a step; the panic's message.
#[derive(Clone, Debug, PartialEq, Eq, Error)]
#[error("{message}")]
struct Panicked {
    message: String,
}

/// Which machine.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Side {
    UnderTest,
    Reference,
}

impl fmt::Display for Side {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Side::UnderTest => "the machine under test",
            Side::Reference => "the reference",
        })
    }
}

/// What went wrong at a step.
#[derive(Clone, PartialEq, Eq, Debug)]
pub enum FailureKind {
    /// The two machines replied differently.
    Divergence { under_test: Reply, reference: Reply },
    /// The machine under test broke invariants of `docs/model.md` §4.
    Violation { violations: Vec<uapi::Violation> },
    /// A machine panicked.
    Panic { side: Side, message: String },
    /// No serial order of a `parallel` block's lines gives the replies the
    /// machine under test gave (module doc).
    NotLinearizable(Box<NotLinearizable>),
}

/// A `parallel` block whose replies no serial order explains.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct NotLinearizable {
    /// The block's lines, as written.
    pub lines: Vec<String>,
    /// The machine under test's reply to each line (`None`: a pointer that
    /// could not be evaluated).
    pub under_test: Vec<Option<Reply>>,
    /// The block's schedule as it ran.
    pub schedule: Schedule,
    /// Every order of the lines, by the prefix at whose end the reference
    /// first gave another reply: all orders starting so differ there.
    pub orders: Vec<OrderMismatch>,
    /// Candidate reference states before the block (module doc); the
    /// orders listed are those of the first.
    pub candidates: usize,
    /// Candidates were dropped at [`MAX_CANDIDATES`] earlier in the run.
    pub capped: bool,
}

/// The orders starting with `prefix`: the reference's reply to the last
/// line of `prefix` differs from the machine under test's.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct OrderMismatch {
    /// Line indexes within the block, in the order run.
    pub prefix: Vec<usize>,
    /// The reference's reply to the prefix's last line, or its panic.
    pub reference: Result<Option<Reply>, String>,
}

/// The most candidate reference states kept at once (module doc).
pub const MAX_CANDIDATES: usize = 32;

/// The class of a failure, which shrinking keeps.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum FailureClass {
    Divergence,
    Violation,
    Panic,
}

/// A failure and where it happened.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct Failure {
    /// Index of the failing step in the program.
    pub step: usize,
    /// The step's command word.
    pub word: &'static str,
    pub kind: FailureKind,
}

/// "Fails the same way": the class and the command word of the step.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct Signature {
    pub class: FailureClass,
    pub word: &'static str,
}

impl Failure {
    pub fn class(&self) -> FailureClass {
        match self.kind {
            FailureKind::Divergence { .. } | FailureKind::NotLinearizable(_) => {
                FailureClass::Divergence
            }
            FailureKind::Violation { .. } => FailureClass::Violation,
            FailureKind::Panic { .. } => FailureClass::Panic,
        }
    }

    pub fn signature(&self) -> Signature {
        Signature {
            class: self.class(),
            word: self.word,
        }
    }
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let n = self.step + 1;
        match &self.kind {
            FailureKind::Divergence {
                under_test,
                reference,
            } => write!(
                f,
                "step {n} ({}): divergence: machine under test {}, reference {}",
                self.word,
                reply_text(under_test),
                reply_text(reference)
            ),
            FailureKind::Violation { violations } => write!(
                f,
                "step {n} ({}): invariants violated: {}",
                self.word,
                violations
                    .iter()
                    .map(ToString::to_string)
                    .collect::<Vec<_>>()
                    .join("; ")
            ),
            FailureKind::Panic { side, message } => {
                write!(f, "step {n} ({}): {side} panicked: {message}", self.word)
            }
            FailureKind::NotLinearizable(block) => {
                write!(
                    f,
                    "step {n} (parallel): no serial order gives the replies of the machine under test (schedule {})",
                    block.schedule
                )?;
                for (i, (line, reply)) in block.lines.iter().zip(&block.under_test).enumerate() {
                    write!(f, "\n  line {i}: {line} => {}", optional_reply_text(reply))?;
                }
                if block.candidates > 1 {
                    write!(
                        f,
                        "\n  ({} candidate reference states; orders on the first)",
                        block.candidates
                    )?;
                }
                if block.capped {
                    write!(
                        f,
                        "\n  (candidates were capped at {MAX_CANDIDATES} earlier: check the orders by hand)"
                    )?;
                }
                for order in &block.orders {
                    let prefix: Vec<String> =
                        order.prefix.iter().map(ToString::to_string).collect();
                    let rest = if order.prefix.len() < block.lines.len() {
                        ",..."
                    } else {
                        ""
                    };
                    let Some(&line) = order.prefix.last() else {
                        continue;
                    };
                    let reference = match &order.reference {
                        Ok(reply) => optional_reply_text(reply),
                        Err(message) => format!("panicked: {message}"),
                    };
                    write!(
                        f,
                        "\n  order {}{rest}: line {line} => {reference}",
                        prefix.join(",")
                    )?;
                }
                Ok(())
            }
        }
    }
}

fn optional_reply_text(reply: &Option<Reply>) -> String {
    reply
        .as_ref()
        .map_or_else(|| "not run (bad pointer)".to_owned(), reply_text)
}

/// A reply in the scenario syntax, with what it bound.
pub fn reply_text(reply: &Reply) -> String {
    let outcome = scenario::run::compare::actual_text(&reply.outcome);
    match reply.bound {
        Some(Bound::Pointer(ptr)) => format!("{outcome} (bound {:#x})", ptr.raw()),
        Some(Bound::Process(pid)) => format!("{outcome} (bound pid {})", pid.0),
        None => outcome,
    }
}

/// What running a program gave.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct ProgramRun {
    /// Steps executed (the failing one included).
    pub steps: usize,
    /// Commands executed (a block's lines each).
    pub ops: usize,
    pub failure: Option<Failure>,
    /// The schedule of each `parallel` block run, in order: what replays
    /// the run ([`BlockSchedule::Replay`]); their concatenation is the
    /// `--schedule` of the program's `.mte` file.
    pub schedules: Vec<Schedule>,
    /// The most candidate reference states held at once (module doc).
    pub max_candidates: usize,
    /// A replayed block schedule did not fit the block (a CPU it names is
    /// not runnable): the run stopped there, without a verdict.
    pub unfit: bool,
    /// Blocks whose replies their line order explains and some other
    /// order does not (a race observed going the written way).
    pub raced_as_written: usize,
    /// Blocks whose replies their line order does not explain (a race
    /// observed going another way).
    pub raced_reordered: usize,
    /// The run ended at a step that ran out of memory (module doc).
    pub oom: bool,
    /// The machine under test's [`COVERAGE`] counters at the end (those it
    /// answers).
    pub coverage: Vec<(Counter, u64)>,
}

/// The counters the fuzzer sums over programs to show which memory
/// management paths its programs reached (`mtesim fuzz` prints them).
pub const COVERAGE: [Counter; 7] = [
    Counter::ReclaimDirect,
    Counter::SwapOut,
    Counter::SwapIn,
    Counter::FileWriteback,
    Counter::FileDropped,
    Counter::FileReads,
    Counter::Oom,
];

/// Out-of-memory faults of the machine under test so far (0 if it does
/// not count them).
fn ooms(machine: &dyn Machine) -> u64 {
    machine.counter(Counter::Oom).unwrap_or(0)
}

/// Whether `reply` is what a command that ran out of memory gives (module
/// doc).
fn oom_outcome(reply: &Reply) -> bool {
    match &reply.outcome {
        Outcome::Fault(fault) => fault.code == FaultCode::SegvAccErr,
        // EIO: ptrace's tag access (`PTRACE_POKEMTETAGS`) that could not
        // fault its first page in (`__access_remote_tags()`).
        Outcome::Error(errno) => matches!(errno, Errno::Fault | Errno::NoMem | Errno::Io),
        _ => false,
    }
}

/// A machine for `program`'s platform from `factory`.
pub fn build(program: &Program, factory: Factory<'_>) -> Result<Box<dyn Machine>, FuzzError> {
    let spec = program.platform.spec();
    let platform = Platform::from_spec(&spec).map_err(|source| FuzzError::Platform {
        platform: program.platform.to_string(),
        source: Box::new(source),
    })?;
    factory(&platform).map_err(|source| FuzzError::Machine {
        platform: program.platform.to_string(),
        source,
    })
}

fn panic_message(payload: &(dyn std::any::Any + Send)) -> String {
    payload
        .downcast_ref::<&str>()
        .map(|s| (*s).to_owned())
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "a panic without a message".to_owned())
}

/// One step on one machine: its reply (`None` if a pointer of it cannot be
/// evaluated, which generated programs never do), or a panic message.
fn step_on(
    machine: &mut dyn Machine,
    env: &Env,
    command: &Command,
) -> Result<Option<Reply>, Panicked> {
    match env.lower(command) {
        None => Ok(None),
        Some(Lowered::NoProcess) => Ok(Some(Reply::new(NO_PROCESS))),
        Some(Lowered::Op(op)) => catch_unwind(AssertUnwindSafe(|| machine.run(&op)))
            .map(Some)
            .map_err(|p| Panicked {
                message: panic_message(&*p),
            }),
    }
}

/// What a binding step bound, by meaning (module doc).
#[derive(PartialEq, Eq, Debug)]
enum Meaning {
    Nothing,
    Pointer(u64),
    Process(Option<usize>),
}

fn meaning(step: &Step, reply: &Reply, env: &Env) -> Meaning {
    match step.binds() {
        None => Meaning::Nothing,
        Some(Binding::Ptr(_)) => Meaning::Pointer(match reply.bound {
            Some(Bound::Pointer(ptr)) => ptr.raw(),
            _ => 0,
        }),
        Some(Binding::Proc(_)) => Meaning::Process(match reply.bound {
            Some(Bound::Process(pid)) => Some(env.creation_index(pid)),
            _ => None,
        }),
    }
}

/// A candidate reference state: the machine and the values it gave the
/// names.
struct Candidate {
    machine: Box<dyn Machine>,
    env: Env,
}

/// A block line lowered for one machine.
enum BlockLine {
    Op(Op),
    /// Answered without the machine.
    Reply(Reply),
    /// A pointer that cannot be evaluated.
    NotRun,
}

fn lower_line(env: &Env, command: &Command) -> BlockLine {
    match env.lower(command) {
        None => BlockLine::NotRun,
        Some(Lowered::NoProcess) => BlockLine::Reply(Reply::new(NO_PROCESS)),
        Some(Lowered::Op(op)) => BlockLine::Op(op),
    }
}

/// Keeps the first error of a chooser (a replayed schedule that does not
/// fit), as the runner does.
struct Capture<'c> {
    inner: &'c mut dyn Chooser,
    error: Option<ChooseError>,
}

impl Chooser for Capture<'_> {
    fn choose(&mut self, point: &ChoicePoint<'_>) -> Result<CpuId, ChooseError> {
        let chosen = self.inner.choose(point);
        if let Err(e) = &chosen {
            self.error.get_or_insert_with(|| e.clone());
        }
        chosen
    }
}

/// How a block ran on the machine under test.
enum BlockRun {
    Replies(Vec<Option<Reply>>, Schedule),
    /// The machine did not complete the block, or panicked.
    Failed(String, Schedule),
    /// The replayed schedule does not fit.
    Unfit,
}

fn run_block_under_test(
    machine: &mut dyn Machine,
    env: &Env,
    commands: &[Command],
    schedule: &BlockSchedule,
) -> BlockRun {
    let lines: Vec<BlockLine> = commands.iter().map(|c| lower_line(env, c)).collect();
    let ops: Vec<Op> = lines
        .iter()
        .filter_map(|l| match l {
            BlockLine::Op(op) => Some(op.clone()),
            _ => None,
        })
        .collect();
    let mut chooser = schedule.chooser();
    let mut capture = Recorder::new(Capture {
        inner: &mut *chooser,
        error: None,
    });
    let ran = if ops.is_empty() {
        Ok(Ok(Vec::new()))
    } else {
        catch_unwind(AssertUnwindSafe(|| {
            machine.run_parallel(&ops, &mut capture)
        }))
    };
    let (capture, recorded) = capture.into_parts();
    if capture.error.is_some() {
        return BlockRun::Unfit;
    }
    let replies = match ran {
        Ok(Ok(replies)) if replies.len() == ops.len() => replies,
        Ok(Ok(replies)) => {
            return BlockRun::Failed(
                format!("{} replies to {} lines", replies.len(), ops.len()),
                recorded,
            );
        }
        Ok(Err(e)) => {
            return BlockRun::Failed(format!("the block did not complete: {e}"), recorded);
        }
        Err(p) => return BlockRun::Failed(panic_message(&*p), recorded),
    };
    let mut replies = replies.into_iter();
    let out = lines
        .into_iter()
        .map(|line| match line {
            BlockLine::Op(_) => replies.next(),
            BlockLine::Reply(reply) => Some(reply),
            BlockLine::NotRun => None,
        })
        .collect();
    BlockRun::Replies(out, recorded)
}

/// Whether the reference's reply to a line matches the machine under
/// test's, by the rules of the module doc (meanings with each side's
/// environment before the line).
fn same_reply(
    step: &Step,
    under_test: Option<&Reply>,
    ut_env: &Env,
    reference: Option<&Reply>,
    ref_env: &Env,
) -> bool {
    match (under_test, reference) {
        (Some(a), Some(b)) => {
            a.outcome == b.outcome && meaning(step, a, ut_env) == meaning(step, b, ref_env)
        }
        (None, None) => true,
        _ => false,
    }
}

/// One line on a reference machine: its reply, or its panic.
fn reference_line(machine: &mut dyn Machine, line: &BlockLine) -> Result<Option<Reply>, String> {
    match line {
        BlockLine::NotRun => Ok(None),
        BlockLine::Reply(reply) => Ok(Some(reply.clone())),
        BlockLine::Op(op) => catch_unwind(AssertUnwindSafe(|| machine.run(op)))
            .map(Some)
            .map_err(|p| panic_message(&*p)),
    }
}

/// An order that gives the machine under test's replies: the final state,
/// the reference's replies by line, the order.
type Matched = (Box<dyn Machine>, Vec<Option<Reply>>, Vec<usize>);

/// The serial orders of a block on one candidate (module doc): the final
/// state and the reference's replies (by line) of each order that gives
/// the machine under test's replies, and where the others first differ.
struct Orders<'a> {
    steps: &'a [Step],
    lines: Vec<BlockLine>,
    under_test: &'a [Option<Reply>],
    ut_env: &'a Env,
    ref_env: &'a Env,
    matched: Vec<Matched>,
    mismatches: Vec<OrderMismatch>,
    /// The reference could not be copied.
    no_snapshot: bool,
}

impl Orders<'_> {
    /// Runs every order extending `prefix` from `machine` (the state after
    /// `prefix`); `replies` holds the reference's replies so far by line.
    fn explore(
        &mut self,
        machine: Box<dyn Machine>,
        prefix: &mut Vec<usize>,
        replies: &mut Vec<Option<Reply>>,
    ) {
        let rest: Vec<usize> = (0..self.lines.len())
            .filter(|i| !prefix.contains(i))
            .collect();
        if rest.is_empty() {
            self.matched
                .push((machine, replies.clone(), prefix.clone()));
            return;
        }
        let mut machine = Some(machine);
        for (k, &line) in rest.iter().enumerate() {
            // The last branch takes the state itself; the others a copy.
            let mut state = if k + 1 == rest.len() {
                match machine.take() {
                    Some(m) => m,
                    None => unreachable!("BUG: the state is taken once, by the last branch"),
                }
            } else {
                let Some(copy) = machine.as_ref().and_then(|m| m.snapshot()) else {
                    self.no_snapshot = true;
                    return;
                };
                copy
            };
            prefix.push(line);
            let got = reference_line(&mut *state, &self.lines[line]);
            let agrees = matches!(&got, Ok(reply) if same_reply(
                &self.steps[line],
                self.under_test[line].as_ref(),
                self.ut_env,
                reply.as_ref(),
                self.ref_env,
            ));
            match got {
                Ok(reply) if agrees => {
                    let saved = core::mem::replace(&mut replies[line], reply);
                    self.explore(state, prefix, replies);
                    replies[line] = saved;
                }
                reference => self.mismatches.push(OrderMismatch {
                    prefix: prefix.clone(),
                    reference,
                }),
            }
            prefix.pop();
        }
    }
}

/// Runs `program` on a machine from `under_test` and one from `reference`
/// in lockstep (module doc).
pub fn run_program(
    program: &Program,
    under_test: Factory<'_>,
    reference: Factory<'_>,
) -> Result<ProgramRun, FuzzError> {
    let commands = program
        .step_commands()
        .map_err(|source| FuzzError::Unparsable {
            text: program.render(),
            source,
        })?;
    let shapes_match = commands.len() == program.steps.len()
        && commands
            .iter()
            .zip(&program.steps)
            .all(|(c, s)| c.len() == s.ops());
    if !shapes_match {
        return Err(FuzzError::Commands {
            steps: program.ops(),
            commands: commands.iter().map(Vec::len).sum(),
        });
    }
    let mut kernel = build(program, under_test)?;
    let mut ut_env = Env::new();
    let mut candidates = vec![Candidate {
        machine: build(program, reference)?,
        env: Env::new(),
    }];
    let mut run = ProgramRun {
        steps: 0,
        ops: 0,
        failure: None,
        schedules: Vec::new(),
        max_candidates: 1,
        unfit: false,
        raced_as_written: 0,
        raced_reordered: 0,
        oom: false,
        coverage: Vec::new(),
    };
    let mut capped = false;
    let mut oom_faults = ooms(&*kernel);
    for (i, (step, commands)) in program.steps.iter().zip(&commands).enumerate() {
        run.steps = i + 1;
        run.ops += step.ops();
        let failure = |kind| {
            Some(Failure {
                step: i,
                word: step.word(),
                kind,
            })
        };
        let mut verdict = match step {
            Step::Parallel(block) => {
                match run_block_under_test(&mut *kernel, &ut_env, commands, &block.schedule) {
                    BlockRun::Unfit => {
                        run.unfit = true;
                        return Ok(run);
                    }
                    BlockRun::Failed(message, schedule) => {
                        run.schedules.push(schedule);
                        failure(FailureKind::Panic {
                            side: Side::UnderTest,
                            message,
                        })
                    }
                    BlockRun::Replies(replies, schedule) => {
                        run.schedules.push(schedule.clone());
                        let checked = check_block(
                            &block.steps,
                            commands,
                            &replies,
                            &ut_env,
                            &mut candidates,
                        )?;
                        for (command, reply) in commands.iter().zip(&replies) {
                            ut_env.bind(command, reply.as_ref());
                        }
                        match checked {
                            Ok(explained) => {
                                capped |= explained.capped;
                                if explained.line_order && explained.some_order_failed {
                                    run.raced_as_written += 1;
                                } else if !explained.line_order {
                                    run.raced_reordered += 1;
                                }
                                None
                            }
                            Err(Unexplained {
                                orders,
                                candidates: tried,
                            }) => {
                                failure(FailureKind::NotLinearizable(Box::new(NotLinearizable {
                                    lines: block.steps.iter().map(ToString::to_string).collect(),
                                    under_test: replies,
                                    schedule,
                                    orders,
                                    candidates: tried,
                                    capped,
                                })))
                            }
                        }
                    }
                }
            }
            _ => {
                let command = &commands[0];
                match step_on(&mut *kernel, &ut_env, command) {
                    Err(Panicked { message }) => failure(FailureKind::Panic {
                        side: Side::UnderTest,
                        message,
                    }),
                    Ok(reply) => {
                        let kind =
                            check_step(step, command, reply.as_ref(), &ut_env, &mut candidates);
                        ut_env.bind(command, reply.as_ref());
                        kind.and_then(failure)
                    }
                }
            }
        };
        run.max_candidates = run.max_candidates.max(candidates.len());
        let now = ooms(&*kernel);
        if now > oom_faults {
            oom_faults = now;
            let forgiven = match (&verdict, step) {
                (None, _) => true,
                (Some(f), Step::Parallel(_)) => {
                    matches!(f.kind, FailureKind::NotLinearizable(_))
                }
                (Some(f), _) => {
                    matches!(&f.kind, FailureKind::Divergence { under_test, .. } if oom_outcome(under_test))
                }
            };
            if forgiven {
                verdict = None;
                run.oom = true;
            }
        }
        if verdict.is_some() {
            run.failure = verdict;
            return Ok(run.with_coverage(&*kernel));
        }
        let checked = catch_unwind(AssertUnwindSafe(|| kernel.invariant_violations()));
        run.failure = match checked {
            Ok(violations) if violations.is_empty() => None,
            Ok(violations) => failure(FailureKind::Violation { violations }),
            Err(p) => failure(FailureKind::Panic {
                side: Side::UnderTest,
                message: panic_message(&*p),
            }),
        };
        if run.failure.is_some() || run.oom {
            return Ok(run.with_coverage(&*kernel));
        }
    }
    Ok(run.with_coverage(&*kernel))
}

impl ProgramRun {
    /// With [`ProgramRun::coverage`] read from `machine`.
    fn with_coverage(mut self, machine: &dyn Machine) -> ProgramRun {
        self.coverage = COVERAGE
            .iter()
            .filter_map(|&c| machine.counter(c).map(|v| (c, v)))
            .collect();
        self
    }
}

/// An ordinary step on every candidate: the candidates whose reply differs
/// go; `Some` failure when none is left (what the first one replied).
fn check_step(
    step: &Step,
    command: &Command,
    reply: Option<&Reply>,
    ut_env: &Env,
    candidates: &mut Vec<Candidate>,
) -> Option<FailureKind> {
    let mut first: Option<Result<Option<Reply>, String>> = None;
    let before = candidates.len();
    candidates.retain_mut(|candidate| {
        let got = step_on(&mut *candidate.machine, &candidate.env, command)
            .map_err(|Panicked { message }| message);
        let keep =
            matches!(&got, Ok(r) if same_reply(step, reply, ut_env, r.as_ref(), &candidate.env));
        if keep {
            candidate
                .env
                .bind(command, got.as_ref().ok().and_then(Option::as_ref));
        }
        first.get_or_insert(got);
        keep
    });
    if !candidates.is_empty() {
        if candidates.len() < before {
            dedupe(candidates);
        }
        return None;
    }
    match first {
        Some(Err(message)) => Some(FailureKind::Panic {
            side: Side::Reference,
            message,
        }),
        Some(Ok(Some(reference))) => Some(FailureKind::Divergence {
            under_test: reply.cloned().unwrap_or_else(|| Reply::new(NO_PROCESS)),
            reference,
        }),
        // Evaluable on one side only: the environments hold the same
        // pointers while the machines agree.
        Some(Ok(None)) | None => unreachable!("BUG: a pointer evaluates on one machine only"),
    }
}

/// Which orders explained a block.
struct Explained {
    /// Candidates were dropped at [`MAX_CANDIDATES`].
    capped: bool,
    /// The block's line order explains its replies.
    line_order: bool,
    /// Some order does not.
    some_order_failed: bool,
}

/// A block no order of any candidate explains: the orders of the first
/// candidate, where each first differs, and how many candidates there were.
struct Unexplained {
    orders: Vec<OrderMismatch>,
    candidates: usize,
}

/// A block on every candidate in every order (module doc). `Ok`: the new
/// candidates are in `candidates`; `Err`: none is left (each candidate's
/// state went into its orders: the run ends there).
///
/// A candidate's own state starts its orders (the last order of each
/// prefix takes the state, the others a copy), so a block of `n` lines
/// copies a state one time less than from a copy of the candidate.
fn check_block(
    steps: &[Step],
    commands: &[Command],
    replies: &[Option<Reply>],
    ut_env: &Env,
    candidates: &mut Vec<Candidate>,
) -> Result<Result<Explained, Unexplained>, FuzzError> {
    let (mut line_order, mut some_order_failed) = (false, false);
    let mut next = Vec::new();
    let mut first_mismatches = None;
    let tried = candidates.len();
    for candidate in core::mem::take(candidates) {
        let Candidate {
            machine: start,
            env: candidate_env,
        } = candidate;
        let mut orders = Orders {
            steps,
            lines: commands
                .iter()
                .map(|c| lower_line(&candidate_env, c))
                .collect(),
            under_test: replies,
            ut_env,
            ref_env: &candidate_env,
            matched: Vec::new(),
            mismatches: Vec::new(),
            no_snapshot: false,
        };
        let mut replies_so_far = vec![None; commands.len()];
        orders.explore(start, &mut Vec::new(), &mut replies_so_far);
        if orders.no_snapshot {
            return Err(FuzzError::NoSnapshot);
        }
        for (machine, ref_replies, order) in orders.matched {
            line_order |= order.iter().enumerate().all(|(i, &line)| i == line);
            let mut env = candidate_env.clone();
            for (command, reply) in commands.iter().zip(&ref_replies) {
                env.bind(command, reply.as_ref());
            }
            next.push(Candidate { machine, env });
        }
        some_order_failed |= !orders.mismatches.is_empty();
        first_mismatches.get_or_insert(orders.mismatches);
    }
    if next.is_empty() {
        return Ok(Err(Unexplained {
            orders: first_mismatches.unwrap_or_default(),
            candidates: tried,
        }));
    }
    dedupe(&mut next);
    let capped = next.len() > MAX_CANDIDATES;
    next.truncate(MAX_CANDIDATES);
    *candidates = next;
    Ok(Ok(Explained {
        capped,
        line_order,
        some_order_failed,
    }))
}

/// Keeps one of each set of candidates in the same state with the same
/// bindings, the first.
fn dedupe(candidates: &mut Vec<Candidate>) {
    let mut kept: Vec<Candidate> = Vec::with_capacity(candidates.len());
    for candidate in candidates.drain(..) {
        let seen = kept.iter().any(|k| {
            k.env == candidate.env && k.machine.same_state(&*candidate.machine) == Some(true)
        });
        if !seen {
            kept.push(candidate);
        }
    }
    *candidates = kept;
}
