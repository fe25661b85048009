//! The file layout around the records (`docs/trace-format.md`): magic,
//! version, header, frames, end frame. Shared by the writer and the reader
//! so that the two cannot disagree on a constant.

use crate::record::{ExitStatus, Header, Provenance, Totals};
use crate::varint::{self, VarintError};

/// The first eight bytes of every trace.
pub const MAGIC: [u8; 8] = *b"MTESIMTR";
/// The format version this build writes and reads.
pub const VERSION: u16 = 1;
/// Bytes before the header body: magic, version, header length.
pub const PREAMBLE_LEN: usize = 8 + 2 + 4;
/// The largest header body a reader accepts (a command line of a megabyte
/// is already absurd; the bound keeps a corrupt length from allocating).
pub const MAX_HEADER_LEN: u32 = 1 << 20;

/// A frame of records.
pub const FRAME_DATA: u8 = b'D';
/// The last frame: the totals.
pub const FRAME_END: u8 = b'E';
/// Bytes of a frame header: type, raw length, record count, compressed length.
pub const FRAME_HEADER_LEN: usize = 1 + 4 + 4 + 4;
/// The writer closes a frame once its records reach this many bytes.
pub const FRAME_TARGET: usize = 256 << 10;
/// The largest uncompressed frame a reader accepts: the target plus the
/// longest record, rounded up generously.
pub const MAX_FRAME_RAW: u32 = 1 << 20;
/// The largest compressed frame a reader accepts (zstd's bound for
/// `MAX_FRAME_RAW` is a little above it).
pub const MAX_FRAME_COMPRESSED: u32 = MAX_FRAME_RAW + (64 << 10);

fn put_str(out: &mut Vec<u8>, s: &str) {
    varint::put(out, s.len() as u64);
    out.extend_from_slice(s.as_bytes());
}

/// The header body.
pub fn encode_header(header: &Header) -> Vec<u8> {
    let mut out = Vec::new();
    varint::put(&mut out, header.command.len() as u64);
    for arg in &header.command {
        put_str(&mut out, arg);
    }
    let Provenance {
        recorder,
        valgrind,
        host,
        date,
    } = &header.provenance;
    for field in [recorder, valgrind, host, date] {
        put_str(&mut out, field);
    }
    out
}

/// Why a header or totals body is malformed, relative to its start.
#[derive(Debug, PartialEq, Eq)]
pub struct BodyError {
    pub at: usize,
    pub reason: &'static str,
}

fn body_err(at: usize, e: VarintError) -> BodyError {
    BodyError {
        at,
        reason: match e {
            VarintError::Truncated => "a value runs past the end",
            VarintError::Overlong => "over-long variable-length integer",
        },
    }
}

fn get(buf: &[u8], pos: &mut usize) -> Result<u64, BodyError> {
    let at = *pos;
    varint::get(buf, pos).map_err(|e| body_err(at, e))
}

fn get_str(buf: &[u8], pos: &mut usize) -> Result<String, BodyError> {
    let at = *pos;
    let len = get(buf, pos)?;
    let end = usize::try_from(len)
        .ok()
        .and_then(|len| pos.checked_add(len))
        .filter(|&end| end <= buf.len())
        .ok_or(BodyError {
            at,
            reason: "a string runs past the end",
        })?;
    let s = std::str::from_utf8(&buf[*pos..end]).map_err(|_| BodyError {
        at: *pos,
        reason: "a string is not UTF-8",
    })?;
    *pos = end;
    Ok(s.to_owned())
}

pub fn decode_header(buf: &[u8]) -> Result<Header, BodyError> {
    let mut pos = 0;
    let argc = get(buf, &mut pos)?;
    // Each argument takes at least one byte: a count beyond the body is a lie
    // that must not size an allocation.
    if argc > buf.len() as u64 {
        return Err(BodyError {
            at: 0,
            reason: "more arguments than bytes",
        });
    }
    let mut command = Vec::with_capacity(argc as usize);
    for _ in 0..argc {
        command.push(get_str(buf, &mut pos)?);
    }
    let provenance = Provenance {
        recorder: get_str(buf, &mut pos)?,
        valgrind: get_str(buf, &mut pos)?,
        host: get_str(buf, &mut pos)?,
        date: get_str(buf, &mut pos)?,
    };
    if pos != buf.len() {
        return Err(BodyError {
            at: pos,
            reason: "bytes after the last header field",
        });
    }
    Ok(Header {
        command,
        provenance,
    })
}

