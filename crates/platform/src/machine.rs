//! [`Platform`]: the validated machine every other layer is built from.
//!
//! A platform is three things that are only ever valid together:
//! - the kernel settings of the `platform` line ([`KernelSettings`]) and the
//!   tag storage policy;
//! - the physical layout: page size, ordinary DRAM ranges, tag storage regions;
//! - the [`Geometry`] derived from that layout, built only through
//!   [`Geometry::new`], which is where the layout is validated.
//!
//! Invariants (kept by every constructor, so holders never re-check):
//! - `geometry == Geometry::new(page_size, dram, tag_regions)`;
//! - `dram` is sorted by base address, `tag_regions` by tag storage base;
//! - the policy is `none` exactly when there is no tag storage region: a
//!   machine without MTE has no tag storage, and a policy that manages tag
//!   storage has some to manage (`docs/model.md` §5: under `none` every
//!   `tag_storage.*` counter is 0).
//!
//! Sources: [`Platform::from_spec`] (a scenario's `platform` line, in
//! `from_spec`), [`Platform::from_toml`] (`toml_file`), [`Platform::from_dtb`]
//! (`dtb`), [`Platform::from_file`] (either file, by content), and
//! [`Platform::new`] for a layout built by hand (tests, other crates).

use crate::cost::CostTable;
use crate::error::PlatformError;
use crate::mistake::{Mistake, Mistakes};
use crate::spec::{Design, PlatformSpec, TagStorageData, Thp, ThpSizes};
use mte::geometry::{Geometry, GeometryError, MemRange, TagRegion};
use std::path::Path;
use thiserror::Error;

/// The kernel's settings from a `platform` line, apart from the policy,
/// which is tied to the layout (see the module invariants).
///
/// These may change after the machine is built (`mtesim run --seed`
/// replaces the seed), so the fields are public.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct KernelSettings {
    /// How untagged movable allocations use free tag storage pages
    /// (only meaningful under `dynamic`).
    pub tag_storage_data: TagStorageData,
    /// Bytes of swap.
    pub swap: u64,
    pub thp: Thp,
    /// `thp-sizes=`: anonymous multi-size THP orders enabled (`always`).
    pub thp_sizes: ThpSizes,
    pub huge_zero_page: bool,
    /// Seed of every random choice.
    pub seed: u64,
    /// Simulated CPUs.
    pub cpus: u32,
    /// Known mistakes switched on (`docs/designs.md`).
    pub mistakes: Mistakes,
    /// `reserve-fast-path=on` (`docs/designs.md`).
    pub reserve_fast_path: bool,
    /// `google-fallback=` (`docs/designs.md`).
    pub google_fallback: crate::spec::GoogleFallback,
    /// `pcp=on`: per-CPU page lists (`docs/model.md` §6).
    pub pcp: bool,
    /// `free-list-order=` (`docs/model.md` §6).
    pub free_list_order: crate::spec::FreeListOrder,
}

impl KernelSettings {
    /// The kernel settings of a `platform` line.
    pub fn from_spec(spec: &PlatformSpec) -> Self {
        let PlatformSpec {
            memory: _,
            page_size: _,
            tag_storage: _,
            block_size: _,
            tag_storage_data,
            swap,
            thp,
            thp_sizes,
            huge_zero_page,
            seed,
            cpus,
            mistakes,
            reserve_fast_path,
            google_fallback,
            pcp,
            free_list_order,
        } = *spec;
        // A design with mistakes built in (`rfc-v3`) switches them on as if
        // the platform line said so, beside the line's own.
        let mistakes = mistakes.union(design_mistakes(spec.tag_storage));
        Self {
            tag_storage_data,
            swap,
            thp,
            thp_sizes,
            huge_zero_page,
            seed,
            cpus,
            mistakes,
            reserve_fast_path,
            google_fallback,
            pcp,
            free_list_order,
        }
    }
}

/// The mistakes `design` has built in (`tagstore::DesignEntry::mistakes`).
pub fn design_mistakes(design: Design) -> Mistakes {
    design.mistakes().iter().fold(Mistakes::NONE, |set, name| {
        set.with(
            Mistake::from_name(name).unwrap_or_else(|| {
                panic!("BUG: design `{design}` names the unknown mistake `{name}`")
            }),
        )
    })
}

/// The `platform` keys that say what the machine is made of (its layout),
/// as opposed to the kernel's settings ([`KERNEL_KEYS`]).
pub const LAYOUT_KEYS: [&str; 4] = ["memory", "page-size", "tag-storage", "block-size"];

