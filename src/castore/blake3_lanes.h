/*
 * The lane-parallel BLAKE3 compression shared by the SSE4.1, AVX2 and AVX-512 backends: LANES
 * independent inputs are hashed at once, each 32-bit vector lane holding the same state word of
 * a different input ("transposed" layout), so the G function needs no shuffles at all.
 *
 * Included once by each SIMD file, which first defines for its instruction set:
 *   LANES                          number of 32-bit lanes in lanes_vec
 *   lanes_vec                      the vector type
 *   lanes_add, lanes_xor           lane-wise 32-bit add and xor
 *   lanes_rot16/12/8/7             lane-wise rotate right
 *   lanes_set1(uint32_t)           broadcast
 *   lanes_loadu / lanes_storeu     unaligned load/store of LANES uint32_t
 *   lanes_load_message(m, inputs, offset)
 *                                  m[w] lane i = message word w of inputs[i] + offset (64 bytes)
 * and gets hash_lanes(), which hashes LANES inputs of `blocks` blocks each. The includer has
 * included <immintrin.h> (for _mm_prefetch).
 */
#ifndef LANES
#error "define LANES and the lanes_* operations before including blake3_lanes.h"
#endif

#include <string.h>

#include "blake3_impl.h"

#define LANES_ALWAYS_INLINE static inline __attribute__((always_inline))

/* Quarter round on the four columns (or diagonals) at once, interleaved for parallelism. */
LANES_ALWAYS_INLINE void lanes_g4(lanes_vec v[16], int a0, int b0, int c0, int d0, int a1, int b1,
                                  int c1, int d1, int a2, int b2, int c2, int d2, int a3, int b3,
                                  int c3, int d3, lanes_vec x0, lanes_vec y0, lanes_vec x1,
                                  lanes_vec y1, lanes_vec x2, lanes_vec y2, lanes_vec x3,
                                  lanes_vec y3)
{
    v[a0] = lanes_add(lanes_add(v[a0], v[b0]), x0);
    v[a1] = lanes_add(lanes_add(v[a1], v[b1]), x1);
    v[a2] = lanes_add(lanes_add(v[a2], v[b2]), x2);
    v[a3] = lanes_add(lanes_add(v[a3], v[b3]), x3);
    v[d0] = lanes_rot16(lanes_xor(v[d0], v[a0]));
    v[d1] = lanes_rot16(lanes_xor(v[d1], v[a1]));
    v[d2] = lanes_rot16(lanes_xor(v[d2], v[a2]));
    v[d3] = lanes_rot16(lanes_xor(v[d3], v[a3]));
    v[c0] = lanes_add(v[c0], v[d0]);
    v[c1] = lanes_add(v[c1], v[d1]);
    v[c2] = lanes_add(v[c2], v[d2]);
    v[c3] = lanes_add(v[c3], v[d3]);
    v[b0] = lanes_rot12(lanes_xor(v[b0], v[c0]));
    v[b1] = lanes_rot12(lanes_xor(v[b1], v[c1]));
    v[b2] = lanes_rot12(lanes_xor(v[b2], v[c2]));
    v[b3] = lanes_rot12(lanes_xor(v[b3], v[c3]));
    v[a0] = lanes_add(lanes_add(v[a0], v[b0]), y0);
    v[a1] = lanes_add(lanes_add(v[a1], v[b1]), y1);
    v[a2] = lanes_add(lanes_add(v[a2], v[b2]), y2);
    v[a3] = lanes_add(lanes_add(v[a3], v[b3]), y3);
    v[d0] = lanes_rot8(lanes_xor(v[d0], v[a0]));
    v[d1] = lanes_rot8(lanes_xor(v[d1], v[a1]));
    v[d2] = lanes_rot8(lanes_xor(v[d2], v[a2]));
    v[d3] = lanes_rot8(lanes_xor(v[d3], v[a3]));
    v[c0] = lanes_add(v[c0], v[d0]);
    v[c1] = lanes_add(v[c1], v[d1]);
    v[c2] = lanes_add(v[c2], v[d2]);
    v[c3] = lanes_add(v[c3], v[d3]);
    v[b0] = lanes_rot7(lanes_xor(v[b0], v[c0]));
    v[b1] = lanes_rot7(lanes_xor(v[b1], v[c1]));
    v[b2] = lanes_rot7(lanes_xor(v[b2], v[c2]));
    v[b3] = lanes_rot7(lanes_xor(v[b3], v[c3]));
}

