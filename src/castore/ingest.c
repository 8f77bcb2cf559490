/*
 * Ingest (include/ocibuild/ingest.h): walks a filesystem tree depth first, in name order, with
 * the iterative walk of fs_walk.h (O(1) descriptors and stack, up to OBI_DIRECTORY_MAX_DEPTH
 * levels). Each entry is classified with fstatat(AT_SYMLINK_NOFOLLOW) and then opened with
 * O_NOFOLLOW relative to its directory's descriptor; the opened file is checked to be the same
 * inode, so a name swapped for a symlink or a fifo mid-walk is an error, never followed or
 * blocked on. The Directory being built for each level of the current path is kept on a stack.
 * Files are hashed before they are written wherever the store may have them: a small file (up
 * to 64 KiB) always, in memory; a large one when the store had the blob asked for last (a
 * re-import), in a pass over the file (after a miss, only every 16th small file asks the store).
 * A blob the store has is not written at all; a missing one is copied into a writer told its
 * digest (the on-disk store prepares it beside its final name), and the writer's own hash of
 * what it wrote must match (else the file changed: an error). Other large files stream through
 * the read buffer into a writer in one pass. Every byte goes to the optional reference scanner
 * once. Blobs are finished as pending (no fsync per file); directories are put leaves first
 * into one putter. At the end one barrier (obi_blob_service_sync) makes every blob durable, and
 * only then are the directories committed (docs/store.md, "Crash safety").
 */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "ocibuild/array.h"
#include "ocibuild/blake3.h"
#include "ocibuild/buf.h"
#include "ocibuild/cleanup.h"
#include "ocibuild/fs.h"
#include "ocibuild/fs_walk.h"
#include "ocibuild/ingest.h"

#define INGEST_READ_SIZE (1 << 20)
/* Files up to this size are read whole first and not written when the store has them. */
#define INGEST_SMALL_FILE (64 << 10)
/* After a miss, small files are written without asking the store, except every this many. */
#define INGEST_ASK_EVERY 16

typedef struct ingest {
    obi_blob_service *blobs;
    obi_directory_service *directories;
    obi_directory_putter *putter; /* opened at the first directory */
    obi_refscan_state *refscan;
    uint8_t *buf;          /* INGEST_READ_SIZE bytes */
    const char *root_name; /* the root node's name */
    const char *path;      /* the current entry's path, for messages */
    obi_directory **stack; /* stack[d]: the Directory being filled at depth d */
    size_t stack_cap;
    obi_node root;
    const obi_progress *progress; /* NULL: none */
    uint64_t bytes, files;        /* done so far, for progress */
    bool expect_stored; /* the store had the last blob asked for: hash large files first */
    unsigned unasked;   /* small files written without asking since the last miss */
} ingest;

static void report_progress(ingest *ig, uint64_t more_bytes, uint64_t more_files)
{
    ig->bytes += more_bytes;
    ig->files += more_files;
    obi_progress_report(ig->progress, ig->bytes, ig->files);
}

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
        return obi_error_set_errno(err, errno, "%s: fstat", ig->path);
    if (after->st_dev != before->st_dev || after->st_ino != before->st_ino ||
        (after->st_mode & S_IFMT) != (before->st_mode & S_IFMT))
        return obi_error_set(err, -EAGAIN, "%s: changed while being ingested", ig->path);
    return 0;
}

/* Writes the file's blob: the head already in ig->buf, then (when the head filled more than a
 * small file) the rest of fd, fed to the reference scanner as it goes. *size counts the bytes.
 * expected: the digest of the head when it is the whole file (NULL: not known). */
static int write_blob(ingest *ig, int fd, size_t head, const obi_digest *expected, uint64_t *size,
                      obi_digest *digest, obi_error **err)
{
    const char *path = ig->path;
    cleanup_blob_writer obi_blob_writer *writer = NULL;
    int r = expected ? obi_blob_open_write_expecting(ig->blobs, expected, &writer, err)
                     : obi_blob_open_write(ig->blobs, &writer, err);
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
        report_progress(ig, (uint64_t)n, 0);
    }
    r = obi_blob_finish_pending(writer, digest, err);
    if (r < 0)
        return obi_error_prefix(err, r, "%s", path);
    return 0;
}