/// The `platform` keys of [`KernelSettings`]: every key of a `platform`
/// line but the layout's ([`LAYOUT_KEYS`]), in the order `mtesim platform`
/// prints them.
pub const KERNEL_KEYS: [&str; 12] = [
    "tag-storage-data",
    "swap",
    "thp",
    "thp-sizes",
    "huge-zero-page",
    "seed",
    "cpus",
    "mistake",
    "reserve-fast-path",
    "google-fallback",
    "pcp",
    "free-list-order",
];

impl KernelSettings {
    /// The value of the setting `key` as a `platform` line writes it
    /// (`mistake` with the design's built-in mistakes); `None` when `key`
    /// is not in [`KERNEL_KEYS`].
    pub fn value_text(&self, key: &str) -> Option<String> {
        let on_off = |on: bool| if on { "on" } else { "off" }.to_owned();
        Some(match key {
            "tag-storage-data" => self.tag_storage_data.as_str().to_owned(),
            "swap" => crate::num::format_size(self.swap),
            "thp" => self.thp.as_str().to_owned(),
            "thp-sizes" => self.thp_sizes.to_string(),
            "huge-zero-page" => on_off(self.huge_zero_page),
            "seed" => self.seed.to_string(),
            "cpus" => self.cpus.to_string(),
            "mistake" => self.mistakes.to_string(),
            "reserve-fast-path" => on_off(self.reserve_fast_path),
            "google-fallback" => self.google_fallback.name().to_owned(),
            "pcp" => on_off(self.pcp),
            "free-list-order" => self.free_list_order.name().to_owned(),
            _ => return None,
        })
    }

    /// Sets the setting `key` to its value in `from`; false (and nothing
    /// changed) when `key` is not in [`KERNEL_KEYS`].
    pub fn copy_key(&mut self, key: &str, from: &Self) -> bool {
        match key {
            "tag-storage-data" => self.tag_storage_data = from.tag_storage_data,
            "swap" => self.swap = from.swap,
            "thp" => self.thp = from.thp,
            "thp-sizes" => self.thp_sizes = from.thp_sizes,
            "huge-zero-page" => self.huge_zero_page = from.huge_zero_page,
            "seed" => self.seed = from.seed,
            "cpus" => self.cpus = from.cpus,
            "mistake" => self.mistakes = from.mistakes,
            "reserve-fast-path" => self.reserve_fast_path = from.reserve_fast_path,
            "google-fallback" => self.google_fallback = from.google_fallback,
            "pcp" => self.pcp = from.pcp,
            "free-list-order" => self.free_list_order = from.free_list_order,
            _ => return false,
        }
        true
    }
}

impl Default for KernelSettings {
    /// The spec's defaults (`docs/language.md`, "Machine").
    fn default() -> Self {
        Self::from_spec(&PlatformSpec::default())
    }
}

/// A layout given to [`Platform::new`] that cannot be a machine.
#[derive(Clone, Debug, PartialEq, Eq, Error)]
pub enum LayoutError {
    #[error(transparent)]
    Geometry(#[from] GeometryError),
    #[error(
        "tag-storage=none is a machine without tag storage, but the layout has {regions} tag storage region(s)"
    )]
    TagStorageUnderNone { regions: usize },
    #[error("tag-storage={policy} needs tag storage, but the layout has none")]
    NoTagStorage { policy: &'static str },
}

/// The validated machine: kernel settings, physical layout and geometry.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Platform {
    policy: Design,
    settings: KernelSettings,
    page_size: u64,
    dram: Vec<MemRange>,
    tag_regions: Vec<TagRegion>,
    geometry: Geometry,
    /// The cycles the machine charges for each event (the documented
    /// defaults unless `--cost` replaced entries).
    cost: CostTable,
}

impl Platform {
    /// A machine from a layout built by hand. The layout is validated by
    /// [`Geometry::new`]; the policy must be `none` exactly when
    /// `tag_regions` is empty.
    pub fn new(
        policy: Design,
        settings: KernelSettings,
        page_size: u64,
        dram: &[MemRange],
        tag_regions: &[TagRegion],
    ) -> Result<Self, PlatformError> {
        match (policy.rules().mte(), tag_regions.len()) {
            (false, 0) => {}
            (false, regions) => {
                return Err(LayoutError::TagStorageUnderNone { regions }.into());
            }
            (true, 0) => {
                return Err(LayoutError::NoTagStorage {
                    policy: policy.name(),
                }
                .into());
            }
            _ => {}
        }
        Self::build(policy, settings, page_size, dram, tag_regions)
            .map_err(|e| LayoutError::Geometry(e).into())
    }

