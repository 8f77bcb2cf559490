#!/bin/bash
# `ocibuild service up|ps|logs|down` with real runc: an umoci image runs as a service with cpu
# and memory limits (read back from the replica's cgroup on the host), a read-only bind mount, a
# tmpfs, a named volume that survives down/up and an anonymous one that does not; logs; up twice
# is idempotent; ps shows running with a pid, a finished job's exit code, absent after down;
# dependencies start first and stop last; a replica that fails to start is reported with runc's
# error and leaves nothing behind; down leaves no container, mount or bundle.
source "$(dirname "$0")/lib.sh"
# Replicas' roots (host ids of ocibuild-svc's range) pass through T_TMP to their bundles, as
# they pass through /var/lib to the default data dir.
chmod 711 "$T_TMP"
RUNC=$(command -v runc || echo /usr/sbin/runc)
BUSYBOX=$(command -v busybox || echo /bin/busybox)
if [ "$(id -u)" != 0 ]; then
  t_skip "service lifecycle with runc" "not root: runc needs root to create containers"; t_done; exit 0
fi
if [ ! -x "$RUNC" ] || [ ! -x "$BUSYBOX" ] || ! command -v umoci >/dev/null; then
  t_skip "service lifecycle with runc" "runc, busybox-static or umoci is not installed"; t_done; exit 0
fi

D=$T_TMP/data L=$T_TMP/layout U=$T_TMP/unpacked
# Unique names: container ids (<deployment>.<service>-rep-<n>) are global to runc's state root.
P=lc$$
DEP=$P-stack FAILDEP=$P-fail
svc() { $OCIBUILD service "$@" --data-dir "$D"; }
# Whatever happens: down both deployments, then anything of ours runc still knows (by bundle).
t_cleanup "$OCIBUILD service down $T_TMP/stack.yaml --data-dir $D --grace 0"
t_cleanup "$OCIBUILD service down $T_TMP/fail.yaml --data-dir $D --grace 0"
t_cleanup "for id in \$($RUNC list -q 2>/dev/null); do $RUNC state \$id 2>/dev/null | grep -q '\"bundle\": \"$D/' && $RUNC delete --force \$id; done"
t_cleanup "grep -o ' $T_TMP/[^ ]*' /proc/self/mountinfo | sort -r | xargs -r -n1 umount -l"

mkdir -p "$T_TMP/hostdata"
echo hostfile >"$T_TMP/hostdata/file"
if ! { umoci init --layout "$L" && umoci new --image "$L:1" && umoci unpack --image "$L:1" "$U" &&
       mkdir -p "$U/rootfs/bin" && cp "$BUSYBOX" "$U/rootfs/bin/busybox" &&
       for c in sh cat echo touch grep sleep ls; do ln -s busybox "$U/rootfs/bin/$c"; done &&
       umoci repack --image "$L:1" "$U"; } >"$T_TMP/umoci.log" 2>&1; then
  t_fail "umoci builds a busybox image" "$(cat "$T_TMP/umoci.log")"; t_done; exit 1
fi

# web depends on db; job exits 3 at once. web reports what it sees, records SIGTERM in the named
# volume, and keeps a counter of its starts there.
cat >"$T_TMP/stack.yaml" <<YAML
version: v1
deployment: $DEP
services:
  $P-web:
    image: { name: "oci:$L:1" }
    command:
      entrypoint: [/bin/sh, -c]
      args:
        - >-
          trap 'echo term > /cache/term; exit 0' TERM;
          echo started >> /cache/starts; echo "STARTS=\$(cat /cache/starts | grep -c started)";
          cat /data/file; touch /data/x 2>/dev/null && echo DATA=WRITABLE || echo DATA=READONLY;
          grep " /run/app " /proc/mounts;
          echo scratch > /scratch/s && echo SCRATCH=OK;
          echo to-stderr >&2;
          while :; do sleep 1; done
    resources: { cpu: 0.5, memory: 64Mi }
    storage:
      - { type: bind, source: $T_TMP/hostdata, target: /data, readonly: true }
      - { type: named, name: cache, target: /cache }
      - { type: anonymous, target: /scratch }
      - { type: tmpfs, target: /run/app, size: 1Mi }
    depends: [ { service: $P-db } ]
  $P-db:
    image: { name: "oci:$L:1" }
    command: { entrypoint: [/bin/sh, -c, "echo db ready; exec sleep 100000"] }
  $P-job:
    rtype: job
    image: { name: "oci:$L:1" }
    command: { entrypoint: [/bin/sh, -c, "echo job ran; exit 3"] }
