//! User-mode instructions: loads, stores, `fill`, `verify`, IRG, ADDG, the
//! STG family, `settag` and LDG.
//!
//! Every memory access goes through the same three steps, in this order:
//!
//! 1. **Alignment** (tag stores only): a tag-setting address that is not
//!    16-byte aligned is `BUS_ADRALN` at the address given (Arm ARM: the
//!    alignment check precedes translation).
//! 2. **Translation and permission**, page by page in address order: no
//!    mapping is `SEGV_MAPERR`, a mapping that forbids the access is
//!    `SEGV_ACCERR` ([`crate::space::Vma::allows`]). The reported address
//!    is the lowest byte of the access in the failing page (the pointer
//!    itself for the first page). Page faults take priority over tag checks
//!    (QEMU `allocation_tag_mem_probe()`).
//! 3. **Tag check**, by [`mte::check_access`] with the process's mode,
//!    store-only and TCO: a synchronous mismatch faults `SEGV_MTESERR` and
//!    the access has no effect; an asynchronous one sets the pending fault
//!    and the access completes.
//!
//! `fill` and `verify` are byte accesses in address order: each byte goes
//! through steps 2 and 3 on its own, so the first failing byte stops them
//! and the bytes before it took effect. The model takes them a page (step 2)
//! and a granule (step 3) at a time (`fill` checks a page's granules in
//! order with one call before writing them), which gives the same result
//! because every byte of a page shares its mapping and every byte of a
//! granule its tag.
//!
//! Tag stores (`stg`, `stzg`, `st2g`, `stz2g`) need write permission, are
//! not tag checked, write the pointer's tag only where the mapping is
//! tagged, and zero data (`stzg`, `stz2g`) either way. LDG needs read
//! permission and reads 0 from untagged memory.

use mte::{
    AccessKind, CheckOutcome, GRANULE_SIZE, GranuleOffset, Tag, TagMask, TagOffset, TagStoreError,
    TagStoreOp, TaggedPtr, VirtAddr, check_access, plan_tag_load, plan_tag_store,
};
use rand_core::Rng;
use uapi::{AccessSize, Fault, FaultCode, Outcome};

use crate::memory::byte_of;
use crate::process::{Process, fault_at};
use crate::space::Need;

impl Process {
    /// Step 2 for the bytes `[ptr, ptr + len)`, `len >= 1`.
    fn translate(&self, ptr: TaggedPtr, len: u64, need: Need) -> Result<(), Fault> {
        let layout = self.layout();
        let start = ptr.addr().as_u64();
        let last = start.saturating_add(len - 1);
        let mut at = start;
        loop {
            self.translate_page(ptr, at, need)?;
            let next_page = layout.page_base(layout.virt(at)).as_u64() + layout.page_size();
            if next_page > last {
                return Ok(());
            }
            at = next_page;
        }
    }

    /// Step 2 for the page holding `at` (a byte of the access made with
    /// `ptr`).
    fn translate_page(&self, ptr: TaggedPtr, at: u64, need: Need) -> Result<(), Fault> {
        // Every address at or above TASK_SIZE (and so every address past
        // bits 55:0) is unmapped; the first such byte faults before any
        // arithmetic could leave the address space.
        let Some(addr) = VirtAddr::new(at) else {
            return Err(fault_at(FaultCode::SegvMapErr, ptr, ptr.addr()));
        };
        if at >= self.layout().task_size {
            return Err(fault_at(FaultCode::SegvMapErr, ptr, addr));
        }
        match self.space.vma_at(addr) {
            None => Err(fault_at(FaultCode::SegvMapErr, ptr, addr)),
            Some(vma) if !vma.allows(need) => Err(fault_at(FaultCode::SegvAccErr, ptr, addr)),
            Some(_) => Ok(()),
        }
    }

