//! LEB128 variable-length integers and zigzag signed deltas.
//!
//! An unsigned value is written 7 bits at a time, least significant group
//! first, the high bit of each byte saying "more follows": values below 128
//! take one byte, a full `u64` ten. A signed delta is zigzag-mapped first
//! (0, -1, 1, -2, ... become 0, 1, 2, 3, ...) so that small steps in either
//! direction stay short.
//!
//! Decoding is strict: an encoding longer than ten bytes, or whose tenth byte
//! carries bits above bit 63, is rejected rather than silently truncated, so
//! one value has one encoding and corrupted input cannot alias a valid one.

/// The longest encoding of a `u64`.
pub const MAX_LEN: usize = 10;

/// Appends `value` to `out`.
#[inline]
pub fn put(out: &mut Vec<u8>, mut value: u64) {
    while value >= 0x80 {
        out.push((value as u8) | 0x80);
        value >>= 7;
    }
    out.push(value as u8);
}

/// Appends a signed value, zigzag-mapped.
#[inline]
pub fn put_signed(out: &mut Vec<u8>, value: i64) {
    put(out, zigzag(value));
}

#[inline]
pub const fn zigzag(value: i64) -> u64 {
    ((value << 1) ^ (value >> 63)) as u64
}

#[inline]
pub const fn unzigzag(value: u64) -> i64 {
    ((value >> 1) as i64) ^ -((value & 1) as i64)
}

/// Why a varint could not be read.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum VarintError {
    /// The input ended inside the value.
    Truncated,
    /// More than ten bytes, or bits beyond 64.
    Overlong,
}

/// Reads one value from `buf` at `*pos`, advancing `*pos` past it.
#[inline]
pub fn get(buf: &[u8], pos: &mut usize) -> Result<u64, VarintError> {
    // The common case, one byte, without the loop.
    let Some(&first) = buf.get(*pos) else {
        return Err(VarintError::Truncated);
    };
    if first < 0x80 {
        *pos += 1;
        return Ok(u64::from(first));
    }
    let mut value = u64::from(first & 0x7f);
    let mut shift = 7u32;
    let mut at = *pos + 1;
    loop {
        let Some(&byte) = buf.get(at) else {
            return Err(VarintError::Truncated);
        };
        at += 1;
        if shift == 63 && byte > 1 {
            return Err(VarintError::Overlong);
        }
        value |= u64::from(byte & 0x7f) << shift;
        if byte < 0x80 {
            *pos = at;
            return Ok(value);
        }
        shift += 7;
        if shift > 63 {
            return Err(VarintError::Overlong);
        }
    }
}

/// Reads one zigzag-mapped signed value.
#[inline]
pub fn get_signed(buf: &[u8], pos: &mut usize) -> Result<i64, VarintError> {
    get(buf, pos).map(unzigzag)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_encodings() {
        let enc = |v: u64| {
            let mut out = Vec::new();
            put(&mut out, v);
            out
        };
        assert_eq!(enc(0), [0]);
        assert_eq!(enc(127), [0x7f]);
        assert_eq!(enc(128), [0x80, 0x01]);
        assert_eq!(enc(300), [0xac, 0x02]);
        assert_eq!(enc(u64::MAX).len(), MAX_LEN);
        assert_eq!(zigzag(0), 0);
        assert_eq!(zigzag(-1), 1);
        assert_eq!(zigzag(1), 2);
        assert_eq!(zigzag(i64::MIN), u64::MAX);
        assert_eq!(unzigzag(u64::MAX), i64::MIN);
    }

    #[test]
    fn round_trips_at_the_edges() {
        for v in [0, 1, 127, 128, 16383, 16384, u64::MAX >> 1, u64::MAX] {
            let mut out = Vec::new();
            put(&mut out, v);
            let mut pos = 0;
            assert_eq!(get(&out, &mut pos), Ok(v));
            assert_eq!(pos, out.len());
        }
        for v in [0, -1, 1, i64::MIN, i64::MAX] {
            let mut out = Vec::new();
            put_signed(&mut out, v);
            let mut pos = 0;
            assert_eq!(get_signed(&out, &mut pos), Ok(v));
        }
    }

    #[test]
    fn rejects_truncated_and_overlong() {
        let mut pos = 0;
        assert_eq!(get(&[0x80], &mut pos), Err(VarintError::Truncated));
        assert_eq!(get(&[], &mut pos), Err(VarintError::Truncated));
        // Eleven bytes.
        let long = [0x80u8; 10].iter().copied().chain([0]).collect::<Vec<_>>();
        assert_eq!(get(&long, &mut pos), Err(VarintError::Overlong));
        // Ten bytes whose last carries bit 64.
        let mut wide = vec![0xffu8; 9];
        wide.push(0x02);
        assert_eq!(get(&wide, &mut pos), Err(VarintError::Overlong));
        assert_eq!(pos, 0, "a failed read does not move");
    }
}
