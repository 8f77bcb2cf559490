/*
 * Writing a castore node back to disk: the inverse of ingest. Files are written 0444
 * (executables 0555) while their BLAKE3 digest and size are checked against the node;
 * symlinks become symlinks; directories are created 0700, filled, then made 0555 like a Nix
 * store path (a tree that is read-only all the way down; remove it with obi_rm_rf or chmod -R
 * u+w first). Every directory fetched is checked against its digest and recursive size. Names
 * are validated before use and every entry is created relative to its parent's file
 * descriptor with O_EXCL/O_NOFOLLOW, so nothing can land outside the destination. The walk is a
 * loop with one directory open at a time: any depth costs O(1) descriptors and stack, and a tree
 * nested deeper than OBI_DIRECTORY_MAX_DEPTH levels (which no directory service here stores, but
 * a remote one could serve) is refused naming the limit. On failure the partial destination is
 * removed.
 *
 * Materializing is the same with one difference meant for caching build inputs: non-executable
 * files are hard-linked from the blob service's local files when it has them (local_path), so
 * they take no space and no time; executables are always copied because a hard link shares the
 * mode. Linked files are not re-hashed (the local store named them by their digest). Every
 * materialized entry gets mtime 1 (the epoch plus one second, as Nix's store paths; a linked
 * file shares it with the blob's local file), so builds see the same times as under Nix.
 */
#ifndef OCIBUILD_EXPORT_H
#define OCIBUILD_EXPORT_H

#include "ocibuild/error.h"
#include "ocibuild/node.h"
#include "ocibuild/progress.h"
#include "ocibuild/store.h"

#define OBI_EXPORT_FILE_MODE 0444
#define OBI_EXPORT_EXECUTABLE_MODE 0555
#define OBI_EXPORT_DIRECTORY_MODE 0555

/* Writes node at dest, which must not exist (its parent must). The node's own name is not
 * used: dest is the full path of the new file, directory or symlink. */
int obi_export_node(obi_blob_service *blobs, obi_directory_service *directories,
                    const obi_node *node, const char *dest, obi_error **err);
/* The same, telling progress (NULL: nobody) the bytes and files written so far. */
int obi_export_node_progress(obi_blob_service *blobs, obi_directory_service *directories,
                             const obi_node *node, const char *dest, const obi_progress *progress,
                             obi_error **err);
/* Like obi_export_node, hard-linking non-executable files from blobs' local files when the
 * backend has them (falls back to copying, e.g. across filesystems). */
int obi_materialize_node_progress(obi_blob_service *blobs, obi_directory_service *directories,
                                  const obi_node *node, const char *dest,
                                  const obi_progress *progress, obi_error **err);
int obi_materialize_node(obi_blob_service *blobs, obi_directory_service *directories,
                         const obi_node *node, const char *dest, obi_error **err);

#endif
