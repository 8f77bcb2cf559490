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
_t_exit() {
  local i
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
