//! Physical memory contents: the bytes of every present frame, DRAM and tag
//! storage alike.
//!
//! Owns: the page buffers and the frame -> buffer index ([`PhysContents`]),
//! and the buffer handle [`PageSlot`].
//!
//! Tags are stored by the kernel as real bytes inside tag storage frames, so
//! data and tags can clobber each other exactly as on hardware: this layer
//! knows nothing of tags, it is just memory.
//!
//! Sparse: a frame owns a buffer only once non-zero bytes are written to it;
//! reading a frame without one gives zeros, and writing zeros to it allocates
//! nothing. [`PhysContents::zero_page`] drops the buffer. Buffers live in a
//! slab (`slots`) with a free list; the index stores `slot + 1` per frame in
//! sparse sections (0: no buffer).
//!
//! A [`PageSlot`] is a stable O(1) handle for the kernel's software TLB: it
//! stays valid until the frame's buffer is dropped (`zero_page`, or
//! `copy_page` from a frame without data). A stale handle is detected (the
//! slot records its frame) and gives `None`, never another frame's bytes.
//!
//! The per-CPU TLB's hit path uses the cheaper [`BufIndex`] instead: the
//! raw slot number of a frame's buffer, valid exactly while
//! [`PhysContents::epoch`] is unchanged, so a use checks one number rather
//! than the slot's frame, and reaches the bytes in one load from the slab.
//! The epoch moves whenever a buffer is added or dropped and whenever bytes
//! may be written through any accessor but
//! [`PhysContents::bytes_at_mut_quiet`] (which the TLB uses only for frames
//! that are not tag storage), so a copy of a page's tags taken in an epoch
//! is also the page's tags for as long as the epoch lasts.
//!
//! Invariants (checked by [`PhysContents::check`]): `index[pfn] == slot + 1`
//! exactly when `slots[slot]` holds `pfn`'s buffer; free slots are empty; the
//! count of pages with data equals the used slots.

use crate::phys::check::PhysViolation;
use crate::phys::layout::PhysLayout;
use crate::phys::sparse::Sparse;
use mte::{Pfn, PhysAddr};
use thiserror::Error;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Error)]
pub enum MemError {
    /// The access touches a byte of no present frame.
    #[error("physical address {addr} is not present")]
    NotPresent { addr: PhysAddr },
    /// The access runs past the end of the physical address space.
    #[error("access of {len} bytes at {addr} overflows the address space")]
    Overflow { addr: PhysAddr, len: usize },
}

/// A handle to the buffer of one frame.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PageSlot {
    index: u32,
    pfn: Pfn,
}

impl PageSlot {
    pub fn pfn(self) -> Pfn {
        self.pfn
    }
}

/// The slot of a frame's buffer (`u32::MAX`: the frame has no buffer, all
/// its bytes are zero), valid while the contents' generation is the one it
/// was taken in (see the module doc). No buffer is a slot number past any
/// slab, so a use is one bounds check.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BufIndex(u32);

impl BufIndex {
    /// No buffer: the frame reads as zeros.
    pub const NONE: BufIndex = BufIndex(u32::MAX);

    pub fn is_none(self) -> bool {
        self == Self::NONE
    }
}

#[derive(Clone, Debug)]
struct Buffer {
    pfn: Pfn,
    bytes: Box<[u8]>,
}

/// The contents of every present frame.
#[derive(Clone, Debug)]
pub struct PhysContents {
    layout: PhysLayout,
    /// `slot + 1` of each frame's buffer; 0 when it has none.
    index: Sparse<u32>,
    slots: Vec<Option<Buffer>>,
    /// Empty slots, reused last-freed first (deterministic).
    free_slots: Vec<u32>,
    pages_with_data: u64,
    /// See the module doc: moves on every buffer added or dropped and on
    /// every tracked write (starts at 1, so 0 is no epoch).
    epoch: u64,
    /// Taken afresh whenever a buffer is added or dropped (the index and
    /// slots change; data writes do not), so that the incremental checker
    /// can reuse the verdict of [`Self::check`] (`crate::mm::generation`).
    generation: u64,
}

