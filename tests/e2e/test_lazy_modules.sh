#!/bin/bash
# Heavy optional dependencies are loaded on first use, not at start-up (every library mapped
# before main costs every build): libarchive (image layers, src/service/image.c), libcrypto
# (Nix hashes and image digests, src/util/sha256.c) and the gRPC
# layer. The gRPC layer is two modules that ocibuild loads only for grpc+ URLs and `daemon`
# (src/cli/cli_rpc.c): commands that do not talk gRPC must not map libgrpc at all (that is the
# start-up time a build saves); grpc+unix:// loads ocibuild-rpc-h2.so (libnghttp2, no libgrpc:
# docs/rpc.md "Client transports"), grpc+http:// and `daemon` load ocibuild-rpc.so (libgrpc),
# each from beside the executable, and work against a real daemon; a missing or wrong module
# fails with a message naming the module, the paths tried and OCIBUILD_RPC_MODULE or
# OCIBUILD_RPC_H2_MODULE, and leaves nothing behind (no daemon socket). The module's ABI is a digest of the public headers and .proto files (scripts/rpc-abi.py): a
# comment changes nothing, a field or a new header does, the built module carries the digest of
# the tree it was built from, and a module with another (or one from before ABIs were digests)
# is refused naming both.
source "$(dirname "$0")/lib.sh"
cd "$E2E_DIR/../.."
module=$(dirname "$OCIBUILD")/ocibuild-rpc.so
h2_module=$(dirname "$OCIBUILD")/ocibuild-rpc-h2.so
unset OCIBUILD_RPC_MODULE OCIBUILD_RPC_H2_MODULE
export OCIBUILD_DATA_DIR="$T_TMP/data"
echo "some bytes" >"$T_TMP/file"

# ---- no gRPC, no libgrpc ----
LD_DEBUG=files "$OCIBUILD" hash "$T_TMP/file" >/dev/null 2>"$T_TMP/ld-hash.log"
if [ $? -eq 0 ] && grep -q 'file=libc.so.6' "$T_TMP/ld-hash.log"; then
  if grep -q 'libgrpc' "$T_TMP/ld-hash.log"; then
    t_fail "ocibuild hash does not load libgrpc" "$(grep libgrpc "$T_TMP/ld-hash.log" | head -3)"
  else
    t_ok "ocibuild hash does not load libgrpc"
  fi
  if grep -q 'libarchive' "$T_TMP/ld-hash.log"; then
    t_fail "ocibuild hash does not load libarchive" "$(grep libarchive "$T_TMP/ld-hash.log" | head -3)"
  else
    t_ok "ocibuild hash does not load libarchive"
  fi
  if grep -q 'libcrypto' "$T_TMP/ld-hash.log"; then
    t_fail "ocibuild hash does not load libcrypto" "$(grep libcrypto "$T_TMP/ld-hash.log" | head -3)"
  else
    t_ok "ocibuild hash does not load libcrypto"
  fi
else
  t_fail "ocibuild hash does not load libgrpc" "LD_DEBUG=files trace missing: $(head -3 "$T_TMP/ld-hash.log")"
fi
LD_DEBUG=files "$OCIBUILD" store import "$T_TMP/file" >/dev/null 2>"$T_TMP/ld-import.log"
if [ $? -eq 0 ] && ! grep -q 'libgrpc' "$T_TMP/ld-import.log"; then
  t_ok "ocibuild store import into the local store does not load libgrpc"
else
  t_fail "ocibuild store import into the local store does not load libgrpc" \
    "$(grep -m3 'libgrpc\|error' "$T_TMP/ld-import.log")"
fi
t_check "daemon --help needs no module" env OCIBUILD_RPC_MODULE=/nonexistent/rpc.so \
  "$OCIBUILD" daemon --help

# ---- a gRPC URL loads its module beside the executable ----
if [ ! -f "$module" ] || [ ! -f "$h2_module" ]; then
  t_fail "the rpc modules are built beside the executable" "missing: $module or $h2_module"
