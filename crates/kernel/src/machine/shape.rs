//! Starting from a given free-memory shape: a setup step that makes the
//! buddy allocator's movable free lists hold a given number of free blocks
//! of each order below `MAX_PAGE_ORDER`, and each CPU's per-CPU lists a
//! given number of pages, before anything runs. For comparing with a real
//! kernel that has been up for a while (`docs/reference.md`, "The
//! free-memory shape"): its records say how many free blocks of each order
//! it had and how many pages its per-CPU lists held, not where they were.
//!
//! # Contract
//! - [`Kernel::shape_free_memory`] runs on a machine nothing has run on
//!   yet (no process); it only takes frames for the kernel itself (order-0
//!   movable allocations of DRAM, held until the machine goes: the
//!   kernel's own pages, page cache and other processes of the real
//!   machine) and frees frames onto the per-CPU lists. Nothing else
//!   changes: no counter, no tag storage.
//! - Placement is deterministic and spread, since the real positions are
//!   unknown: every wanted free block of order `k` gets an aligned slot of
//!   `2^(k+1)` frames (32 frames, a 4 KiB tag block's group, for the
//!   orders below 5) whose first `2^k` frames stay free and whose other
//!   frames the kernel takes, so it cannot merge; slots are laid out from
//!   the largest down with even gaps over DRAM. The gaps stay free and
//!   merge into blocks of order 5 and up, so the counts of orders below 5
//!   come out exactly and those of 5 and up at least as asked
//!   ([`ShapeReport`] says what came out). With `spread` off the slots
//!   are `2^(k+1)` frames for every order, side by side from the start of
//!   DRAM (several small blocks share a 32-frame group), the last group
//!   filled up by the kernel: the least scattered placement, where spread
//!   is the most.
//! - The per-CPU pages are taken from the top of DRAM, every `pcp_stride`-th
//!   frame (the ones between held by the kernel: 1 = consecutive frames,
//!   which merge back into large blocks when drained; 2 = single frames,
//!   which stay single), and freed on their CPU. A CPU frees part of its
//!   list back when it reaches its `high`, so fewer may stay.
//! - Bad input (a block order at or above `MAX_PAGE_ORDER`, more than DRAM
//!   can hold, a machine that already ran something) is a [`ShapeError`];
//!   nothing panics.
//!
//! [`Kernel::set_free_frames`] is the exact variant, for a record that
//! gives the free frames' positions: it leaves free exactly the frames
//! asked (buddy frames on the buddy lists, where they merge into maximal
//! aligned blocks; per-CPU frames freed on their CPU) and takes every other
//! free DRAM frame for the kernel. Same preconditions and errors.
//!
//! [`Kernel::set_free_lists`] is the exact variant with list order, for a
//! record of the free lists themselves (the reference harness's kernel
//! probe, `docs/reference.md`, "The free lists"): every listed buddy block
//! is left free and moved to its place in its list (head first, as
//! recorded), every listed per-CPU block is put on its CPU's list of its
//! type and order in the recorded order, each CPU's tuning (`high`,
//! `free_count`, `alloc_factor`, `PCPF_PREV_FREE_HIGH_ORDER`) is set, the
//! pageblocks holding listed blocks get the lists' migrate type, every
//! other DRAM frame is the kernel's, and tag storage frames not listed stay
//! free. Same preconditions and errors; [`ListsReport`] says what could not
//! be placed as recorded.
//!
//! The checker counts the frames taken here as the kernel's own
//! (`kernel_held`), so the frame accounting still balances.

use mte::{Pfn, PfnRange};

use super::Kernel;
use crate::phys::frame::MigrateType;
use crate::phys::layout::RegionKind;
use crate::phys::{FreeList, Order};

