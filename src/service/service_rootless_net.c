/*
 * The network of a rootless deployment (include/ocibuild/service_rootless_net.h): a holder
 * process owning a user namespace that every replica joins and a network namespace with a
 * bridge, slirp4netns attached to it (its tap0 in the bridge) for outbound access and published
 * ports, and per replica a sleeper owning the replica's network namespace, joined to the bridge
 * by a veth pair; all recorded before they run and killed by `down` (or by the next `up` when
 * they are stale, or by the sweep when their state dir is gone).
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "ocibuild/buf.h"
#include "ocibuild/cleanup.h"
#include "ocibuild/detached.h"
#include "ocibuild/fs.h"
#include "ocibuild/json_util.h"
#include "ocibuild/process.h"
#include "ocibuild/service_hosts.h"
#include "ocibuild/service_rootless_net.h"
#include "ocibuild/service_spec.h"

#define READY_TIMEOUT_MS 10000
#define RECORD_MAX 64
#define SLIRP_GATEWAY "10.0.2.2" /* slirp4netns's default gateway: the host */

/* slirp4netns's network, which the bridge extends to every replica: gateway .2, DNS .3, the
 * holder's bridge .100, replicas from .101 */
#define NET_PREFIX "10.0.2."
#define HOLDER_HOST 100
#define FIRST_REPLICA_HOST 101
#define LAST_REPLICA_HOST 254
#define MTU "65520" /* slirp4netns's --mtu (start_slirp), on every link of the bridge */

typedef struct address {
    char *id;      /* <service>-rep-<n> */
    unsigned host; /* NET_PREFIX + host */
} address;

struct obi_rootless_net {
    char *dir; /* DATA/run/rootless-net/DEPLOYMENT */
    const obi_deployment *deployment;
    pid_t holder;
    address *addresses;
    size_t address_count;
};

/* ---- processes told apart by their start time ----------------------------------------- */

/* Field 22 of /proc/PID/stat (after the parenthesised name); 0 when the process is gone. */
static unsigned long long start_time(pid_t pid)
{
    char path[64], text[1024];
    snprintf(path, sizeof path, "/proc/%d/stat", (int)pid);
    cleanup_close int fd = open(path, O_RDONLY | O_CLOEXEC);
    ssize_t n = fd < 0 ? -1 : read(fd, text, sizeof text - 1);
    if (n <= 0)
        return 0;
    text[n] = '\0';
    /* after ")": state ppid pgrp session tty tpgid flags minflt cminflt majflt cmajflt utime
     * stime cutime cstime priority nice threads itrealvalue, then starttime */
    const char *p = strrchr(text, ')');
    for (int field = 0; p && field < 20; field++)
        p = strchr(p + 1, ' ');
    if (!p)
        return 0;
    char *end = NULL;
    errno = 0;
    unsigned long long t = strtoull(p + 1, &end, 10);
    return errno || end == p + 1 ? 0 : t;
}

static char *record_path(const char *dir, const char *name)
{
    return obi_path_join(dir, name);
}

/* The recorded process when it still runs (the same start time), else 0. */
static pid_t recorded_alive(const char *dir, const char *name)
{
    cleanup_free char *path = record_path(dir, name);
    cleanup_free char *text = NULL;
    cleanup_error obi_error *ignored = NULL;
    if (!path || obi_read_file(path, RECORD_MAX, &text, NULL, &ignored) < 0)
        return 0;
    char *end = NULL, *end2 = NULL;
    errno = 0;
    long pid = strtol(text, &end, 10);
    unsigned long long t = errno || *end != ' ' ? 0 : strtoull(end + 1, &end2, 10);
    if (errno || !t || pid <= 1 || pid > INT32_MAX || start_time((pid_t)pid) != t)
        return 0;
    return (pid_t)pid;
}

/* Whether pid runs (exists and is not a zombie that its new parent has yet to reap). */
static bool running(pid_t pid)
{
    char path[64], text[512];
    snprintf(path, sizeof path, "/proc/%d/stat", (int)pid);
    cleanup_close int fd = open(path, O_RDONLY | O_CLOEXEC);
    ssize_t n = fd < 0 ? -1 : read(fd, text, sizeof text - 1);
    if (n <= 0)
        return false;
    text[n] = '\0';
    const char *p = strrchr(text, ')');
    return p && p[1] == ' ' && p[2] != 'Z' && p[2] != 'X';
}

