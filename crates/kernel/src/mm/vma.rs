//! Virtual memory areas and the per-process tree of them (Linux:
//! `struct vm_area_struct`, the maple tree of `mm->mm_mt`, `mm/vma.c`).
//!
//! Owns [`Vma`], its flags [`VmFlags`], what backs it ([`VmaBacking`]), its
//! anonymous-memory anchor ([`AnonVma`]), and [`VmaTree`] with the
//! primitives the system calls of [`crate::mm::mmap`] are built from: split,
//! the two merge rules Linux uses, `anon_vma_prepare()` and the fork copy.
//!
//! # Invariants (checked by [`VmaTree::check`])
//! - VMAs are non-empty, page aligned, below `TASK_SIZE`, sorted and
//!   disjoint; the tree's key is the VMA's start.
//! - `VM_MTE` only with `VM_MTE_ALLOWED` (arm64 `arch_validate_flags()`);
//!   `VM_MTE_ALLOWED` exactly on anonymous and shmem mappings of a machine
//!   with MTE (arm64 `arch_calc_vm_flag_bits()`: `MAP_ANONYMOUS` or
//!   `shmem_file()`), never on regular files.
//! - `VM_SHARED` mappings are backed by an object (shared anonymous memory is
//!   a shmem object, Linux `shmem_zero_setup()`), never carry an anon_vma,
//!   `VM_MERGEABLE` or `VM_ACCOUNT`.
//! - `VM_HUGEPAGE` and `VM_NOHUGEPAGE` are never both set.
//!
//! # When VMAs share an [`AnonId`]
//! Linux assigns `vma->anon_vma` lazily, at the first anonymous fault
//! (`anon_vma_prepare()`), so the model does too: a VMA starts with
//! `anon: None` and [`VmaTree::prepare_anon`] gives it one. That call reuses
//! an adjacent VMA's anon_vma when the two could merge but for their
//! protections (`find_mergeable_anon_vma()`, `anon_vma_compatible()`) and the
//! neighbour's chain is singular, so that a later mprotect can merge them.
//! Splitting copies the anon_vma to both halves (`anon_vma_clone()`); merging
//! keeps whichever side has one (`dup_anon_vma()`); fork gives every child
//! VMA that had one a fresh id (`anon_vma_fork()`). The anon_vma chain is
//! reduced to whether it is singular ([`AnonChain`]), which is all that
//! merging looks at (`is_mergeable_anon_vma()`'s `list_is_singular()`).
//!
//! # Merging
//! Two rules, as in Linux 6.8:
//! - a new mapping (`VmaTree::insert_mapping`, `mmap_region()`) tries the
//!   next VMA first, then the previous one with the next one's anon_vma;
//! - a changed range (`VmaTree::modify_flags`, `vma_modify()` ->
//!   `vma_merge()`) tries the previous VMA with the range's anon_vma, then the
//!   next one, and all three only if the outer two have compatible anon_vmas.
//!
//! Compatible means: equal flags, the same backing object at contiguous page
//! offsets (anonymous VMAs: contiguous addresses), and
//! `is_mergeable_anon_vma()`: equal anon_vmas, or one side without one while
//! the neighbour's chain is singular. A VMA with an anon_vma therefore never
//! merges into a neighbour without one (Jann Horn, linux-mm, Aug 2023: the
//! empty chain of a VMA without an anon_vma is not singular).
//!
//! # Shortcuts
//! - No mempolicy, userfaultfd, anon_vma names, `vm_ops->close`, `VM_LOCKED`
//!   or `VM_GROWSDOWN` stacks: the scenario language cannot create them, and
//!   each only ever prevents a merge.
//! - `VM_MAYREAD`/`VM_MAYWRITE`/`VM_MAYEXEC`/`VM_MAYSHARE` are implied: every
//!   object is opened read-write, so `mprotect` never fails with `EACCES`.
//! - No `vm.max_map_count` limit (65530): its failure on `madvise` is
//!   `EAGAIN`, which the scenario language has no name for.
//! - `anon_vma_clone()` may hand a forked VMA an orphaned anon_vma of an
//!   ancestor; the model always allocates a fresh one.

use core::fmt;
use core::ops::{BitOr, BitOrAssign};
use std::collections::BTreeMap;

use mte::VirtAddr;
use uapi::Prot;

use crate::mm::layout::{TASK_SIZE, is_page_aligned, page_index, pages_in};
use crate::mm::{AnonId, IdAlloc, ObjectId, Pgoff};

/// The flags of a VMA (Linux: `vm_flags_t`), with Linux's bit values.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct VmFlags(u64);

impl VmFlags {
    pub const NONE: VmFlags = VmFlags(0);
    /// `VM_READ`, `VM_WRITE`, `VM_EXEC`: the protections asked for.
    pub const READ: VmFlags = VmFlags(0x1);
    pub const WRITE: VmFlags = VmFlags(0x2);
    pub const EXEC: VmFlags = VmFlags(0x4);
    /// `VM_SHARED`: writes reach the object (`MAP_SHARED`).
    pub const SHARED: VmFlags = VmFlags(0x8);
    /// `VM_ACCOUNT`: the mapping's pages are charged to the commit limit.
    pub const ACCOUNT: VmFlags = VmFlags(0x0010_0000);
    /// `VM_HUGEPAGE`, `VM_NOHUGEPAGE`: `MADV_HUGEPAGE` / `MADV_NOHUGEPAGE`.
    pub const HUGEPAGE: VmFlags = VmFlags(0x2000_0000);
    pub const NOHUGEPAGE: VmFlags = VmFlags(0x4000_0000);
    /// `VM_MERGEABLE`: KSM may merge its pages (`MADV_MERGEABLE`).
    pub const MERGEABLE: VmFlags = VmFlags(0x8000_0000);
    /// `VM_MTE` (`VM_HIGH_ARCH_0`): mapped Normal Tagged (`PROT_MTE`).
    pub const MTE: VmFlags = VmFlags(1 << 32);
    /// `VM_MTE_ALLOWED` (`VM_HIGH_ARCH_1`): the memory can hold tags.
    pub const MTE_ALLOWED: VmFlags = VmFlags(1 << 33);

