/*
 * Service addresses (rpc.md): every URL form the store and build-service layers accept, plain
 * paths, percent-decoding, and malformed URLs whose errors name the part and byte offset.
 */
#include <stdlib.h>
#include <string.h>

#include "ocibuild/url.h"
#include "test_helpers.h"

static obi_url *parse_ok(const char *text)
{
    obi_url *url = NULL;
    assert_ok(obi_url_parse(text, &url, err_ptr_));
    assert_non_null(url);
    return url;
}

static void test_url_memory_has_scheme_and_nothing_else(void **state)
{
    (void)state;
    cleanup_url obi_url *url = parse_ok("memory://");
    assert_string_equal(url->scheme, "memory");
    assert_string_equal(url->host, "");
    assert_null(url->port);
    assert_string_equal(url->path, "");
    assert_int_equal(url->n_params, 0);
}

static void test_url_objectstore_file_absolute_path(void **state)
{
    (void)state;
    cleanup_url obi_url *url = parse_ok("objectstore+file:///abs/dir");
    assert_string_equal(url->scheme, "objectstore+file");
    assert_string_equal(url->host, "");
    assert_string_equal(url->path, "/abs/dir");
}

static void test_url_plain_absolute_path_has_empty_scheme(void **state)
{
    (void)state;
    cleanup_url obi_url *url = parse_ok("/plain/path");
    assert_string_equal(url->scheme, "");
    assert_string_equal(url->host, "");
    assert_string_equal(url->path, "/plain/path");
}

static void test_url_plain_relative_path_is_kept_verbatim(void **state)
{
    (void)state;
    cleanup_url obi_url *a = parse_ok("store");
    assert_string_equal(a->scheme, "");
    assert_string_equal(a->path, "store");
    /* no decoding, and "?" or ":" are just characters of a path */
    cleanup_url obi_url *b = parse_ok("./my%20store?x:y");
    assert_string_equal(b->scheme, "");
    assert_string_equal(b->path, "./my%20store?x:y");
    /* "://" after a slash belongs to the path */
    cleanup_url obi_url *c = parse_ok("dir/a://b");
    assert_string_equal(c->scheme, "");
    assert_string_equal(c->path, "dir/a://b");
}

static void test_url_oci_query_parameters(void **state)
{
    (void)state;
    cleanup_url obi_url *url = parse_ok("oci:///root?runtime=crun&rootless=true&flag");
    assert_string_equal(url->scheme, "oci");
    assert_string_equal(url->path, "/root");
    assert_int_equal(url->n_params, 3);
    assert_string_equal(obi_url_param_get(url, "runtime"), "crun");
    assert_string_equal(obi_url_param_get(url, "rootless"), "true");
    assert_string_equal(obi_url_param_get(url, "flag"), "");
    assert_null(obi_url_param_get(url, "timeout"));
}

static void test_url_first_of_repeated_parameters_wins(void **state)
{
    (void)state;
    cleanup_url obi_url *url = parse_ok("oci:///r?a=1&a=2");
    assert_int_equal(url->n_params, 2);
    assert_string_equal(obi_url_param_get(url, "a"), "1");
}

static void test_url_grpc_unix_socket_path(void **state)
{
    (void)state;
    cleanup_url obi_url *url = parse_ok("grpc+unix:///run/x.sock");
    assert_string_equal(url->scheme, "grpc+unix");
    assert_string_equal(url->host, "");
    assert_string_equal(url->path, "/run/x.sock");
}

static void test_url_grpc_http_host_and_port(void **state)
{
    (void)state;
    cleanup_url obi_url *url = parse_ok("grpc+http://host:8080");
    assert_string_equal(url->scheme, "grpc+http");
    assert_string_equal(url->host, "host");
    assert_string_equal(url->port, "8080");
    assert_string_equal(url->path, "");
    cleanup_url obi_url *slash = parse_ok("grpc+http://example.org/");
    assert_string_equal(slash->host, "example.org");
    assert_null(slash->port);
    assert_string_equal(slash->path, "/");
}

static void test_url_ipv6_host_keeps_brackets(void **state)
{
    (void)state;
    cleanup_url obi_url *url = parse_ok("grpc+http://[::1]:50051");
    assert_string_equal(url->host, "[::1]");
    assert_string_equal(url->port, "50051");
    cleanup_url obi_url *no_port = parse_ok("grpc+http://[fe80::1]/x");
    assert_string_equal(no_port->host, "[fe80::1]");
    assert_null(no_port->port);
    assert_string_equal(no_port->path, "/x");
}

