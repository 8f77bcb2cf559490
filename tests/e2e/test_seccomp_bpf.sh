#!/bin/bash
# crun builds carry their syscall filter compiled (config.json's run.oci.seccomp_bpf_data,
# include/ocibuild/seccomp_bpf.h), and it is the filter of linux.seccomp:
# - the sandbox probe (sandbox_probe.c: chmod setuid/setgid, setxattr, the keyring, unshare,
#   clone into a user namespace, setns, bpf, io_uring, clone3) meets the errnos
#   test_sandbox_identity.sh expects, under the annotation;
# - the same bundle without the annotation (crun compiling linux.seccomp itself) gives the same
#   probe output, and crun's own compilation is the annotation's program byte for byte;
# - linux.seccomp stays in config.json; runc builds get no annotation;
# - the program is cached under DATA/seccomp-bpf (0700, entries 0600); a truncated or corrupt
#   entry is not loaded: the next build still refuses everything and the entry is rewritten;
#   a build with the entry in place does not even load libseccomp.
source "$(dirname "$0")/lib.sh"

if [ "$(id -u)" -ne 0 ]; then
  t_skip "seccomp bpf" "not running as root: rootful crun builds need root"
  t_done; exit
fi
for tool in crun runc cc unshare; do
  command -v $tool >/dev/null || { t_skip "seccomp bpf" "$tool is not installed"; t_done; exit; }
done

export OCIBUILD_STORE="$T_TMP/store"
export OCIBUILD_DATA_DIR="$T_TMP/data"
BUNDLES="$OCIBUILD_DATA_DIR/bundles"
CACHE="$OCIBUILD_DATA_DIR/seccomp-bpf"
SN_STORE="SN566XP5HOO2D322W42EA3DZYPDYBMPRUF3TGFIMLXV54WM4CSNQ===="
ID=obi-seccomp-bpf-$$
t_cleanup "crun delete --force $ID"

cc -static -O1 -o "$T_TMP/probe" "$E2E_DIR/sandbox_probe.c" 2>"$T_TMP/cc.err" ||
  { t_fail "compile the sandbox probe" "$(cat "$T_TMP/cc.err")"; t_done; exit; }
cat >"$T_TMP/probe.json" <<JSON
{
  "inputs": {"busybox": "/bin/busybox", "probe": "$T_TMP/probe"},
  "command_args": ["/nix/store/busybox", "sh", "-c", "mkdir -p /nix/store/out && cd /nix/store/out && rm -f plain open-setuid creat-setgid mknod-setuid && /nix/store/probe > probe.txt"],
  "working_dir": "build",
  "scratch_paths": ["build", "nix/store"],
  "inputs_dir": "nix/store",
  "outputs": ["nix/store/out"]
}
JSON

# crun refuses the hybrid cgroup layout's cgroup2 mount: each direct call in a mount namespace
# without it (ocibuild makes its own for crun).
in_crun_ns() { unshare -m sh -c 'mount --make-rprivate / && { umount -l /sys/fs/cgroup/unified 2>/dev/null; true; } && exec "$0" "$@"' "$@"; }

# build RUNTIME NAME: a kept bundle; prints its path.
build() {
  "$OCIBUILD" build --keep-bundle --runtime "$1" "$T_TMP/probe.json" >"$T_TMP/$2.out" 2>"$T_TMP/$2.err" &&
    sed -n 's/^bundle kept at //p' "$T_TMP/$2.err" | tail -1
}
probe_of() { cat "$1/scratch/$SN_STORE/out/probe.txt"; }
config() { python3 -c 'import json,sys; c=json.load(open(sys.argv[1]+"/config.json")); exec(sys.argv[2])' "$@"; }
# The errnos of test_sandbox_identity.sh, and those of the calls added for this test.
EXPECTED="chmod-setuid 1
chmod-setgid 1
chmod-plain 0
setxattr 95
add_key 1
keyctl 1
unshare-user 1
io_uring_setup 38
clone3 38
bpf 1
setns 1
clone-newuser 1"
check_probe() { # NAME BUNDLE
  local got missing
  got=$(probe_of "$2" 2>&1)
  missing=$(grep -vxF -f <(printf '%s\n' "$got") <<<"$EXPECTED")
  [ -z "$missing" ] && t_ok "$1: every call is refused with its errno, a plain chmod works" ||
    t_fail "$1: every call is refused with its errno" "missing: $missing
got: $got"
}

