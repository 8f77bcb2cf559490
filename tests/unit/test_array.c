/*
 * The growable-array helper (array.h): geometric growth from OBI_ARRAY_MIN_CAP, contents kept
 * and new elements zeroed, no change when there is room, overflow refused without touching the
 * array, and obi_array_cap_for agreeing with what one-at-a-time growth gives.
 */
#include <stdint.h>
#include <stdlib.h>

#include "ocibuild/array.h"
#include "test_helpers.h"

typedef struct pair {
    int key;
    char *value;
} pair;

static void test_array_grows_geometrically_and_keeps_contents(void **state)
{
    (void)state;
    pair *items = NULL;
    size_t cap = 0, reallocs = 0;
    for (size_t n = 0; n < 1000; n++) {
        size_t before = cap;
        assert_int_equal(obi_array_grow(&items, &cap, n + 1), 0);
        assert_true(cap >= n + 1);
        if (cap != before) {
            reallocs++;
            assert_true(cap == OBI_ARRAY_MIN_CAP || cap == 2 * before);
            for (size_t i = n; i < cap; i++) /* the added elements are zeroed */
                assert_true(items[i].key == 0 && items[i].value == NULL);
        }
        items[n].key = (int)n;
    }
    for (size_t n = 0; n < 1000; n++)
        assert_int_equal(items[n].key, (int)n);
    assert_int_equal(reallocs, 9); /* 4, 8, ..., 1024 */
    free(items);
}

static void test_array_jumps_to_need_and_leaves_room_alone(void **state)
{
    (void)state;
    int *items = NULL;
    size_t cap = 0;
    assert_int_equal(obi_array_grow(&items, &cap, 100), 0);
    assert_int_equal(cap, 100);
    int *same = items;
    assert_int_equal(obi_array_grow(&items, &cap, 100), 0);
    assert_int_equal(obi_array_grow(&items, &cap, 0), 0);
    assert_ptr_equal(items, same);
    assert_int_equal(cap, 100);
    assert_int_equal(obi_array_grow(&items, &cap, 101), 0);
    assert_int_equal(cap, 200);
    free(items);
}

static void test_array_refuses_overflow_and_changes_nothing(void **state)
{
    (void)state;
    pair *items = NULL;
    size_t cap = 0;
    assert_int_equal(obi_array_grow(&items, &cap, 3), 0);
    items[2].key = 7;
    pair *before = items;
    assert_int_equal(obi_array_grow(&items, &cap, SIZE_MAX / sizeof *items + 1), -ENOMEM);
    assert_int_equal(obi_array_grow(&items, &cap, SIZE_MAX), -ENOMEM);
    assert_ptr_equal(items, before);
    assert_int_equal(cap, OBI_ARRAY_MIN_CAP);
    assert_int_equal(items[2].key, 7);
    free(items);
}

static void test_array_cap_for_matches_one_at_a_time_growth(void **state)
{
    (void)state;
    char *items = NULL;
    size_t cap = 0;
    assert_int_equal(obi_array_cap_for(0), 0);
    for (size_t n = 1; n <= 5000; n++) {
        assert_int_equal(obi_array_grow(&items, &cap, n), 0);
        if (obi_array_cap_for(n) != cap)
            fail_msg("n = %zu: cap_for %zu, grown to %zu", n, obi_array_cap_for(n), cap);
    }
    free(items);
    assert_true(obi_array_cap_for(SIZE_MAX) == SIZE_MAX);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_array_grows_geometrically_and_keeps_contents),
        cmocka_unit_test(test_array_jumps_to_need_and_leaves_room_alone),
        cmocka_unit_test(test_array_refuses_overflow_and_changes_nothing),
        cmocka_unit_test(test_array_cap_for_matches_one_at_a_time_growth),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
