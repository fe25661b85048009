//! The page LRU lists (Linux v6.8 `include/linux/mmzone.h` `enum lru_list`,
//! `mm/swap.c`, the classic two-list LRU of `mm/vmscan.c`; multi-gen LRU
//! `lru_gen` is not modelled, as on a kernel built without
//! `CONFIG_LRU_GEN` or with it disabled).
//!
//! # Contract
//! Every user page (an anonymous page, a page cache page, a swap cache
//! page, a pinned orphan) is on exactly one list or *isolated* (taken off
//! by reclaim while it works on the page, Linux `folio_isolate_lru()`);
//! nothing else is. Pages enter when they are first mapped or inserted
//! into a page cache (`folio_add_lru()`: new pages start on the inactive
//! list of their type) and leave when they are freed; migration puts the
//! new frame where the old one was (`folio_putback_lru()` of the
//! destination, same list).
//!
//! Each list is kept oldest first: reclaim takes from the oldest end (the
//! tail of Linux's list) and pages are added at the newest end (the head).
//! Positions are sequence numbers in a `BTreeMap`, so every operation is
//! O(log n) and the order is deterministic.
//!
//! `PG_referenced` (the folio flag, [`Lru::test_clear_referenced`]) is kept
//! here; the page-table young bit (`PTE_AF`) lives in the entries and is
//! handled by the kernel (`reclaim`).
//!
//! The pages whose place changed are logged ([`Lru::take_changed`]),
//! for the incremental checker's per-frame LRU verdicts
//! (`crate::machine::check_frames`): every method that changes a place
//! logs its page.
//!
//! [`Lru::consistent_incremental`] gives [`Lru::consistent`]'s verdict
//! while looking only at what changed since its last call. It keeps a
//! second log, of every page whose place or `PG_referenced` flag changed
//! and of the old and the new page of every list entry that changed
//! (the fields are private to this module, so its methods are the only
//! way to change them, and each one logs what it changes), and keeps
//! per page what the full check would say about it (see
//! `ConsistencyCheck`): the lists agree with the places exactly when as
//! many entries are on the lists as places are on a list and the entry
//! at every such place names its page (the places then map one to one
//! onto the entries), which is a verdict per page plus two counts.

use std::collections::btree_map::Entry;
use std::collections::{BTreeMap, BTreeSet};

use mte::Pfn;

/// Linux `enum lru_list` (without `LRU_UNEVICTABLE`'s mlock: the model's
/// unevictable pages are shmem and tmpfs pages, whose swap is not
/// modelled).
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Debug)]
pub(crate) enum LruList {
    InactiveAnon,
    ActiveAnon,
    InactiveFile,
    ActiveFile,
    Unevictable,
}

impl LruList {
    pub(crate) const ALL: [LruList; 5] = [
        LruList::InactiveAnon,
        LruList::ActiveAnon,
        LruList::InactiveFile,
        LruList::ActiveFile,
        LruList::Unevictable,
    ];

    fn index(self) -> usize {
        self as usize
    }

    /// The active list of the same type (unevictable stays).
    pub(crate) fn active(self) -> LruList {
        match self {
            LruList::InactiveAnon | LruList::ActiveAnon => LruList::ActiveAnon,
            LruList::InactiveFile | LruList::ActiveFile => LruList::ActiveFile,
            LruList::Unevictable => LruList::Unevictable,
        }
    }

    /// The inactive list of the same type (unevictable stays).
    pub(crate) fn inactive(self) -> LruList {
        match self {
            LruList::InactiveAnon | LruList::ActiveAnon => LruList::InactiveAnon,
            LruList::InactiveFile | LruList::ActiveFile => LruList::InactiveFile,
            LruList::Unevictable => LruList::Unevictable,
        }
    }

    pub(crate) fn is_file(self) -> bool {
        matches!(self, LruList::InactiveFile | LruList::ActiveFile)
    }
}