/// The end frame's body.
pub fn encode_totals(totals: &Totals) -> Vec<u8> {
    let mut out = Vec::new();
    let Totals {
        accesses,
        access_bytes,
        events,
        instructions,
        filtered_accesses,
        exit,
        raw_bytes,
        compressed_bytes,
        frames,
    } = totals;
    for v in accesses.iter().chain([access_bytes]).chain(events) {
        varint::put(&mut out, *v);
    }
    for v in [instructions, filtered_accesses] {
        varint::put(&mut out, *v);
    }
    let (tag, code) = match *exit {
        ExitStatus::Unknown => (0, 0),
        ExitStatus::Exited(code) => (1, code),
        ExitStatus::Signalled(signal) => (2, signal),
    };
    varint::put(&mut out, tag);
    varint::put_signed(&mut out, i64::from(code));
    for v in [raw_bytes, compressed_bytes, frames] {
        varint::put(&mut out, *v);
    }
    out
}

pub fn decode_totals(buf: &[u8]) -> Result<Totals, BodyError> {
    let mut pos = 0;
    let mut totals = Totals::default();
    for slot in totals.accesses.iter_mut() {
        *slot = get(buf, &mut pos)?;
    }
    totals.access_bytes = get(buf, &mut pos)?;
    for slot in totals.events.iter_mut() {
        *slot = get(buf, &mut pos)?;
    }
    totals.instructions = get(buf, &mut pos)?;
    totals.filtered_accesses = get(buf, &mut pos)?;
    let at = pos;
    let tag = get(buf, &mut pos)?;
    let code_at = pos;
    let code = i32::try_from(varint::unzigzag(get(buf, &mut pos)?)).map_err(|_| BodyError {
        at: code_at,
        reason: "exit code above 32 bits",
    })?;
    totals.exit = match tag {
        0 => ExitStatus::Unknown,
        1 => ExitStatus::Exited(code),
        2 => ExitStatus::Signalled(code),
        _ => {
            return Err(BodyError {
                at,
                reason: "unknown kind of exit status",
            });
        }
    };
    totals.raw_bytes = get(buf, &mut pos)?;
    totals.compressed_bytes = get(buf, &mut pos)?;
    totals.frames = get(buf, &mut pos)?;
    if pos != buf.len() {
        return Err(BodyError {
            at: pos,
            reason: "bytes after the last total",
        });
    }
    Ok(totals)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_and_totals_round_trip() {
        let header = Header {
            command: vec!["sort".into(), "-n".into(), "ünï".into()],
            provenance: Provenance {
                recorder: "mtesim 0.1.0".into(),
                valgrind: "valgrind-3.19.0".into(),
                host: "x86_64 Linux".into(),
                date: "2026-12-06T17:00:00Z".into(),
            },
        };
        assert_eq!(decode_header(&encode_header(&header)), Ok(header));
        let totals = Totals {
            accesses: [1, 2, 3],
            access_bytes: 48,
            events: [1, 2, 3, 4, 5, 6, 7, 8, 9, 10],
            instructions: 1 << 40,
            filtered_accesses: 77,
            exit: ExitStatus::Signalled(11),
            raw_bytes: 9,
            compressed_bytes: 8,
            frames: 1,
        };
        assert_eq!(decode_totals(&encode_totals(&totals)), Ok(totals));
    }

    #[test]
    fn lying_lengths_are_errors() {
        // 2^60 arguments in a 10-byte body.
        let mut body = Vec::new();
        varint::put(&mut body, 1 << 60);
        assert!(decode_header(&body).is_err());
        // A string longer than the body.
        let body = [1, 50, b'a'];
        assert_eq!(
            decode_header(&body).unwrap_err().reason,
            "a string runs past the end"
        );
    }
}
