/*
 * Entering a replica (replica_exec.h): which configs need ocibuild's own entry (a user namespace
 * and a network namespace by path), and the process specs it refuses before anything is forked
 * or joined: a seccomp filter, an AppArmor profile or SELinux label it cannot apply, an unknown
 * capability or rlimit, each named. The entry itself runs against real replicas in
 * tests/e2e/test_service_exec.sh.
 */
#include <errno.h>
#include <jansson.h>
#include <unistd.h>

#include "ocibuild/cleanup.h"
#include "ocibuild/json_util.h"
#include "ocibuild/replica_exec.h"
#include "test_helpers.h"

static json_t *config_with(const char *namespaces, const char *process_extra,
                           const char *linux_extra)
{
    char text[2048];
    snprintf(text, sizeof text,
             "{\"process\": {\"user\": {\"uid\": 0, \"gid\": 0}, \"cwd\": \"/\", \"env\": "
             "[\"PATH=/bin\"], \"capabilities\": {\"bounding\": [\"CAP_CHOWN\"]}%s},"
             " \"linux\": {\"namespaces\": %s%s}}",
             process_extra, namespaces, linux_extra);
    json_error_t jerr;
    json_t *config = json_loads(text, 0, &jerr);
    assert_non_null(config);
    return config;
}

static void test_replica_exec_needs_own_for_userns_and_netns_path(void **state)
{
    (void)state;
    static const struct {
        const char *namespaces;
        bool own;
    } cases[] = {
        {"[{\"type\": \"user\"}, {\"type\": \"network\", \"path\": \"/run/netns/x\"}]", true},
        {"[{\"type\": \"user\", \"path\": \"/proc/1/ns/user\"}, {\"type\": \"network\", "
         "\"path\": \"/proc/1/ns/net\"}]",
         true},
        {"[{\"type\": \"user\"}, {\"type\": \"network\"}]", false},       /* its own netns */
        {"[{\"type\": \"user\"}]", false},                                /* host_network */
        {"[{\"type\": \"network\", \"path\": \"/run/netns/x\"}]", false}, /* privileged */
    };
    for (size_t i = 0; i < OBI_ARRAY_SIZE(cases); i++) {
        cleanup_json json_t *config = config_with(cases[i].namespaces, "", "");
        assert_int_equal(obi_replica_exec_needs_own(config), cases[i].own);
    }
}

static void test_replica_exec_refuses_what_it_cannot_apply(void **state)
{
    (void)state;
    static const struct {
        const char *process_extra, *linux_extra, *message;
        int code;
    } cases[] = {
        {"", ", \"seccomp\": {\"defaultAction\": \"SCMP_ACT_ALLOW\"}", "linux.seccomp", -ENOTSUP},
        {", \"apparmorProfile\": \"docker-default\"", "", "apparmorProfile", -ENOTSUP},
        {", \"selinuxLabel\": \"system_u:system_r:container_t:s0\"", "", "selinuxLabel", -ENOTSUP},
        {", \"capabilities\": {\"bounding\": [\"CAP_NOPE\"]}", "",
         "process.capabilities.bounding[0]", -EINVAL},
        {", \"rlimits\": [{\"type\": \"RLIMIT_NOPE\", \"soft\": 1, \"hard\": 1}]", "",
         "process.rlimits[0]", -EINVAL},
    };
    for (size_t i = 0; i < OBI_ARRAY_SIZE(cases); i++) {
        cleanup_json json_t *config =
            config_with("[{\"type\": \"user\"}]", cases[i].process_extra, cases[i].linux_extra);
        cleanup_error obi_error *err = NULL;
        char *argv[] = {"true", NULL};
        int code = -1;
        /* refused before the pid is looked at: ours is not a replica's init */
        assert_int_equal(obi_replica_exec(config, getpid(), argv, &code, &err), cases[i].code);
        assert_non_null(err);
        assert_non_null(strstr(err->message, cases[i].message));
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_replica_exec_needs_own_for_userns_and_netns_path),
        cmocka_unit_test(test_replica_exec_refuses_what_it_cannot_apply),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
