/*
 * Paths beneath a directory, never through a symlink (see include/ocibuild/beneath.h): openat2
 * with RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS where the kernel has it, else (and to name the
 * failing component in an error) a walk of openat(O_PATH | O_DIRECTORY | O_NOFOLLOW) from dirfd,
 * one component at a time, holding at most two descriptors.
 */
#include <errno.h>
#include <fcntl.h>
#include <linux/openat2.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "ocibuild/beneath.h"
#include "ocibuild/cleanup.h"

/* -1: not decided yet, 0: openat2, 1: the component walk. */
static int lookup_mode = -1;

void obi_beneath_force_fallback(bool on)
{
    __atomic_store_n(&lookup_mode, on ? 1 : -1, __ATOMIC_RELAXED);
}

static bool use_walk(void)
{
    int mode = __atomic_load_n(&lookup_mode, __ATOMIC_RELAXED);
    if (mode < 0) {
        const char *env = getenv("OCIBUILD_BENEATH_FALLBACK");
        mode = env && !strcmp(env, "1") ? 1 : 0;
        __atomic_store_n(&lookup_mode, mode, __ATOMIC_RELAXED);
    }
    return mode == 1;
}

bool obi_beneath_path_is_clean(const char *path)
{
    if (!path || !*path || *path == '/')
        return false;
    for (const char *p = path;;) {
        const char *end = strchrnul(p, '/');
        size_t len = (size_t)(end - p);
        if (len == 0 || (len == 1 && p[0] == '.') || (len == 2 && p[0] == '.' && p[1] == '.'))
            return false;
        if (!*end)
            return true;
        p = end + 1;
    }
}

/* The error for component path[0..end) that failed with errno e: a symlink or a non-directory
 * on the way is named as such. */
static int component_error(int parent_fd, const char *name, int e, const char *display,
                           const char *path, size_t end, obi_error **err)
{
    const char *sep = display && *display ? "/" : "";
    const char *shown = display ? display : "";
    struct stat st;
    if ((e == ELOOP || e == ENOTDIR) && fstatat(parent_fd, name, &st, AT_SYMLINK_NOFOLLOW) == 0) {
        if (S_ISLNK(st.st_mode))
            return obi_error_set(err, -ELOOP, "%s%s%.*s: is a symlink, not followed", shown, sep,
                                 (int)end, path);
        if (e == ENOTDIR && !S_ISDIR(st.st_mode))
            return obi_error_set(err, -ENOTDIR, "%s%s%.*s: is not a directory", shown, sep,
                                 (int)end, path);
    }
    return obi_error_set_errno(err, e, "%s%s%.*s", shown, sep, (int)end, path);
}

static int dup_fd(int fd, int *out, obi_error **err)
{
    int copy = fcntl(fd, F_DUPFD_CLOEXEC, 0);
    if (copy < 0)
        return obi_error_set_errno(err, errno, "dup");
    *out = copy;
    return 0;
}

/* The component walk: every component but the last through openat(O_PATH | O_DIRECTORY |
 * O_NOFOLLOW), creating it first when mode is not 0 (mkdirs). *parent_fd: the directory that
 * holds the last component, *last_out: offset of that component in path. With create, the last
 * component is walked into too and *parent_fd is it (last_out is then strlen(path)). */
