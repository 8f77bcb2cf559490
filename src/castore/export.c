/*
 * Export and materialize (include/ocibuild/export.h): the inverse of ingest. Walks the node
 * depth first in a loop over a heap stack of directory levels (one directory open at a time,
 * climbing back with fs_walk.h's checked ".."), so any depth up to OBI_DIRECTORY_MAX_DEPTH costs
 * O(1) descriptors and stack, creating each entry relative to its parent directory's fd with
 * O_EXCL/O_NOFOLLOW (mkdirat, symlinkat, openat), after validating its name, so a hostile
 * Directory cannot write outside the destination. File contents stream from the blob service
 * through a BLAKE3 hasher; a digest or size that does not match the node is an error naming the
 * path. On any failure the partially written destination is removed.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "ocibuild/array.h"
#include "ocibuild/blake3.h"
#include "ocibuild/buf.h"
#include "ocibuild/cleanup.h"
#include "ocibuild/export.h"
#include "ocibuild/fs.h"
#include "ocibuild/fs_walk.h"

#define EXPORT_READ_SIZE (1 << 20)

typedef struct exporter {
    obi_blob_service *blobs;
    obi_directory_service *directories;
    bool hardlink;
    uint8_t *buf; /* EXPORT_READ_SIZE bytes */
    obi_buf path; /* the current entry's path, for messages */
    const obi_progress *progress;
    uint64_t bytes, files; /* done so far, for progress */
} exporter;

static void report_progress(exporter *ex, uint64_t more_bytes, uint64_t more_files)
{
    ex->bytes += more_bytes;
    ex->files += more_files;
    obi_progress_report(ex->progress, ex->bytes, ex->files);
}

static int export_entry(exporter *ex, int dirfd, const char *name, const obi_node *node,
                        obi_error **err);

static const char *current_path(exporter *ex)
{
    return (const char *)ex->path.data;
}

/* Copies the blob into fd, hashing it; checks digest and size against the node. */
static int write_blob(exporter *ex, int fd, const obi_node *node, obi_error **err)
{
    cleanup_blob_reader obi_blob_reader *reader = NULL;
    int r = obi_blob_open_read(ex->blobs, &node->digest, &reader, err);
    if (r < 0)
        return obi_error_prefix(err, r, "%s", current_path(ex));
    obi_blake3_hasher hasher;
    obi_blake3_init(&hasher);
    uint64_t size = 0;
    for (;;) {
        size_t n = 0;
        r = obi_blob_read(reader, ex->buf, EXPORT_READ_SIZE, &n, err);
        if (r < 0)
            return obi_error_prefix(err, r, "%s", current_path(ex));
        if (n == 0)
            break;
        obi_blake3_update(&hasher, ex->buf, n);
        size += n;
        if (size > node->size)
            return obi_error_set(err, -EIO, "%s: blob is longer than the node's size %llu",
                                 current_path(ex), (unsigned long long)node->size);
        if ((r = obi_write_all(fd, ex->buf, n)) < 0)
            return obi_error_set_errno(err, -r, "%s: write", current_path(ex));
        report_progress(ex, n, 0);
    }
    obi_digest got;
    obi_blake3_finalize(&hasher, got.bytes, OBI_DIGEST_LEN);
    if (!obi_digest_equal(&got, &node->digest)) {
        char want_hex[OBI_DIGEST_HEX_LEN + 1], got_hex[OBI_DIGEST_HEX_LEN + 1];
        obi_digest_to_hex(&node->digest, want_hex);
        obi_digest_to_hex(&got, got_hex);
        return obi_error_set(err, -EIO, "%s: blob content has digest %s, expected %s",
                             current_path(ex), got_hex, want_hex);
    }
    if (size != node->size)
        return obi_error_set(err, -EIO, "%s: blob has %llu bytes, the node says %llu",
                             current_path(ex), (unsigned long long)size,
                             (unsigned long long)node->size);
    return 0;
}

/* Hard-links the blob's local file; 1 if linked, 0 if the caller should copy instead. */
static int link_blob(exporter *ex, int dirfd, const char *name, const obi_node *node,
                     obi_error **err)
{
    cleanup_free char *local = NULL;
    cleanup_error obi_error *lookup_err = NULL;
    int r = obi_blob_local_path(ex->blobs, &node->digest, &local, &lookup_err);
    if (r == -ENOENT)
        return obi_error_set(err, r, "%s: %s", current_path(ex), lookup_err->message);
    if (r < 0)
        return 0; /* no local files (-ENOTSUP) or none for this blob: copy it */
    if (linkat(AT_FDCWD, local, dirfd, name, 0) == 0)
        return 1;
    if (errno == EXDEV || errno == EPERM || errno == EMLINK || errno == ENOTSUP)
        return 0;
    return obi_error_set_errno(err, errno, "%s: link from %s", current_path(ex), local);
}

