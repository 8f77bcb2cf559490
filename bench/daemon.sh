#!/bin/bash
# Builds through the daemon against the same builds run locally (issue 18's daemon goals), in
# one run, alternating:
#   1. a trivial busybox build (bench/grpc.sh's request): `ocibuild build` on the local OCI
#      builder vs `ocibuild build --store grpc+unix://D --build-service grpc+unix://D` against a
#      daemon serving that builder and an on-disk store. CPU of the local build: user+sys of the
#      command and its waited-for children (runc); through the daemon: the client's plus what
#      the daemon process and its reaped children (runc) used meanwhile (/proc/PID/stat).
#   2. throughput at N concurrent clients (default 8): N loops of BUILDS builds each, local vs
#      through the daemon, builds/s = N * BUILDS / wall.
# Usage: bench/daemon.sh [ROUNDS [N [BUILDS]]] (default 5 8 4). Needs root, /bin/busybox and the
# runtime: the builder's default (crun when it runs here, else runc), or RUNTIME=runc|crun.
set -eu
cd "$(dirname "$0")/.."
ROUNDS=${1:-5}
N=${2:-8}
BUILDS=${3:-4}
OCIBUILD=${OCIBUILD:-$PWD/build/ocibuild}
RUNTIME=${RUNTIME:-}
if [ "$(id -u)" -ne 0 ] || ! command -v "${RUNTIME:-runc}" >/dev/null || [ ! -x /bin/busybox ]; then
  echo "SKIPPED: needs root, ${RUNTIME:-runc} and /bin/busybox" >&2
  exit 0
fi
tmp=$(mktemp -d /tmp/obi-bench-daemon.XXXXXX)
chmod 711 "$tmp" # a build's container root (a host id of its id slot) reaches its bundle
daemon=
cleanup() { [ -z "$daemon" ] || { kill "$daemon" 2>/dev/null; wait "$daemon" 2>/dev/null; }; rm -rf "$tmp"; }
trap cleanup EXIT

cat >"$tmp/req.json" <<'JSON'
{"inputs": {"busybox": "/bin/busybox"},
 "command_args": ["/nix/store/busybox", "sh", "-c", "mkdir -p /nix/store/out && echo hi > /nix/store/out/f"],
 "working_dir": "build", "scratch_paths": ["build", "nix/store"], "inputs_dir": "nix/store",
 "outputs": ["nix/store/out"]}
JSON
# max_builds=N on both sides: the daemon's builder may run as many builds at once as the N
# local processes do (its default is one per CPU; each local process runs one build anyway).
store="$tmp/store" builder="oci://$tmp/bundles?max_builds=$N${RUNTIME:+&runtime=$RUNTIME}"
"$OCIBUILD" daemon --listen "unix:$tmp/d.sock" --store "$store" --build-service "$builder" \
  --log-level warn 2>"$tmp/daemon.log" &
daemon=$!
for _ in $(seq 200); do [ -S "$tmp/d.sock" ] && break; sleep 0.05; done
url="grpc+unix://$tmp/d.sock"
local_args=(--store "$store" --build-service "$builder")
daemon_args=(--store "$url" --build-service "$url")
# The same through the daemon with the CLI's client on libgrpc (ocibuild-rpc.so) instead of the
# unix-socket client (ocibuild-rpc-h2.so): what issue 18 item 4 changed, in the same run.
grpc_args=("${daemon_args[@]}")
grpc_module=$(dirname "$OCIBUILD")/ocibuild-rpc.so
local_build() { "$OCIBUILD" build "${local_args[@]}" "$tmp/req.json" >/dev/null; }
daemon_build() { "$OCIBUILD" build "${daemon_args[@]}" "$tmp/req.json" >/dev/null; }
local_build
daemon_build

