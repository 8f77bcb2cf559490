#!/bin/bash
# Compares ocibuild's Nix pieces with Nix itself (Debian's nix-bin, prepared by nix_setup.sh):
# NAR hashes of paths against `nix-hash --type sha256 --base32` and `nix-store -q --hash`, and
# the parsed view of .drv files written by `nix-instantiate` against `nix show-derivation`.
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
PY=/usr/bin/python3

if ! setup_out=$("$E2E_DIR/nix_setup.sh" 2>&1); then
  t_skip "nix compat" "Nix is not usable: $setup_out"
  t_done; exit
fi
NIX_OPTS=(--option sandbox true --option sandbox-fallback false --option substituters "")

# ---- NAR hashes of paths on disk ----
tree=$T_TMP/tree
mkdir -p "$tree/sub/deeper" "$tree/empty"
printf 'hello\n' >"$tree/b"
printf '#!/bin/sh\necho hi\n' >"$tree/a.sh"; chmod 755 "$tree/a.sh"
printf '12345678' >"$tree/sub/eight"
: >"$tree/sub/deeper/empty-file"
ln -s ../b "$tree/sub/link"
ln -s /nix/store/does-not-exist "$tree/dangling"
head -c 100000 /dev/urandom >"$tree/sub/random"
for p in "$tree" "$tree/b" "$tree/a.sh" "$tree/sub/link" "$tree/empty" "$tree/sub/random" /bin/bash-static; do
  want="sha256:$(nix-hash --type sha256 --base32 "$p" 2>&1)"
  got=$("$OCIBUILD" nar-hash "$p" 2>&1)
  name="nar-hash of ${p#"$T_TMP"/} equals nix-hash"
  if [ "$got" = "$want" ]; then t_ok "$name"; else t_fail "$name" "ocibuild: $got
nix-hash: $want"; fi
done

out=$("$OCIBUILD" nar-hash "$T_TMP/missing" 2>&1)
if [ $? -ne 0 ] && [[ "$out" == *"$T_TMP/missing"* ]]; then t_ok "nar-hash of a missing path fails naming it"
else t_fail "nar-hash of a missing path fails naming it" "$out"; fi

