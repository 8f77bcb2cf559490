#!/bin/bash
# The service sandbox with real runc (issues 10 and 21; docs/service.md, "User namespaces" and
# "Capabilities"):
# - the attack: a hostile replica plants a set-uid program in its named volume, and a local
#   unprivileged host user runs it to become root. After the fix the volume is out of reach
#   (the data dir 0711, DATA/volumes 0700), a copy of the file is set-uid to an id of
#   ocibuild-svc's range, never root, and the replica's volume is mounted nosuid,nodev;
# - replicas run in a user namespace (root = the range's first id), image files show their
#   image ownership inside, a host_network replica too (with the host's /sys read-only);
# - a privileged replica with host networking starts on a host whose capability bounding set is
#   not the full list (this VM lacks CAP_SYS_RESOURCE), and the CapEff read inside is exactly
#   what `service spec` said; a capability the host cannot grant is refused before runc starts.
source "$(dirname "$0")/lib.sh"
RUNC=$(command -v runc || echo /usr/sbin/runc)
BUSYBOX=$(command -v busybox || echo /bin/busybox)
CAPS_H=/usr/include/linux/capability.h
if [ "$(id -u)" != 0 ]; then
  t_skip "service sandbox" "not root: runc needs root to create containers"; t_done; exit 0
fi
for tool in "$RUNC" "$BUSYBOX" umoci cc setpriv python3; do
  if ! command -v "$tool" >/dev/null; then
    t_skip "service sandbox" "$tool is missing (scripts/install-deps.sh installs it)"; t_done; exit 0
  fi
done
svc_uid=$(awk -F: '$1 == "ocibuild-svc" {print $2; exit}' /etc/subuid)
if [ -z "$svc_uid" ]; then
  t_fail "ocibuild-svc has a subordinate id range" "run scripts/install-deps.sh"; t_done; exit 1
fi

# The data dir as a build or a package leaves it (0755, like /var/lib/ocibuild after
# `ocibuild build`); T_TMP searchable like /var/lib.
chmod 711 "$T_TMP"
D=$T_TMP/data L=$T_TMP/layout U=$T_TMP/unpacked
mkdir -m 0755 "$D"
P=sb$$
DEP=$P-deploy
t_cleanup "$OCIBUILD service down $T_TMP/d.yaml --data-dir $D --grace 0"
t_cleanup "for id in \$($RUNC list -q 2>/dev/null); do $RUNC state \$id 2>/dev/null | grep -q '\"bundle\": \"$D/' && $RUNC delete --force \$id; done"
t_cleanup "grep -o ' $T_TMP/[^ ]*' /proc/self/mountinfo | sort -r | xargs -r -n1 umount -l"

# The program a hostile image carries: prints the effective uid it runs with.
printf '#include <stdio.h>\n#include <unistd.h>\nint main(void) { printf("euid=%%d\\n", (int)geteuid()); return 0; }\n' >"$T_TMP/euid.c"
if ! cc -static -O -o "$T_TMP/euid" "$T_TMP/euid.c" 2>"$T_TMP/cc.err"; then
  t_fail "cc builds the probe program" "$(cat "$T_TMP/cc.err")"; t_done; exit 1
fi
if ! { umoci init --layout "$L" && umoci new --image "$L:1" && umoci unpack --image "$L:1" "$U" &&
       mkdir -p "$U/rootfs/bin" "$U/rootfs/home/app" && cp "$BUSYBOX" "$U/rootfs/bin/busybox" &&
       for c in sh cat cp chmod grep stat sleep ls readlink; do ln -s busybox "$U/rootfs/bin/$c"; done &&
       cp "$T_TMP/euid" "$U/rootfs/bin/euid" && echo app >"$U/rootfs/home/app/file" &&
       chown -R 1000:1000 "$U/rootfs/home/app" && umoci repack --image "$L:1" "$U"; } >"$T_TMP/umoci.log" 2>&1; then
  t_fail "umoci builds the image" "$(cat "$T_TMP/umoci.log")"; t_done; exit 1
fi

