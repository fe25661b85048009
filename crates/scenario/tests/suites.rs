//! The scenario suites: every `tests/scenarios/<area>/*.mte` of the
//! repository is one test, named `<area>/<file>.mte` (so a failure names the
//! file, and `cargo test -p mtesim-scenario --test suites -- AREA` runs one
//! area). Each runs through the code `mtesim run` uses:
//! [`scenario::run_source`] on a machine from
//! [`scenario::machine::make_machine`].
//!
//! What a file must do, by comments in it (`tests/scenarios/README.md`):
//! - `# expect-error: LINE:COLUMN [TEXT]`: be refused as malformed at
//!   `LINE:COLUMN`, with a message containing `TEXT` if given;
//! - `# fails-with: KEY=VALUE ...` (repeatable): also run with those
//!   platform keys replaced, as `--set` does, and fail there (a known
//!   mistake switched on must be caught), as the test
//!   `<area>/<file>.mte@fails-with:KEY=VALUE`;
//! - otherwise: pass (`PASS`), on the machine `# machine: KIND` names
//!   (`kernel` by default, `reference`, or `both`: one test per machine,
//!   named `<area>/<file>.mte@kernel` and `...@reference`), with the
//!   machine's invariants checked after every command
//!   ([`RunOptions::check_invariants`]).
//!
//! Every design runs every suite: a kernel file also runs under each
//! registered design (`platform::Design::all()`, so a new design joins
//! without a change here) other than its own, with `tag-storage=` replaced
//! as `--set` does, as the test `<area>/<file>.mte@design=NAME`. Where its
//! expectations hold:
//! - `# designs: NAME,...`: under those designs (`all`: every design;
//!   `mte`: every design with MTE, so that new ones join);
//! - else a platform line naming `tag-storage=NAME`: under that one only;
//! - else (the default design): under every design.
//!
//! A design named by `# fails-with: tag-storage=NAME` must fail instead
//! (its own test). Designs a file does not hold for are listed as ignored
//! tests, so the gap is visible.
//!
//! Files are found when the test runs, so a new file needs no rebuild.

mod common;

use common::{Parsed, comments, key_values, label, parse_each, scenario_files, suites_dir};
use libtest_mimic::{Arguments, Failed, Trial};
use platform::{Design, Platform};
use scenario::machine::{MachineKind, make_machine};
use scenario::run::{FileResult, RunOptions, Status};

/// What a file's comments ask of it.
#[derive(Debug, PartialEq, Eq)]
struct Directives {
    /// `LINE:COLUMN` and the text the message must contain.
    expect_error: Option<(u32, u32, String)>,
    /// The machines the file runs on (one test each).
    machines: Vec<MachineKind>,
    /// `# fails-with: KEY=VALUE ...`: each line one more test, which runs the
    /// file with those keys replaced (as `--set` does) and must fail: a
    /// known mistake switched on must be caught by the file.
    fails_with: Vec<Vec<(String, String)>>,
    /// `# designs: NAME,...`: the designs whose behaviour the file's
    /// expectations describe (`None`: see [`holds_under`]).
    designs: Option<Vec<String>>,
}

fn directives(src: &[u8]) -> Result<Directives, String> {
    let text = String::from_utf8_lossy(src);
    let mut found = Directives {
        expect_error: None,
        machines: vec![MachineKind::default()],
        fails_with: Vec::new(),
        designs: None,
    };
    for comment in comments(&text) {
        if let Some(rest) = comment.strip_prefix("expect-error:") {
            let rest = rest.trim();
            let (at, needle) = rest.split_once(' ').unwrap_or((rest, ""));
            let (line, column) = at
                .split_once(':')
                .and_then(|(l, c)| Some((l.parse().ok()?, c.parse().ok()?)))
                .ok_or_else(|| format!("bad `# expect-error: {rest}` (LINE:COLUMN [TEXT])"))?;
            found.expect_error = Some((line, column, needle.trim().to_owned()));
        } else if let Some(rest) = comment.strip_prefix("fails-with:") {
            found.fails_with.push(key_values("fails-with:", rest)?);
        } else if let Some(rest) = comment.strip_prefix("designs:") {
            // The list is the first word; the rest of the line says why.
            let rest = rest.split_whitespace().next().unwrap_or_default();
            let names: Vec<String> = if rest == "all" {
                Design::all().map(|d| d.name().to_owned()).collect()
            } else if rest == "mte" {
                Design::all()
                    .filter(|d| d.rules().mte())
                    .map(|d| d.name().to_owned())
                    .collect()
            } else {
                rest.split(',').map(|n| n.trim().to_owned()).collect()
            };
            if let Some(bad) = names.iter().find(|n| Design::by_name(n).is_none()) {
                return Err(format!(
                    "`# designs: {rest}`: `{bad}` is not a design ({})",
                    Design::names()
                ));
            }
            found.designs = Some(names);
        } else if let Some(kind) = comment.strip_prefix("machine:") {
            found.machines = match kind.trim() {
                "both" => vec![MachineKind::Kernel, MachineKind::Reference],
                one => vec![one.parse().map_err(|e| format!("{e}"))?],
            };
        }
    }
    Ok(found)
}

