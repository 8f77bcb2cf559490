/*
 * BLAKE3 from the specification (the paper's section 2 and its reference design): chunk state,
 * chaining-value stack with lazy merging, root output with extendable length.
 *
 * Speed comes from hashing many chunks at once. update() cuts its input into the largest
 * power-of-two subtrees that fit where the tree currently stands; each subtree is hashed
 * "wide": up to LANES chunks at a time through the backend's hash_many, then the parent nodes
 * of each level also LANES at a time, until the subtree is down to the two children of its
 * root. Those two are pushed on the CV stack, and the stack is merged only once more input
 * arrives (lazily), so no node that might still turn out to be the root is ever compressed as
 * a non-root.
 *
 * This file also holds the portable compression and the run-time backend choice; the SIMD
 * backends live in blake3_sse41.c, blake3_avx2.c and blake3_avx512.c (see blake3_impl.h).
 */
#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#if defined(__x86_64__)
#include <sys/platform/x86.h>
#endif

#include "blake3_impl.h"
#include "ocibuild/blake3.h"

/* ---- portable compression ---- */

static inline uint32_t load32(const uint8_t *p)
{
    return (uint32_t)p[0] | ((uint32_t)p[1] << 8) | ((uint32_t)p[2] << 16) | ((uint32_t)p[3] << 24);
}

static inline void store32(uint8_t *p, uint32_t w)
{
    p[0] = (uint8_t)w;
    p[1] = (uint8_t)(w >> 8);
    p[2] = (uint8_t)(w >> 16);
    p[3] = (uint8_t)(w >> 24);
}

