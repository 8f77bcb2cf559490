/*
 * Env resolution ($E: and $S: references) and the directory secrets provider (see secrets.h).
 * service_spec.c calls obi_service_env_resolve when it layers a container's env.
 */
#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "ocibuild/buf.h"
#include "ocibuild/cleanup.h"
#include "ocibuild/fs.h"
#include "ocibuild/json_util.h"
#include "ocibuild/secrets.h"

#define SECRET_MAX_BYTES (1u << 20)

typedef struct dir_secrets {
    obi_secrets base;
    char *dir;
    int dir_fd;
} dir_secrets;

/* One path component of [A-Za-z0-9._-], not starting with '.', so no reference can leave the
 * secrets directory. */
static bool secret_name_is_valid(const char *name)
{
    size_t len = strlen(name);
    if (len == 0 || len > 255 || name[0] == '.')
        return false;
    for (const char *p = name; *p; p++)
        if (!isalnum((unsigned char)*p) && !strchr("._-", *p))
            return false;
    return true;
}

static int dir_secrets_get(obi_secrets *secrets, const char *scope, const char *name, char **out,
                           obi_error **err)
{
    dir_secrets *self = (dir_secrets *)secrets;
    if (!secret_name_is_valid(name) || (scope && !secret_name_is_valid(scope)))
        return obi_error_set(err, -EINVAL, "invalid secret name \"%s%s%s\"", scope ? scope : "",
                             scope ? "/" : "", name);
    cleanup_free char *relative = NULL;
    if (asprintf(&relative, "%s%s%s", scope ? scope : "", scope ? "/" : "", name) < 0)
        return obi_error_oom(err);
    cleanup_close int fd = openat(self->dir_fd, relative, O_RDONLY | O_CLOEXEC | O_NOCTTY);
    if (fd < 0) {
        if (errno == ENOENT || errno == ENOTDIR)
            return obi_error_set(err, -ENOENT, "secret \"%s\" not found in %s", relative,
                                 self->dir);
        return obi_error_set_errno(err, errno, "secret %s/%s", self->dir, relative);
    }
    struct stat st;
    if (fstat(fd, &st) < 0)
        return obi_error_set_errno(err, errno, "secret %s/%s", self->dir, relative);
    if (!S_ISREG(st.st_mode))
        return obi_error_set(err, -EINVAL, "secret %s/%s is not a regular file", self->dir,
                             relative);
    obi_buf buf = OBI_BUF_INIT;
    char chunk[4096];
    for (;;) {
        ssize_t n = obi_read_full(fd, chunk, sizeof chunk);
        if (n < 0) {
            obi_buf_free(&buf);
            return obi_error_set_errno(err, (int)-n, "read secret %s/%s", self->dir, relative);
        }
        if (n == 0)
            break;
        if (buf.len + (size_t)n > SECRET_MAX_BYTES || obi_buf_append(&buf, chunk, (size_t)n) < 0) {
            obi_buf_free(&buf);
            return obi_error_set(err, -EFBIG, "secret %s/%s: larger than %u bytes", self->dir,
                                 relative, SECRET_MAX_BYTES);
        }
    }
    if (buf.len && memchr(buf.data, '\0', buf.len)) {
        obi_buf_free(&buf);
        return obi_error_set(err, -EINVAL, "secret %s/%s contains a NUL byte", self->dir, relative);
    }
    if (buf.len && buf.data[buf.len - 1] == '\n') {
        buf.data[--buf.len] = '\0';
        if (buf.len && buf.data[buf.len - 1] == '\r')
            buf.data[--buf.len] = '\0';
    }
    char *value = obi_buf_steal(&buf);
    if (!value)
        return obi_error_oom(err);
    *out = value;
    return 0;
}

static void dir_secrets_free(obi_secrets *secrets)
{
    dir_secrets *self = (dir_secrets *)secrets;
    if (self->dir_fd >= 0)
        close(self->dir_fd);
    free(self->dir);
    free(self);
}

static const obi_secrets_ops DIR_SECRETS_OPS = {dir_secrets_get, dir_secrets_free};

int obi_secrets_dir_open(const char *dir, obi_secrets **out, obi_error **err)
{
    cleanup_close int fd = open(dir, O_PATH | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0)
        return obi_error_set_errno(err, errno, "secrets directory %s", dir);
    dir_secrets *self = calloc(1, sizeof *self);
    if (!self || !(self->dir = strdup(dir))) {
        free(self);
        return obi_error_oom(err);
    }
    self->base.ops = &DIR_SECRETS_OPS;
    self->dir_fd = steal_fd(&fd);
    *out = &self->base;
    return 0;
}

int obi_secrets_get(obi_secrets *secrets, const char *scope, const char *name, char **out,
                    obi_error **err)
{
    return secrets->ops->get(secrets, scope, name, out, err);
}

