/*
 * Errors (error.h), above all the out-of-memory error: it allocates nothing, is never freed or
 * written into, survives prefix and move, and is what *err becomes when an error cannot be
 * allocated. The allocator is wrapped (meson links this test with -Wl,--wrap=malloc,calloc,
 * realloc), so a test can count the library's allocations and make them fail; allocations
 * inside libc (vasprintf's) are not affected.
 */
#include <stdlib.h>

#include "ocibuild/cleanup.h"
#include "ocibuild/error.h"
#include "test_helpers.h"

void *__real_malloc(size_t size);
void *__real_calloc(size_t n, size_t size);
void *__real_realloc(void *p, size_t size);

static int allocations_fail; /* nonzero: the wrapped allocator returns NULL */
static size_t allocations;   /* calls of the wrapped allocator */

void *__wrap_malloc(size_t size)
{
    allocations++;
    return allocations_fail ? NULL : __real_malloc(size);
}

void *__wrap_calloc(size_t n, size_t size)
{
    allocations++;
    return allocations_fail ? NULL : __real_calloc(n, size);
}

void *__wrap_realloc(void *p, size_t size)
{
    allocations++;
    return allocations_fail ? NULL : __real_realloc(p, size);
}

static void expect_oom_error(const obi_error *err)
{
    assert_non_null(err);
    assert_int_equal(err->code, -ENOMEM);
    assert_non_null(err->message);
    assert_string_equal(err->message, "out of memory");
}

static void test_error_oom_never_allocates(void **state)
{
    (void)state;
    obi_error *err = NULL;
    allocations = 0;
    allocations_fail = 1;
    int r = obi_error_oom(&err);
    allocations_fail = 0;
    assert_int_equal(r, -ENOMEM);
    assert_int_equal(allocations, 0);
    expect_oom_error(err);
    obi_error *again = NULL;
    assert_int_equal(obi_error_oom(&again), -ENOMEM);
    assert_ptr_equal(again, err); /* one static error */
    assert_int_equal(obi_error_oom(NULL), -ENOMEM);
    obi_error_free(err);
    obi_error_free(again);
}

static void test_error_oom_keeps_an_error_already_set(void **state)
{
    (void)state;
    cleanup_error obi_error *err = NULL;
    obi_error_set(&err, -ENOENT, "open /x");
    assert_int_equal(obi_error_oom(&err), -ENOMEM);
    assert_int_equal(err->code, -ENOENT);
    assert_string_equal(err->message, "open /x");
}

static void test_error_set_falls_back_to_oom_never_null(void **state)
{
    (void)state;
    obi_error *err = NULL;
    allocations = 0;
    allocations_fail = 1;
    int r = obi_error_set(&err, -ENOENT, "open %s", "/x");
    allocations_fail = 0;
    assert_true(allocations > 0); /* the wrappers are in place */
    assert_int_equal(r, -ENOENT); /* the caller's code, as when the error could be made */
    expect_oom_error(err);
    obi_error_free(err);

    err = NULL;
    allocations_fail = 1;
    r = obi_error_set_errno(&err, EACCES, "open %s", "/x");
    allocations_fail = 0;
    assert_int_equal(r, -EACCES);
    expect_oom_error(err);
    obi_error_free(err);
}

static void test_error_prefix_on_oom_makes_a_new_error(void **state)
{
    (void)state;
    obi_error *err = NULL;
    obi_error_oom(&err);
    obi_error *oom = err;
    assert_int_equal(obi_error_prefix(&err, -EIO, "import %s", "/x"), -ENOMEM);
    assert_ptr_not_equal(err, oom);
    assert_int_equal(err->code, -ENOMEM);
    assert_string_equal(err->message, "import /x: out of memory");
    expect_oom_error(oom); /* the static error was not written into */
    assert_int_equal(obi_error_prefix(&err, -EIO, "build"), -ENOMEM);
    assert_string_equal(err->message, "build: import /x: out of memory");
    obi_error_free(err); /* a heap error now: ASan/LSan would report a leak or a bad free */
}

static void test_error_prefix_on_oom_short_of_memory_keeps_it(void **state)
{
    (void)state;
    obi_error *err = NULL;
    obi_error_oom(&err);
    obi_error *oom = err;
    allocations_fail = 1;
    int r = obi_error_prefix(&err, -EIO, "import %s", "/x");
    allocations_fail = 0;
    assert_int_equal(r, -ENOMEM);
    assert_ptr_equal(err, oom);
    expect_oom_error(err);
    obi_error_free(err);
}

static void test_error_free_leaves_oom_alone(void **state)
{
    (void)state;
    for (int i = 0; i < 3; i++) {
        cleanup_error obi_error *err = NULL;
        obi_error_oom(&err);
    } /* freed by cleanup_error three times: ASan would report freeing a non-heap address */
    obi_error *err = NULL;
    obi_error_oom(&err);
    expect_oom_error(err);
    obi_error_free(err);
}

static void test_error_move_of_oom(void **state)
{
    (void)state;
    obi_error *src = NULL, *dst = NULL;
    obi_error_oom(&src);
    obi_error *oom = src;
    obi_error_set(&dst, -ENOENT, "replaced"); /* freed by the move */
    assert_int_equal(obi_error_move(&dst, &src), -ENOMEM);
    assert_null(src);
    assert_ptr_equal(dst, oom);

    obi_error *heap = NULL;
    obi_error_set(&heap, -ENOENT, "open /x");
    assert_int_equal(obi_error_move(&dst, &heap), -ENOENT); /* the oom error in dst: not freed */
    assert_null(heap);
    assert_string_equal(dst->message, "open /x");
    obi_error_free(dst);

    src = NULL;
    obi_error_oom(&src);
    assert_int_equal(obi_error_move(NULL, &src), -ENOMEM); /* dropped, not freed */
    assert_null(src);
    obi_error *again = NULL;
    obi_error_oom(&again);
    expect_oom_error(again);
}

static void test_error_prefix_and_set_errno(void **state)
{
    (void)state;
    cleanup_error obi_error *err = NULL;
    assert_int_equal(obi_error_set_errno(&err, ENOENT, "open %s", "/x"), -ENOENT);
    assert_string_equal(err->message, "open /x: No such file or directory");
    assert_int_equal(obi_error_prefix(&err, -EIO, "import"), -ENOENT);
    assert_string_equal(err->message, "import: open /x: No such file or directory");
    assert_int_equal(obi_error_set(&err, -EINVAL, "second"), -EINVAL); /* first one stays */
    assert_string_equal(err->message, "import: open /x: No such file or directory");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_error_oom_never_allocates),
        cmocka_unit_test(test_error_oom_keeps_an_error_already_set),
        cmocka_unit_test(test_error_set_falls_back_to_oom_never_null),
        cmocka_unit_test(test_error_prefix_on_oom_makes_a_new_error),
        cmocka_unit_test(test_error_prefix_on_oom_short_of_memory_keeps_it),
        cmocka_unit_test(test_error_free_leaves_oom_alone),
        cmocka_unit_test(test_error_move_of_oom),
        cmocka_unit_test(test_error_prefix_and_set_errno),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
