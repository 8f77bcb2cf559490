/*
 * ocibuild service SUBCOMMAND: the deployment front end. A table of subcommands; each loads the
 * deployment YAML and works on one service or all of them. `spec` prints the OCI config of one
 * replica; `bundle` writes that replica's bundle directory (what `up` will run). `up`, `ps`,
 * `logs`, `stop`, `restart` and `down` drive the lifecycle (lifecycle.h) over all services or
 * one; `up` leaves a supervisor per deployment running (supervisor.h); `exec` is the runtime's
 * exec in a replica, `ls` lists deployments.
 */
#include <ctype.h>
#include <dirent.h>
#include <errno.h>
#include <getopt.h>
#include <signal.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>
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
#include "ocibuild/runtime.h"
#include "ocibuild/service_rootless.h"
#include "ocibuild/service_rootless_net.h"
#include "ocibuild/secrets.h"
#include "ocibuild/service_bundle.h"
#include "ocibuild/supervisor.h"

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

/* What the lifecycle commands share: FILE.yaml [SERVICE], the lifecycle options, and the
 * flags of each (ps --json, logs -f/--tail/--timestamps, down -v). */
typedef struct lifecycle_context {
    obi_deployment *deployment;
    obi_secrets *secrets;
    obi_lifecycle_options opts;
    cli_registry registry;
    bool json, follow, timestamps;
    long tail; /* -1: everything */
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
        {"json", no_argument, NULL, 'j'},
        {"follow", no_argument, NULL, 'f'},
        {"tail", required_argument, NULL, 'n'},
        {"timestamps", no_argument, NULL, 'T'},
        {"volumes", no_argument, NULL, 'v'},
        CLI_REGISTRY_LONG_OPTIONS,
        {NULL, 0, NULL, 0},
    };
    ctx->opts = (obi_lifecycle_options)OBI_LIFECYCLE_OPTIONS_INIT;
    ctx->tail = -1;
    cli_registry_init(&ctx->registry);
    ctx->opts.registry = &ctx->registry.opts;
    const char *secrets_dir = NULL;
    /* which command takes which flag */
    const char *own = !strcmp(name, "ps")     ? "j"
                      : !strcmp(name, "logs") ? "fnT"
                      : !strcmp(name, "down") ? "v"
                                              : "";
    int c;
    optind = 1;
    while ((c = getopt_long(argc, argv, "fv", options, NULL)) != -1) {
        char *end = NULL;
        int handled = cli_registry_option(&ctx->registry, c, optarg);
        if (handled >= 0) {
            if (handled > 0)
                return handled;
            continue;
        }
        if (strchr("jfnTv", c) && !strchr(own, c))
            return cli_failf("service %s: unknown option %s", name, argv[optind - 1]);
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
        case 'j':
            ctx->json = true;
            break;
        case 'f':
            ctx->follow = true;
            break;
        case 'n': {
            unsigned long long lines = 0;
            if (!obi_parse_decimal(optarg, 100000000, &lines))
                return cli_failf("--tail: expected a number of lines, got \"%s\"", optarg);
            ctx->tail = (long)lines;
            break;
        }
        case 'T':
            ctx->timestamps = true;
            break;
        case 'v':
            ctx->opts.volumes = true;
            break;
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

typedef int (*lifecycle_fn)(lifecycle_context *ctx, obi_error **err);

/* Opens the context, runs fn with progress printed, closes. */
static int run_lifecycle(int argc, char **argv, const char *name, lifecycle_fn fn)
{
    lifecycle_context ctx = {0};
    int status = lifecycle_context_open(&ctx, argc, argv, name);
    if (status == 0) {
        obi_error *err = NULL;
        ctx.opts.report = print_report;
        if (fn(&ctx, &err) < 0)
            status = cli_fail(err);
    }
    lifecycle_context_clear(&ctx);
    return status;
}

static int do_up(lifecycle_context *ctx, obi_error **err)
{
    print_notices(ctx->deployment, ctx->opts.service);
    return obi_lifecycle_up(ctx->deployment, &ctx->opts, err);
}

static int do_down(lifecycle_context *ctx, obi_error **err)
{
    return obi_lifecycle_down(ctx->deployment, &ctx->opts, err);
}

static int do_stop(lifecycle_context *ctx, obi_error **err)
{
    return obi_lifecycle_stop(ctx->deployment, &ctx->opts, false, err);
}

static int do_restart(lifecycle_context *ctx, obi_error **err)
{
    return obi_lifecycle_stop(ctx->deployment, &ctx->opts, true, err);
}

static int service_up(int argc, char **argv)
{
    return run_lifecycle(argc, argv, "up", do_up);
}

static int service_down(int argc, char **argv)
{
    return run_lifecycle(argc, argv, "down", do_down);
}

static int service_stop(int argc, char **argv)
{
    return run_lifecycle(argc, argv, "stop", do_stop);
}

static int service_restart(int argc, char **argv)
{
    return run_lifecycle(argc, argv, "restart", do_restart);
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

/* The supervisor's word for a replica: its state, and for jobs and cron what ran. */
static void format_detail(const obi_replica_status *s, char *out, size_t len)
{
    out[0] = 0;
    if (!s->supervised)
        return;
    const obi_supervision *v = &s->supervision;
    size_t used = 0;
#define ADD(...)                                                                                   \
    do {                                                                                           \
        int n_ = snprintf(out + used, len - used, __VA_ARGS__);                                    \
        if (n_ > 0)                                                                                \
            used = (size_t)n_ < len - used ? used + (size_t)n_ : len - 1;                          \
    } while (0)
    ADD("%s", v->state);
    if (v->restarts)
        ADD(", %u restart%s", v->restarts, v->restarts == 1 ? "" : "s");
    if (s->service->rtype != OBI_RTYPE_SERVICE)
        ADD(", %u run%s", v->runs, v->runs == 1 ? "" : "s");
    if (s->state == OBI_REPLICA_STOPPED && s->finished_ms > s->started_ms && s->started_ms)
        ADD(", ran %.1f s", (double)(s->finished_ms - s->started_ms) / 1000.0);
    if (v->next_ms) {
        time_t next = (time_t)(v->next_ms / 1000);
        struct tm tm;
        char when[32];
        strftime(when, sizeof when, "%H:%M:%SZ", gmtime_r(&next, &tm));
        ADD(", next %s", when);
    }
    if (v->note[0])
        ADD(": %s", v->note);
#undef ADD
}

static json_t *status_json(const obi_replica_status *s)
{
    json_t *o = json_object();
    if (!o)
        return NULL;
    json_object_set_new(o, "id", json_string(s->id));
    json_object_set_new(o, "service", json_string(s->service->name));
    json_object_set_new(o, "replica", json_integer(s->replica));
    json_object_set_new(o, "status", json_string(obi_replica_state_name(s->state)));
    json_object_set_new(o, "pid", s->pid > 0 ? json_integer(s->pid) : json_null());
    json_object_set_new(o, "exit_code", s->has_exit ? json_integer(s->exit_code) : json_null());
    json_object_set_new(o, "signal",
                        s->has_exit && s->signal ? json_integer(s->signal) : json_null());
    json_object_set_new(o, "duration_ms",
                        s->state == OBI_REPLICA_STOPPED && s->started_ms &&
                                s->finished_ms >= s->started_ms
                            ? json_integer(s->finished_ms - s->started_ms)
                            : json_null());
    json_object_set_new(o, "health",
                        json_string(s->supervised ? s->supervision.health : "unknown"));
    if (s->supervised) {
        json_object_set_new(o, "supervisor_state", json_string(s->supervision.state));
        json_object_set_new(o, "restarts", json_integer(s->supervision.restarts));
        json_object_set_new(o, "runs", json_integer(s->supervision.runs));
        json_object_set_new(o, "next_run_ms",
                            s->supervision.next_ms ? json_integer(s->supervision.next_ms)
                                                   : json_null());
        json_object_set_new(o, "note", json_string(s->supervision.note));
    }
    if (s->foreign)
        json_object_set_new(o, "foreign_bundle", json_string(s->bundle));
    return o;
}

static int do_ps(lifecycle_context *ctx, obi_error **err)
{
    obi_replica_status *statuses = NULL;
    size_t count = 0;
    int r = obi_lifecycle_ps(ctx->deployment, &ctx->opts, &statuses, &count, err);
    if (r < 0)
        return r;
    cleanup_free char *data_dir =
        ctx->opts.data_dir ? strdup(ctx->opts.data_dir) : obi_default_data_dir();
    int supervisor_pid = 0;
    bool alive = data_dir && obi_supervisor_alive(data_dir, ctx->deployment->name, &supervisor_pid);
    if (ctx->json) {
        cleanup_json json_t *doc = json_object();
        json_t *list = json_array();
        for (size_t i = 0; doc && list && i < count; i++)
            json_array_append_new(list, status_json(&statuses[i]));
        if (doc && list) {
            json_object_set_new(doc, "deployment", json_string(ctx->deployment->name));
            json_object_set_new(doc, "supervisor",
                                alive ? json_integer(supervisor_pid) : json_null());
            json_object_set_new(doc, "replicas", list);
        }
        if (!doc || !list || json_dumpf(doc, stdout, JSON_INDENT(2)) < 0)
            r = obi_error_set(err, -EIO, "write to stdout: %s", strerror(errno));
        putchar('\n');
    } else {
        printf("%-24s %-9s %-8s %-10s %-14s %s\n", "CONTAINER", "STATUS", "PID", "HEALTH", "EXIT",
               "SUPERVISOR");
        for (size_t i = 0; i < count; i++) {
            const obi_replica_status *s = &statuses[i];
            char pid[16], exit_text[48], detail[256];
            snprintf(pid, sizeof pid, s->pid > 0 ? "%d" : "-", s->pid);
            format_exit(s, exit_text, sizeof exit_text);
            format_detail(s, detail, sizeof detail);
            printf("%-24s %-9s %-8s %-10s %-14s %s", s->id, obi_replica_state_name(s->state), pid,
                   s->supervised ? s->supervision.health : "-", exit_text,
                   detail[0] ? detail : "-");
            if (s->foreign)
                printf("  (not this deployment's: bundle %s)", s->bundle);
            putchar('\n');
        }
        if (!alive)
            printf("(no supervisor runs for %s: nothing to watch, or `service up` starts one)\n",
                   ctx->deployment->name);
    }
    if (r == 0 && fflush(stdout) != 0)
        r = obi_error_set(err, -EIO, "write to stdout: %s", strerror(errno));
    obi_replica_status_free(statuses, count);
    return r;
}

static int service_ps(int argc, char **argv)
{
    lifecycle_context ctx = {0};
    int status = lifecycle_context_open(&ctx, argc, argv, "ps");
    obi_error *err = NULL;
    if (status == 0 && do_ps(&ctx, &err) < 0)
        status = cli_fail(err);
    lifecycle_context_clear(&ctx);
    return status;
}

/* One log being printed: its stream, the "ID | " prefix, a partial last line. */
typedef struct log_stream {
    FILE *file;
    const char *prefix; /* NULL: none */
    bool timestamps;    /* keep the monitor's time at the start of each line */
} log_stream;

/* The length of the monitor's "2026-12-03T12:06:01.123456Z " at the start of line, or 0. */
static size_t stamp_len(const char *line, size_t len)
{
    static const char shape[] = "dddd-dd-ddTdd:dd:dd.ddddddZ ";
    size_t n = sizeof shape - 1;
    if (len < n)
        return 0;
    for (size_t i = 0; i < n; i++)
        if (shape[i] == 'd' ? !isdigit((unsigned char)line[i]) : line[i] != shape[i])
            return 0;
    return n;
}

/* Prints what is left in the stream, line by line, without the monitor's time at the start of
 * each line unless --timestamps. Returns false on a write error. */
static bool log_print_available(log_stream *ls)
{
    cleanup_free char *line = NULL;
    size_t cap = 0;
    ssize_t len;
    clearerr(ls->file);
    while ((len = getline(&line, &cap, ls->file)) > 0) {
        size_t skip = ls->timestamps ? 0 : stamp_len(line, (size_t)len);
        if (ls->prefix)
            printf("%s | ", ls->prefix);
        fwrite(line + skip, 1, (size_t)len - skip, stdout);
        if (line[len - 1] != '\n')
            putchar('\n');
    }
    return fflush(stdout) == 0;
}

/* Positions the stream at the start of its last `tail` lines (a final newline ends the last
 * line rather than starting another). */
static void log_seek_tail(FILE *file, long tail)
{
    struct stat st;
    if (tail < 0 || fstat(fileno(file), &st) < 0)
        return;
    off_t end = st.st_size, pos = end;
    long seen = 0;
    char chunk[4096];
    while (tail > 0 && pos > 0) {
        size_t take = pos < (off_t)sizeof chunk ? (size_t)pos : sizeof chunk;
        pos -= (off_t)take;
        if (fseeko(file, pos, SEEK_SET) < 0 || fread(chunk, 1, take, file) != take)
            break;
        for (size_t i = take; i-- > 0;) {
            off_t at = pos + (off_t)i;
            if (chunk[i] == '\n' && at != end - 1 && ++seen == tail) {
                fseeko(file, at + 1, SEEK_SET);
                return;
            }
        }
    }
    fseeko(file, tail == 0 ? end : 0, SEEK_SET);
}

static volatile sig_atomic_t logs_interrupted;
static void logs_on_signal(int sig)
{
    (void)sig;
    logs_interrupted = 1;
}

static int do_logs(lifecycle_context *ctx, obi_error **err)
{
    cleanup_free char *data_dir =
        ctx->opts.data_dir ? strdup(ctx->opts.data_dir) : obi_default_data_dir();
    cleanup_free obi_replica_ref *plan = NULL;
    size_t count = 0;
    if (!data_dir)
        return obi_error_oom(err);
    int r = obi_lifecycle_plan(ctx->deployment, ctx->opts.service, ctx->opts.replica, false,
                               OBI_PLAN_START, &plan, &count, err);
    if (r < 0)
        return r;
    log_stream *streams = calloc(count ? count : 1, sizeof *streams);
    obi_replica_paths *paths = calloc(count ? count : 1, sizeof *paths);
    if (!streams || !paths) {
        free(streams);
        free(paths);
        return obi_error_oom(err);
    }
    for (size_t i = 0; r == 0 && i < count; i++) {
        if ((r = obi_replica_paths_init(&paths[i], data_dir, ctx->deployment->name,
                                        plan[i].service->name, plan[i].replica, err)) < 0)
            break;
        streams[i].prefix = ctx->opts.replica ? NULL : paths[i].id;
        streams[i].timestamps = ctx->timestamps;
        streams[i].file = fopen(paths[i].log, "re");
        if (!streams[i].file && (errno != ENOENT || ctx->opts.replica))
            r = obi_error_set_errno(err, errno, "log %s", paths[i].log);
        else if (streams[i].file)
            log_seek_tail(streams[i].file, ctx->tail);
    }
    for (size_t i = 0; r == 0 && i < count; i++)
        if (streams[i].file && !log_print_available(&streams[i]))
            r = obi_error_set(err, -EIO, "write to stdout: %s", strerror(errno));
    if (r == 0 && ctx->follow) {
        /* follow: poll the files (and pick up logs that appear) until interrupted */
        signal(SIGINT, logs_on_signal);
        signal(SIGTERM, logs_on_signal);
        while (r == 0 && !logs_interrupted) {
            struct timespec ts = {0, 200 * 1000000};
            nanosleep(&ts, NULL);
            for (size_t i = 0; r == 0 && i < count; i++) {
                if (!streams[i].file)
                    streams[i].file = fopen(paths[i].log, "re");
                if (streams[i].file && !log_print_available(&streams[i]))
                    r = obi_error_set(err, -EIO, "write to stdout: %s", strerror(errno));
            }
        }
    }
    for (size_t i = 0; i < count; i++) {
        if (streams[i].file)
            fclose(streams[i].file);
        obi_replica_paths_clear(&paths[i]);
    }
    free(streams);
    free(paths);
    return r;
}

static int service_logs(int argc, char **argv)
{
    lifecycle_context ctx = {0};
    int status = lifecycle_context_open(&ctx, argc, argv, "logs");
    obi_error *err = NULL;
    if (status == 0 && do_logs(&ctx, &err) < 0)
        status = cli_fail(err);
    lifecycle_context_clear(&ctx);
    return status;
}

/* ocibuild service ls [--data-dir DIR]: the deployments with state, and their supervisors. */
static int service_ls(int argc, char **argv)
{
    static const struct option options[] = {{"data-dir", required_argument, NULL, 'd'},
                                            {NULL, 0, NULL, 0}};
    const char *data_dir_arg = NULL;
    int c;
    optind = 1;
    while ((c = getopt_long(argc, argv, "", options, NULL)) != -1) {
        if (c != 'd')
            return cli_failf("usage: ocibuild service ls [--data-dir DIR]");
        data_dir_arg = optarg;
    }
    if (optind != argc)
        return cli_failf("usage: ocibuild service ls [--data-dir DIR]");
    cleanup_free char *data_dir = data_dir_arg ? strdup(data_dir_arg) : obi_default_data_dir();
    if (!data_dir)
        return cli_failf("out of memory");
    obi_error *err = NULL;
    cleanup_strv char **names = NULL;
    if (obi_lifecycle_list(data_dir, &names, &err) < 0)
        return cli_fail(err);
    printf("%-32s %-12s %s\n", "DEPLOYMENT", "SUPERVISOR", "REPLICAS");
    for (size_t i = 0; names[i]; i++) {
        int pid = 0;
        char sup[16] = "-";
        if (obi_supervisor_alive(data_dir, names[i], &pid))
            snprintf(sup, sizeof sup, "%d", pid);
        cleanup_free char *dir = NULL;
        size_t replicas = 0;
        if (asprintf(&dir, "%s/services/%s", data_dir, names[i]) >= 0) {
            cleanup_dir DIR *d = opendir(dir);
            struct dirent *de;
            while (d && (de = readdir(d)))
                replicas += strstr(de->d_name, "-rep-") != NULL;
        }
        printf("%-32s %-12s %zu\n", names[i], sup, replicas);
    }
    return fflush(stdout) == 0 ? 0 : cli_failf("write to stdout: %s", strerror(errno));
}

/* ocibuild service exec FILE.yaml SERVICE [--replica N] [--data-dir DIR] [--runtime R] [--]
 * CMD...: the runtime's exec in the replica, with a terminal when stdin is one, or ocibuild's
 * own where the runtime cannot enter (obi_lifecycle_exec); exits with the command's code. */
static int service_exec(int argc, char **argv)
{
    const char *usage = "usage: ocibuild service exec FILE.yaml SERVICE [--replica N] "
                        "[--data-dir DIR] [--runtime NAME|PATH] [--] CMD...";
    if (argc < 4)
        return cli_failf("%s", usage);
    const char *file = argv[1], *name = argv[2];
    unsigned long long replica = 1;
    const char *data_dir_arg = NULL, *runtime_name = NULL;
    int i = 3;
    for (; i < argc; i++) {
        if (!strcmp(argv[i], "--")) {
            i++;
            break;
        }
        if (!strcmp(argv[i], "--replica") && i + 1 < argc) {
            if (!obi_parse_decimal(argv[++i], 1024, &replica) || replica == 0)
                return cli_failf("--replica: expected a number from 1, got \"%s\"", argv[i]);
        } else if (!strcmp(argv[i], "--data-dir") && i + 1 < argc) {
            data_dir_arg = argv[++i];
        } else if (!strcmp(argv[i], "--runtime") && i + 1 < argc) {
            runtime_name = argv[++i];
        } else {
            break;
        }
    }
    if (i >= argc)
        return cli_failf("%s", usage);
    obi_error *err = NULL;
    cleanup_deployment obi_deployment *deployment = NULL;
    if (obi_deployment_load(file, &deployment, &err) < 0)
        return cli_fail(err);
    const obi_service *svc = obi_deployment_find(deployment, name);
    if (!svc)
        return cli_failf("%s: no service \"%s\"", file, name);
    if (replica > svc->replicas)
        return cli_failf("service %s has %u replica%s, not %llu", name, svc->replicas,
                         svc->replicas == 1 ? "" : "s", replica);
    obi_lifecycle_options opts = OBI_LIFECYCLE_OPTIONS_INIT;
    opts.data_dir = data_dir_arg;
    opts.runtime = runtime_name;
    opts.service = name;
    opts.replica = (unsigned)replica;
    bool tty = isatty(STDIN_FILENO) && isatty(STDOUT_FILENO);
    int exit_code = 0;
    if (obi_lifecycle_exec(deployment, &opts, argv + i, tty, &exit_code, &err) < 0) {
        int status = cli_fail(err);
        return exit_code ? exit_code : status; /* 127: the command could not be executed */
    }
    return exit_code;
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
    {"ps", service_ps, "show each replica: state, pid, health, exit code, the supervisor's view",
     LIFECYCLE_USAGE " [--json]"},
    {"logs", service_logs, "print a replica's log (all replicas, prefixed, without --replica)",
     LIFECYCLE_USAGE " [-f|--follow] [--tail N] [--timestamps]"},
    {"exec", service_exec, "run a command in a running replica (a terminal when stdin is one)",
     "FILE.yaml SERVICE [--replica N] [--data-dir DIR] [--runtime NAME|PATH] [--] CMD..."},
    {"stop", service_stop, "stop replicas and keep them stopped (the supervisor leaves them)",
     LIFECYCLE_USAGE},
    {"restart", service_restart, "stop and start replicas again", LIFECYCLE_USAGE},
    {"ls", service_ls, "list the deployments with state here and their supervisors",
     "[--data-dir DIR]"},
    {"down", service_down,
     "stop (stop_signal, grace, SIGKILL) and remove replicas; -v: named volumes too",
     LIFECYCLE_USAGE " [-v|--volumes]"},
};

/* A rootless user's holders and slirp4netns whose data dir was deleted under them go with any
 * service command (service_rootless_net.h); the rootful networks have their own sweep in up. */
static void sweep_rootless_networks(void)
{
    /* a marker in our own environment would pass to the monitors and supervisors we start */
    unsetenv(OBI_ROOTLESS_NET_MARKER);
    if (!obi_service_rootless())
        return;
    unsigned killed = 0;
    obi_error *err = NULL;
    if (obi_rootless_net_sweep(&killed, &err) < 0)
        fprintf(stderr, "ocibuild: warning: sweep of rootless networks: %s\n", err->message);
    else if (killed)
        fprintf(stderr,
                "ocibuild: stopped %u network process%s (holder, slirp4netns) of a rootless "
                "deployment whose data dir is gone\n",
                killed, killed == 1 ? "" : "es");
    obi_error_free(err);
}

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
        sweep_rootless_networks();
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
