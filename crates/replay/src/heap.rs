//! The tagging allocator model: where the recorded program's heap lives on
//! the simulated machine, and which allocation each recorded address
//! belongs to.
//!
//! **Placement, in the style of Android's Scudo with MTE.** The recorded
//! program used its own allocator (glibc's); the replay places every
//! allocation anew in a heap of its own above the recorded program's
//! address space (at [`HEAP_BASE`], past any x86-64 user address, inside the
//! model's 48-bit space), mapped `prot=r,w,mte`:
//!
//! - *primary*: sizes below the large threshold are rounded to a size class
//!   (multiples of 16 up to 256 bytes, then four classes per power of two);
//!   each class has its own region, grown by [`REGION_STEP`] mappings, carved
//!   into blocks of the class size; freed blocks are reused last in, first
//!   out;
//! - *secondary*: large allocations get a mapping each, never reused, unmapped
//!   when freed;
//! - *tags*: an allocation's block gets a tag from IRG excluding 0 and the
//!   current tags of the blocks on either side (read with LDG, as Scudo
//!   does); a freed block is retagged with a tag other than its old one, so a
//!   stale pointer faults.
//!
//! **Attribution.** An access at recorded address `A` is made through the
//! pointer of the allocation whose recorded range holds `A`, live or freed
//! (then it is a use after free), translated to that allocation's model
//! address and carrying its tag. If no range holds `A`, the nearest
//! allocation below it claims `A` when `A` is within one granule past its
//! granule-rounded end (an overflow); otherwise `A` is not heap memory: tag 0
//! at the same address. A freed allocation is remembered until the recorded
//! allocator reuses its addresses; after that, a stale access cannot be told
//! from one through the new allocation's pointer (the trace has addresses,
//! not pointers), and it is replayed as the latter.

use std::collections::BTreeMap;

use mte::{Tag, TagMask, TaggedPtr};
use uapi::{Backing, Prot, Sharing};

use crate::ReplayError;
use crate::process::Process;

/// Where the model heap starts: 1 << 47, above every x86-64 user address.
pub const HEAP_BASE: u64 = 1 << 47;
/// Virtual space of one size class's region.
pub const REGION_SPAN: u64 = 1 << 38;
/// How much of a region is mapped at a time.
pub const REGION_STEP: u64 = 256 << 10;
/// Where large allocations are mapped, after the regions.
pub const SECONDARY_BASE: u64 = HEAP_BASE + (1 << 46);
/// The default smallest large allocation.
pub const DEFAULT_LARGE: u64 = 64 << 10;
const GRANULE: u64 = 16;
const PAGE: u64 = 4096;

pub const HEAP_PROT: Prot = Prot {
    read: true,
    write: true,
    exec: false,
    mte: true,
};

/// One allocation of the recorded program, as reports describe it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AllocInfo {
    /// 1 for the program's first allocation, and so on.
    pub id: u64,
    /// The call that made it (`malloc`, `calloc`, ...).
    pub call: &'static str,
    /// The address the recorded program got.
    pub recorded: u64,
    pub size: u64,
    /// Its address on the simulated machine (untagged).
    pub model: u64,
    /// The tag of its pointer.
    pub tag: Tag,
    /// The number of data accesses before it was made, and freed.
    pub allocated_at: u64,
    pub freed_at: Option<u64>,
}

/// Where the model put an allocation.
#[derive(Clone, Debug)]
struct Placement {
    info: AllocInfo,
    /// The block (or mapping) holding it.
    block: u64,
    block_size: u64,
    /// The size class, or `None` for a secondary mapping.
    class: Option<usize>,
}

impl Placement {
    /// The recorded addresses this allocation claims: its granule-rounded
    /// size plus one granule of overflow.
    fn window_end(&self) -> u64 {
        let size = self.info.size.max(1).div_ceil(GRANULE) * GRANULE;
        self.info.recorded.saturating_add(size + GRANULE)
    }
}

/// What the access at a recorded address goes through.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Target {
    /// The pointer, tag included.
    pub ptr: TaggedPtr,
    /// The id of the allocation the pointer came from (0 outside the heap).
    pub alloc: u64,
    /// The recorded end of that allocation's last granule (0 outside the
    /// heap).
    pub end: u64,
}

#[derive(Clone, Copy, Debug, Default)]
struct Region {
    /// Next unused block.
    bump: u64,
    /// End of what is mapped.
    mapped_end: u64,
}

