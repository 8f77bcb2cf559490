#!/bin/bash
# ocibuild nodes as Nix remote builders (docs/farm.md), end to end: two real sshd on random
# 127.0.0.1 ports, keys made here, each with a forced command running `ocibuild remote-builder
# --write` on its own data dir (its own castore and path infos, no /nix/store: every input has
# to come over the serve protocol). Stock `nix-build --max-jobs 0 --builders ...` builds a graph
# of derivations (a chain, a fan-out with a join, multiple outputs, a fixed output) on them;
# every output must then pass `nix-store --verify-path`, have the references Nix computes, and
# `nix-build --check` (a local rebuild by Nix itself) must find it bit-identical. A failing
# builder must fail nix-build naming the node and the log tail; with one node's sshd stopped,
# everything builds on the other. A protocol-2.4 client (Nix's legacy ImportPaths) is served too.
# All sshd are stopped at the end; every nix-build has a time limit (the test ends by itself).
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

if ! setup_out=$("$E2E_DIR/nix_setup.sh" 2>&1); then
  t_skip "farm" "Nix is not usable: $setup_out"
  t_done; exit
fi
SSHD=$(command -v sshd || echo /usr/sbin/sshd) # farm_lib.sh runs it
for tool in "$SSHD" ssh ssh-keygen runc; do
  if ! command -v "$tool" >/dev/null; then
    t_skip "farm" "$tool is not installed (scripts/install-deps.sh: openssh-server, runc)"
    t_done; exit
  fi
done
if [ "$(id -u)" -ne 0 ]; then
  t_skip "farm" "needs root (sshd, and Nix builds with build users)"
  t_done; exit
fi
OCIBUILD=$(readlink -f "$OCIBUILD")
NIX_OPTS=(--option sandbox true --option sandbox-fallback false --option substituters "")
NONCE="$(date +%s%N)-$$"
F=$T_TMP/farm
# Debugging: FARM_KEEP=DIR copies the logs there at the end (after everything was stopped).
[ -n "${FARM_KEEP:-}" ] && t_cleanup "cp -a $F ${FARM_KEEP}"

source "$E2E_DIR/farm_lib.sh"
farm_init
for node in node1 node2; do
  if ! start_node "$node"; then
    t_fail "$node: sshd with the forced command starts" "$(tail -5 "$F/$node/sshd.log")"
    t_done; exit
  fi
done
t_ok "two sshd nodes with ocibuild remote-builder as their forced command"

