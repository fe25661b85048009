//! Tag checking: which granules an access touches, and what a mismatch does.
//!
//! Owns the decision, not its consequences: [`check_access`] returns a
//! [`CheckOutcome`] value; raising `SIGSEGV`, setting the pending async fault
//! and performing (or not) the access are the kernel's.
//!
//! Rules, with sources:
//! - An access of `size` bytes at `ptr` touches every 16-byte granule from
//!   the one holding `ptr` to the one holding `ptr + size - 1`, across
//!   granule and page boundaries; each touched granule of tagged memory is
//!   compared with the pointer's logical tag (Arm ARM `AArch64.CheckTag`,
//!   per granule; QEMU `mte_probe_int()`).
//! - Memory that is not Normal-Tagged is never checked (Arm ARM
//!   `AArch64.AccessIsTagChecked`: the access must be to Tagged memory); an
//!   access spanning a tagged and an untagged page checks only the tagged
//!   granules (QEMU `mte_probe_int()`, "two pages that do not both have
//!   tagging enabled").
//! - Nothing is checked while PSTATE.TCO is 1, and with FEAT_MTE_STORE_ONLY
//!   (SCTLR_EL1.TCSO0) loads are not checked (`AArch64.AccessIsTagChecked`).
//! - No match-all tag: Linux leaves TCR_EL1.TCMA0 clear, so a tag-0 pointer
//!   is checked like any other.
//! - Check modes (SCTLR_EL1.TCF0): `None` ignores mismatches, `Sync` faults
//!   before the access, `Async` lets it complete and accumulates a fault in
//!   TFSRE0_EL1, `Asymm` (FEAT_MTE3) is sync for loads and async for stores.
//! - Sync fault address: the pointer itself when its FIRST granule fails,
//!   else the base of the first failing granule with the pointer's top byte
//!   (QEMU `mte_probe_int()`: `*fault = tag_first + n * TAG_GRANULE` for
//!   `n > 0`; hardware may be less precise).
//!
//! - Priority: translation and permission faults on any touched page come
//!   before the tag check (QEMU `allocation_tag_mem_probe()`: "Any page
//!   access exception has priority over tag check exception"), so the kernel
//!   resolves the pages first and checks tags after.
//!
//! The fast path allocates nothing: the caller supplies allocation tags
//! through a closure, which is called in address order, only while the
//! access is checked at all, and not past the first mismatch.

use core::fmt;

use thiserror::Error;

use crate::granule::{GRANULE_SIZE, LOG2_TAG_GRANULE, PageGeometry};
use crate::ptr::{TaggedPtr, VirtAddr};
use crate::tag::Tag;

/// The tag check fault mode of a process (SCTLR_EL1.TCF0).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub enum CheckMode {
    /// TCF0 = 0b00: mismatches are ignored.
    #[default]
    None,
    /// TCF0 = 0b01: a mismatch faults before the access.
    Sync,
    /// TCF0 = 0b10: the access completes, a fault is recorded for later.
    Async,
    /// TCF0 = 0b11 (FEAT_MTE3): sync for loads, async for stores.
    Asymm,
}

impl fmt::Display for CheckMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            CheckMode::None => "none",
            CheckMode::Sync => "sync",
            CheckMode::Async => "async",
            CheckMode::Asymm => "asymm",
        })
    }
}

/// Whether an access reads or writes memory.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum AccessKind {
    Load,
    Store,
}

/// When a mismatch in one access is reported.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum CheckTiming {
    /// Not checked at all: the tags are not even read.
    Unchecked,
    /// A mismatch is a synchronous fault; the access does not happen.
    Sync,
    /// A mismatch lets the access complete and leaves a fault pending.
    Async,
}

