/*
 * Entering a running replica without the OCI runtime (include/ocibuild/replica_exec.h): the
 * process spec is read from config.json in the caller (so a bad one is a clean error), the
 * cgroups and namespaces of the init are looked up in the caller, then a child joins them and
 * forks the command. Errors of the children come back over a close-on-exec pipe: nothing on it
 * means the command was executed.
 */
#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <linux/capability.h>
#include <sched.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include "ocibuild/cleanup.h"
#include "ocibuild/fs.h"
#include "ocibuild/number.h"
#include "ocibuild/oci_defaults.h"
#include "ocibuild/process.h"
#include "ocibuild/replica_exec.h"
#include "ocibuild/strv.h"

#ifndef CLONE_NEWTIME
#define CLONE_NEWTIME 0x00000080
#endif
#ifndef CLOSE_RANGE_CLOEXEC
#define CLOSE_RANGE_CLOEXEC (1U << 2)
#endif
#define MAX_RLIMITS 16
#define MAX_GROUPS 64
#define MAX_CGROUPS 16

/* ---- which runtime can enter ---- */

static const json_t *namespace_of(const json_t *config, const char *type)
{
    const json_t *list = json_object_get(json_object_get(config, "linux"), "namespaces");
    size_t i;
    const json_t *ns;
    json_array_foreach(list, i, ns)
    {
        const char *t = json_string_value(json_object_get(ns, "type"));
        if (t && !strcmp(t, type))
            return ns;
    }
    return NULL;
}

bool obi_replica_exec_needs_own(const json_t *config)
{
    const json_t *net = namespace_of(config, "network");
    return namespace_of(config, "user") && net && json_object_get(net, "path");
}

/* ---- the process spec ---- */

typedef struct exec_process {
    uid_t uid;
    gid_t gid;
    gid_t groups[MAX_GROUPS];
    size_t group_count;
    char **env; /* NULL-terminated */
    const char *cwd;
    uint64_t bounding, effective, permitted, inheritable, ambient;
    struct {
        int resource;
        struct rlimit limit;
    } rlimits[MAX_RLIMITS];
    size_t rlimit_count;
    bool no_new_privileges;
    long umask; /* -1: the caller's */
} exec_process;

static const struct {
    const char *name;
    int resource;
} RLIMITS[] = {
    {"RLIMIT_AS", RLIMIT_AS},
    {"RLIMIT_CORE", RLIMIT_CORE},
    {"RLIMIT_CPU", RLIMIT_CPU},
    {"RLIMIT_DATA", RLIMIT_DATA},
    {"RLIMIT_FSIZE", RLIMIT_FSIZE},
    {"RLIMIT_LOCKS", RLIMIT_LOCKS},
    {"RLIMIT_MEMLOCK", RLIMIT_MEMLOCK},
    {"RLIMIT_MSGQUEUE", RLIMIT_MSGQUEUE},
    {"RLIMIT_NICE", RLIMIT_NICE},
    {"RLIMIT_NOFILE", RLIMIT_NOFILE},
    {"RLIMIT_NPROC", RLIMIT_NPROC},
    {"RLIMIT_RSS", RLIMIT_RSS},
    {"RLIMIT_RTPRIO", RLIMIT_RTPRIO},
    {"RLIMIT_RTTIME", RLIMIT_RTTIME},
    {"RLIMIT_SIGPENDING", RLIMIT_SIGPENDING},
    {"RLIMIT_STACK", RLIMIT_STACK},
};

static int cap_set(const json_t *caps, const char *set, uint64_t *out, obi_error **err)
{
    *out = 0;
    size_t i;
    const json_t *name;
    json_array_foreach(json_object_get(caps, set), i, name)
    {
        int n = json_string_value(name) ? obi_capability_number(json_string_value(name)) : -1;
        if (n < 0 || n > 63)
            return obi_error_set(err, -EINVAL, "process.capabilities.%s[%zu]: not a capability",
                                 set, i);
        *out |= UINT64_C(1) << n;
    }
    return 0;
}

