//! Replays the fuzzer's seed corpus (`fuzz/corpus/parse/`) and any crash
//! artifacts it left (`fuzz/artifacts/parse/`) through `parse` on stable, so
//! a fuzzer finding becomes a regression test once its file is saved.

use std::path::{Path, PathBuf};

fn files_in(dir: &Path) -> Vec<PathBuf> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut files: Vec<PathBuf> = entries
        .map(|e| e.expect("readable directory entry").path())
        .filter(|p| p.is_file())
        .collect();
    files.sort();
    files
}

#[test]
fn corpus_and_artifacts_parse_without_panicking() {
    let fuzz = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../fuzz");
    let corpus = files_in(&fuzz.join("corpus/parse"));
    assert!(
        corpus.len() >= 10,
        "seed corpus missing: {}",
        fuzz.display()
    );
    let artifacts = files_in(&fuzz.join("artifacts/parse"));
    for path in corpus.iter().chain(&artifacts) {
        let src = std::fs::read(path).unwrap();
        let result = std::panic::catch_unwind(|| lang::parse("corpus.mte", &src));
        let Ok(result) = result else {
            panic!("parse panicked on {}", path.display());
        };
        if let Err(err) = result {
            assert!(
                err.span().end as usize <= src.len(),
                "{}: {err}",
                path.display()
            );
            assert!(
                err.line() >= 1 && err.column() >= 1,
                "{}: {err}",
                path.display()
            );
        }
    }
    // The seeds keep their meaning: the examples parse, the malformed seeds
    // do not.
    let parses = |name: &str| {
        lang::parse(
            name,
            &std::fs::read(fuzz.join("corpus/parse").join(name)).unwrap(),
        )
        .is_ok()
    };
    assert!(parses("everything.mte") && parses("empty.mte") && parses("zero-page-block.mte"));
    assert!(
        !parses("bad-input.mte")
            && !parses("binary-garbage.mte")
            && !parses("unclosed-parallel.mte")
    );
}
