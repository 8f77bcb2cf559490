#!/bin/bash
# The digest cache of friendly-form inputs (include/ocibuild/digest_cache.h): a host file named
# as an input is hashed once and then known by its identity (device, inode, size, mtime,
# ctime); a file changed in place with its size and mtime kept (its ctime moves) is hashed
# again and the build gets the new bytes' digest, not the remembered one.
source "$(dirname "$0")/lib.sh"

[ "$(id -u)" -eq 0 ] || { t_skip "digest cache" "needs root (rootful builds)"; t_done; exit; }
export OCIBUILD_STORE="$T_TMP/store" OCIBUILD_DATA_DIR="$T_TMP/data"
cp /bin/busybox "$T_TMP/bb"
touch -d '1 hour ago' "$T_TMP/bb"
cat >"$T_TMP/req.json" <<JSON
{
  "inputs": {"busybox": "$T_TMP/bb"},
  "command_args": ["/nix/store/busybox", "sh", "-c", "mkdir -p /nix/store/out && echo hi > /nix/store/out/x"],
  "working_dir": "build", "scratch_paths": ["build", "nix/store"], "inputs_dir": "nix/store",
  "outputs": ["nix/store/out"]
}
JSON
input_digest() { python3 -c 'import json,sys; print(json.load(sys.stdin)["buildRequest"]["inputs"][0]["file"]["digest"])'; }
import_digest() { "$OCIBUILD" store import --store "$T_TMP/fresh" "$1" | python3 -c 'import json,sys; print(json.load(sys.stdin)["file"]["digest"])'; }
entries() { ls "$T_TMP/data/digest-cache" 2>/dev/null | wc -l; }

# The copy's ctime must be older than OBI_DIGEST_CACHE_SETTLE_SECONDS to be remembered, counted
# in whole seconds (ctime second <= now second - 3), so up to 3 s of real time: wait a bit more.
sleep 3.2
"$OCIBUILD" build "$T_TMP/req.json" >/dev/null 2>&1 # makes the data dir (the cache goes in it)
first=$("$OCIBUILD" build "$T_TMP/req.json" 2>"$T_TMP/err" | input_digest)
[ "$first" = "$(import_digest "$T_TMP/bb")" ] && t_ok "the first build hashes the input" ||
  t_fail "the first build hashes the input" "$first $(cat "$T_TMP/err")"
[ "$(entries)" -eq 1 ] && t_ok "its digest is remembered" || t_fail "its digest is remembered" "$(ls -la "$T_TMP/data")"
# A hit reads none of the file (it is hashed in 64 KiB reads): strace counts them.
if command -v strace >/dev/null; then
  second=$(strace -f -e trace=read -o "$T_TMP/strace" "$OCIBUILD" build "$T_TMP/req.json" 2>"$T_TMP/err" | input_digest)
  reads=$(grep -c '= 65536$' "$T_TMP/strace")
  [ "$second" = "$first" ] && [ "$reads" -eq 0 ] && t_ok "an unchanged input hits the cache: not read again" ||
    t_fail "an unchanged input hits the cache: not read again" "$second vs $first, $reads reads of 64 KiB"
else
  t_skip "an unchanged input hits the cache: not read again" "strace is not installed"
fi

# Change one byte in place: same size, mtime put back; only the ctime says it changed.
mtime=$(stat -c %Y "$T_TMP/bb")
printf 'X' | dd of="$T_TMP/bb" bs=1 seek=1000000 conv=notrunc status=none
touch -d "@$mtime" "$T_TMP/bb"
third=$("$OCIBUILD" build "$T_TMP/req.json" 2>"$T_TMP/err" | input_digest)
if [ -n "$third" ] && [ "$third" != "$first" ] && [ "$third" = "$(import_digest "$T_TMP/bb")" ]; then
  t_ok "a file changed in place (size and mtime kept) misses and is hashed again"
else
  t_fail "a file changed in place (size and mtime kept) misses and is hashed again" "$third vs $first: $(cat "$T_TMP/err")"
fi
[ "$(entries)" -eq 1 ] && t_ok "a file changed just now is not remembered (its ctime is too fresh)" ||
  t_fail "a file changed just now is not remembered" "$(entries) entries"
t_done