static int parse_process(const json_t *config, exec_process *p, obi_error **err)
{
    const json_t *process = json_object_get(config, "process");
    const json_t *user = json_object_get(process, "user");
    const json_t *linux_ = json_object_get(config, "linux");
    *p = (exec_process){.umask = -1};
    if (!json_is_object(process) || !json_is_object(user))
        return obi_error_set(err, -EINVAL, "config.json: no process.user");
    /* what this code cannot apply is refused: the command would run less confined */
    if (json_object_get(linux_, "seccomp"))
        return obi_error_set(err, -ENOTSUP, "config.json: linux.seccomp cannot be applied here");
    const char *apparmor = json_string_value(json_object_get(process, "apparmorProfile"));
    const char *selinux = json_string_value(json_object_get(process, "selinuxLabel"));
    if ((apparmor && *apparmor) || (selinux && *selinux))
        return obi_error_set(err, -ENOTSUP,
                             "config.json: process.apparmorProfile or selinuxLabel cannot be "
                             "applied here");
    p->uid = (uid_t)json_integer_value(json_object_get(user, "uid"));
    p->gid = (gid_t)json_integer_value(json_object_get(user, "gid"));
    if (json_object_get(user, "umask"))
        p->umask = (long)json_integer_value(json_object_get(user, "umask")) & 0777;
    size_t i;
    const json_t *v;
    json_array_foreach(json_object_get(user, "additionalGids"), i, v)
    {
        if (p->group_count == MAX_GROUPS)
            return obi_error_set(err, -E2BIG, "process.user.additionalGids: more than %d",
                                 MAX_GROUPS);
        p->groups[p->group_count++] = (gid_t)json_integer_value(v);
    }
    p->cwd = json_string_value(json_object_get(process, "cwd"));
    if (!p->cwd)
        p->cwd = "/";
    const json_t *env = json_object_get(process, "env");
    p->env = calloc(json_array_size(env) + 1, sizeof *p->env);
    if (!p->env)
        return obi_error_oom(err);
    json_array_foreach(env, i, v)
    {
        if (!json_string_value(v) || !(p->env[i] = strdup(json_string_value(v))))
            return obi_error_set(err, -EINVAL, "process.env[%zu]: not a string", i);
    }
    const json_t *caps = json_object_get(process, "capabilities");
    int r;
    if ((r = cap_set(caps, "bounding", &p->bounding, err)) < 0 ||
        (r = cap_set(caps, "effective", &p->effective, err)) < 0 ||
        (r = cap_set(caps, "permitted", &p->permitted, err)) < 0 ||
        (r = cap_set(caps, "inheritable", &p->inheritable, err)) < 0 ||
        (r = cap_set(caps, "ambient", &p->ambient, err)) < 0)
        return r;
    json_array_foreach(json_object_get(process, "rlimits"), i, v)
    {
        const char *type = json_string_value(json_object_get(v, "type"));
        size_t k = 0;
        while (type && k < OBI_ARRAY_SIZE(RLIMITS) && strcmp(RLIMITS[k].name, type))
            k++;
        if (!type || k == OBI_ARRAY_SIZE(RLIMITS) || p->rlimit_count == MAX_RLIMITS)
            return obi_error_set(err, -EINVAL, "process.rlimits[%zu]: unknown type", i);
        p->rlimits[p->rlimit_count].resource = RLIMITS[k].resource;
        p->rlimits[p->rlimit_count].limit.rlim_cur =
            (rlim_t)json_integer_value(json_object_get(v, "soft"));
        p->rlimits[p->rlimit_count].limit.rlim_max =
            (rlim_t)json_integer_value(json_object_get(v, "hard"));
        p->rlimit_count++;
    }
    p->no_new_privileges = json_is_true(json_object_get(process, "noNewPrivileges"));
    return 0;
}

/* ---- the init's namespaces and cgroups, looked up by the caller ---- */

static const struct {
    const char *name;
    int flag;
} NAMESPACES[] = {
    {"mnt", CLONE_NEWNS},    {"uts", CLONE_NEWUTS},   {"ipc", CLONE_NEWIPC},
    {"net", CLONE_NEWNET},   {"pid", CLONE_NEWPID},   {"cgroup", CLONE_NEWCGROUP},
    {"time", CLONE_NEWTIME}, {"user", CLONE_NEWUSER},
};

/* The namespaces of pid that this process is not in (a namespace type the kernel lacks is
 * skipped). */
static int namespaces_to_join(int pid, int *flags, obi_error **err)
{
    *flags = 0;
    for (size_t i = 0; i < OBI_ARRAY_SIZE(NAMESPACES); i++) {
        char theirs[64], ours[64];
        snprintf(theirs, sizeof theirs, "/proc/%d/ns/%s", pid, NAMESPACES[i].name);
        snprintf(ours, sizeof ours, "/proc/self/ns/%s", NAMESPACES[i].name);
        struct stat a, b;
        if (stat(ours, &b) < 0)
            continue;
        if (stat(theirs, &a) < 0)
            return obi_error_set_errno(err, errno, "stat %s", theirs);
        if (a.st_ino != b.st_ino || a.st_dev != b.st_dev)
            *flags |= NAMESPACES[i].flag;
    }
    return 0;
}

