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
use thiserror::Error;
use uapi::{Bound, Machine, Reply};

use lang::ParseError;
use lang::ast::Command;
use scenario::run::lower::{Lowered, NO_PROCESS};

use crate::program::{Binding, Env, Program, Step};

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
}

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
            FailureKind::Divergence { .. } => FailureClass::Divergence,
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
        }
    }
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
    pub failure: Option<Failure>,
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

/// Runs `program` on a machine from `under_test` and one from `reference`
/// in lockstep (module doc).
pub fn run_program(
    program: &Program,
    under_test: Factory<'_>,
    reference: Factory<'_>,
) -> Result<ProgramRun, FuzzError> {
    let commands = program.commands().map_err(|source| FuzzError::Unparsable {
        text: program.render(),
        source,
    })?;
    if commands.len() != program.steps.len() {
        return Err(FuzzError::Commands {
            steps: program.steps.len(),
            commands: commands.len(),
        });
    }
    let mut machines = [build(program, under_test)?, build(program, reference)?];
    let mut envs = [Env::new(), Env::new()];
    for (i, (step, command)) in program.steps.iter().zip(&commands).enumerate() {
        let fail = |kind| {
            Ok(ProgramRun {
                steps: i + 1,
                failure: Some(Failure {
                    step: i,
                    word: step.word(),
                    kind,
                }),
            })
        };
        let mut replies = [None, None];
        for (side, ((machine, env), reply)) in
            machines.iter_mut().zip(&envs).zip(&mut replies).enumerate()
        {
            match step_on(&mut **machine, env, command) {
                Ok(r) => *reply = r,
                Err(Panicked { message }) => {
                    let side = if side == 0 {
                        Side::UnderTest
                    } else {
                        Side::Reference
                    };
                    return fail(FailureKind::Panic { side, message });
                }
            }
        }
        let [ut, rf] = &replies;
        match (ut, rf) {
            (Some(a), Some(b)) => {
                if a.outcome != b.outcome
                    || meaning(step, a, &envs[0]) != meaning(step, b, &envs[1])
                {
                    return fail(FailureKind::Divergence {
                        under_test: a.clone(),
                        reference: b.clone(),
                    });
                }
            }
            (None, None) => {}
            // The two environments hold the same pointers while the
            // machines agree, so they evaluate alike.
            _ => unreachable!("BUG: a pointer evaluates on one machine only"),
        }
        for (env, reply) in envs.iter_mut().zip(&replies) {
            env.bind(command, reply.as_ref());
        }
        let checked = catch_unwind(AssertUnwindSafe(|| machines[0].invariant_violations()));
        match checked {
            Ok(violations) if violations.is_empty() => {}
            Ok(violations) => return fail(FailureKind::Violation { violations }),
            Err(p) => {
                return fail(FailureKind::Panic {
                    side: Side::UnderTest,
                    message: panic_message(&*p),
                });
            }
        }
    }
    Ok(ProgramRun {
        steps: program.steps.len(),
        failure: None,
    })
}
