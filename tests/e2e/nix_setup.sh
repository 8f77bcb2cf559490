#!/bin/bash
# Prepares Nix (Debian's nix-bin) for the e2e tests, idempotently: the nixbld group with build
# users nixbld1..8 that the sandboxed builder runs as, and /etc/nix/nix.conf with
# build-users-group = nixbld, sandbox = true and no substituters. Only keys that are missing are
# appended; an existing config is never rewritten (the tests also pass --option sandbox true
# --option substituters "" on the command line, so a different local choice does not matter).
# Needs root; exits 0 when everything is ready, 1 (with a reason on stderr) otherwise.
set -u
NIX_BUILD_USERS=${NIX_BUILD_USERS:-8}

fail() { echo "nix_setup: $*" >&2; exit 1; }

command -v nix-store >/dev/null 2>&1 || fail "nix-store not found (apt-get install nix-bin)"
ready() {
  getent group nixbld >/dev/null && getent passwd nixbld1 >/dev/null &&
    [ -f /etc/nix/nix.conf ] && grep -Eq '^[[:space:]]*build-users-group[[:space:]]*=' /etc/nix/nix.conf &&
    [ -d /nix/store ]
}
ready && exit 0
[ "$(id -u)" -eq 0 ] || fail "not root: cannot create the nixbld group and users or /etc/nix/nix.conf"

if ! getent group nixbld >/dev/null; then
  groupadd --system nixbld || fail "groupadd nixbld failed"
fi
for i in $(seq 1 "$NIX_BUILD_USERS"); do
  getent passwd "nixbld$i" >/dev/null && continue
  useradd --system --no-create-home --home-dir /var/empty --shell /usr/sbin/nologin \
    --gid nixbld --groups nixbld --comment "Nix build user $i" "nixbld$i" ||
    fail "useradd nixbld$i failed"
done

mkdir -p /etc/nix
touch /etc/nix/nix.conf
set_default() { # KEY VALUE: appended only when KEY is not configured yet
  grep -Eq "^[[:space:]]*$1[[:space:]]*=" /etc/nix/nix.conf && return 0
  printf '%s = %s\n' "$1" "$2" >>/etc/nix/nix.conf
}
set_default build-users-group nixbld
set_default sandbox true
set_default substituters ""

# The store and its database are created on first use; do it now so failures show up here.
nix-store --init 2>/dev/null || true
nix-store -q --hash /dev/null >/dev/null 2>&1 || true
mkdir -p /nix/store
ready || fail "setup incomplete"
