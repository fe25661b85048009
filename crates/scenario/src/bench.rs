//! Inputs for measuring trace throughput (nothing here is timed).
//!
//! The workload the runner must keep up with is a recorded trace: millions of
//! `load`/`store` lines with raw tagged addresses. [`synthetic_trace`] writes
//! one that also runs: its mapping is placed with `fixed=`, so every address
//! lies in it, and the memory is untagged, so every access succeeds.
//!
//! [`FlatMemory`] is the machine a measurement of the runner itself uses: it
//! stores bytes and nothing else, so that the figure is the cost of parsing,
//! lowering and comparing, not of a memory model. It is not a model of
//! anything and no scenario's verdict should come from it.

use std::fmt::Write as _;

use mte::{Tag, TaggedPtr};
use uapi::{
    Bound, Command, Counter, Errno, Fault, FaultCode, Machine, MachineError, Op, Outcome,
    PageState, Pid, Reply,
};

/// Where the trace's mapping is placed (`map=fixed=`).
pub const TRACE_BASE: u64 = 0x1000_0000;

/// Bytes mapped; the accesses stay inside.
pub const TRACE_BYTES: u64 = 16 << 20;

/// Lines before the accesses (`spawn`, `mmap`).
pub const TRACE_HEADER_LINES: usize = 2;

/// The order in which a synthetic trace visits its mapping.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum TracePattern {
    /// A stride coprime to the mapping's size over all of it: a new page
    /// on every line, so that every cache of the host and of the model
    /// misses (the worst case, and the trace the figures quote).
    #[default]
    Stride,
    /// The locality of a program's own accesses, as a recording of one
    /// (lackey's, say) converted to text has it: seven accesses in eight
    /// at random slots of a working set of [`LOCAL_HOT_PAGES`] pages (a
    /// stack and a few hot objects), the eighth the next slot of a
    /// sequential walk over the whole mapping (a buffer streamed through).
    Local,
}

/// Pages of [`TracePattern::Local`]'s working set (the mapping's first).
pub const LOCAL_HOT_PAGES: u64 = 16;

impl TracePattern {
    /// The pattern a name (`stride`, `local`) stands for.
    pub fn from_name(name: &str) -> Option<TracePattern> {
        match name {
            "stride" => Some(TracePattern::Stride),
            "local" => Some(TracePattern::Local),
            _ => None,
        }
    }

    /// The 8-byte slots of the mapping the trace's accesses visit, in order.
    fn slots(self, accesses: usize) -> impl Iterator<Item = u64> {
        let slots = TRACE_BYTES / 8;
        let hot_slots = LOCAL_HOT_PAGES * 4096 / 8;
        let (mut slot, mut walk, mut rng) = (0u64, 0u64, 0x9e37_79b9_7f4a_7c15u64);
        (0..accesses as u64).map(move |i| match self {
            TracePattern::Stride => {
                // An odd stride visits every 8-byte slot before repeating.
                slot = (slot + 0x9e37) % slots;
                slot
            }
            TracePattern::Local if i % 8 == 7 => {
                walk = (walk + 1) % slots;
                walk
            }
            TracePattern::Local => {
                // xorshift64: deterministic, and a different slot each time.
                rng ^= rng << 13;
                rng ^= rng >> 7;
                rng ^= rng << 17;
                rng % hot_slots
            }
        })
    }
}

/// A trace of `accesses` 8-byte stores and loads (alternating) at raw
/// addresses that walk the mapping with a stride coprime to its size, with
/// logical tags cycling through 0..=15 (ignored: the memory is untagged).
/// Deterministic: the same `accesses` gives the same bytes.
pub fn synthetic_trace(accesses: usize) -> Vec<u8> {
    synthetic_trace_of(TracePattern::Stride, accesses)
}

/// [`synthetic_trace`] with its addresses in `pattern`'s order.
pub fn synthetic_trace_of(pattern: TracePattern, accesses: usize) -> Vec<u8> {
    let mut out = String::with_capacity(64 + accesses * 40);
    out.push_str("spawn p\n");
    let _ = writeln!(
        out,
        "p mmap buf {TRACE_BYTES:#x} map=private,anon,fixed={TRACE_BASE:#x}"
    );
    for (i, slot) in pattern.slots(accesses).enumerate() {
        let i = i as u64;
        let tag = i % 16;
        let addr = (tag << 56) | (TRACE_BASE + slot * 8);
        let _ = if i.is_multiple_of(2) {
            writeln!(out, "p store {addr:#x} 8 {i:#x}")
        } else {
            writeln!(out, "p load {addr:#x} 8")
        };
    }
    out.into_bytes()
}