    /// Builds the machine once the policy/region pairing is known to hold;
    /// every source funnels through here so the invariants have one home.
    pub(crate) fn build(
        policy: Design,
        settings: KernelSettings,
        page_size: u64,
        dram: &[MemRange],
        tag_regions: &[TagRegion],
    ) -> Result<Self, GeometryError> {
        assert_eq!(
            !policy.rules().mte(),
            tag_regions.is_empty(),
            "BUG: policy {policy:?} with {} tag storage regions",
            tag_regions.len()
        );
        let geometry = Geometry::new(page_size, dram, tag_regions)?;
        let mut dram = dram.to_vec();
        dram.sort();
        let mut tag_regions = tag_regions.to_vec();
        tag_regions.sort_by_key(|r| r.tags.base);
        Ok(Self {
            policy,
            settings,
            page_size,
            dram,
            tag_regions,
            geometry,
            cost: CostTable::default(),
        })
    }

    /// A machine from a platform file: a flattened device tree if it starts
    /// with the FDT magic, else TOML. `path` is read and named in errors.
    pub fn from_file(path: &Path) -> Result<Self, PlatformError> {
        let bytes = std::fs::read(path).map_err(|error| PlatformError::Read {
            path: path.to_owned(),
            error,
        })?;
        Self::from_bytes(path, &bytes)
    }

    /// [`Platform::from_file`] on bytes already read; `path` only names the
    /// file in errors.
    pub fn from_bytes(path: &Path, bytes: &[u8]) -> Result<Self, PlatformError> {
        if crate::dtb::is_dtb(bytes) {
            Self::from_dtb(path, bytes)
        } else {
            Self::from_toml(path, bytes)
        }
    }

    pub fn policy(&self) -> Design {
        self.policy
    }

    pub fn settings(&self) -> &KernelSettings {
        &self.settings
    }

    /// The kernel settings can change without touching the layout.
    pub fn settings_mut(&mut self) -> &mut KernelSettings {
        &mut self.settings
    }

    /// Bytes per page.
    pub fn page_size(&self) -> u64 {
        self.page_size
    }

    /// Bytes per tag block, or `None` on a machine without tag storage.
    pub fn block_size(&self) -> Option<u64> {
        self.tag_regions.first().map(|r| r.block_size)
    }

    /// Ordinary DRAM, in address order; tag storage is never listed here.
    pub fn dram(&self) -> &[MemRange] {
        &self.dram
    }

    /// Tag storage regions, in address order of the tag storage.
    pub fn tag_regions(&self) -> &[TagRegion] {
        &self.tag_regions
    }

    pub fn geometry(&self) -> &Geometry {
        &self.geometry
    }

    /// The cost model's table (`docs/cost-model.md`).
    pub fn cost(&self) -> &CostTable {
        &self.cost
    }

    /// Replaces the cost table (`--cost FILE`); the machine is otherwise
    /// the same.
    pub fn set_cost(&mut self, cost: CostTable) {
        self.cost = cost;
    }
}

