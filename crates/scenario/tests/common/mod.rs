//! What the harnesses over `tests/scenarios` share (`suites` runs every
//! file, `races` explores the files that ask for it): finding the files,
//! reading the `# KEY: ...` directives of their comments
//! (`tests/scenarios/README.md`), and turning each file into its parsed
//! directives, or into a failing trial when they cannot be read.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use libtest_mimic::Trial;

/// `tests/scenarios` of the repository.
pub fn suites_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/scenarios")
}

/// Every `<area>/<file>.mte` under [`suites_dir`], sorted, with its name.
pub fn scenario_files() -> Vec<(String, PathBuf)> {
    let mut found = Vec::new();
    files(&suites_dir(), "", &mut found);
    found
}

fn files(dir: &Path, prefix: &str, out: &mut Vec<(String, PathBuf)>) {
    // A folder that cannot be read is a broken suite, not an empty one.
    let entries = std::fs::read_dir(dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display()));
    let mut entries: Vec<PathBuf> = entries.filter_map(|e| Some(e.ok()?.path())).collect();
    entries.sort();
    for path in entries {
        let Some(name) = path.file_name().and_then(|n| n.to_str()) else {
            continue;
        };
        let name = format!("{prefix}{name}");
        if path.is_dir() {
            files(&path, &format!("{name}/"), out);
        } else if name.ends_with(".mte") {
            out.push((name, path));
        }
    }
}

/// The text of each comment line of `text`, after its `#`, trimmed: where
/// directives are read from (a directive is `KEY: ...` at its start).
pub fn comments(text: &str) -> impl Iterator<Item = &str> {
    text.lines()
        .filter_map(|line| line.trim_start().strip_prefix('#'))
        .map(str::trim)
}

/// The `KEY=VALUE ...` list after `directive` (`fails-with:`,
/// `explore-fails-with:`): platform keys a run replaces, as `--set` does.
/// At least one pair.
pub fn key_values(directive: &str, rest: &str) -> Result<Vec<(String, String)>, String> {
    let set = rest
        .split_whitespace()
        .map(|kv| {
            kv.split_once('=')
                .map(|(k, v)| (k.to_owned(), v.to_owned()))
                .ok_or_else(|| format!("bad `# {directive} {rest}` (KEY=VALUE ...)"))
        })
        .collect::<Result<Vec<_>, _>>()?;
    if set.is_empty() {
        return Err(format!("`# {directive}` names no KEY=VALUE"));
    }
    Ok(set)
}

/// `KEY=VALUE,...`: how a trial's name shows the keys it replaces.
pub fn label(set: &[(String, String)]) -> String {
    let pairs: Vec<String> = set.iter().map(|(k, v)| format!("{k}={v}")).collect();
    pairs.join(",")
}

/// A scenario file and the directives read from it, shared by its trials.
pub struct Parsed<T> {
    pub name: String,
    pub src: Arc<[u8]>,
    pub directives: Arc<T>,
}

/// Reads each of `found` and its directives with `parse`. A file `parse`
/// gives `None` for is left out; one that cannot be read, or whose
/// directives are wrong, becomes a failing trial of its own name in
/// `trials` (so the mistake is reported, not skipped).
pub fn parse_each<T>(
    found: Vec<(String, PathBuf)>,
    parse: impl Fn(&[u8]) -> Result<Option<T>, String>,
    trials: &mut Vec<Trial>,
) -> Vec<Parsed<T>> {
    let mut parsed = Vec::new();
    for (name, path) in found {
        let read = std::fs::read(&path)
            .map_err(|e| format!("{}: {e}", path.display()))
            .and_then(|src| Ok((parse(&src)?, src)));
        match read {
            Ok((Some(directives), src)) => parsed.push(Parsed {
                name,
                src: src.into(),
                directives: Arc::new(directives),
            }),
            Ok((None, _)) => {}
            Err(e) => trials.push(Trial::test(name, move || Err(e.into()))),
        }
    }
    parsed
}
