//! System calls on a process's own state: prctl, mmap, munmap, mprotect,
//! madvise, pin/unpin, the kernel's copies of user memory (`write-fd`,
//! `read-fd`) and the tracee side of `PTRACE_PEEKMTETAGS`/`POKEMTETAGS`.
//!
//! Each call checks its arguments in Linux's order and returns the errno of
//! the first check that fails; `docs/semantics.md` has the tables. Where a
//! Linux call can fail half-way (mprotect, madvise), the part done before
//! the failure stays done, as in Linux.
//!
//! Not modelled, because nothing the user sees depends on it: populating
//! (`MAP_POPULATE`) and the fault-in of `pin` (private pages are the
//! process's own from the first write either way, and the objects behind
//! private mappings are never written, so a copy made early reads the same
//! as one made late); `pageout`, `hugepage`, `nohugepage`, `mergeable`,
//! `unmergeable`. Memory exhaustion does not exist here: the commit limit
//! (`ENOMEM` from mmap or mprotect), `ENOMEM` from fork and out-of-memory
//! faults are the kernel model's alone (docs/semantics.md §16).

use mte::{AccessKind, GRANULE_SIZE, Tag, TaggedPtr, UaccessOutcome, VirtAddr, check_uaccess};
use uapi::{Advice, Backing, Errno, MapFlags, MteCtrl, PrctlRequest, Prot, Sharing};

use crate::memory::{Object, ObjectKind};
use crate::process::Process;
use crate::space::{Mapping, Need, Perm, Placement, SpaceError, Vma};

/// Whether a pointer carries anything in bits 63:56.
fn has_top_byte(ptr: TaggedPtr) -> bool {
    ptr.addr().as_u64() != ptr.raw()
}

impl Process {
    /// `PR_SET_TAGGED_ADDR_CTRL` with the keys of `request`; the others keep
    /// their value. `EINVAL` when Linux's `set_tagged_addr_ctrl()` refuses
    /// the resulting word (any MTE bit on a machine without MTE); nothing
    /// changes then.
    pub fn prctl(&mut self, request: PrctlRequest, mte: bool) -> Result<(), Errno> {
        let word = request.apply(self.ctrl).encode();
        self.ctrl = MteCtrl::decode(word, mte).ok_or(Errno::Inval)?;
        Ok(())
    }

    /// `PR_GET_TAGGED_ADDR_CTRL`.
    pub fn prctl_get(&self) -> u64 {
        self.ctrl.encode()
    }

    /// `mmap(2)`: the new mapping's base.
    pub fn mmap(
        &mut self,
        len: u64,
        prot: Prot,
        flags: MapFlags,
        mte: bool,
    ) -> Result<VirtAddr, Errno> {
        let layout = *self.layout();
        if len == 0 {
            return Err(Errno::Inval);
        }
        let len = layout
            .page_align_up(len)
            .filter(|&l| l <= layout.task_size)
            .ok_or(Errno::NoMem)?;
        let base = match flags.fixed {
            Some(fixed) => {
                // Linux never untags mmap's address (tagged-address-abi.rst);
                // the scenario language makes a tag EINVAL.
                if has_top_byte(fixed) {
                    return Err(Errno::Inval);
                }
                let addr = fixed.addr();
                if !layout.is_user_range(addr, len) {
                    return Err(Errno::NoMem);
                }
                if !layout.is_page_aligned(addr) {
                    return Err(Errno::Inval);
                }
                if addr.as_u64() < layout.mmap_min_addr {
                    return Err(Errno::Perm);
                }
                Some(addr)
            }
            None => None,
        };
        // The spec's refusal of PROT_MTE without MTE is an argument check:
        // it comes before the search for a free range, as
        // arch_validate_prot() comes first in mprotect.
        if prot.mte && !mte {
            return Err(Errno::Inval);
        }
        let base = match base {
            Some(fixed) => fixed,
            None => self
                .space
                .find_free(len, Placement::of(flags))
                .map_err(SpaceError::errno)?,
        };
        // arch_validate_flags(): VM_MTE needs VM_MTE_ALLOWED, which regular
        // files never have; checked once the range is known.
        if prot.mte && flags.backing == Backing::File {
            return Err(Errno::Inval);
        }
        let end = layout.virt(base.as_u64() + len);
        if flags.fixed.is_some() {
            self.space.unmap(base, end);
        }
        let object_kind = match (flags.sharing, flags.backing) {
            (Sharing::Private, Backing::Anon) => None,
            (Sharing::Shared, Backing::Anon) => Some(ObjectKind::SharedAnon),
            (_, Backing::Shm) => Some(ObjectKind::Tmpfs),
            (_, Backing::File) => Some(ObjectKind::RegularFile),
        };
        let mapping = match object_kind {
            None => Mapping::PrivateAnon,
            Some(kind) => Mapping::Object {
                sharing: flags.sharing,
                object: Object::new_shared(kind, len / layout.page_size()),
                first_page: 0,
            },
        };
        self.space.insert(Vma {
            start: base,
            end,
            perm: Perm::from_prot(prot),
            tagged: prot.mte,
            mapping,
        });
        Ok(base)
    }

