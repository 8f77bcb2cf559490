#!/bin/bash
# Heavy optional dependencies are loaded on first use, not at start-up (every library mapped
# before main costs every build): libarchive (image layers, src/service/image.c) and the gRPC
# layer. The gRPC layer is a module (ocibuild-rpc.so) that ocibuild loads only for grpc+ URLs and
# `daemon` (src/cli/cli_rpc.c): commands that do not talk gRPC must not map libgrpc at all (that
# is the start-up time a build saves); a gRPC URL loads it from beside the executable and works
# against a real daemon; a missing or wrong module fails with a message naming the module, the
# paths tried and OCIBUILD_RPC_MODULE, and leaves nothing behind (no daemon socket).
source "$(dirname "$0")/lib.sh"
cd "$E2E_DIR/../.."
module=$(dirname "$OCIBUILD")/ocibuild-rpc.so
unset OCIBUILD_RPC_MODULE
export OCIBUILD_DATA_DIR="$T_TMP/data"
echo "some bytes" >"$T_TMP/file"

# ---- no gRPC, no libgrpc ----
LD_DEBUG=files "$OCIBUILD" hash "$T_TMP/file" >/dev/null 2>"$T_TMP/ld-hash.log"
if [ $? -eq 0 ] && grep -q 'file=libjansson' "$T_TMP/ld-hash.log"; then
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

# ---- a gRPC URL loads the module beside the executable ----
if [ ! -f "$module" ]; then
  t_fail "the rpc module is built beside the executable" "missing: $module"
else
  t_ok "the rpc module is built beside the executable"
  mkdir "$T_TMP/bin"
  cp "$OCIBUILD" "$module" "$T_TMP/bin/"
  OCIBUILD_DATA_DIR="$T_TMP/daemon-data" "$OCIBUILD" daemon --listen "unix:$T_TMP/sock" \
    2>"$T_TMP/daemon.log" &
  daemon_pid=$!
  t_cleanup "kill $daemon_pid; wait $daemon_pid"
  for _ in $(seq 1 100); do [ -S "$T_TMP/sock" ] && break; sleep 0.05; done
  node=$(LD_DEBUG=files "$T_TMP/bin/ocibuild" store import --store "grpc+unix://$T_TMP/sock" \
    "$T_TMP/file" 2>"$T_TMP/ld-grpc.log")
  rc=$?
  if [ $rc -eq 0 ] && [[ "$node" == *'"file"'* ]] &&
    grep -q "file=$T_TMP/bin/ocibuild-rpc.so" "$T_TMP/ld-grpc.log" &&
    grep -q 'file=libgrpc' "$T_TMP/ld-grpc.log"; then
    t_ok "store import over grpc+unix:// loads ocibuild-rpc.so from beside the executable"
  else
    t_fail "store import over grpc+unix:// loads ocibuild-rpc.so from beside the executable" \
      "exit $rc, node: $node; $(grep -v 'file=\|^ *[0-9]*:\s*$' "$T_TMP/ld-grpc.log" | head -5)
daemon: $(cat "$T_TMP/daemon.log")"
  fi
  digest=$(printf '%s' "$node" | sed -n 's/.*"digest": *"\([^"]*\)".*/\1/p')
  got=$("$T_TMP/bin/ocibuild" store cat --store "grpc+unix://$T_TMP/sock" "b3:$digest" 2>&1)
  t_contains "the blob reads back over gRPC" "$got" "some bytes"
fi

# ---- missing or wrong module: a clear error, nothing done ----
out=$(OCIBUILD_RPC_MODULE=/nonexistent/rpc.so "$OCIBUILD" store import \
  --store "grpc+unix://$T_TMP/other.sock" "$T_TMP/file" 2>&1)
rc=$?
if [ $rc -ne 0 ] && [[ "$out" == *"cannot load ocibuild-rpc.so"* ]] &&
  [[ "$out" == *"/nonexistent/rpc.so"* ]] && [[ "$out" == *"OCIBUILD_RPC_MODULE"* ]]; then
  t_ok "a missing module fails the gRPC URL, naming the path and OCIBUILD_RPC_MODULE"
else
  t_fail "a missing module fails the gRPC URL, naming the path and OCIBUILD_RPC_MODULE" \
    "exit $rc: $out"
fi
libz=$(ldconfig -p | sed -n 's/.*libz\.so\.1 .*=> \(.*\)/\1/p' | head -1)
out=$(OCIBUILD_RPC_MODULE=$libz "$OCIBUILD" build --build-service "grpc+unix://$T_TMP/other.sock" \
  examples/hello.json 2>&1)
rc=$?
if [ -n "$libz" ] && [ $rc -ne 0 ] && [[ "$out" == *"no symbol obi_rpc_module_table"* ]]; then
  t_ok "a library that is not the rpc module is refused (no entry table)"
else
  t_fail "a library that is not the rpc module is refused (no entry table)" "exit $rc: $out"
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
