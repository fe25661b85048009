//! The geometry of a user address space: the one place its numbers are
//! defined. Everything else derives from [`PAGE`] (the machine's page
//! geometry, `mte::PageGeometry`, which also gives the physical side its
//! page size) and [`LEVELS`]; [`PAGE_SHIFT`] and [`PAGE_SIZE`] are its
//! values as constants for the table arithmetic.
//!
//! The model runs arm64 Linux with 4 KiB pages, 48-bit user virtual
//! addresses (`CONFIG_ARM64_VA_BITS_48`) and no address-space layout
//! randomisation, so every address it hands out is deterministic:
//!
//! ```text
//!   TASK_SIZE   0x1_0000_0000_0000  (1 << VA_BITS)
//!               stack gap: 128 MiB, no stack VMA is modelled
//!   MMAP_BASE   0x0_ffff_f800_0000  top-down mmap allocations end here
//!       ...     mappings grow down
//!   TASK_UNMAPPED_BASE 0x4000_0000_0000  bottom-up fallback starts here
//!       ...
//!   MMAP_MIN_ADDR 0x1000           nothing is mapped below
//! ```
//!
//! The platform offers only 4 KiB pages today (its `page-size` key accepts
//! nothing else); a 16 or 64 KiB granule would change [`LEVELS`] and the
//! block size (Arm ARM, "Translation granule"), which this module would
//! then have to derive too.

use mte::{PageGeometry, VirtAddr};

/// The page geometry of the address space (Linux arm64
/// `CONFIG_ARM64_4K_PAGES`).
pub const PAGE: PageGeometry = PageGeometry::FOUR_K;
/// log2 of the page size (Linux: `PAGE_SHIFT`).
pub const PAGE_SHIFT: u32 = PAGE.page_shift();
pub const PAGE_SIZE: u64 = PAGE.page_size();

/// log2 of the size of one translation table descriptor (8 bytes).
pub const DESCRIPTOR_SHIFT: u32 = 3;
/// log2 of the descriptors in one table: a table fills one page, so
/// `PAGE_SHIFT - DESCRIPTOR_SHIFT` = 9 address bits per level.
pub const TABLE_SHIFT: u32 = PAGE_SHIFT - DESCRIPTOR_SHIFT;
/// Descriptors in one table (Linux: `PTRS_PER_PTE`, `PTRS_PER_PMD`, ...).
pub const ENTRIES_PER_TABLE: usize = 1 << TABLE_SHIFT;
/// Translation levels: PGD, PUD, PMD, PTE (Linux: `CONFIG_PGTABLE_LEVELS`).
pub const LEVELS: u32 = 4;
/// Bits of a user virtual address the tables translate (Linux: `VA_BITS`).
pub const VA_BITS: u32 = PAGE_SHIFT + LEVELS * TABLE_SHIFT;
/// The end of the user address space (Linux: `TASK_SIZE_64`,
/// `DEFAULT_MAP_WINDOW_64`, `STACK_TOP`).
pub const TASK_SIZE: u64 = 1 << VA_BITS;

/// log2 of the size a PMD entry maps: a block (Linux: `PMD_SHIFT`).
pub const PMD_SHIFT: u32 = PAGE_SHIFT + TABLE_SHIFT;
/// The size of a PMD block, the transparent huge page size (2 MiB).
pub const PMD_SIZE: u64 = 1 << PMD_SHIFT;
/// Pages in a PMD block (Linux: `HPAGE_PMD_NR`).
pub const PAGES_PER_PMD: u64 = 1 << TABLE_SHIFT;

const MIB: u64 = 1 << 20;

/// The default stack size limit (Linux: `_STK_LIM`, `RLIMIT_STACK`).
pub const STACK_RLIMIT: u64 = 8 * MIB;
/// The gap kept below a growing stack (Linux: `stack_guard_gap`, 256 pages).
pub const STACK_GUARD_GAP: u64 = 256 << PAGE_SHIFT;
/// The smallest and largest gap `mmap_base()` leaves for the stack (Linux
/// `mm/util.c`: `MIN_GAP`, `MAX_GAP`).
pub const MIN_STACK_GAP: u64 = 128 * MIB;
pub const MAX_STACK_GAP: u64 = TASK_SIZE / 6 * 5;

