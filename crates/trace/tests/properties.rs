//! The format's promises, as properties: whatever is written reads back the
//! same; no input makes the reader panic; every damaged trace is an error
//! located inside the file.

use proptest::prelude::*;
use trace::{
    Access, AccessKind, Event, ExitStatus, Header, Provenance, Record, TraceError, TraceReader,
    TraceWriter, scan,
};

fn access_kind() -> impl Strategy<Value = AccessKind> {
    prop_oneof![
        Just(AccessKind::Load),
        Just(AccessKind::Store),
        Just(AccessKind::Modify)
    ]
}

/// Addresses clustered like a program's (a stack, a heap, anywhere), so the
/// slot logic sees both near and far moves.
fn address() -> impl Strategy<Value = u64> {
    prop_oneof![
        (0u64..4096).prop_map(|o| 0x1fff_0000_0000 + o * 8),
        (0u64..1 << 20).prop_map(|o| 0x4a0_0000 + o),
        any::<u64>(),
    ]
}

fn event() -> impl Strategy<Value = Event> {
    let (a, b, c) = (any::<u64>(), any::<u64>(), any::<u64>());
    prop_oneof![
        (a, b).prop_map(|(size, ptr)| Event::Malloc { size, ptr }),
        (a, b, c).prop_map(|(nmemb, size, ptr)| Event::Calloc { nmemb, size, ptr }),
        (a, b, c).prop_map(|(old, size, ptr)| Event::Realloc { old, size, ptr }),
        a.prop_map(|ptr| Event::Free { ptr }),
        (a, b, c).prop_map(|(align, size, ptr)| Event::PosixMemalign { align, size, ptr }),
        (a, b, c).prop_map(|(align, size, ptr)| Event::AlignedAlloc { align, size, ptr }),
        (a, b, c).prop_map(|(align, size, ptr)| Event::Memalign { align, size, ptr }),
        (
            a,
            b,
            any::<u32>(),
            any::<u32>(),
            any::<i32>(),
            c,
            any::<u64>()
        )
            .prop_map(|(addr, len, prot, flags, fd, offset, result)| Event::Mmap {
                addr,
                len,
                prot,
                flags,
                fd,
                offset,
                result
            }),
        (a, b, any::<i32>()).prop_map(|(addr, len, result)| Event::Munmap { addr, len, result }),
        (a, b).prop_map(|(old_end, new_end)| Event::Brk { old_end, new_end }),
    ]
}

/// What a writer is asked to do.
#[derive(Clone, Debug)]
enum Step {
    Access(Access),
    Event(Event),
    Instructions(u64),
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        8 => (access_kind(), address(), prop_oneof![4 => 1u32..=16, 1 => any::<u32>().prop_map(|s| s.max(1))])
            .prop_map(|(kind, addr, size)| Step::Access(Access { kind, addr, size })),
        1 => event().prop_map(Step::Event),
        1 => (1u64..1000).prop_map(Step::Instructions),
    ]
}

fn header() -> impl Strategy<Value = Header> {
    (
        proptest::collection::vec(".{0,12}", 0..4),
        ".{0,8}",
        ".{0,8}",
    )
        .prop_map(|(command, host, date)| Header {
            command,
            provenance: Provenance {
                recorder: "mtesim test".into(),
                valgrind: "valgrind-3.19.0".into(),
                host,
                date,
            },
        })
}

/// Writes `steps`, returning the file and the records a reader must see
/// (instruction counts merged as the writer merges them).
fn write(header: &Header, steps: &[Step], exit: ExitStatus) -> (Vec<u8>, Vec<Record>) {
    let mut writer = TraceWriter::new(Vec::new(), header, 1).unwrap();
    let mut expected = Vec::new();
    let mut pending = 0;
    for step in steps {
        match step {
            Step::Access(a) => {
                writer.access(*a).unwrap();
                expected.push(Record::Access(*a));
            }
            Step::Event(e) => {
                writer.event(*e).unwrap();
                if pending > 0 {
                    expected.push(Record::Instructions(pending));
                    pending = 0;
                }
                expected.push(Record::Event(*e));
            }
            Step::Instructions(n) => {
                writer.instructions(*n);
                pending += n;
            }
        }
    }
    if pending > 0 {
        expected.push(Record::Instructions(pending));
    }
    let (_, bytes) = writer.finish(exit).unwrap();
    (bytes, expected)
}

