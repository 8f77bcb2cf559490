/*
 * Env resolution for services: a deployment's env values are literals, `$E:NAME` (the daemon's
 * environment) or `$S:REF` (a secrets provider). Providers sit behind a small interface; the
 * one implementation here is a directory of files (`--secrets-dir`):
 *   $S:name             DIR/name
 *   $S:@svc/name        DIR/svc/name          (scoped to service svc)
 *   $S:name/field       DIR/name parsed as a JSON object, member "field"
 *   $S:@svc/name/field  both
 * One trailing "\n" (or "\r\n") of a secret file is dropped: files written by `echo` or an editor
 * end in a newline that is never part of the secret. A value that cannot be resolved is an error
 * naming the service and key; a `$S:` reference never reaches a container literally.
 */
#ifndef OCIBUILD_SECRETS_H
#define OCIBUILD_SECRETS_H

#include <stddef.h>

#include "ocibuild/cleanup.h"
#include "ocibuild/deployment.h"
#include "ocibuild/error.h"

typedef struct obi_secrets obi_secrets;

/* The provider interface: get returns the secret's bytes as a NUL-terminated string (caller
 * frees); scope is NULL or a service name; -ENOENT when there is no such secret. */
typedef struct obi_secrets_ops {
    int (*get)(obi_secrets *secrets, const char *scope, const char *name, char **out,
               obi_error **err);
    void (*free)(obi_secrets *secrets);
} obi_secrets_ops;

struct obi_secrets {
    const obi_secrets_ops *ops;
};

/* A provider reading one file per secret below dir (which must exist). */
int obi_secrets_dir_open(const char *dir, obi_secrets **out, obi_error **err);
int obi_secrets_get(obi_secrets *secrets, const char *scope, const char *name, char **out,
                    obi_error **err);
void obi_secrets_free(obi_secrets *secrets);
OBI_DEFINE_CLEANUP(obi_secrets, obi_secrets_free)
#define cleanup_secrets _cleanup_(obi_secrets_freep)

/* Resolves one value of services.<service>.env.<key>. secrets may be NULL (then `$S:` is an
 * error saying no provider is configured). *out is a new string. */
int obi_env_resolve_value(const char *service, const char *key, const char *value,
                          obi_secrets *secrets, char **out, obi_error **err);
/* Resolves a service's whole env, in document order; *out has svc->env_count entries. */
int obi_service_env_resolve(const obi_service *svc, obi_secrets *secrets, obi_service_env_var **out,
                            obi_error **err);
void obi_service_env_vars_free(obi_service_env_var *vars, size_t count);

#endif
