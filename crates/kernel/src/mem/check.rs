//! The invariant checker of the physical memory manager: the phys checker,
//! the tag storage manager's checker, and the rules that tie them together
//! (the list is in the [`crate::mem`] documentation), reported as structured
//! [`MemViolation`]s, empty when all hold.
//!
//! Cost: the phys checker's, plus one pass over the frames of materialised
//! sections, the frames of reserved blocks (`dynamic`), every block
//! (`static`: their reference counts are not listed sparsely) and the
//! pageblock table. Call it between kernel paths: it panics (`BUG:`) while a
//! task holds `tag_blocks_lock`.

use super::{Events, Memory, TagStorageState, tags};
use crate::phys::incremental::Rechecked;
use crate::phys::{FrameStatus, MigrateType, Order, PageFlag, PhysViolation};
use mte::Pfn;
use mte::TagBlock;
use std::collections::BTreeMap;
use tagstore::{Storage, TagStoreCounters, TagStoreViolation};
use uapi::Counter;

/// A tag write into tag storage that was not taken out of the allocator.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TagClobber {
    /// The data frame whose tags were written.
    pub data_pfn: Pfn,
    /// The tag storage frame written.
    pub tag_pfn: Pfn,
    /// What the tag storage frame was at the time (free, or data).
    pub status: Option<FrameStatus>,
}

/// The tag writes into unreserved tag storage: the first, and how many.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct ClobberLog {
    first: Option<TagClobber>,
    count: u64,
}

impl ClobberLog {
    pub(crate) fn note(&mut self, clobber: TagClobber) {
        self.first.get_or_insert(clobber);
        self.count += 1;
    }
}

/// What is wrong with the zero page (docs/model.md §2, §4.5).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ZeroPageFault {
    /// Not an allocated unmovable order-0 block.
    NotAllocated { status: Option<FrameStatus> },
    /// Not marked as the kernel's own page.
    NotKernel,
    /// Not marked tagged (its tags are zeroed at boot and it counts as
    /// tagged), or marked under `none`.
    Tagged { expected: bool },
    /// Its tag storage reservation differs from the policy's (reserved for
    /// ever under `dynamic` and `static`, never under `none`).
    TagStorageReserved { expected: bool },
    /// A byte of its contents is not 0.
    DataNotZero { offset: usize },
    /// A tag is not 0.
    TagNotZero { granule: usize },
}

/// One broken invariant of the physical memory manager.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum MemViolation {
    Phys(PhysViolation),
    TagStore(TagStoreViolation),
    /// A frame of a reserved block that is not claimed (`dynamic`).
    ReservedBlockFrame {
        block: TagBlock,
        pfn: Pfn,
        status: Option<FrameStatus>,
    },
    /// A reserved block without its claim token, with a token for other
    /// frames, or a token for a block that is not reserved.
    ClaimToken {
        block: TagBlock,
        reserved: bool,
    },
    /// Frames claimed outside the reserved blocks (or under a policy that
    /// never claims).
    ClaimedOutsideReservedBlocks {
        claimed: u64,
        in_reserved_blocks: u64,
    },
    /// A block's reference count differs from the frames marked
    /// TagStorageReserved whose tags it holds.
    BlockRefcount {
        block: TagBlock,
        refs: u64,
        frames: u64,
    },
    /// A tag storage frame with an MTE flag (Tagged is reported by the phys
    /// checker as `TaggedTagStorage`).
    TagStorageFrameFlag {
        pfn: Pfn,
        flag: PageFlag,
    },
    /// A frame marked tagged whose tag storage is not reserved (docs/model.md
    /// §4.1; under `none` any tagged frame).
    TaggedWithoutReservation {
        pfn: Pfn,
    },
    /// A frame marked TagStorageReserved that no tag storage covers.
    ReservedWithoutTagStorage {
        pfn: Pfn,
    },
    /// An MTE lock held between kernel paths (tags half initialised).
    MteLockHeld {
        pfn: Pfn,
    },
    /// A counter that differs from a recount.
    Counter {
        counter: Counter,
        kept: u64,
        recounted: u64,
    },
    /// The lock-free copy of the manager's counters is stale.
    TagCountersStale {
        kept: TagStoreCounters,
        actual: TagStoreCounters,
    },
    ZeroPage {
        pfn: Pfn,
        fault: ZeroPageFault,
    },
    /// A pageblock still isolated between kernel paths.
    IsolatedPageblock {
        pageblock: Pfn,
    },
    /// A cleancache copy in a frame of a reserved block (docs/model.md §4.3:
    /// a reserved block's pages hold no data; the copy would be overwritten
    /// by tags, or overwrite them).
    CleancacheInReservedBlock {
        block: TagBlock,
        pfn: Pfn,
    },
    /// The cleancache's maps disagree, or a copy lies outside tag storage.
    CleancacheBookkeeping {
        pfn: Pfn,
    },
    /// Tags were written into tag storage holding no reserved block.
    TagsWrittenToUnreservedStorage {
        first: TagClobber,
        count: u64,
    },
}

