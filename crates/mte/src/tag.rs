//! Allocation and logical tags, and sets of tags.
//!
//! Owns [`Tag`], the 4-bit value MTE attaches to every 16-byte granule of
//! tagged memory (the *allocation tag*) and to every pointer (the *logical
//! tag*, bits 59:56), and [`TagMask`], a set of tags held as the 16-bit masks
//! the architecture uses: GCR_EL1.Exclude, the `Xm` exclude operand of IRG,
//! the result of GMI, and Linux's `PR_MTE_TAG_MASK` include mask.
//!
//! Invariants: a `Tag` is always in `0..=15`; bit `n` of a `TagMask` stands
//! for tag `n` and every `u16` is a valid mask. Whether a mask means "tags
//! allowed" (include) or "tags forbidden" (exclude) is said by the name of the
//! value holding it; [`TagMask::complement`] converts between the two, as
//! Linux does when it writes GCR_EL1.Exclude from the prctl include mask.

use core::fmt;
use core::ops::{BitAnd, BitOr, Not};

use thiserror::Error;

/// Bits in a tag (Arm ARM: allocation and logical tags are 4 bits).
pub const TAG_BITS: u32 = 4;

/// The number of distinct tags, 16.
pub const TAG_COUNT: usize = 1 << TAG_BITS;

/// A tag value was outside `0..=15`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
pub enum TagError {
    #[error("tag {value} is out of range (tags are 0..=15)")]
    OutOfRange { value: u64 },
}

/// A 4-bit MTE tag (allocation tag of a granule or logical tag of a pointer).
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Tag(u8);

impl Tag {
    /// Tag 0: the tag of fresh `PROT_MTE` memory and of an `mmap` result.
    pub const ZERO: Tag = Tag(0);
    /// The largest tag, 15.
    pub const MAX: Tag = Tag((TAG_COUNT - 1) as u8);

    /// The tag `value`, or `None` if it does not fit in 4 bits.
    pub const fn new(value: u8) -> Option<Tag> {
        if (value as usize) < TAG_COUNT {
            Some(Tag(value))
        } else {
            None
        }
    }

    /// The low 4 bits of `bits` as a tag: how the architecture reads a tag
    /// field out of a register (`AArch64.AllocationTagFromAddress` takes
    /// `address<59:56>`).
    pub const fn from_low_bits(bits: u64) -> Tag {
        Tag((bits & (TAG_COUNT as u64 - 1)) as u8)
    }

    pub const fn value(self) -> u8 {
        self.0
    }

    /// `tag + 1` modulo 16: the step of `AArch64.ChooseNonExcludedTag`,
    /// whose 4-bit arithmetic wraps from 15 to 0.
    pub const fn wrapping_next(self) -> Tag {
        Tag::from_low_bits(self.0 as u64 + 1)
    }

    /// Every tag, 0 to 15.
    pub fn all() -> impl Iterator<Item = Tag> {
        (0..TAG_COUNT as u8).map(Tag)
    }
}

impl TryFrom<u8> for Tag {
    type Error = TagError;
    fn try_from(value: u8) -> Result<Tag, TagError> {
        Tag::new(value).ok_or(TagError::OutOfRange {
            value: u64::from(value),
        })
    }
}

impl TryFrom<u64> for Tag {
    type Error = TagError;
    fn try_from(value: u64) -> Result<Tag, TagError> {
        u8::try_from(value)
            .ok()
            .and_then(Tag::new)
            .ok_or(TagError::OutOfRange { value })
    }
}

impl From<Tag> for u8 {
    fn from(tag: Tag) -> u8 {
        tag.0
    }
}

impl fmt::Debug for Tag {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Tag({:#x})", self.0)
    }
}

impl fmt::Display for Tag {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// A set of tags as a 16-bit mask, bit `n` standing for tag `n`.
///
/// Arm ARM: GCR_EL1.Exclude<15:0>, IRG's `Xm<15:0>` and GMI's result all use
/// this encoding. Linux: `PR_MTE_TAG_MASK` holds the *include* mask in this
/// encoding (shifted by `PR_MTE_TAG_SHIFT`, which is the kernel's business).
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct TagMask(u16);

impl TagMask {
    /// No tag.
    pub const EMPTY: TagMask = TagMask(0);
    /// Every tag.
    pub const ALL: TagMask = TagMask(u16::MAX);

    pub const fn from_bits(bits: u16) -> TagMask {
        TagMask(bits)
    }

    pub const fn bits(self) -> u16 {
        self.0
    }

    /// The set holding only `tag`.
    pub const fn single(tag: Tag) -> TagMask {
        TagMask(1 << tag.0)
    }

    pub const fn contains(self, tag: Tag) -> bool {
        self.0 & (1 << tag.0) != 0
    }

    /// Adds `tag`; returns whether it was absent.
    pub fn insert(&mut self, tag: Tag) -> bool {
        let absent = !self.contains(tag);
        self.0 |= 1 << tag.0;
        absent
    }

    /// Removes `tag`; returns whether it was present.
    pub fn remove(&mut self, tag: Tag) -> bool {
        let present = self.contains(tag);
        self.0 &= !(1 << tag.0);
        present
    }

    /// This set plus `tag`.
    pub const fn with(self, tag: Tag) -> TagMask {
        TagMask(self.0 | 1 << tag.0)
    }

    /// This set minus `tag`.
    pub const fn without(self, tag: Tag) -> TagMask {
        TagMask(self.0 & !(1 << tag.0))
    }

    /// Every tag not in this set: turns an include mask into an exclude mask
    /// and back. Linux: `mte_update_gcr_excl()` writes
    /// `GCR_EL1.Exclude = ~include & SYS_GCR_EL1_EXCL_MASK`.
    pub const fn complement(self) -> TagMask {
        TagMask(!self.0)
    }

