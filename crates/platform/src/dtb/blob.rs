//! The structural check every blob passes before the `fdt` crate reads it.
//!
//! `fdt` 0.1.5 trusts its input: on a malformed blob it indexes out of bounds,
//! unwraps, asserts, or overflows a fixed 64-entry parent stack, i.e. it
//! panics. Bad user input must never panic, so this module walks the whole
//! blob once by the rules of the Devicetree Specification (v0.4, chapter 5,
//! "Flattened Devicetree (DTB) Format") and hands `fdt` only blobs it can
//! read:
//!
//! - header: magic, `totalsize` within the file, version 17 (the first with
//!   `size_dt_struct`, which `fdt` relies on), each block inside the blob,
//!   the structure block 4-byte aligned, the memory reservation map
//!   terminated;
//! - structure block: exactly one root node with an empty name, tokens
//!   `FDT_BEGIN_NODE name`, `FDT_PROP len nameoff value`, `FDT_END_NODE`,
//!   `FDT_NOP`, `FDT_END` and nothing else; names and values inside the
//!   block, property names NUL-terminated inside the strings block, all
//!   names UTF-8; properties before subnodes (§5.4.2); nesting at most
//!   [`MAX_DEPTH`] deep; `FDT_END` last.
//!
//! `FDT_NOP` is legal anywhere between tokens (libfdt's `fdt_nop_property()`
//! leaves them behind), but `fdt` 0.1.5 stops at, or asserts on, a NOP among
//! properties or subnodes. A blob with NOPs is therefore rebuilt without
//! them (header, an empty reservation map, the structure block, the strings
//! block). Known shortcut: the rebuilt blob drops the memory reservation map,
//! which nothing here reads (`/memreserve/` entries stay DRAM in Linux, only
//! allocated early).

use std::borrow::Cow;
use thiserror::Error;

/// The first four bytes of every flattened device tree, big-endian.
pub const FDT_MAGIC: u32 = 0xd00d_feed;

/// Deepest node nesting accepted (the root is depth 1). `fdt` keeps parents
/// in a 64-entry array and recurses once per level.
pub const MAX_DEPTH: usize = 32;

const HEADER_LEN: usize = 40;
const VERSION: u32 = 17;
const FDT_BEGIN_NODE: u32 = 1;
const FDT_END_NODE: u32 = 2;
const FDT_PROP: u32 = 3;
const FDT_NOP: u32 = 4;
const FDT_END: u32 = 9;

/// What is wrong with the blob's structure.
#[derive(Clone, Debug, PartialEq, Eq, Error)]
pub enum BlobError {
    #[error("malformed device tree: {len} bytes, shorter than the {HEADER_LEN}-byte header")]
    TooShort { len: usize },
    #[error("malformed device tree: magic {found:#010x}, expected {FDT_MAGIC:#010x}")]
    Magic { found: u32 },
    #[error("malformed device tree: the header says {totalsize} bytes, the file has {len}")]
    Truncated { totalsize: u32, len: usize },
    #[error(
        "device tree version {version} (compatible back to {last_comp}) is not supported: version {VERSION} is"
    )]
    Version { version: u32, last_comp: u32 },
    #[error("malformed device tree: the {block} at {offset:#x} (+{size:#x}) {problem}")]
    Block {
        block: &'static str,
        offset: u32,
        size: u32,
        problem: &'static str,
    },
    #[error(
        "malformed device tree: the memory reservation map at {offset:#x} has no terminating entry"
    )]
    Reservations { offset: u32 },
    #[error("malformed device tree: structure block offset {offset:#x}: {problem}")]
    Struct {
        offset: usize,
        problem: StructProblem,
    },
}

