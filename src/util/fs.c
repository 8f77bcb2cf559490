/*
 * Filesystem helpers (see include/ocibuild/fs.h). The tree operations (remove, chown, make
 * readable) run on the iterative walk of fs_walk.h: *at() calls on the holding directory's fd
 * with AT_SYMLINK_NOFOLLOW, O(1) descriptors and stack at any depth. obi_rm_rf is used on bundle
 * directories that may still hold bind mounts after a crash, so it stops at filesystem
 * boundaries instead of deleting through a mount into the host.
 */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <linux/fs.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <unistd.h>

#include "ocibuild/buf.h"
#include "ocibuild/cleanup.h"
#include "ocibuild/fs.h"
#include "ocibuild/fs_walk.h"
#include "ocibuild/process.h"

int obi_write_all(int fd, const void *data, size_t len)
{
    const uint8_t *p = data;
    while (len > 0) {
        ssize_t n = write(fd, p, len);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            return -errno;
        }
        p += n;
        len -= (size_t)n;
    }
    return 0;
}

ssize_t obi_read_full(int fd, void *data, size_t len)
{
    uint8_t *p = data;
    size_t got = 0;
    while (got < len) {
        ssize_t n = read(fd, p + got, len - got);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            return -errno;
        }
        if (n == 0)
            break;
        got += (size_t)n;
    }
    return (ssize_t)got;
}

int obi_mkdir_p(const char *path, mode_t mode, obi_error **err)
{
    /* Most calls find the directory there (the bundle root, the caches, on every build): one
     * stat instead of a failing mkdir per component. */
    struct stat existing;
    if (stat(path, &existing) == 0 && S_ISDIR(existing.st_mode))
        return 0;
    cleanup_free char *copy = strdup(path);
    if (!copy)
        return obi_error_set(err, -ENOMEM, "mkdir %s: out of memory", path);
    for (char *p = copy + 1; *p; p++) {
        if (*p != '/')
            continue;
        *p = 0;
        if (mkdir(copy, mode) < 0 && errno != EEXIST)
            return obi_error_set_errno(err, errno, "mkdir %s", copy);
        *p = '/';
    }
    if (mkdir(copy, mode) < 0) {
        if (errno != EEXIST)
            return obi_error_set_errno(err, errno, "mkdir %s", copy);
        struct stat st;
        if (stat(copy, &st) < 0 || !S_ISDIR(st.st_mode))
            return obi_error_set(err, -ENOTDIR, "mkdir %s: exists and is not a directory", copy);
    }
    return 0;
}

/* ---- trees, walked with O(1) descriptors (fs_walk.h) ---- */

typedef struct rm_rf_walk {
    dev_t dev;                  /* the start's filesystem: never removed through a mount point */
    bool keep_top;              /* the start is a directory that stays, emptied */
    void (*emptied)(void *ctx); /* called before the start itself is removed (may be NULL) */
    void *emptied_ctx;
} rm_rf_walk;

static int rm_rf_enter(void *ctx, const obi_walk_entry *e, obi_error **err)
{
    rm_rf_walk *rm = ctx;
    if (e->depth == 0) {
        rm->dev = e->st->st_dev;
        if (rm->keep_top && !S_ISDIR(e->st->st_mode))
            return obi_error_set(err, -ENOTDIR, "empty %s: not a directory", e->path);
    }
    if (!S_ISDIR(e->st->st_mode)) {
        if (unlinkat(e->dirfd, e->name, 0) < 0 && errno != ENOENT)
            return obi_error_set_errno(err, errno, "remove %s", e->path);
        return 0;
    }
    if (e->st->st_dev != rm->dev)
        return obi_error_set(err, -EBUSY, "remove %s: is a mount point, not removing through it",
                             e->path);
    /* AT_SYMLINK_NOFOLLOW: if the name was swapped for a symlink, nothing is followed. A kept
     * top keeps its mode too. */
    if ((e->st->st_mode & 0700) != 0700 && !(rm->keep_top && e->depth == 0) &&
        fchmodat(e->dirfd, e->name, (e->st->st_mode & 07777) | 0700, AT_SYMLINK_NOFOLLOW) < 0 &&
        errno != ENOENT)
        return obi_error_set_errno(err, errno, "remove %s: chmod", e->path);
    return 0;
}

