/*
 * Builder options and set-up shared by `ocibuild build` and `ocibuild nix-build` (see
 * cli_builder.h).
 */
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cli.h"
#include "cli_builder.h"
#include "ocibuild/cleanup.h"
#include "ocibuild/fs.h"
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
};
_Static_assert((int)OPT_SCRATCH_LIMIT == (int)CLI_BUILDER_OPT_LAST,
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
};
const size_t cli_builder_options_count = sizeof cli_builder_options / sizeof cli_builder_options[0];

const char cli_builder_usage[] =
    "  --store URL                 castore for inputs and outputs (default: the local store)\n"
    "  --blob-service URL          blob service only\n"
    "  --directory-service URL     directory service only\n"
    "  --build-service URL         build elsewhere (grpc+unix://, grpc+http://, oci:///root)\n"
    "  --runtime NAME|PATH         OCI runtime (default runc)\n"
    "  --rootless                  run as the invoking user with its subuid/subgid ranges\n"
    "  --timeout S                 kill the build after S seconds\n"
    "  --keep-bundle               keep the bundle directory for debugging\n"
    "  --sandbox-shell PATH        static shell bound at /bin/sh when asked (default busybox)\n"
    "  --max-builds N              builds at once in this process (default: CPUs)\n"
    "  --bundle-root DIR           where bundles are created (default <data dir>/bundles)\n"
    "  --max-pids N                processes a build may have at once (default 4096)\n"
    "  --memory SIZE               memory limit of a build, e.g. 2Gi (default: none)\n"
    "  --scratch-limit SIZE        bytes a build may write: its scratch dirs are a tmpfs of\n"
    "                              this size (default: none, scratch on disk)\n"
    "                              (--memory and --scratch-limit need rootful builds)\n";

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
        return 2;
    }
    *out = (unsigned)v;
    return 0;
}

/* A size option (number.h's units); prints and returns 2 when it is not one. */
static int parse_size_option(const char *text, const char *what, uint64_t *out)
{
    obi_error *err = NULL;
    if (obi_parse_memory(text, out, &err) < 0) {
        obi_error_prefix(&err, -EINVAL, "%s", what);
        cli_fail(err);
        return 2;
    }
    return 0;
}

int cli_builder_handle_option(int code, const char *arg, cli_builder_args *args)
{
    switch (code) {
    case OPT_STORE:
        args->store_url = arg;
        return 0;
    case OPT_BLOB:
        args->blob_url = arg;
        return 0;
    case OPT_DIRECTORY:
        args->directory_url = arg;
        return 0;
    case OPT_BUILD:
        args->build_url = arg;
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
    default:
        return 2;
    }
}

int cli_builder_open_store(const cli_builder_args *args, obi_store **out, obi_error **err)
{
    return obi_store_open(args->blob_url ? args->blob_url : args->store_url,
                          args->directory_url ? args->directory_url : args->store_url, out, err);
}

static int cancel_pipe[2] = {-1, -1};
static volatile sig_atomic_t cancel_signal;
static char *default_bundle_root;

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
    if (args->build_url)
        return obi_build_service_open(args->build_url, store, out, err);
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
    args->oci.on_output = stream_to_stderr;
    return obi_oci_build_service_new(&args->oci, store, out, err);
}

int cli_builder_do_build(obi_build_service *service, const obi_build_request *req, obi_build **out,
                         obi_error **err)
{
    obi_build_call options = OBI_BUILD_CALL_INIT;
    options.on_output = stream_to_stderr;
    return obi_build_service_do_build_call(service, req, &options, out, err);
}

void cli_builder_note_interruption(obi_error **err, int code)
{
    if (cancel_signal)
        obi_error_prefix(err, code, "interrupted by signal %d", (int)cancel_signal);
}