    /// [`Self::tag_check`] for `len >= 1` bytes at `ptr` inside one mapped
    /// page: the mapping and the page are looked up once for all its
    /// granules.
    fn tag_check_in_page(
        &mut self,
        ptr: TaggedPtr,
        len: u64,
        kind: AccessKind,
    ) -> Result<(), Fault> {
        let settings = self.check_settings();
        let space = &self.space;
        let addr = ptr.addr();
        let tagged = space
            .vma_at(addr)
            .unwrap_or_else(|| panic!("BUG: tag of unmapped {addr}"))
            .tagged;
        let layout = space.layout();
        let outcome = space
            .read_page(addr, |page| {
                check_access(ptr, len, kind, settings, |granule| {
                    tagged.then(|| crate::memory::tag_of(page, layout.offset_in_page(granule)))
                })
            })
            .expect("BUG: a translated access leaves the address space");
        self.verdict(outcome)
    }

    /// Step 3 for `len` bytes at `ptr`, all of them mapped.
    fn tag_check(&mut self, ptr: TaggedPtr, len: u64, kind: AccessKind) -> Result<(), Fault> {
        let settings = self.check_settings();
        let space = &self.space;
        let outcome = check_access(ptr, len, kind, settings, |granule| {
            space.memory_tag(granule)
        })
        .expect("BUG: a translated access leaves the address space");
        self.verdict(outcome)
    }

    /// What a check's outcome does: a sync fault, or the pending async
    /// fault recorded.
    fn verdict(&mut self, outcome: CheckOutcome) -> Result<(), Fault> {
        match outcome {
            CheckOutcome::Pass => Ok(()),
            CheckOutcome::SyncFault { addr } => Err(Fault {
                code: FaultCode::SegvMteSerr,
                addr: Some(addr),
            }),
            CheckOutcome::AsyncFault => {
                self.async_pending = true;
                Ok(())
            }
        }
    }

    fn read_byte(&self, addr: VirtAddr) -> u8 {
        let offset = self.layout().offset_in_page(addr);
        self.space.read_page(addr, |page| byte_of(page, offset))
    }

    fn write_bytes(&mut self, addr: VirtAddr, bytes: &[u8]) {
        let offset = self.layout().offset_in_page(addr);
        self.space.write_page(addr, |page| {
            page.bytes_mut()[offset..offset + bytes.len()].copy_from_slice(bytes);
        });
    }

    /// `len` bytes of `byte` at `addr`, all in one page (a fill's page
    /// without a buffer of its bytes).
    fn fill_bytes(&mut self, addr: VirtAddr, len: usize, byte: u8) {
        let offset = self.layout().offset_in_page(addr);
        self.space.write_page(addr, |page| {
            page.fill(offset..offset + len, byte);
        });
    }

    fn byte_addr(&self, ptr: TaggedPtr, offset: u64) -> VirtAddr {
        ptr.addr()
            .checked_add(offset)
            .expect("BUG: a translated byte leaves the address space")
    }

    /// `load`: a little-endian load of 1 to 16 bytes.
    pub fn load(&mut self, ptr: TaggedPtr, size: AccessSize) -> Outcome {
        let len = size.bytes();
        if let Err(fault) = self
            .translate(ptr, len, Need::Read)
            .and_then(|()| self.tag_check(ptr, len, AccessKind::Load))
        {
            return Outcome::Fault(fault);
        }
        let value = (0..len).rev().fold(0u128, |value, i| {
            value << 8 | u128::from(self.read_byte(self.byte_addr(ptr, i)))
        });
        Outcome::Value(value)
    }

    /// `store`: a little-endian store of 1 to 16 bytes (only the low `size`
    /// bytes of `value` are stored).
    pub fn store(&mut self, ptr: TaggedPtr, size: AccessSize, value: u128) -> Outcome {
        let len = size.bytes();
        if let Err(fault) = self
            .translate(ptr, len, Need::Write)
            .and_then(|()| self.tag_check(ptr, len, AccessKind::Store))
        {
            return Outcome::Fault(fault);
        }
        let bytes = value.to_le_bytes();
        for i in 0..len {
            let addr = self.byte_addr(ptr, i);
            self.write_bytes(addr, &bytes[i as usize..=i as usize]);
        }
        Outcome::Ok
    }