    /// `VM_ACCESS_FLAGS`: what each mprotect call replaces.
    pub const ACCESS: VmFlags = VmFlags(0x7);

    const NAMED: [(VmFlags, &'static str); 10] = [
        (Self::READ, "READ"),
        (Self::WRITE, "WRITE"),
        (Self::EXEC, "EXEC"),
        (Self::SHARED, "SHARED"),
        (Self::ACCOUNT, "ACCOUNT"),
        (Self::HUGEPAGE, "HUGEPAGE"),
        (Self::NOHUGEPAGE, "NOHUGEPAGE"),
        (Self::MERGEABLE, "MERGEABLE"),
        (Self::MTE, "MTE"),
        (Self::MTE_ALLOWED, "MTE_ALLOWED"),
    ];

    pub const fn bits(self) -> u64 {
        self.0
    }

    /// Whether every flag of `other` is set.
    pub const fn contains(self, other: VmFlags) -> bool {
        self.0 & other.0 == other.0
    }

    pub const fn intersects(self, other: VmFlags) -> bool {
        self.0 & other.0 != 0
    }

    pub const fn union(self, other: VmFlags) -> VmFlags {
        VmFlags(self.0 | other.0)
    }

    pub const fn difference(self, other: VmFlags) -> VmFlags {
        VmFlags(self.0 & !other.0)
    }

    /// `calc_vm_prot_bits()` with arm64's `arch_calc_vm_prot_bits()`:
    /// `VM_MTE` only on a machine with MTE.
    pub fn from_prot(prot: Prot, mte: MteSupport) -> VmFlags {
        let mut flags = VmFlags::NONE;
        for (on, flag) in [
            (prot.read, Self::READ),
            (prot.write, Self::WRITE),
            (prot.exec, Self::EXEC),
            (prot.mte && mte == MteSupport::Present, Self::MTE),
        ] {
            if on {
                flags |= flag;
            }
        }
        flags
    }
}

impl BitOr for VmFlags {
    type Output = VmFlags;
    fn bitor(self, rhs: VmFlags) -> VmFlags {
        self.union(rhs)
    }
}

impl BitOrAssign for VmFlags {
    fn bitor_assign(&mut self, rhs: VmFlags) {
        *self = self.union(rhs);
    }
}

impl fmt::Debug for VmFlags {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("VmFlags(")?;
        let mut first = true;
        for (flag, name) in Self::NAMED {
            if self.contains(flag) {
                if !first {
                    f.write_str(" | ")?;
                }
                f.write_str(name)?;
                first = false;
            }
        }
        f.write_str(")")
    }
}

/// Whether the machine has MTE (Linux: `system_supports_mte()`); off under
/// `tag-storage=none`.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub enum MteSupport {
    Absent,
    Present,
}

/// The overcommit policy (Linux: `vm.overcommit_memory`).
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub enum Overcommit {
    /// `OVERCOMMIT_ALWAYS` (1): every commit succeeds.
    Always,
    /// `OVERCOMMIT_GUESS` (0, the default): one request of more pages than
    /// `limit_pages` (total RAM plus swap) fails with `ENOMEM`
    /// (`__vm_enough_memory()`).
    Guess { limit_pages: u64 },
}

/// What an address space is configured with.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub struct VmConfig {
    pub mte: MteSupport,
    pub overcommit: Overcommit,
}

impl VmConfig {
    /// Whether committing `pages` more pages is allowed.
    pub fn may_commit(&self, pages: u64) -> bool {
        match self.overcommit {
            Overcommit::Always => true,
            Overcommit::Guess { limit_pages } => pages <= limit_pages,
        }
    }
}

/// What backs a VMA (Linux: `vm_file` and `vm_pgoff`).
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub enum VmaBacking {
    /// Private anonymous memory (`vma_is_anonymous()`). Its page offset is
    /// the page number of its address (`do_mmap()` sets `vm_pgoff = addr >>
    /// PAGE_SHIFT` for it, and nothing moves a VMA: no `mremap`).
    Anon,
    /// A shmem (tmpfs) object: `map=shm`, and the object behind a shared
    /// anonymous mapping.
    Shm { object: ObjectId, pgoff: Pgoff },
    /// A regular file's page cache: never tagged.
    File { object: ObjectId, pgoff: Pgoff },
}

/// How many anon_vmas a VMA's chain links (Linux: `vma->anon_vma_chain`);
/// only singular versus longer matters (`is_mergeable_anon_vma()`).
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub enum AnonChain {
    /// Only the VMA's own anon_vma.
    Singular,
    /// Its own and its ancestors': the VMA was copied by fork.
    Forked,
}

