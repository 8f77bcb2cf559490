/*
 * The OCI runtime driver against a fake runtime (a shell script standing in for runc): output
 * capture and streaming, the bounded log tail, exit codes, and that timeout and cancellation
 * end in `kill ID KILL` + `delete --force ID` — the calls that guarantee no container is left.
 */
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "ocibuild/buf.h"
#include "ocibuild/fs.h"
#include "ocibuild/runtime.h"
#include "test_helpers.h"

/* The fake runtime: `run --bundle B ID` runs B/script with $KILLED pointing at a marker file
 * that `kill` creates (so a "container" can notice it was killed); every call is appended to
 * $DIR/calls. */
static const char FAKE_RUNTIME[] = "#!/bin/sh\n"
                                   "dir=$(dirname \"$0\")\n"
                                   "echo \"$*\" >> \"$dir/calls\"\n"
                                   "case \"$1\" in\n"
                                   "  run) shift; [ \"$1\" = --detach ] && shift; export "
                                   "KILLED=\"$dir/killed-$3\"; exec sh \"$2/script\" ;;\n"
                                   "  kill) touch \"$dir/killed-$2\"; exit 0 ;;\n"
                                   "  delete) exit 0 ;;\n"
                                   "  state) if [ -f \"$dir/state\" ]; then cat \"$dir/state\"; "
                                   "else echo \"container $2 does not exist\" >&2; exit 1; fi ;;\n"
                                   "esac\n";

typedef struct fixture {
    char *dir;
    char *bundle;
    obi_runtime *runtime;
} fixture;

static int setup(void **state)
{
    fixture *f = calloc(1, sizeof *f);
    f->dir = obi_test_tmpdir();
    f->bundle = obi_path_join(f->dir, "bundle");
    mkdir(f->bundle, 0755);
    char *path = obi_path_join(f->dir, "fake-runc");
    obi_write_file(path, FAKE_RUNTIME, strlen(FAKE_RUNTIME), 0755, NULL);
    obi_runtime_new(path, NULL, &f->runtime, NULL);
    free(path);
    *state = f;
    return f->runtime ? 0 : -1;
}

static int teardown(void **state)
{
    fixture *f = *state;
    obi_runtime_free(f->runtime);
    free(f->bundle);
    obi_test_tmpdir_remove(f->dir);
    free(f);
    return 0;
}

static void write_script(fixture *f, const char *script)
{
    char *path = obi_path_join(f->bundle, "script");
    assert_int_equal(obi_write_file(path, script, strlen(script), 0644, NULL), 0);
    free(path);
}

static char *read_calls(fixture *f)
{
    char *path = obi_path_join(f->dir, "calls"), *text = NULL;
    if (obi_read_file(path, 1 << 20, &text, NULL, NULL) < 0)
        text = strdup("");
    free(path);
    return text;
}

static void collect(const uint8_t *data, size_t len, void *ctx)
{
    obi_buf_append(ctx, data, len);
}

static void test_runtime_run_captures_output_and_exit_code(void **state)
{
    fixture *f = *state;
    write_script(f, "echo to-stdout; echo to-stderr >&2; exit 7\n");
    obi_buf streamed = OBI_BUF_INIT;
    obi_run_options opts = OBI_RUN_OPTIONS_INIT;
    opts.on_output = collect;
    opts.output_ctx = &streamed;
    obi_run_result result;
    assert_ok(obi_runtime_run(f->runtime, f->bundle, "c1", &opts, &result, err_ptr_));
    assert_int_equal(result.exit_code, 7);
    assert_false(result.timed_out);
    assert_false(result.cancelled);
    assert_non_null(strstr(result.log_tail, "to-stdout"));
    assert_non_null(strstr(result.log_tail, "to-stderr"));
    assert_non_null(strstr((char *)streamed.data, "to-stdout"));
    char *calls = read_calls(f);
    assert_non_null(strstr(calls, "run --bundle"));
    assert_null(strstr(calls, "kill")); /* a normal exit needs no cleanup calls */
    free(calls);
    obi_run_result_clear(&result);
    obi_buf_free(&streamed);
}

static void test_runtime_log_tail_keeps_only_the_last_bytes(void **state)
{
    fixture *f = *state;
    write_script(f, "i=0; while [ $i -lt 500 ]; do echo line-$i; i=$((i+1)); done; echo LAST\n");
    obi_run_options opts = OBI_RUN_OPTIONS_INIT;
    opts.log_tail_max = 64;
    obi_run_result result;
    assert_ok(obi_runtime_run(f->runtime, f->bundle, "c2", &opts, &result, err_ptr_));
    assert_int_equal(result.log_tail_len, 64);
    assert_int_equal(strlen(result.log_tail), 64);
    assert_non_null(strstr(result.log_tail, "LAST\n"));
    assert_null(strstr(result.log_tail, "line-0\n"));
    obi_run_result_clear(&result);
}