impl PhysContents {
    pub fn new(layout: PhysLayout) -> Self {
        let index = Sparse::new(layout.span(), layout.geometry().section_shift());
        Self {
            layout,
            index,
            slots: Vec::new(),
            free_slots: Vec::new(),
            pages_with_data: 0,
            epoch: 1,
            generation: crate::mm::generation::next(),
        }
    }

    fn page_size(&self) -> usize {
        1 << self.layout.geometry().page_shift()
    }

    /// The epoch of buffer indices and tracked writes (see the module doc).
    #[inline]
    pub(crate) fn epoch(&self) -> u64 {
        self.epoch
    }

    /// The generation of the index and slots (see the field).
    #[inline]
    pub(crate) fn generation(&self) -> u64 {
        self.generation
    }

    pub fn pages_with_data(&self) -> u64 {
        self.pages_with_data
    }

    fn check_present(&self, pfn: Pfn) -> Result<(), MemError> {
        match self.layout.region_of(pfn) {
            Some(_) => Ok(()),
            None => Err(MemError::NotPresent {
                addr: pfn.addr(self.layout.geometry().page_shift()),
            }),
        }
    }

    /// The handle of `pfn`'s buffer; `None` when it has none (all zero) or is
    /// not present.
    #[inline]
    pub fn page_slot(&self, pfn: Pfn) -> Option<PageSlot> {
        let &entry = self.index.get(pfn)?;
        (entry != 0).then(|| PageSlot {
            index: entry - 1,
            pfn,
        })
    }

    /// The buffer index of `pfn` in the current generation
    /// ([`BufIndex::NONE`] for a frame without buffer or not present).
    #[inline]
    pub fn buf_index(&self, pfn: Pfn) -> BufIndex {
        match self.index.get(pfn) {
            Some(&entry) if entry != 0 => BufIndex(entry - 1),
            _ => BufIndex::NONE,
        }
    }

    /// The bytes of buffer `index`, taken in the current generation; `None`
    /// for [`BufIndex::NONE`] (zeros). An index of another generation may
    /// name another frame's buffer: the caller checks the generation.
    #[inline]
    pub fn bytes_at(&self, index: BufIndex) -> Option<&[u8]> {
        self.slots
            .get(index.0 as usize)?
            .as_ref()
            .map(|b| &*b.bytes)
    }

    /// [`Self::bytes_at`], to write (a new epoch).
    #[inline]
    pub fn bytes_at_mut(&mut self, index: BufIndex) -> Option<&mut [u8]> {
        self.epoch += 1;
        self.bytes_at_mut_quiet(index)
    }

    /// [`Self::bytes_at_mut`] in the same epoch: only for a frame that is
    /// not tag storage, whose bytes are no page's tags (see the module doc).
    #[inline]
    pub fn bytes_at_mut_quiet(&mut self, index: BufIndex) -> Option<&mut [u8]> {
        self.slots
            .get_mut(index.0 as usize)?
            .as_mut()
            .map(|b| &mut *b.bytes)
    }

    /// The handle of `pfn`'s buffer, giving it a zeroed one if it has none.
    pub fn page_slot_mut(&mut self, pfn: Pfn) -> Result<PageSlot, MemError> {
        self.check_present(pfn)?;
        if let Some(slot) = self.page_slot(pfn) {
            return Ok(slot);
        }
        let buffer = Buffer {
            pfn,
            bytes: vec![0; self.page_size()].into_boxed_slice(),
        };
        self.generation = crate::mm::generation::next();
        self.epoch += 1;
        let index = match self.free_slots.pop() {
            Some(i) => {
                self.slots[i as usize] = Some(buffer);
                i
            }
            None => {
                self.slots.push(Some(buffer));
                u32::try_from(self.slots.len() - 1).expect("BUG: more than 2^32 pages with data")
            }
        };
        *self.index.get_or_materialise(pfn, |_, _| {}) = index + 1;
        self.pages_with_data += 1;
        Ok(PageSlot { index, pfn })
    }

