//! The event trace: what a machine did inside, one [`Event`] per step a
//! runner may want to print (`mtesim run --trace`). Events are plain values
//! with a one-line `Display`; frames are page frame numbers, addresses user
//! virtual addresses, tag blocks their index in tag storage.
//!
//! A machine records events only while tracing is on
//! ([`crate::Machine::set_trace`]) and hands them over, oldest first, with
//! [`crate::Machine::take_events`]. The reference model records none.

use core::fmt;
use mte::{Pfn, VirtAddr};

/// One step inside the machine.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Event {
    /// A page fault that mapped something (or, for the tag storage fault,
    /// ended in `outcome`).
    Fault {
        kind: FaultKind,
        addr: VirtAddr,
        outcome: FaultOutcome,
    },
    /// A tag block taken for tags (dynamic tag storage).
    TagReserve { block: u64, how: ReserveHow },
    /// A tag block given back to the page allocator.
    TagRelease { block: u64 },
    /// A page moved from one frame to another.
    Migrate {
        from: Pfn,
        to: Pfn,
        reason: MigrateReason,
    },
    /// A 2 MiB block entry turned into 512 page entries.
    HugeSplit { pmd: VirtAddr, reason: SplitReason },
    /// A page written to a swap slot and unmapped.
    SwapOut {
        pfn: Pfn,
        slot: u64,
        tags_saved: bool,
    },
    /// A swap slot read into a new page.
    SwapIn {
        pfn: Pfn,
        slot: u64,
        tags_restored: bool,
    },
    /// A frame's tags initialised (zeroed, restored or copied) and the frame
    /// marked tagged.
    TagsInitialised { pfn: Pfn },
    /// A copy-on-write copy (also fork's copy of a pinned page).
    CowCopy {
        from: Pfn,
        to: Pfn,
        tags_copied: bool,
    },
    /// A kernel warning printed (`WARN_ON_ONCE`: once per site and machine).
    KernelWarning { site: WarnSite },
}

/// Where a kernel warning fires (the function Linux names in its
/// `WARNING: at` line).
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Debug)]
pub enum WarnSite {
    /// `set_page_mte_tagged()` on a page whose tag storage is not reserved
    /// yet, from `mte_restore_tags_for_pfn()` (RFC v3).
    RestoreTagsForPfn,
    /// `tag_clear_highpage()` on a new page that is tagged already (RFC v3).
    TagClearHighpage,
}

impl WarnSite {
    pub const ALL: [WarnSite; 2] = [WarnSite::RestoreTagsForPfn, WarnSite::TagClearHighpage];

    /// The function Linux's `WARNING: at` line names.
    pub const fn name(self) -> &'static str {
        match self {
            WarnSite::RestoreTagsForPfn => "mte_restore_tags_for_pfn",
            WarnSite::TagClearHighpage => "tag_clear_highpage",
        }
    }
}

/// Which fault handler ran.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Debug)]
pub enum FaultKind {
    /// A new anonymous page (or a private copy of an object's page).
    Anon,
    /// The zero page mapped read-only.
    ZeroPage,
    /// A write to a shared or read-only private page: copied.
    Cow,
    /// A swap entry: the slot read into a new page.
    SwapIn,
    /// An entry awaiting its tag storage.
    TagStorage,
    /// A transparent huge page mapped at an empty PMD.
    Huge,
    /// The huge zero page mapped at an empty PMD.
    HugeZeroPage,
    /// A block entry awaiting its tag storage.
    HugeTagStorage,
}

/// How a fault ended.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Debug)]
pub enum FaultOutcome {
    /// The entry now maps the page.
    Mapped,
    /// The page was migrated out of the way; the retried access maps it.
    Migrated,
    /// The block was split; the retried access takes the 4 KiB path.
    Split,
    /// The fault could not be resolved (no tag storage, no memory).
    Failed,
}

/// How a tag block was reserved, or why it could not be.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum ReserveHow {
    /// Every frame of the block was free: taken off the buddy allocator
    /// with nothing to move.
    FastPath,
    /// `alloc_contig_range()` claimed it, migrating `migrated` pages out.
    Claimed { migrated: u64 },
    /// The claim failed.
    Failed(ReserveFailure),
}

/// Why a tag block could not be claimed.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Debug)]
pub enum ReserveFailure {
    /// A page in it is busy (locked, isolated): worth retrying.
    Busy,
    /// A page in it is pinned.
    Pinned,
    /// A page in it can never move (a kernel page).
    Unmovable,
    /// No destination for a page that had to move.
    NoMemory,
    /// The claim was abandoned (a fatal signal pending).
    Interrupted,
}

/// Why a page was migrated (Linux `enum migrate_reason`).
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Debug)]
pub enum MigrateReason {
    /// Out of a tag block being claimed for tags (`MR_CONTIG_RANGE`).
    TagStorageClaim,
    /// A tagged mapping's page that cannot have tag storage where it is.
    OutOfTagStorage,
    /// A long-term pin of a page in CMA (`MR_LONGTERM_PIN`).
    LongTermPin,
    /// Memory compaction, `compact` or direct compaction (`MR_COMPACTION`).
    Compaction,
}