YAML

out=$(timeout 120 $OCIBUILD service up "$T_TMP/stack.yaml" --data-dir "$D" 2>&1); rc=$?
[ $rc -eq 0 ] && t_ok "up starts the deployment" || t_fail "up starts the deployment" "$out"
db_line=$(grep -n "^$P-db-rep-1: started" <<<"$out" | cut -d: -f1)
web_line=$(grep -n "^$P-web-rep-1: started" <<<"$out" | cut -d: -f1)
[ -n "$db_line" ] && [ -n "$web_line" ] && [ "$db_line" -lt "$web_line" ] &&
  t_ok "a dependency starts before its dependent" || t_fail "a dependency starts before its dependent" "$out"

# Wait (bounded) for web's output and the job's exit.
for _ in $(seq 50); do
  logs=$(svc logs "$T_TMP/stack.yaml" 2>&1)
  [[ "$logs" == *SCRATCH=OK* ]] && [[ "$(svc ps "$T_TMP/stack.yaml" $P-job)" =~ stopped\ +-\ +[a-z-]+\ +3\  ]] && break
  sleep 0.2
done
ps_out=$(svc ps "$T_TMP/stack.yaml" 2>&1)
web_pid=$(awk -v id="$P-web-rep-1" '$1 == id && $2 == "running" {print $3}' <<<"$ps_out")
[[ "$web_pid" =~ ^[0-9]+$ ]] && kill -0 "$web_pid" 2>/dev/null &&
  t_ok "ps shows the replica running with its pid" || t_fail "ps shows the replica running with its pid" "$ps_out"
job_line=$(grep "^$P-job-rep-1 " <<<"$ps_out")
[[ "$job_line" =~ stopped\ +-\ +[a-z-]+\ +3\  ]] && t_ok "ps shows a finished job stopped with its exit code 3" ||
  t_fail "ps shows a finished job stopped with its exit code 3" "$ps_out"

t_contains "logs prefix each replica's lines" "$logs" "$P-db-rep-1 | db ready"
t_contains "logs keep the replica's stderr too" "$logs" "$P-web-rep-1 | to-stderr"
t_contains "the job's output is in its log" "$logs" "$P-job-rep-1 | job ran"
one=$(svc logs "$T_TMP/stack.yaml" $P-web --replica 1 2>&1)
[[ "$one" == *hostfile* ]] && [[ "$one" != *"| "* ]] && t_ok "logs of one replica are printed as they are" ||
  t_fail "logs of one replica are printed as they are" "$one"
t_contains "the read-only bind mount shows the host file" "$logs" "$P-web-rep-1 | hostfile"
t_contains "the read-only bind mount refuses writes" "$logs" "DATA=READONLY"
[ ! -e "$T_TMP/hostdata/x" ] && t_ok "nothing was written to the bind source" || t_fail "nothing was written to the bind source"
t_contains "the tmpfs is mounted" "$logs" "/run/app tmpfs rw,nosuid,nodev"
t_contains "the anonymous volume is writable" "$logs" "SCRATCH=OK"
[ -f "$D/anonymous/$DEP/$P-web-rep-1/2/s" ] && t_ok "the anonymous volume lives under the data dir" ||
  t_fail "the anonymous volume lives under the data dir" "$(find "$D/anonymous" 2>&1)"