static int rm_rf_leave(void *ctx, const obi_walk_entry *e, obi_error **err)
{
    const rm_rf_walk *rm = ctx;
    if (e->depth == 0 && rm->keep_top)
        return 0;
    if (e->depth == 0 && rm->emptied)
        rm->emptied(rm->emptied_ctx);
    if (unlinkat(e->dirfd, e->name, AT_REMOVEDIR) < 0 && errno != ENOENT)
        return obi_error_set_errno(err, errno, "remove %s", e->path);
    return 0;
}

/* The one removal walk: name and everything below it, or (keep_top) only what is below it. */
static int rm_walk(int dirfd, const char *name, const char *display, rm_rf_walk *rm,
                   obi_error **err)
{
    obi_walk_options opts = {
        .enter = rm_rf_enter,
        .leave = rm_rf_leave,
        .skip_vanished = true,
        .display = display,
    };
    return obi_walk(dirfd, name, &opts, rm, err);
}

int obi_rm_rf_at(int dirfd, const char *name, const char *display, obi_error **err)
{
    return obi_rm_rf_at_emptied(dirfd, name, display, NULL, NULL, err);
}

int obi_rm_rf_at_emptied(int dirfd, const char *name, const char *display,
                         void (*emptied)(void *ctx), void *ctx, obi_error **err)
{
    rm_rf_walk rm = {.emptied = emptied, .emptied_ctx = ctx};
    return rm_walk(dirfd, name, display, &rm, err);
}

int obi_empty_dir_at(int dirfd, const char *name, const char *display, obi_error **err)
{
    rm_rf_walk rm = {.keep_top = true};
    return rm_walk(dirfd, name, display, &rm, err);
}

typedef struct chown_walk {
    uid_t uid;
    gid_t gid;
} chown_walk;

static int chown_enter(void *ctx, const obi_walk_entry *e, obi_error **err)
{
    const chown_walk *ids = ctx;
    if (fchownat(e->dirfd, e->name, ids->uid, ids->gid, AT_SYMLINK_NOFOLLOW) < 0)
        return obi_error_set_errno(err, errno, "chown %s", e->path);
    return 0;
}

int obi_chown_tree_at(int dirfd, const char *name, uid_t uid, gid_t gid, const char *display,
                      obi_error **err)
{
    chown_walk ids = {uid, gid};
    obi_walk_options opts = {.enter = chown_enter, .display = display};
    return obi_walk(dirfd, name, &opts, &ids, err);
}

static int readable_enter(void *ctx, const obi_walk_entry *e, obi_error **err)
{
    (void)ctx;
    if (S_ISLNK(e->st->st_mode))
        return 0;
    mode_t mode = e->st->st_mode & 07777;
    mode_t want = mode | S_IRUSR | S_IWUSR | S_IRGRP | S_IROTH;
    if (S_ISDIR(e->st->st_mode))
        want |= S_IXUSR | S_IXGRP | S_IXOTH;
    /* Before a directory is opened, so it is readable by then. AT_SYMLINK_NOFOLLOW: a name
     * swapped for a symlink since the walk's fstatat is refused, never followed. */
    if (want != mode && fchmodat(e->dirfd, e->name, want, AT_SYMLINK_NOFOLLOW) < 0)
        return obi_error_set_errno(err, errno, "chmod %s", e->path);
    return 0;
}

int obi_make_tree_readable_at(int dirfd, const char *name, const char *display, obi_error **err)
{
    obi_walk_options opts = {.enter = readable_enter, .display = display};
    return obi_walk(dirfd, name, &opts, NULL, err);
}

