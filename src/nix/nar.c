/*
 * NAR serialization (see include/ocibuild/nar.h). One writer walks either a castore node (blobs
 * and directories fetched through store.h, one directory level in memory at a time) or a path
 * on disk, and emits the NAR token stream through a fixed buffer into the caller's sink. The
 * NAR hash is this stream fed into SHA-256. Layout, per nix.md: every string is a u64
 * little-endian length, the bytes, zero padding to 8; "nix-archive-1" then the root node.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "ocibuild/cleanup.h"
#include "ocibuild/digest.h"
#include "ocibuild/fs.h"
#include "ocibuild/nar.h"
#include "ocibuild/strv.h"

#define NAR_BUFFER_SIZE (64u * 1024)
/* Deeper trees are refused: castore's limit (node.h), so every stored tree has a NAR. */
#define NAR_MAX_DEPTH OBI_DIRECTORY_MAX_DEPTH

typedef struct nar_writer {
    obi_nar_sink sink;
    void *ctx;
    uint8_t *buffer;
    size_t used;
    obi_blob_service *blobs;
    obi_directory_service *directories;
} nar_writer;

/* ---- output ---- */

static int writer_flush(nar_writer *w, obi_error **err)
{
    if (w->used == 0)
        return 0;
    int r = w->sink(w->ctx, w->buffer, w->used, err);
    if (r < 0)
        return obi_error_prefix(err, r, "nar: sink");
    w->used = 0;
    return 0;
}

static int write_raw(nar_writer *w, const void *data, size_t len, obi_error **err)
{
    const uint8_t *p = data;
    while (len > 0) {
        if (w->used == NAR_BUFFER_SIZE) {
            int r = writer_flush(w, err);
            if (r < 0)
                return r;
        }
        size_t n = NAR_BUFFER_SIZE - w->used;
        if (n > len)
            n = len;
        memcpy(w->buffer + w->used, p, n);
        w->used += n;
        p += n;
        len -= n;
    }
    return 0;
}

static int write_u64(nar_writer *w, uint64_t value, obi_error **err)
{
    uint8_t le[8];
    for (int i = 0; i < 8; i++)
        le[i] = (uint8_t)(value >> (8 * i));
    return write_raw(w, le, sizeof le, err);
}

static int write_padding(nar_writer *w, uint64_t len, obi_error **err)
{
    static const uint8_t zeros[8];
    size_t pad = (size_t)((8 - len % 8) % 8);
    return pad ? write_raw(w, zeros, pad, err) : 0;
}

static int write_bytes(nar_writer *w, const void *data, size_t len, obi_error **err)
{
    int r = write_u64(w, len, err);
    if (r >= 0)
        r = write_raw(w, data, len, err);
    if (r >= 0)
        r = write_padding(w, len, err);
    return r;
}

static int write_str(nar_writer *w, const char *s, obi_error **err)
{
    return write_bytes(w, s, strlen(s), err);
}

/* Writes the NULL-terminated list of tokens. */
static int write_tokens(nar_writer *w, const char *const *tokens, obi_error **err)
{
    for (; *tokens; tokens++) {
        int r = write_str(w, *tokens, err);
        if (r < 0)
            return r;
    }
    return 0;
}

static int write_symlink(nar_writer *w, const void *target, size_t len, obi_error **err)
{
    static const char *const head[] = {"(", "type", "symlink", "target", NULL};
    int r = write_tokens(w, head, err);
    if (r >= 0)
        r = write_bytes(w, target, len, err);
    if (r >= 0)
        r = write_str(w, ")", err);
    return r;
}

/* Everything of a regular file up to its contents' length. */
static int write_file_head(nar_writer *w, bool executable, uint64_t size, obi_error **err)
{
    static const char *const head[] = {"(", "type", "regular", NULL};
    static const char *const exec[] = {"executable", "", NULL};
    int r = write_tokens(w, head, err);
    if (r >= 0 && executable)
        r = write_tokens(w, exec, err);
    if (r >= 0)
        r = write_str(w, "contents", err);
    if (r >= 0)
        r = write_u64(w, size, err);
    return r;
}

static int write_file_tail(nar_writer *w, uint64_t size, obi_error **err)
{
    int r = write_padding(w, size, err);
    if (r >= 0)
        r = write_str(w, ")", err);
    return r;
}