/// The gap between the top of the address space and [`MMAP_BASE`], as
/// `mmap_base()` computes it without randomisation: the stack limit plus
/// its guard gap, clamped to `[MIN_GAP, MAX_GAP]`: 128 MiB.
pub const STACK_GAP: u64 = {
    let wanted = STACK_RLIMIT + STACK_GUARD_GAP;
    if wanted < MIN_STACK_GAP {
        MIN_STACK_GAP
    } else if wanted > MAX_STACK_GAP {
        MAX_STACK_GAP
    } else {
        wanted
    }
};

/// Where top-down allocation starts (Linux: `mm->mmap_base` from
/// `arch_pick_mmap_layout()` -> `mmap_base()`, `STACK_TOP - gap`).
pub const MMAP_BASE: u64 = (TASK_SIZE - STACK_GAP) & !(PAGE_SIZE - 1);

/// Where the bottom-up fallback of a failed top-down search starts (Linux:
/// `TASK_UNMAPPED_BASE`, `PAGE_ALIGN(DEFAULT_MAP_WINDOW / 4)`).
pub const TASK_UNMAPPED_BASE: u64 = (TASK_SIZE / 4) & !(PAGE_SIZE - 1);

/// The lowest address a mapping may start at (Linux:
/// `CONFIG_DEFAULT_MMAP_MIN_ADDR`, `vm.mmap_min_addr`; its Kconfig default).
pub const MMAP_MIN_ADDR: u64 = 4096;

/// `len` rounded up to whole pages, `None` if that overflows (Linux's
/// `PAGE_ALIGN()` wraps to 0 instead; callers turn `None` into the errno
/// Linux gives the wrapped value).
pub const fn page_align(len: u64) -> Option<u64> {
    match len.checked_add(PAGE_SIZE - 1) {
        Some(v) => Some(v & !(PAGE_SIZE - 1)),
        None => None,
    }
}

pub const fn is_page_aligned(addr: VirtAddr) -> bool {
    addr.is_aligned(PAGE_SIZE)
}

/// The page number of `addr` (Linux: `addr >> PAGE_SHIFT`).
pub const fn page_index(addr: VirtAddr) -> u64 {
    addr.as_u64() >> PAGE_SHIFT
}

/// Whole pages in `len` bytes, rounding down.
pub const fn pages_in(len: u64) -> u64 {
    len >> PAGE_SHIFT
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn geometry_follows_from_the_page_shift() {
        // Arm ARM, 4 KiB granule with 48-bit VA: 4 levels of 512 entries,
        // level shifts 39/30/21/12, 2 MiB blocks at level 2.
        assert_eq!(TABLE_SHIFT, 9);
        assert_eq!(ENTRIES_PER_TABLE, 512);
        assert_eq!(VA_BITS, 48);
        assert_eq!(TASK_SIZE, 0x1_0000_0000_0000);
        assert_eq!(PMD_SIZE, 0x20_0000);
        assert_eq!(PAGES_PER_PMD, 512);
    }

    #[test]
    fn mmap_base_is_task_size_minus_the_minimum_stack_gap() {
        // mmap_base(): 8 MiB rlimit + 1 MiB guard is below MIN_GAP (128 MiB),
        // so the gap is 128 MiB: 2^48 - 2^27.
        assert_eq!(STACK_GAP, 128 << 20);
        assert_eq!(MMAP_BASE, 0xffff_f800_0000);
        assert_eq!(TASK_UNMAPPED_BASE, 0x4000_0000_0000);
        assert!(MMAP_BASE.is_multiple_of(PMD_SIZE));
    }

    #[test]
    fn page_align_rounds_up_and_reports_overflow() {
        assert_eq!(page_align(0), Some(0));
        assert_eq!(page_align(1), Some(PAGE_SIZE));
        assert_eq!(page_align(PAGE_SIZE), Some(PAGE_SIZE));
        assert_eq!(page_align(u64::MAX), None);
        assert_eq!(
            page_align(u64::MAX - PAGE_SIZE + 1),
            Some(u64::MAX - PAGE_SIZE + 1)
        );
    }
}
