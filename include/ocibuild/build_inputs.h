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

#include "ocibuild/error.h"
#include "ocibuild/request.h"
#include "ocibuild/store.h"
#include "ocibuild/store_verify.h"

/* Path of the cache entry for node (materializing it first if needed); caller frees. */
int obi_input_cache_get(obi_store *store, const char *cache_dir, const obi_node *node,
                        char **path_out, obi_error **err);

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
 */
int obi_build_inputs_prepare(obi_store *store, const char *cache_dir, const obi_build_request *req,
                             const char *bundle_inputs_dir, const char *bundle_dir,
                             obi_error **err);

#endif
