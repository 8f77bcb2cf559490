#!/bin/bash
# What starting and ending an ocibuild process costs (issue 18; every CLI build pays it, a Nix
# chain once per derivation), side by side in the same run, the commands alternating:
#  1. `ocibuild version` vs /bin/true (the floor: a dynamically linked glibc program that does
#     nothing) and, with BASELINE=/path/to/an/older/ocibuild, vs `BASELINE version`:
#     hyperfine rounds whose order alternates (ROUNDS, default 10), wall mean/median and CPU
#     (user+system), ratios, per-round ratios;
#  2. page faults and the dynamic loader's relocation count of each (perf stat, LD_DEBUG);
#  3. as root with BASELINE, the trivial build of bench/build.sh: CPU of ocibuild's own main
#     thread (perf stat --no-inherit, so not the runtime's), alternating, ROUNDS rounds of
#     RUNS/ROUNDS builds each, medians of the round means and the ratio. The whole build,
#     children included, is bench/build.sh's BASELINE part.
# Usage: bench/startup.sh [RUNS] (per command, default 400). OCIBUILD=build/ocibuild.
set -eu
cd "$(dirname "$0")/.."
RUNS=${1:-400}
ROUNDS=${ROUNDS:-10}
OCIBUILD=${OCIBUILD:-$PWD/build/ocibuild}
for tool in hyperfine jq; do
  command -v $tool >/dev/null || { echo "bench/startup.sh: $tool not found" >&2; exit 1; }
done
tmp=$(mktemp -d /tmp/obi-bench-startup.XXXXXX)
chmod 711 "$tmp" # a build's container root (a host id of its id slot) reaches its bundle
trap 'chmod -R u+w "$tmp" 2>/dev/null; rm -rf "$tmp"' EXIT
echo "load average: $(cut -d' ' -f1-3 /proc/loadavg)"

# compare NAME_A CMD_A NAME_B CMD_B: alternating hyperfine rounds, ratios (bench/compare.sh).
# shellcheck source=bench/compare.sh
WARMUP=5
. bench/compare.sh

echo "== ocibuild version vs /bin/true ($RUNS runs each) =="
compare "ocibuild version" "$OCIBUILD version" "true" "/bin/true"
if [ -n "${BASELINE:-}" ]; then
  echo "== ocibuild version: $OCIBUILD vs BASELINE $BASELINE ($RUNS runs each) =="
  compare "after" "$OCIBUILD version" "before" "$BASELINE version"
fi

echo "== page faults and relocations before main =="
for side in "$OCIBUILD" ${BASELINE:-} /bin/true; do
  args=version; [ "$side" = /bin/true ] && args=
  faults=-
  if command -v perf >/dev/null; then
    faults=$(perf stat -x, -r 50 -e page-faults "$side" $args 2>&1 >/dev/null |
      awk -F, '/page-faults/ {print $1}')
  fi
  relocs=$(LD_DEBUG=statistics "$side" $args 2>&1 >/dev/null |
    awk '/final/ {next} /number of relocations:/ {n += $NF} /number of relative relocations:/ {r += $NF}
         END {print n + 0 " symbol, " r + 0 " relative"}')
  libs=$(LD_DEBUG=files "$side" $args 2>&1 >/dev/null | grep -c 'needed by' || true)
  echo "$side: $faults page faults, $relocs relocations, $libs libraries loaded"
done

if [ -n "${BASELINE:-}" ] && [ "$(id -u)" -eq 0 ] && command -v perf >/dev/null; then
  echo "== trivial build: CPU of ocibuild's own main thread (perf stat --no-inherit), after vs before =="
  cp bench/trivial.json "$tmp/hello.json" # bench/build.sh's trivial request
  per=$(((RUNS / 10 + ROUNDS - 1) / ROUNDS))
  own() { # DATA_DIR BINARY: mean task-clock (ms) of per builds
    OCIBUILD_DATA_DIR=$1 perf stat -x, --no-inherit -r "$per" -e task-clock \
      "$2" build "$tmp/hello.json" 2>&1 >/dev/null | awk -F, '/task-clock/ {print $1}'
  }
  OCIBUILD_DATA_DIR=$tmp/after "$OCIBUILD" build "$tmp/hello.json" >/dev/null
  OCIBUILD_DATA_DIR=$tmp/before "$BASELINE" build "$tmp/hello.json" >/dev/null
  : >"$tmp/own"
  for i in $(seq 1 "$ROUNDS"); do
    if [ $((i % 2)) -eq 1 ]; then
      a=$(own "$tmp/after" "$OCIBUILD"); b=$(own "$tmp/before" "$BASELINE")
    else
      b=$(own "$tmp/before" "$BASELINE"); a=$(own "$tmp/after" "$OCIBUILD")
    fi
    echo "$a $b" >>"$tmp/own"
  done
  sort -n -k1 "$tmp/own" | awk -v n="$ROUNDS" 'NR == int((n + 1) / 2) {print "after: median of round means " $1 " ms"}'
  sort -n -k2 "$tmp/own" | awk -v n="$ROUNDS" 'NR == int((n + 1) / 2) {print "before: median of round means " $2 " ms"}'
  awk '{print $1 / $2}' "$tmp/own" | sort -n |
    awk '{q[NR] = $1} END {printf "per-round ratio after/before: median %.2f, range %.2f-%.2f over %d rounds\n", q[int((NR + 1) / 2)], q[1], q[NR], NR}'
fi
echo "load average: $(cut -d' ' -f1-3 /proc/loadavg)"
