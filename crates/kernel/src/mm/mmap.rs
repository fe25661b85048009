//! The memory-mapping system calls over a [`VmaTree`]: `get_unmapped_area`,
//! `mmap`, `munmap`, `mprotect`, `madvise` (Linux `mm/mmap.c`,
//! `mm/mprotect.c`, `mm/madvise.c`, `mm/huge_memory.c`, `mm/ksm.c`,
//! `arch/arm64/include/asm/mman.h`, 6.8).
//!
//! These change VMAs only. Each returns what the caller must then do to
//! pages and page tables: the VMAs it removed with the bounds for freeing
//! page tables ([`Unmapped`]), or the ranges whose flags it visited
//! ([`RangeOutcome`]). Arguments arrive untagged (the caller strips tags:
//! `untagged_addr()`), lengths in bytes as the user gave them.
//!
//! # Rules, and the Linux function each follows
//!
//! | call | condition | result | Linux |
//! |---|---|---|---|
//! | mmap | `len == 0` | `EINVAL` | `do_mmap()` |
//! | mmap | `prot=mte` without MTE | `EINVAL` (spec; Linux ignores the bit) | docs/language.md |
//! | mmap | hint below `mmap_min_addr` | hint raised to it | `round_hint_to_min()` |
//! | mmap | page-aligned `len` overflows | `ENOMEM` | `do_mmap()` |
//! | mmap | `pgoff + pages` overflows | `EINVAL` (Linux `EOVERFLOW`) | `do_mmap()` |
//! | mmap | `prot=mte` where not `VM_MTE_ALLOWED` (regular file) | `EINVAL`, nothing unmapped | `arch_validate_flags()` |
//! | mmap | private writable or shared anonymous, more pages than the commit limit | `ENOMEM`, nothing unmapped | `accountable_mapping()`, `shmem_acct_size()`, `__vm_enough_memory()` |
//! | mmap | `len > TASK_SIZE - mmap_min_addr` | `ENOMEM` | `generic_get_unmapped_area_topdown()` |
//! | mmap fixed | `addr > TASK_SIZE - len` | `ENOMEM` | `__get_unmapped_area()` |
//! | mmap fixed | `addr` not page aligned | `EINVAL` | `__get_unmapped_area()` |
//! | mmap fixed | `addr < mmap_min_addr` | `EPERM` | `security_mmap_addr()`, `cap_mmap_addr()` |
//! | mmap fixed | range mapped | old VMAs split and removed, returned | `mmap_region()` -> `do_vmi_munmap()` |
//! | mmap | no hole below `mmap_base` | bottom-up from `TASK_UNMAPPED_BASE`, else `ENOMEM` | `arch_get_unmapped_area_topdown()` |
//! | mmap | private anonymous or regular file, `len >= 2 MiB` | 2 MiB aligned | `thp_get_unmapped_area()` (6.8, top-down fix) |
//! | mmap | shmem or shared anonymous | not aligned (shmem huge pages off) | `shmem_get_unmapped_area()` |
//! | munmap | `addr` unaligned, `addr > TASK_SIZE` or `len > TASK_SIZE - addr` | `EINVAL` | `do_vmi_munmap()` |
//! | munmap | `len == 0` | `EINVAL` | `do_vmi_munmap()` |
//! | munmap | nothing mapped | success | `do_vmi_munmap()` |
//! | mprotect | `addr` unaligned | `EINVAL` | `do_mprotect_pkey()` |
//! | mprotect | `len == 0` | success, nothing done | `do_mprotect_pkey()` |
//! | mprotect | page-aligned end wraps | `ENOMEM` | `do_mprotect_pkey()` |
//! | mprotect | `prot=mte` without MTE | `EINVAL` | `arch_validate_prot()` |
//! | mprotect | hole at the start | `ENOMEM`, nothing changed | `do_mprotect_pkey()` |
//! | mprotect | hole later, or at the end | `ENOMEM`, VMAs before it changed | `do_mprotect_pkey()` (`vma->vm_start != tmp`, `tmp < end`) |
//! | mprotect | `mte` on a VMA without `VM_MTE_ALLOWED` | `EINVAL`, VMAs before it changed | `arch_validate_flags()` |
//! | mprotect | `mte` left out of a `VM_MTE` VMA | stays `VM_MTE` | `VM_FLAGS_CLEAR` lacks `VM_MTE` on arm64 |
//! | mprotect | a private VMA made writable, more pages than the commit limit | `ENOMEM`, VMAs before it changed | `mprotect_fixup()` |
//! | madvise | `addr` unaligned, page-aligned `len` wraps, `addr + len` wraps | `EINVAL` | `do_madvise()` |
//! | madvise | `len == 0` | success | `do_madvise()` |
//! | madvise | holes | skipped, `ENOMEM` at the end | `madvise_walk_vmas()` |
//! | madvise hugepage / nohugepage | every VMA | sets one flag, clears the other | `hugepage_madvise()` |
//! | madvise mergeable | shared VMAs | ignored | `ksm_madvise()`, `vma_ksm_compatible()` |
//! | madvise unmergeable | VMAs without `VM_MERGEABLE` | ignored | `ksm_madvise()` |
//! | mprotect, madvise | flags change on part of a VMA | split at the edges, merged with neighbours | `vma_modify()` -> `vma_merge()` |
//!
//! Linux 6.8 unmapped the old range of a `MAP_FIXED` mmap before two of its
//! checks (the `VM_MTE` validation and the commit limit) and left it unmapped
//! on failure; 6.12 fixed that (`mmap_region()` rework, backported to
//! stable), and the model follows the fix: a failed mmap changes nothing.

use mte::VirtAddr;
use thiserror::Error;
use uapi::{Advice, Errno, Prot, Sharing};

use crate::mm::layout::{
    MMAP_BASE, MMAP_MIN_ADDR, PAGE_SIZE, PMD_SIZE, TASK_SIZE, TASK_UNMAPPED_BASE, is_page_aligned,
    page_align, pages_in,
};
use crate::mm::vma::{MteSupport, VmFlags, Vma, VmaBacking, VmaTree};
use crate::mm::{ObjectId, Pgoff};

