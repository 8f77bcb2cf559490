#!/bin/bash
# zlayer's deployment keys (issue 16 items 2-4): tests/fuzz/corpus/deployment/zlayer-every-key.yaml
# names every key ocibuild parses itself; `service spec` turns each into its config.json field
# (checked one by one), the keys without effect on one node into one notice each, printed once.
# The validation gaps zlayer's format leaves are refused naming the key; an empty deployment is
# fine; the dns resolv.conf is made beneath the bundle, never through a symlink; and, as root
# with runc, a replica really gets its dns, ulimits, read-only root and cgroup parent.
source "$(dirname "$0")/lib.sh"
PY=/usr/bin/python3
chmod 711 "$T_TMP"

mkdir -p "$T_TMP/rootfs/etc" "$T_TMP/data" "$T_TMP/dev/net" "$T_TMP/mps-pipe" "$T_TMP/mps-log"
printf 'root:x:0:\naudio:x:29:\n' >"$T_TMP/rootfs/etc/group"
have_mknod=0
if [ "$(id -u)" = 0 ] && mknod "$T_TMP/dev/kvm" c 10 232 2>/dev/null &&
   mknod "$T_TMP/dev/net/tun" c 10 200 2>/dev/null; then
  have_mknod=1
fi
# The corpus document as zlayer users write it (a registry image); here the image is a local
# rootfs, since this test is about the keys, not about pulling.
sed -e "s|image: { name: ghcr.io/acme/api:1.2,|image: { rootfs: $T_TMP/rootfs,|" \
    -e "s|/srv/rootfs|$T_TMP/rootfs|" \
    -e "s|/run/mps-pipe|$T_TMP/mps-pipe|; s|/run/mps-log|$T_TMP/mps-log|" \
    "$E2E_DIR/../fuzz/corpus/deployment/zlayer-every-key.yaml" >"$T_TMP/d.yaml"

spec() { "$OCIBUILD" service spec "$T_TMP/d.yaml" "$@" --data-dir "$T_TMP/data" --dev-root "$T_TMP/dev"; }
check_json() { # NAME PYTHON-EXPR FILE (c = the config)
  if $PY -c "import json,sys; c=json.load(open(sys.argv[1])); sys.exit(0 if ($2) else 1)" "$3" 2>"$T_TMP/py.err"; then
    t_ok "$1"; else t_fail "$1" "$2 is false for $3 $(cat "$T_TMP/py.err")"; fi
}

if spec api >"$T_TMP/api.json" 2>"$T_TMP/api.err"; then t_ok "spec accepts every key of the document"
else t_fail "spec accepts every key of the document" "$(cat "$T_TMP/api.err")"; fi
A=$T_TMP/api.json
check_json "ulimits are rlimits, nofile in place of the default, a lone bound for both" \
  'c["process"]["rlimits"] == [{"type":"RLIMIT_NOFILE","hard":8192,"soft":4096},{"type":"RLIMIT_NPROC","hard":512,"soft":512},{"type":"RLIMIT_CORE","hard":0,"soft":0}]' "$A"
check_json "dns binds the bundle's resolv.conf read-only over /etc/resolv.conf" \
  '[m for m in c["mounts"] if m["destination"] == "/etc/resolv.conf"] == [{"destination":"/etc/resolv.conf","type":"none","source":"resolv.conf","options":["rbind","ro","nosuid","nodev","noexec"]}]' "$A"
check_json "cgroup_parent is the parent of cgroupsPath" 'c["linux"]["cgroupsPath"] == "/ocibuild-test/api-rep-1"' "$A"
check_json "cap_add is capabilities" \
  'c["process"]["capabilities"]["bounding"] == ["CAP_NET_ADMIN","CAP_SYS_TIME"]' "$A"
check_json "security_opt no-new-privileges:true" 'c["process"]["noNewPrivileges"] is True' "$A"
check_json "the Docker resource limits reach linux.resources" \
  'c["linux"]["resources"]["cpu"] == {"quota":50000,"period":100000,"shares":512,"cpus":"0"} and c["linux"]["resources"]["memory"] == {"limit":268435456,"swap":536870912,"reservation":134217728,"swappiness":10,"disableOOMKiller":False} and c["linux"]["resources"]["pids"] == {"limit":200} and c["linux"]["resources"]["blockIO"] == {"weight":300}' "$A"
check_json "oom_score_adj, user, extra_groups (a name from the rootfs's /etc/group), hostname" \
  'c["process"]["oomScoreAdj"] == 100 and c["process"]["user"] == {"uid":1000,"gid":1000,"additionalGids":[29]} and c["hostname"] == "api-host"' "$A"