/// A rule of the structure block that the blob breaks.
#[derive(Clone, Debug, PartialEq, Eq, Error)]
pub enum StructProblem {
    #[error("ends before FDT_END")]
    UnexpectedEnd,
    #[error("unknown token {0:#x}")]
    UnknownToken(u32),
    #[error("node name is not NUL-terminated inside the block")]
    NameNotTerminated,
    #[error("node name is not UTF-8")]
    NameNotUtf8,
    #[error("the root node has the name {0:?}, expected an empty name")]
    RootName(String),
    #[error("a second root node")]
    SecondRoot,
    #[error("property outside any node")]
    PropertyOutsideNode,
    #[error("property after a subnode (properties must come first)")]
    PropertyAfterSubnode,
    #[error("property value of {len} bytes runs past the block")]
    PropertyValue { len: u32 },
    #[error(
        "property name offset {nameoff:#x} is not a NUL-terminated UTF-8 string of the strings block"
    )]
    PropertyName { nameoff: u32 },
    #[error("nodes nested deeper than {MAX_DEPTH}")]
    TooDeep,
    #[error("FDT_END_NODE with no open node")]
    UnbalancedEndNode,
    #[error("FDT_END with {open} node(s) still open")]
    OpenNodes { open: usize },
    #[error("no root node")]
    NoRoot,
    #[error("data after FDT_END")]
    TrailingData,
}

/// Whether `bytes` starts like a flattened device tree.
pub fn has_magic(bytes: &[u8]) -> bool {
    bytes.starts_with(&FDT_MAGIC.to_be_bytes())
}

/// Checks the blob; returns the bytes `fdt` may read: the blob cut to its
/// `totalsize`, or a rebuilt copy if it held `FDT_NOP` tokens.
pub fn check(bytes: &[u8]) -> Result<Cow<'_, [u8]>, BlobError> {
    let header = Header::read(bytes)?;
    let blob = &bytes[..header.totalsize as usize];
    let block = |name, offset: u32, size: u32, align: u32| {
        let problem = if !(offset as usize).is_multiple_of(align as usize) {
            Some("is not aligned")
        } else if (offset as usize) < HEADER_LEN
            || offset as u64 + size as u64 > header.totalsize as u64
        {
            Some("lies outside the blob")
        } else {
            None
        };
        match problem {
            Some(problem) => Err(BlobError::Block {
                block: name,
                offset,
                size,
                problem,
            }),
            None => Ok(&blob[offset as usize..offset as usize + size as usize]),
        }
    };
    let structure = block(
        "structure block",
        header.off_dt_struct,
        header.size_dt_struct,
        4,
    )?;
    if structure.len() % 4 != 0 {
        return Err(BlobError::Block {
            block: "structure block",
            offset: header.off_dt_struct,
            size: header.size_dt_struct,
            problem: "is not a whole number of 4-byte tokens",
        });
    }
    let strings = block(
        "strings block",
        header.off_dt_strings,
        header.size_dt_strings,
        1,
    )?;
    let reservations = block(
        "memory reservation map",
        header.off_mem_rsvmap,
        header.totalsize - header.off_mem_rsvmap.min(header.totalsize),
        8,
    )?;
    let terminated = reservations
        .chunks_exact(16)
        .any(|entry| entry.iter().all(|&b| b == 0));
    if !terminated {
        return Err(BlobError::Reservations {
            offset: header.off_mem_rsvmap,
        });
    }
    let nops = walk(structure, strings)?;
    if nops.is_empty() {
        Ok(Cow::Borrowed(blob))
    } else {
        Ok(Cow::Owned(rebuild(&header, structure, strings, &nops)))
    }
}

/// The header fields this module uses (spec §5.2).
struct Header {
    totalsize: u32,
    off_dt_struct: u32,
    off_dt_strings: u32,
    off_mem_rsvmap: u32,
    boot_cpuid_phys: u32,
    size_dt_strings: u32,
    size_dt_struct: u32,
}

impl Header {
    fn read(bytes: &[u8]) -> Result<Self, BlobError> {
        if bytes.len() < HEADER_LEN {
            return Err(BlobError::TooShort { len: bytes.len() });
        }
        let field = |i: usize| be32(bytes, 4 * i).expect("BUG: header length checked");
        let magic = field(0);
        if magic != FDT_MAGIC {
            return Err(BlobError::Magic { found: magic });
        }
        let totalsize = field(1);
        if totalsize as usize > bytes.len() || (totalsize as usize) < HEADER_LEN {
            return Err(BlobError::Truncated {
                totalsize,
                len: bytes.len(),
            });
        }
        let (version, last_comp) = (field(5), field(6));
        if version < VERSION || last_comp > VERSION {
            return Err(BlobError::Version { version, last_comp });
        }
        Ok(Self {
            totalsize,
            off_dt_struct: field(2),
            off_dt_strings: field(3),
            off_mem_rsvmap: field(4),
            boot_cpuid_phys: field(7),
            size_dt_strings: field(8),
            size_dt_struct: field(9),
        })
    }
}