void obi_secrets_free(obi_secrets *secrets)
{
    if (secrets)
        secrets->ops->free(secrets);
}

/* JSON member `field` of the secret text: strings as they are, numbers and booleans in their
 * JSON spelling; null, objects and arrays are errors. */
static int secret_json_field(const char *text, const char *field, char **out, obi_error **err)
{
    json_error_t jerr;
    cleanup_json json_t *root = json_loads(text, 0, &jerr);
    if (!root)
        return obi_error_set(err, -EINVAL, "not JSON (line %d: %s)", jerr.line, jerr.text);
    if (!json_is_object(root))
        return obi_error_set(err, -EINVAL, "not a JSON object");
    json_t *value = json_object_get(root, field);
    if (!value)
        return obi_error_set(err, -ENOENT, "no field \"%s\"", field);
    char *result = NULL;
    if (json_is_string(value)) {
        if (memchr(json_string_value(value), '\0', json_string_length(value)))
            return obi_error_set(err, -EINVAL, "field \"%s\" contains a NUL character", field);
        result = strdup(json_string_value(value));
    } else if (json_is_number(value) || json_is_boolean(value)) {
        result = json_dumps(value, JSON_ENCODE_ANY);
    } else {
        return obi_error_set(err, -EINVAL, "field \"%s\" is not a string, number or boolean",
                             field);
    }
    if (!result)
        return obi_error_oom(err);
    *out = result;
    return 0;
}

static int resolve_secret(const char *ref, obi_secrets *secrets, char **out, obi_error **err)
{
    cleanup_free char *copy = strdup(ref);
    if (!copy)
        return obi_error_oom(err);
    char *scope = NULL, *name = copy;
    if (copy[0] == '@') {
        char *slash = strchr(copy, '/');
        if (!slash)
            return obi_error_set(err, -EINVAL, "\"$S:%s\": expected $S:@service/name", ref);
        *slash = '\0';
        scope = copy + 1;
        name = slash + 1;
    }
    char *field = strchr(name, '/');
    if (field) {
        *field++ = '\0';
        if (!*field)
            return obi_error_set(err, -EINVAL, "\"$S:%s\": empty field name", ref);
    }
    if (!secrets)
        return obi_error_set(err, -ENOENT,
                             "\"$S:%s\": no secrets provider configured (use --secrets-dir)", ref);
    cleanup_free char *text = NULL;
    int r = obi_secrets_get(secrets, scope, name, &text, err);
    if (r < 0)
        return r;
    if (!field) {
        *out = steal_pointer(&text);
        return 0;
    }
    r = secret_json_field(text, field, out, err);
    if (r < 0)
        return obi_error_prefix(err, r, "secret \"%s%s%s\"", scope ? scope : "", scope ? "/" : "",
                                name);
    return 0;
}

int obi_env_resolve_value(const char *service, const char *key, const char *value,
                          obi_secrets *secrets, char **out, obi_error **err)
{
    char *result = NULL;
    int r = 0;
    if (!strncmp(value, "$E:", 3)) {
        const char *name = value + 3;
        const char *env = *name ? getenv(name) : NULL;
        if (!env)
            r = obi_error_set(err, -ENOENT, "environment variable \"%s\" is not set", name);
        else if (!(result = strdup(env)))
            r = obi_error_oom(err);
    } else if (!strncmp(value, "$S:", 3)) {
        r = resolve_secret(value + 3, secrets, &result, err);
    } else if (!(result = strdup(value))) {
        r = obi_error_oom(err);
    }
    if (r < 0)
        return obi_error_prefix(err, r, "services.%s.env.%s", service, key);
    *out = result;
    return 0;
}

void obi_service_env_vars_free(obi_service_env_var *vars, size_t count)
{
    if (!vars)
        return;
    for (size_t i = 0; i < count; i++) {
        free(vars[i].name);
        free(vars[i].value);
    }
    free(vars);
}

int obi_service_env_resolve(const obi_service *svc, obi_secrets *secrets, obi_service_env_var **out,
                            obi_error **err)
{
    obi_service_env_var *vars = calloc(svc->env_count ? svc->env_count : 1, sizeof *vars);
    if (!vars)
        return obi_error_oom(err);
    for (size_t i = 0; i < svc->env_count; i++) {
        int r = obi_env_resolve_value(svc->name, svc->env[i].name, svc->env[i].value, secrets,
                                      &vars[i].value, err);
        if (r == 0 && !(vars[i].name = strdup(svc->env[i].name)))
            r = obi_error_oom(err);
        if (r < 0) {
            obi_service_env_vars_free(vars, svc->env_count);
            return r;
        }
    }
    *out = vars;
    return 0;
}
