/*
 * ocibuild nix-build [options] FILE.drv: builds a Nix derivation here (input derivations first
 * when their outputs are neither in /nix/store nor built here before) and prints
 *   {"outputs": {"out": {"path": ..., "narHash": "sha256:...", "references": [...]}}}
 * (with --json or when stdout is not a terminal; on a terminal the output paths, as nix-build)
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
#include "cli_builder.h"
#include "cli_progress.h"
#include "ocibuild/cleanup.h"
#include "ocibuild/export.h"
#include "ocibuild/fs.h"
#include "ocibuild/json_util.h"
#include "ocibuild/nix_build.h"
#include "ocibuild/oci_build.h"

static void usage(FILE *out)
{
    fprintf(out,
            "usage: ocibuild nix-build [OPTIONS] FILE.drv\n\noptions:\n"
            "  --json                      print outputs, NAR hashes and references as JSON (the\n"
            "                              default when stdout is not a terminal; else the paths)\n"
            "  --out-link DIR              export the outputs: out at DIR, output N at DIR-N\n"
            "  --path-info DIR             where outputs built here are recorded\n"
            "  --cores N                   NIX_BUILD_CORES (default: online CPUs)\n"
            "  --nix-store PROGRAM         nix-store to ask for closures\n%s\n%s",
            cli_builder_usage, cli_exit_codes_help);
}

/* "out" goes to link, any other output N to link-N (nix-build's naming). */
static int export_outputs(const obi_nix_build_result *result, obi_store *store, const char *link,
                          bool show_progress)
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
        cleanup_free char *what = NULL;
        if (asprintf(&what, "exporting %s", dest) < 0)
            return cli_failf("out of memory");
        cli_progress progress;
        cli_progress_init(&progress, what, show_progress);
        int r = obi_export_node_progress(store->blobs, store->directories, &o->info->node, dest,
                                         &progress.hook, &err);
        cli_progress_done(&progress);
        if (r < 0)
            return cli_fail(err);
    }
    return 0;
}

int cli_nix_build(int argc, char **argv)
{
    enum {
        OPT_OUT_LINK = CLI_BUILDER_OPT_LAST + 1,
        OPT_PATH_INFO,
        OPT_CORES,
        OPT_NIX_STORE,
        OPT_JSON
    };
    static const struct option nix_options[] = {
        {"json", no_argument, NULL, OPT_JSON},
        {"out-link", required_argument, NULL, OPT_OUT_LINK},
        {"path-info", required_argument, NULL, OPT_PATH_INFO},
        {"cores", required_argument, NULL, OPT_CORES},
        {"nix-store", required_argument, NULL, OPT_NIX_STORE},
    };
    struct option options[32];
    cli_builder_option_table(options, nix_options, OBI_ARRAY_SIZE(nix_options));

    cleanup_builder_args cli_builder_args args = CLI_BUILDER_ARGS_INIT;
    const char *out_link = NULL, *path_info_dir = NULL;
    bool json_output = !isatty(STDOUT_FILENO);
    /* Nix's default for NIX_BUILD_CORES (its "cores" setting): the number of online CPUs */
    long cpus = sysconf(_SC_NPROCESSORS_ONLN);
    obi_nix_build_options nix_opts = {.build_cores = cpus > 0 ? (unsigned)cpus : 1};
    int c;
    optind = 1;
    while ((c = getopt_long(argc, argv, CLI_BUILDER_SHORT_OPTIONS, options, NULL)) != -1) {
        switch (c) {
        case OPT_OUT_LINK:
            out_link = optarg;
            break;
        case OPT_PATH_INFO:
            path_info_dir = optarg;
            break;
        case OPT_CORES:
            if (cli_parse_unsigned(optarg, "--cores", &nix_opts.build_cores))
                return CLI_EXIT_USAGE;
            break;
        case OPT_NIX_STORE:
            nix_opts.nix_store = optarg;
            break;
        case OPT_JSON:
            json_output = true;
            break;
        case 'h':
            usage(stdout);
            return 0;
        default:
            if (!cli_builder_is_option(c)) {
                usage(stderr);
                return CLI_EXIT_USAGE;
            }
            if (cli_builder_handle_option(c, optarg, &args) != 0)
                return CLI_EXIT_USAGE;
        }
    }
    if (optind + 1 != argc) {
        usage(stderr);
        return CLI_EXIT_USAGE;
    }
    const char *drv_path = argv[optind];
    obi_error *err = NULL;

    cleanup_store obi_store *store = NULL;
    if (cli_builder_open_store(&args, &store, &err) < 0)
        return cli_fail(err);
    cleanup_nix_path_info_store obi_nix_path_info_store *path_infos = NULL;
    if (obi_nix_path_info_store_open(path_info_dir, &path_infos, &err) < 0)
        return cli_fail(err);

    cleanup_build_service obi_build_service *service = NULL;
    int r = cli_builder_open_service(&args, store, &service, &err);
    if (r < 0)
        return cli_fail(err);

    nix_opts.store = store;
    nix_opts.builder = service;
    nix_opts.path_infos = path_infos;
    cleanup_nix_build_result obi_nix_build_result *result = NULL;
    r = obi_nix_build(drv_path, &nix_opts, &result, &err);
    if (r < 0)
        return cli_builder_fail(err, r);
    if (out_link && export_outputs(result, store, out_link, args.log_level >= OBI_LOG_INFO) != 0)
        return 1;
    if (!json_output) {
        /* As nix-build prints them: the output paths, one a line. */
        for (size_t i = 0; i < result->n_outputs; i++)
            puts(result->outputs[i].info->path);
        return fflush(stdout) == 0 ? 0 : cli_failf("write to stdout: %s", strerror(errno));
    }
    cleanup_json json_t *json = obi_nix_build_result_to_json(result);
    if (!json || json_dumpf(json, stdout, JSON_COMPACT | JSON_SORT_KEYS) < 0)
        return cli_failf("cannot print the build result");
    putchar('\n');
    if (fflush(stdout) != 0)
        return cli_failf("write to stdout: %s", strerror(errno));
    return 0;
}
