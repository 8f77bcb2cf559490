/*
 * OCI runtime driver (see include/ocibuild/runtime.h). A foreground run is a poll loop over the
 * runtime's stdout/stderr pipes, a pidfd for its exit, the caller's cancel fd and the deadline.
 * Whatever ends the loop early (timeout, cancel) goes through obi_runtime_destroy, so no path
 * leaves a container behind.
 */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "ocibuild/buf.h"
#include "ocibuild/cleanup.h"
#include "ocibuild/fs.h"
#include "ocibuild/process.h"
#include "ocibuild/runtime.h"

#define DEFAULT_LOG_TAIL (64 * 1024)
#define KILL_GRACE_MS 10000

struct obi_runtime {
    char *path;
    char *state_root;
};

int obi_runtime_new(const char *name_or_path, const char *state_root, obi_runtime **out,
                    obi_error **err)
{
    if (!name_or_path || !*name_or_path)
        name_or_path = "runc";
    cleanup_free char *path = obi_find_executable(name_or_path, "/usr/sbin:/sbin:/usr/local/sbin");
    if (!path)
        return obi_error_set(err, -ENOENT,
                             "OCI runtime '%s' not found (looked in $PATH, /usr/sbin, /sbin); "
                             "install runc or pass --runtime PATH",
                             name_or_path);
    obi_runtime *rt = calloc(1, sizeof *rt);
    if (!rt)
        return obi_error_oom(err);
    rt->path = steal_pointer(&path);
    rt->state_root = state_root ? strdup(state_root) : NULL;
    *out = rt;
    return 0;
}

void obi_runtime_free(obi_runtime *runtime)
{
    if (!runtime)
        return;
    free(runtime->path);
    free(runtime->state_root);
    free(runtime);
}

const char *obi_runtime_path(const obi_runtime *runtime)
{
    return runtime->path;
}
const char *obi_runtime_state_root(const obi_runtime *runtime)
{
    return runtime->state_root;
}

/* argv = RUNTIME [--root R] args... (NULL-terminated); returned array borrows the strings. */
static const char **runtime_argv(const obi_runtime *rt, const char *const *args, size_t n_args)
{
    const char **argv = calloc(n_args + 4, sizeof *argv);
    if (!argv)
        return NULL;
    size_t i = 0;
    argv[i++] = rt->path;
    if (rt->state_root) {
        argv[i++] = "--root";
        argv[i++] = rt->state_root;
    }
    for (size_t j = 0; j < n_args; j++)
        argv[i++] = args[j];
    argv[i] = NULL;
    return argv;
}

/* Runs a short runtime command, returning its exit code and output. */
static int runtime_command(obi_runtime *rt, const char *const *args, size_t n_args, char **output,
                           int *exit_code, obi_error **err)
{
    cleanup_free const char **argv = runtime_argv(rt, args, n_args);
    if (!argv)
        return obi_error_oom(err);
    return obi_run_capture((char *const *)argv, true, 64 * 1024, output, exit_code, err);
}

static bool says_not_exist(const char *output)
{
    return output && (strstr(output, "does not exist") || strstr(output, "not found") ||
                      strstr(output, "No such file"));
}

int obi_runtime_kill(obi_runtime *runtime, const char *id, const char *signal_name, obi_error **err)
{
    const char *args[] = {"kill", id, signal_name};
    cleanup_free char *output = NULL;
    int code;
    int r = runtime_command(runtime, args, 3, &output, &code, err);
    if (r < 0)
        return r;
    if (code != 0) {
        if (says_not_exist(output))
            return obi_error_set(err, -ENOENT, "container %s does not exist", id);
        return obi_error_set(err, -EIO, "%s kill %s %s: exit %d: %s", runtime->path, id,
                             signal_name, code, output);
    }
    return 0;
}

int obi_runtime_delete(obi_runtime *runtime, const char *id, bool force, obi_error **err)
{
    const char *args[] = {"delete", force ? "--force" : id, id};
    cleanup_free char *output = NULL;
    int code;
    int r = runtime_command(runtime, force ? args : args + 1, force ? 3 : 2, &output, &code, err);
    if (r < 0)
        return r;
    if (code != 0 && !says_not_exist(output))
        return obi_error_set(err, -EIO, "%s delete %s: exit %d: %s", runtime->path, id, code,
                             output);
    return 0;
}

