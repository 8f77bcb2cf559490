/*
 * String vectors (strv.h): the builder keeps a valid NULL-terminated vector after every add,
 * copies what it is given, sorts bytewise dropping repeats, and hands out a vector (one of just
 * NULL when empty) that obi_strv_free frees.
 */
#include <stdio.h>
#include <stdlib.h>

#include "ocibuild/cleanup.h"
#include "ocibuild/strv.h"
#include "test_helpers.h"

static void test_strv_builder_is_terminated_after_every_add(void **state)
{
    (void)state;
    cleanup_strv_builder obi_strv_builder b = {0};
    char name[16];
    for (int i = 0; i < 100; i++) {
        snprintf(name, sizeof name, "s%d", i);
        assert_int_equal(obi_strv_builder_add(&b, name), 0);
        name[0] = 'x'; /* copied, not kept */
        assert_int_equal(b.n, (size_t)i + 1);
        assert_null(b.items[b.n]);
    }
    assert_string_equal(b.items[42], "s42");
    assert_true(obi_strv_builder_contains(&b, "s99"));
    assert_false(obi_strv_builder_contains(&b, "x99"));
}

static void test_strv_builder_sorts_bytewise_and_drops_repeats(void **state)
{
    (void)state;
    cleanup_strv_builder obi_strv_builder b = {0};
    static const char *const in[] = {"b", "\xc3\xa9", "a", "b", "B", "a", "ab"};
    for (size_t i = 0; i < sizeof in / sizeof in[0]; i++)
        assert_int_equal(obi_strv_builder_add(&b, in[i]), 0);
    obi_strv_builder_sort_unique(&b);
    static const char *const want[] = {"B", "a", "ab", "b", "\xc3\xa9"};
    assert_int_equal(b.n, sizeof want / sizeof want[0]);
    for (size_t i = 0; i < b.n; i++)
        assert_string_equal(b.items[i], want[i]);
    assert_null(b.items[b.n]);
}

static void test_strv_builder_steal_hands_out_a_vector(void **state)
{
    (void)state;
    obi_strv_builder b = {0};
    size_t n = 99;
    cleanup_strv char **empty = obi_strv_builder_steal(&b, &n);
    assert_non_null(empty);
    assert_null(empty[0]);
    assert_int_equal(n, 0);
    assert_int_equal(obi_strv_builder_add(&b, "one"), 0);
    cleanup_strv char **one = obi_strv_builder_steal(&b, &n);
    assert_int_equal(n, 1);
    assert_string_equal(one[0], "one");
    assert_null(one[1]);
    assert_null(b.items); /* emptied: clearing it now frees nothing twice */
    assert_int_equal(b.n, 0);
    obi_strv_builder_clear(&b);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_strv_builder_is_terminated_after_every_add),
        cmocka_unit_test(test_strv_builder_sorts_bytewise_and_drops_repeats),
        cmocka_unit_test(test_strv_builder_steal_hands_out_a_vector),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
