//! How a page's allocation tags are laid out in tag storage.
//!
//! Two 4-bit tags per byte; the granule at the LOWER address goes in the LOW
//! nibble (bits 3:0), its neighbour in the high nibble (bits 7:4). A page's
//! tags are `PageGeometry::tag_bytes_per_page()` consecutive bytes, granule
//! `2k` and `2k + 1` in byte `k`.
//!
//! Sources: QEMU `allocation_tag_mem()` ("the byte at
//! `addr >> (LOG2_TAG_GRANULE + 1)` contains two tags, with the tag at \[3:0\]
//! for the lower addr and the tag at \[7:4\] for the higher addr"); the Arm ARM
//! LDGM/STGM register layout (tag of granule `i` in bits `4i+3:4i`), which
//! Linux's `mte_save_page_tags()` stores little-endian, giving the same byte
//! format for saved tags.
//!
//! Pure functions over caller-owned buffers; nothing here allocates except
//! the `*_page` conveniences that return a `Vec`.

use thiserror::Error;

use crate::granule::{Granule, PageGeometry, TAGS_PER_BYTE};
use crate::tag::{TAG_BITS, Tag};

/// Errors of tag packing: a buffer of the wrong size.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
pub enum PackError {
    #[error("{granule:?} lies past the {tag_bytes} tag bytes given")]
    GranuleOutOfRange { granule: Granule, tag_bytes: usize },
    #[error("{tags} tags do not pack into {bytes} bytes (two tags per byte)")]
    LengthMismatch { tags: usize, bytes: usize },
    #[error("a page of this geometry has {expected} tag bytes, not {got}")]
    NotAPage { expected: usize, got: usize },
}

/// Which half of a tag byte holds a granule's tag.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Nibble {
    /// Bits 3:0: the even granule, the lower address of the pair.
    Low,
    /// Bits 7:4: the odd granule.
    High,
}

impl Nibble {
    const fn shift(self) -> u32 {
        match self {
            Nibble::Low => 0,
            Nibble::High => TAG_BITS,
        }
    }
}

/// Where a granule's tag sits among its page's tag bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct TagLocation {
    /// Byte offset from the first tag byte of the page.
    pub byte: u64,
    pub nibble: Nibble,
}

impl Granule {
    /// The byte and nibble holding this granule's tag.
    pub const fn tag_location(self) -> TagLocation {
        TagLocation {
            byte: self.index() / TAGS_PER_BYTE,
            nibble: if self.index().is_multiple_of(TAGS_PER_BYTE) {
                Nibble::Low
            } else {
                Nibble::High
            },
        }
    }
}

/// The tag in one nibble of a tag byte.
pub const fn nibble_tag(byte: u8, nibble: Nibble) -> Tag {
    Tag::from_low_bits((byte >> nibble.shift()) as u64)
}

/// `byte` with one nibble replaced by `tag`, the other kept.
pub const fn with_nibble(byte: u8, nibble: Nibble, tag: Tag) -> u8 {
    let shift = nibble.shift();
    byte & !(0xf << shift) | tag.value() << shift
}

/// A tag byte whose two granules both hold `tag` (`tag * 0x11`): how a run of
/// equally tagged granules looks in storage (QEMU ST2G/STZGM `tag | tag << 4`).
pub const fn tag_pair_byte(tag: Tag) -> u8 {
    tag.value() | tag.value() << TAG_BITS
}

fn byte_index(tag_bytes_len: usize, granule: Granule) -> Result<(usize, Nibble), PackError> {
    let loc = granule.tag_location();
    usize::try_from(loc.byte)
        .ok()
        .filter(|&b| b < tag_bytes_len)
        .map(|b| (b, loc.nibble))
        .ok_or(PackError::GranuleOutOfRange {
            granule,
            tag_bytes: tag_bytes_len,
        })
}

/// The tag of `granule` among a page's tag bytes.
pub fn read_tag(tag_bytes: &[u8], granule: Granule) -> Result<Tag, PackError> {
    let (b, nibble) = byte_index(tag_bytes.len(), granule)?;
    Ok(nibble_tag(tag_bytes[b], nibble))
}

