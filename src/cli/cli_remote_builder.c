/*
 * ocibuild remote-builder [--write] [--path-info URL] [--cores N] [builder options]: a Nix
 * remote builder. Speaks Nix's serve protocol on stdin/stdout as `nix-store --serve [--write]`
 * does, for an ssh forced command (docs/farm.md); without --write it only answers questions.
 * --serve is accepted and ignored, so that a client's `remote-program` may name this command.
 * Stdout belongs to the protocol: it is moved to a private descriptor first and fd 1 becomes a
 * copy of stderr, so nothing else (build logs, a child's stray output) can corrupt the stream.
 * A thin layer over obi_nix_serve (src/nix/nix_serve.c); builder options as `ocibuild build`.
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
#include "ocibuild/cleanup.h"
#include "ocibuild/nix_serve.h"

static void usage(FILE *out)
{
    fprintf(out,
            "usage: ocibuild remote-builder [OPTIONS]\n\n"
            "Serves Nix's serve protocol (nix-store --serve) on stdin/stdout.\n\noptions:\n"
            "  --write                     allow imports and builds (nix-store --serve --write)\n"
            "  --serve                     ignored (nix-store's spelling)\n"
            "  --path-info URL             what is valid here: a directory, or a daemon\n"
            "                              (grpc+unix://, grpc+http(s)://)\n"
            "  --cores N                   NIX_BUILD_CORES (default: online CPUs)\n%s",
            cli_builder_usage);
}

/* The protocol's own descriptor for stdout, and fd 1 pointed at stderr. */
static int take_stdout(void)
{
    int fd = fcntl(STDOUT_FILENO, F_DUPFD_CLOEXEC, 3);
    if (fd < 0 || dup2(STDERR_FILENO, STDOUT_FILENO) < 0)
        return -1;
    return fd;
}

/* A client that hangs up mid-build must not kill this process with SIGPIPE at its next write
 * (a log line, the protocol): killed so, it left the build's container running (a foreground
 * crun outlives its caller), seen in test_farm.sh when the client stopped reading at its log
 * limit. The write fails with EPIPE instead, and the hangup watch (nix_serve.c) cancels the
 * build, which kills and removes the container. A handler, not SIG_IGN: what this process
 * executes (the runtime, and the build through it) gets the default disposition back. */
static void on_sigpipe(int sig)
{
    (void)sig;
}

int cli_remote_builder(int argc, char **argv)
{
    enum { OPT_WRITE = CLI_BUILDER_OPT_LAST + 1, OPT_SERVE, OPT_PATH_INFO, OPT_CORES };
    static const struct option serve_options[] = {
        {"write", no_argument, NULL, OPT_WRITE},
        {"serve", no_argument, NULL, OPT_SERVE},
        {"path-info", required_argument, NULL, OPT_PATH_INFO},
        {"cores", required_argument, NULL, OPT_CORES},
    };
    struct option options[32];
    cli_builder_option_table(options, serve_options, OBI_ARRAY_SIZE(serve_options));

    cleanup_builder_args cli_builder_args args = CLI_BUILDER_ARGS_INIT;
    const char *path_info_url = NULL;
    long cpus = sysconf(_SC_NPROCESSORS_ONLN);
    obi_nix_serve_options serve = {.build_cores = cpus > 0 ? (unsigned)cpus : 1};
    int c;
    optind = 1;
    while ((c = getopt_long(argc, argv, CLI_BUILDER_SHORT_OPTIONS, options, NULL)) != -1) {
        switch (c) {
        case OPT_WRITE:
            serve.write_allowed = true;
            break;
        case OPT_SERVE:
            break;
        case OPT_PATH_INFO:
            path_info_url = optarg;
            break;
        case OPT_CORES:
            if (cli_parse_unsigned(optarg, "--cores", &serve.build_cores))
                return CLI_EXIT_USAGE;
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
    if (optind != argc) {
        usage(stderr);
        return CLI_EXIT_USAGE;
    }
    struct sigaction sa = {0};
    sa.sa_handler = on_sigpipe;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGPIPE, &sa, NULL);
    cleanup_close int protocol_out = take_stdout();
    if (protocol_out < 0)
        return cli_failf("cannot set stdout aside for the protocol: %s", strerror(errno));

    obi_error *err = NULL;
    cleanup_store obi_store *store = NULL;
    if (cli_builder_open_store(&args, &store, &err) < 0)
        return cli_fail(err);
    cleanup_nix_path_info_store obi_nix_path_info_store *path_infos = NULL;
    if (obi_nix_path_info_store_open_url(path_info_url, &path_infos, &err) < 0)
        return cli_fail(err);
    cleanup_build_service obi_build_service *service = NULL;
    if (cli_builder_open_service(&args, store, &service, &err) < 0)
        return cli_fail(err);

    serve.store = store;
    serve.builder = service;
    serve.path_infos = path_infos;
    int r = obi_nix_serve(STDIN_FILENO, protocol_out, &serve, &err);
    return r < 0 ? cli_builder_fail(err, r) : 0;
}
