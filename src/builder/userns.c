/*
 * Rootless file operations through a mapped user namespace (see include/ocibuild/userns.h).
 * The child unshares CLONE_NEWUSER and waits on a pipe; the parent writes its id maps with the
 * setuid helpers newuidmap/newgidmap (two-id maps need them), then lets it run.
 */
#include <errno.h>
#include <fcntl.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "ocibuild/beneath.h"
#include "ocibuild/cleanup.h"
#include "ocibuild/fs.h"
#include "ocibuild/process.h"
#include "ocibuild/userns.h"

static int run_map_helper(const char *helper, pid_t pid, unsigned long self, unsigned long sub,
                          unsigned long inside, obi_error **err)
{
    char pid_s[32], self_s[32], sub_s[32], inside_s[32];
    snprintf(pid_s, sizeof pid_s, "%d", (int)pid);
    snprintf(self_s, sizeof self_s, "%lu", self);
    snprintf(sub_s, sizeof sub_s, "%lu", sub);
    snprintf(inside_s, sizeof inside_s, "%lu", inside);
    char *argv[] = {(char *)helper, pid_s, "0", self_s, "1", inside_s, sub_s, "1", NULL};
    cleanup_free char *output = NULL;
    int code = 0;
    int r = obi_run_capture(argv, true, 4096, &output, &code, err);
    if (r < 0)
        return obi_error_prefix(err, r, "%s (install the uidmap package)", helper);
    if (code != 0)
        return obi_error_set(err, -EPERM, "%s %s 0 %s 1 %s %s 1: exit %d: %s", helper, pid_s,
                             self_s, inside_s, sub_s, code, output);
    return 0;
}

int obi_userns_run(const obi_userns_ids *ids, obi_userns_fn fn, void *ctx, obi_error **err)
{
    int go[2];
    if (pipe2(go, O_CLOEXEC) < 0)
        return obi_error_set_errno(err, errno, "pipe");
    int unshared[2];
    if (pipe2(unshared, O_CLOEXEC) < 0) {
        close(go[0]);
        close(go[1]);
        return obi_error_set_errno(err, errno, "pipe");
    }
    pid_t pid = fork();
    if (pid < 0) {
        int e = errno;
        close(go[0]);
        close(go[1]);
        close(unshared[0]);
        close(unshared[1]);
        return obi_error_set_errno(err, e, "fork");
    }
    if (pid == 0) {
        close(go[1]);
        close(unshared[0]);
        prctl(PR_SET_PDEATHSIG, SIGKILL);
        int status = unshare(CLONE_NEWUSER) < 0 ? errno : 0;
        (void)!write(unshared[1], &status, sizeof status);
        if (status)
            _exit(125);
        char c;
        if (read(go[0], &c, 1) != 1)
            _exit(125);
        if (setresgid(0, 0, 0) < 0 || setresuid(0, 0, 0) < 0)
            _exit(124);
        int r = fn(ctx);
        _exit(r < 0 ? (-r > 120 ? 120 : -r) : 0);
    }
    close(go[0]);
    close(unshared[1]);
    int child_errno = 0;
    ssize_t n = read(unshared[0], &child_errno, sizeof child_errno);
    close(unshared[0]);
    int r = 0;
    if (n != (ssize_t)sizeof child_errno)
        r = obi_error_set(err, -EIO, "user namespace helper died");
    else if (child_errno)
        r = obi_error_set_errno(err, child_errno, "unshare(CLONE_NEWUSER)");
    if (r == 0)
        r = run_map_helper("newuidmap", pid, ids->uid, ids->subuid, 1000, err);
    if (r == 0)
        r = run_map_helper("newgidmap", pid, ids->gid, ids->subgid, 100, err);
    if (r == 0 && write(go[1], "x", 1) != 1)
        r = obi_error_set_errno(err, errno, "user namespace helper");
    close(go[1]);
    int status;
    if (r < 0)
        kill(pid, SIGKILL);
    obi_wait(pid, &status, NULL);
    if (r < 0)
        return r;
    int code = obi_wait_exit_code(status);
    if (code != 0)
        return obi_error_set(err, code <= 120 ? -code : -EIO,
                             "operation in the user namespace failed: %s",
                             code <= 120 ? strerror(code) : "helper crashed");
    return 0;
}

