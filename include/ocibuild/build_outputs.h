/*
 * A finished build's outputs, found in its bundle and ingested (docs/security.md, "Paths
 * beneath the bundle"). Output "a/b/c" lives at scratch/<name of its scratch path>/<rest> in
 * the bundle (spec.h). It is resolved beneath the bundle's descriptor one component at a time,
 * following no symlink (beneath.h): an output whose path crosses a symlink the build made
 * (/nix/store/a -> /etc) fails the build naming the output and the component, and is never read.
 * The output itself may be a symlink (stored as a SymlinkNode). Every output is resolved and
 * checked before any is ingested, and ingest walks from the holding directory's descriptor
 * (obi_ingest_at), never from a path string.
 *
 * Rootless, the build's files belong to sub-ids the invoking user cannot read: first the user
 * namespace helper makes each output readable (obi_userns_make_readable), which resolves the same
 * path beneath the same bundle descriptor and follows no symlink either.
 */
#ifndef OCIBUILD_BUILD_OUTPUTS_H
#define OCIBUILD_BUILD_OUTPUTS_H

#include "ocibuild/error.h"
#include "ocibuild/progress.h"
#include "ocibuild/request.h"
#include "ocibuild/store.h"
#include "ocibuild/userns.h"

/* Ingests every output of req from the bundle (bundle_fd) into store, each with its own
 * reference-scan state over req's needles, filling build->outputs and build->outputs_needles.
 * userns: rootless ids (NULL for rootful builds). adopt: the build's container is gone (no
 * process of it is left) and its bundle will be removed, so a rootful build's output files may
 * become blobs themselves instead of being copied (obi_ingest_options.adopt; ignored with
 * userns). A missing output or one reached through a symlink is OBI_EBUILD_FAILED naming it;
 * nothing is ingested then. */
int obi_build_outputs_ingest(obi_store *store, int bundle_fd, const obi_build_request *req,
                             const obi_userns_ids *userns, bool adopt, obi_build *build,
                             obi_error **err);

/* Exports every output of build from store into dir (made, 0755, when missing) as dir/<the
 * output's name> (the last component of its path), like `nix-build`'s result links. Outputs of
 * the same name are refused before anything is written; on failure nothing exported by this
 * call is left. progress (NULL: nobody) hears the bytes and files written so far. */
int obi_build_outputs_export(obi_store *store, const obi_build *build, const char *dir,
                             const obi_progress *progress, obi_error **err);

/* One line for people about output i: its path, kind, size, digest and the needles found, e.g.
 * "/nix/store/out  directory  3 entries  b3:Ch4B...=  needles 0 2 of 3". Caller frees; NULL
 * when out of memory. */
char *obi_build_output_summary(const obi_build *build, size_t i);

#endif
