//! A process's page table: four levels of 512-entry tables (PGD, PUD, PMD,
//! PTE) translating 48-bit user addresses with 4 KiB pages, and 2 MiB block
//! entries at the PMD level for transparent huge pages (Linux
//! `arch/arm64/include/asm/pgtable.h`, `mm/memory.c`, `mm/huge_memory.c`).
//!
//! Owns [`PageTable`]: the tables in an arena indexed by [`TableId`], each
//! charged to a physical frame through the caller's [`TableFrames`], so
//! page-table memory counts in the machine's memory use as in Linux
//! (`pte_alloc_one()`, `pmd_alloc_one()`, `pud_alloc_one()`, `pgd_alloc()`:
//! one page each with 4 KiB pages).
//!
//! # Entries
//! Leaf entries are enums: every state a descriptor can be in is a variant.
//! The arm64 descriptor bits each field stands for:
//!
//! | model | arm64 descriptor (Linux name) |
//! |---|---|
//! | `Pte::None` | all zero (`pte_none()`) |
//! | `Pte::Present`, `Block::Present` | bit 0 valid; PTE bit 1 page, PMD bit 1 clear: block; output address 47:12 = `pfn` |
//! | `Access::ReadOnly` | AP = `PTE_USER` (bit 6) + `PTE_RDONLY` (bit 7) |
//! | `Access::ReadWrite` | `PTE_USER`, `PTE_WRITE` (`PTE_DBM`, bit 51), `PTE_RDONLY` clear |
//! | `Access::ExecOnly` | `PTE_USER` clear, `PTE_RDONLY` (`PAGE_EXECONLY`, with FEAT_EPAN) |
//! | `Access::None` | bit 0 clear with `PTE_PROT_NONE` (bit 58): present to Linux (`pte_present()`), invalid to the MMU (`PAGE_NONE`) |
//! | `tagged` | AttrIndx 4:2 = `MT_NORMAL_TAGGED` (else `MT_NORMAL`) |
//! | `young` | `PTE_AF` (bit 10) |
//! | `dirty` | `PTE_DIRTY` (software bit 55), or DBM with `PTE_RDONLY` clear |
//! | `special` | `PTE_SPECIAL` (software bit 56): the zero page and the huge zero page, no `struct page` refcounting (`vm_normal_page()` returns NULL) |
//! | `Pte::AwaitingTagStorage`, `Block::AwaitingTagStorage` | bit 0 clear, the RFC's fault-on-access encoding (`PAGE_NONE`-like, reusing the NUMA-hinting path): any access faults; the attributes are the ones to install once the tag storage is reserved |
//! | `Pte::Swap` | bit 0 clear, `PTE_PROT_NONE` clear: swap type 7:3 (one device), offset 57:8 = `slot` |
//! | table entry | bits 1:0 = 0b11, next-level table address 47:12 |
//!
//! User execute permission (UXN, bit 54) is not modelled: the model fetches
//! no instructions. PUD-level (1 GiB) blocks are not modelled: arm64 uses
//! them only for hugetlbfs and DAX, and transparent huge pages are PMD-sized.
//!
//! # Invariants (checked by [`PageTable::check`])
//! - every allocated table is reachable from the root exactly once, at the
//!   level its parent's level implies; the root is a PGD;
//! - a table's `used` count is the number of its non-empty entries, and the
//!   kept [`PtCounts`] equal a recount;
//! - every block maps a 2 MiB-aligned run of frames (`pfn` a multiple of 512);
//! - every table has its own frame.
//!
//! # Lifecycle
//! [`PageTable::new`] allocates the PGD; [`PageTable::free_tables`] frees the
//! tables of an unmapped range (Linux `free_pgtables()`);
//! [`PageTable::destroy`] frees the rest when the address space goes away
//! (`exit_mmap()`). Tables are never freed implicitly when they become
//! empty: Linux keeps them until `free_pgtables()` too. Dropping a
//! `PageTable` without `destroy` leaks its frames.

use core::fmt;

use mte::{Pfn, VirtAddr};
use thiserror::Error;

use crate::mm::SwapSlot;
use crate::mm::layout::{
    ENTRIES_PER_TABLE, LEVELS, PAGE_SHIFT, PAGE_SIZE, PAGES_PER_PMD, PMD_SIZE, TABLE_SHIFT,
    TASK_SIZE,
};

/// A translation level, root first.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Debug)]
pub enum Level {
    Pgd,
    Pud,
    Pmd,
    Pte,
}

impl Level {
    pub const ALL: [Level; LEVELS as usize] = [Level::Pgd, Level::Pud, Level::Pmd, Level::Pte];

    /// 0 for the root, `LEVELS - 1` for the PTE level.
    pub const fn depth(self) -> usize {
        match self {
            Level::Pgd => 0,
            Level::Pud => 1,
            Level::Pmd => 2,
            Level::Pte => 3,
        }
    }

    /// log2 of the bytes one entry of this level maps (Linux `PGDIR_SHIFT`,
    /// `PUD_SHIFT`, `PMD_SHIFT`, `PAGE_SHIFT`).
    pub const fn entry_shift(self) -> u32 {
        PAGE_SHIFT + (LEVELS - 1 - self.depth() as u32) * TABLE_SHIFT
    }

    pub const fn entry_size(self) -> u64 {
        1 << self.entry_shift()
    }

    /// The bytes a whole table of this level maps.
    pub const fn table_span(self) -> u64 {
        1 << (self.entry_shift() + TABLE_SHIFT)
    }

    /// The index of `va`'s entry in a table of this level.
    pub const fn index(self, va: u64) -> usize {
        ((va >> self.entry_shift()) as usize) & (ENTRIES_PER_TABLE - 1)
    }

    /// The level of the tables this level's entries point to.
    pub const fn child(self) -> Option<Level> {
        match self {
            Level::Pgd => Some(Level::Pud),
            Level::Pud => Some(Level::Pmd),
            Level::Pmd => Some(Level::Pte),
            Level::Pte => None,
        }
    }
}

const _: () = assert!(Level::Pgd.table_span() == TASK_SIZE);
const _: () = assert!(Level::Pmd.entry_size() == PMD_SIZE);
const _: () = assert!(Level::Pte.entry_size() == PAGE_SIZE);

/// What user accesses a present leaf allows (AP bits, `PTE_PROT_NONE`).
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub enum Access {
    /// `PROT_NONE`: the page stays mapped but every access faults.
    None,
    /// Executable, not readable (`PAGE_EXECONLY`).
    ExecOnly,
    ReadOnly,
    ReadWrite,
}

impl Access {
    /// Whether the MMU treats the descriptor as valid (bit 0).
    pub const fn is_valid(self) -> bool {
        !matches!(self, Access::None)
    }

    pub const fn is_writable(self) -> bool {
        matches!(self, Access::ReadWrite)
    }
}

/// The attributes of a leaf descriptor (see the module table).
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub struct LeafAttrs {
    pub access: Access,
    /// `MT_NORMAL_TAGGED`: accesses are tag checked, tag instructions work.
    pub tagged: bool,
    /// `PTE_SPECIAL`: the zero page or the huge zero page.
    pub special: bool,
    /// `PTE_AF`.
    pub young: bool,
    /// `PTE_DIRTY`.
    pub dirty: bool,
}

/// A frame and how it is mapped.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub struct Leaf {
    pub pfn: Pfn,
    pub attrs: LeafAttrs,
}

/// A PTE: a 4 KiB leaf.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug, Default)]
pub enum Pte {
    #[default]
    None,
    /// Mapped (valid, or `PROT_NONE` with [`Access::None`]).
    Present(Leaf),
    /// Mapped tagged but its tag storage is not reserved yet: invalid, the
    /// first access faults to reserve it (RFC v3 fault-on-access).
    AwaitingTagStorage(Leaf),
    /// Swapped out to `slot`.
    Swap(SwapSlot),
}

impl Pte {
    pub const fn is_none(&self) -> bool {
        matches!(self, Pte::None)
    }

    /// The frame the entry maps (present or awaiting tag storage).
    pub const fn leaf(&self) -> Option<Leaf> {
        match self {
            Pte::Present(l) | Pte::AwaitingTagStorage(l) => Some(*l),
            Pte::None | Pte::Swap(_) => None,
        }
    }
}

/// A PMD block: a 2 MiB leaf mapping 512 contiguous frames from `pfn`.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub enum Block {
    Present(Leaf),
    AwaitingTagStorage(Leaf),
}

impl Block {
    pub const fn leaf(&self) -> Leaf {
        match self {
            Block::Present(l) | Block::AwaitingTagStorage(l) => *l,
        }
    }
}

/// A non-empty leaf found by iteration.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub enum LeafEntry {
    Pte(Pte),
    Block(Block),
}

/// What a walk of one address found.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub enum Walk {
    /// Nothing maps the address: the descriptor at `level` is empty (at
    /// [`Level::Pte`], the PTE is [`Pte::None`]). Addresses at or above
    /// `TASK_SIZE` stop at the root.
    Empty { level: Level },
    /// A PTE other than [`Pte::None`].
    Pte(Pte),
    /// A block whose 2 MiB start at `base` covers the address.
    Block { base: VirtAddr, block: Block },
}

/// An index into a page table's arena.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct TableId(u32);

impl TableId {
    pub const fn index(self) -> usize {
        self.0 as usize
    }
}

impl fmt::Debug for TableId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "TableId({})", self.0)
    }
}

