/*
 * memory://: blob and directory services that live in the process (tests, scratch use).
 *
 * Each service is a digest map behind a mutex. Entries are immutable and never removed until
 * the service is freed, so a reader holds a plain pointer to its blob without the lock. A
 * writer buffers the blob and hashes it while writing; finish inserts that buffer (no copy)
 * unless the blob is present. A
 * directory putter collects encoded directories privately and publishes them all at finish
 * under one lock, so an abandoned putter leaves nothing behind.
 */
#include <errno.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "ocibuild/blake3.h"
#include "ocibuild/buf.h"
#include "ocibuild/cleanup.h"
#include "ocibuild/digest_map.h"
#include "ocibuild/store_backend.h"
#include "store_internal.h"

/* ---- blobs ---- */

typedef struct memory_blob {
    size_t len;
    uint8_t *data; /* the writer's buffer, taken over at finish (no copy) */
} memory_blob;

static void memory_blob_free(void *value)
{
    memory_blob *blob = value;
    free(blob->data);
    free(blob);
}

typedef struct memory_blob_service {
    obi_blob_service base;
    pthread_mutex_t lock;
    obi_digest_map blobs; /* digest -> memory_blob */
} memory_blob_service;

typedef struct memory_blob_reader {
    obi_blob_reader base;
    const memory_blob *blob;
    size_t offset;
} memory_blob_reader;

typedef struct memory_blob_writer {
    obi_blob_writer base;
    memory_blob_service *svc;
    obi_buf data;
    obi_blake3_hasher hasher;
    bool finished;
} memory_blob_writer;

static int absent(const obi_digest *digest, const char *what, obi_error **err)
{
    char hex[OBI_DIGEST_HEX_LEN + 1];
    obi_digest_to_hex(digest, hex);
    return obi_error_set(err, -ENOENT, "%s %s not found", what, hex);
}

static const memory_blob *memory_blob_lookup(memory_blob_service *svc, const obi_digest *digest)
{
    pthread_mutex_lock(&svc->lock);
    const memory_blob *blob = obi_digest_map_get(&svc->blobs, digest);
    pthread_mutex_unlock(&svc->lock);
    return blob;
}

static int memory_blob_has(obi_blob_service *base, const obi_digest *digest, obi_error **err)
{
    (void)err;
    return memory_blob_lookup((memory_blob_service *)base, digest) ? 1 : 0;
}

static int memory_reader_read(obi_blob_reader *base, void *buf, size_t len, size_t *nread,
                              obi_error **err)
{
    (void)err;
    memory_blob_reader *reader = (memory_blob_reader *)base;
    size_t n = reader->blob->len - reader->offset;
    if (n > len)
        n = len;
    if (n)
        memcpy(buf, reader->blob->data + reader->offset, n);
    reader->offset += n;
    *nread = n;
    return 0;
}

static void memory_reader_close(obi_blob_reader *base)
{
    free(base);
}

static const struct obi_blob_reader_ops memory_reader_ops = {
    .read = memory_reader_read,
    .close = memory_reader_close,
};

static int memory_blob_open_read(obi_blob_service *base, const obi_digest *digest,
                                 obi_blob_reader **out, obi_error **err)
{
    const memory_blob *blob = memory_blob_lookup((memory_blob_service *)base, digest);
    if (!blob)
        return absent(digest, "blob", err);
    memory_blob_reader *reader = calloc(1, sizeof *reader);
    if (!reader)
        return obi_error_oom(err);
    reader->base.ops = &memory_reader_ops;
    reader->blob = blob;
    *out = &reader->base;
    return 0;
}

static int memory_writer_write(obi_blob_writer *base, const void *data, size_t len, obi_error **err)
{
    memory_blob_writer *writer = (memory_blob_writer *)base;
    if (writer->finished)
        return obi_error_set(err, -EINVAL, "blob writer: write after finish");
    if (obi_buf_append(&writer->data, data, len) < 0)
        return obi_error_set(err, -ENOMEM, "blob writer: out of memory");
    obi_blake3_update(&writer->hasher, data, len);
    return 0;
}

