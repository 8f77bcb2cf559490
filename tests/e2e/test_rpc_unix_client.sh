#!/bin/bash
# The CLI's grpc+unix:// client (ocibuild-rpc-h2.so, docs/rpc.md "Client transports") against a
# real daemon and a real runc build: while the client waits on DoBuild's event stream its
# process maps libnghttp2 and the h2 module but no libgrpc; SIGINT to the client ends the call,
# and the daemon stops the build (its container's process goes) instead of running it to the
# end. Bounded: the build would sleep 60 s; the test waits at most ~25 s in all.
source "$(dirname "$0")/lib.sh"
if [ "$(id -u)" -ne 0 ] || ! command -v runc >/dev/null || [ ! -x /bin/busybox ]; then
  t_skip "grpc+unix client against a daemon's build" "needs root, runc and /bin/busybox"
  t_done
fi
export OCIBUILD_DATA_DIR="$T_TMP/data"
unset OCIBUILD_RPC_MODULE OCIBUILD_RPC_H2_MODULE
marker="$$$RANDOM"
cat >"$T_TMP/req.json" <<JSON
{"inputs": {"busybox": "/bin/busybox"},
 "command_args": ["/nix/store/busybox", "sh", "-c", "echo started; exec /nix/store/busybox sleep 60.$marker"],
 "working_dir": "build", "scratch_paths": ["build", "nix/store"], "inputs_dir": "nix/store",
 "outputs": ["nix/store/out"]}
JSON
sock="$T_TMP/d.sock"
"$OCIBUILD" daemon --listen "unix:$sock" --store "$T_TMP/store" \
  --build-service "oci://$T_TMP/bundles" 2>"$T_TMP/daemon.log" &
daemon=$!
t_cleanup "kill $daemon; wait $daemon"
for _ in $(seq 100); do [ -S "$sock" ] && break; sleep 0.05; done
url="grpc+unix://$sock"

# The pid of the build's sleep (its command line carries the marker), or nothing.
sleeper() { pgrep -f "sleep 60.$marker" | head -1; }

# Job control on while the client starts: a background job of a script ignores SIGINT otherwise.
set -m
"$OCIBUILD" build --store "$url" --build-service "$url" "$T_TMP/req.json" \
  >"$T_TMP/client.out" 2>"$T_TMP/client.err" &
client=$!
set +m
t_cleanup "kill -9 $client"
pid=
for _ in $(seq 150); do pid=$(sleeper); [ -n "$pid" ] && break; sleep 0.1; done
if [ -z "$pid" ]; then
  t_fail "the build through the daemon starts" "client: $(cat "$T_TMP/client.err")
daemon: $(tail -5 "$T_TMP/daemon.log")"
  t_done
fi
t_ok "the build through the daemon starts"

maps=$(cat "/proc/$client/maps")
if [[ "$maps" == *ocibuild-rpc-h2.so* ]] && [[ "$maps" == *libnghttp2* ]] &&
  [[ "$maps" != *libgrpc* ]]; then
  t_ok "the client waiting on DoBuild's stream maps the h2 module and libnghttp2, not libgrpc"
else
  t_fail "the client waiting on DoBuild's stream maps the h2 module and libnghttp2, not libgrpc" \
    "$(printf '%s\n' "$maps" | awk '{print $6}' | grep -E 'grpc|nghttp2|ocibuild' | sort -u)"
fi

kill -INT "$client"
t0=$(date +%s%N)
for _ in $(seq 50); do kill -0 "$client" 2>/dev/null || break; sleep 0.1; done
if kill -0 "$client" 2>/dev/null; then
  t_fail "SIGINT ends the client within 5 s"
else
  wait "$client"
  rc=$?
  t_check "SIGINT ends the client within 5 s, failing (exit $rc)" [ "$rc" -ne 0 ]
fi
for _ in $(seq 100); do [ -z "$(sleeper)" ] && break; sleep 0.1; done
gone_ms=$((($(date +%s%N) - t0) / 1000000))
if [ -z "$(sleeper)" ]; then
  t_ok "the daemon stops the build of a cancelled call (its process gone after ${gone_ms} ms)"
else
  t_fail "the daemon stops the build of a cancelled call" "still running after 10 s: $(tail -5 "$T_TMP/daemon.log")"
fi
t_check "the daemon still serves (Stat over the same socket)" \
  "$OCIBUILD" store import --store "$url" "$T_TMP/req.json"
t_done
