//! A process: its tag-check settings, its pending asynchronous fault, its
//! address space and its pins.
//!
//! Owns [`Process`]. The settings are one [`MteCtrl`] (the
//! `PR_SET_TAGGED_ADDR_CTRL` state) plus PSTATE.TCO; the scenario language
//! keeps them per process, not per thread. The pending asynchronous tag
//! check fault is one flag (Linux: TFSRE0_EL1.TF0, then
//! `TIF_MTE_ASYNC_FAULT`): any number of mismatches before the next kernel
//! entry make one fault.
//!
//! State over a process's life:
//!
//! ```text
//! spawn ──► running ──exec──► running (empty space, settings reset)
//!              │ fork ──► child: copy of the space, same settings, no pins,
//!              │                 no pending fault
//!              └ exit ──► gone (every later command: ESRCH)
//! ```
//!
//! Pins are counted per virtual page: a pin is released by an unpin of the
//! same address, whatever happened to the mapping in between (Linux keeps
//! the pinned page itself, which the model does not have).

use std::collections::BTreeMap;

use mte::{CheckSettings, TaggedPtr, VirtAddr};
use uapi::{Fault, FaultCode, MteCtrl};

use crate::layout::{Layout, Vpn};
use crate::space::AddressSpace;

/// One process of the reference machine.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct Process {
    pub ctrl: MteCtrl,
    /// PSTATE.TCO.
    pub tco: bool,
    /// An asynchronous tag check fault waits for the next kernel entry.
    pub async_pending: bool,
    pub space: AddressSpace,
    /// Long-term pins by page: how many `pin`s minus `unpin`s cover it.
    pub pins: BTreeMap<Vpn, u64>,
}

impl Process {
    /// A process as `spawn` makes it: empty address space, tagged-address
    /// ABI off, no tag checking, include mask 0, TCO off.
    pub fn new(layout: Layout) -> Process {
        Process {
            ctrl: MteCtrl::default(),
            tco: false,
            async_pending: false,
            space: AddressSpace::new(layout),
            pins: BTreeMap::new(),
        }
    }

    /// The child of `fork(2)`: private memory copied (tags included),
    /// shared objects shared, settings and TCO inherited; the parent's pins
    /// stay the parent's, and a pending asynchronous fault is the parent's
    /// (Linux `arch_dup_task_struct()` clears `TIF_MTE_ASYNC_FAULT`).
    pub fn fork(&self) -> Process {
        Process {
            ctrl: self.ctrl,
            tco: self.tco,
            async_pending: false,
            space: self.space.clone(),
            pins: BTreeMap::new(),
        }
    }

    /// `execve(2)`: a new empty address space and the settings of a new
    /// process (Linux `mte_thread_init_user()` and
    /// `flush_tagged_addr_state()`).
    pub fn exec(&mut self) {
        *self = Process::new(*self.space.layout());
    }

    /// How the process's own accesses are checked now.
    pub fn check_settings(&self) -> CheckSettings {
        CheckSettings {
            mode: self.ctrl.tcf,
            store_only: self.ctrl.store_only,
            tco: self.tco,
        }
    }

    pub fn layout(&self) -> &Layout {
        self.space.layout()
    }
}

/// A synchronous fault of an access made with `ptr`, at address `at`: the
/// reported address keeps the pointer's top byte (compared on bits 55:0).
pub fn fault_at(code: FaultCode, ptr: TaggedPtr, at: VirtAddr) -> Fault {
    Fault {
        code,
        addr: Some(ptr.with_addr(at)),
    }
}
