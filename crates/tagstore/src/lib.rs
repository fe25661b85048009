//! Tag storage managers: which tag blocks are reserved for tags, for how many
//! tagged frames each, and when a block is taken from or given back to the
//! page allocator (`docs/model.md` §2, §3).
//!
//! A manager knows tag blocks and data frames and nothing else: no processes,
//! page tables, printing or globals, so it can be lifted into a real kernel.
//! Frames are moved by the kernel through a [`BlockSource`]; the per-frame
//! "tag storage reserved" flag (`PG_tag_storage_reserved`) is the caller's,
//! which must reserve a frame at most once and release only what it reserved.
//!
//! # Policies
//!
//! Each policy is a type implementing [`TagStorage`]:
//! - [`NoTagStorage`] (`none`): no MTE, no blocks, every counter 0.
//! - [`StaticTagStorage`] (`static`, mainline Linux): every block carved out at
//!   boot and never lent; reservations only count references.
//! - [`DynamicTagStorage`] (`dynamic`, the 2023-24 RFC): blocks are CMA memory
//!   until tagged frames need them.
//! - [`XnuTagStorage`] (`xnu`, Apple XNU) and [`GoogleTagStorage`]
//!   (`google`, Google's carve-out proposal): storage is *held* ahead of
//!   tagged allocations, which the kernel serves only from frames whose
//!   storage is held ([`TaggedPlacement::HeldStorage`]); blocks may be held
//!   with no tagged frame ([`BlockState::Held`]) and go back only when the
//!   design's refill decides.
//!
//! [`TagStorage`] has generic `async` methods, so it is not object-safe; the
//! policy is chosen at the edge as a [`Manager`] enum that delegates to the
//! chosen type. Adding a policy (Google's three free lists, XNU's cell state
//! machine, a cleancache backend) is: a new type implementing [`TagStorage`]
//! in its own module, one [`Manager`] variant (the compiler then points at
//! every delegating `match`), a `Design` value in `platform`, and
//! its arm where the kernel maps that value to a manager (`kernel::mem`).
//!
//! Units and geometry come from the architecture crate: frames are
//! [`mte::Pfn`], buddy orders [`mte::Order`], blocks [`TagBlock`], and every
//! frame/block conversion goes through the machine's [`mte::Geometry`]. This
//! crate depends on nothing but `mte`.
//!
//! # Block states (`dynamic`)
//!
//! ```text
//!                 reserve(): claim ok                  every claim of the call ok
//!   +--------+ ------------------------> +---------+ --------------------------> +----------------+
//!   |  Lent  |                           | Claimed |                             | Reserved(refs) |
//!   +--------+ <------------------------ +---------+                             +----------------+
//!     ^  |  ^   rollback: a later block         reserve()/release(): refs +- frames  |  ^   |
//!     |  |  |   of the same call failed                                  (refs >= 1) +--+   |
//!     |  +--+ claim fails: transient -> retry (at most `claim_attempts`),                   |
//!     |       permanent -> no retry; the whole call fails and rolls back                    |
//!     +---------------------------------------------------------------------------------------+
//!                        release(): refs reach 0 -> given back at once
//! ```
//!
//! - `Lent`: in the page allocator as CMA memory, free or holding movable data
//!   (the manager cannot tell which and does not need to).
//! - `Claimed`: taken by the running `reserve()`; exists only as a move-only
//!   token inside that call, so nothing else can observe it.
//! - `Reserved(refs)`: holds the tags of `refs >= 1` live tagged frames. The
//!   zero page's block never leaves this state after [`TagStorage::activate`].
//!
//! Under `static` every block is `CarvedOut(refs)` with `refs >= 0` for ever;
//! under `none` there are no blocks.
//!
//! # Locking
//!
//! Linux serialises `reserve_tag_storage()` with the `tag_blocks_lock` mutex
//! (it sleeps in `alloc_contig_range()`), while `free_tag_storage()` only takes
//! the xarray's IRQ-safe spinlock and may run during a reservation. Here every
//! method takes `&mut self` for the whole call, `reserve()` across its claims;
//! the kernel wraps the manager in one simulated sleeping mutex, so a release
//! waits for a running reservation. See [`DynamicTagStorage`] for how a
//! reservation is staged under that lock and why the outcome is the RFC's.
//!
//! The futures carry no `Send` bound: the simulated kernel polls them on one
//! host thread.

