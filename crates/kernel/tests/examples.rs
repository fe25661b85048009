//! The runnable examples of `examples/*.mte`, op by op, with every
//! outcome and expectation of the file asserted (and the invariants after
//! every op, which the files check only where they say `expect invariants`).

mod common;

use common::*;
use mte::{CheckMode, TagStoreOp};
use uapi::{Backing, Command, Counter, Outcome, PageState, Prot, Sharing};

/// check-modes.mte
#[test]
fn check_modes() {
    let mut d = Driver::new(&[("memory", "64M")]);
    let p = d.spawn();
    d.sync_mte(p);
    let a = d.mmap(p, 4096, rw_mte(), anon());
    assert_eq!(
        d.outcome(
            p,
            Command::SetTag {
                ptr: at(a, 0, Some(7)),
                len: 64
            }
        ),
        Outcome::Ok
    );
    assert_eq!(
        d.store(p, at(a, 0, Some(3)), 8, 0x42),
        sync_fault(at(a, 0, Some(3)))
    );
    assert_eq!(d.load(p, at(a, 0, Some(7)), 8), Outcome::Value(0));

    d.tcf(p, CheckMode::Async);
    assert_eq!(d.store(p, at(a, 0, Some(3)), 8, 0x42), Outcome::Ok);
    assert_eq!(d.load(p, at(a, 0, Some(7)), 8), Outcome::Value(0x42));
    assert_eq!(d.outcome(p, Command::Yield), async_fault());
    assert_eq!(d.outcome(p, Command::Yield), Outcome::Ok);

    d.tcf(p, CheckMode::Asymm);
    assert_eq!(
        d.load(p, at(a, 0, Some(3)), 8),
        sync_fault(at(a, 0, Some(3)))
    );
    assert_eq!(d.store(p, at(a, 0, Some(3)), 8, 0x43), Outcome::Ok);
    assert_eq!(d.outcome(p, Command::Yield), async_fault());
    assert_eq!(d.load(p, at(a, 0, Some(7)), 8), Outcome::Value(0x43));

    d.tcf(p, CheckMode::None);
    assert_eq!(d.load(p, at(a, 0, Some(3)), 8), Outcome::Value(0x43));
    let u = d.mmap(p, 4096, Prot::READ_WRITE, anon());
    d.tcf(p, CheckMode::Sync);
    assert_eq!(d.load(p, at(u, 0, Some(9)), 8), Outcome::Value(0));
    assert_eq!(
        d.outcome(
            p,
            Command::StoreTag {
                op: TagStoreOp::Stg,
                ptr: at(u, 0, Some(9))
            }
        ),
        Outcome::Ok
    );
    assert_eq!(d.outcome(p, Command::Ldg { ptr: u }), Outcome::Tag(tag(0)));
    // Two sync faults reported (store, then the asymm load); two async.
    assert_eq!(d.stat(Counter::TcfSync), 2);
    assert_eq!(d.stat(Counter::TcfAsync), 2);
}

/// fork-cow-tags.mte
#[test]
fn fork_cow_tags() {
    let mut d = Driver::new(&[("memory", "64M")]);
    let p = d.spawn();
    d.sync_mte(p);
    let a = d.mmap(p, 4096, rw_mte(), anon());
    d.ok(
        p,
        Command::SetTag {
            ptr: at(a, 0, Some(7)),
            len: 4096,
        },
    );
    d.ok(
        p,
        Command::Fill {
            ptr: at(a, 0, Some(7)),
            len: 4096,
            byte: 0x11,
        },
    );
    let c = d.fork(p);
    assert!(d.page(c, a, PageState::Shared), "fork shares the page");
    assert_eq!(
        d.load(c, at(a, 0, Some(7)), 8),
        Outcome::Value(0x1111_1111_1111_1111)
    );
    assert_eq!(
        d.load(c, at(a, 0, Some(3)), 8),
        sync_fault(at(a, 0, Some(3)))
    );
    d.ok(
        c,
        Command::SetTag {
            ptr: at(a, 0, Some(9)),
            len: 16,
        },
    );
    assert!(
        d.page(c, a, PageState::Private),
        "the tag write copied the page"
    );
    assert!(d.page(p, a, PageState::Private));
    assert_eq!(d.outcome(c, Command::Ldg { ptr: a }), Outcome::Tag(tag(9)));
    assert_eq!(
        d.load(c, at(a, 16, Some(7)), 8),
        Outcome::Value(0x1111_1111_1111_1111)
    );
    assert_eq!(d.outcome(p, Command::Ldg { ptr: a }), Outcome::Tag(tag(7)));
    assert_eq!(
        d.load(p, at(a, 0, Some(7)), 8),
        Outcome::Value(0x1111_1111_1111_1111)
    );
    assert_eq!(
        d.outcome(
            c,
            Command::PeekTags {
                target: p,
                ptr: a,
                granules: 2
            }
        ),
        Outcome::Tags(vec![tag(7), tag(7)])
    );
    assert_eq!(
        d.outcome(
            p,
            Command::PeekTags {
                target: c,
                ptr: a,
                granules: 2
            }
        ),
        Outcome::Tags(vec![tag(9), tag(7)])
    );
    assert!(d.stat(Counter::FaultCow) >= 1);
}