/// Sets the tag of `granule` among a page's tag bytes, leaving its neighbour.
pub fn write_tag(tag_bytes: &mut [u8], granule: Granule, tag: Tag) -> Result<(), PackError> {
    let (b, nibble) = byte_index(tag_bytes.len(), granule)?;
    tag_bytes[b] = with_nibble(tag_bytes[b], nibble, tag);
    Ok(())
}

/// Packs `tags` (one per granule, lowest address first) into `out`, which
/// must hold exactly half as many bytes.
pub fn pack_tags(tags: &[Tag], out: &mut [u8]) -> Result<(), PackError> {
    if tags.len() != out.len() * TAGS_PER_BYTE as usize {
        return Err(PackError::LengthMismatch {
            tags: tags.len(),
            bytes: out.len(),
        });
    }
    for (byte, pair) in out.iter_mut().zip(tags.chunks_exact(2)) {
        *byte = with_nibble(with_nibble(0, Nibble::Low, pair[0]), Nibble::High, pair[1]);
    }
    Ok(())
}

/// Unpacks `bytes` into `out`, which must hold exactly twice as many tags.
pub fn unpack_tags(bytes: &[u8], out: &mut [Tag]) -> Result<(), PackError> {
    if out.len() != bytes.len() * TAGS_PER_BYTE as usize {
        return Err(PackError::LengthMismatch {
            tags: out.len(),
            bytes: bytes.len(),
        });
    }
    for (&byte, pair) in bytes.iter().zip(out.chunks_exact_mut(2)) {
        pair[0] = nibble_tag(byte, Nibble::Low);
        pair[1] = nibble_tag(byte, Nibble::High);
    }
    Ok(())
}

/// The tag bytes of a whole page whose granules hold `tags`.
pub fn pack_page(geometry: PageGeometry, tags: &[Tag]) -> Result<Vec<u8>, PackError> {
    let mut out = vec![0; page_tag_bytes(geometry)];
    pack_tags(tags, &mut out)?;
    Ok(out)
}

/// The tags of a whole page, lowest granule first, from its tag bytes.
pub fn unpack_page(geometry: PageGeometry, tag_bytes: &[u8]) -> Result<Vec<Tag>, PackError> {
    let expected = page_tag_bytes(geometry);
    if tag_bytes.len() != expected {
        return Err(PackError::NotAPage {
            expected,
            got: tag_bytes.len(),
        });
    }
    let mut out = vec![Tag::ZERO; expected * TAGS_PER_BYTE as usize];
    unpack_tags(tag_bytes, &mut out)?;
    Ok(out)
}