/* Kills the recorded process (when it is still the one recorded), waits (bounded) until it is
 * gone, so that its tap device and namespaces are too, and drops the record. */
static void kill_recorded(const char *dir, const char *name)
{
    pid_t pid = recorded_alive(dir, name);
    if (pid > 0 && kill(pid, SIGKILL) == 0) {
        const struct timespec tick = {0, 10 * 1000 * 1000};
        for (int i = 0; i < 300 && running(pid); i++)
            nanosleep(&tick, NULL);
        /* reaped here when it is this process's child (a supervisor's sleeper), else ECHILD */
        (void)waitpid(pid, NULL, WNOHANG);
    }
    cleanup_free char *path = record_path(dir, name);
    if (path)
        unlink(path);
}

typedef struct recorded_start {
    const char *dir;
    char *const *argv;
    int go_fd;    /* a byte here: the record is written */
    int ready_fd; /* -1: none */
} recorded_start;

static void recorded_main(void *ctx, int unused)
{
    const recorded_start *start = ctx;
    (void)unused;
    char byte;
    if (read(start->go_fd, &byte, 1) != 1)
        _exit(127);
    /* the ready pipe as stdout (the holder says "ready" there) and as fd 3 (slirp4netns's
     * --ready-fd); nothing else of ours: it outlives this process */
    if (start->ready_fd >= 0 && (dup2(start->ready_fd, 1) < 0 || dup2(start->ready_fd, 3) < 0))
        _exit(127);
    close_range(start->ready_fd >= 0 ? 4 : 3, ~0U, 0);
    /* what the sweep finds it by once dir (and the record in it) is gone */
    if (setenv(OBI_ROOTLESS_NET_MARKER, start->dir, 1) < 0)
        _exit(127);
    execvp(start->argv[0], start->argv);
    _exit(127);
}

/* Starts argv as a detached helper (detached.h; the caller's child), with ready_fd (>= 0) as fd 3
 * and stdout; the child execs only once its record is written (a byte on the go pipe), and
 * exits when the parent died before that. */
static int spawn_recorded(const char *dir, const char *name, char *const argv[], int ready_fd,
                          pid_t *pid_out, obi_error **err)
{
    int go[2];
    if (pipe2(go, O_CLOEXEC) < 0)
        return obi_error_set_errno(err, errno, "pipe");
    const int keep[] = {go[0], ready_fd};
    obi_detached_options opts = {.keep_fds = keep, .keep_count = 2};
    recorded_start start = {dir, argv, go[0], ready_fd};
    pid_t pid = 0;
    int r = obi_spawn_detached(&opts, recorded_main, &start, NULL, &pid, err);
    if (r < 0) {
        close(go[0]);
        close(go[1]);
        return obi_error_prefix(err, r, "start %s", argv[0]);
    }
    close(go[0]);
    cleanup_close int go_fd = go[1];
    char text[RECORD_MAX];
    snprintf(text, sizeof text, "%d %llu\n", (int)pid, start_time(pid));
    cleanup_free char *path = record_path(dir, name);
    r = path ? obi_write_file_atomic(path, text, strlen(text), 0600, err) : obi_error_oom(err);
    if (r < 0) {
        kill(pid, SIGKILL);
        waitpid(pid, NULL, 0);
        return r;
    }
    if (write(go_fd, "g", 1) != 1) {
        int e = errno;
        kill(pid, SIGKILL);
        return obi_error_set_errno(err, e, "start %s", argv[0]);
    }
    *pid_out = pid;
    return 0;
}

/* Waits (bounded) for a byte on fd: the child is ready. */
static int wait_ready(int fd, pid_t pid, const char *what, obi_error **err)
{
    struct pollfd p = {fd, POLLIN, 0};
    int n;
    do
        n = poll(&p, 1, READY_TIMEOUT_MS);
    while (n < 0 && errno == EINTR);
    char byte;
    if (n == 1 && read(fd, &byte, 1) == 1)
        return 0;
    int status = 0;
    if (waitpid(pid, &status, WNOHANG) == pid)
        return obi_error_set(err, -EIO, "%s exited before it was ready (status %d)", what, status);
    return obi_error_set(err, n == 0 ? -ETIMEDOUT : -EIO, "%s: not ready after %d ms", what,
                         READY_TIMEOUT_MS);
}

/* ---- up and down ---------------------------------------------------------------------- */