check_json "labels are annotations, sysctls linux.sysctl" \
  'c["annotations"]["com.example.team"] == "payments" and c["annotations"]["tier"] == "backend" and c["linux"]["sysctl"] == {"net.ipv4.ip_unprivileged_port_start":"80"}' "$A"
check_json "stop_signal and stop_grace_period are annotations (applied by down, stop, restart)" \
  'c["annotations"] == {"com.example.team":"payments","tier":"backend","org.opencontainers.image.stopSignal":"SIGINT","org.ocibuild.stopGracePeriod":"20000ms"}' "$A"
check_json "pid_mode host (with userns_mode host): no pid and no user namespace; ipc_mode private keeps ipc" \
  '[n["type"] for n in c["linux"]["namespaces"]] == ["ipc","uts","mount","network"] and "uidMappings" not in c["linux"] and "gidMappings" not in c["linux"]' "$A"
check_json "init_container: tini bound read-only at /dev/init and run first" \
  'c["process"]["args"] == ["/dev/init","--","/bin/sh","-c","sleep 1000"] and {"destination":"/dev/init","type":"none","source":"/usr/bin/tini-static","options":["bind","ro","nosuid","nodev"]} in c["mounts"]' "$A"
check_json "tty and stdin_open stay notices: no terminal" 'c["process"]["terminal"] is False' "$A"
check_json "read_only_root_fs makes the root read-only" 'c["root"]["readonly"] is True' "$A"
check_json "storage with tier and size still mounts (tier and size are notices)" \
  '[m["destination"] for m in c["mounts"]][7:10] == ["/data","/scratch","/models"]' "$A"
if [ $have_mknod = 1 ]; then
  check_json "devices: read and write default to true, {path, mknod: true} is rwm" \
    '{"allow":True,"type":"c","major":10,"minor":232,"access":"rwm"} in c["linux"]["resources"]["devices"] and {"allow":True,"type":"c","major":10,"minor":200,"access":"r"} in c["linux"]["resources"]["devices"]' "$A"
else
  t_skip "devices: read and write default to true, {path, mknod: true} is rwm" "not root: mknod needs CAP_MKNOD"
