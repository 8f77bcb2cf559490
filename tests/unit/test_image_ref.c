/*
 * Image references (image_ref.h), normalised as Docker does (Docker Hub short names, tags,
 * digests, registries with ports), their errors naming the part that is wrong; pull policy
 * names. The pulls themselves run against real registries in
 * tests/e2e/test_service_registry.sh.
 */
#include <stdlib.h>
#include <string.h>

#include "ocibuild/image_ref.h"
#include "test_helpers.h"

#define DIGEST "sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"

static const struct ref_case {
    const char *text;
    const char *domain, *host, *repository, *tag, *digest, *canonical;
} REF_CASES[] = {
    {"busybox", "docker.io", "registry-1.docker.io", "library/busybox", "latest", NULL,
     "docker.io/library/busybox:latest"},
    {"nginx:alpine", "docker.io", "registry-1.docker.io", "library/nginx", "alpine", NULL,
     "docker.io/library/nginx:alpine"},
    {"zlayer/app:1.2.3", "docker.io", "registry-1.docker.io", "zlayer/app", "1.2.3", NULL,
     "docker.io/zlayer/app:1.2.3"},
    {"docker.io/busybox", "docker.io", "registry-1.docker.io", "library/busybox", "latest", NULL,
     "docker.io/library/busybox:latest"},
    {"index.docker.io/library/busybox:1", "docker.io", "registry-1.docker.io", "library/busybox",
     "1", NULL, "docker.io/library/busybox:1"},
    {"ghcr.io/o/r/deep:v1", "ghcr.io", "ghcr.io", "o/r/deep", "v1", NULL, "ghcr.io/o/r/deep:v1"},
    {"127.0.0.1:5000/test/busybox:1", "127.0.0.1:5000", "127.0.0.1:5000", "test/busybox", "1", NULL,
     "127.0.0.1:5000/test/busybox:1"},
    {"localhost/app", "localhost", "localhost", "app", "latest", NULL, "localhost/app:latest"},
    {"busybox@" DIGEST, "docker.io", "registry-1.docker.io", "library/busybox", NULL, DIGEST,
     "docker.io/library/busybox@" DIGEST},
    {"quay.io/a/b:t@" DIGEST, "quay.io", "quay.io", "a/b", "t", DIGEST, "quay.io/a/b:t@" DIGEST},
    {"docker://alpine:3.18", "docker.io", "registry-1.docker.io", "library/alpine", "3.18", NULL,
     "docker.io/library/alpine:3.18"},
    {"my-reg.example:8443/a_b/c__d/e-f.g", "my-reg.example:8443", "my-reg.example:8443",
     "a_b/c__d/e-f.g", "latest", NULL, "my-reg.example:8443/a_b/c__d/e-f.g:latest"},
    {"[::1]:5000/x:y", "[::1]:5000", "[::1]:5000", "x", "y", NULL, "[::1]:5000/x:y"},
};

static void test_image_ref_normalises_like_docker(void **state)
{
    (void)state;
    for (size_t i = 0; i < OBI_ARRAY_SIZE(REF_CASES); i++) {
        const struct ref_case *c = &REF_CASES[i];
        cleanup_image_ref obi_image_ref *ref = NULL;
        assert_ok(obi_image_ref_parse(c->text, &ref, err_ptr_));
        assert_string_equal(ref->domain, c->domain);
        assert_string_equal(ref->host, c->host);
        assert_string_equal(ref->repository, c->repository);
        if (c->tag)
            assert_string_equal(ref->tag, c->tag);
        else
            assert_null(ref->tag);
        if (c->digest)
            assert_string_equal(ref->digest, c->digest);
        else
            assert_null(ref->digest);
        assert_string_equal(ref->canonical, c->canonical);
    }
}

static void test_image_ref_rejects_malformed_naming_the_part(void **state)
{
    (void)state;
    static const struct {
        const char *text, *needle;
    } cases[] = {
        {"Busybox", "repository component \"Busybox\""},
        {"ghcr.io/Owner/app", "repository component \"Owner\""},
        {"a//b", "repository component \"\""},
        {"app:", "tag \"\""},
        {"app:-x", "tag \"-x\""},
        {"app:has/slash/x", "registry \"app:has\""},
        {"app@sha256:abc", "digest \"sha256:abc\""},
        {"app@md5:" DIGEST, "is not sha256"},
        {"app@sha256:0123456789ABCDEF0123456789abcdef0123456789abcdef0123456789abcdef",
         "lowercase hex"},
        {"", "repository name is empty"},
        {"reg.io/", "repository name is empty"},
        {"a..b", "repository component \"a..b\""},
        {"a___b", "repository component \"a___b\""},
        {"bad_host!.io/x", "registry \"bad_host!.io\" is not a host[:port]"},
        {"reg.io:port/x", "registry \"reg.io:port\""},
        {"my host.io:1/x", "registry \"my host.io:1\""},
    };
    for (size_t i = 0; i < OBI_ARRAY_SIZE(cases); i++) {
        obi_image_ref *ref = NULL;
        obi_error *err = NULL;
        int r = obi_image_ref_parse(cases[i].text, &ref, &err);
        if (r != -EINVAL || !err || !strstr(err->message, cases[i].needle))
            print_error("\"%s\": r=%d message \"%s\" lacks \"%s\"\n", cases[i].text, r,
                        err ? err->message : "(none)", cases[i].needle);
        assert_int_equal(r, -EINVAL);
        assert_null(ref);
        assert_non_null(strstr(err->message, cases[i].needle));
        obi_error_free(err);
    }
}

static void test_image_ref_pull_policy_names_round_trip(void **state)
{
    (void)state;
    static const char *const names[] = {"always", "if_not_present", "never", "newer"};
    for (size_t i = 0; i < OBI_ARRAY_SIZE(names); i++) {
        obi_pull_policy policy;
        assert_int_equal(obi_pull_policy_parse(names[i], &policy), 0);
        assert_string_equal(obi_pull_policy_name(policy), names[i]);
    }
    obi_pull_policy policy;
    assert_int_equal(obi_pull_policy_parse("IfNotPresent", &policy), -EINVAL);
    assert_int_equal(obi_pull_policy_parse("", &policy), -EINVAL);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_image_ref_normalises_like_docker),
        cmocka_unit_test(test_image_ref_rejects_malformed_naming_the_part),
        cmocka_unit_test(test_image_ref_pull_policy_names_round_trip),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