impl Memory {
    /// Every broken invariant; empty when all hold.
    pub fn check(&self) -> Vec<MemViolation> {
        self.check_with(None)
    }

    /// [`Self::check`] by the incremental checker (`super::incremental`):
    /// the same violations (in another order), recomputing per-frame
    /// verdicts only for frames that may have changed since its last call.
    pub fn check_incremental(&self) -> Vec<MemViolation> {
        let mut cache = self.incremental.borrow_mut();
        self.check_with(Some(&mut cache))
    }

    /// The frames whose metadata may have changed between the last two
    /// calls of [`Self::check_incremental`] (sorted, no duplicates), or
    /// `None` for "any frame" (before the first call, after the dirty log
    /// overflowed, or when the allocator's state was reset): what the
    /// kernel layer's incremental checker recomputes its per-frame
    /// verdicts for, right after calling [`Self::check_incremental`]
    /// (the contract is `crate::phys::dirty`'s).
    pub(crate) fn rechecked_frames(&self) -> Option<Vec<Pfn>> {
        match &self.incremental.borrow().last_rechecked {
            Some(crate::phys::incremental::Rechecked::Frames(pfns)) => Some(pfns.clone()),
            Some(crate::phys::incremental::Rechecked::All) | None => None,
        }
    }

    fn check_with(
        &self,
        cache: Option<&mut super::incremental::MemCheckCache>,
    ) -> Vec<MemViolation> {
        let mut cache = cache;
        // What changed since the last check (the logs are taken), and the
        // contents' verdict, which takes its log.
        let (dirty, contents_out) = match cache.as_mut() {
            Some(cache) => {
                let mut phys = self.phys.borrow_mut();
                let dirty = (phys.alloc.frames.take_dirty(), phys.alloc.chunks.take_log());
                let contents = phys.contents.check_incremental(&mut cache.contents);
                (Some(dirty), contents)
            }
            None => (None, Vec::new()),
        };
        let Self {
            policy,
            rules: _,
            reserve_fast_path: _,
            geometry,
            sched: _,
            phys,
            tag_storage,
            tag_counters,
            mte_tagged: _,
            zero_page,
            events,
            clobbers,
            cleancache,
            trace: _,
            incremental: _,
            refill: _,
        } = self;
        let phys = phys.borrow();
        let state = tag_storage.borrow_unlocked();
        let TagStorageState { manager, claimed } = &*state;
        let mut out: Vec<MemViolation>;
        // Frame flags, and the recounts they feed.
        let mut frame_out = Vec::new();
        let mut tagged = 0u64;
        // The full checker's recount, or the incremental checker's kept one.
        let mut recounted_refs: BTreeMap<TagBlock, u64> = BTreeMap::new();
        let refs: &BTreeMap<TagBlock, u64>;
        // The incremental checker's block verdicts, with the frames it
        // rechecked (`None`: the full checker).
        let mut blocks_cache: Option<(&mut super::incremental::BlockCache, &Rechecked)> = None;
        match (cache, dirty) {
            (Some(cache), Some(dirty)) => {
                let (dirty, chunk_log) = dirty;
                let (phys_out, rechecked) =
                    phys.alloc
                        .check_incremental(&mut cache.frames, dirty, chunk_log);
                out = phys_out.into_iter().map(MemViolation::Phys).collect();
                out.extend(contents_out.into_iter().map(MemViolation::Phys));
                let super::incremental::MemCheckCache {
                    flags,
                    blocks,
                    last_rechecked,
                    ..
                } = cache;
                flags.update(self, &phys, &rechecked);
                (tagged, refs) = flags.report(&mut frame_out);
                // Kept for `rechecked_frames`, and read from there.
                let rechecked = last_rechecked.insert(rechecked);
                blocks_cache = Some((blocks, rechecked));
            }
            _ => {
                out = phys.check().into_iter().map(MemViolation::Phys).collect();
                for (start, section) in phys.alloc.frames.sections() {
                    for (i, meta) in section.iter().enumerate() {
                        if meta.flags.is_empty() {
                            continue;
                        }
                        let pfn = start + i as u64;
                        self.check_frame_flags(
                            pfn,
                            meta.flags,
                            &mut frame_out,
                            &mut tagged,
                            &mut recounted_refs,
                        );
                    }
                }
                refs = &recounted_refs;
            }
        }
        // The full checker recounts the manager's own tables too (see
        // `TagStorage::check_full`).
        let manager_out = match blocks_cache {
            Some(_) => manager.check(),
            None => manager.check_full(),
        };
        out.extend(manager_out.into_iter().map(MemViolation::TagStore));
        if tag_counters.get() != manager.counters() {
            out.push(MemViolation::TagCountersStale {
                kept: tag_counters.get(),
                actual: manager.counters(),
            });
        }
        out.extend(frame_out);
        let Events {
            tag_storage_migrations: _,
            migrate_pages: _,
            pages_tagged,
            tag_storage_fast_path: _,
            tag_storage_contig: _,
        } = events.get();
        if pages_tagged != tagged {
            out.push(MemViolation::Counter {
                counter: Counter::PagesTagged,
                kept: pages_tagged,
                recounted: tagged,
            });
        }

        // Blocks: reference counts, frames and tokens.
        let claimed_pages = phys.stats().claimed_pages;
        // What the blocks must look like follows from what the design does
        // with tag storage frames.
        let storage = policy.rules().storage;
        match storage {
            Storage::Lent => {
                let reserved: Vec<TagBlock> = manager.reserved_blocks().collect();
                match blocks_cache {
                    None => {
                        for &block in &reserved {
                            self.reserved_block_frames(&phys, block, &mut out);
                        }
                    }
                    Some((cache, rechecked)) => {
                        cache.update(
                            &reserved,
                            rechecked,
                            |block, v| self.reserved_block_frames(&phys, block, v),
                            |block| geometry.block_pfns(block),
                        );
                        cache.report(&mut out);
                    }
                }
                // Both lists are in block order: a walk, not a search per
                // block (a search where the order breaks).
                let mut tokens = claimed.iter().peekable();
                let mut last = None;
                for &block in &reserved {
                    let pfns = geometry.block_pfns(block);
                    let token = match last.is_some_and(|l| l >= block) {
                        true => claimed.get(&block),
                        false => {
                            while tokens.next_if(|(b, _)| **b < block).is_some() {}
                            tokens.next_if(|(b, _)| **b == block).map(|(_, c)| c)
                        }
                    };
                    last = Some(block);
                    if token.map(|c| c.range()) != Some(pfns) {
                        out.push(MemViolation::ClaimToken {
                            block,
                            reserved: true,
                        });
                    }
                }
                for &block in claimed.keys() {
                    if !manager.block_state(block).is_reserved() {
                        out.push(MemViolation::ClaimToken {
                            block,
                            reserved: false,
                        });
                    }
                }
                let in_reserved_blocks = reserved.len() as u64 * geometry.block_pages();
                if claimed_pages != in_reserved_blocks {
                    out.push(MemViolation::ClaimedOutsideReservedBlocks {
                        claimed: claimed_pages,
                        in_reserved_blocks,
                    });
                }
                check_refcounts(
                    reserved.iter().copied(),
                    refs,
                    |b| manager.frame_refcount(b),
                    &mut out,
                );
                // Frames marked reserved whose block is not.
                for (&block, &frames) in refs {
                    if !manager.block_state(block).is_reserved() {
                        out.push(MemViolation::BlockRefcount {
                            block,
                            refs: 0,
                            frames,
                        });
                    }
                }
            }
            Storage::CarvedOut => {
                // Every block is carved out (the phys checker holds their
                // frames to CarvedOut); only the counts need comparing. A
                // block can differ only where one side counts it: the
                // incremental checker walks those alone, in block order as
                // the full checker, so both report the same list.
                let kept = |b| manager.block_refcount(b);
                match blocks_cache {
                    None => check_refcounts(manager.reserved_blocks(), refs, kept, &mut out),
                    Some(_) => {
                        let mut blocks: Vec<TagBlock> = manager.counted_blocks().collect();
                        blocks.extend(refs.keys().copied());
                        blocks.sort_unstable();
                        blocks.dedup();
                        check_refcounts(blocks.into_iter(), refs, kept, &mut out);
                    }
                }
            }
            Storage::Cleancache => {
                // Frames carved out (never the allocator's); reserved blocks
                // count their frames as under `dynamic` and hold no copy.
                let reserved: Vec<TagBlock> = manager.reserved_blocks().collect();
                check_refcounts(
                    reserved.iter().copied(),
                    refs,
                    |b| manager.block_refcount(b),
                    &mut out,
                );
                for (&block, &frames) in refs {
                    if manager.block_refcount(block) == 0 {
                        out.push(MemViolation::BlockRefcount {
                            block,
                            refs: 0,
                            frames,
                        });
                    }
                }
            }
            Storage::None => {}
        }
        // Invariant 3 in the design's own form (XNU: an ACTIVE cell may
        // cover no tagged frame, tagged frames lie only in ACTIVE cells).
        out.extend(
            manager
                .check_coverage(refs)
                .into_iter()
                .map(MemViolation::TagStore),
        );
        if storage != Storage::Lent {
            for &block in claimed.keys() {
                out.push(MemViolation::ClaimToken {
                    block,
                    reserved: false,
                });
            }
            if claimed_pages != 0 {
                out.push(MemViolation::ClaimedOutsideReservedBlocks {
                    claimed: claimed_pages,
                    in_reserved_blocks: 0,
                });
            }
        }

        // The cleancache (empty under every other design).
        let cache = cleancache.borrow();
        if !cache.consistent() {
            out.push(MemViolation::CleancacheBookkeeping { pfn: *zero_page });
        }
        for pfn in cache.frames() {
            match geometry.tag_storage().find(|r| r.contains(pfn)) {
                None => out.push(MemViolation::CleancacheBookkeeping { pfn }),
                Some(_) => {
                    let block = geometry
                        .blocks()
                        .find(|b| geometry.block_pfns(*b).contains(pfn))
                        .expect("BUG: a tag storage frame outside every block");
                    if manager.block_state(block).is_reserved() {
                        out.push(MemViolation::CleancacheInReservedBlock { block, pfn });
                    }
                }
            }
        }
        drop(cache);

        self.check_zero_page(&phys, *zero_page, &mut out);

        let pb_order = phys.alloc.geometry().pageblock_order().get();
        for (i, pb) in phys.alloc.pageblocks.iter().enumerate() {
            if pb.isolated {
                out.push(MemViolation::IsolatedPageblock {
                    pageblock: Pfn::new((phys.alloc.first_pageblock + i as u64) << pb_order),
                });
            }
        }
        let log = clobbers.get();
        if let Some(first) = log.first {
            out.push(MemViolation::TagsWrittenToUnreservedStorage {
                first,
                count: log.count,
            });
        }
        out
    }

