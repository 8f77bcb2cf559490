/*
 * Reference scanner (include/ocibuild/refscan.h): many needles at once over a stream.
 *
 * Algorithm (chosen for thousands of 32-character nixbase32 needles, correct for any byte
 * strings): sampled q-grams with a bitmap prefilter and hashed verification.
 *  - Let m be the length of the shortest needle, K = min(m, 8) and S = m - K + 1. Any
 *    occurrence of a needle covers m consecutive bytes, so it contains the K bytes starting at
 *    a text position that is a multiple of S, at some offset 0..S-1 from the needle's start.
 *    The scanner therefore indexes, for every needle, its K-grams at offsets 0..S-1, and looks
 *    at the text only every S bytes (every 25 bytes for 32-byte needles).
 *  - At a sampled position, the K bytes are loaded as one 64-bit key and hashed (Fibonacci
 *    hashing) into a blocked Bloom filter (two bits in one 64-bit word) with 16 bits per
 *    indexed K-gram (256 KiB for 5000 needles: L2), about 2% false positives. Before that,
 *    two byte-table lookups check that the K-gram's first and last bytes occur in some needle
 *    at all: random binary data passes 1 in 64 for nixbase32, which makes it 3-4x faster
 *    there and costs up to a third on text made only of needle characters.
 *  - Keys that pass the bitmap are looked up in an open-addressing table mapping a key to the
 *    (needle, offset) pairs that have it; each candidate needle is compared in full with
 *    memcmp at (position - offset), so there are no false positives. Duplicate needles are
 *    separate entries and each reported.
 * A first version skipped through the text using the needles' alphabet (as Nix's scanner
 * does) and checked every position of a run of alphabet bytes; it fell to 0.14-0.3 GiB/s on
 * text made of nixbase32 characters, where sampling stays in GiB/s. Aho-Corasick would walk
 * every byte through a ~160k-state automaton for 5000 needles, which does not fit in cache.
 * Figures: bench/README.md, "Reference scanning".
 *
 * Streaming: every feed scans the new buffer on its own, and before that the last
 * (longest needle - 1) bytes of the stream joined with the first bytes of the new buffer, so
 * an occurrence straddling the boundary is found. An occurrence seen twice is harmless
 * because the result is a set (a bitmap over needle indexes).
 */
#include <errno.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>

#include "ocibuild/refscan.h"

#define KEY_MAX_LEN 8
#define FIBONACCI_MULTIPLIER 0x9E3779B97F4A7C15ull

typedef struct key_group {
    uint64_t key;
    uint32_t start; /* into scanner->entries */
    uint32_t count; /* 0: empty slot */
} key_group;

/* Needle `needle` has the K-gram `key` at `offset` (0..S-1). */
typedef struct kgram_entry {
    uint64_t key;
    uint32_t needle;
    uint32_t offset;
} kgram_entry;

struct obi_refscan {
    size_t n_needles;
    uint8_t *arena;        /* all needle bytes */
    size_t *needle_offset; /* into arena */
    size_t *needle_len;
    size_t min_len, max_len;
    unsigned key_len; /* K = min(min_len, KEY_MAX_LEN) */
    size_t stride;    /* S = min_len - K + 1 */
    uint8_t in_alphabet[256];
    unsigned filter_shift; /* 64 - log2(filter words) */
    uint64_t *filter;
    unsigned group_shift; /* 64 - log2(group slots) */
    size_t group_mask;
    key_group *groups;
    kgram_entry *entries; /* sorted by key */
    size_t n_entries;
};

struct obi_refscan_state {
    const obi_refscan *scanner;
    uint64_t *found; /* one bit per needle */
    uint8_t *tail;   /* last (max_len - 1) bytes of the current stream */
    size_t tail_len;
    uint8_t *joint; /* tail + the head of the next buffer */
};

static inline uint64_t load_key(const uint8_t *p, unsigned key_len)
{
    uint64_t key = 0;
    if (key_len == KEY_MAX_LEN)
        memcpy(&key, p, KEY_MAX_LEN);
    else
        memcpy(&key, p, key_len);
    return key;
}

static inline uint64_t key_hash(uint64_t key)
{
    return key * FIBONACCI_MULTIPLIER;
}

