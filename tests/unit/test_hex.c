/*
 * Hex text (hex.h): lowercase out, either case in, exact lengths, and a digit table that agrees
 * with the C library's on every byte.
 */
#include <ctype.h>
#include <stdlib.h>

#include "ocibuild/hex.h"
#include "test_helpers.h"

static void test_hex_encodes_lowercase_and_decodes_either_case(void **state)
{
    (void)state;
    static const uint8_t bytes[] = {0x00, 0x0f, 0xa5, 0xff, 0x10};
    char text[2 * sizeof bytes + 1];
    obi_hex_encode(bytes, sizeof bytes, text);
    assert_string_equal(text, "000fa5ff10");
    uint8_t back[sizeof bytes];
    assert_int_equal(obi_hex_decode("000FA5fF10", 10, back, sizeof back), 0);
    assert_memory_equal(back, bytes, sizeof bytes);
    obi_hex_encode(bytes, 0, text);
    assert_string_equal(text, "");
}

static void test_hex_decode_refuses_wrong_length_and_non_digits(void **state)
{
    (void)state;
    uint8_t out[2] = {7, 7};
    assert_int_equal(obi_hex_decode("abc", 3, out, 2), -EINVAL);
    assert_int_equal(obi_hex_decode("abcdef", 6, out, 2), -EINVAL);
    assert_int_equal(obi_hex_decode("ab g", 4, out, 2), -EINVAL);
    assert_int_equal(obi_hex_decode("0x12", 4, out, 2), -EINVAL);
    assert_int_equal(obi_hex_decode("+1ab", 4, out, 2), -EINVAL);
}

static void test_hex_digit_value_agrees_with_isxdigit_on_every_byte(void **state)
{
    (void)state;
    for (int c = -128; c < 128; c++) {
        int want = -1;
        unsigned char u = (unsigned char)c;
        if (u < 128 && isxdigit(u)) {
            char s[2] = {(char)u, 0};
            want = (int)strtol(s, NULL, 16);
        }
        if (obi_hex_digit_value((char)c) != want)
            fail_msg("byte 0x%02x: %d, want %d", u, obi_hex_digit_value((char)c), want);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_hex_encodes_lowercase_and_decodes_either_case),
        cmocka_unit_test(test_hex_decode_refuses_wrong_length_and_non_digits),
        cmocka_unit_test(test_hex_digit_value_agrees_with_isxdigit_on_every_byte),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
