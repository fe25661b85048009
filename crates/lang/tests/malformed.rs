//! One test per class of malformed input of `docs/language.md` ("Lexical
//! rules": "A script that breaks any rule of this page that can be checked
//! before running ... is malformed as a whole"), each asserting the exact
//! `file:line:column` and that the message names the problem. Columns are
//! 1-based characters.

use lang::{ErrorKind, ParseError};

fn refuse(src: &[u8]) -> ParseError {
    match lang::parse("t.mte", src) {
        Ok(script) => panic!("accepted a malformed script: {script:?}"),
        Err(e) => e,
    }
}

/// `src` is refused at `line:column` with a message containing `needle`.
#[track_caller]
fn assert_refused(src: &str, line: u32, column: u32, needle: &str) {
    assert_refused_bytes(src.as_bytes(), line, column, needle);
}

#[track_caller]
fn assert_refused_bytes(src: &[u8], line: u32, column: u32, needle: &str) {
    let err = refuse(src);
    let msg = err.to_string();
    assert!(
        msg.starts_with(&format!("t.mte:{line}:{column}: ")),
        "expected t.mte:{line}:{column}:, got {msg}"
    );
    assert_eq!((err.line(), err.column()), (line, column));
    assert!(msg.contains(needle), "{msg:?} does not contain {needle:?}");
}

const P: &str = "spawn p\np mmap a 4K prot=r,w,mte\n";

#[test]
fn unknown_command() {
    assert_refused("spawn p\np lod a 8\n", 2, 3, "unknown command `lod`");
    assert_refused("spwan p\n", 1, 1, "unknown statement `spwan`");
    assert_refused("Spawn p\n", 1, 1, "unknown statement `Spawn`");
    assert_refused("=> ok\n", 1, 1, "unexpected `=>`");
}

#[test]
fn unknown_key() {
    assert_refused(
        "spawn p\np prctl tcf2=sync\n",
        2,
        9,
        "unknown key `tcf2` for `prctl`",
    );
    assert_refused(
        "platform memroy=64M\n",
        1,
        10,
        "unknown platform key `memroy`",
    );
    assert_refused(
        "spawn p\np mmap a 4K prott=r\n",
        2,
        13,
        "unknown key `prott` for `mmap`",
    );
    assert_refused(
        &format!("{P}p irg b a include=3\n"),
        3,
        11,
        "unknown key `include` for `irg`",
    );
    assert_refused(
        &format!("{P}p load a 8 => fault SEGV_MTESERR adr=a\n"),
        3,
        34,
        "unknown key `adr`",
    );
}

#[test]
fn bad_number() {
    assert_refused(
        "spawn p\np mmap a 4Q\n",
        2,
        10,
        "bad length `4Q`: invalid digit 'Q'",
    );
    assert_refused(
        &format!("{P}p load a 8 => value 0x1_\n"),
        3,
        21,
        "bad value `0x1_`: misplaced `_`",
    );
    // A size suffix only on sizes and offsets.
    assert_refused(
        &format!("{P}p fill a 16 1K\n"),
        3,
        13,
        "bad byte value `1K`: size suffix `K` not allowed",
    );
    assert_refused(
        "platform memory=12Q\n",
        1,
        17,
        "platform key `memory`: invalid digit 'Q'",
    );
    assert_refused(
        &format!("{P}p load a 3\n"),
        3,
        10,
        "access size `3` is out of range: 1, 2, 4, 8 or 16",
    );
}