    /// The chunks of `[ptr, ptr + len)` that lie in one granule, lowest
    /// first, as (offset from `ptr`, length), calling `visit` for each until
    /// it returns `Some`. Each new page is translated for `need` first.
    fn walk_granules<R>(
        &mut self,
        ptr: TaggedPtr,
        len: u64,
        need: Need,
        mut visit: impl FnMut(&mut Process, u64, u64) -> Option<R>,
    ) -> Result<Option<R>, Fault> {
        let start = ptr.addr().as_u64();
        let page_size = self.layout().page_size();
        let mut done = 0;
        while done < len {
            let at = start.saturating_add(done);
            if done == 0 || at.is_multiple_of(page_size) {
                self.translate_page(ptr, at, need)?;
            }
            let to_granule_end = GRANULE_SIZE - at % GRANULE_SIZE;
            let n = to_granule_end.min(len - done);
            if let Some(stop) = visit(self, done, n) {
                return Ok(Some(stop));
            }
            done += n;
        }
        Ok(None)
    }

    /// `fill`: `len` byte stores of `byte` in address order, stopping at
    /// the first synchronous fault (the bytes before it are written). A
    /// page at a time: translated, its granules checked in order by one
    /// [`check_access`] (the page's mapping and contents looked up once,
    /// not once per granule), then the bytes before the first failing
    /// granule (all of them when none fails) written. The same bytes and
    /// the same fault as a granule at a time: writing a page changes no
    /// tag.
    pub fn fill(&mut self, ptr: TaggedPtr, len: u64, byte: u8) -> Outcome {
        let page_size = self.layout().page_size();
        let start = ptr.addr().as_u64();
        let mut done = 0;
        while done < len {
            let at = start.saturating_add(done);
            if let Err(fault) = self.translate_page(ptr, at, Need::Write) {
                return Outcome::Fault(fault);
            }
            let n = (page_size - at % page_size).min(len - done);
            let addr = self.byte_addr(ptr, done);
            let checked = self.tag_check_in_page(ptr.with_addr(addr), n, AccessKind::Store);
            // A sync fault names the first failing granule's first byte.
            let written = match &checked {
                Ok(()) => n,
                Err(fault) => fault
                    .addr
                    .map_or(0, |f| f.addr().as_u64().saturating_sub(addr.as_u64())),
            };
            if written > 0 {
                self.fill_bytes(addr, written as usize, byte);
            }
            if let Err(fault) = checked {
                return Outcome::Fault(fault);
            }
            done += n;
        }
        Outcome::Ok
    }

    /// `verify`: `len` byte loads in address order compared with `byte`,
    /// stopping at the first byte that differs or faults synchronously.
    pub fn verify(&mut self, ptr: TaggedPtr, len: u64, byte: u8) -> Outcome {
        let walked = self.walk_granules(ptr, len, Need::Read, |p, offset, n| {
            let at = p.byte_addr(ptr, offset);
            if let Err(fault) = p.tag_check(ptr.with_addr(at), n, AccessKind::Load) {
                return Some(Outcome::Fault(fault));
            }
            (0..n)
                .find(|&i| p.read_byte(p.byte_addr(ptr, offset + i)) != byte)
                .map(|i| Outcome::Mismatch(offset + i))
        });
        match walked {
            Ok(None) => Outcome::Ok,
            Ok(Some(outcome)) => outcome,
            Err(fault) => Outcome::Fault(fault),
        }
    }

    /// The exclude mask IRG and ADDG use: GCR_EL1.Exclude, which Linux sets
    /// to the complement of the include mask (`mte_update_gcr_excl()`).
    fn gcr_exclude(&self) -> TagMask {
        self.ctrl.include.complement()
    }