cat >"$T_TMP/d.yaml" <<YAML
version: v1
deployment: $DEP
services:
  $P-planter:
    rtype: job
    image: { name: "oci:$L:1" }
    command:
      entrypoint: [/bin/sh, -c]
      args:
        - >-
          cp /bin/euid /loot/euid && chmod 4755 /loot/euid && echo PLANTED;
          grep " /loot " /proc/mounts;
          echo "UIDMAP=\$(cat /proc/self/uid_map)";
          echo "OWNER=\$(stat -c %u:%g /home/app/file)"
    storage: [ { type: named, name: loot, target: /loot } ]
  $P-hostnet:
    rtype: job
    image: { name: "oci:$L:1" }
    host_network: true
    command:
      entrypoint: [/bin/sh, -c]
      args:
        - >-
          echo "UIDMAP=\$(cat /proc/self/uid_map)"; echo "NETNS=\$(readlink /proc/self/ns/net)";
          grep " /sys " /proc/mounts
  $P-priv:
    rtype: job
    image: { name: "oci:$L:1" }
    privileged: true
    host_network: true
    command: { entrypoint: [/bin/sh, -c, "grep CapEff /proc/self/status; echo \"NETNS=\$(readlink /proc/self/ns/net)\""] }
YAML
svc() { $OCIBUILD service "$@" --data-dir "$D"; }
wait_stopped() { # SERVICE
  for _ in $(seq 100); do
    [[ "$(svc ps "$T_TMP/d.yaml" "$1" 2>/dev/null)" == *stopped* ]] && return 0; sleep 0.1
  done
  return 1
}

out=$(timeout 120 $OCIBUILD service up "$T_TMP/d.yaml" --data-dir "$D" 2>&1); rc=$?
[ $rc -eq 0 ] && t_ok "up starts the replicas (a privileged one with host networking too)" ||
  t_fail "up starts the replicas (a privileged one with host networking too)" "$out"
for s in planter hostnet priv; do wait_stopped "$P-$s" || t_fail "$P-$s finishes" "$(svc ps "$T_TMP/d.yaml" 2>&1)"; done
planter=$(svc logs "$T_TMP/d.yaml" $P-planter --replica 1 2>&1)
hostnet=$(svc logs "$T_TMP/d.yaml" $P-hostnet --replica 1 2>&1)
priv=$(svc logs "$T_TMP/d.yaml" $P-priv --replica 1 2>&1)

# ---- the attack: a set-uid program planted in a volume ----
t_contains "the replica planted its program" "$planter" "PLANTED"
loot=$D/volumes/$DEP/loot/euid
owner=$(stat -c '%u %a' "$loot" 2>&1)
[ "$owner" = "$svc_uid 4755" ] && t_ok "on the host the planted file is set-uid to the range's root ($svc_uid), not to root" ||
  t_fail "on the host the planted file is set-uid to the range's root ($svc_uid), not to root" "owner and mode: $owner"
# As nobody with no capability left (setpriv itself still holds root's for its own execve,
# so a shell it starts does the lookup).
nobody() { setpriv --reuid=65534 --regid=65534 --clear-groups -- /bin/sh -c '"$0"' "$1" 2>&1; }
as_nobody=$(nobody "$loot"); rc=$?
[ $rc -ne 0 ] && [[ "$as_nobody" != *euid=* ]] && t_ok "an unprivileged host user cannot reach the volume" ||
  t_fail "an unprivileged host user cannot reach the volume" "ran it: $as_nobody"
mkdir -m 0755 "$T_TMP/pub" && cp -p "$loot" "$T_TMP/pub/euid"
copied=$(nobody "$T_TMP/pub/euid")
[ "$copied" = "euid=$svc_uid" ] && t_ok "copied out, it runs as the range's root, never as root" ||
  t_fail "copied out, it runs as the range's root, never as root" "$copied"
line=$(grep " /loot " <<<"$planter")
[[ "$line" == *nosuid* ]] && [[ "$line" == *nodev* ]] && t_ok "the volume is mounted nosuid,nodev in the replica" ||
  t_fail "the volume is mounted nosuid,nodev in the replica" "$planter"
modes=$(stat -c '%a' "$D" "$D/volumes" "$D/volumes/$DEP" "$D/services" 2>&1 | tr '\n' ' ')
[ "$modes" = "711 700 700 710 " ] && t_ok "data dir 0711, volumes 0700, services 0710 (the range's group)" ||
  t_fail "data dir 0711, volumes 0700, services 0710 (the range's group)" "$modes"

# ---- user namespaces ----
read -r _ host _ <<<"$(grep UIDMAP= <<<"$planter" | cut -d= -f2)"
[ "$host" = "$svc_uid" ] && t_ok "the replica's root is host uid $svc_uid, not root" ||
  t_fail "the replica's root is host uid $svc_uid, not root" "$planter"
t_contains "image files keep their image ownership inside" "$planter" "OWNER=1000:1000"
read -r _ host _ <<<"$(grep UIDMAP= <<<"$hostnet" | cut -d= -f2)"
host_netns=$(readlink /proc/self/ns/net)
[ "$host" = "$svc_uid" ] && [[ "$hostnet" == *"NETNS=$host_netns"* ]] &&
  t_ok "a host_network replica shares the host's network from a user namespace" ||
  t_fail "a host_network replica shares the host's network from a user namespace" "$hostnet (host: $host_netns)"
