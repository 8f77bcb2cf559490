#!/bin/bash
# Rootless builds: ocibuild run by an unprivileged user with /etc/subuid and /etc/subgid ranges
# (set up here), runc in a user namespace with the two-id maps of build.md. Checks the output,
# the build user's ids, that writes to the root fail, and that nothing is left behind (the
# build user's sub-id owned files included), and that a fork loop stops at --max-pids
# (RLIMIT_NPROC). Also crun, inside a private mount namespace that
# hides the cgroup2 mount crun 1.8 refuses on this hybrid-cgroup machine.
source "$(dirname "$0")/lib.sh"

[ "$(id -u)" -eq 0 ] || { t_skip "rootless builds" "must start as root to create the test user"; t_done; exit; }
for tool in runc newuidmap newgidmap useradd runuser; do
  command -v $tool >/dev/null || { t_skip "rootless builds" "$tool missing (apt-get install runc uidmap)"; t_done; exit; }
done

USER_NAME=obi-rootless
if ! id "$USER_NAME" >/dev/null 2>&1; then
  useradd --system --create-home --home-dir /var/lib/$USER_NAME --shell /bin/sh "$USER_NAME" || { t_fail "create test user"; t_done; exit; }
fi
uid=$(id -u $USER_NAME)
grep -q "^$USER_NAME:" /etc/subuid || echo "$USER_NAME:200000:65536" >> /etc/subuid
grep -q "^$USER_NAME:" /etc/subgid || echo "$USER_NAME:200000:65536" >> /etc/subgid
subuid=$(grep "^$USER_NAME:" /etc/subuid | head -1 | cut -d: -f2)

# Everything the user needs, in a directory it can reach.
W=$(mktemp -d /tmp/obi-rootless.XXXXXX)
chmod 755 "$W"
t_cleanup "rm -rf '$W'"
cp "$OCIBUILD" "$W/ocibuild"
chown -R "$USER_NAME" "$W"
as_user() { runuser -u "$USER_NAME" -- env -i PATH=/usr/local/bin:/usr/bin:/bin:/usr/sbin:/sbin HOME="$W/home" XDG_RUNTIME_DIR= OCIBUILD_DATA_DIR="$W/data" "$@"; }

cat > "$W/req.json" <<'JSON'
{
  "inputs": {"busybox": "/bin/busybox"},
  "command_args": ["/nix/store/busybox", "sh", "-c", "mkdir -p /nix/store/out && id -u > /nix/store/out/uid && chmod 700 /nix/store/out && (touch /etc/x 2>/dev/null && echo rw || echo ro) > /nix/store/out/root && tail -n +3 /proc/net/dev | cut -d: -f1 | tr -d ' ' > /nix/store/out/net"],
  "working_dir": "build",
  "scratch_paths": ["build", "nix/store"],
  "inputs_dir": "nix/store",
  "outputs": ["nix/store/out"]
}
JSON
chown "$USER_NAME" "$W/req.json"

if out=$(as_user "$W/ocibuild" build --rootless "$W/req.json" 2>"$W/err"); then
  t_ok "rootless build succeeds as an unprivileged user"
  node=$(echo "$out" | python3 -c 'import json,sys; print(json.dumps(json.load(sys.stdin)["outputs"][0]))')
  echo "$node" > "$W/node.json"; chown "$USER_NAME" "$W/node.json"
  as_user "$W/ocibuild" store export - "$W/export" <"$W/node.json" 2>>"$W/err"
  [ "$(cat "$W/export/uid" 2>/dev/null)" = "1000" ] && t_ok "rootless build user is uid 1000 inside" || t_fail "rootless uid" "$(cat "$W/err")"
  [ "$(cat "$W/export/root" 2>/dev/null)" = "ro" ] && t_ok "rootless root filesystem is read-only" || t_fail "rootless ro root"
  [ "$(cat "$W/export/net" 2>/dev/null)" = "lo" ] && t_ok "rootless network namespace has only lo" || t_fail "rootless network" "$(cat "$W/export/net" 2>/dev/null)"
else
  t_fail "rootless build succeeds as an unprivileged user" "$(cat "$W/err")"
fi
t_settle "$W/data"; left=$(ls -A "$W/data/bundles" 2>/dev/null | grep -v '^\.' || true)
[ -z "$left" ] && t_ok "rootless build leaves no bundle (sub-id owned files removed)" || t_fail "rootless leftovers" "$left"

# The second build of the same request takes the first one's root skeleton from the pool (owned
# by the user, with the runtime's mount points in it) and gives it back; still read-only inside.
pool="$W/data/bundles/.root-pool"
before=$(ls -A "$pool" 2>/dev/null); inode_before=$(stat -c %i "$pool/$before" 2>/dev/null)
if out=$(as_user "$W/ocibuild" build --rootless "$W/req.json" 2>"$W/err2"); then
  after=$(ls -A "$pool" 2>/dev/null); inode_after=$(stat -c %i "$pool/$after" 2>/dev/null)
  node=$(echo "$out" | python3 -c 'import json,sys; print(json.dumps(json.load(sys.stdin)["outputs"][0]))')
  echo "$node" > "$W/node2.json"; chown "$USER_NAME" "$W/node2.json"
  as_user "$W/ocibuild" store export - "$W/export2" <"$W/node2.json" 2>>"$W/err2"
  if [ -n "$before" ] && [ "$before" = "$after" ] && [ "$inode_before" = "$inode_after" ] &&
    [ "$(stat -c %U "$pool/$after")" = "$USER_NAME" ] &&
    [ "$(cat "$W/export2/root" 2>/dev/null)" = "ro" ]; then
    t_ok "rootless: a repeated build reuses the user's pooled root skeleton, still read-only"
  else
    t_fail "rootless: a repeated build reuses the user's pooled root skeleton, still read-only" \
      "pool before: $before ($inode_before), after: $after ($inode_after); root: $(cat "$W/export2/root" 2>/dev/null)"
  fi
