//! The tag load and tag-setting instructions: LDG, STG, STZG, ST2G, STZ2G,
//! STGP.
//!
//! Each instruction becomes a plan the kernel executes: [`plan_tag_store`]
//! says which granules get which tag and what happens to their data;
//! [`plan_tag_load`] says which granule LDG reads. Translation, permissions,
//! copy-on-write and the memory itself are the kernel's. Order matters: the
//! alignment check comes first, before any translation fault (Arm ARM
//! R_XCHFJ, as QEMU notes), so the kernel plans before it translates; a tag
//! store is a write for permission purposes (it faults on read-only pages and
//! breaks copy-on-write).
//!
//! Rules, from the Arm ARM instruction descriptions:
//! - STG/STZG/ST2G/STZ2G/STGP take an address that must be 16-byte aligned
//!   (`if !IsAligned(address, TAG_GRANULE) then AArch64.Abort(...
//!   AlignmentFault)`); ST2G/STZ2G need only 16, not 32. A misaligned address
//!   is an [`AlignmentFault`] and the instruction has no effect
//!   (Linux: `SIGBUS`/`BUS_ADRALN`).
//! - ST2G/STZ2G write the tags of `address` and `address + 16`; the second
//!   granule may lie on the next page.
//! - STZG/STZ2G also zero the data of the granule(s); STGP stores 16 bytes of
//!   data (`Xt`, `Xt2`) to the granule and its tag.
//! - The tag written is the logical tag of the address operand. (STG/STZG/
//!   ST2G/STZ2G take it from `Xt`, which the model takes equal to `Xn`, the
//!   `stg x0, [x0]` idiom; STGP always takes it from the address.)
//! - Tag writes to memory that is not Normal-Tagged are ignored (tag storage
//!   access is RAZ/WI there), but the data writes of STZG/STZ2G/STGP still
//!   happen; LDG there reads tag 0. See [`TagStore::tag_for`] and
//!   [`TagLoad::tag`].
//! - None of these accesses is tag checked: they write tags, they do not
//!   compare them (QEMU: "STGP writes to tag memory, it does not check it";
//!   STZG's data store uses an unchecked address).
//! - LDG aligns its address down to the granule (`Align(address,
//!   TAG_GRANULE)`): no alignment fault.
//!
//! Known shortcut: the LDG/STG immediate offset forms are the caller's to add
//! to the pointer first.

use thiserror::Error;

use crate::granule::GRANULE_SIZE;
use crate::ptr::{PtrError, TaggedPtr, VirtAddr};
use crate::tag::Tag;

/// The tag-setting instructions.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum TagStoreOp {
    /// Store Allocation Tag: one granule.
    Stg,
    /// Store Allocation Tag, Zeroing: one granule, data zeroed.
    Stzg,
    /// Store Allocation Tags: two granules.
    St2g,
    /// Store Allocation Tags, Zeroing: two granules, data zeroed.
    Stz2g,
    /// Store Allocation Tag and Pair of registers: one granule, 16 bytes of
    /// data stored.
    Stgp,
}

impl TagStoreOp {
    pub const ALL: [TagStoreOp; 5] = [
        TagStoreOp::Stg,
        TagStoreOp::Stzg,
        TagStoreOp::St2g,
        TagStoreOp::Stz2g,
        TagStoreOp::Stgp,
    ];

    /// How many granules the instruction tags.
    pub const fn granules(self) -> GranuleCount {
        match self {
            TagStoreOp::Stg | TagStoreOp::Stzg | TagStoreOp::Stgp => GranuleCount::One,
            TagStoreOp::St2g | TagStoreOp::Stz2g => GranuleCount::Two,
        }
    }

    /// What the instruction does to the data of its granules.
    pub const fn data(self) -> DataEffect {
        match self {
            TagStoreOp::Stg | TagStoreOp::St2g => DataEffect::Untouched,
            TagStoreOp::Stzg | TagStoreOp::Stz2g => DataEffect::Zeroed,
            TagStoreOp::Stgp => DataEffect::Stored16,
        }
    }

    pub const fn mnemonic(self) -> &'static str {
        match self {
            TagStoreOp::Stg => "STG",
            TagStoreOp::Stzg => "STZG",
            TagStoreOp::St2g => "ST2G",
            TagStoreOp::Stz2g => "STZ2G",
            TagStoreOp::Stgp => "STGP",
        }
    }
}

impl core::fmt::Display for TagStoreOp {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str(self.mnemonic())
    }
}

/// One or two granules.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum GranuleCount {
    One,
    Two,
}

impl GranuleCount {
    pub const fn get(self) -> u64 {
        match self {
            GranuleCount::One => 1,
            GranuleCount::Two => 2,
        }
    }
}

