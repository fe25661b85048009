//! Kernel same-page merging (Linux v6.8 `mm/ksm.c`; arm64
//! `memcmp_pages()` in `arch/arm64/kernel/mte.c`).
//!
//! # Contract
//! - `ksm-scan` ([`Kernel::ksm_scan`]) is one full pass of ksmd
//!   (`ksm_do_scan()` until `scan_get_next_rmap_item()` wraps): every page
//!   of every `VM_MERGEABLE` VMA, address spaces in creation order, each
//!   page through `cmp_and_merge_page()`:
//!   1. *stable tree* (`stable_tree_search()`): a KSM page with the same
//!      bytes and fewer than [`MAX_PAGE_SHARING`] mappings takes the page's
//!      place at once (`try_to_merge_with_ksm_page()`, `replace_page()`);
//!   2. *checksum* (`calc_checksum()`): a page whose checksum changed since
//!      the previous pass (or that the previous pass did not see) only has
//!      it recorded: a page merges no earlier than its second pass, which
//!      is why `ksm_tests.c` waits for two full scans;
//!   3. *unstable tree* (`unstable_tree_search_insert()`, rebuilt empty each
//!      pass): a page with the same bytes seen earlier in this pass merges
//!      with it (`try_to_merge_two_pages()`): this page becomes the KSM page
//!      (write-protected in every mapping, `write_protect_page()`), the tree
//!      page's mapping is replaced by it; otherwise this page joins the
//!      tree.
//!
//!   The trees are keyed by content: a 64-bit hash picks the candidates and
//!   the bytes are compared (`memcmp_pages()`), so two pages merge exactly
//!   when their bytes are equal.
//! - Which pages are candidates (`scan_get_next_rmap_item()`,
//!   `try_to_merge_one_page()`, `write_protect_page()`): present anonymous
//!   pages of private, untagged `VM_MERGEABLE` VMAs, not special (the zero
//!   page is not anonymous: `follow_page()` returns it but `PageAnon()`
//!   fails), not in a page cache, not pinned (the reference count check of
//!   `write_protect_page()` fails), not locked (`trylock_page()`), and not
//!   flagged tagged: arm64 `memcmp_pages()` reports any page with
//!   `PG_mte_tagged` as different from every other page, and every page of
//!   a `VM_MTE` VMA is tagged or about to be (an entry awaiting tag storage
//!   included), so `VM_MTE` VMAs are skipped whole. A page of a THP has its
//!   block entries split first (`try_to_merge_one_page()` splits the THP).
//! - A KSM page is never written in place: [`Kernel::exclusive`] says no
//!   for it, so a write or a tag write copies it (`do_wp_page()`:
//!   `wp_can_reuse_anon_folio()` refuses KSM folios), even when only one
//!   mapping is left. It is freed with its last mapping; migration and
//!   compaction move it with its KSM state (`folio_migrate_ksm()`); reclaim
//!   swaps it out through the rmap like a page fork shares
//!   (`rmap_walk_ksm()`); the slot its mappings share is read back once
//!   through the swap cache into one page they share, no longer a KSM page
//!   (see `swapping`).
//! - `madvise unmergeable` ([`Kernel::ksm_unmerge_range`], Linux
//!   `unmerge_ksm_pages()` -> `break_ksm()`) copies every KSM page of the
//!   range back into a private page before `VM_MERGEABLE` is cleared; out
//!   of memory is `ENOMEM` and no flag changes. `mprotect` adding
//!   `PROT_MTE` unmerges the same way first (the copy is a tagged page with
//!   zeroed tags), so a KSM page is never mapped tagged.
//!
//! # Counters (docs/model.md §5)
//! `ksm.merged`: pages merged so far (both pages of an unstable-tree pair,
//! one for each page that joins a KSM page). `ksm.sharing`: KSM pages now
//! (Linux `pages_shared`; a KSM page stays one while any mapping is left,
//! as its stable node does). `ksm.saved` (a `--json` extra): mappings of
//! KSM pages beyond the first of each (Linux `pages_sharing`).
//!
//! # Simplifications (docs/model.md §6)
//! - The tunables are Linux's defaults: `max_page_sharing` 256,
//!   `use_zero_pages` off (pages of zeros merge with each other, never with
//!   the zero page), `merge_across_nodes` irrelevant (one node). No
//!   `PR_SET_MEMORY_MERGE`, no smart scan (`ksm_smart_scan` only delays
//!   merging of pages that keep failing), no `pages_to_scan` batching: a
//!   pass is one command.
//! - Counters are exact now rather than at the next scan: Linux counts a
//!   mapping into `pages_sharing` when ksmd next visits it (a forked KSM
//!   mapping, a KSM page's mapping that was broken), the model counts
//!   mappings.
//! - Address spaces are visited in creation order (Linux: the order they
//!   entered KSM); only which frame becomes the KSM page, and which pages
//!   miss a full KSM page, can differ.

