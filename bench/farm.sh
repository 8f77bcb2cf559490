#!/bin/bash
# A build farm on Nix's scheduler (docs/farm.md): wall time of a fan-out (a root, LEAVES leaves
# that each sleep SLEEP seconds then reference the root, and a join) built by stock nix-build
# through ocibuild nodes on loopback sshd (tests/e2e/farm_lib.sh), in the same run:
#   nix -jJ        local nix-build, J jobs (the reference)
#   1 node         --max-jobs 0, one node taking J jobs
#   2 nodes        --max-jobs 0, two nodes taking J jobs each, each with its own store
#   2 nodes shared the same, both nodes on one castore daemon (castore and path infos)
# and the NAR bytes the client shipped to the nodes in each farm case. Every case gets a fresh
# graph (a nonce) and fresh nodes, so everything is built and shipped from scratch. Nix polls
# for a free builder every build-poll-interval seconds (default 5) when all are busy; it is set
# to 1 here for every case, so that the polling does not swamp the builds. Both nodes run on this machine: the
# sleeps stand for work that does not need this machine's 2 cores (a real farm's nodes bring
# their own), so the figures show scheduling and protocol overhead, not added CPU.
# Usage: bench/farm.sh [LEAVES [SLEEP [J]]] (default 16 1 2). Needs root.
set -u
cd "$(dirname "$0")/.."
LEAVES=${1:-16}
SLEEP=${2:-1}
JOBS=${3:-2}
OCIBUILD=${OCIBUILD:-$PWD/build/ocibuild}
OCIBUILD=$(readlink -f "$OCIBUILD")
tests/e2e/nix_setup.sh || exit 1
tmp=$(mktemp -d /tmp/obi-bench-farm.XXXXXX)
chmod 711 "$tmp" # a build's container root (a host id of its id slot) reaches its bundle
CLEANUPS=()
t_cleanup() { CLEANUPS+=("$*"); }
cleanup() {
  local i
  for ((i = ${#CLEANUPS[@]} - 1; i >= 0; i--)); do eval "${CLEANUPS[$i]}" >/dev/null 2>&1; done
  chmod -R u+w "$tmp" 2>/dev/null
  rm -rf "$tmp"
}
trap cleanup EXIT
F=$tmp/farm
source tests/e2e/farm_lib.sh
farm_init
NIX_OPTS=(--option sandbox true --option sandbox-fallback false --option substituters ""
  --option build-poll-interval 1)

bash_path=$(nix-store --add /bin/bash-static)
mkdir -p "$tmp/busybox/bin" && cp /bin/busybox "$tmp/busybox/bin/busybox"
busybox_path=$(nix-store --add "$tmp/busybox")
cat >"$tmp/fanout.nix" <<NIX
{ nonce }:
let
  bash = builtins.storePath "$bash_path";
  busybox = "\${builtins.storePath "$busybox_path"}/bin/busybox";
  mk = name: script: builtins.derivation {
    inherit name busybox nonce;
    system = builtins.currentSystem; builder = bash;
    args = [ "-e" "-c" script ];
  };
  root = mk "obi-bench-farm-root" "echo root > \$out";
  leaf = i: mk "obi-bench-farm-leaf-\${toString i}"
    "\$busybox sleep $SLEEP; read -r x < \${root}; echo \"\${toString i} \$x \${root}\" > \$out";
  leaves = builtins.genList (i: leaf (i + 1)) $LEAVES;
in mk "obi-bench-farm-join" "\$busybox cat \${builtins.concatStringsSep " " (map toString leaves)} > \$out"
NIX

now() { date +%s.%N; }
run() { # NAME BUILDERS MAX-JOBS: builds a fresh graph; prints "NAME wall shipped-paths bytes"
  local name=$1 builders=$2 jobs=$3 log=$tmp/$1.log t0 t1
  t0=$(now)
  nix-build "${NIX_OPTS[@]}" --no-out-link --max-jobs "$jobs" --option builders "$builders" \
    --argstr nonce "$name-$(date +%s%N)" "$tmp/fanout.nix" >/dev/null 2>"$log" ||
    { echo "$name: nix-build failed" >&2; tail -20 "$log" >&2; exit 1; }
  t1=$(now)
  printf '%s %.2f %s %s\n' "$name" "$(echo "$t1 - $t0" | bc -l)" "$(shipped "$log")" "$(shipped_bytes "$log")"
}

start_node a1 || { echo "node a1 does not start" >&2; exit 1; }
start_node b1 && start_node b2 || { echo "nodes b1, b2 do not start" >&2; exit 1; }
OCIBUILD_DATA_DIR=$F/shared "$OCIBUILD" daemon --listen "unix:$F/shared.sock" 2>"$F/shared.log" &
t_cleanup "kill $!; wait $!"
for _ in $(seq 1 100); do [ -S "$F/shared.sock" ] && break; sleep 0.1; done
shared=(--store "grpc+unix://$F/shared.sock" --path-info "grpc+unix://$F/shared.sock")
start_node c1 "${shared[@]}" && start_node c2 "${shared[@]}" ||
  { echo "the shared nodes c1, c2 do not start" >&2; exit 1; }

echo "fan-out of $LEAVES leaves (sleep $SLEEP s each), $JOBS job(s) per builder; load: $(cut -d' ' -f1-3 /proc/loadavg)"
{
  run "nix-j$JOBS" "" "$JOBS"
  run "1-node" "$(builder_line --jobs "$JOBS" a1)" 0
  run "2-nodes" "$(builder_line --jobs "$JOBS" b1 b2)" 0
  run "2-nodes-shared" "$(builder_line --jobs "$JOBS" c1 c2)" 0
} | tee "$tmp/results"
awk -v j="$JOBS" '
  { wall[$1] = $2; paths[$1] = $3; bytes[$1] = $4 }
  END {
    printf "1 node / 2 nodes wall:            %.2f\n", wall["1-node"] / wall["2-nodes"]
    printf "1 node / nix -j%s wall:            %.2f\n", j, wall["1-node"] / wall["nix-j" j]
    printf "NAR bytes shipped, 2 nodes: own stores %d (%d paths), shared castore %d (%d paths): %.2f\n",
      bytes["2-nodes"], paths["2-nodes"], bytes["2-nodes-shared"], paths["2-nodes-shared"],
      bytes["2-nodes-shared"] / bytes["2-nodes"]
  }' "$tmp/results"
