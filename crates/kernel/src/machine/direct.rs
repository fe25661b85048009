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
//! The process's address space and whether its settings check loads and
//! stores are remembered for the last process served (`FastMemo`); every
//! op of the full path clears the memo first (`Kernel::op`), since only
//! those change a process. The cold tag check reads the settings afresh.
//!
//! Outside parallel blocks, accesses run on CPU 0, the CPU `Machine::run`
//! runs its ops on ([`DIRECT_CPU`]). In a parallel block
//! (`Machine::run_parallel`), a load or store task tries the direct path on
//! its own CPU's TLB first (`Kernel::task_fast_access`, with the settings
//! read afresh, since another task may change them): the full path of an
//! access that translates has no switch point, so the schedules are the
//! same. Flushes reach every CPU's TLB.

use mte::packing::{Nibble, nibble_tag};
use mte::{AccessKind, CheckSettings, CheckTiming, GRANULE_SIZE, Tag, TaggedPtr};
use uapi::{AccessSize, Command, Fault, Machine, Op, Outcome, Pid};

use super::access::translate_leaf;
use super::cpu_tlb::{CpuTlbEntry, PAGE_TAG_BYTES, READ, TAG_FRAME, TAGGED, TagLoc, WRITE};
use super::{Kernel, PAGE};
use crate::mm::MmId;
use crate::mm::layout::{PAGE_SHIFT, TASK_SIZE};
use crate::phys::PhysContents;

/// The CPU whose TLB the direct path uses outside a parallel block
/// (`Machine::run` runs its ops there).
pub(crate) const DIRECT_CPU: usize = 0;

/// A process's address space and whether its settings check a load or a
/// store at all, as the direct path needs them: remembered for the last
/// process served (see the module doc for when it is cleared), or taken
/// afresh in a parallel block. Small and plain on purpose: it is copied
/// into every access (a wider copy with odd offsets was read back across
/// two stores, a store-forwarding stall that cost half of an access).
#[derive(Clone, Copy, Debug)]
pub(crate) struct FastMemo {
    mm: MmId,
    pid: Pid,
    load_checked: bool,
    store_checked: bool,
}

impl FastMemo {
    fn new(pid: Pid, mm: MmId, settings: CheckSettings) -> FastMemo {
        FastMemo {
            mm,
            pid,
            load_checked: settings.timing(AccessKind::Load) != CheckTiming::Unchecked,
            store_checked: settings.timing(AccessKind::Store) != CheckTiming::Unchecked,
        }
    }
}

