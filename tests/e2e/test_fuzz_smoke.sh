#!/bin/bash
# Fuzz smoke (docs/fuzzing.md): when clang and libFuzzer are there, builds the fuzz targets
# (-Dfuzz=true) in a build dir of its own and runs each over its checked-in seed corpus once
# (-runs=0), so a regression that crashes, leaks or breaks a round trip on a seed fails CI
# without a fuzzing campaign. One TAP line per target; without clang, one loud SKIP.
source "$(dirname "$0")/lib.sh"
root=$(cd "$E2E_DIR/../.." && pwd)

probe="$T_TMP/probe.c"
echo 'int LLVMFuzzerTestOneInput(const char *d, unsigned long n) { (void)d; (void)n; return 0; }' >"$probe"
if ! command -v clang >/dev/null || ! clang -fsanitize=fuzzer "$probe" -o "$T_TMP/probe" >/dev/null 2>&1; then
  t_skip "fuzz targets build and pass their seed corpora" \
    "clang with libFuzzer is not installed (apt-get install clang libclang-rt-14-dev)"
  t_done
  exit
fi

targets=$(sed -n "/^fuzz_targets = \[/,/^\]/s/^ *'\([a-z_0-9]*\)',\$/\1/p" "$root/tests/fuzz/meson.build")
build="$T_TMP/build-fuzz"
if ! out=$(CC=clang meson setup "$build" "$root" -Dfuzz=true -Dtests=false -Dwerror=false \
    --buildtype=debug 2>&1 && ninja -C "$build" $(printf 'tests/fuzz/fuzz_%s ' $targets) 2>&1); then
  t_fail "fuzz targets build" "$(tail -30 <<<"$out")"
  t_done
  exit
fi
t_ok "fuzz targets build ($(wc -w <<<"$targets") targets)"

for t in $targets; do
  corpus="$root/tests/fuzz/corpus/$t"
  if [ ! -d "$corpus" ]; then
    t_fail "fuzz_$t: seed corpus" "missing $corpus"
    continue
  fi
  if out=$(cd "$T_TMP" && "$build/tests/fuzz/fuzz_$t" -runs=0 -max_total_time=10 -timeout=10 \
      -artifact_prefix="$T_TMP/$t-" "$corpus" 2>&1); then
    t_ok "fuzz_$t passes its $(ls "$corpus" | wc -l) seeds"
  else
    t_fail "fuzz_$t passes its seeds" "$(tail -30 <<<"$out")"
  fi
done
t_done
