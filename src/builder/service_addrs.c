/*
 * Where a client's services are, from its flags and the environment (service_addrs.h): a table
 * of sources tried in order for each service, so the precedence reads as one list per service.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "ocibuild/cleanup.h"
#include "ocibuild/service_addrs.h"

/* A non-empty environment variable, or NULL. */
static const char *env_value(const char *name)
{
    const char *value = getenv(name);
    return value && *value ? value : NULL;
}

/* $OCIBUILD_DAEMON as a URL: a bare socket path becomes grpc+unix://PATH. Caller frees. */
static int daemon_url(char **out, obi_error **err)
{
    const char *value = env_value("OCIBUILD_DAEMON");
    *out = NULL;
    if (!value)
        return 0;
    if (value[0] == '/') {
        if (asprintf(out, "grpc+unix://%s", value) < 0)
            return obi_error_oom(err);
        return 0;
    }
    if (!strstr(value, "://"))
        return obi_error_set(err, -EINVAL,
                             "$OCIBUILD_DAEMON \"%s\": expected a URL (grpc+unix:///run/"
                             "ocibuild.sock, grpc+http://host:port) or a socket's absolute path",
                             value);
    *out = strdup(value);
    return *out ? 0 : obi_error_oom(err);
}

/* The first non-NULL of candidates, copied (NULL when all are). */
static int first_of(const char *const *candidates, size_t n, char **out, obi_error **err)
{
    *out = NULL;
    for (size_t i = 0; i < n; i++) {
        if (!candidates[i])
            continue;
        *out = strdup(candidates[i]);
        return *out ? 0 : obi_error_oom(err);
    }
    return 0;
}

int obi_service_addrs_resolve(const obi_service_flags *flags, obi_service_addrs *out,
                              obi_error **err)
{
    cleanup_free char *daemon = NULL;
    int r = daemon_url(&daemon, err);
    if (r < 0)
        return r;
    obi_service_addrs addrs = {0};
    const char *build_sources[] = {flags->build, env_value("BUILD_SERVICE_ADDR"), daemon};
    if ((r = first_of(build_sources, OBI_ARRAY_SIZE(build_sources), &addrs.build, err)) < 0)
        return r;
    /* A build on a daemon reads its inputs from, and writes its outputs to, its own store. */
    const char *build_daemon =
        addrs.build && !strncmp(addrs.build, "grpc+", 5) ? addrs.build : NULL;
    const char *blob_sources[] = {flags->blobs, flags->store, env_value("BLOB_SERVICE_ADDR"),
                                  build_daemon, daemon};
    const char *directory_sources[] = {flags->directories, flags->store,
                                       env_value("DIRECTORY_SERVICE_ADDR"), build_daemon, daemon};
    if ((r = first_of(blob_sources, OBI_ARRAY_SIZE(blob_sources), &addrs.blobs, err)) < 0 ||
        (r = first_of(directory_sources, OBI_ARRAY_SIZE(directory_sources), &addrs.directories,
                      err)) < 0) {
        obi_service_addrs_clear(&addrs);
        return r;
    }
    *out = addrs;
    return 0;
}

void obi_service_addrs_clear(obi_service_addrs *addrs)
{
    free(addrs->blobs);
    free(addrs->directories);
    free(addrs->build);
    memset(addrs, 0, sizeof *addrs);
}

int obi_default_daemon_socket(char **out, obi_error **err)
{
    const char *runtime_dir = geteuid() == 0 ? "/run" : env_value("XDG_RUNTIME_DIR");
    if (!runtime_dir)
        return obi_error_set(err, -ENOENT,
                             "no default daemon socket: $XDG_RUNTIME_DIR is not set (name one "
                             "with --listen unix:PATH)");
    if (runtime_dir[0] != '/')
        return obi_error_set(err, -EINVAL, "$XDG_RUNTIME_DIR \"%s\": not an absolute path",
                             runtime_dir);
    if (asprintf(out, "%s/ocibuild/daemon.sock", runtime_dir) < 0)
        return obi_error_oom(err);
    return 0;
}