/// The `tag-storage=` value of the file's platform line, if it names one.
fn own_design(src: &[u8]) -> Option<String> {
    let text = String::from_utf8_lossy(src);
    let line = text
        .lines()
        .map(str::trim_start)
        .find(|l| !l.is_empty() && !l.starts_with('#'))?;
    let rest = line.strip_prefix("platform")?;
    rest.split_whitespace()
        .take_while(|tok| !tok.starts_with('#'))
        .find_map(|tok| tok.strip_prefix("tag-storage="))
        .map(str::to_owned)
}

/// The designs under which the file's expectations hold (see the module
/// doc), and the design it runs under as written.
fn holds_under(src: &[u8], directives: &Directives) -> (Vec<String>, String) {
    let own = own_design(src);
    let written = own
        .clone()
        .unwrap_or_else(|| Design::default().name().to_owned());
    let holds = match (&directives.designs, own) {
        (Some(names), _) => names.clone(),
        (None, Some(own)) => vec![own],
        (None, None) => Design::all().map(|d| d.name().to_owned()).collect(),
    };
    (holds, written)
}

/// The file with `set` replacing platform keys must run and fail.
fn fails_with(name: &str, src: &[u8], set: &[(String, String)]) -> Result<(), Failed> {
    let options = RunOptions {
        check_invariants: true,
        set: set.to_vec(),
        ..RunOptions::default()
    };
    let result = scenario::run_source(name, src, &options, |p: &Platform| {
        make_machine(MachineKind::Kernel, p)
    });
    match result {
        FileResult::Ran(report) if report.status() == Status::Fail => Ok(()),
        FileResult::Ran(report) => Err(format!(
            "expected the file to fail with {set:?}, got {:?}",
            report.status()
        )
        .into()),
        FileResult::Malformed(e) => Err(e.to_string().into()),
        FileResult::CannotRun(why) => Err(format!("{name}: cannot run: {why}").into()),
    }
}

fn check(
    name: &str,
    src: &[u8],
    directives: &Directives,
    machine: MachineKind,
    set: &[(String, String)],
) -> Result<(), Failed> {
    let options = RunOptions {
        check_invariants: true,
        set: set.to_vec(),
        ..RunOptions::default()
    };
    let result = scenario::run_source(name, src, &options, |p: &Platform| make_machine(machine, p));
    match (&directives.expect_error, result) {
        (Some((line, column, needle)), FileResult::Malformed(e)) => {
            let message = e.to_string();
            let at = format!("{name}:{line}:{column}: ");
            if !message.starts_with(&at) || !message.contains(needle.as_str()) {
                return Err(format!(
                    "expected an error at {at}containing {needle:?}, got {message}"
                )
                .into());
            }
            Ok(())
        }
        (Some((line, column, _)), _) => {
            Err(format!("expected an error at {line}:{column}, but the file is well formed").into())
        }
        (None, FileResult::Ran(report)) if report.passed() => Ok(()),
        (None, FileResult::Ran(report)) => {
            let mut text = report.render(name, false);
            if let Some(error) = report.render_error(name) {
                text.push_str(&error);
            }
            Err(text.into())
        }
        (None, FileResult::Malformed(e)) => Err(e.to_string().into()),
        (None, FileResult::CannotRun(why)) => Err(format!("{name}: cannot run: {why}").into()),
    }
}

