/*
 * Detached helpers (include/ocibuild/detached.h). Everything the child needs (the sorted list of
 * descriptors to keep) is prepared before the fork, so the child only makes system calls.
 */
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdlib.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include "ocibuild/cleanup.h"
#include "ocibuild/detached.h"
#include "ocibuild/process.h"

static int compare_fds(const void *a, const void *b)
{
    int x = *(const int *)a, y = *(const int *)b;
    return (x > y) - (x < y);
}

/* Closes every descriptor from 3 up that is not in keep (sorted, ascending). */
static void close_all_but(const int *keep, size_t count)
{
    unsigned from = 3;
    for (size_t i = 0; i < count; i++) {
        if (keep[i] < (int)from)
            continue; /* 0-2, or a duplicate */
        if ((unsigned)keep[i] > from)
            syscall(SYS_close_range, from, (unsigned)keep[i] - 1, 0U);
        from = (unsigned)keep[i] + 1;
    }
    syscall(SYS_close_range, from, ~0U, 0U);
}

static _Noreturn void helper(const obi_detached_options *opts, obi_detached_fn fn, void *ctx,
                             int *keep, size_t keep_count, int report_fd, pid_t caller)
{
    setsid();
    if (opts->die_with_caller &&
        (prctl(PR_SET_PDEATHSIG, SIGKILL, 0, 0, 0) < 0 || getppid() != caller))
        _exit(1);
    if (opts->grandchild) {
        pid_t second = fork();
        if (second != 0)
            _exit(second < 0 ? 1 : 0);
        setpgid(0, 0);
    }
    close_all_but(keep, keep_count);
    free(keep); /* the caller's copy, which this process never returns to free */
    int null_fd = open("/dev/null", O_RDWR);
    if (null_fd < 0 || dup2(null_fd, 0) < 0 || dup2(null_fd, 1) < 0 || dup2(null_fd, 2) < 0)
        _exit(1);
    if (null_fd > 2)
        close(null_fd);
    sigset_t none;
    sigemptyset(&none);
    sigprocmask(SIG_SETMASK, &none, NULL);
    const int reset[] = {SIGINT, SIGQUIT, SIGTERM, SIGHUP, SIGPIPE, SIGCHLD};
    for (size_t i = 0; i < OBI_ARRAY_SIZE(reset); i++)
        signal(reset[i], SIG_DFL);
    fn(ctx, report_fd);
    _exit(0);
}

int obi_spawn_detached(const obi_detached_options *opts, obi_detached_fn fn, void *ctx, int *report,
                       pid_t *pid, obi_error **err)
{
    int fds[2] = {-1, -1};
    if (report && pipe2(fds, O_CLOEXEC) < 0)
        return obi_error_set_errno(err, errno, "pipe");
    cleanup_close int read_end = fds[0];
    cleanup_close int write_end = fds[1];
    cleanup_free int *keep = calloc(opts->keep_count + 1, sizeof *keep);
    if (!keep)
        return obi_error_oom(err);
    size_t keep_count = 0;
    for (size_t i = 0; i < opts->keep_count; i++)
        if (opts->keep_fds[i] >= 0)
            keep[keep_count++] = opts->keep_fds[i];
    if (write_end >= 0)
        keep[keep_count++] = write_end;
    qsort(keep, keep_count, sizeof *keep, compare_fds);
    pid_t caller = getpid();
    fflush(NULL);
    pid_t child = fork();
    if (child < 0)
        return obi_error_set_errno(err, errno, "fork");
    if (child == 0) {
        if (read_end >= 0)
            close(read_end);
        helper(opts, fn, ctx, keep, keep_count, write_end, caller);
    }
    if (opts->grandchild) {
        int status = 0;
        int r = obi_wait(child, &status, err);
        if (r < 0)
            return r;
        if (!WIFEXITED(status) || WEXITSTATUS(status) != 0)
            return obi_error_set(err, -ECHILD,
                                 "fork a detached helper: the intermediate child "
                                 "exited with status %d",
                                 status);
        child = 0;
    }
    if (report)
        *report = steal_fd(&read_end);
    if (pid)
        *pid = child;
    return 0;
}