#[test]
fn overflow() {
    assert_refused(
        "spawn p\np mmap a 0x1_0000_0000_0000_0000\n",
        2,
        10,
        "does not fit in 64 bits",
    );
    assert_refused(
        "spawn p\np mmap a 16777216T\n",
        2,
        10,
        "does not fit in 64 bits",
    );
    // A 16-byte store takes 128 bits, and no more.
    assert_refused(
        &format!("{P}p store a 16 0x1_0000_0000_0000_0000_0000_0000_0000_0000\n"),
        3,
        14,
        "does not fit in 128 bits",
    );
    // Decision: a value wider than the access is refused, not truncated.
    assert_refused(
        &format!("{P}p store a 1 0x100\n"),
        3,
        13,
        "does not fit in a 1-byte store",
    );
    assert_refused(
        &format!("{P}p load a 2 => value 0x10000\n"),
        3,
        15,
        "does not fit in a 2-byte load",
    );
    assert_refused(
        &format!("{P}p prctl include=0x1_0000\n"),
        3,
        17,
        "at most 0xffff",
    );
    assert_refused(&format!("{P}p fill a 16 256\n"), 3, 13, "at most 255");
    assert_refused(
        &format!("{P}p load a+0x8000_0000_0000_0000 8\n"),
        3,
        10,
        "offset",
    );
}

#[test]
fn tag_above_15() {
    assert_refused(
        &format!("{P}p load a#16 8\n"),
        3,
        10,
        "tag `16` is above 15",
    );
    assert_refused(
        &format!("{P}p load a+0x10#0x10 8\n"),
        3,
        15,
        "tag `0x10` is above 15",
    );
    assert_refused(
        &format!("{P}p ldg a => tag 16\n"),
        3,
        16,
        "tag `16` is above 15",
    );
    assert_refused(
        &format!("{P}p peektags p a 2 => tags 1,99\n"),
        3,
        28,
        "tag `99` is above 15",
    );
    assert_refused(
        &format!("{P}expect p tags a 16 == 20\n"),
        3,
        23,
        "tag `20` is above 15",
    );
}

#[test]
fn unbound_name() {
    assert_refused("spawn p\np load b 8\n", 2, 8, "unbound name `b`");
    assert_refused("q mmap a 4K\n", 1, 1, "unbound name `q`: a process");
    assert_refused(&format!("{P}p peektags q a 1\n"), 3, 12, "unbound name `q`");
    // Bound on the same line is not bound on an earlier line.
    assert_refused("spawn p\np irg t t\n", 2, 9, "unbound name `t`");
    // Bound later is not bound.
    assert_refused(
        "spawn p\np load a 8\np mmap a 4K\n",
        2,
        8,
        "unbound name `a`",
    );
    // Names in outcomes too.
    assert_refused(
        &format!("{P}p load a 8 => fault SEGV_MAPERR addr=zz\n"),
        3,
        38,
        "unbound name `zz`",
    );
}

#[test]
fn names_are_one_namespace_and_keywords_are_not_names() {
    assert_refused(
        "spawn p\np mmap p 4K\n",
        2,
        8,
        "`p` is a process, not a pointer",
    );
    assert_refused(
        &format!("{P}a yield\n"),
        3,
        1,
        "`a` is a pointer, not a process",
    );
    assert_refused(
        &format!("{P}p fork a\n"),
        3,
        8,
        "`a` is a pointer, not a process",
    );
    assert_refused("spawn end\n", 1, 7, "`end` is a keyword, not a name");
    assert_refused("spawn p\np mmap expect 4K\n", 2, 8, "`expect` is a keyword");
    assert_refused("spawn P1\n", 1, 7, "`P1` is not a name");
}

#[test]
fn platform_not_first() {
    assert_refused(
        "spawn p\nplatform memory=64M\n",
        2,
        1,
        "`platform` must be the first statement",
    );
    assert_refused(
        "platform\nplatform cpus=2\n",
        2,
        1,
        "`platform` must be the first statement",
    );
    // Comments and blank lines before it are fine.
    assert!(lang::parse("t.mte", b"# hi\n\n  platform cpus=2\nspawn p\n").is_ok());
}

#[test]
fn platform_keys_that_make_no_machine() {
    // Tags take memory/32 (docs/language.md, "Machine"): 100K of memory
    // has 3.125K of tags, not whole pages of 4K; 64M has 2M of tags, not a
    // whole number of 4M blocks. The caret goes to the key to change, where
    // the line writes it.
    assert_refused(
        "platform memory=100K\n",
        1,
        17,
        "platform cannot be built: memory 100K cannot have whole pages of tags",
    );
    assert_refused(
        "platform memory=64M block-size=4M\n",
        1,
        32,
        "platform cannot be built: memory 64M has 2M of tags, not a whole number of 4M tag blocks",
    );
    assert_refused("platform block-size=4M\n", 1, 21, "4M tag blocks");
    assert!(lang::parse("t.mte", b"platform memory=128M block-size=4M\n").is_ok());
}

