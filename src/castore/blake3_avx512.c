/*
 * BLAKE3 backend for AVX-512 F+VL (compiled with -mavx512f -mavx512vl, called only when the
 * CPU has both): hash_many over 16 inputs at once in the transposed layout of blake3_lanes.h,
 * with the native 32-bit rotate. Fewer than 16 inputs go to the AVX2 code.
 */
#include <immintrin.h>

#include "blake3_impl.h"

#define LANES 16
typedef __m512i lanes_vec;

#define lanes_add _mm512_add_epi32
#define lanes_xor _mm512_xor_si512
#define lanes_rot16(x) _mm512_ror_epi32((x), 16)
#define lanes_rot12(x) _mm512_ror_epi32((x), 12)
#define lanes_rot8(x) _mm512_ror_epi32((x), 8)
#define lanes_rot7(x) _mm512_ror_epi32((x), 7)
#define lanes_set1(w) _mm512_set1_epi32((int)(w))
#define lanes_loadu(p) _mm512_loadu_si512((const void *)(p))
#define lanes_storeu(p, v) _mm512_storeu_si512((void *)(p), (v))

/*
 * m[w] lane i = word w of inputs[i] + offset: a 16x16 transpose. Step one transposes the 4x4
 * word blocks inside each 128-bit quarter for the row groups 4g..4g+3; step two transposes the
 * resulting 4x4 matrix of 128-bit quarters with two rounds of shuffle_i32x4.
 */
static inline __attribute__((always_inline)) void
lanes_load_message(__m512i m[16], const uint8_t *const *inputs, size_t offset)
{
    __m512i u[4][4]; /* u[g][j], quarter k: word 4k+j of rows 4g..4g+3 */
    for (int g = 0; g < 4; g++) {
        const uint8_t *const *rows = inputs + 4 * g;
        __m512i r0 = _mm512_loadu_si512((const void *)(rows[0] + offset));
        __m512i r1 = _mm512_loadu_si512((const void *)(rows[1] + offset));
        __m512i r2 = _mm512_loadu_si512((const void *)(rows[2] + offset));
        __m512i r3 = _mm512_loadu_si512((const void *)(rows[3] + offset));
        __m512i t0 = _mm512_unpacklo_epi32(r0, r1);
        __m512i t1 = _mm512_unpackhi_epi32(r0, r1);
        __m512i t2 = _mm512_unpacklo_epi32(r2, r3);
        __m512i t3 = _mm512_unpackhi_epi32(r2, r3);
        u[g][0] = _mm512_unpacklo_epi64(t0, t2);
        u[g][1] = _mm512_unpackhi_epi64(t0, t2);
        u[g][2] = _mm512_unpacklo_epi64(t1, t3);
        u[g][3] = _mm512_unpackhi_epi64(t1, t3);
    }
    for (int j = 0; j < 4; j++) {
        /* quarters: v0 = u0.q0 u0.q1 u1.q0 u1.q1, v1 = u0.q2 u0.q3 u1.q2 u1.q3, same for v2/v3 */
        __m512i v0 = _mm512_shuffle_i32x4(u[0][j], u[1][j], 0x44);
        __m512i v1 = _mm512_shuffle_i32x4(u[0][j], u[1][j], 0xEE);
        __m512i v2 = _mm512_shuffle_i32x4(u[2][j], u[3][j], 0x44);
        __m512i v3 = _mm512_shuffle_i32x4(u[2][j], u[3][j], 0xEE);
        m[0 + j] = _mm512_shuffle_i32x4(v0, v2, 0x88);  /* quarter 0 of u0..u3 */
        m[4 + j] = _mm512_shuffle_i32x4(v0, v2, 0xDD);  /* quarter 1 */
        m[8 + j] = _mm512_shuffle_i32x4(v1, v3, 0x88);  /* quarter 2 */
        m[12 + j] = _mm512_shuffle_i32x4(v1, v3, 0xDD); /* quarter 3 */
    }
}

#include "blake3_lanes.h"

void blake3_hash_many_avx512(const uint8_t *const *inputs, size_t count, size_t blocks,
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
    blake3_hash_many_avx2(inputs, count, blocks, key, counter, increment_counter, flags,
                          flags_start, flags_end, out);
}
