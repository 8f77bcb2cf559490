/*
 * ocibuild service SUBCOMMAND: the deployment front end. A table of subcommands; each loads the
 * deployment YAML and works on one service or all of them. `spec` prints the OCI config of one
 * replica; `bundle` writes that replica's bundle directory (what `up` will run).
 */
#include <errno.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "ocibuild/cleanup.h"
#include "ocibuild/deployment.h"
#include "ocibuild/fs.h"
#include "ocibuild/image.h"
#include "ocibuild/json_util.h"
#include "ocibuild/secrets.h"
#include "ocibuild/service_spec.h"

static void print_warnings(char **warnings)
{
    for (size_t i = 0; warnings && warnings[i]; i++)
        fprintf(stderr, "ocibuild: warning: %s\n", warnings[i]);
}

/* What spec and bundle share: the parsed command line, the deployment, the secrets provider,
 * the image (unpacked into the cache) and the generator options pointing into them. */
typedef struct service_context {
    obi_deployment *deployment;
    const obi_service *svc;
    obi_secrets *secrets;
    obi_image *image;
    char *data_dir;
    const char *rootfs_source; /* for bundles: the image cache entry or the rootfs dir */
    obi_service_spec_options opts;
    obi_bundle_rootfs_mode rootfs_mode;
    char **positional; /* after FILE.yaml SERVICE */
    int positional_count;
} service_context;

static void service_context_clear(service_context *ctx)
{
    obi_deployment_free(ctx->deployment);
    obi_secrets_free(ctx->secrets);
    obi_image_free(ctx->image);
    free(ctx->data_dir);
}

/* Parses FILE.yaml SERVICE [EXTRA...] and the shared options; returns 0 or an exit code. */
static int service_context_open(service_context *ctx, int argc, char **argv, int extra,
                                const char *usage)
{
    static const struct option options[] = {
        {"replica", required_argument, NULL, 'r'},
        {"secrets-dir", required_argument, NULL, 's'},
        {"data-dir", required_argument, NULL, 'd'},
        {"dev-root", required_argument, NULL, 'v'},
        {"rootfs-mode", required_argument, NULL, 'm'},
        {NULL, 0, NULL, 0},
    };
    unsigned long replica = 1;
    const char *secrets_dir = NULL, *data_dir = NULL;
    int c;
    optind = 1;
    while ((c = getopt_long(argc, argv, "", options, NULL)) != -1) {
        char *end = NULL;
        switch (c) {
        case 'r':
            errno = 0;
            replica = strtoul(optarg, &end, 10);
            if (!*optarg || *end || errno || replica == 0 || replica > 1024)
                return cli_failf("--replica: expected a number from 1, got \"%s\"", optarg);
            break;
        case 's':
            secrets_dir = optarg;
            break;
        case 'd':
            data_dir = optarg;
            break;
        case 'v':
            ctx->opts.dev_root = optarg;
            break;
        case 'm':
            if (!strcmp(optarg, "symlink"))
                ctx->rootfs_mode = OBI_BUNDLE_ROOTFS_SYMLINK;
            else if (!strcmp(optarg, "dir"))
                ctx->rootfs_mode = OBI_BUNDLE_ROOTFS_DIR;
            else if (!strcmp(optarg, "path"))
                ctx->rootfs_mode = OBI_BUNDLE_ROOTFS_PATH;
            else if (!strcmp(optarg, "overlay"))
                ctx->rootfs_mode = OBI_BUNDLE_ROOTFS_OVERLAY;
            else
                return cli_failf("--rootfs-mode: expected symlink, dir, path or overlay");
            break;
        default:
            return cli_failf("%s", usage);
        }
    }
    if (argc - optind != 2 + extra)
        return cli_failf("%s", usage);
    const char *file = argv[optind], *name = argv[optind + 1];
    ctx->positional = argv + optind + 2;
    ctx->positional_count = extra;
    obi_error *err = NULL;
    if (obi_deployment_load(file, &ctx->deployment, &err) < 0)
        return cli_fail(err);
    if (!(ctx->svc = obi_deployment_find(ctx->deployment, name)))
        return cli_failf("%s: no service \"%s\"", file, name);
    if (secrets_dir && obi_secrets_dir_open(secrets_dir, &ctx->secrets, &err) < 0)
        return cli_fail(err);
    ctx->data_dir = data_dir ? strdup(data_dir) : obi_default_data_dir();
    if (!ctx->data_dir)
        return cli_failf("out of memory");
    ctx->opts.replica = (unsigned)replica;
    ctx->opts.secrets = ctx->secrets;
    ctx->opts.data_dir = ctx->data_dir;
    if (ctx->svc->image_kind == OBI_IMAGE_OCI) {
        if (obi_image_open(ctx->svc->image_path, ctx->svc->image_tag, ctx->data_dir, &ctx->image,
                           &err) < 0)
            return cli_fail(err);
        ctx->opts.image = &ctx->image->config;
        ctx->opts.rootfs = ctx->rootfs_source = ctx->image->rootfs;
    } else if (ctx->svc->image_kind == OBI_IMAGE_ROOTFS) {
        ctx->opts.rootfs = ctx->rootfs_source = ctx->svc->image_rootfs;
    }
    return 0;
}