fi
err=$(cat "$T_TMP/api.err")
for key in externals tunnels api services.api.affinity services.api.node_mode services.api.node_selector \
    services.api.platform services.api.isolation services.api.network services.api.storage.0..tier \
    services.api.storage.0..size services.api.storage.2..endpoint services.api.storage.2..credentials \
    services.api.image.source_policy services.api.endpoints.1..tunnel services.api.scale \
    services.api.logs services.api.overlay services.api.tty services.api.stdin_open; do
  key=${key//.0./[0]}; key=${key//.1./[1]}; key=${key//.2./[2]}
  t_contains "a notice names $key" "$err" "ocibuild: note: $key: "
done
for key in services.api.port_mappings services.api.extra_hosts services.api.pid_mode \
    services.api.ipc_mode services.api.userns_mode services.api.init_container \
    services.api.stop_signal services.api.stop_grace_period; do
  [[ "$err" != *"note: $key"* ]] && t_ok "$key takes effect: no notice" || t_fail "$key takes effect: no notice" "$err"
done
t_contains "adaptive scale says it runs min replicas" "$err" "ocibuild runs min (2) replicas"
n=$(grep -c 'note: services.api.affinity:' "$T_TMP/api.err")
[ "$n" = 1 ] && t_ok "each notice is printed once" || t_fail "each notice is printed once" "$n times"
[[ "$err" != *"services.gpu."* ]] && t_ok "spec SERVICE prints only that service's notices" ||
  t_fail "spec SERVICE prints only that service's notices" "$err"
[[ "$err" != *"services.api.expose"* ]] && t_ok "expose (documentation in zlayer too) is no notice" ||
  t_fail "expose (documentation in zlayer too) is no notice" "$err"
spec api --replica 2 >/dev/null 2>&1 && t_ok "adaptive scale runs min (2) replicas" || t_fail "adaptive scale runs min (2) replicas"
spec api --replica 3 >/dev/null 2>&1 && t_fail "no replica beyond min" || t_ok "no replica beyond min"

if spec gpu >"$T_TMP/gpu.json" 2>"$T_TMP/gpu.err"; then t_ok "spec gpu"
else t_fail "spec gpu" "$(cat "$T_TMP/gpu.err")"; fi
G=$T_TMP/gpu.json
check_json "time-slice: CUDA_VISIBLE_DEVICES is the slice index, NVIDIA_VISIBLE_DEVICES the count" \
  '"CUDA_VISIBLE_DEVICES=1" in c["process"]["env"] and "NVIDIA_VISIBLE_DEVICES=0,1" in c["process"]["env"]' "$G"
check_json "the mpi backend sets no socket interface" \
  '"MASTER_PORT=29501" in c["process"]["env"] and not [e for e in c["process"]["env"] if "SOCKET_IFNAME" in e]' "$G"
check_json "network_mode: host is the host's network namespace" \
  '"network" not in [n["type"] for n in c["linux"]["namespaces"]]' "$G"
check_json "without ulimits the default RLIMIT_NOFILE 1024/1024" \
  'c["process"]["rlimits"] == [{"type":"RLIMIT_NOFILE","hard":1024,"soft":1024}]' "$G"
t_contains "gpu.model is a notice" "$(cat "$T_TMP/gpu.err")" "note: services.gpu.resources.gpu.model: "
t_contains "manual scale is a notice" "$(cat "$T_TMP/gpu.err")" "note: services.gpu.scale: manual"

if spec mps --replica 3 >"$T_TMP/mps.json" 2>"$T_TMP/mps.err"; then t_ok "spec mps replica 3"
else t_fail "spec mps replica 3" "$(cat "$T_TMP/mps.err")"; fi
M=$T_TMP/mps.json
check_json "mps: the pipe and log dirs are named in env and bound read-write at their paths" \
  "\"CUDA_MPS_PIPE_DIRECTORY=$T_TMP/mps-pipe\" in c['process']['env'] and \"CUDA_MPS_LOG_DIRECTORY=$T_TMP/mps-log\" in c['process']['env'] and {'destination':'$T_TMP/mps-pipe','type':'none','source':'$T_TMP/mps-pipe','options':['rbind','rw','nosuid','nodev']} in c['mounts']" "$M"
rmdir "$T_TMP/mps-log"
out=$(spec mps 2>&1) && t_fail "a missing MPS directory fails" "$out" ||
  t_contains "a missing MPS directory fails naming the key" "$out" "services.mps.resources.gpu.mps_log_dir: MPS directory $T_TMP/mps-log does not exist"

# cap_drop takes capabilities out of the default set.
cat >"$T_TMP/drop.yaml" <<YAML
version: v1
deployment: drop-test
services:
  app: { cap_drop: [MKNOD, chown], devices: [ { path: /dev/kvm, read: false, write: false } ] }
YAML
"$OCIBUILD" service spec "$T_TMP/drop.yaml" app --data-dir "$T_TMP/data" --dev-root "$T_TMP/dev" >"$T_TMP/drop.json" 2>"$T_TMP/drop.err"
check_json "cap_drop removes from the defaults" \
  '"CAP_MKNOD" not in c["process"]["capabilities"]["bounding"] and "CAP_CHOWN" not in c["process"]["capabilities"]["bounding"] and "CAP_KILL" in c["process"]["capabilities"]["bounding"]' "$T_TMP/drop.json"
if [ $have_mknod = 1 ]; then
  check_json "a device with no access is listed, not allowed" \
    '"/dev/kvm" in [d["path"] for d in c["linux"]["devices"]] and not [r for r in c["linux"]["resources"]["devices"] if r.get("major") == 10 and r.get("minor") == 232]' "$T_TMP/drop.json"
fi

# Refusals, each naming the key.
refuse() { # NAME NEEDLE YAML-SERVICE-BODY
  printf 'version: v1\ndeployment: bad-one\nservices:\n  web: %s\n' "$3" >"$T_TMP/bad.yaml"
  local out
  if out=$("$OCIBUILD" service spec "$T_TMP/bad.yaml" web --data-dir "$T_TMP/data" 2>&1); then
    t_fail "$1" "accepted: $3"
  else
    t_contains "$1" "$out" "$2"
  fi
}
refuse "scale without mode" "services.web.scale: missing key \"mode\"" '{scale: {replicas: 3}}'
refuse "scale fixed without replicas" "services.web.scale.replicas: missing: scale mode fixed needs it" '{scale: {mode: fixed}}'
refuse "scale adaptive without max" "services.web.scale.max: missing" '{scale: {mode: adaptive, min: 1}}'
refuse "adaptive min above max" "services.web.scale: min (5) is greater than max (2)" '{scale: {mode: adaptive, min: 5, max: 2}}'
refuse "read-only anonymous storage" "services.web.storage[0].readonly: anonymous storage starts empty" \
  '{storage: [{type: anonymous, target: /x, readonly: true}]}'
refuse "capabilities and cap_add together" "cap_add is zlayer's alias of capabilities" '{capabilities: [KILL], cap_add: [CHOWN]}'
refuse "a typo inside a no-op key" "services.web.affinity: expected a mapping" '{affinity: spraed}'
refuse "a pin without its value" "services.web.affinity.pin: expected a string" '{affinity: {pin: [a]}}'
refuse "platform without arch" "services.web.platform: missing key \"arch\"" '{platform: {os: linux}}'
refuse "storage tier outside zlayer's" "services.web.storage[0].tier: expected one of local, cached, network" \
  '{storage: [{type: named, name: v, target: /v, tier: fast}]}'
refuse "a WASM service" "services.web.service_type: wasm_http: WASM services are not supported" '{service_type: wasm_http}'
refuse "replica groups" "services.web.replica_groups: heterogeneous replica groups are not supported" '{replica_groups: [{role: a, count: 1}]}'
refuse "an unknown ulimit" "services.web.ulimits.files: unknown ulimit" '{ulimits: {files: {soft: 1}}}'
refuse "a soft limit above the hard one" "services.web.ulimits.nofile.soft: soft limit above the hard limit" '{ulimits: {nofile: {soft: 10, hard: 5}}}'
refuse "dns that is not an address" "services.web.dns[1]: \"resolver.local\" is not an IPv4 or IPv6 address" '{dns: [1.1.1.1, resolver.local]}'
refuse "a cgroup parent climbing out" "services.web.cgroup_parent: \"/a/../b\" must not contain" '{cgroup_parent: /a/../b}'
refuse "duplicate endpoint names" "services.web.endpoints[1]: endpoint name \"http\" is already used" \
  '{endpoints: [{name: http, protocol: http, port: 80}, {name: http, protocol: tcp, port: 81}]}'
refuse "an endpoint without protocol" "services.web.endpoints[0]: missing key \"protocol\"" '{endpoints: [{name: http, port: 80}]}'
refuse "an endpoint port 0" "services.web.endpoints[0].port: 0 is out of range" '{endpoints: [{name: a, protocol: tcp, port: 0}]}'
refuse "a pull policy zlayer does not have" "services.web.image.pull_policy: expected always, if_not_present, never or newer" \
  '{image: {rootfs: /, pull_policy: sometimes}}'
refuse "a group name that cannot be looked up" "services.web.extra_groups[0]: cannot resolve \"nosuchgroup\"" \
  '{extra_groups: [nosuchgroup]}'
refuse "MPS keys without sharing: mps" "services.web.resources.gpu.mps_pipe_dir: only used with sharing: mps" \
  '{resources: {gpu: {mps_pipe_dir: /tmp}}}'

# An empty deployment: no services, or none.
for body in "" "services:" "services: {}"; do
  printf 'version: v1\ndeployment: empty-one\n%s\n' "$body" >"$T_TMP/empty.yaml"
  if out=$("$OCIBUILD" service up "$T_TMP/empty.yaml" --data-dir "$T_TMP/data" 2>&1); then
    t_ok "an empty deployment comes up (${body:-no services key})"
  else
    t_fail "an empty deployment comes up (${body:-no services key})" "$out"
  fi
done

# The resolv.conf is made beneath the bundle: a symlink planted where it goes is replaced, and
# what it points at is left alone.
cat >"$T_TMP/dns.yaml" <<YAML
version: v1
deployment: dns-test
services:
  app: { privileged: true, dns: [192.0.2.53], image: { rootfs: $T_TMP/rootfs } }
YAML
B=$T_TMP/bundle
mkdir -p "$B"
echo "do not touch" >"$T_TMP/victim"
ln -s "$T_TMP/victim" "$B/resolv.conf"
if "$OCIBUILD" service bundle "$T_TMP/dns.yaml" app "$B" --data-dir "$T_TMP/data" --rootfs-mode dir 2>"$T_TMP/b.err"; then
  t_ok "service bundle with dns"
else
  t_fail "service bundle with dns" "$(cat "$T_TMP/b.err")"
fi
[ "$(cat "$T_TMP/victim")" = "do not touch" ] && t_ok "the planted symlink's target is not written" ||
  t_fail "the planted symlink's target is not written" "$(cat "$T_TMP/victim")"
[ ! -L "$B/resolv.conf" ] && [ "$(cat "$B/resolv.conf")" = "$(printf 'nameserver 192.0.2.53\noptions edns0')" ] &&
  t_ok "the bundle's resolv.conf is a file with the nameservers" ||
  t_fail "the bundle's resolv.conf is a file with the nameservers" "$(ls -l "$B"; cat "$B/resolv.conf")"
[ "$(stat -c %a "$B/resolv.conf")" = 644 ] && t_ok "resolv.conf is 0644" || t_fail "resolv.conf is 0644" "$(stat -c %a "$B/resolv.conf")"

# With runc, as root: the replica sees its resolv.conf, rlimits, read-only root and cgroup.
RUNC=$(command -v runc || echo /usr/sbin/runc)
BUSYBOX=$(command -v busybox || echo /bin/busybox)
if [ "$(id -u)" != 0 ] || [ ! -x "$RUNC" ] || [ ! -x "$BUSYBOX" ]; then
  t_skip "runc runs a replica with zlayer's bundle fields" "needs root, runc and busybox-static"; t_done; exit
fi
R=$T_TMP/runfs
mkdir -p "$R/bin" "$R/etc"
cp "$BUSYBOX" "$R/bin/busybox"
for c in sh cat touch grep; do ln -s busybox "$R/bin/$c"; done
cg="obi-e2e-cg-$$" id="obi-e2e-zl-$$"
cat >"$T_TMP/run.yaml" <<YAML
version: v1
deployment: zlayer-run
services:
  app:
    rtype: job
    image: { rootfs: $R }
    command:
      entrypoint: [/bin/sh, -c]
      args: ['cat /etc/resolv.conf; echo "NOFILE=\$(ulimit -n) \$(ulimit -Hn)"; touch /x 2>/dev/null && echo ROOT=RW || echo ROOT=RO; grep -c $cg /proc/self/cgroup']
    dns: [192.0.2.53]
    ulimits: { nofile: { soft: 777, hard: 888 } }
    read_only_root_fs: true
    cgroup_parent: $cg
YAML
# (cleanups run last first: the parent cgroups go after the container that was in them)
t_cleanup "find /sys/fs/cgroup -depth -type d -name $cg -exec rmdir {} \\;"
t_cleanup "$RUNC --root $T_TMP/runc delete --force $id"
t_cleanup "umount -l $T_TMP/rb/rootfs"
if "$OCIBUILD" service bundle "$T_TMP/run.yaml" app "$T_TMP/rb" --data-dir "$T_TMP/data" \
     --rootfs-mode overlay 2>"$T_TMP/rb.err"; then
  out=$(timeout 60 "$RUNC" --root "$T_TMP/runc" run --bundle "$T_TMP/rb" "$id" 2>&1)
  t_contains "the replica reads its resolv.conf" "$out" "nameserver 192.0.2.53"
  t_contains "the replica has its ulimits" "$out" "NOFILE=777 888"
  t_contains "the replica's root is read-only" "$out" "ROOT=RO"
  [[ "$out" =~ (^|$'\n')[1-9][0-9]*($'\n'|$) ]] && t_ok "the replica's cgroup is below cgroup_parent" ||
    t_fail "the replica's cgroup is below cgroup_parent" "$out"
else
  t_fail "service bundle for runc" "$(cat "$T_TMP/rb.err")"
fi

# Through `service up` (the lifecycle's bundle, a user namespace): the replica's root reads the
# resolv.conf in its 0710 bundle, and gets the default RLIMIT_NOFILE; the notices print once.
svc="zk$$"
cat >"$T_TMP/up.yaml" <<YAML
version: v1
deployment: zlayer-up-$$
services:
  $svc:
    rtype: job
    image: { rootfs: $R }
    command: { entrypoint: [/bin/sh, -c], args: ['cat /etc/resolv.conf; echo "NOFILE=\$(ulimit -n) \$(ulimit -Hn)"'] }
    dns: [192.0.2.54]
    node_mode: dedicated
YAML
up() { "$OCIBUILD" service "$@" "$T_TMP/up.yaml" --data-dir "$T_TMP/updata"; }
t_cleanup "$OCIBUILD service down $T_TMP/up.yaml --data-dir $T_TMP/updata"
if out=$(timeout 120 "$OCIBUILD" service up "$T_TMP/up.yaml" --data-dir "$T_TMP/updata" 2>&1); then
  for _ in $(seq 50); do up ps 2>/dev/null | grep -q stopped && break; sleep 0.1; done
  logs=$(up logs 2>&1)
  t_contains "up: the replica reads its resolv.conf" "$logs" "nameserver 192.0.2.54"
  t_contains "up: the default RLIMIT_NOFILE 1024/1024" "$logs" "NOFILE=1024 1024"
  [ "$(grep -c "note: services.$svc.node_mode:" <<<"$out")" = 1 ] && t_ok "up prints the notice once" ||
    t_fail "up prints the notice once" "$out"
else
  t_fail "service up with dns" "$out"
fi
up down >/dev/null 2>&1
t_done
