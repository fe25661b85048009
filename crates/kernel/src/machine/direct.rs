//! The direct access API: loads and stores of the hot loops (scenario runs
//! through `Machine::run`, trace replay, the fuzzer) without an `Op`, a
//! task or a map lookup when the per-CPU TLB (`cpu_tlb`) holds the page.
//!
//! Contract: [`Kernel::load_direct`] and [`Kernel::store_direct`] give what
//! `Machine::run` of the same `load` / `store` gives, with the same effects
//! on the machine: the translation (a miss fills the per-address-space TLB
//! and sets the access flag exactly as the full path's walk does, so the
//! young/referenced state reclaim sees is the same), the tag check in every
//! mode (sync, async, asymm, store-only, TCO: [`mte::check_access`] decides
//! every case the one-granule shortcut does not), the fault it reports and
//! the counters it moves (`Kernel::check_verdict`), then the data access.
//! Everything the direct path does not handle (a page crossing, a
//! translation that faults or forbids the access, an unknown process)
//! takes the full kernel path, which runs the fault handler.
//!
//! The process's check settings and address space are remembered for the
//! last process served (`FastMemo`); every op of the full path clears the
//! memo first (`Kernel::op`), since only those change a process.
//!
//! Accesses made here run on CPU 0, the CPU `Machine::run` runs its ops on
//! ([`DIRECT_CPU`]); the per-CPU TLBs of other CPUs stay empty until
//! something runs accesses on them, and flushes reach all of them.

use mte::packing::{Nibble, nibble_tag};
use mte::{AccessKind, CheckOutcome, CheckSettings, CheckTiming, GRANULE_SIZE, Tag, TaggedPtr};
use uapi::{AccessSize, Command, Machine, Op, Outcome, Pid};

use super::access::{permits, translate_leaf};
use super::cpu_tlb::{CpuTlbEntry, TagLoc};
use super::fault::Need;
use super::{Kernel, PAGE};
use crate::mm::MmId;
use crate::mm::layout::{PAGE_SHIFT, TASK_SIZE};

/// The CPU whose TLB the direct path uses.
pub(crate) const DIRECT_CPU: usize = 0;

/// The last process the direct path served: its address space and check
/// settings (see the module doc for when it is cleared).
#[derive(Clone, Copy, Debug)]
pub(crate) struct FastMemo {
    pid: Pid,
    mm: MmId,
    settings: CheckSettings,
}

/// The tag in the page's tag bytes `bytes` (`None`: the storage frame has
/// no buffer, all tags 0) of the granule holding byte `in_page`.
#[inline]
fn tag_in(bytes: Option<(&[u8], usize)>, in_page: u64) -> Tag {
    match bytes {
        None => Tag::ZERO,
        Some((bytes, first)) => {
            let granule = in_page / GRANULE_SIZE;
            let nibble = if granule % 2 == 1 {
                Nibble::High
            } else {
                Nibble::Low
            };
            nibble_tag(bytes[first + (granule / 2) as usize], nibble)
        }
    }
}

/// The `size` bytes at `offset` of `bytes`, little endian: one fixed-size
/// copy per size (a copy of variable length is a `memcpy` call and a
/// store-forwarding stall when the value is read back, most of an access).
#[inline]
fn read_le(bytes: &[u8], offset: usize, size: AccessSize) -> u128 {
    fn at<const N: usize>(bytes: &[u8], offset: usize) -> [u8; N] {
        bytes[offset..offset + N]
            .try_into()
            .expect("BUG: a slice of N bytes")
    }
    match size {
        AccessSize::B1 => u128::from(bytes[offset]),
        AccessSize::B2 => u128::from(u16::from_le_bytes(at(bytes, offset))),
        AccessSize::B4 => u128::from(u32::from_le_bytes(at(bytes, offset))),
        AccessSize::B8 => u128::from(u64::from_le_bytes(at(bytes, offset))),
        AccessSize::B16 => u128::from_le_bytes(at(bytes, offset)),
    }
}

