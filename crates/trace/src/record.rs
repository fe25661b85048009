//! What a trace holds: the records of a recorded program, in program order,
//! and the header and totals around them.
//!
//! Addresses and sizes are the recorded program's own (its host's virtual
//! addresses), kept as plain `u64`: a trace describes another machine, and
//! the replay decides what they become on the simulated one.

use core::fmt;

/// The kind of a data access, as Valgrind's lackey reports it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum AccessKind {
    /// A load (` L`).
    Load,
    /// A store (` S`).
    Store,
    /// A read-modify-write of one location (` M`): a load, then a store.
    Modify,
}

impl AccessKind {
    pub const ALL: [AccessKind; 3] = [AccessKind::Load, AccessKind::Store, AccessKind::Modify];

    pub const fn name(self) -> &'static str {
        match self {
            AccessKind::Load => "load",
            AccessKind::Store => "store",
            AccessKind::Modify => "modify",
        }
    }
}

impl fmt::Display for AccessKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// One data access of the recorded program.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Access {
    pub kind: AccessKind,
    pub addr: u64,
    /// Bytes accessed (at least 1).
    pub size: u32,
}

/// An allocation or address-space call of the recorded program, with what it
/// returned. A failed allocation returns pointer 0; a failed `mmap` returns
/// `MAP_FAILED` (`u64::MAX`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Event {
    Malloc {
        size: u64,
        ptr: u64,
    },
    Calloc {
        nmemb: u64,
        size: u64,
        ptr: u64,
    },
    /// `realloc(old, size)`: `old` 0 is a malloc; `size` 0 with a non-null
    /// `old` frees it (glibc returns 0 then).
    Realloc {
        old: u64,
        size: u64,
        ptr: u64,
    },
    Free {
        ptr: u64,
    },
    /// `posix_memalign`: `ptr` 0 when it failed.
    PosixMemalign {
        align: u64,
        size: u64,
        ptr: u64,
    },
    AlignedAlloc {
        align: u64,
        size: u64,
        ptr: u64,
    },
    Memalign {
        align: u64,
        size: u64,
        ptr: u64,
    },
    /// `mmap(addr, len, prot, flags, fd, offset)` returning `result`.
    Mmap {
        addr: u64,
        len: u64,
        prot: u32,
        flags: u32,
        fd: i32,
        offset: u64,
        result: u64,
    },
    /// `munmap(addr, len)` returning `result` (0 or -1).
    Munmap {
        addr: u64,
        len: u64,
        result: i32,
    },
    /// `brk` or `sbrk`: the program break before and after the call.
    Brk {
        old_end: u64,
        new_end: u64,
    },
}

impl Event {
    /// Every kind of event, in the order totals list them.
    pub const KINDS: [&'static str; 10] = [
        "malloc",
        "calloc",
        "realloc",
        "free",
        "posix_memalign",
        "aligned_alloc",
        "memalign",
        "mmap",
        "munmap",
        "brk",
    ];

    /// The index of this event's kind in [`Event::KINDS`].
    pub const fn kind_index(&self) -> usize {
        match self {
            Event::Malloc { .. } => 0,
            Event::Calloc { .. } => 1,
            Event::Realloc { .. } => 2,
            Event::Free { .. } => 3,
            Event::PosixMemalign { .. } => 4,
            Event::AlignedAlloc { .. } => 5,
            Event::Memalign { .. } => 6,
            Event::Mmap { .. } => 7,
            Event::Munmap { .. } => 8,
            Event::Brk { .. } => 9,
        }
    }

    pub const fn kind_name(&self) -> &'static str {
        Event::KINDS[self.kind_index()]
    }

    /// Whether the event is an allocator call (as opposed to a change of the
    /// address space).
    pub const fn is_allocation(&self) -> bool {
        self.kind_index() < 7
    }
}

/// One record of the stream.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Record {
    Access(Access),
    Event(Event),
    /// Instructions the program executed since the previous `Instructions`
    /// record (or the start). Written before each event and at the end, so
    /// every event is placed in instruction time while instructions cost no
    /// space per fetch.
    Instructions(u64),
}

/// Who recorded a trace, where and when: for people reading `trace info`.
/// The recorder fills every field; the format only carries them.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct Provenance {
    /// The recording tool and its version (`mtesim 0.1.0`).
    pub recorder: String,
    /// The Valgrind version (`valgrind-3.19.0`).
    pub valgrind: String,
    /// The host the program ran on (`x86_64 Linux 6.1`).
    pub host: String,
    /// When the recording started, as the caller formats it (RFC 3339).
    pub date: String,
}

/// The header of a trace.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct Header {
    /// The recorded program's command line, program first.
    pub command: Vec<String>,
    pub provenance: Provenance,
}

/// How the recorded program ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum ExitStatus {
    /// Not known (the recording was stopped).
    #[default]
    Unknown,
    Exited(i32),
    Signalled(i32),
}

impl fmt::Display for ExitStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ExitStatus::Unknown => f.write_str("unknown"),
            ExitStatus::Exited(code) => write!(f, "exit status {code}"),
            ExitStatus::Signalled(signal) => write!(f, "killed by signal {signal}"),
        }
    }
}

/// What a whole trace holds, written at its end by the writer and checked
/// against the records by the reader.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct Totals {
    /// Data accesses by kind, indexed as [`AccessKind::ALL`].
    pub accesses: [u64; 3],
    /// Bytes accessed (the sum of access sizes).
    pub access_bytes: u64,
    /// Events by kind, indexed as [`Event::KINDS`].
    pub events: [u64; 10],
    /// Instructions of the program (the sum of `Instructions` records).
    pub instructions: u64,
    /// Accesses the recorder dropped because the shim or the allocator
    /// made them on the program's behalf: informative, not in the stream.
    pub filtered_accesses: u64,
    pub exit: ExitStatus,
    /// Uncompressed bytes of record data.
    pub raw_bytes: u64,
    /// Compressed bytes of record data (frame bodies).
    pub compressed_bytes: u64,
    /// Data frames.
    pub frames: u64,
}

impl Totals {
    /// All data accesses.
    pub fn access_count(&self) -> u64 {
        self.accesses.iter().sum()
    }

    /// All events.
    pub fn event_count(&self) -> u64 {
        self.events.iter().sum()
    }

    /// Counts one record, as both the writer and the reader do.
    #[inline]
    pub(crate) fn count(&mut self, record: &Record) {
        match record {
            Record::Access(a) => {
                self.accesses[a.kind as usize] += 1;
                self.access_bytes = self.access_bytes.wrapping_add(u64::from(a.size));
            }
            Record::Event(e) => self.events[e.kind_index()] += 1,
            Record::Instructions(n) => self.instructions = self.instructions.wrapping_add(*n),
        }
    }
}
