/*
 * ocibuild nix-build [options] FILE.drv: builds a Nix derivation here (input derivations first
 * when their outputs are neither in /nix/store nor built here before) and prints
 *   {"outputs": {"out": {"path": ..., "narHash": "sha256:...", "references": [...]}}}
 * --out-link DIR exports the outputs like nix-build's links: "out" at DIR, output N at DIR-N.
 * --cores N sets NIX_BUILD_CORES (default: online CPUs, like Nix).
 * A thin layer over obi_nix_build (src/nix/nix_build.c); builder options as `ocibuild build`.
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
#include "ocibuild/export.h"
#include "ocibuild/fs.h"
#include "ocibuild/json_util.h"
#include "ocibuild/nix_build.h"
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
            "usage: ocibuild nix-build [--out-link DIR] [--path-info DIR] [--cores N]\n"
            "                          [--nix-store PROGRAM] [--store URL] [--blob-service URL]\n"
            "                          [--directory-service URL] [--build-service URL]\n"
            "                          [--runtime NAME|PATH] [--rootless] [--timeout S]\n"
            "                          [--keep-bundle] [--sandbox-shell PATH] [--max-builds N]\n"
            "                          [--bundle-root DIR] FILE.drv\n");
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

/* "out" goes to link, any other output N to link-N (nix-build's naming). */
static int export_outputs(const obi_nix_build_result *result, obi_store *store, const char *link)
{
    for (size_t i = 0; i < result->n_outputs; i++) {
        const obi_nix_build_output *o = &result->outputs[i];
        cleanup_free char *dest = NULL;
        if (strcmp(o->name, "out") == 0)
            dest = strdup(link);
        else if (asprintf(&dest, "%s-%s", link, o->name) < 0)
            dest = NULL;
        if (!dest)
            return cli_failf("out of memory");
        obi_error *err = NULL;
        if (obi_export_node(store->blobs, store->directories, &o->info->node, dest, &err) < 0)
            return cli_fail(err);
    }
    return 0;
}

int cli_nix_build(int argc, char **argv)
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
        OPT_BUNDLE_ROOT,
        OPT_OUT_LINK,
        OPT_PATH_INFO,
        OPT_CORES,
        OPT_NIX_STORE
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
        {"out-link", required_argument, NULL, OPT_OUT_LINK},
        {"path-info", required_argument, NULL, OPT_PATH_INFO},
        {"cores", required_argument, NULL, OPT_CORES},
        {"nix-store", required_argument, NULL, OPT_NIX_STORE},
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
    };
    const char *store_url = NULL, *blob_url = NULL, *dir_url = NULL, *build_url = NULL;
    const char *out_link = NULL, *path_info_dir = NULL;
    obi_oci_build_options opts = OBI_OCI_BUILD_OPTIONS_INIT;
    /* Nix's default for NIX_BUILD_CORES (its "cores" setting): the number of online CPUs */
    long cpus = sysconf(_SC_NPROCESSORS_ONLN);
    obi_nix_build_options nix_opts = {.build_cores = cpus > 0 ? (unsigned)cpus : 1};
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
        case OPT_OUT_LINK:
            out_link = optarg;
            break;
        case OPT_PATH_INFO:
            path_info_dir = optarg;
            break;
        case OPT_CORES:
            if (parse_unsigned(optarg, "--cores", &nix_opts.build_cores))
                return 2;
            break;
        case OPT_NIX_STORE:
            nix_opts.nix_store = optarg;
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
    const char *drv_path = argv[optind];
    obi_error *err = NULL;

    cleanup_store obi_store *store = NULL;
    if (obi_store_open(blob_url ? blob_url : store_url, dir_url ? dir_url : store_url, &store,
                       &err) < 0)
        return cli_fail(err);
    cleanup_nix_path_info_store obi_nix_path_info_store *path_infos = NULL;
    if (obi_nix_path_info_store_open(path_info_dir, &path_infos, &err) < 0)
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

    nix_opts.store = store;
    nix_opts.builder = service;
    nix_opts.path_infos = path_infos;
    cleanup_nix_build_result obi_nix_build_result *result = NULL;
    r = obi_nix_build(drv_path, &nix_opts, &result, &err);
    if (r < 0) {
        if (cancel_signal)
            obi_error_prefix(&err, r, "interrupted by signal %d", (int)cancel_signal);
        return cli_fail(err);
    }
    if (out_link && export_outputs(result, store, out_link) != 0)
        return 1;
    cleanup_json json_t *json = obi_nix_build_result_to_json(result);
    if (!json || json_dumpf(json, stdout, JSON_COMPACT | JSON_SORT_KEYS) < 0)
        return cli_failf("cannot print the build result");
    putchar('\n');
    if (fflush(stdout) != 0)
        return cli_failf("write to stdout: %s", strerror(errno));
    return 0;
}
