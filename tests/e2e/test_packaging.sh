#!/bin/bash
# Packaging (issue 19 item 6): a release build (-O3, NDEBUG; -Werror as every build type)
# configures and compiles without a warning, `meson install` into a DESTDIR puts the binary,
# the rpc module, a man page per command, the bash completion and the systemd units where a
# distribution expects them, and the installed files work: the binary runs, loads the installed
# rpc module, the man pages render, the completion completes, the units verify.
# Builds into its own temp dirs (tests and benchmarks off), with gcc and, compiled only, clang.
source "$(dirname "$0")/lib.sh"
SRC=$(cd "$(dirname "$0")/../.." && pwd)

for tool in meson ninja; do
  command -v $tool >/dev/null || { t_skip "release build" "$tool is not installed"; t_done; exit; }
done

BUILD="$T_TMP/build"
DEST="$T_TMP/dest"
if ! out=$(meson setup "$BUILD" "$SRC" --buildtype=release --prefix=/usr -Dtests=false \
    -Dbench=false -Dman=enabled 2>&1); then
  t_fail "release build configures" "$out"
  t_done; exit
fi
t_ok "release build configures"
if out=$(ninja -C "$BUILD" 2>&1); then
  t_ok "release build compiles (-Werror)"
else
  t_fail "release build compiles (-Werror)" "$(grep -E 'error|warning' <<<"$out" | head -20)"
  t_done; exit
fi
# -Werror turns every warning into an error; say so if that ever changes
grep -q -- '-Werror' "$BUILD/compile_commands.json" && t_ok "release flags include -Werror" ||
  t_fail "release flags include -Werror"
grep -q -- '-O3' "$BUILD/compile_commands.json" && grep -q -- '-DNDEBUG' "$BUILD/compile_commands.json" &&
  t_ok "release flags are -O3 -DNDEBUG" || t_fail "release flags are -O3 -DNDEBUG"

# the same with clang, compiled only (warnings differ between the two compilers)
if command -v clang >/dev/null; then
  if out=$(CC=clang meson setup "$T_TMP/build-clang" "$SRC" --buildtype=release -Dtests=false \
      -Dbench=false -Dman=disabled 2>&1) && out=$(ninja -C "$T_TMP/build-clang" 2>&1); then
    t_ok "release build with clang compiles (-Werror)"
  else
    t_fail "release build with clang compiles (-Werror)" "$(grep -E 'error|warning' <<<"$out" | head -20)"
  fi
else
  t_skip "release build with clang compiles" "clang is not installed"
fi

if ! out=$(DESTDIR="$DEST" meson install -C "$BUILD" --no-rebuild 2>&1); then
  t_fail "meson install into DESTDIR" "$out"
  t_done; exit
fi
t_ok "meson install into DESTDIR"

libdir=$(meson introspect "$BUILD" --buildoptions | python3 -c \
  'import json,sys; print(next(o["value"] for o in json.load(sys.stdin) if o["name"]=="libdir"))')
expected=(
  usr/bin/ocibuild
  "usr/$libdir/ocibuild/ocibuild-rpc.so"
  usr/share/bash-completion/completions/ocibuild
  usr/lib/systemd/system/ocibuild.service
  usr/lib/systemd/system/ocibuild.socket
)
for page in ocibuild ocibuild-build ocibuild-spec ocibuild-store ocibuild-hash ocibuild-nix-build \
    ocibuild-nar-hash ocibuild-show-derivation ocibuild-service ocibuild-daemon \
    ocibuild-remote-builder; do
  expected+=("usr/share/man/man1/$page.1")
done
missing=""
for f in "${expected[@]}"; do [ -s "$DEST/$f" ] || missing="$missing $f"; done
[ -z "$missing" ] && t_ok "every file is installed (${#expected[@]})" || t_fail "every file is installed" "missing:$missing"

