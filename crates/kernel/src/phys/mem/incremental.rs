//! The incremental form of [`PhysContents::check`]: the verdicts of the
//! slots and of the index entries recomputed only where a buffer was added
//! or dropped since the last check, from the contents' change log
//! ([`ContentsLog`], noted by `page_slot_mut` and `zero_page`, the only
//! paths that change the index or the slots).
//!
//! A slot's verdict reads the slot and the index entry of its buffer's
//! frame; an index entry's verdict reads the entry and the slot it names.
//! So besides the logged slots and entries, a slot whose verdict was empty
//! changes only when its frame's entry was logged (and that entry named
//! it), and an entry whose verdict was empty only when the slot it named
//! was logged (and held its frame's buffer): those are rechecked, with
//! every place whose verdict was not empty (broken states only).
//! The free slots are read in full at every check (a short list of slot
//! numbers, no page's data), and the count of used slots is kept as a sum.
//! The result equals the full check's as a multiset (the order differs);
//! the tests below and `crate::machine::tests::incremental` compare both.

use std::collections::BTreeMap;

use mte::Pfn;

use super::PhysContents;
use crate::phys::check::PhysViolation;
use crate::phys::records::FrameRecords;

/// Entries the log keeps before it collapses to "everything changed".
const MAX_CHANGES: usize = 4096;

/// The buffers added or dropped since the incremental checker last looked:
/// `(slot, frame)` pairs, or "anything" (`overflow`, also the state of a
/// fresh log: the first check is a full one).
#[derive(Clone, Debug)]
pub(crate) struct ContentsLog {
    overflow: bool,
    changes: Vec<(u32, Pfn)>,
}

impl Default for ContentsLog {
    fn default() -> Self {
        ContentsLog {
            overflow: true,
            changes: Vec::new(),
        }
    }
}

impl ContentsLog {
    /// Records that `slot` and `pfn`'s index entry changed.
    #[inline]
    pub(super) fn note(&mut self, slot: u32, pfn: Pfn) {
        if self.overflow {
            return;
        }
        if self.changes.len() == MAX_CHANGES {
            self.overflow = true;
            self.changes = Vec::new();
            return;
        }
        self.changes.push((slot, pfn));
    }
}

/// Where a violation of the contents was found, for replacing it when that
/// place is rechecked.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Place {
    Slot(u32),
    Index(Pfn),
}

/// What the incremental check of the contents keeps between checks.
#[derive(Clone, Debug, Default)]
pub(crate) struct ContentsCheckCache {
    /// The frame of each slot's buffer (`None`: the slot was empty).
    claim_of: Vec<Option<Pfn>>,
    /// Each frame's index entry (`slot + 1`, 0 for none).
    entries: FrameRecords<u32>,
    /// The slots holding a buffer.
    used: u64,
    /// The places whose verdict is not empty, with it.
    violations: BTreeMap<Place, Vec<PhysViolation>>,
}

impl ContentsCheckCache {
    fn recheck_slot(&mut self, contents: &PhysContents, slot: u32) {
        let mut out = Vec::new();
        let claim = contents.slot_verdict(slot, &mut out);
        let i = slot as usize;
        if self.claim_of.len() <= i {
            self.claim_of.resize(i + 1, None);
        }
        let old = core::mem::replace(&mut self.claim_of[i], claim);
        self.used = self.used + u64::from(claim.is_some()) - u64::from(old.is_some());
        self.keep(Place::Slot(slot), out);
    }

    fn recheck_index(&mut self, contents: &PhysContents, pfn: Pfn) {
        let mut out = Vec::new();
        let entry = contents.index.get(pfn).copied().unwrap_or(0);
        if entry != 0 {
            contents.index_verdict(pfn, entry, &mut out);
        }
        self.entries.set(pfn, entry);
        self.keep(Place::Index(pfn), out);
    }

    fn keep(&mut self, place: Place, out: Vec<PhysViolation>) {
        if out.is_empty() {
            if !self.violations.is_empty() {
                self.violations.remove(&place);
            }
        } else {
            self.violations.insert(place, out);
        }
    }
}