/// A free-memory shape to start from.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct FreeShape {
    /// Free movable blocks wanted per order (index = order), below
    /// `MAX_PAGE_ORDER`; orders not listed are left as they come.
    pub free_blocks: Vec<u64>,
    /// Pages wanted on each CPU's per-CPU lists (index = CPU).
    pub pcp_pages: Vec<u64>,
    /// Every how many frames a per-CPU page is taken (at least 1).
    pub pcp_stride: u64,
    /// Whether the slots are spread over DRAM with even gaps (`true`) or
    /// packed from its start (`false`: no gap pieces, so no free blocks
    /// beyond the ones asked but the large ones above the slots).
    pub spread: bool,
}

/// Exact free frames to start from, as offsets in frames from the start of
/// DRAM (the largest DRAM range).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct FreeFrames {
    /// Runs `(offset, count)` left free on the buddy lists.
    pub buddy: Vec<(u64, u64)>,
    /// Frames freed onto each CPU's per-CPU lists (index = CPU), in the
    /// order they are freed.
    pub pcp: Vec<Vec<u64>>,
}

/// The migrate type of a recorded free list. Linux's `MIGRATE_RECLAIMABLE`
/// and `MIGRATE_HIGHATOMIC` are kernel memory the model has no type for:
/// the caller gives them as [`ListType::Unmovable`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ListType {
    Unmovable,
    Movable,
    Cma,
}

impl ListType {
    fn migratetype(self) -> MigrateType {
        match self {
            ListType::Unmovable => MigrateType::Unmovable,
            ListType::Movable => MigrateType::Movable,
            ListType::Cma => MigrateType::Cma,
        }
    }
}

/// One block of a recorded free list: `offset` in frames from the start of
/// DRAM (the largest DRAM range, with the tag storage that follows it
/// directly counted on), `2^order` frames, on a list of type `list`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ListedBlock {
    pub offset: u64,
    pub order: u8,
    pub list: ListType,
}

/// One CPU's recorded per-CPU lists and tuning.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CpuLists {
    /// Its blocks, each list's head first (lists may interleave: the
    /// blocks of one type and order keep their order).
    pub blocks: Vec<ListedBlock>,
    pub high: u64,
    pub free_count: u64,
    pub alloc_factor: u32,
    pub prev_free_high_order: bool,
}

/// Recorded free lists to start from.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct FreeLists {
    /// The buddy allocator's free blocks, each list's head first.
    pub buddy: Vec<ListedBlock>,
    /// Each CPU's lists (index = CPU).
    pub cpus: Vec<CpuLists>,
}

/// What [`Kernel::set_free_lists`] made.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ListsReport {
    pub made: ShapeReport,
    /// Listed buddy blocks the model did not have as such after taking the
    /// kernel's frames (a frame the model holds itself, such as the zero
    /// page, inside one): left where the model's lists have them.
    pub buddy_unplaced: u64,
    /// Listed per-CPU blocks that could not go on a list (an order with no
    /// list in the model, or a frame the model held): their frames are the
    /// kernel's.
    pub pcp_unplaced: u64,
    /// Listed blocks whose pageblock could not take the list's migrate
    /// type (a CMA or isolated pageblock, or the CMA type asked outside
    /// CMA): left on the type the model has.
    pub types_unset: u64,
}

/// What the shaping made.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ShapeReport {
    /// Free movable blocks per order after shaping (index = order, up to
    /// `MAX_PAGE_ORDER`).
    pub free_blocks: Vec<u64>,
    /// Pages on each CPU's per-CPU lists after shaping.
    pub pcp_pages: Vec<u64>,
    /// Frames the kernel holds for itself.
    pub held: u64,
}

/// Why a shape cannot be made.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ShapeError {
    #[error("free blocks of order {order}: only orders below {max} can be shaped")]
    Order { order: usize, max: u8 },
    #[error("the shape needs {needed} frames of DRAM, the machine has {have} free")]
    TooLarge { needed: u64, have: u64 },
    #[error("per-CPU pages for CPU {cpu}: the machine has {cpus} CPUs")]
    Cpu { cpu: usize, cpus: usize },
    #[error("per-CPU pages asked, but the per-CPU lists are off (pcp=on)")]
    NoPcp,
    #[error("the free memory can be shaped only before anything runs")]
    NotFresh,
    #[error("pcp stride must be at least 1")]
    Stride,
    #[error("free frames at offset {offset}: outside DRAM ({frames} frames) or listed twice")]
    Frames { offset: u64, frames: u64 },
    #[error("a free block of order {order} at offset {offset}: not aligned to its size")]
    Misaligned { offset: u64, order: u8 },
}

