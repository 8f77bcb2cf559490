/*
 * Blob streams of the castore filesystem (see castore_fs_internal.h): how an open file's bytes
 * are read from the blob service. A local blob file is read with pread (and spliced by the FUSE
 * layer); anything else through one sequential reader that stays open across reads. Its bytes
 * pass through a ring of FS_STREAM_WINDOW bytes (the blob's size when smaller, taken from the
 * filesystem's budget when the file is opened), so a read the kernel sent out of order (its
 * read-ahead requests race on several threads) or a small step back is served from memory, and
 * each time the stream has to wait for the reader anyway it reads up to `readahead` bytes past
 * the request, so that the next sequential read finds them. A read before the ring starts the
 * reader again from offset 0 (the blob service has no ranged reads beyond local files): a cost
 * only random access backwards pays.
 *
 * Reading from the reader hashes everything from offset 0, so a stream that reaches the end
 * checks the blob against the node's digest and size, and the read that reaches it fails with
 * -EIO on a mismatch (bytes served before cannot be taken back; a local file is the store's own,
 * read as materialized inputs read it).
 */
#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "castore_fs_internal.h"
#include "ocibuild/cleanup.h"

struct fs_stream {
    pthread_mutex_t lock;
    obi_blob_service *blobs;
    obi_digest digest;
    uint64_t size;
    size_t readahead;
    int fd;                  /* the local blob file, or -1 */
    obi_blob_reader *reader; /* opened on first use */
    uint64_t reader_pos;     /* bytes the reader returned so far */
    uint64_t window_start;   /* the ring holds [window_start, reader_pos) */
    uint8_t *ring;           /* ring_size bytes from the budget, or NULL (a local file) */
    size_t ring_size;
    fs_stream_budget *budget;
    fs_stream *prev, *next;   /* in budget->open */
    obi_blake3_hasher hasher; /* over [0, reader_pos) */
    fs_stream_stats stats;
};

/* A local file for the blob, or -1 (the backend has none, or not for this blob). */
static int open_local_file(obi_blob_service *blobs, const obi_digest *digest)
{
    cleanup_free char *path = NULL;
    cleanup_error obi_error *ignored = NULL;
    if (obi_blob_local_path(blobs, digest, &path, &ignored) < 0)
        return -1;
    return open(path, O_RDONLY | O_NOFOLLOW | O_CLOEXEC);
}

void fs_stream_budget_init(fs_stream_budget *budget, size_t limit)
{
    pthread_mutex_init(&budget->lock, NULL);
    budget->used = 0;
    budget->limit = limit;
    budget->open = NULL;
}

void fs_stream_budget_destroy(fs_stream_budget *budget)
{
    while (budget->open)
        fs_stream_close(budget->open);
    pthread_mutex_destroy(&budget->lock);
}

static int budget_take(fs_stream_budget *budget, size_t bytes, obi_error **err)
{
    pthread_mutex_lock(&budget->lock);
    size_t used = budget->used;
    bool fits = budget->limit - used >= bytes;
    if (fits)
        budget->used += bytes;
    pthread_mutex_unlock(&budget->lock);
    if (!fits)
        return obi_error_set(err, -ENFILE,
                             "the open files of this mount hold %zu bytes of read buffers, "
                             "another %zu would pass the limit of %zu",
                             used, bytes, budget->limit);
    return 0;
}

static void budget_give(fs_stream_budget *budget, size_t bytes)
{
    pthread_mutex_lock(&budget->lock);
    budget->used -= bytes;
    pthread_mutex_unlock(&budget->lock);
}

int fs_stream_open(obi_blob_service *blobs, const obi_digest *digest, uint64_t size,
                   size_t readahead, fs_stream_budget *budget, fs_stream **out, obi_error **err)
{
    fs_stream *stream = calloc(1, sizeof *stream);
    if (!stream)
        return obi_error_oom(err);
    stream->blobs = blobs;
    stream->digest = *digest;
    stream->size = size;
    stream->fd = open_local_file(blobs, digest);
    if (stream->fd < 0 && size > 0) {
        size_t ring = size < FS_STREAM_WINDOW ? (size_t)size : FS_STREAM_WINDOW;
        int r = budget_take(budget, ring, err);
        if (r < 0) {
            free(stream);
            return r;
        }
        if (!(stream->ring = malloc(ring))) {
            budget_give(budget, ring);
            free(stream);
            return obi_error_oom(err);
        }
        stream->ring_size = ring;
    }
    stream->budget = budget;
    pthread_mutex_lock(&budget->lock);
    stream->next = budget->open;
    if (budget->open)
        budget->open->prev = stream;
    budget->open = stream;
    pthread_mutex_unlock(&budget->lock);
    if (!readahead)
        readahead = FS_STREAM_READAHEAD;
    stream->readahead = readahead < stream->ring_size / 2 ? readahead : stream->ring_size / 2;
    pthread_mutex_init(&stream->lock, NULL);
    *out = stream;
    return 0;
}

void fs_stream_close(fs_stream *stream)
{
    if (!stream)
        return;
    fs_stream_budget *budget = stream->budget;
    pthread_mutex_lock(&budget->lock);
    if (stream->prev)
        stream->prev->next = stream->next;
    else
        budget->open = stream->next;
    if (stream->next)
        stream->next->prev = stream->prev;
    pthread_mutex_unlock(&budget->lock);
    if (stream->fd >= 0)
        close(stream->fd);
    obi_blob_reader_close(stream->reader);
    if (stream->ring)
        budget_give(stream->budget, stream->ring_size);
    free(stream->ring);
    pthread_mutex_destroy(&stream->lock);
    free(stream);
}

int fs_stream_fd(const fs_stream *stream)
{
    return stream->fd;
}

