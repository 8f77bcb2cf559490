/*
 * The build service interface (tvix.build.v1.BuildService): one operation, DoBuild. Backends,
 * chosen by URL (rpc.md): dummy:// (refuses), oci:///bundle/root?runtime=..&rootless=..&
 * max_builds=..&timeout=.. (local OCI builder), and grpc+unix:// / grpc+http:// (registered by
 * the rpc layer).
 *
 * Error codes a caller can act on: -EINVAL invalid request (message from validation),
 * OBI_EBUILD_FAILED the build ran and failed (message carries exit code and log tail),
 * -ETIMEDOUT timed out, -ECANCELED interrupted, -ENOTSUP builds not supported.
 */
#ifndef OCIBUILD_BUILD_SERVICE_H
#define OCIBUILD_BUILD_SERVICE_H

#include <errno.h>

#include "ocibuild/error.h"
#include "ocibuild/request.h"
#include "ocibuild/store.h"
#include "ocibuild/url.h"

#define OBI_EBUILD_FAILED (-ECHILD)

typedef struct obi_build_service obi_build_service;

struct obi_build_service_ops {
    int (*do_build)(obi_build_service *svc, const obi_build_request *req, obi_build **out,
                    obi_error **err);
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
    return svc->ops->do_build(svc, req, out, err);
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
