//! Tag granules and their place in a page.
//!
//! Owns the architecture's granule geometry, defined here and nowhere else:
//! [`LOG2_TAG_GRANULE`] (Arm ARM `LOG2_TAG_GRANULE = 4`), [`GRANULE_SIZE`]
//! (`TAG_GRANULE`, 16 bytes), and the ratio of data to tag storage that
//! follows from 4-bit tags, [`DATA_BYTES_PER_TAG_BYTE`] (32). Everything that
//! relates pages to granules goes through a [`PageGeometry`], which takes the
//! page size as data; nothing here assumes 4 KiB.
//!
//! A [`Granule`] is the index of a granule *within its page*
//! (`0..granules_per_page`), the unit in which a page's tags are stored and
//! saved. Addresses stay typed: helpers are generic over [`Address`], which
//! only [`VirtAddr`] and [`PhysAddr`] implement.
//!
//! Invariants: a `PageGeometry` holds one of the arm64 translation granules
//! (4, 16 or 64 KiB); a `Granule` obtained from a geometry is below that
//! geometry's `granules_per_page`.

use thiserror::Error;

use crate::addr::PhysAddr;
use crate::ptr::VirtAddr;
use crate::tag::TAG_BITS;

/// log2 of the tag granule (Arm ARM constant `LOG2_TAG_GRANULE`).
pub const LOG2_TAG_GRANULE: u32 = 4;

/// Bytes of data one allocation tag covers (Arm ARM `TAG_GRANULE`).
pub const GRANULE_SIZE: u64 = 1 << LOG2_TAG_GRANULE;

/// Tags packed in one byte of tag storage (two 4-bit tags).
pub const TAGS_PER_BYTE: u64 = u8::BITS as u64 / TAG_BITS as u64;

/// log2 of [`DATA_BYTES_PER_TAG_BYTE`].
pub const LOG2_DATA_BYTES_PER_TAG_BYTE: u32 = LOG2_TAG_GRANULE + TAGS_PER_BYTE.trailing_zeros();

/// Bytes of data whose tags fill one byte of tag storage: the 1:32 ratio of
/// tag storage to memory (QEMU indexes tag memory with
/// `addr >> (LOG2_TAG_GRANULE + 1)`).
pub const DATA_BYTES_PER_TAG_BYTE: u64 = 1 << LOG2_DATA_BYTES_PER_TAG_BYTE;

/// The number of whole granules in `bytes`, `None` unless `bytes` is a
/// multiple of [`GRANULE_SIZE`] (e.g. a tag-setting length).
pub const fn exact_granules(bytes: u64) -> Option<u64> {
    if bytes.is_multiple_of(GRANULE_SIZE) {
        Some(bytes >> LOG2_TAG_GRANULE)
    } else {
        None
    }
}

mod sealed {
    /// Bit access for the address types; not nameable outside the crate, so
    /// the invariants of each type stay in its own module.
    pub trait Sealed: Copy {
        fn bits(self) -> u64;
        /// `self` with the bits in `low_mask` replaced by `value`
        /// (`value & !low_mask == 0`, `low_mask` below bit 56).
        fn with_low_bits(self, low_mask: u64, value: u64) -> Self;
    }
}

/// A byte address (virtual or physical) that pages and granules divide.
pub trait Address: sealed::Sealed {}

impl sealed::Sealed for VirtAddr {
    fn bits(self) -> u64 {
        self.as_u64()
    }
    fn with_low_bits(self, low_mask: u64, value: u64) -> Self {
        debug_assert!(value & !low_mask == 0);
        VirtAddr::new(self.as_u64() & !low_mask | value)
            .expect("BUG: page or granule mask reached the top byte")
    }
}
impl Address for VirtAddr {}

impl sealed::Sealed for PhysAddr {
    fn bits(self) -> u64 {
        self.as_u64()
    }
    fn with_low_bits(self, low_mask: u64, value: u64) -> Self {
        debug_assert!(value & !low_mask == 0);
        PhysAddr::new(self.as_u64() & !low_mask | value)
    }
}
impl Address for PhysAddr {}

/// Why a page size is not one of the arm64 translation granules.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
pub enum PageSizeError {
    #[error("page shift {shift} is not an arm64 translation granule (12, 14 or 16)")]
    UnsupportedPageShift { shift: u32 },
    #[error("page size {size:#x} is not an arm64 translation granule (4K, 16K or 64K)")]
    UnsupportedPageSize { size: u64 },
}

/// The size of a page, and everything about granules that follows from it.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct PageGeometry {
    page_shift: u32,
}

