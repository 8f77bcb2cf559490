/*
 * The build service interface (tvix.build.v1.BuildService): one operation, DoBuild. Backends,
 * chosen by URL (rpc.md): dummy:// (refuses), oci:///bundle/root?runtime=..&rootless=..&
 * max_builds=..&timeout=.. (local OCI builder), and grpc+unix:// / grpc+http:// (registered by
 * the rpc layer).
 *
 * Error codes a caller can act on: -EINVAL invalid request (message from validation),
 * OBI_EBUILD_FAILED the build ran and failed (message carries exit code and log tail),
 * OBI_ERUNTIME_START the runtime could not start the command (runtime.h; over gRPC it arrives
 * as OBI_EBUILD_FAILED),
 * -ETIMEDOUT timed out, -ECANCELED interrupted, -ENOTSUP builds not supported.
 *
 * Each build may come with options of its own (obi_build_call): a cancel fd that stops just that
 * build (the daemon gives every DoBuild one, readable when its client cancels, disconnects or
 * passes its deadline) and a log callback for just that build. Service-wide settings (timeout,
 * the service's own cancel fd and log callback) still apply; the call's log callback replaces
 * the service's for that build.
 */
#ifndef OCIBUILD_BUILD_SERVICE_H
#define OCIBUILD_BUILD_SERVICE_H

#include <errno.h>
#include <stdbool.h>

#include "ocibuild/error.h"
#include "ocibuild/request.h"
#include "ocibuild/runtime.h"
#include "ocibuild/store.h"
#include "ocibuild/url.h"

#define OBI_EBUILD_FAILED (-ECHILD)

typedef struct obi_build_service obi_build_service;

/* One build's own options, chosen by whoever asked for that build. */
typedef struct obi_build_call {
    /* -1: none. Readable = stop this build: a waiting build gives up its turn, a running one
     * has its container killed and deleted; do_build returns -ECANCELED. Owned by the caller,
     * never read or closed by the service (it may stay readable). */
    int cancel_fd;
    /* This build's stdout and stderr as they come; NULL: the service's own callback, if any.
     * Called from the thread running the build. */
    obi_output_fn on_output;
    void *output_ctx;
    /* Keep the bundle of a build that fails after it ran (for inspection, like nix-build -K)
     * and name it in the error: "note: keeping build directory '<path>'". Builders that keep
     * nothing ignore it. */
    bool keep_failed;
    /* Out (NULL: not wanted): when do_build fails with OBI_EBUILD_FAILED because the build's
     * command exited non-zero, its exit code; left alone otherwise (an output missing, say).
     * Lets the streamed DoBuild send BuildFailed.exit_code without parsing a message. */
    int *exit_code;
} obi_build_call;

#define OBI_BUILD_CALL_INIT                                                                        \
    {                                                                                              \
        -1, NULL, NULL, false, NULL                                                                \
    }

struct obi_build_service_ops {
    /* call: NULL when the caller has no options of its own. */
    int (*do_build)(obi_build_service *svc, const obi_build_request *req,
                    const obi_build_call *call, obi_build **out, obi_error **err);
    void (*free)(obi_build_service *svc);
    /* Optional (NULL: not supported): running and later builds stop early with -ECANCELED.
     * Thread-safe; used by the daemon when its shutdown grace period has passed. */
    void (*cancel)(obi_build_service *svc);
};
struct obi_build_service {
    const struct obi_build_service_ops *ops;
};

static inline int obi_build_service_do_build(obi_build_service *svc, const obi_build_request *req,
                                             obi_build **out, obi_error **err)
{
    return svc->ops->do_build(svc, req, NULL, out, err);
}
/* The same with this build's own options (call may be NULL). */
static inline int obi_build_service_do_build_call(obi_build_service *svc,
                                                  const obi_build_request *req,
                                                  const obi_build_call *call, obi_build **out,
                                                  obi_error **err)
{
    return svc->ops->do_build(svc, req, call, out, err);
}
static inline void obi_build_service_cancel(obi_build_service *svc)
{
    if (svc && svc->ops->cancel)
        svc->ops->cancel(svc);
}
void obi_build_service_free(obi_build_service *svc);
static inline void obi_build_service_freep(obi_build_service **s)
{
    obi_build_service_free(*s);
}
#define cleanup_build_service __attribute__((cleanup(obi_build_service_freep)))

/* A factory gets the parsed URL and the store the builder reads inputs from / writes outputs to
 * (borrowed; must outlive the service). */
typedef int (*obi_build_service_factory)(const obi_url *url, obi_store *store,
                                         obi_build_service **out, obi_error **err);
int obi_build_service_register_scheme(const char *scheme, obi_build_service_factory factory);
int obi_build_service_open(const char *url, obi_store *store, obi_build_service **out,
                           obi_error **err);

#endif
