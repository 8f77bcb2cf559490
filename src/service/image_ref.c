/*
 * Image references and pull policies (image_ref.h): NAME[:TAG][@DIGEST] split and normalised
 * as Docker does, checked against the distribution spec's grammar, and the policy names of
 * `image.pull_policy`.
 */
#include <errno.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ocibuild/buf.h"
#include "ocibuild/cleanup.h"
#include "ocibuild/image_ref.h"

#define DIGEST_HEX_LEN 64

void obi_image_ref_free(obi_image_ref *ref)
{
    if (!ref)
        return;
    free(ref->domain);
    free(ref->host);
    free(ref->repository);
    free(ref->tag);
    free(ref->digest);
    free(ref->canonical);
    free(ref);
}

static bool is_lower_alnum(char c)
{
    return (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9');
}

/* A path component: lowercase alphanumerics separated by one '.', one or two '_', or any
 * number of '-' (the distribution spec's grammar). */
static bool repository_component_ok(const char *s, size_t len)
{
    if (!len || !is_lower_alnum(s[0]) || !is_lower_alnum(s[len - 1]))
        return false;
    for (size_t i = 1; i < len; i++) {
        char c = s[i];
        if (is_lower_alnum(c))
            continue;
        if (c == '.' && is_lower_alnum(s[i - 1]))
            continue;
        if (c == '_' &&
            (is_lower_alnum(s[i - 1]) || (s[i - 1] == '_' && i >= 2 && is_lower_alnum(s[i - 2]))))
            continue;
        if (c == '-')
            continue;
        return false;
    }
    return true;
}

static bool tag_ok(const char *tag)
{
    size_t len = strlen(tag);
    if (!len || len > 128)
        return false;
    for (size_t i = 0; i < len; i++) {
        char c = tag[i];
        bool word =
            (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_';
        if (!word && (i == 0 || (c != '.' && c != '-')))
            return false;
    }
    return true;
}

bool obi_image_digest_ok(const char *digest)
{
    if (strncmp(digest, "sha256:", 7))
        return false;
    const char *hex = digest + 7;
    return strlen(hex) == DIGEST_HEX_LEN && strspn(hex, "0123456789abcdef") == DIGEST_HEX_LEN;
}

/* The first component names a registry when it has a '.' or a ':' or is "localhost". */
static bool names_domain(const char *first, size_t len)
{
    return memchr(first, '.', len) || memchr(first, ':', len) ||
           (len == 9 && !strncmp(first, "localhost", 9));
}

/* host[:port]: letters, digits, '.' and '-' (or a bracketed IPv6 address), port digits. */
static bool domain_ok(const char *domain)
{
    const char *p = domain;
    if (*p == '[') {
        p += strspn(p + 1, "0123456789abcdefABCDEF:") + 1;
        if (*p++ != ']')
            return false;
    } else {
        size_t n = strspn(p, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789.-");
        if (!n)
            return false;
        p += n;
    }
    if (*p == ':') {
        size_t digits = strspn(p + 1, "0123456789");
        if (!digits || digits > 5)
            return false;
        p += 1 + digits;
    }
    return *p == '\0';
}

int obi_image_ref_parse(const char *text, obi_image_ref **out, obi_error **err)
{
    if (!strncmp(text, "docker://", 9))
        text += 9;
    cleanup_free char *copy = strdup(text);
    cleanup_image_ref obi_image_ref *ref = calloc(1, sizeof *ref);
    if (!copy || !ref)
        return obi_error_oom(err);
    char *at = strchr(copy, '@');
    if (at) {
        *at = '\0';
        if (!obi_image_digest_ok(at + 1))
            return obi_error_set(err, -EINVAL,
                                 "image \"%s\": digest \"%s\" is not sha256:<64 lowercase hex>",
                                 text, at + 1);
        if (!(ref->digest = strdup(at + 1)))
            return obi_error_oom(err);
    }
    char *slash = strchr(copy, '/');
    char *name = copy;
    if (slash && names_domain(copy, (size_t)(slash - copy))) {
        ref->domain = strndup(copy, (size_t)(slash - copy));
        name = slash + 1;
    } else {
        ref->domain = strdup(OBI_DOCKER_HUB_DOMAIN);
    }
    if (!ref->domain)
        return obi_error_oom(err);
    if (!domain_ok(ref->domain))
        return obi_error_set(err, -EINVAL, "image \"%s\": registry \"%s\" is not a host[:port]",
                             text, ref->domain);
    if (!strcmp(ref->domain, "index.docker.io")) {
        free(ref->domain);
        if (!(ref->domain = strdup(OBI_DOCKER_HUB_DOMAIN)))
            return obi_error_oom(err);
    }
    char *last_slash = strrchr(name, '/');
    char *colon = strrchr(last_slash ? last_slash : name, ':');
    if (colon) {
        *colon = '\0';
        if (!tag_ok(colon + 1))
            return obi_error_set(
                err, -EINVAL, "image \"%s\": tag \"%s\" is not [A-Za-z0-9_][A-Za-z0-9_.-]{0,127}",
                text, colon + 1);
        if (!(ref->tag = strdup(colon + 1)))
            return obi_error_oom(err);
    } else if (!ref->digest && !(ref->tag = strdup("latest"))) {
        return obi_error_oom(err);
    }
    bool hub = !strcmp(ref->domain, OBI_DOCKER_HUB_DOMAIN);
    if (!*name)
        return obi_error_set(err, -EINVAL, "image \"%s\": repository name is empty", text);
    if (hub && !strchr(name, '/'))
        ref->repository = obi_strdup_printf("library/%s", name);
    else
        ref->repository = strdup(name);
    if (!ref->repository)
        return obi_error_oom(err);
    size_t len = strlen(ref->repository);
    if (len == 0 || len > 255)
        return obi_error_set(err, -EINVAL, "image \"%s\": repository name is too long", text);
    for (const char *p = ref->repository;;) {
        const char *end = strchrnul(p, '/');
        if (!repository_component_ok(p, (size_t)(end - p)))
            return obi_error_set(err, -EINVAL,
                                 "image \"%s\": repository component \"%.*s\" must be lowercase "
                                 "letters and digits separated by '.', '_', '__' or '-'",
                                 text, (int)(end - p), p);
        if (!*end)
            break;
        p = end + 1;
    }
    ref->host = strdup(hub ? OBI_DOCKER_HUB_HOST : ref->domain);
    ref->canonical = obi_strdup_printf("%s/%s%s%s%s%s", ref->domain, ref->repository,
                                       ref->tag ? ":" : "", ref->tag ? ref->tag : "",
                                       ref->digest ? "@" : "", ref->digest ? ref->digest : "");
    if (!ref->host || !ref->canonical)
        return obi_error_oom(err);
    *out = steal_pointer(&ref);
    return 0;
}

/* ---- pull policies ----------------------------------------------------------------------- */

static const char *const PULL_POLICY_NAMES[] = {
    [OBI_PULL_IF_NOT_PRESENT] = "if_not_present",
    [OBI_PULL_ALWAYS] = "always",
    [OBI_PULL_NEVER] = "never",
    [OBI_PULL_NEWER] = "newer",
};

int obi_pull_policy_parse(const char *text, obi_pull_policy *out)
{
    for (size_t i = 0; i < OBI_ARRAY_SIZE(PULL_POLICY_NAMES); i++)
        if (!strcmp(text, PULL_POLICY_NAMES[i])) {
            *out = (obi_pull_policy)i;
            return 0;
        }
    return -EINVAL;
}

const char *obi_pull_policy_name(obi_pull_policy policy)
{
    return (size_t)policy < OBI_ARRAY_SIZE(PULL_POLICY_NAMES) ? PULL_POLICY_NAMES[policy] : "?";
}