#[test]
fn bad_platform_values() {
    assert_refused(
        "platform thp=sometimes\n",
        1,
        14,
        "platform key `thp`: expected `never`, `madvise` or `always`",
    );
    assert_refused("platform cpus=0\n", 1, 15, "from 1 to 64");
    assert_refused("platform cpus=2 cpus=3\n", 1, 17, "`cpus=` is given twice");
    assert_refused(
        "platform memory\n",
        1,
        10,
        "expected KEY=VALUE, found `memory`",
    );
}

#[test]
fn unclosed_parallel() {
    assert_refused(
        "spawn p\nparallel\n  p yield\n\n",
        2,
        1,
        "`parallel` without its `end`",
    );
    assert_refused(
        "spawn p\n  parallel # go\n",
        2,
        3,
        "`parallel` without its `end`",
    );
}

#[test]
fn end_without_parallel() {
    assert_refused("spawn p\nend\n", 2, 1, "`end` without `parallel`");
    assert_refused(
        "spawn p\nparallel\np yield\nend\nend\n",
        5,
        1,
        "`end` without `parallel`",
    );
}

#[test]
fn nested_parallel() {
    assert_refused(
        "spawn p\nparallel\n  p yield\n  parallel\nend\n",
        4,
        3,
        "nested `parallel`",
    );
}

#[test]
fn too_many_lines_in_parallel() {
    // cpus defaults to 4.
    let five = "spawn p\nparallel\np yield\np yield\np yield\np yield\n\tp yield\nend\n";
    assert_refused(five, 7, 2, "more than 4 lines in a parallel block");
    let three = "platform cpus=2\nspawn p\nparallel\np yield\np yield\np yield\nend\n";
    assert_refused(three, 6, 1, "more than 2 lines in a parallel block (cpus=2");
    assert!(
        lang::parse(
            "t.mte",
            b"platform cpus=2\nspawn p\nparallel\np yield\n# c\n\np yield\nend\n"
        )
        .is_ok()
    );
}

#[test]
fn nothing_but_commands_inside_parallel() {
    assert_refused(
        "spawn p\nparallel\n  expect invariants\nend\n",
        3,
        3,
        "`expect` is not allowed inside a parallel block",
    );
    assert_refused(
        "parallel\nplatform cpus=2\nend\n",
        2,
        1,
        "`platform` is not allowed inside a parallel block",
    );
    assert_refused("spawn p\nparallel foo\nend\n", 2, 10, "unexpected `foo`");
}

#[test]
fn invalid_utf8() {
    assert_refused_bytes(b"spawn p\np yield \xff\n", 2, 9, "invalid UTF-8");
    assert_refused_bytes(b"spawn p\n# caf\xc3\n", 2, 6, "invalid UTF-8");
    // Columns count characters: `é` is one.
    assert_refused_bytes(
        "spawn p\n# é\u{1}\n".as_bytes(),
        2,
        4,
        "control character U+0001",
    );
    // A bad byte wins over a later syntax error on an earlier token of its
    // line (the line is lexed first), but lines before it are parsed first.
    assert_refused_bytes(b"spawn p\np lod \xff\n", 2, 7, "invalid UTF-8");
    assert_refused_bytes(b"spawn q\nx\n\xff\n", 2, 1, "unknown statement `x`");
}

#[test]
fn binary_garbage() {
    assert_refused_bytes(b"\x00\x01\x02\x7fELF", 1, 1, "control character U+0000");
    assert_refused_bytes(b"\x7fELF\x02\x01", 1, 1, "control character U+007F");
    assert_refused_bytes(b"spawn p\r\x1b[2J\n", 1, 8, "control character U+000D");
    assert_refused("spawn p\np mmap ä 4K\n", 2, 8, "unexpected character `ä`");
}