static int state_dir(const char *data_dir, const char *deployment, char **out, obi_error **err)
{
    if (asprintf(out, "%s/run/rootless-net/%s", data_dir, deployment) < 0) {
        *out = NULL;
        return obi_error_oom(err);
    }
    return 0;
}

static int start_holder(obi_rootless_net *net, obi_error **err)
{
    int ready[2];
    if (pipe2(ready, O_CLOEXEC) < 0)
        return obi_error_set_errno(err, errno, "pipe");
    cleanup_close int ready_read = ready[0];
    char *argv[] = {"unshare",
                    "--user",
                    "--map-root-user",
                    "--map-auto",
                    "--net",
                    "sh",
                    "-c",
                    "ip link set lo up && echo ready && exec sleep infinity",
                    NULL};
    int r = spawn_recorded(net->dir, "holder", argv, ready[1], &net->holder, err);
    close(ready[1]);
    if (r < 0 ||
        (r = wait_ready(ready_read, net->holder, "the network holder (unshare)", err)) < 0) {
        kill_recorded(net->dir, "holder");
        return obi_error_prefix(err, r, "rootless network");
    }
    return 0;
}

/* Runs argv (nsenter ...) to completion; a failure is an error with its output. */
static int run_step(char *const argv[], const char *what, obi_error **err)
{
    cleanup_free char *output = NULL;
    int code = 0;
    int r = obi_run_capture(argv, true, 4096, &output, &code, err);
    if (r < 0)
        return obi_error_prefix(err, r, "rootless network: %s", what);
    if (code != 0)
        return obi_error_set(err, -EIO, "rootless network: %s: exit %d: %s", what, code,
                             output && *output ? output : "(no output)");
    return 0;
}

/* In the holder's namespaces: the bridge br0 (made once; also into a holder of an older
 * ocibuild) with the holder's address and slirp4netns's tap0 in it, the default route through
 * slirp4netns's gateway. Again after every slirp4netns start (a new tap0). */
static int configure_holder(obi_rootless_net *net, obi_error **err)
{
    char target[32];
    snprintf(target, sizeof target, "%d", (int)net->holder);
    char *argv[] = {"nsenter",
                    "--target",
                    target,
                    "--user",
                    "--net",
                    "--preserve-credentials",
                    "sh",
                    "-c",
                    "{ ip link show br0 >/dev/null 2>&1 || ip link add br0 mtu " MTU
                    " type bridge; } && ip addr replace " NET_PREFIX "100/24 dev br0 && "
                    "ip link set br0 up && ip link set tap0 master br0 && ip link set tap0 up && "
                    "ip route replace default via " NET_PREFIX "2",
                    NULL};
    return run_step(argv, "the bridge in the holder's namespace", err);
}

static int start_slirp(obi_rootless_net *net, obi_error **err)
{
    int ready[2];
    if (pipe2(ready, O_CLOEXEC) < 0)
        return obi_error_set_errno(err, errno, "pipe");
    cleanup_close int ready_read = ready[0];
    cleanup_free char *api = obi_path_join(net->dir, "api.sock");
    char userns[64], netns[64];
    snprintf(userns, sizeof userns, "--userns-path=/proc/%d/ns/user", (int)net->holder);
    snprintf(netns, sizeof netns, "/proc/%d/ns/net", (int)net->holder);
    cleanup_free char *api_arg = NULL;
    if (!api || asprintf(&api_arg, "--api-socket=%s", api) < 0) {
        close(ready[1]);
        return obi_error_oom(err);
    }
    unlink(api);
    char *argv[] = {"slirp4netns", "--mtu=65520",  "--disable-host-loopback",
                    api_arg,       "--ready-fd=3", "--netns-type=path",
                    userns,        netns,          "tap0",
                    NULL};
    pid_t pid = 0;
    int r = spawn_recorded(net->dir, "slirp", argv, ready[1], &pid, err);
    close(ready[1]);
    if (r < 0 || (r = wait_ready(ready_read, pid, "slirp4netns", err)) < 0) {
        kill_recorded(net->dir, "slirp");
        return obi_error_prefix(err, r, "rootless network");
    }
    return configure_holder(net, err);
}

/* ---- addresses: one per replica, sticky across `up`s (DIR/addresses: "ID HOST" lines) --- */

static const address *address_find(const obi_rootless_net *net, const char *id)
{
    for (size_t i = 0; i < net->address_count; i++)
        if (!strcmp(net->addresses[i].id, id))
            return &net->addresses[i];
    return NULL;
}

