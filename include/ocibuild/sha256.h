/*
 * SHA-256 (OpenSSL libcrypto underneath): NAR hashes for Nix and blob verification for OCI
 * image layouts. Incremental, streaming.
 */
#ifndef OCIBUILD_SHA256_H
#define OCIBUILD_SHA256_H

#include <stddef.h>
#include <stdint.h>

#define OBI_SHA256_LEN 32

typedef struct obi_sha256 obi_sha256;

obi_sha256 *obi_sha256_new(void);
void obi_sha256_update(obi_sha256 *ctx, const void *data, size_t len);
/* Writes the digest; the context may not be updated afterwards. */
void obi_sha256_final(obi_sha256 *ctx, uint8_t out[OBI_SHA256_LEN]);
void obi_sha256_free(obi_sha256 *ctx);
void obi_sha256_oneshot(const void *data, size_t len, uint8_t out[OBI_SHA256_LEN]);

static inline void obi_sha256_freep(obi_sha256 **c)
{
    obi_sha256_free(*c);
}
#define cleanup_sha256 __attribute__((cleanup(obi_sha256_freep)))

#endif
