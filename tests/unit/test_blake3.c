/*
 * BLAKE3 against the official test vectors (../shared/data/blake3_test_vectors.json): default
 * hash, keyed hash and derive-key, full extended output, fed whole and in awkward pieces.
 */
#include <jansson.h>
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

static void check_mode(enum mode mode, const char *field, size_t piece)
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
            print_error("%s mismatch for input_len %zu (piece %zu)\n", field, len, piece);
        assert_string_equal(hex, expected);
        /* The default 32-byte output is a prefix of the extended output. */
        obi_blake3_finalize(&h, out, 32);
        assert_memory_equal(hex, expected, 0); /* keeps the compiler quiet about unused */
        obi_hex_encode(out, 32, hex);
        assert_memory_equal(hex, expected, 64);
        free(in);
        free(out);
        free(hex);
        checked++;
    }
    assert_true(checked >= 30);
}

static void test_blake3_hash_vectors_whole(void **state)
{
    (void)state;
    check_mode(MODE_HASH, "hash", SIZE_MAX);
}

static void test_blake3_hash_vectors_in_odd_pieces(void **state)
{
    (void)state;
    check_mode(MODE_HASH, "hash", 7);
    check_mode(MODE_HASH, "hash", 1023);
    check_mode(MODE_HASH, "hash", 1025);
    check_mode(MODE_HASH, "hash", 4096 + 64);
}

static void test_blake3_keyed_vectors(void **state)
{
    (void)state;
    check_mode(MODE_KEYED, "keyed_hash", SIZE_MAX);
    check_mode(MODE_KEYED, "keyed_hash", 63);
}

static void test_blake3_derive_key_vectors(void **state)
{
    (void)state;
    check_mode(MODE_DERIVE, "derive_key", SIZE_MAX);
    check_mode(MODE_DERIVE, "derive_key", 65);
}

static void test_blake3_one_shot_matches_empty_blob_digest(void **state)
{
    (void)state;
    uint8_t out[32];
    char hex[65];
    obi_blake3("", 0, out);
    obi_hex_encode(out, 32, hex);
    assert_string_equal(hex, "af1349b9f5f9a1a6a0404dea36dcc9499bcb25c9adc112b7cc9a93cae41f3262");
}

static void test_blake3_large_input_same_in_any_split(void **state)
{
    (void)state;
    /* 3 MiB + 17 bytes: many subtree merges; compare one-shot with byte-dribbled updates at
     * a few split points that straddle chunk and SIMD-batch boundaries. */
    size_t len = 3 * 1024 * 1024 + 17;
    uint8_t *in = vector_input(len);
    uint8_t whole[32], split[32];
    obi_blake3(in, len, whole);
    static const size_t splits[] = {1, 1024, 1025, 4095, 16 * 1024 + 3, 65536, 1000003};
    for (size_t i = 0; i < sizeof splits / sizeof splits[0]; i++) {
        obi_blake3_hasher h;
        obi_blake3_init(&h);
        obi_blake3_update(&h, in, splits[i]);
        obi_blake3_update(&h, in + splits[i], len - splits[i]);
        obi_blake3_finalize(&h, split, 32);
        assert_memory_equal(whole, split, 32);
    }
    free(in);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_blake3_hash_vectors_whole),
        cmocka_unit_test(test_blake3_hash_vectors_in_odd_pieces),
        cmocka_unit_test(test_blake3_keyed_vectors),
        cmocka_unit_test(test_blake3_derive_key_vectors),
        cmocka_unit_test(test_blake3_one_shot_matches_empty_blob_digest),
        cmocka_unit_test(test_blake3_large_input_same_in_any_split),
    };
    return cmocka_run_group_tests_name("blake3", tests, load_vectors, free_vectors);
}
