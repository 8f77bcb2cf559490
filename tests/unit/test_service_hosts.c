/*
 * A replica's /etc/hosts text (service_hosts.h): the header and localhost lines, the caller's
 * names between, extra_hosts appended with host-gateway replaced by the network's gateway.
 */
#include <stdlib.h>
#include <string.h>

#include "ocibuild/service_hosts.h"
#include "test_helpers.h"

static char *hosts_for(const char *const *extra_hosts, const char *note)
{
    obi_service svc = {.name = "web", .extra_hosts = (char **)extra_hosts};
    obi_buf text = OBI_BUF_INIT;
    char *out = NULL;
    assert_ok(obi_hosts_begin(&text, "web-rep-1", "shop", note, err_ptr_));
    assert_int_equal(obi_buf_append_str(&text, "10.0.0.2\tweb-1 web-rep-1 web\n"), 0);
    assert_ok(obi_hosts_finish(&text, &svc, "10.0.0.1", &out, err_ptr_));
    obi_buf_free(&text);
    return out;
}

static void test_hosts_without_extra_hosts(void **state)
{
    (void)state;
    char *text = hosts_for(NULL, NULL);
    assert_string_equal(text, "# written by ocibuild for web-rep-1 of deployment shop\n"
                              "127.0.0.1\tlocalhost\n"
                              "::1\tlocalhost ip6-localhost ip6-loopback\n"
                              "10.0.0.2\tweb-1 web-rep-1 web\n");
    free(text);
}

static void test_hosts_extra_hosts_appended_with_the_gateway(void **state)
{
    (void)state;
    static const char *const extra[] = {"db.local:10.1.2.3", "gw:host-gateway", "v6:2001:db8::1",
                                        NULL};
    char *text = hosts_for(extra, "one shared namespace");
    assert_string_equal(text, "# written by ocibuild for web-rep-1 of deployment shop (one shared "
                              "namespace)\n"
                              "127.0.0.1\tlocalhost\n"
                              "::1\tlocalhost ip6-localhost ip6-loopback\n"
                              "10.0.0.2\tweb-1 web-rep-1 web\n"
                              "# extra_hosts\n"
                              "10.1.2.3\tdb.local\n"
                              "10.0.0.1\tgw\n"
                              "2001:db8::1\tv6\n");
    free(text);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_hosts_without_extra_hosts),
        cmocka_unit_test(test_hosts_extra_hosts_appended_with_the_gateway),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