static int write_entry_head(nar_writer *w, const void *name, size_t len, obi_error **err)
{
    static const char *const head[] = {"entry", "(", "name", NULL};
    int r = write_tokens(w, head, err);
    if (r >= 0)
        r = write_bytes(w, name, len, err);
    if (r >= 0)
        r = write_str(w, "node", err);
    return r;
}

static int writer_init(nar_writer *w, obi_nar_sink sink, void *ctx, obi_error **err)
{
    memset(w, 0, sizeof *w);
    w->sink = sink;
    w->ctx = ctx;
    w->buffer = malloc(NAR_BUFFER_SIZE);
    if (!w->buffer)
        return obi_error_set(err, -ENOMEM, "nar: out of memory");
    return write_str(w, "nix-archive-1", err);
}

/* ---- castore nodes ---- */

static int compare_node_names(const void *a, const void *b)
{
    const obi_node *x = *(const obi_node *const *)a, *y = *(const obi_node *const *)b;
    size_t n = x->name.len < y->name.len ? x->name.len : y->name.len;
    int c = memcmp(x->name.data, y->name.data, n);
    if (c != 0)
        return c;
    return (x->name.len > y->name.len) - (x->name.len < y->name.len);
}

static int write_node(nar_writer *w, const obi_node *node, unsigned depth, obi_error **err);

static int write_castore_file(nar_writer *w, const obi_node *node, obi_error **err)
{
    cleanup_blob_reader obi_blob_reader *reader = NULL;
    int r = obi_blob_open_read(w->blobs, &node->digest, &reader, err);
    if (r < 0)
        return r;
    r = write_file_head(w, node->executable, node->size, err);
    if (r < 0)
        return r;
    uint8_t chunk[16384];
    uint64_t got = 0;
    for (;;) {
        size_t n = 0;
        r = obi_blob_read(reader, chunk, sizeof chunk, &n, err);
        if (r < 0)
            return r;
        if (n == 0)
            break;
        got += n;
        if (got > node->size)
            break;
        r = write_raw(w, chunk, n, err);
        if (r < 0)
            return r;
    }
    if (got != node->size) {
        cleanup_free char *b3 = obi_digest_to_b3_string(&node->digest);
        return obi_error_set(err, -EIO, "nar: blob %s has %s%llu bytes, its node says %llu",
                             b3 ? b3 : "?", got > node->size ? "more than " : "",
                             (unsigned long long)(got > node->size ? node->size : got),
                             (unsigned long long)node->size);
    }
    return write_file_tail(w, node->size, err);
}

static int write_castore_directory(nar_writer *w, const obi_node *node, unsigned depth,
                                   obi_error **err)
{
    if (depth >= NAR_MAX_DEPTH)
        return obi_error_set(err, -ELOOP, "nar: directories nested deeper than %d", NAR_MAX_DEPTH);
    cleanup_directory obi_directory *dir = NULL;
    int r = obi_directory_get(w->directories, &node->digest, &dir, err);
    if (r < 0)
        return r;
    size_t n = dir->n_directories + dir->n_files + dir->n_symlinks;
    cleanup_free const obi_node **entries = calloc(n ? n : 1, sizeof *entries);
    if (!entries)
        return obi_error_set(err, -ENOMEM, "nar: out of memory");
    size_t k = 0;
    for (size_t i = 0; i < dir->n_directories; i++)
        entries[k++] = &dir->directories[i];
    for (size_t i = 0; i < dir->n_files; i++)
        entries[k++] = &dir->files[i];
    for (size_t i = 0; i < dir->n_symlinks; i++)
        entries[k++] = &dir->symlinks[i];
    if (n > 1)
        qsort(entries, n, sizeof *entries, compare_node_names);

    static const char *const head[] = {"(", "type", "directory", NULL};
    r = write_tokens(w, head, err);
    for (size_t i = 0; i < n && r >= 0; i++) {
        r = write_entry_head(w, entries[i]->name.data, entries[i]->name.len, err);
        if (r >= 0)
            r = write_node(w, entries[i], depth + 1, err);
        if (r >= 0)
            r = write_str(w, ")", err);
        if (r < 0)
            obi_error_prefix(err, r, "%.*s", (int)entries[i]->name.len,
                             (const char *)entries[i]->name.data);
    }
    if (r >= 0)
        r = write_str(w, ")", err);
    return r;
}

