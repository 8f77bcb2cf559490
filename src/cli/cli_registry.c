/*
 * The registry options shared by the service subcommands (cli_registry.h).
 */
#include <string.h>

#include "cli.h"
#include "cli_registry.h"

void cli_registry_init(cli_registry *reg)
{
    memset(reg, 0, sizeof *reg);
    cli_layer_progress_init(&reg->progress, true);
    reg->opts.insecure_hosts = reg->insecure;
    reg->opts.progress = cli_layer_progress_report;
    reg->opts.progress_ctx = &reg->progress;
}

int cli_registry_option(cli_registry *reg, int c, const char *arg)
{
    switch (c) {
    case CLI_OPT_REGISTRY_AUTH:
        reg->opts.auth_file = arg;
        return 0;
    case CLI_OPT_INSECURE_REGISTRY:
        if (!*arg || strchr(arg, '/'))
            return cli_failf("--insecure-registry: expected HOST or HOST:PORT, got \"%s\"", arg);
        if (reg->opts.n_insecure_hosts == CLI_REGISTRY_MAX_INSECURE)
            return cli_failf("--insecure-registry: at most %d hosts", CLI_REGISTRY_MAX_INSECURE);
        reg->insecure[reg->opts.n_insecure_hosts++] = arg;
        return 0;
    default:
        return -1;
    }
}
