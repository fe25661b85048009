//! User accesses: loads, stores, `fill`, `verify`, the tag instructions;
//! the kernel's copies of user memory (`write-fd`, `read-fd`); ptrace's tag
//! access (`peektags`, `poketags`). docs/semantics.md §12-§15.
//!
//! Every user access is resolved by [`Kernel::resolve`]: a synchronous
//! translation of every page it touches (software TLB, then a hardware walk
//! of the page table); the first page that misses or forbids the access
//! enters [`Kernel::handle_mm_fault`] (which may sleep) and the whole
//! translation is tried again, at most [`FAULT_BUDGET_PER_PAGE`] times per
//! page plus a constant, after which the access ends in a fault (a fault
//! that cannot make progress never loops). The successful translation, the
//! tag check ([`mte::check_access`]) and the data access run with no switch
//! point in between, so no migration or unmapping can come between them.
//!
//! Fault addresses keep the pointer's top byte: the lowest byte of the
//! access in the failing page; tag store faults at the granule; LDG at the
//! aligned address; alignment faults at the pointer.

use mte::{
    AccessKind, GRANULE_SIZE, Pfn, PhysAddr, Tag, TagStoreError, TagStoreOp, TaggedPtr,
    UaccessOutcome, VirtAddr, check_access, check_uaccess, plan_tag_load, plan_tag_store,
};
use platform::Mistake;
use uapi::{AccessSize, Errno, Fault, FaultCode, Outcome, Pid};

use super::fault::{Need, allows};
use super::proc::is_user_range;
use super::{Kernel, Mm, PAGE, fault_at};
use crate::mem::page_tag_in;
use crate::mm::layout::{PAGE_SHIFT, TASK_SIZE};
use crate::mm::{Access, Block, MmId, Pte, Walk};

/// Fault handler runs allowed per page of one access before it gives up.
pub(crate) const FAULT_BUDGET_PER_PAGE: u64 = 8;

/// The tag bytes of one page (two granules' tags a byte).
const PAGE_TAG_BYTES: usize = (PAGE / GRANULE_SIZE / 2) as usize;

/// Linux `MAX_RW_COUNT` (`INT_MAX & PAGE_MASK`).
const MAX_RW_COUNT: u64 = i32::MAX as u64 & !(PAGE - 1);

/// One translated page of an access.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(crate) struct PageMap {
    /// The page's virtual base.
    pub(crate) base: u64,
    pub(crate) pfn: Pfn,
    /// Mapped Normal Tagged.
    pub(crate) tagged: bool,
}

/// Why a synchronous translation stopped.
enum Miss {
    /// The page of this byte needs the fault handler.
    Fault(u64),
    /// This byte is at or above `TASK_SIZE`: nothing can map it.
    Beyond(u64),
}

pub(super) fn va(raw: u64) -> VirtAddr {
    VirtAddr::new(raw).expect("BUG: a user address above 2^56")
}

pub(super) fn page_base(addr: u64) -> u64 {
    addr & !(PAGE - 1)
}

/// One page's translation as the MMU finds it.
#[derive(Clone, Copy, Debug)]
pub(crate) struct LeafTranslation {
    pub(crate) pfn: Pfn,
    pub(crate) access: Access,
    pub(crate) tagged: bool,
    /// Found through a 2 MiB block entry.
    pub(crate) huge: bool,
}

/// The hardware's translation of the page at `base` (below `TASK_SIZE`):
/// the software TLB, else a walk of the page table whose valid leaf (a page
/// or a 2 MiB block) is cached; `None` if nothing valid maps it.
pub(crate) fn translate_leaf(m: &mut Mm, base: u64) -> Option<LeafTranslation> {
    let at = va(base);
    Some(match m.tlb.lookup(at) {
        Some(e) => LeafTranslation {
            pfn: e.pfn,
            access: e.access,
            tagged: e.tagged,
            huge: e.huge,
        },
        // The walk sets the access flag of a leaf that lacks it (ARMv8.1
        // hardware AF update): only a TLB miss can find it clear, because
        // reclaim flushes the TLB entry when it clears the flag
        // (`ptep_clear_flush_young()`), so a TLB hit costs nothing extra.
        None => match m.pt.walk(at) {
            Walk::Pte(Pte::Present(leaf)) if leaf.attrs.access.is_valid() => {
                if !leaf.attrs.young {
                    m.pt.set_young(at, true);
                }
                m.tlb.fill(at, leaf);
                LeafTranslation {
                    pfn: leaf.pfn,
                    access: leaf.attrs.access,
                    tagged: leaf.attrs.tagged,
                    huge: false,
                }
            }
            Walk::Block {
                base: block_base,
                block: Block::Present(leaf),
            } if leaf.attrs.access.is_valid() => {
                if !leaf.attrs.young {
                    m.pt.set_young(block_base, true);
                }
                m.tlb.fill_block(block_base, leaf);
                let index = (base - block_base.as_u64()) / PAGE;
                LeafTranslation {
                    pfn: leaf.pfn + index,
                    access: leaf.attrs.access,
                    tagged: leaf.attrs.tagged,
                    huge: true,
                }
            }
            _ => return None,
        },
    })
}

