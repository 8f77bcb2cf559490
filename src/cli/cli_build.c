/*
 * ocibuild build [options] REQUEST.json: runs one BuildRequest on a build service (by default the
 * local OCI builder with bundles under <data dir>/bundles) and prints the Build: a line per output
 * for people on a terminal, protobuf JSON with --json or when stdout is not a terminal (what
 * scripts read). --out DIR exports the outputs into DIR.
 * REQUEST.json is the protobuf-JSON BuildRequest or the friendlier form (inputs as host paths,
 * env as plain strings; see README.md). Builder options and cancellation: cli_builder.c.
 */
#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "cli.h"
#include "cli_builder.h"
#include "cli_progress.h"
#include "ocibuild/build_outputs.h"
#include "ocibuild/cleanup.h"
#include "ocibuild/friendly_request.h"
#include "ocibuild/json_util.h"
#include "ocibuild/store_roots.h"

static void usage(FILE *out)
{
    fprintf(out, "usage: ocibuild build [OPTIONS] REQUEST.json\n\noptions:\n%s\n%s",
            cli_builder_usage, cli_exit_codes_help);
}

static int print_json(const obi_build *build)
{
    cleanup_json json_t *json = obi_build_to_json(build);
    if (!json || json_dumpf(json, stdout, JSON_COMPACT) < 0)
        return cli_failf("cannot print the build result");
    putchar('\n');
    if (fflush(stdout) != 0)
        return cli_failf("write to stdout: %s", strerror(errno));
    return 0;
}

static int print_summary(const obi_build *build)
{
    for (size_t i = 0; i < build->n_outputs; i++) {
        cleanup_free char *line = obi_build_output_summary(build, i);
        if (!line)
            return cli_failf("out of memory");
        puts(line);
    }
    if (fflush(stdout) != 0)
        return cli_failf("write to stdout: %s", strerror(errno));
    return 0;
}

/* Loads the request, importing its host paths with gc held off until they are pinned (the
 * pin lasts as long as the process: the build pins them again, docs/store.md). */
static int load_request(const char *path, obi_store *store, const obi_progress *progress,
                        obi_store_pin **imports, obi_build_request **out, obi_error **err)
{
    int r = obi_store_pin_new(store, imports, err);
    if (r < 0 || (r = obi_store_pin_hold_gc(*imports, err)) < 0)
        return r;
    r = obi_friendly_request_load(path, store, progress, out, err);
    for (size_t i = 0; r == 0 && i < (*out)->n_inputs; i++)
        r = obi_store_pin_add(*imports, &(*out)->inputs[i], err);
    obi_store_pin_release_gc(*imports);
    return r;
}

int cli_build(int argc, char **argv)
{
    enum { OPT_JSON = CLI_BUILDER_OPT_LAST + 1, OPT_OUT };
    static const struct option build_options[] = {
        {"json", no_argument, NULL, OPT_JSON},
        {"out", required_argument, NULL, OPT_OUT},
    };
    struct option options[32];
    cli_builder_option_table(options, build_options, OBI_ARRAY_SIZE(build_options));
    bool json_output = !isatty(STDOUT_FILENO);
    const char *out_dir = NULL;

    cleanup_builder_args cli_builder_args args = CLI_BUILDER_ARGS_INIT;
    int c;
    optind = 1;
    while ((c = getopt_long(argc, argv, CLI_BUILDER_SHORT_OPTIONS, options, NULL)) != -1) {
        if (c == 'h') {
            usage(stdout);
            return 0;
        }
        if (c == OPT_JSON || c == OPT_OUT) {
            json_output |= c == OPT_JSON;
            out_dir = c == OPT_OUT ? optarg : out_dir;
            continue;
        }
        if (!cli_builder_is_option(c)) {
            usage(stderr);
            return CLI_EXIT_USAGE;
        }
        if (cli_builder_handle_option(c, optarg, &args) != 0)
            return CLI_EXIT_USAGE;
    }
    if (optind + 1 != argc) {
        usage(stderr);
        return CLI_EXIT_USAGE;
    }
    const char *request_path = argv[optind];
    obi_error *err = NULL;
    int r;

    cleanup_store obi_store *store = NULL;
    if (cli_builder_open_store(&args, &store, &err) < 0)
        return cli_fail(err);
    cleanup_build_request obi_build_request *req = NULL;
    cli_progress progress;
    cli_progress_init(&progress, "importing the inputs", args.log_level >= OBI_LOG_INFO);
    cleanup_store_pin obi_store_pin *imports = NULL;
    r = load_request(request_path, store, &progress.hook, &imports, &req, &err);
    cli_progress_done(&progress);
    if (r < 0)
        return cli_fail(err);
    cleanup_build_service obi_build_service *service = NULL;
    args.materialize_progress = true;
    /* This process exits once it has answered: the bundle's removal goes to a child that
     * outlives it (docs/build.md "After the answer"). */
    args.oci.hand_off_leftovers = true;
    if (cli_builder_open_service(&args, store, &service, &err) < 0)
        return cli_fail(err);

    cleanup_build obi_build *build = NULL;
    struct timespec start, end;
    clock_gettime(CLOCK_MONOTONIC, &start);
    r = cli_builder_do_build(&args, service, req, &build, &err);
    clock_gettime(CLOCK_MONOTONIC, &end);
    cli_builder_debug(&args, "the build took %.3f s",
                      (double)(end.tv_sec - start.tv_sec) + (end.tv_nsec - start.tv_nsec) / 1e9);
    if (r < 0)
        return cli_builder_fail(err, r);
    /* the builder keeps the outputs pinned until it is freed (oci_build.c) */
    if (args.root && cli_add_root(store, args.root, build->outputs, build->n_outputs, &err) < 0)
        return cli_fail(err);
    if (out_dir) {
        cli_progress_init(&progress, "exporting the outputs", args.log_level >= OBI_LOG_INFO);
        r = obi_build_outputs_export(store, build, out_dir, &progress.hook, &err);
        cli_progress_done(&progress);
        if (r < 0)
            return cli_fail(err);
    }
    return json_output ? print_json(build) : print_summary(build);
}
