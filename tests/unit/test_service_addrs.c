/*
 * Where a client's services are (service_addrs.h): one table of flags and environments, each
 * with the blob, directory and build addresses it must give.
 */
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "ocibuild/service_addrs.h"
#include "test_helpers.h"

typedef struct addrs_case {
    const char *name;
    obi_service_flags flags;
    const char *daemon, *build_env, *blob_env, *directory_env; /* the environment */
    const char *blobs, *directories, *build;                   /* expected; NULL: default */
} addrs_case;

#define D "grpc+unix:///run/d.sock"
#define E "grpc+http://127.0.0.1:7000"

static const addrs_case CASES[] = {
    {"nothing given: the local store and builder", {0}, NULL, NULL, NULL, NULL, NULL, NULL, NULL},
    {"--store alone", {"/s", NULL, NULL, NULL}, NULL, NULL, NULL, NULL, "/s", "/s", NULL},
    {"--blob-service beats --store",
     {"/s", "/b", NULL, NULL},
     NULL,
     NULL,
     NULL,
     NULL,
     "/b",
     "/s",
     NULL},
    {"--build-service on a daemon implies its store",
     {NULL, NULL, NULL, E},
     NULL,
     NULL,
     NULL,
     NULL,
     E,
     E,
     E},
    {"--build-service with --store keeps the store",
     {"/s", NULL, NULL, E},
     NULL,
     NULL,
     NULL,
     NULL,
     "/s",
     "/s",
     E},
    {"a local oci:// builder implies no store",
     {NULL, NULL, NULL, "oci:///b"},
     NULL,
     NULL,
     NULL,
     NULL,
     NULL,
     NULL,
     "oci:///b"},
    {"$OCIBUILD_DAEMON serves everything", {0}, D, NULL, NULL, NULL, D, D, D},
    {"$OCIBUILD_DAEMON as a socket path", {0}, "/run/d.sock", NULL, NULL, NULL, D, D, D},
    {"tvix's variables beat $OCIBUILD_DAEMON", {0}, D, E, "/b", NULL, "/b", E, E},
    {"flags beat the environment",
     {"/s", NULL, NULL, "oci:///b"},
     D,
     E,
     "/x",
     "/y",
     "/s",
     "/s",
     "oci:///b"},
};

static void set_env(const char *name, const char *value)
{
    if (value)
        setenv(name, value, 1);
    else
        unsetenv(name);
}

static void assert_same(const char *what, const char *got, const char *expected)
{
    if (!!got != !!expected || (got && strcmp(got, expected))) {
        print_error("%s: got %s, expected %s\n", what, got ? got : "(none)",
                    expected ? expected : "(none)");
        fail();
    }
}

static void test_service_addrs_follow_flags_then_environment(void **state)
{
    (void)state;
    for (size_t i = 0; i < sizeof CASES / sizeof CASES[0]; i++) {
        const addrs_case *c = &CASES[i];
        print_message("case: %s\n", c->name);
        set_env("OCIBUILD_DAEMON", c->daemon);
        set_env("BUILD_SERVICE_ADDR", c->build_env);
        set_env("BLOB_SERVICE_ADDR", c->blob_env);
        set_env("DIRECTORY_SERVICE_ADDR", c->directory_env);
        obi_service_addrs addrs;
        assert_ok(obi_service_addrs_resolve(&c->flags, &addrs, err_ptr_));
        assert_same("blobs", addrs.blobs, c->blobs);
        assert_same("directories", addrs.directories, c->directories);
        assert_same("build", addrs.build, c->build);
        obi_service_addrs_clear(&addrs);
    }
}

static void test_service_addrs_refuse_a_daemon_that_is_no_address(void **state)
{
    (void)state;
    setenv("OCIBUILD_DAEMON", "run/d.sock", 1);
    obi_service_flags flags = {0};
    obi_service_addrs addrs;
    obi_error *err = NULL;
    assert_fails_with(err, obi_service_addrs_resolve(&flags, &addrs, &err), -EINVAL,
                      "$OCIBUILD_DAEMON \"run/d.sock\"");
    unsetenv("OCIBUILD_DAEMON");
}

static void test_service_addrs_default_daemon_socket(void **state)
{
    (void)state;
    setenv("XDG_RUNTIME_DIR", "/run/user/4711", 1);
    char *path = NULL;
    assert_ok(obi_default_daemon_socket(&path, err_ptr_));
    assert_string_equal(path, geteuid() == 0 ? "/run/ocibuild/daemon.sock"
                                             : "/run/user/4711/ocibuild/daemon.sock");
    free(path);
    unsetenv("XDG_RUNTIME_DIR");
    obi_error *err = NULL;
    path = NULL;
    if (geteuid() == 0)
        assert_ok(obi_default_daemon_socket(&path, err_ptr_));
    else
        assert_fails_with(err, obi_default_daemon_socket(&path, &err), -ENOENT, "XDG_RUNTIME_DIR");
    free(path);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_service_addrs_follow_flags_then_environment),
        cmocka_unit_test(test_service_addrs_refuse_a_daemon_that_is_no_address),
        cmocka_unit_test(test_service_addrs_default_daemon_socket),
    };
    return cmocka_run_group_tests_name("service_addrs", tests, NULL, NULL);
}