# every command of `ocibuild --help` has its man page
commands=$("$DEST/usr/bin/ocibuild" --help | awk '/^  [a-z]/ {print $1}')
nopage=""
for c in $commands; do [ -s "$DEST/usr/share/man/man1/ocibuild-$c.1" ] || nopage="$nopage $c"; done
[ -n "$commands" ] && [ -z "$nopage" ] && t_ok "a man page per command" || t_fail "a man page per command" "none for:$nopage"

echo hello >"$T_TMP/f"
t_check "the installed binary runs" sh -c "'$DEST/usr/bin/ocibuild' hash '$T_TMP/f' | grep -q '$T_TMP/f'"
# the daemon loads the installed module (its compiled-in path is /usr/..., so point at it)
sock="$T_TMP/d.sock"
OCIBUILD_RPC_MODULE="$DEST/usr/$libdir/ocibuild/ocibuild-rpc.so" OCIBUILD_DATA_DIR="$T_TMP/data" \
  "$DEST/usr/bin/ocibuild" daemon --listen "unix:$sock" --build-service dummy:// \
  >"$T_TMP/daemon.log" 2>&1 &
daemon=$!
t_cleanup "kill $daemon"
for _ in $(seq 1 100); do [ -S "$sock" ] && break; sleep 0.05; done
[ -S "$sock" ] && t_ok "the installed daemon loads the installed rpc module and listens" ||
  t_fail "the installed daemon loads the installed rpc module and listens" "$(cat "$T_TMP/daemon.log")"
kill "$daemon" 2>/dev/null; wait "$daemon" 2>/dev/null

if command -v man >/dev/null; then
  out=$(MANWIDTH=80 man -l "$DEST/usr/share/man/man1/ocibuild-store.1" 2>&1)
  t_contains "the man pages render" "$out" "garbage-collect"
else
  t_skip "the man pages render" "man is not installed"
fi

if [ -r /usr/share/bash-completion/bash_completion ]; then
  complete_line() { # LINE: what bash offers at the end of LINE
    bash -c 'source /usr/share/bash-completion/bash_completion; source "$1"
      COMP_LINE=$2; COMP_POINT=${#2}; read -ra COMP_WORDS <<<"$2"
      [[ $2 == *" " ]] && COMP_WORDS+=("")
      COMP_CWORD=$((${#COMP_WORDS[@]} - 1)); _ocibuild; echo "${COMPREPLY[*]}"' _ \
      "$DEST/usr/share/bash-completion/completions/ocibuild" "$1" 2>&1
  }
  out=$(complete_line "ocibuild store g")
  [ "$out" = gc ] && t_ok "bash completes store subcommands" || t_fail "bash completes store subcommands" "$out"
  out=$(complete_line "ocibuild build --ro")
  [[ " $out " == *" --root "* && " $out " == *" --rootless "* ]] && t_ok "bash completes build options" ||
    t_fail "bash completes build options" "$out"
else
  t_skip "bash completion works" "bash-completion is not installed"
fi

unit_dir="$DEST/usr/lib/systemd/system"
t_contains "the service runs the installed binary" "$(cat "$unit_dir/ocibuild.service")" \
  "ExecStart=/usr/bin/ocibuild daemon"
for key in ProtectSystem=strict ProtectHome=yes NoNewPrivileges=yes PrivateTmp=yes; do
  grep -qx "$key" "$unit_dir/ocibuild.service" && t_ok "the service is hardened: $key" ||
    t_fail "the service is hardened: $key"
done
if command -v systemd-analyze >/dev/null; then
  # the binary is not at /usr/bin on this host: that one complaint is expected
  out=$(systemd-analyze verify --man=no "$unit_dir/ocibuild.socket" "$unit_dir/ocibuild.service" 2>&1 |
    grep -v "is not executable")
  [ -z "$out" ] && t_ok "systemd-analyze verifies the units" || t_fail "systemd-analyze verifies the units" "$out"
else
  t_skip "systemd-analyze verifies the units" "systemd-analyze is not installed"
fi
t_done
