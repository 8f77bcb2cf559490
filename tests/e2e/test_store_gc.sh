#!/bin/bash
# The store's lifecycle end to end (docs/store.md, "Garbage collection"): `store gc` keeps every
# rooted tree (store import --root, build --root, indirect roots) and collects the rest, the
# store verifies clean afterwards and a rooted tree still exports; `store roots`, `store du`;
# a build running during gc keeps its inputs (and its input cache entry) and succeeds; gc run
# over and over while imports of overlapping trees run loses nothing any import rooted; the
# image of a running service replica is kept, and collected after `service down`.
source "$(dirname "$0")/lib.sh"

DATA="$T_TMP/data"
export OCIBUILD_DATA_DIR="$DATA"
unset OCIBUILD_STORE
STORE="$DATA/store"

# tree DIR SEED: a small tree whose contents depend on SEED
tree() {
  mkdir -p "$1/sub"
  echo "top $2" >"$1/top"
  echo "leaf $2" >"$1/sub/leaf"
  echo "shared by every tree" >"$1/sub/shared"
}
digest_of() { python3 -c 'import json,sys,base64; n=json.load(sys.stdin); k=next(iter(n)); print(base64.b64decode(n[k]["digest"]).hex())'; }

tree "$T_TMP/kept" kept
tree "$T_TMP/loose" loose
kept_json=$("$OCIBUILD" store import --root keep/kept "$T_TMP/kept")
loose_json=$("$OCIBUILD" store import "$T_TMP/loose")
kept=$(digest_of <<<"$kept_json")
loose=$(digest_of <<<"$loose_json")

roots=$("$OCIBUILD" store roots)
t_contains "store roots lists the root of an import" "$roots" "keep/kept directory $kept"

dry=$("$OCIBUILD" store gc --dry-run 2>&1)
t_contains "gc --dry-run names the unrooted tree" "$dry" "would remove directory $loose"
t_check "gc --dry-run removes nothing" "$OCIBUILD" store ls "$loose_json"

out=$("$OCIBUILD" store gc 2>&1)
t_contains "gc removes the unrooted tree" "$out" "removed directory $loose"
if "$OCIBUILD" store ls "$loose_json" >/dev/null 2>&1; then
  t_fail "the unrooted tree is gone" "store ls still lists it"
else
  t_ok "the unrooted tree is gone"
fi
[[ "$out" != *"$kept"* ]] && t_ok "gc leaves the rooted tree alone" || t_fail "gc leaves the rooted tree alone" "$out"
t_check "the store verifies clean after gc" "$OCIBUILD" store verify
t_check "the rooted tree still exports" "$OCIBUILD" store export "$kept_json" "$T_TMP/kept-out"
t_check "exported as imported" diff -r "$T_TMP/kept" "$T_TMP/kept-out"

# indirect roots: kept while their file exists
indirect_json=$("$OCIBUILD" store import --root "$T_TMP/result.root" "$T_TMP/loose")
"$OCIBUILD" store gc >/dev/null 2>&1
t_check "an indirect root keeps its tree" "$OCIBUILD" store ls "$indirect_json"
rm "$T_TMP/result.root"
"$OCIBUILD" store gc >/dev/null 2>&1
if "$OCIBUILD" store ls "$indirect_json" >/dev/null 2>&1; then
  t_fail "removing an indirect root's file retires it" "still there"
else
  t_ok "removing an indirect root's file retires it"
fi

t_check "store roots --remove removes a root" "$OCIBUILD" store roots --remove keep/kept
[ -z "$("$OCIBUILD" store roots)" ] && t_ok "no roots left" || t_fail "no roots left" "$("$OCIBUILD" store roots)"
out=$("$OCIBUILD" store roots --remove keep/kept 2>&1)
t_contains "removing a missing root names it" "$out" "keep/kept"
out=$("$OCIBUILD" store import --root 'bad name' "$T_TMP/kept" 2>&1)
t_contains "a bad root name is refused naming the byte" "$out" "byte 3"

