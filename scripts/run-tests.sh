#!/bin/bash
# The whole test suite, as README.md gives it: installs dependencies, builds, runs every cmocka
# unit test (plain and under ASan+UBSan) and every end-to-end test against the real binary, and
# ends with one line "N passed, N failed, N skipped". A test whose prerequisite is missing is
# reported loudly as skipped and never counted as passed. Exit status: 0 only if none failed.
set -u
cd "$(dirname "$0")/.."
root=$(pwd)
export OBI_SHARED_DATA="$root/../shared/data"
export OBI_SOURCE_ROOT="$root"

passed=0 failed=0 skipped=0
failures=()

count_tap() { # $1 = suite label, stdin = TAP output
  local label=$1 line
  while IFS= read -r line; do
    case "$line" in
      # cmocka 1.1 writes a skip() as "not ok N # SKIP": still a skip, not a failure.
      "ok "*"# SKIP"*|"ok "*"# skip"*|"not ok "*"# SKIP"*) skipped=$((skipped + 1)); echo "SKIPPED [$label] $line" ;;
      "ok "*) passed=$((passed + 1)) ;;
      "not ok "*) failed=$((failed + 1)); failures+=("[$label] $line"); echo "FAILED [$label] $line" ;;
    esac
  done
}

if [ "${1:-}" != "--no-deps" ]; then
  scripts/install-deps.sh || { echo "install-deps failed"; echo "0 passed, 1 failed"; exit 1; }
fi

# Nix for the tests that compare with it, and one path in /nix/store for the unit test that
# reads the real store (test_nix_store), so that it runs instead of skipping on a fresh machine.
if [ "$(id -u)" -eq 0 ] && tests/e2e/nix_setup.sh; then
  seed=$(mktemp -d)
  echo "ocibuild test seed" >"$seed/obi-test-seed"
  nix-store --add "$seed/obi-test-seed" >/dev/null 2>&1 || echo "run-tests: nix-store --add failed" >&2
  rm -rf "$seed"
fi

# The host's /dev/null as the suite found it: no build, service or test may change it (crun 1.8
# chowns the stdio it is handed to the container's user; docs/security.md).
dev_null_before=$(stat -c '%u:%g %a %t,%T' /dev/null)

logdir=$(mktemp -d "${TMPDIR:-/tmp}/ocibuild-build-logs.XXXXXX")
for variant in release asan; do
  if ! scripts/build.sh "$variant" >"$logdir/$variant.log" 2>&1; then
    cat "$logdir/$variant.log"
    failed=$((failed + 1)); failures+=("build ($variant)")
    continue
  fi
  dir=build; [ "$variant" = asan ] && dir=build-asan
  for exe in "$dir"/tests/unit/test_*; do
    [ -f "$exe" ] || continue
    [ -x "$exe" ] && [ ! -d "$exe" ] || continue
    name=$(basename "$exe")
    out=$(ASAN_OPTIONS=detect_leaks=1:abort_on_error=0 UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
          CMOCKA_MESSAGE_OUTPUT=TAP timeout 600 "$exe" 2>&1)
    rc=$?
    count_tap "$variant $name" <<<"$out"
    if [ $rc -ne 0 ] && ! grep -q "^not ok" <<<"$out"; then
      failed=$((failed + 1)); failures+=("[$variant $name] exit $rc")
      echo "$out" | tail -40
    elif grep -q "^not ok" <<<"$out"; then
      echo "$out" | grep -v "^ok " | tail -60
    fi
  done
done

# End-to-end tests: each tests/e2e/test_*.sh prints TAP lines for its cases.
if [ -x build/ocibuild ]; then
  export OCIBUILD="$root/build/ocibuild"
  for t in tests/e2e/test_*.sh tests/e2e/test_*.py; do
    [ -f "$t" ] || continue
    case "$t" in *.py) runner=/usr/bin/python3 ;; *) runner=bash ;; esac
    out=$(timeout 900 "$runner" "$t" 2>&1)
    rc=$?
    count_tap "e2e $(basename "$t")" <<<"$out"
    if [ $rc -ne 0 ] || grep -q "^not ok" <<<"$out"; then
      echo "---- $t (exit $rc) ----"; echo "$out" | tail -60
      grep -q "^not ok" <<<"$out" || { failed=$((failed + 1)); failures+=("[e2e $t] exit $rc"); }
    fi
  done
fi

dev_null_after=$(stat -c '%u:%g %a %t,%T' /dev/null)
if [ "$dev_null_after" = "$dev_null_before" ]; then
  passed=$((passed + 1))
else
  failed=$((failed + 1)); failures+=("[suite] the host's /dev/null changed: $dev_null_before -> $dev_null_after")
fi

echo
if [ ${#failures[@]} -gt 0 ]; then
  echo "failures:"; printf '  %s\n' "${failures[@]}"
fi
echo "$passed passed, $failed failed, $skipped skipped"
[ "$failed" -eq 0 ]
