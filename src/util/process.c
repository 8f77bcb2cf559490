/*
 * Child processes (see include/ocibuild/process.h). Everything the child needs is prepared
 * before the spawn, so the child only makes system calls (safe in threaded daemons). The child
 * is cloned with CLONE_VM | CLONE_VFORK, as posix_spawn does it: it shares our memory until it
 * execs, so no page tables are copied (a fork of a process with a mapped store and libraries
 * cost ~0.5 ms per runtime call), and it reports a failed exec in that memory, without a pipe.
 * posix_spawn itself is not enough: it cannot set PR_SET_PDEATHSIG nor unshare or join a mount
 * namespace.
 */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <poll.h>
#include <signal.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <pthread.h>
#include <sched.h>
#include <sys/mman.h>
#include <sys/mount.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "ocibuild/buf.h"
#include "ocibuild/cleanup.h"
#include "ocibuild/process.h"

char *obi_find_executable(const char *name, const char *extra_dirs)
{
    if (strchr(name, '/'))
        return access(name, X_OK) == 0 ? strdup(name) : NULL;
    const char *path = getenv("PATH");
    cleanup_free char *dirs = NULL;
    if (asprintf(&dirs, "%s:%s", path && *path ? path : "/usr/local/bin:/usr/bin:/bin",
                 extra_dirs ? extra_dirs : "") < 0)
        return NULL;
    char *save = NULL;
    for (char *dir = strtok_r(dirs, ":", &save); dir; dir = strtok_r(NULL, ":", &save)) {
        char *candidate = NULL;
        if (asprintf(&candidate, "%s/%s", dir, name) < 0)
            return NULL;
        struct stat st;
        if (stat(candidate, &st) == 0 && S_ISREG(st.st_mode) && access(candidate, X_OK) == 0)
            return candidate;
        free(candidate);
    }
    return NULL;
}

/* What the child of obi_spawn needs, prepared by the parent. The child runs on its own stack in
 * the parent's memory (CLONE_VM | CLONE_VFORK) until it execs: it only makes system calls and
 * writes nothing but exec_errno, which the parent reads once the child has exec'd or exited. */
typedef struct spawn_child {
    const char *exe;
    char *const *argv;
    char *const *envp;
    const obi_spawn_options *opts;
    pid_t parent;
    const char *cwd; /* where to go back in opts->hide_mount_ns; NULL: not joined */
    int exec_errno;  /* 0: exec succeeded */
} spawn_child;

static int child_setup_fd(int fd, int target)
{
    if (fd == -2)
        return 0;
    if (fd == -1) {
        fd = open("/dev/null", target == 0 ? O_RDONLY : O_WRONLY);
        if (fd < 0)
            return -1;
    }
    if (fd != target)
        return dup2(fd, target) < 0 ? -1 : 0;
    int flags = fcntl(fd, F_GETFD);
    return flags < 0 ? -1 : fcntl(fd, F_SETFD, flags & ~FD_CLOEXEC);
}

/* A mount namespace of the child's own in which `path` is not mounted (docs/build.md "crun on
 * hybrid-cgroup hosts"): propagation made private first, so the detach stays in it. */
static int child_hide_mount(const char *path)
{
    /* "none": ignored for a propagation change, and no NULL string for checkers (valgrind). */
    if (unshare(CLONE_NEWNS) < 0 || mount("none", "/", "none", MS_REC | MS_PRIVATE, NULL) < 0)
        return -1;
    return umount2(path, MNT_DETACH) < 0 && errno != EINVAL && errno != ENOENT ? -1 : 0;
}

static int spawn_child_main(void *arg)
{
    spawn_child *c = arg;
    const obi_spawn_options *opts = c->opts;
    /* Handlers of the parent must not run here (they would act on its memory): every caught
     * signal goes back to its default before signals are unblocked. */
    struct sigaction dfl = {.sa_handler = SIG_DFL};
    for (int sig = 1; sig < _NSIG; sig++) {
        struct sigaction old;
        if (sig == SIGPIPE || (sigaction(sig, NULL, &old) == 0 && old.sa_handler != SIG_DFL &&
                               old.sa_handler != SIG_IGN))
            sigaction(sig, &dfl, NULL); /* fails harmlessly for SIGKILL, SIGSTOP, 32, 33 */
    }
    if (opts->die_with_parent) {
        prctl(PR_SET_PDEATHSIG, SIGKILL);
        if (getppid() != c->parent)
            goto fail;
    }
    if (opts->new_process_group)
        setpgid(0, 0);
    if (c->cwd ? setns(opts->hide_mount_ns, CLONE_NEWNS) < 0 || chdir(c->cwd) < 0
               : opts->hide_mount && child_hide_mount(opts->hide_mount) < 0)
        goto fail;
    if (child_setup_fd(opts->stdin_fd, 0) < 0 || child_setup_fd(opts->stdout_fd, 1) < 0 ||
        child_setup_fd(opts->stderr_fd, 2) < 0)
        goto fail;
    sigset_t none;
    sigemptyset(&none);
    sigprocmask(SIG_SETMASK, &none, NULL);
    if (opts->exec_fd < 0 ||
        (execveat(opts->exec_fd, "", c->argv, c->envp, AT_EMPTY_PATH) < 0 && errno == ENOSYS))
        execve(c->exe, c->argv, c->envp);
fail:
    c->exec_errno = errno ? errno : EIO;
    _exit(127);
}