static int service_spec(int argc, char **argv)
{
    service_context ctx = {0};
    int status = service_context_open(&ctx, argc, argv, 0,
                                      "usage: ocibuild service spec "
                                      "FILE.yaml SERVICE [--replica N] "
                                      "[--secrets-dir DIR] [--data-dir DIR] "
                                      "[--dev-root DIR]");
    if (status == 0) {
        obi_error *err = NULL;
        cleanup_json json_t *config = NULL;
        cleanup_strv char **warnings = NULL;
        if (obi_service_spec_generate(ctx.deployment, ctx.svc, &ctx.opts, &config, &warnings,
                                      &err) < 0) {
            status = cli_fail(err);
        } else {
            print_warnings(warnings);
            if (json_dumpf(config, stdout, JSON_INDENT(2) | JSON_PRESERVE_ORDER) < 0 ||
                fputc('\n', stdout) == EOF || fflush(stdout) != 0)
                status = cli_failf("write to stdout: %s", strerror(errno));
        }
    }
    service_context_clear(&ctx);
    return status;
}

static int service_bundle(int argc, char **argv)
{
    service_context ctx = {0};
    int status = service_context_open(&ctx, argc, argv, 1,
                                      "usage: ocibuild service bundle "
                                      "FILE.yaml SERVICE DIR [--replica N] "
                                      "[--secrets-dir DIR] [--data-dir DIR] "
                                      "[--dev-root DIR]");
    if (status == 0) {
        obi_error *err = NULL;
        cleanup_strv char **warnings = NULL;
        if (obi_service_bundle_write(ctx.deployment, ctx.svc, &ctx.opts, ctx.positional[0],
                                     ctx.rootfs_source, ctx.rootfs_mode, &warnings, &err) < 0)
            status = cli_fail(err);
        else
            print_warnings(warnings);
    }
    service_context_clear(&ctx);
    return status;
}

static const struct service_command {
    const char *name;
    int (*run)(int argc, char **argv);
    const char *summary;
} SERVICE_COMMANDS[] = {
    {"spec", service_spec, "print the OCI config.json of one replica of a service"},
    {"bundle", service_bundle, "write an OCI bundle (config.json + rootfs) for one replica"},
};

int cli_service(int argc, char **argv)
{
    if (argc < 2 || !strcmp(argv[1], "-h") || !strcmp(argv[1], "--help")) {
        FILE *out = argc < 2 ? stderr : stdout;
        fprintf(out, "usage: ocibuild service COMMAND FILE.yaml ...\n\ncommands:\n");
        for (size_t i = 0; i < OBI_ARRAY_SIZE(SERVICE_COMMANDS); i++)
            fprintf(out, "  %-8s %s\n", SERVICE_COMMANDS[i].name, SERVICE_COMMANDS[i].summary);
        return argc < 2 ? 2 : 0;
    }
    for (size_t i = 0; i < OBI_ARRAY_SIZE(SERVICE_COMMANDS); i++)
        if (!strcmp(argv[1], SERVICE_COMMANDS[i].name))
            return SERVICE_COMMANDS[i].run(argc - 1, argv + 1);
    return cli_failf("service: unknown command \"%s\"", argv[1]);
}
