//! The per-CPU software TLB of the direct access path (`direct`): one small
//! direct-mapped cache per CPU whose entries hold everything a load or store
//! through an established mapping needs, so that a hit touches no map of the
//! kernel: the address space (as an ASID: entries of every address space
//! share the cache), the virtual page, the frame, what the leaf allows, the
//! tagged bit, where the page's tags live (the tag storage frame and the
//! first tag byte in it), and two hints: the frame's data buffer itself (a
//! shared handle, [`crate::phys::PageBuf`]) and a copy of the page's tags.
//!
//! Contract: every entry translates as the page table does now. It holds
//! because entries are only made from a translation of the per-address-space
//! TLB or a walk (`access::translate_leaf`, which sets the access flag as
//! the full path does), and every place Linux flushes the TLB (the writes of
//! `Kernel::raw_set_pte`, block writes and splits in `huge`, reclaim's
//! `ptep_clear_flush_young()`) calls [`super::tlb::Tlb::invalidate`], which
//! broadcasts to every CPU here ([`CpuTlbs::invalidate`], as `TLBI ...IS`
//! reaches every CPU of the inner shareable domain). An address space that
//! is torn down drops its entries (`Tlb`'s `Drop`, Linux: the ASID is
//! retired); ids are never reused anyway.
//!
//! The buffer handle and the copy of the page's tags are hints, not part of
//! the translation: they are valid while the contents' epoch is the one the
//! entry records ([`crate::phys::PhysContents::epoch`], which moves on
//! every buffer added or dropped and every write but the direct path's own
//! stores to frames that are not tag storage); a hit in another epoch takes
//! both again first, so contents changes need no flush (they do not on
//! hardware either). With a valid epoch, a hit reads and writes the bytes
//! through the handle, with no borrow of physical memory and no lookup, and
//! the tag check reads the copy in the entry (256 bytes for a 4 KiB page:
//! one byte per granule, unpacked from tag storage's nibbles when taken),
//! with no load of tag storage at all. A stale
//! handle keeps its old buffer alive until the entry is taken again or
//! replaced: at most one page per entry.
//!
//! An entry is laid out for the hit path: the key (page, address space),
//! one byte of flags (readable, writable, tagged, frame in tag storage) so
//! that the permission and the tagged test are one bit test each, the
//! epoch, the buffer index and the tags. A free slot has a page number no
//! address has ([`EMPTY_VPN`]), so a lookup is a key compare with no
//! separate validity test.
//!
//! Two levels. The first is the fixed array of [`CPU_TLB_ENTRIES`] entries
//! in place; the second ([`SecondLevel`]) is a direct-mapped table on the
//! heap, empty (no allocation) until the first level evicts a live entry,
//! then doubling from [`SECOND_MIN`] up to [`SECOND_MAX`] entries whenever
//! an eviction from it finds it at least half full, so that its size
//! follows the pages a CPU keeps touching (when it grows, at most four
//! slots per live entry): a machine whose pages never meet in a slot of
//! the first level (most of explore's schedules) never allocates it, and
//! one whose few pages do (a page of a parent and of its child) allocates
//! 64 entries. The levels are exclusive: a page's entry is in one
//! or the other, never both; a fill goes to the first level and moves the
//! entry it replaces to the second, and a hit in the second is used where
//! it lies (no swap: a trace that walks more pages than the first level
//! holds would otherwise move two entries on every access). Every flush
//! covers both levels the same way: the page's slot in each, and, while
//! either level holds entries made from a block, every entry of the block
//! (the whole first level, the block's slots of the second);
//! [`CpuTlbs::layout_violations`] lets the checker verify the placement
//! and the counts.

use std::cell::Cell;
use std::rc::Rc;

use mte::Pfn;

use crate::mm::layout::{PAGE_SHIFT, PAGE_SIZE};
use crate::mm::{Access, Id, MmId};
use crate::phys::PageBuf;

/// Entries per CPU (direct mapped by virtual page number).
pub(crate) const CPU_TLB_ENTRIES: usize = 256;

/// The second level's size when first allocated (entries).
pub(crate) const SECOND_MIN: usize = 64;

