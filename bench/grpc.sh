#!/bin/bash
# gRPC layer figures (bench/README.md): blob Put and Read throughput through a daemon on a unix
# socket next to the same operations on the local store it serves and a plain read() of the blob
# file; Read over mutual TLS and plain TCP on loopback next to the unix socket (alternating runs,
# same store); Stat requests/s with 8 concurrent clients; DoBuild over gRPC vs the local build
# (when root and runc are available). Usage: bench/grpc.sh [MIB] (default 256).
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
# The same store over mutual TLS and over plain TCP, both on loopback; runs alternate.
tls_row="" tcp_row=""
if command -v openssl >/dev/null; then
  pki="$tmp/pki"; mkdir "$pki"
  ec=(-newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes)
  openssl req -x509 "${ec[@]}" -keyout "$pki/ca.key" -out "$pki/ca.pem" -days 1 -subj /CN=ca 2>/dev/null
  for who in server client; do
    openssl req "${ec[@]}" -keyout "$pki/$who.key" -out "$pki/$who.csr" -subj "/CN=$who" 2>/dev/null
    printf 'subjectAltName=IP:127.0.0.1\n' >"$pki/$who.ext"
    openssl x509 -req -in "$pki/$who.csr" -CA "$pki/ca.pem" -CAkey "$pki/ca.key" -CAcreateserial \
      -out "$pki/$who.pem" -days 1 -extfile "$pki/$who.ext" 2>/dev/null
  done
  "$OCIBUILD" daemon --listen 127.0.0.1:0 --store "$store" --build-service dummy:// \
    --tls-cert "$pki/server.pem" --tls-key "$pki/server.key" --tls-client-ca "$pki/ca.pem" \
    2>"$tmp/tls.log" &
  pids+=($!)
  "$OCIBUILD" daemon --listen 127.0.0.1:0 --store "$store" --build-service dummy:// \
    2>"$tmp/tcp.log" &
  pids+=($!)
  port_of() { for _ in $(seq 100); do p=$(sed -n 's/.*(port \([0-9]*\).*/\1/p' "$1"); [ -n "$p" ] && { echo "$p"; return; }; sleep 0.05; done; }
  tls_url="grpc+https://127.0.0.1:$(port_of "$tmp/tls.log")?ca=$pki/ca.pem&cert=$pki/client.pem&key=$pki/client.key"
  tcp_url="grpc+http://127.0.0.1:$(port_of "$tmp/tcp.log")"
  : >"$tmp/r.unix"; : >"$tmp/r.tls"; : >"$tmp/r.tcp"
  for i in 1 2 3; do
    "$DRIVER" read "$url" "$hex" >>"$tmp/r.unix"
    "$DRIVER" read "$tls_url" "$hex" >>"$tmp/r.tls"
    "$DRIVER" read "$tcp_url" "$hex" >>"$tmp/r.tcp"
  done
  read_unix=$(median <"$tmp/r.unix")
  tls_row=$(median <"$tmp/r.tls")
  tcp_row=$(median <"$tmp/r.tcp")
fi
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
if [ -n "$tls_row" ]; then
  echo "Read over loopback TCP, medians of 3 alternating with the unix socket (MiB/s):"
  printf '  %-44s %8s\n' "unix socket" "$read_unix"
  printf '  %-44s %8s  (%s of the unix socket)\n' "TCP, mutual TLS (grpc+https)" "$tls_row" "$(ratio "$tls_row" "$read_unix")"
  printf '  %-44s %8s  (%s of the unix socket)\n' "TCP, plain (grpc+http)" "$tcp_row" "$(ratio "$tcp_row" "$read_unix")"
else
  echo "Read over TLS SKIPPED: needs openssl"
fi
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
