/*
 * BLAKE3 from the specification (the paper's section 2 and the reference design): chunk state,
 * chaining-value stack with lazy merging, root output with extendable length. This file holds
 * the portable compression function; SIMD backends plug in through blake3_impl.h.
 */
#include <string.h>

#include "ocibuild/blake3.h"

enum {
    CHUNK_START = 1 << 0,
    CHUNK_END = 1 << 1,
    PARENT = 1 << 2,
    ROOT = 1 << 3,
    KEYED_HASH = 1 << 4,
    DERIVE_KEY_CONTEXT = 1 << 5,
    DERIVE_KEY_MATERIAL = 1 << 6,
};

static const uint32_t IV[8] = {0x6A09E667, 0xBB67AE85, 0x3C6EF372, 0xA54FF53A,
                               0x510E527F, 0x9B05688C, 0x1F83D9AB, 0x5BE0CD19};

static const uint8_t MSG_SCHEDULE[7][16] = {
    {0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15},
    {2, 6, 3, 10, 7, 0, 4, 13, 1, 11, 12, 5, 9, 14, 15, 8},
    {3, 4, 10, 12, 13, 2, 7, 14, 6, 5, 9, 0, 11, 15, 8, 1},
    {10, 7, 12, 9, 14, 3, 13, 15, 4, 0, 11, 2, 5, 8, 1, 6},
    {12, 13, 9, 11, 15, 10, 14, 8, 7, 2, 5, 3, 0, 1, 6, 4},
    {9, 14, 11, 5, 8, 12, 15, 1, 13, 3, 0, 10, 2, 6, 4, 7},
    {11, 15, 5, 0, 1, 9, 8, 6, 14, 10, 2, 12, 3, 4, 7, 13},
};

static inline uint32_t load32(const uint8_t *p)
{
    return (uint32_t)p[0] | ((uint32_t)p[1] << 8) | ((uint32_t)p[2] << 16) |
           ((uint32_t)p[3] << 24);
}

static inline void store32(uint8_t *p, uint32_t w)
{
    p[0] = (uint8_t)w;
    p[1] = (uint8_t)(w >> 8);
    p[2] = (uint8_t)(w >> 16);
    p[3] = (uint8_t)(w >> 24);
}

static inline uint32_t rotr32(uint32_t w, unsigned c) { return (w >> c) | (w << (32 - c)); }

#define G(a, b, c, d, x, y)                                                                        \
    do {                                                                                           \
        s[a] = s[a] + s[b] + (x);                                                                  \
        s[d] = rotr32(s[d] ^ s[a], 16);                                                            \
        s[c] = s[c] + s[d];                                                                        \
        s[b] = rotr32(s[b] ^ s[c], 12);                                                            \
        s[a] = s[a] + s[b] + (y);                                                                  \
        s[d] = rotr32(s[d] ^ s[a], 8);                                                             \
        s[c] = s[c] + s[d];                                                                        \
        s[b] = rotr32(s[b] ^ s[c], 7);                                                             \
    } while (0)

static void compress_state(uint32_t s[16], const uint32_t cv[8], const uint8_t block[64],
                           uint8_t block_len, uint64_t counter, uint8_t flags)
{
    uint32_t m[16];
    for (int i = 0; i < 16; i++)
        m[i] = load32(block + 4 * i);
    memcpy(s, cv, 32);
    s[8] = IV[0];
    s[9] = IV[1];
    s[10] = IV[2];
    s[11] = IV[3];
    s[12] = (uint32_t)counter;
    s[13] = (uint32_t)(counter >> 32);
    s[14] = block_len;
    s[15] = flags;
    for (int r = 0; r < 7; r++) {
        const uint8_t *sc = MSG_SCHEDULE[r];
        G(0, 4, 8, 12, m[sc[0]], m[sc[1]]);
        G(1, 5, 9, 13, m[sc[2]], m[sc[3]]);
        G(2, 6, 10, 14, m[sc[4]], m[sc[5]]);
        G(3, 7, 11, 15, m[sc[6]], m[sc[7]]);
        G(0, 5, 10, 15, m[sc[8]], m[sc[9]]);
        G(1, 6, 11, 12, m[sc[10]], m[sc[11]]);
        G(2, 7, 8, 13, m[sc[12]], m[sc[13]]);
        G(3, 4, 9, 14, m[sc[14]], m[sc[15]]);
    }
}

