//! Free frames per chunk of 32 frames: how the allocator answers "how many
//! frames of this range are free" without a free-list search per block.
//!
//! The designs that place tagged pages by how free a tag block's frames are
//! (Google's FREE Tag Blocks, XNU's cell buckets) ask this of every block at
//! every tagged allocation (`docs/designs.md`). A free-list search answers
//! it for one frame with a lookup per order; here the allocator keeps, for
//! each aligned chunk of [`CHUNK_PAGES`] frames (the data frames of the
//! smallest tag block: one tag page covers 32 frames), how many of its
//! allocatable frames are *taken*: on no buddy free list (allocated,
//! claimed, on a per-CPU list). A chunk wholly inside one allocatable
//! region with nothing taken is all free; with everything taken, none is;
//! any other chunk (a partly taken one, or one at a region's edge) is
//! walked a block at a time as before.
//!
//! Contract: [`TakenChunks`] changes exactly when a buddy free list does:
//! [`crate::phys::BuddyAllocator`]'s `add_free_at` and `del_free` (every
//! change of list membership goes through them) call [`TakenChunks::freed`]
//! and [`TakenChunks::taken_out`]. Boot frees every allocatable frame, so
//! the table starts after boot with nothing taken, which is also what an
//! untouched section means: sections of the table materialise on first
//! use, like the frame metadata (`crate::phys::sparse`), so an idle
//! terabyte costs the section table alone. The checker recounts it from the
//! free lists ([`BuddyAllocator::check_free_chunks`], part of the lists'
//! check). The incremental checker
//! ([`BuddyAllocator::check_free_chunks_incremental`]) recounts only the
//! chunks whose kept count or recount may have changed: those
//! [`TakenChunks::adjust`] logged (the table's one mutator) and those of
//! the free blocks added or removed since its last check.

use std::collections::BTreeMap;

use crate::phys::buddy::BuddyAllocator;
use crate::phys::check::{FreeBlock, PhysViolation};
use crate::phys::layout::Order;
use mte::{Pfn, PfnRange};

/// log2 of the frames per chunk.
const CHUNK_SHIFT: u32 = 5;
/// Frames per chunk.
pub(crate) const CHUNK_PAGES: u64 = 1 << CHUNK_SHIFT;
/// log2 of the chunks per section of the table (2^15 frames, the frame
/// metadata's section size on Linux-like geometries).
const SECTION_SHIFT: u32 = 10;
const SECTION_CHUNKS: usize = 1 << SECTION_SHIFT;

/// Taken frames per chunk, sparse (see the module doc).
#[derive(Clone, Debug, Default)]
pub(crate) struct TakenChunks {
    /// Chunk number of the first chunk of the first section.
    first_chunk: u64,
    /// Per section, the taken count of each chunk; `None`: all zero.
    /// Signed, and never checked on update: a count gone wrong (below 0
    /// or above [`CHUNK_PAGES`]) is the checker's to report, and the
    /// queries only trust 0 and [`CHUNK_PAGES`] in a wholly allocatable
    /// chunk, walking the free lists otherwise.
    sections: Vec<Option<Box<[i16]>>>,
    materialised: usize,
    /// The chunks adjusted since the incremental checker last took the
    /// log ([`TakenChunks::take_log`]), in the order adjusted, with
    /// repeats; unused while `log_all`.
    log: Vec<u64>,
    /// The log says "any chunk": a new table, or one whose log outgrew
    /// [`LOG_CAP`] (the full checker alone never takes it).
    log_all: bool,
}

/// Entries the change log keeps before it says "any chunk" instead.
const LOG_CAP: usize = 1 << 12;

/// What [`TakenChunks`] logged between two incremental checks.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum ChunkLog {
    /// Any chunk may have changed.
    All,
    /// These chunks (unsorted, with repeats) and no other.
    Chunks(Vec<u64>),
}

impl TakenChunks {
    /// A table over `span` with nothing taken.
    pub(crate) fn new(span: PfnRange) -> Self {
        let first_section = (span.start.as_u64() >> CHUNK_SHIFT) >> SECTION_SHIFT;
        let last_section = ((span.end().as_u64() - 1) >> CHUNK_SHIFT) >> SECTION_SHIFT;
        let count = usize::try_from(last_section - first_section + 1)
            .expect("BUG: chunk table larger than the address space");
        Self {
            first_chunk: first_section << SECTION_SHIFT,
            sections: vec![None; count],
            materialised: 0,
            log: Vec::new(),
            log_all: true,
        }
    }

