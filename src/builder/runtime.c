/*
 * OCI runtime driver (see include/ocibuild/runtime.h). A build's run is a small state machine
 * (starting, running, killing, deleting, done; its table and diagram are below, its types in
 * runtime_internal.h) driven by one poll over the container's output pipe, a pidfd for the exit
 * of the runtime (and, detached, then of the container's init), the caller's cancel fd and the
 * deadline. The container's stdout and stderr are this one pipe (lines in the order written,
 * as Nix gives a builder) in both of the ways a run goes:
 * - crun runs in the foreground (`run --pid-file`): the container's process inherits crun's
 *   stdio, crun waits for it, exits with its exit code and deletes the container itself. Its
 *   pid file says that the command started; until it is there, output is held (it may be
 *   crun's own error).
 * - Any other runtime runs detached (`run --detach --pid-file`): runc's foreground run copies
 *   stdout and stderr through a pipe each, which loses their order. The runtime's exit says
 *   whether the command started; as a child subreaper we inherit the container's init, wait
 *   for it and delete the container.
 * Every way out of a run passes through deleting (kill + delete --force unless the init exited
 * by itself; nothing when a foreground runtime deleted its own), so none leaves a container
 * behind, or it says that it did (OBI_ECONTAINER_LEFT).
 */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/mount.h>
#include <sys/prctl.h>
#include <sys/sendfile.h>
#include <sys/stat.h>
#include <sys/statfs.h>
#include <sys/utsname.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "ocibuild/blake3.h"
#include "ocibuild/buf.h"
#include "ocibuild/cleanup.h"
#include "ocibuild/fs.h"
#include "ocibuild/hex.h"
#include "ocibuild/mount_ns.h"
#include "ocibuild/number.h"
#include "ocibuild/process.h"
#include "ocibuild/runtime.h"
#include "runtime_internal.h"

#define DEFAULT_LOG_TAIL (64 * 1024)
/* Output held back while the runtime starts the container (its own words, or the first of the
 * build's, written in the moment before the runtime exits): more than this is dropped, said. */
#define HELD_OUTPUT_MAX (1024 * 1024)
#define KILL_GRACE_MS 10000
/* Foreground: how often `kill` is sent again while the container does not exist yet (the
 * runtime is still making it), and how often held output looks for the runtime's pid file. */
#define KILL_RETRY_MS 100
#define START_LOOK_MS 10

struct obi_runtime {
    char *path;
    char *state_root;
    const char *hide_mount;  /* every call runs without this mount (crun on hybrid hosts) */
    obi_mount_ns *hidden_ns; /* with hide_mount: the namespace the calls join (mount_ns.h) */
    bool foreground;         /* builds run as a foreground `run` (crun; see below) */
    bool no_cgroups;         /* every call passes CRUN_NO_CGROUPS (obi_runtime_set_cgroups) */
    int exec_fd;             /* the binary every call runs from, unwritable; -1: the path */
    dev_t exec_dev;          /* and its identity: a process that closed its fds (a detached */
    ino_t exec_ino;          /* supervisor) may have that number on another file since */
};

/* crun (1.8) refuses a hybrid cgroup layout whose cgroup2 mount has controllers ("cgroups in
 * hybrid mode not supported"); without that mount it sees plain cgroup v1 and works. Root
 * gives it a private mount namespace without the cgroup2 mount, one kept for every call
 * (mount_ns.h; docs/build.md "crun on hybrid-cgroup hosts"); an unprivileged user cannot detach it,
 * so there crun stays refused (and the default runtime is runc, runtime probe). */
#define HYBRID_CGROUP2_MOUNT "/sys/fs/cgroup/unified"
#ifndef CGROUP2_SUPER_MAGIC
#define CGROUP2_SUPER_MAGIC 0x63677270
#endif

/* crun's global option that makes no cgroup for the container (and touches none on kill and
 * delete of one made so; crun 1.8 still removes the cgroups of a container made with them,
 * from its state's cgroup-path). runc 1.1 has no such option. */
#define CRUN_NO_CGROUPS "--cgroup-manager=disabled"

static bool is_crun(const char *path)
{
    const char *base = strrchr(path, '/');
    return !strcmp(base ? base + 1 : path, "crun");
}

/* As root: a read-only view of the binary, a detached bind mount of the file alone
 * (open_tree OPEN_TREE_CLONE) made read-only (mount_setattr). It is in no mount namespace:
 * nothing reaches it but this fd and the /proc/PID/exe of the calls run from it, and only
 * CAP_SYS_ADMIN in the initial user namespace could make it writable again. ~10 us, where the
 * sealed copy below costs 0.3-0.8 ms to make and 0.3 ms to free. */
static int read_only_view(int binary)
{
    cleanup_close int view =
        open_tree(binary, "", AT_EMPTY_PATH | OPEN_TREE_CLONE | OPEN_TREE_CLOEXEC);
    struct mount_attr attr = {.attr_set = MOUNT_ATTR_RDONLY | MOUNT_ATTR_NOSUID};
    if (view < 0 || mount_setattr(view, "", AT_EMPTY_PATH, &attr, sizeof attr) < 0)
        return -1;
    return steal_fd(&view);
}

/* Anyone else (no CAP_SYS_ADMIN): a copy in a memfd sealed against writes, growing, shrinking
 * and further seals, exactly what crun checks. */
static int sealed_copy(int binary, off_t size)
{
    cleanup_close int copy = memfd_create("ocibuild-crun", MFD_CLOEXEC | MFD_ALLOW_SEALING);
    if (copy < 0)
        return -1;
    for (off_t offset = 0; offset < size;)
        if (sendfile(copy, binary, &offset, (size_t)(size - offset)) <= 0)
            return -1;
    if (fcntl(copy, F_ADD_SEALS, F_SEAL_SEAL | F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_WRITE) < 0)
        return -1;
    return steal_fd(&copy);
}

