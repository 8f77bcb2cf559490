#!/bin/bash
# `ocibuild store import` of a generated tree of mixed file sizes (default ~1 GiB), side by side
# with `b3sum --num-threads 1` over the same files in the same run (the floor: reading and
# hashing, no storing). Also the peak RSS of import (/usr/bin/time -v) at 1/4 of the size and at
# full size, to show it stays flat (files are streamed). Both runs see a warm page cache (b3sum
# goes first), into a fresh on-disk store (whose import syncs once at the end, not per blob) and
# a memory:// store.
# usage: bench/import.sh [MIB]   (needs build/ocibuild; data goes under $TMPDIR)
#        bench/import.sh many [N]     N files of 1 KiB (default 100000) into a fresh store each round
#        bench/import.sh again [MIB]  re-import of an already imported tree (default 1024 MiB)
# The last two run ROUNDS (default 3) rounds, alternating b3sum and import, and print each
# round's wall and CPU time, the median ratio and the bytes the import wrote (wchar).
# BASELINE=/path/to/other/ocibuild adds that binary's import to every round (before/after from
# one run). The import uses the CPUs (ingest's threads); OBI_INGEST_THREADS=0 keeps it on one.
set -eu
cd "$(dirname "$0")/.."
OCIBUILD=${OCIBUILD:-$PWD/build/ocibuild}
case "${1:-}" in many | again) MIB=1024 ;; *) MIB=${1:-1024} ;; esac
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

# gen_many DIR N: N files of 1 KiB of distinct contents, 1000 to a directory.
gen_many() {
  /usr/bin/python3 - "$1" "$2" <<'PY'
import os, sys
root, n = sys.argv[1], int(sys.argv[2])
block = os.urandom(1024 + n)
for i in range(n):
    d = os.path.join(root, "d%03d" % (i // 1000))
    if i % 1000 == 0:
        os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, "f%06d" % i), "wb") as f:
        f.write(block[i:i + 1024])
PY
}

# timed OUT CMD...: runs CMD under /usr/bin/time, prints "wall cpu wchar" (wchar: bytes the
# command wrote, from the waiting shell's /proc/PID/io, which adds in its reaped children).
timed() {
  local out=$1 t0 t1; shift
  t0=$(now)
  /usr/bin/time -v -o "$out" sh -c '"$@" >/dev/null; grep ^wchar /proc/$$/io' sh "$@" >"$out.io"
  t1=$(now)
  echo "$(echo "$t1 - $t0" | bc -l) $(cpu_of "$out") $(awk '{print $2}' "$out.io")"
}
median() { sort -g | awk '{v[NR] = $1} END {print v[int((NR + 1) / 2)]}'; }

# rounds TREE fresh|keep: ROUNDS rounds of b3sum and import (and the BASELINE import), each
# round in another order. fresh: every import into a store of its own, all removed at the end
# (on ext4 without a journal, creating inodes within about a minute of removing many makes the
# allocator skip the recently deleted ones: recently_deleted() in the inode bitmap scan, which
# measured 3x the import's CPU; so nothing is removed between the measured commands).
rounds() {
  local tree=$1 fresh=$2 i cmd names="b3sum import" wchar=0
  [ -n "${BASELINE:-}" ] && names="$names baseline"
  declare -A walls cpus
  find "$tree" -type f -print0 | xargs -0 cat >/dev/null # warm the page cache
  for i in $(seq "${ROUNDS:-3}"); do
    local order line="  round $i:" n=0
    # rotate the order: every command goes first, second (and third) in turn
    order=$(echo $names | tr ' ' '\n' | awk -v k="$i" '{a[NR] = $0} END {for (j = 0; j < NR; j++) print a[(j + k - 1) % NR + 1]}')
    for cmd in $order; do
      local store="$work/store" out w c
      [ "$fresh" = fresh ] && store="$work/store-$cmd-$i"
      case $cmd in
      b3sum) out=$(timed "$work/t.txt" sh -c 'find "$1" -type f -print0 | xargs -0 b3sum --num-threads 1' sh "$tree") ;;
      import) out=$(timed "$work/t.txt" "$OCIBUILD" store import --store "$store" "$tree") ;;
      baseline) out=$(timed "$work/t.txt" "$BASELINE" store import --store "$store" "$tree") ;;
      esac
      read -r w c wchar <<<"$out"
      walls[$cmd]="${walls[$cmd]:-} $w"; cpus[$cmd]="${cpus[$cmd]:-} $c"
      line="$line $(printf '%s wall %.3fs cpu %.2fs' "$cmd" "$w" "$c")"
      [ "$cmd" = b3sum ] || line="$line wrote $((wchar >> 20)) MiB"
      line="$line |"
    done
    echo "${line% |}"
  done
  local wb cb
  wb=$(echo ${walls[b3sum]} | tr ' ' '\n' | median); cb=$(echo ${cpus[b3sum]} | tr ' ' '\n' | median)
  for cmd in $names; do
    [ "$cmd" = b3sum ] && continue
    local wi ci
    wi=$(echo ${walls[$cmd]} | tr ' ' '\n' | median); ci=$(echo ${cpus[$cmd]} | tr ' ' '\n' | median)
    printf '  median: b3sum -t1 wall %.3fs cpu %.3fs | %s wall %.3fs cpu %.3fs | ratio %s/b3sum wall %.2f cpu %.2f\n' \
      "$wb" "$cb" "$cmd" "$wi" "$ci" "$cmd" "$(echo "$wi / $wb" | bc -l)" "$(echo "$ci / $cb" | bc -l)"
  done
}

echo "$(nproc) cores, load average $(cut -d' ' -f1-3 /proc/loadavg), OBI_INGEST_THREADS=${OBI_INGEST_THREADS:-default}"
case "${1:-}" in
many)
  n=${2:-100000}
  gen_many "$work/tree" "$n"
  echo "import of $n files of 1 KiB into a fresh on-disk store, ${ROUNDS:-3} rounds:"
  rounds "$work/tree" fresh
  echo "load average at the end $(cut -d' ' -f1-3 /proc/loadavg)"
  ;;
again)
  mib=${2:-1024}
  n=$(gen "$work/tree" "$mib")
  "$OCIBUILD" store import --store "$work/store" "$work/tree" >/dev/null
  echo "re-import of $mib MiB ($n files) into the store that has it, ${ROUNDS:-3} rounds:"
  rounds "$work/tree" keep
  echo "load average at the end $(cut -d' ' -f1-3 /proc/loadavg)"
  ;;
*)
  run_one $((MIB / 4))
  run_one "$MIB"
  ;;
esac
