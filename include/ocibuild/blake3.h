/*
 * BLAKE3, written from the specification. Incremental hasher with the default hash, keyed hash
 * and derive-key modes and extendable output. The compression backend (portable, SSE4.1, AVX2,
 * AVX-512) is chosen once at run time from the CPU's features; all give identical results.
 * Large updates are hashed many chunks at a time, so feed big buffers (1 MiB or more).
 */
#ifndef OCIBUILD_BLAKE3_H
#define OCIBUILD_BLAKE3_H

#include <stddef.h>
#include <stdint.h>

#define OBI_BLAKE3_OUT_LEN 32
#define OBI_BLAKE3_KEY_LEN 32
#define OBI_BLAKE3_BLOCK_LEN 64
#define OBI_BLAKE3_CHUNK_LEN 1024
#define OBI_BLAKE3_MAX_DEPTH 54

/* Public for stack allocation only; the fields are private to blake3.c. */
typedef struct obi_blake3_chunk_state {
    uint32_t cv[8];
    uint64_t chunk_counter;
    uint8_t buf[OBI_BLAKE3_BLOCK_LEN];
    uint8_t buf_len;
    uint8_t blocks_compressed;
    uint8_t flags;
} obi_blake3_chunk_state;

typedef struct obi_blake3_hasher {
    uint32_t key[8];
    obi_blake3_chunk_state chunk;
    uint8_t cv_stack_len;
    uint8_t cv_stack[(OBI_BLAKE3_MAX_DEPTH + 1) * OBI_BLAKE3_OUT_LEN];
} obi_blake3_hasher;

void obi_blake3_init(obi_blake3_hasher *hasher);
void obi_blake3_init_keyed(obi_blake3_hasher *hasher, const uint8_t key[OBI_BLAKE3_KEY_LEN]);
void obi_blake3_init_derive_key(obi_blake3_hasher *hasher, const char *context);
void obi_blake3_update(obi_blake3_hasher *hasher, const void *input, size_t input_len);
/* Does not modify the hasher: more input may follow, and any output length is allowed. */
void obi_blake3_finalize(const obi_blake3_hasher *hasher, uint8_t *out, size_t out_len);
/* One-shot 32-byte hash. */
void obi_blake3(const void *input, size_t input_len, uint8_t out[OBI_BLAKE3_OUT_LEN]);
/*
 * Name of the backend in use: "portable", "sse41", "avx2" or "avx512". The default is the best
 * one the CPU has; the environment variable OBI_BLAKE3_BACKEND (read once) can name another,
 * which is ignored (and this still reports the one in use) if the CPU lacks it.
 */
const char *obi_blake3_backend(void);
/*
 * For tests and benchmarks: switch every hasher in the process to the named backend (NULL: back
 * to the default). Returns -EINVAL for an unknown name, -ENOTSUP if the CPU lacks it. All
 * backends give identical results, so switching while other threads hash is harmless.
 */
int obi_blake3_use_backend(const char *name);

#endif