/// Writes the low `size` bytes of `value` at `offset` of `bytes`.
#[inline]
fn write_le(bytes: &mut [u8], offset: usize, size: AccessSize, value: u128) {
    let le = value.to_le_bytes();
    match size {
        AccessSize::B1 => bytes[offset] = le[0],
        AccessSize::B2 => bytes[offset..offset + 2].copy_from_slice(&le[..2]),
        AccessSize::B4 => bytes[offset..offset + 4].copy_from_slice(&le[..4]),
        AccessSize::B8 => bytes[offset..offset + 8].copy_from_slice(&le[..8]),
        AccessSize::B16 => bytes[offset..offset + 16].copy_from_slice(&le),
    }
}

impl Kernel {
    /// A load of `size` bytes at `ptr` by `pid`: the direct path when the
    /// page is established, else the full path (see the module doc).
    /// Inlined, like [`Self::store_direct`], into the caller's loop.
    #[inline]
    pub fn load_direct(&mut self, pid: Pid, ptr: TaggedPtr, size: AccessSize) -> Outcome {
        match self.direct_access(pid, ptr, size, None) {
            Some(outcome) => outcome,
            None => self.full_access(pid, Command::Load { ptr, size }),
        }
    }

    /// A store of the low `size` bytes of `value` at `ptr` by `pid`.
    #[inline]
    pub fn store_direct(
        &mut self,
        pid: Pid,
        ptr: TaggedPtr,
        size: AccessSize,
        value: u128,
    ) -> Outcome {
        match self.direct_access(pid, ptr, size, Some(value)) {
            Some(outcome) => outcome,
            None => self.full_access(pid, Command::Store { ptr, size, value }),
        }
    }

    #[cold]
    #[inline(never)]
    fn full_access(&mut self, pid: Pid, command: Command) -> Outcome {
        self.run(&Op::Process { pid, command }).outcome
    }

    /// The direct path for a `load` or `store` command, `None` for any
    /// other command or when the full path must run.
    pub(crate) fn fast_access(&self, pid: Pid, command: &Command) -> Option<Outcome> {
        match command {
            Command::Load { ptr, size } => self.direct_access(pid, *ptr, *size, None),
            Command::Store { ptr, size, value } => {
                self.direct_access(pid, *ptr, *size, Some(*value))
            }
            _ => None,
        }
    }

    #[inline]
    fn direct_memo(&self, pid: Pid) -> Option<FastMemo> {
        match self.fast_memo.get() {
            Some(memo) if memo.pid == pid => Some(memo),
            _ => {
                let memo = {
                    let procs = self.procs.borrow();
                    let p = procs.get(&pid)?;
                    FastMemo {
                        pid,
                        mm: p.mm,
                        settings: p.check_settings(),
                    }
                };
                self.fast_memo.set(Some(memo));
                Some(memo)
            }
        }
    }

    /// A per-CPU TLB entry for page `vpn` of `mm` from the translation the
    /// full path would find (which fills the address space's TLB and sets
    /// the access flag as it does); `None` if nothing valid maps it.
    fn direct_entry(&self, mm: MmId, vpn: u64) -> Option<CpuTlbEntry> {
        let base = vpn << PAGE_SHIFT;
        if base >= TASK_SIZE {
            return None;
        }
        let t = {
            let mut mms = self.mms.borrow_mut();
            translate_leaf(mms.get_mut(&mm)?, base)?
        };
        let geometry = self.mem.geometry();
        let phys = self.mem.phys();
        let tags = geometry.tag_bytes_of(t.pfn).map(|first| {
            let frame = geometry.pfn_of(first);
            TagLoc {
                frame,
                offset: geometry.page().page_offset(first) as usize,
                slot: phys.contents.page_slot(frame),
            }
        });
        Some(CpuTlbEntry {
            mm,
            vpn,
            pfn: t.pfn,
            access: t.access,
            tagged: t.tagged,
            huge: t.huge,
            data: phys.contents.page_slot(t.pfn),
            tags,
        })
    }

