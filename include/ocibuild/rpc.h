/*
 * The gRPC layer (rpc.md): a server exposing castore.v1.{BlobService,DirectoryService},
 * build.v1.BuildService and store.v1.PathInfoService under both package names, tvix.* and
 * snix.* (rpc.md "Generations"), over HTTP/2 (unix socket, TCP, TLS) with the gRPC C core, and
 * clients for the castore and build services (?api=tvix|snix) behind the obi_blob_service /
 * obi_directory_service / obi_build_service interfaces, registered as the grpc+unix://,
 * grpc+http:// and grpc+https:// schemes. Status codes are mapped as docs/rpc.md describes; who may
 * connect and the limits that keep clients from stalling or exhausting the server are in
 * docs/security.md.
 *
 * Linking: tests and benchmarks link this layer statically. The ocibuild executable does not
 * link it (libgrpc pulls ~50 shared libraries into every start-up): it loads the shared module
 * ocibuild-rpc.so on first use of a grpc+ URL or of `daemon` and calls it through the
 * obi_rpc_module table below (src/cli/cli_rpc.c, docs/rpc.md "Loading").
 */
#ifndef OCIBUILD_RPC_H
#define OCIBUILD_RPC_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "ocibuild/build_service.h"
#include "ocibuild/error.h"
#include "ocibuild/log_level.h"
#include "ocibuild/nix_path_info.h"
#include "ocibuild/store.h"
#include "ocibuild/url.h"

#define OBI_RPC_SCHEME_UNIX "grpc+unix"
#define OBI_RPC_SCHEME_HTTP "grpc+http"
#define OBI_RPC_SCHEME_HTTPS "grpc+https"

/* Environment variables a grpc+https:// URL falls back on when it has no ?ca=, ?cert=, ?key=
 * (PEM file paths: the CA that signed the server's certificate, and the client's certificate
 * and key for mutual TLS). */
#define OBI_RPC_ENV_CA "OCIBUILD_GRPC_CA"
#define OBI_RPC_ENV_CERT "OCIBUILD_GRPC_CERT"
#define OBI_RPC_ENV_KEY "OCIBUILD_GRPC_KEY"

/* Registers the grpc+unix, grpc+http and grpc+https schemes for stores, build services and
 * path-info stores, so that obi_store_open / obi_build_service_open /
 * obi_nix_path_info_store_open_url accept them. Idempotent; call once at startup. */
int obi_rpc_init(obi_error **err);

/* Clients (normally reached through the URL openers). The URL scheme must be grpc+unix
 * (path of the socket), grpc+http (host:port, no path) or grpc+https (host:port, TLS; query
 * parameters ca, cert, key as above). */
int obi_grpc_blob_service_open(const obi_url *url, obi_blob_service **out, obi_error **err);
int obi_grpc_directory_service_open(const obi_url *url, obi_directory_service **out,
                                    obi_error **err);
/* The store is unused: the remote builder has its own. */
int obi_grpc_build_service_open(const obi_url *url, obi_store *store, obi_build_service **out,
                                obi_error **err);
/* A daemon's tvix.store.v1.PathInfoService as a path-info store (nix_path_info.h). */
int obi_grpc_path_info_store_open(const obi_url *url, obi_nix_path_info_store **out,
                                  obi_error **err);

/* ---- server ---- */

/* Receives complete lines without the newline; called from worker threads. */
typedef void (*obi_log_fn)(void *ctx, obi_log_level level, const char *line);

typedef struct obi_rpc_server_options {
    /* Borrowed, must outlive the server; a NULL service is not served (UNIMPLEMENTED). */
    obi_blob_service *blobs;
    obi_directory_service *directories;
    obi_build_service *builds;
    /* tvix.store.v1.PathInfoService (needs blobs and directories too: Put checks that a
     * record's node is stored, CalculateNAR reads it). */
    obi_nix_path_info_store *path_infos;
    unsigned castore_workers; /* 0: 16 threads for blob and directory calls */
    unsigned build_workers;   /* 0: 16 threads for builds (the service bounds builds too) */
    obi_log_level log_level;
    obi_log_fn log; /* NULL: no logging */
    void *log_ctx;

    /* Limits (docs/rpc.md "Limits"; 0 picks the default). */
    unsigned idle_timeout_ms;  /* 0: 30 s; a call waiting this long on its client is cancelled */
    size_t max_message_bytes;  /* 0: 16 MiB; larger request messages: RESOURCE_EXHAUSTED */
    size_t max_inflight_bytes; /* 0: 512 MiB; the memory budget all calls share */

    /* Who may connect (docs/security.md "The daemon"). TLS: PEM files; with cert and key, TCP
     * listeners speak TLS; with client_ca too, only clients holding a certificate signed by it
     * get in. TCP without mutual TLS is refused on addresses other than loopback unless
     * insecure_tcp (then a warning is logged). */
    const char *tls_cert_file;
    const char *tls_key_file;
    const char *tls_client_ca_file;
    bool insecure_tcp;
    /* Unix sockets the server creates: mode 0600, or with use_socket_group 0660 and group
     * socket_gid. */
    bool use_socket_group;
    gid_t socket_gid;
    /* Trusted clients, the only ones whose PathInfo Put is taken (docs/security.md "Trusted
     * clients"): on unix sockets peers running as root, as the daemon's user or as one of
     * trusted_uids (borrowed); on TCP clients whose certificate the client CA verified (mutual
     * TLS). trust_everyone: every client that may connect. */
    const uid_t *trusted_uids;
    size_t n_trusted_uids;
    bool trust_everyone;
    /* snix.build.v1 DoBuild answers with BuildEvents unless the client asks otherwise: what
     * clients of snix's build-streaming branch expect, which call the same path as the unary
     * DoBuild and send nothing to tell them apart (docs/rpc.md "Build events"). */
    bool snix_build_events;
    /* Optional: called before each DoBuild runs its build (after the request checked out), from
     * the build's worker; a failure fails the call. What it puts in *hold is handed to
     * after_build once the build is over (the daemon's automatic gc, docs/store.md: a pin on
     * the request's inputs, which a client uploaded unpinned). */
    int (*before_build)(void *ctx, const obi_build_request *req, void **hold, obi_error **err);
    void (*after_build)(void *ctx, void *hold);
    void *before_build_ctx;
} obi_rpc_server_options;

