//! `mtesim platform` as a user runs it: the binary, real files, exit
//! statuses, stdout and stderr.

mod common;

use common::{dir, mtesim, stderr, stdout, stdout_json};
use serde_json::Value;
use std::path::{Path, PathBuf};
use vm_fdt::FdtWriter;

const M: u64 = 1 << 20;

/// Runs successfully and returns the parsed `--json` output.
fn json(args: &[&str]) -> Value {
    let mut all = args.to_vec();
    all.push("--json");
    let out = mtesim(&all);
    assert_eq!(out.status.code(), Some(0), "stderr: {}", stderr(&out));
    assert_eq!(stderr(&out), "");
    stdout_json(&out)
}

fn counters(v: &Value) -> (u64, u64, u64) {
    let get = |k: &str| {
        v[k].as_u64()
            .unwrap_or_else(|| panic!("no counter {k} in {v}"))
    };
    (
        get("mem.pages"),
        get("tag_storage.pages"),
        get("tag_storage.blocks"),
    )
}

/// Exit status 2, nothing on stdout, and the message on stderr.
fn fails(args: &[&str]) -> String {
    let out = mtesim(args);
    assert_eq!(out.status.code(), Some(2), "stdout: {}", stdout(&out));
    assert_eq!(stdout(&out), "", "nothing on stdout on error");
    let err = stderr(&out).to_owned();
    assert!(err.ends_with('\n') && err.lines().count() == 1, "{err:?}");
    err.trim_end().to_owned()
}

fn file(dir: &Path, name: &str, bytes: &[u8]) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, bytes).expect("write the fixture");
    path
}

fn s(path: &Path) -> &str {
    path.to_str().expect("UTF-8 temp path")
}

/// The FVP layout with 2+2 cells: 1984M of DRAM at 0x8000_0000, `tags`
/// bytes of tag storage at 0xfc00_0000, 4K blocks; RFC v2 (`v3 = false`:
/// top-level node, `memory` phandle) or v3 (`/reserved-memory` child,
/// `tagged-memory`, `reusable`, tag range also a memory node).
fn fvp(v3: bool, tags: u64) -> Vec<u8> {
    let cells = |base: u64, size: u64| {
        [
            base >> 32,
            base & 0xffff_ffff,
            size >> 32,
            size & 0xffff_ffff,
        ]
        .map(|c| c as u32)
    };
    let mut w = FdtWriter::new().unwrap();
    let root = w.begin_node("").unwrap();
    w.property_u32("#address-cells", 2).unwrap();
    w.property_u32("#size-cells", 2).unwrap();
    let memory = |w: &mut FdtWriter, name: &str, base, size, phandle| {
        let node = w.begin_node(name).unwrap();
        w.property_string("device_type", "memory").unwrap();
        w.property_array_u32("reg", &cells(base, size)).unwrap();
        w.property_phandle(phandle).unwrap();
        w.end_node(node).unwrap();
    };
    memory(&mut w, "memory@80000000", 0x8000_0000, 1984 * M, 1);
    let tag_node = |w: &mut FdtWriter, phandle_property: &str| {
        let node = w.begin_node("tag-storage@fc000000").unwrap();
        w.property_string("compatible", "arm,mte-tag-storage")
            .unwrap();
        w.property_array_u32("reg", &cells(0xfc00_0000, tags))
            .unwrap();
        w.property_u32("block-size", 0x1000).unwrap();
        w.property_u32(phandle_property, 1).unwrap();
        if phandle_property == "tagged-memory" {
            w.property_null("reusable").unwrap();
        }
        w.end_node(node).unwrap();
    };
    if v3 {
        memory(&mut w, "memory@fc000000", 0xfc00_0000, tags, 2);
        let reserved = w.begin_node("reserved-memory").unwrap();
        w.property_u32("#address-cells", 2).unwrap();
        w.property_u32("#size-cells", 2).unwrap();
        w.property_null("ranges").unwrap();
        tag_node(&mut w, "tagged-memory");
        w.end_node(reserved).unwrap();
    } else {
        tag_node(&mut w, "memory");
    }
    w.end_node(root).unwrap();
    w.finish().unwrap()
}

#[test]
fn default_machine_as_text() {
    let out = mtesim(&["platform"]);
    assert_eq!(out.status.code(), Some(0));
    assert_eq!(stderr(&out), "");
    let text = stdout(&out);
    for line in [
        "  tag-storage         dynamic",
        "  page-size           4K",
        "  block-size          4K (1 page)",
        "  dram                0x80000000-0x83ffffff  64M",
        "  mem.pages           16384",
        "  tag_storage.pages   512",
        "  tag_storage.blocks  512",
    ] {
        assert!(
            text.lines().any(|l| l == line),
            "missing {line:?} in\n{text}"
        );
    }
    // Deterministic: the same bytes every time.
    assert_eq!(mtesim(&["platform"]).stdout, out.stdout);
}

#[test]
fn default_machine_as_json() {
    let v = json(&["platform"]);
    assert_eq!(counters(&v), (16384, 512, 512));
    assert_eq!(v["policy"], "dynamic");
    assert_eq!(v["page_size"], 4096);
    assert_eq!(v["block_size"], 4096);
}

