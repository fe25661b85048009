//! Page migration (Linux `mm/migrate.c`: `migrate_pages()` for one
//! order-0 folio): isolate the page, unmap it through the reverse map, copy
//! its data and tags, remap every entry to the copy, free the source.
//!
//! # What it owns
//! - [`Kernel::migrate_page`], the one entry point: the frame to move and a
//!   [`MigrateReason`]; the reason picks the destination (see below). Every
//!   migration of a page the kernel maps or caches goes through it (the tag
//!   storage claim's [`KernelMover`], the tag storage fault, long-term pins;
//!   KSM pages move like any other, keeping their KSM state); compaction (`compact`) picks its destination
//!   with its own free scanner and calls the copy-and-rewrite step
//!   (`move_page_now`) directly, under the same rules;
//! - [`KernelMover`], the [`PageMover`] that `alloc_contig_range()` (a tag
//!   storage claim, `crate::mem`) calls for each allocated page in the
//!   range: pages nobody maps go to [`Memory::migrate_unowned`], the others
//!   are checked (page lock, pins, MTE lock) and moved with
//!   [`Kernel::migrate_page`];
//! - the copy-and-rewrite step itself (`move_page_now`).
//!
//! # Invariants
//! - The caller of [`Kernel::migrate_page`] holds the source's page lock
//!   (`PG_locked`), so no fault or copy-on-write of that page is half way.
//! - A pinned page never moves (Linux: `folio_maybe_dma_pinned()` makes the
//!   expected reference count check fail): [`MigrateError::Pinned`].
//! - The destination is never in tag storage (`Gfp::USER_TAGGED_DESTINATION`
//!   is movable, not CMA; compaction's free scanner takes movable
//!   pageblocks only); its tag storage is reserved only for a page
//!   leaving tag storage because it needs tags
//!   ([`MigrateReason::OutOfTagStorage`]) and for a compacted page whose
//!   own is reserved (see `compact`); a claim's mover runs under
//!   `tag_blocks_lock` and must not reserve.
//! - Copy and rewrite happen with no switch point in between (decision
//!   below), and the source is freed right after (it holds no reserved tag
//!   storage, so that free never sleeps).
//!
//! # Copy and rewrite (decision)
//! `move_page_now` copies (through [`Memory::migrate_block`], which counts
//! `migrate.pages` and `tag_storage.migrations`) and rewrites every mapping
//! found through the rmap *with no switch point in between*, under the
//! source's page lock. Linux needs migration entries because other CPUs may
//! touch the page while it is copied; here no CPU can run between the copy
//! and the rewrite, so the rewrite is atomic and no placeholder entry
//! exists. A fault that slept across a migration sees its entry changed and
//! retries. A page of a THP has its block entries split first (see `huge`).

use mte::Pfn;
pub(crate) use uapi::event::MigrateReason;
use uapi::event::{Event, SplitReason};

use super::{Kernel, PAGE_ORDER};
use crate::mem::{Gfp, Memory, PageMover};
use crate::mm::{Leaf, Pte};
use crate::phys::{FrameStatus, MigrateError, PageFlag};

/// The [`PageMover`] of tag storage claims: moves a user page out of a tag
/// block being claimed and rewrites its mappings (Linux
/// `migrate_pages(..., MR_CONTIG_RANGE)`).
pub(crate) struct KernelMover<'k> {
    kernel: &'k Kernel,
}

