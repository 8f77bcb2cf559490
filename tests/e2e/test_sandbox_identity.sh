#!/bin/bash
# The build sandbox's identity, syscall filter and limits (docs/security.md), attacked as a
# hostile build and a hostile local user would, with real runc and crun (crun without a cgroup
# where no memory limit is asked):
# - a host account with uid 1000 cannot reach a running build's bundle, scratch or outputs;
#   the bundle is 0700 and owned by the build's id slot, not by a login account;
# - chmod cannot set setuid/setgid bits; a file created with them (open, creat, mknod: not
#   filtered, as under Nix) belongs to the slot's build user, out of every other user's reach,
#   and never reaches the output; setxattr is ENOTSUP, the keyring and user namespaces are
#   refused, /proc/keys is masked, no capability is held;
# - inputs show as nobody:nogroup (65534), mtime 1, read-only; the build dir is 0700;
# - a fork loop stops at --max-pids (on crun without a cgroup: RLIMIT_NPROC), a daemon outlives
#   neither its build nor a --timeout, no device node opens that the build made or was not
#   given, the host's /dev/null never becomes the build user's, --memory kills an allocating build, --scratch-limit stops a build that writes too much
#   (ENOSPC on a tmpfs, not the host's disk);
# - two concurrent builds run as different host ids, also while a killed build's container runs.
# Each of these fails with ocibuild before the sandbox work (builds ran as host uid 1000).
source "$(dirname "$0")/lib.sh"

if [ "$(id -u)" -ne 0 ]; then
  t_skip "sandbox identity" "not running as root: rootful runc builds need root"
  t_done; exit
fi
for tool in runc runuser cc; do
  command -v $tool >/dev/null || { t_skip "sandbox identity" "$tool is not installed"; t_done; exit; }
done

export OCIBUILD_STORE="$T_TMP/store"
export OCIBUILD_DATA_DIR="$T_TMP/data"
BUNDLES="$OCIBUILD_DATA_DIR/bundles"
SN_STORE="SN566XP5HOO2D322W42EA3DZYPDYBMPRUF3TGFIMLXV54WM4CSNQ===="
SN_BUILD="3SCCPULSYMZAQ35F76TA3A3HYQROJMTNQW7SVJDXX5BNIYJ3WHYA===="
range=$(grep '^ocibuild:' /etc/subuid | head -1)
RANGE_START=$(echo "$range" | cut -d: -f2)
RANGE_COUNT=$(echo "$range" | cut -d: -f3)
[ -n "$RANGE_START" ] || { t_fail "the ocibuild user has a subuid range" "run scripts/install-deps.sh"; t_done; exit; }
in_range() { [ "$1" -ge "$RANGE_START" ] && [ "$1" -lt $((RANGE_START + RANGE_COUNT)) ]; }

# The host account with uid 1000 (a login account on most machines; made here if missing).
U1000=$(getent passwd 1000 | cut -d: -f1)
if [ -z "$U1000" ]; then
  useradd --uid 1000 --no-create-home --shell /bin/sh obi-uid1000 && U1000=obi-uid1000 &&
    t_cleanup "userdel obi-uid1000"
fi

# The probe: raw syscalls a shell cannot make (sandbox_probe.c), static so it runs anywhere.
cc -static -O1 -o "$T_TMP/probe" "$E2E_DIR/sandbox_probe.c" 2>"$T_TMP/cc.err" ||
  { t_fail "compile the sandbox probe" "$(cat "$T_TMP/cc.err")"; t_done; exit; }
mkdir -p "$T_TMP/srcdir/sub" && echo data >"$T_TMP/srcdir/sub/file"

