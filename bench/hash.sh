#!/bin/bash
# Hashing benchmark: `ocibuild hash` against b3sum (the reference implementation's CLI) on the
# same 256 MiB random file in the same hyperfine run: b3sum single-threaded (the fair
# comparison, ocibuild hash is single-threaded) and with its default threads, plus ocibuild on
# each BLAKE3 backend the CPU has. Prints throughput in GiB/s and the ratio
# ocibuild / b3sum --num-threads 1 (>1 means ocibuild is faster).
#
# The machine may be shared: hyperfine runs all commands ROUNDS times over (RUNS runs each per
# round), so a burst of load hits every command alike, and the CPU time (user+sys) is reported
# next to wall-clock time since it is less sensitive to other processes.
#
# usage: bench/hash.sh [SIZE_MIB]     (env: ROUNDS=10, RUNS=2, OCIBUILD=build/ocibuild)
set -eu
cd "$(dirname "$0")/.."
size_mib=${1:-256}
runs=${RUNS:-2}
rounds=${ROUNDS:-10}
ocibuild=${OCIBUILD:-build/ocibuild}
for tool in hyperfine b3sum; do
  command -v "$tool" >/dev/null || { echo "bench/hash.sh: $tool is not installed" >&2; exit 1; }
done
[ -x "$ocibuild" ] || scripts/build.sh

tmp=$(mktemp -d "${TMPDIR:-/tmp}/obi-bench-hash.XXXXXX")
trap 'rm -rf "$tmp"' EXIT
file=$tmp/random-${size_mib}M
head -c $((size_mib * 1024 * 1024)) /dev/urandom >"$file"
cat "$file" >/dev/null # in the page cache for everyone

cpu_flags=$(grep -m1 '^flags' /proc/cpuinfo || true)
has() { local f; for f in "$@"; do [[ " $cpu_flags " == *" $f "* ]] || return 1; done; }
backends=(portable)
has sse4_1 && backends+=(sse41)
has avx2 && backends+=(avx2)
has avx512f avx512vl && backends+=(avx512)

commands=("$ocibuild hash $file" "b3sum --num-threads 1 $file" "b3sum $file")
for b in "${backends[@]}"; do commands+=("env OBI_BLAKE3_BACKEND=$b $ocibuild hash $file"); done

echo "CPU: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ //'), $(nproc) cores;" \
  "load average $(cut -d' ' -f1-3 /proc/loadavg); default backend: ${backends[-1]};" \
  "$(b3sum --version)"
for ((round = 1; round <= rounds; round++)); do
  hyperfine -N --warmup 1 --runs "$runs" --export-json "$tmp/round-$round.json" "${commands[@]}" >&2
done

/usr/bin/python3 - "$file" "$tmp"/round-*.json <<'PY'
import json, os, statistics, sys
path, rounds = sys.argv[1], [json.load(open(f))["results"] for f in sys.argv[2:]]
gib = os.path.getsize(path) / 2**30
rows = []
for i, first in enumerate(rounds[0]):
    times = [t for r in rounds for t in r[i]["times"]]
    cpu = statistics.mean(r[i]["user"] + r[i]["system"] for r in rounds)
    rows.append((first["command"].replace(path, "FILE"), statistics.median(times), min(times), cpu))
print(f"{len(rounds)} rounds x {len(rounds[0][0]['times'])} runs; FILE: {gib:.2f} GiB of random bytes")
print(f"{'command':<58} {'median s':>8} {'min s':>6} {'GiB/s':>6} {'cpu s':>6}")
for label, median, best, cpu in rows:
    print(f"{label:<58} {median:8.4f} {best:6.4f} {gib / median:6.2f} {cpu:6.4f}")
ours, ref = rows[0], rows[1]  # ocibuild hash, b3sum --num-threads 1
print(f"ratio ocibuild / b3sum --num-threads 1 (throughput): {ref[1] / ours[1]:.2f}x median, "
      f"{ref[2] / ours[2]:.2f}x best run, {ref[3] / ours[3]:.2f}x cpu time")
PY
