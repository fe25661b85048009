//! RFC v3's tags kept by frame for a page without tag storage, as posted
//! (`mistake=tags-by-pfn`, built into `tag-storage=rfc-v3`;
//! `docs/designs.md`, "Known mistakes"), and the two `WARN_ON_ONCE`s the
//! posted series printed when it ran under QEMU (`docs/reference.md`).
//!
//! # Contract
//! With the mistake off nothing here acts: every function returns at once,
//! and `dynamic` reserves a compacted page's destination first (`compact`).
//! With it on:
//! - **Migration awaiting tag storage** ([`Kernel::compact_awaiting`]):
//!   compaction moves a tagged page without reserving its destination
//!   (Linux `compaction_alloc()` allocates without `__GFP_TAGGED`); the
//!   tags go to the destination's `tags_by_pfn` entry (`copy_highpage()` ->
//!   `mte_save_tags_for_pfn()`; the model's `Kernel::restored_tags`) and
//!   the page's tagged entries become awaiting tag storage. Its next access
//!   reserves in place and `set_pte_at()` writes the saved tags.
//! - **The restore warning**: `reserve_tag_storage()` restores the saved
//!   tags (`mte_restore_tags_for_pfn()`, which calls
//!   `set_page_mte_tagged()`) *before* `page_set_tag_storage_reserved()`, so
//!   `set_page_mte_tagged()`'s `WARN_ON_ONCE(!page_tag_storage_reserved())`
//!   fires whenever a reservation finds saved tags: the tag storage fault's
//!   in-place reservation, and a tagged allocation's.
//! - **Stale saved tags**: `free_tag_storage()`, which erases the entries,
//!   runs only for a page whose storage is reserved, so a page freed while
//!   awaiting storage leaves its entry ([`Kernel::keeps_saved_tags_of_freed`]).
//!   The frame's next tagged allocation restores the old owner's tags into
//!   it (the restore warning) and, when it zeroes tags,
//!   `tag_clear_highpage()` finds the page tagged already (its own
//!   `WARN_ON_ONCE(!try_page_mte_tagging())`) and zeroes them; an
//!   allocation whose storage is not reserved keeps the entry, and its page
//!   gets the old owner's tags when its fault reserves. The invariants catch
//!   the entry as soon as the page is freed (invariant 7: restored tags
//!   waiting for a frame nobody maps).
//!
//! A warning is a counter per site (`kernel.warn.SITE`, 0 or 1: Linux's
//! `WARN_ON_ONCE` prints once per boot, here once per machine), their sum
//! `kernel.warn`, and an [`Event::KernelWarning`] (`WARNING: at SITE` under
//! `mtesim run --trace`).
//!
//! # Shortcut
//! Only compaction migrates awaiting storage, and only a page whose every
//! mapping is a tagged page entry and which no page cache or swap cache
//! holds (a page only a cache holds has no entry to await on); the series
//! does it for every migration whose destination is not allocated tagged.

use mte::{Pfn, Tag};
use platform::Mistake;
use uapi::event::{Event, WarnSite};

use super::Kernel;
use crate::mm::{MapLevel, Pte};

impl Kernel {
    /// Whether `mistake=tags-by-pfn` is on.
    pub(super) fn tags_by_pfn(&self) -> bool {
        self.platform
            .settings()
            .mistakes
            .contains(Mistake::TagsByPfn)
    }

    /// Linux `WARN_ON_ONCE` at `site`: counted and traced the first time
    /// only.
    pub(super) fn warn_once(&self, site: WarnSite) {
        let mut first = false;
        self.bump(|c| {
            let printed = match site {
                WarnSite::RestoreTagsForPfn => &mut c.warn_restore_tags_for_pfn,
                WarnSite::TagClearHighpage => &mut c.warn_tag_clear_highpage,
            };
            first = *printed == 0;
            *printed = 1;
        });
        if first {
            self.trace().emit(|| Event::KernelWarning { site });
        }
    }

