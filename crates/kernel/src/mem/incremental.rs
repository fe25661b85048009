//! The incremental form of the memory layer's per-frame checks (frame
//! flags: tagged pages, block references, flags tag storage must not
//! carry): recomputed for the frames the allocator's incremental checker
//! rechecked ([`crate::phys::incremental`]), which include every frame whose
//! metadata was handed out mutably since the last check (the flags are
//! part of the metadata; see [`crate::phys::dirty`] for the contract).
//! The recounts are kept as sums of per-frame contributions.

use std::collections::{BTreeMap, BTreeSet};

use mte::{Pfn, TagBlock};

use super::{MemViolation, Memory};
use crate::phys::PhysMem;
use crate::phys::incremental::{FrameCheckCache, Rechecked};

/// What one frame's flags contributed at the last check.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
struct FlagRecord {
    tagged: u64,
    refs: BTreeMap<TagBlock, u64>,
    violations: Vec<MemViolation>,
}

/// The per-frame flag verdicts kept between checks.
#[derive(Clone, Debug, Default)]
pub(crate) struct FlagCache {
    records: BTreeMap<Pfn, FlagRecord>,
    with_violations: BTreeSet<Pfn>,
    tagged: u64,
    refs: BTreeMap<TagBlock, u64>,
}

/// Everything the incremental checker of [`Memory`] keeps.
#[derive(Clone, Debug, Default)]
pub(crate) struct MemCheckCache {
    pub(crate) frames: FrameCheckCache,
    pub(crate) flags: FlagCache,
    /// The page contents' check, by the contents' generation.
    pub(crate) contents: Option<(u64, Vec<crate::phys::PhysViolation>)>,
}

impl MemCheckCache {
    /// [`crate::phys::PhysContents::check`], reused while the contents'
    /// index and slots are unchanged.
    pub(crate) fn contents_check(
        &mut self,
        contents: &crate::phys::PhysContents,
    ) -> Vec<crate::phys::PhysViolation> {
        match &self.contents {
            Some((generation, v)) if *generation == contents.generation() => v.clone(),
            _ => {
                let v = contents.check();
                self.contents = Some((contents.generation(), v.clone()));
                v
            }
        }
    }
}

impl FlagCache {
    /// Recomputes the verdicts of `rechecked`.
    pub(crate) fn update(&mut self, mem: &Memory, phys: &PhysMem, rechecked: Rechecked) {
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
                for pfn in pfns {
                    let flags = phys
                        .alloc
                        .frames
                        .block(pfn, 1)
                        .map(|m| m[0].flags)
                        .unwrap_or_default();
                    self.recheck(mem, pfn, flags);
                }
            }
        }
    }

    fn recheck(&mut self, mem: &Memory, pfn: Pfn, flags: crate::phys::FrameFlags) {
        let mut record = FlagRecord::default();
        if !flags.is_empty() {
            mem.check_frame_flags(
                pfn,
                flags,
                &mut record.violations,
                &mut record.tagged,
                &mut record.refs,
            );
            // Flags unchanged (most rechecked frames changed a count): the
            // kept record stands.
            if self.records.get(&pfn) == Some(&record) {
                return;
            }
        }
        if let Some(old) = self.records.remove(&pfn) {
            self.with_violations.remove(&pfn);
            self.tagged -= old.tagged;
            for (block, n) in old.refs {
                let left = self.refs.get_mut(&block).expect("BUG: incremental refs");
                *left -= n;
                if *left == 0 {
                    self.refs.remove(&block);
                }
            }
        }
        if flags.is_empty() {
            return;
        }
        self.tagged += record.tagged;
        for (block, n) in &record.refs {
            *self.refs.entry(*block).or_default() += n;
        }
        if !record.violations.is_empty() {
            self.with_violations.insert(pfn);
        }
        self.records.insert(pfn, record);
    }

    /// The violations and recounts of every frame, as the full loop gives.
    pub(crate) fn report(
        &self,
        out: &mut Vec<MemViolation>,
        tagged: &mut u64,
        refs: &mut BTreeMap<TagBlock, u64>,
    ) {
        for pfn in &self.with_violations {
            out.extend(self.records[pfn].violations.iter().cloned());
        }
        *tagged = self.tagged;
        refs.clone_from(&self.refs);
    }
}
