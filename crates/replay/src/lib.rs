//! Replaying a recorded trace on the simulated machine
//! (`docs/workloads.md`, "Replaying").
//!
//! The recorded program becomes one process of the simulated kernel, with
//! tagged addressing on, IRG excluding tag 0, and the chosen tag-check mode
//! (sync unless told otherwise):
//!
//! - its `mmap`, `munmap` and `brk` calls become the same calls at the same
//!   addresses (`MAP_FIXED`); memory it touched without a recorded call (its
//!   image, its stack, the recorded allocator's own heap, mappings made
//!   before the shim loaded) is mapped on first touch, one untagged
//!   read-write page at a time, at the same address;
//! - its allocations are placed by the tagging allocator model ([`heap`]);
//! - every data access is made through the pointer of the allocation it
//!   belongs to (tag included), or with tag 0 outside the heap, and split
//!   into loads and stores of at most 16 bytes (a modify is a load, then a
//!   store). A tag check fault is reported ([`TagFault`]) with the access,
//!   the allocation the pointer came from and the allocation whose memory it
//!   hit; like a signal handler that skips the instruction, the replay goes
//!   on.
//!
//! Loads of 16 bytes or more are clipped to the last granule of the
//! allocation they start in: x86 string routines read whole vectors past
//! the end of a string, which arm64's MTE-aware ones never do, so such
//! over-reads are artefacts of the recording host, not bugs. A vector
//! over-read that really reads another object's data is therefore missed;
//! stores are never clipped.
//!
//! Accesses the machine cannot hold (below `mmap_min_addr`, at or above the
//! model heap, such as x86's vsyscall page) are counted and skipped.
//! Memory stays bounded: records stream from the reader, and the replay
//! keeps only live allocations, freed ones not yet reused by the recorded
//! allocator, and the first [`ReplayConfig::max_reports`] fault reports.

pub mod heap;
mod process;
pub mod report;
pub mod synthetic;

use kernel::Kernel;
use mte::{CheckMode, Tag, TaggedPtr};
use platform::Platform;
use thiserror::Error;
use trace::{Access, AccessKind, Event, Record, TraceError, TraceReader};
use uapi::{AccessSize, Backing, Counter, FaultCode, Machine, Outcome, Prot, Sharing};

pub use heap::{AllocInfo, DEFAULT_LARGE, HEAP_BASE};
pub use process::ASYNC_TICK;

use heap::Heap;
use process::Process;

const PAGE: u64 = 4096;
/// Nothing can be mapped below this (Linux `mmap_min_addr`).
const MMAP_MIN_ADDR: u64 = 4096;
// x86-64 Linux mmap bits, as the shim records them.
const PROT_READ: u32 = 1;
const PROT_WRITE: u32 = 2;
const PROT_EXEC: u32 = 4;
const MAP_SHARED: u32 = 0x01;
const MAP_ANONYMOUS: u32 = 0x20;
const MAP_FAILED: u64 = u64::MAX;

/// How to replay.
#[derive(Clone, Debug)]
pub struct ReplayConfig {
    pub platform: Platform,
    /// The process's tag-check mode.
    pub tcf: CheckMode,
    /// Allocations of at least this many bytes get their own mapping.
    pub large: u64,
    /// Tag check faults described in full (all are counted).
    pub max_reports: usize,
}

impl ReplayConfig {
    pub fn new(platform: Platform) -> Self {
        Self {
            platform,
            tcf: CheckMode::Sync,
            large: DEFAULT_LARGE,
            max_reports: 100,
        }
    }
}

#[derive(Debug, Error)]
pub enum ReplayError {
    #[error(transparent)]
    Trace(#[from] TraceError),
    #[error("the simulated machine: {0}")]
    Machine(String),
    #[error(
        "the simulated machine ran out of memory at data access {access} \
         (give it more with --set memory=SIZE)"
    )]
    OutOfMemory { access: u64 },
    #[error("the model heap's region for blocks of {block_size} bytes is full")]
    HeapExhausted { block_size: u64 },
}

