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
//! `load_direct` / `store_direct` run in two tiers. The plain hit
//! (`Kernel::direct_hit`: memo, entry, permission, epoch, a one-granule
//! tag match, the data through the entry's buffer handle) is inlined into
//! the caller and has no call in it, so the caller's loop keeps its values
//! in registers; anything else returns `None` having done nothing, and
//! `Kernel::access_slow` (out of line) runs the whole direct path
//! (`direct_access_on`: fills, hint refresh, the full tag check, first
//! writes, stores to tag storage), else the full kernel path. The hit does
//! exactly what the whole direct path does for the same access.
//!
//! Outside parallel blocks, accesses run on CPU 0, the CPU `Machine::run`
//! runs its ops on ([`DIRECT_CPU`]). In a parallel block
//! (`Machine::run_parallel`), a load or store task tries the direct path on
//! its own CPU's TLB first (`Kernel::task_fast_access`, with the settings
//! read afresh, since another task may change them): the full path of an
//! access that translates has no switch point, so the schedules are the
//! same. Flushes reach every CPU's TLB.

use std::cell::Cell;

use mte::packing::{Nibble, nibble_tag};
use mte::{AccessKind, CheckSettings, CheckTiming, GRANULE_SIZE, Tag, TaggedPtr};
use uapi::{AccessSize, Command, Fault, Machine, Op, Outcome, Pid};

use super::access::translate_leaf;
use super::cpu_tlb::{
    CpuTlbEntry, FrameData, PAGE_BYTES, PAGE_GRANULES, PAGE_TAG_BYTES, READ, TAG_FRAME, TAGGED,
    TagLoc, WRITE,
};
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
/// "Checked" is kept as the entry flag a check needs ([`TAGGED`], or 0 when
/// the settings check nothing), so that one bit test of the entry's flags
/// decides whether the tag check runs.
#[derive(Clone, Copy, Debug)]
pub(crate) struct FastMemo {
    mm: MmId,
    pid: Pid,
    load_check: u8,
    store_check: u8,
}

impl FastMemo {
    fn new(pid: Pid, mm: MmId, settings: CheckSettings) -> FastMemo {
        let check = |kind| {
            if settings.timing(kind) == CheckTiming::Unchecked {
                0
            } else {
                TAGGED
            }
        };
        FastMemo {
            mm,
            pid,
            load_check: check(AccessKind::Load),
            store_check: check(AccessKind::Store),
        }
    }
}

/// The tag in an entry's tag copy `tags` of the granule holding byte
/// `in_page`.
#[inline]
fn tag_in(tags: &[u8; PAGE_GRANULES], in_page: u64) -> Tag {
    Tag::new(tags[(in_page / GRANULE_SIZE) as usize % PAGE_GRANULES])
        .expect("BUG: a tag copy holds 4-bit tags")
}

/// The `size` bytes at `offset` of `bytes`, little endian: one fixed-size
/// read per size (the byte cells' loads combine into one load; a copy of
/// variable length is a `memcpy` call and a store-forwarding stall when
/// the value is read back, most of an access).
#[inline]
fn read_le(bytes: &[Cell<u8>; PAGE_BYTES], offset: usize, size: AccessSize) -> u128 {
    #[inline(always)]
    fn at<const N: usize>(bytes: &[Cell<u8>; PAGE_BYTES], offset: usize) -> [u8; N] {
        let cells: &[Cell<u8>; N] = bytes[offset..offset + N]
            .try_into()
            .expect("BUG: a slice of N bytes");
        cells.each_ref().map(Cell::get)
    }
    match size {
        AccessSize::B1 => u128::from(bytes[offset].get()),
        AccessSize::B2 => u128::from(u16::from_le_bytes(at(bytes, offset))),
        AccessSize::B4 => u128::from(u32::from_le_bytes(at(bytes, offset))),
        AccessSize::B8 => u128::from(u64::from_le_bytes(at(bytes, offset))),
        AccessSize::B16 => u128::from_le_bytes(at(bytes, offset)),
    }
}

