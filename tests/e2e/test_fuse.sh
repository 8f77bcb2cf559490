#!/bin/bash
# The castore over FUSE (issue 20; docs/castore.md "Mounting", docs/build.md "Inputs over FUSE",
# docs/security.md "Inputs over FUSE"), with real FUSE mounts and real runc builds:
# - `ocibuild store mount`: every node kind, unicode names, shared subtrees, a 100,000-entry
#   directory and a 1 GiB file read back and compared with the store (re-imported, and an
#   independent digest of the small tree), inode numbers stable per digest, concurrent readers,
#   read-only, and unmounted on SIGINT, SIGTERM, fusermount3 -u and kill -9;
# - what a hostile or broken store does to a reader: a missing blob and a corrupt directory give
#   EIO (promptly, never a hang), and the mount process says which object;
# - builds with --inputs fuse (rootful and rootless) and auto over a grpc+unix:// store reading
#   one file of a large input without fetching the rest; an input directory whose own entry is a
#   symlink called like the input must not put a host path in the input's place; a missing input
#   blob fails the build naming it; kill -9 of ocibuild mid-build leaves no mount (fusermount3's
#   auto_unmount), and a mount whose server and watcher were both killed is swept by the next run;
# - a daemon serving builds with FUSE inputs from a castore it reaches over gRPC.
# Every case checks that no mount is left (`/proc/self/mountinfo`).
source "$(dirname "$0")/lib.sh"

[ "$(id -u)" -eq 0 ] || { t_skip "FUSE mounts and builds" "must run as root (rootful builds, the rootless test user)"; t_done; exit; }
[ -c /dev/fuse ] || { t_skip "FUSE mounts and builds" "/dev/fuse is missing: no FUSE on this machine (modprobe fuse)"; t_done; exit; }
for tool in fusermount3 runc b3sum runuser useradd pgrep; do
  command -v $tool >/dev/null || { t_skip "FUSE mounts and builds" "$tool missing (apt-get install fuse3 runc b3sum util-linux passwd)"; t_done; exit; }
done

export OCIBUILD_STORE="$T_TMP/store"
export OCIBUILD_DATA_DIR="$T_TMP/data"
BUNDLES="$OCIBUILD_DATA_DIR/bundles"
SRC="$T_TMP/src"

# Nothing of this test mounted any more (paths under T_TMP have no characters mountinfo escapes).
no_mounts() { ! grep -qF " $T_TMP/" /proc/self/mountinfo; }
is_mounted() { grep -qF " $1 " /proc/self/mountinfo; }
wait_mounted() { for _ in $(seq 200); do is_mounted "$1" && return 0; sleep 0.05; done; return 1; }
wait_unmounted() { for _ in $(seq 200); do is_mounted "$1" || return 0; sleep 0.05; done; return 1; }
t_cleanup 'grep -oF " $T_TMP/" /proc/self/mountinfo >/dev/null && for m in $(grep -F " $T_TMP/" /proc/self/mountinfo | cut -d" " -f5 | sort -r); do umount -l "$m"; done'

# mount_bg NAME ROOT MOUNTPOINT [OPTIONS]: `store mount` in the background, pid in MOUNT_PID.
mount_bg() {
  local name=$1 root=$2 mnt=$3; shift 3
  mkdir -p "$mnt"
  "$OCIBUILD" store mount "$@" "$root" "$mnt" 2>"$T_TMP/$name.err" &
  MOUNT_PID=$!
  t_cleanup "kill $MOUNT_PID"
  wait_mounted "$mnt"
}
node_field() { python3 -c 'import json,sys; n=json.load(sys.stdin); k=next(iter(n)); print(n[k].get(sys.argv[1], ""))' "$1"; }
b64hex() { python3 -c 'import base64,sys; print(base64.b64decode(sys.argv[1]).hex())' "$1"; }

# --- the tree: every kind, unicode, shared subtrees ---
mkdir -p "$SRC/small/dir/nested" "$SRC/small/empty1" "$SRC/small/empty2" "$SRC/small/dup1/d" "$SRC/small/dup2/d"
echo hello > "$SRC/small/dir/file"
: > "$SRC/small/emptyfile"
printf '#!/bin/sh\necho run\n' > "$SRC/small/dir/nested/tool"; chmod 755 "$SRC/small/dir/nested/tool"
printf 'ünïcödé ☃\n' > "$SRC/small/héllo wörld ☃"
ln -s dir/file "$SRC/small/rel-link"
ln -s /etc/hostname "$SRC/small/abs-link"
ln -s does-not-exist "$SRC/small/dangling"
for d in dup1 dup2; do echo shared > "$SRC/small/$d/d/same"; done
small=$("$OCIBUILD" store import "$SRC/small" 2>"$T_TMP/err") || { t_fail "import the small tree" "$(cat "$T_TMP/err")"; t_done; exit; }

