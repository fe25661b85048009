//! The machine a scenario runs on when `mtesim run --platform FILE`
//! describes it apart from the scenario (a TOML file or a device tree), and
//! how the scenario's own `platform` line and `--set` meet it
//! (`docs/cli.md`, "A machine from a file").
//!
//! The rule: the file fixes the machine. A key the scenario's `platform`
//! line gives must agree with it (the scenario was written for some other
//! machine otherwise, and running it here would answer a question it did
//! not ask), unless `--set` names that key. `--set` may change the kernel's
//! settings (`swap`, `thp`, `seed`, `cpus`, ...) but not the layout the
//! file describes (`memory`, `page-size`, `tag-storage`, `block-size`).

use platform::num::format_size;
use platform::spec::PlatformSpec;
use platform::{KernelSettings, Platform};
use thiserror::Error;

use lang::ast::PlatformLine;

/// A machine described by a file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DescribedMachine {
    /// The file, as named on the command line (for messages).
    pub file: String,
    pub platform: Platform,
}

/// Keys that say what the machine is made of, which only the file decides.
pub use platform::LAYOUT_KEYS;

/// Why a scenario cannot run on a described machine.
#[derive(Clone, Debug, PartialEq, Eq, Error)]
pub enum DescribedError {
    #[error(
        "line {line}: `{key}={value}` disagrees with {file} ({actual}); drop the key, or override it with --set"
    )]
    Disagrees {
        line: u32,
        key: &'static str,
        value: String,
        file: String,
        actual: String,
    },
    #[error("--set {key} cannot change the machine {file} describes (only kernel settings can)")]
    LayoutSet { key: String, file: String },
}

impl DescribedMachine {
    /// The machine for a scenario whose platform line is `line` (with
    /// `--set` and `--seed` applied: `spec`), `set` naming the keys `--set`
    /// (and `--seed`) gave.
    pub fn for_scenario(
        &self,
        line: Option<&PlatformLine>,
        spec: &PlatformSpec,
        set: &[&str],
    ) -> Result<Platform, DescribedError> {
        if let Some(key) = set.iter().find(|k| LAYOUT_KEYS.contains(k)) {
            return Err(DescribedError::LayoutSet {
                key: (*key).to_owned(),
                file: self.file.clone(),
            });
        }
        let overridden = |key: &str| set.contains(&key);
        let mut platform = self.platform.clone();
        let wanted = KernelSettings::from_spec(spec);
        let given = line.map_or(&[][..], |l| &l.settings[..]);
        for setting in given.iter().filter(|s| !overridden(s.key)) {
            let mismatch = self
                .layout_mismatch(setting.key, spec)
                .or_else(|| settings_mismatch(setting.key, &wanted, platform.settings()));
            if let Some((value, actual)) = mismatch {
                return Err(DescribedError::Disagrees {
                    line: line.map_or(0, |l| l.line),
                    key: setting.key,
                    value,
                    file: self.file.clone(),
                    actual,
                });
            }
        }
        // `--set` and `--seed` (already in `spec`) replace the file's
        // settings; what neither names keeps the file's value.
        let settings = platform.settings_mut();
        for key in set {
            // The layout keys were refused above; every other key is a
            // kernel setting (`platform`'s own test holds them to that).
            let copied = settings.copy_key(key, &wanted);
            debug_assert!(
                copied,
                "BUG: --set {key} is neither layout nor a kernel setting"
            );
        }
        Ok(platform)
    }

    /// `(line's value, file's value)` when a layout key disagrees.
    fn layout_mismatch(&self, key: &str, spec: &PlatformSpec) -> Option<(String, String)> {
        let p = &self.platform;
        let (wanted, actual) = match key {
            "memory" => (spec.memory, p.dram().iter().map(|r| r.size).sum()),
            "page-size" => (spec.page_size, p.page_size()),
            "block-size" => (spec.block_size(), p.block_size().unwrap_or(0)),
            "tag-storage" => {
                let (wanted, actual) = (spec.tag_storage, p.policy());
                return (wanted != actual)
                    .then(|| (wanted.name().to_owned(), actual.name().to_owned()));
            }
            _ => return None,
        };
        (wanted != actual).then(|| (format_size(wanted), format_size(actual)))
    }
}

/// `(line's value, file's value)` when a kernel setting disagrees.
fn settings_mismatch(
    key: &str,
    wanted: &KernelSettings,
    actual: &KernelSettings,
) -> Option<(String, String)> {
    let (wanted, actual) = (wanted.value_text(key)?, actual.value_text(key)?);
    (wanted != actual).then_some((wanted, actual))
}
