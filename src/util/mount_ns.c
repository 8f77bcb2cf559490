/*
 * The kept mount namespace without one mount (see include/ocibuild/mount_ns.h). Making one per
 * spawn (unshare, propagation private, detach) cost ~0.25 ms between the clone and the exec and
 * ~0.15 ms more when the spawned process exits, before its parent is woken (the copy of the
 * mount table, and an RCU grace period each time mounts are dropped), more under load;
 * joining a kept one is a setns. It is made by a forked child, whose namespace we open through
 * /proc/PID/ns/mnt before letting it exit: no process is left behind. A change of our mount table
 * is seen by polling /proc/self/mountinfo, opened before the namespace is made (POLLPRI: the
 * kernel's event count of our namespace moved since), so a change during the making only makes it
 * again: by each join, at once (a build's FUSE mount, made just before its runtime call, is in the
 * namespace that call joins), and by a watcher thread, which drops the namespace when the change
 * happens (a process idle for hours keeps no copy of a mount unmounted meanwhile).
 */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "ocibuild/cleanup.h"
#include "ocibuild/mount_ns.h"

struct obi_mount_ns {
    pthread_mutex_t lock;
    char *hidden;
    pid_t owner;   /* the process whose fds these are */
    int ns_fd;     /* the namespace; -1: not made (yet, or again) */
    int events_fd; /* our /proc/self/mountinfo, opened before the namespace was made */
    /* The watcher: a thread that drops the namespace as soon as our mount table changes, so an
     * idle process (a daemon between builds) does not hold on to copies of mounts unmounted
     * since (a filesystem stays alive while any namespace has it mounted). Started with the
     * first namespace; stopped through stop_pipe. */
    pthread_t watcher;
    bool watching;
    int stop_pipe[2];
};

obi_mount_ns *obi_mount_ns_new(const char *hidden)
{
    obi_mount_ns *ns = calloc(1, sizeof *ns);
    if (!ns || !(ns->hidden = strdup(hidden))) {
        free(ns);
        return NULL;
    }
    pthread_mutex_init(&ns->lock, NULL);
    ns->owner = getpid();
    ns->ns_fd = ns->events_fd = -1;
    ns->stop_pipe[0] = ns->stop_pipe[1] = -1;
    return ns;
}

static void drop(obi_mount_ns *ns)
{
    if (ns->ns_fd >= 0)
        close(ns->ns_fd); /* the last reference frees its mounts, unless a spawn is still in it */
    if (ns->events_fd >= 0)
        close(ns->events_fd);
    ns->ns_fd = ns->events_fd = -1;
}

void obi_mount_ns_free(obi_mount_ns *ns)
{
    if (!ns)
        return;
    if (getpid() == ns->owner) {
        if (ns->watching) {
            if (write(ns->stop_pipe[1], "x", 1) < 0) {
                /* an empty pipe takes a byte */
            }
            pthread_join(ns->watcher, NULL);
        }
        for (int i = 0; i < 2; i++)
            if (ns->stop_pipe[i] >= 0)
                close(ns->stop_pipe[i]);
        drop(ns);
    }
    pthread_mutex_destroy(&ns->lock);
    free(ns->hidden);
    free(ns);
}

/* The namespace's fd, made by a forked child (plain fork: valgrind runs no other kind of
 * clone): it unshares its mount namespace, makes it private and detaches the hidden mount
 * (system calls only), says so with a byte on ready, and waits until we have opened its
 * namespace and end it. -1 when that failed. */