/// Live and remembered allocations, and the model heap's state.
pub struct Heap {
    large: u64,
    /// By recorded address: live allocations and freed ones not yet
    /// overwritten by the recorded allocator.
    by_recorded: BTreeMap<u64, Placement>,
    /// By model block: the current, or last, occupant of every block in use
    /// so far (for "the allocation it hit").
    blocks: BTreeMap<u64, (u64, AllocInfo)>,
    regions: Vec<Region>,
    free_lists: Vec<Vec<u64>>,
    secondary_bump: u64,
    next_id: u64,
    live: u64,
    live_bytes: u64,
    /// The last attribution, valid until the next event.
    cache: Option<(u64, u64, Target)>,
    /// Pages known to hold no allocation (direct-mapped by page number).
    plain_pages: Box<[u64; PLAIN_SLOTS]>,
}

const PLAIN_SLOTS: usize = 1024;
const NO_PAGE: u64 = u64::MAX;

/// The size classes: 16..=256 by 16, then four per power of two.
fn class_of(size: u64) -> (usize, u64) {
    let size = size.max(1);
    if size <= 256 {
        let class = size.div_ceil(GRANULE);
        return ((class - 1) as usize, class * GRANULE);
    }
    // 256 < size: powers of two from 512, each split in four steps.
    let mut class = 16usize;
    let mut low = 256u64;
    loop {
        let step = low / 4;
        for i in 1..=4 {
            if size <= low + step * i {
                return (class + (i as usize - 1), low + step * i);
            }
        }
        class += 4;
        low *= 2;
    }
}

impl Heap {
    pub fn new(large: u64) -> Heap {
        Heap {
            large: large.max(GRANULE),
            by_recorded: BTreeMap::new(),
            blocks: BTreeMap::new(),
            regions: Vec::new(),
            free_lists: Vec::new(),
            secondary_bump: SECONDARY_BASE,
            next_id: 1,
            live: 0,
            live_bytes: 0,
            cache: None,
            plain_pages: Box::new([NO_PAGE; PLAIN_SLOTS]),
        }
    }

    pub fn live(&self) -> u64 {
        self.live
    }

    pub fn live_bytes(&self) -> u64 {
        self.live_bytes
    }

    pub fn allocations(&self) -> u64 {
        self.next_id - 1
    }

    /// The pointer an access at recorded address `addr` is made through.
    #[inline]
    pub fn target(&mut self, addr: u64) -> Target {
        if let Some((start, end, target)) = self.cache
            && (start..end).contains(&addr)
        {
            return Target {
                ptr: TaggedPtr::from_raw(target.ptr.raw().wrapping_add(addr - start)),
                ..target
            };
        }
        let page = addr / PAGE;
        let slot = (page as usize) % PLAIN_SLOTS;
        if self.plain_pages[slot] == page {
            return plain(addr);
        }
        self.target_slow(addr, page, slot)
    }

    #[cold]
    fn target_slow(&mut self, addr: u64, page: u64, slot: usize) -> Target {
        if let Some((_, p)) = self.by_recorded.range(..=addr).next_back()
            && addr < p.window_end()
        {
            let target = Target {
                ptr: TaggedPtr::from_raw(p.info.model).with_tag(p.info.tag),
                alloc: p.info.id,
                end: p.info.recorded + p.info.size.max(1).div_ceil(GRANULE) * GRANULE,
            };
            // The overflow granule may reach into the next allocation,
            // which claims its own addresses.
            let next = self
                .by_recorded
                .range(p.info.recorded + 1..)
                .next()
                .map_or(u64::MAX, |(&base, _)| base);
            self.cache = Some((p.info.recorded, p.window_end().min(next), target));
            return Target {
                ptr: TaggedPtr::from_raw(target.ptr.raw() + (addr - p.info.recorded)),
                ..target
            };
        }
        // No allocation holds `addr`; the whole page is plain if the last
        // allocation starting before its end stops before it (with a
        // granule of margin for windows that overlap a neighbour's).
        let page_start = page * PAGE;
        let page_end = page_start.saturating_add(PAGE);
        let clear = self
            .by_recorded
            .range(..page_end)
            .next_back()
            .is_none_or(|(_, p)| p.window_end().saturating_add(2 * GRANULE) <= page_start);
        if clear {
            self.plain_pages[slot] = page;
        }
        plain(addr)
    }