static int write_node(nar_writer *w, const obi_node *node, unsigned depth, obi_error **err)
{
    switch (node->kind) {
    case OBI_NODE_DIRECTORY:
        return write_castore_directory(w, node, depth, err);
    case OBI_NODE_FILE:
        return write_castore_file(w, node, err);
    case OBI_NODE_SYMLINK:
        return write_symlink(w, node->target.data, node->target.len, err);
    }
    return obi_error_set(err, -EINVAL, "nar: unknown node kind %d", (int)node->kind);
}

int obi_nar_write_node(obi_blob_service *blobs, obi_directory_service *directories,
                       const obi_node *root, obi_nar_sink sink, void *ctx, obi_error **err)
{
    nar_writer w;
    int r = writer_init(&w, sink, ctx, err);
    w.blobs = blobs;
    w.directories = directories;
    if (r >= 0)
        r = write_node(&w, root, 0, err);
    if (r >= 0)
        r = writer_flush(&w, err);
    free(w.buffer);
    return r < 0 ? r : 0;
}

/* ---- paths on disk ---- */

static int write_path(nar_writer *w, int dirfd, const char *name, const char *path, unsigned depth,
                      obi_error **err);

static int write_disk_file(nar_writer *w, int dirfd, const char *name, const char *path,
                           const struct stat *st, obi_error **err)
{
    cleanup_close int fd = openat(dirfd, name, O_RDONLY | O_NOFOLLOW | O_CLOEXEC);
    if (fd < 0)
        return obi_error_set_errno(err, errno, "nar: open %s", path);
    uint64_t size = (uint64_t)st->st_size;
    int r = write_file_head(w, (st->st_mode & S_IXUSR) != 0, size, err);
    if (r < 0)
        return r;
    uint8_t chunk[16384];
    uint64_t got = 0;
    for (;;) {
        ssize_t n = obi_read_full(fd, chunk, sizeof chunk);
        if (n < 0)
            return obi_error_set_errno(err, (int)-n, "nar: read %s", path);
        if (n == 0)
            break;
        got += (uint64_t)n;
        if (got > size)
            break;
        r = write_raw(w, chunk, (size_t)n, err);
        if (r < 0)
            return r;
    }
    if (got != size)
        return obi_error_set(err, -EIO, "nar: %s changed size while being read", path);
    return write_file_tail(w, size, err);
}

/* The entry names of an open directory, sorted bytewise. */
static int list_directory(int fd, const char *path, char ***names_out, size_t *n_out,
                          obi_error **err)
{
    int dup_fd = dup(fd);
    if (dup_fd < 0)
        return obi_error_set_errno(err, errno, "nar: %s", path);
    cleanup_dir DIR *d = fdopendir(dup_fd);
    if (!d) {
        int e = errno;
        close(dup_fd);
        return obi_error_set_errno(err, e, "nar: opendir %s", path);
    }
    cleanup_strv_builder obi_strv_builder names = {0};
    for (;;) {
        errno = 0;
        struct dirent *de = readdir(d);
        if (!de) {
            if (errno)
                return obi_error_set_errno(err, errno, "nar: readdir %s", path);
            break;
        }
        if (!strcmp(de->d_name, ".") || !strcmp(de->d_name, ".."))
            continue;
        if (obi_strv_builder_add(&names, de->d_name) < 0)
            return obi_error_set(err, -ENOMEM, "nar: out of memory");
    }
    obi_strv_builder_sort_unique(&names); /* names in a directory are unique already */
    size_t n = 0;
    char **sorted = obi_strv_builder_steal(&names, &n);
    if (!sorted)
        return obi_error_set(err, -ENOMEM, "nar: out of memory");
    *names_out = sorted;
    *n_out = n;
    return 0;
}