static int walk(int dirfd, const char *path, bool create, mode_t mode, const char *display,
                int *parent_fd, size_t *last_out, obi_error **err)
{
    cleanup_free char *copy = strdup(path);
    if (!copy)
        return obi_error_oom(err);
    cleanup_close int cur = -1;
    char *p = copy;
    for (;;) {
        char *slash = strchr(p, '/');
        if (!slash && !create)
            break;
        if (slash)
            *slash = 0;
        int at = cur >= 0 ? cur : dirfd;
        size_t end = (size_t)(p - copy) + strlen(p);
        if (create && mkdirat(at, p, mode) < 0 && errno != EEXIST)
            return component_error(at, p, errno, display, path, end, err);
        int next = openat(at, p, O_PATH | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
        if (next < 0)
            return component_error(at, p, errno, display, path, end, err);
        if (cur >= 0)
            close(cur);
        cur = next;
        if (!slash) {
            p += strlen(p);
            break;
        }
        p = slash + 1;
    }
    if (cur < 0) {
        int r = dup_fd(dirfd, &cur, err);
        if (r < 0)
            return r;
    }
    *parent_fd = steal_fd(&cur);
    *last_out = (size_t)(p - copy);
    return 0;
}

static int walk_open(int dirfd, const char *path, int flags, mode_t mode, const char *display,
                     int *fd_out, obi_error **err)
{
    cleanup_close int parent = -1;
    size_t last = 0;
    int r = walk(dirfd, path, false, 0, display, &parent, &last, err);
    if (r < 0)
        return r;
    int fd = openat(parent, path + last, flags | O_NOFOLLOW | O_CLOEXEC, mode);
    if (fd < 0)
        return component_error(parent, path + last, errno, display, path, strlen(path), err);
    *fd_out = fd;
    return 0;
}

static int openat2_beneath(int dirfd, const char *path, int flags, mode_t mode)
{
    struct open_how how = {
        .flags = (unsigned long long)(flags | O_NOFOLLOW | O_CLOEXEC),
        .mode = (flags & (O_CREAT | O_TMPFILE)) ? mode : 0,
        .resolve = RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS,
    };
    long fd = syscall(SYS_openat2, dirfd, path, &how, sizeof how);
    return fd < 0 ? -errno : (int)fd;
}

int obi_beneath_open(int dirfd, const char *path, int flags, mode_t mode, const char *display,
                     int *fd_out, obi_error **err)
{
    if (!obi_beneath_path_is_clean(path))
        return obi_error_set(err, -EINVAL, "%s%s\"%s\": not a clean relative path",
                             display ? display : "", display ? ": " : "", path);
    int fd = -ENOSYS;
    if (!use_walk()) {
        fd = openat2_beneath(dirfd, path, flags, mode);
        if (fd == -ENOSYS)
            __atomic_store_n(&lookup_mode, 1, __ATOMIC_RELAXED);
    }
    if (fd == -ENOSYS || fd == -EPERM) {
        /* No openat2 (or a seccomp filter that refuses it with EPERM): walk. */
        int r = walk_open(dirfd, path, flags, mode, display, &fd, err);
        if (r < 0)
            return r;
    } else if (fd < 0) {
        /* Walk again for a message that names the component. */
        int again = -1;
        int r = walk_open(dirfd, path, flags, mode, display, &again, err);
        if (r < 0)
            return r;
        close(again); /* the tree changed in between: report what openat2 saw */
        return obi_error_set_errno(err, -fd, "%s%s%s", display ? display : "",
                                   display && *display ? "/" : "", path);
    }
    /* O_PATH | O_NOFOLLOW opens a trailing symlink itself: refused like any other symlink. */
    struct stat st;
    if ((flags & O_PATH) && fstat(fd, &st) == 0 && S_ISLNK(st.st_mode)) {
        close(fd);
        return obi_error_set(err, -ELOOP, "%s%s%s: is a symlink, not followed",
                             display ? display : "", display && *display ? "/" : "", path);
    }
    *fd_out = fd;
    return 0;
}

int obi_beneath_open_parent(int dirfd, const char *path, const char *display, int *fd_out,
                            const char **name_out, obi_error **err)
{
    if (!obi_beneath_path_is_clean(path))
        return obi_error_set(err, -EINVAL, "%s%s\"%s\": not a clean relative path",
                             display ? display : "", display ? ": " : "", path);
    const char *slash = strrchr(path, '/');
    if (!slash) {
        int r = dup_fd(dirfd, fd_out, err);
        if (r == 0)
            *name_out = path;
        return r;
    }
    cleanup_free char *parent = strndup(path, (size_t)(slash - path));
    if (!parent)
        return obi_error_oom(err);
    int r = obi_beneath_open(dirfd, parent, O_PATH | O_DIRECTORY, 0, display, fd_out, err);
    if (r == 0)
        *name_out = slash + 1;
    return r;
}

int obi_beneath_mkdirs(int dirfd, const char *path, mode_t mode, const char *display, int *fd_out,
                       obi_error **err)
{
    if (!obi_beneath_path_is_clean(path))
        return obi_error_set(err, -EINVAL, "%s%s\"%s\": not a clean relative path",
                             display ? display : "", display ? ": " : "", path);
    /* mkdirat never follows a symlink in its last component (EEXIST), and the walk refuses one
     * on the way, so creating needs no openat2. */
    cleanup_close int fd = -1;
    size_t last = 0;
    int r = walk(dirfd, path, true, mode, display, &fd, &last, err);
    if (r < 0)
        return r;
    if (fd_out)
        *fd_out = steal_fd(&fd);
    return 0;
}
