//! The cost model (`docs/workloads.md` §3, `docs/cost-model.md`): every
//! event the machine emits is charged cycles from the platform's
//! [`CostTable`], and the totals per kind are the `cost.*` counters.
//!
//! # Contract
//! - Charged from the event stream alone, whether or not the trace is on
//!   ([`crate::trace::EventSink::emit`] charges every event it is given),
//!   so `cost.*` are the same for a traced and an untraced run.
//! - Each [`Event`] variant maps to the table's entries here and nowhere
//!   else: a new event kind does not compile until it is given a cost.
//! - Deterministic integer arithmetic, saturating (a total never wraps).

use core::cell::Cell;

use platform::{CostEntry, CostTable, Platform};
use uapi::Counter;
use uapi::event::{Event, FaultKind, FaultOutcome, ReserveHow};

/// Pages of a transparent huge page (2 MiB of 4 KiB pages).
const HUGE_PAGES: u64 = 512;

/// The running totals of one machine.
#[derive(Debug)]
pub struct CostMeter {
    table: CostTable,
    /// Simulated CPUs: `lru_cache_disable()` reaches each of them.
    cpus: u64,
    /// Pages per tag block (cache maintenance and contiguous allocation
    /// are per page).
    block_pages: u64,
    totals: Cell<[u64; Counter::COST_KINDS.len()]>,
}

impl CostMeter {
    pub fn new(platform: &Platform) -> Self {
        let page = platform.page_size().max(1);
        Self {
            table: *platform.cost(),
            cpus: u64::from(platform.settings().cpus.max(1)),
            block_pages: platform.block_size().map_or(1, |b| (b / page).max(1)),
            totals: Cell::new([0; Counter::COST_KINDS.len()]),
        }
    }

    fn add(&self, kind: Counter, cycles: u64) {
        let index = Counter::COST_KINDS
            .iter()
            .position(|k| *k == kind)
            .unwrap_or_else(|| panic!("BUG: {kind} is not a cost kind"));
        let mut totals = self.totals.get();
        totals[index] = totals[index].saturating_add(cycles);
        self.totals.set(totals);
    }

    fn cycles(&self, entry: CostEntry) -> u64 {
        self.table.get(entry)
    }

    /// Charges one event.
    pub fn charge(&self, event: &Event) {
        use CostEntry as E;
        let c = |entry| self.cycles(entry);
        match *event {
            Event::Fault { kind, outcome, .. } => {
                // A fault that mapped a new page cleared it first; the
                // zero pages, copies (charged by `CowCopy`), swap-ins
                // (charged by `SwapIn`) and tag storage faults clear
                // nothing.
                let cleared = match (kind, outcome) {
                    (FaultKind::Anon, FaultOutcome::Mapped) => 1,
                    (FaultKind::Huge, FaultOutcome::Mapped) => HUGE_PAGES,
                    _ => 0,
                };
                self.add(
                    Counter::CostFault,
                    c(E::Fault).saturating_add(cleared * c(E::ClearPage)),
                );
            }
            Event::TagsInitialised { .. } => self.add(Counter::CostTagInit, c(E::TagInit)),
            // A console line: no modelled cost.
            Event::KernelWarning { .. } => {}
            Event::CowCopy { tags_copied, .. } => {
                let tags = if tags_copied { c(E::CopyTags) } else { 0 };
                self.add(Counter::CostCopy, c(E::CopyPage).saturating_add(tags));
            }
            Event::TagReserve { how, .. } => {
                let maintenance = self.block_pages * c(E::CacheMaintPage);
                match how {
                    ReserveHow::FastPath => {
                        self.add(Counter::CostReserve, c(E::ReserveFastPath));
                        self.add(Counter::CostCacheMaint, maintenance);
                    }
                    // A claim goes through alloc_contig_range() whether it
                    // succeeds or not; its migrations are their own events.
                    ReserveHow::Claimed { .. } | ReserveHow::Failed(_) => {
                        self.add(
                            Counter::CostContig,
                            c(E::ContigCall).saturating_add(self.block_pages * c(E::ContigPage)),
                        );
                        self.add(Counter::CostLruIpi, self.cpus * c(E::LruDisableIpi));
                        if matches!(how, ReserveHow::Claimed { .. }) {
                            self.add(Counter::CostCacheMaint, maintenance);
                        }
                    }
                }
            }
            Event::TagRelease { .. } => self.add(Counter::CostReserve, c(E::Release)),
            Event::Migrate { .. } => self.add(
                Counter::CostMigration,
                c(E::Migrate).saturating_add(c(E::CopyPage)),
            ),
            Event::HugeSplit { .. } => self.add(Counter::CostSplit, c(E::HugeSplit)),
            Event::SwapOut { tags_saved, .. } => {
                let tags = if tags_saved { c(E::SwapTags) } else { 0 };
                self.add(Counter::CostSwap, c(E::SwapOut).saturating_add(tags));
            }
            Event::SwapIn { tags_restored, .. } => {
                let tags = if tags_restored { c(E::SwapTags) } else { 0 };
                self.add(Counter::CostSwap, c(E::SwapIn).saturating_add(tags));
            }
        }
    }

