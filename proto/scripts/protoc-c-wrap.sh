#!/bin/sh
# Runs protoc-c on one .proto and flattens the output into meson's output dir, so generated
# files are included as "castore.pb-c.h" and their cross-imports resolve.
set -eu
protoc_c=$1 srcdir=$2 proto=$3 outdir=$4
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
"$protoc_c" --proto_path="$srcdir" --c_out="$tmp" "$srcdir/$proto"
base=${proto%.proto}
name=$(basename "$base")
# Generated code includes imports by their path ("tvix/castore/v1/castore.pb-c.h"); flatten.
sed -e 's#include "tvix/[a-z]*/v1/\([a-z_]*\.pb-c\.h\)"#include "\1"#' "$tmp/$base.pb-c.h" >"$outdir/$name.pb-c.h"
sed -e 's#include "tvix/[a-z]*/v1/\([a-z_]*\.pb-c\.h\)"#include "\1"#' "$tmp/$base.pb-c.c" >"$outdir/$name.pb-c.c"
