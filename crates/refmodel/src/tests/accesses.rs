//! Loads, stores, fill and verify.

use uapi::{Command, Outcome};

use super::harness::*;

#[test]
fn little_endian_across_granules_and_pages() {
    let mut s = Sim::new();
    let p = s.spawn();
    let a = s.mmap(p, 0x2000, "r,w", "");
    let v: u128 = 0x0f0e_0d0c_0b0a_0908_0706_0504_0302_0100;
    s.ok(p, store(a.at(0xff8), 16, v));
    s.check(p, load(a.at(0xff8), 16), value(v));
    // Byte 0xff8 holds the lowest byte; 0x1000 the ninth.
    s.check(p, load(a.at(0xff8), 1), value(0x00));
    s.check(p, load(a.at(0x1000), 2), value(0x0908));
    s.check(p, load(a.at(0xffc), 4), value(0x0706_0504));
    // A narrow store writes only its bytes.
    s.ok(p, store(a.at(0x1000), 1, 0xff));
    s.check(p, load(a.at(0xffe), 4), value(0x09ff_0706));
}

#[test]
fn page_faults_come_first_and_report_the_failing_page() {
    let mut s = Sim::new();
    let p = s.sync_process();
    let a = s.mmap(p, 0x2000, "r,w,mte", "");
    s.ok(p, mprotect(a.at(0x1000), 0x1000, "r,mte"));
    // A store crossing into the read-only page: SEGV_ACCERR at its first
    // byte there, with the pointer's top byte, before any tag check, and
    // nothing written.
    s.check(
        p,
        store(a.at(0xffc).tagged(3), 8, u128::MAX),
        fault(SegvAccErr, a.at(0x1000).tagged(3)),
    );
    s.check(p, load(a.at(0xffc), 4), value(0));
    // The first page fails: the pointer itself.
    s.ok(p, munmap(a, 0x1000));
    s.check(
        p,
        load(a.at(0xffc).tagged(3), 8),
        fault(SegvMapErr, a.at(0xffc).tagged(3)),
    );
}

#[test]
fn sync_async_asymm_and_store_only() {
    let mut s = Sim::new();
    let p = s.sync_process();
    let a = s.mmap(p, 0x1000, "r,w,mte", "");
    s.ok(p, settag(a.tagged(2), 32));
    // Sync: the mismatching access has no effect. A 16-byte store from 0x18
    // fails in its second granule: the fault is at that granule's base.
    s.ok(p, store(a.at(0x10).tagged(2), 8, 0x11));
    s.check(
        p,
        store(a.at(0x18).tagged(2), 16, u128::MAX),
        fault(SegvMteSerr, a.at(0x20).tagged(2)),
    );
    s.check(p, load(a.at(0x18).tagged(2), 8), value(0));
    // Store-only: loads are not checked, stores are.
    s.ok(p, prctl("store-only=on"));
    s.check(p, load(a.tagged(9), 8), value(0));
    s.check(p, store(a.tagged(9), 8, 1), fault(SegvMteSerr, a.tagged(9)));
    s.ok(p, prctl("store-only=off tcf=asymm"));
    // Asymm: loads sync, stores async (complete, reported later).
    s.check(p, load(a.tagged(9), 8), fault(SegvMteSerr, a.tagged(9)));
    s.ok(p, store(a.tagged(9), 8, 0x99));
    s.check(p, load(a.tagged(2), 8), value(0x99));
    s.check(p, Command::Yield, async_fault());
    // TCO: nothing is checked.
    s.ok(p, prctl("tcf=sync"));
    s.ok(p, Command::Tco(true));
    s.check(p, load(a.tagged(9), 8), value(0x99));
    s.ok(p, store(a.tagged(9), 8, 0x98));
    s.ok(p, Command::Tco(false));
    s.check(p, load(a.tagged(9), 8), fault(SegvMteSerr, a.tagged(9)));
    // Tag 0 pointers are checked like any other (no match-all tag).
    s.check(p, load(a, 8), fault(SegvMteSerr, a));
}

#[test]
fn fill_stops_at_the_first_synchronous_fault() {
    let mut s = Sim::new();
    let p = s.sync_process();
    let a = s.mmap(p, 0x2000, "r,w,mte", "");
    s.ok(p, settag(a.tagged(4), 0x30));
    // Bytes 0x08..0x30 match; byte 0x30 is the first of a tag-0 granule.
    s.check(
        p,
        fill(a.at(8).tagged(4), 0x40, 0xaa),
        fault(SegvMteSerr, a.at(0x30).tagged(4)),
    );
    s.ok(p, verify(a.at(8).tagged(4), 0x28, 0xaa));
    s.check(p, load(a.at(0x30), 1), value(0));
    s.check(p, load(a.tagged(4), 1), value(0));
    // The first byte's granule mismatches: the pointer itself.
    s.check(
        p,
        fill(a.at(0x31).tagged(4), 2, 1),
        fault(SegvMteSerr, a.at(0x31).tagged(4)),
    );
    // A page fault part-way: the bytes before it are written.
    s.ok(p, munmap(a.at(0x1000), 0x1000));
    s.check(
        p,
        fill(a.at(0xff0), 0x20, 0xbb),
        fault(SegvMapErr, a.at(0x1000)),
    );
    s.ok(p, verify(a.at(0xff0), 0x10, 0xbb));
    // Async: the fill completes, one fault is pending.
    s.ok(p, prctl("tcf=async"));
    s.ok(p, fill(a.tagged(1), 0x100, 0xcc));
    s.ok(p, verify(a.tagged(0), 0x100, 0xcc));
    s.check(p, Command::Yield, async_fault());
    s.ok(p, fill(a, 0, 1));
}

#[test]
fn verify_reports_the_first_difference_or_fault() {
    let mut s = Sim::new();
    let p = s.sync_process();
    let a = s.mmap(p, 0x1000, "r,w,mte", "");
    s.ok(p, fill(a, 0x100, 0x5a));
    s.ok(p, store(a.at(0x21), 1, 0));
    s.check(p, verify(a, 0x100, 0x5a), Outcome::Mismatch(0x21));
    s.check(p, verify(a.at(0x22), 0xde, 0x5a), Outcome::Ok);
    // A mismatching granule before the differing byte: the fault wins.
    s.ok(p, stg(a.at(0x10).tagged(3)));
    s.check(p, verify(a, 0x100, 0x5a), fault(SegvMteSerr, a.at(0x10)));
    // A differing byte before a mismatching granule: the mismatch wins.
    s.ok(p, store(a.at(0x5), 1, 0));
    s.check(p, verify(a, 0x100, 0x5a), Outcome::Mismatch(5));
    s.ok(p, verify(a, 0, 0x5a));
    // Past the end of the mapping.
    s.check(
        p,
        verify(a.at(0xff0), 0x20, 0),
        fault(SegvMapErr, a.at(0x1000)),
    );
}
