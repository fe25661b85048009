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
//! Invariants: a page's bytes, when held one by one, are `len` (the page
//! size), its tags, when held one by one, one per granule; an object holds
//! no page at or past `len_pages`.

use core::cell::RefCell;
use std::collections::BTreeMap;
use std::rc::Rc;

use mte::{GRANULE_SIZE, PageGeometry, Tag};

/// The contents of one page.
///
/// Equal when the bytes and tags are equal, however they are held.
#[derive(Clone)]
pub struct Page {
    /// The page size in bytes.
    len: usize,
    data: Held<u8>,
    /// The allocation tag of each granule, lowest address first.
    tags: Held<Tag>,
}

/// A page's bytes or tags: one value repeated (a fresh page, or one a
/// `fill` wrote whole: most pages the fuzzer writes, with no 4 KiB buffer
/// to allocate and zero first), or each value held.
#[derive(Clone)]
enum Held<T> {
    Same(T),
    Each(Box<[T]>),
}

impl<T: Copy + PartialEq> Held<T> {
    /// Value `i` of `len`.
    fn get(&self, i: usize, len: usize) -> T {
        match self {
            Held::Same(v) => {
                assert!(i < len, "BUG: index {i} past {len}");
                *v
            }
            Held::Each(values) => values[i],
        }
    }

    /// The `len` values, to write in place (each held from now on).
    fn each_mut(&mut self, len: usize) -> &mut [T] {
        if let Held::Same(v) = *self {
            *self = Held::Each(vec![v; len].into_boxed_slice());
        }
        match self {
            Held::Each(values) => values,
            Held::Same(_) => unreachable!("BUG: values just made"),
        }
    }

    /// Writes `v` over `range` of the `len` values.
    fn fill(&mut self, range: core::ops::Range<usize>, v: T, len: usize) {
        if range.start == 0 && range.end == len {
            *self = Held::Same(v);
        } else {
            self.each_mut(len)[range].fill(v);
        }
    }

    /// The `len` values in order.
    fn iter(&self, len: usize) -> impl Iterator<Item = T> + '_ {
        (0..len).map(move |i| self.get(i, len))
    }

    fn same(&self, other: &Held<T>, len: usize) -> bool {
        match (self, other) {
            (Held::Same(a), Held::Same(b)) => a == b,
            (Held::Each(a), Held::Each(b)) => a == b,
            _ => self.iter(len).eq(other.iter(len)),
        }
    }
}

impl Page {
    /// A page of zeros with every tag 0.
    pub fn zeroed(geometry: PageGeometry) -> Page {
        Page {
            len: geometry.page_size() as usize,
            data: Held::Same(0),
            tags: Held::Same(Tag::ZERO),
        }
    }

    /// The number of granules (tags).
    fn granules(&self) -> usize {
        self.len / GRANULE_SIZE as usize
    }

    /// The byte at `offset`.
    pub fn byte(&self, offset: usize) -> u8 {
        self.data.get(offset, self.len)
    }

    /// The bytes, to write in place.
    pub fn bytes_mut(&mut self) -> &mut [u8] {
        self.data.each_mut(self.len)
    }

    /// Writes `byte` over `range` of the page.
    pub fn fill(&mut self, range: core::ops::Range<usize>, byte: u8) {
        self.data.fill(range, byte, self.len);
    }

    /// The tag of each granule, lowest address first.
    pub fn tags(&self) -> impl Iterator<Item = Tag> + '_ {
        self.tags.iter(self.granules())
    }

    /// The tag of the granule holding byte `offset` of the page.
    pub fn tag_at(&self, offset: usize) -> Tag {
        self.tags
            .get(offset / GRANULE_SIZE as usize, self.granules())
    }

    pub fn set_tag_at(&mut self, offset: usize, tag: Tag) {
        let granules = self.granules();
        self.tags.each_mut(granules)[offset / GRANULE_SIZE as usize] = tag;
    }
}

impl PartialEq for Page {
    fn eq(&self, other: &Page) -> bool {
        self.len == other.len
            && self.tags.same(&other.tags, self.granules())
            && self.data.same(&other.data, self.len)
    }
}

impl Eq for Page {}

impl core::fmt::Debug for Page {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        let nonzero = self.data.iter(self.len).filter(|&b| b != 0).count();
        let tagged = self.tags().filter(|&t| t != Tag::ZERO).count();
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
        assert_eq!((p.len, p.tags().count()), (4096, 256));
        // Byte 0x35 is in granule 3.
        p.set_tag_at(0x35, Tag::new(9).unwrap());
        assert_eq!(p.tags().nth(3), Some(Tag::new(9).unwrap()));
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
        // Tags likewise: one set to 0 leaves a page equal to a fresh one.
        let mut t = Page::zeroed(g);
        t.set_tag_at(0x20, Tag::ZERO);
        assert_eq!(t, Page::zeroed(g));
        t.set_tag_at(0x20, Tag::new(1).unwrap());
        assert_ne!(t, Page::zeroed(g));
        assert_eq!(t.tag_at(0x2f), Tag::new(1).unwrap());
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
