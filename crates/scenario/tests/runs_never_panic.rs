//! Scripts that parse run to a report, never a panic (`docs/language.md`,
//! "Running": "A scenario never panics the tool"), whatever their pointers
//! do; every failure and trace line points at a line of the input. The
//! parser's half of this property is `lang`'s `never_panics` test.

use proptest::prelude::*;

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    /// Scripts that parse run to a report, whatever their pointers do:
    /// offsets past either end of the address space, processes that exit
    /// or never exist, expectations on them, parallel blocks, any seed.
    #[test]
    fn runs_never_panic(
        lines in prop::collection::vec(run_line(), 0..24),
        seed in any::<u64>(),
    ) {
        let src = format!("platform cpus=2\nspawn p\np mmap a 4K\np fork q\n{}", lines.concat());
        let options = scenario::RunOptions {
            seed: Some(seed),
            verbose: true,
            ..scenario::RunOptions::default()
        };
        let result = scenario::run_source("f.mte", src.as_bytes(), &options, |_| {
            Ok::<_, String>(Box::new(scenario::bench::FlatMemory::new()) as Box<dyn uapi::Machine>)
        });
        // Every generated script is well formed, so it runs.
        let scenario::FileResult::Ran(report) = result else {
            panic!("{result:?}")
        };
        let last = src.lines().count() as u32;
        prop_assert!(report.failures.iter().all(|f| (1..=last).contains(&f.line)));
        prop_assert!(report.steps.iter().all(|s| (1..=last).contains(&s.line)));
    }
}

/// One line (or block) of a run: commands of `p`, a process that exits
/// (`q`), and offsets that may leave the address space.
fn run_line() -> impl Strategy<Value = String> {
    let offset = prop::sample::select(
        &[
            "",
            "+16",
            "-16",
            "+4K",
            "+0x80_0000_0000_0000",
            "-0x1000_0000_0000",
            "+0x7fff_ffff_ffff_ffff",
            "-0x7fff_ffff_ffff_ffff",
        ][..],
    );
    let tag = prop::sample::select(&["", "#0", "#7", "#15"][..]);
    let template = prop::sample::select(
        &[
            "p load a{o}{t} 8 => value 0\n",
            "p store a{o}{t} 16 0xffff => ok\n",
            "q load a{o} 1 => error ESRCH\n",
            "q exit\n",
            "p irg a a{o}{t} => tag 3\n",
            "p addg a a{o} 1008 15 => tag 0\n",
            "p mmap a 1T map=fixed=0x00ff_ffff_ffff_f000 => ok\n",
            "p munmap a{o} 4K => ok\n",
            "expect p tags a{o}{t} 0x7fff_ffff_ffff_ffff == 1\n",
            "expect q page a{o} not tagged\n",
            "expect stat mem.free >= 1\n",
            "expect invariants\n",
            "p fill a{o} 64 1 => fault SEGV_MTESERR addr=a{o}\n",
            "parallel\n  p load a{o} 8 => value 1\n  q yield => ok\nend\n",
        ][..],
    );
    (template, offset, tag)
        .prop_map(|(template, o, t)| template.replace("{o}", o).replace("{t}", t))
}
