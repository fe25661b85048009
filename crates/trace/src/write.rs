//! [`TraceWriter`]: records in, a trace file out, in constant memory.
//!
//! Records are encoded into the current frame's buffer; when it reaches
//! [`FRAME_TARGET`] bytes it is compressed and written, and the buffer is
//! reused. Instruction counts are accumulated and written as one
//! `Instructions` record just before the next event and at the end, so a
//! stream of fetches costs nothing per fetch. [`TraceWriter::finish`] writes
//! the end frame with the totals; a trace without it is truncated.

use std::io::{self, Write};

use crate::codec::Encoder;
use crate::format::{
    FRAME_DATA, FRAME_END, FRAME_TARGET, MAGIC, VERSION, encode_header, encode_totals,
};
use crate::record::{Access, Event, ExitStatus, Header, Record, Totals};

/// The zstd level the recorder uses by default: compresses a few times
/// faster than lackey produces records and within a few percent of the
/// best ratio on traces.
pub const DEFAULT_LEVEL: i32 = 9;

pub struct TraceWriter<W: Write> {
    out: W,
    encoder: Encoder,
    raw: Vec<u8>,
    records: u32,
    pending_instructions: u64,
    compressor: zstd::bulk::Compressor<'static>,
    totals: Totals,
}

impl<W: Write> TraceWriter<W> {
    /// Writes the header to `out` and starts the first frame; `level` is
    /// zstd's compression level (1 to 22).
    pub fn new(mut out: W, header: &Header, level: i32) -> io::Result<Self> {
        let body = encode_header(header);
        let len = u32::try_from(body.len())
            .ok()
            .filter(|&len| len <= crate::format::MAX_HEADER_LEN)
            .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "header too long"))?;
        out.write_all(&MAGIC)?;
        out.write_all(&VERSION.to_le_bytes())?;
        out.write_all(&len.to_le_bytes())?;
        out.write_all(&body)?;
        let mut compressor = zstd::bulk::Compressor::new(level)?;
        // The checksum makes a corrupted frame an error rather than a
        // stream of wrong records.
        compressor.include_checksum(true)?;
        Ok(Self {
            out,
            encoder: Encoder::default(),
            raw: Vec::with_capacity(FRAME_TARGET + 256),
            records: 0,
            pending_instructions: 0,
            compressor,
            totals: Totals::default(),
        })
    }

    /// Adds one data access.
    #[inline]
    pub fn access(&mut self, access: Access) -> io::Result<()> {
        self.push(Record::Access(access))
    }

    /// Adds one event, after the instructions counted so far.
    pub fn event(&mut self, event: Event) -> io::Result<()> {
        self.flush_instructions()?;
        self.push(Record::Event(event))
    }

    /// Counts `n` instructions of the program.
    #[inline]
    pub fn instructions(&mut self, n: u64) {
        self.pending_instructions += n;
    }

    /// Counts accesses the recorder dropped (informative, see
    /// [`Totals::filtered_accesses`]).
    pub fn filtered(&mut self, n: u64) {
        self.totals.filtered_accesses += n;
    }

    /// The output, as written so far: the header and every full frame
    /// (records wait in the current frame until it is full). A caller that
    /// streams the trace while it is made (`replay::synthetic`) takes the
    /// bytes out of it as they come; what it leaves is written after.
    pub fn get_mut(&mut self) -> &mut W {
        &mut self.out
    }

    /// The totals of what was written so far.
    pub fn totals(&self) -> &Totals {
        &self.totals
    }

    /// Ends the trace: the last frame and the end frame. Returns the totals
    /// and the output.
    pub fn finish(mut self, exit: ExitStatus) -> io::Result<(Totals, W)> {
        self.flush_instructions()?;
        self.write_frame()?;
        self.totals.exit = exit;
        let body = encode_totals(&self.totals);
        let compressed = self.compressor.compress(&body)?;
        write_frame_header(&mut self.out, FRAME_END, body.len(), 0, compressed.len())?;
        self.out.write_all(&compressed)?;
        self.out.flush()?;
        Ok((self.totals, self.out))
    }

    fn flush_instructions(&mut self) -> io::Result<()> {
        if self.pending_instructions > 0 {
            let n = std::mem::take(&mut self.pending_instructions);
            self.push(Record::Instructions(n))?;
        }
        Ok(())
    }

    #[inline]
    fn push(&mut self, record: Record) -> io::Result<()> {
        self.encoder.encode(&record, &mut self.raw);
        self.totals.count(&record);
        self.records += 1;
        if self.raw.len() >= FRAME_TARGET {
            self.write_frame()?;
        }
        Ok(())
    }

    fn write_frame(&mut self) -> io::Result<()> {
        if self.records == 0 {
            return Ok(());
        }
        let compressed = self.compressor.compress(&self.raw)?;
        write_frame_header(
            &mut self.out,
            FRAME_DATA,
            self.raw.len(),
            self.records,
            compressed.len(),
        )?;
        self.out.write_all(&compressed)?;
        self.totals.raw_bytes += self.raw.len() as u64;
        self.totals.compressed_bytes += compressed.len() as u64;
        self.totals.frames += 1;
        self.raw.clear();
        self.records = 0;
        self.encoder.reset();
        Ok(())
    }
}

fn write_frame_header(
    out: &mut impl Write,
    kind: u8,
    raw_len: usize,
    records: u32,
    compressed_len: usize,
) -> io::Result<()> {
    // Both lengths are bounded by FRAME_TARGET plus one record and zstd's
    // bound for that, far below 4 GiB.
    let narrow =
        |n: usize| u32::try_from(n).map_err(|_| io::Error::other("BUG: a frame above 4 GiB"));
    out.write_all(&[kind])?;
    out.write_all(&narrow(raw_len)?.to_le_bytes())?;
    out.write_all(&records.to_le_bytes())?;
    out.write_all(&narrow(compressed_len)?.to_le_bytes())?;
    Ok(())
}
