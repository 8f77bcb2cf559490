/*
 * The on-disk blob service (objectstore+file:///ROOT or a plain path): one read-only file per
 * blob, ROOT/blobs/<first 2 hex>/<64 hex>, mode 0444, so the build layer can hard-link them.
 *
 * Writing: the writer streams into a fresh temporary file ROOT/tmp/w.XXXXXX, holding an
 * exclusive flock(2) on it for its whole life, and hashes with BLAKE3 as it goes. finish
 * fsyncs the file, link(2)s it to its final name (atomic; EEXIST means another writer won and
 * the content is identical), unlinks the temporary name and fsyncs the fan-out directory.
 * close() without finish unlinks the temporary file. A blob name therefore only ever appears
 * for a complete, fsynced file: a crash leaves at most an orphan in ROOT/tmp.
 *
 * Orphans: opening the service removes every file in ROOT/tmp whose flock it can take. The
 * kernel drops a flock when its holder dies, across PID namespaces and without PID reuse
 * worries, so a free lock means a dead (or finished) writer. A writer that loses the race
 * (its file removed between mkostemp and flock) sees st_nlink == 0 and starts over.
 *
 * Reading verifies: the reader hashes what it returns and fails with -EIO at the end if the
 * file does not hash to its name (a corrupted blob file is never silently served).
 */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include "ocibuild/blake3.h"
#include "ocibuild/cleanup.h"
#include "ocibuild/fs.h"
#include "ocibuild/store.h"

typedef struct local_blob_service {
    obi_blob_service base;
    char *root;
    char *blobs_dir; /* ROOT/blobs */
    char *tmp_dir;   /* ROOT/tmp */
    int blobs_fd;
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
    local_blob_service *svc;
    int fd;
    char *tmp_path; /* NULL once linked or removed */
    obi_blake3_hasher hasher;
    bool finished;
} local_blob_writer;

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

static int local_blob_has(obi_blob_service *base, const obi_digest *digest, obi_error **err)
{
    local_blob_service *svc = (local_blob_service *)base;
    char rel[OBI_DIGEST_HEX_LEN + 4];
    blob_relative_path(digest, rel);
    struct stat st;
    if (fstatat(svc->blobs_fd, rel, &st, AT_SYMLINK_NOFOLLOW) == 0)
        return 1;
    if (errno == ENOENT)
        return 0;
    return obi_error_set_errno(err, errno, "stat %s/%s", svc->blobs_dir, rel);
}