/// Whether a leaf allowing `access` allows `need`.
#[inline]
pub(crate) fn permits(access: Access, need: Need) -> bool {
    match need {
        Need::Read => matches!(access, Access::ReadOnly | Access::ReadWrite),
        Need::Write => access == Access::ReadWrite,
    }
}

/// [`translate_leaf`] for `need`: `None` also when the leaf does not allow
/// the access (a fault).
fn translate_page(m: &mut Mm, base: u64, need: Need) -> Option<PageMap> {
    let t = translate_leaf(m, base)?;
    permits(t.access, need).then_some(PageMap {
        base,
        pfn: t.pfn,
        tagged: t.tagged,
    })
}

/// The page of a translation ([`Kernel::translate`]: consecutive pages
/// upwards) that holds `at`: found by index, not by a search (a `fill` of
/// megabytes asks once per granule).
fn page_of(pages: &[PageMap], at: u64) -> Option<&PageMap> {
    let first = pages.first()?.base;
    let index = page_base(at).checked_sub(first)? / PAGE;
    pages
        .get(usize::try_from(index).ok()?)
        .filter(|p| p.base == page_base(at))
}

pub(super) fn pa_of(pfn: Pfn, offset: u64) -> PhysAddr {
    PhysAddr::new(pfn.addr(PAGE_SHIFT).as_u64() + offset)
}

fn has_top_byte(ptr: TaggedPtr) -> bool {
    ptr.addr().as_u64() != ptr.raw()
}

impl Kernel {
    /// The hardware's translation of `[start, start + len)` (`len >= 1`) for
    /// `need`, page by page upwards.
    fn translate(&self, mm: MmId, start: u64, len: u64, need: Need) -> Result<Vec<PageMap>, Miss> {
        let last = start.saturating_add(len - 1);
        let mut mms = self.mms.borrow_mut();
        let Some(m) = mms.get_mut(&mm) else {
            return Err(Miss::Beyond(start));
        };
        let mut out = Vec::with_capacity(1);
        let mut at = start;
        loop {
            if at >= TASK_SIZE {
                return Err(Miss::Beyond(at));
            }
            let page = translate_page(m, page_base(at), need).ok_or(Miss::Fault(at))?;
            out.push(page);
            let next = page.base + PAGE;
            if next > last {
                return Ok(out);
            }
            at = next;
        }
    }

    /// Records a livelock of the running command at `addr`: the command ends
    /// `stuck`, and the liveness check (invariant 10) reports it.
    pub(crate) fn livelock(&self, addr: VirtAddr) {
        self.stuck.borrow_mut().insert(self.sched.current_cpu());
        self.livelocks.borrow_mut().push(addr);
    }