/* The prefilter is a blocked Bloom filter: the hash's top bits pick a 64-bit word, two bit
 * positions taken from a remix of the hash are set in it (one memory access per probe). */
static inline uint64_t filter_mask(uint64_t h)
{
    uint64_t g = h ^ (h >> 29);
    return ((uint64_t)1 << (g & 63)) | ((uint64_t)1 << ((g >> 6) & 63));
}

static unsigned log2_ceil(size_t n)
{
    unsigned bits = 0;
    while (((size_t)1 << bits) < n)
        bits++;
    return bits;
}

void obi_refscan_free(obi_refscan *scanner)
{
    if (!scanner)
        return;
    free(scanner->arena);
    free(scanner->needle_offset);
    free(scanner->needle_len);
    free(scanner->filter);
    free(scanner->groups);
    free(scanner->entries);
    free(scanner);
}

size_t obi_refscan_needle_count(const obi_refscan *scanner)
{
    return scanner->n_needles;
}

static int compare_entries(const void *a, const void *b)
{
    const kgram_entry *x = a, *y = b;
    if (x->key != y->key)
        return x->key < y->key ? -1 : 1;
    if (x->needle != y->needle)
        return x->needle < y->needle ? -1 : 1;
    return x->offset < y->offset ? -1 : x->offset > y->offset;
}

static int copy_needles(obi_refscan *s, const obi_refscan_needle *needles, size_t n,
                        obi_error **err)
{
    size_t total = 0;
    s->min_len = SIZE_MAX;
    for (size_t i = 0; i < n; i++) {
        if (needles[i].len == 0)
            return obi_error_set(err, -EINVAL, "reference scanner: needle %zu is empty", i);
        if (needles[i].len > SIZE_MAX / 4 - total)
            return obi_error_set(err, -EOVERFLOW, "reference scanner: needles too large");
        total += needles[i].len;
        if (needles[i].len < s->min_len)
            s->min_len = needles[i].len;
        if (needles[i].len > s->max_len)
            s->max_len = needles[i].len;
    }
    s->arena = malloc(total ? total : 1);
    s->needle_offset = calloc(n ? n : 1, sizeof *s->needle_offset);
    s->needle_len = calloc(n ? n : 1, sizeof *s->needle_len);
    if (!s->arena || !s->needle_offset || !s->needle_len)
        return obi_error_set(err, -ENOMEM, "reference scanner: out of memory");
    size_t off = 0;
    for (size_t i = 0; i < n; i++) {
        memcpy(s->arena + off, needles[i].data, needles[i].len);
        s->needle_offset[i] = off;
        s->needle_len[i] = needles[i].len;
        off += needles[i].len;
        for (size_t j = 0; j < needles[i].len; j++)
            s->in_alphabet[((const uint8_t *)needles[i].data)[j]] = 1;
    }
    return 0;
}

static int build_tables(obi_refscan *s, obi_error **err)
{
    size_t n = s->n_needles;
    s->key_len = s->min_len < KEY_MAX_LEN ? (unsigned)s->min_len : KEY_MAX_LEN;
    s->stride = s->min_len - s->key_len + 1;
    if (s->stride > SIZE_MAX / 2 / n || s->stride * n >= UINT32_MAX)
        return obi_error_set(err, -E2BIG, "reference scanner: too many needles");
    s->n_entries = n * s->stride;
    s->entries = malloc(s->n_entries * sizeof *s->entries);
    if (!s->entries)
        return obi_error_set(err, -ENOMEM, "reference scanner: out of memory");
    for (size_t i = 0, k = 0; i < n; i++)
        for (size_t off = 0; off < s->stride; off++, k++)
            s->entries[k] =
                (kgram_entry){load_key(s->arena + s->needle_offset[i] + off, s->key_len),
                              (uint32_t)i, (uint32_t)off};
    qsort(s->entries, s->n_entries, sizeof *s->entries, compare_entries);

    unsigned filter_bits = log2_ceil(s->n_entries * 16);
    if (filter_bits < 10)
        filter_bits = 10;
    if (filter_bits > 24)
        filter_bits = 24;
    s->filter_shift = 64 - (filter_bits - 6); /* selects a word */
    s->filter = calloc(((size_t)1 << filter_bits) / 64, sizeof *s->filter);

    unsigned group_bits = log2_ceil(s->n_entries * 2);
    if (group_bits < 4)
        group_bits = 4;
    s->group_shift = 64 - group_bits;
    s->group_mask = ((size_t)1 << group_bits) - 1;
    s->groups = calloc((size_t)1 << group_bits, sizeof *s->groups);
    if (!s->filter || !s->groups)
        return obi_error_set(err, -ENOMEM, "reference scanner: out of memory");

    for (size_t i = 0; i < s->n_entries;) {
        uint64_t key = s->entries[i].key;
        size_t end = i + 1;
        while (end < s->n_entries && s->entries[end].key == key)
            end++;
        uint64_t h = key_hash(key);
        s->filter[h >> s->filter_shift] |= filter_mask(h);
        size_t slot = h >> s->group_shift;
        while (s->groups[slot].count)
            slot = (slot + 1) & s->group_mask;
        s->groups[slot] = (key_group){key, (uint32_t)i, (uint32_t)(end - i)};
        i = end;
    }
    return 0;
}