typedef struct tree_usage {
    uint64_t files, bytes;
} tree_usage;

static int usage_enter(void *ctx, const obi_walk_entry *entry, obi_error **err)
{
    (void)err;
    tree_usage *usage = ctx;
    if (!S_ISDIR(entry->st->st_mode))
        usage->files++;
    usage->bytes += (uint64_t)entry->st->st_blocks * 512;
    return 0;
}

int obi_tree_usage_at(int dirfd, const char *name, uint64_t *files, uint64_t *bytes,
                      obi_error **err)
{
    tree_usage usage = {0, 0};
    obi_walk_options opts = {.enter = usage_enter, .skip_vanished = true};
    int r = obi_walk(dirfd, name, &opts, &usage, err);
    if (r == -ENOENT && faccessat(dirfd, name, F_OK, AT_SYMLINK_NOFOLLOW) < 0)
        r = 0; /* nothing there: nothing used */
    if (r < 0)
        return r;
    *files = usage.files;
    *bytes = usage.bytes;
    return 0;
}

int obi_mark_top_directory(const char *path, obi_error **err)
{
    cleanup_close int fd = open(path, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
    if (fd < 0)
        return obi_error_set_errno(err, errno, "open %s", path);
    int flags = 0;
    if (ioctl(fd, FS_IOC_GETFLAGS, &flags) < 0)
        return 0; /* no inode flags here (tmpfs, overlayfs...): nothing to do */
    if (flags & FS_TOPDIR_FL)
        return 0;
    flags |= FS_TOPDIR_FL;
    /* A hint: a filesystem without the flag (EOPNOTSUPP, EINVAL) or a directory we do not own
     * (EPERM) only misses the placement. */
    (void)ioctl(fd, FS_IOC_SETFLAGS, &flags);
    return 0;
}

int obi_rm_rf(const char *path, obi_error **err)
{
    cleanup_free char *parent = strdup(path);
    if (!parent)
        return obi_error_oom(err);
    size_t len = strlen(parent);
    while (len > 1 && parent[len - 1] == '/')
        parent[--len] = 0;
    char *slash = strrchr(parent, '/');
    const char *name = parent;
    const char *dir = ".";
    if (slash == parent) {
        dir = "/";
        name = slash + 1;
    } else if (slash) {
        *slash = 0;
        dir = parent;
        name = slash + 1;
    }
    cleanup_close int dir_fd = open(dir, O_PATH | O_DIRECTORY | O_CLOEXEC);
    if (dir_fd < 0) {
        if (errno == ENOENT)
            return 0;
        return obi_error_set_errno(err, errno, "remove %s", path);
    }
    return obi_rm_rf_at(dir_fd, name, path, err);
}

/* obi_read_file reads at least this much at a time (the buffer doubles as it fills). */
#define READ_FILE_CHUNK 4096

int obi_read_file(const char *path, size_t max_len, char **out, size_t *out_len, obi_error **err)
{
    cleanup_close int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return obi_error_set_errno(err, errno, "open %s", path);
    cleanup_buf obi_buf data = OBI_BUF_INIT;
    for (;;) {
        if (obi_buf_reserve(&data, READ_FILE_CHUNK) < 0)
            return obi_error_set(err, -ENOMEM, "read %s: out of memory", path);
        ssize_t n = read(fd, data.data + data.len, data.cap - data.len - 1);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            return obi_error_set_errno(err, errno, "read %s", path);
        }
        if (n == 0)
            break;
        data.len += (size_t)n;
        if (data.len > max_len)
            return obi_error_set(err, -EFBIG, "read %s: larger than %zu bytes", path, max_len);
    }
    if (out_len)
        *out_len = data.len;
    *out = obi_buf_steal(&data); /* NUL-terminated; not NULL: reserve allocated */
    return 0;
}

