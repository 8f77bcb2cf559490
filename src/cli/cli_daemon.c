/*
 * ocibuild daemon: serves BuildService, {Blob,Directory}Service and PathInfoService under the
 * tvix.* and snix.* package names over gRPC (rpc.md) on every --listen address and every socket
 * systemd passed (LISTEN_FDS), from the services named by --build-service, --blob-service,
 * --directory-service (--store sets both stores) and the path infos of --path-info. Who may connect
 * (TLS, client certificates, socket mode and group) and the limits that keep clients from stalling
 * or exhausting it are docs/security.md "The daemon". Logs one line per call on stderr.
 * SIGTERM/SIGINT: stop accepting, let running calls (builds) finish for
 * --grace seconds, cancel what is left (builds are killed), exit 0; a watchdog ends the process
 * GRACE + 9 s after the signal whatever still runs.
 */
#include <errno.h>
#include <getopt.h>
#include <grp.h>
#include <pthread.h>
#include <pwd.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "cli.h"
#include "ocibuild/build_service.h"
#include "ocibuild/oci_build.h"
#include "ocibuild/cleanup.h"
#include "ocibuild/deployment.h"
#include "ocibuild/fs.h"
#include "ocibuild/nix_path_info.h"
#include "ocibuild/number.h"
#include "ocibuild/rpc.h"
#include "ocibuild/service_addrs.h"
#include "ocibuild/store.h"

#define MAX_LISTEN 16
#define MAX_TRUSTED_USERS 64
#define DEFAULT_GRACE_SECONDS 30
/* The server gives handlers a few seconds after cancelling them; the watchdog comes after. */
#define WATCHDOG_EXTRA_SECONDS 9
/* sd_listen_fds(3): passed sockets start at fd 3. */
#define LISTEN_FDS_START 3

static const char USAGE[] =
    "usage: ocibuild daemon [--listen ADDR...] [--build-service URL]\n"
    "                       [--blob-service URL] [--directory-service URL] [--store URL]\n"
    "                       [--log-level error|warn|info|debug] [--grace SECONDS]\n"
    "                       [--tls-cert PEM --tls-key PEM [--tls-client-ca PEM]]\n"
    "                       [--insecure-tcp] [--socket-group NAME]\n"
    "                       [--idle-timeout SECONDS] [--max-message-bytes SIZE]\n"
    "                       [--max-inflight-bytes SIZE] [--path-info URL]\n"
    "                       [--trusted-user NAME|UID|'*'...] [--snix-build-events]\n"
    "  ADDR: unix:PATH, unix:///ABS/PATH or HOST:PORT; sockets passed by systemd (LISTEN_FDS)\n"
    "        are served too; with neither, unix:/run/ocibuild/daemon.sock as root, else\n"
    "        unix:$XDG_RUNTIME_DIR/ocibuild/daemon.sock\n"
    "  PathInfo Put is for trusted clients only: unix-socket peers running as root, as the\n"
    "  daemon's user or as a --trusted-user ('*': every client), and mutual-TLS clients\n"
    "  --snix-build-events: snix.build.v1 DoBuild streams BuildEvents unless the client sends\n"
    "  ocibuild-build-events: 0 (for snix's build-streaming clients); else only when asked\n"
    "  TCP without mutual TLS listens on loopback addresses only, unless --insecure-tcp\n"
    "  unix sockets: mode 0600, or 0660 with group NAME (--socket-group)\n"
    "  limits (defaults): --idle-timeout 30, --max-message-bytes 16Mi, --max-inflight-bytes "
    "512Mi\n"
    "  defaults: the local store ($OCIBUILD_STORE or <data dir>/store), the local OCI\n"
    "            builder with its bundles under <data dir>/bundles, and the path infos\n"
    "            (what Nix store paths the store holds) in <data dir>/nix-path-info\n";

static const char *const LEVEL_NAMES[] = {"error", "warn", "info", "debug"};

static void log_to_stderr(void *ctx, obi_log_level level, const char *line)
{
    (void)ctx;
    struct timespec now;
    clock_gettime(CLOCK_REALTIME, &now);
    struct tm tm;
    gmtime_r(&now.tv_sec, &tm);
    char stamp[32];
    strftime(stamp, sizeof stamp, "%Y-%m-%dT%H:%M:%S", &tm);
    /* One fprintf per line: stdio locks the stream, so lines from workers do not interleave. */
    fprintf(stderr, "%s.%03ldZ %s %s\n", stamp, now.tv_nsec / 1000000L, LEVEL_NAMES[level], line);
}

