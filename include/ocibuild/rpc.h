/*
 * The gRPC layer (rpc.md): a server exposing tvix.castore.v1.{BlobService,DirectoryService} and
 * tvix.build.v1.BuildService over HTTP/2 (unix socket or TCP) with the gRPC C core, and clients
 * for the same services behind the obi_blob_service / obi_directory_service /
 * obi_build_service interfaces, registered as the grpc+unix:// and grpc+http:// schemes.
 * Status codes are mapped as docs/rpc.md describes.
 *
 * Linking: tests and benchmarks link this layer statically. The ocibuild executable does not
 * link it (libgrpc pulls ~50 shared libraries into every start-up): it loads the shared module
 * ocibuild-rpc.so on first use of a grpc+ URL or of `daemon` and calls it through the
 * obi_rpc_module table below (src/cli/cli_rpc.c, docs/rpc.md "Loading").
 */
#ifndef OCIBUILD_RPC_H
#define OCIBUILD_RPC_H

#include <stdint.h>

#include "ocibuild/build_service.h"
#include "ocibuild/error.h"
#include "ocibuild/store.h"
#include "ocibuild/url.h"

#define OBI_RPC_SCHEME_UNIX "grpc+unix"
#define OBI_RPC_SCHEME_HTTP "grpc+http"

/* Registers the grpc+unix and grpc+http schemes for stores and build services, so that
 * obi_store_open / obi_build_service_open accept them. Idempotent; call once at startup. */
int obi_rpc_init(obi_error **err);

/* Clients (normally reached through the URL openers). The URL scheme must be grpc+unix
 * (path of the socket) or grpc+http (host:port, no path). */
int obi_grpc_blob_service_open(const obi_url *url, obi_blob_service **out, obi_error **err);
int obi_grpc_directory_service_open(const obi_url *url, obi_directory_service **out,
                                    obi_error **err);
/* The store is unused: the remote builder has its own. */
int obi_grpc_build_service_open(const obi_url *url, obi_store *store, obi_build_service **out,
                                obi_error **err);

/* ---- server ---- */

typedef enum obi_log_level {
    OBI_LOG_ERROR = 0,
    OBI_LOG_WARN = 1,
    OBI_LOG_INFO = 2, /* one line per call */
    OBI_LOG_DEBUG = 3,
} obi_log_level;

/* Parses "error", "warn", "info", "debug". */
int obi_log_level_parse(const char *text, obi_log_level *out, obi_error **err);

/* Receives complete lines without the newline; called from worker threads. */
typedef void (*obi_log_fn)(void *ctx, obi_log_level level, const char *line);

typedef struct obi_rpc_server_options {
    /* Borrowed, must outlive the server; a NULL service is not served (UNIMPLEMENTED). */
    obi_blob_service *blobs;
    obi_directory_service *directories;
    obi_build_service *builds;
    unsigned castore_workers; /* 0: 16 threads for blob and directory calls */
    unsigned build_workers;   /* 0: 4 threads for builds (the service bounds builds too) */
    obi_log_level log_level;
    obi_log_fn log; /* NULL: no logging */
    void *log_ctx;
} obi_rpc_server_options;

typedef struct obi_rpc_server obi_rpc_server;

int obi_rpc_server_new(const obi_rpc_server_options *options, obi_rpc_server **out,
                       obi_error **err);
/* "unix:PATH", "unix:///ABS" or "HOST:PORT" (port 0 picks a free one: *port_out). Before start. */
int obi_rpc_server_listen(obi_rpc_server *server, const char *address, int *port_out,
                          obi_error **err);
int obi_rpc_server_start(obi_rpc_server *server, obi_error **err);
/* Stops accepting calls, lets running calls finish for up to grace_ms, then cancels them and
 * waits for the handlers. -ETIMEDOUT if handlers are still running grace_ms after the
 * cancellation (a build that does not stop): the server must then not be freed. */
int obi_rpc_server_shutdown(obi_rpc_server *server, unsigned grace_ms, obi_error **err);
/* Shuts down with no grace if still running. Accepts NULL. */
void obi_rpc_server_free(obi_rpc_server *server);
static inline void obi_rpc_server_freep(obi_rpc_server **s)
{
    obi_rpc_server_free(*s);
}
#define cleanup_rpc_server __attribute__((cleanup(obi_rpc_server_freep)))

/* ---- the loadable module's entry point ---- */

/* Bumped whenever the table below or a signature in it changes: a module built from other
 * sources than the executable is refused instead of called with the wrong arguments. */
#define OBI_RPC_MODULE_ABI 1
#define OBI_RPC_MODULE_SYMBOL "obi_rpc_module_table"

typedef struct obi_rpc_module {
    unsigned abi; /* OBI_RPC_MODULE_ABI of the module's sources */
    int (*blob_service_open)(const obi_url *url, obi_blob_service **out, obi_error **err);
    int (*directory_service_open)(const obi_url *url, obi_directory_service **out, obi_error **err);
    int (*build_service_open)(const obi_url *url, obi_store *store, obi_build_service **out,
                              obi_error **err);
    int (*log_level_parse)(const char *text, obi_log_level *out, obi_error **err);
    int (*server_new)(const obi_rpc_server_options *options, obi_rpc_server **out, obi_error **err);
    int (*server_listen)(obi_rpc_server *server, const char *address, int *port_out,
                         obi_error **err);
    int (*server_start)(obi_rpc_server *server, obi_error **err);
    int (*server_shutdown)(obi_rpc_server *server, unsigned grace_ms, obi_error **err);
    void (*server_free)(obi_rpc_server *server);
} obi_rpc_module;

/* The table ocibuild-rpc.so exports under OBI_RPC_MODULE_SYMBOL. */
extern const obi_rpc_module obi_rpc_module_table;

#endif