static int make(const char *hidden)
{
    int ready[2], go[2];
    if (pipe2(ready, O_CLOEXEC) < 0)
        return -1;
    if (pipe2(go, O_CLOEXEC) < 0) {
        close(ready[0]);
        close(ready[1]);
        return -1;
    }
    /* The child keeps every signal blocked (it inherits the mask): no handler of ours runs in
     * it. */
    sigset_t all, saved;
    sigfillset(&all);
    pthread_sigmask(SIG_SETMASK, &all, &saved);
    pid_t pid = fork();
    if (pid == 0) {
        close(ready[0]);
        close(go[1]);
        /* "none": ignored for a propagation change, and no NULL string for checkers. */
        if (unshare(CLONE_NEWNS) < 0 || mount("none", "/", "none", MS_REC | MS_PRIVATE, NULL) < 0 ||
            (umount2(hidden, MNT_DETACH) < 0 && errno != EINVAL && errno != ENOENT))
            _exit(1);
        char byte = 'r', wait_byte;
        if (write(ready[1], &byte, 1) != 1)
            _exit(1);
        while (read(go[0], &wait_byte, 1) < 0 && errno == EINTR) {
        }
        _exit(0); /* not reached when we kill it */
    }
    pthread_sigmask(SIG_SETMASK, &saved, NULL);
    close(ready[1]);
    close(go[0]);
    int fd = -1;
    char byte;
    ssize_t n;
    while ((n = read(ready[0], &byte, 1)) < 0 && errno == EINTR) {
    }
    if (pid > 0 && n == 1) {
        char path[64];
        snprintf(path, sizeof path, "/proc/%d/ns/mnt", (int)pid);
        fd = open(path, O_RDONLY | O_CLOEXEC);
    }
    close(ready[0]);
    /* The child ends: killed, since a forked copy of a threaded process has nothing to run at
     * exit (under valgrind its exit would report our threads' memory as its leaks); closing go
     * ends it too where the kill cannot. */
    if (pid > 0)
        kill(pid, SIGKILL);
    close(go[1]);
    if (pid > 0) {
        int status;
        while (waitpid(pid, &status, 0) < 0 && errno == EINTR) {
        }
    }
    return fd;
}

/* Whether our mount table changed since events_fd was opened (or last polled). ppoll, not
 * poll: a test that fails poll on demand (test_runtime) means the run's poll. */
static bool mounts_changed(int events_fd)
{
    struct pollfd pfd = {events_fd, POLLPRI, 0};
    struct timespec now = {0, 0};
    int n = ppoll(&pfd, 1, &now, NULL);
    return n != 0 && (n < 0 || (pfd.revents & (POLLPRI | POLLERR | POLLNVAL)));
}

/* The watcher's loop, on a mountinfo fd of its own (each open file sees a change once). ppoll:
 * see mounts_changed. It ends on the stop pipe, or on an error (then joins still check). */
typedef struct watch {
    obi_mount_ns *ns;
    int mounts;
} watch;

static void *watch_main(void *arg)
{
    watch *w = arg;
    obi_mount_ns *ns = w->ns;
    int mounts = w->mounts;
    free(w);
    for (;;) {
        struct pollfd pfds[2] = {{mounts, POLLPRI, 0}, {ns->stop_pipe[0], POLLIN, 0}};
        if (ppoll(pfds, 2, NULL, NULL) < 0) {
            if (errno == EINTR)
                continue;
            break;
        }
        if (pfds[1].revents || (pfds[0].revents & POLLNVAL))
            break;
        if (pfds[0].revents & (POLLPRI | POLLERR)) {
            pthread_mutex_lock(&ns->lock);
            drop(ns);
            pthread_mutex_unlock(&ns->lock);
        }
    }
    close(mounts);
    return NULL;
}

/* Starts the watcher on a mountinfo fd opened before the namespace is made. Best effort: without
 * it, a change is still seen by the next join. Under the lock. */
static void start_watcher(obi_mount_ns *ns)
{
    if (ns->watching)
        return;
    watch *w = malloc(sizeof *w);
    if (!w)
        return;
    w->ns = ns;
    w->mounts = open("/proc/self/mountinfo", O_RDONLY | O_CLOEXEC);
    if (w->mounts >= 0 && pipe2(ns->stop_pipe, O_CLOEXEC) == 0 &&
        pthread_create(&ns->watcher, NULL, watch_main, w) == 0) {
        ns->watching = true;
        return;
    }
    for (int i = 0; i < 2; i++)
        if (ns->stop_pipe[i] >= 0)
            close(ns->stop_pipe[i]);
    ns->stop_pipe[0] = ns->stop_pipe[1] = -1;
    if (w->mounts >= 0)
        close(w->mounts);
    free(w);
}

int obi_mount_ns_join_fd(obi_mount_ns *ns)
{
    if (getpid() != ns->owner)
        return -1;
    pthread_mutex_lock(&ns->lock);
    if (ns->ns_fd >= 0 && mounts_changed(ns->events_fd))
        drop(ns);
    if (ns->ns_fd < 0) {
        start_watcher(ns);
        ns->events_fd = open("/proc/self/mountinfo", O_RDONLY | O_CLOEXEC);
        if (ns->events_fd >= 0)
            ns->ns_fd = make(ns->hidden);
        if (ns->ns_fd < 0)
            drop(ns);
    }
    int fd = ns->ns_fd >= 0 ? fcntl(ns->ns_fd, F_DUPFD_CLOEXEC, 0) : -1;
    pthread_mutex_unlock(&ns->lock);
    return fd;
}
