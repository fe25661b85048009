//! One process's address space: its mappings and its private pages.
//!
//! Owns [`AddressSpace`]: a list of [`Vma`]s (start, end, permissions, the
//! sticky tagged flag `VM_MTE`, and what backs them) and the process's
//! private pages, keyed by virtual page number. It answers "which mapping
//! holds this address", "may this access touch it", "what does the user
//! read here", and carries out the VMA-level parts of mmap, munmap,
//! mprotect and madvise with Linux's user-visible rules.
//!
//! Where a page's contents live ([`AddressSpace::read_page`],
//! [`AddressSpace::write_page`]):
//!
//! | mapping | read | write |
//! |---|---|---|
//! | private anonymous | the private page, else zeros | the private page (created zeroed) |
//! | private object (file, tmpfs) | the private page, else the object's page | the private page (created as a copy of the object's page: copy-on-write) |
//! | shared (anon, tmpfs, file) | the object's page | the object's page |
//!
//! This is what a user of Linux sees once page sharing, the zero page and
//! copy-on-write are taken away: private memory is the process's own from
//! the first write, shared memory is one object for everyone.
//!
//! Invariants (checked by [`AddressSpace::violations`]): VMAs are
//! page-aligned, non-empty, non-overlapping and below `TASK_SIZE`; a VMA
//! of an object lies inside the object; every private page lies in a
//! private VMA; private pages of untagged VMAs have every tag 0 (tags
//! reach memory only through tagged mappings, `VM_MTE` is never cleared,
//! and the objects behind private mappings are never written).
//!
//! Known shortcuts: VMAs are never merged (Linux merges compatible
//! neighbours, which no command of the model can observe); there is no
//! `vm.max_map_count` limit.

use std::collections::BTreeMap;
use std::ops::Bound::{Excluded, Unbounded};
use std::rc::Rc;

use mte::{Tag, VirtAddr};
use thiserror::Error;
use uapi::{Backing, Errno, MapFlags, Sharing};

use crate::layout::{Layout, Vpn};
use crate::memory::{Page, SharedObject};

/// The access permissions of a mapping (`VM_READ`, `VM_WRITE`, `VM_EXEC`).
#[derive(Clone, Copy, PartialEq, Eq, Debug, Default)]
pub struct Perm {
    pub read: bool,
    pub write: bool,
    pub exec: bool,
}

impl Perm {
    pub fn from_prot(prot: uapi::Prot) -> Perm {
        Perm {
            read: prot.read,
            write: prot.write,
            exec: prot.exec,
        }
    }
}

/// What an access needs of the mapping.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Need {
    /// A load, LDG, a kernel read of user memory.
    Read,
    /// A store, a tag store, a kernel write to user memory.
    Write,
}

/// What backs a mapping.
#[derive(Clone, PartialEq, Eq, Debug)]
pub enum Mapping {
    /// `MAP_PRIVATE | MAP_ANONYMOUS`.
    PrivateAnon,
    /// A mapping of `object` (shared anonymous memory, tmpfs or a regular
    /// file); `first_page` is the object page at the VMA's start.
    Object {
        sharing: Sharing,
        object: SharedObject,
        first_page: u64,
    },
}

/// A mapping (Linux: `struct vm_area_struct`).
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct Vma {
    pub start: VirtAddr,
    /// One past the last byte.
    pub end: VirtAddr,
    pub perm: Perm,
    /// `VM_MTE`: set by `PROT_MTE` and never cleared.
    pub tagged: bool,
    pub mapping: Mapping,
}

impl Vma {
    /// Linux: `VM_MTE_ALLOWED`.
    pub fn mte_allowed(&self) -> bool {
        match &self.mapping {
            Mapping::PrivateAnon => true,
            Mapping::Object { object, .. } => object.borrow().kind.mte_allowed(),
        }
    }

    pub fn is_shared(&self) -> bool {
        matches!(
            self.mapping,
            Mapping::Object {
                sharing: Sharing::Shared,
                ..
            }
        )
    }

    /// Whether a user access may touch the mapping. arm64
    /// `do_page_fault()`: a read needs `VM_READ` or `VM_WRITE` ("write
    /// implies read"); with Enhanced PAN, which a CPU with
    /// FEAT_MTE_STORE_ONLY has, `VM_EXEC` alone does not allow reads. A
    /// write needs `VM_WRITE`.
    pub fn allows(&self, need: Need) -> bool {
        match need {
            Need::Read => self.perm.read || self.perm.write,
            Need::Write => self.perm.write,
        }
    }

    pub fn contains(&self, addr: VirtAddr) -> bool {
        self.start <= addr && addr < self.end
    }