use std::collections::{BTreeMap, BTreeSet};

use mte::{Pfn, VirtAddr};
use uapi::Errno;
use uapi::event::SplitReason;

use super::KernelViolation;
use super::fault::{FaultError, leaf_attrs};
use super::{Kernel, PAGE};
use crate::mm::layout::PAGE_SIZE;
use crate::mm::{Access, Leaf, MapLevel, MmId, Pte, VmFlags, Vma};
use crate::phys::PageView;

/// Linux `ksm_max_page_sharing` (sysfs `max_page_sharing`, default 256):
/// the most mappings one KSM page takes; a further identical page starts
/// another KSM page (a stable node chain's next dup).
pub(crate) const MAX_PAGE_SHARING: usize = 256;

/// What KSM keeps between passes.
#[derive(Clone, Debug, Default)]
pub(crate) struct KsmState {
    /// The KSM pages (Linux: folios with a stable node); the stable tree is
    /// built from them by content at the start of each pass.
    pub(crate) pages: BTreeSet<Pfn>,
    /// The checksum each page had when the last pass saw it, by address
    /// (Linux `rmap_item->oldchecksum`). A pass keeps only the addresses it
    /// saw, as `get_next_rmap_item()` drops the items of addresses skipped.
    pub(crate) checksums: BTreeMap<(MmId, VirtAddr), u32>,
    /// `ksm.merged`.
    pub(crate) merged: u64,
}

/// A 64-bit FNV-1a hash of a page's bytes, eight at a time: the key of
/// both trees (equal keys are compared byte for byte) and, truncated, the
/// checksum (Linux `calc_checksum()`: a 32-bit xxhash).
fn page_hash(bytes: Option<PageView<'_>>) -> u64 {
    const PRIME: u64 = 0x0000_0100_0000_01b3;
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    match bytes {
        Some(b) => {
            let mut word = [0u8; 8];
            for at in (0..b.len() / 8 * 8).step_by(8) {
                b.copy_to(at, &mut word);
                h = (h ^ u64::from_le_bytes(word)).wrapping_mul(PRIME);
            }
        }
        None => {
            for _ in 0..PAGE_SIZE / 8 {
                h = h.wrapping_mul(PRIME);
            }
        }
    }
    h
}

/// One pass's trees.
#[derive(Default)]
struct Pass {
    /// Hash -> KSM pages with that hash.
    stable: BTreeMap<u64, Vec<Pfn>>,
    /// Hash -> pages seen this pass with an unchanged checksum and no
    /// partner yet, where they were mapped.
    unstable: BTreeMap<u64, Vec<(MmId, VirtAddr, Pfn)>>,
    /// The checksums this pass saw.
    checksums: BTreeMap<(MmId, VirtAddr), u32>,
    /// Frames whose mapping was replaced by a KSM page: freed if unused.
    replaced: Vec<Pfn>,
}

impl Kernel {
    /// Whether `pfn` is a KSM page (Linux `folio_test_ksm()`).
    pub(crate) fn is_ksm(&self, pfn: Pfn) -> bool {
        self.ksm.borrow().pages.contains(&pfn)
    }

