#!/bin/bash
# `service exec` and command health checks in replicas that have a user namespace and join the
# deployment network's namespace by path (docs/service.md, "exec into a replica"), which runc
# 1.1.5's own exec refuses ("failed to setns into net namespace"): as root with runc and crun
# (a replica on the deployment's bridge) and as a normal user with subuids (a replica in the
# rootless holder's user namespace, on its bridge). The command runs as the process spec says
# (uid 0 inside, the init's capabilities, no_new_privs, its cgroups, its eth0, its hostname), its
# exit code is exec's, no descriptor of the caller's but 0-2 reaches it, a missing command is
# 127 with the reason, and a command health check turns healthy once exec made its file.
source "$(dirname "$0")/lib.sh"
chmod 711 "$T_TMP"
BUSYBOX=$(command -v busybox || echo /bin/busybox)
[ "$(id -u)" -eq 0 ] || { t_skip "service exec" "must start as root (bridges; the rootless part creates its user)"; t_done; exit 0; }
for tool in runc umoci ip; do
  command -v $tool >/dev/null || { t_skip "service exec" "$tool missing"; t_done; exit 0; }
done
[ -x "$BUSYBOX" ] || { t_skip "service exec" "busybox-static missing"; t_done; exit 0; }
P=ex$$
L=$T_TMP/layout U=$T_TMP/unpacked
if ! { umoci init --layout "$L" && umoci new --image "$L:1" && umoci unpack --rootless --image "$L:1" "$U" &&
       mkdir -p "$U/rootfs/bin" && cp "$BUSYBOX" "$U/rootfs/bin/busybox" &&
       for c in sh cat echo sleep grep id ls hostname test touch mkdir; do ln -s busybox "$U/rootfs/bin/$c"; done &&
       umoci repack --image "$L:1" "$U"; } >"$T_TMP/umoci.log" 2>&1; then
  t_fail "umoci builds a busybox image" "$(cat "$T_TMP/umoci.log")"; t_done; exit 1
fi
chmod -R a+rX "$L"

deployment() { # FILE NAME
  cat >"$1" <<YAML
version: v1
deployment: $2
services:
  s:
    image: { name: "oci:$L:1" }
    command: { entrypoint: [/bin/sh, -c, "mkdir -p /tmp; exec sleep 100000"] }
    scale: { mode: fixed, replicas: 2 }
    health:
      interval: 200ms
      timeout: 2s
      retries: 100
      check: { type: command, command: "test -e /tmp/ok" }
YAML
}

# the checks, for one runtime as root or as the user; $EXEC runs `service exec ... s`
check_exec() { # LABEL NETDEV
  local label=$1 dev=$2 out rc status
  out=$($EXEC -- sh -c 'id -u; grep -E "^(CapEff|NoNewPrivs)" /proc/self/status; grep -c '"$dev"' /proc/net/dev; hostname' 9</etc/hostname 2>&1); rc=$?
  [ $rc = 0 ] && t_ok "$label: exec runs in the replica" || t_fail "$label: exec runs in the replica" "rc=$rc: $out"
  [ "$(sed -n 1p <<<"$out")" = 0 ] && t_ok "$label: the command is uid 0 inside" || t_fail "$label: the command is uid 0 inside" "$out"
  t_contains "$label: the command has the replica's capabilities" "$out" "CapEff:	$(grep CapEff /proc/"$INIT"/status | cut -f2)"
  t_contains "$label: the command has no_new_privs" "$out" "NoNewPrivs:	1"
  [ "$(sed -n 4p <<<"$out")" = 1 ] && t_ok "$label: the command sees the replica's $dev" || t_fail "$label: the command sees the replica's $dev" "$out"
  t_contains "$label: the command is in replica 1 (its hostname)" "$out" "s-rep-1"
  out=$($EXEC -- sh -c 'ls /proc/self/fd; [ "$(cat /proc/self/cgroup)" = "$(cat /proc/1/cgroup)" ] && echo same-cgroups' 9</etc/hostname 2>&1)
  [[ "$out" != *9* ]] && t_ok "$label: no descriptor of the caller's reaches the command" || t_fail "$label: no descriptor of the caller's reaches the command" "$out"
  t_contains "$label: the command is in the init's cgroups" "$out" "same-cgroups"
  $EXEC -- sh -c 'exit 7' >/dev/null 2>&1; rc=$?
  [ $rc = 7 ] && t_ok "$label: exec exits with the command's code" || t_fail "$label: exec exits with the command's code" "rc=$rc"
  out=$($EXEC -- /no/such/command 2>&1); rc=$?
  [ $rc = 127 ] && [[ "$out" == *"/no/such/command"* ]] && t_ok "$label: a missing command is 127, named" ||
    t_fail "$label: a missing command is 127, named" "rc=$rc: $out"
  out=$($EXEC --replica 2 -- hostname 2>&1)
  [ "$out" = s-rep-2 ] && t_ok "$label: --replica 2 runs in replica 2" || t_fail "$label: --replica 2 runs in replica 2" "$out"
  # the health check: starting until exec makes /tmp/ok, then healthy
  status=$($PS 2>&1)
  [[ "$status" == *starting* ]] && t_ok "$label: the command health check starts as starting" || t_fail "$label: the command health check starts as starting" "$status"
  $EXEC -- touch /tmp/ok >/dev/null 2>&1
  for _ in $(seq 50); do status=$($PS 2>&1); grep -q 's-rep-1 .* healthy' <<<"$status" && break; sleep 0.2; done
  grep -q 's-rep-1 .* healthy' <<<"$status" && t_ok "$label: the command health check passes in the replica" ||
    t_fail "$label: the command health check passes in the replica" "$status $(tail -5 "$LOG" 2>/dev/null)"
}