impl PageMover for KernelMover<'_> {
    async fn move_page(&mut self, mem: &Memory, pfn: Pfn) -> Result<(), MigrateError> {
        let k = self.kernel;
        // Linux: the migrate_pages() loop reschedules between folios.
        mem.sched().preempt_point().await;
        let ours = k.rmap.borrow().count(pfn) > 0
            || k.cache_owner.borrow().contains_key(&pfn)
            || k.swap_cache_slot.borrow().contains_key(&pfn)
            || k.orphans.borrow().contains(&pfn);
        if !ours {
            // Allocated and held by nobody the kernel can name: a page in
            // flight (a fault's or fork's new page before its entry is
            // written, an allocation's refused page). Linux's
            // isolate_migratepages_range() takes only LRU and movable pages,
            // so the range's isolation fails (-EBUSY) and the claim is
            // retried; moving it would free the frame its holder is about
            // to map. A frame freed meanwhile is simply free.
            let in_use = matches!(
                mem.phys().alloc.frame_status(pfn),
                Some(FrameStatus::Allocated { head, .. }) if head == pfn
            );
            return if in_use {
                Err(MigrateError::Busy)
            } else {
                Ok(())
            };
        }
        // Linux: folio_trylock() in migrate_folio_unmap(); a page locked by a
        // fault in progress is busy (-EAGAIN), retried by the claim.
        let Some(guard) = k.page_locks.try_lock(pfn).await else {
            return Err(MigrateError::Busy);
        };
        // try_to_migrate()'s page-table locks (see `wait_rmap_ptls`).
        k.wait_rmap_ptls(pfn).await;
        {
            let phys = mem.phys();
            match phys.alloc.frame_status(pfn) {
                Some(FrameStatus::Allocated { head, order, .. })
                    if head == pfn && order == PAGE_ORDER => {}
                // Freed while this CPU slept on the lock: nothing to move.
                _ => return Ok(()),
            }
            let meta = phys.alloc.frame(pfn).expect("BUG: allocated frame");
            if meta.is_pinned() {
                return Err(MigrateError::Pinned);
            }
            if meta.flags.contains(PageFlag::MteLock) {
                return Err(MigrateError::Busy);
            }
            // A tagged page would need its destination's tag storage
            // reserved, which a mover running under tag_blocks_lock must not
            // do; pages in tag storage are never tagged anyway.
            if meta.flags.contains(PageFlag::Tagged)
                || meta.flags.contains(PageFlag::TagStorageReserved)
            {
                return Err(MigrateError::Unmovable);
            }
        }
        k.migrate_page_now(pfn, MigrateReason::TagStorageClaim)?;
        drop(guard);
        Ok(())
    }
}

impl Gfp {
    /// A migration destination outside tag storage: movable, never CMA, no
    /// zeroing (the copy overwrites it), nothing reserved.
    pub(crate) const USER_TAGGED_DESTINATION: Gfp = Gfp {
        movable: true,
        tagged: true,
        zero: false,
        zero_tags: false,
        kernel: false,
    };
}

