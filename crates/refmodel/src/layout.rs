//! The numbers of the user address space, defined here and nowhere else.
//!
//! Owns [`Layout`]: the page geometry, the top of the user address space,
//! where `mmap` starts looking (top-down, then bottom-up), the lowest
//! address it may hand out, the transparent huge page size that large
//! anonymous and file mappings are aligned to, and the most bytes one
//! `read`/`write` moves. Everything in the reference model that rounds,
//! aligns or bounds an address goes through it.
//!
//! Values (Linux v6.8, arm64, 4 KiB pages, 48-bit VA):
//! - `TASK_SIZE = 1 << 48` (`VA_BITS = 48`);
//! - `mmap_base = TASK_SIZE - 128 MiB`: Linux puts it one stack gap (the
//!   128 MiB minimum, `MIN_GAP`) below the stack, without randomisation
//!   (the model's processes have `ADDR_NO_RANDOMIZE`);
//! - `mmap_min_addr = 4096` (`CONFIG_DEFAULT_MMAP_MIN_ADDR`);
//! - `TASK_UNMAPPED_BASE = TASK_SIZE / 4 = 1 << 46`, where the bottom-up
//!   fallback of a failed top-down search starts (arm64
//!   `PAGE_ALIGN(DEFAULT_MAP_WINDOW / 4)`);
//! - THP size = PMD size = 2 MiB;
//! - `MAX_RW_COUNT = INT_MAX & PAGE_MASK` (include/linux/fs.h).
//!
//! Invariants: every value is a multiple of the page size; `mmap_min_addr <
//! task_unmapped_base < mmap_base < task_size`.

use mte::{PageGeometry, VirtAddr};

/// A virtual page number: an address divided by the page size.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Vpn(pub u64);

impl core::fmt::Debug for Vpn {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(f, "Vpn({:#x})", self.0)
    }
}

/// The user address space's geometry.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct Layout {
    pub page: PageGeometry,
    /// One past the highest user address (`TASK_SIZE`).
    pub task_size: u64,
    /// Where the top-down search for free space starts (`mm->mmap_base`).
    pub mmap_base: u64,
    /// The lowest address `mmap` hands out or accepts (`mmap_min_addr`).
    pub mmap_min_addr: u64,
    /// Where the bottom-up fallback search starts (`TASK_UNMAPPED_BASE`).
    pub task_unmapped_base: u64,
    /// Alignment of large private anonymous and file mappings
    /// (`HPAGE_PMD_SIZE`).
    pub thp_size: u64,
    /// The most bytes one `read(2)`/`write(2)` transfers (`MAX_RW_COUNT`).
    pub max_rw_count: u64,
}

const MIB: u64 = 1 << 20;

impl Layout {
    /// The layout of the modelled machine (see the module comment).
    pub fn arm64_4k() -> Layout {
        let page = PageGeometry::new(12).expect("BUG: 4 KiB is an arm64 page size");
        let task_size = 1u64 << 48;
        Layout {
            page,
            task_size,
            mmap_base: task_size - 128 * MIB,
            mmap_min_addr: page.page_size(),
            task_unmapped_base: task_size / 4,
            thp_size: 2 * MIB,
            max_rw_count: i32::MAX as u64 & !(page.page_size() - 1),
        }
    }

    pub fn page_size(&self) -> u64 {
        self.page.page_size()
    }

    /// `len` rounded up to whole pages, `None` if that overflows
    /// (`PAGE_ALIGN(len)` wrapping to 0 in Linux).
    pub fn page_align_up(&self, len: u64) -> Option<u64> {
        let mask = self.page_size() - 1;
        len.checked_add(mask).map(|l| l & !mask)
    }

    pub fn is_page_aligned(&self, addr: VirtAddr) -> bool {
        self.page.is_page_aligned(addr)
    }

    pub fn page_base(&self, addr: VirtAddr) -> VirtAddr {
        self.page.page_base(addr)
    }

    pub fn vpn(&self, addr: VirtAddr) -> Vpn {
        Vpn(addr.as_u64() >> self.page.page_shift())
    }

    pub fn vpn_addr(&self, vpn: Vpn) -> VirtAddr {
        self.virt(vpn.0 << self.page.page_shift())
    }

    pub fn offset_in_page(&self, addr: VirtAddr) -> usize {
        self.page.page_offset(addr) as usize
    }

    /// Whether `[addr, addr + len)` lies inside the user address space
    /// (`__access_ok()`).
    pub fn is_user_range(&self, addr: VirtAddr, len: u64) -> bool {
        len <= self.task_size && addr.as_u64() <= self.task_size - len
    }

    /// The address as a typed value; every user address fits.
    pub fn virt(&self, addr: u64) -> VirtAddr {
        VirtAddr::new(addr).expect("BUG: a user address has its top byte set")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_numbers() {
        let l = Layout::arm64_4k();
        assert_eq!(l.page_size(), 4096);
        assert_eq!(l.task_size, 0x1_0000_0000_0000);
        // 2^48 - 128 MiB.
        assert_eq!(l.mmap_base, 0xffff_f800_0000);
        assert_eq!(l.mmap_min_addr, 0x1000);
        assert_eq!(l.task_unmapped_base, 0x4000_0000_0000);
        assert_eq!(l.thp_size, 0x20_0000);
        // INT_MAX & PAGE_MASK.
        assert_eq!(l.max_rw_count, 0x7fff_f000);
    }

    #[test]
    fn rounding_and_ranges() {
        let l = Layout::arm64_4k();
        assert_eq!(l.page_align_up(1), Some(4096));
        assert_eq!(l.page_align_up(4096), Some(4096));
        assert_eq!(l.page_align_up(0), Some(0));
        assert_eq!(l.page_align_up(u64::MAX - 10), None);
        assert_eq!(l.vpn(l.virt(0x1fff)), Vpn(1));
        assert_eq!(l.vpn_addr(Vpn(3)), l.virt(0x3000));
        assert_eq!(l.offset_in_page(l.virt(0x1234)), 0x234);
        assert_eq!(l.page_base(l.virt(0x1234)), l.virt(0x1000));
        assert!(l.is_page_aligned(l.virt(0x2000)));
        let top = l.virt(l.task_size - 16);
        assert!(l.is_user_range(top, 16));
        assert!(!l.is_user_range(top, 17));
        assert!(!l.is_user_range(VirtAddr::ZERO, u64::MAX));
    }
}
