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

#include "ocibuild/oci_build.h"
#include "ocibuild/store.h"

typedef struct cli_builder_args {
    const char *store_url;
    const char *blob_url;
    const char *directory_url;
    const char *build_url;
    obi_oci_build_options oci;
} cli_builder_args;

#define CLI_BUILDER_ARGS_INIT                                                                      \
    {                                                                                              \
        NULL, NULL, NULL, NULL, OBI_OCI_BUILD_OPTIONS_INIT                                         \
    }

/* getopt codes of the builder options (commands number their own options above this). */
enum { CLI_BUILDER_OPT_FIRST = 256, CLI_BUILDER_OPT_LAST = 269 };
/* The builder's long options, to be copied into a command's option table. */
extern const struct option cli_builder_options[];
extern const size_t cli_builder_options_count;
/* Usage text of the builder options (one indented block). */
extern const char cli_builder_usage[];

/* Fills table with the builder options, then extra (n_extra entries), then --help ('h') and
 * the terminating zero entry; table must hold cli_builder_options_count + n_extra + 2. */
void cli_builder_option_table(struct option *table, const struct option *extra, size_t n_extra);

/* Handles a getopt code from cli_builder_options: 0 when handled, 2 (the exit code) after
 * printing an error for a bad value. */
int cli_builder_handle_option(int code, const char *arg, cli_builder_args *args);

/* Opens the store from --store/--blob-service/--directory-service (default store otherwise). */
int cli_builder_open_store(const cli_builder_args *args, obi_store **out, obi_error **err);
/* Installs the cancelling signal handlers and opens the build service. */
int cli_builder_open_service(cli_builder_args *args, obi_store *store, obi_build_service **out,
                             obi_error **err);
/* After a failed build: says so when a signal interrupted it. */
void cli_builder_note_interruption(obi_error **err, int code);
/* Runs req on the service, its log on stderr as it comes: the local builder's own callback, or,
 * for a daemon (grpc+ URLs), its streamed build events (docs/rpc.md "Build events"). */
int cli_builder_do_build(obi_build_service *service, const obi_build_request *req, obi_build **out,
                         obi_error **err);

/* Parses a non-negative integer option; prints and returns 2 when it is not one. */
int cli_parse_unsigned(const char *text, const char *what, unsigned *out);

#endif
