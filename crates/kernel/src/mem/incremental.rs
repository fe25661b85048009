//! The incremental form of the memory layer's per-frame checks (frame
//! flags: tagged pages, block references, flags tag storage must not
//! carry): recomputed for the frames the allocator's incremental checker
//! rechecked ([`crate::phys::incremental`]), which include every frame whose
//! metadata was handed out mutably since the last check (the flags are
//! part of the metadata; see [`crate::phys::dirty`] for the contract).
//! The recounts are kept as sums of per-frame contributions, and the
//! records densely ([`crate::phys::records`]: a rechecked frame costs an
//! index, not a map search).
//!
//! Also kept: the reserved blocks' frame verdicts under the designs that
//! lend their tag storage ([`BlockCache`]: a block is looked at again when
//! newly reserved, when one of its frames was rechecked, or while its
//! verdict is not empty), and the page contents' verdicts
//! ([`crate::phys::PhysContents::check_incremental`], from the contents'
//! own change log).

use std::collections::BTreeMap;

use mte::{Pfn, TagBlock};

use super::{MemViolation, Memory};
use crate::phys::PhysMem;
use crate::phys::incremental::{FrameCheckCache, Rechecked};
use crate::phys::records::FrameRecords;

/// What one frame's flags contributed at the last check, its violations
/// aside: kept for every frame of a section, in one vector per section,
/// so that a rechecked frame costs an index rather than an ordered-map
/// search (the default is a frame with no flag).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct FlagRecord {
    /// The flags the verdict was computed from: it reads nothing else of
    /// the frame's (and the static geometry and policy), so a frame
    /// rechecked with the same flags keeps its record and violations.
    flags: crate::phys::FrameFlags,
    tagged: bool,
    /// The block the frame holds a reference on.
    block: Option<TagBlock>,
}

/// The per-frame flag verdicts kept between checks.
#[derive(Clone, Debug, Default)]
pub(crate) struct FlagCache {
    /// Each frame's record.
    records: FrameRecords<FlagRecord>,
    /// The frames whose verdict is not empty, with it.
    violations: BTreeMap<Pfn, Vec<MemViolation>>,
    tagged: u64,
    refs: BTreeMap<TagBlock, u64>,
}

/// Everything the incremental checker of [`Memory`] keeps.
#[derive(Clone, Debug, Default)]
pub(crate) struct MemCheckCache {
    pub(crate) frames: FrameCheckCache,
    pub(crate) flags: FlagCache,
    /// The page contents' check ([`crate::phys::PhysContents::check_incremental`]).
    pub(crate) contents: crate::phys::ContentsCheckCache,
    /// The reserved blocks' frame verdicts (`Lent` designs).
    pub(crate) blocks: BlockCache,
    /// The frames the last incremental check recomputed (`None` before
    /// the first): every frame whose metadata may have changed since the
    /// check before it, for the kernel layer's own per-frame verdicts
    /// ([`Memory::rechecked_frames`]).
    pub(crate) last_rechecked: Option<Rechecked>,
}

impl FlagCache {
    /// Recomputes the verdicts of `rechecked`.
    pub(crate) fn update(&mut self, mem: &Memory, phys: &PhysMem, rechecked: &Rechecked) {
        match rechecked {
            Rechecked::All => {
                *self = FlagCache::default();
                for (start, section) in phys.alloc.frames.sections() {
                    for (i, meta) in section.iter().enumerate() {
                        if !meta.flags.is_empty() {
                            self.recheck(mem, start + i as u64, meta.flags);
                        }
                    }
                }
            }
            Rechecked::Frames(pfns) => {
                // The frames come in order, runs of a block: their
                // section is looked up once per run.
                let frames = &phys.alloc.frames;
                let pages = frames.section_pages();
                let mut section: Option<(Pfn, Option<&[crate::phys::FrameMeta]>)> = None;
                for &pfn in pfns {
                    let (start, metas) = match section {
                        Some((start, metas)) if start <= pfn && pfn - start < pages => {
                            (start, metas)
                        }
                        _ => {
                            let start = frames.section_start(pfn);
                            let metas = frames.block(start, pages);
                            section = Some((start, metas));
                            (start, metas)
                        }
                    };
                    let flags = metas
                        .map(|m| m[(pfn - start) as usize].flags)
                        .unwrap_or_default();
                    self.recheck(mem, pfn, flags);
                }
            }
        }
    }

