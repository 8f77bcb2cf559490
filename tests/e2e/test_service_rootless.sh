#!/bin/bash
# Rootless services (docs/service.md, "Rootless services"): a normal user with /etc/subuid and
# /etc/subgid ranges runs the same `service up|ps|logs|down` with no flag. The runtime's state
# is under its $XDG_RUNTIME_DIR; the replica's root is the user (image files are root's inside),
# ids above it come from the user's range (a file chowned to 1000 inside belongs to subuid+999
# on the host); the rootfs is a private copy (no overlay without root); a host_network service
# answers on a loopback port and another fetches from it; a replica without host_network has a
# namespace with only lo; down removes everything, the range's files included.
source "$(dirname "$0")/lib.sh"

[ "$(id -u)" -eq 0 ] || { t_skip "rootless services" "must start as root to create the test user"; t_done; exit; }
for tool in runc newuidmap newgidmap useradd runuser umoci busybox unshare; do
  command -v $tool >/dev/null || { t_skip "rootless services" "$tool missing (apt-get install runc uidmap umoci busybox-static)"; t_done; exit; }
done
unshare --help | grep -q -- --map-auto || { t_skip "rootless services" "unshare has no --map-auto (util-linux < 2.38)"; t_done; exit; }

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
       for c in sh cat echo sleep httpd wget mkdir chown ls stat grep id; do ln -s busybox "$U/rootfs/bin/$c"; done &&
       umoci repack --image "$L:1" "$U"; } >"$W/umoci.log" 2>&1; then
  t_fail "umoci builds a busybox image" "$(cat "$W/umoci.log")"; t_done; exit 1
fi
PORT=$(/usr/bin/python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
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
  $P-web:
    image: { name: "oci:$L:1" }
    command:
      entrypoint: [/bin/sh, -c]
      args: ["grep -v '^ *lo:' /proc/net/dev | tail -n +3 | wc -l; exec sleep 600"]
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
t_contains "up says the replicas get no deployment network" "$out" "rootless: replicas of $P get a network namespace of their own"
ps_out=$(as_user "$W/ocibuild" service ps "$W/d.yaml" 2>&1)
[ "$(grep -c ' running ' <<<"$ps_out")" = 3 ] && t_ok "ps as the user shows three running replicas" || t_fail "ps as the user shows three running replicas" "$ps_out"
state=$(as_user runc --root "$W/xdg/ocibuild/runc" list -q 2>&1)
t_contains "the runtime's state is under \$XDG_RUNTIME_DIR" "$state" "$P-db-rep-1"
logs() { as_user "$W/ocibuild" service logs "$W/d.yaml" "$1" 2>&1; }
wait_log() { for _ in $(seq 50); do logs "$1" | grep -q "$2" && return 0; sleep 0.2; done; logs "$1"; return 1; }
t_check "the replica's root is uid 0 inside and image files are root's" wait_log "$P-db" "| 0 /bin/busybox"
t_check "a host_network replica fetches from another on 127.0.0.1:$PORT" wait_log "$P-fetch" "| served"
t_check "a replica without host_network has only lo" wait_log "$P-web" "| 0\$"
served=$W/data/services/$P/$P-db-rep-1/bundle/rootfs/srv/index.html
owner=$(stat -c %u "$served" 2>/dev/null)
[ "$owner" = $((subuid + 999)) ] && t_ok "container uid 1000 is subuid+999 on the host, in the replica's private rootfs copy" ||
  t_fail "container uid 1000 is subuid+999 on the host, in the replica's private rootfs copy" "owner '$owner' of $served"
grep -q " $W/" /proc/self/mountinfo && t_fail "no mount below the data dir (no overlay rootless)" "$(grep " $W/" /proc/self/mountinfo)" ||
  t_ok "no mount below the data dir (no overlay rootless)"

out=$(as_user "$W/ocibuild" service down "$W/d.yaml" --grace 0 2>&1); rc=$?
[ $rc = 0 ] && t_ok "down as the user" || t_fail "down as the user" "$out"
left=$(ls -A "$W/data/services/$P" 2>/dev/null; as_user runc --root "$W/xdg/ocibuild/runc" list -q 2>/dev/null)
[ -z "$left" ] && t_ok "down leaves no container and no replica dir (files of the range included)" ||
  t_fail "down leaves no container and no replica dir (files of the range included)" "$left"
t_done
