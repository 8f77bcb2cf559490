/*
 * BLAKE3 backend for SSE4.1 (compiled with -msse4.1, called only when the CPU has it):
 *   - a single-block compression with the state held as four rows of four words, the diagonal
 *     step done by rotating rows 1-3 ("diagonalize") so every G runs on whole vectors, and the
 *     message permuted between rounds with shuffles;
 *   - hash_many over 4 inputs at once in the transposed layout of blake3_lanes.h.
 * The AVX2 backend reuses the single-block compression from here.
 */
#include <immintrin.h>
#include <string.h>

#include "blake3_impl.h"

static inline __m128i rot16_128(__m128i x)
{
    return _mm_shuffle_epi8(x, _mm_setr_epi8(2, 3, 0, 1, 6, 7, 4, 5, 10, 11, 8, 9, 14, 15, 12, 13));
}

static inline __m128i rot8_128(__m128i x)
{
    return _mm_shuffle_epi8(x, _mm_setr_epi8(1, 2, 3, 0, 5, 6, 7, 4, 9, 10, 11, 8, 13, 14, 15, 12));
}

static inline __m128i rot12_128(__m128i x)
{
    return _mm_or_si128(_mm_srli_epi32(x, 12), _mm_slli_epi32(x, 20));
}

static inline __m128i rot7_128(__m128i x)
{
    return _mm_or_si128(_mm_srli_epi32(x, 7), _mm_slli_epi32(x, 25));
}

/* ---- single block, row layout ---- */

static inline __attribute__((always_inline)) void g_rows(__m128i *a, __m128i *b, __m128i *c,
                                                         __m128i *d, __m128i x, __m128i y)
{
    *a = _mm_add_epi32(_mm_add_epi32(*a, *b), x);
    *d = rot16_128(_mm_xor_si128(*d, *a));
    *c = _mm_add_epi32(*c, *d);
    *b = rot12_128(_mm_xor_si128(*b, *c));
    *a = _mm_add_epi32(_mm_add_epi32(*a, *b), y);
    *d = rot8_128(_mm_xor_si128(*d, *a));
    *c = _mm_add_epi32(*c, *d);
    *b = rot7_128(_mm_xor_si128(*b, *c));
}

/* _mm_shuffle_ps on integer vectors: words (a[i], a[j], b[k], b[l]) for _MM_SHUFFLE(l, k, j, i). */
#define shuffle_words(a, b, imm)                                                                   \
    _mm_castps_si128(_mm_shuffle_ps(_mm_castsi128_ps(a), _mm_castsi128_ps(b), (imm)))

/*
 * The message of a round as the four vectors its G functions take: x = the words of the
 * column step's first additions (m[s0], m[s2], m[s4], m[s6]), y = its second ones (s1, s3, s5,
 * s7), and likewise z, w for the diagonal step (s8.. s15). Going to the next round applies the
 * message permutation P (m'[i] = m[P[i]]) to these vectors directly; with
 * P = 2 6 3 10 7 0 4 13 1 11 12 5 9 14 15 8 that works out to
 *   x' = x1 y1 y3 x2,  y' = x3 z1 x0 w2,  z' = y0 z2 w0 w3,  w' = w1 y2 z3 z0.
 */
static inline __attribute__((always_inline)) void permute_message(__m128i *x, __m128i *y,
                                                                  __m128i *z, __m128i *w)
{
    __m128i x0 = *x, y0 = *y, z0 = *z, w0 = *w;
    /* x1 x2 y1 y3 -> x1 y1 y3 x2 */
    *x = _mm_shuffle_epi32(shuffle_words(x0, y0, _MM_SHUFFLE(3, 1, 2, 1)), _MM_SHUFFLE(1, 3, 2, 0));
    /* x3 x0 z1 z1 -> x3 z1 x0 z1, then w2 into the last word */
    __m128i t =
        _mm_shuffle_epi32(shuffle_words(x0, z0, _MM_SHUFFLE(1, 1, 0, 3)), _MM_SHUFFLE(3, 1, 2, 0));
    *y = _mm_blend_epi16(t, _mm_shuffle_epi32(w0, _MM_SHUFFLE(2, 2, 2, 2)), 0xC0);
    /* z2 z2 w0 w3, then y0 into the first word */
    *z = _mm_blend_epi16(shuffle_words(z0, w0, _MM_SHUFFLE(3, 0, 2, 2)), y0, 0x03);
    /* w1 w1 z3 z0, then y2 into the second word */
    *w = _mm_blend_epi16(shuffle_words(w0, z0, _MM_SHUFFLE(0, 3, 1, 1)),
                         _mm_shuffle_epi32(y0, _MM_SHUFFLE(2, 2, 2, 2)), 0x0C);
}

