/*
 * Strict decimal parsing (number.h): digits only, bounded by max without overflow, nothing set
 * on failure; memory strings with their unit table.
 */
#include <errno.h>
#include <limits.h>
#include <stdint.h>

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

static void test_number_memory_strings_and_their_units(void **state)
{
    (void)state;
    static const struct {
        const char *text;
        uint64_t bytes;
    } good[] = {
        {"512Mi", 536870912ull},
        {"1Gi", 1073741824ull},
        {"2G", 2000000000ull},
        {"1024", 1024},
        {"512Ki", 524288},
        {"1Ti", 1ull << 40},
        {"3k", 3000},
        {"3K", 3000},
        {"5m", 5000000},
        {"5M", 5000000},
        {"2g", 2000000000ull},
        {"1T", 1000000000000ull},
        {"1t", 1000000000000ull},
        {"0", 0},
        {"18446744073709551615", UINT64_MAX},
    };
    for (size_t i = 0; i < sizeof good / sizeof good[0]; i++) {
        uint64_t v = 1;
        assert_ok(obi_parse_memory(good[i].text, &v, err_ptr_));
        assert_true(v == good[i].bytes);
    }
    static const struct {
        const char *text;
        int code;
        const char *needle;
    } bad[] = {
        {"", -EINVAL, "empty"},
        {"abc", -EINVAL, "not a number"},
        {"Mi", -EINVAL, "not a number"},
        {"-1", -EINVAL, "not a number"},
        {" 1", -EINVAL, "not a number"},
        {"12.5Mi", -EINVAL, "fractional"},
        {"1.0", -EINVAL, "fractional"},
        {"1MB", -EINVAL, "unknown unit"},
        {"1 Mi", -EINVAL, "unknown unit"},
        {"1mi", -EINVAL, "unknown unit"},
        {"18446744073709551616", -ERANGE, "overflows"},
        {"16777216Ti", -ERANGE, "overflows"},
        {"18446744073709552G", -ERANGE, "overflows"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        uint64_t v = 7;
        obi_error *err = NULL;
        assert_fails_with(err, obi_parse_memory(bad[i].text, &v, &err), bad[i].code, bad[i].needle);
        assert_true(v == 7);
    }
}

static void test_number_sizes_for_people(void **state)
{
    (void)state;
    static const struct {
        uint64_t bytes;
        const char *text;
    } cases[] = {
        {0, "0 B"},
        {1023, "1023 B"},
        {1024, "1.0 KiB"},
        {1536, "1.5 KiB"},
        {30000000, "28.6 MiB"},
        {(uint64_t)5 << 40, "5.0 TiB"},
        {UINT64_MAX, "16.0 EiB"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        char text[OBI_SIZE_TEXT_LEN];
        obi_format_size(cases[i].bytes, text);
        assert_string_equal(text, cases[i].text);
    }
}

static void test_number_durations_as_zlayer_writes_them(void **state)
{
    (void)state;
    static const struct {
        const char *text;
        uint64_t ms;
    } good[] = {
        {"30s", 30000},        {"5m", 300000},    {"1h 30m", 5400000}, {"1h30m", 5400000},
        {"500ms", 500},        {"2d", 172800000}, {"1w", 604800000},   {"300secs", 300000},
        {"10 seconds", 10000}, {"1500us", 1},     {"0s", 0},
    };
    for (size_t i = 0; i < sizeof good / sizeof good[0]; i++) {
        uint64_t ms = 1;
        assert_ok(obi_parse_duration(good[i].text, &ms, err_ptr_));
        assert_int_equal(ms, good[i].ms);
    }
    static const struct {
        const char *text;
        int code;
        const char *needle;
    } bad[] = {
        {"", -EINVAL, "empty"},
        {"30", -EINVAL, "no unit after 30"},
        {"5 parsecs", -EINVAL, "unknown unit after 5"},
        {"-5s", -EINVAL, "expected a number"},
        {"1.5h", -EINVAL, "no unit after 1"},
        {"99999999999999999999s", -ERANGE, "overflows"},
        {"999999999999w", -ERANGE, "overflows"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        obi_error *err = NULL;
        uint64_t ms = 7;
        assert_fails_with(err, obi_parse_duration(bad[i].text, &ms, &err), bad[i].code,
                          bad[i].needle);
        assert_int_equal(ms, 7);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_number_accepts_digits_within_max),
        cmocka_unit_test(test_number_refuses_everything_else_and_sets_nothing),
        cmocka_unit_test(test_number_memory_strings_and_their_units),
        cmocka_unit_test(test_number_sizes_for_people),
        cmocka_unit_test(test_number_durations_as_zlayer_writes_them),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