    /// The object page behind `addr`, if the mapping has an object.
    fn object_page(&self, layout: &Layout, addr: VirtAddr) -> Option<(SharedObject, u64)> {
        match &self.mapping {
            Mapping::PrivateAnon => None,
            Mapping::Object {
                object, first_page, ..
            } => {
                let index = first_page + (layout.vpn(addr).0 - layout.vpn(self.start).0);
                Some((object.clone(), index))
            }
        }
    }

    /// The part of this VMA from `at` on; `self` keeps the part below.
    fn split_off(&mut self, layout: &Layout, at: VirtAddr) -> Vma {
        assert!(
            self.start < at && at < self.end && layout.is_page_aligned(at),
            "BUG: splitting {:?}..{:?} at {at:?}",
            self.start,
            self.end
        );
        let mut upper = self.clone();
        upper.start = at;
        if let Mapping::Object { first_page, .. } = &mut upper.mapping {
            *first_page += layout.vpn(at).0 - layout.vpn(self.start).0;
        }
        self.end = at;
        upper
    }
}

/// How `get_unmapped_area()` aligns a new mapping (Linux v6.8
/// `get_unmapped_area()`: private anonymous memory goes through
/// `thp_get_unmapped_area()`, and so do regular files, whose filesystems
/// (ext4, xfs) name it as their `get_unmapped_area`; shared anonymous
/// memory and tmpfs go through `shmem_get_unmapped_area()`, which aligns
/// nothing while shmem huge pages are off, the tmpfs default).
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Placement {
    /// Page alignment only.
    Page,
    /// 2 MiB alignment for 2 MiB or more (`thp_get_unmapped_area()`).
    Thp,
}

impl Placement {
    /// The placement of a new mapping with these flags.
    pub fn of(flags: MapFlags) -> Placement {
        match (flags.sharing, flags.backing) {
            (Sharing::Private, Backing::Anon) | (_, Backing::File) => Placement::Thp,
            (Sharing::Shared, Backing::Anon) | (_, Backing::Shm) => Placement::Page,
        }
    }
}

/// Why a VMA-level operation failed.
#[derive(Clone, Copy, PartialEq, Eq, Debug, Error)]
pub enum SpaceError {
    /// No free range fits, top-down below `mmap_base` or bottom-up above
    /// `TASK_UNMAPPED_BASE` (Linux: `arch_get_unmapped_area_topdown()`).
    #[error("no free range of {len:#x} bytes")]
    NoSpace { len: u64 },
    /// The range has a hole at `addr` (mprotect, madvise).
    #[error("{addr} is not mapped")]
    Hole { addr: VirtAddr },
    /// `PROT_MTE` on a mapping without `VM_MTE_ALLOWED`
    /// (Linux: `arch_validate_flags()`).
    #[error("the mapping at {start} cannot be tagged")]
    MteNotAllowed { start: VirtAddr },
}

impl SpaceError {
    /// The errno Linux returns.
    pub fn errno(self) -> Errno {
        match self {
            SpaceError::NoSpace { .. } | SpaceError::Hole { .. } => Errno::NoMem,
            SpaceError::MteNotAllowed { .. } => Errno::Inval,
        }
    }
}

/// A process's address space. Cloning it is `fork(2)`'s copy: private pages
/// are copied (lazily: the copies share each page until one of them writes
/// it, and the table of them until one of them changes it), objects are
/// shared.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct AddressSpace {
    layout: Layout,
    /// By start address.
    vmas: BTreeMap<VirtAddr, Vma>,
    /// Pages written through private mappings (copy-on-write between
    /// clones: `Rc::make_mut` on write). The table is copy-on-write too: a
    /// clone (a `fork`, a snapshot of the machine for a block's orders)
    /// costs nothing until one side writes a page it has not yet written
    /// since, or forgets one.
    private: Rc<BTreeMap<Vpn, Rc<Page>>>,
}

impl AddressSpace {
    pub fn new(layout: Layout) -> AddressSpace {
        AddressSpace {
            layout,
            vmas: BTreeMap::new(),
            private: Rc::new(BTreeMap::new()),
        }
    }

    pub fn layout(&self) -> &Layout {
        &self.layout
    }

    /// The mapping holding `addr`.
    pub fn vma_at(&self, addr: VirtAddr) -> Option<&Vma> {
        self.vmas
            .range(..=addr)
            .next_back()
            .map(|(_, vma)| vma)
            .filter(|vma| vma.contains(addr))
    }