static inline __attribute__((always_inline)) void
compress_rows(__m128i rows[4], const uint32_t cv[8], const uint8_t block[64], uint8_t block_len,
              uint64_t counter, uint8_t flags)
{
    __m128i a = _mm_loadu_si128((const __m128i *)cv);
    __m128i b = _mm_loadu_si128((const __m128i *)(cv + 4));
    __m128i c = _mm_loadu_si128((const __m128i *)BLAKE3_IV);
    __m128i d = _mm_setr_epi32((int)(uint32_t)counter, (int)(uint32_t)(counter >> 32),
                               (int)block_len, (int)flags);
    /* x86 is little endian: the block's words load as they are. */
    __m128i m0 = _mm_loadu_si128((const __m128i *)block);
    __m128i m1 = _mm_loadu_si128((const __m128i *)(block + 16));
    __m128i m2 = _mm_loadu_si128((const __m128i *)(block + 32));
    __m128i m3 = _mm_loadu_si128((const __m128i *)(block + 48));
    __m128i x = shuffle_words(m0, m1, _MM_SHUFFLE(2, 0, 2, 0)); /* m0 m2 m4 m6 */
    __m128i y = shuffle_words(m0, m1, _MM_SHUFFLE(3, 1, 3, 1)); /* m1 m3 m5 m7 */
    __m128i z = shuffle_words(m2, m3, _MM_SHUFFLE(2, 0, 2, 0)); /* m8 m10 m12 m14 */
    __m128i w = shuffle_words(m2, m3, _MM_SHUFFLE(3, 1, 3, 1)); /* m9 m11 m13 m15 */
    for (int r = 0; r < 7; r++) {
        if (r > 0)
            permute_message(&x, &y, &z, &w);
        g_rows(&a, &b, &c, &d, x, y);
        /* Diagonalize: lane j then holds the G on (a[j], b[j+1], c[j+2], d[j+3]). */
        b = _mm_shuffle_epi32(b, _MM_SHUFFLE(0, 3, 2, 1));
        c = _mm_shuffle_epi32(c, _MM_SHUFFLE(1, 0, 3, 2));
        d = _mm_shuffle_epi32(d, _MM_SHUFFLE(2, 1, 0, 3));
        g_rows(&a, &b, &c, &d, z, w);
        b = _mm_shuffle_epi32(b, _MM_SHUFFLE(2, 1, 0, 3));
        c = _mm_shuffle_epi32(c, _MM_SHUFFLE(1, 0, 3, 2));
        d = _mm_shuffle_epi32(d, _MM_SHUFFLE(0, 3, 2, 1));
    }
    rows[0] = a;
    rows[1] = b;
    rows[2] = c;
    rows[3] = d;
}

void blake3_compress_in_place_sse41(uint32_t cv[8], const uint8_t block[64], uint8_t block_len,
                                    uint64_t counter, uint8_t flags)
{
    __m128i rows[4];
    compress_rows(rows, cv, block, block_len, counter, flags);
    _mm_storeu_si128((__m128i *)cv, _mm_xor_si128(rows[0], rows[2]));
    _mm_storeu_si128((__m128i *)(cv + 4), _mm_xor_si128(rows[1], rows[3]));
}

