#!/bin/bash
# Static checks over the tree: clang-format (every .c/.h), cppcheck and clang-tidy (every .c of
# src/, with the checks in .clang-tidy and build/compile_commands.json from meson). Prints the
# findings and exits non-zero if any tool reported something. `scripts/lint.sh clang-format|
# cppcheck|clang-tidy` runs one tool; `scripts/lint.sh --list` prints "TOOL FILE" for every file
# a tool checks (tests/e2e/test_lint.sh compares that with `git ls-files`). Findings are fixed,
# or suppressed at the site with a comment why (cppcheck: `// cppcheck-suppress <id>`,
# clang-tidy: `// NOLINT(<check>)`).
set -u
cd "$(dirname "$0")/.."
tool=${1:-all}
jobs=${LINT_JOBS:-2}
status=0

# The project's own C sources: every .c/.h beneath the given top-level dirs, tracked or not.
# Meson's output dirs (build/, build-*/ with the generated protobuf-c code) are top-level
# siblings of these, so nothing needs filtering out (a filter on '*/build*/*' once dropped
# src/build/ with them).
sources() {
  find "$@" -type f -name '*.[ch]' | sort
}
format_sources() { sources src include tests bench; }
analysed_sources() { sources src | grep '\.c$'; } # cppcheck and clang-tidy

if [ "$tool" = --list ]; then
  format_sources | sed 's/^/clang-format /'
  analysed_sources | sed 's/^/cppcheck /'
  analysed_sources | sed 's/^/clang-tidy /'
  exit 0
fi

run_clang_format() {
  local out
  out=$(format_sources | xargs clang-format --dry-run -Werror 2>&1) || {
    echo "$out" | head -100; return 1; }
  [ -z "$out" ] || { echo "$out" | head -100; return 1; }
}

run_cppcheck() {
  local out
  # -D: the one configuration we build (Linux, GNU C on x86-64), so cppcheck does not try every
  # #ifdef combination. Global suppressions, each a cppcheck limitation rather than a finding:
  #  memleak, resourceLeak: cppcheck does not model __attribute__((cleanup)) (cleanup_free,
  #    cleanup_close in include/ocibuild/cleanup.h), so every early return of an owning local
  #    reads as a leak; ASan/LSan (all unit tests) and valgrind (tests/e2e/test_valgrind.sh)
  #    check leaks instead.
  #  missingIncludeSystem: system headers are not on cppcheck's path, on purpose (speed).
  #  unmatchedSuppression: inline suppressions stay valid when a check is turned off.
  #  legacyUninitvar in src/rpc: cppcheck 2.10 reads `grpc_op op = {.op = ...}` (a member named
  #    like the variable being declared) as a use of the uninitialized variable.
  out=$(cppcheck -q -j "$jobs" --std=c11 --enable=warning,performance,portability \
    --inline-suppr --error-exitcode=1 \
    -D__linux__ -D__x86_64__ -D__GNUC__=12 -D_GNU_SOURCE \
    -Iinclude -Isrc/castore -Isrc/builder -Isrc/rpc -Isrc/cli \
    --suppress=memleak --suppress=resourceLeak --suppress=missingIncludeSystem \
    --suppress=unmatchedSuppression --suppress='legacyUninitvar:src/rpc/*' \
    $(analysed_sources) 2>&1)
  local rc=$?
  [ -n "$out" ] && echo "$out"
  [ $rc -eq 0 ] && [ -z "$out" ]
}

run_clang_tidy() {
  if [ ! -f build/compile_commands.json ]; then
    scripts/build.sh release >/dev/null 2>&1 || { echo "lint: build failed"; return 1; }
  fi
  local out
  # -n4: few clang-tidy processes (each re-parses the shared headers), -P: the cores we have.
  out=$(analysed_sources | xargs -P "$jobs" -n 4 clang-tidy -p build --quiet 2>/dev/null |
    grep -E -A3 '(warning|error):')
  [ -z "$out" ] || { echo "$out"; return 1; }
}

for t in clang-format cppcheck clang-tidy; do
  [ "$tool" = all ] || [ "$tool" = "$t" ] || continue
  start=$(date +%s)
  if "run_${t//-/_}"; then
    echo "lint: $t: clean ($(($(date +%s) - start))s)"
  else
    echo "lint: $t: FINDINGS ($(($(date +%s) - start))s)"
    status=1
  fi
done
exit $status
