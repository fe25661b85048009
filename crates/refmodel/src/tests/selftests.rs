//! Behaviours of Linux's arm64 MTE selftests
//! (tools/testing/selftests/arm64/mte), spot-checked.

use uapi::{Command, Errno, Outcome};

use super::harness::*;

/// check_buffer_fill: a tagged buffer filled through its pointer passes;
/// an underflow and an overflow of one granule fault in sync mode at the
/// first byte outside the buffer, and complete in async mode with one
/// fault reported at the next kernel entry.
#[test]
fn check_buffer_fill() {
    let mut s = Sim::with(true, 3);
    let p = s.sync_process();
    let map = s.mmap(p, 0x1000, "r,w,mte", "");
    let (_, buf) = s.bind(p, irg(map.at(0x100), 0));
    assert_ne!(buf.tag(), mte::Tag::ZERO, "include 0xfffe never gives 0");
    s.ok(p, settag(buf, 0x200));
    s.ok(p, fill(buf, 0x200, b'1'));
    s.ok(p, verify(buf, 0x200, b'1'));
    s.check(
        p,
        fill(buf.minus(16), 16, b'2'),
        fault(SegvMteSerr, buf.minus(16)),
    );
    s.check(
        p,
        fill(buf.at(0x200), 16, b'3'),
        fault(SegvMteSerr, buf.at(0x200)),
    );
    s.ok(p, verify(buf, 0x200, b'1'));
    s.ok(p, prctl("tcf=async"));
    s.ok(p, fill(buf.minus(16), 0x220, b'4'));
    s.check(p, Command::Yield, async_fault());
    s.ok(p, Command::Yield);
}

/// check_child_memory: a child sees the parent's tags, private and shared,
/// and faults like the parent on a mismatch.
#[test]
fn check_child_memory() {
    let mut s = Sim::with(true, 5);
    let p = s.sync_process();
    for map_list in ["private,anon", "shared,anon"] {
        let map = s.mmap(p, 0x1000, "r,w,mte", map_list);
        let (_, ptr) = s.bind(p, irg(map.at(0x100), 0));
        s.ok(p, settag(ptr, 0x100));
        let c = s.fork(p);
        s.ok(c, fill(ptr, 0x100, 0x11));
        s.check(
            c,
            fill(ptr.at(0x100), 1, 0),
            fault(SegvMteSerr, ptr.at(0x100)),
        );
        s.check(c, load(ptr.minus(1), 1), fault(SegvMteSerr, ptr.minus(1)));
        s.ok(c, Command::Exit);
    }
}

/// check_mmap_options: PROT_MTE on anonymous and tmpfs memory, private and
/// shared, by mmap or by mprotect; clearing PROT_MTE with mprotect is
/// accepted and ignored; TCO and tcf=none switch the checks off.
#[test]
fn check_mmap_options() {
    let mut s = Sim::new();
    let p = s.sync_process();
    for map_list in ["private,anon", "shared,anon", "private,shm", "shared,shm"] {
        for by_mprotect in [false, true] {
            let map = if by_mprotect {
                let m = s.mmap(p, 0x1000, "r,w", map_list);
                s.ok(p, mprotect(m, 0x1000, "r,w,mte"));
                m
            } else {
                s.mmap(p, 0x1000, "r,w,mte", map_list)
            };
            s.ok(p, settag(map.at(0x10).tagged(3), 0x20));
            s.ok(p, fill(map.at(0x10).tagged(3), 0x20, b'1'));
            s.check(
                p,
                fill(map.tagged(3), 1, b'2'),
                fault(SegvMteSerr, map.tagged(3)),
            );
            s.check(
                p,
                fill(map.at(0x30).tagged(3), 1, b'3'),
                fault(SegvMteSerr, map.at(0x30).tagged(3)),
            );
            s.ok(p, mprotect(map, 0x1000, "r,w"));
            s.check(
                p,
                fill(map.tagged(3), 1, b'2'),
                fault(SegvMteSerr, map.tagged(3)),
            );
            s.ok(p, Command::Tco(true));
            s.ok(p, fill(map.tagged(3), 1, b'2'));
            s.ok(p, Command::Tco(false));
            s.ok(p, prctl("tcf=none"));
            s.ok(p, fill(map.tagged(3), 1, b'2'));
            s.ok(p, prctl("tcf=sync"));
        }
    }
    // A regular file cannot be tagged either way.
    s.check(p, mmap(0x1000, "r,w,mte", "shared,file"), err(Errno::Inval));
    let f = s.mmap(p, 0x1000, "r,w", "shared,file");
    s.check(p, mprotect(f, 0x1000, "r,w,mte"), err(Errno::Inval));
}

