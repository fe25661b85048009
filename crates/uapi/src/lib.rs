//! The user-visible interface of a simulated machine: what a process can ask
//! of it and what it gets back, in Linux's own terms (errno values, signal
//! codes, the `prctl` layout).
//!
//! Everything that runs scenarios talks to a machine through [`Machine`]: the
//! kernel model implements it, and so does the reference model that the
//! differential tests run beside it. Nothing here knows how a machine works
//! inside; the types only describe requests, replies and observations.

mod abi;
mod command;
pub mod event;
mod observe;

pub use abi::{
    AccessSize, Advice, Backing, Errno, Fault, FaultCode, MapFlags, MteCtrl, PrctlRequest, Prot,
    Sharing,
};
pub use command::{Bound, Command, Op, Outcome, Reply};
pub use observe::{Counter, Invariant, Machine, MachineError, PageState, Violation};

/// A process of the simulated machine. Handed out by the machine; never reused
/// within one machine, so a stale handle names an exited process (`ESRCH`).
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Debug)]
pub struct Pid(pub u32);