else
  t_ok "the rpc modules are built beside the executable"
  mkdir "$T_TMP/bin"
  cp "$OCIBUILD" "$module" "$h2_module" "$T_TMP/bin/"
  port=$(/usr/bin/python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
  OCIBUILD_DATA_DIR="$T_TMP/daemon-data" "$OCIBUILD" daemon --listen "unix:$T_TMP/sock" \
    --listen "127.0.0.1:$port" 2>"$T_TMP/daemon.log" &
  daemon_pid=$!
  t_cleanup "kill $daemon_pid; wait $daemon_pid"
  for _ in $(seq 1 100); do [ -S "$T_TMP/sock" ] && break; sleep 0.05; done
  node=$(LD_DEBUG=files "$T_TMP/bin/ocibuild" store import --store "grpc+unix://$T_TMP/sock" \
    "$T_TMP/file" 2>"$T_TMP/ld-grpc.log")
  rc=$?
  if [ $rc -eq 0 ] && [[ "$node" == *'"file"'* ]] &&
    grep -q "file=$T_TMP/bin/ocibuild-rpc-h2.so" "$T_TMP/ld-grpc.log" &&
    grep -q 'file=libnghttp2' "$T_TMP/ld-grpc.log" && ! grep -q 'libgrpc' "$T_TMP/ld-grpc.log"; then
    t_ok "store import over grpc+unix:// loads ocibuild-rpc-h2.so from beside the executable, not libgrpc"
  else
    t_fail "store import over grpc+unix:// loads ocibuild-rpc-h2.so from beside the executable, not libgrpc" \
      "exit $rc, node: $node; $(grep -m3 'libgrpc' "$T_TMP/ld-grpc.log"); $(grep -v 'file=\|^ *[0-9]*:\s*$' "$T_TMP/ld-grpc.log" | head -5)
daemon: $(cat "$T_TMP/daemon.log")"
  fi
  digest=$(printf '%s' "$node" | sed -n 's/.*"digest": *"\([^"]*\)".*/\1/p')
  got=$("$T_TMP/bin/ocibuild" store cat --store "grpc+unix://$T_TMP/sock" "b3:$digest" 2>&1)
  t_contains "the blob reads back over gRPC" "$got" "some bytes"
  got=$(LD_DEBUG=files "$T_TMP/bin/ocibuild" store cat --store "grpc+http://127.0.0.1:$port" \
    "b3:$digest" 2>"$T_TMP/ld-tcp.log")
  if [ "$got" = "some bytes" ] && grep -q "file=$T_TMP/bin/ocibuild-rpc.so" "$T_TMP/ld-tcp.log" &&
    grep -q 'file=libgrpc' "$T_TMP/ld-tcp.log"; then
    t_ok "grpc+http:// loads ocibuild-rpc.so (libgrpc) and reads the blob"
  else
    t_fail "grpc+http:// loads ocibuild-rpc.so (libgrpc) and reads the blob" \
      "got: $got; $(grep -v 'file=\|^ *[0-9]*:\s*$' "$T_TMP/ld-tcp.log" | head -5)"
  fi
fi

# ---- missing or wrong module: a clear error, nothing done ----
out=$(OCIBUILD_RPC_MODULE=/nonexistent/rpc.so "$OCIBUILD" store import \
  --store "grpc+http://127.0.0.1:9" "$T_TMP/file" 2>&1)
rc=$?
if [ $rc -ne 0 ] && [[ "$out" == *"cannot load ocibuild-rpc.so"* ]] &&
  [[ "$out" == *"/nonexistent/rpc.so"* ]] && [[ "$out" == *"OCIBUILD_RPC_MODULE"* ]]; then
  t_ok "a missing module fails the gRPC URL, naming the path and OCIBUILD_RPC_MODULE"
else
  t_fail "a missing module fails the gRPC URL, naming the path and OCIBUILD_RPC_MODULE" \
    "exit $rc: $out"
fi
out=$(OCIBUILD_RPC_H2_MODULE=/nonexistent/h2.so "$OCIBUILD" store import \
  --store "grpc+unix://$T_TMP/other.sock" "$T_TMP/file" 2>&1)
rc=$?
if [ $rc -ne 0 ] && [[ "$out" == *"cannot load ocibuild-rpc-h2.so"* ]] &&
  [[ "$out" == *"/nonexistent/h2.so"* ]] && [[ "$out" == *"OCIBUILD_RPC_H2_MODULE"* ]]; then
  t_ok "a missing unix-socket module fails grpc+unix://, naming the path and OCIBUILD_RPC_H2_MODULE"
else
  t_fail "a missing unix-socket module fails grpc+unix://, naming the path and OCIBUILD_RPC_H2_MODULE" \
    "exit $rc: $out"
fi
libz=$(ldconfig -p | sed -n 's/.*libz\.so\.1 .*=> \(.*\)/\1/p' | head -1)
out=$(OCIBUILD_RPC_H2_MODULE=$libz "$OCIBUILD" build --build-service "grpc+unix://$T_TMP/other.sock" \
  examples/hello.json 2>&1)
rc=$?
if [ -n "$libz" ] && [ $rc -ne 0 ] && [[ "$out" == *"no symbol obi_rpc_module_table"* ]]; then
  t_ok "a library that is not the rpc module is refused (no entry table)"
else
  t_fail "a library that is not the rpc module is refused (no entry table)" "exit $rc: $out"
fi
# ---- the ABI: derived from the headers, checked on load ----
abi_of() { python3 scripts/rpc-abi.py "$1"; }
abi=$(abi_of .)
if [ -f "$module" ] && grep -q -a "$abi" "$module" && grep -q -a "$abi" "$h2_module" &&
  grep -q -a "$abi" "$OCIBUILD"; then
  t_ok "the module and the executable carry the ABI of the headers they were built from"
else
  t_fail "the module and the executable carry the ABI of the headers they were built from" \
    "$abi not in $module, $h2_module and $OCIBUILD (a stale build?)"
fi
mkdir -p "$T_TMP/tree"
cp -r include proto scripts "$T_TMP/tree/"
fs_h="$T_TMP/tree/include/ocibuild/fs.h"
printf '/* a comment // that changes nothing "" */\n' >>"$fs_h"
sed -i 's/^#include <stddef.h>$/#include   <stddef.h>  \/\/ spacing too/' "$fs_h"
if grep -q 'spacing too' "$fs_h" && [ "$(abi_of "$T_TMP/tree")" = "$abi" ]; then
  t_ok "a comment or spacing in a header keeps the ABI"
else
  t_fail "a comment or spacing in a header keeps the ABI" "$(tail -2 "$fs_h")"
fi
sed -i 's/^    char abi\[OBI_RPC_MODULE_ABI_LEN + 1\];$/&\n    int planted;/' \
  "$T_TMP/tree/include/ocibuild/rpc.h"
changed=$(abi_of "$T_TMP/tree")
if grep -q 'int planted;' "$T_TMP/tree/include/ocibuild/rpc.h" && [ "$changed" != "$abi" ]; then
  t_ok "a field added to a shared struct changes the ABI"
else
  t_fail "a field added to a shared struct changes the ABI" "still $changed"
fi
echo 'int obi_planted(void);' >"$T_TMP/tree/include/ocibuild/planted.h"
t_check "a header added changes the ABI" [ "$(abi_of "$T_TMP/tree")" != "$changed" ]

# Two impostors at OBI_RPC_MODULE_SYMBOL: a module built from other headers (another digest),
# and one from before ABIs were digests (an unsigned 2 first).
cc=${CC:-cc}
if ! command -v "$cc" >/dev/null; then
  t_skip "stale modules are refused" "no C compiler ($cc) to build them"
else
  cat >"$T_TMP/stale.c" <<'C'
const struct { char abi[33]; void *functions[10]; } obi_rpc_module_table = {
    "0123456789abcdef0123456789abcdef", {0}};
C
  cat >"$T_TMP/numbered.c" <<'C'
const struct { unsigned abi; void *functions[10]; } obi_rpc_module_table = {2, {0}};
C
  for m in stale numbered; do
    "$cc" -shared -fPIC -o "$T_TMP/$m.so" "$T_TMP/$m.c" || t_fail "compile the $m module"
  done
  out=$(OCIBUILD_RPC_H2_MODULE="$T_TMP/stale.so" "$OCIBUILD" store import \
    --store "grpc+unix://$T_TMP/other.sock" "$T_TMP/file" 2>&1)
  rc=$?
  if [ $rc -ne 0 ] &&
    [[ "$out" == *"module ABI 0123456789abcdef0123456789abcdef, this ocibuild needs $abi"* ]]; then
    t_ok "a module built from other headers is refused, naming both ABIs"
  else
    t_fail "a module built from other headers is refused, naming both ABIs" "exit $rc: $out"
  fi
  out=$(OCIBUILD_RPC_MODULE="$T_TMP/numbered.so" "$OCIBUILD" daemon \
    --listen "unix:$T_TMP/numbered.sock" 2>&1)
  rc=$?
  if [ $rc -ne 0 ] && [[ "$out" == *"not a digest"* ]] && [ ! -e "$T_TMP/numbered.sock" ]; then
    t_ok "a module from before ABIs were digests is refused (no socket left)"
  else
    t_fail "a module from before ABIs were digests is refused (no socket left)" "exit $rc: $out"
  fi
fi

out=$(OCIBUILD_RPC_MODULE=/nonexistent/rpc.so "$OCIBUILD" daemon \
  --listen "unix:$T_TMP/nodaemon.sock" 2>&1)
rc=$?
if [ $rc -ne 0 ] && [[ "$out" == *"cannot load ocibuild-rpc.so"* ]] &&
  [ ! -e "$T_TMP/nodaemon.sock" ]; then
  t_ok "daemon without its module fails before listening (no socket left)"
else
  t_fail "daemon without its module fails before listening (no socket left)" "exit $rc: $out"
fi
t_done
