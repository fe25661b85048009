//! Generation numbers: a fresh number, never handed out before in this
//! process, for a structure each time it changes, so that a checker can
//! tell "unchanged since I last looked" by comparing two numbers (no
//! number can come back, even for a structure built after another was
//! dropped). [`crate::mm::PageTable`] takes one in every mutable access
//! of its tables, [`crate::mm::Rmap`] in every update; the incremental
//! invariant checker (`crate::machine::check`) keys what it derives from
//! them on these numbers.

use std::sync::atomic::{AtomicU64, Ordering};

static NEXT: AtomicU64 = AtomicU64::new(1);

/// A generation number never returned before.
#[inline]
pub(crate) fn next() -> u64 {
    NEXT.fetch_add(1, Ordering::Relaxed)
}
