//! Property test of the physical memory manager against a simple model: the
//! live allocations with the words and tags written to them, whether their
//! tag storage is reserved, and their pins. Random sequences of allocate
//! (tagged or not, movable or not), free, write data, write tags, initialise
//! tags, pin, unpin and reserve run on small machines of every policy. After
//! every step the layer's checker must find nothing, every live allocation
//! must hold what the model says (data pages in CMA move when their block is
//! reserved: the model follows the mover's log, and nothing may be lost), and
//! the counters must match a count made from the model alone.

use super::*;
use proptest::prelude::*;
use std::collections::{BTreeMap, BTreeSet};
use tagstore::Storage;

#[derive(Clone, Debug)]
enum Op {
    Alloc {
        order: u8,
        movable: bool,
        tagged: bool,
    },
    Free {
        pick: usize,
    },
    WriteData {
        pick: usize,
        page: u64,
        word: u64,
        value: u64,
    },
    WriteTag {
        pick: usize,
        page: u64,
        granule: u64,
        tag: u8,
    },
    InitTags {
        pick: usize,
    },
    Pin {
        pick: usize,
    },
    Unpin {
        pick: usize,
    },
    Reserve {
        pick: usize,
    },
}

fn op() -> impl Strategy<Value = Op> {
    let order = prop_oneof![12 => 0u8..=3, 1 => Just(9u8)];
    prop_oneof![
        8 => (order, any::<bool>(), any::<bool>()).prop_map(|(order, movable, tagged)| Op::Alloc {
            order,
            movable: movable || tagged,
            tagged,
        }),
        3 => any::<usize>().prop_map(|pick| Op::Free { pick }),
        4 => (any::<usize>(), any::<u64>(), 0u64..512, 1u64..).prop_map(|(pick, page, word, value)| {
            Op::WriteData { pick, page, word, value }
        }),
        3 => (any::<usize>(), any::<u64>(), 0u64..256, 0u8..16).prop_map(|(pick, page, granule, tag)| {
            Op::WriteTag { pick, page, granule, tag }
        }),
        2 => any::<usize>().prop_map(|pick| Op::InitTags { pick }),
        1 => any::<usize>().prop_map(|pick| Op::Pin { pick }),
        1 => any::<usize>().prop_map(|pick| Op::Unpin { pick }),
        2 => any::<usize>().prop_map(|pick| Op::Reserve { pick }),
    ]
}

/// One live allocation as the model sees it.
#[derive(Debug)]
struct Live {
    pfn: Pfn,
    order: Order,
    /// (page, word) -> value written there.
    data: BTreeMap<(u64, u64), u64>,
    /// The tags of each page once initialised (the frames are Tagged).
    tags: Option<Vec<Vec<Tag>>>,
    reserved: bool,
    pins: u32,
}

impl Live {
    fn frames(&self) -> impl Iterator<Item = Pfn> + '_ {
        (0..self.order.pages()).map(|i| self.pfn + i)
    }
}

/// The machines, small so that data, tagged pages and tag blocks collide,
/// and how many kernel pages were allocated before the operations.
///
/// With 2 MiB of DRAM (one pageblock, frames 0x80000..0x80200) the zero
/// page's pageblock is claimed for the first movable request. Kernel pages
/// first fill the rest of the zero page's block (0x80001..0x80020 with 4 KiB
/// blocks, ..0x80040 with 8 KiB ones), so tagged pages start in block 1,
/// whose frame 0x80201 is where `prefer` puts the first data page.
fn machine(which: u8) -> (Sched, Memory, u64) {
    let (policy, data, memory, block_size) = match which {
        0 => (Design::DYNAMIC, TagStorageData::Prefer, 2 << 20, 4 << 10),
        1 => (Design::DYNAMIC, TagStorageData::Prefer, 2 << 20, 8 << 10),
        2 => (Design::DYNAMIC, TagStorageData::Balance, 4 << 20, 16 << 10),
        3 => (Design::DYNAMIC, TagStorageData::Never, 2 << 20, 4 << 10),
        4 => (Design::STATIC, TagStorageData::Prefer, 4 << 20, 4 << 10),
        _ => (Design::NONE, TagStorageData::Prefer, 4 << 20, 4 << 10),
    };
    let mut s = spec(policy, data);
    s.memory = memory;
    s.block_size = Some(block_size);
    let platform = Platform::from_spec(&s).unwrap();
    let sched = Sched::new();
    let config = MemConfig {
        section_shift: Some(10),
        ..MemConfig::default()
    };
    let mem = Memory::with_config(&platform, &sched, config).unwrap();
    let prefill = match which {
        0 => 31,
        1 => 63,
        _ => 0,
    };
    for _ in 0..prefill {
        mem.alloc(Order::new(0), Gfp::KERNEL).unwrap();
    }
    (sched, mem, prefill)
}

/// Follows the pages a reservation moved out of its blocks.
fn follow(live: &mut [Live], mover: FrameMover) {
    for (src, dst) in mover.moved {
        let live = live
            .iter_mut()
            .find(|l| l.pfn == src)
            .expect("a moved page is a live allocation");
        assert!(live.tags.is_none() && !live.reserved, "moved a tagged page");
        live.pfn = dst;
    }
}

