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
    FaultStuck,
    SwapOut,
    SwapIn,
    SwapSavedTags,
    MigratePages,
    KsmMerged,
    TcfSync,
    TcfAsync,
    /// Modelled cycles (`docs/workloads.md` §3): the total, then each kind.
    CostTotal,
    CostFault,
    CostTagInit,
    CostCopy,
    CostReserve,
    CostContig,
    CostLruIpi,
    CostCacheMaint,
    CostMigration,
    CostSplit,
    CostSwap,
    /// KSM pages in use now (Linux `pages_shared`).
    KsmSharing,
    /// Mappings of KSM pages beyond the first of each: the pages KSM saves
    /// now (Linux `pages_sharing`). Not in the spec's list: a `--json`
    /// extra that the ported `ksm_tests.c` checks need.
    KsmSaved,
    FileWriteback,
    FileDropped,
    FileReads,
    ReclaimDirect,
    CleancachePuts,
    CleancacheHits,
    CleancacheDrops,
    /// Tag block claims taken straight off the buddy allocator (the fast
    /// path, `reserve-fast-path=on`).
    TagStorageFastPath,
    /// Tag block claims through contiguous allocation
    /// (`alloc_contig_range()`), failed ones included.
    TagStorageContig,
    /// Kernel warnings printed (`WARN_ON_ONCE`: each site once per
    /// machine), the sum of the `kernel.warn.SITE` counters.
    KernelWarn,
    /// `WARN_ON_ONCE` in `set_page_mte_tagged()` reached from
    /// `mte_restore_tags_for_pfn()` (`tags-by-pfn`): printed or not (0/1).
    KernelWarnRestoreTagsForPfn,
    /// `WARN_ON_ONCE` in `tag_clear_highpage()` (`tags-by-pfn`): 0/1.
    KernelWarnTagClearHighpage,
    /// Faults that ended out of memory (Linux `VM_FAULT_OOM`: after direct
    /// reclaim freed nothing, or where the model does not reclaim), and
    /// `fork`, `exec` or a long-term pin refused for want of memory.
    Oom,
    /// Anonymous faults that allocated a multi-size THP of each size
    /// (`thp-sizes=`), then those whose allocation of that size failed and
    /// fell back to the next smaller enabled size (Linux's per-size
    /// `hugepages-<size>kB/stats/anon_fault_alloc` and
    /// `anon_fault_fallback`).
    MthpAnonFaultAlloc16K,
    MthpAnonFaultFallback16K,
    MthpAnonFaultAlloc32K,
    MthpAnonFaultFallback32K,
    MthpAnonFaultAlloc64K,
    MthpAnonFaultFallback64K,
    MthpAnonFaultAlloc128K,
    MthpAnonFaultFallback128K,
    MthpAnonFaultAlloc256K,
    MthpAnonFaultFallback256K,
    MthpAnonFaultAlloc512K,
    MthpAnonFaultFallback512K,
    MthpAnonFaultAlloc1M,
    MthpAnonFaultFallback1M,
}

impl Counter {
    pub const ALL: [Counter; 63] = [
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
        Counter::FaultStuck,
        Counter::SwapOut,
        Counter::SwapIn,
        Counter::SwapSavedTags,
        Counter::MigratePages,
        Counter::KsmMerged,
        Counter::TcfSync,
        Counter::TcfAsync,
        Counter::CostTotal,
        Counter::CostFault,
        Counter::CostTagInit,
        Counter::CostCopy,
        Counter::CostReserve,
        Counter::CostContig,
        Counter::CostLruIpi,
        Counter::CostCacheMaint,
        Counter::CostMigration,
        Counter::CostSplit,
        Counter::CostSwap,
        Counter::KsmSharing,
        Counter::KsmSaved,
        Counter::FileWriteback,
        Counter::FileDropped,
        Counter::FileReads,
        Counter::ReclaimDirect,
        Counter::CleancachePuts,
        Counter::CleancacheHits,
        Counter::CleancacheDrops,
        Counter::TagStorageFastPath,
        Counter::TagStorageContig,
        Counter::KernelWarn,
        Counter::KernelWarnRestoreTagsForPfn,
        Counter::KernelWarnTagClearHighpage,
        Counter::Oom,
        Counter::MthpAnonFaultAlloc16K,
        Counter::MthpAnonFaultFallback16K,
        Counter::MthpAnonFaultAlloc32K,
        Counter::MthpAnonFaultFallback32K,
        Counter::MthpAnonFaultAlloc64K,
        Counter::MthpAnonFaultFallback64K,
        Counter::MthpAnonFaultAlloc128K,
        Counter::MthpAnonFaultFallback128K,
        Counter::MthpAnonFaultAlloc256K,
        Counter::MthpAnonFaultFallback256K,
        Counter::MthpAnonFaultAlloc512K,
        Counter::MthpAnonFaultFallback512K,
        Counter::MthpAnonFaultAlloc1M,
        Counter::MthpAnonFaultFallback1M,
    ];