static bool host_taken(const obi_rootless_net *net, unsigned host)
{
    for (size_t i = 0; i < net->address_count; i++)
        if (net->addresses[i].host == host)
            return true;
    return false;
}

static int address_add(obi_rootless_net *net, const char *id, unsigned host, obi_error **err)
{
    address *grown = realloc(net->addresses, (net->address_count + 1) * sizeof *grown);
    if (!grown)
        return obi_error_oom(err);
    net->addresses = grown;
    if (!(grown[net->address_count].id = strdup(id)))
        return obi_error_oom(err);
    grown[net->address_count++].host = host;
    return 0;
}

/* Reads the recorded addresses, gives every replica of d that uses the network one (the lowest
 * free), and records them again: all are known before the first replica's hosts file. */
static int addresses_plan(obi_rootless_net *net, const obi_deployment *d, obi_error **err)
{
    cleanup_free char *path = record_path(net->dir, "addresses");
    cleanup_free char *text = NULL;
    cleanup_error obi_error *read_err = NULL;
    if (!path)
        return obi_error_oom(err);
    int r = 0;
    if (obi_read_file(path, 1 << 20, &text, NULL, &read_err) == 0) {
        char *save = NULL;
        for (char *line = strtok_r(text, "\n", &save); line && r == 0;
             line = strtok_r(NULL, "\n", &save)) {
            char *space = strchr(line, ' ');
            unsigned long host = space ? strtoul(space + 1, NULL, 10) : 0;
            if (!space || host < FIRST_REPLICA_HOST || host > LAST_REPLICA_HOST)
                continue;
            *space = 0;
            if (!address_find(net, line))
                r = address_add(net, line, (unsigned)host, err);
        }
    }
    for (size_t s = 0; r == 0 && s < d->service_count; s++) {
        const obi_service *svc = &d->services[s];
        for (unsigned n = 1; r == 0 && obi_service_uses_network(svc) && n <= svc->replicas; n++) {
            cleanup_free char *id = obi_service_container_id(svc->name, n);
            if (!id)
                return obi_error_oom(err);
            if (address_find(net, id))
                continue;
            unsigned host = FIRST_REPLICA_HOST;
            while (host <= LAST_REPLICA_HOST && host_taken(net, host))
                host++;
            if (host > LAST_REPLICA_HOST)
                return obi_error_set(err, -ENOSPC,
                                     "services.%s: a rootless deployment's network has room for "
                                     "%d replicas",
                                     svc->name, LAST_REPLICA_HOST - FIRST_REPLICA_HOST + 1);
            r = address_add(net, id, host, err);
        }
    }
    cleanup_buf obi_buf out = OBI_BUF_INIT;
    for (size_t i = 0; r == 0 && i < net->address_count; i++)
        if (obi_buf_appendf(&out, "%s %u\n", net->addresses[i].id, net->addresses[i].host) < 0)
            r = obi_error_oom(err);
    if (r == 0)
        r = obi_write_file_atomic(path, out.len ? (const char *)out.data : "", out.len, 0600, err);
    return r;
}

int obi_rootless_net_up(const char *data_dir, const obi_deployment *d, obi_rootless_net **out,
                        obi_error **err)
{
    obi_rootless_net *net = calloc(1, sizeof *net);
    if (!net)
        return obi_error_oom(err);
    net->deployment = d;
    int r = state_dir(data_dir, d->name, &net->dir, err);
    if (r == 0)
        r = obi_mkdir_p(net->dir, 0700, err);
    if (r == 0) {
        kill_recorded(net->dir, "slirp");
        net->holder = recorded_alive(net->dir, "holder");
        if (!net->holder)
            r = start_holder(net, err);
    }
    if (r == 0)
        r = start_slirp(net, err);
    if (r == 0)
        r = addresses_plan(net, d, err);
    if (r < 0) {
        obi_rootless_net_close(net);
        return r;
    }
    *out = net;
    return 0;
}

void obi_rootless_net_close(obi_rootless_net *net)
{
    if (!net)
        return;
    for (size_t i = 0; i < net->address_count; i++)
        free(net->addresses[i].id);
    free(net->addresses);
    free(net->dir);
    free(net);
}

