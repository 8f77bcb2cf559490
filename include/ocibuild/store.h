/*
 * The castore as its callers see it (builder, nix, the rpc server and clients, the CLI): two
 * services, a blob service (content by BLAKE3 digest) and a directory service (Directory
 * messages by digest), opened by URL and used through the calls below. The services are
 * opaque here; how a backend is written (the ops tables, registering a URL scheme) is in
 * store_backend.h, which only backends include (libgit2 draws the same line between odb.h and
 * sys/odb_backend.h).
 *
 * Backends: memory://, the on-disk default (objectstore+file:///abs or a plain path,
 * docs/store.md), and grpc+unix:// / grpc+http:// / grpc+https:// registered by the rpc layer.
 * One URL parser chooses (obi_blob_service_open / obi_directory_service_open).
 */
#ifndef OCIBUILD_STORE_H
#define OCIBUILD_STORE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "ocibuild/digest.h"
#include "ocibuild/error.h"
#include "ocibuild/node.h"
#include "ocibuild/url.h"

/* Called for each digest a listing finds. */
typedef int (*obi_digest_visit_fn)(const obi_digest *digest, void *ctx, obi_error **err);

/* ---- blob service ---- */

typedef struct obi_blob_service obi_blob_service;
typedef struct obi_blob_reader obi_blob_reader;
typedef struct obi_blob_writer obi_blob_writer;

/* 1 if present, 0 if absent, negative on error. */
int obi_blob_has(obi_blob_service *svc, const obi_digest *digest, obi_error **err);
/* -ENOENT (with a message naming the digest) when absent. A reader hashes what it returns
 * and fails with -EIO at the end when the contents do not match the digest. */
int obi_blob_open_read(obi_blob_service *svc, const obi_digest *digest, obi_blob_reader **out,
                       obi_error **err);
/* *nread == 0 means end of blob. */
int obi_blob_read(obi_blob_reader *reader, void *buf, size_t len, size_t *nread, obi_error **err);
void obi_blob_reader_close(obi_blob_reader *reader);

int obi_blob_open_write(obi_blob_service *svc, obi_blob_writer **out, obi_error **err);
/* Like open_write, for a caller that hashed the contents before writing them: expected is where
 * the backend prepares the blob (the on-disk store: a temporary file beside its final name).
 * Only a hint: the blob is named by what is written, and finish returns that digest, which the
 * caller compares with what it expected (the contents may have changed in between). */
int obi_blob_open_write_expecting(obi_blob_service *svc, const obi_digest *expected,
                                  obi_blob_writer **out, obi_error **err);
int obi_blob_write(obi_blob_writer *writer, const void *data, size_t len, obi_error **err);
/* Returns the digest and makes the blob visible under it (atomically) and durable; after this
 * only close is valid. */
int obi_blob_finish(obi_blob_writer *writer, obi_digest *digest_out, obi_error **err);
/* Like finish, but the blob may stay *pending* until the service's next barrier
 * (obi_blob_service_sync): visible through this service (and the other instances of the same
 * store in this process), durable and visible to other processes only after the barrier; lost,
 * never half-visible, if the process dies first. For batches of many blobs (ingest): one
 * barrier instead of one fsync per blob. Backends without pending blobs finish at once. */
int obi_blob_finish_pending(obi_blob_writer *writer, obi_digest *digest_out, obi_error **err);
/* Frees the writer; an unfinished blob is discarded and leaves nothing visible. */
void obi_blob_writer_close(obi_blob_writer *writer);

/* Path of a read-only file holding the blob (caller frees), for hard-link materialization:
 * -ENOENT when absent, -ENOTSUP when the service keeps no local files (memory://, grpc+). A
 * pending blob is made durable first (the path is its final name). */
int obi_blob_local_path(obi_blob_service *svc, const obi_digest *digest, char **path_out,
                        obi_error **err);
/* The barrier: every blob finished so far (pending ones included) is durable when this
 * returns 0. Call it before anything durable refers to pending blobs (ingest does, before it
 * commits directories and before it returns; the on-disk directory putter does for blobs of
 * its own store in this process before every commit). */
int obi_blob_service_sync(obi_blob_service *svc, obi_error **err);
/* Visits every blob the service stores (those pending in this process left out), in no
 * particular order; -ENOTSUP when it cannot list (a remote store). */