/// Where a page is.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(crate) enum LruPlace {
    On(LruList),
    /// Taken off by reclaim; goes back to `home` unless freed meanwhile.
    Isolated {
        home: LruList,
    },
}

/// The lists of the machine's single node and zone (Linux `struct lruvec`).
#[derive(Clone, Debug, Default)]
pub(crate) struct Lru {
    lists: [BTreeMap<u64, Pfn>; 5],
    place: BTreeMap<Pfn, (LruPlace, u64)>,
    referenced: BTreeSet<Pfn>,
    next: u64,
    /// The pages whose place changed since the last
    /// [`Lru::take_changed`]; `None`: unknown (before the first take, or
    /// after more than [`CHANGED_LOG_LIMIT`] changes).
    changed: Option<Vec<Pfn>>,
    /// What [`Lru::consistent_incremental`] keeps between its calls.
    check: ConsistencyCheck,
}

/// The incremental consistency check's log and its verdicts per page
/// (module doc), as of its last call.
#[derive(Clone, Debug, Default)]
struct ConsistencyCheck {
    /// The pages to look at again: every page whose place or flag changed
    /// and the old and new page of every list entry that changed since
    /// the last call; `None`: every page (before the first call, or after
    /// more than [`CHANGED_LOG_LIMIT`] changes).
    log: Option<Vec<Pfn>>,
    /// Each page the check has something to say about, with what (the
    /// `ISOLATED`, `MISPLACED` and `STRAY_FLAG` bits; one map, so that a
    /// recheck is one lookup), and how many pages have each bit.
    verdicts: BTreeMap<Pfn, u8>,
    counts: [usize; 3],
}

/// A page's verdict bits in [`ConsistencyCheck`]: isolated (its place is
/// not on a list), misplaced (its place is on a list but the entry there
/// is not it), a stray flag (referenced with no place).
const ISOLATED: u8 = 1;
const MISPLACED: u8 = 2;
const STRAY_FLAG: u8 = 4;

/// Changes the log holds before it gives up (the checker then looks at
/// every page once).
const CHANGED_LOG_LIMIT: usize = 1 << 14;

impl Lru {
    /// Logs that `pfn`'s place changed, in both logs (module doc).
    fn log(&mut self, pfn: Pfn) {
        push_capped(&mut self.changed, pfn);
        push_capped(&mut self.check.log, pfn);
    }

    /// Logs for the consistency check alone that `pfn`'s flag changed or
    /// that it was the page of a list entry that changed (module doc).
    fn note(&mut self, pfn: Pfn) {
        push_capped(&mut self.check.log, pfn);
    }

    /// The pages whose place changed since the last call (with repeats,
    /// unsorted), or `None` for "any page" (the first call, or the log
    /// overflowed); the log starts afresh.
    pub(crate) fn take_changed(&mut self) -> Option<Vec<Pfn>> {
        self.changed.replace(Vec::new())
    }

    /// Adds `pfn` at the newest end of `list`, if it is on no list yet.
    pub(crate) fn add(&mut self, pfn: Pfn, list: LruList) {
        // One search for both the test and the insertion.
        let Entry::Vacant(vacant) = self.place.entry(pfn) else {
            return;
        };
        let seq = self.next;
        self.next += 1;
        vacant.insert((LruPlace::On(list), seq));
        self.link(pfn, list, seq);
    }

    /// Enters `pfn` at `seq` of `list` (its place says so already).
    fn link(&mut self, pfn: Pfn, list: LruList, seq: u64) {
        self.log(pfn);
        if let Some(old) = self.lists[list.index()].insert(seq, pfn) {
            self.note(old);
        }
    }

    fn unlink(&mut self, pfn: Pfn) -> Option<LruPlace> {
        let (place, seq) = self.place.remove(&pfn)?;
        self.log(pfn);
        if let LruPlace::On(list) = place
            && let Some(old) = self.lists[list.index()].remove(&seq)
            && old != pfn
        {
            self.note(old);
        }
        Some(place)
    }

