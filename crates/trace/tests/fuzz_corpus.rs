//! Replays the decoder fuzzer's seed corpus (`fuzz/corpus/decode/`) and any
//! crash artifacts it left (`fuzz/artifacts/decode/`) through the reader on
//! stable, so that a fuzzer finding becomes a regression test once its file
//! is saved.
//!
//! The synthetic seeds are made here ([`seeds`]); run with
//! `MTESIM_WRITE_SEEDS=1` to write them after a format change.

use std::path::{Path, PathBuf};

use trace::{Access, AccessKind, Event, ExitStatus, Header, Provenance, TraceWriter, scan};

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

fn valid_trace() -> Vec<u8> {
    let header = Header {
        command: vec!["./seed".into(), "--flag".into()],
        provenance: Provenance {
            recorder: "mtesim seed".into(),
            valgrind: "valgrind-3.19.0".into(),
            host: "seed (x86_64 linux)".into(),
            date: "2026-12-06T00:00:00Z".into(),
        },
    };
    let mut w = TraceWriter::new(Vec::new(), &header, 3).unwrap();
    let events = [
        Event::Malloc {
            size: 64,
            ptr: 0x403_5310,
        },
        Event::Calloc {
            nmemb: 4,
            size: 8,
            ptr: 0x403_5360,
        },
        Event::Realloc {
            old: 0x403_5360,
            size: 128,
            ptr: 0x403_53a0,
        },
        Event::PosixMemalign {
            align: 64,
            size: 100,
            ptr: 0x403_5440,
        },
        Event::AlignedAlloc {
            align: 32,
            size: 32,
            ptr: 0x403_54c0,
        },
        Event::Memalign {
            align: 4096,
            size: 10,
            ptr: 0x403_6000,
        },
        Event::Mmap {
            addr: 0,
            len: 1 << 20,
            prot: 3,
            flags: 0x22,
            fd: -1,
            offset: 0,
            result: 0x4a0_0000,
        },
        Event::Munmap {
            addr: 0x4a0_0000,
            len: 1 << 20,
            result: 0,
        },
        Event::Brk {
            old_end: 0x405_6000,
            new_end: 0x407_7000,
        },
        Event::Free { ptr: 0x403_5310 },
    ];
    for (i, event) in events.into_iter().enumerate() {
        for j in 0..20u64 {
            w.instructions(3);
            w.access(Access {
                kind: AccessKind::ALL[(j % 3) as usize],
                addr: if j % 2 == 0 {
                    0x1f_ff00_0700 - j * 8
                } else {
                    0x403_5310 + j
                },
                size: [1, 2, 4, 8, 16, 32, 10][(i + j as usize) % 7],
            })
            .unwrap();
        }
        w.event(event).unwrap();
    }
    w.finish(ExitStatus::Exited(0)).unwrap().1
}

/// The synthetic seeds: a valid trace, and damaged variants of it that
/// reach each check of the reader.
fn seeds() -> Vec<(&'static str, Vec<u8>)> {
    let valid = valid_trace();
    let header_end = 14 + u32::from_le_bytes(valid[10..14].try_into().unwrap()) as usize;
    let mut v2 = valid.clone();
    v2[8] = 2;
    let mut flipped = valid.clone();
    let middle = header_end + 13 + 10;
    flipped[middle] ^= 0x10;
    let mut trailing = valid.clone();
    trailing.push(b'E');
    let (_, empty) = TraceWriter::new(Vec::new(), &Header::default(), 1)
        .unwrap()
        .finish(ExitStatus::Unknown)
        .unwrap();
    vec![
        ("valid.mtrace", valid.clone()),
        ("empty-trace.mtrace", empty),
        ("truncated-header.mtrace", valid[..header_end - 3].to_vec()),
        ("truncated-frame.mtrace", valid[..valid.len() / 2].to_vec()),
        ("no-end-frame.mtrace", valid[..valid.len() - 20].to_vec()),
        ("version-2.mtrace", v2),
        ("flipped-bit.mtrace", flipped),
        ("trailing-byte.mtrace", trailing),
        (
            "not-a-trace.txt",
            b"I  0401ab70,3\n S 1fff000778,8\n".to_vec(),
        ),
        ("empty", Vec::new()),
    ]
}

#[test]
fn seeds_are_current() {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../fuzz/corpus/decode");
    let write = std::env::var_os("MTESIM_WRITE_SEEDS").is_some();
    for (name, bytes) in seeds() {
        let path = dir.join(name);
        if write {
            std::fs::create_dir_all(&dir).unwrap();
            std::fs::write(&path, &bytes).unwrap();
        }
        let on_disk = std::fs::read(&path)
            .unwrap_or_else(|e| panic!("{}: {e} (MTESIM_WRITE_SEEDS=1 writes it)", path.display()));
        assert!(
            on_disk == bytes,
            "{} is stale: run with MTESIM_WRITE_SEEDS=1",
            path.display()
        );
    }
}

#[test]
fn corpus_and_artifacts_decode_without_panicking() {
    let fuzz = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../fuzz");
    let corpus = files_in(&fuzz.join("corpus/decode"));
    assert!(
        corpus.len() >= 10,
        "seed corpus missing: {}",
        fuzz.display()
    );
    let artifacts = files_in(&fuzz.join("artifacts/decode"));
    for path in corpus.iter().chain(&artifacts) {
        let bytes = std::fs::read(path).unwrap();
        let result = std::panic::catch_unwind(|| scan(&bytes[..]));
        let Ok(result) = result else {
            panic!("the reader panicked on {}", path.display());
        };
        if let Err(err) = result {
            assert!(
                err.offset() <= bytes.len() as u64,
                "{}: {err}",
                path.display()
            );
        }
    }
    // The seeds keep their meaning.
    let read =
        |name: &str| scan(&std::fs::read(fuzz.join("corpus/decode").join(name)).unwrap()[..]);
    assert!(read("valid.mtrace").is_ok() && read("empty-trace.mtrace").is_ok());
    for bad in [
        "truncated-header.mtrace",
        "truncated-frame.mtrace",
        "no-end-frame.mtrace",
        "version-2.mtrace",
        "flipped-bit.mtrace",
        "trailing-byte.mtrace",
        "not-a-trace.txt",
        "empty",
    ] {
        assert!(read(bad).is_err(), "{bad} reads as a trace");
    }
}
