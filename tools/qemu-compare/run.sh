#!/bin/sh
# mtesim against QEMU user mode on the same tag-checked load loop
# (docs/performance.md, "Against QEMU").
#
# Builds checked_loads.c for aarch64 (sync mode, PROT_MTE, IRG/STG as the
# Linux selftests' helpers do), runs it under `qemu-aarch64 -cpu max`, runs
# the same loop in mtesim (the `checked_loads` example of mtesim-kernel,
# through the direct access API), and prints ns/load for both and the ratio
# QEMU / mtesim (above 1: mtesim is faster). Both time the best of five
# rounds in CPU time of the running thread, so other work on a shared
# machine does not count.
#
# Usage: tools/qemu-compare/run.sh [N]      (N loads per round, default 5000000)
# Needs: aarch64-linux-gnu-gcc and qemu-aarch64 (Debian: gcc-aarch64-linux-gnu
# libc6-dev-arm64-cross qemu-user). Without them it says which is missing,
# still measures mtesim, and exits 3.
set -eu

N=${1:-5000000}
case $N in
'' | *[!0-9]*)
	echo "run.sh: N must be a positive number of loads, not '$N'" >&2
	exit 2
	;;
esac
if [ "$N" -eq 0 ]; then
	echo "run.sh: N must be a positive number of loads" >&2
	exit 2
fi

here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)

missing=""
command -v aarch64-linux-gnu-gcc >/dev/null 2>&1 || missing="$missing aarch64-linux-gnu-gcc (package gcc-aarch64-linux-gnu, libc6-dev-arm64-cross)"
command -v qemu-aarch64 >/dev/null 2>&1 || missing="$missing qemu-aarch64 (package qemu-user)"

echo "building the mtesim loop (cargo, release)..." >&2
(cd "$root" && cargo build --quiet --release -p mtesim-kernel --example checked_loads)
mtesim=$("$root/target/release/examples/checked_loads" "$N" | sed -n 's/^ns\/load //p')
echo "mtesim (direct access API):  $mtesim ns/load"

if [ -n "$missing" ]; then
	echo "QEMU comparison NOT RUN: missing$missing" >&2
	exit 3
fi

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
aarch64-linux-gnu-gcc -O2 -march=armv8.5-a+memtag -static \
	-o "$tmp/checked_loads" "$here/checked_loads.c"
qemu=$(qemu-aarch64 -cpu max "$tmp/checked_loads" "$N" | sed -n 's/^ns\/load //p')
if [ -z "$qemu" ]; then
	echo "run.sh: the program under QEMU printed no figure" >&2
	exit 1
fi
echo "qemu-aarch64 -cpu max:       $qemu ns/load"
awk -v q="$qemu" -v m="$mtesim" 'BEGIN { printf "ratio QEMU/mtesim: %.2fx (target: at least 5x)\n", q / m }'
