//! The loop of `tools/qemu-compare/checked_loads.c` in mtesim: one process
//! in sync mode (`prctl`, every tag but 0 allowed for IRG), a 64 KiB
//! `PROT_MTE` mapping, IRG for a random tag, STG on every granule, then `N`
//! tag-checked 8-byte loads with a stride of 72 bytes through the direct
//! access API (`Kernel::load_direct`). Prints `ns/load <float>`: the best of
//! five rounds in CPU time of the thread (`/proc/thread-self/schedstat`,
//! nanoseconds; wall clock where it cannot be read, and then it says so), as
//! the C program measures with `CLOCK_THREAD_CPUTIME_ID`.
//!
//! Run: `cargo run --release -p mtesim-kernel --example checked_loads -- N`
//! (`tools/qemu-compare/run.sh` runs it next to QEMU).

use std::hint::black_box;
use std::process::ExitCode;
use std::time::Instant;

use kernel::Kernel;
use mte::{CheckMode, TagMask, TaggedPtr};
use platform::Platform;
use uapi::{AccessSize, Bound, Command, Machine, MapFlags, Op, Outcome, Pid, PrctlRequest, Prot};

const LEN: u64 = 64 << 10;

/// CPU time of this thread so far, in ns (the first field of
/// `/proc/thread-self/schedstat`); `None` where the kernel does not have it.
fn cpu_ns() -> Option<u64> {
    let text = std::fs::read_to_string("/proc/thread-self/schedstat").ok()?;
    text.split_whitespace().next()?.parse().ok()
}
const STRIDE: u64 = 72;

fn command(k: &mut Kernel, pid: Pid, command: Command) -> Result<uapi::Reply, String> {
    let what = format!("{command:?}");
    let reply = k.run(&Op::Process { pid, command });
    match reply.outcome {
        Outcome::Ok | Outcome::Tag(_) => Ok(reply),
        other => Err(format!("{what}: {other:?}")),
    }
}

/// The process and its tagged buffer, set up as the C program does.
fn setup(k: &mut Kernel) -> Result<(Pid, TaggedPtr), String> {
    let Some(Bound::Process(pid)) = k.run(&Op::Spawn).bound else {
        return Err("spawn failed".into());
    };
    let prctl = PrctlRequest {
        tagged_addr: Some(true),
        tcf: Some(CheckMode::Sync),
        include: Some(TagMask::from_bits(0xfffe)),
        store_only: None,
    };
    command(k, pid, Command::Prctl(prctl))?;
    let prot = Prot {
        mte: true,
        ..Prot::READ_WRITE
    };
    let mmap = Command::Mmap {
        len: LEN,
        prot,
        flags: MapFlags::default(),
    };
    let Some(Bound::Pointer(base)) = command(k, pid, mmap)?.bound else {
        return Err("mmap bound no pointer".into());
    };
    let irg = Command::Irg {
        ptr: base,
        exclude: TagMask::from_bits(0),
    };
    let Some(Bound::Pointer(tagged)) = command(k, pid, irg)?.bound else {
        return Err("irg bound no pointer".into());
    };
    command(
        k,
        pid,
        Command::SetTag {
            ptr: tagged,
            len: LEN,
        },
    )?;
    command(
        k,
        pid,
        Command::Fill {
            ptr: tagged,
            len: LEN,
            byte: 0x5a,
        },
    )?;
    Ok((pid, tagged))
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let n = match args.as_slice() {
        [n] => match n.parse::<u64>() {
            Ok(n) if n > 0 => n,
            _ => {
                eprintln!("checked_loads: N must be a positive number of loads, not {n:?}");
                return ExitCode::from(2);
            }
        },
        _ => {
            eprintln!("usage: checked_loads N");
            return ExitCode::from(2);
        }
    };
    let mut k = match Kernel::new(&Platform::default()) {
        Ok(k) => k,
        Err(e) => {
            eprintln!("checked_loads: {e}");
            return ExitCode::from(2);
        }
    };
    let (pid, tagged) = match setup(&mut k) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("checked_loads: setup: {e}");
            return ExitCode::from(2);
        }
    };
    let cpu_clock = cpu_ns().is_some();
    if !cpu_clock {
        eprintln!("checked_loads: no /proc/thread-self/schedstat: timing by wall clock");
    }
    let mut best = f64::INFINITY;
    for _ in 0..5 {
        let mut sum = 0u64;
        let start = Instant::now();
        let start_cpu = cpu_ns();
        for i in 0..n {
            let off = (i * STRIDE) % (LEN - 8);
            let ptr = tagged.with_addr(
                mte::VirtAddr::new(tagged.addr().as_u64() + off).expect("inside the buffer"),
            );
            match k.load_direct(pid, black_box(ptr), AccessSize::B8) {
                Outcome::Value(v) => sum = sum.wrapping_add(v as u64),
                other => {
                    eprintln!("checked_loads: load at +{off:#x}: {other:?}");
                    return ExitCode::from(1);
                }
            }
        }
        black_box(sum);
        let seconds = match (start_cpu, cpu_ns()) {
            (Some(a), Some(b)) if cpu_clock => (b - a) as f64 * 1e-9,
            _ => start.elapsed().as_secs_f64(),
        };
        best = best.min(seconds);
    }
    println!("ns/load {:.3}", best * 1e9 / n as f64);
    ExitCode::SUCCESS
}
