/*
 * The iterative tree walk (see include/ocibuild/fs_walk.h). State is a heap stack of levels, one
 * per directory on the current path, each with that directory's identity (st_dev, st_ino) and
 * its names, read whole with getdents64 when it is entered. Only the current directory is open:
 * descending opens the child and closes the parent, climbing opens ".." (checked against the
 * remembered parent) and closes the child.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "ocibuild/array.h"
#include "ocibuild/buf.h"
#include "ocibuild/cleanup.h"
#include "ocibuild/fs_walk.h"

#define DENTS_BUF_SIZE (32 << 10)

typedef struct level {
    struct stat st;  /* the directory, as seen when it was entered */
    char *names;     /* packed NUL-terminated names */
    size_t *offsets; /* of each name in names, in visiting order */
    size_t n, next;  /* entries, and the next one to visit */
    size_t path_len; /* length of this directory's display path */
} level;

typedef struct walker {
    const obi_walk_options *opts;
    void *ctx;
    level *levels;
    size_t depth, cap; /* levels[0..depth] are in use */
    obi_buf path;
    obi_buf shown; /* an abbreviation of a long path, for messages */
    char *dents;   /* DENTS_BUF_SIZE bytes */
    int cur;       /* levels[depth]'s directory */
} walker;

static bool same_inode(const struct stat *a, const struct stat *b)
{
    return a->st_dev == b->st_dev && a->st_ino == b->st_ino;
}

static int compare_names(const void *a, const void *b, void *names)
{
    /* strcmp compares as unsigned char: bytewise order */
    return strcmp((const char *)names + *(const size_t *)a,
                  (const char *)names + *(const size_t *)b);
}

/* Paths longer than this are shown as their head, "..." and their tail: a 100,000-level path
 * would make a 200 KB message. */
#define SHOWN_PATH_MAX 1024
#define SHOWN_PART 256

/* The display path cut to len; abbreviated when long. */
static const char *path_of(walker *w, size_t len)
{
    w->path.len = len;
    w->path.data[len] = 0;
    const char *full = (const char *)w->path.data;
    if (len <= SHOWN_PATH_MAX)
        return full;
    w->shown.len = 0;
    if (obi_buf_appendf(&w->shown, "%.*s...%s", SHOWN_PART, full, full + len - SHOWN_PART) < 0)
        return full;
    return (const char *)w->shown.data;
}

/* Reads every name of directory fd (without "." and "..") into lv. */
static int read_names(walker *w, int fd, level *lv, obi_error **err)
{
    cleanup_buf obi_buf names = OBI_BUF_INIT;
    cleanup_free size_t *offsets = NULL;
    size_t n = 0, cap = 0;
    for (;;) {
        ssize_t got = getdents64(fd, w->dents, DENTS_BUF_SIZE);
        if (got < 0)
            return obi_error_set_errno(err, errno, "%s: read directory", path_of(w, lv->path_len));
        if (got == 0)
            break;
        for (ssize_t pos = 0; pos < got;) {
            const struct dirent64 *de = (const struct dirent64 *)(w->dents + pos);
            pos += de->d_reclen;
            if (!strcmp(de->d_name, ".") || !strcmp(de->d_name, ".."))
                continue;
            if (obi_array_grow(&offsets, &cap, n + 1) < 0)
                return obi_error_oom(err);
            offsets[n++] = names.len;
            if (obi_buf_append(&names, de->d_name, strlen(de->d_name) + 1) < 0)
                return obi_error_oom(err);
        }
    }
    if (w->opts->sorted && n > 1)
        qsort_r(offsets, n, sizeof *offsets, compare_names, names.data);
    lv->names = (char *)obi_buf_steal(&names);
    lv->offsets = steal_pointer(&offsets);
    lv->n = n;
    lv->next = 0;
    return lv->names ? 0 : obi_error_oom(err);
}

