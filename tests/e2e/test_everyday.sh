#!/bin/bash
# What a user of nix-build, runc or docker compose expects from the command line (issue 19):
# exit codes as Nix's (100 build failed, 101 timed out, 1 usage, 130 Ctrl-C), a command the
# runtime cannot start reported once as such, the build's stdout and stderr in the order
# written, --keep-bundle saying where, --version, --help on every subcommand exiting 0,
# relative paths resolved against the request file and the deployment YAML, daemon addresses
# from the environment, a summary for people on a terminal and JSON otherwise, build --out,
# store export from a file, and -q.
source "$(dirname "$0")/lib.sh"

export OCIBUILD_STORE="$T_TMP/store"
export OCIBUILD_DATA_DIR="$T_TMP/data"
unset OCIBUILD_DAEMON BUILD_SERVICE_ADDR BLOB_SERVICE_ADDR DIRECTORY_SERVICE_ADDR

# --- flags every command has (no runtime needed) ---
version=$("$OCIBUILD" --version); rc=$?
[ $rc -eq 0 ] && [[ "$version" =~ ^ocibuild\ [0-9a-z] ]] && t_ok "--version prints the version and exits 0" ||
  t_fail "--version prints the version and exits 0" "rc=$rc out=$version"

# Every command and subcommand, as `ocibuild --help` and `ocibuild X --help` list them.
# A command's line starts with two spaces and its name; continuation lines are indented deeper.
list_commands() { sed -n '/^commands:/,/^$/p' | grep -E '^  [a-z]' | awk '{print $1}'; }
commands=$("$OCIBUILD" --help | list_commands)
failed_help=""
for c in $commands; do
  out=$("$OCIBUILD" "$c" --help 2>&1) || failed_help+=" $c(rc=$?)"
  [[ "$out" == *usage* ]] || failed_help+=" $c(no usage)"
  subs=$("$OCIBUILD" "$c" --help 2>/dev/null | list_commands)
  for s in $subs; do
    out=$("$OCIBUILD" "$c" "$s" --help 2>&1) || failed_help+=" $c-$s(rc=$?)"
    [[ "$out" == *usage* ]] || failed_help+=" $c-$s(no usage)"
  done
done
[ -n "$commands" ] && [ -z "$failed_help" ] && t_ok "--help on every command and subcommand exits 0 with a usage" ||
  t_fail "--help on every command and subcommand exits 0 with a usage" "commands: $commands; failed:$failed_help"
[ -n "$("$OCIBUILD" store --help | sed -n '/^commands:/,/^$/p')" ] &&
  [ -n "$("$OCIBUILD" service --help | sed -n '/^commands:/,/^$/p')" ] &&
  t_ok "store and service list their subcommands under commands:" ||
  t_fail "store and service list their subcommands under commands:"

# The progress line of a long import: on a terminal only (the delay shortened for the test).
head -c 3000000 /dev/urandom >"$T_TMP/big"
tty_err=$(script -qec "OCIBUILD_PROGRESS_DELAY_MS=0 '$OCIBUILD' store import '$T_TMP/big' >/dev/null" /dev/null | tr -d '\r')
[[ "$tty_err" == *"importing $T_TMP/big: 2.9 MiB, 1 file in "*" s"* ]] &&
  t_ok "on a terminal a long import shows a progress line with the total" ||
  t_fail "on a terminal a long import shows a progress line with the total" "$tty_err"
OCIBUILD_PROGRESS_DELAY_MS=0 "$OCIBUILD" store import "$T_TMP/big" >"$T_TMP/big.node" 2>"$T_TMP/import.err"
[ ! -s "$T_TMP/import.err" ] && t_ok "without a terminal an import prints no progress" ||
  t_fail "without a terminal an import prints no progress" "$(cat "$T_TMP/import.err")"
tty_err=$(script -qec "OCIBUILD_PROGRESS_DELAY_MS=0 '$OCIBUILD' store export '$T_TMP/big.node' '$T_TMP/big.out'" /dev/null | tr -d '\r')
[[ "$tty_err" == *"exporting to $T_TMP/big.out: 2.9 MiB, 1 file in "*" s"* ]] && cmp -s "$T_TMP/big" "$T_TMP/big.out" &&
  t_ok "on a terminal a long export (materialization) shows a progress line too" ||
  t_fail "on a terminal a long export (materialization) shows a progress line too" "$tty_err"

