//! Address spaces: the data structures a process's memory is described by
//! (`docs/model.md` §2 "Address spaces").
//!
//! Owns, module by module:
//! - [`layout`]: the geometry of a user address space (page and table sizes,
//!   `TASK_SIZE`, `mmap_base`), the one place those numbers are defined.
//! - [`vma`]: virtual memory areas ([`Vma`], [`VmFlags`]) and the per-process
//!   tree of them ([`VmaTree`]) with Linux's split and merge rules.
//! - [`mmap`]: the system calls over a [`VmaTree`]: `get_unmapped_area`,
//!   `mmap`, `munmap`, `mprotect` and `madvise`, validated as Linux does.
//! - [`pgtable`]: a 4-level page table with 2 MiB block entries whose table
//!   nodes are charged to physical frames ([`PageTable`], [`TableFrames`]).
//! - [`rmap`]: the reverse map from a frame to every mapping of it
//!   ([`Rmap`]).
//! - the identifiers every one of them uses: [`MmId`], [`AnonId`],
//!   [`ObjectId`], [`SwapSlot`], [`Pgoff`], and [`IdAlloc`] to hand them out.
//!
//! These are pure data structures: no faults, no allocation policy, no
//! locking and no `async`. The fault paths and the system-call glue build on
//! them; each operation here returns what the caller must do to the pages
//! (the VMAs it removed, the ranges whose flags it changed).

pub(crate) mod generation;
pub mod layout;
pub mod mmap;
pub mod pgtable;
pub mod rmap;
pub mod vma;

#[cfg(test)]
mod vma_model_tests;

pub use mmap::{
    FlagChange, MapSource, Mapped, MmapRequest, Placement, RangeOutcome, ThpAlign, Unmapped,
    VmaError,
};
pub use pgtable::{
    Access, Block, Leaf, LeafAttrs, LeafEntry, Leaves, Level, PageTable, PgtableError,
    PgtableViolation, PmdSlot, PtCounts, Pte, PteCheckMemo, TableFrames, TableId, Walk,
};
pub use rmap::{MapLevel, Rmap, RmapEntry, RmapError, RmapViolation};
pub use vma::{
    AnonChain, AnonVma, FlagRule, MteSupport, Overcommit, VmConfig, VmFlags, Vma, VmaBacking,
    VmaTree, VmaViolation,
};

use core::fmt;
use core::marker::PhantomData;

/// Defines an identifier newtype: a `u64` handed out by an [`IdAlloc`],
/// compared and ordered by value, printed as `Name(0x..)`.
macro_rules! id_type {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
        pub struct $name(u64);

        impl $name {
            pub const fn new(raw: u64) -> Self {
                Self(raw)
            }

            pub const fn get(self) -> u64 {
                self.0
            }
        }

        impl Id for $name {
            fn from_raw(raw: u64) -> Self {
                Self(raw)
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, concat!(stringify!($name), "({:#x})"), self.0)
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{:#x}", self.0)
            }
        }
    };
}

/// An identifier [`IdAlloc`] can hand out.
pub trait Id: Copy {
    fn from_raw(raw: u64) -> Self;
}

id_type!(
    /// An address space (Linux: `struct mm_struct`).
    MmId
);
id_type!(
    /// An anonymous-memory reverse-map anchor (Linux: `struct anon_vma`).
    /// VMAs that carry the same id may hold the same anonymous pages; see
    /// [`vma`] for when two VMAs share one.
    AnonId
);
id_type!(
    /// A memory object a mapping can show: a shmem (tmpfs) file, the shmem
    /// object behind a shared anonymous mapping, or a regular file (Linux:
    /// `struct address_space` of the `vm_file`).
    ObjectId
);
id_type!(
    /// A slot of the swap device (Linux: the offset of a `swp_entry_t`; the
    /// model has one swap device, so the type field is implicit).
    SwapSlot
);

/// A page index within a memory object (Linux: `pgoff_t`, `vm_pgoff`).
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Pgoff(u64);

impl Pgoff {
    pub const ZERO: Pgoff = Pgoff(0);

    pub const fn new(pages: u64) -> Self {
        Self(pages)
    }

    pub const fn get(self) -> u64 {
        self.0
    }

    /// `self + pages`, `None` on overflow.
    pub const fn checked_add(self, pages: u64) -> Option<Pgoff> {
        match self.0.checked_add(pages) {
            Some(p) => Some(Pgoff(p)),
            None => None,
        }
    }
}

impl fmt::Debug for Pgoff {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Pgoff({:#x})", self.0)
    }
}

/// A source of fresh identifiers of one kind. Ids count up from 1 and are
/// never reused, so a stale id can never alias a live object.
#[derive(Clone)]
pub struct IdAlloc<T> {
    next: u64,
    kind: PhantomData<T>,
}

impl<T: Id> IdAlloc<T> {
    pub const fn new() -> Self {
        Self {
            next: 1,
            kind: PhantomData,
        }
    }

    pub fn alloc(&mut self) -> T {
        let id = T::from_raw(self.next);
        self.next = self
            .next
            .checked_add(1)
            .expect("BUG: identifier space exhausted");
        id
    }
}

impl<T: Id> Default for IdAlloc<T> {
    fn default() -> Self {
        Self::new()
    }
}

impl<T> fmt::Debug for IdAlloc<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "IdAlloc(next={:#x})", self.next)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_count_up_from_one_and_print_in_hex() {
        let mut ids = IdAlloc::<AnonId>::new();
        assert_eq!(ids.alloc(), AnonId::new(1));
        assert_eq!(ids.alloc(), AnonId::new(2));
        assert_eq!(format!("{:?}", AnonId::new(0x1f)), "AnonId(0x1f)");
        assert_eq!(format!("{:?}", SwapSlot::new(16)), "SwapSlot(0x10)");
        assert_eq!(format!("{:?}", Pgoff::new(3)), "Pgoff(0x3)");
    }
}
