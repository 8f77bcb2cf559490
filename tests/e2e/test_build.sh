#!/bin/bash
# End-to-end builds with a real OCI runtime (runc pinned, as root: the default runtime, crun where
# it works, is what test_default_runtime.sh, test_everyday.sh and the sandbox tests run on): outputs and needles, sandbox
# properties (no network, /bin/sh only when asked, uid 1000, cwd /build, read-only root and
# inputs, available_ro_paths, additional files), output files adopted by the store (not when
# linked twice, on a tmpfs scratch or held open for writing by a process outside), and every
# failure path leaving no container,
# no mount and no bundle dir behind (failing command, missing output, invalid requests,
# timeout, SIGTERM to ocibuild mid-build).
source "$(dirname "$0")/lib.sh"

if [ "$(id -u)" -ne 0 ]; then
  t_skip "builds as root" "not running as root: rootful runc builds need root"
  t_done; exit
fi
if ! command -v runc >/dev/null; then
  t_skip "builds with runc" "runc is not installed (apt-get install runc)"
  t_done; exit
fi

export OCIBUILD_STORE="$T_TMP/store"
DATA="$T_TMP/data"
export OCIBUILD_DATA_DIR="$DATA"
BUNDLES="$DATA/bundles"

# request NAME ARGS_JSON [EXTRA_JSON_FIELDS] -> writes $T_TMP/NAME.json (friendly form)
request() {
  local name=$1 script=$2 extra=${3:-}
  cat >"$T_TMP/$name.json" <<JSON
{
  "inputs": {"busybox": "/bin/busybox"},
  "command_args": ["/nix/store/busybox", "sh", "-c", $(printf '%s' "$script" | python3 -c 'import json,sys; print(json.dumps(sys.stdin.read()))')],
  "working_dir": "build",
  "scratch_paths": ["build", "nix/store"],
  "inputs_dir": "nix/store",
  "outputs": ["nix/store/out"],
  "env": {"NEEDLE": "needle-$name"}
  $extra
}
JSON
}

RUNTIME=(--runtime runc) # keeps runc's path tested (docs/build.md "The default runtime")
# Each build's leftovers are gone before the next step (lib.sh t_settle): the next build must
# get the id slot (and so the root skeleton) this one had.
build() {
  local rc=0
  "$OCIBUILD" build "${RUNTIME[@]}" "$@" 2>"$T_TMP/stderr" || rc=$?
  t_settle "$DATA"
  return $rc
}

no_leftovers() { # $1 = label
  local left
  t_settle "$DATA"
  left=$(ls -A "$BUNDLES" 2>/dev/null | grep -v '^\.' || true)
  [ -z "$left" ] || { echo "bundle dirs left: $left"; return 1; }
  # Only this test's containers: other builds may run on the machine at the same time. Both
  # runtimes: the default is crun where it works (test_default_runtime.sh).
  for rt in runc crun; do
    command -v $rt >/dev/null || continue
    t_containers_below $rt "$BUNDLES" || { echo "$rt containers left"; return 1; }
  done
  grep -F "$BUNDLES" /proc/self/mountinfo && { echo "mounts left"; return 1; }
  return 0
}

# --- happy path: output tree and needles ---
request ok 'mkdir -p /nix/store/out/sub && echo "$NEEDLE" > /nix/store/out/sub/file && echo abcdefghijklmnopqrstuvwxyz012345 >> /nix/store/out/sub/file && ln -s /nix/store/zyxwvutsrqponmlkjihgfedcba987654-x /nix/store/out/link && echo log-line-to-stderr >&2' \
  ', "refscan_needles": ["abcdefghijklmnopqrstuvwxyz012345", "notpresentnotpresentnotpresent00", "zyxwvutsrqponmlkjihgfedcba987654"]'
