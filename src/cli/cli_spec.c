/*
 * ocibuild spec [--rootless] [--sandbox-shell PATH] [--runtime NAME] REQUEST.json: prints the
 * config.json that a build of the request (protobuf-JSON BuildRequest; "-" reads stdin) would run
 * with, on runc or, with --runtime, on that runtime (crun: without a cgroup, docs/security.md
 * "Limits"), with the default limits. The
 * request is validated first; errors name the field. Rootless when not run as root, as a build
 * would be. Rootful, the ids are those of the first id
 * slot of the ocibuild user's range (a build claims a free one); --rootless maps ids from the
 * invoking user's /etc/subuid and /etc/subgid ranges ($OCIBUILD_SUBUID_FILE /
 * $OCIBUILD_SUBGID_FILE override the files, for both).
 */
#include <errno.h>
#include <getopt.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "cli.h"
#include "ocibuild/cleanup.h"
#include "ocibuild/id_slot.h"
#include "ocibuild/json_util.h"
#include "ocibuild/oci_build.h"
#include "ocibuild/request.h"
#include "ocibuild/runtime.h"
#include "ocibuild/spec.h"

static const char USAGE[] =
    "usage: ocibuild spec [--rootless] [--sandbox-shell PATH] [--runtime NAME] REQUEST.json";

int cli_load_build_request(const char *path, obi_build_request **out, obi_error **err)
{
    json_error_t jerr;
    cleanup_json json_t *json = strcmp(path, "-")
                                    ? json_load_file(path, JSON_REJECT_DUPLICATES, &jerr)
                                    : json_loadf(stdin, JSON_REJECT_DUPLICATES, &jerr);
    if (!json)
        return obi_error_set(err, -EINVAL, "%s:%d:%d: %s", path, jerr.line, jerr.column, jerr.text);
    int r = obi_build_request_from_json(json, out, err);
    return r < 0 ? obi_error_prefix(err, r, "%s", path) : 0;
}

int cli_spec(int argc, char **argv)
{
    static const struct option OPTIONS[] = {
        {"rootless", no_argument, NULL, 'r'},
        {"sandbox-shell", required_argument, NULL, 's'},
        {"runtime", required_argument, NULL, 't'},
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
    };
    obi_spec_options opts = {0};
    const char *runtime_name = NULL;
    int c;
    while ((c = getopt_long(argc, argv, "+h", OPTIONS, NULL)) != -1) {
        switch (c) {
        case 'r':
            opts.rootless = true;
            break;
        case 's':
            opts.sandbox_shell = optarg;
            break;
        case 't':
            runtime_name = optarg;
            break;
        case 'h':
            puts(USAGE);
            return 0;
        default:
            return cli_failf("%s", USAGE);
        }
    }
    if (optind != argc - 1)
        return cli_failf("%s", USAGE);
    /* As `build` would run it: rootless unless run as root. */
    if (geteuid() != 0)
        opts.rootless = true;
    const char *path = argv[optind];
    obi_error *err = NULL;
    cleanup_build_request obi_build_request *req = NULL;
    if (cli_load_build_request(path, &req, &err) < 0)
        return cli_fail(err);
    if (runtime_name) {
        /* What a build service without a memory limit asks of that runtime. */
        obi_runtime *runtime = NULL;
        if (obi_runtime_new(runtime_name, NULL, &runtime, &err) < 0)
            return cli_fail(err);
        opts.no_cgroup = !obi_runtime_set_cgroups(runtime, false);
        obi_runtime_free(runtime);
    }
    if (opts.rootless && obi_spec_options_rootless_current_user(&opts, &err) < 0)
        return cli_fail(err);
    if (!opts.rootless) {
        cleanup_id_pool obi_id_pool *pool = NULL;
        obi_id_slot first;
        if (obi_id_pool_open_default(&pool, &err) < 0)
            return cli_fail(err);
        obi_id_pool_slot(pool, 0, &first);
        obi_id_slot_spec_ids(&first, &opts);
    }
    opts.max_pids = OBI_DEFAULT_MAX_PIDS;
    cleanup_json json_t *config = NULL;
    if (obi_spec_generate(req, &opts, &config, &err) < 0) {
        obi_error_prefix(&err, -EINVAL, "%s", path);
        return cli_fail(err);
    }
    if (json_dumpf(config, stdout, JSON_INDENT(2)) < 0 || fputc('\n', stdout) == EOF ||
        fflush(stdout) != 0)
        return cli_failf("writing to standard output failed");
    return 0;
}