/// A thread's tag checking configuration.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct CheckSettings {
    /// SCTLR_EL1.TCF0.
    pub mode: CheckMode,
    /// SCTLR_EL1.TCSO0 (FEAT_MTE_STORE_ONLY): check stores only.
    pub store_only: bool,
    /// PSTATE.TCO (Tag Check Override): while set, nothing is checked.
    pub tco: bool,
}

impl CheckSettings {
    /// A mode with store-only and TCO off.
    pub const fn new(mode: CheckMode) -> CheckSettings {
        CheckSettings {
            mode,
            store_only: false,
            tco: false,
        }
    }

    /// How a user access of `kind` is checked (`AArch64.AccessIsTagChecked`
    /// then `AArch64.TagCheckFault`).
    pub const fn timing(self, kind: AccessKind) -> CheckTiming {
        if self.tco || (self.store_only && matches!(kind, AccessKind::Load)) {
            return CheckTiming::Unchecked;
        }
        match (self.mode, kind) {
            (CheckMode::None, _) => CheckTiming::Unchecked,
            (CheckMode::Sync, _) | (CheckMode::Asymm, AccessKind::Load) => CheckTiming::Sync,
            (CheckMode::Async, _) | (CheckMode::Asymm, AccessKind::Store) => CheckTiming::Async,
        }
    }

    /// Whether the kernel checks its own access of `kind` to this thread's
    /// user memory (`copy_from_user` is a Load, `copy_to_user` a Store).
    ///
    /// Linux (Documentation/arch/arm64/memory-tagging-extension.rst): kernel
    /// accesses to user memory are checked only when the thread's mode is
    /// synchronous for them, and "are always performed with an effective
    /// PSTATE.TCO value of zero, regardless of the user configuration"; they
    /// never raise a signal. The unprivileged LDTR/STTR the kernel uses are
    /// checked as if at EL0, so asymm checks only the kernel's reads and
    /// store-only (TCSO0) none of them.
    pub const fn uaccess_checked(self, kind: AccessKind) -> bool {
        let kernel_view = CheckSettings { tco: false, ..self };
        matches!(kernel_view.timing(kind), CheckTiming::Sync)
    }
}

/// The decision for one access.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CheckOutcome {
    /// No check applies, or every checked granule matched.
    Pass,
    /// A synchronous tag check fault at `addr`; the access must not happen.
    /// Linux: `SIGSEGV`, `SEGV_MTESERR`.
    SyncFault { addr: TaggedPtr },
    /// A mismatch under async checking: the access completes and a fault is
    /// pending. Linux: `SEGV_MTEAERR` at the next kernel entry.
    AsyncFault,
}

/// An access that cannot be made at all.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
pub enum AccessError {
    #[error("an access at {ptr} of zero bytes")]
    ZeroSize { ptr: TaggedPtr },
    #[error("an access at {ptr} of {size:#x} bytes runs past the 56-bit address space")]
    BeyondAddressSpace { ptr: TaggedPtr, size: u64 },
}

/// The bytes `[ptr, ptr + size)` of one access, `size >= 1`, all within the
/// 56-bit address space.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct AccessSpan {
    ptr: TaggedPtr,
    size: u64,
}

impl AccessSpan {
    pub fn new(ptr: TaggedPtr, size: u64) -> Result<AccessSpan, AccessError> {
        if size == 0 {
            return Err(AccessError::ZeroSize { ptr });
        }
        ptr.addr()
            .checked_add(size - 1)
            .map_err(|_| AccessError::BeyondAddressSpace { ptr, size })?;
        Ok(AccessSpan { ptr, size })
    }

    pub const fn ptr(self) -> TaggedPtr {
        self.ptr
    }

    pub const fn size(self) -> u64 {
        self.size
    }

    /// The address of the last byte accessed.
    pub fn last_byte(self) -> VirtAddr {
        self.ptr
            .addr()
            .checked_add(self.size - 1)
            .expect("BUG: AccessSpan admitted an access past the address space")
    }

