/*
 * SHA-256 and the other digests Nix names (md5, sha1, sha512), from OpenSSL's libcrypto, which
 * is loaded on first use (dynlib.h), not at start-up: NAR hashes and content hashes for Nix and
 * blob verification for OCI image layouts. Incremental, streaming. Without a loadable libcrypto
 * (a Debian dependency) the constructors return NULL and obi_sha256_oneshot writes zeros.
 */
#ifndef OCIBUILD_SHA256_H
#define OCIBUILD_SHA256_H

#include <stddef.h>
#include <stdint.h>

#define OBI_SHA256_LEN 32

/* Any digest by libcrypto's name for it; NULL when unknown (or no libcrypto, or no memory). */
#define OBI_MD_MAX_LEN 64
typedef struct obi_md obi_md;
obi_md *obi_md_new(const char *algo);
int obi_md_update(obi_md *h, const void *data, size_t len); /* 0, or -1 */
int obi_md_final(obi_md *h, uint8_t out[OBI_MD_MAX_LEN], size_t *len);
void obi_md_free(obi_md *h);

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
