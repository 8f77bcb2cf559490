/*
 * BLAKE3 against the official test vectors (../shared/data/blake3_test_vectors.json): default
 * hash, keyed hash and derive-key, full extended output, fed whole and in awkward pieces, on
 * every compression backend (portable, SSE4.1, AVX2, AVX-512). Each test runs once per backend;
 * a backend this CPU lacks is reported as a skip naming the missing instruction set.
 */
#include <errno.h>
#include <jansson.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ocibuild/blake3.h"
#include "ocibuild/digest.h"
#include "test_helpers.h"
static json_t *vectors;

static int load_vectors(void **state)
{
    (void)state;
    char *path = obi_test_shared_data("blake3_test_vectors.json");
    json_error_t jerr;
    vectors = json_load_file(path, 0, &jerr);
    if (!vectors)
        print_error("cannot load %s: %s\n", path, jerr.text);
    free(path);
    return vectors ? 0 : -1;
}

static int free_vectors(void **state)
{
    (void)state;
    json_decref(vectors);
    return 0;
}

static uint8_t *vector_input(size_t len)
{
    uint8_t *in = malloc(len + 1);
    for (size_t i = 0; i < len; i++)
        in[i] = (uint8_t)(i % 251);
    return in;
}

enum mode { MODE_HASH, MODE_KEYED, MODE_DERIVE };

static void init_mode(obi_blake3_hasher *h, enum mode mode)
{
    const char *key = json_string_value(json_object_get(vectors, "key"));
    const char *context = json_string_value(json_object_get(vectors, "context_string"));
    switch (mode) {
    case MODE_HASH:
        obi_blake3_init(h);
        break;
    case MODE_KEYED:
        assert_int_equal(strlen(key), 32);
        obi_blake3_init_keyed(h, (const uint8_t *)key);
        break;
    case MODE_DERIVE:
        obi_blake3_init_derive_key(h, context);
        break;
    }
}

/* Selects the backend named by the test's state, or skips the test loudly. */
static const char *use_backend(void **state)
{
    const char *name = *state;
    int r = obi_blake3_use_backend(name);
    if (r == -ENOTSUP) {
        print_message("SKIPPED: this CPU lacks the instruction set of BLAKE3 backend '%s'; its "
                      "code is NOT tested here\n",
                      name);
        skip();
    }
    assert_int_equal(r, 0);
    assert_string_equal(obi_blake3_backend(), name);
    return name;
}

static int restore_default_backend(void **state)
{
    (void)state;
    return obi_blake3_use_backend(NULL);
}

static void check_mode(const char *backend, enum mode mode, const char *field, size_t piece)
{
    size_t index;
    json_t *c;
    size_t checked = 0;
    json_array_foreach(json_object_get(vectors, "cases"), index, c)
    {
        size_t len = (size_t)json_integer_value(json_object_get(c, "input_len"));
        const char *expected = json_string_value(json_object_get(c, field));
        size_t out_len = strlen(expected) / 2;
        uint8_t *in = vector_input(len);
        uint8_t *out = malloc(out_len);
        char *hex = malloc(2 * out_len + 1);
        obi_blake3_hasher h;
        init_mode(&h, mode);
        for (size_t off = 0; off < len; off += piece)
            obi_blake3_update(&h, in + off, len - off < piece ? len - off : piece);
        obi_blake3_finalize(&h, out, out_len);
        obi_hex_encode(out, out_len, hex);
        if (strcmp(hex, expected))
            print_error("%s mismatch on backend %s for input_len %zu (pieces of %zu)\n", field,
                        backend, len, piece);
        assert_string_equal(hex, expected);
        /* The default 32-byte output is a prefix of the extended output. */
        obi_blake3_finalize(&h, out, 32);
        obi_hex_encode(out, 32, hex);
        assert_memory_equal(hex, expected, 64);
        free(in);
        free(out);
        free(hex);
        checked++;
    }
    assert_true(checked >= 30);
}

/* Piece sizes straddling block (64), chunk (1024) and SIMD batch (4, 8, 16 chunks) edges. */
static const size_t PIECES[] = {1, 7, 63, 64, 65, 1023, 1024, 1025, 4096 + 64, 16384 + 1};

static void check_mode_whole_and_in_pieces(void **state, enum mode mode, const char *field)
{
    const char *backend = use_backend(state);
    check_mode(backend, mode, field, SIZE_MAX);
    for (size_t i = 0; i < sizeof PIECES / sizeof PIECES[0]; i++)
        check_mode(backend, mode, field, PIECES[i]);
}

static void test_blake3_hash_vectors(void **state)
{
    check_mode_whole_and_in_pieces(state, MODE_HASH, "hash");
}

static void test_blake3_keyed_vectors(void **state)
{
    check_mode_whole_and_in_pieces(state, MODE_KEYED, "keyed_hash");
}

static void test_blake3_derive_key_vectors(void **state)
{
    check_mode_whole_and_in_pieces(state, MODE_DERIVE, "derive_key");
}

static void test_blake3_one_shot_matches_empty_blob_digest(void **state)
{
    use_backend(state);
    uint8_t out[32];
    char hex[65];
    obi_blake3("", 0, out);
    obi_hex_encode(out, 32, hex);
    assert_string_equal(hex, "af1349b9f5f9a1a6a0404dea36dcc9499bcb25c9adc112b7cc9a93cae41f3262");
}

