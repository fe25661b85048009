//! The machine factories the difftest integration tests hand to
//! [`difftest::run_program`] and [`difftest::fuzz`]: the kernel model and the
//! reference model, built as `mtesim` builds them.
#![allow(dead_code)]

use platform::Platform;
use scenario::machine::{MachineKind, MachineUnavailable, make_machine};
use uapi::Machine;

pub fn kernel(platform: &Platform) -> Result<Box<dyn Machine>, MachineUnavailable> {
    make_machine(MachineKind::Kernel, platform)
}

pub fn reference(platform: &Platform) -> Result<Box<dyn Machine>, MachineUnavailable> {
    make_machine(MachineKind::Reference, platform)
}
