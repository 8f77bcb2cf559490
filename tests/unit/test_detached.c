/*
 * Detached helpers (detached.h): the helper runs in a session and process group of its own,
 * with stdin/stdout/stderr on /dev/null, none of the caller's descriptors but the ones it keeps
 * and its report pipe, and an empty signal mask; with grandchild it is not the caller's child;
 * with die_with_caller it has PR_SET_PDEATHSIG set. Each helper writes what it sees to the report
 * pipe, which the test reads.
 */
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "ocibuild/cleanup.h"
#include "ocibuild/detached.h"
#include "test_helpers.h"

typedef struct probe {
    int kept, dropped; /* descriptors of the caller's */
} probe;

/* "SID PGID PPID KEPT DROPPED SIGMASK_EMPTY STDIN_NULL PDEATHSIG" */
static void report_what_it_sees(void *ctx, int report_fd)
{
    const probe *p = ctx;
    sigset_t mask;
    sigprocmask(SIG_SETMASK, NULL, &mask);
    struct stat in, null;
    int pdeathsig = 0;
    prctl(PR_GET_PDEATHSIG, &pdeathsig);
    char text[256];
    int n =
        snprintf(text, sizeof text, "%d %d %d %d %d %d %d %d", (int)getsid(0), (int)getpgrp(),
                 (int)getppid(), fcntl(p->kept, F_GETFD) >= 0, fcntl(p->dropped, F_GETFD) >= 0,
                 !sigismember(&mask, SIGTERM),
                 fstat(0, &in) == 0 && stat("/dev/null", &null) == 0 && in.st_rdev == null.st_rdev,
                 pdeathsig);
    if (write(report_fd, text, (size_t)n) != n)
        _exit(1);
    _exit(0);
}

static void spawn_and_read(const obi_detached_options *opts, probe *p, char *out, size_t size,
                           pid_t *pid)
{
    cleanup_error obi_error *err = NULL;
    int fd = -1;
    assert_int_equal(obi_spawn_detached(opts, report_what_it_sees, p, &fd, pid, &err), 0);
    size_t len = 0;
    ssize_t got;
    while (len < size - 1 && (got = read(fd, out + len, size - 1 - len)) > 0)
        len += (size_t)got;
    out[len] = 0;
    close(fd);
}

static void test_detached_helper_gets_nothing_of_the_caller_but_what_it_keeps(void **state)
{
    (void)state;
    probe p = {open("/dev/null", O_RDONLY), open("/dev/null", O_RDONLY)}; /* not close-on-exec */
    sigset_t block, old;
    sigemptyset(&block);
    sigaddset(&block, SIGTERM);
    sigprocmask(SIG_BLOCK, &block, &old);
    obi_detached_options opts = {.keep_fds = &p.kept, .keep_count = 1};
    char text[256];
    pid_t pid = 0;
    spawn_and_read(&opts, &p, text, sizeof text, &pid);
    sigprocmask(SIG_SETMASK, &old, NULL);
    int sid, pgid, ppid, kept, dropped, unmasked, null_in, pdeathsig;
    assert_int_equal(sscanf(text, "%d %d %d %d %d %d %d %d", &sid, &pgid, &ppid, &kept, &dropped,
                            &unmasked, &null_in, &pdeathsig),
                     8);
    assert_true(pid > 0);
    assert_int_equal(sid, pid); /* a session of its own */
    assert_int_equal(pgid, pid);
    assert_int_equal(ppid, getpid()); /* the caller's child, without grandchild */
    assert_int_equal(kept, 1);
    assert_int_equal(dropped, 0);
    assert_int_equal(unmasked, 1);
    assert_int_equal(null_in, 1);
    assert_int_equal(pdeathsig, 0);
    int status;
    assert_int_equal(waitpid(pid, &status, 0), pid);
    close(p.kept);
    close(p.dropped);
}

static void test_detached_grandchild_is_not_the_callers_child(void **state)
{
    (void)state;
    probe p = {-1, -1};
    obi_detached_options opts = {.grandchild = true};
    char text[256];
    pid_t pid = -1;
    spawn_and_read(&opts, &p, text, sizeof text, &pid);
    int sid, pgid, ppid;
    assert_int_equal(sscanf(text, "%d %d %d", &sid, &pgid, &ppid), 3);
    assert_int_equal(pid, 0); /* no pid to wait for */
    assert_int_not_equal(ppid, getpid());
    assert_int_not_equal(pgid, getpgid(0)); /* a group of its own */
    assert_int_not_equal(sid, getsid(0));
    assert_int_equal(waitpid(-1, NULL, WNOHANG), -1); /* no child left to the caller */
}

static void test_detached_helper_dies_with_its_caller_when_asked(void **state)
{
    (void)state;
    probe p = {-1, -1};
    obi_detached_options opts = {.die_with_caller = true};
    char text[256];
    pid_t pid = 0;
    spawn_and_read(&opts, &p, text, sizeof text, &pid);
    int pdeathsig = 0;
    assert_int_equal(sscanf(text, "%*d %*d %*d %*d %*d %*d %*d %d", &pdeathsig), 1);
    assert_int_equal(pdeathsig, SIGKILL);
    assert_int_equal(waitpid(pid, NULL, 0), pid);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_detached_helper_gets_nothing_of_the_caller_but_what_it_keeps),
        cmocka_unit_test(test_detached_grandchild_is_not_the_callers_child),
        cmocka_unit_test(test_detached_helper_dies_with_its_caller_when_asked),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
