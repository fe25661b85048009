//! The swap device: slots, their swap counts, the data written to them and
//! the MTE tags saved with them (Linux `mm/swapfile.c` `swap_map[]`,
//! `mm/page_io.c`, `arch/arm64/mm/mteswap.c`).
//!
//! # What it owns
//! One swap device of `swap` bytes cut into page-sized slots, numbered from
//! 0 (Linux reserves slot 0 of a swap area for its header; the model has no
//! header, so a device of `n` pages has `n` usable slots). For each slot in
//! use:
//! - its *swap count*: the number of swap page-table entries that refer to
//!   it (Linux `swap_map[offset]` without `SWAP_HAS_CACHE`; the swap cache
//!   is `machine::swapping`'s);
//! - the page's data as written at swap-out (`None`: all zeros);
//! - the page's saved tags, one per granule, if the page was tagged
//!   (Linux `mte_save_tags()` keeps 128 bytes per page in `mte_pages`; the
//!   model keeps the unpacked [`Tag`]s).
//!
//! # Rules
//! - [`SwapDevice::alloc`] hands out the lowest free slot (deterministic;
//!   Linux `scan_swap_map_slots()` scans clusters upwards from a per-CPU
//!   hint, which a single-device model without clusters reduces to this).
//! - [`SwapDevice::duplicate`] (Linux `swap_duplicate()`) adds a reference;
//!   [`SwapDevice::free`] (Linux `swap_free()`) drops one, and the slot is
//!   freed together with its saved tags when none is left (Linux
//!   `swap_range_free()` -> `arch_swap_invalidate_page()` ->
//!   `mte_invalidate_tags()`). Saved tags therefore never outlive their
//!   slot.
//!
//! A pure data structure: no locking, no `async`; the kernel writes the
//! page-table entries that the counts describe.

use std::collections::BTreeMap;

use mte::Tag;
use thiserror::Error;

use crate::mm::SwapSlot;

/// One slot in use.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SlotState {
    /// Swap entries referring to the slot (at least 1).
    pub count: u32,
    /// The page's bytes (`None`: all zeros).
    pub data: Option<Box<[u8]>>,
    /// The page's tags, if it was tagged when it was swapped out.
    pub tags: Option<Box<[Tag]>>,
}

/// A misuse of the swap device by its caller.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Error)]
pub enum SwapError {
    #[error("swap slot {0} is not in use")]
    NotInUse(SwapSlot),
    #[error("swap slot {0}: swap count overflow")]
    CountOverflow(SwapSlot),
}

/// A broken rule of the device's own bookkeeping.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SwapViolation {
    /// A slot beyond the device.
    OutOfRange { slot: SwapSlot, slots: u64 },
    /// A slot in use with no reference (it should have been freed).
    ZeroCount { slot: SwapSlot },
    /// Saved tags that are not one tag per granule of a page.
    TagCount {
        slot: SwapSlot,
        tags: usize,
        expected: usize,
    },
    /// Saved page data that is not one page long.
    DataLength { slot: SwapSlot, len: usize },
}

/// The swap device (Linux: one `struct swap_info_struct`).
#[derive(Clone, Debug)]
pub struct SwapDevice {
    /// Number of slots.
    slots: u64,
    /// Bytes per slot (the page size).
    page_size: usize,
    /// Tags per page (granules per page).
    tags_per_page: usize,
    used: BTreeMap<SwapSlot, SlotState>,
}

impl SwapDevice {
    /// A device of `bytes` bytes (whole pages only; a tail smaller than a
    /// page is unused, as `mkswap` ignores it).
    pub fn new(bytes: u64, page_size: u64, tags_per_page: usize) -> SwapDevice {
        SwapDevice {
            slots: bytes / page_size,
            page_size: usize::try_from(page_size).expect("BUG: page size above usize"),
            tags_per_page,
            used: BTreeMap::new(),
        }
    }

    /// Number of slots of the device.
    pub fn slots(&self) -> u64 {
        self.slots
    }

    /// Slots in use.
    pub fn used(&self) -> usize {
        self.used.len()
    }

    /// Slots in use whose page's tags are saved (`swap.saved_tags`).
    pub fn saved_tags_count(&self) -> u64 {
        self.used.values().filter(|s| s.tags.is_some()).count() as u64
    }

    /// Writes a page to the lowest free slot with swap count 1 (Linux
    /// `folio_alloc_swap()` + `swap_writepage()` + `mte_save_tags()`);
    /// `None` when the device is full. `data` all zeros may be `None`.
    ///
    /// Panics (`BUG:`) if `data` or `tags` do not have the size of a page.
    pub fn alloc(&mut self, data: Option<&[u8]>, tags: Option<&[Tag]>) -> Option<SwapSlot> {
        if let Some(d) = data {
            assert_eq!(d.len(), self.page_size, "BUG: swapping out a partial page");
        }
        if let Some(t) = tags {
            assert_eq!(
                t.len(),
                self.tags_per_page,
                "BUG: saving a partial page's tags"
            );
        }
        let slot = self.lowest_free()?;
        let data = data.filter(|d| d.iter().any(|&b| b != 0)).map(Box::from);
        self.used.insert(
            slot,
            SlotState {
                count: 1,
                data,
                tags: tags.map(Box::from),
            },
        );
        Some(slot)
    }

    /// The lowest slot not in use.
    fn lowest_free(&self) -> Option<SwapSlot> {
        let mut candidate = 0u64;
        for slot in self.used.keys() {
            if slot.get() != candidate {
                break;
            }
            candidate += 1;
        }
        (candidate < self.slots).then(|| SwapSlot::new(candidate))
    }

