#!/bin/bash
# Wall and CPU time of building N trivial derivations (default 20) with `ocibuild nix-build` vs
# `nix-build --max-jobs J` (sandbox on, no substituters), in the same run, alternating which
# goes first, ROUNDS times (default 3). SHAPE chain (default): each derivation reads the
# previous output and writes a line that references it; SHAPE fanout: N independent leaves
# and one join that reads them all (N+1 derivations). Every build of either side gets fresh
# derivations (a nonce), so both build everything from scratch. ocibuild runs as nix-build is
# used: -j J, results registered in /nix/store (nix-store --import), no result link. Prints
# each round and the medians, the ratio ocibuild/nix of the medians (lower is better for
# ocibuild) and the median of the per-round ratios (steadier under load). Needs root (Nix
# set-up and rootful runc).
#   bench/nix_chain.sh [N] [chain|fanout]     ROUNDS=3 JOBS=2 OCIBUILD=build/ocibuild
#   OCIBUILD_OPTS="--runtime crun": more options for ocibuild nix-build (split on spaces)
#   BASELINE=/path/to/an/older/ocibuild: a third side, built in the same rounds (its own fresh
#   derivations and data dir), and the ratio ocibuild/baseline: before/after on a noisy machine
set -eu
cd "$(dirname "$0")/.."
N=${1:-20}
SHAPE=${2:-chain}
ROUNDS=${ROUNDS:-3}
JOBS=${JOBS:-2}
OCIBUILD=${OCIBUILD:-$PWD/build/ocibuild}
case $SHAPE in chain | fanout) ;; *) echo "usage: $0 [N] [chain|fanout]" >&2; exit 2 ;; esac
tests/e2e/nix_setup.sh
tmp=$(mktemp -d /tmp/obi-bench-nix.XXXXXX)
chmod 711 "$tmp" # a build's container root (a host id of its id slot) reaches its bundle
trap 'chmod -R u+w "$tmp" 2>/dev/null; rm -rf "$tmp"' EXIT
export OCIBUILD_DATA_DIR=$tmp/data
bash_path=$(nix-store --add /bin/bash-static)

write_nix() { # NONCE FILE
  local body
  if [ "$SHAPE" = chain ]; then
    body='go = prev: i: if i > N then prev else go (step prev i) (i + 1);
  result = go null 1;'
  else
    body='leaves = builtins.genList (i: step null (i + 1)) N;
  result = builtins.derivation {
    name = "obi-bench-join"; system = builtins.currentSystem; builder = bash; inherit nonce;
    args = [ "-c" "for f in ${builtins.concatStringsSep " " leaves}; do read -r x < $f; echo $x; done > $out" ];
  };'
  fi
  cat >"$2" <<NIX
let
  N = $N;
  nonce = "$1";
  bash = builtins.storePath "$bash_path";
  step = prev: i: builtins.derivation {
    name = "obi-bench-$SHAPE-\${toString i}"; system = builtins.currentSystem; builder = bash;
    inherit nonce;
    args = [ "-c" (if prev == null then "echo \${toString i} > \$out"
                   else "read -r x < \${prev}; echo \"\${toString i} \${prev}\" > \$out") ];
  };
  $body
in result
NIX
}

# Runs "$@" and prints "WALL CPU" in seconds (CPU: user + system of this subshell's waited-for
# children, which include the builds: runc's containers and nix-build's builders).
measure() {
  local t0 t1 c0 c1 me=$BASHPID
  c0=$(awk '{print $14 + $15 + $16 + $17}' /proc/$me/stat)
  t0=$(date +%s.%N)
  "$@" >/dev/null 2>"$tmp/last.log" || { tail "$tmp/last.log" >&2; exit 1; }
  t1=$(date +%s.%N)
  c1=$(awk '{print $14 + $15 + $16 + $17}' /proc/$me/stat)
  echo "$(echo "$t1 - $t0" | bc -l) $(echo "($c1 - $c0) / $(getconf CLK_TCK)" | bc -l)"
}

read -r -a ocibuild_opts <<<"${OCIBUILD_OPTS:-}"
BASELINE=${BASELINE:-}
ours() { "$OCIBUILD" nix-build -j "$JOBS" --no-out-link "${ocibuild_opts[@]}" "$1"; }
base() {
  OCIBUILD_DATA_DIR=$tmp/base-data "$BASELINE" nix-build -j "$JOBS" --no-out-link \
    "${ocibuild_opts[@]}" "$1"
}
theirs() {
  nix-build --option sandbox true --option sandbox-fallback false --option substituters "" \
    --max-jobs "$JOBS" --no-out-link "$1"
}

median() { sort -n | awk '{v[NR] = $1} END {print v[int((NR + 1) / 2)]}'; }