/// The memory traffic of [`synthetic_trace`] alone: its stores and loads,
/// at its addresses, on a plain array of [`TRACE_BYTES`] bytes (no text,
/// no machine). The floor any replay of that trace pays for its random
/// walk over 16 MiB, a host cache and TLB miss on almost every line;
/// returns the sum of the loaded values so that nothing is optimised out.
pub fn walk_baseline(accesses: usize) -> u64 {
    walk_baseline_of(TracePattern::Stride, accesses)
}

/// [`walk_baseline`] of [`synthetic_trace_of`]`(pattern, accesses)`.
pub fn walk_baseline_of(pattern: TracePattern, accesses: usize) -> u64 {
    let mut memory = vec![0u8; TRACE_BYTES as usize];
    let mut sum = 0u64;
    for (i, slot) in pattern.slots(accesses).enumerate() {
        let i = i as u64;
        // In bounds: slot < TRACE_BYTES / 8.
        let at = (slot * 8) as usize;
        let word = &mut memory[at..at + 8];
        if i.is_multiple_of(2) {
            word.copy_from_slice(&i.to_le_bytes());
        } else {
            let mut bytes = [0u8; 8];
            bytes.copy_from_slice(word);
            sum = sum.wrapping_add(u64::from_le_bytes(bytes));
        }
    }
    sum
}

/// A byte store behind the [`Machine`] trait, for measuring the runner.
///
/// Processes are numbered and never checked; `mmap` makes a zero-filled
/// mapping (at `fixed=` if given, else after the last one) shared by every
/// process, `ENOMEM` past [`FlatMemory::MAX_BYTES`] in all; `load` and `store` read and write it little-endian, and fault
/// `SEGV_MAPERR` outside every mapping. Every other command succeeds doing
/// nothing; tags, counters and page states are not kept.
#[derive(Debug, Default)]
pub struct FlatMemory {
    next_pid: u32,
    /// `(base, bytes)`, in order of creation.
    mappings: Vec<(u64, Vec<u8>)>,
}

impl FlatMemory {
    /// Bytes all mappings together may hold (the store is real memory);
    /// an `mmap` beyond it is `ENOMEM`.
    pub const MAX_BYTES: u64 = 1 << 30;

    pub fn new() -> FlatMemory {
        FlatMemory::default()
    }

    /// The bytes at `ptr..ptr+len`, if one mapping holds them all.
    fn bytes_mut(&mut self, ptr: TaggedPtr, len: u64) -> Option<&mut [u8]> {
        let addr = ptr.addr().as_u64();
        self.mappings.iter_mut().find_map(|(base, bytes)| {
            let offset = addr.checked_sub(*base)?;
            let end = offset.checked_add(len)?;
            bytes.get_mut(usize::try_from(offset).ok()?..usize::try_from(end).ok()?)
        })
    }

    fn map_err(ptr: TaggedPtr) -> Outcome {
        Outcome::Fault(Fault {
            code: FaultCode::SegvMapErr,
            addr: Some(ptr),
        })
    }

    fn mmap(&mut self, len: u64, fixed: Option<TaggedPtr>) -> Reply {
        let base = match fixed {
            Some(ptr) => ptr.addr().as_u64(),
            None => self
                .mappings
                .last()
                .map_or(TRACE_BASE, |(b, bytes)| b + bytes.len() as u64),
        };
        let mapped: u64 = self.mappings.iter().map(|(_, m)| m.len() as u64).sum();
        if len > Self::MAX_BYTES.saturating_sub(mapped) {
            return Reply::new(Outcome::Error(Errno::NoMem));
        }
        // At most MAX_BYTES, which fits usize.
        self.mappings.push((base, vec![0; len as usize]));
        Reply::binding(Outcome::Ok, Bound::Pointer(TaggedPtr::from_raw(base)))
    }

    fn command(&mut self, command: &Command) -> Reply {
        match *command {
            Command::Fork => {
                self.next_pid += 1;
                Reply::binding(Outcome::Ok, Bound::Process(Pid(self.next_pid)))
            }
            Command::Mmap { len, flags, .. } => self.mmap(len, flags.fixed),
            // Byte loops rather than slice copies: an access is at most 16
            // bytes, and a call to memcpy for each would be most of its cost.
            Command::Load { ptr, size } => match self.bytes_mut(ptr, size.bytes()) {
                Some(bytes) => Reply::new(Outcome::Value(
                    bytes
                        .iter()
                        .rev()
                        .fold(0u128, |value, &b| value << 8 | u128::from(b)),
                )),
                None => Reply::new(Self::map_err(ptr)),
            },
            Command::Store { ptr, size, value } => match self.bytes_mut(ptr, size.bytes()) {
                Some(bytes) => {
                    for (i, byte) in bytes.iter_mut().enumerate() {
                        *byte = (value >> (8 * i)) as u8;
                    }
                    Reply::new(Outcome::Ok)
                }
                None => Reply::new(Self::map_err(ptr)),
            },
            Command::Ldg { .. } => Reply::new(Outcome::Tag(Tag::default())),
            _ => Reply::new(Outcome::Ok),
        }
    }
}