/// Writes the low `size` bytes of `value` at `offset` of `bytes`.
#[inline]
fn write_le(bytes: &[Cell<u8>; PAGE_BYTES], offset: usize, size: AccessSize, value: u128) {
    #[inline(always)]
    fn put<const N: usize>(bytes: &[Cell<u8>; PAGE_BYTES], offset: usize, le: &[u8; 16]) {
        let cells: &[Cell<u8>; N] = bytes[offset..offset + N]
            .try_into()
            .expect("BUG: a slice of N bytes");
        for (c, &b) in cells.iter().zip(le) {
            c.set(b);
        }
    }
    let le = value.to_le_bytes();
    match size {
        AccessSize::B1 => bytes[offset].set(le[0]),
        AccessSize::B2 => put::<2>(bytes, offset, &le),
        AccessSize::B4 => put::<4>(bytes, offset, &le),
        AccessSize::B8 => put::<8>(bytes, offset, &le),
        AccessSize::B16 => put::<16>(bytes, offset, &le),
    }
}

impl Kernel {
    /// A load of `size` bytes at `ptr` by `pid`: the direct path when the
    /// page is established, else the full path (see the module doc).
    /// Inlined, like [`Self::store_direct`], into the caller's loop.
    #[inline(always)]
    pub fn load_direct(&mut self, pid: Pid, ptr: TaggedPtr, size: AccessSize) -> Outcome {
        match self.direct_hit(pid, ptr, size, None) {
            Some(value) => Outcome::Value(value),
            None => {
                let mut out = Outcome::Ok;
                self.access_slow(pid, Command::Load { ptr, size }, &mut out);
                out
            }
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
        match self.direct_hit(pid, ptr, size, Some(value)) {
            Some(_) => Outcome::Ok,
            None => {
                let mut out = Outcome::Ok;
                self.access_slow(pid, Command::Store { ptr, size, value }, &mut out);
                out
            }
        }
    }

    /// Everything but a plain hit: the whole direct path (memo and TLB
    /// fills, hints taken again, the tag check out of line, first writes),
    /// else the full path. The outcome is written to `out` rather than
    /// returned: a returned one merged with the hit's in memory, and the
    /// hit's value went through a store and a load (a fifth of a load's
    /// time).
    #[cold]
    #[inline(never)]
    fn access_slow(&mut self, pid: Pid, command: Command, out: &mut Outcome) {
        *out = match self.fast_access(pid, &command) {
            Some(outcome) => outcome,
            None => self.run(&Op::Process { pid, command }).outcome,
        };
    }

    /// The plain hit of [`Self::load_direct`] and [`Self::store_direct`]
    /// on CPU 0, with no call in it: the memo is `pid`'s, the access stays
    /// in its page, the entry is there and allows it, its hints are of the
    /// current epoch, a checked access is one granule whose tag matches,
    /// and a store has a buffer to write to a frame outside tag storage.
    /// Then the data access, and `Some` with the value loaded (0 for a
    /// store). `None` otherwise, with nothing done: [`Self::access_slow`]
    /// runs the whole path, which does the same as this for a hit.
    #[inline(always)]
    fn direct_hit(
        &self,
        pid: Pid,
        ptr: TaggedPtr,
        size: AccessSize,
        value: Option<u128>,
    ) -> Option<u128> {
        let memo = self.fast_memo.get()?;
        if memo.pid != pid {
            return None;
        }
        let len = size.bytes();
        let start = ptr.addr().as_u64();
        let in_page = start & (PAGE - 1);
        if in_page + len > PAGE {
            return None;
        }
        // A store to tag storage moves the epoch: the whole path's.
        let (mask, need, check) = match value {
            None => (READ, READ, memo.load_check),
            Some(_) => (WRITE | TAG_FRAME, WRITE, memo.store_check),
        };
        let mut tlbs = self.cpu_tlbs.borrow_mut();
        let entry = tlbs
            .cpu(DIRECT_CPU)
            .lookup_mut(memo.mm, start >> PAGE_SHIFT)?;
        if entry.flags & mask != need || entry.epoch != self.contents_epoch.get() {
            return None;
        }
        if entry.flags & check != 0 {
            let one_granule = in_page % GRANULE_SIZE + len <= GRANULE_SIZE;
            let tag = entry.tag_copy[(in_page / GRANULE_SIZE) as usize % PAGE_GRANULES];
            if !(one_granule && tag == ptr.tag().value()) {
                return None;
            }
        }
        let offset = in_page as usize;
        match value {
            None => Some(
                entry
                    .data
                    .as_ref()
                    .map_or(0, |buf| read_le(buf.bytes(), offset, size)),
            ),
            Some(value) => {
                write_le(entry.data.as_ref()?.bytes(), offset, size, value);
                Some(0)
            }
        }
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
        if base >= TASK_SIZE || self.mem.geometry().page().page_size() != PAGE {
            // Entries hold pages of `PAGE` bytes (`FrameData`).
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
    /// and one for a check, the epoch compare, one tag compare for an
    /// access within one granule, then a fixed-size read or write through
    /// the entry's buffer; everything else is out of line.
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
        let (need, check) = match value {
            None => (READ, memo.load_check),
            Some(_) => (WRITE, memo.store_check),
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
        // The hints are checked against the shared epoch: a hit borrows
        // no physical memory.
        if entry.epoch != self.contents_epoch.get() {
            refresh_hints(entry, &self.mem.phys().contents);
        }
        if entry.flags & check != 0 {
            // One granule whose tag matches passes (what `check_access`
            // decides for it); anything else is `check_access`'s to decide.
            let one_granule = in_page % GRANULE_SIZE + len <= GRANULE_SIZE;
            let tag = entry.tag_copy[(in_page / GRANULE_SIZE) as usize % PAGE_GRANULES];
            if !(one_granule && tag == ptr.tag().value())
                && let Err(f) = self.direct_check(memo.pid, ptr, len, value, &entry.tag_copy)
            {
                return Some(Outcome::Fault(f));
            }
        }
        let offset = in_page as usize;
        Some(match value {
            None => Outcome::Value(
                entry
                    .data
                    .as_ref()
                    .map_or(0, |buf| read_le(buf.bytes(), offset, size)),
            ),
            Some(value) => {
                match &entry.data {
                    Some(buf) => {
                        // A store to a tag storage frame may change some
                        // page's tags: a new epoch.
                        if entry.flags & TAG_FRAME != 0 {
                            self.contents_epoch.advance();
                        }
                        write_le(buf.bytes(), offset, size, value);
                    }
                    None => first_write(
                        entry,
                        &mut self.mem.phys_mut().contents,
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
        tags: &[u8; PAGE_GRANULES],
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

/// Takes `entry`'s buffer handle and tag copy again in the contents' epoch
/// (also what the checker compares a current entry's hints with).
#[cold]
#[inline(never)]
pub(crate) fn refresh_hints(entry: &mut CpuTlbEntry, contents: &PhysContents) {
    entry.epoch = contents.epoch();
    entry.data = contents
        .page_buf(entry.pfn)
        .map(|buf| FrameData::of(buf).expect("BUG: a direct entry on a machine of other pages"));
    entry.tag_copy = [0; PAGE_GRANULES];
    if let Some(t) = entry.tags
        && let Some(bytes) = contents.page_bytes(t.frame)
    {
        let mut packed = [0; PAGE_TAG_BYTES];
        bytes.copy_to(t.offset, &mut packed);
        for (pair, &byte) in entry.tag_copy.chunks_exact_mut(2).zip(&packed) {
            pair[0] = nibble_tag(byte, Nibble::Low).value();
            pair[1] = nibble_tag(byte, Nibble::High).value();
        }
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
        // Between ops nothing holds the borrow.
        let tlbs = self.cpu_tlbs.borrow();
        let epoch = self.contents_epoch.get();
        let mut read = 0u64;
        for chunk in accesses.chunks(CHUNK) {
            let mut found: [Option<(&FrameData, usize)>; CHUNK] = [None; CHUNK];
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
                read ^= u64::from(entry.tag_copy[in_page / GRANULE_SIZE as usize % PAGE_GRANULES]);
                if entry.epoch == epoch
                    && let Some(data) = &entry.data
                {
                    found[n] = Some((data, in_page));
                    n += 1;
                }
            }
            for &(data, in_page) in found[..n].iter().flatten() {
                read ^= u64::from(data.bytes()[in_page].get());
            }
        }
        read
    }
}
