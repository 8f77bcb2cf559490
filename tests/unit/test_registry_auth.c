/*
 * Registry authentication (registry_auth.h): WWW-Authenticate challenges (Bearer and Basic,
 * quoting, several challenges in one header) with errors naming the byte offset, and the
 * credentials an auth.json holds for a reference (the most specific key, Docker's key forms,
 * the files looked in, malformed entries named).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "ocibuild/fs.h"
#include "ocibuild/registry_auth.h"
#include "test_helpers.h"

static void test_registry_auth_challenge_bearer_with_quoted_params(void **state)
{
    (void)state;
    obi_auth_challenge ch = {0};
    assert_ok(obi_auth_challenge_parse(
        "Bearer realm=\"https://auth.docker.io/token\",service=\"registry.docker.io\","
        "scope=\"repository:library/busybox:pull\"",
        &ch, err_ptr_));
    assert_string_equal(ch.scheme, "bearer");
    assert_string_equal(ch.realm, "https://auth.docker.io/token");
    assert_string_equal(ch.service, "registry.docker.io");
    assert_string_equal(ch.scope, "repository:library/busybox:pull");
    obi_auth_challenge_clear(&ch);
}

static void test_registry_auth_challenge_spacing_case_escapes_and_tokens(void **state)
{
    (void)state;
    obi_auth_challenge ch = {0};
    /* any case for the scheme and names, spaces around '=' and ',', a backslash escape, an
     * unquoted token value, and unknown parameters ignored */
    assert_ok(obi_auth_challenge_parse(
        "  BEARER  Realm = \"https://a/t\\\"x\" , error=\"insufficient_scope\",SERVICE=reg", &ch,
        err_ptr_));
    assert_string_equal(ch.scheme, "bearer");
    assert_string_equal(ch.realm, "https://a/t\"x");
    assert_string_equal(ch.service, "reg");
    assert_null(ch.scope);
    obi_auth_challenge_clear(&ch);
    assert_ok(obi_auth_challenge_parse("Basic realm=\"Registry Realm\"", &ch, err_ptr_));
    assert_string_equal(ch.scheme, "basic");
    assert_string_equal(ch.realm, "Registry Realm");
    obi_auth_challenge_clear(&ch);
    assert_ok(obi_auth_challenge_parse("Basic", &ch, err_ptr_));
    assert_string_equal(ch.scheme, "basic");
    assert_null(ch.realm);
    obi_auth_challenge_clear(&ch);
}

static void test_registry_auth_challenge_stops_at_the_next_challenge(void **state)
{
    (void)state;
    obi_auth_challenge ch = {0};
    assert_ok(obi_auth_challenge_parse("Basic realm=\"one\", Bearer realm=\"two\"", &ch, err_ptr_));
    assert_string_equal(ch.scheme, "basic");
    assert_string_equal(ch.realm, "one");
    obi_auth_challenge_clear(&ch);
}

static void test_registry_auth_challenge_rejects_malformed_naming_offset(void **state)
{
    (void)state;
    static const struct {
        const char *text, *needle;
    } cases[] = {
        {"", "no scheme at byte offset 0"},
        {"  =x", "no scheme at byte offset 2"},
        {"Bearer realm=\"open", "unterminated quoted string at byte offset 18"},
        {"Bearer realm=\"a\" junk", "expected ',' at byte offset 17"},
        {"Bearer =x", "expected name=value at byte offset 7"},
    };
    for (size_t i = 0; i < OBI_ARRAY_SIZE(cases); i++) {
        obi_auth_challenge ch = {0};
        obi_error *err = NULL;
        int r = obi_auth_challenge_parse(cases[i].text, &ch, &err);
        if (r != -EINVAL || !err || !strstr(err->message, cases[i].needle))
            print_error("\"%s\": r=%d message \"%s\" lacks \"%s\"\n", cases[i].text, r,
                        err ? err->message : "(none)", cases[i].needle);
        assert_int_equal(r, -EINVAL);
        assert_null(ch.scheme);
        assert_non_null(strstr(err->message, cases[i].needle));
        obi_error_free(err);
    }
}

/* Writes an auth.json with text into a temp dir; returns its path (static buffer). */
static const char *auth_file(const char *text)
{
    static char path[] = "/tmp/obi-test-auth-XXXXXX";
    strcpy(path, "/tmp/obi-test-auth-XXXXXX");
    int fd = mkstemp(path);
    assert_true(fd >= 0);
    assert_int_equal(obi_write_all(fd, text, strlen(text)), 0);
    close(fd);
    return path;
}

/* user:password of ref's credentials in text (NULL for none). */
static char *credentials_of(const char *ref_text, const char *text)
{
    cleanup_image_ref obi_image_ref *ref = NULL;
    assert_ok(obi_image_ref_parse(ref_text, &ref, err_ptr_));
    const char *path = auth_file(text);
    obi_registry_credentials creds = {0};
    cleanup_free char *looked_in = NULL;
    obi_error *err = NULL;
    int r = obi_registry_credentials_find(ref, path, &creds, &looked_in, &err);
    if (r < 0)
        print_error("%s\n", err->message);
    assert_true(r >= 0);
    assert_string_equal(looked_in, path);
    unlink(path);
    char *user_pass = r == 1 ? strdup(creds.user_pass) : NULL;
    if (r == 1)
        assert_string_equal(creds.source, path);
    obi_registry_credentials_clear(&creds);
    return user_pass;
}