    /// Translates `[start, start + len)` for an access made with `ptr`,
    /// taking faults as needed (see the module doc).
    pub(crate) async fn resolve(
        &self,
        pid: Pid,
        ptr: TaggedPtr,
        start: u64,
        len: u64,
        need: Need,
    ) -> Result<Vec<PageMap>, Fault> {
        let at_va = |at: u64| VirtAddr::new(at).unwrap_or(ptr.addr());
        let pages = (page_base(start.saturating_add(len - 1)) - page_base(start)) / PAGE + 1;
        let budget = FAULT_BUDGET_PER_PAGE * pages + FAULT_BUDGET_PER_PAGE;
        for _ in 0..budget {
            let Some(mm) = self.process_mm(pid) else {
                return Err(fault_at(FaultCode::SegvMapErr, ptr, at_va(start)));
            };
            match self.translate(mm, start, len, need) {
                Ok(pages) => return Ok(pages),
                Err(Miss::Beyond(at)) => {
                    return Err(fault_at(FaultCode::SegvMapErr, ptr, at_va(at)));
                }
                Err(Miss::Fault(at)) => {
                    if let Err(e) = self.handle_mm_fault(mm, va(at), need, false).await {
                        if e == super::fault::FaultError::OutOfMemory {
                            self.bump(|c| c.oom += 1);
                        }
                        return Err(fault_at(e.code(), ptr, va(at)));
                    }
                }
            }
        }
        // Every replay found the entry faulting again: Linux would replay it
        // for ever. The command ends `stuck` (the fault it returns is never
        // seen: `process_op` replaces the reply).
        self.livelock(at_va(start));
        Err(fault_at(FaultCode::SegvAccErr, ptr, at_va(start)))
    }

    /// The allocation tag of `granule` through the translation, `None` for
    /// memory not mapped Normal Tagged.
    fn tag_through(&self, pages: &[PageMap], granule: VirtAddr) -> Option<Tag> {
        let g = granule.as_u64();
        let page = page_of(pages, g).expect("BUG: a checked granule outside the translation");
        page.tagged.then(|| {
            self.mem
                .read_tag(pa_of(page.pfn, g - page.base))
                .expect("BUG: a mapped frame is present")
        })
    }

    /// The tag check of a user access (docs/semantics.md §14 step 2).
    fn tag_check(
        &self,
        pid: Pid,
        ptr: TaggedPtr,
        len: u64,
        kind: AccessKind,
        pages: &[PageMap],
    ) -> Result<(), Fault> {
        let Some(settings) = self.procs.borrow().get(&pid).map(|p| p.check_settings()) else {
            return Ok(());
        };
        let outcome = check_access(ptr, len, kind, settings, |g| self.tag_through(pages, g))
            .expect("BUG: a translated access leaves the address space");
        self.check_verdict(pid, outcome)
    }

    /// [`Kernel::tag_check`] of `len >= 1` bytes at `ptr`, all inside the
    /// translated page `page`: the process's settings looked up once and
    /// the page's tags read once, not once per granule (`fill` and `verify`
    /// check a page at a time). The same outcome as a check per granule in
    /// address order: a sync fault stops at the first failing granule, and
    /// an async one sets the same pending flag however many granules fail.
    fn tag_check_in_page(
        &self,
        pid: Pid,
        ptr: TaggedPtr,
        len: u64,
        kind: AccessKind,
        page: PageMap,
    ) -> Result<(), Fault> {
        debug_assert!(
            page_base(ptr.addr().as_u64()) == page.base
                && page_base(ptr.addr().as_u64() + len - 1) == page.base,
            "BUG: a page's check outside the page"
        );
        let Some(settings) = self.procs.borrow().get(&pid).map(|p| p.check_settings()) else {
            return Ok(());
        };
        let mut tag_bytes = [0u8; PAGE_TAG_BYTES];
        if page.tagged {
            self.mem
                .read_page_tag_bytes(page.pfn, &mut tag_bytes)
                .expect("BUG: a mapped frame is present");
        }
        let outcome = check_access(ptr, len, kind, settings, |g| {
            page.tagged
                .then(|| page_tag_in(&tag_bytes, g.as_u64() - page.base))
        })
        .expect("BUG: a translated access leaves the address space");
        self.check_verdict(pid, outcome)
    }

    /// Copies `buf.len()` bytes from `start` through the translation.
    fn read_through(&self, pages: &[PageMap], start: u64, buf: &mut [u8]) {
        let phys = self.mem.phys();
        let mut done = 0usize;
        while done < buf.len() {
            let at = start + done as u64;
            let page = page_of(pages, at).expect("BUG: a byte outside the translation");
            let n = ((page.base + PAGE - at) as usize).min(buf.len() - done);
            phys.contents.read_in_frame(
                page.pfn,
                (at - page.base) as usize,
                &mut buf[done..done + n],
            );
            done += n;
        }
    }

