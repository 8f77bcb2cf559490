/*
 * The local OCI build service (build.md): BuildRequest -> bundle -> OCI runtime -> outputs
 * ingested into castore with the reference scanner. Registered as the "oci" build-service
 * scheme: oci:///bundle/root?runtime=crun&rootless=true&max_builds=4&timeout=600&
 * keep_bundle=true&sandbox_shell=/bin/busybox&runtime_root=/run/x&cache_dir=/var/cache/x&
 * root_pool=false (root skeletons are reused between builds unless this says no).
 */
#ifndef OCIBUILD_OCI_BUILD_H
#define OCIBUILD_OCI_BUILD_H

#include <stdbool.h>

#include "ocibuild/build_service.h"
#include "ocibuild/runtime.h"

typedef struct obi_oci_build_options {
    const char *bundle_root;   /* required, absolute */
    const char *cache_dir;     /* input cache; NULL: <bundle_root>/../input-cache */
    const char *runtime;       /* name or path; NULL: runc */
    const char *runtime_root;  /* runtime --root; NULL: runtime default (rootless: own dir) */
    const char *sandbox_shell; /* NULL: /bin/busybox (busybox-static) */
    bool rootless;
    bool keep_bundle;
    unsigned timeout_seconds; /* 0: none */
    unsigned max_builds;      /* 0: number of online CPUs */
    int cancel_fd;            /* -1: none; readable = cancel running builds */
    obi_output_fn on_output;  /* build log stream; NULL: not streamed */
    void *output_ctx;
    bool disable_root_pool; /* every build makes its own root/ (root_pool.h) */
} obi_oci_build_options;

#define OBI_OCI_BUILD_OPTIONS_INIT                                                                 \
    {                                                                                              \
        NULL, NULL, NULL, NULL, NULL, false, false, 0, 0, -1, NULL, NULL, false                    \
    }

/* The store is borrowed and must outlive the service. Sweeps stale bundles under bundle_root. */
int obi_oci_build_service_new(const obi_oci_build_options *opts, obi_store *store,
                              obi_build_service **out, obi_error **err);
/* URL factory for the "oci" scheme (see above); registered by obi_build_service_open. */
int obi_oci_build_service_from_url(const obi_url *url, obi_store *store, obi_build_service **out,
                                   obi_error **err);

#endif