/* crun re-executes itself from a copy of its own binary on every call (its defence against
 * CVE-2019-5736: a container overwriting the host's runtime through /proc/self/exe), unless it
 * already runs from a fully sealed memfd or from a read-only mount (crun 1.8's cloned_binary.c:
 * F_GET_SEALS, then fstatfs of /proc/self/exe): a second exec and dynamic link per call, with a
 * bind mount in /tmp or a copy of the binary, ~1.5 ms CPU here (bench/README.md "The per-build
 * path"). The runtime object makes one such file once and runs every call from it: the same
 * defence, one exec per call (docs/security.md "The runtime binary"). Only an ELF file (a
 * script cannot run from a close-on-exec fd). -1 when neither can be made: crun then copies
 * itself, as before. */
static int unwritable_binary(const char *path)
{
    cleanup_close int binary = open(path, O_RDONLY | O_CLOEXEC);
    struct stat st;
    char magic[4];
    if (binary < 0 || fstat(binary, &st) < 0 || !S_ISREG(st.st_mode) ||
        pread(binary, magic, sizeof magic, 0) != (ssize_t)sizeof magic ||
        memcmp(magic, "\177ELF", sizeof magic) != 0)
        return -1;
    int fd = read_only_view(binary);
    return fd >= 0 ? fd : sealed_copy(binary, st.st_size);
}

static bool cgroups_are_hybrid(void)
{
    struct statfs root, unified;
    return statfs("/sys/fs/cgroup", &root) == 0 && root.f_type != CGROUP2_SUPER_MAGIC &&
           statfs(HYBRID_CGROUP2_MOUNT, &unified) == 0 && unified.f_type == CGROUP2_SUPER_MAGIC;
}

/* The unwritable binary to run from, if this process still has it under its number; -1: the path
 * (crun then copies itself). A detached supervisor keeps the runtime object made before it
 * was spawned, whose fds were closed: the number may now name a log file or /dev/null. */
static int exec_fd_of(const obi_runtime *rt)
{
    struct stat st;
    if (rt->exec_fd < 0 || fstat(rt->exec_fd, &st) < 0 || st.st_dev != rt->exec_dev ||
        st.st_ino != rt->exec_ino)
        return -1;
    return rt->exec_fd;
}

/* The namespace a call joins, without the cgroup2 mount (the caller closes it); -1: the call
 * makes its own (no hide_mount, or the kept one cannot be had here). */
static int hidden_ns_fd(obi_runtime *rt)
{
    return rt->hidden_ns ? obi_mount_ns_join_fd(rt->hidden_ns) : -1;
}

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
    rt->exec_fd = -1;
    if (is_crun(rt->path)) {
        if (geteuid() == 0 && cgroups_are_hybrid()) {
            rt->hide_mount = HYBRID_CGROUP2_MOUNT;
            if (!(rt->hidden_ns = obi_mount_ns_new(rt->hide_mount))) {
                obi_runtime_free(rt);
                return obi_error_oom(err);
            }
        }
        rt->foreground = true;
        rt->exec_fd = unwritable_binary(rt->path);
        struct stat st;
        if (rt->exec_fd >= 0 && fstat(rt->exec_fd, &st) == 0) {
            rt->exec_dev = st.st_dev;
            rt->exec_ino = st.st_ino;
        }
    }
    *out = rt;
    return 0;
}