    /// The slot's state, `None` if it is not in use.
    pub fn get(&self, slot: SwapSlot) -> Option<&SlotState> {
        self.used.get(&slot)
    }

    /// The tags saved with `slot`, `None` if none were (or it is free).
    pub fn saved_tags(&self, slot: SwapSlot) -> Option<&[Tag]> {
        self.used.get(&slot).and_then(|s| s.tags.as_deref())
    }

    /// Linux `swap_duplicate()`: one more swap entry refers to `slot`.
    pub fn duplicate(&mut self, slot: SwapSlot) -> Result<(), SwapError> {
        let s = self.used.get_mut(&slot).ok_or(SwapError::NotInUse(slot))?;
        s.count = s
            .count
            .checked_add(1)
            .ok_or(SwapError::CountOverflow(slot))?;
        Ok(())
    }

    /// Linux `swap_free()`: one swap entry referring to `slot` is gone.
    /// Returns whether the slot (and its saved tags) was freed.
    pub fn free(&mut self, slot: SwapSlot) -> Result<bool, SwapError> {
        let s = self.used.get_mut(&slot).ok_or(SwapError::NotInUse(slot))?;
        s.count -= 1;
        if s.count == 0 {
            self.used.remove(&slot);
            return Ok(true);
        }
        Ok(false)
    }

    /// Every slot in use with its swap count, in slot order.
    pub fn counts(&self) -> impl Iterator<Item = (SwapSlot, u32)> + '_ {
        self.used.iter().map(|(slot, s)| (*slot, s.count))
    }

    /// The device's own rules (see [`SwapViolation`]).
    pub fn check(&self) -> Vec<SwapViolation> {
        let SwapDevice {
            slots,
            page_size,
            tags_per_page,
            used,
        } = self;
        let mut out = Vec::new();
        for (slot, s) in used {
            if slot.get() >= *slots {
                out.push(SwapViolation::OutOfRange {
                    slot: *slot,
                    slots: *slots,
                });
            }
            if s.count == 0 {
                out.push(SwapViolation::ZeroCount { slot: *slot });
            }
            if let Some(tags) = &s.tags
                && tags.len() != *tags_per_page
            {
                out.push(SwapViolation::TagCount {
                    slot: *slot,
                    tags: tags.len(),
                    expected: *tags_per_page,
                });
            }
            if let Some(data) = &s.data
                && data.len() != *page_size
            {
                out.push(SwapViolation::DataLength {
                    slot: *slot,
                    len: data.len(),
                });
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn device(pages: u64) -> SwapDevice {
        SwapDevice::new(pages * 4096, 4096, 256)
    }

    fn tags(t: u8) -> Vec<Tag> {
        vec![Tag::new(t).unwrap(); 256]
    }

    #[test]
    fn slots_are_handed_out_lowest_first_until_full() {
        let mut d = device(3);
        assert_eq!(d.alloc(None, None), Some(SwapSlot::new(0)));
        assert_eq!(d.alloc(None, None), Some(SwapSlot::new(1)));
        assert_eq!(d.alloc(None, None), Some(SwapSlot::new(2)));
        assert_eq!(d.alloc(None, None), None, "full");
        assert_eq!(d.free(SwapSlot::new(1)), Ok(true));
        assert_eq!(
            d.alloc(None, None),
            Some(SwapSlot::new(1)),
            "a hole is reused"
        );
        assert!(d.check().is_empty());
    }

    #[test]
    fn a_partial_page_of_swap_is_unused_and_no_swap_has_no_slot() {
        assert_eq!(SwapDevice::new(4096 + 100, 4096, 256).slots(), 1);
        assert_eq!(device(0).alloc(None, None), None);
    }

    #[test]
    fn saved_tags_live_exactly_as_long_as_the_slot() {
        let mut d = device(4);
        let page = vec![7u8; 4096];
        let slot = d.alloc(Some(&page), Some(&tags(5))).unwrap();
        let plain = d.alloc(Some(&page), None).unwrap();
        assert_eq!(d.saved_tags_count(), 1);
        d.duplicate(slot).unwrap();
        assert_eq!(d.get(slot).unwrap().count, 2);
        assert_eq!(d.free(slot), Ok(false), "one reference left");
        assert_eq!(d.saved_tags(slot), Some(&tags(5)[..]));
        assert_eq!(d.get(slot).unwrap().data.as_deref(), Some(&page[..]));
        assert_eq!(d.free(slot), Ok(true));
        assert_eq!(d.saved_tags(slot), None);
        assert_eq!(d.saved_tags_count(), 0);
        assert_eq!(d.free(slot), Err(SwapError::NotInUse(slot)));
        assert_eq!(d.duplicate(slot), Err(SwapError::NotInUse(slot)));
        assert_eq!(d.saved_tags(plain), None);
        assert_eq!(d.used(), 1);
    }

    #[test]
    fn zero_pages_are_stored_without_data() {
        let mut d = device(1);
        let slot = d.alloc(Some(&[0u8; 4096]), None).unwrap();
        assert_eq!(d.get(slot).unwrap().data, None);
    }

    #[test]
    fn the_checker_reports_a_slot_without_references() {
        let mut d = device(2);
        let slot = d.alloc(None, Some(&tags(1))).unwrap();
        d.used.get_mut(&slot).unwrap().count = 0;
        d.used.get_mut(&slot).unwrap().tags = Some(vec![Tag::ZERO; 3].into());
        assert_eq!(
            d.check(),
            vec![
                SwapViolation::ZeroCount { slot },
                SwapViolation::TagCount {
                    slot,
                    tags: 3,
                    expected: 256
                }
            ]
        );
    }
}