/// Why a mapping call failed, with its context; [`VmaError::errno`] is what
/// the process sees.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Error)]
pub enum VmaError {
    #[error("length 0")]
    ZeroLength,
    #[error("{addr} is not page aligned")]
    Unaligned { addr: VirtAddr },
    #[error("length {len:#x} overflows when rounded to pages")]
    LengthOverflow { len: u64 },
    #[error("range {start}+{len:#x} leaves the user address space")]
    RangeInvalid { start: VirtAddr, len: u64 },
    #[error("PROT_MTE on a machine without MTE")]
    MteUnsupported,
    #[error("PROT_MTE on {start}, a mapping that cannot hold tags")]
    MteNotAllowed { start: VirtAddr },
    #[error("no free range of {len:#x} bytes")]
    NoSpace { len: u64 },
    #[error("fixed mapping {addr}+{len:#x} beyond TASK_SIZE")]
    BeyondTaskSize { addr: VirtAddr, len: u64 },
    #[error("fixed mapping at {addr} below mmap_min_addr")]
    BelowMinAddr { addr: VirtAddr },
    #[error("{addr} is not mapped")]
    Unmapped { addr: VirtAddr },
    #[error("committing {pages} pages exceeds the commit limit")]
    Overcommit { pages: u64 },
    #[error("page offset {pgoff:?} + {pages} pages overflows")]
    PgoffOverflow { pgoff: Pgoff, pages: u64 },
}

impl VmaError {
    /// The errno Linux returns for this failure.
    pub const fn errno(self) -> Errno {
        match self {
            VmaError::ZeroLength
            | VmaError::Unaligned { .. }
            | VmaError::RangeInvalid { .. }
            | VmaError::MteUnsupported
            | VmaError::MteNotAllowed { .. }
            | VmaError::PgoffOverflow { .. } => Errno::Inval,
            VmaError::LengthOverflow { .. }
            | VmaError::NoSpace { .. }
            | VmaError::BeyondTaskSize { .. }
            | VmaError::Unmapped { .. }
            | VmaError::Overcommit { .. } => Errno::NoMem,
            VmaError::BelowMinAddr { .. } => Errno::Perm,
        }
    }
}

/// Where a new mapping goes.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Placement {
    /// Wherever `get_unmapped_area` finds room (`addr = NULL`).
    Anywhere,
    /// At the hint if it is free, else anywhere.
    Hint(VirtAddr),
    /// `MAP_FIXED`: exactly here, replacing what is there.
    Fixed(VirtAddr),
}

/// What a new mapping shows.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum MapSource {
    /// `MAP_ANONYMOUS`. A shared anonymous mapping is backed by a shmem
    /// object the caller created for it (Linux `shmem_zero_setup()`):
    /// `shmem` is `Some` exactly when the mapping is shared.
    Anon { shmem: Option<ObjectId> },
    /// A shmem (tmpfs) file from page offset `pgoff`.
    Shm { object: ObjectId, pgoff: Pgoff },
    /// A regular file from page offset `pgoff`.
    File { object: ObjectId, pgoff: Pgoff },
}

/// The arguments of `mmap`.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct MmapRequest {
    pub placement: Placement,
    pub len: u64,
    pub prot: Prot,
    pub sharing: Sharing,
    pub source: MapSource,
}

/// How `get_unmapped_area` aligns a request.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum ThpAlign {
    /// Page alignment only.
    None,
    /// Align the range so that page offset `pgoff` falls on a 2 MiB
    /// boundary when the mapping spans one (`thp_get_unmapped_area()`;
    /// anonymous memory uses offset 0).
    Pmd { pgoff: Pgoff },
}

/// VMAs removed by `munmap` or by a `MAP_FIXED` mapping. The caller unmaps
/// their pages, then frees page tables over each piece bounded by
/// `[floor, ceiling)`, the gap around the removed range (Linux
/// `unmap_region()` -> `free_pgtables()`: `prev->vm_end`, `next->vm_start`).
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct Unmapped {
    pub pieces: Vec<Vma>,
    pub floor: VirtAddr,
    pub ceiling: VirtAddr,
}

impl Unmapped {
    pub fn is_empty(&self) -> bool {
        self.pieces.is_empty()
    }
}

/// The result of a successful `mmap`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Mapped {
    pub addr: VirtAddr,
    /// What a `MAP_FIXED` mapping replaced.
    pub replaced: Unmapped,
}

/// One piece of a range that `mprotect` or `madvise` visited: `[start,
/// end)` had flags `old` and now has `new` (equal when nothing changed).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FlagChange {
    pub start: VirtAddr,
    pub end: VirtAddr,
    pub old: VmFlags,
    pub new: VmFlags,
}

impl FlagChange {
    pub fn changed(&self) -> bool {
        self.old != self.new
    }
}

/// What `mprotect` or `madvise` did. Both may fail part-way: the pieces in
/// `visited` were processed whether or not `error` is set, so the caller
/// must update their pages either way.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct RangeOutcome {
    pub visited: Vec<FlagChange>,
    pub error: Option<VmaError>,
}

impl RangeOutcome {
    fn failed(error: VmaError) -> Self {
        Self {
            visited: Vec::new(),
            error: Some(error),
        }
    }

    /// The system call's return value.
    pub fn result(&self) -> Result<(), Errno> {
        match self.error {
            Some(e) => Err(e.errno()),
            None => Ok(()),
        }
    }
}

fn addr(raw: u64) -> VirtAddr {
    VirtAddr::new(raw).expect("BUG: user address above 2^56")
}

impl VmaTree {
    /// Finds room for `len` bytes (rounded up to pages): the hint if it is
    /// free, else the highest free range below `MMAP_BASE`, else the lowest
    /// one above `TASK_UNMAPPED_BASE` (Linux `__get_unmapped_area()` ->
    /// `arch_get_unmapped_area_topdown()`; no guard gaps, as no VMA grows).
    pub fn get_unmapped_area(
        &self,
        len: u64,
        hint: Option<VirtAddr>,
        align: ThpAlign,
    ) -> Result<VirtAddr, VmaError> {
        let len = page_align(len).ok_or(VmaError::LengthOverflow { len })?;
        if len == 0 {
            return Err(VmaError::ZeroLength);
        }
        if len > TASK_SIZE {
            return Err(VmaError::NoSpace { len });
        }
        let found = match align {
            ThpAlign::Pmd { pgoff } => match self.thp_area(len, hint, pgoff) {
                Some(a) => Ok(a),
                None => self.topdown_area(len, hint),
            },
            ThpAlign::None => self.topdown_area(len, hint),
        }?;
        if found.as_u64() > TASK_SIZE - len {
            return Err(VmaError::NoSpace { len });
        }
        Ok(found)
    }

