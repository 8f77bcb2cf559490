/*
 * Ingest (include/ocibuild/ingest.h): walks a filesystem tree depth first, in name order,
 * through directory file descriptors. Each entry is classified with fstatat(AT_SYMLINK_NOFOLLOW)
 * and then opened with O_NOFOLLOW; the opened file is checked to be the same inode, so a
 * path swapped for a symlink or a fifo mid-walk is an error, never followed or blocked on.
 * Files stream through a fixed read buffer into a blob writer (and the optional reference
 * scanner), finished as pending (no fsync per file); a small file (up to 64 KiB) is hashed
 * first and not written at all when the store already has its blob; directories are put leaves
 * first into one putter. At the end one barrier (obi_blob_service_sync) makes every blob durable,
 * and only then are the directories committed (docs/store.md, "Crash safety").
 */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "ocibuild/blake3.h"
#include "ocibuild/buf.h"
#include "ocibuild/cleanup.h"
#include "ocibuild/fs.h"
#include "ocibuild/ingest.h"

#define INGEST_READ_SIZE (1 << 20)
/* Files up to this size are read whole first and not written when the store has them. */
#define INGEST_SMALL_FILE (64 << 10)

typedef struct ingest {
    obi_blob_service *blobs;
    obi_directory_service *directories;
    obi_directory_putter *putter; /* opened at the first directory */
    obi_refscan_state *refscan;
    uint8_t *buf; /* INGEST_READ_SIZE bytes */
    obi_buf path; /* the current entry's path, for messages */
} ingest;

static int ingest_entry(ingest *ig, int dirfd, const char *name, const char *node_name,
                        obi_node *out, obi_error **err);

static const char *file_type_name(mode_t mode)
{
    switch (mode & S_IFMT) {
    case S_IFIFO:
        return "fifo";
    case S_IFSOCK:
        return "socket";
    case S_IFCHR:
        return "character device";
    case S_IFBLK:
        return "block device";
    default:
        return "unknown file type";
    }
}

/* Checks that fd (opened by name) is still the inode fstatat saw. */
static int check_same_inode(ingest *ig, int fd, const struct stat *before, struct stat *after,
                            obi_error **err)
{
    if (fstat(fd, after) < 0)
        return obi_error_set_errno(err, errno, "%s: fstat", (char *)ig->path.data);
    if (after->st_dev != before->st_dev || after->st_ino != before->st_ino ||
        (after->st_mode & S_IFMT) != (before->st_mode & S_IFMT))
        return obi_error_set(err, -EAGAIN, "%s: changed while being ingested",
                             (char *)ig->path.data);
    return 0;
}

/* Writes the file's blob: the head already in ig->buf, then (when the head filled more than a
 * small file) the rest of fd, fed to the reference scanner as it goes. *size counts the bytes. */
static int write_blob(ingest *ig, int fd, size_t head, uint64_t *size, obi_digest *digest,
                      obi_error **err)
{
    const char *path = (char *)ig->path.data;
    cleanup_blob_writer obi_blob_writer *writer = NULL;
    int r = obi_blob_open_write(ig->blobs, &writer, err);
    if (r < 0)
        return obi_error_prefix(err, r, "%s", path);
    r = obi_blob_write(writer, ig->buf, head, err);
    if (r < 0)
        return obi_error_prefix(err, r, "%s", path);
    while (head > INGEST_SMALL_FILE) {
        ssize_t n = read(fd, ig->buf, INGEST_READ_SIZE);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            return obi_error_set_errno(err, errno, "%s: read at offset %llu", path,
                                       (unsigned long long)*size);
        }
        if (n == 0)
            break;
        r = obi_blob_write(writer, ig->buf, (size_t)n, err);
        if (r < 0)
            return obi_error_prefix(err, r, "%s", path);
        if (ig->refscan)
            obi_refscan_feed(ig->refscan, ig->buf, (size_t)n);
        *size += (uint64_t)n;
    }
    r = obi_blob_finish_pending(writer, digest, err);
    if (r < 0)
        return obi_error_prefix(err, r, "%s", path);
    return 0;
}

