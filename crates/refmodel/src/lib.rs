//! The reference model: the user-visible semantics of mtesim's machine with
//! none of its machinery.
//!
//! [`RefMachine`] implements [`uapi::Machine`] for every command of the
//! scenario language: the results, faults, errors, data and tags a process
//! sees. It has no physical memory, no tag storage, no page tables, no
//! zero page and no page sharing: a process's private memory is its own map
//! of pages from the first write, `fork` copies it at once, and shared
//! memory is one object that every mapping of it refers to. It runs beside
//! the kernel model in the differential tests (docs/model.md §4, invariant 8:
//! "nothing is lost"), and it is the executable form of
//! `docs/semantics.md`, which the kernel model follows.
//!
//! Written independently of the kernel model: it shares nothing with it
//! but the architecture crate (`mte`) and the interface (`uapi`).
//!
//! Modules:
//! - [`layout`]: the numbers of the address space (TASK_SIZE, mmap_base, ...);
//! - [`memory`]: page contents and shared objects;
//! - [`space`]: VMAs and private pages of one process;
//! - [`process`]: a process (settings, pending async fault, pins);
//! - `user`: loads, stores, fill, verify and the tag instructions;
//! - `syscall`: prctl, mmap, munmap, mprotect, madvise, pin, kernel copies,
//!   the tracee side of ptrace.
//!
//! Determinism: one RNG per machine, `Xoshiro256PlusPlus::seed_from_u64(seed)`,
//! drawn exactly once per IRG, in command order ([`mte::irg`] draws one
//! `u32`). The kernel model must draw from an identically seeded RNG in the
//! same order, and from nowhere else, for the two to agree.
//!
//! Not modelled: counters ([`Machine::counter`] is `None` for each),
//! page-table states ([`Machine::page_state`] is `None`), concurrency
//! (`run_parallel` runs the ops one after the other in the given order: the
//! differential tests compare sequential programs, or outcomes that must
//! hold in every interleaving), and memory exhaustion.

pub mod layout;
pub mod memory;
pub mod process;
pub mod space;
mod syscall;
mod user;

use std::collections::BTreeMap;

use mte::{Tag, TaggedPtr};
use rand_core::SeedableRng;
use rand_xoshiro::Xoshiro256PlusPlus;
use uapi::{
    Bound, Command, Counter, Errno, Fault, FaultCode, Invariant, Machine, MachineError, MteCtrl,
    Op, Outcome, PageState, Pid, Reply, Violation,
};

use crate::layout::Layout;
use crate::process::Process;

/// The reference machine.
#[derive(Debug, PartialEq, Eq)]
pub struct RefMachine {
    /// Whether the machine has MTE (`tag-storage` is not `none`).
    mte: bool,
    layout: Layout,
    /// The IRG random source.
    rng: Xoshiro256PlusPlus,
    /// Live processes; an exited one is removed, so its pid answers ESRCH.
    processes: BTreeMap<Pid, Process>,
    /// The next pid to hand out; pids are never reused.
    next_pid: u32,
}

impl RefMachine {
    /// The first pid handed out; later ones count up from it.
    pub const FIRST_PID: Pid = Pid(1);

    /// A machine with MTE (`mte`: the platform's `tag-storage` is not
    /// `none`) whose random choices come from `seed`.
    pub fn new(mte: bool, seed: u64) -> RefMachine {
        RefMachine {
            mte,
            layout: Layout::arm64_4k(),
            rng: Xoshiro256PlusPlus::seed_from_u64(seed),
            processes: BTreeMap::new(),
            next_pid: Self::FIRST_PID.0,
        }
    }

    /// A copy that runs on independently: the processes cloned (private
    /// pages shared copy-on-write), and each shared object copied once, so
    /// that the copy's mappings share their objects exactly as the
    /// original's do. Costs a map entry per page, not a page copy.
    pub fn snapshot(&self) -> RefMachine {
        // Keyed by the original's address: a lookup, never iterated, so
        // the addresses leak into nothing.
        let mut copies: BTreeMap<usize, memory::SharedObject> = BTreeMap::new();
        let mut copy = |object: &memory::SharedObject| {
            let key = std::rc::Rc::as_ptr(object) as usize;
            copies
                .entry(key)
                .or_insert_with(|| {
                    std::rc::Rc::new(core::cell::RefCell::new(object.borrow().clone()))
                })
                .clone()
        };
        let mut processes = self.processes.clone();
        for process in processes.values_mut() {
            process.space.replace_objects(&mut copy);
        }
        RefMachine {
            mte: self.mte,
            layout: self.layout,
            rng: self.rng.clone(),
            processes,
            next_pid: self.next_pid,
        }
    }

    /// Whether `other` is in the same state: every field equal, objects
    /// compared by contents (pages still shared copy-on-write compare by
    /// address first). Which mappings share one object is not compared:
    /// two states reached from one state by the same commands in two
    /// orders share alike, since only `mmap` and `fork` make sharing.
    pub fn same_state(&self, other: &RefMachine) -> bool {
        self == other
    }

