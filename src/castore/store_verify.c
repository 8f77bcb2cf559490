/*
 * The store's consistency check (include/ocibuild/store_verify.h): three passes over what the
 * services list. Blobs first, each read to its end and hashed, remembering the size of each
 * good one; then directories, each fetched (the backend re-hashes, decodes and validates it),
 * remembering the recursive size of each good one; then every good directory again, its child
 * directories and file blobs looked up among what the first two passes found (or, for a store
 * in use, stored since). Memory: one map entry per object (digest and size), not the objects.
 */
#include <errno.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ocibuild/blake3.h"
#include "ocibuild/cleanup.h"
#include "ocibuild/digest_map.h"
#include "ocibuild/store_verify.h"
#include "store_internal.h"

#define READ_PIECE (1024 * 1024)

typedef struct verifier {
    obi_store *store;
    obi_store_fault_fn on_fault;
    void *ctx;
    obi_store_verify_stats *stats;
    obi_digest_map blob_sizes;      /* digest -> uint64_t size, good blobs */
    obi_digest_map directory_sizes; /* digest -> uint64_t recursive size, good directories */
    obi_digest_map faulty;          /* the objects reported as faulty */
    uint8_t *buffer;
} verifier;

const char *obi_store_object_kind_name(obi_store_object_kind kind)
{
    return kind == OBI_STORE_BLOB ? "blob" : "directory";
}

static int report(verifier *v, obi_store_object_kind kind, const obi_digest *digest,
                  const char *problem, bool damaged, obi_error **err)
{
    v->stats->faults++;
    if (obi_digest_map_insert(&v->faulty, digest, OBI_DIGEST_SET_MEMBER) < 0)
        return obi_error_oom(err);
    obi_store_fault fault = {kind, *digest, problem, damaged};
    return v->on_fault ? v->on_fault(&fault, v->ctx, err) : 0;
}

static int remember(obi_digest_map *map, const obi_digest *digest, uint64_t size, obi_error **err)
{
    uint64_t *value = malloc(sizeof *value);
    if (!value)
        return obi_error_oom(err);
    *value = size;
    int r = obi_digest_map_insert(map, digest, value);
    if (r <= 0)
        free(value); /* listed twice: the first size stands */
    return r < 0 ? obi_error_oom(err) : 0;
}

/* ---- blobs ---- */

/* Reads the blob to its end: 0 with its size and the digest of what was read, or the read
 * error (a faulty blob: the backend may check the hash itself and fail with -EIO). */
static int read_blob(verifier *v, const obi_digest *digest, uint64_t *size, obi_digest *actual,
                     obi_error **err)
{
    cleanup_blob_reader obi_blob_reader *reader = NULL;
    int r = obi_blob_open_read(v->store->blobs, digest, &reader, err);
    if (r < 0)
        return r;
    obi_blake3_hasher hasher;
    obi_blake3_init(&hasher);
    *size = 0;
    for (;;) {
        size_t n = 0;
        r = obi_blob_read(reader, v->buffer, READ_PIECE, &n, err);
        if (r < 0)
            return r;
        if (n == 0)
            break;
        obi_blake3_update(&hasher, v->buffer, n);
        *size += n;
    }
    obi_blake3_finalize(&hasher, actual->bytes, OBI_DIGEST_LEN);
    return 0;
}

static int verify_blob(const obi_digest *digest, void *ctx, obi_error **err)
{
    verifier *v = ctx;
    v->stats->blobs++;
    uint64_t size = 0;
    obi_digest actual;
    cleanup_error obi_error *fault = NULL;
    int r = read_blob(v, digest, &size, &actual, &fault);
    if (r == -ENOMEM)
        return obi_error_set(err, r, "%s", fault ? fault->message : "out of memory");
    if (r < 0)
        return report(v, OBI_STORE_BLOB, digest, fault ? fault->message : "unreadable", true, err);
    v->stats->blob_bytes += size;
    if (!obi_digest_equal(&actual, digest)) {
        char hex[OBI_DIGEST_HEX_LEN + 1], problem[160];
        obi_digest_to_hex(&actual, hex);
        snprintf(problem, sizeof problem, "contents (%llu bytes) hash to %s",
                 (unsigned long long)size, hex);
        return report(v, OBI_STORE_BLOB, digest, problem, true, err);
    }
    return remember(&v->blob_sizes, digest, size, err);
}

/* ---- directories ---- */

static int fetch_directory(verifier *v, const obi_digest *digest, obi_directory **dir,
                           obi_error **err)
{
    cleanup_error obi_error *fault = NULL;
    int r = obi_directory_get(v->store->directories, digest, dir, &fault);
    if (r == -ENOMEM)
        return obi_error_set(err, r, "%s", fault ? fault->message : "out of memory");
    if (r < 0) {
        r = report(v, OBI_STORE_DIRECTORY, digest, fault ? fault->message : "unreadable", true,
                   err);
        return r < 0 ? r : 0;
    }
    return 1;
}

