//! Every example of `shared/examples` parses, except `bad-input.mte`, which
//! is refused at line 4 naming the pointer without an offset
//! (`shared/examples/README.md`).

use std::path::PathBuf;

fn examples_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../../shared/examples")
}

#[test]
fn every_example_parses_except_bad_input() {
    let mut seen = 0;
    let mut entries: Vec<_> = std::fs::read_dir(examples_dir())
        .expect("shared/examples exists beside the repository")
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "mte"))
        .collect();
    entries.sort();
    for path in entries {
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