/// The second level's largest size (entries; about 5.1 MiB per CPU of
/// 328-byte entries, the pages of a 64 MiB working set).
pub(crate) const SECOND_MAX: usize = 16_384;

/// The page number of a free slot (user pages are below `2^36`).
const EMPTY_VPN: u64 = u64::MAX;

/// Pages per 2 MiB block.
const BLOCK_PAGES_SHIFT: u32 = crate::mm::layout::PMD_SHIFT - PAGE_SHIFT;

/// [`CpuTlbEntry::flags`]: the leaf allows loads.
pub(crate) const READ: u8 = 1;
/// The leaf allows stores.
pub(crate) const WRITE: u8 = 2;
/// The page is mapped Normal Tagged.
pub(crate) const TAGGED: u8 = 4;
/// The frame lies in tag storage: a store to it may change some page's
/// tags, so it takes a new epoch.
pub(crate) const TAG_FRAME: u8 = 8;

/// Tag bytes of one page in tag storage (two tags a byte).
pub(crate) const PAGE_TAG_BYTES: usize = PAGE_GRANULES / 2;

/// Granules of one page: the entries of an entry's tag copy, one tag a
/// byte (unpacked, so that the hit's check is one byte load and compare).
pub(crate) const PAGE_GRANULES: usize = (PAGE_SIZE / mte::GRANULE_SIZE) as usize;

/// Bytes of a page.
pub(crate) const PAGE_BYTES: usize = PAGE_SIZE as usize;

/// A frame's data buffer as an entry holds it: its size in the type, so
/// that an in-page offset needs no bounds check on a hit. Equal when it is
/// the same buffer.
#[derive(Clone)]
pub(crate) struct FrameData(Rc<[Cell<u8>; PAGE_BYTES]>);

impl FrameData {
    /// `buf` as a page of [`PAGE_BYTES`]; `None` for a buffer of another
    /// size (the direct path serves machines of 4 KiB pages only).
    pub(crate) fn of(buf: PageBuf) -> Option<FrameData> {
        Rc::try_from(buf.into_cells()).ok().map(FrameData)
    }

    #[inline]
    pub(crate) fn bytes(&self) -> &[Cell<u8>; PAGE_BYTES] {
        &self.0
    }
}

impl PartialEq for FrameData {
    fn eq(&self, other: &FrameData) -> bool {
        Rc::ptr_eq(&self.0, &other.0)
    }
}

impl Eq for FrameData {}

impl std::fmt::Debug for FrameData {
    // Not the address: debug output stays the same from run to run.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("FrameData")
    }
}

/// Where the tags of a page live.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(crate) struct TagLoc {
    /// The tag storage frame.
    pub(crate) frame: Pfn,
    /// The page's first tag byte within that frame.
    pub(crate) offset: usize,
}

/// One cached translation and what an access through it needs (not `Copy`:
/// it holds a buffer handle).
#[derive(Clone, PartialEq, Eq, Debug)]
pub(crate) struct CpuTlbEntry {
    pub(crate) vpn: u64,
    pub(crate) mm: MmId,
    /// [`READ`], [`WRITE`], [`TAGGED`], [`TAG_FRAME`].
    pub(crate) flags: u8,
    /// The contents' epoch the buffer handle and tag copy belong to.
    pub(crate) epoch: u64,
    /// The frame's data buffer (a hint, see the module doc); `None`: the
    /// frame has none and reads as zeros.
    pub(crate) data: Option<FrameData>,
    /// The page's tags in that epoch (zeros without tag storage or without
    /// a buffer).
    pub(crate) tag_copy: [u8; PAGE_GRANULES],
    pub(crate) pfn: Pfn,
    pub(crate) access: Access,
    /// Mapped Normal Tagged.
    pub(crate) tagged: bool,
    /// Made from a 2 MiB block translation (a block flush drops it).
    pub(crate) huge: bool,
    /// `None`: no tag storage covers the frame (its tags read 0).
    pub(crate) tags: Option<TagLoc>,
}