impl Default for Platform {
    /// The default machine of the spec: 64M of DRAM, `dynamic`, 4K blocks.
    fn default() -> Self {
        Self::from_spec(&PlatformSpec::default())
            .unwrap_or_else(|e| panic!("BUG: the default platform is invalid: {e}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spec::Design;

    const M: u64 = 1 << 20;

    /// Every key of a `platform` line is a layout key or a kernel setting,
    /// and every kernel setting is printed and copied: a key added to the
    /// spec without its place here fails this test, not a user's run.
    #[test]
    fn every_platform_key_is_layout_or_a_kernel_setting() {
        for key in crate::spec::KEYS {
            assert!(
                LAYOUT_KEYS.contains(key) != KERNEL_KEYS.contains(key),
                "`{key}` is neither a layout key nor in KERNEL_KEYS (or both)"
            );
        }
        assert_eq!(
            LAYOUT_KEYS.len() + KERNEL_KEYS.len(),
            crate::spec::KEYS.len()
        );
        // Each setting reads back what the line set, and is copied.
        let mut spec = PlatformSpec::default();
        for (key, value) in [
            ("tag-storage-data", "prefer"),
            ("swap", "8M"),
            ("thp", "always"),
            ("thp-sizes", "64K"),
            ("huge-zero-page", "off"),
            ("seed", "7"),
            ("cpus", "2"),
            ("mistake", "atomic-alloc"),
            ("reserve-fast-path", "off"),
            ("google-fallback", "none"),
            ("pcp", "on"),
            ("free-list-order", "linux"),
        ] {
            assert!(KERNEL_KEYS.contains(&key), "{key}");
            spec.set_key(key, value).unwrap();
        }
        let set = KernelSettings::from_spec(&spec);
        let mut copy = KernelSettings::default();
        for key in KERNEL_KEYS {
            let text = set.value_text(key).unwrap();
            assert_ne!(
                Some(&text),
                KernelSettings::default().value_text(key).as_ref(),
                "{key}"
            );
            assert!(copy.copy_key(key, &set), "{key}");
        }
        assert_eq!(copy, set);
        assert_eq!(set.value_text("memory"), None);
        assert!(!copy.copy_key("memory", &set));
    }

    #[test]
    fn a_design_s_mistakes_join_the_platform_line_s() {
        for design in Design::all() {
            // Every name a design lists is a known mistake (no panic).
            let _ = design_mistakes(design);
        }
        let spec = |line: &str| {
            let mut spec = PlatformSpec::default();
            for kv in line.split(' ') {
                let (k, v) = kv.split_once('=').unwrap();
                spec.set_key(k, v).unwrap();
            }
            KernelSettings::from_spec(&spec).mistakes
        };
        assert_eq!(spec("tag-storage=dynamic").to_string(), "none");
        assert_eq!(
            spec("tag-storage=rfc-v3").to_string(),
            "huge-zero-page,atomic-alloc,tags-by-pfn"
        );
        assert_eq!(
            spec("tag-storage=rfc-v3 mistake=migration-race").to_string(),
            "huge-zero-page,migration-race,atomic-alloc,tags-by-pfn"
        );
    }

    fn fvp_region() -> (MemRange, TagRegion) {
        let dram = MemRange::new(0x8000_0000, 1984 * M);
        let tags = TagRegion {
            tags: MemRange::new(0xfc00_0000, 62 * M),
            covers: dram,
            block_size: 4096,
        };
        (dram, tags)
    }

    #[test]
    fn new_checks_that_the_policy_matches_the_tag_storage() {
        let (dram, region) = fvp_region();
        let settings = KernelSettings::default();
        let err = Platform::new(Design::NONE, settings, 4096, &[dram], &[region]).unwrap_err();
        assert!(
            matches!(
                err,
                PlatformError::Layout(LayoutError::TagStorageUnderNone { regions: 1 })
            ),
            "{err}"
        );
        let err = Platform::new(Design::STATIC, settings, 4096, &[dram], &[]).unwrap_err();
        assert_eq!(
            err.to_string(),
            "tag-storage=static needs tag storage, but the layout has none"
        );
        let ok = Platform::new(Design::DYNAMIC, settings, 4096, &[dram], &[region]).unwrap();
        assert_eq!(ok.block_size(), Some(4096));
        assert_eq!(ok.geometry().tag_blocks(), 62 * M / 4096);
        let none = Platform::new(Design::NONE, settings, 4096, &[dram], &[]).unwrap();
        assert_eq!(none.block_size(), None);
        assert_eq!(none.geometry().tag_storage_pages(), 0);
    }

    #[test]
    fn new_wraps_geometry_errors() {
        let (dram, mut region) = fvp_region();
        // 60M of tags cover 1920M, not the 1984M they claim (docs/model.md §1: 1/32).
        region.tags = MemRange::new(0xfc00_0000, 60 * M);
        let err = Platform::new(
            Design::DYNAMIC,
            KernelSettings::default(),
            4096,
            &[dram],
            &[region],
        )
        .unwrap_err();
        assert!(
            matches!(
                err,
                PlatformError::Layout(LayoutError::Geometry(GeometryError::TagRatio { .. }))
            ),
            "{err}"
        );
    }

    #[test]
    fn layout_is_kept_sorted() {
        let low = MemRange::new(0x8000_0000, 64 * M);
        let high = MemRange::new(0x1_0000_0000, 64 * M);
        let p = Platform::new(
            Design::NONE,
            KernelSettings::default(),
            4096,
            &[high, low],
            &[],
        )
        .unwrap();
        assert_eq!(p.dram(), &[low, high]);
        assert_eq!(p.geometry().dram_pages(), 2 * 64 * M / 4096);
    }

    #[test]
    fn settings_can_change_after_build() {
        let mut p = Platform::default();
        p.settings_mut().seed = 42;
        assert_eq!(p.settings().seed, 42);
        assert_eq!(p.policy(), Design::DYNAMIC);
    }
}
