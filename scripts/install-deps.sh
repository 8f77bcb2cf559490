#!/bin/sh
# Installs every Debian 12 package ocibuild needs to build, test and benchmark, and the system
# user `ocibuild` whose subordinate id range rootful builds run as (docs/security.md "Build
# identity"). Idempotent and quick when everything is already there. Run as root (or via sudo).
set -eu
PACKAGES="build-essential meson ninja-build pkg-config
  libjansson-dev libyaml-dev libsqlite3-dev libprotobuf-c-dev protobuf-c-compiler
  libgrpc-dev libnghttp2-dev libfuse3-dev libarchive-dev libcmocka-dev libssl-dev openssl
  libseccomp-dev
  runc crun uidmap iproute2 slirp4netns tini busybox-static bash-static b3sum nix-bin
  python3 python3-jsonschema python3-grpcio python3-grpc-tools
  umoci skopeo docker-registry apache2-utils libcurl4-openssl-dev
  valgrind hyperfine openssh-server haproxy fuse3
  clang libclang-rt-14-dev
  clang-format clang-tidy cppcheck git
  scdoc man-db bash-completion zsh fish"
SUDO=""
[ "$(id -u)" -eq 0 ] || SUDO="sudo"

missing=""
for p in $PACKAGES; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing="$missing $p"
done
if [ -n "$missing" ]; then
  echo "install-deps: installing:$missing" >&2
  export DEBIAN_FRONTEND=noninteractive
  $SUDO apt-get update -qq
  # shellcheck disable=SC2086
  $SUDO apt-get install -y -qq --no-install-recommends $missing >/dev/null
fi

# The ocibuild user: no home, no shell, no password; it owns nothing but its subordinate ids,
# 64 slots of 65536 (include/ocibuild/id_slot.h), from 0x70000000 (just above the container
# ranges systemd hands out) unless ids there are taken: then from the end of the highest range
# /etc/subuid or /etc/subgid already holds.
ID_COUNT=$((64 * 65536))
if ! getent passwd ocibuild >/dev/null; then
  echo "install-deps: adding the system user ocibuild" >&2
  $SUDO useradd --system --user-group --no-create-home --home-dir /nonexistent \
    --shell /usr/sbin/nologin --comment "ocibuild build ids" ocibuild
fi
for f in /etc/subuid /etc/subgid; do [ -e "$f" ] || $SUDO touch "$f"; done
if ! grep -q '^ocibuild:' /etc/subuid || ! grep -q '^ocibuild:' /etc/subgid; then
  start=$(cat /etc/subuid /etc/subgid | awk -F: -v want=$((0x70000000)) -v count="$ID_COUNT" '
    NF == 3 && $1 != "ocibuild" && $2 ~ /^[0-9]+$/ && $3 ~ /^[0-9]+$/ {
      lo[NR] = $2; hi[NR] = $2 + $3 }
    END {
      start = want
      for (again = 1; again;) {
        again = 0
        for (i in lo) if (lo[i] < start + count && hi[i] > start) {
          start = int((hi[i] + 65535) / 65536) * 65536; again = 1 }
      }
      print start }')
  end=$((start + ID_COUNT - 1))
  echo "install-deps: giving ocibuild the ids $start-$end" >&2
  grep -q '^ocibuild:' /etc/subuid || $SUDO usermod --add-subuids "$start-$end" ocibuild
  grep -q '^ocibuild:' /etc/subgid || $SUDO usermod --add-subgids "$start-$end" ocibuild
fi

# Service replicas run in a user namespace whose host ids belong to the system user ocibuild-svc
# alone (docs/service.md, "User namespaces"): 65536 ids from /etc/subuid and /etc/subgid, placed
# after every range already listed in either file, so no login user's, build's or other tool's
# ids are shared. Made once; later runs find the entries and change nothing.
SERVICE_USER=ocibuild-svc
SERVICE_IDS=65536
if ! getent passwd "$SERVICE_USER" >/dev/null; then
  $SUDO useradd --system --no-create-home --home-dir /nonexistent --shell /usr/sbin/nologin \
    --user-group "$SERVICE_USER"
fi
if ! grep -q "^$SERVICE_USER:" /etc/subuid 2>/dev/null || ! grep -q "^$SERVICE_USER:" /etc/subgid 2>/dev/null; then
  $SUDO sed -i "/^$SERVICE_USER:/d" /etc/subuid /etc/subgid 2>/dev/null || true
  start=$(cat /etc/subuid /etc/subgid 2>/dev/null |
    awk -F: 'BEGIN { end = 100000 } NF == 3 && $2 + $3 > end { end = $2 + $3 } END { print end }')
  $SUDO usermod --add-subuids "$start-$((start + SERVICE_IDS - 1))" \
    --add-subgids "$start-$((start + SERVICE_IDS - 1))" "$SERVICE_USER"
  echo "install-deps: $SERVICE_USER owns host ids $start-$((start + SERVICE_IDS - 1))" >&2
fi

# FUSE (ocibuild store mount, FUSE build inputs: docs/build.md "Inputs over FUSE"). fusermount3
# comes with fuse3 (above) and opens /dev/fuse as the calling user. udev makes the device 0666
# (systemd's default rules); a machine without udev keeps the kernel's 0600, so that nobody but
# root can mount: set what udev would.
if [ -c /dev/fuse ] && [ "$(stat -c %a /dev/fuse)" != 666 ]; then
  echo "install-deps: /dev/fuse mode 0666, as udev sets it" >&2
  $SUDO chmod 0666 /dev/fuse
fi
# Rootless builds with FUSE inputs mount with allow_other (the container's ids are other users
# to the mount), which fusermount3 grants a user other than root only with this line. It lets
# every user mount with allow_other, no more: other users still meet the mount's modes and the
# directories above it (a build's is in its 0700 bundle; docs/security.md "Inputs over FUSE").
if [ -f /etc/fuse.conf ] && ! grep -qx user_allow_other /etc/fuse.conf; then
  echo "install-deps: user_allow_other in /etc/fuse.conf (rootless FUSE inputs)" >&2
  echo user_allow_other | $SUDO tee -a /etc/fuse.conf >/dev/null
fi
# slirp4netns gives a rootless deployment its outbound network and published ports
# (docs/service.md, "Rootless services") and opens /dev/net/tun as the user: udev makes it 0666,
# a machine without udev keeps 0600. Set what udev would.
if [ -c /dev/net/tun ] && [ "$(stat -c %a /dev/net/tun)" != 666 ]; then
  echo "install-deps: /dev/net/tun mode 0666, as udev sets it" >&2
  $SUDO chmod 0666 /dev/net/tun
fi