    /// `munmap(2)`; the address is untagged first.
    pub fn munmap(&mut self, ptr: TaggedPtr, len: u64) -> Result<(), Errno> {
        let layout = *self.layout();
        let addr = ptr.addr();
        if !layout.is_page_aligned(addr) || !layout.is_user_range(addr, len) {
            return Err(Errno::Inval);
        }
        let len = layout
            .page_align_up(len)
            .expect("BUG: a length within TASK_SIZE overflows");
        if len == 0 {
            return Err(Errno::Inval);
        }
        self.space.unmap(addr, layout.virt(addr.as_u64() + len));
        Ok(())
    }

    /// `mprotect(2)`; the address is untagged first. `PROT_MTE` is added to
    /// each mapping in turn and never removed.
    pub fn mprotect(
        &mut self,
        ptr: TaggedPtr,
        len: u64,
        prot: Prot,
        mte: bool,
    ) -> Result<(), Errno> {
        let layout = *self.layout();
        let addr = ptr.addr();
        if !layout.is_page_aligned(addr) {
            return Err(Errno::Inval);
        }
        if len == 0 {
            return Ok(());
        }
        let end = layout
            .page_align_up(len)
            .and_then(|len| addr.as_u64().checked_add(len))
            .ok_or(Errno::NoMem)?;
        // Linux: arch_validate_prot().
        if prot.mte && !mte {
            return Err(Errno::Inval);
        }
        // Nothing is mapped at or above TASK_SIZE: the walk stops there and
        // the rest of the range is a hole.
        let walk_end = end.min(layout.task_size);
        if addr.as_u64() >= walk_end {
            return Err(Errno::NoMem);
        }
        let perm = Perm::from_prot(prot);
        self.space
            .change_each(addr, layout.virt(walk_end), |vma| {
                if prot.mte && !vma.mte_allowed() {
                    return Err(SpaceError::MteNotAllowed { start: vma.start });
                }
                vma.perm = perm;
                vma.tagged |= prot.mte;
                Ok(())
            })
            .map_err(SpaceError::errno)?;
        if end > walk_end {
            return Err(Errno::NoMem);
        }
        Ok(())
    }

    /// `madvise(2)`. The advice is applied to every mapped part of the
    /// range; a hole anywhere makes the result `ENOMEM` afterwards.
    pub fn madvise(&mut self, ptr: TaggedPtr, len: u64, advice: Advice) -> Result<(), Errno> {
        let layout = *self.layout();
        if !layout.is_page_aligned(ptr.addr()) {
            return Err(Errno::Inval);
        }
        let len = layout.page_align_up(len).ok_or(Errno::Inval)?;
        // Linux checks `start + len` for wrapping before it untags start.
        ptr.raw().checked_add(len).ok_or(Errno::Inval)?;
        if len == 0 {
            return Ok(());
        }
        let start = ptr.addr();
        let end = start.as_u64().saturating_add(len);
        let walk_end = end.min(layout.task_size);
        if start.as_u64() >= walk_end {
            return Err(Errno::NoMem);
        }
        let (parts, hole) = self.space.mapped_parts(start, layout.virt(walk_end));
        match advice {
            // Linux: zap_page_range_single(); a private mapping falls back to
            // its object (or zeros), a shared one loses nothing.
            Advice::DontNeed => {
                for (part_start, part_end, shared) in parts.iter().copied() {
                    if !shared {
                        self.space.drop_private(part_start, part_end);
                    }
                }
            }
            Advice::PageOut
            | Advice::HugePage
            | Advice::NoHugePage
            | Advice::Mergeable
            | Advice::Unmergeable => {}
        }
        if parts.is_empty() || hole.is_some() || end > walk_end {
            return Err(Errno::NoMem);
        }
        Ok(())
    }