/// A VMA's anonymous-memory anchor (Linux: `vma->anon_vma`).
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub struct AnonVma {
    pub id: AnonId,
    pub chain: AnonChain,
}

/// One virtual memory area: `[start, end)` with one set of flags and one
/// backing.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub struct Vma {
    pub start: VirtAddr,
    pub end: VirtAddr,
    pub flags: VmFlags,
    pub backing: VmaBacking,
    /// Assigned at the first anonymous fault of a private VMA (also a
    /// private file mapping's copy-on-write); `None` until then and always
    /// for shared VMAs.
    pub anon: Option<AnonVma>,
}

impl Vma {
    pub fn len(&self) -> u64 {
        self.end.as_u64() - self.start.as_u64()
    }

    pub fn is_empty(&self) -> bool {
        self.start >= self.end
    }

    pub fn pages(&self) -> u64 {
        pages_in(self.len())
    }

    pub fn contains(&self, addr: VirtAddr) -> bool {
        self.start <= addr && addr < self.end
    }

    /// The protections as `mmap` and `mprotect` take them; `mte` is
    /// `VM_MTE`, which stays set once set.
    pub fn prot(&self) -> Prot {
        Prot {
            read: self.flags.contains(VmFlags::READ),
            write: self.flags.contains(VmFlags::WRITE),
            exec: self.flags.contains(VmFlags::EXEC),
            mte: self.is_tagged(),
        }
    }

    pub fn is_shared(&self) -> bool {
        self.flags.contains(VmFlags::SHARED)
    }

    /// `VM_MTE`: pages are mapped Normal Tagged.
    pub fn is_tagged(&self) -> bool {
        self.flags.contains(VmFlags::MTE)
    }

    /// The backing object, `None` for private anonymous memory.
    pub fn object(&self) -> Option<ObjectId> {
        match self.backing {
            VmaBacking::Anon => None,
            VmaBacking::Shm { object, .. } | VmaBacking::File { object, .. } => Some(object),
        }
    }

    /// The page offset of `start` (Linux: `vm_pgoff`).
    pub fn pgoff(&self) -> Pgoff {
        match self.backing {
            VmaBacking::Anon => Pgoff::new(page_index(self.start)),
            VmaBacking::Shm { pgoff, .. } | VmaBacking::File { pgoff, .. } => pgoff,
        }
    }

    /// The page offset of `addr` in the backing (Linux: `linear_page_index()`).
    pub fn pgoff_of(&self, addr: VirtAddr) -> Pgoff {
        assert!(self.contains(addr), "BUG: {addr} outside {self:?}");
        let pages = page_index(addr) - page_index(self.start);
        self.pgoff()
            .checked_add(pages)
            .expect("BUG: page offset overflow inside a VMA")
    }

    /// Cuts the VMA at `at`: `self` keeps `[start, at)`, the result is
    /// `[at, end)` with the same flags, anon_vma and the backing advanced
    /// (Linux `__split_vma()`).
    fn split_off(&mut self, at: VirtAddr) -> Vma {
        assert!(
            self.start < at && at < self.end && is_page_aligned(at),
            "BUG: split of {self:?} at {at}"
        );
        let backing = match self.backing {
            VmaBacking::Anon => VmaBacking::Anon,
            VmaBacking::Shm { object, .. } => VmaBacking::Shm {
                object,
                pgoff: self.pgoff_of(at),
            },
            VmaBacking::File { object, .. } => VmaBacking::File {
                object,
                pgoff: self.pgoff_of(at),
            },
        };
        let right = Vma {
            start: at,
            backing,
            ..*self
        };
        self.end = at;
        right
    }
}

/// Whether `right` continues `left`'s backing: the same object (or both
/// anonymous) at the page offset where `left` ends. Linux compares
/// `vm_file` and `vm_pgoff + vma_pages()`.
fn continues_backing(left: &Vma, right: &Vma) -> bool {
    let same_object = match (left.backing, right.backing) {
        (VmaBacking::Anon, VmaBacking::Anon) => true,
        (VmaBacking::Shm { object: a, .. }, VmaBacking::Shm { object: b, .. })
        | (VmaBacking::File { object: a, .. }, VmaBacking::File { object: b, .. }) => a == b,
        _ => false,
    };
    same_object && left.pgoff().checked_add(left.pages()) == Some(right.pgoff())
}

/// Linux `is_mergeable_vma()` plus the page offset test of
/// `can_vma_merge_before/after()`: `left` ends where `right` starts, flags
/// are equal, the backing continues.
fn compatible(left: &Vma, right: &Vma) -> bool {
    left.end == right.start && left.flags == right.flags && continues_backing(left, right)
}

/// Linux `is_mergeable_anon_vma()`: `neighbour` is the existing VMA whose
/// chain is tested, `None` when comparing the two outer VMAs of a three-way
/// merge.
fn anon_mergeable(a: Option<AnonVma>, b: Option<AnonVma>, neighbour: Option<&Vma>) -> bool {
    let singular = neighbour.is_none_or(|v| {
        matches!(
            v.anon,
            Some(AnonVma {
                chain: AnonChain::Singular,
                ..
            })
        )
    });
    if (a.is_none() || b.is_none()) && singular {
        return true;
    }
    a.map(|x| x.id) == b.map(|x| x.id)
}

/// Linux `can_vma_merge_after()`: `candidate` may extend `prev` upwards.
fn can_merge_after(prev: &Vma, candidate: &Vma) -> bool {
    compatible(prev, candidate) && anon_mergeable(candidate.anon, prev.anon, Some(prev))
}