if out=$(build "$T_TMP/ok.json"); then
  t_ok "trivial build succeeds"
  node=$(echo "$out" | python3 -c 'import json,sys; b=json.load(sys.stdin); print(json.dumps(b["outputs"][0]))')
  needles=$(echo "$out" | python3 -c 'import json,sys; b=json.load(sys.stdin); print(b["outputsNeedles"][0].get("needles", []))')
  t_contains "output node is a directory named after the output" "$node" '"directory"'
  t_contains "output node name is base64('out')" "$node" '"name": "b3V0"'
  [ "$needles" = "['0', '2']" ] || [ "$needles" = "[0, 2]" ] && t_ok "needles found in contents and symlink target, not the absent one" || t_fail "needles" "got $needles"
  "$OCIBUILD" store export - "$T_TMP/exported" <<<"$node" 2>"$T_TMP/export.err"
  if [ "$(head -1 "$T_TMP/exported/sub/file" 2>/dev/null)" = "needle-ok" ] && [ -L "$T_TMP/exported/link" ]; then
    t_ok "exported output has the build's files and symlink"
  else
    t_fail "exported output has the build's files and symlink" "$(cat "$T_TMP/export.err"; ls -laR "$T_TMP/exported" 2>&1)"
  fi
  t_contains "build log streamed to stderr" "$(cat "$T_TMP/stderr")" "log-line-to-stderr"
else
  t_fail "trivial build succeeds" "$(cat "$T_TMP/stderr")"
fi
t_check "no leftovers after a successful build" no_leftovers

# --- sandbox properties, each checked from inside ---
request props 'mkdir -p /nix/store/out
id -u > /nix/store/out/uid; id -g > /nix/store/out/gid; pwd > /nix/store/out/cwd
tail -n +3 /proc/net/dev | cut -d: -f1 | tr -d " " > /nix/store/out/netdevs
[ -e /bin/sh ] && echo yes > /nix/store/out/binsh || echo no > /nix/store/out/binsh
touch /etc/x 2>/dev/null && echo writable > /nix/store/out/rootfs || echo ro > /nix/store/out/rootfs
touch /nix/store/busybox 2>/dev/null && echo writable > /nix/store/out/inputs || echo ro > /nix/store/out/inputs
cat /etc/passwd > /nix/store/out/passwd; echo "$HOME" > /nix/store/out/home
grep " /tmp tmpfs " /proc/mounts | cut -d" " -f2,3 > /nix/store/out/tmp'
if out=$(build "$T_TMP/props.json"); then
  node=$(echo "$out" | python3 -c 'import json,sys; print(json.dumps(json.load(sys.stdin)["outputs"][0]))')
  "$OCIBUILD" store export - "$T_TMP/props" <<<"$node"
  p="$T_TMP/props"
  [ "$(cat $p/uid):$(cat $p/gid)" = "1000:100" ] && t_ok "build runs as uid 1000 gid 100" || t_fail "uid/gid" "$(cat $p/uid):$(cat $p/gid)"
  [ "$(cat $p/cwd)" = "/build" ] && t_ok "cwd is /build" || t_fail "cwd" "$(cat $p/cwd)"
  [ "$(cat $p/netdevs)" = "lo" ] && t_ok "network: only lo without network_access" || t_fail "network" "$(cat $p/netdevs)"
  [ "$(cat $p/binsh)" = "no" ] && t_ok "no /bin/sh unless provide_bin_sh" || t_fail "/bin/sh present"
  [ "$(cat $p/rootfs)" = "ro" ] && t_ok "root filesystem is read-only" || t_fail "root writable"
  [ "$(cat $p/inputs)" = "ro" ] && t_ok "inputs are read-only" || t_fail "inputs writable"
  grep -q '^nixbld:x:1000:100:Nix build user:/build:/noshell$' $p/passwd && t_ok "/etc/passwd as Nix writes it" || t_fail "passwd" "$(cat $p/passwd)"
  [ "$(cat $p/tmp)" = "/tmp tmpfs" ] && t_ok "/tmp is a private tmpfs" || t_fail "/tmp" "$(cat $p/tmp)"
else
  t_fail "sandbox property build" "$(cat "$T_TMP/stderr")"
fi

# --- provide_bin_sh, network_access, available_ro_paths, additional files ---
# Outside /tmp: inside the sandbox /tmp is a tmpfs of its own (mode 1777, as Nix's), so a ro path
# below the host's /tmp would be hidden by it.
RO=$(mktemp -d /var/tmp/obi-ro.XXXXXX); chmod 755 "$RO"; t_cleanup "rm -rf '$RO'"
mkdir -p "$RO/ro-data" && echo host-data > "$RO/ro-data/file"
request extras 'mkdir -p /nix/store/out
/bin/sh -c "echo sh-works" > /nix/store/out/binsh
tail -n +3 /proc/net/dev | cut -d: -f1 | tr -d " " | sort > /nix/store/out/netdevs
cat '"$RO"'/ro-data/file > /nix/store/out/ro; touch '"$RO"'/ro-data/new 2>/dev/null && echo writable >> /nix/store/out/ro
cat /build/.attr-test > /nix/store/out/attr' \
  ', "constraints": {"system": "x86_64-linux", "provide_bin_sh": true, "network_access": true, "available_ro_paths": ["'"$RO"'/ro-data"]}, "additional_files": [{"path": "build/.attr-test", "contents": "'"$(printf 'attr-contents' | base64)"'"}]'