static bool is_unix_address(const char *address)
{
    /* address is a --listen optarg: never NULL (required_argument), which the analyzer cannot
     * know from getopt. */
    return !strncmp(address, "unix:", 5); // NOLINT(clang-analyzer-core.NonNullParamChecker)
}

/* The sockets systemd passed us (sd_listen_fds(3)): *n of them from fd 3, or 0. The variables
 * are removed so that children do not take them for theirs. */
static int systemd_listen_fds(unsigned *n, obi_error **err)
{
    *n = 0;
    const char *pid_text = getenv("LISTEN_PID");
    const char *fds_text = getenv("LISTEN_FDS");
    unsigned long long pid = 0, fds = 0;
    bool ours = pid_text && fds_text && obi_parse_decimal(pid_text, 1u << 30, &pid) &&
                pid == (unsigned long long)getpid();
    if (ours && !obi_parse_decimal(fds_text, MAX_LISTEN, &fds))
        return obi_error_set(err, -EINVAL, "LISTEN_FDS=%s: expected 0..%d sockets", fds_text,
                             MAX_LISTEN);
    unsetenv("LISTEN_PID");
    unsetenv("LISTEN_FDS");
    unsetenv("LISTEN_FDNAMES");
    if (ours)
        *n = (unsigned)fds;
    return 0;
}

static int parse_size(const char *option, const char *text, size_t *out)
{
    uint64_t value = 0;
    cleanup_error obi_error *err = NULL;
    if (obi_parse_memory(text, &value, &err) < 0 || value == 0 || value > SIZE_MAX)
        return cli_failf("daemon: %s %s: expected a size in bytes (or with Ki, Mi, Gi)%s%s", option,
                         text, err ? ": " : "", err ? err->message : "");
    *out = (size_t)value;
    return 0;
}

static unsigned watchdog_seconds;

/* Started at the stop signal: whatever hangs, the process ends in time. */
static void *watchdog_main(void *arg)
{
    (void)arg;
    struct timespec t = {.tv_sec = watchdog_seconds};
    while (nanosleep(&t, &t) < 0 && errno == EINTR)
        ;
    log_to_stderr(NULL, OBI_LOG_ERROR, "shutdown watchdog: still running, exiting now");
    fflush(stderr);
    _exit(1);
    return NULL;
}

static char *default_build_service_url(void)
{
    cleanup_free char *data = obi_default_data_dir();
    if (!data)
        return NULL;
    cleanup_free char *bundles = obi_path_join(data, "bundles");
    if (!bundles)
        return NULL;
    char *url = NULL;
    if (asprintf(&url, "oci://%s?timeout=%u", bundles, OBI_DAEMON_DEFAULT_BUILD_TIMEOUT) < 0)
        return NULL;
    return url;
}

/* Adopts systemd's sockets, then listens on every --listen address, logging each. */
static int listen_everywhere(const obi_rpc_module *rpc, obi_rpc_server *server,
                             const char *const *listen, size_t n_listen, unsigned n_activated,
                             const obi_rpc_server_options *options, obi_error **err)
{
    char line[600];
    for (unsigned i = 0; i < n_activated; i++) {
        int fd = LISTEN_FDS_START + (int)i;
        if (rpc->server_listen_fd(server, fd, err) < 0)
            return -1;
        snprintf(line, sizeof line, "listening on fd %d (socket activation)", fd);
        if (options->log_level >= OBI_LOG_INFO)
            log_to_stderr(NULL, OBI_LOG_INFO, line);
    }
    for (size_t i = 0; i < n_listen; i++) {
        int port = 0;
        if (rpc->server_listen(server, listen[i], &port, err) < 0)
            return -1;
        if (is_unix_address(listen[i]))
            snprintf(line, sizeof line, "listening on %s", listen[i]);
        else
            snprintf(line, sizeof line, "listening on %s (port %d%s)", listen[i], port,
                     options->tls_cert_file ? ", TLS" : "");
        if (options->log_level >= OBI_LOG_INFO)
            log_to_stderr(NULL, OBI_LOG_INFO, line);
    }
    return 0;
}

