/*
 * Unit tests for the supervisor's pure parts (include/ocibuild/supervisor.h): the restart
 * backoff and what happens when a replica exits, per rtype, restart_policy and on_panic. The
 * process itself runs real containers in tests/e2e/test_service_supervisor.sh.
 */
#include <stdlib.h>

#include "ocibuild/deployment.h"
#include "ocibuild/supervisor.h"
#include "test_helpers.h"

static void test_supervisor_backoff_doubles_up_to_a_cap(void **state)
{
    (void)state;
    assert_int_equal(obi_backoff_delay_ms(0, 0), 0);
    assert_int_equal(obi_backoff_delay_ms(0, 1), OBI_BACKOFF_BASE_MS);
    assert_int_equal(obi_backoff_delay_ms(0, 2), 2 * OBI_BACKOFF_BASE_MS);
    assert_int_equal(obi_backoff_delay_ms(0, 4), 8 * OBI_BACKOFF_BASE_MS);
    assert_int_equal(obi_backoff_delay_ms(0, 30), OBI_BACKOFF_MAX_MS);
    assert_int_equal(obi_backoff_delay_ms(0, 4000000000u), OBI_BACKOFF_MAX_MS);
    assert_int_equal(obi_backoff_delay_ms(2000, 1), 2000); /* restart_policy.delay */
    assert_int_equal(obi_backoff_delay_ms(2000, 3), 8000);
}

static obi_service *parse_one(const char *service_yaml, obi_deployment **d)
{
    char text[1024];
    snprintf(text, sizeof text, "version: v1\ndeployment: unit\nservices:\n  s:\n%s", service_yaml);
    assert_ok(obi_deployment_parse(text, strlen(text), "unit.yaml", d, err_ptr_));
    return &(*d)->services[0];
}

static void test_supervisor_exit_decisions(void **state)
{
    (void)state;
    static const struct {
        const char *yaml;
        int exit_code;
        unsigned restarts;
        obi_exit_decision want;
    } cases[] = {
        /* services restart by default (on_panic: restart), whatever the code */
        {"    image: { rootfs: /tmp }\n", 0, 0, OBI_EXIT_RESTART},
        {"    image: { rootfs: /tmp }\n", 1, 50, OBI_EXIT_RESTART},
        {"    errors: { on_panic: { action: shutdown } }\n", 1, 0, OBI_EXIT_SHUTDOWN_SERVICE},
        {"    errors: { on_panic: { action: isolate } }\n", 1, 0, OBI_EXIT_STAY_DOWN},
        /* restart_policy decides when given */
        {"    restart_policy: { kind: no }\n", 1, 0, OBI_EXIT_STAY_DOWN},
        {"    restart_policy: { kind: always }\n", 0, 7, OBI_EXIT_RESTART},
        {"    restart_policy: { kind: on_failure, max_attempts: 2 }\n", 0, 0, OBI_EXIT_STAY_DOWN},
        {"    restart_policy: { kind: on_failure, max_attempts: 2 }\n", 3, 1, OBI_EXIT_RESTART},
        {"    restart_policy: { kind: on_failure, max_attempts: 2 }\n", 3, 2, OBI_EXIT_STAY_DOWN},
        /* jobs run once unless a policy says otherwise; cron waits for its next time */
        {"    rtype: job\n", 1, 0, OBI_EXIT_STAY_DOWN},
        {"    rtype: job\n    restart_policy: { kind: on_failure }\n", 1, 0, OBI_EXIT_RESTART},
        {"    rtype: cron\n    schedule: \"*/2 * * * * *\"\n", 1, 0, OBI_EXIT_STAY_DOWN},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        obi_deployment *d = NULL;
        const obi_service *svc = parse_one(cases[i].yaml, &d);
        obi_exit_decision got = obi_supervisor_on_exit(svc, cases[i].exit_code, cases[i].restarts);
        if (got != cases[i].want)
            fail_msg("case %zu (%s): got %d, wanted %d", i, cases[i].yaml, got, cases[i].want);
        obi_deployment_free(d);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_supervisor_backoff_doubles_up_to_a_cap),
        cmocka_unit_test(test_supervisor_exit_decisions),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
