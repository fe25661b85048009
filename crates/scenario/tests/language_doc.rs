//! `docs/language.md` stays in step with the parser and the machine: every
//! fenced `mte` block in it is a complete scenario that parses and passes
//! on the kernel model, through the code `mtesim run` uses.

use std::path::Path;

use platform::Platform;
use scenario::machine::{MachineKind, make_machine};
use scenario::{FileResult, RunOptions};

/// The fenced `mte` blocks of a Markdown text, with the line each starts on.
fn mte_blocks(text: &str) -> Vec<(usize, String)> {
    let mut blocks = Vec::new();
    let mut current: Option<(usize, String)> = None;
    for (i, line) in text.lines().enumerate() {
        match (&mut current, line.trim_end()) {
            (None, "```mte") => current = Some((i + 2, String::new())),
            (Some(_), "```") => blocks.extend(current.take()),
            (Some((_, body)), _) => {
                body.push_str(line);
                body.push('\n');
            }
            (None, _) => {}
        }
    }
    assert!(current.is_none(), "an mte block is not closed");
    blocks
}

#[test]
fn every_example_of_the_language_reference_parses_and_passes() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../docs/language.md");
    let text = std::fs::read_to_string(&path).expect("docs/language.md");
    let blocks = mte_blocks(&text);
    assert!(blocks.len() >= 6, "only {} examples", blocks.len());
    for (line, body) in blocks {
        let name = format!("docs/language.md:{line}");
        let result = scenario::run_source(
            &name,
            body.as_bytes(),
            &RunOptions::default(),
            |p: &Platform| make_machine(MachineKind::Kernel, p),
        );
        match result {
            FileResult::Ran(report) => assert!(report.passed(), "{}", report.render(&name, true)),
            FileResult::Malformed(e) => panic!("{e}"),
            FileResult::CannotRun(why) => panic!("{name}: cannot run: {why}"),
        }
    }
}

#[test]
fn blocks_are_found_with_their_lines() {
    let text = "intro\n```mte\nspawn p\n```\n```sh\nls\n```\n```mte\np yield\n```\n";
    assert_eq!(
        mte_blocks(text),
        [(3, "spawn p\n".to_owned()), (9, "p yield\n".to_owned())]
    );
}
