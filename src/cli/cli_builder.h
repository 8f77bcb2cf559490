/*
 * What `ocibuild build` and `ocibuild nix-build` share: the store and builder options, opening
 * the store and the build service (the local OCI builder unless --build-service is given), the
 * build log streamed to stderr, and SIGINT/SIGTERM/SIGHUP turned into cancellation (the builder
 * kills and removes the container and the bundle before the command exits).
 */
#ifndef OCIBUILD_CLI_BUILDER_H
#define OCIBUILD_CLI_BUILDER_H

#include <getopt.h>
#include <stdio.h>

#include "ocibuild/log_level.h"
#include "ocibuild/oci_build.h"
#include "ocibuild/service_addrs.h"
#include "ocibuild/store.h"

typedef struct cli_builder_args {
    obi_service_flags flags;   /* --store, --blob-service, --directory-service, --build-service */
    obi_service_addrs addrs;   /* where they are, flags and environment resolved (open_store) */
    bool rootful;              /* --rootful: not rootless even when not run as root */
    obi_log_level log_level;   /* -q error, info by default, -v debug */
    const char *root;          /* --root: keep the outputs as this root (cli_add_root) */
    bool materialize_progress; /* a progress line while a build's inputs are materialized
                                * (one build at a time: the line is one) */
    obi_oci_build_options oci;
} cli_builder_args;

#define CLI_BUILDER_ARGS_INIT                                                                      \
    {                                                                                              \
        {NULL, NULL, NULL, NULL}, {NULL, NULL, NULL}, false, OBI_LOG_INFO, NULL, false,            \
            OBI_OCI_BUILD_OPTIONS_INIT                                                             \
    }
void cli_builder_args_clear(cli_builder_args *args);
#define cleanup_builder_args __attribute__((cleanup(cli_builder_args_clear)))

/* getopt codes of the builder options (commands number their own options above this). */
enum { CLI_BUILDER_OPT_FIRST = 256, CLI_BUILDER_OPT_LAST = 275 };
/* getopt's short options of a builder command: -h, -q, -v. */
#define CLI_BUILDER_SHORT_OPTIONS "hqv"
/* The builder's long options, to be copied into a command's option table. */
extern const struct option cli_builder_options[];
extern const size_t cli_builder_options_count;
/* Usage text of the builder options (one indented block). */
extern const char cli_builder_usage[];

/* Fills table with the builder options, then extra (n_extra entries), then --help ('h') and
 * the terminating zero entry; table must hold cli_builder_options_count + n_extra + 2. */
void cli_builder_option_table(struct option *table, const struct option *extra, size_t n_extra);

/* Whether a getopt code is a builder option (the long ones, -q, -v). */
bool cli_builder_is_option(int code);
/* Handles a getopt code from cli_builder_options: 0 when handled, CLI_EXIT_USAGE after
 * printing an error for a bad value. */
int cli_builder_handle_option(int code, const char *arg, cli_builder_args *args);
/* "ocibuild: " + the text on stderr, when the log level is debug (-v). */
void cli_builder_debug(const cli_builder_args *args, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

/* Resolves where the services are (service_addrs.h: flags, then the environment) and opens the
 * store. */
int cli_builder_open_store(cli_builder_args *args, obi_store **out, obi_error **err);
/* Installs the cancelling signal handlers and opens the build service: the one resolved by
 * cli_builder_open_store, else the local OCI builder (rootless when not run as root, unless
 * --rootful). */
int cli_builder_open_service(cli_builder_args *args, obi_store *store, obi_build_service **out,
                             obi_error **err);
/* After a failed build: prints err (saying so when a signal interrupted it) and returns the
 * exit code for code: 128 + the signal, 100 build failed, 101 timed out, 102 hash mismatch,
 * else 1. */
int cli_builder_fail(obi_error *err, int code);
/* Runs req on the service, its log on stderr as it comes (unless -q): the local builder's own
 * callback, or, for a daemon (grpc+ URLs), its streamed build events (docs/rpc.md "Build
 * events"). */
int cli_builder_do_build(const cli_builder_args *args, obi_build_service *service,
                         const obi_build_request *req, obi_build **out, obi_error **err);

/* Parses a non-negative integer option; prints and returns CLI_EXIT_USAGE when it is not one. */
int cli_parse_unsigned(const char *text, const char *what, unsigned *out);

#endif
