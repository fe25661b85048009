//! The machine factories the difftest integration tests hand to
//! [`difftest::run_program`] and [`difftest::fuzz`]: the kernel model and the
//! reference model, built as `mtesim` builds them; and [`Wrapped`], the
//! machine of a test that changes or watches another one.
#![allow(dead_code)]

use mte::{Tag, TaggedPtr};
use platform::Platform;
use scenario::machine::{MachineKind, MachineUnavailable, make_machine};
use uapi::{Counter, Machine, MachineError, Op, PageState, Pid, Reply, Violation};

pub fn kernel(platform: &Platform) -> Result<Box<dyn Machine>, MachineUnavailable> {
    make_machine(MachineKind::Kernel, platform)
}

pub fn reference(platform: &Platform) -> Result<Box<dyn Machine>, MachineUnavailable> {
    make_machine(MachineKind::Reference, platform)
}

/// What a test's wrapper of a machine changes: the reply to an op and the
/// violations the machine reports. Everything else [`Wrapped`] forwards to
/// [`Wrapper::inner`] unchanged (and the provided methods of [`Machine`]
/// keep their defaults: the wrapper has no trace, locks or snapshots).
pub trait Wrapper {
    fn inner(&self) -> &dyn Machine;
    fn inner_mut(&mut self) -> &mut dyn Machine;

    /// The reply to `op`, given the inner machine's.
    fn reply(&mut self, op: &Op, reply: Reply) -> Reply {
        let _ = op; // unchanged
        reply
    }

    /// The violations to report, given the inner machine's.
    fn violations(&self, found: Vec<Violation>) -> Vec<Violation> {
        found
    }
}

/// A [`Wrapper`] as a machine.
pub struct Wrapped<W>(pub W);

impl<W: Wrapper> Machine for Wrapped<W> {
    fn run(&mut self, op: &Op) -> Reply {
        let reply = self.0.inner_mut().run(op);
        self.0.reply(op, reply)
    }

    fn run_parallel(
        &mut self,
        ops: &[Op],
        chooser: &mut dyn sched::Chooser,
    ) -> Result<Vec<Reply>, MachineError> {
        self.0.inner_mut().run_parallel(ops, chooser)
    }

    fn counter(&self, counter: Counter) -> Option<u64> {
        self.0.inner().counter(counter)
    }

    fn tags(&self, pid: Pid, ptr: TaggedPtr, len: u64) -> Option<Vec<Tag>> {
        self.0.inner().tags(pid, ptr, len)
    }

    fn page_state(&self, pid: Pid, ptr: TaggedPtr, state: PageState) -> Option<bool> {
        self.0.inner().page_state(pid, ptr, state)
    }

    fn invariant_violations(&self) -> Vec<Violation> {
        self.0.violations(self.0.inner().invariant_violations())
    }
}
