/*
 * Digest text forms (see include/ocibuild/digest.h). Decoders are strict: a malformed string is
 * an error naming the byte offset, never a silently different digest.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "ocibuild/blake3.h"
#include "ocibuild/digest.h"
#include "ocibuild/hex.h"

void obi_digest_of(const void *data, size_t len, obi_digest *out)
{
    obi_blake3(data, len, out->bytes);
}

bool obi_digest_equal(const obi_digest *a, const obi_digest *b)
{
    return memcmp(a->bytes, b->bytes, OBI_DIGEST_LEN) == 0;
}

int obi_digest_compare(const obi_digest *a, const obi_digest *b)
{
    return memcmp(a->bytes, b->bytes, OBI_DIGEST_LEN);
}

void obi_digest_to_hex(const obi_digest *d, char out[OBI_DIGEST_HEX_LEN + 1])
{
    obi_hex_encode(d->bytes, OBI_DIGEST_LEN, out);
}

int obi_digest_from_hex(const char *hex, obi_digest *out, obi_error **err)
{
    size_t len = strlen(hex);
    if (len != OBI_DIGEST_HEX_LEN)
        return obi_error_set(err, -EINVAL, "digest %s: expected 64 hex characters, got %zu", hex,
                             len);
    obi_digest d = {0};
    for (size_t i = 0; i < len; i++)
        if (obi_hex_digit_value(hex[i]) < 0)
            return obi_error_set(err, -EINVAL, "digest %s: invalid hex character at offset %zu",
                                 hex, i);
    obi_hex_decode(hex, len, d.bytes, OBI_DIGEST_LEN);
    *out = d;
    return 0;
}

static const char B64[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

size_t obi_base64_encoded_len(size_t len)
{
    return (len + 2) / 3 * 4;
}

void obi_base64_encode(const uint8_t *data, size_t len, char *out)
{
    size_t o = 0, i = 0;
    for (; i + 3 <= len; i += 3) {
        uint32_t v = (uint32_t)data[i] << 16 | (uint32_t)data[i + 1] << 8 | data[i + 2];
        out[o++] = B64[v >> 18];
        out[o++] = B64[(v >> 12) & 63];
        out[o++] = B64[(v >> 6) & 63];
        out[o++] = B64[v & 63];
    }
    if (len - i == 1) {
        uint32_t v = (uint32_t)data[i] << 16;
        out[o++] = B64[v >> 18];
        out[o++] = B64[(v >> 12) & 63];
        out[o++] = '=';
        out[o++] = '=';
    } else if (len - i == 2) {
        uint32_t v = (uint32_t)data[i] << 16 | (uint32_t)data[i + 1] << 8;
        out[o++] = B64[v >> 18];
        out[o++] = B64[(v >> 12) & 63];
        out[o++] = B64[(v >> 6) & 63];
        out[o++] = '=';
    }
    out[o] = 0;
}

static int b64_value(char c)
{
    if (c >= 'A' && c <= 'Z')
        return c - 'A';
    if (c >= 'a' && c <= 'z')
        return c - 'a' + 26;
    if (c >= '0' && c <= '9')
        return c - '0' + 52;
    if (c == '+' || c == '-')
        return 62;
    if (c == '/' || c == '_')
        return 63;
    return -1;
}

int obi_base64_decode(const char *text, size_t text_len, uint8_t **out, size_t *out_len,
                      obi_error **err)
{
    if (text_len % 4 != 0)
        return obi_error_set(err, -EINVAL, "base64: length %zu is not a multiple of 4", text_len);
    size_t pad = 0;
    if (text_len >= 1 && text[text_len - 1] == '=')
        pad++;
    if (text_len >= 2 && text[text_len - 2] == '=')
        pad++;
    size_t n = text_len / 4 * 3 - pad;
    uint8_t *buf = malloc(n + 1);
    if (!buf)
        return obi_error_set(err, -ENOMEM, "base64: out of memory");
    size_t o = 0;
    for (size_t i = 0; i < text_len; i += 4) {
        uint32_t v = 0;
        for (size_t j = 0; j < 4; j++) {
            char c = text[i + j];
            int x;
            if (c == '=' && i + 4 == text_len && j >= 4 - pad) {
                x = 0;
            } else if ((x = b64_value(c)) < 0) {
                free(buf);
                return obi_error_set(err, -EINVAL, "base64: invalid character at offset %zu",
                                     i + j);
            }
            v = v << 6 | (uint32_t)x;
        }
        uint8_t bytes[3] = {(uint8_t)(v >> 16), (uint8_t)(v >> 8), (uint8_t)v};
        size_t take = (i + 4 == text_len) ? 3 - pad : 3;
        /* Non-canonical trailing bits are rejected so one digest has one text form. */
        if (i + 4 == text_len && pad && (v & ((1u << (8 * pad)) - 1)) != 0) {
            free(buf);
            return obi_error_set(err, -EINVAL, "base64: non-zero padding bits at offset %zu",
                                 i + 3 - pad);
        }
        memcpy(buf + o, bytes, take);
        o += take;
    }
    *out = buf;
    *out_len = o;
    return 0;
}

