#!/bin/bash
# Issue 15: every check Nix 2.8 makes and every derivation feature, each built twice: by
# `ocibuild nix-build --no-register` first (so that Nix cannot reuse its outputs), then by
# `nix-build` with the sandbox on and no substituters. Either both succeed with the same output
# paths, NAR hashes and references, or both fail, each saying why in Nix's words. A nonce keeps
# every derivation out of /nix/store before the test.
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

if ! setup_out=$("$E2E_DIR/nix_setup.sh" 2>&1); then
  t_skip "nix fidelity" "Nix is not usable: $setup_out"
  t_done; exit
fi
if ! command -v runc >/dev/null; then
  t_skip "nix fidelity" "runc is not installed"
  t_done; exit
fi
NIX_OPTS=(--option sandbox true --option sandbox-fallback false --option substituters ""
          --extra-experimental-features ca-derivations)
export OCIBUILD_DATA_DIR=$T_TMP/data
NONCE="$(date +%s%N)-$$"
PY=/usr/bin/python3
cd "$T_TMP" || exit 1

bash_path=$(nix-store --add /bin/bash-static)
mkdir -p "$T_TMP/busybox/bin" && cp /bin/busybox "$T_TMP/busybox/bin/busybox"
busybox_path=$(nix-store --add "$T_TMP/busybox")
hello_sha256=2cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824
cat >"$T_TMP/f.nix" <<NIX
let
  bash = builtins.storePath "$bash_path";
  bb = "\${builtins.storePath "$busybox_path"}/bin/busybox";
  mk = name: script: attrs: builtins.derivation ({
    inherit name;
    system = builtins.currentSystem; builder = bash;
    args = [ "-e" "-c" script ];
    nonce = "$NONCE";
  } // attrs);
  leaf = mk "obi-f-leaf" "echo leaf > \$out" {};
  mid = mk "obi-f-mid" "echo \${leaf} > \$out" {};
  refsMid = attrs: mk "obi-f-refs" "echo \${mid} > \$out" attrs;
  ca = name: script: attrs: mk name script ({
    __contentAddressed = true; outputHashMode = "recursive"; outputHashAlgo = "sha256";
  } // attrs);
in rec {
  allowed-refs-ok = refsMid { allowedReferences = [ mid ]; };
  allowed-refs-bad = refsMid { allowedReferences = []; };
  disallowed-refs = refsMid { disallowedReferences = [ mid ]; };
  allowed-requisites-ok = refsMid { allowedRequisites = [ mid leaf ]; };
  allowed-requisites-bad = refsMid { allowedRequisites = [ mid ]; };
  disallowed-requisites = refsMid { disallowedRequisites = [ leaf ]; };
  output-cycle = mk "obi-f-cycle" "echo \$dev > \$out; echo \$out > \$dev" { outputs = [ "out" "dev" ]; };
  flat-executable = mk "obi-f-flatx" "echo -n hello > \$out; \${bb} chmod +x \$out" {
    outputHashMode = "flat"; outputHashAlgo = "sha256"; outputHash = "$hello_sha256"; };
  wrong-system = mk "obi-f-system" "echo x > \$out" { system = "mips64-plan9"; };
  unknown-feature = mk "obi-f-feature" "echo x > \$out" { requiredSystemFeatures = [ "gpu" ]; };
  known-feature = mk "obi-f-feature-ok" "echo x > \$out" { requiredSystemFeatures = [ "big-parallel" ]; };
  no-chroot = mk "obi-f-nochroot" "echo x > \$out" { __noChroot = true; };
  impure-host-deps = mk "obi-f-impure" "echo x > \$out" { __impureHostDeps = [ "/usr/lib" ]; };
  placeholders = mk "obi-f-placeholder" ''
    echo "arg \${builtins.placeholder "out"}" > \$out
    echo "env \$myOut \$devPath" >> \$out
    \${bb} cat \$notePath >> \$out
    echo dev > \$dev
  '' { outputs = [ "out" "dev" ]; myOut = builtins.placeholder "out";
       devPath = builtins.placeholder "dev"; note = "file \${builtins.placeholder "dev"}";
       passAsFile = [ "note" ]; };
  impure-env-missing = mk "obi-f-impure-env-missing" ''[ "\$OBI_F_IMPURE" = expected ] || { echo "OBI_F_IMPURE='\$OBI_F_IMPURE'"; exit 1; }; echo -n hello > \$out'' {
    impureEnvVars = [ "OBI_F_IMPURE" ];
    outputHashMode = "flat"; outputHashAlgo = "sha256"; outputHash = "$hello_sha256"; };
  impure-env = mk "obi-f-impure-env" ''[ "\$OBI_F_IMPURE" = expected ] || { echo "OBI_F_IMPURE='\$OBI_F_IMPURE'"; exit 1; }; echo -n hello > \$out'' {
    impureEnvVars = [ "OBI_F_IMPURE" ];
    outputHashMode = "flat"; outputHashAlgo = "sha256"; outputHash = "$hello_sha256"; };
  name-reference = mk "obi-f-name-ref" "\${bb} mkdir \$out; \${bb} touch \$out/\$(\${bb} basename \${leaf})" {};
  structured = mk "obi-f-structured" ''
    out=\${builtins.placeholder "out"}
    \${bb} cp /build/.attrs.json \$out
    echo >> \$out
    \${bb} cat /build/.attrs.sh >> \$out
    [ -r "\$NIX_ATTRS_JSON_FILE" ] && echo readable-json-file >&2 || true
    export -p | \${bb} grep -v -e SHLVL -e OLDPWD -e NIX_ATTRS_ -e ' out=' >> \$out
  '' { __structuredAttrs = true; str = "a 'q' \"s\""; num = 42; flt = 1.5; t = true; f = false;
       n = null; list = [ "a" 1 true ]; obj = { k = "v"; }; dep = mid; };
  structured-checks = mk "obi-f-structured-checks" "\${bb} cat \${mid} > \${builtins.placeholder "out"}" {
    __structuredAttrs = true; outputChecks.out.disallowedReferences = [ leaf ]; };
  export-graph = mk "obi-f-export" "\${bb} cat closure > \$out" { exportReferencesGraph = [ "closure" mid ]; };
  export-graph-structured = mk "obi-f-export-s" "\${bb} cp /build/.attrs.json \${builtins.placeholder "out"}" {
    __structuredAttrs = true; exportReferencesGraph.closure = [ mid ]; };
  ca-root = ca "obi-f-ca-root" ''
    \${bb} mkdir \$out
    echo \${leaf} > \$out/dep
    \${bb} ln -s \$out \$out/self
    echo "i am \$out" > \$out/me
  '' {};
  ca-dependent = ca "obi-f-ca-dep" "echo \${ca-root}/me > \$out; \${bb} cat \${ca-root}/me >> \$out" {};
  ia-on-ca = mk "obi-f-ia-on-ca" "echo \${ca-dependent} > \$out" {};
  sandbox-view = mk "obi-f-view" ''
    {
      echo "input owner and mtime: \$(\${bb} stat -c '%U:%G %Y' \${mid})"
      [ -e /sys ] && echo "/sys present" || echo "/sys absent"
      [ -e /dev/kvm ] && echo "/dev/kvm present" || echo "/dev/kvm absent"
      echo "build dir mode: \$(\${bb} stat -c %a /build)"
      echo "tmp mode: \$(\${bb} stat -c %a /tmp)"
      \${bb} touch /tmp/x && echo "/tmp writable"
    } > \$out
  '' {};
}
NIX

# Builds ATTR with both; WANT is "same", or "fail:OURS|NIX" (a substring of each one's error).
check() {
  local attr=$1 want=$2 drv ours_rc nix_rc
  if ! drv=$(nix-instantiate --extra-experimental-features ca-derivations "$T_TMP/f.nix" -A "$attr" 2>"$T_TMP/$attr.inst"); then
    t_fail "$attr: nix-instantiate" "$(cat "$T_TMP/$attr.inst")"; return
  fi
  "$OCIBUILD" nix-build --no-register --no-out-link "$drv" >"$T_TMP/$attr.json" 2>"$T_TMP/$attr.err"; ours_rc=$?
  nix-store "${NIX_OPTS[@]}" --realise "$drv" >"$T_TMP/$attr.nixout" 2>"$T_TMP/$attr.nixerr"; nix_rc=$?
  if [ "$want" != same ]; then
    local ours_msg=${want#fail:}; ours_msg=${ours_msg%%|*}
    local nix_msg=${want#*|}
    if [ $ours_rc -ne 0 ] && [ $nix_rc -ne 0 ] && grep -qF -- "$ours_msg" "$T_TMP/$attr.err" &&
       grep -qF -- "$nix_msg" "$T_TMP/$attr.nixerr"; then
      t_ok "$attr: both fail ($ours_msg)"
    else
      t_fail "$attr: both fail ($ours_msg)" "ocibuild rc=$ours_rc: $(tail -5 "$T_TMP/$attr.err")
nix rc=$nix_rc: $(tail -5 "$T_TMP/$attr.nixerr")"
    fi
    return
  fi
  if [ $ours_rc -ne 0 ] || [ $nix_rc -ne 0 ]; then
    t_fail "$attr: both build" "ocibuild rc=$ours_rc: $(tail -8 "$T_TMP/$attr.err")
nix rc=$nix_rc: $(tail -8 "$T_TMP/$attr.nixerr")"; return
  fi
  local ours_paths nix_paths
  ours_paths=$($PY -c 'import json,sys; print("\n".join(sorted(o["path"] for o in json.load(open(sys.argv[1]))["outputs"].values())))' "$T_TMP/$attr.json")
  nix_paths=$(sort "$T_TMP/$attr.nixout")
  if [ "$ours_paths" != "$nix_paths" ]; then
    t_fail "$attr: same output paths" "ocibuild: $ours_paths
nix:      $nix_paths"; return
  fi
  local detail="" path ours theirs
  while read -r path hash refs; do
    theirs=$(nix-store -q --hash "$path")
    [ "$hash" = "$theirs" ] || detail+="$path: narHash ocibuild $hash, nix $theirs
"
    theirs=$(nix-store -q --references "$path" | sort | tr '\n' ' ' | sed 's/ $//')
    [ "$refs" = "$theirs" ] || detail+="$path: references ocibuild [$refs], nix [$theirs]
"
  done < <($PY -c 'import json,sys
for o in json.load(open(sys.argv[1]))["outputs"].values(): print(o["path"], o["narHash"], " ".join(o["references"]))' "$T_TMP/$attr.json")
  if [ -z "$detail" ]; then t_ok "$attr: same paths, NAR hashes and references as Nix"
  else t_fail "$attr: same paths, NAR hashes and references as Nix" "$detail"; fi
}

# ---- output checks ----
check allowed-refs-ok same
check allowed-refs-bad "fail:is not allowed to refer to the following paths|is not allowed to refer to the following paths"
check disallowed-refs "fail:is not allowed to refer to the following paths|is not allowed to refer to the following paths"
check allowed-requisites-ok same
check allowed-requisites-bad "fail:is not allowed to refer to the following paths|is not allowed to refer to the following paths"
check disallowed-requisites "fail:is not allowed to refer to the following paths|is not allowed to refer to the following paths"
check output-cycle "fail:cycle detected in build of|cycle detected in build of"
check flat-executable "fail:should be a non-executable regular file since recursive hashing is not enabled|should be a non-executable regular file since recursive hashing is not enabled"
# ---- constraints ----
check wrong-system "fail:a 'mips64-plan9' with features {} is required to build|a 'mips64-plan9' with features {} is required to build"
check unknown-feature "fail:with features {gpu} is required to build|with features {gpu} is required to build"
check known-feature same
check no-chroot "fail:has '__noChroot' set, but that's not allowed when 'sandbox' is 'true'|has '__noChroot' set, but that's not allowed when 'sandbox' is 'true'"
check impure-host-deps "fail:requested impure path '/usr/lib', but it was not in allowed-impure-host-deps|requested impure path '/usr/lib', but it was not in allowed-impure-host-deps"
# ---- features ----
check placeholders same
OBI_F_IMPURE=expected check impure-env same
check name-reference same
check structured same
check structured-checks "fail:is not allowed to refer to the following paths|is not allowed to refer to the following paths"
check export-graph same
check export-graph-structured same
check ca-root same
check ca-dependent same
check ia-on-ca same
check sandbox-view same

# impureEnvVars reach only fixed-output derivations, from the caller's environment: without the
# variable the same derivation fails in both.
drv=$(nix-instantiate "$T_TMP/f.nix" -A impure-env-missing 2>/dev/null)
out=$(env -u OBI_F_IMPURE "$OCIBUILD" nix-build --no-register --no-out-link "$drv" 2>&1)
t_contains "impure-env: without the variable the build fails here" "$out" "OBI_F_IMPURE=''"

# The structured attributes' files are where NIX_ATTRS_*_FILE say (Nix 2.8 names its host path).
t_contains "structured: NIX_ATTRS_JSON_FILE names a readable file in the sandbox" \
  "$(cat "$T_TMP/structured.err")" "readable-json-file"

# The builder's view, spelled out (the comparison above shows Nix sees the same).
view=$($PY -c 'import json,sys; print(json.load(open(sys.argv[1]))["outputs"]["out"]["path"])' "$T_TMP/sandbox-view.json")
want_kvm="/dev/kvm absent"; [ -w /dev/kvm ] && [ -r /dev/kvm ] && want_kvm="/dev/kvm present"
t_contains "sandbox view: inputs owned by nobody with mtime 1" "$(cat "$view")" "input owner and mtime: nobody:nogroup 1"
t_contains "sandbox view: no /sys" "$(cat "$view")" "/sys absent"
t_contains "sandbox view: /dev/kvm as the host has it" "$(cat "$view")" "$want_kvm"
t_contains "sandbox view: the build dir is 0700" "$(cat "$view")" "build dir mode: 700"
t_contains "sandbox view: /tmp is writable" "$(cat "$view")" "/tmp writable"

t_done