static int memory_writer_finish(obi_blob_writer *base, obi_digest *digest_out, obi_error **err)
{
    memory_blob_writer *writer = (memory_blob_writer *)base;
    if (writer->finished)
        return obi_error_set(err, -EINVAL, "blob writer: finished twice");
    obi_digest digest;
    obi_blake3_finalize(&writer->hasher, digest.bytes, OBI_DIGEST_LEN);
    memory_blob *blob = malloc(sizeof *blob);
    if (!blob)
        return obi_error_set(err, -ENOMEM, "blob writer: out of memory");
    blob->len = writer->data.len;
    blob->data = (uint8_t *)obi_buf_steal(&writer->data);
    if (!blob->data) {
        free(blob);
        return obi_error_set(err, -ENOMEM, "blob writer: out of memory");
    }
    /* give back what doubling the buffer left unused; the blob lives as long as the service */
    uint8_t *fitted = realloc(blob->data, blob->len + 1);
    if (fitted)
        blob->data = fitted;
    pthread_mutex_lock(&writer->svc->lock);
    int r = obi_digest_map_insert(&writer->svc->blobs, &digest, blob);
    pthread_mutex_unlock(&writer->svc->lock);
    if (r <= 0)
        memory_blob_free(blob);
    if (r < 0)
        return obi_error_set(err, -ENOMEM, "blob writer: out of memory");
    writer->finished = true;
    if (digest_out)
        *digest_out = digest;
    return 0;
}

static void memory_writer_close(obi_blob_writer *base)
{
    memory_blob_writer *writer = (memory_blob_writer *)base;
    obi_buf_free(&writer->data);
    free(writer);
}

static const struct obi_blob_writer_ops memory_writer_ops = {
    .write = memory_writer_write,
    .finish = memory_writer_finish,
    .close = memory_writer_close,
};

static int memory_blob_open_write(obi_blob_service *base, obi_blob_writer **out, obi_error **err)
{
    memory_blob_writer *writer = calloc(1, sizeof *writer);
    if (!writer)
        return obi_error_oom(err);
    writer->base.ops = &memory_writer_ops;
    writer->svc = (memory_blob_service *)base;
    obi_blake3_init(&writer->hasher);
    *out = &writer->base;
    return 0;
}

/* The keys of map, taken under lock, visited without it. */
static int list_map(pthread_mutex_t *lock, const obi_digest_map *map, obi_digest_visit_fn visit,
                    void *ctx, obi_error **err)
{
    pthread_mutex_lock(lock);
    obi_digest *keys = NULL;
    size_t n = 0;
    int r = obi_digest_map_keys(map, &keys, &n);
    pthread_mutex_unlock(lock);
    if (r < 0)
        return obi_error_oom(err);
    r = obi_digest_list_visit(keys, n, visit, ctx, err);
    free(keys);
    return r;
}

static int memory_blob_list(obi_blob_service *base, obi_digest_visit_fn visit, void *ctx,
                            obi_error **err)
{
    memory_blob_service *svc = (memory_blob_service *)base;
    return list_map(&svc->lock, &svc->blobs, visit, ctx, err);
}

static void memory_blob_service_free(obi_blob_service *base)
{
    memory_blob_service *svc = (memory_blob_service *)base;
    obi_digest_map_clear(&svc->blobs);
    pthread_mutex_destroy(&svc->lock);
    free(svc);
}

static const struct obi_blob_service_ops memory_blob_ops = {
    .has = memory_blob_has,
    .open_read = memory_blob_open_read,
    .open_write = memory_blob_open_write,
    .local_path = NULL,
    .list = memory_blob_list,
    .free = memory_blob_service_free,
};