static void test_blake3_large_input_same_in_any_split(void **state)
{
    /* 3 MiB + 17 bytes: many subtree merges; the portable one-shot digest is the reference,
     * compared with this backend's one-shot and two-piece updates at split points that
     * straddle chunk and SIMD-batch boundaries. */
    size_t len = 3 * 1024 * 1024 + 17;
    uint8_t *in = vector_input(len);
    uint8_t reference[32], whole[32], split[32];
    assert_int_equal(obi_blake3_use_backend("portable"), 0);
    obi_blake3(in, len, reference);
    const char *backend = use_backend(state);
    obi_blake3(in, len, whole);
    if (memcmp(reference, whole, 32))
        print_error("backend %s differs from portable on %zu bytes\n", backend, len);
    assert_memory_equal(reference, whole, 32);
    const size_t splits[] = {1,     1024,    1025,   4095, 16 * 1024, 16 * 1024 + 3,
                             65536, 1000003, len - 1};
    for (size_t i = 0; i < sizeof splits / sizeof splits[0]; i++) {
        obi_blake3_hasher h;
        obi_blake3_init(&h);
        obi_blake3_update(&h, in, splits[i]);
        obi_blake3_update(&h, in + splits[i], len - splits[i]);
        obi_blake3_finalize(&h, split, 32);
        if (memcmp(reference, split, 32))
            print_error("backend %s: split at %zu differs\n", backend, splits[i]);
        assert_memory_equal(reference, split, 32);
    }
    free(in);
}

static void test_blake3_use_backend_rejects_unknown_name(void **state)
{
    (void)state;
    const char *before = obi_blake3_backend();
    assert_int_equal(obi_blake3_use_backend("neon"), -EINVAL);
    assert_string_equal(obi_blake3_backend(), before);
}

static void test_blake3_portable_backend_is_always_available(void **state)
{
    (void)state;
    assert_int_equal(obi_blake3_use_backend("portable"), 0);
    assert_string_equal(obi_blake3_backend(), "portable");
}

/* Whether the "flags" line of /proc/cpuinfo (the kernel's view: what it enabled) has flag. */
static bool cpuinfo_has(const char *flag)
{
    FILE *f = fopen("/proc/cpuinfo", "r");
    if (!f)
        return false;
    char line[8192];
    bool found = false;
    while (!found && fgets(line, sizeof line, f)) {
        if (strncmp(line, "flags", 5))
            continue;
        for (char *save = NULL, *word = strtok_r(strchr(line, ':'), ": \n", &save); word;
             word = strtok_r(NULL, " \n", &save))
            found |= !strcmp(word, flag);
        break;
    }
    fclose(f);
    return found;
}

/* The default backend is the widest the CPU has: the detection finds what is there. */
static void test_blake3_default_backend_is_the_widest_the_cpu_has(void **state)
{
    (void)state;
    const char *expected = "portable";
#if defined(__x86_64__)
    if (cpuinfo_has("sse4_1"))
        expected = "sse41";
    if (cpuinfo_has("sse4_1") && cpuinfo_has("avx2"))
        expected = "avx2";
    if (cpuinfo_has("sse4_1") && cpuinfo_has("avx2") && cpuinfo_has("avx512f") &&
        cpuinfo_has("avx512vl"))
        expected = "avx512";
#endif
    if (getenv("OBI_BLAKE3_BACKEND")) {
        print_message("SKIPPED: OBI_BLAKE3_BACKEND is set, so it is the default\n");
        skip();
    }
    assert_int_equal(obi_blake3_use_backend(NULL), 0);
    assert_string_equal(obi_blake3_backend(), expected);
}

#define ON_EVERY_BACKEND(fn)                                                                       \
    {#fn "/portable", fn, NULL, restore_default_backend, (void *)"portable"},                      \
        {#fn "/sse41", fn, NULL, restore_default_backend, (void *)"sse41"},                        \
        {#fn "/avx2", fn, NULL, restore_default_backend, (void *)"avx2"},                          \
    {                                                                                              \
#fn "/avx512", fn, NULL, restore_default_backend, (void *)"avx512"                         \
    }

int main(void)
{
    const struct CMUnitTest tests[] = {
        ON_EVERY_BACKEND(test_blake3_hash_vectors),
        ON_EVERY_BACKEND(test_blake3_keyed_vectors),
        ON_EVERY_BACKEND(test_blake3_derive_key_vectors),
        ON_EVERY_BACKEND(test_blake3_one_shot_matches_empty_blob_digest),
        ON_EVERY_BACKEND(test_blake3_large_input_same_in_any_split),
        cmocka_unit_test_teardown(test_blake3_use_backend_rejects_unknown_name,
                                  restore_default_backend),
        cmocka_unit_test_teardown(test_blake3_portable_backend_is_always_available,
                                  restore_default_backend),
        cmocka_unit_test(test_blake3_default_backend_is_the_widest_the_cpu_has),
    };
    return cmocka_run_group_tests_name("blake3", tests, load_vectors, free_vectors);
}
