//! KSM's own unit tests: what the invariant checker says of a broken KSM
//! page (the scenarios under `tests/scenarios/ksm/` cover the behaviour).

use uapi::{Advice, Command, Invariant, Machine, MapFlags, Op, Outcome, Prot};

use super::{cmd, kernel, mmap, pfn_of, run, spawn};
use crate::mm::{Access, Pte};

/// Two equal pages of `p`, merged: the KSM page's frame.
fn merged_pair(k: &mut super::Kernel) -> (uapi::Pid, mte::TaggedPtr, mte::Pfn) {
    let p = spawn(k);
    let a = mmap(k, p, 8192, Prot::READ_WRITE, MapFlags::default());
    let fill = Command::Fill {
        ptr: a,
        len: 8192,
        byte: 0x3c,
    };
    assert_eq!(cmd(k, p, fill), Outcome::Ok);
    let advise = Command::Madvise {
        ptr: a,
        len: 8192,
        advice: Advice::Mergeable,
    };
    assert_eq!(cmd(k, p, advise), Outcome::Ok);
    run(k, Op::KsmScan);
    run(k, Op::KsmScan);
    let kpage = pfn_of(k, p, a).expect("mapped");
    assert!(k.is_ksm(kpage));
    assert_eq!(
        pfn_of(k, p, mte::TaggedPtr::from_raw(a.raw() + 4096)),
        Some(kpage)
    );
    (p, a, kpage)
}

#[test]
fn a_tagged_ksm_page_is_reported() {
    let mut k = kernel(&[("tag-storage", "static")]);
    let (_, _, kpage) = merged_pair(&mut k);
    k.mem.set_page_mte_tagged(kpage).unwrap();
    let v = k.invariant_violations();
    assert!(
        v.iter()
            .any(|v| v.invariant == Invariant::LayerConsistency && v.message.contains("tagged")),
        "{v:#?}"
    );
}

#[test]
fn a_writable_ksm_mapping_is_reported() {
    let mut k = kernel(&[]);
    let (p, a, kpage) = merged_pair(&mut k);
    let mm = k.process_mm(p).unwrap();
    {
        let mut mms = k.mms.borrow_mut();
        let m = mms.get_mut(&mm).unwrap();
        let Pte::Present(mut leaf) = m.pt.pte(a.addr()) else {
            panic!("not present");
        };
        assert_eq!(leaf.pfn, kpage);
        leaf.attrs.access = Access::ReadWrite;
        k.raw_set_pte(m, a.addr(), Pte::Present(leaf)).unwrap();
    }
    let v = k.invariant_violations();
    assert!(
        v.iter().any(|v| v.message.contains("mapped writable")),
        "{v:#?}"
    );
}

#[test]
fn a_freed_ksm_page_leaves_no_trace() {
    let mut k = kernel(&[]);
    let (p, a, kpage) = merged_pair(&mut k);
    let unmap = Command::Munmap { ptr: a, len: 8192 };
    assert_eq!(cmd(&mut k, p, unmap), Outcome::Ok);
    assert!(!k.is_ksm(kpage));
    assert_eq!(k.ksm_counters(), (2, 0, 0));
}
