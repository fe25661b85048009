//! Which machine runs a scenario: the one place that turns a machine kind
//! and a [`Platform`] into a [`Machine`].
//!
//! `mtesim run --machine KIND` and the scenario suites both come here, so
//! that a suite runs exactly what the tool runs.
//!
//! - [`MachineKind::Kernel`], the default: the simulated kernel
//!   ([`kernel::Kernel`]). A platform it cannot boot (e.g. tag storage
//!   sharing a pageblock with DRAM under `dynamic`, which Linux's CMA
//!   refuses too) is [`MachineUnavailable::Boot`].
//! - [`MachineKind::Reference`]: the reference model
//!   ([`refmodel::RefMachine`]), which the differential tests run beside
//!   the kernel: user-visible results only, so it keeps no counters and no
//!   page-table states (`expect stat` and `expect P page` fail on it,
//!   saying so), and it runs `parallel` lines one after the other without
//!   consulting the chooser.

use core::fmt;
use core::str::FromStr;

use platform::{Design, Platform};
use thiserror::Error;
use uapi::Machine;

/// A machine `mtesim run` can drive.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum MachineKind {
    /// The simulated kernel.
    #[default]
    Kernel,
    /// The reference model.
    Reference,
}

impl MachineKind {
    pub const ALL: [MachineKind; 2] = [MachineKind::Kernel, MachineKind::Reference];

    /// The `--machine` spelling.
    pub const fn name(self) -> &'static str {
        match self {
            MachineKind::Kernel => "kernel",
            MachineKind::Reference => "reference",
        }
    }
}

impl fmt::Display for MachineKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A `--machine` value that names no machine.
#[derive(Clone, Debug, PartialEq, Eq, Error)]
#[error("unknown machine `{0}` (expected kernel or reference)")]
pub struct UnknownMachine(pub String);

impl FromStr for MachineKind {
    type Err = UnknownMachine;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        MachineKind::ALL
            .into_iter()
            .find(|k| k.name() == text)
            .ok_or_else(|| UnknownMachine(text.to_owned()))
    }
}

/// Why no machine of the kind asked for can be built.
#[derive(Clone, Debug, PartialEq, Eq, Error)]
pub enum MachineUnavailable {
    #[error("the kernel model cannot boot this machine: {0}")]
    Boot(String),
}

/// A fresh machine of `kind` for `platform` (its seed already the run's).
pub fn make_machine(
    kind: MachineKind,
    platform: &Platform,
) -> Result<Box<dyn Machine>, MachineUnavailable> {
    match kind {
        MachineKind::Kernel => kernel::Kernel::new(platform)
            .map(|k| Box::new(k) as Box<dyn Machine>)
            .map_err(|e| MachineUnavailable::Boot(e.to_string())),
        MachineKind::Reference => Ok(Box::new(refmodel::RefMachine::new(
            platform.policy() != Design::NONE,
            platform.settings().seed,
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_parse_by_name_and_none_is_faked() {
        assert_eq!("kernel".parse(), Ok(MachineKind::Kernel));
        assert_eq!("reference".parse(), Ok(MachineKind::Reference));
        assert_eq!(
            "qemu".parse::<MachineKind>(),
            Err(UnknownMachine("qemu".into()))
        );
        assert_eq!(MachineKind::default(), MachineKind::Kernel);
        let platform = Platform::default();
        assert!(make_machine(MachineKind::Kernel, &platform).is_ok());
    }

    #[test]
    fn the_reference_machine_has_mte_unless_tag_storage_is_none() {
        // docs/language.md, "Machine": `none` means no MTE, so
        // `PROT_MTE` is refused (EINVAL).
        let run = |platform_line: &str| {
            let src = format!("{platform_line}\nspawn p\np mmap a 4K prot=r,w,mte\n");
            let script = lang::parse("t.mte", src.as_bytes()).unwrap();
            let platform = Platform::from_spec(&script.platform_spec()).unwrap();
            let mut machine = make_machine(MachineKind::Reference, &platform).unwrap();
            let options = crate::RunOptions {
                verbose: true,
                ..crate::RunOptions::default()
            };
            crate::run_script(&script, &mut *machine, &options).steps[1]
                .result
                .clone()
        };
        assert_eq!(run("platform tag-storage=dynamic"), "ok");
        assert_eq!(run("platform tag-storage=none"), "error EINVAL");
    }
}
