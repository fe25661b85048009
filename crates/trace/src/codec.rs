//! Records to bytes and back, inside one frame (`docs/trace-format.md`,
//! "Records").
//!
//! Every record starts with one tag byte. Its low two bits are the access
//! kind (0 load, 1 store, 2 modify) or 3 for any other record:
//!
//! ```text
//!   access:  bits 7-5 slot | bits 4-2 size code | bits 1-0 kind (0-2)
//!            [size varint, if size code 7] delta (zigzag varint)
//!   other:   bits 7-2 record type            | bits 1-0 = 3
//!            fields as varints
//! ```
//!
//! Size codes 0 to 6 mean 1, 2, 4, ... 64 bytes; code 7 carries the size.
//!
//! **Address slots.** Programs interleave a few streams of nearby addresses
//! (the stack, one or two heap objects, a global table). The codec keeps
//! eight *slots*, each the last address of one stream; an access names the
//! slot whose address is nearest and stores only its distance from it, which
//! usually fits in one or two bytes. The encoder picks the nearest slot (the
//! lowest-numbered on a tie), and both sides then move that slot to the new
//! address, so the decoder follows the encoder exactly without any choice of
//! its own. Slots start at 0 in every frame, so frames decode independently.

use crate::record::{Access, AccessKind, Event, Record};
use crate::varint::{self, VarintError};

/// Address slots per frame.
pub const SLOTS: usize = 8;

const OTHER: u8 = 3;
const TYPE_INSTRUCTIONS: u8 = 0;
/// Event types are their [`Event::kind_index`] plus this.
const TYPE_FIRST_EVENT: u8 = 1;
const SIZE_EXPLICIT: u8 = 7;

/// The size code of `size`: its log2 if it is a power of two up to 64.
#[inline]
fn size_code(size: u32) -> u8 {
    if size.is_power_of_two() && size <= 64 {
        size.trailing_zeros() as u8
    } else {
        SIZE_EXPLICIT
    }
}

/// Encoder state of one frame.
#[derive(Clone, Debug, Default)]
pub struct Encoder {
    slots: [u64; SLOTS],
}

impl Encoder {
    /// Starts a new frame.
    pub fn reset(&mut self) {
        self.slots = [0; SLOTS];
    }

    /// Appends `record` to `out`.
    pub fn encode(&mut self, record: &Record, out: &mut Vec<u8>) {
        match *record {
            Record::Access(access) => self.encode_access(access, out),
            Record::Instructions(n) => {
                out.push((TYPE_INSTRUCTIONS << 2) | OTHER);
                varint::put(out, n);
            }
            Record::Event(event) => encode_event(&event, out),
        }
    }

    #[inline]
    fn encode_access(&mut self, access: Access, out: &mut Vec<u8>) {
        let mut best = 0;
        let mut best_distance = u64::MAX;
        for (i, &slot) in self.slots.iter().enumerate() {
            let distance = (access.addr.wrapping_sub(slot) as i64).unsigned_abs();
            if distance < best_distance {
                best = i;
                best_distance = distance;
            }
        }
        let delta = access.addr.wrapping_sub(self.slots[best]) as i64;
        self.slots[best] = access.addr;
        let code = size_code(access.size);
        out.push(((best as u8) << 5) | (code << 2) | access.kind as u8);
        if code == SIZE_EXPLICIT {
            varint::put(out, u64::from(access.size));
        }
        varint::put_signed(out, delta);
    }
}

fn encode_event(event: &Event, out: &mut Vec<u8>) {
    out.push(((TYPE_FIRST_EVENT + event.kind_index() as u8) << 2) | OTHER);
    let mut put = |v: u64| varint::put(out, v);
    match *event {
        Event::Malloc { size, ptr } => {
            put(size);
            put(ptr);
        }
        Event::Calloc { nmemb, size, ptr } => {
            put(nmemb);
            put(size);
            put(ptr);
        }
        Event::Realloc { old, size, ptr } => {
            put(old);
            put(size);
            put(ptr);
        }
        Event::Free { ptr } => put(ptr),
        Event::PosixMemalign { align, size, ptr }
        | Event::AlignedAlloc { align, size, ptr }
        | Event::Memalign { align, size, ptr } => {
            put(align);
            put(size);
            put(ptr);
        }
        Event::Mmap {
            addr,
            len,
            prot,
            flags,
            fd,
            offset,
            result,
        } => {
            put(addr);
            put(len);
            put(u64::from(prot));
            put(u64::from(flags));
            put(varint::zigzag(i64::from(fd)));
            put(offset);
            put(result);
        }
        Event::Munmap { addr, len, result } => {
            put(addr);
            put(len);
            put(varint::zigzag(i64::from(result)));
        }
        Event::Brk { old_end, new_end } => {
            put(old_end);
            put(new_end);
        }
    }
}