impl PhysContents {
    /// [`Self::check`], recomputing the verdicts of the slots and index
    /// entries the change log names, those that agreed with a logged one
    /// at the last check, and those whose verdict was not empty (see the
    /// module doc); takes the log.
    pub(crate) fn check_incremental(
        &mut self,
        cache: &mut ContentsCheckCache,
    ) -> Vec<PhysViolation> {
        let log = core::mem::replace(
            &mut self.changes,
            ContentsLog {
                overflow: false,
                changes: Vec::new(),
            },
        );
        if log.overflow {
            *cache = ContentsCheckCache::default();
            for slot in 0..self.slots.len() {
                cache.recheck_slot(self, slot as u32);
            }
            let entries: Vec<Pfn> = self
                .index
                .materialised()
                .flat_map(|(start, section)| {
                    section
                        .iter()
                        .enumerate()
                        .filter(|(_, e)| **e != 0)
                        .map(move |(offset, _)| start + offset as u64)
                })
                .collect();
            for pfn in entries {
                cache.recheck_index(self, pfn);
            }
        } else if !log.changes.is_empty() {
            let mut slots: Vec<u32> = Vec::new();
            let mut pfns: Vec<Pfn> = Vec::new();
            // A slot's verdict reads the index entry of its buffer's frame,
            // an entry's the slot it names: what agreed with a logged slot
            // or entry at the last check is looked at again, and whatever
            // disagreed then.
            for &(slot, pfn) in &log.changes {
                slots.push(slot);
                pfns.push(pfn);
                if let Some(&Some(claim)) = cache.claim_of.get(slot as usize) {
                    pfns.push(claim);
                }
                if let Some(named) = cache.entries.get(pfn).checked_sub(1) {
                    slots.push(named);
                }
            }
            for place in cache.violations.keys() {
                match *place {
                    Place::Slot(slot) => slots.push(slot),
                    Place::Index(pfn) => pfns.push(pfn),
                }
            }
            slots.sort_unstable();
            slots.dedup();
            pfns.sort_unstable();
            pfns.dedup();
            for slot in slots {
                cache.recheck_slot(self, slot);
            }
            for pfn in pfns {
                cache.recheck_index(self, pfn);
            }
        }
        let mut out: Vec<PhysViolation> = cache.violations.values().flatten().cloned().collect();
        self.check_free_slots(cache.used, &mut out);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::phys::mem::tests::contents;

    fn sorted(mut v: Vec<PhysViolation>) -> Vec<String> {
        let mut out: Vec<String> = v.drain(..).map(|x| format!("{x:?}")).collect();
        out.sort();
        out
    }

    /// Both checks on `m`, required equal; the verdict.
    fn both(m: &mut PhysContents, cache: &mut ContentsCheckCache, what: &str) -> Vec<String> {
        let full = sorted(m.check());
        let incremental = sorted(m.check_incremental(cache));
        assert_eq!(incremental, full, "{what}");
        full
    }

    /// Random buffers added and dropped, then each kind of broken index,
    /// slot or free slot planted behind the accessors' back: the
    /// incremental check says what the full one says after every change.
    #[test]
    fn the_incremental_check_equals_the_full_one() {
        let mut m = contents();
        let mut cache = ContentsCheckCache::default();
        assert!(both(&mut m, &mut cache, "start").is_empty());
        let mut seed = 7u64;
        for step in 0..400u64 {
            seed = seed
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            let pfn = Pfn::new((seed >> 33) % 32);
            match (seed >> 20) % 3 {
                0 => m.zero_page(pfn).unwrap(),
                1 => m.write_u8(pfn.addr(12), step as u8 | 1).unwrap(),
                _ => m.copy_page(Pfn::new((seed >> 40) % 32), pfn).unwrap(),
            }
            assert!(both(&mut m, &mut cache, &format!("step {step}")).is_empty());
        }
        assert!(m.pages_with_data() > 0);
        type Bug = fn(&mut PhysContents);
        let bugs: [(&str, Bug, &str); 5] = [
            (
                "an index entry naming an empty slot",
                |m| {
                    let pfn = (0..32).map(Pfn::new).find(|&p| !m.has_buffer(p)).unwrap();
                    *m.index.get_or_materialise(pfn, |_, _| {}) = 1;
                    m.changes.note(0, pfn);
                },
                "ContentsSlot",
            ),
            (
                "a slot whose index entry was cleared",
                |m| {
                    let pfn = (0..32).map(Pfn::new).find(|&p| m.has_buffer(p)).unwrap();
                    let slot = m.page_slot(pfn).unwrap().index;
                    *m.index.get_mut(pfn).unwrap() = 0;
                    m.changes.note(slot, pfn);
                },
                "ContentsSlot",
            ),
            (
                "a used slot on the free list",
                |m| {
                    let pfn = (0..32).map(Pfn::new).find(|&p| m.has_buffer(p)).unwrap();
                    let slot = m.page_slot(pfn).unwrap().index;
                    m.free_slots.push(slot);
                },
                "ContentsFreeSlot",
            ),
            (
                "a buffer dropped without its count",
                |m| {
                    let pfn = (0..32).map(Pfn::new).find(|&p| m.has_buffer(p)).unwrap();
                    let slot = m.page_slot(pfn).unwrap().index;
                    m.slots[slot as usize] = None;
                    m.free_slots.push(slot);
                    m.changes.note(slot, pfn);
                },
                "ContentsCount",
            ),
            (
                "a buffer moved to another frame",
                |m| {
                    let pfn = (0..32).map(Pfn::new).find(|&p| m.has_buffer(p)).unwrap();
                    let slot = m.page_slot(pfn).unwrap().index;
                    m.slots[slot as usize].as_mut().unwrap().pfn = Pfn::new(100);
                    m.changes.note(slot, Pfn::new(100));
                },
                "ContentsOutsideMemory",
            ),
        ];
        for (what, bug, expected) in bugs {
            let mut broken = m.clone();
            let mut cache = cache.clone();
            bug(&mut broken);
            let verdict = both(&mut broken, &mut cache, what);
            assert!(
                verdict.iter().any(|v| v.contains(expected)),
                "{what}: {verdict:#?}"
            );
        }
    }

    /// A change the log misses is not seen by the incremental check (which
    /// is why every path that changes a buffer must log it): the full
    /// check, run beside it every 1024th check, is what finds such a miss.
    #[test]
    fn a_missed_log_entry_is_what_separates_the_checks() {
        let mut m = contents();
        let mut cache = ContentsCheckCache::default();
        m.write_u8(Pfn::new(3).addr(12), 1).unwrap();
        assert!(both(&mut m, &mut cache, "start").is_empty());
        *m.index.get_mut(Pfn::new(3)).unwrap() = 0;
        assert!(!m.check().is_empty());
        assert!(
            !m.check_incremental(&mut cache)
                .iter()
                .any(|v| matches!(v, PhysViolation::ContentsSlot { .. })),
            "an unlogged change is invisible to the incremental check"
        );
    }
}
