//! The machine of a scenario's `platform` line (or a TOML file's keys).
//!
//! Layout (`docs/language.md`, "Machine"): ordinary DRAM of
//! `memory` bytes at [`DRAM_BASE`]; unless the policy is `none`, one tag
//! storage region of `memory / 32` bytes right after DRAM, its base aligned up
//! to the block size, covering all of DRAM with blocks of `block-size` bytes.
//! Under `none` there is no tag storage at all.
//!
//! Before the layout reaches [`crate::Geometry::new`], the sizes are checked here so
//! that a bad `memory` is reported in the user's terms (which key, which
//! numbers, what would work) rather than as a range that breaks a rule.

use crate::error::PlatformError;
use crate::machine::{KernelSettings, Platform};
use crate::num::format_size;
use crate::spec::PlatformSpec;
use mte::geometry::{GeometryError, MemRange, TagRegion};
use mte::{DATA_BYTES_PER_TAG_BYTE as TAG_RATIO, PageGeometry};
use thiserror::Error;

/// Where the scenario machine's DRAM starts: 2 GiB, as in Arm's base memory
/// map (DEN0001, "Principles of ARM Memory Maps") and on the Arm FVP.
pub const DRAM_BASE: u64 = 0x8000_0000;

/// Why the values of a `platform` line cannot make a machine.
#[derive(Clone, Debug, PartialEq, Eq, Error)]
pub enum SpecError {
    #[error(
        "memory {} is not a non-zero multiple of the page size {}",
        format_size(*memory),
        format_size(*page_size)
    )]
    MemoryNotPages { memory: u64, page_size: u64 },
    #[error(
        "memory {} cannot have whole pages of tags: tags take 1/32 of memory, so memory must be a multiple of {} (32 pages of {})",
        format_size(*memory),
        format_size(TAG_RATIO * page_size),
        format_size(*page_size)
    )]
    TagsNotPages { memory: u64, page_size: u64 },
    #[error(
        "memory {} has {} of tags, not a whole number of {} tag blocks: with block-size={}, memory must be a multiple of {}",
        format_size(*memory),
        format_size(memory / TAG_RATIO),
        format_size(*block_size),
        format_size(*block_size),
        format_size(TAG_RATIO * block_size)
    )]
    TagsNotBlocks { memory: u64, block_size: u64 },
    #[error(
        "memory {} at {DRAM_BASE:#x}, with its tag storage, runs past the end of the physical address space",
        format_size(*memory)
    )]
    AddressSpace { memory: u64 },
    /// A page or block size that no layout can use.
    #[error(transparent)]
    Geometry(GeometryError),
}

impl SpecError {
    /// The `platform` key whose value is at fault, so that a caller holding
    /// positions (a TOML file, a scenario line) can point at it.
    pub fn key(&self) -> &'static str {
        match self {
            Self::Geometry(GeometryError::PageSize(_)) => "page-size",
            Self::Geometry(
                GeometryError::BlockSize { .. } | GeometryError::BlockAlignment { .. },
            )
            | Self::TagsNotBlocks { .. } => "block-size",
            _ => "memory",
        }
    }
}

impl Platform {
    /// The machine a `platform` line describes.
    pub fn from_spec(spec: &PlatformSpec) -> Result<Self, PlatformError> {
        let (dram, tag_regions) = layout(spec)?;
        Self::build(
            spec.tag_storage,
            KernelSettings::from_spec(spec),
            spec.page_size,
            &[dram],
            &tag_regions,
        )
        .map_err(|e| SpecError::Geometry(e).into())
    }
}