    /// Forgets cached attributions that a change of `[start, end)` could
    /// make wrong.
    fn invalidate(&mut self, start: u64, end: u64) {
        self.cache = None;
        let (first, last) = (start / PAGE, end.saturating_sub(1) / PAGE + 1);
        if last - first >= PLAIN_SLOTS as u64 {
            self.plain_pages.fill(NO_PAGE);
            return;
        }
        for page in first..=last {
            let slot = (page as usize) % PLAIN_SLOTS;
            if self.plain_pages[slot] == page {
                self.plain_pages[slot] = NO_PAGE;
            }
        }
    }

    /// The recorded program got `recorded` from `call` for `size` bytes
    /// (aligned to `align`): place and tag it on the machine.
    pub fn allocate(
        &mut self,
        process: &mut Process,
        call: &'static str,
        recorded: u64,
        size: u64,
        align: u64,
        now: u64,
    ) -> Result<(), ReplayError> {
        if recorded == 0 {
            return Ok(()); // the call failed in the recorded run
        }
        // The recorded allocator reused these addresses: whatever was
        // remembered there is gone.
        let end = recorded.saturating_add(size.max(1));
        let stale: Vec<u64> = self
            .by_recorded
            .range(..end)
            .rev()
            .take_while(|(_, p)| p.info.recorded + p.info.size.max(1) > recorded)
            .map(|(&k, _)| k)
            .collect();
        for key in stale {
            if let Some(p) = self.by_recorded.remove(&key)
                && p.info.freed_at.is_none()
            {
                // A live allocation overlapped by a new one: the recorded
                // program freed it in a way the shim did not see.
                self.release(process, p, now)?;
            }
        }
        let align = align.max(GRANULE).next_power_of_two();
        let padded =
            size.max(1).div_ceil(GRANULE) * GRANULE + if align > GRANULE { align } else { 0 };
        let (block, block_size, class) = if padded >= self.large {
            let len = padded.div_ceil(PAGE) * PAGE;
            let block = self.secondary_bump;
            // A page of gap between mappings keeps them from merging.
            self.secondary_bump += len + PAGE;
            let prot = self.heap_prot(process);
            process.map_fixed(block, len, prot, Sharing::Private, Backing::Anon)?;
            (block, len, None)
        } else {
            let (class, block_size) = class_of(padded);
            let block = self.primary_block(process, class, block_size)?;
            (block, block_size, Some(class))
        };
        let model = block.next_multiple_of(align);
        let tag = self.new_tag(process, block, block_size, class.is_some(), None)?;
        let info = AllocInfo {
            id: self.next_id,
            call,
            recorded,
            size,
            model,
            tag,
            allocated_at: now,
            freed_at: None,
        };
        self.next_id += 1;
        self.live += 1;
        self.live_bytes += size;
        self.blocks.insert(block, (block_size, info.clone()));
        let placement = Placement {
            info,
            block,
            block_size,
            class,
        };
        self.invalidate(recorded, placement.window_end());
        self.by_recorded.insert(recorded, placement);
        Ok(())
    }

    /// The recorded program freed `recorded`. Freeing an address that is
    /// not a live allocation (a double free, or memory from before the shim
    /// loaded) changes nothing.
    pub fn free(
        &mut self,
        process: &mut Process,
        recorded: u64,
        now: u64,
    ) -> Result<(), ReplayError> {
        let Some(p) = self.by_recorded.remove(&recorded) else {
            return Ok(());
        };
        if p.info.freed_at.is_some() {
            self.by_recorded.insert(recorded, p);
            return Ok(());
        }
        let window_end = p.window_end();
        let info = self.release(process, p, now)?;
        self.invalidate(recorded, window_end);
        // Remembered, so that a stale access is a use after free.
        let placement = Placement {
            block: info.0,
            block_size: info.1,
            class: info.2,
            info: info.3,
        };
        self.by_recorded.insert(recorded, placement);
        Ok(())
    }

    /// Frees a live placement on the machine: retags (primary) or unmaps
    /// (secondary) its block. Returns the block, its size, class and the
    /// allocation as freed.
    fn release(
        &mut self,
        process: &mut Process,
        mut p: Placement,
        now: u64,
    ) -> Result<(u64, u64, Option<usize>, AllocInfo), ReplayError> {
        p.info.freed_at = Some(now);
        self.live -= 1;
        self.live_bytes -= p.info.size;
        match p.class {
            Some(class) => {
                self.new_tag(process, p.block, p.block_size, true, Some(p.info.tag))?;
                self.free_lists[class].push(p.block);
                self.blocks.insert(p.block, (p.block_size, p.info.clone()));
            }
            None => {
                process.unmap(p.block, p.block_size)?;
                self.blocks.remove(&p.block);
            }
        }
        Ok((p.block, p.block_size, p.class, p.info))
    }

