/*
 * ocibuild build [options] REQUEST.json: runs one BuildRequest on a build service (by default the
 * local OCI builder with bundles under <data dir>/bundles) and prints the Build as protobuf JSON.
 * REQUEST.json is the protobuf-JSON BuildRequest or the friendlier form (inputs as host paths,
 * env as plain strings; see README.md). Builder options and cancellation: cli_builder.c.
 */
#include <errno.h>
#include <stdio.h>
#include <string.h>

#include "cli.h"
#include "cli_builder.h"
#include "ocibuild/cleanup.h"
#include "ocibuild/friendly_request.h"
#include "ocibuild/json_util.h"

static void usage(FILE *out)
{
    fprintf(out, "usage: ocibuild build [OPTIONS] REQUEST.json\n\noptions:\n%s", cli_builder_usage);
}

int cli_build(int argc, char **argv)
{
    struct option options[32];
    cli_builder_option_table(options, NULL, 0);

    cli_builder_args args = CLI_BUILDER_ARGS_INIT;
    int c;
    optind = 1;
    while ((c = getopt_long(argc, argv, "h", options, NULL)) != -1) {
        if (c == 'h') {
            usage(stdout);
            return 0;
        }
        if (c < CLI_BUILDER_OPT_FIRST || c > CLI_BUILDER_OPT_LAST) {
            usage(stderr);
            return 2;
        }
        if (cli_builder_handle_option(c, optarg, &args) != 0)
            return 2;
    }
    if (optind + 1 != argc) {
        usage(stderr);
        return 2;
    }
    const char *request_path = argv[optind];
    obi_error *err = NULL;

    cleanup_store obi_store *store = NULL;
    if (cli_builder_open_store(&args, &store, &err) < 0)
        return cli_fail(err);
    cleanup_build_request obi_build_request *req = NULL;
    if (obi_friendly_request_load(request_path, store, &req, &err) < 0)
        return cli_fail(err);
    cleanup_build_service obi_build_service *service = NULL;
    if (cli_builder_open_service(&args, store, &service, &err) < 0)
        return cli_fail(err);

    cleanup_build obi_build *build = NULL;
    int r = cli_builder_do_build(service, req, &build, &err);
    if (r < 0) {
        cli_builder_note_interruption(&err, r);
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