"$OCIBUILD" build >/dev/null 2>&1; rc=$?
[ $rc -eq 1 ] && t_ok "a usage error exits 1" || t_fail "a usage error exits 1" "rc=$rc"
"$OCIBUILD" build --no-such-flag x.json >/dev/null 2>&1; rc=$?
[ $rc -eq 1 ] && t_ok "an unknown option exits 1" || t_fail "an unknown option exits 1" "rc=$rc"
help=$("$OCIBUILD" build --help)
t_contains "build --help lists the exit codes" "$help" "101  the build timed out"

if [ "$(id -u)" -ne 0 ] || ! command -v runc >/dev/null; then
  t_skip "builds with runc" "needs root and runc"
  t_done; exit
fi

# request NAME SCRIPT [EXTRA_JSON_FIELDS] -> $T_TMP/NAME.json (friendly form)
request() {
  local name=$1 script=$2 extra=${3:-}
  cat >"$T_TMP/$name.json" <<JSON
{
  "inputs": {"busybox": "/bin/busybox"},
  "command_args": ["/nix/store/busybox", "sh", "-c", $(printf '%s' "$script" | python3 -c 'import json,sys; print(json.dumps(sys.stdin.read()))')],
  "working_dir": "build",
  "scratch_paths": ["build", "nix/store"],
  "inputs_dir": "nix/store",
  "outputs": ["nix/store/out"]
  $extra
}
JSON
}

# --- progress of a build's input materialization (on a terminal, before the build's log) ---
mkdir -p "$T_TMP/mat"
head -c 3000000 /dev/urandom >"$T_TMP/mat/blob"
cat >"$T_TMP/mat.json" <<JSON
{"inputs": {"busybox": "/bin/busybox", "mat": "$T_TMP/mat"},
 "command_args": ["/nix/store/busybox", "sh", "-c", "echo log-after-inputs; /nix/store/busybox cat /nix/store/mat/blob > /nix/store/out"],
 "working_dir": "build", "scratch_paths": ["build", "nix/store"], "inputs_dir": "nix/store",
 "outputs": ["nix/store/out"]}
JSON
tty_err=$(script -qec "OCIBUILD_PROGRESS_DELAY_MS=0 '$OCIBUILD' build '$T_TMP/mat.json' >/dev/null" /dev/null | tr -d '\r')
mat_line=${tty_err%%log-after-inputs*}
[[ "$mat_line" == *"materializing inputs: "*" MiB, "*" file"*" in "*" s"* ]] &&
  t_ok "on a terminal a build's input materialization shows a progress line, before the build's log" ||
  t_fail "on a terminal a build's input materialization shows a progress line, before the build's log" "$tty_err"
head -c 1000 /dev/urandom >>"$T_TMP/mat/blob" # new contents: materialized anew
OCIBUILD_PROGRESS_DELAY_MS=0 "$OCIBUILD" build "$T_TMP/mat.json" >/dev/null 2>"$T_TMP/mat.err"
! grep -q materializing "$T_TMP/mat.err" && grep -q log-after-inputs "$T_TMP/mat.err" &&
  t_ok "without a terminal a build prints no materialization progress" ||
  t_fail "without a terminal a build prints no materialization progress" "$(cat "$T_TMP/mat.err")"

# --- exit codes ---
request fails 'echo about-to-fail; exit 3'
"$OCIBUILD" build "$T_TMP/fails.json" >/dev/null 2>"$T_TMP/fails.err"; rc=$?
[ $rc -eq 100 ] && t_ok "a failing build exits 100" || t_fail "a failing build exits 100" "rc=$rc $(cat "$T_TMP/fails.err")"

request noout 'true'
"$OCIBUILD" build "$T_TMP/noout.json" >/dev/null 2>&1; rc=$?
[ $rc -eq 100 ] && t_ok "a build without its output exits 100" || t_fail "a build without its output exits 100" "rc=$rc"

request slow 'sleep 30'
"$OCIBUILD" build --timeout 1 "$T_TMP/slow.json" >/dev/null 2>&1; rc=$?
[ $rc -eq 101 ] && t_ok "a timed-out build exits 101" || t_fail "a timed-out build exits 101" "rc=$rc"

request interrupted 'echo started >&2; sleep 30'
"$OCIBUILD" build "$T_TMP/interrupted.json" >/dev/null 2>"$T_TMP/int.err" &
pid=$!
for _ in $(seq 1 100); do grep -q started "$T_TMP/int.err" 2>/dev/null && break; sleep 0.1; done
kill -INT $pid
wait $pid; rc=$?
[ $rc -eq 130 ] && grep -q "interrupted by Interrupt" "$T_TMP/int.err" &&
  t_ok "a build interrupted by SIGINT exits 130 and says so" ||
  t_fail "a build interrupted by SIGINT exits 130 and says so" "rc=$rc $(cat "$T_TMP/int.err")"