    /// The `cost.KIND` counters, whose sum is `cost.total`.
    pub const COST_KINDS: [Counter; 10] = [
        Counter::CostFault,
        Counter::CostTagInit,
        Counter::CostCopy,
        Counter::CostReserve,
        Counter::CostContig,
        Counter::CostLruIpi,
        Counter::CostCacheMaint,
        Counter::CostMigration,
        Counter::CostSplit,
        Counter::CostSwap,
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
            Counter::FaultStuck => "fault.stuck",
            Counter::SwapOut => "swap.out",
            Counter::SwapIn => "swap.in",
            Counter::SwapSavedTags => "swap.saved_tags",
            Counter::MigratePages => "migrate.pages",
            Counter::KsmMerged => "ksm.merged",
            Counter::TcfSync => "tcf.sync",
            Counter::TcfAsync => "tcf.async",
            Counter::CostTotal => "cost.total",
            Counter::CostFault => "cost.fault",
            Counter::CostTagInit => "cost.tag_init",
            Counter::CostCopy => "cost.copy",
            Counter::CostReserve => "cost.reserve",
            Counter::CostContig => "cost.contig",
            Counter::CostLruIpi => "cost.lru_ipi",
            Counter::CostCacheMaint => "cost.cache_maint",
            Counter::CostMigration => "cost.migration",
            Counter::CostSplit => "cost.split",
            Counter::CostSwap => "cost.swap",
            Counter::KsmSharing => "ksm.sharing",
            Counter::KsmSaved => "ksm.saved",
            Counter::FileWriteback => "file.writeback",
            Counter::FileDropped => "file.dropped",
            Counter::FileReads => "file.reads",
            Counter::ReclaimDirect => "reclaim.direct",
            Counter::CleancachePuts => "cleancache.puts",
            Counter::CleancacheHits => "cleancache.hits",
            Counter::CleancacheDrops => "cleancache.drops",
            Counter::TagStorageFastPath => "tag_storage.fast_path",
            Counter::TagStorageContig => "tag_storage.contig",
            Counter::KernelWarn => "kernel.warn",
            Counter::KernelWarnRestoreTagsForPfn => "kernel.warn.mte_restore_tags_for_pfn",
            Counter::KernelWarnTagClearHighpage => "kernel.warn.tag_clear_highpage",
            Counter::Oom => "oom",
            Counter::MthpAnonFaultAlloc16K => "mthp.16K.anon_fault_alloc",
            Counter::MthpAnonFaultFallback16K => "mthp.16K.anon_fault_fallback",
            Counter::MthpAnonFaultAlloc32K => "mthp.32K.anon_fault_alloc",
            Counter::MthpAnonFaultFallback32K => "mthp.32K.anon_fault_fallback",
            Counter::MthpAnonFaultAlloc64K => "mthp.64K.anon_fault_alloc",
            Counter::MthpAnonFaultFallback64K => "mthp.64K.anon_fault_fallback",
            Counter::MthpAnonFaultAlloc128K => "mthp.128K.anon_fault_alloc",
            Counter::MthpAnonFaultFallback128K => "mthp.128K.anon_fault_fallback",
            Counter::MthpAnonFaultAlloc256K => "mthp.256K.anon_fault_alloc",
            Counter::MthpAnonFaultFallback256K => "mthp.256K.anon_fault_fallback",
            Counter::MthpAnonFaultAlloc512K => "mthp.512K.anon_fault_alloc",
            Counter::MthpAnonFaultFallback512K => "mthp.512K.anon_fault_fallback",
            Counter::MthpAnonFaultAlloc1M => "mthp.1M.anon_fault_alloc",
            Counter::MthpAnonFaultFallback1M => "mthp.1M.anon_fault_fallback",
        }
    }

    /// `mthp.SIZE.anon_fault_alloc` and `mthp.SIZE.anon_fault_fallback` of
    /// the folio order `order` (2 to 8); `None` for any other order.
    pub const fn mthp(order: u32) -> Option<(Counter, Counter)> {
        Some(match order {
            2 => (
                Counter::MthpAnonFaultAlloc16K,
                Counter::MthpAnonFaultFallback16K,
            ),
            3 => (
                Counter::MthpAnonFaultAlloc32K,
                Counter::MthpAnonFaultFallback32K,
            ),
            4 => (
                Counter::MthpAnonFaultAlloc64K,
                Counter::MthpAnonFaultFallback64K,
            ),
            5 => (
                Counter::MthpAnonFaultAlloc128K,
                Counter::MthpAnonFaultFallback128K,
            ),
            6 => (
                Counter::MthpAnonFaultAlloc256K,
                Counter::MthpAnonFaultFallback256K,
            ),
            7 => (
                Counter::MthpAnonFaultAlloc512K,
                Counter::MthpAnonFaultFallback512K,
            ),
            8 => (
                Counter::MthpAnonFaultAlloc1M,
                Counter::MthpAnonFaultFallback1M,
            ),
            _ => return None,
        })
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
    /// Maps a page merged by KSM.
    Ksm,
}

