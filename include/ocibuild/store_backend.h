/*
 * Writing a castore backend (the caller's API is store.h): the structs behind the opaque
 * service, reader, writer and putter handles, each a table of operations that the calls of
 * store.h dispatch through, and the registration of a URL scheme. A backend embeds the struct as
 * its first member, points ops at a static table and hands out &base; one backend per file
 * (memory_store.c, local_blob.c, local_directory.c, src/rpc/grpc_*_client.c). A backend reached
 * by URL is plugged in with obi_store_register_scheme (store.h).
 *
 * Only backends and tests that stand in for one include this header: callers never reach into
 * ops, so a backend can change what it implements without touching them.
 */
#ifndef OCIBUILD_STORE_BACKEND_H
#define OCIBUILD_STORE_BACKEND_H

#include <stddef.h>
#include <stdint.h>

#include "ocibuild/store.h"

/* ---- blob service ---- */

struct obi_blob_reader_ops {
    /* obi_blob_read. */
    int (*read)(obi_blob_reader *reader, void *buf, size_t len, size_t *nread, obi_error **err);
    void (*close)(obi_blob_reader *reader);
};
struct obi_blob_reader {
    const struct obi_blob_reader_ops *ops;
};

struct obi_blob_writer_ops {
    int (*write)(obi_blob_writer *writer, const void *data, size_t len, obi_error **err);
    /* obi_blob_finish: visible and durable when it returns 0. */
    int (*finish)(obi_blob_writer *writer, obi_digest *digest_out, obi_error **err);
    /* Optional (NULL: finish): obi_blob_finish_pending, for backends with a barrier (sync). */
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
    /* Optional (NULL: open_write): obi_blob_open_write_expecting. */
    int (*open_write_expecting)(obi_blob_service *svc, const obi_digest *expected,
                                obi_blob_writer **out, obi_error **err);
    /* Optional (NULL if the backend has no local files: obi_blob_local_path says -ENOTSUP).
     * -ENOENT when absent. */
    int (*local_path)(obi_blob_service *svc, const obi_digest *digest, char **path_out,
                      obi_error **err);
    /* Optional (NULL: nothing is ever pending): the barrier. Makes every blob finished so far
     * through this service durable and visible to other processes. */
    int (*sync)(obi_blob_service *svc, obi_error **err);
    /* Optional (NULL: the backend cannot list): visit for every blob stored (those pending in
     * this process left out), in no particular order, outside any lock of the service. */
    int (*list)(obi_blob_service *svc, obi_digest_visit_fn visit, void *ctx, obi_error **err);
    /* Optional (NULL: the backend never removes): obi_blob_service_remove. */
    int (*remove)(obi_blob_service *svc, const obi_digest *digest, uint64_t *freed,
                  obi_error **err);
    /* Runs the barrier first (a failure leaves the pending blobs lost, never half-visible). */
    void (*free)(obi_blob_service *svc);
};
struct obi_blob_service {
    const struct obi_blob_service_ops *ops;
};

/* ---- directory service ---- */

struct obi_directory_putter_ops {
    /* obi_directory_put: validates dir and checks its children (obi_pending_putter_new in
     * store_internal.h does both for backends that keep a tree in memory until finish). */
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
    /* Optional (NULL: the backend never removes): obi_directory_service_remove. */
    int (*remove)(obi_directory_service *svc, const obi_digest *digests, size_t n, uint64_t *freed,
                  obi_error **err);
    /* Optional (NULL: nothing is left for later): opens now what the service opens on first
     * use (obi_store_connect). */
    int (*connect)(obi_directory_service *svc, obi_error **err);
    void (*free)(obi_directory_service *svc);
};
struct obi_directory_service {
    const struct obi_directory_service_ops *ops;
};

#endif
