//! Proptest over the fuzz generator, reference against kernel: proptest
//! draws a generator seed and a length, [`difftest::generate`] makes the
//! program for one fixed platform of each tag storage design but `rfc-v3`
//! (`dynamic` with two mistakes built in, which the fuzzer must catch; its
//! other code is `dynamic`'s), and a few `dynamic` variants (huge pages
//! and swap, data kept out of or put into tag storage), and [`difftest::run_program`] runs it
//! in lockstep on `kernel::Kernel` and `refmodel::RefMachine`: every reply
//! must agree and the kernel's invariants hold after every step.
//!
//! Shrinking: a shorter length of the same seed is a prefix of the program
//! (the generator draws step by step), so proptest's shrinking finds the
//! shortest failing prefix; the failure message then carries the difftest
//! shrinker's minimal `.mte` reproducer of it.
//!
//! Memory (docs/semantics.md §16): the reference has unlimited memory; the
//! generator keeps the pages all live processes could touch under a third
//! of memory, so nothing depends on the machine's memory.
//!
//! Bound: the whole file must run in about 30 s in the dev profile on two
//! cores (the CI budget for it is a minute): `CASES` programs of at most
//! `MAX_STEPS` steps per platform, ten platforms.

mod common;

use common::{kernel, reference};
use difftest::{
    Factory, GenConfig, ProgramPlatform, Provenance, ShrinkLimits, generate, reproducer,
    run_program, shrink,
};
use platform::{Design, PlatformSpec, TagStorageData, Thp};
use proptest::prelude::*;
use proptest::test_runner::{Config, TestCaseError};

/// Cases per platform test; eleven platform tests in all.
const CASES: u32 = 128;
/// Steps per program at most.
const MAX_STEPS: usize = 80;

/// `memory` MiB under `policy`, the other keys left out.
fn platform(memory: u64, policy: Design) -> ProgramPlatform {
    ProgramPlatform {
        memory: memory << 20,
        policy,
        block_size: None,
        data: None,
        thp: Thp::Never,
        swap: 0,
        seed: PlatformSpec::default().seed,
        mistakes: platform::Mistakes::NONE,
        pcp: false,
        thp_sizes: platform::ThpSizes::NONE,
        free_list_order: platform::FreeListOrder::Address,
    }
}

/// A registered design by name (the designs past the first three have no
/// constant).
fn design(name: &str) -> Design {
    Design::by_name(name).unwrap_or_else(|| panic!("design {name} is registered"))
}

fn run(platform: ProgramPlatform, seed: u64, steps: usize) -> Result<(), TestCaseError> {
    let program = generate(&GenConfig::on(platform, steps), seed);
    let (under_test, reference): (Factory<'_>, Factory<'_>) = (&kernel, &reference);
    let run = run_program(&program, under_test, reference)
        .map_err(|e| TestCaseError::fail(e.to_string()))?;
    let Some(failure) = run.failure else {
        return Ok(());
    };
    let provenance = Provenance {
        seed,
        policy: platform.policy,
        program: 0,
        original_len: program.steps.len(),
    };
    let text = match shrink(
        &program,
        &failure,
        under_test,
        reference,
        ShrinkLimits::default(),
    ) {
        // Without its first line, which names `mtesim fuzz` options that
        // do not make this program.
        Ok(shrunk) => {
            let text = reproducer(&shrunk.program, &shrunk.failure, &provenance);
            text.split_once('\n')
                .map_or(text.clone(), |(_, rest)| rest.to_owned())
        }
        Err(e) => format!("(not shrunk: {e})\n{}", program.render()),
    };
    Err(TestCaseError::fail(format!(
        "seed {seed}, {steps} steps: {failure}\n{text}"
    )))
}

fn config() -> Config {
    Config {
        cases: CASES,
        // Each shrinking step reruns a program and the difftest shrinker
        // runs once at the end of each: bound it so a failure still
        // reports within a few minutes.
        max_shrink_iters: 200,
        failure_persistence: None,
        ..Config::default()
    }
}