int obi_read_file_tail(const char *path, size_t max_len, char **out, size_t *out_len,
                       obi_error **err)
{
    cleanup_close int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return obi_error_set_errno(err, errno, "open %s", path);
    struct stat st;
    if (fstat(fd, &st) < 0)
        return obi_error_set_errno(err, errno, "stat %s", path);
    off_t start = st.st_size > (off_t)max_len ? st.st_size - (off_t)max_len : 0;
    size_t want = (size_t)(st.st_size - start);
    cleanup_free char *data = malloc(want + 1);
    if (!data)
        return obi_error_set(err, -ENOMEM, "read %s: out of memory", path);
    ssize_t n = pread(fd, data, want, start);
    if (n < 0)
        return obi_error_set_errno(err, errno, "read %s", path);
    data[n] = 0;
    *out = steal_pointer(&data);
    if (out_len)
        *out_len = (size_t)n;
    return 0;
}

int obi_write_file(const char *path, const void *data, size_t len, mode_t mode, obi_error **err)
{
    cleanup_close int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC | O_NOFOLLOW, mode);
    if (fd < 0)
        return obi_error_set_errno(err, errno, "create %s", path);
    int r = obi_write_all(fd, data, len);
    if (r < 0)
        return obi_error_set_errno(err, -r, "write %s", path);
    if (close(steal_fd(&fd)) < 0)
        return obi_error_set_errno(err, errno, "close %s", path);
    return 0;
}

/* Whether the open file fd, found in a directory on dir_dev, may be rewritten in place: a
 * regular file of this process's user with exactly mode, no other name, on that filesystem,
 * and open nowhere else (a write lease is granted only then: no other descriptor, no mapping,
 * so nobody who had it open before sees what is written now). */
static bool private_file(int fd, dev_t dir_dev, mode_t mode)
{
    struct stat st;
    if (fstat(fd, &st) < 0 || !S_ISREG(st.st_mode) || st.st_uid != geteuid() || st.st_nlink != 1 ||
        st.st_dev != dir_dev || (st.st_mode & 07777) != mode)
        return false;
    if (fcntl(fd, F_SETLEASE, F_WRLCK) < 0)
        return false;
    (void)fcntl(fd, F_SETLEASE, F_UNLCK);
    return true;
}

int obi_rewrite_file_at(int dirfd, const char *name, const void *data, size_t len, mode_t mode,
                        const char *display, obi_error **err)
{
    if (!display)
        display = name;
    struct stat dir_st;
    if (fstat(dirfd, &dir_st) < 0)
        return obi_error_set_errno(err, errno, "write %s: stat its directory", display);
    /* O_NONBLOCK: a FIFO in its place must not block the open. */
    cleanup_close int fd =
        openat(dirfd, name, O_WRONLY | O_NOFOLLOW | O_NONBLOCK | O_NOCTTY | O_CLOEXEC);
    if (fd >= 0 && !private_file(fd, dir_st.st_dev, mode))
        close(steal_fd(&fd));
    if (fd < 0) {
        /* Whatever is there instead (a symlink, a FIFO, a directory, another's file, a second
         * name of some file) is removed, never followed, and the file made new. */
        int r = obi_rm_rf_at(dirfd, name, display, err);
        if (r < 0)
            return r;
        fd = openat(dirfd, name, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, mode);
        if (fd < 0)
            return obi_error_set_errno(err, errno, "create %s", display);
        if (fchmod(fd, mode) < 0) /* the umask's bits back, so that the next rewrite reuses it */
            return obi_error_set_errno(err, errno, "chmod %s", display);
    }
    /* Over the old bytes, then cut: the blocks it has stay allocated (no free and new
     * allocation per rewrite). */
    int r = obi_write_all(fd, data, len);
    if (r == 0 && ftruncate(fd, (off_t)len) < 0)
        r = -errno;
    if (r < 0)
        return obi_error_set_errno(err, -r, "write %s", display);
    if (close(steal_fd(&fd)) < 0)
        return obi_error_set_errno(err, errno, "close %s", display);
    return 0;
}