# ---- store paths and derivations ----
bash_path=$(nix-store --add /bin/bash-static 2>&1)
if [[ "$bash_path" != /nix/store/* ]]; then
  t_fail "nix-store --add /bin/bash-static" "$bash_path"; t_done; exit
fi
got=$("$OCIBUILD" nar-hash "$bash_path")
want=$(nix-store -q --hash "$bash_path")
if [ "$got" = "$want" ]; then t_ok "nar-hash of a store path equals nix-store -q --hash"
else t_fail "nar-hash of a store path equals nix-store -q --hash" "ocibuild: $got
nix-store: $want"; fi

cat >"$T_TMP/drvs.nix" <<NIX
let
  bash = builtins.storePath "$bash_path";
  dep = builtins.derivation {
    name = "obi-e2e-dep"; system = builtins.currentSystem; builder = bash;
    args = [ "-c" "echo hi > \$out; echo d > \$dev" ]; outputs = [ "out" "dev" ];
  };
in {
  hello = builtins.derivation {
    name = "obi-e2e-hello"; system = builtins.currentSystem; builder = bash;
    args = [ "-c" "read -r x < \$textPath; read -r y < \${dep.dev}; echo \"\$x \$y \${dep.dev}\" > \$out" ];
    text = "a \"quoted\"\n\ttab\\\\ back\r";
    passAsFile = [ "text" ];
  };
  inherit dep;
  fod = builtins.derivation {
    name = "obi-e2e-fod"; system = builtins.currentSystem; builder = bash;
    args = [ "-c" "echo -n hello > \$out" ];
    outputHashMode = "flat"; outputHashAlgo = "sha256";
    outputHash = "2cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824";
  };
  rfod = builtins.derivation {
    name = "obi-e2e-rfod"; system = builtins.currentSystem; builder = bash;
    args = [ "-c" "echo -n hello > \$out" ];
    outputHashMode = "recursive"; outputHashAlgo = "sha1";
    outputHash = "0000000000000000000000000000000000000000";
  };
  # floating content-addressed, and an input-addressed one on it (deferred): no "path" keys
  ca = builtins.derivation {
    name = "obi-e2e-ca"; system = builtins.currentSystem; builder = bash;
    args = [ "-c" "echo ca > \$out" ]; __contentAddressed = true;
    outputHashMode = "recursive"; outputHashAlgo = "sha256";
  };
  on-ca = builtins.derivation {
    name = "obi-e2e-on-ca"; system = builtins.currentSystem; builder = bash;
    args = [ "-c" "echo \${(builtins.derivation {
      name = "obi-e2e-ca2"; system = builtins.currentSystem; builder = bash;
      args = [ "-c" "echo ca2 > \$out" ]; __contentAddressed = true;
      outputHashMode = "recursive"; outputHashAlgo = "sha256"; })} > \$out" ];
  };
}
NIX
CA=(--extra-experimental-features ca-derivations)
if ! drvs=$(nix-instantiate "${CA[@]}" "$T_TMP/drvs.nix" 2>"$T_TMP/instantiate.err"); then
  t_fail "nix-instantiate the test derivations" "$(cat "$T_TMP/instantiate.err")"; t_done; exit
fi
t_ok "nix-instantiate the test derivations"
# shellcheck disable=SC2086
set -- $drvs
if nix --extra-experimental-features "nix-command ca-derivations" show-derivation "$@" >"$T_TMP/nix.json" 2>"$T_TMP/nix.err"; then
  if "$OCIBUILD" show-derivation "$@" >"$T_TMP/ours.json" 2>"$T_TMP/ours.err"; then
    if diff_out=$($PY - "$T_TMP/nix.json" "$T_TMP/ours.json" <<'PYEOF'
import json, sys
a, b = (json.load(open(p)) for p in sys.argv[1:3])
if a != b:
    for k in sorted(set(a) | set(b)):
        if a.get(k) != b.get(k):
            print(k, "\nnix:     ", json.dumps(a.get(k), sort_keys=True), "\nocibuild:", json.dumps(b.get(k), sort_keys=True))
    sys.exit(1)
PYEOF
    ); then t_ok "show-derivation equals nix show-derivation for $# derivations"
    else t_fail "show-derivation equals nix show-derivation for $# derivations" "$diff_out"; fi
  else
    t_fail "show-derivation parses the .drv files" "$(cat "$T_TMP/ours.err")"
  fi
else
  t_skip "show-derivation equals nix show-derivation" "nix show-derivation failed: $(head -3 "$T_TMP/nix.err")"
fi

# Byte for byte, in the reverse order of arguments too (Nix prints a sorted set).
if nix --extra-experimental-features "nix-command ca-derivations" show-derivation "$@" >"$T_TMP/nix.bytes" 2>/dev/null &&
   rev=$(printf '%s\n' "$@" | tac) &&
   # shellcheck disable=SC2086
   "$OCIBUILD" show-derivation $rev >"$T_TMP/ours.bytes" 2>"$T_TMP/ours.err" &&
   cmp -s "$T_TMP/nix.bytes" "$T_TMP/ours.bytes"; then
  t_ok "show-derivation prints the bytes nix show-derivation prints"
else t_fail "show-derivation prints the bytes nix show-derivation prints" "$(diff "$T_TMP/nix.bytes" "$T_TMP/ours.bytes" | head -20; cat "$T_TMP/ours.err")"; fi

# Strings Nix 2.8 prints without making them UTF-8 (its own JSON writer): bytes that are not
# UTF-8 come out as they are, control bytes as \u00xx.
{ printf 'builtins.derivation { name = "obi-e2e-bytes"; system = builtins.currentSystem; builder = builtins.storePath "%s"; args = []; v = "' "$bash_path"
  printf 'a\377b\303( \001\010\014\033\177 \\"q\\" \303\251'
  printf '"; }\n'; } >"$T_TMP/bytes.nix"
if bytes_drv=$(nix-instantiate "$T_TMP/bytes.nix" 2>"$T_TMP/bytes.err") &&
   nix --extra-experimental-features nix-command show-derivation "$bytes_drv" >"$T_TMP/nix-bytes.json" 2>>"$T_TMP/bytes.err"; then
  if "$OCIBUILD" show-derivation "$bytes_drv" >"$T_TMP/ours-bytes.json" 2>"$T_TMP/ours-bytes.err" &&
     cmp -s "$T_TMP/nix-bytes.json" "$T_TMP/ours-bytes.json"; then
    t_ok "show-derivation of a .drv with non-UTF-8 bytes prints what Nix 2.8 prints"
  else t_fail "show-derivation of a .drv with non-UTF-8 bytes prints what Nix 2.8 prints" "$(cat "$T_TMP/ours-bytes.err"; diff <(od -c "$T_TMP/nix-bytes.json") <(od -c "$T_TMP/ours-bytes.json") | head)"; fi
else t_skip "show-derivation of a .drv with non-UTF-8 bytes" "nix: $(tail -3 "$T_TMP/bytes.err")"; fi

printf 'Derive(x' >"$T_TMP/bad.drv"
out=$("$OCIBUILD" show-derivation "$T_TMP/bad.drv" 2>&1)
if [ $? -ne 0 ] && [[ "$out" == *"$T_TMP/bad.drv: drv: offset 7: expected '[' got 'x'"* ]]; then
  t_ok "show-derivation of a broken .drv fails with path and byte offset"
else t_fail "show-derivation of a broken .drv fails with path and byte offset" "$out"; fi

# ---- outputs built by Nix: our NAR hash equals the one Nix recorded ----
hello_drv=$(nix-instantiate "$T_TMP/drvs.nix" -A hello 2>/dev/null)
if out_paths=$(nix-store "${NIX_OPTS[@]}" --realise "$hello_drv" 2>"$T_TMP/build.err"); then
  for p in $(nix-store -q -R $out_paths); do
    got=$("$OCIBUILD" nar-hash "$p")
    want=$(nix-store -q --hash "$p")
    if [ "$got" = "$want" ]; then t_ok "nar-hash of built $(basename "$p") equals nix-store -q --hash"
    else t_fail "nar-hash of built $(basename "$p") equals nix-store -q --hash" "ocibuild: $got
nix-store: $want"; fi
  done
else
  t_fail "nix-store --realise the test derivation (sandbox on)" "$(tail -5 "$T_TMP/build.err")"
fi
t_done