/// The tag in the page's tag bytes `bytes` of the granule holding byte
/// `in_page`.
#[inline]
fn tag_in(bytes: &[u8; PAGE_TAG_BYTES], in_page: u64) -> Tag {
    let granule = in_page / GRANULE_SIZE;
    let nibble = if granule % 2 == 1 {
        Nibble::High
    } else {
        Nibble::Low
    };
    nibble_tag(bytes[(granule / 2) as usize], nibble)
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
    #[inline(always)]
    pub fn load_direct(&mut self, pid: Pid, ptr: TaggedPtr, size: AccessSize) -> Outcome {
        match self.direct_access(pid, ptr, size, None) {
            Some(outcome) => outcome,
            None => self.full_access(pid, Command::Load { ptr, size }),
        }
    }

    /// A store of the low `size` bytes of `value` at `ptr` by `pid`.
    #[inline(always)]
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
                let memo = self.fresh_memo(pid)?;
                self.fast_memo.set(Some(memo));
                Some(memo)
            }
        }
    }

    /// `pid`'s address space and settings now, `None` for no such process.
    fn fresh_memo(&self, pid: Pid) -> Option<FastMemo> {
        let procs = self.procs.borrow();
        let p = procs.get(&pid)?;
        Some(FastMemo::new(pid, p.mm, p.check_settings()))
    }

    /// The direct path for a `load` or `store` command run as a task of a
    /// parallel block: on the task's CPU and its TLB, with the process's
    /// settings read afresh (another task may change them between two
    /// accesses, and only ops clear the memo); `None` when the full path
    /// must run. The full path of a load or store that translates has no
    /// switch point, so taking this one instead changes no schedule.
    pub(crate) fn task_fast_access(&self, pid: Pid, command: &Command) -> Option<Outcome> {
        let (ptr, size, value) = match command {
            Command::Load { ptr, size } => (*ptr, *size, None),
            Command::Store { ptr, size, value } => (*ptr, *size, Some(*value)),
            _ => return None,
        };
        let cpu = self.sched.current_cpu().as_u32() as usize;
        let memo = self.fresh_memo(pid)?;
        self.direct_access_on(cpu, memo, ptr, size, value)
    }

    /// A per-CPU TLB entry for page `vpn` of `mm` from the translation the
    /// full path would find (which fills the address space's TLB and sets
    /// the access flag as it does); `None` if nothing valid maps it. Its
    /// buffer hints are taken on first use.
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
        let tags = geometry.tag_bytes_of(t.pfn).map(|first| TagLoc {
            frame: geometry.pfn_of(first),
            offset: geometry.page().page_offset(first) as usize,
        });
        Some(CpuTlbEntry::new(
            mm,
            vpn,
            t.pfn,
            t.access,
            t.tagged,
            t.huge,
            tags,
            geometry.is_tag_storage(t.pfn),
        ))
    }

    /// The direct path on CPU 0 with the memo (see the module doc).
    #[inline(always)]
    pub(crate) fn direct_access(
        &self,
        pid: Pid,
        ptr: TaggedPtr,
        size: AccessSize,
        value: Option<u128>,
    ) -> Option<Outcome> {
        let memo = self.direct_memo(pid)?;
        self.direct_access_on(DIRECT_CPU, memo, ptr, size, value)
    }

    /// The direct path on `cpu` for the process `memo` describes: `Some`
    /// with the outcome the full path would give, or `None` when the full
    /// path must run. Inlined into its callers so that the outcome is built
    /// where it is returned (a copy of it read back wider than it was
    /// written stalls store forwarding, which cost more than the rest of an
    /// access). A hit is: the key compare, one flag bit for the permission
    /// and one for tagged, the generation compare, one nibble compare for
    /// an access within one granule, then a fixed-size copy; everything
    /// else is out of line.
    #[inline(always)]
    fn direct_access_on(
        &self,
        cpu: usize,
        memo: FastMemo,
        ptr: TaggedPtr,
        size: AccessSize,
        value: Option<u128>,
    ) -> Option<Outcome> {
        let len = size.bytes();
        let start = ptr.addr().as_u64();
        let in_page = start & (PAGE - 1);
        if in_page + len > PAGE {
            return None;
        }
        let vpn = start >> PAGE_SHIFT;
        let (need, checked) = match value {
            None => (READ, memo.load_checked),
            Some(_) => (WRITE, memo.store_checked),
        };
        let mut tlbs = self.cpu_tlbs.borrow_mut();
        let tlb = tlbs.cpu(cpu);
        let entry = match tlb.lookup_mut(memo.mm, vpn) {
            Some(entry) => entry,
            None => {
                tlb.fill(self.direct_entry(memo.mm, vpn)?);
                tlb.lookup_mut(memo.mm, vpn)
                    .expect("BUG: an entry just filled is gone")
            }
        };
        if entry.flags & need == 0 {
            return None;
        }
        let mut phys = self.mem.phys_mut();
        let contents = &mut phys.contents;
        if entry.epoch != contents.epoch() {
            refresh_hints(entry, contents);
        }
        if checked && entry.flags & TAGGED != 0 {
            // One granule whose tag matches passes (what `check_access`
            // decides for it); anything else is `check_access`'s to decide.
            let one_granule = in_page / GRANULE_SIZE == (in_page + len - 1) / GRANULE_SIZE;
            let byte = entry.tag_copy[(in_page / (2 * GRANULE_SIZE)) as usize % PAGE_TAG_BYTES];
            let tag = byte >> ((in_page / GRANULE_SIZE) % 2 * 4) & 0xf;
            if !(one_granule && tag == ptr.tag().value())
                && let Err(f) = self.direct_check(memo.pid, ptr, len, value, &entry.tag_copy)
            {
                return Some(Outcome::Fault(f));
            }
        }
        let offset = in_page as usize;
        Some(match value {
            None => Outcome::Value(
                contents
                    .bytes_at(entry.data)
                    .map_or(0, |bytes| read_le(bytes, offset, size)),
            ),
            Some(value) => {
                // A store to a tag storage frame may change tags: tracked.
                let bytes = if entry.flags & TAG_FRAME == 0 {
                    contents.bytes_at_mut_quiet(entry.data)
                } else {
                    contents.bytes_at_mut(entry.data)
                };
                match bytes {
                    Some(bytes) => write_le(bytes, offset, size, value),
                    None => first_write(
                        entry,
                        contents,
                        offset,
                        &value.to_le_bytes()[..len as usize],
                    ),
                }
                Outcome::Ok
            }
        })
    }

    /// The tag check of an access the one-granule shortcut did not pass:
    /// [`mte::check_access`] with the page's tag bytes, and its verdict
    /// (faults reported, async faults recorded, counters moved).
    #[cold]
    #[inline(never)]
    fn direct_check(
        &self,
        pid: Pid,
        ptr: TaggedPtr,
        len: u64,
        value: Option<u128>,
        tags: &[u8; PAGE_TAG_BYTES],
    ) -> Result<(), Fault> {
        let kind = match value {
            None => AccessKind::Load,
            Some(_) => AccessKind::Store,
        };
        let page_base = ptr.addr().as_u64() & !(PAGE - 1);
        // The settings the memo was made from: only ops change them.
        let settings = self
            .procs
            .borrow()
            .get(&pid)
            .map(|p| p.check_settings())
            .expect("BUG: the direct path ran for a process that is gone");
        let outcome = mte::check_access(ptr, len, kind, settings, |g| {
            Some(tag_in(tags, g.as_u64() - page_base))
        })
        .expect("BUG: a translated access leaves the address space");
        self.check_verdict(pid, outcome)
    }
}

