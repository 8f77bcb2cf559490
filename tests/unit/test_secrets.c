/*
 * Env resolution: literals, $E: from the environment, $S: from the directory provider (plain,
 * scoped, JSON fields), the trailing-newline rule, and every way resolution can fail.
 */
#include <stdio.h>
#include <stdlib.h>
#include <sys/stat.h>

#include "ocibuild/fs.h"
#include "ocibuild/secrets.h"
#include "test_helpers.h"

typedef struct fixture {
    char *dir;
    obi_secrets *secrets;
} fixture;

static void write_secret(const char *dir, const char *name, const char *text, size_t len)
{
    char *path = obi_path_join(dir, name);
    assert_ok(obi_write_file(path, text, len, 0600, err_ptr_));
    free(path);
}

static int setup(void **state)
{
    fixture *f = calloc(1, sizeof *f);
    f->dir = obi_test_tmpdir();
    write_secret(f->dir, "db-pass", "hunter2\n", 8);
    write_secret(f->dir, "crlf", "abc\r\n", 5);
    write_secret(f->dir, "two-newlines", "abc\n\n", 5);
    write_secret(f->dir, "raw", "no newline", 10);
    write_secret(f->dir, "empty", "", 0);
    write_secret(f->dir, "nul", "a\0b", 3);
    const char *creds = "{\"user\": \"admin\", \"port\": 5432, \"tls\": true, \"nested\": {}, "
                        "\"none\": null}\n";
    write_secret(f->dir, "creds", creds, strlen(creds));
    write_secret(f->dir, "list", "[1, 2]", 6);
    char *scoped = obi_path_join(f->dir, "web");
    mkdir(scoped, 0700);
    write_secret(scoped, "token", "web-token\n", 10);
    free(scoped);
    char *sub = obi_path_join(f->dir, "adir");
    mkdir(sub, 0700);
    free(sub);
    obi_error *err = NULL;
    if (obi_secrets_dir_open(f->dir, &f->secrets, &err) < 0) {
        obi_error_free(err);
        return -1;
    }
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    fixture *f = *state;
    obi_secrets_free(f->secrets);
    obi_test_tmpdir_remove(f->dir);
    free(f);
    return 0;
}

static char *resolve(fixture *f, const char *value)
{
    char *out = NULL;
    assert_ok(obi_env_resolve_value("web", "KEY", value, f->secrets, &out, err_ptr_));
    return out;
}

static void expect_resolves(fixture *f, const char *value, const char *expected)
{
    char *out = resolve(f, value);
    assert_string_equal(out, expected);
    free(out);
}

static void expect_resolve_failure(fixture *f, obi_secrets *secrets, const char *value, int code,
                                   const char *needle)
{
    (void)f;
    char *out = NULL;
    obi_error *err = NULL;
    assert_fails_with(err, obi_env_resolve_value("web", "KEY", value, secrets, &out, &err), code,
                      needle);
    assert_null(out);
}

static void test_secrets_literal_values_pass_through(void **state)
{
    fixture *f = *state;
    expect_resolves(f, "info", "info");
    expect_resolves(f, "", "");
    expect_resolves(f, "$HOME", "$HOME");
    expect_resolves(f, "$X:y", "$X:y");
}

static void test_secrets_env_reference_reads_environment(void **state)
{
    fixture *f = *state;
    setenv("OBI_TEST_SECRET_ENV", "from-env", 1);
    expect_resolves(f, "$E:OBI_TEST_SECRET_ENV", "from-env");
    unsetenv("OBI_TEST_SECRET_ENV");
    expect_resolve_failure(
        f, f->secrets, "$E:OBI_TEST_SECRET_ENV", -ENOENT,
        "services.web.env.KEY: environment variable \"OBI_TEST_SECRET_ENV\" is not set");
    expect_resolve_failure(f, f->secrets, "$E:", -ENOENT, "services.web.env.KEY");
}

static void test_secrets_file_drops_one_trailing_newline(void **state)
{
    fixture *f = *state;
    expect_resolves(f, "$S:db-pass", "hunter2");
    expect_resolves(f, "$S:crlf", "abc");
    expect_resolves(f, "$S:two-newlines", "abc\n");
    expect_resolves(f, "$S:raw", "no newline");
    expect_resolves(f, "$S:empty", "");
}