/// zero-page-block.mte
#[test]
fn zero_page_block() {
    let mut d = Driver::new(&[("memory", "64M"), ("tag-storage", "dynamic")]);
    assert_eq!(d.stat(Counter::TagStorageBlocks), 512);
    assert_eq!(d.stat(Counter::TagStorageReserved), 1);
    let p = d.spawn();
    d.sync_mte(p);
    let buf = d.mmap(p, 64 << 10, rw_mte(), anon());
    assert_eq!(d.load(p, buf, 8), Outcome::Value(0));
    assert!(d.page(p, buf, PageState::ZeroPage));
    assert_eq!(
        d.outcome(
            p,
            Command::Ldg {
                ptr: at(buf, 0x30, None)
            }
        ),
        Outcome::Tag(tag(0))
    );
    assert_eq!(
        d.load(p, at(buf, 0x40, Some(3)), 8),
        sync_fault(at(buf, 0x40, Some(3)))
    );
    assert_eq!(d.stat(Counter::TagStorageReserved), 1);

    d.ok(
        p,
        Command::StoreTag {
            op: TagStoreOp::Stg,
            ptr: at(buf, 0, Some(5)),
        },
    );
    assert!(d.page(p, buf, PageState::Private));
    assert!(d.page(p, buf, PageState::Tagged));
    assert_eq!(
        d.outcome(p, Command::Ldg { ptr: buf }),
        Outcome::Tag(tag(5))
    );
    assert_eq!(d.load(p, at(buf, 0, Some(5)), 8), Outcome::Value(0));
    assert_eq!(d.load(p, buf, 8), sync_fault(buf));
    assert_eq!(
        d.outcome(
            p,
            Command::Ldg {
                ptr: at(buf, 0x10, None)
            }
        ),
        Outcome::Tag(tag(0))
    );
    assert!(d.stat(Counter::FaultCow) >= 1);

    d.ok(
        p,
        Command::Munmap {
            ptr: buf,
            len: 64 << 10,
        },
    );
    assert_eq!(d.stat(Counter::TagStorageReserved), 1);
}

/// block-refcount.mte
#[test]
fn block_refcount() {
    let mut d = Driver::new(&[
        ("memory", "64M"),
        ("tag-storage", "dynamic"),
        ("block-size", "4K"),
    ]);
    let p = d.spawn();
    d.sync_mte(p);
    let big = d.mmap(
        p,
        1 << 20,
        rw_mte(),
        flags(Sharing::Private, Backing::Anon, true),
    );
    assert!(d.stat(Counter::PagesTagged) >= 257);
    assert!(d.stat(Counter::TagStorageReserved) >= 8);
    d.ok(
        p,
        Command::Munmap {
            ptr: big,
            len: 512 << 10,
        },
    );
    d.ok(
        p,
        Command::Munmap {
            ptr: at(big, 512 << 10, None),
            len: 512 << 10,
        },
    );
    assert_eq!(d.stat(Counter::TagStorageReserved), 1);
    assert!(d.stat(Counter::TagStorageReleases) >= 8);

    d.mmap(
        p,
        1 << 20,
        Prot::READ_WRITE,
        flags(Sharing::Private, Backing::Anon, true),
    );
    assert_eq!(d.stat(Counter::TagStorageReserved), 1);
    d.ok(p, Command::Exit);
    assert_eq!(d.stat(Counter::TagStorageReserved), 1);
}

/// mprotect-tag-storage-page.mte
#[test]
fn mprotect_tag_storage_page() {
    let mut d = Driver::new(&[
        ("memory", "64M"),
        ("tag-storage", "dynamic"),
        ("tag-storage-data", "prefer"),
    ]);
    let p = d.spawn();
    d.sync_mte(p);
    let a = d.mmap(p, 16 << 10, Prot::READ_WRITE, anon());
    d.ok(
        p,
        Command::Fill {
            ptr: a,
            len: 16 << 10,
            byte: 0xab,
        },
    );
    assert!(d.page(p, a, PageState::InTagStorage));
    d.ok(
        p,
        Command::Mprotect {
            ptr: a,
            len: 16 << 10,
            prot: rw_mte(),
        },
    );
    assert!(d.page(p, a, PageState::AwaitingTagStorage));
    d.ok(
        p,
        Command::Verify {
            ptr: a,
            len: 16 << 10,
            byte: 0xab,
        },
    );
    assert!(!d.page(p, a, PageState::InTagStorage));
    assert!(d.page(p, a, PageState::Tagged));
    assert_eq!(d.k_tags(p, a, 16 << 10), vec![tag(0); 1024]);
    assert!(d.stat(Counter::TagStorageMigrations) >= 4);
    assert!(d.stat(Counter::FaultTagStorage) >= 1);
}

trait Tags {
    fn k_tags(&self, pid: uapi::Pid, ptr: mte::TaggedPtr, len: u64) -> Vec<mte::Tag>;
}

impl Tags for Driver {
    fn k_tags(&self, pid: uapi::Pid, ptr: mte::TaggedPtr, len: u64) -> Vec<mte::Tag> {
        use uapi::Machine;
        self.k.tags(pid, ptr, len).expect("mapped")
    }
}