fn page_tag_bytes(geometry: PageGeometry) -> usize {
    usize::try_from(geometry.tag_bytes_per_page())
        .expect("BUG: a page's tag bytes do not fit in memory")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::t;
    use proptest::prelude::*;

    fn g4k() -> PageGeometry {
        PageGeometry::from_page_size(4096).unwrap()
    }

    #[test]
    fn lower_granule_in_low_nibble() {
        let g = g4k();
        // Granule 0 -> byte 0 low; granule 1 -> byte 0 high; granule 255 ->
        // byte 127 high (128 tag bytes per 4 KiB page).
        assert_eq!(
            g.granule(0).unwrap().tag_location(),
            TagLocation {
                byte: 0,
                nibble: Nibble::Low
            }
        );
        assert_eq!(
            g.granule(1).unwrap().tag_location(),
            TagLocation {
                byte: 0,
                nibble: Nibble::High
            }
        );
        assert_eq!(
            g.granule(0xab).unwrap().tag_location(),
            TagLocation {
                byte: 0x55,
                nibble: Nibble::High
            }
        );
        assert_eq!(
            g.granule(255).unwrap().tag_location(),
            TagLocation {
                byte: 127,
                nibble: Nibble::High
            }
        );
    }

    #[test]
    fn nibble_get_and_set_exact_bytes() {
        assert_eq!(nibble_tag(0xa5, Nibble::Low), t(5));
        assert_eq!(nibble_tag(0xa5, Nibble::High), t(10));
        assert_eq!(with_nibble(0xa5, Nibble::Low, t(3)), 0xa3);
        assert_eq!(with_nibble(0xa5, Nibble::High, t(0)), 0x05);
        assert_eq!(tag_pair_byte(t(7)), 0x77);
        assert_eq!(tag_pair_byte(Tag::ZERO), 0x00);
    }

    #[test]
    fn read_and_write_in_a_page_of_tag_bytes() {
        let g = g4k();
        let mut bytes = [0u8; 128];
        write_tag(&mut bytes, g.granule(0).unwrap(), t(3)).unwrap();
        write_tag(&mut bytes, g.granule(1).unwrap(), t(0xc)).unwrap();
        write_tag(&mut bytes, g.granule(4).unwrap(), t(9)).unwrap();
        write_tag(&mut bytes, g.granule(255).unwrap(), t(15)).unwrap();
        assert_eq!(bytes[0], 0xc3);
        assert_eq!(bytes[1], 0x00);
        assert_eq!(bytes[2], 0x09);
        assert_eq!(bytes[127], 0xf0);
        assert_eq!(read_tag(&bytes, g.granule(1).unwrap()), Ok(t(0xc)));
        assert_eq!(read_tag(&bytes, g.granule(5).unwrap()), Ok(Tag::ZERO));
        // A 16 KiB page's granule 256 does not fit 128 bytes.
        let far = PageGeometry::new(14).unwrap().granule(256).unwrap();
        assert_eq!(
            read_tag(&bytes, far),
            Err(PackError::GranuleOutOfRange {
                granule: far,
                tag_bytes: 128
            })
        );
        assert!(write_tag(&mut bytes, far, t(1)).is_err());
    }

    #[test]
    fn pack_exact_values() {
        let tags = [t(1), t(2), t(0xf), t(0), t(4), t(4)];
        let mut out = [0xffu8; 3];
        pack_tags(&tags, &mut out).unwrap();
        assert_eq!(out, [0x21, 0x0f, 0x44]);
        let mut back = [Tag::ZERO; 6];
        unpack_tags(&out, &mut back).unwrap();
        assert_eq!(back, tags);
        assert_eq!(
            pack_tags(&tags, &mut [0u8; 2]),
            Err(PackError::LengthMismatch { tags: 6, bytes: 2 })
        );
        assert_eq!(
            unpack_tags(&out, &mut [Tag::ZERO; 5]),
            Err(PackError::LengthMismatch { tags: 5, bytes: 3 })
        );
    }

    #[test]
    fn pack_a_whole_page() {
        let g = g4k();
        // Granule i gets tag i mod 16: byte k holds tags 2k and 2k+1, so the
        // bytes repeat 0x10, 0x32, 0x54, ..., 0xfe.
        let tags: Vec<Tag> = (0..256u64).map(Tag::from_low_bits).collect();
        let bytes = pack_page(g, &tags).unwrap();
        assert_eq!(bytes.len(), 128);
        assert_eq!(
            &bytes[..8],
            &[0x10, 0x32, 0x54, 0x76, 0x98, 0xba, 0xdc, 0xfe]
        );
        assert_eq!(bytes[8], 0x10);
        assert_eq!(unpack_page(g, &bytes).unwrap(), tags);
        assert_eq!(
            unpack_page(g, &bytes[..64]),
            Err(PackError::NotAPage {
                expected: 128,
                got: 64
            })
        );
        assert!(pack_page(g, &tags[..255]).is_err());
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]

        #[test]
        fn pack_unpack_roundtrip(raw in proptest::collection::vec(0u8..16, 256)) {
            let g = g4k();
            let tags: Vec<Tag> = raw.iter().map(|&v| t(v)).collect();
            let bytes = pack_page(g, &tags).unwrap();
            prop_assert_eq!(unpack_page(g, &bytes).unwrap(), tags.clone());
            for granule in g.granules() {
                prop_assert_eq!(
                    read_tag(&bytes, granule).unwrap(),
                    tags[granule.index() as usize]
                );
            }
        }

        #[test]
        fn write_touches_one_nibble(raw in proptest::collection::vec(any::<u8>(), 128),
                                    index in 0u64..256, v in 0u8..16) {
            let g = g4k();
            let mut bytes = raw.clone();
            let granule = g.granule(index).unwrap();
            write_tag(&mut bytes, granule, t(v)).unwrap();
            for other in g.granules() {
                let expect = if other == granule { t(v) } else { read_tag(&raw, other).unwrap() };
                prop_assert_eq!(read_tag(&bytes, other).unwrap(), expect);
            }
        }
    }
}
