//! The software TLB of one address space: two small direct-mapped caches of
//! valid leaf translations, one of 4 KiB pages (virtual page -> frame,
//! access, tagged) and one of 2 MiB blocks (virtual 2 MiB number -> first
//! frame, access, tagged; Linux/arm64 caches block translations as one TLB
//! entry too). A lookup probes one slot of each: O(1).
//!
//! Invariant: every entry equals what a walk of the page table would find
//! now. It holds because the functions that write entries
//! (`Kernel::raw_set_pte`, `Kernel::raw_set_block`) invalidate the entries
//! for that address (a block write: the block slot and, since a split
//! installs PTEs where the block was, nothing else can be stale), and
//! nothing else changes a page table (tables are only freed over ranges
//! whose entries were cleared through those functions first). The checker
//! compares every entry with a walk.
//!
//! Only valid entries ([`Access::is_valid`]) are cached: an invalid one
//! (`PROT_NONE`, awaiting tag storage) faults anyway.
//!
//! Every invalidation is also broadcast to the per-CPU TLBs of the direct
//! access path (`cpu_tlb`), whose entries are made from this TLB's
//! translations: one flush point serves both, and a `Tlb` dropped with its
//! address space drops that space's per-CPU entries.

use core::cell::RefCell;
use std::rc::Rc;

use mte::{Pfn, VirtAddr};

use super::cpu_tlb::CpuTlbs;
use crate::mm::MmId;

use crate::mm::layout::{PAGE_SHIFT, PMD_SHIFT};
use crate::mm::{Access, Leaf};

/// Entries of the direct-mapped page array.
pub(crate) const TLB_ENTRIES: usize = 64;
/// Entries of the direct-mapped block array.
pub(crate) const TLB_BLOCK_ENTRIES: usize = 16;

/// One cached translation.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(crate) struct TlbEntry {
    /// Virtual page number (for a block: of its first page).
    pub(crate) vpn: u64,
    /// The frame (for a block: its first frame).
    pub(crate) pfn: Pfn,
    pub(crate) access: Access,
    pub(crate) tagged: bool,
    /// A 2 MiB block translation.
    pub(crate) huge: bool,
}

#[derive(Debug)]
pub(crate) struct Tlb {
    entries: [Option<TlbEntry>; TLB_ENTRIES],
    blocks: [Option<TlbEntry>; TLB_BLOCK_ENTRIES],
    /// This address space and the per-CPU TLBs its flushes reach.
    broadcast: Option<(MmId, Rc<RefCell<CpuTlbs>>)>,
}

impl Tlb {
    #[cfg(test)]
    pub(crate) fn new() -> Self {
        Self {
            entries: [None; TLB_ENTRIES],
            blocks: [None; TLB_BLOCK_ENTRIES],
            broadcast: None,
        }
    }

    /// The TLB of address space `mm`, whose flushes also reach `cpus`.
    pub(crate) fn with_cpus(mm: MmId, cpus: Rc<RefCell<CpuTlbs>>) -> Self {
        Self {
            entries: [None; TLB_ENTRIES],
            blocks: [None; TLB_BLOCK_ENTRIES],
            broadcast: Some((mm, cpus)),
        }
    }

    fn slot(vpn: u64) -> usize {
        (vpn % TLB_ENTRIES as u64) as usize
    }

    fn block_slot(va: u64) -> (usize, u64) {
        let number = va >> PMD_SHIFT;
        (
            (number % TLB_BLOCK_ENTRIES as u64) as usize,
            number << (PMD_SHIFT - PAGE_SHIFT),
        )
    }

    /// The translation of the page holding `va`: for a block, the frame of
    /// that page within it.
    pub(crate) fn lookup(&self, va: VirtAddr) -> Option<TlbEntry> {
        let vpn = va.as_u64() >> PAGE_SHIFT;
        if let Some(e) = self.entries[Self::slot(vpn)].filter(|e| e.vpn == vpn) {
            return Some(e);
        }
        let (slot, first) = Self::block_slot(va.as_u64());
        self.blocks[slot]
            .filter(|e| e.vpn == first)
            .map(|e| TlbEntry {
                vpn,
                pfn: e.pfn + (vpn - first),
                ..e
            })
    }

