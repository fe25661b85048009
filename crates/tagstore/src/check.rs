//! What a manager reports when its own invariants, or its caller's, break.
//!
//! Two kinds of record live here:
//! - [`Misuse`]: the caller broke the contract (released frames whose tag
//!   storage it never reserved, released the zero page, reserved frames twice).
//!   Depending on [`OnMisuse`] the manager panics with `BUG:` at once (the
//!   default in debug builds, Linux's `WARN`/`VM_BUG_ON` made fatal) or records
//!   it, leaves its state untouched, and reports it from `check()`.
//! - [`TagStoreViolation`]: one broken invariant, found by
//!   [`crate::TagStorage::check`], naming the invariant and the block.
//!
//! Only the first misuse is kept, with a count of all of them, so a long
//! buggy run in release builds uses constant memory.

use mte::Pfn;
use mte::{Order, TagBlock};
use thiserror::Error;

/// What a manager does when its caller breaks the contract.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum OnMisuse {
    /// Panic with a message starting `BUG:`.
    Panic,
    /// Refuse the call, leave the state as it was, and report the misuse from
    /// `check()`.
    Record,
}

impl Default for OnMisuse {
    /// `Panic` in debug builds, `Record` in release builds (`debug_assert!`
    /// style).
    fn default() -> Self {
        if cfg!(debug_assertions) {
            Self::Panic
        } else {
            Self::Record
        }
    }
}

/// A call that broke the manager's contract. The call was refused as a whole.
#[derive(Clone, Copy, PartialEq, Eq, Debug, Error)]
pub enum Misuse {
    /// Linux: `WARN_ONCE(!tag_storage_block_is_reserved(block), "Block 0x%lx
    /// is not reserved for pfn 0x%lx")` in `free_tag_storage()`.
    #[error(
        "released frames {pfn} order {order}, but {block:?} holds {refs} releasable references and {frames} were to be dropped"
    )]
    ReleaseUnreserved {
        pfn: Pfn,
        order: Order,
        block: TagBlock,
        refs: u64,
        frames: u64,
    },
    /// Linux: `WARN_ONCE(ret, "Missing tag storage block for pfn 0x%lx")`.
    #[error("released frames {pfn} order {order}, which have no tag storage")]
    ReleaseUncovered { pfn: Pfn, order: Order },
    /// The zero page's reference is never dropped (RFC v2 patch 18).
    #[error("released the zero page {zero_page} (frames {pfn} order {order})")]
    ReleaseZeroPage {
        zero_page: Pfn,
        pfn: Pfn,
        order: Order,
    },
    /// A block cannot hold more references than the frames it covers: some of
    /// these frames were reserved already. (Linux avoids this with the
    /// `PG_tag_storage_reserved` check at the top of `reserve_tag_storage()`,
    /// which the caller keeps.)
    #[error(
        "reserved frames {pfn} order {order} twice: {block:?} would hold {refs} references but covers {capacity} frames"
    )]
    DoubleReservation {
        pfn: Pfn,
        order: Order,
        block: TagBlock,
        refs: u64,
        capacity: u64,
    },
    /// Under policy `none` nothing is ever reserved, so nothing can be released.
    #[error("released frames {pfn} order {order} on a machine without tag storage")]
    ReleaseWithoutTagStorage { pfn: Pfn, order: Order },
}

/// One broken invariant of a tag storage manager.
#[derive(Clone, Copy, PartialEq, Eq, Debug, Error)]
pub enum TagStoreViolation {
    /// Reserved blocks are blocks of this machine.
    #[error("{block:?} is reserved but the machine has only {blocks} blocks")]
    UnknownBlock { block: TagBlock, blocks: u64 },
    /// A block's reference count is the number of live tagged frames it
    /// covers, so it never exceeds the frames it covers (docs/model.md §4.3).
    #[error("{block:?} holds {refs} references but covers only {capacity} frames")]
    RefcountAboveCoverage {
        block: TagBlock,
        refs: u64,
        capacity: u64,
    },
    /// A counter kept incrementally disagrees with a recount.
    #[error("counter {name} is {counted} but a recount gives {actual}")]
    CounterMismatch {
        name: &'static str,
        counted: u64,
        actual: u64,
    },
    /// Blocks reserved now = blocks reserved so far - blocks released so far.
    #[error(
        "tag_storage.reserved is {reserved} but reservations - releases is {reservations} - {releases}"
    )]
    CounterBalance {
        reserved: u64,
        reservations: u64,
        releases: u64,
    },
    /// After activation the zero page's block is reserved, for ever, and holds
    /// the zero page's reference (RFC v2 patch 18, docs/model.md §2).
    #[error("the zero page {zero_page}'s tag block {block:?} holds no reference")]
    ZeroPageBlockNotReserved {
        zero_page: Pfn,
        block: Option<TagBlock>,
    },
    /// `xnu`, `google` (their form of invariant 3): a tagged frame lies only
    /// in a block whose tag storage the design holds (an ACTIVE cell, a
    /// FREE or TAGGED Tag Block).
    #[error("{frames} tagged frame(s) lie in {block:?}, whose tag storage is not held")]
    TaggedOutsideHeldStorage { block: TagBlock, frames: u64 },
    /// The caller broke the contract; `first` is the first such call.
    #[error("{count} call(s) broke the tag storage contract; the first: {first}")]
    Misuse { first: Misuse, count: u64 },
    /// RFC v2's block count: a block's extra references (one per live
    /// allocation whose v2 range reaches it without covering it) disagree
    /// with the live allocations (`crate::rfc_v2`).
    #[error("{block:?} holds {refs} extra references but {live} live allocations reach it")]
    ExtraRefs {
        block: TagBlock,
        refs: u64,
        live: u64,
    },
}

/// The misuses of one manager: the first, and how many.
#[derive(Clone, PartialEq, Eq, Debug)]
pub(crate) struct MisuseLog {
    on_misuse: OnMisuse,
    first: Option<Misuse>,
    count: u64,
}

impl MisuseLog {
    pub(crate) fn new(on_misuse: OnMisuse) -> Self {
        Self {
            on_misuse,
            first: None,
            count: 0,
        }
    }

    pub(crate) fn report(&mut self, misuse: Misuse) {
        match self.on_misuse {
            OnMisuse::Panic => panic!("BUG: tag storage: {misuse}"),
            OnMisuse::Record => {
                self.count += 1;
                self.first.get_or_insert(misuse);
            }
        }
    }

    pub(crate) fn check(&self, out: &mut Vec<TagStoreViolation>) {
        let Self {
            on_misuse: _,
            first,
            count,
        } = self;
        if let Some(first) = *first {
            out.push(TagStoreViolation::Misuse {
                first,
                count: *count,
            });
        }
    }
}
