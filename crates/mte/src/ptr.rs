//! Virtual addresses and tagged pointers.
//!
//! Owns [`VirtAddr`], an untagged user virtual address, and [`TaggedPtr`], the
//! full 64-bit value a program holds in a register.
//!
//! Top Byte Ignore is always on for user addresses (Linux sets TCR_EL1.TBI0
//! for every task): translation uses bits 55:0 and ignores bits 63:56. The
//! logical tag is bits 59:56 (Arm ARM `AArch64.AllocationTagFromAddress`
//! returns `address<59:56>`); bits 63:60 are carried along untouched.
//!
//! Invariants:
//! - a `VirtAddr` has bits 63:56 clear, so it always fits the 56 translated
//!   bits;
//! - every `u64` is a valid `TaggedPtr`;
//! - arithmetic on either type never wraps silently: leaving bits 55:0 (above
//!   `2^56 - 1` or below 0) is a [`PtrError`]. Hardware would carry into the
//!   top byte instead; no user mapping lies near either end (Linux user
//!   address spaces are at most 52 bits), so the model reports it.

use core::fmt;

use thiserror::Error;

use crate::granule::GRANULE_SIZE;
use crate::tag::Tag;

/// Bits of a user address that translation uses (55:0).
pub const ADDRESS_BITS: u32 = 56;

/// The lowest bit of the logical tag (bits 59:56).
pub const TAG_SHIFT: u32 = 56;

/// Bits 55:0: the part of a pointer that translation sees.
const ADDRESS_MASK: u64 = (1 << ADDRESS_BITS) - 1;

/// Bits 59:56 in place.
const TAG_MASK_IN_PTR: u64 = 0xf << TAG_SHIFT;

/// Errors of address arithmetic and construction.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
pub enum PtrError {
    #[error("{raw:#x} is not an untagged address: bits 63:56 must be 0")]
    TopByteSet { raw: u64 },
    #[error("{addr} + {bytes:#x} leaves the 56-bit address space")]
    Overflow { addr: VirtAddr, bytes: u64 },
    #[error("{addr} - {bytes:#x} goes below address 0")]
    Underflow { addr: VirtAddr, bytes: u64 },
}

/// An untagged user virtual address: bits 55:0 of a pointer, top byte clear.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct VirtAddr(u64);

impl VirtAddr {
    pub const ZERO: VirtAddr = VirtAddr(0);
    /// The highest address the 56 translated bits can name.
    pub const MAX: VirtAddr = VirtAddr(ADDRESS_MASK);

    /// The address `raw`, or `None` if any of bits 63:56 is set.
    pub const fn new(raw: u64) -> Option<VirtAddr> {
        if raw & !ADDRESS_MASK == 0 {
            Some(VirtAddr(raw))
        } else {
            None
        }
    }

    /// Like [`VirtAddr::new`], with the offending value in the error.
    pub const fn try_new(raw: u64) -> Result<VirtAddr, PtrError> {
        match VirtAddr::new(raw) {
            Some(addr) => Ok(addr),
            None => Err(PtrError::TopByteSet { raw }),
        }
    }

    pub const fn as_u64(self) -> u64 {
        self.0
    }

    pub fn checked_add(self, bytes: u64) -> Result<VirtAddr, PtrError> {
        self.0
            .checked_add(bytes)
            .and_then(VirtAddr::new)
            .ok_or(PtrError::Overflow { addr: self, bytes })
    }

    pub fn checked_sub(self, bytes: u64) -> Result<VirtAddr, PtrError> {
        self.0
            .checked_sub(bytes)
            .map(VirtAddr)
            .ok_or(PtrError::Underflow { addr: self, bytes })
    }

    /// The number of bytes from `base` up to `self`, `None` if `self` lies
    /// below `base`.
    pub const fn offset_from(self, base: VirtAddr) -> Option<u64> {
        self.0.checked_sub(base.0)
    }

    /// Whether the address is a multiple of `align` (a power of two).
    pub const fn is_aligned(self, align: u64) -> bool {
        debug_assert!(align.is_power_of_two());
        self.0 & (align - 1) == 0
    }

    /// The address rounded down to a multiple of `align` (a power of two).
    pub const fn align_down(self, align: u64) -> VirtAddr {
        debug_assert!(align.is_power_of_two());
        VirtAddr(self.0 & !(align - 1))
    }

    /// The base of the 16-byte granule holding this address.
    pub const fn granule_base(self) -> VirtAddr {
        self.align_down(GRANULE_SIZE)
    }

    pub const fn is_granule_aligned(self) -> bool {
        self.is_aligned(GRANULE_SIZE)
    }

    /// A pointer to this address carrying logical tag `tag`, bits 63:60 clear.
    pub const fn with_tag(self, tag: Tag) -> TaggedPtr {
        TaggedPtr::from_parts(self, tag)
    }

    /// A pointer to this address with an all-zero top byte (what `mmap`
    /// returns).
    pub const fn to_ptr(self) -> TaggedPtr {
        TaggedPtr(self.0)
    }
}

