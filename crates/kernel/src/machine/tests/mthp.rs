//! Multi-size THP folios: the fault maps a whole naturally aligned folio of
//! consecutive frames, the kernel keeps its record while every page is in
//! place, and the invariant checker reports a page that left it without
//! the folio splitting.

use super::*;
use crate::mm::{Leaf, MapLevel, RmapEntry};

fn with_sizes(sizes: &str) -> Kernel {
    kernel(&[("tag-storage", "none"), ("thp-sizes", sizes)])
}

/// A write fault in a 1M private anonymous mapping maps one 64K folio:
/// 16 consecutive frames from a naturally aligned head, recorded.
#[test]
fn a_fault_maps_a_folio_of_consecutive_frames() {
    let mut k = with_sizes("64K");
    let p = spawn(&mut k);
    let a = mmap(&mut k, p, 1 << 20, Prot::READ_WRITE, MapFlags::default());
    let at = |off: u64| TaggedPtr::from_raw(a.raw() + off);
    assert_eq!(store8(&mut k, p, at(0x10008), 7), Outcome::Ok);
    let head = pfn_of(&k, p, at(0x10000)).unwrap();
    assert_eq!(head.as_u64() % 16, 0, "a naturally aligned block");
    for i in 0..16 {
        assert_eq!(pfn_of(&k, p, at(0x10000 + i * 4096)), Some(head + i));
    }
    assert_eq!(pfn_of(&k, p, at(0x20000)), None);
    assert_eq!(k.folio_of(head + 15), Some((head, 4)));
    assert_eq!(stat(&k, Counter::FaultAnon), 1);
    assert_eq!(stat(&k, Counter::MthpAnonFaultAlloc64K), 1);
}

/// Unmapping one page splits the folio (its record goes); the rest stays.
#[test]
fn a_page_leaving_splits_the_folio() {
    let mut k = with_sizes("16K");
    let p = spawn(&mut k);
    let a = mmap(&mut k, p, 64 << 10, Prot::READ_WRITE, MapFlags::default());
    assert_eq!(store8(&mut k, p, a, 1), Outcome::Ok);
    let head = pfn_of(&k, p, a).unwrap();
    assert!(k.folio_of(head).is_some());
    let page = TaggedPtr::from_raw(a.raw() + 0x1000);
    let unmap = Command::Munmap {
        ptr: page,
        len: 4096,
    };
    assert_eq!(cmd(&mut k, p, unmap), Outcome::Ok);
    assert_eq!(k.folio_of(head), None);
    assert_eq!(
        load8(&mut k, p, TaggedPtr::from_raw(a.raw() + 0x2000)),
        Outcome::Value(0)
    );
}

/// A folio whose page is mapped elsewhere than beside its head, with the
/// record kept, breaks invariant 6 (the checker covers folios).
#[test]
fn the_checker_reports_an_inconsistent_folio() {
    let mut k = with_sizes("16K");
    let p = spawn(&mut k);
    let a = mmap(&mut k, p, 64 << 10, Prot::READ_WRITE, MapFlags::default());
    assert_eq!(store8(&mut k, p, a, 1), Outcome::Ok);
    let head = pfn_of(&k, p, a).unwrap();
    let mm = k.process_mm(p).unwrap();
    // Move the last page's mapping by hand, past the split hook: the entry
    // and the rmap agree, the folio does not.
    let last = a.addr().checked_add(0x3000).unwrap();
    let moved = a.addr().checked_add(0x8000).unwrap();
    let leaf: Leaf = k.current_pte(mm, last).unwrap().leaf().unwrap();
    {
        let mut mms = k.mms.borrow_mut();
        let m = mms.get_mut(&mm).unwrap();
        k.raw_set_pte(m, last, Pte::None).unwrap();
        k.raw_set_pte(m, moved, Pte::Present(leaf)).unwrap();
    }
    let entry = |va| RmapEntry {
        mm,
        va,
        level: MapLevel::Pte,
    };
    let mut rmap = k.rmap.borrow_mut();
    rmap.remove(head + 3, entry(last)).unwrap();
    rmap.add(head + 3, entry(moved)).unwrap();
    drop(rmap);
    let v = k.violations();
    // The incremental checker finds it through the rmap's change log.
    let incremental = k.violations_incremental();
    assert!(
        crate::machine::incremental::same_verdict(&incremental, &v),
        "{incremental:#?}\n{v:#?}"
    );
    assert!(
        v.iter().any(|v| matches!(
            v,
            crate::machine::check::KernelViolation::Folio { head: h, order: 2, .. } if *h == head
        )),
        "{v:#?}"
    );
}
