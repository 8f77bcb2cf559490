/*
 * Where a client command's services are: the castore (blobs and directories) and the build
 * service, from its flags and the environment, tvix's variable names included. One rule for
 * `build`, `nix-build` and `store`, so that a daemon named once serves them all:
 *
 *   build service  --build-service, else $BUILD_SERVICE_ADDR, else $OCIBUILD_DAEMON, else none
 *                  (the local OCI builder)
 *   blobs          --blob-service, else --store, else $BLOB_SERVICE_ADDR, else the daemon the
 *                  build goes to (a grpc+ build service: its inputs must be in its own store),
 *                  else $OCIBUILD_DAEMON, else none (obi_store_open's default: $OCIBUILD_STORE,
 *                  else <data dir>/store)
 *   directories    the same with --directory-service and $DIRECTORY_SERVICE_ADDR
 *
 * $OCIBUILD_DAEMON is a URL (grpc+unix:///run/ocibuild.sock, grpc+http://host:port, ...) or the
 * absolute path of a unix socket. The daemon itself never reads these: it would serve itself.
 */
#ifndef OCIBUILD_SERVICE_ADDRS_H
#define OCIBUILD_SERVICE_ADDRS_H

#include "ocibuild/error.h"

typedef struct obi_service_addrs {
    char *blobs;       /* NULL: the default store */
    char *directories; /* NULL: the default store */
    char *build;       /* NULL: the local OCI builder */
} obi_service_addrs;

/* What the command line said (each NULL when not given). */
typedef struct obi_service_flags {
    const char *store;
    const char *blobs;
    const char *directories;
    const char *build;
} obi_service_flags;

/* Fills out by the rule above; free with obi_service_addrs_clear. */
int obi_service_addrs_resolve(const obi_service_flags *flags, obi_service_addrs *out,
                              obi_error **err);
void obi_service_addrs_clear(obi_service_addrs *addrs);

/* Where `ocibuild daemon` listens without --listen (and what ocibuild.socket names as root):
 * /run/ocibuild/daemon.sock for root, $XDG_RUNTIME_DIR/ocibuild/daemon.sock for anyone else
 * (-ENOENT naming the variable when it is unset). Caller frees. */
int obi_default_daemon_socket(char **out, obi_error **err);

#endif