int obi_rootless_net_down(const char *data_dir, const char *deployment, obi_error **err)
{
    cleanup_free char *dir = NULL;
    int r = state_dir(data_dir, deployment, &dir, err);
    if (r < 0)
        return r;
    kill_recorded(dir, "slirp");
    /* the replicas' namespaces, also of replicas the document no longer names */
    cleanup_dir DIR *records = opendir(dir);
    struct dirent *entry;
    while (records && (entry = readdir(records)))
        if (!strncmp(entry->d_name, "net-", 4))
            kill_recorded(dir, entry->d_name);
    kill_recorded(dir, "holder");
    return obi_rm_rf(dir, err);
}

/* ---- the sweep of networks whose state dir is gone ------------------------------------- */

/* The value of OBI_ROOTLESS_NET_MARKER in pid's environment (malloc'd), or NULL. */
static char *process_marker(const char *pid)
{
    char path[64];
    snprintf(path, sizeof path, "/proc/%s/environ", pid);
    cleanup_free char *env = NULL;
    size_t len = 0;
    cleanup_error obi_error *ignored = NULL;
    if (obi_read_file(path, 1 << 20, &env, &len, &ignored) < 0)
        return NULL;
    const size_t name_len = strlen(OBI_ROOTLESS_NET_MARKER);
    for (size_t at = 0; at < len; at += strlen(env + at) + 1)
        if (!strncmp(env + at, OBI_ROOTLESS_NET_MARKER, name_len) && env[at + name_len] == '=')
            return strdup(env + at + name_len + 1);
    return NULL;
}

int obi_rootless_net_sweep(unsigned *killed, obi_error **err)
{
    *killed = 0;
    cleanup_dir DIR *proc = opendir("/proc");
    if (!proc)
        return obi_error_set_errno(err, errno, "open /proc");
    uid_t uid = getuid();
    struct dirent *entry;
    while ((entry = readdir(proc))) {
        char *end = NULL;
        long pid = strtol(entry->d_name, &end, 10);
        struct stat st;
        if (*end || pid <= 1 || pid == getpid() ||
            fstatat(dirfd(proc), entry->d_name, &st, 0) < 0 || st.st_uid != uid)
            continue; /* not a process, or not this user's */
        cleanup_free char *dir = process_marker(entry->d_name);
        /* an absolute state dir that is gone, not one we cannot see (EACCES) */
        if (!dir || dir[0] != '/' || lstat(dir, &st) == 0 || errno != ENOENT)
            continue;
        unsigned long long started = start_time((pid_t)pid);
        /* the same process still (its start time), marked as before */
        cleanup_free char *again = process_marker(entry->d_name);
        if (started && again && !strcmp(again, dir) && start_time((pid_t)pid) == started &&
            kill((pid_t)pid, SIGKILL) == 0)
            (*killed)++;
    }
    return 0;
}

/* ---- replicas and published ports ------------------------------------------------------ */

/* The replica's /etc/hosts: a line per replica with its address on the bridge (as rootful);
 * host-gateway is slirp4netns's gateway, 10.0.2.2, which forwards to the host. */
static int hosts_text(const obi_rootless_net *net, const obi_deployment *d, const obi_service *self,
                      const char *id, char **out, obi_error **err)
{
    cleanup_buf obi_buf text = OBI_BUF_INIT;
    int r = obi_hosts_begin(&text, id, d->name, NULL, err);
    if (r < 0)
        return r;
    for (size_t s = 0; s < d->service_count; s++) {
        const obi_service *svc = &d->services[s];
        if (!obi_service_uses_network(svc))
            continue;
        for (unsigned i = 1; i <= svc->replicas; i++) {
            cleanup_free char *rid = obi_service_container_id(svc->name, i);
            const address *a = rid ? address_find(net, rid) : NULL;
            if (a && obi_buf_appendf(&text, NET_PREFIX "%u\t%s-%u %s %s\n", a->host, svc->name, i,
                                     rid, svc->name) < 0)
                return obi_error_oom(err);
        }
    }
    return obi_hosts_finish(&text, self, SLIRP_GATEWAY, out, err);
}

static char *replica_record(const char *id)
{
    char *name = NULL;
    return asprintf(&name, "net-%s", id) < 0 ? NULL : name;
}

/* The replica's network namespace, made anew: a sleeper in the holder's user namespace (so the
 * replica, which joins that user namespace, may join it), a veth pair from the holder's bridge
 * to its eth0, the replica's address and the default route through slirp4netns. */
