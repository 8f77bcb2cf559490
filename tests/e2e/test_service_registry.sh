#!/bin/bash
# Registry images (`image: REF`, `image: {name: REF, pull_policy: ...}`) against Debian's
# docker-registry (the CNCF distribution registry) started here on 127.0.0.1, once open and once
# behind htpasswd (Basic) auth: a busybox image built with umoci and pushed with skopeo runs as a
# service by registry reference; a multi-arch index resolves to the host's manifest; the pull
# policies (requests counted in the registry's access log); credentials from an auth.json, and
# wrong or missing ones refused; plain HTTP refused unless the host is named insecure. A fake
# registry (fake_registry.py) serves a tampered layer, which is refused with nothing left in the
# cache, and redirects blobs to another host, which must not see the credentials.
source "$(dirname "$0")/lib.sh"
chmod 711 "$T_TMP"
PY=/usr/bin/python3
RUNC=$(command -v runc || echo /usr/sbin/runc)
BUSYBOX=$(command -v busybox || echo /bin/busybox)
REGISTRY=/usr/bin/docker-registry
if [ "$(id -u)" != 0 ]; then
  t_skip "registry images" "not root: runc needs root to create containers"; t_done; exit 0
fi
for tool in umoci skopeo htpasswd; do
  if ! command -v $tool >/dev/null; then
    t_skip "registry images" "$tool is not installed (scripts/install-deps.sh)"; t_done; exit 0
  fi
done
if [ ! -x "$REGISTRY" ] || [ ! -x "$RUNC" ] || [ ! -x "$BUSYBOX" ]; then
  t_skip "registry images" "docker-registry, runc or busybox-static is not installed"; t_done; exit 0
fi

P=reg$$
D=$T_TMP/data L=$T_TMP/layout U=$T_TMP/unpacked
svc() { "$OCIBUILD" service "$@"; }
t_cleanup "for id in \$($RUNC list -q 2>/dev/null); do $RUNC state \$id 2>/dev/null | grep -q '\"bundle\": \"$T_TMP/' && $RUNC delete --force \$id; done"
t_cleanup "grep -o ' $T_TMP/[^ ]*' /proc/self/mountinfo | sort -r | xargs -r -n1 umount -l"

# ---- the image: busybox with a marker file, and a second "arm64" one for the index ----
if ! { umoci init --layout "$L" && umoci new --image "$L:amd" && umoci unpack --image "$L:amd" "$U" &&
       mkdir -p "$U/rootfs/bin" && cp "$BUSYBOX" "$U/rootfs/bin/busybox" &&
       for c in sh cat echo sleep; do ln -s busybox "$U/rootfs/bin/$c"; done &&
       echo host >"$U/rootfs/arch" && umoci repack --image "$L:amd" "$U" && rm -rf "$U" &&
       umoci config --image "$L:amd" --config.entrypoint /bin/sh --config.cmd -c \
         --config.cmd 'echo ARCH=$(cat /arch); sleep 1000' &&
       umoci new --image "$L:arm" && umoci unpack --image "$L:arm" "$U" &&
       echo arm64 >"$U/rootfs/arch" && umoci repack --image "$L:arm" "$U" && rm -rf "$U" &&
       umoci config --image "$L:arm" --architecture arm64; } >"$T_TMP/umoci.log" 2>&1; then
  t_fail "umoci builds the test images" "$(cat "$T_TMP/umoci.log")"; t_done; exit 1
fi
# An OCI index of both (host platform and linux/arm64) in the layout, tagged "multi".
host_arch=$($PY -c 'import platform; print({"x86_64":"amd64","aarch64":"arm64"}.get(platform.machine(), platform.machine()))')
$PY - "$L" "$host_arch" <<'PYEOF'
import hashlib, json, os, sys
layout, host_arch = sys.argv[1:]
idx = json.load(open(os.path.join(layout, "index.json")))
by_tag = {m["annotations"]["org.opencontainers.image.ref.name"]: m for m in idx["manifests"]}
other = "arm64" if host_arch != "arm64" else "amd64"
entries = []
for tag, arch in (("arm", other), ("amd", host_arch)):  # the host's second: no "first wins"
    m = dict(by_tag[tag]); m.pop("annotations", None)
    m["platform"] = {"os": "linux", "architecture": arch}
    entries.append(m)
