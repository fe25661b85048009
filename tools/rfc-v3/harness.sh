#!/bin/bash
# The posted RFC v3 kernel ("arm64 MTE dynamic tag storage reuse", 35 patches,
# Alexandru Elisei, 2024-01-25, on Linux v6.8) under QEMU system mode, running
# the workloads of tests/reference/rfc-v3/workloads/: each workload is a `.mte`
# scenario that mtesim runs and that `mtesim export-c` turns into the C program
# the real kernel runs. The counters the real kernel reports after each command
# are written to tests/reference/rfc-v3/boots/N/, which `cargo test` compares
# with the model (crates/mtesim/tests/reference_rfc_v3.rs). docs/reference.md
# explains the comparison.
#
#   tools/rfc-v3/harness.sh build    sources -> patched, configured, built kernel
#   tools/rfc-v3/harness.sh run      workloads -> /init -> boot -> records
#   tools/rfc-v3/harness.sh all      both
#
# Inputs: git mirrors of two public repositories, cloned when not given:
#   LINUX_REPO = github.com/sndrzt/linux-6.8 (commit 3bc197e7 is the v6.8 source)
#   ML_REPO    = github.com/linux-mailinglist-archives/linux-arch.vger.kernel.org.0
#                (one commit per mail of the linux-arch list, the mail in file `m`)
#   WORK       = scratch directory (default target/rfc-v3)
#   JOBS       = make -j (default: number of cores)
#   RECORDS    = the directory under tests/reference/rfc-v3/ the records go to
#                (default boots/1; cargo test compares every boots/N, each
#                from its own free lists; records/ and records-frames/ are
#                the third and fourth recordings, made before the probe)
#   PROBE      = pagetypeinfo: also print /proc/pagetypeinfo at each workload's
#                start into $WORK/run/boot.log (not into the records)
# Host packages (Debian): flex bison bc libssl-dev libelf-dev qemu-system-arm
#   device-tree-compiler gcc-aarch64-linux-gnu libc6-dev-arm64-cross python3, and cargo.
set -euo pipefail

HERE=$(cd "$(dirname "$0")" && pwd)
REPO=$(cd "$HERE/../.." && pwd)
WORK=${WORK:-$REPO/target/rfc-v3}
JOBS=${JOBS:-$(nproc)}
SRC=$WORK/linux
RUN=$WORK/run
REF=$REPO/tests/reference/rfc-v3
MK=(make -s ARCH=arm64 CROSS_COMPILE=aarch64-linux-gnu-)
# The machine: DATA_MIB of tag-capable RAM at 0x40000000 followed by its tag
# storage (DATA_MIB / 32), one 4 KiB page per tag block, as the model's
# `platform memory=512M block-size=4K`.
DATA_MIB=512
TAG_MIB=$((DATA_MIB / 32))

need() { command -v "$1" >/dev/null || { echo "harness: '$1' is missing (Debian package: $2)" >&2; exit 2; }; }

sources() {
  mkdir -p "$WORK"
  if [ -z "${LINUX_REPO:-}" ]; then
    LINUX_REPO=$WORK/linux-6.8.git
    [ -d "$LINUX_REPO" ] || git clone --bare https://github.com/sndrzt/linux-6.8 "$LINUX_REPO"
  fi
  if [ -z "${ML_REPO:-}" ]; then
    ML_REPO=$WORK/linux-arch.git
    [ -d "$ML_REPO" ] || git clone --bare https://github.com/linux-mailinglist-archives/linux-arch.vger.kernel.org.0 "$ML_REPO"
  fi
}