    /// `ksm.merged`, `ksm.sharing`, `ksm.saved`.
    pub(crate) fn ksm_counters(&self) -> (u64, u64, u64) {
        let ksm = self.ksm.borrow();
        let rmap = self.rmap.borrow();
        let saved = ksm
            .pages
            .iter()
            .map(|&p| rmap.count(p).saturating_sub(1) as u64)
            .sum();
        (ksm.merged, ksm.pages.len() as u64, saved)
    }

    /// A frame freed or migrated away stops being a KSM page; a migrated
    /// one's destination becomes one (Linux `folio_migrate_ksm()`).
    pub(crate) fn ksm_frame_moved(&self, src: Pfn, dst: Option<Pfn>) {
        let mut ksm = self.ksm.borrow_mut();
        if ksm.pages.remove(&src)
            && let Some(dst) = dst
        {
            ksm.pages.insert(dst);
        }
    }

    /// `ksm-scan`: one full pass (see the module doc).
    pub(crate) async fn ksm_scan(&self) {
        let mut pass = Pass::default();
        {
            let ksm = self.ksm.borrow();
            let phys = self.mem.phys();
            for &pfn in &ksm.pages {
                let hash = page_hash(phys.contents.page_bytes(pfn));
                pass.stable.entry(hash).or_default().push(pfn);
            }
        }
        let ids: Vec<MmId> = self.mms.borrow().keys().copied().collect();
        for mm in ids {
            // Linux: cond_resched() between pages, mmap_read_lock() per mm.
            self.sched.preempt_point().await;
            let Some(lock) = self.mm_lock(mm) else {
                continue;
            };
            let guard = lock.read().await;
            let vmas: Vec<Vma> = {
                let mms = self.mms.borrow();
                let Some(m) = mms.get(&mm) else {
                    continue;
                };
                m.vmas.iter().filter(|v| ksm_vma(v)).copied().collect()
            };
            for vma in vmas {
                let mut at = vma.start.as_u64();
                while at < vma.end.as_u64() {
                    let va = VirtAddr::new(at).expect("BUG: a VMA beyond the address space");
                    self.cmp_and_merge_page(mm, &vma, va, &mut pass);
                    at += PAGE;
                }
            }
            drop(guard);
            self.release_all(core::mem::take(&mut pass.replaced)).await;
        }
        self.ksm.borrow_mut().checksums = pass.checksums;
    }

    /// The page mapped at `va` in `mm` if KSM may merge it: present, not
    /// special, anonymous, unpinned, unlocked, not tagged (module doc).
    fn ksm_candidate(&self, mm: MmId, va: VirtAddr) -> Option<Pfn> {
        let pte = self.current_pte(mm, va)?;
        let Pte::Present(leaf) = pte else {
            return None;
        };
        let pfn = leaf.pfn;
        let ok = !leaf.attrs.special
            && !leaf.attrs.tagged
            && pfn != self.mem.zero_page()
            && Some(pfn) != self.huge_zero.get()
            && !self.cache_owner.borrow().contains_key(&pfn)
            && !self.page_locks.is_locked(pfn)
            && self.rmap_ptls_free(pfn)
            && self.mapped_untagged_everywhere(pfn)
            && !self.mem.page_mte_tagged(pfn)
            && self
                .mem
                .phys()
                .alloc
                .frame(pfn)
                .is_some_and(|m| !m.is_pinned())
            && self.mapped_untagged_everywhere(pfn);
        ok.then_some(pfn)
    }

    /// Whether every entry mapping `pfn` is present and untagged: a page
    /// another address space maps tagged or awaiting tag storage (fork
    /// shared it, then `mprotect(PROT_MTE)` there) will hold tags, and a
    /// KSM page is mapped only by untagged entries (the checker's rule).
    fn mapped_untagged_everywhere(&self, pfn: Pfn) -> bool {
        let entries = self.rmap.borrow().mappings(pfn).to_vec();
        entries.iter().all(
            |e| matches!(self.current_pte(e.mm, e.va), Some(Pte::Present(l)) if !l.attrs.tagged),
        )
    }

