//! Shorthands the unit tests of every module share: values the test
//! writes by hand, so out-of-range input is a bug in the test (a panic).

use crate::{Tag, VirtAddr};

/// The tag `v` (0 to 15).
pub(crate) fn t(v: u8) -> Tag {
    Tag::new(v).expect("a 4-bit tag")
}

/// The virtual address `raw` (within 56 bits).
pub(crate) fn va(raw: u64) -> VirtAddr {
    VirtAddr::new(raw).expect("a 56-bit address")
}
