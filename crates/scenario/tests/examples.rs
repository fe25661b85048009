//! The repository's `examples/` (copies of `shared/examples`, byte for
//! byte): every example parses, except `bad-input.mte`, which is refused at
//! line 4 naming the pointer without an offset (`examples/README.md`);
//! every other example passes on the kernel model, through the same code
//! as `mtesim run`.

use std::path::{Path, PathBuf};

fn repo_examples() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples")
}

/// `*.mte` and `README.md` of a directory, sorted by name.
fn example_files(dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .filter(|p| {
            p.extension().is_some_and(|e| e == "mte")
                || p.file_name().is_some_and(|n| n == "README.md")
        })
        .collect();
    files.sort();
    files
}

#[test]
fn every_example_parses_except_bad_input() {
    let mut seen = 0;
    for path in example_files(&repo_examples()) {
        if path.extension().is_none_or(|e| e != "mte") {
            continue;
        }
        let name = path.file_name().unwrap().to_str().unwrap().to_owned();
        let src = std::fs::read(&path).unwrap();
        let result = scenario::parse(&name, &src);
        if name == "bad-input.mte" {
            let err = result.expect_err("bad-input.mte must be refused");
            let msg = err.to_string();
            assert!(msg.starts_with("bad-input.mte:4:"), "{msg}");
            assert!(
                msg.contains("`a+`") && msg.contains("missing offset"),
                "{msg}"
            );
        } else {
            let script = result.unwrap_or_else(|e| panic!("{e}"));
            assert!(!script.stmts.is_empty(), "{name}");
        }
        seen += 1;
    }
    assert!(seen >= 6, "found only {seen} examples");
}

#[test]
fn the_copies_are_byte_identical_to_shared_examples() {
    // shared/ lies beside the repository where the project keeps it; a
    // clone without it has nothing to compare with.
    let shared = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../../shared/examples");
    if !shared.is_dir() {
        return;
    }
    let names = |dir: &Path| -> Vec<String> {
        example_files(dir)
            .iter()
            .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
            .collect()
    };
    assert_eq!(names(&repo_examples()), names(&shared), "the same files");
    for name in names(&shared) {
        let ours = std::fs::read(repo_examples().join(&name)).unwrap();
        let theirs = std::fs::read(shared.join(&name)).unwrap();
        assert!(
            ours == theirs,
            "examples/{name} differs from shared/examples/{name}"
        );
    }
}

#[test]
fn every_example_but_bad_input_passes_on_the_kernel() {
    use platform::Platform;
    use scenario::machine::{MachineKind, make_machine};
    use scenario::{FileResult, RunOptions};

    let mut ran = 0;
    for path in example_files(&repo_examples()) {
        let name = path.file_name().unwrap().to_str().unwrap().to_owned();
        if !name.ends_with(".mte") || name == "bad-input.mte" {
            continue;
        }
        let src = std::fs::read(&path).unwrap();
        let result = scenario::run_source(&name, &src, &RunOptions::default(), |p: &Platform| {
            make_machine(MachineKind::Kernel, p)
        });
        match result {
            FileResult::Ran(report) => {
                assert!(report.passed(), "{}", report.render(&name, true));
            }
            FileResult::Malformed(e) => panic!("{e}"),
            FileResult::CannotRun(why) => panic!("{name}: cannot run: {why}"),
        }
        ran += 1;
    }
    assert!(ran >= 5, "ran only {ran} examples");
}