    /// The frames of reserved block `block` that are not claimed (`Lent`
    /// designs). Reads the frames' states alone while they are claimed.
    fn reserved_block_frames(
        &self,
        phys: &crate::phys::PhysMem,
        block: TagBlock,
        out: &mut Vec<MemViolation>,
    ) {
        for pfn in self.geometry.block_pfns(block).iter() {
            let status = phys.alloc.frame_status(pfn);
            if status != Some(FrameStatus::Claimed) {
                out.push(MemViolation::ReservedBlockFrame { block, pfn, status });
            }
        }
    }

    /// The verdict of one frame's flags (non-empty): violations, and what
    /// it adds to the count of tagged pages and to its block's references.
    /// Reads only `flags` and the static geometry and policy.
    pub(super) fn check_frame_flags(
        &self,
        pfn: Pfn,
        flags: crate::phys::FrameFlags,
        out: &mut Vec<MemViolation>,
        tagged: &mut u64,
        refs: &mut BTreeMap<TagBlock, u64>,
    ) {
        let (is_tagged, block) = self.frame_flags_verdict(pfn, flags, out);
        *tagged += u64::from(is_tagged);
        if let Some(block) = block {
            *refs.entry(block).or_default() += 1;
        }
    }

    /// [`Self::check_frame_flags`] with its contributions returned: whether
    /// the frame counts as tagged, and the block it holds a reference on
    /// (a frame holds at most one).
    pub(super) fn frame_flags_verdict(
        &self,
        pfn: Pfn,
        flags: crate::phys::FrameFlags,
        out: &mut Vec<MemViolation>,
    ) -> (bool, Option<TagBlock>) {
        let geometry = &self.geometry;
        let tagged = flags.contains(PageFlag::Tagged);
        if geometry.is_tag_storage(pfn) {
            for flag in [PageFlag::TagStorageReserved, PageFlag::MteLock] {
                if flags.contains(flag) {
                    out.push(MemViolation::TagStorageFrameFlag { pfn, flag });
                }
            }
            return (tagged, None);
        }
        if flags.contains(PageFlag::MteLock) && !tagged {
            out.push(MemViolation::MteLockHeld { pfn });
        }
        let reserved = flags.contains(PageFlag::TagStorageReserved);
        if tagged && !reserved {
            out.push(MemViolation::TaggedWithoutReservation { pfn });
        }
        if !reserved {
            return (tagged, None);
        }
        match geometry.block_of(pfn) {
            Some(block) if self.policy.rules().mte() => (tagged, Some(block)),
            _ => {
                out.push(MemViolation::ReservedWithoutTagStorage { pfn });
                (tagged, None)
            }
        }
    }