void obi_runtime_free(obi_runtime *runtime)
{
    if (!runtime)
        return;
    if (exec_fd_of(runtime) >= 0) /* not a number some other file took since */
        close(runtime->exec_fd);
    obi_mount_ns_free(runtime->hidden_ns);
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
bool obi_runtime_hides_cgroup2(const obi_runtime *runtime)
{
    return runtime->hide_mount != NULL;
}
bool obi_runtime_takes_seccomp_bpf(const obi_runtime *runtime)
{
    return is_crun(runtime->path);
}
bool obi_runtime_set_cgroups(obi_runtime *runtime, bool wanted)
{
    runtime->no_cgroups = !wanted && is_crun(runtime->path);
    return !runtime->no_cgroups;
}
bool obi_runtime_uses_cgroups(const obi_runtime *runtime)
{
    return !runtime->no_cgroups;
}

/* ---- probe cache ---- */

int obi_runtime_probe_key(const char *path, bool rootless, char key[OBI_RUNTIME_PROBE_KEY_LEN + 1],
                          obi_error **err)
{
    struct stat st;
    if (stat(path, &st) < 0)
        return obi_error_set_errno(err, errno, "runtime probe: stat %s", path);
    struct utsname uts;
    if (uname(&uts) < 0)
        return obi_error_set_errno(err, errno, "runtime probe: uname");
    cleanup_buf obi_buf text = OBI_BUF_INIT;
    obi_buf_appendf(&text,
                    "ocibuild runtime probe 1\n%s\n%llu %llu %lld %lld.%09ld %lld.%09ld\n%d %u "
                    "%d\n%s\n",
                    path, (unsigned long long)st.st_dev, (unsigned long long)st.st_ino,
                    (long long)st.st_size, (long long)st.st_mtim.tv_sec, st.st_mtim.tv_nsec,
                    (long long)st.st_ctim.tv_sec, st.st_ctim.tv_nsec, rootless, (unsigned)geteuid(),
                    cgroups_are_hybrid(), uts.release);
    if (!text.data)
        return obi_error_oom(err);
    uint8_t digest[OBI_BLAKE3_OUT_LEN];
    obi_blake3(text.data, text.len, digest);
    obi_hex_encode(digest, OBI_RUNTIME_PROBE_KEY_LEN / 2, key);
    key[OBI_RUNTIME_PROBE_KEY_LEN] = 0;
    return 0;
}

int obi_runtime_probe_cache_get(const char *dir, const char *key, char **why, obi_error **err)
{
    cleanup_free char *path = obi_path_join(dir, key);
    if (!path)
        return obi_error_oom(err);
    cleanup_free char *text = NULL;
    cleanup_error obi_error *read_err = NULL;
    int r = obi_read_file(path, 4096, &text, NULL, &read_err);
    if (r == -ENOENT)
        return 0;
    if (r < 0)
        return obi_error_move(err, &read_err);
    if (!strcmp(text, "ok\n"))
        return 1;
    if (strncmp(text, "failed: ", 8) != 0)
        return 0; /* not ours, or cut short: probe again */
    text[strcspn(text, "\n")] = 0;
    if (why && !(*why = strdup(text + 8)))
        return obi_error_oom(err);
    return 2;
}

int obi_runtime_probe_cache_put(const char *dir, const char *key, const char *failure,
                                obi_error **err)
{
    /* Only the cache dir itself: its parent (the data dir) has the mode others set. */
    if (mkdir(dir, 0700) < 0 && errno != EEXIST)
        return obi_error_set_errno(err, errno, "mkdir %s", dir);
    cleanup_free char *path = obi_path_join(dir, key);
    cleanup_free char *text = NULL;
    if (!path || asprintf(&text, "%s%s\n", failure ? "failed: " : "ok", failure ? failure : "") < 0)
        return obi_error_oom(err);
    /* One line; newlines of the runtime's message become spaces. */
    for (char *p = text; p[0] && p[1]; p++)
        if (*p == '\n')
            *p = ' ';
    return obi_write_file_atomic(path, text, strlen(text), 0600, err);
}

/* argv = RUNTIME [--root R] [CRUN_NO_CGROUPS] args... (NULL-terminated); returned array borrows
 * the strings. */
static const char **runtime_argv(const obi_runtime *rt, const char *const *args, size_t n_args)
{
    const char **argv = calloc(n_args + 5, sizeof *argv);
    if (!argv)
        return NULL;
    size_t i = 0;
    argv[i++] = rt->path;
    if (rt->state_root) {
        argv[i++] = "--root";
        argv[i++] = rt->state_root;
    }
    if (rt->no_cgroups)
        argv[i++] = CRUN_NO_CGROUPS;
    for (size_t j = 0; j < n_args; j++)
        argv[i++] = args[j];
    argv[i] = NULL;
    return argv;
}

/* The stdin of a runtime call that makes a container: an empty pipe of its own (reads see end
 * of file, as from /dev/null). crun 1.8 chowns the stdio it hands the container's process to
 * that process's user, /dev/null included (runc skips /dev/null): given the host's /dev/null, a
 * crun build made it the slot build user's, and any later build as that user could chmod it
 * for the whole host. -1 with errno on failure. */
static int empty_stdin(void)
{
    int fds[2];
    if (pipe2(fds, O_CLOEXEC) < 0)
        return -1;
    close(fds[1]);
    return fds[0];
}

/* Runs a short runtime command, returning its exit code and output. */
static int runtime_command(obi_runtime *rt, const char *const *args, size_t n_args, char **output,
                           int *exit_code, obi_error **err)
{
    cleanup_free const char **argv = runtime_argv(rt, args, n_args);
    if (!argv)
        return obi_error_oom(err);
    obi_spawn_options opts = OBI_SPAWN_OPTIONS_INIT;
    opts.stderr_fd = 1; /* merged into the output */
    opts.hide_mount = rt->hide_mount;
    cleanup_close int ns_fd = hidden_ns_fd(rt);
    opts.hide_mount_ns = ns_fd;
    opts.exec_fd = exec_fd_of(rt);
    return obi_run_capture_opts((char *const *)argv, &opts, 64 * 1024, output, exit_code, err);
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
    int code = 0;
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
    int code = 0;
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
    int code = 0;
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
    cleanup_close int stdin_fd = empty_stdin();
    if (stdin_fd < 0)
        return obi_error_set_errno(err, errno, "pipe for the stdin of %s", id);
    obi_spawn_options opts = OBI_SPAWN_OPTIONS_INIT;
    opts.stdin_fd = stdin_fd;
    opts.stdout_fd = log_fd;
    opts.stderr_fd = log_fd;
    opts.die_with_parent = false;
    opts.hide_mount = runtime->hide_mount;
    cleanup_close int ns_fd = hidden_ns_fd(runtime);
    opts.hide_mount_ns = ns_fd;
    opts.exec_fd = exec_fd_of(runtime);
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

/* ---- a foreground run: a small state machine ----
 *
 *   STARTING --started--> RUNNING --exited (0, output ended)--> DELETING --> DONE (exit code)
 *   STARTING --spawn failed--> DONE (error; no container was made)
 *   RUNNING --exited failing | runtime died--> DELETING
 *   RUNNING --timeout | cancel | io failed | aside failed--> KILLING
 *   KILLING --runtime gone | grace over | io failed--> DELETING
 *   DELETING --destroyed | destroy failed--> DONE
 *
 * Entering RUNNING runs the caller's while_starting work, if any (the runtime is making the
 * container meanwhile); its failure is "aside failed".
 * `run --detach` is create and start in one call; RUNNING first waits for the runtime to
 * exit (0: the command started, and from then on the container's init is waited for; else
 * OBI_ERUNTIME_START with what the runtime said, exited failing), then for the init. A
 * foreground `run` (crun) is the same call without --detach: RUNNING waits for the runtime
 * alone; its pid file appearing says the command started (the held output flows), its exit
 * without one is OBI_ERUNTIME_START, its exit after one is the init's exit code. KILLING and
 * DELETING are `kill` and `delete --force`; a foreground runtime still making the container is
 * sent `kill` again until it finds it. A detached container stays until deleted, so every exit
 * goes through DELETING; an init that exited by itself needs no kill, just the delete (delete
 * of a container that is gone is no error), and none when a foreground runtime deleted it. One
 * table; the actions run on entering a state (run_enter); events come from one place
 * (run_next_event). The first failure is the run's error; what happens on the way out only adds
 * to its message. An event the table does not allow is refused (obi_run_transition) and is a
 * failure like any other: the run still passes DELETING, so no way out leaves a container. */

/* Every transition there is; any other (state, event) is refused. */
static const struct run_transition {
    obi_run_state from;
    obi_run_event event;
    obi_run_state to;
} run_transitions[] = {
    {OBI_RUN_STARTING, OBI_RUN_EV_STARTED, OBI_RUN_RUNNING},
    {OBI_RUN_STARTING, OBI_RUN_EV_SPAWN_FAILED, OBI_RUN_DONE},
    {OBI_RUN_RUNNING, OBI_RUN_EV_EXITED, OBI_RUN_DELETING},
    {OBI_RUN_RUNNING, OBI_RUN_EV_EXITED_FAILING, OBI_RUN_DELETING},
    {OBI_RUN_RUNNING, OBI_RUN_EV_RUNTIME_DIED, OBI_RUN_DELETING},
    {OBI_RUN_RUNNING, OBI_RUN_EV_TIMEOUT, OBI_RUN_KILLING},
    {OBI_RUN_RUNNING, OBI_RUN_EV_CANCEL, OBI_RUN_KILLING},
    {OBI_RUN_RUNNING, OBI_RUN_EV_IO_FAILED, OBI_RUN_KILLING},
    {OBI_RUN_RUNNING, OBI_RUN_EV_ASIDE_FAILED, OBI_RUN_KILLING},
    {OBI_RUN_KILLING, OBI_RUN_EV_RUNTIME_GONE, OBI_RUN_DELETING},
    {OBI_RUN_KILLING, OBI_RUN_EV_GRACE_OVER, OBI_RUN_DELETING},
    {OBI_RUN_KILLING, OBI_RUN_EV_IO_FAILED, OBI_RUN_DELETING},
    {OBI_RUN_DELETING, OBI_RUN_EV_DESTROYED, OBI_RUN_DONE},
    {OBI_RUN_DELETING, OBI_RUN_EV_DESTROY_FAILED, OBI_RUN_DONE},
};

static const char *const run_state_names[OBI_RUN_N_STATES] = {
    [OBI_RUN_STARTING] = "starting", [OBI_RUN_RUNNING] = "running", [OBI_RUN_KILLING] = "killing",
    [OBI_RUN_DELETING] = "deleting", [OBI_RUN_DONE] = "done",
};

static const char *const run_event_names[OBI_RUN_N_EVENTS] = {
    [OBI_RUN_EV_STARTED] = "started",
    [OBI_RUN_EV_SPAWN_FAILED] = "spawn failed",
    [OBI_RUN_EV_EXITED] = "exited",
    [OBI_RUN_EV_EXITED_FAILING] = "exited failing",
    [OBI_RUN_EV_RUNTIME_DIED] = "runtime died",
    [OBI_RUN_EV_TIMEOUT] = "timeout",
    [OBI_RUN_EV_CANCEL] = "cancel",
    [OBI_RUN_EV_IO_FAILED] = "io failed",
    [OBI_RUN_EV_ASIDE_FAILED] = "aside failed",
    [OBI_RUN_EV_RUNTIME_GONE] = "runtime gone",
    [OBI_RUN_EV_GRACE_OVER] = "grace over",
    [OBI_RUN_EV_DESTROYED] = "destroyed",
    [OBI_RUN_EV_DESTROY_FAILED] = "destroy failed",
};

const char *obi_run_state_name(obi_run_state state)
{
    return state < OBI_RUN_N_STATES ? run_state_names[state] : "?";
}

const char *obi_run_event_name(obi_run_event event)
{
    return event < OBI_RUN_N_EVENTS ? run_event_names[event] : "?";
}

int obi_run_transition(const char *id, obi_run_state from, obi_run_event event, obi_run_state *to,
                       obi_error **err)
{
    obi_buf allowed = OBI_BUF_INIT;
    for (size_t i = 0; i < OBI_ARRAY_SIZE(run_transitions); i++) {
        const struct run_transition *t = &run_transitions[i];
        if (t->from == from && t->event == event) {
            obi_buf_free(&allowed);
            *to = t->to;
            return 0;
        }
        if (t->from == from)
            obi_buf_appendf(&allowed, "%s'%s'", allowed.len ? ", " : "", run_event_names[t->event]);
    }
    int r = obi_error_set(err, -EINVAL, "container %s: event '%s' is not allowed while %s (%s%s)",
                          id, obi_run_event_name(event), obi_run_state_name(from),
                          allowed.len ? "allowed: " : "no event is allowed",
                          allowed.len ? (const char *)allowed.data : "");
    obi_buf_free(&allowed);
    return r;
}

/* delete --force attempts and the pauses between them: runc's can fail while the container's
 * cgroup is still being emptied. */
static const unsigned destroy_pauses_ms[] = {100, 400};

typedef struct run {
    obi_run_state state;
    obi_runtime *runtime;
    const char *bundle, *id;
    const obi_run_options *opts;
    pid_t pid;  /* the runtime process (detached: then the container's init); 0: not (yet) any */
    int status; /* its wait status, once reaped */
    bool awaiting_start;  /* the runtime has not said yet whether the command started */
    bool init_exited;     /* the init ended (detached: it was reaped; foreground: the runtime,
                             which waited for it, exited by itself after the start) */
    bool delete_deferred; /* defer_delete: left stopped for the caller */
    bool kill_confirmed;  /* (killing, foreground) `kill` found the container */
    int64_t kill_tried_ms;
    char *pid_file;  /* where the runtime writes the init's pid */
    obi_buf held;    /* output while awaiting_start */
    bool held_short; /* some of it was dropped (HELD_OUTPUT_MAX, or short of memory) */
    int pidfd;       /* readable when it exits; -1: look every 100 ms instead */
    int output_fd;   /* the read end of its stdout+stderr; -1 once it ended */
    int cancel_fd;   /* -1 once it hung up unreadable, or when there is none */
    tail_log tail;
    int64_t deadline_ms; /* 0: none */
    int64_t kill_sent_ms;
    obi_error *failure; /* the first failure; NULL: none */
} run;

/* The run's error: only the first failure is kept (obi_error_set leaves a set error alone). */
#define run_fail(r, ...) ((void)obi_error_set(&(r)->failure, __VA_ARGS__))

/* Reaps the runtime if it has exited (blocking: waits until it has). 1 when reaped. */
static int run_reap(run *r, bool blocking)
{
    if (!r->pid)
        return 1;
    pid_t w;
    do
        w = waitpid(r->pid, &r->status, blocking ? 0 : WNOHANG);
    while (w < 0 && errno == EINTR);
    if (w == r->pid) {
        r->pid = 0;
        r->init_exited = !r->runtime->foreground && !r->awaiting_start;
        return 1;
    }
    if (w < 0) {
        int e = errno;
        run_fail(r, -e, "waitpid on %s (pid %d): %s", r->runtime->path, (int)r->pid, strerror(e));
        if (e == ECHILD)
            r->pid = 0; /* not ours to wait for (or signal) any more */
        return -1;
    }
    return 0;
}

/* Output as it comes: streamed and kept in the tail, or held while the runtime starts. */
static void run_output(run *r, const uint8_t *data, size_t len)
{
    if (r->awaiting_start) {
        if (r->held.len + len > HELD_OUTPUT_MAX || obi_buf_append(&r->held, data, len) < 0)
            r->held_short = true;
        return;
    }
    tail_append(&r->tail, data, len);
    if (r->opts->on_output)
        r->opts->on_output(data, len, r->opts->output_ctx);
}

/* The runtime's own words from what it wrote before failing: runc's logrus line
 * `time="..." level=error msg="runc run failed: ..."` becomes its message, unquoted; anything
 * else is kept as it is, without trailing newlines. Caller frees; NULL when out of memory. */
static char *runtime_error_text(const char *text)
{
    const char *msg = strstr(text, "msg=\"");
    cleanup_buf obi_buf out = OBI_BUF_INIT;
    if (msg) {
        for (const char *p = msg + 5; *p && *p != '"'; p++) {
            if (*p == '\\' && p[1])
                p++;
            if (obi_buf_append(&out, p, 1) < 0)
                return NULL;
        }
    } else if (obi_buf_append_str(&out, text) < 0) {
        return NULL;
    }
    while (out.len && (out.data[out.len - 1] == '\n' || out.data[out.len - 1] == '\r'))
        out.data[--out.len] = 0;
    if (!out.len && obi_buf_append_str(&out, "(it said nothing)") < 0)
        return NULL;
    return obi_buf_steal(&out);
}

/* The container's init from the runtime's pid file; only a child of ours is taken (waited for
 * and ever signalled): a file naming anything else ends the run. -EPROTO, not -ECHILD: that is
 * OBI_EBUILD_FAILED, a build's own failure. */
static int read_init_pid(const char *pid_file, pid_t *out, obi_error **err)
{
    cleanup_free char *text = NULL;
    int r = obi_read_file(pid_file, 64, &text, NULL, err);
    if (r < 0)
        return obi_error_prefix(err, r, "the runtime's pid file");
    text[strcspn(text, "\n")] = 0;
    unsigned long long pid = 0;
    if (!obi_parse_decimal(text, INT32_MAX, &pid) || pid < 2)
        return obi_error_set(err, -EPROTO, "the runtime's pid file %s holds \"%s\", not a pid",
                             pid_file, text);
    siginfo_t info;
    if (waitid(P_PID, (id_t)pid, &info, WEXITED | WNOHANG | WNOWAIT) < 0)
        return obi_error_set(err, -EPROTO,
                             "the container's init (pid %llu, from %s) is not this process's "
                             "child: %s",
                             pid, pid_file, strerror(errno));
    *out = (pid_t)pid;
    return 0;
}

/* Reads what the pipe holds now (non-blocking), before the runtime's exit is judged. */
static void run_drain_output(run *r)
{
    while (r->output_fd >= 0) {
        uint8_t chunk[16384];
        ssize_t got = read(r->output_fd, chunk, sizeof chunk);
        if (got <= 0)
            break;
        run_output(r, chunk, (size_t)got);
    }
}

/* The runtime exited before the command started (reaped, not by a signal): what it wrote, held
 * until now, is its own words, and the run's error (OBI_ERUNTIME_START). Killing, that is
 * expected: no event. */
static obi_run_event run_start_failed(run *r)
{
    r->awaiting_start = false;
    if (r->state == OBI_RUN_KILLING)
        return OBI_RUN_N_EVENTS;
    (void)obi_buf_append(&r->held, "", 1);
    const char *said = r->held.data ? (const char *)r->held.data : "";
    cleanup_free char *text = runtime_error_text(said);
    run_fail(r, OBI_ERUNTIME_START,
             "the runtime could not start the command (it exited with %d): %s",
             obi_wait_exit_code(r->status), text ? text : said);
    obi_buf_free(&r->held);
    return OBI_RUN_EV_EXITED_FAILING;
}

/* The held output flows: the runtime has said that the command started. */
static void run_release_held(run *r)
{
    r->awaiting_start = false;
    if (r->held.len)
        run_output(r, r->held.data, r->held.len);
    static const char DROPPED[] = "\n[ocibuild: output dropped while the runtime was starting]\n";
    if (r->held_short)
        run_output(r, (const uint8_t *)DROPPED, sizeof DROPPED - 1);
    obi_buf_free(&r->held);
}

/* Foreground: the runtime writes its pid file once the container's process is started, and
 * stays to wait for it; until then what comes through the pipe may be its own error, so it is
 * held. When the file holds the pid, everything held and to come is the build's. */
static void run_notice_start(run *r)
{
    struct stat st;
    if (r->awaiting_start && stat(r->pid_file, &st) == 0 && st.st_size > 0)
        run_release_held(r);
}

/* The runtime (either way of running) died of a signal: no event when we killed it on the way
 * (KILLING goes on), else "runtime died", saying so. */
static obi_run_event run_runtime_killed(run *r)
{
    if (r->state == OBI_RUN_KILLING)
        return OBI_RUN_N_EVENTS; /* killed on the way: the runtime is gone */
    run_fail(r, -EIO, "%s run %s: the runtime died of signal %d; container %s killed and removed",
             r->runtime->path, r->id, WTERMSIG(r->status), r->id);
    return OBI_RUN_EV_RUNTIME_DIED;
}

/* Foreground: the runtime exited (reaped; what it wrote before is in the pipe). Started (its
 * pid file is there): it waited for the init, reported its exit code as its own (128+N for
 * signal N) and deleted the container. Anything else: the event it ends in. */
static obi_run_event run_foreground_exited(run *r)
{
    run_notice_start(r);
    run_drain_output(r);
    if (WIFSIGNALED(r->status)) {
        r->awaiting_start = false;
        return run_runtime_killed(r);
    }
    if (r->awaiting_start)
        return run_start_failed(r);
    r->init_exited = true;
    return OBI_RUN_N_EVENTS; /* run_ending decides once the output has ended */
}

/* Detached: the runtime, starting the container, exited (it is reaped; what it wrote before is
 * in the pipe). 0 and a live init: from now on the init is waited for, and the held output
 * flows. Anything else: the event it ends in. */
static obi_run_event run_detached(run *r)
{
    run_drain_output(r);
    r->awaiting_start = false;
    if (r->pidfd >= 0)
        close(r->pidfd);
    r->pidfd = -1;
    if (WIFSIGNALED(r->status)) {
        return run_runtime_killed(r);
    }
    int code = obi_wait_exit_code(r->status);
    if (code != 0)
        return run_start_failed(r);
    pid_t init = 0;
    if (read_init_pid(r->pid_file, &init, &r->failure) < 0)
        return r->state == OBI_RUN_KILLING ? OBI_RUN_N_EVENTS : OBI_RUN_EV_IO_FAILED;
    r->pid = init;
    r->pidfd = (int)syscall(SYS_pidfd_open, init, 0);
    run_release_held(r);
    if (r->state == OBI_RUN_KILLING) {
        /* Killed while it was being made: kill what now exists. */
        cleanup_error obi_error *ignored = NULL;
        obi_runtime_kill(r->runtime, r->id, "KILL", &ignored);
    }
    return OBI_RUN_N_EVENTS;
}

/* Reads what the runtime wrote; at the end (or a read error) the pipe is closed. */
static void run_read_output(run *r)
{
    uint8_t chunk[16384];
    ssize_t got = read(r->output_fd, chunk, sizeof chunk);
    if (got > 0) {
        if (r->runtime->foreground)
            run_notice_start(r);
        run_output(r, chunk, (size_t)got);
    } else if (got == 0 || (errno != EINTR && errno != EAGAIN)) {
        close(r->output_fd);
        r->output_fd = -1;
    }
}

/* `kill ID KILL`. A container not made yet, or gone, is no error here: detached, the runtime's
 * exit makes DELETING see to it; foreground, it is sent again (KILL_RETRY_MS) until it found the
 * container or the runtime has exited, since a runtime that stays to wait for its container
 * would otherwise go on to start it. */
static void run_kill_container(run *r)
{
    cleanup_error obi_error *ignored = NULL;
    r->kill_tried_ms = now_ms();
    r->kill_confirmed = obi_runtime_kill(r->runtime, r->id, "KILL", &ignored) == 0;
}

/* How long poll may sleep: until the deadline (RUNNING) or the end of the kill grace
 * (KILLING), and never long without a pidfd, which is then looked at instead of waited for. */
static int run_wait_ms(const run *r)
{
    if (r->state == OBI_RUN_KILLING && !r->pid)
        return 0; /* the runtime is gone already: on to deleting */
    int64_t wait = r->pidfd >= 0 ? 1000 : 100;
    if (r->runtime->foreground && r->awaiting_start && (r->held.len || r->held_short))
        wait = START_LOOK_MS; /* held output waits for the pid file */
    if (r->state == OBI_RUN_KILLING && r->runtime->foreground && !r->kill_confirmed)
        wait = KILL_RETRY_MS;
    int64_t until = r->state == OBI_RUN_RUNNING ? r->deadline_ms : r->kill_sent_ms + KILL_GRACE_MS;
    if (until) {
        int64_t left = until - now_ms();
        if (left < wait)
            wait = left > 0 ? left : 0;
    }
    return (int)wait;
}

/* The event a RUNNING run's runtime ended in, once it has (OBI_RUN_N_EVENTS: not yet). */
static obi_run_event run_ending(run *r)
{
    if (r->pid || r->awaiting_start)
        return OBI_RUN_N_EVENTS;
    /* The init's own exit: a signal that ended it is the build's exit code (128+N). */
    if (r->output_fd >= 0)
        return OBI_RUN_N_EVENTS; /* its output is still coming */
    return obi_wait_exit_code(r->status) == 0 ? OBI_RUN_EV_EXITED : OBI_RUN_EV_EXITED_FAILING;
}

/* Waits for what happens next in RUNNING or KILLING (OBI_RUN_N_EVENTS: nothing yet). */
static obi_run_event run_next_event(run *r)
{
    struct pollfd fds[3];
    nfds_t n = 0;
    int output_i = -1, pid_i = -1, cancel_i = -1;
    if (r->output_fd >= 0) {
        output_i = (int)n;
        fds[n++] = (struct pollfd){r->output_fd, POLLIN, 0};
    }
    if (r->pid && r->pidfd >= 0) {
        pid_i = (int)n;
        fds[n++] = (struct pollfd){r->pidfd, POLLIN, 0};
    }
    if (r->state == OBI_RUN_RUNNING && r->cancel_fd >= 0) {
        cancel_i = (int)n;
        fds[n++] = (struct pollfd){r->cancel_fd, POLLIN, 0};
    }
    int ready = poll(fds, n, run_wait_ms(r));
    if (ready < 0 && errno != EINTR) {
        run_fail(r, -errno, "poll on the output of container %s: %s; container killed and removed",
                 r->id, strerror(errno));
        return OBI_RUN_EV_IO_FAILED;
    }
    if (ready > 0 && output_i >= 0 && fds[output_i].revents)
        run_read_output(r);
    if (r->runtime->foreground)
        run_notice_start(r);
    bool awaiting_start = r->awaiting_start;
    int reaped = 0;
    if (r->pid && (pid_i < 0 || (ready > 0 && fds[pid_i].revents)) &&
        (reaped = run_reap(r, false)) < 0)
        return OBI_RUN_EV_IO_FAILED;
    if (reaped == 1 && (r->runtime->foreground || awaiting_start)) {
        obi_run_event ended = r->runtime->foreground ? run_foreground_exited(r) : run_detached(r);
        if (ended != OBI_RUN_N_EVENTS)
            return ended;
    }
    if (r->state == OBI_RUN_KILLING) {
        if (!r->pid)
            return OBI_RUN_EV_RUNTIME_GONE; /* the runtime, or the init once it started */
        if (now_ms() - r->kill_sent_ms >= KILL_GRACE_MS)
            return OBI_RUN_EV_GRACE_OVER;
        if (r->runtime->foreground && !r->kill_confirmed &&
            now_ms() - r->kill_tried_ms >= KILL_RETRY_MS)
            run_kill_container(r);
        return OBI_RUN_N_EVENTS;
    }
    if (ready > 0 && cancel_i >= 0 && fds[cancel_i].revents) {
        if (fds[cancel_i].revents & POLLIN) {
            run_fail(r, -ECANCELED, "interrupted; container %s killed and removed", r->id);
            return OBI_RUN_EV_CANCEL;
        }
        r->cancel_fd = -1; /* hung up unreadable: it can never cancel, and poll would spin */
    }
    obi_run_event ending = run_ending(r);
    if (ending != OBI_RUN_N_EVENTS)
        return ending;
    if (r->deadline_ms && now_ms() >= r->deadline_ms) {
        run_fail(r, -ETIMEDOUT, "timed out after %u s; container %s killed and removed",
                 r->opts->timeout_seconds, r->id);
        return OBI_RUN_EV_TIMEOUT;
    }
    return OBI_RUN_N_EVENTS;
}

/* kill + delete --force, retried; a runtime process still alive is SIGKILLed and reaped
 * first (it may be half way through creating the container). */
static obi_run_event run_destroy(run *r)
{
    if (r->pid) {
        kill(r->pid, SIGKILL);
        run_reap(r, true);
    }
    /* An init that ended by itself left a stopped container: delete is enough; a foreground
     * runtime that waited for it has deleted it already, and nothing is left to do. */
    bool stopped = r->init_exited && !r->failure;
    if (stopped && r->runtime->foreground)
        return OBI_RUN_EV_DESTROYED;
    if (stopped && r->opts->defer_delete) {
        r->delete_deferred = true; /* the caller deletes it once it has answered */
        return OBI_RUN_EV_DESTROYED;
    }
    cleanup_error obi_error *destroy_err = NULL;
    for (size_t attempt = 0;; attempt++) {
        obi_error_free(destroy_err);
        destroy_err = NULL;
        if ((stopped ? obi_runtime_delete(r->runtime, r->id, true, &destroy_err)
                     : obi_runtime_destroy(r->runtime, r->id, &destroy_err)) == 0)
            return OBI_RUN_EV_DESTROYED;
        if (attempt == OBI_ARRAY_SIZE(destroy_pauses_ms))
            break;
        usleep(destroy_pauses_ms[attempt] * 1000);
    }
    obi_error *left = NULL;
    if (r->failure)
        obi_error_set(&left, OBI_ECONTAINER_LEFT,
                      "%s; but container %s could not be removed and may still exist: %s",
                      r->failure->message, r->id, destroy_err->message);
    else
        obi_error_set(&left, OBI_ECONTAINER_LEFT,
                      "%s run %s: exit code %d; container %s could not be removed and may still "
                      "exist: %s",
                      r->runtime->path, r->id, obi_wait_exit_code(r->status), r->id,
                      destroy_err->message);
    obi_error_move(&r->failure, &left);
    return OBI_RUN_EV_DESTROY_FAILED;
}

/* Spawns `run [--detach] --pid-file B/runtime.pid --bundle B ID` with its stdout and stderr,
 * which the container's process inherits, into one pipe. Detached, we become a child subreaper
 * first, so that the container's init, the runtime's child, becomes ours when the runtime
 * exits; in the foreground the runtime waits for it. */
static obi_run_event run_spawn(run *r)
{
    if (!r->runtime->foreground && prctl(PR_SET_CHILD_SUBREAPER, 1) < 0) {
        run_fail(r, -errno, "prctl(PR_SET_CHILD_SUBREAPER): %s", strerror(errno));
        return OBI_RUN_EV_SPAWN_FAILED;
    }
    if (!(r->pid_file = obi_path_join(r->bundle, OBI_RUNTIME_PID_FILE))) {
        obi_error_oom(&r->failure);
        return OBI_RUN_EV_SPAWN_FAILED;
    }
    /* Empty: a pid in it says "started" (emptied in place, a recycled bundle's is reused). */
    if (obi_rewrite_file(r->pid_file, "", 0, 0644, &r->failure) < 0)
        return OBI_RUN_EV_SPAWN_FAILED;
    int out_pipe[2];
    if (pipe2(out_pipe, O_CLOEXEC) < 0) {
        run_fail(r, -errno, "pipe: %s", strerror(errno));
        return OBI_RUN_EV_SPAWN_FAILED;
    }
    cleanup_close int write_end = out_pipe[1];
    r->output_fd = out_pipe[0];
    cleanup_close int stdin_fd = empty_stdin();
    if (stdin_fd < 0) {
        run_fail(r, -errno, "pipe: %s", strerror(errno));
        return OBI_RUN_EV_SPAWN_FAILED;
    }
    if (fcntl(r->output_fd, F_SETFL, O_NONBLOCK) < 0) {
        run_fail(r, -errno, "fcntl O_NONBLOCK: %s", strerror(errno));
        return OBI_RUN_EV_SPAWN_FAILED;
    }
    const char *args[] = {"run",      "--detach", "--pid-file", r->pid_file,
                          "--bundle", r->bundle,  r->id};
    const char *const *used = r->runtime->foreground ? args + 1 : args;
    if (r->runtime->foreground)
        args[1] = "run";
    cleanup_free const char **argv =
        runtime_argv(r->runtime, used, OBI_ARRAY_SIZE(args) - (size_t)(used - args));
    if (!argv) {
        obi_error_oom(&r->failure);
        return OBI_RUN_EV_SPAWN_FAILED;
    }
    obi_spawn_options spawn_opts = OBI_SPAWN_OPTIONS_INIT;
    spawn_opts.stdin_fd = stdin_fd;
    spawn_opts.stdout_fd = write_end;
    spawn_opts.stderr_fd = write_end;
    /* A runtime killed half way through making the container (by PR_SET_PDEATHSIG, when we
     * die) leaves its state without a status and the container's cgroups, which no `delete
     * --force` finds (crun in the foreground, and runc's `run --detach`, whose Go process makes
     * the container itself): it must outlive us and finish. Detached, it then exits; in the
     * foreground it runs the container to its end (or until the next sweep kills it) and
     * deletes it. */
    spawn_opts.die_with_parent = false;
    spawn_opts.hide_mount = r->runtime->hide_mount;
    cleanup_close int ns_fd = hidden_ns_fd(r->runtime);
    spawn_opts.hide_mount_ns = ns_fd;
    spawn_opts.exec_fd = exec_fd_of(r->runtime);
    if (obi_spawn((char *const *)argv, &spawn_opts, &r->pid, &r->failure) < 0) {
        r->pid = 0;
        return OBI_RUN_EV_SPAWN_FAILED;
    }
    r->pidfd = (int)syscall(SYS_pidfd_open, r->pid, 0);
    r->awaiting_start = true;
    return OBI_RUN_EV_STARTED;
}

/* The caller's work while the runtime makes the container (obi_run_options.while_starting). */
static obi_run_event run_aside(run *r)
{
    if (!r->opts->while_starting)
        return OBI_RUN_N_EVENTS;
    cleanup_error obi_error *why = NULL;
    int code = r->opts->while_starting(r->opts->while_starting_ctx, &why);
    if (code >= 0)
        return OBI_RUN_N_EVENTS;
    run_fail(r, code, "%s; container %s killed and removed", why ? why->message : strerror(-code),
             r->id);
    return OBI_RUN_EV_ASIDE_FAILED;
}

/* The actions of entering a state; returns the event they end in (OBI_RUN_N_EVENTS: none, wait
 * for one). */
static obi_run_event run_enter(run *r, obi_run_state state)
{
    r->state = state;
    switch (state) {
    case OBI_RUN_STARTING:
        return run_spawn(r);
    case OBI_RUN_RUNNING:
        r->deadline_ms =
            r->opts->timeout_seconds ? now_ms() + (int64_t)r->opts->timeout_seconds * 1000 : 0;
        return run_aside(r);
    case OBI_RUN_KILLING:
        r->kill_sent_ms = now_ms();
        run_kill_container(r);
        return OBI_RUN_N_EVENTS;
    case OBI_RUN_DELETING:
        return run_destroy(r);
    case OBI_RUN_DONE:
    case OBI_RUN_N_STATES:
        break;
    }
    return OBI_RUN_N_EVENTS;
}

/* The one way a run changes state: event moves it where the table says and the entry actions
 * run (they may end in the next event). A refused event is the run's failure, and the run
 * goes on to DELETING (from DELETING: DONE) so that the container still goes. */
static void run_step(run *r, obi_run_event event)
{
    while (event != OBI_RUN_N_EVENTS && r->state != OBI_RUN_DONE) {
        obi_run_state next;
        if (obi_run_transition(r->id, r->state, event, &next, &r->failure) < 0)
            next = r->state < OBI_RUN_DELETING ? OBI_RUN_DELETING : OBI_RUN_DONE;
        event = run_enter(r, next);
    }
}

static void run_clear(run *r)
{
    if (r->pid) {
        /* not reached (every way to DONE reaps), kept as the last guard */
        kill(r->pid, SIGKILL);
        run_reap(r, true);
    }
    if (r->pidfd >= 0)
        close(r->pidfd);
    if (r->output_fd >= 0)
        close(r->output_fd);
    /* The pid file stays: the next run of this bundle removes it before it spawns (run_spawn),
     * the bundle's removal with the rest; an unlink here cost 0.1 ms before the answer. */
    free(r->pid_file);
    obi_buf_free(&r->held);
    free(r->tail.data);
    obi_error_free(r->failure);
}

int obi_runtime_run(obi_runtime *runtime, const char *bundle, const char *id,
                    const obi_run_options *opts, obi_run_result *result, obi_error **err)
{
    obi_run_options defaults = OBI_RUN_OPTIONS_INIT;
    run r = {.state = OBI_RUN_STARTING,
             .runtime = runtime,
             .bundle = bundle,
             .id = id,
             .opts = opts ? opts : &defaults,
             .pidfd = -1,
             .output_fd = -1};
    r.cancel_fd = r.opts->cancel_fd;
    r.tail.cap = r.opts->log_tail_max ? r.opts->log_tail_max : DEFAULT_LOG_TAIL;
    r.tail.data = malloc(r.tail.cap);
    if (!r.tail.data)
        return obi_error_oom(err);
    run_step(&r, run_enter(&r, OBI_RUN_STARTING));
    while (r.state != OBI_RUN_DONE)
        run_step(&r, run_next_event(&r));

    size_t log_len = 0;
    cleanup_free char *log = tail_string(&r.tail, &log_len);
    int code;
    if (r.failure) {
        code = obi_error_set(err, r.failure->code, "%s%s%s", r.failure->message,
                             log_len ? "; log tail:\n" : "", log_len && log ? log : "");
    } else if (!log) {
        code = obi_error_oom(err);
    } else {
        *result = (obi_run_result){.exit_code = obi_wait_exit_code(r.status),
                                   .log_tail = steal_pointer(&log),
                                   .log_tail_len = log_len,
                                   .container_stopped = r.delete_deferred};
        code = 0;
    }
    if (code < 0 && r.delete_deferred) {
        cleanup_error obi_error *ignored = NULL; /* no result to carry it: delete it now */
        obi_runtime_delete(runtime, id, true, &ignored);
    }
    run_clear(&r);
    return code;
}