    /// The bytes behind a handle; `None` if the handle is stale.
    #[inline]
    pub fn slot_bytes(&self, slot: PageSlot) -> Option<&[u8]> {
        match self.slots.get(slot.index as usize)? {
            Some(b) if b.pfn == slot.pfn => Some(&b.bytes),
            _ => None,
        }
    }

    #[inline]
    pub fn slot_bytes_mut(&mut self, slot: PageSlot) -> Option<&mut [u8]> {
        self.epoch += 1;
        match self.slots.get_mut(slot.index as usize)? {
            Some(b) if b.pfn == slot.pfn => Some(&mut b.bytes),
            _ => None,
        }
    }

    /// The bytes of `pfn`; `None` when it has no buffer (all zero).
    pub fn page_bytes(&self, pfn: Pfn) -> Option<&[u8]> {
        self.page_slot(pfn).and_then(|s| self.slot_bytes(s))
    }

    /// The bytes of `pfn`, giving it a buffer if needed.
    pub fn page_bytes_mut(&mut self, pfn: Pfn) -> Result<&mut [u8], MemError> {
        let slot = self.page_slot_mut(pfn)?;
        Ok(self.slot_bytes_mut(slot).expect("BUG: fresh slot is stale"))
    }

    /// Whether `pfn` holds a buffer (possibly all zero).
    pub fn has_buffer(&self, pfn: Pfn) -> bool {
        self.page_slot(pfn).is_some()
    }

    /// Zeroes `pfn`, dropping its buffer (Linux `clear_page()`).
    pub fn zero_page(&mut self, pfn: Pfn) -> Result<(), MemError> {
        self.check_present(pfn)?;
        if let Some(slot) = self.page_slot(pfn) {
            self.generation = crate::mm::generation::next();
            self.epoch += 1;
            self.slots[slot.index as usize] = None;
            self.free_slots.push(slot.index);
            *self
                .index
                .get_mut(pfn)
                .expect("BUG: indexed frame without entry") = 0;
            self.pages_with_data -= 1;
        }
        Ok(())
    }

    /// Copies the whole of `src` over `dst` (Linux `copy_page()`).
    pub fn copy_page(&mut self, dst: Pfn, src: Pfn) -> Result<(), MemError> {
        self.check_present(src)?;
        self.check_present(dst)?;
        if dst == src {
            return Ok(());
        }
        match self.page_slot(src) {
            None => self.zero_page(dst),
            Some(src_slot) => {
                let dst_slot = self.page_slot_mut(dst)?;
                let bytes = self.slots[src_slot.index as usize]
                    .as_ref()
                    .expect("BUG: source slot empty")
                    .bytes
                    .clone();
                self.slot_bytes_mut(dst_slot)
                    .expect("BUG: fresh slot is stale")
                    .copy_from_slice(&bytes);
                Ok(())
            }
        }
    }

    /// Splits `[addr, addr + len)` into (frame, offset, length) pieces,
    /// checking every frame is present first (so a write is all or
    /// nothing). Allocation-free: user loads and stores come through here.
    fn pieces(&self, addr: PhysAddr, len: usize) -> Result<Pieces, MemError> {
        let shift = self.layout.geometry().page_shift();
        let page = self.page_size() as u64;
        let end = addr
            .as_u64()
            .checked_add(len as u64)
            .ok_or(MemError::Overflow { addr, len })?;
        let mut at = addr.as_u64();
        while at < end {
            if self
                .layout
                .region_of(PhysAddr::new(at).pfn(shift))
                .is_none()
            {
                return Err(MemError::NotPresent {
                    addr: PhysAddr::new(at),
                });
            }
            at = (at - at % page).saturating_add(page);
        }
        Ok(Pieces {
            at: addr.as_u64(),
            end,
            page,
            shift,
        })
    }