    /// IRG: `ptr` with a random tag allowed by the include mask and
    /// `exclude`. Draws once from `rng`, whatever the masks.
    pub fn irg<R: Rng + ?Sized>(&self, ptr: TaggedPtr, exclude: TagMask, rng: &mut R) -> TaggedPtr {
        mte::irg(ptr, self.gcr_exclude(), exclude, rng)
    }

    /// ADDG: `ptr + offset`, tag advanced `tag_offset` allowed steps. An
    /// address sum past bits 55:0 carries into the top byte as the
    /// hardware's 64-bit addition does (the tag field is then replaced).
    pub fn addg(&self, ptr: TaggedPtr, offset: GranuleOffset, tag_offset: TagOffset) -> TaggedPtr {
        let exclude = self.gcr_exclude();
        mte::addg(ptr, offset, tag_offset, exclude).unwrap_or_else(|_| {
            let tag = mte::choose_non_excluded_tag(ptr.tag(), tag_offset, exclude);
            TaggedPtr::from_raw(ptr.raw().wrapping_add(offset.bytes())).with_tag(tag)
        })
    }

    /// STG, STZG, ST2G, STZ2G and STGP at `ptr` with `ptr`'s tag. STGP's
    /// data registers are not part of the command: the model stores zeros
    /// (`stgp xzr, xzr, [ptr]`).
    pub fn store_tag(&mut self, op: TagStoreOp, ptr: TaggedPtr) -> Outcome {
        let plan = match plan_tag_store(op, ptr) {
            Ok(plan) => plan,
            Err(TagStoreError::Alignment(_)) => {
                return Outcome::Fault(fault_at(FaultCode::BusAdrAln, ptr, ptr.addr()));
            }
            // Only the last granule of the 56-bit space, far above TASK_SIZE.
            Err(TagStoreError::OutOfRange { .. }) => {
                return Outcome::Fault(fault_at(FaultCode::SegvMapErr, ptr, ptr.addr()));
            }
        };
        for granule in plan.granule_addrs() {
            if let Err(fault) = self.translate_page(ptr, granule.as_u64(), Need::Write) {
                return Outcome::Fault(fault);
            }
        }
        let zero = plan.data_bytes() > 0;
        for granule in plan.granule_addrs() {
            let tagged = self
                .space
                .vma_at(granule)
                .expect("BUG: a translated granule has no mapping")
                .tagged;
            let tag = plan.tag_for(tagged);
            let offset = self.layout().offset_in_page(granule);
            self.space.write_page(granule, |page| {
                if let Some(tag) = tag {
                    page.set_tag_at(offset, tag);
                }
                if zero {
                    page.fill(offset..offset + GRANULE_SIZE as usize, 0);
                }
            });
        }
        Outcome::Ok
    }

    /// `settag`: STG at `ptr`, `ptr + 16`, ... for every granule that starts
    /// within `len` bytes (`len` is a multiple of 16 in the scenario
    /// language; a remainder counts as one more granule), stopping at the
    /// first fault.
    pub fn set_tag(&mut self, ptr: TaggedPtr, len: u64) -> Outcome {
        let granules = len.div_ceil(GRANULE_SIZE);
        for i in 0..granules {
            // A walk that reaches TASK_SIZE faults there, long before bits
            // 55:0 could overflow.
            let granule = ptr
                .checked_add(i * GRANULE_SIZE)
                .expect("BUG: settag ran past the address space without faulting");
            let outcome = self.store_tag(TagStoreOp::Stg, granule);
            if outcome != Outcome::Ok {
                return outcome;
            }
        }
        Outcome::Ok
    }

    /// LDG: the allocation tag of the granule holding `ptr` (0 where the
    /// mapping is not tagged).
    pub fn ldg(&self, ptr: TaggedPtr) -> Outcome {
        let granule = plan_tag_load(ptr).granule_addr;
        if let Err(fault) = self.translate_page(ptr, granule.as_u64(), Need::Read) {
            return Outcome::Fault(fault);
        }
        Outcome::Tag(self.space.memory_tag(granule).unwrap_or(Tag::ZERO))
    }
}
