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
//! nothing. [`PhysContents::zero_page`] drops the buffer (kept, zeroed, for
//! the next frame given one when no handle holds it). Buffers live in a
//! slab (`slots`) with a free list; the index stores `slot + 1` per frame in
//! sparse sections (0: no buffer).
//!
//! A [`PageSlot`] is a stable O(1) handle for the kernel's software TLB: it
//! stays valid until the frame's buffer is dropped (`zero_page`, or
//! `copy_page` from a frame without data). A stale handle is detected (the
//! slot records its frame) and gives `None`, never another frame's bytes.
//!
//! A buffer is a [`PageBuf`]: bytes in cells behind a shared pointer, so
//! that the per-CPU TLB's entries hold the buffer itself
//! ([`PhysContents::page_buf`]) and a hit reads and writes the bytes with
//! no borrow of physical memory and no lookup. Such a handle is valid
//! exactly while the contents' [`Epoch`] is unchanged (after that, the
//! frame may have another buffer or none, and the handle only keeps an
//! orphan alive until it is taken again). The epoch moves whenever a buffer
//! is added or dropped and whenever bytes may be written through any
//! accessor of the contents (the TLB's own stores move it themselves for
//! frames of tag storage, and only for those), so a copy of a page's tags
//! taken in an epoch is also the page's tags for as long as the epoch lasts.
//! The epoch is a shared cell ([`PhysContents::epoch_handle`]) so that a hit
//! compares it without borrowing the contents either. Reads go through the
//! read-only [`PageView`]; only `&mut` accessors hand out writable cells.
//!
//! Invariants (checked by [`PhysContents::check`]): `index[pfn] == slot + 1`
//! exactly when `slots[slot]` holds `pfn`'s buffer; free slots are empty; the
//! count of pages with data equals the used slots. Every buffer added or
//! dropped is logged (its slot and frame) for the incremental form of that
//! check ([`incremental`]); `page_slot_mut` and `zero_page` are the only
//! paths that change the index, the slots or the free slots.

use std::cell::Cell;
use std::rc::Rc;

use crate::phys::check::PhysViolation;
use crate::phys::layout::PhysLayout;
use crate::phys::sparse::Sparse;
use mte::{Pfn, PhysAddr};
use thiserror::Error;

mod incremental;
pub(crate) use incremental::ContentsCheckCache;

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

/// The bytes of one frame, shared between the contents and the per-CPU TLB
/// entries that reach them (see the module doc). Equal when it is the same
/// buffer, not when the bytes are equal: an entry's handle is current when
/// it is the buffer the contents hold.
#[derive(Clone)]
pub struct PageBuf(Rc<[Cell<u8>]>);

impl PageBuf {
    fn zeroed(len: usize) -> PageBuf {
        const FOUR_K: usize = 4096;
        if len == FOUR_K {
            // The one page size modelled: one zeroing of the whole buffer
            // (a loop of cells costs tens of thousands of instructions in
            // the dev profile, more than the page fault that asks for it).
            let page: Rc<[Cell<u8>; FOUR_K]> = Rc::new([const { Cell::new(0) }; FOUR_K]);
            return PageBuf(page);
        }
        PageBuf(std::iter::repeat_with(|| Cell::new(0)).take(len).collect())
    }

    /// `buf` zeroed again if nothing else holds it (no TLB entry, no
    /// orphan handle), for reuse as a fresh buffer; `None` otherwise.
    fn reclaim(mut buf: PageBuf) -> Option<PageBuf> {
        let cells = Rc::get_mut(&mut buf.0)?;
        for c in cells.iter_mut() {
            *c.get_mut() = 0;
        }
        Some(buf)
    }

    fn copy_of(view: PageView<'_>) -> PageBuf {
        PageBuf(view.0.iter().map(|c| Cell::new(c.get())).collect())
    }