static int start_replica_netns(obi_rootless_net *net, const char *id, unsigned host, pid_t *sleeper,
                               obi_error **err)
{
    cleanup_free char *record = replica_record(id);
    if (!record)
        return obi_error_oom(err);
    kill_recorded(net->dir, record);
    char holder[32];
    snprintf(holder, sizeof holder, "%d", (int)net->holder);
    int ready[2];
    if (pipe2(ready, O_CLOEXEC) < 0)
        return obi_error_set_errno(err, errno, "pipe");
    cleanup_close int ready_read = ready[0];
    char *argv[] = {"nsenter",
                    "--target",
                    holder,
                    "--user",
                    "--preserve-credentials",
                    "unshare",
                    "--net",
                    "sh",
                    "-c",
                    "ip link set lo up && echo ready && exec sleep infinity",
                    NULL};
    int r = spawn_recorded(net->dir, record, argv, ready[1], sleeper, err);
    close(ready[1]);
    if (r == 0)
        r = wait_ready(ready_read, *sleeper, "the replica's network namespace (unshare)", err);
    char pid[32], veth[32], script[512];
    snprintf(pid, sizeof pid, "%d", (int)*sleeper);
    snprintf(veth, sizeof veth, "v%u", host);
    /* a veth of an earlier namespace of this replica may not be gone yet */
    snprintf(script, sizeof script,
             "ip link del %s >/dev/null 2>&1; ip link add %s mtu " MTU
             " type veth peer name eth0 mtu " MTU " netns %s && ip link set %s master br0 up",
             veth, veth, pid, veth);
    char *veth_argv[] = {"nsenter", "--target", holder, "--user", "--net", "--preserve-credentials",
                         "sh",      "-c",       script, NULL};
    if (r == 0)
        r = run_step(veth_argv, "the replica's veth", err);
    char inside[256];
    snprintf(inside, sizeof inside,
             "ip addr add " NET_PREFIX "%u/24 dev eth0 && ip link set eth0 up && "
             "ip route add default via " NET_PREFIX "2",
             host);
    char *inside_argv[] = {
        "nsenter", "--target", pid,    "--user", "--net", "--preserve-credentials",
        "sh",      "-c",       inside, NULL};
    if (r == 0)
        r = run_step(inside_argv, "the replica's address", err);
    if (r < 0) {
        kill_recorded(net->dir, record);
        return obi_error_prefix(err, r, "%s", id);
    }
    return 0;
}

int obi_rootless_net_detach(const char *data_dir, const char *deployment, const char *id,
                            obi_error **err)
{
    cleanup_free char *dir = NULL;
    int r = state_dir(data_dir, deployment, &dir, err);
    if (r < 0)
        return r;
    cleanup_free char *record = replica_record(id);
    if (!record)
        return obi_error_oom(err);
    kill_recorded(dir, record); /* its namespace goes with it, and the veth pair with that */
    return 0;
}

int obi_rootless_net_attach(obi_rootless_net *net, const obi_service *svc, unsigned replica,
                            obi_replica_network *out, obi_error **err)
{
    cleanup_free char *id = obi_service_container_id(svc->name, replica);
    obi_replica_network rn = {NULL, NULL, NULL};
    const address *a = id ? address_find(net, id) : NULL;
    pid_t sleeper = 0;
    int r = 0;
    if (!id)
        r = obi_error_oom(err);
    else if (!a)
        r = obi_error_set(err, -ENOENT, "%s has no address on the network of %s", id,
                          net->deployment->name);
    if (r == 0 && a)
        r = start_replica_netns(net, id, a->host, &sleeper, err);
    if (r == 0 && (asprintf(&rn.netns_path, "/proc/%d/ns/net", (int)sleeper) < 0 ||
                   asprintf(&rn.userns_path, "/proc/%d/ns/user", (int)net->holder) < 0))
        r = obi_error_oom(err);
    if (r == 0)
        r = hosts_text(net, net->deployment, svc, id, &rn.hosts, err);
    if (r < 0) {
        obi_replica_network_clear(&rn);
        return r;
    }
    *out = rn;
    return 0;
}

