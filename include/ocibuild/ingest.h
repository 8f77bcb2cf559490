/*
 * Ingesting a filesystem path into castore (castore.md "Ingesting a filesystem path"): a
 * regular file becomes a blob and a FileNode (executable iff the owner-execute bit is set), a
 * directory a Directory put leaves first through one directory putter, a symlink a SymlinkNode
 * with its target. Symlinks are never followed, not even at the root; anything else (fifo,
 * socket, device) is an error naming the path. Everything is opened relative to directory file
 * descriptors with O_NOFOLLOW (no path length limit, no symlink race), and files are streamed in
 * bounded chunks. The walk is iterative (fs_walk.h): O(1) descriptors and stack at any depth; a
 * tree nested deeper than OBI_DIRECTORY_MAX_DEPTH levels is refused naming the limit, as the
 * directory services refuse it (docs/security.md, "Deep trees"). Directories are committed only
 * when the whole tree succeeded, so a failure leaves no root behind (only unreferenced blobs).
 */
#ifndef OCIBUILD_INGEST_H
#define OCIBUILD_INGEST_H

#include "ocibuild/error.h"
#include "ocibuild/node.h"
#include "ocibuild/progress.h"
#include "ocibuild/refscan.h"
#include "ocibuild/store.h"

typedef struct obi_ingest_options {
    /* Name of the root node; NULL: the path's basename (for "." or "..", that of its real
     * path). */
    const char *name;
    /* Optional: fed every file's contents and every symlink target, one stream each (names are
     * not scanned). */
    obi_refscan_state *refscan;
    /* Optional (NULL: none): bytes and files ingested so far. */
    const obi_progress *progress;
    /* The tree's files are the caller's to give away and nothing can write them any more (a
     * rootful build's outputs once its container is gone): into the on-disk store, a file with
     * one link on the blobs' filesystem becomes its blob itself instead of being copied (it is
     * then the store's owner's, mode 0444; docs/store.md, "Adopting a build's outputs").
     * Needs root (CAP_CHOWN, CAP_LEASE); anything else is copied as without it. */
    bool adopt;
} obi_ingest_options;

/* Ingests the entry name in dirfd (which may be O_PATH): nothing on the way to it is looked up
 * again by path, so a caller that opened dirfd beneath a directory it trusts (beneath.h) ingests
 * exactly what is there. The entry itself may be a symlink (a SymlinkNode). display names it in
 * messages (NULL: name); the root node's name is options->name, else name. */
int obi_ingest_at(obi_blob_service *blobs, obi_directory_service *directories, int dirfd,
                  const char *name, const char *display, const obi_ingest_options *options,
                  obi_node *out, obi_error **err);
/* Ingests path into blobs and directories; *out (caller storage, clear with obi_node_clear) is
 * the root node. options may be NULL. */
int obi_ingest_path(obi_blob_service *blobs, obi_directory_service *directories, const char *path,
                    const obi_ingest_options *options, obi_node *out, obi_error **err);

#endif