/* Hashes the rest of a large file (its head is in ig->buf and counted in *size), feeding the
 * reference scanner: the digest the store is asked about before anything is written. */
static int hash_rest(ingest *ig, int fd, size_t head, uint64_t *size, obi_digest *digest,
                     obi_error **err)
{
    obi_blake3_hasher hasher;
    obi_blake3_init(&hasher);
    obi_blake3_update(&hasher, ig->buf, head);
    for (;;) {
        ssize_t n = read(fd, ig->buf, INGEST_READ_SIZE);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0)
            return obi_error_set_errno(err, errno, "%s: read at offset %llu", ig->path,
                                       (unsigned long long)*size);
        if (n == 0)
            break;
        obi_blake3_update(&hasher, ig->buf, (size_t)n);
        if (ig->refscan)
            obi_refscan_feed(ig->refscan, ig->buf, (size_t)n);
        *size += (uint64_t)n;
        report_progress(ig, (uint64_t)n, 0);
    }
    obi_blake3_finalize(&hasher, digest->bytes, OBI_DIGEST_LEN);
    return 0;
}

/* Copies a large file the store lacks into it, after hash_rest. The writer hashes what it
 * writes: contents that changed since they were hashed are an error, and what the store got
 * is named by its own digest either way (never by the expected one). */
static int copy_blob(ingest *ig, int fd, const obi_digest *expected, uint64_t size, obi_error **err)
{
    const char *path = ig->path;
    cleanup_blob_writer obi_blob_writer *writer = NULL;
    int r = obi_blob_open_write_expecting(ig->blobs, expected, &writer, err);
    if (r < 0)
        return obi_error_prefix(err, r, "%s", path);
    uint64_t copied = 0;
    for (;;) {
        ssize_t n = pread(fd, ig->buf, INGEST_READ_SIZE, (off_t)copied);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0)
            return obi_error_set_errno(err, errno, "%s: read at offset %llu", path,
                                       (unsigned long long)copied);
        if (n == 0)
            break;
        r = obi_blob_write(writer, ig->buf, (size_t)n, err);
        if (r < 0)
            return obi_error_prefix(err, r, "%s", path);
        copied += (uint64_t)n;
    }
    obi_digest digest;
    r = obi_blob_finish_pending(writer, &digest, err);
    if (r < 0)
        return obi_error_prefix(err, r, "%s", path);
    if (copied != size || !obi_digest_equal(&digest, expected))
        return obi_error_set(err, -EAGAIN,
                             "%s: changed while being ingested (%llu bytes hashed, "
                             "%llu then copied with other contents)",
                             path, (unsigned long long)size, (unsigned long long)copied);
    return 0;
}

/* The head of the file into ig->buf, all of it when it is small: one read for a small file
 * whose size fstat told (no second read to see the end). */
static ssize_t read_head(ingest *ig, int fd, const struct stat *st)
{
    size_t want = INGEST_SMALL_FILE + 1;
    ssize_t n;
    do
        n = read(fd, ig->buf, want);
    while (n < 0 && errno == EINTR);
    if (n < 0)
        return -errno;
    if (n == 0 || (n == st->st_size && (size_t)n < want))
        return n;
    ssize_t more = obi_read_full(fd, ig->buf + n, want - (size_t)n);
    return more < 0 ? more : n + more;
}