if out=$(build "$T_TMP/extras.json"); then
  node=$(echo "$out" | python3 -c 'import json,sys; print(json.dumps(json.load(sys.stdin)["outputs"][0]))')
  "$OCIBUILD" store export - "$T_TMP/extras" <<<"$node"
  e="$T_TMP/extras"
  [ "$(cat $e/binsh)" = "sh-works" ] && t_ok "/bin/sh provided when asked" || t_fail "/bin/sh" "$(cat $e/binsh)"
  [ "$(wc -l < $e/netdevs)" -gt 1 ] && t_ok "network_access shares the host network" || t_fail "network_access" "$(cat $e/netdevs)"
  [ "$(cat $e/ro)" = "host-data" ] && t_ok "available_ro_paths visible and read-only" || t_fail "ro paths" "$(cat $e/ro)"
  [ "$(cat $e/attr)" = "attr-contents" ] && t_ok "additional files present" || t_fail "additional files" "$(cat $e/attr)"
else
  t_fail "extras build" "$(cat "$T_TMP/stderr")"
fi

# --- outputs adopted by the store, not copied (docs/store.md "Adopting a build's outputs") ---
# A file with one link becomes its blob (the same inode, found by the number the build saw),
# root's and 0444 whatever mode the build gave it, without xattrs; a file with a second link is
# copied. On a tmpfs scratch (--scratch-limit) every file is copied.
blobs_by_inode() { find "$OCIBUILD_STORE/blobs" -xdev -type f -inum "$1" ! -name '.*'; }
blob_attrs() { # PATH -> "MODE UID GID LINKS XATTRS"
  echo "$(stat -c '%a %u %g %h' "$1") $(/usr/bin/python3 -c 'import os,sys; print(len(os.listxattr(sys.argv[1])))' "$1")"
}
request adopt 'mkdir -p /nix/store/out && cd /nix/store/out &&
printf "adopted %s\n" "$NEEDLE" > f && chmod 777 f && stat -c %i f > ino-f &&
printf "linked twice\n" > twice && ln twice twice2 && stat -c %i twice > ino-twice'
if out=$(build "$T_TMP/adopt.json"); then
  node=$(echo "$out" | python3 -c 'import json,sys; print(json.dumps(json.load(sys.stdin)["outputs"][0]))')
  "$OCIBUILD" store export - "$T_TMP/adopt" <<<"$node"
  a="$T_TMP/adopt"
  blob=$(blobs_by_inode "$(cat "$a/ino-f")")
  [ -n "$blob" ] && [ "$(cat "$blob")" = "adopted needle-adopt" ] &&
    t_ok "a file with one link is adopted: its blob is the build's inode" ||
    t_fail "a file with one link is adopted" "blob '$blob' for inode $(cat "$a/ino-f")"
  [ -n "$blob" ] && [ "$(blob_attrs "$blob")" = "444 0 0 1 0" ] &&
    t_ok "the adopted blob is root's, 0444 (the build's 0777 gone), one link, no xattrs" ||
    t_fail "adopted blob attributes" "$(blob_attrs "$blob" 2>&1)"
  [ -z "$(blobs_by_inode "$(cat "$a/ino-twice")")" ] && [ "$(cat "$a/twice2")" = "linked twice" ] &&
    t_ok "a file with a second link is copied, not adopted" ||
    t_fail "a file with a second link is copied" "$(blobs_by_inode "$(cat "$a/ino-twice")")"
else
  t_fail "adopt build" "$(cat "$T_TMP/stderr")"
