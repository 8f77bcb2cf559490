#!/bin/bash
# ocibuild nix-build against Nix itself: every derivation here is built by ocibuild first (so
# its input derivations are built by ocibuild too: a unique nonce keeps them out of /nix/store),
# then by `nix-store --realise` with the sandbox on and no substituters; each output's NAR hash
# and references must be equal. Failures (wrong fixed-output hash, failing builder) must fail
# in both. Those builds pass --no-register (else Nix would find our outputs valid and build
# nothing) and --no-out-link; the results that Nix is given (registration through nix-store
# --import, result links as GC roots, no rebuild of valid outputs, -K, a .nix argument) are
# tested at the end.
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

if ! setup_out=$("$E2E_DIR/nix_setup.sh" 2>&1); then
  t_skip "nix-build compat" "Nix is not usable: $setup_out"
  t_done; exit
fi
if ! command -v runc >/dev/null; then
  t_skip "nix-build compat" "runc is not installed"
  t_done; exit
fi
NIX_OPTS=(--option sandbox true --option sandbox-fallback false --option substituters "")
export OCIBUILD_DATA_DIR=$T_TMP/data
NONCE="$(date +%s%N)-$$"
cd "$T_TMP" || exit 1
OURS=(--no-register --no-out-link)

bash_path=$(nix-store --add /bin/bash-static)
# busybox picks the applet from argv[0] ("busybox" is needed), so it goes in as <path>/bin/busybox
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
    nonce = "$NONCE";
  } // attrs);
  c1 = mk "obi-chain-1" "echo one > \$out" {};
  c2 = mk "obi-chain-2" "read -r x < \${c1}; echo \"\$x two \${c1}\" > \$out" {};
  c3 = mk "obi-chain-3" "\$busybox mkdir \$out; read -r x < \${c2}; echo \"\$x three \${c2}\" > \$out/file" {};
in {
  chain = c3;
  multi = mk "obi-multi" ''
    echo "lib at \$lib" > \$lib
    echo "dev uses \$lib" > \$dev
    \$busybox mkdir -p \$out/bin \$out/share
    echo "out uses \$dev and \${c1}" > \$out/share/info
    printf '#!/bin/sh\necho hi\n' > \$out/bin/tool
    \$busybox chmod 755 \$out/bin/tool
    \$busybox ln -s ../share/info \$out/bin/info-link
  '' { outputs = [ "out" "dev" "lib" ]; };
  passfile = mk "obi-passfile" "read -r x < \$textPath; \$busybox cp \$textPath \$out" {
    text = "a \"quoted\"\n\ttab\\\\ back\r and \${c1}";
    passAsFile = [ "text" ];
  };
  env = mk "obi-env" "export -p | \$busybox grep -v -e SHLVL -e OLDPWD > \$out" {};
  fod = mk "obi-fod" "echo -n hello > \$out" {
    outputHashMode = "flat"; outputHashAlgo = "sha256";
    outputHash = "2cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824";
  };
  fod-recursive = mk "obi-fod-r" "\$busybox mkdir \$out; echo -n hello > \$out/x" {
    outputHashMode = "recursive"; outputHashAlgo = "sha256";
    outputHash = "$(mkdir -p "$T_TMP/fodr" && printf hello >"$T_TMP/fodr/x" && nix-hash --type sha256 "$T_TMP/fodr")";
  };
  fod-wrong = mk "obi-fod-wrong" "echo -n hellp > \$out" {
    outputHashMode = "flat"; outputHashAlgo = "sha256";
    outputHash = "2cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824";
  };
  failing = mk "obi-failing" "echo about to fail >&2; echo left behind > keep-me; exit 3" {};
  # two leaves that each take a second, and their join: each leaf writes when it started and
  # ended (bash's EPOCHREALTIME)
  fan = let leaf = i: mk "obi-fan-leaf-\${toString i}" "s=\$EPOCHREALTIME; \$busybox sleep 1; echo \$s \$EPOCHREALTIME > \$out" {};
        in mk "obi-fan-join" "\$busybox cat \${leaf 1} \${leaf 2} > \$out" {};
  # two leaves that never end, for an interrupted -j 2 session
  spin = let leaf = i: mk "obi-spin-\${toString i}" "read -t 2 x < /dev/zero; while :; do :; done" {};
         in mk "obi-spin-join" "echo \${leaf 1} \${leaf 2} > \$out" {};
  remote = mk "obi-remote" "echo remote \${c1} > \$out" {};
  registered = mk "obi-registered" "\$busybox mkdir \$out; echo \${c1} > \$out/dep" {};
}
NIX

