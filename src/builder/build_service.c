/*
 * Build services chosen by URL (rpc.md): a small registry of schemes. "dummy" is built in and
 * refuses every build; "oci" (the local OCI builder) and "grpc+unix"/"grpc+http" (rpc layer)
 * register themselves at startup with obi_build_service_register_scheme, so this layer depends
 * on neither.
 */
#include <errno.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "ocibuild/buf.h"
#include "ocibuild/build_service.h"
#include "ocibuild/cleanup.h"
#include "ocibuild/oci_build.h"

#define MAX_SCHEMES 16

typedef struct scheme_entry {
    const char *scheme;
    obi_build_service_factory factory;
} scheme_entry;

static int dummy_open(const obi_url *url, obi_store *store, obi_build_service **out,
                      obi_error **err);

static pthread_mutex_t registry_lock = PTHREAD_MUTEX_INITIALIZER;
static scheme_entry registry[MAX_SCHEMES] = {{"dummy", dummy_open},
                                             {"oci", obi_oci_build_service_from_url}};
static size_t n_registered = 2;

int obi_build_service_register_scheme(const char *scheme, obi_build_service_factory factory)
{
    int r = 0;
    pthread_mutex_lock(&registry_lock);
    size_t i = 0;
    while (i < n_registered && strcmp(registry[i].scheme, scheme) != 0)
        i++;
    if (i < n_registered)
        registry[i].factory = factory; /* re-registering replaces */
    else if (n_registered == MAX_SCHEMES)
        r = -ENOSPC;
    else
        registry[n_registered++] = (scheme_entry){scheme, factory};
    pthread_mutex_unlock(&registry_lock);
    return r;
}

static obi_build_service_factory lookup(const char *scheme, char **supported)
{
    obi_build_service_factory factory = NULL;
    obi_buf names = {0};
    pthread_mutex_lock(&registry_lock);
    for (size_t i = 0; i < n_registered; i++) {
        if (!strcmp(registry[i].scheme, scheme))
            factory = registry[i].factory;
        obi_buf_appendf(&names, "%s%s://", i ? ", " : "", registry[i].scheme);
    }
    pthread_mutex_unlock(&registry_lock);
    *supported = obi_buf_steal(&names);
    return factory;
}

void obi_build_service_free(obi_build_service *svc)
{
    if (svc)
        svc->ops->free(svc);
}

int obi_build_service_open(const char *url, obi_store *store, obi_build_service **out,
                           obi_error **err)
{
    cleanup_url obi_url *parsed = NULL;
    int r = obi_url_parse(url, &parsed, err);
    if (r < 0)
        return obi_error_prefix(err, r, "build service");
    cleanup_free char *supported = NULL;
    obi_build_service_factory factory = lookup(parsed->scheme, &supported);
    if (!factory)
        return obi_error_set(err, -EINVAL, "build service '%s': unsupported scheme (supported: %s)",
                             url, supported ? supported : "?");
    r = factory(parsed, store, out, err);
    if (r < 0)
        return obi_error_prefix(err, r, "build service '%s'", url);
    return 0;
}

/* ---- dummy:// refuses every build ---- */

static int dummy_do_build(obi_build_service *svc, const obi_build_request *req,
                          const obi_build_call *call, obi_build **out, obi_error **err)
{
    (void)svc;
    (void)req;
    (void)call;
    (void)out;
    return obi_error_set(err, -ENOTSUP, "builds are not supported (dummy:// build service)");
}

static void dummy_free(obi_build_service *svc)
{
    free(svc);
}

static const struct obi_build_service_ops DUMMY_OPS = {
    .do_build = dummy_do_build,
    .free = dummy_free,
};

static int dummy_open(const obi_url *url, obi_store *store, obi_build_service **out,
                      obi_error **err)
{
    (void)store;
    if ((url->host && *url->host) || (url->path && *url->path) || url->port || url->n_params)
        return obi_error_set(err, -EINVAL, "dummy:// takes no host, path or options");
    obi_build_service *svc = calloc(1, sizeof *svc);
    if (!svc)
        return obi_error_set(err, -ENOMEM, "dummy build service: out of memory");
    svc->ops = &DUMMY_OPS;
    *out = svc;
    return 0;
}