int obi_runtime_state(obi_runtime *runtime, const char *id, json_t **out, obi_error **err)
{
    const char *args[] = {"state", id};
    cleanup_free char *output = NULL;
    int code;
    int r = runtime_command(runtime, args, 2, &output, &code, err);
    if (r < 0)
        return r;
    if (code != 0) {
        if (says_not_exist(output))
            return obi_error_set(err, -ENOENT, "container %s does not exist", id);
        return obi_error_set(err, -EIO, "%s state %s: exit %d: %s", runtime->path, id, code,
                             output);
    }
    json_error_t jerr;
    json_t *state = json_loads(output, 0, &jerr);
    if (!state)
        return obi_error_set(err, -EIO, "%s state %s: invalid JSON: %s", runtime->path, id,
                             jerr.text);
    *out = state;
    return 0;
}

int obi_runtime_destroy(obi_runtime *runtime, const char *id, obi_error **err)
{
    cleanup_error obi_error *kill_err = NULL;
    (void)obi_runtime_kill(runtime, id, "KILL", &kill_err);
    /* delete --force kills whatever is left and removes the state, running or not. */
    return obi_runtime_delete(runtime, id, true, err);
}

int obi_runtime_run_detached(obi_runtime *runtime, const char *bundle, const char *id,
                             const char *log_path, obi_error **err)
{
    return obi_runtime_run_detached_pid_file(runtime, bundle, id, log_path, NULL, err);
}

int obi_runtime_run_detached_pid_file(obi_runtime *runtime, const char *bundle, const char *id,
                                      const char *log_path, const char *pid_file, obi_error **err)
{
    cleanup_close int log_fd =
        open(log_path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC | O_NOFOLLOW, 0640);
    if (log_fd < 0)
        return obi_error_set_errno(err, errno, "open log %s", log_path);
    const char *args[] = {"run", "--detach", "--bundle", bundle, "--pid-file", pid_file, id};
    if (!pid_file) {
        args[4] = id;
        args[5] = args[6] = NULL;
    }
    cleanup_free const char **argv = runtime_argv(runtime, args, pid_file ? 7 : 5);
    if (!argv)
        return obi_error_oom(err);
    obi_spawn_options opts = OBI_SPAWN_OPTIONS_INIT;
    opts.stdout_fd = log_fd;
    opts.stderr_fd = log_fd;
    opts.die_with_parent = false;
    pid_t pid;
    int r = obi_spawn((char *const *)argv, &opts, &pid, err);
    if (r < 0)
        return r;
    int status;
    r = obi_wait(pid, &status, err);
    if (r < 0)
        return r;
    int code = obi_wait_exit_code(status);
    if (code != 0) {
        cleanup_error obi_error *ignored = NULL;
        obi_runtime_destroy(runtime, id, &ignored);
        cleanup_free char *log = NULL;
        size_t len = 0;
        cleanup_error obi_error *read_err = NULL;
        obi_read_file_tail(log_path, 4096, &log, &len, &read_err);
        return obi_error_set(err, -EIO, "%s run --detach %s: exit %d: %s", runtime->path, id, code,
                             log ? log : "(no output)");
    }
    return 0;
}

/* A byte ring that keeps the last cap bytes. */
typedef struct tail_log {
    uint8_t *data;
    size_t cap, start, len;
} tail_log;

static void tail_append(tail_log *t, const uint8_t *p, size_t n)
{
    if (n >= t->cap) {
        memcpy(t->data, p + n - t->cap, t->cap);
        t->start = 0;
        t->len = t->cap;
        return;
    }
    for (size_t i = 0; i < n; i++) {
        size_t pos = (t->start + t->len) % t->cap;
        t->data[pos] = p[i];
        if (t->len < t->cap)
            t->len++;
        else
            t->start = (t->start + 1) % t->cap;
    }
}

static char *tail_string(const tail_log *t, size_t *len_out)
{
    char *s = malloc(t->len + 1);
    if (!s)
        return NULL;
    for (size_t i = 0; i < t->len; i++)
        s[i] = (char)t->data[(t->start + i) % t->cap];
    s[t->len] = 0;
    *len_out = t->len;
    return s;
}

static int64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

void obi_run_result_clear(obi_run_result *result)
{
    free(result->log_tail);
    memset(result, 0, sizeof *result);
}

