#!/bin/sh
# The main job on the embedded defaults: installs dependencies, builds ocibuild, and runs the
# example build (examples/hello.json) with runc and the local store under the data dir
# (/var/lib/ocibuild as root). Prints the Build, then the output it produced.
set -eu
cd "$(dirname "$0")/.."
scripts/install-deps.sh
scripts/build.sh release
build=$(./build/ocibuild build examples/hello.json)
echo "$build"
node=$(printf '%s' "$build" | python3 -c 'import json,sys; print(json.dumps(json.load(sys.stdin)["outputs"][0]))')
out=$(mktemp -d)
trap 'chmod -R u+w "$out"; rm -rf "$out"' EXIT
printf '%s' "$node" | ./build/ocibuild store export - "$out/hello"
echo "--- $out/hello/greeting:"
cat "$out/hello/greeting"