static void test_url_percent_decodes_path_and_params(void **state)
{
    (void)state;
    cleanup_url obi_url *url = parse_ok("objectstore+file:///my%20dir/%C3%A9?k%3D=v%26w&x=a+b");
    assert_string_equal(url->path, "/my dir/\xc3\xa9");
    assert_string_equal(obi_url_param_get(url, "k="), "v&w");
    assert_string_equal(obi_url_param_get(url, "x"), "a+b");
}

static void test_url_scheme_is_lowercased(void **state)
{
    (void)state;
    cleanup_url obi_url *url = parse_ok("Memory://");
    assert_string_equal(url->scheme, "memory");
}

static void test_url_rejects_empty(void **state)
{
    (void)state;
    obi_error *err = NULL;
    obi_url *url = NULL;
    assert_fails_with(err, obi_url_parse("", &url, &err), -EINVAL, "empty");
    assert_null(url);
}

/* Each malformed URL with the part its error must name and the byte offset. */
static void test_url_malformed_errors_name_part_and_offset(void **state)
{
    (void)state;
    static const struct {
        const char *text;
        const char *needle;
    } cases[] = {
        {"grpc+http://host:", "empty port after ':' at byte offset 17"},
        {"grpc+http://host:80a", "port is not a decimal number at byte offset 19"},
        {"grpc+http://host:70000", "port out of range (1..65535) at byte offset 17"},
        {"grpc+http://host:0", "port out of range"},
        {"grpc+http://:80", "port without a host at byte offset 12"},
        {"grpc+http://[::1", "malformed IPv6 host (expected ']') at byte offset 16"},
        {"grpc+http://[]:1", "empty IPv6 host at byte offset 13"},
        {"grpc+http://[::1]x", "invalid character in the host at byte offset 17"},
        {"grpc+http://user@host",
         "user information is not supported in the host at byte offset 16"},
        {"grpc+http://ho st", "invalid character in the host at byte offset 14"},
        {"oci:///a%2", "bad percent-escape in the path (expected %XX) at byte offset 8"},
        {"oci:///a%zz", "bad percent-escape in the path"},
        {"oci:///a%00b", "%00 (NUL) in the path at byte offset 8"},
        {"oci:///a b", "control character or space in the path at byte offset 8"},
        {"oci:///r?=v", "query parameter without a name at byte offset 9"},
        {"oci:///r?a=1&&b=2", "empty query parameter at byte offset 13"},
        {"oci:///r?a=1&", "empty query parameter at byte offset 13"},
        {"oci:///r?a=%4",
         "bad percent-escape in the query parameter value (expected %XX) at byte offset 11"},
        {"oci:///r#frag", "fragments ('#') are not supported at byte offset 8"},
        {"://x", "invalid scheme"},
        {"1oci:///x", "invalid scheme (a letter, then letters, digits, '+', '-', '.') at byte "
                      "offset 0"},
        {"o_ci:///x", "invalid scheme (a letter, then letters, digits, '+', '-', '.') at byte "
                      "offset 1"},
        {"/plain\npath", "control character in the path at byte offset 6"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        obi_error *err = NULL;
        obi_url *url = NULL;
        int r = obi_url_parse(cases[i].text, &url, &err);
        if (r != -EINVAL || !err || !strstr(err->message, cases[i].needle))
            print_error("case %zu '%s': r=%d message '%s', want '%s'\n", i, cases[i].text, r,
                        err ? err->message : "(none)", cases[i].needle);
        assert_int_equal(r, -EINVAL);
        assert_null(url);
        assert_non_null(strstr(err->message, cases[i].needle));
        /* the message quotes the URL it rejects (control characters aside) */
        if (!strchr(cases[i].text, '\n'))
            assert_non_null(strstr(err->message, cases[i].text));
        obi_error_free(err);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_url_memory_has_scheme_and_nothing_else),
        cmocka_unit_test(test_url_objectstore_file_absolute_path),
        cmocka_unit_test(test_url_plain_absolute_path_has_empty_scheme),
        cmocka_unit_test(test_url_plain_relative_path_is_kept_verbatim),
        cmocka_unit_test(test_url_oci_query_parameters),
        cmocka_unit_test(test_url_first_of_repeated_parameters_wins),
        cmocka_unit_test(test_url_grpc_unix_socket_path),
        cmocka_unit_test(test_url_grpc_http_host_and_port),
        cmocka_unit_test(test_url_ipv6_host_keeps_brackets),
        cmocka_unit_test(test_url_percent_decodes_path_and_params),
        cmocka_unit_test(test_url_scheme_is_lowercased),
        cmocka_unit_test(test_url_rejects_empty),
        cmocka_unit_test(test_url_malformed_errors_name_part_and_offset),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
