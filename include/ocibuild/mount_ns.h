/*
 * A kept mount namespace without one mount (docs/build.md "crun on hybrid-cgroup hosts"): made
 * once per process, by a child that unshares its mount namespace, makes propagation private and
 * detaches the mount, and then joined by every spawn that must not see that mount
 * (obi_spawn_options.hide_mount_ns), instead of each spawn making a namespace of its own. It
 * follows this process's mount table: when that changed since it was made (a mount or unmount
 * by anyone: a build's FUSE inputs), the next obi_mount_ns_join_fd makes a new one, so a spawn
 * sees every mount made before it, as in a namespace made for it. Needs CAP_SYS_ADMIN.
 */
#ifndef OCIBUILD_MOUNT_NS_H
#define OCIBUILD_MOUNT_NS_H

typedef struct obi_mount_ns obi_mount_ns;

/* A namespace-to-be without the mount at `hidden` (absolute); nothing is made before the first
 * obi_mount_ns_join_fd. NULL when out of memory. */
obi_mount_ns *obi_mount_ns_new(const char *hidden);
/* Closes the namespace's fds in the process that made the object only (a forked child that
 * closed its fds may hold other files under those numbers). Accepts NULL. */
void obi_mount_ns_free(obi_mount_ns *ns);

/* A new close-on-exec fd of the namespace (the caller closes it), made or made again first when
 * this process's mount table changed since. -1 when it cannot be made, or in a forked child of
 * the process that made the object (its lock may be held by a thread the fork left behind):
 * the caller then makes a namespace of its own (hide_mount), which reports what fails. Safe
 * from any thread. */
int obi_mount_ns_join_fd(obi_mount_ns *ns);

#endif