/* Compresses in place: cv becomes the new chaining value. */
static void compress_in_place(uint32_t cv[8], const uint8_t block[64], uint8_t block_len,
                              uint64_t counter, uint8_t flags)
{
    uint32_t s[16];
    compress_state(s, cv, block, block_len, counter, flags);
    for (int i = 0; i < 8; i++)
        cv[i] = s[i] ^ s[i + 8];
}

/* Full 64-byte output block (used for root output). */
static void compress_xof(const uint32_t cv[8], const uint8_t block[64], uint8_t block_len,
                         uint64_t counter, uint8_t flags, uint8_t out[64])
{
    uint32_t s[16];
    compress_state(s, cv, block, block_len, counter, flags);
    for (int i = 0; i < 8; i++) {
        store32(out + 4 * i, s[i] ^ s[i + 8]);
        store32(out + 4 * (i + 8), s[i + 8] ^ cv[i]);
    }
}

/* The not-yet-finalized output of a chunk or parent node. */
typedef struct output {
    uint32_t cv[8];
    uint8_t block[64];
    uint8_t block_len;
    uint64_t counter;
    uint8_t flags;
} output;

static void output_chaining_value(const output *o, uint8_t out[32])
{
    uint32_t cv[8];
    memcpy(cv, o->cv, 32);
    compress_in_place(cv, o->block, o->block_len, o->counter, o->flags);
    for (int i = 0; i < 8; i++)
        store32(out + 4 * i, cv[i]);
}

static void output_root_bytes(const output *o, uint8_t *out, size_t out_len)
{
    uint64_t block_counter = 0;
    uint8_t wide[64];
    while (out_len > 0) {
        compress_xof(o->cv, o->block, o->block_len, block_counter, o->flags | ROOT, wide);
        size_t take = out_len < 64 ? out_len : 64;
        memcpy(out, wide, take);
        out += take;
        out_len -= take;
        block_counter++;
    }
}

static void chunk_init(obi_blake3_chunk_state *c, const uint32_t key[8], uint64_t counter,
                       uint8_t flags)
{
    memcpy(c->cv, key, 32);
    c->chunk_counter = counter;
    memset(c->buf, 0, sizeof c->buf);
    c->buf_len = 0;
    c->blocks_compressed = 0;
    c->flags = flags;
}

static size_t chunk_len(const obi_blake3_chunk_state *c)
{
    return (size_t)c->blocks_compressed * OBI_BLAKE3_BLOCK_LEN + c->buf_len;
}

static uint8_t chunk_start_flag(const obi_blake3_chunk_state *c)
{
    return c->blocks_compressed == 0 ? CHUNK_START : 0;
}

static void chunk_update(obi_blake3_chunk_state *c, const uint8_t *input, size_t len)
{
    while (len > 0) {
        if (c->buf_len == OBI_BLAKE3_BLOCK_LEN) {
            compress_in_place(c->cv, c->buf, OBI_BLAKE3_BLOCK_LEN, c->chunk_counter,
                              c->flags | chunk_start_flag(c));
            c->blocks_compressed++;
            c->buf_len = 0;
            memset(c->buf, 0, sizeof c->buf);
        }
        size_t want = OBI_BLAKE3_BLOCK_LEN - c->buf_len;
        size_t take = len < want ? len : want;
        memcpy(c->buf + c->buf_len, input, take);
        c->buf_len += (uint8_t)take;
        input += take;
        len -= take;
    }
}

static output chunk_output(const obi_blake3_chunk_state *c)
{
    output o;
    memcpy(o.cv, c->cv, 32);
    memcpy(o.block, c->buf, 64);
    o.block_len = c->buf_len;
    o.counter = c->chunk_counter;
    o.flags = c->flags | chunk_start_flag(c) | CHUNK_END;
    return o;
}