    /// The lowest mapping that ends above `addr` (Linux: `find_vma()`).
    fn first_ending_after(&self, addr: VirtAddr) -> Option<&Vma> {
        if let Some(vma) = self.vma_at(addr) {
            return Some(vma);
        }
        self.vmas
            .range((Excluded(addr), Unbounded))
            .next()
            .map(|(_, vma)| vma)
    }

    /// The base for a new mapping of `len` bytes (page-aligned), as Linux
    /// v6.8 `get_unmapped_area()` places it for `placement`.
    pub fn find_free(&self, len: u64, placement: Placement) -> Result<VirtAddr, SpaceError> {
        let found = match placement {
            Placement::Page => self.search(len),
            Placement::Thp => self.thp_search(len).or_else(|| self.search(len)),
        };
        found
            .map(|base| self.layout.virt(base))
            .ok_or(SpaceError::NoSpace { len })
    }

    /// Linux `__thp_get_unmapped_area()` with `off = 0` (v6.8, including
    /// "mm: thp_get_unmapped_area must honour topdown preference"): search
    /// for `len + 2 MiB`; at the base `b` found, the mapping goes at `b`
    /// rounded up to 2 MiB, or at `b + 2 MiB` when `b` is already aligned
    /// (the top-down layout prefers the higher end of the padded range).
    /// `None` (shorter than 2 MiB, or no room for the padding) makes the
    /// caller search again for `len` alone.
    fn thp_search(&self, len: u64) -> Option<u64> {
        let thp = self.layout.thp_size;
        if len < thp {
            return None;
        }
        let found = self.search(len.checked_add(thp)?)?;
        let off_sub = found.wrapping_neg() & (thp - 1);
        Some(if off_sub == 0 {
            found + thp
        } else {
            found + off_sub
        })
    }

    /// Linux `arch_get_unmapped_area_topdown()` without a hint: the top
    /// `len` bytes of the highest gap of `[max(PAGE_SIZE, mmap_min_addr),
    /// mmap_base)` that holds them (`unmapped_area_topdown()`), else the
    /// start of the lowest gap of `[TASK_UNMAPPED_BASE, TASK_SIZE)` that
    /// does (`unmapped_area()`). No guard gaps: no mapping grows.
    fn search(&self, len: u64) -> Option<u64> {
        let layout = &self.layout;
        if len > layout.task_size - layout.mmap_min_addr {
            return None;
        }
        let low = layout.page_size().max(layout.mmap_min_addr);
        self.highest_gap(len, low, layout.mmap_base)
            .or_else(|| self.lowest_gap(len, layout.task_unmapped_base, layout.task_size))
    }

    /// The top `len` bytes of the highest gap of `[low, high)` at least
    /// `len` long. A mapping straddling `high` closes the first gap at its
    /// start.
    fn highest_gap(&self, len: u64, low: u64, high: u64) -> Option<u64> {
        let mut gap_end = high;
        for vma in self.vmas.values().rev() {
            let (start, end) = (vma.start.as_u64(), vma.end.as_u64());
            if start >= gap_end {
                continue;
            }
            let gap_start = end.max(low);
            if end < gap_end && gap_end - gap_start >= len {
                return Some(gap_end - len);
            }
            gap_end = start;
            if gap_end <= low {
                return None;
            }
        }
        (gap_end.checked_sub(low)? >= len).then(|| gap_end - len)
    }

    /// The start of the lowest gap of `[low, high)` at least `len` long.
    fn lowest_gap(&self, len: u64, low: u64, high: u64) -> Option<u64> {
        let mut gap_start = low;
        for vma in self.vmas.values() {
            let (start, end) = (vma.start.as_u64(), vma.end.as_u64());
            if end <= gap_start {
                continue;
            }
            if start >= gap_start.checked_add(len)? {
                break;
            }
            gap_start = end;
        }
        (gap_start.checked_add(len)? <= high).then_some(gap_start)
    }

    /// Adds a mapping over a range that holds none.
    pub fn insert(&mut self, vma: Vma) {
        let overlaps = self
            .first_ending_after(vma.start)
            .is_some_and(|other| other.start < vma.end);
        assert!(
            !overlaps && vma.start < vma.end,
            "BUG: new mapping {:?}..{:?} overlaps another or is empty",
            vma.start,
            vma.end
        );
        self.vmas.insert(vma.start, vma);
    }

    /// Makes `at` a VMA boundary if a VMA straddles it.
    fn split_at(&mut self, at: VirtAddr) {
        let Some(start) = self.vma_at(at).map(|vma| vma.start) else {
            return;
        };
        if start == at {
            return;
        }
        let layout = self.layout;
        let lower = self
            .vmas
            .get_mut(&start)
            .expect("BUG: the VMA just found is gone");
        let upper = lower.split_off(&layout, at);
        self.vmas.insert(at, upper);
    }

