//! The incremental form of the memory layer's per-frame checks (frame
//! flags: tagged pages, block references, flags tag storage must not
//! carry): recomputed for the frames the allocator's incremental checker
//! rechecked ([`crate::phys::incremental`]), which include every frame whose
//! metadata was handed out mutably since the last check (the flags are
//! part of the metadata; see [`crate::phys::dirty`] for the contract).
//! The recounts are kept as sums of per-frame contributions, and the
//! records densely, one vector per section (a rechecked frame costs an
//! index, not a map search).

use std::collections::BTreeMap;

use mte::{Pfn, TagBlock};

use super::{MemViolation, Memory};
use crate::phys::PhysMem;
use crate::phys::incremental::{FrameCheckCache, Rechecked};

/// What one frame's flags contributed at the last check, its violations
/// aside: kept for every frame of a section, in one vector per section,
/// so that a rechecked frame costs an index rather than an ordered-map
/// search (the default is a frame with no flag).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct FlagRecord {
    tagged: bool,
    /// The block the frame holds a reference on.
    block: Option<TagBlock>,
}

/// The per-frame flag verdicts kept between checks.
#[derive(Clone, Debug, Default)]
pub(crate) struct FlagCache {
    /// Per section (by its first frame) that has had a record other than
    /// the default; a frame of another section has the default record.
    records: BTreeMap<Pfn, Vec<FlagRecord>>,
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
    /// The frames the last incremental check recomputed (`None` before
    /// the first): every frame whose metadata may have changed since the
    /// check before it, for the kernel layer's own per-frame verdicts
    /// ([`Memory::rechecked_frames`]).
    pub(crate) last_rechecked: Option<Rechecked>,
}

impl FlagCache {
    /// Recomputes the verdicts of `rechecked`.
    pub(crate) fn update(&mut self, mem: &Memory, phys: &PhysMem, rechecked: Rechecked) {
        let pages = phys.alloc.frames.section_pages();
        match rechecked {
            Rechecked::All => {
                *self = FlagCache::default();
                for (start, section) in phys.alloc.frames.sections() {
                    for (i, meta) in section.iter().enumerate() {
                        if !meta.flags.is_empty() {
                            self.recheck(mem, start + i as u64, pages, meta.flags);
                        }
                    }
                }
            }
            Rechecked::Frames(pfns) => {
                for pfn in pfns {
                    let flags = phys
                        .alloc
                        .frames
                        .block(pfn, 1)
                        .map(|m| m[0].flags)
                        .unwrap_or_default();
                    self.recheck(mem, pfn, pages, flags);
                }
            }
        }
    }

    /// Replaces the record of `pfn` (of a section of `pages` frames) by
    /// the verdict of `flags`.
    fn recheck(&mut self, mem: &Memory, pfn: Pfn, pages: u64, flags: crate::phys::FrameFlags) {
        let mut violations = Vec::new();
        let record = match flags.is_empty() {
            true => FlagRecord::default(),
            false => {
                let (tagged, block) = mem.frame_flags_verdict(pfn, flags, &mut violations);
                FlagRecord { tagged, block }
            }
        };
        let start = Pfn::new(pfn.as_u64() & !(pages - 1));
        if record != FlagRecord::default() || self.records.contains_key(&start) {
            let records = self
                .records
                .entry(start)
                .or_insert_with(|| vec![FlagRecord::default(); pages as usize]);
            let old = core::mem::replace(&mut records[(pfn - start) as usize], record);
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

    /// The violations and recounts of every frame, as the full loop gives.
    pub(crate) fn report(
        &self,
        out: &mut Vec<MemViolation>,
        tagged: &mut u64,
        refs: &mut BTreeMap<TagBlock, u64>,
    ) {
        for violations in self.violations.values() {
            out.extend(violations.iter().cloned());
        }
        *tagged = self.tagged;
        refs.clone_from(&self.refs);
    }
}
