//! The [`Machine`] trait, and what expectations observe: counters and page
//! states.

use crate::Pid;
use crate::command::{Op, Reply};
use core::fmt;
use mte::{Tag, TaggedPtr};
use thiserror::Error;

/// A counter of `docs/model.md` §5.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Debug)]
pub enum Counter {
    MemPages,
    MemFree,
    TagStoragePages,
    TagStorageBlocks,
    TagStorageReserved,
    TagStorageDataPages,
    TagStorageReservations,
    TagStorageReleases,
    TagStorageMigrations,
    TagStorageReserveFailures,
    PagesTagged,
    FaultAnon,
    FaultZeroPage,
    FaultCow,
    FaultTagStorage,
    SwapOut,
    SwapIn,
    SwapSavedTags,
    MigratePages,
    KsmMerged,
    TcfSync,
    TcfAsync,
}

impl Counter {
    pub const ALL: [Counter; 22] = [
        Counter::MemPages,
        Counter::MemFree,
        Counter::TagStoragePages,
        Counter::TagStorageBlocks,
        Counter::TagStorageReserved,
        Counter::TagStorageDataPages,
        Counter::TagStorageReservations,
        Counter::TagStorageReleases,
        Counter::TagStorageMigrations,
        Counter::TagStorageReserveFailures,
        Counter::PagesTagged,
        Counter::FaultAnon,
        Counter::FaultZeroPage,
        Counter::FaultCow,
        Counter::FaultTagStorage,
        Counter::SwapOut,
        Counter::SwapIn,
        Counter::SwapSavedTags,
        Counter::MigratePages,
        Counter::KsmMerged,
        Counter::TcfSync,
        Counter::TcfAsync,
    ];

    /// The name of `docs/model.md` §5 (`tag_storage.reserved`).
    pub const fn name(self) -> &'static str {
        match self {
            Counter::MemPages => "mem.pages",
            Counter::MemFree => "mem.free",
            Counter::TagStoragePages => "tag_storage.pages",
            Counter::TagStorageBlocks => "tag_storage.blocks",
            Counter::TagStorageReserved => "tag_storage.reserved",
            Counter::TagStorageDataPages => "tag_storage.data_pages",
            Counter::TagStorageReservations => "tag_storage.reservations",
            Counter::TagStorageReleases => "tag_storage.releases",
            Counter::TagStorageMigrations => "tag_storage.migrations",
            Counter::TagStorageReserveFailures => "tag_storage.reserve_failures",
            Counter::PagesTagged => "pages.tagged",
            Counter::FaultAnon => "fault.anon",
            Counter::FaultZeroPage => "fault.zero_page",
            Counter::FaultCow => "fault.cow",
            Counter::FaultTagStorage => "fault.tag_storage",
            Counter::SwapOut => "swap.out",
            Counter::SwapIn => "swap.in",
            Counter::SwapSavedTags => "swap.saved_tags",
            Counter::MigratePages => "migrate.pages",
            Counter::KsmMerged => "ksm.merged",
            Counter::TcfSync => "tcf.sync",
            Counter::TcfAsync => "tcf.async",
        }
    }

    pub fn from_name(name: &str) -> Option<Counter> {
        Counter::ALL.into_iter().find(|c| c.name() == name)
    }
}

impl fmt::Display for Counter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A state of a page-table entry that `expect P page PTR STATE` tests.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Debug)]
pub enum PageState {
    Unmapped,
    ZeroPage,
    HugeZeroPage,
    Private,
    Shared,
    Huge,
    Swapped,
    Tagged,
    Untagged,
    InTagStorage,
    AwaitingTagStorage,
}

impl PageState {
    pub const ALL: [PageState; 11] = [
        PageState::Unmapped,
        PageState::ZeroPage,
        PageState::HugeZeroPage,
        PageState::Private,
        PageState::Shared,
        PageState::Huge,
        PageState::Swapped,
        PageState::Tagged,
        PageState::Untagged,
        PageState::InTagStorage,
        PageState::AwaitingTagStorage,
    ];

    pub const fn name(self) -> &'static str {
        match self {
            PageState::Unmapped => "unmapped",
            PageState::ZeroPage => "zero-page",
            PageState::HugeZeroPage => "huge-zero-page",
            PageState::Private => "private",
            PageState::Shared => "shared",
            PageState::Huge => "huge",
            PageState::Swapped => "swapped",
            PageState::Tagged => "tagged",
            PageState::Untagged => "untagged",
            PageState::InTagStorage => "in-tag-storage",
            PageState::AwaitingTagStorage => "awaiting-tag-storage",
        }
    }

    pub fn from_name(name: &str) -> Option<PageState> {
        PageState::ALL.into_iter().find(|s| s.name() == name)
    }
}

impl fmt::Display for PageState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Why a machine could not carry an op out. These are not outcomes a
/// process sees (those are [`crate::Outcome`]s) but reasons a run stops.
#[derive(Clone, Debug, PartialEq, Eq, Error)]
pub enum MachineError {
    /// A scheduler failure in a parallel block (deadlock, step limit, a
    /// replayed schedule that does not fit).
    #[error("{0}")]
    Schedule(String),
    /// The machine does not model this op or observation.
    #[error("not modelled by this machine: {0}")]
    Unsupported(&'static str),
}

/// A simulated machine that runs scenario ops and answers observations.
///
/// Observations never change the machine: no fault is taken, no counter
/// moves (scenario language, "Expectations").
pub trait Machine {
    /// Runs one op to completion.
    fn run(&mut self, op: &Op) -> Reply;

    /// Runs ops together, each on its own simulated CPU, interleaved as the
    /// chooser decides; replies in the order of `ops`.
    fn run_parallel(
        &mut self,
        ops: &[Op],
        chooser: &mut dyn sched::Chooser,
    ) -> Result<Vec<Reply>, MachineError>;

    /// A counter's value now; `None` if the machine does not keep it.
    fn counter(&self, counter: Counter) -> Option<u64>;

    /// The allocation tags of the granules of `len` bytes from `ptr` in
    /// `pid`'s address space, as LDG would read them after any fault it would
    /// take (0 where no page is present yet, the saved tags of a swapped-out
    /// page). `None` where the range is not mapped.
    fn tags(&self, pid: Pid, ptr: TaggedPtr, len: u64) -> Option<Vec<Tag>>;

    /// Whether the entry for `ptr` in `pid`'s page tables is in `state`;
    /// `None` if the machine does not model page tables.
    fn page_state(&self, pid: Pid, ptr: TaggedPtr, state: PageState) -> Option<bool>;

    /// Every invariant of `docs/model.md` §4 that does not hold now, described.
    fn invariant_violations(&self) -> Vec<String>;
}
