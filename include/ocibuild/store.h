/*
 * The two castore services behind one interface each (libgit2's odb backends, tvix's
 * BlobService/DirectoryService): a blob service (content by BLAKE3 digest) and a directory
 * service (Directory messages by digest). Backends: memory://, the on-disk default
 * (objectstore+file:///abs or a plain path), and grpc+unix:// / grpc+http:// registered by
 * the rpc layer. One URL parser chooses (obi_blob_service_open / obi_directory_service_open).
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

struct obi_blob_reader_ops {
    /* *nread == 0 means end of blob. */
    int (*read)(obi_blob_reader *reader, void *buf, size_t len, size_t *nread, obi_error **err);
    void (*close)(obi_blob_reader *reader);
};
struct obi_blob_reader {
    const struct obi_blob_reader_ops *ops;
};

struct obi_blob_writer_ops {
    int (*write)(obi_blob_writer *writer, const void *data, size_t len, obi_error **err);
    /* Returns the digest and makes the blob visible under it (atomically) and durable; after
     * this only close is valid. */
    int (*finish)(obi_blob_writer *writer, obi_digest *digest_out, obi_error **err);
    /* Optional (NULL: finish): like finish, but the blob may stay *pending* until the
     * service's next barrier (obi_blob_service_sync): visible through this service (and the
     * other instances of the same store in this process), durable and visible to other
     * processes only after the barrier; lost, never half-visible, if the process dies first.
     * For batches of many blobs (ingest): one barrier instead of one fsync per blob. */
    int (*finish_pending)(obi_blob_writer *writer, obi_digest *digest_out, obi_error **err);
    /* Frees the writer; an unfinished blob is discarded and leaves nothing visible. */
    void (*close)(obi_blob_writer *writer);
};
struct obi_blob_writer {
    const struct obi_blob_writer_ops *ops;
};

struct obi_blob_service_ops {
    /* 1 if present, 0 if absent, negative on error. */
    int (*has)(obi_blob_service *svc, const obi_digest *digest, obi_error **err);
    /* -ENOENT (with a message naming the digest) when absent. */
    int (*open_read)(obi_blob_service *svc, const obi_digest *digest, obi_blob_reader **out,
                     obi_error **err);
    int (*open_write)(obi_blob_service *svc, obi_blob_writer **out, obi_error **err);
    /* Optional (NULL if the backend has no local files): path of a read-only file holding the
     * blob, for hard-link materialization. -ENOENT when absent. */
    int (*local_path)(obi_blob_service *svc, const obi_digest *digest, char **path_out,
                      obi_error **err);
    /* Optional (NULL: nothing is ever pending): the barrier. Makes every blob finished so far
     * through this service durable and visible to other processes. */
    int (*sync)(obi_blob_service *svc, obi_error **err);
    /* Optional (NULL: the backend cannot list): visit for every blob stored (those pending in
     * this process left out), in no particular order, outside any lock of the service. */
    int (*list)(obi_blob_service *svc, obi_digest_visit_fn visit, void *ctx, obi_error **err);
    /* Runs the barrier first (a failure leaves the pending blobs lost, never half-visible). */
    void (*free)(obi_blob_service *svc);
};
struct obi_blob_service {
    const struct obi_blob_service_ops *ops;
};

static inline int obi_blob_has(obi_blob_service *svc, const obi_digest *d, obi_error **err)
{
    return svc->ops->has(svc, d, err);
}
static inline int obi_blob_open_read(obi_blob_service *svc, const obi_digest *d,
                                     obi_blob_reader **out, obi_error **err)
{
    return svc->ops->open_read(svc, d, out, err);
}
static inline int obi_blob_open_write(obi_blob_service *svc, obi_blob_writer **out, obi_error **err)
{
    return svc->ops->open_write(svc, out, err);
}
static inline int obi_blob_read(obi_blob_reader *r, void *buf, size_t len, size_t *nread,
                                obi_error **err)
{
    return r->ops->read(r, buf, len, nread, err);
}
static inline int obi_blob_write(obi_blob_writer *w, const void *data, size_t len, obi_error **err)
{
    return w->ops->write(w, data, len, err);
}
static inline int obi_blob_finish(obi_blob_writer *w, obi_digest *digest_out, obi_error **err)
{
    return w->ops->finish(w, digest_out, err);
}
static inline int obi_blob_finish_pending(obi_blob_writer *w, obi_digest *digest_out,
                                          obi_error **err)
{
    return w->ops->finish_pending ? w->ops->finish_pending(w, digest_out, err)
                                  : w->ops->finish(w, digest_out, err);
}
/* The barrier: every blob finished so far (pending ones included) is durable when this
 * returns 0. Call it before anything durable refers to pending blobs (ingest does, before it
 * commits directories and before it returns; the on-disk directory putter does for blobs of
 * its own ROOT in this process before every commit). */
int obi_blob_service_sync(obi_blob_service *svc, obi_error **err);
/* Every blob the service stores (ops->list); -ENOTSUP when it cannot list. */
int obi_blob_service_list(obi_blob_service *svc, obi_digest_visit_fn visit, void *ctx,
                          obi_error **err);
void obi_blob_reader_close(obi_blob_reader *reader);
void obi_blob_writer_close(obi_blob_writer *writer);
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