"$OCIBUILD" build "$T_TMP/no-such-request.json" >/dev/null 2>&1; rc=$?
[ $rc -eq 1 ] && t_ok "a missing request file exits 1" || t_fail "a missing request file exits 1" "rc=$rc"

# A command that does not exist in the sandbox: the runtime cannot start it. Said once, as that.
cat >"$T_TMP/nocmd.json" <<JSON
{"inputs": {"busybox": "/bin/busybox"}, "command_args": ["/nix/store/no-such-command"],
 "working_dir": "build", "scratch_paths": ["build", "nix/store"], "inputs_dir": "nix/store",
 "outputs": ["nix/store/out"]}
JSON
"$OCIBUILD" build "$T_TMP/nocmd.json" >/dev/null 2>"$T_TMP/nocmd.err"; rc=$?
err=$(cat "$T_TMP/nocmd.err")
[ $rc -eq 100 ] && [[ "$err" == *"the runtime could not start the command"*"no-such-command"* ]] &&
  [ "$(wc -l <<<"$err")" -eq 1 ] && [[ "$err" != *"exit code 1"* ]] &&
  t_ok "a command the runtime cannot start is reported once, as such, exit 100" ||
  t_fail "a command the runtime cannot start is reported once, as such, exit 100" "rc=$rc $err"

# --- logs: one pipe, in order ---
request interleaved 'for i in 1 2 3 4 5; do echo out$i; echo err$i >&2; done; mkdir /nix/store/out'
"$OCIBUILD" build "$T_TMP/interleaved.json" >/dev/null 2>"$T_TMP/interleaved.err"; rc=$?
expected=$(for i in 1 2 3 4 5; do echo out$i; echo err$i; done)
[ $rc -eq 0 ] && [ "$(cat "$T_TMP/interleaved.err")" = "$expected" ] &&
  t_ok "the build's stdout and stderr lines arrive in the order written" ||
  t_fail "the build's stdout and stderr lines arrive in the order written" "rc=$rc $(cat "$T_TMP/interleaved.err")"

"$OCIBUILD" build -q "$T_TMP/interleaved.json" >/dev/null 2>"$T_TMP/quiet.err"; rc=$?
[ $rc -eq 0 ] && [ ! -s "$T_TMP/quiet.err" ] && t_ok "-q: a build that succeeds says nothing on stderr" ||
  t_fail "-q: a build that succeeds says nothing on stderr" "rc=$rc $(cat "$T_TMP/quiet.err")"
"$OCIBUILD" build -q "$T_TMP/fails.json" >/dev/null 2>"$T_TMP/quiet.err"; rc=$?
[ $rc -eq 100 ] && [ "$(grep -c about-to-fail "$T_TMP/quiet.err")" -eq 1 ] &&
  t_ok "-q: a failure still shows the log tail, once" ||
  t_fail "-q: a failure still shows the log tail, once" "rc=$rc $(cat "$T_TMP/quiet.err")"
"$OCIBUILD" build -v "$T_TMP/interleaved.json" >/dev/null 2>"$T_TMP/verbose.err"
grep -q "^ocibuild: store: " "$T_TMP/verbose.err" && grep -q "^ocibuild: the build took " "$T_TMP/verbose.err" &&
  grep -q "^out1$" "$T_TMP/verbose.err" && t_ok "-v: also where the services are and how long it took" ||
  t_fail "-v: also where the services are and how long it took" "$(cat "$T_TMP/verbose.err")"
"$OCIBUILD" build --log-level loud "$T_TMP/interleaved.json" >/dev/null 2>"$T_TMP/level.err"; rc=$?
[ $rc -eq 1 ] && grep -q "log level 'loud': expected error, warn, info or debug" "$T_TMP/level.err" &&
  t_ok "--log-level refuses an unknown level by name, exit 1" ||
  t_fail "--log-level refuses an unknown level by name, exit 1" "rc=$rc $(cat "$T_TMP/level.err")"

"$OCIBUILD" build --keep-bundle "$T_TMP/interleaved.json" >/dev/null 2>"$T_TMP/keep.err"
kept=$(sed -n 's/^bundle kept at //p' "$T_TMP/keep.err")
[ -n "$kept" ] && [ -f "$kept/config.json" ] && t_ok "--keep-bundle says where the bundle is" ||
  t_fail "--keep-bundle says where the bundle is" "$(cat "$T_TMP/keep.err")"
[ -n "$kept" ] && rm -rf "$kept"