/* Where the hierarchy of a /proc/PID/cgroup line is mounted here: its cgroup.procs path. */
static char *cgroup_procs_path(const char *controllers, const char *path)
{
    cleanup_file FILE *mounts = fopen("/proc/self/mountinfo", "re");
    cleanup_free char *line = NULL;
    size_t cap = 0;
    while (mounts && getline(&line, &cap, mounts) > 0) {
        /* ID PARENT MAJ:MIN ROOT MOUNTPOINT OPTIONS [OPTIONAL...] - FSTYPE SOURCE SUPER */
        char root[1024], point[1024], fstype[64], super[1024];
        const char *dash = strstr(line, " - ");
        if (!dash || sscanf(line, "%*s %*s %*s %1023s %1023s", root, point) != 2 ||
            sscanf(dash + 3, "%63s %*s %1023s", fstype, super) != 2)
            continue;
        bool v2 = !*controllers;
        if (strcmp(fstype, v2 ? "cgroup2" : "cgroup") != 0)
            continue;
        bool all = true;
        if (!v2) {
            cleanup_free char *wanted = strdup(controllers);
            char *save = NULL;
            for (char *c = wanted ? strtok_r(wanted, ",", &save) : NULL; c && all;
                 c = strtok_r(NULL, ",", &save)) {
                size_t len = strlen(c);
                const char *at = super;
                all = false;
                while ((at = strstr(at, c)) && !all) {
                    all = (at == super || at[-1] == ',') && (at[len] == ',' || at[len] == 0);
                    at += len;
                }
            }
            all = all && wanted;
        }
        if (!all)
            continue;
        /* a mount of a sub-tree (ROOT not /) shows the path below it */
        size_t root_len = strcmp(root, "/") ? strlen(root) : 0;
        if (root_len && strncmp(path, root, root_len) != 0)
            continue;
        char *out = NULL;
        if (asprintf(&out, "%s%s/cgroup.procs", point, path + root_len) < 0)
            return NULL;
        return out;
    }
    return NULL;
}

/* Opens cgroup.procs of every hierarchy where pid's cgroup is not ours. Rootless, one the user
 * may not write is left (runc made no cgroup it could not make: the init stayed in ours). */
static int open_cgroups(int pid, int *fds, size_t *count, obi_error **err)
{
    char path[64];
    snprintf(path, sizeof path, "/proc/%d/cgroup", pid);
    cleanup_free char *theirs = NULL, *ours = NULL;
    int r = obi_read_file(path, 65536, &theirs, NULL, err);
    if (r < 0 || (r = obi_read_file("/proc/self/cgroup", 65536, &ours, NULL, err)) < 0)
        return r;
    *count = 0;
    char *save = NULL;
    for (char *line = strtok_r(theirs, "\n", &save); line; line = strtok_r(NULL, "\n", &save)) {
        if (strstr(ours, line) && (strstr(ours, line) == ours || strstr(ours, line)[-1] == '\n'))
            continue; /* the same cgroup as ours in this hierarchy */
        char *controllers = strchr(line, ':');
        char *cgroup = controllers ? strchr(controllers + 1, ':') : NULL;
        if (!cgroup)
            continue;
        *cgroup++ = 0;
        controllers++;
        cleanup_free char *procs = cgroup_procs_path(controllers, cgroup);
        int fd = procs ? open(procs, O_WRONLY | O_CLOEXEC) : -1;
        if (fd < 0 && geteuid() != 0)
            continue;
        if (fd < 0 || *count == MAX_CGROUPS) {
            int e = fd < 0 ? (procs ? errno : ENOENT) : E2BIG;
            if (fd >= 0)
                close(fd);
            return obi_error_set_errno(err, e, "join cgroup %s:%s", controllers, cgroup);
        }
        fds[(*count)++] = fd;
    }
    return 0;
}

/* ---- the children ---- */

static void send_error(int fd, const char *step)
{
    char text[256];
    int n = snprintf(text, sizeof text, "%s: %s", step, strerror(errno));
    if (n > 0)
        (void)obi_write_all(fd, text, (size_t)n < sizeof text ? (size_t)n : sizeof text - 1);
}

static int capset_sets(uint64_t effective, uint64_t permitted, uint64_t inheritable)
{
    struct __user_cap_header_struct header = {_LINUX_CAPABILITY_VERSION_3, 0};
    struct __user_cap_data_struct data[2];
    for (int i = 0; i < 2; i++) {
        data[i].effective = (uint32_t)(effective >> (32 * i));
        data[i].permitted = (uint32_t)(permitted >> (32 * i));
        data[i].inheritable = (uint32_t)(inheritable >> (32 * i));
    }
    return (int)syscall(SYS_capset, &header, data);
}

