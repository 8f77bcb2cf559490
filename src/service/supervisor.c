/*
 * The deployment's supervisor (include/ocibuild/supervisor.h). `up` forks it (own session,
 * killed with `up` until its first pass is reported) with the deployment and lifecycle already in
 * memory; it reports its first pass (the planned replicas started in dependency order) over a pipe
 * that `up` relays, then keeps watching. One state machine per replica, one per service (waiting
 * for dependencies, running init steps, started), advanced by one function, supervisor_step, after
 * every event: a container init's pidfd turning readable (it exited), a signal (SIGTERM: leave;
 * SIGCHLD: a check finished), or the 100 ms timerfd tick that drives deadlines (backoff, health
 * interval, dependency timeouts, cron times). Checks run in forked children so the loop never
 * blocks on the network: tcp and http checks enter the replica's network namespace first (setns),
 * so they see the replica's 127.0.0.1 whatever network it has; command checks are the runtime's
 * `exec`. Starting and stopping a replica are the lifecycle's own (lifecycle.c) and block.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <limits.h>
#include <netdb.h>
#include <netinet/in.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/file.h>
#include <sys/prctl.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/timerfd.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "ocibuild/cleanup.h"
#include "ocibuild/cron.h"
#include "ocibuild/detached.h"
#include "ocibuild/fs.h"
#include "ocibuild/json_util.h"
#include "ocibuild/number.h"
#include "ocibuild/process.h"
#include "ocibuild/supervisor.h"
#include "service_internal.h"

#define TICK_MS 100
#define EXIT_RECORD_WAIT_MS 2000 /* the monitor writes DIR/exit right after the init's exit */
#define STOP_WAIT_MS 60000       /* obi_supervisor_stop: its current step may stop a container */
#define INIT_RETRY_MS 1000       /* wait_tcp / wait_http: the next try */

/* ---- pure parts ---- */

uint64_t obi_backoff_delay_ms(uint64_t base_ms, unsigned failures)
{
    if (failures == 0)
        return 0;
    uint64_t delay = base_ms ? base_ms : OBI_BACKOFF_BASE_MS;
    for (unsigned i = 1; i < failures && delay < OBI_BACKOFF_MAX_MS; i++)
        delay *= 2;
    return delay < OBI_BACKOFF_MAX_MS ? delay : OBI_BACKOFF_MAX_MS;
}

obi_exit_decision obi_supervisor_on_exit(const obi_service *svc, int exit_code, unsigned restarts)
{
    if (svc->rtype == OBI_RTYPE_CRON)
        return OBI_EXIT_STAY_DOWN;
    if (svc->has_restart_policy) {
        const obi_restart_policy *p = &svc->restart_policy;
        switch (p->kind) {
        case OBI_RESTART_NO:
            return OBI_EXIT_STAY_DOWN;
        case OBI_RESTART_ALWAYS:
        case OBI_RESTART_UNLESS_STOPPED: /* a stopped replica is held, never seen here */
            return OBI_EXIT_RESTART;
        case OBI_RESTART_ON_FAILURE:
            if (exit_code == 0 || (p->max_attempts && restarts >= p->max_attempts))
                return OBI_EXIT_STAY_DOWN;
            return OBI_EXIT_RESTART;
        }
    }
    if (svc->rtype == OBI_RTYPE_JOB)
        return OBI_EXIT_STAY_DOWN;
    switch (svc->on_panic) {
    case OBI_PANIC_SHUTDOWN:
        return OBI_EXIT_SHUTDOWN_SERVICE;
    case OBI_PANIC_ISOLATE:
        return OBI_EXIT_STAY_DOWN;
    case OBI_PANIC_RESTART:
        break;
    }
    return OBI_EXIT_RESTART;
}

/* ---- files ---- */

static char *deployment_file(const char *data_dir, const char *deployment, const char *name)
{
    char *path = NULL;
    if (asprintf(&path, "%s/services/%s/%s", data_dir, deployment, name) < 0)
        return NULL;
    return path;
}

