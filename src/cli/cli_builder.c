/*
 * Builder options and set-up shared by `ocibuild build` and `ocibuild nix-build` (see
 * cli_builder.h).
 */
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cli.h"
#include "cli_builder.h"
#include "cli_progress.h"
#include "ocibuild/cleanup.h"
#include "ocibuild/fs.h"
#include "ocibuild/nix_output.h"
#include "ocibuild/number.h"

enum {
    OPT_STORE = CLI_BUILDER_OPT_FIRST,
    OPT_BLOB,
    OPT_DIRECTORY,
    OPT_BUILD,
    OPT_RUNTIME,
    OPT_ROOTLESS,
    OPT_TIMEOUT,
    OPT_KEEP,
    OPT_SHELL,
    OPT_MAX,
    OPT_BUNDLE_ROOT,
    OPT_MAX_PIDS,
    OPT_MEMORY,
    OPT_SCRATCH_LIMIT,
    OPT_ROOT,
    OPT_INPUTS,
    OPT_ROOTFUL,
    OPT_QUIET,
    OPT_VERBOSE,
    OPT_LOG_LEVEL,
};
_Static_assert((int)OPT_LOG_LEVEL == (int)CLI_BUILDER_OPT_LAST,
               "keep CLI_BUILDER_OPT_LAST in sync");

const struct option cli_builder_options[] = {
    {"store", required_argument, NULL, OPT_STORE},
    {"blob-service", required_argument, NULL, OPT_BLOB},
    {"directory-service", required_argument, NULL, OPT_DIRECTORY},
    {"build-service", required_argument, NULL, OPT_BUILD},
    {"runtime", required_argument, NULL, OPT_RUNTIME},
    {"rootless", no_argument, NULL, OPT_ROOTLESS},
    {"timeout", required_argument, NULL, OPT_TIMEOUT},
    {"keep-bundle", no_argument, NULL, OPT_KEEP},
    {"sandbox-shell", required_argument, NULL, OPT_SHELL},
    {"max-builds", required_argument, NULL, OPT_MAX},
    {"bundle-root", required_argument, NULL, OPT_BUNDLE_ROOT},
    {"max-pids", required_argument, NULL, OPT_MAX_PIDS},
    {"memory", required_argument, NULL, OPT_MEMORY},
    {"scratch-limit", required_argument, NULL, OPT_SCRATCH_LIMIT},
    {"root", required_argument, NULL, OPT_ROOT},
    {"inputs", required_argument, NULL, OPT_INPUTS},
    {"rootful", no_argument, NULL, OPT_ROOTFUL},
    {"quiet", no_argument, NULL, OPT_QUIET},
    {"verbose", no_argument, NULL, OPT_VERBOSE},
    {"log-level", required_argument, NULL, OPT_LOG_LEVEL},
};
const size_t cli_builder_options_count = sizeof cli_builder_options / sizeof cli_builder_options[0];

const char cli_builder_usage[] =
    "  --store URL                 castore for inputs and outputs (default: the build\n"
    "                              service's when that is a daemon, else the local store)\n"
    "  --blob-service URL          blob service only ($BLOB_SERVICE_ADDR)\n"
    "  --directory-service URL     directory service only ($DIRECTORY_SERVICE_ADDR)\n"
    "  --build-service URL         build elsewhere (grpc+unix://, grpc+http://, oci:///root;\n"
    "                              $BUILD_SERVICE_ADDR, else $OCIBUILD_DAEMON for both)\n"
    "  --runtime NAME|PATH         OCI runtime (default: crun when a probe finds that it\n"
    "                              runs builds here, else runc)\n"
    "  --rootless                  run as the invoking user with its subuid/subgid ranges\n"
    "                              (the default when not run as root)\n"
    "  --rootful                   not rootless, even when not run as root\n"
    "  --timeout S                 kill the build after S seconds\n"
    "  --keep-bundle               keep the bundle directory for debugging\n"
    "  --sandbox-shell PATH        static shell bound at /bin/sh when asked (default busybox)\n"
    "  --max-builds N              builds at once in this process (default: CPUs)\n"
    "  --bundle-root DIR           where bundles are created (default <data dir>/bundles)\n"
    "  --max-pids N                processes a build may have at once (default 4096)\n"
    "  --memory SIZE               memory limit of a build, e.g. 2Gi (default: none)\n"
    "  --scratch-limit SIZE        bytes a build may write: its scratch dirs are a tmpfs of\n"
    "                              this size (default: none, scratch on disk)\n"
    "                              (--memory and --scratch-limit need rootful builds)\n"
    "  --root NAME|PATH            keep the outputs from `store gc`: as the root NAME, or\n"
    "                              (a path: /..., ./..., ../...) while the file PATH exists\n"
    "  -q, --quiet                 errors only: the build's log is not streamed\n"
    "  -v, --verbose               also where the services are and how long it took\n"
    "  --log-level LEVEL           error, warn, info (the default: the build's stdout and\n"
    "                              stderr, in order, on stderr) or debug (-v)\n";

