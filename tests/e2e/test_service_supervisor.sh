#!/bin/bash
# The deployment's supervisor with real runc and an umoci-built busybox image: `db` (busybox
# httpd, up only after 2 s) with an http health check, `web` depending on `db: healthy` (started
# after db is healthy, by the supervisor log's timestamps) with a command health check, a job
# (exit code and duration in ps), a cron every 2 seconds (two runs seen); a killed replica is
# restarted; init steps (wait_tcp on the host, init.run in a one-off container; a failing one
# keeps its service down); editing web's env makes `up` recreate web only; a second deployment
# with its own `db`; exec; logs --tail, --timestamps and -f (bounded); stop keeps a replica down, restart brings it back;
# ps --json; ls; a supervisor killed with SIGKILL leaks nothing: `up` adopts the running
# replicas and `down -v` removes containers, mounts, state and named volumes.
source "$(dirname "$0")/lib.sh"
chmod 711 "$T_TMP"
RUNC=$(command -v runc || echo /usr/sbin/runc)
BUSYBOX=$(command -v busybox || echo /bin/busybox)
if [ "$(id -u)" != 0 ]; then
  t_skip "service supervisor with runc" "not root: runc needs root to create containers"; t_done; exit 0
fi
if [ ! -x "$RUNC" ] || [ ! -x "$BUSYBOX" ] || ! command -v umoci >/dev/null; then
  t_skip "service supervisor with runc" "runc, busybox-static or umoci is not installed"; t_done; exit 0
fi

D=$T_TMP/data L=$T_TMP/layout U=$T_TMP/unpacked
P=sv$$
A=$T_TMP/a.yaml B=$T_TMP/b.yaml
svc() { timeout 120 $OCIBUILD service "$@" --data-dir "$D"; }
t_cleanup "$OCIBUILD service down $A --data-dir $D --grace 0 -v"
t_cleanup "$OCIBUILD service down $B --data-dir $D --grace 0 -v"
t_cleanup "for id in \$($RUNC list -q 2>/dev/null); do $RUNC state \$id 2>/dev/null | grep -q '\"bundle\": \"$D/' && $RUNC delete --force \$id; done"
t_cleanup "grep -o ' $T_TMP/[^ ]*' /proc/self/mountinfo | sort -r | xargs -r -n1 umount -l"

if ! { umoci init --layout "$L" && umoci new --image "$L:1" && umoci unpack --image "$L:1" "$U" &&
       mkdir -p "$U/rootfs/bin" && cp "$BUSYBOX" "$U/rootfs/bin/busybox" &&
       for c in sh cat echo touch sleep mkdir httpd test date; do ln -s busybox "$U/rootfs/bin/$c"; done &&
       umoci repack --image "$L:1" "$U"; } >"$T_TMP/umoci.log" 2>&1; then
  t_fail "umoci builds a busybox image" "$(cat "$T_TMP/umoci.log")"; t_done; exit 1
fi

# init.wait_tcp probes from the host: a listener of ours on a free loopback port.
/usr/bin/python3 -c 'import socket,time,sys
s=socket.socket(); s.bind(("127.0.0.1",0)); s.listen(8); print(s.getsockname()[1], flush=True)
t=time.time()
while time.time()-t<120:
    s.settimeout(1)
    try: s.accept()[0].close()
    except Exception: pass' >"$T_TMP/port" &
