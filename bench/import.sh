#!/bin/bash
# `ocibuild store import` of a generated tree of mixed file sizes (default ~1 GiB), side by side
# with `b3sum --num-threads 1` over the same files in the same run (the floor: reading and
# hashing, no storing). Also the peak RSS of import (/usr/bin/time -v) at 1/4 of the size and at
# full size, to show it stays flat (files are streamed). Both runs see a warm page cache (b3sum
# goes first), into a fresh on-disk store (which fsyncs every blob) and a memory:// store.
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

now() { date +%s.%N; }
run_one() { # $1 = MIB
  local mib=$1 tree="$work/tree-$1" n
  n=$(gen "$tree" "$mib")
  local bytes; bytes=$(du -sb --apparent-size "$tree" | cut -f1)
  local t0 t1 b3 imp mem rss
  t0=$(now); find "$tree" -type f -print0 | xargs -0 b3sum --num-threads 1 >/dev/null; t1=$(now)
  b3=$(echo "$t1 - $t0" | bc -l)
  t0=$(now)
  /usr/bin/time -v -o "$work/time.txt" "$OCIBUILD" store import --store "$work/store-$mib" "$tree" >/dev/null
  t1=$(now)
  imp=$(echo "$t1 - $t0" | bc -l)
  rss=$(awk -F': ' '/Maximum resident/ {print $2}' "$work/time.txt")
  t0=$(now); "$OCIBUILD" store import --store memory:// "$tree" >/dev/null; t1=$(now)
  mem=$(echo "$t1 - $t0" | bc -l)
  printf '%6s MiB, %5d files | b3sum -t1 %6.2fs %6.0f MiB/s | import (on-disk) %6.2fs %6.0f MiB/s ratio %.2f, peak RSS %6d KiB | import (memory://, hash only) %6.2fs ratio %.2f\n' \
    "$mib" "$n" "$b3" "$(echo "$bytes / 1048576 / $b3" | bc -l)" "$imp" "$(echo "$bytes / 1048576 / $imp" | bc -l)" \
    "$(echo "$b3 / $imp" | bc -l)" "$rss" "$mem" "$(echo "$b3 / $mem" | bc -l)"
  chmod -R u+w "$work/store-$mib" 2>/dev/null; rm -rf "$tree" "$work/store-$mib"
}

echo "ocibuild $("$OCIBUILD" --help >/dev/null 2>&1; echo -n) blake3 backend: see 'ocibuild hash'; $(nproc) cores"
run_one $((MIB / 4))
run_one "$MIB"
