/*
 * Unit tests for cron expressions (include/ocibuild/cron.h): the three field counts, names,
 * ranges, steps and lists, the day-of-month/day-of-week rule, the next time across month,
 * leap-year and year ends, and errors that name the field.
 */
#include <stdlib.h>
#include <time.h>

#include "ocibuild/cron.h"
#include "test_helpers.h"

/* "YYYY-MM-DD HH:MM:SS" UTC -> time_t */
static time_t at(const char *text)
{
    struct tm tm = {0};
    assert_non_null(strptime(text, "%Y-%m-%d %H:%M:%S", &tm));
    return timegm(&tm);
}

/* The next time after `after` of expr, as "YYYY-MM-DD HH:MM:SS". */
static char *next_of(const char *expr, const char *after)
{
    obi_cron cron;
    assert_ok(obi_cron_parse(expr, &cron, err_ptr_));
    time_t next = 0;
    assert_int_equal(obi_cron_next(&cron, at(after), &next), 0);
    struct tm tm;
    gmtime_r(&next, &tm);
    char *out = malloc(32);
    strftime(out, 32, "%Y-%m-%d %H:%M:%S", &tm);
    return out;
}

#define assert_next(expr, after, expected)                                                         \
    do {                                                                                           \
        char *got_ = next_of(expr, after);                                                         \
        assert_string_equal(got_, expected);                                                       \
        free(got_);                                                                                \
    } while (0)

static void test_cron_six_fields_start_with_seconds(void **state)
{
    (void)state;
    assert_next("*/2 * * * * *", "2026-01-01 00:00:00", "2026-01-01 00:00:02");
    assert_next("*/2 * * * * *", "2026-01-01 00:00:01", "2026-01-01 00:00:02");
    assert_next("30 15 10 * * *", "2026-01-01 10:15:30", "2026-01-02 10:15:30");
    assert_next("0 */5 * * * *", "2026-01-01 00:07:00", "2026-01-01 00:10:00");
}

static void test_cron_five_fields_start_with_minutes(void **state)
{
    (void)state;
    assert_next("*/15 * * * *", "2026-01-01 00:00:00", "2026-01-01 00:15:00");
    assert_next("0 12 * * MON-FRI", "2026-01-02 12:00:00", "2026-01-05 12:00:00"); /* Fri->Mon */
}

static void test_cron_seven_fields_have_a_year(void **state)
{
    (void)state;
    assert_next("0 0 0 1 1 * 2030", "2026-06-01 00:00:00", "2030-01-01 00:00:00");
    assert_next("0 0 0 * * * *", "2026-12-31 23:59:59", "2027-01-01 00:00:00");
}

static void test_cron_names_lists_ranges_and_steps(void **state)
{
    (void)state;
    assert_next("0 0 0 1 jan,Jul *", "2026-02-01 00:00:00", "2026-07-01 00:00:00");
    assert_next("0 0 8-18/5 * * *", "2026-01-01 09:00:00", "2026-01-01 13:00:00");
    assert_next("0 10/20 * * * *", "2026-01-01 00:31:00", "2026-01-01 00:50:00");
    assert_next("0 0 0 * * 7", "2026-01-01 00:00:00", "2026-01-04 00:00:00"); /* 7 = Sunday */
    assert_next("@hourly", "2026-01-01 00:00:00", "2026-01-01 01:00:00");
    assert_next("@yearly", "2026-01-01 00:00:00", "2027-01-01 00:00:00");
}

static void test_cron_month_ends_and_leap_years(void **state)
{
    (void)state;
    assert_next("0 0 0 31 * *", "2026-04-01 00:00:00", "2026-05-31 00:00:00");
    assert_next("0 0 0 29 2 ?", "2026-01-01 00:00:00", "2028-02-29 00:00:00");
}

static void test_cron_either_day_field_matches_when_both_are_set(void **state)
{
    (void)state;
    /* the 15th, or any Monday: 2026-01-05 is a Monday before the 15th */
    assert_next("0 0 0 15 * MON", "2026-01-01 00:00:00", "2026-01-05 00:00:00");
    /* ? in day of month: only the weekday decides */
    assert_next("0 0 0 ? * MON", "2026-01-05 00:00:00", "2026-01-12 00:00:00");
}

static void test_cron_impossible_dates_have_no_next(void **state)
{
    (void)state;
    obi_cron cron;
    assert_ok(obi_cron_parse("0 0 0 30 2 *", &cron, err_ptr_));
    time_t next = 0;
    assert_int_equal(obi_cron_next(&cron, at("2026-01-01 00:00:00"), &next), -ENOENT);
}

static void test_cron_errors_name_the_field(void **state)
{
    (void)state;
    static const struct {
        const char *expr;
        const char *needle;
    } cases[] = {
        {"* * *", "expected 5 fields"},
        {"* * * * * * * *", "got 8"},
        {"0 75 * * * *", "field 2 (minute) \"75\": 75 is out of range 0-59"},
        {"0 0 25 * * *", "field 3 (hour)"},
        {"0 0 0 0 * *", "field 4 (day of month) \"0\": 0 is out of range 1-31"},
        {"0 0 0 * FOO *", "field 5 (month)"},
        {"0 0 0 * * 8", "field 6 (day of week)"},
        {"0 0 0 L * *", "L, W and # are not supported"},
        {"0 0 0 * * 1#2", "unexpected characters"},
        {"0 0 5-1 * * *", "runs backwards"},
        {"*/0 * * * * *", "the step is out of range"},
        {"? * * * * *", "? is only for the day fields"},
        {"0 0 0 1, * *", "an empty list item"},
        {"0 0 0 * * * 1900", "field 7 (year)"},
        {"@often", "unknown macro"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        obi_cron cron;
        obi_error *err = NULL;
        int r = obi_cron_parse(cases[i].expr, &cron, &err);
        if (r != -EINVAL || !err || !strstr(err->message, cases[i].needle))
            fail_msg("%s: got %d %s, wanted %s", cases[i].expr, r, err ? err->message : "(none)",
                     cases[i].needle);
        obi_error_free(err);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_cron_six_fields_start_with_seconds),
        cmocka_unit_test(test_cron_five_fields_start_with_minutes),
        cmocka_unit_test(test_cron_seven_fields_have_a_year),
        cmocka_unit_test(test_cron_names_lists_ranges_and_steps),
        cmocka_unit_test(test_cron_month_ends_and_leap_years),
        cmocka_unit_test(test_cron_either_day_field_matches_when_both_are_set),
        cmocka_unit_test(test_cron_impossible_dates_have_no_next),
        cmocka_unit_test(test_cron_errors_name_the_field),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