build() {
  need aarch64-linux-gnu-gcc gcc-aarch64-linux-gnu; need flex flex; need bison bison; need bc bc
  sources
  mkdir -p "$WORK/mbox"
  echo "harness: [1/5] the 35 patch mails (message-ids 20240125164256.4147-{2..36}-alexandru.elisei@arm.com)"
  rm -f "$WORK"/mbox/*.eml
  git -C "$ML_REPO" log --all --format='%H %s' | grep -E '^[0-9a-f]+ \[PATCH RFC v3 [0-9]+/35\]' |
  while read -r h _; do
    # Written whole before it is read: a reader that stops at the first
    # match (grep -m1 on a pipe) would kill `git show` with SIGPIPE, which pipefail
    # turns into a failed build.
    git -C "$ML_REPO" show "$h:m" > "$WORK/mbox/mail.tmp"
    n=$(grep -i -m1 '^Message-Id:' "$WORK/mbox/mail.tmp" |
        sed -nE 's/.*<20240125164256\.4147-([0-9]+)-alexandru\.elisei@arm\.com>.*/\1/p')
    [ -n "$n" ] || continue
    # Mail N carries patch N-1: mail 1 is the cover letter.
    mv "$WORK/mbox/mail.tmp" "$WORK/mbox/$(printf %02d $((n - 1))).eml"
  done
  rm -f "$WORK/mbox/mail.tmp"
  rm -f "$WORK/mbox/00.eml"
  [ "$(ls "$WORK"/mbox/*.eml | wc -l)" -eq 35 ] || { echo "harness: expected 35 patch mails" >&2; exit 1; }

  echo "harness: [2/5] Linux v6.8 (3bc197e7)"
  rm -rf "$SRC"; mkdir -p "$SRC"
  # The mirror lacks one folder of generated AMD register headers, which this
  # configuration never builds: leave it out of the checkout.
  ( export GIT_INDEX_FILE=$WORK/index GIT_WORK_TREE=$SRC
    cd "$LINUX_REPO"
    git read-tree 3bc197e7
    git ls-files drivers/gpu/drm/amd/include/asic_reg | git update-index --force-remove --stdin
    git checkout-index -a -f )
  rm -f "$WORK/index"
  cd "$SRC"
  git init -q && git add -A && git -c user.name=h -c user.email=h@h commit -qm v6.8

  echo "harness: [3/5] the series"
  for n in $(seq -w 1 35); do
    git -c user.name=h -c user.email=h@h am -q --keep-cr "$WORK/mbox/$n.eml"
  done
  # The series calls lru_cache_{disable,enable} in arch/arm64/mm/fault.c
  # without including <linux/swap.h>; it builds only by accident of other
  # headers. The one build fix applied.
  sed -i 's|^#include <linux/hugetlb.h>$|#include <linux/hugetlb.h>\n#include <linux/swap.h>|' arch/arm64/mm/fault.c
  # The comparison's probe, not part of the series: a read-only debugfs file
  # listing the buddy and per-CPU free lists in list order (rt.c reads it at
  # each workload's start; docs/reference.md, "The free lists"). It
  # allocates nothing and changes no allocation; its 512 KiB static buffer
  # makes the kernel image that much larger.
  git apply "$HERE/free-lists-probe.patch"

  echo "harness: [4/5] configuration"
  "${MK[@]}" allnoconfig
  ARCH=arm64 CROSS_COMPILE=aarch64-linux-gnu- scripts/kconfig/merge_config.sh -m .config "$HERE/config.fragment" >/dev/null
  "${MK[@]}" olddefconfig
  for c in CMA NUMA ARM64_MTE ARM64_MTE_TAG_STORAGE SWAP KSM COMPACTION TRANSPARENT_HUGEPAGE BLK_DEV_RAM; do
    grep -q "^CONFIG_$c=y" .config || { echo "harness: CONFIG_$c is not =y" >&2; exit 1; }
  done

  echo "harness: [5/5] Image (make -j$JOBS)"
  "${MK[@]}" -j"$JOBS" Image
  echo "harness: built $SRC/arch/arm64/boot/Image"
}

device_tree() {
  need dtc device-tree-compiler
  local mem=$((DATA_MIB + TAG_MIB))
  qemu-system-aarch64 -M virt,mte=on,dumpdtb="$RUN/virt.dtb" -cpu max -smp 2 -m "${mem}M" -nodefaults >/dev/null
  dtc -q -I dtb -O dts -o "$RUN/virt.dts" "$RUN/virt.dtb"
  # The RFC v3 binding (patch 11): the tag storage is a reusable reserved
  # memory region naming the memory it holds tags for and its block size.
  python3 - "$RUN/virt.dts" "$DATA_MIB" "$TAG_MIB" <<'PY'
import sys
path, data, tag = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
base = 0x40000000
tag_base = base + data * 2**20
nodes = f"""
	tagged_ram: tagged-ram@{base:x} {{
		reg = <0x00 {base:#x} 0x00 {data * 2**20:#x}>;
	}};

	reserved-memory {{
		#address-cells = <0x02>;
		#size-cells = <0x02>;
		ranges;

		tag-storage@{tag_base:x} {{
			compatible = "arm,mte-tag-storage";
			reg = <0x00 {tag_base:#x} 0x00 {tag * 2**20:#x}>;
			block-size = <0x1000>;
			tagged-memory = <&tagged_ram>;
			reusable;
		}};
	}};
"""
text = open(path).read().rstrip()
# Subnodes follow the root's properties: append ours before its closing brace.
assert text.endswith("};"), "the dumped device tree does not end with the root node"
open(path, "w").write(text[:-2] + nodes + "};\n")
PY
  dtc -q -I dts -O dtb -o "$RUN/virt-tag.dtb" "$RUN/virt.dts"
}

