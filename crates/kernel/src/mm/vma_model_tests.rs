//! Property tests of the VMA layer against a model with no VMAs at all: a
//! map from page number to the page's flags and backing. After every
//! `mmap`, `munmap`, `mprotect`, `madvise`, first fault (`anon_vma_prepare`)
//! and fork, the tree must agree with the model page by page, pass its own
//! checker, and be maximally merged where Linux guarantees it (two adjacent
//! compatible VMAs without anon_vmas always merge). The same operations
//! replayed must give the same tree.

use super::layout::{MMAP_BASE, PAGE_SIZE, PMD_SIZE, page_index};
use super::mmap::{MapSource, MmapRequest, Placement};
use super::vma::{MteSupport, Overcommit, VmConfig, VmFlags, VmaBacking, VmaTree};
use super::{AnonId, IdAlloc, ObjectId, Pgoff};
use mte::VirtAddr;
use proptest::prelude::*;
use std::collections::BTreeMap;
use uapi::{Advice, Errno, Prot, Sharing};

/// What the model knows of one page.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct PageState {
    flags: VmFlags,
    backing: ModelBacking,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum ModelBacking {
    Anon,
    Shm(ObjectId, u64),
    File(ObjectId, u64),
}

/// The fixed-mapping window: 48 pages at 256 MiB.
const LOW_BASE: u64 = 0x1000_0000 / PAGE_SIZE;
const LOW_PAGES: u64 = 48;
/// The window below mmap_base where top-down mappings land.
const HIGH_PAGES: u64 = 1200;
const HIGH_BASE: u64 = MMAP_BASE / PAGE_SIZE - HIGH_PAGES;

#[derive(Clone, Copy, Debug)]
struct Range {
    high: bool,
    offset: u64,
    pages: u64,
}

impl Range {
    fn start(self) -> u64 {
        if self.high {
            HIGH_BASE + self.offset
        } else {
            LOW_BASE + self.offset
        }
    }
}

#[derive(Clone, Debug)]
enum Op {
    Mmap {
        fixed: Option<u64>,
        pages: u64,
        prot: Prot,
        kind: u8,
    },
    Munmap(Range),
    Mprotect(Range, Prot),
    Madvise(Range, Advice),
    Fault(Range),
    Fork,
}

fn prot() -> impl Strategy<Value = Prot> {
    (any::<bool>(), any::<bool>(), any::<bool>(), 0u8..4).prop_map(|(read, write, exec, m)| Prot {
        read,
        write,
        exec,
        mte: m == 0,
    })
}

fn range() -> impl Strategy<Value = Range> {
    prop_oneof![
        (0u64..LOW_PAGES, 1u64..12).prop_map(|(offset, pages)| Range {
            high: false,
            offset,
            pages
        }),
        (HIGH_PAGES - 40..HIGH_PAGES, 1u64..12).prop_map(|(offset, pages)| Range {
            high: true,
            offset,
            pages
        }),
    ]
}

fn advice() -> impl Strategy<Value = Advice> {
    prop_oneof![
        Just(Advice::DontNeed),
        Just(Advice::PageOut),
        Just(Advice::HugePage),
        Just(Advice::NoHugePage),
        Just(Advice::Mergeable),
        Just(Advice::Unmergeable),
    ]
}

fn op() -> impl Strategy<Value = Op> {
    let pages = prop_oneof![9 => 1u64..8, 1 => Just(PMD_SIZE / PAGE_SIZE + 3)];
    prop_oneof![
        4 => (proptest::option::of(0u64..LOW_PAGES), pages, prot(), 0u8..6)
            .prop_map(|(fixed, pages, prot, kind)| Op::Mmap { fixed, pages, prot, kind }),
        2 => range().prop_map(Op::Munmap),
        3 => (range(), prot()).prop_map(|(r, p)| Op::Mprotect(r, p)),
        2 => (range(), advice()).prop_map(|(r, a)| Op::Madvise(r, a)),
        1 => range().prop_map(Op::Fault),
        1 => Just(Op::Fork),
    ]
}

fn va_of(page: u64) -> VirtAddr {
    VirtAddr::new(page * PAGE_SIZE).unwrap()
}

struct World {
    tree: VmaTree,
    model: BTreeMap<u64, PageState>,
    anon_ids: IdAlloc<AnonId>,
    objects: IdAlloc<ObjectId>,
}