/// Where page-table frames come from: the caller's page allocator
/// (unmovable order-0 pages, Linux `GFP_PGTABLE_USER`). Allocation is
/// synchronous: a fault path that may have to reclaim first fills a reserve
/// and serves from it, as Linux preallocates with `pte_alloc()` before it
/// takes the page-table lock.
pub trait TableFrames {
    /// A frame for a new table, `None` when none can be had.
    fn alloc_table(&mut self) -> Option<Pfn>;
    /// Gives back the frame of a freed table.
    fn free_table(&mut self, pfn: Pfn);
}

/// Why a page-table operation failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Error)]
pub enum PgtableError {
    #[error("no frame for a {level:?} table covering {va}")]
    NoMemory { level: Level, va: VirtAddr },
    #[error("{va} is beyond the user address space")]
    OutOfRange { va: VirtAddr },
    #[error("{va} is not aligned to {align:#x}")]
    Misaligned { va: VirtAddr, align: u64 },
    #[error("block at {va} maps pfn {pfn}, not a multiple of 512")]
    MisalignedPfn { va: VirtAddr, pfn: Pfn },
    #[error("{va} lies in a PMD block")]
    CoveredByBlock { va: VirtAddr },
    #[error("a PTE table already covers the block at {va}")]
    TableInTheWay { va: VirtAddr },
    #[error("no block at {va}")]
    NotABlock { va: VirtAddr },
    #[error("the block at {va} is special (the huge zero page): use split_zero_block")]
    SpecialBlock { va: VirtAddr },
    #[error("the block at {va} is not special")]
    NotSpecialBlock { va: VirtAddr },
}

/// Entry counts, kept as entries change.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug, Default)]
pub struct PtCounts {
    /// Tables per level, indexed by [`Level::depth`].
    pub tables: [u64; LEVELS as usize],
    pub present_ptes: u64,
    pub awaiting_ptes: u64,
    pub swap_ptes: u64,
    pub blocks: u64,
    pub awaiting_blocks: u64,
}

impl PtCounts {
    pub fn total_tables(&self) -> u64 {
        self.tables.iter().sum()
    }

    fn pte(&mut self, pte: &Pte, delta: i64) {
        let slot = match pte {
            Pte::None => return,
            Pte::Present(_) => &mut self.present_ptes,
            Pte::AwaitingTagStorage(_) => &mut self.awaiting_ptes,
            Pte::Swap(_) => &mut self.swap_ptes,
        };
        *slot = slot
            .checked_add_signed(delta)
            .expect("BUG: page-table entry count underflow");
    }

    fn block(&mut self, block: &Block, delta: i64) {
        let slot = match block {
            Block::Present(_) => &mut self.blocks,
            Block::AwaitingTagStorage(_) => &mut self.awaiting_blocks,
        };
        *slot = slot
            .checked_add_signed(delta)
            .expect("BUG: block count underflow");
    }
}

/// What a PMD entry holds, as [`PageTable::pmd_slots`] lists it.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum PmdSlot {
    /// A block mapping the region.
    Block(Block),
    /// A PTE table, named by its generation: the same number, the same
    /// entries.
    Table { generation: u64 },
}

/// One broken invariant of a [`PageTable`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PgtableViolation {
    /// The root slot is empty or not a PGD.
    BadRoot { root: TableId },
    /// A table entry points to an empty arena slot.
    Dangling { parent: TableId, index: usize },
    /// A table reached at the wrong level.
    WrongLevel {
        table: TableId,
        expected: Level,
        found: Level,
    },
    /// A table reached twice.
    SharedTable { table: TableId },
    /// An allocated table the root does not reach.
    Unreachable { table: TableId, pfn: Pfn },
    /// A free-list slot that holds a table, or a missing slot.
    FreeSlot { table: TableId },
    /// Two tables charged to one frame.
    DuplicateFrame { pfn: Pfn },
    /// A table's count of non-empty entries is wrong.
    UsedCount {
        table: TableId,
        kept: u16,
        recounted: u16,
    },
    /// A block whose frame is not 2 MiB aligned.
    MisalignedBlock { va: VirtAddr, pfn: Pfn },
    /// The kept counts differ from a recount.
    Counts { kept: PtCounts, recounted: PtCounts },
}

/// An entry of a PGD or PUD table.
#[derive(Clone, Copy, PartialEq, Eq, Debug, Default)]
enum Upper {
    #[default]
    None,
    Table(TableId),
}

/// An entry of a PMD table.
#[derive(Clone, Copy, PartialEq, Eq, Debug, Default)]
enum Pmd {
    #[default]
    None,
    Table(TableId),
    Block(Block),
}

#[derive(Clone, Debug)]
enum Entries {
    Upper(Box<[Upper]>),
    Pmd(Box<[Pmd]>),
    Pte(Box<[Pte]>),
}

/// One table: its frame, level, entries and how many are non-empty.
#[derive(Clone, Debug)]
struct Table {
    pfn: Pfn,
    level: Level,
    used: u16,
    entries: Entries,
    /// Taken afresh by every mutable access to this table (as the whole
    /// table's [`PageTable::generation`]): a PTE table's number names its
    /// contents, so that a checker rescans only the tables that changed
    /// ([`PageTable::pmd_slots`]).
    generation: u64,
}

impl Table {
    fn new(pfn: Pfn, level: Level) -> Self {
        let entries = match level {
            Level::Pgd | Level::Pud => {
                Entries::Upper(vec![Upper::None; ENTRIES_PER_TABLE].into_boxed_slice())
            }
            Level::Pmd => Entries::Pmd(vec![Pmd::None; ENTRIES_PER_TABLE].into_boxed_slice()),
            Level::Pte => Entries::Pte(vec![Pte::None; ENTRIES_PER_TABLE].into_boxed_slice()),
        };
        Self {
            pfn,
            level,
            used: 0,
            entries,
            generation: super::generation::next(),
        }
    }

    fn upper(&self) -> &[Upper] {
        match &self.entries {
            Entries::Upper(e) => e,
            _ => panic!("BUG: {:?} table used as PGD/PUD", self.level),
        }
    }

    fn upper_mut(&mut self) -> &mut [Upper] {
        match &mut self.entries {
            Entries::Upper(e) => e,
            _ => panic!("BUG: {:?} table used as PGD/PUD", self.level),
        }
    }

    fn pmds(&self) -> &[Pmd] {
        match &self.entries {
            Entries::Pmd(e) => e,
            _ => panic!("BUG: {:?} table used as PMD", self.level),
        }
    }

    fn pmds_mut(&mut self) -> &mut [Pmd] {
        match &mut self.entries {
            Entries::Pmd(e) => e,
            _ => panic!("BUG: {:?} table used as PMD", self.level),
        }
    }

    fn ptes(&self) -> &[Pte] {
        match &self.entries {
            Entries::Pte(e) => e,
            _ => panic!("BUG: {:?} table used as PTE table", self.level),
        }
    }

    fn ptes_mut(&mut self) -> &mut [Pte] {
        match &mut self.entries {
            Entries::Pte(e) => e,
            _ => panic!("BUG: {:?} table used as PTE table", self.level),
        }
    }

    /// The first index at or after `from` whose entry is not empty
    /// ([`ENTRIES_PER_TABLE`] when none is).
    fn first_used_from(&self, from: usize) -> usize {
        let first = match &self.entries {
            Entries::Upper(e) => e
                .get(from..)
                .and_then(|r| r.iter().position(|x| !matches!(x, Upper::None))),
            Entries::Pmd(e) => e
                .get(from..)
                .and_then(|r| r.iter().position(|x| !matches!(x, Pmd::None))),
            Entries::Pte(e) => e
                .get(from..)
                .and_then(|r| r.iter().position(|x| !matches!(x, Pte::None))),
        };
        first.map_or(ENTRIES_PER_TABLE, |i| from + i)
    }

    /// The child table at `index`, if the entry points to one.
    fn child(&self, index: usize) -> Option<TableId> {
        match &self.entries {
            Entries::Upper(e) => match e[index] {
                Upper::Table(c) => Some(c),
                Upper::None => None,
            },
            Entries::Pmd(e) => match e[index] {
                Pmd::Table(c) => Some(c),
                Pmd::None | Pmd::Block(_) => None,
            },
            Entries::Pte(_) => None,
        }
    }

    /// Empties the entry at `index`, which points to a table.
    fn drop_child(&mut self, index: usize) {
        match &mut self.entries {
            Entries::Upper(e) => e[index] = Upper::None,
            Entries::Pmd(e) => e[index] = Pmd::None,
            Entries::Pte(_) => panic!("BUG: PTE table has no children"),
        }
        self.used = self
            .used
            .checked_sub(1)
            .expect("BUG: table use count underflow");
    }

    fn recount(&self) -> u16 {
        let n = match &self.entries {
            Entries::Upper(e) => e.iter().filter(|x| **x != Upper::None).count(),
            Entries::Pmd(e) => e.iter().filter(|x| **x != Pmd::None).count(),
            Entries::Pte(e) => e.iter().filter(|x| !x.is_none()).count(),
        };
        u16::try_from(n).expect("BUG: table larger than u16 entries")
    }
}

/// One address space's page table. Not `Clone`: its tables own frames,
/// and a copy (fork) must build new tables from new frames.
#[derive(Debug)]
pub struct PageTable {
    tables: Vec<Option<Table>>,
    free_slots: Vec<TableId>,
    root: TableId,
    counts: PtCounts,
    /// Taken afresh by every mutable access to a table
    /// ([`crate::mm::generation`]).
    generation: u64,
}

