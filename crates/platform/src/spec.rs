//! The platform keys: what a `platform` line of a scenario, or a TOML platform
//! file, may say about the machine (`docs/language.md`,
//! "Machine"). This module owns the vocabulary and the value syntax; turning a
//! [`PlatformSpec`] into a physical layout is [`crate::Platform`]'s job.

use crate::mistake::{Mistake, Mistakes};
use crate::num::{self, NumError, Suffix};
use thiserror::Error;

/// How the kernel manages tag storage (`docs/designs.md`): one of the
/// designs the tag storage crate registers.
pub use tagstore::{Design, GoogleFallback, OnReserveFailure};

/// The mistakes' names, for the message of a bad `mistake=`.
static MISTAKE_NAMES: std::sync::OnceLock<String> = std::sync::OnceLock::new();

fn mistake_names() -> String {
    let names: Vec<String> = Mistake::ALL.iter().map(|m| format!("`{m}`")).collect();
    format!("`none` or a comma list of {}", names.join(", "))
}

/// The registered designs' names, for the message of a bad `tag-storage=`.
static DESIGN_NAMES: std::sync::OnceLock<String> = std::sync::OnceLock::new();

/// How untagged movable allocations use free tag storage pages (`dynamic` only).
#[derive(Clone, Copy, PartialEq, Eq, Debug, Default)]
pub enum TagStorageData {
    /// Take tag storage pages first.
    Prefer,
    /// As Linux: use CMA when free CMA pages exceed half of the free pages, and
    /// as a fallback when ordinary memory runs out.
    #[default]
    Balance,
    /// Never put data in tag storage.
    Never,
}

/// The order of the blocks within one buddy free list (`free-list-order=`,
/// `docs/model.md` §6).
#[derive(Clone, Copy, PartialEq, Eq, Debug, Default)]
pub enum FreeListOrder {
    /// The lowest frame first (the default): the same operations give the
    /// same frames whatever order pages were freed in.
    #[default]
    Address,
    /// Linux v6.8's LIFO lists: a freed block goes to the head of its list
    /// (the tail when it is likely to merge soon, and for boot memory), and
    /// allocations take the head, so a freed page is the next handed out.
    Linux,
}

impl FreeListOrder {
    /// The `free-list-order=` value.
    pub fn name(self) -> &'static str {
        match self {
            Self::Address => "address",
            Self::Linux => "linux",
        }
    }

    /// The value a `free-list-order=` value names.
    pub fn by_name(name: &str) -> Option<Self> {
        [Self::Address, Self::Linux]
            .into_iter()
            .find(|o| o.name() == name)
    }
}

/// Transparent huge pages for anonymous memory.
#[derive(Clone, Copy, PartialEq, Eq, Debug, Default)]
pub enum Thp {
    #[default]
    Never,
    Madvise,
    Always,
}

/// The multi-size THP orders enabled for anonymous memory besides the PMD
/// order (`thp-sizes=`): Linux v6.8's
/// `/sys/kernel/mm/transparent_hugepage/hugepages-<size>kB/enabled` files
/// written `always` for the listed sizes (the others `never`, their
/// default). A set of orders from [`ThpSizes::MIN_ORDER`] to
/// [`ThpSizes::MAX_ORDER`] (`THP_ORDERS_ALL_ANON` without the PMD order,
/// which `thp=` governs).
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Debug, Default)]
pub struct ThpSizes(u16);

impl ThpSizes {
    /// No size enabled (the default).
    pub const NONE: ThpSizes = ThpSizes(0);
    /// The smallest anonymous THP order (16K): Linux excludes orders 0 and 1
    /// (`THP_ORDERS_ALL_ANON`).
    pub const MIN_ORDER: u32 = 2;
    /// The largest order below the PMD order (1M with 4 KiB pages).
    pub const MAX_ORDER: u32 = 8;

    /// The set with `order` added. Panics outside the orders above (a
    /// caller's bug: input goes through [`ThpSizes::parse`]).
    pub fn with(self, order: u32) -> ThpSizes {
        assert!(
            (Self::MIN_ORDER..=Self::MAX_ORDER).contains(&order),
            "BUG: mTHP order {order} out of range"
        );
        ThpSizes(self.0 | 1 << order)
    }

    pub fn contains(self, order: u32) -> bool {
        order < 16 && self.0 & (1 << order) != 0
    }

    pub fn is_empty(self) -> bool {
        self.0 == 0
    }

    /// The enabled orders, highest first (the order `alloc_anon_folio()`
    /// tries them in).
    pub fn orders_descending(self) -> impl Iterator<Item = u32> {
        (Self::MIN_ORDER..=Self::MAX_ORDER)
            .rev()
            .filter(move |&o| self.contains(o))
    }

