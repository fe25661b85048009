//! The known mistakes of the dynamic tag storage RFC reviews, as switches
//! (`mistake=NAME[,NAME...]` on a platform line, `docs/designs.md`,
//! "Known mistakes"). Each puts one step of the kernel back the way a
//! posted version of the series did it, so that users can watch it fail and
//! the fix hold; the model's checkers must catch each.
//!
//! Only mistakes the kernel implements are accepted: a name the model does
//! not act on is refused rather than ignored.

use core::fmt;

/// One known mistake.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Debug)]
pub enum Mistake {
    /// Tag storage activation does not reserve the zero page's block, so it
    /// is lent to the page allocator while the zero page's tags live in it
    /// (the seed thread, v2 18/27). Caught by the invariants (the zero page
    /// is tagged without reserved storage) and by a tagged load of
    /// never-written memory once data reused the block.
    ZeroPageBlock,
    /// RFC v3 reserves tag storage for the 4 KiB zero page only: the huge
    /// zero page mapped tagged is written awaiting tag storage, and the
    /// fault handler, which finds no folio behind a huge zero page entry,
    /// maps the same entry again, for ever (measured on the posted series
    /// under QEMU). Caught by the liveness check: outcome `stuck`.
    HugeZeroPage,
    /// A tag write (STG, ST2G) to a shared or zero page writes the tags in
    /// place instead of taking a write fault that copies the page first
    /// (the seed thread's question). Caught by the reference model (another
    /// process sees the tags change) and invariant 5 (the zero page's tags).
    TagWriteInPlace,
    /// RFC v3's `copy_highpage()` allocates the per-frame tag buffer (the
    /// `tags_by_pfn` entry of the destination) with a sleeping allocation,
    /// and is reached with the page-table lock held (fork's
    /// `copy_present_page()` of a pinned page): the v3 review's blocker.
    /// Caught by the atomic-context check (invariant 9) on every schedule
    /// that copies a tagged page there.
    AtomicAlloc,
    /// RFC v1's migration: the destination is allocated untagged (the
    /// source was untagged then) before the source is locked, and the copy
    /// copies tags whenever the source is tagged when it runs; an
    /// `mprotect(PROT_MTE)` and an access in between write the tags into a
    /// destination whose tag storage is lent (the RFC v1 review). Caught by
    /// invariant 8 under `mtesim explore`.
    MigrationRace,
    /// Swap-in marks the page's tags initialised (the flag that lets a
    /// fault map it tagged) before it restores the tags saved for it, and
    /// maps it; a racing access reads tags not yet restored (the v3
    /// review). Caught under `mtesim explore` by the scenario's
    /// expectations (nothing is lost, invariant 11).
    FlagBeforeRestore,
    /// RFC v2's tag storage fault: when the reservation fails, retry it and
    /// replay the access, never migrating the faulting page (v2 patch 21);
    /// a page of the block held by a short-term pin (`pin ... longterm=off`)
    /// then keeps the access from ever completing (the v2 review: pinned
    /// pages, `vmsplice`). Caught by the liveness check: outcome `stuck`.
    RetryForever,
    /// RFC v2's block count, `max(2^order / 32, 1) * block_size_pages`
    /// blocks per allocation instead of `DIV_ROUND_UP(max(2^order / 32, 1),
    /// block_size_pages)` (v2 patch 26, found by the v2 review): with blocks
    /// of more than one page, blocks holding none of the allocation's tags
    /// are reserved. Caught by invariant 3 (a reserved block's references
    /// are not its live tagged frames) and `tag_storage.reserved`.
    V2BlockCount,
    /// RFC v3's tags saved by frame (`mte_save_tags_for_pfn()`) for a page
    /// without tag storage: compaction migrates a tagged page without
    /// reserving its destination's storage (the page is mapped awaiting it,
    /// its tags wait in the frame's `tags_by_pfn` entry);
    /// `reserve_tag_storage()` restores them (`mte_restore_tags_for_pfn()`)
    /// before it sets the reserved flag (a `WARN_ON_ONCE` in
    /// `set_page_mte_tagged()`); and a page freed while awaiting storage
    /// keeps its entry (`free_tag_storage()` erases entries only for a page
    /// whose storage is reserved), so the frame's next tagged allocation
    /// gets the old owner's tags restored (the same warning, and a second in
    /// `tag_clear_highpage()`, which finds the new page tagged already).
    /// Measured on the posted series under QEMU (both warnings). Caught by
    /// the invariants: saved tags waiting for a frame nobody maps.
    TagsByPfn,
}