/// Linux `can_vma_merge_before()`: `candidate` may extend `next` downwards.
fn can_merge_before(next: &Vma, candidate: &Vma) -> bool {
    compatible(candidate, next) && anon_mergeable(candidate.anon, next.anon, Some(next))
}

/// Linux `anon_vma_compatible()`: `a` and `b` could merge but for their
/// protections.
fn anon_compatible(a: &Vma, b: &Vma) -> bool {
    a.end == b.start
        && a.flags.difference(VmFlags::ACCESS) == b.flags.difference(VmFlags::ACCESS)
        && continues_backing(a, b)
}

/// One broken invariant of a [`VmaTree`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum VmaViolation {
    /// The tree's key is not the VMA's start.
    KeyMismatch { key: VirtAddr, vma: Vma },
    /// An empty or reversed VMA.
    Empty { vma: Vma },
    /// A VMA boundary not on a page boundary.
    Unaligned { vma: Vma },
    /// A VMA reaching past `TASK_SIZE`.
    BeyondTaskSize { vma: Vma },
    /// Two VMAs overlap.
    Overlap { first: Vma, second: Vma },
    /// Flags that break a rule of the module contract.
    Flags { vma: Vma, rule: FlagRule },
}

/// The flag rules of the module contract.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FlagRule {
    MteWithoutAllowed,
    MteAllowedMismatch,
    HugeAndNoHuge,
    SharedWithoutObject,
    AnonVmaOnShared,
    MergeableShared,
    AccountShared,
}

/// The VMAs of one address space, keyed by start (Linux: `mm->mm_mt`).
#[derive(Clone, Debug)]
pub struct VmaTree {
    vmas: BTreeMap<VirtAddr, Vma>,
    config: VmConfig,
}

impl VmaTree {
    pub fn new(config: VmConfig) -> Self {
        Self {
            vmas: BTreeMap::new(),
            config,
        }
    }

    pub fn config(&self) -> VmConfig {
        self.config
    }

    /// The number of VMAs (Linux: `mm->map_count`).
    pub fn len(&self) -> usize {
        self.vmas.len()
    }

    pub fn is_empty(&self) -> bool {
        self.vmas.is_empty()
    }

    /// The VMA containing `addr` (Linux: `vma_lookup()`).
    pub fn find(&self, addr: VirtAddr) -> Option<&Vma> {
        self.vmas
            .range(..=addr)
            .next_back()
            .map(|(_, v)| v)
            .filter(|v| v.contains(addr))
    }

    /// The first VMA ending above `addr` (Linux: `find_vma()`): the one
    /// containing it, or else the next one.
    pub fn find_next(&self, addr: VirtAddr) -> Option<&Vma> {
        self.find(addr).or_else(|| {
            self.vmas
                .range((
                    core::ops::Bound::Excluded(addr),
                    core::ops::Bound::Unbounded,
                ))
                .next()
                .map(|(_, v)| v)
        })
    }

    /// The last VMA ending at or below `addr`.
    pub fn prev_of(&self, addr: VirtAddr) -> Option<&Vma> {
        self.vmas
            .range(..addr)
            .rev()
            .map(|(_, v)| v)
            .find(|v| v.end <= addr)
    }

    /// Every VMA, lowest first.
    pub fn iter(&self) -> impl Iterator<Item = &Vma> {
        self.vmas.values()
    }

    /// The VMAs overlapping `[start, end)`, lowest first.
    pub fn overlapping(&self, start: VirtAddr, end: VirtAddr) -> impl Iterator<Item = &Vma> {
        let first = self.find_next(start).map_or(end, |v| v.start).min(end);
        self.vmas.range(first..end).map(|(_, v)| v)
    }

    /// The VMAs starting below `high`, lowest first.
    pub(crate) fn starting_below(&self, high: VirtAddr) -> impl DoubleEndedIterator<Item = &Vma> {
        self.vmas.range(..high).map(|(_, v)| v)
    }

    /// The VMA that ends exactly at `addr`.
    fn ending_at(&self, addr: VirtAddr) -> Option<Vma> {
        self.vmas
            .range(..addr)
            .next_back()
            .map(|(_, v)| *v)
            .filter(|v| v.end == addr)
    }

    /// Whether no VMA overlaps `[start, end)`.
    pub(crate) fn is_free(&self, start: VirtAddr, end: VirtAddr) -> bool {
        self.overlapping(start, end).next().is_none()
    }

    /// Splits the VMA that strictly contains `at`, if any.
    pub(crate) fn split_at(&mut self, at: VirtAddr) {
        let Some(vma) = self.find(at).copied() else {
            return;
        };
        if vma.start == at {
            return;
        }
        let left = self
            .vmas
            .get_mut(&vma.start)
            .expect("BUG: VMA vanished during split");
        let right = left.split_off(at);
        self.vmas.insert(right.start, right);
    }

    /// Removes `[start, end)`, splitting VMAs at its edges, and returns the
    /// removed pieces lowest first (Linux `do_vmi_align_munmap()`).
    pub(crate) fn remove_range(&mut self, start: VirtAddr, end: VirtAddr) -> Vec<Vma> {
        self.split_at(start);
        self.split_at(end);
        let keys: Vec<VirtAddr> = self.vmas.range(start..end).map(|(k, _)| *k).collect();
        keys.into_iter()
            .map(|k| self.vmas.remove(&k).expect("BUG: key vanished"))
            .collect()
    }