impl fmt::Debug for VirtAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "VirtAddr({:#x})", self.0)
    }
}

impl fmt::Display for VirtAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:#x}", self.0)
    }
}

/// A 64-bit user pointer: bits 55:0 address, bits 59:56 logical tag, bits
/// 63:60 ignored but kept.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct TaggedPtr(u64);

impl TaggedPtr {
    /// The pointer whose register value is `raw`. Every value is valid.
    pub const fn from_raw(raw: u64) -> TaggedPtr {
        TaggedPtr(raw)
    }

    /// The register value, top byte included.
    pub const fn raw(self) -> u64 {
        self.0
    }

    /// A pointer to `addr` with logical tag `tag` and bits 63:60 clear.
    pub const fn from_parts(addr: VirtAddr, tag: Tag) -> TaggedPtr {
        TaggedPtr(addr.0 | (tag.value() as u64) << TAG_SHIFT)
    }

    /// The logical tag, bits 59:56 (`AArch64.AllocationTagFromAddress`).
    pub const fn tag(self) -> Tag {
        Tag::from_low_bits(self.0 >> TAG_SHIFT)
    }

    /// The same pointer with bits 59:56 replaced by `tag`
    /// (`AArch64.AddressWithAllocationTag`).
    pub const fn with_tag(self, tag: Tag) -> TaggedPtr {
        TaggedPtr(self.0 & !TAG_MASK_IN_PTR | (tag.value() as u64) << TAG_SHIFT)
    }

    /// The address translation sees: bits 55:0, top byte cleared.
    pub const fn addr(self) -> VirtAddr {
        VirtAddr(self.0 & ADDRESS_MASK)
    }

    /// The same top byte (tag and bits 63:60) in front of `addr`.
    pub const fn with_addr(self, addr: VirtAddr) -> TaggedPtr {
        TaggedPtr(self.0 & !ADDRESS_MASK | addr.0)
    }

    /// `self + bytes`, keeping the top byte; an error if bits 55:0 overflow.
    pub fn checked_add(self, bytes: u64) -> Result<TaggedPtr, PtrError> {
        Ok(self.with_addr(self.addr().checked_add(bytes)?))
    }

    /// `self - bytes`, keeping the top byte; an error below address 0.
    pub fn checked_sub(self, bytes: u64) -> Result<TaggedPtr, PtrError> {
        Ok(self.with_addr(self.addr().checked_sub(bytes)?))
    }

    /// `self + delta` for a signed byte offset, keeping the top byte.
    pub fn checked_offset(self, delta: i64) -> Result<TaggedPtr, PtrError> {
        if delta >= 0 {
            self.checked_add(delta.unsigned_abs())
        } else {
            self.checked_sub(delta.unsigned_abs())
        }
    }

    /// The pointer to the base of its 16-byte granule, top byte kept: the
    /// address LDG reads (`Align(address, TAG_GRANULE)`).
    pub const fn granule_base(self) -> TaggedPtr {
        self.with_addr(self.addr().granule_base())
    }

    pub const fn is_granule_aligned(self) -> bool {
        self.addr().is_granule_aligned()
    }
}

impl From<u64> for TaggedPtr {
    fn from(raw: u64) -> TaggedPtr {
        TaggedPtr(raw)
    }
}

impl From<VirtAddr> for TaggedPtr {
    fn from(addr: VirtAddr) -> TaggedPtr {
        addr.to_ptr()
    }
}

impl fmt::Debug for TaggedPtr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "TaggedPtr({:#x})", self.0)
    }
}

impl fmt::Display for TaggedPtr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:#x}", self.0)
    }
}