impl PageGeometry {
    /// Page shifts of the arm64 translation granules: 4, 16 and 64 KiB
    /// (Arm ARM, TCR_EL1.TG0).
    pub const ARM64_PAGE_SHIFTS: [u32; 3] = [12, 14, 16];

    /// 4 KiB pages, the only size the kernel model runs (Linux arm64
    /// `CONFIG_ARM64_4K_PAGES`).
    pub const FOUR_K: PageGeometry = PageGeometry { page_shift: 12 };

    pub const fn new(page_shift: u32) -> Result<PageGeometry, PageSizeError> {
        match page_shift {
            12 | 14 | 16 => Ok(PageGeometry { page_shift }),
            shift => Err(PageSizeError::UnsupportedPageShift { shift }),
        }
    }

    pub const fn from_page_size(page_size: u64) -> Result<PageGeometry, PageSizeError> {
        if !page_size.is_power_of_two() {
            return Err(PageSizeError::UnsupportedPageSize { size: page_size });
        }
        match PageGeometry::new(page_size.trailing_zeros()) {
            Ok(g) => Ok(g),
            Err(_) => Err(PageSizeError::UnsupportedPageSize { size: page_size }),
        }
    }

    pub const fn page_shift(self) -> u32 {
        self.page_shift
    }

    pub const fn page_size(self) -> u64 {
        1 << self.page_shift
    }

    /// Granules in one page (256 for 4 KiB).
    pub const fn granules_per_page(self) -> u64 {
        1 << (self.page_shift - LOG2_TAG_GRANULE)
    }

    /// Bytes of tag storage one page's tags take (128 for 4 KiB).
    pub const fn tag_bytes_per_page(self) -> u64 {
        1 << (self.page_shift - LOG2_DATA_BYTES_PER_TAG_BYTE)
    }

    const fn offset_mask(self) -> u64 {
        self.page_size() - 1
    }

    /// The first byte of the page holding `addr`.
    pub fn page_base<A: Address>(self, addr: A) -> A {
        addr.with_low_bits(self.offset_mask(), 0)
    }

    /// The byte offset of `addr` within its page.
    pub fn page_offset<A: Address>(self, addr: A) -> u64 {
        addr.bits() & self.offset_mask()
    }

    pub fn is_page_aligned<A: Address>(self, addr: A) -> bool {
        self.page_offset(addr) == 0
    }

    /// The granule of its page that holds `addr`.
    pub fn granule_in_page<A: Address>(self, addr: A) -> Granule {
        Granule((self.page_offset(addr) >> LOG2_TAG_GRANULE) as u32)
    }

    /// The address of `granule` in the page holding `page_addr`.
    pub fn granule_addr<A: Address>(self, page_addr: A, granule: Granule) -> A {
        assert!(
            granule.index() < self.granules_per_page(),
            "BUG: {granule:?} does not fit a {:#x}-byte page",
            self.page_size()
        );
        page_addr.with_low_bits(self.offset_mask(), granule.offset_in_page())
    }

    /// Granule `index` of a page, `None` past the end of the page.
    pub fn granule(self, index: u64) -> Option<Granule> {
        if index < self.granules_per_page() {
            Some(Granule(index as u32))
        } else {
            None
        }
    }

    /// Every granule of a page, lowest address first.
    pub fn granules(self) -> impl Iterator<Item = Granule> {
        (0..self.granules_per_page() as u32).map(Granule)
    }

    /// The number of pages that bytes `[start, start + len)` touch (0 when
    /// `len` is 0).
    pub fn pages_spanned<A: Address>(self, start: A, len: u64) -> u64 {
        if len == 0 {
            return 0;
        }
        let first = start.bits() >> self.page_shift;
        let last = start.bits().saturating_add(len - 1) >> self.page_shift;
        last - first + 1
    }
}

impl core::fmt::Debug for PageGeometry {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(f, "PageGeometry(page_size={:#x})", self.page_size())
    }
}

/// The index of a 16-byte granule within its page.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Granule(u32);

impl Granule {
    /// The first granule of a page.
    pub const FIRST: Granule = Granule(0);

    pub const fn index(self) -> u64 {
        self.0 as u64
    }

    /// The byte offset of the granule's first byte within its page.
    pub const fn offset_in_page(self) -> u64 {
        (self.0 as u64) << LOG2_TAG_GRANULE
    }

    /// The granule `n` places further on in the same page, `None` past its
    /// end.
    pub fn checked_add(self, n: u64, geometry: PageGeometry) -> Option<Granule> {
        self.index()
            .checked_add(n)
            .and_then(|i| geometry.granule(i))
    }
}