# Limits, read from the replica's cgroup on the host (v1 hierarchies, or the v2 unified one).
cgroup_file() { # $1 = controller (v1), $2 = file
  local path
  path=$(awk -F: -v c="$1" '$2 == c || $2 ~ "(^|,)"c"(,|$)" {print $3; exit}' "/proc/$web_pid/cgroup")
  if [ -n "$path" ] && [ -r "/sys/fs/cgroup/$1$path/$2" ]; then cat "/sys/fs/cgroup/$1$path/$2"; return; fi
  for dir in "/sys/fs/cgroup/cpu,cpuacct$path" "/sys/fs/cgroup/$1$path"; do
    [ -r "$dir/$2" ] && { cat "$dir/$2"; return; }
  done
}
if [ -f "/proc/$web_pid/cgroup" ] && grep -q ':memory:' "/proc/$web_pid/cgroup"; then
  mem=$(cgroup_file memory memory.limit_in_bytes)
  cpu=$(cgroup_file cpu cpu.cfs_quota_us)
  [ "$mem" = 67108864 ] && t_ok "the memory limit is in the replica's cgroup (64Mi)" ||
    t_fail "the memory limit is in the replica's cgroup (64Mi)" "memory.limit_in_bytes=$mem; $(cat /proc/$web_pid/cgroup)"
  [ "$cpu" = 50000 ] && t_ok "the cpu quota is in the replica's cgroup (0.5 cores)" ||
    t_fail "the cpu quota is in the replica's cgroup (0.5 cores)" "cpu.cfs_quota_us=$cpu; $(cat /proc/$web_pid/cgroup)"
else
  path=$(cut -d: -f3 "/proc/$web_pid/cgroup" | head -1)
  mem=$(cat "/sys/fs/cgroup$path/memory.max" 2>/dev/null)
  cpu=$(cat "/sys/fs/cgroup$path/cpu.max" 2>/dev/null)
  [ "$mem" = 67108864 ] && t_ok "the memory limit is in the replica's cgroup (64Mi)" ||
    t_fail "the memory limit is in the replica's cgroup (64Mi)" "memory.max=$mem"
  [ "$cpu" = "50000 100000" ] && t_ok "the cpu quota is in the replica's cgroup (0.5 cores)" ||
    t_fail "the cpu quota is in the replica's cgroup (0.5 cores)" "cpu.max=$cpu"
fi

out=$(timeout 120 $OCIBUILD service up "$T_TMP/stack.yaml" --data-dir "$D" 2>&1); rc=$?
[ $rc -eq 0 ] && [[ "$out" == *"$P-web-rep-1: already running (pid $web_pid)"* ]] &&
  t_ok "up twice leaves a running replica alone" || t_fail "up twice leaves a running replica alone" "$out"
t_contains "up twice restarts a stopped replica" "$out" "$P-job-rep-1: restarted"
[ "$(grep -c started "$D/volumes/$DEP/cache/starts")" = 1 ] && t_ok "the running replica was not started again" ||
  t_fail "the running replica was not started again" "$(cat "$D/volumes/$DEP/cache/starts")"

start=$(date +%s)
out=$(timeout 120 $OCIBUILD service down "$T_TMP/stack.yaml" --data-dir "$D" --grace 2 2>&1); rc=$?
[ $rc -eq 0 ] && t_ok "down succeeds" || t_fail "down succeeds" "$out"
web_line=$(grep -n "^$P-web-rep-1: removed" <<<"$out" | cut -d: -f1)
db_line=$(grep -n "^$P-db-rep-1: removed" <<<"$out" | cut -d: -f1)
[ -n "$db_line" ] && [ -n "$web_line" ] && [ "$web_line" -lt "$db_line" ] &&
  t_ok "down stops a dependent before its dependency" || t_fail "down stops a dependent before its dependency" "$out"
[ "$(cat "$D/volumes/$DEP/cache/term" 2>/dev/null)" = term ] && t_ok "down sends SIGTERM first" ||
  t_fail "down sends SIGTERM first" "$(ls -la "$D/volumes/$DEP/cache" 2>&1)"
# db (sleep as pid 1 ignores SIGTERM) needs SIGKILL after the 2 s grace.
[ $(( $(date +%s) - start )) -ge 2 ] && t_ok "down waits the grace period before SIGKILL" ||
  t_fail "down waits the grace period before SIGKILL" "took $(( $(date +%s) - start )) s"
