#!/bin/bash
# The static checks of scripts/lint.sh as tests: first that each tool is given every file git
# tracks for it, then one TAP line per tool (clang-format over every .c/.h, cppcheck and
# clang-tidy over the .c files of src/), failing with the tool's findings. A tool that is not
# installed is a loud skip (scripts/install-deps.sh installs all three, and git).
source "$(dirname "$0")/lib.sh"
root=$(cd "$E2E_DIR/../.." && pwd)

# Lint sees every file git tracks for each tool's globs (all .c/.h for clang-format, the .c
# files of src/ for cppcheck and clang-tidy): a filter on '*/build*/*' once dropped src/build/
# along with meson's output dirs, and nobody noticed.
lint_covers() { # $1 = tool, $2... = git pathspecs of the files it must check
  local tool=$1 listed missing
  shift
  listed=$("$root/scripts/lint.sh" --list | sed -n "s/^$tool //p" | sort -u)
  missing=$(cd "$root" && git ls-files -- "$@" | while IFS= read -r f; do
    [ -e "$f" ] && echo "$f"; done | sort -u | comm -23 - <(printf '%s\n' "$listed"))
  if [ -z "$listed" ]; then
    t_fail "lint's $tool checks every file git lists" "scripts/lint.sh --list gave no files"
  elif [ -n "$missing" ]; then
    t_fail "lint's $tool checks every file git lists" "missing from lint:
$missing"
  else
    t_ok "lint's $tool checks every file git lists ($(wc -l <<<"$listed") files)"
  fi
}
if ! command -v git >/dev/null || ! git -C "$root" rev-parse --is-inside-work-tree >/dev/null 2>&1; then
  t_skip "lint checks every file git lists" "not a git checkout, or git is not installed"
else
  lint_covers clang-format '*.c' '*.h'
  lint_covers cppcheck 'src/*.c'
  lint_covers clang-tidy 'src/*.c'
fi

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
