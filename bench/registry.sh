#!/bin/bash
# A registry pull end to end: `ocibuild service spec` of a service whose image is on a local
# docker-registry (pull, verify every blob, unpack the rootfs into a fresh data dir), side by
# side and alternating with the reference: `skopeo copy docker://... oci:DIR` (pull, verify)
# followed by `umoci raw unpack` (unpack), in the same run. The image: busybox plus one layer
# of MIB MiB (half random, half zeros, so gzip has work of both kinds). Wall and CPU (user+sys
# of the tool, /usr/bin/time) per round, and the ratios of the sums; the registry's own CPU is
# the same for both and not counted.
# usage: bench/registry.sh [MIB] [ROUNDS]   (needs build/ocibuild, docker-registry, skopeo, umoci)
set -eu
cd "$(dirname "$0")/.."
OCIBUILD=${OCIBUILD:-$PWD/build/ocibuild}
MIB=${1:-128}
ROUNDS=${2:-3}
work=$(mktemp -d "${TMPDIR:-/tmp}/obi-bench-registry.XXXXXX")
trap 'kill $reg_pid 2>/dev/null; chmod -R u+w "$work" 2>/dev/null; rm -rf "$work"' EXIT
reg_pid=

port=$(/usr/bin/python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
cat >"$work/registry.yml" <<YAML
version: 0.1
log: {level: error, accesslog: {disabled: true}}
storage: {filesystem: {rootdirectory: $work/storage}}
http: {addr: 127.0.0.1:$port}
YAML
/usr/bin/docker-registry serve "$work/registry.yml" >"$work/registry.log" 2>&1 &
reg_pid=$!
for _ in $(seq 100); do (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null && break; sleep 0.1; done

L=$work/layout U=$work/unpacked
umoci init --layout "$L" && umoci new --image "$L:1" && umoci unpack --image "$L:1" "$U" >/dev/null
mkdir -p "$U/rootfs/bin" "$U/rootfs/data"
cp "$(command -v busybox || echo /bin/busybox)" "$U/rootfs/bin/busybox"
head -c $((MIB << 19)) /dev/urandom >"$U/rootfs/data/random"
head -c $((MIB << 19)) /dev/zero >"$U/rootfs/data/zeros"
umoci repack --image "$L:1" "$U" && rm -rf "$U"
skopeo copy --quiet --dest-tls-verify=false "oci:$L:1" "docker://127.0.0.1:$port/bench/img:1"
cat >"$work/d.yaml" <<YAML
version: v1
deployment: bench
services:
  app:
    image: { name: "127.0.0.1:$port/bench/img:1", pull_policy: always }
YAML

now() { date +%s.%N; }
cpu_of() { awk -F': ' '/User time/ {u = $2} /System time/ {s = $2} END {print u + s}' "$@" | paste -sd+ | bc -l; }
o_wall=0 o_cpu=0 s_wall=0 s_cpu=0
echo "$(nproc) cores, load average $(cut -d' ' -f1-3 /proc/loadavg); image layer $MIB MiB, $ROUNDS rounds"
for r in $(seq "$ROUNDS"); do
  rm -rf "$work/data" "$work/oci" "$work/rootfs"
  t0=$(now)
  /usr/bin/time -v -o "$work/o.txt" "$OCIBUILD" service spec "$work/d.yaml" app --data-dir "$work/data" \
    --insecure-registry "127.0.0.1:$port" >/dev/null
  t1=$(now); ow=$(echo "$t1 - $t0" | bc -l); oc=$(cpu_of "$work/o.txt")
  t0=$(now)
  /usr/bin/time -v -o "$work/s1.txt" skopeo copy --quiet --src-tls-verify=false \
    "docker://127.0.0.1:$port/bench/img:1" "oci:$work/oci:1"
  /usr/bin/time -v -o "$work/s2.txt" umoci raw unpack --image "$work/oci:1" "$work/rootfs" 2>/dev/null
  t1=$(now); sw=$(echo "$t1 - $t0" | bc -l); sc=$(cpu_of "$work/s1.txt" "$work/s2.txt")
  printf 'round %d | ocibuild: wall %6.2fs cpu %6.2fs | skopeo+umoci: wall %6.2fs cpu %6.2fs\n' "$r" "$ow" "$oc" "$sw" "$sc"
  o_wall=$(echo "$o_wall + $ow" | bc -l) o_cpu=$(echo "$o_cpu + $oc" | bc -l)
  s_wall=$(echo "$s_wall + $sw" | bc -l) s_cpu=$(echo "$s_cpu + $sc" | bc -l)
done
printf 'sum     | ocibuild: wall %6.2fs cpu %6.2fs | skopeo+umoci: wall %6.2fs cpu %6.2fs | ratio (reference / ocibuild): wall %.2f cpu %.2f\n' \
  "$o_wall" "$o_cpu" "$s_wall" "$s_cpu" "$(echo "$s_wall / $o_wall" | bc -l)" "$(echo "$s_cpu / $o_cpu" | bc -l)"
t0=$(now)
sed -i 's/pull_policy: always/pull_policy: if_not_present/' "$work/d.yaml"
/usr/bin/time -v -o "$work/o.txt" "$OCIBUILD" service spec "$work/d.yaml" app --data-dir "$work/data" >/dev/null
t1=$(now)
printf 'cached  | ocibuild if_not_present (no request, rootfs reused): wall %6.3fs cpu %6.3fs\n' "$(echo "$t1 - $t0" | bc -l)" "$(cpu_of "$work/o.txt")"
