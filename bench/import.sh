#!/bin/bash
# `ocibuild store import` of a generated tree of mixed file sizes (default ~1 GiB), side by side
# with `b3sum --num-threads 1` over the same files in the same run (the floor: reading and
# hashing, no storing). Also the peak RSS of import (/usr/bin/time -v) at 1/4 of the size and at
# full size, to show it stays flat (files are streamed). Both runs see a warm page cache (b3sum
# goes first), into a fresh on-disk store (whose import syncs once at the end, not per blob) and
# a memory:// store.
# usage: bench/import.sh [MIB]   (needs build/ocibuild; data goes under $TMPDIR)
set -eu
cd "$(dirname "$0")/.."
OCIBUILD=${OCIBUILD:-$PWD/build/ocibuild}
MIB=${1:-1024}
work=$(mktemp -d "${TMPDIR:-/tmp}/obi-bench-import.XXXXXX")
trap 'chmod -R u+w "$work" 2>/dev/null; rm -rf "$work"' EXIT

# gen DIR MIB: deterministic mixed sizes; 60% of the bytes in large files (8-64 MiB), 30% in
# medium ones (64 KiB - 1 MiB), 10% in small ones (100 B - 16 KiB), in nested directories.
gen() {
  /usr/bin/python3 - "$1" "$2" <<'PY'
import os, random, sys
root, mib = sys.argv[1], int(sys.argv[2])
rng = random.Random(1)
total = mib << 20
chunk = os.urandom(1 << 20)
def write(path, size):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "wb") as f:
        while size > 0:
            n = min(size, len(chunk))
            off = rng.randrange(0, len(chunk) - n + 1)
            f.write(chunk[off:off + n]); size -= n
files = 0
for share, lo, hi, kind in ((0.6, 8 << 20, 64 << 20, "large"), (0.3, 64 << 10, 1 << 20, "medium"),
                            (0.1, 100, 16 << 10, "small")):
    budget = int(total * share)
    while budget > 0:
        size = min(budget, rng.randrange(lo, hi))
        write(os.path.join(root, kind, "d%02d" % (files % 37), "f%06d" % files), size)
        budget -= size; files += 1
print(files)
PY
}

# Wall and CPU (user+sys) seconds; the machine may be shared, so both are reported.
now() { date +%s.%N; }
cpu_of() { awk -F': ' '/User time/ {u = $2} /System time/ {s = $2} END {print u + s}' "$1"; }
rate() { echo "$1 / 1048576 / $2" | bc -l; }
run_one() { # $1 = MIB
  local mib=$1 tree="$work/tree-$1" n bytes t0 t1
  n=$(gen "$tree" "$mib")
  bytes=$(du -sb --apparent-size "$tree" | cut -f1)
  find "$tree" -type f -print0 | xargs -0 cat >/dev/null # warm the page cache
  t0=$(now)
  /usr/bin/time -v -o "$work/b3.txt" sh -c 'find "$1" -type f -print0 | xargs -0 b3sum --num-threads 1 >/dev/null' sh "$tree"
  t1=$(now); local b3_wall b3_cpu; b3_wall=$(echo "$t1 - $t0" | bc -l); b3_cpu=$(cpu_of "$work/b3.txt")
  t0=$(now)
  /usr/bin/time -v -o "$work/imp.txt" "$OCIBUILD" store import --store "$work/store-$mib" "$tree" >/dev/null
  t1=$(now); local imp_wall imp_cpu rss; imp_wall=$(echo "$t1 - $t0" | bc -l); imp_cpu=$(cpu_of "$work/imp.txt")
  rss=$(awk -F': ' '/Maximum resident/ {print $2}' "$work/imp.txt")
  /usr/bin/time -v -o "$work/mem.txt" "$OCIBUILD" store import --store memory:// "$tree" >/dev/null
  local mem_cpu mem_rss; mem_cpu=$(cpu_of "$work/mem.txt"); mem_rss=$(awk -F': ' '/Maximum resident/ {print $2}' "$work/mem.txt")
  printf '%5s MiB %5d files | b3sum -t1: wall %6.2fs cpu %6.2fs (%4.0f MiB/s cpu)\n' "$mib" "$n" "$b3_wall" "$b3_cpu" "$(rate "$bytes" "$b3_cpu")"
  printf '%21s| import on-disk: wall %6.2fs cpu %6.2fs (%4.0f MiB/s cpu), cpu ratio vs b3sum %.2f, wall ratio %.2f, peak RSS %d KiB\n' \
    "" "$imp_wall" "$imp_cpu" "$(rate "$bytes" "$imp_cpu")" "$(echo "$b3_cpu / $imp_cpu" | bc -l)" "$(echo "$b3_wall / $imp_wall" | bc -l)" "$rss"
  printf '%21s| import memory://: cpu %6.2fs, cpu ratio vs b3sum %.2f, peak RSS %d KiB (holds every blob in memory by design)\n' \
    "" "$mem_cpu" "$(echo "$b3_cpu / $mem_cpu" | bc -l)" "$mem_rss"
  chmod -R u+w "$work/store-$mib" 2>/dev/null; rm -rf "$tree" "$work/store-$mib"
}

echo "$(nproc) cores, load average $(cut -d' ' -f1-3 /proc/loadavg)"
run_one $((MIB / 4))
run_one "$MIB"
