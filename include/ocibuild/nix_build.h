/*
 * Building a .drv here (issues 6 and 15, docs/nix.md): the derivation and every input
 * derivation whose used outputs are valid neither in /nix/store nor in ocibuild's own path-info
 * store are built, independent ones at the same time (up to max_jobs, within the build
 * service's own slots), inputs first. Each build is what Nix 2.8's sandbox would do: the
 * checks before it (nix_checks.h), the input closure from /nix/store (nix-store -q -R, imported
 * into castore) and from the own store, the BuildRequest (derivation_request.h, content-
 * addressed derivations resolved first), and after it per output the references (found in the
 * whole NAR), the order of the outputs, fixed-output and content-addressed hashes
 * (nix_ca.h), the reference checks, and the records in the path-info store. Valid outputs are
 * reported, not rebuilt. Dependents start as soon as their inputs' outputs are known: the
 * records are written, and with register_in_nix the outputs registered in Nix, by one thread
 * of the call behind the builds, drained before the call returns. obi_nix_build_register
 * makes valid results Nix's too (those built earlier, or without register_in_nix).
 *
 * This is the library entry point for "build this derivation and its inputs, report the
 * outputs": `ocibuild nix-build` is a thin CLI over it, and `ocibuild remote-builder`
 * (nix_serve.h) builds the derivations a Nix client sends with obi_nix_build_derivation.
 */
#ifndef OCIBUILD_NIX_BUILD_H
#define OCIBUILD_NIX_BUILD_H

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>

#include "ocibuild/build_service.h"
#include "ocibuild/derivation.h"
#include "ocibuild/error.h"
#include "ocibuild/nix_checks.h"
#include "ocibuild/nix_path_info.h"
#include "ocibuild/store.h"

typedef struct obi_nix_build_options {
    obi_store *store;                    /* castore the builder reads inputs from */
    obi_build_service *builder;          /* runs the BuildRequests */
    obi_nix_path_info_store *path_infos; /* outputs built here */
    const char *nix_store;               /* nix-store program; NULL: "nix-store" from $PATH */
    const char *nix;                     /* nix program (path-info); NULL: "nix" from $PATH */
    const char *nix_store_dir;           /* where store paths (and .drv files) are on disk:
                                            NULL: /nix/store (tests point elsewhere) */
    unsigned build_cores;                /* NIX_BUILD_CORES */
    /* A farm node (docs/farm.md): valid paths are those path_infos has, /nix/store is never
     * looked at (the node's inputs came over the serve protocol). */
    bool own_store_only;
    /* The caller's own cancel fd for the build service (its cancel_fd; the rest of the call is
     * made here); NULL: none. */
    const obi_build_call *call;
    unsigned max_jobs;              /* derivations built at once; 0: 1 */
    const obi_nix_machine *machine; /* system and features; NULL: detected */
    bool keep_failed;               /* keep a failed build's bundle (its path is in the
                                       error); needs a builder that can */
    /* Each output built is made Nix's too, as soon as its build is over: recorded, then
     * streamed (with the paths of the own store it refers to that Nix lacks) into one
     * `nix-store --import` for the whole call (obi_nix_store_importer), so builds never wait
     * for Nix and the outputs are valid in /nix/store when the call returns. */
    bool register_in_nix;
    /* Build logs, each line of a build prefixed "<name>> " when several may run at once; NULL:
     * the build service's own log stream. Called from the thread running the build. */
    obi_output_fn on_output;
    void *output_ctx;
} obi_nix_build_options;

typedef struct obi_nix_build_output {
    char *name;              /* "out", "dev", ... */
    obi_nix_path_info *info; /* path, node (kind 0 when only Nix has it), NAR hash, references */
} obi_nix_build_output;

typedef struct obi_nix_build_result {
    obi_nix_build_output *outputs; /* in the derivation's output order */
    size_t n_outputs;
    unsigned n_built; /* derivations built by this call (0: every output was valid) */
} obi_nix_build_result;

/* Builds drv_path (a .drv file; its input derivations are store paths, read from
 * nix_store_dir) unless its outputs are valid, and its input derivations as needed. Build
 * failures keep the build service's code (OBI_EBUILD_FAILED, -ETIMEDOUT, ...); a check that
 * fails is -EINVAL or -EPERM with Nix's message; when an input fails the message names it.
 * A fixed-output hash mismatch is OBI_EHASH_MISMATCH (nix_output.h) naming both hashes.
 * Nothing is recorded for a failed build. */
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

/* Registers the result's outputs and their closure in the local Nix store: every path of it
 * that /nix/store lacks and the path-info store has, references first, through
 * obi_nix_store_import. *n_registered: how many paths were handed to Nix (may be NULL). */
int obi_nix_build_register(const obi_nix_build_result *result, const obi_nix_build_options *opts,
                           size_t *n_registered, obi_error **err);

/* {"outputs": {"out": {"path": "/nix/store/...", "narHash": "sha256:<nixbase32>",
 *  "references": ["/nix/store/...", ...]}}} */
json_t *obi_nix_build_result_to_json(const obi_nix_build_result *result);

#endif
