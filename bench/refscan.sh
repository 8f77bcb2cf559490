#!/bin/bash
# Reference scanning throughput with 1, 100 and 5000 needles of 32 nixbase32 characters over
# 64 MiB of random bytes, text with a store path every 4 KiB, and nothing but nixbase32
# characters (the worst case), side by side with `grep -c -a -F -f NEEDLES` (GNU grep's
# multi-string matcher) on the same data. grep does less work (it stops at the first match on a
# line); the ratio is ocibuild / grep. Both are timed in CPU time (user+sys), since the machine
# may be shared.
# usage: bench/refscan.sh [MIB]   (needs build/bench/bench_refscan)
set -eu
cd "$(dirname "$0")/.."
BENCH=${BENCH:-$PWD/build/bench/bench_refscan}
MIB=${1:-64}
work=$(mktemp -d "${TMPDIR:-/tmp}/obi-bench-refscan.XXXXXX")
trap 'rm -rf "$work"' EXIT
printf '%-8s %-10s %12s %12s %8s\n' needles data "ocibuild GiB/s" "grep GiB/s" ratio
for n in 1 100 5000; do
  for kind in random text nixbase32; do
    line=$("$BENCH" "$n" "$kind" "$MIB" --dump "$work")
    ours=$(sed 's/.*GiB\/s=\([0-9.]*\).*/\1/' <<<"$line")
    grep -c -a -F -f "$work/needles.txt" "$work/data.bin" >/dev/null || true # warm up
    { TIMEFORMAT='%3U %3S'; time grep -c -a -F -f "$work/needles.txt" "$work/data.bin" >/dev/null || true; } 2>"$work/t"
    g=$(awk -v mib="$MIB" '{ t = $1 + $2; if (t < 0.001) t = 0.001; print mib / 1024 / t }' "$work/t")
    printf '%-8s %-10s %12.2f %12.2f %8.2f\n' "$n" "$kind" "$ours" "$g" "$(echo "$ours / $g" | bc -l)"
  done
done