    pub fn has_mte(&self) -> bool {
        self.mte
    }

    /// A live process.
    pub fn process(&self, pid: Pid) -> Option<&Process> {
        self.processes.get(&pid)
    }

    fn new_pid(&mut self) -> Pid {
        let pid = Pid(self.next_pid);
        self.next_pid = self
            .next_pid
            .checked_add(1)
            .expect("BUG: more than u32::MAX processes");
        pid
    }

    fn spawn(&mut self) -> Reply {
        let pid = self.new_pid();
        self.processes.insert(pid, Process::new(self.layout));
        Reply::binding(Outcome::Ok, Bound::Process(pid))
    }

    /// One command of a live process, after any pending asynchronous fault
    /// was taken.
    fn command(&mut self, pid: Pid, command: &Command) -> Reply {
        let mte = self.mte;
        let result =
            |r: Result<(), Errno>| Reply::new(r.map_or_else(Outcome::Error, |()| Outcome::Ok));
        let count =
            |r: Result<u64, Errno>| Reply::new(r.map_or_else(Outcome::Error, Outcome::Count));
        match command {
            Command::Fork => {
                let child = self.processes[&pid].fork();
                let child_pid = self.new_pid();
                self.processes.insert(child_pid, child);
                Reply::binding(Outcome::Ok, Bound::Process(child_pid))
            }
            Command::Exit => {
                self.processes.remove(&pid);
                Reply::new(Outcome::Ok)
            }
            Command::PeekTags {
                target,
                ptr,
                granules,
            } => Reply::new(match self.tracee(pid, *target) {
                Ok(tracee) => tracee
                    .peek_tags(*ptr, *granules)
                    .map_or_else(Outcome::Error, Outcome::Tags),
                Err(errno) => Outcome::Error(errno),
            }),
            Command::PokeTags { target, ptr, tags } => count(
                self.tracee(pid, *target)
                    .and_then(|tracee| tracee.poke_tags(*ptr, tags)),
            ),
            Command::Irg { ptr, exclude } => {
                let tagged = self.processes[&pid].irg(*ptr, *exclude, &mut self.rng);
                Reply::binding(Outcome::Tag(tagged.tag()), Bound::Pointer(tagged))
            }
            _ => {
                let process = self
                    .processes
                    .get_mut(&pid)
                    .expect("BUG: command of a process that is gone");
                match command {
                    Command::Fork
                    | Command::Exit
                    | Command::PeekTags { .. }
                    | Command::PokeTags { .. }
                    | Command::Irg { .. } => unreachable!("BUG: handled above"),
                    Command::Prctl(request) => result(process.prctl(*request, mte)),
                    Command::PrctlGet => {
                        Reply::new(Outcome::Value(u128::from(process.prctl_get())))
                    }
                    Command::Tco(on) => {
                        process.tco = *on;
                        Reply::new(Outcome::Ok)
                    }
                    Command::Exec => {
                        process.exec();
                        Reply::new(Outcome::Ok)
                    }
                    Command::Mmap { len, prot, flags } => {
                        match process.mmap(*len, *prot, *flags, mte) {
                            Ok(base) => Reply::binding(Outcome::Ok, Bound::Pointer(base.to_ptr())),
                            Err(errno) => Reply::binding(
                                Outcome::Error(errno),
                                Bound::Pointer(TaggedPtr::from_raw(0)),
                            ),
                        }
                    }
                    Command::Munmap { ptr, len } => result(process.munmap(*ptr, *len)),
                    Command::Mprotect { ptr, len, prot } => {
                        result(process.mprotect(*ptr, *len, *prot, mte))
                    }
                    Command::Madvise { ptr, len, advice } => {
                        result(process.madvise(*ptr, *len, *advice))
                    }
                    Command::Pin { ptr, len } => result(process.pin(*ptr, *len)),
                    Command::Unpin { ptr, len } => result(process.unpin(*ptr, *len)),
                    Command::PinShortTerm { ptr, len } => {
                        result(process.pin_short_term(*ptr, *len))
                    }
                    Command::Yield => Reply::new(Outcome::Ok),
                    Command::WriteFd { ptr, len } => count(process.write_fd(*ptr, *len)),
                    Command::ReadFd { ptr, len, byte } => count(process.read_fd(*ptr, *len, *byte)),
                    Command::Load { ptr, size } => Reply::new(process.load(*ptr, *size)),
                    Command::Store { ptr, size, value } => {
                        Reply::new(process.store(*ptr, *size, *value))
                    }
                    Command::Fill { ptr, len, byte } => Reply::new(process.fill(*ptr, *len, *byte)),
                    Command::Verify { ptr, len, byte } => {
                        Reply::new(process.verify(*ptr, *len, *byte))
                    }
                    Command::Addg {
                        ptr,
                        offset,
                        tag_offset,
                    } => {
                        let result = process.addg(*ptr, *offset, *tag_offset);
                        Reply::binding(Outcome::Tag(result.tag()), Bound::Pointer(result))
                    }
                    Command::StoreTag { op, ptr } => Reply::new(process.store_tag(*op, *ptr)),
                    Command::SetTag { ptr, len } => Reply::new(process.set_tag(*ptr, *len)),
                    Command::Ldg { ptr } => Reply::new(process.ldg(*ptr)),
                }
            }
        }
    }

