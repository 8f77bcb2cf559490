/*
 * Derivation -> BuildRequest, as ../shared/spec/nix.md (and snix) do it: builder + args as argv
 * in /build, /nix/store as the scratch path holding the outputs, Nix 2.x's environment (with
 * passAsFile values moved into /build/.attr-<h> files, or structured attributes in
 * /build/.attrs.json and .attrs.sh), constraints, and the refscan needles that later turn found
 * hashes back into references; beyond the spec, everything else Nix 2.8's sandbox gives a build
 * (placeholders, impureEnvVars, exportReferencesGraph, no /sys, /dev/kvm). The inputs (the
 * closure, already imported into castore) are given by the caller: see nix_store.h.
 */
#ifndef OCIBUILD_DERIVATION_REQUEST_H
#define OCIBUILD_DERIVATION_REQUEST_H

#include <stddef.h>

#include "ocibuild/derivation.h"
#include "ocibuild/derivation_attrs.h"
#include "ocibuild/error.h"
#include "ocibuild/nix_path_info.h"
#include "ocibuild/nix_store.h"
#include "ocibuild/node.h"
#include "ocibuild/request.h"

/* One exportReferencesGraph entry resolved by the caller: the closure of its paths (closed
 * under references, sorted by path), described as Nix's path info. */
typedef struct obi_nix_export_graph {
    const char *name;                      /* file in /build, or key of .attrs.json */
    const obi_nix_path_info *const *infos; /* sorted by path */
    size_t n_infos;
} obi_nix_export_graph;

typedef struct obi_derivation_request_options {
    unsigned build_cores; /* NIX_BUILD_CORES (Nix's default is 1) */
    /* The derivation's attributes; NULL: parsed here from drv. */
    const obi_derivation_attrs *attrs;
    /* Where each output of drv is built, in drv's output order: its store path, or for a
     * floating content-addressed output the scratch path Nix would use. NULL: the paths drv
     * gives (obi_derivation_output_path; every one must be known). Placeholders of outputs
     * become these paths. */
    char *const *output_paths;
    /* exportReferencesGraph as the caller resolved it (obi_derivation_attrs_export_graphs gives
     * the specification): files /build/<name> or keys of .attrs.json. */
    const obi_nix_export_graph *export_graphs;
    size_t n_export_graphs;
    bool kvm; /* /dev/kvm in the sandbox (Nix: system feature "kvm" and the host has it) */
} obi_derivation_request_options;

/* Builds the request, with the sandbox Nix 2.8 gives a derivation: the environment (or, with
 * structured attributes, .attrs.json and .attrs.sh and NIX_ATTRS_*_FILE), output placeholders
 * replaced by the output paths in the env, args and files, impureEnvVars from this process's
 * environment for a fixed-output derivation, exportReferencesGraph files, no /sys, /dev/kvm when
 * asked. inputs: root nodes named by store path basename ("<hash>-<name>"), in any order (copied
 * and sorted; an exact duplicate is dropped, two different nodes with one name are an error).
 * Fails (-ENOTSUP) when an output path is unknown and not given, -EINVAL when a path is not a
 * store path. The result is not validated here. */
int obi_derivation_to_build_request(const obi_derivation *drv, const obi_node *inputs,
                                    size_t n_inputs, const obi_derivation_request_options *opts,
                                    obi_build_request **out, obi_error **err);

/* The name of passAsFile's file for attribute name: ".attr-" + nixbase32(sha256(name)).
 * Caller frees; NULL on out of memory. */
char *obi_derivation_pass_as_file_name(const char *name);

#endif
