//! `mtesim platform [FILE] [--json]`: print the machine a platform file
//! describes, or the spec's default machine without FILE.
//!
//! FILE is a flattened device tree if it starts with the FDT magic
//! (0xd00dfeed), a scenario if its name ends in `.mte` (the machine its
//! `platform` line describes; a malformed scenario is reported as `mtesim
//! run` reports it), otherwise TOML with the keys of a `platform` line
//! ([`platform::Platform::from_file`]).
//!
//! The output names the counters of `docs/model.md` §5 that the
//! machine alone fixes: `mem.pages`, `tag_storage.pages`,
//! `tag_storage.blocks`. Text is for people: aligned columns, hex addresses
//! with inclusive ends as Linux prints them, sizes as `64M`, settings
//! labelled with the `platform` keys. `--json` is one object whose counter
//! keys are exactly those names, plus `policy`, `page_size`, `block_size`
//! (null without tag storage), `settings`, `dram` and `tag_storage` (byte
//! addresses and sizes as integers). Both are deterministic: the same
//! machine prints the same bytes.

use super::{fail, print_stdout};
use platform::num::format_size;
use platform::{KERNEL_KEYS, MemRange, Platform};
use serde_json::{Value, json};
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(clap::Args, Debug)]
pub struct Args {
    /// A platform file: a device tree blob (.dtb), or TOML with the keys of
    /// a scenario's `platform` line.
    pub file: Option<PathBuf>,
    /// Print a JSON object instead of text.
    #[arg(long)]
    pub json: bool,
}

pub fn run(args: &Args) -> ExitCode {
    let platform = match &args.file {
        None => Platform::default(),
        Some(path) if path.extension().is_some_and(|e| e == "mte") => match scenario_platform(path)
        {
            Ok(platform) => platform,
            Err(e) => return fail(e),
        },
        Some(path) => match Platform::from_file(path) {
            Ok(platform) => platform,
            Err(e) => return fail(e),
        },
    };
    let output = if args.json {
        let mut text = serde_json::to_string_pretty(&to_json(&platform))
            .unwrap_or_else(|e| panic!("BUG: a JSON value failed to serialise: {e}"));
        text.push('\n');
        text
    } else {
        to_text(&platform)
    };
    print_stdout(&output)
}

/// The machine of a scenario's `platform` line (the defaults without one).
fn scenario_platform(path: &std::path::Path) -> Result<Platform, String> {
    let name = path.display().to_string();
    let src = std::fs::read(path).map_err(|e| format!("{name}: {e}"))?;
    let script = scenario::parse(&name, &src).map_err(|e| e.to_string())?;
    Platform::from_spec(&script.platform_spec())
        .map_err(|e| format!("{name}: platform cannot be built: {e}"))
}

