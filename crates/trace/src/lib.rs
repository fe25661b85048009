//! mtesim's trace format: what a recorded program did, compactly.
//!
//! A trace is a header (magic, format version, the program's command line,
//! who recorded it where and when) followed by frames of records: data
//! accesses (load, store, modify, with address and size), allocation calls
//! (`malloc` and friends, with sizes and returned pointers), address-space
//! calls (`mmap`, `munmap`, `brk`) and instruction counts, in program order.
//! Records are delta- and varint-encoded ([`codec`]), frames are compressed
//! with zstd and checksummed, and the last frame holds the totals. The
//! layout is documented in `docs/trace-format.md`.
//!
//! Both sides stream: [`TraceWriter`] and [`TraceReader`] hold one frame
//! (at most 1 MiB) whatever the length of the trace. Reading never panics:
//! a truncated, corrupted or other-version file is a [`TraceError`] naming
//! the byte offset where the reader found the problem.

pub mod codec;
mod error;
pub mod format;
mod read;
mod record;
pub mod varint;
mod write;

pub use error::TraceError;
pub use read::{TraceReader, scan};
pub use record::{Access, AccessKind, Event, ExitStatus, Header, Provenance, Record, Totals};
pub use write::{DEFAULT_LEVEL, TraceWriter};
