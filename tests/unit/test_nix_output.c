/*
 * Unit tests for the post-build Nix helpers: references from found needle indexes (outputs
 * first, then inputs; sorted, unique; bad indexes refused) and fixed-output checks (flat and
 * recursive, every algorithm, hashes that Nix 2.8's nix-hash printed for the same contents),
 * with the mismatch message giving both hashes; and the one-pass scan of a whole NAR (names too).
 */
#include "test_helpers.h"

#include <stdlib.h>

#include "ocibuild/cleanup.h"
#include "ocibuild/nix_output.h"

#define DEV "/nix/store/miggdwz67ak98cf5cwvahjy6vcxk793b-dep-dev"
#define OUT "/nix/store/qvs0j40gnqlpby2wpbhdz9pqiqmdx1ff-dep"
#define BASH "gsmjp5dzhqrpk3ffx5p6d567nx3xzsag-bash"
#define LIB "0a1ssdzzwb0c0hw63bkyfcml0qqn0c2x-lib"

static const char DEP_DRV[] = "Derive([(\"dev\",\"" DEV "\",\"\",\"\"),(\"out\",\"" OUT
                              "\",\"\",\"\")],[],[],\"s\",\"/b\",[],[])";

static obi_derivation *parse(const char *text)
{
    obi_derivation *drv = NULL;
    assert_ok(obi_derivation_parse(text, strlen(text), &drv, err_ptr_));
    return drv;
}

static void test_references_map_needles_to_outputs_then_inputs(void **state)
{
    (void)state;
    cleanup_derivation obi_derivation *drv = parse(DEP_DRV);
    obi_node inputs[2] = {0};
    inputs[0].name.data = (uint8_t *)LIB;
    inputs[0].name.len = strlen(LIB);
    inputs[1].name.data = (uint8_t *)BASH;
    inputs[1].name.len = strlen(BASH);
    obi_build_request req = {.inputs = inputs, .n_inputs = 2};
    uint64_t indexes[] = {3, 0, 2, 0};
    obi_output_needles found = {indexes, 4};
    cleanup_strv char **refs = NULL;
    size_t n = 0;
    assert_ok(obi_nix_output_references(drv, &req, &found, &refs, &n, err_ptr_));
    assert_int_equal(n, 3);
    assert_string_equal(refs[0], "/nix/store/" LIB);
    assert_string_equal(refs[1], "/nix/store/" BASH);
    assert_string_equal(refs[2], DEV);
    assert_null(refs[3]);
}

static void test_references_of_nothing_found_are_empty(void **state)
{
    (void)state;
    cleanup_derivation obi_derivation *drv = parse(DEP_DRV);
    obi_build_request req = {0};
    cleanup_strv char **refs = NULL;
    size_t n = 9;
    assert_ok(obi_nix_output_references(drv, &req, NULL, &refs, &n, err_ptr_));
    assert_int_equal(n, 0);
    assert_null(refs[0]);
}

static void test_references_reject_needle_index_out_of_range(void **state)
{
    (void)state;
    cleanup_derivation obi_derivation *drv = parse(DEP_DRV);
    obi_build_request req = {0};
    uint64_t indexes[] = {2};
    obi_output_needles found = {indexes, 1};
    cleanup_strv char **refs = NULL;
    size_t n = 0;
    obi_error *err = NULL;
    assert_fails_with(err, obi_nix_output_references(drv, &req, &found, &refs, &n, &err), -EINVAL,
                      "needle index 2 out of range (2 outputs, 0 inputs)");
    assert_null(refs);
}

/* ---- fixed-output checks over a memory store ---- */

typedef struct fixture {
    obi_blob_service *blobs;
    obi_directory_service *directories;
    obi_node hello; /* file "hello" (no newline) */
    obi_node dir;   /* directory holding it */
} fixture;

static int setup(void **state)
{
    fixture *f = calloc(1, sizeof *f);
    assert_ok(obi_memory_blob_service_new(&f->blobs, err_ptr_));
    assert_ok(obi_memory_directory_service_new(&f->directories, err_ptr_));
    obi_digest digest;
    assert_ok(obi_blob_put_bytes(f->blobs, "hello", 5, &digest, err_ptr_));
    assert_int_equal(obi_node_init_file(&f->hello, "out", 3, &digest, 5, false), 0);
    cleanup_directory obi_directory *dir = obi_directory_new();
    assert_int_equal(obi_directory_add(dir, &f->hello), 0);
    cleanup_directory_putter obi_directory_putter *putter = NULL;
    assert_ok(obi_directory_open_put(f->directories, &putter, err_ptr_));
    obi_digest dir_digest;
    assert_ok(obi_directory_put(putter, dir, &dir_digest, err_ptr_));
    assert_ok(obi_directory_putter_finish(putter, &dir_digest, err_ptr_));
    assert_int_equal(obi_node_init_directory(&f->dir, "out", 3, &dir_digest, 1), 0);
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    fixture *f = *state;
    obi_node_clear(&f->hello);
    obi_node_clear(&f->dir);
    obi_blob_service_free(f->blobs);
    obi_directory_service_free(f->directories);
    free(f);
    return 0;
}

static void check_ok(fixture *f, const obi_node *node, const char *algo, const char *hash)
{
    obi_derivation_output out = {(char *)"out", (char *)"/nix/store/x-fod", (char *)algo,
                                 (char *)hash};
    assert_ok(obi_nix_check_fixed_output(f->blobs, f->directories, &out, node, err_ptr_));
}