static int ingest_file(ingest *ig, int dirfd, const char *name, const struct stat *st,
                       const char *node_name, obi_node *out, obi_error **err)
{
    const char *path = ig->path;
    /* O_NONBLOCK: if the file was swapped for a fifo, opening must not hang. */
    cleanup_close int fd =
        openat(dirfd, name, O_RDONLY | O_NOFOLLOW | O_CLOEXEC | O_NOCTTY | O_NONBLOCK);
    if (fd < 0)
        return obi_error_set_errno(err, errno, "%s: open", path);
    struct stat now;
    int r = check_same_inode(ig, fd, st, &now, err);
    if (r < 0)
        return r;
    if (now.st_size > INGEST_SMALL_FILE)
        (void)posix_fadvise(fd, 0, 0, POSIX_FADV_SEQUENTIAL);

    if (ig->refscan)
        obi_refscan_end_stream(ig->refscan);
    ssize_t head = read_head(ig, fd, &now);
    if (head < 0)
        return obi_error_set_errno(err, (int)-head, "%s: read at offset 0", path);
    if (ig->refscan)
        obi_refscan_feed(ig->refscan, ig->buf, (size_t)head);
    uint64_t size = (uint64_t)head;
    report_progress(ig, (uint64_t)head, 0);
    obi_digest digest;
    cleanup_error obi_error *ignored = NULL;
    if (head <= INGEST_SMALL_FILE) {
        /* A small file is hashed in memory first; one the store has is not written again (a
         * rebuild's unchanged outputs create no temporary file). */
        obi_blake3(ig->buf, (size_t)head, digest.bytes);
        /* Into a store that lacks what it was asked for (a fresh import), most are written
         * without asking (a blob it did have is dropped when published: same contents); every
         * INGEST_ASK_EVERY-th still asks, so that a tree the store has again is noticed. */
        bool stored = false;
        if (ig->expect_stored || ++ig->unasked >= INGEST_ASK_EVERY) {
            ig->unasked = 0;
            stored = ig->expect_stored = obi_blob_has(ig->blobs, &digest, &ignored) == 1;
        }
        if (!stored && (r = write_blob(ig, fd, (size_t)head, &digest, &size, &digest, err)) < 0)
            return r;
    } else if (ig->expect_stored) {
        /* A large file while the store had what was asked last (a re-import): hashed first,
         * copied only if missing. */
        r = hash_rest(ig, fd, (size_t)head, &size, &digest, err);
        if (r < 0)
            return r;
        ig->expect_stored = obi_blob_has(ig->blobs, &digest, &ignored) == 1;
        if (!ig->expect_stored && (r = copy_blob(ig, fd, &digest, size, err)) < 0)
            return r;
    } else if ((r = write_blob(ig, fd, (size_t)head, NULL, &size, &digest, err)) < 0) {
        /* A large file into a store that lacked the last one asked for: one pass */
        return r;
    }
    report_progress(ig, 0, 1);
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
    const char *path = ig->path;
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

/* Hands a finished node to the Directory one level up, or keeps it as the root. */
static int add_to_parent(ingest *ig, size_t depth, obi_node *node, obi_error **err)
{
    if (depth == 0) {
        ig->root = *node;
        memset(node, 0, sizeof *node);
        return 0;
    }
    if (obi_directory_append_owned(ig->stack[depth - 1], node) < 0)
        return obi_error_set(err, -ENOMEM, "%s: out of memory", ig->path);
    return 0;
}

static int ingest_enter(void *ctx, const obi_walk_entry *e, obi_error **err)
{
    ingest *ig = ctx;
    ig->path = e->path;
    const char *node_name = e->depth == 0 ? ig->root_name : e->name;
    cleanup_node obi_node node = {0};
    int r;
    switch (e->st->st_mode & S_IFMT) {
    case S_IFREG:
        r = ingest_file(ig, e->dirfd, e->name, e->st, node_name, &node, err);
        break;
    case S_IFLNK:
        r = ingest_symlink(ig, e->dirfd, e->name, node_name, &node, err);
        break;
    case S_IFDIR:
        if (obi_array_grow(&ig->stack, &ig->stack_cap, e->depth + 1) < 0) /* new slots NULL */
            return obi_error_oom(err);
        ig->stack[e->depth] = obi_directory_new();
        return ig->stack[e->depth] ? 0 : obi_error_oom(err);
    default:
        return obi_error_set(err, -EINVAL, "%s: unsupported file type (%s)", e->path,
                             file_type_name(e->st->st_mode));
    }
    return r < 0 ? r : add_to_parent(ig, e->depth, &node, err);
}

/* A directory whose entries are all in: put it, and add its node one level up. */
static int ingest_leave(void *ctx, const obi_walk_entry *e, obi_error **err)
{
    ingest *ig = ctx;
    ig->path = e->path;
    cleanup_directory obi_directory *directory = ig->stack[e->depth];
    ig->stack[e->depth] = NULL;
    int r;
    if (!ig->putter && (r = obi_directory_open_put(ig->directories, &ig->putter, err)) < 0)
        return obi_error_prefix(err, r, "%s", e->path);
    obi_digest digest;
    r = obi_directory_put(ig->putter, directory, &digest, err);
    if (r < 0)
        return obi_error_prefix(err, r, "%s", e->path);
    const char *node_name = e->depth == 0 ? ig->root_name : e->name;
    cleanup_node obi_node node = {0};
    r = obi_node_init_directory(&node, node_name, strlen(node_name), &digest,
                                obi_directory_size(directory));
    if (r < 0)
        return obi_error_set(err, r, "%s: out of memory", e->path);
    return add_to_parent(ig, e->depth, &node, err);
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
    return *out ? 0 : obi_error_oom(err);
}

int obi_ingest_at(obi_blob_service *blobs, obi_directory_service *directories, int dirfd,
                  const char *name, const char *display, const obi_ingest_options *options,
                  obi_node *out, obi_error **err)
{
    const char *root_name = options && options->name ? options->name : name;
    if (!display)
        display = name;
    int r = obi_name_validate((const uint8_t *)root_name, strlen(root_name), "root node name", err);
    if (r < 0)
        return obi_error_prefix(err, r, "import %s", display);
    cleanup_free uint8_t *buf = malloc(INGEST_READ_SIZE);
    if (!buf)
        return obi_error_oom(err);
    ingest ig = {
        .blobs = blobs,
        .directories = directories,
        .refscan = options ? options->refscan : NULL,
        .buf = buf,
        .root_name = root_name,
        .path = display,
        .progress = options ? options->progress : NULL,
        .expect_stored = true,
    };
    obi_walk_options walk = {
        .enter = ingest_enter,
        .leave = ingest_leave,
        .sorted = true, /* castore lists are in bytewise name order */
        .max_levels = OBI_DIRECTORY_MAX_DEPTH,
        .display = display,
    };
    r = obi_walk(dirfd, name, &walk, &ig, err);
    for (size_t i = 0; i < ig.stack_cap; i++)
        obi_directory_free(ig.stack[i]);
    free(ig.stack);
    /* the barrier: every blob durable before a directory refers to it, and before we return */
    if (r == 0 && (r = obi_blob_service_sync(blobs, err)) < 0)
        obi_error_prefix(err, r, "%s", display);
    if (r == 0 && ig.putter) {
        obi_digest committed;
        r = obi_directory_putter_finish(ig.putter, &committed, err);
        if (r < 0)
            obi_error_prefix(err, r, "%s: commit directories", display);
        else if (ig.root.kind == OBI_NODE_DIRECTORY &&
                 !obi_digest_equal(&committed, &ig.root.digest))
            r = obi_error_set(err, -EIO, "%s: directory service committed a different root",
                              display);
    }
    obi_directory_putter_close(ig.putter);
    if (r < 0) {
        obi_node_clear(&ig.root);
        return obi_error_prefix(err, r, "import");
    }
    *out = ig.root;
    return 0;
}

int obi_ingest_path(obi_blob_service *blobs, obi_directory_service *directories, const char *path,
                    const obi_ingest_options *options, obi_node *out, obi_error **err)
{
    cleanup_free char *stripped = strip_trailing_slashes(path);
    if (!stripped)
        return obi_error_oom(err);
    cleanup_free char *name = NULL;
    int r;
    if (options && options->name) {
        name = strdup(options->name);
        if (!name)
            return obi_error_oom(err);
    } else if ((r = default_root_name(stripped, &name, err)) < 0) {
        return obi_error_prefix(err, r, "import");
    }
    obi_ingest_options named = options ? *options : (obi_ingest_options){0};
    named.name = name;
    /* The caller's path is resolved as given; everything below it through descriptors. */
    return obi_ingest_at(blobs, directories, AT_FDCWD, stripped, stripped, &named, out, err);
}