bool obi_supervisor_alive(const char *data_dir, const char *deployment, int *pid)
{
    *pid = 0;
    cleanup_free char *lock = deployment_file(data_dir, deployment, "supervisor.lock");
    cleanup_free char *pid_path = deployment_file(data_dir, deployment, "supervisor.pid");
    if (!lock || !pid_path)
        return false;
    cleanup_close int fd = open(lock, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
    if (fd < 0 || flock(fd, LOCK_SH | LOCK_NB) == 0)
        return false; /* no lock file, or nobody holds it */
    cleanup_free char *text = NULL;
    size_t len = 0;
    cleanup_error obi_error *ignored = NULL;
    unsigned long long value = 0;
    if (obi_read_file(pid_path, 32, &text, &len, &ignored) == 0 &&
        (text[strcspn(text, "\n")] = 0, obi_parse_decimal(text, INT_MAX, &value)))
        *pid = (int)value;
    return true;
}

int obi_supervisor_stop(const char *data_dir, const char *deployment, obi_error **err)
{
    int pid = 0;
    if (!obi_supervisor_alive(data_dir, deployment, &pid))
        return 0;
    cleanup_free char *lock = deployment_file(data_dir, deployment, "supervisor.lock");
    if (!lock)
        return obi_error_oom(err);
    cleanup_close int fd = open(lock, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
    if (fd < 0)
        return 0;
    /* the lock is held, so the pid file is the live supervisor's (it writes it after locking) */
    if (pid > 0 && kill(pid, SIGTERM) < 0 && errno != ESRCH)
        return obi_error_set_errno(err, errno, "signal the supervisor of %s (pid %d)", deployment,
                                   pid);
    for (long waited = 0; flock(fd, LOCK_EX | LOCK_NB) < 0; waited += 20) {
        if (waited >= STOP_WAIT_MS)
            return obi_error_set(err, -ETIMEDOUT,
                                 "the supervisor of %s (pid %d) did not exit %d s after SIGTERM",
                                 deployment, pid, STOP_WAIT_MS / 1000);
        struct timespec ts = {0, 20 * 1000000};
        nanosleep(&ts, NULL);
    }
    return 0;
}

int obi_supervision_read(const char *status_path, obi_supervision *out, obi_error **err)
{
    cleanup_free char *text = NULL;
    size_t len = 0;
    cleanup_error obi_error *read_err = NULL;
    if (obi_read_file(status_path, 8192, &text, &len, &read_err) < 0)
        return obi_error_move(err, &read_err);
    json_error_t jerr;
    cleanup_json json_t *doc = json_loadb(text, len, 0, &jerr);
    if (!json_is_object(doc))
        return obi_error_set(err, -EINVAL, "%s: not a status record", status_path);
    *out = (obi_supervision){0};
    const char *state = json_string_value(json_object_get(doc, "state"));
    const char *health = json_string_value(json_object_get(doc, "health"));
    const char *note = json_string_value(json_object_get(doc, "note"));
    snprintf(out->state, sizeof out->state, "%s", state ? state : "?");
    snprintf(out->health, sizeof out->health, "%s", health ? health : "none");
    snprintf(out->note, sizeof out->note, "%s", note ? note : "");
    out->restarts = (unsigned)json_integer_value(json_object_get(doc, "restarts"));
    out->runs = (unsigned)json_integer_value(json_object_get(doc, "runs"));
    out->next_ms = (int64_t)json_integer_value(json_object_get(doc, "next_ms"));
    return 0;
}

/* ---- the model ---- */

typedef enum rep_state {
    REP_IDLE,      /* not ours to start (outside the plan, not running) */
    REP_PENDING,   /* to be started when its service may start */
    REP_RUNNING,   /* its init is watched */
    REP_EXITING,   /* its init exited; waiting for the monitor's exit record */
    REP_BACKOFF,   /* restarting at next_ms */
    REP_DONE,      /* stays down: a job that ran, isolate, restart policy no */
    REP_HELD,      /* stopped with `service stop` */
    REP_SCHEDULED, /* cron: next run at next_ms */
    REP_FAILED,    /* could not be started */
} rep_state;

static const char *const REP_STATE_NAMES[] = {
    [REP_IDLE] = "idle",       [REP_PENDING] = "waiting",     [REP_RUNNING] = "running",
    [REP_EXITING] = "running", [REP_BACKOFF] = "backoff",     [REP_DONE] = "done",
    [REP_HELD] = "held",       [REP_SCHEDULED] = "scheduled", [REP_FAILED] = "failed",
};

typedef enum health_state { H_NONE, H_STARTING, H_HEALTHY, H_UNHEALTHY } health_state;
static const char *const HEALTH_NAMES[] = {"none", "starting", "healthy", "unhealthy"};

typedef struct check {
    pid_t pid;           /* the child doing it, 0 when none runs */
    int64_t deadline_ms; /* monotonic */
} check;

typedef struct replica {
    const obi_service *svc;
    unsigned n;
    obi_replica_paths paths;
    rep_state state;
    int pid;                                /* the container's init */
    int pidfd;                              /* -1 when not watched */
    int64_t started_ms, exited_ms, next_ms; /* monotonic */
    int64_t next_wall_ms;                   /* cron/backoff: for status.json */
    unsigned failures, restarts, runs;
    health_state health;
    unsigned health_fails;
    int64_t next_check_ms;
    check check;
    bool existed; /* had a container when the supervisor started: "restarted" */
    char note[160];
} replica;

typedef enum svc_state { SVC_IDLE, SVC_WAITING, SVC_INIT, SVC_STARTED, SVC_FAILED } svc_state;

typedef struct service {
    const obi_service *svc;
    svc_state state;
    int64_t waiting_since_ms;
    size_t init_index;     /* the init step running */
    unsigned init_attempt; /* of that step */
    int64_t init_step_since_ms, init_next_ms;
    unsigned init_failures;
    check init_check;
    replica *replicas;
    bool has_cron;
    obi_cron cron;
} service;

typedef struct supervisor {
    lifecycle *lc;
    const obi_deployment *deployment;
    service *services; /* start order */
    size_t service_count;
    int report_fd; /* the first pass's pipe to `up`; -1 after it */
    bool failed;   /* something of the first pass failed */
    bool up_gone;  /* `up` died during the first pass (its pipe broke): stop starting */
    int epoll_fd;
} supervisor;

static int64_t now_ms(clockid_t clock)
{
    struct timespec ts;
    clock_gettime(clock, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* Reports a line: to `up` during the first pass (kind 'R' or 'E'), always to the log. */
static void say(supervisor *sv, char kind, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static void say(supervisor *sv, char kind, const char *fmt, ...)
{
    cleanup_free char *text = NULL;
    va_list ap;
    va_start(ap, fmt);
    int n = vasprintf(&text, fmt, ap);
    va_end(ap);
    if (n < 0)
        return;
    for (char *p = text; *p; p++)
        if (*p == '\n')
            *p = ' ';
    time_t t = time(NULL);
    struct tm tm;
    char stamp[32];
    strftime(stamp, sizeof stamp, "%Y-%m-%dT%H:%M:%SZ", gmtime_r(&t, &tm));
    fprintf(stderr, "%s %s%s\n", stamp, kind == 'E' ? "error: " : "", text);
    if (kind == 'E')
        sv->failed = true;
    if (sv->report_fd >= 0) {
        cleanup_free char *line = NULL;
        if (asprintf(&line, "%c%s\n", kind, text) >= 0 &&
            obi_write_all(sv->report_fd, line, strlen(line)) < 0)
            sv->up_gone = true;
    }
}

static void write_status(const replica *rep)
{
    cleanup_json json_t *doc = json_pack(
        "{s:s, s:s, s:i, s:i, s:I, s:s}", "state", REP_STATE_NAMES[rep->state], "health",
        HEALTH_NAMES[rep->health], "restarts", (int)rep->restarts, "runs", (int)rep->runs,
        "next_ms",
        (json_int_t)(rep->state == REP_BACKOFF || rep->state == REP_SCHEDULED ? rep->next_wall_ms
                                                                              : 0),
        "note", rep->note);
    cleanup_free char *text = doc ? json_dumps(doc, JSON_COMPACT) : NULL;
    cleanup_error obi_error *ignored = NULL;
    /* a replica that failed to start left no dir and gets none; a scheduled cron replica
     * gets its dir early, for ps */
    if (rep->state == REP_SCHEDULED ? mkdir(rep->paths.dir, 0700) < 0 && errno != EEXIST
                                    : access(rep->paths.dir, F_OK) < 0)
        return;
    if (text)
        obi_write_file_atomic(rep->paths.status, text, strlen(text), 0644, &ignored);
}

static void set_state(replica *rep, rep_state state)
{
    rep->state = state;
    write_status(rep);
}

static void unwatch(supervisor *sv, replica *rep)
{
    if (rep->pidfd >= 0) {
        epoll_ctl(sv->epoll_fd, EPOLL_CTL_DEL, rep->pidfd, NULL);
        close(rep->pidfd);
    }
    rep->pidfd = -1;
}

/* Watches a running init; a pid that is already gone counts as exited at once. */
static void watch(supervisor *sv, replica *rep, int pid)
{
    unwatch(sv, rep);
    rep->pid = pid;
    rep->started_ms = now_ms(CLOCK_MONOTONIC);
    rep->health = rep->svc->health.kind == OBI_HEALTH_NONE ? H_NONE : H_STARTING;
    rep->health_fails = 0;
    rep->next_check_ms = rep->started_ms + (int64_t)rep->svc->health.start_grace_ms;
    rep->note[0] = 0;
    int fd = pid > 0 ? (int)syscall(SYS_pidfd_open, pid, 0) : -1;
    if (fd < 0) {
        rep->exited_ms = rep->started_ms;
        set_state(rep, REP_EXITING);
        return;
    }
    rep->pidfd = fd;
    struct epoll_event ev = {.events = EPOLLIN, .data.ptr = rep};
    epoll_ctl(sv->epoll_fd, EPOLL_CTL_ADD, fd, &ev);
    set_state(rep, REP_RUNNING);
}

static void start_replica(supervisor *sv, replica *rep, const char *verb)
{
    /* never after `up` was killed mid-way, nor into a state dir someone removed (a start
     * would make it again, and the network sweep would take the deployment for alive) */
    cleanup_free char *state_dir =
        deployment_file(obi_lc_data_dir(sv->lc), sv->deployment->name, ".");
    if (sv->up_gone || !state_dir || access(state_dir, F_OK) < 0) {
        sv->up_gone = true;
        return;
    }
    obi_error *err = NULL;
    int pid = 0;
    if (obi_lc_replica_start(sv->lc, rep->svc, rep->n, &pid, &err) < 0) {
        snprintf(rep->note, sizeof rep->note, "%s", err->message);
        say(sv, 'E', "%s", err->message);
        obi_error_free(err);
        set_state(rep, REP_FAILED);
        return;
    }
    if (rep->svc->rtype != OBI_RTYPE_SERVICE)
        rep->runs++;
    say(sv, 'R', "%s: %s (pid %d)", rep->paths.id, verb, pid);
    watch(sv, rep, pid);
}

/* ---- checks: forked children ---- */

/* Connects to host:port (a name through getaddrinfo) within timeout; for http sends a GET of
 * path and compares the status. The child's exit code is the answer. */
static _Noreturn void check_child_connect(const char *host, unsigned port, const char *path,
                                          unsigned expect_status)
{
    struct addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM};
    struct addrinfo *res = NULL;
    char port_text[16];
    snprintf(port_text, sizeof port_text, "%u", port);
    if (!strcmp(host, "localhost"))
        host = "127.0.0.1";
    if (getaddrinfo(host, port_text, &hints, &res) != 0 || !res)
        _exit(2);
    int fd = socket(res->ai_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0 || connect(fd, res->ai_addr, res->ai_addrlen) < 0)
        _exit(1);
    if (!path)
        _exit(0);
    char request[2048];
    int n =
        snprintf(request, sizeof request,
                 "GET %s HTTP/1.0\r\nHost: %s\r\nUser-Agent: ocibuild-health\r\n\r\n", path, host);
    if (n < 0 || (size_t)n >= sizeof request || obi_write_all(fd, request, (size_t)n) < 0)
        _exit(1);
    char reply[64] = {0};
    size_t got = 0;
    while (got < sizeof reply - 1) {
        ssize_t r = read(fd, reply + got, sizeof reply - 1 - got);
        if (r <= 0)
            break;
        got += (size_t)r;
    }
    /* "HTTP/1.x NNN ..." */
    const char *space = strchr(reply, ' ');
    if (strncmp(reply, "HTTP/", 5) != 0 || !space)
        _exit(1);
    char *end = NULL;
    unsigned long status = strtoul(space + 1, &end, 10);
    if (end != space + 4)
        _exit(1);
    if (expect_status ? status == expect_status : status >= 200 && status < 300)
        _exit(0);
    _exit(1);
}

/* http://HOST[:PORT][/PATH] into its parts (host and path malloc'd). */
static bool split_http_url(const char *url, char **host, unsigned *port, char **path)
{
    const char *p = url + strlen("http://");
    size_t host_len = strcspn(p, ":/");
    if (host_len == 0)
        return false;
    *port = 80;
    const char *rest = p + host_len;
    if (*rest == ':') {
        char *end = NULL;
        unsigned long v = strtoul(rest + 1, &end, 10);
        if (end == rest + 1 || v == 0 || v > 65535 || (*end && *end != '/'))
            return false;
        *port = (unsigned)v;
        rest = end;
    }
    *host = strndup(p, host_len);
    *path = strdup(*rest ? rest : "/");
    return *host && *path;
}

/* Forks a check; pid is the replica's init to enter the network namespace of (0: the host's).
 * kind: a health kind; for init steps the same kinds (tcp, http). */
static pid_t spawn_check(supervisor *sv, int pid, obi_health_kind kind, const char *host,
                         unsigned port, const char *url, unsigned expect_status,
                         const char *command, const obi_replica_paths *paths)
{
    cleanup_free char *url_host = NULL, *url_path = NULL;
    unsigned url_port = 0;
    if (kind == OBI_HEALTH_HTTP && !split_http_url(url, &url_host, &url_port, &url_path))
        return -1;
    cleanup_close int netns = -1;
    if (pid > 0 && kind != OBI_HEALTH_COMMAND) {
        char ns_path[64];
        snprintf(ns_path, sizeof ns_path, "/proc/%d/ns/net", pid);
        if ((netns = open(ns_path, O_RDONLY | O_CLOEXEC)) < 0)
            return -1;
    }
    fflush(NULL);
    pid_t child = fork();
    if (child != 0)
        return child;
    sigset_t all;
    sigemptyset(&all);
    sigprocmask(SIG_SETMASK, &all, NULL);
    if (netns >= 0 && setns(netns, CLONE_NEWNET) < 0)
        _exit(3);
    switch (kind) {
    case OBI_HEALTH_TCP:
        check_child_connect(host ? host : "127.0.0.1", port, NULL, 0);
    case OBI_HEALTH_HTTP:
        check_child_connect(url_host, url_port, url_path, expect_status);
    case OBI_HEALTH_COMMAND: {
        if (!paths)
            _exit(2);
        int null_fd = open("/dev/null", O_RDWR);
        if (null_fd >= 0)
            dup2(null_fd, 0);
        char *argv[] = {"/bin/sh", "-c", (char *)command, NULL};
        int code = 0;
        obi_error *err = NULL;
        if (obi_lc_replica_exec(sv->lc, paths, pid, argv, false, &code, &err) < 0) {
            fprintf(stderr, "%s: health check: %s\n", paths->id, err->message);
            _exit(127);
        }
        _exit(code);
    }
    case OBI_HEALTH_NONE:
        break;
    }
    _exit(0);
}

/* The check's result when it has finished: 1 passed, 0 failed, -1 still running. */
static int check_poll(check *c, int64_t now)
{
    if (c->pid <= 0)
        return -1;
    int status;
    pid_t r = waitpid(c->pid, &status, WNOHANG);
    if (r == 0 && now < c->deadline_ms)
        return -1;
    if (r == 0) { /* past its timeout */
        kill(c->pid, SIGKILL);
        while (waitpid(c->pid, &status, 0) < 0 && errno == EINTR) {
        }
        c->pid = 0;
        return 0;
    }
    c->pid = 0;
    return r > 0 && WIFEXITED(status) && WEXITSTATUS(status) == 0;
}

static void health_step(supervisor *sv, replica *rep, int64_t now)
{
    const obi_health *h = &rep->svc->health;
    if (rep->state != REP_RUNNING || h->kind == OBI_HEALTH_NONE)
        return;
    int result = check_poll(&rep->check, now);
    if (result >= 0) {
        health_state before = rep->health;
        if (result == 1) {
            rep->health_fails = 0;
            rep->health = H_HEALTHY;
        } else if (++rep->health_fails > h->retries || rep->health == H_HEALTHY) {
            rep->health = rep->health_fails > h->retries ? H_UNHEALTHY : rep->health;
        }
        if (rep->health != before) {
            say(sv, 'R', "%s: %s", rep->paths.id, HEALTH_NAMES[rep->health]);
            write_status(rep);
        }
        rep->next_check_ms = now + (int64_t)h->interval_ms;
    }
    if (rep->check.pid == 0 && now >= rep->next_check_ms) {
        pid_t child = spawn_check(sv, rep->pid, h->kind, NULL, h->port, h->url, h->expect_status,
                                  h->command, &rep->paths);
        if (child > 0) {
            rep->check = (check){child, now + (int64_t)h->timeout_ms};
        } else {
            rep->next_check_ms = now + (int64_t)h->interval_ms;
        }
    }
}

/* ---- exits and restarts ---- */

static void schedule_cron(service *s, replica *rep)
{
    time_t next = 0;
    time_t now = time(NULL);
    if (obi_cron_next(&s->cron, now, &next) < 0) {
        snprintf(rep->note, sizeof rep->note, "the schedule has no next time");
        set_state(rep, REP_DONE);
        return;
    }
    rep->next_wall_ms = (int64_t)next * 1000;
    rep->next_ms = now_ms(CLOCK_MONOTONIC) + ((int64_t)next - (int64_t)now) * 1000 -
                   (now_ms(CLOCK_REALTIME) % 1000);
    set_state(rep, REP_SCHEDULED);
}

static void shutdown_service(supervisor *sv, service *s, replica *except)
{
    for (unsigned i = 0; i < s->svc->replicas; i++) {
        replica *rep = &s->replicas[i];
        if (rep == except || rep->state != REP_RUNNING)
            continue;
        unwatch(sv, rep);
        obi_error *err = NULL;
        if (obi_lc_replica_stop(sv->lc, &rep->paths, &err) < 0) {
            say(sv, 'R', "%s: stopping: %s", rep->paths.id, err->message);
            obi_error_free(err);
        }
        snprintf(rep->note, sizeof rep->note, "stopped: on_panic shutdown");
        set_state(rep, REP_DONE);
    }
}

/* lifecycle.delete_on_exit (zlayer: a terminated container and its bundle are removed, not
 * kept for inspection; Docker's --rm): a replica that stays down goes. */
static void remove_if_delete_on_exit(supervisor *sv, replica *rep)
{
    if (!rep->svc->delete_on_exit)
        return;
    cleanup_error obi_error *err = NULL;
    if (obi_lc_replica_remove(sv->lc, &rep->paths, &err) < 0)
        say(sv, 'R', "%s: lifecycle.delete_on_exit: %s", rep->paths.id, err->message);
    else
        say(sv, 'R', "%s: removed (lifecycle.delete_on_exit)", rep->paths.id);
}

static void handle_exit(supervisor *sv, service *s, replica *rep, int64_t now)
{
    int code = -1, sig = 0;
    cleanup_error obi_error *read_err = NULL;
    if (obi_lifecycle_read_exit(rep->paths.exit_file, &code, &sig, &read_err) < 0) {
        if (now - rep->exited_ms < EXIT_RECORD_WAIT_MS)
            return; /* the monitor has not written it yet */
        code = -1;  /* unknown: treated as a failure */
    }
    if (rep->check.pid > 0) {
        kill(rep->check.pid, SIGKILL);
        waitpid(rep->check.pid, NULL, 0);
        rep->check.pid = 0;
    }
    rep->health = rep->svc->health.kind == OBI_HEALTH_NONE ? H_NONE : H_STARTING;
    if (access(rep->paths.held, F_OK) == 0) {
        set_state(rep, REP_HELD);
        return;
    }
    say(sv, 'R', "%s: exited with %d", rep->paths.id, code);
    if (rep->svc->rtype == OBI_RTYPE_CRON) {
        schedule_cron(s, rep);
        return;
    }
    switch (obi_supervisor_on_exit(rep->svc, code, rep->restarts)) {
    case OBI_EXIT_STAY_DOWN:
        set_state(rep, REP_DONE);
        remove_if_delete_on_exit(sv, rep);
        return;
    case OBI_EXIT_SHUTDOWN_SERVICE:
        snprintf(rep->note, sizeof rep->note, "exited with %d: on_panic shutdown", code);
        set_state(rep, REP_DONE);
        shutdown_service(sv, s, rep);
        return;
    case OBI_EXIT_RESTART:
        break;
    }
    if (now - rep->started_ms >= OBI_BACKOFF_RESET_MS)
        rep->failures = 0;
    rep->failures++;
    uint64_t delay = obi_backoff_delay_ms(
        rep->svc->has_restart_policy ? rep->svc->restart_policy.delay_ms : 0, rep->failures);
    rep->next_ms = now + (int64_t)delay;
    rep->next_wall_ms = now_ms(CLOCK_REALTIME) + (int64_t)delay;
    set_state(rep, REP_BACKOFF);
}

static void replica_step(supervisor *sv, service *s, replica *rep, int64_t now)
{
    switch (rep->state) {
    case REP_RUNNING:
        health_step(sv, rep, now);
        break;
    case REP_EXITING:
        handle_exit(sv, s, rep, now);
        break;
    case REP_BACKOFF:
        if (now >= rep->next_ms) {
            rep->restarts++;
            start_replica(sv, rep, "restarted");
        }
        break;
    case REP_SCHEDULED:
        if (now >= rep->next_ms)
            start_replica(sv, rep, "cron run started");
        break;
    default:
        break;
    }
}

/* ---- services: dependencies and init steps ---- */

static service *find_service(supervisor *sv, const char *name)
{
    for (size_t i = 0; i < sv->service_count; i++)
        if (!strcmp(sv->services[i].svc->name, name))
            return &sv->services[i];
    return NULL;
}

/* The first replica of d that could not be started (its note says why), or NULL: a dependency
 * with one can never hold, so its dependents need not wait out their timeout. */
static const replica *failed_replica(const service *d)
{
    if (d->state == SVC_FAILED)
        return d->replicas;
    for (unsigned i = 0; d->replicas && i < d->svc->replicas; i++)
        if (d->replicas[i].state == REP_FAILED)
            return &d->replicas[i];
    return NULL;
}

/* Whether dependency d's condition holds now. */
static bool condition_holds(const service *d, obi_depend_condition cond)
{
    if (!d->replicas)
        return false;
    for (unsigned i = 0; i < d->svc->replicas; i++) {
        const replica *rep = &d->replicas[i];
        if (d->svc->rtype == OBI_RTYPE_JOB) {
            /* a job: started once it ran; healthy once it finished with 0 */
            if (cond == OBI_DEPEND_STARTED ? rep->runs == 0 && rep->state != REP_DONE
                                           : rep->state != REP_DONE)
                return false;
            continue;
        }
        if (d->svc->rtype == OBI_RTYPE_CRON)
            continue; /* a schedule: nothing to wait for */
        if (rep->state != REP_RUNNING)
            return false;
        if (cond != OBI_DEPEND_STARTED && rep->health != H_NONE && rep->health != H_HEALTHY)
            return false;
    }
    return true;
}

static void start_service(supervisor *sv, service *s)
{
    s->state = SVC_STARTED;
    for (unsigned i = 0; i < s->svc->replicas; i++) {
        replica *rep = &s->replicas[i];
        if (rep->state != REP_PENDING)
            continue;
        if (s->svc->rtype == OBI_RTYPE_CRON)
            schedule_cron(s, rep);
        else
            start_replica(sv, rep, rep->existed ? "restarted" : "started");
    }
}

/* The short reason `ps` shows for a replica; a longer text is cut at the note's size (the
 * whole text is in the supervisor's log). */
static void set_note(char *note, size_t size, const char *text)
{
    size_t len = strnlen(text, size - 1);
    memcpy(note, text, len);
    note[len] = 0;
}

static void fail_service(supervisor *sv, service *s, const char *why)
{
    s->state = SVC_FAILED;
    say(sv, 'E', "%s: %s", s->svc->name, why);
    for (unsigned i = 0; i < s->svc->replicas; i++)
        if (s->replicas[i].state == REP_PENDING) {
            set_note(s->replicas[i].note, sizeof s->replicas[i].note, why);
            set_state(&s->replicas[i], REP_FAILED);
        }
}

/* init.run in a child: the one-off container (obi_lc_init_run); exit 0 when the command did. */
static pid_t spawn_init_run(supervisor *sv, const obi_service *svc, const obi_init_step *step)
{
    fflush(NULL);
    pid_t child = fork();
    if (child != 0)
        return child;
    sigset_t none;
    sigemptyset(&none);
    sigprocmask(SIG_SETMASK, &none, NULL);
    obi_error *err = NULL;
    int code = -1;
    if (obi_lc_init_run(sv->lc, svc, step->command, step->timeout_ms, &code, &err) < 0) {
        fprintf(stderr, "%s: init step %s: %s\n", svc->name, step->id, err->message);
        _exit(1);
    }
    if (code != 0)
        fprintf(stderr, "%s: init step %s: exit %d\n", svc->name, step->id, code);
    _exit(code == 0 ? 0 : 1);
}

/* Runs init.steps one after the other; on to start_service when the last one passed. */
static void init_step(supervisor *sv, service *s, int64_t now)
{
    if (s->init_index >= s->svc->init_step_count) {
        start_service(sv, s);
        return;
    }
    const obi_init_step *step = &s->svc->init_steps[s->init_index];
    if (s->init_attempt == 0 && s->init_step_since_ms == 0)
        s->init_step_since_ms = now;
    int result = check_poll(&s->init_check, now);
    if (result == 0 && step->action == OBI_INIT_RUN)
        s->init_step_since_ms = now - (int64_t)step->timeout_ms; /* one try per window */
    if (result == 1) {
        say(sv, 'R', "%s: init step %s passed", s->svc->name, step->id);
        s->init_index++;
        s->init_attempt = 0;
        s->init_step_since_ms = 0;
        s->init_next_ms = 0;
        return;
    }
    if (result == 0)
        s->init_next_ms = now + INIT_RETRY_MS;
    if (now - s->init_step_since_ms >= (int64_t)step->timeout_ms) {
        if (s->init_check.pid > 0)
            return; /* its own deadline ends it */
        if (s->init_attempt < step->retry) {
            s->init_attempt++;
            s->init_step_since_ms = now;
            return;
        }
        s->init_attempt = 0;
        s->init_step_since_ms = 0;
        if (step->on_failure != OBI_FAILURE_FAIL) {
            if (step->on_failure == OBI_FAILURE_WARN)
                say(sv, 'R', "%s: warning: init step %s failed; going on", s->svc->name, step->id);
            s->init_index++;
            return;
        }
        s->init_failures++;
        switch (s->svc->on_init_failure) {
        case OBI_INIT_FAILURE_FAIL:
            fail_service(sv, s, "init step failed");
            return;
        case OBI_INIT_FAILURE_RESTART:
            say(sv, 'R', "%s: init step %s failed; trying the steps again", s->svc->name, step->id);
            s->init_index = 0;
            return;
        case OBI_INIT_FAILURE_BACKOFF:
            s->init_index = 0;
            s->init_next_ms = now + (int64_t)obi_backoff_delay_ms(0, s->init_failures);
            say(sv, 'R', "%s: init step %s failed; again in %lld ms", s->svc->name, step->id,
                (long long)(s->init_next_ms - now));
            return;
        }
    }
    if (s->init_check.pid == 0 && now >= s->init_next_ms && step->action == OBI_INIT_RUN) {
        pid_t child = spawn_init_run(sv, s->svc, step);
        /* the runtime's own timeout ends the container; the deadline is a backstop */
        if (child > 0)
            s->init_check = (check){child, now + (int64_t)step->timeout_ms + 30000};
        else
            s->init_next_ms = now + INIT_RETRY_MS;
        return;
    }
    if (s->init_check.pid == 0 && now >= s->init_next_ms) {
        obi_health_kind kind = step->action == OBI_INIT_WAIT_TCP ? OBI_HEALTH_TCP : OBI_HEALTH_HTTP;
        pid_t child = spawn_check(sv, 0, kind, step->host, step->port, step->url,
                                  step->expect_status, NULL, NULL);
        int64_t left = (int64_t)step->timeout_ms - (now - s->init_step_since_ms);
        if (child > 0)
            s->init_check = (check){child, now + (left < 5000 ? (left > 0 ? left : 1) : 5000)};
        else
            s->init_next_ms = now + INIT_RETRY_MS;
    }
}

static void service_step(supervisor *sv, service *s, int64_t now)
{
    if (s->state == SVC_WAITING) {
        bool ready = true, timed_out = false;
        const obi_dependency *late = NULL;
        const replica *failed = NULL;
        for (size_t i = 0; i < s->svc->depend_count; i++) {
            const obi_dependency *dep = &s->svc->depends[i];
            service *d = find_service(sv, dep->service);
            if (!d || condition_holds(d, dep->cond))
                continue;
            ready = false;
            failed = failed_replica(d);
            if (failed || now - s->waiting_since_ms >= (int64_t)dep->timeout_ms) {
                timed_out = true;
                late = dep;
                break;
            }
        }
        if (timed_out) {
            char why[256];
            if (failed && failed->note[0])
                snprintf(why, sizeof why, "dependency %s failed: %s", late->service, failed->note);
            else if (failed)
                snprintf(why, sizeof why, "dependency %s failed", late->service);
            else
                snprintf(why, sizeof why, "dependency %s not %s within %llu ms", late->service,
                         late->condition, (unsigned long long)late->timeout_ms);
            if (late->on_timeout == OBI_FAILURE_FAIL) {
                fail_service(sv, s, why);
                return;
            }
            if (late->on_timeout == OBI_FAILURE_WARN)
                say(sv, 'R', "%s: warning: %s; starting anyway", s->svc->name, why);
            ready = true;
        }
        if (!ready)
            return;
        s->state = SVC_INIT;
    }
    if (s->state == SVC_INIT)
        init_step(sv, s, now);
}

/* The first pass is over when no planned service waits any more. */
static bool first_pass_done(const supervisor *sv)
{
    for (size_t i = 0; i < sv->service_count; i++)
        if (sv->services[i].state == SVC_WAITING || sv->services[i].state == SVC_INIT)
            return false;
    return true;
}

/* Whether anything is left to watch, start or schedule; a supervisor with nothing leaves. */
static bool anything_to_watch(const supervisor *sv)
{
    for (size_t i = 0; i < sv->service_count; i++) {
        const service *s = &sv->services[i];
        if (s->state == SVC_WAITING || s->state == SVC_INIT)
            return true;
        for (unsigned n = 0; s->replicas && n < s->svc->replicas; n++)
            switch (s->replicas[n].state) {
            case REP_PENDING:
            case REP_RUNNING:
            case REP_EXITING:
            case REP_BACKOFF:
            case REP_SCHEDULED:
                return true;
            default:
                break;
            }
    }
    return false;
}

static void supervisor_step(supervisor *sv)
{
    int64_t now = now_ms(CLOCK_MONOTONIC);
    for (size_t i = 0; i < sv->service_count; i++) {
        service *s = &sv->services[i];
        service_step(sv, s, now);
        for (unsigned r = 0; s->replicas && r < s->svc->replicas; r++)
            replica_step(sv, s, &s->replicas[r], now);
    }
    if (sv->report_fd >= 0 && first_pass_done(sv)) {
        (void)prctl(PR_SET_PDEATHSIG, 0); /* before `up` can see the end of the pass */
        if (sv->failed)
            (void)obi_write_all(sv->report_fd, "F\n", 2);
        close(sv->report_fd);
        sv->report_fd = -1;
    }
}

/* ---- set-up: adopt what runs, plan what to start ---- */

static bool planned(const obi_replica_ref *plan, size_t count, const obi_service *svc, unsigned n)
{
    for (size_t i = 0; i < count; i++)
        if (plan[i].service == svc && plan[i].replica == n)
            return true;
    return false;
}

static int supervisor_build(supervisor *sv, const obi_replica_ref *plan, size_t count,
                            obi_error **err)
{
    cleanup_free const obi_service **order = NULL;
    int r = obi_deployment_start_order(sv->deployment, &order, err);
    if (r < 0)
        return r;
    sv->service_count = sv->deployment->service_count;
    sv->services = calloc(sv->service_count ? sv->service_count : 1, sizeof *sv->services);
    if (!sv->services)
        return obi_error_oom(err);
    int64_t now = now_ms(CLOCK_MONOTONIC);
    for (size_t i = 0; i < sv->service_count; i++) {
        service *s = &sv->services[i];
        s->svc = order[i];
        s->waiting_since_ms = now;
        if (s->svc->schedule && obi_cron_parse(s->svc->schedule, &s->cron, err) < 0)
            return obi_error_prefix(err, -EINVAL, "services.%s.schedule", s->svc->name);
        s->replicas = calloc(s->svc->replicas ? s->svc->replicas : 1, sizeof *s->replicas);
        if (!s->replicas)
            return obi_error_oom(err);
        bool any_pending = false;
        for (unsigned n = 1; n <= s->svc->replicas; n++) {
            replica *rep = &s->replicas[n - 1];
            rep->svc = s->svc;
            rep->n = n;
            rep->pidfd = -1;
            if ((r = obi_replica_paths_init(&rep->paths, obi_lc_data_dir(sv->lc),
                                            sv->deployment->name, s->svc->name, n, err)) < 0)
                return r;
            obi_replica_state state;
            int pid = 0;
            cleanup_error obi_error *state_err = NULL;
            if (obi_lc_replica_state(sv->lc, &rep->paths, &state, &pid, &state_err) < 0)
                state = OBI_REPLICA_ABSENT;
            bool running = state == OBI_REPLICA_RUNNING || state == OBI_REPLICA_PAUSED;
            bool is_planned = planned(plan, count, s->svc, n);
            /* a job that ran is left alone unless `up` names it again */
            bool done_job = s->svc->rtype == OBI_RTYPE_JOB && state == OBI_REPLICA_STOPPED &&
                            !is_planned && access(rep->paths.exit_file, F_OK) == 0;
            rep->existed = state != OBI_REPLICA_ABSENT;
            if (running) {
                watch(sv, rep, pid);
                rep->next_check_ms = now; /* adopted: check at once */
                if (s->svc->rtype != OBI_RTYPE_SERVICE)
                    rep->runs = 1;
            } else if (access(rep->paths.held, F_OK) == 0) {
                set_state(rep, REP_HELD);
            } else if (done_job) {
                rep->runs = 1;
                set_state(rep, REP_DONE);
            } else if (is_planned || access(rep->paths.status, F_OK) == 0) {
                /* planned, or watched by an earlier supervisor (it writes status.json) */
                rep->state = REP_PENDING;
                any_pending = true;
            } else {
                rep->state = REP_IDLE;
            }
        }
        s->state = any_pending ? SVC_WAITING : SVC_IDLE;
    }
    return 0;
}

static void supervisor_free(supervisor *sv)
{
    for (size_t i = 0; sv->services && i < sv->service_count; i++) {
        for (unsigned n = 0; sv->services[i].replicas && n < sv->services[i].svc->replicas; n++)
            obi_replica_paths_clear(&sv->services[i].replicas[n].paths);
        free(sv->services[i].replicas);
    }
    free(sv->services);
}

/* ---- the process ---- */

static void report_to_log(const char *message, void *ctx)
{
    (void)ctx;
    fprintf(stderr, "%s\n", message);
}

static _Noreturn void supervisor_main(lifecycle *lc, const obi_replica_ref *plan, size_t count,
                                      int report_fd)
{
    obi_lc_forget_lock(lc); /* closed by obi_spawn_detached, with every other fd of up's */
    const char *data_dir = obi_lc_data_dir(lc);
    const obi_deployment *deployment = obi_lc_deployment(lc);
    supervisor sv = {.lc = lc, .deployment = deployment, .report_fd = report_fd, .epoll_fd = -1};
    cleanup_free char *log = deployment_file(data_dir, deployment->name, "supervisor.log");
    cleanup_free char *lock = deployment_file(data_dir, deployment->name, "supervisor.lock");
    cleanup_free char *pid_path = deployment_file(data_dir, deployment->name, "supervisor.pid");
    int null_fd = open("/dev/null", O_RDWR | O_CLOEXEC);
    int log_fd = log ? open(log, O_WRONLY | O_CREAT | O_APPEND | O_NOFOLLOW | O_CLOEXEC, 0600) : -1;
    if (null_fd < 0 || log_fd < 0) {
        say(&sv, 'E', "supervisor: cannot open /dev/null or %s", log ? log : "its log");
        _exit(1);
    }
    dup2(null_fd, 0);
    dup2(log_fd, 1);
    dup2(log_fd, 2);
    setvbuf(stderr, NULL, _IOLBF, 0);
    (void)prctl(PR_SET_NAME, "obi-supervisor");
    int lock_fd = lock ? open(lock, O_RDWR | O_CREAT | O_NOFOLLOW | O_CLOEXEC, 0600) : -1;
    if (lock_fd < 0 || flock(lock_fd, LOCK_EX | LOCK_NB) < 0) {
        say(&sv, 'E', "supervisor: %s is held by another supervisor", lock ? lock : "its lock");
        _exit(1);
    }
    char pid_text[32];
    snprintf(pid_text, sizeof pid_text, "%d\n", (int)getpid());
    obi_error *err = NULL;
    if (obi_write_file_atomic(pid_path, pid_text, strlen(pid_text), 0600, &err) < 0) {
        say(&sv, 'E', "supervisor: %s", err->message);
        _exit(1);
    }
    obi_lc_set_report(lc, report_to_log, NULL);
    sigset_t mask;
    sigemptyset(&mask);
    sigaddset(&mask, SIGTERM);
    sigaddset(&mask, SIGINT);
    sigaddset(&mask, SIGHUP);
    sigaddset(&mask, SIGCHLD);
    sigprocmask(SIG_BLOCK, &mask, NULL);
    signal(SIGPIPE, SIG_IGN);
    int sig_fd = signalfd(-1, &mask, SFD_CLOEXEC | SFD_NONBLOCK);
    int timer_fd = timerfd_create(CLOCK_MONOTONIC, TFD_CLOEXEC | TFD_NONBLOCK);
    sv.epoll_fd = epoll_create1(EPOLL_CLOEXEC);
    struct itimerspec tick = {{0, TICK_MS * 1000000L}, {0, TICK_MS * 1000000L}};
    if (sig_fd < 0 || timer_fd < 0 || sv.epoll_fd < 0 ||
        timerfd_settime(timer_fd, 0, &tick, NULL) < 0) {
        say(&sv, 'E', "supervisor: signalfd/timerfd/epoll: %s", strerror(errno));
        _exit(1);
    }
    struct epoll_event ev = {.events = EPOLLIN, .data.ptr = &sig_fd};
    epoll_ctl(sv.epoll_fd, EPOLL_CTL_ADD, sig_fd, &ev);
    ev.data.ptr = &timer_fd;
    epoll_ctl(sv.epoll_fd, EPOLL_CTL_ADD, timer_fd, &ev);
    if (supervisor_build(&sv, plan, count, &err) < 0) {
        say(&sv, 'E', "%s", err->message);
        _exit(1);
    }
    say(&sv, 'R', "supervisor of %s: pid %d", deployment->name, (int)getpid());
    cleanup_free char *state_dir = deployment_file(data_dir, deployment->name, ".");
    bool leaving = false;
    while (!leaving) {
        supervisor_step(&sv);
        if (sv.up_gone) {
            say(&sv, 'R', "supervisor of %s: up was interrupted or the state dir is gone",
                deployment->name);
            break;
        }
        if (sv.report_fd < 0 && !anything_to_watch(&sv)) {
            say(&sv, 'R', "supervisor of %s: nothing left to watch", deployment->name);
            break;
        }
        if (!state_dir || access(state_dir, F_OK) < 0) {
            say(&sv, 'R', "supervisor of %s: its state dir is gone", deployment->name);
            break;
        }
        struct epoll_event events[16];
        int n = epoll_wait(sv.epoll_fd, events, 16, -1);
        for (int i = 0; i < n; i++) {
            void *what = events[i].data.ptr;
            if (what == &timer_fd) {
                uint64_t expirations;
                (void)!read(timer_fd, &expirations, sizeof expirations);
            } else if (what == &sig_fd) {
                struct signalfd_siginfo info;
                while (read(sig_fd, &info, sizeof info) == (ssize_t)sizeof info)
                    if (info.ssi_signo == SIGTERM || info.ssi_signo == SIGINT)
                        leaving = true;
            } else {
                replica *rep = what;
                unwatch(&sv, rep);
                rep->exited_ms = now_ms(CLOCK_MONOTONIC);
                rep->state = REP_EXITING;
            }
        }
    }
    if (leaving)
        say(&sv, 'R', "supervisor of %s: leaving; the containers keep running", deployment->name);
    unlink(pid_path);
    supervisor_free(&sv);
    _exit(0);
}

typedef struct supervisor_start {
    lifecycle *lc;
    const obi_replica_ref *plan;
    size_t count;
} supervisor_start;

static void supervisor_start_main(void *ctx, int report_fd)
{
    supervisor_start *start = ctx;
    supervisor_main(start->lc, start->plan, start->count, report_fd);
}

int obi_supervisor_spawn(lifecycle *lc, const obi_replica_ref *plan, size_t count, obi_error **err)
{
    /* killed with `up` while its first pass runs (as replicas were when `up` started them
     * itself); it outlives `up` once the pass is reported */
    obi_detached_options opts = {.die_with_caller = true};
    supervisor_start start = {lc, plan, count};
    int fd = -1;
    pid_t child = 0;
    int r = obi_spawn_detached(&opts, supervisor_start_main, &start, &fd, &child, err);
    if (r < 0)
        return r;
    /* relay the first pass line by line; 'E' lines are errors, the first one returned */
    cleanup_file FILE *in = fdopen(fd, "r");
    if (!in) {
        int saved = errno;
        close(fd);
        return obi_error_set_errno(err, saved, "fdopen");
    }
    cleanup_free char *line = NULL;
    cleanup_free char *first_error = NULL;
    size_t cap = 0;
    ssize_t len;
    bool failed = false, said_anything = false;
    while ((len = getline(&line, &cap, in)) > 0) {
        said_anything = true;
        if (line[len - 1] == '\n')
            line[len - 1] = 0;
        if (line[0] == 'F') {
            failed = true;
        } else if (line[0] == 'E') {
            failed = true;
            if (first_error) {
                /* the first error is up's; the ones it caused (dependents) are shown too */
                cleanup_free char *shown = NULL;
                if (asprintf(&shown, "error: %s", line + 1) < 0)
                    return obi_error_oom(err);
                obi_lc_report(lc, shown);
            } else if (!(first_error = strdup(line + 1))) {
                return obi_error_oom(err);
            }
        } else {
            obi_lc_report(lc, line + 1);
        }
    }
    (void)waitpid(child, NULL, WNOHANG); /* reaped now if it already left, else by init later */
    if (!said_anything)
        return obi_error_set(err, -EIO, "the supervisor exited without a word");
    if (failed)
        return obi_error_set(err, -EIO, "%s", first_error ? first_error : "a start failed");
    return 0;
}
