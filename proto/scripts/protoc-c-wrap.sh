#!/bin/sh
# Runs protoc-c on one .proto and flattens the output into meson's output dir, so generated
# files are included as "castore.pb-c.h" (tvix/...) or "snix_castore.pb-c.h" (snix/...) and
# their cross-imports resolve.
set -eu
protoc_c=$1 srcdir=$2 proto=$3 outdir=$4
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
"$protoc_c" --proto_path="$srcdir" --c_out="$tmp" "$srcdir/$proto"
base=${proto%.proto}
name=$(basename "$base")
case "$proto" in snix/*) name=snix_$name ;; esac
# Generated code includes imports by their path ("tvix/castore/v1/castore.pb-c.h"); flatten.
flatten='s#include "tvix/[a-z]*/v1/\([a-z_]*\.pb-c\.h\)"#include "\1"#
s#include "snix/[a-z]*/v1/\([a-z_]*\.pb-c\.h\)"#include "snix_\1"#'
sed -e "$flatten" "$tmp/$base.pb-c.h" >"$outdir/$name.pb-c.h"
sed -e "$flatten" "$tmp/$base.pb-c.c" >"$outdir/$name.pb-c.c"
