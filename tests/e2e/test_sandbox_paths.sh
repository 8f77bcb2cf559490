#!/bin/bash
# The sandbox's paths (docs/security.md, "Paths beneath the bundle" and "Deep trees"), each
# attack a real runc build would try: an output reached through a symlink the build made or
# that came in as an input (the host must not read /etc/shadow), the same rootless (the helper
# must not chmod the user's own 0600 file), planted symlinks and read-only dirs at removal, an
# additional file under a symlink input, a 100,000-level directory chain (refused as an output,
# removed as scratch, the next build fine), a tree exactly at the depth limit ingested and
# exported with 32 descriptors, and a leftover bundle that cannot be removed (quarantined,
# reported once, never in the way). The attacks run with openat2 and with the fallback walk.
source "$(dirname "$0")/lib.sh"

[ "$(id -u)" -eq 0 ] || { t_skip "sandbox paths" "must run as root (rootful runc, a tmpfs, a test user)"; t_done; exit; }
command -v runc >/dev/null || { t_skip "sandbox paths" "runc is not installed (apt-get install runc)"; t_done; exit; }

# Everything on a tmpfs of its own: this VM's ext4 (online discard) takes ~25 s to make and
# remove 100,000 directories, a tmpfs ~5 s.
FS="$T_TMP/fs"
mkdir -p "$FS"
mount -t tmpfs -o size=4g,mode=0755 obi-sandbox-paths "$FS" || { t_fail "mount a tmpfs for the test"; t_done; exit; }
t_cleanup "umount -l '$FS'"
export OCIBUILD_STORE="$FS/store"
export OCIBUILD_DATA_DIR="$FS/data"
BUNDLES="$OCIBUILD_DATA_DIR/bundles"

json_string() { python3 -c 'import json,sys; print(json.dumps(sys.argv[1]))' "$1"; }
b64() { printf '%s' "$1" | base64 -w0; }

# request NAME SCRIPT OUTPUTS_JSON [EXTRA_FIELDS] [INPUTS_JSON] -> $T_TMP/NAME.json
request() {
  local name=$1 script=$2 outputs=$3 extra=${4:-} inputs=${5:-'{"busybox": "/bin/busybox"}'}
  cat >"$T_TMP/$name.json" <<JSON
{
  "inputs": $inputs,
  "command_args": ["/nix/store/busybox", "sh", "-c", $(json_string "$script")],
  "working_dir": "build",
  "scratch_paths": ["build", "nix/store"],
  "inputs_dir": "nix/store",
  "outputs": $outputs
  $extra
}
JSON
}

# in_store DIR FILE: is FILE's content a blob of the store at DIR?
in_store() {
  local digest
  digest=$(b3sum --no-names "$2")
  [ -n "$(find "$1" -name "*$digest*" 2>/dev/null)" ]
}

no_leftovers() {
  local left
  t_settle "$OCIBUILD_DATA_DIR" 30 # (lib.sh) the deep trees below take a while to remove
  left=$(ls -A "$BUNDLES" 2>/dev/null | grep -v '^\.' || true)
  [ -z "$left" ] || { echo "bundle dirs left: $left"; return 1; }
  grep -F "$BUNDLES" /proc/self/mountinfo && { echo "mounts left"; return 1; }
  return 0
}

# expect_refused LABEL REQUEST NEEDLE... : the build fails, its error has every NEEDLE, /etc/shadow
# is not in the store and no bundle is left.
expect_refused() {
  local label=$1 req=$2; shift 2
  local out rc=0 needle missing=""
  out=$("$OCIBUILD" build "$req" 2>"$T_TMP/stderr") || rc=$?
  for needle in "$@"; do grep -qF -- "$needle" "$T_TMP/stderr" || missing="$missing [$needle]"; done
  if [ "$rc" -ne 0 ] && [ -z "$missing" ] && ! in_store "$OCIBUILD_STORE" /etc/shadow && no_leftovers >/dev/null; then
    t_ok "$label"
  else
    t_fail "$label" "exit $rc; missing in the error:$missing; shadow in store: $(in_store "$OCIBUILD_STORE" /etc/shadow && echo yes || echo no)
stdout: $out
stderr: $(tail -5 "$T_TMP/stderr")"
  fi
}