#[test]
fn expect_inside_parallel() {
    assert_refused(
        "spawn p\nparallel\np yield\nexpect stat mem.free > 0\nend\n",
        4,
        1,
        "`expect` is not allowed inside a parallel block",
    );
}

#[test]
fn rebinding_a_process() {
    assert_refused("spawn p\nspawn p\n", 2, 7, "process `p` is already bound");
    assert_refused("spawn p\np fork p\n", 2, 8, "process `p` is already bound");
    assert_refused(
        "spawn p\np exit\nspawn p\n",
        3,
        7,
        "process `p` is already bound",
    );
    assert_refused(
        "spawn p\nparallel\nspawn q\np fork q\nend\n",
        4,
        8,
        "`q` is bound twice in one parallel block",
    );
}

#[test]
fn bad_outcome() {
    assert_refused(
        &format!("{P}p load a 8 => okay\n"),
        3,
        15,
        "unknown outcome `okay`",
    );
    assert_refused(
        &format!("{P}p load a 8 =>\n"),
        3,
        14,
        "missing outcome after `=>`",
    );
    assert_refused(
        &format!("{P}p load a 8 => ok\n"),
        3,
        15,
        "`load` cannot give `ok` (its outcomes: value V, error ERRNO, fault CODE, stuck)",
    );
    assert_refused(
        &format!("{P}p mmap b 4K => ok 4096\n"),
        3,
        16,
        "`mmap` cannot give `ok N`",
    );
    assert_refused(
        &format!("{P}p load a 8 => value 1 2\n"),
        3,
        23,
        "unexpected `2`: nothing may follow the outcome",
    );
    assert_refused(
        &format!("{P}p load a 8 => value 1 => value 2\n"),
        3,
        23,
        "unexpected `=>`",
    );
    assert_refused(
        "compact => error ENOMEM\n",
        1,
        12,
        "`compact` cannot give `error ERRNO`",
    );
    assert_refused(
        &format!("{P}p verify a 16 1 => mismatch 16\n"),
        3,
        20,
        "can never hold",
    );
    assert_refused(
        &format!("{P}p peektags p a 1 => tags 1,2\n"),
        3,
        21,
        "can never be read",
    );
    assert_refused(
        &format!("{P}p write-fd a 16 => ok 17\n"),
        3,
        20,
        "at most 16 bytes",
    );
    assert_refused(
        &format!("{P}p poketags p a 1,2 => ok 3\n"),
        3,
        23,
        "only 2 tags",
    );
    assert_refused(&format!("{P}p ldg a => tags 1,,2\n"), 3, 19, "empty item");
    assert_refused(
        &format!("{P}p load a 8 => fault SEGV_MTESERR a\n"),
        3,
        34,
        "expected KEY=VALUE",
    );
    assert_refused(
        "expect invariants => ok\n",
        1,
        19,
        "an `expect` has no outcome",
    );
}

#[test]
fn bad_errno() {
    assert_refused(
        &format!("{P}p munmap a 4K => error EAGAIN\n"),
        3,
        24,
        "unknown errno `EAGAIN`",
    );
    assert_refused(
        &format!("{P}p munmap a 4K => error einval\n"),
        3,
        24,
        "unknown errno `einval`",
    );
}

#[test]
fn bad_fault_code() {
    assert_refused(
        &format!("{P}p load a 8 => fault SIGSEGV\n"),
        3,
        21,
        "unknown fault code `SIGSEGV`",
    );
}

#[test]
fn bad_page_state() {
    assert_refused(
        &format!("{P}expect p page a zeropage\n"),
        3,
        17,
        "unknown page state `zeropage`",
    );
    assert_refused(
        &format!("{P}expect p page a not\n"),
        3,
        20,
        "missing page state after `not`",
    );
    assert_refused(
        &format!("{P}expect p paeg a tagged\n"),
        3,
        10,
        "unknown expectation `paeg`",
    );
}