impl Kernel {
    /// Shapes free memory as `shape` asks (see the module's contract).
    pub fn shape_free_memory(&mut self, shape: &FreeShape) -> Result<ShapeReport, ShapeError> {
        self.ensure_fresh()?;
        if shape.pcp_stride == 0 {
            return Err(ShapeError::Stride);
        }
        let mut phys = self.mem.phys_mut();
        let alloc = &mut phys.alloc;
        let max = alloc.geometry().max_order();
        if let Some(order) = (0..shape.free_blocks.len())
            .find(|&o| o >= usize::from(max.get()) && shape.free_blocks[o] != 0)
        {
            return Err(ShapeError::Order {
                order,
                max: max.get(),
            });
        }
        per_cpu_pages_fit(alloc, shape.pcp_pages.iter().map(|&n| n != 0))?;
        let pcp_total: u64 = shape.pcp_pages.iter().sum();
        let range = largest_dram(alloc)?;
        let top = max.pages();
        // The per-CPU pages' region: whole max-order chunks at the top.
        let pcp_frames = pcp_total * shape.pcp_stride;
        let pcp_chunks = pcp_frames.div_ceil(top);
        // Orders with no block are skipped (those above the maximum were
        // refused above only when they have blocks).
        let slots: Vec<(Order, u64)> = (0..shape.free_blocks.len())
            .rev()
            .filter(|&o| shape.free_blocks[o] != 0)
            .map(|o| (Order::new(o as u8), shape.free_blocks[o]))
            .collect();
        let group = Order::new(5.min(max.get()));
        // Spread: a small block alone in its 32-frame group; packed: slots
        // of twice the block, side by side (several small blocks share a
        // group).
        let spread = shape.spread;
        let slot_pages = |order: Order| match spread {
            true => (order.pages() * 2).max(group.pages()),
            false => order.pages() * 2,
        };
        let needed: u64 =
            slots.iter().map(|&(o, n)| slot_pages(o) * n).sum::<u64>() + pcp_chunks * top;
        if needed > range.count {
            return Err(ShapeError::TooLarge {
                needed,
                have: range.count,
            });
        }
        let mut held = 0u64;
        // The per-CPU pages, from the top chunks down, taken first so the
        // slots below never meet them.
        let pcp_start = Pfn::new(
            ((range.start.as_u64() + range.count - pcp_chunks * top) / top * top)
                .max(range.start.as_u64()),
        );
        let mut taken: Vec<Pfn> = Vec::new();
        let mut at = pcp_start;
        let mut per_cpu: Vec<Vec<Pfn>> = vec![Vec::new(); shape.pcp_pages.len()];
        for (cpu, &want) in shape.pcp_pages.iter().enumerate() {
            while (per_cpu[cpu].len() as u64) < want && at < range.start + range.count {
                if alloc.take_free_frame(at) {
                    per_cpu[cpu].push(at);
                }
                for gap in 1..shape.pcp_stride {
                    if alloc.take_free_frame(at + gap) {
                        taken.push(at + gap);
                    }
                }
                at += shape.pcp_stride;
            }
        }
        // The rest of the last per-CPU chunk is the kernel's too: free, it
        // would add one block of each order.
        let region_end = pcp_start + pcp_chunks * top;
        while at < region_end {
            if alloc.take_free_frame(at) {
                taken.push(at);
            }
            at += 1;
        }
        held += taken.len() as u64;
        // The slots: largest first, even gaps (each a whole number of the
        // slot's size, so every later, smaller slot stays aligned).
        let end = pcp_start;
        let count: u64 = slots.iter().map(|&(_, n)| n).sum();
        let mut left = count;
        let below = end.as_u64().saturating_sub(range.start.as_u64());
        let mut room = below.saturating_sub(needed - pcp_chunks * top);
        let mut cursor = range.start.checked_align_up(max).unwrap_or(range.start);
        for &(order, n) in &slots {
            let size = slot_pages(order);
            for _ in 0..n {
                let gap = match spread {
                    true => (room / left.max(1)) / size * size,
                    false => 0,
                };
                // A slot whose frames are not all free (the zero page, a
                // boot allocation) moves up by its size.
                while cursor + size <= end && !(0..size).all(|i| free_movable(alloc, cursor + i)) {
                    cursor += size;
                    room = room.saturating_sub(size);
                }
                if cursor + size > end {
                    return Err(ShapeError::TooLarge {
                        needed,
                        have: range.count,
                    });
                }
                for i in order.pages()..size {
                    if alloc.take_free_frame(cursor + i) {
                        held += 1;
                    }
                }
                cursor += size + gap;
                // The skip above may have used up the room this gap was
                // cut from (the last slot's gap is all that was left).
                room = room.saturating_sub(gap);
                left -= 1;
            }
        }
        // Packed slots end anywhere: the kernel takes the rest of the last
        // 32-frame group, which free would add one small block per order.
        while !spread && !cursor.is_aligned(group) && cursor < end {
            if alloc.take_free_frame(cursor) {
                held += 1;
            }
            cursor += 1;
        }
        // The per-CPU pages on their CPUs, each CPU's in frame order.
        let pcp_pages = free_per_cpu(alloc, per_cpu.iter().map(|f| f.iter().copied()));
        let report = ShapeReport::of(alloc, pcp_pages, held);
        drop(phys);
        self.kernel_held.set(held);
        Ok(report)
    }
}

