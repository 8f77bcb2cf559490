#!/bin/bash
# End-to-end: `ocibuild store import/export/cat/ls` on real trees (every node kind, unicode
# names, empty files and directories, a >64 MiB sparse file, executables, dangling/absolute
# symlinks, symlinks and files at the root). Root digests are checked against an independent
# computation (castore_digest.py: b3sum + hand-written protobuf), export round trips with
# diff -r and modes, special files are refused with their path and no root.
source "$(dirname "$0")/lib.sh"

PY=/usr/bin/python3
STORE="$T_TMP/store"
obi() { "$OCIBUILD" store "$1" --store "$STORE" "${@:2}"; }

if ! command -v b3sum >/dev/null; then
  t_skip "store e2e" "b3sum is not installed (Debian package b3sum; scripts/install-deps.sh)"
  t_done; exit
fi

# same_node NAME OURS EXPECTED: the two JSON nodes are equal (key order aside).
same_node() {
  if "$PY" -c 'import json,sys; sys.exit(json.loads(sys.argv[1]) != json.loads(sys.argv[2]))' \
      "$2" "$3" 2>/dev/null; then t_ok "$1"; else t_fail "$1" "ocibuild: $2
expected: $3"; fi
}

# modes DIR: "mode type relative-path" lines, sorted (symlinks report no mode).
modes() { (cd "$1" && find . -printf '%y %m %p\n' | sed 's/^l [0-9]* /l - /' | LC_ALL=C sort); }

# ---- a tree with every node kind ----
src="$T_TMP/src/tree"
mkdir -p "$src/sub/deeper" "$src/empty-dir" "$src/ünïcödé ☃" "$src/sub/x"
printf 'hello\n' > "$src/hello.txt"
: > "$src/empty-file"
printf '#!/bin/sh\necho hi\n' > "$src/run.sh"; chmod 755 "$src/run.sh"
printf 'group exec only\n' > "$src/not-exec"; chmod 654 "$src/not-exec"
printf 'owner exec only\n' > "$src/owner-exec"; chmod 744 "$src/owner-exec"
printf 'snow\n' > "$src/ünïcödé ☃/日本語.txt"
printf 'deep\n' > "$src/sub/deeper/file"
ln -s hello.txt "$src/link-relative"
ln -s /etc/passwd "$src/link-absolute"
ln -s does/not/exist "$src/link-dangling"
ln -s ../hello.txt "$src/sub/x/up"
# names whose byte order differs from locale order
printf 'A\n' > "$src/B"; printf 'a\n' > "$src/a"; printf 'z\n' > "$src/Z"
head -c 3000000 /dev/urandom > "$src/sub/random.bin"

json=$(obi import "$src" 2>&1); rc=$?
if [ $rc -eq 0 ]; then t_ok "import a tree with every node kind"; else t_fail "import a tree with every node kind" "$json"; fi
[ "$(printf '%s\n' "$json" | wc -l)" = 1 ] && t_ok "import prints one line" || t_fail "import prints one line" "$json"
same_node "tree root digest matches the independent computation" "$json" "$("$PY" "$E2E_DIR/castore_digest.py" "$src")"

# ---- export round trip ----
out="$T_TMP/out/tree"; mkdir -p "$T_TMP/out"
if err=$(obi export "$json" "$out" 2>&1); then t_ok "export the tree"; else t_fail "export the tree" "$err"; fi
t_check "exported tree equals the source (diff -r, symlinks not followed)" diff -r --no-dereference "$src" "$out"
expected_modes=$(modes "$src" | awk '{ m = $2; if ($1 == "d") m = 555; else if ($1 == "f") m = (index("1357", substr($2, 1, 1)) ? 555 : 444); print $1, m, substr($0, index($0, $3)) }' | sed 's/^l [0-9]* /l - /' | LC_ALL=C sort)
got_modes=$(modes "$out")
if [ "$got_modes" = "$expected_modes" ]; then t_ok "exported modes: files 0444, executables 0555, dirs 0555"
else t_fail "exported modes: files 0444, executables 0555, dirs 0555" "$(diff <(echo "$expected_modes") <(echo "$got_modes"))"; fi
[ "$(readlink "$out/link-dangling")" = does/not/exist ] && t_ok "dangling symlink exported as a symlink" || t_fail "dangling symlink exported as a symlink"
rejson=$(obi import --name tree "$out" 2>&1)
same_node "re-importing the export gives the same root" "$rejson" "$json"