impl CpuTlbEntry {
    /// An entry for page `vpn` of `mm` with no hints yet (epoch 0, which
    /// no contents has); `tag_frame`: `pfn` lies in tag storage.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn new(
        mm: MmId,
        vpn: u64,
        pfn: Pfn,
        access: Access,
        tagged: bool,
        huge: bool,
        tags: Option<TagLoc>,
        tag_frame: bool,
    ) -> CpuTlbEntry {
        let mut flags = 0;
        if matches!(access, Access::ReadOnly | Access::ReadWrite) {
            flags |= READ;
        }
        if access == Access::ReadWrite {
            flags |= WRITE;
        }
        if tagged {
            flags |= TAGGED;
        }
        if tag_frame {
            flags |= TAG_FRAME;
        }
        CpuTlbEntry {
            vpn,
            mm,
            flags,
            epoch: 0,
            data: None,
            tag_copy: [0; PAGE_GRANULES],
            pfn,
            access,
            tagged,
            huge,
            tags,
        }
    }

    fn empty() -> CpuTlbEntry {
        CpuTlbEntry::new(
            MmId::from_raw(0),
            EMPTY_VPN,
            Pfn::new(0),
            Access::None,
            false,
            false,
            None,
            false,
        )
    }

    fn is_empty(&self) -> bool {
        self.vpn == EMPTY_VPN
    }
}

/// The TLB of one CPU.
#[derive(Clone, Debug)]
pub(crate) struct CpuTlb {
    /// A fixed-size array in place: the slot of a page is its number's low
    /// byte, so no index is bounds checked and no pointer is followed.
    entries: [CpuTlbEntry; CPU_TLB_ENTRIES],
    /// Entries of the first level made from blocks: while 0, a flush looks
    /// at one slot of it only.
    huge: usize,
    /// The entries the first level evicted (see the module doc).
    second: SecondLevel,
}

impl CpuTlb {
    fn new() -> CpuTlb {
        CpuTlb {
            entries: std::array::from_fn(|_| CpuTlbEntry::empty()),
            huge: 0,
            second: SecondLevel::default(),
        }
    }

    #[inline]
    fn slot(vpn: u64) -> usize {
        (vpn % CPU_TLB_ENTRIES as u64) as usize
    }

    /// The entry of page `vpn` of `mm`, in either level.
    #[cfg(test)]
    pub(crate) fn lookup(&self, mm: MmId, vpn: u64) -> Option<CpuTlbEntry> {
        let e = &self.entries[Self::slot(vpn)];
        if e.vpn == vpn && e.mm == mm {
            return Some(e.clone());
        }
        self.second.lookup(mm, vpn).cloned()
    }

    /// Caches `entry` in the first level; the live entry of another page
    /// it replaces moves to the second level.
    pub(crate) fn fill(&mut self, entry: CpuTlbEntry) {
        // Exclusive levels, even for a fill that did not follow a miss.
        self.second.remove(entry.mm, entry.vpn);
        if entry.huge {
            self.huge += 1;
        }
        let key = (entry.vpn, entry.mm);
        let victim = std::mem::replace(&mut self.entries[Self::slot(entry.vpn)], entry);
        if victim.is_empty() {
            return;
        }
        if victim.huge {
            self.huge -= 1;
        }
        if (victim.vpn, victim.mm) != key {
            self.second.insert(victim);
        }
    }

    /// The entry of page `vpn` of `mm`, in either level, to use and to
    /// replace its buffer hints in place.
    #[inline]
    pub(crate) fn lookup_mut(&mut self, mm: MmId, vpn: u64) -> Option<&mut CpuTlbEntry> {
        let slot = Self::slot(vpn);
        let e = &self.entries[slot];
        if e.vpn == vpn && e.mm == mm {
            return Some(&mut self.entries[slot]);
        }
        self.second.lookup_mut(mm, vpn)
    }

    fn invalidate(&mut self, mm: MmId, vpn: u64) {
        let slot = &mut self.entries[Self::slot(vpn)];
        if slot.vpn == vpn && slot.mm == mm {
            if slot.huge {
                self.huge -= 1;
            }
            *slot = CpuTlbEntry::empty();
        }
        if self.huge > 0 {
            // A block flush drops every page entry made from that block.
            let block = vpn >> BLOCK_PAGES_SHIFT;
            let mut left = 0;
            for slot in self.entries.iter_mut() {
                if slot.huge && !slot.is_empty() {
                    if slot.mm == mm && slot.vpn >> BLOCK_PAGES_SHIFT == block {
                        *slot = CpuTlbEntry::empty();
                    } else {
                        left += 1;
                    }
                }
            }
            self.huge = left;
        }
        self.second.invalidate(mm, vpn);
    }

