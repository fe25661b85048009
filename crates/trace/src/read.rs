//! [`TraceReader`]: a trace file in, records out, one frame in memory at a
//! time.
//!
//! The reader trusts nothing it reads: every length is bounded before it
//! sizes a buffer, every frame's checksum, length and record count are
//! checked, and the end frame's totals must equal what the records added up
//! to. Any mismatch is a [`TraceError`] naming the byte offset; a file that
//! stops early (a recording that was killed, a short copy) is `Truncated`.

use std::io::{self, Read};

use crate::codec::{DecodeError, Decoder};
use crate::error::TraceError;
use crate::format::{
    FRAME_DATA, FRAME_END, FRAME_HEADER_LEN, MAGIC, MAX_FRAME_COMPRESSED, MAX_FRAME_RAW,
    MAX_HEADER_LEN, PREAMBLE_LEN, VERSION, decode_header, decode_totals,
};
use crate::record::{Header, Record, Totals};

pub struct TraceReader<R: Read> {
    input: R,
    /// File offset of the next byte `input` yields.
    offset: u64,
    header: Header,
    /// The current frame, decompressed.
    raw: Vec<u8>,
    pos: usize,
    /// Records decoded from the current frame, and how many it declared.
    frame_records: u32,
    frame_declared: u32,
    /// File offset of the current frame's header.
    frame_offset: u64,
    compressed: Vec<u8>,
    decoder: Decoder,
    decompressor: zstd::bulk::Decompressor<'static>,
    /// What the records decoded so far add up to.
    seen: Totals,
    /// The end frame's totals, once reached.
    end: Option<Totals>,
}

impl<R: Read> TraceReader<R> {
    /// Reads and checks the header.
    pub fn new(input: R) -> Result<Self, TraceError> {
        let decompressor = zstd::bulk::Decompressor::new()
            .map_err(|source| TraceError::Io { offset: 0, source })?;
        let mut reader = Self {
            input,
            offset: 0,
            header: Header::default(),
            raw: Vec::new(),
            pos: 0,
            frame_records: 0,
            frame_declared: 0,
            frame_offset: 0,
            compressed: Vec::new(),
            decoder: Decoder::default(),
            decompressor,
            seen: Totals::default(),
            end: None,
        };
        reader.read_header()?;
        Ok(reader)
    }

    pub fn header(&self) -> &Header {
        &self.header
    }

    /// The trace's totals, once [`TraceReader::next_record`] has returned
    /// `None` (they have then been checked against the records).
    pub fn totals(&self) -> Option<&Totals> {
        self.end.as_ref()
    }

    /// Bytes of the file read so far.
    pub fn bytes_read(&self) -> u64 {
        self.offset
    }

    /// The next record, or `None` after the end frame.
    #[inline]
    pub fn next_record(&mut self) -> Result<Option<Record>, TraceError> {
        if self.pos < self.raw.len() {
            return self.decode_one().map(Some);
        }
        self.next_record_slow()
    }

    #[inline]
    fn decode_one(&mut self) -> Result<Record, TraceError> {
        let at = self.pos;
        match self.decoder.decode(&self.raw, &mut self.pos) {
            Ok(record) => {
                self.frame_records += 1;
                self.seen.count(&record);
                Ok(record)
            }
            Err(e) => Err(self.record_error(at, e)),
        }
    }

    #[cold]
    fn next_record_slow(&mut self) -> Result<Option<Record>, TraceError> {
        loop {
            if self.end.is_some() {
                return Ok(None);
            }
            if self.frame_records != self.frame_declared {
                return Err(TraceError::corrupt(
                    self.frame_offset,
                    format!(
                        "the frame declares {} records but holds {}",
                        self.frame_declared, self.frame_records
                    ),
                ));
            }
            self.read_frame()?;
            if self.pos < self.raw.len() {
                return self.decode_one().map(Some);
            }
        }
    }

