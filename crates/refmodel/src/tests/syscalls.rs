//! mmap, munmap, mprotect, madvise, pin and unpin.

use uapi::{Bound, Errno, Reply};

use super::harness::*;

/// `mmap_base = 2^48 - 128 MiB`.
const MMAP_BASE: u64 = 0xffff_f800_0000;

#[test]
fn mmap_places_top_down_from_mmap_base() {
    let mut s = Sim::new();
    let p = s.spawn();
    assert_eq!(s.mmap(p, 4096, "r,w", "").raw(), MMAP_BASE - 0x1000);
    // Lengths round up to pages: 5000 bytes take two.
    assert_eq!(s.mmap(p, 5000, "r,w", "").raw(), MMAP_BASE - 0x3000);
    // A private anonymous mapping of 2 MiB or more is 2 MiB aligned: the
    // highest fit below MMAP_BASE - 0x3000 is MMAP_BASE - 0x20_3000, rounded
    // down to 2 MiB.
    assert_eq!(
        s.mmap(p, 2 << 20, "r,w", "").raw(),
        0xffff_f7c0_0000,
        "THP-aligned"
    );
    // Shared anonymous memory is shmem: no alignment (shmem THP is off).
    assert_eq!(
        s.mmap(p, 2 << 20, "r,w", "shared,anon").raw(),
        0xffff_f7c0_0000 - (2 << 20)
    );
    // The gap between MMAP_BASE - 0x20_3000 and the aligned mapping is
    // first fit for a small one.
    assert_eq!(s.mmap(p, 4096, "r,w", "").raw(), MMAP_BASE - 0x4000);
}

#[test]
fn mmap_argument_errors_in_linux_order() {
    let mut s = Sim::new();
    let p = s.spawn();
    // do_mmap(): len 0 is EINVAL; a length that rounds past TASK_SIZE ENOMEM.
    s.check(p, mmap(0, "r,w", ""), err(Errno::Inval));
    s.check(p, mmap(u64::MAX, "r,w", ""), err(Errno::NoMem));
    s.check(p, mmap(1 << 49, "r,w", ""), err(Errno::NoMem));
    // More than fits below mmap_base.
    s.check(p, mmap(MMAP_BASE, "r,w", ""), err(Errno::NoMem));
    // MAP_FIXED: a tagged address is EINVAL (mmap never untags), then
    // `addr > TASK_SIZE - len` ENOMEM, then misalignment EINVAL, then
    // mmap_min_addr EPERM.
    s.check(
        p,
        mmap_fixed(4096, "r,w", "", raw(0x0300_0000_1000_0000)),
        err(Errno::Inval),
    );
    s.check(
        p,
        mmap_fixed(0x2000, "r,w", "", raw((1 << 48) - 0x1000)),
        err(Errno::NoMem),
    );
    s.check(
        p,
        mmap_fixed(4096, "r,w", "", raw(0x1000_0800)),
        err(Errno::Inval),
    );
    s.check(p, mmap_fixed(4096, "r,w", "", raw(0)), err(Errno::Perm));
    s.ok(p, mmap_fixed(4096, "r,w", "", raw(0x1000)));
    // The last page below TASK_SIZE is allowed; an access running off its
    // end faults at TASK_SIZE.
    s.ok(p, mmap_fixed(4096, "r,w", "", raw((1 << 48) - 0x1000)));
    s.check(
        p,
        load(raw((1 << 48) - 4).tagged(2), 8),
        fault(SegvMapErr, raw(1 << 48).tagged(2)),
    );
    // A failed mmap binds 0.
    assert_eq!(
        s.run(p, mmap(0, "r,w", "")),
        Reply::binding(err(Errno::Inval), Bound::Pointer(raw(0)))
    );
}