/* The child's stack: it runs only the few calls above before exec. */
#define SPAWN_STACK_SIZE (64 * 1024)

int obi_spawn(char *const argv[], const obi_spawn_options *opts, pid_t *pid_out, obi_error **err)
{
    obi_spawn_options defaults = OBI_SPAWN_OPTIONS_INIT;
    if (!opts)
        opts = &defaults;
    cleanup_free char *exe = obi_find_executable(argv[0], "/usr/sbin:/sbin");
    if (!exe)
        return obi_error_set(err, -ENOENT, "%s: command not found", argv[0]);
    /* setns puts the joiner at the namespace's root: it goes back to our cwd by path (the same
     * directory there: the namespace has our mounts but the hidden one, mount_ns.h) */
    char cwd[PATH_MAX];
    bool join = opts->hide_mount && opts->hide_mount_ns >= 0 && getcwd(cwd, sizeof cwd);
    spawn_child child = {
        exe, argv, opts->envp ? opts->envp : environ, opts, getpid(), join ? cwd : NULL, 0};
    void *stack = mmap(NULL, SPAWN_STACK_SIZE, PROT_READ | PROT_WRITE,
                       MAP_PRIVATE | MAP_ANONYMOUS | MAP_STACK, -1, 0);
    if (stack == MAP_FAILED)
        return obi_error_set_errno(err, errno, "spawn %s: mmap a stack", exe);
    /* All signals blocked until the child has reset their handlers (it inherits the mask). */
    sigset_t all, saved;
    sigfillset(&all);
    pthread_sigmask(SIG_SETMASK, &all, &saved);
    /* The parent waits (CLONE_VFORK) until the child has exec'd or exited: no page tables are
     * copied, as fork would, and exec_errno is the child's answer. */
    pid_t pid = clone(spawn_child_main, (char *)stack + SPAWN_STACK_SIZE,
                      CLONE_VM | CLONE_VFORK | SIGCHLD, &child);
    int clone_errno = errno;
    pthread_sigmask(SIG_SETMASK, &saved, NULL);
    munmap(stack, SPAWN_STACK_SIZE);
    if (pid < 0)
        return obi_error_set_errno(err, clone_errno, "spawn %s", exe);
    if (child.exec_errno) {
        int status;
        while (waitpid(pid, &status, 0) < 0 && errno == EINTR) {
        }
        return obi_error_set_errno(err, child.exec_errno, "exec %s", exe);
    }
    *pid_out = pid;
    return 0;
}

int obi_wait(pid_t pid, int *status, obi_error **err)
{
    for (;;) {
        if (waitpid(pid, status, 0) >= 0)
            return 0;
        if (errno != EINTR)
            return obi_error_set_errno(err, errno, "waitpid %d", (int)pid);
    }
}

int obi_wait_exit_code(int status)
{
    if (WIFEXITED(status))
        return WEXITSTATUS(status);
    if (WIFSIGNALED(status))
        return 128 + WTERMSIG(status);
    return 255;
}

int obi_run_capture(char *const argv[], bool merge_stderr, size_t max_output, char **output,
                    int *exit_code, obi_error **err)
{
    obi_spawn_options opts = OBI_SPAWN_OPTIONS_INIT;
    opts.stderr_fd = merge_stderr ? 1 : -2;
    return obi_run_capture_opts(argv, &opts, max_output, output, exit_code, err);
}

int obi_run_capture_opts(char *const argv[], const obi_spawn_options *spawn, size_t max_output,
                         char **output, int *exit_code, obi_error **err)
{
    int fds[2];
    if (pipe2(fds, O_CLOEXEC) < 0)
        return obi_error_set_errno(err, errno, "pipe");
    cleanup_close int read_end = fds[0];
    cleanup_close int write_end = fds[1];
    obi_spawn_options opts = *spawn;
    opts.stdin_fd = -1;
    opts.stderr_fd = spawn->stderr_fd == 1 ? write_end : spawn->stderr_fd;
    opts.stdout_fd = write_end;
    pid_t pid;
    int r = obi_spawn(argv, &opts, &pid, err);
    if (r < 0)
        return r;
    close(steal_fd(&write_end));
    cleanup_buf obi_buf buf = OBI_BUF_INIT;
    uint8_t chunk[4096];
    for (;;) {
        ssize_t n = read(read_end, chunk, sizeof chunk);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            break;
        size_t room = max_output > buf.len ? max_output - buf.len : 0;
        if (room)
            obi_buf_append(&buf, chunk, (size_t)n < room ? (size_t)n : room);
    }
    int status;
    r = obi_wait(pid, &status, err);
    if (r < 0)
        return r;
    if (output)
        *output = obi_buf_steal(&buf);
    if (exit_code)
        *exit_code = obi_wait_exit_code(status);
    return 0;
}