static const char B32[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";

size_t obi_base32_encoded_len(size_t len)
{
    return (len + 4) / 5 * 8;
}

void obi_base32_encode(const uint8_t *data, size_t len, char *out)
{
    size_t o = 0;
    for (size_t i = 0; i < len; i += 5) {
        uint8_t block[5] = {0};
        size_t take = len - i < 5 ? len - i : 5;
        memcpy(block, data + i, take);
        uint64_t v = (uint64_t)block[0] << 32 | (uint64_t)block[1] << 24 |
                     (uint64_t)block[2] << 16 | (uint64_t)block[3] << 8 | block[4];
        static const size_t chars_for[6] = {0, 2, 4, 5, 7, 8};
        for (size_t j = 0; j < 8; j++)
            out[o + j] = j < chars_for[take] ? B32[(v >> (35 - 5 * j)) & 31] : '=';
        o += 8;
    }
    out[o] = 0;
}

static const char NIX32[] = "0123456789abcdfghijklmnpqrsvwxyz";

size_t obi_nixbase32_encoded_len(size_t len)
{
    return (len * 8 + 4) / 5;
}

void obi_nixbase32_encode(const uint8_t *data, size_t len, char *out)
{
    size_t n = obi_nixbase32_encoded_len(len);
    for (size_t k = 0; k < n; k++) {
        size_t pos = n - 1 - k; /* character k encodes bit group pos, most significant first */
        size_t b = pos * 5, i = b / 8, j = b % 8;
        unsigned c = data[i] >> j;
        if (i + 1 < len)
            c |= (unsigned)data[i + 1] << (8 - j);
        out[k] = NIX32[c & 31];
    }
    out[n] = 0;
}

int obi_nixbase32_decode(const char *text, size_t text_len, uint8_t *out, size_t out_len,
                         obi_error **err)
{
    if (text_len != obi_nixbase32_encoded_len(out_len))
        return obi_error_set(err, -EINVAL, "nixbase32: expected %zu characters, got %zu",
                             obi_nixbase32_encoded_len(out_len), text_len);
    memset(out, 0, out_len);
    for (size_t k = 0; k < text_len; k++) {
        /* 32: the digits only; the terminating NUL is not one. */
        const char *p = memchr(NIX32, text[k], 32); // NOLINT(bugprone-not-null-terminated-result)
        if (!p || !text[k])
            return obi_error_set(err, -EINVAL, "nixbase32: invalid character at offset %zu", k);
        unsigned digit = (unsigned)(p - NIX32);
        size_t pos = text_len - 1 - k;
        size_t b = pos * 5, i = b / 8, j = b % 8;
        out[i] |= (uint8_t)(digit << j);
        unsigned carry = digit >> (8 - j);
        if (i + 1 < out_len)
            out[i + 1] |= (uint8_t)carry;
        else if (carry)
            return obi_error_set(err, -EINVAL, "nixbase32: value too large at offset %zu", k);
    }
    return 0;
}

char *obi_digest_to_b3_string(const obi_digest *d)
{
    char *out = malloc(3 + obi_base64_encoded_len(OBI_DIGEST_LEN) + 1);
    if (!out)
        return NULL;
    strcpy(out, "b3:");
    obi_base64_encode(d->bytes, OBI_DIGEST_LEN, out + 3);
    return out;
}
