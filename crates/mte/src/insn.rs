//! The tag-computing instructions: IRG, ADDG, SUBG and GMI.
//!
//! These return register values only; none touches memory. (LDG and the
//! STG family, which do, are in [`crate::tag_store`].)
//!
//! Configuration they read, as the architecture names it:
//! - GCR_EL1.Exclude, the process's *exclude* mask. Linux writes it as the
//!   complement of the `PR_MTE_TAG_MASK` include mask (`mte_update_gcr_excl()`),
//!   so callers pass `include.complement()`.
//! - GCR_EL1.RRND: Linux sets it to 1 (`mte_cpu_setup()`), making IRG's
//!   random choice IMPLEMENTATION DEFINED. The model's choice: draw a random
//!   start tag from the caller's RNG and take the first non-excluded tag from
//!   there, `AArch64.ChooseNonExcludedTag(start, 0, exclude)`. Tags that
//!   follow a run of excluded tags are therefore likelier (with include
//!   `0xfffe`, tag 1 comes up 2/16 of the time, tags 2..15 1/16 each);
//!   QEMU's choice (an LFSR offset from the previous tag) is not uniform
//!   either.
//! - SCTLR_EL1.ATA0: Linux sets it for every task on an MTE system, so the
//!   "allocation tag access disabled, tag is 0" branches of the pseudocode
//!   never apply to user code and are not modelled.
//!
//! Determinism: IRG draws exactly one `u32` from the RNG per call, whatever
//! the masks, so the stream a seed produces does not depend on them.
//!
//! Operand ranges are those of the encodings: ADDG/SUBG `uimm6 * 16`
//! (0..=1008 bytes) and `uimm4` (0..=15); out-of-range operands are
//! [`InsnError`]s, never panics.

use rand_core::Rng;
use thiserror::Error;

use crate::granule::{GRANULE_SIZE, LOG2_TAG_GRANULE};
use crate::ptr::{PtrError, TaggedPtr};
use crate::tag::{TAG_BITS, TAG_COUNT, Tag, TagMask};

/// Errors of tag instruction operands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
pub enum InsnError {
    #[error("ADDG/SUBG offset {offset} is above {max}")]
    OffsetTooLarge { offset: u64, max: u64 },
    #[error("ADDG/SUBG offset {offset} is not a multiple of 16")]
    OffsetMisaligned { offset: u64 },
    #[error("tag offset {tag_offset} is out of range (0..=15)")]
    TagOffsetTooLarge { tag_offset: u64 },
    #[error(transparent)]
    Address(#[from] PtrError),
}

/// The 4-bit tag offset operand of ADDG/SUBG (`uimm4`), and the offset of
/// `AArch64.ChooseNonExcludedTag`.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Debug, Default)]
pub struct TagOffset(u8);

impl TagOffset {
    pub const ZERO: TagOffset = TagOffset(0);

    pub const fn new(steps: u8) -> Option<TagOffset> {
        if (steps as usize) < TAG_COUNT {
            Some(TagOffset(steps))
        } else {
            None
        }
    }

    pub const fn steps(self) -> u8 {
        self.0
    }
}

impl TryFrom<u64> for TagOffset {
    type Error = InsnError;
    fn try_from(tag_offset: u64) -> Result<TagOffset, InsnError> {
        u8::try_from(tag_offset)
            .ok()
            .and_then(TagOffset::new)
            .ok_or(InsnError::TagOffsetTooLarge { tag_offset })
    }
}

/// The byte offset operand of ADDG/SUBG: `uimm6 << LOG2_TAG_GRANULE`, a
/// multiple of 16 from 0 to 1008.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Debug, Default)]
pub struct GranuleOffset(u16);

impl GranuleOffset {
    /// Largest `uimm6`, 63.
    const MAX_UIMM6: u64 = 63;
    /// The largest offset, 1008 bytes.
    pub const MAX_BYTES: u64 = Self::MAX_UIMM6 << LOG2_TAG_GRANULE;

    pub fn new(bytes: u64) -> Result<GranuleOffset, InsnError> {
        if bytes > Self::MAX_BYTES {
            return Err(InsnError::OffsetTooLarge {
                offset: bytes,
                max: Self::MAX_BYTES,
            });
        }
        if !bytes.is_multiple_of(GRANULE_SIZE) {
            return Err(InsnError::OffsetMisaligned { offset: bytes });
        }
        Ok(GranuleOffset(bytes as u16))
    }