M="$T_TMP/m-small"
if mount_bg small "$small" "$M"; then
  small_pid=$MOUNT_PID
  t_ok "store mount serves a directory node"
  t_check "a file reads back" grep -qx hello "$M/dir/file"
  t_check "an executable is executable" test -x "$M/dir/nested/tool"
  t_check "a plain file is not executable" test ! -x "$M/dir/file"
  [ "$(readlink "$M/rel-link")" = dir/file ] && [ "$(readlink "$M/abs-link")" = /etc/hostname ] &&
    [ "$(readlink "$M/dangling")" = does-not-exist ] && t_ok "symlinks keep their targets" || t_fail "symlink targets"
  [ "$(cat "$M/héllo wörld ☃")" = "ünïcödé ☃" ] && t_ok "unicode names and contents" || t_fail "unicode names"
  [ "$(stat -c %i "$M/dup1/d")" = "$(stat -c %i "$M/dup2/d")" ] &&
    [ "$(stat -c %i "$M/dup1/d/same")" = "$(stat -c %i "$M/dup2/d/same")" ] &&
    [ "$(stat -c %i "$M/dir/file")" != "$(stat -c %i "$M/dup1/d/same")" ] &&
    t_ok "inode numbers are the same for the same digest, different otherwise" || t_fail "inode numbers per digest"
  [ "$(stat -c %a "$M/dir" "$M/dir/file" "$M/dir/nested/tool" | tr '\n' ' ')" = "555 444 555 " ] && t_ok "modes 0555, 0444, 0555" || t_fail "modes" "$(stat -c '%a %n' "$M/dir" "$M/dir/file" "$M/dir/nested/tool")"
  expected=$(python3 "$E2E_DIR/castore_digest.py" "$SRC/small" | node_field digest)
  got=$(python3 "$E2E_DIR/castore_digest.py" "$M" | node_field digest)
  [ -n "$got" ] && [ "$got" = "$expected" ] && t_ok "an independent digest of the mounted tree is the store's" || t_fail "mounted tree digest" "$got vs $expected"
  # read-only, whoever asks
  touch "$M/new" 2>"$T_TMP/err" && t_fail "create a file in the mount" || t_contains "creating a file fails: read-only" "$(cat "$T_TMP/err")" "Read-only file system"
  (echo x >> "$M/dir/file") 2>"$T_TMP/err" && t_fail "write to a mounted file" || t_contains "writing a file fails: read-only" "$(cat "$T_TMP/err")" "Read-only file system"
  chmod 777 "$M/dir/file" 2>/dev/null && t_fail "chmod in the mount" || t_ok "chmod fails in the mount"
  opts=$(grep -F " $M " /proc/self/mountinfo)
  [[ "$opts" == *" ro,nosuid,nodev"* ]] && [[ "$opts" == *"default_permissions"* ]] && t_ok "mounted ro,nosuid,nodev with default_permissions" || t_fail "mount options" "$opts"
  # a second mount of the same tree: same inode numbers
  mount_bg small2 "$small" "$T_TMP/m-small2"
  [ "$(stat -c %i "$M/dir/file")" = "$(stat -c %i "$T_TMP/m-small2/dir/file")" ] && t_ok "inode numbers are the same in another mount" || t_fail "inode numbers across mounts"
  kill -TERM $MOUNT_PID; wait $MOUNT_PID; rc=$?
  [ $rc -eq 0 ] && wait_unmounted "$T_TMP/m-small2" && t_ok "SIGTERM unmounts and exits 0" || t_fail "SIGTERM unmount" "exit $rc"
  fusermount3 -u "$M"
  for _ in $(seq 200); do kill -0 "$small_pid" 2>/dev/null || break; sleep 0.05; done
  ! kill -0 "$small_pid" 2>/dev/null && ! is_mounted "$M" && wait "$small_pid" &&
    t_ok "fusermount3 -u ends the mount process (exit 0)" || t_fail "fusermount3 -u" "$(ps -o pid,stat,args -p "$small_pid"; cat "$T_TMP/small.err")"
else
  t_fail "store mount serves a directory node" "$(cat "$T_TMP/small.err")"
fi

# SIGINT, and kill -9 (fusermount3's auto_unmount takes the mount away once the server is gone)
if mount_bg int "$small" "$T_TMP/m-int"; then
  kill -INT $MOUNT_PID; wait $MOUNT_PID; rc=$?
  [ $rc -eq 0 ] && wait_unmounted "$T_TMP/m-int" && t_ok "SIGINT unmounts and exits 0" || t_fail "SIGINT unmount" "exit $rc"
fi
if mount_bg kill "$small" "$T_TMP/m-kill"; then
  kill -KILL $MOUNT_PID; wait $MOUNT_PID 2>/dev/null
  wait_unmounted "$T_TMP/m-kill" && t_ok "kill -9 of the mount process leaves no mount" || t_fail "kill -9 leaves a mount" "$(grep -F "$T_TMP/m-kill" /proc/self/mountinfo)"
fi

