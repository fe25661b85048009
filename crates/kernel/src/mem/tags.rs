//! Allocation tags as bytes of tag storage, and Linux's protocol for
//! initialising a page's tags exactly once.
//!
//! # Tag bytes
//! The tag of the granule at physical address `pa` is a nibble of the byte
//! `geometry.tag_byte_of(pa)` in a tag storage frame (docs/model.md §1: linear
//! mapping, even granule in the low nibble; packing rules in
//! [`mte::packing`]). Reading and writing go through [`crate::phys::PhysContents`]
//! like any other memory, so a tag write lands in whatever the tag storage
//! frame holds at the time, data included.
//!
//! Where no tag storage covers an address (policy `none`, or a frame that is
//! itself tag storage, which has no tags: docs/model.md §1) tags read as 0 and
//! writes are ignored, as the architecture makes LDG/STG behave on memory
//! without allocation tags. An address outside every frame is an error.
//!
//! The accessors never check that the tag block is reserved (the model must
//! be able to show what happens when it is not); a write whose tag storage
//! frame is not taken out of the allocator (free or holding data under
//! `dynamic`) is recorded and reported by [`Memory::check`].
//!
//! # Initialising tags once (Linux `arch/arm64/include/asm/mte.h`)
//! ```text
//!   try_page_mte_tagging(): Tagged? ─yes─▶ false (done already)
//!                             │no
//!                           MteLock set? ─no─▶ set it ─▶ true: the caller zeroes or
//!                             │yes                        restores the tags, then
//!                             ▼                           set_page_mte_tagged()
//!                  sleep until Tagged ─▶ false            (Tagged set, MteLock cleared,
//!                                                          waiters woken)
//! ```
//! Linux keeps `PG_mte_lock` set for the page's life; here it is cleared
//! when `Tagged` is set, which `try_page_mte_tagging()` tests first, so the
//! outcomes are the same and the allocator's refusal to free a locked page
//! (tags being initialised) stays meaningful. Losers sleep on a wait queue
//! where Linux spins (see the module shortcuts in [`crate::mem`]).

use super::Memory;
use super::check::TagClobber;
use crate::phys::{FrameAccessError, FrameStatus, PageFlag, PhysMem};
use mte::Geometry;
use mte::packing::{Nibble, nibble_tag, pack_tags, unpack_tags, with_nibble};
use mte::{Pfn, PhysAddr, Tag};
use thiserror::Error;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Error)]
pub enum TagAccessError {
    /// The address is in no frame of the machine.
    #[error("physical address {addr} is not present")]
    NotPresent { addr: PhysAddr },
    /// A page's tags were given with the wrong count.
    #[error("{got} tags given for a page of {expected} granules")]
    PageTags { expected: usize, got: usize },
}

impl Memory {
    /// Granules (tags) per page.
    pub fn tags_per_page(&self) -> usize {
        usize::try_from(self.geometry.page().granules_per_page())
            .expect("BUG: granules per page above usize")
    }

    fn tag_bytes_per_page(&self) -> usize {
        usize::try_from(self.geometry.tag_bytes_per_page())
            .expect("BUG: tag bytes per page above usize")
    }

    fn check_present(&self, pfn: Pfn) -> Result<(), TagAccessError> {
        match self.phys.borrow().alloc.layout().region_of(pfn) {
            Some(_) => Ok(()),
            None => Err(TagAccessError::NotPresent {
                addr: pfn.addr(self.geometry.page_shift()),
            }),
        }
    }

    /// Whether tag storage covers `pfn` (false under `none` and for tag
    /// storage frames).
    pub fn has_tag_storage(&self, pfn: Pfn) -> bool {
        self.geometry.tag_bytes_of(pfn).is_some()
    }

    /// The allocation tag of the granule at `pa` (LDG's view of memory).
    pub fn read_tag(&self, pa: PhysAddr) -> Result<Tag, TagAccessError> {
        let pfn = self.geometry.pfn_of(pa);
        self.check_present(pfn)?;
        let in_page = self.geometry.page().page_offset(pa);
        Ok(self.read_tag_in(self.geometry.tag_bytes_of(pfn), in_page))
    }

