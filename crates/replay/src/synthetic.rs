//! A synthetic binary trace, made while it is read: [`Synthetic`] is a
//! [`Read`] whose bytes are a complete trace file (`docs/trace-format.md`),
//! encoded and compressed by [`TraceWriter`] a frame at a time as the
//! reader asks for them. A replay of any length therefore needs no file and
//! no memory beyond one frame on each side: `mtesim bench replay` runs a
//! billion accesses through [`TraceReader`](trace::TraceReader) and
//! [`replay`](crate::replay) this way (`docs/performance.md`, "Scale"), and
//! the replay bench reads a short one into memory.
//!
//! The recorded program allocates `objects` blocks of [`OBJECT`] bytes
//! (one `malloc` each, at [`RECORDED_HEAP`] upwards, so each is tagged by
//! the replay's allocator model), then makes `accesses` 8-byte accesses,
//! loads and stores alternating, walking the blocks with a stride of 72
//! bytes (a new granule each time) and staying inside the block each
//! access starts in. The pages it touches are those of the blocks, however
//! many accesses it makes.

use std::io::{self, Read};

use trace::{Access, AccessKind, Event, ExitStatus, Header, TraceWriter};

/// Bytes of each allocated block.
pub const OBJECT: u64 = 4096;
/// Where the recorded program's allocator put the first block.
pub const RECORDED_HEAP: u64 = 0x0403_5000;
/// The most blocks a trace allocates (4 GiB of them, more than a replay's
/// model heap holds of one size: such a replay ends with a clear error).
pub const MAX_OBJECTS: u64 = 1 << 20;
/// Bytes between two consecutive accesses.
const STRIDE: u64 = 72;
/// zstd level of the frames: the fastest, since they are read at once.
const LEVEL: i32 = 1;

/// The trace file's bytes, made on demand (see the module doc).
pub struct Synthetic {
    /// `None` once the end frame is written.
    writer: Option<TraceWriter<Vec<u8>>>,
    /// Bytes taken from the writer and not yet read, from `pos`.
    out: Vec<u8>,
    pos: usize,
    objects: u64,
    accesses: u64,
    /// Accesses handed to the writer so far.
    next: u64,
}

impl Synthetic {
    /// The trace of `objects` blocks (at least one) and `accesses` accesses.
    pub fn new(objects: u64, accesses: u64) -> io::Result<Synthetic> {
        if objects == 0 || objects > MAX_OBJECTS {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("a synthetic trace has 1 to {MAX_OBJECTS} objects, not {objects}"),
            ));
        }
        let mut writer = TraceWriter::new(Vec::new(), &Header::default(), LEVEL)?;
        for i in 0..objects {
            writer.event(Event::Malloc {
                size: OBJECT,
                ptr: RECORDED_HEAP + i * OBJECT,
            })?;
        }
        Ok(Synthetic {
            writer: Some(writer),
            out: Vec::new(),
            pos: 0,
            objects,
            accesses,
            next: 0,
        })
    }

    /// Makes the next bytes: records until the writer has written a frame,
    /// or the end frame once every access is written. `out` is then what
    /// the writer wrote (the writer gets the drained buffer back, so frames
    /// reuse two buffers).
    fn refill(&mut self) -> io::Result<()> {
        self.out.clear();
        self.pos = 0;
        let Some(writer) = self.writer.as_mut() else {
            return Ok(());
        };
        while self.next < self.accesses && writer.get_mut().is_empty() {
            writer.access(access(self.objects, self.next))?;
            self.next += 1;
        }
        if !writer.get_mut().is_empty() {
            std::mem::swap(&mut self.out, writer.get_mut());
        } else if let Some(writer) = self.writer.take() {
            // Every access is in: the last frame and the end frame.
            self.out = writer.finish(ExitStatus::Exited(0))?.1;
        }
        Ok(())
    }
}

/// The `i`th access of the workload over `objects` blocks.
fn access(objects: u64, i: u64) -> Access {
    let at = i.wrapping_mul(STRIDE) % (objects * OBJECT);
    // Kept inside the block it starts in.
    let at = at - at % OBJECT + (at % OBJECT).min(OBJECT - 8);
    let kind = if i.is_multiple_of(2) {
        AccessKind::Load
    } else {
        AccessKind::Store
    };
    Access {
        kind,
        addr: RECORDED_HEAP + at,
        size: 8,
    }
}

impl Read for Synthetic {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        while self.pos == self.out.len() {
            if self.writer.is_none() {
                return Ok(0);
            }
            self.refill()?;
        }
        let n = buf.len().min(self.out.len() - self.pos);
        buf[..n].copy_from_slice(&self.out[self.pos..self.pos + n]);
        self.pos += n;
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use trace::{Record, TraceReader};

    #[test]
    fn the_stream_is_a_whole_trace_of_the_workload() {
        // Enough accesses for several frames.
        let accesses = 300_000;
        let mut reader = TraceReader::new(Synthetic::new(3, accesses).unwrap()).unwrap();
        let (mut mallocs, mut seen) = (0, 0u64);
        while let Some(record) = reader.next_record().unwrap() {
            match record {
                Record::Event(Event::Malloc { size, ptr }) => {
                    assert_eq!((size, ptr), (OBJECT, RECORDED_HEAP + mallocs * OBJECT));
                    mallocs += 1;
                }
                Record::Access(a) => {
                    let kind = [AccessKind::Load, AccessKind::Store][(seen % 2) as usize];
                    assert_eq!((a.kind, a.size), (kind, 8));
                    assert!(a.addr >= RECORDED_HEAP && a.addr + 8 <= RECORDED_HEAP + 3 * OBJECT);
                    // Never across the end of a block.
                    assert!(a.addr % OBJECT <= OBJECT - 8, "{a:?}");
                    seen += 1;
                }
                other => panic!("unexpected {other:?}"),
            }
        }
        assert_eq!((mallocs, seen), (3, accesses));
        let totals = reader.totals().expect("the end frame was read");
        assert_eq!(totals.access_count(), accesses);
        assert!(totals.frames > 1, "{totals:?}");
    }

    #[test]
    fn small_reads_see_the_bytes_a_whole_read_does() {
        let mut whole = Vec::new();
        Synthetic::new(16, 100_000)
            .unwrap()
            .read_to_end(&mut whole)
            .unwrap();
        let mut piecewise = Vec::new();
        let mut source = Synthetic::new(16, 100_000).unwrap();
        let mut buf = [0u8; 7];
        loop {
            let n = source.read(&mut buf).unwrap();
            if n == 0 {
                break;
            }
            piecewise.extend_from_slice(&buf[..n]);
        }
        assert_eq!(whole, piecewise);
        // Reading past the end stays at the end.
        assert_eq!(source.read(&mut buf).unwrap(), 0);
    }

    #[test]
    fn no_objects_is_refused() {
        assert!(Synthetic::new(0, 10).is_err());
        assert!(Synthetic::new(MAX_OBJECTS + 1, 10).is_err());
    }
}