impl Mistake {
    /// In the order of `docs/designs.md`'s table.
    pub const ALL: [Mistake; 9] = [
        Mistake::ZeroPageBlock,
        Mistake::HugeZeroPage,
        Mistake::TagWriteInPlace,
        Mistake::MigrationRace,
        Mistake::RetryForever,
        Mistake::V2BlockCount,
        Mistake::FlagBeforeRestore,
        Mistake::AtomicAlloc,
        Mistake::TagsByPfn,
    ];

    /// The `mistake=` spelling.
    pub const fn name(self) -> &'static str {
        match self {
            Mistake::ZeroPageBlock => "zero-page-block",
            Mistake::HugeZeroPage => "huge-zero-page",
            Mistake::TagWriteInPlace => "tag-write-in-place",
            Mistake::AtomicAlloc => "atomic-alloc",
            Mistake::MigrationRace => "migration-race",
            Mistake::FlagBeforeRestore => "flag-before-restore",
            Mistake::RetryForever => "retry-forever",
            Mistake::V2BlockCount => "v2-block-count",
            Mistake::TagsByPfn => "tags-by-pfn",
        }
    }

    pub fn from_name(name: &str) -> Option<Mistake> {
        Mistake::ALL.into_iter().find(|m| m.name() == name)
    }

    const fn bit(self) -> u16 {
        1 << self as u16
    }
}

impl fmt::Display for Mistake {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// The mistakes switched on (none by default).
#[derive(Clone, Copy, PartialEq, Eq, Default)]
pub struct Mistakes(u16);

impl Mistakes {
    pub const NONE: Mistakes = Mistakes(0);

    pub const fn contains(self, mistake: Mistake) -> bool {
        self.0 & mistake.bit() != 0
    }

    pub const fn with(self, mistake: Mistake) -> Mistakes {
        Mistakes(self.0 | mistake.bit())
    }

    /// Both sets' mistakes.
    pub const fn union(self, other: Mistakes) -> Mistakes {
        Mistakes(self.0 | other.0)
    }

    pub fn is_empty(self) -> bool {
        self.0 == 0
    }

    pub fn iter(self) -> impl Iterator<Item = Mistake> {
        Mistake::ALL.into_iter().filter(move |m| self.contains(*m))
    }

    /// A `mistake=` value: names separated by commas (`none` for none).
    pub fn parse(value: &str) -> Result<Mistakes, String> {
        if value == "none" {
            return Ok(Mistakes::NONE);
        }
        value.split(',').try_fold(Mistakes::NONE, |set, name| {
            Mistake::from_name(name)
                .map(|m| set.with(m))
                .ok_or_else(|| name.to_owned())
        })
    }
}

impl fmt::Display for Mistakes {
    /// `none`, or the names joined with commas (the `mistake=` syntax).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.is_empty() {
            return f.write_str("none");
        }
        let names: Vec<&str> = self.iter().map(Mistake::name).collect();
        f.write_str(&names.join(","))
    }
}

impl fmt::Debug for Mistakes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Mistakes({self})")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_parse_and_print_back() {
        let one = Mistakes::parse("huge-zero-page").unwrap();
        assert!(one.contains(Mistake::HugeZeroPage));
        assert_eq!(one.to_string(), "huge-zero-page");
        assert_eq!(Mistakes::parse("none"), Ok(Mistakes::NONE));
        assert_eq!(Mistakes::NONE.to_string(), "none");
        assert_eq!(Mistakes::parse("huge-zero-page,bogus"), Err("bogus".into()));
        let both = Mistakes::parse("tag-write-in-place,huge-zero-page").unwrap();
        assert_eq!(both.to_string(), "huge-zero-page,tag-write-in-place");
        assert_eq!(Mistakes::parse(""), Err(String::new()));
    }
}
