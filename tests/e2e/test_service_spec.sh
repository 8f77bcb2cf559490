#!/bin/bash
# `ocibuild service spec`: the generated config.json validates against the OCI runtime-spec
# schema (../shared/data/oci-schema), secrets are resolved from --secrets-dir, device nodes are
# read from a fake /dev (--dev-root), and bad documents fail with messages naming the key.
source "$(dirname "$0")/lib.sh"
PY=/usr/bin/python3
SCHEMA_DIR=${OBI_SHARED_DATA:-$E2E_DIR/../../../shared/data}/oci-schema
validate() { $PY "$E2E_DIR/validate_oci_config.py" "$SCHEMA_DIR" "$1"; }

have_validator=1
if ! $PY -c 'import jsonschema' 2>/dev/null || [ ! -f "$SCHEMA_DIR/config-schema.json" ]; then
  have_validator=0
fi

mkdir -p "$T_TMP/secrets/web" "$T_TMP/dev/dri" "$T_TMP/data"
printf 'hunter2\n' >"$T_TMP/secrets/db-pass"
printf '{"user":"admin"}' >"$T_TMP/secrets/creds"
printf 'scoped\n' >"$T_TMP/secrets/web/token"
have_mknod=0
if [ "$(id -u)" = 0 ] && mknod "$T_TMP/dev/kvm" c 10 232 2>/dev/null &&
   mknod "$T_TMP/dev/big" c 300 70000 2>/dev/null && mknod "$T_TMP/dev/nvidia0" c 195 0 &&
   mknod "$T_TMP/dev/nvidiactl" c 195 255 && mknod "$T_TMP/dev/nvidia-uvm" c 511 0; then
  have_mknod=1
fi

# The fuzz corpus holds this deployment; scripts/spec-diff.sh uses it too.
cp "$E2E_DIR/../fuzz/corpus/deployment/web-stack.yaml" "$T_TMP/deploy.yaml"

spec() { OBI_E2E_VALUE=from-env "$OCIBUILD" service spec "$T_TMP/deploy.yaml" "$@" \
           --secrets-dir "$T_TMP/secrets" --data-dir "$T_TMP/data" --dev-root "$T_TMP/dev"; }

if spec web --replica 2 >"$T_TMP/web.json" 2>"$T_TMP/web.err"; then
  t_ok "spec prints a config for web replica 2"
else
  t_fail "spec prints a config for web replica 2" "$(cat "$T_TMP/web.err")"
fi
if [ $have_validator = 1 ]; then
  t_check "web config validates against the OCI schema" validate "$T_TMP/web.json"
else
  t_skip "web config validates against the OCI schema" "python3-jsonschema or the schema is missing"
fi
check_json() { # NAME PYTHON-EXPR (c = the config)
  if $PY -c "import json,sys; c=json.load(open(sys.argv[1])); sys.exit(0 if ($2) else 1)" "$3" 2>"$T_TMP/py.err"; then
    t_ok "$1"; else t_fail "$1" "$2 is false for $3 $(cat "$T_TMP/py.err")"; fi
}
W=$T_TMP/web.json
check_json "hostname is the container id" 'c["hostname"] == "web-rep-2"' "$W"
check_json "secrets, scoped secrets, JSON fields and \$E: are resolved" \
  '{"DB_PASSWORD=hunter2","DB_USER=admin","TOKEN=scoped","FROM_ENV=from-env"} <= set(c["process"]["env"])' "$W"
check_json "no env key appears twice" \
  'len({e.split("=")[0] for e in c["process"]["env"]}) == len(c["process"]["env"])' "$W"
check_json "explicit capabilities replace the defaults" \
  'c["process"]["capabilities"]["bounding"] == ["CAP_NET_ADMIN"] and c["process"]["capabilities"]["ambient"] == []' "$W"
check_json "cpu quota and memory limit" \
  'c["linux"]["resources"]["cpu"] == {"quota": 50000, "period": 100000} and c["linux"]["resources"]["memory"]["limit"] == 536870912' "$W"
check_json "storage mounts follow the defaults in document order" \
  '[m["destination"] for m in c["mounts"]][7:] == ["/data","/cache","/scratch","/run/app","/models"]' "$W"
check_json "named volume lives under the data dir" \
  'c["mounts"][8]["source"].endswith("/volumes/web-stack/cache")' "$W"