    fn write_through(&self, pages: &[PageMap], start: u64, data: &[u8]) {
        let mut phys = self.mem.phys_mut();
        let mut done = 0usize;
        while done < data.len() {
            let at = start + done as u64;
            let page = page_of(pages, at).expect("BUG: a byte outside the translation");
            let n = ((page.base + PAGE - at) as usize).min(data.len() - done);
            phys.contents
                .write_in_frame(page.pfn, (at - page.base) as usize, &data[done..done + n])
                .expect("BUG: a mapped frame is present");
            done += n;
        }
    }

    pub(crate) async fn load(&self, pid: Pid, ptr: TaggedPtr, size: AccessSize) -> Outcome {
        let len = size.bytes();
        let start = ptr.addr().as_u64();
        let pages = match self.resolve(pid, ptr, start, len, Need::Read).await {
            Ok(p) => p,
            Err(f) => return Outcome::Fault(f),
        };
        if let Err(f) = self.tag_check(pid, ptr, len, AccessKind::Load, &pages) {
            return Outcome::Fault(f);
        }
        let mut buf = [0u8; 16];
        self.read_through(&pages, start, &mut buf[..len as usize]);
        Outcome::Value(u128::from_le_bytes(buf))
    }

    pub(crate) async fn store(
        &self,
        pid: Pid,
        ptr: TaggedPtr,
        size: AccessSize,
        value: u128,
    ) -> Outcome {
        let len = size.bytes();
        let start = ptr.addr().as_u64();
        let pages = match self.resolve(pid, ptr, start, len, Need::Write).await {
            Ok(p) => p,
            Err(f) => return Outcome::Fault(f),
        };
        if let Err(f) = self.tag_check(pid, ptr, len, AccessKind::Store, &pages) {
            return Outcome::Fault(f);
        }
        self.write_through(&pages, start, &value.to_le_bytes()[..len as usize]);
        Outcome::Ok
    }

    /// `fill` and `verify`: byte accesses in address order, a page at a time
    /// (translation) and a granule at a time (tag check), which gives the
    /// byte-by-byte result since a page shares its mapping and a granule its
    /// tag.
    ///
    /// Within a page nothing switches, so the page's bytes move in one copy:
    /// a fill writes the granules that passed their check before it returns
    /// the fault of the first that did not (as granule-by-granule writes
    /// would have left them); a verify reads the page's part once and looks
    /// at each granule after its check. A page not mapped Normal Tagged, or
    /// an access the thread does not check, has no granule that can fail.
    async fn bytewise(&self, pid: Pid, ptr: TaggedPtr, len: u64, byte: u8, write: bool) -> Outcome {
        let start = ptr.addr().as_u64();
        let (need, kind) = if write {
            (Need::Write, AccessKind::Store)
        } else {
            (Need::Read, AccessKind::Load)
        };
        // One page's worth at most, on the heap: an array here would live
        // in the future across the awaits below and make every kernel op's
        // future (boxed by the scheduler) pages larger.
        let size = len.min(PAGE) as usize;
        let mut buf = if write {
            vec![byte; size]
        } else {
            vec![0u8; size]
        };
        let mut done = 0;
        while done < len {
            // User code runs on: another CPU may run between two pages.
            if done > 0 {
                self.sched.preempt_point().await;
            }
            let at = start.saturating_add(done);
            let chunk = (page_base(at).saturating_add(PAGE) - at).min(len - done);
            let pages = match self
                .resolve(
                    pid,
                    ptr.with_addr(VirtAddr::new(at).unwrap_or(ptr.addr())),
                    at,
                    chunk,
                    need,
                )
                .await
            {
                Ok(p) => p,
                Err(f) => return Outcome::Fault(f),
            };
            let checked = self.granules_checked(pid, kind, &pages);
            let bytes = chunk as usize;
            if !write {
                self.read_through(&pages, at, &mut buf[..bytes]);
            }
            if checked {
                // Granule by granule, a verify stops at the granule of its
                // first differing byte, after that granule's check: so the
                // granules checked are those up to it (all for a fill).
                let differs = (!write)
                    .then(|| buf[..bytes].iter().position(|&b| b != byte))
                    .flatten();
                let span = differs.map_or(chunk, |i| {
                    let last = at + i as u64;
                    (last - last % GRANULE_SIZE + GRANULE_SIZE - at).min(chunk)
                });
                let page = pages[0];
                if let Err(f) = self.tag_check_in_page(pid, ptr.with_addr(va(at)), span, kind, page)
                {
                    // A sync fault names its granule's base, or the first
                    // byte for the first granule: the granules before it
                    // took their bytes.
                    let off = f.addr.map_or(0, |a| a.addr().as_u64() - at);
                    if write && off > 0 {
                        self.write_through(&pages, at, &buf[..off as usize]);
                    }
                    return Outcome::Fault(f);
                }
                if let Some(i) = differs {
                    return Outcome::Mismatch(done + i as u64);
                }
            }
            if write {
                self.write_through(&pages, at, &buf[..bytes]);
            } else if let Some(i) = buf[..bytes].iter().position(|&b| b != byte) {
                return Outcome::Mismatch(done + i as u64);
            }
            done += chunk;
        }
        Outcome::Ok
    }

