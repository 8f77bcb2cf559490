#!/usr/bin/python3
# The layering rule of README.md "Tour" and docs/ARCHITECTURE.md, checked: every
# `#include "ocibuild/X.h"` in src/ and include/ points to the including file's own layer or to
# one below it, never up and never across to a sibling (service and nix sit side by side). A
# header's layer is the src/<layer>/ dir holding the .c of the same name; the few headers
# without one (inline helpers, the rpc module's table) are in HEADERLESS below, which is itself
# checked to be complete and to hold nothing derivable; those the build makes are in GENERATED.
# A quoted include without "ocibuild/" must be a private header beside the includer, or
# generated: a protobuf-c header, or one made from a NAME.in template beside the includer
# (src/cli/cli_version.h). Findings name the file, line and header. The checker is also run
# on a copy of the tree with an upward and a sibling include planted, so it cannot pass by
# seeing nothing. Prints TAP lines; no build needed.
import os
import re
import shutil
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from grpc_e2e import ROOT, Tap  # noqa: E402

# The layers from the bottom up; a module may include its own layer and those before it. Layers
# in one group are siblings and may not include each other.
LAYERS = [["util"], ["castore"], ["builder"], ["service", "nix"], ["rpc"], ["cli"]]

# Public headers with no .c of the same name: the layer that defines what they declare.
HEADERLESS = {
    "cleanup.h": "util",  # inline cleanup helpers; obi_strv_free is in util/strv.c
    "json_util.h": "util",  # inline jansson helpers
    "progress.h": "util",  # an inline progress callback (ingest and export report through it)
    "node_pb.h": "castore",  # castore/node_codec.c
    "store_backend.h": "castore",  # the backends' side of store.h (castore/store.c)
    "rpc.h": "rpc",  # the rpc layer's API and module table (rpc/rpc_module.c)
}

# Public headers the build makes (into build/include/ocibuild/), with their layer.
GENERATED = {
    "rpc_abi.h": "rpc",  # the rpc module's ABI digest (scripts/rpc-abi.py)
}

INCLUDE = re.compile(r'^\s*#\s*include\s+"([^"]+)"')


def rank_of():
    return {layer: i for i, group in enumerate(LAYERS) for layer in group}


def rule_text():
    """The rule as README.md and docs/ARCHITECTURE.md write it."""
    parts = [g[0] if len(g) == 1 else "{" + ", ".join(g) + "}" for g in LAYERS]
    return " <- ".join(parts)


def header_layers(root):
    """(layer of each public header, problems with the derivation or with HEADERLESS)."""
    rank = rank_of()
    problems = []
    sources = {}
    for layer in sorted(os.listdir(os.path.join(root, "src"))):
        if not os.path.isdir(os.path.join(root, "src", layer)):
            continue
        if layer not in rank:
            problems.append(f"src/{layer}/ is in no layer: add it to LAYERS in {__file__}")
        for dirpath, _, files in os.walk(os.path.join(root, "src", layer)):
            for f in files:
                if f.endswith(".c"):
                    sources.setdefault(f[:-2] + ".h", []).append(layer)
    layers = {}
    public = os.path.join(root, "include", "ocibuild")
    for h in sorted(os.listdir(public)):
        if not h.endswith(".h"):
            continue
        found = sorted(set(sources.get(h, [])))
        if len(found) > 1:
            problems.append(f"include/ocibuild/{h}: a {h[:-2]}.c in more than one layer: "
                            + ", ".join(f"src/{x}/" for x in found))
        elif found and h in HEADERLESS:
            problems.append(f"include/ocibuild/{h}: HEADERLESS names it, but src/{found[0]}/"
                            f"{h[:-2]}.c gives its layer: drop the row")
        elif found:
            layers[h] = found[0]
        elif h in HEADERLESS:
            layers[h] = HEADERLESS[h]
        else:
            problems.append(f"include/ocibuild/{h}: no {h[:-2]}.c in src/ gives its layer: add a "
                            f"row to HEADERLESS in {__file__}")
    for h, layer in sorted(HEADERLESS.items()):
        if not os.path.exists(os.path.join(public, h)):
            problems.append(f"HEADERLESS names {h}, which include/ocibuild/ does not have")
        if layer not in rank:
            problems.append(f"HEADERLESS gives {h} the layer {layer}, which LAYERS does not have")
    return layers, problems