# verify --repair: a damaged blob is removed, so that importing the tree again stores it anew
# (without the removal the import finds it "present" and the store stays damaged)
"$OCIBUILD" store import --root keep/kept "$T_TMP/kept" >/dev/null
blob=$(b3sum --no-names "$T_TMP/kept/top" 2>/dev/null || "$OCIBUILD" hash "$T_TMP/kept/top" | cut -d' ' -f1)
blob_file="$STORE/blobs/${blob:0:2}/$blob"
chmod u+w "$blob_file" && echo "flipped" >"$blob_file"
"$OCIBUILD" store import "$T_TMP/kept" >/dev/null
if "$OCIBUILD" store verify >/dev/null 2>&1; then
  t_fail "verify finds the damaged blob"
else
  t_ok "verify finds the damaged blob"
fi
out=$("$OCIBUILD" store verify --repair 2>&1)
t_contains "verify --repair removes it" "$out" "removed 1 damaged objects"
"$OCIBUILD" store import "$T_TMP/kept" >/dev/null
t_check "after --repair and a new import the store verifies clean" "$OCIBUILD" store verify
out=$("$OCIBUILD" store ls --repair "$kept_json" 2>&1)
t_contains "--repair is only for verify" "$out" "only valid for 'store verify'"

du=$("$OCIBUILD" store du)
t_contains "store du reports blobs" "$du" "blobs"
t_contains "store du reports the input cache" "$du" "input cache"

out=$("$OCIBUILD" store gc --max-freed nonsense 2>&1)
t_contains "a bad --max-freed is refused" "$out" "--max-freed"

# gc racing imports: each round imports a tree of 400 files (so that an import takes a while)
# that an unrooted import stored just before, while gc runs in a loop: the rooted import finds
# every blob present, and gc must not take them before the root is written.
rounds=8
mkdir -p "$T_TMP/many"
for n in $(seq 1 400); do echo "file $n" >"$T_TMP/many/f$n"; done
# gc over and over until the imports are done (at most 600 runs)
( for _ in $(seq 1 600); do
    [ -e "$T_TMP/imports-done" ] && exit 0
    "$OCIBUILD" store gc >/dev/null 2>&1 || exit 1
  done ) &
gc_loop=$!
t_cleanup "kill $gc_loop"
for i in $(seq 1 $rounds); do
  tree "$T_TMP/race$i" "round $i"
  cp -r "$T_TMP/many" "$T_TMP/race$i/many"
  "$OCIBUILD" store import "$T_TMP/race$i" >/dev/null   # unrooted copy: fair game for gc
  "$OCIBUILD" store import --root "race/$i" "$T_TMP/race$i" >"$T_TMP/race$i.json" || t_fail "import $i under gc"
done
touch "$T_TMP/imports-done"
wait "$gc_loop"; gc_rc=$?
[ "$gc_rc" -eq 0 ] && t_ok "gc ran over and over during the imports" || t_fail "gc ran over and over during the imports" "exit $gc_rc"
"$OCIBUILD" store gc >/dev/null 2>&1
lost=""
for i in $(seq 1 $rounds); do
  rm -rf "$T_TMP/race-out"
  "$OCIBUILD" store export "$(cat "$T_TMP/race$i.json")" "$T_TMP/race-out" 2>/dev/null &&
    diff -r "$T_TMP/race$i" "$T_TMP/race-out" >/dev/null || lost="$lost $i"
done
[ -z "$lost" ] && t_ok "gc concurrent with imports loses nothing rooted" || t_fail "gc concurrent with imports loses nothing rooted" "lost:$lost"
t_check "the store verifies clean after the race" "$OCIBUILD" store verify

