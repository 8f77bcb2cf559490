#!/bin/sh
# Configures (once) and builds ocibuild into build/ (and build-asan/ with "asan").
set -eu
cd "$(dirname "$0")/.."
variant=${1:-release}
case "$variant" in
  release) dir=build; opts="--buildtype=debugoptimized" ;;
  asan) dir=build-asan; opts="--buildtype=debug -Db_sanitize=address,undefined -Db_lundef=false" ;;
  *) echo "usage: scripts/build.sh [release|asan]" >&2; exit 2 ;;
esac
[ -f "$dir/build.ninja" ] || meson setup "$dir" $opts >/dev/null
ninja -C "$dir" >/dev/null
