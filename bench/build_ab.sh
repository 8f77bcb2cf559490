#!/bin/bash
# Before/after cost of a change on a trivial build: `ocibuild build` of the trivial request
# (busybox input, one small output; bench/build.sh's) by two binaries, A (e.g. main's) and B
# (this tree's), side by side in the same run: hyperfine in ROUNDS rounds (default 6) whose order
# alternates, each binary with its own data dir (store, input cache, bundle root, root pool),
# warmed up first. Prints wall time (mean, median) and CPU time (user+system) per binary and
# the ratio B/A.
# Usage: bench/build_ab.sh A_BINARY B_BINARY [RUNS_PER_ROUND] (default 15). Needs root.
set -eu
A=$1 B=$2 RUNS=${3:-15} ROUNDS=${ROUNDS:-6}
[ "$(id -u)" -eq 0 ] || { echo "bench/build_ab.sh: needs root (rootful runc)" >&2; exit 1; }
for tool in hyperfine runc jq; do
  command -v $tool >/dev/null || { echo "bench/build_ab.sh: $tool not found" >&2; exit 1; }
done
tmp=$(mktemp -d /tmp/obi-bench-ab.XXXXXX)
chmod 711 "$tmp" # a build's container root (a host id of its id slot) reaches its bundle
trap 'chmod -R u+w "$tmp" 2>/dev/null; rm -rf "$tmp"' EXIT
cat >"$tmp/hello.json" <<'JSON'
{
  "inputs": {"busybox": "/bin/busybox"},
  "command_args": ["/nix/store/busybox", "sh", "-c",
                   "mkdir -p /nix/store/hello && echo hello > /nix/store/hello/greeting"],
  "working_dir": "build",
  "scratch_paths": ["build", "nix/store"],
  "inputs_dir": "nix/store",
  "outputs": ["nix/store/hello"]
}
JSON
cmd() { echo "env OCIBUILD_DATA_DIR=$tmp/$1 $2 build $tmp/hello.json"; }
for round in $(seq 1 "$ROUNDS"); do
  if [ $((round % 2)) -eq 1 ]; then first=a; else first=b; fi
  order=("$(cmd a "$A")" "$(cmd b "$B")")
  [ $first = b ] && order=("$(cmd b "$B")" "$(cmd a "$A")")
  hyperfine -N --warmup 2 --runs "$RUNS" --export-json "$tmp/round$round.json" \
    "${order[0]}" "${order[1]}" >/dev/null 2>&1 || { echo "hyperfine failed" >&2; exit 1; }
done
python3 - "$tmp" "$ROUNDS" "$A" "$B" <<'PY'
import json, statistics, sys
tmp, rounds, a, b = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4]
times = {"a": [], "b": []}; cpu = {"a": [], "b": []}
for r in range(1, rounds + 1):
    for res in json.load(open(f"{tmp}/round{r}.json"))["results"]:
        side = "a" if f"{tmp}/a " in res["command"] else "b"
        times[side] += res["times"]
        cpu[side].append((res["user"] + res["system"]) * 1000)
for side, binary in (("a", a), ("b", b)):
    t = times[side]
    print(f"{side.upper()} {binary}: mean {statistics.mean(t)*1000:.1f} ms, median "
          f"{statistics.median(t)*1000:.1f} ms, CPU {statistics.mean(cpu[side]):.1f} ms ({len(t)} runs)")
ma, mb = statistics.median(times["a"]), statistics.median(times["b"])
print(f"B/A median ratio {mb/ma:.3f} ({(mb-ma)*1000:+.2f} ms)")
PY