sys=$(grep " /sys " <<<"$hostnet")
[[ "$sys" == *" ro,"* ]] && t_ok "... with the host's /sys read-only" || t_fail "... with the host's /sys read-only" "$hostnet"

# ---- capabilities: privileged gets exactly what the host can grant ----
spec_caps=$($OCIBUILD service spec "$T_TMP/d.yaml" $P-priv --data-dir "$D" 2>"$T_TMP/spec.err" |
  python3 -c 'import json, sys; print(" ".join(json.load(sys.stdin)["process"]["capabilities"]["effective"]))')
spec_mask=$(python3 - "$CAPS_H" $spec_caps <<'PY'
import re, sys
numbers = dict(re.findall(r"#define\s+(CAP_[A-Z_]+)\s+(\d+)\s*$", open(sys.argv[1]).read(), re.M))
print("%016x" % sum(1 << int(numbers[name]) for name in sys.argv[2:]))
PY
)
bnd=$(awk '/^CapBnd:/ {print $2}' /proc/self/status)
effective=$(awk '/^CapEff:/ {print $2}' <<<"$priv")
[ -n "$effective" ] && [ "$effective" = "$spec_mask" ] &&
  t_ok "the privileged replica's CapEff ($effective) is what service spec said" ||
  t_fail "the privileged replica's CapEff ($effective) is what service spec said" "spec: $spec_caps ($spec_mask) $(cat "$T_TMP/spec.err"); log: $priv"
[ "$spec_mask" = "$bnd" ] && t_ok "privileged is this host's bounding set ($bnd), every capability of it" ||
  t_fail "privileged is this host's bounding set ($bnd), every capability of it" "spec: $spec_mask"
t_contains "the privileged replica uses the host's network" "$priv" "NETNS=$host_netns"

# A capability the host cannot grant, named in the document: refused before runc starts.
missing=$(python3 - "$CAPS_H" "$bnd" <<'PY'
import re, sys
numbers = dict(re.findall(r"#define\s+(CAP_[A-Z_]+)\s+(\d+)\s*$", open(sys.argv[1]).read(), re.M))
bnd = int(sys.argv[2], 16)
print(next((n for n, v in sorted(numbers.items(), key=lambda kv: int(kv[1]))
            if int(v) <= 40 and not bnd >> int(v) & 1), ""))
PY
)
cat >"$T_TMP/refused.yaml" <<YAML
version: v1
deployment: $P-refused
services:
  $P-wants:
    image: { name: "oci:$L:1" }
    capabilities: [${missing:-CAP_KILL}]
    command: { entrypoint: [/bin/sh, -c, "exit 0"] }
YAML
out=$(timeout 60 $OCIBUILD service up "$T_TMP/refused.yaml" --data-dir "$D" 2>&1); rc=$?
if [ -n "$missing" ]; then
  [ $rc -ne 0 ] && [[ "$out" == *"services.$P-wants.capabilities: $missing is not in this host's capability bounding set"* ]] &&
    t_ok "an explicit $missing the host cannot grant is refused, named" ||
    t_fail "an explicit $missing the host cannot grant is refused, named" "$out"
  [[ "$out" != *runc* ]] && ! "$RUNC" state "$P-wants-rep-1" >/dev/null 2>&1 && [ ! -e "$D/services/$P-refused/$P-wants-rep-1" ] &&
    t_ok "... before runc starts, leaving nothing behind" || t_fail "... before runc starts, leaving nothing behind" "$out"
else # this host grants every capability: the same document must start
  [ $rc -eq 0 ] && t_ok "every capability is grantable here: an explicit list starts" ||
    t_fail "every capability is grantable here: an explicit list starts" "$out"
  $OCIBUILD service down "$T_TMP/refused.yaml" --data-dir "$D" --grace 0 >/dev/null 2>&1
fi

out=$(timeout 120 $OCIBUILD service down "$T_TMP/d.yaml" --data-dir "$D" --grace 0 2>&1) &&
  t_ok "down removes the replicas" || t_fail "down removes the replicas" "$out"
mounts=$(grep -F " $T_TMP/" /proc/self/mountinfo)
[ -z "$mounts" ] && t_ok "no mount is left (overlays, idmapped lower layers)" || t_fail "no mount is left (overlays, idmapped lower layers)" "$mounts"
t_done
