/*
 * The registry options of `service up` and `service spec|bundle` (registry.h):
 * --registry-auth FILE, --insecure-registry HOST (repeatable), and the per-layer progress
 * line. One parser for every subcommand that may pull an image.
 */
#ifndef OCIBUILD_CLI_REGISTRY_H
#define OCIBUILD_CLI_REGISTRY_H

#include <getopt.h>
#include <stdbool.h>

#include "cli_progress.h"
#include "ocibuild/registry.h"

#define CLI_REGISTRY_MAX_INSECURE 16
#define CLI_OPT_REGISTRY_AUTH 0x1001
#define CLI_OPT_INSECURE_REGISTRY 0x1002
#define CLI_REGISTRY_LONG_OPTIONS                                                                  \
    {"registry-auth", required_argument, NULL, CLI_OPT_REGISTRY_AUTH},                             \
    {                                                                                              \
        "insecure-registry", required_argument, NULL, CLI_OPT_INSECURE_REGISTRY                    \
    }
#define CLI_REGISTRY_USAGE "[--registry-auth FILE] [--insecure-registry HOST]..."

typedef struct cli_registry {
    const char *insecure[CLI_REGISTRY_MAX_INSECURE];
    obi_registry_options opts; /* points into this struct: keep it where it is */
    cli_layer_progress progress;
} cli_registry;

void cli_registry_init(cli_registry *reg);
/* Handles getopt's c when it is one of the registry options: 0 handled, -1 not ours, or the
 * exit code (1) after printing the error. */
int cli_registry_option(cli_registry *reg, int c, const char *arg);

#endif