/* Waits for SIGTERM or SIGINT, then shuts the server down under the watchdog. Frees it, or
 * exits if a handler ignores the cancellation. */
static void serve_until_stopped(const obi_rpc_module *rpc, obi_rpc_server *server,
                                const sigset_t *stop_signals, unsigned grace_seconds,
                                obi_log_level level)
{
    int signal_number = 0;
    sigwait(stop_signals, &signal_number);
    if (level >= OBI_LOG_INFO) {
        char line[128];
        snprintf(line, sizeof line, "%s: shutting down (grace %us)", strsignal(signal_number),
                 grace_seconds);
        log_to_stderr(NULL, OBI_LOG_INFO, line);
    }
    watchdog_seconds = grace_seconds + WATCHDOG_EXTRA_SECONDS;
    pthread_t watchdog;
    if (pthread_create(&watchdog, NULL, watchdog_main, NULL) == 0)
        pthread_detach(watchdog);
    cleanup_error obi_error *err = NULL;
    if (rpc->server_shutdown(server, grace_seconds * 1000, &err) < 0) {
        /* A handler ignores the cancellation: exit anyway, the kernel reclaims the rest and
         * the build children die with us (PDEATHSIG). */
        log_to_stderr(NULL, OBI_LOG_WARN, err && err->message ? err->message : "shutdown");
        fflush(stderr);
        _exit(0);
    }
}

/* Resolves --socket-group NAME (or a numeric gid). */
static int socket_group(const char *name, gid_t *out)
{
    unsigned long long gid = 0;
    if (obi_parse_decimal(name, (gid_t)-2, &gid)) {
        *out = (gid_t)gid;
        return 0;
    }
    struct group grp, *found = NULL;
    char buffer[16384];
    int e = getgrnam_r(name, &grp, buffer, sizeof buffer, &found);
    if (!found)
        return cli_failf("daemon: --socket-group %s: %s", name, e ? strerror(e) : "no such group");
    *out = found->gr_gid;
    return 0;
}

/* Before each build: the automatic gc of the daemon's store ($OCIBUILD_MIN_FREE), one at a
 * time (builds start on several workers), keeping the build's inputs: a client uploads them
 * unpinned (docs/store.md), so they stay pinned (*hold) until the build is over. */
static int auto_gc_before_build(void *ctx, const obi_build_request *req, void **hold,
                                obi_error **err)
{
    static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
    obi_store_pin *pin = NULL;
    pthread_mutex_lock(&lock);
    int r = cli_store_auto_gc(ctx, req->inputs, req->n_inputs, &pin, err);
    pthread_mutex_unlock(&lock);
    *hold = pin;
    return r;
}

static void auto_gc_after_build(void *ctx, void *hold)
{
    (void)ctx;
    obi_store_pin_free(hold);
}

/* Adds --trusted-user NAME or UID to uids; '*' trusts every client that may connect. */
static int trusted_user(const char *name, obi_rpc_server_options *options, uid_t *uids)
{
    if (!strcmp(name, "*")) {
        options->trust_everyone = true;
        return 0;
    }
    if (options->n_trusted_uids == MAX_TRUSTED_USERS)
        return cli_failf("daemon: at most %d --trusted-user", MAX_TRUSTED_USERS);
    unsigned long long uid = 0;
    if (!obi_parse_decimal(name, (uid_t)-2, &uid)) {
        struct passwd pwd, *found = NULL;
        char buffer[16384];
        int e = getpwnam_r(name, &pwd, buffer, sizeof buffer, &found);
        if (!found)
            return cli_failf("daemon: --trusted-user %s: %s", name,
                             e ? strerror(e) : "no such user");
        uid = found->pw_uid;
    }
    uids[options->n_trusted_uids++] = (uid_t)uid;
    options->trusted_uids = uids;
    return 0;
}

/* The default --listen (obi_default_daemon_socket), its directory made: 0755 as root (the
 * socket's own mode decides who gets in), 0700 for a user. */