    /// Takes `pfn` off whatever list (or isolation) it is on: the page is
    /// freed (Linux `lruvec_del_folio()` in `__folio_put()`).
    pub(crate) fn remove(&mut self, pfn: Pfn) {
        self.unlink(pfn);
        if self.referenced.remove(&pfn) {
            self.note(pfn);
        }
    }

    /// Where `pfn` is, if anywhere.
    pub(crate) fn place(&self, pfn: Pfn) -> Option<LruPlace> {
        self.place.get(&pfn).map(|&(p, _)| p)
    }

    /// Linux `isolate_lru_folios()` of one page: the oldest of `list`,
    /// taken off (isolated). `None` when the list is empty.
    pub(crate) fn isolate_oldest(&mut self, list: LruList) -> Option<Pfn> {
        let (seq, pfn) = self.lists[list.index()].pop_first()?;
        self.log(pfn);
        self.place
            .insert(pfn, (LruPlace::Isolated { home: list }, seq));
        Some(pfn)
    }

    /// Puts an isolated page back at the newest end of `list` (Linux
    /// `move_folios_to_lru()`); nothing if it was freed meanwhile (then it
    /// is on no list) or is not isolated.
    pub(crate) fn putback(&mut self, pfn: Pfn, list: LruList) {
        // The place is rewritten where it is (one search).
        if let Some(place @ (LruPlace::Isolated { .. }, _)) = self.place.get_mut(&pfn) {
            let seq = self.next;
            self.next += 1;
            *place = (LruPlace::On(list), seq);
            self.link(pfn, list, seq);
        }
    }

    /// Migration: `dst` takes `src`'s place, position and flag.
    pub(crate) fn replace(&mut self, src: Pfn, dst: Pfn) {
        let Some((place, seq)) = self.place.remove(&src) else {
            return;
        };
        self.log(src);
        self.log(dst);
        if let LruPlace::On(list) = place
            && let Some(old) = self.lists[list.index()].insert(seq, dst)
            && old != src
        {
            self.note(old);
        }
        self.place.insert(dst, (place, seq));
        if self.referenced.remove(&src) {
            self.referenced.insert(dst);
        }
    }

    /// Pages on `list` now.
    pub(crate) fn len(&self, list: LruList) -> usize {
        self.lists[list.index()].len()
    }

