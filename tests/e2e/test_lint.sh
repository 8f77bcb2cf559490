#!/bin/bash
# The static checks of scripts/lint.sh as tests: one TAP line per tool (clang-format over every
# .c/.h, cppcheck and clang-tidy over src/), failing with the tool's findings. A tool that is
# not installed is a loud skip (scripts/install-deps.sh installs all three).
source "$(dirname "$0")/lib.sh"
root=$(cd "$E2E_DIR/../.." && pwd)

for tool in clang-format cppcheck clang-tidy; do
  if ! command -v "$tool" >/dev/null; then
    t_skip "$tool finds nothing" "$tool is not installed (Debian package $tool)"
    continue
  fi
  if out=$("$root/scripts/lint.sh" "$tool" 2>&1); then
    t_ok "$tool finds nothing ($(tail -1 <<<"$out" | sed 's/.*(\(.*\))/\1/'))"
  else
    t_fail "$tool finds nothing" "$(head -60 <<<"$out")"
  fi
done
t_done
