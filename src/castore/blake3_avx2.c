/*
 * BLAKE3 backend for AVX2 (compiled with -mavx2, called only when the CPU has it): hash_many
 * over 8 inputs at once in the transposed layout of blake3_lanes.h. Fewer than 8 inputs go to
 * the SSE4.1 code, which every AVX2 CPU also has.
 */
#include <immintrin.h>

#include "blake3_impl.h"

#define LANES 8
typedef __m256i lanes_vec;

static inline __m256i rot16_256(__m256i x)
{
    const __m256i mask = _mm256_setr_epi8(2, 3, 0, 1, 6, 7, 4, 5, 10, 11, 8, 9, 14, 15, 12, 13, 2,
                                          3, 0, 1, 6, 7, 4, 5, 10, 11, 8, 9, 14, 15, 12, 13);
    return _mm256_shuffle_epi8(x, mask);
}

static inline __m256i rot8_256(__m256i x)
{
    const __m256i mask = _mm256_setr_epi8(1, 2, 3, 0, 5, 6, 7, 4, 9, 10, 11, 8, 13, 14, 15, 12, 1,
                                          2, 3, 0, 5, 6, 7, 4, 9, 10, 11, 8, 13, 14, 15, 12);
    return _mm256_shuffle_epi8(x, mask);
}

static inline __m256i rot12_256(__m256i x)
{
    return _mm256_or_si256(_mm256_srli_epi32(x, 12), _mm256_slli_epi32(x, 20));
}

static inline __m256i rot7_256(__m256i x)
{
    return _mm256_or_si256(_mm256_srli_epi32(x, 7), _mm256_slli_epi32(x, 25));
}

#define lanes_add _mm256_add_epi32
#define lanes_xor _mm256_xor_si256
#define lanes_rot16 rot16_256
#define lanes_rot12 rot12_256
#define lanes_rot8 rot8_256
#define lanes_rot7 rot7_256
#define lanes_set1(w) _mm256_set1_epi32((int)(w))
#define lanes_loadu(p) _mm256_loadu_si256((const __m256i *)(p))
#define lanes_storeu(p, v) _mm256_storeu_si256((__m256i *)(p), (v))

/*
 * m[w] lane i = word w of inputs[i] + offset. Each half block (8 words) is an 8x8 transpose:
 * 4x4 transposes inside the 128-bit halves of rows 0-3 and rows 4-7, then the halves are
 * recombined across the two groups.
 */
static inline __attribute__((always_inline)) void
lanes_load_message(__m256i m[16], const uint8_t *const *inputs, size_t offset)
{
    for (int h = 0; h < 2; h++) {
        __m256i u[2][4];
        for (int g = 0; g < 2; g++) {
            const uint8_t *const *rows = inputs + 4 * g;
            __m256i r0 = _mm256_loadu_si256((const __m256i *)(rows[0] + offset + 32 * h));
            __m256i r1 = _mm256_loadu_si256((const __m256i *)(rows[1] + offset + 32 * h));
            __m256i r2 = _mm256_loadu_si256((const __m256i *)(rows[2] + offset + 32 * h));
            __m256i r3 = _mm256_loadu_si256((const __m256i *)(rows[3] + offset + 32 * h));
            __m256i t0 = _mm256_unpacklo_epi32(r0, r1);
            __m256i t1 = _mm256_unpackhi_epi32(r0, r1);
            __m256i t2 = _mm256_unpacklo_epi32(r2, r3);
            __m256i t3 = _mm256_unpackhi_epi32(r2, r3);
            /* u[g][j], 128-bit half k: word 4k+j of rows 4g..4g+3 */
            u[g][0] = _mm256_unpacklo_epi64(t0, t2);
            u[g][1] = _mm256_unpackhi_epi64(t0, t2);
            u[g][2] = _mm256_unpacklo_epi64(t1, t3);
            u[g][3] = _mm256_unpackhi_epi64(t1, t3);
        }
        for (int j = 0; j < 4; j++) {
            m[8 * h + j] = _mm256_permute2x128_si256(u[0][j], u[1][j], 0x20);
            m[8 * h + 4 + j] = _mm256_permute2x128_si256(u[0][j], u[1][j], 0x31);
        }
    }
}

#include "blake3_lanes.h"

void blake3_hash_many_avx2(const uint8_t *const *inputs, size_t count, size_t blocks,
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
    blake3_hash_many_sse41(inputs, count, blocks, key, counter, increment_counter, flags,
                           flags_start, flags_end, out);
}
