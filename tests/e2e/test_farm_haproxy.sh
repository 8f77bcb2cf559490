#!/bin/bash
# The farm for tvix/snix gRPC clients (docs/farm.md): HAProxy (Debian's haproxy) in HTTP/2 mode
# in front of two `ocibuild daemon`s on loopback that share one on-disk castore; six concurrent
# DoBuilds through HAProxy's one address must all succeed and be split across both daemons
# (each daemon's log names the calls it ran). Everything listens on random 127.0.0.1 ports and
# is stopped at the end.
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

for tool in haproxy runc; do
  if ! command -v "$tool" >/dev/null; then
    t_skip "haproxy farm" "$tool is not installed (scripts/install-deps.sh: haproxy, runc)"
    t_done; exit
  fi
done
free_port() {
  /usr/bin/python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}
wait_port() { # PORT
  for _ in $(seq 1 100); do
    /usr/bin/python3 -c 'import socket,sys; socket.create_connection(("127.0.0.1",int(sys.argv[1])),1)' "$1" 2>/dev/null && return 0
    sleep 0.1
  done
  return 1
}
STORE=$T_TMP/store
mkdir -p "$STORE"
ports=()
for d in 1 2; do
  port=$(free_port)
  ports+=("$port")
  OCIBUILD_DATA_DIR=$T_TMP/d$d "$OCIBUILD" daemon --listen "127.0.0.1:$port" --store "$STORE" \
    --log-level info 2>"$T_TMP/d$d.log" &
  t_cleanup "kill $!; wait $!"
done
hport=$(free_port)
cat >"$T_TMP/haproxy.cfg" <<EOF
defaults
    mode http
    timeout connect 5s
    timeout client 120s
    timeout server 120s
frontend ocibuild_grpc
    bind 127.0.0.1:$hport proto h2
    default_backend ocibuild_daemons
backend ocibuild_daemons
    balance roundrobin
    server d1 127.0.0.1:${ports[0]} proto h2 check
    server d2 127.0.0.1:${ports[1]} proto h2 check
EOF
# HAProxy starts once both daemons listen: a first health check that finds a daemon not yet
# listening marks it DOWN until two checks pass (4 s), and every build then goes to the other.
wait_port "${ports[0]}" && wait_port "${ports[1]}" && daemons_listen=1
haproxy -db -f "$T_TMP/haproxy.cfg" >"$T_TMP/haproxy.log" 2>&1 &
t_cleanup "kill $!; wait $!"
if [ -n "${daemons_listen:-}" ] && wait_port "$hport"; then
  t_ok "two daemons and HAProxy (h2) in front of them listen"
else
  t_fail "two daemons and HAProxy (h2) in front of them listen" "$(tail -5 "$T_TMP"/d*.log "$T_TMP/haproxy.log")"
  t_done; exit
fi

# Six builds at once, each a second long and distinct (its own marker).
pids=()
for i in 1 2 3 4 5 6; do
  cat >"$T_TMP/req$i.json" <<EOF
{
  "inputs": {"busybox": "/bin/busybox"},
  "command_args": ["/nix/store/busybox", "sh", "-c",
                   "/nix/store/busybox sleep 1; /nix/store/busybox mkdir -p /nix/store/out; echo build $i > /nix/store/out/which"],
  "working_dir": "build",
  "scratch_paths": ["build", "nix/store"],
  "inputs_dir": "nix/store",
  "outputs": ["nix/store/out"],
  "env": {"MARKER": "$i-$$"},
  "constraints": {"system": "x86_64-linux"}
}
EOF
  OCIBUILD_DATA_DIR=$T_TMP/client "$OCIBUILD" build --store "$STORE" \
    --build-service "grpc+http://127.0.0.1:$hport" "$T_TMP/req$i.json" >"$T_TMP/out$i.json" 2>"$T_TMP/err$i" &
  pids+=($!)
done
failed=""
for i in 0 1 2 3 4 5; do wait "${pids[$i]}" || failed="$failed $((i + 1))"; done
[ -z "$failed" ] && t_ok "six concurrent DoBuilds through HAProxy succeed" ||
  t_fail "six concurrent DoBuilds through HAProxy succeed" "failed:$failed $(tail -3 "$T_TMP"/err*)"
n1=$(grep -c "BuildService/DoBuild.* OK" "$T_TMP/d1.log")
n2=$(grep -c "BuildService/DoBuild.* OK" "$T_TMP/d2.log")
if [ "$n1" -ge 1 ] && [ "$n2" -ge 1 ] && [ $((n1 + n2)) -eq 6 ]; then
  t_ok "the builds are split across both daemons ($n1 + $n2)"
else t_fail "the builds are split across both daemons" "d1: $n1, d2: $n2; $(cat "$T_TMP/haproxy.log")"; fi
t_done
