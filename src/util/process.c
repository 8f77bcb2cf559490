/*
 * Child processes (see include/ocibuild/process.h). Everything the child needs is prepared
 * before fork, so the child only calls async-signal-safe functions (safe in threaded daemons).
 */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
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

static void child_setup_fd(int fd, int target)
{
    if (fd == -2)
        return;
    if (fd == -1) {
        int null_fd = open("/dev/null", target == 0 ? O_RDONLY : O_WRONLY);
        if (null_fd < 0)
            _exit(127);
        fd = null_fd;
    }
    if (fd != target) {
        if (dup2(fd, target) < 0)
            _exit(127);
    } else {
        int flags = fcntl(fd, F_GETFD);
        if (flags >= 0)
            fcntl(fd, F_SETFD, flags & ~FD_CLOEXEC);
    }
}

int obi_spawn(char *const argv[], const obi_spawn_options *opts, pid_t *pid_out, obi_error **err)
{
    obi_spawn_options defaults = OBI_SPAWN_OPTIONS_INIT;
    if (!opts)
        opts = &defaults;
    cleanup_free char *exe = obi_find_executable(argv[0], "/usr/sbin:/sbin");
    if (!exe)
        return obi_error_set(err, -ENOENT, "%s: command not found", argv[0]);
    /* A pipe that closes on exec tells the parent whether exec succeeded. */
    int status_pipe[2];
    if (pipe2(status_pipe, O_CLOEXEC) < 0)
        return obi_error_set_errno(err, errno, "pipe");
    pid_t parent = getpid();
    pid_t pid = fork();
    if (pid < 0) {
        int e = errno;
        close(status_pipe[0]);
        close(status_pipe[1]);
        return obi_error_set_errno(err, e, "fork");
    }
    if (pid == 0) {
        close(status_pipe[0]);
        if (opts->die_with_parent) {
            prctl(PR_SET_PDEATHSIG, SIGKILL);
            if (getppid() != parent)
                _exit(127);
        }
        if (opts->new_process_group)
            setpgid(0, 0);
        sigset_t none;
        sigemptyset(&none);
        sigprocmask(SIG_SETMASK, &none, NULL);
        signal(SIGPIPE, SIG_DFL);
        child_setup_fd(opts->stdin_fd, 0);
        child_setup_fd(opts->stdout_fd, 1);
        child_setup_fd(opts->stderr_fd, 2);
        execve(exe, argv, opts->envp ? opts->envp : environ);
        int e = errno;
        (void)!write(status_pipe[1], &e, sizeof e);
        _exit(127);
    }
    close(status_pipe[1]);
    int child_errno = 0;
    ssize_t n;
    do {
        n = read(status_pipe[0], &child_errno, sizeof child_errno);
    } while (n < 0 && errno == EINTR);
    close(status_pipe[0]);
    if (n == (ssize_t)sizeof child_errno) {
        int status;
        waitpid(pid, &status, 0);
        return obi_error_set_errno(err, child_errno, "exec %s", exe);
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
    int fds[2];
    if (pipe2(fds, O_CLOEXEC) < 0)
        return obi_error_set_errno(err, errno, "pipe");
    cleanup_close int read_end = fds[0];
    cleanup_close int write_end = fds[1];
    obi_spawn_options opts = OBI_SPAWN_OPTIONS_INIT;
    opts.stdout_fd = write_end;
    opts.stderr_fd = merge_stderr ? write_end : -2;
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
