//! `rfc-v3`: the RFC v3 series as posted (Alexandru Elisei, "arm64: Add
//! support for dynamic tag storage", 35 patches, linux-arm-kernel, January
//! 2024), never merged.
//!
//! The manager and its rules are `dynamic`'s (blocks lent as CMA, reserved
//! on demand, the fault on an entry awaiting tag storage reserving or
//! migrating the page): `dynamic` *is* this series with the mistakes the
//! reviews and the model found fixed. What makes it `rfc-v3` is the two
//! mistakes it has built in ([`DesignEntry::mistakes`], switched on by the
//! platform together with any `mistake=` the platform line adds,
//! `docs/designs.md`, "Known mistakes"):
//! - `huge-zero-page`: tag storage is reserved for the 4 KiB zero page
//!   only, so a tagged read of a THP-eligible range livelocks on the huge
//!   zero page (measured on the posted series under QEMU);
//! - `atomic-alloc`: `copy_highpage()` allocates the per-frame tag buffer
//!   with a sleeping allocation, and is reached with the page-table lock
//!   held (fork's `copy_present_page()`), the v3 review's blocker.

use crate::design::DesignEntry;

/// `rfc-v3` in the design registry: `dynamic`'s manager and rules, and the
/// series' two mistakes.
pub(crate) const DESIGN: DesignEntry = DesignEntry::new(
    "rfc-v3",
    "the RFC v3 series as posted: dynamic with the mistakes huge-zero-page and atomic-alloc",
    crate::dynamic::DESIGN.rules,
    crate::dynamic::DESIGN.build,
)
.with_mistakes(&["huge-zero-page", "atomic-alloc"]);