    /// Whether a granule of an access of `kind` through `pages` can fail
    /// its tag check: some page is mapped Normal Tagged and the thread
    /// checks the access ([`Kernel::tag_check`] passes every granule
    /// otherwise, without reading a tag).
    fn granules_checked(&self, pid: Pid, kind: AccessKind, pages: &[PageMap]) -> bool {
        pages.iter().any(|p| p.tagged)
            && self
                .procs
                .borrow()
                .get(&pid)
                .is_some_and(|p| p.check_settings().timing(kind) != mte::CheckTiming::Unchecked)
    }

    pub(crate) async fn fill(&self, pid: Pid, ptr: TaggedPtr, len: u64, byte: u8) -> Outcome {
        self.bytewise(pid, ptr, len, byte, true).await
    }

    pub(crate) async fn verify(&self, pid: Pid, ptr: TaggedPtr, len: u64, byte: u8) -> Outcome {
        self.bytewise(pid, ptr, len, byte, false).await
    }

    /// STG, STZG, ST2G, STZ2G, STGP: a write (copy-on-write first, also in
    /// untagged memory, where the tag is then discarded); not tag checked.
    pub(crate) async fn store_tag(&self, pid: Pid, op: TagStoreOp, ptr: TaggedPtr) -> Outcome {
        let plan = match plan_tag_store(op, ptr) {
            Ok(plan) => plan,
            Err(TagStoreError::Alignment(_)) => {
                return Outcome::Fault(fault_at(FaultCode::BusAdrAln, ptr, ptr.addr()));
            }
            Err(TagStoreError::OutOfRange { .. }) => {
                return Outcome::Fault(fault_at(FaultCode::SegvMapErr, ptr, ptr.addr()));
            }
        };
        let first = plan.first_granule_addr.as_u64();
        let bytes = plan.granules.get() * GRANULE_SIZE;
        let zero = plan.data_bytes() > 0;
        // `mistake=tag-write-in-place`: a tag-only write to a writable
        // mapping is taken as a read, so a shared or zero page is not copied
        // first and its tags change under every mapping of it.
        let need = if !zero
            && self
                .platform
                .settings()
                .mistakes
                .contains(Mistake::TagWriteInPlace)
            && self.range_writable(pid, first, bytes)
        {
            Need::Read
        } else {
            Need::Write
        };
        let pages = match self.resolve(pid, ptr, first, bytes, need).await {
            Ok(p) => p,
            Err(f) => return Outcome::Fault(f),
        };
        for granule in plan.granule_addrs() {
            let g = granule.as_u64();
            let page = *pages
                .iter()
                .find(|p| p.base == page_base(g))
                .expect("BUG: a granule outside the translation");
            if let Some(tag) = plan.tag_for(page.tagged) {
                self.mem
                    .write_tag(pa_of(page.pfn, g - page.base), tag)
                    .expect("BUG: a mapped frame is present");
            }
            if zero {
                self.write_through(&pages, g, &[0u8; GRANULE_SIZE as usize]);
            }
        }
        Outcome::Ok
    }

    /// Whether every byte of `[start, start + len)` lies in a mapping of
    /// `pid` that allows writes.
    fn range_writable(&self, pid: Pid, start: u64, len: u64) -> bool {
        let Some(mm) = self.process_mm(pid) else {
            return false;
        };
        let mms = self.mms.borrow();
        let Some(m) = mms.get(&mm) else {
            return false;
        };
        [start, start + len - 1]
            .into_iter()
            .all(|at| m.vmas.find(va(at)).is_some_and(|v| allows(v, Need::Write)))
    }