void blake3_compress_xof_sse41(const uint32_t cv[8], const uint8_t block[64], uint8_t block_len,
                               uint64_t counter, uint8_t flags, uint8_t out[64])
{
    __m128i rows[4];
    compress_rows(rows, cv, block, block_len, counter, flags);
    _mm_storeu_si128((__m128i *)out, _mm_xor_si128(rows[0], rows[2]));
    _mm_storeu_si128((__m128i *)(out + 16), _mm_xor_si128(rows[1], rows[3]));
    _mm_storeu_si128((__m128i *)(out + 32),
                     _mm_xor_si128(rows[2], _mm_loadu_si128((const __m128i *)cv)));
    _mm_storeu_si128((__m128i *)(out + 48),
                     _mm_xor_si128(rows[3], _mm_loadu_si128((const __m128i *)(cv + 4))));
}

/* ---- four inputs at once, transposed layout ---- */

#define LANES 4
typedef __m128i lanes_vec;
#define lanes_add _mm_add_epi32
#define lanes_xor _mm_xor_si128
#define lanes_rot16 rot16_128
#define lanes_rot12 rot12_128
#define lanes_rot8 rot8_128
#define lanes_rot7 rot7_128
#define lanes_set1(w) _mm_set1_epi32((int)(w))
#define lanes_loadu(p) _mm_loadu_si128((const __m128i *)(p))
#define lanes_storeu(p, v) _mm_storeu_si128((__m128i *)(p), (v))

/* m[w] lane i = word w of inputs[i] + offset: four 4x4 transposes of 16-byte rows. */
static inline __attribute__((always_inline)) void
lanes_load_message(__m128i m[16], const uint8_t *const *inputs, size_t offset)
{
    for (int q = 0; q < 4; q++) {
        __m128i r0 = _mm_loadu_si128((const __m128i *)(inputs[0] + offset + 16 * q));
        __m128i r1 = _mm_loadu_si128((const __m128i *)(inputs[1] + offset + 16 * q));
        __m128i r2 = _mm_loadu_si128((const __m128i *)(inputs[2] + offset + 16 * q));
        __m128i r3 = _mm_loadu_si128((const __m128i *)(inputs[3] + offset + 16 * q));
        __m128i t0 = _mm_unpacklo_epi32(r0, r1); /* r0w0 r1w0 r0w1 r1w1 */
        __m128i t1 = _mm_unpackhi_epi32(r0, r1); /* r0w2 r1w2 r0w3 r1w3 */
        __m128i t2 = _mm_unpacklo_epi32(r2, r3);
        __m128i t3 = _mm_unpackhi_epi32(r2, r3);
        m[4 * q + 0] = _mm_unpacklo_epi64(t0, t2);
        m[4 * q + 1] = _mm_unpackhi_epi64(t0, t2);
        m[4 * q + 2] = _mm_unpacklo_epi64(t1, t3);
        m[4 * q + 3] = _mm_unpackhi_epi64(t1, t3);
    }
}

#include "blake3_lanes.h"

void blake3_hash_many_sse41(const uint8_t *const *inputs, size_t count, size_t blocks,
                            const uint32_t key[8], uint64_t counter, bool increment_counter,
                            uint8_t flags, uint8_t flags_start, uint8_t flags_end, uint8_t *out)
{
    while (count >= LANES) {
        hash_lanes(inputs, blocks, key, counter, increment_counter, flags, flags_start, flags_end,
                   out);
        if (increment_counter)
            counter += LANES;
        inputs += LANES;
        count -= LANES;
        out += LANES * 32;
    }
    /* The last 1-3 inputs, one after the other with the single-block compression. */
    for (size_t i = 0; i < count; i++) {
        uint32_t cv[8];
        memcpy(cv, key, 32);
        uint8_t block_flags = flags | flags_start;
        for (size_t b = 0; b < blocks; b++) {
            if (b + 1 == blocks)
                block_flags |= flags_end;
            blake3_compress_in_place_sse41(cv, inputs[i] + b * 64, 64, counter, block_flags);
            block_flags = flags;
        }
        memcpy(out + i * 32, cv, 32);
        if (increment_counter)
            counter++;
    }
}
