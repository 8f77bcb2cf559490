/*
 * ocibuild nix-build [options] FILE.drv|FILE.nix...: builds Nix derivations here (input
 * derivations first, independent ones at once with -j, valid outputs not again) and prints per
 * derivation
 *   {"outputs": {"out": {"path": ..., "narHash": "sha256:...", "references": [...]}}}
 * Like nix-build: a .nix file is instantiated with nix-instantiate first (-A picks an
 * attribute); the outputs and their closure are registered in the local Nix store through
 * `nix-store --import` (unless --no-register or there is none: one import per derivation given,
 * fed as its builds end), and result links are made as
 * nix-build makes them (-o/--out-link, default ./result; --no-out-link); without a Nix store to
 * link into, the outputs are exported at the link paths as copies. -K keeps a failed build's
 * directory. A thin layer over obi_nix_build (src/nix/nix_build.c); builder options as
 * `ocibuild build`. The result: JSON with --json or when stdout is not a terminal; on a
 * terminal the output paths, as nix-build prints them.
 */
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "cli.h"
#include "cli_builder.h"
#include "ocibuild/cleanup.h"
#include "ocibuild/export.h"
#include "ocibuild/fs.h"
#include "ocibuild/json_util.h"
#include "ocibuild/nix_build.h"
#include "ocibuild/nix_store.h"
#include "ocibuild/oci_build.h"
#include "ocibuild/process.h"
#include "ocibuild/strv.h"

static void usage(FILE *out)
{
    fprintf(out,
            "usage: ocibuild nix-build [OPTIONS] FILE.drv|FILE.nix...\n\noptions:\n"
            "  -o, --out-link PATH         result links at PATH, PATH-<output> (default: result)\n"
            "      --no-out-link           no result links\n"
            "  -j, --max-jobs N            derivations built at once (default: CPUs)\n"
            "  -K, --keep-failed           keep a failed build's directory and print it\n"
            "  -A, --attr NAME             the attribute of a .nix file to build\n"
            "      --no-register           do not register the results in the local Nix store\n"
            "      --path-info DIR         where outputs built here are recorded\n"
            "      --cores N               NIX_BUILD_CORES (default: online CPUs)\n"
            "      --nix-store PROGRAM     nix-store to ask for closures and to import into\n"
            "      --json                  print outputs, NAR hashes and references as JSON (the\n"
            "                              default when stdout is not a terminal; else the paths)\n"
            "%s\n%s",
            cli_builder_usage, cli_exit_codes_help);
}

static pthread_mutex_t log_lock = PTHREAD_MUTEX_INITIALIZER;

static void log_to_stderr(const uint8_t *data, size_t len, void *ctx)
{
    (void)ctx;
    pthread_mutex_lock(&log_lock);
    (void)!fwrite(data, 1, len, stderr);
    fflush(stderr);
    pthread_mutex_unlock(&log_lock);
}

/* nix-build's link names: "out" at link, output N at link-N. */
static char *link_name(const char *link, const char *output)
{
    char *name = NULL;
    int r = strcmp(output, "out") == 0 ? asprintf(&name, "%s", link)
                                       : asprintf(&name, "%s-%s", link, output);
    return r < 0 ? NULL : name;
}

/* Result links: symlinks into /nix/store registered as roots when the outputs are Nix's,
 * otherwise copies exported from castore. */
static int make_links(const obi_nix_build_result *result, const obi_nix_build_options *opts,
                      const char *link, bool registered)
{
    for (size_t i = 0; i < result->n_outputs; i++) {
        const obi_nix_build_output *o = &result->outputs[i];
        cleanup_free char *dest = link_name(link, o->name);
        if (!dest)
            return cli_failf("out of memory");
        obi_error *err = NULL;
        int r = registered ? obi_nix_store_add_root(opts->nix_store, o->info->path, dest, &err)
                : o->info->node.kind
                    ? obi_export_node(opts->store->blobs, opts->store->directories, &o->info->node,
                                      dest, &err)
                    : obi_error_set(&err, -ENOENT,
                                    "%s: only in the Nix store, and no link can be made into it",
                                    o->info->path);
        if (r < 0)
            return cli_fail(err);
    }
    return 0;
}

/* Whether a local Nix store to register into exists: /nix/store and nix-store. */
static bool have_nix_store(const char *nix_store)
{
    struct stat st;
    cleanup_free char *program = obi_find_executable(nix_store ? nix_store : "nix-store", NULL);
    return program && stat("/nix/store", &st) == 0 && S_ISDIR(st.st_mode);
}

