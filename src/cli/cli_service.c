/*
 * ocibuild service SUBCOMMAND: the deployment front end. A table of subcommands; each loads the
 * deployment YAML and works on one service or all of them. `spec` prints the OCI config of one
 * replica; `bundle` writes that replica's bundle directory (what `up` will run). `up`, `ps`,
 * `logs` and `down` drive the lifecycle (lifecycle.h) over all services or one.
 */
#include <errno.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "cli_registry.h"
#include "ocibuild/cleanup.h"
#include "ocibuild/deployment.h"
#include "ocibuild/fs.h"
#include "ocibuild/json_util.h"
#include "ocibuild/lifecycle.h"
#include "ocibuild/number.h"
#include "ocibuild/secrets.h"
#include "ocibuild/service_bundle.h"

static void print_warnings(char **warnings)
{
    for (size_t i = 0; warnings && warnings[i]; i++)
        fprintf(stderr, "ocibuild: warning: %s\n", warnings[i]);
}

/* The keys of the document that have no effect here (deployment.h), once per command: those of
 * service (NULL: every service) and the deployment-wide ones. */
static void print_notices(const obi_deployment *deployment, const char *service)
{
    const char **notices = obi_deployment_notices(deployment, service);
    for (size_t i = 0; notices && notices[i]; i++)
        fprintf(stderr, "ocibuild: note: %s\n", notices[i]);
    free(notices);
}

/* What spec and bundle share: the parsed command line, the deployment, the secrets provider,
 * what the service's bundles are made from (its image, unpacked into the cache, or its rootfs
 * dir) and the generator options pointing into them. */
typedef struct service_context {
    obi_deployment *deployment;
    const obi_service *svc;
    obi_secrets *secrets;
    obi_service_source source;
    char *data_dir;
    obi_service_spec_options opts;
    obi_bundle_rootfs_mode rootfs_mode;
    char **positional; /* after FILE.yaml SERVICE */
    int positional_count;
    cli_registry registry;
} service_context;