static int verify_directory(const obi_digest *digest, void *ctx, obi_error **err)
{
    verifier *v = ctx;
    v->stats->directories++;
    cleanup_directory obi_directory *dir = NULL;
    int r = fetch_directory(v, digest, &dir, err);
    if (r <= 0)
        return r;
    return remember(&v->directory_sizes, digest, obi_directory_size(dir), err);
}

/* Whether a child the first passes did not see was stored meanwhile (a store in use): a blob
 * is then taken as present, a directory is fetched for its size. 1 yes (*size set when known),
 * 0 no. */
static int stored_meanwhile(verifier *v, bool directory, const obi_digest *digest, uint64_t *size,
                            bool *size_known)
{
    *size_known = false;
    if (!directory)
        return obi_blob_has(v->store->blobs, digest, NULL) == 1;
    cleanup_directory obi_directory *dir = NULL;
    if (obi_directory_get(v->store->directories, digest, &dir, NULL) < 0)
        return 0;
    *size = obi_directory_size(dir);
    *size_known = true;
    return 1;
}

/* The children of a good directory: directories and file blobs present, sizes as claimed. */
static int verify_children(const obi_digest *digest, void *ctx, obi_error **err)
{
    verifier *v = ctx;
    cleanup_directory obi_directory *dir = NULL;
    int r = fetch_directory(v, digest, &dir, err);
    if (r <= 0)
        return r;
    const struct {
        const obi_node *nodes;
        size_t n;
        const obi_digest_map *sizes;
        const char *kind;
    } lists[] = {{dir->directories, dir->n_directories, &v->directory_sizes, "child directory"},
                 {dir->files, dir->n_files, &v->blob_sizes, "file"}};
    for (size_t l = 0; l < OBI_ARRAY_SIZE(lists); l++) {
        for (size_t i = 0; i < lists[l].n; i++) {
            const obi_node *child = &lists[l].nodes[i];
            const uint64_t *size = obi_digest_map_get(lists[l].sizes, &child->digest);
            uint64_t late_size = 0;
            bool known = true;
            if (!size && !obi_digest_map_get(&v->faulty, &child->digest) &&
                stored_meanwhile(v, l == 0, &child->digest, &late_size, &known)) {
                if (!known || late_size == child->size)
                    continue;
                size = &late_size;
            }
            if (size && *size == child->size)
                continue;
            char hex[OBI_DIGEST_HEX_LEN + 1], problem[512];
            obi_digest_to_hex(&child->digest, hex);
            if (!size)
                snprintf(problem, sizeof problem, "%s \"%s\" (%s) is missing or damaged",
                         lists[l].kind, (const char *)child->name.data, hex);
            else
                snprintf(problem, sizeof problem,
                         "%s \"%s\" (%s) has size %llu, the entry says %llu", lists[l].kind,
                         (const char *)child->name.data, hex, (unsigned long long)*size,
                         (unsigned long long)child->size);
            r = report(v, OBI_STORE_DIRECTORY, digest, problem, false, err);
            if (r < 0)
                return r;
        }
    }
    return 0;
}

int obi_store_verify(obi_store *store, obi_store_fault_fn on_fault, void *ctx,
                     obi_store_verify_stats *stats, obi_error **err)
{
    *stats = (obi_store_verify_stats){0};
    verifier v = {store, on_fault, ctx, stats, {0}, {0}, {0}, malloc(READ_PIECE)};
    if (!v.buffer)
        return obi_error_oom(err);
    obi_digest_map_init(&v.blob_sizes, free);
    obi_digest_map_init(&v.directory_sizes, free);
    obi_digest_map_init(&v.faulty, NULL);
    int r = obi_blob_service_list(store->blobs, verify_blob, &v, err);
    if (r >= 0)
        r = obi_directory_service_list(store->directories, verify_directory, &v, err);
    if (r >= 0) {
        /* The good directories of the second pass (a faulty one was reported already). */
        obi_digest *good = NULL;
        size_t n = 0;
        r = obi_digest_map_keys(&v.directory_sizes, &good, &n);
        if (r < 0)
            r = obi_error_oom(err);
        else
            r = obi_digest_list_visit(good, n, verify_children, &v, err);
        free(good);
    }
    obi_digest_map_clear(&v.blob_sizes);
    obi_digest_map_clear(&v.directory_sizes);
    obi_digest_map_clear(&v.faulty);
    free(v.buffer);
    return r < 0 ? r : 0;
}