# --- outputs through a symlink the build made, and through a symlink input ---
request via-build 'ln -s /etc /nix/store/a' '["nix/store/a/shadow"]'
mkdir -p "$T_TMP/in" && ln -s /etc "$T_TMP/in/a"
request via-input 'true' '["nix/store/a/shadow"]' '' "{\"a\": \"$T_TMP/in/a\", \"busybox\": \"/bin/busybox\"}"
for mode in openat2 fallback; do
  export OCIBUILD_BENEATH_FALLBACK=$([ $mode = fallback ] && echo 1 || echo 0)
  expect_refused "$mode: output /nix/store/a/shadow with /nix/store/a -> /etc made by the build: refused, /etc/shadow never read" \
    "$T_TMP/via-build.json" 'output 0 "/nix/store/a/shadow"' '/nix/store/a: is a symlink, not followed'
  expect_refused "$mode: the same through a symlink input (no build code): refused" \
    "$T_TMP/via-input.json" 'output 0 "/nix/store/a/shadow"' '/nix/store/a: is a symlink, not followed'
done
unset OCIBUILD_BENEATH_FALLBACK

# The output itself may be a symlink: stored as one, its target never read.
request out-link 'ln -s /etc/shadow /nix/store/out' '["nix/store/out"]'
if out=$("$OCIBUILD" build "$T_TMP/out-link.json" 2>"$T_TMP/stderr") &&
  echo "$out" | python3 -c 'import json,sys,base64; n=json.load(sys.stdin)["outputs"][0]["symlink"]; sys.exit(base64.b64decode(n["target"]) != b"/etc/shadow")' &&
  ! in_store "$OCIBUILD_STORE" /etc/shadow; then
  t_ok "an output that is a symlink is stored as a symlink, its target not read"
else
  t_fail "an output that is a symlink is stored as a symlink, its target not read" "$out $(tail -3 "$T_TMP/stderr")"
fi

# --- removal: planted symlinks into a host dir, read-only dirs: nothing outside is touched ---
CANARY="$T_TMP/canary"
mkdir -p "$CANARY/sub" && echo canary >"$CANARY/file" && chmod 600 "$CANARY/file" && chmod 500 "$CANARY/sub"
canary_state() { stat -c '%a %s' "$CANARY" "$CANARY/file" "$CANARY/sub"; ls -A "$CANARY"; }
before=$(canary_state)
request planted "mkdir -p /build/ro/x /nix/store/out && ln -s $CANARY /build/ro/x/dir && ln -s $CANARY/file /build/ro/x/file && ln -s $CANARY/sub /build/sub && echo ok > /nix/store/out/f && chmod 0 /build/ro/x && chmod 500 /build/ro" '["nix/store/out"]'
if "$OCIBUILD" build "$T_TMP/planted.json" >/dev/null 2>"$T_TMP/stderr" && no_leftovers >/dev/null && [ "$(canary_state)" = "$before" ]; then
  t_ok "removal never follows symlinks the build planted (host dir keeps its files and modes), read-only dirs removed"
else
  t_fail "removal never follows symlinks the build planted" "before: $before
after: $(canary_state)
$(tail -3 "$T_TMP/stderr")"
fi

# --- an additional file below where a symlink input lands: never written through it ---
request addfile 'cat /nix/store/cfg/file' '["nix/store/out"]' \
  ", \"additional_files\": [{\"path\": \"nix/store/cfg/file\", \"contents\": \"$(b64 planted)\"}]" \
  "{\"busybox\": \"/bin/busybox\", \"cfg\": \"$T_TMP/in/cfg\"}"
ln -s "$CANARY" "$T_TMP/in/cfg"
before=$(canary_state)
if ! "$OCIBUILD" build "$T_TMP/addfile.json" >/dev/null 2>"$T_TMP/stderr" && no_leftovers >/dev/null && [ "$(canary_state)" = "$before" ]; then
  t_ok "an additional file under a symlink input's name is refused, nothing written through it"
else
  t_fail "an additional file under a symlink input's name is refused" "$(canary_state) $(tail -3 "$T_TMP/stderr")"
fi

# --- deep trees ---
# 100 chunks of 1,000 levels nested by renames (busybox cannot cd below PATH_MAX).
DEEP_SCRIPT='chunk=$(i=0; while [ $i -lt 999 ]; do printf "d/"; i=$((i+1)); done; printf d)
mkdir -p "acc/$chunk" || exit 1
k=1
while [ $k -lt 100 ]; do
  mkdir -p "new/$chunk" && mv acc "new/$chunk/d" && mv new acc || exit 1
  k=$((k+1))
