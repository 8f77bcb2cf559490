#!/bin/sh
# The main job on the embedded defaults: installs dependencies, builds, and runs ocibuild.
set -eu
cd "$(dirname "$0")/.."
scripts/install-deps.sh
scripts/build.sh release
./build/ocibuild hash README.md