/// Why a block entry was split.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Debug)]
pub enum SplitReason {
    /// A system call's range (munmap, mprotect, madvise) covers part of it.
    PartialRange,
    /// `madvise pageout`: pages are swapped out 4 KiB at a time.
    Pageout,
    /// A pin through it (a pin never holds a block).
    Pin,
    /// One of its pages is migrated as a 4 KiB page.
    Migration,
    /// Its tag storage cannot be reserved, or it lies in tag storage.
    TagStorage,
    /// A write to the huge zero page or to a shared THP.
    CopyOnWrite,
    /// KSM merges one of its pages (`try_to_merge_one_page()` splits the
    /// THP first).
    Ksm,
}

impl FaultKind {
    pub const fn name(self) -> &'static str {
        match self {
            FaultKind::Anon => "anon",
            FaultKind::ZeroPage => "zero-page",
            FaultKind::Cow => "cow",
            FaultKind::SwapIn => "swap-in",
            FaultKind::TagStorage => "tag-storage",
            FaultKind::Huge => "huge",
            FaultKind::HugeZeroPage => "huge-zero-page",
            FaultKind::HugeTagStorage => "huge-tag-storage",
        }
    }
}

impl FaultOutcome {
    pub const fn name(self) -> &'static str {
        match self {
            FaultOutcome::Mapped => "mapped",
            FaultOutcome::Migrated => "migrated",
            FaultOutcome::Split => "split",
            FaultOutcome::Failed => "failed",
        }
    }
}

impl ReserveFailure {
    pub const fn name(self) -> &'static str {
        match self {
            ReserveFailure::Busy => "busy",
            ReserveFailure::Pinned => "pinned",
            ReserveFailure::Unmovable => "unmovable",
            ReserveFailure::NoMemory => "no-memory",
            ReserveFailure::Interrupted => "interrupted",
        }
    }
}

impl MigrateReason {
    pub const fn name(self) -> &'static str {
        match self {
            MigrateReason::TagStorageClaim => "tag-storage-claim",
            MigrateReason::OutOfTagStorage => "out-of-tag-storage",
            MigrateReason::LongTermPin => "long-term-pin",
            MigrateReason::Compaction => "compaction",
        }
    }
}

impl SplitReason {
    pub const fn name(self) -> &'static str {
        match self {
            SplitReason::PartialRange => "partial-range",
            SplitReason::Pageout => "pageout",
            SplitReason::Pin => "pin",
            SplitReason::Migration => "migration",
            SplitReason::TagStorage => "tag-storage",
            SplitReason::CopyOnWrite => "copy-on-write",
            SplitReason::Ksm => "ksm",
        }
    }
}

impl fmt::Display for ReserveHow {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ReserveHow::FastPath => f.write_str("fast-path"),
            ReserveHow::Claimed { migrated } => write!(f, "claimed migrated={migrated}"),
            ReserveHow::Failed(why) => write!(f, "failed {}", why.name()),
        }
    }
}

impl fmt::Display for Event {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let yes_no = |b: bool| if b { "yes" } else { "no" };
        match *self {
            Event::Fault {
                kind,
                addr,
                outcome,
            } => write!(f, "fault {} {addr} {}", kind.name(), outcome.name()),
            Event::TagReserve { block, how } => write!(f, "tag-reserve block {block} {how}"),
            Event::TagRelease { block } => write!(f, "tag-release block {block}"),
            Event::Migrate { from, to, reason } => {
                write!(f, "migrate pfn {from} -> {to} {}", reason.name())
            }
            Event::HugeSplit { pmd, reason } => write!(f, "huge-split {pmd} {}", reason.name()),
            Event::SwapOut {
                pfn,
                slot,
                tags_saved,
            } => write!(
                f,
                "swap-out pfn {pfn} slot {slot} tags-saved={}",
                yes_no(tags_saved)
            ),
            Event::SwapIn {
                pfn,
                slot,
                tags_restored,
            } => write!(
                f,
                "swap-in pfn {pfn} slot {slot} tags-restored={}",
                yes_no(tags_restored)
            ),
            Event::TagsInitialised { pfn } => write!(f, "tags-init pfn {pfn}"),
            Event::CowCopy {
                from,
                to,
                tags_copied,
            } => write!(
                f,
                "cow-copy pfn {from} -> {to} tags-copied={}",
                yes_no(tags_copied)
            ),
            // Linux's console line, without the offset.
            Event::KernelWarning { site } => write!(f, "WARNING: at {}", site.name()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_print_on_one_line() {
        let addr = VirtAddr::new(0x20_0000).unwrap();
        let cases = [
            (
                Event::Fault {
                    kind: FaultKind::TagStorage,
                    addr,
                    outcome: FaultOutcome::Migrated,
                },
                "fault tag-storage 0x200000 migrated",
            ),
            (
                Event::TagReserve {
                    block: 3,
                    how: ReserveHow::Claimed { migrated: 2 },
                },
                "tag-reserve block 3 claimed migrated=2",
            ),
            (
                Event::TagReserve {
                    block: 4,
                    how: ReserveHow::Failed(ReserveFailure::Pinned),
                },
                "tag-reserve block 4 failed pinned",
            ),
            (
                Event::Migrate {
                    from: Pfn::new(0x10),
                    to: Pfn::new(0x20),
                    reason: MigrateReason::LongTermPin,
                },
                "migrate pfn 0x10 -> 0x20 long-term-pin",
            ),
            (
                Event::SwapOut {
                    pfn: Pfn::new(7),
                    slot: 1,
                    tags_saved: true,
                },
                "swap-out pfn 0x7 slot 1 tags-saved=yes",
            ),
        ];
        for (event, text) in cases {
            assert_eq!(event.to_string(), text);
        }
    }
}
