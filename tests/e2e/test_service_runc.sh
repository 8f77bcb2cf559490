#!/bin/bash
# `ocibuild service bundle` writes a bundle that real runc runs: a busybox rootfs as the
# lower layer of an overlay (--rootfs-mode overlay, what `up` does: the replica's user namespace
# sees the files with their ids shifted, the directory is never written), a read-only bind mount, a tmpfs with a size, a named volume that keeps
# what the container wrote, a secret in the env, and cpu/memory limits read back from the
# container's own cgroup files.
source "$(dirname "$0")/lib.sh"
# Replicas' roots (host ids of ocibuild-svc's range) pass through T_TMP to their bundles, as
# they pass through /var/lib to the default data dir.
chmod 711 "$T_TMP"
RUNC=$(command -v runc || echo /usr/sbin/runc)
BUSYBOX=$(command -v busybox || echo /bin/busybox)
if [ "$(id -u)" != 0 ]; then
  t_skip "runc runs a service bundle" "not root: runc needs root to create containers"; t_done; exit 0
fi
if [ ! -x "$RUNC" ] || [ ! -x "$BUSYBOX" ]; then
  t_skip "runc runs a service bundle" "runc or busybox-static is not installed"; t_done; exit 0
fi

R=$T_TMP/rootfs
mkdir -p "$R/bin" "$T_TMP/hostdata" "$T_TMP/secrets"
cp "$BUSYBOX" "$R/bin/busybox"
for c in sh cat echo touch grep id; do ln -s busybox "$R/bin/$c"; done
echo hostfile >"$T_TMP/hostdata/file"
echo s3cret >"$T_TMP/secrets/pw"
id="obi-e2e-svc-$$"
t_cleanup "$RUNC --root $T_TMP/runc delete --force $id"
t_cleanup "umount -l $T_TMP/bundle/rootfs"
cat >"$T_TMP/d.yaml" <<YAML
version: v1
deployment: runctest
services:
  app:
    rtype: job
    image: { rootfs: $R }
    command:
      entrypoint: [/bin/sh, -c]
      args:
        - >-
          cat /data/file; echo "SECRET=\$PW";
          touch /data/x 2>/dev/null && echo DATA=WRITABLE || echo DATA=READONLY;
          echo persisted > /cache/v;
          grep " /run/app " /proc/mounts;
          for f in /sys/fs/cgroup/memory/memory.limit_in_bytes /sys/fs/cgroup/memory.max; do
            [ -r \$f ] && echo "MEM=\$(cat \$f)"; done;
          for f in /sys/fs/cgroup/cpu/cpu.cfs_quota_us /sys/fs/cgroup/cpu,cpuacct/cpu.cfs_quota_us; do
            [ -r \$f ] && echo "CPU=\$(cat \$f)" && break; done;
          [ -r /sys/fs/cgroup/cpu.max ] && echo "CPU=\$(cat /sys/fs/cgroup/cpu.max)";
          echo HOST=\$(cat /proc/sys/kernel/hostname)
    env: { PW: \$S:pw }
    resources: { cpu: 0.5, memory: 64Mi }
    storage:
      - { type: bind, source: $T_TMP/hostdata, target: /data, readonly: true }
      - { type: named, name: cache, target: /cache }
      - { type: tmpfs, target: /run/app, size: 1Mi }
YAML
if "$OCIBUILD" service bundle "$T_TMP/d.yaml" app "$T_TMP/bundle" --data-dir "$T_TMP/data" \
     --secrets-dir "$T_TMP/secrets" --rootfs-mode overlay 2>"$T_TMP/err"; then
  t_ok "service bundle writes a bundle"
else
  t_fail "service bundle writes a bundle" "$(cat "$T_TMP/err")"