py_field() { # JSON FILE, output name, field
  /usr/bin/python3 -c 'import json,sys; o=json.load(open(sys.argv[1]))["outputs"][sys.argv[2]]; v=o[sys.argv[3]]; print(" ".join(v) if isinstance(v, list) else v)' "$@"
}

compare_attr() { # ATTR
  local attr=$1 drv out_json
  if ! drv=$(nix-instantiate "$T_TMP/drvs.nix" -A "$attr" 2>"$T_TMP/err"); then
    t_fail "$attr: nix-instantiate" "$(cat "$T_TMP/err")"; return
  fi
  out_json=$T_TMP/$attr.json
  if ! "$OCIBUILD" nix-build "${OURS[@]}" "$drv" >"$out_json" 2>"$T_TMP/$attr.log"; then
    t_fail "$attr: ocibuild nix-build" "$(tail -15 "$T_TMP/$attr.log")"; return
  fi
  if ! nix-store "${NIX_OPTS[@]}" --realise "$drv" >/dev/null 2>"$T_TMP/$attr.nixlog"; then
    t_fail "$attr: nix-store --realise" "$(tail -10 "$T_TMP/$attr.nixlog")"; return
  fi
  local name path ours theirs
  for name in $(/usr/bin/python3 -c 'import json,sys; print(" ".join(json.load(open(sys.argv[1]))["outputs"]))' "$out_json"); do
    path=$(py_field "$out_json" "$name" path)
    ours=$(py_field "$out_json" "$name" narHash)
    theirs=$(nix-store -q --hash "$path")
    if [ "$ours" = "$theirs" ]; then t_ok "$attr.$name: narHash equals Nix's"
    else t_fail "$attr.$name: narHash equals Nix's" "ocibuild: $ours
nix:      $theirs"; fi
    ours=$(py_field "$out_json" "$name" references)
    theirs=$(nix-store -q --references "$path" | sort | tr '\n' ' ' | sed 's/ $//')
    if [ "$ours" = "$theirs" ]; then t_ok "$attr.$name: references equal Nix's"
    else t_fail "$attr.$name: references equal Nix's" "ocibuild: $ours
nix:      $theirs"; fi
  done
}

for attr in chain multi passfile env fod fod-recursive; do compare_attr "$attr"; done

# The chain's input derivations were built by ocibuild (they were not in /nix/store before).
n_built=$(ls "$OCIBUILD_DATA_DIR/nix-path-info" 2>/dev/null | grep -c 'obi-chain-')
if [ "$n_built" -eq 3 ]; then t_ok "chain: ocibuild built all three derivations of the chain"
else t_fail "chain: ocibuild built all three derivations of the chain" "recorded: $n_built"; fi

# Rebuilding reuses the recorded inputs: same result.
drv=$(nix-instantiate "$T_TMP/drvs.nix" -A chain 2>/dev/null)
if again=$("$OCIBUILD" nix-build "${OURS[@]}" "$drv" 2>&1) && [ "$again" = "$(cat "$T_TMP/chain.json")" ]; then
  t_ok "chain: a second nix-build gives the same JSON"
else t_fail "chain: a second nix-build gives the same JSON" "$again"; fi

# What nix-build recorded, served by a daemon's PathInfoService over the same data dir: Get by
# each output's digest answers the record, and CalculateNAR of its entry (read from castore)
# equals the NAR hash Nix computed for the same path built by Nix.
P="$T_TMP/pathinfo"; mkdir -p "$P"
"$OCIBUILD" daemon --listen "unix:$P/sock" --build-service dummy:// 2>"$P/log" &
pi_pid=$!
t_cleanup "kill $pi_pid; wait $pi_pid"
for _ in $(seq 1 100); do [ -S "$P/sock" ] && break; sleep 0.1; done
paths=""
for attr in chain multi; do
  for name in $(/usr/bin/python3 -c 'import json,sys; print(" ".join(json.load(open(sys.argv[1]))["outputs"]))' "$T_TMP/$attr.json"); do
    paths="$paths $(py_field "$T_TMP/$attr.json" "$name" path)"
  done
