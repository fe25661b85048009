//! The simulated kernel: a Linux-like memory manager for an Arm MTE machine
//! whose tag storage may be managed dynamically (`shared/spec/model.md` §2).
//!
//! - [`phys`]: physical memory: frame metadata, page contents, the buddy
//!   allocator with pageblocks and CMA, page isolation and contiguous claims.
//!
//! Layering: `kernel` uses `mte` (addresses) and `platform` (the machine
//! description) and drives `tagstore`; nothing below knows the kernel.

pub mod mem;
pub mod mm;
pub mod phys;
