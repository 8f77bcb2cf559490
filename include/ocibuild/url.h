/*
 * Service addresses (rpc.md): one URL syntax for build, blob and directory services, parsed
 * once into scheme, host, port, path and query parameters.
 */
#ifndef OCIBUILD_URL_H
#define OCIBUILD_URL_H

#include <stddef.h>

#include "ocibuild/error.h"

typedef struct obi_url_param {
    char *key;
    char *value;
} obi_url_param;

typedef struct obi_url {
    char *scheme; /* "memory", "objectstore+file", "oci", "grpc+unix", ...; "" for a plain path */
    char *host;   /* may be empty */
    char *port;   /* NULL when absent */
    char *path;   /* percent-decoded; may be empty */
    obi_url_param *params;
    size_t n_params;
} obi_url;

/* Parses "scheme://[host[:port]][/path][?k=v&...]" or a plain path (scheme ""). */
int obi_url_parse(const char *text, obi_url **out, obi_error **err);
void obi_url_free(obi_url *url);
/* Value of the first parameter named key, or NULL. */
const char *obi_url_param_get(const obi_url *url, const char *key);

static inline void obi_url_freep(obi_url **u)
{
    obi_url_free(*u);
}
#define cleanup_url __attribute__((cleanup(obi_url_freep)))

#endif