    /// Caches the valid leaf that maps `va`.
    pub(crate) fn fill(&mut self, va: VirtAddr, leaf: Leaf) {
        debug_assert!(leaf.attrs.access.is_valid(), "BUG: caching an invalid leaf");
        let vpn = va.as_u64() >> PAGE_SHIFT;
        self.entries[Self::slot(vpn)] = Some(TlbEntry {
            vpn,
            pfn: leaf.pfn,
            access: leaf.attrs.access,
            tagged: leaf.attrs.tagged,
            huge: false,
        });
    }

    /// Caches the valid block `leaf` mapping the 2 MiB holding `va`.
    pub(crate) fn fill_block(&mut self, va: VirtAddr, leaf: Leaf) {
        debug_assert!(leaf.attrs.access.is_valid(), "BUG: caching an invalid leaf");
        let (slot, first) = Self::block_slot(va.as_u64());
        self.blocks[slot] = Some(TlbEntry {
            vpn: first,
            pfn: leaf.pfn,
            access: leaf.attrs.access,
            tagged: leaf.attrs.tagged,
            huge: true,
        });
    }

    /// Linux `flush_tlb_page()`: the page entry of `va` and the block entry
    /// covering it.
    pub(crate) fn invalidate(&mut self, va: VirtAddr) {
        if let Some((mm, cpus)) = &self.broadcast {
            cpus.borrow_mut().invalidate(*mm, va.as_u64());
        }
        let vpn = va.as_u64() >> PAGE_SHIFT;
        let slot = &mut self.entries[Self::slot(vpn)];
        if slot.is_some_and(|e| e.vpn == vpn) {
            *slot = None;
        }
        let (slot, first) = Self::block_slot(va.as_u64());
        let slot = &mut self.blocks[slot];
        if slot.is_some_and(|e| e.vpn == first) {
            *slot = None;
        }
    }

    /// Every cached entry (blocks as their first page, `huge` set).
    pub(crate) fn entries(&self) -> impl Iterator<Item = TlbEntry> + '_ {
        self.entries
            .iter()
            .chain(self.blocks.iter())
            .flatten()
            .copied()
    }
}

impl Drop for Tlb {
    fn drop(&mut self) {
        if let Some((mm, cpus)) = &self.broadcast {
            cpus.borrow_mut().flush_mm(*mm);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mm::LeafAttrs;

    fn leaf(pfn: u64) -> Leaf {
        Leaf {
            pfn: Pfn::new(pfn),
            attrs: LeafAttrs {
                access: Access::ReadWrite,
                tagged: false,
                special: false,
                young: true,
                dirty: true,
            },
        }
    }

    #[test]
    fn direct_mapped_slots_evict_and_invalidate_only_their_page() {
        let mut tlb = Tlb::new();
        let a = VirtAddr::new(0x1000).unwrap();
        // Same slot: 64 pages further.
        let b = VirtAddr::new(0x1000 + (TLB_ENTRIES as u64) * 0x1000).unwrap();
        tlb.fill(a, leaf(7));
        assert_eq!(tlb.lookup(a).map(|e| e.pfn), Some(Pfn::new(7)));
        tlb.fill(b, leaf(9));
        assert_eq!(tlb.lookup(a), None, "b evicted a from the shared slot");
        // Invalidating a (not cached) leaves b alone.
        tlb.invalidate(a);
        assert_eq!(tlb.lookup(b).map(|e| e.pfn), Some(Pfn::new(9)));
        tlb.invalidate(b);
        assert_eq!(tlb.lookup(b), None);
    }

    #[test]
    fn a_block_entry_translates_every_page_of_its_2mib_and_is_invalidated_by_any() {
        let mut tlb = Tlb::new();
        let base = VirtAddr::new(0x4000_0000).unwrap();
        tlb.fill_block(base, leaf(0x200));
        let inside = VirtAddr::new(0x4000_0000 + 5 * 0x1000 + 0x10).unwrap();
        let e = tlb.lookup(inside).unwrap();
        assert_eq!((e.pfn, e.huge), (Pfn::new(0x205), true));
        assert_eq!(e.vpn, 0x40005);
        let outside = VirtAddr::new(0x4020_0000).unwrap();
        assert_eq!(tlb.lookup(outside), None);
        // A page entry wins over the block (a split block's PTE).
        tlb.fill(inside, leaf(9));
        assert_eq!(tlb.lookup(inside).map(|e| e.pfn), Some(Pfn::new(9)));
        tlb.invalidate(VirtAddr::new(0x4010_0000).unwrap());
        assert_eq!(tlb.lookup(VirtAddr::new(0x4010_0000).unwrap()), None);
        assert_eq!(tlb.entries().filter(|e| e.huge).count(), 0);
    }
}
