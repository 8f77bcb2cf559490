/*
 * ROOT/gc.lock, the flock that orders the garbage collector against writers, pins and roots
 * (include/ocibuild/store_roots.h; docs/store.md "The lock"). gc takes it exclusively on a
 * descriptor of its own (obi_store_gc_lock). Everything else holds it shared through the
 * process's hold on the store (obi_store_gc_hold): one descriptor per process and store,
 * opened by the first hold and kept for the process's life, flock'ed shared while any hold is
 * counted and unlocked when the last one is released (as Nix keeps its gc lock), so a build
 * opens it once instead of once per hold, and gc still runs only while no hold is counted.
 *
 * A flock belongs to the open file description, which a fork shares: a child that unlocked the
 * inherited descriptor would drop its parent's hold, and one that kept it open would keep the
 * parent's lock after the parent is gone. So a forked child closes its copies at once (closing
 * a copy leaves the parent's lock alone), a hold remembers the pid that made it, a child never
 * uses its parent's (it drops them) and opens a descriptor of its own, and a release in a child
 * that holds nothing (a pin it inherited) does nothing.
 */
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <unistd.h>

#include "ocibuild/cleanup.h"
#include "ocibuild/fs.h"
#include "store_internal.h"

/* Opens ROOT/gc.lock, making it (and ROOT) when it is not there yet. */
static int gc_lock_open(const char *root, int *fd_out, obi_error **err)
{
    cleanup_free char *path = obi_path_join(root, "gc.lock");
    if (!path)
        return obi_error_oom(err);
    /* made by the first user of the store, so looked for only when the open says it is not */
    int fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0644);
    if (fd < 0 && errno == ENOENT) {
        int r = obi_mkdir_p(root, 0755, err);
        if (r < 0)
            return r;
        fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0644);
    }
    if (fd < 0)
        fd = open(path, O_RDONLY | O_CLOEXEC); /* a reader of a store it may not write */
    if (fd < 0)
        return obi_error_set_errno(err, errno, "open %s", path);
    *fd_out = fd;
    return 0;
}

static int gc_lock_flock(int fd, int operation, const char *root, obi_error **err)
{
    int r;
    do
        r = flock(fd, operation);
    while (r < 0 && errno == EINTR);
    if (r < 0)
        return obi_error_set_errno(err, errno, "flock %s/gc.lock", root);
    return 0;
}

int obi_store_gc_lock(const char *root, int operation, int *fd_out, obi_error **err)
{
    cleanup_close int fd = -1;
    int r = gc_lock_open(root, &fd, err);
    if (r == 0)
        r = gc_lock_flock(fd, operation, root, err);
    if (r < 0)
        return r;
    *fd_out = steal_fd(&fd);
    return 0;
}

/* ---- the process's shared holds ---- */

typedef struct gc_hold {
    struct gc_hold *next;
    char *root;
    pid_t owner;           /* the process that made it: a child's copy is not the child's */
    pthread_mutex_t mutex; /* the first hold's flock, which may wait for gc, against the rest */
    int fd;                /* ROOT/gc.lock once opened, until the process ends */
    unsigned count;        /* holds; flock'ed shared while > 0 */
} gc_hold;

/* Guards the list only (never held while waiting for gc, nor across a fork). */
static pthread_mutex_t holds_lock = PTHREAD_MUTEX_INITIALIZER;
static gc_hold *holds;
static pthread_once_t holds_once = PTHREAD_ONCE_INIT;

static void holds_before_fork(void)
{
    pthread_mutex_lock(&holds_lock);
}

static void holds_after_fork(void)
{
    pthread_mutex_unlock(&holds_lock);
}

/* The child closes its copies of the parent's descriptors at once: a child that outlives its
 * parent must not keep the parent's shared lock (and gc out) until it exits. The holds
 * themselves are dropped when the child next looks for one (find_hold). */
static void holds_in_child(void)
{
    for (gc_hold *hold = holds; hold; hold = hold->next) {
        if (hold->fd >= 0)
            close(hold->fd);
        hold->fd = -1;
    }
    pthread_mutex_unlock(&holds_lock);
}

static void holds_init(void)
{
    pthread_atfork(holds_before_fork, holds_after_fork, holds_in_child);
}

/* This process's hold on root, made (count 0, not open) when make; NULL without one (or out of
 * memory). Holds copied from a parent are dropped on the way: their mutex may be locked by a
 * thread that does not exist here, and their descriptor's lock is the parent's. */
static gc_hold *find_hold(const char *root, bool make)
{
    pid_t self = getpid();
    pthread_once(&holds_once, holds_init);
    pthread_mutex_lock(&holds_lock);
    gc_hold *found = NULL;
    for (gc_hold **at = &holds; *at && !found;) {
        gc_hold *hold = *at;
        if (hold->owner != self) {
            *at = hold->next;
            if (hold->fd >= 0)
                close(hold->fd);
            free(hold->root);
            free(hold);
        } else if (!strcmp(hold->root, root)) {
            found = hold;
        } else {
            at = &hold->next;
        }
    }
    if (!found && make && (found = calloc(1, sizeof *found))) {
        found->root = strdup(root);
        if (!found->root) {
            free(found);
            found = NULL;
        } else {
            found->owner = self;
            found->fd = -1;
            pthread_mutex_init(&found->mutex, NULL);
            found->next = holds;
            holds = found;
        }
    }
    pthread_mutex_unlock(&holds_lock);
    return found;
}

int obi_store_gc_hold(const char *root, bool wait, obi_error **err)
{
    gc_hold *hold = find_hold(root, true);
    if (!hold)
        return obi_error_oom(err);
    pthread_mutex_lock(&hold->mutex);
    int r = 0;
    if (hold->count == 0) {
        if (hold->fd < 0)
            r = gc_lock_open(root, &hold->fd, err);
        if (r == 0)
            r = gc_lock_flock(hold->fd, LOCK_SH | (wait ? 0 : LOCK_NB), root, err);
    }
    if (r == 0)
        hold->count++;
    pthread_mutex_unlock(&hold->mutex);
    return r;
}

void obi_store_gc_release(const char *root)
{
    gc_hold *hold = find_hold(root, false);
    if (!hold)
        return; /* none of this process's: a hold a pin inherited from its parent */
    pthread_mutex_lock(&hold->mutex);
    if (hold->count > 0 && --hold->count == 0)
        (void)flock(hold->fd, LOCK_UN);
    pthread_mutex_unlock(&hold->mutex);
}