    /// Parses `none` or a comma list of sizes (`16K,64K`); the error is the
    /// offending item.
    pub fn parse(text: &str) -> Result<ThpSizes, String> {
        if text == "none" {
            return Ok(ThpSizes::NONE);
        }
        let mut set = ThpSizes::NONE;
        for item in text.split(',') {
            let bytes = num::parse_u64(item, Suffix::Allowed).map_err(|_| item.to_owned())?;
            let order = (Self::MIN_ORDER..=Self::MAX_ORDER)
                .find(|o| bytes == 4096 << o)
                .ok_or_else(|| item.to_owned())?;
            set = set.with(order);
        }
        Ok(set)
    }
}

impl std::fmt::Display for ThpSizes {
    /// `none` or the sizes ascending, as [`ThpSizes::parse`] reads them.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.is_empty() {
            return f.write_str("none");
        }
        let sizes: Vec<String> = (Self::MIN_ORDER..=Self::MAX_ORDER)
            .filter(|&o| self.contains(o))
            .map(|o| num::format_size(4096 << o))
            .collect();
        f.write_str(&sizes.join(","))
    }
}

impl TagStorageData {
    /// The keyword a platform line uses (`tag-storage-data=...`).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Prefer => "prefer",
            Self::Balance => "balance",
            Self::Never => "never",
        }
    }
}

impl Thp {
    /// The keyword a platform line uses (`thp=...`).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Never => "never",
            Self::Madvise => "madvise",
            Self::Always => "always",
        }
    }
}

/// Every key of a `platform` line, with the spec's defaults.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct PlatformSpec {
    /// Bytes of ordinary (tagged-capable) DRAM.
    pub memory: u64,
    /// Bytes per page.
    pub page_size: u64,
    pub tag_storage: Design,
    /// Bytes per tag storage block; `None` means one page.
    pub block_size: Option<u64>,
    pub tag_storage_data: TagStorageData,
    /// Bytes of swap.
    pub swap: u64,
    pub thp: Thp,
    /// `thp-sizes=`: the multi-size THP orders enabled besides 2M.
    pub thp_sizes: ThpSizes,
    pub huge_zero_page: bool,
    pub seed: u64,
    pub cpus: u32,
    /// Known mistakes switched on (`mistake=`).
    pub mistakes: Mistakes,
    /// `reserve-fast-path=`: a one-page tag block whose page is free is
    /// taken straight off the buddy allocator (RFC v3 patch 10); off, every
    /// claim goes through `alloc_contig_range()`.
    pub reserve_fast_path: bool,
    /// `google-fallback=spec|none`: design `google`'s last resort
    /// (`docs/designs.md`, "google").
    pub google_fallback: GoogleFallback,
    /// `pcp=`: Linux's per-CPU page lists in front of the buddy allocator
    /// (`docs/model.md` §6); off by default so that scenario counters stay
    /// those of the plain allocator.
    pub pcp: bool,
    /// `free-list-order=`: the order within the buddy free lists
    /// (`docs/model.md` §6); `address` by default so that scenario counters
    /// stay those of the lowest-frame-first allocator.
    pub free_list_order: FreeListOrder,
}

impl Default for PlatformSpec {
    fn default() -> Self {
        Self {
            memory: 64 << 20,
            page_size: 4 << 10,
            tag_storage: Design::DYNAMIC,
            block_size: None,
            tag_storage_data: TagStorageData::Balance,
            swap: 0,
            thp: Thp::Never,
            thp_sizes: ThpSizes::NONE,
            huge_zero_page: true,
            seed: 0,
            cpus: 4,
            mistakes: Mistakes::NONE,
            reserve_fast_path: true,
            google_fallback: GoogleFallback::Spec,
            pcp: false,
            free_list_order: FreeListOrder::Address,
        }
    }
}

/// The keys a platform line accepts, in the spec's order.
pub const KEYS: &[&str] = &[
    "memory",
    "page-size",
    "tag-storage",
    "block-size",
    "tag-storage-data",
    "swap",
    "thp",
    "huge-zero-page",
    "seed",
    "cpus",
    "mistake",
    "reserve-fast-path",
    "google-fallback",
    "pcp",
    "thp-sizes",
    "free-list-order",
];

/// The most simulated CPUs a machine may have.
pub const MAX_CPUS: u32 = 64;

