#!/bin/bash
# What every ocibuild process pays before main and on its way, kept small (issue 18; the
# figures are in bench/README.md "Start-up", the choices in docs/packaging.md "Static
# dependencies"): the executable maps only libc and libm (jansson, libyaml, sqlite and
# protobuf-c are linked in, unless built with -Dstatic_deps=false), holds no large static TLS
# block (every thread zeroes and faults in its copy), runs no cpuid-probing constructor (libgcc's
# __builtin_cpu_supports initializer: cpuid traps to the hypervisor in a VM), and a trivial build
# from the local store loads none of the libraries it does not use (libfuse3, libarchive,
# libcrypto, libgrpc).
source "$(dirname "$0")/lib.sh"
export OCIBUILD_DATA_DIR="$T_TMP/data"

# ---- the executable ----
needed=$(readelf -d "$OCIBUILD" | sed -n 's/.*(NEEDED).*\[\(.*\)\]/\1/p' | sort | tr '\n' ' ')
options="$(dirname "$OCIBUILD")/meson-info/intro-buildoptions.json"
static=$(python3 -c 'import json,sys; print(next((str(o["value"]).lower() for o in json.load(open(sys.argv[1])) if o["name"]=="static_deps"), "unknown"))' \
  "$options" 2>/dev/null || echo unknown)
if [ "$static" = false ]; then
  t_skip "the executable needs only libc and libm" "built with -Dstatic_deps=false"
elif [[ " $needed" =~ \ lib(jansson|yaml|sqlite3|protobuf-c) ]]; then
  t_fail "the executable needs only libc and libm" "NEEDED: $needed"
else
  t_ok "the executable needs only libc and libm"
fi

tls=$(readelf -lW "$OCIBUILD" | awk '$1 == "TLS" {print $6}')
if [ -n "$tls" ] && [ $((tls)) -gt 4096 ]; then
  t_fail "the static TLS block is at most 4 KiB" "PT_TLS memsz $tls: $(readelf -sW "$OCIBUILD" |
    awk '$4 == "TLS" && $3 > 1024 {print $8, $3}')"
else
  t_ok "the static TLS block is at most 4 KiB"
fi

if ! nm "$OCIBUILD" >"$T_TMP/symbols" 2>/dev/null || [ ! -s "$T_TMP/symbols" ]; then
  t_skip "no cpuid-probing constructor runs before main" "the executable has no symbol table"
elif grep -q '__cpu_indicator_init' "$T_TMP/symbols"; then
  t_fail "no cpuid-probing constructor runs before main" \
    "libgcc's __cpu_indicator_init is linked (__builtin_cpu_supports or __builtin_cpu_init)"
else
  t_ok "no cpuid-probing constructor runs before main"
fi

LD_DEBUG=files "$OCIBUILD" version >/dev/null 2>"$T_TMP/ld-version.log"
loaded=$(sed -n 's/.*file=\([^ ]*\) \[0\];  needed by.*/\1/p' "$T_TMP/ld-version.log" | sort -u |
  tr '\n' ' ')
if [ "$static" = false ]; then
  t_skip "ocibuild version loads only libc and libm" "built with -Dstatic_deps=false"
elif [ -z "$loaded" ]; then
  t_fail "ocibuild version loads only libc and libm" "no LD_DEBUG=files trace"
elif [ "$(sed 's/libc.so.6 //; s/libm.so.6 //' <<<"$loaded")" != "" ]; then
  t_fail "ocibuild version loads only libc and libm" "loaded: $loaded"
else
  t_ok "ocibuild version loads only libc and libm"
fi

# ---- a trivial build ----
if [ "$(id -u)" -ne 0 ]; then
  t_skip "a build from the local store loads no library it does not use" "needs root (rootful builds)"
  t_done; exit
fi
if ! command -v runc >/dev/null && ! command -v crun >/dev/null; then
  t_skip "a build from the local store loads no library it does not use" "no OCI runtime installed"
  t_done; exit
fi
t_trivial_request "$T_TMP/hello.json"
# the first build imports and fills the caches; the second is the one every build repeats
"$OCIBUILD" build --json "$T_TMP/hello.json" >/dev/null 2>"$T_TMP/first.log" ||
  t_fail "a trivial build runs" "$(tail -5 "$T_TMP/first.log")"
if LD_DEBUG=files "$OCIBUILD" build --json "$T_TMP/hello.json" >"$T_TMP/build.json" \
    2>"$T_TMP/ld-build.log" && grep -q '"outputs"' "$T_TMP/build.json"; then
  # only ocibuild's own process: the runtime it starts loads its own libraries
  pid=$(sed -n '1s/^ *\([0-9]*\):.*/\1/p' "$T_TMP/ld-build.log")
  unused=$(grep "^ *$pid:" "$T_TMP/ld-build.log" |
    grep -oE 'file=[^ ]*(libfuse3|libarchive|libcrypto|libgrpc|libcurl)[^ ]*' | sort -u | tr '\n' ' ')
  if [ -n "$unused" ]; then
    t_fail "a build from the local store loads no library it does not use" "loaded: $unused"
  else
    t_ok "a build from the local store loads no library it does not use"
  fi
else
  t_fail "a build from the local store loads no library it does not use" \
    "the build failed: $(grep -v '^ *[0-9]*:' "$T_TMP/ld-build.log" | tail -5)"
fi
t_done
