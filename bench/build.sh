#!/bin/bash
# The build service's numbers (issue 3), each side by side with its reference in the same run:
#  1. per-build overhead: `ocibuild build` of a trivial request (busybox input, one small
#     output) vs `runc run` of the very bundle ocibuild generated for it (kept once, its input
#     pointing straight at /bin/busybox), hyperfine with warmups in rounds whose order
#     alternates (ROUNDS, default 10: this VM's disk has bursts of slow metadata operations
#     lasting seconds, which short alternating rounds spread over both sides); wall time (mean,
#     median) and CPU time; ratio ocibuild/runc;
#  2. the same build as a Nix derivation (builder = static busybox in the store, sandbox on, no
#     substituters), rebuilt with `nix-build --check`; ratio ocibuild/nix;
#  3. input materialization of a 10,000-file input tree (already in castore): first build with
#     an empty input cache and repeat build, in ms, next to the trivial build;
#  4. throughput of N = 1, 2, 4, 8 concurrent `ocibuild build` processes, builds/second;
#  1b. the trivial build vs `crun run` of the same bundle (in a mount namespace without the
#     hybrid host's cgroup2 mount, which crun refuses), when crun is installed; and vs
#     `crun --cgroup-manager=disabled run`, as ocibuild runs builds without a memory limit;
#  1c. issue 10's sandbox cost on crun: `crun run` of that bundle vs of a copy without the user
#     namespace, the seccomp filter (linux.seccomp and its compiled annotation) and the
#     masked/read-only paths (its scratch handed to the build user's ids on the host instead),
#     both without a cgroup as ocibuild runs them, alternating; the difference in ms.
# With BASELINE=/path/to/an/older/ocibuild, first the trivial build with that binary and with
# this one, alternating in the same rounds (each with its own data dir); BASELINE_ONLY=1 stops
# after that.
# Usage: bench/build.sh [RUNS] (hyperfine runs per command, default 40). Needs root (rootful
# runc, Nix build users). Everything lives in one temp dir that is removed on exit.
set -eu
cd "$(dirname "$0")/.."
RUNS=${1:-40}
OCIBUILD=${OCIBUILD:-$PWD/build/ocibuild}
[ "$(id -u)" -eq 0 ] || { echo "bench/build.sh: needs root (rootful runc)" >&2; exit 1; }
for tool in hyperfine runc jq busybox; do
  command -v $tool >/dev/null || { echo "bench/build.sh: $tool not found" >&2; exit 1; }
done

tmp=$(mktemp -d /tmp/obi-bench-build.XXXXXX)
chmod 711 "$tmp" # a build's container root (a host id of its id slot) reaches its bundle
cleanup() {
  runc delete --force obi-bench-plain >/dev/null 2>&1 || true
  chmod -R u+w "$tmp" 2>/dev/null
  rm -rf "$tmp"
}
trap cleanup EXIT
export OCIBUILD_DATA_DIR=$tmp/data
ms() { jq -r ".results[$2].$3 * 1000" "$1"; }

# ---- the trivial request (examples/hello.json's shape, without its output lines) ----
cp bench/trivial.json "$tmp/hello.json"

