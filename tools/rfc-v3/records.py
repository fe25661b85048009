#!/usr/bin/env python3
"""Turn the serial log of a harness boot into one JSON record per workload.

Usage: records.py parse BOOT_LOG OUT_DIR --kernel K --config FRAGMENT --qemu Q
                        --machine M NAME...

The log protocol is rt.h's. Each record holds the kernel's counters before the
workload (`start`), its free-memory shape then (`start_free_area`: buddy free
blocks per zone, migrate type and order from /proc/pagetypeinfo; `start_pcp`:
pages on each CPU's per-CPU lists, with their `high`, from /proc/zoneinfo;
`start_free_frames`: the positions of the free frames, [offset, count, kind]
runs from /proc/kpageflags, offset in frames from the RAM's first frame, kind
`buddy` for free buddy frames and `other` for frames with no flag and no
mapping: the per-CPU list pages among kernel pages that set no flag;
`start_free_lists`: every buddy free list and every CPU's per-CPU lists in
list order, head first, from the harness's kernel probe, as zones of
{zone, start_pfn, pages, pcp: [{cpu, count, high, batch, free_count,
alloc_factor, flags, lists: [{pindex, order, migratetype, heads}]}], free:
[{order, migratetype, heads}]}, `heads` the probe's runs: `P`, `P+N`, `P-N`,
absolute PFNs, N blocks stepping by the order's size) and after every step (`steps[i].counters`, absolute values:
the comparison takes differences), the step's result in the scenario syntax,
and whether the workload ran to its end. crates/mtesim/tests/reference_rfc_v3.rs
reads them; docs/reference.md describes the comparison.
"""
import argparse
import hashlib
import json
import os
import re
import sys


RUN = re.compile(r"^\d+(?:[+-]\d+)?$")


def parse_lists_line(workload, zones, line):
    """One line of the free-lists probe (tools/rfc-v3/free-lists-probe.patch)
    into `zones`: `zone NAME START_PFN PAGES`, `pcp CPU COUNT HIGH BATCH
    FREE_COUNT ALLOC_FACTOR FLAGS`, `pcplist CPU PINDEX ORDER MT: RUN...`,
    `free ORDER MT: RUN...`, `end` (`truncated` is refused). The runs stay
    as the kernel wrote them (a string, head of the list first)."""
    parts = line.split()
    bad = SystemExit("records.py: %s: a free-lists line not understood: %r" % (workload, line[:120]))
    if not parts:
        return
    if parts[0] == "zone" and len(parts) == 4:
        zones.append({"zone": parts[1], "start_pfn": int(parts[2]), "pages": int(parts[3]),
                      "pcp": [], "free": []})
    elif parts[0] == "pcp" and len(parts) == 8 and zones:
        keys = ["cpu", "count", "high", "batch", "free_count", "alloc_factor", "flags"]
        zones[-1]["pcp"].append({**{k: int(v) for k, v in zip(keys, parts[1:])}, "lists": []})
    elif parts[0] == "pcplist" and len(parts) >= 5 and parts[4].endswith(":") and zones and zones[-1]["pcp"]:
        runs = parts[5:]
        if not all(RUN.match(r) for r in runs):
            raise bad
        zones[-1]["pcp"][-1]["lists"].append({
            "pindex": int(parts[2]), "order": int(parts[3]), "migratetype": int(parts[4][:-1]),
            "heads": " ".join(runs)})
        if int(parts[1]) != zones[-1]["pcp"][-1]["cpu"]:
            raise bad
    elif parts[0] == "free" and len(parts) >= 3 and parts[2].endswith(":") and zones:
        runs = parts[3:]
        if not all(RUN.match(r) for r in runs):
            raise bad
        zones[-1]["free"].append({"order": int(parts[1]), "migratetype": int(parts[2][:-1]),
                                  "heads": " ".join(runs)})
    elif parts == ["end"] and zones:
        zones[-1]["end"] = True
    elif parts == ["truncated"]:
        raise SystemExit("records.py: %s: the kernel's free-lists buffer was too small" % workload)
    else:
        raise bad


def lists_complete(zones):
    """Whether the probe's text ended with its `end` line."""
    return bool(zones) and zones[-1].pop("end", False)