    /// Whether the frames hold the same bytes (`memcmp_pages()`; neither is
    /// tagged here, so equal bytes are equal pages).
    fn same_bytes(&self, a: Pfn, b: Pfn) -> bool {
        let phys = self.mem.phys();
        let (x, y) = (phys.contents.page_bytes(a), phys.contents.page_bytes(b));
        match (x, y) {
            (Some(x), Some(y)) => x.same_bytes(y),
            (Some(z), None) | (None, Some(z)) => z.first_nonzero().is_none(),
            (None, None) => true,
        }
    }

    /// Linux `cmp_and_merge_page()` for the page at `va` (no switch point).
    fn cmp_and_merge_page(&self, mm: MmId, vma: &Vma, va: VirtAddr, pass: &mut Pass) {
        let Some(pfn) = self.ksm_candidate(mm, va) else {
            return;
        };
        if self.is_ksm(pfn) {
            // Already merged (this mapping, or one fork shared).
            return;
        }
        let hash = page_hash(self.mem.phys().contents.page_bytes(pfn));
        // 1. The stable tree.
        let kpage = pass.stable.get(&hash).and_then(|list| {
            list.iter().copied().find(|&k| {
                self.is_ksm(k)
                    && self.rmap.borrow().count(k) < MAX_PAGE_SHARING
                    && self.same_bytes(k, pfn)
            })
        });
        if let Some(kpage) = kpage {
            self.replace_page(mm, vma, va, pfn, kpage);
            pass.replaced.push(pfn);
            self.ksm.borrow_mut().merged += 1;
            return;
        }
        // 2. The checksum must be unchanged since the last pass.
        let checksum = hash as u32;
        pass.checksums.insert((mm, va), checksum);
        if self.ksm.borrow().checksums.get(&(mm, va)) != Some(&checksum) {
            return;
        }
        // 3. The unstable tree.
        let bucket = pass.unstable.entry(hash).or_default();
        let mut partner = None;
        let mut same_page = false;
        bucket.retain(|&(tmm, tva, tpfn)| {
            if partner.is_some() {
                return true;
            }
            // The tree page must still be there, unchanged (Linux
            // get_mergeable_page() and memcmp_pages() again).
            if self.ksm_candidate(tmm, tva) != Some(tpfn) || self.is_ksm(tpfn) {
                return false;
            }
            if !self.same_bytes(tpfn, pfn) {
                return true;
            }
            if tpfn == pfn {
                // unstable_tree_search_insert(): the same page through
                // another mapping (fork): neither merges nor is inserted.
                same_page = true;
                return true;
            }
            if !self.mm_writer_free(tmm) || !self.still_ksm_vma(tmm, tva) {
                return true;
            }
            partner = Some((tmm, tva, tpfn));
            false
        });
        match partner {
            Some((tmm, tva, tpfn)) => {
                // try_to_merge_two_pages(): this page becomes the KSM page,
                // the tree page's mapping is replaced by it.
                let tvma = self.mms.borrow()[&tmm]
                    .vmas
                    .find(tva)
                    .copied()
                    .expect("BUG: a candidate outside every VMA");
                self.make_ksm_page(pfn);
                self.replace_page(tmm, &tvma, tva, tpfn, pfn);
                pass.replaced.push(tpfn);
                pass.stable.entry(hash).or_default().push(pfn);
                self.ksm.borrow_mut().merged += 2;
            }
            None if !same_page => bucket.push((mm, va, pfn)),
            None => {}
        }
    }

    /// Whether no CPU holds `mm`'s `mmap_lock` for writing (a tree page of
    /// another address space is merged only then: Linux would wait for the
    /// read lock, the model leaves it for the next pass).
    fn mm_writer_free(&self, mm: MmId) -> bool {
        self.mm_lock(mm).is_some_and(|l| l.writer().is_none())
    }