    /// Linux `__thp_get_unmapped_area()` with `PMD_SIZE` (6.8, with "mm:
    /// thp_get_unmapped_area must honour topdown preference"): search for
    /// `len + 2 MiB`, then place the range inside so that `pgoff` is 2 MiB
    /// aligned, as high as possible. `None` falls back to a plain search.
    fn thp_area(&self, len: u64, hint: Option<VirtAddr>, pgoff: Pgoff) -> Option<VirtAddr> {
        let off = pgoff.get().checked_mul(PAGE_SIZE)?;
        let off_end = off.checked_add(len)?;
        let off_align = off.checked_next_multiple_of(PMD_SIZE)?;
        if off_end <= off_align || off_end - off_align < PMD_SIZE {
            return None;
        }
        let len_pad = len.checked_add(PMD_SIZE)?;
        off.checked_add(len_pad)?;
        let found = self.topdown_area(len_pad, hint).ok()?;
        if Some(found) == hint {
            return Some(found);
        }
        let off_sub = off.wrapping_sub(found.as_u64()) & (PMD_SIZE - 1);
        // MMF_TOPDOWN is always set: the legacy layout needs a personality
        // or an unlimited stack rlimit, neither of which the model has.
        let shift = if off_sub == 0 { PMD_SIZE } else { off_sub };
        Some(addr(found.as_u64() + shift))
    }

    /// Linux `generic_get_unmapped_area_topdown()` for a page-aligned `len`.
    fn topdown_area(&self, len: u64, hint: Option<VirtAddr>) -> Result<VirtAddr, VmaError> {
        if len > TASK_SIZE - MMAP_MIN_ADDR {
            return Err(VmaError::NoSpace { len });
        }
        if let Some(h) = hint.and_then(|h| page_align(h.as_u64()))
            && TASK_SIZE - len >= h
            && h >= MMAP_MIN_ADDR
            && self.is_free(addr(h), addr(h + len))
        {
            return Ok(addr(h));
        }
        let low = PAGE_SIZE.max(MMAP_MIN_ADDR);
        if let Some(found) = self.highest_gap(len, low, MMAP_BASE) {
            return Ok(found);
        }
        self.lowest_gap(len, TASK_UNMAPPED_BASE, TASK_SIZE)
            .ok_or(VmaError::NoSpace { len })
    }

    /// The top `len` bytes of the highest free gap inside `[low, high)`
    /// (Linux `unmapped_area_topdown()`).
    fn highest_gap(&self, len: u64, low: u64, high: u64) -> Option<VirtAddr> {
        let mut gap_end = high;
        for vma in self.vmas_below(high) {
            let gap_start = vma.end.as_u64().max(low);
            if gap_end >= gap_start && gap_end - gap_start >= len {
                return Some(addr(gap_end - len));
            }
            gap_end = gap_end.min(vma.start.as_u64());
            if gap_end <= low {
                return None;
            }
        }
        (gap_end >= low && gap_end - low >= len).then(|| addr(gap_end - len))
    }

    /// The start of the lowest free gap of `len` bytes inside `[low, high)`
    /// (Linux `unmapped_area()`).
    fn lowest_gap(&self, len: u64, low: u64, high: u64) -> Option<VirtAddr> {
        let mut gap_start = low;
        for vma in self.iter().filter(|v| v.end.as_u64() > low) {
            if gap_start.checked_add(len)? > high {
                return None;
            }
            if vma.start.as_u64() >= gap_start + len {
                return Some(addr(gap_start));
            }
            gap_start = gap_start.max(vma.end.as_u64());
        }
        (gap_start.checked_add(len)? <= high).then(|| addr(gap_start))
    }

    /// VMAs starting below `high`, highest first.
    fn vmas_below(&self, high: u64) -> impl Iterator<Item = &Vma> {
        self.starting_below(addr(high.min(TASK_SIZE))).rev()
    }

    /// `mmap(2)`: validates, finds room (or replaces a fixed range) and adds
    /// the VMA, merged with compatible neighbours. See the module table.
    pub fn mmap(&mut self, req: MmapRequest) -> Result<Mapped, VmaError> {
        let MmapRequest {
            placement,
            len,
            prot,
            sharing,
            source,
        } = req;
        if len == 0 {
            return Err(VmaError::ZeroLength);
        }
        let mte = self.config().mte;
        if prot.mte && mte == MteSupport::Absent {
            return Err(VmaError::MteUnsupported);
        }
        let placement = match placement {
            Placement::Hint(h) => round_hint_to_min(h),
            other => other,
        };
        let len = page_align(len).ok_or(VmaError::LengthOverflow { len })?;
        let pages = pages_in(len);
        let (backing, align) = backing_of(source, sharing);
        let first = match backing {
            VmaBacking::Anon => Pgoff::ZERO,
            VmaBacking::Shm { pgoff, .. } | VmaBacking::File { pgoff, .. } => pgoff,
        };
        if first.checked_add(pages).is_none() {
            return Err(VmaError::PgoffOverflow {
                pgoff: first,
                pages,
            });
        }
        let start = match placement {
            Placement::Fixed(a) => fixed_area(a, len)?,
            Placement::Hint(h) => self.get_unmapped_area(len, Some(h), align)?,
            Placement::Anywhere => self.get_unmapped_area(len, None, align)?,
        };
        let flags = self.new_flags(prot, sharing, backing);
        if flags.contains(VmFlags::MTE) && !flags.contains(VmFlags::MTE_ALLOWED) {
            return Err(VmaError::MteNotAllowed { start });
        }
        let shared_anon = matches!(source, MapSource::Anon { shmem: Some(_) });
        if (flags.contains(VmFlags::ACCOUNT) || shared_anon) && !self.config().may_commit(pages) {
            return Err(VmaError::Overcommit { pages });
        }
        let end = addr(start.as_u64() + len);
        let replaced = if matches!(placement, Placement::Fixed(_)) {
            self.unmap_range(start, end)
        } else {
            Unmapped::default()
        };
        self.insert_mapping(Vma {
            start,
            end,
            flags,
            backing,
            anon: None,
        });
        Ok(Mapped {
            addr: start,
            replaced,
        })
    }

    /// The flags of a new mapping (`do_mmap()`: `calc_vm_prot_bits()`,
    /// `calc_vm_flag_bits()`, `mmap_region()`'s `VM_ACCOUNT`).
    fn new_flags(&self, prot: Prot, sharing: Sharing, backing: VmaBacking) -> VmFlags {
        let mte = self.config().mte;
        let mut flags = VmFlags::from_prot(prot, mte);
        if sharing == Sharing::Shared {
            flags |= VmFlags::SHARED;
        }
        let can_hold_tags = matches!(backing, VmaBacking::Anon | VmaBacking::Shm { .. });
        if can_hold_tags && mte == MteSupport::Present {
            flags |= VmFlags::MTE_ALLOWED;
        }
        // accountable_mapping(): private and writable.
        if sharing == Sharing::Private && prot.write {
            flags |= VmFlags::ACCOUNT;
        }
        flags
    }