    pub const fn union(self, other: TagMask) -> TagMask {
        TagMask(self.0 | other.0)
    }

    pub const fn intersection(self, other: TagMask) -> TagMask {
        TagMask(self.0 & other.0)
    }

    pub const fn is_empty(self) -> bool {
        self.0 == 0
    }

    /// Whether every tag is in the set (`IsOnes(exclude)` in the Arm ARM).
    pub const fn is_full(self) -> bool {
        self.0 == u16::MAX
    }

    /// The number of tags in the set.
    pub const fn len(self) -> u32 {
        self.0.count_ones()
    }

    /// The tags in the set, lowest first.
    pub fn iter(self) -> impl Iterator<Item = Tag> {
        Tag::all().filter(move |&t| self.contains(t))
    }
}

impl BitOr for TagMask {
    type Output = TagMask;
    fn bitor(self, rhs: TagMask) -> TagMask {
        self.union(rhs)
    }
}

impl BitAnd for TagMask {
    type Output = TagMask;
    fn bitand(self, rhs: TagMask) -> TagMask {
        self.intersection(rhs)
    }
}

impl Not for TagMask {
    type Output = TagMask;
    fn not(self) -> TagMask {
        self.complement()
    }
}

impl FromIterator<Tag> for TagMask {
    fn from_iter<I: IntoIterator<Item = Tag>>(iter: I) -> TagMask {
        iter.into_iter().fold(TagMask::EMPTY, TagMask::with)
    }
}

impl fmt::Debug for TagMask {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "TagMask({:#06x})", self.0)
    }
}

impl fmt::Display for TagMask {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:#06x}", self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::t;
    use proptest::prelude::*;

    #[test]
    fn tags_are_four_bits() {
        assert_eq!(Tag::new(0), Some(Tag::ZERO));
        assert_eq!(Tag::new(15), Some(Tag::MAX));
        assert_eq!(Tag::new(16), None);
        assert_eq!(Tag::new(0xff), None);
        assert_eq!(Tag::try_from(7u8).map(Tag::value), Ok(7));
        assert_eq!(Tag::try_from(16u8), Err(TagError::OutOfRange { value: 16 }));
        assert_eq!(
            Tag::try_from(0x1_0000_0005u64),
            Err(TagError::OutOfRange {
                value: 0x1_0000_0005
            })
        );
        assert_eq!(Tag::try_from(15u64), Ok(Tag::MAX));
        assert_eq!(Tag::all().count(), 16);
        assert_eq!(u8::from(t(9)), 9);
    }

    #[test]
    fn low_bits_and_wrapping_step() {
        // address<59:56> is a 4-bit field: only the low nibble counts.
        assert_eq!(Tag::from_low_bits(0x35), t(5));
        // ChooseNonExcludedTag steps with 4-bit arithmetic: 15 + 1 = 0.
        assert_eq!(t(15).wrapping_next(), t(0));
        assert_eq!(t(3).wrapping_next(), t(4));
    }

    #[test]
    fn formatting_is_hex_in_debug() {
        assert_eq!(format!("{:?}", t(11)), "Tag(0xb)");
        assert_eq!(format!("{}", t(11)), "11");
        assert_eq!(
            format!("{:?}", TagMask::from_bits(0xfffe)),
            "TagMask(0xfffe)"
        );
        assert_eq!(format!("{}", TagMask::from_bits(0x1)), "0x0001");
    }

    #[test]
    fn mask_set_operations() {
        let mut m = TagMask::EMPTY;
        assert!(m.is_empty());
        assert_eq!(m.len(), 0);
        assert!(m.insert(t(0)));
        assert!(!m.insert(t(0)));
        assert!(m.insert(t(15)));
        assert_eq!(m.bits(), 0x8001);
        assert!(m.contains(t(15)) && m.contains(t(0)) && !m.contains(t(1)));
        assert!(m.remove(t(15)));
        assert!(!m.remove(t(15)));
        assert_eq!(m, TagMask::single(t(0)));
        // Linux's default-style include mask 0xfffe (every tag but 0)
        // excludes exactly tag 0.
        assert_eq!(
            TagMask::from_bits(0xfffe).complement(),
            TagMask::single(t(0))
        );
        assert_eq!(!TagMask::EMPTY, TagMask::ALL);
        assert!(TagMask::ALL.is_full() && TagMask::ALL.len() == 16);
        assert_eq!(
            TagMask::from_bits(0x00f0) | TagMask::from_bits(0x0f00),
            TagMask::from_bits(0x0ff0)
        );
        assert_eq!(
            TagMask::from_bits(0x00ff) & TagMask::from_bits(0x0ff0),
            TagMask::from_bits(0x00f0)
        );
        assert_eq!(TagMask::from_bits(0x0a).with(t(0)).bits(), 0x0b);
        assert_eq!(TagMask::from_bits(0x0b).without(t(3)).bits(), 0x03);
        let tags: Vec<u8> = TagMask::from_bits(0x8012).iter().map(Tag::value).collect();
        assert_eq!(tags, vec![1, 4, 15]);
        let collected: TagMask = [t(2), t(3), t(2)].into_iter().collect();
        assert_eq!(collected.bits(), 0x000c);
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]

        #[test]
        fn complement_partitions_the_tags(bits in any::<u16>()) {
            let m = TagMask::from_bits(bits);
            prop_assert_eq!(m.len() + m.complement().len(), 16);
            prop_assert!((m & m.complement()).is_empty());
            prop_assert!((m | m.complement()).is_full());
            let rebuilt: TagMask = m.iter().collect();
            prop_assert_eq!(rebuilt, m);
        }
    }
}