/// One tag check fault of the replay.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TagFault {
    /// The number of data accesses before this one.
    pub access: u64,
    pub kind: AccessKind,
    /// The recorded address and size of the access.
    pub addr: u64,
    pub size: u32,
    /// The pointer the faulting load or store used on the machine.
    pub ptr: TaggedPtr,
    pub code: FaultCode,
    /// The allocation tag of the memory it hit.
    pub memory_tag: Tag,
    /// The allocation the pointer came from.
    pub pointer_from: Option<AllocInfo>,
    /// The allocation whose block it hit (the current occupant, or the last
    /// one of a free block).
    pub hit: Option<AllocInfo>,
}

impl TagFault {
    /// What kind of bug the fault shows.
    pub fn diagnosis(&self) -> &'static str {
        if self.kind != AccessKind::Store && self.size >= 16 {
            // Vector loads this wide come from x86 string and memory
            // routines as often as from the program's own bugs; see the
            // module documentation.
            return "vector load out of bounds (an x86 string routine's over-read, or a bug)";
        }
        match &self.pointer_from {
            Some(from) if from.freed_at.is_some() => "use after free",
            Some(from)
                if self.addr < from.recorded
                    || self.addr.saturating_add(u64::from(self.size))
                        > from.recorded + from.size =>
            {
                "out-of-bounds access"
            }
            Some(_) => "tag mismatch",
            None => "tag mismatch outside the heap",
        }
    }
}

/// A point of the time series (and the end state).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Sample {
    pub accesses: u64,
    pub instructions: u64,
    pub events: u64,
    pub live_allocations: u64,
    pub live_bytes: u64,
    pub tag_check_faults: u64,
    /// The counters of `docs/model.md` §5 the machine keeps.
    pub counters: Vec<(&'static str, u64)>,
}

/// What a whole replay found.
#[derive(Clone, Debug)]
pub struct Summary {
    pub end: Sample,
    /// Data accesses by kind ([`AccessKind::ALL`] order).
    pub by_kind: [u64; 3],
    pub allocations: u64,
    pub frees: u64,
    /// Pages mapped on first touch.
    pub implicit_pages: u64,
    /// Accesses outside what the machine can map.
    pub skipped: u64,
    /// Vector loads clipped to the end of their allocation's last granule.
    pub clipped_loads: u64,
    /// Recorded mappings the machine refused (their pages are then mapped
    /// on first touch).
    pub refused_mappings: u64,
    /// Synchronous tag check faults (`tcf.sync` counts them too) and
    /// asynchronous ones delivered.
    pub sync_faults: u64,
    pub async_faults: u64,
    /// Faults other than tag checks (a freed large allocation's unmapped
    /// memory).
    pub other_faults: u64,
    pub faults: Vec<TagFault>,
    pub tcf: CheckMode,
}

/// The replay in progress.
pub struct Replay {
    process: Process,
    heap: Heap,
    tcf: CheckMode,
    max_reports: usize,
    accesses: u64,
    by_kind: [u64; 3],
    instructions: u64,
    events: u64,
    frees: u64,
    implicit_pages: u64,
    skipped: u64,
    clipped: u64,
    refused_mappings: u64,
    sync_faults: u64,
    other_faults: u64,
    faults: Vec<TagFault>,
}

impl Replay {
    pub fn new(config: &ReplayConfig) -> Result<Replay, ReplayError> {
        let machine = Kernel::new(&config.platform)
            .map_err(|e| ReplayError::Machine(format!("cannot boot: {e}")))?;
        let tcf = if machine.has_mte() {
            config.tcf
        } else {
            CheckMode::None
        };
        Ok(Replay {
            process: Process::start(machine, tcf)?,
            heap: Heap::new(config.large),
            tcf,
            max_reports: config.max_reports,
            accesses: 0,
            by_kind: [0; 3],
            instructions: 0,
            events: 0,
            frees: 0,
            implicit_pages: 0,
            skipped: 0,
            clipped: 0,
            refused_mappings: 0,
            sync_faults: 0,
            other_faults: 0,
            faults: Vec::new(),
        })
    }