impl Machine for FlatMemory {
    fn prefetch(&self, accesses: &[(Pid, TaggedPtr)]) -> u64 {
        let mut read = 0;
        for (_, ptr) in accesses {
            let addr = ptr.addr().as_u64();
            let byte = self.mappings.iter().find_map(|(base, bytes)| {
                bytes.get(usize::try_from(addr.checked_sub(*base)?).ok()?)
            });
            read ^= u64::from(byte.copied().unwrap_or(0));
        }
        read
    }

    fn run(&mut self, op: &Op) -> Reply {
        match op {
            Op::Spawn => {
                self.next_pid += 1;
                Reply::binding(Outcome::Ok, Bound::Process(Pid(self.next_pid)))
            }
            Op::Process { command, .. } => self.command(command),
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

    fn tags(&self, _pid: Pid, _ptr: TaggedPtr, _len: u64) -> Option<Vec<Tag>> {
        None
    }

    fn page_state(&self, _pid: Pid, _ptr: TaggedPtr, _state: PageState) -> Option<bool> {
        None
    }

    fn invariant_violations(&self) -> Vec<uapi::Violation> {
        Vec::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use lang::ast::{Command, ProcessOp, PtrBase, Stmt};

    #[test]
    fn the_trace_parses_with_every_address_in_the_mapping() {
        let src = synthetic_trace(1000);
        let script = lang::parse("trace.mte", &src).unwrap();
        assert_eq!(script.stmts.len(), TRACE_HEADER_LINES + 1000);
        for stmt in &script.stmts[TRACE_HEADER_LINES..] {
            let Stmt::Command(c) = stmt else {
                panic!("{stmt:?}")
            };
            let Command::Process { op, .. } = &c.command else {
                panic!()
            };
            let ptr = match &op.node {
                ProcessOp::Load { ptr, .. } | ProcessOp::Store { ptr, .. } => ptr,
                other => panic!("{other:?}"),
            };
            let PtrBase::Raw(raw) = ptr.base else {
                panic!()
            };
            let addr = raw.raw() & ((1 << 56) - 1);
            assert!((TRACE_BASE..TRACE_BASE + TRACE_BYTES - 7).contains(&addr));
        }
        assert_eq!(synthetic_trace(1000), src, "deterministic");
    }

    #[test]
    fn the_trace_runs_on_flat_memory_and_loads_see_the_stores() {
        // Store i writes i at its slot and load i+1 reads the next slot of
        // the walk, which no earlier store wrote: 0 (fresh mmap memory is
        // zero-filled, as `mmap(2)` anonymous memory is).
        let src = synthetic_trace(1000);
        let script = lang::parse("trace.mte", &src).unwrap();
        let mut machine = FlatMemory::new();
        let report = crate::run_script(&script, &mut machine, &crate::RunOptions::default());
        assert_eq!(report.failures, []);
        assert_eq!(report.commands, 1002);
        let mut machine = FlatMemory::new();
        let check = b"spawn p\np mmap m 4K map=fixed=0x1000\n\
            p store 0x0700000000001008 8 0x1122334455667788 => ok\n\
            p load 0x1008 4 => value 0x55667788\n\
            p load 0x100c 2 => value 0x3344\n\
            p load 0x2000 8 => fault SEGV_MAPERR addr=0x2000\n";
        let script = lang::parse("flat.mte", check).unwrap();
        let report = crate::run_script(&script, &mut machine, &crate::RunOptions::default());
        assert_eq!(report.failures, []);
    }

    #[test]
    fn the_local_trace_stays_in_its_working_set_but_for_its_walk() {
        let src = synthetic_trace_of(TracePattern::Local, 8000);
        let text = std::str::from_utf8(&src).unwrap();
        let pages: Vec<u64> = text
            .lines()
            .skip(TRACE_HEADER_LINES)
            .map(|line| {
                let raw = line.split(' ').nth(2).unwrap().trim_start_matches("0x");
                let addr = u64::from_str_radix(raw, 16).unwrap() & ((1 << 56) - 1);
                assert!((TRACE_BASE..TRACE_BASE + TRACE_BYTES - 7).contains(&addr));
                (addr - TRACE_BASE) / 4096
            })
            .collect();
        let hot = pages.iter().filter(|&&p| p < LOCAL_HOT_PAGES).count();
        assert!(hot >= 7000, "{hot} of 8000 in the working set");
        let mut machine = FlatMemory::new();
        let script = lang::parse("local.mte", &src).unwrap();
        let report = crate::run_script(&script, &mut machine, &crate::RunOptions::default());
        assert_eq!((report.failures, report.commands), (vec![], 8002));
        assert_eq!(
            synthetic_trace_of(TracePattern::Stride, 100),
            synthetic_trace(100)
        );
    }
}
