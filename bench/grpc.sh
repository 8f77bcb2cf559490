#!/bin/bash
# gRPC layer figures (bench/README.md): blob Put and Read throughput through a daemon on a unix
# socket next to the same operations on the local store it serves and a plain read() of the blob
# file; Stat requests/s with 8 concurrent clients; DoBuild over gRPC vs the local build (when
# root and runc are available). Usage: bench/grpc.sh [MIB] (default 256).
set -eu
cd "$(dirname "$0")/.."
MIB=${1:-256}
OCIBUILD=${OCIBUILD:-$PWD/build/ocibuild}
DRIVER=$PWD/build/bench/bench_grpc
[ -x "$DRIVER" ] || { echo "build first: scripts/build.sh" >&2; exit 1; }
tmp=$(mktemp -d /tmp/obi-bench-grpc.XXXXXX)
chmod 711 "$tmp" # a build's container root (a host id of its id slot) reaches its bundle
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null; wait "$p" 2>/dev/null; done; rm -rf "$tmp"; }
trap cleanup EXIT

head -c $((MIB * 1024 * 1024)) /dev/urandom >"$tmp/blob"
store="$tmp/store"
"$OCIBUILD" daemon --listen "unix:$tmp/d.sock" --store "$store" --build-service dummy:// \
  --log-level warn 2>"$tmp/daemon.log" &
pids+=($!)
for _ in $(seq 100); do [ -S "$tmp/d.sock" ] && break; sleep 0.05; done
url="grpc+unix://$tmp/d.sock"

median() { sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN {printf "%.2f", a / b}'; }

cat "$tmp/blob" >/dev/null # page cache
put_grpc=$(for i in 1 2 3; do "$DRIVER" put "$url" "$tmp/blob" | cut -d' ' -f1; done | median)
hex=$("$DRIVER" put "$url" "$tmp/blob" | cut -d' ' -f2)
put_local=$(for i in 1 2 3; do "$DRIVER" put "$tmp/store-local" "$tmp/blob" | cut -d' ' -f1; done | median)
file="$store/blobs/${hex:0:2}/$hex"
cat "$file" >/dev/null
read_file=$(for i in 1 2 3; do "$DRIVER" readfile "$file"; done | median)
read_local=$(for i in 1 2 3; do "$DRIVER" read "$store" "$hex"; done | median)
read_grpc=$(for i in 1 2 3; do "$DRIVER" read "$url" "$hex"; done | median)
small=$(printf 'small blob' >"$tmp/small" && "$DRIVER" put "$url" "$tmp/small" | cut -d' ' -f2)
stat_grpc=$("$DRIVER" stat "$url" "$small" 8 5)
stat_local=$("$DRIVER" stat "$store" "$small" 8 5)

echo "blob of $MIB MiB, medians of 3 (MiB/s):"
printf '  %-44s %8s\n' "read() of the blob file" "$read_file"
printf '  %-44s %8s  (%s of read())\n' "Read, local store" "$read_local" "$(ratio "$read_local" "$read_file")"
printf '  %-44s %8s  (%s of read())\n' "Read over gRPC (unix socket)" "$read_grpc" "$(ratio "$read_grpc" "$read_file")"
printf '  %-44s %8s\n' "Put, local store (hash + fsync)" "$put_local"
printf '  %-44s %8s  (%s of local Put, %s of read())\n' "Put over gRPC (unix socket)" "$put_grpc" \
  "$(ratio "$put_grpc" "$put_local")" "$(ratio "$put_grpc" "$read_file")"
echo "Stat of a small blob, 8 concurrent clients, 5 s (requests/s):"
printf '  %-44s %8s\n' "over gRPC (8 threads, one connection)" "$stat_grpc" "local store (8 threads)" "$stat_local"

# DoBuild over gRPC vs the local build of the same request.
if [ "$(id -u)" -eq 0 ] && command -v runc >/dev/null && [ -x /bin/busybox ]; then
  cat >"$tmp/req.json" <<'JSON'
{"inputs": {"busybox": "/bin/busybox"},
 "command_args": ["/nix/store/busybox", "sh", "-c", "mkdir -p /nix/store/out && echo hi > /nix/store/out/f"],
 "working_dir": "build", "scratch_paths": ["build", "nix/store"], "inputs_dir": "nix/store",
 "outputs": ["nix/store/out"]}
JSON
  bstore="$tmp/bstore" bundles="$tmp/bundles"
  "$OCIBUILD" daemon --listen "unix:$tmp/b.sock" --store "$bstore" \
    --build-service "oci://$bundles?runtime=runc" --log-level warn 2>"$tmp/builder.log" &
  pids+=($!)
  for _ in $(seq 100); do [ -S "$tmp/b.sock" ] && break; sleep 0.05; done
  burl="grpc+unix://$tmp/b.sock"
  timed() { local s e; s=$(date +%s.%N); "$@" >/dev/null 2>&1 || echo "failed: $*" >&2; e=$(date +%s.%N); awk -v s="$s" -v e="$e" 'BEGIN {printf "%.3f\n", e - s}'; }
  "$OCIBUILD" build --store "$bstore" --build-service "oci://$bundles?runtime=runc" "$tmp/req.json" >/dev/null 2>&1
  local_build=$(for i in 1 2 3 4 5; do timed "$OCIBUILD" build --store "$bstore" --build-service "oci://$bundles?runtime=runc" "$tmp/req.json"; done | median)
  grpc_build=$(for i in 1 2 3 4 5; do timed "$OCIBUILD" build --store "$burl" --build-service "$burl" "$tmp/req.json"; done | median)
  echo "DoBuild, trivial busybox build, median of 5 (s):"
  printf '  %-44s %8s\n' "ocibuild build (local OCI builder)" "$local_build"
  printf '  %-44s %8s  (ratio %s)\n' "ocibuild build via the daemon over gRPC" "$grpc_build" "$(ratio "$grpc_build" "$local_build")"
else
  echo "DoBuild comparison SKIPPED: needs root, runc and /bin/busybox"
fi