    /// Data accesses replayed so far.
    pub fn accesses(&self) -> u64 {
        self.accesses
    }

    /// Replays one record.
    #[inline]
    pub fn apply(&mut self, record: &Record) -> Result<(), ReplayError> {
        match record {
            Record::Access(access) => self.access(access),
            Record::Instructions(n) => {
                self.instructions += n;
                Ok(())
            }
            Record::Event(event) => {
                self.events += 1;
                self.event(event)
            }
        }
    }

    #[inline]
    fn access(&mut self, access: &Access) -> Result<(), ReplayError> {
        let target = self.heap.target(access.addr);
        self.by_kind[access.kind as usize] += 1;
        let end = access.addr.saturating_add(u64::from(access.size));
        if target.alloc == 0 && (access.addr < MMAP_MIN_ADDR || end > HEAP_BASE) {
            self.skipped += 1;
        } else {
            let (load, store) = match access.kind {
                AccessKind::Load => (true, false),
                AccessKind::Store => (false, true),
                AccessKind::Modify => (true, true),
            };
            // Vector loads are clipped to the granules of the allocation
            // they start in: x86 string routines read whole aligned vectors
            // past a string's end, which MTE-aware ones (arm64's) never do
            // beyond the granule holding the end. A vector load that starts
            // past the allocation is replayed whole.
            let mut loaded = *access;
            if access.size >= 16 && target.alloc != 0 && access.addr < target.end {
                let room = target.end - access.addr;
                if room < u64::from(access.size) {
                    loaded.size = room as u32;
                    self.clipped += 1;
                }
            }
            // A modify whose load faults does not store (the instruction
            // did not complete).
            let completed = !load || self.split_access(&loaded, target, false)?;
            if completed && store {
                self.split_access(access, target, true)?;
            }
        }
        self.accesses += 1;
        if self.tcf != CheckMode::Sync
            && self.tcf != CheckMode::None
            && self.accesses.is_multiple_of(ASYNC_TICK)
        {
            self.process.tick();
        }
        Ok(())
    }

    /// The access in machine-sized pieces; false if one faulted.
    #[inline]
    fn split_access(
        &mut self,
        access: &Access,
        target: heap::Target,
        store: bool,
    ) -> Result<bool, ReplayError> {
        let size = u64::from(access.size);
        let mut offset = 0;
        while offset < size {
            let piece = match size - offset {
                16.. => AccessSize::B16,
                8.. => AccessSize::B8,
                4.. => AccessSize::B4,
                2.. => AccessSize::B2,
                _ => AccessSize::B1,
            };
            let ptr = TaggedPtr::from_raw(target.ptr.raw().wrapping_add(offset));
            if !self.one_access(access, target, ptr, piece, store)? {
                return Ok(false);
            }
            offset += piece.bytes();
        }
        Ok(true)
    }

