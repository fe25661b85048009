//! The simulated kernel: a Linux-like memory manager for an Arm MTE machine
//! whose tag storage may be managed dynamically (`docs/model.md` §2).
//!
//! - [`phys`]: physical memory: frame metadata, page contents, the buddy
//!   allocator with pageblocks and CMA, page isolation and contiguous claims.
//! - [`mem`]: the physical memory manager (allocation, tag bytes, tag
//!   storage reservation, migration copies, counters).
//! - [`mm`]: address-space data structures (VMAs, page tables, rmap).
//! - [`swap`]: the swap device (slots, swap counts, saved data and tags).
//! - [`trace`]: the event sink of a traced run.
//! - [`machine`]: the kernel itself, [`Kernel`], implementing
//!   [`uapi::Machine`]: processes, faults, `set_pte_at`/`mte_sync_tags`,
//!   migration, user accesses and observations.
//!
//! Layering: `kernel` uses `mte` (addresses) and `platform` (the machine
//! description) and drives `tagstore`; nothing below knows the kernel.

pub mod cost;
pub mod machine;
pub mod mem;
pub mod mm;
pub mod phys;
pub mod swap;
pub mod trace;

pub use machine::{
    CpuLists, FreeFrames, FreeLists, FreeShape, Kernel, KernelInitError, ListType, ListedBlock,
    ListsReport, ShapeError, ShapeReport,
};