ps_out=$(svc ps "$T_TMP/stack.yaml" 2>&1)
[ "$(grep -c ' absent ' <<<"$ps_out")" = 3 ] && t_ok "ps shows every replica absent after down" ||
  t_fail "ps shows every replica absent after down" "$ps_out"

no_leftovers() { # $1 = label
  local ours mounts
  ours=$(for id in $($RUNC list -q 2>/dev/null); do $RUNC state "$id" 2>/dev/null | grep -q "\"bundle\": \"$D/" && echo "$id"; done)
  [ -z "$ours" ] && t_ok "$1: no container" || t_fail "$1: no container" "$ours"
  mounts=$(grep -F " $T_TMP/" /proc/self/mountinfo)
  [ -z "$mounts" ] && t_ok "$1: no mount" || t_fail "$1: no mount" "$mounts"
}
no_leftovers "after down"
[ ! -e "$D/services/$DEP" ] && t_ok "after down: no bundle or state dir" || t_fail "after down: no bundle or state dir" "$(find "$D/services")"
[ ! -e "$D/anonymous/$DEP" ] && t_ok "after down: anonymous volumes are gone" || t_fail "after down: anonymous volumes are gone" "$(find "$D/anonymous")"
[ -f "$D/volumes/$DEP/cache/starts" ] && t_ok "after down: the named volume is kept" || t_fail "after down: the named volume is kept"

out=$(timeout 120 $OCIBUILD service up "$T_TMP/stack.yaml" $P-web --data-dir "$D" 2>&1); rc=$?
[ $rc -eq 0 ] && [[ "$out" == *"$P-db-rep-1: started"* ]] && [[ "$out" != *"$P-job"* ]] &&
  t_ok "up SERVICE starts it with its dependencies only" || t_fail "up SERVICE starts it with its dependencies only" "$out"
for _ in $(seq 50); do
  logs=$(svc logs "$T_TMP/stack.yaml" $P-web 2>&1); [[ "$logs" == *SCRATCH=OK* ]] && break; sleep 0.2
done
t_contains "the named volume survives down/up" "$logs" "STARTS=2"
out=$(timeout 120 $OCIBUILD service down "$T_TMP/stack.yaml" --data-dir "$D" --grace 0 2>&1) ||
  t_fail "down after the second up" "$out"
no_leftovers "after the second down"

# A replica that cannot start: runc's error, and nothing of it left; what started before stays.
cat >"$T_TMP/fail.yaml" <<YAML
version: v1
deployment: $FAILDEP
services:
  $P-ok:
    image: { name: "oci:$L:1" }
    command: { entrypoint: [/bin/sleep, "100000"] }
  $P-bad:
    image: { name: "oci:$L:1" }
    command: { entrypoint: [/no/such/command] }
    storage: [ { type: anonymous, target: /scratch } ]
    depends: [ { service: $P-ok } ]
  $P-after:
    image: { name: "oci:$L:1" }
    command: { entrypoint: [/bin/sleep, "100000"] }
    depends: [ { service: $P-bad, condition: healthy, timeout: 120s } ]
YAML
start=$(date +%s)
out=$(timeout 120 $OCIBUILD service up "$T_TMP/fail.yaml" --data-dir "$D" 2>&1); rc=$?
took=$(( $(date +%s) - start ))
[ $rc -ne 0 ] && t_ok "up fails when a replica cannot start" || t_fail "up fails when a replica cannot start" "$out"
# its dependent fails at once, not after its 120 s timeout (up waited it out before)
[ $took -lt 30 ] && t_ok "up fails at once, not after the dependent's timeout" ||
  t_fail "up fails at once, not after the dependent's timeout" "took $took s: $out"
t_contains "the dependent's failure names the dependency that failed" "$out" "$P-after: dependency $P-bad failed: start $P-bad-rep-1"
t_contains "the failure names the replica" "$out" "start $P-bad-rep-1"
t_contains "the failure carries runc's error" "$out" "/no/such/command"
! "$RUNC" state "$FAILDEP.$P-bad-rep-1" >/dev/null 2>&1 && t_ok "the failed replica has no container" ||
  t_fail "the failed replica has no container"
