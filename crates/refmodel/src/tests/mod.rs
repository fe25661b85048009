//! Tests of the whole machine through [`uapi::Machine`], with values worked
//! out by hand from Linux and the architecture (each test cites its rule).
//!
//! - `harness`: a small driver that builds commands from scenario-like text;
//! - `examples`: the user-visible lines of `examples/*.mte`;
//! - `processes`, `syscalls`, `kernel_access`, `ptrace`, `accesses`,
//!   `instructions`: one command family each;
//! - `selftests`: behaviours of Linux's `tools/testing/selftests/arm64/mte`;
//! - `properties`: proptests against a flat byte-array oracle.

mod accesses;
mod examples;
mod harness;
mod instructions;
mod kernel_access;
mod processes;
mod properties;
mod ptrace;
mod selftests;
mod syscalls;
