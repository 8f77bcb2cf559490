#!/bin/bash
# A network per deployment (docs/service.md, "Networks"), with real runc and an umoci busybox
# image: web fetches http://DB:PORT/ by service name and DB-2 by replica name through the
# /etc/hosts in its bundle; a second deployment is on a network of its own and cannot reach the
# first; a public endpoint answers on 127.0.0.1:PORT through the proxy (round robin over both db
# replicas); a hosts file planted as a symlink in a bundle is replaced, not followed; down
# leaves no namespace, veth, bridge, state dir or proxy; an `up` killed with SIGKILL is cleaned
# up by `down`, and a deployment whose data dir is gone is swept by the next `up`.
source "$(dirname "$0")/lib.sh"
chmod 711 "$T_TMP"
RUNC=$(command -v runc || echo /usr/sbin/runc)
BUSYBOX=$(command -v busybox || echo /bin/busybox)
if [ "$(id -u)" != 0 ]; then
  t_skip "service network" "not root: bridges and veth pairs need CAP_NET_ADMIN (rootless: test_service_rootless.sh)"
  t_done; exit 0
fi
if [ ! -x "$RUNC" ] || [ ! -x "$BUSYBOX" ] || ! command -v umoci >/dev/null || ! command -v ip >/dev/null; then
  t_skip "service network" "runc, busybox-static, umoci or iproute2 is not installed"; t_done; exit 0
fi
D=$T_TMP/data D3=$T_TMP/data3 L=$T_TMP/layout U=$T_TMP/unpacked
P=nw$$ # container ids are global to runc's state root: names of our own
export OCIBUILD_PUBLISH_ADDRESS=127.0.0.1
svc() { "$OCIBUILD" service "$@" --grace 0 2>&1; }
up() { "$OCIBUILD" service up "$@" 2>&1; }
for f in a b c; do
  t_cleanup "$OCIBUILD service down $T_TMP/$f.yaml --data-dir $D --grace 0"
done
t_cleanup "for id in \$($RUNC list -q 2>/dev/null); do $RUNC state \$id 2>/dev/null | grep -q '\"bundle\": \"$T_TMP/' && $RUNC delete --force \$id; done"
t_cleanup "grep -o ' $T_TMP/[^ ]*' /proc/self/mountinfo | sort -r | xargs -r -n1 umount -l"

if ! { umoci init --layout "$L" && umoci new --image "$L:1" && umoci unpack --image "$L:1" "$U" &&
       mkdir -p "$U/rootfs/bin" "$U/rootfs/www" && cp "$BUSYBOX" "$U/rootfs/bin/busybox" &&
       for c in sh cat echo sleep httpd wget hostname grep mkdir timeout; do ln -s busybox "$U/rootfs/bin/$c"; done &&
       umoci repack --image "$L:1" "$U"; } >"$T_TMP/umoci.log" 2>&1; then
  t_fail "umoci builds a busybox image" "$(cat "$T_TMP/umoci.log")"; t_done; exit 1