mod carveout;
pub mod check;
mod cleancache;
pub mod counters;
pub mod design;
mod dynamic;
mod google;
mod held;
mod none;
mod refs;
pub mod rfc_v2;
mod rfc_v3;
pub mod source;
#[cfg(test)]
mod testutil;
mod xnu;

pub use carveout::StaticTagStorage;
pub use check::{Misuse, OnMisuse, TagStoreViolation};
pub use counters::TagStoreCounters;
pub use design::{Design, OnReserveFailure, ReserveAt, Rules, Storage, TaggedPlacement};
pub use dynamic::DynamicTagStorage;
pub use google::GoogleTagStorage;
pub use none::NoTagStorage;
pub use refs::RangeError;
pub use source::{BlockSource, ClaimCause, ClaimError};
pub use xnu::XnuTagStorage;

use core::fmt;
use core::future::Future;
use core::num::{NonZeroU32, NonZeroU64};
use core::ops::Range;
use mte::Pfn;
use mte::{Geometry, Order, PfnRange, TagBlock};
use std::collections::{BTreeMap, btree_map};
use thiserror::Error;

/// How many times a block claim is tried before a transient failure makes the
/// reservation fail.
///
/// Linux: `reserve_tag_storage()` calls `cma_alloc_range(cma, block,
/// block_size_pages, 3, gfp)`, which tries `alloc_contig_range()` up to 3
/// times and retries only on `-EBUSY`.
pub const CLAIM_ATTEMPTS: u32 = 3;

/// Settings shared by the policies.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct TagStoreConfig {
    /// Claims tried per block before giving up on a transient failure
    /// (`dynamic` only).
    pub claim_attempts: NonZeroU32,
    /// What a contract violation by the caller does.
    pub on_misuse: OnMisuse,
    /// Count blocks per allocation as RFC v2 did (`crate::rfc_v2`): the
    /// design `rfc-v2`, or `mistake=v2-block-count` on `dynamic`.
    pub v2_block_count: bool,
    /// `google-fallback=`: what design `google` does when no tagged frame is
    /// free (`google` only).
    pub google_fallback: GoogleFallback,
}

/// `google-fallback=`: design `google`'s last resort when a tagged request
/// finds no free frame in a held block even after converting free groups
/// (`docs/designs.md`, "google").
#[derive(Clone, Copy, PartialEq, Eq, Debug, Default)]
pub enum GoogleFallback {
    /// The spec (`mte-dynamic-carveout/spec.md`, the default): compaction
    /// of the untagged list into Tag Blocks runs asynchronously (a kernel
    /// task), while the request is served from any page whose tag page's
    /// data is moved away.
    #[default]
    Spec,
    /// The prototype (pcc/linux `mte-dynamic`): no fallback; the request
    /// fails as out of memory (the kernel's slow path, then OOM), even
    /// while the untagged list has free pages.
    None,
}

impl GoogleFallback {
    /// The `google-fallback=` value.
    pub fn name(self) -> &'static str {
        match self {
            Self::Spec => "spec",
            Self::None => "none",
        }
    }

    /// The value a `google-fallback=` value names.
    pub fn by_name(name: &str) -> Option<Self> {
        [Self::Spec, Self::None]
            .into_iter()
            .find(|f| f.name() == name)
    }
}