    fn check_zero_page(&self, phys: &crate::phys::PhysMem, pfn: Pfn, out: &mut Vec<MemViolation>) {
        let mut fault = |fault| out.push(MemViolation::ZeroPage { pfn, fault });
        let status = phys.alloc.frame_status(pfn);
        let expected = Some(FrameStatus::Allocated {
            head: pfn,
            order: Order::new(0),
            migratetype: MigrateType::Unmovable,
        });
        if status != expected {
            fault(ZeroPageFault::NotAllocated { status });
            return;
        }
        let meta = phys
            .alloc
            .frame(pfn)
            .expect("BUG: allocated frame without metadata");
        let mte = self.policy.rules().mte();
        if !meta.flags.contains(PageFlag::Kernel) {
            fault(ZeroPageFault::NotKernel);
        }
        if meta.flags.contains(PageFlag::Tagged) != mte {
            fault(ZeroPageFault::Tagged { expected: mte });
        }
        if meta.flags.contains(PageFlag::TagStorageReserved) != mte {
            fault(ZeroPageFault::TagStorageReserved { expected: mte });
        }
        if let Some(offset) = phys
            .contents
            .page_bytes(pfn)
            .and_then(|bytes| bytes.first_nonzero())
        {
            fault(ZeroPageFault::DataNotZero { offset });
        }
        if let Some(bytes) = tags::page_tag_bytes_in(phys, &self.geometry, pfn)
            && let Some(byte) = bytes.iter().position(|&b| b != 0)
        {
            // Two tags per byte, the even granule in the low nibble.
            let granule = 2 * byte + usize::from(bytes[byte] & 0xf == 0);
            fault(ZeroPageFault::TagNotZero { granule });
        }
    }
}

/// Compares the manager's count of each block of `blocks` (each once) with
/// the recount.
fn check_refcounts(
    blocks: impl Iterator<Item = TagBlock>,
    refs: &BTreeMap<TagBlock, u64>,
    kept: impl Fn(TagBlock) -> u64,
    out: &mut Vec<MemViolation>,
) {
    // `blocks` come in block order, as `refs`: a walk, not a search per
    // block (a search where the order breaks).
    let mut counted = refs.iter().peekable();
    let mut last = None;
    for block in blocks {
        let frames = match last.is_some_and(|l| l >= block) {
            true => refs.get(&block).copied(),
            false => {
                while counted.next_if(|(b, _)| **b < block).is_some() {}
                counted.next_if(|(b, _)| **b == block).map(|(_, n)| *n)
            }
        }
        .unwrap_or(0);
        last = Some(block);
        let refs = kept(block);
        if refs != frames {
            out.push(MemViolation::BlockRefcount {
                block,
                refs,
                frames,
            });
        }
    }
}