impl Kernel {
    pub(crate) fn mover(&self) -> KernelMover<'_> {
        KernelMover { kernel: self }
    }

    /// Migrates the order-0 page `src`, which the caller has locked, for
    /// `reason`; returns the frame now holding it. The reason decides the
    /// destination: a page leaving for tags
    /// ([`MigrateReason::OutOfTagStorage`]) gets a tagged allocation whose
    /// storage is reserved, or the migration fails (`NoMemory`) when none
    /// can be had; a tag storage claim's page (the
    /// claim holds `tag_blocks_lock`) and a long-term pin's get a plain
    /// frame outside CMA, nothing reserved. `src` is freed. Fails,
    /// changing nothing, if `src` is pinned (or freed meanwhile) or no
    /// destination can be allocated.
    pub(crate) async fn migrate_page(
        &self,
        src: Pfn,
        reason: MigrateReason,
    ) -> Result<Pfn, MigrateError> {
        if reason != MigrateReason::OutOfTagStorage {
            return self.migrate_page_now(src, reason);
        }
        if !self.movable(src) {
            return Err(MigrateError::Pinned);
        }
        let page = self
            .mem
            .alloc_tagged_reservable(PAGE_ORDER, Gfp::USER_TAGGED_DESTINATION, &mut self.mover())
            .await
            .map_err(|_| MigrateError::NoMemory)?;
        if page.reservation.is_err() {
            // No free page whose storage can be reserved (the allocator's
            // search gave up: memory is short and what is free lies under
            // blocks that cannot be claimed). Moving the page into another
            // page without storage would only fault again, for ever, from
            // one page to the other: the fault fails out of memory.
            self.release_if_unused(page.pfn).await;
            return Err(MigrateError::NoMemory);
        }
        // try_to_migrate()'s page-table locks (see `wait_rmap_ptls`).
        self.wait_rmap_ptls(src).await;
        // The reservation may have slept: pinned or freed meanwhile?
        if !self.movable(src) {
            self.release_if_unused(page.pfn).await;
            return Err(MigrateError::Pinned);
        }
        self.move_page_now(src, page.pfn, reason);
        super::free_unreserved(&self.mem, src);
        Ok(page.pfn)
    }

    /// [`Self::migrate_page`] to a plain destination (nothing reserved),
    /// with no switch point: what a claim's mover may do under
    /// `tag_blocks_lock` (it is not `async`, so a claim's future never
    /// contains another claim's).
    pub(crate) fn migrate_page_now(
        &self,
        src: Pfn,
        reason: MigrateReason,
    ) -> Result<Pfn, MigrateError> {
        if !self.movable(src) {
            return Err(MigrateError::Pinned);
        }
        let dst = self
            .mem
            .alloc(PAGE_ORDER, Gfp::USER_TAGGED_DESTINATION)
            .map_err(|_| MigrateError::NoMemory)?;
        self.move_page_now(src, dst, reason);
        super::free_unreserved(&self.mem, src);
        Ok(dst)
    }

    /// Whether `src` is in use and not pinned.
    fn movable(&self, src: Pfn) -> bool {
        self.mem
            .phys()
            .alloc
            .frame(src)
            .is_some_and(|m| !m.is_pinned())
    }

    /// Moves the unpinned, unreserved page `src` into the fresh frame `dst`:
    /// copies data (and tags, if any) through [`Memory::migrate_block`],
    /// rewrites every mapping found through the rmap and the page cache
    /// entry, all without a switch point. The caller frees `src`.
    pub(super) fn move_page_now(&self, src: Pfn, dst: Pfn, reason: MigrateReason) {
        self.trace().emit(|| Event::Migrate {
            from: src,
            to: dst,
            reason,
        });
        // A page of a THP: its blocks become PTEs first (see `huge`).
        self.split_blocks_mapping(src, SplitReason::Migration);
        // A page of an mTHP folio: the folio splits (see `mthp`).
        self.split_folio_of(src);
        self.mem.migrate_block(src, dst, PAGE_ORDER);
        let entries = self.rmap.borrow().mappings(src).to_vec();
        {
            let mut mms = self.mms.borrow_mut();
            for e in &entries {
                let m = mms.get_mut(&e.mm).expect("BUG: rmap names a gone mm");
                let new = match m.pt.pte(e.va) {
                    Pte::Present(l) if l.pfn == src => Pte::Present(Leaf { pfn: dst, ..l }),
                    Pte::AwaitingTagStorage(l) if l.pfn == src => {
                        Pte::AwaitingTagStorage(Leaf { pfn: dst, ..l })
                    }
                    other => panic!("BUG: rmap entry {e:?} of {src} finds {other:?}"),
                };
                self.raw_set_pte(m, e.va, new)
                    .expect("BUG: rewriting an existing entry allocates");
            }
        }
        // Tags restored at swap-in that wait for tag storage move with the
        // page (RFC v3: the tags_by_pfn entry follows the folio).
        // A KSM page stays one (Linux folio_migrate_ksm()).
        self.ksm_frame_moved(src, Some(dst));
        let restored = self.restored_tags.borrow_mut().remove(&src);
        if let Some(tags) = restored {
            self.restored_tags.borrow_mut().insert(dst, tags);
        }
        self.rmap
            .borrow_mut()
            .move_frame(src, dst)
            .unwrap_or_else(|e| panic!("BUG: rmap move: {e}"));
        self.lru.borrow_mut().replace(src, dst);
        let cached = self.swap_cache_slot.borrow_mut().remove(&src);
        if let Some(slot) = cached {
            self.swap_cache_slot.borrow_mut().insert(dst, slot);
            self.swap_cache.borrow_mut().insert(slot, dst);
        }
        let owner = self.cache_owner.borrow_mut().remove(&src);
        if let Some((object, pgoff)) = owner {
            self.cache_owner.borrow_mut().insert(dst, (object, pgoff));
            self.objects
                .borrow_mut()
                .get_mut(&object)
                .expect("BUG: cached page of a gone object")
                .pages
                .insert(pgoff, dst);
        }
    }
}