    /// The base of the first granule touched.
    pub fn first_granule(self) -> VirtAddr {
        self.ptr.addr().granule_base()
    }

    /// The base of the last granule touched.
    pub fn last_granule(self) -> VirtAddr {
        self.last_byte().granule_base()
    }

    /// The number of granules touched.
    pub fn granule_count(self) -> u64 {
        let span = self
            .last_granule()
            .offset_from(self.first_granule())
            .expect("BUG: last granule below first");
        (span >> LOG2_TAG_GRANULE) + 1
    }

    /// The base of each granule touched, lowest first.
    pub fn granules(self) -> impl Iterator<Item = VirtAddr> + use<> {
        let first = self.first_granule().as_u64();
        (0..self.granule_count()).map(move |i| {
            VirtAddr::new(first + i * GRANULE_SIZE).expect("BUG: granule past the address space")
        })
    }

    /// The number of pages touched.
    pub fn page_count(self, geometry: PageGeometry) -> u64 {
        geometry.pages_spanned(self.ptr.addr(), self.size)
    }

    /// The base of each page touched, lowest first.
    pub fn pages(self, geometry: PageGeometry) -> impl Iterator<Item = VirtAddr> + use<> {
        let first = geometry.page_base(self.ptr.addr()).as_u64();
        let page = geometry.page_size();
        (0..self.page_count(geometry)).map(move |i| {
            VirtAddr::new(first + i * page).expect("BUG: page past the address space")
        })
    }

    /// The first touched granule of tagged memory whose allocation tag is not
    /// the pointer's logical tag: its index among the touched granules and
    /// its base. `tag_of` gives a granule's allocation tag, `None` for
    /// memory that is not Normal-Tagged.
    pub fn first_mismatch(
        self,
        mut tag_of: impl FnMut(VirtAddr) -> Option<Tag>,
    ) -> Option<(u64, VirtAddr)> {
        let logical = self.ptr.tag();
        self.granules()
            .enumerate()
            .find(|&(_, granule)| tag_of(granule).is_some_and(|tag| tag != logical))
            .map(|(i, granule)| (i as u64, granule))
    }

    /// The address a synchronous fault reports for a mismatch in the granule
    /// at `index` whose base is `granule`.
    fn fault_addr(self, index: u64, granule: VirtAddr) -> TaggedPtr {
        if index == 0 {
            self.ptr
        } else {
            self.ptr.with_addr(granule)
        }
    }

    /// The check decision for this access (see [`check_access`]).
    pub fn check(
        self,
        kind: AccessKind,
        settings: CheckSettings,
        tag_of: impl FnMut(VirtAddr) -> Option<Tag>,
    ) -> CheckOutcome {
        let timing = settings.timing(kind);
        if timing == CheckTiming::Unchecked {
            return CheckOutcome::Pass;
        }
        match (self.first_mismatch(tag_of), timing) {
            (None, _) => CheckOutcome::Pass,
            (Some((index, granule)), CheckTiming::Sync) => CheckOutcome::SyncFault {
                addr: self.fault_addr(index, granule),
            },
            (Some(_), CheckTiming::Async) => CheckOutcome::AsyncFault,
            (Some(_), CheckTiming::Unchecked) => unreachable!("BUG: unchecked access was checked"),
        }
    }
}

/// The tag check decision for a user access of `size` bytes at `ptr`.
///
/// `tag_of(granule_base)` returns the allocation tag of a touched granule,
/// `None` if its memory is not Normal-Tagged. It is called in address order,
/// never when the access is unchecked (TCO, mode none, store-only load), and
/// not past the first mismatch.
pub fn check_access(
    ptr: TaggedPtr,
    size: u64,
    kind: AccessKind,
    settings: CheckSettings,
    tag_of: impl FnMut(VirtAddr) -> Option<Tag>,
) -> Result<CheckOutcome, AccessError> {
    Ok(AccessSpan::new(ptr, size)?.check(kind, settings, tag_of))
}

