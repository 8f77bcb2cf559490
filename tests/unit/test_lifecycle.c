/*
 * Unit tests for the pure parts of the service lifecycle: where a replica's state lives, the
 * order replicas are visited in (dependencies first for up, the reverse for down, a service
 * with what it depends on) and the monitor's exit records. Real containers are in
 * tests/e2e/test_service_lifecycle.sh.
 */
#include <stdlib.h>

#include "ocibuild/cleanup.h"
#include "ocibuild/deployment.h"
#include "ocibuild/fs.h"
#include "ocibuild/lifecycle.h"
#include "test_helpers.h"

/* db <- api <- web (2 replicas), and cache on its own; document order differs from start
 * order on purpose. */
static const char STACK[] = "version: v1\n"
                            "deployment: stack\n"
                            "services:\n"
                            "  web:\n"
                            "    scale: { mode: fixed, replicas: 2 }\n"
                            "    depends: [ { service: api } ]\n"
                            "  cache: {}\n"
                            "  api:\n"
                            "    depends: [ { service: db } ]\n"
                            "  db: {}\n";

static obi_deployment *load_stack(void)
{
    obi_deployment *d = NULL;
    assert_ok(obi_deployment_parse(STACK, strlen(STACK), "stack.yaml", &d, err_ptr_));
    return d;
}

/* The plan as "id id id". */
static char *plan_string(const obi_replica_ref *plan, size_t count)
{
    char *s = calloc(1, 1024);
    for (size_t i = 0; i < count; i++) {
        char one[96];
        snprintf(one, sizeof one, "%s%s-rep-%u", i ? " " : "", plan[i].service->name,
                 plan[i].replica);
        strcat(s, one);
    }
    return s;
}

static char *plan_for(const obi_deployment *d, const char *service, unsigned replica, bool deps,
                      obi_plan_order order)
{
    obi_replica_ref *plan = NULL;
    size_t count = 0;
    assert_ok(obi_lifecycle_plan(d, service, replica, deps, order, &plan, &count, err_ptr_));
    char *s = plan_string(plan, count);
    free(plan);
    return s;
}

static void test_lifecycle_replica_paths_live_under_the_data_dir(void **state)
{
    (void)state;
    obi_replica_paths p = {0};
    assert_ok(obi_replica_paths_init(&p, "/data", "stack", "web", 2, err_ptr_));
    assert_string_equal(p.id, "web-rep-2");
    assert_string_equal(p.dir, "/data/services/stack/web-rep-2");
    assert_string_equal(p.bundle, "/data/services/stack/web-rep-2/bundle");
    assert_string_equal(p.log, "/data/services/stack/web-rep-2/log");
    assert_string_equal(p.pid_file, "/data/services/stack/web-rep-2/pid");
    assert_string_equal(p.exit_file, "/data/services/stack/web-rep-2/exit");
    assert_string_equal(p.monitor_lock, "/data/services/stack/web-rep-2/monitor.lock");
    assert_string_equal(p.status, "/data/services/stack/web-rep-2/status.json");
    assert_string_equal(p.held, "/data/services/stack/web-rep-2/held");
    /* the runtime's id is scoped by deployment: another deployment's web-rep-2 differs */
    assert_string_equal(p.container, "stack.web-rep-2");
    obi_replica_paths_clear(&p);
    assert_null(p.dir);
    cleanup_free char *lock = obi_lifecycle_lock_path("/data", "stack");
    assert_string_equal(lock, "/data/services/stack.lock");
}

static void test_lifecycle_up_starts_dependencies_first(void **state)
{
    (void)state;
    cleanup_deployment obi_deployment *d = load_stack();
    cleanup_free char *s = plan_for(d, NULL, 0, true, OBI_PLAN_START);
    /* web (first in the document) comes after db and api; cache after them all. */
    assert_string_equal(s, "db-rep-1 api-rep-1 web-rep-1 web-rep-2 cache-rep-1");
}

static void test_lifecycle_down_stops_in_reverse_dependency_order(void **state)
{
    (void)state;
    cleanup_deployment obi_deployment *d = load_stack();
    cleanup_free char *s = plan_for(d, NULL, 0, false, OBI_PLAN_STOP);
    assert_string_equal(s, "cache-rep-1 web-rep-2 web-rep-1 api-rep-1 db-rep-1");
}

