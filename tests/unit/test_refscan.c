/*
 * Unit tests for the reference scanner (src/castore/refscan.c): boundaries, overlaps,
 * prefix/suffix needles, binary needles, duplicates, streams and merging, and random
 * needle sets checked against a naive scan.
 */
#include <stdio.h>
#include <stdlib.h>

#include "ocibuild/refscan.h"
#include "test_helpers.h"

static const char NIXBASE32[] = "0123456789abcdfghijklmnpqrsvwxyz";

/* Scans data (in chunks of `chunk` bytes) with the given needles; returns the result list. */
static size_t *scan_chunks(const obi_refscan *scanner, const void *data, size_t len, size_t chunk,
                           size_t *n_found)
{
    obi_refscan_state *st = NULL;
    assert_ok(obi_refscan_state_new(scanner, &st, err_ptr_));
    for (size_t off = 0; off < len; off += chunk)
        obi_refscan_feed(st, (const uint8_t *)data + off, len - off < chunk ? len - off : chunk);
    size_t *list = NULL;
    assert_ok(obi_refscan_state_result(st, &list, n_found, err_ptr_));
    obi_refscan_state_free(st);
    return list;
}

static obi_refscan *scanner_of(const char *const *needles, size_t n)
{
    obi_refscan *s = NULL;
    assert_ok(obi_refscan_new_strings(needles, n, &s, err_ptr_));
    return s;
}

static void assert_found(size_t *list, size_t n, const size_t *expected, size_t n_expected)
{
    assert_int_equal(n, n_expected);
    for (size_t i = 0; i < n; i++)
        assert_int_equal(list[i], expected[i]);
}

static void test_refscan_finds_needles_in_one_buffer(void **state)
{
    (void)state;
    const char *needles[] = {"abc", "xyz", "missing"};
    cleanup_refscan obi_refscan *s = scanner_of(needles, 3);
    const char *text = "--xyz--abc--";
    size_t n;
    cleanup_free size_t *list = scan_chunks(s, text, strlen(text), 1000, &n);
    assert_found(list, n, (size_t[]){0, 1}, 2);
}

static void test_refscan_finds_needles_straddling_boundaries_fed_byte_by_byte(void **state)
{
    (void)state;
    const char *needles[] = {"0123456789abcdfghijklmnpqrsvwxyz", "hello", "q"};
    cleanup_refscan obi_refscan *s = scanner_of(needles, 3);
    const char *text = "xx0123456789abcdfghijklmnpqrsvwxyz hel hello q";
    for (size_t chunk = 1; chunk <= strlen(text) + 1; chunk++) {
        size_t n;
        cleanup_free size_t *list = scan_chunks(s, text, strlen(text), chunk, &n);
        assert_found(list, n, (size_t[]){0, 1, 2}, 3);
    }
}

static void test_refscan_finds_overlapping_needles(void **state)
{
    (void)state;
    /* "abcd" and "cdef" overlap in "abcdef"; "aaa" overlaps itself in "aaaa". */
    const char *needles[] = {"abcd", "cdef", "bcde", "aaa", "zz"};
    cleanup_refscan obi_refscan *s = scanner_of(needles, 5);
    const char *text = "abcdef aaaa";
    for (size_t chunk = 1; chunk <= 4; chunk++) {
        size_t n;
        cleanup_free size_t *list = scan_chunks(s, text, strlen(text), chunk, &n);
        assert_found(list, n, (size_t[]){0, 1, 2, 3}, 4);
    }
}

static void test_refscan_finds_needle_that_is_prefix_or_suffix_of_another(void **state)
{
    (void)state;
    const char *needles[] = {"abcdefghij", "abc", "hij", "abcdefghijk"};
    cleanup_refscan obi_refscan *s = scanner_of(needles, 4);
    const char *text = "..abcdefghij..";
    for (size_t chunk = 1; chunk <= 5; chunk++) {
        size_t n;
        cleanup_free size_t *list = scan_chunks(s, text, strlen(text), chunk, &n);
        assert_found(list, n, (size_t[]){0, 1, 2}, 3);
    }
}