    /// Reads `buf.len()` bytes at `offset` in present frame `pfn`, all
    /// within the frame: the allocation-free read of the access fast path.
    pub fn read_in_frame(&self, pfn: Pfn, offset: usize, buf: &mut [u8]) {
        debug_assert!(self.layout.region_of(pfn).is_some(), "BUG: {pfn:?} absent");
        match self.page_bytes(pfn) {
            Some(bytes) => buf.copy_from_slice(&bytes[offset..offset + buf.len()]),
            None => buf.fill(0),
        }
    }

    /// Writes `data` at `offset` in frame `pfn`, all within the frame (the
    /// fast path's store; zeros to a frame without a buffer allocate
    /// nothing, as [`PhysContents::write`]).
    pub fn write_in_frame(&mut self, pfn: Pfn, offset: usize, data: &[u8]) -> Result<(), MemError> {
        if !self.has_buffer(pfn) && data.iter().all(|&b| b == 0) {
            return self.check_present(pfn);
        }
        self.page_bytes_mut(pfn)?[offset..offset + data.len()].copy_from_slice(data);
        Ok(())
    }

    /// Reads `buf.len()` bytes at `addr` (may cross frames).
    pub fn read(&self, addr: PhysAddr, buf: &mut [u8]) -> Result<(), MemError> {
        let mut done = 0;
        for (pfn, offset, len) in self.pieces(addr, buf.len())? {
            let out = &mut buf[done..done + len];
            match self.page_bytes(pfn) {
                Some(bytes) => out.copy_from_slice(&bytes[offset..offset + len]),
                None => out.fill(0),
            }
            done += len;
        }
        Ok(())
    }

    /// Writes `data` at `addr` (may cross frames). Zeros written to a frame
    /// without a buffer allocate nothing.
    pub fn write(&mut self, addr: PhysAddr, data: &[u8]) -> Result<(), MemError> {
        let mut done = 0;
        for (pfn, offset, len) in self.pieces(addr, data.len())? {
            let src = &data[done..done + len];
            done += len;
            if !self.has_buffer(pfn) && src.iter().all(|&b| b == 0) {
                continue;
            }
            self.page_bytes_mut(pfn)?[offset..offset + len].copy_from_slice(src);
        }
        Ok(())
    }

    fn read_array<const N: usize>(&self, addr: PhysAddr) -> Result<[u8; N], MemError> {
        let mut bytes = [0; N];
        self.read(addr, &mut bytes)?;
        Ok(bytes)
    }

    pub fn read_u8(&self, addr: PhysAddr) -> Result<u8, MemError> {
        self.read_array::<1>(addr).map(|b| b[0])
    }

    pub fn read_u16(&self, addr: PhysAddr) -> Result<u16, MemError> {
        self.read_array(addr).map(u16::from_le_bytes)
    }

    pub fn read_u32(&self, addr: PhysAddr) -> Result<u32, MemError> {
        self.read_array(addr).map(u32::from_le_bytes)
    }

    pub fn read_u64(&self, addr: PhysAddr) -> Result<u64, MemError> {
        self.read_array(addr).map(u64::from_le_bytes)
    }

    pub fn read_u128(&self, addr: PhysAddr) -> Result<u128, MemError> {
        self.read_array(addr).map(u128::from_le_bytes)
    }

    pub fn write_u8(&mut self, addr: PhysAddr, value: u8) -> Result<(), MemError> {
        self.write(addr, &[value])
    }

    pub fn write_u16(&mut self, addr: PhysAddr, value: u16) -> Result<(), MemError> {
        self.write(addr, &value.to_le_bytes())
    }

    pub fn write_u32(&mut self, addr: PhysAddr, value: u32) -> Result<(), MemError> {
        self.write(addr, &value.to_le_bytes())
    }

    pub fn write_u64(&mut self, addr: PhysAddr, value: u64) -> Result<(), MemError> {
        self.write(addr, &value.to_le_bytes())
    }

    pub fn write_u128(&mut self, addr: PhysAddr, value: u128) -> Result<(), MemError> {
        self.write(addr, &value.to_le_bytes())
    }