    /// [`Memory::read_tag`] of the byte `in_page` of a present data frame
    /// whose first tag byte is `first` ([`Geometry::tag_bytes_of`]; `None`:
    /// no tag storage covers it, tag 0), for the access fast path, which
    /// remembers `first`.
    pub fn read_tag_in(&self, first: Option<PhysAddr>, in_page: u64) -> Tag {
        let Some((byte, high)) = first.and_then(|f| Geometry::tag_byte_in(f, in_page)) else {
            return Tag::ZERO;
        };
        let mut value = [0u8];
        self.phys.borrow().contents.read_in_frame(
            self.geometry.pfn_of(byte),
            self.geometry.page().page_offset(byte) as usize,
            &mut value,
        );
        nibble_tag(value[0], nibble(high))
    }

    /// The tag bytes of present frame `pfn` into `out` (its
    /// `tag_bytes_per_page` bytes, zeros where no tag storage covers it), for
    /// a check of many granules of one page: one read of tag storage instead
    /// of one [`Memory::read_tag`] per granule. [`page_tag_in`] takes a
    /// granule's tag out of them.
    pub fn read_page_tag_bytes(&self, pfn: Pfn, out: &mut [u8]) -> Result<(), TagAccessError> {
        self.check_present(pfn)?;
        let expected = self.tag_bytes_per_page();
        if out.len() != expected {
            return Err(TagAccessError::PageTags {
                expected,
                got: out.len(),
            });
        }
        match self.geometry.tag_bytes_of(pfn) {
            // A page's tag bytes lie in one tag storage frame (they start
            // at a multiple of their count, which divides the page size).
            Some(first) => self.phys.borrow().contents.read_in_frame(
                self.geometry.pfn_of(first),
                self.geometry.page().page_offset(first) as usize,
                out,
            ),
            None => out.fill(0),
        }
        Ok(())
    }

    /// Sets the allocation tag of the granule at `pa` (STG's effect on
    /// memory); ignored where no tag storage covers `pa`.
    pub fn write_tag(&self, pa: PhysAddr, tag: Tag) -> Result<(), TagAccessError> {
        let pfn = self.geometry.pfn_of(pa);
        self.check_present(pfn)?;
        let Some((byte, high)) = self.geometry.tag_byte_of(pa) else {
            return Ok(());
        };
        self.note_tag_write(pfn, byte);
        let mut phys = self.phys.borrow_mut();
        let old = phys
            .contents
            .read_u8(byte)
            .expect("BUG: tag storage is present");
        phys.contents
            .write_u8(byte, with_nibble(old, nibble(high), tag))
            .expect("BUG: tag storage is present");
        Ok(())
    }

    /// The tags of every granule of `pfn`, lowest first (all 0 where no tag
    /// storage covers it).
    pub fn read_page_tags(&self, pfn: Pfn) -> Result<Vec<Tag>, TagAccessError> {
        self.check_present(pfn)?;
        let mut tags = vec![Tag::ZERO; self.tags_per_page()];
        if let Some(bytes) = self.page_tag_bytes(pfn) {
            unpack_tags(&bytes, &mut tags).expect("BUG: a page's tag bytes unpack to its tags");
        }
        Ok(tags)
    }

    /// Sets the tags of every granule of `pfn` (Linux `mte_restore_page_tags()`
    /// and `PTRACE_POKEMTETAGS` on a whole page); ignored where no tag storage
    /// covers it.
    pub fn write_page_tags(&self, pfn: Pfn, tags: &[Tag]) -> Result<(), TagAccessError> {
        self.check_present(pfn)?;
        let expected = self.tags_per_page();
        if tags.len() != expected {
            return Err(TagAccessError::PageTags {
                expected,
                got: tags.len(),
            });
        }
        let mut bytes = vec![0; self.tag_bytes_per_page()];
        pack_tags(tags, &mut bytes).expect("BUG: a page's tags pack to its tag bytes");
        self.write_tag_bytes(pfn, Some(&bytes));
        Ok(())
    }