    /// The chunk holding `pfn`.
    pub(crate) fn chunk_of(pfn: Pfn) -> u64 {
        pfn.as_u64() >> CHUNK_SHIFT
    }

    /// (section, index) of `chunk`; `None` outside the table (and always
    /// for the empty table the allocator boots with).
    fn locate(&self, chunk: u64) -> Option<(usize, usize)> {
        let at = usize::try_from(chunk.checked_sub(self.first_chunk)?).ok()?;
        let section = at >> SECTION_SHIFT;
        (section < self.sections.len()).then_some((section, at & (SECTION_CHUNKS - 1)))
    }

    /// Taken frames of `chunk` (0 outside the table).
    pub(crate) fn taken(&self, chunk: u64) -> i64 {
        self.locate(chunk)
            .and_then(|(s, i)| self.sections[s].as_ref().map(|c| i64::from(c[i])))
            .unwrap_or(0)
    }

    /// Adds `delta` (signed) to the taken count of `chunk`.
    fn adjust(&mut self, chunk: u64, delta: i64) {
        let Some((s, i)) = self.locate(chunk) else {
            return;
        };
        if self.sections[s].is_none() {
            self.sections[s] = Some(vec![0; SECTION_CHUNKS].into_boxed_slice());
            self.materialised += 1;
        }
        if !self.log_all {
            if self.log.len() == LOG_CAP {
                self.log_all = true;
                self.log = Vec::new();
            } else if self.log.last() != Some(&chunk) {
                // (A block's repeated updates of one chunk, once.)
                self.log.push(chunk);
            }
        }
        let slot = &mut self.sections[s].as_mut().expect("BUG: just materialised")[i];
        // A block adds at most a chunk's frames: no overflow before the
        // checker (after every step in the fuzzer) reports a drift.
        *slot = slot.wrapping_add(delta as i16);
    }

    /// Applies `delta` per frame to every chunk of the block `head` of
    /// `order`.
    fn apply(&mut self, head: Pfn, order: Order, delta: i64) {
        let pages = order.pages();
        if pages < CHUNK_PAGES {
            self.adjust(Self::chunk_of(head), delta * pages as i64);
        } else {
            let first = Self::chunk_of(head);
            for chunk in first..first + (pages >> CHUNK_SHIFT) {
                self.adjust(chunk, delta * CHUNK_PAGES as i64);
            }
        }
    }

    /// The block `head` of `order` went onto a free list.
    pub(crate) fn freed(&mut self, head: Pfn, order: Order) {
        self.apply(head, order, -1);
    }

    /// The block `head` of `order` left its free list.
    pub(crate) fn taken_out(&mut self, head: Pfn, order: Order) {
        self.apply(head, order, 1);
    }

    /// A count drifted by `delta` in `chunk`, through the table (logged).
    #[cfg(test)]
    pub(crate) fn drift(&mut self, chunk: u64, delta: i64) {
        self.adjust(chunk, delta);
    }

    /// A count drifted by `delta` in `chunk` behind the log's back (a
    /// materialised section).
    #[cfg(test)]
    pub(crate) fn drift_unlogged(&mut self, chunk: u64, delta: i64) {
        let (s, i) = self.locate(chunk).expect("a chunk of the table");
        let slot = &mut self.sections[s].as_mut().expect("a materialised section")[i];
        *slot += delta as i16;
    }

    /// The chunks adjusted since the last call (or "any"), and a fresh log.
    pub(crate) fn take_log(&mut self) -> ChunkLog {
        let log = match self.log_all {
            true => ChunkLog::All,
            false => ChunkLog::Chunks(std::mem::take(&mut self.log)),
        };
        self.log_all = false;
        log
    }

    /// Host bytes used.
    pub(crate) fn host_bytes(&self) -> usize {
        self.sections.capacity() * size_of::<Option<Box<[i16]>>>()
            + self.materialised * SECTION_CHUNKS * size_of::<i16>()
            + self.log.capacity() * size_of::<u64>()
    }
}

/// What a chunk says about the frames of a range inside it.
enum ChunkAnswer {
    /// Every frame free.
    AllFree,
    /// No frame free.
    NoneFree,
    /// Ask the free lists.
    Walk,
}

