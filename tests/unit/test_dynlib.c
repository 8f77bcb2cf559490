/*
 * Optional libraries loaded on first use (dynlib.h): symbols resolve to the library's own
 * functions; a missing library or symbol fails naming it and stores nothing.
 */
#include <stdlib.h>
#include <string.h>
#include <zlib.h>

#include "ocibuild/dynlib.h"
#include "test_helpers.h"

/* zlib: present wherever ocibuild runs (libarchive and gRPC need it). */
#define ZLIB_SONAME "libz.so.1"

static void test_dynlib_resolves_every_symbol(void **state)
{
    (void)state;
    __typeof__(zlibVersion) *version = NULL;
    __typeof__(crc32) *checksum = NULL;
    const obi_dynlib_symbol symbols[] = {
        {"zlibVersion", (void **)&version},
        {"crc32", (void **)&checksum},
    };
    assert_ok(obi_dynlib_load(ZLIB_SONAME, symbols, 2, err_ptr_));
    assert_non_null(version);
    assert_non_null(checksum);
    assert_int_equal(version()[0], ZLIB_VERSION[0]);
    /* CRC-32 of "123456789", the standard check value. */
    assert_int_equal(checksum(0, (const unsigned char *)"123456789", 9), 0xCBF43926u);
}

static void test_dynlib_missing_library_names_it(void **state)
{
    (void)state;
    void (*function)(void) = NULL;
    const obi_dynlib_symbol symbols[] = {{"anything", (void **)&function}};
    obi_error *err = NULL;
    assert_fails_with(err, obi_dynlib_load("libocibuild-absent.so.7", symbols, 1, &err), -ENOENT,
                      "cannot load libocibuild-absent.so.7");
    assert_null(function);
}

static void test_dynlib_missing_symbol_names_it_and_stores_nothing(void **state)
{
    (void)state;
    __typeof__(zlibVersion) *version = NULL;
    void (*absent)(void) = NULL;
    const obi_dynlib_symbol symbols[] = {
        {"zlibVersion", (void **)&version},
        {"obi_no_such_function", (void **)&absent},
    };
    obi_error *err = NULL;
    assert_fails_with(err, obi_dynlib_load(ZLIB_SONAME, symbols, 2, &err), -ENOENT,
                      "libz.so.1: missing symbol obi_no_such_function");
    assert_null(version);
    assert_null(absent);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_dynlib_resolves_every_symbol),
        cmocka_unit_test(test_dynlib_missing_library_names_it),
        cmocka_unit_test(test_dynlib_missing_symbol_names_it_and_stores_nothing),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