static void test_runtime_timeout_kills_and_deletes_the_container(void **state)
{
    fixture *f = *state;
    /* The "container" runs until the runtime's kill marks it killed. */
    write_script(f, "echo started; while [ ! -f \"$KILLED\" ]; do sleep 0.05; done; exit 137\n");
    obi_run_options opts = OBI_RUN_OPTIONS_INIT;
    opts.timeout_seconds = 1;
    obi_run_result result;
    assert_ok(obi_runtime_run(f->runtime, f->bundle, "c3", &opts, &result, err_ptr_));
    assert_true(result.timed_out);
    assert_non_null(strstr(result.log_tail, "started"));
    char *calls = read_calls(f);
    assert_non_null(strstr(calls, "kill c3 KILL"));
    assert_non_null(strstr(calls, "delete --force c3"));
    free(calls);
    obi_run_result_clear(&result);
}

static void test_runtime_cancel_fd_kills_and_deletes_the_container(void **state)
{
    fixture *f = *state;
    write_script(f, "while [ ! -f \"$KILLED\" ]; do sleep 0.05; done; exit 137\n");
    int fds[2];
    assert_int_equal(pipe(fds), 0);
    assert_int_equal(write(fds[1], "x", 1), 1);
    obi_run_options opts = OBI_RUN_OPTIONS_INIT;
    opts.cancel_fd = fds[0];
    obi_run_result result;
    assert_ok(obi_runtime_run(f->runtime, f->bundle, "c4", &opts, &result, err_ptr_));
    assert_true(result.cancelled);
    assert_false(result.timed_out);
    char *calls = read_calls(f);
    assert_non_null(strstr(calls, "kill c4 KILL"));
    assert_non_null(strstr(calls, "delete --force c4"));
    free(calls);
    obi_run_result_clear(&result);
    close(fds[0]);
    close(fds[1]);
}

static void test_runtime_not_found_says_what_to_install(void **state)
{
    (void)state;
    obi_error *err = NULL;
    obi_runtime *rt = NULL;
    assert_fails_with(err, obi_runtime_new("no-such-runtime-xyz", NULL, &rt, &err), -ENOENT,
                      "no-such-runtime-xyz");
    assert_null(rt);
}

static void test_runtime_state_of_missing_container_is_enoent(void **state)
{
    fixture *f = *state;
    obi_error *err = NULL;
    json_t *st = NULL;
    assert_fails_with(err, obi_runtime_state(f->runtime, "nope", &st, &err), -ENOENT, "nope");
    char *path = obi_path_join(f->dir, "state");
    const char *json = "{\"id\":\"c5\",\"status\":\"running\",\"pid\":42}";
    obi_write_file(path, json, strlen(json), 0644, NULL);
    free(path);
    assert_ok(obi_runtime_state(f->runtime, "c5", &st, err_ptr_));
    assert_string_equal(json_string_value(json_object_get(st, "status")), "running");
    json_decref(st);
}

static void test_runtime_detached_failure_cleans_up_and_reports_the_log(void **state)
{
    fixture *f = *state;
    write_script(f, "echo 'exec: no such file: /bin/app' >&2; exit 1\n");
    char *log = obi_path_join(f->dir, "replica.log");
    obi_error *err = NULL;
    assert_fails_with(err, obi_runtime_run_detached(f->runtime, f->bundle, "c6", log, &err), -EIO,
                      "no such file: /bin/app");
    char *calls = read_calls(f);
    assert_non_null(strstr(calls, "run --detach --bundle"));
    assert_non_null(strstr(calls, "delete --force c6"));
    free(calls);
    free(log);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_runtime_run_captures_output_and_exit_code, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_runtime_log_tail_keeps_only_the_last_bytes, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_runtime_timeout_kills_and_deletes_the_container, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_runtime_cancel_fd_kills_and_deletes_the_container,
                                        setup, teardown),
        cmocka_unit_test(test_runtime_not_found_says_what_to_install),
        cmocka_unit_test_setup_teardown(test_runtime_state_of_missing_container_is_enoent, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_runtime_detached_failure_cleans_up_and_reports_the_log,
                                        setup, teardown),
    };
    return cmocka_run_group_tests_name("runtime", tests, NULL, NULL);
}