fi
t_check "no leftovers after an adopting build" no_leftovers
sed -i 's/needle-adopt/needle-adopt-tmpfs/' "$T_TMP/adopt.json"
if out=$(build --scratch-limit 16Mi "$T_TMP/adopt.json"); then
  node=$(echo "$out" | python3 -c 'import json,sys; print(json.dumps(json.load(sys.stdin)["outputs"][0]))')
  "$OCIBUILD" store export - "$T_TMP/adopt-tmpfs" <<<"$node"
  blob=$(grep -rlx "adopted needle-adopt-tmpfs" "$OCIBUILD_STORE/blobs")
  [ -n "$blob" ] && [ "$(blob_attrs "$blob")" = "444 0 0 1 0" ] &&
    t_ok "an output on a tmpfs scratch is copied: a blob of the store's own, root's 0444" ||
    t_fail "tmpfs scratch output" "blob '$blob' $(blob_attrs "$blob" 2>&1)"
else
  t_fail "adopt build on a tmpfs scratch" "$(cat "$T_TMP/stderr")"
fi
t_check "no leftovers after a build with a tmpfs scratch" no_leftovers

# A build with network_access shares the host's abstract unix sockets: it can hand a writable
# descriptor of its output to a process outside (fd_pass.c), which outlives the container. That
# file has a writer left (the read lease is refused): it is copied, and what the holder writes
# after the build never reaches the blob.
if cc -static -O1 -o "$T_TMP/fd_pass" "$E2E_DIR/fd_pass.c" 2>"$T_TMP/cc.err"; then
  sock="obi-fd-pass-$$-$RANDOM"
  /usr/bin/python3 - "$sock" "$T_TMP/holder" <<'PY' &
import os, socket, sys, time
name, base = sys.argv[1], sys.argv[2]
server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
server.bind("\0" + name)
server.listen(1)
open(base + ".listening", "w").close()
server.settimeout(60)
conn, _ = server.accept()
_, fds, _, _ = socket.recv_fds(conn, 1, 1)
conn.send(b"k")
conn.close()
deadline = time.time() + 60
while not os.path.exists(base + ".go") and time.time() < deadline:
    time.sleep(0.05)
os.pwrite(fds[0], b"CHANGED!", 0)
open(base + ".wrote", "w").close()
PY
  holder=$!
  t_cleanup "kill $holder 2>/dev/null"
  for _ in $(seq 100); do [ -e "$T_TMP/holder.listening" ] && break; sleep 0.05; done
  cat >"$T_TMP/fdpass.json" <<JSON
{
  "inputs": {"busybox": "/bin/busybox", "fd_pass": "$T_TMP/fd_pass"},
  "command_args": ["/nix/store/busybox", "sh", "-c", "mkdir -p /nix/store/out && printf 'original\\\\n' > /nix/store/out/f && /nix/store/fd_pass /nix/store/out/f $sock"],
  "working_dir": "build",
  "scratch_paths": ["build", "nix/store"],
  "inputs_dir": "nix/store",
  "outputs": ["nix/store/out/f"],
  "constraints": {"system": "x86_64-linux", "network_access": true}
}
JSON
  if out=$(build "$T_TMP/fdpass.json"); then
    touch "$T_TMP/holder.go"
    wait "$holder"
    node=$(echo "$out" | python3 -c 'import json,sys; print(json.dumps(json.load(sys.stdin)["outputs"][0]))')
    [ -e "$T_TMP/holder.wrote" ] && "$OCIBUILD" store export - "$T_TMP/fdpass-f" <<<"$node" 2>"$T_TMP/fdpass.err" &&
      [ "$(cat "$T_TMP/fdpass-f")" = "original" ] &&
      t_ok "a file whose writable descriptor a host process holds is copied; its later writes miss the blob" ||
      t_fail "a file with a writer outside is copied" "$(cat "$T_TMP/fdpass.err" "$T_TMP/fdpass-f" 2>&1)"
  else
    t_fail "fd passing build" "$(cat "$T_TMP/stderr")"
  fi
else
  t_skip "a file with a writer outside is copied" "no static C compiler: $(head -1 "$T_TMP/cc.err")"
fi

# --- failures ---
request failing 'echo about-to-fail >&2; exit 3'
if build "$T_TMP/failing.json" >/dev/null; then t_fail "failing command fails the build"; else
  msg=$(cat "$T_TMP/stderr")
  t_contains "failing build reports the exit code" "$msg" "exit code 3"
  t_contains "failing build shows the log tail" "$msg" "about-to-fail"