static int export_file(exporter *ex, int dirfd, const char *name, const obi_node *node,
                       obi_error **err)
{
    if (ex->hardlink && !node->executable) {
        int r = link_blob(ex, dirfd, name, node, err);
        if (r > 0)
            report_progress(ex, node->size, 1);
        if (r != 0)
            return r < 0 ? r : 0;
    }
    cleanup_close int fd =
        openat(dirfd, name, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600);
    if (fd < 0)
        return obi_error_set_errno(err, errno, "%s: create", current_path(ex));
    int r = write_blob(ex, fd, node, err);
    if (r < 0)
        return r;
    mode_t mode = node->executable ? OBI_EXPORT_EXECUTABLE_MODE : OBI_EXPORT_FILE_MODE;
    if (fchmod(fd, mode) < 0)
        return obi_error_set_errno(err, errno, "%s: chmod", current_path(ex));
    if (close(steal_fd(&fd)) < 0)
        return obi_error_set_errno(err, errno, "%s: close", current_path(ex));
    report_progress(ex, 0, 1);
    return 0;
}

static int export_symlink(exporter *ex, int dirfd, const char *name, const obi_node *node,
                          obi_error **err)
{
    if (node->target.len == 0 || node->target.len > OBI_SYMLINK_TARGET_MAX ||
        memchr(node->target.data, 0, node->target.len))
        return obi_error_set(err, -EINVAL, "%s: invalid symlink target", current_path(ex));
    if (symlinkat((const char *)node->target.data, dirfd, name) < 0)
        return obi_error_set_errno(err, errno, "%s: symlink", current_path(ex));
    return 0;
}

/* Fetches the node's Directory and checks it against the node's digest and size. */
static int fetch_directory(exporter *ex, const obi_node *node, obi_directory **out, obi_error **err)
{
    cleanup_directory obi_directory *dir = NULL;
    int r = obi_directory_get(ex->directories, &node->digest, &dir, err);
    if (r < 0)
        return obi_error_prefix(err, r, "%s", current_path(ex));
    obi_digest got;
    r = obi_directory_digest(dir, &got, err);
    if (r < 0)
        return obi_error_prefix(err, r, "%s", current_path(ex));
    if (!obi_digest_equal(&got, &node->digest))
        return obi_error_set(err, -EIO, "%s: directory service returned a different directory",
                             current_path(ex));
    uint64_t size = obi_directory_size(dir);
    if (size != node->size)
        return obi_error_set(
            err, -EINVAL, "%s: directory node size %llu does not match its contents (%llu)",
            current_path(ex), (unsigned long long)node->size, (unsigned long long)size);
    *out = steal_pointer(&dir);
    return 0;
}

/* One directory being filled: its Directory, the next of its entries (directories, then files,
 * then symlinks) and what it is on disk (for the check on the way back up). */
typedef struct export_level {
    obi_directory *dir;
    size_t next;
    struct stat st;
    size_t path_len;
} export_level;

static const obi_node *entry_at(const obi_directory *dir, size_t i)
{
    if (i < dir->n_directories)
        return &dir->directories[i];
    i -= dir->n_directories;
    if (i < dir->n_files)
        return &dir->files[i];
    i -= dir->n_files;
    return i < dir->n_symlinks ? &dir->symlinks[i] : NULL;
}

typedef struct export_walk {
    exporter *ex;
    export_level *levels;
    size_t depth, cap; /* levels[0..depth] in use while cur >= 0 */
    int cur;           /* levels[depth]'s directory, open for reading */
    const char *root;  /* the destination, for the depth message */
} export_walk;