    pub const fn bytes(self) -> u64 {
        self.0 as u64
    }
}

/// Arm ARM `AArch64.ChooseNonExcludedTag(tag, offset, exclude)`.
///
/// Every tag excluded gives 0. Otherwise, with offset 0 the result is `start`
/// itself if allowed, else the next allowed tag above it (wrapping 15 -> 0);
/// with offset `k > 0` it takes `k` steps, each to the next allowed tag
/// strictly above the current one, so `start` itself is never counted.
pub fn choose_non_excluded_tag(start: Tag, offset: TagOffset, exclude: TagMask) -> Tag {
    if exclude.is_full() {
        return Tag::ZERO;
    }
    let mut tag = start;
    if offset == TagOffset::ZERO {
        while exclude.contains(tag) {
            tag = tag.wrapping_next();
        }
    }
    for _ in 0..offset.steps() {
        tag = tag.wrapping_next();
        while exclude.contains(tag) {
            tag = tag.wrapping_next();
        }
    }
    tag
}

/// IRG `Xd, Xn, Xm`: `ptr` with a random tag that neither `gcr_exclude`
/// (GCR_EL1.Exclude) nor `exclude_operand` (`Xm<15:0>`) excludes; 0 if
/// together they exclude every tag. Bits other than 59:56 are `ptr`'s.
///
/// Arm ARM IRG: `exclude = X[m]<15:0> OR GCR_EL1.Exclude`, then
/// (RRND = 1) an IMPLEMENTATION DEFINED choice among the allowed tags, which
/// the model makes as described in the module comment.
pub fn irg<R: Rng + ?Sized>(
    ptr: TaggedPtr,
    gcr_exclude: TagMask,
    exclude_operand: TagMask,
    rng: &mut R,
) -> TaggedPtr {
    // The top bits of a u32 are the best-mixed for any generator.
    let start = Tag::from_low_bits(u64::from(rng.next_u32() >> (u32::BITS - TAG_BITS)));
    let tag = choose_non_excluded_tag(start, TagOffset::ZERO, gcr_exclude | exclude_operand);
    ptr.with_tag(tag)
}

/// ADDG `Xd, Xn, #offset, #tag_offset`: `ptr + offset` with tag
/// `ChooseNonExcludedTag(tag of ptr, tag_offset, GCR_EL1.Exclude)`.
///
/// Arm ARM ADDG; the address sum must stay within bits 55:0 (see
/// [`crate::ptr`]), else [`InsnError::Address`].
pub fn addg(
    ptr: TaggedPtr,
    offset: GranuleOffset,
    tag_offset: TagOffset,
    gcr_exclude: TagMask,
) -> Result<TaggedPtr, InsnError> {
    let tag = choose_non_excluded_tag(ptr.tag(), tag_offset, gcr_exclude);
    Ok(ptr.checked_add(offset.bytes())?.with_tag(tag))
}

/// SUBG `Xd, Xn, #offset, #tag_offset`: `ptr - offset`; the tag offset is
/// still ADDED (Arm ARM SUBG calls `ChooseNonExcludedTag` exactly as ADDG).
pub fn subg(
    ptr: TaggedPtr,
    offset: GranuleOffset,
    tag_offset: TagOffset,
    gcr_exclude: TagMask,
) -> Result<TaggedPtr, InsnError> {
    let tag = choose_non_excluded_tag(ptr.tag(), tag_offset, gcr_exclude);
    Ok(ptr.checked_sub(offset.bytes())?.with_tag(tag))
}

/// GMI `Xd, Xn, Xm`: `mask` with the bit of `ptr`'s tag set (Arm ARM GMI:
/// `mask<UInt(tag)> = '1'`). Only bits 15:0 of `Xm` are modelled; the
/// instruction passes bits 63:16 through unchanged.
pub fn gmi(ptr: TaggedPtr, mask: TagMask) -> TagMask {
    mask.with(ptr.tag())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::t;
    use proptest::prelude::*;
    use rand_core::SeedableRng;
    use rand_xoshiro::Xoshiro256PlusPlus;

    fn off(k: u8) -> TagOffset {
        TagOffset::new(k).unwrap()
    }

    fn m(bits: u16) -> TagMask {
        TagMask::from_bits(bits)
    }

    fn bytes(n: u64) -> GranuleOffset {
        GranuleOffset::new(n).unwrap()
    }

    /// A fake RNG that returns fixed u32 values, to pin IRG's start tag.
    struct Fixed(Vec<u32>);
    impl rand_core::TryRng for Fixed {
        type Error = core::convert::Infallible;
        fn try_next_u32(&mut self) -> Result<u32, Self::Error> {
            Ok(self.0.remove(0))
        }
        fn try_next_u64(&mut self) -> Result<u64, Self::Error> {
            unreachable!("IRG draws u32 only")
        }
        fn try_fill_bytes(&mut self, _: &mut [u8]) -> Result<(), Self::Error> {
            unreachable!("IRG draws u32 only")
        }
    }

    #[test]
    fn choose_with_offset_zero_keeps_an_allowed_start() {
        // ChooseNonExcludedTag: offset 0 returns the start tag when allowed...
        assert_eq!(choose_non_excluded_tag(t(5), off(0), m(0x0001)), t(5));
        // ...else the next allowed tag above it, wrapping 15 -> 0.
        assert_eq!(choose_non_excluded_tag(t(0), off(0), m(0x0001)), t(1));
        assert_eq!(choose_non_excluded_tag(t(14), off(0), m(0xc000)), t(0));
        assert_eq!(choose_non_excluded_tag(t(14), off(0), m(0xc001)), t(1));
    }

    #[test]
    fn choose_with_offset_counts_allowed_tags_after_start() {
        // No exclusion: plain 4-bit addition.
        assert_eq!(choose_non_excluded_tag(t(3), off(4), TagMask::EMPTY), t(7));
        assert_eq!(choose_non_excluded_tag(t(14), off(3), TagMask::EMPTY), t(1));
        // Exclude {0, 3, 4}: from 2, one step skips 3 and 4 to 5.
        assert_eq!(choose_non_excluded_tag(t(2), off(1), m(0x0019)), t(5));
        // From 15 with 0 excluded: 15 -> (0 skipped) 1 -> 2.
        assert_eq!(choose_non_excluded_tag(t(15), off(2), m(0x0001)), t(2));
        // A start tag that is itself excluded is still the starting point.
        assert_eq!(choose_non_excluded_tag(t(0), off(1), m(0x0001)), t(1));
        // Offset 15 with only {7} allowed: every step lands on 7.
        assert_eq!(choose_non_excluded_tag(t(2), off(15), !m(0x0080)), t(7));
        // Offset k over 16 allowed tags wraps: 9 + 15 = 24 = 8 (mod 16).
        assert_eq!(choose_non_excluded_tag(t(9), off(15), TagMask::EMPTY), t(8));
    }

    #[test]
    fn choose_with_everything_excluded_gives_zero() {
        for start in Tag::all() {
            assert_eq!(
                choose_non_excluded_tag(start, off(0), TagMask::ALL),
                Tag::ZERO
            );
            assert_eq!(
                choose_non_excluded_tag(start, off(9), TagMask::ALL),
                Tag::ZERO
            );
        }
    }

    #[test]
    fn irg_with_include_0xfffe_never_gives_zero() {
        // Linux-style include 0xfffe: GCR_EL1.Exclude = {0}. Start tags 0 and
        // 1 both give 1; every other start gives itself.
        let gcr = m(0xfffe).complement();
        let p = TaggedPtr::from_raw(0x0000_7f00_0000_1000);
        let starts: Vec<u32> = (0..16u32).map(|s| s << 28).collect();
        let mut rng = Fixed(starts);
        let tags: Vec<u8> = (0..16)
            .map(|_| irg(p, gcr, TagMask::EMPTY, &mut rng).tag().value())
            .collect();
        assert_eq!(
            tags,
            vec![1, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15]
        );
        let mut rng = Xoshiro256PlusPlus::seed_from_u64(1);
        for _ in 0..500 {
            let q = irg(p, gcr, TagMask::EMPTY, &mut rng);
            assert_ne!(q.tag(), Tag::ZERO);
            assert_eq!(q.addr(), p.addr());
        }
    }

    #[test]
    fn irg_with_include_zero_gives_zero() {
        // A fresh process has include mask 0: GCR_EL1.Exclude = 0xffff.
        let gcr = TagMask::EMPTY.complement();
        let p = TaggedPtr::from_raw(0x0900_0000_0000_2000);
        let mut rng = Xoshiro256PlusPlus::seed_from_u64(7);
        for _ in 0..32 {
            assert_eq!(
                irg(p, gcr, TagMask::EMPTY, &mut rng).raw(),
                0x0000_0000_0000_2000
            );
        }
    }

    #[test]
    fn irg_unions_the_operand_with_gcr() {
        // GCR excludes {0}; Xm excludes 1..=14: only 15 is left.
        let gcr = m(0x0001);
        let p = TaggedPtr::from_raw(0xa000_0000_0000_0040);
        let mut rng = Xoshiro256PlusPlus::seed_from_u64(3);
        for _ in 0..32 {
            // Bits 63:60 and the address are kept.
            assert_eq!(
                irg(p, gcr, m(0x7ffe), &mut rng).raw(),
                0xaf00_0000_0000_0040
            );
        }
        // The operand alone excluding everything but 0 still loses to GCR.
        assert_eq!(irg(p, gcr, m(0xfffe), &mut rng).tag(), Tag::ZERO);
    }

    #[test]
    fn irg_is_deterministic_for_a_seed_and_draws_once() {
        let p = TaggedPtr::from_raw(0x1000);
        let run = |seed, gcr: TagMask| {
            let mut rng = Xoshiro256PlusPlus::seed_from_u64(seed);
            let tags: Vec<Tag> = (0..64)
                .map(|_| irg(p, gcr, TagMask::EMPTY, &mut rng).tag())
                .collect();
            (tags, rng.next_u64())
        };
        assert_eq!(run(42, m(1)), run(42, m(1)));
        assert_ne!(run(42, m(1)).0, run(43, m(1)).0);
        // One draw per IRG whatever the mask: the stream after is the same.
        assert_eq!(run(42, m(1)).1, run(42, TagMask::ALL).1);
    }

    #[test]
    fn addg_adds_address_and_steps_tag() {
        // Include 0xfffe (exclude {0}).
        let gcr = m(0x0001);
        let p = TaggedPtr::from_raw(0x0e00_0000_0000_1000);
        // Tag 14 + 1 = 15.
        let q = addg(p, bytes(0x20), off(1), gcr).unwrap();
        assert_eq!(q.raw(), 0x0f00_0000_0000_1020);
        // Tag 14 + 2 wraps over 15 and the excluded 0 to 1.
        let q = addg(p, bytes(1008), off(2), gcr).unwrap();
        assert_eq!(q.raw(), 0x0100_0000_0000_13f0);
        // Offset 0, tag offset 0 leaves an allowed tag alone...
        assert_eq!(addg(p, bytes(0), off(0), gcr).unwrap(), p);
        // ...but moves an excluded one: tag 0 becomes 1.
        let z = TaggedPtr::from_raw(0x0000_0000_0000_1000);
        assert_eq!(addg(z, bytes(0), off(0), gcr).unwrap().tag(), t(1));
    }

    #[test]
    fn addg_wraps_from_15_to_0_over_an_exclude_mask() {
        // Exclude {1, 2}: 15 -> 0 -> (1, 2 skipped) 3.
        let gcr = m(0x0006);
        let p = TaggedPtr::from_raw(0x0f00_0000_0000_2000);
        assert_eq!(addg(p, bytes(0), off(1), gcr).unwrap().tag(), t(0));
        assert_eq!(addg(p, bytes(0), off(2), gcr).unwrap().tag(), t(3));
        // All excluded: tag 0.
        assert_eq!(
            addg(p, bytes(16), off(5), TagMask::ALL).unwrap().raw(),
            0x0000_0000_0000_2010
        );
    }

    #[test]
    fn subg_subtracts_address_but_adds_tag_offset() {
        let p = TaggedPtr::from_raw(0x0300_0000_0000_1000);
        let q = subg(p, bytes(0x10), off(2), TagMask::EMPTY).unwrap();
        assert_eq!(q.raw(), 0x0500_0000_0000_0ff0);
        // Exclude {4}: 3 + 1 skips 4 to 5.
        let q = subg(p, bytes(0x3f0), off(1), m(0x0010)).unwrap();
        assert_eq!(q.raw(), 0x0500_0000_0000_0c10);
        assert_eq!(
            subg(
                TaggedPtr::from_raw(0x10),
                bytes(0x20),
                off(0),
                TagMask::EMPTY
            ),
            Err(InsnError::Address(PtrError::Underflow {
                addr: crate::ptr::VirtAddr::new(0x10).unwrap(),
                bytes: 0x20
            }))
        );
    }

    #[test]
    fn addg_overflow_is_an_error() {
        let top = crate::ptr::VirtAddr::MAX.align_down(16).to_ptr();
        assert!(matches!(
            addg(top, bytes(16), off(0), TagMask::EMPTY),
            Err(InsnError::Address(PtrError::Overflow { .. }))
        ));
    }

    #[test]
    fn operand_validation() {
        assert_eq!(GranuleOffset::new(1008).map(GranuleOffset::bytes), Ok(1008));
        assert_eq!(GranuleOffset::new(0).map(GranuleOffset::bytes), Ok(0));
        assert_eq!(
            GranuleOffset::new(1024),
            Err(InsnError::OffsetTooLarge {
                offset: 1024,
                max: 1008
            })
        );
        assert_eq!(
            GranuleOffset::new(24),
            Err(InsnError::OffsetMisaligned { offset: 24 })
        );
        assert_eq!(TagOffset::try_from(15u64), Ok(off(15)));
        assert_eq!(
            TagOffset::try_from(16u64),
            Err(InsnError::TagOffsetTooLarge { tag_offset: 16 })
        );
        assert_eq!(
            TagOffset::try_from(1u64 << 40),
            Err(InsnError::TagOffsetTooLarge {
                tag_offset: 1 << 40
            })
        );
        assert_eq!(TagOffset::new(16), None);
    }

    #[test]
    fn gmi_sets_the_pointer_tag_bit() {
        let p = TaggedPtr::from_raw(0x0500_0000_0000_0000);
        assert_eq!(gmi(p, m(0x0001)), m(0x0021));
        assert_eq!(gmi(p, m(0x0020)), m(0x0020));
        assert_eq!(
            gmi(TaggedPtr::from_raw(0x0f00_0000_0000_0000), TagMask::EMPTY),
            m(0x8000)
        );
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]

        #[test]
        fn irg_never_excluded_unless_all_are(seed in any::<u64>(), gcr in any::<u16>(), xm in any::<u16>()) {
            let mut rng = Xoshiro256PlusPlus::seed_from_u64(seed);
            let exclude = m(gcr) | m(xm);
            for _ in 0..16 {
                let tag = irg(TaggedPtr::from_raw(0x1000), m(gcr), m(xm), &mut rng).tag();
                if exclude.is_full() {
                    prop_assert_eq!(tag, Tag::ZERO);
                } else {
                    prop_assert!(!exclude.contains(tag));
                }
            }
        }

        #[test]
        fn addg_k_equals_k_single_steps(start in 0u8..16, k in 1u8..16, gcr in any::<u16>()) {
            let p = TaggedPtr::from_raw(0x1000).with_tag(t(start));
            let direct = addg(p, bytes(0), off(k), m(gcr)).unwrap();
            let mut stepped = p;
            for _ in 0..k {
                stepped = addg(stepped, bytes(0), off(1), m(gcr)).unwrap();
            }
            prop_assert_eq!(direct, stepped);
            // ADDG and SUBG choose the same tag.
            prop_assert_eq!(subg(p, bytes(0), off(k), m(gcr)).unwrap(), direct);
        }

        #[test]
        fn choose_result_is_allowed(start in 0u8..16, k in 0u8..16, ex in any::<u16>()) {
            let tag = choose_non_excluded_tag(t(start), off(k), m(ex));
            if m(ex).is_full() {
                prop_assert_eq!(tag, Tag::ZERO);
            } else {
                prop_assert!(!m(ex).contains(tag));
            }
        }
    }
}
