/*
 * Fuzz target: the text decoders of digest.h. The first byte picks the decoder (and for Nix
 * base32 and hex the decoded length); the rest is the text. Whatever decodes must encode back
 * to the same text (modulo case for hex and the URL-safe base64 alphabet): the decoders are
 * strict, so no two texts decode to the same bytes.
 */
#include "fuzz_common.h"

#include <ctype.h>

#include "ocibuild/digest.h"

static void check_base64(const char *text, size_t len)
{
    cleanup_free uint8_t *bytes = NULL;
    size_t n = 0;
    cleanup_error obi_error *err = NULL;
    int r = obi_base64_decode(text, len, &bytes, &n, &err);
    FUZZ_CHECK_ERROR(r, err);
    if (r < 0)
        return;
    cleanup_free char *back = malloc(obi_base64_encoded_len(n) + 1);
    FUZZ_ASSERT(back != NULL);
    obi_base64_encode(bytes, n, back);
    FUZZ_ASSERT(strlen(back) == len);
    for (size_t i = 0; i < len; i++) {
        char c = text[i] == '-' ? '+' : text[i] == '_' ? '/' : text[i];
        FUZZ_ASSERT(back[i] == c);
    }
}

static void check_nixbase32(const char *text, size_t len, size_t out_len)
{
    uint8_t bytes[64];
    cleanup_error obi_error *err = NULL;
    int r = obi_nixbase32_decode(text, len, bytes, out_len, &err);
    FUZZ_CHECK_ERROR(r, err);
    if (r < 0)
        return;
    char back[128];
    FUZZ_ASSERT(obi_nixbase32_encoded_len(out_len) < sizeof(back));
    obi_nixbase32_encode(bytes, out_len, back);
    FUZZ_ASSERT(strlen(back) == len && memcmp(back, text, len) == 0);
}

static void check_hex(const char *text, size_t len, size_t out_len)
{
    uint8_t bytes[64];
    if (obi_hex_decode(text, len, bytes, out_len) < 0)
        return;
    char back[129];
    obi_hex_encode(bytes, out_len, back);
    FUZZ_ASSERT(strlen(back) == len);
    for (size_t i = 0; i < len; i++)
        FUZZ_ASSERT(back[i] == tolower((unsigned char)text[i]));
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1)
        return 0;
    uint8_t selector = data[0];
    const char *text = (const char *)data + 1;
    size_t len = size - 1;
    size_t out_len = (selector >> 2) % 64 + 1;
    switch (selector & 3) {
    case 0:
        check_base64(text, len);
        break;
    case 1:
        check_nixbase32(text, len, out_len);
        break;
    case 2:
        check_hex(text, len, out_len);
        break;
    default: {
        cleanup_free char *hex = fuzz_strndup((const uint8_t *)text, len);
        obi_digest digest;
        cleanup_error obi_error *err = NULL;
        int r = obi_digest_from_hex(hex, &digest, &err);
        FUZZ_CHECK_ERROR(r, err);
        break;
    }
    }
    return 0;
}