    /// Pages of `list`, oldest first.
    #[cfg(test)]
    pub(crate) fn pages(&self, list: LruList) -> impl Iterator<Item = Pfn> + '_ {
        self.lists[list.index()].values().copied()
    }

    /// Every page known here, with its place.
    pub(crate) fn all(&self) -> impl Iterator<Item = (Pfn, LruPlace)> + '_ {
        self.place.iter().map(|(&pfn, &(p, _))| (pfn, p))
    }

    /// Linux `folio_set_referenced()`.
    pub(crate) fn set_referenced(&mut self, pfn: Pfn) {
        if self.place.contains_key(&pfn) && self.referenced.insert(pfn) {
            self.note(pfn);
        }
    }

    /// Linux `folio_test_clear_referenced()`.
    pub(crate) fn test_clear_referenced(&mut self, pfn: Pfn) -> bool {
        let was = self.referenced.remove(&pfn);
        if was {
            self.note(pfn);
        }
        was
    }

    /// Whether the bookkeeping agrees with itself: each list's entries and
    /// the places name each other, flags only on known pages.
    pub(crate) fn consistent(&self) -> bool {
        self.check_consistent()
    }

    /// [`Lru::consistent`]'s verdict, from the pages logged since the
    /// last call (module doc); the first call, and one after the log
    /// overflowed, look at every page.
    pub(crate) fn consistent_incremental(&mut self) -> bool {
        match self.check.log.replace(Vec::new()) {
            Some(mut pages) => {
                pages.sort_unstable();
                pages.dedup();
                for pfn in pages {
                    self.recheck(pfn);
                }
            }
            None => {
                self.check.verdicts.clear();
                self.check.counts = [0; 3];
                let pages: Vec<Pfn> = self.place.keys().chain(&self.referenced).copied().collect();
                for pfn in pages {
                    self.recheck(pfn);
                }
            }
        }
        let listed: usize = self.lists.iter().map(BTreeMap::len).sum();
        let [isolated, misplaced, stray_flags] = self.check.counts;
        listed + isolated == self.place.len() && misplaced == 0 && stray_flags == 0
    }

    /// What the consistency check says about `pfn` now: isolated or not,
    /// on a list without its entry there or not, referenced with no
    /// place or not.
    fn recheck(&mut self, pfn: Pfn) {
        let place = self.place.get(&pfn).copied();
        let isolated = matches!(place, Some((LruPlace::Isolated { .. }, _)));
        let misplaced = match place {
            Some((LruPlace::On(l), seq)) => self.lists[l.index()].get(&seq) != Some(&pfn),
            _ => false,
        };
        let stray_flag = place.is_none() && self.referenced.contains(&pfn);
        let bits = if isolated { ISOLATED } else { 0 }
            | if misplaced { MISPLACED } else { 0 }
            | if stray_flag { STRAY_FLAG } else { 0 };
        let check = &mut self.check;
        let old = match check.verdicts.entry(pfn) {
            Entry::Vacant(_) if bits == 0 => 0,
            Entry::Vacant(v) => {
                v.insert(bits);
                0
            }
            Entry::Occupied(o) if bits == 0 => o.remove(),
            Entry::Occupied(mut o) => std::mem::replace(o.get_mut(), bits),
        };
        for (i, bit) in [ISOLATED, MISPLACED, STRAY_FLAG].into_iter().enumerate() {
            check.counts[i] =
                check.counts[i] + usize::from(bits & bit != 0) - usize::from(old & bit != 0);
        }
    }

    /// Each list entry `(seq, pfn)` of list `l` has the place `(On(l),
    /// seq)`, as many pages are on lists as there are entries, and every
    /// referenced page has a place. Computed without a lookup per page:
    /// the entries sorted by frame must equal the places that are on a
    /// list, in frame order (with the counts equal, a page on two entries
    /// or an entry whose place differs makes some pair differ), and the
    /// referenced pages are merged with the places.
    fn check_consistent(&self) -> bool {
        let mut entries: Vec<(Pfn, LruList, u64)> = LruList::ALL
            .iter()
            .flat_map(|&l| {
                self.lists[l.index()]
                    .iter()
                    .map(move |(&seq, &pfn)| (pfn, l, seq))
            })
            .collect();
        entries.sort_unstable();
        let mut on = self
            .place
            .iter()
            .filter_map(|(&pfn, &(place, seq))| match place {
                LruPlace::On(l) => Some((pfn, l, seq)),
                LruPlace::Isolated { .. } => None,
            });
        let lists_agree = entries.iter().all(|e| on.next() == Some(*e)) && on.next().is_none();
        let mut places = self.place.keys().peekable();
        lists_agree
            && self.referenced.iter().all(|p| {
                while places.next_if(|q| *q < p).is_some() {}
                places.peek() == Some(&p)
            })
    }
}

#[cfg(test)]
impl Lru {
    /// A broken path's bookkeeping, for the machine's planted-bug tests:
    /// `pfn`, on a list, also gets an entry on `list` (a page on two
    /// lists), logged as a method logs what it changes.
    pub(crate) fn plant_second_entry(&mut self, pfn: Pfn, list: LruList) {
        let seq = self.next;
        self.next += 1;
        self.lists[list.index()].insert(seq, pfn);
        self.note(pfn);
    }
}

