# Shared helpers for the end-to-end tests (source it from tests/e2e/test_*.sh).
# TAP output: t_ok NAME / t_fail NAME [DETAIL] / t_skip NAME REASON / t_check NAME CMD...;
# t_done prints the plan and exits non-zero if anything failed. T_TMP is a per-script temp dir
# removed on exit, whatever happens; t_cleanup CMD registers more cleanup (run in reverse).
set -u
OCIBUILD=${OCIBUILD:-$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)/build/ocibuild}
E2E_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
T_NUM=0
T_FAILED=0
T_TMP=$(mktemp -d "${TMPDIR:-/tmp}/obi-e2e.XXXXXX")
# Searchable by others (not listable): a rootful build's container root is an unprivileged host
# uid that must reach the bundles below it (docs/security.md "Build identity").
chmod 711 "$T_TMP"
T_CLEANUPS=()

t_cleanup() { T_CLEANUPS+=("$*"); }

# t_trivial_request FILE: writes the smallest useful build request to FILE: busybox from the
# host as its one input, one output directory /nix/store/out holding the file f ("hi").
t_trivial_request() {
  cat >"$1" <<'JSON'
{
  "inputs": {"busybox": "/bin/busybox"},
  "command_args": ["/nix/store/busybox", "sh", "-c", "mkdir -p /nix/store/out && echo hi > /nix/store/out/f"],
  "working_dir": "build",
  "scratch_paths": ["build", "nix/store"],
  "inputs_dir": "nix/store",
  "outputs": ["nix/store/out"]
}
JSON
}

# t_settle DATA_DIR [SECONDS]: `ocibuild build` exits once it has answered and leaves the
# removal of what its build left (the bundle, the container and mounts below it, the id slot,
# released just before the bundle's last rmdir) to a child that outlives it by a few ms
# (docs/build.md "After the answer"). Waits, up to SECONDS (5), until DATA_DIR/bundles holds no
# bundle but kept ones and nothing is mounted below it: call it before looking for leftovers,
# or before a build that must get the id slot the last one had. 1 if something is still there
# by then (the caller's own check then says what).
t_settle() {
  local bundles=$1/bundles i
  for ((i = 0; i < ${2:-5} * 100; i++)); do
    _t_unsettled "$bundles" || return 0
    sleep 0.01
  done
  return 1
}
_t_unsettled() {
  local d
  for d in "$1"/*-*-*-*-*; do
    [ -d "$d" ] && [ ! -e "$d/.kept" ] && return 0
  done
  grep -qF " $1/" /proc/self/mountinfo
}

# t_containers_below RUNTIME DIR: prints the ids of RUNTIME's containers whose bundle lies below
# DIR; fails when there are any. `runc list` fails when a container (of any process on the
# machine) goes while it lists: such a list is taken again.
t_containers_below() {
  local json i
  for i in 1 2 3 4 5; do json=$("$1" list --format json 2>/dev/null) && break; json=; sleep 0.1; done
  [ -n "$json" ] || { echo "$1 list failed 5 times"; return 1; }
  python3 -c 'import json,sys; left=[c["id"] for c in (json.loads(sys.argv[2] or "[]") or []) if c["bundle"].startswith(sys.argv[1])]; print(" ".join(left)); sys.exit(1 if left else 0)' "$2" "$json"
}

_t_exit() {
  local i d
  # Removals still under way (t_settle) finish before the temp dir goes.
  for d in "$T_TMP"/*/bundles "$T_TMP"/*/data/bundles "$T_TMP"/*/*/data/bundles; do
    [ -d "$d" ] && t_settle "${d%/bundles}" 1
  done
  for ((i = ${#T_CLEANUPS[@]} - 1; i >= 0; i--)); do eval "${T_CLEANUPS[$i]}" >/dev/null 2>&1 || true; done
  chmod -R u+w "$T_TMP" 2>/dev/null
  rm -rf "$T_TMP"
}
trap _t_exit EXIT

t_ok() { T_NUM=$((T_NUM + 1)); echo "ok $T_NUM - $1"; }
t_fail() {
  T_NUM=$((T_NUM + 1)); T_FAILED=$((T_FAILED + 1))
  echo "not ok $T_NUM - $1"
  [ $# -gt 1 ] && printf '%s\n' "$2" | sed 's/^/#   /'
  return 0
}
# A missing prerequisite: reported loudly, counted as skipped, never as passed.
t_skip() {
  T_NUM=$((T_NUM + 1))
  echo "ok $T_NUM - $1 # SKIP $2"
  echo "!!! SKIPPED: $1: $2" >&2
}
# t_check NAME CMD...: passes when CMD succeeds.
t_check() {
  local name=$1; shift
  local out
  if out=$("$@" 2>&1); then t_ok "$name"; else t_fail "$name" "$out"; fi
}
# t_contains NAME HAYSTACK NEEDLE
t_contains() {
  if [[ "$2" == *"$3"* ]]; then t_ok "$1"; else t_fail "$1" "expected to find: $3
in: $2"; fi
}
t_done() {
  echo "1..$T_NUM"
  [ "$T_FAILED" -eq 0 ]
}
