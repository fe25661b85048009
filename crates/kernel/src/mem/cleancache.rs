//! The cleancache of design `cleancache` (see `tagstore`'s `cleancache`
//! module; the RFC author's February 2024 proposal): clean page-cache pages
//! that reclaim evicted, kept in the frames of tag blocks that hold no
//! tags, and read back by the fault that needs the page again (Linux's
//! former `cleancache_put_page()` / `cleancache_get_page()` /
//! `cleancache_invalidate_inode()` hooks, `mm/cleancache.c`, removed in
//! 5.17, which the proposal would have revived as a tag storage backend).
//!
//! # Contract
//! - Only a design whose rules keep one ([`tagstore::Rules::keeps_cleancache`])
//!   stores anything; for every other design every call is a no-op.
//! - A copy lives in one tag storage frame, as real bytes, in a block that
//!   is not reserved. Reserving a block drops the copies its frames hold
//!   (the kernel's claim for this design, `mover::PhysSource`): a copy is
//!   clean, so dropping it loses nothing (the file has the data). The
//!   frame's bytes are zeroed then, as tags of frames never tagged read 0.
//! - A get is exclusive: the copy leaves the cache (the page is back in
//!   the page cache, which is then the only copy that can change).
//! - A put finds no room (every unreserved frame holds a copy, or every
//!   block is reserved): the page is simply not cached.
//! - Keys are the caller's (object, page offset) pairs; the caller
//!   invalidates an object's keys when the object goes.
//!
//! Checked by [`Memory::check`]: no copy lies in a reserved block, both maps
//! agree; a tag write into a frame holding a copy is a clobber (invariant 8).

use std::collections::BTreeMap;

use mte::{Pfn, PfnRange};

use super::Memory;

/// A key: (memory object, page offset), as the kernel numbers them.
pub type CacheKey = (u64, u64);

/// The cached copies and what happened to them so far.
#[derive(Clone, Debug, Default)]
pub(crate) struct Cleancache {
    by_key: BTreeMap<CacheKey, Pfn>,
    by_pfn: BTreeMap<Pfn, CacheKey>,
    pub(crate) stats: CleancacheStats,
}

/// The `cleancache.*` counters (docs/model.md §5).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CleancacheStats {
    /// Pages stored.
    pub puts: u64,
    /// Faults served from the cache.
    pub hits: u64,
    /// Copies dropped by reservations.
    pub drops: u64,
}

impl Cleancache {
    pub(crate) fn holds(&self, pfn: Pfn) -> bool {
        self.by_pfn.contains_key(&pfn)
    }

    pub(crate) fn len(&self) -> u64 {
        self.by_pfn.len() as u64
    }

    pub(crate) fn frames(&self) -> impl Iterator<Item = Pfn> + '_ {
        self.by_pfn.keys().copied()
    }

    /// Whether the two maps name each other.
    pub(crate) fn consistent(&self) -> bool {
        self.by_key.len() == self.by_pfn.len()
            && self
                .by_key
                .iter()
                .all(|(k, p)| self.by_pfn.get(p) == Some(k))
    }
}

impl Memory {
    /// `cleancache_put_page()`: keeps a copy of the clean page `src` under
    /// `key` in a free frame of an unreserved tag block. Whether it was
    /// kept.
    pub fn cleancache_put(&self, key: CacheKey, src: Pfn) -> bool {
        if !self.policy.rules().keeps_cleancache() {
            return false;
        }
        self.cleancache_invalidate(key);
        let Some(frame) = self.cleancache_room() else {
            return false;
        };
        {
            let mut phys = self.phys.borrow_mut();
            let data: Option<Box<[u8]>> = phys.contents.page_bytes(src).map(|b| b.to_boxed());
            match data {
                Some(data) => crate::phys::copy_into(
                    phys.contents
                        .page_bytes_mut(frame)
                        .expect("BUG: tag storage is present"),
                    &data,
                ),
                None => phys
                    .contents
                    .zero_page(frame)
                    .expect("BUG: tag storage is present"),
            }
        }
        let mut cache = self.cleancache.borrow_mut();
        cache.by_key.insert(key, frame);
        cache.by_pfn.insert(frame, key);
        cache.stats.puts += 1;
        true
    }

    /// The lowest tag storage frame of an unreserved block that holds no
    /// copy.
    fn cleancache_room(&self) -> Option<Pfn> {
        let manager = self.tag_storage();
        let cache = self.cleancache.borrow();
        self.geometry
            .blocks()
            .filter(|&b| !manager.block_state(b).is_reserved())
            .flat_map(|b| self.geometry.block_pfns(b).iter())
            .find(|p| !cache.holds(*p))
    }

    /// `cleancache_get_page()`: the copy under `key`, taken out of the
    /// cache.
    pub fn cleancache_get(&self, key: CacheKey) -> Option<Box<[u8]>> {
        let frame = {
            let mut cache = self.cleancache.borrow_mut();
            let frame = cache.by_key.remove(&key)?;
            cache.by_pfn.remove(&frame);
            cache.stats.hits += 1;
            frame
        };
        let mut phys = self.phys.borrow_mut();
        let data = phys.contents.page_bytes(frame).map_or_else(
            || vec![0; self.geometry.page_size() as usize].into(),
            |b| b.to_boxed(),
        );
        phys.contents
            .zero_page(frame)
            .expect("BUG: tag storage is present");
        Some(data)
    }

    /// `cleancache_invalidate_page()`: forgets the copy under `key`.
    pub fn cleancache_invalidate(&self, key: CacheKey) {
        let frame = {
            let mut cache = self.cleancache.borrow_mut();
            let Some(frame) = cache.by_key.remove(&key) else {
                return;
            };
            cache.by_pfn.remove(&frame);
            frame
        };
        self.phys
            .borrow_mut()
            .contents
            .zero_page(frame)
            .expect("BUG: tag storage is present");
    }

    /// The claim of a block under this design: drops every copy its frames
    /// hold (zeroing them). Never fails, never waits.
    pub(crate) fn cleancache_drop_range(&self, pfns: PfnRange) {
        let dropped: Vec<Pfn> = {
            let mut cache = self.cleancache.borrow_mut();
            let frames: Vec<Pfn> = cache
                .by_pfn
                .range(pfns.start..pfns.end())
                .map(|(p, _)| *p)
                .collect();
            for p in &frames {
                if let Some(key) = cache.by_pfn.remove(p) {
                    cache.by_key.remove(&key);
                }
            }
            cache.stats.drops += frames.len() as u64;
            frames
        };
        let mut phys = self.phys.borrow_mut();
        for p in dropped {
            phys.contents
                .zero_page(p)
                .expect("BUG: tag storage is present");
        }
    }

    /// What the cleancache did so far.
    pub fn cleancache_stats(&self) -> CleancacheStats {
        self.cleancache.borrow().stats
    }
}
