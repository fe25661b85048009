//! IRG, ADDG, the STG family, `settag` and LDG.

use mte::{TagMask, TagStoreOp};
use rand_core::SeedableRng;
use rand_xoshiro::Xoshiro256PlusPlus;
use uapi::Outcome;

use super::harness::*;

#[test]
fn irg_draws_once_per_instruction_from_the_seeded_rng() {
    // The documented stream: one Xoshiro256++ seeded with the machine's
    // seed, one mte::irg draw per IRG in command order, whatever the masks.
    let masks: [(&str, u16); 6] = [
        ("0xfffe", 0),
        ("0xfffe", 0x00f0),
        ("0x0000", 0),
        ("0xffff", 0xffff),
        ("0x0f00", 0),
        ("0xfffe", 0),
    ];
    let mut s = Sim::with(true, 42);
    let p = s.spawn();
    let a = s.mmap(p, 4096, "r,w,mte", "");
    let mut rng = Xoshiro256PlusPlus::seed_from_u64(42);
    for (include, exclude) in masks {
        s.ok(p, prctl(&format!("include={include}")));
        let (out, ptr) = s.bind(p, irg(a.at(0x40), exclude));
        let gcr = TagMask::from_bits(u16::from_str_radix(&include[2..], 16).unwrap()).complement();
        let want = mte::irg(a.at(0x40), gcr, TagMask::from_bits(exclude), &mut rng);
        assert_eq!(
            (out, ptr),
            (Outcome::Tag(want.tag()), want),
            "{include} {exclude:#x}"
        );
    }
}

#[test]
fn irg_for_seed_0_gives_these_tags() {
    // Pinned so that the kernel model can be checked against the same
    // numbers: seed 0, include 0xfffe, eight IRGs.
    let mut s = Sim::new();
    let p = s.sync_process();
    let a = s.mmap(p, 4096, "r,w,mte", "");
    let got: Vec<u8> = (0..8)
        .map(|_| match s.bind(p, irg(a, 0)).0 {
            Outcome::Tag(t) => t.value(),
            other => panic!("{other:?}"),
        })
        .collect();
    assert_eq!(got, SEED_0_TAGS);
}

/// The first eight IRG tags of a machine with seed 0 and include 0xfffe.
const SEED_0_TAGS: [u8; 8] = [5, 6, 5, 1, 7, 1, 13, 13];

#[test]
fn irg_respects_the_masks() {
    let mut s = Sim::with(true, 7);
    let p = s.spawn();
    let a = s.mmap(p, 4096, "r,w,mte", "");
    // A new process includes nothing: every tag is excluded, IRG gives 0.
    for _ in 0..8 {
        assert_eq!(s.bind(p, irg(a.tagged(5), 0)), (tag(0), a));
    }
    // One tag included: always that one; the address and bits 63:60 kept.
    s.ok(p, prctl("include=0x0200"));
    let hi = raw(a.raw() | 0xa << 60);
    for _ in 0..8 {
        assert_eq!(s.bind(p, irg(hi, 0)), (tag(9), hi.tagged(9)));
    }
    // The exclude operand removes tags too; excluding the last one gives 0.
    s.ok(p, prctl("include=0x0300"));
    for _ in 0..8 {
        assert_eq!(s.bind(p, irg(a, 0x0200)).0, tag(8));
    }
    assert_eq!(s.bind(p, irg(a, 0x0300)).0, tag(0));
}

#[test]
fn addg_steps_over_excluded_tags() {
    // Arm ARM ADDG: ChooseNonExcludedTag(tag, tag_offset, GCR_EL1.Exclude).
    let mut s = Sim::new();
    let p = s.sync_process();
    let a = s.mmap(p, 4096, "r,w,mte", "");
    assert_eq!(
        s.bind(p, addg(a.tagged(14), 0x20, 1)),
        (tag(15), a.at(0x20).tagged(15))
    );
    // 14 + 2 wraps over 15 and the excluded 0 to 1.
    assert_eq!(
        s.bind(p, addg(a.tagged(14), 1008, 2)),
        (tag(1), a.at(1008).tagged(1))
    );
    // Include 0: everything excluded, tag 0.
    s.ok(p, prctl("include=0"));
    assert_eq!(s.bind(p, addg(a.tagged(3), 16, 1)), (tag(0), a.at(16)));
    // Past bits 55:0 the sum carries into the top byte, as the 64-bit
    // addition does; the tag field is then replaced.
    let top = raw(0x00ff_ffff_ffff_fff0);
    assert_eq!(
        s.bind(p, addg(top, 0x20, 0)).1,
        raw(0x0100_0000_0000_0010).tagged(0)
    );
}