impl PageTable {
    /// A table with an empty PGD (Linux `pgd_alloc()`).
    pub fn new(frames: &mut impl TableFrames) -> Result<Self, PgtableError> {
        let pfn = frames.alloc_table().ok_or(PgtableError::NoMemory {
            level: Level::Pgd,
            va: VirtAddr::ZERO,
        })?;
        let mut counts = PtCounts::default();
        counts.tables[Level::Pgd.depth()] = 1;
        Ok(Self {
            tables: vec![Some(Table::new(pfn, Level::Pgd))],
            free_slots: Vec::new(),
            generation: super::generation::next(),
            root: TableId(0),
            counts,
        })
    }

    pub fn counts(&self) -> PtCounts {
        self.counts
    }

    /// The frames of every table, root first then in arena order.
    pub fn table_frames(&self) -> impl Iterator<Item = Pfn> + '_ {
        self.tables.iter().flatten().map(|t| t.pfn)
    }

    fn table(&self, id: TableId) -> &Table {
        self.tables[id.index()]
            .as_ref()
            .unwrap_or_else(|| panic!("BUG: {id:?} is not allocated"))
    }

    /// The generation of the tables now: equal numbers, equal tables.
    pub fn generation(&self) -> u64 {
        self.generation
    }

    fn table_mut(&mut self, id: TableId) -> &mut Table {
        let generation = super::generation::next();
        self.generation = generation;
        let table = self.tables[id.index()]
            .as_mut()
            .unwrap_or_else(|| panic!("BUG: {id:?} is not allocated"));
        table.generation = generation;
        table
    }

    /// Every non-empty PMD entry, lowest address first, with the address
    /// of its 2 MiB region: a block, or a PTE table named by its
    /// generation (equal numbers, equal entries). Visits the upper tables
    /// only; the incremental checker (`crate::machine::check`) rescans the
    /// regions whose slot changed and keeps the leaves of the others.
    pub fn pmd_slots(&self) -> Vec<(VirtAddr, PmdSlot)> {
        let mut out = Vec::new();
        let pgd = self.table(self.root);
        let mut i = pgd.first_used_from(0);
        while i < ENTRIES_PER_TABLE {
            let pud_base = i as u64 * Level::Pgd.entry_size();
            if let Upper::Table(pud) = pgd.upper()[i] {
                let pud = self.table(pud);
                let mut j = pud.first_used_from(0);
                while j < ENTRIES_PER_TABLE {
                    let pmd_base = pud_base + j as u64 * Level::Pud.entry_size();
                    if let Upper::Table(pmd) = pud.upper()[j] {
                        let pmd = self.table(pmd);
                        let mut k = pmd.first_used_from(0);
                        while k < ENTRIES_PER_TABLE {
                            let va = user_va(pmd_base + k as u64 * Level::Pmd.entry_size());
                            match pmd.pmds()[k] {
                                Pmd::Block(b) => out.push((va, PmdSlot::Block(b))),
                                Pmd::Table(t) => out.push((
                                    va,
                                    PmdSlot::Table {
                                        generation: self.table(t).generation,
                                    },
                                )),
                                Pmd::None => {}
                            }
                            k = pmd.first_used_from(k + 1);
                        }
                    }
                    j = pud.first_used_from(j + 1);
                }
            }
            i = pgd.first_used_from(i + 1);
        }
        out
    }

    fn alloc_table(
        &mut self,
        level: Level,
        va: u64,
        frames: &mut impl TableFrames,
    ) -> Result<TableId, PgtableError> {
        let pfn = frames.alloc_table().ok_or(PgtableError::NoMemory {
            level,
            va: user_va(va),
        })?;
        let table = Table::new(pfn, level);
        self.generation = super::generation::next();
        let id = match self.free_slots.pop() {
            Some(id) => {
                self.tables[id.index()] = Some(table);
                id
            }
            None => {
                let id = TableId(
                    u32::try_from(self.tables.len()).expect("BUG: page-table arena overflow"),
                );
                self.tables.push(Some(table));
                id
            }
        };
        self.counts.tables[level.depth()] += 1;
        Ok(id)
    }

    fn release_table(&mut self, id: TableId, frames: &mut impl TableFrames) {
        self.generation = super::generation::next();
        let table = self.tables[id.index()]
            .take()
            .unwrap_or_else(|| panic!("BUG: double free of {id:?}"));
        assert!(table.used == 0, "BUG: freeing non-empty {id:?}");
        self.counts.tables[table.level.depth()] -= 1;
        self.free_slots.push(id);
        frames.free_table(table.pfn);
    }

    /// The table below `parent`'s entry for `va` (a PGD or PUD), allocated
    /// if missing (Linux `p4d_alloc()`/`pud_alloc()`/`pmd_alloc()`).
    fn upper_child(
        &mut self,
        parent: TableId,
        va: u64,
        frames: &mut impl TableFrames,
    ) -> Result<TableId, PgtableError> {
        let level = self.table(parent).level;
        let index = level.index(va);
        if let Upper::Table(c) = self.table(parent).upper()[index] {
            return Ok(c);
        }
        let child_level = level.child().expect("BUG: upper table without child level");
        let child = self.alloc_table(child_level, va, frames)?;
        let t = self.table_mut(parent);
        t.upper_mut()[index] = Upper::Table(child);
        t.used += 1;
        Ok(child)
    }

    /// The PMD table for `va`, allocated if missing.
    fn pmd_table_alloc(
        &mut self,
        va: u64,
        frames: &mut impl TableFrames,
    ) -> Result<TableId, PgtableError> {
        let pud = self.upper_child(self.root, va, frames)?;
        self.upper_child(pud, va, frames)
    }

    /// The PMD table for `va`, if it exists.
    fn pmd_table(&self, va: u64) -> Option<TableId> {
        let mut id = self.root;
        for level in [Level::Pgd, Level::Pud] {
            match self.table(id).upper()[level.index(va)] {
                Upper::Table(c) => id = c,
                Upper::None => return None,
            }
        }
        Some(id)
    }

    /// The PTE table for `va`, allocated if missing (Linux `pte_alloc()`).
    fn pte_table_alloc(
        &mut self,
        va: u64,
        frames: &mut impl TableFrames,
    ) -> Result<TableId, PgtableError> {
        let pmd = self.pmd_table_alloc(va, frames)?;
        let index = Level::Pmd.index(va);
        match self.table(pmd).pmds()[index] {
            Pmd::Table(t) => Ok(t),
            Pmd::Block(_) => Err(PgtableError::CoveredByBlock { va: user_va(va) }),
            Pmd::None => {
                let t = self.alloc_table(Level::Pte, va, frames)?;
                let table = self.table_mut(pmd);
                table.pmds_mut()[index] = Pmd::Table(t);
                table.used += 1;
                Ok(t)
            }
        }
    }

    /// What maps `va` (a hardware walk): O(levels), allocation-free.
    pub fn walk(&self, va: VirtAddr) -> Walk {
        let va = va.as_u64();
        if va >= TASK_SIZE {
            return Walk::Empty { level: Level::Pgd };
        }
        let mut id = self.root;
        for level in [Level::Pgd, Level::Pud] {
            match self.table(id).upper()[level.index(va)] {
                Upper::Table(c) => id = c,
                Upper::None => return Walk::Empty { level },
            }
        }
        match self.table(id).pmds()[Level::Pmd.index(va)] {
            Pmd::None => Walk::Empty { level: Level::Pmd },
            Pmd::Block(block) => Walk::Block {
                base: user_va(va & !(PMD_SIZE - 1)),
                block,
            },
            Pmd::Table(t) => match self.table(t).ptes()[Level::Pte.index(va)] {
                Pte::None => Walk::Empty { level: Level::Pte },
                pte => Walk::Pte(pte),
            },
        }
    }

    /// Sets the access flag (`PTE_AF`, `young`) of the present leaf (PTE or
    /// block) that maps `va` to `young`, in place: what the hardware's
    /// access-flag update does on a walk (`young = true`, ARMv8.1 HAFDBS)
    /// and what `ptep_test_and_clear_young()` does for reclaim (`false`).
    /// Returns the flag's old value; `None` if no present leaf maps `va`.
    /// Never allocates; the caller flushes the TLB when clearing.
    pub fn set_young(&mut self, va: VirtAddr, young: bool) -> Option<bool> {
        let v = va.as_u64();
        if v >= TASK_SIZE {
            return None;
        }
        let pmd = self.pmd_table(v)?;
        let index = Level::Pmd.index(v);
        match self.table(pmd).pmds()[index] {
            Pmd::None => None,
            Pmd::Block(Block::Present(mut leaf)) => {
                let old = leaf.attrs.young;
                leaf.attrs.young = young;
                self.table_mut(pmd).pmds_mut()[index] = Pmd::Block(Block::Present(leaf));
                Some(old)
            }
            Pmd::Block(_) => None,
            Pmd::Table(t) => {
                let i = Level::Pte.index(v);
                match self.table(t).ptes()[i] {
                    Pte::Present(mut leaf) => {
                        let old = leaf.attrs.young;
                        leaf.attrs.young = young;
                        self.table_mut(t).ptes_mut()[i] = Pte::Present(leaf);
                        Some(old)
                    }
                    _ => None,
                }
            }
        }
    }

    /// The PTE for `va` ([`Pte::None`] also when no PTE table exists or a
    /// block covers it; use [`PageTable::walk`] to tell those apart).
    pub fn pte(&self, va: VirtAddr) -> Pte {
        match self.walk(va) {
            Walk::Pte(p) => p,
            Walk::Empty { .. } | Walk::Block { .. } => Pte::None,
        }
    }

    /// Writes the PTE for `va`, allocating the tables on the way (Linux
    /// `pte_alloc()` + `set_pte_at()`), and returns the old entry. Writing
    /// [`Pte::None`] is [`PageTable::clear_pte`].
    pub fn set_pte(
        &mut self,
        va: VirtAddr,
        pte: Pte,
        frames: &mut impl TableFrames,
    ) -> Result<Pte, PgtableError> {
        let v = check_va(va, PAGE_SIZE)?;
        if pte.is_none() {
            return self.clear_pte(va);
        }
        let t = self.pte_table_alloc(v, frames)?;
        Ok(self.replace_pte(t, Level::Pte.index(v), pte))
    }

    fn replace_pte(&mut self, t: TableId, index: usize, pte: Pte) -> Pte {
        let table = self.table_mut(t);
        let old = core::mem::replace(&mut table.ptes_mut()[index], pte);
        match (old.is_none(), pte.is_none()) {
            (true, false) => table.used += 1,
            (false, true) => table.used -= 1,
            _ => {}
        }
        self.counts.pte(&old, -1);
        self.counts.pte(&pte, 1);
        old
    }

    /// Empties the PTE for `va` and returns what it held (Linux
    /// `ptep_get_and_clear()`); never frees tables.
    pub fn clear_pte(&mut self, va: VirtAddr) -> Result<Pte, PgtableError> {
        let v = check_va(va, PAGE_SIZE)?;
        let Some(pmd) = self.pmd_table(v) else {
            return Ok(Pte::None);
        };
        match self.table(pmd).pmds()[Level::Pmd.index(v)] {
            Pmd::None => Ok(Pte::None),
            Pmd::Block(_) => Err(PgtableError::CoveredByBlock { va }),
            Pmd::Table(t) => Ok(self.replace_pte(t, Level::Pte.index(v), Pte::None)),
        }
    }

    /// Maps the 2 MiB at `va` with a block (Linux `set_pmd_at()`), allocating
    /// the upper tables; returns the block it replaced. Fails if a PTE table
    /// is there, even an empty one: Linux maps a huge page only over
    /// `pmd_none()`.
    pub fn set_block(
        &mut self,
        va: VirtAddr,
        block: Block,
        frames: &mut impl TableFrames,
    ) -> Result<Option<Block>, PgtableError> {
        let v = check_va(va, PMD_SIZE)?;
        let pfn = block.leaf().pfn;
        if !pfn.as_u64().is_multiple_of(PAGES_PER_PMD) {
            return Err(PgtableError::MisalignedPfn { va, pfn });
        }
        let pmd = self.pmd_table_alloc(v, frames)?;
        let index = Level::Pmd.index(v);
        let table = self.table_mut(pmd);
        let old = match table.pmds()[index] {
            Pmd::Table(_) => return Err(PgtableError::TableInTheWay { va }),
            Pmd::None => {
                table.used += 1;
                None
            }
            Pmd::Block(b) => Some(b),
        };
        table.pmds_mut()[index] = Pmd::Block(block);
        if let Some(b) = &old {
            self.counts.block(b, -1);
        }
        self.counts.block(&block, 1);
        Ok(old)
    }

    /// Removes the block at `va` (Linux `pmdp_huge_get_and_clear()`);
    /// `Ok(None)` if nothing is mapped there.
    pub fn clear_block(&mut self, va: VirtAddr) -> Result<Option<Block>, PgtableError> {
        let v = check_va(va, PMD_SIZE)?;
        let Some(pmd) = self.pmd_table(v) else {
            return Ok(None);
        };
        let index = Level::Pmd.index(v);
        let table = self.table_mut(pmd);
        match table.pmds()[index] {
            Pmd::None => Ok(None),
            Pmd::Table(_) => Err(PgtableError::NotABlock { va }),
            Pmd::Block(b) => {
                table.pmds_mut()[index] = Pmd::None;
                table.used -= 1;
                self.counts.block(&b, -1);
                Ok(Some(b))
            }
        }
    }

    /// Replaces the block at `va` with a PTE table of 512 entries mapping
    /// the same frames with the same attributes, in the same state (Linux
    /// `__split_huge_pmd_locked()`; a block awaiting tag storage gives PTEs
    /// awaiting it, as `set_pte_at()` would write them again). Fails for the
    /// huge zero page, which [`PageTable::split_zero_block`] splits.
    pub fn split_block(
        &mut self,
        va: VirtAddr,
        frames: &mut impl TableFrames,
    ) -> Result<(), PgtableError> {
        let block = self.block_at(va)?;
        if block.leaf().attrs.special {
            return Err(PgtableError::SpecialBlock { va });
        }
        self.install_split(va, block, frames, |leaf, i| match block {
            Block::Present(_) => Pte::Present(Leaf {
                pfn: leaf.pfn + i,
                ..leaf
            }),
            Block::AwaitingTagStorage(_) => Pte::AwaitingTagStorage(Leaf {
                pfn: leaf.pfn + i,
                ..leaf
            }),
        })
    }

    /// Replaces a huge-zero-page block at `va` with 512 PTEs mapping the
    /// zero page `zero_pfn`, special and present (Linux
    /// `__split_huge_zero_page_pmd()`: the zero page needs no tag storage
    /// fault, `mte_sync_tags()` skips special entries).
    pub fn split_zero_block(
        &mut self,
        va: VirtAddr,
        zero_pfn: Pfn,
        frames: &mut impl TableFrames,
    ) -> Result<(), PgtableError> {
        let block = self.block_at(va)?;
        if !block.leaf().attrs.special {
            return Err(PgtableError::NotSpecialBlock { va });
        }
        self.install_split(va, block, frames, |leaf, _| {
            Pte::Present(Leaf {
                pfn: zero_pfn,
                ..leaf
            })
        })
    }

    fn block_at(&self, va: VirtAddr) -> Result<Block, PgtableError> {
        let v = check_va(va, PMD_SIZE)?;
        let pmd = self.pmd_table(v).ok_or(PgtableError::NotABlock { va })?;
        match self.table(pmd).pmds()[Level::Pmd.index(v)] {
            Pmd::Block(b) => Ok(b),
            Pmd::None | Pmd::Table(_) => Err(PgtableError::NotABlock { va }),
        }
    }

    fn install_split(
        &mut self,
        va: VirtAddr,
        block: Block,
        frames: &mut impl TableFrames,
        pte_of: impl Fn(Leaf, u64) -> Pte,
    ) -> Result<(), PgtableError> {
        let v = va.as_u64();
        let t = self.alloc_table(Level::Pte, v, frames)?;
        let leaf = block.leaf();
        let mut counts = self.counts;
        {
            let table = self.table_mut(t);
            for (i, slot) in (0u64..).zip(table.ptes_mut().iter_mut()) {
                *slot = pte_of(leaf, i);
                counts.pte(slot, 1);
            }
            table.used = u16::try_from(ENTRIES_PER_TABLE).expect("BUG: table size");
        }
        counts.block(&block, -1);
        self.counts = counts;
        let pmd = self.pmd_table(v).expect("BUG: PMD table vanished");
        self.table_mut(pmd).pmds_mut()[Level::Pmd.index(v)] = Pmd::Table(t);
        Ok(())
    }

    /// Every non-empty leaf overlapping `[start, end)`, lowest address
    /// first, with the address its entry starts at (a block may start below
    /// `start`). Visits only the tables that exist.
    pub fn leaves(&self, start: VirtAddr, end: VirtAddr) -> Leaves<'_> {
        let (start, end) = (start.as_u64(), end.as_u64().min(TASK_SIZE));
        let mut it = Leaves {
            pt: self,
            start,
            end,
            stack: [(self.root, 0, 0); LEVELS as usize],
            depth: 0,
        };
        if start < end {
            it.stack[0] = (self.root, Level::Pgd.index(start), 0);
            it.depth = 1;
        }
        it
    }

    /// Frees the page tables that map only `[floor, ceiling)` and overlap
    /// `[start, end)`, which the caller has already emptied (Linux
    /// `free_pgtables()` -> `free_pgd_range()`). `[floor, ceiling)` is the
    /// gap the unmapped VMAs leave: a table reaching outside it may still
    /// serve a neighbour and is kept. The root is never freed.
    ///
    /// A freed table still holding a leaf is a bug (the caller did not unmap
    /// the range first) and panics.
    pub fn free_tables(
        &mut self,
        start: VirtAddr,
        end: VirtAddr,
        floor: VirtAddr,
        ceiling: VirtAddr,
        frames: &mut impl TableFrames,
    ) {
        let bounds = Bounds {
            start: start.as_u64(),
            end: end.as_u64().min(TASK_SIZE),
            floor: floor.as_u64(),
            ceiling: ceiling.as_u64().min(TASK_SIZE),
        };
        assert!(
            bounds.floor <= bounds.start && bounds.end <= bounds.ceiling,
            "BUG: free_tables range {start}..{end} outside {floor}..{ceiling}"
        );
        if bounds.start < bounds.end {
            self.free_in(self.root, 0, &bounds, frames);
        }
    }

    fn free_in(&mut self, id: TableId, base: u64, b: &Bounds, frames: &mut impl TableFrames) {
        let level = self.table(id).level;
        let size = level.entry_size();
        let first = if b.start > base {
            level.index(b.start)
        } else {
            0
        };
        let last = if b.end < base + level.table_span() {
            level.index(b.end - 1)
        } else {
            ENTRIES_PER_TABLE - 1
        };
        for index in first..=last {
            let Some(child) = self.table(id).child(index) else {
                continue;
            };
            let entry_va = base + index as u64 * size;
            if b.floor <= entry_va && entry_va + size <= b.ceiling {
                self.free_subtree(child, frames);
                self.table_mut(id).drop_child(index);
            } else {
                self.free_in(child, entry_va, b, frames);
            }
        }
    }

    /// Frees `id` and every table below it; they must hold no leaf.
    fn free_subtree(&mut self, id: TableId, frames: &mut impl TableFrames) {
        let table = self.table(id);
        if let Entries::Pte(ptes) = &table.entries {
            assert!(
                ptes.iter().all(Pte::is_none),
                "BUG: freeing a PTE table that still maps pages"
            );
        }
        if let Entries::Pmd(pmds) = &table.entries {
            assert!(
                !pmds.iter().any(|p| matches!(p, Pmd::Block(_))),
                "BUG: freeing a PMD table that still maps a block"
            );
        }
        for index in 0..ENTRIES_PER_TABLE {
            if let Some(child) = self.table(id).child(index) {
                self.free_subtree(child, frames);
                self.table_mut(id).drop_child(index);
            }
        }
        self.release_table(id, frames);
    }

    /// Frees every table, the root included (Linux `exit_mmap()` ->
    /// `free_pgtables()`, `pgd_free()`). The caller has unmapped everything
    /// first; a remaining leaf is a bug and panics.
    pub fn destroy(mut self, frames: &mut impl TableFrames) {
        let root = self.root;
        self.free_subtree(root, frames);
    }

    /// Every broken invariant of the module contract (empty when all hold).
    pub fn check(&self) -> Vec<PgtableViolation> {
        self.check_with(None)
    }

    /// [`PageTable::check`], recounting only the PTE tables whose
    /// generation differs from the one `memo` kept of them (a PTE table's
    /// generation names its entries and its kept count: the tally of an
    /// unchanged table is the one taken before). The upper tables, the
    /// structure and the totals are checked whole. For the incremental
    /// checker (`crate::machine::check`); the same verdict as `check`.
    pub fn check_memo(&self, memo: &mut PteCheckMemo) -> Vec<PgtableViolation> {
        self.check_with(Some(memo))
    }

    fn check_with(&self, mut memo: Option<&mut PteCheckMemo>) -> Vec<PgtableViolation> {
        let Self {
            tables,
            free_slots,
            root,
            counts,
            generation: _,
        } = self;
        let mut out = Vec::new();
        if !matches!(tables.get(root.index()), Some(Some(t)) if t.level == Level::Pgd) {
            out.push(PgtableViolation::BadRoot { root: *root });
            return out;
        }
        let mut reached = vec![false; tables.len()];
        let mut recount = PtCounts::default();
        let mut stack = vec![(*root, Level::Pgd, 0u64)];
        reached[root.index()] = true;
        while let Some((id, expected, base)) = stack.pop() {
            let table = self.table(id);
            if table.level != expected {
                out.push(PgtableViolation::WrongLevel {
                    table: id,
                    expected,
                    found: table.level,
                });
                continue;
            }
            recount.tables[table.level.depth()] += 1;
            if let Entries::Pte(ptes) = &table.entries {
                // A PTE table leads nowhere: its tally is all it adds.
                let tally = match memo.as_deref_mut() {
                    Some(memo) => memo.tally(id, table.generation, ptes),
                    None => PteTally::of(table.generation, ptes),
                };
                recount.present_ptes += tally.present;
                recount.awaiting_ptes += tally.awaiting;
                recount.swap_ptes += tally.swap;
                if tally.used != table.used {
                    out.push(PgtableViolation::UsedCount {
                        table: id,
                        kept: table.used,
                        recounted: tally.used,
                    });
                }
                continue;
            }
            let used = table.recount();
            if used != table.used {
                out.push(PgtableViolation::UsedCount {
                    table: id,
                    kept: table.used,
                    recounted: used,
                });
            }
            let size = table.level.entry_size();
            // Empty entries count nothing and lead nowhere: passed over.
            let mut next = table.first_used_from(0);
            while next < ENTRIES_PER_TABLE {
                let index = next;
                next = table.first_used_from(index + 1);
                let entry_va = base + index as u64 * size;
                match &table.entries {
                    Entries::Pte(ptes) => recount.pte(&ptes[index], 1),
                    Entries::Pmd(pmds) => {
                        if let Pmd::Block(b) = pmds[index] {
                            recount.block(&b, 1);
                            let pfn = b.leaf().pfn;
                            if !pfn.as_u64().is_multiple_of(PAGES_PER_PMD) {
                                out.push(PgtableViolation::MisalignedBlock {
                                    va: user_va(entry_va),
                                    pfn,
                                });
                            }
                        }
                    }
                    Entries::Upper(_) => {}
                }
                let Some(child) = table.child(index) else {
                    continue;
                };
                match tables.get(child.index()) {
                    Some(Some(_)) if reached[child.index()] => {
                        out.push(PgtableViolation::SharedTable { table: child });
                    }
                    Some(Some(_)) => {
                        reached[child.index()] = true;
                        let level = expected.child().expect("BUG: PTE table with a child");
                        stack.push((child, level, entry_va));
                    }
                    _ => out.push(PgtableViolation::Dangling { parent: id, index }),
                }
            }
        }
        for (i, slot) in tables.iter().enumerate() {
            if let Some(t) = slot.as_ref().filter(|_| !reached[i]) {
                out.push(PgtableViolation::Unreachable {
                    table: TableId(i as u32),
                    pfn: t.pfn,
                });
            }
        }
        for id in free_slots {
            if !matches!(tables.get(id.index()), Some(None)) {
                out.push(PgtableViolation::FreeSlot { table: *id });
            }
        }
        let mut pfns: Vec<Pfn> = self.table_frames().collect();
        pfns.sort();
        for pair in pfns.windows(2).filter(|w| w[0] == w[1]) {
            out.push(PgtableViolation::DuplicateFrame { pfn: pair[0] });
        }
        if recount != *counts {
            out.push(PgtableViolation::Counts {
                kept: *counts,
                recounted: recount,
            });
        }
        out
    }
}