    /// Sets every tag of `pfn` to 0. Linux `mte_clear_page_tags()`.
    pub fn zero_tags(&self, pfn: Pfn) -> Result<(), TagAccessError> {
        self.check_present(pfn)?;
        self.write_tag_bytes(pfn, None);
        Ok(())
    }

    /// Copies the tags of page `src` over those of page `dst`. Linux
    /// `mte_copy_page_tags()`.
    pub fn copy_tags(&self, dst: Pfn, src: Pfn) -> Result<(), TagAccessError> {
        self.check_present(src)?;
        self.check_present(dst)?;
        let bytes = self.page_tag_bytes(src);
        self.write_tag_bytes(dst, bytes.as_deref());
        Ok(())
    }

    /// The tag bytes of present frame `pfn`; `None` where no tag storage
    /// covers it.
    fn page_tag_bytes(&self, pfn: Pfn) -> Option<Vec<u8>> {
        page_tag_bytes_in(&self.phys.borrow(), &self.geometry, pfn)
    }

    /// Writes the tag bytes of present frame `pfn` (`None`: zeros), noting a
    /// write into tag storage that is not taken out of the allocator.
    fn write_tag_bytes(&self, pfn: Pfn, bytes: Option<&[u8]>) {
        if let Some(at) = self.geometry.tag_bytes_of(pfn) {
            self.note_tag_write(pfn, at);
            self.write_tag_bytes_unchecked(pfn, bytes);
        }
    }

    /// Writes the tag bytes of `pfn` without noting anything (boot only).
    pub(super) fn write_tag_bytes_unchecked(&self, pfn: Pfn, bytes: Option<&[u8]>) {
        let Some(at) = self.geometry.tag_bytes_of(pfn) else {
            return;
        };
        let zeros;
        let bytes = match bytes {
            Some(b) => b,
            None => {
                zeros = vec![0; self.tag_bytes_per_page()];
                &zeros
            }
        };
        self.phys
            .borrow_mut()
            .contents
            .write(at, bytes)
            .expect("BUG: tag storage is present");
    }

    /// Records a tag write into tag storage frame (of byte `at`) that holds
    /// no reserved block: free, or somebody's data (the RFC's race: "the copy
    /// writes tags into tag storage that still holds someone's data").
    fn note_tag_write(&self, data_pfn: Pfn, at: PhysAddr) {
        let tag_pfn = self.geometry.pfn_of(at);
        let status = self.phys.borrow().alloc.frame_status(tag_pfn);
        // A frame holding a cleancache copy is not reserved either: the tag
        // write overwrites the copy.
        let cached = self.cleancache.borrow().holds(tag_pfn);
        if cached || !matches!(status, Some(FrameStatus::Claimed | FrameStatus::CarvedOut)) {
            let mut log = self.clobbers.get();
            log.note(TagClobber {
                data_pfn,
                tag_pfn,
                status,
            });
            self.clobbers.set(log);
        }
    }

    /// Linux `page_mte_tagged()`: the page's tags are initialised.
    pub fn page_mte_tagged(&self, pfn: Pfn) -> bool {
        self.phys
            .borrow()
            .alloc
            .frame(pfn)
            .is_some_and(|m| m.flags.contains(PageFlag::Tagged))
    }

