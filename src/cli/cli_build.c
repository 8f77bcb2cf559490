/*
 * ocibuild build [options] REQUEST.json: runs one BuildRequest on a build service (by default the
 * local OCI builder with bundles under <data dir>/bundles) and prints the Build as protobuf JSON.
 * REQUEST.json is the protobuf-JSON BuildRequest or the friendlier form (inputs as host paths,
 * env as plain strings; see README.md). SIGINT/SIGTERM cancel the build: the container, its
 * mounts and the bundle are removed before ocibuild exits.
 */
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cli.h"
#include "ocibuild/cleanup.h"
#include "ocibuild/friendly_request.h"
#include "ocibuild/fs.h"
#include "ocibuild/json_util.h"
#include "ocibuild/oci_build.h"

static int cancel_pipe[2] = {-1, -1};
static volatile sig_atomic_t cancel_signal;

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

static void usage(FILE *out)
{
    fprintf(out,
            "usage: ocibuild build [--store URL] [--blob-service URL] [--directory-service URL]\n"
            "                      [--build-service URL] [--runtime NAME|PATH] [--rootless]\n"
            "                      [--timeout S] [--keep-bundle] [--sandbox-shell PATH]\n"
            "                      [--max-builds N] [--bundle-root DIR] REQUEST.json\n");
}

static int parse_unsigned(const char *text, const char *what, unsigned *out)
{
    char *end = NULL;
    errno = 0;
    unsigned long v = strtoul(text, &end, 10);
    if (errno || !end || *end || !*text || v > 1000000000UL)
        return cli_failf("%s: '%s' is not a non-negative integer", what, text);
    *out = (unsigned)v;
    return 0;
}

int cli_build(int argc, char **argv)
{
    enum {
        OPT_STORE = 256,
        OPT_BLOB,
        OPT_DIR,
        OPT_BUILD,
        OPT_RUNTIME,
        OPT_ROOTLESS,
        OPT_TIMEOUT,
        OPT_KEEP,
        OPT_SHELL,
        OPT_MAX,
        OPT_BUNDLE_ROOT
    };
    static const struct option options[] = {
        {"store", required_argument, NULL, OPT_STORE},
        {"blob-service", required_argument, NULL, OPT_BLOB},
        {"directory-service", required_argument, NULL, OPT_DIR},
        {"build-service", required_argument, NULL, OPT_BUILD},
        {"runtime", required_argument, NULL, OPT_RUNTIME},
        {"rootless", no_argument, NULL, OPT_ROOTLESS},
        {"timeout", required_argument, NULL, OPT_TIMEOUT},
        {"keep-bundle", no_argument, NULL, OPT_KEEP},
        {"sandbox-shell", required_argument, NULL, OPT_SHELL},
        {"max-builds", required_argument, NULL, OPT_MAX},
        {"bundle-root", required_argument, NULL, OPT_BUNDLE_ROOT},
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
    };
    const char *store_url = NULL, *blob_url = NULL, *dir_url = NULL, *build_url = NULL;
    obi_oci_build_options opts = OBI_OCI_BUILD_OPTIONS_INIT;
    int c;
    optind = 1;
    while ((c = getopt_long(argc, argv, "h", options, NULL)) != -1) {
        switch (c) {
        case OPT_STORE:
            store_url = optarg;
            break;
        case OPT_BLOB:
            blob_url = optarg;
            break;
        case OPT_DIR:
            dir_url = optarg;
            break;
        case OPT_BUILD:
            build_url = optarg;
            break;
        case OPT_RUNTIME:
            opts.runtime = optarg;
            break;
        case OPT_ROOTLESS:
            opts.rootless = true;
            break;
        case OPT_TIMEOUT:
            if (parse_unsigned(optarg, "--timeout", &opts.timeout_seconds))
                return 2;
            break;
        case OPT_KEEP:
            opts.keep_bundle = true;
            break;
        case OPT_SHELL:
            opts.sandbox_shell = optarg;
            break;
        case OPT_MAX:
            if (parse_unsigned(optarg, "--max-builds", &opts.max_builds))
                return 2;
            break;
        case OPT_BUNDLE_ROOT:
            opts.bundle_root = optarg;
            break;
        case 'h':
            usage(stdout);
            return 0;
        default:
            usage(stderr);
            return 2;
        }
    }
    if (optind + 1 != argc) {
        usage(stderr);
        return 2;
    }
    const char *request_path = argv[optind];
    obi_error *err = NULL;

    cleanup_store obi_store *store = NULL;
    if (obi_store_open(blob_url ? blob_url : store_url, dir_url ? dir_url : store_url, &store,
                       &err) < 0)
        return cli_fail(err);

    cleanup_build_request obi_build_request *req = NULL;
    if (obi_friendly_request_load(request_path, store, &req, &err) < 0)
        return cli_fail(err);

    cleanup_free char *data_dir = obi_default_data_dir();
    cleanup_free char *bundle_root = NULL;
    if (!opts.bundle_root) {
        bundle_root = data_dir ? obi_path_join(data_dir, "bundles") : NULL;
        if (!bundle_root)
            return cli_failf("out of memory");
        opts.bundle_root = bundle_root;
    }

    if (pipe2(cancel_pipe, O_CLOEXEC | O_NONBLOCK) < 0)
        return cli_failf("pipe: %s", strerror(errno));
    struct sigaction sa = {0};
    sa.sa_handler = on_cancel_signal;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGHUP, &sa, NULL);
    opts.cancel_fd = cancel_pipe[0];
    opts.on_output = stream_to_stderr;

    cleanup_build_service obi_build_service *service = NULL;
    int r = build_url ? obi_build_service_open(build_url, store, &service, &err)
                      : obi_oci_build_service_new(&opts, store, &service, &err);
    if (r < 0)
        return cli_fail(err);

    cleanup_build obi_build *build = NULL;
    r = obi_build_service_do_build(service, req, &build, &err);
    if (r < 0) {
        if (cancel_signal)
            obi_error_prefix(&err, r, "interrupted by signal %d", (int)cancel_signal);
        return cli_fail(err);
    }
    cleanup_json json_t *json = obi_build_to_json(build);
    if (!json || json_dumpf(json, stdout, JSON_COMPACT) < 0)
        return cli_failf("cannot print the build result");
    putchar('\n');
    if (fflush(stdout) != 0)
        return cli_failf("write to stdout: %s", strerror(errno));
    return 0;
}