#[test]
fn bad_counter_name() {
    assert_refused(
        "expect stat mem.fre == 1\n",
        1,
        13,
        "unknown counter `mem.fre`",
    );
    assert_refused(
        "expect stat tag_storage.reserved === 1\n",
        1,
        34,
        "unknown comparison `===`",
    );
    assert_refused(
        "expect stat mem.free >= 1K\n",
        1,
        25,
        "size suffix `K` not allowed",
    );
    assert_refused(
        "expect sttat mem.free >= 1\n",
        1,
        8,
        "unknown expectation `sttat`",
    );
}

/// The malformed-input example, as a file: refused at line 4, column 9,
/// naming the pointer without an offset.
#[test]
fn bad_input_example_is_refused() {
    let path =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/bad-inputs/bad-input.mte");
    let src = std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let Err(err) = lang::parse("bad-input.mte", &src) else {
        panic!("bad-input.mte must be refused");
    };
    let text = err.to_string();
    assert!(
        text.starts_with("bad-input.mte:4:9: bad pointer `a+`: missing offset after `+`"),
        "{text}"
    );
}

#[test]
fn bad_pointers() {
    // tests/bad-inputs/bad-input.mte: `a+` has no offset; the caret is on `+`.
    assert_refused(
        &format!("{P}p load a+ 8 => value 0x0\n"),
        3,
        9,
        "bad pointer `a+`: missing offset after `+`",
    );
    assert_refused(
        &format!("{P}p load a- 8\n"),
        3,
        9,
        "missing offset after `-`",
    );
    assert_refused(&format!("{P}p load a# 8\n"), 3, 9, "missing tag after `#`");
    assert_refused(
        &format!("{P}p load a*2 8\n"),
        3,
        9,
        "bad pointer `a*2`: unexpected character",
    );
    assert_refused(&format!("{P}p load a+4#3+1 8\n"), 3, 12, "bad tag `3+1`");
    assert_refused(
        &format!("{P}p load 0x1000+16 8\n"),
        3,
        14,
        "a raw address takes no offset or tag",
    );
    assert_refused(
        &format!("{P}p load 0x1000#3 8\n"),
        3,
        14,
        "a raw address takes no offset or tag",
    );
    assert_refused(
        &format!("{P}p load 4K 8\n"),
        3,
        8,
        "bad address `4K`: size suffix `K` not allowed",
    );
    assert_refused(
        &format!("{P}p load A 8\n"),
        3,
        8,
        "expected a pointer name or an address",
    );
    assert_refused(&format!("{P}p load a+ 8\n"), 3, 9, "`a+`");
}

#[test]
fn bad_lists_and_choices() {
    assert_refused(
        "spawn p\np mmap a 4K prot=none,r\n",
        2,
        23,
        "`none` cannot be combined",
    );
    assert_refused(
        "spawn p\np mmap a 4K prot=r,r\n",
        2,
        20,
        "`prot` list item `r`: given twice",
    );
    assert_refused(
        "spawn p\np mmap a 4K prot=rw\n",
        2,
        18,
        "expected none, r, w, x or mte",
    );
    assert_refused("spawn p\np mmap a 4K prot=\n", 2, 18, "empty item");
    assert_refused(
        "spawn p\np mmap a 4K map=private,shared\n",
        2,
        25,
        "at most one of `private` and `shared`",
    );
    assert_refused(
        "spawn p\np mmap a 4K map=shm,file\n",
        2,
        21,
        "at most one of `anon`, `shm` and `file`",
    );
    assert_refused(
        "spawn p\np mmap a 4K map=populate,populate\n",
        2,
        26,
        "`populate` given twice",
    );
    assert_refused(
        "spawn p\np mmap a 4K map=fixed=0x1000,fixed=0x2000\n",
        2,
        30,
        "`fixed=` given twice",
    );
    assert_refused(
        "spawn p\np mmap a 4K map=anon prot=r map=shm\n",
        2,
        29,
        "`map=` is given twice",
    );
    assert_refused(
        &format!("{P}p madvise a 4K dont-need\n"),
        3,
        16,
        "unknown advice `dont-need`",
    );
    assert_refused(&format!("{P}p tco maybe\n"), 3, 7, "`on` or `off`");
    assert_refused(
        &format!("{P}p pin a 4K longterm=no\n"),
        3,
        21,
        "`on` or `off`",
    );
    assert_refused(
        &format!("{P}p pin a 4K short=on\n"),
        3,
        12,
        "unknown key `short`",
    );
    assert_refused(
        &format!("{P}p pin a 4K longterm=off longterm=on\n"),
        3,
        25,
        "`longterm=` is given twice",
    );
    let ok = format!("{P}p pin a 4K longterm=off\np unpin a 4K\np pin a 4K longterm=on\n");
    assert!(lang::parse("ok.mte", ok.as_bytes()).is_ok());
    assert_refused(
        &format!("{P}p prctl tcf=strict\n"),
        3,
        13,
        "unknown tag check mode `strict`",
    );
    assert_refused(
        &format!("{P}p prctl tcf=sync tcf=async\n"),
        3,
        18,
        "`tcf=` is given twice",
    );
    assert_refused(
        &format!("{P}p mprotect a 4K\n"),
        3,
        16,
        "missing `prot=LIST` after `4K`",
    );
    assert_refused(
        &format!("{P}p mprotect a 4K map=shm\n"),
        3,
        17,
        "unknown key `map` for `mprotect`",
    );
}