impl Kernel {
    /// Leaves free exactly the frames `frames` lists (see the module's
    /// contract): frames the model already holds (the zero page, boot
    /// allocations) stay held.
    pub fn set_free_frames(&mut self, frames: &FreeFrames) -> Result<ShapeReport, ShapeError> {
        self.ensure_fresh()?;
        let mut phys = self.mem.phys_mut();
        let alloc = &mut phys.alloc;
        per_cpu_pages_fit(alloc, frames.pcp.iter().map(|list| !list.is_empty()))?;
        let range = largest_dram(alloc)?;
        // 0: the kernel's; 1: free on the buddy lists; 2: a per-CPU page.
        let mut want = vec![0u8; range.count as usize];
        let mut mark = |offset: u64, kind: u8| match want.get_mut(offset as usize) {
            Some(w) if *w == 0 => {
                *w = kind;
                Ok(())
            }
            _ => Err(ShapeError::Frames {
                offset,
                frames: range.count,
            }),
        };
        for &(offset, count) in &frames.buddy {
            for o in offset..offset.saturating_add(count) {
                mark(o, 1)?;
            }
        }
        for list in &frames.pcp {
            for &o in list {
                mark(o, 2)?;
            }
        }
        let mut held = 0u64;
        // Per-CPU frames taken here, so freeing one frees nothing the model
        // held before (the zero page, a boot allocation).
        let mut taken = vec![false; range.count as usize];
        for (o, &w) in want.iter().enumerate() {
            if w != 1 && alloc.take_free_frame(range.start + o as u64) {
                match w {
                    0 => held += 1,
                    _ => taken[o] = true,
                }
            }
        }
        let pcp_pages = free_per_cpu(
            alloc,
            frames.pcp.iter().map(|list| {
                list.iter()
                    .filter(|&&o| taken[o as usize])
                    .map(|&o| range.start + o)
            }),
        );
        let report = ShapeReport::of(alloc, pcp_pages, held);
        drop(phys);
        self.kernel_held.set(held);
        Ok(report)
    }
}