    /// Removes every mapping in `[start, end)` and its private pages
    /// (Linux: `do_vmi_munmap()`).
    pub fn unmap(&mut self, start: VirtAddr, end: VirtAddr) {
        self.split_at(start);
        self.split_at(end);
        let doomed: Vec<VirtAddr> = self.vmas.range(start..end).map(|(&s, _)| s).collect();
        for s in doomed {
            self.vmas.remove(&s);
        }
        self.drop_private(start, end);
    }

    /// Forgets the private pages in `[start, end)`: later reads see the
    /// object behind the mapping, or zeros.
    pub fn drop_private(&mut self, start: VirtAddr, end: VirtAddr) {
        let range = self.layout.vpn(start)..self.layout.vpn(end);
        let doomed: Vec<Vpn> = self.private.range(range).map(|(&v, _)| v).collect();
        if doomed.is_empty() {
            // Nothing to forget: a table shared with a clone stays shared.
            return;
        }
        let private = Rc::make_mut(&mut self.private);
        for vpn in doomed {
            private.remove(&vpn);
        }
    }

    /// Applies `change` to every mapping in `[start, end)`, lowest first,
    /// as Linux's `mprotect()` loop does: a hole is `Hole` (after the
    /// mappings below it were changed), and an error of `change` stops the
    /// walk there, keeping the changes made before it.
    pub fn change_each(
        &mut self,
        start: VirtAddr,
        end: VirtAddr,
        mut change: impl FnMut(&mut Vma) -> Result<(), SpaceError>,
    ) -> Result<(), SpaceError> {
        let mut cur = start;
        while cur < end {
            let Some(vma_start) = self
                .first_ending_after(cur)
                .filter(|vma| vma.start < end)
                .map(|vma| vma.start)
            else {
                break;
            };
            if vma_start > cur {
                return Err(SpaceError::Hole { addr: cur });
            }
            self.split_at(cur);
            self.split_at(end);
            let vma = self
                .vmas
                .get_mut(&cur)
                .expect("BUG: no VMA at a boundary just made");
            change(vma)?;
            cur = vma.end;
        }
        if cur < end {
            return Err(SpaceError::Hole { addr: cur });
        }
        Ok(())
    }

    /// The mapped parts of `[start, end)`, lowest first, each with whether
    /// its VMA is shared, and the first hole if there is one (Linux:
    /// `madvise_walk_vmas()` visits the parts and reports `ENOMEM` for the
    /// holes afterwards).
    pub fn mapped_parts(
        &self,
        start: VirtAddr,
        end: VirtAddr,
    ) -> (Vec<(VirtAddr, VirtAddr, bool)>, Option<VirtAddr>) {
        let mut parts = Vec::new();
        let mut hole = None;
        let mut cur = start;
        while cur < end {
            let Some(vma) = self.first_ending_after(cur).filter(|v| v.start < end) else {
                break;
            };
            if vma.start > cur {
                hole.get_or_insert(cur);
                cur = vma.start;
            }
            let part_end = vma.end.min(end);
            parts.push((cur, part_end, vma.is_shared()));
            cur = part_end;
        }
        if cur < end {
            hole.get_or_insert(cur);
        }
        (parts, hole)
    }

    /// Calls `read` with the page the user sees at `addr` (`None`: zeros
    /// and tag 0). `addr` must be mapped.
    pub fn read_page<R>(&self, addr: VirtAddr, read: impl FnOnce(Option<&Page>) -> R) -> R {
        let vma = self
            .vma_at(addr)
            .unwrap_or_else(|| panic!("BUG: reading unmapped {addr}"));
        let vpn = self.layout.vpn(addr);
        if !vma.is_shared()
            && let Some(page) = self.private.get(&vpn)
        {
            return read(Some(page));
        }
        match vma.object_page(&self.layout, addr) {
            Some((object, index)) => read(object.borrow().pages.get(&index).map(|p| &**p)),
            None => read(None),
        }
    }