impl Default for TagStoreConfig {
    fn default() -> Self {
        Self {
            claim_attempts: NonZeroU32::new(CLAIM_ATTEMPTS).expect("CLAIM_ATTEMPTS is not 0"),
            on_misuse: OnMisuse::default(),
            v2_block_count: false,
            google_fallback: GoogleFallback::Spec,
        }
    }
}

/// Why tag storage could not be reserved. The manager is exactly as before
/// the call.
#[derive(Clone, Copy, PartialEq, Eq, Debug, Error)]
pub enum ReserveError {
    /// Policy `none`: the machine has no tag storage.
    #[error("the machine has no tag storage")]
    NoTagStorage,
    /// The frames cannot have tag storage (Linux: `WARN_ONCE(ret, "Missing
    /// tag storage block for pfn 0x%lx")`, `-EINVAL`).
    #[error(transparent)]
    Range(#[from] RangeError),
    /// Some of the frames were reserved already (recorded as a [`Misuse`]).
    #[error("{0}")]
    Misuse(Misuse),
    /// A block could not be claimed; every block claimed by the call was given
    /// back and every reference it added dropped.
    #[error("cannot claim tag storage {block:?} after {attempts} attempt(s): {source}")]
    Claim {
        block: TagBlock,
        attempts: u32,
        #[source]
        source: ClaimError,
    },
}

impl ReserveError {
    /// Whether the same reservation may succeed later: the last claim failed
    /// transiently (the fault path retries, then migrates the frame instead).
    pub fn is_transient(&self) -> bool {
        matches!(self, Self::Claim { source, .. } if source.is_transient())
    }
}

/// The state of one tag block.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum BlockState {
    /// `dynamic`: in the page allocator as CMA memory.
    Lent,
    /// `dynamic`: reserved, holding the tags of `refs` live tagged frames.
    Reserved { refs: NonZeroU64 },
    /// `static`: carved out at boot for ever, holding the tags of `refs` live
    /// tagged frames.
    CarvedOut { refs: u64 },
    /// `xnu`, `google`: taken out of the page allocator and held as tag
    /// storage, holding the tags of `refs` live tagged frames, possibly none
    /// (these designs keep storage for tags after its last tagged frame is
    /// freed: an ACTIVE cell, a FREE Tag Block).
    Held { refs: u64 },
}

impl BlockState {
    /// Live tagged frames whose tags the block holds.
    pub fn refs(self) -> u64 {
        match self {
            Self::Lent => 0,
            Self::Reserved { refs } => refs.get(),
            Self::CarvedOut { refs } | Self::Held { refs } => refs,
        }
    }

    /// Whether the block holds tags rather than data.
    pub fn is_reserved(self) -> bool {
        !matches!(self, Self::Lent)
    }
}

/// The reserved blocks of a manager, in block order.
#[derive(Clone, Debug)]
pub struct ReservedBlocks<'a>(ReservedInner<'a>);

#[derive(Clone, Debug)]
enum ReservedInner<'a> {
    All(Range<u64>),
    Sparse(btree_map::Keys<'a, TagBlock, NonZeroU64>),
    Listed(std::vec::IntoIter<TagBlock>),
}

impl<'a> ReservedBlocks<'a> {
    fn all(blocks: u64) -> Self {
        Self(ReservedInner::All(0..blocks))
    }

    fn sparse(keys: btree_map::Keys<'a, TagBlock, NonZeroU64>) -> Self {
        Self(ReservedInner::Sparse(keys))
    }

    /// `blocks` must be in block order.
    pub(crate) fn listed(blocks: Vec<TagBlock>) -> Self {
        Self(ReservedInner::Listed(blocks.into_iter()))
    }
}

impl Iterator for ReservedBlocks<'_> {
    type Item = TagBlock;

    fn next(&mut self) -> Option<TagBlock> {
        match &mut self.0 {
            ReservedInner::All(range) => range.next().map(TagBlock::new),
            ReservedInner::Sparse(keys) => keys.next().copied(),
            ReservedInner::Listed(blocks) => blocks.next(),
        }
    }
}