int obi_refscan_new(const obi_refscan_needle *needles, size_t n_needles, obi_refscan **out,
                    obi_error **err)
{
    if (n_needles >= UINT32_MAX / 2)
        return obi_error_set(err, -E2BIG, "reference scanner: too many needles (%zu)", n_needles);
    obi_refscan *s = calloc(1, sizeof *s);
    if (!s)
        return obi_error_set(err, -ENOMEM, "reference scanner: out of memory");
    s->n_needles = n_needles;
    int r = copy_needles(s, needles, n_needles, err);
    if (r == 0 && n_needles > 0)
        r = build_tables(s, err);
    if (r < 0) {
        obi_refscan_free(s);
        return r;
    }
    if (n_needles == 0)
        s->min_len = s->max_len = 0;
    *out = s;
    return 0;
}

int obi_refscan_new_strings(const char *const *needles, size_t n_needles, obi_refscan **out,
                            obi_error **err)
{
    cleanup_free obi_refscan_needle *list = calloc(n_needles ? n_needles : 1, sizeof *list);
    if (!list)
        return obi_error_set(err, -ENOMEM, "reference scanner: out of memory");
    for (size_t i = 0; i < n_needles; i++)
        list[i] = (obi_refscan_needle){needles[i], strlen(needles[i])};
    return obi_refscan_new(list, n_needles, out, err);
}

/* Marks every needle that has the K-gram at data[t] and lies within data[0..len). */
static inline void check_sample(const obi_refscan *s, uint64_t *found, const uint8_t *data,
                                size_t len, size_t t)
{
    uint64_t key = load_key(data + t, s->key_len);
    uint64_t h = key_hash(key);
    uint64_t mask = filter_mask(h);
    if ((s->filter[h >> s->filter_shift] & mask) != mask)
        return;
    for (size_t slot = h >> s->group_shift; s->groups[slot].count;
         slot = (slot + 1) & s->group_mask) {
        const key_group *g = &s->groups[slot];
        if (g->key != key)
            continue;
        for (uint32_t k = 0; k < g->count; k++) {
            const kgram_entry *e = &s->entries[g->start + k];
            if (e->offset > t)
                continue;
            size_t start = t - e->offset, nlen = s->needle_len[e->needle];
            if (nlen <= len - start &&
                memcmp(data + start, s->arena + s->needle_offset[e->needle], nlen) == 0)
                found[e->needle / 64] |= (uint64_t)1 << (e->needle % 64);
        }
        return;
    }
}

/* Finds every needle occurrence lying entirely within data[0..len). */
static void scan_block(const obi_refscan *s, uint64_t *found, const uint8_t *data, size_t len)
{
    if (s->n_needles == 0 || len < s->min_len)
        return;
    const uint8_t *in_alphabet = s->in_alphabet;
    size_t key_len = s->key_len, stride = s->stride;
    for (size_t t = 0; t + key_len <= len; t += stride)
        if (in_alphabet[data[t]] & in_alphabet[data[t + key_len - 1]])
            check_sample(s, found, data, len, t);
}