struct obi_directory_putter_ops {
    /* Validates dir; every child directory must be stored or put earlier in this putter
     * (else -EINVAL naming the child). */
    int (*put)(obi_directory_putter *putter, const obi_directory *dir, obi_digest *digest_out,
               obi_error **err);
    /* Optional (NULL: obi_directory_put_encoded decodes and calls put): the same from the
     * Directory's encoding (malloc'd; ownership taken, also on failure), which the caller
     * checked is canonical and valid (obi_directory_check_canonical; size is its size); kept
     * as it is, never decoded. */
    int (*put_canonical)(obi_directory_putter *putter, uint8_t *data, size_t len, uint64_t size,
                         obi_digest *digest_out, obi_error **err);
    /* Commits everything put (atomically where the backend can); root = the last put. */
    int (*finish)(obi_directory_putter *putter, obi_digest *root_out, obi_error **err);
    /* Frees; an unfinished putter's directories are discarded. */
    void (*close)(obi_directory_putter *putter);
};
struct obi_directory_putter {
    const struct obi_directory_putter_ops *ops;
};

typedef int (*obi_directory_visit_fn)(const obi_directory *dir, const obi_digest *digest, void *ctx,
                                      obi_error **err);

struct obi_directory_service_ops {
    /* -ENOENT (message names the digest) when absent. The result is validated. */
    int (*get)(obi_directory_service *svc, const obi_digest *digest, obi_directory **out,
               obi_error **err);
    int (*open_put)(obi_directory_service *svc, obi_directory_putter **out, obi_error **err);
    /* Optional (NULL: generic breadth-first walk over get): root first, then children
     * breadth-first, each directory once. */
    int (*get_recursive)(obi_directory_service *svc, const obi_digest *root,
                         obi_directory_visit_fn visit, void *ctx, obi_error **err);
    /* Optional (NULL: the backend cannot list): visit for every directory stored, in no
     * particular order, outside any lock of the service. */
    int (*list)(obi_directory_service *svc, obi_digest_visit_fn visit, void *ctx, obi_error **err);
    void (*free)(obi_directory_service *svc);
};
struct obi_directory_service {
    const struct obi_directory_service_ops *ops;
};

static inline int obi_directory_get(obi_directory_service *svc, const obi_digest *d,
                                    obi_directory **out, obi_error **err)
{
    return svc->ops->get(svc, d, out, err);
}
static inline int obi_directory_open_put(obi_directory_service *svc, obi_directory_putter **out,
                                         obi_error **err)
{
    return svc->ops->open_put(svc, out, err);
}
static inline int obi_directory_put(obi_directory_putter *p, const obi_directory *dir,
                                    obi_digest *digest_out, obi_error **err)
{
    return p->ops->put(p, dir, digest_out, err);
}
static inline int obi_directory_putter_finish(obi_directory_putter *p, obi_digest *root_out,
                                              obi_error **err)
{
    return p->ops->finish(p, root_out, err);
}
/* Non-canonical encodings up to this size are decoded and re-encoded; larger ones refused. */
#define OBI_DIRECTORY_DECODE_MAX (1024 * 1024)
/* Puts one Directory given as its encoding (malloc'd; ownership taken, also on failure), with
 * the errors put gives: the gRPC server's Put. The canonical encoding, which protobuf libraries
 * write for these messages, is checked in place and, where the putter can, kept as it is: no
 * memory beyond the bytes themselves. Other encodings of up to OBI_DIRECTORY_DECODE_MAX bytes
 * are decoded (the digest is that of the canonical re-encoding, docs/castore.md); larger ones
 * are refused with -EINVAL. */
int obi_directory_put_encoded(obi_directory_putter *p, uint8_t *data, size_t len,
                              obi_digest *digest_out, obi_error **err);
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
/* Every directory the service stores (ops->list); -ENOTSUP when it cannot list. */
int obi_directory_service_list(obi_directory_service *svc, obi_digest_visit_fn visit, void *ctx,
                               obi_error **err);
void obi_directory_putter_close(obi_directory_putter *putter);
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

/* ---- selection by URL (rpc.md) ---- */

typedef int (*obi_blob_service_factory)(const obi_url *url, obi_blob_service **out,
                                        obi_error **err);
typedef int (*obi_directory_service_factory)(const obi_url *url, obi_directory_service **out,
                                             obi_error **err);
/* Lets a higher layer (rpc) add schemes without castore depending on it. */
int obi_store_register_scheme(const char *scheme, obi_blob_service_factory blobs,
                              obi_directory_service_factory directories);

int obi_blob_service_open(const char *url, obi_blob_service **out, obi_error **err);
int obi_directory_service_open(const char *url, obi_directory_service **out, obi_error **err);

/* Both services of one store. */
typedef struct obi_store {
    obi_blob_service *blobs;
    obi_directory_service *directories;
} obi_store;

/* Opens blob_url and directory_url (either may be NULL: the default store URL). */
int obi_store_open(const char *blob_url, const char *directory_url, obi_store **out,
                   obi_error **err);
void obi_store_close(obi_store *store);
static inline void obi_store_closep(obi_store **s)
{
    obi_store_close(*s);
}
#define cleanup_store __attribute__((cleanup(obi_store_closep)))

/* $OCIBUILD_STORE, else <data dir>/store (see obi_default_data_dir). Caller frees. */
char *obi_default_store_url(void);

/* Backends, for tests and direct use. */
int obi_memory_blob_service_new(obi_blob_service **out, obi_error **err);
int obi_memory_directory_service_new(obi_directory_service **out, obi_error **err);
/* The on-disk default rooted at an absolute path (created if missing): blobs under
 * ROOT/blobs/<2 hex>/<64 hex>, directories in ROOT/directories.sqlite. */
int obi_local_blob_service_open(const char *root, obi_blob_service **out, obi_error **err);
int obi_local_directory_service_open(const char *root, obi_directory_service **out,
                                     obi_error **err);

#endif