static output parent_output(const uint8_t left[32], const uint8_t right[32], const uint32_t key[8],
                            uint8_t flags)
{
    output o;
    memcpy(o.cv, key, 32);
    memcpy(o.block, left, 32);
    memcpy(o.block + 32, right, 32);
    o.block_len = OBI_BLAKE3_BLOCK_LEN;
    o.counter = 0;
    o.flags = flags | PARENT;
    return o;
}

static void hasher_init_flags(obi_blake3_hasher *h, const uint32_t key[8], uint8_t flags)
{
    memcpy(h->key, key, 32);
    chunk_init(&h->chunk, key, 0, flags);
    h->cv_stack_len = 0;
}

void obi_blake3_init(obi_blake3_hasher *hasher) { hasher_init_flags(hasher, IV, 0); }

void obi_blake3_init_keyed(obi_blake3_hasher *hasher, const uint8_t key[OBI_BLAKE3_KEY_LEN])
{
    uint32_t words[8];
    for (int i = 0; i < 8; i++)
        words[i] = load32(key + 4 * i);
    hasher_init_flags(hasher, words, KEYED_HASH);
}

void obi_blake3_init_derive_key(obi_blake3_hasher *hasher, const char *context)
{
    obi_blake3_hasher context_hasher;
    hasher_init_flags(&context_hasher, IV, DERIVE_KEY_CONTEXT);
    obi_blake3_update(&context_hasher, context, strlen(context));
    uint8_t context_key[32];
    obi_blake3_finalize(&context_hasher, context_key, 32);
    uint32_t words[8];
    for (int i = 0; i < 8; i++)
        words[i] = load32(context_key + 4 * i);
    hasher_init_flags(hasher, words, DERIVE_KEY_MATERIAL);
}

/* Pushes a finished chunk's CV, merging completed subtrees (total_chunks' trailing zeros). */
static void push_chunk_cv(obi_blake3_hasher *h, uint8_t cv[32], uint64_t total_chunks)
{
    while ((total_chunks & 1) == 0) {
        h->cv_stack_len--;
        output parent =
            parent_output(h->cv_stack + (size_t)h->cv_stack_len * 32, cv, h->key, h->chunk.flags);
        output_chaining_value(&parent, cv);
        total_chunks >>= 1;
    }
    memcpy(h->cv_stack + (size_t)h->cv_stack_len * 32, cv, 32);
    h->cv_stack_len++;
}

void obi_blake3_update(obi_blake3_hasher *hasher, const void *input, size_t input_len)
{
    const uint8_t *in = input;
    while (input_len > 0) {
        if (chunk_len(&hasher->chunk) == OBI_BLAKE3_CHUNK_LEN) {
            output o = chunk_output(&hasher->chunk);
            uint8_t cv[32];
            output_chaining_value(&o, cv);
            uint64_t total = hasher->chunk.chunk_counter + 1;
            push_chunk_cv(hasher, cv, total);
            chunk_init(&hasher->chunk, hasher->key, total, hasher->chunk.flags);
        }
        size_t want = OBI_BLAKE3_CHUNK_LEN - chunk_len(&hasher->chunk);
        size_t take = input_len < want ? input_len : want;
        chunk_update(&hasher->chunk, in, take);
        in += take;
        input_len -= take;
    }
}

void obi_blake3_finalize(const obi_blake3_hasher *hasher, uint8_t *out, size_t out_len)
{
    output o = chunk_output(&hasher->chunk);
    size_t remaining = hasher->cv_stack_len;
    while (remaining > 0) {
        remaining--;
        uint8_t cv[32];
        output_chaining_value(&o, cv);
        o = parent_output(hasher->cv_stack + remaining * 32, cv, hasher->key, hasher->chunk.flags);
    }
    output_root_bytes(&o, out, out_len);
}

void obi_blake3(const void *input, size_t input_len, uint8_t out[OBI_BLAKE3_OUT_LEN])
{
    obi_blake3_hasher h;
    obi_blake3_init(&h);
    obi_blake3_update(&h, input, input_len);
    obi_blake3_finalize(&h, out, OBI_BLAKE3_OUT_LEN);
}

const char *obi_blake3_backend(void) { return "portable"; }