#[test]
fn toml_file() {
    let d = dir();
    let path = file(
        d.path(),
        "big-blocks.toml",
        b"# 128M, static carve-out, 64K blocks\nmemory = 134217728\ntag-storage = \"static\"\nblock-size = \"64K\"\nhuge-zero-page = false\n",
    );
    let v = json(&["platform", s(&path)]);
    // 128M / 4K = 32768 pages; 4M of tags = 1024 pages = 64 blocks of 16.
    assert_eq!(counters(&v), (32768, 1024, 64));
    assert_eq!(v["policy"], "static");
    assert_eq!(v["settings"]["huge-zero-page"], false);
    let text = mtesim(&["platform", s(&path)]);
    assert!(stdout(&text).contains("  block-size          64K (16 pages)\n"));
}

#[test]
fn toml_without_tag_storage() {
    let d = dir();
    let path = file(d.path(), "nomte.toml", b"tag-storage = \"none\"\n");
    let v = json(&["platform", s(&path)]);
    assert_eq!(counters(&v), (16384, 0, 0));
    assert_eq!(v["block_size"], Value::Null);
}

#[test]
fn dtb_in_both_rfc_forms() {
    let d = dir();
    for (v3, name) in [(false, "fvp-v2.dtb"), (true, "fvp-v3.dtb")] {
        let path = file(d.path(), name, &fvp(v3, 62 * M));
        let v = json(&["platform", s(&path)]);
        // 1984M / 4K; 62M / 4K; 4K blocks (docs/model.md §1, 1/32 of memory).
        assert_eq!(counters(&v), (507904, 15872, 15872), "{name}");
        assert_eq!(
            v["dram"],
            serde_json::json!([{ "base": 0x8000_0000u64, "size": 1984 * M }])
        );
        let text = mtesim(&["platform", s(&path)]);
        assert!(
            stdout(&text)
                .contains("  tag storage         0xfc000000-0xffdfffff  62M    tags of 0x80000000-0xfbffffff\n"),
            "{}",
            stdout(&text)
        );
    }
}

#[test]
fn toml_errors_name_file_line_and_column() {
    let d = dir();
    let path = file(
        d.path(),
        "typo.toml",
        b"memory = \"64M\"\nmemroy = \"32M\"\n",
    );
    let err = fails(&["platform", s(&path)]);
    assert!(
        err.starts_with(&format!("{}:2:1: unknown platform key `memroy`", s(&path))),
        "{err}"
    );
    let path = file(d.path(), "value.toml", b"thp = \"sometimes\"\n");
    assert_eq!(
        fails(&["platform", s(&path), "--json"]),
        format!(
            "{}:1:7: `thp`: expected `never`, `madvise` or `always`, found `sometimes`",
            s(&path)
        )
    );
    let path = file(d.path(), "type.toml", b"cpus = true\n");
    assert!(fails(&["platform", s(&path)]).contains(":1:8: `cpus`: expected an integer"));
    let path = file(d.path(), "layout.toml", b"memory = \"64K\"\n");
    assert!(
        fails(&["platform", s(&path)])
            .contains(":1:10: memory 64K cannot have whole pages of tags"),
    );
    // Binary that is not a device tree is read as TOML, and is not UTF-8.
    let path = file(d.path(), "junk.bin", b"\x7fELF\x02\x01\x01\x00\xff");
    assert!(fails(&["platform", s(&path)]).ends_with(": the file is not UTF-8"));
}

#[test]
fn dtb_errors_name_file_and_node() {
    let d = dir();
    // 64M of tags for 1984M of memory is 1/31.
    let path = file(d.path(), "ratio.dtb", &fvp(false, 64 * M));
    assert_eq!(
        fails(&["platform", s(&path)]),
        format!(
            "{}: /tag-storage@fc000000: tag storage 0xfc000000..+0x4000000 is 1/31 of the memory it covers (/memory@80000000: 0x80000000..+0x7c000000); it must be exactly 1/32",
            s(&path)
        )
    );
    let blob = fvp(true, 62 * M);
    let path = file(d.path(), "cut.dtb", &blob[..blob.len() / 2]);
    assert!(
        fails(&["platform", s(&path), "--json"])
            .contains(": malformed device tree: the header says"),
    );
}

#[test]
fn unreadable_file_and_bad_usage() {
    let d = dir();
    let missing = d.path().join("missing.toml");
    assert!(fails(&["platform", s(&missing)]).starts_with(s(&missing)));
    // A directory cannot be read as a file either.
    assert!(fails(&["platform", s(d.path())]).starts_with(s(d.path())));
    // Usage errors are clap's, with the same status.
    let out = mtesim(&["platform", "--bogus"]);
    assert_eq!(out.status.code(), Some(2));
    assert_eq!(stdout(&out), "");
}

#[test]
fn an_empty_file_is_the_default_machine() {
    let d = dir();
    let path = file(d.path(), "empty.toml", b"");
    assert_eq!(json(&["platform", s(&path)]), json(&["platform"]));
}

#[test]
fn a_scenario_describes_its_platform_line() {
    let d = dir();
    let mte = file(
        d.path(),
        "s.mte",
        b"# a scenario\nplatform memory=32M block-size=16K\nspawn p\n",
    );
    let v = json(&["platform", s(&mte)]);
    assert_eq!(counters(&v), (8192, 256, 64));
    // Without a platform line: the default machine.
    let plain = file(d.path(), "plain.mte", b"spawn p\n");
    assert_eq!(counters(&json(&["platform", s(&plain)])), (16384, 512, 512));
    // A malformed scenario is reported as `mtesim run` reports it.
    let bad = file(d.path(), "bad.mte", b"platform memory=\n");
    let err = fails(&["platform", s(&bad)]);
    assert!(err.contains("bad.mte:1:17: platform key `memory`"), "{err}");
}