/* The tree operations below run in the helper child on a directory fd the parent opened (the
 * bundle's, before forking): they walk with *at calls and never follow a symlink, so a build
 * that made a directory a symlink cannot point them at the invoking user's own files. */

typedef struct tree_op {
    int dirfd;
    const char *path; /* clean, relative to dirfd */
    uid_t uid;
    gid_t gid;
} tree_op;

static int chown_child(void *ctx)
{
    const tree_op *op = ctx;
    return obi_chown_tree_at(op->dirfd, op->path, op->uid, op->gid, NULL, NULL);
}

int obi_userns_chown_tree(const obi_userns_ids *ids, int dirfd, const char *name, uid_t uid,
                          gid_t gid, obi_error **err)
{
    tree_op op = {dirfd, name, uid, gid};
    int r = obi_userns_run(ids, chown_child, &op, err);
    return r < 0 ? obi_error_prefix(err, r, "chown %s", name) : 0;
}

/* Adds the search bits to the directory name in dirfd, not following a symlink. */
static int make_searchable(int dirfd, const char *name)
{
    struct stat st;
    if (fstatat(dirfd, name, &st, AT_SYMLINK_NOFOLLOW) < 0)
        return -errno;
    if (!S_ISDIR(st.st_mode))
        return S_ISLNK(st.st_mode) ? -ELOOP : -ENOTDIR;
    mode_t mode = st.st_mode & 07777;
    mode_t want = mode | S_IXUSR | S_IXGRP | S_IXOTH;
    if (want != mode && fchmodat(dirfd, name, want, AT_SYMLINK_NOFOLLOW) < 0)
        return -errno;
    return 0;
}

static int make_readable_child(void *ctx)
{
    const tree_op *op = ctx;
    cleanup_free char *prefix = strdup(op->path);
    if (!prefix)
        return -ENOMEM;
    /* Every directory on the way, beneath dirfd: searchable, so the parent can walk to it. */
    for (char *slash = strchr(prefix, '/'); slash; slash = strchr(slash + 1, '/')) {
        *slash = 0;
        cleanup_close int parent = -1;
        const char *name = NULL;
        int r = obi_beneath_open_parent(op->dirfd, prefix, NULL, &parent, &name, NULL);
        if (r == 0)
            r = make_searchable(parent, name);
        if (r < 0)
            return r;
        *slash = '/';
    }
    cleanup_close int parent = -1;
    const char *name = NULL;
    int r = obi_beneath_open_parent(op->dirfd, op->path, NULL, &parent, &name, NULL);
    if (r < 0)
        return r;
    return obi_make_tree_readable_at(parent, name, NULL, NULL);
}

int obi_userns_make_readable(const obi_userns_ids *ids, int dirfd, const char *path,
                             obi_error **err)
{
    tree_op op = {.dirfd = dirfd, .path = path};
    int r = obi_userns_run(ids, make_readable_child, &op, err);
    return r < 0 ? obi_error_prefix(err, r, "make %s readable", path) : 0;
}

static int rm_rf_child(void *ctx)
{
    const tree_op *op = ctx;
    return obi_rm_rf_at(op->dirfd, op->path, NULL, NULL);
}

int obi_userns_rm_rf(const obi_userns_ids *ids, int dirfd, const char *name, obi_error **err)
{
    tree_op op = {.dirfd = dirfd, .path = name};
    int r = obi_userns_run(ids, rm_rf_child, &op, err);
    return r < 0 ? obi_error_prefix(err, r, "remove %s", name) : 0;
}