    fn flush_mm(&mut self, mm: MmId) {
        for slot in self.entries.iter_mut() {
            if !slot.is_empty() && slot.mm == mm {
                *slot = CpuTlbEntry::empty();
            }
        }
        self.huge = self
            .entries
            .iter()
            .filter(|e| !e.is_empty() && e.huge)
            .count();
        self.second.flush_mm(mm);
    }

    /// Live entries of the second level, and its slots.
    #[cfg(test)]
    pub(crate) fn second_level(&self) -> (usize, usize) {
        (self.second.live, self.second.entries.len())
    }

    /// Every live entry, first level then second.
    fn live(&self) -> impl Iterator<Item = &CpuTlbEntry> {
        self.entries
            .iter()
            .chain(&self.second.entries)
            .filter(|e| !e.is_empty())
    }

    /// What breaks the two levels' layout: an entry outside its slot, a
    /// page in both levels, a count that is not what the levels hold, a
    /// second level of a size it cannot grow to.
    fn layout_violations(&self) -> Vec<&'static str> {
        let mut out = Vec::new();
        // One pass over the first level (the checker runs after every
        // fuzzer step).
        let (mut misplaced, mut huge) = (false, 0);
        for (i, e) in self.entries.iter().enumerate() {
            if !e.is_empty() {
                misplaced |= Self::slot(e.vpn) != i;
                huge += usize::from(e.huge);
            }
        }
        if misplaced {
            out.push("a first-level entry outside its slot");
        }
        if huge != self.huge {
            out.push("the first level's count of block entries is wrong");
        }
        out.extend(self.second.layout_violations());
        let in_both = self.second.entries.iter().any(|e| {
            !e.is_empty() && {
                let first = &self.entries[Self::slot(e.vpn)];
                (first.vpn, first.mm) == (e.vpn, e.mm)
            }
        });
        if in_both {
            out.push("a page cached in both levels");
        }
        out
    }
}

/// The second level of one CPU's TLB: direct mapped by virtual page
/// number over a power-of-two number of slots, or no slots at all.
#[derive(Clone, Debug, Default)]
struct SecondLevel {
    /// Empty, or [`SECOND_MIN`] to [`SECOND_MAX`] slots (a power of two).
    entries: Vec<CpuTlbEntry>,
    /// Live entries.
    live: usize,
    /// Live entries made from blocks: while 0, a flush looks at one slot.
    huge: usize,
}

impl SecondLevel {
    #[inline]
    fn slot(&self, vpn: u64) -> usize {
        // `entries.len()` is 0 or a power of two; with no slots the mask
        // is all ones and every `get` misses.
        (vpn as usize) & self.entries.len().wrapping_sub(1)
    }

    fn lookup(&self, mm: MmId, vpn: u64) -> Option<&CpuTlbEntry> {
        self.entries
            .get(self.slot(vpn))
            .filter(|e| e.vpn == vpn && e.mm == mm)
    }

    #[inline]
    fn lookup_mut(&mut self, mm: MmId, vpn: u64) -> Option<&mut CpuTlbEntry> {
        let slot = self.slot(vpn);
        self.entries
            .get_mut(slot)
            .filter(|e| e.vpn == vpn && e.mm == mm)
    }

    /// Takes `entry` (live, of a page it does not hold), replacing the
    /// entry in its slot; an eviction from a table at least half full
    /// doubles it first (the working set outgrew it).
    fn insert(&mut self, entry: CpuTlbEntry) {
        if self.entries.is_empty() {
            self.entries = vec![CpuTlbEntry::empty(); SECOND_MIN];
        }
        let conflict = !self.entries[self.slot(entry.vpn)].is_empty();
        if conflict && self.live * 2 >= self.entries.len() && self.entries.len() < SECOND_MAX {
            self.grow();
        }
        let slot = self.slot(entry.vpn);
        self.drop_slot(slot);
        if entry.huge {
            self.huge += 1;
        }
        self.live += 1;
        self.entries[slot] = entry;
    }