struct Harness {
    sched: Sched,
    mem: Memory,
    /// Kernel pages allocated before the operations, never freed.
    prefill: u64,
    live: Vec<Live>,
}

impl Harness {
    fn pick(&self, pick: usize) -> Option<usize> {
        (!self.live.is_empty()).then(|| pick % self.live.len())
    }

    fn step(&mut self, op: &Op) {
        let mem = &self.mem;
        let policy = mem.policy();
        match *op {
            Op::Alloc {
                order,
                movable,
                tagged,
            } => {
                let order = Order::new(order);
                if tagged {
                    let mut mover = FrameMover::default();
                    let got = run(
                        &self.sched,
                        mem.alloc_tagged(order, Gfp::USER_TAGGED, &mut mover),
                    );
                    follow(&mut self.live, mover);
                    let Ok(page) = got else { return };
                    assert!(mem.geometry().is_dram(page.pfn), "tagged page from CMA");
                    match policy.rules().storage {
                        Storage::None => assert!(!page.reserved()),
                        // A cleancache claim only drops copies: never fails.
                        Storage::CarvedOut | Storage::Cleancache => assert!(page.reserved()),
                        Storage::Lent => {}
                    }
                    let tags = page
                        .reserved()
                        .then(|| vec![vec![Tag::ZERO; 256]; order.pages() as usize]);
                    self.live.push(Live {
                        pfn: page.pfn,
                        order,
                        data: BTreeMap::new(),
                        tags,
                        reserved: page.reserved(),
                        pins: 0,
                    });
                } else {
                    let gfp = if movable { Gfp::USER } else { Gfp::KERNEL };
                    let Ok(pfn) = mem.alloc(order, gfp) else {
                        return;
                    };
                    if !movable {
                        assert!(mem.geometry().is_dram(pfn), "unmovable page from CMA");
                    }
                    self.live.push(Live {
                        pfn,
                        order,
                        data: BTreeMap::new(),
                        tags: None,
                        reserved: false,
                        pins: 0,
                    });
                }
            }
            Op::Free { pick } => {
                let Some(i) = self.pick(pick) else { return };
                let (pfn, order, pins) = (self.live[i].pfn, self.live[i].order, self.live[i].pins);
                let got = run(&self.sched, mem.free(pfn, order));
                if pins > 0 {
                    assert!(
                        matches!(
                            got,
                            Err(MemFreeError::Phys(FreeError::BadPage {
                                bad: crate::phys::BadPage::Pinned { .. },
                                ..
                            }))
                        ),
                        "{got:?}"
                    );
                } else {
                    got.unwrap();
                    self.live.swap_remove(i);
                }
            }
            Op::WriteData {
                pick,
                page,
                word,
                value,
            } => {
                let Some(i) = self.pick(pick) else { return };
                let live = &mut self.live[i];
                let page = page % live.order.pages();
                let addr = PhysAddr::new((live.pfn + page).addr(12).as_u64() + word * 8);
                mem.phys_mut().contents.write_u64(addr, value).unwrap();
                live.data.insert((page, word), value);
            }
            Op::WriteTag {
                pick,
                page,
                granule,
                tag,
            } => {
                let Some(i) = self.pick(pick) else { return };
                let live = &mut self.live[i];
                let page = page % live.order.pages();
                // Only tagged pages get tags written (a write elsewhere is
                // the bug the clobber test shows).
                let Some(tags) = live.tags.as_mut() else {
                    return;
                };
                let addr = PhysAddr::new((live.pfn + page).addr(12).as_u64() + granule * 16);
                let tag = Tag::new(tag).unwrap();
                mem.write_tag(addr, tag).unwrap();
                tags[page as usize][granule as usize] = tag;
            }
            Op::InitTags { pick } => {
                let Some(i) = self.pick(pick) else { return };
                let live = &mut self.live[i];
                if !live.reserved {
                    return;
                }
                let mut tags = live
                    .tags
                    .take()
                    .unwrap_or_else(|| vec![vec![Tag::ZERO; 256]; live.order.pages() as usize]);
                for (page, frame) in live.frames().enumerate() {
                    let did = run(&self.sched, mem.init_page_tags_once(frame)).unwrap();
                    if did {
                        tags[page] = vec![Tag::ZERO; 256];
                    }
                }
                live.tags = Some(tags);
            }
            Op::Pin { pick } => {
                let Some(i) = self.pick(pick) else { return };
                let live = &mut self.live[i];
                mem.phys_mut().alloc.frame_mut(live.pfn).unwrap().pins += 1;
                live.pins += 1;
            }
            Op::Unpin { pick } => {
                let Some(i) = self.pick(pick) else { return };
                let live = &mut self.live[i];
                if live.pins > 0 {
                    mem.phys_mut().alloc.frame_mut(live.pfn).unwrap().pins -= 1;
                    live.pins -= 1;
                }
            }
            Op::Reserve { pick } => {
                let Some(i) = self.pick(pick) else { return };
                let (pfn, order) = (self.live[i].pfn, self.live[i].order);
                let failures = mem.counters().tag_storage_reserve_failures;
                let mut mover = FrameMover::default();
                let got = run(&self.sched, mem.reserve_tag_storage(pfn, order, &mut mover));
                follow(&mut self.live, mover);
                let in_tag_storage = mem.geometry().is_tag_storage(pfn);
                let after = mem.counters().tag_storage_reserve_failures;
                match got {
                    Ok(()) => {
                        assert!(!in_tag_storage && policy != Design::NONE);
                        self.live[i].reserved = true;
                    }
                    Err(ReserveTagError::TagStorage(ReserveError::NoTagStorage)) => {
                        assert_eq!(policy, Design::NONE);
                    }
                    Err(ReserveTagError::TagStorage(ReserveError::Range(_))) => {
                        assert!(in_tag_storage);
                        assert_eq!(after, failures, "a refusal is not a failure");
                    }
                    Err(ReserveTagError::TagStorage(ReserveError::Claim { .. })) => {
                        assert_eq!(policy, Design::DYNAMIC);
                        assert_eq!(after, failures + 1);
                    }
                    Err(e) => panic!("unexpected {e:?}"),
                }
            }
        }
    }

