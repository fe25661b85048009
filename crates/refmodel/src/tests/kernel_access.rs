//! `write-fd` and `read-fd`: the kernel's own copies of user memory.

use uapi::{Command, Errno};

use super::harness::*;

/// A process in sync mode with a 2-page tagged buffer: the first 64 bytes
/// tag 7, the rest tag 0.
fn tagged_buffer(s: &mut Sim) -> (uapi::Pid, mte::TaggedPtr) {
    let p = s.sync_process();
    let a = s.mmap(p, 0x2000, "r,w,mte", "");
    s.ok(p, settag(a.tagged(7), 64));
    (p, a)
}

#[test]
fn sync_mode_stops_at_the_first_mismatching_granule() {
    // Linux (memory-tagging-extension.rst): kernel accesses are checked in
    // sync mode; the copy stops at the bad granule (the model exactly at
    // it) and returns the bytes done, EFAULT when none.
    let mut s = Sim::new();
    let (p, a) = tagged_buffer(&mut s);
    s.check(p, write_fd(a.tagged(7), 256), count(64));
    s.check(p, read_fd(a.tagged(7), 256, 0xee), count(64));
    s.check(p, verify(a.tagged(7), 64, 0xee), uapi::Outcome::Ok);
    s.check(p, load(a.at(64), 1), value(0));
    // From the middle of a granule: 0x38 bytes up to 0x40.
    s.check(p, write_fd(a.at(8).tagged(7), 256), count(0x38));
    // The first granule mismatches: nothing copied.
    s.check(p, write_fd(a.tagged(3), 256), err(Errno::Fault));
    s.check(p, read_fd(a.at(0x40).tagged(7), 16, 1), err(Errno::Fault));
    // The user's TCO does not apply to the kernel.
    s.ok(p, Command::Tco(true));
    s.check(p, write_fd(a.tagged(3), 256), err(Errno::Fault));
}

#[test]
fn other_modes_check_what_they_check() {
    // uaccess is checked only where the mode is sync for that direction:
    // asymm checks the kernel's reads (write-fd) only, store-only its
    // writes (read-fd) only, async and none nothing. No signal either way.
    let mut s = Sim::new();
    let (p, a) = tagged_buffer(&mut s);
    s.ok(p, prctl("tcf=async"));
    s.check(p, write_fd(a.tagged(7), 256), count(256));
    s.check(p, read_fd(a.tagged(7), 256, 1), count(256));
    s.ok(p, Command::Yield);
    s.ok(p, prctl("tcf=none"));
    s.check(p, write_fd(a.tagged(3), 256), count(256));
    s.ok(p, prctl("tcf=asymm"));
    s.check(p, write_fd(a.tagged(7), 256), count(64));
    s.check(p, read_fd(a.tagged(7), 256, 1), count(256));
    s.ok(p, prctl("tcf=sync store-only=on"));
    s.check(p, write_fd(a.tagged(7), 256), count(256));
    s.check(p, read_fd(a.tagged(7), 256, 1), count(64));
    s.ok(p, Command::Yield);
}

#[test]
fn copies_stop_at_pages_the_kernel_may_not_touch() {
    let mut s = Sim::new();
    let p = s.spawn();
    let a = s.mmap(p, 0x3000, "r,w", "");
    s.ok(p, mprotect(a.at(0x1000), 0x1000, "r"));
    s.ok(p, munmap(a.at(0x2000), 0x1000));
    // copy_to_user stops at the read-only page, copy_from_user at the hole.
    s.check(p, read_fd(a.at(0x10), 0x3000, 0x41), count(0xff0));
    s.check(p, write_fd(a.at(0x10), 0x3000), count(0x1ff0));
    s.check(p, read_fd(a.at(0x1000), 1, 0x41), err(Errno::Fault));
    s.check(p, write_fd(a.at(0x2000), 1), err(Errno::Fault));
    s.check(p, load(a.at(0xff8), 8), value(0x4141_4141_4141_4141));
    // A length of 0 copies nothing and succeeds, wherever it points.
    s.check(p, write_fd(raw(0x10), 0), count(0));
    // access_ok(): the range must lie below TASK_SIZE.
    s.check(p, write_fd(a, u64::MAX), err(Errno::Fault));
    s.check(p, read_fd(raw((1 << 48) - 8), 16, 0), err(Errno::Fault));
}

#[test]
fn tagged_pointers_need_the_tagged_address_abi() {
    // access_ok() untags only with PR_TAGGED_ADDR_ENABLE; otherwise any top
    // byte is EFAULT, even for a zero-length copy.
    let mut s = Sim::new();
    let p = s.spawn();
    let a = s.mmap(p, 0x1000, "r,w", "");
    s.check(p, write_fd(a.tagged(1), 16), err(Errno::Fault));
    s.check(p, write_fd(a.tagged(1), 0), err(Errno::Fault));
    s.check(p, read_fd(raw(a.raw() | 1 << 60), 16, 0), err(Errno::Fault));
    s.ok(p, prctl("tagged-addr=on"));
    s.check(p, write_fd(a.tagged(1), 16), count(16));
    s.check(p, read_fd(raw(a.raw() | 1 << 60), 16, 9), count(16));
    s.check(p, load(a, 1), value(9));
}

#[test]
fn one_call_moves_at_most_max_rw_count() {
    // vfs_write(): count is capped at MAX_RW_COUNT = INT_MAX & PAGE_MASK.
    let mut s = Sim::new();
    let p = s.spawn();
    let big = s.mmap(p, 3 << 30, "r,w", "");
    s.check(p, write_fd(big, 3 << 30), count(0x7fff_f000));
}