    /// Sets the flags of `[start, end)`, which must lie inside one VMA, then
    /// merges it with its neighbours by Linux's `vma_merge()` rules. Returns
    /// the end of the VMA now holding the range (Linux `vma_iter_end()`).
    pub(crate) fn modify_flags(
        &mut self,
        start: VirtAddr,
        end: VirtAddr,
        flags: VmFlags,
    ) -> VirtAddr {
        self.split_at(start);
        self.split_at(end);
        let piece = self
            .vmas
            .get_mut(&start)
            .filter(|v| v.end == end)
            .unwrap_or_else(|| panic!("BUG: {start}..{end} is not inside one VMA"));
        piece.flags = flags;
        self.merge_changed(start)
    }

    /// Linux `vma_merge()` for the VMA at `start` whose flags just changed.
    fn merge_changed(&mut self, start: VirtAddr) -> VirtAddr {
        let cur = self.vmas[&start];
        let prev = self.ending_at(cur.start);
        let next = self.vmas.get(&cur.end).copied();
        let merge_prev = prev.is_some_and(|p| can_merge_after(&p, &cur));
        let merge_next = next.is_some_and(|n| can_merge_before(&n, &cur));
        match (prev, next) {
            (Some(p), Some(n))
                if merge_prev && merge_next && anon_mergeable(p.anon, n.anon, None) =>
            {
                // Cases 1 and 6: prev absorbs both.
                self.vmas.remove(&cur.start);
                self.vmas.remove(&n.start);
                self.extend(p.start, n.end, p.anon.or(n.anon).or(cur.anon))
            }
            (Some(p), _) if merge_prev => {
                // Cases 2 and 7: prev absorbs the range.
                self.vmas.remove(&cur.start);
                self.extend(p.start, cur.end, p.anon.or(cur.anon))
            }
            (_, Some(n)) if merge_next => {
                // Cases 3 and 8: next grows down over the range.
                self.vmas.remove(&n.start);
                self.extend(cur.start, n.end, n.anon.or(cur.anon))
            }
            _ => cur.end,
        }
    }

    /// Moves the end of the VMA at `start` to `end` and sets its anon_vma.
    fn extend(&mut self, start: VirtAddr, end: VirtAddr, anon: Option<AnonVma>) -> VirtAddr {
        let vma = self
            .vmas
            .get_mut(&start)
            .expect("BUG: merge target vanished");
        vma.end = end;
        vma.anon = anon;
        end
    }

    /// Adds a new mapping over a free range, merging it with its neighbours
    /// by `mmap_region()`'s rules: next first, then prev with next's
    /// anon_vma (Linux 6.8 `vma_expand()`).
    pub(crate) fn insert_mapping(&mut self, new: Vma) {
        assert!(
            new.anon.is_none() && self.is_free(new.start, new.end),
            "BUG: new mapping {new:?} over an occupied range or with an anon_vma"
        );
        let prev = self.ending_at(new.start);
        let next = self.vmas.get(&new.end).copied();
        let merge_next = next.filter(|n| can_merge_before(n, &new));
        let candidate = Vma {
            anon: merge_next.and_then(|n| n.anon),
            ..new
        };
        let merge_prev = prev.filter(|p| can_merge_after(p, &candidate));
        match (merge_prev, merge_next) {
            (Some(p), Some(n)) => {
                self.vmas.remove(&n.start);
                self.extend(p.start, n.end, p.anon.or(n.anon));
            }
            (Some(p), None) => {
                self.extend(p.start, new.end, p.anon);
            }
            (None, Some(n)) => {
                self.vmas.remove(&n.start);
                let grown = Vma {
                    end: n.end,
                    anon: n.anon,
                    ..new
                };
                self.vmas.insert(grown.start, grown);
            }
            (None, None) => {
                self.vmas.insert(new.start, new);
            }
        }
    }

    /// Gives the private VMA containing `addr` an anon_vma if it has none
    /// and returns it (Linux `anon_vma_prepare()`): a compatible neighbour's
    /// (next first, then prev; `find_mergeable_anon_vma()`) if its chain is
    /// singular, else a fresh one from `ids`.
    ///
    /// The caller (a fault on a private VMA) has looked the VMA up; calling
    /// this without one, or on a shared VMA, is a bug.
    pub fn prepare_anon(&mut self, addr: VirtAddr, ids: &mut IdAlloc<AnonId>) -> AnonId {
        let vma = *self
            .find(addr)
            .unwrap_or_else(|| panic!("BUG: anon_vma_prepare at unmapped {addr}"));
        assert!(!vma.is_shared(), "BUG: anon_vma_prepare on shared {vma:?}");
        if let Some(anon) = vma.anon {
            return anon.id;
        }
        let reusable = |old: Option<Vma>, a: &Vma, b: &Vma| match old?.anon? {
            AnonVma {
                id,
                chain: AnonChain::Singular,
            } if anon_compatible(a, b) => Some(id),
            _ => None,
        };
        let next = self.vmas.get(&vma.end).copied();
        let prev = self.ending_at(vma.start);
        let id = next
            .and_then(|n| reusable(Some(n), &vma, &n))
            .or_else(|| prev.and_then(|p| reusable(Some(p), &p, &vma)))
            .unwrap_or_else(|| ids.alloc());
        self.vmas
            .get_mut(&vma.start)
            .expect("BUG: VMA vanished")
            .anon = Some(AnonVma {
            id,
            chain: AnonChain::Singular,
        });
        id
    }

