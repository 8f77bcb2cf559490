#!/bin/bash
# zlayer's keys that mean something on one node (issue 16 item 2), with real runc (crun too
# when installed) and an umoci busybox image: port_mappings published on 127.0.0.1 (a named
# host_port and one the kernel picks, reported by up; a host_ip that is not the host's and udp
# refused naming the key); extra_hosts resolved in a replica (host-gateway is the bridge);
# pid_mode and ipc_mode host show the host's processes and IPC namespace; init_container runs
# tini as PID 1, which reaps an orphan that a replica without it leaves a zombie; down sends
# stop_signal (SIGUSR1, seen by a trapping replica), or without it the image config's StopSignal
# (SIGUSR2), and waits stop_grace_period before SIGKILL;
# lifecycle.delete_on_exit removes a job that ended; as a normal user, port_mappings and
# extra_hosts through slirp4netns. Every wait is bounded.
source "$(dirname "$0")/lib.sh"
chmod 711 "$T_TMP"
RUNC=$(command -v runc || echo /usr/sbin/runc)
BUSYBOX=$(command -v busybox || echo /bin/busybox)
if [ "$(id -u)" != 0 ]; then
  t_skip "zlayer host keys" "not root: the deployment network needs CAP_NET_ADMIN"; t_done; exit 0
fi
if [ ! -x "$RUNC" ] || [ ! -x "$BUSYBOX" ] || ! command -v umoci >/dev/null || ! command -v ip >/dev/null; then
  t_skip "zlayer host keys" "runc, busybox-static, umoci or iproute2 is not installed"; t_done; exit 0
fi
if [ ! -x /usr/bin/tini-static ]; then
  t_skip "zlayer host keys" "tini is not installed (scripts/install-deps.sh)"; t_done; exit 0
fi
D=$T_TMP/data L=$T_TMP/layout U=$T_TMP/unpacked
P=hk$$ # container ids are global to the runtime's state root: names of our own
export OCIBUILD_PUBLISH_ADDRESS=127.0.0.1
t_cleanup "$OCIBUILD service down $T_TMP/a.yaml --data-dir $D --grace 0"
t_cleanup "$OCIBUILD service down $T_TMP/s.yaml --data-dir $D --grace 0"
t_cleanup "for id in \$($RUNC list -q 2>/dev/null); do $RUNC state \$id 2>/dev/null | grep -q '\"bundle\": \"$T_TMP/' && $RUNC delete --force \$id; done"
t_cleanup "grep -o ' $T_TMP/[^ ]*' /proc/self/mountinfo | sort -r | xargs -r -n1 umount -l"

if ! { umoci init --layout "$L" && umoci new --image "$L:1" && umoci unpack --image "$L:1" "$U" &&
       mkdir -p "$U/rootfs/bin" && cp "$BUSYBOX" "$U/rootfs/bin/busybox" &&
       for c in sh cat echo sleep httpd hostname grep mkdir ping ls; do ln -s busybox "$U/rootfs/bin/$c"; done &&
       umoci repack --image "$L:1" "$U"; } >"$T_TMP/umoci.log" 2>&1; then
  t_fail "umoci builds a busybox image" "$(cat "$T_TMP/umoci.log")"; t_done; exit 1
fi
# the same image with StopSignal SIGUSR2 in its config: the stop signal of a service without one
if ! umoci config --image "$L:1" --tag usr2 --config.stopsignal SIGUSR2 >>"$T_TMP/umoci.log" 2>&1; then
  t_fail "umoci sets an image's StopSignal" "$(cat "$T_TMP/umoci.log")"; t_done; exit 1