static inline uint32_t rotr32(uint32_t w, unsigned c)
{
    return (w >> c) | (w << (32 - c));
}

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
    s[8] = BLAKE3_IV[0];
    s[9] = BLAKE3_IV[1];
    s[10] = BLAKE3_IV[2];
    s[11] = BLAKE3_IV[3];
    s[12] = (uint32_t)counter;
    s[13] = (uint32_t)(counter >> 32);
    s[14] = block_len;
    s[15] = flags;
    for (int r = 0; r < 7; r++) {
        const uint8_t *sc = BLAKE3_MSG_SCHEDULE[r];
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

void blake3_compress_in_place_portable(uint32_t cv[8], const uint8_t block[64], uint8_t block_len,
                                       uint64_t counter, uint8_t flags)
{
    uint32_t s[16];
    compress_state(s, cv, block, block_len, counter, flags);
    for (int i = 0; i < 8; i++)
        cv[i] = s[i] ^ s[i + 8];
}

void blake3_compress_xof_portable(const uint32_t cv[8], const uint8_t block[64], uint8_t block_len,
                                  uint64_t counter, uint8_t flags, uint8_t out[64])
{
    uint32_t s[16];
    compress_state(s, cv, block, block_len, counter, flags);
    for (int i = 0; i < 8; i++) {
        store32(out + 4 * i, s[i] ^ s[i + 8]);
        store32(out + 4 * (i + 8), s[i + 8] ^ cv[i]);
    }
}

void blake3_hash_many_portable(const uint8_t *const *inputs, size_t count, size_t blocks,
                               const uint32_t key[8], uint64_t counter, bool increment_counter,
                               uint8_t flags, uint8_t flags_start, uint8_t flags_end, uint8_t *out)
{
    for (size_t i = 0; i < count; i++) {
        uint32_t cv[8];
        memcpy(cv, key, 32);
        uint8_t block_flags = flags | flags_start;
        for (size_t b = 0; b < blocks; b++) {
            if (b + 1 == blocks)
                block_flags |= flags_end;
            blake3_compress_in_place_portable(cv, inputs[i] + b * 64, 64, counter, block_flags);
            block_flags = flags;
        }
        for (int w = 0; w < 8; w++)
            store32(out + i * 32 + 4 * w, cv[w]);
        if (increment_counter)
            counter++;
    }
}

/* ---- backends and the run-time choice ---- */

typedef struct backend {
    const char *name;
    size_t lanes; /* inputs hash_many takes at once at full speed */
    bool (*cpu_has)(void);
    blake3_compress_in_place_fn compress_in_place;
    blake3_compress_xof_fn compress_xof;
    blake3_hash_many_fn hash_many;
} backend;

static bool always(void)
{
    return true;
}

#if defined(__x86_64__)
/* What the CPU has and the kernel enabled, as glibc's loader found it at start-up. Not
 * __builtin_cpu_supports: it links libgcc's constructor, which runs cpuid a dozen times before
 * main in every process, and cpuid traps to the hypervisor in a VM (~13 us each here). */
/* One feature bit of that table. glibc's own x86_cpu_active shifts a signed 1 by the bit
 * number, undefined for bit 31 (AVX512VL), which UBSan stops at. */
static bool cpu_active(unsigned index)
{
    enum { BITS = 8 * sizeof(unsigned) };
    const struct cpuid_feature *leaf = __x86_get_cpuid_feature_leaf(index / (BITS * 4));
    unsigned reg = (index & (BITS * 4 - 1)) / BITS;
    return (leaf->active_array[reg] >> (index & (BITS - 1))) & 1u;
}
static bool cpu_has_sse41(void)
{
    return cpu_active(x86_cpu_SSE4_1);
}
static bool cpu_has_avx2(void)
{
    return cpu_active(x86_cpu_AVX2) && cpu_has_sse41();
}
static bool cpu_has_avx512(void)
{
    return cpu_active(x86_cpu_AVX512F) && cpu_active(x86_cpu_AVX512VL) && cpu_has_avx2();
}
#endif

/* Weakest first; the default is the last one the CPU has. */
static const backend BACKENDS[] = {
    {"portable", 1, always, blake3_compress_in_place_portable, blake3_compress_xof_portable,
     blake3_hash_many_portable},
#if defined(__x86_64__)
    {"sse41", 4, cpu_has_sse41, blake3_compress_in_place_sse41, blake3_compress_xof_sse41,
     blake3_hash_many_sse41},
    {"avx2", 8, cpu_has_avx2, blake3_compress_in_place_sse41, blake3_compress_xof_sse41,
     blake3_hash_many_avx2},
    {"avx512", 16, cpu_has_avx512, blake3_compress_in_place_sse41, blake3_compress_xof_sse41,
     blake3_hash_many_avx512},
#endif
};
#define BACKEND_COUNT (sizeof BACKENDS / sizeof BACKENDS[0])

static pthread_once_t backend_once = PTHREAD_ONCE_INIT;
static const backend *default_backend;
static _Atomic(const backend *) active_backend;

static const backend *backend_named(const char *name)
{
    for (size_t i = 0; i < BACKEND_COUNT; i++)
        if (!strcmp(BACKENDS[i].name, name))
            return &BACKENDS[i];
    return NULL;
}

/* The best backend the CPU has, unless OBI_BLAKE3_BACKEND names one it has. */
static void choose_backend(void)
{
    default_backend = &BACKENDS[0];
    for (size_t i = 0; i < BACKEND_COUNT; i++)
        if (BACKENDS[i].cpu_has())
            default_backend = &BACKENDS[i];
    const char *forced = getenv("OBI_BLAKE3_BACKEND");
    const backend *b = forced ? backend_named(forced) : NULL;
    if (b && b->cpu_has())
        default_backend = b;
    atomic_store(&active_backend, default_backend);
}

static const backend *current_backend(void)
{
    pthread_once(&backend_once, choose_backend);
    return atomic_load_explicit(&active_backend, memory_order_relaxed);
}

const char *obi_blake3_backend(void)
{
    return current_backend()->name;
}

int obi_blake3_use_backend(const char *name)
{
    current_backend();
    const backend *b = name ? backend_named(name) : default_backend;
    if (!b)
        return -EINVAL;
    if (!b->cpu_has())
        return -ENOTSUP;
    atomic_store(&active_backend, b);
    return 0;
}

/* ---- chunks and parents ---- */

/* The not-yet-finalized output of a chunk or parent node. */
typedef struct output {
    uint32_t cv[8];
    uint8_t block[64];
    uint8_t block_len;
    uint64_t counter;
    uint8_t flags;
} output;

static void output_chaining_value(const backend *be, const output *o, uint8_t out[32])
{
    uint32_t cv[8];
    memcpy(cv, o->cv, 32);
    be->compress_in_place(cv, o->block, o->block_len, o->counter, o->flags);
    for (int i = 0; i < 8; i++)
        store32(out + 4 * i, cv[i]);
}

static void output_root_bytes(const backend *be, const output *o, uint8_t *out, size_t out_len)
{
    uint64_t block_counter = 0;
    uint8_t wide[64];
    while (out_len > 0) {
        be->compress_xof(o->cv, o->block, o->block_len, block_counter, o->flags | BLAKE3_ROOT,
                         wide);
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
    return c->blocks_compressed == 0 ? BLAKE3_CHUNK_START : 0;
}

/* Adds input to the chunk (at most what fits). A block is compressed only once more input
 * follows it, because the chunk's last block needs the CHUNK_END flag (and maybe ROOT). */
static void chunk_update(const backend *be, obi_blake3_chunk_state *c, const uint8_t *input,
                         size_t len)
{
    if (c->buf_len > 0) {
        size_t want = OBI_BLAKE3_BLOCK_LEN - c->buf_len;
        size_t take = len < want ? len : want;
        memcpy(c->buf + c->buf_len, input, take);
        c->buf_len += (uint8_t)take;
        input += take;
        len -= take;
        if (len == 0)
            return;
        be->compress_in_place(c->cv, c->buf, OBI_BLAKE3_BLOCK_LEN, c->chunk_counter,
                              c->flags | chunk_start_flag(c));
        c->blocks_compressed++;
        c->buf_len = 0;
        memset(c->buf, 0, sizeof c->buf);
    }
    while (len > OBI_BLAKE3_BLOCK_LEN) {
        be->compress_in_place(c->cv, input, OBI_BLAKE3_BLOCK_LEN, c->chunk_counter,
                              c->flags | chunk_start_flag(c));
        c->blocks_compressed++;
        input += OBI_BLAKE3_BLOCK_LEN;
        len -= OBI_BLAKE3_BLOCK_LEN;
    }
    memcpy(c->buf, input, len);
    c->buf_len = (uint8_t)len;
}

static output chunk_output(const obi_blake3_chunk_state *c)
{
    output o;
    memcpy(o.cv, c->cv, 32);
    memcpy(o.block, c->buf, 64);
    o.block_len = c->buf_len;
    o.counter = c->chunk_counter;
    o.flags = c->flags | chunk_start_flag(c) | BLAKE3_CHUNK_END;
    return o;
}

/* block = left child CV || right child CV */
static output parent_output(const uint8_t block[64], const uint32_t key[8], uint8_t flags)
{
    output o;
    memcpy(o.cv, key, 32);
    memcpy(o.block, block, 64);
    o.block_len = OBI_BLAKE3_BLOCK_LEN;
    o.counter = 0;
    o.flags = flags | BLAKE3_PARENT;
    return o;
}

/* ---- wide subtree hashing ---- */

/* Up to be->lanes chunks (the last may be partial, none empty) into one CV each. Returns the
 * number of CVs written. */
static size_t hash_chunks_wide(const backend *be, const uint8_t *input, size_t len,
                               const uint32_t key[8], uint64_t chunk_counter, uint8_t flags,
                               uint8_t *out)
{
    const uint8_t *chunks[BLAKE3_MAX_LANES];
    size_t full = 0;
    while (len - full * OBI_BLAKE3_CHUNK_LEN >= OBI_BLAKE3_CHUNK_LEN) {
        chunks[full] = input + full * OBI_BLAKE3_CHUNK_LEN;
        full++;
    }
    be->hash_many(chunks, full, OBI_BLAKE3_CHUNK_LEN / OBI_BLAKE3_BLOCK_LEN, key, chunk_counter,
                  true, flags, BLAKE3_CHUNK_START, BLAKE3_CHUNK_END, out);
    size_t rest = len - full * OBI_BLAKE3_CHUNK_LEN;
    if (rest == 0)
        return full;
    obi_blake3_chunk_state c;
    chunk_init(&c, key, chunk_counter + full, flags);
    chunk_update(be, &c, input + full * OBI_BLAKE3_CHUNK_LEN, rest);
    output o = chunk_output(&c);
    output_chaining_value(be, &o, out + full * 32);
    return full + 1;
}

/* Pairs of adjacent CVs into parent CVs, be->lanes pairs at a time; an odd last CV is carried
 * up unchanged (it is the rightmost node of its level). Returns the number of CVs written. */
static size_t hash_parents_wide(const backend *be, const uint8_t *cvs, size_t count,
                                const uint32_t key[8], uint8_t flags, uint8_t *out)
{
    const uint8_t *pairs[2 * BLAKE3_MAX_LANES];
    size_t n = count / 2;
    for (size_t i = 0; i < n; i++)
        pairs[i] = cvs + i * 64;
    be->hash_many(pairs, n, 1, key, 0, false, flags | BLAKE3_PARENT, 0, 0, out);
    if (count % 2) {
        memcpy(out + n * 32, cvs + (count - 1) * 32, 32);
        return n + 1;
    }
    return n;
}

/* Chunks in the left subtree of a tree over len bytes (len > one chunk): the largest power of
 * two number of chunks that leaves at least one byte for the right. */
static size_t left_subtree_len(size_t len)
{
    size_t full_chunks = (len - 1) / OBI_BLAKE3_CHUNK_LEN;
    size_t p = 1;
    while (p * 2 <= full_chunks)
        p *= 2;
    return p * OBI_BLAKE3_CHUNK_LEN;
}

/*
 * Hashes the subtree over input[0..len) down to at most max(lanes, 2) CVs, all of one level of
 * the tree (in left-to-right order), and returns how many. Never finishes the subtree's root.
 */
static size_t hash_subtree_wide(const backend *be, const uint8_t *input, size_t len,
                                const uint32_t key[8], uint64_t chunk_counter, uint8_t flags,
                                uint8_t *out)
{
    if (len <= be->lanes * OBI_BLAKE3_CHUNK_LEN)
        return hash_chunks_wide(be, input, len, key, chunk_counter, flags, out);

    size_t left_len = left_subtree_len(len);
    /* The left subtree is a full power of two of at least `lanes` chunks, so it always yields
     * exactly max(lanes, 2) CVs (2 when lanes is 1 and it holds more than one chunk). */
    size_t left_expected = be->lanes;
    if (left_len > OBI_BLAKE3_CHUNK_LEN && left_expected == 1)
        left_expected = 2;
    uint8_t cvs[2 * BLAKE3_MAX_LANES * 32];
    size_t left_n = hash_subtree_wide(be, input, left_len, key, chunk_counter, flags, cvs);
    size_t right_n = hash_subtree_wide(be, input + left_len, len - left_len, key,
                                       chunk_counter + left_len / OBI_BLAKE3_CHUNK_LEN, flags,
                                       cvs + left_expected * 32);
    /* One chunk each side (only with one lane): these two are the root's children already. */
    if (left_n == 1) {
        memcpy(out, cvs, 64);
        return 2;
    }
    return hash_parents_wide(be, cvs, left_n + right_n, key, flags, out);
}

/* Hashes a subtree of at least two chunks to the two CVs of its root's children (out[64]). */
static void hash_subtree_to_children(const backend *be, const uint8_t *input, size_t len,
                                     const uint32_t key[8], uint64_t chunk_counter, uint8_t flags,
                                     uint8_t out[64])
{
    uint8_t cvs[2 * BLAKE3_MAX_LANES * 32];
    size_t n = hash_subtree_wide(be, input, len, key, chunk_counter, flags, cvs);
    while (n > 2) {
        uint8_t parents[BLAKE3_MAX_LANES * 32];
        n = hash_parents_wide(be, cvs, n, key, flags, parents);
        memcpy(cvs, parents, n * 32);
    }
    memcpy(out, cvs, 64);
}

/* ---- the hasher ---- */

static void hasher_init_flags(obi_blake3_hasher *h, const uint32_t key[8], uint8_t flags)
{
    memcpy(h->key, key, 32);
    chunk_init(&h->chunk, key, 0, flags);
    h->cv_stack_len = 0;
}

void obi_blake3_init(obi_blake3_hasher *hasher)
{
    hasher_init_flags(hasher, BLAKE3_IV, 0);
}

void obi_blake3_init_keyed(obi_blake3_hasher *hasher, const uint8_t key[OBI_BLAKE3_KEY_LEN])
{
    uint32_t words[8];
    for (int i = 0; i < 8; i++)
        words[i] = load32(key + 4 * i);
    hasher_init_flags(hasher, words, BLAKE3_KEYED_HASH);
}

void obi_blake3_init_derive_key(obi_blake3_hasher *hasher, const char *context)
{
    obi_blake3_hasher context_hasher;
    hasher_init_flags(&context_hasher, BLAKE3_IV, BLAKE3_DERIVE_KEY_CONTEXT);
    obi_blake3_update(&context_hasher, context, strlen(context));
    uint8_t context_key[32];
    obi_blake3_finalize(&context_hasher, context_key, 32);
    uint32_t words[8];
    for (int i = 0; i < 8; i++)
        words[i] = load32(context_key + 4 * i);
    hasher_init_flags(hasher, words, BLAKE3_DERIVE_KEY_MATERIAL);
}

/*
 * Merges the top of the CV stack until it holds one CV per set bit of total_chunks (the
 * complete subtrees to the left of chunk number total_chunks). Called only when input beyond
 * those chunks exists, so none of the merged parents can be the root.
 */
static void merge_cv_stack(const backend *be, obi_blake3_hasher *h, uint64_t total_chunks)
{
    size_t target = (size_t)__builtin_popcountll(total_chunks);
    while (h->cv_stack_len > target) {
        uint8_t *pair = h->cv_stack + (size_t)(h->cv_stack_len - 2) * 32;
        output parent = parent_output(pair, h->key, h->chunk.flags);
        output_chaining_value(be, &parent, pair);
        h->cv_stack_len--;
    }
}

/* Pushes the CV of the subtree starting at chunk first_chunk, merging what lies before it. */
static void push_cv(const backend *be, obi_blake3_hasher *h, const uint8_t cv[32],
                    uint64_t first_chunk)
{
    merge_cv_stack(be, h, first_chunk);
    memcpy(h->cv_stack + (size_t)h->cv_stack_len * 32, cv, 32);
    h->cv_stack_len++;
}

void obi_blake3_update(obi_blake3_hasher *hasher, const void *input, size_t input_len)
{
    const backend *be = current_backend();
    const uint8_t *in = input;

    /* First finish a partial chunk; push it only if more input follows. */
    if (chunk_len(&hasher->chunk) > 0) {
        size_t want = OBI_BLAKE3_CHUNK_LEN - chunk_len(&hasher->chunk);
        size_t take = input_len < want ? input_len : want;
        chunk_update(be, &hasher->chunk, in, take);
        in += take;
        input_len -= take;
        if (input_len == 0)
            return;
        output o = chunk_output(&hasher->chunk);
        uint8_t cv[32];
        output_chaining_value(be, &o, cv);
        push_cv(be, hasher, cv, hasher->chunk.chunk_counter);
        chunk_init(&hasher->chunk, hasher->key, hasher->chunk.chunk_counter + 1,
                   hasher->chunk.flags);
    }

    /* Whole subtrees while more than one chunk remains: the largest power of two chunks that
     * fits in the input and starts at a multiple of its own size (so it is a subtree). */
    while (input_len > OBI_BLAKE3_CHUNK_LEN) {
        uint64_t done_chunks = hasher->chunk.chunk_counter;
        size_t subtree_len = OBI_BLAKE3_CHUNK_LEN;
        while (subtree_len * 2 <= input_len &&
               (done_chunks & (subtree_len * 2 / OBI_BLAKE3_CHUNK_LEN - 1)) == 0)
            subtree_len *= 2;
        uint64_t subtree_chunks = subtree_len / OBI_BLAKE3_CHUNK_LEN;
        if (subtree_chunks == 1) {
            obi_blake3_chunk_state c;
            chunk_init(&c, hasher->key, done_chunks, hasher->chunk.flags);
            chunk_update(be, &c, in, subtree_len);
            output o = chunk_output(&c);
            uint8_t cv[32];
            output_chaining_value(be, &o, cv);
            push_cv(be, hasher, cv, done_chunks);
        } else {
            uint8_t children[64];
            hash_subtree_to_children(be, in, subtree_len, hasher->key, done_chunks,
                                     hasher->chunk.flags, children);
            push_cv(be, hasher, children, done_chunks);
            push_cv(be, hasher, children + 32, done_chunks + subtree_chunks / 2);
        }
        hasher->chunk.chunk_counter += subtree_chunks;
        in += subtree_len;
        input_len -= subtree_len;
    }

    /* At most one chunk left: it goes into the chunk state, so everything on the stack is
     * known not to be the root and can be merged into canonical form. */
    if (input_len > 0) {
        chunk_update(be, &hasher->chunk, in, input_len);
        merge_cv_stack(be, hasher, hasher->chunk.chunk_counter);
    }
}

void obi_blake3_finalize(const obi_blake3_hasher *hasher, uint8_t *out, size_t out_len)
{
    const backend *be = current_backend();
    output o;
    size_t remaining = hasher->cv_stack_len;
    if (remaining == 0 || chunk_len(&hasher->chunk) > 0) {
        o = chunk_output(&hasher->chunk);
    } else {
        /* The input ended on a subtree boundary: the top two CVs are the last parent. */
        remaining -= 2;
        o = parent_output(hasher->cv_stack + remaining * 32, hasher->key, hasher->chunk.flags);
    }
    while (remaining > 0) {
        remaining--;
        uint8_t block[64];
        memcpy(block, hasher->cv_stack + remaining * 32, 32);
        output_chaining_value(be, &o, block + 32);
        o = parent_output(block, hasher->key, hasher->chunk.flags);
    }
    output_root_bytes(be, &o, out, out_len);
}

void obi_blake3(const void *input, size_t input_len, uint8_t out[OBI_BLAKE3_OUT_LEN])
{
    obi_blake3_hasher h;
    obi_blake3_init(&h);
    obi_blake3_update(&h, input, input_len);
    obi_blake3_finalize(&h, out, OBI_BLAKE3_OUT_LEN);
}
