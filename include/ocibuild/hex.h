/*
 * Hexadecimal text of bytes: lowercase out, either case in, strict. Digests (digest.h), URL
 * percent-escapes (url.h), SHA-256 names of image blobs and random tokens all use this one.
 */
#ifndef OCIBUILD_HEX_H
#define OCIBUILD_HEX_H

#include <stddef.h>
#include <stdint.h>

/* Lowercase hex of len bytes into out (2*len+1 bytes, NUL-terminated). */
void obi_hex_encode(const uint8_t *data, size_t len, char *out);
/* Strict hex decode (either case) of exactly 2*out_len characters; -EINVAL otherwise. */
int obi_hex_decode(const char *hex, size_t hex_len, uint8_t *out, size_t out_len);
/* The value of one hex digit (either case), or -1. */
int obi_hex_digit_value(char c);

#endif
