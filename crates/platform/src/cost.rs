//! The cost model's table: the modelled CPU cycles of each step the kernel
//! reports as an event (`docs/cost-model.md`, which gives each entry's
//! source or reasoning; `docs/workloads.md` §3).
//!
//! # Contract
//! - A [`CostTable`] is a fixed set of [`CostEntry`]s, each an integer
//!   number of cycles; [`CostTable::default`] is the documented table.
//!   The machine turns its events into cycles with it (the kernel's
//!   `cost` module) and reports the totals as the `cost.*` counters.
//! - [`CostTable::from_toml`] replaces entries from a flat TOML file
//!   (`clear-page = 1200`), keys as [`CostEntry::name`]; an entry the file
//!   does not name keeps its default. Every error (syntax, unknown key, a
//!   value that is not a non-negative integer) names the file, line and
//!   column.
//! - The table is part of the [`crate::Platform`], so every machine built
//!   from one platform costs its events alike.

use std::path::{Path, PathBuf};

use thiserror::Error;
use toml::de::{DeTable, DeValue};

use crate::error::Position;

/// One entry of the table: the cycles of one step.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Debug)]
pub enum CostEntry {
    /// Entering and leaving the kernel for a page fault, finding the VMA,
    /// updating the page table (no page cleared or copied).
    Fault,
    /// Zeroing the data of a 4 KiB page (a new anonymous page; 512 of them
    /// for a transparent huge page).
    ClearPage,
    /// Initialising a page's allocation tags (zeroing, or writing restored
    /// or copied tags), on top of whatever the data needed.
    TagInit,
    /// Copying a 4 KiB page's data (copy on write).
    CopyPage,
    /// Copying a page's 128 bytes of tags along with its data.
    CopyTags,
    /// Reserving one tag block straight off the page allocator (the fast
    /// path: every page of the block was free).
    ReserveFastPath,
    /// One `alloc_contig_range()` call (isolating the range's pageblocks,
    /// draining the per-CPU free lists, undoing the isolation), apart from
    /// its per-page work, its IPIs and its migrations.
    ContigCall,
    /// Each page of a range `alloc_contig_range()` claims (checking,
    /// isolating and taking it off the free lists).
    ContigPage,
    /// One CPU's part of `lru_cache_disable()` (an expedited RCU grace
    /// period's IPI and the per-CPU LRU drain work), charged once per CPU
    /// for each contiguous allocation.
    LruDisableIpi,
    /// Cleaning and invalidating one tag storage page from the data cache
    /// when its block becomes tag storage (by virtual address, 64-byte
    /// lines).
    CacheMaintPage,
    /// Giving a reserved tag block back to the page allocator.
    Release,
    /// Migrating one page: isolating it, unmapping it everywhere (with the
    /// TLB invalidation), allocating the destination, copying the data,
    /// remapping. Its tags are charged as `tag-init` when the destination
    /// is initialised.
    Migrate,
    /// Splitting a 2 MiB block entry into 512 page entries (with the TLB
    /// invalidation).
    HugeSplit,
    /// Writing one page to swap (compressing it into zram).
    SwapOut,
    /// Reading one page from swap (decompressing it from zram).
    SwapIn,
    /// Saving a swapped-out page's tags (allocating and filling a 128-byte
    /// buffer, `mte_save_tags()`), or restoring them at swap-in.
    SwapTags,
}

impl CostEntry {
    pub const ALL: [CostEntry; 16] = [
        CostEntry::Fault,
        CostEntry::ClearPage,
        CostEntry::TagInit,
        CostEntry::CopyPage,
        CostEntry::CopyTags,
        CostEntry::ReserveFastPath,
        CostEntry::ContigCall,
        CostEntry::ContigPage,
        CostEntry::LruDisableIpi,
        CostEntry::CacheMaintPage,
        CostEntry::Release,
        CostEntry::Migrate,
        CostEntry::HugeSplit,
        CostEntry::SwapOut,
        CostEntry::SwapIn,
        CostEntry::SwapTags,
    ];

