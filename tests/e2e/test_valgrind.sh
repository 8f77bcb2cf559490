#!/bin/bash
# The CLI paths under valgrind memcheck: definite and indirect leaks and memory errors fail the
# case (exit 99 from --error-exitcode). "possibly"/"still reachable" blocks are not errors: they
# are what glibc, OpenSSL and jansson keep for the process lifetime. Only ocibuild itself runs
# under valgrind (--trace-children=no): runc and nix-store are children. One TAP line per path:
# hash, store import/ls/cat/export/verify/gc/roots/du (and over grpc+unix), spec of every examples/requests/*.json, service spec,
# ps --json, ls and logs --tail, an
# invalid request (the error path), a remote-builder serve session and, as root with runc, a
# trivial, a failing and a timed-out build, and one with its inputs over FUSE.
source "$(dirname "$0")/lib.sh"
root=$(cd "$E2E_DIR/../.." && pwd)

if ! command -v valgrind >/dev/null; then
  t_skip "CLI paths under valgrind" "valgrind is not installed (Debian package valgrind)"
  t_done; exit
fi

VG=(valgrind -q --leak-check=full --errors-for-leak-kinds=definite,indirect --error-exitcode=99
    --trace-children=no --track-fds=no --suppressions="$root/tests/e2e/valgrind.supp")