#[derive(Clone, Debug, PartialEq, Eq, Error)]
pub enum KeyError {
    #[error("unknown platform key `{key}` (expected one of: {})", KEYS.join(", "))]
    UnknownKey { key: String },
    #[error("`{key}`: expected {expected}, found `{value}`")]
    BadValue {
        key: &'static str,
        value: String,
        expected: &'static str,
    },
    #[error("`{key}`: {source}")]
    Number {
        key: &'static str,
        #[source]
        source: NumError,
    },
}

impl PlatformSpec {
    /// Sets one key from its textual value, as written in a scenario or TOML.
    ///
    /// Only the syntax and range of the single value are checked here;
    /// relations between keys (block size a multiple of the page size, ...)
    /// are checked when the platform is built.
    pub fn set_key(&mut self, key: &str, value: &str) -> Result<(), KeyError> {
        let Some(&key) = KEYS.iter().find(|k| **k == key) else {
            return Err(KeyError::UnknownKey {
                key: key.to_owned(),
            });
        };
        let size = || {
            num::parse_u64(value, Suffix::Allowed)
                .map_err(|source| KeyError::Number { key, source })
        };
        let bad = |expected| KeyError::BadValue {
            key,
            value: value.to_owned(),
            expected,
        };
        match key {
            "memory" => self.memory = size()?,
            "page-size" => {
                let page_size = size()?;
                if page_size != 4 << 10 {
                    return Err(bad("`4K` (the only page size modelled)"));
                }
                self.page_size = page_size;
            }
            "tag-storage" => {
                self.tag_storage = match Design::by_name(value) {
                    Some(design) => design,
                    None => return Err(bad(DESIGN_NAMES.get_or_init(Design::names).as_str())),
                }
            }
            "block-size" => self.block_size = Some(size()?),
            "tag-storage-data" => {
                self.tag_storage_data = match value {
                    "prefer" => TagStorageData::Prefer,
                    "balance" => TagStorageData::Balance,
                    "never" => TagStorageData::Never,
                    _ => return Err(bad("`prefer`, `balance` or `never`")),
                }
            }
            "swap" => self.swap = size()?,
            "thp" => {
                self.thp = match value {
                    "never" => Thp::Never,
                    "madvise" => Thp::Madvise,
                    "always" => Thp::Always,
                    _ => return Err(bad("`never`, `madvise` or `always`")),
                }
            }
            "thp-sizes" => {
                self.thp_sizes = ThpSizes::parse(value).map_err(|item| KeyError::BadValue {
                    key,
                    value: item,
                    expected: "`none` or a comma list of the sizes 16K, 32K, 64K, 128K, 256K, 512K, 1M (2M is `thp=`)",
                })?;
            }
            "huge-zero-page" => {
                self.huge_zero_page = match value {
                    "on" => true,
                    "off" => false,
                    _ => return Err(bad("`on` or `off`")),
                }
            }
            "reserve-fast-path" => {
                self.reserve_fast_path = match value {
                    "on" => true,
                    "off" => false,
                    _ => return Err(bad("`on` or `off`")),
                }
            }
            "google-fallback" => {
                self.google_fallback =
                    GoogleFallback::by_name(value).ok_or_else(|| bad("`spec` or `none`"))?
            }
            "pcp" => {
                self.pcp = match value {
                    "on" => true,
                    "off" => false,
                    _ => return Err(bad("`on` or `off`")),
                }
            }
            "free-list-order" => {
                self.free_list_order =
                    FreeListOrder::by_name(value).ok_or_else(|| bad("`address` or `linux`"))?
            }
            "seed" => {
                self.seed = num::parse_u64(value, Suffix::Forbidden)
                    .map_err(|source| KeyError::Number { key, source })?
            }
            "mistake" => {
                self.mistakes = Mistakes::parse(value).map_err(|name| KeyError::BadValue {
                    key,
                    value: name,
                    expected: MISTAKE_NAMES.get_or_init(mistake_names).as_str(),
                })?;
            }
            "cpus" => {
                let cpus = num::parse_u64(value, Suffix::Forbidden)
                    .map_err(|source| KeyError::Number { key, source })?;
                self.cpus = match u32::try_from(cpus) {
                    Ok(n @ 1..=MAX_CPUS) => n,
                    _ => return Err(bad("a number of CPUs from 1 to 64")),
                };
            }
            _ => unreachable!("BUG: key `{key}` listed in KEYS but not handled"),
        }
        Ok(())
    }