/* One request on slirp4netns's API socket; a reply with "error" is an error. */
static int api_request(const char *socket_path, json_t *request, obi_error **err)
{
    struct sockaddr_un sun = {.sun_family = AF_UNIX};
    if (strlen(socket_path) >= sizeof sun.sun_path)
        return obi_error_set(err, -ENAMETOOLONG, "%s: too long for a socket path", socket_path);
    memcpy(sun.sun_path, socket_path, strlen(socket_path) + 1);
    cleanup_close int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0 || connect(fd, (struct sockaddr *)&sun, sizeof sun) < 0)
        return obi_error_set_errno(err, errno, "connect %s", socket_path);
    cleanup_free char *text = json_dumps(request, JSON_COMPACT);
    if (!text)
        return obi_error_oom(err);
    if (write(fd, text, strlen(text)) != (ssize_t)strlen(text))
        return obi_error_set_errno(err, errno, "write %s", socket_path);
    shutdown(fd, SHUT_WR);
    char reply[4096];
    size_t len = 0;
    ssize_t n;
    while (len < sizeof reply - 1 && (n = read(fd, reply + len, sizeof reply - 1 - len)) > 0)
        len += (size_t)n;
    reply[len] = '\0';
    json_error_t jerr;
    cleanup_json json_t *parsed = json_loads(reply, 0, &jerr);
    json_t *error = parsed ? json_object_get(parsed, "error") : NULL;
    if (!parsed || error || !json_object_get(parsed, "return"))
        return obi_error_set(err, -EIO, "slirp4netns: %s", reply);
    return 0;
}

/* One add_hostfwd on slirp4netns's API socket; what names the key in errors. */
/* Publishes address:port on the host to guest_port of svc's first replica: slirp4netns forwards
 * a port to one address, so there is no round robin over replicas here (rootful's proxy has). */
static int add_hostfwd(const obi_rootless_net *net, const char *api, const char *what,
                       const obi_service *svc, bool udp, const char *host_addr, unsigned port,
                       unsigned guest_port, obi_error **err)
{
    cleanup_free char *first = obi_service_container_id(svc->name, 1);
    const address *a = first ? address_find(net, first) : NULL;
    if (!a)
        return obi_error_set(err, -ENOENT, "%s: no address for replica 1 of %s", what, svc->name);
    char guest[32];
    snprintf(guest, sizeof guest, NET_PREFIX "%u", a->host);
    cleanup_json json_t *request =
        json_pack("{s:s, s:{s:s, s:s, s:i, s:s, s:i}}", "execute", "add_hostfwd", "arguments",
                  "proto", udp ? "udp" : "tcp", "host_addr", host_addr, "host_port", (int)port,
                  "guest_addr", guest, "guest_port", (int)guest_port);
    int r = request ? api_request(api, request, err) : obi_error_oom(err);
    return r < 0 ? obi_error_prefix(err, r, "%s: publish on %s port %u", what, host_addr, port) : 0;
}

int obi_rootless_net_publish(obi_rootless_net *net, const obi_deployment *d, obi_error **err)
{
    cleanup_free char *api = obi_path_join(net->dir, "api.sock");
    if (!api)
        return obi_error_oom(err);
    for (size_t s = 0; s < d->service_count; s++) {
        const obi_service *svc = &d->services[s];
        if (!obi_service_uses_network(svc))
            continue; /* host_network replicas listen on the host themselves */
        for (size_t e = 0; e < svc->endpoint_count; e++) {
            const obi_endpoint *ep = &svc->endpoints[e];
            if (!ep->public)
                continue;
            cleanup_free char *what =
                obi_strdup_printf("services.%s.endpoints.%s", svc->name, ep->name);
            int r = what ? add_hostfwd(net, api, what, svc, ep->protocol == OBI_ENDPOINT_UDP,
                                       "127.0.0.1", ep->port, ep->target_port, err)
                         : obi_error_oom(err);
            if (r < 0)
                return r;
        }
        /* port_mappings: host_ip as written, else 127.0.0.1 as endpoints; slirp4netns does
         * not say which port it would pick, so host_port must be named */
        for (size_t i = 0; i < svc->port_mapping_count; i++) {
            const obi_port_mapping *pm = &svc->port_mappings[i];
            cleanup_free char *what =
                obi_strdup_printf("services.%s.port_mappings[%zu]", svc->name, i);
            if (!what)
                return obi_error_oom(err);
            if (!pm->host_port)
                return obi_error_set(err, -ENOTSUP,
                                     "%s: a normal user's deployment needs a host_port "
                                     "(slirp4netns cannot report a port it picks)",
                                     what);
            int r =
                add_hostfwd(net, api, what, svc, pm->udp, pm->host_ip ? pm->host_ip : "127.0.0.1",
                            pm->host_port, pm->container_port, err);
            if (r < 0)
                return r;
        }
    }
    return 0;
}