/// Why a record could not be decoded; the reader adds where.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DecodeError {
    /// The frame's data ends inside a record.
    Truncated,
    /// A value that no encoder writes.
    Invalid(&'static str),
}

impl From<VarintError> for DecodeError {
    fn from(e: VarintError) -> Self {
        match e {
            VarintError::Truncated => DecodeError::Truncated,
            VarintError::Overlong => DecodeError::Invalid("over-long variable-length integer"),
        }
    }
}

/// Decoder state of one frame: the mirror of [`Encoder`].
#[derive(Clone, Debug, Default)]
pub struct Decoder {
    slots: [u64; SLOTS],
}

impl Decoder {
    pub fn reset(&mut self) {
        self.slots = [0; SLOTS];
    }

    /// Decodes the record at `*pos` of `buf`, advancing `*pos` past it. On
    /// error `*pos` is where the record started.
    #[inline]
    pub fn decode(&mut self, buf: &[u8], pos: &mut usize) -> Result<Record, DecodeError> {
        let start = *pos;
        let result = self.decode_at(buf, pos);
        if result.is_err() {
            *pos = start;
        }
        result
    }

    #[inline]
    fn decode_at(&mut self, buf: &[u8], pos: &mut usize) -> Result<Record, DecodeError> {
        let Some(&tag) = buf.get(*pos) else {
            return Err(DecodeError::Truncated);
        };
        *pos += 1;
        let kind = match tag & 3 {
            0 => AccessKind::Load,
            1 => AccessKind::Store,
            2 => AccessKind::Modify,
            _ => return decode_other(tag >> 2, buf, pos),
        };
        let code = (tag >> 2) & 7;
        let size = if code == SIZE_EXPLICIT {
            let size = varint::get(buf, pos)?;
            match u32::try_from(size) {
                Ok(size) if size > 0 => size,
                _ => return Err(DecodeError::Invalid("access size 0 or above 4 GiB")),
            }
        } else {
            1 << code
        };
        let delta = varint::get_signed(buf, pos)?;
        let slot = &mut self.slots[usize::from(tag >> 5)];
        let addr = slot.wrapping_add(delta as u64);
        *slot = addr;
        Ok(Record::Access(Access { kind, addr, size }))
    }
}

