#!/bin/bash
# Compares the config.json two ocibuild binaries generate, byte for byte: `ocibuild spec` of
# every examples/requests/*.json (rootful and rootless, and with --sandbox-shell) and of the
# invalid requests tests/e2e/test_spec.sh uses, and `ocibuild service spec` and `service bundle`
# of the deployments the service e2e tests use (test_service_spec.sh, test_service_image.sh,
# test_service_runc.sh, test_service_sandbox.sh, test_service_lifecycle.sh, test_valgrind.sh).
# Each case records stdout (or the bundle's config.json and file listing), stderr and the exit
# code, so changed error messages show too. For refactorings that must not change what a
# container gets (issue 12):
#
#     cp build/ocibuild /tmp/ocibuild.before     # on the old commit
#     scripts/build.sh && scripts/spec-diff.sh /tmp/ocibuild.before build/ocibuild
#
# Exit 0 and "N cases, all identical" when nothing differs, else the diff and exit 1. Both
# binaries run in one temp dir (paths in the configs are the same); image cases need umoci,
# device nodes root; without them those cases are left out, and the script says so.
# SPEC_DIFF_KEEP=1 keeps that dir (its old/ and new/ hold every case) and prints its path.
set -u
if [ $# -ne 2 ] || [ ! -x "$1" ] || [ ! -x "$2" ]; then
  echo "usage: scripts/spec-diff.sh OLD_OCIBUILD NEW_OCIBUILD" >&2
  exit 2
fi
OLD=$(realpath "$1") NEW=$(realpath "$2")
ROOT=$(cd "$(dirname "$0")/.." && pwd)
W=$(mktemp -d /tmp/obi-spec-diff.XXXXXX)
chmod 711 "$W"
cleanup() {
  grep -o " $W/[^ ]*" /proc/self/mountinfo 2>/dev/null | sort -r | xargs -r -n1 umount -l 2>/dev/null
  if [ -n "${SPEC_DIFF_KEEP:-}" ]; then echo "spec-diff: kept $W" >&2; else rm -rf "$W"; fi
}
trap cleanup EXIT

# ---- fixtures (made once, shared by both runs) ----
F=$W/fixtures
mkdir -p "$F/requests" "$F/secrets/web" "$F/dev/dri" "$F/rootfs/bin" "$F/rootfs/etc" "$F/hostdata"
printf '%s:100000:65536\nocibuild:1879048192:131072\n' "$(id -u)" >"$F/subuid"
printf '%s:200000:65536\nocibuild:1879048192:131072\n' "$(id -u)" >"$F/subgid"
: >"$F/empty-subuid"
cp "$ROOT"/examples/requests/*.json "$ROOT/examples/hello.json" "$F/requests/"
base='"commandArgs":["sh"],"scratchPaths":["build","nix/store"]'
bad() { printf '%s' "$2" >"$F/requests/bad-$1.json"; }
bad unclean-output "{$base,\"outputs\":[\"nix/store/a\",\"out/../x\"]}"
bad output-outside "{$base,\"outputs\":[\"nix/sto\"]}"
bad env-key "{$base,\"environmentVars\":[{\"key\":\"A\"},{\"key\":\"A=B\",\"value\":\"eA==\"}]}"
bad unsorted '{"commandArgs":["sh"],"scratchPaths":["b","a"]}'
bad empty-command '{"scratchPaths":["b"]}'
bad unknown-field "{$base,\"outputPaths\":[]}"
bad malformed "{$base,"
bad relative-ro "{$base,\"constraints\":{\"system\":\"x86_64-linux\",\"availableRoPaths\":[\"dev/kvm\"]}}"
bad empty-system "{$base,\"constraints\":{\"networkAccess\":true}}"
printf '{%s,"environmentVars":[{"key":"V","value":"/w=="}]}' "$base" >"$F/requests/bad-utf8-env.json"

printf 'hunter2\n' >"$F/secrets/db-pass"
printf '{"user":"admin"}' >"$F/secrets/creds"
printf 'scoped\n' >"$F/secrets/web/token"
printf 's3cret\n' >"$F/secrets/pw"
echo hostfile >"$F/hostdata/file"
echo 'app:x:1000:1001::/home/app:/bin/sh' >"$F/rootfs/etc/passwd"
echo 'staff:x:1001:' >"$F/rootfs/etc/group"
mkdir -p "$W/s3/models/v1"
notes=()
if [ "$(id -u)" = 0 ] && mknod "$F/dev/kvm" c 10 232 && mknod "$F/dev/big" c 300 70000 &&
   mknod "$F/dev/nvidia0" c 195 0 && mknod "$F/dev/nvidiactl" c 195 255 &&
   mknod "$F/dev/nvidia-uvm" c 511 0 && mknod "$F/dev/kfd" c 234 0 &&
   mknod "$F/dev/dri/renderD128" c 226 128 && mknod "$F/dev/dri/card0" c 226 0; then :
else notes+=("device nodes left out (mknod needs root)"); fi

L=$F/layout
have_image=0
if command -v umoci >/dev/null && {
     U=$F/unpacked
     umoci init --layout "$L" && umoci new --image "$L:1.0" && umoci unpack --image "$L:1.0" "$U" &&
     mkdir -p "$U/rootfs/etc" "$U/rootfs/bin" &&
     echo 'app:x:1000:1001::/home/app:/bin/sh' >"$U/rootfs/etc/passwd" &&
     echo 'staff:x:1001:' >"$U/rootfs/etc/group" && echo hi >"$U/rootfs/bin/hello" &&
     umoci repack --image "$L:1.0" "$U" && rm -rf "$U" &&
     umoci config --image "$L:1.0" --config.entrypoint /bin/app --config.cmd --serve \
       --config.env FROM_IMAGE=1 --config.env PATH=/opt/bin --config.workingdir /srv \
       --config.user app:staff && umoci new --image "$L:bare"; } >"$F/umoci.log" 2>&1; then
  have_image=1
else
  notes+=("image cases left out (umoci missing or failing: $(tail -1 "$F/umoci.log" 2>/dev/null))")
fi

# The deployment of tests/e2e/test_service_spec.sh (the fuzz corpus holds it), and more services.
{ cat "$ROOT/tests/fuzz/corpus/deployment/web-stack.yaml"; cat <<YAML
  gpu-amd:
    resources: { gpu: { count: 1, vendor: amd, distributed: { backend: gloo, master_port: 1 } } }
  gpu-intel:
    resources: { gpu: { count: 1, vendor: intel } }
  hostnet:
    host_network: true
    capabilities: []
  plain:
    hostname: plain.example
    command: { args: [echo, hi] }
YAML
} >"$F/spec.yaml"
# The deployment of tests/e2e/test_valgrind.sh.
cp "$ROOT/tests/fuzz/corpus/deployment/vg-test.yaml" "$F/valgrind.yaml"
cat >"$F/rootfs.yaml" <<YAML
version: v1
deployment: runctest
services:
  app:
    rtype: job
    image: { rootfs: $F/rootfs }
    command: { entrypoint: [/bin/sh, -c], args: [echo hi] }
    env: { PW: \$S:pw }
    resources: { cpu: 0.5, memory: 64Mi }
    storage:
      - { type: bind, source: $F/hostdata, target: /data, readonly: true }
      - { type: named, name: cache, target: /cache }
      - { type: tmpfs, target: /run/app, size: 1Mi }
  priv:
    rtype: job
    privileged: true
    image: { rootfs: $F/rootfs }
YAML
cat >"$F/image.yaml" <<YAML
version: v1
deployment: imgtest
services:
  app:
    image: { name: "oci:$L:1.0" }
    env: { FROM_SPEC: "2" }
  bare:
    image: { name: "oci:$L:bare" }
  over:
    image: { name: "oci:$L:1.0" }
    command: { entrypoint: [/bin/sh], workdir: /tmp }
  missing:
    image: { name: "oci:$L:nope" }
  sandbox-planter:
    rtype: job
    image: { name: "oci:$L:1.0" }
    command: { entrypoint: [/bin/sh, -c], args: [cp /bin/euid /loot/euid] }
    storage: [ { type: named, name: loot, target: /loot } ]
  sandbox-hostnet:
    rtype: job
    image: { name: "oci:$L:1.0" }
    host_network: true
  sandbox-priv:
    rtype: job
    image: { name: "oci:$L:1.0" }
    privileged: true
    host_network: true
  lifecycle-web:
    image: { name: "oci:$L:1.0" }
    resources: { cpu: 0.5, memory: 64Mi }
    storage:
      - { type: bind, source: $F/hostdata, target: /data, readonly: true }
      - { type: named, name: cache, target: /cache }
      - { type: anonymous, target: /scratch }
      - { type: tmpfs, target: /run/app, size: 1Mi }
YAML

# ---- one run: every case into OUT/<case>.{out,err,rc} ----
snapshot() { # BINARY OUT
  local bin=$1 out=$2 n=0
  mkdir -p "$out"
  rm -rf "$W/data" "$W/bundles"
  mkdir -p "$W/data/s3/models/v1" "$W/bundles"
  run() { # CASE CMD...
    local name=$1; shift
    (cd "$W" && OBI_E2E_VALUE=from-env "$@") >"$out/$name.out" 2>"$out/$name.err"
    echo $? >"$out/$name.rc"
    sed -i "s|$bin|OCIBUILD|g" "$out/$name.err"
    n=$((n + 1))
  }
  export OCIBUILD_SUBUID_FILE="$F/subuid" OCIBUILD_SUBGID_FILE="$F/subgid"
  for req in "$F"/requests/*.json; do
    local r; r=$(basename "$req" .json)
    run "spec-$r-rootful" "$bin" spec "$req"
    run "spec-$r-rootless" "$bin" spec --rootless "$req"
  done
  run spec-minimal-shell "$bin" spec --sandbox-shell /opt/sh "$F/requests/minimal.json"
  run spec-minimal-relative-shell "$bin" spec --sandbox-shell opt/sh "$F/requests/minimal.json"
  OCIBUILD_SUBUID_FILE="$F/empty-subuid" run spec-no-range-rootful "$bin" spec "$F/requests/minimal.json"
  OCIBUILD_SUBUID_FILE="$F/empty-subuid" run spec-no-range-rootless "$bin" spec --rootless "$F/requests/minimal.json"
  run spec-missing-file "$bin" spec "$F/requests/does-not-exist.json"
  unset OCIBUILD_SUBUID_FILE OCIBUILD_SUBGID_FILE

  local common=(--data-dir "$W/data" --secrets-dir "$F/secrets" --dev-root "$F/dev")
  for s in web db gpu-amd gpu-intel hostnet plain nope; do
    run "service-spec-$s" "$bin" service spec "$F/spec.yaml" "$s" "${common[@]}"
  done
  run service-spec-web-2 "$bin" service spec "$F/spec.yaml" web --replica 2 "${common[@]}"
  run service-spec-web-3 "$bin" service spec "$F/spec.yaml" web --replica 3 "${common[@]}"
  run service-spec-no-secrets "$bin" service spec "$F/spec.yaml" web --data-dir "$W/data"
  for s in web db; do
    run "service-spec-valgrind-$s" "$bin" service spec "$F/valgrind.yaml" "$s" --data-dir "$W/data"
  done
  run service-spec-rootfs-app "$bin" service spec "$F/rootfs.yaml" app "${common[@]}"
  run service-spec-rootfs-priv "$bin" service spec "$F/rootfs.yaml" priv "${common[@]}"
  local modes=(symlink dir path)
  [ "$(id -u)" = 0 ] && modes+=(overlay)
  for s in app priv; do
    for m in "${modes[@]}"; do
      local b="$W/bundles/rootfs-$s-$m"
      run "service-bundle-rootfs-$s-$m" "$bin" service bundle "$F/rootfs.yaml" "$s" "$b" \
        --rootfs-mode "$m" "${common[@]}"
      bundle_listing "$b" "$out/service-bundle-rootfs-$s-$m"
    done
  done
  if [ $have_image = 1 ]; then
    for s in app bare over missing sandbox-planter sandbox-hostnet sandbox-priv lifecycle-web; do
      run "service-spec-image-$s" "$bin" service spec "$F/image.yaml" "$s" --data-dir "$W/data"
      for m in "${modes[@]}"; do
        local b="$W/bundles/image-$s-$m"
        run "service-bundle-image-$s-$m" "$bin" service bundle "$F/image.yaml" "$s" "$b" \
          --rootfs-mode "$m" --data-dir "$W/data"
        bundle_listing "$b" "$out/service-bundle-image-$s-$m"
      done
    done
  fi
  find "$W/data" -path "$W/data/images" -prune -o -printf '%P %y %m %u:%g\n' | sort >"$out/data-dir.listing"
  grep -o " $W/[^ ]*" /proc/self/mountinfo | sort -r | xargs -r -n1 umount -l
  echo "$n" >"$out/.count"
}
# BUNDLE/config.json and what the bundle holds (names, types, modes, owners; not inside rootfs)
bundle_listing() { # BUNDLE PREFIX
  [ -d "$1" ] || return 0
  cp "$1/config.json" "$2.config.json" 2>/dev/null
  (cd "$1" && find . -path ./rootfs/'*' -prune -o -printf '%p %y %m %u:%g %l\n' | sort) >"$2.listing"
}

snapshot "$OLD" "$W/old"
snapshot "$NEW" "$W/new"
count=$(cat "$W/new/.count")
for note in "${notes[@]+"${notes[@]}"}"; do echo "spec-diff: note: $note"; done
if diff -ru "$W/old" "$W/new"; then
  echo "spec-diff: $count cases, all identical"
  exit 0
fi
echo "spec-diff: $count cases; the differences are above" >&2
exit 1