    /// The pages `[ptr, ptr + len)` touches, `None` outside the user
    /// address space.
    fn page_span(&self, ptr: TaggedPtr, len: u64) -> Option<(crate::layout::Vpn, u64)> {
        let layout = self.layout();
        let addr = ptr.addr();
        if !layout.is_user_range(addr, len) {
            return None;
        }
        let first = layout.vpn(addr);
        let count = layout.page.pages_spanned(addr, len);
        Some((first, count))
    }

    /// `pin`: a writable long-term pin (`FOLL_WRITE | FOLL_LONGTERM`, as
    /// io_uring takes for a registered buffer) of every page the range
    /// touches, all or nothing.
    pub fn pin(&mut self, ptr: TaggedPtr, len: u64) -> Result<(), Errno> {
        self.pin_with(ptr, len, true)
    }

    /// `pin ... longterm=off`: a short-term pin (`FOLL_PIN` without
    /// `FOLL_LONGTERM`, as `vmsplice(2)` takes one). What a process sees
    /// differs from a long-term pin only in that a shared file mapping may
    /// be pinned (`writable_file_mapping_allowed()` applies to long-term pins
    /// only); where the page lies is invisible here.
    pub fn pin_short_term(&mut self, ptr: TaggedPtr, len: u64) -> Result<(), Errno> {
        self.pin_with(ptr, len, false)
    }

    fn pin_with(&mut self, ptr: TaggedPtr, len: u64, longterm: bool) -> Result<(), Errno> {
        if len == 0 {
            return Ok(());
        }
        let (first, count) = self.page_span(ptr, len).ok_or(Errno::Fault)?;
        let layout = *self.layout();
        for i in 0..count {
            let addr = layout.vpn_addr(crate::layout::Vpn(first.0 + i));
            // Linux check_vma_flags(): no mapping or no VM_WRITE is EFAULT,
            // and so is a shared mapping of a file that needs dirty tracking.
            let vma = self.space.vma_at(addr).ok_or(Errno::Fault)?;
            if !vma.perm.write {
                return Err(Errno::Fault);
            }
            if longterm
                && let Mapping::Object {
                    sharing: Sharing::Shared,
                    object,
                    ..
                } = &vma.mapping
                && object.borrow().kind.needs_dirty_tracking()
            {
                return Err(Errno::Fault);
            }
        }
        for i in 0..count {
            *self
                .pins
                .entry(crate::layout::Vpn(first.0 + i))
                .or_insert(0) += 1;
        }
        Ok(())
    }

    /// `unpin`: drops one pin of every page the range touches; `EINVAL`,
    /// with nothing dropped, if one of them is not pinned.
    pub fn unpin(&mut self, ptr: TaggedPtr, len: u64) -> Result<(), Errno> {
        if len == 0 {
            return Ok(());
        }
        let (first, count) = self.page_span(ptr, len).ok_or(Errno::Inval)?;
        let last = crate::layout::Vpn(first.0 + count);
        let pinned = self.pins.range(first..last).count() as u64;
        if pinned != count {
            return Err(Errno::Inval);
        }
        for i in 0..count {
            let vpn = crate::layout::Vpn(first.0 + i);
            let pins = self.pins.get_mut(&vpn).expect("BUG: counted pin is gone");
            *pins -= 1;
            if *pins == 0 {
                self.pins.remove(&vpn);
            }
        }
        Ok(())
    }

    /// How many of the `len` bytes at `ptr` the kernel copies
    /// (`copy_from_user`/`copy_to_user` as `write(2)`/`read(2)` use them):
    /// up to the first byte in a page it may not access, or the first
    /// mismatching granule when its access is tag checked. `EFAULT` when
    /// that is none of them.
    fn uaccess(&self, ptr: TaggedPtr, len: u64, need: Need) -> Result<u64, Errno> {
        let layout = self.layout();
        // Linux access_ok(): the address is untagged only with the
        // tagged-address ABI on.
        if !self.ctrl.tagged_addr && has_top_byte(ptr) {
            return Err(Errno::Fault);
        }
        let addr = ptr.addr();
        if !layout.is_user_range(addr, len) {
            return Err(Errno::Fault);
        }
        let count = len.min(layout.max_rw_count);
        if count == 0 {
            return Ok(0);
        }
        let mut reachable = 0;
        while reachable < count {
            let at = layout.virt(addr.as_u64() + reachable);
            if !self.space.vma_at(at).is_some_and(|vma| vma.allows(need)) {
                break;
            }
            let to_page_end = layout.page_size() - layout.offset_in_page(at) as u64;
            reachable += to_page_end.min(count - reachable);
        }
        let kind = match need {
            Need::Read => AccessKind::Load,
            Need::Write => AccessKind::Store,
        };
        let checked = check_uaccess(ptr, reachable, kind, self.check_settings(), |granule| {
            self.space.memory_tag(granule)
        })
        .expect("BUG: a user range leaves the address space");
        let done = match checked {
            UaccessOutcome::Complete => reachable,
            UaccessOutcome::Stopped { done } => done,
        };
        if done == 0 {
            return Err(Errno::Fault);
        }
        Ok(done)
    }