    /// Replaces the record of `pfn` by the verdict of `flags`.
    fn recheck(&mut self, mem: &Memory, pfn: Pfn, flags: crate::phys::FrameFlags) {
        if self.records.get(pfn).flags == flags {
            return;
        }
        let mut violations = Vec::new();
        let record = match flags.is_empty() {
            true => FlagRecord::default(),
            false => {
                let (tagged, block) = mem.frame_flags_verdict(pfn, flags, &mut violations);
                FlagRecord {
                    flags,
                    tagged,
                    block,
                }
            }
        };
        let old = self.records.set(pfn, record);
        if old != record {
            self.tagged -= u64::from(old.tagged);
            self.tagged += u64::from(record.tagged);
            if let Some(block) = old.block {
                let left = self.refs.get_mut(&block).expect("BUG: incremental refs");
                *left -= 1;
                if *left == 0 {
                    self.refs.remove(&block);
                }
            }
            if let Some(block) = record.block {
                *self.refs.entry(block).or_default() += 1;
            }
        }
        match violations.is_empty() {
            true => {
                if !self.violations.is_empty() {
                    self.violations.remove(&pfn);
                }
            }
            false => {
                self.violations.insert(pfn, violations);
            }
        }
    }

    /// The violations and recounts of every frame, as the full loop gives:
    /// the count of tagged frames, and each block's references (kept here,
    /// read in place rather than copied at every check).
    pub(crate) fn report(&self, out: &mut Vec<MemViolation>) -> (u64, &BTreeMap<TagBlock, u64>) {
        for violations in self.violations.values() {
            out.extend(violations.iter().cloned());
        }
        (self.tagged, &self.refs)
    }
}

/// The verdicts of the reserved blocks' frames (`Lent` designs: each frame
/// of a reserved block is claimed), kept per block. A claimed frame's
/// status reads its metadata alone, so a block whose verdict was empty is
/// looked at again only when newly reserved or when one of its frames was
/// rechecked (its metadata may have changed); a block with a violation is
/// looked at at every check (an unclaimed frame's status reads the free
/// lists too).
#[derive(Clone, Debug, Default)]
pub(crate) struct BlockCache {
    /// The blocks reserved at the last check, in block order.
    reserved: Vec<TagBlock>,
    /// The blocks whose verdict is not empty, with it.
    violations: BTreeMap<TagBlock, Vec<MemViolation>>,
}

impl BlockCache {
    /// Recomputes, with `verdict`, the verdicts of the blocks of `reserved`
    /// (in block order) that may have changed given the frames rechecked.
    pub(crate) fn update(
        &mut self,
        reserved: &[TagBlock],
        rechecked: &Rechecked,
        mut verdict: impl FnMut(TagBlock, &mut Vec<MemViolation>),
        block_pfns: impl Fn(TagBlock) -> mte::PfnRange,
    ) {
        let mut old = core::mem::take(&mut self.violations);
        let mut before = self.reserved.iter().peekable();
        for &block in reserved {
            while before.next_if(|b| **b < block).is_some() {}
            let was_reserved = before.next_if(|b| **b == block).is_some();
            let had_violations = old.remove(&block);
            let touched = match rechecked {
                Rechecked::All => true,
                Rechecked::Frames(pfns) => {
                    let range = block_pfns(block);
                    let i = pfns.partition_point(|p| *p < range.start);
                    pfns.get(i).is_some_and(|p| *p < range.end())
                }
            };
            if !was_reserved || had_violations.is_some() || touched {
                let mut out = Vec::new();
                verdict(block, &mut out);
                if !out.is_empty() {
                    // (A block listed twice keeps its violations twice.)
                    self.violations.entry(block).or_default().extend(out);
                }
            }
        }
        self.reserved.clear();
        self.reserved.extend_from_slice(reserved);
    }

    /// The violations of every reserved block, as the full loop gives.
    pub(crate) fn report(&self, out: &mut Vec<MemViolation>) {
        out.extend(self.violations.values().flatten().cloned());
    }
}
