//! The designs a machine can run, and the questions the kernel asks them.
//!
//! A [`Design`] names one way of managing tag storage (`tag-storage=` on a
//! platform line): its [`Rules`], which answer every question the kernel has
//! to decide (is there MTE at all, what the tag storage frames are while no
//! tags need them, may a reservation be made where sleeping is forbidden,
//! what the fault on an entry awaiting tag storage does when the
//! reservation fails), and the constructor of its manager. The kernel never
//! asks which design runs: it reads the rules and calls the manager.
//!
//! # Adding a design
//!
//! Write the manager type in a module of its own (implementing
//! [`TagStorage`]), give it a `pub(crate) const DESIGN: DesignEntry`, and
//! add that one line to [`DESIGNS`]. The platform line (`tag-storage=NAME`),
//! `--set tag-storage=NAME` on every command that builds a machine, the
//! differential fuzzer (`mtesim fuzz --set tag-storage=NAME`) and the error
//! message listing the names pick it up from there.

use core::fmt;

use mte::Geometry;

use crate::{Manager, TagStoreConfig};

/// What the tag storage frames are while no tags need them.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Storage {
    /// The machine has no tag storage (and no MTE).
    None,
    /// Carved out at boot and never usable for data (mainline Linux).
    CarvedOut,
    /// Lent to the page allocator as CMA memory: movable, untagged data may
    /// live there until a block is claimed for tags (the RFC's design).
    Lent,
    /// Never given to the page allocator: while a block holds no tags, its
    /// frames hold clean copies of page-cache pages that reclaim evicted (a
    /// cleancache). Claiming a block drops the copies it holds: no
    /// migration, never waits, never fails.
    Cleancache,
}

/// What the fault on an entry awaiting tag storage does when the
/// reservation fails after its retries.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum OnReserveFailure {
    /// Migrate the faulting page to a page allocated tagged elsewhere, whose
    /// storage is reserved there (RFC v3 `replace_folio_with_tagged()`), and
    /// replay the access. Never loses data and never loops.
    MigrateFaultingPage,
    /// Retry the reservation and replay the access, never migrating the
    /// faulting page unless it lies in tag storage itself (RFC v2 patch 21).
    /// A block that can never be claimed (a page of it held by a short-term
    /// pin) keeps the access replaying: the liveness check reports it and
    /// the command ends `stuck`.
    RetryAndReplay,
}

/// Where a tagged allocation's tag storage is reserved.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum ReserveAt {
    /// After the page is allocated, best effort (RFC v3 `arch_alloc_page()`
    /// from `post_alloc_hook()`): a failure leaves the page without storage,
    /// to be mapped awaiting it.
    AfterAllocation,
    /// Inside the allocation (RFC v2 `arch_prep_new_page()`): a page whose
    /// reservation fails goes back to the buddy allocator and the allocator
    /// tries the next one.
    InAllocation,
}

/// Where the page allocator takes the frames of a tagged allocation.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum TaggedPlacement {
    /// Wherever the buddy allocator finds them; the tag storage is reserved
    /// afterwards (the RFC's `post_alloc_hook()`).
    Anywhere,
    /// Only from frames whose tag storage the design already holds, in the
    /// order [`crate::TagStorage::tagged_placement`] gives; when none is free
    /// the kernel asks [`crate::TagStorage::refill`] to make some, and falls
    /// back to [`TaggedPlacement::Anywhere`] only when that made none (XNU's
    /// tagged grab from ACTIVE cells, Google's tagged free list).
    HeldStorage,
}

/// The answers a design gives the kernel; fixed for the machine's life.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct Rules {
    pub storage: Storage,
    /// A reservation never sleeps and never fails, so the kernel reserves
    /// when it maps a page tagged (`set_pte_at()`, under the page-table
    /// lock) instead of writing an entry awaiting tag storage.
    pub reserve_in_atomic: bool,
    pub on_reserve_failure: OnReserveFailure,
    pub tagged_placement: TaggedPlacement,
    pub reserve_at: ReserveAt,
}

impl Rules {
    /// Whether the machine has MTE: `PROT_MTE` is refused without it.
    pub const fn mte(&self) -> bool {
        !matches!(self.storage, Storage::None)
    }

    /// Whether tag storage frames serve as ordinary (CMA) memory.
    pub const fn lends_storage(&self) -> bool {
        matches!(self.storage, Storage::Lent)
    }

    /// Whether tag storage frames keep clean page-cache copies that reclaim
    /// hands over and a fault reads back.
    pub const fn keeps_cleancache(&self) -> bool {
        matches!(self.storage, Storage::Cleancache)
    }
}

/// One registered design.
pub struct DesignEntry {
    /// The `tag-storage=` value.
    pub name: &'static str,
    /// One line for listings and `--help`.
    pub summary: &'static str,
    pub rules: Rules,
    pub(crate) build: fn(&Geometry, TagStoreConfig) -> Manager,
    /// The known mistakes the design has built in, by their `mistake=`
    /// names (`docs/designs.md`, "Known mistakes"): the platform switches
    /// them on as if the platform line said so, together with its own.
    /// Names, because the mistakes' switch lives above this crate.
    pub mistakes: &'static [&'static str],
}