impl World {
    fn new() -> Self {
        Self {
            tree: VmaTree::new(VmConfig {
                mte: MteSupport::Present,
                overcommit: Overcommit::Always,
            }),
            model: BTreeMap::new(),
            anon_ids: IdAlloc::new(),
            objects: IdAlloc::new(),
        }
    }

    fn apply(&mut self, op: &Op) -> Result<(), TestCaseError> {
        match *op {
            Op::Mmap {
                fixed,
                pages,
                prot,
                kind,
            } => self.mmap(fixed, pages, prot, kind)?,
            Op::Munmap(r) => {
                let u = self.tree.munmap(va_of(r.start()), r.pages * PAGE_SIZE);
                prop_assert!(u.is_ok());
                for p in r.start()..r.start() + r.pages {
                    self.model.remove(&p);
                }
            }
            Op::Mprotect(r, prot) => {
                let out = self
                    .tree
                    .mprotect(va_of(r.start()), r.pages * PAGE_SIZE, prot);
                let expected = self.model_mprotect(r, prot);
                prop_assert_eq!(out.result(), expected);
            }
            Op::Madvise(r, advice) => {
                let out = self
                    .tree
                    .madvise(va_of(r.start()), r.pages * PAGE_SIZE, advice);
                let expected = self.model_madvise(r, advice);
                prop_assert_eq!(out.result(), expected);
            }
            Op::Fault(r) => {
                let addr = va_of(r.start());
                if self.tree.find(addr).is_some_and(|v| !v.is_shared()) {
                    let id = self.tree.prepare_anon(addr, &mut self.anon_ids);
                    prop_assert_eq!(
                        self.tree.find(addr).and_then(|v| v.anon).map(|a| a.id),
                        Some(id)
                    );
                }
            }
            Op::Fork => self.tree = self.tree.fork(&mut self.anon_ids),
        }
        Ok(())
    }

    fn mmap(
        &mut self,
        fixed: Option<u64>,
        pages: u64,
        prot: Prot,
        kind: u8,
    ) -> Result<(), TestCaseError> {
        let sharing = if kind.is_multiple_of(2) {
            Sharing::Private
        } else {
            Sharing::Shared
        };
        let object = self.objects.alloc();
        let source = match kind / 2 {
            0 if sharing == Sharing::Private => MapSource::Anon { shmem: None },
            0 => MapSource::Anon {
                shmem: Some(object),
            },
            1 => MapSource::Shm {
                object,
                pgoff: Pgoff::ZERO,
            },
            _ => MapSource::File {
                object,
                pgoff: Pgoff::ZERO,
            },
        };
        let placement = fixed.map_or(Placement::Anywhere, |o| {
            Placement::Fixed(va_of(LOW_BASE + o))
        });
        let len = pages * PAGE_SIZE;
        let result = self.tree.mmap(MmapRequest {
            placement,
            len,
            prot,
            sharing,
            source,
        });
        let is_file = matches!(source, MapSource::File { .. });
        if prot.mte && is_file {
            prop_assert_eq!(result.map(|_| ()).map_err(|e| e.errno()), Err(Errno::Inval));
            return Ok(());
        }
        let mapped = result.map_err(|e| TestCaseError::fail(format!("mmap failed: {e}")))?;
        let first = page_index(mapped.addr);
        if let Some(o) = fixed {
            prop_assert_eq!(first, LOW_BASE + o);
            for p in first..first + pages {
                self.model.remove(&p);
            }
        } else {
            prop_assert!(self.model.range(first..first + pages).next().is_none());
            prop_assert!(mapped.addr.as_u64() + len <= MMAP_BASE);
            let thp = matches!(
                source,
                MapSource::Anon { shmem: None } | MapSource::File { .. }
            );
            if thp && len >= PMD_SIZE {
                // thp_get_unmapped_area(): 2 MiB aligned while room is plenty.
                prop_assert!(mapped.addr.is_aligned(PMD_SIZE));
            }
        }
        let mut flags = VmFlags::from_prot(prot, MteSupport::Present);
        if sharing == Sharing::Shared {
            flags |= VmFlags::SHARED;
        }
        if !is_file {
            flags |= VmFlags::MTE_ALLOWED;
        }
        if sharing == Sharing::Private && prot.write {
            flags |= VmFlags::ACCOUNT;
        }
        for (i, p) in (first..first + pages).enumerate() {
            let backing = match source {
                MapSource::Anon { shmem: None } => ModelBacking::Anon,
                MapSource::Anon { shmem: Some(o) } | MapSource::Shm { object: o, .. } => {
                    ModelBacking::Shm(o, i as u64)
                }
                MapSource::File { object: o, .. } => ModelBacking::File(o, i as u64),
            };
            self.model.insert(p, PageState { flags, backing });
        }
        Ok(())
    }