fi
out=$(timeout 120 "$RUNC" --root "$T_TMP/runc" run --bundle "$T_TMP/bundle" "$id" 2>&1); rc=$?
[ $rc -eq 0 ] && t_ok "runc runs the bundle" || t_fail "runc runs the bundle" "$out"
t_contains "the bind mount shows the host file" "$out" "hostfile"
t_contains "the secret reaches the env" "$out" "SECRET=s3cret"
t_contains "the read-only bind mount refuses writes" "$out" "DATA=READONLY"
t_contains "the tmpfs is mounted with its size" "$out" "/run/app tmpfs rw,nosuid,nodev"
[[ "$out" == *"size=1024k"* ]] && t_ok "tmpfs size=1Mi" || t_fail "tmpfs size=1Mi" "$out"
t_contains "the memory limit is applied" "$out" "MEM=67108864"
[[ "$out" == *"CPU=50000"* ]] && t_ok "the cpu quota is applied" || t_fail "the cpu quota is applied" "$out"
t_contains "the hostname is the container id" "$out" "HOST=app-rep-1"
[ "$(cat "$T_TMP/data/volumes/runctest/cache/v" 2>/dev/null)" = persisted ] &&
  t_ok "the named volume keeps what the container wrote" || t_fail "the named volume keeps what the container wrote"
[ ! -e "$T_TMP/hostdata/x" ] && t_ok "nothing was written to the read-only source" || t_fail "nothing was written to the read-only source"
[ ! -e "$R/proc" ] && [ ! -e "$R/etc" ] && t_ok "the rootfs directory itself is never written" ||
  t_fail "the rootfs directory itself is never written" "$(ls -la "$R")"
"$RUNC" --root "$T_TMP/runc" state "$id" >/dev/null 2>&1 && t_fail "runc left no container behind" || t_ok "runc left no container behind"

# An OCI image (umoci) run through an overlay: the replica writes, the image cache does not change.
if ! command -v umoci >/dev/null; then
  t_skip "an image replica runs on an overlay" "umoci is not installed"; t_done; exit
fi
L=$T_TMP/layout U=$T_TMP/unpacked
if ! { umoci init --layout "$L" && umoci new --image "$L:1" && umoci unpack --image "$L:1" "$U" &&
       cp -a "$R/bin" "$U/rootfs/" && umoci repack --image "$L:1" "$U" &&
       umoci config --image "$L:1" --config.entrypoint /bin/sh \
         --config.cmd=-c --config.cmd='echo replica > /written; cat /written'; } >"$T_TMP/umoci.log" 2>&1; then
  t_fail "umoci builds a busybox image" "$(cat "$T_TMP/umoci.log")"; t_done; exit
fi
cat >"$T_TMP/img.yaml" <<YAML
version: v1
deployment: imgrun
services:
  app: { rtype: job, image: { name: "oci:$L:1" } }
YAML
B2=$T_TMP/bundle2 id2="obi-e2e-img-$$"
t_cleanup "$RUNC --root $T_TMP/runc delete --force $id2"
t_cleanup "umount -l $B2/rootfs"
if "$OCIBUILD" service bundle "$T_TMP/img.yaml" app "$B2" --data-dir "$T_TMP/data" \
     --rootfs-mode overlay 2>"$T_TMP/err"; then
  t_ok "service bundle mounts an overlay on the image cache"
else
  t_fail "service bundle mounts an overlay on the image cache" "$(cat "$T_TMP/err")"
fi
out=$(timeout 120 "$RUNC" --root "$T_TMP/runc" run --bundle "$B2" "$id2" 2>&1); rc=$?
[ $rc -eq 0 ] && [[ "$out" == *replica* ]] && t_ok "runc runs the image replica" || t_fail "runc runs the image replica" "$out"
[ -f "$B2/upper/written" ] && t_ok "the replica's writes land in its upper layer" || t_fail "the replica's writes land in its upper layer" "$(ls -la "$B2" "$B2/upper" 2>&1)"
[ -z "$(find "$T_TMP/data/images" -name written)" ] && t_ok "the shared image cache is unchanged" || t_fail "the shared image cache is unchanged"
t_done