impl PageState {
    pub const ALL: [PageState; 12] = [
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
        PageState::Ksm,
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
            PageState::Ksm => "ksm",
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
    #[error(transparent)]
    Schedule(#[from] sched::SchedError),
    /// The machine does not model this op or observation.
    #[error("not modelled by this machine: {0}")]
    Unsupported(&'static str),
}

/// The rule a [`Violation`] breaks: one of the invariants of
/// `docs/model.md` §4 (numbered as there), or the consistency of one
/// layer's own bookkeeping (a VMA tree, a page table, the reverse map, a
/// TLB, swap counts, page caches, the process table).
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Debug)]
pub enum Invariant {
    /// §4.1: a valid tagged entry maps a tagged, initialised, reserved frame.
    TaggedEntries,
    /// §4.2: tag storage is never tagged nor mapped by a valid tagged entry.
    TagStorageUntagged,
    /// §4.3: reserved blocks hold no data and count their tagged frames.
    ReservedBlocks,
    /// §4.4: every frame is in exactly one state; the counts add up.
    FrameStates,
    /// §4.5: the zero page is never writable, its tags are 0.
    ZeroPage,
    /// §4.6: reference and map counts equal the references held.
    Counts,
    /// §4.7: saved tags exist exactly for swapped-out tagged pages.
    SavedTags,
    /// §4.8: no tag is written into tag storage that is not reserved.
    TagWrites,
    /// §4.9: no CPU sleeps holding a spinlock.
    NoSleepUnderSpinlock,
    /// §4.10: every command completes.
    Progress,
    /// §4.11: nothing is lost.
    NothingLost,
    /// A layer's own bookkeeping disagrees with itself or another layer.
    LayerConsistency,
}

impl Invariant {
    /// The number of `docs/model.md` §4, `None` for layer consistency.
    pub const fn number(self) -> Option<u8> {
        Some(match self {
            Invariant::TaggedEntries => 1,
            Invariant::TagStorageUntagged => 2,
            Invariant::ReservedBlocks => 3,
            Invariant::FrameStates => 4,
            Invariant::ZeroPage => 5,
            Invariant::Counts => 6,
            Invariant::SavedTags => 7,
            Invariant::TagWrites => 8,
            Invariant::NoSleepUnderSpinlock => 9,
            Invariant::Progress => 10,
            Invariant::NothingLost => 11,
            Invariant::LayerConsistency => return None,
        })
    }
}

impl fmt::Display for Invariant {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.number() {
            Some(n) => write!(f, "invariant {n}"),
            None => f.write_str("layer consistency"),
        }
    }
}