# --- a bad node in a list is named by its index ---
"$OCIBUILD" store mount "[$small, {\"directory\": 1}]" "$T_TMP/m-bad" 2>"$T_TMP/err" &&
  t_fail "a list with a bad second node mounts" ||
  t_contains "a bad node in a list names its index" "$(cat "$T_TMP/err")" "node JSON[1]"

# --- a 100,000-entry directory and a 1 GiB file ---
# On a tmpfs of the test's own: 100,000 files are made and removed in a second there, in
# minutes on this VM's disk (ext4 with synchronous discard).
mkdir -p "$SRC/large"
mount -t tmpfs -o size=1700m,mode=0755 obi-e2e-fuse "$SRC/large" || { t_fail "a tmpfs for the large tree"; t_done; exit; }
t_cleanup "umount -l '$SRC/large'"
mkdir -p "$SRC/large/many"
python3 -c 'import sys
for i in range(100000): open("%s/f%06d" % (sys.argv[1], i), "w").write(str(i % 7))' "$SRC/large/many"
head -c 1G /dev/urandom > "$SRC/large/big"
large=$("$OCIBUILD" store import "$SRC/large" 2>"$T_TMP/err") || t_fail "import the large tree" "$(cat "$T_TMP/err")"
M="$T_TMP/m-large"
if mount_bg large "$large" "$M"; then
  [ "$(find "$M/many" -type f | wc -l)" = 100000 ] && t_ok "find lists 100,000 entries" || t_fail "100,000 entries" "$(find "$M/many" | wc -l)"
  [ "$(cat "$M/many/f099999")" = "$((99999 % 7))" ] && t_ok "the last of 100,000 entries reads back" || t_fail "entry f099999"
  want=$(b3sum --no-names "$SRC/large/big")
  # four readers at once: from the start, and from three offsets to the end
  readers=()
  for k in 0 1 2 3; do
    (if [ $k -eq 0 ]; then b3sum --no-names "$M/big"; else tail -c +$((k * 256 * 1048576 + 1)) "$M/big" | b3sum --no-names; fi) >"$T_TMP/reader$k" &
    readers+=($!)
  done
  wait_readers_ok=1
  wait "${readers[@]}"
  [ "$(cat "$T_TMP/reader0")" = "$want" ] && t_ok "a 1 GiB file reads back with the store's digest" || { t_fail "1 GiB file digest" "$(cat "$T_TMP/reader0") vs $want"; wait_readers_ok=0; }
  for k in 1 2 3; do
    [ "$(cat "$T_TMP/reader$k")" = "$(tail -c +$((k * 256 * 1048576 + 1)) "$SRC/large/big" | b3sum --no-names)" ] || wait_readers_ok=0
  done
  [ $wait_readers_ok -eq 1 ] && t_ok "concurrent readers at other offsets read the same bytes" || t_fail "concurrent readers"
  # A large local blob is read with direct I/O where the kernel also maps such files shared
  # (FUSE_DIRECT_IO_ALLOW_MMAP, Linux 6.6): the mount's page cache does not hold it after the
  # reads above (fincore maps the file, which a shared mapping must survive), a small file's
  # pages stay cached across opens; shared and private mappings, and reads at and past the end,
  # see the blob's bytes either way.
  # As root the kernel reads ahead one 1008 KiB read on the mount (after INIT, which would have
  # lowered an earlier setting to its 128 KiB).
  dev=$(grep -F " $M " /proc/self/mountinfo | cut -d" " -f3)
  ra=$(cat "/sys/class/bdi/$dev/read_ahead_kb" 2>&1)
  [ "$ra" = 1008 ] && t_ok "the mount reads ahead 1008 KiB" || t_fail "read-ahead of the mount" "$dev: $ra"
  cat "$M/many/f000001" >/dev/null
  [ "$(fincore --bytes --noheadings --output RES "$M/many/f000001")" -gt 0 ] && t_ok "a small file's pages stay in the mount's page cache" || t_fail "small file not cached" "$(fincore "$M/many/f000001" 2>&1)"
  if [ "$(printf '%s\n' 6.6 "$(uname -r)" | sort -V | head -1)" = 6.6 ]; then
    res=$(fincore --bytes --noheadings --output RES "$M/big" 2>&1 | tr -d " ")
    [ "$res" = 0 ] && t_ok "a 1 GiB local blob is read past the mount's page cache (direct I/O)" || t_fail "1 GiB file in the mount's page cache" "$res"
  else
    t_skip "direct I/O of large local blobs" "Linux $(uname -r) cannot map direct-I/O files shared (FUSE_DIRECT_IO_ALLOW_MMAP is 6.6+): they keep the page cache"
  fi
  if /usr/bin/python3 - "$M/big" "$SRC/large/big" "$M/many/f000001" 2>"$T_TMP/err" <<'PY'
