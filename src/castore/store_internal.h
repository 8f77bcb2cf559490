/*
 * Private to src/castore: what the directory backends share. A directory is kept in its
 * canonical encoding together with its recursive size, so that a putter can check a child's
 * DirectoryNode.size without decoding it again.
 */
#ifndef OCIBUILD_CASTORE_STORE_INTERNAL_H
#define OCIBUILD_CASTORE_STORE_INTERNAL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/stat.h>
#include <sys/types.h>

#include "ocibuild/digest_map.h"
#include "ocibuild/node.h"
#include "ocibuild/store_backend.h"
#include "ocibuild/store_roots.h"

typedef struct obi_encoded_directory {
    uint64_t size; /* obi_directory_size of the decoded directory */
    /* Levels of directories in its tree (1: no subdirectories), or an upper bound on them when
     * a stored child was only bounded by its size (see obi_directory_check_children). */
    uint32_t depth;
    size_t len;
    uint8_t *data; /* owned (malloc'd) */
} obi_encoded_directory;

/* Validates dir and encodes it; *digest_out = BLAKE3 of the encoding. */
int obi_encoded_directory_new(const obi_directory *dir, obi_encoded_directory **out,
                              obi_digest *digest_out, obi_error **err);
/* Frees one (and its data); the free_value of maps of them. Accepts NULL. */
void obi_encoded_directory_free(void *encoded);
static inline void obi_encoded_directory_freep(obi_encoded_directory **e)
{
    obi_encoded_directory_free(*e);
}
#define cleanup_encoded_directory __attribute__((cleanup(obi_encoded_directory_freep)))

/* Looks up a stored directory's recursive size: 1 found, 0 absent, negative on error. */
typedef int (*obi_stored_size_fn)(void *ctx, const obi_digest *digest, uint64_t *size,
                                  obi_error **err);

/* The putter rule of castore.md: every child directory of dir is in pending (a map of
 * obi_encoded_directory) or stored, with the size its DirectoryNode claims. -EINVAL names the
 * child's name and digest otherwise. Also the depth rule (OBI_DIRECTORY_MAX_DEPTH): *depth is
 * dir's depth (or an upper bound: a stored child counts as size + 1 levels at most, which is
 * exact enough unless it would exceed the limit; then the stored trees are walked through
 * service to count exactly, remembering each count in depth_memo, a map of digest -> depth
 * cast to a pointer), and a tree deeper than the limit is -EINVAL. */
int obi_directory_check_children(const obi_directory *dir, const obi_digest_map *pending,
                                 obi_stored_size_fn stored_size, void *ctx,
                                 obi_directory_service *service, obi_digest_map *depth_memo,
                                 uint32_t *depth, obi_error **err);

/* Stores every directory in pending (digest -> obi_encoded_directory) at once. It may take
 * values out of pending by setting them to NULL; the putter frees the rest afterwards. */
typedef int (*obi_commit_pending_fn)(void *ctx, obi_digest_map *pending, obi_error **err);

/* The directory putter of the local and memory backends: each put is validated, its children
 * checked (obi_directory_check_children against the directories put before and stored_size)
 * and kept in memory; finish hands them all to commit; close without finish stores nothing.
 * Rejects a put after finish, finishing twice and finishing with nothing put. */
int obi_pending_putter_new(obi_stored_size_fn stored_size, obi_commit_pending_fn commit, void *ctx,
                           obi_directory_service *service, obi_directory_putter **out,
                           obi_error **err);

/* Decodes, validates and checks that the bytes hash to digest (-EIO naming it otherwise). */
int obi_directory_decode_verified(const obi_digest *digest, const uint8_t *data, size_t len,
                                  obi_directory **out, obi_error **err);

/* Listing helpers: the keys of a map (a malloc'd copy, so that they can be visited without the
 * lock guarding the map), and visiting such a copy. */
int obi_digest_map_keys(const obi_digest_map *map, obi_digest **out, size_t *n_out);
int obi_digest_list_visit(const obi_digest *digests, size_t n, obi_digest_visit_fn visit, void *ctx,
                          obi_error **err);