    /// Twice the slots, every live entry moved to its slot there (two
    /// entries of one slot cannot meet in the larger table).
    fn grow(&mut self) {
        let doubled = vec![CpuTlbEntry::empty(); self.entries.len() * 2];
        let old = std::mem::replace(&mut self.entries, doubled);
        for e in old.into_iter().filter(|e| !e.is_empty()) {
            let slot = self.slot(e.vpn);
            self.entries[slot] = e;
        }
    }

    /// Empties slot `slot`, keeping the counts.
    fn drop_slot(&mut self, slot: usize) {
        let e = &mut self.entries[slot];
        if e.is_empty() {
            return;
        }
        self.live -= 1;
        if e.huge {
            self.huge -= 1;
        }
        *e = CpuTlbEntry::empty();
    }

    /// Drops the entry of page `vpn` of `mm` if held.
    fn remove(&mut self, mm: MmId, vpn: u64) {
        let slot = self.slot(vpn);
        if self
            .entries
            .get(slot)
            .is_some_and(|e| e.vpn == vpn && e.mm == mm)
        {
            self.drop_slot(slot);
        }
    }

    /// As the first level's: the page's entry, and while block entries
    /// are held, every entry of `mm` made from the block holding `vpn`
    /// (found in the block's slots, not by a scan of the table).
    fn invalidate(&mut self, mm: MmId, vpn: u64) {
        self.remove(mm, vpn);
        if self.huge == 0 {
            return;
        }
        let block = vpn >> BLOCK_PAGES_SHIFT;
        let first = block << BLOCK_PAGES_SHIFT;
        let pages = (1u64 << BLOCK_PAGES_SHIFT).min(self.entries.len() as u64);
        for page in first..first + pages {
            let slot = self.slot(page);
            let e = &self.entries[slot];
            if e.huge && !e.is_empty() && e.mm == mm && e.vpn >> BLOCK_PAGES_SHIFT == block {
                self.drop_slot(slot);
            }
        }
    }

    fn flush_mm(&mut self, mm: MmId) {
        for slot in 0..self.entries.len() {
            let e = &self.entries[slot];
            if !e.is_empty() && e.mm == mm {
                self.drop_slot(slot);
            }
        }
    }

    fn layout_violations(&self) -> Vec<&'static str> {
        let mut out = Vec::new();
        let len = self.entries.len();
        if len != 0 && !(len.is_power_of_two() && (SECOND_MIN..=SECOND_MAX).contains(&len)) {
            out.push("a second level of a size it cannot have");
            return out;
        }
        let (mut misplaced, mut live, mut huge) = (false, 0, 0);
        for (i, e) in self.entries.iter().enumerate() {
            if !e.is_empty() {
                misplaced |= self.slot(e.vpn) != i;
                live += 1;
                huge += usize::from(e.huge);
            }
        }
        if misplaced {
            out.push("a second-level entry outside its slot");
        }
        if (live, huge) != (self.live, self.huge) {
            out.push("the second level's counts are wrong");
        }
        out
    }
}

/// Every CPU's TLB: CPU 0's in place (the direct path outside parallel
/// blocks reaches its entries with no pointer to follow), the others' made
/// on first use of a CPU.
#[derive(Clone, Debug)]
pub(crate) struct CpuTlbs {
    cpu0: CpuTlb,
    others: Vec<CpuTlb>,
}

impl Default for CpuTlbs {
    fn default() -> CpuTlbs {
        CpuTlbs {
            cpu0: CpuTlb::new(),
            others: Vec::new(),
        }
    }
}

impl CpuTlbs {
    /// The TLB of CPU `cpu`.
    #[inline]
    pub(crate) fn cpu(&mut self, cpu: usize) -> &mut CpuTlb {
        match cpu.checked_sub(1) {
            None => &mut self.cpu0,
            Some(other) => {
                if other >= self.others.len() {
                    self.others.resize_with(other + 1, CpuTlb::new);
                }
                &mut self.others[other]
            }
        }
    }

