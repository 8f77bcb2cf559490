#!/bin/bash
# The default runtime (issue 18 item 1, docs/build.md "The default runtime"): with no --runtime
# a rootful build runs on crun when a probe finds that crun works here (on this hybrid-cgroup
# VM: in a private mount namespace without the cgroup2 mount), and the answer is cached under
# the data dir; `--runtime runc` still builds the same output; a crun that cannot run builds
# is reported once and runc used; crun runs from ocibuild's read-only view of its binary,
# which a container cannot write; a store database that cannot be opened (while the container
# starts) fails the build and leaves nothing; a build killed mid-run (SIGTERM) on the default
# runtime leaves no bundle and no container, and exit codes are those of docs/cli.md; builds SIGKILLed at any point (crun and runc) leave nothing
# once the next build has swept.
source "$(dirname "$0")/lib.sh"

[ "$(id -u)" -eq 0 ] || { t_skip "default runtime" "needs root (rootful builds)"; t_done; exit; }
for tool in runc crun; do
  command -v $tool >/dev/null || { t_skip "default runtime" "$tool is not installed"; t_done; exit; }
done
export OCIBUILD_STORE="$T_TMP/store" OCIBUILD_DATA_DIR="$T_TMP/data"
cat >"$T_TMP/req.json" <<'JSON'
{
  "inputs": {"busybox": "/bin/busybox"},
  "command_args": ["/nix/store/busybox", "sh", "-c", "mkdir -p /nix/store/out && echo hi > /nix/store/out/x"],
  "working_dir": "build", "scratch_paths": ["build", "nix/store"], "inputs_dir": "nix/store",
  "outputs": ["nix/store/out"]
}
JSON
no_leftovers() { # DATA_DIR
  local left
  t_settle "$1"
  left=$(ls -A "$1/bundles" 2>/dev/null | grep -v '^\.' || true)
  [ -z "$left" ] || { echo "bundle dirs left: $left"; return 1; }
  for rt in runc crun; do
    t_containers_below $rt "$1" || { echo "$rt containers left"; return 1; }
  done
}
output_of() { python3 -c 'import json,sys; print(json.dumps(json.load(sys.stdin)["outputs"][0]))'; }

# ---- the default: crun, probed once and cached ----
if out=$("$OCIBUILD" build -v "$T_TMP/req.json" 2>"$T_TMP/first.err"); then
  t_contains "with no --runtime a rootful build runs on crun" "$(cat "$T_TMP/first.err")" "runtime $(command -v crun)"
  default_out=$(echo "$out" | output_of)
else
  t_fail "a build with the default runtime succeeds" "$(cat "$T_TMP/first.err")"
fi
[ "$(cat "$T_TMP"/data/runtime-probe/* 2>/dev/null)" = "ok" ] && t_ok "the probe's answer is cached under the data dir" ||
  t_fail "the probe's answer is cached under the data dir" "$(ls -la "$T_TMP/data/runtime-probe" 2>&1)"
"$OCIBUILD" build -v "$T_TMP/req.json" >/dev/null 2>"$T_TMP/second.err"
t_contains "the next build takes crun from the cache" "$(cat "$T_TMP/second.err")" "runtime $(command -v crun)"
t_check "builds on the default runtime leave nothing behind" no_leftovers "$T_TMP/data"

# ---- --runtime runc: the same output ----
if out=$("$OCIBUILD" build -v --runtime runc "$T_TMP/req.json" 2>"$T_TMP/runc.err"); then
  t_contains "--runtime runc runs runc" "$(cat "$T_TMP/runc.err")" "runtime $(command -v runc)"
  [ "$(echo "$out" | output_of)" = "$default_out" ] && t_ok "runc and crun build the same output" ||
    t_fail "runc and crun build the same output" "$out vs $default_out"
else
  t_fail "--runtime runc builds" "$(cat "$T_TMP/runc.err")"
fi

# ---- a crun that cannot run builds: runc, said once ----
mkdir -p "$T_TMP/bin"
printf '#!/bin/sh\ncase "$*" in *run*) echo "fake crun: refused" >&2 ;; *) echo "container does not exist" >&2 ;; esac\nexit 1\n' >"$T_TMP/bin/crun"
chmod +x "$T_TMP/bin/crun"
export OCIBUILD_DATA_DIR="$T_TMP/data-fake"
if PATH="$T_TMP/bin:$PATH" "$OCIBUILD" build -v "$T_TMP/req.json" >/dev/null 2>"$T_TMP/fake.err"; then
  t_contains "a failed probe falls back to runc" "$(cat "$T_TMP/fake.err")" "runtime $(command -v runc)"
  t_contains "a failed probe says why, in one line" "$(cat "$T_TMP/fake.err")" "cannot run builds here"
else
  t_fail "a failed probe falls back to runc" "$(cat "$T_TMP/fake.err")"
fi
PATH="$T_TMP/bin:$PATH" "$OCIBUILD" build "$T_TMP/req.json" >/dev/null 2>"$T_TMP/fake2.err"
grep -q "cannot run builds here" "$T_TMP/fake2.err" && t_fail "the failed probe is cached: said once" "$(cat "$T_TMP/fake2.err")" ||
  t_ok "the failed probe is cached: said once"