    /// The bytes, to read or write in place. Only the per-CPU TLB's hit
    /// path writes through a handle (it keeps the epoch as the module doc
    /// says); everyone else writes through the contents' `&mut` accessors.
    #[inline]
    pub fn cells(&self) -> &[Cell<u8>] {
        &self.0
    }

    /// The shared bytes themselves (for a holder that wants their size in
    /// its type).
    pub fn into_cells(self) -> Rc<[Cell<u8>]> {
        self.0
    }
}

impl PartialEq for PageBuf {
    fn eq(&self, other: &PageBuf) -> bool {
        Rc::ptr_eq(&self.0, &other.0)
    }
}

impl Eq for PageBuf {}

impl std::fmt::Debug for PageBuf {
    // Not the address: debug output stays the same from run to run.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "PageBuf({} bytes)", self.0.len())
    }
}

/// A read-only view of a frame's bytes (writes go through the contents'
/// `&mut` accessors, which move the epoch).
#[derive(Clone, Copy)]
pub struct PageView<'a>(&'a [Cell<u8>]);

impl<'a> PageView<'a> {
    /// A view of `cells` (for tests of code that reads pages).
    pub fn of(cells: &'a [Cell<u8>]) -> PageView<'a> {
        PageView(cells)
    }

    pub fn len(self) -> usize {
        self.0.len()
    }

    pub fn is_empty(self) -> bool {
        self.0.is_empty()
    }

    /// The bytes in order.
    pub fn iter(self) -> impl Iterator<Item = u8> + 'a {
        self.0.iter().map(Cell::get)
    }

    /// Copies the bytes at `offset` into `out`.
    pub fn copy_to(self, offset: usize, out: &mut [u8]) {
        let len = out.len();
        for (o, c) in out.iter_mut().zip(&self.0[offset..offset + len]) {
            *o = c.get();
        }
    }

    /// A copy of all the bytes.
    pub fn to_boxed(self) -> Box<[u8]> {
        self.iter().collect()
    }

    /// Whether the bytes are `bytes`.
    pub fn equals(self, bytes: &[u8]) -> bool {
        self.0.len() == bytes.len() && self.iter().zip(bytes).all(|(a, &b)| a == b)
    }

    /// Whether both hold the same bytes.
    pub fn same_bytes(self, other: PageView<'_>) -> bool {
        self.0.len() == other.0.len() && self.iter().zip(other.iter()).all(|(a, b)| a == b)
    }

    /// The offset of the first non-zero byte.
    pub fn first_nonzero(self) -> Option<usize> {
        self.iter().position(|b| b != 0)
    }
}

/// Copies `data` over `cells`, of the same length.
pub fn copy_into(cells: &[Cell<u8>], data: &[u8]) {
    assert_eq!(cells.len(), data.len(), "BUG: a copy of another length");
    for (c, &b) in cells.iter().zip(data) {
        c.set(b);
    }
}

/// The contents' epoch, shared with whoever compares it on a hot path (see
/// the module doc). Starts at 1, so 0 is no epoch.
#[derive(Clone, Debug)]
pub struct Epoch(Rc<Cell<u64>>);

impl Epoch {
    fn new(value: u64) -> Epoch {
        Epoch(Rc::new(Cell::new(value)))
    }

    #[inline]
    pub fn get(&self) -> u64 {
        self.0.get()
    }

    /// A new epoch: every handle and tag copy taken before is stale.
    #[inline]
    pub fn advance(&self) {
        self.0.set(self.0.get() + 1);
    }
}

#[derive(Debug)]
struct Buffer {
    pfn: Pfn,
    bytes: PageBuf,
}