void cli_builder_option_table(struct option *table, const struct option *extra, size_t n_extra)
{
    size_t n = 0;
    for (size_t i = 0; i < cli_builder_options_count; i++)
        table[n++] = cli_builder_options[i];
    for (size_t i = 0; i < n_extra; i++)
        table[n++] = extra[i];
    table[n++] = (struct option){"help", no_argument, NULL, 'h'};
    table[n] = (struct option){NULL, 0, NULL, 0};
}

int cli_parse_unsigned(const char *text, const char *what, unsigned *out)
{
    unsigned long long v = 0;
    if (!obi_parse_decimal(text, 1000000000ULL, &v)) {
        cli_failf("%s: '%s' is not a non-negative integer", what, text);
        return CLI_EXIT_USAGE;
    }
    *out = (unsigned)v;
    return 0;
}

/* A size option (number.h's units); prints and returns CLI_EXIT_USAGE when it is not one. */
static int parse_size_option(const char *text, const char *what, uint64_t *out)
{
    obi_error *err = NULL;
    if (obi_parse_memory(text, out, &err) < 0) {
        obi_error_prefix(&err, -EINVAL, "%s", what);
        cli_fail(err);
        return CLI_EXIT_USAGE;
    }
    return 0;
}

bool cli_builder_is_option(int code)
{
    return code == 'q' || code == 'v' ||
           (code >= CLI_BUILDER_OPT_FIRST && code <= CLI_BUILDER_OPT_LAST);
}

void cli_builder_debug(const cli_builder_args *args, const char *fmt, ...)
{
    if (args->log_level < OBI_LOG_DEBUG)
        return;
    va_list ap;
    va_start(ap, fmt);
    fputs("ocibuild: ", stderr);
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
    va_end(ap);
}

int cli_builder_handle_option(int code, const char *arg, cli_builder_args *args)
{
    obi_error *err = NULL;
    switch (code) {
    case 'q':
    case OPT_QUIET:
        args->log_level = OBI_LOG_ERROR;
        return 0;
    case 'v':
    case OPT_VERBOSE:
        args->log_level = OBI_LOG_DEBUG;
        return 0;
    case OPT_LOG_LEVEL:
        if (obi_log_level_parse(arg, &args->log_level, &err) < 0) {
            obi_error_prefix(&err, -EINVAL, "--log-level");
            cli_fail(err);
            return CLI_EXIT_USAGE;
        }
        return 0;
    case OPT_STORE:
        args->flags.store = arg;
        return 0;
    case OPT_BLOB:
        args->flags.blobs = arg;
        return 0;
    case OPT_DIRECTORY:
        args->flags.directories = arg;
        return 0;
    case OPT_BUILD:
        args->flags.build = arg;
        return 0;
    case OPT_ROOTFUL:
        args->rootful = true;
        return 0;
    case OPT_RUNTIME:
        args->oci.runtime = arg;
        return 0;
    case OPT_ROOTLESS:
        args->oci.rootless = true;
        return 0;
    case OPT_TIMEOUT:
        return cli_parse_unsigned(arg, "--timeout", &args->oci.timeout_seconds);
    case OPT_KEEP:
        args->oci.keep_bundle = true;
        return 0;
    case OPT_SHELL:
        args->oci.sandbox_shell = arg;
        return 0;
    case OPT_MAX:
        return cli_parse_unsigned(arg, "--max-builds", &args->oci.max_builds);
    case OPT_BUNDLE_ROOT:
        args->oci.bundle_root = arg;
        return 0;
    case OPT_MAX_PIDS:
        return cli_parse_unsigned(arg, "--max-pids", &args->oci.max_pids);
    case OPT_MEMORY:
        return parse_size_option(arg, "--memory", &args->oci.memory_bytes);
    case OPT_SCRATCH_LIMIT:
        return parse_size_option(arg, "--scratch-limit", &args->oci.scratch_limit_bytes);
    case OPT_ROOT:
        args->root = arg;
        return 0;
    case OPT_INPUTS:
        if (obi_inputs_mode_parse(arg, "--inputs", &args->oci.inputs, &err) < 0) {
            cli_fail(err);
            return CLI_EXIT_USAGE;
        }
        return 0;
    default:
        return CLI_EXIT_USAGE;
    }
}

void cli_builder_args_clear(cli_builder_args *args)
{
    obi_service_addrs_clear(&args->addrs);
}

