/*
 * Registry authentication (registry_auth.h): the WWW-Authenticate challenge a registry answers
 * 401 with, and the credentials of a containers/Docker auth.json for a reference. The
 * exchange itself (tokens, Basic) is the client's (registry.c).
 */
#include <errno.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#include "ocibuild/buf.h"
#include "ocibuild/cleanup.h"
#include "ocibuild/digest.h"
#include "ocibuild/fs.h"
#include "ocibuild/json_util.h"
#include "ocibuild/registry_auth.h"

#define AUTH_FILE_MAX (1u << 20)

/* ---- WWW-Authenticate -------------------------------------------------------------------- */

void obi_auth_challenge_clear(obi_auth_challenge *challenge)
{
    free(challenge->scheme);
    free(challenge->realm);
    free(challenge->service);
    free(challenge->scope);
    memset(challenge, 0, sizeof *challenge);
}

static bool is_token_char(char c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
           (c != '\0' && strchr("!#$%&'*+-.^_`|~", c) != NULL);
}

static size_t skip_space(const char *s, size_t i)
{
    while (s[i] == ' ' || s[i] == '\t')
        i++;
    return i;
}

/* RFC 7235: challenge = auth-scheme [ 1*SP ( token68 / #auth-param ) ], auth-param =
 * token BWS "=" BWS ( token / quoted-string ). A token followed by something other than '='
 * after a comma starts the next challenge: parsing stops there. */
int obi_auth_challenge_parse(const char *header, obi_auth_challenge *out, obi_error **err)
{
    obi_auth_challenge ch = {0};
    size_t i = skip_space(header, 0), start = i;
    while (is_token_char(header[i]))
        i++;
    if (i == start)
        return obi_error_set(err, -EINVAL, "WWW-Authenticate: no scheme at byte offset %zu", start);
    if (!(ch.scheme = strndup(header + start, i - start)))
        return obi_error_oom(err);
    for (char *p = ch.scheme; *p; p++)
        *p = (char)(*p >= 'A' && *p <= 'Z' ? *p - 'A' + 'a' : *p);
    int r = 0;
    obi_buf value = OBI_BUF_INIT;
    for (;;) {
        i = skip_space(header, i);
        while (header[i] == ',')
            i = skip_space(header, i + 1);
        if (!header[i])
            break;
        size_t key_start = i;
        while (is_token_char(header[i]))
            i++;
        size_t key_len = i - key_start;
        size_t after_key = skip_space(header, i);
        if (key_len == 0 || header[after_key] != '=') {
            if (key_len > 0 && key_start > 0)
                break; /* the next challenge's scheme */
            r = obi_error_set(err, -EINVAL,
                              "WWW-Authenticate: expected name=value at byte offset %zu",
                              key_start);
            break;
        }
        i = skip_space(header, after_key + 1);
        obi_buf_clear(&value);
        if (header[i] == '"') {
            i++;
            while (header[i] && header[i] != '"') {
                if (header[i] == '\\' && header[i + 1])
                    i++;
                if (obi_buf_append(&value, header + i, 1) < 0) {
                    r = obi_error_oom(err);
                    break;
                }
                i++;
            }
            if (r < 0)
                break;
            if (header[i] != '"') {
                r = obi_error_set(err, -EINVAL,
                                  "WWW-Authenticate: unterminated quoted string at byte offset %zu",
                                  i);
                break;
            }
            i++;
        } else {
            size_t value_start = i;
            while (is_token_char(header[i]) || header[i] == '/' || header[i] == ':')
                i++;
            if (obi_buf_append(&value, header + value_start, i - value_start) < 0) {
                r = obi_error_oom(err);
                break;
            }
        }
        char **slot = NULL;
        if (key_len == 5 && !strncasecmp(header + key_start, "realm", 5))
            slot = &ch.realm;
        else if (key_len == 7 && !strncasecmp(header + key_start, "service", 7))
            slot = &ch.service;
        else if (key_len == 5 && !strncasecmp(header + key_start, "scope", 5))
            slot = &ch.scope;
        if (slot) {
            free(*slot);
            if (!(*slot = strndup(value.data ? (const char *)value.data : "", value.len))) {
                r = obi_error_oom(err);
                break;
            }
        }
        i = skip_space(header, i);
        if (header[i] && header[i] != ',') {
            r = obi_error_set(err, -EINVAL, "WWW-Authenticate: expected ',' at byte offset %zu", i);
            break;
        }
    }
    obi_buf_free(&value);
    if (r < 0) {
        obi_auth_challenge_clear(&ch);
        return r;
    }
    *out = ch;
    return 0;
}

/* ---- credentials (auth.json) ------------------------------------------------------------- */

void obi_registry_credentials_clear(obi_registry_credentials *c)
{
    if (c->user_pass)
        explicit_bzero(c->user_pass, strlen(c->user_pass));
    free(c->user_pass);
    free(c->source);
    memset(c, 0, sizeof *c);
}