import mmap, os, sys
mounted, source, small = sys.argv[1:4]
size = os.path.getsize(source)
want = open(source, "rb")
def check(what, got, offset, length):
    want.seek(offset)
    if got != want.read(length):
        sys.exit(f"{what} at {offset}: other bytes")
with open(mounted, "rb") as f:
    for flags in (mmap.MAP_SHARED, mmap.MAP_PRIVATE):
        m = mmap.mmap(f.fileno(), 0, flags=flags, prot=mmap.PROT_READ)
        for off in (0, size // 2 + 12345, size - 4096):
            check(f"mapping {flags}", m[off:off + 4096], off, 4096)
        m.close()
    fd = f.fileno()
    check("read across the end", os.pread(fd, 1 << 20, size - 100), size - 100, 100)
    if os.pread(fd, 4096, size) != b"" or os.pread(fd, 4096, size + (1 << 30)) != b"":
        sys.exit("a read past the end returned bytes")
with open(small, "rb") as f:
    if os.pread(f.fileno(), 4096, 1) != b"" or os.pread(f.fileno(), 4096, 0) != b"1":
        sys.exit("small file: reads at and past its end")
PY
  then t_ok "shared and private mappings and reads at and past the end see the blob's bytes"; else t_fail "mappings and reads past the end" "$(cat "$T_TMP/err")"; fi
  back=$("$OCIBUILD" store import --store memory:// "$M" 2>"$T_TMP/err" | node_field digest)
  [ -n "$back" ] && [ "$back" = "$(echo "$large" | node_field digest)" ] && t_ok "the whole large tree re-imported from the mount has the store's digest" || t_fail "re-import the large tree" "$back $(cat "$T_TMP/err")"
  kill -TERM $MOUNT_PID; wait $MOUNT_PID
  # The same blob as an executable keeps the mount's page cache (an exec maps it; a direct-I/O
  # file would lose its cached pages at every mmap).
  exe=$(python3 -c 'import base64,json,sys; print(json.dumps({"file": {"name": base64.b64encode(b"big-exe").decode(), "digest": base64.b64encode(bytes.fromhex(sys.argv[1])).decode(), "size": str(1 << 30), "executable": True}}))' "$want")
  if mount_bg large-exe "$exe" "$T_TMP/m-exe"; then
    head -c 64M "$T_TMP/m-exe/big-exe" >/dev/null
    res=$(fincore --bytes --noheadings --output RES "$T_TMP/m-exe/big-exe" 2>&1 | tr -d " ")
    [ "$res" -ge $((32 << 20)) ] 2>/dev/null && t_ok "a large executable stays in the mount's page cache" || t_fail "large executable not cached" "$res"
    kill -TERM $MOUNT_PID; wait $MOUNT_PID
  else
    t_fail "mount a large executable" "$(cat "$T_TMP/large-exe.err")"
  fi
fi
umount "$SRC/large"

# --- a broken store: EIO, promptly, naming the object ---
mkdir -p "$SRC/broken/sub"
echo "gone soon" > "$SRC/broken/missing"
echo "inside" > "$SRC/broken/sub/file"
broken=$("$OCIBUILD" store import "$SRC/broken")
missing_hex=$(b3sum --no-names "$SRC/broken/missing")
M="$T_TMP/m-broken"
if mount_bg broken "$broken" "$M"; then
  chmod u+w "$OCIBUILD_STORE/blobs/${missing_hex:0:2}"; rm -f "$OCIBUILD_STORE/blobs/${missing_hex:0:2}/$missing_hex"
  timeout 20 cat "$M/missing" >/dev/null 2>"$T_TMP/err"; rc=$?
  [ $rc -ne 124 ] && t_contains "a missing blob reads as EIO, not a hang" "$(cat "$T_TMP/err")" "Input/output error"
  t_contains "the mount process names the missing blob" "$(cat "$T_TMP/broken.err")" "$missing_hex"
  kill -TERM $MOUNT_PID; wait $MOUNT_PID
fi
# a corrupt directory: its row holds another directory's bytes (the digest no longer matches)
python3 - "$OCIBUILD_STORE/directories.sqlite" <<'PY'
import sqlite3, sys
db = sqlite3.connect(sys.argv[1])
rows = db.execute("SELECT digest, data FROM directories").fetchall()
empty = [r for r in rows if len(r[1]) == 0]
sub = [r for r in rows if b"file" in r[1] and b"missing" not in r[1]][0]
other = [r for r in rows if r[0] != sub[0] and len(r[1]) > 0][0]
db.execute("UPDATE directories SET data = ? WHERE digest = ?", (other[1], sub[0]))
db.commit()
PY
if mount_bg corrupt "$broken" "$T_TMP/m-corrupt"; then
  timeout 20 ls "$T_TMP/m-corrupt/sub" >/dev/null 2>"$T_TMP/err"; rc=$?
  [ $rc -ne 124 ] && t_contains "a corrupt directory lists as EIO, not a hang" "$(cat "$T_TMP/err")" "Input/output error"
  t_contains "the mount process names the corrupt directory" "$(cat "$T_TMP/corrupt.err")" "directory "
  kill -TERM $MOUNT_PID; wait $MOUNT_PID
fi

# --- bad arguments: clear errors, nothing mounted ---
out=$("$OCIBUILD" store mount "$small" "$T_TMP/no/such/dir" 2>&1) && t_fail "mount on a missing mountpoint" || t_contains "a missing mountpoint is named" "$out" "$T_TMP/no/such/dir"
mkdir -p "$T_TMP/m-bad"
out=$("$OCIBUILD" store mount '{"directory": {"name": "eA==", "digest": "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=", "size": "1"}}' "$T_TMP/m-bad" 2>&1) && t_fail "mount an unknown directory" || t_contains "an unknown root directory is named" "$out" "directory 0000"
out=$("$OCIBUILD" store mount '{"file": ' "$T_TMP/m-bad" 2>&1) && t_fail "mount bad JSON" || t_contains "bad node JSON says where" "$out" "node JSON"
no_mounts && t_ok "no mount left after the mount tests" || t_fail "mounts left" "$(grep -F "$T_TMP" /proc/self/mountinfo)"

# --- builds with inputs over FUSE (rootful runc) ---
json_str() { python3 -c 'import json,sys; print(json.dumps(sys.argv[1]))' "$1"; }
# request NAME SCRIPT INPUTS_JSON [EXTRA_FIELDS]: a friendly request at $T_TMP/NAME.json
request() {
  cat >"$T_TMP/$1.json" <<JSON
{
  "inputs": $3,
  "command_args": ["/nix/store/busybox", "sh", "-c", $(json_str "$2")],
  "working_dir": "build", "scratch_paths": ["build", "nix/store"], "inputs_dir": "nix/store",
  "outputs": ["nix/store/out"] ${4:-}
}
JSON
}
export_output() { # BUILD_JSON DEST
  python3 -c 'import json,sys; print(json.dumps(json.load(sys.stdin)["outputs"][0]))' <<<"$1" >"$T_TMP/out-node.json" &&
    "$OCIBUILD" store export - "$2" <"$T_TMP/out-node.json"
}
no_leftovers() {
  local left
  t_settle "$OCIBUILD_DATA_DIR" # (lib.sh)
  left=$(ls -A "$BUNDLES" 2>/dev/null | grep -v '^\.' || true)
  [ -z "$left" ] || { echo "bundle dirs left: $left"; return 1; }
  grep -F "$BUNDLES" /proc/self/mountinfo && { echo "mounts left"; return 1; }
  return 0
}

request fuse-ok 'mkdir -p /nix/store/out && cat /nix/store/src/dir/file > /nix/store/out/file &&
  grep -c " fuse.ocibuild " /proc/self/mountinfo > /nix/store/out/fuse-mounts &&
  (echo x > /nix/store/src/dir/file) 2>/dev/null; echo $? > /nix/store/out/write' \
  "{\"busybox\": \"/bin/busybox\", \"src\": \"$SRC/small\"}"
if out=$("$OCIBUILD" build --inputs fuse "$T_TMP/fuse-ok.json" 2>"$T_TMP/err") && export_output "$out" "$T_TMP/fuse-ok"; then
  t_ok "a build with --inputs fuse succeeds"
  [ "$(cat "$T_TMP/fuse-ok/file")" = hello ] && t_ok "the build read its input over FUSE" || t_fail "fuse build output"
  [ "$(cat "$T_TMP/fuse-ok/fuse-mounts")" -ge 2 ] && t_ok "both inputs are FUSE mounts inside the container" || t_fail "inputs are FUSE mounts" "$(cat "$T_TMP/fuse-ok/fuse-mounts")"
  [ "$(cat "$T_TMP/fuse-ok/write")" != 0 ] && t_ok "the build cannot write to a FUSE input" || t_fail "FUSE input writable"
else
  t_fail "a build with --inputs fuse succeeds" "$(cat "$T_TMP/err")"
fi
t_check "a FUSE build leaves no bundle and no mount" no_leftovers

# An input directory whose own entry is a symlink called like the input, to a host path: the
# input is the directory, never what its entry points at (a mount of one directory shows its
# contents at the root, so BUNDLE/inputs-fuse/src was the symlink, which the runtime followed on
# the host and bound the host's /etc into the build).
mkdir -p "$SRC/trap"; ln -s /etc "$SRC/trap/src"; echo inside > "$SRC/trap/file"
cat >"$T_TMP/trap.json" <<JSON
{
  "inputs": {"src": "$SRC/trap"},
  "command_args": ["/bin/sh", "-c", "mkdir -p /nix/store/out; if [ -e /nix/store/src/hostname ] || [ -e /nix/store/src/passwd ]; then echo host-etc; else cat /nix/store/src/file; fi > /nix/store/out/seen"],
  "working_dir": "build", "scratch_paths": ["build", "nix/store"], "inputs_dir": "nix/store",
  "outputs": ["nix/store/out"], "constraints": {"system": "x86_64-linux", "provide_bin_sh": true}
}
JSON
if out=$("$OCIBUILD" build --inputs fuse "$T_TMP/trap.json" 2>"$T_TMP/err") && export_output "$out" "$T_TMP/trap-out"; then
  [ "$(cat "$T_TMP/trap-out/seen")" = inside ] && t_ok "an input's own symlink entry never replaces the input (no host path in the build)" ||
    t_fail "an input's own symlink entry never replaces the input (no host path in the build)" "$(cat "$T_TMP/trap-out/seen")"
else
  t_fail "a one-directory FUSE build succeeds" "$(cat "$T_TMP/err")"
fi
t_check "the trap build leaves no bundle and no mount" no_leftovers

# A missing input blob: the build fails (its read gets EIO) naming the blob; nothing left.
mkdir -p "$SRC/lost"; echo "this blob will be lost $$" > "$SRC/lost/gone"
lost=$("$OCIBUILD" store import "$SRC/lost"); busybox=$("$OCIBUILD" store import /bin/busybox)
lost_hex=$(b3sum --no-names "$SRC/lost/gone")
rm -f "$OCIBUILD_STORE/blobs/${lost_hex:0:2}/$lost_hex"
python3 - "$busybox" "$(sed 's/"bG9zdA=="/"c3Jj"/' <<<"$lost")" >"$T_TMP/lost.json" <<'PY'
import json, sys
print(json.dumps({"inputs": [json.loads(sys.argv[1]), json.loads(sys.argv[2])],
                  "commandArgs": ["/nix/store/busybox", "sh", "-c", "mkdir -p /nix/store/out && cat /nix/store/src/gone > /nix/store/out/x"],
                  "workingDir": "build", "scratchPaths": ["build", "nix/store"], "inputsDir": "nix/store",
                  "outputs": ["nix/store/out"]}))
PY
out=$(timeout 60 "$OCIBUILD" build --inputs fuse "$T_TMP/lost.json" 2>&1); rc=$?
[ $rc -ne 0 ] && [ $rc -ne 124 ] && t_contains "a missing input blob fails the build naming it" "$out" "reading an input over FUSE failed (blob $lost_hex" ||
  t_fail "a missing input blob fails the build naming it" "exit $rc: $out"
t_check "the failed FUSE build leaves no bundle and no mount" no_leftovers

# kill -9 of ocibuild mid-build: fusermount3 (auto_unmount) takes the mount away at once, and
# the next run sweeps the bundle and the container.
request sleeper 'sleep 30; mkdir -p /nix/store/out' "{\"busybox\": \"/bin/busybox\", \"src\": \"$SRC/small\"}"
wait_bundle_mount() { for _ in $(seq 300); do grep -qF "$BUNDLES/" /proc/self/mountinfo && grep -F "$BUNDLES/" /proc/self/mountinfo | grep -q fuse.ocibuild && return 0; sleep 0.05; done; return 1; }
"$OCIBUILD" build --inputs fuse "$T_TMP/sleeper.json" >/dev/null 2>&1 &
obi=$!
if wait_bundle_mount; then
  kill -KILL $obi; wait $obi 2>/dev/null
  for _ in $(seq 200); do grep -F "$BUNDLES/" /proc/self/mountinfo | grep -q fuse.ocibuild || break; sleep 0.05; done
  grep -F "$BUNDLES/" /proc/self/mountinfo | grep -q fuse.ocibuild && t_fail "kill -9 of a FUSE build leaves its mount" || t_ok "kill -9 of ocibuild mid-build leaves no FUSE mount"
else
  t_fail "a FUSE build mounts its inputs below its bundle"; kill -KILL $obi
fi
request quick 'mkdir -p /nix/store/out && cat /nix/store/src/dir/file > /nix/store/out/f' "{\"busybox\": \"/bin/busybox\", \"src\": \"$SRC/small\"}"
"$OCIBUILD" build --inputs fuse "$T_TMP/quick.json" >/dev/null 2>"$T_TMP/err" || t_fail "a build after a killed one" "$(cat "$T_TMP/err")"
t_check "the next run sweeps what the killed build left" no_leftovers

# Server and watcher both killed: the mount stays behind, dead (ENOTCONN); the next run's sweep
# detaches it.
"$OCIBUILD" build --inputs fuse "$T_TMP/sleeper.json" >/dev/null 2>&1 &
obi=$!
if wait_bundle_mount; then
  watcher=$(pgrep -P $obi -x fusermount3)
  [ -n "$watcher" ] && kill -KILL $watcher; kill -KILL $obi; wait $obi 2>/dev/null; sleep 0.2
  if grep -F "$BUNDLES/" /proc/self/mountinfo | grep -q fuse.ocibuild; then
    "$OCIBUILD" build --inputs fuse "$T_TMP/quick.json" >/dev/null 2>"$T_TMP/err" || t_fail "a build after a leaked mount" "$(cat "$T_TMP/err")"
    t_check "the sweep detaches a dead FUSE mount a killed run left" no_leftovers
  else
    t_fail "killing server and watcher leaves a dead mount to sweep" "watcher: $watcher"
  fi
else
  t_fail "a FUSE build mounts its inputs below its bundle (2)"; kill -KILL $obi
fi

# --- a remote store: auto chooses FUSE, and a build reading one small file of a large input
# fetches no more than it reads (nothing lands in the input cache) ---
DD="$T_TMP/daemon"; mkdir -p "$DD"
OCIBUILD_DATA_DIR="$DD/data" "$OCIBUILD" daemon --listen "unix:$DD/sock" 2>"$DD/log" &
daemon_pid=$!
t_cleanup "kill $daemon_pid; wait $daemon_pid"
for _ in $(seq 100); do [ -S "$DD/sock" ] && break; sleep 0.1; done
mkdir -p "$SRC/remote"; head -c 64M /dev/urandom > "$SRC/remote/large"; echo small-one > "$SRC/remote/small"
request remote 'mkdir -p /nix/store/out && cat /nix/store/src/small > /nix/store/out/small' "{\"busybox\": \"/bin/busybox\", \"src\": \"$SRC/remote\"}"
if out=$("$OCIBUILD" build --store "grpc+unix://$DD/sock" --inputs auto "$T_TMP/remote.json" 2>"$T_TMP/err"); then
  t_ok "a build over a grpc+unix:// store with --inputs auto succeeds"
  [ -z "$(find "$OCIBUILD_DATA_DIR/input-cache" -type f -size +1M 2>/dev/null)" ] &&
    t_ok "auto on a remote store leaves the unread large input unfetched (not in the input cache)" ||
    t_fail "the large input was materialized" "$(find "$OCIBUILD_DATA_DIR/input-cache" -type f -size +1M)"
else
  t_fail "a build over a grpc+unix:// store with --inputs auto succeeds" "$(cat "$T_TMP/err")"
fi
# The control: materialize fetches it all (into its own data dir's cache).
if OCIBUILD_DATA_DIR="$T_TMP/data-mat" "$OCIBUILD" build --store "grpc+unix://$DD/sock" --inputs materialize "$T_TMP/remote.json" >/dev/null 2>"$T_TMP/err"; then
  [ -n "$(find "$T_TMP/data-mat/input-cache" -type f -size +1M 2>/dev/null)" ] &&
    t_ok "materialize on a remote store fetches the whole input into the cache" || t_fail "materialize fetched nothing"
else
  t_fail "a build over a grpc+unix:// store with --inputs materialize succeeds" "$(cat "$T_TMP/err")"
fi
t_check "the remote-store FUSE build leaves no bundle and no mount" no_leftovers

# The daemon serves builds with FUSE inputs from a castore it reaches over gRPC (the first
# daemon's): client -> daemon B (build service, inputs=fuse) -> daemon A (store).
DB="$T_TMP/daemon-b"; mkdir -p "$DB/data/bundles"; chmod 711 "$DB" "$DB/data"
OCIBUILD_DATA_DIR="$DB/data" "$OCIBUILD" daemon --listen "unix:$DB/sock" --store "grpc+unix://$DD/sock" \
  --build-service "oci://$DB/data/bundles?inputs=fuse" 2>"$DB/log" &
daemon_b=$!
t_cleanup "kill $daemon_b; wait $daemon_b"
for _ in $(seq 100); do [ -S "$DB/sock" ] && break; sleep 0.1; done
request via-daemon 'mkdir -p /nix/store/out && cat /nix/store/src/small > /nix/store/out/small && grep -c " fuse.ocibuild " /proc/self/mountinfo > /nix/store/out/fuse-mounts' \
  "{\"busybox\": \"/bin/busybox\", \"src\": \"$SRC/remote\"}"
if out=$("$OCIBUILD" build --store "grpc+unix://$DD/sock" --build-service "grpc+unix://$DB/sock" "$T_TMP/via-daemon.json" 2>"$T_TMP/err") &&
   export_output "$out" "$T_TMP/via-daemon-out" 2>>"$T_TMP/err"; then
  [ "$(cat "$T_TMP/via-daemon-out/small")" = small-one ] && [ "$(cat "$T_TMP/via-daemon-out/fuse-mounts")" -ge 2 ] &&
    t_ok "a daemon runs builds with FUSE inputs from a castore it reaches over gRPC" || t_fail "daemon FUSE build output" "$(ls -la "$T_TMP/via-daemon-out")"
else
  t_fail "a daemon runs builds with FUSE inputs from a castore it reaches over gRPC" "$(cat "$T_TMP/err"; tail -5 "$DB/log")"
fi
left=$(ls -A "$DB/data/bundles" 2>/dev/null | grep -v '^\.' || true)
[ -z "$left" ] && ! grep -qF " $DB/" /proc/self/mountinfo && t_ok "the daemon's FUSE build leaves no bundle and no mount" || t_fail "daemon leftovers" "$left"

# --- rootless: an unprivileged user's build mounts through fusermount3 (allow_other needs
# user_allow_other in /etc/fuse.conf, which scripts/install-deps.sh sets as this does), and the
# sweep takes away a dead mount the user may not umount2 (fusermount3 -u -z) ---
USER_NAME=obi-rootless
id "$USER_NAME" >/dev/null 2>&1 || useradd --system --create-home --home-dir /var/lib/$USER_NAME --shell /bin/sh "$USER_NAME"
grep -q "^$USER_NAME:" /etc/subuid || echo "$USER_NAME:200000:65536" >> /etc/subuid
grep -q "^$USER_NAME:" /etc/subgid || echo "$USER_NAME:200000:65536" >> /etc/subgid
grep -qx user_allow_other /etc/fuse.conf 2>/dev/null || echo user_allow_other >> /etc/fuse.conf
W=$(mktemp -d /tmp/obi-fuse-rootless.XXXXXX)
chmod 755 "$W"
t_cleanup "rm -rf '$W'"
t_cleanup 'for m in $(grep -F " '"$W"'/" /proc/self/mountinfo | cut -d" " -f5 | sort -r); do umount -l "$m"; done'
cp "$OCIBUILD" "$W/ocibuild"; cp -r "$SRC/small" "$W/small"
as_user() { runuser -u "$USER_NAME" -- env -i PATH=/usr/local/bin:/usr/bin:/bin:/usr/sbin:/sbin HOME="$W/home" XDG_RUNTIME_DIR= OCIBUILD_DATA_DIR="$W/data" "$@"; }
sed "s|$SRC/small|$W/small|" "$T_TMP/fuse-ok.json" >"$W/req.json"
sed "s|$SRC/small|$W/small|" "$T_TMP/sleeper.json" >"$W/sleeper.json"
chown -R "$USER_NAME" "$W"
if out=$(as_user "$W/ocibuild" build --rootless --inputs fuse "$W/req.json" 2>"$W/err"); then
  echo "$out" | python3 -c 'import json,sys; print(json.dumps(json.load(sys.stdin)["outputs"][0]))' >"$W/node.json"
  chown "$USER_NAME" "$W/node.json"
  as_user "$W/ocibuild" store export - "$W/export" <"$W/node.json" 2>>"$W/err"
  [ "$(cat "$W/export/file" 2>/dev/null)" = hello ] && [ "$(cat "$W/export/fuse-mounts")" -ge 2 ] &&
    t_ok "a rootless build reads its inputs over FUSE" || t_fail "a rootless build reads its inputs over FUSE" "$(cat "$W/err")"
else
  t_fail "a rootless build with --inputs fuse succeeds" "$(cat "$W/err")"
fi
t_settle "$W/data"
grep -qF " $W/" /proc/self/mountinfo && t_fail "a rootless FUSE build leaves a mount" || t_ok "a rootless FUSE build leaves no mount"
as_user "$W/ocibuild" build --rootless --inputs fuse "$W/sleeper.json" >/dev/null 2>&1 &
obi=$!
for _ in $(seq 300); do grep -F " $W/" /proc/self/mountinfo | grep -q fuse.ocibuild && break; sleep 0.05; done
obi_pid=$(pgrep -u "$USER_NAME" -f "$W/ocibuild build --rootless --inputs fuse $W/sleeper.json" | head -1)
watcher=$([ -n "$obi_pid" ] && pgrep -P "$obi_pid" -x fusermount3)
if [ -n "$watcher" ]; then
  kill -KILL "$watcher"; kill -KILL "$obi_pid"; wait $obi 2>/dev/null; sleep 0.2
  grep -F " $W/" /proc/self/mountinfo | grep -q fuse.ocibuild || t_fail "killing a rootless server and watcher leaves a dead mount to sweep"
  as_user "$W/ocibuild" build --rootless --inputs fuse "$W/req.json" >/dev/null 2>"$W/err" || t_fail "a rootless build after a leaked mount" "$(cat "$W/err")"
  t_settle "$W/data"
  grep -F " $W/" /proc/self/mountinfo | grep -q fuse.ocibuild && t_fail "the rootless sweep leaves a dead FUSE mount" "$(grep -F " $W/" /proc/self/mountinfo; cat "$W/err")" ||
    t_ok "the rootless sweep takes away a dead FUSE mount (fusermount3 -u -z)"
  left=$(ls -A "$W/data/bundles" 2>/dev/null | grep -v '^\.' || true)
  [ -z "$left" ] && t_ok "the rootless sweep removes the killed build's bundle" || t_fail "rootless bundles left" "$left"
else
  t_fail "a rootless FUSE build mounts through a fusermount3 watcher" "ocibuild $obi_pid, watcher $watcher"; kill -KILL $obi 2>/dev/null
fi

t_done
