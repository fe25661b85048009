//! The Arm Memory Tagging Extension as the architecture defines it.
//!
//! Pure semantics, no kernel knowledge and no I/O: tags, tagged pointers,
//! granules, the tag instructions, tag packing in tag storage and the
//! tag-check decision of each check mode. Every rule cites its source (Arm
//! ARM pseudocode or instruction description, QEMU `target/arm/tcg/
//! mte_helper.c`, or Linux `arch/arm64` where Linux sets the policy).
//!
//! Modules, in dependency order:
//! - [`addr`]: physical addresses, frame numbers and buddy orders;
//! - [`tag`]: [`Tag`] and [`TagMask`];
//! - [`ptr`]: [`VirtAddr`] and [`TaggedPtr`] (Top Byte Ignore, tag in 59:56);
//! - [`granule`]: the 16-byte granule, [`PageGeometry`], [`Granule`];
//! - [`geometry`]: the machine's [`Geometry`]: DRAM and tag storage ranges,
//!   tag blocks, and every page <-> tag byte <-> tag block conversion;
//! - [`packing`]: two tags per byte of tag storage, low nibble first;
//! - [`insn`]: IRG, ADDG, SUBG, GMI;
//! - [`tag_store`]: LDG and the STG family as plans for the kernel;
//! - [`check`]: which granules an access touches and what a mismatch does.
//!
//! Not here: Linux's `prctl(PR_SET_TAGGED_ADDR_CTRL)` encoding, signals,
//! page tables and tag storage management, which belong to the kernel and
//! tag storage crates; reading a machine description (TOML, device tree),
//! which belongs to the platform crate.

pub mod addr;
pub mod check;
pub mod geometry;
pub mod granule;
pub mod insn;
pub mod packing;
pub mod ptr;
pub mod tag;
pub mod tag_store;

pub use addr::{Order, Pfn, PfnRange, PhysAddr};
pub use check::{
    AccessError, AccessKind, AccessSpan, CheckMode, CheckOutcome, CheckSettings, CheckTiming,
    UaccessOutcome, check_access, check_uaccess,
};
pub use geometry::{Geometry, GeometryError, MemRange, TagBlock, TagRegion};
pub use granule::{
    Address, DATA_BYTES_PER_TAG_BYTE, GRANULE_SIZE, Granule, LOG2_TAG_GRANULE, PageGeometry,
    PageSizeError,
};
pub use insn::{
    GranuleOffset, InsnError, TagOffset, addg, choose_non_excluded_tag, gmi, irg, subg,
};
pub use ptr::{PtrError, TaggedPtr, VirtAddr, same_address_bits};
pub use tag::{Tag, TagError, TagMask};
pub use tag_store::{
    AlignmentFault, DataEffect, GranuleCount, TagLoad, TagStore, TagStoreError, TagStoreOp,
    plan_tag_load, plan_tag_store,
};