[ ! -e "$D/services/$FAILDEP/$P-bad-rep-1" ] && t_ok "the failed replica has no bundle or state dir" ||
  t_fail "the failed replica has no bundle or state dir" "$(find "$D/services/$FAILDEP")"
[ ! -e "$D/anonymous/$FAILDEP/$P-bad-rep-1" ] && t_ok "the failed replica has no anonymous volume" ||
  t_fail "the failed replica has no anonymous volume" "$(find "$D/anonymous")"
mounts=$(grep -F "$P-bad-rep-1" /proc/self/mountinfo)
[ -z "$mounts" ] && t_ok "the failed replica has no mount" || t_fail "the failed replica has no mount" "$mounts"
[[ "$(svc ps "$T_TMP/fail.yaml" $P-ok)" == *running* ]] && t_ok "the replica started before it keeps running" ||
  t_fail "the replica started before it keeps running"
out=$(timeout 120 $OCIBUILD service down "$T_TMP/fail.yaml" --data-dir "$D" --grace 0 2>&1) ||
  t_fail "down of the failed deployment" "$out"
no_leftovers "after the failed deployment's down"
[ ! -e "$D/services/$FAILDEP" ] && t_ok "the failed deployment's state is gone" || t_fail "the failed deployment's state is gone" "$(find "$D/services")"
# down on a data dir that never saw an up: nothing to do, no error.
out=$($OCIBUILD service down "$T_TMP/stack.yaml" --data-dir "$T_TMP/fresh" 2>&1) &&
  t_ok "down of a deployment that was never up succeeds" || t_fail "down of a deployment that was never up succeeds" "$out"

# One up/down per deployment at a time: while someone holds the lock, up waits for it.
SCALEDEP=$P-scale
t_cleanup "$OCIBUILD service down $T_TMP/scale1.yaml --data-dir $D --grace 0"
for n in 2 1; do
  cat >"$T_TMP/scale$n.yaml" <<YAML
version: v1
deployment: $SCALEDEP
services:
  $P-s:
    image: { name: "oci:$L:1" }
    command: { entrypoint: [/bin/sleep, "100000"] }
    scale: { mode: fixed, replicas: $n }
YAML
done
mkdir -p "$D/services"
if command -v flock >/dev/null; then
  flock "$D/services/$SCALEDEP.lock" sleep 2 &
  holder=$!
  sleep 0.3
  start=$(date +%s%N)
  out=$(timeout 120 $OCIBUILD service up "$T_TMP/scale2.yaml" --data-dir "$D" 2>&1); rc=$?
  waited=$(( ($(date +%s%N) - start) / 1000000 ))
  wait $holder
  [ $rc -eq 0 ] && [[ "$out" == *"waiting for another up/down of $SCALEDEP"* ]] && [ $waited -ge 1000 ] &&
    t_ok "up waits while another up/down holds the deployment's lock" ||
    t_fail "up waits while another up/down holds the deployment's lock" "rc=$rc waited=${waited}ms: $out"
else
  t_skip "up waits while another up/down holds the deployment's lock" "flock(1) (util-linux) is missing"
  $OCIBUILD service up "$T_TMP/scale2.yaml" --data-dir "$D" >/dev/null 2>&1
fi
# Scaled down to one replica: down of the new document also removes replica 2.
out=$(timeout 120 $OCIBUILD service down "$T_TMP/scale1.yaml" --data-dir "$D" --grace 0 2>&1); rc=$?
[ $rc -eq 0 ] && [[ "$out" == *"$P-s-rep-2: removed"* ]] && [[ "$out" == *"$P-s-rep-1: removed"* ]] &&
  t_ok "down removes replicas the document no longer names" || t_fail "down removes replicas the document no longer names" "$out"
no_leftovers "after the scaled-down deployment's down"
[ ! -e "$D/services/$SCALEDEP" ] && t_ok "the scaled-down deployment's state is gone" ||
  t_fail "the scaled-down deployment's state is gone" "$(find "$D/services")"
t_done