    /// Whether compaction moves the reserved page `src` awaiting tag
    /// storage instead of reserving its destination first (see the module
    /// doc, with its shortcut).
    pub(super) fn compact_awaiting(&self, src: Pfn) -> bool {
        if !self.tags_by_pfn()
            || self.cache_owner.borrow().contains_key(&src)
            || self.swap_cache_slot.borrow().contains_key(&src)
        {
            return false;
        }
        let rmap = self.rmap.borrow();
        let entries = rmap.mappings(src);
        let mms = self.mms.borrow();
        !entries.is_empty()
            && entries.iter().all(|e| {
                e.level == MapLevel::Pte
                    && mms.get(&e.mm).is_some_and(|m| {
                        matches!(m.pt.pte(e.va), Pte::Present(l) if l.pfn == src && l.attrs.tagged)
                    })
            })
    }

    /// Before a move awaiting storage: the source's tags, taken off it (the
    /// destination must not get them: its storage is not reserved), or
    /// `None` if they were never initialised.
    pub(super) fn take_tags_for_migration(&self, src: Pfn) -> Option<Vec<Tag>> {
        if !self.mem.page_mte_tagged(src) {
            return None;
        }
        let tags = self
            .mem
            .read_page_tags(src)
            .expect("BUG: a tagged page has tag storage");
        self.mem
            .clear_page_mte_tagged(src)
            .expect("BUG: a page being moved is in use");
        Some(tags)
    }

    /// After a move awaiting storage: `dst`'s tagged entries await tag
    /// storage and its tags wait by frame (`mte_save_tags_for_pfn()`).
    pub(super) fn await_tag_storage_after_migration(&self, dst: Pfn, tags: Option<Vec<Tag>>) {
        let entries = self.rmap.borrow().mappings(dst).to_vec();
        let mut mms = self.mms.borrow_mut();
        for e in &entries {
            let m = mms.get_mut(&e.mm).expect("BUG: rmap names a gone mm");
            if let Pte::Present(l) = m.pt.pte(e.va)
                && l.pfn == dst
                && l.attrs.tagged
            {
                self.raw_set_pte(m, e.va, Pte::AwaitingTagStorage(l))
                    .expect("BUG: rewriting an existing entry allocates");
            }
        }
        if let Some(tags) = tags {
            self.restored_tags.borrow_mut().insert(dst, tags);
        }
    }

    /// Whether freeing the unused page `pfn` leaves its saved tags behind:
    /// the series erases them only for a page whose storage is reserved.
    pub(super) fn keeps_saved_tags_of_freed(&self, pfn: Pfn) -> bool {
        self.tags_by_pfn()
            && !self.mem.tag_storage_reserved(pfn)
            && self.restored_tags.borrow().contains_key(&pfn)
    }

    /// The tag storage fault reserved `pfn` in place: the series restores
    /// its saved tags inside `reserve_tag_storage()`, before the reserved
    /// flag is set (the restore warning). The model writes them in
    /// `set_pte_at()` right after, as it does for every restore.
    pub(super) fn restored_in_reservation(&self, pfn: Pfn) {
        if self.tags_by_pfn() && self.restored_tags.borrow().contains_key(&pfn) {
            self.warn_once(WarnSite::RestoreTagsForPfn);
        }
    }

    /// A tagged allocation got `pfn`: a saved-tags entry left by the frame's
    /// last owner is restored by its reservation (the restore warning);
    /// when the allocation zeroed the tags (`zeroed`), `tag_clear_highpage()`
    /// then found the page tagged already (its warning) and zeroed them.
    /// An allocation whose storage is not reserved keeps the entry for its
    /// fault.
    pub(super) fn stale_saved_tags_at_allocation(&self, pfn: Pfn, zeroed: bool) {
        if !self.tags_by_pfn() || !self.mem.tag_storage_reserved(pfn) {
            return;
        }
        let Some(tags) = self.restored_tags.borrow_mut().remove(&pfn) else {
            return;
        };
        self.warn_once(WarnSite::RestoreTagsForPfn);
        if zeroed {
            self.warn_once(WarnSite::TagClearHighpage);
        } else {
            // The old owner's tags are the new page's.
            self.mem
                .write_page_tags(pfn, &tags)
                .expect("BUG: a reserved frame has tag storage");
            self.mem
                .set_page_mte_tagged(pfn)
                .expect("BUG: a new page is in use");
        }
    }
}