    /// Whether the VMA at `va` of `mm` is still one ksmd scans (a parallel
    /// `madvise` or `mprotect` may have changed it since it was seen).
    fn still_ksm_vma(&self, mm: MmId, va: VirtAddr) -> bool {
        self.mms
            .borrow()
            .get(&mm)
            .and_then(|m| m.vmas.find(va))
            .is_some_and(ksm_vma)
    }

    /// `pfn` becomes a KSM page: its blocks split, every entry of it
    /// write-protected and clean (`write_protect_page()`).
    fn make_ksm_page(&self, pfn: Pfn) {
        self.split_blocks_mapping(pfn, SplitReason::Ksm);
        // KSM splits a large folio before merging a page of it.
        self.split_folio_of(pfn);
        let entries = self.rmap.borrow().mappings(pfn).to_vec();
        let mut mms = self.mms.borrow_mut();
        for e in entries {
            let m = mms.get_mut(&e.mm).expect("BUG: rmap names a gone mm");
            let Pte::Present(leaf) = m.pt.pte(e.va) else {
                panic!("BUG: rmap entry {e:?} of {pfn} is not present");
            };
            let access = match leaf.attrs.access {
                Access::ReadWrite => Access::ReadOnly,
                other => other,
            };
            let mut attrs = leaf.attrs;
            attrs.access = access;
            attrs.dirty = false;
            self.raw_set_pte(m, e.va, Pte::Present(Leaf { attrs, ..leaf }))
                .expect("BUG: rewriting an existing entry allocates");
        }
        drop(mms);
        self.ksm.borrow_mut().pages.insert(pfn);
    }

    /// Linux `replace_page()`: the entry at `va` mapping `old` maps the KSM
    /// page `kpage` instead, read-only. The caller frees `old` if unused.
    fn replace_page(&self, mm: MmId, vma: &Vma, va: VirtAddr, old: Pfn, kpage: Pfn) {
        let blocks: Vec<VirtAddr> = self
            .rmap
            .borrow()
            .mappings(old)
            .iter()
            .filter(|e| e.mm == mm && e.level == MapLevel::Pmd)
            .map(|e| e.va)
            .collect();
        for base in blocks {
            self.split_huge_pmd(mm, base, SplitReason::Ksm);
        }
        let leaf = Leaf {
            pfn: kpage,
            attrs: leaf_attrs(vma, false, false),
        };
        self.write_pte(mm, va, Pte::Present(leaf))
            .expect("BUG: replacing an existing entry allocates");
    }

    /// Linux `unmerge_ksm_pages()`: every KSM page mapped in `[start, end)`
    /// of `mm` by a VMA whose flags pass `which` is copied into a private
    /// page (`break_ksm()`: an unsharing fault, `wp_page_copy()`), the copy
    /// keeping the VMA's tagging. Under `mmap_lock` held for writing by the
    /// caller. `ENOMEM` when a copy cannot be allocated.
    pub(crate) async fn ksm_unmerge_range(
        &self,
        mm: MmId,
        start: VirtAddr,
        end: VirtAddr,
        which: fn(VmFlags) -> bool,
    ) -> Result<(), Errno> {
        let targets: Vec<(VirtAddr, Vma)> = {
            let mms = self.mms.borrow();
            let Some(m) = mms.get(&mm) else {
                return Ok(());
            };
            let ksm = self.ksm.borrow();
            m.pt.leaves(start, end)
                .filter_map(|(at, entry)| match entry {
                    crate::mm::LeafEntry::Pte(Pte::Present(leaf))
                        if ksm.pages.contains(&leaf.pfn) =>
                    {
                        let vma = *m.vmas.find(at)?;
                        which(vma.flags).then_some((at, vma))
                    }
                    _ => None,
                })
                .collect()
        };
        for (at, vma) in targets {
            // Linux: cond_resched() in break_ksm()'s loop.
            self.sched.preempt_point().await;
            // A claim may have moved the page meanwhile: follow the entry.
            let leaf = match self.current_pte(mm, at) {
                Some(Pte::Present(now)) if self.is_ksm(now.pfn) => now,
                _ => continue,
            };
            match self
                .cow_copy(mm, at, &vma, Pte::Present(leaf), leaf.pfn, None)
                .await
            {
                Ok(_) => {}
                Err(FaultError::OutOfMemory) => {
                    self.bump(|c| c.oom += 1);
                    return Err(Errno::NoMem);
                }
                Err(FaultError::Signal(_)) => return Err(Errno::Fault),
            }
        }
        Ok(())
    }
}

