//! Any input ends in a script or one diagnostic, never a panic
//! (`docs/language.md`, "Running": "A scenario never panics the tool"),
//! and a diagnostic always points inside the input.

use lang::ast::{Command, ProcessOp, PtrBase, Stmt};
use proptest::prelude::*;

/// Checks the diagnostic's location against the input it came from.
fn check_location(src: &[u8]) {
    let Err(err) = lang::parse("f.mte", src) else {
        return;
    };
    let span = err.span();
    assert!(
        span.start <= span.end && span.end as usize <= src.len(),
        "{span:?} outside input"
    );
    let lines: Vec<&[u8]> = src.split(|&b| b == b'\n').collect();
    let line = err.line() as usize;
    assert!(
        line >= 1 && line <= lines.len(),
        "line {line} of {}",
        lines.len()
    );
    let chars_in_line = lines[line - 1]
        .iter()
        .filter(|&&b| b & 0xc0 != 0x80)
        .count();
    let column = err.column() as usize;
    assert!(
        column >= 1 && column <= chars_in_line + 1,
        "column {column} of {chars_in_line}"
    );
    // The span starts on the reported line.
    let line_start: usize = lines[..line - 1].iter().map(|l| l.len() + 1).sum();
    assert!(
        span.start as usize >= line_start
            && span.start as usize <= line_start + lines[line - 1].len()
    );
    let msg = err.to_string();
    let prefix = format!("f.mte:{}:{}: ", err.line(), err.column());
    assert!(
        msg.starts_with(&prefix) && msg.len() > prefix.len(),
        "{msg}"
    );
}

/// Words of the language besides the process commands, and near misses,
/// for token soups.
const VOCABULARY: &[&str] = &[
    "platform",
    "memory=64M",
    "cpus=1",
    "cpus=65",
    "tag-storage=none",
    "spawn",
    "p",
    "q",
    "a",
    "b",
    "on",
    "off",
    "dontneed",
    "reclaim",
    "compact",
    "ksm-scan",
    "parallel",
    "end",
    "expect",
    "stat",
    "invariants",
    "tags",
    "page",
    "not",
    "tagged",
    "zero-page",
    "mem.free",
    "==",
    ">=",
    "=>",
    "ok",
    "value",
    "tag",
    "tag-in",
    "mismatch",
    "error",
    "EINVAL",
    "fault",
    "SEGV_MTESERR",
    "addr=a",
    "prot=r,w,mte",
    "prot=none",
    "map=shared,shm,populate",
    "map=fixed=0x1000",
    "tagged-addr=on",
    "tcf=sync",
    "include=0xfffe",
    "exclude=1",
    "0",
    "1",
    "8",
    "16",
    "17",
    "4K",
    "64K",
    "0x0",
    "0xffff",
    "0x1_0000_0000_0000_0000",
    "99999999999999999999999999999999999999999",
    "a+",
    "a-",
    "a#",
    "a+0x20#5",
    "a#16",
    "a-16",
    "b+512K",
    "0x0500_7f00_0000_1020",
    "1,2,3",
    "1,,2",
    ",",
    "=",
    "#",
    "#5",
    "é",
    "\u{0}",
    "\u{7f}",
    "_",
    "_x",
    "A",
];

fn soup() -> impl Strategy<Value = String> {
    let words: Vec<&str> = lang::parse::PROCESS_COMMANDS
        .iter()
        .chain(VOCABULARY)
        .copied()
        .collect();
    let word = prop::sample::select(words);
    let sep = prop::sample::select(&[" ", " ", " ", "\t", "\n", "\n", "\r\n", "  "][..]);
    prop::collection::vec((word, sep), 0..60).prop_map(|parts| {
        parts.into_iter().fold(String::new(), |mut s, (w, sep)| {
            s.push_str(w);
            s.push_str(sep);
            s
        })
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn arbitrary_bytes_never_panic(src in prop::collection::vec(any::<u8>(), 0..400)) {
        check_location(&src);
    }

    #[test]
    fn token_soups_never_panic(src in soup()) {
        check_location(src.as_bytes());
    }

    #[test]
    fn printable_noise_never_panics(src in "[ -~\t\n]{0,300}") {
        check_location(src.as_bytes());
    }

    /// Well-formed accesses parse to exactly what was written.
    #[test]
    fn accesses_round_trip(
        size_log in 0u32..5,
        value in any::<u128>(),
        offset in -(1i64 << 40)..(1i64 << 40),
        tag in prop::option::of(0u8..16),
    ) {
        let size = 1u64 << size_log;
        let value = if size == 16 { value } else { value & ((1u128 << (8 * size)) - 1) };
        let sign = if offset < 0 { '-' } else { '+' };
        let tag_text = tag.map_or(String::new(), |t| format!("#{t}"));
        let src = format!(
            "spawn p\np mmap a 4K\np store a{sign}{:#x}{tag_text} {size} {value:#x}\n",
            offset.unsigned_abs()
        );
        let script = lang::parse("f.mte", src.as_bytes()).unwrap();
        let Stmt::Command(c) = &script.stmts[2] else { panic!() };
        let Command::Process { op, .. } = &c.command else { panic!() };
        let ProcessOp::Store { ptr, size: s, value: v } = &op.node else { panic!() };
        prop_assert_eq!(ptr.offset(), offset);
        prop_assert_eq!(ptr.tag.map(|t| t.value()), tag);
        let named = matches!(ptr.base, PtrBase::Slot { .. });
        prop_assert!(named);
        prop_assert_eq!(s.node.bytes(), size);
        prop_assert_eq!(v.node.get(), value);
    }
}