/* The auth file to read: the one named, else the first of the usual places that exists. */
static char *auth_file_path(const char *named)
{
    if (named)
        return strdup(named);
    const char *env = getenv("REGISTRY_AUTH_FILE");
    if (env && *env)
        return strdup(env);
    const char *runtime = getenv("XDG_RUNTIME_DIR");
    cleanup_free char *path = NULL;
    if (runtime && *runtime && (path = obi_strdup_printf("%s/containers/auth.json", runtime)) &&
        access(path, F_OK) == 0)
        return steal_pointer(&path);
    const char *home = getenv("HOME");
    free(path);
    path = NULL;
    if (home && *home && (path = obi_strdup_printf("%s/.docker/config.json", home)) &&
        access(path, F_OK) == 0)
        return steal_pointer(&path);
    return NULL;
}

/* An auths key as a "host[/path]" to compare: scheme and trailing "/", "/v1", "/v2" dropped,
 * and Docker Hub's names ("index.docker.io", "registry-1.docker.io") made "docker.io". */
static char *auth_key_normalise(const char *key)
{
    if (!strncmp(key, "https://", 8))
        key += 8;
    else if (!strncmp(key, "http://", 7))
        key += 7;
    char *k = strdup(key);
    if (!k)
        return NULL;
    size_t len = strlen(k);
    while (len && k[len - 1] == '/')
        k[--len] = '\0';
    if (len >= 3 && (!strcmp(k + len - 3, "/v1") || !strcmp(k + len - 3, "/v2")))
        k[len - 3] = '\0';
    static const char *const hub_names[] = {"index.docker.io", OBI_DOCKER_HUB_HOST};
    for (size_t i = 0; i < OBI_ARRAY_SIZE(hub_names); i++) {
        size_t n = strlen(hub_names[i]);
        if (!strncmp(k, hub_names[i], n) && (k[n] == '\0' || k[n] == '/')) {
            char *hub = obi_strdup_printf(OBI_DOCKER_HUB_DOMAIN "%s", k + n);
            free(k);
            return hub;
        }
    }
    return k;
}

int obi_registry_credentials_find(const obi_image_ref *ref, const char *auth_file,
                                  obi_registry_credentials *out, char **looked_in, obi_error **err)
{
    cleanup_free char *path = auth_file_path(auth_file);
    if (!path)
        return 0;
    cleanup_free char *text = NULL;
    size_t len = 0;
    int r = obi_read_file(path, AUTH_FILE_MAX, &text, &len, err);
    if (r == -ENOENT && !auth_file) {
        obi_error_free(*err);
        *err = NULL;
        return 0;
    }
    if (r < 0)
        return obi_error_prefix(err, r, "registry auth file");
    *looked_in = strdup(path);
    json_error_t jerr;
    cleanup_json json_t *doc = json_loadb(text, len, 0, &jerr);
    explicit_bzero(text, len);
    if (!doc)
        return obi_error_set(err, -EINVAL, "registry auth file %s: invalid JSON at line %d: %s",
                             path, jerr.line, jerr.text);
    json_t *auths = json_object_get(doc, "auths");
    if (auths && !json_is_object(auths))
        return obi_error_set(err, -EINVAL, "registry auth file %s: auths: expected an object",
                             path);
    cleanup_free char *full = obi_strdup_printf("%s/%s", ref->domain, ref->repository);
    if (!full)
        return obi_error_oom(err);
    const char *key;
    json_t *entry;
    size_t best = 0;
    const char *best_auth = NULL;
    cleanup_free char *best_key = NULL;
    json_object_foreach(auths, key, entry)
    {
        cleanup_free char *k = auth_key_normalise(key);
        if (!k)
            return obi_error_oom(err);
        size_t n = strlen(k);
        bool match =
            !strncmp(full, k, n) && (full[n] == '\0' || full[n] == '/') && n >= strlen(ref->domain);
        if (!match || n <= best)
            continue;
        json_t *auth = json_object_get(entry, "auth");
        if (!json_is_string(auth))
            return obi_error_set(err, -EINVAL,
                                 "registry auth file %s: auths.\"%s\".auth: expected a base64 "
                                 "string (credential helpers are not supported)",
                                 path, key);
        best = n;
        best_auth = json_string_value(auth);
        free(best_key);
        if (!(best_key = strdup(key)))
            return obi_error_oom(err);
    }
    if (!best_auth)
        return 0;
    uint8_t *decoded = NULL;
    size_t decoded_len = 0;
    r = obi_base64_decode(best_auth, strlen(best_auth), &decoded, &decoded_len, err);
    if (r < 0)
        return obi_error_prefix(err, r, "registry auth file %s: auths.\"%s\".auth", path, best_key);
    void *colon = memchr(decoded, ':', decoded_len);
    bool nul = memchr(decoded, '\0', decoded_len) != NULL;
    if (!colon || nul) {
        explicit_bzero(decoded, decoded_len);
        free(decoded);
        return obi_error_set(
            err, -EINVAL, "registry auth file %s: auths.\"%s\".auth: not base64 of USER:PASSWORD",
            path, best_key);
    }
    out->user_pass = strndup((const char *)decoded, decoded_len);
    explicit_bzero(decoded, decoded_len);
    free(decoded);
    out->source = steal_pointer(&path);
    if (!out->user_pass)
        return obi_error_oom(err);
    return 1;
}
