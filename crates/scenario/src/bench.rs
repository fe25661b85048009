//! Inputs for measuring parser throughput (nothing here is timed).
//!
//! The workload the parser must keep up with is a recorded trace: millions of
//! `load`/`store` lines with raw tagged addresses. [`synthetic_trace`] writes
//! one that also runs: its mapping is placed with `fixed=`, so every address
//! lies in it, and the memory is untagged, so every access succeeds.

use std::fmt::Write as _;

/// Where the trace's mapping is placed (`map=fixed=`).
pub const TRACE_BASE: u64 = 0x1000_0000;

/// Bytes mapped; the accesses stay inside.
pub const TRACE_BYTES: u64 = 16 << 20;

/// Lines before the accesses (`spawn`, `mmap`).
pub const TRACE_HEADER_LINES: usize = 2;

/// A trace of `accesses` 8-byte stores and loads (alternating) at raw
/// addresses that walk the mapping with a stride coprime to its size, with
/// logical tags cycling through 0..=15 (ignored: the memory is untagged).
/// Deterministic: the same `accesses` gives the same bytes.
pub fn synthetic_trace(accesses: usize) -> Vec<u8> {
    let mut out = String::with_capacity(64 + accesses * 40);
    out.push_str("spawn p\n");
    let _ = writeln!(
        out,
        "p mmap buf {TRACE_BYTES:#x} map=private,anon,fixed={TRACE_BASE:#x}"
    );
    let slots = TRACE_BYTES / 8;
    let mut slot = 0u64;
    for i in 0..accesses as u64 {
        // An odd stride visits every 8-byte slot before repeating.
        slot = (slot + 0x9e37) % slots;
        let tag = i % 16;
        let addr = (tag << 56) | (TRACE_BASE + slot * 8);
        let _ = if i % 2 == 0 {
            writeln!(out, "p store {addr:#x} 8 {i:#x}")
        } else {
            writeln!(out, "p load {addr:#x} 8")
        };
    }
    out.into_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ast::{Command, ProcessOp, PtrBase, Stmt};

    #[test]
    fn the_trace_parses_with_every_address_in_the_mapping() {
        let src = synthetic_trace(1000);
        let script = crate::parse("trace.mte", &src).unwrap();
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
}