int obi_memory_blob_service_new(obi_blob_service **out, obi_error **err)
{
    memory_blob_service *svc = calloc(1, sizeof *svc);
    if (!svc)
        return obi_error_oom(err);
    svc->base.ops = &memory_blob_ops;
    pthread_mutex_init(&svc->lock, NULL);
    obi_digest_map_init(&svc->blobs, memory_blob_free);
    *out = &svc->base;
    return 0;
}

/* ---- directories ---- */

typedef struct memory_directory_service {
    obi_directory_service base;
    pthread_mutex_t lock;
    obi_digest_map directories; /* digest -> obi_encoded_directory */
} memory_directory_service;

static int memory_directory_get(obi_directory_service *base, const obi_digest *digest,
                                obi_directory **out, obi_error **err)
{
    memory_directory_service *svc = (memory_directory_service *)base;
    pthread_mutex_lock(&svc->lock);
    const obi_encoded_directory *encoded = obi_digest_map_get(&svc->directories, digest);
    pthread_mutex_unlock(&svc->lock);
    if (!encoded)
        return absent(digest, "directory", err);
    return obi_directory_decode_verified(digest, encoded->data, encoded->len, out, err);
}

static int memory_stored_size(void *ctx, const obi_digest *digest, uint64_t *size, obi_error **err)
{
    (void)err;
    memory_directory_service *svc = ctx;
    pthread_mutex_lock(&svc->lock);
    const obi_encoded_directory *encoded = obi_digest_map_get(&svc->directories, digest);
    if (encoded)
        *size = encoded->size;
    pthread_mutex_unlock(&svc->lock);
    return encoded ? 1 : 0;
}

/* Moves the pending directories into the service (those it has already stay pending and are
 * freed with it). */
static int memory_commit_pending(void *ctx, obi_digest_map *pending, obi_error **err)
{
    memory_directory_service *svc = ctx;
    int r = 0;
    pthread_mutex_lock(&svc->lock);
    for (size_t i = 0; r >= 0 && i < pending->capacity; i++) {
        obi_digest_map_entry *entry = &pending->slots[i];
        if (!entry->value)
            continue;
        r = obi_digest_map_insert(&svc->directories, &entry->key, entry->value);
        if (r == 1) /* ownership moved to the service */
            entry->value = NULL;
    }
    pthread_mutex_unlock(&svc->lock);
    if (r < 0) {
        /* the map has holes now: drop what is left rather than look anything up in it */
        obi_digest_map_clear(pending);
        return obi_error_set(err, -ENOMEM, "directory putter: out of memory");
    }
    return 0;
}

static int memory_directory_open_put(obi_directory_service *base, obi_directory_putter **out,
                                     obi_error **err)
{
    return obi_pending_putter_new(memory_stored_size, memory_commit_pending, base, base, out, err);
}

static int memory_directory_list(obi_directory_service *base, obi_digest_visit_fn visit, void *ctx,
                                 obi_error **err)
{
    memory_directory_service *svc = (memory_directory_service *)base;
    return list_map(&svc->lock, &svc->directories, visit, ctx, err);
}

static void memory_directory_service_free(obi_directory_service *base)
{
    memory_directory_service *svc = (memory_directory_service *)base;
    obi_digest_map_clear(&svc->directories);
    pthread_mutex_destroy(&svc->lock);
    free(svc);
}

static const struct obi_directory_service_ops memory_directory_ops = {
    .get = memory_directory_get,
    .open_put = memory_directory_open_put,
    .get_recursive = NULL,
    .list = memory_directory_list,
    .free = memory_directory_service_free,
};

int obi_memory_directory_service_new(obi_directory_service **out, obi_error **err)
{
    memory_directory_service *svc = calloc(1, sizeof *svc);
    if (!svc)
        return obi_error_oom(err);
    svc->base.ops = &memory_directory_ops;
    pthread_mutex_init(&svc->lock, NULL);
    obi_digest_map_init(&svc->directories, obi_encoded_directory_free);
    *out = &svc->base;
    return 0;
}