/// A future the simulated kernel polls on one host thread.
pub type LocalBoxFuture<'a, T> = core::pin::Pin<Box<dyn Future<Output = T> + 'a>>;

/// A tag storage manager: the state of one design on one machine.
///
/// Orders are buddy orders: `reserve(pfn, order)` covers the `2^order` data
/// frames from `pfn`, which must be naturally aligned. The trait is object
/// safe: the kernel holds a [`Manager`] (`Box<dyn TagStorage>`) built from
/// the [`Design`] its platform names, and asks the design's [`Rules`]
/// whatever it must decide, never which design it runs.
pub trait TagStorage: fmt::Debug {
    /// Starts managing tag storage. The zero page's tags were zeroed at boot
    /// and it counts as tagged, so its block is reserved with one reference
    /// that is never dropped. Call once, before the first tagged allocation.
    ///
    /// Linux: `reserve_tag_storage(ZERO_PAGE(0), 0, GFP_HIGHUSER)` in
    /// `mte_enable_tag_storage()` (RFC v3 patch 25), whose result Linux
    /// ignores; here a failure is returned and nothing is recorded.
    fn activate<'a>(
        &'a mut self,
        zero_page: Pfn,
        source: &'a mut dyn BlockSource,
    ) -> LocalBoxFuture<'a, Result<(), ReserveError>>;

    /// Reserves the tag storage of `2^order` frames from `pfn`: blocks already
    /// reserved gain references, the others are claimed from `source`. All or
    /// nothing. Linux: `reserve_tag_storage()`.
    fn reserve<'a>(
        &'a mut self,
        pfn: Pfn,
        order: Order,
        source: &'a mut dyn BlockSource,
    ) -> LocalBoxFuture<'a, Result<(), ReserveError>>;

    /// Drops the references of `2^order` frames from `pfn`; a block left with
    /// none is given back to `source` at once. Releasing what was not reserved
    /// is a [`Misuse`]. Linux: `free_tag_storage()`.
    fn release(&mut self, pfn: Pfn, order: Order, source: &mut dyn BlockSource);

    /// Whether the tags of data frame `pfn` have storage reserved.
    fn is_reserved(&self, pfn: Pfn) -> bool;

    /// The state of a block of this machine (panics with `BUG:` for a block
    /// the machine does not have).
    fn block_state(&self, block: TagBlock) -> BlockState;

    /// Live tagged frames whose tags `block` holds.
    fn block_refcount(&self, block: TagBlock) -> u64 {
        self.block_state(block).refs()
    }

    /// The references of `block` that stand for live tagged frames it
    /// covers: the design's own form of invariant 3, which the kernel checks
    /// against the frames it finds tagged (`docs/model.md` §4). The RFC's
    /// bookkeeping has no other references.
    fn frame_refcount(&self, block: TagBlock) -> u64 {
        self.block_refcount(block)
    }

    /// The blocks reserved now, in block order.
    fn reserved_blocks(&self) -> ReservedBlocks<'_>;

    /// Blocks of [`Self::reserved_blocks`], in block order, that include
    /// every block whose [`Self::block_refcount`] is not 0: what the
    /// kernel's incremental checker compares with its recount where every
    /// block is reserved (`static`: its blocks at 0 need no look-up). The
    /// full checker walks every reserved block, and the kernel
    /// cross-checks both.
    fn counted_blocks(&self) -> ReservedBlocks<'_> {
        self.reserved_blocks()
    }

    /// The zero page, once [`Self::activate`] succeeded.
    fn zero_page(&self) -> Option<Pfn>;

    fn counters(&self) -> TagStoreCounters;

    /// Entries of the manager's per-block bookkeeping now (the kernel's
    /// estimate of the host memory a machine uses).
    fn bookkeeping_entries(&self) -> u64;

    /// Every broken invariant; empty when all hold.
    fn check(&self) -> Vec<TagStoreViolation>;

    /// [`Self::check`] recounting everything from scratch, for managers
    /// whose `check` compares against counts kept as the state changes
    /// (`rfc-v2`'s extra references): the same violations. The kernel's
    /// full checker calls this one, so its periodic cross-check against
    /// the incremental checker also compares the two.
    fn check_full(&self) -> Vec<TagStoreViolation> {
        self.check()
    }

    /// Invariant 3 in this design's own form (`docs/model.md` §4), given
    /// what the kernel recounted: for each block, the allocated frames
    /// marked `TagStorageReserved` whose tags it holds. The kernel checks
    /// the part every design shares (a reserved block's count equals its
    /// frames; no such frame outside a reserved block); this adds the rest.
    /// The RFC designs need nothing more: a `Reserved` block has at least
    /// one reference by construction.
    fn check_coverage(&self, frames: &BTreeMap<TagBlock, u64>) -> Vec<TagStoreViolation> {
        let _ = frames;
        Vec::new()
    }

    /// Where a tagged allocation of `order` should come from, best first,
    /// when the design's rules say [`TaggedPlacement::HeldStorage`]: runs
    /// of data frames whose tag storage the design holds (it may ask
    /// `source` which frames are free). Empty for the others.
    fn tagged_placement(&self, order: Order, source: &dyn BlockSource) -> Vec<PfnRange> {
        let _ = (order, source);
        Vec::new()
    }

    /// Tries `fits` on the runs of [`Self::tagged_placement`] in its order
    /// and returns the first frame it gives: how the kernel places a
    /// tagged allocation in held storage. `fits` allocates inside a run or
    /// returns `None` changing nothing, so a design may compute its runs
    /// lazily here, asking `source` about a run only once the runs before
    /// it did not fit (Google's FREE Tag Blocks): the answer is the same
    /// as trying every run of `tagged_placement`.
    fn place_tagged(
        &self,
        order: Order,
        source: &dyn BlockSource,
        fits: &mut dyn FnMut(PfnRange) -> Option<Pfn>,
    ) -> Option<Pfn> {
        self.tagged_placement(order, source)
            .into_iter()
            .find_map(fits)
    }

    /// No frame of [`Self::tagged_placement`] was free for a tagged
    /// allocation of `order`: make storage taggable the design's way
    /// (XNU: inline activation, then the refill thread's work; Google:
    /// convert free groups of the untagged list back into Tag Blocks).
    /// Returns whether anything changed, so that the kernel asks
    /// [`Self::tagged_placement`] again. May claim and release blocks
    /// through `source`.
    fn refill<'a>(
        &'a mut self,
        order: Order,
        source: &'a mut dyn BlockSource,
    ) -> LocalBoxFuture<'a, bool> {
        let _ = (order, source);
        Box::pin(async { false })
    }

    /// Whether the design has a background thread that makes storage
    /// taggable (XNU's refill thread, `mteinfo_fill_continue`). The kernel
    /// then runs [`Self::refill_thread`] as a kernel task of its own on the
    /// scheduler, beside every command (`docs/designs.md`), and a tagged
    /// allocation that [`Self::refill`] could not serve wakes it and waits.
    fn has_refill_thread(&self) -> bool {
        false
    }

    /// One pass of the design's background thread, woken by the kernel:
    /// `wanted` is the largest order a tagged allocation waits for (`None`:
    /// woken for housekeeping only, XNU's drain). Returns whether storage
    /// became taggable, so that waiters ask [`Self::tagged_placement`]
    /// again. May claim (and migrate) and release blocks through `source`.
    fn refill_thread<'a>(
        &'a mut self,
        wanted: Option<Order>,
        source: &'a mut dyn BlockSource,
    ) -> LocalBoxFuture<'a, bool> {
        let _ = (wanted, source);
        Box::pin(async { false })
    }

    /// Whether a tagged allocation that found no frame in held storage,
    /// even after [`Self::refill`] (and the thread), may take frames
    /// anywhere, the design then claiming their storage with
    /// [`Self::reserve`] (its last-resort fallback). `false`: the
    /// allocation fails as out of memory, and the kernel's slow path
    /// (direct reclaim, then the OOM outcome) takes over.
    fn falls_back_anywhere(&self) -> bool {
        true
    }

    /// Whether a tagged allocation that [`Self::refill`] could not serve
    /// waits for the thread's passes (XNU) or only wakes the thread and
    /// takes the fallback at once (Google's spec: compaction runs
    /// asynchronously while the request is served by moving a tag page's
    /// data). Only asked when [`Self::has_refill_thread`].
    fn waits_for_refill_thread(&self) -> bool {
        true
    }
}

