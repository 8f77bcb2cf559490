#!/bin/bash
# The fan-out bench: N independent leaves (default 20) and one join that reads them all, built by
# `ocibuild nix-build -j 2` and `nix-build --max-jobs 2` in the same run (see nix_chain.sh).
exec "$(dirname "$0")/nix_chain.sh" "${1:-20}" fanout