    /// `write-fd`: the kernel reads `len` bytes of user memory.
    pub fn write_fd(&self, ptr: TaggedPtr, len: u64) -> Result<u64, Errno> {
        self.uaccess(ptr, len, Need::Read)
    }

    /// `read-fd`: the kernel writes `len` bytes of `byte` to user memory.
    pub fn read_fd(&mut self, ptr: TaggedPtr, len: u64, byte: u8) -> Result<u64, Errno> {
        let done = self.uaccess(ptr, len, Need::Write)?;
        let layout = *self.layout();
        let mut written = 0;
        while written < done {
            let at = layout.virt(ptr.addr().as_u64() + written);
            let offset = layout.offset_in_page(at);
            let n = (layout.page_size() - offset as u64).min(done - written);
            self.space.write_page(at, |page| {
                page.fill(offset..offset + n as usize, byte);
            });
            written += n;
        }
        Ok(done)
    }

    /// The tracee side of `PTRACE_PEEKMTETAGS` (`write == None`) and
    /// `PTRACE_POKEMTETAGS` (`write == Some(tags)`): granule after granule
    /// from the granule holding `ptr`, as long as the page is in a tagged
    /// mapping that the forced access may touch. The count done, `EIO` if
    /// none and `EFAULT` for a zero-length request (Linux
    /// `__access_remote_tags()`).
    fn remote_tags(
        &mut self,
        ptr: TaggedPtr,
        wanted: u64,
        mut each: impl FnMut(&mut Process, VirtAddr, u64),
        write: bool,
    ) -> Result<u64, Errno> {
        if wanted == 0 {
            return Err(Errno::Fault);
        }
        let layout = *self.layout();
        let mut addr = ptr.addr().granule_base().as_u64();
        let mut done = 0;
        while done < wanted && addr < layout.task_size {
            let at = layout.virt(addr);
            // get_user_pages_remote() with FOLL_FORCE: any mapping may be
            // read; a write needs VM_WRITE or a private (copy-on-write)
            // mapping. Then the mapping must be VM_MTE.
            let Some(vma) = self.space.vma_at(at) else {
                break;
            };
            if (write && !vma.perm.write && vma.is_shared()) || !vma.tagged {
                break;
            }
            let in_page = (layout.page_size() - layout.offset_in_page(at) as u64) / GRANULE_SIZE;
            let n = in_page.min(wanted - done);
            for i in 0..n {
                each(self, layout.virt(addr + i * GRANULE_SIZE), done + i);
            }
            done += n;
            addr += n * GRANULE_SIZE;
        }
        if done == 0 {
            return Err(Errno::Io);
        }
        Ok(done)
    }

    /// `PTRACE_PEEKMTETAGS` on this process: up to `granules` tags.
    pub fn peek_tags(&mut self, ptr: TaggedPtr, granules: u64) -> Result<Vec<Tag>, Errno> {
        let mut tags = Vec::new();
        self.remote_tags(
            ptr,
            granules,
            |p, granule, _| {
                tags.push(p.space.memory_tag(granule).unwrap_or(Tag::ZERO));
            },
            false,
        )?;
        Ok(tags)
    }

    /// `PTRACE_POKEMTETAGS` on this process: the number of tags written.
    pub fn poke_tags(&mut self, ptr: TaggedPtr, tags: &[Tag]) -> Result<u64, Errno> {
        self.remote_tags(
            ptr,
            tags.len() as u64,
            |p, granule, index| {
                let offset = p.layout().offset_in_page(granule);
                let tag = tags[index as usize];
                p.space
                    .write_page(granule, |page| page.set_tag_at(offset, tag));
            },
            true,
        )
    }
}