    /// The key in a `--cost` file and in `docs/cost-model.md`.
    pub const fn name(self) -> &'static str {
        match self {
            CostEntry::Fault => "fault",
            CostEntry::ClearPage => "clear-page",
            CostEntry::TagInit => "tag-init",
            CostEntry::CopyPage => "copy-page",
            CostEntry::CopyTags => "copy-tags",
            CostEntry::ReserveFastPath => "reserve-fast-path",
            CostEntry::ContigCall => "contig-call",
            CostEntry::ContigPage => "contig-page",
            CostEntry::LruDisableIpi => "lru-disable-ipi",
            CostEntry::CacheMaintPage => "cache-maint-page",
            CostEntry::Release => "release",
            CostEntry::Migrate => "migrate",
            CostEntry::HugeSplit => "huge-split",
            CostEntry::SwapOut => "swap-out",
            CostEntry::SwapIn => "swap-in",
            CostEntry::SwapTags => "swap-tags",
        }
    }

    /// The documented default, in cycles of a 2.5 GHz Arm core
    /// (`docs/cost-model.md` gives the source of each).
    pub const fn default_cycles(self) -> u64 {
        match self {
            CostEntry::Fault => 2_000,
            CostEntry::ClearPage => 1_000,
            CostEntry::TagInit => 250,
            CostEntry::CopyPage => 1_500,
            CostEntry::CopyTags => 300,
            CostEntry::ReserveFastPath => 1_000,
            CostEntry::ContigCall => 25_000,
            CostEntry::ContigPage => 600,
            CostEntry::LruDisableIpi => 5_000,
            CostEntry::CacheMaintPage => 400,
            CostEntry::Release => 600,
            CostEntry::Migrate => 12_000,
            CostEntry::HugeSplit => 20_000,
            CostEntry::SwapOut => 25_000,
            CostEntry::SwapIn => 20_000,
            CostEntry::SwapTags => 500,
        }
    }

    pub fn from_name(name: &str) -> Option<CostEntry> {
        CostEntry::ALL.into_iter().find(|e| e.name() == name)
    }
}

/// The cycles of every [`CostEntry`].
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct CostTable {
    cycles: [u64; CostEntry::ALL.len()],
}

impl Default for CostTable {
    fn default() -> Self {
        Self {
            cycles: CostEntry::ALL.map(CostEntry::default_cycles),
        }
    }
}

/// What is wrong with a `--cost` file.
#[derive(Debug, Error)]
#[error("{}{}: {message}", path.display(), position.map(|p| format!(":{p}")).unwrap_or_default())]
pub struct CostFileError {
    pub path: PathBuf,
    pub position: Option<Position>,
    pub message: String,
}

impl CostTable {
    /// The cycles of `entry`.
    #[inline]
    pub fn get(&self, entry: CostEntry) -> u64 {
        self.cycles[entry as usize]
    }

    pub fn set(&mut self, entry: CostEntry, cycles: u64) {
        self.cycles[entry as usize] = cycles;
    }