done
# shellcheck disable=SC2086
if ! answers=$(/usr/bin/python3 "$E2E_DIR/pathinfo_query.py" "$P/sock" $paths 2>"$P/query.err"); then
  t_fail "PathInfoService answers for what nix-build recorded" "$(cat "$P/query.err" "$P/log" | tail -20)"
elif [[ "$answers" == SKIP* ]]; then
  t_skip "PathInfoService answers for what nix-build recorded" "${answers#SKIP }"
else
  while read -r path recorded calculated _size refs; do
    theirs=$(nix-store -q --hash "$path")
    name="PathInfo of ${path#/nix/store/*-}: Get's narHash and CalculateNAR equal nix-store -q --hash"
    if [ "$recorded" = "$theirs" ] && [ "$calculated" = "$theirs" ]; then t_ok "$name"
    else t_fail "$name" "recorded $recorded, calculated $calculated, nix $theirs"; fi
    theirs=$(nix-store -q --references "$path" | sort | tr '\n' ' ' | sed 's/ $//')
    name="PathInfo of ${path#/nix/store/*-}: references equal Nix's"
    if [ "$refs" = "$theirs" ]; then t_ok "$name"; else t_fail "$name" "ours: $refs
nix:  $theirs"; fi
  done <<<"$answers"
fi

# A derivation built through a daemon (inputs go into the daemon's store over gRPC and its OCI
# builder runs the build) gives the same JSON as built here. (Not the chain: Nix has built it
# by now, and valid outputs are not built again.)
D="$T_TMP/daemon"; mkdir -p "$D"
OCIBUILD_DATA_DIR="$D/data" "$OCIBUILD" daemon --listen "unix:$D/sock" 2>"$D/log" &
daemon_pid=$!
t_cleanup "kill $daemon_pid; wait $daemon_pid"
for _ in $(seq 1 100); do [ -S "$D/sock" ] && break; sleep 0.1; done
drv=$(nix-instantiate "$T_TMP/drvs.nix" -A remote 2>/dev/null)
if remote=$(OCIBUILD_DATA_DIR="$D/client" "$OCIBUILD" nix-build "${OURS[@]}" --store "grpc+unix://$D/sock" \
              --build-service "grpc+unix://$D/sock" "$drv" 2>"$D/client.log") &&
   [ "$remote" = "$("$OCIBUILD" nix-build "${OURS[@]}" "$drv" 2>/dev/null)" ]; then
  t_ok "remote: nix-build through the daemon (remote store and builder) gives the same JSON"
else t_fail "remote: nix-build through the daemon (remote store and builder) gives the same JSON" "$remote
$(cat "$D/client.log" "$D/log" | tail -20)"; fi
grep -q "BuildService/DoBuild.* OK" "$D/log" && t_ok "remote: the daemon ran the build" ||
  t_fail "remote: the daemon ran the build" "$(tail -5 "$D/log")"

# --no-register --out-link exports the outputs as copies: out at DIR, the others at DIR-NAME.
drv=$(nix-instantiate "$T_TMP/drvs.nix" -A multi 2>/dev/null)
if "$OCIBUILD" nix-build --no-register --out-link "$T_TMP/copy" "$drv" >/dev/null 2>"$T_TMP/link.log" &&
   diff -r "$T_TMP/copy" "$(nix-store -q --outputs "$drv" | grep -v -- '-dev$' | grep -v -- '-lib$')" >/dev/null &&
   [ -f "$T_TMP/copy-dev" ] && [ -f "$T_TMP/copy-lib" ]; then
  t_ok "multi: --no-register --out-link exports out at DIR and the others at DIR-NAME"
else t_fail "multi: --no-register --out-link exports out at DIR and the others at DIR-NAME" "$(cat "$T_TMP/link.log"; ls -la "$T_TMP")"; fi
chmod -R u+w "$T_TMP"/copy* 2>/dev/null