int obi_blob_service_list(obi_blob_service *svc, obi_digest_visit_fn visit, void *ctx,
                          obi_error **err);
/* Removes a stored blob (the garbage collector, store_gc.h); *freed (optional) gets the bytes
 * released (0 when other hard links keep the file, e.g. the input cache's). An absent blob is
 * not an error. -ENOTSUP when the backend cannot remove. */
int obi_blob_service_remove(obi_blob_service *svc, const obi_digest *digest, uint64_t *freed,
                            obi_error **err);
/* Runs the barrier first (a failure leaves the pending blobs lost, never half-visible). */
void obi_blob_service_free(obi_blob_service *svc);

/* Convenience: whole blob from/to memory. */
int obi_blob_put_bytes(obi_blob_service *svc, const void *data, size_t len, obi_digest *out,
                       obi_error **err);
int obi_blob_get_bytes(obi_blob_service *svc, const obi_digest *digest, size_t max_len,
                       uint8_t **out, size_t *out_len, obi_error **err);

static inline void obi_blob_reader_closep(obi_blob_reader **r)
{
    obi_blob_reader_close(*r);
}
static inline void obi_blob_writer_closep(obi_blob_writer **w)
{
    obi_blob_writer_close(*w);
}
static inline void obi_blob_service_freep(obi_blob_service **s)
{
    obi_blob_service_free(*s);
}
#define cleanup_blob_reader __attribute__((cleanup(obi_blob_reader_closep)))
#define cleanup_blob_writer __attribute__((cleanup(obi_blob_writer_closep)))
#define cleanup_blob_service __attribute__((cleanup(obi_blob_service_freep)))

/* ---- directory service ---- */

typedef struct obi_directory_service obi_directory_service;
typedef struct obi_directory_putter obi_directory_putter;

typedef int (*obi_directory_visit_fn)(const obi_directory *dir, const obi_digest *digest, void *ctx,
                                      obi_error **err);

/* -ENOENT (message names the digest) when absent. The result is validated. */
int obi_directory_get(obi_directory_service *svc, const obi_digest *digest, obi_directory **out,
                      obi_error **err);
/* A putter takes one tree, leaves first, the root last. */
int obi_directory_open_put(obi_directory_service *svc, obi_directory_putter **out, obi_error **err);
/* Validates dir; every child directory must be stored or put earlier in this putter (else
 * -EINVAL naming the child). */
int obi_directory_put(obi_directory_putter *putter, const obi_directory *dir,
                      obi_digest *digest_out, obi_error **err);
/* Non-canonical encodings up to this size are decoded and re-encoded; larger ones refused. */
#define OBI_DIRECTORY_DECODE_MAX (1024 * 1024)
/* Puts one Directory given as its encoding (malloc'd; ownership taken, also on failure), with
 * the errors put gives: the gRPC server's Put. The canonical encoding, which protobuf libraries
 * write for these messages, is checked in place and, where the putter can, kept as it is: no
 * memory beyond the bytes themselves. Other encodings of up to OBI_DIRECTORY_DECODE_MAX bytes
 * are decoded (the digest is that of the canonical re-encoding, docs/castore.md); larger ones
 * are refused with -EINVAL. */
int obi_directory_put_encoded(obi_directory_putter *putter, uint8_t *data, size_t len,
                              obi_digest *digest_out, obi_error **err);
/* Commits everything put (atomically where the backend can); root = the last put. */
int obi_directory_putter_finish(obi_directory_putter *putter, obi_digest *root_out,
                                obi_error **err);
/* Frees; an unfinished putter's directories are discarded. */
void obi_directory_putter_close(obi_directory_putter *putter);

/* The root first, then its children breadth-first, each directory once. */
int obi_directory_get_recursive(obi_directory_service *svc, const obi_digest *root,
                                obi_directory_visit_fn visit, void *ctx, obi_error **err);

/* The same walk one directory at a time, for callers that must not block between directories
 * (the gRPC server sends each as the client reads): the root, then breadth-first, each
 * directory once, each checked against the size its parent claims (-EIO). Uses get only. */
typedef struct obi_directory_walk obi_directory_walk;
int obi_directory_walk_new(obi_directory_service *svc, const obi_digest *root,
                           obi_directory_walk **out, obi_error **err);