    fn record_error(&self, at: usize, e: DecodeError) -> TraceError {
        let why = match e {
            DecodeError::Truncated => "the frame's data ends inside a record",
            DecodeError::Invalid(why) => why,
        };
        TraceError::corrupt(
            self.frame_offset,
            format!(
                "record {} of the frame at this offset (byte {at} of its {} decompressed bytes): {why}",
                self.frame_records,
                self.raw.len()
            ),
        )
    }

    /// Fills `buf` from the input; a short read is `Truncated` at the end of
    /// what the file holds.
    fn read_exact(&mut self, buf: &mut [u8], what: &'static str) -> Result<(), TraceError> {
        let mut filled = 0;
        while filled < buf.len() {
            match self.input.read(&mut buf[filled..]) {
                Ok(0) => {
                    return Err(TraceError::Truncated {
                        offset: self.offset + filled as u64,
                        what,
                    });
                }
                Ok(n) => filled += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(source) => {
                    return Err(TraceError::Io {
                        offset: self.offset + filled as u64,
                        source,
                    });
                }
            }
        }
        self.offset += buf.len() as u64;
        Ok(())
    }

    fn read_header(&mut self) -> Result<(), TraceError> {
        let mut preamble = [0u8; PREAMBLE_LEN];
        // The magic first, on its own, so that a short file of another kind
        // is "not a trace" rather than "truncated".
        let mut filled = 0;
        while filled < MAGIC.len() {
            match self.input.read(&mut preamble[filled..MAGIC.len()]) {
                Ok(0) => break,
                Ok(n) => filled += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(source) => {
                    return Err(TraceError::Io {
                        offset: filled as u64,
                        source,
                    });
                }
            }
        }
        if preamble[..filled] != MAGIC[..filled] || filled == 0 {
            return Err(TraceError::BadMagic { offset: 0 });
        }
        if filled < MAGIC.len() {
            return Err(TraceError::Truncated {
                offset: filled as u64,
                what: "the magic number",
            });
        }
        self.offset = MAGIC.len() as u64;
        let mut rest = [0u8; PREAMBLE_LEN - 8];
        self.read_exact(&mut rest, "the header")?;
        let version = u16::from_le_bytes([rest[0], rest[1]]);
        if version != VERSION {
            return Err(TraceError::UnsupportedVersion {
                offset: 8,
                found: version,
                supported: VERSION,
            });
        }
        let len = u32::from_le_bytes([rest[2], rest[3], rest[4], rest[5]]);
        if len > MAX_HEADER_LEN {
            return Err(TraceError::corrupt(
                10,
                format!("header length {len} above the limit of {MAX_HEADER_LEN}"),
            ));
        }
        let mut body = vec![0u8; len as usize];
        self.read_exact(&mut body, "the header")?;
        self.header = decode_header(&body).map_err(|e| {
            TraceError::corrupt(
                PREAMBLE_LEN as u64 + e.at as u64,
                format!("header: {}", e.reason),
            )
        })?;
        Ok(())
    }