fi
free_port() { /usr/bin/python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
PUB=$(free_port)
# db serves its own hostname (busybox httpd); busybox's wget crashes
# with -T, so fetches are bounded by timeout(1) inside the container.
db_service() { # NAME [PUBLIC_PORT]
  cat <<YAML
  $1:
    image: { name: "oci:$L:1" }
    command:
      entrypoint: [/bin/sh, -c]
      args: ["mkdir -p /srv && hostname > /srv/index.html && exec httpd -f -p 8080 -h /srv"]
    scale: { mode: fixed, replicas: 2 }
YAML
  [ -n "${2:-}" ] && cat <<YAML
    endpoints:
      - { name: http, protocol: http, port: $2, target_port: 8080, expose: public }
YAML
  return 0
}
fetcher_service() { # NAME URL...
  local name=$1; shift
  cat <<YAML
  $name:
    image: { name: "oci:$L:1" }
    command:
      entrypoint: [/bin/sh, -c]
      args: ["cat /etc/hosts; for u in $*; do for i in 1 2 3 4 5 6 7 8 9 10; do r=\$(timeout 5 wget -q -O - \$u 2>&1) && break; r=\"\$r FAILED\"; sleep 0.3; done; echo \"FETCH \$u \$r\"; done; exec sleep 600"]
YAML
}
{ echo "version: v1"; echo "deployment: $P-a"; echo "services:"
  db_service "$P-db" "$PUB"; fetcher_service "$P-web" "http://$P-db:8080/" "http://$P-db-2:8080/"
  echo "    depends: [{ service: $P-db }]"; } >"$T_TMP/a.yaml"

out=$(up "$T_TMP/a.yaml" --data-dir "$D"); rc=$?
[ $rc = 0 ] && t_ok "up of a deployment on its own network" || t_fail "up of a deployment on its own network" "$out"
log_has() { # FILE SERVICE PATTERN: waits up to 10 s for the pattern in the service's log
  for _ in $(seq 50); do
    "$OCIBUILD" service logs "$1" "$2" --data-dir "${3:-$D}" 2>/dev/null | grep -q "$4" && return 0
    sleep 0.2
  done
  "$OCIBUILD" service logs "$1" "$2" --data-dir "${3:-$D}" 2>&1; return 1
}
t_check "web fetches http://$P-db:8080/ by service name" log_has "$T_TMP/a.yaml" "$P-web" "$D" "FETCH http://$P-db:8080/ $P-db-rep-1"
t_check "web fetches http://$P-db-2:8080/ by replica name" log_has "$T_TMP/a.yaml" "$P-web" "$D" "FETCH http://$P-db-2:8080/ $P-db-rep-2"
hosts=$("$OCIBUILD" service logs "$T_TMP/a.yaml" "$P-web" --data-dir "$D" 2>&1)
t_contains "the hosts file names the container id too" "$hosts" "$P-db-1 $P-db-rep-1 $P-db"

# the public endpoint, from the host, spread over both replicas
seen=""
for _ in 1 2 3 4; do seen+=" $(timeout 5 "$BUSYBOX" wget -q -O - "http://127.0.0.1:$PUB/")"; done
t_contains "the public endpoint answers on 127.0.0.1:$PUB (replica 1)" "$seen" "$P-db-rep-1"
t_contains "the public endpoint answers on 127.0.0.1:$PUB (replica 2)" "$seen" "$P-db-rep-2"
proxy_user=$(ps -o user= -C obi-proxy | sort -u | tr -d ' \n')
[ "$proxy_user" = nobody ] && t_ok "the proxy runs as nobody" || t_fail "the proxy runs as nobody" "users: $proxy_user"

# a second deployment: its own /24, and no way to the first
{ echo "version: v1"; echo "deployment: $P-b"; echo "services:"
  db_service "$P-dbb"; fetcher_service "$P-webb" "http://$P-dbb:8080/" "http://$P-db:8080/" \
    "http://A_ADDR:8080/"; } >"$T_TMP/b.yaml"
addr_of() { printf '%s\n' "$1" | grep -o "[0-9.]*	$2 " | cut -f1 | head -1; }
a_addr=$(addr_of "$hosts" "$P-db-1")
sed -i "s/A_ADDR/$a_addr/" "$T_TMP/b.yaml"
out=$(up "$T_TMP/b.yaml" --data-dir "$D"); rc=$?
[ $rc = 0 ] && t_ok "up of a second deployment" || t_fail "up of a second deployment" "$out"
t_check "the second deployment's web reaches its own db" log_has "$T_TMP/b.yaml" "$P-webb" "$D" "FETCH http://$P-dbb:8080/ $P-dbb-rep-1"
t_check "it does not know the first deployment's names" log_has "$T_TMP/b.yaml" "$P-webb" "$D" "FETCH http://$P-db:8080/ .*bad address"
t_check "it cannot reach the first deployment's db by address ($a_addr)" log_has "$T_TMP/b.yaml" "$P-webb" "$D" "FETCH http://$a_addr:8080/ .*FAILED"
b_hosts=$("$OCIBUILD" service logs "$T_TMP/b.yaml" "$P-webb" --data-dir "$D" 2>&1)
b_addr=$(addr_of "$b_hosts" "$P-dbb-1")
[ -n "$b_addr" ] && [ "${a_addr%.*}" != "${b_addr%.*}" ] && t_ok "the two deployments have different /24s" ||
  t_fail "the two deployments have different /24s" "$a_addr vs $b_addr"

# a job whose bundle gets a symlink planted at BUNDLE/hosts: up rewrites the bundle beneath it
{ echo "version: v1"; echo "deployment: $P-c"; echo "services:"
  echo "  $P-once:"; echo "    image: { name: \"oci:$L:1\" }"
  echo "    command: { entrypoint: [/bin/sh, -c], args: [\"grep -c $P-once-1 /etc/hosts\"] }"; } >"$T_TMP/c.yaml"
up "$T_TMP/c.yaml" --data-dir "$D" >/dev/null
bundle=$D/services/$P-c/$P-once-rep-1/bundle
echo victim >"$T_TMP/victim"
for _ in $(seq 50); do "$OCIBUILD" service ps "$T_TMP/c.yaml" --data-dir "$D" 2>&1 | grep -q stopped && break; sleep 0.1; done
rm -f "$bundle/hosts" && ln -s "$T_TMP/victim" "$bundle/hosts"
out=$(up "$T_TMP/c.yaml" --data-dir "$D"); rc=$?
[ "$(cat "$T_TMP/victim")" = victim ] && [ -f "$bundle/hosts" ] && [ ! -L "$bundle/hosts" ] &&
  t_ok "a symlink at BUNDLE/hosts is replaced, not written through" ||
  t_fail "a symlink at BUNDLE/hosts is replaced, not written through" "rc $rc: $out; victim: $(cat "$T_TMP/victim")"

# down leaves nothing of the network
net_leftovers() { # DATA: the keys of the networks whose owner is that data dir
  grep -lx -- "$1" /run/ocibuild/networks/*/owner 2>/dev/null | xargs -r -n1 dirname | xargs -r -n1 basename
}
keys=$(net_leftovers "$D" | tr '\n' ' ')
proxy_pids=$(pgrep -x obi-proxy | tr '\n' ' ')
for f in a b c; do svc down "$T_TMP/$f.yaml" --data-dir "$D" >/dev/null; done
left=""
for k in $keys; do
  ip netns | grep -q "obi-$k" && left+=" netns obi-$k-*"
  ip -br link | grep -q "obr$k" && left+=" bridge obr$k"
  [ -e "/run/ocibuild/networks/$k" ] && left+=" state /run/ocibuild/networks/$k"
done
for _ in $(seq 20); do alive=""; for p in $proxy_pids; do [ -e /proc/$p ] && alive+=" $p"; done; [ -z "$alive" ] && break; sleep 0.1; done
[ -n "$keys" ] && [ -z "$left" ] && [ -z "$alive" ] && t_ok "down leaves no netns, veth, bridge, state or proxy" ||
  t_fail "down leaves no netns, veth, bridge, state or proxy" "keys: $keys; left:$left; proxy pids alive:$alive"
veths=$(ip -br link | grep '^obv')
[ -z "$veths" ] && t_ok "down leaves no veth" || t_fail "down leaves no veth" "$veths"

# kill -9 of up mid-way: down removes what it left
{ echo "version: v1"; echo "deployment: $P-k"; echo "services:"
  echo "  $P-slow:"; echo "    image: { name: \"oci:$L:1\" }"
  echo "    command: { entrypoint: [/bin/sleep], args: [\"600\"] }"
  echo "    scale: { mode: fixed, replicas: 8 }"; } >"$T_TMP/k.yaml"
t_cleanup "$OCIBUILD service down $T_TMP/k.yaml --data-dir $D --grace 0"
t_cleanup "$OCIBUILD service down $T_TMP/k.yaml --data-dir $D3 --grace 0"
kill_mid_up() { # DATA: starts up, kills it once its second namespace exists
  "$OCIBUILD" service up "$T_TMP/k.yaml" --data-dir "$1" >/dev/null 2>&1 &
  local pid=$!
  for _ in $(seq 250); do ip netns | grep -q -- "-$P-slow-rep-2" && break; sleep 0.02; done
  kill -9 $pid; wait $pid 2>/dev/null
}
kill_mid_up "$D"
k_key=$(net_leftovers "$D" | head -1)
[ -n "$k_key" ] && ip netns | grep -q "obi-$k_key" && t_ok "the killed up left its network behind" ||
  t_fail "the killed up left its network behind" "key '$k_key': $(ip netns | grep obi-)"
svc down "$T_TMP/k.yaml" --data-dir "$D" >/dev/null
[ -n "$k_key" ] && ! ip netns | grep -q "obi-$k_key" && ! ip -br link | grep -q "obr$k_key" && [ ! -e "/run/ocibuild/networks/$k_key" ] &&
  t_ok "down after a killed up removes its network" ||
  t_fail "down after a killed up removes its network" "key $k_key: $(ip netns | grep obi-) $(ls /run/ocibuild/networks)"

# kill -9 of up, then its data dir goes: the next up of any deployment sweeps the network
mkdir -p "$D3"
kill_mid_up "$D3"
k3_key=$(net_leftovers "$D3" | head -1)
for id in $($RUNC list -q 2>/dev/null); do
  $RUNC state "$id" 2>/dev/null | grep -q "\"bundle\": \"$D3/" && $RUNC delete --force "$id" >/dev/null 2>&1
done
grep -o " $D3/[^ ]*" /proc/self/mountinfo | sort -r | xargs -r -n1 umount -l
rm -rf "$D3"
out=$(up "$T_TMP/c.yaml" --data-dir "$D"); rc=$?
t_contains "the next up sweeps the network of a deployment whose data dir is gone" "$out" "swept the network of $P-k"
[ -n "$k3_key" ] && ! ip netns | grep -q "obi-$k3_key" && ! ip -br link | grep -q "obr$k3_key" && [ ! -e "/run/ocibuild/networks/$k3_key" ] &&
  t_ok "the sweep leaves no netns, bridge or state of it" ||
  t_fail "the sweep leaves no netns, bridge or state of it" "key $k3_key: $(ip netns | grep obi-)"
svc down "$T_TMP/c.yaml" --data-dir "$D" >/dev/null
t_done