    #[inline]
    fn one_access(
        &mut self,
        access: &Access,
        target: heap::Target,
        ptr: TaggedPtr,
        size: AccessSize,
        store: bool,
    ) -> Result<bool, ReplayError> {
        let mut fixed_permissions = false;
        // Each retry maps or unprotects one page; an access of at most 16
        // bytes spans at most two.
        for _ in 0..4 {
            let fault = match self.process.access(ptr, size, store) {
                Outcome::Ok | Outcome::Value(_) => return Ok(true),
                Outcome::Fault(fault) => fault,
                other => {
                    return Err(ReplayError::Machine(format!(
                        "an access at {ptr} gave {other:?}"
                    )));
                }
            };
            let at = fault
                .addr
                .map_or(ptr.addr().as_u64(), |a| a.addr().as_u64());
            match fault.code {
                FaultCode::SegvMteSerr => {
                    self.tag_fault(access, target, ptr, fault.code, at);
                    return Ok(false);
                }
                FaultCode::SegvMapErr if target.alloc == 0 => self.map_page(at)?,
                FaultCode::SegvAccErr if target.alloc == 0 && !fixed_permissions => {
                    // The recorded program could make this access, so it
                    // had changed the protection in a way the shim does not
                    // see (mprotect): allow it.
                    fixed_permissions = true;
                    self.process
                        .protect(at / PAGE * PAGE, PAGE, Prot::READ_WRITE);
                }
                FaultCode::SegvAccErr => {
                    return Err(ReplayError::OutOfMemory {
                        access: self.accesses,
                    });
                }
                _ => {
                    self.other_faults += 1;
                    return Ok(false);
                }
            }
        }
        Err(ReplayError::Machine(format!(
            "an access at {ptr} keeps faulting after its pages were mapped"
        )))
    }

    fn map_page(&mut self, addr: u64) -> Result<(), ReplayError> {
        let page = addr / PAGE * PAGE;
        self.implicit_pages += 1;
        self.process.map_fixed(
            page,
            PAGE,
            Prot::READ_WRITE,
            Sharing::Private,
            Backing::Anon,
        )
    }

    #[cold]
    fn tag_fault(
        &mut self,
        access: &Access,
        target: heap::Target,
        ptr: TaggedPtr,
        code: FaultCode,
        at: u64,
    ) {
        self.sync_faults += 1;
        if self.faults.len() >= self.max_reports {
            return;
        }
        let memory_tag = self.process.ldg(TaggedPtr::from_raw(at));
        let pointer_from = (target.alloc != 0)
            .then(|| self.heap.placement_of(access.addr))
            .flatten()
            .filter(|info| info.id == target.alloc)
            .cloned();
        self.faults.push(TagFault {
            access: self.accesses,
            kind: access.kind,
            addr: access.addr,
            size: access.size,
            ptr,
            code,
            memory_tag,
            pointer_from,
            hit: self.heap.occupant(at).cloned(),
        });
    }

    fn event(&mut self, event: &Event) -> Result<(), ReplayError> {
        let now = self.accesses;
        let (process, heap) = (&mut self.process, &mut self.heap);
        match *event {
            Event::Malloc { size, ptr } => heap.allocate(process, "malloc", ptr, size, 16, now),
            Event::Calloc { nmemb, size, ptr } => {
                heap.allocate(process, "calloc", ptr, nmemb.saturating_mul(size), 16, now)
            }
            Event::Realloc { old, size, ptr } => {
                if ptr != 0 {
                    if old != 0 {
                        self.frees += 1;
                        heap.free(process, old, now)?;
                    }
                    heap.allocate(process, "realloc", ptr, size, 16, now)
                } else if size == 0 && old != 0 {
                    self.frees += 1;
                    heap.free(process, old, now)
                } else {
                    Ok(())
                }
            }
            Event::Free { ptr } => {
                self.frees += 1;
                heap.free(process, ptr, now)
            }
            Event::PosixMemalign { align, size, ptr } => {
                heap.allocate(process, "posix_memalign", ptr, size, align, now)
            }
            Event::AlignedAlloc { align, size, ptr } => {
                heap.allocate(process, "aligned_alloc", ptr, size, align, now)
            }
            Event::Memalign { align, size, ptr } => {
                heap.allocate(process, "memalign", ptr, size, align, now)
            }
            Event::Mmap {
                len,
                prot,
                flags,
                result,
                ..
            } => {
                if result != MAP_FAILED {
                    self.recorded_map(result, len, prot, flags);
                }
                Ok(())
            }
            Event::Munmap { addr, len, result } => {
                if result == 0 && mappable(addr, len) {
                    // A failure here means the range held nothing the
                    // replay mapped: nothing to undo.
                    let _ = self.process.unmap(addr, len.next_multiple_of(PAGE));
                }
                Ok(())
            }
            Event::Brk { old_end, new_end } => {
                let (old, new) = (
                    old_end.next_multiple_of(PAGE),
                    new_end.next_multiple_of(PAGE),
                );
                if new > old {
                    self.recorded_map(old, new - old, PROT_READ | PROT_WRITE, 0x22);
                } else if old > new && mappable(new, old - new) {
                    let _ = self.process.unmap(new, old - new);
                }
                Ok(())
            }
        }
    }

