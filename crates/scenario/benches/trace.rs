//! Trace throughput on a small synthetic trace (100 000 lines), per line:
//! splitting lines (the baseline), parsing, and parsing + lowering +
//! running on [`scenario::bench::FlatMemory`]. `mtesim bench trace` measures
//! the full ten-million-line figure from a file.

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use scenario::bench::{FlatMemory, TRACE_HEADER_LINES, synthetic_trace};
use scenario::run::{FileResult, RunOptions};
use std::hint::black_box;

const LINES: usize = 100_000;

fn trace(c: &mut Criterion) {
    let src = synthetic_trace(LINES - TRACE_HEADER_LINES);
    let mut group = c.benchmark_group("trace");
    group.throughput(Throughput::Elements(LINES as u64));
    group.bench_function("split lines (baseline)", |b| {
        b.iter(|| {
            let text = std::str::from_utf8(black_box(&src)).unwrap();
            black_box(text.lines().count())
        })
    });
    group.bench_function("parse", |b| {
        b.iter(|| {
            let mut count = 0;
            for stmt in lang::Statements::new("trace.mte", black_box(&src)) {
                black_box(stmt.unwrap());
                count += 1;
            }
            count
        })
    });
    group.bench_function("parse + lower + run (flat memory)", |b| {
        b.iter(|| {
            let result =
                scenario::run_source("trace.mte", black_box(&src), &RunOptions::default(), |_| {
                    Ok::<_, String>(Box::new(FlatMemory::new()) as Box<dyn uapi::Machine>)
                });
            assert!(matches!(result, FileResult::Ran(ref r) if r.passed()));
        })
    });
    group.finish();
}

criterion_group!(benches, trace);
criterion_main!(benches);