/// What [`PageTable::check_memo`] keeps between checks: the tally of
/// every PTE table it counted, by table slot, with the table's generation
/// then (a slot reused by a new table has a new generation: its stale
/// tally is never taken).
#[derive(Clone, Debug, Default)]
pub struct PteCheckMemo {
    tables: Vec<Option<PteTally>>,
}

impl PteCheckMemo {
    /// The tally of PTE table `id` (`ptes`, of `generation`): the kept
    /// one if of that generation, else counted and kept.
    fn tally(&mut self, id: TableId, generation: u64, ptes: &[Pte]) -> PteTally {
        let i = id.index();
        if self.tables.len() <= i {
            self.tables.resize(i + 1, None);
        }
        match self.tables[i] {
            Some(t) if t.generation == generation => t,
            _ => {
                let t = PteTally::of(generation, ptes);
                self.tables[i] = Some(t);
                t
            }
        }
    }
}

/// One PTE table's entries counted: non-empty ones, and per kind.
#[derive(Clone, Copy, Debug)]
struct PteTally {
    generation: u64,
    used: u16,
    present: u64,
    awaiting: u64,
    swap: u64,
}

impl PteTally {
    fn of(generation: u64, ptes: &[Pte]) -> PteTally {
        let mut t = PteTally {
            generation,
            used: 0,
            present: 0,
            awaiting: 0,
            swap: 0,
        };
        for pte in ptes {
            match pte {
                Pte::None => continue,
                Pte::Present(_) => t.present += 1,
                Pte::AwaitingTagStorage(_) => t.awaiting += 1,
                Pte::Swap(_) => t.swap += 1,
            }
            t.used += 1;
        }
        t
    }
}