impl Kernel {
    /// Starts from the recorded free lists `lists` (see the module's
    /// contract).
    pub fn set_free_lists(&mut self, lists: &FreeLists) -> Result<ListsReport, ShapeError> {
        self.ensure_fresh()?;
        let mut phys = self.mem.phys_mut();
        let alloc = &mut phys.alloc;
        per_cpu_pages_fit(alloc, lists.cpus.iter().map(|c| !c.blocks.is_empty()))?;
        let dram = largest_dram(alloc)?;
        // DRAM, and the tag storage right after it (the reference
        // machine's layout, and the model's).
        let tag = alloc
            .layout()
            .regions()
            .iter()
            .filter(|r| {
                r.kind == RegionKind::TagStorageCma && r.range.start == dram.start + dram.count
            })
            .map(|r| r.range.count)
            .sum::<u64>();
        let span = dram.count + tag;
        let max = alloc.geometry().max_order().get();
        // 0: the kernel's (DRAM) or left as it is (tag storage); 1: free
        // on the buddy lists; 2: on a per-CPU list.
        let mut want = vec![0u8; span as usize];
        let mut mark = |b: &ListedBlock, kind: u8| -> Result<(), ShapeError> {
            if b.order > max {
                return Err(ShapeError::Order {
                    order: usize::from(b.order),
                    max: max + 1,
                });
            }
            let pages = 1u64 << b.order;
            // A buddy (or per-CPU) block is aligned to its size: merging
            // relies on it.
            if !b.offset.is_multiple_of(pages) {
                return Err(ShapeError::Misaligned {
                    offset: b.offset,
                    order: b.order,
                });
            }
            for o in b.offset..b.offset.saturating_add(pages) {
                match want.get_mut(o as usize) {
                    Some(w) if *w == 0 => *w = kind,
                    _ => {
                        return Err(ShapeError::Frames {
                            offset: o,
                            frames: span,
                        });
                    }
                }
            }
            Ok(())
        };
        for b in &lists.buddy {
            mark(b, 1)?;
        }
        for c in &lists.cpus {
            for b in &c.blocks {
                mark(b, 2)?;
            }
        }
        let mut held = 0u64;
        let mut taken = vec![false; span as usize];
        for (o, &w) in want.iter().enumerate() {
            let pfn = dram.start + o as u64;
            let in_dram = (o as u64) < dram.count;
            match w {
                // Whatever list the model has it on (the first pageblock
                // is unmovable after the model's own boot allocations).
                0 if in_dram && alloc.take_any_free_frame(pfn) => held += 1,
                2 if alloc.take_any_free_frame(pfn) => taken[o] = true,
                _ => {}
            }
        }
        // Pageblock types: the per-CPU lists' first, then the buddy lists'
        // (a free block lies on its pageblock's list).
        let mut types_unset = 0u64;
        for b in lists
            .cpus
            .iter()
            .flat_map(|c| &c.blocks)
            .chain(&lists.buddy)
        {
            if !alloc.set_pageblock_type(
                dram.start + b.offset,
                Order::new(b.order),
                b.list.migratetype(),
            ) {
                types_unset += 1;
            }
        }
        // Each buddy list's recorded blocks to its head, in the recorded
        // order: the last first.
        let mut buddy_unplaced = 0u64;
        for b in lists.buddy.iter().rev() {
            if !alloc.free_block_to_head(dram.start + b.offset, Order::new(b.order)) {
                buddy_unplaced += 1;
            }
        }
        let mut pcp_unplaced = 0u64;
        let mut pcp_pages = vec![0u64; lists.cpus.len()];
        for (cpu, c) in lists.cpus.iter().enumerate() {
            for b in &c.blocks {
                let head = dram.start + b.offset;
                let order = Order::new(b.order);
                let all_taken = (b.offset..b.offset + order.pages()).all(|o| taken[o as usize]);
                if all_taken && alloc.pcp_append_taken(cpu, head, order, b.list.migratetype()) {
                    pcp_pages[cpu] += order.pages();
                } else {
                    pcp_unplaced += 1;
                    held += (b.offset..b.offset + order.pages())
                        .filter(|&o| taken[o as usize])
                        .count() as u64;
                }
            }
            alloc.pcp_set_tuning(
                cpu,
                c.high,
                c.free_count,
                c.alloc_factor,
                c.prev_free_high_order,
            );
        }
        let made = ShapeReport::of(alloc, pcp_pages, held);
        drop(phys);
        self.kernel_held.set(held);
        Ok(ListsReport {
            made,
            buddy_unplaced,
            pcp_unplaced,
            types_unset,
        })
    }
}

