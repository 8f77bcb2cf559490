#!/bin/bash
# Rootless services (docs/service.md, "Rootless services"): a normal user with /etc/subuid and
# /etc/subgid ranges runs the same `service up|ps|logs|down` with no flag. The runtime's state
# is under its $XDG_RUNTIME_DIR; the replica's root is the user (image files are root's inside),
# ids above it come from the user's range (a file chowned to 1000 inside belongs to subuid+999
# on the host); the rootfs is a private copy (no overlay without root); a host_network service
# answers on a loopback port and another fetches from it; a replica without host_network has a
# network namespace of its own on a bridge in the deployment holder's namespace: two replicas
# listen on the same port, another finds each by name, the default route goes through
# slirp4netns, and a public endpoint answers on the host's 127.0.0.1; down removes
# everything, the range's files included, and leaves no holder or slirp4netns of the user; a
# killed up leaves nothing the next down does not remove; a holder and slirp4netns whose data dir
# was deleted are stopped by the user's next service command.
source "$(dirname "$0")/lib.sh"

[ "$(id -u)" -eq 0 ] || { t_skip "rootless services" "must start as root to create the test user"; t_done; exit; }
for tool in runc newuidmap newgidmap useradd runuser umoci busybox unshare slirp4netns; do
  command -v $tool >/dev/null || { t_skip "rootless services" "$tool missing (apt-get install runc uidmap umoci busybox-static slirp4netns)"; t_done; exit; }
done
unshare --help | grep -q -- --map-auto || { t_skip "rootless services" "unshare has no --map-auto (util-linux < 2.38)"; t_done; exit; }

# slirp4netns opens /dev/net/tun as the user: 0666 is what Debian's udev rules give it (a VM
# without udev may have 0600); scripts/install-deps.sh does the same
[ -c /dev/net/tun ] || { t_skip "rootless services" "/dev/net/tun missing"; t_done; exit; }
chmod 0666 /dev/net/tun
USER_NAME=obi-rootless
if ! id "$USER_NAME" >/dev/null 2>&1; then
  useradd --system --create-home --home-dir /var/lib/$USER_NAME --shell /bin/sh "$USER_NAME" || { t_fail "create test user"; t_done; exit; }
fi
grep -q "^$USER_NAME:" /etc/subuid || echo "$USER_NAME:200000:65536" >> /etc/subuid
grep -q "^$USER_NAME:" /etc/subgid || echo "$USER_NAME:200000:65536" >> /etc/subgid
subuid=$(grep "^$USER_NAME:" /etc/subuid | head -1 | cut -d: -f2)

W=$(mktemp -d /tmp/obi-rootless-svc.XXXXXX)
chmod 755 "$W"
mkdir -p "$W/xdg" "$W/home"
P=rl$$
cp "$OCIBUILD" "$W/ocibuild"
as_user() { runuser -u "$USER_NAME" -- env -i PATH=/usr/local/bin:/usr/bin:/bin:/usr/sbin:/sbin HOME="$W/home" XDG_RUNTIME_DIR="$W/xdg" OCIBUILD_DATA_DIR="$W/data" "$@"; }
t_cleanup "rm -rf '$W'"
t_cleanup "as_user '$W/ocibuild' service down '$W/d.yaml' --grace 0"

L=$W/layout U=$W/unpacked
if ! { umoci init --layout "$L" && umoci new --image "$L:1" && umoci unpack --rootless --image "$L:1" "$U" &&
       mkdir -p "$U/rootfs/bin" && cp "$(command -v busybox)" "$U/rootfs/bin/busybox" &&
       for c in sh cat echo sleep httpd wget mkdir chown ls stat grep id hostname; do ln -s busybox "$U/rootfs/bin/$c"; done &&
       umoci repack --image "$L:1" "$U"; } >"$W/umoci.log" 2>&1; then
  t_fail "umoci builds a busybox image" "$(cat "$W/umoci.log")"; t_done; exit 1