/// The ranges of a [`PageTable::free_tables`] call, as raw addresses.
struct Bounds {
    start: u64,
    end: u64,
    floor: u64,
    ceiling: u64,
}

/// Iterator of [`PageTable::leaves`]: a depth-first walk with one frame per
/// level (table, next index, base address), so it allocates nothing.
pub struct Leaves<'a> {
    pt: &'a PageTable,
    start: u64,
    end: u64,
    stack: [(TableId, usize, u64); LEVELS as usize],
    depth: usize,
}

impl Iterator for Leaves<'_> {
    type Item = (VirtAddr, LeafEntry);

    fn next(&mut self) -> Option<Self::Item> {
        while self.depth > 0 {
            let top = self.depth - 1;
            let (id, from, base) = self.stack[top];
            let level = Level::ALL[top];
            let table = self.pt.table(id);
            // Empty entries (most of a table) are passed over in one tight
            // loop: they yield nothing and lead nowhere.
            let index = table.first_used_from(from);
            if index >= ENTRIES_PER_TABLE {
                self.depth -= 1;
                continue;
            }
            let entry_va = base + index as u64 * level.entry_size();
            if entry_va >= self.end {
                // Entries come in address order: nothing further is in range.
                self.depth = 0;
                return None;
            }
            self.stack[top].1 = index + 1;
            let found = match &table.entries {
                Entries::Pte(ptes) => match ptes[index] {
                    Pte::None => None,
                    pte => Some(LeafEntry::Pte(pte)),
                },
                Entries::Pmd(pmds) => match pmds[index] {
                    Pmd::Block(b) => Some(LeafEntry::Block(b)),
                    Pmd::None | Pmd::Table(_) => None,
                },
                Entries::Upper(_) => None,
            };
            if let Some(leaf) = found {
                return Some((user_va(entry_va), leaf));
            }
            if let Some(child) = table.child(index) {
                let child_level = Level::ALL[top + 1];
                let first = if self.start > entry_va {
                    child_level.index(self.start)
                } else {
                    0
                };
                self.stack[top + 1] = (child, first, entry_va);
                self.depth += 1;
            }
        }
        None
    }
}