/// The effect of a tag-setting instruction on the data of its granules.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum DataEffect {
    /// STG, ST2G: data unchanged.
    Untouched,
    /// STZG, STZ2G: every data byte of the granule(s) becomes 0.
    Zeroed,
    /// STGP: the 16 data bytes of the granule are stored from the register
    /// pair (the values are the caller's).
    Stored16,
}

/// A tag-setting address that is not 16-byte aligned.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
#[error("{op} at {addr} is not 16-byte aligned (alignment fault)")]
pub struct AlignmentFault {
    pub op: TagStoreOp,
    /// The faulting address as given, tag bits included.
    pub addr: TaggedPtr,
}

/// Why a tag-setting instruction does not execute.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
pub enum TagStoreError {
    #[error(transparent)]
    Alignment(#[from] AlignmentFault),
    /// ST2G/STZ2G at the very last granule of the 56-bit address space.
    #[error("{op} at {addr}: second granule beyond the address space: {source}")]
    OutOfRange {
        op: TagStoreOp,
        addr: TaggedPtr,
        source: PtrError,
    },
}

/// What a tag-setting instruction does, for the kernel to carry out.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct TagStore {
    pub op: TagStoreOp,
    /// The first granule, aligned.
    pub first_granule_addr: VirtAddr,
    pub granules: GranuleCount,
    /// The allocation tag written to each granule of tagged memory.
    pub tag: Tag,
    pub data: DataEffect,
}

impl TagStore {
    /// The base address of each granule, lowest first.
    pub fn granule_addrs(&self) -> impl Iterator<Item = VirtAddr> + use<> {
        let first = self.first_granule_addr;
        (0..self.granules.get()).map(move |i| {
            first
                .checked_add(i * GRANULE_SIZE)
                .expect("BUG: plan_tag_store admitted a granule beyond the address space")
        })
    }

    /// Bytes of data written: 16 or 32 zeros for STZG/STZ2G, 16 for STGP,
    /// none for STG/ST2G.
    pub const fn data_bytes(&self) -> u64 {
        match self.data {
            DataEffect::Untouched => 0,
            DataEffect::Zeroed => self.granules.get() * GRANULE_SIZE,
            DataEffect::Stored16 => GRANULE_SIZE,
        }
    }

    /// The tag to write into a granule whose memory is (`true`) or is not
    /// (`false`) Normal-Tagged: `None` for untagged memory, whose allocation
    /// tags are write-ignored. Data effects happen either way.
    pub const fn tag_for(&self, memory_tagged: bool) -> Option<Tag> {
        if memory_tagged { Some(self.tag) } else { None }
    }
}

/// The plan of tag-setting instruction `op` at `ptr`, or why it faults.
pub fn plan_tag_store(op: TagStoreOp, ptr: TaggedPtr) -> Result<TagStore, TagStoreError> {
    if !ptr.is_granule_aligned() {
        return Err(AlignmentFault { op, addr: ptr }.into());
    }
    let first = ptr.addr();
    let last_offset = (op.granules().get() - 1) * GRANULE_SIZE;
    first
        .checked_add(last_offset)
        .map_err(|source| TagStoreError::OutOfRange {
            op,
            addr: ptr,
            source,
        })?;
    Ok(TagStore {
        op,
        first_granule_addr: first,
        granules: op.granules(),
        tag: ptr.tag(),
        data: op.data(),
    })
}

/// What LDG reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct TagLoad {
    /// The granule whose allocation tag is read (the address aligned down).
    pub granule_addr: VirtAddr,
}

impl TagLoad {
    /// The tag LDG returns given the granule's allocation tag, `None` when
    /// the memory is not Normal-Tagged (read as zero).
    pub const fn tag(memory_tag: Option<Tag>) -> Tag {
        match memory_tag {
            Some(tag) => tag,
            None => Tag::ZERO,
        }
    }

    /// The register LDG writes: `dest` with its bits 59:56 replaced by the
    /// tag read (Arm ARM LDG: `X[t] = AArch64.AddressWithAllocationTag(X[t],
    /// tag)`); the other bits of `Xt` are kept.
    pub const fn result(dest: TaggedPtr, memory_tag: Option<Tag>) -> TaggedPtr {
        dest.with_tag(TagLoad::tag(memory_tag))
    }
}