# ---- the derivations ----
bash_path=$(nix-store --add /bin/bash-static)
mkdir -p "$T_TMP/busybox/bin" && cp /bin/busybox "$T_TMP/busybox/bin/busybox"
busybox_path=$(nix-store --add "$T_TMP/busybox")
cat >"$T_TMP/drvs.nix" <<NIX
let
  bash = builtins.storePath "$bash_path";
  busybox = "\${builtins.storePath "$busybox_path"}/bin/busybox";
  mk = name: script: attrs: builtins.derivation ({
    inherit name busybox;
    system = builtins.currentSystem; builder = bash;
    args = [ "-e" "-c" script ];
    nonce = "\${nonce}";
  } // attrs);
  nonce = "$NONCE-" + builtins.getEnv "FARM_ROUND";
  root = mk "obi-farm-root" "echo root > \$out" {};
  leaf = i: mk "obi-farm-leaf-\${toString i}" "read -r x < \${root}; echo \"leaf \${toString i} of \$x \${root}\" > \$out" {};
  leaves = map leaf [ 1 2 3 4 ];
in {
  join = mk "obi-farm-join" ''
    \$busybox mkdir \$out
    \$busybox cat \${builtins.concatStringsSep " " (map toString leaves)} > \$out/all
    echo \${builtins.concatStringsSep " " (map toString leaves)} > \$out/refs
  '' {};
  multi = mk "obi-farm-multi" ''
    echo "lib at \$lib" > \$lib
    echo "dev uses \$lib" > \$dev
    \$busybox mkdir -p \$out/bin
    printf '#!/bin/sh\necho hi \$dev\n' > \$out/bin/tool
    \$busybox chmod 755 \$out/bin/tool
    \$busybox ln -s tool \$out/bin/link
  '' { outputs = [ "out" "dev" "lib" ]; };
  fod = mk ("obi-farm-fod-" + nonce) "echo -n hello > \$out" {
    outputHashMode = "flat"; outputHashAlgo = "sha256";
    outputHash = "2cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824";
  };
  slow = mk "obi-farm-slow" "echo farm-slow-started >&2; \$busybox sleep 120; echo late > \$out" {};
  chatty = mk "obi-farm-chatty" "\$busybox yes chatty | \$busybox head -c 200000 >&2; \$busybox sleep 60; echo > \$out" {};
  failing = mk "obi-farm-failing" "echo farm-boom-\${nonce} >&2; exit 3" {};
}
NIX

# nix-build ROUND BUILDERS ATTR...: builds on the builders only (--max-jobs 0); the output paths
farm_build() {
  local round=$1 builders=$2; shift 2
  local args=() a
  for a in "$@"; do args+=(-A "$a"); done
  FARM_ROUND=$round timeout 300 nix-build "${NIX_OPTS[@]}" --no-out-link --max-jobs 0 \
    --option builders "$builders" --option builders-use-substitutes false \
    "$T_TMP/drvs.nix" "${args[@]}"
}

# ---- round 1: both nodes ----
if outs=$(farm_build 1 "$(builder_line node1 node2)" join multi fod 2>"$F/round1.log"); then
  t_ok "nix-build --max-jobs 0 builds the graph on the ocibuild nodes"
else
  t_fail "nix-build --max-jobs 0 builds the graph on the ocibuild nodes" \
    "$(tail -30 "$F/round1.log"; tail -5 "$F"/node*/sshd.log)"
  t_done; exit
fi
n1=$(node_built node1 "$F/round1.log"); n2=$(node_built node2 "$F/round1.log")
if [ "$n1" -gt 0 ] && [ "$n2" -gt 0 ]; then t_ok "both nodes got work (node1: $n1 derivations, node2: $n2)"
else t_fail "both nodes got work (node1: $n1 derivations, node2: $n2)" "$(grep -i 'building\|copying' "$F/round1.log" | head -20)"; fi
drvs=$(FARM_ROUND=1 nix-instantiate "$T_TMP/drvs.nix" -A join -A multi -A fod 2>/dev/null)
all_outputs=$(nix-store -q --outputs $(nix-store -q --requisites $drvs | grep '\.drv$' | grep obi-farm-) | sort -u)
bad=""
for p in $all_outputs; do
  nix-store --verify-path "$p" 2>>"$F/verify.log" || bad="$bad $p"
done
[ -z "$bad" ] && t_ok "every output passes nix-store --verify-path ($(echo $all_outputs | wc -w) paths)" ||
  t_fail "every output passes nix-store --verify-path" "$bad $(cat "$F/verify.log")"
# The join references exactly its four leaves; the leaves their root.
join_out=$(echo "$outs" | grep obi-farm-join)
refs=$(nix-store -q --references "$join_out" | grep -c obi-farm-leaf-)
[ "$refs" -eq 4 ] && t_ok "join references its four leaves" || t_fail "join references its four leaves" "$(nix-store -q --references "$join_out")"
dev_out=$(nix-store -q --outputs $(FARM_ROUND=1 nix-instantiate "$T_TMP/drvs.nix" -A multi 2>/dev/null) | grep -- '-dev$')
t_contains "multi.dev references multi.lib" "$(nix-store -q --references "$dev_out")" "obi-farm-multi-lib"
# The node's record of each output has the NAR hash Nix registered.
mismatch=""
for p in $all_outputs; do
  rec=$(ls "$F"/node*/data/nix-path-info/"$(basename "$p")".json 2>/dev/null | head -1)
  [ -n "$rec" ] || continue
  ours=$(/usr/bin/python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["narHash"])' "$rec")
  [ "$ours" = "$(nix-store -q --hash "$p")" ] || mismatch="$mismatch $p"
done
[ -z "$mismatch" ] && t_ok "the nodes' NAR hashes are those Nix registered" || t_fail "the nodes' NAR hashes are those Nix registered" "$mismatch"
# Nix rebuilds everything locally and compares bit for bit.
if FARM_ROUND=1 nix-build "${NIX_OPTS[@]}" --no-out-link --check --max-jobs 2 --option builders "" \
     "$T_TMP/drvs.nix" -A join -A multi -A fod >/dev/null 2>"$F/check.log"; then
  t_ok "nix-build --check (a local Nix build) finds the remote outputs bit-identical"
else t_fail "nix-build --check (a local Nix build) finds the remote outputs bit-identical" "$(tail -15 "$F/check.log")"; fi

# ---- a failing builder ----
out=$(farm_build 1 "$(builder_line node1)" failing 2>&1); rc=$?
if [ $rc -ne 0 ] && [[ "$out" == *"ssh://root@node1"* ]] && [[ "$out" == *"farm-boom-$NONCE-1"* ]]; then
  t_ok "a failing builder fails nix-build, naming the node and the log tail"
else t_fail "a failing builder fails nix-build, naming the node and the log tail" "rc=$rc
$(echo "$out" | tail -15)"; fi

# ---- the client's build options, applied on the node (Nix's hook leaves the timeouts to it) ----
for opt in "slow:timeout 2:timed out after 2 s (the client's build-timeout)" \
           "slow:max-silent-time 2:no log output for 2 s (the client's max-silent-time)" \
           "chatty:max-build-log-size 10000:killed after writing more than 10000 bytes of log output"; do
  # (the log limit the client enforces itself, on the log the node streams; the node's own check
  # is for clients that do not, and a hangup stops the build there either way)
  attr=${opt%%:*}; opt=${opt#*:}; setting=${opt%%:*}; want=${opt#*:}
  t0=$(date +%s)
  out=$(FARM_ROUND="opt-${setting% *}" timeout 60 nix-build "${NIX_OPTS[@]}" --no-out-link --max-jobs 0 \
          --option builders "$(builder_line node1)" --option $setting "$T_TMP/drvs.nix" -A "$attr" 2>&1)
  rc=$?; took=$(($(date +%s) - t0))
  if [ $rc -ne 0 ] && [ $rc -ne 124 ] && [[ "$out" == *"$want"* ]] && [ "$took" -lt 30 ]; then
    t_ok "--option $setting: the node stops the build (${took} s) and says why"
  else t_fail "--option $setting: the node stops the build and says why" "rc=$rc took=${took}s
$(echo "$out" | tail -8)"; fi
done

# ---- one node down: the other builds everything ----
stop_node node1
if farm_build 2 "$(builder_line node1 node2)" join fod >/dev/null 2>"$F/round2.log"; then
  n2=$(node_built node2 "$F/round2.log")
  [ "$n2" -eq 7 ] && t_ok "with node1's sshd stopped, node2 builds all 7 derivations" ||
    t_fail "with node1's sshd stopped, node2 builds all 7 derivations" "node2 built $n2"
else t_fail "with node1's sshd stopped, nix-build still succeeds" "$(tail -15 "$F/round2.log")"; fi

# ---- a protocol 2.4 client (legacy ImportPaths, as Hydra's older queue runner) ----
# Sends the closure of round 1's join (valid in /nix/store) with nix-store --export, then asks
# back validity, the path info, the NAR (DumpStorePath, ExportPaths) and compares with Nix's.
if /usr/bin/python3 "$E2E_DIR/serve_client.py" --version 4 \
     --ssh "ssh -F $F/ssh_config -i $F/client_key root@node2" "$join_out" >"$F/py.log" 2>&1; then
  t_ok "a protocol-2.4 client: ImportPaths, QueryPathInfos, DumpStorePath, ExportPaths agree with Nix"
else t_fail "a protocol-2.4 client: ImportPaths, QueryPathInfos, DumpStorePath, ExportPaths agree with Nix" "$(tail -15 "$F/py.log")"; fi

# ---- the client goes away in the middle of a build ----
# The node sees its stdin hang up and cancels the build: the container is killed, the bundle
# removed, the remote-builder exits, nothing is recorded (within seconds, not 120).
FARM_ROUND=4 setsid nix-build "${NIX_OPTS[@]}" --no-out-link --max-jobs 0 \
  --option builders "$(builder_line node2)" "$T_TMP/drvs.nix" -A slow >/dev/null 2>"$F/slow.log" &
slow_pid=$!
t_cleanup "kill -KILL -- -$slow_pid"
for _ in $(seq 1 300); do grep -q farm-slow-started "$F/slow.log" && break; sleep 0.1; done
if grep -q farm-slow-started "$F/slow.log"; then
  running=$(node_processes node2)
  kill -KILL -- -"$slow_pid"; wait "$slow_pid" 2>/dev/null
  [ -n "$running" ] && t_ok "the node's remote-builder is seen while it builds (pid $running)" ||
    t_fail "the node's remote-builder is seen while it builds" "$(pgrep -af remote-builder)"
  gone=""
  for _ in $(seq 1 150); do
    if [ -z "$(node_processes node2)" ] &&
       [ -z "$(ls "$F/node2/data/bundles" 2>/dev/null)" ]; then gone=yes; break; fi
    sleep 0.1
  done
  slow_out=$(FARM_ROUND=4 nix-instantiate "$T_TMP/drvs.nix" -A slow 2>/dev/null | xargs nix-store -q --outputs)
  if [ -n "$gone" ] && ! ls "$F/node2/data/nix-path-info/$(basename "$slow_out").json" >/dev/null 2>&1; then
    t_ok "a client killed mid-build: the node cancels the build, removes the bundle and exits"
  else t_fail "a client killed mid-build: the node cancels the build, removes the bundle and exits" \
    "remote-builders: $(node_processes node2); $(pgrep -af "$F/node2/data"; ls -la "$F/node2/data/bundles")"; fi
else t_fail "the slow build started on node2" "$(tail -10 "$F/slow.log")"; fi

stop_node node2

# ---- a shared castore: two nodes on one daemon (castore and path infos) ----
# What one node was sent or built is valid on the other, so inputs cross the wire once and
# outputs are not copied between nodes. Compared with round 1 (each node its own store).
ocibuild_daemon() {
  OCIBUILD_DATA_DIR=$F/shared "$OCIBUILD" daemon --listen "unix:$F/shared.sock" 2>"$F/shared.log" &
  echo $! >"$F/shared.pid"
  t_cleanup "kill $(cat "$F/shared.pid"); wait $(cat "$F/shared.pid")"
  for _ in $(seq 1 100); do [ -S "$F/shared.sock" ] && return 0; sleep 0.1; done
  return 1
}
if ocibuild_daemon &&
   start_node node3 --store "grpc+unix://$F/shared.sock" --path-info "grpc+unix://$F/shared.sock" &&
   start_node node4 --store "grpc+unix://$F/shared.sock" --path-info "grpc+unix://$F/shared.sock"; then
  if farm_build 3 "$(builder_line node3 node4)" join multi fod >/dev/null 2>"$F/round3.log"; then
    n3=$(node_built node3 "$F/round3.log"); n4=$(node_built node4 "$F/round3.log")
    s1=$(shipped "$F/round1.log"); s3=$(shipped "$F/round3.log")
    echo "# paths shipped to the nodes: per-node stores $s1, shared castore $s3 (node3 built $n3, node4 $n4)"
    [ $((n3 + n4)) -eq 8 ] && [ "$s3" -lt "$s1" ] &&
      t_ok "shared castore: both nodes build, fewer paths shipped ($s3 vs $s1 with per-node stores)" ||
      t_fail "shared castore: both nodes build, fewer paths shipped" "built $n3+$n4, shipped $s3 vs $s1"
    FARM_ROUND=3 nix-build "${NIX_OPTS[@]}" --no-out-link --check --max-jobs 2 --option builders "" \
      "$T_TMP/drvs.nix" -A join -A multi -A fod >/dev/null 2>"$F/check3.log" &&
      t_ok "shared castore: nix-build --check finds the outputs bit-identical" ||
      t_fail "shared castore: nix-build --check finds the outputs bit-identical" "$(tail -15 "$F/check3.log")"
  else t_fail "shared castore: nix-build on two nodes sharing a daemon" "$(tail -20 "$F/round3.log"; tail -5 "$F/shared.log")"; fi
else t_fail "shared castore: a daemon and two nodes on it start" "$(tail -5 "$F/shared.log")"; fi
stop_node node3; stop_node node4

# Nothing of ours left listening. A connection's sshd and its remote-builder end on their own
# once the client is gone, a moment after the listener; give them 10 s, no more.
for _ in $(seq 1 100); do
  left=$(pgrep -f "$F/node" || true)
  [ -z "$left" ] && break
  sleep 0.1
done
if [ -n "$left" ]; then left="$left: $(ps -o pid=,etime=,args= -p "${left//$'\n'/,}" 2>/dev/null)"; fi
[ -z "$left" ] && t_ok "every sshd is stopped" || t_fail "every sshd is stopped" "$left"
t_done