impl BuddyAllocator {
    /// How many frames of `range` are on a buddy free list (free in the
    /// allocator: [`crate::phys::FrameStatus::Free`]); holes, carved-out,
    /// allocated, claimed and per-CPU frames are not.
    pub fn free_frames_in(&self, range: PfnRange) -> u64 {
        self.count_free_in(range, false)
    }

    /// Whether every frame of `range` is free in the allocator
    /// (`free_frames_in(range) == range.count`), answered at the first
    /// chunk with a frame that is not.
    pub fn all_free_in(&self, range: PfnRange) -> bool {
        self.count_free_in(range, true) == range.count
    }

    /// What the chunk starting at `start` says about all its frames.
    fn chunk_answer(&self, start: Pfn) -> ChunkAnswer {
        let whole = self
            .layout()
            .region_of(start)
            .is_some_and(|r| r.kind.is_allocatable() && r.range.end() >= start + CHUNK_PAGES);
        if !whole {
            return ChunkAnswer::Walk;
        }
        match self.chunks.taken(TakenChunks::chunk_of(start)) {
            0 => ChunkAnswer::AllFree,
            n if n == CHUNK_PAGES as i64 => ChunkAnswer::NoneFree,
            _ => ChunkAnswer::Walk,
        }
    }

    /// The free frames of `range`, a chunk at a time where the chunk table
    /// answers, else a block at a time; with `stop_at_used`, the count up
    /// to the first chunk (or block) with a frame that is not free.
    fn count_free_in(&self, range: PfnRange, stop_at_used: bool) -> u64 {
        let end = range.end();
        let mut pfn = range.start;
        let mut free = 0;
        while pfn < end {
            let chunk_start = pfn.align_down(Order::new(CHUNK_SHIFT as u8));
            let to = (chunk_start + CHUNK_PAGES).min(end);
            match self.chunk_answer(chunk_start) {
                ChunkAnswer::AllFree => free += to - pfn,
                ChunkAnswer::NoneFree if stop_at_used => break,
                ChunkAnswer::NoneFree => {}
                ChunkAnswer::Walk => {
                    let (n, all) = self.walk_free(pfn, to, stop_at_used);
                    free += n;
                    if stop_at_used && !all {
                        break;
                    }
                }
            }
            pfn = to;
        }
        free
    }

    /// The free frames of `[from, to)` by frame status, a block at a time
    /// (a free, allocated or per-CPU block is skipped whole); with
    /// `stop_at_used`, up to the first frame that is not free. Also says
    /// whether every frame was free.
    fn walk_free(&self, from: Pfn, to: Pfn, stop_at_used: bool) -> (u64, bool) {
        use crate::phys::FrameStatus;
        let mut pfn = from;
        let mut free = 0;
        let mut all = true;
        while pfn < to {
            let (block_end, is_free) = match self.frame_status(pfn) {
                Some(FrameStatus::Free { head, order, .. }) => (head + order.pages(), true),
                Some(
                    FrameStatus::Allocated { head, order, .. }
                    | FrameStatus::PcpFree { head, order, .. },
                ) => (head + order.pages(), false),
                _ => (pfn + 1, false),
            };
            if !is_free {
                all = false;
                if stop_at_used {
                    break;
                }
            }
            // The rest of the block at once.
            let block_end = block_end.min(to);
            if is_free {
                free += block_end - pfn;
            }
            pfn = block_end;
        }
        (free, all)
    }