/* Where an on-disk store lives. Its two sides (local_blob.c, local_directory.c) are linked by
 * the crash protocol (docs/store.md): the directory putter runs the blob side's barrier for the
 * same store before it commits. They find each other by the identity of the ROOT directory,
 * (st_dev, st_ino), never by how ROOT was spelled: with a trailing slash, through "..", a
 * symlink or a bind mount it is one store, one pending state, one barrier. */
typedef struct obi_local_root {
    char *path; /* canonical (realpath), malloc'd: for file names and messages */
    dev_t dev;
    ino_t ino;
} obi_local_root;

/* Creates ROOT (absolute, else -EINVAL) if missing and fills *out. what names the service in
 * errors. */
int obi_local_root_open(const char *root, const char *what, obi_local_root *out, obi_error **err);
void obi_local_root_clear(obi_local_root *root);

/* The barrier of the on-disk blob service (local_blob.c) for the store at root in this
 * process, if one is open there (else nothing to do): the on-disk directory putter calls it
 * before committing, so directories never become durable before the blobs they refer to. */
int obi_local_blob_sync_root(const obi_local_root *root, obi_error **err);

/* Whether blobs is the on-disk blob service (local_blob.c), whose operations and writers may
 * be used from several threads at once (ingest's pool relies on it). */
bool obi_blob_service_is_local(const obi_blob_service *blobs);

/* Adopting a file instead of copying it (ingest's obi_ingest_options.adopt; docs/store.md,
 * "Adopting a build's outputs"). Both only for the on-disk blob service (else 0).
 * obi_local_blob_adopt_prepare: whether the regular file open (read-only) at fd, whose fstat is
 * st, may become a blob as it is: it must have one link, be on the filesystem of ROOT/blobs,
 * not be owned by this process's user already (a build's files are its slot's) and have no
 * extended attribute; it is then given to the store's owner (this process's ids) with
 * mode 0444, and must have no open file description for writing anywhere (a read lease is
 * granted). 1: done, its contents can no longer change; 0: copy it instead (its owner and mode
 * may have been changed already); negative: an error.
 * obi_local_blob_adopt_pending: links such a file, whose contents hash to digest, under a
 * temporary name in its fan-out directory and records it as a pending blob, exactly as a
 * finished writer's file (finish_pending): the next barrier makes it durable and names it. 1:
 * done; 0: it cannot be linked there (another mount, no /proc): copy it instead. */
int obi_local_blob_adopt_prepare(obi_blob_service *blobs, int fd, const struct stat *st,
                                 obi_error **err);
int obi_local_blob_adopt_pending(obi_blob_service *blobs, int fd, const obi_digest *digest,
                                 obi_error **err);

/* ROOT/gc.lock flock'ed with operation on a descriptor of its own (LOCK_EX: gc), waiting
 * unless LOCK_NB; *fd_out holds it until closed (store_roots.h, store_gc_lock.c). */
int obi_store_gc_lock(const char *root, int operation, int *fd_out, obi_error **err);
/* The process's shared hold on ROOT/gc.lock (store_gc_lock.c): counted, one descriptor per
 * process and store, flock'ed shared from the first hold until the last release. wait: wait
 * for a running gc (else -EWOULDBLOCK while it runs). Each hold is released once; a release
 * with no hold of this process's (in a child, a hold its parent took) does nothing. */
int obi_store_gc_hold(const char *root, bool wait, obi_error **err);
void obi_store_gc_release(const char *root);

/* "blob HEX" or "directory HEX" (len bytes at s, no newline) into *ref: NULL, or what is
 * wrong with it (store_roots.c). */
const char *obi_store_ref_parse(const char *s, size_t len, obi_store_ref *ref);
/* The objects a live process's pin file (store_pins.c) open at fd keeps: those of its pins
 * not released. path names it in errors (a line that does not parse: -EINVAL naming it). */
int obi_pin_file_read(int fd, const char *path, obi_store_ref **refs_out, size_t *n_out,
                      obi_error **err);
/* Whether name (in temproots/) is a compaction's new pin file before its rename. */
bool obi_pin_file_is_compaction(const char *name);

#endif