static void test_secrets_scoped_reference_reads_service_subdirectory(void **state)
{
    fixture *f = *state;
    expect_resolves(f, "$S:@web/token", "web-token");
    expect_resolve_failure(f, f->secrets, "$S:token", -ENOENT, "secret \"token\" not found");
    expect_resolve_failure(f, f->secrets, "$S:@db/token", -ENOENT, "secret \"db/token\" not found");
    expect_resolve_failure(f, f->secrets, "$S:@web", -EINVAL, "expected $S:@service/name");
}

static void test_secrets_json_field(void **state)
{
    fixture *f = *state;
    expect_resolves(f, "$S:creds/user", "admin");
    expect_resolves(f, "$S:creds/port", "5432");
    expect_resolves(f, "$S:creds/tls", "true");
    expect_resolve_failure(f, f->secrets, "$S:creds/password", -ENOENT,
                           "services.web.env.KEY: secret \"creds\": no field \"password\"");
    expect_resolve_failure(f, f->secrets, "$S:creds/nested", -EINVAL,
                           "not a string, number or boolean");
    expect_resolve_failure(f, f->secrets, "$S:creds/none", -EINVAL,
                           "not a string, number or boolean");
    expect_resolve_failure(f, f->secrets, "$S:db-pass/user", -EINVAL, "not JSON");
    expect_resolve_failure(f, f->secrets, "$S:list/0", -EINVAL, "not a JSON object");
    expect_resolve_failure(f, f->secrets, "$S:creds/", -EINVAL, "empty field name");
}

static void test_secrets_missing_or_invalid_names_fail(void **state)
{
    fixture *f = *state;
    expect_resolve_failure(f, f->secrets, "$S:nope", -ENOENT,
                           "services.web.env.KEY: secret \"nope\" not found");
    expect_resolve_failure(f, f->secrets, "$S:", -EINVAL, "invalid secret name");
    expect_resolve_failure(f, f->secrets, "$S:..", -EINVAL, "invalid secret name");
    expect_resolve_failure(f, f->secrets, "$S:@../x", -EINVAL, "invalid secret name");
    expect_resolve_failure(f, f->secrets, "$S:.hidden", -EINVAL, "invalid secret name");
    expect_resolve_failure(f, f->secrets, "$S:adir", -EINVAL, "is not a regular file");
    expect_resolve_failure(f, f->secrets, "$S:nul", -EINVAL, "contains a NUL byte");
    expect_resolve_failure(f, NULL, "$S:db-pass", -ENOENT, "no secrets provider configured");
}

static void test_secrets_dir_open_fails_for_missing_dir(void **state)
{
    (void)state;
    obi_secrets *s = NULL;
    obi_error *err = NULL;
    assert_fails_with(err, obi_secrets_dir_open("/nonexistent/secrets", &s, &err), -ENOENT,
                      "secrets directory /nonexistent/secrets");
    assert_null(s);
}

static void test_service_env_resolve_keeps_order_and_names_key(void **state)
{
    fixture *f = *state;
    obi_deployment *d = NULL;
    const char *text = "version: v1\ndeployment: abc\nservices:\n  web:\n    env:\n"
                       "      B: one\n      A: $S:db-pass\n";
    assert_ok(obi_deployment_parse(text, strlen(text), NULL, &d, err_ptr_));
    obi_service_env_var *vars = NULL;
    assert_ok(obi_service_env_resolve(&d->services[0], f->secrets, &vars, err_ptr_));
    assert_string_equal(vars[0].name, "B");
    assert_string_equal(vars[0].value, "one");
    assert_string_equal(vars[1].name, "A");
    assert_string_equal(vars[1].value, "hunter2");
    obi_service_env_vars_free(vars, 2);
    obi_error *err = NULL;
    vars = NULL;
    assert_fails_with(err, obi_service_env_resolve(&d->services[0], NULL, &vars, &err), -ENOENT,
                      "services.web.env.A");
    assert_null(vars);
    obi_deployment_free(d);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_secrets_literal_values_pass_through, setup, teardown),
        cmocka_unit_test_setup_teardown(test_secrets_env_reference_reads_environment, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_secrets_file_drops_one_trailing_newline, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_secrets_scoped_reference_reads_service_subdirectory,
                                        setup, teardown),
        cmocka_unit_test_setup_teardown(test_secrets_json_field, setup, teardown),
        cmocka_unit_test_setup_teardown(test_secrets_missing_or_invalid_names_fail, setup,
                                        teardown),
        cmocka_unit_test(test_secrets_dir_open_fails_for_missing_dir),
        cmocka_unit_test_setup_teardown(test_service_env_resolve_keeps_order_and_names_key, setup,
                                        teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