#[test]
fn prot_mte_needs_mte_and_anonymous_or_shmem_memory() {
    // arch_validate_flags(): VM_MTE needs VM_MTE_ALLOWED (anonymous memory,
    // shmem); the scenario language refuses PROT_MTE on a machine without
    // MTE.
    let mut s = Sim::new();
    let p = s.spawn();
    s.mmap(p, 4096, "r,w,mte", "private,anon");
    s.mmap(p, 4096, "r,w,mte", "shared,anon");
    s.mmap(p, 4096, "r,w,mte", "shared,shm");
    s.mmap(p, 4096, "r,w,mte", "private,shm");
    s.check(p, mmap(4096, "r,w,mte", "shared,file"), err(Errno::Inval));
    s.check(p, mmap(4096, "r,w,mte", "private,file"), err(Errno::Inval));
    s.mmap(p, 4096, "r,w", "private,file");
    let mut none = Sim::with(false, 0);
    let q = none.spawn();
    none.check(q, mmap(4096, "r,w,mte", ""), err(Errno::Inval));
    none.mmap(q, 4096, "r,w", "");
    // Without MTE, `mte` is refused before the search for a free range: a
    // length that fits nowhere is still EINVAL. With MTE, the search comes
    // first (ENOMEM), and a file's refusal (arch_validate_flags()) after.
    none.check(q, mmap(MMAP_BASE, "r,w,mte", ""), err(Errno::Inval));
    none.check(q, mmap(MMAP_BASE, "r,w", ""), err(Errno::NoMem));
    s.check(
        p,
        mmap(MMAP_BASE, "r,w,mte", "private,file"),
        err(Errno::NoMem),
    );
}

#[test]
fn regular_file_mappings_are_2m_aligned_like_private_anonymous_ones() {
    // Linux v6.8: ext4/xfs name thp_get_unmapped_area() as their
    // get_unmapped_area; shmem aligns nothing with huge pages off.
    let mut s = Sim::new();
    let p = s.spawn();
    assert_eq!(s.mmap(p, 4096, "r,w", "").raw(), MMAP_BASE - 0x1000);
    let shm = s.mmap(p, 2 << 20, "r,w", "shared,shm").raw();
    assert_eq!(shm, MMAP_BASE - 0x1000 - (2 << 20));
    for map in ["shared,file", "private,file", ""] {
        let a = s.mmap(p, 2 << 20, "r,w", map).raw();
        assert_eq!(a % (2 << 20), 0, "{map}");
    }
}

#[test]
fn map_fixed_replaces_and_a_refused_one_leaves_the_old_mapping() {
    let mut s = Sim::new();
    let p = s.sync_process();
    let a = s.mmap(p, 0x3000, "r,w,mte", "");
    s.ok(p, settag(a.at(0x1000).tagged(5), 16));
    s.ok(p, store(a.at(0x1000).tagged(5), 8, 0x77));
    // Refused before anything is unmapped.
    s.check(
        p,
        mmap_fixed(0x1000, "r,w,mte", "shared,file", a.at(0x1000)),
        err(Errno::Inval),
    );
    s.check(p, load(a.at(0x1000).tagged(5), 8), value(0x77));
    // MAP_FIXED over the middle page: new, untagged, zero memory there; the
    // pages around it keep theirs.
    s.ok(p, store(a.at(0x2000), 8, 0x99));
    let (out, b) = s.bind(p, mmap_fixed(0x1000, "r", "", a.at(0x1000)));
    assert_eq!((out, b), (uapi::Outcome::Ok, a.at(0x1000)));
    s.check(p, load(a.at(0x1000).tagged(5), 8), value(0));
    s.check(p, ldg(a.at(0x1000)), tag(0));
    s.check(
        p,
        store(a.at(0x1000), 1, 1),
        fault(SegvAccErr, a.at(0x1000)),
    );
    s.check(p, load(a.at(0x2000), 8), value(0x99));
}

