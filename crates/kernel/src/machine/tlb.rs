//! The software TLB of one address space: a small direct-mapped cache of
//! valid leaf translations (virtual page -> frame, access, tagged).
//!
//! Invariant: every entry equals what a walk of the page table would find
//! now. It holds because the one function that writes entries
//! (`Kernel::raw_set_pte`) invalidates the entry for that address, and
//! nothing else changes a page table (tables are only freed over ranges
//! whose entries were cleared through that function first). The checker
//! compares every entry with a walk.
//!
//! Only valid entries ([`Access::is_valid`]) are cached: an invalid one
//! (`PROT_NONE`, awaiting tag storage) faults anyway.

use mte::{Pfn, VirtAddr};

use crate::mm::layout::PAGE_SHIFT;
use crate::mm::{Access, Leaf};

/// Entries of the direct-mapped array.
pub(crate) const TLB_ENTRIES: usize = 64;

/// One cached translation.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(crate) struct TlbEntry {
    /// Virtual page number.
    pub(crate) vpn: u64,
    pub(crate) pfn: Pfn,
    pub(crate) access: Access,
    pub(crate) tagged: bool,
}

#[derive(Clone, Debug)]
pub(crate) struct Tlb {
    entries: [Option<TlbEntry>; TLB_ENTRIES],
}

impl Tlb {
    pub(crate) fn new() -> Self {
        Self {
            entries: [None; TLB_ENTRIES],
        }
    }

    fn slot(vpn: u64) -> usize {
        (vpn % TLB_ENTRIES as u64) as usize
    }

    pub(crate) fn lookup(&self, va: VirtAddr) -> Option<TlbEntry> {
        let vpn = va.as_u64() >> PAGE_SHIFT;
        self.entries[Self::slot(vpn)].filter(|e| e.vpn == vpn)
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
        });
    }

    /// Linux `flush_tlb_page()`.
    pub(crate) fn invalidate(&mut self, va: VirtAddr) {
        let vpn = va.as_u64() >> PAGE_SHIFT;
        let slot = &mut self.entries[Self::slot(vpn)];
        if slot.is_some_and(|e| e.vpn == vpn) {
            *slot = None;
        }
    }

    pub(crate) fn entries(&self) -> impl Iterator<Item = TlbEntry> + '_ {
        self.entries.iter().flatten().copied()
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
}