static void test_lifecycle_up_of_one_service_brings_its_dependencies(void **state)
{
    (void)state;
    cleanup_deployment obi_deployment *d = load_stack();
    cleanup_free char *up = plan_for(d, "web", 0, true, OBI_PLAN_START);
    assert_string_equal(up, "db-rep-1 api-rep-1 web-rep-1 web-rep-2");
    cleanup_free char *api = plan_for(d, "api", 0, true, OBI_PLAN_START);
    assert_string_equal(api, "db-rep-1 api-rep-1");
    /* down/ps/logs of one service: only that service */
    cleanup_free char *down = plan_for(d, "api", 0, false, OBI_PLAN_STOP);
    assert_string_equal(down, "api-rep-1");
}

static void test_lifecycle_replica_filter_selects_one_replica(void **state)
{
    (void)state;
    cleanup_deployment obi_deployment *d = load_stack();
    cleanup_free char *s = plan_for(d, "web", 2, false, OBI_PLAN_START);
    assert_string_equal(s, "web-rep-2");
    /* with dependencies: all of theirs, one of web's */
    cleanup_free char *deps = plan_for(d, "web", 1, true, OBI_PLAN_START);
    assert_string_equal(deps, "db-rep-1 api-rep-1 web-rep-1");
}

static void test_lifecycle_plan_rejects_unknown_service_and_replica(void **state)
{
    (void)state;
    cleanup_deployment obi_deployment *d = load_stack();
    obi_error *err = NULL;
    obi_replica_ref *plan = NULL;
    size_t count = 0;
    assert_fails_with(err,
                      obi_lifecycle_plan(d, "nope", 0, false, OBI_PLAN_START, &plan, &count, &err),
                      -ENOENT, "deployment stack has no service \"nope\"");
    assert_fails_with(err,
                      obi_lifecycle_plan(d, "web", 3, false, OBI_PLAN_START, &plan, &count, &err),
                      -EINVAL, "service web has 2 replicas, not 3");
    assert_fails_with(err,
                      obi_lifecycle_plan(d, NULL, 1, false, OBI_PLAN_START, &plan, &count, &err),
                      -EINVAL, "a replica number needs a service");
    assert_null(plan);
}

static void test_lifecycle_reads_exit_records(void **state)
{
    (void)state;
    char *dir = obi_test_tmpdir();
    cleanup_free char *path = obi_path_join(dir, "exit");
    int code = -1, sig = -1;
    obi_error *err = NULL;
    assert_fails_with(err, obi_lifecycle_read_exit(path, &code, &sig, &err), -ENOENT, path);
    const char *killed = "{\"pid\":12,\"exit_code\":137,\"signal\":9}";
    assert_ok(obi_write_file(path, killed, strlen(killed), 0644, err_ptr_));
    assert_ok(obi_lifecycle_read_exit(path, &code, &sig, err_ptr_));
    assert_int_equal(code, 137);
    assert_int_equal(sig, 9);
    const char *broken = "{\"pid\":12}";
    assert_ok(obi_write_file(path, broken, strlen(broken), 0644, err_ptr_));
    assert_fails_with(err, obi_lifecycle_read_exit(path, &code, &sig, &err), -EINVAL,
                      "not an exit record");
    obi_test_tmpdir_remove(dir);
}

static void test_lifecycle_state_names(void **state)
{
    (void)state;
    assert_string_equal(obi_replica_state_name(OBI_REPLICA_ABSENT), "absent");
    assert_string_equal(obi_replica_state_name(OBI_REPLICA_RUNNING), "running");
    assert_string_equal(obi_replica_state_name(OBI_REPLICA_STOPPED), "stopped");
    assert_string_equal(obi_replica_state_name((obi_replica_state)99), "unknown");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_lifecycle_replica_paths_live_under_the_data_dir),
        cmocka_unit_test(test_lifecycle_up_starts_dependencies_first),
        cmocka_unit_test(test_lifecycle_down_stops_in_reverse_dependency_order),
        cmocka_unit_test(test_lifecycle_up_of_one_service_brings_its_dependencies),
        cmocka_unit_test(test_lifecycle_replica_filter_selects_one_replica),
        cmocka_unit_test(test_lifecycle_plan_rejects_unknown_service_and_replica),
        cmocka_unit_test(test_lifecycle_reads_exit_records),
        cmocka_unit_test(test_lifecycle_state_names),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