/// Whether two pointers name the same address, ignoring the top byte.
///
/// Fault addresses are compared this way: Linux clears the tag bits of
/// `si_addr` unless the handler set `SA_EXPOSE_TAGBITS`, QEMU keeps them, and
/// bits 63:60 of FAR_EL1 are UNKNOWN for tag check faults.
pub const fn same_address_bits(a: TaggedPtr, b: TaggedPtr) -> bool {
    a.0 & ADDRESS_MASK == b.0 & ADDRESS_MASK
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::{t as tag, va};
    use proptest::prelude::*;

    #[test]
    fn tag_lives_in_bits_59_to_56() {
        // The scenario language's example raw pointer 0x0500_7f00_0000_1020:
        // tag 5, address 0x7f00_0000_1020.
        let p = TaggedPtr::from_raw(0x0500_7f00_0000_1020);
        assert_eq!(p.tag(), tag(5));
        assert_eq!(p.addr(), va(0x7f00_0000_1020));
        // Bits 63:60 are not part of the tag, and are ignored by translation.
        let q = TaggedPtr::from_raw(0xa300_0000_0000_0040);
        assert_eq!(q.tag(), tag(3));
        assert_eq!(q.addr(), va(0x40));
        assert_eq!(q.with_tag(tag(12)).raw(), 0xac00_0000_0000_0040);
        assert_eq!(
            TaggedPtr::from_parts(va(0x1000), tag(15)).raw(),
            0x0f00_0000_0000_1000
        );
        assert_eq!(va(0x1000).with_tag(tag(1)).raw(), 0x0100_0000_0000_1000);
        assert_eq!(va(0x1000).to_ptr().tag(), Tag::ZERO);
    }

    #[test]
    fn virt_addr_rejects_a_top_byte() {
        assert_eq!(VirtAddr::new(0x00ff_ffff_ffff_ffff), Some(VirtAddr::MAX));
        assert_eq!(VirtAddr::new(0x0100_0000_0000_0000), None);
        assert_eq!(
            VirtAddr::try_new(0x8000_0000_0000_0000),
            Err(PtrError::TopByteSet {
                raw: 0x8000_0000_0000_0000
            })
        );
    }

    #[test]
    fn arithmetic_keeps_the_top_byte_and_never_wraps() {
        let p = TaggedPtr::from_raw(0x9700_0000_0000_1ff8);
        assert_eq!(p.checked_add(0x10).unwrap().raw(), 0x9700_0000_0000_2008);
        assert_eq!(p.checked_sub(0x1ff8).unwrap().raw(), 0x9700_0000_0000_0000);
        assert_eq!(p.checked_offset(-8).unwrap().raw(), 0x9700_0000_0000_1ff0);
        assert_eq!(p.checked_offset(8).unwrap().raw(), 0x9700_0000_0000_2000);
        assert_eq!(
            p.checked_sub(0x1ff9),
            Err(PtrError::Underflow {
                addr: va(0x1ff8),
                bytes: 0x1ff9
            })
        );
        // One past bits 55:0 would carry into the tag on hardware.
        let top = VirtAddr::MAX.with_tag(tag(2));
        assert_eq!(
            top.checked_add(1),
            Err(PtrError::Overflow {
                addr: VirtAddr::MAX,
                bytes: 1
            })
        );
        assert!(top.checked_offset(i64::MIN).is_err());
        assert_eq!(va(0x30).offset_from(va(0x10)), Some(0x20));
        assert_eq!(va(0x10).offset_from(va(0x30)), None);
        assert!(va(u64::MAX >> 8).checked_add(u64::MAX).is_err());
    }

    #[test]
    fn granule_alignment() {
        let p = TaggedPtr::from_raw(0x0300_0000_0000_102f);
        assert_eq!(p.granule_base().raw(), 0x0300_0000_0000_1020);
        assert!(!p.is_granule_aligned());
        assert!(p.granule_base().is_granule_aligned());
        assert_eq!(va(0x1234).align_down(0x1000), va(0x1000));
        assert!(va(0x2000).is_aligned(0x1000));
    }

    #[test]
    fn fault_addresses_compare_on_bits_55_to_0() {
        let a = TaggedPtr::from_raw(0x0500_0000_0000_1020);
        assert!(same_address_bits(a, a.with_tag(Tag::ZERO)));
        assert!(same_address_bits(
            a,
            TaggedPtr::from_raw(0xf000_0000_0000_1020)
        ));
        assert!(!same_address_bits(a, a.checked_add(1).unwrap()));
    }

    #[test]
    fn formatting_is_hex() {
        let p = TaggedPtr::from_raw(0x0500_0000_0000_1020);
        assert_eq!(format!("{p:?}"), "TaggedPtr(0x500000000001020)");
        assert_eq!(format!("{p}"), "0x500000000001020");
        assert_eq!(format!("{:?}", va(0x1000)), "VirtAddr(0x1000)");
        assert_eq!(format!("{}", va(0x1000)), "0x1000");
        assert_eq!(
            PtrError::Overflow {
                addr: VirtAddr::MAX,
                bytes: 0x10
            }
            .to_string(),
            "0xffffffffffffff + 0x10 leaves the 56-bit address space"
        );
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]

        #[test]
        fn parts_roundtrip(raw in any::<u64>(), t in 0u8..16) {
            let p = TaggedPtr::from_raw(raw);
            prop_assert_eq!(p.with_addr(p.addr()), p);
            let retagged = p.with_tag(Tag::new(t).unwrap());
            prop_assert_eq!(retagged.tag().value(), t);
            prop_assert!(same_address_bits(p, retagged));
            prop_assert_eq!(retagged.raw() >> 60, raw >> 60);
        }

        #[test]
        fn add_then_sub_is_identity(raw in any::<u64>(), n in 0u64..(1 << 20)) {
            let p = TaggedPtr::from_raw(raw);
            if let Ok(q) = p.checked_add(n) {
                prop_assert_eq!(q.checked_sub(n), Ok(p));
                prop_assert_eq!(q.addr().offset_from(p.addr()), Some(n));
            } else {
                prop_assert!(p.addr().as_u64() + n > VirtAddr::MAX.as_u64());
            }
        }
    }
}