/// The contents of every present frame. A clone copies every buffer and
/// has an epoch of its own (handles of one never reach the other).
#[derive(Debug)]
pub struct PhysContents {
    layout: PhysLayout,
    /// `slot + 1` of each frame's buffer; 0 when it has none.
    index: Sparse<u32>,
    slots: Vec<Option<Buffer>>,
    /// Empty slots, reused last-freed first (deterministic).
    free_slots: Vec<u32>,
    pages_with_data: u64,
    /// See the module doc: moves on every buffer added or dropped and on
    /// every write through the contents.
    epoch: Epoch,
    /// The slots and frames whose buffer was added or dropped since the
    /// incremental checker last looked ([`incremental`]).
    changes: incremental::ContentsLog,
    /// Dropped buffers nobody else held, zeroed, for the next frames given
    /// a buffer (a host allocation of a page each time is a visible part of
    /// a run's CPU). At most [`PhysContents::SPARE_BUFFERS`]; never seen
    /// from outside.
    spare: Vec<PageBuf>,
}

impl Clone for PhysContents {
    fn clone(&self) -> PhysContents {
        PhysContents {
            layout: self.layout.clone(),
            index: self.index.clone(),
            slots: self
                .slots
                .iter()
                .map(|s| {
                    s.as_ref().map(|b| Buffer {
                        pfn: b.pfn,
                        bytes: PageBuf::copy_of(PageView(b.bytes.cells())),
                    })
                })
                .collect(),
            free_slots: self.free_slots.clone(),
            pages_with_data: self.pages_with_data,
            epoch: Epoch::new(self.epoch.get()),
            // A clone is new to whichever checker looks at it next.
            changes: incremental::ContentsLog::default(),
            spare: Vec::new(),
        }
    }
}

impl PhysContents {
    const SPARE_BUFFERS: usize = 64;

    pub fn new(layout: PhysLayout) -> Self {
        let index = Sparse::new(layout.span(), layout.geometry().section_shift());
        Self {
            layout,
            index,
            slots: Vec::new(),
            free_slots: Vec::new(),
            pages_with_data: 0,
            epoch: Epoch::new(1),
            changes: incremental::ContentsLog::default(),
            spare: Vec::new(),
        }
    }

    fn page_size(&self) -> usize {
        1 << self.layout.geometry().page_shift()
    }

    /// The epoch of buffer handles and writes (see the module doc).
    #[inline]
    pub(crate) fn epoch(&self) -> u64 {
        self.epoch.get()
    }

    /// The epoch itself, to compare (and, for the TLB's stores to tag
    /// storage, advance) without borrowing the contents.
    pub(crate) fn epoch_handle(&self) -> Epoch {
        self.epoch.clone()
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

    /// A handle to `pfn`'s buffer, valid in the current epoch (`None`: the
    /// frame has no buffer and reads as zeros, or is not present).
    pub fn page_buf(&self, pfn: Pfn) -> Option<PageBuf> {
        let slot = self.page_slot(pfn)?;
        self.slots[slot.index as usize]
            .as_ref()
            .map(|b| b.bytes.clone())
    }

    /// The handle of `pfn`'s buffer, giving it a zeroed one if it has none.
    pub fn page_slot_mut(&mut self, pfn: Pfn) -> Result<PageSlot, MemError> {
        self.check_present(pfn)?;
        if let Some(slot) = self.page_slot(pfn) {
            return Ok(slot);
        }
        let bytes = match self.spare.pop() {
            Some(spare) => spare,
            None => PageBuf::zeroed(self.page_size()),
        };
        let buffer = Buffer { pfn, bytes };
        self.epoch.advance();
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
        self.changes.note(index, pfn);
        Ok(PageSlot { index, pfn })
    }

    /// The bytes behind a handle; `None` if the handle is stale.
    #[inline]
    pub fn slot_bytes(&self, slot: PageSlot) -> Option<PageView<'_>> {
        match self.slots.get(slot.index as usize)? {
            Some(b) if b.pfn == slot.pfn => Some(PageView(b.bytes.cells())),
            _ => None,
        }
    }