fi
t_check "no leftovers after a failing build" no_leftovers

request missing 'mkdir -p /nix/store/other'
if build "$T_TMP/missing.json" >/dev/null; then t_fail "missing output fails the build"; else
  t_contains "missing output named" "$(cat "$T_TMP/stderr")" "/nix/store/out"
fi
t_check "no leftovers after a missing output" no_leftovers

request slow 'sleep 60'
start=$(date +%s)
if build --timeout 2 "$T_TMP/slow.json" >/dev/null; then t_fail "timeout fails the build"; else
  t_contains "timeout message" "$(cat "$T_TMP/stderr")" "timed out after 2 s"
  [ $(( $(date +%s) - start )) -lt 20 ] && t_ok "timeout kills promptly" || t_fail "timeout took too long"
fi
t_check "no leftovers after a timeout" no_leftovers

request sigterm 'echo started >&2; sleep 60'
"$OCIBUILD" build "${RUNTIME[@]}" "$T_TMP/sigterm.json" >/dev/null 2>"$T_TMP/sigterm.err" &
pid=$!
for _ in $(seq 1 100); do grep -q started "$T_TMP/sigterm.err" 2>/dev/null && break; sleep 0.1; done
kill -TERM $pid
wait $pid; rc=$?
[ $rc -ne 0 ] && t_ok "SIGTERM mid-build fails the build" || t_fail "SIGTERM exit code" "rc=$rc"
t_contains "SIGTERM reported" "$(cat "$T_TMP/sigterm.err")" "interrupted"
# No t_settle: a build stopped by a signal removes everything itself before it exits.
left=$(ls -A "$BUNDLES" | grep -v '^\.' || true)
[ -z "$left" ] && t_ok "SIGTERM: the bundle is gone when ocibuild has exited (no child removes it)" ||
  t_fail "SIGTERM: the bundle is gone when ocibuild has exited" "$left"
t_check "no leftovers after SIGTERM" no_leftovers

# SIGKILL cannot be caught: the container and the bundle outlive ocibuild, and the next run
# (any build with the same bundle root) must find them by their free lock and remove them.
request sigkill 'echo started >&2; sleep 60'
"$OCIBUILD" build "${RUNTIME[@]}" "$T_TMP/sigkill.json" >/dev/null 2>"$T_TMP/sigkill.err" &
pid=$!
for _ in $(seq 1 100); do grep -q started "$T_TMP/sigkill.err" 2>/dev/null && break; sleep 0.1; done
kill -KILL $pid; wait $pid 2>/dev/null
stale=$(ls -A "$BUNDLES" | grep -v '^\.' | head -1)
[ -n "$stale" ] && t_ok "SIGKILL leaves a stale bundle behind (as it must)" || t_fail "SIGKILL stale bundle" "none found"
request after 'mkdir -p /nix/store/out'
build "$T_TMP/after.json" >/dev/null && t_ok "the next build succeeds" || t_fail "next build after SIGKILL" "$(cat "$T_TMP/stderr")"
t_check "the next build swept the killed build's container and bundle" no_leftovers

# The same on crun without a cgroup (no memory limit; docs/security.md "Limits"): the foreground
# crun outlives the killed ocibuild and runs the container on; the sweep's kill and delete
# (--cgroup-manager=disabled) end it and every process in it.
if command -v crun >/dev/null; then
  MARK=$((50000 + RANDOM))
  request sigkill_crun "echo started >&2; /nix/store/busybox sleep $MARK"
  "$OCIBUILD" build --runtime crun "$T_TMP/sigkill_crun.json" >/dev/null 2>"$T_TMP/sigkill.err" &
  pid=$!
  for _ in $(seq 1 100); do grep -q started "$T_TMP/sigkill.err" 2>/dev/null && break; sleep 0.1; done
  kill -KILL $pid; wait $pid 2>/dev/null
  stale=$(ls -A "$BUNDLES" | grep -v '^\.' | head -1)
  [ -n "$stale" ] && pgrep -f "busybox sleep $MARK" >/dev/null &&
    ! t_containers_below crun "$BUNDLES" >/dev/null &&
    t_ok "crun: SIGKILL leaves the container running and its bundle behind" ||
    t_fail "crun: SIGKILL leaves the container running and its bundle behind" "bundle '$stale'"
  "$OCIBUILD" build --runtime crun "$T_TMP/after.json" >/dev/null 2>"$T_TMP/stderr" &&
    t_ok "crun: the next build succeeds" || t_fail "crun: next build after SIGKILL" "$(cat "$T_TMP/stderr")"
  t_check "crun: the next build swept the killed build's container and bundle" no_leftovers
  for _ in $(seq 50); do pgrep -f "busybox sleep $MARK" >/dev/null || break; sleep 0.02; done
  left=$(pgrep -f "busybox sleep $MARK")
  [ -z "$left" ] && t_ok "crun: no process of the killed build is left" ||
    { t_fail "crun: no process of the killed build is left" "$left"; kill -KILL $left; }