static void test_fixed_output_flat_hashes_match_nix(void **state)
{
    fixture *f = *state;
    check_ok(f, &f->hello, "sha256",
             "2cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824");
    check_ok(f, &f->hello, "sha1", "aaf4c61ddcc5e8a2dabede0f3b482cd9aea9434d");
    check_ok(f, &f->hello, "md5", "5d41402abc4b2a76b9719d911017c592");
    check_ok(f, &f->hello, "sha512",
             "9b71d224bd62f3785d96d46ad3ea3d73319bfbc2890caadae2dff72519673ca72323c3d99ba5c11d7c7"
             "acc6e14b8c5da0c4663475c2e5c3adef46f73bcdec043");
}

static void test_fixed_output_recursive_hashes_match_nix(void **state)
{
    fixture *f = *state;
    /* nix-hash --type sha256 / --type sha1 of a file containing "hello" */
    check_ok(f, &f->hello, "r:sha256",
             "0a430879c266f8b57f4092a0f935cf3facd48bbccde5760d4748ca405171e969");
    check_ok(f, &f->hello, "r:sha1", "5144612b23081da49ab008bd0b73960b6a2b7fe9");
}

static void test_fixed_output_mismatch_names_both_hashes(void **state)
{
    fixture *f = *state;
    /* some other declared hash */
    obi_derivation_output out = {
        (char *)"out", (char *)"/nix/store/x-fod", (char *)"sha256",
        (char *)"7d5c2a2e0bb6b5e0e3ad1bb7e2c1d0c4a8b5b5fd0d49d3ad9a6b5e3f0c7a1a22"};
    obi_error *err = NULL;
    assert_fails_with(err,
                      obi_nix_check_fixed_output(f->blobs, f->directories, &out, &f->hello, &err),
                      OBI_EHASH_MISMATCH,
                      "hash mismatch in fixed-output derivation '/nix/store/x-fod': specified "
                      "sha256:");
    assert_fails_with(
        err, obi_nix_check_fixed_output(f->blobs, f->directories, &out, &f->hello, &err),
        OBI_EHASH_MISMATCH, ", got sha256:094qif9n4cq4fdg459qzbhg1c6wywawwaaivx0k0x8xhbyx4vwic");
}

static void test_fixed_output_mismatch_prints_specified_hash_in_nixbase32(void **state)
{
    fixture *f = *state;
    /* sha256("hello") declared, "hello" in a directory delivered recursively: mismatch; the
     * specified side is nix-hash --to-base32 of the declared hex */
    obi_derivation_output out = {
        (char *)"out", (char *)"/nix/store/x-fod", (char *)"r:sha256",
        (char *)"2cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824"};
    obi_error *err = NULL;
    assert_fails_with(
        err, obi_nix_check_fixed_output(f->blobs, f->directories, &out, &f->dir, &err),
        OBI_EHASH_MISMATCH,
        "specified sha256:094qif9n4cq4fdg459qzbhg1c6wywawwaaivx0k0x8xhbyx4vwic, got sha256:");
}

static void test_fixed_output_flat_refuses_directory(void **state)
{
    fixture *f = *state;
    obi_derivation_output out = {
        (char *)"out", (char *)"/nix/store/x-fod", (char *)"sha256",
        (char *)"2cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824"};
    obi_error *err = NULL;
    assert_fails_with(
        err, obi_nix_check_fixed_output(f->blobs, f->directories, &out, &f->dir, &err), -EINVAL,
        "fixed-output derivation '/nix/store/x-fod': a flat sha256 hash needs a "
        "regular file, not a directory");
}

/* Nix scans the whole NAR: an entry's name counts as much as its contents. */
static void test_scan_node_finds_needles_in_names_and_contents(void **state)
{
    fixture *f = *state;
    const char *needles[] = {"hello", "out", "absent"};
    cleanup_refscan obi_refscan *scanner = NULL;
    assert_ok(obi_refscan_new_strings(needles, 3, &scanner, err_ptr_));
    obi_nar_hash nar = {0}, want = {0};
    cleanup_free size_t *found = NULL;
    size_t n_found = 0;
    assert_ok(obi_nix_scan_node(f->blobs, f->directories, &f->dir, scanner, &nar, &found, &n_found,
                                err_ptr_));
    assert_int_equal(n_found, 2);
    assert_int_equal(found[0], 0);
    assert_int_equal(found[1], 1); /* only the file's name is "out" */
    assert_ok(obi_nar_hash_node(f->blobs, f->directories, &f->dir, &want, err_ptr_));
    assert_memory_equal(nar.sha256, want.sha256, sizeof want.sha256);
    assert_int_equal(nar.size, want.size);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_references_map_needles_to_outputs_then_inputs),
        cmocka_unit_test(test_references_of_nothing_found_are_empty),
        cmocka_unit_test(test_references_reject_needle_index_out_of_range),
        cmocka_unit_test_setup_teardown(test_fixed_output_flat_hashes_match_nix, setup, teardown),
        cmocka_unit_test_setup_teardown(test_fixed_output_recursive_hashes_match_nix, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_fixed_output_mismatch_names_both_hashes, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(
            test_fixed_output_mismatch_prints_specified_hash_in_nixbase32, setup, teardown),
        cmocka_unit_test_setup_teardown(test_fixed_output_flat_refuses_directory, setup, teardown),
        cmocka_unit_test_setup_teardown(test_scan_node_finds_needles_in_names_and_contents, setup,
                                        teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