fn decode_other(kind: u8, buf: &[u8], pos: &mut usize) -> Result<Record, DecodeError> {
    let mut get = || varint::get(buf, pos);
    if kind == TYPE_INSTRUCTIONS {
        return Ok(Record::Instructions(get()?));
    }
    let narrow =
        |v: u64| u32::try_from(v).map_err(|_| DecodeError::Invalid("flag word above 32 bits"));
    let small_signed = |v: u64| {
        i32::try_from(varint::unzigzag(v)).map_err(|_| DecodeError::Invalid("value above 32 bits"))
    };
    let event = match kind.wrapping_sub(TYPE_FIRST_EVENT) {
        0 => Event::Malloc {
            size: get()?,
            ptr: get()?,
        },
        1 => Event::Calloc {
            nmemb: get()?,
            size: get()?,
            ptr: get()?,
        },
        2 => Event::Realloc {
            old: get()?,
            size: get()?,
            ptr: get()?,
        },
        3 => Event::Free { ptr: get()? },
        4 => Event::PosixMemalign {
            align: get()?,
            size: get()?,
            ptr: get()?,
        },
        5 => Event::AlignedAlloc {
            align: get()?,
            size: get()?,
            ptr: get()?,
        },
        6 => Event::Memalign {
            align: get()?,
            size: get()?,
            ptr: get()?,
        },
        7 => Event::Mmap {
            addr: get()?,
            len: get()?,
            prot: narrow(get()?)?,
            flags: narrow(get()?)?,
            fd: small_signed(get()?)?,
            offset: get()?,
            result: get()?,
        },
        8 => Event::Munmap {
            addr: get()?,
            len: get()?,
            result: small_signed(get()?)?,
        },
        9 => Event::Brk {
            old_end: get()?,
            new_end: get()?,
        },
        _ => return Err(DecodeError::Invalid("unknown record type")),
    };
    Ok(Record::Event(event))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn round_trip(records: &[Record]) -> Vec<u8> {
        let mut enc = Encoder::default();
        let mut out = Vec::new();
        for r in records {
            enc.encode(r, &mut out);
        }
        let mut dec = Decoder::default();
        let mut pos = 0;
        for r in records {
            assert_eq!(dec.decode(&out, &mut pos).as_ref(), Ok(r));
        }
        assert_eq!(pos, out.len());
        out
    }

    #[test]
    fn nearby_accesses_take_two_bytes() {
        let access = |kind, addr, size| Record::Access(Access { kind, addr, size });
        let stack = 0x001f_ff00_0778;
        let heap = 0x4a5_1040;
        let records = [
            access(AccessKind::Store, stack, 8),
            access(AccessKind::Load, heap, 4),
            access(AccessKind::Store, stack - 8, 8),
            access(AccessKind::Load, heap + 4, 4),
            access(AccessKind::Modify, stack - 16, 8),
            access(AccessKind::Load, heap + 8, 4),
        ];
        let bytes = round_trip(&records);
        // The first two move a slot from 0 (five or six bytes of delta);
        // the other four are a tag byte and a one-byte delta.
        let first_two = {
            let mut enc = Encoder::default();
            let mut out = Vec::new();
            enc.encode(&records[0], &mut out);
            enc.encode(&records[1], &mut out);
            out.len()
        };
        assert_eq!(bytes.len() - first_two, 4 * 2);
    }

    #[test]
    fn odd_sizes_and_every_event_round_trip() {
        round_trip(&[
            Record::Access(Access {
                kind: AccessKind::Load,
                addr: u64::MAX,
                size: 10,
            }),
            Record::Access(Access {
                kind: AccessKind::Store,
                addr: 0,
                size: u32::MAX,
            }),
            Record::Instructions(123_456_789),
            Record::Event(Event::Malloc {
                size: 24,
                ptr: 0x4a5_1040,
            }),
            Record::Event(Event::Calloc {
                nmemb: 3,
                size: 8,
                ptr: 0,
            }),
            Record::Event(Event::Realloc {
                old: 1,
                size: 2,
                ptr: 3,
            }),
            Record::Event(Event::Free { ptr: 0x4a5_1040 }),
            Record::Event(Event::PosixMemalign {
                align: 64,
                size: 100,
                ptr: 0x1000,
            }),
            Record::Event(Event::AlignedAlloc {
                align: 16,
                size: 32,
                ptr: 0x2000,
            }),
            Record::Event(Event::Memalign {
                align: 4096,
                size: 1,
                ptr: 0x3000,
            }),
            Record::Event(Event::Mmap {
                addr: 0,
                len: 1 << 20,
                prot: 3,
                flags: 0x22,
                fd: -1,
                offset: 0,
                result: u64::MAX,
            }),
            Record::Event(Event::Munmap {
                addr: 0x7000,
                len: 4096,
                result: -1,
            }),
            Record::Event(Event::Brk {
                old_end: 0x5000,
                new_end: 0x26000,
            }),
        ]);
    }

    #[test]
    fn bad_records_are_errors_and_do_not_move() {
        let mut dec = Decoder::default();
        let mut pos = 0;
        // An unknown record type.
        assert_eq!(
            dec.decode(&[(60 << 2) | OTHER], &mut pos),
            Err(DecodeError::Invalid("unknown record type"))
        );
        // An access whose delta is missing.
        assert_eq!(dec.decode(&[0], &mut pos), Err(DecodeError::Truncated));
        // An explicit size of 0.
        assert_eq!(
            dec.decode(&[SIZE_EXPLICIT << 2, 0, 0], &mut pos),
            Err(DecodeError::Invalid("access size 0 or above 4 GiB"))
        );
        assert_eq!(pos, 0);
    }
}
