/*
 * The server side of Nix's serve protocol (`nix-store --serve --write`), what `ocibuild
 * remote-builder` runs on an ssh forced command so that a Nix client's build hook or Hydra can
 * use this machine as a remote builder (docs/farm.md). The bytes are serve_protocol.h's; this
 * module does what each command asks, against ocibuild's own stores:
 *   - valid paths are those the path-info store records (never /nix/store: a node's store is
 *     castore plus path infos, shared with other nodes when both are a daemon's);
 *   - paths sent by AddToStoreNar or ImportPaths are ingested into castore from the NAR (the
 *     canonical form only, nar_ingest.h) and recorded only when the NAR's sha256 and size are
 *     those the client claimed (AddToStoreNar) -- so a path is recorded whole or not at all;
 *   - BuildDerivation builds with obi_nix_build_derivation (the build log goes to stderr, which
 *     ssh carries back to the client) and answers Nix's BuildResult; the client's build-timeout,
 *     max-silent-time and max-log-size are applied, and when in_fd hangs up while the build runs
 *     (the client went away) the build is cancelled too: its container killed and removed;
 *   - DumpStorePath, ExportPaths, QueryPathInfos and QueryClosure answer from castore and the
 *     path infos, NARs written from castore nodes.
 * BuildPaths (building .drv files by path) is answered with a failure naming BuildDerivation,
 * which Nix 2.8's build hook and Hydra use. Any other refusal (a malformed request, a NAR that
 * does not match, a write command without write access) ends the session with an error, as
 * Nix's own opServe does.
 */
#ifndef OCIBUILD_NIX_SERVE_H
#define OCIBUILD_NIX_SERVE_H

#include <stdbool.h>

#include "ocibuild/build_service.h"
#include "ocibuild/error.h"
#include "ocibuild/nix_path_info.h"
#include "ocibuild/store.h"

typedef struct obi_nix_serve_options {
    obi_store *store;                    /* castore: inputs arrive here, outputs are read here */
    obi_build_service *builder;          /* runs the builds */
    obi_nix_path_info_store *path_infos; /* what is valid here */
    unsigned build_cores;                /* NIX_BUILD_CORES of the builds */
    bool write_allowed;                  /* --write: imports and builds */
} obi_nix_serve_options;

/* Serves one client: the hello, then commands until the client closes in_fd between two
 * commands (returns 0). Both fds are borrowed. Errors name the command and, for malformed
 * requests, the byte offset. */
int obi_nix_serve(int in_fd, int out_fd, const obi_nix_serve_options *opts, obi_error **err);

#endif
