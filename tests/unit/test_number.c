/*
 * Strict decimal parsing (number.h): digits only, bounded by max without overflow, nothing set
 * on failure.
 */
#include <limits.h>

#include "ocibuild/number.h"
#include "test_helpers.h"

static void test_number_accepts_digits_within_max(void **state)
{
    (void)state;
    unsigned long long v = 0;
    assert_true(obi_parse_decimal("0", 10, &v));
    assert_int_equal(v, 0);
    assert_true(obi_parse_decimal("007", 10, &v));
    assert_int_equal(v, 7);
    assert_true(obi_parse_decimal("86400", 86400, &v));
    assert_int_equal(v, 86400);
    assert_true(obi_parse_decimal("18446744073709551615", ULLONG_MAX, &v));
    assert_true(v == ULLONG_MAX);
}

static void test_number_refuses_everything_else_and_sets_nothing(void **state)
{
    (void)state;
    const char *bad[] = {"", "-1", "+1", " 1", "1 ", "1x", "12abc", "0x10", "1.5", "١"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        unsigned long long v = 42;
        if (obi_parse_decimal(bad[i], ULLONG_MAX, &v))
            fail_msg("accepted \"%s\"", bad[i]);
        assert_int_equal(v, 42);
    }
    unsigned long long v = 42;
    assert_false(obi_parse_decimal(NULL, 10, &v));
    assert_false(obi_parse_decimal("86401", 86400, &v));
    assert_false(obi_parse_decimal("18446744073709551616", ULLONG_MAX, &v)); /* 2^64 */
    assert_false(obi_parse_decimal("99999999999999999999999", ULLONG_MAX, &v));
    assert_false(obi_parse_decimal("1", 0, &v));
    assert_int_equal(v, 42);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_number_accepts_digits_within_max),
        cmocka_unit_test(test_number_refuses_everything_else_and_sets_nothing),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