n_drvs=$N
[ "$SHAPE" = fanout ] && n_drvs=$((N + 1))
printf '%s of %d derivations, -j %d, %d rounds, ocibuild options "%s" (load average %s)\n' \
  "$SHAPE" "$n_drvs" "$JOBS" "$ROUNDS" "${OCIBUILD_OPTS:-}" "$(cut -d' ' -f1-3 /proc/loadavg)"
: >"$tmp/ours" && : >"$tmp/theirs" && : >"$tmp/base" && : >"$tmp/ratios" && : >"$tmp/base_ratios"
for round in $(seq 1 "$ROUNDS"); do
  write_nix "ours-$round-$(date +%s%N)" "$tmp/ours.nix"
  write_nix "nix-$round-$(date +%s%N)" "$tmp/nix.nix"
  ours_drv=$(nix-instantiate "$tmp/ours.nix" 2>/dev/null)
  nix_drv=$(nix-instantiate "$tmp/nix.nix" 2>/dev/null)
  if [ -n "$BASELINE" ]; then
    write_nix "base-$round-$(date +%s%N)" "$tmp/base.nix"
    base_drv=$(nix-instantiate "$tmp/base.nix" 2>/dev/null)
  fi
  # who goes first rotates: ours, theirs[, base] on odd rounds, the reverse on even ones
  sides=(ours theirs) && [ -n "$BASELINE" ] && sides+=(base)
  [ $((round % 2)) -eq 0 ] && mapfile -t sides < <(printf '%s\n' "${sides[@]}" | tac)
  for side in "${sides[@]}"; do
    case $side in
    ours) o=$(measure ours "$ours_drv") ;;
    theirs) t=$(measure theirs "$nix_drv") ;;
    base) b=$(measure base "$base_drv") ;;
    esac
  done
  echo "$o" >>"$tmp/ours" && echo "$t" >>"$tmp/theirs"
  printf 'round %d: ocibuild %5.2f s wall %5.2f s CPU | nix-build %5.2f s wall %5.2f s CPU' \
    "$round" $o $t
  read -r ow_ oc_ <<<"$o" && read -r tw_ tc_ <<<"$t"
  printf '%s %s\n' "$(echo "$ow_ / $tw_" | bc -l)" "$(echo "$oc_ / $tc_" | bc -l)" >>"$tmp/ratios"
  if [ -n "$BASELINE" ]; then
    echo "$b" >>"$tmp/base"
    printf ' | baseline %5.2f s wall %5.2f s CPU' $b
    read -r bw_ bc__ <<<"$b"
    printf '%s %s\n' "$(echo "$ow_ / $bw_" | bc -l)" "$(echo "$oc_ / $bc__" | bc -l)" \
      >>"$tmp/base_ratios"
  fi
  printf '\n'
done
ow=$(cut -d' ' -f1 "$tmp/ours" | median) && oc=$(cut -d' ' -f2 "$tmp/ours" | median)
tw=$(cut -d' ' -f1 "$tmp/theirs" | median) && tc=$(cut -d' ' -f2 "$tmp/theirs" | median)
printf 'median: ocibuild %5.2f s wall (%.0f ms/drv), %5.2f s CPU | nix-build %5.2f s wall (%.0f ms/drv), %5.2f s CPU\n' \
  "$ow" "$(echo "$ow * 1000 / $n_drvs" | bc -l)" "$oc" "$tw" "$(echo "$tw * 1000 / $n_drvs" | bc -l)" "$tc"
printf 'ratio ocibuild/nix: wall %.2f, CPU %.2f (median of the per-round ratios: wall %.2f, CPU %.2f)\n' \
  "$(echo "$ow / $tw" | bc -l)" "$(echo "$oc / $tc" | bc -l)" \
  "$(cut -d' ' -f1 "$tmp/ratios" | median)" "$(cut -d' ' -f2 "$tmp/ratios" | median)"
if [ -n "$BASELINE" ]; then
  bw=$(cut -d' ' -f1 "$tmp/base" | median) && bc_=$(cut -d' ' -f2 "$tmp/base" | median)
  printf 'baseline median %5.2f s wall, %5.2f s CPU; ratio baseline/nix: wall %.2f, CPU %.2f; ratio ocibuild/baseline: wall %.2f, CPU %.2f\n' \
    "$bw" "$bc_" "$(echo "$bw / $tw" | bc -l)" "$(echo "$bc_ / $tc" | bc -l)" \
    "$(echo "$ow / $bw" | bc -l)" "$(echo "$oc / $bc_" | bc -l)"
  printf 'per-round ratio ocibuild/baseline, median: wall %.2f, CPU %.2f\n' \
    "$(cut -d' ' -f1 "$tmp/base_ratios" | median)" "$(cut -d' ' -f2 "$tmp/base_ratios" | median)"
fi
printf 'load average after: %s\n' "$(cut -d' ' -f1-3 /proc/loadavg)"