fi
free_port() { /usr/bin/python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
# wait_for SECONDS COMMAND...: polls every 0.2 s until the command succeeds (bounded).
wait_for() {
  local n=$(($1 * 5)); shift
  for _ in $(seq "$n"); do "$@" >/dev/null 2>&1 && return 0; sleep 0.2; done
  "$@"
}
log_has() { "$OCIBUILD" service logs "$1" "$2" --data-dir "$D" 2>&1 | grep -q "$3"; }
fetch() { timeout 5 "$BUSYBOX" wget -q -O - "$1" 2>&1; }
# zombies in the PID namespace of a replica's init (its host pid is in DIR/pid)
zombies() { # DEPLOYMENT ID
  local init ns n=0
  init=$(cat "$D/services/$1/$2/pid") && ns=$(readlink "/proc/$init/ns/pid") || return 1
  for p in /proc/[0-9]*; do
    [ "$(readlink "$p/ns/pid" 2>/dev/null)" = "$ns" ] && grep -q '^State:.*Z' "$p/status" 2>/dev/null && n=$((n + 1))
  done
  echo "$n"
}

PUB=$(free_port)
# an IPv6 host_ip when the host has ::1
PUB6=$(/usr/bin/python3 -c 'import socket; s=socket.socket(socket.AF_INET6); s.bind(("::1",0)); print(s.getsockname()[1])' 2>/dev/null)
V6_MAPPING=""
[ -n "$PUB6" ] && V6_MAPPING="- { host_port: $PUB6, container_port: 8080, host_ip: \"::1\" }"
HOST_INIT=$(cat /proc/1/comm)
# web: httpd on 8080 published twice; hosts: its /etc/hosts names resolved by ping; host-pid:
# the host's PID namespace; init and noinit: an orphan (the subshell's sleep) left to PID 1
cat >"$T_TMP/a.yaml" <<YAML
version: v1
deployment: $P-a
services:
  $P-web:
    image: { name: "oci:$L:1" }
    command:
      entrypoint: [/bin/sh, -c]
      args: ["mkdir -p /srv && echo served-by-web > /srv/index.html && exec httpd -f -p 8080 -h /srv"]
    port_mappings:
      - { host_port: $PUB, container_port: 8080, host_ip: 127.0.0.1 }
      - { container_port: 8080 }
      $V6_MAPPING
  $P-hosts:
    image: { name: "oci:$L:1" }
    extra_hosts: ["db.example:10.77.1.2", "gw.example:host-gateway", "v6.example:fd00::7"]
    command:
      entrypoint: [/bin/sh, -c]
      args: ["cat /etc/hosts; ping -c1 -W1 db.example; ping -c1 -W1 gw.example; exec sleep 600"]
  $P-hostpid:
    image: { name: "oci:$L:1" }
    pid_mode: host
    ipc_mode: host
    userns_mode: host
    command:
      entrypoint: [/bin/sh, -c]
      args: ["echo PID1=\$(cat /proc/1/comm); [ -d /proc/$$ ] && echo SEES-TEST-SHELL; echo IPC=\$(ls -l /proc/self/ns/ipc | grep -o 'ipc:.*'); exec sleep 600"]
  $P-init:
    image: { name: "oci:$L:1" }
    init_container: true
    command:
      entrypoint: [/bin/sh, -c]
      args: ["echo PID1=\$(cat /proc/1/comm) EXE=\$(ls -l /proc/1/exe | grep -o '/dev/init'); (sleep 0.3 &); exec sleep 600"]
  $P-noinit:
    image: { name: "oci:$L:1" }
    command:
      entrypoint: [/bin/sh, -c]
      args: ["(sleep 0.3 &); exec sleep 600"]
YAML
out=$("$OCIBUILD" service up "$T_TMP/a.yaml" --data-dir "$D" 2>&1); rc=$?
[ $rc = 0 ] && t_ok "up of the host-keys deployment" || t_fail "up of the host-keys deployment" "$out"
t_contains "up reports the port the kernel picked for port_mappings[1]" "$out" \
  "services.$P-web.port_mappings[1]: container port 8080 published on 127.0.0.1 port "
ANY=$(printf '%s\n' "$out" | grep -o "port_mappings\[1\]: container port 8080 published on 127.0.0.1 port [0-9]*" | grep -o '[0-9]*$')

# port_mappings
t_check "port_mappings: 127.0.0.1:$PUB answers from the replica" wait_for 10 sh -c "[ \"\$(timeout 5 $BUSYBOX wget -q -O - http://127.0.0.1:$PUB/)\" = served-by-web ]"
if [ -n "$ANY" ]; then
  t_check "port_mappings without host_port: 127.0.0.1:$ANY answers" wait_for 10 sh -c "[ \"\$(timeout 5 $BUSYBOX wget -q -O - http://127.0.0.1:$ANY/)\" = served-by-web ]"
else
  t_fail "port_mappings without host_port: the reported port answers" "no port in: $out"
fi

if [ -n "$PUB6" ]; then
  t_check "port_mappings: host_ip ::1 answers on [::1]:$PUB6" wait_for 10 sh -c "[ \"\$(timeout 5 $BUSYBOX wget -q -O - http://[::1]:$PUB6/)\" = served-by-web ]"
else
  t_skip "port_mappings: host_ip ::1" "the host has no IPv6 loopback"
fi

# extra_hosts
t_check "extra_hosts: db.example resolves in the replica" wait_for 10 log_has "$T_TMP/a.yaml" "$P-hosts" "PING db.example (10.77.1.2)"
hosts_log=$("$OCIBUILD" service logs "$T_TMP/a.yaml" "$P-hosts" --data-dir "$D" 2>&1)
gw=$(printf '%s\n' "$hosts_log" | grep -o 'PING gw.example ([0-9.]*)' | grep -o '[0-9.]*)' | tr -d ')')
web_addr=$(printf '%s\n' "$hosts_log" | grep -o "[0-9.]*	$P-web-1 " | cut -f1)
[ -n "$gw" ] && [ "${gw%.*}" = "${web_addr%.*}" ] && [ "${gw##*.}" = 1 ] &&
  t_ok "extra_hosts: host-gateway is the deployment bridge's address ($gw)" ||
  t_fail "extra_hosts: host-gateway is the deployment bridge's address" "gw=$gw web=$web_addr
$hosts_log"
t_contains "extra_hosts: an IPv6 entry is written" "$hosts_log" "fd00::7	v6.example"
t_contains "extra_hosts come after the deployment's names" "$hosts_log" "# extra_hosts"

# pid_mode: host
t_check "pid_mode host: the replica's PID 1 is the host's ($HOST_INIT)" wait_for 10 log_has "$T_TMP/a.yaml" "$P-hostpid" "PID1=$HOST_INIT"
t_check "pid_mode host: the replica sees the test's shell" log_has "$T_TMP/a.yaml" "$P-hostpid" "SEES-TEST-SHELL"
HOST_IPC=$(readlink /proc/self/ns/ipc | tr -dc 0-9)
t_check "ipc_mode host: the replica is in the host's IPC namespace ($HOST_IPC)" log_has "$T_TMP/a.yaml" "$P-hostpid" "IPC=ipc:.$HOST_IPC"
init_ipc=$(readlink "/proc/$(cat "$D/services/$P-a/$P-init-rep-1/pid")/ns/ipc" | tr -dc 0-9)
[ -n "$init_ipc" ] && [ "$init_ipc" != "$HOST_IPC" ] && t_ok "without ipc_mode host a replica has its own" ||
  t_fail "without ipc_mode host a replica has its own" "$init_ipc"

# init_container
t_check "init_container: PID 1 is tini, run from /dev/init" wait_for 10 log_has "$T_TMP/a.yaml" "$P-init" "PID1=init EXE=/dev/init"
sleep 1.5 # the orphans' sleep 0.3 has ended
z=$(zombies "$P-a" "$P-init-rep-1")
[ "$z" = 0 ] && t_ok "init_container: tini reaps an orphan" || t_fail "init_container: tini reaps an orphan" "zombies: $z"
z=$(zombies "$P-a" "$P-noinit-rep-1")
[ "$z" = 1 ] && t_ok "without init_container the orphan stays a zombie (the check can fail)" ||
  t_fail "without init_container the orphan stays a zombie (the check can fail)" "zombies: $z"

out=$("$OCIBUILD" service down "$T_TMP/a.yaml" --data-dir "$D" --grace 0 2>&1) &&
  t_ok "down of the host-keys deployment" || t_fail "down of the host-keys deployment" "$out"
fetch "http://127.0.0.1:$PUB/" >/dev/null && t_fail "after down nothing listens on $PUB" ||
  t_ok "after down nothing listens on $PUB"

# refusals, each naming the key
refuse() { # NAME NEEDLE PORT-MAPPING
  cat >"$T_TMP/r.yaml" <<YAML
version: v1
deployment: $P-r
services:
  $P-r:
    image: { name: "oci:$L:1" }
    command: { entrypoint: [/bin/sh, -c], args: ["exec sleep 600"] }
    port_mappings: [ $3 ]
YAML
  local out
  if out=$("$OCIBUILD" service up "$T_TMP/r.yaml" --data-dir "$D" 2>&1); then
    t_fail "$1" "accepted: $3"
  else
    t_contains "$1" "$out" "$2"
  fi
  "$OCIBUILD" service down "$T_TMP/r.yaml" --data-dir "$D" --grace 0 >/dev/null 2>&1
}
refuse "a host_ip that is not the host's is refused" \
  "services.$P-r.port_mappings[0]: 192.0.2.1 is not an address of this host" \
  "{ host_port: $PUB, container_port: 80, host_ip: 192.0.2.1 }"
refuse "a udp port mapping is refused naming the key" \
  "services.$P-r.port_mappings[0]: protocol udp cannot be published" \
  "{ host_port: $PUB, container_port: 53, protocol: udp }"

# lifecycle.delete_on_exit: a job that ended is removed (container, state dir); one without it
# is kept for ps
cat >"$T_TMP/j.yaml" <<YAML
version: v1
deployment: $P-j
services:
  $P-gone:
    rtype: job
    image: { name: "oci:$L:1" }
    lifecycle: { delete_on_exit: true }
    command: { entrypoint: [/bin/sh, -c], args: ["echo done"] }
  $P-kept:
    rtype: job
    image: { name: "oci:$L:1" }
    command: { entrypoint: [/bin/sh, -c], args: ["echo done"] }
YAML
t_cleanup "$OCIBUILD service down $T_TMP/j.yaml --data-dir $D --grace 0"
out=$("$OCIBUILD" service up "$T_TMP/j.yaml" --data-dir "$D" 2>&1) || t_fail "up of two jobs" "$out"
t_check "delete_on_exit: the ended job's replica dir is removed" wait_for 10 sh -c "[ ! -e $D/services/$P-j/$P-gone-rep-1 ]"
"$RUNC" state "$P-j.$P-gone-rep-1" >/dev/null 2>&1 && t_fail "delete_on_exit: its container is deleted" ||
  t_ok "delete_on_exit: its container is deleted"
t_check "without delete_on_exit the ended job is kept (ps shows its exit)" wait_for 10 sh -c \
  "$OCIBUILD service ps $T_TMP/j.yaml --data-dir $D 2>&1 | grep $P-kept-rep-1 | grep -q 'exit 0\|exited\|done'"
"$OCIBUILD" service down "$T_TMP/j.yaml" --data-dir "$D" --grace 0 >/dev/null 2>&1

# stop_signal and stop_grace_period, with every runtime installed: each replica writes what it
# got into a bind-mounted dir of the test's (down removes the replica and its log)
runtimes=runc
command -v crun >/dev/null && runtimes="runc crun"
OUT=$T_TMP/out
mkdir -p "$OUT" && chmod 777 "$OUT"
for rt in $runtimes; do
  rm -f "$OUT"/*
  cat >"$T_TMP/s.yaml" <<YAML
version: v1
deployment: $P-s
services:
  $P-usr1:
    image: { name: "oci:$L:1" }
    stop_signal: SIGUSR1
    storage: [ { type: bind, source: $OUT, target: /out } ]
    command:
      entrypoint: [/bin/sh, -c]
      args: ["trap 'echo GOT-USR1 > /out/usr1; exit 0' USR1; echo READY; while :; do sleep 0.1; done"]
  $P-usr1-rep:
    image: { name: "oci:$L:1" }
    storage: [ { type: bind, source: $OUT, target: /out } ]
    command:
      entrypoint: [/bin/sh, -c]
      args: ["trap 'echo WRONG > /out/wrong; exit 0' USR1; trap 'exit 0' TERM; echo READY; while :; do sleep 0.1; done"]
  $P-stubborn:
    image: { name: "oci:$L:1" }
    stop_signal: USR1
    stop_grace_period: 3s
    storage: [ { type: bind, source: $OUT, target: /out } ]
    command:
      entrypoint: [/bin/sh, -c]
      args: ["trap 'echo IGNORED-USR1 > /out/stubborn' USR1; echo READY; while :; do sleep 0.1; done"]
  $P-imgsig:
    image: { name: "oci:$L:usr2" }
    storage: [ { type: bind, source: $OUT, target: /out } ]
    command:
      entrypoint: [/bin/sh, -c]
      args: ["trap 'echo GOT-USR2 > /out/imgsig; exit 0' USR2; trap 'exit 0' TERM; echo READY; while :; do sleep 0.1; done"]
YAML
  out=$("$OCIBUILD" service up "$T_TMP/s.yaml" --data-dir "$D" --runtime "$rt" 2>&1) ||
    t_fail "$rt: up of the stop-signal deployment" "$out"
  wait_for 10 log_has "$T_TMP/s.yaml" "$P-usr1" READY >/dev/null
  wait_for 10 log_has "$T_TMP/s.yaml" "$P-stubborn" READY >/dev/null
  if [ "$rt" = runc ]; then # stop and restart take the same path as down
    out=$("$OCIBUILD" service stop "$T_TMP/s.yaml" "$P-usr1" --data-dir "$D" 2>&1)
    [ "$(cat "$OUT/usr1" 2>/dev/null)" = GOT-USR1 ] && t_ok "stop sends stop_signal SIGUSR1" ||
      t_fail "stop sends stop_signal SIGUSR1" "$(ls -l "$OUT"): $out"
    rm -f "$OUT/usr1"
    out=$("$OCIBUILD" service restart "$T_TMP/s.yaml" "$P-usr1" --data-dir "$D" 2>&1)
    wait_for 10 log_has "$T_TMP/s.yaml" "$P-usr1" READY >/dev/null
    out=$("$OCIBUILD" service restart "$T_TMP/s.yaml" "$P-usr1" --data-dir "$D" 2>&1)
    [ "$(cat "$OUT/usr1" 2>/dev/null)" = GOT-USR1 ] && t_ok "restart sends stop_signal SIGUSR1" ||
      t_fail "restart sends stop_signal SIGUSR1" "$(ls -l "$OUT"): $out"
    rm -f "$OUT/usr1"
    wait_for 10 sh -c "$OCIBUILD service ps $T_TMP/s.yaml --data-dir $D 2>&1 | grep $P-usr1-rep-1 | grep -q running"
    # a recreating up stops the old replica with the signal it was made with (as Docker
    # stops a container with its own config's), not the edited document's SIGTERM
    sed -i "s/    stop_signal: SIGUSR1/    stop_signal: SIGTERM\n    env: { EDITED: \"1\" }/" "$T_TMP/s.yaml"
    out=$("$OCIBUILD" service up "$T_TMP/s.yaml" --data-dir "$D" 2>&1)
    [ "$(cat "$OUT/usr1" 2>/dev/null)" = GOT-USR1 ] &&
      t_ok "a recreating up stops the old replica with its own stop_signal" ||
      t_fail "a recreating up stops the old replica with its own stop_signal" "$(ls -l "$OUT"): $out"
    rm -f "$OUT/usr1"
    sed -i "s/    stop_signal: SIGTERM/    stop_signal: SIGUSR1/" "$T_TMP/s.yaml"
    out=$("$OCIBUILD" service up "$T_TMP/s.yaml" --data-dir "$D" 2>&1)
    rm -f "$OUT/usr1"
    wait_for 10 sh -c "$OCIBUILD service ps $T_TMP/s.yaml --data-dir $D 2>&1 | grep $P-usr1-rep-1 | grep -q running"
  fi
  start=$(date +%s%N)
  out=$("$OCIBUILD" service down "$T_TMP/s.yaml" "$P-usr1" --data-dir "$D" --runtime "$rt" 2>&1)
  ms=$((($(date +%s%N) - start) / 1000000))
  [ "$(cat "$OUT/usr1" 2>/dev/null)" = GOT-USR1 ] && t_ok "$rt: down sends stop_signal SIGUSR1" ||
    t_fail "$rt: down sends stop_signal SIGUSR1" "$(ls -l "$OUT"): $out"
  [ "$ms" -lt 9000 ] && t_ok "$rt: a replica that exits on it is down before the default grace (${ms} ms)" ||
    t_fail "$rt: a replica that exits on it is down before the default grace" "${ms} ms: $out"
  out=$("$OCIBUILD" service down "$T_TMP/s.yaml" "$P-usr1-rep" --data-dir "$D" --runtime "$rt" 2>&1)
  # no stop_signal: the image config's StopSignal, as Docker does (SIGTERM would end it silently)
  wait_for 10 log_has "$T_TMP/s.yaml" "$P-imgsig" READY >/dev/null
  out=$("$OCIBUILD" service down "$T_TMP/s.yaml" "$P-imgsig" --data-dir "$D" --runtime "$rt" 2>&1)
  [ "$(cat "$OUT/imgsig" 2>/dev/null)" = GOT-USR2 ] &&
    t_ok "$rt: without stop_signal, down sends the image's StopSignal SIGUSR2" ||
    t_fail "$rt: without stop_signal, down sends the image's StopSignal SIGUSR2" "$(ls -l "$OUT"): $out"
  # the default grace (10 s) would make this at least 10 s; a loaded machine adds to the 3 s
  start=$(date +%s%N)
  out=$("$OCIBUILD" service down "$T_TMP/s.yaml" "$P-stubborn" --data-dir "$D" --runtime "$rt" 2>&1)
  ms=$((($(date +%s%N) - start) / 1000000))
  "$OCIBUILD" service down "$T_TMP/s.yaml" --data-dir "$D" --runtime "$rt" --grace 0 >/dev/null 2>&1
  [ ! -e "$OUT/wrong" ] && t_ok "$rt: $P-usr1-rep-rep-1 gets its own service's signal, not $P-usr1's" ||
    t_fail "$rt: $P-usr1-rep-rep-1 gets its own service's signal, not $P-usr1's" "$(cat "$OUT/wrong")"
  [ "$(cat "$OUT/stubborn" 2>/dev/null)" = IGNORED-USR1 ] &&
    t_ok "$rt: the stubborn replica got SIGUSR1 too" || t_fail "$rt: the stubborn replica got SIGUSR1 too" "$out"
  [ "$ms" -ge 2800 ] && [ "$ms" -lt 9800 ] &&
    t_ok "$rt: it is killed after stop_grace_period 3s, not the default 10 s (${ms} ms)" ||
    t_fail "$rt: it is killed after stop_grace_period 3s, not the default 10 s" "${ms} ms: $out"
done

# A normal user's deployment (slirp4netns, one shared namespace): port_mappings forwarded to
# 127.0.0.1, extra_hosts with host-gateway = slirp4netns's 10.0.2.2; host_port 0 and
# userns_mode host refused naming the key. The user and its subuids as test_service_rootless.sh
# makes them.
rootless() {
  local tool
  for tool in newuidmap runuser slirp4netns; do
    command -v $tool >/dev/null || { t_skip "rootless host keys" "$tool missing"; return; }
  done
  [ -c /dev/net/tun ] || { t_skip "rootless host keys" "/dev/net/tun missing"; return; }
  chmod 0666 /dev/net/tun
  local user=obi-rootless
  id "$user" >/dev/null 2>&1 ||
    useradd --system --create-home --home-dir /var/lib/$user --shell /bin/sh "$user" || { t_fail "create the test user"; return; }
  grep -q "^$user:" /etc/subuid || echo "$user:200000:65536" >>/etc/subuid
  grep -q "^$user:" /etc/subgid || echo "$user:200000:65536" >>/etc/subgid
  local W
  W=$(mktemp -d /tmp/obi-host-keys-rl.XXXXXX)
  chmod 755 "$W" && mkdir -p "$W/xdg" "$W/home" && cp "$OCIBUILD" "$W/ocibuild"
  cp -a "$L" "$W/layout" && chown -R "$user" "$W"
  as_user() { runuser -u "$user" -- env -i PATH=/usr/local/bin:/usr/bin:/bin:/usr/sbin:/sbin HOME="$W/home" XDG_RUNTIME_DIR="$W/xdg" OCIBUILD_DATA_DIR="$W/data" "$@"; }
  t_cleanup "runuser -u $user -- env -i PATH=/usr/bin:/bin:/usr/sbin:/sbin XDG_RUNTIME_DIR=$W/xdg OCIBUILD_DATA_DIR=$W/data $W/ocibuild service down $W/r.yaml --grace 0; rm -rf $W"
  local host_port container_port out
  host_port=$(free_port) container_port=$(free_port)
  cat >"$W/r.yaml" <<YAML
version: v1
deployment: $P-rl
services:
  $P-rlweb:
    image: { name: "oci:$W/layout:1" }
    extra_hosts: ["db.example:10.77.1.2", "gw.example:host-gateway"]
    port_mappings: [ { host_port: $host_port, container_port: $container_port } ]
    command:
      entrypoint: [/bin/sh, -c]
      args: ["ping -c1 -W1 db.example; ping -c1 -W1 gw.example; mkdir -p /srv && echo rootless-mapped > /srv/index.html && exec httpd -f -p $container_port -h /srv"]
YAML
  out=$(as_user "$W/ocibuild" service up "$W/r.yaml" 2>&1) && t_ok "rootless: up with port_mappings and extra_hosts" ||
    t_fail "rootless: up with port_mappings and extra_hosts" "$out"
  t_check "rootless: port_mappings answers on 127.0.0.1:$host_port" wait_for 10 sh -c "[ \"\$(timeout 5 $BUSYBOX wget -q -O - http://127.0.0.1:$host_port/)\" = rootless-mapped ]"
  rl_log() { as_user "$W/ocibuild" service logs "$W/r.yaml" "$P-rlweb" 2>&1 | grep -q "$1"; }
  t_check "rootless: extra_hosts resolve in the replica" wait_for 10 rl_log "PING db.example (10.77.1.2)"
  t_check "rootless: host-gateway is slirp4netns's 10.0.2.2" rl_log "PING gw.example (10.0.2.2)"
  as_user "$W/ocibuild" service down "$W/r.yaml" --grace 0 >/dev/null 2>&1
  sed -i "s/host_port: $host_port, //" "$W/r.yaml"
  out=$(as_user "$W/ocibuild" service up "$W/r.yaml" 2>&1) && t_fail "rootless: a port mapping without host_port is refused" "$out" ||
    t_contains "rootless: a port mapping without host_port is refused" "$out" "services.$P-rlweb.port_mappings[0]: a normal user's deployment needs a host_port"
  as_user "$W/ocibuild" service down "$W/r.yaml" --grace 0 >/dev/null 2>&1
  sed -i "s/    port_mappings: .*/    userns_mode: host/" "$W/r.yaml"
  out=$(as_user "$W/ocibuild" service up "$W/r.yaml" 2>&1) && t_fail "rootless: userns_mode host is refused" "$out" ||
    t_contains "rootless: userns_mode host is refused" "$out" "services.$P-rlweb.userns_mode: host: a normal user's replicas run in a user namespace"
  as_user "$W/ocibuild" service down "$W/r.yaml" --grace 0 >/dev/null 2>&1
}
rootless
t_done
