/*
 * ocibuild service SUBCOMMAND: the deployment front end. A table of subcommands; each loads the
 * deployment YAML and works on one service or all of them. `spec` prints the OCI config of one
 * replica (what `up` would write into its bundle).
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

static int service_spec(int argc, char **argv)
{
    static const struct option options[] = {
        {"replica", required_argument, NULL, 'r'},
        {"secrets-dir", required_argument, NULL, 's'},
        {"data-dir", required_argument, NULL, 'd'},
        {"dev-root", required_argument, NULL, 'v'},
        {NULL, 0, NULL, 0},
    };
    const char *usage = "usage: ocibuild service spec FILE.yaml SERVICE [--replica N] "
                        "[--secrets-dir DIR] [--data-dir DIR] [--dev-root DIR]";
    unsigned long replica = 1;
    const char *secrets_dir = NULL, *data_dir = NULL, *dev_root = NULL;
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
            dev_root = optarg;
            break;
        default:
            return cli_failf("%s", usage);
        }
    }
    if (argc - optind != 2)
        return cli_failf("%s", usage);
    const char *file = argv[optind], *name = argv[optind + 1];
    obi_error *err = NULL;
    cleanup_deployment obi_deployment *deployment = NULL;
    if (obi_deployment_load(file, &deployment, &err) < 0)
        return cli_fail(err);
    const obi_service *svc = obi_deployment_find(deployment, name);
    if (!svc)
        return cli_failf("%s: no service \"%s\"", file, name);
    cleanup_secrets obi_secrets *secrets = NULL;
    if (secrets_dir && obi_secrets_dir_open(secrets_dir, &secrets, &err) < 0)
        return cli_fail(err);
    cleanup_free char *default_data = data_dir ? NULL : obi_default_data_dir();
    obi_service_spec_options opts = {
        .replica = (unsigned)replica,
        .dev_root = dev_root,
        .secrets = secrets,
        .data_dir = data_dir ? data_dir : default_data,
    };
    cleanup_image obi_image *image = NULL;
    if (svc->image_kind == OBI_IMAGE_OCI) {
        if (obi_image_open(svc->image_path, svc->image_tag, opts.data_dir, &image, &err) < 0)
            return cli_fail(err);
        opts.image = &image->config;
        opts.rootfs = image->rootfs;
    } else if (svc->image_kind == OBI_IMAGE_ROOTFS) {
        opts.rootfs = svc->image_rootfs;
    }
    cleanup_json json_t *config = NULL;
    cleanup_strv char **warnings = NULL;
    if (obi_service_spec_generate(deployment, svc, &opts, &config, &warnings, &err) < 0)
        return cli_fail(err);
    print_warnings(warnings);
    if (json_dumpf(config, stdout, JSON_INDENT(2) | JSON_PRESERVE_ORDER) < 0 ||
        fputc('\n', stdout) == EOF || fflush(stdout) != 0)
        return cli_failf("write to stdout: %s", strerror(errno));
    return 0;
}

static const struct service_command {
    const char *name;
    int (*run)(int argc, char **argv);
    const char *summary;
} SERVICE_COMMANDS[] = {
    {"spec", service_spec, "print the OCI config.json of one replica of a service"},
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