    /// A recorded mapping, at its recorded address.
    fn recorded_map(&mut self, addr: u64, len: u64, prot: u32, flags: u32) {
        let len = len.next_multiple_of(PAGE);
        if len == 0 || !mappable(addr, len) {
            self.refused_mappings += 1;
            return;
        }
        let prot = Prot {
            read: prot & PROT_READ != 0,
            write: prot & PROT_WRITE != 0,
            exec: prot & PROT_EXEC != 0,
            mte: false,
        };
        let sharing = if flags & MAP_SHARED != 0 {
            Sharing::Shared
        } else {
            Sharing::Private
        };
        let backing = if flags & MAP_ANONYMOUS != 0 {
            Backing::Anon
        } else {
            Backing::File
        };
        if self
            .process
            .map_fixed(addr, len, prot, sharing, backing)
            .is_err()
        {
            self.refused_mappings += 1;
        }
    }

    /// The time-series point now.
    pub fn sample(&self) -> Sample {
        let counters = Counter::ALL
            .into_iter()
            .filter_map(|c| self.process.machine.counter(c).map(|v| (c.name(), v)))
            .collect();
        Sample {
            accesses: self.accesses,
            instructions: self.instructions,
            events: self.events,
            live_allocations: self.heap.live(),
            live_bytes: self.heap.live_bytes(),
            tag_check_faults: self.sync_faults + self.process.async_faults,
            counters,
        }
    }

    /// Ends the replay: delivers a pending asynchronous fault and sums up.
    pub fn finish(mut self) -> Summary {
        if self.tcf != CheckMode::Sync && self.tcf != CheckMode::None {
            self.process.tick();
        }
        Summary {
            end: self.sample(),
            by_kind: self.by_kind,
            allocations: self.heap.allocations(),
            frees: self.frees,
            implicit_pages: self.implicit_pages,
            skipped: self.skipped,
            clipped_loads: self.clipped,
            refused_mappings: self.refused_mappings,
            sync_faults: self.sync_faults,
            async_faults: self.process.async_faults,
            other_faults: self.other_faults,
            faults: self.faults,
            tcf: self.tcf,
        }
    }
}

/// Whether `[addr, addr + len)` lies where the replay maps recorded memory.
fn mappable(addr: u64, len: u64) -> bool {
    addr >= MMAP_MIN_ADDR && addr.checked_add(len).is_some_and(|end| end <= HEAP_BASE)
}

/// Replays every record of `reader`. `on_sample` gets a time-series point
/// every `every` data accesses (and none if `every` is 0); `on_progress`
/// gets the bytes of the trace read so far, now and then.
pub fn replay<R: std::io::Read>(
    reader: &mut TraceReader<R>,
    config: &ReplayConfig,
    every: u64,
    mut on_sample: impl FnMut(&Sample),
    mut on_progress: impl FnMut(u64),
) -> Result<Summary, ReplayError> {
    let mut replay = Replay::new(config)?;
    let mut records = 0u64;
    while let Some(record) = reader.next_record()? {
        replay.apply(&record)?;
        records += 1;
        if every > 0
            && matches!(record, Record::Access(_))
            && replay.accesses().is_multiple_of(every)
        {
            on_sample(&replay.sample());
        }
        if records.is_multiple_of(1 << 16) {
            on_progress(reader.bytes_read());
        }
    }
    on_progress(reader.bytes_read());
    Ok(replay.finish())
}
