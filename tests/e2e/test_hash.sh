#!/bin/bash
# ocibuild hash against b3sum: random files of awkward lengths (around block, chunk and SIMD
# batch edges, up to ~33 MiB) must print exactly b3sum's bytes on every BLAKE3 backend the CPU
# has (forced with OBI_BLAKE3_BACKEND), several files at once, "-" for stdin (a regular file
# and a pipe), names with spaces, backslashes and newlines; missing files and directories fail
# with their name in the message and a non-zero exit.
source "$(dirname "$0")/lib.sh"

if ! command -v b3sum >/dev/null; then
  t_skip "ocibuild hash matches b3sum" "b3sum is not installed (Debian package b3sum)"
  t_done; exit
fi

sizes=(0 1 63 64 65 1023 1024 1025 2047 2048 2049 4095 4096 4097 16383 16384 16385
       1048575 1048576 1048577 4194311 34603015)
files=()
for n in "${sizes[@]}"; do
  head -c "$n" /dev/urandom >"$T_TMP/random-$n"
  files+=("$T_TMP/random-$n")
done

cpu_flags=$(grep -m1 '^flags' /proc/cpuinfo 2>/dev/null)
cpu_has() { # backend name -> 0 if the CPU has its instruction set
  local f
  case "$1" in
    portable) return 0 ;;
    sse41) set -- sse4_1 ;;
    avx2) set -- avx2 ;;
    avx512) set -- avx512f avx512vl ;;
  esac
  for f in "$@"; do [[ " $cpu_flags " == *" $f "* ]] || return 1; done
}

for backend in portable sse41 avx2 avx512; do
  if ! cpu_has "$backend"; then
    t_skip "hash matches b3sum on backend $backend" \
      "this CPU lacks the instruction set of backend $backend: its code is NOT tested"
    continue
  fi
  bad=""
  for f in "${files[@]}"; do
    got=$(OBI_BLAKE3_BACKEND=$backend "$OCIBUILD" hash "$f" 2>&1)
    want=$(b3sum "$f")
    [ "$got" = "$want" ] || bad+="$(basename "$f"): got '$got' want '$want'"$'\n'
  done
  if [ -z "$bad" ]; then t_ok "hash matches b3sum on backend $backend, ${#sizes[@]} sizes"
  else t_fail "hash matches b3sum on backend $backend, ${#sizes[@]} sizes" "$bad"; fi

  OBI_BLAKE3_BACKEND=$backend "$OCIBUILD" hash "${files[@]}" >"$T_TMP/ours" 2>&1
  b3sum "${files[@]}" >"$T_TMP/theirs"
  if cmp -s "$T_TMP/ours" "$T_TMP/theirs"; then t_ok "many files at once on backend $backend"
  else t_fail "many files at once on backend $backend" "$(diff "$T_TMP/ours" "$T_TMP/theirs")"; fi
done

# Larger than one 64 MiB mapping window: hashed through several mappings.
huge=$T_TMP/random-huge
head -c $((64 * 1024 * 1024 + 4097)) /dev/urandom >"$huge"
got=$("$OCIBUILD" hash "$huge" 2>&1)
if [ "$got" = "$(b3sum "$huge")" ]; then t_ok "file larger than one mapping window"
else t_fail "file larger than one mapping window" "$got"; fi
rm -f "$huge"

# An unknown backend name falls back to the default and still hashes correctly.
big=$T_TMP/random-1048577
got=$(OBI_BLAKE3_BACKEND=no-such-backend "$OCIBUILD" hash "$big" 2>&1)
if [ "$got" = "$(b3sum "$big")" ]; then t_ok "unknown OBI_BLAKE3_BACKEND falls back"
else t_fail "unknown OBI_BLAKE3_BACKEND falls back" "$got"; fi

# Standard input: redirected from a regular file (may be mapped) and through a pipe (read).
got=$("$OCIBUILD" hash - <"$big" 2>&1)
if [ "$got" = "$(b3sum - <"$big")" ]; then t_ok "- reads stdin redirected from a file"
else t_fail "- reads stdin redirected from a file" "$got"; fi
got=$(cat "$big" | "$OCIBUILD" hash - 2>&1)
if [ "$got" = "$(b3sum - <"$big")" ]; then t_ok "- reads stdin from a pipe"
else t_fail "- reads stdin from a pipe" "$got"; fi

# Names that need care: spaces, and b3sum's escaping of backslash and newline.
spaced="$T_TMP/name with  spaces"
odd="$T_TMP/back\\slash and
newline"
cp "$T_TMP/random-65" "$spaced"
cp "$T_TMP/random-4097" "$odd"
"$OCIBUILD" hash "$spaced" "$odd" >"$T_TMP/ours" 2>&1
b3sum "$spaced" "$odd" >"$T_TMP/theirs"
if cmp -s "$T_TMP/ours" "$T_TMP/theirs"; then t_ok "names with spaces, backslash, newline as b3sum"
else t_fail "names with spaces, backslash, newline as b3sum" "$(diff "$T_TMP/ours" "$T_TMP/theirs")"; fi

# A missing file: named in the error, exit non-zero, the other files still hashed.
missing="$T_TMP/does not exist"
"$OCIBUILD" hash "$T_TMP/random-1" "$missing" "$T_TMP/random-2049" >"$T_TMP/out" 2>"$T_TMP/err"
rc=$?
expected=$(b3sum "$T_TMP/random-1" "$T_TMP/random-2049")
if [ $rc -ne 0 ] && grep -qF "$missing: No such file or directory" "$T_TMP/err" &&
   [ "$(cat "$T_TMP/out")" = "$expected" ]; then
  t_ok "missing file: error names it, exit non-zero, others hashed"
else
  t_fail "missing file: error names it, exit non-zero, others hashed" \
    "rc=$rc stderr: $(cat "$T_TMP/err") stdout: $(cat "$T_TMP/out")"
fi

# A directory cannot be hashed.
"$OCIBUILD" hash "$T_TMP" >"$T_TMP/out" 2>"$T_TMP/err"
rc=$?
if [ $rc -ne 0 ] && grep -qF "$T_TMP: Is a directory" "$T_TMP/err" && [ ! -s "$T_TMP/out" ]; then
  t_ok "directory: error names it, exit non-zero"
else
  t_fail "directory: error names it, exit non-zero" "rc=$rc stderr: $(cat "$T_TMP/err")"
fi

# No file at all is a usage error.
if "$OCIBUILD" hash >/dev/null 2>"$T_TMP/err"; then t_fail "no arguments is a usage error"
else t_contains "no arguments is a usage error" "$(cat "$T_TMP/err")" "usage: ocibuild hash"; fi

t_done