int obi_runtime_run(obi_runtime *runtime, const char *bundle, const char *id,
                    const obi_run_options *opts, obi_run_result *result, obi_error **err)
{
    obi_run_options defaults = OBI_RUN_OPTIONS_INIT;
    if (!opts)
        opts = &defaults;
    int out_pipe[2];
    if (pipe2(out_pipe, O_CLOEXEC) < 0)
        return obi_error_set_errno(err, errno, "pipe");
    cleanup_close int read_end = out_pipe[0];
    cleanup_close int write_end = out_pipe[1];
    const char *args[] = {"run", "--bundle", bundle, id};
    cleanup_free const char **argv = runtime_argv(runtime, args, 4);
    if (!argv)
        return obi_error_oom(err);
    obi_spawn_options spawn_opts = OBI_SPAWN_OPTIONS_INIT;
    spawn_opts.stdout_fd = write_end;
    spawn_opts.stderr_fd = write_end;
    pid_t pid;
    int r = obi_spawn((char *const *)argv, &spawn_opts, &pid, err);
    if (r < 0)
        return r;
    close(steal_fd(&write_end));
    cleanup_close int pidfd = (int)syscall(SYS_pidfd_open, pid, 0);

    size_t cap = opts->log_tail_max ? opts->log_tail_max : DEFAULT_LOG_TAIL;
    cleanup_free uint8_t *tail_storage = malloc(cap);
    if (!tail_storage) {
        kill(pid, SIGKILL);
        int st;
        obi_wait(pid, &st, NULL);
        return obi_error_oom(err);
    }
    tail_log tail = {tail_storage, cap, 0, 0};
    int64_t deadline = opts->timeout_seconds ? now_ms() + (int64_t)opts->timeout_seconds * 1000 : 0;
    bool timed_out = false, cancelled = false, pipe_open = true, exited = false;
    int status = 0;
    int64_t kill_sent_at = 0;

    while (pipe_open || !exited) {
        struct pollfd fds[3];
        nfds_t n = 0;
        int pipe_index = -1, pid_index = -1, cancel_index = -1;
        if (pipe_open) {
            pipe_index = (int)n;
            fds[n++] = (struct pollfd){read_end, POLLIN, 0};
        }
        if (!exited && pidfd >= 0) {
            pid_index = (int)n;
            fds[n++] = (struct pollfd){pidfd, POLLIN, 0};
        }
        if (opts->cancel_fd >= 0 && !cancelled && !timed_out) {
            cancel_index = (int)n;
            fds[n++] = (struct pollfd){opts->cancel_fd, POLLIN, 0};
        }
        int wait_ms = pidfd >= 0 ? 1000 : 100;
        if (deadline && !timed_out && !cancelled) {
            int64_t left = deadline - now_ms();
            if (left < wait_ms)
                wait_ms = left > 0 ? (int)left : 0;
        }
        int pr = poll(fds, n, wait_ms);
        if (pr < 0 && errno != EINTR)
            break;
        if (pr > 0 && pipe_index >= 0 && (fds[pipe_index].revents & (POLLIN | POLLHUP | POLLERR))) {
            uint8_t chunk[16384];
            ssize_t got = read(read_end, chunk, sizeof chunk);
            if (got > 0) {
                tail_append(&tail, chunk, (size_t)got);
                if (opts->on_output)
                    opts->on_output(chunk, (size_t)got, opts->output_ctx);
            } else if (got == 0 || (errno != EINTR && errno != EAGAIN)) {
                pipe_open = false;
            }
        }
        if (!exited && (pid_index < 0 || (pr > 0 && (fds[pid_index].revents & POLLIN)))) {
            pid_t w = waitpid(pid, &status, WNOHANG);
            if (w == pid)
                exited = true;
        }
        if (cancel_index >= 0 && pr > 0 && (fds[cancel_index].revents & POLLIN))
            cancelled = true;
        if (deadline && !timed_out && !cancelled && now_ms() >= deadline)
            timed_out = true;
        if ((timed_out || cancelled) && !kill_sent_at) {
            kill_sent_at = now_ms();
            cleanup_error obi_error *ignored = NULL;
            obi_runtime_kill(runtime, id, "KILL", &ignored);
        }
        if (kill_sent_at && !exited && now_ms() - kill_sent_at > KILL_GRACE_MS) {
            /* The container may not exist yet (runtime still creating it): stop the runtime. */
            kill(pid, SIGKILL);
        }
        if (exited && pipe_open && kill_sent_at) {
            /* Do not wait for stray holders of the pipe after a kill. */
            pipe_open = false;
        }
    }
    if (!exited) {
        kill(pid, SIGKILL);
        obi_wait(pid, &status, NULL);
    }
    if (timed_out || cancelled) {
        cleanup_error obi_error *destroy_err = NULL;
        if (obi_runtime_destroy(runtime, id, &destroy_err) < 0)
            return obi_error_set(err, -EIO, "cleaning up container %s: %s", id,
                                 destroy_err->message);
    }
    memset(result, 0, sizeof *result);
    result->exit_code = obi_wait_exit_code(status);
    result->timed_out = timed_out;
    result->cancelled = cancelled;
    result->log_tail = tail_string(&tail, &result->log_tail_len);
    return 0;
}
