/*
 * The CLI's internal interface: one function per subcommand (one file each), and the helpers
 * they share for printing errors. The CLI is the only layer that prints or exits.
 */
#ifndef OCIBUILD_CLI_H
#define OCIBUILD_CLI_H

#include <stdbool.h>

#include "ocibuild/error.h"
#include "ocibuild/request.h"
#include "ocibuild/store.h"
#include "ocibuild/store_roots.h"

/* Exit codes, Nix's where the two overlap (README.md "Exit codes"). */
enum {
    CLI_EXIT_OK = 0,
    CLI_EXIT_FAILURE = 1,         /* a usage or set-up error, or any other failure */
    CLI_EXIT_BUILD_FAILED = 100,  /* the build ran (or its command could not start) and failed */
    CLI_EXIT_TIMED_OUT = 101,     /* the build ran past --timeout */
    CLI_EXIT_HASH_MISMATCH = 102, /* a fixed-output derivation's output has another hash */
    CLI_EXIT_SIGNAL_BASE = 128,   /* + the signal that interrupted a build: 130 for Ctrl-C */
};
#define CLI_EXIT_USAGE CLI_EXIT_FAILURE

/* The exit codes as --help lists them. */
extern const char cli_exit_codes_help[];

/* Each returns the process exit code. argv[0] is the subcommand name. */
int cli_hash(int argc, char **argv);
int cli_service(int argc, char **argv);
int cli_nar_hash(int argc, char **argv);
int cli_show_derivation(int argc, char **argv);
int cli_nix_build(int argc, char **argv);
int cli_remote_builder(int argc, char **argv);
int cli_store(int argc, char **argv);
/* store gc, store roots, store du (cli_store_gc.c); argv[0] is the store subcommand. */
int cli_store_gc(int argc, char **argv);
int cli_store_roots(int argc, char **argv);
int cli_store_du(int argc, char **argv);
/* The automatic gc: when $OCIBUILD_MIN_FREE is set and the file system of an on-disk store has
 * less available, collects as `store gc` does until $OCIBUILD_MAX_FREE is available (unset: all
 * garbage), saying so on stderr. Call it before anything of this process is pinned or written:
 * gc waits for writers. keep (n_keep nodes, may be 0) are pinned first; when it collected,
 * *kept (if not NULL) is that pin, to be freed once they are pinned elsewhere, else NULL. */
int cli_store_auto_gc(obi_store *store, const obi_node *keep, size_t n_keep, obi_store_pin **kept,
                      obi_error **err);
/* --root of build, nix-build and store import: NAME is the root STORE/gcroots/NAME; a path
 * (starting with '/', './' or '../') is an indirect root, a file there (store_roots.h). */
int cli_add_root(obi_store *store, const char *root, const obi_node *nodes, size_t n,
                 obi_error **err);
int cli_spec(int argc, char **argv);
int cli_build(int argc, char **argv);
int cli_daemon(int argc, char **argv);

/* Whether argv[1..] asks for help (-h or --help before any "--"). */
bool cli_help_requested(int argc, char **argv);

/* Prints "ocibuild: <message>" to stderr and returns 1 (0 is never returned). */
int cli_fail(obi_error *err);
int cli_failf(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

/* The gRPC layer, loaded on first use (cli_rpc.c): registers grpc+unix:// and grpc+http:// for
 * stores and build services (stubs that load the module), and loads it (once; later calls
 * return the same table). */
typedef struct obi_rpc_module obi_rpc_module;
int cli_rpc_register_schemes(obi_error **err);
int cli_rpc_load(const obi_rpc_module **out, obi_error **err);

/* Reads a protobuf-JSON BuildRequest from path ("-": stdin); errors are prefixed with path.
 * Does not validate. */
int cli_load_build_request(const char *path, obi_build_request **out, obi_error **err);

#endif