    /// The chunk table against a recount from the free blocks of `blocks`
    /// (those on per-CPU lists are taken): a chunk's taken count is its
    /// allocatable frames minus its frames in free blocks. Sections of the
    /// table never materialised are compared as a whole (nothing taken:
    /// every allocatable frame of the section is in a free block; free
    /// blocks cover only allocatable frames, or
    /// [`PhysViolation::FreeBlockNotAllocatable`] says so). Cost: O(blocks
    /// + sections + chunks of materialised sections inside the span).
    pub(crate) fn check_free_chunks(&self, blocks: &[FreeBlock], out: &mut Vec<PhysViolation>) {
        let table = &self.chunks;
        let layout = self.layout();
        let span = layout.span();
        // Free frames per section, and per chunk of materialised sections.
        let mut section_free = vec![0u64; table.sections.len()];
        let mut chunk_free: Vec<Option<Vec<u32>>> = table
            .sections
            .iter()
            .map(|s| s.as_ref().map(|_| vec![0; SECTION_CHUNKS]))
            .collect();
        for b in blocks.iter().filter(|b| !b.pcp) {
            let mut pfn = b.head;
            while pfn < b.end() {
                let chunk = TakenChunks::chunk_of(pfn);
                let frames = Pfn::new((chunk + 1) << CHUNK_SHIFT).min(b.end()) - pfn;
                if let Some((s, i)) = table.locate(chunk) {
                    section_free[s] += frames;
                    if let Some(c) = &mut chunk_free[s] {
                        // At most a chunk's frames: no overflow.
                        c[i] += frames as u32;
                    }
                }
                pfn += frames;
            }
        }
        let section_frames = CHUNK_PAGES << SECTION_SHIFT;
        for (s, free) in section_free.into_iter().enumerate() {
            let first = table.first_chunk + ((s as u64) << SECTION_SHIFT);
            let section = PfnRange::new(Pfn::new(first << CHUNK_SHIFT), section_frames);
            // The section's allocatable frames, as (start, end) pieces.
            let allocatable: Vec<(Pfn, Pfn)> = layout
                .regions_in(section)
                .iter()
                .filter(|r| r.kind.is_allocatable())
                .map(|r| {
                    (
                        r.range.start.max(section.start),
                        r.range.end().min(section.end()),
                    )
                })
                .collect();
            let (Some(kept), Some(chunk_free)) = (&table.sections[s], &chunk_free[s]) else {
                let frames: u64 = allocatable.iter().map(|&(a, b)| b - a).sum();
                let recounted = frames as i64 - free as i64;
                if recounted != 0 {
                    out.push(PhysViolation::FreeChunk {
                        first: section.start,
                        frames: section_frames,
                        kept: 0,
                        recounted,
                    });
                }
                continue;
            };
            // The chunks inside the span, walking the pieces alongside.
            let lo = (span.start.max(section.start) - section.start) >> CHUNK_SHIFT;
            let hi = (span.end().min(section.end()) - section.start).div_ceil(CHUNK_PAGES);
            let mut piece = 0;
            for i in lo as usize..hi as usize {
                let start = section.start + ((i as u64) << CHUNK_SHIFT);
                let end = start + CHUNK_PAGES;
                while piece < allocatable.len() && allocatable[piece].1 <= start {
                    piece += 1;
                }
                let frames: u64 = allocatable[piece..]
                    .iter()
                    .take_while(|&&(a, _)| a < end)
                    .map(|&(a, b)| b.min(end) - a.max(start))
                    .sum();
                let recounted = frames as i64 - i64::from(chunk_free[i]);
                if i64::from(kept[i]) != recounted {
                    out.push(PhysViolation::FreeChunk {
                        first: start,
                        frames: CHUNK_PAGES,
                        kept: kept[i].into(),
                        recounted,
                    });
                }
            }
        }
    }
}

/// The chunk table's verdict at the last incremental check, by the first
/// frame each violation names (a section's first frame is its first
/// chunk's, and a section is either materialised, with a verdict per
/// chunk, or not, with one for the section: the keys never collide).
#[derive(Clone, Debug, Default)]
pub(crate) struct ChunkCheckCache {
    primed: bool,
    /// The table's shape at the last check: a section materialised since
    /// changes from one verdict for the section to one per chunk.
    shape: (usize, usize),
    violations: BTreeMap<Pfn, PhysViolation>,
}

/// The free blocks of one check, sorted by head, as the incremental
/// chunk check reads them.
pub(crate) struct SortedBlocks<'a> {
    /// Sorted by head (pcp blocks among them, flagged).
    pub(crate) blocks: &'a [FreeBlock],
    /// The running maximum of the blocks' ends.
    pub(crate) max_end: &'a [Pfn],
}

impl SortedBlocks<'_> {
    /// The frames of `[start, end)` in buddy free blocks (per-CPU blocks
    /// are taken), counted per block as the full recount does (blocks that
    /// overlap, in broken lists, count twice).
    fn free_in(&self, start: Pfn, end: Pfn) -> u64 {
        let k = self.blocks.partition_point(|b| b.head < end);
        let mut free = 0;
        // Back from the last block starting before `end`, while a block
        // this far may still reach `start` (the running maximum of ends
        // is monotone: past the first that stops short, all do).
        for j in (0..k).rev() {
            if self.max_end[j] <= start {
                break;
            }
            let b = self.blocks[j];
            let (s, e) = (b.head.max(start), b.end().min(end));
            if !b.pcp && e > s {
                free += e - s;
            }
        }
        free
    }
}