    /// The VMAs a forked child starts with (Linux `dup_mmap()`): the same
    /// ranges, flags and backings; a VMA with an anon_vma gets a fresh one
    /// whose chain also links the parent's (`anon_vma_fork()`). The caller
    /// copies or shares the pages.
    pub fn fork(&self, ids: &mut IdAlloc<AnonId>) -> VmaTree {
        let vmas = self
            .vmas
            .iter()
            .map(|(k, v)| {
                let anon = v.anon.map(|_| AnonVma {
                    id: ids.alloc(),
                    chain: AnonChain::Forked,
                });
                (*k, Vma { anon, ..*v })
            })
            .collect();
        VmaTree {
            vmas,
            config: self.config,
        }
    }

    /// Every broken invariant of the module contract (empty when all hold).
    pub fn check(&self) -> Vec<VmaViolation> {
        let Self { vmas, config } = self;
        let mut out = Vec::new();
        let mut prev: Option<&Vma> = None;
        for (key, vma) in vmas {
            if *key != vma.start {
                out.push(VmaViolation::KeyMismatch {
                    key: *key,
                    vma: *vma,
                });
            }
            if vma.is_empty() {
                out.push(VmaViolation::Empty { vma: *vma });
            }
            if !is_page_aligned(vma.start) || !is_page_aligned(vma.end) {
                out.push(VmaViolation::Unaligned { vma: *vma });
            }
            if vma.end.as_u64() > TASK_SIZE {
                out.push(VmaViolation::BeyondTaskSize { vma: *vma });
            }
            if let Some(p) = prev.filter(|p| p.end > vma.start) {
                out.push(VmaViolation::Overlap {
                    first: *p,
                    second: *vma,
                });
            }
            for rule in flag_rules_broken(vma, config) {
                out.push(VmaViolation::Flags { vma: *vma, rule });
            }
            prev = Some(vma);
        }
        out
    }
}