typedef struct obi_rpc_server obi_rpc_server;

int obi_rpc_server_new(const obi_rpc_server_options *options, obi_rpc_server **out,
                       obi_error **err);
/* "unix:PATH", "unix:///ABS" or "HOST:PORT" (port 0 picks a free one: *port_out). Before start.
 * A unix socket is created with the options' mode and group (never more open, whatever the
 * umask) and removed by the shutdown; a live socket at that path is refused. */
int obi_rpc_server_listen(obi_rpc_server *server, const char *address, int *port_out,
                          obi_error **err);
/* Serves a socket someone else bound and listens on (systemd socket activation): a unix socket,
 * or a TCP one under the same rules as a TCP address (plain TCP only: gRPC cannot put TLS on an
 * adopted socket). The server owns fd from now on, even on failure. Before start. */
int obi_rpc_server_listen_fd(obi_rpc_server *server, int fd, obi_error **err);
int obi_rpc_server_start(obi_rpc_server *server, obi_error **err);
/* Stops accepting calls, lets running calls finish for up to grace_ms, then cancels them (their
 * builds are killed) and waits for the handlers. -ETIMEDOUT if handlers are still running 5 s
 * after the cancellation (a build that does not stop): the server must then not be freed. */
int obi_rpc_server_shutdown(obi_rpc_server *server, unsigned grace_ms, obi_error **err);
/* Shuts down with no grace if still running. Accepts NULL. */
void obi_rpc_server_free(obi_rpc_server *server);
static inline void obi_rpc_server_freep(obi_rpc_server **s)
{
    obi_rpc_server_free(*s);
}
#define cleanup_rpc_server __attribute__((cleanup(obi_rpc_server_freep)))

/* ---- the loadable module's entry point ---- */

/* The module's ABI: OBI_RPC_MODULE_ABI (in the generated ocibuild/rpc_abi.h, which only the
 * module's table and its loader include) is a digest of every public header and .proto file
 * without comments or spacing (scripts/rpc-abi.py), since the module takes the library's
 * functions, structs and constants from the executable. A module built from other headers than
 * the executable is refused instead of called with the wrong arguments or struct layouts. */
#define OBI_RPC_MODULE_ABI_LEN 32
#define OBI_RPC_MODULE_SYMBOL "obi_rpc_module_table"

typedef struct obi_rpc_module {
    /* First, and held in place (never a pointer), so that the table of any module, even one
     * from before the ABI was a digest, can be read this far and refused. */
    char abi[OBI_RPC_MODULE_ABI_LEN + 1];
    int (*blob_service_open)(const obi_url *url, obi_blob_service **out, obi_error **err);
    int (*directory_service_open)(const obi_url *url, obi_directory_service **out, obi_error **err);
    int (*build_service_open)(const obi_url *url, obi_store *store, obi_build_service **out,
                              obi_error **err);
    int (*path_info_store_open)(const obi_url *url, obi_nix_path_info_store **out, obi_error **err);
    int (*server_new)(const obi_rpc_server_options *options, obi_rpc_server **out, obi_error **err);
    int (*server_listen)(obi_rpc_server *server, const char *address, int *port_out,
                         obi_error **err);
    int (*server_listen_fd)(obi_rpc_server *server, int fd, obi_error **err);
    int (*server_start)(obi_rpc_server *server, obi_error **err);
    int (*server_shutdown)(obi_rpc_server *server, unsigned grace_ms, obi_error **err);
    void (*server_free)(obi_rpc_server *server);
} obi_rpc_module;

/* The table ocibuild-rpc.so exports under OBI_RPC_MODULE_SYMBOL. */
extern const obi_rpc_module obi_rpc_module_table;

#endif