# A changed binary is probed again: now it works (a crun that execs the real one).
printf '#!/bin/sh\nexec %s "$@"\n' "$(command -v crun)" >"$T_TMP/bin/crun"
PATH="$T_TMP/bin:$PATH" "$OCIBUILD" build -v "$T_TMP/req.json" >/dev/null 2>"$T_TMP/fake3.err"
t_contains "a changed runtime binary is probed again" "$(cat "$T_TMP/fake3.err")" "runtime $T_TMP/bin/crun"
t_check "the probes leave nothing behind" no_leftovers "$T_TMP/data-fake"

# ---- the output side fails while the container starts ----
# The store's database is opened while crun makes the container (docs/build.md "While the
# container starts"): one that cannot be opened fails the build with its name, and the
# container, the bundle and the id slot still go.
mkdir -p "$T_TMP/store-broken/directories.sqlite" # a directory where the database should be
broken_build() { # NAME DATA_DIR ARGS...: a build on the broken store, which must fail
  local name=$1 data=$2; shift 2
  if OCIBUILD_STORE="$T_TMP/store-broken" OCIBUILD_DATA_DIR="$data" \
    "$OCIBUILD" build "$@" "$T_TMP/req.json" >/dev/null 2>"$T_TMP/broken.err"; then
    t_fail "$name" "it succeeded"
  else
    t_contains "$name, naming the database" "$(cat "$T_TMP/broken.err")" "directories.sqlite"
    t_contains "$name after the spawn: the container is killed and removed" \
      "$(cat "$T_TMP/broken.err")" "killed and removed"
  fi
  t_check "$name: nothing left behind" no_leftovers "$data"
}
broken_build "crun: a store database that cannot be opened fails the build" "$T_TMP/data-broken" \
  --runtime crun
broken_build "default runtime: a store database that cannot be opened fails the build" \
  "$T_TMP/data-broken2"
t_check "... and the probe does not take it for crun's failure (nothing cached)" \
  test -z "$(ls -A "$T_TMP/data-broken2/runtime-probe" 2>/dev/null)"

# ---- killed mid-run on the default runtime; exit codes ----
export OCIBUILD_DATA_DIR="$T_TMP/data"
sed 's|"mkdir -p /nix/store/out && echo hi > /nix/store/out/x"|"echo started >\&2; sleep 60"|' "$T_TMP/req.json" >"$T_TMP/slow.json"
"$OCIBUILD" build "$T_TMP/slow.json" >/dev/null 2>"$T_TMP/term.err" &
pid=$!
for _ in $(seq 1 100); do grep -q started "$T_TMP/term.err" 2>/dev/null && break; sleep 0.1; done
# crun runs from ocibuild's read-only view of its binary, not re-executing itself from a copy
# of its own (docs/build.md "crun from an unwritable binary"), and a container cannot write the
# host's runtime through it (CVE-2019-5736, docs/security.md "The runtime binary"): the build's
# runtime process runs from a read-only mount, and its binary, held by /proc/PID/exe (as an
# attacker in the container would) until the runtime has exited, cannot be opened for writing.
# The runtime is the child running the build's `run` (not a short runtime call of the sweep).
runtime_pid=$(ps --ppid $pid -o pid=,stat=,args= | awk '$2 !~ /^Z/ && / run --pid-file / {print $1; exit}')
/usr/bin/python3 - "$runtime_pid" >"$T_TMP/exe.out" 2>&1 <<'PY' &
import errno, fcntl, os, sys, time
pid = sys.argv[1]
held = os.open(f"/proc/{pid}/exe", os.O_PATH)
ro = os.statvfs(f"/proc/{pid}/exe").f_flag & os.ST_RDONLY
copy = os.readlink(f"/proc/{pid}/exe").startswith("/memfd:ocibuild-crun")
print("the sealed copy" if copy else "read-only mount" if ro else "writable mount")
sys.stdout.flush()
while os.path.exists(f"/proc/{pid}"):  # until the runtime has exited and is reaped
    time.sleep(0.05)
# The open fails with EROFS; or with ETXTBSY while any crun on the host runs the same binary
# (the inode is busy), and then the mount is what must be read-only.
held_ro = os.statvfs(f"/proc/self/fd/{held}").f_flag & os.ST_RDONLY
try:
    fd = os.open(f"/proc/self/fd/{held}", os.O_WRONLY)
except OSError as e:
    if e.errno == errno.EROFS or (e.errno == errno.ETXTBSY and held_ro):
        print("after its exit: cannot be opened for writing, a read-only mount")
    else:
        print(f"after its exit: refused ({e.strerror}) but on a writable mount")
else:  # open, but a sealed memfd (F_GET_SEALS has F_SEAL_WRITE) cannot be written either
    print("after its exit: sealed" if fcntl.fcntl(fd, 1034) & 8 else "after its exit: WRITABLE")