    /// A `cost.*` counter's value, `None` for any other counter.
    pub fn counter(&self, counter: Counter) -> Option<u64> {
        let totals = self.totals.get();
        if counter == Counter::CostTotal {
            return Some(totals.iter().fold(0u64, |a, b| a.saturating_add(*b)));
        }
        Counter::COST_KINDS
            .iter()
            .position(|k| *k == counter)
            .map(|i| totals[i])
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use mte::{Pfn, VirtAddr};
    use uapi::event::{MigrateReason, ReserveFailure};

    fn meter() -> CostMeter {
        CostMeter::new(&Platform::default())
    }

    #[test]
    fn each_event_is_charged_from_the_table() {
        let m = meter();
        let t = CostTable::default();
        let addr = VirtAddr::new(0x1000).unwrap();
        m.charge(&Event::Fault {
            kind: FaultKind::Anon,
            addr,
            outcome: FaultOutcome::Mapped,
        });
        assert_eq!(
            m.counter(Counter::CostFault),
            Some(t.get(CostEntry::Fault) + t.get(CostEntry::ClearPage))
        );
        m.charge(&Event::TagReserve {
            block: 1,
            how: ReserveHow::FastPath,
        });
        assert_eq!(
            m.counter(Counter::CostReserve),
            Some(t.get(CostEntry::ReserveFastPath))
        );
        assert_eq!(m.counter(Counter::CostContig), Some(0));
        m.charge(&Event::TagReserve {
            block: 2,
            how: ReserveHow::Failed(ReserveFailure::Pinned),
        });
        assert_eq!(
            m.counter(Counter::CostContig),
            Some(t.get(CostEntry::ContigCall) + t.get(CostEntry::ContigPage))
        );
        let cpus = u64::from(Platform::default().settings().cpus);
        assert_eq!(
            m.counter(Counter::CostLruIpi),
            Some(cpus * t.get(CostEntry::LruDisableIpi))
        );
        m.charge(&Event::Migrate {
            from: Pfn::new(1),
            to: Pfn::new(2),
            reason: MigrateReason::TagStorageClaim,
        });
        let sum: u64 = Counter::COST_KINDS
            .iter()
            .map(|k| m.counter(*k).unwrap())
            .sum();
        assert_eq!(m.counter(Counter::CostTotal), Some(sum));
        assert_eq!(m.counter(Counter::MemFree), None);
    }

    #[test]
    fn a_replaced_entry_changes_the_charge() {
        let mut platform = Platform::default();
        let mut table = CostTable::default();
        table.set(CostEntry::HugeSplit, 7);
        platform.set_cost(table);
        let m = CostMeter::new(&platform);
        m.charge(&Event::HugeSplit {
            pmd: VirtAddr::new(0x20_0000).unwrap(),
            reason: uapi::event::SplitReason::Pin,
        });
        assert_eq!(m.counter(Counter::CostSplit), Some(7));
        assert_eq!(m.counter(Counter::CostTotal), Some(7));
    }
}
