//! The streaming path of plain access lines (`Runner::access`, taken by
//! `run_source` for lines `lang::Statements::next_access` reads) against
//! the statement path (`Runner::statement`, what `run_script` runs): random
//! traces on the kernel must give the same report either way, failures,
//! digest, counters and commands included, and the same error for a
//! malformed file.

use proptest::prelude::*;
use proptest::sample::select;

use super::{FileResult, Platform, RunOptions, RunReport, run_script, run_source};
use crate::machine::{MachineKind, make_machine};

/// A tagged mapping at 0x10000 (tag 3 on its first 64 bytes), an untagged
/// one at 0x20000, a second process `q`, sync tag checks.
const HEADER: &str = "spawn p\n\
    p prctl tagged-addr=on tcf=sync include=0xfffe\n\
    p mmap a 16K prot=r,w,mte map=private,anon,fixed=0x10000\n\
    p mmap b 8K map=private,anon,fixed=0x20000\n\
    p settag a#3 64\n\
    p fork q\n";

/// An address a trace would write: in either mapping, near its end, or
/// in no mapping, with a logical tag in bits 59:56.
fn address() -> impl Strategy<Value = u64> {
    (
        select(&[0x10000u64, 0x10040, 0x13ff8, 0x20000, 0x21ff9, 0x80000][..]),
        0u64..0x40,
        select(&[0u64, 0, 3, 5][..]),
    )
        .prop_map(|(base, offset, tag)| (tag << 56) | (base + offset))
}

/// One line: mostly plain access lines (as a trace writes them, and in
/// spellings only the token path reads), with outcomes, expectations,
/// named pointers, commands that change what later accesses see, and now
/// and then a malformed line.
fn line() -> impl Strategy<Value = String> {
    let access = (
        select(&["p", "p", "q"][..]),
        0u8..3,
        address(),
        select(&[1u32, 2, 4, 8, 8, 16][..]),
        any::<u64>(),
        select(&[" ", " ", " ", "  ", "\t"][..]),
        select(
            &[
                "",
                "",
                "",
                " => ok",
                " => value 0x0",
                " => fault SEGV_MTESERR",
                " # c",
            ][..],
        ),
        any::<bool>(),
    )
        .prop_map(|(proc, word, addr, size, value, sep, tail, decimal)| {
            let value = if size >= 8 {
                value
            } else {
                value & ((1u64 << (8 * size)) - 1)
            };
            let value = if decimal {
                value.to_string()
            } else {
                format!("{value:#x}")
            };
            let parts = match word {
                0 => vec![
                    proc.to_owned(),
                    "load".into(),
                    format!("{addr:#x}"),
                    size.to_string(),
                ],
                1 => vec![
                    proc.to_owned(),
                    "store".into(),
                    format!("{addr:#x}"),
                    size.to_string(),
                    value,
                ],
                _ => vec![proc.to_owned(), "stg".into(), format!("{addr:#x}")],
            };
            format!("{}{tail}", parts.join(sep))
        });
    let other = select(
        &[
            "p load a+0x10#3 8",
            "p store a#3 8 0x1122",
            "p load a-0x20000 8",
            "p store b+0x1ff8 8 7",
            "p mprotect b 4K prot=r",
            "p settag a#5 32",
            "q exit",
            "expect stat fault.mte >= 1",
            "expect invariants",
            "p load 0x10000 3",
            "",
            "# comment",
        ][..],
    )
    .prop_map(str::to_owned);
    prop_oneof![4 => access, 1 => other]
}

/// `src` run the way `mtesim run` runs it (streaming) and through the
/// statement path, with `options`.
fn both(src: &str, options: &RunOptions) -> (FileResult, Result<RunReport, String>) {
    let kernel = |p: &Platform| make_machine(MachineKind::Kernel, p);
    let streamed = run_source("t.mte", src.as_bytes(), options, kernel);
    let statements = lang::parse("t.mte", src.as_bytes())
        .map(|script| {
            let platform = Platform::from_spec(&options.platform_spec(&script.platform_spec()))
                .expect("the default platform builds");
            let mut machine = make_machine(MachineKind::Kernel, &platform).expect("boots");
            run_script(&script, &mut *machine, options)
        })
        .map_err(|e| e.to_string());
    (streamed, statements)
}

/// What two runs of one file must agree on (the verbose steps are not
/// compared: `run_script` has no source text for them).
fn observed(report: &RunReport) -> impl PartialEq + core::fmt::Debug + '_ {
    (
        &report.failures,
        &report.counters,
        report.digest,
        report.commands,
        &report.error,
    )
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(200))]
    #[test]
    fn streamed_runs_equal_statement_runs(lines in proptest::collection::vec(line(), 1..40)) {
        let src = format!("{HEADER}{}\n", lines.join("\n"));
        let plain = RunOptions::default();
        let (streamed, statements) = both(&src, &plain);
        match (&streamed, &statements) {
            (FileResult::Ran(a), Ok(b)) => {
                prop_assert_eq!(observed(a), observed(b));
                // A verbose run takes the statement path for every line.
                let verbose = RunOptions { verbose: true, ..RunOptions::default() };
                let FileResult::Ran(c) =
                    run_source("t.mte", src.as_bytes(), &verbose, |p: &Platform| {
                        make_machine(MachineKind::Kernel, p)
                    })
                else {
                    panic!("a verbose run of a file that ran did not run");
                };
                prop_assert_eq!(observed(a), observed(&c));
                prop_assert_eq!(a.render("t.mte", false), c.render("t.mte", false));
            }
            (FileResult::Malformed(a), Err(b)) => prop_assert_eq!(&a.to_string(), b),
            _ => prop_assert!(false, "{streamed:?} against {statements:?}"),
        }
    }
}

#[test]
fn a_trace_of_every_kind_of_line_runs_the_same_both_ways() {
    // Hits, tag faults, a map fault, outcomes that fail, a stopped
    // process, a bad pointer: the cases the property test draws, once each.
    let src = format!(
        "{HEADER}p store 0x0300000000010000 8 0x1122\np load 0x0300000000010000 8 => value 0x1122\n\
         p load 0x10000 8 => value 0x0\np store 0x0500000000010000 8 1\n\
         p load 0x80000 8\np stg 0x0300000000010040\nq exit\nq load 0x20000 8\n\
         p load a-0x20000 8\np load  0x20000 8\n"
    );
    let (streamed, statements) = both(&src, &RunOptions::default());
    let (FileResult::Ran(a), Ok(b)) = (&streamed, &statements) else {
        panic!("{streamed:?} {statements:?}")
    };
    assert_eq!(observed(a), observed(b));
    let failed: Vec<u32> = a.failures.iter().map(|f| f.line).collect();
    assert_eq!(failed, [9, 15], "{:?}", a.failures);
    assert_eq!(a.commands, 16);
}
