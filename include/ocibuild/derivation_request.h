/*
 * Derivation -> BuildRequest, exactly as ../shared/spec/nix.md (and snix) do it: builder + args
 * as argv in /build, /nix/store as the scratch path holding the outputs, Nix 2.x's environment
 * (with passAsFile values moved into /build/.attr-<h> files), constraints, and the refscan
 * needles that later turn found hashes back into references. The inputs (the closure, already
 * imported into castore) are given by the caller: see nix_store.h.
 */
#ifndef OCIBUILD_DERIVATION_REQUEST_H
#define OCIBUILD_DERIVATION_REQUEST_H

#include <stddef.h>

#include "ocibuild/derivation.h"
#include "ocibuild/error.h"
#include "ocibuild/nix_store.h"
#include "ocibuild/node.h"
#include "ocibuild/request.h"

typedef struct obi_derivation_request_options {
    unsigned build_cores; /* NIX_BUILD_CORES (Nix's default is 1) */
} obi_derivation_request_options;

/* Builds the request. inputs: root nodes named by store path basename ("<hash>-<name>"), in any
 * order (copied and sorted; an exact duplicate is dropped, two different nodes with one name
 * are an error). Fails (-ENOTSUP) for structured attributes (__json) and when an output has
 * no path (floating content-addressed derivations are not supported) or a path is not a store path.
 * The result is not validated here. */
int obi_derivation_to_build_request(const obi_derivation *drv, const obi_node *inputs,
                                    size_t n_inputs, const obi_derivation_request_options *opts,
                                    obi_build_request **out, obi_error **err);

/* The name of passAsFile's file for attribute name: ".attr-" + nixbase32(sha256(name)).
 * Caller frees; NULL on out of memory. */
char *obi_derivation_pass_as_file_name(const char *name);

#endif