static void test_refscan_finds_binary_needles_with_nul(void **state)
{
    (void)state;
    const uint8_t a[] = {0, 1, 0, 2}, b[] = {0}, c[] = {0xff, 0, 0xfe}, d[] = {0, 0, 0, 0, 0};
    obi_refscan_needle needles[] = {{a, sizeof a}, {b, sizeof b}, {c, sizeof c}, {d, sizeof d}};
    cleanup_refscan obi_refscan *s = NULL;
    assert_ok(obi_refscan_new(needles, 4, &s, err_ptr_));
    const uint8_t data[] = {7, 0, 1, 0, 2, 9, 0xff, 0, 0xfe, 0, 0, 0, 0};
    for (size_t chunk = 1; chunk <= sizeof data; chunk++) {
        size_t n;
        cleanup_free size_t *list = scan_chunks(s, data, sizeof data, chunk, &n);
        assert_found(list, n, (size_t[]){0, 1, 2}, 3);
    }
}

static void test_refscan_reports_each_duplicate_needle(void **state)
{
    (void)state;
    const char *needles[] = {"same", "other", "same"};
    cleanup_refscan obi_refscan *s = scanner_of(needles, 3);
    size_t n;
    cleanup_free size_t *list = scan_chunks(s, "is it the same?", 15, 3, &n);
    assert_found(list, n, (size_t[]){0, 2}, 2);
}

static void test_refscan_reports_no_partial_match_at_end_of_data(void **state)
{
    (void)state;
    const char *needles[] = {"abcdef", "abc"};
    cleanup_refscan obi_refscan *s = scanner_of(needles, 2);
    size_t n;
    cleanup_free size_t *list = scan_chunks(s, "xxabcde", 7, 2, &n);
    assert_found(list, n, (size_t[]){1}, 1);
}

static void test_refscan_rejects_empty_needle_naming_its_index(void **state)
{
    (void)state;
    const char *needles[] = {"abc", "", "d"};
    obi_refscan *s = NULL;
    obi_error *err = NULL;
    assert_fails_with(err, obi_refscan_new_strings(needles, 3, &s, &err), -EINVAL, "needle 1");
    assert_null(s);
}

static void test_refscan_without_needles_finds_nothing(void **state)
{
    (void)state;
    cleanup_refscan obi_refscan *s = NULL;
    assert_ok(obi_refscan_new(NULL, 0, &s, err_ptr_));
    size_t n = 99;
    cleanup_free size_t *list = scan_chunks(s, "anything", 8, 3, &n);
    assert_int_equal(n, 0);
    assert_null(list);
}

static void test_refscan_does_not_match_across_streams(void **state)
{
    (void)state;
    const char *needles[] = {"abcd"};
    cleanup_refscan obi_refscan *s = scanner_of(needles, 1);
    cleanup_refscan_state obi_refscan_state *st = NULL;
    assert_ok(obi_refscan_state_new(s, &st, err_ptr_));
    obi_refscan_feed(st, "xxab", 4);
    obi_refscan_end_stream(st);
    obi_refscan_feed(st, "cdxx", 4);
    assert_false(obi_refscan_state_found(st, 0));
    obi_refscan_scan(st, "ab", 2);
    obi_refscan_feed(st, "cd", 2);
    assert_false(obi_refscan_state_found(st, 0));
    obi_refscan_feed(st, "ab", 2);
    obi_refscan_feed(st, "cd", 2);
    assert_true(obi_refscan_state_found(st, 0));
    assert_false(obi_refscan_state_found(st, 1)); /* out of range */
}