    /// The entry of page `vpn` of `mm` in CPU `cpu`'s TLB (either level),
    /// to read only; `None` also for a CPU with no TLB yet.
    pub(crate) fn peek(&self, cpu: usize, mm: MmId, vpn: u64) -> Option<&CpuTlbEntry> {
        let tlb = match cpu.checked_sub(1) {
            None => &self.cpu0,
            Some(other) => self.others.get(other)?,
        };
        let e = &tlb.entries[CpuTlb::slot(vpn)];
        if e.vpn == vpn && e.mm == mm {
            return Some(e);
        }
        tlb.second.lookup(mm, vpn)
    }

    fn all(&mut self) -> impl Iterator<Item = &mut CpuTlb> {
        std::iter::once(&mut self.cpu0).chain(self.others.iter_mut())
    }

    /// Linux `flush_tlb_page()` broadcast: the entry of the page holding
    /// `va` in `mm` on every CPU, and every entry made from a block
    /// covering it.
    pub(crate) fn invalidate(&mut self, mm: MmId, va: u64) {
        let vpn = va >> PAGE_SHIFT;
        for cpu in self.all() {
            cpu.invalidate(mm, vpn);
        }
    }

    /// Every entry of `mm` on every CPU (its address space is gone).
    pub(crate) fn flush_mm(&mut self, mm: MmId) {
        for cpu in self.all() {
            cpu.flush_mm(mm);
        }
    }