    /// The block size in bytes, one page when not given.
    pub fn block_size(&self) -> u64 {
        self.block_size.unwrap_or(self.page_size)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_the_spec_defaults() {
        let spec = PlatformSpec::default();
        assert_eq!(spec.memory, 64 << 20);
        assert_eq!(spec.page_size, 4096);
        assert_eq!(spec.tag_storage, Design::DYNAMIC);
        assert_eq!(spec.block_size(), 4096);
        assert_eq!(spec.tag_storage_data, TagStorageData::Balance);
        assert_eq!(
            (spec.swap, spec.thp, spec.huge_zero_page),
            (0, Thp::Never, true)
        );
        assert_eq!((spec.seed, spec.cpus), (0, 4));
    }

    #[test]
    fn every_key_sets_its_field() {
        let mut spec = PlatformSpec::default();
        for (key, value) in [
            ("memory", "128M"),
            ("page-size", "4K"),
            ("tag-storage", "static"),
            ("block-size", "64K"),
            ("tag-storage-data", "prefer"),
            ("swap", "16M"),
            ("thp", "madvise"),
            ("huge-zero-page", "off"),
            ("seed", "0x2a"),
            ("cpus", "2"),
            ("mistake", "huge-zero-page"),
            ("reserve-fast-path", "off"),
            ("google-fallback", "none"),
            ("pcp", "on"),
            ("thp-sizes", "64K,16K"),
            ("free-list-order", "linux"),
        ] {
            spec.set_key(key, value).unwrap();
        }
        assert_eq!(
            spec,
            PlatformSpec {
                memory: 128 << 20,
                page_size: 4096,
                tag_storage: Design::STATIC,
                block_size: Some(64 << 10),
                tag_storage_data: TagStorageData::Prefer,
                swap: 16 << 20,
                thp: Thp::Madvise,
                thp_sizes: ThpSizes::NONE.with(2).with(4),
                huge_zero_page: false,
                seed: 42,
                cpus: 2,
                mistakes: Mistakes::NONE.with(Mistake::HugeZeroPage),
                reserve_fast_path: false,
                google_fallback: GoogleFallback::None,
                pcp: true,
                free_list_order: FreeListOrder::Linux,
            }
        );
    }

    #[test]
    fn bad_keys_and_values_name_the_problem() {
        let mut spec = PlatformSpec::default();
        let err = spec.set_key("memroy", "64M").unwrap_err();
        assert!(
            err.to_string().contains("unknown platform key `memroy`"),
            "{err}"
        );
        let err = spec.set_key("thp", "sometimes").unwrap_err();
        assert_eq!(
            err.to_string(),
            "`thp`: expected `never`, `madvise` or `always`, found `sometimes`"
        );
        let err = spec.set_key("page-size", "64K").unwrap_err();
        assert!(err.to_string().contains("only page size"), "{err}");
        let err = spec.set_key("memory", "12Q").unwrap_err();
        assert_eq!(err.to_string(), "`memory`: invalid digit 'Q' in number");
        assert!(spec.set_key("seed", "4K").is_err());
        assert!(spec.set_key("cpus", "0").is_err());
        assert!(spec.set_key("cpus", "65").is_err());
        let err = spec
            .set_key("mistake", "huge-zero-page,retry-for-ever")
            .unwrap_err();
        assert!(err.to_string().contains("retry-for-ever"), "{err}");
        for bad in ["8K", "2M", "48K", "16K,", "16K,x", ""] {
            let err = spec.set_key("thp-sizes", bad).unwrap_err();
            assert!(
                err.to_string().starts_with("`thp-sizes`: expected"),
                "{err}"
            );
        }
        assert_eq!(spec, PlatformSpec::default(), "failed sets change nothing");
    }

    #[test]
    fn keywords_round_trip_through_set_key() {
        let mut spec = PlatformSpec::default();
        for policy in [Design::NONE, Design::STATIC, Design::DYNAMIC] {
            spec.set_key("tag-storage", policy.name()).unwrap();
            assert_eq!(spec.tag_storage, policy);
        }
        for data in [
            TagStorageData::Prefer,
            TagStorageData::Balance,
            TagStorageData::Never,
        ] {
            spec.set_key("tag-storage-data", data.as_str()).unwrap();
            assert_eq!(spec.tag_storage_data, data);
        }
        for thp in [Thp::Never, Thp::Madvise, Thp::Always] {
            spec.set_key("thp", thp.as_str()).unwrap();
            assert_eq!(spec.thp, thp);
        }
        for sizes in ["none", "16K", "16K,32K,64K,128K,256K,512K,1M"] {
            spec.set_key("thp-sizes", sizes).unwrap();
            assert_eq!(spec.thp_sizes.to_string(), sizes);
        }
        let all: Vec<u32> = spec.thp_sizes.orders_descending().collect();
        assert_eq!(all, [8, 7, 6, 5, 4, 3, 2]);
    }
}