/// The flag rules of the module contract that `vma` breaks.
fn flag_rules_broken(vma: &Vma, config: &VmConfig) -> Vec<FlagRule> {
    let f = vma.flags;
    let can_hold_tags = config.mte == MteSupport::Present
        && matches!(vma.backing, VmaBacking::Anon | VmaBacking::Shm { .. });
    let shared = f.contains(VmFlags::SHARED);
    [
        (
            f.contains(VmFlags::MTE) && !f.contains(VmFlags::MTE_ALLOWED),
            FlagRule::MteWithoutAllowed,
        ),
        (
            f.contains(VmFlags::MTE_ALLOWED) != can_hold_tags,
            FlagRule::MteAllowedMismatch,
        ),
        (
            f.contains(VmFlags::HUGEPAGE | VmFlags::NOHUGEPAGE),
            FlagRule::HugeAndNoHuge,
        ),
        (
            shared && vma.backing == VmaBacking::Anon,
            FlagRule::SharedWithoutObject,
        ),
        (shared && vma.anon.is_some(), FlagRule::AnonVmaOnShared),
        (
            shared && f.contains(VmFlags::MERGEABLE),
            FlagRule::MergeableShared,
        ),
        (
            shared && f.contains(VmFlags::ACCOUNT),
            FlagRule::AccountShared,
        ),
    ]
    .into_iter()
    .filter_map(|(broken, rule)| broken.then_some(rule))
    .collect()
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::mm::layout::PAGE_SIZE;

    pub(crate) fn config() -> VmConfig {
        VmConfig {
            mte: MteSupport::Present,
            overcommit: Overcommit::Always,
        }
    }

    pub(crate) fn va(raw: u64) -> VirtAddr {
        VirtAddr::new(raw).unwrap()
    }

    pub(crate) fn page(n: u64) -> VirtAddr {
        va(n * PAGE_SIZE)
    }

    const RW: VmFlags = VmFlags(0x3);

    /// A machine without MTE: no VMA carries `VM_MTE_ALLOWED`, which keeps
    /// the flags of these tests to the ones under test.
    fn plain() -> VmConfig {
        VmConfig {
            mte: MteSupport::Absent,
            overcommit: Overcommit::Always,
        }
    }

    fn anon(start: u64, end: u64, flags: VmFlags) -> Vma {
        Vma {
            start: page(start),
            end: page(end),
            flags,
            backing: VmaBacking::Anon,
            anon: None,
        }
    }

    fn file(start: u64, end: u64, object: u64, pgoff: u64) -> Vma {
        Vma {
            start: page(start),
            end: page(end),
            flags: RW | VmFlags::SHARED,
            backing: VmaBacking::File {
                object: ObjectId::new(object),
                pgoff: Pgoff::new(pgoff),
            },
            anon: None,
        }
    }

    fn layout(tree: &VmaTree) -> Vec<(u64, u64)> {
        tree.iter()
            .map(|v| (page_index(v.start), page_index(v.end)))
            .collect()
    }

    #[test]
    fn flags_print_their_linux_names() {
        assert_eq!(
            format!("{:?}", VmFlags::READ | VmFlags::MTE | VmFlags::MTE_ALLOWED),
            "VmFlags(READ | MTE | MTE_ALLOWED)"
        );
        assert_eq!(format!("{:?}", VmFlags::NONE), "VmFlags()");
    }

    #[test]
    fn vm_mte_comes_from_prot_mte_only_on_an_mte_machine() {
        // arm64 arch_calc_vm_prot_bits(): VM_MTE iff system_supports_mte().
        let prot = Prot {
            mte: true,
            ..Prot::READ_WRITE
        };
        assert_eq!(
            VmFlags::from_prot(prot, MteSupport::Present),
            RW | VmFlags::MTE
        );
        assert_eq!(VmFlags::from_prot(prot, MteSupport::Absent), RW);
    }

    #[test]
    fn find_and_neighbours() {
        let mut t = VmaTree::new(plain());
        t.insert_mapping(anon(10, 20, RW));
        t.insert_mapping(anon(30, 40, VmFlags::READ));
        assert_eq!(t.find(page(10)).map(|v| v.start), Some(page(10)));
        assert_eq!(
            t.find(va(20 * PAGE_SIZE - 1)).map(|v| v.start),
            Some(page(10))
        );
        assert!(t.find(page(20)).is_none());
        assert_eq!(t.find_next(page(20)).map(|v| v.start), Some(page(30)));
        assert!(t.find_next(page(40)).is_none());
        assert_eq!(t.prev_of(page(30)).map(|v| v.start), Some(page(10)));
        assert_eq!(t.prev_of(page(25)).map(|v| v.start), Some(page(10)));
        assert!(t.prev_of(page(15)).is_none());
        let over: Vec<_> = t.overlapping(page(15), page(31)).map(|v| v.start).collect();
        assert_eq!(over, vec![page(10), page(30)]);
        assert_eq!(t.overlapping(page(20), page(30)).count(), 0);
        assert!(t.check().is_empty());
    }

    #[test]
    fn adjacent_anonymous_mappings_with_equal_flags_merge_on_insert() {
        // mmap_region(): an unfaulted anonymous mapping extends its neighbours.
        let mut t = VmaTree::new(plain());
        t.insert_mapping(anon(10, 20, RW));
        t.insert_mapping(anon(30, 40, RW));
        t.insert_mapping(anon(20, 30, RW));
        assert_eq!(layout(&t), vec![(10, 40)]);
        t.insert_mapping(anon(40, 50, VmFlags::READ));
        assert_eq!(layout(&t), vec![(10, 40), (40, 50)]);
    }

    #[test]
    fn file_mappings_merge_only_at_contiguous_offsets_of_the_same_object() {
        let mut t = VmaTree::new(plain());
        t.insert_mapping(file(10, 20, 1, 0));
        // Same object, pgoff 10 continues pgoff 0 + 10 pages: merges.
        t.insert_mapping(file(20, 25, 1, 10));
        assert_eq!(layout(&t), vec![(10, 25)]);
        // Same object, pgoff 16 != 15: no merge.
        t.insert_mapping(file(25, 30, 1, 16));
        // Another object at the right offset: no merge.
        t.insert_mapping(file(30, 35, 2, 20));
        assert_eq!(layout(&t), vec![(10, 25), (25, 30), (30, 35)]);
    }

    #[test]
    fn changing_the_middle_splits_in_three_and_restoring_merges_back() {
        let mut t = VmaTree::new(plain());
        t.insert_mapping(anon(10, 20, RW));
        let end = t.modify_flags(page(12), page(15), VmFlags::READ);
        assert_eq!(end, page(15));
        assert_eq!(layout(&t), vec![(10, 12), (12, 15), (15, 20)]);
        assert_eq!(t.find(page(13)).unwrap().flags, VmFlags::READ);
        // vma_merge() case 1/6: prev and next both absorb the range.
        let end = t.modify_flags(page(12), page(15), RW);
        assert_eq!(end, page(20));
        assert_eq!(layout(&t), vec![(10, 20)]);
        assert!(t.check().is_empty());
    }

    #[test]
    fn split_pieces_of_a_file_mapping_keep_their_offsets_and_remerge() {
        let mut t = VmaTree::new(plain());
        t.insert_mapping(file(10, 20, 7, 100));
        t.modify_flags(page(13), page(20), VmFlags::READ | VmFlags::SHARED);
        let right = t.find(page(13)).unwrap();
        assert_eq!(right.pgoff(), Pgoff::new(103));
        assert_eq!(
            t.find(page(19)).unwrap().pgoff_of(page(19)),
            Pgoff::new(109)
        );
        t.modify_flags(page(13), page(20), RW | VmFlags::SHARED);
        assert_eq!(layout(&t), vec![(10, 20)]);
    }

    #[test]
    fn different_anon_vmas_do_not_merge() {
        let mut ids = IdAlloc::new();
        let mut t = VmaTree::new(plain());
        t.insert_mapping(anon(10, 20, RW));
        t.insert_mapping(anon(20, 30, VmFlags::READ));
        let a = t.prepare_anon(page(10), &mut ids);
        // Flags differ only in protection and the neighbour's chain is
        // singular: find_mergeable_anon_vma() reuses `a`.
        assert_eq!(t.prepare_anon(page(25), &mut ids), a);

        let mut t = VmaTree::new(plain());
        t.insert_mapping(anon(10, 20, RW));
        t.insert_mapping(anon(20, 30, VmFlags::READ | VmFlags::MERGEABLE));
        let a = t.prepare_anon(page(10), &mut ids);
        // Flags differ beyond protection: a fresh anon_vma.
        let b = t.prepare_anon(page(25), &mut ids);
        assert_ne!(a, b);
        // Make them equal in flags: the anon_vmas still differ, so no merge.
        t.modify_flags(page(20), page(30), RW);
        assert_eq!(layout(&t), vec![(10, 20), (20, 30)]);
    }

    #[test]
    fn an_unfaulted_range_merges_into_a_faulted_neighbour_but_not_the_reverse() {
        // is_mergeable_anon_vma(): one side without an anon_vma merges only
        // if the existing neighbour's chain is singular, and an empty chain
        // is not.
        let mut ids = IdAlloc::new();
        let mut t = VmaTree::new(plain());
        t.insert_mapping(anon(10, 20, RW));
        t.insert_mapping(anon(20, 30, VmFlags::READ));
        let a = t.prepare_anon(page(10), &mut ids);
        // [20, 30) has no anon_vma, prev has a singular chain: merges.
        t.modify_flags(page(20), page(30), RW);
        assert_eq!(layout(&t), vec![(10, 30)]);
        assert_eq!(t.find(page(25)).unwrap().anon.unwrap().id, a);

        let mut t = VmaTree::new(plain());
        t.insert_mapping(anon(10, 20, RW));
        t.insert_mapping(anon(20, 30, VmFlags::READ));
        t.prepare_anon(page(25), &mut ids);
        // Now the changed range has the anon_vma and prev has none: no merge.
        t.modify_flags(page(20), page(30), RW);
        assert_eq!(layout(&t), vec![(10, 20), (20, 30)]);
    }

    #[test]
    fn split_halves_share_the_anon_vma_and_fork_gives_fresh_forked_ones() {
        let mut ids = IdAlloc::new();
        let mut t = VmaTree::new(plain());
        t.insert_mapping(anon(10, 20, RW));
        let a = t.prepare_anon(page(10), &mut ids);
        t.modify_flags(page(15), page(20), VmFlags::READ);
        assert_eq!(t.find(page(17)).unwrap().anon.unwrap().id, a);

        let child = t.fork(&mut ids);
        let c: Vec<AnonVma> = child.iter().map(|v| v.anon.unwrap()).collect();
        assert_eq!(c.len(), 2);
        assert!(c.iter().all(|x| x.chain == AnonChain::Forked && x.id != a));
        assert_ne!(c[0].id, c[1].id);
        // The parent is unchanged.
        assert!(
            t.iter()
                .all(|v| v.anon.unwrap().chain == AnonChain::Singular)
        );
        // A forked VMA never takes in an unfaulted neighbour: its chain is
        // not singular.
        let mut child = child;
        child.insert_mapping(anon(20, 30, VmFlags::READ));
        assert_eq!(layout(&child), vec![(10, 15), (15, 20), (20, 30)]);
    }

    #[test]
    fn insert_prefers_next_when_prev_and_next_anon_vmas_conflict() {
        // mmap_region(): next is checked with no anon_vma, then prev with
        // next's: prev (anon a) and next (anon b) cannot both merge.
        let mut ids = IdAlloc::new();
        let mut t = VmaTree::new(plain());
        t.insert_mapping(anon(10, 20, RW));
        t.insert_mapping(anon(30, 40, VmFlags::READ));
        let a = t.prepare_anon(page(10), &mut ids);
        let b = t.prepare_anon(page(30), &mut ids);
        assert_ne!(a, b);
        t.modify_flags(page(30), page(40), RW);
        t.insert_mapping(anon(20, 30, RW));
        assert_eq!(layout(&t), vec![(10, 20), (20, 40)]);
        assert_eq!(t.find(page(20)).unwrap().anon.unwrap().id, b);
    }

    #[test]
    fn remove_range_splits_edges_and_returns_the_pieces() {
        let mut t = VmaTree::new(plain());
        t.insert_mapping(anon(10, 20, RW));
        t.insert_mapping(file(20, 30, 1, 0));
        let gone = t.remove_range(page(15), page(25));
        assert_eq!(
            gone.iter()
                .map(|v| (page_index(v.start), page_index(v.end)))
                .collect::<Vec<_>>(),
            vec![(15, 20), (20, 25)]
        );
        assert_eq!(gone[1].pgoff(), Pgoff::new(0));
        assert_eq!(layout(&t), vec![(10, 15), (25, 30)]);
        assert_eq!(t.find(page(25)).unwrap().pgoff(), Pgoff::new(5));
    }

    #[test]
    fn check_reports_flag_rules() {
        let mut t = VmaTree::new(config());
        let mut bad = anon(10, 20, RW | VmFlags::MTE);
        t.vmas.insert(bad.start, bad);
        let rules: Vec<FlagRule> = t
            .check()
            .into_iter()
            .filter_map(|v| match v {
                VmaViolation::Flags { rule, .. } => Some(rule),
                _ => None,
            })
            .collect();
        assert_eq!(
            rules,
            vec![FlagRule::MteWithoutAllowed, FlagRule::MteAllowedMismatch]
        );
        bad.flags = RW | VmFlags::SHARED;
        bad.start = page(30);
        bad.end = page(30);
        t.vmas.insert(va(0), bad);
        let found = t.check();
        assert!(
            found
                .iter()
                .any(|v| matches!(v, VmaViolation::KeyMismatch { .. }))
        );
        assert!(
            found
                .iter()
                .any(|v| matches!(v, VmaViolation::Empty { .. }))
        );
        assert!(found.iter().any(|v| matches!(
            v,
            VmaViolation::Flags {
                rule: FlagRule::SharedWithoutObject,
                ..
            }
        )));
    }
}