/// The counters the machine alone fixes, with their `docs/model.md` §5 names.
pub fn counters(platform: &Platform) -> [(&'static str, u64); 3] {
    let g = platform.geometry();
    [
        ("mem.pages", g.dram_pages()),
        ("tag_storage.pages", g.tag_storage_pages()),
        ("tag_storage.blocks", g.tag_blocks()),
    ]
}

/// `0x80000000-0x83ffffff`: first and last byte, as Linux prints memory
/// ranges (`[mem 0x...-0x...]`).
fn range(r: MemRange) -> String {
    let last = r.base.as_u64() + (r.size - 1);
    format!("{:#x}-{last:#x}", r.base.as_u64())
}

fn to_text(platform: &Platform) -> String {
    let settings = platform.settings();
    let block_size = match platform.block_size() {
        Some(bytes) => {
            let pages = bytes / platform.page_size();
            let unit = if pages == 1 { "page" } else { "pages" };
            format!("{} ({pages} {unit})", format_size(bytes))
        }
        None => "- (no tag storage)".to_owned(),
    };
    // Labelled with the keys of a `platform` line, which users write.
    let mut machine = vec![
        vec![
            "tag-storage".to_owned(),
            platform.policy().name().to_owned(),
        ],
        vec!["page-size".to_owned(), format_size(platform.page_size())],
        vec!["block-size".to_owned(), block_size],
    ];
    machine.extend(KERNEL_KEYS.iter().map(|&key| {
        let value = settings
            .value_text(key)
            .unwrap_or_else(|| panic!("BUG: kernel setting `{key}` without a value"));
        vec![key.to_owned(), value]
    }));
    let mut memory: Vec<Vec<String>> = platform
        .dram()
        .iter()
        .map(|&r| vec!["dram".to_owned(), range(r), format_size(r.size)])
        .collect();
    memory.extend(platform.tag_regions().iter().map(|t| {
        vec![
            "tag storage".to_owned(),
            range(t.tags),
            format_size(t.tags.size),
            format!("tags of {}", range(t.covers)),
        ]
    }));
    let counters: Vec<Vec<String>> = counters(platform)
        .iter()
        .map(|(name, value)| vec![(*name).to_owned(), value.to_string()])
        .collect();

    let sections = [
        ("machine", machine),
        ("memory", memory),
        ("counters", counters),
    ];
    // One width for the first column of every section, so the values line
    // up down the whole output.
    let label_width = sections
        .iter()
        .flat_map(|(_, rows)| rows.iter().map(|row| row[0].len()))
        .max()
        .unwrap_or(0);
    let mut out = String::new();
    for (i, (title, rows)) in sections.iter().enumerate() {
        if i > 0 {
            out.push('\n');
        }
        out.push_str(title);
        out.push('\n');
        out.push_str(&table(rows, label_width));
    }
    out
}

/// Rows as left-aligned columns two spaces apart, indented by two; the
/// first column at least `first_width` wide. No trailing spaces.
fn table(rows: &[Vec<String>], first_width: usize) -> String {
    let columns = rows.iter().map(Vec::len).max().unwrap_or(0);
    let widths: Vec<usize> = (0..columns)
        .map(|c| {
            let widest = rows
                .iter()
                .filter_map(|row| row.get(c))
                .map(String::len)
                .max()
                .unwrap_or(0);
            if c == 0 {
                widest.max(first_width)
            } else {
                widest
            }
        })
        .collect();
    let mut out = String::new();
    for row in rows {
        let mut line = String::from("  ");
        for (cell, width) in row.iter().zip(&widths) {
            line.push_str(&format!("{cell:<width$}  "));
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

fn to_json(platform: &Platform) -> Value {
    let settings = platform.settings();
    let span = |r: MemRange| json!({ "base": r.base.as_u64(), "size": r.size });
    let mut object = json!({
        "policy": platform.policy().name(),
        "page_size": platform.page_size(),
        "block_size": platform.block_size(),
        "settings": {
            "tag-storage-data": settings.tag_storage_data.as_str(),
            "swap": settings.swap,
            "thp": settings.thp.as_str(),
            "thp-sizes": settings.thp_sizes.to_string(),
            "huge-zero-page": settings.huge_zero_page,
            "seed": settings.seed,
            "cpus": settings.cpus,
            "mistake": settings.mistakes.to_string(),
            "reserve-fast-path": settings.reserve_fast_path,
            "google-fallback": settings.google_fallback.name(),
            "pcp": settings.pcp,
            "free-list-order": settings.free_list_order.name(),
        },
        "dram": platform.dram().iter().map(|&r| span(r)).collect::<Vec<_>>(),
        "tag_storage": platform.tag_regions().iter().map(|t| json!({
            "base": t.tags.base.as_u64(),
            "size": t.tags.size,
            "block_size": t.block_size,
            "covers": span(t.covers),
        })).collect::<Vec<_>>(),
    });
    for (name, value) in counters(platform) {
        object[name] = json!(value);
    }
    object
}

#[cfg(test)]
mod tests {
    use super::*;
    use platform::PlatformSpec;

    #[test]
    fn default_machine_text() {
        // The spec's default machine: 64M at 0x8000_0000, 2M of tags after it.
        let text = to_text(&Platform::default());
        let expected = "\
machine
  tag-storage         dynamic
  page-size           4K
  block-size          4K (1 page)
  tag-storage-data    balance
  swap                0
  thp                 never
  thp-sizes           none
  huge-zero-page      on
  seed                0
  cpus                4
  mistake             none
  reserve-fast-path   on
  google-fallback     spec
  pcp                 off
  free-list-order     address

memory
  dram                0x80000000-0x83ffffff  64M
  tag storage         0x84000000-0x841fffff  2M   tags of 0x80000000-0x83ffffff

counters
  mem.pages           16384
  tag_storage.pages   512
  tag_storage.blocks  512
";
        assert_eq!(text, expected);
    }

    #[test]
    fn machine_without_tag_storage() {
        let mut spec = PlatformSpec::default();
        spec.set_key("tag-storage", "none").unwrap();
        let p = Platform::from_spec(&spec).unwrap();
        let text = to_text(&p);
        assert!(
            text.contains("  block-size          - (no tag storage)\n"),
            "{text}"
        );
        assert!(!text.contains("tag storage   "), "{text}");
        assert!(text.contains("  tag_storage.pages   0\n"), "{text}");
        let json = to_json(&p);
        assert_eq!(json["block_size"], Value::Null);
        assert_eq!(json["tag_storage"], json!([]));
        assert_eq!(json["tag_storage.blocks"], json!(0));
    }

    #[test]
    fn default_machine_json() {
        let json = to_json(&Platform::default());
        assert_eq!(json["mem.pages"], json!(16384));
        assert_eq!(json["tag_storage.pages"], json!(512));
        assert_eq!(json["tag_storage.blocks"], json!(512));
        assert_eq!(json["policy"], json!("dynamic"));
        assert_eq!(json["page_size"], json!(4096));
        assert_eq!(json["block_size"], json!(4096));
        assert_eq!(
            json["dram"],
            json!([{ "base": 0x8000_0000u64, "size": 64u64 << 20 }])
        );
        assert_eq!(
            json["tag_storage"],
            json!([{
                "base": 0x8400_0000u64,
                "size": 2u64 << 20,
                "block_size": 4096,
                "covers": { "base": 0x8000_0000u64, "size": 64u64 << 20 },
            }])
        );
        assert_eq!(json["settings"]["huge-zero-page"], json!(true));
    }

    /// Every kernel setting of a `platform` line is printed, the ones that
    /// change how the allocator and the designs behave included.
    #[test]
    fn kernel_settings_are_all_printed() {
        let mut spec = PlatformSpec::default();
        for (key, value) in [
            ("tag-storage", "rfc-v3"),
            ("pcp", "on"),
            ("free-list-order", "linux"),
            ("reserve-fast-path", "off"),
            ("google-fallback", "none"),
        ] {
            spec.set_key(key, value).unwrap();
        }
        let platform = Platform::from_spec(&spec).unwrap();
        let settings = &to_json(&platform)["settings"];
        // The JSON writes each value in its own type, so it lists the keys
        // itself: exactly the kernel settings the text prints.
        let mut keys: Vec<&str> = settings
            .as_object()
            .unwrap()
            .keys()
            .map(String::as_str)
            .collect();
        let mut kernel_keys = KERNEL_KEYS.to_vec();
        keys.sort_unstable();
        kernel_keys.sort_unstable();
        assert_eq!(keys, kernel_keys);
        assert_eq!(settings["pcp"], json!(true));
        assert_eq!(settings["free-list-order"], json!("linux"));
        assert_eq!(settings["reserve-fast-path"], json!(false));
        assert_eq!(settings["google-fallback"], json!("none"));
        // rfc-v3's built-in mistakes.
        assert_eq!(
            settings["mistake"],
            json!("huge-zero-page,atomic-alloc,tags-by-pfn")
        );
        let text = to_text(&platform);
        for line in [
            "  pcp                 on\n",
            "  free-list-order     linux\n",
            "  reserve-fast-path   off\n",
            "  google-fallback     none\n",
            "  mistake             huge-zero-page,atomic-alloc,tags-by-pfn\n",
        ] {
            assert!(text.contains(line), "{line:?} in\n{text}");
        }
    }

    #[test]
    fn tables_align_and_never_end_in_spaces() {
        let rows = vec![
            vec!["a".to_owned(), "1".to_owned()],
            vec!["long".to_owned(), "22".to_owned(), "x".to_owned()],
        ];
        assert_eq!(table(&rows, 6), "  a       1\n  long    22  x\n");
    }
}