done'
deep_file=", \"additional_files\": [{\"path\": \"build/deep.sh\", \"contents\": \"$(b64 "$DEEP_SCRIPT")\"}]"
request deep-out 'mkdir /nix/store/out && cd /nix/store/out && sh /build/deep.sh' '["nix/store/out"]' "$deep_file"
start=$(date +%s)
out=$("$OCIBUILD" build "$T_TMP/deep-out.json" 2>"$T_TMP/stderr"); rc=$?
if [ $rc -ne 0 ] && grep -qF 'output 0 "/nix/store/out"' "$T_TMP/stderr" &&
  grep -qF 'directories nested deeper than 2048 levels' "$T_TMP/stderr" && no_leftovers >/dev/null; then
  t_ok "a 100,000-level output is refused naming the output and the depth limit, and removed ($(($(date +%s) - start)) s)"
else
  t_fail "a 100,000-level output is refused naming the output and the limit, and removed" "exit $rc; $(tail -c 600 "$T_TMP/stderr"); $(no_leftovers)"
fi
request deep-scratch 'cd /build && sh /build/deep.sh && mkdir /nix/store/out && echo fine > /nix/store/out/f' '["nix/store/out"]' "$deep_file"
if "$OCIBUILD" build "$T_TMP/deep-scratch.json" >/dev/null 2>"$T_TMP/stderr" && no_leftovers >/dev/null; then
  t_ok "a build that leaves a 100,000-level chain in scratch succeeds and its bundle is removed"
else
  t_fail "a 100,000-level chain in scratch is removed" "$(tail -c 600 "$T_TMP/stderr"); $(no_leftovers)"
fi
request after-deep 'mkdir /nix/store/out && echo next > /nix/store/out/f' '["nix/store/out"]'
t_check "the next build after the deep ones works" "$OCIBUILD" build "$T_TMP/after-deep.json"

# Exactly at the limit: 2,048 levels (the output and 2,047 below it) are ingested, and exported
# again holding at most 32 descriptors.
request limit 'mkdir /nix/store/out && cd /nix/store/out && mkdir -p "$(i=1; while [ $i -lt 2047 ]; do printf d/; i=$((i+1)); done; printf d)"' '["nix/store/out"]'
if out=$(bash -c 'ulimit -Sn 32 && exec "$@"' _ "$OCIBUILD" build "$T_TMP/limit.json" 2>"$T_TMP/stderr"); then
  echo "$out" | python3 -c 'import json,sys; print(json.dumps(json.load(sys.stdin)["outputs"][0]))' >"$T_TMP/limit-node.json"
  if bash -c 'ulimit -Sn 32 && exec "$@"' _ "$OCIBUILD" store export - "$FS/limit-export" <"$T_TMP/limit-node.json" 2>"$T_TMP/stderr" &&
    depth=$(cd "$FS/limit-export" && find . -type d | awk -F/ '{ if (NF > m) m = NF } END { print m }') && [ "$depth" = 2048 ]; then
    t_ok "a tree exactly 2,048 levels deep is ingested and exported with 32 descriptors"
  else
    t_fail "a tree at the depth limit is exported" "depth ${depth:-?}; $(tail -c 400 "$T_TMP/stderr")"
  fi
  chmod -R u+w "$FS/limit-export" 2>/dev/null; rm -rf "$FS/limit-export"
else
  t_fail "a tree exactly 2,048 levels deep is ingested with 32 descriptors" "$(tail -c 600 "$T_TMP/stderr")"
fi

# --- a leftover that cannot be removed is quarantined, reported once, and never in the way ---
stale="$BUNDLES/00000000-0000-4000-8000-$(printf '%012d' $$)"
mkdir -p "$stale/scratch" && touch "$stale/scratch/stuck" && chattr +i "$stale/scratch/stuck"
t_cleanup "chattr -i '$BUNDLES/.quarantine/$(basename "$stale")/scratch/stuck' '$stale/scratch/stuck'"
request quarantine 'mkdir /nix/store/out && echo q > /nix/store/out/f' '["nix/store/out"]'
if "$OCIBUILD" build "$T_TMP/quarantine.json" >/dev/null 2>"$T_TMP/stderr" &&
  grep -qF "could not remove bundle $stale" "$T_TMP/stderr" && [ -d "$BUNDLES/.quarantine/$(basename "$stale")" ] && [ ! -e "$stale" ]; then
  t_ok "an unremovable leftover bundle is quarantined and reported, and the build goes on"
else
  t_fail "an unremovable leftover bundle is quarantined and reported" "$(tail -5 "$T_TMP/stderr"); $(ls -A "$BUNDLES")"
fi
if "$OCIBUILD" build "$T_TMP/quarantine.json" >/dev/null 2>"$T_TMP/stderr" && ! grep -q "could not remove" "$T_TMP/stderr"; then
  t_ok "a quarantined bundle is reported once"
