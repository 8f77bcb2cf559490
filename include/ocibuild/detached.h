/*
 * Detached helpers: the processes the service layer leaves running after the command that
 * started them (a replica's monitor, the deployment's supervisor and proxy, the rootless
 * network's holder, slirp4netns and namespace sleepers). One function forks them all the same
 * way, so none inherits what belongs to its caller:
 *   - a session and a process group of its own (no terminal signal of the caller reaches it;
 *     its group can be killed as one);
 *   - optionally a second fork (`grandchild`): the helper is not the caller's child, leaves no
 *     zombie to it and is reparented to init or the nearest subreaper;
 *   - optionally dies with the caller (PR_SET_PDEATHSIG SIGKILL, checked against a caller that
 *     died before it was set) until the helper clears it;
 *   - stdin, stdout and stderr /dev/null, every other descriptor closed except the ones it is
 *     told to keep and its report pipe (a lock, socket or pipe of the caller must not outlive
 *     the caller in it);
 *   - an empty signal mask (a supervisor blocks the signals it reads from a signalfd; what it
 *     starts must not inherit that) and default dispositions for the signals the caller ignored.
 * Then the helper runs fn(ctx, report_fd). The report pipe (close-on-exec both ends) is how a
 * helper says it is ready, or why it is not, to the caller.
 */
#ifndef OCIBUILD_DETACHED_H
#define OCIBUILD_DETACHED_H

#include <stdbool.h>
#include <stddef.h>
#include <sys/types.h>

#include "ocibuild/error.h"

typedef struct obi_detached_options {
    bool grandchild;      /* fork twice; the caller gets no pid to wait for */
    bool die_with_caller; /* PR_SET_PDEATHSIG SIGKILL (not with grandchild) */
    const int *keep_fds;  /* descriptors kept open besides the report pipe */
    size_t keep_count;
} obi_detached_options;

/* The helper's body. It should end with _exit or exec; if it returns, the helper exits 0. */
typedef void (*obi_detached_fn)(void *ctx, int report_fd);

/* Forks a detached helper running fn(ctx, report_fd) as described above. report (may be NULL:
 * no pipe, report_fd -1): the read end of the report pipe, the caller's to close. pid (may be
 * NULL): the helper's pid when it is the caller's child (the caller waits for it), 0 with
 * grandchild (the intermediate child has been waited for). */
int obi_spawn_detached(const obi_detached_options *opts, obi_detached_fn fn, void *ctx, int *report,
                       pid_t *pid, obi_error **err);

#endif