# ---- the plain runc bundle: the one ocibuild generates, prepared once ----
"$OCIBUILD" build --keep-bundle "$tmp/hello.json" >/dev/null
kept=$(ls -d "$OCIBUILD_DATA_DIR"/bundles/*-*-*-*-*)
cp -a "$kept" "$tmp/plain"
rm -rf "$kept" "$tmp/plain/.lock" "$tmp/plain/.kept"
ln -sfn /bin/busybox "$tmp/plain/inputs/busybox"

# compare NAME_A CMD_A NAME_B CMD_B: alternating hyperfine rounds, ratios (bench/compare.sh).
# shellcheck source=bench/compare.sh
. bench/compare.sh

if [ -n "${BASELINE:-}" ]; then
  echo "== before/after: $BASELINE vs $OCIBUILD, trivial build ($RUNS runs each) =="
  before="env OCIBUILD_DATA_DIR=$tmp/data-before $BASELINE build $tmp/hello.json"
  after="env OCIBUILD_DATA_DIR=$tmp/data-after $OCIBUILD build $tmp/hello.json"
  $before >/dev/null && $after >/dev/null
  compare "after" "$after" "before" "$before"
  [ -z "${BASELINE_ONLY:-}" ] || exit 0
fi

if [ -n "${BENCH_CRUN_INSIDE:-}" ]; then
  # Re-run of this script inside a private mount namespace without the hybrid host's cgroup2
  # mount (see below): crun run works there as it does on a pure v1 or v2 host.
  echo "== per-build overhead: ocibuild build vs crun run ($RUNS runs each, both in a mount namespace without /sys/fs/cgroup/unified) =="
  "$OCIBUILD" build "$tmp/hello.json" >/dev/null
  compare "ocibuild build" "$OCIBUILD build $tmp/hello.json" \
    "crun run" "crun run --bundle $tmp/plain obi-bench-plain"
  # ocibuild runs a build without a memory limit on crun with no cgroup (docs/security.md
  # "Limits"): the same bundle run that way, the reference that excludes that saving.
  echo "== per-build overhead: ocibuild build vs crun --cgroup-manager=disabled run ($RUNS runs each) =="
  compare "ocibuild build" "$OCIBUILD build $tmp/hello.json" \
    "crun run, no cgroup" "crun --cgroup-manager=disabled run --bundle $tmp/plain obi-bench-plain"
  echo "== sandbox cost on crun: crun run with vs without user namespace, seccomp filter, masks ($RUNS runs each, no cgroup as ocibuild runs it) =="
  cp -a "$tmp/plain" "$tmp/bare"
  jq '.linux.namespaces |= map(select(.type != "user"))
      | del(.linux.uidMappings, .linux.gidMappings, .linux.seccomp, .linux.maskedPaths,
            .linux.readonlyPaths, .annotations["run.oci.seccomp_bpf_data"])' \
    "$tmp/plain/config.json" >"$tmp/bare/config.json"
  # Without the user namespace the build user (1000:100) is the host's: it owns the scratch
  # dirs, container root (host root) the rest, as before the sandbox work.
  chown -R 0:0 "$tmp/bare/root" && chown -R 1000:100 "$tmp/bare/scratch"
  crun run --bundle "$tmp/bare" obi-bench-bare >/dev/null 2>&1 ||
    { echo "the bundle without the sandbox does not run" >&2; exit 1; }
  compare "crun run (sandbox)" "crun --cgroup-manager=disabled run --bundle $tmp/plain obi-bench-plain" \
    "crun run (no sandbox)" "crun --cgroup-manager=disabled run --bundle $tmp/bare obi-bench-bare"
  exit 0
fi

echo "== per-build overhead: ocibuild build vs runc run ($RUNS runs each) =="
compare "ocibuild build" "$OCIBUILD build $tmp/hello.json" \
  "runc run" "runc run --bundle $tmp/plain obi-bench-plain"

# crun 1.8 refuses a hybrid cgroup layout (docs/build.md "crun on hybrid-cgroup hosts"), where
# ocibuild gives each crun call a private mount namespace without the cgroup2 mount. A plain
# `crun run` needs the same, so this part runs in one such namespace for both commands (there
# ocibuild sees no hybrid layout and makes none: its two unshares per build are not counted).
if command -v crun >/dev/null; then
  hybrid=0
  [ "$(stat -f -c %T /sys/fs/cgroup/unified 2>/dev/null)" = cgroup2fs ] && hybrid=1
  # A `crun run` handed /dev/null as stdin (hyperfine does) chowns it to the container's user:
  # the namespace gets a /dev/null node of its own, so the host's stays root's.
  BASELINE= BENCH_CRUN_INSIDE=1 unshare -m --propagation private bash -c \
    '{ [ "$2" = 0 ] || umount /sys/fs/cgroup/unified; } && mknod -m 666 "$1/null" c 1 3 &&
     mount --bind "$1/null" /dev/null && shift 2 && exec "$0" "$@"' "$0" "$tmp" "$hybrid" "$RUNS"
fi

echo "== against nix-build (sandbox on, no substituters, --check rebuilds) =="
if tests/e2e/nix_setup.sh 2>"$tmp/nix_setup.log"; then
  # Busybox picks the applet from argv[0]'s basename: keep it named busybox in a store dir.
  mkdir "$tmp/bin" && cp /bin/busybox "$tmp/bin/busybox"
  busybox_dir=$(nix-store --add "$tmp/bin")
  cat >"$tmp/hello.nix" <<NIX
builtins.derivation {
  name = "obi-bench-hello"; system = builtins.currentSystem;
  builder = "\${builtins.storePath "$busybox_dir"}/busybox";
  args = [ "sh" "-c" "mkdir -p \$out && echo hello > \$out/greeting" ];
}
NIX
  drv=$(nix-instantiate "$tmp/hello.nix" 2>/dev/null)
  nixopts="--option sandbox true --option sandbox-fallback false --option substituters ''"
  eval nix-build $nixopts --no-out-link "$drv" >/dev/null 2>&1
  compare "ocibuild build" "$OCIBUILD build $tmp/hello.json" \
    "nix-build --check" "nix-build $nixopts --check --no-out-link $drv"
  nix-store --delete "$(nix-store -q --outputs "$drv")" "$drv" >/dev/null 2>&1 || true
else
  echo "SKIP: Nix not usable: $(cat "$tmp/nix_setup.log")"
fi

echo "== input materialization: 10,000-file input tree =="
tree=$tmp/tree
for d in $(seq 0 99); do
  mkdir -p "$tree/d$d"
  for f in $(seq 0 99); do echo "file $d/$f" >"$tree/d$d/f$f"; done
done
node=$("$OCIBUILD" store import --name tree "$tree")
bb_node=$("$OCIBUILD" store import --name busybox /bin/busybox)
jq -n --argjson tree "$node" --argjson bb "$bb_node" '{
  inputs: {busybox: $bb, tree: $tree},
  command_args: ["/nix/store/busybox", "sh", "-c",
                 "mkdir -p /nix/store/out && ls /nix/store/tree/d7 > /nix/store/out/list"],
  working_dir: "build", scratch_paths: ["build", "nix/store"], inputs_dir: "nix/store",
  outputs: ["nix/store/out"], constraints: {system: "x86_64-linux"}}' >"$tmp/tree.json"
"$OCIBUILD" build "$tmp/hello.json" >/dev/null # busybox cached for every case below
hyperfine -N --runs 5 --export-json "$tmp/cold.json" \
  --prepare "rm -rf $OCIBUILD_DATA_DIR/input-cache/d-*" \
  -n "cold" "$OCIBUILD build $tmp/tree.json" >/dev/null
hyperfine -N --warmup 1 --runs 10 --export-json "$tmp/warm.json" \
  -n "warm" "$OCIBUILD build $tmp/tree.json" \
  -n "trivial" "$OCIBUILD build $tmp/hello.json" >/dev/null
cold=$(ms "$tmp/cold.json" 0 mean)
warm=$(ms "$tmp/warm.json" 0 mean)
trivial=$(ms "$tmp/warm.json" 1 mean)
printf 'first build (empty input cache): %7.1f ms (materialization %.1f ms)\n' "$cold" \
  "$(echo "$cold - $trivial" | bc -l)"
printf 'repeat build (cached):           %7.1f ms (materialization %.1f ms)\n' "$warm" \
  "$(echo "$warm - $trivial" | bc -l)"
printf 'trivial build, same run:         %7.1f ms\n' "$trivial"

echo "== throughput: N concurrent ocibuild build processes =="
PER=${PER:-8}
for n in 1 2 4 8; do
  t0=$(date +%s.%N)
  for p in $(seq 1 "$n"); do
    (for i in $(seq 1 "$PER"); do "$OCIBUILD" build "$tmp/hello.json" >/dev/null 2>&1 || exit 1; done) &
  done
  fail=0
  for p in $(seq 1 "$n"); do wait -n || fail=1; done
  t1=$(date +%s.%N)
  [ $fail -eq 0 ] || { echo "a concurrent build failed" >&2; exit 1; }
  printf 'N=%d: %3d builds in %6.2f s = %5.1f builds/s\n' "$n" $((n * PER)) \
    "$(echo "$t1 - $t0" | bc -l)" "$(echo "$n * $PER / ($t1 - $t0)" | bc -l)"
done
left=$(ls "$OCIBUILD_DATA_DIR/bundles" | wc -l)
[ "$left" -eq 0 ] || echo "WARNING: $left bundles left behind"