/// DRAM and the tag storage regions of a `platform` line, sizes checked.
fn layout(spec: &PlatformSpec) -> Result<(MemRange, Vec<TagRegion>), SpecError> {
    let PlatformSpec {
        memory, page_size, ..
    } = *spec;
    if PageGeometry::from_page_size(page_size).is_err() {
        // The rule is Geometry's; checked first here only because the size
        // arithmetic below divides by the page size.
        return Err(SpecError::Geometry(GeometryError::PageSize(page_size)));
    }
    if memory == 0 || memory % page_size != 0 {
        return Err(SpecError::MemoryNotPages { memory, page_size });
    }
    let dram_end = DRAM_BASE
        .checked_add(memory)
        .ok_or(SpecError::AddressSpace { memory })?;
    let dram = MemRange::new(DRAM_BASE, memory);
    if !spec.tag_storage.rules().mte() {
        return Ok((dram, Vec::new()));
    }
    let block_size = spec.block_size();
    if !block_size.is_power_of_two() || block_size < page_size {
        return Err(SpecError::Geometry(GeometryError::BlockSize {
            block_size,
            page_size,
        }));
    }
    // Checked in this order so the message names the first thing to fix:
    // whole tag pages, then whole blocks (block_size is a multiple of pages).
    if memory % (TAG_RATIO * page_size) != 0 {
        return Err(SpecError::TagsNotPages { memory, page_size });
    }
    let tag_size = memory / TAG_RATIO;
    if !tag_size.is_multiple_of(block_size) {
        return Err(SpecError::TagsNotBlocks { memory, block_size });
    }
    let tag_base = dram_end
        .checked_next_multiple_of(block_size)
        .filter(|base| base.checked_add(tag_size).is_some())
        .ok_or(SpecError::AddressSpace { memory })?;
    let region = TagRegion {
        tags: MemRange::new(tag_base, tag_size),
        covers: dram,
        block_size,
    };
    Ok((dram, vec![region]))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spec::Design;
    use mte::{Pfn, PhysAddr};
    use proptest::prelude::*;

    const K: u64 = 1 << 10;
    const M: u64 = 1 << 20;

    fn spec(pairs: &[(&str, &str)]) -> PlatformSpec {
        let mut spec = PlatformSpec::default();
        for (key, value) in pairs {
            spec.set_key(key, value).unwrap();
        }
        spec
    }

    fn build(pairs: &[(&str, &str)]) -> Result<Platform, SpecError> {
        Platform::from_spec(&spec(pairs)).map_err(|e| match e {
            PlatformError::Spec(e) => e,
            other => panic!("unexpected error kind: {other}"),
        })
    }

    #[test]
    fn default_machine_is_the_specs() {
        // docs/language.md "Machine": 64M, dynamic, block-size = page size.
        // 64M / 4K = 16384 pages; tags 64M/32 = 2M = 512 pages = 512 blocks.
        let p = Platform::default();
        assert_eq!(p, build(&[]).unwrap());
        assert_eq!(p.dram(), &[MemRange::new(0x8000_0000, 64 * M)]);
        assert_eq!(p.tag_regions().len(), 1);
        let region = p.tag_regions()[0];
        assert_eq!(region.tags, MemRange::new(0x8400_0000, 2 * M));
        assert_eq!(region.covers, MemRange::new(0x8000_0000, 64 * M));
        let g = p.geometry();
        assert_eq!(
            (g.dram_pages(), g.tag_storage_pages(), g.tag_blocks()),
            (16384, 512, 512)
        );
        assert_eq!(p.block_size(), Some(4 * K));
        assert_eq!(*p.settings(), KernelSettings::default());
        // The first data page's tags are the first tag storage byte.
        assert_eq!(
            g.tag_bytes_of(Pfn::new(0x80000)),
            Some(PhysAddr::new(0x8400_0000))
        );
    }

    #[test]
    fn policy_none_has_no_tag_storage() {
        // docs/model.md §5: under `none` every tag_storage.* counter is 0; memory
        // need not be a multiple of 32 pages because there are no tags.
        let p = build(&[("tag-storage", "none"), ("memory", "36K")]).unwrap();
        assert!(p.tag_regions().is_empty());
        let g = p.geometry();
        assert_eq!(
            (g.dram_pages(), g.tag_storage_pages(), g.tag_blocks()),
            (9, 0, 0)
        );
        // A block size is accepted and ignored without tag storage.
        let p = build(&[("tag-storage", "none"), ("block-size", "8K")]).unwrap();
        assert_eq!(p.block_size(), None);
    }

    #[test]
    fn static_has_the_same_layout_as_dynamic() {
        let s = build(&[("tag-storage", "static")]).unwrap();
        let d = build(&[]).unwrap();
        assert_eq!(s.geometry(), d.geometry());
        assert_eq!(s.policy(), Design::STATIC);
    }

    #[test]
    fn bigger_blocks_and_memory() {
        // 1G of memory: 32M of tags = 8192 pages; 64K blocks = 16 pages,
        // so 512 blocks (one block serves 32 x 64K = 2M of data).
        let p = build(&[("memory", "1G"), ("block-size", "64K")]).unwrap();
        assert_eq!(p.tag_regions()[0].tags, MemRange::new(0xc000_0000, 32 * M));
        let g = p.geometry();
        assert_eq!(
            (g.dram_pages(), g.tag_storage_pages(), g.tag_blocks()),
            (262144, 8192, 512)
        );
        assert_eq!(g.blocks_for_order(mte::Order::new(9)), 1);
    }

    #[test]
    fn tag_storage_base_is_aligned_up_to_the_block_size() {
        // memory 128M with 4M blocks: tags 4M = one block. DRAM ends at
        // 0x8800_0000, already 4M-aligned; with 64M blocks memory must be a
        // multiple of 2G, and 0x8000_0000 + 2G = 0x1_0000_0000 is aligned too.
        // Only blocks larger than 2G need a gap: 4G blocks, memory 128G,
        // DRAM ends at 0x20_8000_0000, tags start at 0x21_0000_0000.
        let p = build(&[("memory", "128G"), ("block-size", "4G")]).unwrap();
        assert_eq!(
            p.tag_regions()[0].tags,
            MemRange::new(0x21_0000_0000, 4 << 30)
        );
        assert_eq!(p.geometry().tag_blocks(), 1);
    }

    #[test]
    fn memory_that_cannot_give_whole_tag_pages_is_refused() {
        let err = build(&[("memory", "64K")]).unwrap_err();
        assert_eq!(
            err,
            SpecError::TagsNotPages {
                memory: 64 * K,
                page_size: 4 * K
            }
        );
        assert_eq!(
            err.to_string(),
            "memory 64K cannot have whole pages of tags: tags take 1/32 of memory, so memory must be a multiple of 128K (32 pages of 4K)"
        );
        assert_eq!(err.key(), "memory");
    }

    #[test]
    fn memory_that_cannot_give_whole_blocks_is_refused() {
        // 64M has 2M of tags: not a whole number of 4M blocks.
        let err = build(&[("block-size", "4M")]).unwrap_err();
        assert_eq!(
            err.to_string(),
            "memory 64M has 2M of tags, not a whole number of 4M tag blocks: with block-size=4M, memory must be a multiple of 128M"
        );
        assert_eq!(err.key(), "block-size");
    }

    #[test]
    fn memory_not_in_pages_is_refused() {
        for memory in ["0", "6000"] {
            let err = build(&[("memory", memory)]).unwrap_err();
            assert!(matches!(err, SpecError::MemoryNotPages { .. }), "{err}");
        }
        let err = build(&[("memory", "6000")]).unwrap_err();
        assert_eq!(
            err.to_string(),
            "memory 6000 is not a non-zero multiple of the page size 4K"
        );
    }

    #[test]
    fn bad_block_sizes_are_refused() {
        // docs/model.md §1: a power-of-two multiple of the page size.
        for bs in ["2K", "12K"] {
            let err = build(&[("block-size", bs)]).unwrap_err();
            assert!(
                matches!(err, SpecError::Geometry(GeometryError::BlockSize { .. })),
                "{err}"
            );
            assert_eq!(err.key(), "block-size");
        }
    }

    #[test]
    fn bad_page_size_set_directly_is_refused() {
        let s = PlatformSpec {
            page_size: 6000,
            ..PlatformSpec::default()
        };
        let err = Platform::from_spec(&s).unwrap_err();
        assert!(
            matches!(
                err,
                PlatformError::Spec(SpecError::Geometry(GeometryError::PageSize(6000)))
            ),
            "{err}"
        );
    }

    #[test]
    fn memory_past_the_address_space_is_refused() {
        // DRAM itself would end at 2^64.
        let err = build(&[("memory", "0xffff_ffff_8000_0000")]).unwrap_err();
        assert!(matches!(err, SpecError::AddressSpace { .. }), "{err}");
        // DRAM fits (it ends at 2^64 - 32M) but its 2^59 bytes of tags do not.
        let err = build(&[("memory", "0xffff_ffff_7e00_0000")]).unwrap_err();
        assert!(matches!(err, SpecError::AddressSpace { .. }), "{err}");
        let p = build(&[("memory", "16T")]).unwrap();
        assert_eq!(p.geometry().tag_storage_pages(), (16u64 << 40) / 32 / 4096);
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(128))]

        /// A `platform` line gives a machine exactly when its tags fill whole
        /// blocks (memory a multiple of 32 blocks), or always under `none`;
        /// the machine then keeps the 1/32 rule (docs/model.md §1) with the tags
        /// right after DRAM.
        #[test]
        fn machine_exists_iff_tags_fill_whole_blocks(
            // Half arbitrary, half multiples of 4096 pages (32 blocks of
            // up to 128 pages), so both outcomes are exercised.
            pages in prop_oneof![1u64..(1 << 20), (1u64..(1 << 8)).prop_map(|u| u << 12)],
            block_shift in 0u32..8,
            none in any::<bool>(),
        ) {
            let (memory, block) = (pages * 4096, 4096u64 << block_shift);
            let mut s = PlatformSpec {
                memory,
                block_size: Some(block),
                ..PlatformSpec::default()
            };
            if none {
                s.tag_storage = Design::NONE;
            }
            let fits = none || memory % (TAG_RATIO * block) == 0;
            match Platform::from_spec(&s) {
                Ok(p) => {
                    prop_assert!(fits);
                    let g = p.geometry();
                    prop_assert_eq!(g.dram_pages(), pages);
                    if none {
                        prop_assert_eq!((g.tag_storage_pages(), g.tag_blocks()), (0, 0));
                    } else {
                        prop_assert_eq!(g.tag_storage_pages() * TAG_RATIO, pages);
                        prop_assert_eq!(g.tag_blocks() * g.block_pages(), g.tag_storage_pages());
                        let tags = p.tag_regions()[0].tags.base.as_u64();
                        prop_assert_eq!(tags, (DRAM_BASE + memory).next_multiple_of(block));
                    }
                }
                Err(e) => prop_assert!(!fits, "{}", e),
            }
        }
    }
}