/* Creates directory name (node) in dirfd, fetches its Directory and makes it the current one. */
static int export_push(export_walk *w, int dirfd, const char *name, const obi_node *node,
                       size_t depth, obi_error **err)
{
    exporter *ex = w->ex;
    if (depth + 1 > OBI_DIRECTORY_MAX_DEPTH)
        return obi_error_set(err, -ELOOP, "%s: directories nested deeper than %d levels", w->root,
                             OBI_DIRECTORY_MAX_DEPTH);
    if (obi_array_grow(&w->levels, &w->cap, depth + 1) < 0)
        return obi_error_oom(err);
    export_level *lv = &w->levels[depth];
    *lv = (export_level){.path_len = ex->path.len};
    cleanup_directory obi_directory *dir = NULL;
    int r = fetch_directory(ex, node, &dir, err);
    if (r < 0)
        return r;
    if (mkdirat(dirfd, name, 0700) < 0)
        return obi_error_set_errno(err, errno, "%s: mkdir", current_path(ex));
    cleanup_close int fd = openat(dirfd, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
    if (fd < 0)
        return obi_error_set_errno(err, errno, "%s: open", current_path(ex));
    if (fstat(fd, &lv->st) < 0)
        return obi_error_set_errno(err, errno, "%s: fstat", current_path(ex));
    lv->dir = steal_pointer(&dir);
    if (w->cur >= 0)
        close(w->cur);
    w->cur = steal_fd(&fd);
    w->depth = depth;
    return 0;
}

/* Materialized entries (build inputs) get mtime 1, as Nix shows store paths; castore keeps
 * no times, so digests do not change. A linked file shares its time with the store's blob. */
static const struct timespec INPUT_TIMES[2] = {{1, 0}, {1, 0}};

static int set_input_time(exporter *ex, int dirfd, const char *name, obi_error **err)
{
    if (ex->hardlink && utimensat(dirfd, name, INPUT_TIMES, AT_SYMLINK_NOFOLLOW) < 0)
        return obi_error_set_errno(err, errno, "%s: set mtime", current_path(ex));
    return 0;
}

/* The current directory is complete: made read-only, and the walk climbs to its parent. */
static int export_pop(export_walk *w, obi_error **err)
{
    exporter *ex = w->ex;
    export_level *lv = &w->levels[w->depth];
    ex->path.len = lv->path_len;
    ex->path.data[ex->path.len] = 0;
    if (fchmod(w->cur, OBI_EXPORT_DIRECTORY_MODE) < 0)
        return obi_error_set_errno(err, errno, "%s: chmod", current_path(ex));
    if (ex->hardlink && futimens(w->cur, INPUT_TIMES) < 0)
        return obi_error_set_errno(err, errno, "%s: set mtime", current_path(ex));
    obi_directory_free(lv->dir);
    lv->dir = NULL;
    if (w->depth == 0) {
        close(w->cur);
        w->cur = -1;
        return 0;
    }
    cleanup_close int up = -1;
    int r = obi_walk_climb(w->cur, &w->levels[w->depth - 1].st, current_path(ex), &up, err);
    if (r < 0)
        return r;
    int fd = openat(up, ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0)
        return obi_error_set_errno(err, errno, "%s: open ..", current_path(ex));
    close(w->cur);
    w->cur = fd;
    w->depth--;
    return 0;
}

/* Exports directory node as name in dirfd: a loop over a heap stack of levels with one directory
 * open at a time (fs_walk.h's climb on the way up), so any depth costs O(1) descriptors and
 * stack; deeper than OBI_DIRECTORY_MAX_DEPTH is refused. */
static int export_directory(exporter *ex, int dirfd, const char *name, const obi_node *node,
                            obi_error **err)
{
    export_walk w = {.ex = ex, .cur = -1};
    cleanup_free char *root = strdup(current_path(ex));
    w.root = root ? root : "export";
    int r = export_push(&w, dirfd, name, node, 0, err);
    while (r == 0 && w.cur >= 0) {
        export_level *lv = &w.levels[w.depth];
        const obi_node *child = entry_at(lv->dir, lv->next++);
        if (!child) {
            r = export_pop(&w, err);
            continue;
        }
        ex->path.len = lv->path_len;
        if (obi_buf_append_str(&ex->path, "/") < 0 ||
            obi_buf_append(&ex->path, child->name.data, child->name.len) < 0) {
            r = obi_error_oom(err);
            break;
        }
        r = obi_name_validate(child->name.data, child->name.len, "entry name", err);
        if (r < 0) {
            obi_error_prefix(err, r, "%s", current_path(ex));
            break;
        }
        const char *child_name = (const char *)child->name.data;
        if (child->kind == OBI_NODE_DIRECTORY)
            r = export_push(&w, w.cur, child_name, child, w.depth + 1, err);
        else
            r = export_entry(ex, w.cur, child_name, child, err);
    }
    if (w.cur >= 0)
        close(w.cur);
    for (size_t i = 0; i < w.cap && w.levels && i <= w.depth; i++)
        obi_directory_free(w.levels[i].dir);
    free(w.levels);
    return r;
}

static int export_entry(exporter *ex, int dirfd, const char *name, const obi_node *node,
                        obi_error **err)
{
    int r;
    switch (node->kind) {
    case OBI_NODE_FILE:
        r = export_file(ex, dirfd, name, node, err);
        break;
    case OBI_NODE_DIRECTORY:
        return export_directory(ex, dirfd, name, node, err); /* times set as each completes */
    case OBI_NODE_SYMLINK:
        r = export_symlink(ex, dirfd, name, node, err);
        break;
    default:
        return obi_error_set(err, -EINVAL, "%s: unknown node kind %d", current_path(ex),
                             (int)node->kind);
    }
    return r < 0 ? r : set_input_time(ex, dirfd, name, err);
}

static int export_root(obi_blob_service *blobs, obi_directory_service *directories,
                       const obi_node *node, const char *dest, bool hardlink,
                       const obi_progress *progress, obi_error **err)
{
    /* Split dest into its parent directory and the new entry's name. */
    size_t len = strlen(dest);
    while (len > 1 && dest[len - 1] == '/')
        len--;
    cleanup_free char *path = strndup(dest, len);
    if (!path)
        return obi_error_oom(err);
    char *slash = strrchr(path, '/');
    const char *base = slash ? slash + 1 : path;
    cleanup_free char *parent = slash ? strndup(path, (size_t)(slash - path)) : strdup(".");
    if (!parent)
        return obi_error_oom(err);
    if (slash == path) {
        free(parent);
        parent = strdup("/");
        if (!parent)
            return obi_error_oom(err);
    }
    if (!*base || !strcmp(base, ".") || !strcmp(base, ".."))
        return obi_error_set(err, -EINVAL, "export to %s: destination must name a new entry", dest);
    cleanup_close int parent_fd = open(parent, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (parent_fd < 0)
        return obi_error_set_errno(err, errno, "export to %s: open %s", dest, parent);

    struct stat st;
    if (fstatat(parent_fd, base, &st, AT_SYMLINK_NOFOLLOW) == 0)
        return obi_error_set(err, -EEXIST, "export to %s: already exists", dest);

    cleanup_free uint8_t *buf = malloc(EXPORT_READ_SIZE);
    exporter ex = {.blobs = blobs,
                   .directories = directories,
                   .hardlink = hardlink,
                   .buf = buf,
                   .progress = progress};
    if (!buf || obi_buf_append_str(&ex.path, path) < 0) {
        obi_buf_free(&ex.path);
        return obi_error_oom(err);
    }
    int r = export_entry(&ex, parent_fd, base, node, err);
    obi_buf_free(&ex.path);
    if (r < 0) {
        /* dest did not exist before: whatever is there now is ours and half-written. */
        if (fstatat(parent_fd, base, &st, AT_SYMLINK_NOFOLLOW) == 0) {
            cleanup_error obi_error *rm_err = NULL;
            if (obi_rm_rf(path, &rm_err) < 0)
                obi_error_prefix(err, r, "(could not remove the partial %s: %s)", path,
                                 rm_err->message);
        }
        return obi_error_prefix(err, r, "export");
    }
    return 0;
}

int obi_export_node(obi_blob_service *blobs, obi_directory_service *directories,
                    const obi_node *node, const char *dest, obi_error **err)
{
    return export_root(blobs, directories, node, dest, false, NULL, err);
}

int obi_export_node_progress(obi_blob_service *blobs, obi_directory_service *directories,
                             const obi_node *node, const char *dest, const obi_progress *progress,
                             obi_error **err)
{
    return export_root(blobs, directories, node, dest, false, progress, err);
}

int obi_materialize_node(obi_blob_service *blobs, obi_directory_service *directories,
                         const obi_node *node, const char *dest, obi_error **err)
{
    return export_root(blobs, directories, node, dest, true, NULL, err);
}

int obi_materialize_node_progress(obi_blob_service *blobs, obi_directory_service *directories,
                                  const obi_node *node, const char *dest,
                                  const obi_progress *progress, obi_error **err)
{
    return export_root(blobs, directories, node, dest, true, progress, err);
}