    /// Everything the model knows, compared with the machine.
    fn verify(&self) {
        let mem = &self.mem;
        let v = mem.check();
        assert!(v.is_empty(), "violations: {v:#?}");
        let g = mem.geometry();
        let mte = mem.policy() != Design::NONE;
        let mut used = self.prefill;
        let mut tagged = u64::from(mte);
        let mut in_cma = 0;
        let mut blocks = BTreeSet::new();
        if mte {
            blocks.insert(g.block_of(mem.zero_page()).unwrap());
        }
        for live in &self.live {
            used += live.order.pages();
            if g.is_tag_storage(live.pfn) {
                in_cma += live.order.pages();
            }
            for (&(page, word), &value) in &live.data {
                let addr = PhysAddr::new((live.pfn + page).addr(12).as_u64() + word * 8);
                assert_eq!(
                    mem.phys().contents.read_u64(addr),
                    Ok(value),
                    "{live:?} lost a word"
                );
            }
            for (page, frame) in live.frames().enumerate() {
                assert_eq!(mem.tag_storage_reserved(frame), live.reserved, "{live:?}");
                assert_eq!(mem.page_mte_tagged(frame), live.tags.is_some(), "{live:?}");
                if let Some(tags) = &live.tags {
                    assert_eq!(mem.read_page_tags(frame).unwrap(), tags[page], "{live:?}");
                    tagged += 1;
                }
                if live.reserved {
                    blocks.insert(g.block_of(frame).unwrap());
                }
            }
        }
        let c = mem.counters();
        assert_eq!(c.pages_tagged, tagged);
        assert_eq!(c.tag_storage_data_pages, in_cma);
        let (dram, tag_pages) = (g.dram_pages(), g.tag_storage_pages());
        let expected_free = match mem.policy().rules().storage {
            Storage::Lent => {
                assert_eq!(c.tag_storage_reserved, blocks.len() as u64);
                dram + tag_pages - 1 - used - blocks.len() as u64 * g.block_pages()
            }
            Storage::CarvedOut => {
                assert_eq!(c.tag_storage_reserved, g.tag_blocks());
                dram - 1 - used
            }
            // Tag storage is never the allocator's.
            Storage::Cleancache => {
                assert_eq!(c.tag_storage_reserved, blocks.len() as u64);
                dram - 1 - used
            }
            Storage::None => {
                assert_eq!(c.tag_storage_reserved, 0);
                dram - 1 - used
            }
        };
        assert_eq!(c.mem_free, expected_free);
        assert_eq!(
            c.tag_storage_reservations - c.tag_storage_releases,
            c.tag_storage_reserved
        );
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn random_operations_keep_every_invariant(
        which in prop_oneof![3 => 0u8..2, 1 => 2u8..6],
        ops in prop::collection::vec(op(), 50..150),
    ) {
        let (sched, mem, prefill) = machine(which);
        let mut h = Harness { sched, mem, prefill, live: Vec::new() };
        h.verify();
        for op in &ops {
            h.step(op);
            h.verify();
        }
        // Freeing everything (unpinned) returns every block but the zero
        // page's and every frame.
        for live in std::mem::take(&mut h.live) {
            if live.pins > 0 {
                h.mem.phys_mut().alloc.frame_mut(live.pfn).unwrap().pins = 0;
            }
            run(&h.sched, h.mem.free(live.pfn, live.order)).unwrap();
        }
        h.verify();
        let c = h.mem.counters();
        let g = h.mem.geometry();
        match h.mem.policy().rules().storage {
            Storage::Lent => {
                prop_assert_eq!(c.tag_storage_reserved, 1);
                prop_assert_eq!(
                    c.mem_free,
                    g.dram_pages() + g.tag_storage_pages() - 1 - h.prefill - g.block_pages()
                );
            }
            _ => prop_assert_eq!(c.mem_free, g.dram_pages() - 1 - h.prefill),
        }
    }
}