fn be32(bytes: &[u8], at: usize) -> Option<u32> {
    let word = bytes.get(at..at.checked_add(4)?)?;
    Some(u32::from_be_bytes(word.try_into().ok()?))
}

fn align4(n: usize) -> usize {
    n.next_multiple_of(4)
}

/// Walks the structure block token by token; returns the offsets of the
/// `FDT_NOP` tokens.
fn walk(structure: &[u8], strings: &[u8]) -> Result<Vec<usize>, BlobError> {
    // One entry per open node: whether it has had a subnode yet.
    let mut open: Vec<bool> = Vec::new();
    let mut seen_root = false;
    let mut nops = Vec::new();
    let mut pos = 0;
    loop {
        let at = pos;
        let fail = |problem| BlobError::Struct {
            offset: at,
            problem,
        };
        let token = be32(structure, pos).ok_or(fail(StructProblem::UnexpectedEnd))?;
        pos += 4;
        match token {
            FDT_NOP => nops.push(at),
            FDT_BEGIN_NODE => {
                if open.is_empty() && seen_root {
                    return Err(fail(StructProblem::SecondRoot));
                }
                let rest = &structure[pos..];
                let len = rest
                    .iter()
                    .position(|&b| b == 0)
                    .ok_or(fail(StructProblem::NameNotTerminated))?;
                let name = std::str::from_utf8(&rest[..len])
                    .map_err(|_| fail(StructProblem::NameNotUtf8))?;
                if open.is_empty() && !name.is_empty() {
                    return Err(fail(StructProblem::RootName(name.to_owned())));
                }
                pos = align4(pos + len + 1);
                if let Some(parent_has_subnode) = open.last_mut() {
                    *parent_has_subnode = true;
                }
                if open.len() == MAX_DEPTH {
                    return Err(fail(StructProblem::TooDeep));
                }
                open.push(false);
                seen_root = true;
            }
            FDT_END_NODE => {
                open.pop().ok_or(fail(StructProblem::UnbalancedEndNode))?;
            }
            FDT_PROP => {
                match open.last() {
                    None => return Err(fail(StructProblem::PropertyOutsideNode)),
                    Some(true) => return Err(fail(StructProblem::PropertyAfterSubnode)),
                    Some(false) => {}
                }
                let len = be32(structure, pos).ok_or(fail(StructProblem::UnexpectedEnd))?;
                let nameoff = be32(structure, pos + 4).ok_or(fail(StructProblem::UnexpectedEnd))?;
                pos += 8;
                let end = pos
                    .checked_add(len as usize)
                    .filter(|&end| end <= structure.len())
                    .ok_or(fail(StructProblem::PropertyValue { len }))?;
                let name_ok = strings
                    .get(nameoff as usize..)
                    .and_then(|s| s.iter().position(|&b| b == 0).map(|n| &s[..n]))
                    .is_some_and(|name| std::str::from_utf8(name).is_ok());
                if !name_ok {
                    return Err(fail(StructProblem::PropertyName { nameoff }));
                }
                pos = align4(end);
            }
            FDT_END => {
                if !open.is_empty() {
                    return Err(fail(StructProblem::OpenNodes { open: open.len() }));
                }
                if !seen_root {
                    return Err(fail(StructProblem::NoRoot));
                }
                if pos != structure.len() {
                    return Err(BlobError::Struct {
                        offset: pos,
                        problem: StructProblem::TrailingData,
                    });
                }
                return Ok(nops);
            }
            other => return Err(fail(StructProblem::UnknownToken(other))),
        }
    }
}