else
  t_skip "crun: the sweep after SIGKILL" "crun is not installed"
fi

# --- after the answer (docs/build.md): `ocibuild build` exits once it has answered and a child
# it leaves removes the bundle, holding the bundle's lock, so a sweep meanwhile leaves the bundle
# to it; killed half way, it leaves a bundle the next sweep removes. 30,000 files in scratch
# take that child a while (100+ ms). ---
request many 'mkdir -p /nix/store/out /build/many && cd /build/many && seq 30000 | xargs touch && echo x > /nix/store/out/x'
bundle_dir() { ls -d "$BUNDLES"/*-*-*-*-* 2>/dev/null | head -1; }
"$OCIBUILD" build "${RUNTIME[@]}" "$T_TMP/many.json" >"$T_TMP/many.out" 2>"$T_TMP/stderr"; rc=$?
handed=$(bundle_dir); remover=$(pgrep -f "build ${RUNTIME[*]} $T_TMP/many.json")
[ $rc -eq 0 ] && [ -s "$T_TMP/many.out" ] && [ -n "$handed" ] && [ -n "$remover" ] &&
  t_ok "a build answers and exits before its bundle is removed, by a child it leaves" ||
  t_fail "a build answers and exits before its bundle is removed, by a child it leaves" \
    "rc=$rc bundle=$handed remover=$remover $(cat "$T_TMP/stderr")"
request quick 'mkdir -p /nix/store/out'
"$OCIBUILD" build "${RUNTIME[@]}" "$T_TMP/quick.json" >/dev/null 2>"$T_TMP/quick.err" &&
  [ ! -s "$T_TMP/quick.err" ] && t_settle "$DATA" && [ -z "$(ls -A "$BUNDLES" | grep -v '^\.')" ] &&
  t_ok "a build whose sweep meets a bundle being removed leaves it to its remover; both go" ||
  t_fail "a build whose sweep meets a bundle being removed leaves it to its remover" \
    "$(cat "$T_TMP/quick.err"); $(ls -A "$BUNDLES")"
"$OCIBUILD" build "${RUNTIME[@]}" "$T_TMP/many.json" >/dev/null 2>"$T_TMP/stderr"
handed=$(bundle_dir); remover=$(pgrep -f "build ${RUNTIME[*]} $T_TMP/many.json")
if [ -n "$handed" ] && [ -n "$remover" ]; then
  kill -KILL $remover
  for _ in $(seq 100); do kill -0 $remover 2>/dev/null || break; sleep 0.02; done
  [ -d "$handed" ] && t_ok "a remover killed half way leaves the bundle (its lock free)" ||
    t_fail "a remover killed half way leaves the bundle" "gone before the kill"
  build "$T_TMP/quick.json" >/dev/null && t_check "the next build's sweep removes what a killed remover left" no_leftovers ||
    t_fail "the next build after a killed remover" "$(cat "$T_TMP/stderr")"
else
  t_fail "a remover killed half way leaves the bundle" "no remover to kill: bundle=$handed"
fi
# A kept bundle (--keep-bundle) is closed before the exit, with its line in the build's log.
"$OCIBUILD" build "${RUNTIME[@]}" --keep-bundle "$T_TMP/quick.json" >/dev/null 2>"$T_TMP/stderr"
kept=$(bundle_dir); t_settle "$DATA" 1
[ -n "$kept" ] && [ -e "$kept/.kept" ] && grep -qF "bundle kept at $kept" "$T_TMP/stderr" &&
  [ -z "$(pgrep -f "build ${RUNTIME[*]} --keep-bundle $T_TMP/quick.json")" ] &&
  t_ok "--keep-bundle: the bundle is kept and marked before the build exits, no child left" ||
  t_fail "--keep-bundle: the bundle is kept and marked before the build exits" "$kept: $(cat "$T_TMP/stderr")"
[ -n "$kept" ] && rm -rf "$kept"

# --- root skeletons: a finished build's root/ is pooled and the next one of its shape reuses it ---
POOL="$BUNDLES/.root-pool"
# an empty pool: earlier builds of other shapes (network_access above) left skeletons in it
rm -rf "$POOL"
request pooled 'mkdir -p /nix/store/out && touch /etc/intruder 2>/dev/null; echo done > /nix/store/out/x'
build "$T_TMP/pooled.json" >/dev/null || t_fail "pooled: first build" "$(cat "$T_TMP/stderr")"
# The id slots are the host's: a build of another process may hold the one the last build had,
# and a skeleton serves one slot (docs/build.md). Up to 3 tries, so that one of them runs in a
# slot the pool has a skeleton for.
for _ in 1 2 3; do
  entries_before=$(ls -A "$POOL" 2>/dev/null | sort)
  inodes_before=$(for e in $entries_before; do stat -c %i "$POOL/$e"; done | sort | tr '\n' ' ')
  build "$T_TMP/pooled.json" >/dev/null || t_fail "pooled: second build" "$(cat "$T_TMP/stderr")"
  entries_after=$(ls -A "$POOL" 2>/dev/null | sort)
  inodes_after=$(for e in $entries_after; do stat -c %i "$POOL/$e"; done | sort | tr '\n' ' ')
  [ "$entries_before" = "$entries_after" ] && break
done
if [ -n "$entries_before" ] && [ "$entries_before" = "$entries_after" ] &&
  [ "$inodes_before" = "$inodes_after" ]; then
  t_ok "a repeated build takes its root skeleton from the pool and gives it back"
else
  t_fail "a repeated build takes its root skeleton from the pool and gives it back" \
    "before: $entries_before ($inodes_before); after: $entries_after ($inodes_after)"
fi
# What a pooled skeleton may hold: directories (mount points), empty files (file mount points)
# and the three etc files (a bundle skeleton: its config.json and runtime.pid); nothing a build
# wrote.
odd=$(cd "$POOL" 2>/dev/null && find . -mindepth 2 ! -type d \
  ! \( -path './*/etc/passwd' -o -path './*/etc/group' -o -path './*/etc/hosts' \) \
  ! -regex '\./[^/]*/\(config\.json\|runtime\.pid\)' ! -empty)
intruder=$(find "$POOL" -name intruder 2>/dev/null)
if [ -n "$entries_after" ] && [ -z "$odd" ] && [ -z "$intruder" ]; then
  t_ok "pooled skeletons hold only etc files and empty mount points"
else
  t_fail "pooled skeletons hold only etc files and empty mount points" "odd: $odd; intruder: $intruder"
fi
# Bundle skeletons (docs/build.md): the bundle directory goes back root's (0700) with empty
# scratch/ and inputs/ and root's config.json and runtime.pid only, and the repeated build took
# it (its inode is among the ones compared above).
skeletons=$(for e in "$POOL"/*; do [ -d "$e/scratch" ] && echo "$e"; done)
bundle_skeletons_clean() {
  local e
  for e in "$@"; do
    [ "$(ls -A "$e" | tr '\n' ' ')" = "config.json inputs runtime.pid scratch " ] &&
      [ -z "$(find "$e" -mindepth 2)" ] && [ "$(stat -c %u:%a "$e")" = 0:700 ] &&
      [ "$(stat -c %u:%h:%F "$e/config.json" "$e/runtime.pid" | sort -u)" = "0:1:regular file" ] ||
      return 1
  done
}
# shellcheck disable=SC2086 # one path per word
if [ -n "$skeletons" ] && bundle_skeletons_clean $skeletons; then
  t_ok "a bundle goes back to the pool root's, holding empty scratch/ and inputs/, config.json and runtime.pid"
else
  t_fail "a bundle goes back to the pool root's, holding empty scratch/ and inputs/, config.json and runtime.pid" \
    "$(for e in $skeletons; do find "$e" -printf '%p %u %m %n %y\n'; done)"
fi
# What a pooled skeleton's config.json and runtime.pid could be made into (docs/security.md):
# a symlink to a file of root's, a hard link to one, a FIFO. The next build neither follows,
# writes through, nor blocks on any of them: its config.json and runtime.pid are made new.
echo target >"$T_TMP/target"
echo linked >"$T_TMP/linked"
for e in $skeletons; do
  rm -f "$e/config.json" "$e/runtime.pid"
  ln -s "$T_TMP/target" "$e/config.json"
  ln "$T_TMP/linked" "$e/runtime.pid"
done
planted_ok=1
timeout 120 "$OCIBUILD" build "${RUNTIME[@]}" "$T_TMP/pooled.json" >/dev/null 2>"$T_TMP/stderr" ||
  planted_ok=0
t_settle "$DATA"
for e in $skeletons; do
  [ -e "$e" ] || continue
  rm -f "$e/config.json" "$e/runtime.pid"
  mkfifo "$e/config.json" "$e/runtime.pid"
done
timeout 120 "$OCIBUILD" build "${RUNTIME[@]}" "$T_TMP/pooled.json" >/dev/null 2>>"$T_TMP/stderr" ||
  planted_ok=0
t_settle "$DATA"
if [ "$planted_ok" = 1 ] && [ "$(cat "$T_TMP/target")" = target ] &&
  [ "$(cat "$T_TMP/linked")" = linked ] && [ "$(stat -c %h "$T_TMP/linked")" = 1 ] &&
  [ -z "$(find "$POOL" -maxdepth 2 \( -name config.json -o -name runtime.pid \) ! -type f)" ]; then
  t_ok "a symlink, hard link or FIFO planted as a pooled config.json/runtime.pid is never followed or kept"
else
  t_fail "a symlink, hard link or FIFO planted as a pooled config.json/runtime.pid is never followed or kept" \
    "builds ok: $planted_ok; target: $(cat "$T_TMP/target"); linked: $(stat -c %h "$T_TMP/linked"); $(cat "$T_TMP/stderr")"
fi
request pooled_net 'mkdir -p /nix/store/out' ', "constraints": {"system": "x86_64-linux", "network_access": true}'
build "$T_TMP/pooled_net.json" >/dev/null || t_fail "pooled: network build" "$(cat "$T_TMP/stderr")"
n_after=$(ls -A "$POOL" | wc -l)
[ "$n_after" -gt "$(echo "$entries_after" | wc -w)" ] &&
  t_ok "a build of another shape (host network mounts) gets a skeleton of its own" ||
  t_fail "a build of another shape gets a skeleton of its own" "entries: $(ls -A "$POOL")"
t_check "no leftovers after pooled builds" no_leftovers

# --- invalid requests: refused before anything touches the disk ---
invalid() { # NAME EXTRA_JSON EXPECTED_SUBSTRING
  cat >"$T_TMP/inv.json" <<JSON
{"command_args": ["/bin/true"], "working_dir": "build", "scratch_paths": ["build", "nix/store"],
 "inputs_dir": "nix/store", "outputs": ["nix/store/out"] $2}
JSON
  if build "$T_TMP/inv.json" >/dev/null; then t_fail "invalid: $1 refused"; else
    t_contains "invalid: $1 refused naming the field" "$(cat "$T_TMP/stderr")" "$3"
  fi
}
invalid "output outside scratch" ', "outputs": ["elsewhere/out"]' 'outputs[0]'
invalid "unclean output path" ', "outputs": ["nix/store/../x"]' 'outputs[0]'
invalid "absolute scratch path" ', "scratch_paths": ["/build"]' 'scratch_paths[0]'
invalid "unsorted scratch paths" ', "scratch_paths": ["nix/store", "build"]' 'scratch_paths'
invalid "env key with =" ', "environment_vars": [{"key": "A=B", "value": ""}]' 'environment_vars[0]'
invalid "empty command" ', "command_args": []' 'command_args'
invalid "constraints without system" ', "constraints": {"min_memory": 1}' 'system'
invalid "relative ro path" ', "constraints": {"system": "x", "available_ro_paths": ["dev/kvm"]}' 'available_ro_paths[0]'
invalid "unknown field" ', "comand_args": ["x"]' 'comand_args'
t_check "no leftovers after invalid requests" no_leftovers

t_done
