#!/usr/bin/env bash
# Re-records the shipped traces (needs valgrind and a built mtesim):
#   workloads/make.sh [path/to/mtesim]
# The inputs are generated here, deterministically (a fixed linear
# congruential sequence in awk), so a re-recording differs only where the
# host's sort, gzip or C library differ.
set -euo pipefail
cd "$(dirname "$0")"
MTESIM=${1:-../target/release/mtesim}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

# 3000 lines of pseudo-random words for sort.
awk 'BEGIN { x = 1; for (i = 0; i < 3000; i++) {
    x = (x * 75 + 74) % 65537; y = (x * 75 + 74) % 65537
    printf "w%05d-%05d line %d\n", x, y, i; x = y } }' > "$work/words.txt"
"$MTESIM" record -o sort.mtrace -- sort "$work/words.txt" > /dev/null

# 32 KiB of the same kind of text for gzip.
awk 'BEGIN { x = 7; for (i = 0; i < 3000; i++) {
    x = (x * 75 + 74) % 65537; printf "%05d %s\n", x, (x % 3 ? "alpha" : "beta") } }' \
    > "$work/all.txt"
head -c 32768 "$work/all.txt" > "$work/data.txt"
"$MTESIM" record -o gzip.mtrace -- gzip -c "$work/data.txt" > /dev/null

# A C program with a use after free and a heap overflow (src/uaf.c): its
# replay shows the tag check faults MTE would raise.
cc -O0 -g -o "$work/uaf" src/uaf.c
"$MTESIM" record -o uaf.mtrace -- "$work/uaf" > /dev/null
