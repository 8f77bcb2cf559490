#!/bin/bash
# `ocibuild spec`: every example request (examples/requests/*.json) gives a config.json that
# validates against the OCI runtime-spec JSON schema (seccomp filter included), rootful and
# rootless; the standard mounts are those `runc spec --rootless` writes; on crun (--runtime) no
# cgroup, the process limit an rlimit; rootful ids come from the
# ocibuild user's range, and without one the error gives the fix; invalid requests fail naming
# the field.
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

# Rootless mode reads the invoking user's ranges, rootful mode the ocibuild user's: give them
# files of their own.
printf '%s:100000:65536\nocibuild:1879048192:131072\n' "$(id -u)" >"$T_TMP/subuid"
printf '%s:200000:65536\nocibuild:1879048192:131072\n' "$(id -u)" >"$T_TMP/subgid"
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

# Standard mounts (the first seven): `runc spec --rootless`'s, which a user namespace needs (every
# build has one), with `runc spec`'s fresh sysfs at /sys when the build has its own network
# namespace (the minimal request has).
if command -v runc >/dev/null; then
  mkdir -p "$T_TMP/runc-rootful" "$T_TMP/runc-rootless"
  (cd "$T_TMP/runc-rootful" && runc spec) && (cd "$T_TMP/runc-rootless" && runc spec --rootless)
  for mode in rootful rootless; do
    if out=$($PY - "$T_TMP/runc-rootful/config.json" "$T_TMP/runc-rootless/config.json" \
      "$T_TMP/minimal-$mode.json" <<'PYEOF' 2>&1
import json, sys
rootful = json.load(open(sys.argv[1]))["mounts"]
expected = [next(m for m in rootful if m["destination"] == "/sys") if m["destination"] == "/sys" else m
            for m in json.load(open(sys.argv[2]))["mounts"]]
ours = json.load(open(sys.argv[3]))["mounts"][:len(expected)]
if expected != ours:
    print("expected:", json.dumps(expected)); print("ours:", json.dumps(ours)); sys.exit(1)
PYEOF
    ); then t_ok "standard mounts ($mode) equal runc spec --rootless's, with a fresh sysfs"; else t_fail "standard mounts ($mode) equal runc spec --rootless's, with a fresh sysfs" "$out"; fi
  done
else
  t_skip "standard mounts equal runc spec's" "runc is not installed"
fi

# The shape per runtime (docs/security.md "Limits"): on runc a cgroup (devices, pids.max) and
# RLIMIT_NPROC; on crun no cgroup at all: no linux.resources, no cgroup filesystem, the process
# limit RLIMIT_NPROC alone. Both valid.
shape() { # CONFIG -> "resources=yes|no nproc=N cgroupfs=yes|no"
  $PY -c 'import json,sys; c=json.load(open(sys.argv[1]))
n=[r["hard"] for r in c["process"]["rlimits"] if r["type"]=="RLIMIT_NPROC" and r["soft"]==r["hard"]]
print("resources=%s nproc=%s cgroupfs=%s" % ("yes" if "resources" in c["linux"] else "no", n[0] if n else "none",
  "yes" if any(m["destination"]=="/sys/fs/cgroup" for m in c["mounts"]) else "no"))' "$1"
}
for rt in runc crun; do
  command -v $rt >/dev/null || { t_skip "spec --runtime $rt" "$rt is not installed"; continue; }
  if ! err=$("$OCIBUILD" spec --runtime $rt "$ROOT/examples/requests/minimal.json" 2>&1 >"$T_TMP/shape-$rt.json"); then
    t_fail "spec --runtime $rt succeeds" "$err"; continue
  fi
  case $rt in runc) want="resources=yes nproc=4096 cgroupfs=yes" ;; crun) want="resources=no nproc=4096 cgroupfs=no" ;; esac
  got=$(shape "$T_TMP/shape-$rt.json")
  [ "$got" = "$want" ] && t_ok "spec --runtime $rt: $want" || t_fail "spec --runtime $rt: $want" "$got"
  if [ $have_jsonschema = 1 ]; then
    t_check "spec --runtime $rt validates against the OCI schema" validate "$T_TMP/shape-$rt.json"
  fi
done
got=$(shape "$T_TMP/minimal-rootful.json")
[ "$got" = "resources=yes nproc=4096 cgroupfs=yes" ] && t_ok "spec without --runtime: runc's shape" ||
  t_fail "spec without --runtime: runc's shape" "$got"

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
# Rootful ids: the first id slot of the ocibuild user's range; none is an error with the fix.
if out=$("$OCIBUILD" spec "$ROOT/examples/requests/minimal.json" 2>&1); then
  maps=$($PY -c 'import json,sys; l=json.loads(sys.argv[1])["linux"]; print([(m["containerID"], m["hostID"]) for m in l["uidMappings"] + l["gidMappings"]])' "$out")
  [ "$maps" = "[(0, 1879048192), (1000, 1879049192), (0, 1879048192), (100, 1879048292)]" ] &&
    t_ok "rootful spec maps container root and the build user into the first id slot" ||
    t_fail "rootful spec maps container root and the build user into the first id slot" "$maps"
else
  t_fail "rootful spec with an ocibuild range" "$out"
fi
OCIBUILD_SUBUID_FILE="$T_TMP/empty-subuid" expect_failure "rootful without the ocibuild range gives the fix" \
  "{$base}" "run scripts/install-deps.sh, or as root: \`useradd --system"
if out=$("$OCIBUILD" spec "$T_TMP/does-not-exist.json" 2>&1); then
  t_fail "missing request file fails" "$out"
else
  t_contains "missing request file fails" "$out" "does-not-exist.json"
fi

t_done