# --- results for people and scripts ---
request result 'mkdir -p /nix/store/out && echo "needle-abcdefghijklmnopqrstuvwxyz" > /nix/store/out/f' \
  ', "refscan_needles": ["abcdefghijklmnopqrstuvwxyz", "notthereatallnotthereatall"]'
json=$("$OCIBUILD" build "$T_TMP/result.json" 2>/dev/null)
[[ "$json" == '{"buildRequest":'* ]] && t_ok "stdout not a terminal: the Build as JSON, as before" ||
  t_fail "stdout not a terminal: the Build as JSON, as before" "$json"
tty_out=$(script -qec "'$OCIBUILD' build '$T_TMP/result.json' 2>/dev/null" /dev/null | tr -d '\r')
[[ "$tty_out" =~ ^/nix/store/out\ \ directory\ \ 1\ entry\ \ b3:[A-Za-z0-9+/=]{44}\ \ needles\ 0\ of\ 2$ ]] &&
  t_ok "on a terminal: one line per output (path, kind, size, digest, needles)" ||
  t_fail "on a terminal: one line per output (path, kind, size, digest, needles)" "$tty_out"
tty_json=$(script -qec "'$OCIBUILD' build --json '$T_TMP/result.json' 2>/dev/null" /dev/null | tr -d '\r')
[[ "$tty_json" == '{"buildRequest":'* ]] && t_ok "--json on a terminal prints the JSON" ||
  t_fail "--json on a terminal prints the JSON" "$tty_json"

"$OCIBUILD" build --out "$T_TMP/results" "$T_TMP/result.json" >/dev/null 2>&1
grep -q needle-abc "$T_TMP/results/out/f" 2>/dev/null && t_ok "build --out DIR exports each output as DIR/<name>" ||
  t_fail "build --out DIR exports each output as DIR/<name>" "$(ls -R "$T_TMP/results" 2>&1)"
echo "$json" >"$T_TMP/build-result.json"
"$OCIBUILD" store export "$T_TMP/build-result.json" "$T_TMP/from-build" 2>"$T_TMP/export.err" &&
  grep -q needle-abc "$T_TMP/from-build/out/f" && t_ok "store export of a Build file exports its outputs" ||
  t_fail "store export of a Build file exports its outputs" "$(cat "$T_TMP/export.err")"
python3 -c 'import json,sys; print(json.dumps(json.load(open(sys.argv[1]))["outputs"][0]))' \
  "$T_TMP/build-result.json" >"$T_TMP/node.json"
"$OCIBUILD" store export "$T_TMP/node.json" "$T_TMP/from-node" 2>"$T_TMP/export.err" &&
  grep -q needle-abc "$T_TMP/from-node/f" && t_ok "store export of a Node file exports the node" ||
  t_fail "store export of a Node file exports the node" "$(cat "$T_TMP/export.err")"
"$OCIBUILD" store export - "$T_TMP/from-stdin" <"$T_TMP/node.json" 2>"$T_TMP/export.err" &&
  grep -q needle-abc "$T_TMP/from-stdin/f" && t_ok "store export - reads the node from stdin" ||
  t_fail "store export - reads the node from stdin" "$(cat "$T_TMP/export.err")"

# --- relative paths: against the request file, not the current directory ---
mkdir -p "$T_TMP/project/tools"
cp /bin/busybox "$T_TMP/project/tools/busybox"
cat >"$T_TMP/project/rel.json" <<JSON
{"inputs": {"busybox": "tools/busybox"}, "command_args": ["/nix/store/busybox", "sh", "-c", "mkdir /nix/store/out"],
 "working_dir": "build", "scratch_paths": ["build", "nix/store"], "inputs_dir": "nix/store",
 "outputs": ["nix/store/out"]}
JSON
(cd / && "$OCIBUILD" build "$T_TMP/project/rel.json" >/dev/null 2>"$T_TMP/rel.err") &&
  t_ok "a relative input path is read from beside the request file" ||
  t_fail "a relative input path is read from beside the request file" "$(cat "$T_TMP/rel.err")"

# --- daemon addresses: \$OCIBUILD_DAEMON, and --build-service implying its store ---
sock="$T_TMP/daemon.sock"
"$OCIBUILD" daemon --listen "unix:$sock" --store "$T_TMP/daemon-store" \
  --build-service "oci://$T_TMP/data/daemon-bundles" 2>"$T_TMP/daemon.log" &