int obi_rewrite_file(const char *path, const void *data, size_t len, mode_t mode, obi_error **err)
{
    cleanup_free char *dir = strdup(path);
    if (!dir)
        return obi_error_oom(err);
    char *slash = strrchr(dir, '/');
    const char *name = slash ? path + (slash - dir) + 1 : path;
    const char *parent = !slash ? "." : slash == dir ? "/" : dir;
    if (slash && slash != dir)
        *slash = 0;
    cleanup_close int dir_fd = open(parent, O_PATH | O_DIRECTORY | O_CLOEXEC);
    if (dir_fd < 0)
        return obi_error_set_errno(err, errno, "write %s: open its directory", path);
    return obi_rewrite_file_at(dir_fd, name, data, len, mode, path, err);
}

int obi_fsync_dir(const char *dir, obi_error **err)
{
    cleanup_close int fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0)
        return obi_error_set_errno(err, errno, "open %s", dir);
    if (fsync(fd) < 0 && errno != EINVAL)
        return obi_error_set_errno(err, errno, "fsync %s", dir);
    return 0;
}

int obi_write_file_atomic(const char *path, const void *data, size_t len, mode_t mode,
                          obi_error **err)
{
    cleanup_free char *dir = strdup(path);
    cleanup_free char *tmp = NULL;
    if (!dir)
        return obi_error_oom(err);
    char *slash = strrchr(dir, '/');
    if (slash == dir)
        slash[1] = 0;
    else if (slash)
        *slash = 0;
    else
        strcpy(dir, ".");
    if (asprintf(&tmp, "%s.tmp.%ld.XXXXXX", path, (long)getpid()) < 0)
        return obi_error_oom(err);
    cleanup_close int fd = mkostemp(tmp, O_CLOEXEC);
    if (fd < 0)
        return obi_error_set_errno(err, errno, "create temporary file for %s", path);
    int r = obi_write_all(fd, data, len);
    if (r == 0 && fchmod(fd, mode) < 0)
        r = -errno;
    if (r == 0 && fsync(fd) < 0)
        r = -errno;
    if (r == 0 && close(steal_fd(&fd)) < 0)
        r = -errno;
    if (r == 0 && rename(tmp, path) < 0)
        r = -errno;
    if (r < 0) {
        unlink(tmp);
        return obi_error_set_errno(err, -r, "write %s", path);
    }
    return obi_fsync_dir(dir, err);
}

char *obi_path_join(const char *a, const char *b)
{
    while (*b == '/')
        b++;
    size_t la = strlen(a);
    while (la > 1 && a[la - 1] == '/')
        la--;
    char *out = NULL;
    if (asprintf(&out, "%.*s/%s", (int)la, a, b) < 0)
        return NULL;
    return out;
}

char *obi_default_data_dir(void)
{
    const char *env = getenv("OCIBUILD_DATA_DIR");
    if (env && *env)
        return strdup(env);
    if (geteuid() == 0)
        return strdup("/var/lib/ocibuild");
    char *out = NULL;
    const char *xdg = getenv("XDG_DATA_HOME");
    if (xdg && *xdg) {
        if (asprintf(&out, "%s/ocibuild", xdg) < 0)
            return NULL;
        return out;
    }
    const char *home = getenv("HOME");
    if (asprintf(&out, "%s/.local/share/ocibuild", home && *home ? home : "/tmp") < 0)
        return NULL;
    return out;
}

int obi_fusermount_unmount(const char *path, obi_error **err)
{
    char *argv[] = {"fusermount3", "-u", "-z", (char *)path, NULL};
    cleanup_free char *output = NULL;
    int code = 0;
    int r = obi_run_capture(argv, true, 4096, &output, &code, err);
    if (r < 0)
        return obi_error_prefix(err, r, "unmount %s with fusermount3", path);
    if (code != 0) {
        output[strcspn(output, "\n")] = 0;
        return obi_error_set(err, -EPERM, "fusermount3 -u -z %s: exit code %d: %s", path, code,
                             output);
    }
    return 0;
}