    /// Removes `[start, end)` and reports the pieces with the page-table
    /// freeing bounds.
    fn unmap_range(&mut self, start: VirtAddr, end: VirtAddr) -> Unmapped {
        let pieces = self.remove_range(start, end);
        let floor = self.prev_of(start).map_or(VirtAddr::ZERO, |v| v.end);
        let ceiling = self
            .find_next(end)
            .map_or(addr(TASK_SIZE), |v| v.start.max(end));
        Unmapped {
            pieces,
            floor,
            ceiling,
        }
    }

    /// `munmap(2)` (Linux `do_vmi_munmap()`): removes every mapping in
    /// `[start, start + len)`, splitting VMAs at the edges.
    pub fn munmap(&mut self, start: VirtAddr, len: u64) -> Result<Unmapped, VmaError> {
        if !is_page_aligned(start) {
            return Err(VmaError::Unaligned { addr: start });
        }
        if start.as_u64() > TASK_SIZE || len > TASK_SIZE - start.as_u64() {
            return Err(VmaError::RangeInvalid { start, len });
        }
        let len = page_align(len).ok_or(VmaError::RangeInvalid { start, len })?;
        if len == 0 {
            return Err(VmaError::ZeroLength);
        }
        Ok(self.unmap_range(start, addr(start.as_u64() + len)))
    }

    /// `mprotect(2)` (Linux `do_mprotect_pkey()`, `mprotect_fixup()`): sets
    /// the protections of `[start, start + len)` VMA by VMA, stopping at the
    /// first hole or refused VMA; what was done before stays done.
    pub fn mprotect(&mut self, start: VirtAddr, len: u64, prot: Prot) -> RangeOutcome {
        if !is_page_aligned(start) {
            return RangeOutcome::failed(VmaError::Unaligned { addr: start });
        }
        if len == 0 {
            return RangeOutcome::default();
        }
        let Some(end) = page_align(len).and_then(|l| start.as_u64().checked_add(l)) else {
            return RangeOutcome::failed(VmaError::LengthOverflow { len });
        };
        let mte = self.config().mte;
        if prot.mte && mte == MteSupport::Absent {
            return RangeOutcome::failed(VmaError::MteUnsupported);
        }
        let requested = VmFlags::from_prot(prot, mte);
        let mut out = RangeOutcome::default();
        let Some(first) = self.find_next(start).filter(|v| v.start.as_u64() < end) else {
            out.error = Some(VmaError::Unmapped { addr: start });
            return out;
        };
        if first.start > start {
            out.error = Some(VmaError::Unmapped { addr: start });
            return out;
        }
        let mut tmp = first.start.as_u64();
        let mut nstart = start.as_u64();
        while let Some(vma) = self
            .find_next(addr(nstart.min(TASK_SIZE)))
            .filter(|v| v.start.as_u64() < end)
            .copied()
        {
            if vma.start.as_u64() != tmp {
                out.error = Some(VmaError::Unmapped { addr: addr(tmp) });
                return out;
            }
            // Each call names every access bit; other flags, VM_MTE among
            // them, are kept (arm64 VM_FLAGS_CLEAR does not include VM_MTE).
            let mut new = requested.union(vma.flags.difference(VmFlags::ACCESS));
            if new.contains(VmFlags::MTE) && !new.contains(VmFlags::MTE_ALLOWED) {
                out.error = Some(VmaError::MteNotAllowed { start: vma.start });
                return out;
            }
            let piece_end = vma.end.as_u64().min(end);
            let piece = (addr(nstart), addr(piece_end));
            if new != vma.flags {
                let charge = new.contains(VmFlags::WRITE)
                    && !vma
                        .flags
                        .intersects(VmFlags::ACCOUNT | VmFlags::WRITE | VmFlags::SHARED);
                if charge {
                    let pages = pages_in(piece_end - nstart);
                    if !self.config().may_commit(pages) {
                        out.error = Some(VmaError::Overcommit { pages });
                        return out;
                    }
                    new |= VmFlags::ACCOUNT;
                }
                tmp = self.modify_flags(piece.0, piece.1, new).as_u64();
            } else {
                tmp = vma.end.as_u64();
            }
            out.visited.push(FlagChange {
                start: piece.0,
                end: piece.1,
                old: vma.flags,
                new,
            });
            nstart = tmp;
            if nstart >= end {
                break;
            }
        }
        if tmp < end {
            out.error = Some(VmaError::Unmapped {
                addr: addr(tmp.min(TASK_SIZE)),
            });
        }
        out
    }

    /// `madvise(2)` (Linux `do_madvise()`, `madvise_walk_vmas()`): applies
    /// `advice` to every mapped part of `[start, start + len)`, skipping
    /// holes and reporting `ENOMEM` for them at the end. `dontneed` and
    /// `pageout` change no flags: their visited pieces tell the caller
    /// which pages to drop or reclaim.
    pub fn madvise(&mut self, start: VirtAddr, len: u64, advice: Advice) -> RangeOutcome {
        if !is_page_aligned(start) {
            return RangeOutcome::failed(VmaError::Unaligned { addr: start });
        }
        let Some(end) = page_align(len).and_then(|l| start.as_u64().checked_add(l)) else {
            return RangeOutcome::failed(VmaError::RangeInvalid { start, len });
        };
        let mut out = RangeOutcome::default();
        let mut cursor = start.as_u64();
        let mut hole = None;
        while cursor < end {
            let Some(vma) = self.find_next(addr(cursor.min(TASK_SIZE))).copied() else {
                out.error = Some(VmaError::Unmapped {
                    addr: addr(cursor.min(TASK_SIZE)),
                });
                return out;
            };
            if cursor < vma.start.as_u64() {
                hole.get_or_insert(addr(cursor));
                cursor = vma.start.as_u64();
                if cursor >= end {
                    break;
                }
            }
            let piece_end = vma.end.as_u64().min(end);
            let new = advised_flags(vma.flags, advice);
            let reached = if new != vma.flags {
                self.modify_flags(addr(cursor), addr(piece_end), new)
                    .as_u64()
            } else {
                vma.end.as_u64()
            };
            out.visited.push(FlagChange {
                start: addr(cursor),
                end: addr(piece_end),
                old: vma.flags,
                new,
            });
            cursor = piece_end.max(reached);
        }
        out.error = hole.map(|addr| VmaError::Unmapped { addr });
        out
    }
}