static void test_refscan_merge_unions_found_sets(void **state)
{
    (void)state;
    const char *needles[] = {"one", "two", "three"};
    cleanup_refscan obi_refscan *s = scanner_of(needles, 3);
    cleanup_refscan_state obi_refscan_state *a = NULL, *b = NULL;
    assert_ok(obi_refscan_state_new(s, &a, err_ptr_));
    assert_ok(obi_refscan_state_new(s, &b, err_ptr_));
    obi_refscan_scan(a, "three", 5);
    obi_refscan_scan(b, "one", 3);
    assert_ok(obi_refscan_state_merge(a, b, err_ptr_));
    cleanup_free size_t *list = NULL;
    size_t n;
    assert_ok(obi_refscan_state_result(a, &list, &n, err_ptr_));
    assert_found(list, n, (size_t[]){0, 2}, 2);
    assert_int_equal(obi_refscan_state_found_count(b), 1);
}

static void test_refscan_merge_rejects_states_of_different_scanners(void **state)
{
    (void)state;
    const char *needles[] = {"one"};
    cleanup_refscan obi_refscan *s1 = scanner_of(needles, 1);
    cleanup_refscan obi_refscan *s2 = scanner_of(needles, 1);
    cleanup_refscan_state obi_refscan_state *a = NULL, *b = NULL;
    assert_ok(obi_refscan_state_new(s1, &a, err_ptr_));
    assert_ok(obi_refscan_state_new(s2, &b, err_ptr_));
    obi_error *err = NULL;
    assert_fails_with(err, obi_refscan_state_merge(a, b, &err), -EINVAL, "different scanners");
}

/* Naive reference: needle i is found iff memmem finds it in data. */
static bool naive_contains(const uint8_t *data, size_t len, const uint8_t *needle, size_t nlen)
{
    return memmem(data, len, needle, nlen) != NULL;
}

static size_t check_against_naive(const obi_refscan *s, const uint8_t *data, size_t len,
                                  uint8_t **needles, const size_t *lens, size_t n_needles,
                                  unsigned seed)
{
    size_t n_expected = 0;
    cleanup_free size_t *expected = calloc(n_needles, sizeof *expected);
    for (size_t i = 0; i < n_needles; i++)
        if (naive_contains(data, len, needles[i], lens[i]))
            expected[n_expected++] = i;
    srand(seed);
    /* Random chunk sizes, including tiny ones, to exercise the boundaries. */
    obi_refscan_state *st = NULL;
    assert_ok(obi_refscan_state_new(s, &st, err_ptr_));
    for (size_t off = 0; off < len;) {
        size_t chunk = (size_t)(rand() % 4 == 0 ? rand() % 40 : rand() % 9000);
        if (chunk > len - off)
            chunk = len - off;
        obi_refscan_feed(st, data + off, chunk);
        off += chunk;
    }
    cleanup_free size_t *list = NULL;
    size_t n;
    assert_ok(obi_refscan_state_result(st, &list, &n, err_ptr_));
    obi_refscan_state_free(st);
    assert_found(list, n, expected, n_expected);
    return n_expected;
}

static void test_refscan_matches_naive_scan_with_5000_random_nixbase32_needles(void **state)
{
    (void)state;
    enum { N = 5000, LEN = 32, DATA = 1 << 17 };
    srand(42);
    uint8_t **needles = calloc(N, sizeof *needles);
    size_t *lens = calloc(N, sizeof *lens);
    for (size_t i = 0; i < N; i++) {
        needles[i] = malloc(LEN);
        lens[i] = LEN;
        for (size_t j = 0; j < LEN; j++)
            needles[i][j] = (uint8_t)NIXBASE32[rand() % 32];
    }
    /* Data: random bytes, long runs of nixbase32 characters, 60 planted needles and 60
     * planted needles with their last character changed (must not be reported). */
    cleanup_free uint8_t *data = malloc(DATA);
    for (size_t i = 0; i < DATA; i++)
        data[i] = (i / 4096) % 2 ? (uint8_t)NIXBASE32[rand() % 32] : (uint8_t)rand();
    for (int k = 0; k < 120; k++) {
        size_t at = (size_t)rand() % (DATA - LEN), which = (size_t)rand() % N;
        memcpy(data + at, needles[which], LEN);
        if (k % 2)
            data[at + LEN - 1] = data[at + LEN - 1] == 'z' ? 'y' : 'z';
    }
    obi_refscan_needle *list = calloc(N, sizeof *list);
    for (size_t i = 0; i < N; i++)
        list[i] = (obi_refscan_needle){needles[i], lens[i]};
    cleanup_refscan obi_refscan *s = NULL;
    assert_ok(obi_refscan_new(list, N, &s, err_ptr_));
    /* Some plants overwrite others; most survive. */
    assert_true(check_against_naive(s, data, DATA, needles, lens, N, 7) >= 40);
    for (size_t i = 0; i < N; i++)
        free(needles[i]);
    free(needles);
    free(lens);
    free(list);
}

