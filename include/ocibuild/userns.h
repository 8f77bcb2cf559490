/*
 * Rootless file operations on ids the invoking user does not own. A rootless build's user 1000
 * is a host sub-id (from /etc/subuid), so the invoking user can neither chown scratch dirs to
 * it, nor read what it writes with mode 0700, nor delete it. These helpers fork a child into a
 * new user namespace mapped like the build's (0 -> invoking uid, 1000 -> first subuid; 0 ->
 * invoking gid, 100 -> first subgid, via newuidmap/newgidmap), where it is root and can.
 */
#ifndef OCIBUILD_USERNS_H
#define OCIBUILD_USERNS_H

#include <sys/types.h>

#include "ocibuild/error.h"

typedef struct obi_userns_ids {
    uid_t uid;    /* invoking user -> container 0 */
    gid_t gid;    /* invoking group -> container 0 */
    uid_t subuid; /* -> container 1000 */
    gid_t subgid; /* -> container 100 */
} obi_userns_ids;

/* Runs fn(ctx) in a child that is root in the mapped namespace; fn returns 0 or -errno and
 * may not return data other than that. */
typedef int (*obi_userns_fn)(void *ctx);
int obi_userns_run(const obi_userns_ids *ids, obi_userns_fn fn, void *ctx, obi_error **err);

/* The tree operations act on a directory fd the caller opened (the bundle's) and a path beneath
 * it: the child walks with *at calls (fs_walk.h, beneath.h) and never follows a symlink, so a
 * build cannot point them outside its own files. The fd is inherited by the forked child. */

/* chown -R of the entry name in dirfd to container ids (uid, gid) inside the namespace. */
int obi_userns_chown_tree(const obi_userns_ids *ids, int dirfd, const char *name, uid_t uid,
                          gid_t gid, obi_error **err);
/* Makes path (clean, relative to dirfd; resolved beneath it, no symlink on the way: -ELOOP)
 * readable by the invoking user: every directory on the way gets the search bits, the entry
 * and the tree below it chmod -R u+rw,go+r and +x for directories (other execute bits are kept;
 * castore only records the owner-execute bit, so digests do not change). A symlink as the
 * entry itself is left alone. */
int obi_userns_make_readable(const obi_userns_ids *ids, int dirfd, const char *path,
                             obi_error **err);
/* rm -rf of the entry name in dirfd inside the namespace. */
int obi_userns_rm_rf(const obi_userns_ids *ids, int dirfd, const char *name, obi_error **err);

#endif