    fn read_frame(&mut self) -> Result<(), TraceError> {
        self.frame_offset = self.offset;
        let mut head = [0u8; FRAME_HEADER_LEN];
        self.read_exact(
            &mut head,
            "a frame header (or the end frame is missing: the recording did not finish)",
        )?;
        let word = |i: usize| u32::from_le_bytes([head[i], head[i + 1], head[i + 2], head[i + 3]]);
        let (kind, raw_len, records, compressed_len) = (head[0], word(1), word(5), word(9));
        let corrupt = |reason: String| TraceError::corrupt(self.frame_offset, reason);
        if kind != FRAME_DATA && kind != FRAME_END {
            return Err(corrupt(format!("unknown frame type {kind:#04x}")));
        }
        if raw_len > MAX_FRAME_RAW || compressed_len > MAX_FRAME_COMPRESSED {
            return Err(corrupt(format!(
                "frame of {raw_len} bytes ({compressed_len} compressed) above the limit of {MAX_FRAME_RAW}"
            )));
        }
        if kind == FRAME_DATA && (records == 0 || records > raw_len) {
            return Err(corrupt(format!(
                "a data frame of {raw_len} bytes cannot hold {records} records"
            )));
        }
        if kind == FRAME_END && records != 0 {
            return Err(corrupt("the end frame declares records".to_owned()));
        }
        self.compressed.resize(compressed_len as usize, 0);
        let mut compressed = std::mem::take(&mut self.compressed);
        let read = self.read_exact(&mut compressed, "a frame");
        self.compressed = compressed;
        read?;
        self.raw.resize(raw_len as usize, 0);
        let n = self
            .decompressor
            .decompress_to_buffer(&self.compressed, &mut self.raw[..])
            .map_err(|e| {
                TraceError::corrupt(
                    self.frame_offset,
                    format!("the frame does not decompress: {e}"),
                )
            })?;
        if n != raw_len as usize {
            return Err(TraceError::corrupt(
                self.frame_offset,
                format!("the frame decompresses to {n} bytes, not the {raw_len} it declares"),
            ));
        }
        self.pos = 0;
        self.frame_records = 0;
        self.frame_declared = records;
        self.decoder.reset();
        if kind == FRAME_DATA {
            self.seen.raw_bytes += u64::from(raw_len);
            self.seen.compressed_bytes += u64::from(compressed_len);
            self.seen.frames += 1;
            return Ok(());
        }
        let totals = decode_totals(&self.raw).map_err(|e| {
            TraceError::corrupt(
                self.frame_offset,
                format!("end frame: {} (byte {})", e.reason, e.at),
            )
        })?;
        self.raw.clear();
        self.check_totals(&totals)?;
        self.check_eof()?;
        self.end = Some(totals);
        Ok(())
    }

    fn check_totals(&self, end: &Totals) -> Result<(), TraceError> {
        let seen = &self.seen;
        let pairs = [
            (
                "data accesses",
                seen.accesses.to_vec(),
                end.accesses.to_vec(),
            ),
            (
                "bytes accessed",
                vec![seen.access_bytes],
                vec![end.access_bytes],
            ),
            ("events", seen.events.to_vec(), end.events.to_vec()),
            (
                "instructions",
                vec![seen.instructions],
                vec![end.instructions],
            ),
            (
                "frame bytes",
                vec![seen.raw_bytes, seen.compressed_bytes, seen.frames],
                vec![end.raw_bytes, end.compressed_bytes, end.frames],
            ),
        ];
        for (what, seen, end) in pairs {
            if seen != end {
                return Err(TraceError::corrupt(
                    self.frame_offset,
                    format!("the end frame's {what} {end:?} differ from the records' {seen:?}"),
                ));
            }
        }
        Ok(())
    }

    fn check_eof(&mut self) -> Result<(), TraceError> {
        let mut byte = [0u8; 1];
        loop {
            return match self.input.read(&mut byte) {
                Ok(0) => Ok(()),
                Ok(_) => Err(TraceError::corrupt(
                    self.offset,
                    "bytes after the end frame",
                )),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(source) => Err(TraceError::Io {
                    offset: self.offset,
                    source,
                }),
            };
        }
    }
}

/// Reads a whole trace, checking every byte, and returns its header and
/// totals (what `mtesim trace info` shows).
pub fn scan<R: Read>(input: R) -> Result<(Header, Totals), TraceError> {
    let mut reader = TraceReader::new(input)?;
    while reader.next_record()?.is_some() {}
    // next_record returns None only once the end frame was read and checked.
    match reader.end.take() {
        Some(totals) => Ok((reader.header, totals)),
        None => Err(TraceError::Truncated {
            offset: reader.offset,
            what: "the end frame",
        }),
    }
}
