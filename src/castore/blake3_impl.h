/*
 * Private interface between the BLAKE3 tree logic (blake3.c) and its compression backends
 * (portable C in blake3.c, blake3_sse41.c, blake3_avx2.c, blake3_avx512.c). Each SIMD file is
 * compiled with its own instruction-set flags and is only called after the CPU was checked.
 *
 * A backend provides two operations:
 *   - compress_in_place / compress_xof: one compression of one 64-byte block;
 *   - hash_many: the same sequence of `blocks` blocks compressed for many independent inputs at
 *     once (whole chunks, or parent nodes with blocks == 1), one lane per input, writing one
 *     32-byte chaining value per input to out. This is where the speed comes from.
 */
#ifndef OCIBUILD_BLAKE3_IMPL_H
#define OCIBUILD_BLAKE3_IMPL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

enum {
    BLAKE3_CHUNK_START = 1 << 0,
    BLAKE3_CHUNK_END = 1 << 1,
    BLAKE3_PARENT = 1 << 2,
    BLAKE3_ROOT = 1 << 3,
    BLAKE3_KEYED_HASH = 1 << 4,
    BLAKE3_DERIVE_KEY_CONTEXT = 1 << 5,
    BLAKE3_DERIVE_KEY_MATERIAL = 1 << 6,
};

/* The widest hash_many any backend has (AVX-512: 16 lanes of 32-bit words). */
#define BLAKE3_MAX_LANES 16

static const uint32_t BLAKE3_IV[8] = {0x6A09E667, 0xBB67AE85, 0x3C6EF372, 0xA54FF53A,
                                      0x510E527F, 0x9B05688C, 0x1F83D9AB, 0x5BE0CD19};

/* Message word order for each of the 7 rounds (the permutation applied r times). */
static const uint8_t BLAKE3_MSG_SCHEDULE[7][16] = {
    {0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15},
    {2, 6, 3, 10, 7, 0, 4, 13, 1, 11, 12, 5, 9, 14, 15, 8},
    {3, 4, 10, 12, 13, 2, 7, 14, 6, 5, 9, 0, 11, 15, 8, 1},
    {10, 7, 12, 9, 14, 3, 13, 15, 4, 0, 11, 2, 5, 8, 1, 6},
    {12, 13, 9, 11, 15, 10, 14, 8, 7, 2, 5, 3, 0, 1, 6, 4},
    {9, 14, 11, 5, 8, 12, 15, 1, 13, 3, 0, 10, 2, 6, 4, 7},
    {11, 15, 5, 0, 1, 9, 8, 6, 14, 10, 2, 12, 3, 4, 7, 13},
};

typedef void (*blake3_compress_in_place_fn)(uint32_t cv[8], const uint8_t block[64],
                                            uint8_t block_len, uint64_t counter, uint8_t flags);
typedef void (*blake3_compress_xof_fn)(const uint32_t cv[8], const uint8_t block[64],
                                       uint8_t block_len, uint64_t counter, uint8_t flags,
                                       uint8_t out[64]);
/*
 * Hashes inputs[0..count) (each `blocks` * 64 bytes long) starting from `key`. Input i uses
 * counter + i if increment_counter, else counter. The first block gets flags | flags_start,
 * the last flags | flags_end. Writes count chaining values (32 bytes each, little endian).
 */
typedef void (*blake3_hash_many_fn)(const uint8_t *const *inputs, size_t count, size_t blocks,
                                    const uint32_t key[8], uint64_t counter, bool increment_counter,
                                    uint8_t flags, uint8_t flags_start, uint8_t flags_end,
                                    uint8_t *out);

void blake3_compress_in_place_portable(uint32_t cv[8], const uint8_t block[64], uint8_t block_len,
                                       uint64_t counter, uint8_t flags);
void blake3_compress_xof_portable(const uint32_t cv[8], const uint8_t block[64], uint8_t block_len,
                                  uint64_t counter, uint8_t flags, uint8_t out[64]);
void blake3_hash_many_portable(const uint8_t *const *inputs, size_t count, size_t blocks,
                               const uint32_t key[8], uint64_t counter, bool increment_counter,
                               uint8_t flags, uint8_t flags_start, uint8_t flags_end, uint8_t *out);

void blake3_compress_in_place_sse41(uint32_t cv[8], const uint8_t block[64], uint8_t block_len,
                                    uint64_t counter, uint8_t flags);
void blake3_compress_xof_sse41(const uint32_t cv[8], const uint8_t block[64], uint8_t block_len,
                               uint64_t counter, uint8_t flags, uint8_t out[64]);
void blake3_hash_many_sse41(const uint8_t *const *inputs, size_t count, size_t blocks,
                            const uint32_t key[8], uint64_t counter, bool increment_counter,
                            uint8_t flags, uint8_t flags_start, uint8_t flags_end, uint8_t *out);

/* AVX2 only widens hash_many; single blocks use the SSE4.1 code (AVX2 implies SSE4.1). */
void blake3_hash_many_avx2(const uint8_t *const *inputs, size_t count, size_t blocks,
                           const uint32_t key[8], uint64_t counter, bool increment_counter,
                           uint8_t flags, uint8_t flags_start, uint8_t flags_end, uint8_t *out);

void blake3_hash_many_avx512(const uint8_t *const *inputs, size_t count, size_t blocks,
                             const uint32_t key[8], uint64_t counter, bool increment_counter,
                             uint8_t flags, uint8_t flags_start, uint8_t flags_end, uint8_t *out);

#endif
