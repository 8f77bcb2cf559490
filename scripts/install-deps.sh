#!/bin/sh
# Installs every Debian 12 package ocibuild needs to build, test and benchmark. Idempotent and
# quick when everything is already there. Run as root (or via sudo).
set -eu
PACKAGES="build-essential meson ninja-build pkg-config
  libjansson-dev libyaml-dev libsqlite3-dev libprotobuf-c-dev protobuf-c-compiler
  libgrpc-dev libfuse3-dev libarchive-dev libcmocka-dev libssl-dev openssl
  runc crun uidmap busybox-static bash-static b3sum nix-bin
  python3 python3-jsonschema python3-grpcio python3-grpc-tools
  umoci skopeo valgrind hyperfine
  clang libclang-rt-14-dev
  clang-format clang-tidy cppcheck"
missing=""
for p in $PACKAGES; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing="$missing $p"
done
[ -z "$missing" ] && exit 0
SUDO=""
[ "$(id -u)" -eq 0 ] || SUDO="sudo"
echo "install-deps: installing:$missing" >&2
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
# shellcheck disable=SC2086
$SUDO apt-get install -y -qq --no-install-recommends $missing >/dev/null