    /// The direct path (see the module doc): `Some` with the outcome the
    /// full path would give, or `None` when the full path must run.
    /// Inlined into its callers so that the outcome is built where it is
    /// returned (a copy of it read back wider than it was written stalls
    /// store forwarding, which cost more than the rest of an access).
    #[inline(always)]
    pub(crate) fn direct_access(
        &self,
        pid: Pid,
        ptr: TaggedPtr,
        size: AccessSize,
        value: Option<u128>,
    ) -> Option<Outcome> {
        let len = size.bytes();
        let start = ptr.addr().as_u64();
        let vpn = start >> PAGE_SHIFT;
        if (start + len - 1) >> PAGE_SHIFT != vpn {
            return None;
        }
        let memo = self.direct_memo(pid)?;
        let (need, kind) = match value {
            None => (Need::Read, AccessKind::Load),
            Some(_) => (Need::Write, AccessKind::Store),
        };
        let mut tlbs = self.cpu_tlbs.borrow_mut();
        let cpu = tlbs.cpu(DIRECT_CPU);
        if cpu.lookup_mut(memo.mm, vpn).is_none() {
            let e = self.direct_entry(memo.mm, vpn)?;
            cpu.fill(e);
        }
        let entry = cpu
            .lookup_mut(memo.mm, vpn)
            .expect("BUG: an entry just filled is gone");
        if !permits(entry.access, need) {
            return None;
        }
        let mut phys = self.mem.phys_mut();
        let contents = &mut phys.contents;
        let in_page = start & (PAGE - 1);
        let settings = memo.settings;
        let outcome = if !entry.tagged || settings.timing(kind) == CheckTiming::Unchecked {
            CheckOutcome::Pass
        } else {
            let c = &*contents;
            // Where the page's tags are: the hint, else looked up again
            // (and the hint replaced).
            let bytes = match entry.tags.as_mut() {
                None => None,
                Some(loc) => match loc.slot.and_then(|s| c.slot_bytes(s)) {
                    Some(b) => Some((b, loc.offset)),
                    None => {
                        loc.slot = c.page_slot(loc.frame);
                        loc.slot
                            .and_then(|s| c.slot_bytes(s))
                            .map(|b| (b, loc.offset))
                    }
                },
            };
            // One granule whose tag matches passes (what `check_access`
            // decides for it); anything else is `check_access`'s to decide.
            let page_base = start - in_page;
            let one_granule = in_page / GRANULE_SIZE == (in_page + len - 1) / GRANULE_SIZE;
            if one_granule && tag_in(bytes, in_page) == ptr.tag() {
                CheckOutcome::Pass
            } else {
                mte::check_access(ptr, len, kind, settings, |g| {
                    Some(tag_in(bytes, g.as_u64() - page_base))
                })
                .expect("BUG: a translated access leaves the address space")
            }
        };
        if !matches!(outcome, CheckOutcome::Pass)
            && let Err(f) = self.check_verdict(pid, outcome)
        {
            return Some(Outcome::Fault(f));
        }
        let offset = in_page as usize;
        Some(match value {
            None => {
                let c = &*contents;
                let value = match entry.data.and_then(|s| c.slot_bytes(s)) {
                    Some(bytes) => read_le(bytes, offset, size),
                    None => {
                        entry.data = c.page_slot(entry.pfn);
                        entry
                            .data
                            .and_then(|s| c.slot_bytes(s))
                            .map_or(0, |bytes| read_le(bytes, offset, size))
                    }
                };
                Outcome::Value(value)
            }
            Some(value) => {
                if let Some(bytes) = entry.data.and_then(|s| contents.slot_bytes_mut(s)) {
                    write_le(bytes, offset, size, value);
                } else {
                    contents
                        .write_in_frame(entry.pfn, offset, &value.to_le_bytes()[..len as usize])
                        .expect("BUG: a mapped frame is present");
                    entry.data = contents.page_slot(entry.pfn);
                }
                Outcome::Ok
            }
        })
    }
}