def parse_log(path):
    """{name: {"start": {...}, "steps": [...], "finished": bool}}"""
    work = {}
    block = None  # the dict a counter block fills
    shape = None  # the workload whose free-memory shape is being read
    frames = None  # the free-frame runs being read
    lists = None  # the free lists being read (a list of zones)
    current = None  # the workload running
    warnings = []  # kernel warnings since the last step's line
    for raw in open(path, errors="replace"):
        line = raw.rstrip("\r\n")
        m = re.match(r"^== (\S+)$", line)
        if m:
            current = m.group(1)
            work[current] = {"start": {}, "steps": [], "finished": False,
                             "start_free_area": {}, "start_pcp": {},
                             "start_free_frames": [], "start_free_lists": []}
            warnings = []
            continue
        m = re.match(r"^-- snap (\S+) start$", line)
        if m:
            block = work[m.group(1)]["start"]
            continue
        m = re.match(r"^-- step (\S+) (\d+) (\d+) (.*)$", line)
        if m:
            # The console prints what the kernel says while a step runs
            # before the step's own line: a WARN_ON belongs to this step.
            step = {"index": int(m.group(2)), "line": int(m.group(3)),
                    "result": m.group(4), "counters": {},
                    "kernel_warnings": warnings}
            warnings = []
            work[m.group(1)]["steps"].append(step)
            block = step["counters"]
            continue
        m = re.match(r"^-- frames (\S+)(?: (.*))?$", line)
        if m and current is not None:
            # rt.c's print_free_frames: `frames OFFSET COUNT KIND` lines
            # up to `-- end`; `-- frames unavailable WHY` when it could not.
            if m.group(1) == "unavailable":
                raise SystemExit("records.py: %s: no free-frame positions: %s" % (current, m.group(2)))
            block = None
            frames = work[current]["start_free_frames"]
            continue
        if frames is not None:
            parts = line.split()
            if len(parts) == 4 and parts[0] == "frames" and parts[3] in ("buddy", "other"):
                frames.append([int(parts[1]), int(parts[2]), parts[3]])
                continue
        m = re.match(r"^-- lists (\S+)(?: (.*))?$", line)
        if m and current is not None:
            # rt.c's print_free_lists: the kernel probe's text up to `-- end`.
            if m.group(1) == "unavailable":
                raise SystemExit("records.py: %s: no free lists: %s" % (current, m.group(2)))
            block = None
            lists = work[current]["start_free_lists"]
            continue
        if lists is not None and line != "-- end":
            parse_lists_line(current, lists, line)
            continue
        m = re.match(r"^-- shape (\S+)$", line)
        if m and current is not None:
            block = None
            shape = work[current]
            continue
        if line == "-- end":
            block = None
            shape = None
            frames = None
            if lists is not None and not lists_complete(lists):
                raise SystemExit("records.py: %s: the free lists did not end with `end`" % current)
            lists = None
            continue
        if shape is not None:
            # `free ZONE TYPE N0 N1 ...`: free blocks per order;
            # `pcp ZONE CPU COUNT HIGH`: one CPU's per-CPU list pages.
            parts = line.split()
            if len(parts) > 3 and parts[0] == "free" and all(re.match(r"^\d+$", p) for p in parts[3:]):
                shape["start_free_area"].setdefault(parts[1], {})[parts[2]] = [int(p) for p in parts[3:]]
                continue
            if len(parts) == 5 and parts[0] == "pcp" and all(re.match(r"^\d+$", p) for p in parts[2:]):
                cpus = shape["start_pcp"].setdefault(parts[1], [])
                cpus.append({"cpu": int(parts[2]), "count": int(parts[3]), "high": int(parts[4])})
                continue
        m = re.match(r"^-- done (\S+)$", line)
        if m:
            w = work[m.group(1)]
            w["finished"] = not any(s["result"] == "stuck" for s in w["steps"])
            continue
        m = re.match(r"^(?:\[[ \d.]+\] )?(WARNING: .*|BUG: .*|Out of memory: .*)$", line)
        if m and current is not None:
            # Process ids change from run to run; the place does not.
            warnings.append(re.sub(r"CPU: \d+ PID: \d+ ", "", m.group(1)))
            continue
        if block is not None:
            parts = line.split()
            if len(parts) == 2 and re.match(r"^-?\d+$", parts[1]):
                block[parts[0]] = int(parts[1])
    return work


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("mode", choices=["parse"])
    ap.add_argument("log")
    ap.add_argument("out")
    ap.add_argument("--kernel", required=True)
    ap.add_argument("--config", required=True)
    ap.add_argument("--qemu", required=True)
    ap.add_argument("--machine", required=True)
    ap.add_argument("names", nargs="+")
    args = ap.parse_args()
    work = parse_log(args.log)
    config = open(args.config, "rb").read()
    os.makedirs(args.out, exist_ok=True)
    missing = [n for n in args.names if n not in work]
    for name in args.names:
        if name not in work:
            continue
        record = {
            "workload": name,
            "kernel": args.kernel,
            "config": {"fragment": os.path.basename(args.config),
                       "sha256": hashlib.sha256(config).hexdigest()},
            "qemu": args.qemu,
            "machine": args.machine,
            **work[name],
        }
        with open(os.path.join(args.out, name + ".json"), "w") as f:
            json.dump(record, f, indent=1, sort_keys=True)
            f.write("\n")
    if missing:
        print("records.py: no output for " + ", ".join(missing), file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    main()