fs_stream_stats fs_stream_get_stats(fs_stream *stream)
{
    pthread_mutex_lock(&stream->lock);
    fs_stream_stats stats = stream->stats;
    pthread_mutex_unlock(&stream->lock);
    return stats;
}

static int read_local(fs_stream *stream, uint64_t offset, size_t len, uint8_t *buf, size_t *nread,
                      obi_error **err)
{
    size_t done = 0;
    while (done < len) {
        ssize_t n = pread(stream->fd, buf + done, len - done, (off_t)(offset + done));
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0)
            return obi_error_set_errno(err, errno, "read blob file at byte %llu",
                                       (unsigned long long)(offset + done));
        if (n == 0)
            break;
        done += (size_t)n;
    }
    *nread = done;
    return 0;
}

/* Starts (again) from offset 0 with a fresh reader. */
static int restart_reader(fs_stream *stream, obi_error **err)
{
    obi_blob_reader_close(stream->reader);
    stream->reader = NULL;
    stream->reader_pos = stream->window_start = 0;
    obi_blake3_init(&stream->hasher);
    int r = obi_blob_open_read(stream->blobs, &stream->digest, &stream->reader, err);
    if (r < 0)
        return r;
    stream->stats.opens++;
    return 0;
}

/* At the end of the blob: the reader must be at its end too, and the content hash to the
 * digest. */
static int check_end(fs_stream *stream, obi_error **err)
{
    uint8_t extra;
    size_t n = 0;
    int r = obi_blob_read(stream->reader, &extra, 1, &n, err);
    if (r < 0)
        return r;
    if (n > 0)
        return obi_error_set(err, -EIO, "blob is longer than the node's size %llu",
                             (unsigned long long)stream->size);
    obi_digest got;
    obi_blake3_finalize(&stream->hasher, got.bytes, OBI_DIGEST_LEN);
    if (!obi_digest_equal(&got, &stream->digest)) {
        char hex[OBI_DIGEST_HEX_LEN + 1];
        obi_digest_to_hex(&got, hex);
        return obi_error_set(err, -EIO, "blob content has digest %s", hex);
    }
    return 0;
}

/* Reads from the reader into the ring until reader_pos reaches target. */
static int fetch_to(fs_stream *stream, uint64_t target, obi_error **err)
{
    while (stream->reader_pos < target) {
        size_t at = (size_t)(stream->reader_pos % stream->ring_size);
        size_t want = stream->ring_size - at;
        if (want > target - stream->reader_pos)
            want = (size_t)(target - stream->reader_pos);
        size_t n = 0;
        int r = obi_blob_read(stream->reader, stream->ring + at, want, &n, err);
        if (r < 0)
            return r;
        if (n == 0)
            return obi_error_set(err, -EIO, "blob ends at byte %llu, the node's size is %llu",
                                 (unsigned long long)stream->reader_pos,
                                 (unsigned long long)stream->size);
        obi_blake3_update(&stream->hasher, stream->ring + at, n);
        stream->reader_pos += n;
        stream->stats.bytes_fetched += n;
        if (stream->reader_pos - stream->window_start > stream->ring_size)
            stream->window_start = stream->reader_pos - stream->ring_size;
        if (stream->reader_pos == stream->size && (r = check_end(stream, err)) < 0)
            return r;
    }
    return 0;
}

/* One piece of a read: [offset, offset + len) inside the blob, len at most half the ring (or
 * the whole blob, when the ring holds all of it). */
static int read_piece(fs_stream *stream, uint64_t offset, size_t len, uint8_t *buf, obi_error **err)
{
    int r;
    if ((!stream->reader || offset < stream->window_start) && (r = restart_reader(stream, err)) < 0)
        return r;
    uint64_t end = offset + len;
    if (stream->reader_pos < end) {
        uint64_t target = end + stream->readahead;
        if (target > stream->size)
            target = stream->size;
        if ((r = fetch_to(stream, target, err)) < 0)
            return r;
    }
    /* [offset, end) lies in the ring now: copy it out, in two parts if it wraps. */
    size_t at = (size_t)(offset % stream->ring_size);
    size_t first = stream->ring_size - at < len ? stream->ring_size - at : len;
    memcpy(buf, stream->ring + at, first);
    memcpy(buf + first, stream->ring, len - first);
    return 0;
}

int fs_stream_read(fs_stream *stream, uint64_t offset, size_t len, uint8_t *buf, size_t *nread,
                   obi_error **err)
{
    if (stream->fd >= 0)
        return read_local(stream, offset, len, buf, nread, err);
    *nread = 0;
    if (offset >= stream->size)
        return 0;
    if (len > stream->size - offset)
        len = (size_t)(stream->size - offset);
    pthread_mutex_lock(&stream->lock);
    int r = 0;
    size_t done = 0;
    while (done < len && r == 0) {
        /* At most half the ring, or all of it when it holds the whole blob. */
        size_t half = stream->ring_size == stream->size ? stream->ring_size : stream->ring_size / 2;
        size_t piece = len - done < half ? len - done : half;
        r = read_piece(stream, offset + done, piece, buf + done, err);
        if (r == 0)
            done += piece;
    }
    if (r < 0) {
        /* The next read starts afresh rather than from a reader in an unknown state. */
        obi_blob_reader_close(stream->reader);
        stream->reader = NULL;
    }
    pthread_mutex_unlock(&stream->lock);
    if (r < 0) {
        char hex[OBI_DIGEST_HEX_LEN + 1];
        obi_digest_to_hex(&stream->digest, hex);
        return obi_error_prefix(err, r, "blob %s at byte %llu", hex,
                                (unsigned long long)(offset + done));
    }
    *nread = done;
    return 0;
}