/* B: becomes the process the spec describes, then executes argv. */
static _Noreturn void become_process(const exec_process *p, int last_cap, char *const argv[],
                                     int error_fd, pid_t parent)
{
#define STEP(call, name)                                                                           \
    do {                                                                                           \
        if ((call) < 0) {                                                                          \
            send_error(error_fd, name);                                                            \
            _exit(127);                                                                            \
        }                                                                                          \
    } while (0)
    STEP(setsid(), "setsid");
    STEP(chdir(p->cwd), p->cwd);
    if (p->umask >= 0)
        umask((mode_t)p->umask);
    for (size_t i = 0; i < p->rlimit_count; i++)
        STEP(setrlimit(p->rlimits[i].resource, &p->rlimits[i].limit), "setrlimit");
    for (int cap = 0; cap <= last_cap && cap < 64; cap++)
        if (!(p->bounding & (UINT64_C(1) << cap)))
            STEP(prctl(PR_CAPBSET_DROP, cap, 0, 0, 0), "drop from the bounding set");
    STEP(prctl(PR_SET_KEEPCAPS, 1, 0, 0, 0), "keep capabilities");
    if (setgroups(p->group_count, p->groups) < 0) {
        /* a namespace whose setgroups is denied (rootless) keeps the caller's own groups */
        char deny[16] = "";
        cleanup_close int fd = open("/proc/self/setgroups", O_RDONLY | O_CLOEXEC);
        ssize_t n = fd < 0 ? -1 : read(fd, deny, sizeof deny - 1);
        if (errno != EPERM || n < 4 || strncmp(deny, "deny", 4) != 0)
            STEP(-1, "setgroups");
    }
    STEP(setresgid(p->gid, p->gid, p->gid), "setresgid");
    STEP(setresuid(p->uid, p->uid, p->uid), "setresuid");
    STEP(capset_sets(p->effective, p->permitted, p->inheritable), "capset");
    for (int cap = 0; cap <= last_cap && cap < 64; cap++)
        if (p->ambient & (UINT64_C(1) << cap))
            STEP(prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_RAISE, cap, 0, 0), "raise ambient");
    STEP(prctl(PR_SET_KEEPCAPS, 0, 0, 0, 0), "keep capabilities");
    /* after the uid change, which clears it */
    STEP(prctl(PR_SET_PDEATHSIG, SIGKILL, 0, 0, 0), "die with its parent");
    if (getppid() != parent) /* this process's parent has gone already */
        _exit(127);
    if (p->no_new_privileges)
        STEP(prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0), "no_new_privs");
    /* nothing of the caller's but stdin, stdout and stderr crosses the exec */
    STEP(syscall(SYS_close_range, 3U, ~0U, CLOSE_RANGE_CLOEXEC), "close_range");
    environ = p->env;
    execvp(argv[0], argv);
    int e = errno;
    char step[300];
    snprintf(step, sizeof step, "execute %s", argv[0]);
    errno = e;
    send_error(error_fd, step);
    _exit(e == ENOENT ? 127 : 126);
#undef STEP
}

static volatile sig_atomic_t forward_to;

static void forward_signal(int sig)
{
    if (forward_to > 0)
        kill(forward_to, sig);
}

/* A: joins the cgroups and namespaces, forks B into them and waits for it. */
static _Noreturn void enter(const exec_process *p, int last_cap, int pidfd, int ns_flags,
                            const int *cgroup_fds, size_t cgroup_count, char *const argv[],
                            int error_fd)
{
    (void)prctl(PR_SET_DUMPABLE, 0, 0, 0, 0); /* nothing in the replica may ptrace it */
    for (size_t i = 0; i < cgroup_count; i++)
        if (write(cgroup_fds[i], "0", 1) != 1) {
            send_error(error_fd, "join the replica's cgroup");
            _exit(127);
        }
    /* first what this process may join as it is, then the user namespace, then the rest */
    int others = ns_flags & ~CLONE_NEWUSER;
    bool joined = others == 0 || setns(pidfd, others) == 0;
    if ((ns_flags & CLONE_NEWUSER) && setns(pidfd, CLONE_NEWUSER) < 0) {
        send_error(error_fd, "setns into the replica's user namespace");
        _exit(127);
    }
    if (!joined && setns(pidfd, others) < 0) {
        send_error(error_fd, "setns into the replica's namespaces");
        _exit(127);
    }
    (void)prctl(PR_SET_PDEATHSIG, SIGKILL, 0, 0, 0); /* after setns, which may clear it */
    /* how the child sees this process: from inside a pid namespace it joined, as pid 0 */
    pid_t self = (ns_flags & CLONE_NEWPID) ? 0 : getpid();
    pid_t child = fork();
    if (child < 0) {
        send_error(error_fd, "fork into the replica's pid namespace");
        _exit(127);
    }
    if (child == 0)
        become_process(p, last_cap, argv, error_fd, self);
    close(error_fd);
    forward_to = child;
    struct sigaction sa = {.sa_handler = forward_signal};
    sigemptyset(&sa.sa_mask);
    const int forwarded[] = {SIGINT, SIGTERM, SIGHUP, SIGQUIT};
    for (size_t i = 0; i < OBI_ARRAY_SIZE(forwarded); i++)
        sigaction(forwarded[i], &sa, NULL);
    sigset_t none;
    sigemptyset(&none);
    sigprocmask(SIG_SETMASK, &none, NULL);
    int status = 0;
    while (waitpid(child, &status, 0) < 0)
        if (errno != EINTR)
            _exit(127);
    _exit(obi_wait_exit_code(status));
}

