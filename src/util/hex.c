/*
 * Hexadecimal text of bytes (see include/ocibuild/hex.h).
 */
#include <errno.h>

#include "ocibuild/hex.h"

static const char HEX[] = "0123456789abcdef";

void obi_hex_encode(const uint8_t *data, size_t len, char *out)
{
    for (size_t i = 0; i < len; i++) {
        out[2 * i] = HEX[data[i] >> 4];
        out[2 * i + 1] = HEX[data[i] & 15];
    }
    out[2 * len] = 0;
}

int obi_hex_digit_value(char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    return -1;
}

int obi_hex_decode(const char *hex, size_t hex_len, uint8_t *out, size_t out_len)
{
    if (hex_len != 2 * out_len)
        return -EINVAL;
    for (size_t i = 0; i < out_len; i++) {
        int hi = obi_hex_digit_value(hex[2 * i]), lo = obi_hex_digit_value(hex[2 * i + 1]);
        if (hi < 0 || lo < 0)
            return -EINVAL;
        out[i] = (uint8_t)(hi << 4 | lo);
    }
    return 0;
}