int cli_builder_open_store(cli_builder_args *args, obi_store **out, obi_error **err)
{
    obi_service_addrs_clear(&args->addrs);
    int r = obi_service_addrs_resolve(&args->flags, &args->addrs, err);
    if (r < 0)
        return r;
    cli_builder_debug(args, "store: blobs %s, directories %s",
                      args->addrs.blobs ? args->addrs.blobs : "the local store",
                      args->addrs.directories ? args->addrs.directories : "the local store");
    cleanup_store obi_store *store = NULL;
    if ((r = obi_store_open(args->addrs.blobs, args->addrs.directories, &store, err)) < 0 ||
        (r = cli_store_auto_gc(store, NULL, 0, NULL, err)) < 0)
        return r;
    *out = steal_pointer(&store);
    return 0;
}

static int cancel_pipe[2] = {-1, -1};
static volatile sig_atomic_t cancel_signal;
static char *default_bundle_root;
static cli_progress materializing; /* the local builder's, for the life of the process */

static void on_cancel_signal(int sig)
{
    cancel_signal = sig;
    int saved = errno;
    (void)!write(cancel_pipe[1], "x", 1);
    errno = saved;
}

static void stream_to_stderr(const uint8_t *data, size_t len, void *ctx)
{
    (void)ctx;
    (void)!fwrite(data, 1, len, stderr);
    fflush(stderr);
}

static void free_default_bundle_root(void)
{
    free(default_bundle_root);
}

int cli_builder_open_service(cli_builder_args *args, obi_store *store, obi_build_service **out,
                             obi_error **err)
{
    if (args->addrs.build) {
        cli_builder_debug(args, "building on %s", args->addrs.build);
        return obi_build_service_open(args->addrs.build, store, out, err);
    }
    if (args->oci.rootless && args->rootful)
        return obi_error_set(err, -EINVAL, "--rootless and --rootful: give one");
    /* Rootful builds need root (they chown the bundle to the build's ids): anyone else builds
     * rootless, in a user namespace of their own subuid range. */
    if (!args->rootful && geteuid() != 0)
        args->oci.rootless = true;
    if (!args->oci.bundle_root) {
        cleanup_free char *data_dir = obi_default_data_dir();
        default_bundle_root = data_dir ? obi_path_join(data_dir, "bundles") : NULL;
        if (!default_bundle_root)
            return obi_error_oom(err);
        atexit(free_default_bundle_root);
        args->oci.bundle_root = default_bundle_root;
    }
    if (cancel_pipe[0] < 0 && pipe2(cancel_pipe, O_CLOEXEC | O_NONBLOCK) < 0)
        return obi_error_set_errno(err, errno, "pipe");
    struct sigaction sa = {0};
    sa.sa_handler = on_cancel_signal;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGHUP, &sa, NULL);
    args->oci.cancel_fd = cancel_pipe[0];
    args->oci.on_output = args->log_level >= OBI_LOG_INFO ? stream_to_stderr : NULL;
    if (args->materialize_progress) {
        cli_progress_init_each(&materializing, "materializing inputs",
                               args->log_level >= OBI_LOG_INFO);
        args->oci.materialize_progress = &materializing.hook;
    }
    int r = obi_oci_build_service_new(&args->oci, store, out, err);
    if (r == 0)
        cli_builder_debug(args, "building here: %s, runtime %s, bundles under %s",
                          args->oci.rootless ? "rootless" : "rootful",
                          obi_oci_build_service_runtime(*out), args->oci.bundle_root);
    return r;
}

int cli_builder_do_build(const cli_builder_args *args, obi_build_service *service,
                         const obi_build_request *req, obi_build **out, obi_error **err)
{
    obi_build_call options = OBI_BUILD_CALL_INIT;
    options.on_output = args->log_level >= OBI_LOG_INFO ? stream_to_stderr : NULL;
    return obi_build_service_do_build_call(service, req, &options, out, err);
}

int cli_builder_fail(obi_error *err, int code)
{
    if (cancel_signal) {
        obi_error_prefix(&err, code, "interrupted by %s", strsignal(cancel_signal));
        cli_fail(err);
        return CLI_EXIT_SIGNAL_BASE + cancel_signal;
    }
    cli_fail(err);
    switch (code) {
    case OBI_EBUILD_FAILED:
    case OBI_ERUNTIME_START:
        return CLI_EXIT_BUILD_FAILED;
    case -ETIMEDOUT:
        return CLI_EXIT_TIMED_OUT;
    case OBI_EHASH_MISMATCH:
        return CLI_EXIT_HASH_MISMATCH;
    default:
        return CLI_EXIT_FAILURE;
    }
}
