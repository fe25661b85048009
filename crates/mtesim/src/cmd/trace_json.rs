//! `mtesim run --trace-json FILE`: the machine's events as JSON lines, one
//! object per event, in the order the events happened (files in the order
//! of the other output). The schema (`docs/cli.md`, "The event trace"):
//!
//! - `file`, `line`, `command`: the scenario line that caused the event and
//!   its text;
//! - `event`: the kind (`fault`, `tag-reserve`, `tag-release`, `migrate`,
//!   `huge-split`, `swap-out`, `swap-in`, `tags-init`, `cow-copy`);
//! - the kind's fields, as below; frames (`pfn`, `from`, `to`) and
//!   addresses (`addr`, `pmd`) as integers, names as the strings the text
//!   trace prints.

use scenario::run::Step;
use serde_json::{Value, json};
use uapi::event::{Event, ReserveHow};

/// The JSON lines of the events under `steps` of `file`.
pub fn lines(file: &str, steps: &[Step]) -> String {
    let mut out = String::new();
    for step in steps {
        for event in &step.events {
            let mut object = json!({
                "file": file,
                "line": step.line,
                "command": step.text,
            });
            if let (Value::Object(o), Value::Object(fields)) = (&mut object, event_json(event)) {
                o.extend(fields);
            }
            out.push_str(&object.to_string());
            out.push('\n');
        }
    }
    out
}

/// One event's kind and fields.
pub fn event_json(event: &Event) -> Value {
    match *event {
        Event::Fault {
            kind,
            addr,
            outcome,
        } => json!({
            "event": "fault",
            "kind": kind.name(),
            "addr": addr.as_u64(),
            "outcome": outcome.name(),
        }),
        Event::TagReserve { block, how } => {
            let (how, migrated, why) = match how {
                ReserveHow::FastPath => ("fast-path", None, None),
                ReserveHow::Claimed { migrated } => ("claimed", Some(migrated), None),
                ReserveHow::Failed(why) => ("failed", None, Some(why.name())),
            };
            json!({
                "event": "tag-reserve",
                "block": block,
                "how": how,
                "migrated": migrated,
                "why": why,
            })
        }
        Event::TagRelease { block } => json!({"event": "tag-release", "block": block}),
        Event::Migrate { from, to, reason } => json!({
            "event": "migrate",
            "from": from.as_u64(),
            "to": to.as_u64(),
            "reason": reason.name(),
        }),
        Event::HugeSplit { pmd, reason } => json!({
            "event": "huge-split",
            "pmd": pmd.as_u64(),
            "reason": reason.name(),
        }),
        Event::SwapOut {
            pfn,
            slot,
            tags_saved,
        } => json!({
            "event": "swap-out",
            "pfn": pfn.as_u64(),
            "slot": slot,
            "tags_saved": tags_saved,
        }),
        Event::SwapIn {
            pfn,
            slot,
            tags_restored,
        } => json!({
            "event": "swap-in",
            "pfn": pfn.as_u64(),
            "slot": slot,
            "tags_restored": tags_restored,
        }),
        Event::TagsInitialised { pfn } => json!({"event": "tags-init", "pfn": pfn.as_u64()}),
        Event::CowCopy {
            from,
            to,
            tags_copied,
        } => json!({
            "event": "cow-copy",
            "from": from.as_u64(),
            "to": to.as_u64(),
            "tags_copied": tags_copied,
        }),
        Event::KernelWarning { site } => json!({"event": "kernel-warning", "site": site.name()}),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use mte::{Pfn, VirtAddr};
    use uapi::event::{FaultKind, FaultOutcome, ReserveFailure};

    #[test]
    fn every_event_becomes_one_line_with_its_line_and_command() {
        let step = Step {
            line: 7,
            text: "p load a 8".into(),
            result: "value 0x0".into(),
            events: vec![
                Event::Fault {
                    kind: FaultKind::ZeroPage,
                    addr: VirtAddr::new(0x1000).unwrap(),
                    outcome: FaultOutcome::Mapped,
                },
                Event::TagReserve {
                    block: 3,
                    how: ReserveHow::Failed(ReserveFailure::Pinned),
                },
            ],
        };
        let text = lines("a.mte", &[step]);
        let values: Vec<Value> = text
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(
            values,
            [
                json!({"file": "a.mte", "line": 7, "command": "p load a 8", "event": "fault",
                       "kind": "zero-page", "addr": 4096, "outcome": "mapped"}),
                json!({"file": "a.mte", "line": 7, "command": "p load a 8", "event": "tag-reserve",
                       "block": 3, "how": "failed", "migrated": null, "why": "pinned"}),
            ]
        );
        let copy = Event::CowCopy {
            from: Pfn::new(1),
            to: Pfn::new(2),
            tags_copied: true,
        };
        assert_eq!(event_json(&copy)["tags_copied"], true);
    }
}