    /// Calls `write` with the page at `addr` that a write changes: the
    /// object's page for a shared mapping, else the private page, made on
    /// first write as a copy of what the user read there (Linux:
    /// `do_anonymous_page()`, `wp_page_copy()`). `addr` must be mapped.
    pub fn write_page<R>(&mut self, addr: VirtAddr, write: impl FnOnce(&mut Page) -> R) -> R {
        let vma = self
            .vma_at(addr)
            .unwrap_or_else(|| panic!("BUG: writing unmapped {addr}"));
        let shared = vma.is_shared();
        let behind = vma.object_page(&self.layout, addr);
        let geometry = self.layout.page;
        if shared {
            let (object, index) = behind.expect("BUG: a shared mapping without an object");
            let mut object = object.borrow_mut();
            let page = object
                .pages
                .entry(index)
                .or_insert_with(|| Rc::new(Page::zeroed(geometry)));
            return write(Rc::make_mut(page));
        }
        let vpn = self.layout.vpn(addr);
        let page = Rc::make_mut(&mut self.private)
            .entry(vpn)
            .or_insert_with(|| {
                behind
                    .and_then(|(object, index)| object.borrow().pages.get(&index).cloned())
                    .unwrap_or_else(|| Rc::new(Page::zeroed(geometry)))
            });
        write(Rc::make_mut(page))
    }

    /// Replaces every object behind a mapping by what `copy` gives for it
    /// (what [`crate::RefMachine::snapshot`] uses to give a copy of the
    /// machine its own objects, shared as the originals were).
    pub fn replace_objects(&mut self, copy: &mut impl FnMut(&SharedObject) -> SharedObject) {
        for vma in self.vmas.values_mut() {
            if let Mapping::Object { object, .. } = &mut vma.mapping {
                *object = copy(object);
            }
        }
    }

    /// The allocation tag of the granule at `addr` as a checked access or
    /// LDG sees it: `None` where the mapping is not tagged. `addr` must be
    /// mapped.
    pub fn memory_tag(&self, addr: VirtAddr) -> Option<Tag> {
        let tagged = self
            .vma_at(addr)
            .unwrap_or_else(|| panic!("BUG: tag of unmapped {addr}"))
            .tagged;
        let offset = self.layout.offset_in_page(addr);
        tagged.then(|| self.read_page(addr, |page| crate::memory::tag_of(page, offset)))
    }

