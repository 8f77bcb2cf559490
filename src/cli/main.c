/*
 * ocibuild: entry point. Dispatches to one subcommand per file (cli_*.c) through a table.
 */
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "cli.h"
#include "cli_version.h"

typedef struct command {
    const char *name;
    int (*run)(int argc, char **argv);
    const char *summary;
} command;

static const command COMMANDS[] = {
    {"build", cli_build, "run a BuildRequest in an OCI runtime, print the Build"},
    {"hash", cli_hash, "print BLAKE3 digests of files, like b3sum"},
    {"service", cli_service, "services from a deployment YAML (spec)"},
    {"nar-hash", cli_nar_hash, "print NAR hashes of paths (sha256:<nixbase32>), like nix-hash"},
    {"show-derivation", cli_show_derivation, "print .drv files as JSON, like nix show-derivation"},
    {"nix-build", cli_nix_build,
     "build a Nix .drv here; print its outputs' NAR hashes and references"},
    {"remote-builder", cli_remote_builder,
     "serve Nix's serve protocol on stdin/stdout: a Nix remote builder (ssh)"},
    {"store", cli_store, "import, export, list, verify and collect the castore (gc, roots, du)"},
    {"spec", cli_spec, "print the OCI config.json for a BuildRequest (JSON)"},
    {"daemon", cli_daemon, "serve the build, blob and directory services over gRPC"},
};

const char cli_exit_codes_help[] =
    "exit codes (Nix's where they overlap):\n"
    "  0    success\n"
    "  1    usage or set-up error, or any other failure\n"
    "  100  the build failed (its command exited non-zero, could not start, or left out an "
    "output)\n"
    "  101  the build timed out (--timeout)\n"
    "  102  nix-build: a fixed-output derivation's output has another hash than declared\n"
    "  130  interrupted by Ctrl-C (128 + the signal: 143 for SIGTERM, 129 for SIGHUP)\n";

static void usage(FILE *out)
{
    fprintf(out, "usage: ocibuild COMMAND [ARGS...]   (ocibuild COMMAND --help for each)\n"
                 "       ocibuild --version\n\ncommands:\n");
    for (size_t i = 0; i < sizeof COMMANDS / sizeof COMMANDS[0]; i++)
        fprintf(out, "  %-16s %s\n", COMMANDS[i].name, COMMANDS[i].summary);
    fprintf(out, "\n%s", cli_exit_codes_help);
}

bool cli_help_requested(int argc, char **argv)
{
    for (int i = 1; i < argc && strcmp(argv[i], "--"); i++)
        if (!strcmp(argv[i], "-h") || !strcmp(argv[i], "--help"))
            return true;
    return false;
}

int cli_fail(obi_error *err)
{
    fprintf(stderr, "ocibuild: %s\n", err && err->message ? err->message : "unknown error");
    obi_error_free(err);
    return 1;
}

int cli_failf(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    fputs("ocibuild: ", stderr);
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
    va_end(ap);
    return 1;
}

int main(int argc, char **argv)
{
    if (argc < 2) {
        usage(stderr);
        return CLI_EXIT_USAGE;
    }
    if (!strcmp(argv[1], "-h") || !strcmp(argv[1], "--help") || !strcmp(argv[1], "help")) {
        usage(stdout);
        return 0;
    }
    if (!strcmp(argv[1], "--version") || !strcmp(argv[1], "-V") || !strcmp(argv[1], "version")) {
        printf("ocibuild %s (git %s)\n", OBI_VERSION, OBI_GIT_DESCRIBE);
        return fflush(stdout) == 0 ? 0 : CLI_EXIT_FAILURE;
    }
    /* Backends living above the castore and build layers register their URL schemes (the gRPC
     * ones load their module only when such a URL is opened). */
    obi_error *err = NULL;
    if (cli_rpc_register_schemes(&err) < 0)
        return cli_fail(err);
    for (size_t i = 0; i < sizeof COMMANDS / sizeof COMMANDS[0]; i++)
        if (!strcmp(argv[1], COMMANDS[i].name))
            return COMMANDS[i].run(argc - 1, argv + 1);
    fprintf(stderr, "ocibuild: unknown command '%s'\n", argv[1]);
    usage(stderr);
    return CLI_EXIT_USAGE;
}