# --- a crun build: the annotation, and what the probe meets under it ---
if B=$(build crun crun) && [ -n "$B" ]; then
  t_cleanup "rm -rf '$B'"
  if config "$B" 'sys.exit(0 if c["annotations"]["run.oci.seccomp_bpf_data"] and c["linux"]["seccomp"]["syscalls"] else 1)'; then
    t_ok "a crun build's config.json has run.oci.seccomp_bpf_data and keeps linux.seccomp"
  else
    t_fail "a crun build's config.json has run.oci.seccomp_bpf_data and keeps linux.seccomp" "$(head -c 600 "$B/config.json")"
  fi
  check_probe "crun, precompiled filter" "$B"
  probe_of "$B" >"$T_TMP/probe-bpf.txt"
  config "$B" 'import base64; open(sys.argv[3], "wb").write(base64.b64decode(c["annotations"]["run.oci.seccomp_bpf_data"]))' "$T_TMP/ours.bpf"

  # --- the same bundle as crun alone would run it ---
  config "$B" 'del c["annotations"]; json.dump(c, open(sys.argv[1]+"/config.json", "w"))'
  # stdin an empty pipe (here and for `crun create` below): crun chowns the stdio it is handed
  # to the container's user, and the suite's stdin may be the host's /dev/null
  if : | in_crun_ns crun run -b "$B" "$ID" >"$T_TMP/run.out" 2>&1; then
    check_probe "crun compiling linux.seccomp" "$B"
    probe_of "$B" | diff "$T_TMP/probe-bpf.txt" - >"$T_TMP/probe.diff" &&
      t_ok "the probe's whole output is the same with crun's compilation" ||
      t_fail "the probe's whole output is the same with crun's compilation" "$(cat "$T_TMP/probe.diff")"
  else
    t_fail "crun runs the bundle without the annotation" "$(cat "$T_TMP/run.out")"
  fi
  # crun create compiles into its state dir (seccomp.bpf) and stops before the process runs.
  state=/run/crun/$ID
  if : | in_crun_ns sh -c 'crun create -b "$0" "$1" && cp "$2/seccomp.bpf" "$3"; r=$?; crun delete --force "$1"; exit $r' \
    "$B" "$ID" "$state" "$T_TMP/crun.bpf" >"$T_TMP/create.out" 2>&1; then
    cmp -s "$T_TMP/ours.bpf" "$T_TMP/crun.bpf" &&
      t_ok "the annotation is crun's own compilation of linux.seccomp, byte for byte ($(stat -c %s "$T_TMP/ours.bpf") bytes)" ||
      t_fail "the annotation is crun's own compilation of linux.seccomp" "ours $(stat -c %s "$T_TMP/ours.bpf") bytes, crun's $(stat -c %s "$T_TMP/crun.bpf")"
  else
    t_fail "crun create compiles the profile" "$(cat "$T_TMP/create.out")"
  fi
else
  t_fail "crun build with the probe" "$(cat "$T_TMP/crun.err")"
fi

# --- the disk cache ---
entry=$(ls "$CACHE" 2>/dev/null | grep -E '^[0-9a-f]{32}$' | head -1)
if [ -n "$entry" ] && [ "$(stat -c %a "$CACHE")" = 700 ] && [ "$(stat -c '%a %u' "$CACHE/$entry")" = "600 0" ]; then
  t_ok "the program is cached in DATA/seccomp-bpf (0700), one root-owned 0600 entry"
  size=$(stat -c %s "$CACHE/$entry")
  cp "$CACHE/$entry" "$T_TMP/entry"
  for damage in truncate flip; do
    case $damage in
      truncate) truncate -s $((size - 8)) "$CACHE/$entry" ;;
      flip) printf '\377\377\377\377' | dd of="$CACHE/$entry" bs=1 seek=$((size - 4)) conv=notrunc status=none ;;
    esac
    if B=$(build crun "crun-$damage") && [ -n "$B" ]; then
      t_cleanup "rm -rf '$B'"
      check_probe "crun after a $damage of the cache entry" "$B"
      config "$B" 'import base64; open(sys.argv[3], "wb").write(base64.b64decode(c["annotations"]["run.oci.seccomp_bpf_data"]))' "$T_TMP/again.bpf"
      cmp -s "$T_TMP/ours.bpf" "$T_TMP/again.bpf" && cmp -s "$T_TMP/entry" "$CACHE/$entry" &&
        t_ok "a damaged entry ($damage) is not loaded and is written again" ||
        t_fail "a damaged entry ($damage) is not loaded and is written again" "the entry is not the one written before the damage; the program $(cmp -s "$T_TMP/ours.bpf" "$T_TMP/again.bpf" && echo is || echo is not) the first build's"
    else
      t_fail "crun build after a $damage of the cache entry" "$(cat "$T_TMP/crun-$damage.err")"
    fi
  done
else
  t_fail "the program is cached in DATA/seccomp-bpf" "$(ls -la "$CACHE" 2>&1)"
fi

# --- a hit loads no libseccomp (its dlopen costs as much as compiling); a miss does ---
loads_libseccomp() { # 0 when `ocibuild build` itself (not crun, its child) maps libseccomp
  rm -f "$T_TMP"/ld.*
  sh -c 'echo $$ >"$0/ld-pid"; exec env LD_DEBUG=files LD_DEBUG_OUTPUT="$0/ld" "$1" build --runtime crun "$0/probe.json"' \
    "$T_TMP" "$OCIBUILD" >/dev/null 2>&1
  grep -q 'file=libseccomp' "$T_TMP/ld.$(cat "$T_TMP/ld-pid")"
}
if [ -n "$entry" ]; then
  ! loads_libseccomp && [ -s "$T_TMP/ld.$(cat "$T_TMP/ld-pid")" ] &&
    t_ok "a build whose program is cached does not load libseccomp" ||
    t_fail "a build whose program is cached does not load libseccomp" "$(grep -m3 libseccomp "$T_TMP"/ld.* 2>&1)"
  rm -f "$CACHE/$entry"
  loads_libseccomp && t_ok "a build whose program is not cached loads libseccomp and compiles" ||
    t_fail "a build whose program is not cached loads libseccomp and compiles" "$(ls "$T_TMP")"
fi

# --- runc: no annotation (it would ignore it), the filter of linux.seccomp ---
if B=$(build runc runc) && [ -n "$B" ]; then
  t_cleanup "rm -rf '$B'"
  config "$B" 'sys.exit(0 if "annotations" not in c and c["linux"]["seccomp"]["syscalls"] else 1)' &&
    t_ok "a runc build's config.json has linux.seccomp and no annotation" ||
    t_fail "a runc build's config.json has linux.seccomp and no annotation" "$(head -c 600 "$B/config.json")"
  check_probe "runc" "$B"
else
  t_fail "runc build with the probe" "$(cat "$T_TMP/runc.err")"
fi

left=$(t_containers_below crun "$T_TMP") && t_ok "no crun container left" || t_fail "no crun container left" "$left"
t_done
