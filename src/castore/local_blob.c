/*
 * The on-disk blob service (objectstore+file:///ROOT or a plain path): one read-only file per
 * blob, ROOT/blobs/<first 2 hex>/<64 hex>, mode 0444, so the build layer can hard-link them.
 *
 * A writer streams into a fresh read-only temporary file, hashing with BLAKE3 as it goes: in
 * the fan-out directory of the digest its caller expects (ROOT/blobs/<2 hex>/.<token>.<n>, so
 * publishing it is a rename inside one directory), or ROOT/tmp/<token>.<n> when the digest is
 * not known in advance. Two ways to finish it (docs/store.md, "Crash safety"):
 * - finish: durable at once. fsync the file, rename it to its final name with
 *   RENAME_NOREPLACE (EEXIST: another writer won with identical content; drop ours), fsync the
 *   fan-out directory. One fsync pair per blob.
 * - finish_pending (what ingest uses): close it and record it as *pending* (digest ->
 *   temporary name). It is visible in this process (has, open_read; local_path makes it
 *   durable first) but not yet under its name. The barrier (sync: called by ingest before it
 *   commits directories, by the on-disk directory putter before every commit for the same
 *   ROOT, and when a service is freed) makes every pending blob durable (one syncfs(2), or one
 *   fsync per file for a small batch), renames each to its final name the same way (a big
 *   batch on one thread per CPU, each taking its own fan-out directories), then makes the
 *   names durable.
 * Either way a name under ROOT/blobs only ever refers to a complete file whose contents were
 * durable before the name appeared, and a crash at any point leaves at most temporary files,
 * whose names are never a blob's (64 hex digits).
 *
 * The 256 fan-out directories are made with the store (one fsync), else once per process when
 * first needed; a process remembers which exist.
 *
 * Every service instance of one ROOT in a process shares one state (pending map, owner token),
 * so a second instance sees the first one's pending blobs and one barrier covers both. ROOT is
 * known by the identity of its directory (obi_local_root), so every spelling of it shares that
 * state. A forked child never uses its parent's state: it makes its own.
 *
 * Temporary files of dead processes: each process (per ROOT) holds an exclusive flock(2) on
 * ROOT/owners/<token>.lock from its first writer for as long as it uses the store, and names
 * its temporary files after the token. Opening the service removes every temporary file whose owner
 * lock is gone or free (the kernel drops a flock when its holder dies: no PID reuse or PID
 * namespace worries), then the free lock files. One lock per process, not one fd per pending file.
 * The lock file holds a bitmap of the fan-out directories its owner made temporary files in, so
 * the sweep after a crash reads those directories only (all 256 if the bitmap is missing).
 *
 * Reading verifies: the reader hashes what it returns and fails with -EIO at the end if the
 * file does not hash to its name (a corrupted blob file is never silently served).
 */
#include <dirent.h>
#include <stdint.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <sys/xattr.h>
#include <unistd.h>

#include "ocibuild/array.h"
#include "ocibuild/blake3.h"
#include "ocibuild/cleanup.h"
#include "ocibuild/digest_map.h"
#include "ocibuild/fs.h"
#include "ocibuild/hex.h"
#include "ocibuild/store_backend.h"
#include "store_internal.h"

#define TOKEN_LEN 32 /* hex digits: 128 random bits */
#define LOCK_SUFFIX ".lock"

/* What every service instance of one ROOT in this process shares. */
typedef struct blob_root {
    struct blob_root *next;
    pid_t pid; /* the process that made it: a forked child makes its own */
    unsigned refs;
    pthread_mutex_t lock; /* guards pending and the link/unlink steps of the barrier */
    dev_t dev;            /* the identity of ROOT: every spelling of it shares this state */
    ino_t ino;
    char *root;      /* canonical */
    char *blobs_dir; /* ROOT/blobs */
    char *tmp_dir;   /* ROOT/tmp */
    int root_fd, blobs_fd, tmp_fd, owners_fd;
    int owner_fd; /* ROOT/owners/<token>.lock, flock'ed */
    char token[TOKEN_LEN + 1];
    uint64_t next_temp;
    obi_digest_map pending;    /* digest -> temporary file, relative to ROOT (char *) */
    uint8_t fanouts_known[32]; /* bitmap: fan-out directories known to exist */
    uint8_t fanouts_temp[32];  /* bitmap: those we made temporary files in (the lock file's) */
    bool blobs_dir_unsynced;   /* a fan-out directory was made: fsync ROOT/blobs first */
    bool names_unsynced;       /* a barrier failed after renaming: the next one syncfs's */
    bool chmod_needed;         /* the umask takes read bits off the 0444 of new files */
    dev_t blobs_dev;           /* the filesystem of ROOT/blobs: only its files can be adopted */
} blob_root;

static pthread_mutex_t roots_lock = PTHREAD_MUTEX_INITIALIZER;
static blob_root *roots;

typedef struct local_blob_service {
    obi_blob_service base;
    blob_root *shared;
} local_blob_service;

typedef struct local_blob_reader {
    obi_blob_reader base;
    int fd;
    obi_digest digest;
    obi_blake3_hasher hasher;
    char *path;
    bool done;
} local_blob_reader;

typedef struct local_blob_writer {
    obi_blob_writer base;
    blob_root *shared;
    int fd;
    char *tmp_name; /* relative to ROOT; NULL once handed to pending or removed */
    obi_blake3_hasher hasher;
    bool finished;
} local_blob_writer;

static void blob_root_hold(blob_root *shared);
static void blob_root_release(blob_root *shared);

/* "ab/abcdef..." relative to ROOT/blobs. */
static void blob_relative_path(const obi_digest *digest, char out[OBI_DIGEST_HEX_LEN + 4])
{
    char hex[OBI_DIGEST_HEX_LEN + 1];
    obi_digest_to_hex(digest, hex);
    snprintf(out, OBI_DIGEST_HEX_LEN + 4, "%.2s/%s", hex, hex);
}

static int blob_not_found(const obi_digest *digest, obi_error **err)
{
    char hex[OBI_DIGEST_HEX_LEN + 1];
    obi_digest_to_hex(digest, hex);
    return obi_error_set(err, -ENOENT, "blob %s not found", hex);
}

/* 1 if ROOT/blobs has the blob, 0 if not. */
static int stored(blob_root *shared, const obi_digest *digest, obi_error **err)
{
    char rel[OBI_DIGEST_HEX_LEN + 4];
    blob_relative_path(digest, rel);
    struct stat st;
    if (fstatat(shared->blobs_fd, rel, &st, AT_SYMLINK_NOFOLLOW) == 0)
        return 1;
    if (errno == ENOENT)
        return 0;
    return obi_error_set_errno(err, errno, "stat %s/%s", shared->blobs_dir, rel);
}

/* ---- fan-out directories ---- */

/* "ab": the name of the fan-out directory of blobs whose digest starts with byte 0xab. */
static void fanout_name(unsigned byte, char out[3])
{
    static const char hex[] = "0123456789abcdef";
    out[0] = hex[(byte >> 4) & 15];
    out[1] = hex[byte & 15];
    out[2] = '\0';
}