static void service_context_clear(service_context *ctx)
{
    obi_deployment_free(ctx->deployment);
    obi_secrets_free(ctx->secrets);
    obi_service_source_close(&ctx->source);
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
        CLI_REGISTRY_LONG_OPTIONS,
        {NULL, 0, NULL, 0},
    };
    unsigned long replica = 1;
    const char *secrets_dir = NULL, *data_dir = NULL;
    int c;
    optind = 1;
    cli_registry_init(&ctx->registry);
    while ((c = getopt_long(argc, argv, "", options, NULL)) != -1) {
        int handled = cli_registry_option(&ctx->registry, c, optarg);
        if (handled >= 0) {
            if (handled > 0)
                return handled;
            continue;
        }
        switch (c) {
        case 'r': {
            unsigned long long value = 0;
            if (!obi_parse_decimal(optarg, 1024, &value) || value == 0)
                return cli_failf("--replica: expected a number from 1, got \"%s\"", optarg);
            replica = (unsigned long)value;
            break;
        }
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
    if (obi_service_source_open(ctx->svc, ctx->data_dir, &ctx->registry.opts, &ctx->source, &err) <
        0)
        return cli_fail(err);
    obi_service_source_spec_options(&ctx->source, &ctx->opts);
    return 0;
}

static int service_spec(int argc, char **argv)
{
    service_context ctx = {0};
    int status = service_context_open(&ctx, argc, argv, 0,
                                      "usage: ocibuild service spec "
                                      "FILE.yaml SERVICE [--replica N] "
                                      "[--secrets-dir DIR] [--data-dir DIR] "
                                      "[--dev-root DIR] " CLI_REGISTRY_USAGE);
    if (status == 0) {
        obi_error *err = NULL;
        cleanup_json json_t *config = NULL;
        cleanup_strv char **warnings = NULL;
        if (obi_service_spec_generate(ctx.deployment, ctx.svc, &ctx.opts, &config, &warnings,
                                      &err) < 0) {
            status = cli_fail(err);
        } else {
            print_notices(ctx.deployment, ctx.svc->name);
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
                                      "[--dev-root DIR] " CLI_REGISTRY_USAGE);
    if (status == 0) {
        obi_error *err = NULL;
        cleanup_strv char **warnings = NULL;
        /* status 0: service_context_open set positional (cli_failf returns 1, which the
         * analyzer does not see across translation units). */
        // NOLINTNEXTLINE(clang-analyzer-core.NullDereference)
        if (obi_service_bundle_write(ctx.deployment, ctx.svc, &ctx.opts, ctx.positional[0],
                                     ctx.source.rootfs, ctx.rootfs_mode, &warnings, &err) < 0)
            status = cli_fail(err);
        else
            print_warnings(warnings);
    }
    service_context_clear(&ctx);
    return status;
}

/* What up, ps, logs and down share: FILE.yaml [SERVICE] and the lifecycle options. */
typedef struct lifecycle_context {
    obi_deployment *deployment;
    obi_secrets *secrets;
    obi_lifecycle_options opts;
    cli_registry registry;
} lifecycle_context;

static void lifecycle_context_clear(lifecycle_context *ctx)
{
    obi_deployment_free(ctx->deployment);
    obi_secrets_free(ctx->secrets);
}

static int lifecycle_context_open(lifecycle_context *ctx, int argc, char **argv, const char *name)
{
    static const struct option options[] = {
        {"replica", required_argument, NULL, 'r'},
        {"secrets-dir", required_argument, NULL, 's'},
        {"data-dir", required_argument, NULL, 'd'},
        {"runtime", required_argument, NULL, 't'},
        {"grace", required_argument, NULL, 'g'},
        CLI_REGISTRY_LONG_OPTIONS,
        {NULL, 0, NULL, 0},
    };
    ctx->opts = (obi_lifecycle_options)OBI_LIFECYCLE_OPTIONS_INIT;
    cli_registry_init(&ctx->registry);
    ctx->opts.registry = &ctx->registry.opts;
    const char *secrets_dir = NULL;
    int c;
    optind = 1;
    while ((c = getopt_long(argc, argv, "", options, NULL)) != -1) {
        char *end = NULL;
        int handled = cli_registry_option(&ctx->registry, c, optarg);
        if (handled >= 0) {
            if (handled > 0)
                return handled;
            continue;
        }
        switch (c) {
        case 'r': {
            unsigned long long replica = 0;
            if (!obi_parse_decimal(optarg, 1024, &replica) || replica == 0)
                return cli_failf("--replica: expected a number from 1, got \"%s\"", optarg);
            ctx->opts.replica = (unsigned)replica;
            break;
        }
        case 's':
            secrets_dir = optarg;
            break;
        case 'd':
            ctx->opts.data_dir = optarg;
            break;
        case 't':
            ctx->opts.runtime = optarg;
            break;
        case 'g': {
            errno = 0;
            double seconds = strtod(optarg, &end);
            if (!*optarg || *end || errno || !(seconds >= 0) || seconds > 86400)
                return cli_failf("--grace: expected seconds (0..86400), got \"%s\"", optarg);
            ctx->opts.grace_ms = (long)(seconds * 1000 + 0.5);
            break;
        }
        default:
            return cli_failf("usage: ocibuild service %s FILE.yaml [SERVICE] [--replica N] "
                             "[--data-dir DIR] [--secrets-dir DIR] [--runtime NAME|PATH] "
                             "[--grace S] " CLI_REGISTRY_USAGE,
                             name);
        }
    }
    if (argc - optind < 1 || argc - optind > 2)
        return cli_failf("usage: ocibuild service %s FILE.yaml [SERVICE] [options]", name);
    const char *file = argv[optind];
    ctx->opts.service = argc - optind == 2 ? argv[optind + 1] : NULL;
    if (ctx->opts.replica && !ctx->opts.service)
        return cli_failf("--replica needs a SERVICE");
    obi_error *err = NULL;
    if (obi_deployment_load(file, &ctx->deployment, &err) < 0)
        return cli_fail(err);
    if (ctx->opts.service && !obi_deployment_find(ctx->deployment, ctx->opts.service))
        return cli_failf("%s: no service \"%s\"", file, ctx->opts.service);
    if (secrets_dir && obi_secrets_dir_open(secrets_dir, &ctx->secrets, &err) < 0)
        return cli_fail(err);
    ctx->opts.secrets = ctx->secrets;
    return 0;
}

static void print_report(const char *message, void *ctx)
{
    (void)ctx;
    printf("%s\n", message);
    fflush(stdout);
}

static int service_up(int argc, char **argv)
{
    lifecycle_context ctx = {0};
    int status = lifecycle_context_open(&ctx, argc, argv, "up");
    if (status == 0) {
        obi_error *err = NULL;
        ctx.opts.report = print_report;
        print_notices(ctx.deployment, ctx.opts.service);
        if (obi_lifecycle_up(ctx.deployment, &ctx.opts, &err) < 0)
            status = cli_fail(err);
    }
    lifecycle_context_clear(&ctx);
    return status;
}

static int service_down(int argc, char **argv)
{
    lifecycle_context ctx = {0};
    int status = lifecycle_context_open(&ctx, argc, argv, "down");
    if (status == 0) {
        obi_error *err = NULL;
        ctx.opts.report = print_report;
        if (obi_lifecycle_down(ctx.deployment, &ctx.opts, &err) < 0)
            status = cli_fail(err);
    }
    lifecycle_context_clear(&ctx);
    return status;
}

/* "0", "137 (signal 9)", "unknown" (stopped without an exit record), "-" (not stopped). */
static void format_exit(const obi_replica_status *s, char *out, size_t len)
{
    if (s->state != OBI_REPLICA_STOPPED)
        snprintf(out, len, "-");
    else if (!s->has_exit)
        snprintf(out, len, "unknown");
    else if (s->signal)
        snprintf(out, len, "%d (signal %d)", s->exit_code, s->signal);
    else
        snprintf(out, len, "%d", s->exit_code);
}

static int service_ps(int argc, char **argv)
{
    lifecycle_context ctx = {0};
    int status = lifecycle_context_open(&ctx, argc, argv, "ps");
    if (status == 0) {
        obi_error *err = NULL;
        obi_replica_status *statuses = NULL;
        size_t count = 0;
        if (obi_lifecycle_ps(ctx.deployment, &ctx.opts, &statuses, &count, &err) < 0) {
            status = cli_fail(err);
        } else {
            printf("%-24s %-9s %-8s %s\n", "CONTAINER", "STATUS", "PID", "EXIT");
            for (size_t i = 0; i < count; i++) {
                const obi_replica_status *s = &statuses[i];
                char pid[16], exit_text[48];
                snprintf(pid, sizeof pid, s->pid > 0 ? "%d" : "-", s->pid);
                format_exit(s, exit_text, sizeof exit_text);
                printf("%-24s %-9s %-8s %s", s->id, obi_replica_state_name(s->state), pid,
                       exit_text);
                if (s->foreign)
                    printf("  (not this deployment's: bundle %s)", s->bundle);
                putchar('\n');
            }
            if (fflush(stdout) != 0)
                status = cli_failf("write to stdout: %s", strerror(errno));
        }
        obi_replica_status_free(statuses, count);
    }
    lifecycle_context_clear(&ctx);
    return status;
}

/* Copies a log to stdout, each line prefixed with "ID | " when prefix is set. */
static int print_log(const char *path, const char *prefix)
{
    cleanup_file FILE *log = fopen(path, "re");
    if (!log)
        return errno == ENOENT && prefix ? 0 : cli_failf("log %s: %s", path, strerror(errno));
    cleanup_free char *line = NULL;
    size_t cap = 0;
    ssize_t len;
    while ((len = getline(&line, &cap, log)) > 0) {
        if (prefix)
            printf("%s | ", prefix);
        fwrite(line, 1, (size_t)len, stdout);
        if (prefix && line[len - 1] != '\n')
            putchar('\n');
    }
    return ferror(log) ? cli_failf("read %s: %s", path, strerror(errno)) : 0;
}

static int service_logs(int argc, char **argv)
{
    lifecycle_context ctx = {0};
    int status = lifecycle_context_open(&ctx, argc, argv, "logs");
    cleanup_free char *data_dir = NULL;
    cleanup_free obi_replica_ref *plan = NULL;
    size_t count = 0;
    obi_error *err = NULL;
    if (status == 0 &&
        !(data_dir = ctx.opts.data_dir ? strdup(ctx.opts.data_dir) : obi_default_data_dir()))
        status = cli_failf("out of memory");
    if (status == 0 && obi_lifecycle_plan(ctx.deployment, ctx.opts.service, ctx.opts.replica, false,
                                          OBI_PLAN_START, &plan, &count, &err) < 0)
        status = cli_fail(err);
    for (size_t i = 0; status == 0 && i < count; i++) {
        obi_replica_paths paths = {0};
        /* status 0: the deployment was loaded (cli_fail returns 1, unseen by the analyzer) */
        // NOLINTNEXTLINE(clang-analyzer-core.NullDereference)
        if (obi_replica_paths_init(&paths, data_dir, ctx.deployment->name, plan[i].service->name,
                                   plan[i].replica, &err) < 0) {
            status = cli_fail(err);
            break;
        }
        status = print_log(paths.log, ctx.opts.replica ? NULL : paths.id);
        obi_replica_paths_clear(&paths);
    }
    if (status == 0 && fflush(stdout) != 0)
        status = cli_failf("write to stdout: %s", strerror(errno));
    lifecycle_context_clear(&ctx);
    return status;
}

#define LIFECYCLE_USAGE                                                                            \
    "FILE.yaml [SERVICE] [--replica N] [--data-dir DIR] [--secrets-dir DIR]\n"                     \
    "       [--runtime runc|crun|PATH] [--grace S]\n"                                              \
    "       " CLI_REGISTRY_USAGE
#define REPLICA_USAGE                                                                              \
    "[--replica N] [--secrets-dir DIR] [--data-dir DIR] [--dev-root DIR]\n"                        \
    "       [--rootfs-mode symlink|dir|path|overlay] " CLI_REGISTRY_USAGE

static const struct service_command {
    const char *name;
    int (*run)(int argc, char **argv);
    const char *summary;
    const char *usage;
} SERVICE_COMMANDS[] = {
    {"spec", service_spec, "print the OCI config.json of one replica of a service",
     "FILE.yaml SERVICE " REPLICA_USAGE},
    {"bundle", service_bundle, "write an OCI bundle (config.json + rootfs) for one replica",
     "FILE.yaml SERVICE DIR " REPLICA_USAGE},
    {"up", service_up, "create bundles and start the replicas detached, dependencies first",
     LIFECYCLE_USAGE},
    {"ps", service_ps, "show each replica's state: running/stopped, pid, exit code",
     LIFECYCLE_USAGE},
    {"logs", service_logs, "print a replica's log (all replicas, prefixed, without --replica)",
     LIFECYCLE_USAGE},
    {"down", service_down, "stop (SIGTERM, grace, SIGKILL) and remove replicas, keep named volumes",
     LIFECYCLE_USAGE},
};

int cli_service(int argc, char **argv)
{
    if (argc < 2 || !strcmp(argv[1], "-h") || !strcmp(argv[1], "--help")) {
        FILE *out = argc < 2 ? stderr : stdout;
        fprintf(out,
                "usage: ocibuild service COMMAND FILE.yaml [SERVICE] [options]\n\ncommands:\n");
        for (size_t i = 0; i < OBI_ARRAY_SIZE(SERVICE_COMMANDS); i++)
            fprintf(out, "  %-8s %s\n", SERVICE_COMMANDS[i].name, SERVICE_COMMANDS[i].summary);
        return argc < 2 ? 2 : 0;
    }
    for (size_t i = 0; i < OBI_ARRAY_SIZE(SERVICE_COMMANDS); i++) {
        if (strcmp(argv[1], SERVICE_COMMANDS[i].name))
            continue;
        if (cli_help_requested(argc - 1, argv + 1)) {
            printf("usage: ocibuild service %s %s\n  %s\n", SERVICE_COMMANDS[i].name,
                   SERVICE_COMMANDS[i].usage, SERVICE_COMMANDS[i].summary);
            return fflush(stdout) == 0 ? 0 : CLI_EXIT_FAILURE;
        }
        return SERVICE_COMMANDS[i].run(argc - 1, argv + 1);
    }
    cli_failf("service: unknown command \"%s\"", argv[1]);
    return CLI_EXIT_USAGE;
}