/* "dTpw" is base64 of u:p, "dTpx" of u:q, "dTpy" of u:r */
static void test_registry_auth_credentials_most_specific_key_wins(void **state)
{
    (void)state;
    const char *doc = "{\"auths\": {\"reg.io\": {\"auth\": \"dTpw\"},"
                      " \"reg.io/team\": {\"auth\": \"dTpx\"},"
                      " \"reg.io/team/app\": {\"auth\": \"dTpy\"}}}";
    static const struct {
        const char *ref, *want;
    } cases[] = {
        {"reg.io/team/app:1", "u:r"},
        {"reg.io/team/app/sub", "u:r"},
        {"reg.io/team/other", "u:q"},
        {"reg.io/teamwork/x", "u:p"},
        {"reg.io/x", "u:p"},
        {"other.io/team/app", NULL},
        {"reg.io:5000/team/app", NULL},
    };
    for (size_t i = 0; i < OBI_ARRAY_SIZE(cases); i++) {
        cleanup_free char *got = credentials_of(cases[i].ref, doc);
        if (!cases[i].want)
            assert_null(got);
        else
            assert_string_equal(got, cases[i].want);
    }
}

static void test_registry_auth_credentials_docker_hub_key_forms(void **state)
{
    (void)state;
    static const char *const keys[] = {"https://index.docker.io/v1/", "index.docker.io",
                                       "docker.io", "registry-1.docker.io",
                                       "https://registry-1.docker.io/v2/"};
    for (size_t i = 0; i < OBI_ARRAY_SIZE(keys); i++) {
        char doc[256];
        snprintf(doc, sizeof doc, "{\"auths\": {\"%s\": {\"auth\": \"dTpw\"}}}", keys[i]);
        cleanup_free char *got = credentials_of("busybox", doc);
        assert_non_null(got);
        assert_string_equal(got, "u:p");
    }
    cleanup_free char *none = credentials_of("busybox", "{\"auths\": {\"quay.io\": {}}}");
    assert_null(none);
}

static void test_registry_auth_credentials_errors_name_file_and_key(void **state)
{
    (void)state;
    static const struct {
        const char *doc, *needle;
    } cases[] = {
        {"{\"auths\": {\"reg.io\": {\"auth\": 5}}}", "auths.\"reg.io\".auth: expected a base64"},
        {"{\"auths\": {\"reg.io\": {\"auth\": \"bm9jb2xvbg==\"}}}", "not base64 of USER:PASSWORD"},
        {"{\"auths\": {\"reg.io\": {\"auth\": \"!!\"}}}", "auths.\"reg.io\".auth"},
        {"{\"auths\": []}", "auths: expected an object"},
        {"{", "invalid JSON at line"},
    };
    cleanup_image_ref obi_image_ref *ref = NULL;
    assert_ok(obi_image_ref_parse("reg.io/app", &ref, err_ptr_));
    for (size_t i = 0; i < OBI_ARRAY_SIZE(cases); i++) {
        const char *path = auth_file(cases[i].doc);
        obi_registry_credentials creds = {0};
        cleanup_free char *looked_in = NULL;
        obi_error *err = NULL;
        int r = obi_registry_credentials_find(ref, path, &creds, &looked_in, &err);
        if (r != -EINVAL || !err || !strstr(err->message, cases[i].needle) ||
            !strstr(err->message, path))
            print_error("%s: r=%d \"%s\" lacks \"%s\" or the path\n", cases[i].doc, r,
                        err ? err->message : "(none)", cases[i].needle);
        assert_int_equal(r, -EINVAL);
        assert_non_null(strstr(err->message, cases[i].needle));
        assert_non_null(strstr(err->message, path));
        assert_null(creds.user_pass);
        obi_error_free(err);
        unlink(path);
    }
    /* a file named on the command line must exist; the usual places may be absent */
    obi_registry_credentials creds = {0};
    char *looked_in = NULL;
    obi_error *err = NULL;
    assert_fails_with(
        err, obi_registry_credentials_find(ref, "/nonexistent/auth.json", &creds, &looked_in, &err),
        -ENOENT, "/nonexistent/auth.json");
    setenv("REGISTRY_AUTH_FILE", "/nonexistent/auth.json", 1);
    assert_int_equal(obi_registry_credentials_find(ref, NULL, &creds, &looked_in, &err), 0);
    assert_null(err);
    unsetenv("REGISTRY_AUTH_FILE");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_registry_auth_challenge_bearer_with_quoted_params),
        cmocka_unit_test(test_registry_auth_challenge_spacing_case_escapes_and_tokens),
        cmocka_unit_test(test_registry_auth_challenge_stops_at_the_next_challenge),
        cmocka_unit_test(test_registry_auth_challenge_rejects_malformed_naming_offset),
        cmocka_unit_test(test_registry_auth_credentials_most_specific_key_wins),
        cmocka_unit_test(test_registry_auth_credentials_docker_hub_key_forms),
        cmocka_unit_test(test_registry_auth_credentials_errors_name_file_and_key),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