/* Opens directory name in dirfd for reading and checks it is the one fstatat saw. */
static int open_directory(int dirfd, const char *name, const struct stat *seen, const char *path,
                          int *fd_out, obi_error **err)
{
    cleanup_close int fd = openat(dirfd, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
    if (fd < 0)
        return obi_error_set_errno(err, errno, "%s: open", path);
    struct stat now;
    if (fstat(fd, &now) < 0)
        return obi_error_set_errno(err, errno, "%s: fstat", path);
    if (!same_inode(&now, seen))
        return obi_error_set(err, -EAGAIN, "%s: changed while being walked", path);
    *fd_out = steal_fd(&fd);
    return 0;
}

/* Enters directory name of the current one (or the start): pushes a level with its names. */
static int push_level(walker *w, int dirfd, const char *name, const struct stat *st,
                      size_t path_len, size_t depth, obi_error **err)
{
    const char *path = path_of(w, path_len);
    if (w->opts->max_levels && depth + 1 > w->opts->max_levels)
        return obi_error_set(err, -ELOOP, "%s: directories nested deeper than %zu levels",
                             w->opts->display ? w->opts->display : "tree", w->opts->max_levels);
    if (obi_array_grow(&w->levels, &w->cap, depth + 1) < 0)
        return obi_error_oom(err);
    level *lv = &w->levels[depth];
    *lv = (level){.st = *st, .path_len = path_len};
    int fd = -1;
    int r = open_directory(dirfd, name, st, path, &fd, err);
    if (r < 0)
        return r;
    r = read_names(w, fd, lv, err);
    if (r < 0) {
        close(fd);
        return r;
    }
    if (w->cur >= 0)
        close(w->cur);
    w->cur = fd;
    w->depth = depth;
    return 0;
}

static void free_level(level *lv)
{
    free(lv->names);
    free(lv->offsets);
    lv->names = NULL;
    lv->offsets = NULL;
}

int obi_walk_climb(int fd, const struct stat *expected, const char *display, int *parent_out,
                   obi_error **err)
{
    cleanup_close int parent = openat(fd, "..", O_PATH | O_DIRECTORY | O_CLOEXEC);
    if (parent < 0)
        return obi_error_set_errno(err, errno, "%s: open ..", display);
    struct stat st;
    if (fstat(parent, &st) < 0)
        return obi_error_set_errno(err, errno, "%s: fstat ..", display);
    if (!same_inode(&st, expected))
        return obi_error_set(err, -EAGAIN,
                             "%s: moved while being walked (its parent is not the directory "
                             "it was entered from)",
                             display);
    *parent_out = steal_fd(&parent);
    return 0;
}

/* Visits the next entry of the current directory: enter, and descend into a directory. */
static int visit_next(walker *w, obi_error **err)
{
    level *lv = &w->levels[w->depth];
    const char *name = lv->names + lv->offsets[lv->next++];
    w->path.len = lv->path_len;
    if (obi_buf_append_str(&w->path, "/") < 0 || obi_buf_append_str(&w->path, name) < 0)
        return obi_error_oom(err);
    size_t path_len = w->path.len;
    struct stat st;
    if (fstatat(w->cur, name, &st, AT_SYMLINK_NOFOLLOW) < 0) {
        if (errno == ENOENT && w->opts->skip_vanished)
            return 0;
        return obi_error_set_errno(err, errno, "%s: stat", path_of(w, path_len));
    }
    obi_walk_entry entry = {w->cur, name, &st, w->depth + 1, path_of(w, path_len)};
    int r = w->opts->enter ? w->opts->enter(w->ctx, &entry, err) : 0;
    if (r < 0 || r == OBI_WALK_SKIP || !S_ISDIR(st.st_mode))
        return r < 0 ? r : 0;
    return push_level(w, w->cur, name, &st, path_len, w->depth + 1, err);
}

/* Leaves the current directory (not the start): climbs to its parent, then calls leave. */
static int leave_current(walker *w, obi_error **err)
{
    level *lv = &w->levels[w->depth];
    level *parent = &w->levels[w->depth - 1];
    int up = -1;
    int r = obi_walk_climb(w->cur, &parent->st, path_of(w, lv->path_len), &up, err);
    if (r < 0)
        return r;
    close(w->cur);
    w->cur = up;
    struct stat st = lv->st;
    free_level(lv);
    w->depth--;
    const char *name = parent->names + parent->offsets[parent->next - 1];
    obi_walk_entry entry = {w->cur, name, &st, w->depth + 1, path_of(w, lv->path_len)};
    return w->opts->leave ? w->opts->leave(w->ctx, &entry, err) : 0;
}

static int walk_tree(walker *w, int dirfd, const char *name, obi_error **err)
{
    struct stat st;
    if (fstatat(dirfd, name, &st, AT_SYMLINK_NOFOLLOW) < 0) {
        if (errno == ENOENT && w->opts->skip_vanished)
            return 0;
        return obi_error_set_errno(err, errno, "%s: stat", path_of(w, w->path.len));
    }
    size_t start_len = w->path.len;
    obi_walk_entry start = {dirfd, name, &st, 0, path_of(w, start_len)};
    int r = w->opts->enter ? w->opts->enter(w->ctx, &start, err) : 0;
    if (r < 0 || r == OBI_WALK_SKIP || !S_ISDIR(st.st_mode))
        return r < 0 ? r : 0;
    if ((r = push_level(w, dirfd, name, &st, start_len, 0, err)) < 0)
        return r;
    for (;;) {
        level *lv = &w->levels[w->depth];
        if (lv->next < lv->n)
            r = visit_next(w, err);
        else if (w->depth > 0)
            r = leave_current(w, err);
        else
            break;
        if (r < 0)
            return r;
    }
    close(w->cur);
    w->cur = -1;
    free_level(&w->levels[0]);
    start.path = path_of(w, start_len);
    return w->opts->leave ? w->opts->leave(w->ctx, &start, err) : 0;
}

int obi_walk(int dirfd, const char *name, const obi_walk_options *opts, void *ctx, obi_error **err)
{
    walker w = {.opts = opts, .ctx = ctx, .cur = -1};
    w.dents = malloc(DENTS_BUF_SIZE);
    int r = 0;
    if (!w.dents || obi_buf_append_str(&w.path, opts->display ? opts->display : name) < 0)
        r = obi_error_oom(err);
    if (r == 0)
        r = walk_tree(&w, dirfd, name, err);
    if (w.cur >= 0)
        close(w.cur);
    for (size_t i = 0; w.levels && i <= w.depth && i < w.cap; i++)
        free_level(&w.levels[i]);
    free(w.levels);
    free(w.dents);
    obi_buf_free(&w.path);
    obi_buf_free(&w.shown);
    return r;
}