/* `nix-instantiate FILE [-A ATTR]`: the .drv paths it prints. */
static int instantiate(const char *file, const char *attr, obi_strv_builder *drvs)
{
    char *argv[] = {(char *)"nix-instantiate", (char *)file, attr ? (char *)"-A" : NULL,
                    (char *)attr, NULL};
    cleanup_free char *output = NULL;
    int exit_code = 0;
    obi_error *err = NULL;
    if (obi_run_capture(argv, false, 16u * 1024 * 1024, &output, &exit_code, &err) < 0)
        return cli_fail(err);
    if (exit_code != 0)
        return cli_failf("nix-instantiate %s failed (exit %d)", file, exit_code);
    size_t found = 0;
    for (char *line = output, *next; line && *line; line = next) {
        next = strchr(line, '\n');
        if (next)
            *next++ = '\0';
        if (!*line)
            continue;
        if (obi_strv_builder_add(drvs, line) < 0)
            return cli_failf("out of memory");
        found++;
    }
    if (found == 0)
        return cli_failf("nix-instantiate %s printed no derivation", file);
    return 0;
}

static bool ends_with(const char *s, const char *suffix)
{
    size_t a = strlen(s), b = strlen(suffix);
    return a >= b && strcmp(s + a - b, suffix) == 0;
}

typedef struct nix_build_args {
    const char *out_link;
    bool no_out_link;
    bool no_register;
    const char *attr;
    const char *path_info_dir;
    bool json_output;
} nix_build_args;

static int parse_args(int argc, char **argv, cli_builder_args *builder, nix_build_args *args,
                      obi_nix_build_options *opts)
{
    enum {
        OPT_PATH_INFO = CLI_BUILDER_OPT_LAST + 1,
        OPT_CORES,
        OPT_NIX_STORE,
        OPT_NO_OUT_LINK,
        OPT_NO_REGISTER,
        OPT_JSON,
    };
    static const struct option nix_options[] = {
        {"out-link", required_argument, NULL, 'o'},
        {"no-out-link", no_argument, NULL, OPT_NO_OUT_LINK},
        {"max-jobs", required_argument, NULL, 'j'},
        {"keep-failed", no_argument, NULL, 'K'},
        {"attr", required_argument, NULL, 'A'},
        {"no-register", no_argument, NULL, OPT_NO_REGISTER},
        {"json", no_argument, NULL, OPT_JSON},
        {"path-info", required_argument, NULL, OPT_PATH_INFO},
        {"cores", required_argument, NULL, OPT_CORES},
        {"nix-store", required_argument, NULL, OPT_NIX_STORE},
    };
    struct option options[40];
    cli_builder_option_table(options, nix_options, OBI_ARRAY_SIZE(nix_options));
    int c;
    optind = 1;
    while ((c = getopt_long(argc, argv, CLI_BUILDER_SHORT_OPTIONS "o:j:KA:", options, NULL)) !=
           -1) {
        switch (c) {
        case 'o':
            args->out_link = optarg;
            break;
        case OPT_NO_OUT_LINK:
            args->no_out_link = true;
            break;
        case 'j':
            if (cli_parse_unsigned(optarg, "--max-jobs", &opts->max_jobs))
                return CLI_EXIT_USAGE;
            if (opts->max_jobs == 0) {
                cli_failf("--max-jobs: at least 1");
                return CLI_EXIT_USAGE;
            }
            break;
        case 'K':
            opts->keep_failed = true;
            break;
        case 'A':
            args->attr = optarg;
            break;
        case OPT_NO_REGISTER:
            args->no_register = true;
            break;
        case OPT_PATH_INFO:
            args->path_info_dir = optarg;
            break;
        case OPT_CORES:
            if (cli_parse_unsigned(optarg, "--cores", &opts->build_cores))
                return CLI_EXIT_USAGE;
            break;
        case OPT_NIX_STORE:
            opts->nix_store = optarg;
            break;
        case OPT_JSON:
            args->json_output = true;
            break;
        case 'h':
            usage(stdout);
            return -1;
        default:
            if (!cli_builder_is_option(c)) {
                usage(stderr);
                return CLI_EXIT_USAGE;
            }
            if (cli_builder_handle_option(c, optarg, builder) != 0)
                return CLI_EXIT_USAGE;
        }
    }
    if (optind >= argc) {
        usage(stderr);
        return CLI_EXIT_USAGE;
    }
    return 0;
}