LANES_ALWAYS_INLINE void lanes_round(lanes_vec v[16], const lanes_vec m[16], int r)
{
    const uint8_t *s = BLAKE3_MSG_SCHEDULE[r];
    lanes_g4(v, 0, 4, 8, 12, 1, 5, 9, 13, 2, 6, 10, 14, 3, 7, 11, 15, m[s[0]], m[s[1]], m[s[2]],
             m[s[3]], m[s[4]], m[s[5]], m[s[6]], m[s[7]]);
    lanes_g4(v, 0, 5, 10, 15, 1, 6, 11, 12, 2, 7, 8, 13, 3, 4, 9, 14, m[s[8]], m[s[9]], m[s[10]],
             m[s[11]], m[s[12]], m[s[13]], m[s[14]], m[s[15]]);
}

LANES_ALWAYS_INLINE void lanes_store_cvs(const lanes_vec cv[8], uint8_t *out)
{
    uint32_t words[8][LANES];
    for (int w = 0; w < 8; w++)
        lanes_storeu(words[w], cv[w]);
    for (int lane = 0; lane < LANES; lane++)
        for (int w = 0; w < 8; w++)
            memcpy(out + lane * 32 + w * 4, &words[w][lane], 4); /* x86 is little endian */
}

static void hash_lanes(const uint8_t *const *inputs, size_t blocks, const uint32_t key[8],
                       uint64_t counter, bool increment_counter, uint8_t flags, uint8_t flags_start,
                       uint8_t flags_end, uint8_t *out)
{
    lanes_vec cv[8];
    for (int i = 0; i < 8; i++)
        cv[i] = lanes_set1(key[i]);
    uint32_t counter_low[LANES], counter_high[LANES];
    for (int lane = 0; lane < LANES; lane++) {
        uint64_t c = counter + (increment_counter ? (uint64_t)lane : 0);
        counter_low[lane] = (uint32_t)c;
        counter_high[lane] = (uint32_t)(c >> 32);
    }
    const lanes_vec low = lanes_loadu(counter_low), high = lanes_loadu(counter_high);
    uint8_t block_flags = flags | flags_start;
    for (size_t b = 0; b < blocks; b++) {
        if (b + 1 == blocks)
            block_flags |= flags_end;
        /* The lanes read LANES separate streams, too many for the hardware prefetcher to
         * follow from DRAM: ask for each lane's data four blocks ahead. Near the end, ask for
         * the start of where the same lane of the next batch of chunks lies when the inputs
         * are consecutive chunks (the common case). Prefetches never fault. */
        size_t ahead = (b + 4) * 64;
        if (b + 4 >= blocks)
            ahead = (b + 4 - blocks) * 64 + (size_t)LANES * blocks * 64;
        for (int lane = 0; lane < LANES; lane++)
            _mm_prefetch((const char *)inputs[lane] + ahead, _MM_HINT_T0);
        lanes_vec m[16];
        lanes_load_message(m, inputs, b * 64);
        lanes_vec v[16] = {
            cv[0],
            cv[1],
            cv[2],
            cv[3],
            cv[4],
            cv[5],
            cv[6],
            cv[7],
            lanes_set1(BLAKE3_IV[0]),
            lanes_set1(BLAKE3_IV[1]),
            lanes_set1(BLAKE3_IV[2]),
            lanes_set1(BLAKE3_IV[3]),
            low,
            high,
            lanes_set1(64),
            lanes_set1(block_flags),
        };
        lanes_round(v, m, 0);
        lanes_round(v, m, 1);
        lanes_round(v, m, 2);
        lanes_round(v, m, 3);
        lanes_round(v, m, 4);
        lanes_round(v, m, 5);
        lanes_round(v, m, 6);
        for (int i = 0; i < 8; i++)
            cv[i] = lanes_xor(v[i], v[i + 8]);
        block_flags = flags;
    }
    lanes_store_cvs(cv, out);
}