fn user_va(raw: u64) -> VirtAddr {
    VirtAddr::new(raw).expect("BUG: page-table address above 2^56")
}

/// `va` as a raw address if it is below `TASK_SIZE` and aligned to `align`.
fn check_va(va: VirtAddr, align: u64) -> Result<u64, PgtableError> {
    if va.as_u64() >= TASK_SIZE {
        return Err(PgtableError::OutOfRange { va });
    }
    if !va.is_aligned(align) {
        return Err(PgtableError::Misaligned { va, align });
    }
    Ok(va.as_u64())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mm::vma::tests::va;
    use proptest::prelude::*;
    use std::collections::{BTreeMap, BTreeSet};

    /// Frames for tables: counts allocations and frees, can run dry.
    #[derive(Default)]
    struct Frames {
        next: u64,
        live: BTreeSet<Pfn>,
        allocs: u64,
        frees: u64,
        limit: Option<u64>,
    }

    impl TableFrames for Frames {
        fn alloc_table(&mut self) -> Option<Pfn> {
            if self.limit.is_some_and(|l| self.live.len() as u64 >= l) {
                return None;
            }
            self.next += 1;
            let pfn = Pfn::new(0x1000 + self.next);
            self.live.insert(pfn);
            self.allocs += 1;
            Some(pfn)
        }

        fn free_table(&mut self, pfn: Pfn) {
            assert!(self.live.remove(&pfn), "double free of {pfn:?}");
            self.frees += 1;
        }
    }

    fn attrs(access: Access) -> LeafAttrs {
        LeafAttrs {
            access,
            tagged: false,
            special: false,
            young: true,
            dirty: false,
        }
    }

    fn present(pfn: u64) -> Pte {
        Pte::Present(Leaf {
            pfn: Pfn::new(pfn),
            attrs: attrs(Access::ReadWrite),
        })
    }

    /// The address with these indices at each level (PGD, PUD, PMD, PTE).
    fn at(pgd: u64, pud: u64, pmd: u64, pte: u64) -> VirtAddr {
        va(pgd << 39 | pud << 30 | pmd << 21 | pte << 12)
    }

    /// The slots name each PTE table by its own generation: a change of
    /// one PTE renames its table only, and a block is listed as itself.
    #[test]
    fn pmd_slots_rename_only_the_changed_pte_table() {
        let mut f = Frames::default();
        let mut pt = PageTable::new(&mut f).unwrap();
        assert_eq!(pt.pmd_slots(), vec![]);
        pt.set_pte(at(0, 0, 1, 3), present(7), &mut f).unwrap();
        pt.set_pte(at(1, 2, 5, 0), present(8), &mut f).unwrap();
        let block = Block::Present(Leaf {
            pfn: Pfn::new(0x200),
            attrs: attrs(Access::ReadOnly),
        });
        pt.set_block(at(1, 2, 7, 0), block, &mut f).unwrap();
        let before = pt.pmd_slots();
        let vas: Vec<VirtAddr> = before.iter().map(|(va, _)| *va).collect();
        assert_eq!(vas, vec![at(0, 0, 1, 0), at(1, 2, 5, 0), at(1, 2, 7, 0)]);
        assert_eq!(before[2].1, PmdSlot::Block(block));
        pt.set_pte(at(1, 2, 5, 9), present(9), &mut f).unwrap();
        let after = pt.pmd_slots();
        assert_eq!(after[0], before[0], "an untouched table keeps its name");
        assert_ne!(after[1], before[1], "the changed table is renamed");
        assert_eq!(after[2], before[2]);
        // The leaves of a region are those of the whole walk in it.
        let region: Vec<_> = pt.leaves(at(1, 2, 5, 0), at(1, 2, 6, 0)).collect();
        assert_eq!(region.len(), 2);
    }

    #[test]
    fn level_shifts_are_39_30_21_12() {
        // Arm ARM, 4 KiB granule: level 0..3 resolve VA bits 47:39, 38:30,
        // 29:21, 20:12.
        let shifts: Vec<u32> = Level::ALL.iter().map(|l| l.entry_shift()).collect();
        assert_eq!(shifts, vec![39, 30, 21, 12]);
        let v = at(1, 2, 3, 4).as_u64();
        let idx: Vec<usize> = Level::ALL.iter().map(|l| l.index(v)).collect();
        assert_eq!(idx, vec![1, 2, 3, 4]);
    }

    #[test]
    fn set_walk_clear_at_level_boundaries() {
        let mut f = Frames::default();
        let mut pt = PageTable::new(&mut f).unwrap();
        assert_eq!(f.allocs, 1);
        // The last page of the first 2 MiB region, the first page of the
        // next one, and the first page of the second 1 GiB region.
        let last_of_2m = va(PMD_SIZE - PAGE_SIZE);
        let first_of_next_2m = va(PMD_SIZE);
        let first_of_next_1g = va(1 << 30);
        pt.set_pte(last_of_2m, present(10), &mut f).unwrap();
        // PUD, PMD and PTE tables: 4 with the PGD.
        assert_eq!(f.allocs, 4);
        pt.set_pte(first_of_next_2m, present(11), &mut f).unwrap();
        // Another PTE table, same PMD table.
        assert_eq!(f.allocs, 5);
        pt.set_pte(first_of_next_1g, present(12), &mut f).unwrap();
        // Another PMD and PTE table, same PUD table.
        assert_eq!(f.allocs, 7);
        assert_eq!(pt.counts().tables, [1, 1, 2, 3]);
        assert_eq!(pt.walk(last_of_2m), Walk::Pte(present(10)));
        assert_eq!(pt.walk(first_of_next_2m), Walk::Pte(present(11)));
        assert_eq!(pt.walk(first_of_next_1g), Walk::Pte(present(12)));
        assert_eq!(
            pt.walk(va(PMD_SIZE - 2 * PAGE_SIZE)),
            Walk::Empty { level: Level::Pte }
        );
        assert_eq!(pt.walk(va(3 * PMD_SIZE)), Walk::Empty { level: Level::Pmd });
        assert_eq!(pt.walk(va(1 << 39)), Walk::Empty { level: Level::Pgd });
        assert_eq!(pt.walk(va(TASK_SIZE)), Walk::Empty { level: Level::Pgd });
        assert_eq!(pt.clear_pte(first_of_next_2m), Ok(present(11)));
        assert_eq!(pt.walk(first_of_next_2m), Walk::Empty { level: Level::Pte });
        assert_eq!(pt.counts().present_ptes, 2);
        assert!(pt.check().is_empty());
        assert_eq!(
            pt.set_pte(va(TASK_SIZE), present(1), &mut f),
            Err(PgtableError::OutOfRange { va: va(TASK_SIZE) })
        );
        assert_eq!(
            pt.set_pte(va(5), present(1), &mut f),
            Err(PgtableError::Misaligned {
                va: va(5),
                align: PAGE_SIZE
            })
        );
    }

    #[test]
    fn tables_are_freed_when_their_range_is_unmapped() {
        let mut f = Frames::default();
        let mut pt = PageTable::new(&mut f).unwrap();
        let a = at(0, 0, 0, 511);
        let b = at(0, 0, 1, 0);
        pt.set_pte(a, present(1), &mut f).unwrap();
        pt.set_pte(b, present(2), &mut f).unwrap();
        assert_eq!(f.live.len(), 5);
        pt.clear_pte(a).unwrap();
        // The gap [0, b) ends inside b's PTE table's neighbour: a's PTE table
        // (span [0, 2M)) fits and goes; the PMD table reaches past the gap.
        pt.free_tables(a, va(a.as_u64() + PAGE_SIZE), VirtAddr::ZERO, b, &mut f);
        assert_eq!(f.live.len(), 4);
        assert_eq!(pt.walk(a), Walk::Empty { level: Level::Pmd });
        assert_eq!(pt.walk(b), Walk::Pte(present(2)));
        pt.clear_pte(b).unwrap();
        // Nothing left around: the whole space is the gap.
        pt.free_tables(
            b,
            va(b.as_u64() + PAGE_SIZE),
            VirtAddr::ZERO,
            va(TASK_SIZE),
            &mut f,
        );
        assert_eq!(f.live.len(), 1);
        assert_eq!(pt.counts().tables, [1, 0, 0, 0]);
        assert!(pt.check().is_empty());
        pt.destroy(&mut f);
        assert!(f.live.is_empty());
        assert_eq!(f.allocs, f.frees);
    }

    #[test]
    fn a_table_shared_with_a_neighbour_is_kept() {
        let mut f = Frames::default();
        let mut pt = PageTable::new(&mut f).unwrap();
        let a = at(0, 0, 0, 3);
        pt.set_pte(a, present(1), &mut f).unwrap();
        pt.clear_pte(a).unwrap();
        // A neighbouring VMA starts at page 8 of the same PTE table.
        pt.free_tables(
            a,
            va(a.as_u64() + PAGE_SIZE),
            VirtAddr::ZERO,
            at(0, 0, 0, 8),
            &mut f,
        );
        assert_eq!(pt.counts().tables, [1, 1, 1, 1]);
    }

    #[test]
    #[should_panic(expected = "BUG: freeing a PTE table that still maps pages")]
    fn freeing_tables_over_mapped_pages_is_a_bug() {
        let mut f = Frames::default();
        let mut pt = PageTable::new(&mut f).unwrap();
        pt.set_pte(va(PAGE_SIZE), present(1), &mut f).unwrap();
        pt.free_tables(
            VirtAddr::ZERO,
            va(PMD_SIZE),
            VirtAddr::ZERO,
            va(TASK_SIZE),
            &mut f,
        );
    }

    #[test]
    fn check_reports_corruption() {
        let mut f = Frames::default();
        let mut pt = PageTable::new(&mut f).unwrap();
        pt.set_pte(va(PAGE_SIZE), present(1), &mut f).unwrap();
        assert!(pt.check().is_empty());
        // A block of an odd frame, written behind the API's back.
        let leaf = Leaf {
            pfn: Pfn::new(0x201),
            attrs: attrs(Access::ReadOnly),
        };
        let pmd = pt.pmd_table(0).unwrap();
        let t = pt.table_mut(pmd);
        t.pmds_mut()[1] = Pmd::Block(Block::Present(leaf));
        let found = pt.check();
        assert!(found.contains(&PgtableViolation::MisalignedBlock {
            va: va(PMD_SIZE),
            pfn: Pfn::new(0x201)
        }));
        assert!(found.contains(&PgtableViolation::UsedCount {
            table: pmd,
            kept: 1,
            recounted: 2
        }));
        assert!(
            found
                .iter()
                .any(|v| matches!(v, PgtableViolation::Counts { .. }))
        );
        // Cut the PUD table loose: it and everything below is unreachable.
        let pud = pt.table(pt.root).child(0).unwrap();
        pt.table_mut(pt.root).upper_mut()[0] = Upper::None;
        let found = pt.check();
        assert!(found.contains(&PgtableViolation::Unreachable {
            table: pud,
            pfn: pt.table(pud).pfn
        }));
    }

    /// The memoised check recounts a PTE table whose generation changed
    /// (a write through `table_mut`) and compares a kept count changed
    /// behind its back with the tally it kept: the same verdict as
    /// `check` at every step.
    #[test]
    fn check_memo_gives_the_verdict_of_check() {
        let mut f = Frames::default();
        let mut pt = PageTable::new(&mut f).unwrap();
        let mut memo = PteCheckMemo::default();
        pt.set_pte(va(PAGE_SIZE), present(1), &mut f).unwrap();
        pt.set_pte(va(PMD_SIZE), present(2), &mut f).unwrap();
        assert_eq!(pt.check_memo(&mut memo), vec![]);
        let pte_table = |pt: &PageTable, at: u64| {
            let pmd = pt.pmd_table(at).unwrap();
            match pt.table(pmd).pmds()[Level::Pmd.index(at)] {
                Pmd::Table(t) => t,
                other => panic!("no PTE table at {at:#x}: {other:?}"),
            }
        };
        let pte = pte_table(&pt, PAGE_SIZE);
        // An entry written without its count: a new generation, recounted.
        pt.table_mut(pte).ptes_mut()[2] = present(3);
        let found = pt.check();
        assert!(found.contains(&PgtableViolation::UsedCount {
            table: pte,
            kept: 1,
            recounted: 2
        }));
        assert_eq!(pt.check_memo(&mut memo), found);
        // The count put right behind the generation's back (a kept count
        // is compared with the kept tally, not taken from it).
        pt.tables[pte.index()].as_mut().unwrap().used = 2;
        let found = pt.check();
        assert!(
            !found
                .iter()
                .any(|v| matches!(v, PgtableViolation::UsedCount { .. }))
        );
        assert_eq!(pt.check_memo(&mut memo), found);
        // The other region's table was tallied once and is unchanged.
        let other = pte_table(&pt, PMD_SIZE);
        pt.tables[other.index()].as_mut().unwrap().used = 7;
        let found = pt.check();
        assert!(found.contains(&PgtableViolation::UsedCount {
            table: other,
            kept: 7,
            recounted: 1
        }));
        assert_eq!(pt.check_memo(&mut memo), found);
    }

    #[test]
    fn failed_table_allocation_reports_the_level() {
        let mut f = Frames {
            limit: Some(2),
            ..Frames::default()
        };
        let mut pt = PageTable::new(&mut f).unwrap();
        // PGD + PUD fit, the PMD table does not.
        assert_eq!(
            pt.set_pte(va(PAGE_SIZE), present(1), &mut f),
            Err(PgtableError::NoMemory {
                level: Level::Pmd,
                va: va(PAGE_SIZE)
            })
        );
        assert!(pt.check().is_empty());
    }

    #[test]
    fn blocks_map_2m_and_split_into_512_ptes() {
        let mut f = Frames::default();
        let mut pt = PageTable::new(&mut f).unwrap();
        let base = va(4 * PMD_SIZE);
        let leaf = Leaf {
            pfn: Pfn::new(0x200),
            attrs: LeafAttrs {
                tagged: true,
                dirty: true,
                ..attrs(Access::ReadWrite)
            },
        };
        assert_eq!(
            pt.set_block(va(PAGE_SIZE), Block::Present(leaf), &mut f),
            Err(PgtableError::Misaligned {
                va: va(PAGE_SIZE),
                align: PMD_SIZE
            })
        );
        let bad = Leaf {
            pfn: Pfn::new(0x201),
            ..leaf
        };
        assert_eq!(
            pt.set_block(base, Block::Present(bad), &mut f),
            Err(PgtableError::MisalignedPfn {
                va: base,
                pfn: Pfn::new(0x201)
            })
        );
        assert_eq!(pt.set_block(base, Block::Present(leaf), &mut f), Ok(None));
        let inside = va(base.as_u64() + 5 * PAGE_SIZE);
        assert_eq!(
            pt.walk(inside),
            Walk::Block {
                base,
                block: Block::Present(leaf)
            }
        );
        assert_eq!(
            pt.set_pte(inside, present(1), &mut f),
            Err(PgtableError::CoveredByBlock { va: inside })
        );
        let tables = f.allocs;
        pt.split_block(base, &mut f).unwrap();
        assert_eq!(f.allocs, tables + 1);
        // __split_huge_pmd_locked(): PTE i maps pfn + i with the block's
        // attributes.
        for i in [0u64, 1, 5, 511] {
            assert_eq!(
                pt.walk(va(base.as_u64() + i * PAGE_SIZE)),
                Walk::Pte(Pte::Present(Leaf {
                    pfn: Pfn::new(0x200 + i),
                    ..leaf
                }))
            );
        }
        assert_eq!(pt.counts().present_ptes, 512);
        assert_eq!(pt.counts().blocks, 0);
        assert!(pt.check().is_empty());
        // With a PTE table there, a block cannot go back.
        assert_eq!(
            pt.set_block(base, Block::Present(leaf), &mut f),
            Err(PgtableError::TableInTheWay { va: base })
        );
    }

    #[test]
    fn awaiting_blocks_split_into_awaiting_ptes_and_zero_blocks_into_the_zero_page() {
        let mut f = Frames::default();
        let mut pt = PageTable::new(&mut f).unwrap();
        let leaf = Leaf {
            pfn: Pfn::new(0x400),
            attrs: LeafAttrs {
                tagged: true,
                ..attrs(Access::ReadWrite)
            },
        };
        pt.set_block(VirtAddr::ZERO, Block::AwaitingTagStorage(leaf), &mut f)
            .unwrap();
        assert_eq!(pt.counts().awaiting_blocks, 1);
        pt.split_block(VirtAddr::ZERO, &mut f).unwrap();
        assert_eq!(
            pt.pte(va(3 * PAGE_SIZE)),
            Pte::AwaitingTagStorage(Leaf {
                pfn: Pfn::new(0x403),
                ..leaf
            })
        );
        assert_eq!(pt.counts().awaiting_ptes, 512);

        let huge_zero = Leaf {
            pfn: Pfn::new(0x800),
            attrs: LeafAttrs {
                special: true,
                ..attrs(Access::ReadOnly)
            },
        };
        let base = va(PMD_SIZE);
        pt.set_block(base, Block::Present(huge_zero), &mut f)
            .unwrap();
        assert_eq!(
            pt.split_block(base, &mut f),
            Err(PgtableError::SpecialBlock { va: base })
        );
        let zero = Pfn::new(0x77);
        pt.split_zero_block(base, zero, &mut f).unwrap();
        assert_eq!(
            pt.pte(va(PMD_SIZE + 511 * PAGE_SIZE)),
            Pte::Present(Leaf {
                pfn: zero,
                ..huge_zero
            })
        );
        assert!(pt.check().is_empty());
    }

    #[test]
    fn leaves_visit_only_what_is_mapped_in_range() {
        let mut f = Frames::default();
        let mut pt = PageTable::new(&mut f).unwrap();
        let swap = Pte::Swap(SwapSlot::new(9));
        pt.set_pte(at(0, 0, 0, 1), present(1), &mut f).unwrap();
        pt.set_pte(at(0, 0, 0, 2), swap, &mut f).unwrap();
        let leaf = Leaf {
            pfn: Pfn::new(0x200),
            attrs: attrs(Access::ReadOnly),
        };
        pt.set_block(at(0, 0, 1, 0), Block::Present(leaf), &mut f)
            .unwrap();
        pt.set_pte(at(0, 1, 0, 0), present(3), &mut f).unwrap();
        pt.set_pte(at(511, 511, 511, 511), present(4), &mut f)
            .unwrap();
        let all: Vec<_> = pt.leaves(VirtAddr::ZERO, va(TASK_SIZE)).collect();
        assert_eq!(
            all,
            vec![
                (at(0, 0, 0, 1), LeafEntry::Pte(present(1))),
                (at(0, 0, 0, 2), LeafEntry::Pte(swap)),
                (at(0, 0, 1, 0), LeafEntry::Block(Block::Present(leaf))),
                (at(0, 1, 0, 0), LeafEntry::Pte(present(3))),
                (at(511, 511, 511, 511), LeafEntry::Pte(present(4))),
            ]
        );
        // A range starting inside the block reports the block at its base.
        let some: Vec<VirtAddr> = pt
            .leaves(at(0, 0, 1, 7), at(0, 1, 0, 1))
            .map(|(a, _)| a)
            .collect();
        assert_eq!(some, vec![at(0, 0, 1, 0), at(0, 1, 0, 0)]);
        assert_eq!(pt.leaves(at(0, 0, 0, 3), at(0, 0, 1, 0)).count(), 0);
    }

    #[derive(Clone, Copy, Debug, PartialEq)]
    enum Model {
        Pte(Pte),
        Block(Block),
    }

    #[derive(Clone, Debug)]
    enum Op {
        Set(u64, u8),
        Clear(u64),
        SetBlock(u64, bool),
        ClearBlock(u64),
        Split(u64),
        Free(u64, u64),
    }

    /// Page addresses clustered at level boundaries: indices 0, 1, 510 and
    /// 511 at each of the four levels.
    fn boundary_page(code: u64) -> VirtAddr {
        let pick = |c: u64| [0u64, 1, 510, 511][(c & 3) as usize];
        at(
            pick(code),
            pick(code >> 2),
            pick(code >> 4),
            pick(code >> 6),
        )
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            4 => (0u64..256, 0u8..4).prop_map(|(a, k)| Op::Set(a, k)),
            2 => (0u64..256).prop_map(Op::Clear),
            1 => (0u64..64, any::<bool>()).prop_map(|(a, w)| Op::SetBlock(a, w)),
            1 => (0u64..64).prop_map(Op::ClearBlock),
            1 => (0u64..64).prop_map(Op::Split),
            1 => (0u64..256, 0u64..256).prop_map(|(a, b)| Op::Free(a, b)),
        ]
    }

    fn pte_of(kind: u8, n: u64) -> Pte {
        let leaf = Leaf {
            pfn: Pfn::new(n),
            attrs: attrs(Access::ReadOnly),
        };
        match kind {
            0 => Pte::Present(leaf),
            1 => Pte::AwaitingTagStorage(leaf),
            2 => Pte::Swap(SwapSlot::new(n)),
            _ => Pte::Present(Leaf {
                attrs: attrs(Access::None),
                ..leaf
            }),
        }
    }

    /// Block addresses at the boundaries of the upper three levels.
    fn block_base(code: u64) -> VirtAddr {
        boundary_page(code & 63)
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]

        #[test]
        fn agrees_with_a_map_of_entries(ops in proptest::collection::vec(op(), 1..120)) {
            let mut f = Frames::default();
            let mut pt = PageTable::new(&mut f).unwrap();
            let mut model: BTreeMap<u64, Model> = BTreeMap::new();
            let mut memo = PteCheckMemo::default();
            // 2 MiB regions that have a PTE table (even an empty one).
            let mut pte_tables: BTreeSet<u64> = BTreeSet::new();
            let block_of = |m: &BTreeMap<u64, Model>, v: u64| {
                matches!(m.get(&(v & !(PMD_SIZE - 1))), Some(Model::Block(_)))
            };
            for (n, op) in ops.into_iter().enumerate() {
                let n = n as u64 * PAGES_PER_PMD;
                match op {
                    Op::Set(a, kind) => {
                        let v = boundary_page(a);
                        let pte = pte_of(kind, n);
                        let r = pt.set_pte(v, pte, &mut f);
                        if block_of(&model, v.as_u64()) {
                            prop_assert_eq!(r, Err(PgtableError::CoveredByBlock { va: v }));
                        } else {
                            let old = model.insert(v.as_u64(), Model::Pte(pte));
                            let old = old.map_or(Pte::None, |m| match m { Model::Pte(p) => p, Model::Block(_) => unreachable!() });
                            prop_assert_eq!(r, Ok(old));
                            pte_tables.insert(v.as_u64() & !(PMD_SIZE - 1));
                        }
                    }
                    Op::Clear(a) => {
                        let v = boundary_page(a);
                        let r = pt.clear_pte(v);
                        if block_of(&model, v.as_u64()) {
                            prop_assert_eq!(r, Err(PgtableError::CoveredByBlock { va: v }));
                        } else {
                            let old = model.remove(&v.as_u64()).map_or(Pte::None, |m| match m { Model::Pte(p) => p, Model::Block(_) => unreachable!() });
                            prop_assert_eq!(r, Ok(old));
                        }
                    }
                    Op::SetBlock(a, awaiting) => {
                        let base = block_base(a);
                        let leaf = Leaf { pfn: Pfn::new(n), attrs: attrs(Access::ReadWrite) };
                        let block = if awaiting { Block::AwaitingTagStorage(leaf) } else { Block::Present(leaf) };
                        let r = pt.set_block(base, block, &mut f);
                        if pte_tables.contains(&base.as_u64()) {
                            prop_assert_eq!(r, Err(PgtableError::TableInTheWay { va: base }));
                        } else {
                            let old = model.insert(base.as_u64(), Model::Block(block));
                            let old = old.map(|m| match m { Model::Block(b) => b, Model::Pte(_) => unreachable!() });
                            prop_assert_eq!(r, Ok(old));
                        }
                    }
                    Op::ClearBlock(a) => {
                        let base = block_base(a);
                        let r = pt.clear_block(base);
                        if pte_tables.contains(&base.as_u64()) {
                            prop_assert_eq!(r, Err(PgtableError::NotABlock { va: base }));
                        } else {
                            let old = model.remove(&base.as_u64()).map(|m| match m { Model::Block(b) => b, Model::Pte(_) => unreachable!() });
                            prop_assert_eq!(r, Ok(old));
                        }
                    }
                    Op::Split(a) => {
                        let base = block_base(a);
                        let r = pt.split_block(base, &mut f);
                        match model.get(&base.as_u64()).copied() {
                            Some(Model::Block(b)) => {
                                prop_assert_eq!(r, Ok(()));
                                model.remove(&base.as_u64());
                                pte_tables.insert(base.as_u64());
                                for i in 0..PAGES_PER_PMD {
                                    let l = Leaf { pfn: b.leaf().pfn + i, ..b.leaf() };
                                    let pte = match b { Block::Present(_) => Pte::Present(l), Block::AwaitingTagStorage(_) => Pte::AwaitingTagStorage(l) };
                                    model.insert(base.as_u64() + i * PAGE_SIZE, Model::Pte(pte));
                                }
                            }
                            _ => prop_assert_eq!(r, Err(PgtableError::NotABlock { va: base })),
                        }
                    }
                    Op::Free(a, b) => {
                        // A range of whole 2 MiB regions, unmapped first as
                        // munmap does, then freed with itself as the gap.
                        let (x, y) = (boundary_page(a).as_u64(), boundary_page(b).as_u64());
                        let lo = x.min(y) & !(PMD_SIZE - 1);
                        let hi = (x.max(y) & !(PMD_SIZE - 1)) + PMD_SIZE;
                        let inside: Vec<(u64, Model)> = model.range(lo..hi).map(|(k, m)| (*k, *m)).collect();
                        for (k, m) in inside {
                            model.remove(&k);
                            match m {
                                Model::Pte(_) => { pt.clear_pte(va(k)).unwrap(); }
                                Model::Block(_) => { pt.clear_block(va(k)).unwrap(); }
                            }
                        }
                        pt.free_tables(va(lo), va(hi), va(lo), va(hi), &mut f);
                        pte_tables.retain(|&r| !(lo <= r && r < hi));
                    }
                }
                prop_assert_eq!(pt.check(), vec![]);
                prop_assert_eq!(pt.check_memo(&mut memo), vec![]);
                let leaves: Vec<(u64, Model)> = pt
                    .leaves(VirtAddr::ZERO, va(TASK_SIZE))
                    .map(|(a, e)| (a.as_u64(), match e { LeafEntry::Pte(p) => Model::Pte(p), LeafEntry::Block(b) => Model::Block(b) }))
                    .collect();
                let expected: Vec<(u64, Model)> = model.iter().map(|(k, m)| (*k, *m)).collect();
                prop_assert_eq!(leaves, expected);
                for (&k, m) in &model {
                    let w = pt.walk(va(k));
                    match m {
                        Model::Pte(p) => prop_assert_eq!(w, Walk::Pte(*p)),
                        Model::Block(b) => prop_assert_eq!(w, Walk::Block { base: va(k), block: *b }),
                    }
                }
                prop_assert_eq!(f.live.len() as u64, pt.counts().total_tables());
            }
            // Tear everything down: every table but the root goes back.
            let all: Vec<(u64, Model)> = model.iter().map(|(k, m)| (*k, *m)).collect();
            for (k, m) in all {
                match m {
                    Model::Pte(_) => { pt.clear_pte(va(k)).unwrap(); }
                    Model::Block(_) => { pt.clear_block(va(k)).unwrap(); }
                }
            }
            pt.free_tables(VirtAddr::ZERO, va(TASK_SIZE), VirtAddr::ZERO, va(TASK_SIZE), &mut f);
            prop_assert_eq!(pt.counts().tables, [1, 0, 0, 0]);
            prop_assert_eq!(pt.check(), vec![]);
            pt.destroy(&mut f);
            prop_assert!(f.live.is_empty());
            prop_assert_eq!(f.allocs, f.frees);
        }
    }
}
