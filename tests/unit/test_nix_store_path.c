/*
 * Unit tests for the store paths and placeholders Nix computes (nix_store_path.h). Every
 * expected value was printed by Nix 2.8 on this machine: builtins.placeholder, builtins.toFile
 * (text paths, with and without references), nix-store --add-fixed (flat and recursive, two
 * algorithms), and the downstream placeholders in a derivation that uses a content-addressed
 * one (nix show-derivation). Also Nix's string rewriting, in its order.
 */
#include "test_helpers.h"

#include <stdlib.h>

#include "ocibuild/cleanup.h"
#include "ocibuild/digest.h"
#include "ocibuild/nix_store_path.h"

#define HELLO_SHA256_FLAT "2cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824"
#define HELLO_SHA256_NAR "0a430879c266f8b57f4092a0f935cf3facd48bbccde5760d4748ca405171e969"
#define HELLO_SHA1_FLAT "aaf4c61ddcc5e8a2dabede0f3b482cd9aea9434d"
#define HELLO_TXT "/nix/store/q790zdjk75hm2cn42nh77pqw4gbv1b88-hello.txt"

static void test_placeholders_match_nix(void **state)
{
    (void)state;
    cleanup_free char *out = obi_nix_hash_placeholder("out");
    cleanup_free char *dev = obi_nix_hash_placeholder("dev");
    assert_string_equal(out, "/1rz4g4znpzjwh1xymhjpm42vipw92pr73vdgl6xs1hycac8kf2n9");
    assert_string_equal(dev, "/02qcpld1y6xhs5gz9bchpxaw0xdhmsp5dv88lh25r2ss44kh8dxz");
}

static void test_downstream_placeholders_match_nix(void **state)
{
    (void)state;
    const char *drv = "/nix/store/47sc9x6gqqp6kwxp1nhdfsdbj58ggz95-ca-x.drv";
    cleanup_free char *out = obi_nix_downstream_placeholder(drv, "out");
    cleanup_free char *dev = obi_nix_downstream_placeholder(drv, "dev");
    assert_string_equal(out, "/1b3g7m2yy6liv0f50say7rnkk7lvk1jsmqzvxgnqrh5fzkq4zxgf");
    assert_string_equal(dev, "/1b508xcp6s6fwq6qa614niw6pjllpj8pv532wcyb8ygjjmh6wvpg");
    assert_null(obi_nix_downstream_placeholder("/nix/store/not-a-drv", "out"));
}

static void test_text_paths_match_nix(void **state)
{
    (void)state;
    cleanup_free char *plain = obi_nix_make_text_path("hello.txt", "hello", 5, NULL, 0);
    assert_string_equal(plain, HELLO_TXT);
    const char contents[] = "see " HELLO_TXT;
    char *refs[] = {(char *)HELLO_TXT};
    cleanup_free char *with_ref =
        obi_nix_make_text_path("r.txt", contents, strlen(contents), refs, 1);
    assert_string_equal(with_ref, "/nix/store/6q2ca5k0v4c0da31aydqnl3nnrc5p9bl-r.txt");
}

static char *fixed_path(bool recursive, const char *algo, const char *hex)
{
    uint8_t digest[64];
    size_t len = strlen(hex) / 2;
    assert_int_equal(obi_hex_decode(hex, strlen(hex), digest, len), 0);
    char *path = NULL;
    assert_ok(obi_nix_make_fixed_output_path(recursive, algo, digest, len, "nixfid-hello", NULL, 0,
                                             false, &path, err_ptr_));
    return path;
}

static void test_fixed_output_paths_match_nix(void **state)
{
    (void)state;
    cleanup_free char *flat = fixed_path(false, "sha256", HELLO_SHA256_FLAT);
    cleanup_free char *nar = fixed_path(true, "sha256", HELLO_SHA256_NAR);
    cleanup_free char *sha1 = fixed_path(false, "sha1", HELLO_SHA1_FLAT);
    assert_string_equal(flat, "/nix/store/gm6rmgflni7l0p1b54d826ichqpsp43s-nixfid-hello");
    assert_string_equal(nar, "/nix/store/1172hymwmabyd7p22ch0s767146z0n46-nixfid-hello");
    assert_string_equal(sha1, "/nix/store/4l1mr16mcrmpczrdq0fmwsnra7v0xjpq-nixfid-hello");
}

static void test_fixed_output_path_refuses_references_unless_source(void **state)
{
    (void)state;
    uint8_t digest[32] = {0};
    char *refs[] = {(char *)HELLO_TXT};
    char *path = NULL;
    obi_error *err = NULL;
    assert_fails_with(err,
                      obi_nix_make_fixed_output_path(false, "sha256", digest, 32, "x", refs, 1,
                                                     false, &path, &err),
                      -EINVAL, "'x': content addressed by sha256 may not refer to store paths");
    assert_null(path);
    assert_ok(obi_nix_make_fixed_output_path(true, "sha256", digest, 32, "x", refs, 1, true, &path,
                                             err_ptr_));
    free(path);
}

static void test_output_path_names(void **state)
{
    (void)state;
    cleanup_free char *out = obi_nix_output_path_name("hello-2.10", "out");
    cleanup_free char *dev = obi_nix_output_path_name("hello-2.10", "dev");
    assert_string_equal(out, "hello-2.10");
    assert_string_equal(dev, "hello-2.10-dev");
}

static void test_rewrite_replaces_every_occurrence_in_order(void **state)
{
    (void)state;
    obi_nix_rewrite rw[] = {{"/aa", "/nix/store/q"}, {"q", "z"}};
    cleanup_free char *s = obi_nix_rewrite_string("/aa and /aa/bin", rw, 2);
    /* the second rewrite sees the first one's results, as in Nix */
    assert_string_equal(s, "/nix/store/z and /nix/store/z/bin");
    obi_nix_rewrite grow[] = {{"a", "aa"}};
    cleanup_free char *g = obi_nix_rewrite_string("a-a", grow, 1);
    assert_string_equal(g, "aa-aa");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_placeholders_match_nix),
        cmocka_unit_test(test_downstream_placeholders_match_nix),
        cmocka_unit_test(test_text_paths_match_nix),
        cmocka_unit_test(test_fixed_output_paths_match_nix),
        cmocka_unit_test(test_fixed_output_path_refuses_references_unless_source),
        cmocka_unit_test(test_output_path_names),
        cmocka_unit_test(test_rewrite_replaces_every_occurrence_in_order),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
