/*
 * Store paths and placeholders computed as Nix 2.8 computes them (see
 * include/ocibuild/nix_store_path.h). Everything is a SHA-256 over a short text that names what
 * is hashed; store paths fold the digest to 20 bytes by XOR and print it in nixbase32.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ocibuild/buf.h"
#include "ocibuild/cleanup.h"
#include "ocibuild/digest.h"
#include "ocibuild/nix_store.h"
#include "ocibuild/nix_store_path.h"

#define STORE_PATH_HASH_BYTES 20

char *obi_nix_make_store_path(const char *type, const uint8_t hash[OBI_SHA256_LEN],
                              const char *name)
{
    char hex[2 * OBI_SHA256_LEN + 1];
    obi_hex_encode(hash, OBI_SHA256_LEN, hex);
    cleanup_free char *text = NULL;
    if (asprintf(&text, "%s:sha256:%s:" OBI_NIX_STORE_DIR ":%s", type, hex, name) < 0)
        return NULL;
    uint8_t digest[OBI_SHA256_LEN];
    obi_sha256_oneshot(text, strlen(text), digest);
    uint8_t folded[STORE_PATH_HASH_BYTES] = {0};
    for (size_t i = 0; i < OBI_SHA256_LEN; i++)
        folded[i % STORE_PATH_HASH_BYTES] ^= digest[i];
    char encoded[OBI_NIX_HASH_PART_LEN + 1];
    obi_nixbase32_encode(folded, sizeof folded, encoded);
    encoded[OBI_NIX_HASH_PART_LEN] = '\0';
    char *path = NULL;
    if (asprintf(&path, OBI_NIX_STORE_DIR "/%s-%s", encoded, name) < 0)
        return NULL;
    return path;
}

char *obi_nix_output_path_name(const char *drv_name, const char *output_name)
{
    char *name = NULL;
    int r = strcmp(output_name, "out") == 0 ? asprintf(&name, "%s", drv_name)
                                            : asprintf(&name, "%s-%s", drv_name, output_name);
    return r < 0 ? NULL : name;
}

char *obi_nix_make_output_path(const char *output_name, const uint8_t hash[OBI_SHA256_LEN],
                               const char *drv_name)
{
    cleanup_free char *type = NULL;
    cleanup_free char *name = obi_nix_output_path_name(drv_name, output_name);
    if (!name || asprintf(&type, "output:%s", output_name) < 0)
        return NULL;
    return obi_nix_make_store_path(type, hash, name);
}

/* "<base>[:<ref>...][:self]" (makeType). */
static char *make_type(const char *base, char *const *references, size_t n, bool self)
{
    cleanup_buf obi_buf type = OBI_BUF_INIT;
    bool ok = obi_buf_append_str(&type, base) == 0;
    for (size_t i = 0; ok && i < n; i++)
        ok = obi_buf_append(&type, ":", 1) == 0 && obi_buf_append_str(&type, references[i]) == 0;
    if (ok && self)
        ok = obi_buf_append_str(&type, ":self") == 0;
    if (!ok || obi_buf_reserve(&type, 0) < 0)
        return NULL;
    return obi_buf_steal(&type);
}

int obi_nix_make_fixed_output_path(bool recursive, const char *algo, const uint8_t *digest,
                                   size_t digest_len, const char *name, char *const *references,
                                   size_t n_references, bool self_reference, char **out,
                                   obi_error **err)
{
    char *path = NULL;
    if (recursive && strcmp(algo, "sha256") == 0 && digest_len == OBI_SHA256_LEN) {
        cleanup_free char *type = make_type("source", references, n_references, self_reference);
        if (!type || !(path = obi_nix_make_store_path(type, digest, name)))
            return obi_error_oom(err);
        *out = path;
        return 0;
    }
    if (n_references > 0 || self_reference)
        return obi_error_set(err, -EINVAL,
                             "'%s': content addressed by %s%s may not refer to store paths (it "
                             "refers to %s)",
                             name, recursive ? "r:" : "", algo,
                             n_references ? references[0] : "itself");
    cleanup_free char *hex = malloc(2 * digest_len + 1);
    cleanup_free char *text = NULL;
    if (!hex)
        return obi_error_oom(err);
    obi_hex_encode(digest, digest_len, hex);
    if (asprintf(&text, "fixed:out:%s%s:%s:", recursive ? "r:" : "", algo, hex) < 0)
        return obi_error_oom(err);
    uint8_t inner[OBI_SHA256_LEN];
    obi_sha256_oneshot(text, strlen(text), inner);
    if (!(path = obi_nix_make_store_path("output:out", inner, name)))
        return obi_error_oom(err);
    *out = path;
    return 0;
}

