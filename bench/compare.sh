# Sourced by the bench scripts that put two commands side by side (build.sh, startup.sh).
#
# compare NAME_A CMD_A NAME_B CMD_B: ROUNDS hyperfine rounds (default 10; WARMUP warmups each,
# default 2) of RUNS/ROUNDS runs per command, the two commands' order alternating between
# rounds, so the shared machine's shifting load hits both alike. The rounds' JSON goes to $tmp.
# Prints mean and median wall time and mean CPU time (user+system, children included) of each,
# the ratios A/B, the difference A-B, and the median and range of the per-round ratios.
compare() {
  local rounds=${ROUNDS:-10} warmup=${WARMUP:-2} i
  local per=$(((RUNS + rounds - 1) / rounds))
  for i in $(seq 1 "$rounds"); do
    if [ $((i % 2)) -eq 1 ]; then
      hyperfine -N --warmup "$warmup" --runs "$per" --export-json "$tmp/round$i.json" \
        -n "$1" "$2" -n "$3" "$4" >/dev/null 2>&1
    else
      hyperfine -N --warmup "$warmup" --runs "$per" --export-json "$tmp/round$i.json" \
        -n "$3" "$4" -n "$1" "$2" >/dev/null 2>&1
    fi
  done
  jq -s --arg a "$1" --arg b "$3" -r '
    def ms: . * 100 | round / 100;
    def stats($n): [.[] | .results[] | select(.command == $n)] as $r
      | ([$r[] | .times[]] | sort) as $t
      | {mean: (($t | add) / ($t | length) * 1000),
         median: ($t[($t | length) / 2 | floor] * 1000),
         cpu: (([$r[] | .user + .system] | add) / ($r | length) * 1000)};
    stats($a) as $x | stats($b) as $y
    | "\($a): mean \($x.mean | ms) ms, median \($x.median | ms) ms, CPU \($x.cpu | ms) ms",
      "\($b): mean \($y.mean | ms) ms, median \($y.median | ms) ms, CPU \($y.cpu | ms) ms",
      "ratio \($a)/\($b): mean \($x.mean / $y.mean | ms), median \($x.median / $y.median | ms), CPU \($x.cpu / $y.cpu | ms)",
      "difference \($a) - \($b): mean \($x.mean - $y.mean | ms) ms, median \($x.median - $y.median | ms) ms, CPU \($x.cpu - $y.cpu | ms) ms",
      # Within one round both commands ran back to back: the ratio of their means there is
      # the least exposed to the drifting load of the host. Median and range over the rounds:
      ([.[] | ([.results[] | select(.command == $a) | .mean] | add)
              / ([.results[] | select(.command == $b) | .mean] | add)] | sort) as $q
      | "per-round ratio of means: median \($q[($q | length) / 2 | floor] | ms), range \($q[0] | ms)-\($q[-1] | ms) over \($q | length) rounds"
  ' "$tmp"/round*.json
  rm -f "$tmp"/round*.json
}