PY
checker=$!
# until the checker holds the binary (its first line), however slowly python starts
for _ in $(seq 1 200); do [ -s "$T_TMP/exe.out" ] && break; sleep 0.05; done
# Where open_tree/mount_setattr are refused (a seccomp profile), crun runs from the sealed memfd
# copy instead: said loudly, and that copy must be as unwritable.
unwritable="after its exit: cannot be opened for writing, a read-only mount"
if grep -q "the sealed copy" "$T_TMP/exe.out"; then
  unwritable="after its exit: sealed"
  t_skip "crun runs from ocibuild's read-only view of its binary" \
    "the view could not be made here (open_tree or mount_setattr refused): crun ran from the sealed copy"
else
  t_contains "crun runs from ocibuild's read-only view of its binary" "$(cat "$T_TMP/exe.out")" "read-only mount"
fi
kill -TERM $pid
wait $pid; rc=$?
wait $checker
t_contains "the runtime's binary cannot be opened for writing once the runtime has exited" \
  "$(cat "$T_TMP/exe.out")" "$unwritable"
[ $rc -eq 143 ] && t_ok "SIGTERM mid-build exits 143" || t_fail "SIGTERM mid-build exits 143" "rc=$rc $(cat "$T_TMP/term.err")"
t_check "a build killed mid-run leaves no bundle and no container" no_leftovers "$T_TMP/data"
sed 's|"mkdir -p /nix/store/out && echo hi > /nix/store/out/x"|"exit 3"|' "$T_TMP/req.json" >"$T_TMP/fail.json"
"$OCIBUILD" build "$T_TMP/fail.json" >/dev/null 2>"$T_TMP/fail.err"; rc=$?
[ $rc -eq 100 ] && t_ok "a failing build exits 100 on the default runtime" || t_fail "a failing build exits 100" "rc=$rc"
"$OCIBUILD" build --timeout 1 "$T_TMP/slow.json" >/dev/null 2>"$T_TMP/timeout.err"; rc=$?
[ $rc -eq 101 ] && t_ok "a timed-out build exits 101 on the default runtime" || t_fail "a timed-out build exits 101" "rc=$rc"
t_check "failed and timed-out builds leave nothing behind" no_leftovers "$T_TMP/data"

# ---- SIGKILL at any point of a build: the next build's sweep leaves nothing ----
# Builds killed after 0-90 ms: before the bundle, while the runtime makes or runs the container,
# while the outputs are ingested or the bundle removed after the answer; on the default runtime
# (crun, in the foreground) and on runc (detached). What a killed build leaves (a container, its
# cgroups, a bundle whose lock is free) the next build sweeps (docs/build.md "Bundles and
# cleanup"). Before, a runtime killed with ocibuild half way through making the container
# left cgroups that no `delete --force` finds (crun in the foreground; runc, some runs).
kill_at_any_point() { # LABEL DATA_DIR [BUILD OPTIONS...]
  local label=$1 data=$2 ms pid killed=() cgroups mounts
  shift 2
  export OCIBUILD_DATA_DIR=$data
  "$OCIBUILD" build "$@" "$T_TMP/req.json" >/dev/null 2>&1 # the probe, cached
  for ms in 0 5 10 15 20 25 30 35 40 45 50 60 70 80 90; do
    "$OCIBUILD" build "$@" "$T_TMP/req.json" >/dev/null 2>&1 &
    pid=$!
    sleep "$(printf '0.%03d' "$ms")"
    kill -KILL $pid 2>/dev/null
    wait $pid 2>/dev/null
    killed+=($(ls "$data/bundles" | grep -v '^\.' || true))
  done
  # A killed build's runtime finishes its start first (docs/build.md "The foreground run"): a
  # sweep within those ~100 ms could miss what it is still making.
  sleep 1
  if "$OCIBUILD" build "$@" "$T_TMP/req.json" >/dev/null 2>"$T_TMP/kill-sweep.err"; then
    t_ok "$label: a build after builds killed at any point succeeds (${#killed[@]} bundles to sweep)"
  else
    t_fail "$label: a build after builds killed at any point succeeds" "$(cat "$T_TMP/kill-sweep.err")"
  fi
  t_check "$label: builds killed at any point leave no bundle and no container after the sweep" \
    no_leftovers "$data"
  mounts=$(grep -F "$data" /proc/self/mountinfo || true)
  [ -z "$mounts" ] && t_ok "$label: builds killed at any point leave no mount" ||
    t_fail "$label: builds killed at any point leave no mount" "$mounts"
  cgroups=$(for id in "${killed[@]}"; do ls -d /sys/fs/cgroup/*/"$id" /sys/fs/cgroup/"$id" 2>/dev/null; done)
  [ -z "$cgroups" ] && t_ok "$label: builds killed at any point leave no cgroup" ||
    t_fail "$label: builds killed at any point leave no cgroup" "$cgroups"
}
kill_at_any_point crun "$T_TMP/data-kill"
kill_at_any_point runc "$T_TMP/data-kill-runc" --runtime runc
t_done