/* --root: every output under one root (each is also kept as nix/<basename>, nix_build.c). */
static int root_outputs(const obi_nix_build_result *result, obi_store *store, const char *root)
{
    cleanup_free obi_node *nodes = calloc(result->n_outputs + 1, sizeof *nodes);
    if (!nodes)
        return cli_failf("out of memory");
    for (size_t i = 0; i < result->n_outputs; i++)
        nodes[i] = result->outputs[i].info->node; /* borrowed: not cleared */
    obi_error *err = NULL;
    return cli_add_root(store, root, nodes, result->n_outputs, &err) < 0 ? cli_fail(err) : 0;
}

/* Builds one derivation, registers and links its results, prints its JSON. */
static int build_one(const char *drv_path, const obi_nix_build_options *opts,
                     const nix_build_args *args, const char *root, const char *link,
                     bool registering)
{
    obi_error *err = NULL;
    cleanup_nix_build_result obi_nix_build_result *result = NULL;
    int r = obi_nix_build(drv_path, opts, &result, &err);
    if (r < 0)
        return cli_builder_fail(err, r);
    if (registering && obi_nix_build_register(result, opts, NULL, &err) < 0)
        return cli_fail(err);
    if (!args->no_out_link && make_links(result, opts, link, registering) != 0)
        return 1;
    if (root && root_outputs(result, opts->store, root) != 0)
        return 1;
    if (!args->json_output) {
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

int cli_nix_build(int argc, char **argv)
{
    cleanup_builder_args cli_builder_args builder = CLI_BUILDER_ARGS_INIT;
    nix_build_args args = {.json_output = !isatty(STDOUT_FILENO)};
    /* Nix's defaults: NIX_BUILD_CORES and, here, jobs = the number of online CPUs */
    long cpus = sysconf(_SC_NPROCESSORS_ONLN);
    obi_nix_build_options nix_opts = {.build_cores = cpus > 0 ? (unsigned)cpus : 1,
                                      .max_jobs = cpus > 0 ? (unsigned)cpus : 1};
    int r = parse_args(argc, argv, &builder, &args, &nix_opts);
    if (r != 0)
        return r < 0 ? 0 : r;

    /* the derivations: .drv files as given, .nix files instantiated */
    cleanup_strv_builder obi_strv_builder drvs = {0};
    for (int i = optind; i < argc; i++) {
        if (ends_with(argv[i], ".nix")) {
            if ((r = instantiate(argv[i], args.attr, &drvs)) != 0)
                return r;
        } else if (obi_strv_builder_add(&drvs, argv[i]) < 0) {
            return cli_failf("out of memory");
        }
    }

    obi_error *err = NULL;
    cleanup_store obi_store *store = NULL;
    if (cli_builder_open_store(&builder, &store, &err) < 0)
        return cli_fail(err);
    cleanup_nix_path_info_store obi_nix_path_info_store *path_infos = NULL;
    if (obi_nix_path_info_store_open(args.path_info_dir, &path_infos, &err) < 0)
        return cli_fail(err);
    cleanup_build_service obi_build_service *service = NULL;
    builder.materialize_progress = nix_opts.max_jobs == 1; /* one line for one build at a time */
    if (cli_builder_open_service(&builder, store, &service, &err) < 0)
        return cli_fail(err);
    nix_opts.store = store;
    nix_opts.builder = service;
    nix_opts.path_infos = path_infos;
    nix_opts.on_output = builder.log_level >= OBI_LOG_INFO ? log_to_stderr : NULL;

    bool registering = !args.no_register && have_nix_store(nix_opts.nix_store);
    /* each output registered as its build ends; build_one registers what was valid before */
    nix_opts.register_in_nix = registering;
    const char *link = args.out_link ? args.out_link : "result";
    for (size_t i = 0; i < drvs.n; i++) {
        /* nix-build's naming for several derivations: result, result-2, ... */
        cleanup_free char *numbered = NULL;
        if (i > 0 && asprintf(&numbered, "%s-%zu", link, i + 1) < 0)
            return cli_failf("out of memory");
        if ((r = build_one(drvs.items[i], &nix_opts, &args, builder.root,
                           numbered ? numbered : link, registering)) != 0)
            return r;
    }
    return 0;
}