daemon_pid=$!
t_cleanup "kill $daemon_pid; wait $daemon_pid"
for _ in $(seq 1 100); do [ -S "$sock" ] && break; sleep 0.05; done
"$OCIBUILD" build --build-service "grpc+unix://$sock" "$T_TMP/result.json" >"$T_TMP/remote.json" \
  2>"$T_TMP/remote.err"; rc=$?
[ $rc -eq 0 ] && t_ok "--build-service alone builds on the daemon, in the daemon's store" ||
  t_fail "--build-service alone builds on the daemon, in the daemon's store" "rc=$rc $(cat "$T_TMP/remote.err")"
OCIBUILD_DAEMON="$sock" "$OCIBUILD" build "$T_TMP/fails.json" >/dev/null 2>"$T_TMP/remote-fail.err"; rc=$?
[ $rc -eq 100 ] && t_ok "\$OCIBUILD_DAEMON (a socket path) builds there; a failure there exits 100" ||
  t_fail "\$OCIBUILD_DAEMON (a socket path) builds there; a failure there exits 100" "rc=$rc $(cat "$T_TMP/remote-fail.err")"
out=$(BLOB_SERVICE_ADDR="grpc+unix://$sock" DIRECTORY_SERVICE_ADDR="grpc+unix://$sock" \
  "$OCIBUILD" store export "$T_TMP/remote.json" "$T_TMP/remote-out" 2>&1) &&
  grep -q needle-abc "$T_TMP/remote-out/out/f" &&
  t_ok "BLOB_SERVICE_ADDR / DIRECTORY_SERVICE_ADDR name the store, as in tvix" ||
  t_fail "BLOB_SERVICE_ADDR / DIRECTORY_SERVICE_ADDR name the store, as in tvix" "$out"

# --- the daemon's default socket: no --listen ---
# As root that is /run/ocibuild/daemon.sock: the daemon and its client run in a mount namespace
# of their own with a fresh /run, so nothing of the machine's /run is touched.
if [ "$(id -u)" = 0 ] && command -v unshare >/dev/null; then
  blob="$T_TMP/default-sock-blob"
  head -c 100000 /dev/urandom >"$blob"
  out=$(timeout 60 unshare --mount --propagation private sh -c '
    mount -t tmpfs tmpfs /run || exit 3
    "$1" daemon --store "$2/default-sock-store" --build-service "oci://$2/default-sock-bundles" \
      2>"$2/default-sock.log" &
    pid=$!
    for _ in $(seq 1 200); do [ -S /run/ocibuild/daemon.sock ] && break; sleep 0.05; done
    stat -c "%a %F" /run/ocibuild /run/ocibuild/daemon.sock
    OCIBUILD_DAEMON=/run/ocibuild/daemon.sock "$1" store import --name b "$3" >"$2/default-sock.json"
    echo "import rc $?"
    kill $pid; wait $pid
    echo "daemon rc $?"' sh "$OCIBUILD" "$T_TMP" "$blob" 2>&1)
  digest=$("$OCIBUILD" hash "$blob" | cut -d' ' -f1)
  if [ "$out" = "$(printf '755 directory\n600 socket\nimport rc 0\ndaemon rc 0')" ] &&
     grep -q "listening on unix:/run/ocibuild/daemon.sock" "$T_TMP/default-sock.log" &&
     "$OCIBUILD" store cat --store "$T_TMP/default-sock-store" "$digest" | cmp -s - "$blob"; then
    t_ok "daemon without --listen serves /run/ocibuild/daemon.sock (as root), 0600, for \$OCIBUILD_DAEMON"
  else
    t_fail "daemon without --listen serves /run/ocibuild/daemon.sock (as root), 0600, for \$OCIBUILD_DAEMON" \
      "$out $(cat "$T_TMP/default-sock.log")"
  fi
else
  t_skip "daemon without --listen serves its default socket" "needs root and unshare (a /run of its own)"
fi
if [ "$(id -u)" != 0 ]; then
  t_skip "a user's daemon without \$XDG_RUNTIME_DIR names the variable" "needs root for setpriv"
else
  out=$(env -u XDG_RUNTIME_DIR setpriv --reuid=nobody --regid=nogroup --clear-groups \
    "$OCIBUILD" daemon --store "$T_TMP/never" 2>&1 </dev/null); rc=$?
  [ $rc -eq 1 ] && [[ $out == *XDG_RUNTIME_DIR* ]] &&
    t_ok "a user's daemon without --listen and without \$XDG_RUNTIME_DIR says so, exit 1" ||
    t_fail "a user's daemon without --listen and without \$XDG_RUNTIME_DIR says so, exit 1" "rc=$rc $out"
fi

t_done
