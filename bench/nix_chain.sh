#!/bin/bash
# Wall time of building a chain of N trivial derivations (default 20; each reads the previous
# output and writes one line that references it) with `ocibuild nix-build` vs `nix-build`
# (sandbox on, no substituters), in the same run. Each side gets its own fresh chain (a nonce),
# so both build all N derivations from scratch. Prints both times and the ratio
# ocibuild/nix (lower is better for ocibuild). Needs root (Nix set-up and rootful runc).
set -eu
cd "$(dirname "$0")/.."
N=${1:-20}
OCIBUILD=${OCIBUILD:-$PWD/build/ocibuild}
tests/e2e/nix_setup.sh
tmp=$(mktemp -d /tmp/obi-bench-nix.XXXXXX)
chmod 711 "$tmp" # a build's container root (a host id of its id slot) reaches its bundle
trap 'chmod -R u+w "$tmp" 2>/dev/null; rm -rf "$tmp"' EXIT
export OCIBUILD_DATA_DIR=$tmp/data
bash_path=$(nix-store --add /bin/bash-static)

write_chain() { # NONCE FILE
  cat >"$2" <<NIX
let
  bash = builtins.storePath "$bash_path";
  step = prev: i: builtins.derivation {
    name = "obi-bench-chain-\${toString i}"; system = builtins.currentSystem; builder = bash;
    nonce = "$1";
    args = [ "-c" (if prev == null then "echo 0 > \$out"
                   else "read -r x < \${prev}; echo \"\${toString i} \${prev}\" > \$out") ];
  };
  go = prev: i: if i > $N then prev else go (step prev i) (i + 1);
in go null 1
NIX
}
now() { date +%s.%N; }

write_chain "ours-$(date +%s%N)" "$tmp/ours.nix"
write_chain "nix-$(date +%s%N)" "$tmp/nix.nix"
ours_drv=$(nix-instantiate "$tmp/ours.nix" 2>/dev/null)
nix_drv=$(nix-instantiate "$tmp/nix.nix" 2>/dev/null)

t0=$(now)
"$OCIBUILD" nix-build "$ours_drv" >"$tmp/ours.json" 2>"$tmp/ours.log" || { tail "$tmp/ours.log"; exit 1; }
t1=$(now)
nix-build --option sandbox true --option sandbox-fallback false --option substituters "" --no-out-link "$nix_drv" >/dev/null 2>&1
t2=$(now)

built=$(ls "$OCIBUILD_DATA_DIR/nix-path-info" | grep -c obi-bench-chain-)
ours=$(echo "$t1 - $t0" | bc -l)
theirs=$(echo "$t2 - $t1" | bc -l)
printf 'chain of %d derivations (ocibuild built %d)\n' "$N" "$built"
printf 'ocibuild nix-build: %6.2f s  (%.0f ms per derivation)\n' "$ours" "$(echo "$ours * 1000 / $N" | bc -l)"
printf 'nix-build:          %6.2f s  (%.0f ms per derivation)\n' "$theirs" "$(echo "$theirs * 1000 / $N" | bc -l)"
printf 'ratio ocibuild/nix: %.2f\n' "$(echo "$ours / $theirs" | bc -l)"