# request NAME SCRIPT [EXTRA_JSON] -> $T_TMP/NAME.json
request() {
  local name=$1 script=$2 extra=${3:-}
  cat >"$T_TMP/$name.json" <<JSON
{
  "inputs": {"busybox": "/bin/busybox", "probe": "$T_TMP/probe", "srcdir": "$T_TMP/srcdir"},
  "command_args": ["/nix/store/busybox", "sh", "-c", $(printf '%s' "$script" | python3 -c 'import json,sys; print(json.dumps(sys.stdin.read()))')],
  "working_dir": "build",
  "scratch_paths": ["build", "nix/store"],
  "inputs_dir": "nix/store",
  "outputs": ["nix/store/out"]
  $extra
}
JSON
}
# busybox's shell runs its applets by name; every build makes its output dir first.
PRELUDE='mkdir -p /nix/store/out'
# Waits (at most 30 s) until the test creates /build/go from the host.
WAIT_GO='i=0; while [ ! -e /build/go ] && [ $i -lt 300 ]; do sleep 0.1; i=$((i+1)); done'

export_output() { # BUILD_JSON DEST
  python3 -c 'import json,sys; print(json.dumps(json.load(open(sys.argv[1]))["outputs"][0]))' "$1" |
    "$OCIBUILD" store export - "$2"
}
wait_for() { # FILE TEXT: at most 30 s
  local i
  for i in $(seq 1 300); do grep -q "$2" "$1" 2>/dev/null && return 0; sleep 0.1; done
  return 1
}
the_bundle() { ls -d "$BUNDLES"/*-*-*-*-* 2>/dev/null | head -1; }

# --- one build, attacked from inside (the probe, stat) and from outside (uid 1000) ---
request attack "$PRELUDE
cd /nix/store/out && /nix/store/probe > probe.txt
stat -c '%u %g %Y %a' /nix/store/busybox /nix/store/srcdir /nix/store/srcdir/sub/file > inputs.txt
(echo x > /nix/store/busybox) 2>/dev/null && echo writable > inputs-rw.txt || echo ro > inputs-rw.txt
stat -c '%u %g %a' /build > build-dir.txt
grep -E '^Cap(Eff|Bnd|Prm|Inh|Amb)' /proc/self/status > caps.txt
cat /proc/keys > keys.txt 2>&1; grep -c ' /proc/keys ' /proc/self/mountinfo > keys-masked.txt
cat /proc/self/uid_map > uid_map.txt
mkdir private && echo secret > private/file && chmod 000 private/file && chmod 700 private
echo started >&2
$WAIT_GO"
"$OCIBUILD" build "$T_TMP/attack.json" >"$T_TMP/attack.out" 2>"$T_TMP/attack.err" &
pid=$!
if wait_for "$T_TMP/attack.err" started; then
  B=$(the_bundle)
  read -r mode owner < <(stat -c '%a %u' "$B")
  [ "$mode" = 700 ] && in_range "$owner" &&
    t_ok "the bundle is 0700 and owned by the build's id slot" ||
    t_fail "the bundle is 0700 and owned by the build's id slot" "mode $mode owner $owner"
  scratch_owner=$(stat -c %u "$B/scratch/$SN_STORE/out")
  in_range "$scratch_owner" && [ "$scratch_owner" = $((owner + 1000)) ] &&
    t_ok "the build's files belong to its slot's build user, no login account" ||
    t_fail "the build's files belong to its slot's build user" "owner $scratch_owner"
  if runuser -u "$U1000" -- sh -c "echo pwned > '$B/scratch/$SN_STORE/out/pwned'" 2>/dev/null ||
    runuser -u "$U1000" -- sh -c "echo pwned > '$B/scratch/$SN_BUILD/pwned'" 2>/dev/null; then
    t_fail "host uid 1000 ($U1000) cannot write into a running build's outputs or scratch"
  else
    t_ok "host uid 1000 ($U1000) cannot write into a running build's outputs or scratch"
  fi
  if runuser -u "$U1000" -- ls "$B/scratch/$SN_STORE/out" >/dev/null 2>&1; then
    t_fail "host uid 1000 cannot even list a running build's outputs"
  else
    t_ok "host uid 1000 cannot even list a running build's outputs"
  fi
  special_owners=$(find "$B/scratch" -perm /6000 -printf '%u\n' | sort -u)
  bad_owner=$(for o in $special_owners; do in_range "$o" || echo "$o"; done)
  [ -n "$special_owners" ] && [ -z "$bad_owner" ] &&
    t_ok "setuid files made at creation belong to the slot's build user ($special_owners)" ||
    t_fail "setuid files made at creation belong to the slot's build user" "owners: $special_owners"
  if runuser -u "$U1000" -- test -e "$B/scratch/$SN_STORE/out/open-setuid"; then
    t_fail "host uid 1000 cannot reach a build's setuid file"
  else
    t_ok "host uid 1000 cannot reach a build's setuid file"
  fi
  touch "$B/scratch/$SN_BUILD/go"
else
  t_fail "attack build starts" "$(cat "$T_TMP/attack.err")"
fi
wait $pid; rc=$?
A="$T_TMP/attack-out"
if [ $rc -eq 0 ] && export_output "$T_TMP/attack.out" "$A" 2>"$T_TMP/export.err"; then
  t_ok "the attacked build succeeds, and its 0700/0000 outputs are ingested"
  probe() { awk -v k="$1" '$1 == k {print $2}' "$A/probe.txt"; }
  for p in chmod-setuid chmod-setgid; do
    [ "$(probe $p)" = 1 ] && t_ok "setuid/setgid refused (EPERM): $p" ||
      t_fail "setuid/setgid refused (EPERM): $p" "errno $(probe $p); $(cat "$A/probe.txt")"
  done
  [ "$(probe chmod-plain)" = 0 ] && t_ok "a plain chmod still works" || t_fail "a plain chmod still works" "errno $(probe chmod-plain)"
  case "$(probe fchmodat2-setuid)" in
    1) echo "# fchmodat2 with S_ISUID is refused by this runtime's libseccomp" ;;
    0) echo "# fchmodat2 with S_ISUID went through: no filter, or a libseccomp that predates fchmodat2 (docs/security.md)" ;;
  esac
  [ "$(probe setxattr)" = 95 ] && t_ok "setxattr fails with ENOTSUP" || t_fail "setxattr fails with ENOTSUP" "errno $(probe setxattr)"
  [ "$(probe add_key)" = 1 ] && [ "$(probe keyctl)" = 1 ] && t_ok "the kernel keyring is refused (add_key, keyctl)" ||
    t_fail "the kernel keyring is refused" "add_key $(probe add_key) keyctl $(probe keyctl)"
  [ "$(probe unshare-user)" = 1 ] && t_ok "a build cannot make a user namespace" || t_fail "unshare(CLONE_NEWUSER) refused" "errno $(probe unshare-user)"
  [ "$(probe io_uring_setup)" = 38 ] && [ "$(probe clone3)" = 38 ] && t_ok "io_uring and clone3 look absent (ENOSYS)" ||
    t_fail "io_uring and clone3 look absent (ENOSYS)" "io_uring $(probe io_uring_setup) clone3 $(probe clone3)"
  echo "# made at creation (not filtered): $(grep -E '^(open-setuid|creat-setgid|mknod-setuid) ' "$A/probe.txt" | tr '\n' ' ')"
  [ "$(awk '$1 == "mode-plain" {print $2}' "$A/probe.txt")" = 0700 ] ||
    [ "$(probe fchmodat2-setuid)" = 0 ] && t_ok "chmod left no setuid/setgid bit" ||
    t_fail "chmod left no setuid/setgid bit" "$(cat "$A/probe.txt")"
  special=$(find "$A" -perm /6000)
  [ -z "$special" ] && t_ok "no setuid/setgid file in the output" || t_fail "no setuid/setgid file in the output" "$special"
  [ "$(cat "$A/keys.txt")" = "" ] && [ "$(cat "$A/keys-masked.txt")" -ge 1 ] && t_ok "/proc/keys is masked (reads empty)" ||
    t_fail "/proc/keys is masked" "$(cat "$A/keys.txt"; cat "$A/keys-masked.txt")"
  caps=$(awk '{print $2}' "$A/caps.txt" | sort -u)
  [ "$caps" = 0000000000000000 ] && t_ok "no capability in any set (CapEff, CapBnd, CapPrm, CapInh, CapAmb all 0)" ||
    t_fail "no capability in any set" "$(cat "$A/caps.txt")"
  expected_inputs="65534 65534 1 555
65534 65534 1 555
65534 65534 1 444"
  [ "$(cat "$A/inputs.txt")" = "$expected_inputs" ] && t_ok "inputs show as nobody:nogroup (65534), mtime 1" ||
    t_fail "inputs show as nobody:nogroup (65534), mtime 1" "$(cat "$A/inputs.txt")"
  [ "$(cat "$A/inputs-rw.txt")" = ro ] && t_ok "inputs are read-only" || t_fail "inputs are read-only"
  [ "$(cat "$A/build-dir.txt")" = "1000 100 700" ] && t_ok "the build dir is 0700, owned by the build user" ||
    t_fail "the build dir is 0700" "$(cat "$A/build-dir.txt")"
  root_host=$(awk '$1 == 0 && $3 == 1 {print $2}' "$A/uid_map.txt")
  map=$(awk '{print $1, $2 - r, $3}' r="${root_host:-0}" "$A/uid_map.txt" | tr '\n' ' ')
  [ -n "$root_host" ] && in_range "$root_host" && [ "$map" = "0 0 1 1000 1000 1 " ] &&
    t_ok "the user namespace maps only container root and the build user, into the ocibuild range" ||
    t_fail "the build's uid map" "$(cat "$A/uid_map.txt")"
else
  t_fail "the attacked build succeeds, and its 0700/0000 outputs are ingested" "$(cat "$T_TMP/attack.err" "$T_TMP/export.err" 2>/dev/null)"
fi

# --- limits ---
# Counted with shell builtins only: at the limit the shell cannot fork. On crun the build has no
# cgroup (no memory limit asked): RLIMIT_NPROC alone stops it, and no cgroup filesystem shows;
# on runc pids.max too (docs/security.md "Limits").
request forks "$PRELUDE
grep '^Max processes' /proc/self/limits > /nix/store/out/limits; ls -A /sys/fs/cgroup > /nix/store/out/cgroups
(for i in \$(seq 300); do sleep 60 & done) 2>/dev/null
set -- /proc/[0-9]*; echo \$# > /nix/store/out/n; kill -9 -1 2>/dev/null; true"
RUNTIMES=(runc); command -v crun >/dev/null && RUNTIMES=(crun runc)
for rt in "${RUNTIMES[@]}"; do
  start=$(date +%s)
  rm -rf "$T_TMP/forks-out"
  if "$OCIBUILD" build --runtime $rt --max-pids 64 --timeout 60 "$T_TMP/forks.json" >"$T_TMP/forks.out" 2>"$T_TMP/forks.err" &&
    export_output "$T_TMP/forks.out" "$T_TMP/forks-out"; then
    n=$(cat "$T_TMP/forks-out/n")
    [ "$n" -le 64 ] && [ "$n" -ge 32 ] && t_ok "$rt: a fork loop stops at --max-pids 64 ($n processes)" ||
      t_fail "$rt: a fork loop stops at --max-pids 64" "$n processes"
    [ $(( $(date +%s) - start )) -lt 30 ] && t_ok "$rt: the fork loop build ends by itself" || t_fail "$rt: the fork loop build took too long"
    read -r _ _ soft hard _ <"$T_TMP/forks-out/limits"
    [ "$soft $hard" = "64 64" ] && t_ok "$rt: the build's RLIMIT_NPROC is --max-pids" ||
      t_fail "$rt: the build's RLIMIT_NPROC is --max-pids" "$(cat "$T_TMP/forks-out/limits")"
    cgroups=$(tr '\n' ' ' <"$T_TMP/forks-out/cgroups")
    if [ $rt = crun ]; then
      [ -z "$cgroups" ] && t_ok "crun: without a memory limit the build has no cgroup filesystem" ||
        t_fail "crun: without a memory limit the build has no cgroup filesystem" "$cgroups"
    else
      [ -n "$cgroups" ] && t_ok "runc: the build sees its cgroups ($cgroups)" || t_fail "runc: the build sees its cgroups"
    fi
  else
    t_fail "$rt: a fork loop stops at --max-pids 64" "$(cat "$T_TMP/forks.err")"
  fi
done

# Without a cgroup, the pid namespace still ends every process of the build with its init: a
# daemon (setsid, stdio closed) outlives neither a build that exits nor one cut by --timeout.
DAEMON_SLEEP=$((40000 + RANDOM))
daemon_left() { pgrep -f "busybox sleep $DAEMON_SLEEP" >/dev/null; }
request daemon "$PRELUDE
setsid /nix/store/busybox sh -c 'exec /nix/store/busybox sleep $DAEMON_SLEEP' </dev/null >/dev/null 2>&1 &
sleep 0.5; echo ok > /nix/store/out/ok"
request daemon_hangs "$PRELUDE
setsid /nix/store/busybox sh -c 'exec /nix/store/busybox sleep $DAEMON_SLEEP' </dev/null >/dev/null 2>&1 &
sleep 600"
for rt in "${RUNTIMES[@]}"; do
  if "$OCIBUILD" build --runtime $rt "$T_TMP/daemon.json" >/dev/null 2>"$T_TMP/daemon.err"; then
    t_settle "$OCIBUILD_DATA_DIR"
    daemon_left && t_fail "$rt: a daemon the build started is gone once the build ended" "$(pgrep -fa "sleep $DAEMON_SLEEP")" ||
      t_ok "$rt: a daemon the build started is gone once the build ended"
  else
    t_fail "$rt: a build that starts a daemon succeeds" "$(cat "$T_TMP/daemon.err")"
  fi
  kill -KILL $(pgrep -f "busybox sleep $DAEMON_SLEEP") 2>/dev/null # this test's own marker
  if "$OCIBUILD" build --runtime $rt --timeout 2 "$T_TMP/daemon_hangs.json" >/dev/null 2>"$T_TMP/daemon.err"; then
    t_fail "$rt: a build that hangs times out"
  else
    t_settle "$OCIBUILD_DATA_DIR"
    daemon_left && t_fail "$rt: a daemon the build started is gone after --timeout" "$(pgrep -fa "sleep $DAEMON_SLEEP")" ||
      t_ok "$rt: a daemon the build started is gone after --timeout"
  fi
  kill -KILL $(pgrep -f "busybox sleep $DAEMON_SLEEP") 2>/dev/null
done

# The host's /dev/null, bound into every build, never becomes the build user's: crun 1.8 chowns
# the stdio it hands the container to the build user, and given /dev/null as stdin it made the
# host's /dev/null the slot's (a later build as that user could chmod it for the whole host). The
# probe is a chmod to its own mode, which only the owner may make.
request devnull "$PRELUDE
stat -c %u /dev/null > /nix/store/out/owner; chmod 666 /dev/null 2>/dev/null && echo yes > /nix/store/out/chmod; true"
for rt in "${RUNTIMES[@]}"; do
  rm -rf "$T_TMP/devnull-out"
  if "$OCIBUILD" build --runtime $rt "$T_TMP/devnull.json" >"$T_TMP/devnull.out" 2>"$T_TMP/devnull.err" &&
    export_output "$T_TMP/devnull.out" "$T_TMP/devnull-out"; then
    owner=$(cat "$T_TMP/devnull-out/owner")
    [ "$owner" != 1000 ] && [ ! -e "$T_TMP/devnull-out/chmod" ] &&
      t_ok "$rt: the host's /dev/null is not the build user's (owner $owner in the build), chmod refused" ||
      t_fail "$rt: the host's /dev/null is not the build user's" "owner $owner; chmod: $(cat "$T_TMP/devnull-out/chmod" 2>/dev/null)"
  else
    t_fail "$rt: the /dev/null build succeeds" "$(cat "$T_TMP/devnull.err")"
  fi
  # (a build of a binary with the bug left it the slot's: give it back to root)
  in_range "$(stat -c %u /dev/null)" && chown 0:0 /dev/null && chmod 666 /dev/null
done

# No device opens that the build made or was not given: mknod is refused, and a device node on
# a host path it is given (or on a mount below it) does not open, with a device cgroup (runc)
# or without one (crun: the path is bound nodev; crun 1.8.1 brings none of its submounts, runc
# does and its device cgroup denies c 10:229).
DEVDIR=$(mktemp -d /tmp/obi-test-dev.XXXXXX)
t_cleanup "umount $DEVDIR/sub; rm -rf $DEVDIR"
# /dev/fuse (c 10 229, mode 666 on most hosts) is outside the device cgroup's list, /dev/null
# (c 1 3) inside it: neither opens from there.
chmod 755 "$DEVDIR" && mkdir "$DEVDIR/sub" && mount -t tmpfs -o mode=755 tmpfs "$DEVDIR/sub" &&
  mknod -m 666 "$DEVDIR/fuse" c 10 229 && mknod -m 666 "$DEVDIR/null" c 1 3 &&
  mknod -m 666 "$DEVDIR/sub/fuse" c 10 229
request devices "$PRELUDE
cd /nix/store/out
for f in /build/made /tmp/made; do mknod \$f c 10 229 2>/dev/null && echo \$f >> made; done
for f in $DEVDIR/fuse $DEVDIR/null $DEVDIR/sub/fuse; do
  (: < \$f) 2>/dev/null && echo \$f read >> opened; (: > \$f) 2>/dev/null && echo \$f write >> opened
done
ls $DEVDIR > seen; true" ", \"constraints\": {\"system\": \"x86_64-linux\", \"available_ro_paths\": [\"$DEVDIR\"]}"
for rt in "${RUNTIMES[@]}"; do
  rm -rf "$T_TMP/devices-out"
  if "$OCIBUILD" build --runtime $rt "$T_TMP/devices.json" >"$T_TMP/devices.out" 2>"$T_TMP/devices.err" &&
    export_output "$T_TMP/devices.out" "$T_TMP/devices-out"; then
    D="$T_TMP/devices-out"
    grep -q fuse "$D/seen" && [ ! -e "$D/made" ] && [ ! -e "$D/opened" ] &&
      t_ok "$rt: a build can neither make a device node nor open one on a host path it is given" ||
      t_fail "$rt: a build can neither make a device node nor open one it is given" \
        "made: $(cat "$D/made" 2>/dev/null) opened: $(cat "$D/opened" 2>/dev/null | tr '\n' ' ') seen: $(cat "$D/seen")"
  else
    t_fail "$rt: the device build succeeds" "$(cat "$T_TMP/devices.err")"
  fi
done

request memory "$PRELUDE
dd if=/dev/zero of=/dev/null bs=256M count=1"
if "$OCIBUILD" build --memory 64Mi --timeout 60 "$T_TMP/memory.json" >/dev/null 2>"$T_TMP/memory.err"; then
  t_fail "--memory 64Mi kills a build that allocates 256 MiB"
else
  t_contains "--memory 64Mi kills a build that allocates 256 MiB" "$(cat "$T_TMP/memory.err")" "memory limit"
fi
request small_memory "$PRELUDE
dd if=/dev/zero of=/dev/null bs=8M count=1 && echo ok > /nix/store/out/ok"
"$OCIBUILD" build --memory 64Mi --timeout 60 "$T_TMP/small_memory.json" >/dev/null 2>"$T_TMP/small.err" &&
  t_ok "a build within --memory succeeds" || t_fail "a build within --memory succeeds" "$(cat "$T_TMP/small.err")"

# The results are written once the big file is gone: the tmpfs is full before that.
request write "$PRELUDE
stat -f -c %T /build > /nix/store/out/fs
dd if=/dev/zero of=/build/big bs=1M count=64 2>/dev/null; rc=\$?; size=\$(stat -c %s /build/big)
rm -f /build/big; echo \$rc > /nix/store/out/rc; echo \$size > /nix/store/out/size"
if "$OCIBUILD" build --scratch-limit 16Mi --timeout 60 "$T_TMP/write.json" >"$T_TMP/write.out" 2>"$T_TMP/write.err" &&
  export_output "$T_TMP/write.out" "$T_TMP/write-out"; then
  W="$T_TMP/write-out"
  [ "$(cat "$W/rc")" != 0 ] && [ "$(cat "$W/size")" -le $((16 << 20)) ] &&
    t_ok "--scratch-limit 16Mi stops a build writing 64 MiB ($(cat "$W/size") bytes written)" ||
    t_fail "--scratch-limit 16Mi stops a build writing 64 MiB" "rc $(cat "$W/rc") size $(cat "$W/size")"
  [ "$(cat "$W/fs")" = tmpfs ] && t_ok "the capped scratch is a tmpfs, not the host's disk" || t_fail "capped scratch filesystem" "$(cat "$W/fs")"
else
  t_fail "--scratch-limit build" "$(cat "$T_TMP/write.err")"
fi
t_settle "$OCIBUILD_DATA_DIR" # (lib.sh) the scratch tmpfs goes with the bundle, after the answer
grep -F "$BUNDLES" /proc/self/mountinfo && t_fail "no scratch tmpfs left mounted" || t_ok "no scratch tmpfs left mounted"
if out=$("$OCIBUILD" build --rootless --memory 64Mi "$T_TMP/write.json" 2>&1); then
  t_fail "--memory with --rootless is refused"
else
  t_contains "--memory with --rootless is refused" "$out" "rootless builds cannot have a memory limit"
fi

# --- two builds at once run as different host ids ---
request together "$PRELUDE
cat /proc/self/uid_map > /nix/store/out/uid_map; echo started >&2
$WAIT_GO"
for i in 1 2; do
  OCIBUILD_DATA_DIR="$T_TMP/data$i" "$OCIBUILD" build "$T_TMP/together.json" >"$T_TMP/together$i.out" 2>"$T_TMP/together$i.err" &
  eval "pid$i=$!"
done
if wait_for "$T_TMP/together1.err" started && wait_for "$T_TMP/together2.err" started; then
  for i in 1 2; do touch "$(ls -d "$T_TMP/data$i"/bundles/*-*-*-*-*)/scratch/$SN_BUILD/go"; done
fi
wait "$pid1"; rc1=$?; wait "$pid2"; rc2=$?
if [ $rc1 -eq 0 ] && [ $rc2 -eq 0 ]; then
  export_output "$T_TMP/together1.out" "$T_TMP/t1" && export_output "$T_TMP/together2.out" "$T_TMP/t2"
  h1=$(awk '$1 == 1000 {print $2}' "$T_TMP/t1/uid_map"); h2=$(awk '$1 == 1000 {print $2}' "$T_TMP/t2/uid_map")
  r1=$(awk '$1 == 0 {print $2}' "$T_TMP/t1/uid_map"); r2=$(awk '$1 == 0 {print $2}' "$T_TMP/t2/uid_map")
  if [ -n "$h1" ] && [ -n "$h2" ] && [ $(( h1 > h2 ? h1 - h2 : h2 - h1 )) -ge 65536 ] &&
    [ $(( r1 > r2 ? r1 - r2 : r2 - r1 )) -ge 65536 ] && in_range "$h1" && in_range "$h2"; then
    t_ok "two concurrent builds run as different host id ranges ($r1.., $r2..)"
  else
    t_fail "two concurrent builds run as different host id ranges" "$(cat "$T_TMP/t1/uid_map" "$T_TMP/t2/uid_map")"
  fi
else
  t_fail "two concurrent builds" "$(cat "$T_TMP/together1.err" "$T_TMP/together2.err")"
fi

# --- a build killed with SIGKILL leaves its container running: its id slot waits for it ---
request orphan "$PRELUDE
echo started >&2; sleep 60"
request probe_ids "$PRELUDE
cat /proc/self/uid_map > /nix/store/out/uid_map"
root_of_build() { # DATA_DIR -> container root's host uid of a probe_ids build there
  # Settled (lib.sh): the next build must find this one's id slot free again.
  OCIBUILD_DATA_DIR="$1" "$OCIBUILD" build "$T_TMP/probe_ids.json" >"$T_TMP/ids.out" 2>"$T_TMP/ids.err" &&
    t_settle "$1" &&
    rm -rf "$T_TMP/ids" && export_output "$T_TMP/ids.out" "$T_TMP/ids" &&
    awk '$1 == 0 {print $2}' "$T_TMP/ids/uid_map"
}
OCIBUILD_DATA_DIR="$T_TMP/orphan" "$OCIBUILD" build "$T_TMP/orphan.json" >/dev/null 2>"$T_TMP/orphan.err" &
opid=$!
if wait_for "$T_TMP/orphan.err" started; then
  kill -KILL $opid; wait $opid 2>/dev/null
  orphan_root=$(stat -c %u "$(ls -d "$T_TMP/orphan"/bundles/*-*-*-*-*)")
  other_root=$(root_of_build "$T_TMP/other")
  [ -n "$other_root" ] && in_range "$orphan_root" && [ "$other_root" != "$orphan_root" ] &&
    t_ok "while a killed build's container runs, its id slot goes to no other build" ||
    t_fail "while a killed build's container runs, its id slot goes to no other build" \
      "orphan $orphan_root, next $other_root: $(cat "$T_TMP/ids.err")"
  # The next build with the killed one's bundle root sweeps its container; the slot comes back.
  swept_root=$(root_of_build "$T_TMP/orphan")
  again_root=$(root_of_build "$T_TMP/other")
  [ -n "$swept_root" ] && [ "$again_root" = "$orphan_root" ] &&
    t_ok "once the sweep removed the killed build's container, its id slot is used again" ||
    t_fail "once the sweep removed the killed build's container, its id slot is used again" \
      "orphan $orphan_root, after the sweep $swept_root, then $again_root"
else
  t_fail "orphan build starts" "$(cat "$T_TMP/orphan.err")"
fi

# --- crun 1.8 runs the same sandbox (in a mount namespace without the cgroup2 mount it refuses) ---
if command -v crun >/dev/null; then
  request crun "$PRELUDE
cat /proc/self/uid_map > /nix/store/out/uid_map; grep -E '^Cap(Eff|Bnd)' /proc/self/status > /nix/store/out/caps
chmod u+s /nix/store/out/uid_map 2>/dev/null; stat -c %a /nix/store/out/uid_map > /nix/store/out/mode"
  if unshare -m sh -c 'umount /sys/fs/cgroup/unified 2>/dev/null; exec "$0" build --runtime crun "$1"' \
    "$OCIBUILD" "$T_TMP/crun.json" >"$T_TMP/crun.out" 2>"$T_TMP/crun.err" &&
    export_output "$T_TMP/crun.out" "$T_TMP/crun-out"; then
    C="$T_TMP/crun-out"
    host=$(awk '$1 == 1000 {print $2}' "$C/uid_map")
    [ -n "$host" ] && in_range "$host" && [ "$(awk '{print $2}' "$C/caps" | sort -u)" = 0000000000000000 ] &&
      [ "$(cat "$C/mode")" = 644 ] &&
      t_ok "crun: the same id slot map, no capability, setuid refused" ||
      t_fail "crun: the same sandbox" "$(cat "$C/uid_map" "$C/caps" "$C/mode")"
  else
    t_fail "crun build" "$(cat "$T_TMP/crun.err")"
  fi
else
  t_skip "crun runs the same sandbox" "crun is not installed"
fi

for d in "$OCIBUILD_DATA_DIR" "$T_TMP"/data1 "$T_TMP"/data2 "$T_TMP"/orphan "$T_TMP"/other; do t_settle "$d"; done
left=$(ls -A "$BUNDLES" "$T_TMP"/data1/bundles "$T_TMP"/data2/bundles "$T_TMP"/orphan/bundles \
  "$T_TMP"/other/bundles 2>/dev/null | grep -E '^[0-9a-f]{8}-' || true)
[ -z "$left" ] && t_ok "no bundle left behind" || t_fail "no bundle left behind" "$left"
t_done