    /// `settag`: STG granule after granule, stopping at the first fault.
    pub(crate) async fn set_tag(&self, pid: Pid, ptr: TaggedPtr, len: u64) -> Outcome {
        for i in 0..len.div_ceil(GRANULE_SIZE) {
            let Ok(granule) = ptr.checked_add(i * GRANULE_SIZE) else {
                return Outcome::Fault(fault_at(FaultCode::SegvMapErr, ptr, ptr.addr()));
            };
            let outcome = self.store_tag(pid, TagStoreOp::Stg, granule).await;
            if outcome != Outcome::Ok {
                return outcome;
            }
        }
        Outcome::Ok
    }

    /// LDG: the granule's allocation tag, 0 in untagged memory.
    pub(crate) async fn ldg(&self, pid: Pid, ptr: TaggedPtr) -> Outcome {
        let granule = plan_tag_load(ptr).granule_addr;
        let g = granule.as_u64();
        let pages = match self
            .resolve(pid, ptr.with_addr(granule), g, 1, Need::Read)
            .await
        {
            Ok(p) => p,
            Err(f) => return Outcome::Fault(f),
        };
        Outcome::Tag(self.tag_through(&pages, granule).unwrap_or(Tag::ZERO))
    }

    /// The kernel's copy of user memory (`copy_from_user` for `write-fd`,
    /// `copy_to_user` of `byte` for `read-fd`), docs/semantics.md §12.
    async fn kernel_copy(
        &self,
        pid: Pid,
        ptr: TaggedPtr,
        len: u64,
        byte: Option<u8>,
    ) -> Result<u64, Errno> {
        let (mm, tagged_addr, settings) = {
            let procs = self.procs.borrow();
            let p = procs.get(&pid).ok_or(Errno::Srch)?;
            (p.mm, p.ctrl.tagged_addr, p.check_settings())
        };
        if !tagged_addr && has_top_byte(ptr) {
            return Err(Errno::Fault);
        }
        let a = ptr.addr().as_u64();
        if !is_user_range(a, len) {
            return Err(Errno::Fault);
        }
        if len == 0 {
            return Ok(0);
        }
        let count = len.min(MAX_RW_COUNT);
        let (need, kind) = match byte {
            None => (Need::Read, AccessKind::Load),
            Some(_) => (Need::Write, AccessKind::Store),
        };
        let mut done = 0;
        while done < count {
            // Linux copies in chunks and may reschedule between them.
            if done > 0 {
                self.sched.preempt_point().await;
            }
            let at = a + done;
            let chunk = (page_base(at) + PAGE - at).min(count - done);
            let allowed = self
                .mms
                .borrow()
                .get(&mm)
                .and_then(|m| m.vmas.find(va(at)).map(|v| allows(v, need)))
                .unwrap_or(false);
            if !allowed {
                break;
            }
            let chunk_ptr = ptr.with_addr(va(at));
            let Ok(pages) = self.resolve(pid, chunk_ptr, at, chunk, need).await else {
                break;
            };
            let checked = check_uaccess(chunk_ptr, chunk, kind, settings, |g| {
                self.tag_through(&pages, g)
            })
            .expect("BUG: a user range leaves the address space");
            let n = match checked {
                UaccessOutcome::Complete => chunk,
                UaccessOutcome::Stopped { done } => done,
            };
            if let Some(b) = byte {
                self.write_through(&pages, at, &vec![b; n as usize]);
            }
            done += n;
            if n < chunk {
                break;
            }
        }
        if done == 0 {
            return Err(Errno::Fault);
        }
        Ok(done)
    }

    pub(crate) async fn write_fd(&self, pid: Pid, ptr: TaggedPtr, len: u64) -> Result<u64, Errno> {
        self.kernel_copy(pid, ptr, len, None).await
    }

    pub(crate) async fn read_fd(
        &self,
        pid: Pid,
        ptr: TaggedPtr,
        len: u64,
        byte: u8,
    ) -> Result<u64, Errno> {
        self.kernel_copy(pid, ptr, len, Some(byte)).await
    }
}
