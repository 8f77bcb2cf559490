/*
 * Idmapped mounts (see include/ocibuild/idmap.h). The kernel takes the shift as a user
 * namespace: a child unshares one and waits while the parent, being root, writes its uid_map and
 * gid_map directly (any range is allowed to a parent with CAP_SETUID/CAP_SETGID, no newuidmap)
 * and opens /proc/CHILD/ns/user; the namespace lives on through that fd after the child is gone.
 * The mount is a detached clone of the source (open_tree), shifted with mount_setattr and
 * attached with move_mount.
 */
#include <errno.h>
#include <fcntl.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/prctl.h>
#include <unistd.h>

#include "ocibuild/cleanup.h"
#include "ocibuild/fs.h"
#include "ocibuild/idmap.h"
#include "ocibuild/process.h"

static int write_map(pid_t pid, const char *file, unsigned long base, uint32_t count,
                     obi_error **err)
{
    char path[64], line[64];
    snprintf(path, sizeof path, "/proc/%d/%s", (int)pid, file);
    int len = snprintf(line, sizeof line, "0 %lu %u\n", base, count);
    cleanup_close int fd = open(path, O_WRONLY | O_CLOEXEC);
    if (fd < 0 || write(fd, line, (size_t)len) != len)
        return obi_error_set_errno(err, errno, "write %s (\"0 %lu %u\")", path, base, count);
    return 0;
}

int obi_idmap_userns_open(const obi_idmap *map, int *fd_out, obi_error **err)
{
    if (map->count == 0)
        return obi_error_set(err, -EINVAL, "idmap: an empty id range");
    int ready[2];
    if (pipe2(ready, O_CLOEXEC) < 0)
        return obi_error_set_errno(err, errno, "pipe");
    cleanup_close int ready_read = ready[0];
    cleanup_close int ready_write = ready[1];
    pid_t pid = fork();
    if (pid < 0)
        return obi_error_set_errno(err, errno, "fork");
    if (pid == 0) {
        close(ready_read);
        prctl(PR_SET_PDEATHSIG, SIGKILL);
        int status = unshare(CLONE_NEWUSER) < 0 ? errno : 0;
        (void)!write(ready_write, &status, sizeof status);
        pause(); /* until the parent has the namespace and kills us */
        _exit(0);
    }
    close(steal_fd(&ready_write));
    int child_errno = 0;
    ssize_t n = obi_read_full(ready_read, &child_errno, sizeof child_errno);
    int r = 0;
    if (n != (ssize_t)sizeof child_errno)
        r = obi_error_set(err, -EIO, "idmap: the user namespace child died");
    else if (child_errno)
        r = obi_error_set_errno(err, child_errno, "unshare(CLONE_NEWUSER)");
    if (r == 0)
        r = write_map(pid, "uid_map", map->uid, map->count, err);
    if (r == 0)
        r = write_map(pid, "gid_map", map->gid, map->count, err);
    int fd = -1;
    if (r == 0) {
        char path[64];
        snprintf(path, sizeof path, "/proc/%d/ns/user", (int)pid);
        if ((fd = open(path, O_RDONLY | O_CLOEXEC)) < 0)
            r = obi_error_set_errno(err, errno, "open %s", path);
    }
    kill(pid, SIGKILL);
    int status;
    obi_wait(pid, &status, NULL);
    if (r < 0)
        return r;
    *fd_out = fd;
    return 0;
}

int obi_idmap_bind(const char *source, const char *target, const obi_idmap *map, obi_error **err)
{
    cleanup_close int userns = -1;
    int r = obi_idmap_userns_open(map, &userns, err);
    if (r < 0)
        return r;
    cleanup_close int tree = open_tree(AT_FDCWD, source, OPEN_TREE_CLONE | OPEN_TREE_CLOEXEC);
    if (tree < 0)
        return obi_error_set_errno(err, errno, "open_tree %s", source);
    struct mount_attr attr = {.attr_set = MOUNT_ATTR_IDMAP, .userns_fd = (uint64_t)userns};
    if (mount_setattr(tree, "", AT_EMPTY_PATH, &attr, sizeof attr) < 0) {
        int e = errno;
        if (e == EINVAL || e == ENOSYS || e == EPERM || e == EOPNOTSUPP)
            return obi_error_set_errno(err, e,
                                       "idmapped mount of %s: the kernel or its filesystem "
                                       "cannot idmap (Linux >= 5.12 with ext4, xfs, btrfs or "
                                       "tmpfs >= 6.3 is needed)",
                                       source);
        return obi_error_set_errno(err, e, "idmapped mount of %s", source);
    }
    if (move_mount(tree, "", AT_FDCWD, target, MOVE_MOUNT_F_EMPTY_PATH) < 0)
        return obi_error_set_errno(err, errno, "attach the idmapped mount of %s at %s", source,
                                   target);
    return 0;
}
