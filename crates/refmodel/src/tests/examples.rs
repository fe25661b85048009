//! `examples/*.mte`, line by line, without the `expect stat` and
//! `expect page` lines (the reference keeps no counters or page tables).
//! `expect P tags` lines go through `Machine::tags`, `expect invariants`
//! through `invariant_violations` (checked after every command by the
//! harness). `bad-input.mte` is refused by the parser and never runs.

use uapi::Command;

use super::harness::*;

#[test]
fn check_modes() {
    let mut s = Sim::new();
    let p = s.spawn();
    s.ok(p, prctl("tagged-addr=on tcf=sync include=0xfffe"));
    let a = s.mmap(p, 4096, "r,w,mte", "");
    s.ok(p, settag(a.tagged(7), 64));
    s.check_like_scenario(p, store(a.tagged(3), 8, 0x42), fault(SegvMteSerr, a));
    s.check_like_scenario(p, load(a.tagged(7), 8), value(0));

    s.ok(p, prctl("tcf=async"));
    s.ok(p, store(a.tagged(3), 8, 0x42));
    s.check_like_scenario(p, load(a.tagged(7), 8), value(0x42));
    s.check_like_scenario(p, Command::Yield, async_fault());
    s.ok(p, Command::Yield);

    s.ok(p, prctl("tcf=asymm"));
    s.check_like_scenario(p, load(a.tagged(3), 8), fault_any(SegvMteSerr));
    s.ok(p, store(a.tagged(3), 8, 0x43));
    s.check_like_scenario(p, Command::Yield, async_fault());
    s.check_like_scenario(p, load(a.tagged(7), 8), value(0x43));

    s.ok(p, prctl("tcf=none"));
    s.check_like_scenario(p, load(a.tagged(3), 8), value(0x43));
    let u = s.mmap(p, 4096, "r,w", "");
    s.ok(p, prctl("tcf=sync"));
    s.check_like_scenario(p, load(u.tagged(9), 8), value(0));
    s.ok(p, stg(u.tagged(9)));
    s.check_like_scenario(p, ldg(u), tag(0));
}

#[test]
fn fork_cow_tags() {
    let mut s = Sim::new();
    let p = s.spawn();
    s.ok(p, prctl("tagged-addr=on tcf=sync include=0xfffe"));
    let a = s.mmap(p, 4096, "r,w,mte", "");
    s.ok(p, settag(a.tagged(7), 4096));
    s.ok(p, fill(a.tagged(7), 4096, 0x11));
    let c = s.fork(p);
    s.check(c, load(a.tagged(7), 8), value(0x1111_1111_1111_1111));
    s.check_like_scenario(c, load(a.tagged(3), 8), fault_any(SegvMteSerr));
    s.ok(c, settag(a.tagged(9), 16));
    s.check(c, ldg(a), tag(9));
    s.check(c, load(a.at(16).tagged(7), 8), value(0x1111_1111_1111_1111));
    s.check(p, ldg(a), tag(7));
    s.check(p, load(a.tagged(7), 8), value(0x1111_1111_1111_1111));
    s.check(c, peek(p, a, 2), tags(&[7, 7]));
    s.check(p, peek(c, a, 2), tags(&[9, 7]));
}

#[test]
fn mprotect_tag_storage_page() {
    let mut s = Sim::new();
    let p = s.spawn();
    s.ok(p, prctl("tagged-addr=on tcf=sync include=0xfffe"));
    let a = s.mmap(p, 16 << 10, "r,w", "");
    s.ok(p, fill(a, 16 << 10, 0xab));
    s.ok(p, mprotect(a, 16 << 10, "r,w,mte"));
    s.ok(p, verify(a, 16 << 10, 0xab));
    // expect p tags a 16K == 0
    assert_eq!(s.tags(p, a, 16 << 10), Some(vec![0; 1024]));
}

#[test]
fn zero_page_block() {
    let mut s = Sim::new();
    let p = s.spawn();
    s.ok(p, prctl("tagged-addr=on tcf=sync include=0xfffe"));
    let buf = s.mmap(p, 64 << 10, "r,w,mte", "");
    s.check(p, load(buf, 8), value(0));
    s.check(p, ldg(buf.at(0x30)), tag(0));
    s.check_like_scenario(
        p,
        load(buf.at(0x40).tagged(3), 8),
        fault(SegvMteSerr, buf.at(0x40)),
    );
    s.ok(p, stg(buf.tagged(5)));
    s.check(p, ldg(buf), tag(5));
    s.check(p, load(buf.tagged(5), 8), value(0));
    s.check_like_scenario(p, load(buf, 8), fault_any(SegvMteSerr));
    s.check(p, ldg(buf.at(0x10)), tag(0));
    s.ok(p, munmap(buf, 64 << 10));
}

#[test]
fn block_refcount() {
    let mut s = Sim::new();
    let p = s.spawn();
    s.ok(p, prctl("tagged-addr=on tcf=sync include=0xfffe"));
    let big = s.mmap(p, 1 << 20, "r,w,mte", "private,anon,populate");
    s.ok(p, munmap(big, 512 << 10));
    s.ok(p, munmap(big.at(512 << 10), 512 << 10));
    s.mmap(p, 1 << 20, "r,w", "private,anon,populate");
    s.ok(p, Command::Exit);
}