def source_files(root, layers):
    """(path relative to root, its layer) of every .c/.h in src/ and include/ocibuild/; a public
    header's layer is that of its name (None if header_layers found none)."""
    for top in ("src", "include"):
        for dirpath, _, files in sorted(os.walk(os.path.join(root, top))):
            for f in sorted(files):
                if f.endswith((".c", ".h")):
                    path = os.path.relpath(os.path.join(dirpath, f), root)
                    yield path, path.split(os.sep)[1] if top == "src" else layers.get(f)


def check(root):
    """Every finding of the tree at root, as "file:line: message" lines."""
    rank = rank_of()
    layers, findings = header_layers(root)
    for path, owner in source_files(root, layers):
        if owner not in rank:
            continue  # already reported by header_layers
        with open(os.path.join(root, path), encoding="utf-8", errors="replace") as f:
            lines = f.readlines()
        for n, line in enumerate(lines, 1):
            m = INCLUDE.match(line)
            if not m:
                continue
            name = m.group(1)
            where = f"{path}:{n}"
            if not name.startswith("ocibuild/"):
                beside = os.path.join(root, os.path.dirname(path), name)
                generated = name.endswith(".pb-c.h") or os.path.isfile(beside + ".in")
                if not (generated or os.path.isfile(beside)):
                    findings.append(f'{where}: "{name}" is neither a private header beside it '
                                    "nor a generated protobuf-c header")
                continue
            header = name[len("ocibuild/"):]
            target = layers.get(header) or GENERATED.get(header)
            if target is None:
                if not os.path.isfile(os.path.join(root, "include", name)):
                    findings.append(f"{where}: {name} does not exist")
            elif rank[target] > rank[owner]:
                findings.append(f"{where}: {owner} includes {name} of {target}, a layer above "
                                f"it ({rule_text()})")
            elif rank[target] == rank[owner] and target != owner:
                findings.append(f"{where}: {owner} includes {name} of {target}, its sibling "
                                f"({rule_text()})")
    return findings


def planted(t):
    """The checker on a copy of the tree with an upward and a sibling include added."""
    tmp = tempfile.mkdtemp(prefix="obi-e2e-layers.")
    try:
        for top in ("src", "include"):
            shutil.copytree(os.path.join(ROOT, top), os.path.join(tmp, top))
        plants = [("src/castore/node.c", "ocibuild/request.h", "a layer above"),
                  ("src/nix/nar.c", "ocibuild/lifecycle.h", "its sibling"),
                  ("include/ocibuild/fs.h", "ocibuild/rpc.h", "a layer above")]
        for path, header, _ in plants:
            with open(os.path.join(tmp, path), "a", encoding="utf-8") as f:
                f.write(f'#include "{header}"\n')
        found = check(tmp)
        for path, header, kind in plants:
            with open(os.path.join(tmp, path), encoding="utf-8") as f:
                line = sum(1 for _ in f)
            want = f"{path}:{line}: "
            hit = [x for x in found if x.startswith(want) and header in x and kind in x]
            t.check(f"an include of {header} planted in {path} is reported with file, line "
                    f"and header as {kind}", hit, "\n".join(found) or "no findings")
        t.check("the planted tree has no other findings", len(found) == len(plants),
                "\n".join(found))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def main():
    t = Tap()
    layers, problems = header_layers(ROOT)
    t.check(f"every public header has a layer ({len(layers)} headers, "
            f"{len(HEADERLESS)} from the table)", not problems, "\n".join(problems))
    findings = check(ROOT)
    t.check(f"every include in src/ and include/ points down or within its layer "
            f"({rule_text()})", not findings, "\n".join(findings))
    for doc in ("README.md", "docs/ARCHITECTURE.md"):
        try:
            with open(os.path.join(ROOT, doc), encoding="utf-8") as f:
                text = " ".join(f.read().split())
        except FileNotFoundError:
            text = ""
        t.check(f"{doc} states the order this test checks", rule_text() in text,
                f"{doc} lacks the line: {rule_text()}")
    planted(t)
    t.done()


if __name__ == "__main__":
    main()
