/*
 * The local OCI build service (build.md): BuildRequest -> bundle -> OCI runtime -> outputs
 * ingested into castore with the reference scanner. Registered as the "oci" build-service
 * scheme: oci:///bundle/root?runtime=crun&rootless=true&max_builds=4&timeout=600&
 * keep_bundle=true&sandbox_shell=/bin/busybox&runtime_root=/run/x&cache_dir=/var/cache/x&
 * root_pool=false&max_pids=4096&memory=2Gi&scratch_limit=10Gi&inputs=auto (root skeletons are
 * reused between builds unless root_pool says no; the limits are docs/security.md's "Limits";
 * inputs: materialize, fuse or auto, build_inputs.h).
 * Rootful builds run as the host ids of an id slot (id_slot.h), claimed per build.
 */
#ifndef OCIBUILD_OCI_BUILD_H
#define OCIBUILD_OCI_BUILD_H

#include <stdbool.h>
#include <stdint.h>

#include "ocibuild/build_inputs.h"
#include "ocibuild/build_service.h"
#include "ocibuild/runtime.h"

typedef struct obi_oci_build_options {
    const char *bundle_root;   /* required, absolute */
    const char *cache_dir;     /* input cache; NULL: <bundle_root>/../input-cache */
    const char *runtime;       /* name or path; NULL: crun when a probe found that it works
                                  here, else runc (docs/build.md "The default runtime") */
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
    /* Limits (docs/security.md "Limits"). The last two need rootful builds. */
    unsigned max_pids;            /* processes of each build (RLIMIT_NPROC, and pids.max with a
                                     cgroup); 0: OBI_DEFAULT_MAX_PIDS */
    uint64_t memory_bytes;        /* memory (and memory + swap) limit; 0: none */
    uint64_t scratch_limit_bytes; /* size of the tmpfs holding scratch dirs; 0: on disk */
    obi_inputs_mode inputs;       /* the input cache, FUSE, or auto (build_inputs.h) */
    /* Inputs materialized into the cache, per build (obi_build_inputs_prepare); NULL: nobody.
     * Called from the building thread: one build at a time, or a hook that locks. */
    const obi_progress *materialize_progress;
    /* For a caller that exits once its builds are answered (`ocibuild build`): a build's
     * leftovers wait for the next build to start instead of being removed at once, and those
     * still there when the service is freed go to a child that outlives the caller and removes
     * them (docs/build.md "After the answer"); freeing it then waits for nothing. Not after a
     * cancellation: then freeing removes them itself. The child is the caller's, never waited
     * for: the caller exits right after. */
    bool hand_off_leftovers;
} obi_oci_build_options;

#define OBI_OCI_BUILD_OPTIONS_INIT                                                                 \
    {                                                                                              \
        NULL, NULL, NULL, NULL, NULL, false, false, 0, 0, -1, NULL, NULL, false, 0, 0, 0,          \
            OBI_INPUTS_AUTO, NULL, false                                                           \
    }

/* Processes (and threads) a build may have at once, unless max_pids says otherwise. */
#define OBI_DEFAULT_MAX_PIDS 4096
/* The daemon's build timeout when its build service URL is its default one (10 hours, Hydra's
 * default; docs/security.md "Limits"). */
#define OBI_DAEMON_DEFAULT_BUILD_TIMEOUT (10 * 60 * 60)

/* The store is borrowed and must outlive the service. Sweeps stale bundles under bundle_root. */
int obi_oci_build_service_new(const obi_oci_build_options *opts, obi_store *store,
                              obi_build_service **out, obi_error **err);
/* The path of the runtime a service from obi_oci_build_service_new runs builds with. */
const char *obi_oci_build_service_runtime(const obi_build_service *service);
/* A build answers before its leftovers (the stopped container, the bundle, the id slot) are
 * removed, by a thread of the service (docs/build.md "After the answer"); freeing the service
 * waits for them (or hands them to a child: hand_off_leftovers). This waits until the ones
 * queued so far are gone. */
void obi_oci_build_service_settle(obi_build_service *service);
/* URL factory for the "oci" scheme (see above); registered by obi_build_service_open. */
int obi_oci_build_service_from_url(const obi_url *url, obi_store *store, obi_build_service **out,
                                   obi_error **err);

#endif