    /// The target of a ptrace request by `tracer`: `ESRCH` if it is gone or
    /// is the tracer itself (a process cannot trace itself), `EIO` on a
    /// machine without MTE (Linux `mte_ptrace_copy_tags()`).
    fn tracee(&mut self, tracer: Pid, target: Pid) -> Result<&mut Process, Errno> {
        if target == tracer {
            return Err(Errno::Srch);
        }
        let mte = self.mte;
        let tracee = self.processes.get_mut(&target).ok_or(Errno::Srch)?;
        if !mte {
            return Err(Errno::Io);
        }
        Ok(tracee)
    }
}

impl Machine for RefMachine {
    fn snapshot(&self) -> Option<Box<dyn Machine>> {
        Some(Box::new(RefMachine::snapshot(self)))
    }

    fn as_any(&self) -> Option<&dyn core::any::Any> {
        Some(self)
    }

    fn same_state(&self, other: &dyn Machine) -> Option<bool> {
        let other = other.as_any()?.downcast_ref::<RefMachine>()?;
        Some(RefMachine::same_state(self, other))
    }

    fn run(&mut self, op: &Op) -> Reply {
        match op {
            Op::Spawn => self.spawn(),
            Op::Process { pid, command } => {
                let Some(process) = self.processes.get_mut(pid) else {
                    return Reply::new(Outcome::Error(Errno::Srch));
                };
                // The kernel entry reports a pending asynchronous fault; the
                // call itself still takes effect (Linux restarts it after
                // the signal handler).
                let pending = command.enters_kernel() && std::mem::take(&mut process.async_pending);
                let reply = self.command(*pid, command);
                if pending {
                    Reply {
                        outcome: Outcome::Fault(Fault {
                            code: FaultCode::SegvMteAerr,
                            addr: None,
                        }),
                        bound: reply.bound,
                    }
                } else {
                    reply
                }
            }
            // Reclaim, compaction and KSM move pages, which the reference
            // does not have; nothing a process sees changes.
            Op::Reclaim { .. } | Op::Compact | Op::KsmScan => Reply::new(Outcome::Ok),
        }
    }

    fn run_parallel(
        &mut self,
        ops: &[Op],
        _chooser: &mut dyn sched::Chooser,
    ) -> Result<Vec<Reply>, MachineError> {
        Ok(ops.iter().map(|op| self.run(op)).collect())
    }

    fn counter(&self, _counter: Counter) -> Option<u64> {
        None
    }

    fn tags(&self, pid: Pid, ptr: TaggedPtr, len: u64) -> Option<Vec<Tag>> {
        let process = self.processes.get(&pid)?;
        let layout = process.layout();
        let start = ptr.addr();
        if !layout.is_user_range(start, len) {
            return None;
        }
        if len == 0 {
            return Some(Vec::new());
        }
        let first = start.granule_base().as_u64();
        let last = start.as_u64() + len - 1;
        (first..=last)
            .step_by(mte::GRANULE_SIZE as usize)
            .map(|granule| {
                let granule = layout.virt(granule);
                process.space.vma_at(granule)?;
                Some(process.space.memory_tag(granule).unwrap_or(Tag::ZERO))
            })
            .collect()
    }

    fn page_state(&self, _pid: Pid, _ptr: TaggedPtr, _state: PageState) -> Option<bool> {
        None
    }

    /// The reference model's own bookkeeping only (it has no physical
    /// memory for the numbered invariants to speak of).
    fn invariant_violations(&self) -> Vec<Violation> {
        let RefMachine {
            mte,
            layout: _,
            rng: _,
            processes,
            next_pid,
        } = self;
        let mut out = Vec::new();
        for (pid, process) in processes {
            let Process {
                ctrl,
                tco: _,
                async_pending: _,
                space,
                pins,
            } = process;
            if pid.0 >= *next_pid {
                out.push(format!("process {pid:?} has a pid not yet handed out"));
            }
            if MteCtrl::decode(ctrl.encode(), *mte) != Some(*ctrl) {
                out.push(format!(
                    "process {pid:?} has settings prctl refuses: {ctrl:?}"
                ));
            }
            if pins.values().any(|&n| n == 0) {
                out.push(format!("process {pid:?} keeps a pin count of 0"));
            }
            out.extend(
                space
                    .violations()
                    .into_iter()
                    .map(|v| format!("process {pid:?}: {v}")),
            );
        }
        out.into_iter()
            .map(|message| Violation::new(Invariant::LayerConsistency, message))
            .collect()
    }
}

#[cfg(test)]
mod tests;