# Failures: both fail.
for attr in fod-wrong failing; do
  drv=$(nix-instantiate "$T_TMP/drvs.nix" -A "$attr" 2>/dev/null)
  out=$("$OCIBUILD" nix-build "${OURS[@]}" "$drv" 2>&1); rc=$?
  nix-store "${NIX_OPTS[@]}" --realise "$drv" >/dev/null 2>&1; nix_rc=$?
  case $attr in
    fod-wrong) want="hash mismatch in fixed-output derivation" ;;
    failing) want="about to fail" ;;
  esac
  if [ $rc -ne 0 ] && [ $nix_rc -ne 0 ] && [[ "$out" == *"$want"* ]]; then
    t_ok "$attr: fails here (saying '$want') and in Nix"
  else t_fail "$attr: fails here (saying '$want') and in Nix" "rc=$rc nix_rc=$nix_rc
$out"; fi
  # Nix's exit codes: 100 a failed build, 102 a hash mismatch (docs/cli.md).
  [ $rc -eq $nix_rc ] && t_ok "$attr: the exit code is Nix's ($nix_rc)" ||
    t_fail "$attr: the exit code is Nix's ($nix_rc)" "rc=$rc nix_rc=$nix_rc"
done
out=$("$OCIBUILD" nix-build "${OURS[@]}" "$(nix-instantiate "$T_TMP/drvs.nix" -A fod-wrong 2>/dev/null)" 2>&1)
t_contains "fod-wrong: the error names both hashes" "$out" \
  "specified sha256:094qif9n4cq4fdg459qzbhg1c6wywawwaaivx0k0x8xhbyx4vwic, got sha256:1rscm841ggcb1h2f5f9dyjimgmc9diiv9gfa3pbszqn411g5imzx"

# -K keeps the failed build's directory and names it; what the builder left is there.
drv=$(nix-instantiate "$T_TMP/drvs.nix" -A failing 2>/dev/null)
out=$("$OCIBUILD" nix-build "${OURS[@]}" -K "$drv" 2>&1)
kept=$(printf '%s\n' "$out" | sed -n "s/.*note: keeping build directory '\([^']*\)'.*/\1/p" | head -1)
if [ -n "$kept" ] && [ "$(cat "$kept/keep-me" 2>/dev/null)" = "left behind" ]; then
  t_ok "failing: -K keeps the build directory and prints it"
else t_fail "failing: -K keeps the build directory and prints it" "kept='$kept'
$out"; fi

# Results Nix can use: the outputs and the part of their closure /nix/store lacks go in through
# nix-store --import; ./result is a symlink registered as a GC root, as nix-build makes it.
drv=$(nix-instantiate "$T_TMP/drvs.nix" -A registered 2>/dev/null)
if "$OCIBUILD" nix-build "$drv" >"$T_TMP/registered.json" 2>"$T_TMP/registered.log"; then
  path=$(py_field "$T_TMP/registered.json" out path)
  theirs=$(nix-store -q --hash "$path" 2>&1)
  [ "$theirs" = "$(py_field "$T_TMP/registered.json" out narHash)" ] &&
    t_ok "registered: Nix knows the output with our NAR hash" ||
    t_fail "registered: Nix knows the output with our NAR hash" "$theirs"
  refs=$(nix-store -q --references "$path" 2>&1 | tr '\n' ' ' | sed 's/ $//')
  [ "$refs" = "$(py_field "$T_TMP/registered.json" out references)" ] &&
    t_ok "registered: with our references (the input built here registered too)" ||
    t_fail "registered: with our references (the input built here registered too)" "$refs"
  nix-store --verify-path "$path" 2>&1 && t_ok "registered: nix-store --verify-path accepts it" ||
    t_fail "registered: nix-store --verify-path accepts it" ""
  [ -L result ] && [ "$(readlink result)" = "$path" ] &&
    nix-store --gc --print-roots 2>/dev/null | grep -q "^$T_TMP/result -> $path" &&
    t_ok "registered: ./result links to the output and is a GC root" ||
    t_fail "registered: ./result links to the output and is a GC root" "$(ls -l result 2>&1)"
  # a second run builds nothing (the record of a build is written only by a build) and
  # replaces the link
  record=$OCIBUILD_DATA_DIR/nix-path-info/$(basename "$path").json
  before=$(stat -c %y "$record")
  if again=$("$OCIBUILD" nix-build "$drv" 2>"$T_TMP/again.log") &&
     [ "$again" = "$(cat "$T_TMP/registered.json")" ] && [ "$(stat -c %y "$record")" = "$before" ] &&
     [ "$(readlink result)" = "$path" ]; then
    t_ok "registered: a second run rebuilds nothing and keeps the link"
  else t_fail "registered: a second run rebuilds nothing and keeps the link" "$(cat "$T_TMP/again.log")"; fi
  # so Nix does not build it either
  nix_out=$(nix-store "${NIX_OPTS[@]}" --realise "$drv" 2>"$T_TMP/realise.log")
  [ "$nix_out" = "$path" ] && t_ok "registered: nix-store --realise finds it valid" ||
    t_fail "registered: nix-store --realise finds it valid" "$nix_out $(cat "$T_TMP/realise.log")"
  rm -f result
