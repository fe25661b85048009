#!/usr/bin/env python3
"""Turn the serial log of a harness boot into one JSON record per workload.

Usage: records.py parse BOOT_LOG OUT_DIR --kernel K --config FRAGMENT --qemu Q
                        --machine M NAME...

The log protocol is rt.h's. Each record holds the kernel's counters before the
workload (`start`) and after every step (`steps[i].counters`, absolute values:
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


def parse_log(path):
    """{name: {"start": {...}, "steps": [...], "finished": bool}}"""
    work = {}
    block = None  # the dict a counter block fills
    current = None  # the workload running
    warnings = []  # kernel warnings since the last step's line
    for raw in open(path, errors="replace"):
        line = raw.rstrip("\r\n")
        m = re.match(r"^== (\S+)$", line)
        if m:
            current = m.group(1)
            work[current] = {"start": {}, "steps": [], "finished": False}
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
        if line == "-- end":
            block = None
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