/// The chunks of the blocks in one of sorted `old` and `new` but not the
/// other (as multisets), appended to `out`: the chunks whose recount may
/// have changed.
pub(crate) fn changed_block_chunks(old: &[(Pfn, Order)], new: &[(Pfn, Order)], out: &mut Vec<u64>) {
    let mut push = |&(head, order): &(Pfn, Order)| {
        let last = Pfn::new(head.as_u64() + order.pages() - 1);
        out.extend(TakenChunks::chunk_of(head)..=TakenChunks::chunk_of(last));
    };
    let (mut i, mut j) = (0, 0);
    while i < old.len() && j < new.len() {
        match old[i].cmp(&new[j]) {
            std::cmp::Ordering::Equal => (i, j) = (i + 1, j + 1),
            std::cmp::Ordering::Less => {
                push(&old[i]);
                i += 1;
            }
            std::cmp::Ordering::Greater => {
                push(&new[j]);
                j += 1;
            }
        }
    }
    old[i..].iter().chain(&new[j..]).for_each(push);
}

impl BuddyAllocator {
    /// [`BuddyAllocator::check_free_chunks`], recounting only the chunks
    /// that may have changed since the last call with `cache`: those the
    /// table's log names (its kept count may have changed) and those of
    /// `changed` (blocks added to or removed from the free lists: their
    /// recount may have changed); every chunk when the log says "any",
    /// when a section materialised or with per-CPU lists on (whose blocks
    /// are not in the diff). A chunk neither changed keeps its verdict.
    pub(crate) fn check_free_chunks_incremental(
        &self,
        cache: &mut ChunkCheckCache,
        log: ChunkLog,
        mut changed: Vec<u64>,
        blocks: &SortedBlocks<'_>,
        out: &mut Vec<PhysViolation>,
    ) {
        let table = &self.chunks;
        let shape = (table.sections.len(), table.materialised);
        let logged = match log {
            ChunkLog::Chunks(logged)
                if cache.primed && cache.shape == shape && self.pcp.is_none() =>
            {
                logged
            }
            _ => {
                let mut all = Vec::new();
                self.check_free_chunks(blocks.blocks, &mut all);
                cache.violations = all.into_iter().map(|v| (Self::chunk_key(&v), v)).collect();
                cache.primed = true;
                cache.shape = shape;
                out.extend(cache.violations.values().cloned());
                return;
            }
        };
        changed.extend(logged);
        changed.sort_unstable();
        changed.dedup();
        let layout = self.layout();
        let span = layout.span();
        let section_frames = CHUNK_PAGES << SECTION_SHIFT;
        let allocatable = |start: Pfn, end: Pfn| -> u64 {
            layout
                .regions_in(PfnRange::new(start, end - start))
                .iter()
                .filter(|r| r.kind.is_allocatable())
                .map(|r| r.range.end().min(end) - r.range.start.max(start))
                .sum()
        };
        let mut last_section = None;
        for chunk in changed {
            let Some((s, i)) = table.locate(chunk) else {
                continue;
            };
            let section_start =
                Pfn::new((table.first_chunk + ((s as u64) << SECTION_SHIFT)) << CHUNK_SHIFT);
            let verdict = match &table.sections[s] {
                None => {
                    // One verdict for the whole section, once.
                    if last_section == Some(s) {
                        continue;
                    }
                    last_section = Some(s);
                    let end = section_start + section_frames;
                    let recounted = allocatable(section_start, end) as i64
                        - blocks.free_in(section_start, end) as i64;
                    (
                        section_start,
                        (recounted != 0).then_some(PhysViolation::FreeChunk {
                            first: section_start,
                            frames: section_frames,
                            kept: 0,
                            recounted,
                        }),
                    )
                }
                Some(kept) => {
                    let start = Pfn::new(chunk << CHUNK_SHIFT);
                    let end = start + CHUNK_PAGES;
                    // The full recount looks at the chunks inside the span.
                    if start >= span.end() || end <= span.start {
                        continue;
                    }
                    let recounted =
                        allocatable(start, end) as i64 - blocks.free_in(start, end) as i64;
                    (
                        start,
                        (i64::from(kept[i]) != recounted).then_some(PhysViolation::FreeChunk {
                            first: start,
                            frames: CHUNK_PAGES,
                            kept: kept[i].into(),
                            recounted,
                        }),
                    )
                }
            };
            match verdict {
                (key, Some(v)) => {
                    cache.violations.insert(key, v);
                }
                (key, None) => {
                    if !cache.violations.is_empty() {
                        cache.violations.remove(&key);
                    }
                }
            }
        }
        out.extend(cache.violations.values().cloned());
    }

