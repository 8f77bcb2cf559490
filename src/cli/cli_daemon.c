/*
 * ocibuild daemon: serves tvix.build.v1.BuildService and tvix.castore.v1.{Blob,Directory}Service
 * over gRPC (rpc.md) on every --listen address, from the services named by --build-service,
 * --blob-service, --directory-service (--store sets both stores). Logs one line per call on
 * stderr. SIGTERM/SIGINT: stop accepting, let running calls (builds) finish for --grace
 * seconds, cancel what is left, remove the unix sockets, exit 0.
 */
#include <errno.h>
#include <getopt.h>
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
#include "ocibuild/fs.h"
#include "ocibuild/number.h"
#include "ocibuild/rpc.h"
#include "ocibuild/store.h"

#define MAX_LISTEN 16
#define DEFAULT_GRACE_SECONDS 30

static const char USAGE[] =
    "usage: ocibuild daemon --listen ADDR [--listen ADDR...] [--build-service URL]\n"
    "                       [--blob-service URL] [--directory-service URL] [--store URL]\n"
    "                       [--log-level error|warn|info|debug] [--grace SECONDS]\n"
    "  ADDR: unix:PATH, unix:///ABS/PATH or HOST:PORT\n"
    "  defaults: the local store ($OCIBUILD_STORE or <data dir>/store) and the local OCI\n"
    "            builder with its bundles under <data dir>/bundles\n";

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

/* The filesystem path of a unix listen address, or NULL for TCP. */
static const char *unix_socket_path(const char *address)
{
    /* address is a --listen optarg: never NULL (required_argument), which the analyzer cannot
     * know from getopt. */
    if (!strncmp(address, "unix://", 7)) // NOLINT(clang-analyzer-core.NonNullParamChecker)
        return address + 7;              /* unix:///abs -> /abs */
    if (!strncmp(address, "unix:", 5))
        return address + 5;
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

int cli_daemon(int argc, char **argv)
{
    static const struct option options[] = {
        {"listen", required_argument, NULL, 'l'},
        {"build-service", required_argument, NULL, 'b'},
        {"blob-service", required_argument, NULL, 'B'},
        {"directory-service", required_argument, NULL, 'D'},
        {"store", required_argument, NULL, 's'},
        {"log-level", required_argument, NULL, 'L'},
        {"grace", required_argument, NULL, 'g'},
        {"help", no_argument, NULL, 'h'},
        {0},
    };
    const char *listen[MAX_LISTEN];
    size_t n_listen = 0;
    const char *build_url = NULL, *blob_url = NULL, *directory_url = NULL;
    obi_log_level level = OBI_LOG_INFO;
    unsigned grace_seconds = DEFAULT_GRACE_SECONDS;
    cleanup_error obi_error *err = NULL;
    const char *level_text = NULL;
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
        case 'g': {
            unsigned long long v = 0;
            if (!obi_parse_decimal(optarg, 86400, &v))
                return cli_failf("daemon: --grace %s: expected seconds (0..86400)", optarg);
            grace_seconds = (unsigned)v;
            break;
        }
        case 'h':
            fputs(USAGE, stdout);
            return 0;
        default:
            fputs(USAGE, stderr);
            return 2;
        }
    }
    if (optind != argc)
        return cli_failf("daemon: unexpected argument '%s'\n%s", argv[optind], USAGE);
    if (n_listen == 0)
        return cli_failf("daemon: at least one --listen ADDR is required\n%s", USAGE);
    const obi_rpc_module *rpc = NULL;
    if (cli_rpc_load(&rpc, &err) < 0)
        return cli_fail(steal_pointer(&err));
    if (level_text && rpc->log_level_parse(level_text, &level, &err) < 0)
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

    obi_rpc_server_options server_options = {
        .blobs = store->blobs,
        .directories = store->directories,
        .builds = builds,
        .log_level = level,
        .log = log_to_stderr,
    };
    obi_rpc_server *server = NULL;
    if (rpc->server_new(&server_options, &server, &err) < 0)
        return cli_fail(steal_pointer(&err));
    for (size_t i = 0; i < n_listen; i++) {
        int port = 0;
        if (rpc->server_listen(server, listen[i], &port, &err) < 0) {
            rpc->server_free(server);
            return cli_fail(steal_pointer(&err));
        }
        if (level >= OBI_LOG_INFO) {
            char line[512];
            if (unix_socket_path(listen[i]))
                snprintf(line, sizeof line, "listening on %s", listen[i]);
            else
                snprintf(line, sizeof line, "listening on %s (port %d)", listen[i], port);
            log_to_stderr(NULL, OBI_LOG_INFO, line);
        }
    }
    if (rpc->server_start(server, &err) < 0) {
        rpc->server_free(server);
        return cli_fail(steal_pointer(&err));
    }

    int signal_number = 0;
    sigwait(&stop_signals, &signal_number);
    if (level >= OBI_LOG_INFO) {
        char line[128];
        snprintf(line, sizeof line, "%s: shutting down (grace %us)", strsignal(signal_number),
                 grace_seconds);
        log_to_stderr(NULL, OBI_LOG_INFO, line);
    }
    int r = rpc->server_shutdown(server, grace_seconds * 1000, &err);
    for (size_t i = 0; i < n_listen; i++) {
        const char *path = unix_socket_path(listen[i]);
        struct stat st;
        if (path && lstat(path, &st) == 0 && S_ISSOCK(st.st_mode))
            unlink(path);
    }
    if (r < 0) {
        /* A handler ignores the cancellation: exit anyway, the kernel reclaims the rest and
         * the build children die with us (PDEATHSIG). */
        log_to_stderr(NULL, OBI_LOG_WARN, err && err->message ? err->message : "shutdown");
        fflush(stderr);
        _exit(0);
    }
    rpc->server_free(server);
    if (level >= OBI_LOG_INFO)
        log_to_stderr(NULL, OBI_LOG_INFO, "stopped");
    return 0;
}