/// A copy of the blob without its `FDT_NOP` tokens.
fn rebuild(header: &Header, structure: &[u8], strings: &[u8], nops: &[usize]) -> Vec<u8> {
    let mut body = Vec::with_capacity(structure.len());
    let mut from = 0;
    for &nop in nops {
        body.extend_from_slice(&structure[from..nop]);
        from = nop + 4;
    }
    body.extend_from_slice(&structure[from..]);

    let to_u32 = |n: usize| u32::try_from(n).expect("BUG: rebuilt blob larger than the original");
    let reservations = [0u8; 16];
    let off_rsvmap = HEADER_LEN;
    let off_struct = off_rsvmap + reservations.len();
    let off_strings = off_struct + body.len();
    let total = off_strings + strings.len();
    let fields = [
        FDT_MAGIC,
        to_u32(total),
        to_u32(off_struct),
        to_u32(off_strings),
        to_u32(off_rsvmap),
        VERSION,
        16,
        header.boot_cpuid_phys,
        to_u32(strings.len()),
        to_u32(body.len()),
    ];
    let mut blob: Vec<u8> = fields.iter().flat_map(|f| f.to_be_bytes()).collect();
    blob.extend_from_slice(&reservations);
    blob.extend_from_slice(&body);
    blob.extend_from_slice(strings);
    blob
}

#[cfg(test)]
mod tests {
    use super::*;
    use vm_fdt::FdtWriter;

    /// `/ { a = <1>; child { b = "x"; }; };`
    fn small() -> Vec<u8> {
        let mut w = FdtWriter::new().unwrap();
        let root = w.begin_node("").unwrap();
        w.property_u32("a", 1).unwrap();
        let child = w.begin_node("child").unwrap();
        w.property_string("b", "x").unwrap();
        w.end_node(child).unwrap();
        w.end_node(root).unwrap();
        w.finish().unwrap()
    }

    fn set_be32(blob: &mut [u8], at: usize, value: u32) {
        blob[at..at + 4].copy_from_slice(&value.to_be_bytes());
    }

    fn off_struct(blob: &[u8]) -> usize {
        be32(blob, 8).unwrap() as usize
    }

    /// Inserts an `FDT_NOP` at structure offset `at`, fixing the header
    /// (vm-fdt puts the strings block after the structure block).
    fn insert_nop(blob: &[u8], at: usize) -> Vec<u8> {
        let s = off_struct(blob);
        let mut out = blob[..s + at].to_vec();
        out.extend_from_slice(&FDT_NOP.to_be_bytes());
        out.extend_from_slice(&blob[s + at..]);
        for field in [1, 3, 9] {
            let v = be32(&out, 4 * field).unwrap();
            set_be32(&mut out, 4 * field, v + 4);
        }
        out
    }

    fn struct_problem(blob: &[u8]) -> StructProblem {
        match check(blob) {
            Err(BlobError::Struct { problem, .. }) => problem,
            other => panic!("expected a structure problem, got {other:?}"),
        }
    }

    #[test]
    fn a_well_formed_blob_is_borrowed_as_is() {
        let blob = small();
        let mut longer = blob.clone();
        longer.extend_from_slice(&[0xaa; 8]);
        // Bytes past totalsize are not part of the blob.
        assert!(matches!(check(&longer), Ok(Cow::Borrowed(b)) if b == &blob[..]));
    }

    #[test]
    fn nops_are_removed_and_fdt_reads_the_result() {
        // Offsets in `small`: 0 BEGIN_NODE "", 8 PROP a, 24 BEGIN_NODE child,
        // 36 PROP b, 52 END_NODE, 56 END_NODE, 60 END.
        let mut blob = small();
        // Each NOP shifts the later offsets by 4.
        for (i, at) in [0, 24, 36, 52, 60].into_iter().enumerate() {
            blob = insert_nop(&blob, at + 4 * i);
        }
        let Ok(Cow::Owned(clean)) = check(&blob) else {
            panic!("expected a rebuilt blob");
        };
        assert!(matches!(check(&clean), Ok(Cow::Borrowed(_))));
        let fdt = fdt::Fdt::new(&clean).unwrap();
        let root = fdt.find_node("/").unwrap();
        assert_eq!(root.property("a").and_then(|p| p.as_usize()), Some(1));
        let child = root.children().next().unwrap();
        assert_eq!(child.name, "child");
        assert_eq!(child.property("b").and_then(|p| p.as_str()), Some("x"));
    }

