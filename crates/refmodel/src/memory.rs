//! Page contents and the shared memory objects.
//!
//! Owns [`Page`] (the bytes and the allocation tags of one page, as the user
//! reads them) and [`Object`] (the pages of a tmpfs file, a regular file or a
//! shared anonymous mapping, referenced by every mapping of it in every
//! process, as an `Rc<RefCell<_>>`).
//!
//! There is no physical memory here: a page exists once something wrote it,
//! and a missing page reads as zeros with tag 0 (what the zero page, a fresh
//! anonymous page and a hole in a file all look like to a user). Tags are
//! kept for every page, but they are visible only through a tagged mapping
//! (`VM_MTE`); a tag store through an untagged mapping never reaches them.
//!
//! Invariants: `tags.len()` is the number of granules in a page, and the
//! bytes, when held one by one, are the page size; an object holds no page
//! at or past `len_pages`.

use core::cell::RefCell;
use std::collections::BTreeMap;
use std::rc::Rc;

use mte::{GRANULE_SIZE, PageGeometry, Tag};

/// The contents of one page.
///
/// Equal when the bytes and tags are equal, however the bytes are held.
#[derive(Clone)]
pub struct Page {
    data: Bytes,
    /// The allocation tag of each granule, lowest address first.
    pub tags: Box<[Tag]>,
}

/// A page's bytes: one byte repeated (a fresh page, or one a `fill` wrote
/// whole: most pages the fuzzer writes, with no 4 KiB buffer to allocate
/// and zero first), or each byte held.
#[derive(Clone)]
enum Bytes {
    Same(u8),
    Each(Box<[u8]>),
}

impl Page {
    /// A page of zeros with every tag 0.
    pub fn zeroed(geometry: PageGeometry) -> Page {
        Page {
            data: Bytes::Same(0),
            tags: vec![Tag::ZERO; geometry.granules_per_page() as usize].into_boxed_slice(),
        }
    }

    /// The page size in bytes (a granule per tag).
    fn len(&self) -> usize {
        self.tags.len() * GRANULE_SIZE as usize
    }

    /// The byte at `offset`.
    pub fn byte(&self, offset: usize) -> u8 {
        match &self.data {
            Bytes::Same(b) => {
                assert!(offset < self.len(), "BUG: byte {offset} past the page");
                *b
            }
            Bytes::Each(data) => data[offset],
        }
    }

    /// The bytes, to write in place (each byte held from now on).
    pub fn bytes_mut(&mut self) -> &mut [u8] {
        if let Bytes::Same(b) = self.data {
            self.data = Bytes::Each(vec![b; self.len()].into_boxed_slice());
        }
        match &mut self.data {
            Bytes::Each(data) => data,
            Bytes::Same(_) => unreachable!("BUG: bytes just made"),
        }
    }

    /// Writes `byte` over `range` of the page.
    pub fn fill(&mut self, range: core::ops::Range<usize>, byte: u8) {
        if range.start == 0 && range.end == self.len() {
            self.data = Bytes::Same(byte);
        } else {
            self.bytes_mut()[range].fill(byte);
        }
    }

    /// Every byte, lowest first.
    fn bytes(&self) -> impl Iterator<Item = u8> + '_ {
        let len = self.len();
        (0..len).map(move |i| match &self.data {
            Bytes::Same(b) => *b,
            Bytes::Each(data) => data[i],
        })
    }

    /// The tag of the granule holding byte `offset` of the page.
    pub fn tag_at(&self, offset: usize) -> Tag {
        self.tags[offset / GRANULE_SIZE as usize]
    }

    pub fn set_tag_at(&mut self, offset: usize, tag: Tag) {
        self.tags[offset / GRANULE_SIZE as usize] = tag;
    }
}

impl PartialEq for Page {
    fn eq(&self, other: &Page) -> bool {
        self.tags == other.tags
            && match (&self.data, &other.data) {
                (Bytes::Same(a), Bytes::Same(b)) => a == b,
                (Bytes::Each(a), Bytes::Each(b)) => a == b,
                _ => self.bytes().eq(other.bytes()),
            }
    }
}

impl Eq for Page {}

impl core::fmt::Debug for Page {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        let nonzero = self.bytes().filter(|&b| b != 0).count();
        let tagged = self.tags.iter().filter(|&&t| t != Tag::ZERO).count();
        write!(
            f,
            "Page({nonzero:#x} non-zero bytes, {tagged:#x} non-zero tags)"
        )
    }
}

/// The byte at `offset` of a page that may not exist (zeros).
pub fn byte_of(page: Option<&Page>, offset: usize) -> u8 {
    page.map_or(0, |p| p.byte(offset))
}