/// The granule LDG at `ptr` reads: never an alignment fault.
pub const fn plan_tag_load(ptr: TaggedPtr) -> TagLoad {
    TagLoad {
        granule_addr: ptr.addr().granule_base(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::{t, va};

    #[test]
    fn every_op_faults_on_a_misaligned_address() {
        // Arm ARM: each STG-family instruction checks IsAligned(address,
        // TAG_GRANULE) first; 8 and 1 bytes off are both misaligned.
        for op in TagStoreOp::ALL {
            for raw in [
                0x0700_0000_0000_1008u64,
                0x0700_0000_0000_1001,
                0x0700_0000_0000_101f,
            ] {
                let p = TaggedPtr::from_raw(raw);
                assert_eq!(
                    plan_tag_store(op, p),
                    Err(TagStoreError::Alignment(AlignmentFault { op, addr: p })),
                    "{op:?} at {p}"
                );
            }
        }
    }

    #[test]
    fn two_granule_ops_need_only_16_byte_alignment() {
        // ST2G at an odd granule (16 mod 32) is fine and spans 0x1010..0x1030.
        let p = TaggedPtr::from_raw(0x0700_0000_0000_1010);
        let plan = plan_tag_store(TagStoreOp::St2g, p).unwrap();
        assert_eq!(plan.granules, GranuleCount::Two);
        assert_eq!(
            plan.granule_addrs().collect::<Vec<_>>(),
            vec![va(0x1010), va(0x1020)]
        );
    }

    #[test]
    fn what_each_op_writes() {
        let p = TaggedPtr::from_raw(0x0b00_0000_0000_2040);
        let expect = [
            (TagStoreOp::Stg, GranuleCount::One, DataEffect::Untouched, 0),
            (TagStoreOp::Stzg, GranuleCount::One, DataEffect::Zeroed, 16),
            (
                TagStoreOp::St2g,
                GranuleCount::Two,
                DataEffect::Untouched,
                0,
            ),
            (TagStoreOp::Stz2g, GranuleCount::Two, DataEffect::Zeroed, 32),
            (
                TagStoreOp::Stgp,
                GranuleCount::One,
                DataEffect::Stored16,
                16,
            ),
        ];
        for (op, granules, data, data_bytes) in expect {
            let plan = plan_tag_store(op, p).unwrap();
            assert_eq!(
                plan,
                TagStore {
                    op,
                    first_granule_addr: va(0x2040),
                    granules,
                    tag: t(11),
                    data
                }
            );
            assert_eq!(plan.data_bytes(), data_bytes, "{op:?}");
            assert_eq!(plan.granule_addrs().count() as u64, granules.get());
        }
    }

    #[test]
    fn st2g_may_cross_into_the_next_page() {
        let p = TaggedPtr::from_raw(0x0100_0000_0000_2ff0);
        let plan = plan_tag_store(TagStoreOp::Stz2g, p).unwrap();
        assert_eq!(
            plan.granule_addrs().collect::<Vec<_>>(),
            vec![va(0x2ff0), va(0x3000)]
        );
    }

    #[test]
    fn st2g_at_the_end_of_the_address_space_is_out_of_range() {
        let p = VirtAddr::MAX.granule_base().with_tag(t(1));
        assert!(matches!(
            plan_tag_store(TagStoreOp::St2g, p),
            Err(TagStoreError::OutOfRange {
                op: TagStoreOp::St2g,
                ..
            })
        ));
        // The single-granule form fits.
        assert!(plan_tag_store(TagStoreOp::Stg, p).is_ok());
    }

    #[test]
    fn untagged_memory_ignores_the_tag_not_the_data() {
        let plan =
            plan_tag_store(TagStoreOp::Stzg, TaggedPtr::from_raw(0x0900_0000_0000_0010)).unwrap();
        assert_eq!(plan.tag_for(true), Some(t(9)));
        assert_eq!(plan.tag_for(false), None);
        assert_eq!(plan.data_bytes(), 16);
    }

    #[test]
    fn ldg_aligns_down_and_reads_zero_from_untagged_memory() {
        let p = TaggedPtr::from_raw(0x0000_0000_0000_102f);
        assert_eq!(plan_tag_load(p).granule_addr, va(0x1020));
        assert_eq!(TagLoad::tag(Some(t(6))), t(6));
        assert_eq!(TagLoad::tag(None), Tag::ZERO);
        // Only bits 59:56 of the destination change.
        let dest = TaggedPtr::from_raw(0xa300_0000_0000_1234);
        assert_eq!(
            TagLoad::result(dest, Some(t(6))).raw(),
            0xa600_0000_0000_1234
        );
        assert_eq!(TagLoad::result(dest, None).raw(), 0xa000_0000_0000_1234);
    }

    #[test]
    fn fault_message_names_op_and_address() {
        let e = plan_tag_store(
            TagStoreOp::Stz2g,
            TaggedPtr::from_raw(0x0200_0000_0000_1008),
        )
        .unwrap_err();
        assert_eq!(
            e.to_string(),
            "STZ2G at 0x200000000001008 is not 16-byte aligned (alignment fault)"
        );
    }
}