LISTENER=$!
t_cleanup "kill $LISTENER"
for _ in $(seq 50); do [ -s "$T_TMP/port" ] && break; sleep 0.1; done
PORT=$(cat "$T_TMP/port")
# db's httpd listens on the host's loopback (host_network): a port free now
DBPORT=$(/usr/bin/python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')

write_a() { # $1 = web's GREETING
  cat >"$A" <<YAML
version: v1
deployment: $P-a
services:
  db:
    image: { name: "oci:$L:1" }
    command:
      entrypoint: [/bin/sh, -c]
      args: ["mkdir -p /www && echo db-page > /www/index.html && sleep 2 && echo httpd up && exec httpd -f -p 127.0.0.1:$DBPORT -h /www"]
    # the host's network here (command checks on a network replica: test_service_exec.sh)
    host_network: true
    storage: [ { type: named, name: dbdata, target: /var/db } ]
    health:
      interval: 200ms
      timeout: 1s
      retries: 1
      check: { type: http, url: "http://127.0.0.1:$DBPORT/", expect_status: 200 }
  web:
    image: { name: "oci:$L:1" }
    env: { GREETING: "$1" }
    command: { entrypoint: [/bin/sh, -c, "echo web \$GREETING; mkdir -p /tmp && touch /tmp/ok; exec sleep 100000"] }
    host_network: true
    depends: [ { service: db, condition: healthy, timeout: 30s } ]
    init:
      steps:
        - { id: probe, uses: init.wait_tcp, with: { host: 127.0.0.1, port: $PORT }, timeout: 10s }
        - { id: prepare, uses: init.run, with: { command: "echo init-ran-in-a-container" } }
    health:
      interval: 300ms
      check: { type: command, command: "test -e /tmp/ok" }
  job:
    rtype: job
    image: { name: "oci:$L:1" }
    command: { entrypoint: [/bin/sh, -c, "echo job ran; sleep 1; exit 4"] }
  tick:
    rtype: cron
    schedule: "*/2 * * * * *"
    image: { name: "oci:$L:1" }
    command: { entrypoint: [/bin/sh, -c, "echo tick"] }
YAML
}
write_a hello
cat >"$B" <<YAML
version: v1
deployment: $P-b
services:
  db:
    image: { name: "oci:$L:1" }
    command: { entrypoint: [/bin/sleep, "100000"] }
  badinit:
    image: { name: "oci:$L:1" }
    command: { entrypoint: [/bin/sleep, "100000"] }
    init: { steps: [ { id: fails, uses: init.run, with: { command: "exit 3" } } ] }
YAML

# wait_for SECONDS COMMAND...: polls every 0.2 s until the command succeeds (bounded).
wait_for() {
  local end=$((SECONDS + $1)); shift
  while [ $SECONDS -lt $end ]; do "$@" >/dev/null 2>&1 && return 0; sleep 0.2; done
  return 1
}
ps_line() { svc ps "$1" "$2" 2>/dev/null | awk -v id="$2-rep-1" '$1 == id'; }
line_has() { [[ "$(ps_line "$1" "$2")" == *"$3"* ]]; }

out=$(svc up "$A" 2>&1); rc=$?
[ $rc -eq 0 ] && t_ok "up starts the deployment and returns" || t_fail "up starts the deployment and returns" "$out"
db_healthy=$(grep -n "^db-rep-1: healthy" <<<"$out" | cut -d: -f1)
web_started=$(grep -n "^web-rep-1: started" <<<"$out" | cut -d: -f1)
[ -n "$db_healthy" ] && [ -n "$web_started" ] && [ "$db_healthy" -lt "$web_started" ] &&
  t_ok "web starts after db is healthy (up's report)" || t_fail "web starts after db is healthy (up's report)" "$out"
LOG=$D/services/$P-a/supervisor.log
stamp() { date -d "$(grep -m1 "$1" "$LOG" | cut -d' ' -f1)" +%s; }
db_t=$(stamp " db-rep-1: started") web_t=$(stamp " web-rep-1: started")
[ -n "$db_t" ] && [ -n "$web_t" ] && [ $((web_t - db_t)) -ge 2 ] &&
  t_ok "web started at least 2 s after db (supervisor.log timestamps: db's httpd comes up after 2 s)" ||
  t_fail "web started at least 2 s after db (supervisor.log timestamps)" "db=$db_t web=$web_t: $(cat "$LOG")"

grep -q "web-rep-init: init-ran-in-a-container" "$LOG" && grep -q "web: init step prepare passed" "$LOG" &&
  [ "$(grep -n "init step prepare passed" "$LOG" | cut -d: -f1)" -lt "$(grep -n " web-rep-1: started" "$LOG" | cut -d: -f1)" ] &&
  t_ok "init.run ran in a one-off container before web started" || t_fail "init.run ran in a one-off container before web started" "$(cat "$LOG")"
wait_for 10 line_has "$A" web healthy
ps_out=$(svc ps "$A" 2>&1)
[[ "$(ps_line "$A" db)" =~ running\ +[0-9]+\ +healthy ]] && t_ok "ps shows db healthy (http check)" ||
  t_fail "ps shows db healthy (http check)" "$ps_out"
[[ "$(ps_line "$A" web)" =~ running\ +[0-9]+\ +healthy ]] && t_ok "ps shows web healthy (command check through runc exec)" ||
  t_fail "ps shows web healthy (command check through runc exec)" "$ps_out"

wait_for 10 line_has "$A" job "done"
job=$(ps_line "$A" job)
[[ "$job" =~ stopped\ +-\ +[a-z]+\ +4\  ]] && [[ "$job" =~ ran\ 1\.[0-9]\ s ]] &&
  t_ok "ps shows the job's exit code 4 and how long it ran" || t_fail "ps shows the job's exit code 4 and how long it ran" "$(svc ps "$A" 2>&1)"

runs_at_least() { [[ "$(ps_line "$A" tick)" =~ ([0-9]+)\ runs ]] && [ "${BASH_REMATCH[1]}" -ge "$1" ]; }
wait_for 12 runs_at_least 2 && t_ok "the cron service ran at least twice" || t_fail "the cron service ran at least twice" "$(svc ps "$A" 2>&1)"
ticks=$(svc logs "$A" tick --replica 1 2>&1 | grep -c '^tick$')
[ "$ticks" -ge 2 ] && t_ok "each cron run is in its log" || t_fail "each cron run is in its log" "ticks=$ticks"

# A killed replica is restarted by the supervisor (after its backoff).
old_pid=$(ps_line "$A" web | awk '{print $3}')
kill -9 "$old_pid"
restarted() { [[ "$(ps_line "$A" web)" =~ running\ +([0-9]+).*1\ restart ]] && [ "${BASH_REMATCH[1]}" != "$old_pid" ]; }
wait_for 15 restarted && t_ok "a killed replica is restarted, and ps counts the restart" ||
  t_fail "a killed replica is restarted, and ps counts the restart" "$(svc ps "$A" 2>&1); $(tail -5 "$LOG")"

# ps --json
json=$(svc ps "$A" --json 2>&1)
/usr/bin/python3 - "$json" <<'PY' && t_ok "ps --json has each replica's status, health, exit code and duration" || t_fail "ps --json has each replica's status, health, exit code and duration" "$json"
import json, sys
doc = json.loads(sys.argv[1])
reps = {r["id"]: r for r in doc["replicas"]}
assert doc["supervisor"] > 0
assert reps["db-rep-1"]["status"] == "running" and reps["db-rep-1"]["health"] == "healthy"
assert reps["job-rep-1"]["exit_code"] == 4 and 900 <= reps["job-rep-1"]["duration_ms"] < 5000
assert reps["tick-rep-1"]["runs"] >= 2
PY

# Edit web's env: up recreates web only.
db_pid=$(ps_line "$A" db | awk '{print $3}')
write_a changed
out=$(svc up "$A" 2>&1); rc=$?
[ $rc -eq 0 ] && [[ "$out" == *"web-rep-1: config changed"* ]] && [[ "$out" == *"db-rep-1: already running (pid $db_pid), unchanged"* ]] &&
  t_ok "up after an env edit recreates that replica and says so, leaving the others" ||
  t_fail "up after an env edit recreates that replica and says so, leaving the others" "$out"
wait_for 10 grep -q "web changed" "$D/services/$P-a/web-rep-1/log" && t_ok "the recreated replica has the new env" ||
  t_fail "the recreated replica has the new env" "$(cat "$D/services/$P-a/web-rep-1/log" 2>&1)"
[ "$(ps_line "$A" db | awk '{print $3}')" = "$db_pid" ] && t_ok "db kept running through the up" ||
  t_fail "db kept running through the up" "$(svc ps "$A" 2>&1)"

# A second deployment with a service of the same name.
out=$(svc up "$B" 2>&1); rc=$?
line_has "$B" db running && line_has "$A" db running &&
  t_ok "two deployments each run a db" || t_fail "two deployments each run a db" "$out"
[ $rc -ne 0 ] && [[ "$out" == *"badinit: init step failed"* ]] && line_has "$B" badinit absent &&
  t_ok "a failing init.run step keeps its service from starting, and up says so" ||
  t_fail "a failing init.run step keeps its service from starting, and up says so" "rc=$rc: $out"
[ ! -e "$D/services/$P-b/badinit-rep-init" ] && ! $RUNC state "$P-b.badinit-rep-init" >/dev/null 2>&1 &&
  t_ok "the init step's one-off container is removed" || t_fail "the init step's one-off container is removed" "$(ls "$D/services/$P-b")"
ids=$($RUNC list -q)
[[ "$ids" == *"$P-a.db-rep-1"* ]] && [[ "$ids" == *"$P-b.db-rep-1"* ]] &&
  t_ok "container ids are scoped by deployment" || t_fail "container ids are scoped by deployment" "$ids"
ls_out=$(svc ls 2>&1)
[[ "$ls_out" =~ $P-a\ +[0-9]+ ]] && [[ "$ls_out" =~ $P-b\ +[0-9]+ ]] && t_ok "ls lists both deployments with their supervisors" ||
  t_fail "ls lists both deployments with their supervisors" "$ls_out"

# exec and logs
out=$(timeout 30 $OCIBUILD service exec "$A" db --data-dir "$D" -- cat /www/index.html 2>&1)
[ "$out" = db-page ] && t_ok "exec runs a command in the replica" || t_fail "exec runs a command in the replica" "$out"
tail_out=$(svc logs "$A" db --replica 1 --tail 1 2>&1)
[ "$tail_out" = "httpd up" ] && t_ok "logs --tail 1 prints the last line" || t_fail "logs --tail 1 prints the last line" "$tail_out"
stamped=$(svc logs "$A" db --replica 1 --tail 1 --timestamps 2>&1)
[[ "$stamped" =~ ^20[0-9][0-9]-[0-9][0-9]-[0-9][0-9]T[0-9][0-9]:[0-9][0-9]:[0-9][0-9]\.[0-9]{6}Z\ httpd\ up$ ]] &&
  t_ok "logs --timestamps shows when the monitor read each line" || t_fail "logs --timestamps shows when the monitor read each line" "$stamped"
before=$(svc logs "$A" tick --replica 1 2>/dev/null | grep -c '^tick$')
follow=$(timeout 5 $OCIBUILD service logs "$A" tick --replica 1 -f --data-dir "$D" 2>&1)
[ "$(grep -c '^tick$' <<<"$follow")" -gt "$before" ] && t_ok "logs -f prints lines written while it follows" ||
  t_fail "logs -f prints lines written while it follows" "before=$before: $follow"

# stop keeps a replica down; restart brings it back
out=$(svc stop "$A" web 2>&1)
sleep 1.5
line_has "$A" web "held" && line_has "$A" web stopped && t_ok "stop leaves the replica stopped (held)" ||
  t_fail "stop leaves the replica stopped (held)" "$out; $(svc ps "$A" 2>&1)"
out=$(svc restart "$A" web 2>&1)
wait_for 10 line_has "$A" web running && t_ok "restart starts it again" || t_fail "restart starts it again" "$out"

# The supervisor dies: the replicas keep running, up adopts them, down removes everything.
sup=$(svc ps "$A" --json | /usr/bin/python3 -c 'import json,sys; print(json.load(sys.stdin)["supervisor"])')
kill -9 "$sup"
wait_for 5 bash -c "! kill -0 $sup"
line_has "$A" db running && t_ok "replicas outlive a killed supervisor" || t_fail "replicas outlive a killed supervisor"
out=$(svc up "$A" 2>&1)
[[ "$out" == *"db-rep-1: already running"* ]] && [[ "$(svc ps "$A" 2>&1)" != *"no supervisor"* ]] &&
  t_ok "up after the supervisor's death adopts the running replicas" || t_fail "up after the supervisor's death adopts the running replicas" "$out"
sup2=$(svc ps "$A" --json | /usr/bin/python3 -c 'import json,sys; print(json.load(sys.stdin)["supervisor"])')
kill -9 "$sup2"
for f in "$A" "$B"; do
  out=$(svc down "$f" -v --grace 0 2>&1) || t_fail "down -v $f" "$out"
done
ours=$(for id in $($RUNC list -q 2>/dev/null); do $RUNC state "$id" 2>/dev/null | grep -q "\"bundle\": \"$D/" && echo "$id"; done)
[ -z "$ours" ] && t_ok "after down -v: no container" || t_fail "after down -v: no container" "$ours"
mounts=$(grep -F " $T_TMP/" /proc/self/mountinfo)
[ -z "$mounts" ] && t_ok "after down -v: no mount" || t_fail "after down -v: no mount" "$mounts"
[ ! -e "$D/services/$P-a" ] && [ ! -e "$D/services/$P-b" ] && t_ok "after down -v: no state dir" ||
  t_fail "after down -v: no state dir" "$(find "$D/services")"
[ ! -e "$D/volumes/$P-a" ] && t_ok "after down -v: the named volume is gone" || t_fail "after down -v: the named volume is gone" "$(find "$D/volumes")"
procs=$(pgrep -f -- "--data-dir $D" | xargs -r ps -o pid=,comm= -p)
[ -z "$procs" ] && t_ok "after down -v: no supervisor or monitor left" || t_fail "after down -v: no supervisor or monitor left" "$procs"
t_done