/// A generator seed and a program length.
fn programs() -> impl Strategy<Value = (u64, usize)> {
    (any::<u64>(), 1..=MAX_STEPS)
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn no_mte((seed, steps) in programs()) {
        run(platform(8, Design::NONE), seed, steps)?;
    }

    #[test]
    fn static_tag_storage((seed, steps) in programs()) {
        let p = ProgramPlatform {
            block_size: Some(16 << 10),
            ..platform(8, Design::STATIC)
        };
        run(p, seed, steps)?;
    }

    #[test]
    fn dynamic_tag_storage((seed, steps) in programs()) {
        let p = ProgramPlatform { seed: 3, ..platform(16, Design::DYNAMIC) };
        run(p, seed, steps)?;
    }

    #[test]
    fn dynamic_prefer_tag_storage_for_data((seed, steps) in programs()) {
        let p = ProgramPlatform {
            data: Some(TagStorageData::Prefer),
            block_size: Some(64 << 10),
            ..platform(8, Design::DYNAMIC)
        };
        run(p, seed, steps)?;
    }

    #[test]
    fn dynamic_with_huge_pages_and_swap((seed, steps) in programs()) {
        let p = ProgramPlatform {
            data: Some(TagStorageData::Prefer),
            thp: Thp::Always,
            swap: 1 << 20,
            ..platform(32, Design::DYNAMIC)
        };
        run(p, seed, steps)?;
    }

    #[test]
    fn xnu_tag_storage((seed, steps) in programs()) {
        // Huge pages (an ACTIVE run of 16 cells), swap and untagged data
        // in the tag storage (CLAIMED cells the refill must reclaim).
        let p = ProgramPlatform {
            data: Some(TagStorageData::Prefer),
            thp: Thp::Always,
            swap: 1 << 20,
            ..platform(16, design("xnu"))
        };
        run(p, seed, steps)?;
    }

    #[test]
    fn google_tag_storage((seed, steps) in programs()) {
        let p = ProgramPlatform {
            data: Some(TagStorageData::Prefer),
            thp: Thp::Always,
            block_size: Some(16 << 10),
            ..platform(16, design("google"))
        };
        run(p, seed, steps)?;
    }

    #[test]
    fn rfc_v2_tag_storage((seed, steps) in programs()) {
        // Reservation inside the allocation (it may fail and take the next
        // page), v2's block count, retry-and-replay faults; untagged data
        // in tag storage so that claims migrate.
        let p = ProgramPlatform {
            data: Some(TagStorageData::Prefer),
            block_size: Some(16 << 10),
            swap: 1 << 20,
            ..platform(16, design("rfc-v2"))
        };
        run(p, seed, steps)?;
    }

    #[test]
    fn cleancache_tag_storage((seed, steps) in programs()) {
        // Clean file pages in unreserved blocks, dropped by claims: swap
        // and reclaim so that pages reach the cleancache.
        let p = ProgramPlatform {
            swap: 1 << 20,
            ..platform(8, design("cleancache"))
        };
        run(p, seed, steps)?;
    }

    #[test]
    fn dynamic_with_linux_free_lists((seed, steps) in programs()) {
        // Linux's LIFO free lists and per-CPU lists: a freed page is the
        // next one handed out, so released tag storage comes back as data.
        let p = ProgramPlatform {
            data: Some(TagStorageData::Prefer),
            pcp: true,
            free_list_order: platform::FreeListOrder::Linux,
            swap: 1 << 20,
            ..platform(8, Design::DYNAMIC)
        };
        run(p, seed, steps)?;
    }

    #[test]
    fn dynamic_never_tag_storage_for_data((seed, steps) in programs()) {
        let p = ProgramPlatform {
            data: Some(TagStorageData::Never),
            ..platform(8, Design::DYNAMIC)
        };
        run(p, seed, steps)?;
    }
}