# vg NAME EXPECTED_EXIT CMD...: runs ocibuild CMD under valgrind; passes when the exit status
# is EXPECTED_EXIT (not 99) and valgrind reported nothing.
vg() {
  local name=$1 want=$2; shift 2
  local log="$T_TMP/vg-$T_NUM.log" rc
  "${VG[@]}" --log-file="$log.%p" "$OCIBUILD" "$@" >"$T_TMP/vg.out" 2>"$T_TMP/vg.err" </dev/null &
  local main=$!
  wait $main
  rc=$?
  # A log per process: `build` leaves its bundle's removal to a forked child that outlives it
  # (docs/build.md "After the answer"), still under valgrind, whose report comes when it ends.
  # Its memory errors count; its leak records do not: its heap is the caller's at the fork,
  # left as it is by _exit.
  local f pid i
  cp "$log.$main" "$log"
  for f in "$log".*; do
    pid=${f##*.}
    [ "$pid" = "$main" ] && continue
    for ((i = 0; i < 200; i++)); do kill -0 "$pid" 2>/dev/null || break; sleep 0.05; done
    awk '/ bytes in [0-9,]+ blocks are .* lost in loss record / { skip = 1 }
      skip && /^==[0-9]+== $/ { skip = 0; next } !skip' "$f" >>"$log"
  done
  # "==PID==" lines are memcheck's reports; "--PID--" lines are notes such as valgrind not
  # knowing a newer syscall (pidfd_open), which the program handles.
  if [ "$rc" -eq "$want" ] && ! grep -q '^==' "$log"; then
    t_ok "$name"
  else
    t_fail "$name" "exit $rc (want $want)
$(grep -v "^--" "$log" | head -60)
$(tail -5 "$T_TMP/vg.err")"
  fi
}

export OCIBUILD_STORE="$T_TMP/store"
tree=$T_TMP/tree
mkdir -p "$tree/sub/deeper"
printf 'hello\n' >"$tree/a"
head -c 300000 /dev/urandom >"$tree/sub/big"
printf '#!/bin/sh\n' >"$tree/sub/run" && chmod +x "$tree/sub/run"
ln -s ../a "$tree/sub/link"

vg "hash of two files" 0 hash "$tree/a" "$tree/sub/big"
vg "store import of a small tree" 0 store import "$tree"
node=$(cat "$T_TMP/vg.out")
printf '%s' "$node" >"$T_TMP/node.json"
vg "store ls of the imported tree" 0 store ls "$node"
digest=$(b3sum --no-names "$tree/a" 2>/dev/null || "$OCIBUILD" hash "$tree/a" | cut -d' ' -f1)
vg "store cat of a blob" 0 store cat "$digest"
vg "store export of the tree" 0 store export "$node" "$T_TMP/exported"
vg "store verify of the store" 0 store verify
vg "store import with a root" 0 store import --root vg/tree "$tree"
vg "store roots" 0 store roots
vg "store du" 0 store du
vg "store gc --dry-run" 0 store gc --dry-run
vg "store gc" 0 store gc
vg "store verify --repair" 0 store verify --repair

# The grpc+unix client (HTTP/2 on libnghttp2, ocibuild-rpc-h2.so) against a daemon that runs
# outside valgrind: unary, client- and server-streaming calls, and a NOT_FOUND status.
OCIBUILD_DATA_DIR="$T_TMP/daemon-data" "$OCIBUILD" daemon --listen "unix:$T_TMP/d.sock" \
  --store "$T_TMP/daemon-store" 2>"$T_TMP/daemon.log" &
daemon=$!
t_cleanup "kill $daemon; wait $daemon"
for _ in $(seq 100); do [ -S "$T_TMP/d.sock" ] && break; sleep 0.05; done
vg "store import over grpc+unix (the h2 client)" 0 store import --store "grpc+unix://$T_TMP/d.sock" "$tree"
remote_node=$(cat "$T_TMP/vg.out")
vg "store export over grpc+unix" 0 store export --store "grpc+unix://$T_TMP/d.sock" "$remote_node" \
  "$T_TMP/exported-remote"
vg "store cat of a missing blob over grpc+unix (NOT_FOUND)" 1 store cat \
  --store "grpc+unix://$T_TMP/d.sock" "$(printf '%064d' 0)"
if diff -r "$tree" "$T_TMP/exported" >/dev/null; then t_ok "exported tree equals the source"
else t_fail "exported tree equals the source" "$(diff -r "$tree" "$T_TMP/exported" 2>&1 | head)"; fi

for req in "$root"/examples/requests/*.json; do
  vg "spec of examples/requests/$(basename "$req")" 0 spec "$req"
done

cp "$root/tests/fuzz/corpus/deployment/vg-test.yaml" "$T_TMP/deploy.yaml"
vg "service spec of a deployment" 0 service spec "$T_TMP/deploy.yaml" web --data-dir "$T_TMP/data"
# every zlayer key (namespace modes, init_container, stop annotations, port_mappings, ...) on a
# local rootfs, as test_service_zlayer.sh rewrites the corpus document; but extra_groups, whose
# name lookup uses openat2, a syscall valgrind 3.19 does not know
mkdir -p "$T_TMP/zl-rootfs" "$T_TMP/zl-pipe" "$T_TMP/zl-log"
sed -e "s|image: { name: ghcr.io/acme/api:1.2,|image: { rootfs: $T_TMP/zl-rootfs,|" -e '/extra_groups:/d' \
    -e "s|/run/mps-pipe|$T_TMP/zl-pipe|; s|/run/mps-log|$T_TMP/zl-log|" \
    "$root/tests/fuzz/corpus/deployment/zlayer-every-key.yaml" >"$T_TMP/zlayer.yaml"
vg "service spec of every zlayer key" 0 service spec "$T_TMP/zlayer.yaml" api --data-dir "$T_TMP/data"
vg "service ps --json of a deployment never up" 0 service ps "$T_TMP/deploy.yaml" --json --data-dir "$T_TMP/data"
vg "service ls" 0 service ls --data-dir "$T_TMP/data"
vg "service logs --tail of a deployment never up" 0 service logs "$T_TMP/deploy.yaml" --tail 3 --data-dir "$T_TMP/data"

printf '{"commandArgs": ["/bin/sh"], "outputs": ["b", "a"]}' >"$T_TMP/invalid.json"
vg "spec of an invalid request fails cleanly" 1 spec "$T_TMP/invalid.json"
vg "service spec of a missing service fails cleanly" 1 service spec "$T_TMP/deploy.yaml" nope

# A serve-protocol session (remote-builder, docs/farm.md) driven by tests/e2e/serve_client.py:
# ImportPaths, QueryValidPaths, QueryPathInfos, DumpStorePath, ExportPaths, then EOF.
if ! "$E2E_DIR/nix_setup.sh" >/dev/null 2>&1; then
  t_skip "remote-builder serve session under valgrind" "Nix is not usable (nix_setup.sh)"
else
  served=$(nix-store --add /bin/busybox)
  log="$T_TMP/vg-serve.log"
  if OCIBUILD_DATA_DIR=$T_TMP/serve-data /usr/bin/python3 "$E2E_DIR/serve_client.py" \
       --ssh "${VG[*]} --log-file=$log $OCIBUILD remote-builder --write" "$served" \
       >"$T_TMP/vg-serve.out" 2>&1 && ! grep -q '^==' "$log"; then
    t_ok "remote-builder serve session under valgrind"
  else
    t_fail "remote-builder serve session under valgrind" "$(grep -v "^--" "$log" | head -40)
$(tail -5 "$T_TMP/vg-serve.out")"
  fi
fi

if [ "$(id -u)" -ne 0 ] || ! command -v runc >/dev/null; then
  t_skip "trivial build under valgrind" "needs root and runc"
else
  export OCIBUILD_DATA_DIR="$T_TMP/build-data"
  t_trivial_request "$T_TMP/build.json"
  if [ -x /bin/busybox ]; then
    vg "trivial build under valgrind" 0 build "$T_TMP/build.json"
    # The run's other endings: a failing exit (deleted after, exit 100) and a timeout (killed,
    # deleted, exit 101).
    sed 's|mkdir -p /nix/store/out && echo hi > /nix/store/out/f|echo failing >\&2; exit 3|' \
      "$T_TMP/build.json" >"$T_TMP/failing.json"
    vg "failing build under valgrind" 100 build "$T_TMP/failing.json"
    sed 's|mkdir -p /nix/store/out && echo hi > /nix/store/out/f|sleep 30|' \
      "$T_TMP/build.json" >"$T_TMP/slow.json"
    vg "timed-out build under valgrind" 101 build --timeout 1 "$T_TMP/slow.json"
    # The FUSE server's threads, its mount and its close (issue 20), when FUSE is there.
    if [ -c /dev/fuse ] && command -v fusermount3 >/dev/null; then
      vg "build with inputs over FUSE under valgrind" 0 build --inputs fuse "$T_TMP/build.json"
    else
      t_skip "build with inputs over FUSE under valgrind" "/dev/fuse or fusermount3 is missing (apt-get install fuse3)"
    fi
  else
    t_skip "trivial build under valgrind" "/bin/busybox is missing (Debian package busybox-static)"
  fi
fi
t_done