    /// Every cached entry, CPU by CPU, both levels (for the checker).
    pub(crate) fn entries(&self) -> impl Iterator<Item = &CpuTlbEntry> + '_ {
        std::iter::once(&self.cpu0)
            .chain(&self.others)
            .flat_map(|c| c.live())
    }

    /// Every CPU whose levels break their layout, with what breaks (for
    /// the checker).
    pub(crate) fn layout_violations(&self) -> Vec<(usize, &'static str)> {
        std::iter::once(&self.cpu0)
            .chain(&self.others)
            .enumerate()
            .flat_map(|(cpu, c)| c.layout_violations().into_iter().map(move |w| (cpu, w)))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(mm: u64, vpn: u64, huge: bool) -> CpuTlbEntry {
        CpuTlbEntry::new(
            MmId::from_raw(mm),
            vpn,
            Pfn::new(vpn + 100),
            Access::ReadWrite,
            false,
            huge,
            None,
            false,
        )
    }

    #[test]
    fn a_flush_reaches_every_cpu_and_only_its_address_space() {
        let mut tlbs = CpuTlbs::default();
        let a = MmId::from_raw(1);
        let b = MmId::from_raw(2);
        tlbs.cpu(0).fill(entry(1, 7, false));
        tlbs.cpu(1).fill(entry(1, 7, false));
        tlbs.cpu(1).fill(entry(2, 8, false));
        tlbs.invalidate(a, 7 << PAGE_SHIFT);
        assert_eq!(tlbs.cpu(0).lookup(a, 7), None);
        assert_eq!(tlbs.cpu(1).lookup(a, 7), None);
        assert!(tlbs.cpu(1).lookup(b, 8).is_some());
        // Same page number, other address space: a miss.
        assert_eq!(tlbs.cpu(1).lookup(a, 8), None);
        tlbs.flush_mm(b);
        assert_eq!(tlbs.entries().count(), 0);
    }

    #[test]
    fn a_block_flush_drops_every_page_entry_made_from_the_block() {
        let mut tlbs = CpuTlbs::default();
        let a = MmId::from_raw(1);
        let block = 0x4000_0000u64 >> PAGE_SHIFT;
        for i in [0, 5, 511] {
            tlbs.cpu(0).fill(entry(1, block + i, true));
        }
        tlbs.cpu(0).fill(entry(1, block + 512, true));
        tlbs.cpu(0).fill(entry(1, block + 3, false));
        tlbs.invalidate(a, (block + 200) << PAGE_SHIFT);
        let mut left: Vec<u64> = tlbs.entries().map(|e| e.vpn - block).collect();
        left.sort_unstable();
        assert_eq!(left, vec![3, 512]);
        assert_eq!(tlbs.cpu(0).huge, 1);
    }

    #[test]
    fn evicted_entries_stay_reachable_in_the_second_level_until_flushed() {
        let mut tlbs = CpuTlbs::default();
        let a = MmId::from_raw(1);
        let b = MmId::from_raw(2);
        // Pages 0..2048 of `a` and 0..8 of `b`: the first level keeps 256.
        for vpn in 0..2048 {
            tlbs.cpu(1).fill(entry(1, vpn, false));
        }
        for vpn in 0..8 {
            tlbs.cpu(1).fill(entry(2, vpn, false));
        }
        let (live, slots) = tlbs.cpu(1).second_level();
        assert_eq!(live, 2048 + 8 - CPU_TLB_ENTRIES);
        assert!((2048..=4096).contains(&slots), "{slots} slots");
        assert_eq!(tlbs.cpu(0).second_level(), (0, 0), "CPU 0 untouched");
        for vpn in 0..2048 {
            assert!(tlbs.cpu(1).lookup_mut(a, vpn).is_some(), "page {vpn}");
        }
        assert!(tlbs.layout_violations().is_empty());
        // A page flush reaches either level; a teardown empties both.
        tlbs.invalidate(a, 5 << PAGE_SHIFT);
        tlbs.invalidate(a, 1000 << PAGE_SHIFT);
        assert_eq!(tlbs.cpu(1).lookup(a, 5), None);
        assert_eq!(tlbs.cpu(1).lookup(a, 1000), None);
        assert!(tlbs.cpu(1).lookup(b, 5).is_some());
        tlbs.flush_mm(a);
        assert_eq!(tlbs.entries().count(), 8);
        assert!(tlbs.layout_violations().is_empty());
    }

    #[test]
    fn a_block_flush_reaches_block_entries_in_the_second_level() {
        let mut tlbs = CpuTlbs::default();
        let a = MmId::from_raw(1);
        let block = 0x4000_0000u64 >> PAGE_SHIFT;
        // Two blocks' pages: the first level keeps 256, the rest moves on.
        for i in 0..1024 {
            tlbs.cpu(0).fill(entry(1, block + i, true));
        }
        assert!(tlbs.cpu(0).second_level().0 > 0);
        tlbs.invalidate(a, (block + 7) << PAGE_SHIFT);
        let mut left: Vec<u64> = tlbs.entries().map(|e| e.vpn - block).collect();
        left.sort_unstable();
        assert_eq!(left, (512..1024).collect::<Vec<_>>());
        assert!(tlbs.layout_violations().is_empty());
    }

    #[test]
    fn the_second_level_grows_only_with_the_pages_kept() {
        let mut tlbs = CpuTlbs::default();
        // A few pages that share every slot, touched over and over: one
        // allocation of the smallest size, no growth.
        for round in 0..1000u64 {
            let vpn = (round % 4) * (SECOND_MAX as u64) * 4;
            tlbs.cpu(0).fill(entry(1, vpn, false));
        }
        assert_eq!(tlbs.cpu(0).second_level(), (1, SECOND_MIN));
        // Far more pages than it may hold: it stops at its bound.
        for vpn in 0..(4 * SECOND_MAX as u64) {
            tlbs.cpu(0).fill(entry(1, vpn + (1 << 20), false));
        }
        assert_eq!(tlbs.cpu(0).second_level().1, SECOND_MAX);
        assert!(tlbs.layout_violations().is_empty());
    }

    #[test]
    fn the_layout_check_sees_a_page_in_both_levels() {
        let mut tlbs = CpuTlbs::default();
        tlbs.cpu(0).fill(entry(1, 3, false));
        tlbs.cpu(0)
            .fill(entry(1, 3 + CPU_TLB_ENTRIES as u64, false));
        // Put page 3 back in the first level behind `fill`'s back.
        let copy = entry(1, 3, false);
        tlbs.cpu(0).entries[3] = copy;
        assert_eq!(
            tlbs.layout_violations(),
            vec![(0, "a page cached in both levels")]
        );
    }
}