int obi_refscan_state_new(const obi_refscan *scanner, obi_refscan_state **out, obi_error **err)
{
    size_t words = (scanner->n_needles + 63) / 64;
    size_t keep = scanner->max_len ? scanner->max_len - 1 : 0;
    /* One allocation: the state, the found bitmap, the tail and the joint buffer. */
    size_t size = sizeof(obi_refscan_state) + words * sizeof(uint64_t) + 3 * keep;
    obi_refscan_state *st = calloc(1, size);
    if (!st)
        return obi_error_set(err, -ENOMEM, "reference scanner: out of memory");
    st->scanner = scanner;
    st->found = (uint64_t *)(st + 1);
    st->tail = (uint8_t *)(st->found + words);
    st->joint = st->tail + keep;
    *out = st;
    return 0;
}

void obi_refscan_state_free(obi_refscan_state *state)
{
    free(state);
}

static void remember_tail(obi_refscan_state *st, const uint8_t *data, size_t len, size_t keep)
{
    if (len >= keep) {
        memcpy(st->tail, data + len - keep, keep);
        st->tail_len = keep;
        return;
    }
    if (st->tail_len + len > keep) {
        size_t drop = st->tail_len + len - keep;
        memmove(st->tail, st->tail + drop, st->tail_len - drop);
        st->tail_len -= drop;
    }
    memcpy(st->tail + st->tail_len, data, len);
    st->tail_len += len;
}

void obi_refscan_feed(obi_refscan_state *state, const void *data, size_t len)
{
    const obi_refscan *s = state->scanner;
    if (s->n_needles == 0 || len == 0)
        return;
    size_t keep = s->max_len - 1;
    bool whole_buffer_scanned = false;
    if (state->tail_len > 0) {
        /* Occurrences that start in the tail end at most keep bytes into data. */
        size_t head = len < keep ? len : keep;
        memcpy(state->joint, state->tail, state->tail_len);
        memcpy(state->joint + state->tail_len, data, head);
        scan_block(s, state->found, state->joint, state->tail_len + head);
        whole_buffer_scanned = head == len;
    }
    if (!whole_buffer_scanned)
        scan_block(s, state->found, data, len);
    if (keep > 0)
        remember_tail(state, data, len, keep);
}

void obi_refscan_end_stream(obi_refscan_state *state)
{
    state->tail_len = 0;
}

void obi_refscan_scan(obi_refscan_state *state, const void *data, size_t len)
{
    obi_refscan_end_stream(state);
    obi_refscan_feed(state, data, len);
    obi_refscan_end_stream(state);
}

int obi_refscan_state_merge(obi_refscan_state *into, const obi_refscan_state *from, obi_error **err)
{
    if (into->scanner != from->scanner)
        return obi_error_set(err, -EINVAL,
                             "reference scanner: cannot merge scan states of different scanners");
    size_t words = (into->scanner->n_needles + 63) / 64;
    for (size_t i = 0; i < words; i++)
        into->found[i] |= from->found[i];
    return 0;
}

bool obi_refscan_state_found(const obi_refscan_state *state, size_t needle_index)
{
    if (needle_index >= state->scanner->n_needles)
        return false;
    return state->found[needle_index / 64] >> (needle_index % 64) & 1;
}

size_t obi_refscan_state_found_count(const obi_refscan_state *state)
{
    size_t words = (state->scanner->n_needles + 63) / 64, count = 0;
    for (size_t i = 0; i < words; i++)
        count += (size_t)__builtin_popcountll(state->found[i]);
    return count;
}

int obi_refscan_state_result(const obi_refscan_state *state, size_t **out, size_t *n_out,
                             obi_error **err)
{
    size_t count = obi_refscan_state_found_count(state);
    size_t *list = NULL;
    if (count > 0) {
        list = malloc(count * sizeof *list);
        if (!list)
            return obi_error_set(err, -ENOMEM, "reference scanner: out of memory");
        size_t k = 0;
        for (size_t i = 0; i < state->scanner->n_needles; i++)
            if (obi_refscan_state_found(state, i))
                list[k++] = i;
    }
    *out = list;
    *n_out = count;
    return 0;
}