    /// The bytes behind a handle, to write (a new epoch).
    #[inline]
    pub fn slot_bytes_mut(&mut self, slot: PageSlot) -> Option<&[Cell<u8>]> {
        self.epoch.advance();
        match self.slots.get(slot.index as usize)? {
            Some(b) if b.pfn == slot.pfn => Some(b.bytes.cells()),
            _ => None,
        }
    }

    /// The bytes of `pfn`; `None` when it has no buffer (all zero).
    pub fn page_bytes(&self, pfn: Pfn) -> Option<PageView<'_>> {
        self.page_slot(pfn).and_then(|s| self.slot_bytes(s))
    }

    /// The bytes of `pfn`, giving it a buffer if needed, to write (a new
    /// epoch; see [`copy_into`]).
    pub fn page_bytes_mut(&mut self, pfn: Pfn) -> Result<&[Cell<u8>], MemError> {
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
            self.epoch.advance();
            let dropped = self.slots[slot.index as usize].take();
            if self.spare.len() < Self::SPARE_BUFFERS
                && let Some(spare) = dropped.and_then(|b| PageBuf::reclaim(b.bytes))
            {
                self.spare.push(spare);
            }
            self.free_slots.push(slot.index);
            *self
                .index
                .get_mut(pfn)
                .expect("BUG: indexed frame without entry") = 0;
            self.pages_with_data -= 1;
            self.changes.note(slot.index, pfn);
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
                let bytes = self
                    .slot_bytes(src_slot)
                    .expect("BUG: source slot empty")
                    .to_boxed();
                copy_into(
                    self.slot_bytes_mut(dst_slot)
                        .expect("BUG: fresh slot is stale"),
                    &bytes,
                );
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
            Some(bytes) => bytes.copy_to(offset, buf),
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
        copy_into(
            &self.page_bytes_mut(pfn)?[offset..offset + data.len()],
            data,
        );
        Ok(())
    }

    /// Reads `buf.len()` bytes at `addr` (may cross frames).
    pub fn read(&self, addr: PhysAddr, buf: &mut [u8]) -> Result<(), MemError> {
        let mut done = 0;
        for (pfn, offset, len) in self.pieces(addr, buf.len())? {
            let out = &mut buf[done..done + len];
            match self.page_bytes(pfn) {
                Some(bytes) => bytes.copy_to(offset, out),
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
            copy_into(&self.page_bytes_mut(pfn)?[offset..offset + len], src);
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
        (self.pages_with_data as usize + self.spare.len()) * self.page_size()
            + self.slots.capacity() * size_of::<Option<Buffer>>()
            + self.free_slots.capacity() * size_of::<u32>()
            + self.index.host_bytes()
    }

    /// Every broken invariant of the contents; empty when all hold.
    pub fn check(&self) -> Vec<PhysViolation> {
        let Self {
            layout: _,
            index,
            slots,
            free_slots: _,
            pages_with_data: _,
            epoch: _,
            changes: _,
            spare: _,
        } = self;
        let mut out = Vec::new();
        let mut used = 0;
        for i in 0..slots.len() {
            used += u64::from(self.slot_verdict(i as u32, &mut out).is_some());
        }
        for (start, section) in index.materialised() {
            for (offset, &entry) in section.iter().enumerate() {
                if entry != 0 {
                    self.index_verdict(start + offset as u64, entry, &mut out);
                }
            }
        }
        self.check_free_slots(used, &mut out);
        out
    }

    /// The verdict of slot `i` (its buffer's frame is present, the index
    /// names the slot for it, the buffer is a page): the frame whose
    /// buffer it holds, `None` when the slot is empty. Reads the slot and
    /// the index entry of the slot's frame.
    fn slot_verdict(&self, i: u32, out: &mut Vec<PhysViolation>) -> Option<Pfn> {
        let buffer = self.slots.get(i as usize)?.as_ref()?;
        if self.layout.region_of(buffer.pfn).is_none() {
            out.push(PhysViolation::ContentsOutsideMemory { pfn: buffer.pfn });
        }
        if self.index.get(buffer.pfn).copied() != Some(i + 1)
            || buffer.bytes.cells().len() != self.page_size()
        {
            out.push(PhysViolation::ContentsSlot {
                pfn: buffer.pfn,
                slot: i,
            });
        }
        Some(buffer.pfn)
    }

    /// The verdict of `pfn`'s index entry (`entry`, not 0): the slot it
    /// names holds `pfn`'s buffer. Reads the entry and that slot.
    fn index_verdict(&self, pfn: Pfn, entry: u32, out: &mut Vec<PhysViolation>) {
        let owner = self
            .slots
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

    /// The free slots are empty, and `used` (the slots holding a buffer)
    /// is the count of pages with data.
    fn check_free_slots(&self, used: u64, out: &mut Vec<PhysViolation>) {
        for &i in &self.free_slots {
            if self.slots.get(i as usize).is_none_or(Option::is_some) {
                out.push(PhysViolation::ContentsFreeSlot { slot: i });
            }
        }
        if used != self.pages_with_data {
            out.push(PhysViolation::ContentsCount {
                kept: self.pages_with_data,
                recounted: used,
            });
        }
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

    /// DRAM [0, 32), tag storage [40, 48), pages of 4 KiB (also the
    /// fixture of `incremental`'s tests).
    pub(super) fn contents() -> PhysContents {
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
    fn a_dropped_buffer_comes_back_zeroed_unless_a_handle_holds_it() {
        let mut c = contents();
        let (a, b, d) = (Pfn::new(1), Pfn::new(2), Pfn::new(3));
        c.write_in_frame(a, 0, &[7; 4096]).unwrap();
        c.zero_page(a).unwrap();
        assert_eq!(c.spare.len(), 1);
        // Frame b gets a's old buffer, zeroed.
        c.write_in_frame(b, 5, &[9]).unwrap();
        assert!(c.spare.is_empty());
        let bytes = c.page_bytes(b).unwrap().to_boxed();
        assert_eq!(bytes.iter().filter(|&&x| x != 0).count(), 1);
        assert_eq!(bytes[5], 9);
        // A buffer a handle still reaches is not reused: the handle keeps
        // the old bytes and the next frame gets a buffer of its own.
        let held = c.page_buf(b).unwrap();
        c.zero_page(b).unwrap();
        assert!(c.spare.is_empty());
        c.write_in_frame(d, 0, &[1]).unwrap();
        assert_ne!(c.page_buf(d).unwrap(), held);
        assert_eq!(held.cells()[5].get(), 9);
        assert!(c.check().is_empty());
    }

    #[test]
    fn untouched_memory_reads_zero_and_costs_nothing() {
        let mut m = contents();
        assert_eq!(m.read_u64(pa(0x1000)), Ok(0));
        m.write(pa(0x2000), &[0; 64]).unwrap();
        assert_eq!(m.pages_with_data(), 0, "writing zeros allocates nothing");
        assert!(m.page_bytes(Pfn::new(2)).is_none());
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
        let mut two = [0; 2];
        m.page_bytes(Pfn::new(3)).unwrap().copy_to(0, &mut two);
        assert_eq!(two, [0xef, 0xbe]);
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
            m.slot_bytes(slot).unwrap().iter().next(),
            Some(7),
            "other writes keep the handle valid"
        );
        m.slot_bytes_mut(slot).unwrap()[1].set(1);
        assert_eq!(m.read_u32(pa(0x5000)), Ok(0x107));
        m.zero_page(Pfn::new(5)).unwrap();
        assert!(m.slot_bytes(slot).is_none());
        // The freed slot is reused by frame 7: the old handle stays stale.
        m.write_u8(pa(0x7000), 1).unwrap();
        assert_eq!(m.page_slot(Pfn::new(7)).unwrap().index, slot.index);
        assert!(m.slot_bytes(slot).is_none());
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