    /// Linux `try_page_mte_tagging()`: `true` if the caller must initialise
    /// the tags (then call [`Self::set_page_mte_tagged`]); `false` once they
    /// are initialised, after waiting for a concurrent initialiser.
    ///
    /// A switch point on entry (the atomic `test_and_set_bit()`: another CPU
    /// may get there first).
    pub async fn try_page_mte_tagging(&self, pfn: Pfn) -> Result<bool, FrameAccessError> {
        self.sched.preempt_point().await;
        {
            let mut phys = self.phys.borrow_mut();
            let meta = phys.alloc.frame_mut(pfn)?;
            if meta.flags.contains(PageFlag::Tagged) {
                return Ok(false);
            }
            if !meta.flags.contains(PageFlag::MteLock) {
                meta.flags.insert(PageFlag::MteLock);
                return Ok(true);
            }
        }
        // Linux: smp_cond_load_acquire(&page->flags, VAL & PG_mte_tagged).
        self.mte_tagged
            .wait_until(|| self.page_mte_tagged(pfn))
            .await;
        Ok(false)
    }

    /// Linux `set_page_mte_tagged()`: the tags are initialised; wakes the
    /// CPUs waiting in [`Self::try_page_mte_tagging`]. Counts `pages.tagged`.
    ///
    /// Allowed on any frame in use, tag storage included: marking a tag
    /// storage frame tagged is the bug of docs/model.md §4.2, which the checker
    /// reports rather than this refusing it.
    pub fn set_page_mte_tagged(&self, pfn: Pfn) -> Result<(), FrameAccessError> {
        self.phys.borrow_mut().alloc.frame_mut(pfn)?;
        self.mark_tagged(pfn);
        self.mte_tagged.wake_all();
        Ok(())
    }

    /// Clears the page's `PG_mte_tagged` (RFC v3 `mistake=tags-by-pfn`:
    /// a page moved awaiting tag storage leaves its tags behind by frame);
    /// `pages.tagged` follows.
    pub fn clear_page_mte_tagged(&self, pfn: Pfn) -> Result<(), FrameAccessError> {
        let was = {
            let mut phys = self.phys.borrow_mut();
            let meta = phys.alloc.frame_mut(pfn)?;
            let was = meta.flags.contains(PageFlag::Tagged);
            meta.flags.remove(PageFlag::Tagged);
            was
        };
        if was {
            self.bump(|e| e.pages_tagged -= 1);
        }
        Ok(())
    }

    /// Initialises the tags of `pfn` to 0 unless already done: Linux
    /// `mte_sync_tags()` for one page (`try_page_mte_tagging()`,
    /// `mte_clear_page_tags()`, `set_page_mte_tagged()`). Returns whether this
    /// call did it. Does not look at the tag storage reservation: deciding to
    /// map awaiting tag storage instead is the caller's (`set_pte_at()`).
    pub async fn init_page_tags_once(&self, pfn: Pfn) -> Result<bool, FrameAccessError> {
        if !self.try_page_mte_tagging(pfn).await? {
            return Ok(false);
        }
        self.zero_tags(pfn).expect("BUG: a frame in use is present");
        self.set_page_mte_tagged(pfn)?;
        Ok(true)
    }
}

fn nibble(high: bool) -> Nibble {
    if high { Nibble::High } else { Nibble::Low }
}

/// The tag of the granule holding byte `in_page` of a page whose tag bytes
/// ([`Memory::read_page_tag_bytes`]) are `bytes`: what [`Memory::read_tag`]
/// reads for it.
pub fn page_tag_in(bytes: &[u8], in_page: u64) -> Tag {
    let granule = in_page / mte::GRANULE_SIZE;
    let byte = bytes[usize::try_from(granule / 2).expect("BUG: tag byte index above usize")];
    nibble_tag(byte, nibble(granule % 2 == 1))
}

/// The tag bytes of present frame `pfn` in `phys`; `None` where no tag
/// storage covers it.
pub(super) fn page_tag_bytes_in(phys: &PhysMem, geometry: &Geometry, pfn: Pfn) -> Option<Vec<u8>> {
    let at = geometry.tag_bytes_of(pfn)?;
    let len = usize::try_from(geometry.tag_bytes_per_page())
        .expect("BUG: tag bytes per page above usize");
    let mut bytes = vec![0; len];
    phys.contents
        .read(at, &mut bytes)
        .expect("BUG: tag storage is present");
    Some(bytes)
}