impl ShapeReport {
    /// What a shaping that left `pcp_pages` per CPU and held `held` frames
    /// made: the movable free blocks of each order, read from `alloc`.
    fn of(alloc: &crate::phys::BuddyAllocator, pcp_pages: Vec<u64>, held: u64) -> ShapeReport {
        let max = alloc.geometry().max_order();
        ShapeReport {
            free_blocks: (0..=max.get())
                .map(|o| alloc.free_blocks(Order::new(o), FreeList::Movable))
                .collect(),
            pcp_pages,
            held,
        }
    }
}

/// Frees each CPU's frames onto its per-CPU list in the order given (the
/// list then hands out the last freed first, as Linux's); the pages each
/// list gained.
impl Kernel {
    /// Shaping starts from a machine nothing ran on.
    fn ensure_fresh(&self) -> Result<(), ShapeError> {
        if !self.procs.borrow().is_empty() || self.kernel_held.get() != 0 {
            return Err(ShapeError::NotFresh);
        }
        Ok(())
    }
}

/// Whether per-CPU pages asked for CPU by CPU (`busy`: whether each asks
/// any) fit the machine: per-CPU lists on, and no pages for a CPU it lacks.
fn per_cpu_pages_fit(
    alloc: &crate::phys::BuddyAllocator,
    busy: impl IntoIterator<Item = bool>,
) -> Result<(), ShapeError> {
    let mut busy = busy
        .into_iter()
        .enumerate()
        .filter_map(|(cpu, b)| b.then_some(cpu))
        .peekable();
    if busy.peek().is_none() {
        return Ok(());
    }
    let Some(params) = alloc.pcp_params() else {
        return Err(ShapeError::NoPcp);
    };
    let cpus = params.cpus as usize;
    match busy.find(|&cpu| cpu >= cpus) {
        Some(cpu) => Err(ShapeError::Cpu { cpu, cpus }),
        None => Ok(()),
    }
}

/// The machine's DRAM range (the reference machine has one; a layout of
/// several gives the largest).
fn largest_dram(alloc: &crate::phys::BuddyAllocator) -> Result<PfnRange, ShapeError> {
    alloc
        .layout()
        .regions()
        .iter()
        .filter(|r| r.kind == RegionKind::Dram)
        .map(|r| r.range)
        .max_by_key(|r| r.count)
        .ok_or(ShapeError::TooLarge { needed: 1, have: 0 })
}

fn free_per_cpu<I: IntoIterator<Item = Pfn>>(
    alloc: &mut crate::phys::BuddyAllocator,
    per_cpu: impl IntoIterator<Item = I>,
) -> Vec<u64> {
    per_cpu
        .into_iter()
        .enumerate()
        .map(|(cpu, frames)| {
            let before = alloc.pcp_pages();
            for pfn in frames {
                alloc
                    .free_on(cpu, pfn, Order::new(0))
                    .expect("BUG: freeing a frame the shaping took");
            }
            alloc.pcp_pages() - before
        })
        .collect()
}

/// Whether `pfn` is free on the movable buddy lists.
fn free_movable(alloc: &crate::phys::BuddyAllocator, pfn: Pfn) -> bool {
    matches!(
        alloc.frame_status(pfn),
        Some(crate::phys::FrameStatus::Free {
            list: FreeList::Movable,
            ..
        })
    )
}
