//! Trace replay speed (issue 13: at least 10 M accesses/s on one core) from
//! the binary trace format, against a baseline measured in the same run.
//!
//! The bench writes a trace (zstd level 1; `replay::synthetic`) of a
//! program that allocates 16 objects of 4 KiB (each tagged by the replay's
//! allocator model) and then makes `ACCESSES` 8-byte loads and stores,
//! alternating, walking the objects with a stride of 72 bytes, and times,
//! from the encoded bytes in memory:
//!
//! - `decode`: reading every record (`TraceReader::next_record`), the floor
//!   of any replay;
//! - `replay`: `replay::replay` of the same bytes on the simulated kernel in
//!   sync mode (decode, the allocator model, the direct access API with its
//!   tag checks).
//!
//! Each is the best of five rounds in CPU time of the thread
//! (`/proc/thread-self/schedstat`; wall clock where it cannot be read), so
//! that other work on a shared machine does not count. Prints `ratio` lines:
//! accesses/s of each and the replay's cost relative to decoding.
//!
//! Run: `cargo bench -p mtesim-replay --bench replay`

use std::hint::black_box;
use std::io::Read;
use std::time::Instant;

use platform::Platform;
use replay::synthetic::Synthetic;
use replay::{ReplayConfig, replay};
use trace::TraceReader;

const ACCESSES: u64 = 4_000_000;
const OBJECTS: u64 = 16;

/// The whole trace, encoded, in memory (so that only decoding and the
/// replay are timed).
fn trace() -> Vec<u8> {
    let mut bytes = Vec::new();
    Synthetic::new(OBJECTS, ACCESSES)
        .and_then(|mut trace| trace.read_to_end(&mut bytes))
        .expect("in memory");
    bytes
}

fn cpu_ns() -> Option<u64> {
    let text = std::fs::read_to_string("/proc/thread-self/schedstat").ok()?;
    text.split_whitespace().next()?.parse().ok()
}

/// The best of five rounds of `f`, in seconds.
fn best(mut f: impl FnMut()) -> f64 {
    let mut best = f64::INFINITY;
    for _ in 0..5 {
        let wall = Instant::now();
        let cpu = cpu_ns();
        f();
        let seconds = match (cpu, cpu_ns()) {
            (Some(a), Some(b)) => (b - a) as f64 * 1e-9,
            _ => wall.elapsed().as_secs_f64(),
        };
        best = best.min(seconds);
    }
    best
}

fn main() {
    // `cargo bench` passes `--bench`; a filter that names neither stage
    // (e.g. another bench's) skips this one.
    let filter: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with("--"))
        .collect();
    if !filter.is_empty() && !filter.iter().any(|f| "replay decode".contains(f.as_str())) {
        return;
    }
    let bytes = trace();
    let config = ReplayConfig::new(Platform::default());
    let decode = best(|| {
        let mut reader = TraceReader::new(&bytes[..]).expect("a trace");
        let mut n = 0u64;
        while let Some(r) = reader.next_record().expect("a record") {
            black_box(&r);
            n += 1;
        }
        assert_eq!(n, ACCESSES + OBJECTS);
    });
    let run = best(|| {
        let mut reader = TraceReader::new(&bytes[..]).expect("a trace");
        let summary = replay(&mut reader, &config, 0, |_| {}, |_| {}).expect("the replay");
        assert_eq!(summary.by_kind.iter().sum::<u64>(), ACCESSES);
        assert_eq!(summary.sync_faults + summary.other_faults, 0, "{summary:?}");
        black_box(summary);
    });
    let rate = |t: f64| ACCESSES as f64 / t / 1e6;
    println!(
        "ratio decode: {:.1} M accesses/s ({} accesses in {:.3} s CPU)",
        rate(decode),
        ACCESSES,
        decode
    );
    println!(
        "ratio replay: {:.1} M accesses/s ({:.3} s CPU), {:.2}x decode (target: at least 10 M accesses/s)",
        rate(run),
        run,
        run / decode
    );
}
