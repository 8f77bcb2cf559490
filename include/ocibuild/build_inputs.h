/*
 * Build inputs: every input node made visible under the bundle's inputs/<name>, read-only,
 * through a per-node cache shared by all builds: CACHE/<kind>-<hex digest> is materialized
 * once from the store (non-executable files hard-linked to the store's blob files where the
 * store has local files, copies otherwise) and the bundle only gets a hard link (file inputs on
 * the cache's filesystem) or a symlink (directories, other filesystems) to it, which the runtime
 * follows when it bind-mounts inputs/<name>. A second build with the same inputs costs one link
 * per input.
 *
 * Symlink inputs cannot be bind-mounted (the mount would follow them), so they are created as
 * symlinks directly in the scratch dir that holds inputs_dir, and get no mount.
 */
#ifndef OCIBUILD_BUILD_INPUTS_H
#define OCIBUILD_BUILD_INPUTS_H

#include <stdbool.h>

#include "ocibuild/castore_fs.h"
#include "ocibuild/error.h"
#include "ocibuild/progress.h"
#include "ocibuild/request.h"
#include "ocibuild/store.h"
#include "ocibuild/store_verify.h"

/* Where the cache entry of a directory or file node is (whether it is there or not); caller
 * frees; NULL when out of memory. */
char *obi_input_cache_path(const char *cache_dir, const obi_node *node);
/* Path of the cache entry for node (materializing it first if needed, telling progress, which
 * may be NULL, the bytes and files written); caller frees. */
int obi_input_cache_get(obi_store *store, const char *cache_dir, const obi_node *node,
                        const obi_progress *progress, char **path_out, obi_error **err);

/* Whether the entry of this object is still wanted (`store gc`: obi_store_gc_is_live). */
typedef bool (*obi_input_cache_keep_fn)(obi_store_object_kind kind, const obi_digest *digest,
                                        void *ctx);
typedef struct obi_input_cache_prune_stats {
    uint64_t entries; /* removed (or that would be) */
    uint64_t bytes;   /* allocated to them; blobs hard-linked from the store are counted too */
} obi_input_cache_prune_stats;
/* Removes every entry (and temporary entry) whose object keep does not want, and temporary
 * entries of the older layout an hour old. Entries materialized for a pinned object are kept,
 * so run it under gc's lock (obi_store_gc_begin): a running build's inputs stay. */
int obi_input_cache_prune(const char *cache_dir, obi_input_cache_keep_fn keep, void *ctx,
                          bool dry_run, obi_input_cache_prune_stats *stats, obi_error **err);

/* Prepares BUNDLE/inputs (bundle_inputs_dir) for req: a link per directory/file input into
 * the cache (hard link for files where possible, symlink otherwise); symlink inputs written as
 * symlinks below scratch_root (the bundle's scratch/) following the scratch mapping of inputs_dir.
 * progress (NULL: nobody) hears the bytes and files materialized into the cache, summed over
 * the inputs, then its end. */
int obi_build_inputs_prepare(obi_store *store, const char *cache_dir, const obi_build_request *req,
                             const char *bundle_inputs_dir, const char *bundle_dir,
                             const obi_progress *progress, obi_error **err);

/* ---- inputs over FUSE (build_inputs_fuse.c; docs/build.md "Inputs over FUSE") ---- */

/* How a build service's inputs reach its builds. */
typedef enum obi_inputs_mode {
    OBI_INPUTS_AUTO,        /* the cache from a store with local files, FUSE from any other */
    OBI_INPUTS_MATERIALIZE, /* the input cache, always */
    OBI_INPUTS_FUSE,        /* a FUSE mount of the store, always */
} obi_inputs_mode;

/* "auto", "materialize" or "fuse"; anything else is -EINVAL naming what (the option). */
int obi_inputs_mode_parse(const char *text, const char *what, obi_inputs_mode *out,
                          obi_error **err);
const char *obi_inputs_mode_name(obi_inputs_mode mode);

/* What a service does with its builds' inputs, decided once when it opens. */
typedef struct obi_inputs_plan {
    bool fuse;        /* inputs through a FUSE mount */
    bool reuse_cache; /* with fuse: an input already in the input cache is linked from there */
} obi_inputs_plan;

/* mode for a service on store: auto is FUSE, reusing the cache, when the blob service has no
 * local files and FUSE can be used here (for rootless builds that includes user_allow_other),
 * the cache otherwise; fuse fails (naming what is missing) when FUSE cannot be used. */
int obi_inputs_plan_for(obi_inputs_mode mode, const obi_store *store, obi_inputs_plan *out,
                        obi_error **err);

/* As obi_build_inputs_prepare, but the directory and file inputs that the plan serves through
 * FUSE (all, or those not in the cache yet) are shown by a castore mount at
 * BUNDLE/inputs-fuse, which inputs/<name> links to: entries owned by this process's uid and
 * gid, modes and times as in the cache, open to the container's users (allow_other). *fs_out
 * is that mount, to be closed before the bundle is removed, or NULL when no input needed it. */
int obi_build_inputs_prepare_fuse(obi_store *store, const char *cache_dir,
                                  const obi_inputs_plan *plan, const obi_build_request *req,
                                  const char *bundle_inputs_dir, const char *bundle_dir,
                                  const obi_progress *progress, obi_castore_fs **fs_out,
                                  obi_error **err);

#endif
