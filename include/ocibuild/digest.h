/*
 * Digests and their text forms: lowercase hex, standard base64 (tvix prints "b3:" + base64),
 * RFC 4648 BASE32 (uppercase, padded; used for scratch dir names) and Nix's base32
 * (alphabet 0123456789abcdfghijklmnpqrsvwxyz, least significant 5-bit group last).
 */
#ifndef OCIBUILD_DIGEST_H
#define OCIBUILD_DIGEST_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "ocibuild/error.h"
#include "ocibuild/hex.h" /* the hex form of a digest is hex.h's */

#define OBI_DIGEST_LEN 32
#define OBI_DIGEST_HEX_LEN 64

typedef struct obi_digest {
    uint8_t bytes[OBI_DIGEST_LEN];
} obi_digest;

/* BLAKE3-256 of a byte string. */
void obi_digest_of(const void *data, size_t len, obi_digest *out);
bool obi_digest_equal(const obi_digest *a, const obi_digest *b);
int obi_digest_compare(const obi_digest *a, const obi_digest *b);

void obi_digest_to_hex(const obi_digest *d, char out[OBI_DIGEST_HEX_LEN + 1]);
int obi_digest_from_hex(const char *hex, obi_digest *out, obi_error **err);

/* Standard base64 with padding. Encoded length excluding NUL: 4*ceil(n/3). */
size_t obi_base64_encoded_len(size_t len);
void obi_base64_encode(const uint8_t *data, size_t len, char *out);
/* Strict decode (padding required, no whitespace); *out is malloc'd. Accepts the URL-safe
 * alphabet too, as protobuf's JSON mapping does. */
int obi_base64_decode(const char *text, size_t text_len, uint8_t **out, size_t *out_len,
                      obi_error **err);

/* RFC 4648 base32, uppercase with '=' padding. Encoded length: 8*ceil(n/5). */
size_t obi_base32_encoded_len(size_t len);
void obi_base32_encode(const uint8_t *data, size_t len, char *out);

/* Nix base32. Encoded length: ceil(8n/5). */
size_t obi_nixbase32_encoded_len(size_t len);
void obi_nixbase32_encode(const uint8_t *data, size_t len, char *out);
/* Decodes text into exactly out_len bytes; errors name the offending offset. */
int obi_nixbase32_decode(const char *text, size_t text_len, uint8_t *out, size_t out_len,
                         obi_error **err);

/* "b3:" + base64, as tvix prints digests; caller frees. */
char *obi_digest_to_b3_string(const obi_digest *d);

#endif
