//! The MTE user ABI (docs/semantics.md §4, §5, §13, §15; Linux
//! `arch/arm64/kernel/mte.c`, `Documentation/arch/arm64/memory-tagging-extension.rst`):
//! what a process sees of MTE beyond plain loads and stores.
//!
//! # What it owns
//! - `prctl(PR_SET_TAGGED_ADDR_CTRL)` / `PR_GET_TAGGED_ADDR_CTRL`
//!   (Linux `set_tagged_addr_ctrl()`, `get_tagged_addr_ctrl()`): the
//!   process's [`uapi::MteCtrl`] (tag check mode, IRG include mask, tagged
//!   address ABI), validated by [`uapi::MteCtrl::decode`];
//! - PSTATE.TCO (tag check override) per process;
//! - tag check fault delivery: a synchronous fault is `SIGSEGV` /
//!   `SEGV_MTESERR` at the faulting address (counted `tcf.sync`); an
//!   asynchronous one sets the process's pending flag (Linux `TIF_MTE_ASYNC_FAULT`)
//!   and is delivered as `SEGV_MTEAERR`, with no address, at its next kernel
//!   entry (`mte_check_tfsr_entry()`; counted `tcf.async`);
//! - IRG and ADDG with the process's include mask as GCR_EL1.Exclude (its
//!   complement);
//! - `PTRACE_PEEKMTETAGS` / `PTRACE_POKEMTETAGS` (Linux
//!   `__access_remote_tags()`, `FOLL_FORCE`).
//!
//! # Invariants
//! - A process's settings are always ones `prctl` would accept (checked by
//!   `check`); a refused `prctl` changes nothing (`EINVAL`).
//! - A pending asynchronous fault is reported at most once, at the first
//!   command that enters the kernel.
//! - ptrace tag writes land only in pages whose tags are initialised and
//!   whose tag storage is reserved (docs/model.md §4.8): the page is first
//!   faulted in for a forced write.

use mte::{CheckOutcome, GRANULE_SIZE, Pfn, Tag, TaggedPtr, VirtAddr};
use uapi::{Command, Errno, Fault, FaultCode, MteCtrl, Outcome, Pid, PrctlRequest, Reply};

use super::access::{FAULT_BUDGET_PER_PAGE, pa_of, page_base, va};
use super::fault::{Need, allows};
use super::{Kernel, PAGE};
use crate::mm::layout::TASK_SIZE;
use crate::mm::{MmId, Pte};

impl Kernel {
    /// Linux `set_tagged_addr_ctrl()` with the keys of `request` applied.
    pub(crate) fn prctl(&self, pid: Pid, request: PrctlRequest) -> Result<(), Errno> {
        let mte = self.has_mte();
        let mut procs = self.procs.borrow_mut();
        let process = procs.get_mut(&pid).ok_or(Errno::Srch)?;
        let word = request.apply(process.ctrl).encode();
        process.ctrl = MteCtrl::decode(word, mte).ok_or(Errno::Inval)?;
        Ok(())
    }

    pub(crate) fn prctl_get(&self, pid: Pid) -> Result<u64, Errno> {
        let procs = self.procs.borrow();
        Ok(procs.get(&pid).ok_or(Errno::Srch)?.ctrl.encode())
    }

    pub(crate) fn set_tco(&self, pid: Pid, on: bool) -> Result<(), Errno> {
        let mut procs = self.procs.borrow_mut();
        procs.get_mut(&pid).ok_or(Errno::Srch)?.tco = on;
        Ok(())
    }

    /// IRG with the process's GCR_EL1.Exclude (the complement of its include
    /// mask); draws once from the machine's RNG.
    pub(crate) fn irg(
        &self,
        pid: Pid,
        ptr: mte::TaggedPtr,
        exclude: mte::TagMask,
    ) -> mte::TaggedPtr {
        let gcr = self.procs.borrow()[&pid].ctrl.include.complement();
        mte::irg(ptr, gcr, exclude, &mut *self.rng.borrow_mut())
    }

    /// ADDG; a sum past bits 55:0 carries into the top byte (the tag field
    /// is then replaced), as the 64-bit addition does.
    pub(crate) fn addg(
        &self,
        pid: Pid,
        ptr: mte::TaggedPtr,
        offset: mte::GranuleOffset,
        tag_offset: mte::TagOffset,
    ) -> mte::TaggedPtr {
        let exclude = self.procs.borrow()[&pid].ctrl.include.complement();
        mte::addg(ptr, offset, tag_offset, exclude).unwrap_or_else(|_| {
            let tag = mte::choose_non_excluded_tag(ptr.tag(), tag_offset, exclude);
            mte::TaggedPtr::from_raw(ptr.raw().wrapping_add(offset.bytes())).with_tag(tag)
        })
    }

    /// What a tag check's outcome does: a synchronous fault, or an
    /// asynchronous one left pending for the next kernel entry.
    pub(crate) fn check_verdict(&self, pid: Pid, outcome: CheckOutcome) -> Result<(), Fault> {
        match outcome {
            CheckOutcome::Pass => Ok(()),
            CheckOutcome::SyncFault { addr } => {
                self.bump(|c| c.tcf_sync += 1);
                Err(Fault {
                    code: FaultCode::SegvMteSerr,
                    addr: Some(addr),
                })
            }
            CheckOutcome::AsyncFault => {
                if let Some(p) = self.procs.borrow_mut().get_mut(&pid) {
                    p.async_pending = true;
                }
                Ok(())
            }
        }
    }

