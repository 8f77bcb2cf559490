/*
 * Message digests from OpenSSL's libcrypto (see include/ocibuild/sha256.h), loaded on first use
 * (dynlib.h): only Nix hashes and image layouts need them, and mapping libcrypto at start-up
 * cost every command, every build, about 1 ms of ld.so work.
 */
#include <openssl/evp.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "ocibuild/dynlib.h"
#include "ocibuild/sha256.h"

#define LIBCRYPTO_SONAME "libcrypto.so.3"
_Static_assert(OPENSSL_VERSION_MAJOR == 3, "libcrypto 3.x is soname 3");
#define LIBCRYPTO_FUNCTIONS(X)                                                                     \
    X(EVP_MD_CTX_new)                                                                              \
    X(EVP_MD_CTX_free)                                                                             \
    X(EVP_DigestInit_ex)                                                                           \
    X(EVP_DigestUpdate)                                                                            \
    X(EVP_DigestFinal_ex)                                                                          \
    X(EVP_get_digestbyname)

static struct {
/* A declarator: `name` is the member's name here, it cannot be parenthesized. */
#define LIBCRYPTO_DECLARE(name) __typeof__(name) *name; // NOLINT(bugprone-macro-parentheses)
    LIBCRYPTO_FUNCTIONS(LIBCRYPTO_DECLARE)
#undef LIBCRYPTO_DECLARE
} libcrypto;

static int libcrypto_load_result;
static pthread_once_t libcrypto_once = PTHREAD_ONCE_INIT;

static void libcrypto_load(void)
{
    static const obi_dynlib_symbol symbols[] = {
#define LIBCRYPTO_SYMBOL(name) {#name, (void **)&libcrypto.name},
        LIBCRYPTO_FUNCTIONS(LIBCRYPTO_SYMBOL)
#undef LIBCRYPTO_SYMBOL
    };
    obi_error *err = NULL;
    libcrypto_load_result =
        obi_dynlib_load(LIBCRYPTO_SONAME, symbols, sizeof symbols / sizeof symbols[0], &err);
    obi_error_free(err);
}

struct obi_md {
    EVP_MD_CTX *ctx;
    size_t len;
};

obi_md *obi_md_new(const char *algo)
{
    pthread_once(&libcrypto_once, libcrypto_load);
    if (libcrypto_load_result < 0)
        return NULL;
    const EVP_MD *md = libcrypto.EVP_get_digestbyname(algo);
    obi_md *h = md ? calloc(1, sizeof *h) : NULL;
    if (!h)
        return NULL;
    h->ctx = libcrypto.EVP_MD_CTX_new();
    if (!h->ctx || libcrypto.EVP_DigestInit_ex(h->ctx, md, NULL) != 1) {
        obi_md_free(h);
        return NULL;
    }
    return h;
}

int obi_md_update(obi_md *h, const void *data, size_t len)
{
    return libcrypto.EVP_DigestUpdate(h->ctx, data, len) == 1 ? 0 : -1;
}

int obi_md_final(obi_md *h, uint8_t out[OBI_MD_MAX_LEN], size_t *len)
{
    unsigned int n = 0;
    if (libcrypto.EVP_DigestFinal_ex(h->ctx, out, &n) != 1)
        return -1;
    *len = n;
    return 0;
}

void obi_md_free(obi_md *h)
{
    if (!h)
        return;
    if (h->ctx)
        libcrypto.EVP_MD_CTX_free(h->ctx);
    free(h);
}

struct obi_sha256 {
    obi_md *md;
};

obi_sha256 *obi_sha256_new(void)
{
    obi_sha256 *ctx = calloc(1, sizeof *ctx);
    if (ctx && !(ctx->md = obi_md_new("sha256"))) {
        free(ctx);
        return NULL;
    }
    return ctx;
}

void obi_sha256_update(obi_sha256 *ctx, const void *data, size_t len)
{
    obi_md_update(ctx->md, data, len);
}

void obi_sha256_final(obi_sha256 *ctx, uint8_t out[OBI_SHA256_LEN])
{
    uint8_t digest[OBI_MD_MAX_LEN];
    size_t n = 0;
    if (obi_md_final(ctx->md, digest, &n) < 0 || n != OBI_SHA256_LEN)
        memset(digest, 0, OBI_SHA256_LEN);
    memcpy(out, digest, OBI_SHA256_LEN);
}

void obi_sha256_free(obi_sha256 *ctx)
{
    if (!ctx)
        return;
    obi_md_free(ctx->md);
    free(ctx);
}

void obi_sha256_oneshot(const void *data, size_t len, uint8_t out[OBI_SHA256_LEN])
{
    obi_sha256 *ctx = obi_sha256_new();
    if (!ctx) {
        memset(out, 0, OBI_SHA256_LEN); /* no libcrypto: matches nothing a real hash does */
        return;
    }
    obi_sha256_update(ctx, data, len);
    obi_sha256_final(ctx, out);
    obi_sha256_free(ctx);
}