run() {
  need qemu-system-aarch64 qemu-system-arm; need aarch64-linux-gnu-gcc gcc-aarch64-linux-gnu; need python3 python3
  [ -f "$SRC/arch/arm64/boot/Image" ] || { echo "harness: no kernel; run '$0 build' first" >&2; exit 2; }
  rm -rf "$RUN"; mkdir -p "$RUN/c"
  ( cd "$REPO" && cargo build -q --release -p mtesim )
  local mtesim=$REPO/target/release/mtesim
  local list=()
  for w in "$REF"/workloads/*.mte; do
    local name; name=$(basename "$w" .mte | tr -c 'A-Za-z0-9_\n' _)
    "$mtesim" export-c "$w" --name "$name" -o "$RUN/c/$name.c"
    list+=("$name")
  done
  # One /init (rt.c) runs every workload in a child and prints the result of
  # each command and the kernel's counters after it (rt.h has the protocol).
  { echo '#include "rt.h"'
    for n in "${list[@]}"; do echo "extern const struct rt_workload wl_$n;"; done
    echo 'const struct rt_workload *const rt_workloads[] = {'
    for n in "${list[@]}"; do echo "  &wl_$n,"; done
    echo '  0 };'; } > "$RUN/c/list.c"
  # PROBE=pagetypeinfo: /proc/pagetypeinfo at each workload's start in
  # boot.log (not in the records), the free lists the workload starts from.
  local probe=()
  [ "${PROBE:-}" = pagetypeinfo ] && probe=(-DRT_PAGETYPEINFO)
  aarch64-linux-gnu-gcc -static -O1 -Wall -march=armv8.5-a+memtag "${probe[@]}" -I "$HERE" -o "$RUN/init" \
    "$HERE/rt.c" "$RUN"/c/*.c
  [ -x "$SRC/usr/gen_init_cpio" ] || gcc -O2 -o "$SRC/usr/gen_init_cpio" "$SRC/usr/gen_init_cpio.c"
  printf '%s\n' "dir /dev 0755 0 0" "nod /dev/console 0600 0 0 c 5 1" "dir /proc 0755 0 0" \
    "dir /sys 0755 0 0" "file /init $RUN/init 0755 0 0" > "$RUN/initramfs.list"
  "$SRC/usr/gen_init_cpio" "$RUN/initramfs.list" > "$RUN/initramfs.cpio"
  device_tree
  echo "harness: booting (${#list[@]} workloads)"
  local start=$SECONDS
  timeout 3000 qemu-system-aarch64 -M virt,mte=on -cpu max -smp 2 -m $((DATA_MIB + TAG_MIB))M \
    -nodefaults -serial mon:stdio -display none \
    -kernel "$SRC/arch/arm64/boot/Image" -initrd "$RUN/initramfs.cpio" -dtb "$RUN/virt-tag.dtb" \
    -append "console=ttyAMA0 cma=0 brd.rd_nr=1 brd.rd_size=65536" < /dev/null > "$RUN/boot.log"
  echo "harness: boot took $((SECONDS - start)) s"
  python3 "$HERE/records.py" parse "$RUN/boot.log" "$REF/${RECORDS:-boots/1}" \
    --kernel "Linux v6.8 + RFC v3 (35 patches) + 1 build fix + free-lists probe" \
    --config "$HERE/config.fragment" --qemu "$(qemu-system-aarch64 --version | head -1)" \
    --machine "virt,mte=on -cpu max -smp 2 -m $((DATA_MIB + TAG_MIB))M; tag storage ${TAG_MIB} MiB, block 4 KiB" \
    "${list[@]}"
}

case "${1:-all}" in
  build) build ;;
  run) run ;;
  all) build; run ;;
  *) echo "usage: $0 build|run|all" >&2; exit 2 ;;
esac