#[test]
fn protections_as_arm64_faults_see_them() {
    let mut s = Sim::new();
    let p = s.spawn();
    let none = s.mmap(p, 4096, "none", "");
    let ro = s.mmap(p, 4096, "r", "");
    let wo = s.mmap(p, 4096, "w", "");
    let xo = s.mmap(p, 4096, "x", "");
    s.check(p, load(none, 1), fault(SegvAccErr, none));
    s.check(p, load(ro, 1), value(0));
    s.check(p, store(ro.at(8), 1, 0), fault(SegvAccErr, ro.at(8)));
    // Write implies read.
    s.ok(p, store(wo, 1, 0x5a));
    s.check(p, load(wo, 1), value(0x5a));
    // Exec-only is not readable (Enhanced PAN).
    s.check(p, load(xo, 1), fault(SegvAccErr, xo));
    // Below mmap_min_addr and above TASK_SIZE nothing is mapped.
    s.check(p, load(raw(0), 1), fault(SegvMapErr, raw(0)));
    s.check(p, load(raw(1 << 48), 1), fault(SegvMapErr, raw(1 << 48)));
}

#[test]
fn munmap_rules() {
    // do_vmi_munmap(): untagged start; misaligned, past TASK_SIZE or an
    // empty length is EINVAL; unmapping nothing is fine.
    let mut s = Sim::new();
    let p = s.spawn();
    let a = s.mmap(p, 0x3000, "r,w", "");
    s.check(p, munmap(a.at(8), 4096), err(Errno::Inval));
    s.check(p, munmap(a, 0), err(Errno::Inval));
    s.check(p, munmap(raw(1 << 48), 4096), err(Errno::Inval));
    s.check(p, munmap(a, u64::MAX), err(Errno::Inval));
    s.ok(p, munmap(raw(0x10_0000), 4096));
    // A tagged pointer is accepted; one byte unmaps a page.
    s.ok(p, munmap(a.at(0x1000).tagged(9), 1));
    s.check(p, load(a.at(0x1000), 1), fault(SegvMapErr, a.at(0x1000)));
    s.check(p, load(a, 1), value(0));
    s.check(p, load(a.at(0x2000), 1), value(0));
    // An 8-byte load across into the hole faults at the hole's first byte.
    s.check(p, load(a.at(0xffc), 8), fault(SegvMapErr, a.at(0x1000)));
}

#[test]
fn mprotect_changes_permissions_and_adds_mte_for_good() {
    let mut s = Sim::new();
    let p = s.sync_process();
    let a = s.mmap(p, 0x2000, "r,w", "");
    s.ok(p, fill(a, 0x2000, 0x3c));
    // Adding PROT_MTE keeps the data; tags start at 0 and are checked.
    s.ok(p, mprotect(a, 0x2000, "r,w,mte"));
    s.check(p, load(a, 8), value(0x3c3c_3c3c_3c3c_3c3c));
    s.check(p, load(a.tagged(3), 8), fault(SegvMteSerr, a.tagged(3)));
    s.ok(p, settag(a.at(0x1000).tagged(3), 32));
    // Leaving PROT_MTE out succeeds but the mapping stays tagged.
    s.ok(p, mprotect(a, 0x2000, "r"));
    s.check(
        p,
        load(a.at(0x1000).tagged(3), 8),
        value(0x3c3c_3c3c_3c3c_3c3c),
    );
    s.check(p, load(a.at(0x1000), 8), fault(SegvMteSerr, a.at(0x1000)));
    s.check(p, ldg(a.at(0x1010)), tag(3));
    s.check(
        p,
        store(a.at(0x1000).tagged(3), 8, 0),
        fault(SegvAccErr, a.at(0x1000).tagged(3)),
    );
    // A tagged pointer is accepted; len 0 is a successful no-op.
    s.ok(p, mprotect(a.tagged(7), 0x1000, "r,w"));
    s.ok(p, store(a, 8, 0));
    s.ok(p, mprotect(a.at(0x5000_0000), 0, "r"));
}