static int default_listen(char **address, obi_error **err)
{
    cleanup_free char *path = NULL;
    int r = obi_default_daemon_socket(&path, err);
    if (r < 0)
        return r;
    cleanup_free char *dir = strndup(path, (size_t)(strrchr(path, '/') - path));
    if (!dir)
        return obi_error_oom(err);
    if ((r = obi_mkdir_p(dir, geteuid() == 0 ? 0755 : 0700, err)) < 0)
        return r;
    if (asprintf(address, "unix:%s", path) < 0)
        return obi_error_oom(err);
    return 0;
}

int cli_daemon(int argc, char **argv)
{
    enum {
        OPT_TLS_CERT = 256,
        OPT_TLS_KEY,
        OPT_TLS_CLIENT_CA,
        OPT_INSECURE_TCP,
        OPT_SOCKET_GROUP,
        OPT_IDLE_TIMEOUT,
        OPT_MAX_MESSAGE,
        OPT_MAX_INFLIGHT,
        OPT_PATH_INFO,
        OPT_TRUSTED_USER,
        OPT_SNIX_BUILD_EVENTS,
    };
    static const struct option options[] = {
        {"listen", required_argument, NULL, 'l'},
        {"build-service", required_argument, NULL, 'b'},
        {"blob-service", required_argument, NULL, 'B'},
        {"directory-service", required_argument, NULL, 'D'},
        {"store", required_argument, NULL, 's'},
        {"log-level", required_argument, NULL, 'L'},
        {"grace", required_argument, NULL, 'g'},
        {"tls-cert", required_argument, NULL, OPT_TLS_CERT},
        {"tls-key", required_argument, NULL, OPT_TLS_KEY},
        {"tls-client-ca", required_argument, NULL, OPT_TLS_CLIENT_CA},
        {"insecure-tcp", no_argument, NULL, OPT_INSECURE_TCP},
        {"socket-group", required_argument, NULL, OPT_SOCKET_GROUP},
        {"idle-timeout", required_argument, NULL, OPT_IDLE_TIMEOUT},
        {"max-message-bytes", required_argument, NULL, OPT_MAX_MESSAGE},
        {"max-inflight-bytes", required_argument, NULL, OPT_MAX_INFLIGHT},
        {"path-info", required_argument, NULL, OPT_PATH_INFO},
        {"trusted-user", required_argument, NULL, OPT_TRUSTED_USER},
        {"snix-build-events", no_argument, NULL, OPT_SNIX_BUILD_EVENTS},
        {"help", no_argument, NULL, 'h'},
        {0},
    };
    const char *listen[MAX_LISTEN];
    size_t n_listen = 0;
    uid_t trusted_uids[MAX_TRUSTED_USERS];
    cleanup_free char *default_address = NULL;
    const char *build_url = NULL, *blob_url = NULL, *directory_url = NULL, *path_info_url = NULL;
    obi_log_level level = OBI_LOG_INFO;
    unsigned grace_seconds = DEFAULT_GRACE_SECONDS;
    obi_rpc_server_options server_options = {.log = log_to_stderr};
    cleanup_error obi_error *err = NULL;
    const char *level_text = NULL;
    unsigned long long number = 0;
    int c;
    optind = 1;
    while ((c = getopt_long(argc, argv, "h", options, NULL)) != -1) {
        switch (c) {
        case 'l':
            if (n_listen == MAX_LISTEN)
                return cli_failf("daemon: at most %d --listen addresses", MAX_LISTEN);
            listen[n_listen++] = optarg;
            break;
        case 'b':
            build_url = optarg;
            break;
        case 'B':
            blob_url = optarg;
            break;
        case 'D':
            directory_url = optarg;
            break;
        case 's':
            blob_url = directory_url = optarg;
            break;
        case 'L':
            level_text = optarg;
            break;
        case 'g':
            if (!obi_parse_decimal(optarg, 86400, &number))
                return cli_failf("daemon: --grace %s: expected seconds (0..86400)", optarg);
            grace_seconds = (unsigned)number;
            break;
        case OPT_TLS_CERT:
            server_options.tls_cert_file = optarg;
            break;
        case OPT_TLS_KEY:
            server_options.tls_key_file = optarg;
            break;
        case OPT_TLS_CLIENT_CA:
            server_options.tls_client_ca_file = optarg;
            break;
        case OPT_INSECURE_TCP:
            server_options.insecure_tcp = true;
            break;
        case OPT_SOCKET_GROUP:
            if (socket_group(optarg, &server_options.socket_gid))
                return 1;
            server_options.use_socket_group = true;
            break;
        case OPT_IDLE_TIMEOUT:
            if (!obi_parse_decimal(optarg, 86400, &number) || number == 0)
                return cli_failf("daemon: --idle-timeout %s: expected seconds (1..86400)", optarg);
            server_options.idle_timeout_ms = (unsigned)number * 1000;
            break;
        case OPT_MAX_MESSAGE:
            if (parse_size("--max-message-bytes", optarg, &server_options.max_message_bytes))
                return 1;
            break;
        case OPT_MAX_INFLIGHT:
            if (parse_size("--max-inflight-bytes", optarg, &server_options.max_inflight_bytes))
                return 1;
            break;
        case OPT_PATH_INFO:
            path_info_url = optarg;
            break;
        case OPT_TRUSTED_USER:
            if (trusted_user(optarg, &server_options, trusted_uids))
                return 1;
            break;
        case OPT_SNIX_BUILD_EVENTS:
            server_options.snix_build_events = true;
            break;
        case 'h':
            fputs(USAGE, stdout);
            return 0;
        default:
            fputs(USAGE, stderr);
            return CLI_EXIT_USAGE;
        }
    }
    if (optind != argc)
        return cli_failf("daemon: unexpected argument '%s'\n%s", argv[optind], USAGE);
    unsigned n_activated = 0;
    if (systemd_listen_fds(&n_activated, &err) < 0)
        return cli_fail(steal_pointer(&err));
    if (n_listen == 0 && n_activated == 0) {
        if (default_listen(&default_address, &err) < 0)
            return cli_fail(steal_pointer(&err));
        listen[n_listen++] = default_address;
    }
    const obi_rpc_module *rpc = NULL;
    if (cli_rpc_load(&rpc, &err) < 0)
        return cli_fail(steal_pointer(&err));
    if (level_text && obi_log_level_parse(level_text, &level, &err) < 0)
        return cli_fail(steal_pointer(&err));

    /* Signals are taken synchronously by this thread: block them before any thread starts
     * (gRPC starts its own as soon as a gRPC store or builder is opened). */
    sigset_t stop_signals;
    sigemptyset(&stop_signals);
    sigaddset(&stop_signals, SIGTERM);
    sigaddset(&stop_signals, SIGINT);
    pthread_sigmask(SIG_BLOCK, &stop_signals, NULL);

    cleanup_store obi_store *store = NULL;
    if (obi_store_open(blob_url, directory_url, &store, &err) < 0)
        return cli_fail(steal_pointer(&err));
    cleanup_free char *default_build = build_url ? NULL : default_build_service_url();
    if (!build_url && !default_build)
        return cli_failf("daemon: cannot find the data directory for the default build service");
    cleanup_build_service obi_build_service *builds = NULL;
    if (obi_build_service_open(build_url ? build_url : default_build, store, &builds, &err) < 0)
        return cli_fail(steal_pointer(&err));

    cleanup_nix_path_info_store obi_nix_path_info_store *path_infos = NULL;
    if (obi_nix_path_info_store_open_url(path_info_url, &path_infos, &err) < 0)
        return cli_fail(steal_pointer(&err));

    server_options.blobs = store->blobs;
    server_options.path_infos = path_infos;
    server_options.directories = store->directories;
    server_options.builds = builds;
    server_options.before_build = auto_gc_before_build;
    server_options.after_build = auto_gc_after_build;
    server_options.before_build_ctx = store;
    server_options.log_level = level;
    obi_rpc_server *server = NULL;
    if (rpc->server_new(&server_options, &server, &err) < 0)
        return cli_fail(steal_pointer(&err));
    if (listen_everywhere(rpc, server, listen, n_listen, n_activated, &server_options, &err) < 0 ||
        rpc->server_start(server, &err) < 0) {
        rpc->server_free(server);
        return cli_fail(steal_pointer(&err));
    }
    serve_until_stopped(rpc, server, &stop_signals, grace_seconds, level);
    rpc->server_free(server);
    if (level >= OBI_LOG_INFO)
        log_to_stderr(NULL, OBI_LOG_INFO, "stopped");
    return 0;
}