else
  t_fail "a quarantined bundle is reported once" "$(tail -5 "$T_TMP/stderr")"
fi
chattr -i "$BUNDLES/.quarantine/$(basename "$stale")/scratch/stuck" 2>/dev/null
"$OCIBUILD" build "$T_TMP/quarantine.json" >/dev/null 2>&1
if [ -z "$(ls -A "$BUNDLES/.quarantine" 2>/dev/null)" ]; then
  t_ok "once removable, a quarantined bundle goes at the next sweep"
else
  t_fail "once removable, a quarantined bundle goes at the next sweep" "$(ls -A "$BUNDLES/.quarantine")"
fi

# --- rootless: the helper must not chmod the invoking user's own 0600 file ---
rootless_tools=yes
for tool in newuidmap newgidmap useradd runuser; do command -v $tool >/dev/null || rootless_tools=$tool; done
if [ "$rootless_tools" != yes ]; then
  t_skip "rootless: outputs through a symlink" "$rootless_tools missing (apt-get install uidmap)"
  t_done; exit
fi
USER_NAME=obi-rootless
id "$USER_NAME" >/dev/null 2>&1 || useradd --system --create-home --home-dir /var/lib/$USER_NAME --shell /bin/sh "$USER_NAME" || { t_fail "create test user"; t_done; exit; }
grep -q "^$USER_NAME:" /etc/subuid || echo "$USER_NAME:200000:65536" >> /etc/subuid
grep -q "^$USER_NAME:" /etc/subgid || echo "$USER_NAME:200000:65536" >> /etc/subgid
W=$(mktemp -d /tmp/obi-sandbox-paths.XXXXXX)
chmod 755 "$W"
t_cleanup "rm -rf '$W'"
mkdir -p "$W/home"
cp "$OCIBUILD" "$W/ocibuild"
echo "user-secret-$$-$RANDOM" >"$W/home/secret"
chmod 600 "$W/home/secret"
chown -R "$USER_NAME" "$W"
as_user() { runuser -u "$USER_NAME" -- env -i PATH=/usr/local/bin:/usr/bin:/bin:/usr/sbin:/sbin HOME="$W/home" XDG_RUNTIME_DIR= OCIBUILD_DATA_DIR="$W/data" "$@"; }
request rootless-secret "ln -s $W/home /nix/store/a" '["nix/store/a/secret"]'
request rootless-planted "mkdir -p /build/ro/x /nix/store/out && ln -s $W/home /build/ro/x/home && ln -s $W/home/secret /build/secret && echo ok > /nix/store/out/f && chmod 0 /build/ro/x && chmod 500 /build/ro" '["nix/store/out"]'
chmod 644 "$T_TMP"/rootless-*.json && chmod 755 "$T_TMP"
for mode in openat2 fallback; do
  fb=$([ $mode = fallback ] && echo 1 || echo 0)
  rc=0
  as_user env OCIBUILD_BENEATH_FALLBACK=$fb "$W/ocibuild" build --rootless "$T_TMP/rootless-secret.json" >/dev/null 2>"$W/err" || rc=$?
  t_settle "$W/data" # the removal (after the answer) is what must leave the mode alone
  mode_now=$(stat -c %a "$W/home/secret")
  left=$(ls -A "$W/data/bundles" 2>/dev/null | grep -v '^\.' || true)
  if [ $rc -ne 0 ] && [ "$mode_now" = 600 ] && grep -qF '/nix/store/a: is a symlink, not followed' "$W/err" &&
    ! in_store "$W/data/store" "$W/home/secret" && [ -z "$left" ]; then
    t_ok "$mode: rootless output through a symlink to the user's home: refused, the 0600 file keeps its mode, nothing ingested"
  else
    t_fail "$mode: rootless output through a symlink to the user's home" "exit $rc, mode $mode_now, left: $left; $(tail -3 "$W/err")"
    chmod 600 "$W/home/secret"
  fi
done
rc=0
as_user "$W/ocibuild" build --rootless "$T_TMP/rootless-planted.json" >/dev/null 2>"$W/err" || rc=$?
t_settle "$W/data"
left=$(ls -A "$W/data/bundles" 2>/dev/null | grep -v '^\.' || true)
if [ $rc -eq 0 ] && [ "$(stat -c %a "$W/home/secret")" = 600 ] && [ -f "$W/home/secret" ] && [ -z "$left" ]; then
  t_ok "rootless removal never follows planted symlinks, read-only sub-id dirs removed"
else
  t_fail "rootless removal never follows planted symlinks" "exit $rc, left: $left; $(tail -3 "$W/err")"
fi

t_done