/// How far a kernel copy of user memory gets.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum UaccessOutcome {
    /// Every byte was copied.
    Complete,
    /// The copy stops at the first mismatching granule after `done` bytes
    /// (0: nothing copied, the call fails with `EFAULT`).
    Stopped { done: u64 },
}

/// The check of the kernel's own copy of `len` bytes of user memory at
/// `ptr` (see [`CheckSettings::uaccess_checked`]). A zero-length copy is
/// complete. Linux copies in chunks and may stop a little before the bad
/// granule; this stops exactly at it.
pub fn check_uaccess(
    ptr: TaggedPtr,
    len: u64,
    kind: AccessKind,
    settings: CheckSettings,
    tag_of: impl FnMut(VirtAddr) -> Option<Tag>,
) -> Result<UaccessOutcome, AccessError> {
    if len == 0 {
        return Ok(UaccessOutcome::Complete);
    }
    let span = AccessSpan::new(ptr, len)?;
    if !settings.uaccess_checked(kind) {
        return Ok(UaccessOutcome::Complete);
    }
    Ok(match span.first_mismatch(tag_of) {
        None => UaccessOutcome::Complete,
        Some((0, _)) => UaccessOutcome::Stopped { done: 0 },
        Some((_, granule)) => UaccessOutcome::Stopped {
            done: granule
                .offset_from(ptr.addr())
                .expect("BUG: later granule below the pointer"),
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::{t, va};
    use proptest::prelude::*;

    fn p(raw: u64) -> TaggedPtr {
        TaggedPtr::from_raw(raw)
    }

    fn g4k() -> PageGeometry {
        PageGeometry::from_page_size(4096).unwrap()
    }

    const SYNC: CheckSettings = CheckSettings::new(CheckMode::Sync);

    /// Memory where every granule has tag `tag`, except `bad`, which has
    /// `bad_tag`, and everything at or above `untagged_from`, which is not
    /// tagged.
    fn memory(
        tag: u8,
        bad: &[u64],
        bad_tag: u8,
        untagged_from: u64,
    ) -> impl FnMut(VirtAddr) -> Option<Tag> {
        let bad = bad.to_vec();
        move |g: VirtAddr| {
            if g.as_u64() >= untagged_from {
                None
            } else if bad.contains(&g.as_u64()) {
                Some(t(bad_tag))
            } else {
                Some(t(tag))
            }
        }
    }

    #[test]
    fn a_16_byte_load_at_granule_offset_8_touches_two_granules() {
        let s = AccessSpan::new(p(0x0300_0000_0000_1008), 16).unwrap();
        assert_eq!(s.granule_count(), 2);
        assert_eq!(
            s.granules().collect::<Vec<_>>(),
            vec![va(0x1000), va(0x1010)]
        );
        assert_eq!(s.last_byte(), va(0x1017));
        // Aligned, it touches one.
        let s = AccessSpan::new(p(0x1010), 16).unwrap();
        assert_eq!(s.granules().collect::<Vec<_>>(), vec![va(0x1010)]);
        // A byte touches one; 17 bytes from a boundary touch two.
        assert_eq!(AccessSpan::new(p(0x101f), 1).unwrap().granule_count(), 1);
        assert_eq!(AccessSpan::new(p(0x1000), 17).unwrap().granule_count(), 2);
    }

    #[test]
    fn an_8_byte_load_crossing_a_page() {
        let s = AccessSpan::new(p(0x0500_0000_0000_1ffc), 8).unwrap();
        assert_eq!(
            s.granules().collect::<Vec<_>>(),
            vec![va(0x1ff0), va(0x2000)]
        );
        assert_eq!(s.page_count(g4k()), 2);
        assert_eq!(
            s.pages(g4k()).collect::<Vec<_>>(),
            vec![va(0x1000), va(0x2000)]
        );
        let within = AccessSpan::new(p(0x1ff8), 8).unwrap();
        assert_eq!(within.page_count(g4k()), 1);
    }

    #[test]
    fn bad_spans_are_errors() {
        assert_eq!(
            AccessSpan::new(p(0x1000), 0),
            Err(AccessError::ZeroSize { ptr: p(0x1000) })
        );
        let last = VirtAddr::MAX.with_tag(t(1));
        assert!(AccessSpan::new(last, 1).is_ok());
        assert_eq!(
            AccessSpan::new(last, 2),
            Err(AccessError::BeyondAddressSpace { ptr: last, size: 2 })
        );
        assert!(check_access(p(0x1000), 0, AccessKind::Load, SYNC, |_| None).is_err());
    }

    #[test]
    fn sync_fault_address_first_granule_is_the_pointer() {
        // Pointer tag 3 at 0x1008, granule 0x1000 has tag 7: the fault address
        // is the pointer itself, unaligned and tagged.
        let ptr = p(0x0300_0000_0000_1008);
        let out = check_access(ptr, 8, AccessKind::Load, SYNC, memory(7, &[], 0, u64::MAX));
        assert_eq!(out, Ok(CheckOutcome::SyncFault { addr: ptr }));
    }

    #[test]
    fn sync_fault_address_later_granule_is_its_base_with_the_tag() {
        // Granules 0x1000..0x1040 tag 3, 0x1040 tag 0 (the mteprobe
        // "crossing" case: an 8-byte load at q+60).
        let ptr = p(0x0300_0000_0000_103c);
        let out = check_access(
            ptr,
            8,
            AccessKind::Load,
            SYNC,
            memory(3, &[0x1040], 0, u64::MAX),
        );
        assert_eq!(
            out,
            Ok(CheckOutcome::SyncFault {
                addr: p(0x0300_0000_0000_1040)
            })
        );
        // Bits 63:60 of the pointer are kept too, as QEMU reports them.
        let ptr = p(0xa300_0000_0000_1008);
        let out = check_access(
            ptr,
            64,
            AccessKind::Store,
            SYNC,
            memory(3, &[0x1020, 0x1030], 9, u64::MAX),
        );
        assert_eq!(
            out,
            Ok(CheckOutcome::SyncFault {
                addr: p(0xa300_0000_0000_1020)
            })
        );
    }

    #[test]
    fn untagged_memory_is_never_checked() {
        // Everything untagged: a tag-9 pointer passes in every mode.
        for mode in [CheckMode::Sync, CheckMode::Async, CheckMode::Asymm] {
            for kind in [AccessKind::Load, AccessKind::Store] {
                let out = check_access(
                    p(0x0900_0000_0000_1000),
                    8,
                    kind,
                    CheckSettings::new(mode),
                    |_| None,
                );
                assert_eq!(out, Ok(CheckOutcome::Pass));
            }
        }
        // Crossing from a tagged page (tag 2, matching) into an untagged one.
        let out = check_access(
            p(0x0200_0000_0000_1ff8),
            16,
            AccessKind::Load,
            SYNC,
            memory(2, &[], 0, 0x2000),
        );
        assert_eq!(out, Ok(CheckOutcome::Pass));
        // Crossing from an untagged page into a mismatching tagged one: the
        // fault is at the second granule, not the pointer.
        let tagged_above = |g: VirtAddr| (g.as_u64() >= 0x2000).then_some(t(6));
        let out = check_access(
            p(0x0200_0000_0000_1ff8),
            16,
            AccessKind::Load,
            SYNC,
            tagged_above,
        );
        assert_eq!(
            out,
            Ok(CheckOutcome::SyncFault {
                addr: p(0x0200_0000_0000_2000)
            })
        );
    }

    #[test]
    fn tag_zero_pointers_are_checked() {
        // TCMA0 = 0: no match-all tag.
        let out = check_access(p(0x1000), 8, AccessKind::Load, SYNC, |_| Some(t(4)));
        assert_eq!(out, Ok(CheckOutcome::SyncFault { addr: p(0x1000) }));
    }

    #[test]
    fn mode_matrix() {
        use AccessKind::{Load, Store};
        use CheckOutcome::{AsyncFault, Pass, SyncFault};
        let ptr = p(0x0300_0000_0000_1000);
        let sync = SyncFault { addr: ptr };
        // (mode, store_only, tco, load outcome, store outcome) on a mismatch.
        let rows = [
            (CheckMode::None, false, false, Pass, Pass),
            (CheckMode::Sync, false, false, sync, sync),
            (CheckMode::Async, false, false, AsyncFault, AsyncFault),
            (CheckMode::Asymm, false, false, sync, AsyncFault),
            // FEAT_MTE_STORE_ONLY: loads unchecked.
            (CheckMode::None, true, false, Pass, Pass),
            (CheckMode::Sync, true, false, Pass, sync),
            (CheckMode::Async, true, false, Pass, AsyncFault),
            (CheckMode::Asymm, true, false, Pass, AsyncFault),
            // PSTATE.TCO: nothing checked.
            (CheckMode::Sync, false, true, Pass, Pass),
            (CheckMode::Async, false, true, Pass, Pass),
            (CheckMode::Asymm, false, true, Pass, Pass),
            (CheckMode::Sync, true, true, Pass, Pass),
        ];
        for (mode, store_only, tco, load, store) in rows {
            let settings = CheckSettings {
                mode,
                store_only,
                tco,
            };
            let got_load = check_access(ptr, 8, Load, settings, |_| Some(t(5))).unwrap();
            let got_store = check_access(ptr, 8, Store, settings, |_| Some(t(5))).unwrap();
            assert_eq!((got_load, got_store), (load, store), "{settings:?}");
            // A matching tag passes whatever the settings.
            assert_eq!(
                check_access(ptr, 8, Load, settings, |_| Some(t(3))),
                Ok(Pass)
            );
            assert_eq!(
                check_access(ptr, 8, Store, settings, |_| Some(t(3))),
                Ok(Pass)
            );
        }
    }

    #[test]
    fn unchecked_accesses_do_not_read_tags() {
        let settings = CheckSettings {
            mode: CheckMode::Sync,
            store_only: false,
            tco: true,
        };
        let out = check_access(p(0x1000), 8, AccessKind::Load, settings, |_| {
            panic!("tags read for an unchecked access")
        });
        assert_eq!(out, Ok(CheckOutcome::Pass));
    }

    #[test]
    fn checking_stops_at_the_first_mismatch() {
        let mut seen = Vec::new();
        let out = check_access(p(0x0100_0000_0000_1000), 64, AccessKind::Store, SYNC, |g| {
            seen.push(g.as_u64());
            Some(if g.as_u64() == 0x1010 { t(2) } else { t(1) })
        });
        assert_eq!(
            out,
            Ok(CheckOutcome::SyncFault {
                addr: p(0x0100_0000_0000_1010)
            })
        );
        assert_eq!(seen, vec![0x1000, 0x1010]);
    }

    #[test]
    fn uaccess_policy_matrix() {
        use AccessKind::{Load, Store};
        // (mode, store_only, kernel read checked, kernel write checked)
        let rows = [
            (CheckMode::None, false, false, false),
            (CheckMode::Sync, false, true, true),
            (CheckMode::Async, false, false, false),
            (CheckMode::Asymm, false, true, false),
            (CheckMode::Sync, true, false, true),
            (CheckMode::Asymm, true, false, false),
        ];
        for (mode, store_only, read, write) in rows {
            for tco in [false, true] {
                // The user's TCO does not apply to the kernel's accesses.
                let s = CheckSettings {
                    mode,
                    store_only,
                    tco,
                };
                assert_eq!(
                    (s.uaccess_checked(Load), s.uaccess_checked(Store)),
                    (read, write),
                    "{s:?}"
                );
            }
        }
    }

    #[test]
    fn uaccess_stops_at_the_bad_granule() {
        // write(fd, ptr, 0x100) with ptr tag 4 at 0x1008; granule 0x1040 has
        // tag 9: 0x38 bytes (0x1008..0x1040) are copied.
        let ptr = p(0x0400_0000_0000_1008);
        let out = check_uaccess(
            ptr,
            0x100,
            AccessKind::Load,
            SYNC,
            memory(4, &[0x1040], 9, u64::MAX),
        );
        assert_eq!(out, Ok(UaccessOutcome::Stopped { done: 0x38 }));
        // A bad first granule: nothing copied.
        let out = check_uaccess(
            ptr,
            0x100,
            AccessKind::Load,
            SYNC,
            memory(4, &[0x1000], 9, u64::MAX),
        );
        assert_eq!(out, Ok(UaccessOutcome::Stopped { done: 0 }));
        // Async: not checked, completes.
        let async_mode = CheckSettings::new(CheckMode::Async);
        let out = check_uaccess(
            ptr,
            0x100,
            AccessKind::Load,
            async_mode,
            memory(4, &[0x1000], 9, u64::MAX),
        );
        assert_eq!(out, Ok(UaccessOutcome::Complete));
        // Matching, untagged and empty copies complete.
        assert_eq!(
            check_uaccess(
                ptr,
                0x100,
                AccessKind::Store,
                SYNC,
                memory(4, &[], 0, u64::MAX)
            ),
            Ok(UaccessOutcome::Complete)
        );
        assert_eq!(
            check_uaccess(ptr, 0x100, AccessKind::Store, SYNC, |_| None),
            Ok(UaccessOutcome::Complete)
        );
        assert_eq!(
            check_uaccess(ptr, 0, AccessKind::Store, SYNC, |_| unreachable!()),
            Ok(UaccessOutcome::Complete)
        );
    }

    #[test]
    fn mode_names() {
        assert_eq!(CheckMode::Asymm.to_string(), "asymm");
        assert_eq!(CheckMode::default(), CheckMode::None);
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]

        /// The granules touched are exactly those holding some byte of the
        /// access.
        #[test]
        fn granules_cover_exactly_the_bytes(addr in 0u64..0x10_000, size in 1u64..200) {
            let s = AccessSpan::new(p(addr), size).unwrap();
            let granules: Vec<u64> = s.granules().map(VirtAddr::as_u64).collect();
            let mut expect: Vec<u64> = (addr..addr + size).map(|b| b & !15).collect();
            expect.dedup();
            prop_assert_eq!(granules, expect);
        }

        /// A sync fault reports the first mismatching granule; the pointer
        /// itself when that is the first.
        #[test]
        fn sync_fault_is_at_first_bad_granule(addr in 0x1000u64..0x2000, size in 1u64..100,
                                             bad in proptest::collection::vec(0u64..8, 0..3)) {
            let s = AccessSpan::new(p(addr).with_tag(t(1)), size).unwrap();
            let granules: Vec<VirtAddr> = s.granules().collect();
            let bad_addrs: Vec<u64> = bad.iter().filter_map(|&i| granules.get(i as usize)).map(|g| g.as_u64()).collect();
            let out = s.check(AccessKind::Load, SYNC, memory(1, &bad_addrs, 2, u64::MAX));
            let first_bad = granules.iter().position(|g| bad_addrs.contains(&g.as_u64()));
            let expect = match first_bad {
                None => CheckOutcome::Pass,
                Some(0) => CheckOutcome::SyncFault { addr: s.ptr() },
                Some(i) => CheckOutcome::SyncFault { addr: s.ptr().with_addr(granules[i]) },
            };
            prop_assert_eq!(out, expect);
        }
    }
}