/// check_prctl: what is set is read back; sync and async together read
/// back as both bits.
#[test]
fn check_prctl() {
    let mut s = Sim::new();
    let p = s.spawn();
    for (words, word) in [
        ("tagged-addr=on tcf=none include=0", 0x1),
        ("tcf=sync", 0x3),
        ("tcf=async", 0x5),
        ("tcf=asymm", 0x7),
        ("include=0xffff", 0x7 | 0xffff << 3),
    ] {
        s.ok(p, prctl(words));
        s.check(p, Command::PrctlGet, value(word));
    }
}

/// check_tags_inclusion: IRG picks only included tags; with none included
/// it gives 0; ADDG steps over excluded tags.
#[test]
fn check_tags_inclusion() {
    let mut s = Sim::with(true, 11);
    let p = s.spawn();
    let a = s.mmap(p, 0x1000, "r,w,mte", "");
    for tag_value in 0..16u8 {
        s.ok(p, prctl(&format!("include={:#x}", 1u16 << tag_value)));
        for _ in 0..4 {
            assert_eq!(s.bind(p, irg(a, 0)).0, tag(tag_value));
        }
    }
    s.ok(p, prctl("include=0x5555"));
    for _ in 0..32 {
        let Outcome::Tag(got) = s.bind(p, irg(a, 0)).0 else {
            panic!()
        };
        assert_eq!(got.value() % 2, 0, "only even tags are included");
    }
    s.ok(p, prctl("include=0"));
    for _ in 0..8 {
        assert_eq!(s.bind(p, irg(a, 0)).0, tag(0));
    }
    s.ok(p, prctl("include=0x5555"));
    assert_eq!(s.bind(p, addg(a.tagged(2), 0, 1)).0, tag(4));
}

/// check_user_mem: read(2)/write(2) on a buffer whose tail has a different
/// tag copy less than asked in sync mode (no signal), and everything in
/// async mode.
#[test]
fn check_user_mem() {
    let mut s = Sim::with(true, 2);
    let p = s.sync_process();
    for map_list in ["private,anon", "shared,anon"] {
        let map = s.mmap(p, 0x2000, "r,w,mte", map_list);
        let (_, ptr) = s.bind(p, irg(map, 0));
        s.ok(p, settag(ptr, 0x2000));
        s.check(p, read_fd(ptr, 0x2000, b'A'), count(0x2000));
        s.ok(p, verify(ptr, 0x2000, b'A'));
        // Retag from one granule on with another tag.
        let (_, other) = s.bind(p, addg(ptr.at(16), 0, 1));
        s.ok(p, settag(other, 0x2000 - 16));
        for (ptroff, size) in [(0, 1), (3, 8), (0, 16), (8, 32), (0, 4096)] {
            let at = ptr.at(ptroff);
            let short = 16 - ptroff;
            let want = if size <= short {
                count(size)
            } else {
                count(short)
            };
            s.check(p, read_fd(at, size, b'B'), want.clone());
            s.check(p, write_fd(at, size), want);
        }
        s.ok(p, prctl("tcf=async"));
        s.check(p, write_fd(ptr, 4096), count(4096));
        s.check(p, read_fd(ptr, 4096, b'C'), count(4096));
        s.ok(p, prctl("tcf=sync"));
    }
}
