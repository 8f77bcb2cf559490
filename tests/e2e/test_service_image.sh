#!/bin/bash
# `image: {name: oci:PATH:TAG}`: an image layout written by umoci (two layers, the second with a
# whiteout, and an image config) is verified, unpacked into the cache keyed by the manifest
# digest, and feeds the spec (args, env, cwd, user resolved by name); a corrupted blob is refused
# and leaves no cache entry behind.
source "$(dirname "$0")/lib.sh"
PY=/usr/bin/python3
SCHEMA_DIR=${OBI_SHARED_DATA:-$E2E_DIR/../../../shared/data}/oci-schema

if ! command -v umoci >/dev/null; then
  t_skip "service image from an umoci layout" "umoci is not installed (apt-get install umoci)"
  t_done; exit 0
fi
L=$T_TMP/layout D=$T_TMP/data B=$T_TMP/bundle
umoci_log=$T_TMP/umoci.log
if ! { umoci init --layout "$L" && umoci new --image "$L:1.0" && umoci unpack --image "$L:1.0" "$B" &&
       mkdir -p "$B/rootfs/etc" "$B/rootfs/d" "$B/rootfs/bin" &&
       echo 'app:x:1000:1001::/home/app:/bin/sh' >"$B/rootfs/etc/passwd" &&
       echo 'staff:x:1001:' >"$B/rootfs/etc/group" &&
       echo old >"$B/rootfs/d/old" && echo hi >"$B/rootfs/bin/hello" &&
       umoci repack --image "$L:1.0" "$B" && rm -rf "$B" &&
       umoci unpack --image "$L:1.0" "$B" && rm "$B/rootfs/d/old" && echo new >"$B/rootfs/d/new" &&
       umoci repack --image "$L:1.0" "$B" && rm -rf "$B" &&
       umoci config --image "$L:1.0" --config.entrypoint /bin/app --config.cmd --serve \
         --config.env FROM_IMAGE=1 --config.workingdir /srv --config.user app:staff; } >"$umoci_log" 2>&1; then
  t_fail "umoci builds the test image" "$(cat "$umoci_log")"; t_done; exit 1
fi
t_ok "umoci builds the test image"

cat >"$T_TMP/d.yaml" <<YAML
version: v1
deployment: imgtest
services:
  app:
    image: { name: "oci:$L:1.0" }
    env: { FROM_SPEC: "2" }
YAML
if "$OCIBUILD" service spec "$T_TMP/d.yaml" app --data-dir "$D" >"$T_TMP/c.json" 2>"$T_TMP/err"; then
  t_ok "spec from an OCI image layout"
else
  t_fail "spec from an OCI image layout" "$(cat "$T_TMP/err")"
fi
check_json() {
  if $PY -c "import json,sys; c=json.load(open(sys.argv[1])); sys.exit(0 if ($2) else 1)" "$T_TMP/c.json" 2>/dev/null; then
    t_ok "$1"; else t_fail "$1" "$2 is false"; fi
}
check_json "image Entrypoint+Cmd become the args" 'c["process"]["args"] == ["/bin/app", "--serve"]'
check_json "image WorkingDir is the cwd" 'c["process"]["cwd"] == "/srv"'
check_json "image User app:staff is resolved in the image's passwd and group" \
  'c["process"]["user"] == {"uid": 1000, "gid": 1001}'
check_json "image Env comes first, spec env after" \
  'c["process"]["env"].index("FROM_IMAGE=1") < c["process"]["env"].index("FROM_SPEC=2")'
if $PY -c 'import jsonschema' 2>/dev/null && [ -f "$SCHEMA_DIR/config-schema.json" ]; then
  t_check "the config validates against the OCI schema" \
    $PY "$E2E_DIR/validate_oci_config.py" "$SCHEMA_DIR" "$T_TMP/c.json"
else
  t_skip "the config validates against the OCI schema" "python3-jsonschema or the schema is missing"
fi

digest=$($PY -c 'import json,sys; print(json.load(open(sys.argv[1]))["manifests"][0]["digest"].split(":")[1])' "$L/index.json")
R=$D/images/$digest/rootfs
[ -f "$R/bin/hello" ] && [ -f "$R/d/new" ] && t_ok "layers are unpacked into the cache keyed by the manifest digest" ||
  t_fail "layers are unpacked into the cache keyed by the manifest digest" "$(find "$D" | head -20)"
[ ! -e "$R/d/old" ] && t_ok "the second layer's whiteout removed d/old" || t_fail "the second layer's whiteout removed d/old"
[ -z "$(find "$D/images" -name '.tmp-*')" ] && t_ok "no temporary directory is left" || t_fail "no temporary directory is left"

touch "$R/marker"
"$OCIBUILD" service spec "$T_TMP/d.yaml" app --data-dir "$D" >/dev/null 2>&1
[ -e "$R/marker" ] && t_ok "a second spec reuses the cache entry" || t_fail "a second spec reuses the cache entry"

# Corrupt the largest layer blob (same size, one byte changed) and use a fresh data dir.
layer=$(ls -S "$L"/blobs/sha256/* | head -1)
$PY - "$layer" <<'PYEOF'
import sys
p = sys.argv[1]
data = bytearray(open(p, "rb").read())
data[len(data) // 2] ^= 0xFF
open(p, "wb").write(bytes(data))
PYEOF
out=$("$OCIBUILD" service spec "$T_TMP/d.yaml" app --data-dir "$T_TMP/data2" 2>&1); rc=$?
[ $rc -ne 0 ] && [[ "$out" == *"sha256 is"* ]] && t_ok "a corrupted blob is refused" || t_fail "a corrupted blob is refused" "$out"
[ -z "$(ls -A "$T_TMP/data2/images" 2>/dev/null | grep -v -e '^.lock$' -e '^.gc.lock$')" ] &&
  t_ok "a refused image leaves no cache entry" || t_fail "a refused image leaves no cache entry" "$(ls -A "$T_TMP/data2/images")"

sed -i 's/:1.0"/:2.0"/' "$T_TMP/d.yaml"
out=$("$OCIBUILD" service spec "$T_TMP/d.yaml" app --data-dir "$D" 2>&1); rc=$?
[ $rc -ne 0 ] && [[ "$out" == *'no manifest tagged "2.0"'* ]] && t_ok "an unknown tag is an error" || t_fail "an unknown tag is an error" "$out"
t_done