#[test]
fn tag_stores_check_alignment_then_the_page() {
    let mut s = Sim::new();
    let p = s.sync_process();
    let a = s.mmap(p, 0x2000, "r,w,mte", "");
    let ro = s.mmap(p, 0x1000, "r,mte", "");
    let none = s.mmap(p, 0x1000, "none,mte", "");
    // Alignment first, even on an unmapped address: BUS_ADRALN at the
    // address as given.
    for op in [
        TagStoreOp::Stg,
        TagStoreOp::Stzg,
        TagStoreOp::St2g,
        TagStoreOp::Stz2g,
    ] {
        s.check(
            p,
            tag_store(op, a.at(8).tagged(3)),
            fault(BusAdrAln, a.at(8).tagged(3)),
        );
        s.check(p, tag_store(op, raw(0x18)), fault(BusAdrAln, raw(0x18)));
    }
    // A tag write is a write.
    s.check(p, stg(ro.tagged(3)), fault(SegvAccErr, ro.tagged(3)));
    s.check(p, stg(none.tagged(3)), fault(SegvAccErr, none.tagged(3)));
    s.check(p, stg(raw(0x10)), fault(SegvMapErr, raw(0x10)));
    // ST2G crossing into an unmapped page: the second granule faults and
    // the first keeps its tag.
    s.ok(p, munmap(a.at(0x1000), 0x1000));
    s.check(
        p,
        tag_store(TagStoreOp::St2g, a.at(0xff0).tagged(6)),
        fault(SegvMapErr, a.at(0x1000).tagged(6)),
    );
    s.check(p, ldg(a.at(0xff0)), tag(0));
}

#[test]
fn what_each_tag_store_writes() {
    let mut s = Sim::new();
    let p = s.sync_process();
    s.ok(p, prctl("tcf=none"));
    let a = s.mmap(p, 0x1000, "r,w,mte", "");
    let u = s.mmap(p, 0x1000, "r,w", "");
    for base in [a, u] {
        s.ok(p, fill(base, 0x100, 0xff));
    }
    s.ok(p, stg(a.tagged(1)));
    s.ok(p, tag_store(TagStoreOp::Stzg, a.at(0x10).tagged(2)));
    s.ok(p, tag_store(TagStoreOp::St2g, a.at(0x20).tagged(3)));
    s.ok(p, tag_store(TagStoreOp::Stz2g, a.at(0x40).tagged(4)));
    s.ok(p, tag_store(TagStoreOp::Stgp, a.at(0x60).tagged(5)));
    assert_eq!(s.tags(p, a, 0x80), Some(vec![1, 2, 3, 3, 4, 4, 5, 0]));
    // Data: STG and ST2G keep it; STZG, STZ2G and STGP (of xzr) zero it.
    s.ok(p, verify(a, 0x10, 0xff));
    s.ok(p, verify(a.at(0x10), 0x10, 0));
    s.ok(p, verify(a.at(0x20), 0x20, 0xff));
    s.ok(p, verify(a.at(0x40), 0x30, 0));
    s.ok(p, verify(a.at(0x70), 0x10, 0xff));
    // Untagged memory: the tag is discarded, the zeroing still happens.
    s.ok(p, tag_store(TagStoreOp::Stz2g, u.tagged(7)));
    s.check(p, ldg(u), tag(0));
    s.ok(p, verify(u, 0x20, 0));
    s.ok(p, verify(u.at(0x20), 0xe0, 0xff));
}

#[test]
fn settag_stops_at_the_first_fault() {
    let mut s = Sim::new();
    let p = s.sync_process();
    let a = s.mmap(p, 0x2000, "r,w,mte", "");
    s.ok(p, munmap(a.at(0x1000), 0x1000));
    s.check(
        p,
        settag(a.at(0xfe0).tagged(5), 0x40),
        fault(SegvMapErr, a.at(0x1000).tagged(5)),
    );
    assert_eq!(s.tags(p, a.at(0xfe0), 0x20), Some(vec![5, 5]));
    s.check(
        p,
        settag(a.at(8).tagged(5), 0x40),
        fault(BusAdrAln, a.at(8).tagged(5)),
    );
    // Nothing to tag: no instruction, no fault.
    s.ok(p, settag(a.at(8), 0));
    // A remainder is one more granule.
    s.ok(p, settag(a.tagged(9), 0x11));
    assert_eq!(s.tags(p, a, 0x30), Some(vec![9, 9, 0]));
}

#[test]
fn ldg_reads_the_granule_of_its_address() {
    let mut s = Sim::new();
    let p = s.sync_process();
    let a = s.mmap(p, 0x1000, "r,w,mte", "");
    let wo = s.mmap(p, 0x1000, "w,mte", "");
    let none = s.mmap(p, 0x1000, "none,mte", "");
    s.ok(p, stg(a.at(0x20).tagged(0xb)));
    s.check(p, ldg(a.at(0x2f).tagged(1)), tag(0xb));
    s.check(p, ldg(a.at(0x30)), tag(0));
    // LDG is a read: write-only memory is readable, PROT_NONE is not.
    s.ok(p, stg(wo.tagged(4)));
    s.check(p, ldg(wo), tag(4));
    s.check(p, ldg(none.at(0x18)), fault(SegvAccErr, none.at(0x10)));
    s.check(p, ldg(raw(0x18)), fault(SegvMapErr, raw(0x10)));
    // LDG is not tag checked.
    s.check(p, ldg(a.at(0x20)), tag(0xb));
}