/* 1 with the next directory (*dir: caller frees) and its digest, 0 when the walk is over. */
int obi_directory_walk_next(obi_directory_walk *walk, obi_directory **dir, obi_digest *digest,
                            obi_error **err);
void obi_directory_walk_free(obi_directory_walk *walk);
static inline void obi_directory_walk_freep(obi_directory_walk **w)
{
    obi_directory_walk_free(*w);
}
#define cleanup_directory_walk __attribute__((cleanup(obi_directory_walk_freep)))

/* Visits every directory the service stores, in no particular order; -ENOTSUP when it cannot
 * list (a remote store). */
int obi_directory_service_list(obi_directory_service *svc, obi_digest_visit_fn visit, void *ctx,
                               obi_error **err);
/* Removes the n directories at once, all or none (the garbage collector); *freed (optional)
 * gets the bytes of their encodings. Absent ones are skipped. -ENOTSUP when the backend cannot
 * remove. */
int obi_directory_service_remove(obi_directory_service *svc, const obi_digest *digests, size_t n,
                                 uint64_t *freed, obi_error **err);
void obi_directory_service_free(obi_directory_service *svc);

static inline void obi_directory_putter_closep(obi_directory_putter **p)
{
    obi_directory_putter_close(*p);
}
static inline void obi_directory_service_freep(obi_directory_service **s)
{
    obi_directory_service_free(*s);
}
#define cleanup_directory_putter __attribute__((cleanup(obi_directory_putter_closep)))
#define cleanup_directory_service __attribute__((cleanup(obi_directory_service_freep)))

/* ---- selection by URL (docs/store.md) ---- */

int obi_blob_service_open(const char *url, obi_blob_service **out, obi_error **err);
int obi_directory_service_open(const char *url, obi_directory_service **out, obi_error **err);

/* Both services of one store. */
typedef struct obi_store {
    obi_blob_service *blobs;
    obi_directory_service *directories;
    /* ROOT of the on-disk store when both services are that one store (obi_store_open sets
     * it), else NULL: roots, pins and the garbage collector (store_roots.h, store_gc.h) work
     * on it and do nothing (pins) or refuse (gc) without it. */
    char *local_root;
} obi_store;

/* Opens blob_url and directory_url (either may be NULL: the default store URL). */
int obi_store_open(const char *blob_url, const char *directory_url, obi_store **out,
                   obi_error **err);
void obi_store_close(obi_store *store);
/* Opens now what the store's services would open on first use (the local directory service's
 * database): for a caller that will need them soon and has a moment to spare meanwhile (a
 * build, while its container starts). */
int obi_store_connect(obi_store *store, obi_error **err);
static inline void obi_store_closep(obi_store **s)
{
    obi_store_close(*s);
}
#define cleanup_store __attribute__((cleanup(obi_store_closep)))

/* Adds a URL scheme (the rpc layer's grpc+ schemes) without castore depending on the layer
 * that provides it: obi_blob_service_open and obi_directory_service_open then hand URLs of that
 * scheme to these factories. A second registration of a scheme replaces the first; a built-in
 * scheme is -EEXIST. */
typedef int (*obi_blob_service_factory)(const obi_url *url, obi_blob_service **out,
                                        obi_error **err);
typedef int (*obi_directory_service_factory)(const obi_url *url, obi_directory_service **out,
                                             obi_error **err);
int obi_store_register_scheme(const char *scheme, obi_blob_service_factory blobs,
                              obi_directory_service_factory directories);

/* $OCIBUILD_STORE, else <data dir>/store (see obi_default_data_dir). Caller frees. */
char *obi_default_store_url(void);

/* The built-in backends, for tests and direct use. */
int obi_memory_blob_service_new(obi_blob_service **out, obi_error **err);
int obi_memory_directory_service_new(obi_directory_service **out, obi_error **err);
/* The on-disk default rooted at an absolute path (created if missing): blobs under
 * ROOT/blobs/<2 hex>/<64 hex>, directories in ROOT/directories.sqlite. */
int obi_local_blob_service_open(const char *root, obi_blob_service **out, obi_error **err);
int obi_local_directory_service_open(const char *root, obi_directory_service **out,
                                     obi_error **err);

#endif