data = json.dumps({"schemaVersion": 2, "mediaType": "application/vnd.oci.image.index.v1+json",
                   "manifests": entries}).encode()
h = hashlib.sha256(data).hexdigest()
open(os.path.join(layout, "blobs", "sha256", h), "wb").write(data)
idx["manifests"].append({"mediaType": "application/vnd.oci.image.index.v1+json",
                         "digest": "sha256:" + h, "size": len(data),
                         "annotations": {"org.opencontainers.image.ref.name": "multi"}})
json.dump(idx, open(os.path.join(layout, "index.json"), "w"))
PYEOF
t_ok "umoci builds the test images and an index of two platforms"

# ---- docker-registry on a free loopback port ----
free_port() { $PY -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
# start_registry NAME [HTPASSWD]: sets PORT; the access log is $T_TMP/NAME.log
start_registry() {
  local name=$1 htpasswd=${2:-} auth=""
  PORT=$(free_port)
  [ -n "$htpasswd" ] && auth="auth:
  htpasswd:
    realm: ocibuild-test
    path: $htpasswd"
  cat >"$T_TMP/$name.yml" <<YAML
version: 0.1
log:
  level: warn
  accesslog:
    disabled: false
storage:
  filesystem:
    rootdirectory: $T_TMP/$name-storage
http:
  addr: 127.0.0.1:$PORT
$auth
YAML
  "$REGISTRY" serve "$T_TMP/$name.yml" >"$T_TMP/$name.log" 2>&1 &
  local pid=$!
  t_cleanup "kill $pid"
  for _ in $(seq 300); do
    (exec 3<>"/dev/tcp/127.0.0.1/$PORT") 2>/dev/null && return 0
    sleep 0.1
  done
  t_fail "docker-registry $name starts" "$(cat "$T_TMP/$name.log")"; t_done; exit 1
}
push() { # push TAG DEST [skopeo options]
  local tag=$1 dest=$2; shift 2
  skopeo copy --quiet --dest-tls-verify=false "$@" "oci:$L:$tag" "docker://$dest" >"$T_TMP/skopeo.log" 2>&1 ||
    { t_fail "skopeo pushes $tag to $dest" "$(cat "$T_TMP/skopeo.log")"; t_done; exit 1; }
}
deployment() { # deployment FILE NAME IMAGE-YAML
  cat >"$1" <<YAML
version: v1
deployment: $2
services:
  $2:
    image: $3
YAML
}
count() { grep -c "\"$1 /v2/$2" "$T_TMP/$3.log" || true; }

start_registry open
OPEN=127.0.0.1:$PORT
push amd "$OPEN/test/busybox:1"
push multi "$OPEN/test/multi:1" --all
t_ok "skopeo pushes the image and the index to docker-registry"

# ---- service up by registry reference ----
deployment "$T_TMP/up.yaml" "$P-up" "\"$OPEN/test/busybox:1\""
up_out=$(svc up "$T_TMP/up.yaml" --data-dir "$D" --insecure-registry "$OPEN" 2>&1); rc=$?
t_cleanup "$OCIBUILD service down $T_TMP/up.yaml --data-dir $D --grace 0"
if [ $rc -eq 0 ]; then t_ok "service up pulls $OPEN/test/busybox:1"; else t_fail "service up pulls $OPEN/test/busybox:1" "$up_out"; fi
ps_out=$(svc ps "$T_TMP/up.yaml" --data-dir "$D" 2>&1)
t_contains "the replica runs" "$ps_out" "running"
for _ in $(seq 300); do
  logs=$(svc logs "$T_TMP/up.yaml" --data-dir "$D" 2>&1)
  [[ "$logs" == *ARCH=* ]] && break; sleep 0.1
done
t_contains "the replica runs the image's Entrypoint+Cmd" "$logs" "ARCH=host"
manifest=$(cat "$D"/registry/refs/* 2>/dev/null | head -1 | cut -d' ' -f2)
[ -n "$manifest" ] && [ -d "$D/images/$manifest/rootfs" ] &&
  t_ok "the rootfs is unpacked into the image cache under the manifest digest" ||
  t_fail "the rootfs is unpacked into the image cache under the manifest digest" "$(ls -R "$D" | head -30)"
[ -z "$(find "$D/registry" -name '*.tmp*')" ] && t_ok "no temporary blob is left" || t_fail "no temporary blob is left"
# store gc keeps what a replica uses, as for oci: layouts; the pulled blobs stay after down
gc_out=$(OCIBUILD_DATA_DIR=$D "$OCIBUILD" store gc 2>&1)
[ -d "$D/images/$manifest/rootfs" ] && t_ok "store gc keeps the registry image a replica uses" ||
  t_fail "store gc keeps the registry image a replica uses" "$gc_out"
svc down "$T_TMP/up.yaml" --data-dir "$D" --grace 0 >/dev/null 2>&1
gc_out=$(OCIBUILD_DATA_DIR=$D "$OCIBUILD" store gc 2>&1)
[ ! -e "$D/images/$manifest" ] && [ -n "$(ls "$D/registry/blobs/sha256")" ] &&
  t_ok "after down, store gc drops the unpacked rootfs and keeps the pulled blobs" ||
  t_fail "after down, store gc drops the unpacked rootfs and keeps the pulled blobs" "$gc_out"
before=$(count GET "test/busybox/" open)
out=$(svc spec "$T_TMP/up.yaml" "$P-up" --data-dir "$D" --insecure-registry "$OPEN" 2>&1 >/dev/null)
[ -n "$manifest" ] && [ -d "$D/images/$manifest/rootfs" ] && [ "$(count GET "test/busybox/" open)" = "$before" ] &&
  t_ok "after gc dropped the unused rootfs, it is unpacked again from the cached blobs without a request" ||
  t_fail "after gc dropped the unused rootfs, it is unpacked again from the cached blobs without a request" "$gc_out; $out"

# ---- a progress line per layer on a terminal (script(1) gives the command one) ----
if command -v script >/dev/null; then
  out=$(script -qec "$OCIBUILD service spec $T_TMP/up.yaml $P-up --data-dir $T_TMP/tty-data --insecure-registry $OPEN" /dev/null 2>&1 </dev/null)
  [[ "$out" == *"pulling sha256:"*", done"* ]] && t_ok "a progress line per layer on a terminal" ||
    t_fail "a progress line per layer on a terminal" "$out"
  out=$(svc spec "$T_TMP/up.yaml" "$P-up" --data-dir "$T_TMP/notty-data" --insecure-registry "$OPEN" 2>&1 >/dev/null)
  [[ "$out" != *"pulling"* ]] && t_ok "no progress line without a terminal" || t_fail "no progress line without a terminal" "$out"
else
  t_skip "a progress line per layer on a terminal" "script(1) from bsdutils is not installed"
fi

# ---- the index resolves to the host's platform ----
deployment "$T_TMP/multi.yaml" "$P-multi" "{ name: \"$OPEN/test/multi:1\" }"
out=$(svc spec "$T_TMP/multi.yaml" "$P-multi" --data-dir "$D" --insecure-registry "$OPEN" 2>&1); rc=$?
host_manifest=$($PY -c 'import json,sys; print([m["digest"][7:] for m in json.load(open(sys.argv[1]))["manifests"] if m.get("annotations",{}).get("org.opencontainers.image.ref.name")=="amd"][0])' "$L/index.json")
if [ $rc -eq 0 ] && [ -f "$D/images/$host_manifest/rootfs/arch" ] && [ "$(cat "$D/images/$host_manifest/rootfs/arch")" = host ]; then
  t_ok "a multi-arch index resolves to linux/$host_arch"
else
  t_fail "a multi-arch index resolves to linux/$host_arch" "$out"
fi

# ---- a Docker v2 schema 2 manifest (what Docker Hub mostly serves) ----
push amd "$OPEN/test/docker:1" --format v2s2
deployment "$T_TMP/v2s2.yaml" "$P-v2s2" "\"$OPEN/test/docker:1\""
out=$(svc spec "$T_TMP/v2s2.yaml" "$P-v2s2" --data-dir "$T_TMP/v2s2-data" --insecure-registry "$OPEN" 2>&1); rc=$?
[ $rc -eq 0 ] && [[ "$out" == *'"ARCH=$(cat /arch)'* || "$out" == *'echo ARCH='* ]] &&
  grep -q 'vnd.docker.distribution.manifest.v2' "$T_TMP/v2s2-data/registry/blobs/sha256/"* &&
  t_ok "a Docker v2 schema 2 image is pulled and its config read" ||
  t_fail "a Docker v2 schema 2 image is pulled and its config read" "$out"

# ---- pull policies, counted in the registry's access log ----
gets() { count GET "test/busybox/manifests" open; }
heads() { count HEAD "test/busybox/manifests" open; }
policy() { deployment "$T_TMP/p.yaml" "$P-pol" "{ name: \"$OPEN/test/busybox:1\", pull_policy: $1 }"
  svc spec "$T_TMP/p.yaml" "$P-pol" --data-dir "${2:-$D}" --insecure-registry "$OPEN" 2>&1 >/dev/null; }
before=$(gets)
out=$(policy if_not_present) && [ "$(gets)" = "$before" ] &&
  t_ok "if_not_present makes no request when the tag is cached" ||
  t_fail "if_not_present makes no request when the tag is cached" "$out; GETs $before -> $(gets)"
out=$(policy always) && [ "$(gets)" = $((before + 1)) ] &&
  t_ok "always resolves the tag again" || t_fail "always resolves the tag again" "$out; GETs $before -> $(gets)"
before=$(gets) hbefore=$(heads)
out=$(policy newer) && [ "$(gets)" = "$before" ] && [ "$(heads)" = $((hbefore + 1)) ] &&
  t_ok "newer asks with HEAD and pulls nothing when the digest is the same" ||
  t_fail "newer asks with HEAD and pulls nothing when the digest is the same" "$out; GETs $before -> $(gets), HEADs $hbefore -> $(heads)"
push arm "$OPEN/test/busybox:1"   # the tag moves
before=$(gets)
out=$(policy newer) && [ "$(gets)" = $((before + 1)) ] &&
  t_ok "newer pulls when the tag's digest changed" ||
  t_fail "newer pulls when the tag's digest changed" "$out; GETs $before -> $(gets)"
before=$(gets)
out=$(policy never "$T_TMP/empty-data"); rc=$?
[ $rc -ne 0 ] && [[ "$out" == *"$OPEN/test/busybox:1 is not in the cache"* ]] && [ "$(gets)" = "$before" ] &&
  t_ok "never with an empty cache fails naming the image, without a request" ||
  t_fail "never with an empty cache fails naming the image, without a request" "rc=$rc: $out"
out=$(policy never) && t_ok "never uses the cached image" || t_fail "never uses the cached image" "$out"
deployment "$T_TMP/nope.yaml" "$P-nope" "\"$OPEN/test/busybox:nope\""
out=$(svc spec "$T_TMP/nope.yaml" "$P-nope" --data-dir "$T_TMP/nope-data" --insecure-registry "$OPEN" 2>&1); rc=$?
[ $rc -ne 0 ] && [[ "$out" == *"image $OPEN/test/busybox:nope"*"HTTP 404 (MANIFEST_UNKNOWN"* ]] &&
  t_ok "a tag the registry lacks: HTTP 404 with the registry's own error code" ||
  t_fail "a tag the registry lacks: HTTP 404 with the registry's own error code" "rc=$rc: $out"
deployment "$T_TMP/tls.yaml" "$P-tls" "\"$OPEN/test/busybox:1\""
out=$(svc spec "$T_TMP/tls.yaml" "$P-tls" --data-dir "$T_TMP/tls-data" 2>&1); rc=$?
[ $rc -ne 0 ] && [[ "$out" == *"https://$OPEN"* ]] &&
  t_ok "without --insecure-registry a loopback registry is spoken to with TLS only" ||
  t_fail "without --insecure-registry a loopback registry is spoken to with TLS only" "rc=$rc: $out"

# ---- htpasswd (Basic) auth ----
htpasswd -Bbn tester s3cret >"$T_TMP/htpasswd" 2>/dev/null
start_registry auth "$T_TMP/htpasswd"
AUTH=127.0.0.1:$PORT
push amd "$AUTH/test/busybox:1" --dest-creds tester:s3cret
auth_json() { printf '{"auths":{"%s":{"auth":"%s"}}}' "$AUTH" "$(printf '%s' "$1" | base64)" >"$2"; }
auth_json tester:s3cret "$T_TMP/good.json"
auth_json tester:wrong "$T_TMP/bad.json"
deployment "$T_TMP/auth.yaml" "$P-auth" "\"$AUTH/test/busybox:1\""
spec_auth() { svc spec "$T_TMP/auth.yaml" "$P-auth" --data-dir "$1" --insecure-registry "$AUTH" "${@:2}" 2>&1 >/dev/null; }
out=$(REGISTRY_AUTH_FILE=/nonexistent HOME=$T_TMP spec_auth "$T_TMP/a1"); rc=$?
[ $rc -ne 0 ] && [[ "$out" == *"needs credentials"* ]] &&
  t_ok "a registry that wants credentials and gets none: a clear error" || t_fail "a registry that wants credentials and gets none: a clear error" "rc=$rc: $out"
out=$(spec_auth "$T_TMP/a2" --registry-auth "$T_TMP/bad.json"); rc=$?
[ $rc -ne 0 ] && [[ "$out" == *"credentials from $T_TMP/bad.json were refused"* ]] &&
  t_ok "wrong credentials are refused naming their file" || t_fail "wrong credentials are refused naming their file" "rc=$rc: $out"
[ -z "$(ls "$T_TMP/a2/registry/refs" 2>/dev/null)" ] && t_ok "a refused pull records nothing" || t_fail "a refused pull records nothing"
out=$(spec_auth "$T_TMP/a3" --registry-auth "$T_TMP/good.json") &&
  t_ok "credentials from --registry-auth FILE pull the image" || t_fail "credentials from --registry-auth FILE pull the image" "$out"
out=$(REGISTRY_AUTH_FILE=$T_TMP/good.json spec_auth "$T_TMP/a4") &&
  t_ok "credentials from \$REGISTRY_AUTH_FILE pull the image" || t_fail "credentials from \$REGISTRY_AUTH_FILE pull the image" "$out"

mkdir -p "$T_TMP/home/.docker" "$T_TMP/xdg/containers" "$T_TMP/xdg-empty"
cp "$T_TMP/good.json" "$T_TMP/home/.docker/config.json"
out=$(unset REGISTRY_AUTH_FILE; HOME=$T_TMP/home XDG_RUNTIME_DIR=$T_TMP/xdg-empty spec_auth "$T_TMP/a6") &&
  t_ok "credentials from ~/.docker/config.json pull the image" || t_fail "credentials from ~/.docker/config.json pull the image" "$out"
cp "$T_TMP/good.json" "$T_TMP/xdg/containers/auth.json"
cp "$T_TMP/bad.json" "$T_TMP/home/.docker/config.json"
out=$(unset REGISTRY_AUTH_FILE; HOME=$T_TMP/home XDG_RUNTIME_DIR=$T_TMP/xdg spec_auth "$T_TMP/a7") &&
  t_ok "\$XDG_RUNTIME_DIR/containers/auth.json comes before ~/.docker/config.json" ||
  t_fail "\$XDG_RUNTIME_DIR/containers/auth.json comes before ~/.docker/config.json" "$out"
printf '{"auths":{"https://%s/v1/":{"auth":"%s"},"%s/test/busybox":{"auth":"%s"},"%s/test":{"auth":"%s"}}}' \
  "$AUTH" "$(printf 'tester:wrong' | base64)" "$AUTH" "$(printf 'tester:s3cret' | base64)" \
  "$AUTH" "$(printf 'tester:wrong2' | base64)" >"$T_TMP/specific.json"
out=$(spec_auth "$T_TMP/a5" --registry-auth "$T_TMP/specific.json") &&
  t_ok "the most specific auths key wins (host/repo over host/ns over https://host/v1/)" ||
  t_fail "the most specific auths key wins (host/repo over host/ns over https://host/v1/)" "$out"

# ---- a fake registry: a tampered layer, and a redirect to another host ----
# fake MODE: starts fake_registry.py, sets FAKE (host:port)
fake() {
  local fifo=$T_TMP/fake-$1.port
  $PY "$E2E_DIR/fake_registry.py" "$1" "$L2" "$T_TMP/seen-$1" >"$fifo" 2>"$T_TMP/fake-$1.log" &
  t_cleanup "kill $!"
  for _ in $(seq 300); do [ -s "$fifo" ] && break; sleep 0.1; done
  [ -s "$fifo" ] || { t_fail "fake registry $1 starts" "$(cat "$T_TMP/fake-$1.log")"; t_done; exit 1; }
  FAKE=127.0.0.1:$(head -1 "$fifo")
}
L2=$T_TMP/layout2
umoci init --layout "$L2" >/dev/null && skopeo copy --quiet "oci:$L:amd" "oci:$L2:x" >/dev/null 2>&1
fake tamper
deployment "$T_TMP/fake.yaml" "$P-fake" "\"$FAKE/test/busybox:1\""
out=$(svc spec "$T_TMP/fake.yaml" "$P-fake" --data-dir "$T_TMP/f1" --insecure-registry "$FAKE" 2>&1); rc=$?
[ $rc -ne 0 ] && [[ "$out" == *"the registry sent bytes whose sha256 is"* ]] &&
  t_ok "a tampered layer is refused" || t_fail "a tampered layer is refused" "rc=$rc: $out"
layer=$($PY -c 'import json,sys,os; L=sys.argv[1]; i=json.load(open(L+"/index.json")); m=json.load(open(L+"/blobs/sha256/"+i["manifests"][0]["digest"][7:])); print(max(m["layers"], key=lambda d: d["size"])["digest"][7:])' "$L2")
leftover=$(find "$T_TMP/f1/registry" -name "$layer*"; ls "$T_TMP/f1/registry/refs"; ls "$T_TMP/f1/images" 2>/dev/null | grep -v '^\.' )
[ -z "$leftover" ] && t_ok "nothing of the tampered pull is left in the cache" ||
  t_fail "nothing of the tampered pull is left in the cache" "$leftover"
fake redirect
printf '{"auths":{"%s":{"auth":"%s"}}}' "$FAKE" "$(printf 'u:p' | base64)" >"$T_TMP/fake.json"
deployment "$T_TMP/fake2.yaml" "$P-fake2" "\"$FAKE/test/busybox:1\""
out=$(svc spec "$T_TMP/fake2.yaml" "$P-fake2" --data-dir "$T_TMP/f2" --registry-auth "$T_TMP/fake.json" \
        --insecure-registry "$FAKE" --insecure-registry localhost 2>&1); rc=$?
[ $rc -eq 0 ] && t_ok "blobs redirected to another host are fetched" || t_fail "blobs redirected to another host are fetched" "$out"
[ -s "$T_TMP/seen-redirect" ] && ! grep -qv '^auth=none$' "$T_TMP/seen-redirect" &&
  t_ok "no credentials are sent after a redirect to another host" ||
  t_fail "no credentials are sent after a redirect to another host" "$(cat "$T_TMP/seen-redirect" 2>&1)"
out=$(svc spec "$T_TMP/fake2.yaml" "$P-fake2" --data-dir "$T_TMP/f3" --registry-auth "$T_TMP/fake.json" \
        --insecure-registry "$FAKE" 2>&1); rc=$?
[ $rc -ne 0 ] && [[ "$out" == *"plain HTTP to localhost"* ]] &&
  t_ok "a redirect to plain HTTP on a host not named insecure is refused" ||
  t_fail "a redirect to plain HTTP on a host not named insecure is refused" "rc=$rc: $out"
for m in huge scheme; do
  fake $m
  deployment "$T_TMP/$m.yaml" "$P-$m" "\"$FAKE/test/busybox:1\""
  out=$(svc spec "$T_TMP/$m.yaml" "$P-$m" --data-dir "$T_TMP/f-$m" --insecure-registry "$FAKE" 2>&1); rc=$?
  want="the answer is larger than 4194304 bytes"; [ $m = scheme ] && want="\"file:///etc/passwd\": only http and https are followed"
  [ $rc -ne 0 ] && [[ "$out" == *"$want"* ]] &&
    t_ok "refused: $want" || t_fail "refused: $want" "rc=$rc: $out"
done
# A pull killed halfway through a layer leaves its temporary file; the next pull removes it.
fake stall
deployment "$T_TMP/stall.yaml" "$P-stall" "\"$FAKE/test/busybox:1\""
"$OCIBUILD" service spec "$T_TMP/stall.yaml" "$P-stall" --data-dir "$T_TMP/f-kill" --insecure-registry "$FAKE" >/dev/null 2>&1 &
pull_pid=$!
# fsyncs on a loaded machine can take many seconds: wait up to 90 s for the first bytes
for _ in $(seq 900); do [ -n "$(find "$T_TMP/f-kill/registry" -name '*.tmp.*' -size +0 2>/dev/null)" ] && break; sleep 0.1; done
alive=$(kill -0 $pull_pid 2>/dev/null && echo alive || echo exited)
at_kill=$(find "$T_TMP/f-kill" -printf '%p %s\n' 2>&1 | head -20)
kill -9 $pull_pid; wait $pull_pid 2>/dev/null
left=$(find "$T_TMP/f-kill/registry" -name '*.tmp.*')
out=$(svc spec "$T_TMP/up.yaml" "$P-up" --data-dir "$T_TMP/f-kill" --insecure-registry "$OPEN" 2>&1 >/dev/null); rc=$?
[ -n "$left" ] && [ $rc -eq 0 ] && [ -z "$(find "$T_TMP/f-kill/registry" -name '*.tmp.*')" ] &&
  t_ok "a pull killed mid-layer leaves a temporary file that the next pull removes" ||
  t_fail "a pull killed mid-layer leaves a temporary file that the next pull removes" "pull $alive when killed; left: $left; rc=$rc $out; at the kill: $at_kill; the fake registry saw: $(cat "$T_TMP/fake-stall.log")"
fake bearer
printf '{"auths":{"%s":{"auth":"%s"}}}' "$FAKE" "$(printf 'u:p' | base64)" >"$T_TMP/bearer.json"
deployment "$T_TMP/fake3.yaml" "$P-fake3" "\"$FAKE/test/busybox:1\""
out=$(svc spec "$T_TMP/fake3.yaml" "$P-fake3" --data-dir "$T_TMP/f4" --registry-auth "$T_TMP/bearer.json" \
        --insecure-registry "$FAKE" 2>&1); rc=$?
[ $rc -eq 0 ] && grep -q 'service=fake&scope=repository%3Atest%2Fbusybox%3Apull Basic dTpw' "$T_TMP/seen-bearer" &&
  t_ok "a Bearer challenge: a token from the realm with the stored credentials pulls the image" ||
  t_fail "a Bearer challenge: a token from the realm with the stored credentials pulls the image" "$out; $(cat "$T_TMP/seen-bearer" 2>&1)"
out=$(svc spec "$T_TMP/fake3.yaml" "$P-fake3" --data-dir "$T_TMP/f5" --registry-auth "$T_TMP/bad.json" \
        --insecure-registry "$FAKE" 2>&1); rc=$?
[ $rc -ne 0 ] && [[ "$out" == *"token service http://$FAKE/token refused an anonymous pull"* ]] &&
  t_ok "a token service that refuses: a clear error" || t_fail "a token service that refuses: a clear error" "rc=$rc: $out"

t_done