#[test]
fn mprotect_errors_keep_what_was_done_before_them() {
    let mut s = Sim::new();
    let p = s.spawn();
    let a = s.mmap(p, 0x3000, "r,w", "");
    s.ok(p, munmap(a.at(0x1000), 0x1000));
    // do_mprotect_pkey(): misaligned EINVAL; a hole ENOMEM after the
    // mappings below it were changed.
    s.check(p, mprotect(a.at(1), 4096, "r"), err(Errno::Inval));
    s.check(p, mprotect(a, 0x3000, "r"), err(Errno::NoMem));
    s.check(p, store(a, 1, 0), fault(SegvAccErr, a));
    s.ok(p, store(a.at(0x2000), 1, 0));
    // A range that starts in the hole changes nothing.
    s.check(p, mprotect(a.at(0x1000), 0x2000, "r"), err(Errno::NoMem));
    s.ok(p, store(a.at(0x2000), 1, 0));
    // Past TASK_SIZE, and wrapping lengths.
    s.check(p, mprotect(raw(1 << 48), 4096, "r"), err(Errno::NoMem));
    s.check(p, mprotect(a, u64::MAX, "r"), err(Errno::NoMem));
    // PROT_MTE over an anonymous mapping then a file mapping: the anonymous
    // one becomes tagged, the file one is EINVAL.
    let g = s.mmap(p, 0x2000, "r,w", "");
    let f = g.at(0x1000);
    s.ok(p, mmap_fixed(0x1000, "r,w", "shared,file", f));
    s.check(p, mprotect(g, 0x2000, "r,w,mte"), err(Errno::Inval));
    assert_eq!(s.tags(p, g, 16), Some(vec![0]));
    s.ok(p, prctl("tagged-addr=on tcf=sync include=0xfffe"));
    s.check(p, load(g.tagged(1), 1), fault(SegvMteSerr, g.tagged(1)));
    s.check(p, load(f.tagged(1), 1), value(0));
    // No MTE on the machine: EINVAL before anything (arch_validate_prot()),
    // except for an empty length, which returns first.
    let mut none = Sim::with(false, 0);
    let q = none.spawn();
    let b = none.mmap(q, 4096, "r,w", "");
    none.check(q, mprotect(b, 4096, "r,w,mte"), err(Errno::Inval));
    none.ok(q, mprotect(b, 0, "r,w,mte"));
}

#[test]
fn dontneed_drops_private_memory_only() {
    // MADV_DONTNEED: private anonymous pages read back as zeros with tag 0;
    // shared memory keeps its data and tags in the object.
    let mut s = Sim::new();
    let p = s.sync_process();
    let private = s.mmap(p, 0x2000, "r,w,mte", "");
    let shared = s.mmap(p, 0x2000, "r,w,mte", "shared,shm");
    for base in [private, shared] {
        s.ok(p, settag(base.tagged(5), 0x2000));
        s.ok(p, fill(base.tagged(5), 0x2000, 0x77));
    }
    s.ok(p, madvise(private, 0x1000, "dontneed"));
    s.check(p, load(private, 8), value(0));
    s.check(p, ldg(private), tag(0));
    // The page after the range is untouched, and the mapping is still tagged.
    s.check(
        p,
        load(private.at(0x1000).tagged(5), 8),
        value(0x7777_7777_7777_7777),
    );
    s.check(
        p,
        load(private.tagged(5), 8),
        fault(SegvMteSerr, private.tagged(5)),
    );
    s.ok(p, madvise(shared, 0x2000, "dontneed"));
    s.check(p, load(shared.tagged(5), 8), value(0x7777_7777_7777_7777));
    s.check(p, ldg(shared.at(0x1ff0)), tag(5));
}

#[test]
fn dontneed_on_a_private_file_mapping_rereads_the_file() {
    let mut s = Sim::new();
    let p = s.spawn();
    let f = s.mmap(p, 0x1000, "r,w", "private,file");
    s.ok(p, store(f, 8, 0x1234));
    s.ok(p, madvise(f, 0x1000, "dontneed"));
    // The file behind it was never written: zeros.
    s.check(p, load(f, 8), value(0));
}