# ---- as root: a replica on the deployment's bridge, with runc and with crun ----
for rt in runc crun; do
  command -v $rt >/dev/null || { t_skip "service exec with $rt" "$rt missing"; continue; }
  D=$T_TMP/data-$rt
  deployment "$T_TMP/$rt.yaml" "$P-$rt"
  t_cleanup "$OCIBUILD service down $T_TMP/$rt.yaml --data-dir $D --runtime $rt --grace 0"
  out=$(timeout 60 "$OCIBUILD" service up "$T_TMP/$rt.yaml" --data-dir "$D" --runtime $rt 2>&1) ||
    { t_fail "$rt: up" "$out"; continue; }
  INIT=$(cat "$D/services/$P-$rt/s-rep-1/pid") LOG=$D/services/$P-$rt/supervisor.log
  EXEC="timeout 20 $OCIBUILD service exec $T_TMP/$rt.yaml s --data-dir $D --runtime $rt"
  PS="$OCIBUILD service ps $T_TMP/$rt.yaml --data-dir $D --runtime $rt"
  check_exec "$rt" eth0
  out=$(timeout 60 "$OCIBUILD" service down "$T_TMP/$rt.yaml" --data-dir "$D" --runtime $rt --grace 0 2>&1) || t_fail "$rt: down" "$out"
done

# ---- as a normal user with subuids: a replica in the rootless holder's user namespace ----
for tool in newuidmap useradd runuser unshare slirp4netns; do
  command -v $tool >/dev/null || { t_skip "service exec rootless" "$tool missing"; t_done; exit 0; }
done
unshare --help | grep -q -- --map-auto || { t_skip "service exec rootless" "unshare has no --map-auto"; t_done; exit 0; }
[ -c /dev/net/tun ] || { t_skip "service exec rootless" "/dev/net/tun missing"; t_done; exit 0; }
chmod 0666 /dev/net/tun
USER_NAME=obi-rootless # the same user as test_service_rootless.sh
id "$USER_NAME" >/dev/null 2>&1 ||
  useradd --system --create-home --home-dir /var/lib/$USER_NAME --shell /bin/sh "$USER_NAME" || { t_fail "create test user"; t_done; exit; }
grep -q "^$USER_NAME:" /etc/subuid || echo "$USER_NAME:200000:65536" >> /etc/subuid
grep -q "^$USER_NAME:" /etc/subgid || echo "$USER_NAME:200000:65536" >> /etc/subgid
W=$T_TMP/user
mkdir -p "$W/xdg" "$W/home"
cp "$OCIBUILD" "$W/ocibuild"
deployment "$W/d.yaml" "$P-user"
chown -R "$USER_NAME" "$W"
as_user() { runuser -u "$USER_NAME" -- env -i PATH=/usr/local/bin:/usr/bin:/bin:/usr/sbin:/sbin HOME="$W/home" XDG_RUNTIME_DIR="$W/xdg" OCIBUILD_DATA_DIR="$W/data" "$@"; }
t_cleanup "runuser -u $USER_NAME -- env -i PATH=/usr/bin:/bin:/usr/sbin:/sbin XDG_RUNTIME_DIR=$W/xdg OCIBUILD_DATA_DIR=$W/data $W/ocibuild service down $W/d.yaml --grace 0"
out=$(as_user timeout 60 "$W/ocibuild" service up "$W/d.yaml" 2>&1) || t_fail "rootless: up" "$out"
INIT=$(cat "$W/data/services/$P-user/s-rep-1/pid") LOG=$W/data/services/$P-user/supervisor.log
EXEC="as_user timeout 20 $W/ocibuild service exec $W/d.yaml s"
PS="as_user $W/ocibuild service ps $W/d.yaml"
check_exec rootless eth0
out=$(as_user timeout 60 "$W/ocibuild" service down "$W/d.yaml" --grace 0 2>&1) || t_fail "rootless: down" "$out"
t_done