    /// Host bytes used: buffers, the slab and the index.
    pub fn host_bytes(&self) -> usize {
        self.pages_with_data as usize * self.page_size()
            + self.slots.capacity() * size_of::<Option<Buffer>>()
            + self.free_slots.capacity() * size_of::<u32>()
            + self.index.host_bytes()
    }

    /// Every broken invariant of the contents; empty when all hold.
    pub fn check(&self) -> Vec<PhysViolation> {
        let Self {
            layout,
            index,
            slots,
            free_slots,
            pages_with_data,
            epoch: _,
            generation: _,
        } = self;
        let mut out = Vec::new();
        let mut used = 0;
        for (i, slot) in slots.iter().enumerate() {
            let Some(buffer) = slot else { continue };
            used += 1;
            if layout.region_of(buffer.pfn).is_none() {
                out.push(PhysViolation::ContentsOutsideMemory { pfn: buffer.pfn });
            }
            if index.get(buffer.pfn).copied() != Some(i as u32 + 1)
                || buffer.bytes.len() != self.page_size()
            {
                out.push(PhysViolation::ContentsSlot {
                    pfn: buffer.pfn,
                    slot: i as u32,
                });
            }
        }
        for (start, section) in index.materialised() {
            for (offset, &entry) in section.iter().enumerate() {
                if entry == 0 {
                    continue;
                }
                let pfn = start + offset as u64;
                let owner = slots
                    .get(entry as usize - 1)
                    .and_then(|s| s.as_ref())
                    .map(|b| b.pfn);
                if owner != Some(pfn) {
                    out.push(PhysViolation::ContentsSlot {
                        pfn,
                        slot: entry - 1,
                    });
                }
            }
        }
        for &i in free_slots {
            if slots.get(i as usize).is_none_or(Option::is_some) {
                out.push(PhysViolation::ContentsFreeSlot { slot: i });
            }
        }
        if used != *pages_with_data {
            out.push(PhysViolation::ContentsCount {
                kept: *pages_with_data,
                recounted: used,
            });
        }
        out
    }
}

/// The pieces of a physical range, frame by frame (see `pieces`).
struct Pieces {
    at: u64,
    end: u64,
    page: u64,
    shift: u32,
}

impl Iterator for Pieces {
    type Item = (Pfn, usize, usize);