static bool bit_get(const uint8_t *bits, unsigned i)
{
    return (bits[i / 8] >> (i % 8)) & 1;
}

static void bit_set(uint8_t *bits, unsigned i)
{
    bits[i / 8] |= (uint8_t)(1u << (i % 8));
}

/* Makes ROOT/blobs/<byte> exist; shared->lock held. One made here is fsynced into ROOT/blobs by
 * the next barrier or finish (sync_blobs_dir), before any name in it is made durable. */
static int ensure_fanout(blob_root *shared, unsigned byte, obi_error **err)
{
    if (bit_get(shared->fanouts_known, byte))
        return 0;
    char fanout[3];
    fanout_name(byte, fanout);
    if (mkdirat(shared->blobs_fd, fanout, 0755) == 0)
        shared->blobs_dir_unsynced = true;
    else if (errno != EEXIST)
        return obi_error_set_errno(err, errno, "mkdir %s/%s", shared->blobs_dir, fanout);
    bit_set(shared->fanouts_known, byte);
    return 0;
}

static int sync_blobs_dir(blob_root *shared, obi_error **err)
{
    if (!shared->blobs_dir_unsynced)
        return 0;
    if (fsync(shared->blobs_fd) < 0)
        return obi_error_set_errno(err, errno, "fsync %s", shared->blobs_dir);
    shared->blobs_dir_unsynced = false;
    return 0;
}

/* A new store gets all 256 fan-out directories at once, made durable with one fsync: its
 * writers then never make one. A store that has "00" is left alone (ensure_fanout). */
static int make_fanouts_of_new_store(blob_root *shared, obi_error **err)
{
    if (mkdirat(shared->blobs_fd, "00", 0755) < 0)
        return errno == EEXIST ? 0
                               : obi_error_set_errno(err, errno, "mkdir %s/00", shared->blobs_dir);
    bit_set(shared->fanouts_known, 0);
    shared->blobs_dir_unsynced = true;
    for (unsigned byte = 1; byte < 256; byte++) {
        int r = ensure_fanout(shared, byte, err);
        if (r < 0)
            return r;
    }
    return sync_blobs_dir(shared, err);
}

/* ---- publishing and the barrier ---- */

/* Up to this many pending blobs the barrier fsyncs each file and the fan-out directories it
 * renamed into; more, and one syncfs(2) per step is far cheaper (one journal commit instead of
 * one per file), at the price of also flushing whatever else is dirty on that filesystem. */
#define BARRIER_FSYNC_MAX 32