impl core::fmt::Debug for Granule {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(f, "Granule({:#x})", self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn g4k() -> PageGeometry {
        PageGeometry::from_page_size(4096).unwrap()
    }

    #[test]
    fn constants_follow_from_4_bit_tags_on_16_byte_granules() {
        assert_eq!(GRANULE_SIZE, 16);
        assert_eq!(TAGS_PER_BYTE, 2);
        // 4 bits per 16 bytes: one tag byte per 32 data bytes (1/32 of DRAM).
        assert_eq!(DATA_BYTES_PER_TAG_BYTE, 32);
        assert_eq!(LOG2_DATA_BYTES_PER_TAG_BYTE, 5);
        assert_eq!(exact_granules(64), Some(4));
        assert_eq!(exact_granules(0), Some(0));
        assert_eq!(exact_granules(24), None);
    }

    #[test]
    fn geometry_per_arm64_page_size() {
        // 4 KiB: 256 granules, 128 tag bytes (docs/model.md "128 bytes of tags per
        // data page").
        let g = g4k();
        assert_eq!((g.page_shift(), g.page_size()), (12, 4096));
        assert_eq!(g.granules_per_page(), 256);
        assert_eq!(g.tag_bytes_per_page(), 128);
        // 16 KiB and 64 KiB pages scale linearly.
        let g16 = PageGeometry::new(14).unwrap();
        assert_eq!(
            (g16.granules_per_page(), g16.tag_bytes_per_page()),
            (1024, 512)
        );
        let g64 = PageGeometry::from_page_size(0x1_0000).unwrap();
        assert_eq!(
            (g64.granules_per_page(), g64.tag_bytes_per_page()),
            (4096, 2048)
        );
        assert_eq!(
            PageGeometry::new(13),
            Err(PageSizeError::UnsupportedPageShift { shift: 13 })
        );
        assert_eq!(
            PageGeometry::from_page_size(3000),
            Err(PageSizeError::UnsupportedPageSize { size: 3000 })
        );
        assert_eq!(
            PageGeometry::from_page_size(8192),
            Err(PageSizeError::UnsupportedPageSize { size: 8192 })
        );
        assert_eq!(format!("{g:?}"), "PageGeometry(page_size=0x1000)");
    }

    #[test]
    fn page_and_granule_of_an_address() {
        let g = g4k();
        let a = VirtAddr::new(0x7f00_0000_1ab7).unwrap();
        assert_eq!(g.page_base(a), VirtAddr::new(0x7f00_0000_1000).unwrap());
        assert_eq!(g.page_offset(a), 0xab7);
        // 0xab7 / 16 = 0xab.
        assert_eq!(g.granule_in_page(a), g.granule(0xab).unwrap());
        assert_eq!(g.granule_in_page(a).offset_in_page(), 0xab0);
        assert_eq!(
            g.granule_addr(a, g.granule(0xff).unwrap()),
            VirtAddr::new(0x7f00_0000_1ff0).unwrap()
        );
        let p = PhysAddr::new(0x8000_3010);
        assert_eq!(g.page_base(p), PhysAddr::new(0x8000_3000));
        assert_eq!(g.granule_in_page(p).index(), 1);
        assert!(g.is_page_aligned(PhysAddr::new(0x8000_3000)));
        assert!(!g.is_page_aligned(p));
        // The same address in 64 KiB pages is granule 0x1ab of its page.
        let g64 = PageGeometry::new(16).unwrap();
        assert_eq!(g64.granule_in_page(a).index(), 0x1ab);
    }

    #[test]
    fn granule_indices_stay_in_the_page() {
        let g = g4k();
        assert_eq!(g.granule(255).map(Granule::index), Some(255));
        assert_eq!(g.granule(256), None);
        assert_eq!(g.granules().count(), 256);
        assert_eq!(g.granules().last(), g.granule(255));
        assert_eq!(Granule::FIRST.checked_add(255, g), g.granule(255));
        assert_eq!(Granule::FIRST.checked_add(256, g), None);
        assert_eq!(format!("{:?}", g.granule(0x1f).unwrap()), "Granule(0x1f)");
    }

    #[test]
    #[should_panic(expected = "BUG:")]
    fn granule_of_a_bigger_page_is_a_bug() {
        let g64 = PageGeometry::new(16).unwrap();
        let far = g64.granule(300).unwrap();
        g4k().granule_addr(VirtAddr::ZERO, far);
    }

    #[test]
    fn pages_spanned_by_a_range() {
        let g = g4k();
        let at = |raw| VirtAddr::new(raw).unwrap();
        assert_eq!(g.pages_spanned(at(0x1000), 0), 0);
        assert_eq!(g.pages_spanned(at(0x1000), 4096), 1);
        assert_eq!(g.pages_spanned(at(0x1ffc), 8), 2);
        assert_eq!(g.pages_spanned(at(0x1fff), 4098), 3);
    }
}