fi
free_port() { /usr/bin/python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
PORT=$(free_port) API_PORT=$(free_port) HOST_PORT=$(free_port)
cat >"$W/d.yaml" <<YAML
version: v1
deployment: $P
services:
  $P-db:
    image: { name: "oci:$L:1" }
    host_network: true
    command:
      entrypoint: [/bin/sh, -c]
      args: ["id -u; stat -c '%u %n' /bin/busybox; mkdir -p /srv && echo served > /srv/index.html && chown 1000:1000 /srv/index.html && exec httpd -f -p 127.0.0.1:$PORT -h /srv"]
  $P-api:
    image: { name: "oci:$L:1" }
    command:
      entrypoint: [/bin/sh, -c]
      args: ["mkdir -p /srv && echo api-served-\$(hostname) > /srv/index.html && exec httpd -f -p $API_PORT -h /srv"]
    scale: { mode: fixed, replicas: 2 }
    endpoints:
      - { name: http, protocol: http, port: $HOST_PORT, target_port: $API_PORT, expose: public }
  $P-web:
    image: { name: "oci:$L:1" }
    command:
      entrypoint: [/bin/sh, -c]
      args: ["echo dev=\$(grep -c eth0 /proc/net/dev) gw=\$(grep -c 0202000A /proc/net/route); for n in 1 2; do for i in \$(seq 30); do wget -q -O - http://$P-api-\$n:$API_PORT/ && break; sleep 0.3; done; done; exec sleep 600"]
  $P-fetch:
    image: { name: "oci:$L:1" }
    host_network: true
    command:
      entrypoint: [/bin/sh, -c]
      args: ["for i in 1 2 3 4 5 6 7 8 9 10; do wget -q -O - http://127.0.0.1:$PORT/ && break; sleep 0.3; done; exec sleep 600"]
    depends: [{ service: $P-db }]
YAML
chown -R "$USER_NAME" "$W"

out=$(as_user "$W/ocibuild" service up "$W/d.yaml" 2>&1); rc=$?
[ $rc = 0 ] && t_ok "up as a normal user" || t_fail "up as a normal user" "$out"
ps_out=$(as_user "$W/ocibuild" service ps "$W/d.yaml" 2>&1)
[ "$(grep -c ' running ' <<<"$ps_out")" = 5 ] && t_ok "ps as the user shows five running replicas" || t_fail "ps as the user shows five running replicas" "$ps_out"
state=$(as_user runc --root "$W/xdg/ocibuild/runc" list -q 2>&1)
t_contains "the runtime's state is under \$XDG_RUNTIME_DIR" "$state" "$P-db-rep-1"
logs() { as_user "$W/ocibuild" service logs "$W/d.yaml" "$1" 2>&1; }
wait_log() { for _ in $(seq 50); do logs "$1" | grep -q "$2" && return 0; sleep 0.2; done; logs "$1"; return 1; }
t_check "the replica's root is uid 0 inside and image files are root's" wait_log "$P-db" "| 0 /bin/busybox"
t_check "a host_network replica fetches from another on 127.0.0.1:$PORT" wait_log "$P-fetch" "| served"
t_check "a replica without host_network has its own eth0 and a default route via slirp4netns" wait_log "$P-web" "| dev=1 gw=1"
# two replicas listen on the same port, each in its own namespace (they collided in one shared
# namespace before), and each is found by its name
t_check "web fetches http://$P-api-1:$API_PORT/ from replica 1" wait_log "$P-web" "| api-served-$P-api-rep-1"
t_check "web fetches http://$P-api-2:$API_PORT/ from replica 2 (the same port)" wait_log "$P-web" "| api-served-$P-api-rep-2"
fetch_public() { for _ in $(seq 30); do curl -fsS "http://127.0.0.1:$HOST_PORT/" 2>/dev/null && return 0; sleep 0.2; done; return 1; }
t_contains "the public endpoint answers on the host's 127.0.0.1:$HOST_PORT" "$(fetch_public)" "api-served"
uid=$(id -u "$USER_NAME")
rec=$W/data/run/rootless-net/$P
held="$(ps -o comm= -p "$(cut -d' ' -f1 "$rec/holder")") $(ps -o comm= -p "$(cut -d' ' -f1 "$rec/slirp")")"
[ "$held" = "sleep slirp4netns" ] && t_ok "the user runs a holder and slirp4netns" || t_fail "the user runs a holder and slirp4netns" "$(ps -o pid=,args= -u "$uid")"
served=$W/data/services/$P/$P-db-rep-1/bundle/rootfs/srv/index.html
owner=$(stat -c %u "$served" 2>/dev/null)
[ "$owner" = $((subuid + 999)) ] && t_ok "container uid 1000 is subuid+999 on the host, in the replica's private rootfs copy" ||
  t_fail "container uid 1000 is subuid+999 on the host, in the replica's private rootfs copy" "owner '$owner' of $served"
grep -q " $W/" /proc/self/mountinfo && t_fail "no mount below the data dir (no overlay rootless)" "$(grep " $W/" /proc/self/mountinfo)" ||
  t_ok "no mount below the data dir (no overlay rootless)"

# up again: the holder (and the replicas' namespace) stays, slirp4netns is new, the port again
holder=$(cat "$rec/holder") slirp=$(cat "$rec/slirp")
out=$(as_user "$W/ocibuild" service up "$W/d.yaml" 2>&1) || t_fail "up again" "$out"
[ "$(cat "$rec/holder")" = "$holder" ] && [ "$(cat "$rec/slirp")" != "$slirp" ] && t_ok "up again keeps the holder, starts slirp4netns anew" ||
  t_fail "up again keeps the holder, starts slirp4netns anew" "$holder -> $(cat "$rec/holder"), $slirp -> $(cat "$rec/slirp")"
t_contains "the public endpoint answers after up again" "$(fetch_public)" "api-served"

out=$(as_user "$W/ocibuild" service down "$W/d.yaml" --grace 0 2>&1); rc=$?
[ $rc = 0 ] && t_ok "down as the user" || t_fail "down as the user" "$out"
left=$(ls -A "$W/data/services/$P" 2>/dev/null; as_user runc --root "$W/xdg/ocibuild/runc" list -q 2>/dev/null)
[ -z "$left" ] && t_ok "down leaves no container and no replica dir (files of the range included)" ||
  t_fail "down leaves no container and no replica dir (files of the range included)" "$left"
no_network_left() { # WHAT: no process of the user, no network state dir
  local procs; procs=$(ps -o stat=,pid=,args= -u "$uid" | grep -v '^Z') # zombies wait for pid 1
  [ -z "$procs" ] && [ ! -e "$W/data/run/rootless-net/$P" ] && t_ok "$1" || t_fail "$1" "$procs $(ls "$W/data/run/rootless-net" 2>&1)"
}
no_network_left "down leaves no holder, no slirp4netns and no network state of the user"

# up killed once its network runs: the next down removes what it recorded
as_user "$W/ocibuild" service up "$W/d.yaml" >/dev/null 2>&1 &
upid=$!
for _ in $(seq 100); do [ -e "$W/data/run/rootless-net/$P/slirp" ] && break; sleep 0.1; done
[ -e "$W/data/run/rootless-net/$P/slirp" ] && t_ok "a second up records its network" || t_fail "a second up records its network"
kill -9 $upid 2>/dev/null; wait $upid 2>/dev/null
out=$(as_user "$W/ocibuild" service down "$W/d.yaml" --grace 0 2>&1) || t_fail "down after a killed up" "$out"
no_network_left "down after a killed up leaves no holder, no slirp4netns and no network state"

# the data dir deleted under a running network: the user's next service command stops its holder
# and slirp4netns, found by the marker in their environment (nothing else records them any more)
cat >"$W/small.yaml" <<YAML
version: v1
deployment: $P-gone
services:
  $P-one:
    image: { name: "oci:$L:1" }
    command: { entrypoint: [/bin/sleep, "600"] }
YAML
chown "$USER_NAME" "$W/small.yaml"
out=$(as_user "$W/ocibuild" service up "$W/small.yaml" 2>&1) || t_fail "up of a small deployment" "$out"
rec=$W/data/run/rootless-net/$P-gone
holder=$(cut -d' ' -f1 "$rec/holder" 2>/dev/null) slirp=$(cut -d' ' -f1 "$rec/slirp" 2>/dev/null)
netns=$(cut -d' ' -f1 "$rec/net-$P-one-rep-1" 2>/dev/null)
rm -rf "$W/data"
# the supervisor leaves once its state dir is gone; the container is the runtime's, removed here
for _ in $(seq 50); do pgrep -u "$uid" -f obi-supervisor >/dev/null || break; sleep 0.1; done
for id in $(as_user runc --root "$W/xdg/ocibuild/runc" list -q 2>/dev/null); do
  as_user runc --root "$W/xdg/ocibuild/runc" delete --force "$id" >/dev/null 2>&1
done
[ -n "$holder" ] && [ -n "$netns" ] && kill -0 "$holder" 2>/dev/null && kill -0 "$slirp" 2>/dev/null &&
  kill -0 "$netns" 2>/dev/null && t_ok "a deleted data dir leaves its holder, slirp4netns and replica namespace running" ||
  t_fail "a deleted data dir leaves its holder, slirp4netns and replica namespace running" "holder '$holder' slirp '$slirp' netns '$netns'"
out=$(as_user "$W/ocibuild" service ls 2>&1)
t_contains "the next service command says it stopped them" "$out" "stopped 3 network processes"
gone() { for _ in $(seq 50); do ! kill -0 "$1" 2>/dev/null && return 0; sleep 0.1; done; return 1; }
gone "$holder" && gone "$slirp" && gone "$netns" && t_ok "the holder, slirp4netns and namespace of the deleted data dir are gone" ||
  t_fail "the holder, slirp4netns and namespace of the deleted data dir are gone" "$(ps -o pid=,args= -u "$uid")"
t_done
