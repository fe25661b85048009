//! A replay's results as people and programs read them: text, one JSON
//! object, JSON lines and CSV for the time series. Counter keys are the
//! names of `docs/model.md` §5; every output is deterministic.

use std::fmt::Write as _;

use serde_json::{Value, json};
use trace::{AccessKind, Header};

use crate::{AllocInfo, Sample, Summary, TagFault};

fn alloc_text(info: &AllocInfo) -> String {
    let mut text = format!(
        "allocation #{} ({}({}) = {:#x}, tag {}",
        info.id, info.call, info.size, info.recorded, info.tag
    );
    match info.freed_at {
        Some(at) => {
            let _ = write!(text, ", freed at access {at})");
        }
        None => text.push_str(", live)"),
    }
    text
}

/// One fault, on two or three lines (no trailing newline).
pub fn fault_text(fault: &TagFault) -> String {
    let bytes = if fault.size == 1 { "byte" } else { "bytes" };
    let mut text = format!(
        "{} at access {}: {} of {} {bytes} at {:#x} through {:#018x}: {}",
        fault.code,
        fault.access,
        fault.kind,
        fault.size,
        fault.addr,
        fault.ptr.raw(),
        fault.diagnosis()
    );
    match &fault.pointer_from {
        Some(from) => {
            let _ = write!(text, "\n    pointer from {}", alloc_text(from));
        }
        None => text.push_str("\n    pointer from outside the heap (tag 0)"),
    }
    match &fault.hit {
        Some(hit) => {
            let _ = write!(
                text,
                "\n    memory tag {}: hit {}",
                fault.memory_tag,
                alloc_text(hit)
            );
        }
        None => {
            let _ = write!(
                text,
                "\n    memory tag {}: hit no allocation",
                fault.memory_tag
            );
        }
    }
    text
}

/// The summary for people.
pub fn text(summary: &Summary, header: &Header, trace: &str) -> String {
    let mut out = String::new();
    let end = &summary.end;
    let _ = writeln!(
        out,
        "replay of `{}` ({trace}), tcf={}",
        header.command.join(" "),
        tcf_name(summary.tcf)
    );
    let _ = writeln!(
        out,
        "  data accesses      {} ({})",
        end.accesses,
        AccessKind::ALL
            .iter()
            .map(|k| format!("{} {}", k, summary.by_kind[*k as usize]))
            .collect::<Vec<_>>()
            .join(", ")
    );
    let _ = writeln!(out, "  instructions       {}", end.instructions);
    let _ = writeln!(
        out,
        "  allocations        {} ({} frees; {} live at the end, {} bytes)",
        summary.allocations, summary.frees, end.live_allocations, end.live_bytes
    );
    let _ = writeln!(
        out,
        "  pages mapped on first touch {}; accesses skipped {}; vector loads clipped {}; \
         mappings refused {}",
        summary.implicit_pages, summary.skipped, summary.clipped_loads, summary.refused_mappings
    );
    let _ = writeln!(
        out,
        "\ntag check faults     {} (sync {}, async {}); other faults {}",
        summary.sync_faults + summary.async_faults,
        summary.sync_faults,
        summary.async_faults,
        summary.other_faults
    );
    for fault in &summary.faults {
        let _ = writeln!(out, "  {}", fault_text(fault));
    }
    let described = summary.faults.len() as u64;
    if summary.sync_faults > described {
        let _ = writeln!(out, "  ... and {} more", summary.sync_faults - described);
    }
    let _ = writeln!(out, "\ncounters");
    let width = end.counters.iter().map(|(n, _)| n.len()).max().unwrap_or(0);
    for (name, value) in &end.counters {
        let _ = writeln!(out, "  {name:<width$}  {value}");
    }
    out
}

fn tcf_name(tcf: mte::CheckMode) -> &'static str {
    match tcf {
        mte::CheckMode::None => "none",
        mte::CheckMode::Sync => "sync",
        mte::CheckMode::Async => "async",
        mte::CheckMode::Asymm => "asymm",
    }
}

fn alloc_json(info: &AllocInfo) -> Value {
    json!({
        "id": info.id,
        "call": info.call,
        "size": info.size,
        "recorded_addr": info.recorded,
        "model_addr": info.model,
        "tag": info.tag.value(),
        "allocated_at": info.allocated_at,
        "freed_at": info.freed_at,
    })
}

pub fn fault_json(fault: &TagFault) -> Value {
    json!({
        "access": fault.access,
        "kind": fault.kind.name(),
        "addr": fault.addr,
        "size": fault.size,
        "ptr": fault.ptr.raw(),
        "code": fault.code.name(),
        "diagnosis": fault.diagnosis(),
        "memory_tag": fault.memory_tag.value(),
        "pointer_from": fault.pointer_from.as_ref().map(alloc_json),
        "hit": fault.hit.as_ref().map(alloc_json),
    })
}

/// One time-series point as a JSON object.
pub fn sample_json(sample: &Sample) -> Value {
    let mut object = json!({
        "kind": "sample",
        "accesses": sample.accesses,
        "instructions": sample.instructions,
        "events": sample.events,
        "live_allocations": sample.live_allocations,
        "live_bytes": sample.live_bytes,
        "tag_check_faults": sample.tag_check_faults,
    });
    for (name, value) in &sample.counters {
        object[*name] = json!(value);
    }
    object
}

/// The whole summary as one JSON object.
pub fn json(summary: &Summary, header: &Header, trace: &str) -> Value {
    let mut counters = serde_json::Map::new();
    for (name, value) in &summary.end.counters {
        counters.insert((*name).to_owned(), json!(value));
    }
    json!({
        "kind": "summary",
        "trace": trace,
        "command": header.command,
        "tcf": tcf_name(summary.tcf),
        "accesses": summary.end.accesses,
        "loads": summary.by_kind[0],
        "stores": summary.by_kind[1],
        "modifies": summary.by_kind[2],
        "instructions": summary.end.instructions,
        "events": summary.end.events,
        "allocations": summary.allocations,
        "frees": summary.frees,
        "live_allocations": summary.end.live_allocations,
        "live_bytes": summary.end.live_bytes,
        "implicit_pages": summary.implicit_pages,
        "skipped_accesses": summary.skipped,
        "clipped_loads": summary.clipped_loads,
        "refused_mappings": summary.refused_mappings,
        "tag_check_faults": summary.sync_faults + summary.async_faults,
        "sync_faults": summary.sync_faults,
        "async_faults": summary.async_faults,
        "other_faults": summary.other_faults,
        "faults": summary.faults.iter().map(fault_json).collect::<Vec<_>>(),
        "counters": counters,
    })
}

/// The CSV header of the time series.
pub fn csv_header(sample: &Sample) -> String {
    let mut line =
        "accesses,instructions,events,live_allocations,live_bytes,tag_check_faults".to_owned();
    for (name, _) in &sample.counters {
        line.push(',');
        line.push_str(name);
    }
    line
}

pub fn csv_row(sample: &Sample) -> String {
    let mut line = format!(
        "{},{},{},{},{},{}",
        sample.accesses,
        sample.instructions,
        sample.events,
        sample.live_allocations,
        sample.live_bytes,
        sample.tag_check_faults
    );
    for (_, value) in &sample.counters {
        let _ = write!(line, ",{value}");
    }
    line
}