/// The manager of a machine, of whichever design.
pub type Manager = Box<dyn TagStorage>;

/// Panics unless `block` is a block of the machine.
fn assert_block(block: TagBlock, geometry: &Geometry) {
    assert!(
        geometry.block(block.index()).is_some(),
        "BUG: {block:?} is not a block of this machine ({} blocks)",
        geometry.tag_blocks()
    );
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::{BASE, MockSource, block_on, machine, record};

    #[test]
    fn each_design_builds_its_manager() {
        let g = machine(64 << 10);
        let mut src = MockSource::default();
        let zero_page = Pfn::new(BASE);
        let frame = Pfn::new(BASE + 512);

        let o0 = Order::new(0);
        let mut none = Design::NONE.build(&g, record());
        assert_eq!(
            block_on(none.reserve(frame, o0, &mut src)),
            Err(ReserveError::NoTagStorage)
        );
        assert_eq!(none.counters(), TagStoreCounters::default());

        // Static: carved out, nothing claimed.
        let mut fixed = Design::STATIC.build(&g, record());
        block_on(fixed.activate(zero_page, &mut src)).unwrap();
        block_on(fixed.reserve(frame, o0, &mut src)).unwrap();
        assert!(src.log.is_empty());
        assert_eq!(fixed.reserved_blocks().count(), 32);
        assert_eq!(fixed.block_refcount(TagBlock::new(1)), 1);

        // Dynamic: 64 KiB blocks cover 512 frames each; the zero page takes
        // block 0, frame 512 block 1, each claimed once.
        let mut dynamic = Design::DYNAMIC.build(&g, record());
        block_on(dynamic.activate(zero_page, &mut src)).unwrap();
        block_on(dynamic.reserve(frame, o0, &mut src)).unwrap();
        assert_eq!(
            dynamic.reserved_blocks().collect::<Vec<_>>(),
            [TagBlock::new(0), TagBlock::new(1)]
        );
        assert_eq!(dynamic.zero_page(), Some(zero_page));
        dynamic.release(frame, o0, &mut src);
        assert_eq!(dynamic.block_state(TagBlock::new(1)), BlockState::Lent);
        assert_eq!(dynamic.counters().releases, 1);
        assert_eq!(src.claimed.len(), 1);
        assert!(dynamic.check().is_empty() && fixed.check().is_empty());
    }

    #[test]
    fn misuse_is_fatal_in_debug_builds() {
        // debug_assert!-style: panics where debug assertions are on.
        let expected = if cfg!(debug_assertions) {
            OnMisuse::Panic
        } else {
            OnMisuse::Record
        };
        assert_eq!(TagStoreConfig::default().on_misuse, expected);
        assert_eq!(TagStoreConfig::default().claim_attempts.get(), 3);
    }

    #[test]
    #[should_panic(expected = "BUG: TagBlock(32) is not a block of this machine")]
    fn unknown_blocks_are_a_bug() {
        let m = Design::DYNAMIC.build(&machine(64 << 10), record());
        m.block_state(TagBlock::new(32));
    }
}