/// The directive reader itself, as one more trial.
fn directives_are_read_from_comments() -> Result<(), Failed> {
    let read = |src: &str| directives(src.as_bytes());
    let want = Directives {
        expect_error: Some((4, 9, "missing offset after `+`".into())),
        machines: vec![MachineKind::Kernel],
        fails_with: Vec::new(),
        designs: None,
    };
    if read("# expect-error: 4:9 missing offset after `+`\nspawn p\n") != Ok(want) {
        return Err("expect-error with text".into());
    }
    let plain = read("  #   machine: reference\n# expect-error: 2:1\n")?;
    if plain.machines != [MachineKind::Reference]
        || plain.expect_error != Some((2, 1, String::new()))
    {
        return Err(format!("{plain:?}").into());
    }
    let both = read("# machine: both\n")?;
    if both.machines != [MachineKind::Kernel, MachineKind::Reference] {
        return Err(format!("{both:?}").into());
    }
    let mistakes = read("# fails-with: mistake=a\n# fails-with: mistake=b tag-storage=static\n")?;
    let pair = |k: &str, v: &str| (k.to_owned(), v.to_owned());
    if mistakes.fails_with
        != [
            vec![pair("mistake", "a")],
            vec![pair("mistake", "b"), pair("tag-storage", "static")],
        ]
    {
        return Err(format!("{mistakes:?}").into());
    }
    let designs = read("# designs: dynamic,static (why)\nplatform tag-storage=none\n")?;
    if designs.designs != Some(vec!["dynamic".into(), "static".into()]) {
        return Err(format!("{designs:?}").into());
    }
    let src = b"# a file\nplatform memory=16M tag-storage=static # why\n";
    let none = read("")?;
    if holds_under(src, &none) != (vec!["static".into()], "static".into())
        || own_design(b"spawn p\n").is_some()
        || holds_under(b"spawn p\n", &none).0.len() != Design::all().count()
        || holds_under(b"spawn p\n", &designs).0 != ["dynamic", "static"]
    {
        return Err("the designs a file holds for".into());
    }
    if read("# expect-error: four\n").is_ok()
        || read("# designs: bogus\n").is_ok()
        || read("# machine: qemu\n").is_ok()
        || read("# fails-with: mistake\n").is_ok()
        || read("# fails-with:\n").is_ok()
    {
        return Err("bad directives accepted".into());
    }
    Ok(())
}

fn main() {
    let args = Arguments::from_args();
    let found = scenario_files();
    assert!(
        found.len() >= 50,
        "only {} scenario files under {}",
        found.len(),
        suites_dir().display()
    );
    let mut trials = vec![Trial::test(
        "harness: directives",
        directives_are_read_from_comments,
    )];
    let every_file = |src: &[u8]| directives(src).map(Some);
    for file in parse_each(found, every_file, &mut trials) {
        let Parsed {
            name,
            src,
            directives,
        } = file;
        for &machine in &directives.machines {
            let trial_name = match directives.machines.len() {
                1 => name.clone(),
                _ => format!("{name}@{machine}"),
            };
            let (name, src, directives) = (name.clone(), src.clone(), directives.clone());
            trials.push(Trial::test(trial_name, move || {
                check(&name, &src, &directives, machine, &[])
            }));
        }
        // Every other design, on the kernel (the reference model has none).
        let design_runs =
            directives.expect_error.is_none() && directives.machines.contains(&MachineKind::Kernel);
        if design_runs {
            let (holds, written) = holds_under(&src, &directives);
            let must_fail = |d: &str| {
                directives
                    .fails_with
                    .iter()
                    .any(|set| set.iter().any(|(k, v)| k == "tag-storage" && v == d))
            };
            for design in Design::all().map(Design::name) {
                if design == written || must_fail(design) {
                    continue;
                }
                let trial_name = format!("{name}@design={design}");
                if !holds.iter().any(|h| h == design) {
                    trials.push(Trial::test(trial_name, || Ok(())).with_ignored_flag(true));
                    continue;
                }
                let set = vec![("tag-storage".to_owned(), design.to_owned())];
                let (name, src, directives) = (name.clone(), src.clone(), directives.clone());
                trials.push(Trial::test(trial_name, move || {
                    check(&name, &src, &directives, MachineKind::Kernel, &set)
                }));
            }
        }
        for set in &directives.fails_with {
            let trial_name = format!("{name}@fails-with:{}", label(set));
            let (name, src, set) = (name.clone(), src.clone(), set.clone());
            trials.push(Trial::test(trial_name, move || {
                fails_with(&name, &src, &set)
            }));
        }
    }
    libtest_mimic::run(&args, trials).exit();
}