    fn next(&mut self) -> Option<Self::Item> {
        if self.at >= self.end {
            return None;
        }
        let offset = self.at % self.page;
        let take = (self.page - offset).min(self.end - self.at);
        let piece = (
            PhysAddr::new(self.at).pfn(self.shift),
            offset as usize,
            take as usize,
        );
        self.at += take;
        Some(piece)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::phys::buddy::tests::{region, small_geometry};
    use crate::phys::layout::RegionKind;

    /// DRAM [0, 32), tag storage [40, 48), pages of 4 KiB.
    fn contents() -> PhysContents {
        PhysContents::new(
            PhysLayout::new(
                small_geometry(),
                vec![
                    region(0, 32, RegionKind::Dram),
                    region(40, 8, RegionKind::TagStorageCma),
                ],
            )
            .unwrap(),
        )
    }

    fn pa(a: u64) -> PhysAddr {
        PhysAddr::new(a)
    }

    #[test]
    fn untouched_memory_reads_zero_and_costs_nothing() {
        let mut m = contents();
        assert_eq!(m.read_u64(pa(0x1000)), Ok(0));
        m.write(pa(0x2000), &[0; 64]).unwrap();
        assert_eq!(m.pages_with_data(), 0, "writing zeros allocates nothing");
        assert_eq!(m.page_bytes(Pfn::new(2)), None);
        assert!(m.check().is_empty());
    }

    #[test]
    fn little_endian_accesses_cross_pages() {
        let mut m = contents();
        // A u128 straddling frames 0 and 1: 8 bytes in each.
        m.write_u128(pa(0xff8), 0x0011_2233_4455_6677_8899_aabb_ccdd_eeff)
            .unwrap();
        assert_eq!(
            m.read_u8(pa(0xff8)),
            Ok(0xff),
            "least significant byte first"
        );
        assert_eq!(m.read_u64(pa(0x1000)), Ok(0x0011_2233_4455_6677));
        assert_eq!(m.read_u16(pa(0xffe)), Ok(0x8899));
        assert_eq!(m.read_u32(pa(0xffc)), Ok(0x8899_aabb));
        assert_eq!(m.pages_with_data(), 2);
        m.write_u16(pa(0x3000), 0xbeef).unwrap();
        assert_eq!(m.page_bytes(Pfn::new(3)).unwrap()[..2], [0xef, 0xbe]);
        assert!(m.check().is_empty());
    }

    #[test]
    fn holes_and_overflow_are_errors() {
        let mut m = contents();
        assert_eq!(
            m.read_u8(pa(0x20000)),
            Err(MemError::NotPresent { addr: pa(0x20000) })
        );
        // A write running from frame 31 into the hole at 32 fails on the hole.
        assert_eq!(
            m.write(pa(0x1fffe), &[1, 2, 3, 4]),
            Err(MemError::NotPresent { addr: pa(0x20000) })
        );
        assert!(matches!(
            m.read(pa(u64::MAX), &mut [0; 2]),
            Err(MemError::Overflow { .. })
        ));
        assert_eq!(
            m.zero_page(Pfn::new(35)),
            Err(MemError::NotPresent { addr: pa(0x23000) })
        );
        // Tag storage frames hold bytes like any other.
        m.write_u8(pa(0x28000), 0x5a).unwrap();
        assert_eq!(m.read_u8(pa(0x28000)), Ok(0x5a));
    }

    #[test]
    fn slots_are_stable_handles_and_stale_ones_are_detected() {
        let mut m = contents();
        m.write_u32(pa(0x5000), 7).unwrap();
        let slot = m.page_slot(Pfn::new(5)).unwrap();
        assert_eq!(slot.pfn(), Pfn::new(5));
        m.write_u32(pa(0x6000), 9).unwrap();
        assert_eq!(
            m.slot_bytes(slot).unwrap()[0],
            7,
            "other writes keep the handle valid"
        );
        m.slot_bytes_mut(slot).unwrap()[1] = 1;
        assert_eq!(m.read_u32(pa(0x5000)), Ok(0x107));
        m.zero_page(Pfn::new(5)).unwrap();
        assert_eq!(m.slot_bytes(slot), None);
        // The freed slot is reused by frame 7: the old handle stays stale.
        m.write_u8(pa(0x7000), 1).unwrap();
        assert_eq!(m.page_slot(Pfn::new(7)).unwrap().index, slot.index);
        assert_eq!(m.slot_bytes(slot), None);
        assert!(m.check().is_empty());
    }

    #[test]
    fn checker_catches_a_slot_pointing_at_another_frame() {
        let mut m = contents();
        m.write_u8(pa(0x1000), 1).unwrap();
        m.slots[0].as_mut().unwrap().pfn = Pfn::new(2);
        let v = m.check();
        assert!(
            v.contains(&PhysViolation::ContentsSlot {
                pfn: Pfn::new(2),
                slot: 0
            }),
            "{v:?}"
        );
        assert!(
            v.contains(&PhysViolation::ContentsSlot {
                pfn: Pfn::new(1),
                slot: 0
            }),
            "{v:?}"
        );
    }

    #[test]
    fn copy_page_copies_or_zeroes() {
        let mut m = contents();
        m.write_u64(pa(0x1008), 42).unwrap();
        m.copy_page(Pfn::new(40), Pfn::new(1)).unwrap();
        assert_eq!(m.read_u64(pa(0x28008)), Ok(42));
        m.copy_page(Pfn::new(40), Pfn::new(2)).unwrap();
        assert_eq!(m.read_u64(pa(0x28008)), Ok(0));
        assert!(
            !m.has_buffer(Pfn::new(40)),
            "copying a zero page drops the buffer"
        );
        assert_eq!(m.pages_with_data(), 1);
        assert!(m.check().is_empty());
    }
}