    /// mprotect page by page: stop at the first hole or refused page.
    fn model_mprotect(&mut self, r: Range, prot: Prot) -> Result<(), Errno> {
        let requested = VmFlags::from_prot(prot, MteSupport::Present);
        for p in r.start()..r.start() + r.pages {
            let Some(state) = self.model.get_mut(&p) else {
                return Err(Errno::NoMem);
            };
            let old = state.flags;
            let mut new = requested.union(old.difference(VmFlags::ACCESS));
            if new.contains(VmFlags::MTE) && !new.contains(VmFlags::MTE_ALLOWED) {
                return Err(Errno::Inval);
            }
            if new != old
                && new.contains(VmFlags::WRITE)
                && !old.intersects(VmFlags::ACCOUNT | VmFlags::WRITE | VmFlags::SHARED)
            {
                new |= VmFlags::ACCOUNT;
            }
            state.flags = new;
        }
        Ok(())
    }

    /// madvise page by page: holes are skipped and reported.
    fn model_madvise(&mut self, r: Range, advice: Advice) -> Result<(), Errno> {
        let mut hole = false;
        for p in r.start()..r.start() + r.pages {
            let Some(state) = self.model.get_mut(&p) else {
                hole = true;
                continue;
            };
            let f = state.flags;
            state.flags = match advice {
                Advice::DontNeed | Advice::PageOut => f,
                Advice::HugePage => f.difference(VmFlags::NOHUGEPAGE) | VmFlags::HUGEPAGE,
                Advice::NoHugePage => f.difference(VmFlags::HUGEPAGE) | VmFlags::NOHUGEPAGE,
                Advice::Mergeable if f.contains(VmFlags::SHARED) => f,
                Advice::Mergeable => f | VmFlags::MERGEABLE,
                Advice::Unmergeable => f.difference(VmFlags::MERGEABLE),
            };
        }
        if hole { Err(Errno::NoMem) } else { Ok(()) }
    }

    fn agree(&self) -> Result<(), TestCaseError> {
        prop_assert_eq!(self.tree.check(), vec![]);
        let mut pages = BTreeMap::new();
        for vma in self.tree.iter() {
            for p in page_index(vma.start)..page_index(vma.end) {
                let backing = match vma.backing {
                    VmaBacking::Anon => ModelBacking::Anon,
                    VmaBacking::Shm { object, .. } => {
                        ModelBacking::Shm(object, vma.pgoff_of(va_of(p)).get())
                    }
                    VmaBacking::File { object, .. } => {
                        ModelBacking::File(object, vma.pgoff_of(va_of(p)).get())
                    }
                };
                pages.insert(
                    p,
                    PageState {
                        flags: vma.flags,
                        backing,
                    },
                );
            }
        }
        prop_assert_eq!(&pages, &self.model);
        let vmas: Vec<_> = self.tree.iter().collect();
        for pair in vmas.windows(2) {
            let (a, b) = (pair[0], pair[1]);
            let same_object = match (a.backing, b.backing) {
                (VmaBacking::Anon, VmaBacking::Anon) => true,
                (VmaBacking::Shm { object: x, .. }, VmaBacking::Shm { object: y, .. })
                | (VmaBacking::File { object: x, .. }, VmaBacking::File { object: y, .. }) => {
                    x == y
                }
                _ => false,
            };
            let mergeable = a.end == b.start
                && a.flags == b.flags
                && same_object
                && a.pgoff().checked_add(a.pages()) == Some(b.pgoff())
                && a.anon.is_none()
                && b.anon.is_none();
            prop_assert!(!mergeable, "unmerged neighbours {:?} {:?}", a, b);
        }
        Ok(())
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn vma_tree_agrees_with_a_page_model(ops in proptest::collection::vec(op(), 1..60)) {
        let mut world = World::new();
        for op in &ops {
            world.apply(op)?;
            world.agree()?;
        }
        let mut replay = World::new();
        for op in &ops {
            replay.apply(op)?;
        }
        let a: Vec<_> = world.tree.iter().copied().collect();
        let b: Vec<_> = replay.tree.iter().copied().collect();
        prop_assert_eq!(a, b);
    }
}