/// The tag of the granule at `offset` of a page that may not exist (0).
pub fn tag_of(page: Option<&Page>, offset: usize) -> Tag {
    page.map_or(Tag::ZERO, |p| p.tag_at(offset))
}

/// What a memory object is; decides whether it may be mapped `PROT_MTE`
/// and whether a writable long-term pin of a shared mapping of it works.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum ObjectKind {
    /// The shmem file behind `MAP_SHARED | MAP_ANONYMOUS`
    /// (Linux: `shmem_zero_setup()`).
    SharedAnon,
    /// A tmpfs file (`map=shm`).
    Tmpfs,
    /// A regular file on a disk filesystem (`map=file`).
    RegularFile,
}

impl ObjectKind {
    /// Whether a mapping of it may be tagged (Linux: `VM_MTE_ALLOWED`,
    /// set for anonymous memory by `arch_calc_vm_flag_bits()` and for shmem
    /// by `shmem_mmap()`; never for other filesystems).
    pub fn mte_allowed(self) -> bool {
        match self {
            ObjectKind::SharedAnon | ObjectKind::Tmpfs => true,
            ObjectKind::RegularFile => false,
        }
    }

    /// Whether a shared writable mapping of it needs dirty tracking, which
    /// refuses writable long-term pins (Linux: `vma_needs_dirty_tracking()`
    /// in `writable_file_mapping_allowed()`, mm/gup.c, since v6.5). shmem
    /// does no writeback; a disk filesystem does.
    pub fn needs_dirty_tracking(self) -> bool {
        match self {
            ObjectKind::SharedAnon | ObjectKind::Tmpfs => false,
            ObjectKind::RegularFile => true,
        }
    }
}

/// A zero-filled file (or shared anonymous memory) of a fixed size.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct Object {
    pub kind: ObjectKind,
    /// Its size in pages; mappings never reach past it (the model has no
    /// `ftruncate` or `mremap`).
    pub len_pages: u64,
    /// Pages written so far, by page index in the object; shared with the
    /// copies of [`crate::RefMachine::snapshot`] until written
    /// (`Rc::make_mut`).
    pub pages: BTreeMap<u64, Rc<Page>>,
}

/// An object shared by every mapping of it.
pub type SharedObject = Rc<RefCell<Object>>;

impl Object {
    pub fn new_shared(kind: ObjectKind, len_pages: u64) -> SharedObject {
        Rc::new(RefCell::new(Object {
            kind,
            len_pages,
            pages: BTreeMap::new(),
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_missing_page_reads_zero_with_tag_zero() {
        assert_eq!(byte_of(None, 17), 0);
        assert_eq!(tag_of(None, 17), Tag::ZERO);
        let g = PageGeometry::new(12).unwrap();
        let mut p = Page::zeroed(g);
        assert_eq!((p.len(), p.tags.len()), (4096, 256));
        // Byte 0x35 is in granule 3.
        p.set_tag_at(0x35, Tag::new(9).unwrap());
        assert_eq!(p.tags[3], Tag::new(9).unwrap());
        assert_eq!(tag_of(Some(&p), 0x30), Tag::new(9).unwrap());
        assert_eq!(tag_of(Some(&p), 0x40), Tag::ZERO);
    }

    #[test]
    fn bytes_held_whole_or_each_read_and_compare_alike() {
        let g = PageGeometry::new(12).unwrap();
        let mut whole = Page::zeroed(g);
        whole.fill(0..4096, 0x5a);
        let mut each = Page::zeroed(g);
        each.bytes_mut().fill(0x5a);
        assert_eq!(whole, each);
        assert_eq!((whole.byte(4095), each.byte(17)), (0x5a, 0x5a));
        // A part written makes every byte held; the rest keeps its value.
        whole.fill(10..12, 1);
        assert_eq!(
            (whole.byte(9), whole.byte(10), whole.byte(12)),
            (0x5a, 1, 0x5a)
        );
        assert_ne!(whole, each);
        each.bytes_mut()[10..12].fill(1);
        assert_eq!(whole, each);
        assert_eq!(byte_of(Some(&Page::zeroed(g)), 4095), 0);
        assert_eq!(
            format!("{:?}", Page::zeroed(g)),
            "Page(0x0 non-zero bytes, 0x0 non-zero tags)"
        );
    }

    #[test]
    fn which_objects_may_be_tagged() {
        // Linux: PROT_MTE is refused on regular files, allowed on shmem.
        assert!(ObjectKind::SharedAnon.mte_allowed());
        assert!(ObjectKind::Tmpfs.mte_allowed());
        assert!(!ObjectKind::RegularFile.mte_allowed());
        assert!(ObjectKind::RegularFile.needs_dirty_tracking());
        assert!(!ObjectKind::Tmpfs.needs_dirty_tracking());
    }
}
