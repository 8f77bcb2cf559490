/*
 * Registry authentication, the parts that are parsing and lookup: the WWW-Authenticate
 * challenge of a 401 (`Bearer realm="...",service="...",scope="..."` or `Basic realm="..."`),
 * and the credentials a containers/Docker auth.json holds for an image reference. The HTTP
 * exchanges that use them (a token from the realm, Basic to the registry) are registry.c's.
 */
#ifndef OCIBUILD_REGISTRY_AUTH_H
#define OCIBUILD_REGISTRY_AUTH_H

#include "ocibuild/error.h"
#include "ocibuild/image_ref.h"

typedef struct obi_auth_challenge {
    char *scheme; /* "bearer" or "basic" (lowercased) */
    char *realm, *service, *scope;
} obi_auth_challenge;

/* Parses one challenge (the first, when the header holds several; parameters other than
 * realm, service and scope are ignored); -EINVAL naming the byte offset of what does not
 * parse. */
int obi_auth_challenge_parse(const char *header, obi_auth_challenge *out, obi_error **err);
void obi_auth_challenge_clear(obi_auth_challenge *challenge);

typedef struct obi_registry_credentials {
    char *user_pass; /* "user:password" (zeroed when cleared) */
    char *source;    /* the file they came from */
} obi_registry_credentials;

/* The credentials for ref from auth_file, else (auth_file NULL) from the first that exists of
 * $REGISTRY_AUTH_FILE, $XDG_RUNTIME_DIR/containers/auth.json, ~/.docker/config.json: the
 * `auths` entry whose key matches most specifically ("host/repo/path" over "host/repo" over
 * "host"; keys may carry "https://" and "/v1/", and Docker Hub's names all mean docker.io).
 * 1 with *out set, 0 when there are none; *looked_in names the file read (caller frees; NULL
 * when none exists). A named file that is missing, or any file that does not parse, is an
 * error naming it and the key. */
int obi_registry_credentials_find(const obi_image_ref *ref, const char *auth_file,
                                  obi_registry_credentials *out, char **looked_in, obi_error **err);
void obi_registry_credentials_clear(obi_registry_credentials *credentials);

#endif