#[test]
fn instruction_operand_ranges() {
    // Arm ARM ADDG: offset uimm6 x 16 (0..=1008), tag offset uimm4.
    assert_refused(
        &format!("{P}p addg b a 1024 1\n"),
        3,
        12,
        "0 to 1008, a multiple of 16",
    );
    assert_refused(&format!("{P}p addg b a 24 1\n"), 3, 12, "a multiple of 16");
    assert_refused(&format!("{P}p addg b a 16 16\n"), 3, 15, "0 to 15");
    assert_refused(&format!("{P}p settag a 24\n"), 3, 12, "a multiple of 16");
    assert_refused(
        &format!("{P}p irg b a exclude=0x10000\n"),
        3,
        19,
        "at most 0xffff",
    );
    assert_refused(
        &format!("{P}p ldg a => tag-in 0x10000\n"),
        3,
        19,
        "at most 0xffff",
    );
}

#[test]
fn missing_and_extra_arguments() {
    assert_refused("spawn p\np load\n", 2, 7, "missing pointer after `load`");
    assert_refused(&format!("{P}p load a\n"), 3, 9, "missing access size");
    assert_refused(
        &format!("{P}p load a => value 1\n"),
        3,
        9,
        "missing access size",
    );
    assert_refused("spawn\n", 1, 6, "missing process name after `spawn`");
    assert_refused("spawn p\np\n", 2, 2, "missing command after `p`");
    assert_refused(
        &format!("{P}p load a 8 8\n"),
        3,
        12,
        "unexpected `8`: too many arguments",
    );
    assert_refused(
        "spawn p\np yield now\n",
        2,
        9,
        "this command takes no arguments",
    );
    assert_refused("compact now\n", 1, 9, "this command takes no arguments");
    assert_refused("expect invariants now\n", 1, 19, "too many words");
    assert_refused(
        &format!("{P}expect p tags a 16 = 0\n"),
        3,
        20,
        "expected `==`",
    );
    assert_refused("expect\n", 1, 7, "missing expectation");
}

#[test]
fn tabs_and_unicode_comments_do_not_shift_columns() {
    // Each tab and each `é` is one column.
    assert_refused(
        "# é é é\nspawn p\n\tp\tlod\n",
        3,
        4,
        "unknown command `lod`",
    );
}

#[test]
fn an_empty_file_is_fine_and_runs_nothing() {
    let script = lang::parse("t.mte", b"").unwrap();
    assert!(script.stmts.is_empty() && script.platform.is_none());
    let script = lang::parse("t.mte", b"\n# only a comment\n\t \n").unwrap();
    assert!(script.stmts.is_empty());
}

#[test]
fn only_the_first_error_is_reported() {
    let err = refuse(b"spawn p\np lod\np lod2\n");
    assert!(matches!(err.kind(), ErrorKind::UnknownCommand { found } if found == "lod"));
}
