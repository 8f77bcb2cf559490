#!/bin/bash
# `ocibuild spec`: every example request (examples/requests/*.json) gives a config.json that
# validates against the OCI runtime-spec JSON schema, rootful and rootless; the standard mounts
# are exactly those `runc spec` writes; invalid requests fail naming the field.
source "$(dirname "$0")/lib.sh"
ROOT=$(cd "$E2E_DIR/../.." && pwd)
SCHEMA_DIR=${OBI_SHARED_DATA:-$ROOT/../shared/data}/oci-schema
SCHEMA=$SCHEMA_DIR/config-schema.json
PY=/usr/bin/python3
validate() { $PY "$E2E_DIR/validate_oci_config.py" "$SCHEMA_DIR" "$1"; }

have_jsonschema=1
if [ ! -f "$SCHEMA" ]; then
  have_jsonschema=0; why="OCI schema not found at $SCHEMA"
elif ! $PY -c 'import jsonschema' 2>/dev/null; then
  have_jsonschema=0; why="python3-jsonschema is not installed for $PY"
fi

# Rootless mode reads the invoking user's ranges; give it its own files.
printf '%s:100000:65536\n' "$(id -u)" >"$T_TMP/subuid"
printf '%s:200000:65536\n' "$(id -u)" >"$T_TMP/subgid"
export OCIBUILD_SUBUID_FILE="$T_TMP/subuid" OCIBUILD_SUBGID_FILE="$T_TMP/subgid"

for req in "$ROOT"/examples/requests/*.json; do
  name=$(basename "$req" .json)
  for mode in rootful rootless; do
    flag=; [ "$mode" = rootless ] && flag=--rootless
    out="$T_TMP/$name-$mode.json"
    if ! err=$("$OCIBUILD" spec $flag "$req" 2>&1 >"$out"); then
      t_fail "spec $name ($mode) succeeds" "$err"
      continue
    fi
    if [ $have_jsonschema = 0 ]; then
      t_skip "spec $name ($mode) validates against the OCI schema" "$why"
    else
      t_check "spec $name ($mode) validates against the OCI schema" validate "$out"
    fi
  done
done

# The schema check itself must be able to fail.
if [ $have_jsonschema = 1 ]; then
  $PY -c 'import json,sys; c=json.load(open(sys.argv[1])); c["mounts"][0]["options"]="x"; c["linux"]["namespaces"][0]["type"]="bogus"; json.dump(c,open(sys.argv[2],"w"))' \
    "$T_TMP/minimal-rootful.json" "$T_TMP/broken.json"
  if out=$(validate "$T_TMP/broken.json" 2>&1); then
    t_fail "schema validation rejects a broken config.json" "$out"
  else
    t_contains "schema validation rejects a broken config.json" "$out" "mounts/0/options"
  fi
fi

# Standard mounts (the first seven) are exactly what `runc spec` writes.
if command -v runc >/dev/null; then
  for mode in rootful rootless; do
    flag=; [ "$mode" = rootless ] && flag=--rootless
    mkdir -p "$T_TMP/runc-$mode"
    (cd "$T_TMP/runc-$mode" && runc spec $flag)
    if out=$($PY - "$T_TMP/runc-$mode/config.json" "$T_TMP/minimal-$mode.json" <<'PYEOF' 2>&1
import json, sys
runc = json.load(open(sys.argv[1]))["mounts"]
ours = json.load(open(sys.argv[2]))["mounts"][:len(runc)]
if runc != ours:
    print("runc:", json.dumps(runc)); print("ours:", json.dumps(ours)); sys.exit(1)
PYEOF
    ); then t_ok "standard mounts ($mode) equal runc spec's"; else t_fail "standard mounts ($mode) equal runc spec's" "$out"; fi
  done
else
  t_skip "standard mounts equal runc spec's" "runc is not installed"
fi

# Invalid requests fail, naming the field.
expect_failure() { # NAME JSON NEEDLE [FLAGS...]
  local name=$1 json=$2 needle=$3 out; shift 3
  printf '%s' "$json" >"$T_TMP/bad.json"
  if out=$("$OCIBUILD" spec "$@" "$T_TMP/bad.json" 2>&1); then
    t_fail "$name" "succeeded: $out"
  else
    t_contains "$name" "$out" "$needle"
  fi
}
base='"commandArgs":["sh"],"scratchPaths":["build","nix/store"]'
expect_failure "unclean output is refused" "{$base,\"outputs\":[\"nix/store/a\",\"out/../x\"]}" \
  'outputs[1]: "out/../x" is not a clean path'
expect_failure "output outside scratch paths is refused" "{$base,\"outputs\":[\"nix/sto\"]}" \
  'outputs[0]: "nix/sto" is not inside any scratch path'
expect_failure "env key with = is refused" \
  "{$base,\"environmentVars\":[{\"key\":\"A\"},{\"key\":\"A=B\",\"value\":\"eA==\"}]}" \
  "environment_vars[1]: key \"A=B\" contains '='"
expect_failure "unsorted scratch paths are refused" '{"commandArgs":["sh"],"scratchPaths":["b","a"]}' \
  'scratch_paths[1]: "a" sorts before'
expect_failure "empty command is refused" '{"scratchPaths":["b"]}' 'command_args: must not be empty'
expect_failure "unknown field is refused by name" "{$base,\"outputPaths\":[]}" 'unknown field "outputPaths"'
expect_failure "malformed JSON names the position" "{$base," 'bad.json:1:'
expect_failure "relative ro path is refused" \
  "{$base,\"constraints\":{\"system\":\"x86_64-linux\",\"availableRoPaths\":[\"dev/kvm\"]}}" \
  'constraints.available_ro_paths[0]: "dev/kvm" is not absolute'
expect_failure "empty system is refused" "{$base,\"constraints\":{\"networkAccess\":true}}" \
  'constraints.system: must not be empty'
: >"$T_TMP/empty-subuid"
OCIBUILD_SUBUID_FILE="$T_TMP/empty-subuid" expect_failure "rootless without a subuid range says how to add one" \
  "{$base}" "usermod --add-subuids 100000-165535" --rootless
if out=$("$OCIBUILD" spec "$T_TMP/does-not-exist.json" 2>&1); then
  t_fail "missing request file fails" "$out"
else
  t_contains "missing request file fails" "$out" "does-not-exist.json"
fi

t_done