# Automatic gc (docs/store.md "Automatic collection"): a store on an 8 MiB tmpfs (in a mount
# namespace of its own) holds a rooted 1 MiB blob and 4 unrooted ones; an import with
# OCIBUILD_MIN_FREE=5Mi and 3 MiB free collects until OCIBUILD_MAX_FREE=6Mi is free, keeps the
# rooted blob, and a later import with enough free space collects nothing.
if [ "$(id -u)" -eq 0 ] && command -v unshare >/dev/null; then
  mkdir -p "$T_TMP/small"
  for i in 0 1 2 3 4 5; do head -c 1048576 /dev/urandom >"$T_TMP/f$i"; done
  out=$(timeout 60 unshare --mount --propagation private sh -c '
    O=$1 T=$2 S=$2/small/store
    mount -t tmpfs -o size=8m tmpfs "$T/small" || exit 3
    "$O" store import --store "$S" --root keep "$T/f0" >/dev/null || echo "import f0 failed"
    for i in 1 2 3 4; do "$O" store import --store "$S" "$T/f$i" >/dev/null || echo "import f$i failed"; done
    OCIBUILD_MIN_FREE=5Mi OCIBUILD_MAX_FREE=6Mi "$O" store import --store "$S" "$T/f5" \
      >/dev/null 2>"$T/auto-gc.err" || echo "import f5 failed"
    for i in 0 1 2 3 4 5; do
      "$O" store cat --store "$S" "$("$O" hash "$T/f$i" | cut -d" " -f1)" 2>/dev/null | cmp -s - "$T/f$i" &&
        echo "f$i present" || echo "f$i gone"
    done
    "$O" store verify --store "$S" >/dev/null 2>&1 || echo "verify failed"
    OCIBUILD_MIN_FREE=1Mi "$O" store import --store "$S" "$T/f1" 2>&1 >/dev/null' sh "$OCIBUILD" "$T_TMP" 2>&1)
  want=$(printf 'f0 present\nf1 gone\nf2 gone\nf3 gone\nf4 gone\nf5 present')
  free_after=$(sed -n 's/.*; \([0-9]*\) bytes.* free now.*/\1/p' "$T_TMP/auto-gc.err")
  if [ "$out" = "$want" ] && grep -q 'under $OCIBUILD_MIN_FREE.*collecting garbage' "$T_TMP/auto-gc.err" &&
     [ "${free_after:-0}" -ge 6291456 ]; then
    t_ok "under OCIBUILD_MIN_FREE an import first collects garbage up to OCIBUILD_MAX_FREE, keeping roots"
  else
    t_fail "under OCIBUILD_MIN_FREE an import first collects garbage up to OCIBUILD_MAX_FREE, keeping roots" \
      "$out; $(cat "$T_TMP/auto-gc.err")"
  fi
else
  t_skip "automatic gc on a small store" "needs root and unshare (a tmpfs of its own)"
fi
out=$(OCIBUILD_MIN_FREE=lots "$OCIBUILD" store import "$T_TMP/f0" 2>&1); rc=$?
[ $rc -eq 1 ] && [[ $out == *'$OCIBUILD_MIN_FREE'* ]] && t_ok "a bad OCIBUILD_MIN_FREE is refused naming it" ||
  t_fail "a bad OCIBUILD_MIN_FREE is refused naming it" "rc=$rc $out"
out=$(OCIBUILD_MIN_FREE=2Gi OCIBUILD_MAX_FREE=1Gi "$OCIBUILD" store import "$T_TMP/f0" 2>&1); rc=$?
[ $rc -eq 1 ] && [[ $out == *'$OCIBUILD_MAX_FREE'*'less than'* ]] && t_ok "OCIBUILD_MAX_FREE under OCIBUILD_MIN_FREE is refused" ||
  t_fail "OCIBUILD_MAX_FREE under OCIBUILD_MIN_FREE is refused" "rc=$rc $out"

# A build running during gc: its input is not rooted, gc runs while it sleeps.
if [ "$(id -u)" -ne 0 ] || ! command -v runc >/dev/null; then
  t_skip "a running build's inputs survive gc" "needs root and runc (rootful build)"
  t_done; exit
fi
mkdir -p "$T_TMP/input"
echo "input for the running build" >"$T_TMP/input/data"
cat >"$T_TMP/req.json" <<JSON
{
  "inputs": {"busybox": "/bin/busybox", "data": "$T_TMP/input"},
  "command_args": ["/nix/store/busybox", "sh", "-c",
                   "/nix/store/busybox sleep 5; mkdir -p /nix/store/out && /nix/store/busybox cat /nix/store/data/data > /nix/store/out/copy"],
  "working_dir": "build",
  "scratch_paths": ["build", "nix/store"],
  "inputs_dir": "nix/store",
  "outputs": ["nix/store/out"]
}
JSON
"$OCIBUILD" build --root built "$T_TMP/req.json" >"$T_TMP/build.json" 2>"$T_TMP/build.err" &
build_pid=$!
t_cleanup "kill $build_pid"
# Wait until the build has pinned its inputs and materialized both into the input cache (the
# first build in a data dir also probes the runtime first): gc must then keep what is there.
for _ in $(seq 1 200); do
  "$OCIBUILD" store roots | grep -q '^temproots/' &&
    [ "$(ls "$DATA/input-cache" 2>/dev/null | wc -l)" -ge 2 ] && break
  sleep 0.1
done
pins=$("$OCIBUILD" store roots)
t_contains "a running build pins its inputs" "$pins" "temproots/"
gc_out=$("$OCIBUILD" store gc 2>&1)
cache_entries=$(ls "$DATA/input-cache" 2>/dev/null | wc -l)
if wait "$build_pid"; then
  t_ok "a build running during gc succeeds"
else
  t_fail "a build running during gc succeeds" "$(cat "$T_TMP/build.err")"
fi
[ "$cache_entries" -ge 2 ] && t_ok "gc keeps a running build's input cache entries" ||
  t_fail "gc keeps a running build's input cache entries" "$cache_entries entries; $gc_out"
out_node=$(python3 -c 'import json,sys; print(json.dumps(json.load(open(sys.argv[1]))["outputs"][0]))' "$T_TMP/build.json")
"$OCIBUILD" store gc >/dev/null 2>&1
t_check "build --root keeps the outputs" "$OCIBUILD" store export "$out_node" "$T_TMP/built"
t_check "the output is what the build wrote" grep -q "input for the running build" "$T_TMP/built/copy"
out=$("$OCIBUILD" store gc 2>&1)
t_contains "after the build its inputs are collectable" "$out" "removed"
[ -z "$(ls "$DATA/input-cache" 2>/dev/null)" ] && t_ok "and their input cache entries go with them" ||
  t_fail "and their input cache entries go with them" "$(ls "$DATA/input-cache")"

# A build checks OCIBUILD_MIN_FREE before it starts: with a threshold no disk meets, it collects
# everything unrooted, says it is still under, and builds; what --root keeps stays.
"$OCIBUILD" store import "$T_TMP/input" >/dev/null 2>&1 # garbage for it to find
sed 's|/nix/store/busybox sleep 3; ||' "$T_TMP/req.json" >"$T_TMP/quick.json"
OCIBUILD_MIN_FREE=1000Ti "$OCIBUILD" build "$T_TMP/quick.json" >/dev/null 2>"$T_TMP/quick.err"; rc=$?
if [ $rc -eq 0 ] && grep -q 'collecting garbage' "$T_TMP/quick.err" &&
   grep -Eq 'gc removed ([1-9][0-9]* blobs|0 blobs and [1-9])' "$T_TMP/quick.err" &&
   grep -q 'still under' "$T_TMP/quick.err" &&
   "$OCIBUILD" store export "$out_node" "$T_TMP/built-again" 2>/dev/null; then
  t_ok "a build under OCIBUILD_MIN_FREE collects garbage first, keeps roots, and builds"
else
  t_fail "a build under OCIBUILD_MIN_FREE collects garbage first, keeps roots, and builds" "rc=$rc $(cat "$T_TMP/quick.err")"
fi

# The daemon checks before each build it runs (its store is the data dir's here), keeping the
# build's inputs, which the client uploaded unpinned (without that pin the build lost busybox).
head -c 100000 /dev/urandom >"$T_TMP/garbage"
"$OCIBUILD" store import "$T_TMP/garbage" >/dev/null 2>&1
OCIBUILD_MIN_FREE=1000Ti "$OCIBUILD" daemon --listen "unix:$T_TMP/gc-d.sock" 2>"$T_TMP/gc-d.log" &
daemon_pid=$!
t_cleanup "kill $daemon_pid 2>/dev/null"
for _ in $(seq 1 100); do [ -S "$T_TMP/gc-d.sock" ] && break; sleep 0.05; done
"$OCIBUILD" build -q --build-service "grpc+unix://$T_TMP/gc-d.sock" "$T_TMP/quick.json" >/dev/null \
  2>"$T_TMP/gc-d-build.err"; rc=$?
kill $daemon_pid; wait $daemon_pid 2>/dev/null
if [ $rc -eq 0 ] && grep -q 'collecting garbage' "$T_TMP/gc-d.log" &&
   grep -Eq 'gc removed ([1-9][0-9]* blobs|0 blobs and [1-9])' "$T_TMP/gc-d.log" &&
   "$OCIBUILD" store export "$out_node" "$T_TMP/built-third" 2>/dev/null; then
  t_ok "the daemon under OCIBUILD_MIN_FREE collects garbage before a build, keeps roots and the uploaded inputs, builds"
else
  t_fail "the daemon under OCIBUILD_MIN_FREE collects garbage before a build, keeps roots and the uploaded inputs, builds" \
    "rc=$rc $(cat "$T_TMP/gc-d-build.err") $(tail -5 "$T_TMP/gc-d.log")"
fi
t_check "the store verifies clean at the end" "$OCIBUILD" store verify

# The image cache: an image a replica uses is kept, and goes once the replica is down.
BUSYBOX=$(command -v busybox || echo /bin/busybox)
if ! command -v umoci >/dev/null || [ ! -x "$BUSYBOX" ]; then
  t_skip "gc keeps the image of a running replica" "needs umoci and busybox"
  t_done; exit
fi
L="$T_TMP/layout" U="$T_TMP/unpacked" P=gc$$
if ! { umoci init --layout "$L" && umoci new --image "$L:1" && umoci unpack --image "$L:1" "$U" &&
       mkdir -p "$U/rootfs/bin" && cp "$BUSYBOX" "$U/rootfs/bin/busybox" &&
       ln -s busybox "$U/rootfs/bin/sleep" && umoci repack --image "$L:1" "$U"; } >"$T_TMP/umoci.log" 2>&1; then
  t_fail "umoci builds the image" "$(cat "$T_TMP/umoci.log")"; t_done; exit
fi
cat >"$T_TMP/d.yaml" <<YAML
version: v1
deployment: $P-deploy
services:
  $P-app:
    image: { name: "oci:$L:1" }
    command: { entrypoint: [/bin/sleep, "60"] }
YAML
t_cleanup "$OCIBUILD service down $T_TMP/d.yaml --grace 0"
if out=$(timeout 120 "$OCIBUILD" service up "$T_TMP/d.yaml" 2>&1); then
  t_ok "a replica of an image is up"
else
  t_fail "a replica of an image is up" "$out"
fi
images=$(ls "$DATA/images")
out=$("$OCIBUILD" store gc 2>&1)
t_contains "gc reports the image cache" "$out" "image cache: 0 unused images"
[ "$(ls "$DATA/images")" = "$images" ] && [ -n "$images" ] && t_ok "gc keeps the image a replica uses" ||
  t_fail "gc keeps the image a replica uses" "before: $images; after: $(ls "$DATA/images")"
timeout 60 "$OCIBUILD" service down "$T_TMP/d.yaml" --grace 0 >/dev/null 2>&1
out=$("$OCIBUILD" store gc 2>&1)
t_contains "gc removes the image once no replica uses it" "$out" "image cache: 1 unused images"
[ -z "$(ls "$DATA/images")" ] && t_ok "the image cache is empty" || t_fail "the image cache is empty" "$(ls "$DATA/images")"
t_done