char *obi_nix_make_text_path(const char *name, const void *contents, size_t len,
                             char *const *references, size_t n_references)
{
    uint8_t hash[OBI_SHA256_LEN];
    obi_sha256_oneshot(contents, len, hash);
    cleanup_free char *type = make_type("text", references, n_references, false);
    return type ? obi_nix_make_store_path(type, hash, name) : NULL;
}

/* "/" + nixbase32(sha256(text)). */
static char *placeholder_of(const char *text)
{
    uint8_t hash[OBI_SHA256_LEN];
    obi_sha256_oneshot(text, strlen(text), hash);
    char *out = malloc(1 + obi_nixbase32_encoded_len(sizeof hash) + 1);
    if (!out)
        return NULL;
    out[0] = '/';
    obi_nixbase32_encode(hash, sizeof hash, out + 1);
    out[1 + obi_nixbase32_encoded_len(sizeof hash)] = '\0';
    return out;
}

char *obi_nix_hash_placeholder(const char *output_name)
{
    cleanup_free char *text = NULL;
    if (asprintf(&text, "nix-output:%s", output_name) < 0)
        return NULL;
    return placeholder_of(text);
}

char *obi_nix_downstream_placeholder(const char *drv_path, const char *output_name)
{
    const char *base = strrchr(drv_path, '/');
    base = base ? base + 1 : drv_path;
    size_t len = strlen(base);
    if (len < OBI_NIX_HASH_PART_LEN + 2 || len < 4 || strcmp(base + len - 4, ".drv") != 0)
        return NULL;
    cleanup_free char *drv_name =
        strndup(base + OBI_NIX_HASH_PART_LEN + 1, len - OBI_NIX_HASH_PART_LEN - 1 - 4);
    cleanup_free char *path_name =
        drv_name ? obi_nix_output_path_name(drv_name, output_name) : NULL;
    cleanup_free char *text = NULL;
    if (!path_name ||
        asprintf(&text, "nix-upstream-output:%.*s:%s", OBI_NIX_HASH_PART_LEN, base, path_name) < 0)
        return NULL;
    return placeholder_of(text);
}

/* current with [at, at + len) replaced by to; frees current. */
static char *replace_at(char *current, size_t at, size_t len, const char *to)
{
    size_t total = strlen(current), to_len = strlen(to);
    char *out = malloc(total - len + to_len + 1);
    if (out) {
        memcpy(out, current, at);
        /* the next memcpy copies the rest of current with its terminating NUL */
        memcpy(out + at, to, to_len); // NOLINT(bugprone-not-null-terminated-result)
        memcpy(out + at + to_len, current + at + len, total - at - len + 1);
    }
    free(current);
    return out;
}

char *obi_nix_rewrite_string(const char *s, const obi_nix_rewrite *rewrites, size_t n)
{
    char *current = strdup(s);
    for (size_t i = 0; current && i < n; i++) {
        const char *from = rewrites[i].from, *to = rewrites[i].to;
        size_t from_len = strlen(from);
        if (from_len == 0 || strcmp(from, to) == 0)
            continue;
        /* Nix searches again from the start of each replacement; a replacement that contains
         * what it replaces would never end there, so the search moves past it instead. */
        size_t skip = strstr(to, from) ? strlen(to) : 0;
        for (size_t pos = 0; current;) {
            const char *hit = strstr(current + pos, from);
            if (!hit)
                break;
            size_t at = (size_t)(hit - current);
            current = replace_at(current, at, from_len, to);
            pos = at + skip;
        }
    }
    return current;
}