out2="$T_TMP/out/from-stdin"
if err=$(printf '%s' "$json" | obi export - "$out2" 2>&1) && diff -r --no-dereference "$src" "$out2" >/dev/null; then
  t_ok "export reads the node from stdin with -"; else t_fail "export reads the node from stdin with -" "$err"; fi
err=$(obi export "$json" "$out" 2>&1) && t_fail "export refuses an existing destination" \
  || t_contains "export refuses an existing destination" "$err" "already exists"

# ---- name override and ls ----
named=$(obi import --name renamed "$src" 2>&1)
same_node "--name overrides the root name" "$named" "$("$PY" "$E2E_DIR/castore_digest.py" "$src" renamed)"
listing=$(obi ls "$json" 2>&1)
t_contains "ls lists nested files with their path" "$listing" "tree/ünïcödé ☃/日本語.txt"
t_contains "ls shows symlink targets" "$listing" "tree/link-dangling -> does/not/exist"
t_contains "ls marks executables" "$listing" "exec"
[ "$(printf '%s\n' "$listing" | wc -l)" = "$(find "$src" | wc -l)" ] && t_ok "ls lists every entry once" \
  || t_fail "ls lists every entry once" "$listing"

# ---- roots that are not directories ----
for case in "hello.txt:file at the root" "run.sh:executable at the root" "empty-file:empty file at the root" \
            "link-absolute:absolute symlink at the root (not followed)" "link-dangling:dangling symlink at the root" \
            "empty-dir:empty directory at the root"; do
  name=${case%%:*}; what=${case#*:}
  got=$(obi import "$src/$name" 2>&1)
  same_node "$what" "$got" "$("$PY" "$E2E_DIR/castore_digest.py" "$src/$name")"
  dest="$T_TMP/out/root-$name"
  if e=$(obi export "$got" "$dest" 2>&1) && diff -r --no-dereference "$src/$name" "$dest" >/dev/null 2>&1 \
     || { [ -L "$dest" ] && [ "$(readlink "$dest")" = "$(readlink "$src/$name")" ]; }; then
    t_ok "$what: export round trip"; else t_fail "$what: export round trip" "$e"; fi
done
ln -s "$src" "$T_TMP/src/link-to-tree"
got=$(obi import "$T_TMP/src/link-to-tree/" 2>&1)
t_contains "a root symlink with a trailing slash is still not followed" "$got" '"symlink"'

# ---- real system trees (files and many symlinks, absolute and relative) ----
for sys_tree in /usr/share/zoneinfo; do
  if [ ! -d "$sys_tree" ]; then t_skip "system tree $sys_tree" "$sys_tree does not exist on this machine"; continue; fi
  got=$(obi import "$sys_tree" 2>&1)
  same_node "system tree $sys_tree: root digest matches" "$got" "$("$PY" "$E2E_DIR/castore_digest.py" "$sys_tree")"
  dest="$T_TMP/out/sys-$(basename "$sys_tree")"
  if e=$(obi export "$got" "$dest" 2>&1) && diff -r --no-dereference "$sys_tree" "$dest" >/dev/null 2>&1; then
    t_ok "system tree $sys_tree: export round trip"; else t_fail "system tree $sys_tree: export round trip" "$e"; fi
  chmod -R u+w "$dest" 2>/dev/null; rm -rf "$dest"
done

# ---- a large sparse file ----
big="$T_TMP/src/big"; mkdir -p "$big"
truncate -s 70M "$big/sparse"
printf 'middle' | dd of="$big/sparse" bs=1 seek=$((33 * 1024 * 1024 + 7)) conv=notrunc status=none
printf 'end' >> "$big/sparse"
bjson=$(obi import "$big" 2>&1)
same_node "70 MiB sparse file: root digest matches" "$bjson" "$("$PY" "$E2E_DIR/castore_digest.py" "$big")"
if e=$(obi export "$bjson" "$T_TMP/out/big" 2>&1) && cmp -s "$big/sparse" "$T_TMP/out/big/sparse"; then
  t_ok "70 MiB sparse file: export round trip"; else t_fail "70 MiB sparse file: export round trip" "$e"; fi
rm -rf "$T_TMP/out/big"

# ---- store cat ----
hex=$(b3sum --no-names "$src/sub/random.bin")
if obi cat "$hex" > "$T_TMP/cat.out" 2>"$T_TMP/cat.err" && cmp -s "$T_TMP/cat.out" "$src/sub/random.bin"; then
  t_ok "cat by hex digest writes the blob"; else t_fail "cat by hex digest writes the blob" "$(cat "$T_TMP/cat.err")"; fi
b3=b3:$("$PY" -c 'import base64,sys; print(base64.b64encode(bytes.fromhex(sys.argv[1])).decode())' "$hex")
[ "$(obi cat "$b3" | b3sum --no-names)" = "$hex" ] && t_ok "cat by b3:base64 digest (checked with b3sum)" \
  || t_fail "cat by b3:base64 digest (checked with b3sum)"
[ "$(obi cat af1349b9f5f9a1a6a0404dea36dcc9499bcb25c9adc112b7cc9a93cae41f3262 | wc -c)" = 0 ] \
  && t_ok "cat the empty blob" || t_fail "cat the empty blob"
err=$(obi cat 0000000000000000000000000000000000000000000000000000000000000000 2>&1) \
  && t_fail "cat of an absent blob fails" || t_contains "cat of an absent blob fails" "$err" "0000000000"
err=$(obi cat nothex 2>&1) && t_fail "cat rejects a malformed digest" \
  || t_contains "cat rejects a malformed digest" "$err" "nothex"

# ---- refusals ----
bad="$T_TMP/src/bad"; mkdir -p "$bad/inner"
printf 'x\n' > "$bad/a"
mkfifo "$bad/inner/pipe"
out=$(timeout 20 "$OCIBUILD" store import --store "$STORE" "$bad" 2>"$T_TMP/fifo.err"); rc=$?
[ $rc -ne 0 ] && [ $rc -ne 124 ] && [ -z "$out" ] && t_ok "a fifo is refused and no root is printed" \
  || t_fail "a fifo is refused and no root is printed" "rc=$rc out=$out"
t_contains "the refusal names the fifo's path" "$(cat "$T_TMP/fifo.err")" "$bad/inner/pipe: unsupported file type (fifo)"
err=$(obi ls '{"directory":{"name":"eA==","digest":"'"$(printf '%s' "${b3#b3:}")"'","size":"1"}}' 2>&1) \
  && t_fail "ls of a directory absent from the store fails" || t_ok "ls of a directory absent from the store fails"
err=$(obi export '{"file":{"name":"eA==","digest":"'"${b3#b3:}"'","size":"5"}}' "$T_TMP/out/wrongsize" 2>&1) \
  && t_fail "export checks the file size against the node" \
  || t_contains "export checks the file size against the node" "$err" "wrongsize"
[ ! -e "$T_TMP/out/wrongsize" ] && t_ok "a failed export leaves nothing behind" || t_fail "a failed export leaves nothing behind"
err=$(obi export '{"file":{"name":"eA=="}}' "$T_TMP/out/x" 2>&1) && t_fail "export rejects an invalid node" \
  || t_contains "export rejects an invalid node" "$err" "node JSON"
err=$("$OCIBUILD" store frobnicate 2>&1) && t_fail "unknown store subcommand fails" \
  || t_contains "unknown store subcommand fails" "$err" "frobnicate"
err=$(obi import "$T_TMP/does-not-exist" 2>&1) && t_fail "import of a missing path fails" \
  || t_contains "import of a missing path fails" "$err" "does-not-exist"

# ---- store verify ----
out=$(obi verify 2>"$T_TMP/verify.err"); rc=$?
[ $rc -eq 0 ] && [ -z "$out" ] && t_ok "store verify: the store of this test is clean" \
  || t_fail "store verify: the store of this test is clean" "rc=$rc $out $(cat "$T_TMP/verify.err")"
t_contains "store verify counts what it checked" "$(cat "$T_TMP/verify.err")" "directories: 0 faulty"
vstore="$T_TMP/verify-store"
"$OCIBUILD" store import --store "$vstore" "$src" >/dev/null
hello=$(b3sum --no-names "$src/hello.txt")
chmod u+w "$vstore/blobs/${hello:0:2}/$hello"
printf 'HELLO\n' > "$vstore/blobs/${hello:0:2}/$hello"
out=$("$OCIBUILD" store verify --store "$vstore" 2>/dev/null); rc=$?
[ $rc -eq 1 ] && t_ok "store verify exits 1 on a damaged blob" || t_fail "store verify exits 1 on a damaged blob" "rc=$rc"
t_contains "store verify names the damaged blob" "$out" "blob $hello:"
t_contains "store verify names the directory whose file it was" "$out" 'file "hello.txt"'
err=$("$OCIBUILD" store verify --store grpc+unix:///nonexistent.sock 2>&1) \
  && t_fail "store verify refuses a remote store" || t_contains "store verify refuses a remote store" "$err" "cannot list"

# ---- an import killed with blobs pending beside their names (issue 18) ----
# Pending blobs wait as .<token>.<n> files in their fan-out directories until the barrier at the
# end; the import is killed while they are there. They are never blobs: store verify is clean,
# and the next import (its service's start) removes them; the tree imported again is whole.
kstore="$T_TMP/kill-store" ksrc="$T_TMP/kill-src"
$PY -c '
import os, sys
for i in range(3000):
    d = os.path.join(sys.argv[1], "d%02d" % (i % 30))
    os.makedirs(d, exist_ok=True)
    open(os.path.join(d, "f%05d" % i), "w").write("file %d\n" % i)' "$ksrc"
"$OCIBUILD" store import --store "$kstore" "$ksrc" >/dev/null 2>&1 &
kpid=$!
seen=
for _ in $(seq 400); do # up to 20 s
  if [ -n "$(find "$kstore/blobs" -mindepth 2 -name '.*' -print -quit 2>/dev/null)" ]; then seen=1; break; fi
  kill -0 "$kpid" 2>/dev/null || break
  sleep 0.05
done
kill -9 "$kpid" 2>/dev/null; wait "$kpid" 2>/dev/null
if [ -z "$seen" ]; then
  t_fail "a killed import left pending blobs beside their names" "none seen before the import ended"
else
  t_ok "a killed import left pending blobs beside their names"
  out=$("$OCIBUILD" store verify --store "$kstore" 2>&1); rc=$?
  [ $rc -eq 0 ] && t_ok "store verify is clean after the killed import" \
    || t_fail "store verify is clean after the killed import" "rc=$rc $out"
  if json=$("$OCIBUILD" store import --store "$kstore" "$ksrc" 2>&1) \
      && [ -z "$(find "$kstore/blobs" -mindepth 2 -name '.*' -print -quit)" ] \
      && [ "$(find "$kstore/blobs" -type f | wc -l)" = 3000 ] && [ -z "$(ls "$kstore/owners")" ]; then
    t_ok "the next import removes the dead import's files and stores the whole tree"
  else
    t_fail "the next import removes the dead import's files and stores the whole tree" \
      "$json; left: $(find "$kstore/blobs" -mindepth 2 -name '.*' | head -3); owners: $(ls "$kstore/owners")"
  fi
fi

t_done
