/*
 * Digest text forms: hex, base64 (RFC 4648 vectors), BASE32 (RFC 4648 vectors and the
 * scratch-dir names of build.md), nixbase32 (known Nix hashes), and strict decoding errors.
 */
#include <stdlib.h>
#include <string.h>

#include "ocibuild/digest.h"
#include "test_helpers.h"

static void test_digest_hex_roundtrip_and_errors(void **state)
{
    (void)state;
    obi_digest d, back;
    char hex[65];
    obi_digest_of("", 0, &d);
    obi_digest_to_hex(&d, hex);
    assert_string_equal(hex, "af1349b9f5f9a1a6a0404dea36dcc9499bcb25c9adc112b7cc9a93cae41f3262");
    assert_ok(obi_digest_from_hex(hex, &back, err_ptr_));
    assert_true(obi_digest_equal(&d, &back));
    obi_error *err = NULL;
    assert_fails_with(err, obi_digest_from_hex("abc", &back, &err), -EINVAL, "expected 64 hex");
    hex[10] = 'g';
    assert_fails_with(err, obi_digest_from_hex(hex, &back, &err), -EINVAL, "offset 10");
}

static void test_digest_base64_rfc4648_vectors(void **state)
{
    (void)state;
    static const char *plain[] = {"", "f", "fo", "foo", "foob", "fooba", "foobar"};
    static const char *enc[] = {"", "Zg==", "Zm8=", "Zm9v", "Zm9vYg==", "Zm9vYmE=", "Zm9vYmFy"};
    for (size_t i = 0; i < 7; i++) {
        char out[16];
        obi_base64_encode((const uint8_t *)plain[i], strlen(plain[i]), out);
        assert_string_equal(out, enc[i]);
        assert_int_equal(obi_base64_encoded_len(strlen(plain[i])), strlen(enc[i]));
        uint8_t *dec = NULL;
        size_t dec_len = 0;
        assert_ok(obi_base64_decode(enc[i], strlen(enc[i]), &dec, &dec_len, err_ptr_));
        assert_int_equal(dec_len, strlen(plain[i]));
        assert_memory_equal(dec, plain[i], dec_len);
        free(dec);
    }
}

static void test_digest_base64_rejects_malformed(void **state)
{
    (void)state;
    obi_error *err = NULL;
    uint8_t *dec = NULL;
    size_t len;
    assert_fails_with(err, obi_base64_decode("Zm9", 3, &dec, &len, &err), -EINVAL, "multiple of 4");
    assert_fails_with(err, obi_base64_decode("Zm!v", 4, &dec, &len, &err), -EINVAL, "offset 2");
    assert_fails_with(err, obi_base64_decode("Zh==", 4, &dec, &len, &err), -EINVAL, "padding bits");
    assert_null(dec);
}

static void test_digest_b3_string_form(void **state)
{
    (void)state;
    obi_digest d;
    obi_digest_of("", 0, &d);
    char *s = obi_digest_to_b3_string(&d);
    assert_string_equal(s, "b3:rxNJufX5oaagQE3qNtzJSZvLJcmtwRK3zJqTyuQfMmI=");
    free(s);
}

static void test_digest_base32_rfc4648_vectors(void **state)
{
    (void)state;
    static const char *plain[] = {"", "f", "fo", "foo", "foob", "fooba", "foobar"};
    static const char *enc[] = {
        "", "MY======", "MZXQ====", "MZXW6===", "MZXW6YQ=", "MZXW6YTB", "MZXW6YTBOI======"};
    for (size_t i = 0; i < 7; i++) {
        char out[32];
        obi_base32_encode((const uint8_t *)plain[i], strlen(plain[i]), out);
        assert_string_equal(out, enc[i]);
        assert_int_equal(obi_base32_encoded_len(strlen(plain[i])), strlen(enc[i]));
    }
}

static void test_digest_base32_scratch_names_from_build_spec(void **state)
{
    (void)state;
    obi_digest d;
    char out[64];
    obi_digest_of("nix/store", 9, &d);
    obi_base32_encode(d.bytes, 32, out);
    assert_string_equal(out, "SN566XP5HOO2D322W42EA3DZYPDYBMPRUF3TGFIMLXV54WM4CSNQ====");
    obi_digest_of("build", 5, &d);
    obi_base32_encode(d.bytes, 32, out);
    assert_string_equal(out, "3SCCPULSYMZAQ35F76TA3A3HYQROJMTNQW7SVJDXX5BNIYJ3WHYA====");
}

static void test_digest_nixbase32_known_values(void **state)
{
    (void)state;
    /* sha256("") in Nix's base32, as `nix-hash --type sha256 --to-base32` prints it. */
    static const char *sha256_empty_hex =
        "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";
    uint8_t raw[32], back[32];
    assert_int_equal(obi_hex_decode(sha256_empty_hex, 64, raw, 32), 0);
    char out[64];
    obi_nixbase32_encode(raw, 32, out);
    assert_string_equal(out, "0mdqa9w1p6cmli6976v4wi0sw9r4p5prkj7lzfd1877wk11c9c73");
    assert_ok(obi_nixbase32_decode(out, strlen(out), back, 32, err_ptr_));
    assert_memory_equal(raw, back, 32);
    /* 20-byte store path hash parts are 32 characters. */
    assert_int_equal(obi_nixbase32_encoded_len(20), 32);
    uint8_t one[1] = {0xff};
    obi_nixbase32_encode(one, 1, out);
    assert_string_equal(out, "7z");
}

static void test_digest_nixbase32_rejects_bad_input(void **state)
{
    (void)state;
    obi_error *err = NULL;
    uint8_t out[1];
    assert_fails_with(err, obi_nixbase32_decode("7e", 2, out, 1, &err), -EINVAL, "offset 1");
    assert_fails_with(err, obi_nixbase32_decode("zz", 2, out, 1, &err), -EINVAL, "too large");
    assert_fails_with(err, obi_nixbase32_decode("7", 1, out, 1, &err), -EINVAL, "expected 2");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_digest_hex_roundtrip_and_errors),
        cmocka_unit_test(test_digest_base64_rfc4648_vectors),
        cmocka_unit_test(test_digest_base64_rejects_malformed),
        cmocka_unit_test(test_digest_b3_string_form),
        cmocka_unit_test(test_digest_base32_rfc4648_vectors),
        cmocka_unit_test(test_digest_base32_scratch_names_from_build_spec),
        cmocka_unit_test(test_digest_nixbase32_known_values),
        cmocka_unit_test(test_digest_nixbase32_rejects_bad_input),
    };
    return cmocka_run_group_tests_name("digest", tests, NULL, NULL);
}