static int ingest_file(ingest *ig, int dirfd, const char *name, const struct stat *st,
                       const char *node_name, obi_node *out, obi_error **err)
{
    const char *path = (char *)ig->path.data;
    /* O_NONBLOCK: if the file was swapped for a fifo, opening must not hang. */
    cleanup_close int fd =
        openat(dirfd, name, O_RDONLY | O_NOFOLLOW | O_CLOEXEC | O_NOCTTY | O_NONBLOCK);
    if (fd < 0)
        return obi_error_set_errno(err, errno, "%s: open", path);
    struct stat now;
    int r = check_same_inode(ig, fd, st, &now, err);
    if (r < 0)
        return r;
    (void)posix_fadvise(fd, 0, 0, POSIX_FADV_SEQUENTIAL);

    if (ig->refscan)
        obi_refscan_end_stream(ig->refscan);
    /* The head of the file, and all of it when it is small. */
    ssize_t head = obi_read_full(fd, ig->buf, INGEST_SMALL_FILE + 1);
    if (head < 0)
        return obi_error_set_errno(err, (int)-head, "%s: read at offset 0", path);
    if (ig->refscan)
        obi_refscan_feed(ig->refscan, ig->buf, (size_t)head);
    uint64_t size = (uint64_t)head;
    obi_digest digest;
    bool stored = false;
    if (head <= INGEST_SMALL_FILE) {
        /* A small file the store already has needs no writer: re-ingesting an unchanged tree
         * (a rebuild's outputs) then creates no temporary file per file. */
        obi_blake3(ig->buf, (size_t)head, digest.bytes);
        cleanup_error obi_error *ignored = NULL;
        stored = obi_blob_has(ig->blobs, &digest, &ignored) == 1;
    }
    if (!stored && (r = write_blob(ig, fd, (size_t)head, &size, &digest, err)) < 0)
        return r;
    if (ig->refscan)
        obi_refscan_end_stream(ig->refscan);
    r = obi_node_init_file(out, node_name, strlen(node_name), &digest, size,
                           (now.st_mode & S_IXUSR) != 0);
    if (r < 0)
        return obi_error_set(err, r, "%s: out of memory", path);
    return 0;
}

static int ingest_symlink(ingest *ig, int dirfd, const char *name, const char *node_name,
                          obi_node *out, obi_error **err)
{
    const char *path = (char *)ig->path.data;
    char target[OBI_SYMLINK_TARGET_MAX + 1];
    ssize_t n = readlinkat(dirfd, name, target, sizeof target);
    if (n < 0)
        return obi_error_set_errno(err, errno, "%s: readlink", path);
    if ((size_t)n > OBI_SYMLINK_TARGET_MAX)
        return obi_error_set(err, -ENAMETOOLONG, "%s: symlink target longer than %d bytes", path,
                             OBI_SYMLINK_TARGET_MAX);
    if (n == 0)
        return obi_error_set(err, -EINVAL, "%s: empty symlink target", path);
    if (ig->refscan)
        obi_refscan_scan(ig->refscan, target, (size_t)n);
    int r = obi_node_init_symlink(out, node_name, strlen(node_name), target, (size_t)n);
    if (r < 0)
        return obi_error_set(err, r, "%s: out of memory", path);
    return 0;
}

static int compare_names(const void *a, const void *b)
{
    /* strcmp compares as unsigned char: bytewise order, as castore requires. */
    return strcmp(*(char *const *)a, *(char *const *)b);
}

/* The sorted names in an open directory (without "." and ".."). */
static int read_names(ingest *ig, DIR *dir, char ***out, size_t *n_out, obi_error **err)
{
    cleanup_strv char **names = NULL;
    size_t n = 0, cap = 0;
    for (;;) {
        errno = 0;
        struct dirent *de = readdir(dir);
        if (!de) {
            if (errno)
                return obi_error_set_errno(err, errno, "%s: readdir", (char *)ig->path.data);
            break;
        }
        if (!strcmp(de->d_name, ".") || !strcmp(de->d_name, ".."))
            continue;
        if (n + 2 > cap) {
            cap = cap ? 2 * cap : 16;
            char **grown = realloc(names, cap * sizeof *names);
            if (!grown)
                return obi_error_set(err, -ENOMEM, "%s: out of memory", (char *)ig->path.data);
            names = grown;
        }
        names[n] = strdup(de->d_name);
        if (!names[n])
            return obi_error_set(err, -ENOMEM, "%s: out of memory", (char *)ig->path.data);
        names[++n] = NULL;
    }
    if (n > 0)
        qsort(names, n, sizeof *names, compare_names);
    *out = steal_pointer(&names);
    *n_out = n;
    return 0;
}