impl DesignEntry {
    pub(crate) const fn new(
        name: &'static str,
        summary: &'static str,
        rules: Rules,
        build: fn(&Geometry, TagStoreConfig) -> Manager,
    ) -> Self {
        Self {
            name,
            summary,
            rules,
            build,
            mistakes: &[],
        }
    }

    /// The same design with `mistakes` built in (see [`Self::mistakes`]).
    pub(crate) const fn with_mistakes(self, mistakes: &'static [&'static str]) -> Self {
        Self { mistakes, ..self }
    }
}

/// Every design, in the order listings show them. The first three are the
/// [`Design`] constants.
pub static DESIGNS: [DesignEntry; 8] = [
    crate::none::DESIGN,
    crate::carveout::DESIGN,
    crate::dynamic::DESIGN,
    crate::rfc_v3::DESIGN,
    crate::rfc_v2::DESIGN,
    crate::google::DESIGN,
    crate::xnu::DESIGN,
    crate::cleancache::DESIGN,
];

/// A handle to one registered design.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Design(u8);

impl Design {
    /// `none`: no MTE.
    pub const NONE: Design = Design(0);
    /// `static`: tag storage carved out at boot.
    pub const STATIC: Design = Design(1);
    /// `dynamic`: the RFC v3 design with its known mistakes fixed (the
    /// default).
    pub const DYNAMIC: Design = Design(2);

    /// Every registered design.
    pub fn all() -> impl Iterator<Item = Design> {
        (0..DESIGNS.len()).map(|i| Design(i as u8))
    }

    /// The design a `tag-storage=` value names.
    pub fn by_name(name: &str) -> Option<Design> {
        Design::all().find(|d| d.name() == name)
    }

    /// The names, for error messages: "`none`, `static` or `dynamic`".
    pub fn names() -> String {
        let names: Vec<String> = Design::all().map(|d| format!("`{}`", d.name())).collect();
        match names.split_last() {
            Some((last, rest)) if !rest.is_empty() => format!("{} or {last}", rest.join(", ")),
            _ => names.concat(),
        }
    }

    fn entry(self) -> &'static DesignEntry {
        &DESIGNS[usize::from(self.0)]
    }

    pub fn name(self) -> &'static str {
        self.entry().name
    }

    pub fn summary(self) -> &'static str {
        self.entry().summary
    }

    pub fn rules(self) -> Rules {
        self.entry().rules
    }

    /// The known mistakes built into the design, by name (see
    /// [`DesignEntry::mistakes`]).
    pub fn mistakes(self) -> &'static [&'static str] {
        self.entry().mistakes
    }

    /// A manager of this design for a machine of `geometry`.
    pub fn build(self, geometry: &Geometry, config: TagStoreConfig) -> Manager {
        (self.entry().build)(geometry, config)
    }
}

impl Default for Design {
    fn default() -> Self {
        Design::DYNAMIC
    }
}

impl fmt::Debug for Design {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Design({})", self.name())
    }
}

impl fmt::Display for Design {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_unique_and_the_constants_name_their_designs() {
        let names: Vec<&str> = Design::all().map(Design::name).collect();
        let mut sorted = names.clone();
        sorted.sort_unstable();
        sorted.dedup();
        assert_eq!(sorted.len(), names.len(), "{names:?}");
        assert_eq!(Design::NONE.name(), "none");
        assert_eq!(Design::STATIC.name(), "static");
        assert_eq!(Design::DYNAMIC.name(), "dynamic");
        assert_eq!(Design::by_name("dynamic"), Some(Design::DYNAMIC));
        assert_eq!(Design::by_name("bogus"), None);
        assert_eq!(
            Design::names(),
            "`none`, `static`, `dynamic`, `rfc-v3`, `rfc-v2`, `google`, `xnu` or `cleancache`"
        );
    }

    #[test]
    fn the_rules_of_the_first_designs() {
        assert!(!Design::NONE.rules().mte());
        let fixed = Design::STATIC.rules();
        assert!(fixed.mte() && !fixed.lends_storage() && fixed.reserve_in_atomic);
        let dynamic = Design::DYNAMIC.rules();
        assert!(dynamic.mte() && dynamic.lends_storage() && !dynamic.reserve_in_atomic);
        assert!(Design::DYNAMIC.mistakes().is_empty());
    }

    #[test]
    fn rfc_v3_is_dynamic_with_its_three_mistakes() {
        let v3 = Design::by_name("rfc-v3").unwrap();
        assert_eq!(v3.rules(), Design::DYNAMIC.rules());
        assert_eq!(
            v3.mistakes(),
            ["huge-zero-page", "atomic-alloc", "tags-by-pfn"]
        );
    }
}