static int local_blob_local_path(obi_blob_service *base, const obi_digest *digest, char **path_out,
                                 obi_error **err)
{
    local_blob_service *svc = (local_blob_service *)base;
    int r = local_blob_has(base, digest, err);
    if (r < 0)
        return r;
    if (r == 0)
        return blob_not_found(digest, err);
    char rel[OBI_DIGEST_HEX_LEN + 4];
    blob_relative_path(digest, rel);
    char *path = obi_path_join(svc->blobs_dir, rel);
    if (!path)
        return obi_error_set(err, -ENOMEM, "out of memory");
    *path_out = path;
    return 0;
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

static int local_blob_open_read(obi_blob_service *base, const obi_digest *digest,
                                obi_blob_reader **out, obi_error **err)
{
    local_blob_service *svc = (local_blob_service *)base;
    char rel[OBI_DIGEST_HEX_LEN + 4];
    blob_relative_path(digest, rel);
    cleanup_close int fd = openat(svc->blobs_fd, rel, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
    if (fd < 0 && errno == ENOENT)
        return blob_not_found(digest, err);
    if (fd < 0)
        return obi_error_set_errno(err, errno, "open %s/%s", svc->blobs_dir, rel);
    local_blob_reader *reader = calloc(1, sizeof *reader);
    if (!reader)
        return obi_error_set(err, -ENOMEM, "out of memory");
    reader->path = obi_path_join(svc->blobs_dir, rel);
    if (!reader->path) {
        free(reader);
        return obi_error_set(err, -ENOMEM, "out of memory");
    }
    reader->base.ops = &local_reader_ops;
    reader->fd = steal_fd(&fd);
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
        return obi_error_set_errno(err, -r, "write %s", writer->tmp_path);
    obi_blake3_update(&writer->hasher, data, len);
    return 0;
}

static void writer_discard_tmp(local_blob_writer *writer)
{
    if (writer->tmp_path) {
        unlink(writer->tmp_path);
        free(writer->tmp_path);
        writer->tmp_path = NULL;
    }
}

/* Makes ROOT/blobs/<2 hex>, fsyncing ROOT/blobs when it is new. */
static int ensure_fanout_dir(local_blob_service *svc, const char *fanout, obi_error **err)
{
    if (mkdirat(svc->blobs_fd, fanout, 0755) == 0) {
        if (fsync(svc->blobs_fd) < 0)
            return obi_error_set_errno(err, errno, "fsync %s", svc->blobs_dir);
        return 0;
    }
    if (errno == EEXIST)
        return 0;
    return obi_error_set_errno(err, errno, "mkdir %s/%s", svc->blobs_dir, fanout);
}

static int local_writer_finish(obi_blob_writer *base, obi_digest *digest_out, obi_error **err)
{
    local_blob_writer *writer = (local_blob_writer *)base;
    local_blob_service *svc = writer->svc;
    if (writer->finished)
        return obi_error_set(err, -EINVAL, "blob writer: finished twice");
    obi_digest digest;
    obi_blake3_finalize(&writer->hasher, digest.bytes, OBI_DIGEST_LEN);
    char rel[OBI_DIGEST_HEX_LEN + 4];
    blob_relative_path(&digest, rel);
    char fanout[3] = {rel[0], rel[1], 0};

    int present = local_blob_has(&svc->base, &digest, err);
    if (present < 0)
        return present;
    if (!present) {
        if (fchmod(writer->fd, 0444) < 0 || fsync(writer->fd) < 0)
            return obi_error_set_errno(err, errno, "fsync %s", writer->tmp_path);
        int r = ensure_fanout_dir(svc, fanout, err);
        if (r < 0)
            return r;
        if (linkat(AT_FDCWD, writer->tmp_path, svc->blobs_fd, rel, 0) < 0 && errno != EEXIST)
            return obi_error_set_errno(err, errno, "link %s to %s/%s", writer->tmp_path,
                                       svc->blobs_dir, rel);
        cleanup_close int dir_fd =
            openat(svc->blobs_fd, fanout, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        if (dir_fd < 0 || fsync(dir_fd) < 0)
            return obi_error_set_errno(err, errno, "fsync %s/%s", svc->blobs_dir, fanout);
    }
    writer_discard_tmp(writer);
    close(writer->fd);
    writer->fd = -1;
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
    free(writer);
}

static const struct obi_blob_writer_ops local_writer_ops = {
    .write = local_writer_write,
    .finish = local_writer_finish,
    .close = local_writer_close,
};

/* Creates ROOT/tmp/w.XXXXXX and takes its flock (see the comment at the top). */
static int create_locked_tmp(local_blob_service *svc, int *fd_out, char **path_out, obi_error **err)
{
    for (int attempt = 0; attempt < 100; attempt++) {
        cleanup_free char *path = obi_path_join(svc->tmp_dir, "w.XXXXXX");
        if (!path)
            return obi_error_set(err, -ENOMEM, "out of memory");
        cleanup_close int fd = mkostemp(path, O_CLOEXEC);
        if (fd < 0)
            return obi_error_set_errno(err, errno, "create a temporary file in %s", svc->tmp_dir);
        int r;
        do
            r = flock(fd, LOCK_EX);
        while (r < 0 && errno == EINTR);
        if (r < 0) {
            int saved = errno;
            unlink(path);
            return obi_error_set_errno(err, saved, "flock %s", path);
        }
        struct stat st;
        if (fstat(fd, &st) < 0)
            return obi_error_set_errno(err, errno, "stat %s", path);
        if (st.st_nlink == 0)
            continue; /* removed as an orphan before we locked it */
        *fd_out = steal_fd(&fd);
        *path_out = steal_pointer(&path);
        return 0;
    }
    return obi_error_set(err, -EAGAIN, "create a temporary file in %s: removed repeatedly",
                         svc->tmp_dir);
}

static int local_blob_open_write(obi_blob_service *base, obi_blob_writer **out, obi_error **err)
{
    local_blob_service *svc = (local_blob_service *)base;
    local_blob_writer *writer = calloc(1, sizeof *writer);
    if (!writer)
        return obi_error_set(err, -ENOMEM, "out of memory");
    int r = create_locked_tmp(svc, &writer->fd, &writer->tmp_path, err);
    if (r < 0) {
        free(writer);
        return r;
    }
    writer->base.ops = &local_writer_ops;
    writer->svc = svc;
    obi_blake3_init(&writer->hasher);
    *out = &writer->base;
    return 0;
}

/* ---- service ---- */

/* Removes temporary files of writers that are gone (their flock is free). */
static void remove_orphans(const char *tmp_dir)
{
    cleanup_close int dir_fd = open(tmp_dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (dir_fd < 0)
        return;
    int list_fd = dup(dir_fd);
    if (list_fd < 0)
        return;
    cleanup_dir DIR *dir = fdopendir(list_fd);
    if (!dir) {
        close(list_fd);
        return;
    }
    struct dirent *entry;
    while ((entry = readdir(dir))) {
        if (entry->d_name[0] == '.')
            continue;
        cleanup_close int fd =
            openat(dir_fd, entry->d_name, O_RDONLY | O_CLOEXEC | O_NOFOLLOW | O_NONBLOCK);
        if (fd < 0)
            continue;
        if (flock(fd, LOCK_EX | LOCK_NB) < 0)
            continue; /* a live writer */
        struct stat held, named;
        if (fstat(fd, &held) < 0 || fstatat(dir_fd, entry->d_name, &named, AT_SYMLINK_NOFOLLOW) < 0)
            continue;
        if (held.st_dev == named.st_dev && held.st_ino == named.st_ino && S_ISREG(held.st_mode))
            unlinkat(dir_fd, entry->d_name, 0);
    }
}

static void local_blob_service_free(obi_blob_service *base)
{
    local_blob_service *svc = (local_blob_service *)base;
    if (svc->blobs_fd >= 0)
        close(svc->blobs_fd);
    free(svc->root);
    free(svc->blobs_dir);
    free(svc->tmp_dir);
    free(svc);
}

static const struct obi_blob_service_ops local_blob_ops = {
    .has = local_blob_has,
    .open_read = local_blob_open_read,
    .open_write = local_blob_open_write,
    .local_path = local_blob_local_path,
    .free = local_blob_service_free,
};

int obi_local_blob_service_open(const char *root, obi_blob_service **out, obi_error **err)
{
    if (root[0] != '/')
        return obi_error_set(err, -EINVAL, "local blob service: root '%s' is not absolute", root);
    local_blob_service *svc = calloc(1, sizeof *svc);
    if (!svc)
        return obi_error_set(err, -ENOMEM, "out of memory");
    svc->base.ops = &local_blob_ops;
    svc->blobs_fd = -1;
    _cleanup_(obi_blob_service_freep) obi_blob_service *owned = &svc->base;
    svc->root = strdup(root);
    svc->blobs_dir = obi_path_join(root, "blobs");
    svc->tmp_dir = obi_path_join(root, "tmp");
    if (!svc->root || !svc->blobs_dir || !svc->tmp_dir)
        return obi_error_set(err, -ENOMEM, "out of memory");
    int r = obi_mkdir_p(svc->blobs_dir, 0755, err);
    if (r == 0)
        r = obi_mkdir_p(svc->tmp_dir, 0755, err);
    if (r < 0)
        return obi_error_prefix(err, r, "local blob service %s", root);
    svc->blobs_fd = open(svc->blobs_dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (svc->blobs_fd < 0)
        return obi_error_set_errno(err, errno, "local blob service: open %s", svc->blobs_dir);
    remove_orphans(svc->tmp_dir);
    *out = steal_pointer(&owned);
    return 0;
}