    /// Every entry with its cycles, in [`CostEntry::ALL`] order.
    pub fn entries(&self) -> impl Iterator<Item = (CostEntry, u64)> + '_ {
        CostEntry::ALL.into_iter().map(|e| (e, self.get(e)))
    }

    /// The default table with the entries a TOML file gives replaced.
    pub fn from_file(path: &Path) -> Result<CostTable, CostFileError> {
        let bytes = std::fs::read(path).map_err(|e| CostFileError {
            path: path.to_owned(),
            position: None,
            message: e.to_string(),
        })?;
        Self::from_toml(path, &bytes)
    }

    /// As [`CostTable::from_file`], for the file's content.
    pub fn from_toml(path: &Path, bytes: &[u8]) -> Result<CostTable, CostFileError> {
        let error = |position, message: String| CostFileError {
            path: path.to_owned(),
            position,
            message,
        };
        let text = std::str::from_utf8(bytes).map_err(|e| {
            let valid = std::str::from_utf8(&bytes[..e.valid_up_to()]).unwrap_or_default();
            error(
                Some(Position::of_offset(valid, valid.len())),
                "the file is not UTF-8".to_owned(),
            )
        })?;
        let table = DeTable::parse(text).map_err(|e| {
            let position = e.span().map(|span| Position::of_offset(text, span.start));
            error(position, e.message().trim_end().to_owned())
        })?;
        // Report the first problem in file order, whatever the map's order.
        let mut entries: Vec<_> = table.get_ref().iter().collect();
        entries.sort_by_key(|(key, _)| key.span().start);
        let mut cost = CostTable::default();
        for (key, value) in entries {
            let key_at = Position::of_offset(text, key.span().start);
            let value_at = Position::of_offset(text, value.span().start);
            let name = key.get_ref().as_ref();
            let Some(entry) = CostEntry::from_name(name) else {
                let known: Vec<&str> = CostEntry::ALL.iter().map(|e| e.name()).collect();
                return Err(error(
                    Some(key_at),
                    format!(
                        "unknown cost entry `{name}` (expected one of {})",
                        known.join(", ")
                    ),
                ));
            };
            let cycles = match value.get_ref() {
                DeValue::Integer(i) => {
                    let digits = i.as_str();
                    if digits.starts_with('-') {
                        None
                    } else {
                        u64::from_str_radix(digits.trim_start_matches('+'), i.radix()).ok()
                    }
                }
                _ => None,
            };
            let Some(cycles) = cycles else {
                return Err(error(
                    Some(value_at),
                    format!("`{name}`: expected a number of cycles (a non-negative integer)"),
                ));
            };
            cost.set(entry, cycles);
        }
        Ok(cost)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<CostTable, String> {
        CostTable::from_toml(Path::new("c.toml"), text.as_bytes()).map_err(|e| e.to_string())
    }

    #[test]
    fn names_round_trip_and_are_unique() {
        for entry in CostEntry::ALL {
            assert_eq!(CostEntry::from_name(entry.name()), Some(entry));
        }
        let mut names: Vec<_> = CostEntry::ALL.iter().map(|e| e.name()).collect();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), CostEntry::ALL.len());
    }

    #[test]
    fn a_file_replaces_only_the_entries_it_names() {
        let cost = parse("# faster zeroing\nclear-page = 500\nmigrate = 0x10\n").unwrap();
        assert_eq!(cost.get(CostEntry::ClearPage), 500);
        assert_eq!(cost.get(CostEntry::Migrate), 16);
        assert_eq!(
            cost.get(CostEntry::Fault),
            CostEntry::Fault.default_cycles()
        );
        assert_eq!(parse("").unwrap(), CostTable::default());
    }

    #[test]
    fn errors_name_file_line_and_column() {
        assert_eq!(
            parse("fault = 1\nmigrate = -3\n").unwrap_err(),
            "c.toml:2:11: `migrate`: expected a number of cycles (a non-negative integer)"
        );
        assert_eq!(
            parse("fault = \"fast\"").unwrap_err(),
            "c.toml:1:9: `fault`: expected a number of cycles (a non-negative integer)"
        );
        assert!(
            parse("fault = 1\n  bogus = 2\n")
                .unwrap_err()
                .starts_with("c.toml:2:3: unknown cost entry `bogus` (expected one of fault, ")
        );
        let syntax = parse("fault = \n").unwrap_err();
        assert!(syntax.starts_with("c.toml:1:"), "{syntax}");
        assert!(parse("[x]\na = 1").unwrap_err().starts_with("c.toml:1:"));
        let missing = CostTable::from_file(Path::new("/nonexistent/cost.toml")).unwrap_err();
        assert!(missing.to_string().starts_with("/nonexistent/cost.toml: "));
    }
}