static int ingest_directory(ingest *ig, int dirfd, const char *name, const struct stat *st,
                            const char *node_name, obi_node *out, obi_error **err)
{
    int fd = openat(dirfd, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
    if (fd < 0)
        return obi_error_set_errno(err, errno, "%s: open", (char *)ig->path.data);
    cleanup_dir DIR *dir = fdopendir(fd);
    if (!dir) {
        int saved = errno;
        close(fd);
        return obi_error_set_errno(err, saved, "%s: fdopendir", (char *)ig->path.data);
    }
    struct stat now;
    int r = check_same_inode(ig, fd, st, &now, err);
    if (r < 0)
        return r;
    cleanup_strv char **names = NULL;
    size_t n_names = 0;
    r = read_names(ig, dir, &names, &n_names, err);
    if (r < 0)
        return r;

    cleanup_directory obi_directory *directory = obi_directory_new();
    if (!directory)
        return obi_error_set(err, -ENOMEM, "%s: out of memory", (char *)ig->path.data);
    size_t path_len = ig->path.len;
    for (size_t i = 0; i < n_names; i++) {
        ig->path.len = path_len;
        if (obi_buf_append_str(&ig->path, "/") < 0 || obi_buf_append_str(&ig->path, names[i]) < 0)
            return obi_error_set(err, -ENOMEM, "out of memory");
        cleanup_node obi_node child = {0};
        r = ingest_entry(ig, fd, names[i], names[i], &child, err);
        if (r < 0)
            return r;
        if (obi_directory_add(directory, &child) < 0)
            return obi_error_set(err, -ENOMEM, "%s: out of memory", (char *)ig->path.data);
    }
    ig->path.len = path_len;
    ig->path.data[path_len] = 0;
    const char *path = (char *)ig->path.data;

    if (!ig->putter) {
        r = obi_directory_open_put(ig->directories, &ig->putter, err);
        if (r < 0)
            return obi_error_prefix(err, r, "%s", path);
    }
    obi_digest digest;
    r = obi_directory_put(ig->putter, directory, &digest, err);
    if (r < 0)
        return obi_error_prefix(err, r, "%s", path);
    r = obi_node_init_directory(out, node_name, strlen(node_name), &digest,
                                obi_directory_size(directory));
    if (r < 0)
        return obi_error_set(err, r, "%s: out of memory", path);
    return 0;
}

static int ingest_entry(ingest *ig, int dirfd, const char *name, const char *node_name,
                        obi_node *out, obi_error **err)
{
    struct stat st;
    if (fstatat(dirfd, name, &st, AT_SYMLINK_NOFOLLOW) < 0)
        return obi_error_set_errno(err, errno, "%s: stat", (char *)ig->path.data);
    switch (st.st_mode & S_IFMT) {
    case S_IFREG:
        return ingest_file(ig, dirfd, name, &st, node_name, out, err);
    case S_IFDIR:
        return ingest_directory(ig, dirfd, name, &st, node_name, out, err);
    case S_IFLNK:
        return ingest_symlink(ig, dirfd, name, node_name, out, err);
    default:
        return obi_error_set(err, -EINVAL, "%s: unsupported file type (%s)", (char *)ig->path.data,
                             file_type_name(st.st_mode));
    }
}

/* The path without trailing slashes (a trailing slash would make fstatat follow a symlink). */
static char *strip_trailing_slashes(const char *path)
{
    size_t len = strlen(path);
    while (len > 1 && path[len - 1] == '/')
        len--;
    return strndup(path, len);
}

/* The basename of a stripped path; for "." and ".." that of the real path. */
static int default_root_name(const char *path, char **out, obi_error **err)
{
    const char *slash = strrchr(path, '/');
    const char *base = slash ? slash + 1 : path;
    cleanup_free char *real = NULL;
    if (!strcmp(base, ".") || !strcmp(base, "..")) {
        real = realpath(path, NULL);
        if (!real)
            return obi_error_set_errno(err, errno, "%s: realpath", path);
        slash = strrchr(real, '/');
        base = slash ? slash + 1 : real;
    }
    if (!*base)
        return obi_error_set(err, -EINVAL, "%s: has no name to give the root node; pass one", path);
    *out = strdup(base);
    return *out ? 0 : obi_error_set(err, -ENOMEM, "out of memory");
}

int obi_ingest_path(obi_blob_service *blobs, obi_directory_service *directories, const char *path,
                    const obi_ingest_options *options, obi_node *out, obi_error **err)
{
    cleanup_free char *stripped = strip_trailing_slashes(path);
    if (!stripped)
        return obi_error_set(err, -ENOMEM, "out of memory");
    cleanup_free char *name = NULL;
    int r;
    if (options && options->name) {
        name = strdup(options->name);
        if (!name)
            return obi_error_set(err, -ENOMEM, "out of memory");
    } else if ((r = default_root_name(stripped, &name, err)) < 0) {
        return obi_error_prefix(err, r, "import");
    }
    r = obi_name_validate((const uint8_t *)name, strlen(name), "root node name", err);
    if (r < 0)
        return obi_error_prefix(err, r, "import %s", path);

    cleanup_free uint8_t *buf = malloc(INGEST_READ_SIZE);
    ingest ig = {
        .blobs = blobs,
        .directories = directories,
        .refscan = options ? options->refscan : NULL,
        .buf = buf,
    };
    if (!buf || obi_buf_append_str(&ig.path, stripped) < 0) {
        obi_buf_free(&ig.path);
        return obi_error_set(err, -ENOMEM, "out of memory");
    }
    cleanup_node obi_node root = {0};
    r = ingest_entry(&ig, AT_FDCWD, stripped, name, &root, err);
    /* the barrier: every blob durable before a directory refers to it, and before we return */
    if (r == 0 && (r = obi_blob_service_sync(blobs, err)) < 0)
        obi_error_prefix(err, r, "%s", stripped);
    if (r == 0 && ig.putter) {
        obi_digest committed;
        r = obi_directory_putter_finish(ig.putter, &committed, err);
        if (r < 0)
            obi_error_prefix(err, r, "%s: commit directories", stripped);
        else if (root.kind == OBI_NODE_DIRECTORY && !obi_digest_equal(&committed, &root.digest))
            r = obi_error_set(err, -EIO, "%s: directory service committed a different root",
                              stripped);
    }
    obi_directory_putter_close(ig.putter);
    obi_buf_free(&ig.path);
    if (r < 0)
        return obi_error_prefix(err, r, "import");
    *out = root;
    memset(&root, 0, sizeof root);
    return 0;
}
