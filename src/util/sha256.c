/*
 * SHA-256 via OpenSSL's EVP interface (see include/ocibuild/sha256.h).
 */
#include <openssl/evp.h>
#include <stdlib.h>

#include "ocibuild/sha256.h"

struct obi_sha256 {
    EVP_MD_CTX *md;
};

obi_sha256 *obi_sha256_new(void)
{
    obi_sha256 *ctx = calloc(1, sizeof *ctx);
    if (!ctx)
        return NULL;
    ctx->md = EVP_MD_CTX_new();
    if (!ctx->md || EVP_DigestInit_ex(ctx->md, EVP_sha256(), NULL) != 1) {
        obi_sha256_free(ctx);
        return NULL;
    }
    return ctx;
}

void obi_sha256_update(obi_sha256 *ctx, const void *data, size_t len)
{
    EVP_DigestUpdate(ctx->md, data, len);
}

void obi_sha256_final(obi_sha256 *ctx, uint8_t out[OBI_SHA256_LEN])
{
    unsigned int n = 0;
    EVP_DigestFinal_ex(ctx->md, out, &n);
}

void obi_sha256_free(obi_sha256 *ctx)
{
    if (!ctx)
        return;
    EVP_MD_CTX_free(ctx->md);
    free(ctx);
}

void obi_sha256_oneshot(const void *data, size_t len, uint8_t out[OBI_SHA256_LEN])
{
    unsigned int n = 0;
    EVP_Digest(data, len, out, &n, EVP_sha256(), NULL);
}
