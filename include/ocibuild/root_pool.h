/*
 * Read-only root skeletons reused from build to build. A bundle's root/ holds nothing a build
 * can change: etc/passwd, etc/group, etc/hosts, and the mount points the runtime creates for
 * the spec's mounts (proc, dev, sys, tmp, each scratch path...), all of it mounted read-only in
 * the container. Creating those ~12 inodes for every build and removing them afterwards is the
 * largest filesystem cost of a trivial build on ext4 (inode allocation, and synchronous discard
 * of the freed blocks where the disk is mounted with it). So after a build that finished,
 * root/ is moved into BUNDLE_ROOT/.root-pool/<key>-<slot>, and the next build whose skeleton
 * has the same key moves it into its own fresh bundle instead of building one.
 *
 * The key is a digest of everything that shapes the skeleton (the caller describes it: etc
 * file contents, every mount's destination, type and source kind, the runtime and the user).
 * Taking and giving back are single renames, so concurrent builds never share a skeleton and
 * a crash leaves each one either in the pool or inside a bundle (which the sweep removes).
 * See docs/build.md "Root skeletons".
 */
#ifndef OCIBUILD_ROOT_POOL_H
#define OCIBUILD_ROOT_POOL_H

#include <stdbool.h>
#include <stddef.h>

#include "ocibuild/error.h"

#define OBI_ROOT_POOL_DIR ".root-pool"
/* Hex characters of a key (128 bits of BLAKE3). */
#define OBI_ROOT_POOL_KEY_LEN 32

typedef struct obi_root_pool obi_root_pool;

/* Opens (creating it if needed) BUNDLE_ROOT/.root-pool; at most slots_per_key skeletons of one
 * key are kept (at least 1). */
int obi_root_pool_open(const char *bundle_root, unsigned slots_per_key, obi_root_pool **out,
                       obi_error **err);
/* The pool directory's descriptor, owned by the pool (for a process that hands the pool's use
 * to a child that must keep it open). */
int obi_root_pool_fd(const obi_root_pool *pool);
/* Accepts NULL. Pooled skeletons stay on disk for later builds and processes. */
void obi_root_pool_close(obi_root_pool *pool);
static inline void obi_root_pool_closep(obi_root_pool **pool)
{
    obi_root_pool_close(*pool);
}
#define cleanup_root_pool __attribute__((cleanup(obi_root_pool_closep)))

/* The key of a skeleton described by description (any bytes that determine its contents). */
void obi_root_pool_key(const void *description, size_t len, char key[OBI_ROOT_POOL_KEY_LEN + 1]);

/* Moves a pooled skeleton with this key to dest (a path that must not exist, on the same
 * filesystem). Returns 1 when one was taken, 0 when the pool has none (dest untouched). */
int obi_root_pool_take(obi_root_pool *pool, const char *key, const char *dest, obi_error **err);

/* Moves root (a skeleton whose build finished: nothing mounted below it, nothing written into
 * it but by the runtime's mount point creation) into the pool under key. Returns 1 when pooled,
 * 0 when all slots of the key are taken (root is left where it was, for the caller to remove). */
int obi_root_pool_give(obi_root_pool *pool, const char *key, const char *root, obi_error **err);

/* Removes skeletons not given back for max_idle_seconds, then the least recently given back
 * beyond max_entries; *removed (optional) counts them. Safe against concurrent takes: each
 * entry is renamed away before it is deleted, so a build either got it or it is gone. Records
 * the time it started in the pool's stamp (obi_root_pool_prune_due). */
int obi_root_pool_prune(obi_root_pool *pool, unsigned max_idle_seconds, size_t max_entries,
                        unsigned *removed, obi_error **err);
/* Whether no prune (by any process) started in the last interval_seconds: one fstatat of the
 * stamp BUNDLE_ROOT/.root-pool.pruned, whose mtime a prune sets. A pool with nothing to prune
 * costs a process that starts no more than that, where reading every entry cost 5-40 ms under
 * I/O load (docs/build.md "Root skeletons"). A stamp in the future counts as missing. */
bool obi_root_pool_prune_due(const obi_root_pool *pool, unsigned interval_seconds);

#endif