if [ $have_mknod = 1 ]; then
  check_json "device rules read major:minor from the nodes (incl. > 255)" \
    '{"allow":True,"type":"c","major":10,"minor":232,"access":"rw"} in c["linux"]["resources"]["devices"] and {"allow":True,"type":"c","major":300,"minor":70000,"access":"rw"} in c["linux"]["resources"]["devices"]' "$W"
  check_json "nvidia GPU nodes and the uvm major are allowed" \
    '{"allow":True,"type":"c","major":511,"access":"rwm"} in c["linux"]["resources"]["devices"] and "/dev/nvidia0" in [d["path"] for d in c["linux"]["devices"]]' "$W"
  t_contains "a missing device node is a warning" "$(cat "$T_TMP/web.err")" "devices[2]: $T_TMP/dev/missing does not exist"
else
  t_skip "device rules read major:minor from the nodes (incl. > 255)" "not root: mknod needs CAP_MKNOD"
  t_skip "nvidia GPU nodes and the uvm major are allowed" "not root: mknod needs CAP_MKNOD"
  t_skip "a missing device node is a warning" "not root: mknod needs CAP_MKNOD"
fi

if spec db >"$T_TMP/db.json" 2>"$T_TMP/db.err"; then t_ok "spec prints a config for db"
else t_fail "spec prints a config for db" "$(cat "$T_TMP/db.err")"; fi
if [ $have_validator = 1 ]; then
  t_check "privileged config validates against the OCI schema" validate "$T_TMP/db.json"
else
  t_skip "privileged config validates against the OCI schema" "python3-jsonschema or the schema is missing"
fi
D=$T_TMP/db.json
# privileged: every capability this host's bounding set allows (all 41 where it lacks none)
bnd=$(awk '/^CapBnd:/ {print $2}' /proc/self/status)
granted=$(python3 -c "print(bin(int('$bnd', 16) & ((1 << 41) - 1)).count('1'))")
check_json "privileged: the $granted capabilities of the bounding set, no masked paths, allow-all devices" \
  'len(c["process"]["capabilities"]["effective"]) == '"$granted"' and c["linux"]["maskedPaths"] == [] and c["linux"]["readonlyPaths"] == [] and c["linux"]["resources"]["devices"] == [{"allow":True,"access":"rwm"}]' "$D"
check_json "privileged: no user namespace" \
  '"user" not in [n["type"] for n in c["linux"]["namespaces"]] and "uidMappings" not in c["linux"]' "$D"
svc_uid=$(awk -F: '$1 == "ocibuild-svc" {print $2; exit}' /etc/subuid)
check_json "a replica's root is the first id of ocibuild-svc's range" \
  '"user" in [n["type"] for n in c["linux"]["namespaces"]] and c["linux"]["uidMappings"] == [{"containerID": 0, "hostID": '"${svc_uid:-0}"', "size": 65536}]' "$W"
check_json "volumes are nosuid,nodev" \
  'all("nosuid" in m["options"] and "nodev" in m["options"] for m in c["mounts"][7:])' "$W"
check_json "host_network drops the network namespace" \
  '"network" not in [n["type"] for n in c["linux"]["namespaces"]]' "$D"

out=$(spec web --replica 3 2>&1 >/dev/null); rc=$?
[ $rc -ne 0 ] && [[ "$out" == *"replica 3 is out of range 1..2"* ]] && t_ok "replica out of range fails" || t_fail "replica out of range fails" "$out"
out=$(spec nope 2>&1 >/dev/null); rc=$?
[ $rc -ne 0 ] && [[ "$out" == *'no service "nope"'* ]] && t_ok "unknown service fails" || t_fail "unknown service fails" "$out"

rm "$T_TMP/secrets/db-pass"
stdout=$(spec web 2>"$T_TMP/err"); rc=$?
[ $rc -ne 0 ] && [ -z "$stdout" ] && grep -q 'services.web.env.DB_PASSWORD: secret "db-pass" not found' "$T_TMP/err" &&
  t_ok "a missing secret fails and prints no config" || t_fail "a missing secret fails and prints no config" "$stdout $(cat "$T_TMP/err")"

printf 'version: v1\ndeployment: abc\nservices:\n  web:\n    resources: {cpus: 2}\n' >"$T_TMP/bad.yaml"
out=$("$OCIBUILD" service spec "$T_TMP/bad.yaml" web 2>&1); rc=$?
[ $rc -ne 0 ] && t_contains "unknown key names file, line, column, service and key" "$out" \
  "bad.yaml:5:17: services.web.resources: unknown key \"cpus\"" || t_fail "unknown key fails" "$out"
t_done