    /// The first frame a chunk violation names.
    fn chunk_key(v: &PhysViolation) -> Pfn {
        match v {
            PhysViolation::FreeChunk { first, .. } => *first,
            other => unreachable!("BUG: the chunk check reported {other:?}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_table_counts_taken_frames_per_chunk_and_materialises_lazily() {
        let mut t = TakenChunks::new(PfnRange::new(Pfn::new(64), 4096));
        assert_eq!(t.taken(2), 0);
        assert_eq!(t.materialised, 0);
        // An order-0 and an order-3 block in chunk 2, an order-6 block over
        // chunks 4 and 5.
        t.taken_out(Pfn::new(64), Order::new(0));
        t.taken_out(Pfn::new(72), Order::new(3));
        t.taken_out(Pfn::new(128), Order::new(6));
        assert_eq!(
            (t.taken(2), t.taken(3), t.taken(4), t.taken(5)),
            (9, 0, 32, 32)
        );
        assert_eq!(t.materialised, 1);
        t.freed(Pfn::new(72), Order::new(3));
        t.freed(Pfn::new(128), Order::new(6));
        assert_eq!((t.taken(2), t.taken(4)), (1, 0));
        // Outside the table: nothing taken, updates ignored.
        t.taken_out(Pfn::new(1 << 30), Order::new(0));
        assert_eq!(t.taken(1 << 25), 0);
        assert!(t.host_bytes() >= SECTION_CHUNKS);
        // The empty table (boot) ignores every update.
        let mut boot = TakenChunks::default();
        boot.freed(Pfn::new(64), Order::new(5));
        assert_eq!(boot.taken(2), 0);
        // A drift is kept as it is, for the checker to report.
        t.freed(Pfn::new(96), Order::new(0));
        assert_eq!(t.taken(3), -1);
    }

    #[test]
    fn the_allocator_keeps_the_table_and_the_checker_recounts_it() {
        use crate::phys::buddy::tests::{assert_clean, o, p, small};
        use crate::phys::{AllocFlags, CmaUse};
        let mut a = small(CmaUse::Never);
        // DRAM [0, 32) is chunk 0, CMA [32, 48) half of chunk 1.
        assert_eq!(a.chunks.taken(0), 0);
        assert!(a.all_free_in(PfnRange::new(p(0), 32)));
        let x = a.alloc(o(2), AllocFlags::USER).unwrap();
        assert_eq!(a.chunks.taken(0), 4);
        assert_eq!(a.free_frames_in(PfnRange::new(p(0), 48)), 44);
        assert!(!a.all_free_in(PfnRange::new(p(0), 32)));
        assert_clean(&a);
        // A miscount is a violation of the chunk.
        a.chunks.adjust(0, 1);
        let v = a.check();
        assert!(
            v.contains(&PhysViolation::FreeChunk {
                first: p(0),
                frames: 32,
                kept: 5,
                recounted: 4
            }),
            "{v:#?}"
        );
        a.chunks.adjust(0, -1);
        a.free(x, o(2)).unwrap();
        assert_eq!(a.chunks.taken(0), 0);
        assert_clean(&a);
        // A section never counted, yet with a frame taken out of the lists
        // behind the table's back: the whole section is reported.
        let mut fresh = small(CmaUse::Never);
        fresh.chunks = TakenChunks::new(fresh.layout().span());
        let head = p(24);
        fresh.free_lists[3][crate::phys::FreeList::Movable.index()].remove(head);
        let v = fresh.check();
        assert!(
            v.iter().any(|v| matches!(
                v,
                PhysViolation::FreeChunk { first, kept: 0, recounted: 8, .. } if *first == p(0)
            )),
            "{v:#?}"
        );
    }
}