static int last_capability(void)
{
    cleanup_free char *text = NULL;
    cleanup_error obi_error *ignored = NULL;
    if (obi_read_file("/proc/sys/kernel/cap_last_cap", 32, &text, NULL, &ignored) < 0)
        return 40;
    unsigned long long n = 0;
    text[strcspn(text, "\n")] = 0;
    return obi_parse_decimal(text, 63, &n) && n > 0 ? (int)n : 40;
}

static void process_clear(exec_process *p)
{
    obi_strv_free(p->env);
    p->env = NULL;
}

int obi_replica_exec(const json_t *config, int pid, char *const argv[], int *exit_code,
                     obi_error **err)
{
    exec_process p;
    int r = parse_process(config, &p, err);
    if (r < 0) {
        process_clear(&p);
        return r;
    }
    int cgroup_fds[MAX_CGROUPS];
    size_t cgroup_count = 0;
    int ns_flags = 0;
    cleanup_close int pidfd = (int)syscall(SYS_pidfd_open, pid, 0);
    if (pidfd < 0)
        r = obi_error_set_errno(err, errno, "the replica's init (pid %d)", pid);
    /* looked up by pid after the pidfd was opened, and the pidfd still alive afterwards: the
     * /proc entries read were the init's, not a later process's with its pid */
    if (r == 0 && (r = namespaces_to_join(pid, &ns_flags, err)) == 0)
        r = open_cgroups(pid, cgroup_fds, &cgroup_count, err);
    if (r == 0 && syscall(SYS_pidfd_send_signal, pidfd, 0, NULL, 0) < 0)
        r = obi_error_set_errno(err, errno, "the replica's init (pid %d)", pid);
    int fds[2] = {-1, -1};
    if (r == 0 && pipe2(fds, O_CLOEXEC) < 0)
        r = obi_error_set_errno(err, errno, "pipe");
    pid_t child = -1;
    if (r == 0) {
        int last_cap = last_capability();
        fflush(NULL);
        child = fork();
        if (child == 0) {
            close(fds[0]);
            enter(&p, last_cap, pidfd, ns_flags, cgroup_fds, cgroup_count, argv, fds[1]);
        }
        if (child < 0)
            r = obi_error_set_errno(err, errno, "fork");
        close(fds[1]);
    }
    for (size_t i = 0; i < cgroup_count; i++)
        close(cgroup_fds[i]);
    process_clear(&p);
    cleanup_close int error_read = fds[0];
    if (r < 0)
        return r;
    /* the terminal's signals reach the child too, which forwards them to the command */
    struct sigaction ignore = {.sa_handler = SIG_IGN}, old_int, old_quit;
    sigemptyset(&ignore.sa_mask);
    sigaction(SIGINT, &ignore, &old_int);
    sigaction(SIGQUIT, &ignore, &old_quit);
    char message[512];
    size_t len = 0;
    ssize_t n;
    while (len < sizeof message - 1 &&
           ((n = read(error_read, message + len, sizeof message - 1 - len)) > 0 ||
            (n < 0 && errno == EINTR)))
        len += n > 0 ? (size_t)n : 0;
    message[len] = 0;
    int status = 0;
    r = obi_wait(child, &status, err);
    sigaction(SIGINT, &old_int, NULL);
    sigaction(SIGQUIT, &old_quit, NULL);
    if (r < 0)
        return r;
    *exit_code = obi_wait_exit_code(status);
    if (len)
        return obi_error_set(err, -EIO, "exec in the replica: %s", message);
    return 0;
}