    fn heap_prot(&self, process: &Process) -> Prot {
        Prot {
            mte: process.mte,
            ..HEAP_PROT
        }
    }

    /// A free block of `class`, mapping more of its region if needed.
    fn primary_block(
        &mut self,
        process: &mut Process,
        class: usize,
        block_size: u64,
    ) -> Result<u64, ReplayError> {
        if self.regions.len() <= class {
            self.regions.resize(class + 1, Region::default());
            self.free_lists.resize(class + 1, Vec::new());
        }
        if let Some(block) = self.free_lists[class].pop() {
            return Ok(block);
        }
        let base = HEAP_BASE + class as u64 * REGION_SPAN;
        let region = &mut self.regions[class];
        if region.bump == 0 {
            region.bump = base;
            region.mapped_end = base;
        }
        let block = region.bump;
        let end = block + block_size;
        if end > base + REGION_SPAN {
            return Err(ReplayError::HeapExhausted { block_size });
        }
        if end > region.mapped_end {
            let from = region.mapped_end;
            let to = end.next_multiple_of(REGION_STEP);
            region.mapped_end = to;
            let prot = self.heap_prot(process);
            process.map_fixed(from, to - from, prot, Sharing::Private, Backing::Anon)?;
        }
        self.regions[class].bump = end;
        Ok(block)
    }

    /// Tags the block with a fresh tag: not 0, not the tags of its
    /// neighbours in the region (primary), not `old`.
    fn new_tag(
        &mut self,
        process: &mut Process,
        block: u64,
        block_size: u64,
        primary: bool,
        old: Option<Tag>,
    ) -> Result<Tag, ReplayError> {
        if !process.mte {
            return Ok(Tag::ZERO);
        }
        let mut exclude = TagMask::single(Tag::ZERO);
        if let Some(old) = old {
            exclude.insert(old);
        }
        if primary {
            let region_base = HEAP_BASE + (block - HEAP_BASE) / REGION_SPAN * REGION_SPAN;
            if block > region_base {
                exclude.insert(process.ldg(TaggedPtr::from_raw(block - GRANULE)));
            }
            let next = block + block_size;
            let region = self.regions[((block - HEAP_BASE) / REGION_SPAN) as usize];
            if next < region.bump {
                exclude.insert(process.ldg(TaggedPtr::from_raw(next)));
            }
        }
        let tagged = process.irg(TaggedPtr::from_raw(block), exclude)?;
        process.set_tag(tagged, block_size)?;
        Ok(tagged.tag())
    }

    /// The allocation (live or remembered) recorded address `addr` is
    /// attributed to, as [`Heap::target`] attributes it.
    pub fn placement_of(&self, addr: u64) -> Option<&AllocInfo> {
        let (_, p) = self.by_recorded.range(..=addr).next_back()?;
        (addr < p.window_end()).then_some(&p.info)
    }

    /// The allocation whose block holds model address `addr`: the current
    /// occupant, or the last one if the block is free.
    pub fn occupant(&self, addr: u64) -> Option<&AllocInfo> {
        let (&block, (size, info)) = self.blocks.range(..=addr).next_back()?;
        (addr < block + size).then_some(info)
    }
}

fn plain(addr: u64) -> Target {
    Target {
        ptr: TaggedPtr::from_raw(addr),
        alloc: 0,
        end: 0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn size_classes_grow_by_quarters() {
        assert_eq!(class_of(0), (0, 16));
        assert_eq!(class_of(16), (0, 16));
        assert_eq!(class_of(17), (1, 32));
        assert_eq!(class_of(256), (15, 256));
        assert_eq!(class_of(257), (16, 320));
        assert_eq!(class_of(512), (19, 512));
        assert_eq!(class_of(513), (20, 640));
        assert_eq!(class_of(65536).1, 65536);
        // Every class is a multiple of the granule.
        for size in (1..70_000).step_by(97) {
            let (_, block) = class_of(size);
            assert!(block >= size && block % GRANULE == 0, "{size} -> {block}");
        }
    }
}