    /// The tracee of a ptrace request: `ESRCH` if gone or the tracer itself,
    /// `EIO` without MTE, `EFAULT` for zero granules.
    fn tracee(&self, tracer: Pid, target: Pid, granules: u64) -> Result<MmId, Errno> {
        if target == tracer {
            return Err(Errno::Srch);
        }
        let mm = self.process_mm(target).ok_or(Errno::Srch)?;
        if !self.has_mte() {
            return Err(Errno::Io);
        }
        if granules == 0 {
            return Err(Errno::Fault);
        }
        Ok(mm)
    }

    /// `PTRACE_PEEKMTETAGS` (`FOLL_FORCE`): any tagged mapping is readable;
    /// tags are read as LDG would after its fault, without taking it (same
    /// values: 0 where no page or no initialised tags).
    pub(crate) fn peek_tags(
        &self,
        pid: Pid,
        target: Pid,
        ptr: TaggedPtr,
        granules: u64,
    ) -> Result<Vec<Tag>, Errno> {
        let mm = self.tracee(pid, target, granules)?;
        let mms = self.mms.borrow();
        let m = mms.get(&mm).ok_or(Errno::Srch)?;
        let mut tags = Vec::new();
        let mut addr = ptr.addr().granule_base().as_u64();
        while (tags.len() as u64) < granules && addr < TASK_SIZE {
            let Some(vma) = m.vmas.find(va(addr)) else {
                break;
            };
            if !vma.is_tagged() {
                break;
            }
            tags.push(self.observed_tag(m, vma, va(addr)));
            addr += GRANULE_SIZE;
        }
        if tags.is_empty() {
            return Err(Errno::Io);
        }
        Ok(tags)
    }

    /// `PTRACE_POKEMTETAGS` (`FOLL_FORCE`): private tagged mappings whatever
    /// their protection (copy-on-write into the tracee's own page), shared
    /// ones only if writable.
    pub(crate) async fn poke_tags(
        &self,
        pid: Pid,
        target: Pid,
        ptr: TaggedPtr,
        tags: &[Tag],
    ) -> Result<u64, Errno> {
        let mm = self.tracee(pid, target, tags.len() as u64)?;
        let mut addr = ptr.addr().granule_base().as_u64();
        let mut done = 0usize;
        while done < tags.len() && addr < TASK_SIZE {
            let vma = {
                let mms = self.mms.borrow();
                mms.get(&mm).and_then(|m| m.vmas.find(va(addr)).copied())
            };
            let Some(vma) = vma else {
                break;
            };
            if !vma.is_tagged() || (vma.is_shared() && !allows(&vma, Need::Write)) {
                break;
            }
            let in_page = ((page_base(addr) + PAGE - addr) / GRANULE_SIZE) as usize;
            let n = in_page.min(tags.len() - done);
            let Some(pfn) = self.forced_write_page(mm, va(page_base(addr))).await else {
                break;
            };
            for (i, tag) in tags[done..done + n].iter().enumerate() {
                let g = addr + i as u64 * GRANULE_SIZE;
                self.mem
                    .write_tag(pa_of(pfn, g - page_base(g)), *tag)
                    .expect("BUG: a mapped frame is present");
            }
            done += n;
            addr += n as u64 * GRANULE_SIZE;
        }
        if done == 0 {
            return Err(Errno::Io);
        }
        Ok(done as u64)
    }

    /// The page at `page` that a forced write may change, faulted in
    /// (`get_user_pages_remote(FOLL_FORCE | FOLL_WRITE)`); its tags are
    /// initialised and its storage reserved. `None` if it cannot be had.
    async fn forced_write_page(&self, mm: MmId, page: VirtAddr) -> Option<Pfn> {
        for _ in 0..FAULT_BUDGET_PER_PAGE {
            let found = {
                let mms = self.mms.borrow();
                let m = mms.get(&mm)?;
                let vma = *m.vmas.find(page)?;
                match super::huge::page_entry(m.pt.walk(page), page) {
                    Pte::Present(leaf)
                        if self.write_resolved(&vma, leaf, true)
                            && self.mem.page_mte_tagged(leaf.pfn)
                            && self.mem.tag_storage_reserved(leaf.pfn) =>
                    {
                        Some(leaf.pfn)
                    }
                    _ => None,
                }
            };
            if found.is_some() {
                return found;
            }
            if let Err(e) = self.handle_mm_fault(mm, page, Need::Write, true).await {
                if e == super::fault::FaultError::OutOfMemory {
                    self.bump(|c| c.oom += 1);
                }
                return None;
            }
        }
        // The fault kept being replayed: a livelock (see `Kernel::livelock`).
        self.livelock(page);
        None
    }

    /// At the kernel entry of `command` by `pid`: takes the process's
    /// pending asynchronous tag check fault (`None`: no such process).
    pub(crate) fn take_async_fault(&self, pid: Pid, command: &Command) -> Option<bool> {
        let mut procs = self.procs.borrow_mut();
        let process = procs.get_mut(&pid)?;
        Some(command.enters_kernel() && core::mem::take(&mut process.async_pending))
    }

    /// Delivers a pending asynchronous tag check fault with the reply of
    /// the command that entered the kernel: `SEGV_MTEAERR`, no address; the
    /// command's binding stands.
    pub(crate) fn deliver_async_fault(&self, reply: Reply) -> Reply {
        self.bump(|c| c.tcf_async += 1);
        Reply {
            outcome: Outcome::Fault(Fault {
                code: FaultCode::SegvMteAerr,
                addr: None,
            }),
            bound: reply.bound,
        }
    }
}