/// One broken invariant of a machine: which rule, and what the machine
/// found (shown as `invariant 6: ...` or `layer consistency: ...`).
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Debug)]
pub struct Violation {
    pub invariant: Invariant,
    pub message: String,
}

impl Violation {
    pub fn new(invariant: Invariant, message: impl Into<String>) -> Violation {
        Violation {
            invariant,
            message: message.into(),
        }
    }
}

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.invariant, self.message)
    }
}

/// A simulated machine that runs scenario ops and answers observations.
///
/// Observations never change the machine: no fault is taken, no counter
/// moves (scenario language, "Expectations").
pub trait Machine {
    /// Runs one op to completion.
    fn run(&mut self, op: &Op) -> Reply;

    /// A hint ahead of a batch of loads and stores: brings into the host's
    /// caches what an access at each `ptr` in its `pid`'s address space
    /// will read (its translation, its bytes), changing nothing (no
    /// translation made, no fault taken, nothing counted), so that the
    /// host cache misses of the batch overlap instead of following one
    /// another. Returns a value made from what it read, for the caller to
    /// pass to [`std::hint::black_box`] so the reads are kept. The default
    /// reads nothing.
    fn prefetch(&self, accesses: &[(Pid, TaggedPtr)]) -> u64 {
        let _ = accesses;
        0
    }

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

    /// Every invariant of `docs/model.md` §4 that does not hold now.
    fn invariant_violations(&self) -> Vec<Violation>;

    /// Turns the event trace on or off (off when a machine is built).
    /// While off, a machine records nothing and pays only a flag test.
    fn set_trace(&mut self, on: bool) {
        let _ = on; // a machine without a trace records nothing
    }

    /// The events recorded since the last call, oldest first (empty for a
    /// machine without a trace).
    fn take_events(&mut self) -> Vec<crate::event::Event> {
        Vec::new()
    }

    /// The lock acquisition orders this machine's runs have seen (`None`
    /// for a machine without simulated locks). An exploration carries them
    /// from each schedule's machine to the next, so that two schedules
    /// taking two locks in opposite orders are reported as a possible
    /// deadlock (lockdep style, `docs/model.md` §4, invariant 9).
    fn lock_order(&self) -> Option<sched::LockOrder> {
        None
    }

    /// Adds orders seen on other machines; an inversion they close is then
    /// one of [`Machine::invariant_violations`].
    fn merge_lock_order(&mut self, order: &sched::LockOrder) {
        let _ = order; // a machine without simulated locks has no order
    }

    /// A copy of the machine that runs on independently of this one, or
    /// `None` if the machine cannot be copied. The fuzzer's
    /// linearizability check runs a `parallel` block's commands in every
    /// serial order on copies of the reference.
    fn snapshot(&self) -> Option<Box<dyn Machine>> {
        None
    }

    /// The machine as [`core::any::Any`] (for [`Machine::same_state`]
    /// between two machines of one type); `None` if it does not say.
    fn as_any(&self) -> Option<&dyn core::any::Any> {
        None
    }

    /// Whether `other` is in the same state as this machine: the same
    /// reply to every op from now on. `None` if the machine cannot tell
    /// (then two machines are taken to differ).
    fn same_state(&self, other: &dyn Machine) -> Option<bool> {
        let _ = other;
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn violations_name_their_invariant() {
        let v = Violation::new(Invariant::Counts, "frame 7: map count 2, but 1 mappings");
        assert_eq!(
            v.to_string(),
            "invariant 6: frame 7: map count 2, but 1 mappings"
        );
        let v = Violation::new(Invariant::LayerConsistency, "stale TLB");
        assert_eq!(v.to_string(), "layer consistency: stale TLB");
        assert_eq!(Invariant::NothingLost.number(), Some(11));
        assert_eq!(Invariant::TaggedEntries.number(), Some(1));
    }

    #[test]
    fn schedule_errors_keep_their_structure() {
        let e = MachineError::from(sched::SchedError::StepLimit {
            limit: 3,
            unfinished: vec![sched::CpuId::new(1)],
        });
        assert!(matches!(
            e,
            MachineError::Schedule(sched::SchedError::StepLimit { limit: 3, .. })
        ));
        assert_eq!(
            e.to_string(),
            "step limit: 3 switch points reached; unfinished: cpu1"
        );
    }
}
