/*
 * Building a .drv here (issue 6, nix.md): input derivations whose used outputs are neither valid
 * in /nix/store nor recorded in ocibuild's own path-info store are built first (recursively);
 * the input closure is assembled from /nix/store (nix-store -q -R, imported into castore) and
 * from the own store; the derivation becomes a BuildRequest that the build service runs; each
 * output gets its NAR hash and references, a fixed-output one is checked against its declared
 * hash, and everything is recorded in the path-info store. `ocibuild nix-build` is a thin CLI
 * over obi_nix_build and obi_nix_build_result_to_json; `ocibuild remote-builder` (nix_serve.h)
 * builds the derivations a Nix client sends with obi_nix_build_derivation.
 */
#ifndef OCIBUILD_NIX_BUILD_H
#define OCIBUILD_NIX_BUILD_H

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>

#include "ocibuild/build_service.h"
#include "ocibuild/derivation.h"
#include "ocibuild/error.h"
#include "ocibuild/nix_path_info.h"
#include "ocibuild/store.h"

typedef struct obi_nix_build_options {
    obi_store *store;                    /* castore the builder reads inputs from */
    obi_build_service *builder;          /* runs the BuildRequests */
    obi_nix_path_info_store *path_infos; /* outputs built here */
    const char *nix_store;               /* nix-store program; NULL: "nix-store" from $PATH */
    const char *nix_store_dir;           /* where valid store paths are looked up on disk;
                                            NULL: /nix/store (tests point elsewhere) */
    unsigned build_cores;                /* NIX_BUILD_CORES */
    /* A farm node (docs/farm.md): valid paths are those path_infos has, /nix/store is never
     * looked at (the node's inputs came over the serve protocol). */
    bool own_store_only;
    /* This build's own options for the build service (a cancel fd); NULL: none. */
    const obi_build_call *call;
} obi_nix_build_options;

typedef struct obi_nix_build_output {
    char *name;              /* "out", "dev", ... */
    obi_nix_path_info *info; /* path, node, NAR hash, references */
} obi_nix_build_output;

typedef struct obi_nix_build_result {
    obi_nix_build_output *outputs; /* in the derivation's output order */
    size_t n_outputs;
} obi_nix_build_result;

/* Builds drv_path (always; its inputs only when needed). Build failures keep the build
 * service's code (OBI_EBUILD_FAILED, -ETIMEDOUT, ...); a fixed-output hash mismatch is
 * OBI_EHASH_MISMATCH (nix_output.h) naming both hashes; nothing is recorded for a failed build. */
int obi_nix_build(const char *drv_path, const obi_nix_build_options *opts,
                  obi_nix_build_result **out, obi_error **err);
/* The same for a derivation already parsed (the serve protocol's BuildDerivation: no input
 * derivations, its input sources the whole input closure). drv_path names it in messages. */
int obi_nix_build_derivation(const char *drv_path, const obi_derivation *drv,
                             const obi_nix_build_options *opts, obi_nix_build_result **out,
                             obi_error **err);
void obi_nix_build_result_free(obi_nix_build_result *result);
static inline void obi_nix_build_result_freep(obi_nix_build_result **r)
{
    obi_nix_build_result_free(*r);
}
#define cleanup_nix_build_result __attribute__((cleanup(obi_nix_build_result_freep)))

/* {"outputs": {"out": {"path": "/nix/store/...", "narHash": "sha256:<nixbase32>",
 *  "references": ["/nix/store/...", ...]}}} */
json_t *obi_nix_build_result_to_json(const obi_nix_build_result *result);

#endif