    #[test]
    fn header_problems() {
        let blob = small();
        assert_eq!(check(&blob[..39]), Err(BlobError::TooShort { len: 39 }));
        let mut bad = blob.clone();
        bad[0] = 0;
        assert!(matches!(
            check(&bad),
            Err(BlobError::Magic { found: 0x000d_feed })
        ));
        assert!(matches!(
            check(&blob[..blob.len() - 1]),
            Err(BlobError::Truncated { .. })
        ));
        let mut old = blob.clone();
        set_be32(&mut old, 20, 16);
        assert!(matches!(
            check(&old),
            Err(BlobError::Version { version: 16, .. })
        ));
        let mut outside = blob.clone();
        set_be32(&mut outside, 36, 0x1000); // size_dt_struct
        assert!(matches!(
            check(&outside),
            Err(BlobError::Block {
                block: "structure block",
                problem: "lies outside the blob",
                ..
            })
        ));
        let mut unaligned = blob.clone();
        set_be32(&mut unaligned, 16, 42); // off_mem_rsvmap
        assert!(matches!(
            check(&unaligned),
            Err(BlobError::Block {
                problem: "is not aligned",
                ..
            })
        ));
        let mut unterminated = blob.clone();
        let rsv = be32(&blob, 16).unwrap() as usize;
        unterminated[rsv + 15] = 1;
        // The map runs on into the structure block, which has no 16 zero bytes.
        assert!(matches!(
            check(&unterminated),
            Err(BlobError::Reservations { .. })
        ));
    }

    #[test]
    fn structure_problems() {
        let blob = small();
        let s = off_struct(&blob);
        let mut bad = blob.clone();
        set_be32(&mut bad, s + 8, 7); // the PROP token of `a`
        assert_eq!(struct_problem(&bad), StructProblem::UnknownToken(7));

        let mut bad = blob.clone();
        set_be32(&mut bad, s + 8 + 4, 0xffff); // len of `a`
        assert_eq!(
            struct_problem(&bad),
            StructProblem::PropertyValue { len: 0xffff }
        );

        let mut bad = blob.clone();
        set_be32(&mut bad, s + 8 + 8, 0x1000); // nameoff of `a`
        assert_eq!(
            struct_problem(&bad),
            StructProblem::PropertyName { nameoff: 0x1000 }
        );

        let mut bad = blob.clone();
        set_be32(&mut bad, s + 52, FDT_END); // the child's END_NODE becomes END
        assert_eq!(struct_problem(&bad), StructProblem::OpenNodes { open: 2 });

        let mut bad = blob.clone();
        set_be32(&mut bad, s + 56, FDT_NOP); // root never closed
        assert_eq!(struct_problem(&bad), StructProblem::OpenNodes { open: 1 });

        let mut bad = blob.clone();
        bad[s + 4] = b'x'; // root name "x"
        assert_eq!(struct_problem(&bad), StructProblem::RootName("x".into()));

        let mut bad = blob.clone();
        bad[s + 28] = 0xff; // child name byte
        assert_eq!(struct_problem(&bad), StructProblem::NameNotUtf8);
    }

    #[test]
    fn properties_after_subnodes_are_refused() {
        // vm-fdt refuses to write this, so swap the child and the property:
        // BEGIN_NODE "" | BEGIN_NODE child ... END_NODE | PROP a | END_NODE | END
        let blob = small();
        let s = off_struct(&blob);
        let (root, prop_a, child) = (s..s + 8, s + 8..s + 24, s + 24..s + 56);
        let mut bad = blob[..s].to_vec();
        bad.extend_from_slice(&blob[root]);
        bad.extend_from_slice(&blob[child]);
        bad.extend_from_slice(&blob[prop_a]);
        bad.extend_from_slice(&blob[s + 56..]);
        assert_eq!(struct_problem(&bad), StructProblem::PropertyAfterSubnode);
    }

    #[test]
    fn nesting_is_bounded() {
        let mut w = FdtWriter::new().unwrap();
        let mut nodes = vec![w.begin_node("").unwrap()];
        for _ in 1..=MAX_DEPTH {
            nodes.push(w.begin_node("n").unwrap());
        }
        while let Some(node) = nodes.pop() {
            w.end_node(node).unwrap();
        }
        let blob = w.finish().unwrap();
        assert_eq!(struct_problem(&blob), StructProblem::TooDeep);
    }
}