now() { date +%s.%N; }
ticks=$(getconf CLK_TCK)
# CPU seconds the daemon and its reaped children used so far (utime stime cutime cstime).
daemon_cpu() { awk -v t="$ticks" '{print ($14 + $15 + $16 + $17) / t}' "/proc/$daemon/stat"; }
# "wall cpu client" of a batch of BATCH builds one after another; $1 = local|daemon|grpc. CPU: user+sys of
# the clients and their waited-for children (runc, for local builds), plus for the daemon what
# it and its reaped children used meanwhile. Batches, because both clocks tick in 10 ms.
BATCH=${BATCH:-10}
one() {
  local t0 t1 d0 d1 cpu
  local -n args="${1}_args"
  if [ "$1" = grpc ]; then export OCIBUILD_RPC_H2_MODULE=$grpc_module; else unset OCIBUILD_RPC_H2_MODULE; fi
  d0=$(daemon_cpu); t0=$(now)
  /usr/bin/time -f '%U %S' -o "$tmp/time" bash -c 'for _ in $(seq "$1"); do "$2" build "${@:4}" "$3" >/dev/null || exit 1; done' \
    sh "$BATCH" "$OCIBUILD" "$tmp/req.json" "${args[@]}"
  t1=$(now); d1=$(daemon_cpu)
  cpu=$(awk '{print $1 + $2}' "$tmp/time")
  local client=$cpu
  [ "$1" = local ] || cpu=$(echo "$cpu + $d1 - $d0" | bc -l)
  unset OCIBUILD_RPC_H2_MODULE
  echo "$(echo "($t1 - $t0) / $BATCH" | bc -l) $(echo "$cpu / $BATCH" | bc -l) $(echo "$client / $BATCH" | bc -l)"
}
median() { sort -g | awk '{v[NR] = $1} END {print v[int((NR + 1) / 2)]}'; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN {printf "%.2f", a / b}'; }

echo "$(nproc) cores, load average $(cut -d' ' -f1-3 /proc/loadavg), runtime ${RUNTIME:-the default}"
echo "1. trivial build, $ROUNDS rounds alternating, per build in batches of $BATCH (wall s / CPU s):"
: >"$tmp/local" ; : >"$tmp/daemon" ; : >"$tmp/grpc"
for i in $(seq "$ROUNDS"); do
  case $((i % 3)) in
    1) order="local daemon grpc" ;; 2) order="daemon grpc local" ;; *) order="grpc local daemon" ;;
  esac
  for side in $order; do one "$side" >>"$tmp/$side"; done
  printf '  round %d: local %.3f %.4f | daemon %.3f %.4f (of which the client %.4f) | with the libgrpc client %.3f %.4f (client %.4f)\n' "$i" \
    $(tail -1 "$tmp/local" | cut -d' ' -f1-2) $(tail -1 "$tmp/daemon") $(tail -1 "$tmp/grpc")
done
lw=$(cut -d' ' -f1 "$tmp/local" | median); lc=$(cut -d' ' -f2 "$tmp/local" | median)
dw=$(cut -d' ' -f1 "$tmp/daemon" | median); dc=$(cut -d' ' -f2 "$tmp/daemon" | median)
dcl=$(cut -d' ' -f3 "$tmp/daemon" | median)
gw=$(cut -d' ' -f1 "$tmp/grpc" | median); gc=$(cut -d' ' -f2 "$tmp/grpc" | median)
gcl=$(cut -d' ' -f3 "$tmp/grpc" | median)
printf '  median: local %.3f s / %.4f s CPU | daemon %.3f s / %.4f s CPU (client %.4f s) | ratio wall %s, CPU %s (goal <= 1.15)\n' \
  "$lw" "$lc" "$dw" "$dc" "$dcl" "$(ratio "$dw" "$lw")" "$(ratio "$dc" "$lc")"
printf '  median with the libgrpc client: %.3f s / %.4f s CPU (client %.4f s) | ratio wall %s, CPU %s\n' \
  "$gw" "$gc" "$gcl" "$(ratio "$gw" "$lw")" "$(ratio "$gc" "$lc")"

# N loops of BUILDS builds at once; prints builds/s.
concurrent() {
  local side=$1 t0 t1 pids=() p
  t0=$(now)
  for _ in $(seq "$N"); do
    (for _ in $(seq "$BUILDS"); do "${side}_build" || echo "build failed ($side)" >&2; done) &
    pids+=($!)
  done
  for p in "${pids[@]}"; do wait "$p"; done
  t1=$(now)
  echo "$N * $BUILDS / ($t1 - $t0)" | bc -l
}
echo "2. builds/s with $N concurrent clients, $BUILDS builds each, $ROUNDS rounds alternating:"
: >"$tmp/local_n" ; : >"$tmp/daemon_n"
for i in $(seq "$ROUNDS"); do
  if [ $((i % 2)) = 1 ]; then order="local daemon"; else order="daemon local"; fi
  for side in $order; do concurrent "$side" >>"$tmp/${side}_n"; done
  printf '  round %d: local %.2f/s | daemon %.2f/s\n' "$i" "$(tail -1 "$tmp/local_n")" "$(tail -1 "$tmp/daemon_n")"
done
ln=$(median <"$tmp/local_n"); dn=$(median <"$tmp/daemon_n")
printf '  median: local %.2f builds/s | daemon %.2f builds/s | ratio %s (goal >= 0.85)\n' "$ln" "$dn" "$(ratio "$dn" "$ln")"