#[test]
fn madvise_rules() {
    // do_madvise(): misaligned EINVAL, a wrapping length EINVAL, len 0 fine;
    // madvise_walk_vmas() applies the advice to the mapped parts and
    // returns ENOMEM for holes.
    let mut s = Sim::new();
    let p = s.spawn();
    let a = s.mmap(p, 0x3000, "r,w", "");
    s.ok(p, fill(a, 0x3000, 0x11));
    s.ok(p, munmap(a.at(0x1000), 0x1000));
    s.check(p, madvise(a.at(8), 4096, "dontneed"), err(Errno::Inval));
    s.check(p, madvise(a, u64::MAX, "dontneed"), err(Errno::Inval));
    s.ok(p, madvise(a.at(0x1000), 0, "dontneed"));
    s.check(p, madvise(a, 0x3000, "dontneed"), err(Errno::NoMem));
    s.check(p, load(a, 1), value(0));
    s.check(p, load(a.at(0x2000), 1), value(0));
    s.check(
        p,
        madvise(raw(0x10_0000), 4096, "pageout"),
        err(Errno::NoMem),
    );
    s.check(p, madvise(raw(1 << 48), 4096, "pageout"), err(Errno::NoMem));
    // The other advice changes nothing visible; tagged pointers are fine.
    s.ok(p, fill(a, 0x1000, 0x22));
    for advice in [
        "pageout",
        "hugepage",
        "nohugepage",
        "mergeable",
        "unmergeable",
    ] {
        s.ok(p, madvise(a.tagged(4), 0x1000, advice));
    }
    s.ok(p, verify(a, 0x1000, 0x22));
}

#[test]
fn pin_and_unpin() {
    let mut s = Sim::new();
    let p = s.spawn();
    let a = s.mmap(p, 0x3000, "r,w", "");
    let ro = s.mmap(p, 0x1000, "r", "");
    let shm = s.mmap(p, 0x1000, "r,w", "shared,shm");
    let file = s.mmap(p, 0x1000, "r,w", "shared,file");
    let pfile = s.mmap(p, 0x1000, "r,w", "private,file");
    // A writable long-term pin: any page, any offset; tagged pointers fine.
    s.ok(p, pin(a.at(0x800).tagged(3), 0x1000));
    s.ok(p, pin(shm, 1));
    s.ok(p, pin(pfile, 1));
    s.ok(p, pin(a, 0));
    // GUP: no mapping or no VM_WRITE is EFAULT; so is a shared regular file
    // (FOLL_LONGTERM needs no dirty tracking), all or nothing.
    s.check(p, pin(ro, 1), err(Errno::Fault));
    s.check(p, pin(file, 1), err(Errno::Fault));
    s.check(p, pin(raw(0x10_0000), 1), err(Errno::Fault));
    s.check(p, pin(a.at(0x2000), 0x2000), err(Errno::Fault));
    s.check(p, pin(raw((1 << 48) - 1), 2), err(Errno::Fault));
    // Pins are counted per page: the first pin took pages 0 and 1.
    s.check(p, unpin(a, 0x3000), err(Errno::Inval));
    s.ok(p, unpin(a, 0x2000));
    s.check(p, unpin(a, 1), err(Errno::Inval));
    s.ok(p, pin(a, 1));
    s.ok(p, pin(a, 1));
    s.ok(p, unpin(a, 1));
    // A pin outlives the mapping it was taken on.
    s.ok(p, munmap(a, 0x1000));
    s.ok(p, unpin(a, 1));
    s.check(p, unpin(a, 1), err(Errno::Inval));
    s.ok(p, unpin(a, 0));
    // The child of fork holds no pins.
    s.ok(p, pin(shm, 1));
    let c = s.fork(p);
    s.check(c, unpin(shm, 1), err(Errno::Inval));
    s.ok(p, unpin(shm, 1));
}