/// The flags `advice` gives a VMA (`madvise_vma_behavior()`).
fn advised_flags(flags: VmFlags, advice: Advice) -> VmFlags {
    match advice {
        Advice::DontNeed | Advice::PageOut => flags,
        // hugepage_madvise()
        Advice::HugePage => flags.difference(VmFlags::NOHUGEPAGE) | VmFlags::HUGEPAGE,
        Advice::NoHugePage => flags.difference(VmFlags::HUGEPAGE) | VmFlags::NOHUGEPAGE,
        // ksm_madvise(): vma_ksm_compatible() refuses VM_SHARED/VM_MAYSHARE,
        // which every shared mapping has.
        Advice::Mergeable if flags.contains(VmFlags::SHARED) => flags,
        Advice::Mergeable => flags | VmFlags::MERGEABLE,
        Advice::Unmergeable => flags.difference(VmFlags::MERGEABLE),
    }
}

/// Linux `round_hint_to_min()`: a hint is page-masked, and one below
/// `mmap_min_addr` is raised to it; a zero hint is no hint.
fn round_hint_to_min(hint: VirtAddr) -> Placement {
    let h = hint.align_down(PAGE_SIZE);
    if h == VirtAddr::ZERO {
        Placement::Anywhere
    } else if h.as_u64() < MMAP_MIN_ADDR {
        Placement::Hint(addr(
            page_align(MMAP_MIN_ADDR).expect("BUG: mmap_min_addr overflows"),
        ))
    } else {
        Placement::Hint(h)
    }
}

/// The checks a `MAP_FIXED` address gets (`generic_get_unmapped_area_topdown()`,
/// `__get_unmapped_area()`, `security_mmap_addr()`), in Linux's order.
fn fixed_area(start: VirtAddr, len: u64) -> Result<VirtAddr, VmaError> {
    if len > TASK_SIZE - MMAP_MIN_ADDR {
        return Err(VmaError::NoSpace { len });
    }
    if start.as_u64() > TASK_SIZE - len {
        return Err(VmaError::BeyondTaskSize { addr: start, len });
    }
    if !is_page_aligned(start) {
        return Err(VmaError::Unaligned { addr: start });
    }
    if start.as_u64() < MMAP_MIN_ADDR {
        return Err(VmaError::BelowMinAddr { addr: start });
    }
    Ok(start)
}

