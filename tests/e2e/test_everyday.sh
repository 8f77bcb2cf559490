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
commands=$("$OCIBUILD" --help | sed -n '/^commands:/,/^$/p' | awk 'NF > 1 {print $1}')
failed_help=""
for c in $commands; do
  out=$("$OCIBUILD" "$c" --help 2>&1) || failed_help+=" $c(rc=$?)"
  [[ "$out" == *usage* ]] || failed_help+=" $c(no usage)"
  subs=$("$OCIBUILD" "$c" --help 2>/dev/null | sed -n '/^commands:/,/^$/p' | awk 'NF > 1 {print $1}')
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

"$OCIBUILD" build --keep-bundle "$T_TMP/interleaved.json" >/dev/null 2>"$T_TMP/keep.err"
kept=$(sed -n 's/^bundle kept at //p' "$T_TMP/keep.err")
[ -n "$kept" ] && [ -f "$kept/config.json" ] && t_ok "--keep-bundle says where the bundle is" ||
  t_fail "--keep-bundle says where the bundle is" "$(cat "$T_TMP/keep.err")"
[ -n "$kept" ] && rm -rf "$kept"

t_done
