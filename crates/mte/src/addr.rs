//! Physical addresses, page frame numbers and buddy orders.
//!
//! Units are types: a physical byte address, a page frame number and a
//! power-of-two frame count never mix by accident. Conversions between
//! addresses and frames need the page shift, which belongs to the machine's
//! geometry ([`crate::geometry::Geometry`]); nothing here assumes 4 KiB.
//! Virtual addresses carry a logical tag and live in [`crate::ptr`].
//!
//! Arithmetic on frames is checked: the `+`/`-` operators panic with `BUG:`
//! on overflow (a broken invariant of the caller), the `checked_*` methods
//! return `None` for values that come from input.

use core::fmt;
use core::ops::{Add, AddAssign, Sub};

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

    /// [`Self::addr`], `None` if the frame lies past the address space.
    pub const fn checked_addr(self, page_shift: u32) -> Option<PhysAddr> {
        if page_shift < u64::BITS && self.0 <= u64::MAX >> page_shift {
            Some(PhysAddr(self.0 << page_shift))
        } else {
            None
        }
    }

    /// The frame `frames` further on, `None` past `u64::MAX`.
    pub const fn checked_add(self, frames: u64) -> Option<Pfn> {
        match self.0.checked_add(frames) {
            Some(pfn) => Some(Pfn(pfn)),
            None => None,
        }
    }

    /// The frame `frames` before this one, `None` below frame 0.
    pub const fn checked_sub(self, frames: u64) -> Option<Pfn> {
        match self.0.checked_sub(frames) {
            Some(pfn) => Some(Pfn(pfn)),
            None => None,
        }
    }

    /// Whether the frame is a multiple of `2^order` (a naturally aligned
    /// block of that order may start here).
    pub const fn is_aligned(self, order: Order) -> bool {
        self.0 & (order.pages() - 1) == 0
    }

    /// The frame rounded down to a multiple of `2^order`.
    pub const fn align_down(self, order: Order) -> Pfn {
        Pfn(self.0 & !(order.pages() - 1))
    }

    /// The frame rounded up to a multiple of `2^order`, `None` past
    /// `u64::MAX`.
    pub const fn checked_align_up(self, order: Order) -> Option<Pfn> {
        match self.0.checked_add(order.pages() - 1) {
            Some(v) => Some(Pfn(v & !(order.pages() - 1))),
            None => None,
        }
    }

    /// The buddy of the order-`order` block starting here (Linux:
    /// `__find_buddy_pfn()`, `pfn ^ (1 << order)`).
    pub const fn buddy(self, order: Order) -> Pfn {
        Pfn(self.0 ^ order.pages())
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

impl AddAssign<u64> for Pfn {
    fn add_assign(&mut self, frames: u64) {
        *self = *self + frames;
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

/// A buddy order: a naturally aligned block of `2^order` frames, with the
/// order in `0..=`[`Order::MAX`]. A machine's own maximum (Linux
/// `MAX_PAGE_ORDER`) is at most that, and is the allocator's to enforce.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Order(u8);

impl Order {
    /// The largest order any machine may configure: above it a single block
    /// would be larger than any machine (2^20 frames is 4 GiB of 4 KiB pages).
    pub const MAX: Order = Order(20);

    /// An order from a literal or a value already known to be in range;
    /// panics (a `BUG:`) above [`Self::MAX`].
    pub const fn new(order: u8) -> Self {
        assert!(order <= Self::MAX.0, "BUG: order above Order::MAX");
        Self(order)
    }

    /// An order from input, `None` above [`Self::MAX`].
    pub const fn try_new(order: u8) -> Option<Self> {
        if order <= Self::MAX.0 {
            Some(Self(order))
        } else {
            None
        }
    }

    pub const fn get(self) -> u8 {
        self.0
    }

    /// Frames in a block of this order.
    pub const fn pages(self) -> u64 {
        1 << self.0
    }

    /// The next order up, `None` above [`Self::MAX`].
    pub const fn checked_next(self) -> Option<Self> {
        Self::try_new(self.0 + 1)
    }

    /// The next order down, `None` below 0.
    pub const fn checked_prev(self) -> Option<Self> {
        match self.0.checked_sub(1) {
            Some(o) => Some(Self(o)),
            None => None,
        }
    }

    /// The orders `0..=self`, smallest first.
    pub fn and_below(self) -> impl DoubleEndedIterator<Item = Order> + Clone {
        (0..=self.0).map(Self)
    }
}

impl fmt::Debug for Order {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Order({})", self.0)
    }
}

impl fmt::Display for Order {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
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

    #[test]
    fn frame_arithmetic_is_checked() {
        assert_eq!(Pfn::new(u64::MAX).checked_add(1), None);
        assert_eq!(Pfn::new(0).checked_sub(1), None);
        assert_eq!(Pfn::new(3).checked_add(2), Some(Pfn::new(5)));
        assert_eq!(Pfn::new(1 << 52).checked_addr(12), None);
        assert_eq!(
            Pfn::new(0x80001).checked_addr(12),
            Some(PhysAddr::new(0x8000_1000))
        );
        assert_eq!(format!("{:?}", Pfn::new(0x80001)), "Pfn(0x80001)");
        let o = Order::new(2);
        assert!(Pfn::new(8).is_aligned(o) && !Pfn::new(9).is_aligned(o));
        assert_eq!(Pfn::new(9).align_down(o), Pfn::new(8));
        assert_eq!(Pfn::new(9).checked_align_up(o), Some(Pfn::new(12)));
        assert_eq!(Pfn::new(u64::MAX).checked_align_up(o), None);
        assert_eq!(Pfn::new(8).buddy(o), Pfn::new(12));
    }

    #[test]
    fn orders_stay_in_range() {
        assert_eq!(Order::try_new(20), Some(Order::MAX));
        assert_eq!(Order::try_new(21), None);
        assert_eq!(Order::MAX.checked_next(), None);
        assert_eq!(Order::new(0).checked_prev(), None);
        assert_eq!(Order::new(3).pages(), 8);
        assert_eq!(Order::new(2).and_below().count(), 3);
        assert_eq!(format!("{:?}", Order::new(9)), "Order(9)");
    }
}
