//! The repository's `examples/`: every example parses and passes on the
//! kernel model, through the same code as `mtesim run`; the malformed-input
//! example (`tests/bad-inputs/bad-input.mte`) is refused at line 4, column 9,
//! naming the pointer without an offset.
//!
//! The examples are also the project specification's examples, byte for
//! byte. That comparison needs the specification beside the repository
//! (`../shared/`, present in the project's CI, absent from a user's clone):
//! when it is absent the trial is reported as *ignored* with the reason, so
//! the summary line says it did not run; with `MTESIM_REQUIRE_SHARED=1` (set
//! by `.ci/run`) its absence is a failure.

use std::path::{Path, PathBuf};

use libtest_mimic::{Arguments, Failed, Trial};
use platform::Platform;
use scenario::machine::{MachineKind, make_machine};
use scenario::{FileResult, RunOptions};

fn manifest() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn repo_examples() -> PathBuf {
    manifest().join("../../examples")
}

/// The `*.mte` files of a directory, sorted by name.
fn mte_files(dir: &Path) -> Result<Vec<PathBuf>, Failed> {
    let entries = std::fs::read_dir(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let mut files: Vec<PathBuf> = entries
        .filter_map(|e| Some(e.ok()?.path()))
        .filter(|p| p.extension().is_some_and(|e| e == "mte"))
        .collect();
    files.sort();
    Ok(files)
}

fn file_name(path: &Path) -> String {
    path.file_name().unwrap().to_string_lossy().into_owned()
}

fn example_passes(path: &Path) -> Result<(), Failed> {
    let name = file_name(path);
    let src = std::fs::read(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let result = scenario::run_source(&name, &src, &RunOptions::default(), |p: &Platform| {
        make_machine(MachineKind::Kernel, p)
    });
    match result {
        FileResult::Ran(report) if report.passed() => Ok(()),
        FileResult::Ran(report) => Err(report.render(&name, true).into()),
        FileResult::Malformed(e) => Err(e.to_string().into()),
        FileResult::CannotRun(why) => Err(format!("{name}: cannot run: {why}").into()),
    }
}

fn bad_input_is_refused() -> Result<(), Failed> {
    let path = manifest().join("tests/bad-inputs/bad-input.mte");
    let src = std::fs::read(&path).map_err(|e| format!("{}: {e}", path.display()))?;
    let err = match scenario::parse("bad-input.mte", &src) {
        Ok(_) => return Err("bad-input.mte must be refused".into()),
        Err(e) => e.to_string(),
    };
    if !err.starts_with("bad-input.mte:4:9: bad pointer `a+`: missing offset after `+`") {
        return Err(err.into());
    }
    Ok(())
}

/// Where the specification's copies of the examples and bad inputs lie, if
/// the project's specification is beside the repository.
fn shared() -> Option<PathBuf> {
    let dir = manifest().join("../../../shared");
    dir.join("examples").is_dir().then_some(dir)
}

fn same_bytes(ours: &Path, theirs: &Path) -> Result<(), Failed> {
    let read = |p: &Path| std::fs::read(p).map_err(|e| format!("{}: {e}", p.display()));
    if read(ours)? != read(theirs)? {
        return Err(format!("{} differs from {}", ours.display(), theirs.display()).into());
    }
    Ok(())
}

fn same_as_specification(shared: &Path) -> Result<(), Failed> {
    let names = |dir: &Path| -> Result<Vec<String>, Failed> {
        Ok(mte_files(dir)?.iter().map(|p| file_name(p)).collect())
    };
    let theirs = shared.join("examples");
    let ours = names(&repo_examples())?;
    if ours != names(&theirs)? {
        return Err(format!("examples/ holds {ours:?}, the specification {:?}", names(&theirs)?).into());
    }
    for name in &ours {
        same_bytes(&repo_examples().join(name), &theirs.join(name))?;
    }
    same_bytes(
        &manifest().join("tests/bad-inputs/bad-input.mte"),
        &shared.join("bad-inputs/bad-input.mte"),
    )
}

fn main() {
    let args = Arguments::from_args();
    let mut trials = vec![Trial::test("bad-input.mte is refused", bad_input_is_refused)];
    let examples = mte_files(&repo_examples()).expect("examples/ must be readable");
    assert!(examples.len() >= 5, "found only {} examples", examples.len());
    for path in examples {
        trials.push(Trial::test(format!("examples/{}", file_name(&path)), move || {
            example_passes(&path)
        }));
    }
    let required = std::env::var_os("MTESIM_REQUIRE_SHARED").is_some_and(|v| v == "1");
    let compare = match shared() {
        Some(dir) => Trial::test("examples equal the specification's (../shared)", move || {
            same_as_specification(&dir)
        }),
        None if required => Trial::test("examples equal the specification's (../shared)", || {
            Err("MTESIM_REQUIRE_SHARED=1 but ../shared/examples is absent".into())
        }),
        None => {
            eprintln!("warning: ../shared is absent: the examples are NOT compared with the specification's");
            Trial::test("examples equal the specification's (../shared ABSENT: not compared)", || Ok(()))
                .with_ignored_flag(true)
        }
    };
    trials.push(compare);
    libtest_mimic::run(&args, trials).exit();
}