static int write_disk_directory(nar_writer *w, int dirfd, const char *name, const char *path,
                                unsigned depth, obi_error **err)
{
    if (depth >= NAR_MAX_DEPTH)
        return obi_error_set(err, -ELOOP, "nar: %s: directories nested deeper than %d", path,
                             NAR_MAX_DEPTH);
    cleanup_close int fd = openat(dirfd, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
    if (fd < 0)
        return obi_error_set_errno(err, errno, "nar: open %s", path);
    cleanup_strv char **names = NULL;
    size_t n = 0;
    int r = list_directory(fd, path, &names, &n, err);
    if (r < 0)
        return r;
    static const char *const head[] = {"(", "type", "directory", NULL};
    r = write_tokens(w, head, err);
    for (size_t i = 0; i < n && r >= 0; i++) {
        cleanup_free char *child = obi_path_join(path, names[i]);
        if (!child)
            return obi_error_set(err, -ENOMEM, "nar: out of memory");
        r = write_entry_head(w, names[i], strlen(names[i]), err);
        if (r >= 0)
            r = write_path(w, fd, names[i], child, depth + 1, err);
        if (r >= 0)
            r = write_str(w, ")", err);
    }
    if (r >= 0)
        r = write_str(w, ")", err);
    return r;
}

static int write_path(nar_writer *w, int dirfd, const char *name, const char *path, unsigned depth,
                      obi_error **err)
{
    struct stat st;
    if (fstatat(dirfd, name, &st, AT_SYMLINK_NOFOLLOW) < 0)
        return obi_error_set_errno(err, errno, "nar: stat %s", path);
    if (S_ISREG(st.st_mode))
        return write_disk_file(w, dirfd, name, path, &st, err);
    if (S_ISDIR(st.st_mode))
        return write_disk_directory(w, dirfd, name, path, depth, err);
    if (S_ISLNK(st.st_mode)) {
        size_t cap = (size_t)st.st_size + 1;
        cleanup_free char *target = malloc(cap);
        if (!target)
            return obi_error_set(err, -ENOMEM, "nar: out of memory");
        ssize_t n = readlinkat(dirfd, name, target, cap);
        if (n < 0)
            return obi_error_set_errno(err, errno, "nar: readlink %s", path);
        if ((size_t)n >= cap)
            return obi_error_set(err, -EIO, "nar: %s changed while being read", path);
        return write_symlink(w, target, (size_t)n, err);
    }
    return obi_error_set(err, -EINVAL,
                         "nar: %s is not a regular file, directory or symlink (mode %o)", path,
                         (unsigned)st.st_mode);
}

int obi_nar_write_path(const char *path, obi_nar_sink sink, void *ctx, obi_error **err)
{
    nar_writer w;
    int r = writer_init(&w, sink, ctx, err);
    if (r >= 0)
        r = write_path(&w, AT_FDCWD, path, path, 0, err);
    if (r >= 0)
        r = writer_flush(&w, err);
    free(w.buffer);
    return r < 0 ? r : 0;
}

/* ---- hashing ---- */

static int sha256_sink(void *ctx, const void *data, size_t len, obi_error **err)
{
    (void)err;
    obi_sha256_update(ctx, data, len);
    return 0;
}

typedef struct counting_hash {
    obi_sha256 *sha;
    uint64_t size;
} counting_hash;

static int counting_hash_sink(void *ctx, const void *data, size_t len, obi_error **err)
{
    counting_hash *c = ctx;
    c->size += len;
    return sha256_sink(c->sha, data, len, err);
}

static int finish_hash(counting_hash *c, obi_nar_hash *out)
{
    obi_sha256_final(c->sha, out->sha256);
    out->size = c->size;
    return 0;
}

int obi_nar_hash_node(obi_blob_service *blobs, obi_directory_service *directories,
                      const obi_node *root, obi_nar_hash *out, obi_error **err)
{
    cleanup_sha256 obi_sha256 *sha = obi_sha256_new();
    if (!sha)
        return obi_error_set(err, -ENOMEM, "nar: out of memory");
    counting_hash c = {sha, 0};
    int r = obi_nar_write_node(blobs, directories, root, counting_hash_sink, &c, err);
    if (r < 0)
        return r;
    return finish_hash(&c, out);
}

int obi_nar_hash_path(const char *path, obi_nar_hash *out, obi_error **err)
{
    cleanup_sha256 obi_sha256 *sha = obi_sha256_new();
    if (!sha)
        return obi_error_set(err, -ENOMEM, "nar: out of memory");
    counting_hash c = {sha, 0};
    int r = obi_nar_write_path(path, counting_hash_sink, &c, err);
    if (r < 0)
        return r;
    return finish_hash(&c, out);
}

char *obi_nar_hash_to_string(const obi_nar_hash *hash)
{
    size_t len = obi_nixbase32_encoded_len(OBI_SHA256_LEN);
    char *s = malloc(strlen("sha256:") + len + 1);
    if (!s)
        return NULL;
    strcpy(s, "sha256:");
    obi_nixbase32_encode(hash->sha256, OBI_SHA256_LEN, s + 7);
    return s;
}