/// Appends `pfn` to `log`, which gives up (`None`: any page) past
/// [`CHANGED_LOG_LIMIT`] entries.
fn push_capped(log: &mut Option<Vec<Pfn>>, pfn: Pfn) {
    if let Some(pages) = log {
        if pages.len() < CHANGED_LOG_LIMIT {
            pages.push(pfn);
        } else {
            *log = None;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(n: u64) -> Pfn {
        Pfn::new(n)
    }

    #[test]
    fn oldest_first_isolation_putback_and_removal() {
        let mut lru = Lru::default();
        lru.add(p(3), LruList::InactiveAnon);
        lru.add(p(1), LruList::InactiveAnon);
        lru.add(p(1), LruList::ActiveFile); // already on a list: ignored
        assert_eq!(
            lru.pages(LruList::InactiveAnon).collect::<Vec<_>>(),
            [p(3), p(1)]
        );
        assert_eq!(lru.isolate_oldest(LruList::InactiveAnon), Some(p(3)));
        assert_eq!(
            lru.place(p(3)),
            Some(LruPlace::Isolated {
                home: LruList::InactiveAnon
            })
        );
        lru.putback(p(3), LruList::ActiveAnon);
        assert_eq!(lru.place(p(3)), Some(LruPlace::On(LruList::ActiveAnon)));
        // An isolated page freed meanwhile is not put back.
        assert_eq!(lru.isolate_oldest(LruList::InactiveAnon), Some(p(1)));
        lru.remove(p(1));
        lru.putback(p(1), LruList::InactiveAnon);
        assert_eq!(lru.place(p(1)), None);
        assert!(lru.consistent());
    }

    #[test]
    fn replace_keeps_position_and_flag() {
        let mut lru = Lru::default();
        lru.add(p(1), LruList::InactiveFile);
        lru.add(p(2), LruList::InactiveFile);
        lru.set_referenced(p(1));
        lru.replace(p(1), p(9));
        assert_eq!(
            lru.pages(LruList::InactiveFile).collect::<Vec<_>>(),
            [p(9), p(2)]
        );
        assert!(lru.test_clear_referenced(p(9)));
        assert!(!lru.test_clear_referenced(p(9)));
        assert_eq!(lru.isolate_oldest(LruList::InactiveFile), Some(p(9)));
        lru.putback(p(9), LruList::ActiveFile);
        assert_eq!(lru.len(LruList::ActiveFile), 1);
        assert!(lru.consistent());
    }

    /// Every change of a place is logged, a flag alone is not; the first
    /// take and an overflow say "any page".
    #[test]
    fn the_change_log_names_every_page_whose_place_changed() {
        let mut lru = Lru::default();
        assert_eq!(lru.take_changed(), None);
        lru.add(p(1), LruList::InactiveAnon);
        lru.add(p(2), LruList::InactiveFile);
        lru.set_referenced(p(2));
        assert_eq!(lru.isolate_oldest(LruList::InactiveAnon), Some(p(1)));
        lru.putback(p(1), LruList::ActiveAnon);
        lru.replace(p(2), p(3));
        lru.remove(p(1));
        let mut changed = lru.take_changed().expect("logged since the first take");
        changed.sort();
        changed.dedup();
        assert_eq!(changed, [p(1), p(2), p(3)]);
        assert_eq!(lru.take_changed(), Some(Vec::new()));
        for n in 0..=CHANGED_LOG_LIMIT as u64 {
            lru.add(p(100 + n), LruList::InactiveAnon);
        }
        assert_eq!(lru.take_changed(), None);
    }

    /// The check as it was written before it merged instead of looking
    /// up: the reference the merge must agree with.
    fn consistent_by_lookups(lru: &Lru) -> bool {
        let listed: usize = lru.lists.iter().map(BTreeMap::len).sum();
        let on = lru
            .place
            .values()
            .filter(|(p, _)| matches!(p, LruPlace::On(_)))
            .count();
        listed == on
            && LruList::ALL.iter().all(|&l| {
                lru.lists[l.index()]
                    .iter()
                    .all(|(seq, pfn)| lru.place.get(pfn) == Some(&(LruPlace::On(l), *seq)))
            })
            && lru.referenced.iter().all(|p| lru.place.contains_key(p))
    }

    /// Broken bookkeeping of each kind the check exists for (planted
    /// behind the methods' back), on a few healthy states: the merged
    /// check says what the lookups say, and finds every one.
    #[test]
    fn the_merged_consistency_check_finds_each_broken_bookkeeping() {
        let healthy = || {
            let mut lru = Lru::default();
            for n in [5, 1, 9, 3] {
                lru.add(p(n), LruList::InactiveAnon);
            }
            lru.add(p(7), LruList::ActiveFile);
            lru.set_referenced(p(9));
            assert_eq!(lru.isolate_oldest(LruList::InactiveAnon), Some(p(5)));
            lru
        };
        type Bug = fn(&mut Lru);
        let bugs: [(&str, Bug); 7] = [
            ("a page on two lists", |l| {
                l.lists[LruList::ActiveAnon.index()].insert(100, p(1));
            }),
            ("an entry whose page has no place", |l| {
                l.place.remove(&p(3));
            }),
            ("a place whose entry is gone", |l| {
                let (_, seq) = l.place[&p(3)];
                l.lists[LruList::InactiveAnon.index()].remove(&seq);
            }),
            ("a place naming another list", |l| {
                let (_, seq) = l.place[&p(7)];
                l.place
                    .insert(p(7), (LruPlace::On(LruList::InactiveFile), seq));
            }),
            ("a place naming another position", |l| {
                l.place.get_mut(&p(1)).expect("on a list").1 += 1000;
            }),
            ("an entry for an isolated page", |l| {
                l.lists[LruList::InactiveAnon.index()].insert(200, p(5));
            }),
            ("a referenced page known nowhere", |l| {
                l.referenced.insert(p(42));
            }),
        ];
        let lru = healthy();
        assert!(lru.check_consistent() && consistent_by_lookups(&lru));
        for (what, bug) in bugs {
            let mut lru = healthy();
            bug(&mut lru);
            assert!(!consistent_by_lookups(&lru), "{what}: not a bug");
            assert!(!lru.check_consistent(), "{what}: not found");
        }
    }

    /// A deterministic generator for the random runs below.
    struct Rng(u64);

    impl Rng {
        fn below(&mut self, n: u64) -> u64 {
            self.0 = self
                .0
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            (self.0 >> 33) % n
        }
    }

    /// One random operation on a few pages; with `bugs`, sometimes broken
    /// bookkeeping instead (behind the methods' back, but logged as a
    /// broken method would log what it changes).
    fn random_step(lru: &mut Lru, rng: &mut Rng, bugs: bool) {
        let pfn = p(rng.below(24));
        let list = LruList::ALL[rng.below(5) as usize];
        match rng.below(if bugs { 14 } else { 9 }) {
            0 | 1 => lru.add(pfn, list),
            2 => lru.remove(pfn),
            3 => {
                lru.isolate_oldest(list);
            }
            4 => lru.putback(pfn, list),
            5 => {
                // Migration is to a fresh frame (one with a place: a
                // broken caller).
                let dst = p(rng.below(24));
                if bugs || lru.place(dst).is_none() {
                    lru.replace(pfn, dst);
                }
            }
            6 => lru.set_referenced(pfn),
            7 => {
                lru.test_clear_referenced(pfn);
            }
            8 => {
                let isolated: Vec<Pfn> = lru
                    .all()
                    .filter(|(_, place)| matches!(place, LruPlace::Isolated { .. }))
                    .map(|(pfn, _)| pfn)
                    .collect();
                if let Some(&pfn) = isolated.first() {
                    lru.putback(pfn, list);
                }
            }
            9 => {
                // An entry added or overwritten (a page on two lists, or
                // one entry naming another page).
                let seq = rng.below(lru.next + 1);
                if let Some(old) = lru.lists[list.index()].insert(seq, pfn) {
                    lru.note(old);
                }
                lru.note(pfn);
            }
            10 => {
                // An entry lost.
                let seq = rng.below(lru.next + 1);
                if let Some(old) = lru.lists[list.index()].remove(&seq) {
                    lru.note(old);
                }
            }
            11 => {
                // A place lost.
                lru.place.remove(&pfn);
                lru.note(pfn);
            }
            12 => {
                // A place naming another list, position or page's
                // place, or isolation.
                let other = lru.place.get(&p(rng.below(24))).copied();
                if let Some(entry) = lru.place.get_mut(&pfn) {
                    *entry = match rng.below(4) {
                        0 => (LruPlace::On(list), entry.1),
                        1 => (entry.0, entry.1 + 1),
                        2 => other.unwrap_or(*entry),
                        _ => (LruPlace::Isolated { home: list }, entry.1),
                    };
                }
                lru.note(pfn);
            }
            _ => {
                // A flag on a page known nowhere (or on a known one).
                lru.referenced.insert(pfn);
                lru.note(pfn);
            }
        }
    }

    /// Random operations, healthy and broken, checked after every step or
    /// after a few: the incremental verdict is the full one, both ways.
    #[test]
    fn the_incremental_consistency_check_gives_the_full_verdict() {
        let mut verdicts = [0usize; 2];
        for seed in 0..1000 {
            let mut rng = Rng(seed);
            let mut lru = Lru::default();
            // Healthy runs, and runs broken every 7th, 3rd, 2nd step.
            let every = [0, 7, 3, 2][seed as usize % 4];
            for step in 0..400 {
                random_step(&mut lru, &mut rng, every != 0 && step % every == 0);
                if rng.below(3) == 0 {
                    continue;
                }
                let full = lru.check_consistent();
                assert_eq!(
                    lru.consistent_incremental(),
                    full,
                    "seed {seed}, step {step}: {lru:#?}"
                );
                assert_eq!(consistent_by_lookups(&lru), full);
                verdicts[usize::from(full)] += 1;
            }
        }
        // Both verdicts were seen often: the comparison is not vacuous.
        assert!(verdicts.iter().all(|&n| n > 5000), "{verdicts:?}");
    }

    /// Healthy operations only: the incremental check always says
    /// consistent, also across the log's overflow.
    #[test]
    fn healthy_operations_stay_consistent_across_an_overflowing_log() {
        let mut rng = Rng(7);
        let mut lru = Lru::default();
        assert!(lru.consistent_incremental());
        let mut steps = 0;
        while lru.check.log.is_some() {
            random_step(&mut lru, &mut rng, false);
            steps += 1;
            assert!(steps < 8 * CHANGED_LOG_LIMIT, "the log never overflows");
        }
        assert!(lru.consistent_incremental());
        lru.plant_second_entry(p(1000), LruList::ActiveAnon);
        assert!(!lru.consistent_incremental());
        assert!(!lru.check_consistent());
    }

    /// Migration onto a list entry that another page's place names: that
    /// page is logged too (it lost its entry), so the check sees it.
    #[test]
    fn an_overwritten_entry_logs_the_page_it_named() {
        let mut lru = Lru::default();
        lru.add(p(1), LruList::InactiveAnon);
        lru.add(p(2), LruList::InactiveAnon);
        assert!(lru.consistent_incremental());
        // p(2) claims p(1)'s place (broken, logged).
        lru.place.insert(p(2), lru.place[&p(1)]);
        lru.note(p(2));
        assert!(!lru.consistent_incremental());
        // Migrating p(2) overwrites p(1)'s entry: p(1) is now wrong.
        lru.replace(p(2), p(3));
        assert!(!lru.check_consistent());
        assert!(!lru.consistent_incremental());
    }
}