impl Kernel {
    /// The KSM checks of the invariant checker: a KSM page is an allocated,
    /// anonymous, unpinned frame that is mapped or in the swap cache (it is
    /// freed with the last of them: invariant 6), never flagged tagged, and
    /// mapped only by
    /// read-only, untagged 4 KiB entries (the model's own consistency).
    pub(crate) fn ksm_violations(&self, state: &KsmState) -> Vec<KernelViolation> {
        let mut out = Vec::new();
        let rmap = self.rmap.borrow();
        let mms = self.mms.borrow();
        for &pfn in &state.pages {
            let counts = |what| KernelViolation::KsmCount { pfn, what };
            let page = |what| KernelViolation::KsmPage { pfn, what };
            let (mapcount, pinned) = match self.mem.phys().alloc.frame(pfn) {
                Some(m) => (m.mapcount, m.is_pinned()),
                None => {
                    out.push(counts("not allocated"));
                    continue;
                }
            };
            // The swap cache holds a page of its own (Linux: its
            // reference): a KSM page read back for a slot other entries
            // still name stays there after its last mapping goes.
            let in_swap_cache = self.swap_cache_slot.borrow().contains_key(&pfn);
            if (mapcount == 0 || rmap.count(pfn) == 0) && !in_swap_cache {
                out.push(counts("mapped nowhere but not freed"));
            }
            if pinned {
                out.push(counts("pinned"));
            }
            if self.cache_owner.borrow().contains_key(&pfn) {
                out.push(counts("in a page cache"));
            }
            if self.mem.page_mte_tagged(pfn) {
                out.push(page("flagged tagged"));
            }
            for e in rmap.mappings(pfn) {
                let Some(m) = mms.get(&e.mm) else {
                    continue;
                };
                match (e.level, m.pt.pte(e.va)) {
                    (MapLevel::Pte, Pte::Present(l))
                        if !l.attrs.tagged && !l.attrs.access.is_writable() => {}
                    _ => out.push(page("mapped writable, tagged or by a block")),
                }
            }
        }
        out
    }
}

/// Whether ksmd scans `vma` (`VM_MERGEABLE`; `vma_ksm_compatible()` already
/// kept the flag off shared VMAs; `VM_MTE` ones hold only tagged pages).
fn ksm_vma(vma: &Vma) -> bool {
    vma.flags.contains(VmFlags::MERGEABLE) && !vma.is_shared() && !vma.is_tagged()
}

/// Whether `madvise unmergeable` unmerges in a VMA with these flags.
pub(crate) fn was_mergeable(flags: VmFlags) -> bool {
    flags.contains(VmFlags::MERGEABLE)
}

/// Whether `mprotect` unmerges in a VMA with these (new) flags.
pub(crate) fn now_tagged(flags: VmFlags) -> bool {
    flags.contains(VmFlags::MTE)
}

#[cfg(test)]
mod tests {
    use super::page_hash;
    use crate::phys::PageView;

    #[test]
    fn a_page_without_buffer_hashes_as_zeros() {
        let zeros = vec![0u8; 4096];
        let view = |bytes: &[u8]| -> Vec<std::cell::Cell<u8>> {
            bytes.iter().map(|&b| std::cell::Cell::new(b)).collect()
        };
        let z = view(&zeros);
        assert_eq!(page_hash(None), page_hash(Some(PageView::of(&z))));
        let mut one = zeros.clone();
        one[4095] = 1;
        let o = view(&one);
        assert_ne!(page_hash(Some(PageView::of(&o))), page_hash(None));
    }
}
