#!/bin/bash
# Packaging (issue 19 item 6): a release build (-O3, NDEBUG; -Werror as every build type)
# configures and compiles without a warning, `meson install` into a DESTDIR puts the binary,
# the rpc module, a man page per command, bash, zsh and fish completions and the systemd units
# where a distribution expects them, and the installed files work: the binary runs, loads the
# installed rpc module, the man pages render, each completion parses, offers every command and
# subcommand and completes, the units verify.
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
  "usr/$libdir/ocibuild/ocibuild-rpc-h2.so"
  usr/share/bash-completion/completions/ocibuild
  usr/share/zsh/vendor-completions/_ocibuild
  usr/share/fish/vendor_completions.d/ocibuild.fish
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

# Every command of `ocibuild --help` and every subcommand of store and service, as each
# shell's completion offers them after "ocibuild ", "ocibuild store " and "ocibuild service ".
subcommands_of() { "$DEST/usr/bin/ocibuild" "$1" --help | awk '/^  [a-z]/ {print $1}' | sort -u; }
store_commands=$(subcommands_of store)
service_commands=$(subcommands_of service)
offers_every_command() { # SHELL COMPLETE_FN: t_ok/t_fail on what COMPLETE_FN LINE offers
  local lacking="" line words offered w
  for line in "ocibuild " "ocibuild store " "ocibuild service "; do
    case $line in
      *store*) words=$store_commands ;;
      *service*) words=$service_commands ;;
      *) words=$commands ;;
    esac
    offered=" $("$2" "$line" | tr '\n\t:' '   ') "
    for w in $words; do [[ $offered == *" $w "* ]] || lacking="$lacking '$line$w'"; done
  done
  [ -n "$store_commands" ] && [ -n "$service_commands" ] && [ -z "$lacking" ] &&
    t_ok "$1 offers every command and every store and service subcommand" ||
    t_fail "$1 offers every command and every store and service subcommand" "missing:$lacking"
}
if [ -r /usr/share/bash-completion/bash_completion ]; then
  offers_every_command bash complete_line
fi
if command -v zsh >/dev/null; then
  zsh_f="$DEST/usr/share/zsh/vendor-completions/_ocibuild"
  zsh_complete() { # LINE: what the completion function offers at its end (compadd/_describe stubbed)
    zsh -f -c 'compadd() { print -r -- "$@" }; _describe() { print -r -- ${(P)@[-1]} }
      _files() { print FILES }; words=(${=1}); [[ $1 == *" " ]] && words+=("")
      CURRENT=$#words; PREFIX=$words[-1]; source "$2"' _ "$1" "$zsh_f" 2>&1
  }
  out=$(zsh -n "$zsh_f" 2>&1) && t_ok "zsh -n parses _ocibuild" || t_fail "zsh -n parses _ocibuild" "$out"
  offers_every_command zsh zsh_complete
  out=$(zsh_complete "ocibuild store g")
  [[ $out == *"gc:"* && $out == *"mount:"* ]] && t_ok "zsh offers the store subcommands" ||
    t_fail "zsh offers the store subcommands" "$out"
  out=$(zsh_complete "ocibuild daemon --t")
  [[ " $out " == *" --trusted-user "* ]] && t_ok "zsh offers daemon options" || t_fail "zsh offers daemon options" "$out"
else
  t_skip "zsh completion works" "zsh is not installed (scripts/install-deps.sh installs it)"
fi
if command -v fish >/dev/null; then
  fish_f="$DEST/usr/share/fish/vendor_completions.d/ocibuild.fish"
  fish_complete() { fish --no-config -c 'source $argv[1]; complete -C $argv[2]' "$fish_f" "$1" 2>&1; }
  out=$(fish -n "$fish_f" 2>&1) && t_ok "fish -n parses ocibuild.fish" || t_fail "fish -n parses ocibuild.fish" "$out"
  offers_every_command fish fish_complete
  out=$(fish_complete "ocibuild store g")
  [ "$(cut -f1 <<<"$out")" = gc ] && t_ok "fish completes store subcommands" ||
    t_fail "fish completes store subcommands" "$out"
  out=$(fish_complete "ocibuild build --ro")
  [ "$(tr '\n' ' ' <<<"$out")" = "--root --rootful --rootless " ] && t_ok "fish completes build options" ||
    t_fail "fish completes build options" "$out"
else
  t_skip "fish completion works" "fish is not installed (scripts/install-deps.sh installs it)"
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
