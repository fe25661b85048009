//! Where tag blocks come from and go back to: the kernel's side of a claim.
//!
//! Owns the [`BlockSource`] contract and its error, [`ClaimError`]. A tag
//! storage manager never touches frames itself: to reserve a block it asks the
//! source to *claim* the block's frames (take them out of the page allocator,
//! migrating any data they hold to other frames), and to release one it gives
//! the frames back.
//!
//! Linux: the RFC's source is CMA. `cma_alloc_range()` runs
//! `alloc_contig_range()`, which isolates the range, drains the per-CPU LRU
//! caches and migrates every in-use page out; `cma_release()` gives the pages
//! back to the buddy allocator as free `MIGRATE_CMA` pages.
//!
//! Contract for implementors:
//! - `claim` either takes every frame of the block (`Ok`) or none of them
//!   (`Err`): a failed claim leaves the allocator as it was, and nothing it
//!   migrated is lost.
//! - `claim` is `async` because migration is interleavable kernel code in the
//!   simulated kernel (it sleeps in Linux). The manager never drops a claim
//!   future before it completes; a caller that wants to give up (a fatal signal
//!   is pending, RFC v2 "Handle fatal signal in reserve_tag_storage()") reports
//!   it as [`ClaimError::Permanent`] with [`ClaimCause::Interrupted`].
//! - `release` is only ever called for a block the same source claimed and the
//!   manager has not released since; it cannot fail (Linux: `cma_release()`
//!   only warns on a range it does not own).

use core::fmt;
use mte::TagBlock;
use mte::{Pfn, PfnRange};
use thiserror::Error;

use crate::LocalBoxFuture;

/// The kernel's side of a tag storage manager: takes whole tag blocks out of
/// the page allocator and gives them back.
pub trait BlockSource {
    /// Takes the frames `pfns` of `block` out of the page allocator, migrating
    /// any data they hold. All or nothing.
    ///
    /// Linux: `cma_alloc_range()` -> `alloc_contig_range()`.
    fn claim<'a>(
        &'a mut self,
        block: TagBlock,
        pfns: PfnRange,
    ) -> LocalBoxFuture<'a, Result<(), ClaimError>>;

    /// Gives the frames of a block claimed earlier back to the page allocator.
    ///
    /// Linux: `cma_release()`.
    fn release(&mut self, block: TagBlock, pfns: PfnRange);

    /// How many frames of `pfns` are free in the page allocator now: the
    /// designs that pick blocks by how full they are (XNU's cell buckets,
    /// Google's whole free Tag Blocks) ask this. Frames the machine does
    /// not have count as not free.
    fn free_frames(&self, pfns: PfnRange) -> u64;

    /// Whether every frame of `pfns` is free in the page allocator
    /// (`free_frames(pfns) == pfns.count`). A source may answer at the
    /// first frame in use: the designs ask this of every held block when
    /// they choose where a tagged allocation goes, and most blocks have a
    /// frame in use near their start.
    fn all_free(&self, pfns: PfnRange) -> bool {
        self.free_frames(pfns) == pfns.count
    }

    /// Moves the data of every allocated page of `pfns` to free frames
    /// outside `pfns` and outside every range of `avoid`, leaving `pfns`
    /// free in the page allocator (Google's compaction of the untagged list
    /// into Tag Blocks: the data goes to other untagged blocks, not into
    /// held ones). Stops at the first page that cannot move; pages moved
    /// stay moved. A source that cannot move pages refuses with
    /// [`ClaimCause::Unmovable`].
    fn evacuate<'a>(
        &'a mut self,
        pfns: PfnRange,
        avoid: &'a [PfnRange],
    ) -> LocalBoxFuture<'a, Result<(), ClaimError>> {
        let _ = avoid;
        Box::pin(async move {
            Err(ClaimError::Permanent {
                cause: ClaimCause::Unmovable,
                pfn: Some(pfns.start),
            })
        })
    }
}

/// Why the frames of a block could not be taken, in Linux's terms.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum ClaimCause {
    /// A frame could not be isolated or migrated right now: it is being
    /// allocated, freed, or migrated by someone else (`-EBUSY`).
    Busy,
    /// A frame is pinned (`get_user_pages(FOLL_LONGTERM)`, `vmsplice`) and
    /// cannot be migrated until it is unpinned (`-EBUSY` in Linux, which
    /// cannot tell it from `Busy`; the background's "can fail for ever").
    Pinned,
    /// A frame holds data that can never move (`-EBUSY` from
    /// `isolate_migratepages_range()`).
    Unmovable,
    /// No free frame to migrate the data to (`-ENOMEM`).
    NoMemory,
    /// The claim was abandoned because the task has a fatal signal pending
    /// (`-EINTR`, RFC v2 patch "Handle fatal signal in reserve_tag_storage()").
    Interrupted,
}

impl fmt::Display for ClaimCause {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Busy => "busy",
            Self::Pinned => "pinned",
            Self::Unmovable => "unmovable",
            Self::NoMemory => "no memory to migrate to",
            Self::Interrupted => "interrupted by a fatal signal",
        })
    }
}

/// A failed claim. `Transient` failures are retried by the manager a bounded
/// number of times ([`crate::CLAIM_ATTEMPTS`]); `Permanent` ones are not.
///
/// The source decides which is which: Linux's `cma_alloc_range()` retries only
/// `-EBUSY`, so a pinned page is "transient" there and fails every attempt.
#[derive(Clone, Copy, PartialEq, Eq, Debug, Error)]
pub enum ClaimError {
    #[error("transient failure ({cause}){}", at(*pfn))]
    Transient { cause: ClaimCause, pfn: Option<Pfn> },
    #[error("permanent failure ({cause}){}", at(*pfn))]
    Permanent { cause: ClaimCause, pfn: Option<Pfn> },
}

fn at(pfn: Option<Pfn>) -> String {
    pfn.map(|p| format!(" at frame {p}")).unwrap_or_default()
}

impl ClaimError {
    /// Whether trying the same claim again may succeed.
    pub fn is_transient(&self) -> bool {
        matches!(self, Self::Transient { .. })
    }

    pub fn cause(&self) -> ClaimCause {
        match *self {
            Self::Transient { cause, .. } | Self::Permanent { cause, .. } => cause,
        }
    }

    /// The frame that could not be taken, when there is one.
    pub fn pfn(&self) -> Option<Pfn> {
        match *self {
            Self::Transient { pfn, .. } | Self::Permanent { pfn, .. } => pfn,
        }
    }
}