/* A two-letter alphabet makes overlaps, prefixes and suffixes frequent. */
static void check_mixed_lengths(size_t min_len, size_t max_extra)
{
    enum { N = 300, DATA = 1 << 14 };
    srand((unsigned)(4242 + min_len));
    uint8_t **needles = calloc(N, sizeof *needles);
    size_t *lens = calloc(N, sizeof *lens);
    obi_refscan_needle *list = calloc(N, sizeof *list);
    for (size_t i = 0; i < N; i++) {
        lens[i] = min_len + (size_t)rand() % (i < 10 ? 3 : max_extra);
        needles[i] = malloc(lens[i]);
        for (size_t j = 0; j < lens[i]; j++)
            needles[i][j] = (uint8_t)("ab"[rand() % 2]);
        list[i] = (obi_refscan_needle){needles[i], lens[i]};
    }
    cleanup_free uint8_t *data = malloc(DATA);
    for (size_t i = 0; i < DATA; i++)
        data[i] = (uint8_t)(min_len > 1 ? "ab"[rand() % 2] : "abc"[rand() % 3]);
    cleanup_refscan obi_refscan *s = NULL;
    assert_ok(obi_refscan_new(list, N, &s, err_ptr_));
    for (unsigned seed = 1; seed <= 5; seed++)
        assert_true(check_against_naive(s, data, DATA, needles, lens, N, seed) >= 10);
    for (size_t i = 0; i < N; i++)
        free(needles[i]);
    free(needles);
    free(lens);
    free(list);
}

static void test_refscan_matches_naive_scan_with_mixed_length_needles(void **state)
{
    (void)state;
    check_mixed_lengths(1, 24); /* samples every byte */
}

static void test_refscan_matches_naive_scan_with_long_mixed_length_needles(void **state)
{
    (void)state;
    check_mixed_lengths(13, 20); /* samples every 6 bytes with 8-byte keys */
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_refscan_finds_needles_in_one_buffer),
        cmocka_unit_test(test_refscan_finds_needles_straddling_boundaries_fed_byte_by_byte),
        cmocka_unit_test(test_refscan_finds_overlapping_needles),
        cmocka_unit_test(test_refscan_finds_needle_that_is_prefix_or_suffix_of_another),
        cmocka_unit_test(test_refscan_finds_binary_needles_with_nul),
        cmocka_unit_test(test_refscan_reports_each_duplicate_needle),
        cmocka_unit_test(test_refscan_reports_no_partial_match_at_end_of_data),
        cmocka_unit_test(test_refscan_rejects_empty_needle_naming_its_index),
        cmocka_unit_test(test_refscan_without_needles_finds_nothing),
        cmocka_unit_test(test_refscan_does_not_match_across_streams),
        cmocka_unit_test(test_refscan_merge_unions_found_sets),
        cmocka_unit_test(test_refscan_merge_rejects_states_of_different_scanners),
        cmocka_unit_test(test_refscan_matches_naive_scan_with_5000_random_nixbase32_needles),
        cmocka_unit_test(test_refscan_matches_naive_scan_with_mixed_length_needles),
        cmocka_unit_test(test_refscan_matches_naive_scan_with_long_mixed_length_needles),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