    /// Every broken invariant of this address space, described.
    pub fn violations(&self) -> Vec<String> {
        let AddressSpace {
            layout,
            vmas,
            private,
        } = self;
        let mut out = Vec::new();
        let mut prev_end = VirtAddr::ZERO;
        for (&key, vma) in vmas {
            let Vma {
                start,
                end,
                perm: _,
                tagged,
                mapping,
            } = vma;
            if key != *start {
                out.push(format!("VMA {start} is filed under {key}"));
            }
            if !(layout.is_page_aligned(*start) && layout.is_page_aligned(*end) && start < end) {
                out.push(format!("VMA {start}..{end} is empty or not page-aligned"));
            }
            if end.as_u64() > layout.task_size {
                out.push(format!("VMA {start}..{end} reaches past TASK_SIZE"));
            }
            if *start < prev_end {
                out.push(format!("VMA {start}..{end} overlaps the one before"));
            }
            prev_end = *end;
            if *tagged && !vma.mte_allowed() {
                out.push(format!(
                    "VMA {start}..{end} is tagged without VM_MTE_ALLOWED"
                ));
            }
            if let Mapping::Object {
                object, first_page, ..
            } = mapping
            {
                let pages = layout.vpn(*end).0 - layout.vpn(*start).0;
                let len = object.borrow().len_pages;
                if first_page + pages > len {
                    out.push(format!(
                        "VMA {start}..{end} maps pages {first_page:#x}+{pages:#x} of a {len:#x}-page object"
                    ));
                }
            }
        }
        for (&vpn, page) in private.iter() {
            let addr = layout.vpn_addr(vpn);
            match self.vma_at(addr) {
                None => out.push(format!("private page {addr} lies in no mapping")),
                Some(vma) if vma.is_shared() => {
                    out.push(format!("private page {addr} lies in a shared mapping"))
                }
                Some(vma) if !vma.tagged && page.tags().any(|t| t != Tag::ZERO) => out.push(
                    format!("private page {addr} of an untagged mapping has non-zero tags"),
                ),
                Some(_) => {}
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::memory::{Object, ObjectKind};

    fn layout() -> Layout {
        Layout::arm64_4k()
    }

    fn va(raw: u64) -> VirtAddr {
        VirtAddr::new(raw).unwrap()
    }

    fn anon(start: u64, end: u64) -> Vma {
        Vma {
            start: va(start),
            end: va(end),
            perm: Perm {
                read: true,
                write: true,
                exec: false,
            },
            tagged: false,
            mapping: Mapping::PrivateAnon,
        }
    }

    #[test]
    fn placement_is_top_down_first_fit() {
        let l = layout();
        let mut s = AddressSpace::new(l);
        // An empty space: the mapping ends at mmap_base.
        let a = s.find_free(0x4000, Placement::Page).unwrap();
        assert_eq!(a.as_u64(), l.mmap_base - 0x4000);
        s.insert(anon(a.as_u64(), l.mmap_base));
        // The next one goes right below it.
        let b = s.find_free(0x1000, Placement::Page).unwrap();
        assert_eq!(b.as_u64(), l.mmap_base - 0x5000);
        s.insert(anon(b.as_u64(), a.as_u64()));
        // A 2 MiB-aligned one: 4 MiB found at mmap_base - 0x40_5000, rounded
        // up to 2 MiB.
        let c = s.find_free(0x20_0000, Placement::Thp).unwrap();
        assert_eq!(c.as_u64(), l.mmap_base - 0x40_0000);
        // Unmapping the top one reopens the hole above: a page fits there.
        s.unmap(a, va(l.mmap_base));
        assert_eq!(
            s.find_free(0x1000, Placement::Page).unwrap().as_u64(),
            l.mmap_base - 0x1000
        );
        // A gap between two mappings is used when it fits.
        s.insert(anon(l.mmap_base - 0x1000, l.mmap_base));
        assert_eq!(
            s.find_free(0x3000, Placement::Page).unwrap().as_u64(),
            l.mmap_base - 0x4000
        );
        assert_eq!(
            s.find_free(0x4000, Placement::Page).unwrap().as_u64(),
            l.mmap_base - 0x9000
        );
    }

    #[test]
    fn thp_placement_pads_the_search_by_2m() {
        let l = layout();
        let m = 0x10_0000;
        let mut s = AddressSpace::new(l);
        // A 3 MiB gap [mmap_base - 4M, mmap_base - 1M) holds a 2 MiB-aligned
        // 2 MiB range, but __thp_get_unmapped_area() searches for 4 MiB:
        // found at mmap_base - 9M below the lower mapping, rounded up.
        s.insert(anon(l.mmap_base - m, l.mmap_base));
        s.insert(anon(l.mmap_base - 5 * m, l.mmap_base - 4 * m));
        assert_eq!(
            s.find_free(2 * m, Placement::Thp).unwrap().as_u64(),
            l.mmap_base - 8 * m
        );
        // Page placement takes the gap.
        assert_eq!(
            s.find_free(2 * m, Placement::Page).unwrap().as_u64(),
            l.mmap_base - 3 * m
        );
        // Under 2 MiB is never aligned.
        assert_eq!(
            s.find_free(2 * m - 0x1000, Placement::Thp)
                .unwrap()
                .as_u64(),
            l.mmap_base - 3 * m + 0x1000
        );
        // An aligned padded base gives the upper end: 4 MiB found at
        // mmap_base - 9M - 3M = mmap_base - 12M (aligned), result + 2M.
        s.insert(anon(l.mmap_base - 9 * m, l.mmap_base - 5 * m));
        s.insert(anon(l.mmap_base - 16 * m, l.mmap_base - 12 * m));
        // The gap [mmap_base - 12M, mmap_base - 9M) is 3M: too small for the
        // padded 4M; the one below mmap_base - 16M is found.
        assert_eq!(
            s.find_free(2 * m, Placement::Thp).unwrap().as_u64(),
            l.mmap_base - 18 * m
        );
    }

    #[test]
    fn thp_placement_falls_back_unaligned_then_bottom_up() {
        let l = layout();
        let mut s = AddressSpace::new(l);
        // Everything below mmap_base but a 3 MiB gap is taken.
        let gap = l.mmap_base - 0x30_0000;
        s.insert(anon(0x1000, gap - 0x1000));
        s.insert(anon(gap + 0x30_0000 - 0x1000, l.mmap_base));
        // No room for 4 MiB anywhere below mmap_base... but bottom-up from
        // TASK_UNMAPPED_BASE the space above mmap_base is free: the padded
        // search finds mmap_base (aligned) and the mapping goes 2M above it.
        assert_eq!(
            s.find_free(0x20_0000, Placement::Thp).unwrap().as_u64(),
            l.mmap_base + 0x20_0000
        );
        // Fill the space above mmap_base up to 3 MiB below TASK_SIZE: the
        // padded search fails everywhere, the plain one takes the top of the
        // gap below mmap_base, unaligned.
        s.insert(anon(l.mmap_base, l.task_size - 0x30_0000));
        assert_eq!(
            s.find_free(0x20_0000, Placement::Thp).unwrap().as_u64(),
            gap + 0x30_0000 - 0x1000 - 0x20_0000
        );
        // Bottom-up for a plain page: the lowest gap above TASK_UNMAPPED_BASE.
        s.insert(anon(gap - 0x1000, gap + 0x30_0000 - 0x1000));
        assert_eq!(
            s.find_free(0x1000, Placement::Page).unwrap().as_u64(),
            l.task_size - 0x30_0000
        );
        assert_eq!(
            s.find_free(0x40_0000, Placement::Page),
            Err(SpaceError::NoSpace { len: 0x40_0000 })
        );
    }

    #[test]
    fn mappings_above_mmap_base_are_skipped() {
        let l = layout();
        let mut s = AddressSpace::new(l);
        // A MAP_FIXED mapping straddling mmap_base.
        s.insert(anon(l.mmap_base - 0x1000, l.mmap_base + 0x1000));
        assert_eq!(
            s.find_free(0x1000, Placement::Page).unwrap().as_u64(),
            l.mmap_base - 0x2000
        );
        // Nothing fits a range larger than the space below mmap_base nor the
        // one above TASK_UNMAPPED_BASE.
        assert_eq!(
            s.find_free(l.mmap_base, Placement::Page),
            Err(SpaceError::NoSpace { len: l.mmap_base })
        );
    }

    #[test]
    fn unmap_splits_and_forgets_private_pages() {
        let mut s = AddressSpace::new(layout());
        s.insert(anon(0x10000, 0x14000));
        s.write_page(va(0x11000), |p| p.bytes_mut()[5] = 7);
        s.write_page(va(0x12000), |p| p.bytes_mut()[5] = 8);
        s.unmap(va(0x11000), va(0x12000));
        assert!(s.vma_at(va(0x11000)).is_none());
        assert_eq!(s.vma_at(va(0x10fff)).unwrap().end, va(0x11000));
        assert_eq!(s.vma_at(va(0x12000)).unwrap().start, va(0x12000));
        assert_eq!(s.read_page(va(0x12000), |p| p.unwrap().byte(5)), 8);
        // Mapping the hole again shows zeros, not the old byte.
        s.insert(anon(0x11000, 0x12000));
        assert!(s.read_page(va(0x11000), |p| p.is_none()));
        assert!(s.violations().is_empty(), "{:?}", s.violations());
    }

    /// A clone shares the table of private pages until one side changes
    /// it; each side then sees only its own writes and unmaps.
    #[test]
    fn clones_share_private_pages_until_one_side_changes_them() {
        let mut s = AddressSpace::new(layout());
        s.insert(anon(0x10000, 0x14000));
        s.write_page(va(0x11000), |p| p.bytes_mut()[5] = 7);
        let mut c = s.clone();
        assert!(Rc::ptr_eq(&s.private, &c.private));
        // Unmapping where nothing was written changes no table.
        c.drop_private(va(0x12000), va(0x14000));
        assert!(Rc::ptr_eq(&s.private, &c.private));
        c.write_page(va(0x11000), |p| p.bytes_mut()[5] = 9);
        assert!(!Rc::ptr_eq(&s.private, &c.private));
        assert_eq!(s.read_page(va(0x11000), |p| p.unwrap().byte(5)), 7);
        assert_eq!(c.read_page(va(0x11000), |p| p.unwrap().byte(5)), 9);
        assert_ne!(s, c);
        let mut d = s.clone();
        d.unmap(va(0x11000), va(0x12000));
        assert_eq!(s.read_page(va(0x11000), |p| p.unwrap().byte(5)), 7);
        d.insert(anon(0x11000, 0x12000));
        assert!(d.read_page(va(0x11000), |p| p.is_none()));
        // Equal contents compare equal whether shared or not.
        let e = s.clone();
        c.write_page(va(0x11000), |p| p.bytes_mut()[5] = 7);
        assert_eq!(s, e);
        assert_eq!(s, c);
    }

    #[test]
    fn change_each_keeps_changes_before_a_hole() {
        let mut s = AddressSpace::new(layout());
        s.insert(anon(0x10000, 0x12000));
        s.insert(anon(0x13000, 0x14000));
        let r = s.change_each(va(0x11000), va(0x14000), |v| {
            v.perm.write = false;
            Ok(())
        });
        // Linux mprotect(): the part before the hole changed, then ENOMEM.
        assert_eq!(r, Err(SpaceError::Hole { addr: va(0x12000) }));
        assert!(s.vma_at(va(0x10000)).unwrap().perm.write);
        assert!(!s.vma_at(va(0x11000)).unwrap().perm.write);
        assert!(s.vma_at(va(0x13000)).unwrap().perm.write);
        // A range starting in a hole changes nothing.
        let r = s.change_each(va(0x12000), va(0x14000), |_| unreachable!());
        assert_eq!(r, Err(SpaceError::Hole { addr: va(0x12000) }));
        // A range past the last mapping.
        let r = s.change_each(va(0x13000), va(0x15000), |_| Ok(()));
        assert_eq!(r, Err(SpaceError::Hole { addr: va(0x14000) }));
    }

    #[test]
    fn mapped_parts_report_the_first_hole() {
        let mut s = AddressSpace::new(layout());
        s.insert(anon(0x10000, 0x12000));
        s.insert(anon(0x13000, 0x14000));
        let (parts, hole) = s.mapped_parts(va(0xf000), va(0x13800));
        assert_eq!(
            parts,
            vec![
                (va(0x10000), va(0x12000), false),
                (va(0x13000), va(0x13800), false)
            ]
        );
        assert_eq!(hole, Some(va(0xf000)));
        let (parts, hole) = s.mapped_parts(va(0x10000), va(0x12000));
        assert_eq!(parts.len(), 1);
        assert_eq!(hole, None);
    }

    #[test]
    fn private_object_mappings_copy_on_write_and_shared_ones_write_through() {
        let l = layout();
        let object = Object::new_shared(ObjectKind::Tmpfs, 4);
        let mut written = Page::zeroed(l.page);
        written.bytes_mut()[0] = 0x5a;
        object
            .borrow_mut()
            .pages
            .insert(1, std::rc::Rc::new(written));
        let mut private = AddressSpace::new(l);
        private.insert(Vma {
            mapping: Mapping::Object {
                sharing: Sharing::Private,
                object: object.clone(),
                first_page: 0,
            },
            ..anon(0x10000, 0x14000)
        });
        // Reads go through to the object until the page is written.
        assert_eq!(private.read_page(va(0x11000), |p| p.unwrap().byte(0)), 0x5a);
        private.write_page(va(0x11000), |p| p.bytes_mut()[1] = 1);
        assert_eq!(private.read_page(va(0x11000), |p| p.unwrap().byte(0)), 0x5a);
        assert_eq!(object.borrow().pages[&1].byte(1), 0);
        // A shared mapping of the same object writes the object; the private
        // copy no longer follows it.
        let mut shared = AddressSpace::new(l);
        shared.insert(Vma {
            mapping: Mapping::Object {
                sharing: Sharing::Shared,
                object: object.clone(),
                first_page: 0,
            },
            ..anon(0x20000, 0x24000)
        });
        shared.write_page(va(0x21000), |p| p.bytes_mut()[0] = 0x77);
        assert_eq!(object.borrow().pages[&1].byte(0), 0x77);
        assert_eq!(private.read_page(va(0x11000), |p| p.unwrap().byte(0)), 0x5a);
        // Dropping the private copy shows the object again.
        private.drop_private(va(0x10000), va(0x14000));
        assert_eq!(private.read_page(va(0x11000), |p| p.unwrap().byte(0)), 0x77);
    }

    #[test]
    fn splitting_an_object_mapping_keeps_object_offsets() {
        let l = layout();
        let object = Object::new_shared(ObjectKind::SharedAnon, 4);
        let mut s = AddressSpace::new(l);
        s.insert(Vma {
            mapping: Mapping::Object {
                sharing: Sharing::Shared,
                object: object.clone(),
                first_page: 0,
            },
            ..anon(0x10000, 0x14000)
        });
        s.unmap(va(0x10000), va(0x12000));
        s.write_page(va(0x13000), |p| p.bytes_mut()[0] = 3);
        // 0x13000 is page 3 of the object.
        assert_eq!(object.borrow().pages[&3].byte(0), 3);
        assert!(s.violations().is_empty());
    }

    #[test]
    fn permissions_follow_arm64_do_page_fault() {
        let mut v = anon(0x1000, 0x2000);
        v.perm = Perm {
            read: false,
            write: true,
            exec: false,
        };
        // Write implies read.
        assert!(v.allows(Need::Read) && v.allows(Need::Write));
        v.perm = Perm {
            read: false,
            write: false,
            exec: true,
        };
        // Exec-only is not readable with Enhanced PAN.
        assert!(!v.allows(Need::Read) && !v.allows(Need::Write));
        v.perm = Perm {
            read: true,
            write: false,
            exec: false,
        };
        assert!(v.allows(Need::Read) && !v.allows(Need::Write));
    }

    #[test]
    fn violations_are_found() {
        let mut s = AddressSpace::new(layout());
        s.insert(anon(0x10000, 0x11000));
        s.write_page(va(0x10000), |p| p.set_tag_at(0, Tag::new(3).unwrap()));
        assert_eq!(s.violations().len(), 1, "{:?}", s.violations());
        s.vmas.get_mut(&va(0x10000)).unwrap().tagged = true;
        assert!(s.violations().is_empty());
        s.vmas.remove(&va(0x10000));
        assert_eq!(s.violations().len(), 1);
    }
}