else
  t_fail "rootless: a repeated build reuses the user's pooled root skeleton, still read-only" "$(cat "$W/err2")"
fi
t_settle "$W/data"; left=$(ls -A "$W/data/bundles" 2>/dev/null | grep -v '^\.' || true)
[ -z "$left" ] && t_ok "rootless: the repeated build leaves no bundle" || t_fail "rootless leftovers after the repeat" "$left"

# Not root and no --rootless: rootless all the same (a normal user used to get "chown ...:
# Operation not permitted"); --rootful insists, and fails as it must without root.
if as_user "$W/ocibuild" build "$W/req.json" >/dev/null 2>"$W/err3"; then
  t_ok "an unprivileged user's build is rootless without --rootless"
else
  t_fail "an unprivileged user's build is rootless without --rootless" "$(cat "$W/err3")"
fi
as_user "$W/ocibuild" build --rootful "$W/req.json" >/dev/null 2>"$W/err4"; rc=$?
[ $rc -eq 1 ] && t_ok "--rootful as an unprivileged user fails as a set-up error (exit 1)" ||
  t_fail "--rootful as an unprivileged user fails as a set-up error (exit 1)" "rc=$rc $(cat "$W/err4")"
t_settle "$W/data"; left=$(ls -A "$W/data/bundles" 2>/dev/null | grep -v '^\.' || true)
[ -z "$left" ] && t_ok "rootless by default and --rootful leave no bundle" ||
  t_fail "rootless by default and --rootful leave no bundle" "$left"

# Rootless builds have no cgroup limits here; their process limit is RLIMIT_NPROC (docs/
# security.md "Limits"): a loop of 300 background sleeps stops at --max-pids. Without it the
# loop ran all 300.
cat > "$W/forks.json" <<'JSON'
{
  "inputs": {"busybox": "/bin/busybox"},
  "command_args": ["/nix/store/busybox", "sh", "-c", "mkdir -p /nix/store/out; (for i in $(seq 300); do sleep 60 & done) 2>/dev/null; set -- /proc/[0-9]*; echo $# > /nix/store/out/n; kill -9 -1 2>/dev/null; true"],
  "working_dir": "build",
  "scratch_paths": ["build", "nix/store"],
  "inputs_dir": "nix/store",
  "outputs": ["nix/store/out"]
}
JSON
chown "$USER_NAME" "$W/forks.json"
if out=$(as_user "$W/ocibuild" build --rootless --max-pids 64 --timeout 60 "$W/forks.json" 2>"$W/err"); then
  echo "$out" | python3 -c 'import json,sys; print(json.dumps(json.load(sys.stdin)["outputs"][0]))' >"$W/forks-node.json"
  chown "$USER_NAME" "$W/forks-node.json"
  as_user "$W/ocibuild" store export - "$W/forks-out" <"$W/forks-node.json" 2>>"$W/err"
  n=$(cat "$W/forks-out/n" 2>/dev/null)
  [ -n "$n" ] && [ "$n" -le 64 ] && [ "$n" -ge 32 ] && t_ok "rootless: a fork loop stops at --max-pids 64 ($n processes)" ||
    t_fail "rootless: a fork loop stops at --max-pids 64" "n=$n $(cat "$W/err")"
else
  t_fail "rootless: the fork loop build succeeds" "$(cat "$W/err")"
fi
t_settle "$W/data"

# A rootless user without a subuid range gets told how to add one.
NOSUB=obi-nosubuid
id $NOSUB >/dev/null 2>&1 || useradd --system --no-create-home --shell /bin/sh $NOSUB
sed -i "/^$NOSUB:/d" /etc/subuid /etc/subgid
mkdir -p "$W/nosub" && chown $NOSUB "$W/nosub"
msg=$(runuser -u $NOSUB -- env -i PATH=/usr/bin:/bin HOME=/tmp OCIBUILD_DATA_DIR="$W/nosub" "$W/ocibuild" build --rootless "$W/req.json" 2>&1)
t_contains "rootless without subuid range says how to add one" "$msg" "usermod"

# crun: hybrid cgroups must be hidden from it in a private mount namespace.
if command -v crun >/dev/null && command -v unshare >/dev/null; then
  export OCIBUILD_DATA_DIR="$T_TMP/crun-data" OCIBUILD_STORE="$T_TMP/crun-store"
  cp "$W/req.json" "$T_TMP/req.json"
  hide='if mountpoint -q /sys/fs/cgroup/unified; then umount /sys/fs/cgroup/unified; fi'
  if out=$(unshare -m --propagation private sh -c "$hide; exec '$OCIBUILD' build --runtime crun '$T_TMP/req.json'" 2>"$T_TMP/crun.err"); then
    t_ok "crun builds the same request"
  elif grep -q "hybrid" "$T_TMP/crun.err"; then
    t_skip "crun builds the same request" "crun refuses this machine's cgroup layout even with cgroup2 hidden: $(tail -1 "$T_TMP/crun.err")"
  else
    t_fail "crun builds the same request" "$(cat "$T_TMP/crun.err")"
  fi
  t_settle "$T_TMP/crun-data"; left=$(ls -A "$T_TMP/crun-data/bundles" 2>/dev/null | grep -v '^\.' || true)
  [ -z "$left" ] && t_ok "crun build leaves no bundle" || t_fail "crun leftovers" "$left"
else
  t_skip "crun builds the same request" "crun or unshare not installed"
fi
t_done