/// Takes `entry`'s buffer index and tag copy again in the contents' epoch
/// (also what the checker compares a current entry's hints with).
#[cold]
#[inline(never)]
pub(crate) fn refresh_hints(entry: &mut CpuTlbEntry, contents: &PhysContents) {
    entry.epoch = contents.epoch();
    entry.data = contents.buf_index(entry.pfn);
    entry.tag_copy = [0; PAGE_TAG_BYTES];
    if let Some(t) = entry.tags
        && let Some(bytes) = contents.bytes_at(contents.buf_index(t.frame))
    {
        entry
            .tag_copy
            .copy_from_slice(&bytes[t.offset..t.offset + PAGE_TAG_BYTES]);
    }
}

/// A store of `data` at `offset` of `entry`'s frame, which has no buffer
/// yet: written as the full path writes (zeros allocate nothing), then the
/// hints taken again (a buffer added is a new generation).
#[cold]
#[inline(never)]
fn first_write(entry: &mut CpuTlbEntry, contents: &mut PhysContents, offset: usize, data: &[u8]) {
    contents
        .write_in_frame(entry.pfn, offset, data)
        .expect("BUG: a mapped frame is present");
    refresh_hints(entry, contents);
}

impl Kernel {
    /// [`uapi::Machine::prefetch`]: for each access of the process the
    /// memo is for, reads CPU 0's TLB entry of the page (either level) and
    /// the tag byte the direct path will check, then, in a second pass,
    /// the data byte (its buffer known only from the entry, and only if the
    /// entry's hints are of the current epoch). Two passes, each a short
    /// loop of loads that do not depend on one another, so that the host
    /// keeps many cache misses in flight. Nothing is filled or refreshed.
    pub(crate) fn direct_prefetch(&self, accesses: &[(Pid, TaggedPtr)]) -> u64 {
        const CHUNK: usize = 32;
        let Some(memo) = self.fast_memo.get() else {
            return 0;
        };
        // Between ops nothing holds either borrow.
        let tlbs = self.cpu_tlbs.borrow();
        let phys = self.mem.phys();
        let epoch = phys.contents.epoch();
        let mut read = 0u64;
        for chunk in accesses.chunks(CHUNK) {
            let mut found = [(crate::phys::BufIndex::NONE, 0usize); CHUNK];
            let mut n = 0;
            for &(pid, ptr) in chunk {
                let start = ptr.addr().as_u64();
                if pid != memo.pid {
                    continue;
                }
                let Some(entry) = tlbs.peek(DIRECT_CPU, memo.mm, start >> PAGE_SHIFT) else {
                    continue;
                };
                let in_page = (start & (PAGE - 1)) as usize;
                read ^= u64::from(
                    entry.tag_copy[in_page / (2 * GRANULE_SIZE as usize) % PAGE_TAG_BYTES],
                );
                if entry.epoch == epoch {
                    found[n] = (entry.data, in_page);
                    n += 1;
                }
            }
            for &(data, in_page) in &found[..n] {
                let byte = phys.contents.bytes_at(data).and_then(|b| b.get(in_page));
                read ^= u64::from(byte.copied().unwrap_or(0));
            }
        }
        read
    }
}
