//! `rfc-v3`: the RFC v3 series as posted (Alexandru Elisei, "arm64: Add
//! support for dynamic tag storage", 35 patches, linux-arm-kernel, January
//! 2024), never merged.
//!
//! The manager and its rules are `dynamic`'s (blocks lent as CMA, reserved
//! on demand, the fault on an entry awaiting tag storage reserving or
//! migrating the page): `dynamic` *is* this series with the mistakes the
//! reviews and the model found fixed. What makes it `rfc-v3` is the three
//! mistakes it has built in ([`DesignEntry::mistakes`], switched on by the
//! platform together with any `mistake=` the platform line adds,
//! `docs/designs.md`, "Known mistakes"):
//! - `huge-zero-page`: tag storage is reserved for the 4 KiB zero page
//!   only, so a tagged read of a THP-eligible range livelocks on the huge
//!   zero page (measured on the posted series under QEMU);
//! - `atomic-alloc`: `copy_highpage()` allocates the per-frame tag buffer
//!   with a sleeping allocation, and is reached with the page-table lock
//!   held (fork's `copy_present_page()`), the v3 review's blocker;
//! - `tags-by-pfn`: compaction migrates a tagged page without reserving its
//!   destination's storage, the tags saved by frame and the page mapped
//!   awaiting storage (79 reservations where reserving first makes 112 in
//!   the compaction record, `docs/reference.md`), the restore warning in
//!   `reserve_tag_storage()`, and saved tags outliving a page freed while
//!   awaiting storage (both `WARN_ON_ONCE`s the posted series printed).
//!
//! Why a mistake and not a [`crate::Rules`] answer: the three steps are one
//! mechanism of the series (tags kept by frame for a page without storage),
//! and its stale entries are a bug the checkers must catch, which is what a
//! mistake switch is for; `dynamic`, the fixed design, reserves the
//! destination first and keeps no entry for a frame nobody maps.

use crate::design::DesignEntry;

/// `rfc-v3` in the design registry: `dynamic`'s manager and rules, and the
/// series' three mistakes.
pub(crate) const DESIGN: DesignEntry = DesignEntry::new(
    "rfc-v3",
    "the RFC v3 series as posted: dynamic with the mistakes huge-zero-page, atomic-alloc and tags-by-pfn",
    crate::dynamic::DESIGN.rules,
    crate::dynamic::DESIGN.build,
)
.with_mistakes(&["huge-zero-page", "atomic-alloc", "tags-by-pfn"]);