fn read_all(bytes: &[u8]) -> Result<(Header, Vec<Record>, trace::Totals), TraceError> {
    let mut reader = TraceReader::new(bytes)?;
    let mut records = Vec::new();
    while let Some(r) = reader.next_record()? {
        records.push(r);
    }
    let totals = reader.totals().cloned().expect("totals after the end");
    Ok((reader.header().clone(), records, totals))
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn what_is_written_reads_back(
        header in header(),
        steps in proptest::collection::vec(step(), 0..3000),
        code in any::<i32>(),
    ) {
        let (bytes, expected) = write(&header, &steps, ExitStatus::Exited(code));
        let (h, records, totals) = read_all(&bytes).unwrap();
        prop_assert_eq!(h, header);
        prop_assert_eq!(&records, &expected);
        prop_assert_eq!(totals.exit, ExitStatus::Exited(code));
        prop_assert_eq!(totals.access_count() as usize, steps.iter().filter(|s| matches!(s, Step::Access(_))).count());
    }

    #[test]
    fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..2048)) {
        let _ = scan(&bytes[..]);
    }

    #[test]
    fn arbitrary_frames_never_panic(
        kind in prop_oneof![Just(b'D'), Just(b'E'), any::<u8>()],
        tail in proptest::collection::vec(any::<u8>(), 0..512),
    ) {
        // A valid header, then a frame of garbage: reaches the frame and
        // record decoding, which random bytes alone never would.
        let (mut bytes, _) = write(&Header::default(), &[], ExitStatus::Exited(0));
        let header_end = 14 + u32::from_le_bytes(bytes[10..14].try_into().unwrap()) as usize;
        bytes.truncate(header_end);
        bytes.push(kind);
        bytes.extend_from_slice(&tail);
        let err = scan(&bytes[..]).unwrap_err();
        prop_assert!(err.offset() <= bytes.len() as u64);
    }

    #[test]
    fn damaged_traces_are_errors_inside_the_file(
        steps in proptest::collection::vec(step(), 1..500),
        cut in any::<prop::sample::Index>(),
        flip in any::<prop::sample::Index>(),
        bit in 0u8..8,
    ) {
        let (bytes, _) = write(&Header::default(), &steps, ExitStatus::Exited(0));
        // Truncated anywhere: an error, never a shorter "valid" trace.
        let len = cut.index(bytes.len());
        let err = scan(&bytes[..len]).unwrap_err();
        prop_assert!(err.offset() <= len as u64, "{err} for a file of {len} bytes");
        // One flipped bit: an error (checksums, totals) or, in a header
        // string, a different header; never a panic, never silently
        // different records.
        let mut damaged = bytes.clone();
        let at = flip.index(damaged.len());
        damaged[at] ^= 1 << bit;
        match read_all(&damaged) {
            Err(err) => prop_assert!(err.offset() <= damaged.len() as u64),
            Ok((_, records, _)) => {
                let (_, original, _) = read_all(&bytes).unwrap();
                prop_assert_eq!(records, original);
            }
        }
    }
}

#[test]
fn many_frames_stream_back() {
    // Enough accesses for several frames, with sizes and kinds varying.
    let steps: Vec<Step> = (0..400_000u64)
        .map(|i| {
            Step::Access(Access {
                kind: AccessKind::ALL[(i % 3) as usize],
                addr: 0x1000_0000 + (i * 7919) % (1 << 24),
                size: 1 << (i % 5),
            })
        })
        .collect();
    let (bytes, expected) = write(&Header::default(), &steps, ExitStatus::Unknown);
    let (_, records, totals) = read_all(&bytes).unwrap();
    assert!(totals.frames >= 3, "{totals:?}");
    assert_eq!(records, expected);
    assert!(totals.compressed_bytes + 14 < bytes.len() as u64);
}

#[test]
fn wrong_magic_version_and_trailing_bytes() {
    let (bytes, _) = write(&Header::default(), &[], ExitStatus::Exited(0));
    assert!(matches!(
        scan(&b"#!/bin/sh\necho\n"[..]),
        Err(TraceError::BadMagic { offset: 0 })
    ));
    assert!(matches!(
        scan(&[][..]),
        Err(TraceError::BadMagic { offset: 0 })
    ));
    assert!(matches!(
        scan(&bytes[..5]),
        Err(TraceError::Truncated { offset: 5, .. })
    ));
    let mut v2 = bytes.clone();
    v2[8] = 2;
    let err = scan(&v2[..]).unwrap_err();
    assert!(
        matches!(
            err,
            TraceError::UnsupportedVersion {
                offset: 8,
                found: 2,
                supported: 1
            }
        ),
        "{err}"
    );
    assert!(
        err.to_string()
            .starts_with("byte 8: trace format version 2"),
        "{err}"
    );
    let mut long = bytes.clone();
    long.push(0);
    let err = scan(&long[..]).unwrap_err();
    assert_eq!(err.offset(), bytes.len() as u64);
    assert!(err.to_string().contains("after the end frame"), "{err}");
    // Without its end frame a trace is truncated, at the end of the file.
    let (full, _) = write(
        &Header::default(),
        &[Step::Access(Access {
            kind: AccessKind::Load,
            addr: 8,
            size: 8,
        })],
        ExitStatus::Exited(0),
    );
    let end_frame = full.len() - find_end_frame_len(&full);
    let err = scan(&full[..end_frame]).unwrap_err();
    assert!(
        matches!(err, TraceError::Truncated { offset, .. } if offset == end_frame as u64),
        "{err}"
    );
}

/// The length of the end frame: the last frame of the file. Frames are
/// walked from the header, as a reader would.
fn find_end_frame_len(bytes: &[u8]) -> usize {
    let header_len = u32::from_le_bytes(bytes[10..14].try_into().unwrap()) as usize;
    let mut at = 14 + header_len;
    loop {
        let compressed = u32::from_le_bytes(bytes[at + 9..at + 13].try_into().unwrap()) as usize;
        let next = at + 13 + compressed;
        if next == bytes.len() {
            return bytes.len() - at;
        }
        at = next;
    }
}