static int fsync_at(int dir_fd, const char *dir_path, const char *name, obi_error **err)
{
    cleanup_close int fd = openat(dir_fd, name, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
    if (fd < 0 || fsync(fd) < 0)
        return obi_error_set_errno(err, errno, "fsync %s/%s", dir_path, name);
    return 0;
}

/* Gives the temporary file tmp (relative to ROOT; its contents durable) the blob's name in its
 * fan-out directory, which exists: the name is taken only if free; taken means another writer
 * stored the same contents, and ours goes. Either way tmp is gone on success. Touches no
 * shared state: the barrier's threads call it side by side. */
static int rename_into_place(const blob_root *shared, const char *tmp, const obi_digest *digest,
                             obi_error **err)
{
    char rel[OBI_DIGEST_HEX_LEN + 4];
    blob_relative_path(digest, rel);
    if (renameat2(shared->root_fd, tmp, shared->blobs_fd, rel, RENAME_NOREPLACE) == 0)
        return 0;
    if (errno == EINVAL || errno == ENOSYS) {
        /* a filesystem without RENAME_NOREPLACE: link, which never replaces either */
        if (linkat(shared->root_fd, tmp, shared->blobs_fd, rel, 0) < 0 && errno != EEXIST)
            return obi_error_set_errno(err, errno, "link %s/%s to %s/%s", shared->root, tmp,
                                       shared->blobs_dir, rel);
    } else if (errno != EEXIST) {
        return obi_error_set_errno(err, errno, "rename %s/%s to %s/%s", shared->root, tmp,
                                   shared->blobs_dir, rel);
    }
    unlinkat(shared->root_fd, tmp, 0);
    return 0;
}

/* rename_into_place, making the fan-out directory first if needed; shared->lock held. */
static int publish(blob_root *shared, const char *tmp, const obi_digest *digest, obi_error **err)
{
    int r = ensure_fanout(shared, digest->bytes[0], err);
    return r < 0 ? r : rename_into_place(shared, tmp, digest, err);
}

/* After a failed barrier: only the entries from slot `from` on are still pending. */
static void keep_pending_from(blob_root *shared, size_t from)
{
    obi_digest_map left;
    obi_digest_map_init(&left, free);
    for (size_t i = from; i < shared->pending.capacity; i++) {
        obi_digest_map_entry *entry = &shared->pending.slots[i];
        /* on ENOMEM the entry is dropped: its file stays ours until we exit, never visible */
        if (entry->value && obi_digest_map_insert(&left, &entry->key, entry->value) == 1)
            entry->value = NULL;
    }
    obi_digest_map_clear(&shared->pending);
    shared->pending = left;
}

/* Publishing is one rename per pending blob, most of a big barrier's work: from this many
 * pending blobs on it is spread over up to PUBLISH_MAX_THREADS threads (the CPUs we may use),
 * thread i taking the fan-out directories whose byte % n == i, so that no two rename in one
 * directory (renames in different directories do not wait for each other). */
#define PUBLISH_PARALLEL_MIN 1024
#define PUBLISH_MAX_THREADS 4

typedef struct publish_part {
    const blob_root *shared;
    unsigned index, n;
    bool *done;         /* per slot of shared->pending: renamed */
    size_t failed_slot; /* SIZE_MAX: none */
    obi_error *error;
} publish_part;

static void *publish_part_run(void *arg)
{
    publish_part *part = arg;
    const obi_digest_map *pending = &part->shared->pending;
    for (size_t i = 0; i < pending->capacity; i++) {
        const obi_digest_map_entry *entry = &pending->slots[i];
        if (!entry->value || entry->key.bytes[0] % part->n != part->index)
            continue;
        if (rename_into_place(part->shared, entry->value, &entry->key, &part->error) < 0) {
            part->failed_slot = i;
            break;
        }
        part->done[i] = true;
    }
    return NULL;
}

static unsigned publish_threads(void)
{
    cpu_set_t cpus;
    if (sched_getaffinity(0, sizeof cpus, &cpus) < 0)
        return 1;
    int n = CPU_COUNT(&cpus);
    return n < 1 ? 1 : n > PUBLISH_MAX_THREADS ? PUBLISH_MAX_THREADS : (unsigned)n;
}

/* After a failed barrier: only the entries not renamed are still pending. */
static void keep_pending_not_done(blob_root *shared, const bool *done)
{
    obi_digest_map left;
    obi_digest_map_init(&left, free);
    for (size_t i = 0; i < shared->pending.capacity; i++) {
        obi_digest_map_entry *entry = &shared->pending.slots[i];
        /* on ENOMEM the entry is dropped: its file stays ours until we exit, never visible */
        if (entry->value && !done[i] &&
            obi_digest_map_insert(&left, &entry->key, entry->value) == 1)
            entry->value = NULL;
    }
    obi_digest_map_clear(&shared->pending);
    shared->pending = left;
}

/* Renames every pending blob (contents already durable) on n threads; shared->lock held, so
 * nobody else touches pending meanwhile. On failure the first failed slot's error is reported
 * and what was not renamed stays pending. */
static int publish_parallel(blob_root *shared, unsigned n, obi_error **err)
{
    if (shared->pending.capacity == 0)
        return 0;
    for (size_t i = 0; i < shared->pending.capacity; i++) {
        const obi_digest_map_entry *entry = &shared->pending.slots[i];
        int r = entry->value ? ensure_fanout(shared, entry->key.bytes[0], err) : 0;
        if (r < 0)
            return r;
    }
    cleanup_free bool *done = calloc(shared->pending.capacity, sizeof *done);
    if (!done)
        return obi_error_oom(err);
    publish_part parts[PUBLISH_MAX_THREADS];
    pthread_t threads[PUBLISH_MAX_THREADS];
    bool started[PUBLISH_MAX_THREADS] = {false};
    for (unsigned i = 0; i < n; i++) {
        parts[i] = (publish_part){shared, i, n, done, SIZE_MAX, NULL};
        started[i] = i > 0 && pthread_create(&threads[i], NULL, publish_part_run, &parts[i]) == 0;
    }
    for (unsigned i = 0; i < n; i++) /* ours, and any part whose thread did not start */
        if (!started[i])
            publish_part_run(&parts[i]);
    for (unsigned i = 0; i < n; i++)
        if (started[i])
            pthread_join(threads[i], NULL);
    publish_part *failed = NULL;
    for (unsigned i = 0; i < n; i++)
        if (parts[i].error && (!failed || parts[i].failed_slot < failed->failed_slot))
            failed = &parts[i];
    int r = failed ? obi_error_move(err, &failed->error) : 0;
    for (unsigned i = 0; i < n; i++)
        obi_error_free(parts[i].error);
    if (r < 0) {
        for (size_t i = 0; i < shared->pending.capacity && !shared->names_unsynced; i++)
            shared->names_unsynced = done[i];
        keep_pending_not_done(shared, done);
    }
    return r;
}

/* Makes every pending blob durable and visible under its name; shared->lock held. Contents
 * first, then names, then the names made durable: a name never refers to contents that were not
 * durable. On failure what was not renamed stays pending (a later barrier retries). */
static int sync_pending(blob_root *shared, obi_error **err)
{
    if (shared->pending.count == 0 && !shared->names_unsynced)
        return 0;
    bool per_file = shared->pending.count <= BARRIER_FSYNC_MAX && !shared->names_unsynced;
    if (!per_file && syncfs(shared->root_fd) < 0)
        return obi_error_set_errno(err, errno, "syncfs %s", shared->root);
    bool fanouts[256] = {false};
    unsigned threads =
        per_file || shared->pending.count < PUBLISH_PARALLEL_MIN ? 1 : publish_threads();
    if (threads > 1) {
        int r = publish_parallel(shared, threads, err);
        if (r < 0)
            return r;
    }
    for (size_t i = 0; threads == 1 && i < shared->pending.capacity; i++) {
        const obi_digest_map_entry *entry = &shared->pending.slots[i];
        if (!entry->value)
            continue;
        int r = per_file ? fsync_at(shared->root_fd, shared->root, entry->value, err) : 0;
        if (r == 0)
            r = publish(shared, entry->value, &entry->key, err);
        if (r < 0) {
            shared->names_unsynced = shared->names_unsynced || i > 0;
            keep_pending_from(shared, i);
            return r;
        }
        fanouts[entry->key.bytes[0]] = true;
    }
    obi_digest_map_clear(&shared->pending);
    shared->names_unsynced = true; /* until the names are durable */
    /* the new names (and new fan-out directories) */
    if (!per_file && syncfs(shared->root_fd) < 0)
        return obi_error_set_errno(err, errno, "syncfs %s", shared->root);
    int r = per_file ? sync_blobs_dir(shared, err) : 0;
    for (unsigned byte = 0; r == 0 && per_file && byte < OBI_ARRAY_SIZE(fanouts); byte++) {
        char fanout[3];
        fanout_name(byte, fanout);
        r = fanouts[byte] ? fsync_at(shared->blobs_fd, shared->blobs_dir, fanout, err) : 0;
    }
    if (r < 0)
        return r;
    shared->names_unsynced = false;
    shared->blobs_dir_unsynced = false; /* a syncfs covers it too */
    return 0;
}

static int blob_root_sync(blob_root *shared, obi_error **err)
{
    pthread_mutex_lock(&shared->lock);
    int r = sync_pending(shared, err);
    pthread_mutex_unlock(&shared->lock);
    return r < 0 ? obi_error_prefix(err, r, "blob store %s: sync", shared->root) : 0;
}

/* ---- service ops ---- */

static int local_blob_has(obi_blob_service *base, const obi_digest *digest, obi_error **err)
{
    blob_root *shared = ((local_blob_service *)base)->shared;
    pthread_mutex_lock(&shared->lock);
    bool pending = obi_digest_map_get(&shared->pending, digest) != NULL;
    pthread_mutex_unlock(&shared->lock);
    return pending ? 1 : stored(shared, digest, err);
}

static int local_blob_local_path(obi_blob_service *base, const obi_digest *digest, char **path_out,
                                 obi_error **err)
{
    blob_root *shared = ((local_blob_service *)base)->shared;
    pthread_mutex_lock(&shared->lock);
    bool pending = obi_digest_map_get(&shared->pending, digest) != NULL;
    pthread_mutex_unlock(&shared->lock);
    /* a pending blob has no final name yet: the barrier gives it one (a temporary name
     * handed out would disappear at the next barrier) */
    if (pending) {
        int r = blob_root_sync(shared, err);
        if (r < 0)
            return r;
    }
    int r = stored(shared, digest, err);
    if (r < 0)
        return r;
    if (r == 0)
        return blob_not_found(digest, err);
    char rel[OBI_DIGEST_HEX_LEN + 4];
    blob_relative_path(digest, rel);
    char *path = obi_path_join(shared->blobs_dir, rel);
    if (!path)
        return obi_error_oom(err);
    *path_out = path;
    return 0;
}

static int local_blob_sync(obi_blob_service *base, obi_error **err)
{
    return blob_root_sync(((local_blob_service *)base)->shared, err);
}

/* ---- reader ---- */

static int local_reader_read(obi_blob_reader *base, void *buf, size_t len, size_t *nread,
                             obi_error **err)
{
    local_blob_reader *reader = (local_blob_reader *)base;
    if (reader->done || len == 0) {
        *nread = 0;
        return 0;
    }
    ssize_t n;
    do
        n = read(reader->fd, buf, len);
    while (n < 0 && errno == EINTR);
    if (n < 0)
        return obi_error_set_errno(err, errno, "read %s", reader->path);
    if (n > 0) {
        obi_blake3_update(&reader->hasher, buf, (size_t)n);
        *nread = (size_t)n;
        return 0;
    }
    reader->done = true;
    obi_digest actual;
    obi_blake3_finalize(&reader->hasher, actual.bytes, OBI_DIGEST_LEN);
    if (!obi_digest_equal(&actual, &reader->digest)) {
        char want[OBI_DIGEST_HEX_LEN + 1], got[OBI_DIGEST_HEX_LEN + 1];
        obi_digest_to_hex(&reader->digest, want);
        obi_digest_to_hex(&actual, got);
        return obi_error_set(err, -EIO, "blob %s is corrupted: %s hashes to %s", want, reader->path,
                             got);
    }
    *nread = 0;
    return 0;
}

static void local_reader_close(obi_blob_reader *base)
{
    local_blob_reader *reader = (local_blob_reader *)base;
    if (reader->fd >= 0)
        close(reader->fd);
    free(reader->path);
    free(reader);
}

static const struct obi_blob_reader_ops local_reader_ops = {
    .read = local_reader_read,
    .close = local_reader_close,
};

/* Opens a pending blob's temporary file or the stored one; *path_out names it. */
static int open_blob_file(blob_root *shared, const obi_digest *digest, int *fd_out, char **path_out,
                          obi_error **err)
{
    /* under the lock: the barrier must not remove the temporary name between lookup and open */
    pthread_mutex_lock(&shared->lock);
    const char *tmp_name = obi_digest_map_get(&shared->pending, digest);
    int fd = -1;
    char *path = NULL;
    if (tmp_name) {
        fd = openat(shared->root_fd, tmp_name, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
        path = obi_path_join(shared->root, tmp_name);
    }
    pthread_mutex_unlock(&shared->lock);
    if (!tmp_name) {
        char rel[OBI_DIGEST_HEX_LEN + 4];
        blob_relative_path(digest, rel);
        fd = openat(shared->blobs_fd, rel, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
        if (fd < 0 && errno == ENOENT)
            return blob_not_found(digest, err);
        path = obi_path_join(shared->blobs_dir, rel);
    }
    int saved = errno;
    if (fd < 0 || !path) {
        if (fd >= 0)
            close(fd);
        if (!path)
            return obi_error_oom(err);
        int r = obi_error_set_errno(err, saved, "open %s", path);
        free(path);
        return r;
    }
    *fd_out = fd;
    *path_out = path;
    return 0;
}

static int local_blob_open_read(obi_blob_service *base, const obi_digest *digest,
                                obi_blob_reader **out, obi_error **err)
{
    blob_root *shared = ((local_blob_service *)base)->shared;
    cleanup_close int fd = -1;
    cleanup_free char *path = NULL;
    int r = open_blob_file(shared, digest, &fd, &path, err);
    if (r < 0)
        return r;
    local_blob_reader *reader = calloc(1, sizeof *reader);
    if (!reader)
        return obi_error_oom(err);
    (void)posix_fadvise(fd, 0, 0, POSIX_FADV_SEQUENTIAL);
    reader->base.ops = &local_reader_ops;
    reader->fd = steal_fd(&fd);
    reader->path = steal_pointer(&path);
    reader->digest = *digest;
    obi_blake3_init(&reader->hasher);
    *out = &reader->base;
    return 0;
}

/* ---- writer ---- */

static int local_writer_write(obi_blob_writer *base, const void *data, size_t len, obi_error **err)
{
    local_blob_writer *writer = (local_blob_writer *)base;
    if (writer->finished)
        return obi_error_set(err, -EINVAL, "blob writer: write after finish");
    int r = obi_write_all(writer->fd, data, len);
    if (r < 0)
        return obi_error_set_errno(err, -r, "write %s/%s", writer->shared->root, writer->tmp_name);
    obi_blake3_update(&writer->hasher, data, len);
    return 0;
}

static void writer_discard_tmp(local_blob_writer *writer)
{
    if (writer->tmp_name) {
        unlinkat(writer->shared->root_fd, writer->tmp_name, 0);
        free(writer->tmp_name);
        writer->tmp_name = NULL;
    }
}

/* The digest of what was written; refuses a second finish. */
static int writer_digest(local_blob_writer *writer, obi_digest *digest, obi_error **err)
{
    if (writer->finished)
        return obi_error_set(err, -EINVAL, "blob writer: finished twice");
    obi_blake3_finalize(&writer->hasher, digest->bytes, OBI_DIGEST_LEN);
    return 0;
}

/* Closes the file, read-only and (durable) with its contents on disk. */
static int writer_close_file(local_blob_writer *writer, bool durable, obi_error **err)
{
    blob_root *shared = writer->shared;
    /* created 0444; a umask that takes read bits away is undone here */
    if (shared->chmod_needed && fchmod(writer->fd, 0444) < 0)
        return obi_error_set_errno(err, errno, "chmod %s/%s", shared->root, writer->tmp_name);
    if (durable && fsync(writer->fd) < 0)
        return obi_error_set_errno(err, errno, "fsync %s/%s", shared->root, writer->tmp_name);
    close(writer->fd);
    writer->fd = -1;
    return 0;
}

/* Durable at once: the contents, then the name, then the name's directory. */
static int local_writer_finish(obi_blob_writer *base, obi_digest *digest_out, obi_error **err)
{
    local_blob_writer *writer = (local_blob_writer *)base;
    blob_root *shared = writer->shared;
    obi_digest digest;
    int r = writer_digest(writer, &digest, err);
    if (r < 0)
        return r;
    int present = stored(shared, &digest, err);
    if (present < 0)
        return present;
    r = writer_close_file(writer, !present, err);
    if (r < 0)
        return r;
    if (!present) {
        pthread_mutex_lock(&shared->lock);
        r = publish(shared, writer->tmp_name, &digest, err);
        if (r == 0)
            r = sync_blobs_dir(shared, err);
        pthread_mutex_unlock(&shared->lock);
        if (r < 0)
            return r;
        free(writer->tmp_name); /* renamed or removed */
        writer->tmp_name = NULL;
        char fanout[3];
        fanout_name(digest.bytes[0], fanout);
        r = fsync_at(shared->blobs_fd, shared->blobs_dir, fanout, err);
        if (r < 0)
            return r;
    }
    writer_discard_tmp(writer);
    writer->finished = true;
    if (digest_out)
        *digest_out = digest;
    return 0;
}

/* Pending until the next barrier: no fsync, no final name yet. A blob already stored is found
 * out by the barrier (its name is taken). */
static int local_writer_finish_pending(obi_blob_writer *base, obi_digest *digest_out,
                                       obi_error **err)
{
    local_blob_writer *writer = (local_blob_writer *)base;
    blob_root *shared = writer->shared;
    obi_digest digest;
    int r = writer_digest(writer, &digest, err);
    if (r == 0)
        r = writer_close_file(writer, false, err);
    if (r < 0)
        return r;
    pthread_mutex_lock(&shared->lock);
    r = obi_digest_map_insert(&shared->pending, &digest, writer->tmp_name);
    if (r == 1)
        writer->tmp_name = NULL; /* owned by pending now */
    pthread_mutex_unlock(&shared->lock);
    if (r < 0)
        return obi_error_oom(err);
    writer_discard_tmp(writer); /* already pending: same contents */
    writer->finished = true;
    if (digest_out)
        *digest_out = digest;
    return 0;
}

static void local_writer_close(obi_blob_writer *base)
{
    local_blob_writer *writer = (local_blob_writer *)base;
    writer_discard_tmp(writer);
    if (writer->fd >= 0)
        close(writer->fd);
    blob_root_release(writer->shared);
    free(writer);
}

static const struct obi_blob_writer_ops local_writer_ops = {
    .write = local_writer_write,
    .finish = local_writer_finish,
    .finish_pending = local_writer_finish_pending,
    .close = local_writer_close,
};

static int ensure_owner_lock(blob_root *shared, obi_error **err);

/* Records in our lock file that we make temporary files in fan-out directory byte, before we
 * do (the sweep after our death reads it); shared->lock held. */
static int note_temp_fanout(blob_root *shared, unsigned byte, obi_error **err)
{
    if (bit_get(shared->fanouts_temp, byte))
        return 0;
    bit_set(shared->fanouts_temp, byte);
    if (pwrite(shared->owner_fd, shared->fanouts_temp, sizeof shared->fanouts_temp, 0) ==
        (ssize_t)sizeof shared->fanouts_temp)
        return 0;
    shared->fanouts_temp[byte / 8] &= (uint8_t) ~(1u << (byte % 8));
    return obi_error_set_errno(err, errno ? errno : EIO, "write %s/owners/%s" LOCK_SUFFIX,
                               shared->root, shared->token);
}

/* A fresh temporary file's name relative to ROOT: in the fan-out directory of the expected
 * digest, else in ROOT/tmp. */
static int temp_name(blob_root *shared, const obi_digest *expected, char **out, obi_error **err)
{
    uint64_t n = __atomic_fetch_add(&shared->next_temp, 1, __ATOMIC_RELAXED);
    if (!expected)
        return asprintf(out, "tmp/%s.%llx", shared->token, (unsigned long long)n) < 0
                   ? obi_error_oom(err)
                   : 0;
    unsigned byte = expected->bytes[0];
    pthread_mutex_lock(&shared->lock);
    int r = ensure_fanout(shared, byte, err);
    if (r == 0)
        r = note_temp_fanout(shared, byte, err);
    pthread_mutex_unlock(&shared->lock);
    if (r < 0)
        return r;
    if (asprintf(out, "blobs/%02x/.%s.%llx", byte, shared->token, (unsigned long long)n) < 0)
        return obi_error_oom(err);
    return 0;
}

static int open_writer(obi_blob_service *base, const obi_digest *expected, obi_blob_writer **out,
                       obi_error **err)
{
    blob_root *shared = ((local_blob_service *)base)->shared;
    int r = ensure_owner_lock(shared, err);
    if (r < 0)
        return r;
    local_blob_writer *writer = calloc(1, sizeof *writer);
    if (!writer)
        return obi_error_oom(err);
    writer->base.ops = &local_writer_ops;
    r = temp_name(shared, expected, &writer->tmp_name, err);
    if (r < 0) {
        free(writer);
        return r;
    }
    /* read-only from the start: the creating descriptor may still write */
    writer->fd =
        openat(shared->root_fd, writer->tmp_name, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0444);
    if (writer->fd < 0) {
        r = obi_error_set_errno(err, errno, "create %s/%s", shared->root, writer->tmp_name);
        free(writer->tmp_name);
        free(writer);
        return r;
    }
    /* the writer may outlive the service that opened it */
    blob_root_hold(shared);
    writer->shared = shared;
    obi_blake3_init(&writer->hasher);
    *out = &writer->base;
    return 0;
}

static int local_blob_open_write(obi_blob_service *base, obi_blob_writer **out, obi_error **err)
{
    return open_writer(base, NULL, out, err);
}

static int local_blob_open_write_expecting(obi_blob_service *base, const obi_digest *expected,
                                           obi_blob_writer **out, obi_error **err)
{
    return open_writer(base, expected, out, err);
}

/* ---- adopting a file (docs/store.md, "Adopting a build's outputs") ---- */

/* Whether no open file description of fd's file may write to it, anywhere (another process,
 * a message in flight on a socket, a writable mapping): the kernel grants a read lease only
 * then (i_writecount; as root we hold CAP_LEASE). Released at once: after the caller's
 * fchown and fchmod only root could open it for writing again, and that would break the lease
 * (a signal to us) if we kept it. Filesystems without leases say EINVAL: not adoptable. */
static bool no_writer(int fd)
{
    if (fcntl(fd, F_SETLEASE, F_RDLCK) < 0)
        return false;
    (void)fcntl(fd, F_SETLEASE, F_UNLCK);
    return true;
}

int obi_local_blob_adopt_prepare(obi_blob_service *blobs, int fd, const struct stat *st,
                                 obi_error **err)
{
    (void)err; /* every refusal is "copy it instead" */
    if (!obi_blob_service_is_local(blobs))
        return 0;
    blob_root *shared = ((local_blob_service *)blobs)->shared;
    /* a second link may be kept somewhere that outlives the build, or be someone else's file;
     * one owned by this process's user already is no build's (a build runs as an id of its
     * slot): a caller that passed adopt for host files (/nix/store) loses nothing to it */
    if (!S_ISREG(st->st_mode) || st->st_nlink != 1 || st->st_dev != shared->blobs_dev ||
        st->st_uid == geteuid())
        return 0;
    /* an ACL (system.posix_acl_access) or a capability set would go with the inode */
    ssize_t xattrs = flistxattr(fd, NULL, 0);
    if (xattrs != 0 && !(xattrs < 0 && errno == ENOTSUP))
        return 0;
    /* 0444 and owned as a blob this process writes (mode first: never root's and writable
     * by others, not even for a moment); no one but root can open it for writing from now on */
    if (fchmod(fd, 0444) < 0 || fchown(fd, geteuid(), getegid()) < 0)
        return 0;
    return no_writer(fd) ? 1 : 0;
}

/* linkat of an open file: through AT_EMPTY_PATH (needs CAP_DAC_READ_SEARCH), else its
 * /proc/self/fd link. */
static int link_open_file(int fd, int dir_fd, const char *name)
{
    if (linkat(fd, "", dir_fd, name, AT_EMPTY_PATH) == 0)
        return 0;
    if (errno != ENOENT && errno != EPERM)
        return -errno;
    char proc[32];
    snprintf(proc, sizeof proc, "/proc/self/fd/%d", fd);
    return linkat(AT_FDCWD, proc, dir_fd, name, AT_SYMLINK_FOLLOW) == 0 ? 0 : -errno;
}

int obi_local_blob_adopt_pending(obi_blob_service *blobs, int fd, const obi_digest *digest,
                                 obi_error **err)
{
    if (!obi_blob_service_is_local(blobs))
        return 0;
    blob_root *shared = ((local_blob_service *)blobs)->shared;
    int r = ensure_owner_lock(shared, err);
    if (r < 0)
        return r;
    cleanup_free char *tmp = NULL;
    r = temp_name(shared, digest, &tmp, err);
    if (r < 0)
        return r;
    r = link_open_file(fd, shared->root_fd, tmp);
    /* another mount of the same filesystem (EXDEV), no /proc, a filesystem without links */
    if (r == -EXDEV || r == -ENOENT || r == -EPERM || r == -EACCES || r == -EOPNOTSUPP ||
        r == -EMLINK)
        return 0;
    if (r < 0)
        return obi_error_set_errno(err, -r, "link %s/%s", shared->root, tmp);
    pthread_mutex_lock(&shared->lock);
    r = obi_digest_map_insert(&shared->pending, digest, tmp);
    if (r == 1)
        tmp = NULL; /* owned by pending now */
    pthread_mutex_unlock(&shared->lock);
    if (r < 0 || r == 0) /* out of memory, or already pending: same contents */
        unlinkat(shared->root_fd, tmp, 0);
    return r < 0 ? obi_error_oom(err) : 1;
}

/* ---- owners and their temporary files ---- */

/* Creates and locks ROOT/owners/<random token>.lock. A cleaner may take and remove a new lock
 * file before its owner locks it: the owner then sees st_nlink == 0 and starts over. */
static int create_owner_lock(blob_root *shared, obi_error **err)
{
    for (int attempt = 0; attempt < 100; attempt++) {
        uint8_t random[TOKEN_LEN / 2];
        if (getrandom(random, sizeof random, 0) != (ssize_t)sizeof random)
            return obi_error_set_errno(err, errno, "getrandom");
        obi_hex_encode(random, sizeof random, shared->token);
        char name[TOKEN_LEN + sizeof LOCK_SUFFIX];
        snprintf(name, sizeof name, "%s" LOCK_SUFFIX, shared->token);
        cleanup_close int fd =
            openat(shared->owners_fd, name, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
        if (fd < 0 && errno == EEXIST)
            continue;
        if (fd < 0)
            return obi_error_set_errno(err, errno, "create %s/owners/%s", shared->root, name);
        int r;
        do
            r = flock(fd, LOCK_EX);
        while (r < 0 && errno == EINTR);
        if (r < 0)
            return obi_error_set_errno(err, errno, "flock %s/owners/%s", shared->root, name);
        struct stat st;
        if (fstat(fd, &st) < 0)
            return obi_error_set_errno(err, errno, "stat %s/owners/%s", shared->root, name);
        if (st.st_nlink == 0)
            continue; /* removed by a cleaner before we locked it */
        /* the bitmap of fan-out directories with our temporary files: none yet */
        memset(shared->fanouts_temp, 0, sizeof shared->fanouts_temp);
        if (pwrite(fd, shared->fanouts_temp, sizeof shared->fanouts_temp, 0) !=
            (ssize_t)sizeof shared->fanouts_temp)
            return obi_error_set_errno(err, errno ? errno : EIO, "write %s/owners/%s", shared->root,
                                       name);
        shared->owner_fd = steal_fd(&fd);
        return 0;
    }
    return obi_error_set(err, -EAGAIN, "create an owner lock in %s/owners: removed repeatedly",
                         shared->root);
}

/* The owner lock is made by the first writer, not at open: a process that only reads, or whose
 * ingest finds every blob present (a rebuild), creates and removes no file in owners/. */
static int ensure_owner_lock(blob_root *shared, obi_error **err)
{
    pthread_mutex_lock(&shared->lock);
    int r = shared->owner_fd >= 0 ? 0 : create_owner_lock(shared, err);
    pthread_mutex_unlock(&shared->lock);
    return r;
}

/* 1 if the owner lock file name (in owners_fd) is held by a live process, else 0. */
static int owner_lock_held(int owners_fd, const char *name)
{
    cleanup_close int fd = openat(owners_fd, name, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
    if (fd < 0)
        return errno == ENOENT ? 0 : 1; /* unsure: keep */
    return flock(fd, LOCK_EX | LOCK_NB) < 0 ? 1 : 0;
}

typedef struct owner_verdict {
    char token[TOKEN_LEN + 1];
    bool alive;
} owner_verdict;

typedef struct owner_cache {
    owner_verdict *verdicts;
    size_t n, cap;
} owner_cache;

/* Whether the owner of a temporary file named "<token>.<n>" is alive (cached per scan). */
static bool temp_owner_alive(int owners_fd, const char *name, owner_cache *cache)
{
    const char *dot = strchr(name, '.');
    if (!dot || dot - name != TOKEN_LEN)
        return true; /* not ours: keep */
    for (size_t i = 0; i < cache->n; i++)
        if (!strncmp(cache->verdicts[i].token, name, TOKEN_LEN))
            return cache->verdicts[i].alive;
    char lock[TOKEN_LEN + sizeof LOCK_SUFFIX];
    snprintf(lock, sizeof lock, "%.*s" LOCK_SUFFIX, TOKEN_LEN, name);
    bool alive = owner_lock_held(owners_fd, lock);
    if (obi_array_grow(&cache->verdicts, &cache->cap, cache->n + 1) == 0) { /* else: uncached */
        owner_verdict *v = &cache->verdicts[cache->n++];
        snprintf(v->token, sizeof v->token, "%.*s", TOKEN_LEN, name);
        v->alive = alive;
    }
    return alive;
}

/* Whether a file of the previous layout (w.XXXXXX, flock'ed by its writer) is abandoned. */
static bool legacy_temp_abandoned(int dir_fd, const char *name)
{
    cleanup_close int fd = openat(dir_fd, name, O_RDONLY | O_CLOEXEC | O_NOFOLLOW | O_NONBLOCK);
    if (fd < 0 || flock(fd, LOCK_EX | LOCK_NB) < 0)
        return false;
    struct stat held, named;
    return fstat(fd, &held) == 0 && fstatat(dir_fd, name, &named, AT_SYMLINK_NOFOLLOW) == 0 &&
           held.st_dev == named.st_dev && held.st_ino == named.st_ino && S_ISREG(held.st_mode);
}

/* Removes the temporary files of the owner token from fan-out directory byte. */
static void remove_fanout_temps(blob_root *shared, unsigned byte, const char *token)
{
    char fanout[3];
    fanout_name(byte, fanout);
    int fd = openat(shared->blobs_fd, fanout, O_RDONLY | O_DIRECTORY | O_CLOEXEC | O_NOFOLLOW);
    cleanup_dir DIR *dir = fd >= 0 ? fdopendir(fd) : NULL;
    if (!dir && fd >= 0)
        close(fd);
    struct dirent *entry;
    while (dir && (entry = readdir(dir))) {
        const char *name = entry->d_name; /* ".<token>.<n>" */
        if (name[0] == '.' && !strncmp(name + 1, token, TOKEN_LEN) && name[TOKEN_LEN + 1] == '.')
            unlinkat(dirfd(dir), name, 0);
    }
}

/* A dead owner's temporary files in fan-out directories: those its lock file (fd) names, every
 * one if the bitmap is missing (its write was lost in a crash of the machine). */
static void remove_dead_owner_fanout_temps(blob_root *shared, int fd, const char *lock_name)
{
    if (strlen(lock_name) != TOKEN_LEN + strlen(LOCK_SUFFIX))
        return;
    char token[TOKEN_LEN + 1];
    snprintf(token, sizeof token, "%.*s", TOKEN_LEN, lock_name);
    uint8_t bits[sizeof shared->fanouts_temp];
    bool all = pread(fd, bits, sizeof bits, 0) != (ssize_t)sizeof bits;
    for (unsigned byte = 0; byte < 256; byte++)
        if (all || bit_get(bits, byte))
            remove_fanout_temps(shared, byte, token);
}

/* Removes temporary files of dead owners, then the dead owners' lock files. Best effort. */
static void remove_dead_temps(blob_root *shared)
{
    /* a fresh open file description: a dup would share (and advance) tmp_fd's offset */
    int list_fd = openat(shared->tmp_fd, ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    cleanup_dir DIR *dir = list_fd >= 0 ? fdopendir(list_fd) : NULL;
    if (!dir && list_fd >= 0)
        close(list_fd);
    owner_cache cache = {0};
    struct dirent *entry;
    while (dir && (entry = readdir(dir))) {
        const char *name = entry->d_name;
        if (name[0] == '.')
            continue;
        bool dead = !strncmp(name, "w.", 2) ? legacy_temp_abandoned(shared->tmp_fd, name)
                                            : !temp_owner_alive(shared->owners_fd, name, &cache);
        if (dead)
            unlinkat(shared->tmp_fd, name, 0);
    }
    free(cache.verdicts);
    /* lock files last: a lock file removed first would make its live-looking temps dead too
     * early for a concurrent cleaner, which is harmless, but this order keeps it simple */
    list_fd = openat(shared->owners_fd, ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    cleanup_dir DIR *owners = list_fd >= 0 ? fdopendir(list_fd) : NULL;
    if (!owners && list_fd >= 0)
        close(list_fd);
    while (owners && (entry = readdir(owners))) {
        if (entry->d_name[0] == '.')
            continue;
        cleanup_close int fd =
            openat(shared->owners_fd, entry->d_name, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
        if (fd < 0 || flock(fd, LOCK_EX | LOCK_NB) < 0)
            continue;
        remove_dead_owner_fanout_temps(shared, fd, entry->d_name);
        /* removed while we hold its lock, so its owner (if one is starting) starts over */
        unlinkat(shared->owners_fd, entry->d_name, 0);
    }
}

/* ---- the shared state of one ROOT ---- */

static void blob_root_free(blob_root *shared)
{
    /* every service has synced when it was freed; this catches blobs finished through a
     * writer that outlived them. Nobody can be told about a failure here: what stays pending
     * is removed as a dead owner's temporary files by the next start. */
    obi_error *ignored = NULL;
    if (shared->root_fd >= 0 && shared->blobs_fd >= 0)
        sync_pending(shared, &ignored);
    obi_error_free(ignored);
    if (shared->owner_fd >= 0 && shared->pending.count == 0) {
        /* every temporary file of ours is gone: the lock file can go too */
        char name[TOKEN_LEN + sizeof LOCK_SUFFIX];
        snprintf(name, sizeof name, "%s" LOCK_SUFFIX, shared->token);
        unlinkat(shared->owners_fd, name, 0);
    }
    /* pending ones left (a failed barrier) are removed as a dead owner's by the next start */
    obi_digest_map_clear(&shared->pending);
    int fds[] = {shared->owner_fd, shared->root_fd, shared->blobs_fd, shared->tmp_fd,
                 shared->owners_fd};
    for (size_t i = 0; i < OBI_ARRAY_SIZE(fds); i++)
        if (fds[i] >= 0)
            close(fds[i]);
    pthread_mutex_destroy(&shared->lock);
    free(shared->root);
    free(shared->blobs_dir);
    free(shared->tmp_dir);
    free(shared);
}

static int open_dir(const char *root, const char *name, char **path_out, int *fd_out,
                    obi_error **err)
{
    cleanup_free char *path = obi_path_join(root, name);
    if (!path)
        return obi_error_oom(err);
    int r = obi_mkdir_p(path, 0755, err);
    if (r < 0)
        return r;
    *fd_out = open(path, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (*fd_out < 0)
        return obi_error_set_errno(err, errno, "open %s", path);
    if (path_out)
        *path_out = steal_pointer(&path);
    return 0;
}

/* Whether files created with mode 0444 keep it (the umask takes no read bit away): then a
 * writer's file needs no fchmod. Read from /proc (umask(2) cannot be read without a write). */
static bool umask_keeps_read_bits(void)
{
    cleanup_file FILE *status = fopen("/proc/self/status", "re");
    char line[128];
    while (status && fgets(line, sizeof line, status)) {
        if (strncmp(line, "Umask:", 6) != 0)
            continue;
        char *end = NULL;
        unsigned long mask = strtoul(line + 6, &end, 8);
        return end != line + 6 && (mask & 0444) == 0;
    }
    return false;
}

static int blob_root_new(const obi_local_root *id, blob_root **out, obi_error **err)
{
    blob_root *shared = calloc(1, sizeof *shared);
    if (!shared)
        return obi_error_oom(err);
    const char *root = id->path;
    shared->pid = getpid();
    shared->dev = id->dev;
    shared->ino = id->ino;
    shared->refs = 1;
    shared->root_fd = shared->blobs_fd = shared->tmp_fd = shared->owners_fd = -1;
    shared->owner_fd = -1;
    shared->chmod_needed = !umask_keeps_read_bits();
    pthread_mutex_init(&shared->lock, NULL);
    obi_digest_map_init(&shared->pending, free);
    shared->root = strdup(root);
    int r = shared->root ? 0 : obi_error_oom(err);
    if (r == 0 && (shared->root_fd = open(root, O_RDONLY | O_DIRECTORY | O_CLOEXEC)) < 0)
        r = obi_error_set_errno(err, errno, "open %s", root);
    if (r == 0)
        r = open_dir(root, "blobs", &shared->blobs_dir, &shared->blobs_fd, err);
    struct stat blobs_st;
    if (r == 0 && fstat(shared->blobs_fd, &blobs_st) < 0)
        r = obi_error_set_errno(err, errno, "stat %s", shared->blobs_dir);
    if (r == 0)
        shared->blobs_dev = blobs_st.st_dev;
    if (r == 0)
        r = open_dir(root, "tmp", &shared->tmp_dir, &shared->tmp_fd, err);
    if (r == 0)
        r = open_dir(root, "owners", NULL, &shared->owners_fd, err);
    if (r == 0)
        r = make_fanouts_of_new_store(shared, err);
    if (r < 0) {
        blob_root_free(shared);
        return r;
    }
    *out = shared;
    return 0;
}

/* The shared state of the store at root in this process (made if needed), with a reference
 * taken. Found by the identity of the directory, not its name. */
static int blob_root_acquire(const obi_local_root *root, bool create, blob_root **out,
                             obi_error **err)
{
    pthread_mutex_lock(&roots_lock);
    pid_t pid = getpid();
    blob_root *found = roots;
    while (found && (found->pid != pid || found->dev != root->dev || found->ino != root->ino))
        found = found->next;
    int r = 0;
    if (found) {
        found->refs++;
    } else if (create && (r = blob_root_new(root, &found, err)) == 0) {
        found->next = roots;
        roots = found;
    }
    pthread_mutex_unlock(&roots_lock);
    if (r == 0)
        *out = found;
    return r;
}

static void blob_root_hold(blob_root *shared)
{
    pthread_mutex_lock(&roots_lock);
    shared->refs++;
    pthread_mutex_unlock(&roots_lock);
}

static void blob_root_release(blob_root *shared)
{
    pthread_mutex_lock(&roots_lock);
    bool last = --shared->refs == 0;
    if (last) {
        for (blob_root **p = &roots; *p; p = &(*p)->next)
            if (*p == shared) {
                *p = shared->next;
                break;
            }
    }
    pthread_mutex_unlock(&roots_lock);
    if (last)
        blob_root_free(shared);
}

int obi_local_blob_sync_root(const obi_local_root *root, obi_error **err)
{
    blob_root *shared = NULL;
    int r = blob_root_acquire(root, false, &shared, err);
    if (r < 0 || !shared)
        return r;
    r = blob_root_sync(shared, err);
    blob_root_release(shared);
    return r;
}

/* ---- listing ---- */

/* The blobs of one fan-out directory (files named by the 64 hex digits of their digest). */
static int list_fanout(blob_root *shared, const char *fanout, obi_digest **digests, size_t *n,
                       size_t *capacity, obi_error **err)
{
    int fd = openat(shared->blobs_fd, fanout, O_RDONLY | O_DIRECTORY | O_CLOEXEC | O_NOFOLLOW);
    cleanup_dir DIR *d = fd >= 0 ? fdopendir(fd) : NULL;
    if (!d) {
        if (fd >= 0)
            close(fd);
        return obi_error_set_errno(err, errno, "open %s/%s", shared->blobs_dir, fanout);
    }
    struct dirent *de;
    while ((de = readdir(d))) {
        obi_digest digest = {0};
        if (strlen(de->d_name) != OBI_DIGEST_HEX_LEN || strncmp(de->d_name, fanout, 2) != 0 ||
            obi_hex_decode(de->d_name, OBI_DIGEST_HEX_LEN, digest.bytes, OBI_DIGEST_LEN) < 0)
            continue; /* not a blob's name */
        if (obi_array_grow(digests, capacity, *n + 1) < 0)
            return obi_error_oom(err);
        (*digests)[(*n)++] = digest;
    }
    return 0;
}

static int local_blob_list(obi_blob_service *base, obi_digest_visit_fn visit, void *ctx,
                           obi_error **err)
{
    blob_root *shared = ((local_blob_service *)base)->shared;
    cleanup_free obi_digest *digests = NULL;
    size_t n = 0, capacity = 0;
    for (unsigned byte = 0; byte < 256; byte++) {
        char fanout[3];
        fanout_name(byte, fanout);
        struct stat st;
        if (fstatat(shared->blobs_fd, fanout, &st, AT_SYMLINK_NOFOLLOW) < 0 && errno == ENOENT)
            continue;
        int r = list_fanout(shared, fanout, &digests, &n, &capacity, err);
        if (r < 0)
            return r;
    }
    return obi_digest_list_visit(digests, n, visit, ctx, err);
}

/* ---- removal (the garbage collector, store_gc.h) ---- */

static int local_blob_remove(obi_blob_service *base, const obi_digest *digest, uint64_t *freed,
                             obi_error **err)
{
    blob_root *shared = ((local_blob_service *)base)->shared;
    char rel[OBI_DIGEST_HEX_LEN + 4];
    blob_relative_path(digest, rel);
    struct stat st;
    if (freed)
        *freed = 0;
    if (fstatat(shared->blobs_fd, rel, &st, AT_SYMLINK_NOFOLLOW) < 0)
        return errno == ENOENT
                   ? 0
                   : obi_error_set_errno(err, errno, "stat %s/%s", shared->blobs_dir, rel);
    if (unlinkat(shared->blobs_fd, rel, 0) < 0)
        return errno == ENOENT
                   ? 0
                   : obi_error_set_errno(err, errno, "remove %s/%s", shared->blobs_dir, rel);
    /* a file the input cache still links to frees nothing yet */
    if (freed && st.st_nlink == 1)
        *freed = (uint64_t)st.st_size;
    return 0;
}

/* ---- service ---- */

static void local_blob_service_free(obi_blob_service *base)
{
    local_blob_service *svc = (local_blob_service *)base;
    if (svc->shared) {
        /* nobody can be told about a failure here; what stays pending is not visible and is
         * removed as a dead owner's temporary files by the next start */
        obi_error *ignored = NULL;
        blob_root_sync(svc->shared, &ignored);
        obi_error_free(ignored);
        blob_root_release(svc->shared);
    }
    free(svc);
}

static const struct obi_blob_service_ops local_blob_ops = {
    .has = local_blob_has,
    .open_read = local_blob_open_read,
    .open_write = local_blob_open_write,
    .open_write_expecting = local_blob_open_write_expecting,
    .local_path = local_blob_local_path,
    .sync = local_blob_sync,
    .list = local_blob_list,
    .remove = local_blob_remove,
    .free = local_blob_service_free,
};

bool obi_blob_service_is_local(const obi_blob_service *blobs)
{
    return blobs && blobs->ops == &local_blob_ops;
}

int obi_local_blob_service_open(const char *root, obi_blob_service **out, obi_error **err)
{
    _cleanup_(obi_local_root_clear) obi_local_root id = {0};
    int r = obi_local_root_open(root, "local blob service", &id, err);
    if (r < 0)
        return r;
    local_blob_service *svc = calloc(1, sizeof *svc);
    if (!svc)
        return obi_error_oom(err);
    svc->base.ops = &local_blob_ops;
    r = blob_root_acquire(&id, true, &svc->shared, err);
    if (r < 0) {
        free(svc);
        return obi_error_prefix(err, r, "local blob service %s", id.path);
    }
    remove_dead_temps(svc->shared);
    *out = &svc->base;
    return 0;
}
