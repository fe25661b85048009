//! Physical addresses and page frame numbers.
//!
//! Units are types: a physical byte address and a page frame number never mix
//! by accident. Conversions between them need the page shift, which belongs to
//! the platform geometry (`platform::Geometry`); nothing here assumes 4 KiB.
//! Virtual addresses carry a logical tag and live in [`crate::ptr`].

use core::fmt;
use core::ops::{Add, Sub};

/// A physical byte address.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct PhysAddr(u64);

impl PhysAddr {
    pub const fn new(addr: u64) -> Self {
        Self(addr)
    }

    pub const fn as_u64(self) -> u64 {
        self.0
    }

    /// The frame that holds this address.
    pub const fn pfn(self, page_shift: u32) -> Pfn {
        Pfn(self.0 >> page_shift)
    }

    /// Whether the address is a multiple of `align` (a power of two).
    pub const fn is_aligned(self, align: u64) -> bool {
        self.0 & (align - 1) == 0
    }

    pub fn checked_add(self, bytes: u64) -> Option<Self> {
        self.0.checked_add(bytes).map(Self)
    }
}

impl fmt::Debug for PhysAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PhysAddr({:#x})", self.0)
    }
}

impl fmt::Display for PhysAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:#x}", self.0)
    }
}

/// A page frame number: a physical address divided by the page size.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Pfn(u64);

impl Pfn {
    pub const fn new(pfn: u64) -> Self {
        Self(pfn)
    }

    pub const fn as_u64(self) -> u64 {
        self.0
    }

    /// The address of the first byte of the frame.
    pub const fn addr(self, page_shift: u32) -> PhysAddr {
        PhysAddr(self.0 << page_shift)
    }
}

impl Add<u64> for Pfn {
    type Output = Pfn;
    fn add(self, frames: u64) -> Pfn {
        Pfn(self
            .0
            .checked_add(frames)
            .expect("BUG: page frame number overflow"))
    }
}

impl Sub<Pfn> for Pfn {
    type Output = u64;
    /// The number of frames from `rhs` up to `self`.
    fn sub(self, rhs: Pfn) -> u64 {
        self.0
            .checked_sub(rhs.0)
            .expect("BUG: page frame difference below zero")
    }
}

impl fmt::Debug for Pfn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Pfn({:#x})", self.0)
    }
}

impl fmt::Display for Pfn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:#x}", self.0)
    }
}

/// A half-open range of frames `[start, start + count)`.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Debug)]
pub struct PfnRange {
    pub start: Pfn,
    pub count: u64,
}

impl PfnRange {
    pub const fn new(start: Pfn, count: u64) -> Self {
        Self { start, count }
    }

    /// One past the last frame.
    pub fn end(self) -> Pfn {
        self.start + self.count
    }

    pub fn contains(self, pfn: Pfn) -> bool {
        pfn >= self.start && pfn.as_u64() - self.start.as_u64() < self.count
    }

    pub fn overlaps(self, other: PfnRange) -> bool {
        self.start < other.end() && other.start < self.end()
    }

    pub fn iter(self) -> impl Iterator<Item = Pfn> {
        (self.start.as_u64()..self.end().as_u64()).map(Pfn::new)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pfn_and_address_convert_both_ways() {
        let pa = PhysAddr::new(0x8000_1234);
        assert_eq!(pa.pfn(12), Pfn::new(0x80001));
        assert_eq!(Pfn::new(0x80001).addr(12), PhysAddr::new(0x8000_1000));
        assert!(PhysAddr::new(0x8000_1000).is_aligned(4096));
        assert!(!pa.is_aligned(16));
    }

    #[test]
    fn ranges_contain_and_overlap() {
        let r = PfnRange::new(Pfn::new(10), 5);
        assert_eq!(r.end(), Pfn::new(15));
        assert!(r.contains(Pfn::new(10)) && r.contains(Pfn::new(14)));
        assert!(!r.contains(Pfn::new(15)) && !r.contains(Pfn::new(9)));
        assert!(r.overlaps(PfnRange::new(Pfn::new(14), 1)));
        assert!(!r.overlaps(PfnRange::new(Pfn::new(15), 10)));
        assert_eq!(r.iter().count(), 5);
        assert_eq!(Pfn::new(15) - Pfn::new(10), 5);
    }
}