else
  t_fail "registered: ocibuild nix-build" "$(tail -15 "$T_TMP/registered.log")"
fi

# -j 2: the two leaves of the fan-out are built at the same time.
drv=$(nix-instantiate "$T_TMP/drvs.nix" -A fan 2>/dev/null)
if json=$("$OCIBUILD" nix-build -j 2 --no-out-link "$drv" 2>"$T_TMP/fan.log"); then
  times=$(cat "$(printf '%s' "$json" | /usr/bin/python3 -c 'import json,sys; print(json.load(sys.stdin)["outputs"]["out"]["path"])')")
  if printf '%s\n' "$times" | /usr/bin/python3 -c 'import sys
(s1, e1), (s2, e2) = [map(float, l.split()) for l in sys.stdin.read().split("\n")[:2]]
sys.exit(0 if s1 < e2 and s2 < e1 else 1)'; then
    t_ok "fan: under -j 2 the leaves overlap in time"
  else t_fail "fan: under -j 2 the leaves overlap in time" "start end per leaf: $times"; fi
else t_fail "fan: ocibuild nix-build -j 2" "$(tail -10 "$T_TMP/fan.log")"; fi

# SIGINT while two builds run: both containers and bundles go, the error says so.
drv=$(nix-instantiate "$T_TMP/drvs.nix" -A spin 2>/dev/null)
spin_data=$T_TMP/spin-data
OCIBUILD_DATA_DIR=$spin_data "$OCIBUILD" nix-build -j 2 --no-register --no-out-link "$drv" \
  >/dev/null 2>"$T_TMP/spin.log" &
spin_pid=$!
running() { find "$spin_data/bundles" -mindepth 1 -maxdepth 1 -not -name '.*' 2>/dev/null | wc -l; }
for _ in $(seq 1 100); do [ "$(running)" -ge 2 ] && break; sleep 0.1; done
started=$(running)
kill -INT "$spin_pid"
wait "$spin_pid"; spin_rc=$?
if [ "$started" -ge 2 ] && [ $spin_rc -eq 130 ] && [ "$(running)" -eq 0 ] &&
   grep -q "interrupted by Interrupt" "$T_TMP/spin.log" && ! runc list 2>/dev/null | grep -qw running.*"$spin_data"; then
  t_ok "spin: SIGINT during two builds removes both containers and bundles"
else t_fail "spin: SIGINT during two builds removes both containers and bundles" "started=$started rc=$spin_rc left=$(running)
$(tail -5 "$T_TMP/spin.log")"; fi

# A .nix file is instantiated first (-A as nix-build's); -o names the link.
if json=$("$OCIBUILD" nix-build --no-register --no-out-link "$T_TMP/drvs.nix" -A chain 2>"$T_TMP/nixfile.log") &&
   [ "$json" = "$(cat "$T_TMP/chain.json")" ]; then
  t_ok "chain: a .nix argument is instantiated and built"
else t_fail "chain: a .nix argument is instantiated and built" "$json
$(tail -5 "$T_TMP/nixfile.log")"; fi
t_done
