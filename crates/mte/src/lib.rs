//! The Arm Memory Tagging Extension as the architecture defines it.
//!
//! Pure semantics, no kernel knowledge and no I/O: tags, tagged pointers,
//! granules, the tag instructions, tag packing in tag storage and the
//! tag-check decision of each check mode. Every rule cites its source.

pub mod addr;

pub use addr::{Pfn, PfnRange, PhysAddr};