/// The backing of a new VMA and how its range is aligned: private anonymous
/// memory and regular files go through `thp_get_unmapped_area()` (ext4 and
/// xfs use it), shmem through `shmem_get_unmapped_area()` with huge pages
/// off (the tmpfs default).
fn backing_of(source: MapSource, sharing: Sharing) -> (VmaBacking, ThpAlign) {
    match (source, sharing) {
        (MapSource::Anon { shmem: None }, Sharing::Private) => {
            (VmaBacking::Anon, ThpAlign::Pmd { pgoff: Pgoff::ZERO })
        }
        (
            MapSource::Anon {
                shmem: Some(object),
            },
            Sharing::Shared,
        ) => (
            VmaBacking::Shm {
                object,
                pgoff: Pgoff::ZERO,
            },
            ThpAlign::None,
        ),
        (MapSource::Anon { .. }, _) => {
            panic!("BUG: shared anonymous memory needs its shmem object, private must not have one")
        }
        (MapSource::Shm { object, pgoff }, _) => {
            (VmaBacking::Shm { object, pgoff }, ThpAlign::None)
        }
        (MapSource::File { object, pgoff }, _) => {
            (VmaBacking::File { object, pgoff }, ThpAlign::Pmd { pgoff })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mm::layout::{PAGE_SIZE, PMD_SIZE};
    use crate::mm::vma::tests::{config, page, va};
    use crate::mm::vma::{Overcommit, VmConfig};

    const K4: u64 = PAGE_SIZE;
    const M2: u64 = PMD_SIZE;
    const R: Prot = Prot {
        read: true,
        write: false,
        exec: false,
        mte: false,
    };
    const RW: Prot = Prot::READ_WRITE;
    const RW_MTE: Prot = Prot {
        mte: true,
        ..Prot::READ_WRITE
    };

    fn anon(placement: Placement, len: u64, prot: Prot) -> MmapRequest {
        MmapRequest {
            placement,
            len,
            prot,
            sharing: Sharing::Private,
            source: MapSource::Anon { shmem: None },
        }
    }

    fn file(placement: Placement, len: u64, prot: Prot, object: u64) -> MmapRequest {
        MmapRequest {
            placement,
            len,
            prot,
            sharing: Sharing::Shared,
            source: MapSource::File {
                object: ObjectId::new(object),
                pgoff: Pgoff::ZERO,
            },
        }
    }

    fn shm(placement: Placement, len: u64, prot: Prot, object: u64) -> MmapRequest {
        MmapRequest {
            source: MapSource::Shm {
                object: ObjectId::new(object),
                pgoff: Pgoff::ZERO,
            },
            ..file(placement, len, prot, object)
        }
    }

    fn layout(t: &VmaTree) -> Vec<(u64, u64)> {
        t.iter()
            .map(|v| (v.start.as_u64(), v.end.as_u64()))
            .collect()
    }

    fn at(n: u64) -> Placement {
        Placement::Fixed(page(n))
    }

    #[test]
    fn top_down_from_mmap_base_and_deterministic() {
        let mut t = VmaTree::new(config());
        let a = t.mmap(anon(Placement::Anywhere, 1, RW)).unwrap();
        // generic_get_unmapped_area_topdown(): the top of the highest gap
        // below mmap_base; 1 byte rounds up to a page.
        assert_eq!(a.addr, va(MMAP_BASE - K4));
        assert!(a.replaced.is_empty());
        let b = t.mmap(anon(Placement::Anywhere, K4, RW)).unwrap();
        assert_eq!(b.addr, va(MMAP_BASE - 2 * K4));
        // Equal flags, adjacent, unfaulted: one VMA (mmap_region() merge).
        assert_eq!(layout(&t), vec![(MMAP_BASE - 2 * K4, MMAP_BASE)]);
        let mut again = VmaTree::new(config());
        again.mmap(anon(Placement::Anywhere, 1, RW)).unwrap();
        again.mmap(anon(Placement::Anywhere, K4, RW)).unwrap();
        assert_eq!(layout(&again), layout(&t));
    }

    #[test]
    fn large_anonymous_and_file_mappings_are_2m_aligned() {
        let mut t = VmaTree::new(config());
        t.mmap(anon(Placement::Anywhere, K4, RW)).unwrap();
        // thp_get_unmapped_area(): search 4 MiB under mmap_base - 4K, found at
        // mmap_base - 4K - 4M, rounded up by 4K to mmap_base - 4M.
        let a = t.mmap(anon(Placement::Anywhere, M2, RW)).unwrap();
        assert_eq!(a.addr, va(MMAP_BASE - 2 * M2));
        // 3 MiB: padded search gives mmap_base - 9M (1M past a 2M boundary),
        // rounded up to mmap_base - 8M.
        let b = t.mmap(anon(Placement::Anywhere, 3 * M2 / 2, RW)).unwrap();
        assert_eq!(b.addr, va(MMAP_BASE - 4 * M2));
        // A regular file goes through thp_get_unmapped_area() too (ext4/xfs).
        let c = t.mmap(file(Placement::Anywhere, M2, RW, 1)).unwrap();
        assert!(c.addr.is_aligned(M2));
        // Below 2 MiB nothing is aligned: the top of the highest gap, the
        // 2M - 4K left between the 4K page and the first 2 MiB mapping.
        let d = t.mmap(anon(Placement::Anywhere, 8 * K4, R)).unwrap();
        assert_eq!(d.addr, va(MMAP_BASE - K4 - 8 * K4));
    }

    #[test]
    fn shmem_and_shared_anonymous_mappings_are_not_aligned() {
        let mut t = VmaTree::new(config());
        t.mmap(anon(Placement::Anywhere, K4, RW)).unwrap();
        let s = t.mmap(shm(Placement::Anywhere, M2, RW, 1)).unwrap();
        assert_eq!(s.addr, va(MMAP_BASE - K4 - M2));
        let shared_anon = MmapRequest {
            sharing: Sharing::Shared,
            source: MapSource::Anon {
                shmem: Some(ObjectId::new(2)),
            },
            ..anon(Placement::Anywhere, M2, RW)
        };
        let sa = t.mmap(shared_anon).unwrap();
        assert_eq!(sa.addr, va(MMAP_BASE - K4 - 2 * M2));
        let vma = t.find(sa.addr).unwrap();
        assert_eq!(
            vma.backing,
            VmaBacking::Shm {
                object: ObjectId::new(2),
                pgoff: Pgoff::ZERO
            }
        );
        assert!(vma.flags.contains(VmFlags::SHARED | VmFlags::MTE_ALLOWED));
        assert!(!vma.flags.contains(VmFlags::ACCOUNT));
    }

    #[test]
    fn a_free_hint_is_taken_and_an_occupied_one_ignored() {
        let mut t = VmaTree::new(config());
        let h = t.mmap(anon(Placement::Hint(page(0x100)), K4, RW)).unwrap();
        assert_eq!(h.addr, page(0x100));
        let again = t.mmap(anon(Placement::Hint(page(0x100)), K4, R)).unwrap();
        assert_eq!(again.addr, va(MMAP_BASE - K4));
        // round_hint_to_min(): the hint is page-masked first, and 0x800
        // masks to NULL, no hint at all: top-down, merged with the page above.
        let low = t.mmap(anon(Placement::Hint(va(0x800)), K4, R)).unwrap();
        assert_eq!(low.addr, va(MMAP_BASE - 2 * K4));
        assert_eq!(t.len(), 2);
    }

    #[test]
    fn fixed_mappings_are_checked_in_linux_order() {
        let mut t = VmaTree::new(config());
        let err = |t: &mut VmaTree, p, len| t.mmap(anon(p, len, RW)).unwrap_err();
        assert_eq!(err(&mut t, at(16), 0), VmaError::ZeroLength);
        assert_eq!(
            err(&mut t, Placement::Fixed(va(0x1234)), K4),
            VmaError::Unaligned { addr: va(0x1234) }
        );
        assert_eq!(
            err(&mut t, Placement::Fixed(va(0)), K4),
            VmaError::BelowMinAddr { addr: va(0) }
        );
        assert_eq!(
            err(&mut t, Placement::Fixed(va(0)), K4).errno(),
            Errno::Perm
        );
        assert_eq!(
            err(&mut t, Placement::Fixed(va(TASK_SIZE - K4)), 2 * K4),
            VmaError::BeyondTaskSize {
                addr: va(TASK_SIZE - K4),
                len: 2 * K4
            }
        );
        assert_eq!(
            err(&mut t, Placement::Anywhere, u64::MAX),
            VmaError::LengthOverflow { len: u64::MAX }
        );
        assert_eq!(
            err(&mut t, Placement::Anywhere, TASK_SIZE).errno(),
            Errno::NoMem
        );
        assert!(t.is_empty());
        let ok = t
            .mmap(anon(Placement::Fixed(va(MMAP_MIN_ADDR)), K4, RW))
            .unwrap();
        assert_eq!(ok.addr, va(MMAP_MIN_ADDR));
        let top = t
            .mmap(anon(Placement::Fixed(va(TASK_SIZE - K4)), K4, RW))
            .unwrap();
        assert_eq!(top.addr, va(TASK_SIZE - K4));
    }

    #[test]
    fn map_fixed_replaces_part_of_a_mapping() {
        let mut t = VmaTree::new(config());
        t.mmap(anon(at(100), 10 * K4, RW)).unwrap();
        let m = t.mmap(file(at(103), 2 * K4, R, 7)).unwrap();
        assert_eq!(m.addr, page(103));
        assert_eq!(m.replaced.pieces.len(), 1);
        let gone = m.replaced.pieces[0];
        assert_eq!((gone.start, gone.end), (page(103), page(105)));
        assert_eq!(gone.backing, VmaBacking::Anon);
        // The neighbours bound the page tables that may be freed.
        assert_eq!(
            (m.replaced.floor, m.replaced.ceiling),
            (page(103), page(105))
        );
        assert_eq!(
            layout(&t),
            vec![
                (page(100).as_u64(), page(103).as_u64()),
                (page(103).as_u64(), page(105).as_u64()),
                (page(105).as_u64(), page(110).as_u64()),
            ]
        );
        // Replacing the file piece with anonymous memory again merges all.
        let back = t.mmap(anon(at(103), 2 * K4, RW)).unwrap();
        assert_eq!(back.replaced.pieces[0].object(), Some(ObjectId::new(7)));
        assert_eq!(layout(&t), vec![(page(100).as_u64(), page(110).as_u64())]);
    }

    #[test]
    fn prot_mte_rules() {
        let mut t = VmaTree::new(config());
        let a = t.mmap(anon(at(100), 4 * K4, RW_MTE)).unwrap();
        let flags = t.find(a.addr).unwrap().flags;
        assert!(flags.contains(VmFlags::MTE | VmFlags::MTE_ALLOWED));
        let s = t.mmap(shm(at(200), K4, RW_MTE, 1)).unwrap();
        assert!(t.find(s.addr).unwrap().is_tagged());
        // arm64 arch_validate_flags(): no VM_MTE_ALLOWED on a regular file;
        // the fixed range keeps its old mapping.
        assert_eq!(
            t.mmap(file(at(101), K4, RW_MTE, 2)),
            Err(VmaError::MteNotAllowed { start: page(101) })
        );
        assert_eq!(t.find(page(101)).unwrap().start, page(100));
        assert_eq!(
            VmaError::MteNotAllowed { start: page(101) }.errno(),
            Errno::Inval
        );
        // Leaving mte out keeps the mapping tagged (VM_MTE is not in arm64's
        // VM_FLAGS_CLEAR).
        let out = t.mprotect(page(100), 4 * K4, RW);
        assert_eq!(out.result(), Ok(()));
        assert!(t.find(page(100)).unwrap().prot().mte);
        // Adding mte to a file mapping fails.
        t.mmap(file(at(300), K4, RW, 3)).unwrap();
        let out = t.mprotect(page(300), K4, RW_MTE);
        assert_eq!(
            out.error,
            Some(VmaError::MteNotAllowed { start: page(300) })
        );
        assert!(!t.find(page(300)).unwrap().is_tagged());
        // Adding mte to an untagged anonymous mapping works.
        t.mmap(anon(at(400), K4, RW)).unwrap();
        assert_eq!(t.mprotect(page(400), K4, RW_MTE).result(), Ok(()));
        assert!(t.find(page(400)).unwrap().is_tagged());
        assert!(t.check().is_empty());
    }

    #[test]
    fn without_mte_prot_mte_is_refused_and_nothing_may_be_tagged() {
        let mut t = VmaTree::new(VmConfig {
            mte: MteSupport::Absent,
            ..config()
        });
        assert_eq!(
            t.mmap(anon(Placement::Anywhere, K4, RW_MTE)),
            Err(VmaError::MteUnsupported)
        );
        let a = t.mmap(anon(Placement::Anywhere, K4, RW)).unwrap();
        assert!(!t.find(a.addr).unwrap().flags.contains(VmFlags::MTE_ALLOWED));
        assert_eq!(
            t.mprotect(a.addr, K4, RW_MTE).error,
            Some(VmaError::MteUnsupported)
        );
        assert!(t.check().is_empty());
    }

    #[test]
    fn munmap_rules() {
        let mut t = VmaTree::new(config());
        t.mmap(anon(at(100), 10 * K4, RW)).unwrap();
        assert_eq!(t.munmap(page(100), 0), Err(VmaError::ZeroLength));
        assert_eq!(
            t.munmap(va(0x100_0800), K4),
            Err(VmaError::Unaligned {
                addr: va(0x100_0800)
            })
        );
        assert_eq!(
            t.munmap(page(100), TASK_SIZE).unwrap_err().errno(),
            Errno::Inval
        );
        // Nothing mapped there: success.
        assert_eq!(
            t.munmap(page(500), K4),
            Ok(Unmapped {
                pieces: vec![],
                floor: page(110),
                ceiling: va(TASK_SIZE),
            })
        );
        // A partial length rounds up to whole pages: pages 103 and 104 go.
        let u = t.munmap(page(103), K4 + 1).unwrap();
        assert_eq!(u.pieces.len(), 1);
        assert_eq!((u.pieces[0].start, u.pieces[0].end), (page(103), page(105)));
        assert_eq!((u.floor, u.ceiling), (page(103), page(105)));
        assert_eq!(
            layout(&t),
            vec![
                (page(100).as_u64(), page(103).as_u64()),
                (page(105).as_u64(), page(110).as_u64()),
            ]
        );
        // Across the hole: both edges split, the gap grows to the neighbours.
        t.mmap(anon(at(90), 5 * K4, R)).unwrap();
        let u = t.munmap(page(102), 5 * K4).unwrap();
        assert_eq!(
            u.pieces
                .iter()
                .map(|v| (v.start, v.end))
                .collect::<Vec<_>>(),
            vec![(page(102), page(103)), (page(105), page(107))]
        );
        assert_eq!((u.floor, u.ceiling), (page(102), page(107)));
        assert!(t.check().is_empty());
    }

    #[test]
    fn mprotect_splits_and_merges() {
        let mut t = VmaTree::new(config());
        t.mmap(anon(at(100), 10 * K4, RW)).unwrap();
        let out = t.mprotect(page(103), 3 * K4, R);
        assert_eq!(out.result(), Ok(()));
        assert_eq!(out.visited.len(), 1);
        let change = out.visited[0];
        assert_eq!((change.start, change.end), (page(103), page(106)));
        // VM_ACCOUNT stays once charged.
        assert_eq!(
            change.old,
            VmFlags::READ | VmFlags::WRITE | VmFlags::ACCOUNT | VmFlags::MTE_ALLOWED
        );
        assert_eq!(
            change.new,
            VmFlags::READ | VmFlags::ACCOUNT | VmFlags::MTE_ALLOWED
        );
        assert_eq!(t.len(), 3);
        let out = t.mprotect(page(103), 3 * K4, RW);
        assert!(out.visited[0].changed());
        assert_eq!(t.len(), 1);
        // Unchanged pieces are visited but not touched.
        let out = t.mprotect(page(100), 10 * K4, RW);
        assert_eq!(out.visited.len(), 1);
        assert!(!out.visited[0].changed());
        // len 0 succeeds without looking; unaligned start is EINVAL.
        assert_eq!(t.mprotect(page(900), 0, R), RangeOutcome::default());
        assert_eq!(
            t.mprotect(va(0x64_0010), K4, R).error,
            Some(VmaError::Unaligned {
                addr: va(0x64_0010)
            })
        );
        assert_eq!(
            t.mprotect(page(100), u64::MAX, R).result(),
            Err(Errno::NoMem)
        );
    }

    #[test]
    fn mprotect_stops_at_a_hole_keeping_what_it_changed() {
        let mut t = VmaTree::new(config());
        t.mmap(anon(at(100), 2 * K4, RW)).unwrap();
        t.mmap(anon(at(103), 2 * K4, RW)).unwrap();
        // A hole at the start: nothing changes.
        let out = t.mprotect(page(99), 3 * K4, R);
        assert_eq!(out.error, Some(VmaError::Unmapped { addr: page(99) }));
        assert!(out.visited.is_empty());
        assert_eq!(t.find(page(100)).unwrap().prot(), RW);
        // A hole in the middle: the first VMA changes, the second does not.
        let out = t.mprotect(page(100), 5 * K4, R);
        assert_eq!(out.error, Some(VmaError::Unmapped { addr: page(102) }));
        assert_eq!(out.result(), Err(Errno::NoMem));
        assert_eq!(out.visited.len(), 1);
        assert_eq!(t.find(page(100)).unwrap().prot(), R);
        assert_eq!(t.find(page(103)).unwrap().prot(), RW);
        // A hole at the end: everything before it changes.
        let out = t.mprotect(page(103), 3 * K4, R);
        assert_eq!(out.error, Some(VmaError::Unmapped { addr: page(105) }));
        assert_eq!(t.find(page(104)).unwrap().prot(), R);
        // A refused VMA after an accepted one: the first keeps its change.
        t.mmap(file(at(105), K4, RW, 1)).unwrap();
        let out = t.mprotect(page(103), 3 * K4, RW_MTE);
        assert_eq!(
            out.error,
            Some(VmaError::MteNotAllowed { start: page(105) })
        );
        assert!(t.find(page(103)).unwrap().is_tagged());
    }

    #[test]
    fn madvise_skips_holes_and_reports_them_at_the_end() {
        let mut t = VmaTree::new(config());
        t.mmap(anon(at(100), 2 * K4, RW)).unwrap();
        t.mmap(anon(at(103), 2 * K4, RW)).unwrap();
        // Holes at pages 99 and 102: both VMAs are advised, ENOMEM after.
        let out = t.madvise(page(99), 6 * K4, Advice::HugePage);
        assert_eq!(out.error, Some(VmaError::Unmapped { addr: page(99) }));
        assert_eq!(out.visited.len(), 2);
        assert!(t.iter().all(|v| v.flags.contains(VmFlags::HUGEPAGE)));
        // A hole after the last VMA ends the walk there (`if (!vma) return
        // -ENOMEM`), after the VMAs before it were advised.
        let out = t.madvise(page(100), 7 * K4, Advice::Mergeable);
        assert_eq!(out.error, Some(VmaError::Unmapped { addr: page(105) }));
        assert!(t.iter().all(|v| v.flags.contains(VmFlags::MERGEABLE)));
        // NOHUGEPAGE replaces HUGEPAGE (hugepage_madvise()).
        let out = t.madvise(page(100), 2 * K4, Advice::NoHugePage);
        assert_eq!(out.result(), Ok(()));
        let f = t.find(page(100)).unwrap().flags;
        assert!(f.contains(VmFlags::NOHUGEPAGE) && !f.contains(VmFlags::HUGEPAGE));
        // Entirely unmapped: ENOMEM.
        assert_eq!(
            t.madvise(page(200), K4, Advice::DontNeed).result(),
            Err(Errno::NoMem)
        );
        // len 0: success; a wrapping range: EINVAL.
        assert_eq!(
            t.madvise(page(200), 0, Advice::DontNeed),
            RangeOutcome::default()
        );
        assert_eq!(
            t.madvise(page(100), u64::MAX, Advice::DontNeed).result(),
            Err(Errno::Inval)
        );
    }

    #[test]
    fn madvise_splits_and_merges_like_mprotect() {
        let mut t = VmaTree::new(config());
        t.mmap(anon(at(100), 10 * K4, RW)).unwrap();
        t.madvise(page(103), 2 * K4, Advice::Mergeable);
        assert_eq!(t.len(), 3);
        assert!(
            t.find(page(104))
                .unwrap()
                .flags
                .contains(VmFlags::MERGEABLE)
        );
        t.madvise(page(100), 10 * K4, Advice::Mergeable);
        assert_eq!(t.len(), 1);
        t.madvise(page(100), 10 * K4, Advice::Unmergeable);
        assert_eq!(t.len(), 1);
        assert!(
            !t.find(page(100))
                .unwrap()
                .flags
                .contains(VmFlags::MERGEABLE)
        );
        // dontneed changes no flag; it reports the range for the caller.
        let out = t.madvise(page(101), K4, Advice::DontNeed);
        assert_eq!(out.visited.len(), 1);
        assert!(!out.visited[0].changed());
        assert_eq!(t.len(), 1);
    }

    #[test]
    fn ksm_ignores_shared_mappings() {
        // vma_ksm_compatible(): VM_SHARED / VM_MAYSHARE are refused quietly.
        let mut t = VmaTree::new(config());
        t.mmap(shm(at(100), K4, RW, 1)).unwrap();
        let out = t.madvise(page(100), K4, Advice::Mergeable);
        assert_eq!(out.result(), Ok(()));
        assert!(!out.visited[0].changed());
        assert!(
            !t.find(page(100))
                .unwrap()
                .flags
                .contains(VmFlags::MERGEABLE)
        );
    }

    #[test]
    fn the_commit_limit_refuses_large_private_writable_mappings() {
        // __vm_enough_memory() with OVERCOMMIT_GUESS: one request of more
        // pages than RAM + swap fails.
        let mut t = VmaTree::new(VmConfig {
            overcommit: Overcommit::Guess { limit_pages: 100 },
            ..config()
        });
        assert_eq!(
            t.mmap(anon(Placement::Anywhere, 101 * K4, RW)),
            Err(VmaError::Overcommit { pages: 101 })
        );
        // Read-only private mappings are not accounted...
        let r = t.mmap(anon(at(1000), 1000 * K4, R)).unwrap();
        assert!(!t.find(r.addr).unwrap().flags.contains(VmFlags::ACCOUNT));
        // ...until mprotect makes them writable.
        assert_eq!(
            t.mprotect(r.addr, 1000 * K4, RW).error,
            Some(VmaError::Overcommit { pages: 1000 })
        );
        assert_eq!(t.mprotect(r.addr, 100 * K4, RW).result(), Ok(()));
        assert!(t.find(r.addr).unwrap().flags.contains(VmFlags::ACCOUNT));
        // Shared anonymous memory is charged by its shmem object.
        let shared_anon = MmapRequest {
            sharing: Sharing::Shared,
            source: MapSource::Anon {
                shmem: Some(ObjectId::new(1)),
            },
            ..anon(Placement::Anywhere, 101 * K4, RW)
        };
        assert_eq!(
            t.mmap(shared_anon),
            Err(VmaError::Overcommit { pages: 101 })
        );
        // A tmpfs file is charged page by page as it fills, not at mmap.
        assert!(t.mmap(shm(Placement::Anywhere, 1000 * K4, RW, 2)).is_ok());
        assert!(t.check().is_empty());
    }
}
